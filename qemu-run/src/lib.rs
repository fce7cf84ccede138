//! The host runner: finds (or installs) QEMU, builds the kernel for a board,
//! boots it, streams the serial console, parses the TAP 14 the kernel prints
//! and turns it into a verdict, a summary table and JUnit XML.
//!
//! Everything lives in this library so it can be unit-tested; `main.rs` only
//! calls [`cli::main`].

pub mod acpi;
pub mod bench;
pub mod board;
pub mod build;
pub mod cli;
pub mod junit;
pub mod patched;
pub mod qemu;
pub mod qtest;
pub mod run;
pub mod stress;
pub mod tap;

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
        let verdict = tap::verdict(&tap, &exit, pass_status, &[]);
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
    use crate::summary_table;
    use crate::tap::Exit;
    use crate::testing::report;

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
}
