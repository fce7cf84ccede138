//! Finding QEMU, checking its version, and installing it from Debian 12's
//! bookworm-backports when it is missing and we may (root on bookworm).
//!
//! The decisions are pure functions over file contents so they can be unit
//! tested; only [`ensure`] and [`install`] touch the system.
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// The oldest QEMU the boards are known to work with (Debian backports).
pub const MIN_VERSION: (u32, u32) = (10, 0);

pub const BACKPORTS_FILE: &str = "/etc/apt/sources.list.d/bookworm-backports.sources";
pub const DEFAULT_DEBIAN_URI: &str = "http://deb.debian.org/debian";
pub const PACKAGES: [&str; 4] = [
    "qemu-system-arm",
    "qemu-system-x86",
    "qemu-system-data",
    "seabios",
];
const LOCK_NAME: &str = "qemu-run-install.lock";

/// Where the install lock lives: /var/lock where it exists (any root
/// process sees the same file), else the temporary directory.
fn lock_path() -> PathBuf {
    let var_lock = Path::new("/var/lock");
    let dir = if var_lock.is_dir() {
        var_lock.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    dir.join(LOCK_NAME)
}

/// `(major, minor, patch)` from `qemu-system-x --version` output, e.g.
/// "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)".
pub fn parse_version(text: &str) -> Option<(u32, u32, u32)> {
    let rest = &text[text.find("version ")? + "version ".len()..];
    let v = rest
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()?;
    let mut parts = v.split('.').map(|p| p.parse::<u32>());
    let major = parts.next()?.ok()?;
    let minor = parts.next()?.ok()?;
    let patch = parts.next().and_then(|p| p.ok()).unwrap_or(0);
    Some((major, minor, patch))
}

pub fn new_enough(v: (u32, u32, u32)) -> bool {
    (v.0, v.1) >= MIN_VERSION
}

/// Where to look for `name`: `QEMU_DIR` alone when it is set, else PATH.
/// `which` decides what counts: a regular file we may execute.
pub fn find(name: &str, qemu_dir: Option<&OsStr>, path: Option<&OsStr>) -> Option<PathBuf> {
    let query = which::WhichConfig::new();
    let query = match qemu_dir {
        // One directory, whatever its name holds (a `:` too).
        Some(d) => query.binary_name(Path::new(d).join(name).into_os_string()),
        None => query
            .binary_name(name.into())
            .custom_path_list(path?.to_owned()),
    };
    query.first_result().ok()
}

/// Why the QEMU we have will not do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing,
    TooOld(PathBuf, String),
    Unusable(PathBuf, String),
}

impl Problem {
    fn describe(&self, name: &str, qemu_dir: Option<&OsStr>) -> String {
        match self {
            Problem::Missing => match qemu_dir {
                Some(d) => format!("{name} not found in QEMU_DIR={}", Path::new(d).display()),
                None => format!("{name} not found on PATH"),
            },
            Problem::TooOld(p, v) => format!(
                "{} is version {v}, older than {}.{}",
                p.display(),
                MIN_VERSION.0,
                MIN_VERSION.1
            ),
            Problem::Unusable(p, e) => format!("{}: {e}", p.display()),
        }
    }
}

