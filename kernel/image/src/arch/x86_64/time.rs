//! The clock: the TSC, whose rate (and the LAPIC timer's) is measured at
//! boot against PIT channel 2, the one timer with a known frequency.
use super::apic;
use core::fmt;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::port::Port;

const PIT_HZ: u64 = 1_193_182;
/// Calibration window. Longer is more accurate and costs boot time.
const WINDOW_MS: u64 = 10;
/// Polls of the PIT output before we call it broken (a 10 ms window takes
/// well under a million even under emulation).
const PIT_POLL_LIMIT: u32 = 10_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeError {
    /// PIT channel 2 never reached its terminal count.
    PitStuck,
    /// The measured TSC rate is not plausible for a CPU.
    ImplausibleTsc(u64),
    /// The LAPIC timer did not count down during the window.
    LapicTimerStuck,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeError::PitStuck => write!(
                f,
                "PIT channel 2 did not count down within {PIT_POLL_LIMIT} polls"
            ),
            TimeError::ImplausibleTsc(hz) => write!(f, "measured TSC rate {hz} Hz is implausible"),
            TimeError::LapicTimerStuck => {
                write!(f, "the LAPIC timer did not count during calibration")
            }
        }
    }
}

static TSC_BASE: AtomicU64 = AtomicU64::new(0);
/// Nanoseconds per TSC tick, 32.32 fixed point; 0 until calibrated.
static NS_PER_TICK: AtomicU64 = AtomicU64::new(0);
static TSC_HZ: AtomicU64 = AtomicU64::new(0);
/// The latest time handed out, so the clock never goes back, even across CPUs.
static LAST_NS: AtomicU64 = AtomicU64::new(0);

fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no side effects; CR4.TSD is clear, so it works at CPL 0.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Time 0 of the clock; called first thing at boot.
pub fn set_epoch() {
    TSC_BASE.store(rdtsc(), Ordering::Relaxed);
}

pub fn now_ns() -> u64 {
    let mult = NS_PER_TICK.load(Ordering::Relaxed);
    let ticks = rdtsc().saturating_sub(TSC_BASE.load(Ordering::Relaxed));
    let ns = ((u128::from(ticks) * u128::from(mult)) >> 32) as u64;
    let last = LAST_NS.fetch_max(ns, Ordering::Relaxed);
    ns.max(last)
}

/// Busy-waits `us` microseconds (bounded by the TSC; no-op before calibration).
pub fn delay_us(us: u64) {
    let end = rdtsc() + TSC_HZ.load(Ordering::Relaxed) * us / 1_000_000;
    while rdtsc() < end {
        core::hint::spin_loop();
    }
}

/// Calibration windows measured; the shortest is kept
/// ([`kernel::clock::truest_window`]).
const WINDOWS: usize = 3;

/// Measures the TSC and LAPIC timer rates over PIT windows, and sets the
/// LAPIC tick. Boot CPU, with interrupts off, after `apic::init_boot`.
pub fn calibrate() -> Result<(u64, u64), TimeError> {
    let mut windows = [kernel::clock::CalibrationWindow {
        ticks: 0,
        second: 0,
    }; WINDOWS];
    for w in &mut windows {
        *w = pit_window()?;
    }
    let best = kernel::clock::truest_window(&windows).ok_or(TimeError::PitStuck)?;
    let tsc_hz = best.ticks * 1000 / WINDOW_MS;
    if !(50_000_000..=50_000_000_000).contains(&tsc_hz) {
        return Err(TimeError::ImplausibleTsc(tsc_hz));
    }
    let lapic_hz = best.second * 1000 / WINDOW_MS;
    if lapic_hz < 1000 * apic::TICK_HZ {
        return Err(TimeError::LapicTimerStuck);
    }
    TSC_HZ.store(tsc_hz, Ordering::Relaxed);
    NS_PER_TICK.store((1_000_000_000u64 << 32) / tsc_hz, Ordering::Relaxed);
    apic::set_tick_count((lapic_hz / apic::TICK_HZ).min(u64::from(u32::MAX)) as u32);
    Ok((tsc_hz, lapic_hz))
}

/// TSC ticks and LAPIC counts over one PIT window. The counters are read
/// before the PIT starts (its count's second byte) and after it is seen
/// to expire, so a pause of the CPU can only lengthen the window.
fn pit_window() -> Result<kernel::clock::CalibrationWindow, TimeError> {
    let mut gate = Port::<u8>::new(0x61);
    let mut command = Port::<u8>::new(0x43);
    let mut channel2 = Port::<u8>::new(0x42);
    let count = PIT_HZ * WINDOW_MS / 1000;
    // SAFETY: the PIT and the system control port B, which the firmware
    // leaves to the OS; channel 2 drives only the (disabled) speaker.
    unsafe {
        let b = gate.read();
        gate.write((b & !0x02) | 0x01); // gate channel 2 on, speaker off
        command.write(0b1011_0000); // channel 2, lobyte/hibyte, mode 0, binary
        channel2.write(count as u8);
        apic::start_calibration_count();
        let (t0, l0) = (rdtsc(), apic::current_count());
        // Mode 0 counts from the second byte on.
        channel2.write((count >> 8) as u8);
        let mut done = false;
        for _ in 0..PIT_POLL_LIMIT {
            if gate.read() & 0x20 != 0 {
                done = true;
                break;
            }
        }
        let (t1, l1) = (rdtsc(), apic::current_count());
        if !done {
            return Err(TimeError::PitStuck);
        }
        Ok(kernel::clock::CalibrationWindow {
            ticks: t1 - t0,
            second: u64::from(l0.wrapping_sub(l1)),
        })
    }
}
