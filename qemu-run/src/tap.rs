//! TAP version 14 as the kernel prints it on its console, and the verdict.
//!
//! The console mixes log lines with TAP, so anything that is not a TAP line
//! is ignored. The parser is fed line by line while QEMU runs, so the runner
//! can react to a `Bail out!` before QEMU exits.
use std::time::Duration;

/// `# SKIP` / `# TODO` on a test point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    Skip(String),
    Todo(String),
}

/// How a test point counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Passed,
    Failed,
    Skipped,
    /// `not ok # TODO`: a known failure, not counted against the run.
    Todo,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPoint {
    pub ok: bool,
    pub number: Option<u32>,
    pub description: String,
    pub directive: Option<Directive>,
    /// The YAML diagnostic block, without its indentation and markers.
    pub diagnostic: Option<String>,
    /// When the line arrived, from QEMU's start.
    pub at: Duration,
}

impl TestPoint {
    pub fn status(&self) -> Status {
        match (&self.directive, self.ok) {
            // A skipped test never ran; `ok`/`not ok` says nothing then.
            (Some(Directive::Skip(_)), _) => Status::Skipped,
            (Some(Directive::Todo(_)), false) => Status::Todo,
            (_, true) => Status::Passed,
            (_, false) => Status::Failed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub count: u32,
    /// The text after `#` on the plan line (`1..0 # SKIP reason`).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// An open YAML block: the indentation that opened it and its text so far.
#[derive(Debug, Clone, Default)]
struct Yaml {
    indent: String,
    text: String,
}

/// The TAP seen so far on one console.
#[derive(Debug, Clone, Default)]
pub struct Tap {
    pub version: Option<u32>,
    pub plan: Option<Plan>,
    pub tests: Vec<TestPoint>,
    pub bail_out: Option<String>,
    pub bail_at: Option<Duration>,
    /// Whether the console printed anything at all.
    pub printed: bool,
    /// The last non-blank console line, for timeout reports.
    pub last_line: Option<String>,
    /// Protocol problems that make the run fail even if every test passed
    /// (a second plan, a restarted stream).
    pub problems: Vec<String>,
    yaml: Option<Yaml>,
    /// A YAML block may still attach to the last test point: no other TAP
    /// line came since (log lines may come in between).
    yaml_may_open: bool,
}

impl Tap {
    /// Every planned test reported (the kernel should exit next).
    pub fn plan_complete(&self) -> bool {
        self.plan
            .as_ref()
            .is_some_and(|p| p.count > 0 && self.tests.len() >= p.count as usize)
    }

    /// Parses a whole console transcript (tests and one-shot use).
    pub fn parse(text: &str) -> Tap {
        let mut tap = Tap::default();
        for line in text.lines() {
            tap.feed(line, Duration::ZERO);
        }
        tap.finish();
        tap
    }

    /// Feeds one console line (without its line ending) that arrived `at`.
    pub fn feed(&mut self, line: &str, at: Duration) {
        let line = line.strip_suffix('\r').unwrap_or(line);
        self.printed = true;
        if !line.trim().is_empty() {
            self.last_line = Some(line.to_string());
        }
        // After a bail out the stream is over; what follows is the crash report.
        if self.bail_out.is_some() {
            return;
        }
        if self.feed_yaml(line) {
            return;
        }
        if let Some(rest) = strip_prefix_ci(line, "Bail out!") {
            self.bail_out = Some(rest.trim().to_string());
            self.bail_at = Some(at);
            self.yaml_may_open = false;
        } else if let Some(v) = parse_version(line) {
            if self.version.is_some() {
                self.problems
                    .push("TAP stream started again (did the kernel reboot?)".into());
            }
            self.version = Some(v);
            self.yaml_may_open = false;
        } else if let Some(plan) = parse_plan(line) {
            if let Some(old) = &self.plan {
                self.problems.push(format!(
                    "second TAP plan 1..{} after 1..{}",
                    plan.count, old.count
                ));
            } else {
                self.plan = Some(plan);
            }
            self.yaml_may_open = false;
        } else if let Some(mut t) = parse_test_point(line) {
            t.at = at;
            self.tests.push(t);
            self.yaml_may_open = true;
        } else if self.yaml_may_open && is_yaml_start(line) {
            let indent = &line[..line.len() - line.trim_start().len()];
            self.yaml = Some(Yaml {
                indent: indent.to_string(),
                text: String::new(),
            });
        }
        // Anything else is a log line or a comment.
    }

    /// Handles a line while a YAML block is open; false if the line is not
    /// part of it (the block then ends where it stands).
    fn feed_yaml(&mut self, line: &str) -> bool {
        let Some(yaml) = &mut self.yaml else {
            return false;
        };
        if line.trim().is_empty() {
            yaml.text.push('\n');
            return true;
        }
        if let Some(body) = line.strip_prefix(yaml.indent.as_str()) {
            if body.trim_end() == "..." {
                self.close_yaml();
            } else {
                yaml.text.push_str(body);
                yaml.text.push('\n');
            }
            return true;
        }
        // An unindented line inside the block: the block was cut short
        // (a crash, say). Keep what came and read the line as usual.
        self.close_yaml();
        false
    }

    fn close_yaml(&mut self) {
        if let Some(yaml) = self.yaml.take() {
            if let Some(t) = self.tests.last_mut() {
                t.diagnostic = Some(yaml.text.trim_end().to_string());
            }
        }
        self.yaml_may_open = false;
    }

    /// Ends the stream (QEMU exited): closes an unterminated YAML block.
    pub fn finish(&mut self) {
        self.close_yaml();
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for t in &self.tests {
            match t.status() {
                Status::Passed => c.passed += 1,
                Status::Failed => c.failed += 1,
                Status::Skipped | Status::Todo => c.skipped += 1,
            }
        }
        c
    }

    /// Arrival time of the final TAP line: the last test point or bail out.
    pub fn last_tap_at(&self) -> Option<Duration> {
        let last_test = self.tests.last().map(|t| t.at);
        match (last_test, self.bail_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn failed(&self) -> impl Iterator<Item = &TestPoint> {
        self.tests.iter().filter(|t| t.status() == Status::Failed)
    }
}

fn strip_prefix_ci<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    let head = line.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &line[prefix.len()..])
}

fn parse_version(line: &str) -> Option<u32> {
    line.trim_end()
        .strip_prefix("TAP version ")?
        .trim()
        .parse()
        .ok()
}

/// `1..N`, optionally followed by `# reason`.
fn parse_plan(line: &str) -> Option<Plan> {
    let rest = line.trim_end().strip_prefix("1..")?;
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let count = rest[..digits].parse().ok()?;
    let tail = rest[digits..].trim();
    let reason = if tail.is_empty() {
        None
    } else {
        Some(tail.strip_prefix('#')?.trim().to_string())
    };
    Some(Plan { count, reason })
}

/// `ok|not ok [number] [-] [description] [# SKIP|TODO [reason]]`.
fn parse_test_point(line: &str) -> Option<TestPoint> {
    let (ok, rest) = if let Some(r) = line.strip_prefix("not ok") {
        (false, r)
    } else {
        (true, line.strip_prefix("ok")?)
    };
    // "okay" or "ok1" is not a test point.
    if !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    let rest = rest.trim_start();
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (number, rest) = if digits > 0 {
        let after = &rest[digits..];
        // A description must be separated from the number.
        if !(after.is_empty() || after.starts_with([' ', '\t'])) {
            return None;
        }
        (Some(rest[..digits].parse().ok()?), after.trim_start())
    } else {
        (None, rest)
    };
    let rest = rest.strip_prefix('-').map(str::trim_start).unwrap_or(rest);
    let (description, directive) = split_directive(rest);
    Some(TestPoint {
        ok,
        number,
        description,
        directive,
        diagnostic: None,
        at: Duration::ZERO,
    })
}

/// Splits at the first unescaped `#`; `\#` and `\\` are escapes in the
/// description.
fn split_directive(rest: &str) -> (String, Option<Directive>) {
    let mut description = String::new();
    let mut chars = rest.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, e @ ('#' | '\\'))) => description.push(e),
                Some((_, e)) => {
                    description.push('\\');
                    description.push(e);
                }
                None => description.push('\\'),
            },
            '#' => {
                let text = rest[i + 1..].trim();
                let word_len = text.find(char::is_whitespace).unwrap_or(text.len());
                let word = text[..word_len].to_ascii_lowercase();
                let reason = text[word_len..].trim().to_string();
                // TAP allows any word starting with skip/todo (SKIPPED, …).
                let directive = if word.starts_with("skip") {
                    Some(Directive::Skip(reason))
                } else if word.starts_with("todo") {
                    Some(Directive::Todo(reason))
                } else {
                    None // a comment
                };
                return (description.trim().to_string(), directive);
            }
            c => description.push(c),
        }
    }
    (description.trim().to_string(), None)
}

