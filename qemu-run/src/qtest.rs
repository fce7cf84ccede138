//! QEMU's own tests for our patches: the qtests that the patch series adds
//! (`tests/qtest/pasid-dma-test.c`, `tests/qtest/smmuv3-substream-test.c`,
//! `tests/qtest/intel-iommu-ats-test.c`), built in a QEMU build tree and run
//! against its `qemu-system-aarch64` or `qemu-system-x86_64`.
//!
//! A qtest program prints TAP (GLib's `--tap`); [`judge`] turns its output
//! and exit status into a verdict. Running is in [`run_all`].
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::patched::FIRMWARE_DIRS;
use crate::tap::Tap;

/// The qtest programs our patches add, and the emulator each runs against.
pub const QTESTS: [(&str, &str); 3] = [
    ("pasid-dma-test", "qemu-system-aarch64"),
    ("smmuv3-substream-test", "qemu-system-aarch64"),
    ("intel-iommu-ats-test", "qemu-system-x86_64"),
];

/// Longest a qtest program may run (each takes seconds when healthy).
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// The ninja targets that build the qtest programs.
pub fn ninja_targets() -> Vec<String> {
    QTESTS
        .iter()
        .map(|(t, _)| format!("tests/qtest/{t}"))
        .collect()
}

/// How one qtest program ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub name: String,
    pub passed: usize,
    pub failed: Vec<String>,
    pub skipped: usize,
    /// Why the program as a whole failed (exit status, bail out, plan), if
    /// it did.
    pub problem: Option<String>,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.failed.is_empty() && self.problem.is_none()
    }

    /// One line: `pasid-dma-test: 4 ok` or what failed.
    pub fn line(&self) -> String {
        let mut s = format!("{}: {} ok", self.name, self.passed);
        if self.skipped > 0 {
            s.push_str(&format!(", {} skipped", self.skipped));
        }
        if !self.failed.is_empty() {
            s.push_str(&format!(
                ", {} FAILED ({})",
                self.failed.len(),
                self.failed.join(", ")
            ));
        }
        if let Some(p) = &self.problem {
            s.push_str(&format!(", FAILED: {p}"));
        }
        s
    }
}

/// The verdict on one qtest program from its TAP output and exit status
/// (`None`: killed after the timeout). A program passes when it exits 0,
/// reports every planned test, at least one, and none failed.
pub fn judge(name: &str, stdout: &str, exit: Option<i32>) -> Outcome {
    let tap = Tap::parse(stdout);
    let counts = tap.counts();
    let failed: Vec<String> = tap.failed().map(|t| t.description.clone()).collect();
    let problem = if let Some(reason) = &tap.bail_out {
        Some(format!("bail out: {reason}"))
    } else if exit.is_none() {
        Some(format!("timed out after {} s", TIMEOUT.as_secs()))
    } else if exit != Some(0) {
        Some(format!("exit status {}", exit.unwrap_or(-1)))
    } else if tap.tests.is_empty() {
        Some("no test reported".to_string())
    } else if !tap.plan_complete() {
        Some(match &tap.plan {
            Some(p) => format!("{} of {} planned tests reported", tap.tests.len(), p.count),
            None => "no TAP plan".to_string(),
        })
    } else {
        None
    };
    Outcome {
        name: name.to_string(),
        passed: counts.passed,
        failed,
        skipped: counts.skipped,
        problem,
    }
}

/// The `BUILD-INFO` line for a run: `qtests pasid-dma-test 4 ok; ...`.
pub fn info_line(outcomes: &[Outcome]) -> String {
    let parts: Vec<String> = outcomes
        .iter()
        .map(|o| {
            if o.ok() {
                format!("{} {} ok", o.name, o.passed)
            } else {
                format!("{} FAILED", o.name)
            }
        })
        .collect();
    format!("qtests {}", parts.join("; "))
}

fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// A script that runs `emulator` with Debian's firmware directories.
/// An emulator in a build tree looks for firmware only beside itself,
/// where a build without blobs has none (q35 needs SeaBIOS); the script
/// keeps the emulator's name, from which libqtest takes the target.
pub fn firmware_wrapper(emulator: &Path) -> String {
    let dirs: Vec<String> = FIRMWARE_DIRS.iter().map(|d| format!("-L {d}")).collect();
    format!(
        "#!/bin/sh\nexec '{}' {} \"$@\"\n",
        emulator.display(),
        dirs.join(" ")
    )
}

/// Writes [`firmware_wrapper`] for `emulator` of `build_dir` into
/// `log_dir/bin` and returns its path.
fn write_wrapper(build_dir: &Path, emulator: &str, log_dir: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let bin = log_dir.join("bin");
    fs::create_dir_all(&bin).with_context(|| bin.display().to_string())?;
    let path = bin.join(emulator);
    let target = build_dir.join(emulator);
    let target = target.canonicalize().unwrap_or(target);
    fs::write(&path, firmware_wrapper(&target)).with_context(|| path.display().to_string())?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o755))
        .with_context(|| path.display().to_string())?;
    Ok(path)
}

