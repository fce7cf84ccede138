//! PSCI calls (CPU_ON, SYSTEM_OFF) and the semihosting exit QEMU turns into
//! its exit status.
use core::arch::asm;

const CPU_ON_64: u64 = 0xc400_0003;
const SYSTEM_OFF: u64 = 0x8400_0008;

#[derive(Debug, Clone, Copy)]
pub struct PsciError(pub i64);

fn call(hvc: bool, func: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    let ret: i64;
    // SAFETY: a PSCI call per the SMC calling convention; the firmware (QEMU)
    // clobbers only x0-x3 for these functions.
    unsafe {
        if hvc {
            asm!("hvc #0", inout("x0") func as i64 => ret, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _, options(nostack));
        } else {
            asm!("smc #0", inout("x0") func as i64 => ret, inout("x1") a1 => _, inout("x2") a2 => _, inout("x3") a3 => _, options(nostack));
        }
    }
    ret
}

/// Starts the CPU `mpidr` at physical address `entry` with `context` in x0.
pub fn cpu_on(hvc: bool, mpidr: u64, entry: u64, context: u64) -> Result<(), PsciError> {
    match call(hvc, CPU_ON_64, mpidr, entry, context) {
        0 => Ok(()),
        e => Err(PsciError(e)),
    }
}

pub fn system_off(hvc: bool) {
    call(hvc, SYSTEM_OFF, 0, 0, 0);
}

const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x20026;

/// Semihosting SYS_EXIT with an exit code (AArch64 takes a parameter block).
pub fn semihosting_exit(code: u64) {
    let block = [ADP_STOPPED_APPLICATION_EXIT, code];
    // SAFETY: the semihosting trap instruction; QEMU (-semihosting-config
    // enable=on) reads the block and ends the process.
    unsafe {
        asm!("hlt #0xf000", in("x0") SYS_EXIT, in("x1") block.as_ptr() as u64, options(nostack))
    };
}
