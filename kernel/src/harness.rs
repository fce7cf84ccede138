//! The self-test harness: tests are registered once in a table, selected by
//! name patterns from the command line, and reported as TAP version 14.
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt::{self, Write};

/// Why a test did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestError {
    /// The test ran and something was wrong.
    Fail {
        message: String,
        expected: Option<String>,
        seen: Option<String>,
    },
    /// The test cannot run on this platform; never counts as a pass.
    Skip(String),
}

impl TestError {
    pub fn fail(message: impl Into<String>) -> Self {
        TestError::Fail {
            message: message.into(),
            expected: None,
            seen: None,
        }
    }

    pub fn mismatch(
        message: impl Into<String>,
        expected: impl fmt::Display,
        seen: impl fmt::Display,
    ) -> Self {
        TestError::Fail {
            message: message.into(),
            expected: Some(expected.to_string()),
            seen: Some(seen.to_string()),
        }
    }

    pub fn skip(reason: impl Into<String>) -> Self {
        TestError::Skip(reason.into())
    }
}

pub type TestResult = Result<(), TestError>;

/// Fails the test with `expected`/`seen` unless `seen == expected`.
#[macro_export]
macro_rules! ensure_eq {
    ($seen:expr, $expected:expr, $($msg:tt)+) => {{
        let (seen, expected) = (&$seen, &$expected);
        if seen != expected {
            return Err($crate::harness::TestError::mismatch(
                alloc::format!($($msg)+),
                alloc::format!("{:?}", expected),
                alloc::format!("{:?}", seen),
            ));
        }
    }};
}

/// Fails the test with the message unless the condition holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {{
        if !$cond {
            return Err($crate::harness::TestError::fail(alloc::format!($($msg)+)));
        }
    }};
}

/// One registered test. Names are `area::name`.
pub struct Test {
    pub name: &'static str,
    pub run: fn() -> TestResult,
}

impl Test {
    pub const fn new(name: &'static str, run: fn() -> TestResult) -> Self {
        Test { name, run }
    }
}

/// Matches `name` against a comma-separated list of patterns. A pattern with
/// `*` or `?` is a glob over the whole name; a plain pattern matches any
/// name that contains it.
pub fn matches_any(patterns: &str, name: &str) -> bool {
    patterns
        .split(',')
        .filter(|p| !p.is_empty())
        .any(|p| matches(p, name))
}

fn matches(pattern: &str, name: &str) -> bool {
    if pattern.contains(['*', '?']) {
        glob(pattern.as_bytes(), name.as_bytes())
    } else {
        name.contains(pattern)
    }
}

/// Iterative glob with single-star backtracking: linear in practice, no recursion.
fn glob(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// The tests a run selects, in table order.
pub fn select<'a>(tests: &'a [Test], filter: Option<&str>, exclude: Option<&str>) -> Vec<&'a Test> {
    tests
        .iter()
        .filter(|t| filter.is_none_or(|f| f.is_empty() || matches_any(f, t.name)))
        .filter(|t| exclude.is_none_or(|x| x.is_empty() || !matches_any(x, t.name)))
        .collect()
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Summary {
    pub fn ok(&self) -> bool {
        self.failed == 0
    }
}

/// Writes TAP 14 for a run, test by test, as they complete.
pub struct TapWriter<W: Write> {
    out: W,
    next: usize,
    pub summary: Summary,
}

impl<W: Write> TapWriter<W> {
    /// Prints the version and plan lines.
    pub fn start(mut out: W, planned: usize) -> Self {
        let _ = writeln!(out, "TAP version 14");
        let _ = writeln!(out, "1..{planned}");
        TapWriter {
            out,
            next: 1,
            summary: Summary::default(),
        }
    }

    /// Prints one test point with its diagnostic block.
    pub fn report(&mut self, name: &str, result: &TestResult) {
        let n = self.next;
        self.next += 1;
        let out = &mut self.out;
        match result {
            Ok(()) => {
                self.summary.passed += 1;
                let _ = writeln!(out, "ok {n} - {name}");
            }
            Err(TestError::Skip(reason)) => {
                self.summary.skipped += 1;
                let _ = writeln!(out, "ok {n} - {name} # SKIP {}", one_line(reason));
            }
            Err(TestError::Fail {
                message,
                expected,
                seen,
            }) => {
                self.summary.failed += 1;
                let _ = writeln!(out, "not ok {n} - {name}");
                let _ = writeln!(out, "  ---");
                let _ = writeln!(out, "  message: {}", Quoted(message));
                if let Some(e) = expected {
                    let _ = writeln!(out, "  expected: {}", Quoted(e));
                }
                if let Some(s) = seen {
                    let _ = writeln!(out, "  seen: {}", Quoted(s));
                }
                let _ = writeln!(out, "  ...");
            }
        }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

/// A YAML double-quoted scalar.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_char('"')?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                c => f.write_char(c)?,
            }
        }
        f.write_char('"')
    }
}

