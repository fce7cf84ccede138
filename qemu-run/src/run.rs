//! Building the QEMU command line from a board file, and running QEMU:
//! spawn, stream the console live, feed the TAP parser, enforce the timeout.
use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::board::Board;
use crate::tap::{Exit, Tap};
use anyhow::{bail, Context, Result};

/// What the user asked for on top of the board file.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub filter: Option<String>,
    pub exclude: Option<String>,
    pub append: Option<String>,
    /// Extra QEMU arguments, appended last.
    pub extra: Vec<String>,
    /// The QEMU has the patched devices: add the board's `patched_args`
    /// and `expect_patched`.
    pub patched_devices: bool,
}

/// A QEMU command line ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invocation {
    pub args: Vec<OsString>,
    /// The kernel command line passed with `-append`.
    pub cmdline: String,
}

/// Filter patterns reach the kernel as one word of its command line.
pub fn check_pattern(flag: &str, pattern: &str) -> Result<()> {
    if pattern.is_empty() {
        bail!("--{flag} must not be empty");
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!(
            "--{flag} {pattern:?}: patterns must not contain spaces (they are one word of the \
             kernel command line); give several as a comma-separated list"
        );
    }
    Ok(())
}

/// The value of the last `-opt V` / `--opt V` in `args`.
fn last_option<'a>(args: &'a [String], opt: &str) -> Option<&'a str> {
    let mut found = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let name = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
        if name == Some(opt) {
            found = it.next().map(String::as_str);
        }
    }
    found
}

