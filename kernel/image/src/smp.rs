//! Per-CPU counters shared by the arch code and the tests.
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

pub const MAX_CPUS: usize = 8;

static ONLINE: AtomicUsize = AtomicUsize::new(0);
static TICKS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// A CPU finished its bring-up and takes interrupts.
pub fn mark_online() {
    ONLINE.fetch_add(1, Ordering::AcqRel);
}

pub fn online() -> usize {
    ONLINE.load(Ordering::Acquire)
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