/// A watch window for a test that waits for something to happen (ticks,
/// interrupt deliveries): it closes only when `min_ns` have passed on the
/// clock *and* the watching CPU's own timer ticked `min_ticks` times, so
/// a guest starved by a busy host (its time passes, it does not run) gets
/// the time it needs; `cap_ns` bounds it when the ticks themselves stop.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub min_ns: u64,
    pub min_ticks: u64,
    pub cap_ns: u64,
}

impl Window {
    /// Whether the window has closed after `elapsed_ns` with `ticks` of
    /// the watcher's own timer seen meanwhile.
    pub fn closed(&self, elapsed_ns: u64, ticks: u64) -> bool {
        elapsed_ns >= self.cap_ns || (elapsed_ns >= self.min_ns && ticks >= self.min_ticks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass() -> TestResult {
        Ok(())
    }
    fn fails() -> TestResult {
        ensure_eq!(2usize, 0usize, "pages in use after free");
        Ok(())
    }
    fn skips() -> TestResult {
        Err(TestError::skip("secondary CPUs\nleft off"))
    }

    const TABLE: &[Test] = &[
        Test {
            name: "mm::page_alloc",
            run: pass,
        },
        Test {
            name: "mm::dma_align",
            run: fails,
        },
        Test {
            name: "arch::timer_every_cpu",
            run: skips,
        },
    ];

    #[test]
    fn glob_and_substring() {
        assert!(matches_any("mm::*", "mm::page_alloc"));
        assert!(matches_any("page", "mm::page_alloc"));
        assert!(!matches_any("mm::*", "arch::mm"));
        assert!(matches_any("*::page_?lloc", "mm::page_alloc"));
        assert!(matches_any("x,mm::*", "mm::a"));
        assert!(!matches_any("", "mm::a"));
        assert!(matches_any("*", ""));
        assert!(matches_any("a*b*c", "aXXbYYc"));
        assert!(!matches_any("a*b*c", "aXXbYY"));
    }

    #[test]
    fn selection() {
        let names = |v: Vec<&Test>| v.iter().map(|t| t.name).collect::<Vec<_>>();
        assert_eq!(select(TABLE, None, None).len(), 3);
        assert_eq!(
            names(select(TABLE, Some("mm::*"), None)),
            ["mm::page_alloc", "mm::dma_align"]
        );
        assert_eq!(
            names(select(TABLE, Some("mm::*"), Some("dma"))),
            ["mm::page_alloc"]
        );
        assert!(select(TABLE, Some("nothing"), None).is_empty());
    }

    #[test]
    fn tap_output() {
        let mut w = TapWriter::start(String::new(), TABLE.len());
        for t in TABLE {
            w.report(t.name, &(t.run)());
        }
        let s = w.summary;
        assert_eq!((s.passed, s.failed, s.skipped), (1, 1, 1));
        assert!(!s.ok());
        let out = w.into_inner();
        assert_eq!(
            out,
            "TAP version 14\n1..3\nok 1 - mm::page_alloc\nnot ok 2 - mm::dma_align\n  ---\n  \
             message: \"pages in use after free\"\n  expected: \"0\"\n  seen: \"2\"\n  ...\n\
             ok 3 - arch::timer_every_cpu # SKIP secondary CPUs left off\n"
        );
    }

    #[test]
    fn yaml_quoting() {
        assert_eq!(
            Quoted("a\"b\\c\nd\u{1}").to_string(),
            "\"a\\\"b\\\\c\\nd\\x01\""
        );
    }

    #[test]
    fn a_window_waits_for_the_watchers_own_ticks_up_to_its_cap() {
        let w = Window {
            min_ns: 500,
            min_ticks: 50,
            cap_ns: 5000,
        };
        // A quiet machine: time and ticks both reach their minimum.
        assert!(!w.closed(499, 60));
        assert!(w.closed(500, 50));
        // A starved guest: the time passed, but the watcher barely ran.
        assert!(!w.closed(2000, 3));
        // Ticks that never come do not hold it open for ever.
        assert!(w.closed(5000, 0));
    }
}
