//! How the run ends: the command line's `exit=` word
//! (`kernel::cmdline::exit_method`), recorded as soon as the arch boot
//! path has the command line. Until then, and without the word, the
//! firmware's way (PSCI SYSTEM_OFF, ACPI power-off or a halt): no exit
//! status, the verdict is the TAP stream alone.
use core::sync::atomic::{AtomicU8, Ordering};
use kernel::cmdline::ExitMethod;

const FIRMWARE: u8 = 0;
const SEMIHOSTING: u8 = 1;
const ISA_DEBUG_EXIT: u8 = 2;

static METHOD: AtomicU8 = AtomicU8::new(FIRMWARE);

/// Records the method `cmdline` names; an unknown one is reported and
/// the firmware's way is kept.
pub fn configure(cmdline: &str) {
    let method = kernel::cmdline::exit_method(cmdline).unwrap_or_else(|other| {
        log::warn!(
            "exit={other}: no such exit method (semihosting, isa-debug-exit); the run ends \
             through firmware"
        );
        ExitMethod::Firmware
    });
    let code = match method {
        ExitMethod::Firmware => FIRMWARE,
        ExitMethod::Semihosting => SEMIHOSTING,
        ExitMethod::IsaDebugExit => ISA_DEBUG_EXIT,
    };
    METHOD.store(code, Ordering::Relaxed);
}

pub fn method() -> ExitMethod {
    match METHOD.load(Ordering::Relaxed) {
        SEMIHOSTING => ExitMethod::Semihosting,
        ISA_DEBUG_EXIT => ExitMethod::IsaDebugExit,
        _ => ExitMethod::Firmware,
    }
}

/// The last console line of a run that ends without an exit status.
pub fn halt_line(pass: bool, why: &str) {
    let verdict = if pass { "passed" } else { "failed" };
    crate::console::print_crash(format_args!(
        "exit: the run {verdict} (see the TAP above); halting: {why}\n"
    ));
}
