//! The patched QEMU: Debian's `qemu` 1:10.2.2+ds-1 source with the patch
//! files in `qemu-run/patches/` (the pasid-dma device and the PCI hook it
//! uses), built once and cached.
//!
//! A cache entry is `<cache>/iommu-selftest/qemu/<version>-<hash>/`, where
//! the hash covers the patch files and the build recipe, so changing a
//! patch builds anew and an old entry is never mistaken for a new one. An
//! entry is built in a staging directory and renamed into place only once
//! complete (its `BUILD-INFO` file written), so a failed or interrupted
//! build is never used. A lock file keeps two builds from running at once.
//!
//! The decisions (cache key, command lines, progress parsing) are pure
//! functions and unit-tested; [`ensure`] and [`build`] run the commands.
use std::fs;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use sha2::{Digest, Sha256};

use anyhow::{bail, Context, Result};

use crate::qtest;

/// The Debian source package the patches are made for.
pub const DEBIAN_SOURCE: &str = "qemu";
pub const DEBIAN_VERSION: &str = "1:10.2.2+ds-1";
/// Upstream version, the first part of a cache entry's name.
pub const QEMU_VERSION: &str = "10.2.2";
/// What `apt-get source` fetches, with the SHA-256 we expect.
pub const SOURCE_FILES: [(&str, &str); 2] = [
    (
        "qemu_10.2.2+ds.orig.tar.xz",
        "be05230fe47a6937cd29f28f562932c8125f9c93c2a82c625198f7a4aa601dfb",
    ),
    (
        "qemu_10.2.2+ds-1.debian.tar.xz",
        "ddf75aceab4f8f77374f3cb34fc97b41514895aeb293ce8b2ddd5e072bb0f5c0",
    ),
];
pub const DSC_FILE: &str = "qemu_10.2.2+ds-1.dsc";
/// Our own source entry, added only when no configured one serves the
/// version (Debian keeps it in sid).
pub const SID_SOURCES_FILE: &str = "/etc/apt/sources.list.d/iommu-selftest-sid-src.sources";
/// Build dependencies from Debian 12 (meson comes from PyPI: QEMU 10.2
/// needs 1.5 or newer, bookworm has 1.0). The firmware the boards load
/// (SeaBIOS, QEMU's option ROMs) comes from Debian's packages.
pub const BUILD_DEPS: [&str; 17] = [
    "build-essential",
    "dpkg-dev",
    "patch",
    "ninja-build",
    "pkg-config",
    "python3-venv",
    "flex",
    "bison",
    "libglib2.0-dev",
    "libfdt-dev",
    "libpixman-1-dev",
    "zlib1g-dev",
    "libslirp-dev",
    "qemu-system-data",
    "seabios",
    "ipxe-qemu",
    "xz-utils",
];
pub const MESON: &str = "meson==1.8.3";
/// configure wants it for `make check`; Debian's source patches that out,
/// an upstream tarball does not.
pub const PYCOTAP: &str = "pycotap==1.3.1";
pub const TARGETS: [&str; 2] = ["qemu-system-aarch64", "qemu-system-x86_64"];
/// Bumped when the build recipe changes in a way that changes the result.
const RECIPE: &str = "recipe 3";
/// Where the staged install puts QEMU (it is relocatable: the binaries
/// find their data relative to themselves).
const PREFIX: &str = "/qemu";
const INFO_FILE: &str = "BUILD-INFO";

/// Where Debian's packages put the firmware QEMU loads (SeaBIOS, the
/// option ROMs).
pub const FIRMWARE_DIRS: [&str; 3] = [
    "/usr/share/qemu",
    "/usr/share/seabios",
    "/usr/lib/ipxe/qemu",
];

