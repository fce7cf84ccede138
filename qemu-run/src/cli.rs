//! The command line: `boards`, `run`, and `runner` (cargo's target runner).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::board::{self, Board};
use crate::run::{self, Options, Request};
use anyhow::{bail, Context, Result};

use crate::{build, junit, qemu, tap, BoardReport, EXIT_FAIL, EXIT_USAGE};

#[derive(Debug, Parser)]
#[command(
    name = "qemu-run",
    version,
    about = "Boot the unikernel on QEMU boards and turn its TAP output into a verdict"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List the boards in boards/*.toml
    Boards {
        /// List each board's variants instead, as BOARD:VARIANT
        #[arg(long)]
        variants: bool,
    },
    /// Build the kernel (unless --kernel is given), boot it and check the self-tests
    Run(RunArgs),
    /// Judge a console that is not QEMU's: a real board's serial device, a
    /// saved log, or standard input, with `run`'s verdict rules
    Watch(WatchArgs),
    /// Build the kernel (unless --kernel is given), boot it in benchmark
    /// mode (twice: real time, then virtual time under -icount) and print
    /// the figures
    Bench(BenchArgs),
    /// The patched QEMU (qemu-run/patches/): what would be used, or build it
    #[command(subcommand)]
    Qemu(QemuCmd),
    /// ACPI tables: capture a board's, or decode table files
    #[command(subcommand)]
    Acpi(AcpiCmd),
    /// Build what to copy or flash for a board (the Image, boot.scr and a
    /// disk image for U-Boot boards; loader.efi, startup.nsh and an ESP
    /// disk image for UEFI boards) into a directory, with a README.txt
    Image(ImageArgs),
    /// Install the firmware a board boots through (its `firmware` key's
    /// Debian package) if missing, and print the file's path
    Firmware {
        /// The board (one board)
        #[arg(long, value_name = "NAME")]
        board: String,
    },
    /// Cargo target runner: boot ELF on the board for its machine type
    Runner {
        /// The kernel ELF cargo built
        elf: PathBuf,
        /// A test name pattern becomes --filter; anything else is ignored
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum QemuCmd {
    /// Say which QEMU each board would use, and the state of the cache
    Status,
    /// Build the patched QEMU into the cache (replacing the entry for the
    /// current patch set)
    Build {
        /// Build from this QEMU source tarball instead of Debian's source package
        #[arg(long, value_name = "TARBALL")]
        qemu_src: Option<PathBuf>,
        /// Only when the cache has no complete entry for the current patch set
        #[arg(long)]
        if_missing: bool,
    },
    /// Build and run the qtests our patches add to QEMU's own test suite
    /// (pasid-dma, SMMUv3 substreams, illegal commands and HTTU, VT-d ATS
    /// and page requests); the cache build runs them too
    Test {
        /// A configured QEMU build tree with the patches applied (from an
        /// earlier `qemu test --keep`, or your own): build incrementally there
        #[arg(long, value_name = "DIR")]
        build_dir: Option<PathBuf>,
        /// Keep the fresh build tree for later --build-dir runs
        #[arg(long, conflicts_with = "build_dir")]
        keep: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AcpiCmd {
    /// Read the tables QEMU offers a board through fw_cfg (QEMU stopped,
    /// under qtest; no guest code runs) and write one file per table
    Capture {
        #[arg(long, value_name = "NAME")]
        board: String,
        /// Directory for the table files (created if missing)
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// QEMU machine arguments replacing the board's (one string, split at spaces)
        #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
        machine: Option<String>,
        /// Extra QEMU arguments (after `--`), e.g. devices that change the tables
        #[arg(last = true, value_name = "QEMU ARGS")]
        qemu_args: Vec<String>,
    },
    /// Print IORT, DMAR, MCFG, MADT (APIC) and SPCR files as the kernel
    /// reads them (other tables: header only)
    Decode {
        /// Table files (raw bytes, header included)
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
        /// Machine-readable output: a JSON array, one object per file
        #[arg(long)]
        json: bool,
    },
}

/// Which boards, and which kernel.
#[derive(Debug, Args)]
pub struct OnBoards {
    /// Board name, or `all` for every board in turn
    #[arg(long, value_name = "NAME|all")]
    pub board: String,
    /// Kernel image to boot instead of building one (not with --board all)
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub on: OnBoards,
    /// Run only tests matching these comma-separated patterns
    #[arg(long, value_name = "PATTERN")]
    pub filter: Option<String>,
    /// Skip tests matching these comma-separated patterns
    #[arg(long, value_name = "PATTERN")]
    pub exclude: Option<String>,
    /// Seconds before QEMU is killed, per board
    #[arg(long, value_name = "SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Write a JUnit XML report here
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Extra words for the kernel command line
    #[arg(long, value_name = "TEXT")]
    pub append: Option<String>,
    /// Run the board under these named configurations (`[[variant]]` in
    /// its file; comma-separated; `base` is the board as described), or
    /// `all` of them; each is reported as BOARD:VARIANT
    #[arg(long, value_name = "NAME|all")]
    pub variant: Option<String>,
    /// Boot each board this many times (a stress run: with --load, it
    /// shows tests that fail only now and then)
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub repeat: u32,
    /// Keep this many host threads busy while the boards run, as a second
    /// QEMU or a parallel build would
    #[arg(long, value_name = "THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=64))]
    pub load: u32,
    /// Extra QEMU arguments (after `--`)
    #[arg(last = true, value_name = "QEMU ARGS")]
    pub qemu_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The board whose console this is: its name in the reports, and the
    /// defaults for --device, --baud and --timeout
    #[arg(long, value_name = "NAME")]
    pub board: Option<String>,
    /// Serial device to read (put in raw mode at --baud)
    #[arg(long, value_name = "PATH", conflicts_with = "file")]
    pub device: Option<PathBuf>,
    /// Baud rate of --device (default: the board's, else 115200)
    #[arg(long, value_name = "RATE")]
    pub baud: Option<u32>,
    /// A saved console log (or a FIFO) to read to its end; `-` is standard input
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Seconds to wait for the verdict (default: the board's, else 600)
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
    /// Seconds to keep reading after a bail out or the last planned test
    /// (for the crash report)
    #[arg(long, value_name = "SECONDS", default_value_t = 5)]
    pub grace: u64,
    /// Write a JUnit XML report here
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The board to build for (one board)
    #[arg(long, value_name = "NAME")]
    pub board: String,
    /// Kernel to package instead of building one (the ELF, or an Image)
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Directory for the files (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Extra words for the kernel command line
    #[arg(long, value_name = "TEXT")]
    pub append: Option<String>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub on: OnBoards,
    /// Run only benchmarks matching these comma-separated patterns
    #[arg(long, value_name = "PATTERN")]
    pub filter: Option<String>,
    /// Seconds before QEMU is killed, per board and pass
    #[arg(long, value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Extra QEMU arguments (after `--`)
    #[arg(last = true, value_name = "QEMU ARGS")]
    pub qemu_args: Vec<String>,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // --help and --version are not errors.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            // clap renders "error: …"; keep our prefix on every error.
            eprint!("qemu-run: {}", e.render());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match execute(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_FAIL),
        Err(e) => {
            eprintln!("{}", error_line(&e));
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// How a setup error is shown: each context before its cause
/// (`kernel /x: No such file or directory (os error 2)`).
pub fn error_line(e: &anyhow::Error) -> String {
    format!("qemu-run: error: {e:#}")
}

/// Runs a parsed command; `Ok(false)` when a board failed.
pub fn execute(cli: Cli) -> Result<bool> {
    let root = board::workspace_root();
    let boards = board::load_boards(&root)?;
    match cli.command {
        Cmd::Boards { variants: false } => {
            print!("{}", board_list(&boards));
            Ok(true)
        }
        Cmd::Boards { variants: true } => {
            print!("{}", variant_list(&boards));
            Ok(true)
        }
        Cmd::Run(args) => run_boards(&root, &boards, &args),
        Cmd::Watch(args) => watch_console(&boards, &args),
        Cmd::Bench(args) => bench_boards(&root, &boards, &args),
        Cmd::Qemu(QemuCmd::Status) => {
            print!("{}", qemu_status(&root, &boards)?);
            Ok(true)
        }
        Cmd::Qemu(QemuCmd::Build {
            qemu_src,
            if_missing,
        }) => {
            let plan = crate::patched::Plan::new(&root)?;
            if if_missing && qemu_src.is_none() && plan.info().is_some() {
                eprintln!(
                    "qemu-run: the patched QEMU is built: {}",
                    plan.entry().display()
                );
                return Ok(true);
            }
            crate::patched::build(&root, &plan, qemu_src.as_deref())?;
            Ok(true)
        }
        Cmd::Qemu(QemuCmd::Test { build_dir, keep }) => {
            let plan = crate::patched::Plan::new(&root)?;
            crate::patched::test(&root, &plan, build_dir.as_deref(), keep)
        }
        Cmd::Acpi(AcpiCmd::Capture {
            board,
            out,
            machine,
            qemu_args,
        }) => {
            let board = board::select(&boards, &board)?;
            let [board] = board.as_slice() else {
                bail!("acpi capture takes one board, not `all`");
            };
            let qemu = qemu::ensure(board.qemu_name()?)?;
            let machine: Option<Vec<String>> =
                machine.map(|m| m.split_whitespace().map(String::from).collect());
            let qt = crate::acpi::Qtest::start(&qemu, board, machine.as_deref(), &qemu_args)?;
            let tables = crate::acpi::capture(qt)?;
            std::fs::create_dir_all(&out).with_context(|| out.display().to_string())?;
            for t in &tables {
                let path = out.join(&t.file);
                std::fs::write(&path, &t.bytes).with_context(|| path.display().to_string())?;
                println!("{}  {} bytes", path.display(), t.bytes.len());
            }
            Ok(true)
        }
        Cmd::Acpi(AcpiCmd::Decode { files, json }) => {
            use std::io::Write as _;
            // Write errors (a closed pipe, as with `| head`) end the output quietly.
            let mut out = std::io::stdout().lock();
            let mut all_ok = true;
            let mut values = Vec::new();
            for f in &files {
                let bytes = std::fs::read(f).with_context(|| f.display().to_string())?;
                let d = crate::acpi::decode(&f.display().to_string(), &bytes);
                all_ok &= d.ok;
                if json {
                    values.push(d.json);
                } else {
                    let _ = writeln!(out, "{}", d.text);
                }
            }
            if json {
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::to_string_pretty(&values).unwrap_or_default()
                );
            }
            Ok(all_ok)
        }
        Cmd::Image(args) => {
            image_for_board(&root, &boards, &args)?;
            Ok(true)
        }
        Cmd::Firmware { board } => {
            let [b] = board::select(&boards, &board)?[..] else {
                bail!("firmware takes one board, not `all`");
            };
            let Some(f) = &b.firmware else {
                bail!("board {} names no firmware (it boots without any)", b.name);
            };
            println!("{}", crate::debian::ensure_firmware(f)?.display());
            Ok(true)
        }
        Cmd::Runner { elf, args } => {
            let board = board::board_for_elf(&boards, &elf)?;
            let args = runner_args(board, elf, &args);
            run_boards(&root, &boards, &args)
        }
    }
}

/// `image`: the kernel for the board, packaged the way the board boots it,
/// with the command line its QEMU run would give.
fn image_for_board(root: &Path, boards: &[Board], args: &ImageArgs) -> Result<()> {
    let [b] = board::select(boards, &args.board)?[..] else {
        bail!("image takes one board, not `all`");
    };
    let on = OnBoards {
        board: b.name.clone(),
        kernel: args.kernel.clone(),
    };
    let kernel = kernel_for(root, &on, b)?;
    let request = Request {
        append: args.append.clone(),
        patched_devices: b.patched_qemu,
        ..Request::default()
    };
    let cmdline = run::invocation(b, &kernel, &request)?.cmdline;
    let bytes = std::fs::read(&kernel).with_context(|| kernel.display().to_string())?;
    let files = crate::bundle::files_for(b, &bytes, &cmdline)?;
    crate::bundle::write(&args.out, b, &files, &cmdline)?;
    for f in &files {
        println!("{}", args.out.join(&f.name).display());
    }
    println!("{}", args.out.join("README.txt").display());
    Ok(())
}

pub fn board_list(boards: &[Board]) -> String {
    let name_w = boards
        .iter()
        .map(|b| b.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let arch_w = boards
        .iter()
        .map(|b| b.arch.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let kind = |b: &Board| match (b.is_hardware(), b.template) {
        (false, _) => "qemu",
        (true, false) => "hardware",
        (true, true) => "template",
    };
    let mut out = format!(
        "{:<name_w$}  {:<arch_w$}  {:<8}  description\n",
        "name", "arch", "kind"
    );
    for b in boards {
        out.push_str(&format!(
            "{:<name_w$}  {:<arch_w$}  {:<8}  {}\n",
            b.name,
            b.arch,
            kind(b),
            b.description
        ));
    }
    out
}

/// Every board's variants, one `BOARD:VARIANT  description` line each.
pub fn variant_list(boards: &[Board]) -> String {
    let runs: Vec<Board> = boards
        .iter()
        .flat_map(|b| b.variants.iter().map(|v| b.with_variant(v)))
        .collect();
    let width = runs.iter().map(|r| r.name.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (r, v) in runs.iter().zip(boards.iter().flat_map(|b| &b.variants)) {
        out.push_str(&format!("{:<width$}  {}\n", r.name, v.description));
    }
    out
}

/// `runner ELF [args]` as a `run`: a first argument that looks like a test
/// name (cargo passes test-name filters that way) becomes `--filter`.
pub fn runner_args(board: &Board, elf: PathBuf, args: &[String]) -> RunArgs {
    let filter = args.first().filter(|a| looks_like_test_name(a)).cloned();
    RunArgs {
        on: OnBoards {
            board: board.name.clone(),
            kernel: Some(elf),
        },
        filter,
        exclude: None,
        timeout: 60,
        junit: None,
        append: None,
        variant: None,
        repeat: 1,
        load: 0,
        qemu_args: Vec::new(),
    }
}

fn looks_like_test_name(a: &str) -> bool {
    !a.is_empty()
        && !a.starts_with('-')
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_:*?,.".contains(c))
}

/// Which QEMU each board would use, and the patched QEMU's cache entry.
fn qemu_status(root: &Path, boards: &[Board]) -> Result<String> {
    use std::fmt::Write as _;
    let plan = crate::patched::Plan::new(root)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "patched QEMU: {} (Debian {} {} + {} patch(es) from qemu-run/patches)",
        plan.key,
        crate::patched::DEBIAN_SOURCE,
        crate::patched::DEBIAN_VERSION,
        plan.patches.len(),
    );
    let _ = writeln!(out, "  cache entry: {}", plan.entry().display());
    match plan.info() {
        Some(info) => {
            let _ = writeln!(out, "  state: built");
            for l in info.lines() {
                let _ = writeln!(out, "    {l}");
            }
        }
        None => {
            let _ = writeln!(
                out,
                "  state: not built (the first run of a board that needs it builds it, as \
                 does `cargo qemu-run qemu build`)"
            );
        }
    }
    for b in boards {
        let what = if b.patched_qemu {
            format!("patched {}", plan.binary(&b.qemu).display())
        } else if b.is_hardware() {
            "real hardware (no QEMU)".to_string()
        } else {
            match qemu::check(&b.qemu) {
                Ok(p) => format!("stock {}", p.display()),
                Err(_) => format!("stock {} (not found: installed on first run)", b.qemu),
            }
        };
        let _ = writeln!(out, "{}: {what}", b.name);
    }
    Ok(out)
}

/// The QEMU a board runs on, and whether it has the patched devices.
struct Qemu {
    bin: PathBuf,
    patched_devices: bool,
}

/// A board that asks for the patched QEMU gets it (built on first need),
/// unless QEMU_DIR names a QEMU of the user's own: then its devices decide
/// whether the board's `patched_args` go in (the tests that need them SKIP
/// without them).
fn qemu_for(root: &Path, b: &Board) -> Result<Qemu> {
    b.qemu_name()?;
    if let Some(f) = &b.firmware {
        crate::debian::ensure_firmware(f)?;
    }
    if !b.patched_qemu {
        return Ok(Qemu {
            bin: qemu::ensure(&b.qemu)?,
            patched_devices: false,
        });
    }
    if std::env::var_os("QEMU_DIR").is_some_and(|d| !d.is_empty()) {
        let bin = qemu::ensure(&b.qemu)?;
        let patched_devices = qemu::has_device(&bin, "pasid-dma");
        if !patched_devices {
            eprintln!(
                "qemu-run: {}: {} (QEMU_DIR) has no pasid-dma device: the board runs without \
                 its patched test devices, and the tests that need them SKIP",
                b.name,
                bin.display()
            );
        }
        return Ok(Qemu {
            bin,
            patched_devices,
        });
    }
    Ok(Qemu {
        bin: crate::patched::ensure(root, &b.qemu)?,
        patched_devices: true,
    })
}

/// The boards named, and the QEMU each needs (found or installed first, so
/// a missing one stops the run before any build or boot).
fn boards_and_qemus<'a>(
    root: &Path,
    boards: &'a [Board],
    name: &str,
    kernel: Option<&Path>,
) -> Result<(Vec<&'a Board>, HashMap<&'a str, Qemu>)> {
    let selected = board::select(boards, name)?;
    if kernel.is_some() && selected.len() > 1 {
        bail!("--kernel cannot be used with --board all: each board needs its own kernel");
    }
    if let Some(k) = kernel {
        board::check_kernel(k, selected[0])?;
    }
    let mut qemus: HashMap<&str, Qemu> = HashMap::new();
    for b in &selected {
        if !qemus.contains_key(b.name.as_str()) {
            qemus.insert(&b.name, qemu_for(root, b)?);
        }
    }
    Ok((selected, qemus))
}

/// The kernel the user gave, or one built for `b`; checked against the board.
fn kernel_for(root: &Path, on: &OnBoards, b: &Board) -> Result<PathBuf> {
    let kernel = match &on.kernel {
        Some(k) => k.clone(),
        None => build::build_kernel(root, b)?,
    };
    board::check_kernel(&kernel, b)?;
    // Boards that start an arm64 Image get it made from the ELF; a kernel
    // given as an Image already is checked and used as it is.
    if b.boots_image() {
        let head = board::read_kernel_head(&kernel)?;
        if board::elf_machine(&head).is_some() {
            return crate::arm64::write_beside(&kernel);
        }
        let bytes = std::fs::read(&kernel).with_context(|| kernel.display().to_string())?;
        crate::arm64::header(&bytes).with_context(|| format!("kernel {}", kernel.display()))?;
    }
    Ok(kernel)
}

/// One QEMU run, its command line shown first.
fn boot(
    qemu_bin: &Path,
    b: &Board,
    kernel: &Path,
    request: &Request,
    opts: &Options,
) -> Result<run::Outcome> {
    let inv = run::invocation(b, kernel, request)?;
    if b.boots_uboot() {
        let disk = crate::uboot::disk_path(kernel, &b.name);
        crate::uboot::write_disk(kernel, &inv.cmdline, &disk)?;
        if !b.uboot_env.is_empty() {
            let args: Vec<String> = b.machine.iter().chain(&b.io).cloned().collect();
            let Some(firmware) = crate::uboot::bios_of(&args) else {
                bail!(
                    "board {}: uboot_env needs the U-Boot binary (-bios) in its arguments",
                    b.name
                );
            };
            let set: Vec<(&str, &str)> = b
                .uboot_env
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let bank = crate::uboot::env_path(kernel, &b.name);
            crate::uboot::write_env_flash(Path::new(firmware), &set, &bank)?;
        }
    }
    eprintln!(
        "qemu-run: {}: {}",
        b.name,
        run::shell_line(qemu_bin, &inv.args)
    );
    Ok(run::run(qemu_bin, &inv.args, opts))
}

fn bench_boards(root: &Path, boards: &[Board], args: &BenchArgs) -> Result<bool> {
    use crate::bench::{self, Clock};
    if let Some(f) = &args.filter {
        run::check_pattern("filter", f)?;
    }
    let (selected, qemus) =
        boards_and_qemus(root, boards, &args.on.board, args.on.kernel.as_deref())?;
    let opts = Options {
        timeout: Duration::from_secs(args.timeout),
        ..Options::default()
    };
    let mut rows = Vec::new();
    let mut ok = true;
    for b in selected {
        let q = &qemus[b.name.as_str()];
        let qemu_bin = &q.bin;
        let kernel = kernel_for(root, &args.on, b)?;
        let mut ran = 0;
        for clock in Clock::ALL {
            let mut extra: Vec<String> = clock.qemu_args().iter().map(|a| a.to_string()).collect();
            extra.extend(args.qemu_args.iter().cloned());
            let request = Request {
                filter: args.filter.clone(),
                exclude: None,
                append: Some(clock.cmdline_word().into()),
                extra,
                patched_devices: q.patched_devices,
            };
            let outcome = boot(qemu_bin, b, &kernel, &request, &opts)?;
            let nothing_selected = outcome.tap.bail_out.is_none()
                && outcome.tap.plan.as_ref().is_some_and(|p| p.count == 0)
                && matches!(outcome.exit, tap::Exit::Status(s) if b.exit_status().is_none_or(|p| s == p));
            if nothing_selected {
                continue;
            }
            let verdict = tap::verdict(
                &outcome.tap,
                &outcome.exit,
                b.exit_status(),
                &outcome.stderr_head,
            );
            let figures = bench::parse_console(&outcome.console);
            ran += figures.len();
            rows.extend(figures.into_iter().map(|f| (b.name.clone(), f)));
            let report = BoardReport {
                board: b.name.clone(),
                outcome,
                verdict,
            };
            eprintln!("qemu-run: {}", verdict_line(&report));
            ok &= report.verdict.pass;
        }
        if ran == 0 {
            eprintln!(
                "qemu-run: {}: FAIL: no benchmark matches --filter {:?}",
                b.name,
                args.filter.as_deref().unwrap_or("*")
            );
            ok = false;
        }
    }
    print!("{}", bench::table(&rows));
    Ok(ok)
}

fn run_boards(root: &Path, boards: &[Board], args: &RunArgs) -> Result<bool> {
    let mut request = Request {
        filter: args.filter.clone(),
        exclude: args.exclude.clone(),
        append: args.append.clone(),
        extra: args.qemu_args.clone(),
        patched_devices: false,
    };
    // Refuse a bad request (or variant) before spending minutes on builds.
    let runs = board_runs(
        &board::select(boards, &args.on.board)?,
        args.variant.as_deref(),
    )?;
    for (run, _) in &runs {
        run::invocation(run, Path::new("kernel"), &request)?;
    }
    let (selected, qemus) =
        boards_and_qemus(root, boards, &args.on.board, args.on.kernel.as_deref())?;
    let opts = Options {
        timeout: Duration::from_secs(args.timeout),
        ..Options::default()
    };
    let mut kernels: HashMap<&str, PathBuf> = HashMap::new();
    for b in &selected {
        kernels.insert(&b.name, kernel_for(root, &args.on, b)?);
    }
    let _load = (args.load > 0).then(|| crate::stress::Load::start(args.load));
    let mut reports = Vec::new();
    for round in 1..=args.repeat {
        for (b, base) in &runs {
            let q = &qemus[base.as_str()];
            let kernel = &kernels[base.as_str()];
            request.patched_devices = q.patched_devices;
            // One QEMU log per board and round: QEMU truncates `-D FILE`
            // at each start, so a shared file would keep only the last.
            let label = crate::stress::label(&b.name, round, args.repeat);
            let mut request = request.clone();
            if runs.len() > 1 || args.repeat > 1 {
                request.extra = per_run_log(&args.qemu_args, &label);
            }
            let outcome = boot(&q.bin, b, kernel, &request, &opts)?;
            let verdict = tap::verdict(
                &outcome.tap,
                &outcome.exit,
                b.exit_status(),
                &outcome.stderr_head,
            );
            let report = BoardReport {
                board: label,
                outcome,
                verdict,
            };
            eprintln!("qemu-run: {}", verdict_line(&report));
            reports.push(report);
        }
    }

    print!("{}", crate::summary_table(&reports));
    if args.variant.is_some() {
        print!("{}", crate::variant_summary(&reports));
    }
    if args.repeat > 1 {
        print!("{}", crate::stress::tally(&reports, args.repeat, args.load));
    }
    if let Some(path) = &args.junit {
        std::fs::write(path, junit::render(&reports)?)
            .with_context(|| format!("cannot write JUnit to {}", path.display()))?;
    }
    Ok(reports.iter().all(|r| r.verdict.pass))
}

/// Where `watch` reads, from the arguments and the board's console.
pub fn watch_source(args: &WatchArgs, board: Option<&Board>) -> Result<crate::watch::Source> {
    use crate::watch::Source;
    let console = board.and_then(|b| b.console.as_ref());
    if let Some(f) = &args.file {
        if args.baud.is_some() {
            bail!("--baud is for a serial --device, not --file");
        }
        return Ok(if f.as_os_str() == "-" {
            Source::Stdin
        } else {
            Source::File(f.clone())
        });
    }
    let device = args
        .device
        .clone()
        .or_else(|| console.and_then(|c| c.device.clone()));
    let Some(device) = device else {
        bail!(
            "watch needs --device, --file (`-` for standard input) or a --board whose \
             [console] names a device"
        );
    };
    let baud = args
        .baud
        .or(console.map(|c| c.baud))
        .unwrap_or(crate::hardware::DEFAULT_BAUD);
    Ok(Source::Serial { device, baud })
}

/// `watch`: one console judged as one board's run.
fn watch_console(boards: &[Board], args: &WatchArgs) -> Result<bool> {
    let board = match &args.board {
        Some(name) => Some(board::select(boards, name)?[0]),
        None => None,
    };
    let name = board.map_or("console", |b| b.name.as_str());
    let source = watch_source(args, board)?;
    let timeout = args
        .timeout
        .or(board.and_then(|b| b.console.as_ref()?.timeout))
        .unwrap_or(crate::hardware::DEFAULT_TIMEOUT_SECS);
    let input = source.open()?;
    eprintln!(
        "qemu-run: {name}: watching {} (timeout {timeout}s)",
        source.describe()
    );
    let opts = Options {
        timeout: Duration::from_secs(timeout),
        bail_grace: Duration::from_secs(args.grace),
        echo: true,
    };
    let outcome = crate::watch::watch(input, &opts);
    if let Some(line) = crate::watch::timeout_line(name, &outcome) {
        eprintln!("qemu-run: {line}");
    }
    // No exit status to compare: the passing status stands for "none".
    let verdict = tap::verdict(&outcome.tap, &outcome.exit, None, &outcome.stderr_head);
    let report = BoardReport {
        board: name.to_string(),
        outcome,
        verdict,
    };
    eprintln!("qemu-run: {}", verdict_line(&report));
    let reports = [report];
    print!("{}", crate::summary_table(&reports));
    if let Some(path) = &args.junit {
        std::fs::write(path, junit::render(&reports)?)
            .with_context(|| format!("cannot write JUnit to {}", path.display()))?;
    }
    Ok(reports[0].verdict.pass)
}

/// What to boot for `selected` boards: each board as described, or under
/// each variant `--variant` names (see [`board::variant_runs`]), with
/// the name of the board it derives from (for its QEMU and kernel).
pub fn board_runs(selected: &[&Board], variant: Option<&str>) -> Result<Vec<(Board, String)>> {
    let Some(spec) = variant else {
        return Ok(selected
            .iter()
            .map(|&b| (b.clone(), b.name.clone()))
            .collect());
    };
    let mut runs = Vec::new();
    for &b in selected {
        for r in board::variant_runs(b, spec, selected.len() == 1)? {
            runs.push((r, b.name.clone()));
        }
    }
    if runs.is_empty() {
        bail!("no board selected has variant `{spec}`");
    }
    Ok(runs)
}

/// `args` with the file of a `-D FILE` (QEMU's log) named for `run`:
/// `/tmp/ge.log` becomes `/tmp/ge.qemu-virt.log` (`#` in a round's label
/// becomes `-`).
pub fn per_run_log(args: &[String], run: &str) -> Vec<String> {
    let run = run.replace('#', "-");
    let mut out = args.to_vec();
    for i in 1..out.len() {
        if out[i - 1] == "-D" {
            let path = Path::new(&args[i]);
            let stem = path.file_stem().unwrap_or_default().to_string_lossy();
            let name = match path.extension() {
                Some(ext) => format!("{stem}.{run}.{}", ext.to_string_lossy()),
                None => format!("{stem}.{run}"),
            };
            out[i] = path.with_file_name(name).to_string_lossy().into_owned();
        }
    }
    out
}

/// One line per board on stderr as soon as it finished.
pub fn verdict_line(r: &BoardReport) -> String {
    let c = r.outcome.tap.counts();
    let result = match &r.verdict.reason {
        None => "PASS".to_string(),
        Some(reason) => format!("FAIL: {reason}"),
    };
    format!(
        "{}: {result} ({} passed, {} failed, {} skipped; TAP {:.2}s, QEMU {:.2}s)",
        r.board,
        c.passed,
        c.failed,
        c.skipped,
        r.tap_time().as_secs_f64(),
        r.outcome.wall.as_secs_f64()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("qemu-run").chain(args.iter().copied()))
    }

    #[test]
    fn run_arguments() {
        let cli = parse(&[
            "run",
            "--board",
            "all",
            "--filter",
            "mm::*",
            "--timeout",
            "5",
            "--",
            "-d",
            "guest_errors",
        ])
        .unwrap();
        let Cmd::Run(a) = cli.command else { panic!() };
        assert_eq!(a.on.board, "all");
        assert_eq!(a.filter.as_deref(), Some("mm::*"));
        assert_eq!(a.timeout, 5);
        assert_eq!(a.qemu_args, ["-d", "guest_errors"]);

        let Cmd::Run(a) = parse(&["run", "--board", "qemu-virt"]).unwrap().command else {
            panic!()
        };
        assert_eq!(a.timeout, 60);
        assert_eq!((a.repeat, a.load), (1, 0));
        assert!(a.qemu_args.is_empty());

        let Cmd::Run(a) = parse(&["run", "--board", "all", "--repeat", "5", "--load", "2"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!((a.repeat, a.load), (5, 2));
    }

    #[test]
    fn variant_arguments_and_listing() {
        let Cmd::Run(a) = parse(&["run", "--board", "qemu-virt", "--variant", "all"])
            .unwrap()
            .command
        else {
            panic!()
        };
        assert_eq!(a.variant.as_deref(), Some("all"));
        let Cmd::Run(a) = parse(&["run", "--board", "all"]).unwrap().command else {
            panic!()
        };
        assert_eq!(a.variant, None);
        assert!(matches!(
            parse(&["boards", "--variants"]).unwrap().command,
            Cmd::Boards { variants: true }
        ));

        let boards = crate::board::load_boards(&board::workspace_root()).unwrap();
        let list = variant_list(&boards);
        assert!(
            list.lines().any(|l| l.starts_with("qemu-virt:pasid8 ")),
            "{list}"
        );
        assert!(
            list.lines().any(|l| l.starts_with("qemu-q35:pasid8 ")),
            "{list}"
        );
        // With --board all, a variant runs on the boards that have it.
        let all: Vec<&Board> = boards.iter().collect();
        let runs = board_runs(&all, Some("el2")).unwrap();
        let names: Vec<_> = runs
            .iter()
            .map(|(b, base)| (b.name.as_str(), base.as_str()))
            .collect();
        assert_eq!(names, [("qemu-virt:el2", "qemu-virt")]);
        let e = board_runs(&all, Some("nope")).unwrap_err();
        assert_eq!(format!("{e:#}"), "no board selected has variant `nope`");
        assert_eq!(board_runs(&all, None).unwrap().len(), boards.len());
    }

    #[test]
    fn watch_sources_from_arguments_and_board() {
        use crate::watch::Source;
        let args = |a: &[&str]| {
            let Cmd::Watch(w) = parse(&[&["watch"], a].concat()).unwrap().command else {
                panic!()
            };
            w
        };
        let boards = crate::board::load_boards(&board::workspace_root()).unwrap();
        let uboot = boards
            .iter()
            .find(|b| b.name == "template-uboot-arm64")
            .unwrap();
        let ttyusb0 = Source::Serial {
            device: "/dev/ttyUSB0".into(),
            baud: 115200,
        };
        assert_eq!(watch_source(&args(&[]), Some(uboot)).unwrap(), ttyusb0);
        assert_eq!(
            watch_source(
                &args(&["--device", "/dev/ttyS1", "--baud", "9600"]),
                Some(uboot)
            )
            .unwrap(),
            Source::Serial {
                device: "/dev/ttyS1".into(),
                baud: 9600
            }
        );
        assert_eq!(
            watch_source(&args(&["--file", "-"]), None).unwrap(),
            Source::Stdin
        );
        assert_eq!(
            watch_source(&args(&["--file", "boot.log"]), Some(uboot)).unwrap(),
            Source::File("boot.log".into())
        );
        let e = watch_source(&args(&[]), None).unwrap_err();
        assert!(
            e.to_string().starts_with("watch needs --device, --file"),
            "{e}"
        );
        let e = watch_source(&args(&["--file", "x", "--baud", "9600"]), None).unwrap_err();
        assert!(
            e.to_string().contains("--baud is for a serial --device"),
            "{e}"
        );
        assert!(parse(&["watch", "--file", "x", "--device", "y"]).is_err());
        assert!(parse(&["watch", "--timeout", "0"]).is_err());
    }

    #[test]
    fn qemu_logs_are_named_per_run() {
        let args: Vec<String> = ["-d", "guest_errors", "-D", "/tmp/ge.log"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            per_run_log(&args, "qemu-virt"),
            ["-d", "guest_errors", "-D", "/tmp/ge.qemu-virt.log"]
        );
        assert_eq!(
            per_run_log(&args, "qemu-q35#2")[3],
            "/tmp/ge.qemu-q35-2.log"
        );
        let bare: Vec<String> = vec!["-D".into(), "log".into()];
        assert_eq!(per_run_log(&bare, "b")[1], "log.b");
        assert_eq!(per_run_log(&args[..2], "b"), &args[..2]);
    }

    #[test]
    fn qemu_test_arguments() {
        let Cmd::Qemu(QemuCmd::Test { build_dir, keep }) =
            parse(&["qemu", "test"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!((build_dir, keep), (None, false));
        let Cmd::Qemu(QemuCmd::Test { build_dir, keep }) =
            parse(&["qemu", "test", "--build-dir", "/q/build"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!(build_dir.as_deref(), Some(Path::new("/q/build")));
        assert!(!keep);
        assert!(parse(&["qemu", "test", "--keep"]).is_ok());
        // a kept tree is made fresh; an existing one is not kept again
        assert!(parse(&["qemu", "test", "--keep", "--build-dir", "/q"]).is_err());
    }

    #[test]
    fn setup_errors_show_context_and_cause() {
        let missing = Path::new("/nonexistent/kernel");
        let e = board::read_kernel_head(missing).unwrap_err();
        assert_eq!(
            error_line(&e),
            "qemu-run: error: kernel /nonexistent/kernel: No such file or directory (os error 2)"
        );
        let e = board::select(&[], "x").unwrap_err();
        assert_eq!(
            error_line(&e),
            "qemu-run: error: unknown board `x`; known boards:  (or `all`)"
        );
    }

    #[test]
    fn usage_errors() {
        assert!(parse(&["run"]).is_err());
        assert!(parse(&["run", "--board", "x", "--timeout", "0"]).is_err());
        assert!(parse(&["run", "--board", "x", "--timeout", "soon"]).is_err());
        assert!(parse(&["run", "--board", "x", "--repeat", "0"]).is_err());
        assert!(parse(&["run", "--board", "x", "--load", "65"]).is_err());
        assert!(parse(&["frobnicate"]).is_err());
    }

    #[test]
    fn runner_mode() {
        let Cmd::Runner { elf, args } =
            parse(&["runner", "/t/kernel", "mm::page_alloc", "--nocapture"])
                .unwrap()
                .command
        else {
            panic!()
        };
        assert_eq!(elf, Path::new("/t/kernel"));
        assert_eq!(args, ["mm::page_alloc", "--nocapture"]);
        let board = crate::board::load_boards(&board::workspace_root())
            .unwrap()
            .remove(0);
        let a = runner_args(&board, elf.clone(), &args);
        assert_eq!(a.filter.as_deref(), Some("mm::page_alloc"));
        assert_eq!(a.on.kernel.as_deref(), Some(elf.as_path()));
        assert_eq!(a.on.board, board.name);
        assert_eq!(
            runner_args(&board, elf.clone(), &["--bench".into()]).filter,
            None
        );
        assert_eq!(runner_args(&board, elf, &["a b".into()]).filter, None);
    }

    #[test]
    fn board_listing() {
        let boards = crate::board::load_boards(&board::workspace_root()).unwrap();
        let list = board_list(&boards);
        let header: Vec<&str> = list.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(header, ["name", "arch", "kind", "description"], "{list}");
        let virt = list.lines().find(|l| l.starts_with("qemu-virt ")).unwrap();
        let cols: Vec<&str> = virt.split_whitespace().take(5).collect();
        assert_eq!(
            cols,
            ["qemu-virt", "aarch64", "qemu", "QEMU", "virt"],
            "{list}"
        );
        // Columns line up: every description starts where the header's does.
        let at = list.find("description").unwrap();
        for l in list.lines().skip(1) {
            assert!(l.len() > at && l.as_bytes()[at - 1] == b' ', "{list}");
        }
    }
}
