//! Stress runs: the suite booted many times beside a host load, so a test
//! that fails only when the machine is busy shows up here and not in CI.
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::BoardReport;

/// Busy host threads, stopped when dropped.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    pub fn start(threads: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..threads)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut x = 1u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Work the optimizer cannot drop, checked often
                        // enough to stop promptly.
                        for _ in 0..10_000 {
                            x = std::hint::black_box(x.wrapping_mul(6364136223846793005) ^ 1);
                        }
                    }
                })
            })
            .collect();
        Load { stop, threads }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A board's name in reports: numbered by round when there are several.
pub fn label(board: &str, round: u32, rounds: u32) -> String {
    if rounds > 1 {
        format!("{board}#{round}")
    } else {
        board.to_string()
    }
}

/// What failed across the rounds, per board: each failed test with the
/// rounds it failed in, and runs that failed as a whole (a timeout, a
/// crash) by their reason.
pub fn tally(reports: &[BoardReport], rounds: u32, load: u32) -> String {
    // board -> what failed -> rounds
    let mut failed: BTreeMap<&str, BTreeMap<String, Vec<u32>>> = BTreeMap::new();
    let mut runs: BTreeMap<&str, u32> = BTreeMap::new();
    for r in reports {
        let (board, round) = match r.board.rsplit_once('#') {
            Some((b, n)) => (b, n.parse().unwrap_or(0)),
            None => (r.board.as_str(), 1),
        };
        *runs.entry(board).or_default() += 1;
        let per = failed.entry(board).or_default();
        let mut any = false;
        for t in r.outcome.tap.failed() {
            any = true;
            per.entry(t.description.clone()).or_default().push(round);
        }
        if !r.verdict.pass && !any {
            let reason = r.verdict.reason.clone().unwrap_or_else(|| "failed".into());
            per.entry(format!("(run) {reason}"))
                .or_default()
                .push(round);
        }
    }
    let mut out =
        format!("stress: {rounds} round(s) per board beside {load} busy host thread(s)\n");
    for (board, per) in &failed {
        let n = runs.get(board).copied().unwrap_or(0);
        if per.is_empty() {
            let _ = writeln!(out, "  {board}: no failures in {n} run(s)");
            continue;
        }
        for (what, in_rounds) in per {
            let list: Vec<String> = in_rounds.iter().map(u32::to_string).collect();
            let _ = writeln!(
                out,
                "  {board}: {what} failed in {} of {n} run(s) (round {})",
                in_rounds.len(),
                list.join(", ")
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tap::Exit;
    use std::time::Duration;

    fn report(board: &str, lines: &[&str], exit: Exit) -> BoardReport {
        crate::testing::report(board, lines, exit, 0)
    }

    #[test]
    fn labels_number_rounds_only_when_repeating() {
        assert_eq!(label("qemu-virt", 1, 1), "qemu-virt");
        assert_eq!(label("qemu-virt", 3, 5), "qemu-virt#3");
    }

    #[test]
    fn tally_names_each_flaky_test_and_its_rounds() {
        let pass = ["TAP version 14", "1..2", "ok 1 - a::b", "ok 2 - a::c"];
        let flaky = ["TAP version 14", "1..2", "ok 1 - a::b", "not ok 2 - a::c"];
        let reports = [
            report("virt#1", &pass, Exit::Status(0)),
            report("q35#1", &pass, Exit::Status(0)),
            report("virt#2", &flaky, Exit::Status(1)),
            report(
                "q35#2",
                &["TAP version 14", "1..2"],
                Exit::Timeout(Duration::from_secs(9)),
            ),
            report("virt#3", &flaky, Exit::Status(1)),
            report("q35#3", &pass, Exit::Status(0)),
        ];
        let t = tally(&reports, 3, 2);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "stress: 3 round(s) per board beside 2 busy host thread(s)"
        );
        assert!(lines[1].starts_with("  q35: (run) "), "{t}");
        assert!(
            lines[1].ends_with(" failed in 1 of 3 run(s) (round 2)"),
            "{t}"
        );
        assert_eq!(
            lines[2],
            "  virt: a::c failed in 2 of 3 run(s) (round 2, 3)"
        );
        assert_eq!(lines.len(), 3, "{t}");

        let clean = tally(&reports[..2], 1, 0);
        assert!(clean.contains("  virt: no failures in 1 run(s)"), "{clean}");
    }

    #[test]
    fn load_threads_stop_when_dropped() {
        let load = Load::start(2);
        assert_eq!(load.threads.len(), 2);
        drop(load);
    }
}