/// The arguments to QEMU's `configure`: the two system targets with TCG,
/// libfdt and user networking; nothing optional; firmware from Debian.
pub fn configure_args(python: &Path) -> Vec<String> {
    [
        "--target-list=aarch64-softmmu,x86_64-softmmu",
        "--without-default-features",
        "--enable-tcg",
        "--enable-fdt=system",
        "--enable-slirp",
        "--disable-docs",
        "--disable-download",
        "--disable-install-blobs",
        "--disable-werror",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("--firmwarepath={}", FIRMWARE_DIRS.join(":")),
        format!("--prefix={PREFIX}"),
        format!("--python={}", python.display()),
    ])
    .collect()
}

/// The patch files, in the order they apply (their names sort that way).
pub fn patch_files(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join("qemu-run").join("patches");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "patch"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no patch files in {}", dir.display());
    }
    Ok(files)
}

/// The hash part of a cache entry's name: the patch files (names and
/// bytes), the configure arguments and the recipe.
pub fn patch_set_hash(patches: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    h.update(RECIPE.as_bytes());
    for a in configure_args(Path::new("python3")) {
        h.update(a.as_bytes());
        h.update([0]);
    }
    for (name, bytes) in patches {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let digest = h.finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| path.display().to_string())?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| path.display().to_string())?;
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// `$XDG_CACHE_HOME`, else `$HOME/.cache`, then our directory. Not
/// `dirs::cache_dir`: it skips a relative `XDG_CACHE_HOME` and falls back to
/// the passwd entry (or `~/Library/Caches`), which would move the cache.
pub fn cache_root(xdg: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    let base = match (
        xdg.filter(|x| !x.is_empty()),
        home.filter(|h| !h.is_empty()),
    ) {
        (Some(x), _) => PathBuf::from(x),
        (None, Some(h)) => Path::new(h).join(".cache"),
        (None, None) => return None,
    };
    Some(base.join("iommu-selftest").join("qemu"))
}

/// What the runner would use.
#[derive(Debug, Clone)]
pub struct Plan {
    pub cache: PathBuf,
    pub key: String,
    pub patches: Vec<PathBuf>,
}

impl Plan {
    pub fn new(root: &Path) -> Result<Plan> {
        let cache = cache_root(
            std::env::var("XDG_CACHE_HOME").ok().as_deref(),
            std::env::var("HOME").ok().as_deref(),
        )
        .context("neither XDG_CACHE_HOME nor HOME is set: no place for the QEMU cache")?;
        let patches = patch_files(root)?;
        let mut named = Vec::new();
        for p in &patches {
            let bytes = fs::read(p).with_context(|| p.display().to_string())?;
            let name = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            named.push((name, bytes));
        }
        let key = format!("{QEMU_VERSION}-{}", patch_set_hash(&named));
        Ok(Plan {
            cache,
            key,
            patches,
        })
    }

    pub fn entry(&self) -> PathBuf {
        self.cache.join(&self.key)
    }

    pub fn binary(&self, name: &str) -> PathBuf {
        self.entry().join("bin").join(name)
    }

    /// The entry's build record, if the entry is complete.
    pub fn info(&self) -> Option<String> {
        fs::read_to_string(self.entry().join(INFO_FILE)).ok()
    }
}

