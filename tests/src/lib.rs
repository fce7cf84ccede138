//! Helpers for the integration tests in `tests/`: build and run the real
//! `qemu-run` binary, and make small kernel images.
//!
//! Why a nested cargo and not `env!("CARGO_BIN_EXE_qemu-run")`: that
//! variable exists only for tests inside the `qemu-run` package, and the
//! boot tests must not live there — `cargo test -p qemu-run` is the runner's
//! own fast unit-test suite and must pass without a kernel. So this crate
//! builds the runner once with `cargo build -p qemu-run --release` into its
//! own target directory (`target/tests-runner`): the outer `cargo test`
//! holds the lock on `target/`, and a second target directory never waits
//! for it. The runner in turn builds the kernel in `target/kernel`, and,
//! once per machine, the patched QEMU the boards use (in the user's cache).
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// The workspace root (this crate is `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// Scratch space for the tests, inside the workspace's target directory.
pub fn scratch_dir() -> PathBuf {
    let dir = workspace_root()
        .join("target")
        .join("tests-runner")
        .join("scratch");
    std::fs::create_dir_all(&dir).expect("create the scratch directory");
    dir
}

/// The `qemu-run` binary, built on first use.
pub fn qemu_run_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = workspace_root();
        let target_dir = root.join("target").join("tests-runner");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-q", "-p", "qemu-run", "--release", "--target-dir"])
            .arg(&target_dir)
            .current_dir(&root)
            .env_remove("CARGO_TARGET_DIR")
            .stdin(Stdio::null())
            .status()
            .expect("run cargo to build qemu-run");
        assert!(status.success(), "building qemu-run failed: {status}");
        let bin = target_dir.join("release").join("qemu-run");
        // The boards run on the patched QEMU: build it once, up front, so no
        // test's timing includes the build (and parallel tests do not queue
        // on its lock). Its progress shows on stderr.
        let status = Command::new(&bin)
            .args(["qemu", "build", "--if-missing"])
            .current_dir(&root)
            .stdin(Stdio::null())
            .status()
            .expect("run qemu-run qemu build");
        assert!(
            status.success(),
            "building the patched QEMU failed ({status}); its output is above"
        );
        bin
    })
}

/// Boots one QEMU at a time: the boards run their CPUs under TCG, and two
/// guests sharing a small CI machine make timing tests flaky.
pub fn qemu_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// What one `qemu-run` invocation did.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Both streams, for assertions and for showing on failure, between
    /// two copies of the digest: CI shows only the head and the tail of a
    /// long failure, and what failed must be in both.
    pub fn text(&self) -> String {
        let digest = self.digest();
        format!(
            "--- what failed\n{digest}--- stdout\n{}--- stderr\n{}--- what failed (again)\n{digest}",
            self.stdout, self.stderr
        )
    }

    /// The lines that say what failed: `not ok` lines with their YAML
    /// diagnostics, `Bail out!`, the runner's verdicts that are not PASS,
    /// and a stress run's tally.
    pub fn digest(&self) -> String {
        let mut out = String::new();
        let mut in_yaml = false;
        let mut in_tally = false;
        for line in self.stdout.lines().chain(self.stderr.lines()) {
            let keep = if line.starts_with("not ok ") {
                in_yaml = true;
                true
            } else if in_yaml && line.starts_with("  ") {
                true
            } else if line.starts_with("stress: ") {
                in_tally = true;
                true
            } else if in_tally && line.starts_with("  ") {
                true
            } else {
                in_yaml = false;
                in_tally = false;
                line.starts_with("Bail out!")
                    || (line.starts_with("qemu-run: ") && !line.contains(": PASS ("))
            };
            if keep {
                out.push_str(line);
                out.push('\n');
            }
        }
        if out.is_empty() {
            out.push_str("(no failed test named; exit status ");
            out.push_str(&format!("{:?})\n", self.code));
        }
        out
    }
}

/// Runs `qemu-run ARGS` in the workspace root; console output is captured.
pub fn qemu_run(args: &[&str]) -> Run {
    let start = Instant::now();
    let Output {
        status,
        stdout,
        stderr,
    } = Command::new(qemu_run_bin())
        .args(args)
        .current_dir(workspace_root())
        .env("IOMMU_WORKSPACE", workspace_root())
        .stdin(Stdio::null())
        .output()
        .expect("run qemu-run");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        elapsed: start.elapsed(),
    }
}

/// The rows of the summary table `qemu-run run` prints last on stdout
/// (everything before its header is the console).
pub fn summary_rows(stdout: &str) -> Vec<&str> {
    let lines: Vec<&str> = stdout.lines().collect();
    match lines
        .iter()
        .rposition(|l| l.starts_with("board ") && l.contains(" result "))
    {
        Some(i) => lines[i + 1..].to_vec(),
        None => Vec::new(),
    }
}

/// Board names, from `qemu-run boards`.
pub fn board_names() -> Vec<String> {
    let run = qemu_run(&["boards"]);
    assert_eq!(run.code, Some(0), "{}", run.text());
    // Only the QEMU boards (`--board all`): real hardware and templates
    // are listed too, with their kind in the third column.
    run.stdout
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut cols = l.split_whitespace();
            let name = cols.next()?;
            (cols.nth(1)? == "qemu").then(|| name.to_string())
        })
        .collect()
}

/// A minimal arm64 `Image` that prints nothing and sleeps forever (`wfi`
/// in a loop): the 64-byte header (code0 branches over it, 4 KiB pages,
/// placement anywhere), then the loop.
pub fn silent_arm64_image() -> Vec<u8> {
    // b +0x40 (over the header); at 0x40: wfi; b .-4
    const BRANCH_OVER_HEADER: u32 = 0x1400_0010;
    const CODE: [u32; 2] = [0xd503_207f, 0x17ff_ffff];
    let mut e = vec![0u8; 64];
    e[..4].copy_from_slice(&BRANCH_OVER_HEADER.to_le_bytes());
    e[16..24].copy_from_slice(&0x1000u64.to_le_bytes()); // image_size
    e[24..32].copy_from_slice(&0b1010u64.to_le_bytes()); // flags
    e[0x38..0x3c].copy_from_slice(b"ARM\x64");
    for insn in CODE {
        e.extend_from_slice(&insn.to_le_bytes());
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_names_failed_tests_bails_and_the_tally() {
        let run = Run {
            code: Some(1),
            stdout: "ok 1 - a\nnot ok 2 - b\n  ---\n  message: \"x\"\n  ...\nok 3 - c\n\
                     stress: 2 round(s) per board beside 2 busy host thread(s)\n  \
                     q35: b failed in 1 of 2 run(s) (round 2)\n"
                .into(),
            stderr: "qemu-run: the patched QEMU is built: /x\nqemu-run: q35#1: PASS (3 passed)\n\
                     qemu-run: q35#2: FAIL (1 failed)\n"
                .into(),
            elapsed: Duration::ZERO,
        };
        let d = run.digest();
        assert!(
            d.contains("not ok 2 - b\n  ---\n  message: \"x\"\n  ...\n"),
            "{d}"
        );
        assert!(!d.contains("ok 3 - c"), "{d}");
        assert!(d.contains("  q35: b failed in 1 of 2 run(s)"), "{d}");
        assert!(d.contains("q35#2: FAIL"), "{d}");
        assert!(!d.contains("q35#1: PASS"), "{d}");
        let t = run.text();
        assert!(t.starts_with("--- what failed\n") && t.ends_with(&d), "{t}");
    }
}
