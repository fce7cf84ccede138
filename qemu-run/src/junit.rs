//! JUnit XML: one `<testsuite>` per board, one `<testcase>` per TAP test
//! point, plus a `boot` test case for failures of the run as a whole
//! (timeout, bail out, QEMU error, short plan), which have no test to blame.
//!
//! The document is built and written by `quick-junit` (which also keeps the
//! counts); we only decide what goes in.
use std::time::Duration;

use anyhow::{Context, Result};
use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use crate::tap::{Directive, Status, TestPoint};
use crate::BoardReport;

/// Text as XML 1.0 and quick-junit carry it. Characters XML cannot carry
/// at all (most C0 controls, e.g. a console's ANSI escapes, and U+FFFE,
/// U+FFFF) become U+FFFD, so they show where they were: quick-junit would
/// drop the controls silently and let U+FFFE/U+FFFF through into an invalid
/// file. It drops tabs and carriage returns too, so a tab becomes a space
/// (words stay apart) and line ends are normalised as an XML reader does.
pub fn xml_safe(s: &str) -> String {
    s.replace("\r\n", "\n")
        .chars()
        .map(|c| match c {
            '\n' => c,
            '\t' => ' ',
            '\r' => '\n',
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// `area::name` → (`area`, `name`); a name without `::` has no area.
pub fn split_name(description: &str) -> (Option<&str>, &str) {
    match description.rsplit_once("::") {
        Some((area, name)) if !area.is_empty() && !name.is_empty() => (Some(area), name),
        _ => (None, description),
    }
}

/// Name of the board-level test case.
pub const BOARD_CASE: &str = "boot";

/// The last lines of the console, as the body of a board-level failure.
fn console_tail(console: &str, lines: usize) -> String {
    let all: Vec<&str> = console.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn testcase(board: &str, t: &TestPoint, time: Duration) -> TestCase {
    let (area, name) = split_name(&t.description);
    let name = if name.is_empty() { "(unnamed)" } else { name };
    let classname = match area {
        Some(a) => format!("{board}.{a}"),
        None => board.to_string(),
    };
    let status = match t.status() {
        Status::Passed => TestCaseStatus::success(),
        Status::Failed => {
            let message = t
                .diagnostic
                .as_deref()
                .and_then(|d| d.lines().find_map(|l| l.strip_prefix("message:")))
                .map(|m| m.trim().trim_matches('"').to_string())
                .unwrap_or_else(|| "not ok".into());
            let mut s = TestCaseStatus::non_success(NonSuccessKind::Failure);
            s.set_message(xml_safe(&message))
                .set_description(xml_safe(t.diagnostic.as_deref().unwrap_or("")));
            s
        }
        Status::Skipped | Status::Todo => {
            let message = match &t.directive {
                Some(Directive::Skip(r)) => r.clone(),
                Some(Directive::Todo(r)) => format!("TODO {r}").trim().to_string(),
                None => String::new(),
            };
            let mut s = TestCaseStatus::skipped();
            s.set_message(xml_safe(&message));
            s
        }
    };
    let mut case = TestCase::new(xml_safe(name), status);
    case.set_classname(xml_safe(&classname)).set_time(time);
    case
}

/// One board's suite.
fn suite(r: &BoardReport) -> TestSuite {
    let tap = &r.outcome.tap;
    let mut suite = TestSuite::new(xml_safe(&r.board));
    suite.set_time(r.outcome.wall);
    // Each test's time is from the previous TAP line that ended a test
    // (the first: from QEMU's start, so it includes the boot).
    let mut prev = Duration::ZERO;
    for t in &tap.tests {
        suite.add_test_case(testcase(&r.board, t, t.at.saturating_sub(prev)));
        prev = prev.max(t.at);
    }
    if !r.verdict.pass && r.verdict.board_level {
        let reason = r.verdict.reason.as_deref().unwrap_or("failed");
        let mut status = TestCaseStatus::non_success(NonSuccessKind::Failure);
        status
            .set_message(xml_safe(reason))
            .set_description(xml_safe(&console_tail(&r.outcome.console, 40)));
        let mut case = TestCase::new(BOARD_CASE, status);
        case.set_classname(xml_safe(&r.board))
            .set_time(r.outcome.wall);
        suite.add_test_case(case);
    }
    suite.set_system_out(xml_safe(&r.outcome.console));
    if !r.outcome.stderr_head.is_empty() {
        suite.set_system_err(xml_safe(&r.outcome.stderr_head.join("\n")));
    }
    suite
}

/// The JUnit report for all boards that ran.
pub fn report(reports: &[BoardReport]) -> Report {
    let mut report = Report::new("qemu-run");
    report.set_time(reports.iter().map(|r| r.outcome.wall).sum());
    report.add_test_suites(reports.iter().map(suite));
    report
}

/// The whole JUnit document for all boards that ran.
pub fn render(reports: &[BoardReport]) -> Result<String> {
    report(reports)
        .to_string()
        .context("cannot render the JUnit report")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::Outcome;
    use crate::tap::{self, Exit, Tap};

    fn report(board: &str, console: &str, exit: Exit) -> BoardReport {
        let mut tap = Tap::default();
        for (i, l) in console.lines().enumerate() {
            tap.feed(l, Duration::from_millis(250 * i as u64));
        }
        tap.finish();
        let verdict = tap::verdict(&tap, &exit, Some(0), &[]);
        BoardReport {
            board: board.into(),
            outcome: Outcome {
                tap,
                exit,
                stderr_head: vec![],
                wall: Duration::from_millis(1500),
                console: console.into(),
            },
            verdict,
        }
    }

    #[test]
    fn text_xml_cannot_carry_is_marked() {
        assert_eq!(xml_safe("a<b>&\"c'"), "a<b>&\"c'");
        assert_eq!(xml_safe("\u{1b}[31mred\tx\n"), "\u{FFFD}[31mred x\n");
        assert_eq!(xml_safe("a\r\nb\rc"), "a\nb\nc");
        assert_eq!(
            xml_safe("\u{7}\u{FFFE}\u{FFFF}é"),
            "\u{FFFD}\u{FFFD}\u{FFFD}é"
        );
    }

    #[test]
    fn names() {
        assert_eq!(split_name("mm::page_alloc"), (Some("mm"), "page_alloc"));
        assert_eq!(split_name("a::b::c"), (Some("a::b"), "c"));
        assert_eq!(split_name("plain"), (None, "plain"));
        assert_eq!(split_name("::x"), (None, "::x"));
    }

    #[test]
    fn suite_with_pass_fail_skip() {
        let console = "\
TAP version 14
1..3
ok 1 - mm::page_alloc
not ok 2 - mm::dma_align
  ---
  message: \"pages <in> use\"
  seen: \"2\"
  ...
ok 3 - arch::timer # SKIP no \"SMP\"
";
        let xml = render(&[report("qemu-virt", console, Exit::Status(1))]).unwrap();
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"qemu-run\" tests=\"3\" skipped=\"1\" failures=\"1\" errors=\"0\" time=\"1.500\">\n"), "{xml}");
        assert!(xml.contains("    <testsuite name=\"qemu-virt\" tests=\"3\" skipped=\"1\" errors=\"0\" failures=\"1\" time=\"1.500\">\n"), "{xml}");
        assert!(
            xml.contains(
                "        <testcase name=\"page_alloc\" classname=\"qemu-virt.mm\" time=\"0.500\"/>\n"
            ),
            "{xml}"
        );
        assert!(xml.contains(
            "        <testcase name=\"dma_align\" classname=\"qemu-virt.mm\" time=\"0.250\">\n            <failure message=\"pages &lt;in&gt; use\">message: &quot;pages &lt;in&gt; use&quot;\nseen: &quot;2&quot;</failure>\n        </testcase>\n"
        ), "{xml}");
        assert!(
            xml.contains("<skipped message=\"no &quot;SMP&quot;\"/>"),
            "{xml}"
        );
        assert!(!xml.contains("name=\"boot\""), "{xml}");
        assert!(xml.trim_end().ends_with("</testsuites>"), "{xml}");
    }

    #[test]
    fn board_level_failure_is_a_boot_testcase() {
        let console =
            "TAP version 14\n1..2\nok 1 - a::b\n[ 9.0] ERROR fault\nBail out! data abort <el1>\n";
        let pass = report(
            "qemu-virt",
            "TAP version 14\n1..1\nok 1 - x\n",
            Exit::Status(0),
        );
        let xml = render(&[pass, report("qemu-q35", console, Exit::Status(35))]).unwrap();
        assert!(
            xml.contains("tests=\"3\" skipped=\"0\" failures=\"1\""),
            "{xml}"
        );
        assert!(
            xml.contains("    <testsuite name=\"qemu-q35\" tests=\"2\" skipped=\"0\" errors=\"0\" failures=\"1\""),
            "{xml}"
        );
        assert!(xml.contains(
            "        <testcase name=\"boot\" classname=\"qemu-q35\" time=\"1.500\">\n            <failure message=\"bail out: data abort &lt;el1&gt;\">TAP version 14\n"
        ), "{xml}");
        assert!(
            xml.contains("        <testcase name=\"x\" classname=\"qemu-virt\""),
            "{xml}"
        );
    }

    /// What we write reads back as the report we built, odd text and all.
    #[test]
    fn the_document_reads_back() {
        let console = "\u{1b}[2Jboot\tlog <&>\u{FFFE}\r\nTAP version 14\n1..3\nok 1 - a::b & <c>\n\
                       not ok 2 - a::d\n  ---\n  message: \"x\u{7}y\"\n  ...\nok 3 - e # SKIP 'why'\n";
        let reports = [
            report("qemu-virt", console, Exit::Status(1)),
            report("qemu-q35", "no TAP", Exit::Timeout(Duration::from_secs(1))),
        ];
        let xml = render(&reports).unwrap();
        let back = quick_junit::Report::deserialize_from_str(&xml).unwrap();
        // The reader trims the console's last line end.
        let mut built = super::report(&reports);
        for s in &mut built.test_suites {
            let out = s.system_out.take().unwrap();
            s.set_system_out(out.trim_end());
        }
        assert_eq!(back, built);
        assert!(
            !xml.contains('\u{1b}') && !xml.contains('\u{FFFE}'),
            "{xml}"
        );
    }
}
