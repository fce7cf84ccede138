//! Data and instruction cache maintenance by address, to the point of
//! coherency: for memory a non-coherent device reads, and for memory one
//! side touches with the MMU off (non-cacheable) and another with it on.
use aarch64_cpu::asm::barrier;
use core::arch::asm;

#[derive(Clone, Copy)]
enum Op {
    /// DC CVAC: write a dirty line back, keep it.
    Clean,
    /// DC CIVAC: write a dirty line back and drop it.
    CleanInvalidate,
    /// DC IVAC: drop a line without writing it back.
    Invalidate,
}

/// The smallest data cache line (CTR_EL0.DminLine, log2 words).
fn dcache_line() -> usize {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 (the cache type register) has no side effects.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    4usize << ((ctr >> 16) & 0xf)
}

fn by_line(op: Op, start: usize, end: usize) {
    let line = dcache_line();
    for addr in (start & !(line - 1)..end).step_by(line) {
        // SAFETY: maintenance of one line of memory the caller owns; a
        // clean changes no data, an invalidate is only asked for where
        // memory already holds the data (see `invalidate_to_poc`).
        unsafe {
            match op {
                Op::Clean => asm!("dc cvac, {}", in(reg) addr, options(nostack)),
                Op::CleanInvalidate => asm!("dc civac, {}", in(reg) addr, options(nostack)),
                Op::Invalidate => asm!("dc ivac, {}", in(reg) addr, options(nostack)),
            }
        }
    }
    barrier::dsb(barrier::SY);
}

/// Writes `[start, end)` back to memory (DC CVAC), then waits (DSB SY).
pub fn clean_to_poc(start: usize, end: usize) {
    by_line(Op::Clean, start, end);
}

/// Writes `[start, end)` back and drops it from the caches (DC CIVAC).
pub fn clean_invalidate_to_poc(start: usize, end: usize) {
    by_line(Op::CleanInvalidate, start, end);
}

/// Drops `[start, end)` from the caches without writing it back (DC IVAC):
/// only for memory written with the MMU off, which memory holds, and whose
/// cached copies are stale. Partial lines at either end are dropped too,
/// so the range must own its lines.
pub fn invalidate_to_poc(start: usize, end: usize) {
    by_line(Op::Invalidate, start, end);
}

/// Drops every instruction cache line of this CPU (IC IALLU), then
/// synchronises: before the MMU and I-cache go on, so no line fetched from
/// whatever a loader ran at our addresses survives.
pub fn invalidate_icache() {
    // SAFETY: instruction cache invalidation has no effect on data.
    unsafe { asm!("ic iallu", "dsb nsh", "isb", options(nostack)) };
}