fn is_yaml_start(line: &str) -> bool {
    line.starts_with([' ', '\t']) && line.trim() == "---"
}

/// How the QEMU run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// QEMU exited with this status.
    Status(i32),
    /// QEMU died from a signal it was not sent by us.
    Signal(i32),
    /// We killed QEMU when the timeout expired.
    Timeout(Duration),
    /// The kernel bailed out and QEMU did not exit by itself; we killed it.
    KilledAfterBailOut,
    /// The plan completed and QEMU did not exit by itself; we killed it
    /// (the kernel's exit path is broken: its exit status is lost).
    KilledAfterPlan,
    /// QEMU could not be started at all.
    SpawnError(String),
    /// A console watched with no process behind it (a real board's UART,
    /// a saved log): there is no exit status, the TAP stream alone decides.
    Watched(ConsoleEnd),
    /// The watch's timeout expired before the stream ended.
    WatchTimeout(Duration),
}

/// How a watched console stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleEnd {
    /// End of file, or the device hung up.
    EndOfInput,
    /// A bail out, and the grace for the crash report after it passed.
    AfterBailOut,
    /// The last planned test, and the grace after it passed.
    AfterPlan,
}

/// A board's verdict: `reason` is one line, set when the board failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub pass: bool,
    pub reason: Option<String>,
    /// The failure is about the run as a whole, not about named tests
    /// (JUnit then reports it as a failing test case of its own).
    pub board_level: bool,
}