/// The memory size in a `-m` value: `2G` or `size=2G,slots=…`.
pub fn mem_of(value: &str) -> Option<String> {
    value
        .split(',')
        .find_map(|p| match p.split_once('=') {
            Some(("size", v)) => Some(v),
            Some(_) => None,
            None => Some(p),
        })
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// The CPU count in a `-smp` value: `4`, `cpus=4,…`, or the product of the
/// topology (`sockets=2,cores=2`) when no count is given.
pub fn cpus_of(value: &str) -> Option<u32> {
    let mut product: Option<u32> = None;
    for p in value.split(',') {
        match p.split_once('=') {
            None | Some(("cpus", _)) => {
                return p.rsplit('=').next()?.parse().ok();
            }
            Some(("sockets" | "dies" | "clusters" | "modules" | "cores" | "threads", v)) => {
                product = Some(product.unwrap_or(1).checked_mul(v.parse().ok()?)?);
            }
            Some(_) => {}
        }
    }
    product
}

/// The QEMU arguments for `board` booting `kernel`: only the board file and
/// the request go in, in this order: machine, `-smp`, `-m`, io, test args,
/// `-kernel`, `-append`, extra arguments.
pub fn invocation(board: &Board, kernel: &Path, req: &Request) -> Result<Invocation> {
    if let Some(f) = &req.filter {
        check_pattern("filter", f)?;
    }
    if let Some(x) = &req.exclude {
        check_pattern("exclude", x)?;
    }
    for a in &req.extra {
        if matches!(a.as_str(), "-kernel" | "--kernel" | "-append" | "--append") {
            bail!("{a} in the extra QEMU arguments: use qemu-run's --kernel / --append instead");
        }
    }
    // The user's -m / -smp replace the board's, and the kernel is told what
    // QEMU really got (its memory-map test compares against it).
    let user_mem = last_option(&req.extra, "m");
    let user_smp = last_option(&req.extra, "smp");
    let mem = match user_mem {
        Some(v) => mem_of(v).with_context(|| format!("cannot read the size in -m {v}"))?,
        None => board.memory.clone(),
    };
    let cpus = match user_smp {
        Some(v) => cpus_of(v).with_context(|| format!("cannot read the CPU count in -smp {v}"))?,
        None => board.cpus,
    };

    let mut words = board.kernel_args.clone();
    if let Some(f) = &req.filter {
        words.push(format!("filter={f}"));
    }
    if let Some(x) = &req.exclude {
        words.push(format!("exclude={x}"));
    }
    words.push(format!("qemu.mem={mem}"));
    words.push(format!("qemu.cpus={cpus}"));
    // What the board's QEMU command line creates, for the discovery tests.
    let mut expect = board.expect.clone();
    if req.patched_devices {
        expect.extend(board.expect_patched.clone());
    }
    words.extend(expect.iter().map(|(k, v)| format!("expect.{k}={v}")));
    if let Some(a) = req
        .append
        .as_deref()
        .map(str::trim)
        .filter(|a| !a.is_empty())
    {
        words.push(a.to_string());
    }
    let cmdline = words.join(" ");

    let mut args: Vec<OsString> = board.machine.iter().map(OsString::from).collect();
    if user_smp.is_none() {
        args.extend(["-smp".into(), board.cpus.to_string().into()]);
    }
    if user_mem.is_none() {
        args.extend(["-m".into(), OsString::from(&board.memory)]);
    }
    args.extend(board.io.iter().map(OsString::from));
    args.extend(board.test_args.iter().map(OsString::from));
    if req.patched_devices {
        args.extend(board.patched_args.iter().map(OsString::from));
    }
    if board.boots_uboot() {
        // Firmware (the board's -bios) boots from a disk holding the
        // Image and a script with the command line (`uboot::write_disk`).
        let disk = crate::uboot::disk_path(kernel, &board.name);
        let mut drive = OsString::from("if=none,format=raw,id=bootdisk,file=");
        drive.push(disk.as_os_str());
        args.extend(["-drive".into(), drive]);
        args.extend(["-device".into(), "virtio-blk-device,drive=bootdisk".into()]);
        if !board.uboot_env.is_empty() {
            let mut bank = OsString::from("if=pflash,unit=1,format=raw,file=");
            bank.push(crate::uboot::env_path(kernel, &board.name).as_os_str());
            args.extend(["-drive".into(), bank]);
        }
    } else {
        args.push("-kernel".into());
        args.push(kernel.as_os_str().to_owned());
        args.push("-append".into());
        args.push(cmdline.clone().into());
    }
    args.extend(req.extra.iter().map(OsString::from));
    Ok(Invocation { args, cmdline })
}

/// One argument quoted for a POSIX shell, for the command line we print.
/// Only what is known to be plain stays bare; `shell_words::quote` would
/// quote every `key=value` and leave `{`, `!` bare.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-+=/.,:@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

pub fn shell_line(program: &Path, args: &[OsString]) -> String {
    std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// How to run QEMU.
#[derive(Debug, Clone)]
pub struct Options {
    pub timeout: Duration,
    /// How long QEMU may keep running after the kernel bailed out or
    /// completed its plan.
    pub bail_grace: Duration,
    /// Echo the console to our stdout and QEMU's stderr to our stderr.
    pub echo: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout: Duration::from_secs(60),
            bail_grace: Duration::from_secs(5),
            echo: true,
        }
    }
}

/// What one QEMU run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub tap: Tap,
    pub exit: Exit,
    /// The first lines QEMU printed on stderr (its complaints, if any).
    pub stderr_head: Vec<String>,
    /// Wall time from spawning QEMU to its end.
    pub wall: Duration,
    /// The console transcript (capped), for JUnit's system-out.
    pub console: String,
}

const STDERR_HEAD_LINES: usize = 10;
const CONSOLE_CAP: usize = 4 << 20;
/// After we kill QEMU, how long the pipe readers get to see end-of-file.
/// Only a grandchild holding the pipes could keep them open longer.
const DRAIN: Duration = Duration::from_secs(2);

pub(crate) enum Event {
    Out(String),
    Err(String),
    Closed,
}

/// Sends each line of `pipe` (lossy UTF-8, line ending removed) until EOF
/// or a read error (a pty whose writer hung up reads as EIO).
pub(crate) fn reader(pipe: impl Read + Send + 'static, tx: mpsc::Sender<Event>, out: bool) {
    thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if buf.ends_with(b"\n") {
                        buf.pop();
                    }
                    if buf.ends_with(b"\r") {
                        buf.pop();
                    }
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    let ev = if out {
                        Event::Out(line)
                    } else {
                        Event::Err(line)
                    };
                    if tx.send(ev).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Event::Closed);
    });
}

