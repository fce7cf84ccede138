//! Architecture code. Each architecture module provides the same items,
//! which the rest of the kernel uses without naming the architecture:
//!
//! - `NAME: &str`; `BAD_ACCESS_KIND: &str` (the `FaultInfo::kind` an
//!   unmapped read produces);
//! - boot: an entry point that sets up stacks, the MMU/paging, exception
//!   vectors, the heap (`heap::init`), the console (`console::install`),
//!   logging (`logger::init`), interrupts and the per-CPU timer tick
//!   (`smp::timer_tick`), starts the secondary CPUs (`smp::mark_online`), and
//!   calls `crate::kmain(BootInfo)`;
//! - `exit(pass: bool) -> !` ends the run with the status the runner expects;
//! - `now_ns() -> u64`, a monotonic clock;
//! - `cpu_index() -> usize` (0 = boot CPU, < `smp::MAX_CPUS`);
//! - `interrupts_disable() -> bool` (were they enabled) and
//!   `interrupts_restore(bool)`, `wait_for_interrupt()`;
//! - `unmapped_addr() -> u64`, and `probe_unmapped()`, which reads it with
//!   the CPU armed for a fault (`fault::arm`/`disarm`); no safe function
//!   reads an address its caller chooses.
//!
//! An unexpected exception prints a crash report (vector, syndrome, faulting
//! address, PC, registers) and ends the run with `console::bail_out`.

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use self::aarch64::*;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
pub use self::x86_64::*;
