//! `qemu-run bench`: boots each board in benchmark mode and collects the
//! `# bench NAME n=… min_ns=… p10_ns=… median_ns=… p90_ns=… max_ns=…`
//! lines the kernel prints.
//!
//! Every board boots twice: once as usual for the benchmarks that time the
//! machine as it runs (`bench=real`), once under `-icount sleep=off` for the
//! `vclock::` benchmarks, which time operations QEMU's device models delay
//! by a fixed virtual time (`bench=virtual`): there the guest clock skips
//! the idle wait, so a thousand iterations take seconds.
use std::time::Duration;

/// QEMU arguments of the virtual-clock pass: one instruction per
/// nanosecond, and idle time skipped to the next timer deadline.
pub const ICOUNT_ARGS: [&str; 2] = ["-icount", "shift=0,sleep=off"];

/// One pass over a board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    Real,
    Virtual,
}

impl Clock {
    pub const ALL: [Clock; 2] = [Clock::Real, Clock::Virtual];

    /// The kernel command-line word selecting this pass's benchmarks.
    pub fn cmdline_word(self) -> &'static str {
        match self {
            Clock::Real => "bench=real",
            // xAPIC: QEMU under -icount stops on the guest's x2APIC
            // timer reads (MSRs are not I/O to its icount accounting).
            Clock::Virtual => "bench=virtual apic=xapic",
        }
    }

    /// Extra QEMU arguments for this pass.
    pub fn qemu_args(self) -> &'static [&'static str] {
        match self {
            Clock::Real => &[],
            Clock::Virtual => &ICOUNT_ARGS,
        }
    }
}

/// One benchmark's figures, in nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figures {
    pub name: String,
    pub n: u64,
    pub min: u64,
    pub p10: u64,
    pub median: u64,
    pub p90: u64,
    pub max: u64,
}

/// Parses a `# bench` line; `None` for any other line or a malformed one.
pub fn parse_line(line: &str) -> Option<Figures> {
    let rest = line.trim_end().strip_prefix("# bench ")?;
    let mut words = rest.split_ascii_whitespace();
    let name = words.next()?.to_string();
    let mut get = |key: &str| -> Option<u64> {
        let w = words.next()?;
        w.strip_prefix(key)?.strip_prefix('=')?.parse().ok()
    };
    let f = Figures {
        name,
        n: get("n")?,
        min: get("min_ns")?,
        p10: get("p10_ns")?,
        median: get("median_ns")?,
        p90: get("p90_ns")?,
        max: get("max_ns")?,
    };
    Some(f)
}

/// Every `# bench` line of a console transcript.
pub fn parse_console(console: &str) -> Vec<Figures> {
    console.lines().filter_map(parse_line).collect()
}

/// A duration for people: ns, µs, ms or s with three significant digits.
pub fn human(ns: u64) -> String {
    let d = Duration::from_nanos(ns);
    let (value, unit) = if ns < 1_000 {
        return format!("{ns} ns");
    } else if ns < 1_000_000 {
        (ns as f64 / 1e3, "us")
    } else if ns < 1_000_000_000 {
        (ns as f64 / 1e6, "ms")
    } else {
        (d.as_secs_f64(), "s")
    };
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.decimals$} {unit}")
}

/// The table printed after every board ran.
pub fn table(rows: &[(String, Figures)]) -> String {
    let board_w = rows
        .iter()
        .map(|(b, _)| b.len())
        .chain(["board".len()])
        .max()
        .unwrap_or(5);
    let name_w = rows
        .iter()
        .map(|(_, f)| f.name.len())
        .chain(["benchmark".len()])
        .max()
        .unwrap_or(9);
    let mut out = format!(
        "{:<board_w$}  {:<name_w$}  {:>5}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}\n",
        "board", "benchmark", "n", "median", "p10", "p90", "min", "max"
    );
    for (board, f) in rows {
        out.push_str(&format!(
            "{board:<board_w$}  {:<name_w$}  {:>5}  {:>10}  {:>10}  {:>10}  {:>10}  {:>10}\n",
            f.name,
            f.n,
            human(f.median),
            human(f.p10),
            human(f.p90),
            human(f.min),
            human(f.max),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_and_junk_is_ignored() {
        let text = "[ 0.1] INFO boot\n\
            # bench irq::edu_msi_latency n=1000 min_ns=1017 p10_ns=1037 median_ns=1048 p90_ns=1187 max_ns=89746\n\
            ok 1 - irq::edu_msi_latency\n\
            # bench broken n=1 min_ns=x\n\
            # bench short n=1\n\
            # bench reordered n=1 p10_ns=1 min_ns=1 median_ns=1 p90_ns=1 max_ns=1\n\
            # 1 passed\n";
        let got = parse_console(text);
        assert_eq!(
            got,
            vec![Figures {
                name: "irq::edu_msi_latency".into(),
                n: 1000,
                min: 1017,
                p10: 1037,
                median: 1048,
                p90: 1187,
                max: 89746,
            }]
        );
    }

    #[test]
    fn human_units() {
        assert_eq!(human(999), "999 ns");
        assert_eq!(human(1048), "1.05 us");
        assert_eq!(human(11_197), "11.2 us");
        assert_eq!(human(100_006_662), "100 ms");
        assert_eq!(human(2_500_000_000), "2.50 s");
    }

    #[test]
    fn table_rows() {
        let f = parse_line(
            "# bench vclock::edu_dma_msi_round_trip n=1000 min_ns=99090710 p10_ns=100006662 \
             median_ns=100006662 p90_ns=100006663 max_ns=100006663",
        )
        .unwrap();
        let t = table(&[("qemu-q35".into(), f)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("board     benchmark"), "{t}");
        assert!(
            lines[1].starts_with("qemu-q35  vclock::edu_dma_msi_round_trip   1000      100 ms"),
            "{t}"
        );
    }

    #[test]
    fn passes() {
        assert_eq!(Clock::Real.cmdline_word(), "bench=real");
        assert!(Clock::Real.qemu_args().is_empty());
        assert_eq!(Clock::Virtual.qemu_args(), ICOUNT_ARGS);
    }
}
