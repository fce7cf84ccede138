//! The kernel console: one device the arch code installs, shared by every
//! CPU behind a lock. Printing with interrupts masked keeps an interrupt
//! handler from deadlocking on a lock its own CPU holds.
use alloc::boxed::Box;
use core::fmt::{self, Write};
use spin::Mutex;

static CONSOLE: Mutex<Option<Box<dyn Write + Send>>> = Mutex::new(None);

/// Installs the console device; later output goes to it.
pub fn install(dev: Box<dyn Write + Send>) {
    *CONSOLE.lock() = Some(dev);
}

pub fn print(args: fmt::Arguments) {
    let was_enabled = crate::arch::interrupts_disable();
    if let Some(dev) = CONSOLE.lock().as_mut() {
        let _ = dev.write_fmt(args);
    }
    crate::arch::interrupts_restore(was_enabled);
}

/// Output from a crash or panic: takes the console even if a CPU died holding it.
pub fn print_crash(args: fmt::Arguments) {
    crate::arch::interrupts_disable();
    for _ in 0..1_000_000 {
        if let Some(mut guard) = CONSOLE.try_lock() {
            if let Some(dev) = guard.as_mut() {
                let _ = dev.write_fmt(args);
            }
            return;
        }
        core::hint::spin_loop();
    }
    // SAFETY: the holder is stuck (it crashed or spins with interrupts off);
    // a torn line is better than no crash report.
    unsafe { CONSOLE.force_unlock() };
    if let Some(dev) = CONSOLE.lock().as_mut() {
        let _ = dev.write_fmt(args);
    }
}

/// Ends the run as failed with a TAP `Bail out!` line the runner reports.
pub fn bail_out(reason: fmt::Arguments) -> ! {
    print_crash(format_args!("Bail out! {reason}\n"));
    crate::arch::exit(false)
}

#[macro_export]
macro_rules! kprint {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

#[macro_export]
macro_rules! kprintln {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::console::print(format_args!("{}\n", format_args!($($arg)*))) };
}