/// Finds `name` and checks its version.
pub fn check(name: &str) -> std::result::Result<PathBuf, Problem> {
    let dir = std::env::var_os("QEMU_DIR").filter(|d| !d.is_empty());
    let Some(bin) = find(name, dir.as_deref(), std::env::var_os("PATH").as_deref()) else {
        return Err(Problem::Missing);
    };
    let out = Command::new(&bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Problem::Unusable(bin.clone(), e.to_string()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    match parse_version(&text) {
        Some(v) if new_enough(v) => Ok(bin),
        Some(v) => Err(Problem::TooOld(bin, format!("{}.{}.{}", v.0, v.1, v.2))),
        None => Err(Problem::Unusable(
            bin,
            format!(
                "cannot read the version from `--version`: {:?}",
                text.lines().next().unwrap_or("")
            ),
        )),
    }
}

/// Whether the QEMU at `bin` offers device `name` (`-device help`).
pub fn has_device(bin: &Path, name: &str) -> bool {
    Command::new(bin)
        .args(["-machine", "none", "-device", "help"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("name \"{name}\"")))
}

/// The QEMU binary `name` (>= 10.0), installing it when allowed.
pub fn ensure(name: &str) -> Result<PathBuf> {
    let problem = match check(name) {
        Ok(bin) => return Ok(bin),
        Err(p) => p,
    };
    let qemu_dir = std::env::var_os("QEMU_DIR").filter(|d| !d.is_empty());
    let what = problem.describe(name, qemu_dir.as_deref());
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let bookworm = codename(&os_release).as_deref() == Some("bookworm");
    let root = effective_uid(&status) == Some(0);
    // With QEMU_DIR the user chose a build of their own; apt would not put
    // anything there.
    let lead = if qemu_dir.is_some() {
        Some("QEMU_DIR is set, so qemu-run does not install QEMU; fix or unset it, or install QEMU as root with:")
    } else if !bookworm {
        Some("install QEMU >= 10.0 with your system's packages, or on Debian 12 run as root:")
    } else if !root {
        Some("qemu-run installs QEMU by itself only when run as root; as root, run (or prefix with sudo):")
    } else {
        None
    };
    if let Some(lead) = lead {
        bail!("{what}\n{}", manual_instructions(lead));
    }
    install(name)?;
    check(name).map_err(|p| {
        anyhow!(
            "after installing QEMU from bookworm-backports: {}",
            p.describe(name, None)
        )
    })
}

/// `VERSION_CODENAME` from /etc/os-release.
pub fn codename(os_release: &str) -> Option<String> {
    os_release.lines().find_map(|l| {
        let v = l.strip_prefix("VERSION_CODENAME=")?;
        Some(v.trim().trim_matches(['"', '\'']).to_string())
    })
}

/// The effective uid from /proc/self/status (`Uid: real effective …`).
pub fn effective_uid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Whether any apt source already enables bookworm-backports.
pub fn has_backports(sources: &[String]) -> bool {
    sources.iter().any(|text| {
        text.lines().any(|l| {
            let l = l.trim();
            !l.starts_with('#') && l.split_whitespace().any(|w| w == "bookworm-backports")
        })
    })
}

/// The first URI of the deb822 stanza whose `Suites:` include `bookworm`.
pub fn debian_uri_deb822(text: &str) -> Option<String> {
    for stanza in text.split("\n\n") {
        let mut uris = None;
        let mut suites = None;
        let mut enabled = true;
        for line in stanza.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if line.starts_with('#') {
                continue;
            }
            match key.trim().to_ascii_lowercase().as_str() {
                "uris" => uris = Some(value.trim()),
                "suites" => suites = Some(value.trim()),
                "enabled" => enabled = !value.trim().eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if enabled && suites.is_some_and(|s| s.split_whitespace().any(|s| s == "bookworm")) {
            if let Some(u) = uris.and_then(|u| u.split_whitespace().next()) {
                return Some(u.to_string());
            }
        }
    }
    None
}

/// The URI of a one-line `deb [options] URI bookworm main …` entry.
pub fn debian_uri_list(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let mut words = l.trim().strip_prefix("deb ")?.split_whitespace().peekable();
        if words.peek()?.starts_with('[') {
            // Options may span several words: `[arch=amd64 signed-by=…]`.
            for w in words.by_ref() {
                if w.ends_with(']') {
                    break;
                }
            }
        }
        let uri = words.next()?;
        (words.next()? == "bookworm").then(|| uri.to_string())
    })
}

/// The backports entry, pointing at the same mirror as the existing
/// Debian entry.
pub fn backports_sources(uri: &str) -> String {
    format!(
        "Types: deb deb-src\nURIs: {uri}\nSuites: bookworm-backports\nComponents: main\n\
         Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
    )
}

/// The mirror for backports: from debian.sources (deb822) first, then
/// sources.list, else Debian's default.
pub fn choose_uri(debian_sources: &str, sources_list: &str) -> String {
    debian_uri_deb822(debian_sources)
        .or_else(|| debian_uri_list(sources_list))
        .unwrap_or_else(|| DEFAULT_DEBIAN_URI.to_string())
}

pub fn install_command() -> Vec<String> {
    let mut c: Vec<String> = ["apt-get", "install", "-y", "-t", "bookworm-backports"]
        .map(String::from)
        .into();
    c.extend(PACKAGES.map(String::from));
    c
}

/// What a person should run when we may not install ourselves.
pub fn manual_instructions(lead: &str) -> String {
    let sources = backports_sources(DEFAULT_DEBIAN_URI);
    let mut s = format!("{lead}\n");
    s.push_str(&format!(
        "  printf '{}' > {BACKPORTS_FILE}\n  apt-get update\n  DEBIAN_FRONTEND=noninteractive {}\n",
        sources.replace('\n', "\\n"),
        install_command().join(" ")
    ));
    s.push_str("or set QEMU_DIR to a directory holding a QEMU >= 10.0 build");
    s
}

/// Every apt source file's text (for [`has_backports`]).
fn read_sources() -> Vec<String> {
    let mut texts = vec![fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        for e in dir.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "list" || x == "sources") {
                texts.push(fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
    texts
}

fn run_root(cmd: &[String]) -> Result<()> {
    // apt's chatter goes to stderr: our stdout is the console and the summary.
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(crate::stderr_stdio()?)
        .status()
        .with_context(|| cmd[0].clone())?;
    if !status.success() {
        bail!("`{}` failed ({status})", cmd.join(" "));
    }
    Ok(())
}

/// Adds bookworm-backports (binary and source) on the mirror the Debian
/// entry uses, unless some apt source has it already.
pub fn add_backports_if_missing() -> Result<()> {
    if !has_backports(&read_sources()) {
        let debian =
            fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
        let list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
        let text = backports_sources(&choose_uri(&debian, &list));
        eprintln!("qemu-run: adding {BACKPORTS_FILE}");
        fs::write(BACKPORTS_FILE, text).context(BACKPORTS_FILE)?;
    }
    Ok(())
}

/// Installs QEMU from bookworm-backports (root on Debian 12 only). A lock
/// file keeps two runs (parallel tests, say) from running apt at once; the
/// second one finds QEMU installed when it gets the lock.
pub fn install(name: &str) -> Result<()> {
    let _lock = install_lock()?;
    if check(name).is_ok() {
        return Ok(());
    }
    add_backports_if_missing()?;
    let update = vec!["apt-get".to_string(), "update".to_string()];
    let install = install_command();
    eprintln!(
        "qemu-run: installing QEMU from bookworm-backports: {} && DEBIAN_FRONTEND=noninteractive {}",
        update.join(" "),
        install.join(" ")
    );
    run_root(&update)?;
    run_root(&install)?;
    Ok(())
}

/// Held while one qemu-run runs apt (QEMU, firmware, any package): a
/// second run waits, then finds the package installed. Released on drop.
pub fn install_lock() -> Result<fs::File> {
    Ok(exclusive_lock(&lock_path(), "installing packages")?.0)
}

/// An exclusive lock on `path` (created if missing), and whether another
/// qemu-run held it first (we said so, and waited: `doing` is what it did).
pub fn exclusive_lock(path: &Path, doing: &str) -> Result<(fs::File, bool)> {
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| path.display().to_string())?;
    if lock.try_lock().is_ok() {
        return Ok((lock, false));
    }
    eprintln!("qemu-run: waiting for another qemu-run {doing}");
    lock.lock().with_context(|| path.display().to_string())?;
    Ok((lock, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        let debian = "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright (c) 2003-2025";
        assert_eq!(parse_version(debian), Some((10, 0, 2)));
        assert_eq!(
            parse_version("QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)"),
            Some((7, 2, 15))
        );
        assert_eq!(
            parse_version("QEMU emulator version 10.2.2"),
            Some((10, 2, 2))
        );
        assert_eq!(parse_version("QEMU emulator version 9.1"), Some((9, 1, 0)));
        assert_eq!(parse_version("something else"), None);
        assert!(new_enough((10, 0, 0)));
        assert!(new_enough((11, 0, 0)));
        assert!(!new_enough((9, 2, 3)));
    }

    #[test]
    fn finding_the_binary() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let bin = dir.join("qemu-fake");
        fs::write(&bin, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let path = std::env::join_paths([Path::new("/nonexistent"), dir]).unwrap();
        assert_eq!(find("qemu-fake", None, Some(&path)), Some(bin.clone()));
        assert_eq!(
            find("qemu-fake", Some(dir.as_os_str()), None),
            Some(bin.clone())
        );
        // QEMU_DIR wins over PATH, even when it lacks the binary.
        assert_eq!(
            find("qemu-fake", Some("/nonexistent".as_ref()), Some(&path)),
            None
        );
        // QEMU_DIR is one directory, not a list.
        let odd = dir.join("a:b");
        fs::create_dir_all(&odd).unwrap();
        fs::copy(&bin, odd.join("qemu-fake")).unwrap();
        assert_eq!(
            find("qemu-fake", Some(odd.as_os_str()), None),
            Some(odd.join("qemu-fake"))
        );
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(find("qemu-fake", None, Some(&path)), None);
    }

    #[test]
    fn system_facts() {
        let os = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(codename(os).as_deref(), Some("bookworm"));
        assert_eq!(codename("ID=arch\n"), None);
        let status = "Name:\tcat\nUid:\t1000\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
        assert_eq!(effective_uid(status), Some(0));
        assert_eq!(effective_uid("Uid:\t0\t1000\t1000\t1000\n"), Some(1000));
        assert_eq!(effective_uid(""), None);
    }

    const DEBIAN_SOURCES: &str = "\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://security.example/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

    #[test]
    fn uri_from_deb822() {
        assert_eq!(
            debian_uri_deb822(DEBIAN_SOURCES).as_deref(),
            Some("http://mirror.example/debian")
        );
        // The security entry alone does not count.
        let security = DEBIAN_SOURCES.split("\n\n").nth(1).unwrap();
        assert_eq!(debian_uri_deb822(security), None);
        let disabled = "Enabled: no\nURIs: http://a/\nSuites: bookworm\n\nURIs: http://b/ http://c/\nSuites: bookworm\n";
        assert_eq!(debian_uri_deb822(disabled).as_deref(), Some("http://b/"));
    }

    #[test]
    fn uri_from_sources_list() {
        let list = "# deb http://old/ bookworm main\n\
                    deb http://security.debian.org/debian-security bookworm-security main\n\
                    deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main contrib\n";
        assert_eq!(
            debian_uri_list(list).as_deref(),
            Some("http://mirror.example/debian")
        );
        assert_eq!(
            debian_uri_list("deb http://m/debian bookworm main").as_deref(),
            Some("http://m/debian")
        );
        assert_eq!(
            debian_uri_list("deb-src http://m/debian bookworm main"),
            None
        );
    }

    #[test]
    fn uri_choice_and_sources_text() {
        assert_eq!(
            choose_uri(DEBIAN_SOURCES, ""),
            "http://mirror.example/debian"
        );
        assert_eq!(choose_uri("", "deb http://l/ bookworm main"), "http://l/");
        assert_eq!(choose_uri("", ""), DEFAULT_DEBIAN_URI);
        assert_eq!(
            backports_sources("http://m/debian"),
            "Types: deb deb-src\nURIs: http://m/debian\nSuites: bookworm-backports\n\
             Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n"
        );
    }

    #[test]
    fn existing_backports_are_detected() {
        assert!(!has_backports(&[DEBIAN_SOURCES.to_string()]));
        assert!(has_backports(&[backports_sources("http://m/")]));
        assert!(has_backports(&[
            "deb http://m/debian bookworm-backports main".to_string()
        ]));
        assert!(!has_backports(&[
            "# deb http://m/debian bookworm-backports main".to_string()
        ]));
    }

    #[test]
    fn instructions_name_the_commands() {
        let s = manual_instructions("as root:");
        assert!(s.starts_with("as root:\n  printf 'Types: deb deb-src\\nURIs: "));
        assert!(s.contains("apt-get update"));
        assert!(s.contains(
            "DEBIAN_FRONTEND=noninteractive apt-get install -y -t bookworm-backports qemu-system-arm qemu-system-x86 qemu-system-data seabios"
        ));
        assert!(s.contains(BACKPORTS_FILE));
    }
}