/// Why the TAP stream says the run is over before the console closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    BailOut,
    PlanComplete,
}

/// The judging half of a run, the same for QEMU's console and a real
/// board's: each console line is echoed, kept (capped) for JUnit and fed
/// to the TAP parser; after a bail out or a complete plan the run is over
/// once `grace` has passed (for a crash report, or the exit, to follow).
pub(crate) struct Judge {
    pub start: Instant,
    pub tap: Tap,
    pub console: String,
    echo: bool,
    grace: Duration,
    ending: Option<(Instant, StreamEnd)>,
}

impl Judge {
    pub fn new(start: Instant, echo: bool, grace: Duration) -> Judge {
        Judge {
            start,
            tap: Tap::default(),
            console: String::new(),
            echo,
            grace,
            ending: None,
        }
    }

    pub fn line(&mut self, line: &str) {
        if self.echo {
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
        if self.console.len() < CONSOLE_CAP {
            self.console.push_str(line);
            self.console.push('\n');
        }
        self.tap.feed(line, self.start.elapsed());
        if self.ending.is_none() {
            let why = if self.tap.bail_out.is_some() {
                Some(StreamEnd::BailOut)
            } else if self.tap.plan_complete() {
                Some(StreamEnd::PlanComplete)
            } else {
                None
            };
            self.ending = why.map(|w| (Instant::now() + self.grace, w));
        }
    }

    /// The stream's end, once its grace has passed at `now`.
    pub fn over(&self, now: Instant) -> Option<StreamEnd> {
        self.ending.filter(|(at, _)| now >= *at).map(|(_, why)| why)
    }

    pub fn finish(mut self) -> (Tap, String) {
        self.tap.finish();
        (self.tap, self.console)
    }
}

/// Runs `program args`, streaming and parsing its stdout as the console.
/// Never hangs: QEMU is killed at the timeout, or `bail_grace` after a
/// `Bail out!` or the last planned test if it has not exited by then.
pub fn run(program: &Path, args: &[OsString], opts: &Options) -> Outcome {
    let start = Instant::now();
    let mut judge = Judge::new(start, opts.echo, opts.bail_grace);
    let mut stderr_head = Vec::new();
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            let (tap, console) = judge.finish();
            return Outcome {
                tap,
                exit: Exit::SpawnError(format!("{}: {e}", program.display())),
                stderr_head,
                wall: start.elapsed(),
                console,
            };
        }
    };
    let (tx, rx) = mpsc::channel();
    if let Some(out) = child.stdout.take() {
        reader(out, tx.clone(), true);
    }
    if let Some(err) = child.stderr.take() {
        reader(err, tx.clone(), false);
    }
    drop(tx);

    let deadline = start + opts.timeout;
    let mut open = 2;
    // Why and when we killed QEMU, if we did.
    let mut killed: Option<(Exit, Instant)> = None;
    let mut status = None;
    loop {
        let now = Instant::now();
        if killed.is_none() {
            let why = if now >= deadline {
                Some(Exit::Timeout(opts.timeout))
            } else {
                judge.over(now).map(|end| match end {
                    StreamEnd::BailOut => Exit::KilledAfterBailOut,
                    StreamEnd::PlanComplete => Exit::KilledAfterPlan,
                })
            };
            if let Some(why) = why {
                // Kills the child only (SIGKILL); QEMU has nothing to save.
                let _ = child.kill();
                killed = Some((why, now));
            }
        }
        if status.is_none() {
            status = child.try_wait().ok().flatten();
        }
        if status.is_some() && open == 0 {
            break;
        }
        if let Some((_, at)) = &killed {
            if now.duration_since(*at) >= DRAIN {
                break;
            }
        }
        if open == 0 {
            // Pipes closed but QEMU still running: poll until it exits.
            thread::sleep(Duration::from_millis(20));
            continue;
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Event::Out(line)) => judge.line(&line),
            Ok(Event::Err(line)) => {
                if opts.echo {
                    eprintln!("{line}");
                }
                if stderr_head.len() < STDERR_HEAD_LINES {
                    stderr_head.push(line);
                }
            }
            Ok(Event::Closed) => open -= 1,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => open = 0,
        }
    }
    if status.is_none() {
        // Killed above (SIGKILL cannot be ignored), so this returns at once.
        status = child.wait().ok();
    }
    let wall = start.elapsed();
    let (tap, console) = judge.finish();
    let exit = match (killed, status) {
        (Some((why, _)), _) => why,
        (None, Some(s)) => exit_of(s),
        (None, None) => Exit::SpawnError("lost track of the QEMU process".into()),
    };
    Outcome {
        tap,
        exit,
        stderr_head,
        wall,
        console,
    }
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => Exit::Status(c),
        (None, Some(s)) => Exit::Signal(s),
        (None, None) => Exit::Status(-1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::Board;
    use std::path::PathBuf;

    fn board() -> Board {
        Board {
            name: "b".into(),
            description: String::new(),
            arch: "aarch64".into(),
            target: "aarch64-unknown-none".into(),
            boot: String::new(),
            qemu: "qemu-system-aarch64".into(),
            template: false,
            console: None,
            exit: None,
            firmware: None,
            patched_qemu: false,
            memory: "1G".into(),
            cpus: 2,
            machine: vec!["-M".into(), "virt".into()],
            io: vec!["-serial".into(), "stdio".into()],
            test_args: vec!["-device".into(), "edu".into()],
            patched_args: vec!["-device".into(), "pasid-dma".into()],
            kernel_args: Vec::new(),
            uboot_env: Default::default(),
            exit_pass: 0,
            exit_fail: 1,
            fw_cfg_mmio: None,
            fw_cfg_io: None,
            acpi_capture_setup: Vec::new(),
            expect: Default::default(),
            expect_patched: Default::default(),
            variants: Vec::new(),
        }
    }

    #[test]
    fn patched_devices_only_when_the_qemu_has_them() {
        let board = Board {
            expect: [("pci".to_string(), "a".to_string())].into(),
            expect_patched: [("pci".to_string(), "a,b".to_string())].into(),
            ..board()
        };
        let stock = invocation(&board, Path::new("k"), &Request::default()).unwrap();
        assert!(!strs(&stock.args).contains(&"pasid-dma".to_string()));
        assert!(stock.cmdline.ends_with("expect.pci=a"), "{}", stock.cmdline);
        let req = Request {
            patched_devices: true,
            ..Request::default()
        };
        let patched = invocation(&board, Path::new("k"), &req).unwrap();
        let args = strs(&patched.args);
        let edu = args.iter().position(|a| a == "edu").unwrap();
        let dma = args.iter().position(|a| a == "pasid-dma").unwrap();
        assert!(edu < dma && dma < args.iter().position(|a| a == "-kernel").unwrap());
        assert!(
            patched.cmdline.ends_with("expect.pci=a,b"),
            "{}",
            patched.cmdline
        );
    }

    fn strs(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn command_line_from_the_board_only() {
        let inv = invocation(&board(), Path::new("/k/kernel"), &Request::default()).unwrap();
        assert_eq!(
            strs(&inv.args),
            [
                "-M",
                "virt",
                "-smp",
                "2",
                "-m",
                "1G",
                "-serial",
                "stdio",
                "-device",
                "edu",
                "-kernel",
                "/k/kernel",
                "-append",
                "qemu.mem=1G qemu.cpus=2"
            ]
        );
        assert_eq!(inv.cmdline, "qemu.mem=1G qemu.cpus=2");
    }

    #[test]
    fn a_uboot_board_boots_from_its_disk() {
        let b = Board {
            boot: "uboot".into(),
            kernel_args: vec!["exit=semihosting".into()],
            ..board()
        };
        let inv = invocation(&b, Path::new("/k/Image"), &Request::default()).unwrap();
        let a = strs(&inv.args);
        assert!(!a.contains(&"-kernel".to_string()) && !a.contains(&"-append".to_string()));
        assert!(a.ends_with(&[
            "-drive".into(),
            "if=none,format=raw,id=bootdisk,file=/k/b.disk.img".into(),
            "-device".into(),
            "virtio-blk-device,drive=bootdisk".into()
        ]));
        assert_eq!(inv.cmdline, "exit=semihosting qemu.mem=1G qemu.cpus=2");
        // A saved environment goes in U-Boot's flash bank.
        let b = Board {
            uboot_env: [("bootdelay".to_string(), "0".to_string())].into(),
            ..b
        };
        let inv = invocation(&b, Path::new("/k/Image"), &Request::default()).unwrap();
        assert!(strs(&inv.args).ends_with(&[
            "-drive".into(),
            "if=pflash,unit=1,format=raw,file=/k/b.uboot-env.img".into()
        ]));
    }

    #[test]
    fn filters_append_and_extra_args() {
        let req = Request {
            filter: Some("mm::*,irq".into()),
            exclude: Some("arch::timer".into()),
            append: Some(" log=debug crash=unexpected ".into()),
            extra: vec!["-d".into(), "guest_errors".into()],
            patched_devices: false,
        };
        let inv = invocation(&board(), Path::new("k"), &req).unwrap();
        assert_eq!(
            inv.cmdline,
            "filter=mm::*,irq exclude=arch::timer qemu.mem=1G qemu.cpus=2 log=debug crash=unexpected"
        );
        let a = strs(&inv.args);
        assert_eq!(&a[a.len() - 2..], ["-d", "guest_errors"]);
    }

    #[test]
    fn user_memory_and_cpus_replace_the_boards() {
        let req = Request {
            extra: vec![
                "-m".into(),
                "size=2G,maxmem=4G".into(),
                "--smp".into(),
                "4".into(),
            ],
            ..Request::default()
        };
        let inv = invocation(&board(), Path::new("k"), &req).unwrap();
        assert_eq!(inv.cmdline, "qemu.mem=2G qemu.cpus=4");
        let a = strs(&inv.args);
        assert_eq!(a.iter().filter(|x| *x == "-m").count(), 1);
        assert!(!a.contains(&"-smp".to_string()));
        assert!(a.ends_with(&[
            "-m".into(),
            "size=2G,maxmem=4G".into(),
            "--smp".into(),
            "4".into()
        ]));
    }

    #[test]
    fn memory_and_cpu_values() {
        assert_eq!(mem_of("512M").as_deref(), Some("512M"));
        assert_eq!(mem_of("slots=2,size=3G").as_deref(), Some("3G"));
        assert_eq!(mem_of("slots=2"), None);
        assert_eq!(cpus_of("4"), Some(4));
        assert_eq!(cpus_of("cpus=3,sockets=1"), Some(3));
        assert_eq!(cpus_of("8,sockets=2,cores=4"), Some(8));
        assert_eq!(cpus_of("sockets=2,cores=2,threads=2"), Some(8));
        assert_eq!(cpus_of("maxcpus=4"), None);
        assert_eq!(cpus_of("x"), None);
    }

    #[test]
    fn bad_requests_are_refused() {
        let e = invocation(
            &board(),
            Path::new("k"),
            &Request {
                filter: Some("mm alloc".into()),
                ..Request::default()
            },
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("must not contain spaces"), "{e}");
        assert!(check_pattern("exclude", "").is_err());
        let e = invocation(
            &board(),
            Path::new("k"),
            &Request {
                extra: vec!["-kernel".into(), "x".into()],
                ..Request::default()
            },
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("--kernel"), "{e}");
        let e = invocation(
            &board(),
            Path::new("k"),
            &Request {
                extra: vec!["-smp".into(), "lots".into()],
                ..Request::default()
            },
        )
        .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("-smp lots"), "{e}");
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("-M"), "-M");
        assert_eq!(shell_quote("virt,gic-version=3"), "virt,gic-version=3");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(
            shell_line(Path::new("qemu"), &["-append".into(), "x=1 y".into()]),
            "qemu -append 'x=1 y'"
        );
    }

    fn sh(script: &str, timeout_ms: u64, grace_ms: u64) -> Outcome {
        let opts = Options {
            timeout: Duration::from_millis(timeout_ms),
            bail_grace: Duration::from_millis(grace_ms),
            echo: false,
        };
        run(Path::new("/bin/sh"), &["-c".into(), script.into()], &opts)
    }

    #[test]
    fn runs_a_clean_console() {
        let o = sh(
            "echo boot log; printf 'TAP version 14\\r\\n1..1\\n'; echo 'ok 1 - a::b'; \
             echo warning >&2; printf 'no newline at the end'; exit 3",
            10_000,
            5_000,
        );
        assert_eq!(o.exit, Exit::Status(3));
        assert_eq!(o.tap.tests.len(), 1);
        assert_eq!(o.tap.version, Some(14));
        assert_eq!(o.stderr_head, ["warning"]);
        assert_eq!(o.tap.last_line.as_deref(), Some("no newline at the end"));
        assert!(o.console.starts_with("boot log\nTAP version 14\n1..1\n"));
        assert!(crate::tap::verdict(&o.tap, &o.exit, Some(3), &o.stderr_head).pass);
    }

    #[test]
    fn timeout_kills_the_child() {
        let t = Instant::now();
        let o = sh("echo started; exec sleep 30", 500, 5_000);
        assert_eq!(o.exit, Exit::Timeout(Duration::from_millis(500)));
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(o.tap.last_line.as_deref(), Some("started"));
    }

    #[test]
    fn a_grandchild_holding_the_pipes_does_not_hang_us() {
        // `sh` forks `sleep`, which keeps the pipes open after sh is killed.
        let t = Instant::now();
        let o = sh("sleep 4; echo never", 300, 5_000);
        assert!(matches!(o.exit, Exit::Timeout(_)));
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    }

    #[test]
    fn bail_out_stops_a_hanging_qemu() {
        let t = Instant::now();
        let o = sh("echo 'Bail out! kernel panic'; exec sleep 30", 20_000, 300);
        assert_eq!(o.exit, Exit::KilledAfterBailOut);
        assert!(t.elapsed() < Duration::from_secs(5));
        let v = crate::tap::verdict(&o.tap, &o.exit, Some(0), &o.stderr_head);
        assert_eq!(v.reason.as_deref(), Some("bail out: kernel panic"));
    }

    #[test]
    fn a_qemu_that_does_not_exit_after_the_plan_is_killed() {
        let o = sh(
            "printf 'TAP version 14\\n1..1\\nok 1 - a::b\\n'; exec sleep 30",
            20_000,
            300,
        );
        assert_eq!(o.exit, Exit::KilledAfterPlan);
        assert!(o.wall < Duration::from_secs(10), "{:?}", o.wall);
    }

    #[test]
    fn spawn_failure_is_reported() {
        let o = run(
            &PathBuf::from("/nonexistent/qemu-system-nothing"),
            &[],
            &Options {
                echo: false,
                ..Options::default()
            },
        );
        let Exit::SpawnError(e) = &o.exit else {
            panic!("{:?}", o.exit)
        };
        assert!(
            e.starts_with("/nonexistent/qemu-system-nothing: No such file"),
            "{e}"
        );
    }

    #[test]
    fn failed_start_reads_stderr() {
        let o = sh(
            "echo 'qemu: -M nope: unsupported machine type' >&2; exit 1",
            5_000,
            5_000,
        );
        let v = crate::tap::verdict(&o.tap, &o.exit, Some(0), &o.stderr_head);
        assert_eq!(
            v.reason.as_deref(),
            Some("QEMU failed to start: qemu: -M nope: unsupported machine type")
        );
    }
}