impl Verdict {
    fn pass() -> Verdict {
        Verdict {
            pass: true,
            reason: None,
            board_level: false,
        }
    }

    fn fail(reason: String) -> Verdict {
        Verdict {
            pass: false,
            reason: Some(reason),
            board_level: true,
        }
    }
}

/// Longest part of a console line quoted in a one-line reason.
const QUOTE_MAX: usize = 160;

fn clip(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() <= QUOTE_MAX {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(QUOTE_MAX).collect();
        t.push('…');
        t
    }
}

fn describe_exit(exit: &Exit) -> String {
    match exit {
        Exit::Status(s) => format!("QEMU exit status {s}"),
        Exit::Signal(s) => format!("QEMU killed by signal {s}"),
        Exit::Timeout(d) => format!("QEMU killed after {}s", d.as_secs()),
        Exit::KilledAfterBailOut => "QEMU killed after the bail out".into(),
        Exit::KilledAfterPlan => {
            "QEMU did not exit after the last test (the kernel did not power the machine off); killed"
                .into()
        }
        Exit::SpawnError(e) => format!("QEMU did not start: {e}"),
        Exit::Watched(ConsoleEnd::EndOfInput) => "the console ended".into(),
        Exit::Watched(ConsoleEnd::AfterBailOut) => "console watched until the bail out".into(),
        Exit::Watched(ConsoleEnd::AfterPlan) => "console watched until the last test".into(),
        Exit::WatchTimeout(d) => format!("console watched for {}s", d.as_secs()),
    }
}

