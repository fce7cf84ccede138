//! Which counter frequency the clock runs at. The arch code reads the
//! registers; the choice is here, where the host tests see it: a clock
//! that divides by a zero frequency would make every deadline instant,
//! or never come.
use core::fmt;

/// Where the frequency came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrequencySource {
    /// The counter's own register (CNTFRQ_EL0), which firmware programs.
    Register,
    /// The firmware's description (the devicetree's `/timer`
    /// `clock-frequency`), for a register firmware left at zero.
    Firmware,
}

/// No frequency anywhere: the clock cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoFrequency;

impl fmt::Display for NoFrequency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the counter frequency register reads 0 and firmware gives no clock-frequency"
        )
    }
}

/// The frequency in Hz: the register's when it is set, else firmware's,
/// else an error (never 0).
pub fn counter_frequency(
    register_hz: u64,
    firmware_hz: Option<u64>,
) -> Result<(u64, FrequencySource), NoFrequency> {
    match (register_hz, firmware_hz) {
        (hz, _) if hz != 0 => Ok((hz, FrequencySource::Register)),
        (_, Some(hz)) if hz != 0 => Ok((hz, FrequencySource::Firmware)),
        _ => Err(NoFrequency),
    }
}

/// One calibration window: a counter of unknown rate (the TSC) read
/// just before a reference timer of known rate (the PIT) is started and
/// just after it is seen to expire (in that order, so that no pause can
/// shorten the window: a guest paused between starting the PIT and
/// reading the TSC once measured the TSC at 1% of its rate), and a second counter (the LAPIC
/// timer) read at the same two moments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CalibrationWindow {
    pub ticks: u64,
    pub second: u64,
}

/// The window to trust among several of the same reference length. A
/// pause of the CPU inside a window costs nothing (every counter runs
/// on), but one before the reference starts or after it expires, before
/// the counters are read, adds ticks: a busy host does that to a guest.
/// Each error only lengthens a window, so the shortest is the truest.
pub fn truest_window(windows: &[CalibrationWindow]) -> Option<CalibrationWindow> {
    windows.iter().copied().min_by_key(|w| w.ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zero CNTFRQ falls back to the devicetree's clock-frequency, and
    /// with none (or a zero one) is an error, never a zero frequency
    /// (issue 13, point 18).
    #[test]
    fn a_zero_counter_frequency_falls_back_or_fails() {
        use FrequencySource::*;
        assert_eq!(
            counter_frequency(62_500_000, None),
            Ok((62_500_000, Register))
        );
        assert_eq!(
            counter_frequency(62_500_000, Some(1_000_000)),
            Ok((62_500_000, Register))
        );
        assert_eq!(
            counter_frequency(0, Some(24_000_000)),
            Ok((24_000_000, Firmware))
        );
        assert_eq!(counter_frequency(0, None), Err(NoFrequency));
        assert_eq!(counter_frequency(0, Some(0)), Err(NoFrequency));
    }

    /// Pauses only lengthen a window, so the shortest of several is kept
    /// with its second counter.
    #[test]
    fn the_shortest_calibration_window_is_the_truest() {
        let w = |ticks, second| CalibrationWindow { ticks, second };
        let windows = [
            w(31_000_000, 700_000),
            w(26_000_000, 628_960),
            w(40_000_000, 900_000),
        ];
        assert_eq!(truest_window(&windows), Some(w(26_000_000, 628_960)));
        assert_eq!(truest_window(&[]), None);
    }
}
