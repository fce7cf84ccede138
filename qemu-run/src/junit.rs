//! JUnit XML: one `<testsuite>` per board, one `<testcase>` per TAP test
//! point, plus a `boot` test case for failures of the run as a whole
//! (timeout, bail out, QEMU error, short plan), which have no test to blame.
use std::fmt::Write;
use std::time::Duration;

use crate::tap::{Directive, Status, TestPoint};
use crate::BoardReport;

/// Escapes text for XML 1.0 attributes and content. Characters XML 1.0
/// cannot carry at all (most C0 controls, e.g. a console's ANSI escapes)
/// become U+FFFD.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// `area::name` → (`area`, `name`); a name without `::` has no area.
pub fn split_name(description: &str) -> (Option<&str>, &str) {
    match description.rsplit_once("::") {
        Some((area, name)) if !area.is_empty() && !name.is_empty() => (Some(area), name),
        _ => (None, description),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64())
}

/// Name of the board-level test case.
pub const BOARD_CASE: &str = "boot";

/// The last lines of the console, as the body of a board-level failure.
fn console_tail(console: &str, lines: usize) -> String {
    let all: Vec<&str> = console.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn testcase(out: &mut String, board: &str, t: &TestPoint, time: Duration) {
    let (area, name) = split_name(&t.description);
    let name = if name.is_empty() { "(unnamed)" } else { name };
    let classname = match area {
        Some(a) => format!("{board}.{a}"),
        None => board.to_string(),
    };
    let _ = write!(
        out,
        "    <testcase classname=\"{}\" name=\"{}\" time=\"{}\"",
        escape(&classname),
        escape(name),
        secs(time)
    );
    match t.status() {
        Status::Passed => out.push_str("/>\n"),
        Status::Failed => {
            let message = t
                .diagnostic
                .as_deref()
                .and_then(|d| d.lines().find_map(|l| l.strip_prefix("message:")))
                .map(|m| m.trim().trim_matches('"').to_string())
                .unwrap_or_else(|| "not ok".into());
            let _ = write!(
                out,
                ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                escape(&message),
                escape(t.diagnostic.as_deref().unwrap_or(""))
            );
        }
        Status::Skipped | Status::Todo => {
            let message = match &t.directive {
                Some(Directive::Skip(r)) => r.clone(),
                Some(Directive::Todo(r)) => format!("TODO {r}").trim().to_string(),
                None => String::new(),
            };
            let _ = write!(
                out,
                ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                escape(&message)
            );
        }
    }
}

/// The whole JUnit document for all boards that ran.
pub fn render(reports: &[BoardReport]) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let total_time: Duration = reports.iter().map(|r| r.outcome.wall).sum();
    let mut suites = String::new();
    let (mut tests, mut failures, mut skipped) = (0, 0, 0);
    for r in reports {
        let tap = &r.outcome.tap;
        let c = tap.counts();
        let board_case = !r.verdict.pass && r.verdict.board_level;
        let n = tap.tests.len() + usize::from(board_case);
        let f = c.failed + usize::from(board_case);
        tests += n;
        failures += f;
        skipped += c.skipped;
        let _ = writeln!(
            suites,
            "  <testsuite name=\"{}\" tests=\"{n}\" failures=\"{f}\" errors=\"0\" skipped=\"{}\" time=\"{}\">",
            escape(&r.board),
            c.skipped,
            secs(r.outcome.wall)
        );
        // Each test's time is from the previous TAP line that ended a test
        // (the first: from QEMU's start, so it includes the boot).
        let mut prev = Duration::ZERO;
        for t in &tap.tests {
            testcase(&mut suites, &r.board, t, t.at.saturating_sub(prev));
            prev = prev.max(t.at);
        }
        if board_case {
            let reason = r.verdict.reason.as_deref().unwrap_or("failed");
            let _ = write!(
                suites,
                "    <testcase classname=\"{}\" name=\"{BOARD_CASE}\" time=\"{}\">\n      \
                 <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                escape(&r.board),
                secs(r.outcome.wall),
                escape(reason),
                escape(&console_tail(&r.outcome.console, 40))
            );
        }
        let _ = writeln!(
            suites,
            "    <system-out>{}</system-out>",
            escape(&r.outcome.console)
        );
        if !r.outcome.stderr_head.is_empty() {
            let _ = writeln!(
                suites,
                "    <system-err>{}</system-err>",
                escape(&r.outcome.stderr_head.join("\n"))
            );
        }
        suites.push_str("  </testsuite>\n");
    }
    let _ = writeln!(
        out,
        "<testsuites name=\"qemu-run\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{}\">",
        secs(total_time)
    );
    out.push_str(&suites);
    out.push_str("</testsuites>\n");
    out
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
        let verdict = tap::verdict(&tap, &exit, 0, &[]);
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
    fn escaping() {
        assert_eq!(escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("\u{1b}[31mred\tx\n"), "\u{FFFD}[31mred\tx\n");
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
        let xml = render(&[report("qemu-virt", console, Exit::Status(1))]);
        assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"qemu-run\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\" time=\"1.500\">\n"));
        assert!(xml.contains("  <testsuite name=\"qemu-virt\" tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\" time=\"1.500\">\n"));
        assert!(xml.contains(
            "    <testcase classname=\"qemu-virt.mm\" name=\"page_alloc\" time=\"0.500\"/>\n"
        ));
        assert!(xml.contains(
            "    <testcase classname=\"qemu-virt.mm\" name=\"dma_align\" time=\"0.250\">\n      <failure message=\"pages &lt;in&gt; use\">message: &quot;pages &lt;in&gt; use&quot;\nseen: &quot;2&quot;</failure>\n    </testcase>\n"
        ));
        assert!(xml.contains("<skipped message=\"no &quot;SMP&quot;\"/>"));
        assert!(!xml.contains("name=\"boot\""));
        assert!(xml.trim_end().ends_with("</testsuites>"));
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
        let xml = render(&[pass, report("qemu-q35", console, Exit::Status(35))]);
        assert!(xml.contains("tests=\"3\" failures=\"1\""));
        assert!(xml.contains("  <testsuite name=\"qemu-q35\" tests=\"2\" failures=\"1\""));
        assert!(xml.contains(
            "    <testcase classname=\"qemu-q35\" name=\"boot\" time=\"1.500\">\n      <failure message=\"bail out: data abort &lt;el1&gt;\">TAP version 14\n"
        ));
        assert!(xml.contains("    <testcase classname=\"qemu-virt\" name=\"x\""));
    }
}