/// `n` and `total` from a ninja status line (`[12/2147] Compiling …`).
pub fn ninja_progress(line: &str) -> Option<(u32, u32)> {
    let inner = line.strip_prefix('[')?.split(']').next()?;
    let (n, total) = inner.split_once('/')?;
    Some((n.trim().parse().ok()?, total.trim().parse().ok()?))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The commands a person runs where qemu-run may not (not root, or not
/// Debian 12).
pub fn manual_instructions(lead: &str, root: &Path) -> String {
    format!(
        "{lead}\n  apt-get install -y {}\n  \
         printf 'Types: deb-src\\nURIs: http://deb.debian.org/debian\\nSuites: sid\\n\
         Components: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' > {SID_SOURCES_FILE}\n  \
         apt-get update\n  \
         cargo qemu-run qemu build    # as root, from {}\n\
         or build QEMU {QEMU_VERSION} with the patches in qemu-run/patches/ yourself and set \
         QEMU_DIR to the directory holding its binaries",
        BUILD_DEPS.join(" "),
        root.display()
    )
}

/// One step of the build, run with its output captured.
struct Steps {
    log_dir: PathBuf,
    count: u32,
}

impl Steps {
    /// Steps whose logs go to `dir` (created if missing).
    fn logging_in(dir: &Path) -> Result<Steps> {
        fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        Ok(Steps {
            log_dir: dir.to_path_buf(),
            count: 0,
        })
    }

    /// Runs `cmd` in `dir`; on failure, the step, the command and the last
    /// lines of its output.
    fn run(&mut self, what: &str, cmd: &mut Command) -> Result<()> {
        self.count += 1;
        eprintln!("qemu-run: qemu build: {what}");
        let log = self.log_dir.join(format!("{:02}.log", self.count));
        let out = fs::File::create(&log).with_context(|| log.display().to_string())?;
        let err = out.try_clone().with_context(|| log.display().to_string())?;
        let shown = format!("{cmd:?}");
        let status = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .with_context(|| format!("{what}: cannot run {shown}"))?;
        check_step(what, status, &shown, &log)
    }

    /// Runs ninja, showing its progress live.
    fn ninja(&mut self, build: &Path, args: &[&str]) -> Result<()> {
        self.count += 1;
        let log = self.log_dir.join(format!("{:02}.log", self.count));
        let mut log_file = fs::File::create(&log).with_context(|| log.display().to_string())?;
        let mut cmd = Command::new("ninja");
        cmd.arg("-C").arg(build).args(args);
        let shown = format!("{cmd:?}");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {shown}"))?;
        let stderr = child.stderr.take();
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut e) = stderr {
                let _ = std::io::Read::read_to_string(&mut e, &mut s);
            }
            s
        });
        let tty = std::io::stderr().is_terminal();
        let mut shown_decile = None;
        if let Some(out) = child.stdout.take() {
            for line in BufReader::new(out).lines().map_while(|l| l.ok()) {
                let _ = writeln!(log_file, "{line}");
                if let Some((n, total)) = ninja_progress(&line) {
                    let pct = n * 100 / total.max(1);
                    if tty {
                        eprint!("\rqemu-run: qemu build: compiling {n}/{total} ({pct}%)   ");
                    } else if shown_decile != Some(pct / 10) {
                        shown_decile = Some(pct / 10);
                        eprintln!("qemu-run: qemu build: compiling {n}/{total} ({pct}%)");
                    }
                }
            }
        }
        if tty {
            eprintln!();
        }
        let status = child.wait().with_context(|| shown.clone())?;
        let err_text = err_thread.join().unwrap_or_default();
        let _ = write!(log_file, "{err_text}");
        check_step("building QEMU", status, &shown, &log)
    }
}

/// A failed step: what, the command, the last lines of its log.
fn check_step(what: &str, status: std::process::ExitStatus, shown: &str, log: &Path) -> Result<()> {
    if status.success() {
        return Ok(());
    }
    let text = fs::read_to_string(log).unwrap_or_default();
    bail!(
        "{what} failed ({status})\n  command: {shown}\n  last lines of {}:\n{}",
        log.display(),
        tail(&text, 20)
    )
}

fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    crate::qemu::effective_uid(&status) == Some(0)
}

fn is_bookworm() -> bool {
    let os = fs::read_to_string("/etc/os-release").unwrap_or_default();
    crate::qemu::codename(&os).as_deref() == Some("bookworm")
}

/// Whether apt can fetch the source version we need.
fn source_available() -> bool {
    Command::new("apt-cache")
        .args(["showsrc", DEBIAN_SOURCE])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == format!("Version: {DEBIAN_VERSION}"))
        })
}

/// The patched QEMU binary `name`, building it first when the cache has
/// no complete entry for the current patch set.
pub fn ensure(root: &Path, name: &str) -> Result<PathBuf> {
    let plan = Plan::new(root)?;
    if plan.info().is_none() {
        eprintln!(
            "qemu-run: the patched QEMU ({}) is not built yet; building it (a few minutes, once)",
            plan.key
        );
        build(root, &plan, None)?;
    }
    let bin = plan.binary(name);
    if !bin.is_file() {
        bail!(
            "{} is missing from the cache entry {}; rebuild with `cargo qemu-run qemu build`",
            name,
            plan.entry().display()
        );
    }
    Ok(bin)
}

