//! Debian packages the runner needs (firmware for the boards, the LAVA
//! schema for its job checks): found with dpkg, installed with apt-get
//! when we are root, otherwise the command to run is printed.
use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A board's firmware: the file QEMU boots and the package it comes in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Firmware {
    pub file: PathBuf,
    pub package: String,
}

/// Whether dpkg's `${Status}` says the package is installed.
pub fn is_installed_status(status: &str) -> bool {
    status.split_whitespace().last() == Some("installed")
}

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| {
            o.status.success() && is_installed_status(&String::from_utf8_lossy(&o.stdout))
        })
}

/// A name apt takes as one package and nothing else.
fn check_name(package: &str) -> Result<()> {
    let ok = package.len() >= 2
        && package.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && package
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !ok {
        bail!("{package:?} is not a Debian package name");
    }
    Ok(())
}

/// What to run to install `missing`.
pub fn install_line(missing: &[&str]) -> String {
    format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y {}",
        missing.join(" ")
    )
}

/// What [`ensure_debian_packages`] does, given which packages are
/// installed and whether we are root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// `apt-get install` these.
    Install(Vec<String>),
    /// We may not install: the message names the command to run.
    Refuse(String),
}

pub fn plan(packages: &[&str], installed: impl Fn(&str) -> bool, root: bool) -> Result<Action> {
    for p in packages {
        check_name(p)?;
    }
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    Ok(if missing.is_empty() {
        Action::Nothing
    } else if root {
        Action::Install(missing.iter().map(|p| p.to_string()).collect())
    } else {
        Action::Refuse(format!(
            "Debian package(s) {} missing; qemu-run installs packages only when run as root. \
             As root, run:\n  {}",
            missing.join(", "),
            install_line(&missing)
        ))
    })
}

/// Installs whichever of `packages` is not installed: with apt-get when we
/// are root, else an error naming the command. One install at a time (a
/// lock file), and a package another run installed meanwhile is not
/// installed again.
pub fn ensure_debian_packages(packages: &[&str]) -> Result<()> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| crate::qemu::effective_uid(&s))
        == Some(0);
    match plan(packages, installed, root)? {
        Action::Nothing => return Ok(()),
        Action::Refuse(why) => bail!("{why}"),
        Action::Install(_) => {}
    }
    let _lock = crate::qemu::install_lock()?;
    let Action::Install(m) = plan(packages, installed, root)? else {
        return Ok(());
    };
    let m: Vec<&str> = m.iter().map(String::as_str).collect();
    eprintln!(
        "qemu-run: installing {}: {}",
        m.join(", "),
        install_line(&m)
    );
    apt(&["update"])?;
    let mut install = vec!["install", "-y"];
    install.extend(&m);
    apt(&install)?;
    if let Action::Install(still) = plan(packages, installed, root)? {
        bail!("apt-get installed nothing for {}", still.join(", "));
    }
    Ok(())
}

fn apt(args: &[&str]) -> Result<()> {
    // apt's chatter goes to stderr: our stdout is the console and the summary.
    let status = Command::new("apt-get")
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(crate::stderr_stdio()?)
        .status()
        .context("apt-get")?;
    if !status.success() {
        bail!("`apt-get {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The firmware file, its package installed first when the file is missing.
pub fn ensure_firmware(f: &Firmware) -> Result<PathBuf> {
    if !f.file.is_file() {
        ensure_debian_packages(&[f.package.as_str()])?;
        if !f.file.is_file() {
            bail!(
                "firmware {}: not there after installing {} (does that package provide it?)",
                f.file.display(),
                f.package
            );
        }
    }
    Ok(f.file.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dpkg_status_and_names() {
        assert!(is_installed_status("install ok installed"));
        assert!(!is_installed_status("deinstall ok config-files"));
        assert!(!is_installed_status(""));
        check_name("qemu-efi-aarch64").unwrap();
        check_name("u-boot-qemu").unwrap();
        check_name("libstdc++6").unwrap();
        for bad in ["", "-y", "a b", "Ovmf", "x;rm", "o"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            install_line(&["ovmf", "u-boot-qemu"]),
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y ovmf u-boot-qemu"
        );
    }

    #[test]
    fn missing_packages_are_installed_as_root_or_named() {
        let have = |p: &str| p == "ovmf";
        assert_eq!(plan(&["ovmf"], have, false).unwrap(), Action::Nothing);
        assert_eq!(
            plan(&["ovmf", "u-boot-qemu", "qemu-efi-aarch64"], have, true).unwrap(),
            Action::Install(vec!["u-boot-qemu".into(), "qemu-efi-aarch64".into()])
        );
        let Action::Refuse(why) = plan(&["ovmf", "u-boot-qemu"], have, false).unwrap() else {
            panic!()
        };
        assert_eq!(
            why,
            "Debian package(s) u-boot-qemu missing; qemu-run installs packages only when run \
             as root. As root, run:\n  apt-get update && DEBIAN_FRONTEND=noninteractive \
             apt-get install -y u-boot-qemu"
        );
        assert!(plan(&["-o APT::x"], have, true).is_err());
    }

    #[test]
    fn a_board_names_its_firmware() {
        let text = "name = \"b\"\ndescription = \"\"\narch = \"aarch64\"\ntarget = \"t\"\n\
                    qemu = \"qemu-system-aarch64\"\nmemory = \"1G\"\ncpus = 1\n\
                    firmware = { file = \"/usr/share/ovmf/OVMF.fd\", package = \"ovmf\" }\n";
        let b = crate::board::Board::parse(text, std::path::Path::new("b.toml")).unwrap();
        assert_eq!(
            b.firmware,
            Some(Firmware {
                file: "/usr/share/ovmf/OVMF.fd".into(),
                package: "ovmf".into()
            })
        );
        let bad = text.replace("package", "pkg");
        assert!(crate::board::Board::parse(&bad, std::path::Path::new("b.toml")).is_err());
    }

    #[test]
    fn present_packages_and_files_need_nothing() {
        // dpkg itself is installed wherever this runs (Debian).
        ensure_debian_packages(&["dpkg"]).unwrap();
        let e = ensure_debian_packages(&["bad name"]).unwrap_err();
        assert!(e.to_string().contains("not a Debian package name"), "{e}");
        let f = Firmware {
            file: "/bin/sh".into(),
            package: "nonexistent-package-name".into(),
        };
        assert_eq!(ensure_firmware(&f).unwrap(), PathBuf::from("/bin/sh"));
    }
}
