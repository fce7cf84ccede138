//! `qemu-run watch` gives `qemu-run run`'s verdict for the same console:
//! a real QEMU run's console is fed to `watch` live through a pty (read as
//! a serial device, raw, as on a board) and afterwards as a saved log, for
//! a pass, a crash, a short plan and a timeout.
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tests::{qemu_lock, qemu_run_bin, scratch_dir, summary_rows, workspace_root, Run};

const BOARD: &str = "qemu-virt";

fn spawn(args: &[&str], stdin: Stdio) -> Child {
    Command::new(qemu_run_bin())
        .args(args)
        .current_dir(workspace_root())
        .env("IOMMU_WORKSPACE", workspace_root())
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start qemu-run")
}

fn finish(child: Child, start: Instant) -> Run {
    let out = child.wait_with_output().expect("wait for qemu-run");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// QEMU's pid: the child of `qemu-run run` (pid `parent`).
fn qemu_pid(parent: u32) -> Option<u32> {
    let path = format!("/proc/{parent}/task/{parent}/children");
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// What a real QEMU run printed and how both judged it.
struct Judged {
    run: Run,
    live: Run,
    log: Run,
}

/// Boots qemu-virt with `run_args`; its stdout (the console, then the
/// summary) is copied into a pty whose other end `watch --device` reads,
/// and saved; then `watch --file` judges the saved log (or `--file -`
/// with standard input held open, for a timeout). `kill_after` sends QEMU
/// SIGTERM once that many test points went by (a board that lost power);
/// `hang_up` closes the pty when the run is over.
fn judge(
    run_args: &[&str],
    watch_args: &[&str],
    kill_after: Option<usize>,
    hang_up: bool,
    log_open: bool,
) -> Judged {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let device = format!("/proc/{}/fd/{}", std::process::id(), pty.slave.as_raw_fd());
    // Neither end goes to the children: watch opens the slave by path, and
    // a master inherited by them would keep the line from hanging up.
    for fd in [&pty.master, &pty.slave] {
        use nix::fcntl::{fcntl, FcntlArg, FdFlag};
        fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).expect("FD_CLOEXEC");
    }
    let mut master = File::from(pty.master);

    let start = Instant::now();
    let mut watch_live: Vec<&str> = vec![
        "watch", "--board", BOARD, "--device", &device, "--grace", "1",
    ];
    watch_live.extend(watch_args);
    let live = spawn(&watch_live, Stdio::null());
    // Give watch the moment it needs to put the line in raw mode.
    thread::sleep(Duration::from_millis(300));

    let mut args = vec!["run", "--board", BOARD];
    args.extend(run_args);
    let mut run = spawn(&args, Stdio::null());
    let mut out = run.stdout.take().unwrap();
    let pid = run.id();
    let mut saved = Vec::new();
    let mut buf = [0u8; 4096];
    let mut killed = false;
    loop {
        let n = out.read(&mut buf).unwrap_or(0);
        if n == 0 {
            break;
        }
        saved.extend_from_slice(&buf[..n]);
        let _ = master.write_all(&buf[..n]);
        let points = String::from_utf8_lossy(&saved)
            .lines()
            .filter(|l| l.starts_with("ok ") || l.starts_with("not ok "))
            .count();
        if !killed && kill_after.is_some_and(|k| points >= k) {
            if let Some(q) = qemu_pid(pid) {
                let _ = Command::new("kill")
                    .args(["-TERM", &q.to_string()])
                    .status();
                killed = true;
            }
        }
    }
    let mut run = finish(run, start);
    run.stdout = String::from_utf8_lossy(&saved).into_owned();
    // A board's UART stays open when the run ends (the watch ends by the
    // TAP stream or its timeout), unless `hang_up` (a USB UART unplugged).
    if hang_up {
        drop(master);
        let live = finish(live, start);
        return judged_with_log(run, live, &saved, watch_args, log_open);
    }
    let live = finish(live, start);
    drop(master);
    judged_with_log(run, live, &saved, watch_args, log_open)
}

/// The console part of `run`'s stdout: what comes before its summary.
fn console_of(stdout: &[u8]) -> Vec<u8> {
    // A newline in front, so that a summary on the first line is found too.
    let text = format!("\n{}", String::from_utf8_lossy(stdout));
    let end = text
        .rmatch_indices("\nboard ")
        .map(|(i, _)| i + 1)
        .find(|&i| {
            text[i..]
                .lines()
                .next()
                .is_some_and(|l| l.contains(" result "))
        })
        .unwrap_or(text.len());
    text.as_bytes()[1..end.max(1)].to_vec()
}

/// `watch` of the saved console (`run`'s stdout up to its summary)
/// beside the live verdicts.
fn judged_with_log(
    run: Run,
    live: Run,
    saved: &[u8],
    watch_args: &[&str],
    log_open: bool,
) -> Judged {
    let saved = &console_of(saved)[..];
    let log_path = scratch_dir().join(format!("watch-{}.log", std::process::id()));
    std::fs::write(&log_path, saved).unwrap();
    let log_str = log_path.to_str().unwrap();
    let log = if log_open {
        let mut a = vec!["watch", "--board", BOARD, "--file", "-", "--grace", "1"];
        a.extend(watch_args);
        let mut child = spawn(&a, Stdio::piped());
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(saved).unwrap();
        let r = finish(child, Instant::now());
        drop(stdin);
        r
    } else {
        let mut a = vec!["watch", "--board", BOARD, "--file", log_str];
        a.extend(watch_args);
        finish(spawn(&a, Stdio::null()), Instant::now())
    };
    let _ = std::fs::remove_file(&log_path);
    Judged { run, live, log }
}

/// The verdict line's result: `PASS`, or `FAIL: reason` without the
/// counts; and the summary row's counts.
fn verdict(r: &Run) -> (String, Vec<String>) {
    let prefix = format!("qemu-run: {BOARD}: ");
    let line = r
        .stderr
        .lines()
        .rev()
        .find_map(|l| {
            l.strip_prefix(&prefix)
                .filter(|l| l.starts_with("PASS") || l.starts_with("FAIL"))
        })
        .unwrap_or_else(|| panic!("no verdict line:\n{}", r.text()));
    let result = line.rsplit_once(" (").map_or(line, |(a, _)| a).to_string();
    let row = summary_rows(&r.stdout)
        .into_iter()
        .find(|l| l.starts_with(BOARD))
        .unwrap_or_else(|| panic!("no summary row:\n{}", r.text()));
    let counts = row
        .split_whitespace()
        .skip(1)
        .take(4)
        .map(String::from)
        .collect();
    (result, counts)
}

fn show(j: &Judged) -> String {
    format!(
        "=== run\n{}\n=== watch (pty)\n{}\n=== watch (log)\n{}",
        j.run.text(),
        j.live.text(),
        j.log.text()
    )
}

#[test]
fn watch_agrees_with_run_on_a_pass_and_a_crash() {
    let _qemu = qemu_lock();
    let j = judge(
        &["--timeout", "120"],
        &["--timeout", "120"],
        None,
        false,
        false,
    );
    let all = show(&j);
    assert_eq!(j.run.code, Some(0), "{all}");
    let want = verdict(&j.run);
    assert_eq!(want.0, "PASS", "{all}");
    assert_eq!(verdict(&j.live), want, "{all}");
    assert_eq!(verdict(&j.log), want, "{all}");
    assert_eq!((j.live.code, j.log.code), (Some(0), Some(0)), "{all}");

    let j = judge(
        &["--timeout", "60", "--append", "crash=unexpected"],
        &["--timeout", "60"],
        None,
        false,
        false,
    );
    let all = show(&j);
    let want = verdict(&j.run);
    assert!(want.0.starts_with("FAIL: bail out: crash:"), "{all}");
    assert_eq!(verdict(&j.live), want, "{all}");
    assert_eq!(verdict(&j.log), want, "{all}");
    assert_eq!(
        (j.run.code, j.live.code, j.log.code),
        (Some(1), Some(1), Some(1)),
        "{all}"
    );
    assert!(
        j.live.stdout.contains("*** CRASH on cpu 0"),
        "the crash report is read: {all}"
    );
}

#[test]
fn watch_agrees_with_run_on_a_short_plan_and_a_timeout() {
    let _qemu = qemu_lock();
    // QEMU ended (SIGTERM) after 5 tests, and the line hung up after it:
    // run sees QEMU exit, watch the plan cut short (live and in the log).
    let j = judge(
        &["--timeout", "120"],
        &["--timeout", "60"],
        Some(5),
        true,
        false,
    );
    let all = show(&j);
    let (r, counts) = verdict(&j.run);
    assert!(r.starts_with("FAIL: short plan: ran "), "{all}");
    // The same up to the parenthesis: how the console ended.
    let short = r.split(" tests (").next().unwrap().to_string();
    for w in [&j.live, &j.log] {
        let (v, c) = verdict(w);
        assert_eq!(v, format!("{short} tests (the console ended)"), "{all}");
        assert_eq!(c, counts, "{all}");
        assert_eq!(w.code, Some(1), "{all}");
    }

    // A guest that never runs (QEMU started stopped, `-S`): both give up
    // after 3 s; so does the watch of the (empty) log held open on
    // standard input.
    let j = judge(
        &["--timeout", "3", "--", "-S"],
        &["--timeout", "3"],
        None,
        false,
        true,
    );
    let all = show(&j);
    let (want, _) = verdict(&j.run);
    assert_eq!(
        want,
        "FAIL: timeout after 3s (QEMU killed); last console line: none (kernel printed nothing)",
        "{all}"
    );
    for r in [&j.live, &j.log] {
        let (v, _) = verdict(r);
        assert_eq!(
            v,
            want.replace("QEMU killed", "stopped watching the console"),
            "{all}"
        );
        assert!(
            r.stderr
                .contains("stopped watching after 3s; nothing arrived"),
            "{all}"
        );
    }
    for r in [&j.run, &j.live, &j.log] {
        assert_eq!(r.code, Some(1), "{all}");
    }
}