/// Refuses to build where we cannot (not root, or not Debian 12), with
/// the commands a person can run instead.
fn check_can_build(root: &Path) -> Result<()> {
    if !is_root() || !is_bookworm() {
        let lead = if !is_bookworm() {
            "the patched QEMU is built automatically only on Debian 12; elsewhere install \
             the equivalent of these Debian packages and run:"
        } else {
            "building the patched QEMU needs root for apt; as root, run:"
        };
        bail!("{}", manual_instructions(lead, root));
    }
    Ok(())
}

/// Takes the cache's build lock, waiting for another qemu-run's build.
/// `Ok(None)`: that build made what `plan` wants meanwhile and `done_if_built`.
fn lock_cache(plan: &Plan, done_if_built: bool) -> Result<Option<fs::File>> {
    fs::create_dir_all(&plan.cache).with_context(|| plan.cache.display().to_string())?;
    let (lock, waited) = crate::qemu::exclusive_lock(&plan.cache.join(".lock"), "building QEMU")?;
    // It may have built what we want meanwhile.
    if waited && done_if_built && plan.info().is_some() {
        return Ok(None);
    }
    Ok(Some(lock))
}

/// A configured QEMU build tree with our patches applied.
struct Tree {
    build_dir: PathBuf,
    venv: PathBuf,
    /// Where the source came from, for `BUILD-INFO`.
    origin: String,
}

