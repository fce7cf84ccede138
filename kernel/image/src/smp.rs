//! Per-CPU counters shared by the arch code and the tests.
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use spin::Mutex;

/// CPUs the kernel drives; any further ones the platform describes stay
/// parked and are reported (`BootInfo::cpus_note`). Per-CPU static state
/// is small (counters here, fault slots); stacks come from the heap on
/// aarch64 as each CPU starts. x86 indexes CPUs by a u8 table, so 256 is
/// also its ceiling.
pub const MAX_CPUS: usize = 256;

static ONLINE: AtomicUsize = AtomicUsize::new(0);
static TICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// A CPU finished its bring-up and takes interrupts.
pub fn mark_online() {
    ONLINE.fetch_add(1, Ordering::AcqRel);
}

pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
}

/// CPUs that were started but whose bring-up failed, with what failed.
static FAILED: Mutex<Vec<(usize, String)>> = Mutex::new(Vec::new());

/// CPU `cpu` was started but cannot take interrupts (and stays idle).
// x86 AP bring-up does not report failures this way yet.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub fn mark_failed(cpu: usize, what: String) {
    FAILED.lock().push((cpu, what));
}

pub fn failed() -> Vec<(usize, String)> {
    FAILED.lock().clone()
}

/// How many CPUs `mark_failed` named (no copy: the bring-up polls it).
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub fn failed_count() -> usize {
    FAILED.lock().len()
}

/// Called from the timer interrupt of `cpu`.
pub fn timer_tick(cpu: usize) {
    if let Some(t) = TICKS.get(cpu) {
        t.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn ticks(cpu: usize) -> u64 {
    TICKS.get(cpu).map_or(0, |t| t.load(Ordering::Relaxed))
}
