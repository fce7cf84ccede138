//! Building the kernel for a board.
//!
//! The kernel gets its own target directory (`target/kernel`) so that this
//! nested cargo never waits for the lock of an outer `cargo run`/`cargo test`
//! that started us.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::board::Board;
use anyhow::{bail, Context, Result};

pub fn target_dir(root: &Path) -> PathBuf {
    root.join("target").join("kernel")
}

/// Where `cargo build -p image --release --target T` leaves the image.
pub fn kernel_image(root: &Path, target: &str) -> PathBuf {
    target_dir(root).join(target).join("release").join("kernel")
}

pub fn build_command(root: &Path, target: &str) -> Vec<String> {
    vec![
        "cargo".into(),
        "build".into(),
        "-p".into(),
        "image".into(),
        "--release".into(),
        "--target".into(),
        target.into(),
        "--target-dir".into(),
        target_dir(root).to_string_lossy().into_owned(),
    ]
}

/// The UEFI target of `arch` (the loader's, `kernel/efi`).
pub fn uefi_target(arch: &str) -> String {
    format!("{arch}-unknown-uefi")
}

/// Where `cargo build -p efi --release --target T` leaves the loader.
pub fn loader_image(root: &Path, arch: &str) -> PathBuf {
    target_dir(root)
        .join(uefi_target(arch))
        .join("release")
        .join("loader.efi")
}

/// The loader's build; the kernel it embeds is named in `IOMMU_EFI_KERNEL`.
pub fn loader_build_command(root: &Path, arch: &str) -> Vec<String> {
    vec![
        "cargo".into(),
        "build".into(),
        "-p".into(),
        "efi".into(),
        "--release".into(),
        "--target".into(),
        uefi_target(arch),
        "--target-dir".into(),
        target_dir(root).to_string_lossy().into_owned(),
    ]
}

/// What the loader embeds: the x86_64 kernel ELF (the loader moves it), or
/// on arm64 the `Image` beside the ELF (entered at its first byte).
pub fn loader_payload(kernel_elf: &Path, arch: &str) -> PathBuf {
    match arch {
        "aarch64" => kernel_elf.with_file_name("Image"),
        _ => kernel_elf.to_path_buf(),
    }
}

/// Whether `rustup target list --installed` output lists `target`.
pub fn target_listed(installed: &str, target: &str) -> bool {
    installed.lines().any(|l| l.trim() == target)
}

/// Makes sure the toolchain from rust-toolchain.toml has `target`: if not,
/// `rustup toolchain install` in the root installs what that file lists.
/// Without rustup there is nothing to do; cargo will say what is missing.
pub fn ensure_target(root: &Path, target: &str) -> Result<()> {
    let Ok(out) = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    else {
        return Ok(());
    };
    if out.status.success() && target_listed(&String::from_utf8_lossy(&out.stdout), target) {
        return Ok(());
    }
    eprintln!(
        "qemu-run: target {target} is not installed; installing the toolchain from \
         rust-toolchain.toml: rustup toolchain install (in {})",
        root.display()
    );
    // Under `cargo test` rustup exports RUSTUP_TOOLCHAIN, which would make
    // it install the bare toolchain and ignore the file's targets.
    let status = Command::new("rustup")
        .args(["toolchain", "install"])
        .current_dir(root)
        .env_remove("RUSTUP_TOOLCHAIN")
        .stdin(Stdio::null())
        .stdout(crate::stderr_stdio()?)
        .status()
        .context("rustup")?;
    if !status.success() {
        bail!("`rustup toolchain install` failed ({status})");
    }
    Ok(())
}

/// Builds the kernel for `board`; cargo's output streams to our stderr.
pub fn build_kernel(root: &Path, board: &Board) -> Result<PathBuf> {
    ensure_target(root, &board.target)?;
    let cmd = build_command(root, &board.target);
    eprintln!(
        "qemu-run: {}: building the kernel: {}",
        board.name,
        cmd.join(" ")
    );
    let what = format!("the kernel for {} ({})", board.name, board.target);
    let image = kernel_image(root, &board.target);
    run_cargo(root, &cmd, &[], &what, &image)?;
    if board.boot == "uefi" {
        return build_loader(root, board, &image);
    }
    Ok(image)
}

/// Runs the cargo build `cmd` with `env` added (cargo's output streams to
/// our stderr) and checks that it left `out` behind.
fn run_cargo(
    root: &Path,
    cmd: &[String],
    env: &[(&str, &std::ffi::OsStr)],
    what: &str,
    out: &Path,
) -> Result<()> {
    let status = Command::new(&cmd[0])
        .args(&cmd[1..])
        .current_dir(root)
        // Our own build's settings must not leak into the kernel's.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(crate::stderr_stdio()?)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("building {what} failed ({status})");
    }
    if !out.is_file() {
        bail!("cargo built {what} but {} is not there", out.display());
    }
    Ok(())
}

/// Builds `loader.efi` around the kernel just built, for a board that
/// boots through UEFI firmware.
pub fn build_loader(root: &Path, board: &Board, kernel_elf: &Path) -> Result<PathBuf> {
    ensure_target(root, &uefi_target(&board.arch))?;
    if board.arch == "aarch64" {
        // The loader enters the Image at its first byte: made from the ELF.
        crate::arm64::write_beside(kernel_elf)?;
    }
    let payload = loader_payload(kernel_elf, &board.arch);
    if !payload.is_file() {
        bail!(
            "{}: the UEFI loader embeds {}, which is not there",
            board.name,
            payload.display()
        );
    }
    let cmd = loader_build_command(root, &board.arch);
    eprintln!(
        "qemu-run: {}: building the UEFI loader: IOMMU_EFI_KERNEL={} {}",
        board.name,
        payload.display(),
        cmd.join(" ")
    );
    let what = format!("the UEFI loader for {}", board.name);
    let loader = loader_image(root, &board.arch);
    run_cargo(
        root,
        &cmd,
        &[("IOMMU_EFI_KERNEL", payload.as_os_str())],
        &what,
        &loader,
    )?;
    Ok(loader)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_command() {
        let root = Path::new("/w");
        assert_eq!(
            kernel_image(root, "aarch64-unknown-none"),
            Path::new("/w/target/kernel/aarch64-unknown-none/release/kernel")
        );
        assert_eq!(
            build_command(root, "x86_64-unknown-none").join(" "),
            "cargo build -p image --release --target x86_64-unknown-none --target-dir /w/target/kernel"
        );
    }

    #[test]
    fn loader_paths_and_command() {
        let root = Path::new("/w");
        assert_eq!(
            loader_image(root, "x86_64"),
            Path::new("/w/target/kernel/x86_64-unknown-uefi/release/loader.efi")
        );
        assert_eq!(
            loader_build_command(root, "aarch64").join(" "),
            "cargo build -p efi --release --target aarch64-unknown-uefi --target-dir /w/target/kernel"
        );
        let elf = kernel_image(root, "x86_64-unknown-none");
        assert_eq!(loader_payload(&elf, "x86_64"), elf);
        assert_eq!(
            loader_payload(&kernel_image(root, "aarch64-unknown-none"), "aarch64"),
            Path::new("/w/target/kernel/aarch64-unknown-none/release/Image")
        );
    }

    #[test]
    fn installed_targets() {
        let out = "aarch64-unknown-none\nx86_64-unknown-linux-gnu\n";
        assert!(target_listed(out, "aarch64-unknown-none"));
        assert!(!target_listed(out, "x86_64-unknown-none"));
        assert!(!target_listed("", "x86_64-unknown-none"));
    }
}