/// Installs the build dependencies, fetches and checks the source (Debian's
/// package or `tarball`) into `work/src`, applies the patches, and
/// configures `work/build`.
fn prepare_tree(
    plan: &Plan,
    tarball: Option<&Path>,
    work: &Path,
    steps: &mut Steps,
) -> Result<Tree> {
    // Backports first: the firmware packages should match the QEMU 10
    // the stock boards use.
    crate::qemu::add_backports_if_missing()?;
    steps.run("apt-get update", Command::new("apt-get").arg("update"))?;
    steps.run(
        "installing the build dependencies",
        Command::new("apt-get")
            .args(["install", "-y", "-t", "bookworm-backports"])
            .args(BUILD_DEPS),
    )?;

    let src = work.join("src");
    let origin = match tarball {
        Some(t) => {
            let t = fs::canonicalize(t).with_context(|| t.display().to_string())?;
            fs::create_dir_all(&src).with_context(|| src.display().to_string())?;
            steps.run(
                "unpacking the source tarball",
                Command::new("tar")
                    .arg("-xf")
                    .arg(&t)
                    .arg("-C")
                    .arg(&src)
                    .arg("--strip-components=1"),
            )?;
            // Debian's "+ds" orig tarball lacks the edk2 blobs QEMU's build
            // unpacks; one of Debian's own patches turns the unpacking off.
            let rules = fs::read_to_string(src.join("pc-bios/meson.build")).unwrap_or_default();
            let unpacks = rules.lines().any(|l| l.trim() == "if unpack_edk2_blobs");
            if unpacks && !src.join("pc-bios/edk2-aarch64-code.fd.bz2").is_file() {
                bail!(
                    "{}: no pc-bios/edk2-*.fd.bz2: this looks like Debian's +ds orig tarball, \
                     which builds only with Debian's patches applied; give an upstream \
                     qemu-{QEMU_VERSION}.tar.xz, or leave out --qemu-src to use Debian's source package",
                    t.display()
                );
            }
            format!("tarball {} (sha256 {})", t.display(), sha256_file(&t)?)
        }
        None => {
            if !source_available() {
                let list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
                let debian = fs::read_to_string("/etc/apt/sources.list.d/debian.sources")
                    .unwrap_or_default();
                let uri = crate::qemu::choose_uri(&debian, &list);
                eprintln!("qemu-run: adding {SID_SOURCES_FILE} (deb-src, sid) for {DEBIAN_SOURCE} {DEBIAN_VERSION}");
                fs::write(SID_SOURCES_FILE, sid_sources(&uri)).context(SID_SOURCES_FILE)?;
                steps.run("apt-get update", Command::new("apt-get").arg("update"))?;
            }
            steps.run(
                "downloading the source package",
                Command::new("apt-get")
                    .current_dir(work)
                    .args(["source", "--download-only"])
                    .arg(format!("{DEBIAN_SOURCE}={DEBIAN_VERSION}")),
            )?;
            eprintln!("qemu-run: qemu build: checking the source files");
            for (file, want) in SOURCE_FILES {
                let got = sha256_file(&work.join(file))?;
                if got != want {
                    bail!("{file}: SHA-256 {got}, expected {want}: not the source the patches are for");
                }
            }
            steps.run(
                "unpacking the source package",
                Command::new("dpkg-source")
                    .current_dir(work)
                    .args(["-x", DSC_FILE, "src"]),
            )?;
            format!("Debian source {DEBIAN_SOURCE} {DEBIAN_VERSION}")
        }
    };
    let version = fs::read_to_string(src.join("VERSION")).unwrap_or_default();
    if version.trim() != QEMU_VERSION {
        eprintln!(
            "qemu-run: warning: the source is QEMU {}, the patches are for {QEMU_VERSION}",
            version.trim()
        );
    }
    for p in &plan.patches {
        steps.run(
            &format!(
                "checking {}",
                p.file_name().unwrap_or_default().to_string_lossy()
            ),
            Command::new("patch")
                .current_dir(&src)
                .args(["-p1", "--forward", "--batch", "--dry-run", "-i"])
                .arg(p),
        )?;
        steps.run(
            &format!(
                "applying {}",
                p.file_name().unwrap_or_default().to_string_lossy()
            ),
            Command::new("patch")
                .current_dir(&src)
                .args(["-p1", "--forward", "--batch", "-i"])
                .arg(p),
        )?;
    }
    let venv = work.join("venv");
    steps.run(
        "creating a Python environment for meson",
        Command::new("/usr/bin/python3")
            .arg("-m")
            .arg("venv")
            .arg(&venv),
    )?;
    let python = venv.join("bin").join("python3");
    steps.run(
        &format!("installing {MESON} and {PYCOTAP} from PyPI"),
        Command::new(&python).args(["-m", "pip", "install", "-q", MESON, PYCOTAP]),
    )?;
    let build_dir = work.join("build");
    fs::create_dir_all(&build_dir).with_context(|| build_dir.display().to_string())?;
    steps.run(
        "configuring",
        Command::new(src.join("configure"))
            .current_dir(&build_dir)
            .args(configure_args(&python)),
    )?;
    Ok(Tree {
        build_dir,
        venv,
        origin,
    })
}

fn jobs() -> String {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .to_string()
}

/// Builds the qtests in `build_dir` (and the emulator they run against)
/// and runs them; the error names what failed.
fn build_and_run_qtests(build_dir: &Path, steps: &mut Steps) -> Result<Vec<qtest::Outcome>> {
    let jobs = jobs();
    let mut targets: Vec<String> = vec!["-j".into(), jobs];
    targets.extend(qtest::QTESTS.iter().map(|(_, emu)| emu.to_string()));
    targets.dedup();
    targets.extend(qtest::ninja_targets());
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    steps.ninja(build_dir, &targets)?;
    eprintln!("qemu-run: qemu build: running the qtests of our patches");
    let outcomes = qtest::run_all(build_dir, &steps.log_dir)?;
    if outcomes.iter().any(|o| !o.ok()) {
        let failed: Vec<String> = outcomes
            .iter()
            .filter(|o| !o.ok())
            .map(|o| o.line())
            .collect();
        bail!(
            "the qtests of the QEMU patches failed:\n  {}\n  logs in {}",
            failed.join("\n  "),
            steps.log_dir.display()
        );
    }
    Ok(outcomes)
}

