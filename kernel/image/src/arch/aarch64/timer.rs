//! The generic timer: the counter is the clock, the EL1 physical timer
//! gives each CPU a periodic tick.
use aarch64_cpu::registers::*;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

const TICK_HZ: u64 = 100;

static FREQ: AtomicU64 = AtomicU64::new(0);
static INTID: AtomicU32 = AtomicU32::new(u32::MAX);

/// The counter's frequency from CNTFRQ_EL0, or, where firmware left it
/// at 0, from the devicetree's `/timer` `clock-frequency`; neither is an
/// error (the clock never runs on a zero frequency).
pub fn init_clock(
    intid: u32,
    dt_frequency: Option<u32>,
) -> Result<u64, kernel::clock::NoFrequency> {
    let (hz, source) =
        kernel::clock::counter_frequency(CNTFRQ_EL0.get(), dt_frequency.map(u64::from))?;
    if source == kernel::clock::FrequencySource::Firmware {
        log::warn!("CNTFRQ_EL0 is 0: the counter runs at the devicetree's {hz} Hz");
    }
    FREQ.store(hz, Ordering::Relaxed);
    INTID.store(intid, Ordering::Relaxed);
    Ok(hz)
}

pub fn intid() -> u32 {
    INTID.load(Ordering::Relaxed)
}

pub fn now_ns() -> u64 {
    let freq = FREQ.load(Ordering::Relaxed);
    if freq == 0 {
        return 0;
    }
    ((CNTPCT_EL0.get() as u128 * 1_000_000_000) / freq as u128) as u64
}

fn period() -> u64 {
    (FREQ.load(Ordering::Relaxed) / TICK_HZ).max(1)
}

/// Starts this CPU's periodic tick (its PPI must be enabled in the redistributor).
pub fn start_tick() {
    CNTP_TVAL_EL0.set(period());
    CNTP_CTL_EL0.write(CNTP_CTL_EL0::ENABLE::SET + CNTP_CTL_EL0::IMASK::CLEAR);
}

pub fn on_tick(cpu: usize) {
    CNTP_TVAL_EL0.set(period());
    crate::smp::timer_tick(cpu);
}
