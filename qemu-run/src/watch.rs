//! `qemu-run watch`: judges a console that no QEMU of ours produces (a
//! real board's UART, a saved log, a pipe) with `run`'s rules: the same
//! [`Judge`] reads the lines, the same [`crate::tap::verdict`] decides.
//! There is no exit status: the TAP stream alone gives the verdict, and the
//! watch stops at end of input, a grace after the bail out or the last
//! planned test, or the timeout.
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::termios::{self, BaudRate, ControlFlags, SetArg, SpecialCharacterIndices};

use crate::run::{reader, Event, Judge, Options, Outcome, StreamEnd};
use crate::tap::{ConsoleEnd, Exit};

/// Where the console comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A serial device (or a pty), put in raw mode at this baud rate.
    Serial {
        device: PathBuf,
        baud: u32,
    },
    /// A file read to its end (a saved log, a FIFO).
    File(PathBuf),
    Stdin,
}

impl Source {
    pub fn describe(&self) -> String {
        match self {
            Source::Serial { device, baud } => format!("{} at {baud} baud", device.display()),
            Source::File(p) => p.display().to_string(),
            Source::Stdin => "standard input".into(),
        }
    }

    /// Opens the source; a serial device is configured first.
    pub fn open(&self) -> Result<Box<dyn Read + Send>> {
        Ok(match self {
            Source::Serial { device, baud } => Box::new(open_serial(device, *baud)?),
            Source::File(p) => Box::new(File::open(p).with_context(|| p.display().to_string())?),
            Source::Stdin => Box::new(std::io::stdin()),
        })
    }
}

/// The termios speed for a baud rate: the rates boards' UARTs use.
pub fn baud_rate(baud: u32) -> Result<BaudRate> {
    Ok(match baud {
        9600 => BaudRate::B9600,
        19200 => BaudRate::B19200,
        38400 => BaudRate::B38400,
        57600 => BaudRate::B57600,
        115200 => BaudRate::B115200,
        230400 => BaudRate::B230400,
        460800 => BaudRate::B460800,
        921600 => BaudRate::B921600,
        1500000 => BaudRate::B1500000,
        3000000 => BaudRate::B3000000,
        _ => bail!(
            "baud rate {baud} is not one of 9600, 19200, 38400, 57600, 115200, 230400, \
             460800, 921600, 1500000, 3000000"
        ),
    })
}

/// Opens a serial device for reading: raw (no echo, no line editing, no
/// CR/LF translation: the bytes as the UART sent them), 8N1 at `baud`,
/// modem lines ignored (a USB UART often has no carrier), reads blocking.
pub fn open_serial(device: &Path, baud: u32) -> Result<File> {
    let speed = baud_rate(baud)?;
    let at = || device.display().to_string();
    // O_NONBLOCK so that opening does not wait for a carrier; cleared below.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags((OFlag::O_NOCTTY | OFlag::O_NONBLOCK).bits())
        .open(device)
        .with_context(at)?;
    let mut t =
        termios::tcgetattr(&file).with_context(|| format!("{}: not a terminal device", at()))?;
    termios::cfmakeraw(&mut t);
    termios::cfsetspeed(&mut t, speed).with_context(at)?;
    t.control_flags |= ControlFlags::CLOCAL | ControlFlags::CREAD;
    t.control_flags &= !(ControlFlags::CRTSCTS | ControlFlags::CSTOPB);
    // A read returns as soon as one byte is there, and waits for one.
    t.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    t.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    termios::tcsetattr(&file, SetArg::TCSANOW, &t).with_context(at)?;
    fcntl(&file, FcntlArg::F_SETFL(OFlag::empty())).with_context(at)?;
    Ok(file)
}

