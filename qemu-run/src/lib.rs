//! The host runner: finds (or installs) QEMU, builds the kernel for a board,
//! boots it, streams the serial console, parses the TAP 14 the kernel prints
//! and turns it into a verdict, a summary table and JUnit XML.
//!
//! Everything lives in this library so it can be unit-tested; `main.rs` only
//! calls [`cli::main`].

pub mod acpi;
pub mod arm64;
pub mod bench;
pub mod board;
pub mod build;
pub mod bundle;
pub mod cli;
pub mod debian;
pub mod disk;
pub mod hardware;
pub mod junit;
pub mod patched;
pub mod qemu;
pub mod qtest;
pub mod run;
pub mod stress;
pub mod tap;
pub mod uboot;
pub mod watch;

use std::time::Duration;

use anyhow::Context as _;

/// A usage or setup error: the run could not happen at all (exit status 2),
/// as opposed to a test failure (exit status 1). Made with `anyhow!`,
/// `bail!` and `.context(…)`; shown with `{:#}`, which puts each context
/// before its cause (`path: No such file or directory`).
pub use anyhow::{Error, Result};

/// A child's stdout sent to our stderr, for tools (cargo, apt) whose output
/// must not mix with the console and the summary on our stdout.
pub fn stderr_stdio() -> Result<std::process::Stdio> {
    use std::os::fd::AsFd;
    let fd = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .context("cannot duplicate stderr")?;
    Ok(fd.into())
}

/// Exit status for test failures.
pub const EXIT_FAIL: u8 = 1;
/// Exit status for usage and setup errors.
pub const EXIT_USAGE: u8 = 2;

/// What one board's run produced.
#[derive(Debug, Clone)]
pub struct BoardReport {
    pub board: String,
    pub outcome: run::Outcome,
    pub verdict: tap::Verdict,
}

impl BoardReport {
    /// Time from QEMU's start to the last TAP line that matters (the last
    /// test point or the bail out); the whole QEMU run when there was none.
    pub fn tap_time(&self) -> Duration {
        self.outcome.tap.last_tap_at().unwrap_or(self.outcome.wall)
    }
}

/// The summary table printed after all boards ran.
pub fn summary_table(reports: &[BoardReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.board.len())
        .chain(["board".len()])
        .max()
        .unwrap_or(5);
    let mut out = format!(
        "{:<width$}  result  passed  failed  skipped  seconds\n",
        "board"
    );
    for r in reports {
        let c = r.outcome.tap.counts();
        let mut line = format!(
            "{:<width$}  {:<6}  {:>6}  {:>6}  {:>7}  {:>7.2}",
            r.board,
            if r.verdict.pass { "PASS" } else { "FAIL" },
            c.passed,
            c.failed,
            c.skipped,
            r.tap_time().as_secs_f64(),
        );
        if let Some(reason) = &r.verdict.reason {
            line.push_str("   ");
            line.push_str(reason);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// One line per run of a variant matrix (`run --variant`): its name,
/// verdict, ok / SKIP / failed counts and QEMU's wall time; then the
/// matrix's totals.
pub fn variant_summary(reports: &[BoardReport]) -> String {
    let width = reports
        .iter()
        .map(|r| r.board.len())
        .chain(["variant".len()])
        .max()
        .unwrap_or(7);
    let mut out = format!("{:<width$}  result  ok  SKIP  failed   wall\n", "variant");
    let mut wall = Duration::ZERO;
    for r in reports {
        let c = r.outcome.tap.counts();
        wall += r.outcome.wall;
        out.push_str(&format!(
            "{:<width$}  {:<6}  {:>2}  {:>4}  {:>6}  {:>5.1}s\n",
            r.board,
            if r.verdict.pass { "PASS" } else { "FAIL" },
            c.passed,
            c.skipped,
            c.failed,
            r.outcome.wall.as_secs_f64(),
        ));
    }
    let passed = reports.iter().filter(|r| r.verdict.pass).count();
    out.push_str(&format!(
        "matrix: {} run(s), {passed} passed, {} failed; QEMU wall {:.1}s\n",
        reports.len(),
        reports.len() - passed,
        wall.as_secs_f64()
    ));
    out
}

/// Reports made from TAP lines, for the unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use crate::run::Outcome;
    use crate::tap::{Exit, Tap};

    /// A board's report from its TAP `lines` (100 ms apart) and `exit`.
    pub fn report(board: &str, lines: &[&str], exit: Exit, pass_status: i32) -> BoardReport {
        let mut tap = Tap::default();
        for (i, l) in lines.iter().enumerate() {
            tap.feed(l, Duration::from_millis(100 * (i as u64 + 1)));
        }
        tap.finish();
        let verdict = tap::verdict(&tap, &exit, Some(pass_status), &[]);
        BoardReport {
            board: board.into(),
            outcome: Outcome {
                tap,
                exit,
                stderr_head: vec![],
                wall: Duration::from_secs(2),
                console: String::new(),
            },
            verdict,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::tap::Exit;
    use crate::testing::report;
    use crate::{summary_table, variant_summary};

    #[test]
    fn table_has_one_row_per_board_with_reason() {
        let a = report(
            "qemu-virt",
            &[
                "TAP version 14",
                "1..2",
                "ok 1 - a::b",
                "ok 2 - a::c # SKIP no",
            ],
            Exit::Status(0),
            0,
        );
        let b = report(
            "qemu-q35",
            &["TAP version 14", "1..1", "not ok 1 - mm::x"],
            Exit::Status(35),
            33,
        );
        let t = summary_table(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("board      "));
        assert!(lines[1].starts_with("qemu-virt  PASS         1       0        1     0.40"));
        assert!(lines[2].starts_with("qemu-q35   FAIL         0       1        0     0.30"));
        assert!(lines[2].ends_with("   1 test(s) failed: mm::x"));
    }

    #[test]
    fn variant_summary_counts_each_run_and_the_matrix() {
        let a = report(
            "qemu-virt:smp12",
            &[
                "TAP version 14",
                "1..3",
                "ok 1 - a::b",
                "ok 2 - a::c # SKIP no GIC ITS",
                "ok 3 - a::d",
            ],
            Exit::Status(0),
            0,
        );
        let b = report(
            "qemu-virt:el2",
            &["TAP version 14", "1..1", "not ok 1 - irq::timer_every_cpu"],
            Exit::Status(1),
            0,
        );
        let t = variant_summary(&[a, b]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4, "{t}");
        let cols = |l: &str| l.split_whitespace().map(String::from).collect::<Vec<_>>();
        assert_eq!(
            cols(lines[0]),
            ["variant", "result", "ok", "SKIP", "failed", "wall"]
        );
        assert_eq!(
            cols(lines[1]),
            ["qemu-virt:smp12", "PASS", "2", "1", "0", "2.0s"]
        );
        assert_eq!(
            cols(lines[2]),
            ["qemu-virt:el2", "FAIL", "0", "0", "1", "2.0s"]
        );
        assert_eq!(
            lines[3],
            "matrix: 2 run(s), 1 passed, 1 failed; QEMU wall 4.0s"
        );
    }
}