/// The board's verdict from the TAP seen, how QEMU ended, the board's
/// passing exit status (`None` when its exit method gives none: PSCI
/// SYSTEM_OFF, a halt; then the TAP stream alone decides) and the first
/// lines QEMU printed on stderr. The first failure in a fixed priority
/// order gives the reason.
pub fn verdict(tap: &Tap, exit: &Exit, exit_pass: Option<i32>, stderr_head: &[String]) -> Verdict {
    if let Some(reason) = &tap.bail_out {
        let reason = if reason.is_empty() {
            "(no reason given)"
        } else {
            reason
        };
        return Verdict::fail(format!("bail out: {}", clip(reason)));
    }
    if let Exit::Timeout(d) | Exit::WatchTimeout(d) = exit {
        let last = match &tap.last_line {
            Some(l) => clip(l),
            None => "none (kernel printed nothing)".into(),
        };
        let what = match exit {
            Exit::Timeout(_) => "QEMU killed",
            _ => "stopped watching the console",
        };
        return Verdict::fail(format!(
            "timeout after {}s ({what}); last console line: {last}",
            d.as_secs()
        ));
    }
    if let Exit::SpawnError(e) = exit {
        return Verdict::fail(format!("QEMU failed to start: {}", clip(e)));
    }
    if !tap.printed {
        // QEMU refusing its command line looks like this too: it prints
        // its complaint on stderr and exits non-zero.
        let failed_status = matches!(exit, Exit::Status(s) if *s != exit_pass.unwrap_or(0));
        let stderr: Vec<&str> = stderr_head
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .take(3)
            .collect();
        if failed_status && !stderr.is_empty() {
            return Verdict::fail(format!(
                "QEMU failed to start: {}",
                clip(&stderr.join(" | "))
            ));
        }
        return Verdict::fail(format!("kernel printed nothing ({})", describe_exit(exit)));
    }
    let Some(plan) = &tap.plan else {
        return Verdict::fail(format!("no TAP plan ({})", describe_exit(exit)));
    };
    if tap.version.is_none() {
        return Verdict::fail("no TAP version line".into());
    }
    if plan.count == 0 {
        return Verdict::fail("no test matched the filter".into());
    }
    let ran = tap.tests.len();
    let planned = plan.count as usize;
    if ran < planned {
        return Verdict::fail(format!(
            "short plan: ran {ran} of {planned} tests ({})",
            describe_exit(exit)
        ));
    }
    if ran > planned {
        return Verdict::fail(format!("ran {ran} tests but the plan says {planned}"));
    }
    for (i, t) in tap.tests.iter().enumerate() {
        let expected = i as u64 + 1;
        if let Some(n) = t.number {
            if u64::from(n) != expected {
                let kind = if tap.tests[..i].iter().any(|p| p.number == Some(n)) {
                    "duplicate test number"
                } else {
                    "test number out of order:"
                };
                return Verdict::fail(format!("{kind} {n} (expected {expected})"));
            }
        }
    }
    if let Some(p) = tap.problems.first() {
        return Verdict::fail(p.clone());
    }
    let failed: Vec<&str> = tap.failed().map(|t| t.description.as_str()).collect();
    if !failed.is_empty() {
        const SHOWN: usize = 5;
        let mut names = failed[..failed.len().min(SHOWN)].join(", ");
        if failed.len() > SHOWN {
            names.push_str(", ...");
        }
        return Verdict {
            pass: false,
            reason: Some(format!("{} test(s) failed: {names}", failed.len())),
            board_level: false,
        };
    }
    match (exit, exit_pass) {
        // No status to compare: QEMU ended (the kernel powered it off), or
        // a real board's console was watched. A QEMU that had to be killed
        // after the last test did not power off: the exit path failed.
        (Exit::Status(_), None) | (Exit::Watched(_), _) => Verdict::pass(),
        (Exit::Status(s), Some(p)) if *s == p => Verdict::pass(),
        (Exit::Status(s), Some(p)) => Verdict::fail(format!(
            "exit status {s} does not match the verdict (expected {p})"
        )),
        (other, _) => Verdict::fail(describe_exit(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLEAN: &str = "\
[    0.001234] INFO  boot: hello from the kernel
TAP version 14
1..3
ok 1 - mm::page_alloc
[    0.002000] DEBUG mm: 12 pages
ok 2 - mm::dma_align
ok 3 - arch::timer # SKIP secondary CPUs left off
# a comment
[    0.003000] INFO  harness: 2 passed, 0 failed, 1 skipped
";

    fn v(text: &str, exit: Exit) -> Verdict {
        verdict(&Tap::parse(text), &exit, Some(0), &[])
    }

    fn reason(text: &str, exit: Exit) -> String {
        let v = v(text, exit);
        assert!(!v.pass);
        v.reason.unwrap()
    }

    #[test]
    fn clean_pass() {
        let tap = Tap::parse(CLEAN);
        assert_eq!(tap.version, Some(14));
        assert_eq!(
            tap.plan,
            Some(Plan {
                count: 3,
                reason: None
            })
        );
        assert_eq!(tap.tests.len(), 3);
        assert_eq!(tap.tests[0].description, "mm::page_alloc");
        assert_eq!(tap.tests[0].number, Some(1));
        assert_eq!(
            tap.tests[2].directive,
            Some(Directive::Skip("secondary CPUs left off".into()))
        );
        assert_eq!(tap.tests[2].description, "arch::timer");
        assert_eq!(
            tap.counts(),
            Counts {
                passed: 2,
                failed: 0,
                skipped: 1
            }
        );
        assert_eq!(v(CLEAN, Exit::Status(0)), Verdict::pass());
    }

    #[test]
    fn crlf_line_endings() {
        let text = CLEAN.replace('\n', "\r\n");
        let mut tap = Tap::default();
        for l in text.split('\n') {
            tap.feed(l, Duration::ZERO);
        }
        assert_eq!(tap.tests.len(), 3);
        assert_eq!(
            tap.tests[2].directive,
            Some(Directive::Skip("secondary CPUs left off".into()))
        );
        assert!(verdict(&tap, &Exit::Status(0), Some(0), &[]).pass);
    }

    #[test]
    fn malformed_lines_are_ignored() {
        let text = "\
TAP version 14
1..2
okay then
ok1 - glued
not okay
1..x
1..3 trailing junk
TAP version fourteen
 ok 9 - indented is a subtest, not ours
ok 1 - a::b
ok 2 - a::c
";
        let tap = Tap::parse(text);
        assert_eq!(tap.tests.len(), 2);
        assert_eq!(tap.plan.as_ref().unwrap().count, 2);
        assert!(tap.problems.is_empty());
        assert!(v(text, Exit::Status(0)).pass);
    }

    #[test]
    fn test_point_forms() {
        let t = parse_test_point("ok").unwrap();
        assert!(t.ok && t.number.is_none() && t.description.is_empty());
        let t = parse_test_point("not ok 7").unwrap();
        assert!(!t.ok && t.number == Some(7));
        let t = parse_test_point("ok 3 no dash").unwrap();
        assert_eq!(t.description, "no dash");
        let t = parse_test_point("ok - a::b \\# not a directive # todo later").unwrap();
        assert_eq!(t.description, "a::b # not a directive");
        assert_eq!(t.directive, Some(Directive::Todo("later".into())));
        let t = parse_test_point("ok 4 - x # SKIPPED").unwrap();
        assert_eq!(t.directive, Some(Directive::Skip(String::new())));
        let t = parse_test_point("ok 5 - x # just a comment").unwrap();
        assert_eq!((t.description.as_str(), t.directive), ("x", None));
        assert!(parse_test_point("ok 99999999999999999999 - too big").is_none());
    }

    #[test]
    fn unnumbered_tests_count_in_order() {
        let text = "TAP version 14\n1..2\nok - a::b\nok - a::c\n";
        assert!(v(text, Exit::Status(0)).pass);
    }

    #[test]
    fn not_ok_with_diagnostics() {
        let text = "\
TAP version 14
1..3
ok 1 - area::name
not ok 2 - area::other
  ---
  message: \"pages in use after free\"
  expected: \"0\"
  seen: \"2\"
  ...
ok 3 - arch::timer # SKIP secondary CPUs left off
";
        let tap = Tap::parse(text);
        let bad = &tap.tests[1];
        assert_eq!(bad.status(), Status::Failed);
        assert_eq!(
            bad.diagnostic.as_deref(),
            Some("message: \"pages in use after free\"\nexpected: \"0\"\nseen: \"2\"")
        );
        assert_eq!(tap.tests[2].diagnostic, None);
        let v = v(text, Exit::Status(1));
        assert_eq!(v.reason.as_deref(), Some("1 test(s) failed: area::other"));
        assert!(!v.board_level);
    }

    #[test]
    fn diagnostics_survive_interleaved_logs_and_cut_blocks() {
        let text = "\
TAP version 14
1..2
not ok 1 - a::x
[ 0.1] INFO other cpu: hello
  ---
  message: \"boom\"
not ok 2 - a::y
";
        let tap = Tap::parse(text);
        assert_eq!(tap.tests.len(), 2);
        assert_eq!(
            tap.tests[0].diagnostic.as_deref(),
            Some("message: \"boom\"")
        );
        assert_eq!(
            v(text, Exit::Status(1)).reason.as_deref(),
            Some("2 test(s) failed: a::x, a::y")
        );
        // A `---` with no test point before it is no diagnostic.
        let tap = Tap::parse("TAP version 14\n  ---\n  x: 1\n  ...\n");
        assert!(tap.tests.is_empty());
    }

    #[test]
    fn todo_failures_do_not_count() {
        let text = "TAP version 14\n1..2\nnot ok 1 - a::b # TODO not yet\nok 2 - a::c # todo\n";
        let tap = Tap::parse(text);
        assert_eq!(tap.tests[0].status(), Status::Todo);
        assert_eq!(tap.tests[1].status(), Status::Passed);
        assert_eq!(
            tap.counts(),
            Counts {
                passed: 1,
                failed: 0,
                skipped: 1
            }
        );
        assert!(v(text, Exit::Status(0)).pass);
    }

    #[test]
    fn skip_never_fails_and_counts_as_skipped() {
        let text = "TAP version 14\n1..2\nok 1 - a # SKIP no hw\nnot ok 2 - b # skip no hw\n";
        let tap = Tap::parse(text);
        assert_eq!(tap.counts().skipped, 2);
        assert!(v(text, Exit::Status(0)).pass);
    }

    #[test]
    fn many_failures_are_abbreviated() {
        let mut text = String::from("TAP version 14\n1..7\n");
        for i in 1..=7 {
            text.push_str(&format!("not ok {i} - t::{i}\n"));
        }
        assert_eq!(
            reason(&text, Exit::Status(1)),
            "7 test(s) failed: t::1, t::2, t::3, t::4, t::5, ..."
        );
    }

    #[test]
    fn early_exit_mid_plan() {
        let text = "TAP version 14\n1..5\nok 1 - a\nok 2 - b\n[ 1.0] ERROR something\n";
        assert_eq!(
            reason(text, Exit::Status(1)),
            "short plan: ran 2 of 5 tests (QEMU exit status 1)"
        );
        // A short plan outranks the failures that did run.
        let text = "TAP version 14\n1..5\nnot ok 1 - a\n";
        assert!(reason(text, Exit::Signal(11)).starts_with("short plan: ran 1 of 5 tests"));
    }

    #[test]
    fn too_many_tests() {
        let text = "TAP version 14\n1..1\nok 1 - a\nok 2 - b\n";
        assert_eq!(
            reason(text, Exit::Status(0)),
            "ran 2 tests but the plan says 1"
        );
    }

    #[test]
    fn missing_plan_and_version() {
        let text = "TAP version 14\nok 1 - a\n";
        assert_eq!(
            reason(text, Exit::Status(0)),
            "no TAP plan (QEMU exit status 0)"
        );
        let text = "[ 0.0] INFO boot\n";
        assert!(reason(text, Exit::Status(0)).starts_with("no TAP plan"));
        let text = "1..1\nok 1 - a\n";
        assert_eq!(reason(text, Exit::Status(0)), "no TAP version line");
    }

    #[test]
    fn plan_at_the_end_is_fine() {
        let text = "TAP version 14\nok 1 - a\nok 2 - b\n1..2\n";
        assert!(v(text, Exit::Status(0)).pass);
    }

    #[test]
    fn empty_plan_means_no_test_matched() {
        let text = "TAP version 14\n1..0 # SKIP no test selected\n";
        let tap = Tap::parse(text);
        assert_eq!(
            tap.plan,
            Some(Plan {
                count: 0,
                reason: Some("SKIP no test selected".into())
            })
        );
        assert_eq!(reason(text, Exit::Status(0)), "no test matched the filter");
        // The kernel's own bail out wins.
        let text = "TAP version 14\n1..0\nBail out! no test matches filter no_such_test\n";
        assert_eq!(
            reason(text, Exit::Status(1)),
            "bail out: no test matches filter no_such_test"
        );
    }

    #[test]
    fn duplicate_and_out_of_order_numbers() {
        let text = "TAP version 14\n1..3\nok 1 - a\nok 1 - b\nok 2 - c\n";
        assert_eq!(
            reason(text, Exit::Status(0)),
            "duplicate test number 1 (expected 2)"
        );
        let text = "TAP version 14\n1..3\nok 1 - a\nok 3 - b\nok 2 - c\n";
        assert_eq!(
            reason(text, Exit::Status(0)),
            "test number out of order: 3 (expected 2)"
        );
    }

    #[test]
    fn second_plan_or_restart_is_a_problem() {
        let text = "TAP version 14\n1..1\nok 1 - a\n1..1\n";
        assert_eq!(
            reason(text, Exit::Status(0)),
            "second TAP plan 1..1 after 1..1"
        );
        let text = "TAP version 14\n1..1\nok 1 - a\nTAP version 14\n";
        assert!(reason(text, Exit::Status(0)).starts_with("TAP stream started again"));
    }

    #[test]
    fn bail_out_wins_and_stops_parsing() {
        let text = "\
TAP version 14
1..3
ok 1 - a
[ 0.5] ERROR fault: data abort at 0xdead
Bail out! unexpected exception: data abort
not ok 2 - after the bail
";
        let tap = Tap::parse(text);
        assert_eq!(tap.tests.len(), 1);
        assert_eq!(
            tap.bail_out.as_deref(),
            Some("unexpected exception: data abort")
        );
        assert_eq!(tap.last_line.as_deref(), Some("not ok 2 - after the bail"));
        assert_eq!(
            reason(text, Exit::KilledAfterBailOut),
            "bail out: unexpected exception: data abort"
        );
        // Even a timeout reports the bail out first.
        assert!(reason(text, Exit::Timeout(Duration::from_secs(5))).starts_with("bail out: "));
        assert_eq!(
            reason("bail out!", Exit::Status(1)),
            "bail out: (no reason given)"
        );
        // No version or plan needed: a crash during boot.
        assert_eq!(
            reason("Bail out! early panic", Exit::Status(1)),
            "bail out: early panic"
        );
    }

    #[test]
    fn nothing_printed() {
        let tap = Tap::parse("");
        assert!(!tap.printed);
        let v = verdict(&tap, &Exit::Status(0), Some(0), &[]);
        assert_eq!(
            v.reason.as_deref(),
            Some("kernel printed nothing (QEMU exit status 0)")
        );
        assert!(v.board_level);
        // Non-pass status with a complaint on stderr: QEMU itself failed.
        let stderr = vec![
            "qemu-system-aarch64: -M nope: unsupported machine type".to_string(),
            "Use -machine help to list supported machines".to_string(),
        ];
        let v = verdict(&tap, &Exit::Status(1), Some(0), &stderr);
        assert_eq!(
            v.reason.as_deref(),
            Some("QEMU failed to start: qemu-system-aarch64: -M nope: unsupported machine type | Use -machine help to list supported machines")
        );
        let v = verdict(&tap, &Exit::SpawnError("No such file".into()), Some(0), &[]);
        assert_eq!(
            v.reason.as_deref(),
            Some("QEMU failed to start: No such file")
        );
    }

    #[test]
    fn timeout() {
        let mut tap = Tap::default();
        tap.feed("TAP version 14", Duration::from_millis(10));
        tap.feed("1..2", Duration::from_millis(11));
        tap.feed("ok 1 - a", Duration::from_millis(12));
        tap.feed(
            "[ 1.0] INFO waiting for the timer",
            Duration::from_millis(13),
        );
        let v = verdict(&tap, &Exit::Timeout(Duration::from_secs(7)), Some(0), &[]);
        assert_eq!(
            v.reason.as_deref(),
            Some("timeout after 7s (QEMU killed); last console line: [ 1.0] INFO waiting for the timer")
        );
        assert_eq!(tap.last_tap_at(), Some(Duration::from_millis(12)));
        let v = verdict(
            &Tap::default(),
            &Exit::Timeout(Duration::from_secs(5)),
            Some(0),
            &[],
        );
        assert_eq!(
            v.reason.as_deref(),
            Some(
                "timeout after 5s (QEMU killed); last console line: none (kernel printed nothing)"
            )
        );
        let long = "x".repeat(500);
        let tap = Tap::parse(&long);
        let r = verdict(&tap, &Exit::Timeout(Duration::from_secs(1)), Some(0), &[])
            .reason
            .unwrap();
        assert!(r.len() < 300 && r.ends_with('…'));
    }

    #[test]
    fn exit_status_must_match() {
        assert_eq!(
            reason(CLEAN, Exit::Status(3)),
            "exit status 3 does not match the verdict (expected 0)"
        );
        assert_eq!(reason(CLEAN, Exit::Signal(9)), "QEMU killed by signal 9");
        assert!(verdict(&Tap::parse(CLEAN), &Exit::Status(33), Some(33), &[]).pass);
    }

    #[test]
    fn without_an_exit_status_the_tap_stream_decides() {
        let clean = Tap::parse(CLEAN);
        // PSCI SYSTEM_OFF: QEMU exits 0 whatever the verdict.
        assert!(verdict(&clean, &Exit::Status(0), None, &[]).pass);
        // A halt instead of the power-off: QEMU is killed after the last
        // planned test, and the exit path is what failed.
        let v = verdict(&clean, &Exit::KilledAfterPlan, None, &[]);
        assert!(!v.pass);
        assert!(v.reason.unwrap().contains("did not power the machine off"));
        let failed = CLEAN.replace("ok 2 - mm::dma_align", "not ok 2 - mm::dma_align");
        let v = verdict(&Tap::parse(&failed), &Exit::Status(0), None, &[]);
        assert_eq!(v.reason.as_deref(), Some("1 test(s) failed: mm::dma_align"));
        let short = CLEAN.replace("ok 3 - arch::timer # SKIP secondary CPUs left off\n", "");
        assert!(!verdict(&Tap::parse(&short), &Exit::Status(0), None, &[]).pass);
        assert!(!verdict(&clean, &Exit::Signal(9), None, &[]).pass);
    }
}