/// Builds the cache entry for `plan` (replacing any), from Debian's source
/// package or from `tarball`. The qtests our patches add are built and run
/// too; if any fails, so does the build, and no entry is made.
pub fn build(root: &Path, plan: &Plan, tarball: Option<&Path>) -> Result<()> {
    check_can_build(root)?;
    let Some(_lock) = lock_cache(plan, tarball.is_none())? else {
        return Ok(());
    };
    let start = Instant::now();
    let work = plan.cache.join(format!(".work-{}", plan.key));
    let stage = plan.cache.join(format!(".stage-{}", plan.key));
    // We hold the lock: any work or staging directory is from a build that
    // failed or was interrupted.
    for e in fs::read_dir(&plan.cache).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(".work-") || name.starts_with(".stage-") {
            let d = e.path();
            fs::remove_dir_all(&d).with_context(|| d.display().to_string())?;
        }
    }
    let mut steps = Steps::logging_in(&work)?;
    let tree = prepare_tree(plan, tarball, &work, &mut steps)?;
    let build_dir = &tree.build_dir;
    // Only what gets installed: the default target would build QEMU's own
    // test programs too (half as much again).
    let jobs = jobs();
    let mut targets = vec!["-j", &jobs];
    targets.extend(TARGETS);
    targets.push("trace/trace-events-all");
    steps.ninja(build_dir, &targets)?;
    let outcomes = build_and_run_qtests(build_dir, &mut steps)?;
    steps.run(
        "installing into the cache",
        Command::new(tree.venv.join("bin").join("meson"))
            .args(["install", "--no-rebuild", "--strip", "-C"])
            .arg(build_dir)
            .arg("--destdir")
            .arg(&stage),
    )?;

    let installed = stage.join(PREFIX.trim_start_matches('/'));
    for t in TARGETS {
        if !installed.join("bin").join(t).is_file() {
            bail!("the build installed no {t} under {}", installed.display());
        }
    }
    let seconds = start.elapsed().as_secs();
    let info = format!(
        "key {}\nsource {}\npatches {}\n{}\nbuilt {} s\n",
        plan.key,
        tree.origin,
        plan.patches
            .iter()
            .map(|p| p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        qtest::info_line(&outcomes),
        seconds
    );
    fs::write(installed.join(INFO_FILE), info).with_context(|| installed.display().to_string())?;
    let entry = plan.entry();
    if entry.exists() {
        fs::remove_dir_all(&entry).with_context(|| entry.display().to_string())?;
    }
    fs::rename(&installed, &entry).with_context(|| entry.display().to_string())?;
    let _ = fs::remove_dir_all(&stage);
    let _ = fs::remove_dir_all(&work);
    eprintln!(
        "qemu-run: qemu build: done in {seconds} s: {}",
        entry.display()
    );
    Ok(())
}

/// Where `qemu test` keeps a fresh build tree it was asked to keep.
pub fn test_tree(plan: &Plan) -> PathBuf {
    plan.cache.join(format!("test-{}", plan.key))
}