/// Runs one qtest program from `build_dir` with a bound on its time;
/// stdout and stderr go to `log`.
fn run_one(build_dir: &Path, name: &str, emulator: &str, log: &Path) -> Result<Outcome> {
    let program = build_dir.join("tests").join("qtest").join(name);
    let err_log = log.with_extension("stderr");
    let err = fs::File::create(&err_log).with_context(|| err_log.display().to_string())?;
    let log_dir = log.parent().unwrap_or(Path::new("."));
    let qemu = write_wrapper(build_dir, emulator, log_dir)?;
    let mut child = Command::new(&program)
        .args(["--tap", "-k"])
        .current_dir(build_dir)
        .env("QTEST_QEMU_BINARY", &qemu)
        .env_remove("QTEST_QEMU_IMG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(err)
        .spawn()
        .with_context(|| format!("cannot run {}", program.display()))?;
    let mut out = child.stdout.take();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(o) = out.as_mut() {
            let _ = o.read_to_string(&mut s);
        }
        s
    });
    let start = Instant::now();
    let exit = loop {
        if let Some(status) = child.try_wait().with_context(|| name.to_string())? {
            break Some(exit_code(status));
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = reader.join().unwrap_or_default();
    fs::write(log, &stdout).with_context(|| log.display().to_string())?;
    Ok(judge(name, &stdout, exit))
}

/// Runs every qtest program in [`QTESTS`], built in `build_dir`, writing
/// their output to `log_dir`; prints one line each.
pub fn run_all(build_dir: &Path, log_dir: &Path) -> Result<Vec<Outcome>> {
    fs::create_dir_all(log_dir).with_context(|| log_dir.display().to_string())?;
    let mut outcomes = Vec::new();
    for (name, emulator) in QTESTS {
        let log = log_dir.join(format!("qtest-{name}.tap"));
        let o = run_one(build_dir, name, emulator, &log)?;
        eprintln!(
            "qemu-run: qtest {}{}",
            o.line(),
            if o.ok() {
                String::new()
            } else {
                format!(
                    " (output: {}, {})",
                    log.display(),
                    log.with_extension("stderr").display()
                )
            }
        );
        outcomes.push(o);
    }
    Ok(outcomes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GLIB_PASS: &str = "TAP version 13\n\
        # random seed: R02S1234\n\
        1..3\n\
        # Start of pasid-dma tests\n\
        ok 1 /pasid-dma/identity\n\
        ok 2 /pasid-dma/operations\n\
        ok 3 /pasid-dma/statuses # SKIP no device\n\
        # End of pasid-dma tests\n";

    #[test]
    fn the_wrapper_adds_the_firmware_dirs_and_passes_the_arguments() {
        let w = firmware_wrapper(Path::new("/b/qemu-system-x86_64"));
        assert_eq!(
            w,
            "#!/bin/sh\nexec '/b/qemu-system-x86_64' -L /usr/share/qemu \
             -L /usr/share/seabios -L /usr/lib/ipxe/qemu \"$@\"\n"
        );
    }

    #[test]
    fn a_clean_glib_run_passes() {
        let o = judge("pasid-dma-test", GLIB_PASS, Some(0));
        assert!(o.ok(), "{o:?}");
        assert_eq!((o.passed, o.skipped), (2, 1));
        assert_eq!(o.line(), "pasid-dma-test: 2 ok, 1 skipped");
    }

    #[test]
    fn a_failed_point_or_a_bad_exit_fails() {
        let text = "TAP version 13\n1..2\nok 1 /a\nnot ok 2 /b\n";
        let o = judge("t", text, Some(1));
        assert!(!o.ok());
        assert_eq!(o.failed, ["/b"]);
        assert_eq!(o.line(), "t: 1 ok, 1 FAILED (/b), FAILED: exit status 1");

        let o = judge("t", GLIB_PASS, Some(134));
        assert_eq!(o.problem.as_deref(), Some("exit status 134"));
    }

    #[test]
    fn an_assertion_bails_out() {
        // g_assert in a -k run prints "Bail out!" with the message and aborts
        let text = "TAP version 13\n1..4\nok 1 /a\n\
            Bail out! ERROR:../tests/qtest/x.c:10:f: assertion failed (a == b)\n";
        let o = judge("t", text, Some(134));
        assert!(!o.ok());
        assert_eq!(
            o.problem.as_deref(),
            Some("bail out: ERROR:../tests/qtest/x.c:10:f: assertion failed (a == b)")
        );
    }

    #[test]
    fn missing_tests_timeouts_and_silence_fail() {
        let o = judge("t", "TAP version 13\n1..3\nok 1 /a\n", Some(0));
        assert_eq!(o.problem.as_deref(), Some("1 of 3 planned tests reported"));
        let o = judge("t", "ok 1 /a\n", Some(0));
        assert_eq!(o.problem.as_deref(), Some("no TAP plan"));
        let o = judge("t", "", Some(0));
        assert_eq!(o.problem.as_deref(), Some("no test reported"));
        let o = judge("t", GLIB_PASS, None);
        assert_eq!(o.problem.as_deref(), Some("timed out after 300 s"));
    }

    #[test]
    fn build_info_names_each_program() {
        let a = judge("a-test", GLIB_PASS, Some(0));
        let b = judge("b-test", "", Some(1));
        assert_eq!(info_line(&[a, b]), "qtests a-test 2 ok; b-test FAILED");
        assert_eq!(
            ninja_targets(),
            [
                "tests/qtest/pasid-dma-test",
                "tests/qtest/smmuv3-substream-test",
                "tests/qtest/intel-iommu-ats-test"
            ]
        );
    }
}
