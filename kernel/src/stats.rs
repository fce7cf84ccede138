//! Summary statistics for benchmark samples (nanoseconds).
use core::fmt;

/// Order statistics of a sample set; percentiles by the nearest-rank method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub n: usize,
    pub min: u64,
    pub p10: u64,
    pub median: u64,
    pub p90: u64,
    pub max: u64,
}

impl Stats {
    /// Sorts `samples` in place; `None` when there are none.
    pub fn of(samples: &mut [u64]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let n = samples.len();
        // Nearest rank: the smallest sample with at least p% at or below it.
        let rank = |p: usize| samples[(p * n).div_ceil(100).clamp(1, n) - 1];
        Some(Stats {
            n,
            min: samples[0],
            p10: rank(10),
            median: rank(50),
            p90: rank(90),
            max: samples[n - 1],
        })
    }
}

/// The `# bench` line format qemu-run reads: `key=value` words, times in ns.
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} min_ns={} p10_ns={} median_ns={} p90_ns={} max_ns={}",
            self.n, self.min, self.p10, self.median, self.p90, self.max
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;

    #[test]
    fn nearest_rank() {
        assert_eq!(Stats::of(&mut []), None);
        let one = Stats::of(&mut [7]).unwrap();
        assert_eq!(
            (one.min, one.p10, one.median, one.p90, one.max),
            (7, 7, 7, 7, 7)
        );
        let mut v: Vec<u64> = (1..=1000).rev().collect();
        let s = Stats::of(&mut v).unwrap();
        assert_eq!(
            s,
            Stats {
                n: 1000,
                min: 1,
                p10: 100,
                median: 500,
                p90: 900,
                max: 1000
            }
        );
        assert_eq!(
            s.to_string(),
            "n=1000 min_ns=1 p10_ns=100 median_ns=500 p90_ns=900 max_ns=1000"
        );
        let s = Stats::of(&mut [5, 1, 3]).unwrap();
        assert_eq!((s.p10, s.median, s.p90), (1, 3, 5));
    }
}
