//! The LAVA jobs in `qemu-run/lava/` are valid LAVA jobs (the schema of
//! Debian's `lava-common`, strict: unknown keys refused) and their test
//! monitors turn our TAP lines into LAVA results: `ok` a pass, `not ok` a
//! failure, `# SKIP` a skip; nothing after the end line counts.
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian's interpreter: lava-common is installed for it, not for a
/// pyenv or venv python earlier on PATH.
const PYTHON: &str = "/usr/bin/python3";

/// Validates the job (argv[1]) with lava-common 2023.01's
/// `lava_common.schemas.validate`, then runs each monitor over the console
/// (argv[2]) as LAVA's monitor does (from the start string to the end
/// pattern) and prints `case result` per match.
const CHECK: &str = r#"
import re, sys, yaml
from lava_common.schemas import validate
job = yaml.safe_load(open(sys.argv[1]))
validate(job, strict=True)
console = open(sys.argv[2]).read()
for action in job["actions"]:
    for m in action.get("test", {}).get("monitors", []):
        text = console[console.index(m["start"]) + len(m["start"]):]
        end = re.search(m["end"], text)
        text = text[: end.start()] if end else text
        for r in re.finditer(m["pattern"], text):
            g = r.groupdict()
            print(g["test_case_id"], m.get("fixupdict", {}).get(g["result"], g["result"]))
"#;

const CONSOLE: &str = "[    0.03] INFO  run: command line: \"\"\r\n\
TAP version 14\r\n\
1..4\r\n\
ok 1 - mm::page_alloc_round_trip\r\n\
[    0.05] INFO  smmuv3: log line between tests\r\n\
not ok 2 - smmuv3::aux_domain_isolation\r\n\
  ---\r\n\
  message: \"DMA reached the other domain\"\r\n\
  ...\r\n\
ok 3 - dma::pasid_tagged # SKIP no PASID-capable DMA master\r\n\
ok 4 - irq::timer\r\n\
# 2 passed, 1 failed, 1 skipped\r\n\
ok 5 - printed::after_the_end\r\n";

fn lava_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("lava")
}

fn jobs() -> Vec<PathBuf> {
    let mut jobs: Vec<PathBuf> = std::fs::read_dir(lava_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    jobs.sort();
    jobs
}

/// `(success, stdout, stderr)` of the check on `job`.
fn check(job: &Path, console: &Path) -> (bool, String, String) {
    qemu_run::debian::ensure_debian_packages(&["lava-common", "python3-yaml"])
        .expect("lava-common for the job schema");
    let out = Command::new(PYTHON)
        .args(["-c", CHECK])
        .arg(job)
        .arg(console)
        .output()
        .expect("run python3");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn lava_jobs_are_valid_and_read_our_tap() {
    let jobs = jobs();
    let names: Vec<_> = jobs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["uboot.yaml", "uefi.yaml"]);
    let tmp = tempfile::tempdir().unwrap();
    let console = tmp.path().join("console.log");
    std::fs::write(&console, CONSOLE).unwrap();
    for job in &jobs {
        let (ok, stdout, stderr) = check(job, &console);
        assert!(ok, "{}: {stderr}", job.display());
        assert_eq!(
            stdout,
            "mm::page_alloc_round_trip pass\n\
             smmuv3::aux_domain_isolation fail\n\
             dma::pasid_tagged skip\n\
             irq::timer pass\n",
            "{}",
            job.display()
        );
    }
}

#[test]
fn a_broken_job_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let console = tmp.path().join("console.log");
    std::fs::write(&console, CONSOLE).unwrap();
    let good = std::fs::read_to_string(lava_dir().join("uboot.yaml")).unwrap();
    for (what, broken) in [
        ("no visibility", good.replace("visibility: public\n", "")),
        (
            "a misspelt boot method",
            good.replace("method: u-boot", "method: uboot"),
        ),
        (
            "an unknown key",
            good.replace("priority: medium", "priority: medium\nflavour: x"),
        ),
        (
            "a monitor without an end",
            good.replace("      end: ", "      stop: "),
        ),
    ] {
        assert_ne!(broken, good, "{what}: the mutation changed nothing");
        let job = tmp.path().join("broken.yaml");
        std::fs::write(&job, broken).unwrap();
        let (ok, _, stderr) = check(&job, &console);
        assert!(!ok, "{what}: accepted");
        assert!(stderr.contains("Invalid"), "{what}: {stderr}");
    }
}