/// Judges the console read from `input`. Never hangs: the watch ends at
/// `opts.timeout` even when the input neither ends nor speaks (the reader
/// thread blocked in a read is left behind; the process ends soon after).
pub fn watch(input: Box<dyn Read + Send>, opts: &Options) -> Outcome {
    let start = Instant::now();
    let mut judge = Judge::new(start, opts.echo, opts.bail_grace);
    let (tx, rx) = mpsc::channel();
    reader(input, tx, true);
    let deadline = start + opts.timeout;
    let exit = loop {
        let now = Instant::now();
        if now >= deadline {
            break Exit::WatchTimeout(opts.timeout);
        }
        if let Some(end) = judge.over(now) {
            break Exit::Watched(match end {
                StreamEnd::BailOut => ConsoleEnd::AfterBailOut,
                StreamEnd::PlanComplete => ConsoleEnd::AfterPlan,
            });
        }
        let wait = (deadline - now).min(Duration::from_millis(50));
        match rx.recv_timeout(wait) {
            Ok(Event::Out(line)) => judge.line(&line),
            Ok(Event::Err(_)) => {}
            Ok(Event::Closed) | Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Exit::Watched(ConsoleEnd::EndOfInput)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    };
    let wall = start.elapsed();
    let (tap, console) = judge.finish();
    Outcome {
        tap,
        exit,
        stderr_head: Vec::new(),
        wall,
        console,
    }
}

/// The line printed the moment the timeout strikes: what was waited for.
pub fn timeout_line(name: &str, outcome: &Outcome) -> Option<String> {
    let Exit::WatchTimeout(d) = outcome.exit else {
        return None;
    };
    let tap = &outcome.tap;
    let waiting = match (&tap.plan, tap.printed) {
        (_, false) => {
            "nothing arrived on the console (wrong device or baud rate? board off?)".to_string()
        }
        (None, true) => "no TAP plan yet".to_string(),
        (Some(p), true) => format!("{} of {} tests reported", tap.tests.len(), p.count),
    };
    Some(format!(
        "{name}: timeout: stopped watching after {}s; {waiting}",
        d.as_secs()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tap::verdict;
    use std::io::Write;

    fn opts(timeout_ms: u64) -> Options {
        Options {
            timeout: Duration::from_millis(timeout_ms),
            bail_grace: Duration::from_millis(200),
            echo: false,
        }
    }

    const PASS: &str = "boot\nTAP version 14\n1..2\nok 1 - a::b\nok 2 - a::c # SKIP no ITS\n";

    /// `run`'s verdict for `console` printed by a process exiting `status`.
    fn run_verdict(console: &str, status: i32) -> crate::tap::Verdict {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("console.log");
        std::fs::write(&log, console).unwrap();
        let script = format!("cat '{}'; exit {status}", log.display());
        let o = crate::run::run(
            Path::new("/bin/sh"),
            &["-c".into(), script.into()],
            &opts(10_000),
        );
        verdict(&o.tap, &o.exit, None, &o.stderr_head)
    }

    fn watch_text(console: &str, timeout_ms: u64) -> Outcome {
        watch(
            Box::new(std::io::Cursor::new(console.to_string())),
            &opts(timeout_ms),
        )
    }

    fn v(o: &Outcome) -> crate::tap::Verdict {
        verdict(&o.tap, &o.exit, None, &o.stderr_head)
    }

    #[test]
    fn a_watched_log_gets_runs_verdict() {
        // A log ends before any grace runs out.
        let o = watch_text(PASS, 5_000);
        assert_eq!(o.exit, Exit::Watched(ConsoleEnd::EndOfInput));
        assert_eq!(v(&o), run_verdict(PASS, 0));
        assert!(v(&o).pass);

        let crash = "TAP version 14\nBail out! crash: data abort on cpu 0\n*** CRASH on cpu 0\n";
        let o = watch_text(crash, 5_000);
        assert_eq!(v(&o), run_verdict(crash, 1));
        assert!(o.console.contains("*** CRASH"), "the crash report is kept");

        let short = "TAP version 14\n1..3\nok 1 - a::b\n";
        let o = watch_text(short, 5_000);
        assert_eq!(o.exit, Exit::Watched(ConsoleEnd::EndOfInput));
        let (w, r) = (v(&o), run_verdict(short, 0));
        assert!(!w.pass && !r.pass);
        assert_eq!(
            w.reason.as_deref(),
            Some("short plan: ran 1 of 3 tests (the console ended)")
        );
        assert!(r
            .reason
            .unwrap()
            .starts_with("short plan: ran 1 of 3 tests"));

        let failed = "TAP version 14\n1..1\nnot ok 1 - a::b\n";
        assert_eq!(v(&watch_text(failed, 5_000)), run_verdict(failed, 1));
    }

    /// A pty's writing end, and its other end opened as a serial device
    /// (by path, as `watch --device` does).
    fn raw_pty(baud: u32) -> (File, File) {
        use std::os::fd::AsRawFd;
        let pty = nix::pty::openpty(None, None).unwrap();
        let device = PathBuf::from(format!("/proc/self/fd/{}", pty.slave.as_raw_fd()));
        let input = open_serial(&device, baud).unwrap();
        (File::from(pty.master), input)
    }

    #[test]
    fn a_silent_console_times_out_clearly() {
        let (mut master, input) = raw_pty(115200);
        master
            .write_all(b"TAP version 14\r\n1..2\r\nok 1 - a::b\r\n")
            .unwrap();
        let t = Instant::now();
        let o = watch(Box::new(input), &opts(1_000));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(o.exit, Exit::WatchTimeout(Duration::from_millis(1_000)));
        assert_eq!(
            v(&o).reason.as_deref(),
            Some("timeout after 1s (stopped watching the console); last console line: ok 1 - a::b")
        );
        assert_eq!(
            timeout_line("b", &o).as_deref(),
            Some("b: timeout: stopped watching after 1s; 1 of 2 tests reported")
        );
        drop(master);
    }

    #[test]
    fn a_pty_in_raw_mode_passes_bytes_as_sent() {
        let (mut master, input) = raw_pty(921600);
        // CRLF as a UART sends it; raw mode keeps the CR (the judge drops
        // it), and a cooked tty would have turned it into a second line.
        for l in PASS.lines() {
            master.write_all(format!("{l}\r\n").as_bytes()).unwrap();
        }
        let o = watch(Box::new(input), &opts(5_000));
        assert_eq!(o.exit, Exit::Watched(ConsoleEnd::AfterPlan));
        assert_eq!(v(&o), run_verdict(PASS, 0));
        assert_eq!(o.console, PASS);
        // A board that crashed keeps its UART open: the watch ends a grace
        // after the bail out, with the crash report that followed it.
        let (mut master, input) = raw_pty(115200);
        master
            .write_all(b"TAP version 14\r\n1..2\r\nBail out! crash: SError\r\nELR 0x1\r\n")
            .unwrap();
        let t = Instant::now();
        let o = watch(Box::new(input), &opts(5_000));
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(o.exit, Exit::Watched(ConsoleEnd::AfterBailOut));
        assert!(o.console.ends_with("ELR 0x1\n"), "{}", o.console);
        assert_eq!(v(&o).reason.as_deref(), Some("bail out: crash: SError"));
        drop(master);
        // The writer hanging up ends the watch (EIO on the slave).
        let pty = nix::pty::openpty(None, None).unwrap();
        drop(pty.master);
        let o = watch(Box::new(File::from(pty.slave)), &opts(5_000));
        assert_eq!(o.exit, Exit::Watched(ConsoleEnd::EndOfInput));
        assert_eq!(
            v(&o).reason.as_deref(),
            Some("kernel printed nothing (the console ended)")
        );
    }

    #[test]
    fn bad_devices_and_rates_are_refused() {
        let e = open_serial(Path::new("/nonexistent/ttyUSB9"), 115200).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("/nonexistent/ttyUSB9: No such file"),
            "{e:#}"
        );
        let e = open_serial(Path::new("/dev/null"), 115200).unwrap_err();
        assert!(
            format!("{e:#}").contains("/dev/null: not a terminal device"),
            "{e:#}"
        );
        let e = baud_rate(12345).unwrap_err();
        assert!(
            e.to_string().starts_with("baud rate 12345 is not one of"),
            "{e}"
        );
    }
}