/// `qemu test`: builds the qtests of our patches and runs them. In
/// `build_dir` (an already configured tree with the patches applied) the
/// build is incremental; otherwise a fresh tree is prepared as for the
/// cache, and removed afterwards unless `keep` (or the qtests failed).
/// Returns whether every qtest passed.
pub fn test(root: &Path, plan: &Plan, build_dir: Option<&Path>, keep: bool) -> Result<bool> {
    let outcomes = match build_dir {
        Some(dir) => {
            if !dir.join("build.ninja").is_file() {
                bail!(
                    "{}: no build.ninja: not a configured QEMU build tree",
                    dir.display()
                );
            }
            let mut steps = Steps::logging_in(&dir.join("qemu-run-qtest"))?;
            build_and_run_qtests(dir, &mut steps)
        }
        None => {
            check_can_build(root)?;
            // Held to the end: a build of the cache entry would clear the tree.
            let _lock = lock_cache(plan, false)?;
            let work = test_tree(plan);
            if work.exists() {
                fs::remove_dir_all(&work).with_context(|| work.display().to_string())?;
            }
            let mut steps = Steps::logging_in(&work)?;
            let tree = prepare_tree(plan, None, &work, &mut steps)?;
            let result = build_and_run_qtests(&tree.build_dir, &mut steps);
            if keep || result.is_err() {
                eprintln!(
                    "qemu-run: qemu test: the build tree stays in {}; rerun with \
                     --build-dir {} to rebuild incrementally",
                    work.display(),
                    tree.build_dir.display()
                );
            } else {
                let _ = fs::remove_dir_all(&work);
            }
            result
        }
    };
    match outcomes {
        Ok(o) => {
            eprintln!("qemu-run: qemu test: PASS ({})", qtest::info_line(&o));
            Ok(true)
        }
        Err(e) => {
            eprintln!("qemu-run: qemu test: FAIL: {e:#}");
            Ok(false)
        }
    }
}

/// Our deb-src entry for sid, on the mirror the machine already uses.
pub fn sid_sources(uri: &str) -> String {
    format!(
        "# Added by iommu-selftest's qemu-run: the source of {DEBIAN_SOURCE} {DEBIAN_VERSION}.\n\
         Types: deb-src\nURIs: {uri}\nSuites: sid\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_location() {
        assert_eq!(
            cache_root(Some("/x"), Some("/home/a")),
            Some(PathBuf::from("/x/iommu-selftest/qemu"))
        );
        assert_eq!(
            cache_root(Some(""), Some("/home/a")),
            Some(PathBuf::from("/home/a/.cache/iommu-selftest/qemu"))
        );
        assert_eq!(cache_root(None, None), None);
    }

    #[test]
    fn hash_follows_every_patch_byte_and_name() {
        let a = vec![("0001-a.patch".to_string(), b"one".to_vec())];
        let b = vec![("0001-a.patch".to_string(), b"onE".to_vec())];
        let c = vec![("0001-b.patch".to_string(), b"one".to_vec())];
        let h = patch_set_hash(&a);
        assert_eq!(h.len(), 12);
        assert_eq!(h, patch_set_hash(&a));
        assert_ne!(h, patch_set_hash(&b));
        assert_ne!(h, patch_set_hash(&c));
        assert_ne!(h, patch_set_hash(&[]));
    }

    #[test]
    fn the_repository_patch_set_plans() {
        let root = crate::board::workspace_root();
        let plan = Plan::new(&root).unwrap();
        assert!(plan.key.starts_with("10.2.2-"), "{}", plan.key);
        assert!(plan.patches.len() >= 4);
        let names: Vec<_> = plan
            .patches
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert!(names[0].starts_with("0001-"));
    }

    #[test]
    fn ninja_lines() {
        assert_eq!(
            ninja_progress("[12/2147] Compiling C object x.o"),
            Some((12, 2147))
        );
        assert_eq!(ninja_progress("ninja: Entering directory"), None);
        assert_eq!(ninja_progress("[a/b] x"), None);
    }

    #[test]
    fn configure_is_minimal() {
        let a = configure_args(Path::new("/v/bin/python3"));
        assert!(a.contains(&"--target-list=aarch64-softmmu,x86_64-softmmu".to_string()));
        assert!(a.contains(&"--without-default-features".to_string()));
        assert!(a.contains(&"--disable-download".to_string()));
        assert!(a.contains(&"--python=/v/bin/python3".to_string()));
    }

    #[test]
    fn instructions_and_sources() {
        let s = sid_sources("http://mirror/debian");
        assert!(s.contains("Types: deb-src\nURIs: http://mirror/debian\nSuites: sid\n"));
        let m = manual_instructions("lead:", Path::new("/src"));
        assert!(m.starts_with("lead:\n  apt-get install -y build-essential"));
        assert!(m.contains("cargo qemu-run qemu build"));
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
