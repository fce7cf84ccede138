//! Expected faults: a test arms its CPU, touches a bad address, and the
//! exception path records the fault and resumes instead of crashing.
use crate::smp::MAX_CPUS;
use core::sync::atomic::{AtomicBool, Ordering};
use spin::Mutex;

/// A synchronous fault as the exception path saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultInfo {
    /// `data abort`, `page fault`, `general protection`...
    pub kind: &'static str,
    /// ESR_EL1 on aarch64, the error code on x86_64.
    pub syndrome: u64,
    /// FAR_EL1 / CR2: the address that faulted.
    pub addr: u64,
    /// Where the faulting instruction was.
    pub pc: u64,
}

static ARMED: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];
static SEEN: [Mutex<Option<FaultInfo>>; MAX_CPUS] = [const { Mutex::new(None) }; MAX_CPUS];

/// Arms `cpu`: its next synchronous fault is recorded, not fatal.
pub fn arm(cpu: usize) {
    *SEEN[cpu].lock() = None;
    ARMED[cpu].store(true, Ordering::SeqCst);
}

/// Disarms `cpu` and returns the fault it took while armed, if any.
pub fn disarm(cpu: usize) -> Option<FaultInfo> {
    ARMED[cpu].store(false, Ordering::SeqCst);
    SEEN[cpu].lock().take()
}

/// Called by the exception path: true if the fault was expected (it is then
/// recorded and the CPU disarmed, so a second fault is fatal).
pub fn on_fault(cpu: usize, info: FaultInfo) -> bool {
    if cpu < MAX_CPUS && ARMED[cpu].swap(false, Ordering::SeqCst) {
        *SEEN[cpu].lock() = Some(info);
        true
    } else {
        false
    }
}
