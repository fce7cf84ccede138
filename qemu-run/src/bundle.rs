//! `qemu-run image`: what to copy or flash for a board, written to a
//! directory with a README.txt saying what each file is. The files are the
//! ones the board's QEMU run boots, so a run in QEMU vouches for them.
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::board::Board;

/// One output file and what it is, for README.txt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutFile {
    pub name: String,
    pub bytes: Vec<u8>,
    pub what: String,
}

/// The files for `board` booting `kernel` (the ELF, or the `Image` for
/// boards that start one) with kernel command line `cmdline`.
pub fn files_for(board: &Board, kernel: &[u8], cmdline: &str) -> Result<Vec<OutFile>> {
    let file = |name: &str, bytes: Vec<u8>, what: &str| OutFile {
        name: name.into(),
        bytes,
        what: what.into(),
    };
    let image_what = "the arm64 Image (Linux booting.rst header, position independent): load \
                      it at any 2 MiB-aligned address and enter its first byte with the MMU \
                      off, x0 = the devicetree's address (U-Boot: booti ADDR - FDT)";
    Ok(match board.boot.as_str() {
        "uboot" => {
            let mut out = vec![file("Image", kernel.to_vec(), image_what)];
            for (name, bytes) in crate::uboot::boot_files(kernel, cmdline)? {
                if name == "boot.scr" {
                    out.push(file(
                        name,
                        bytes,
                        "U-Boot script image: sets bootargs to the command line below, loads \
                         Image from virtio 0:1 at ${kernel_addr_r} and runs booti with \
                         ${fdt_addr}; U-Boot's distro boot finds it in the first FAT \
                         partition (edit the device in the script for an SD card or USB)",
                    ));
                }
            }
            let refs: Vec<(&str, &[u8])> = out
                .iter()
                .map(|f| (f.name.as_str(), f.bytes.as_slice()))
                .collect();
            let disk = crate::disk::fat_disk(&refs, crate::disk::Partition::Fat)?;
            out.push(file(
                "disk.img",
                disk,
                "a whole disk (MBR, one bootable FAT partition holding Image and boot.scr): \
                 write it to an SD card or USB stick (dd if=disk.img of=/dev/sdX bs=1M)",
            ));
            out
        }
        "image" => vec![file("Image", kernel.to_vec(), image_what)],
        // The UEFI helper adds its boot method here: the loader `.efi`
        // with the kernel embedded (and an ESP disk from `disk::fat_disk`
        // with `Partition::EfiSystem`).
        "uefi" => bail!(
            "board {}: boots through UEFI, and the .efi loader is not built by this runner yet",
            board.name
        ),
        _ => vec![file(
            "kernel.elf",
            kernel.to_vec(),
            "the kernel ELF, for a loader that takes one (QEMU -kernel; PVH on x86)",
        )],
    })
}

/// README.txt for `files`.
pub fn readme(board: &Board, files: &[OutFile], cmdline: &str) -> String {
    let mut r = String::new();
    let _ = writeln!(r, "IOMMU self-test kernel for board {}", board.name);
    let _ = writeln!(r, "{}\n", board.description);
    let _ = writeln!(r, "Files:");
    for f in files {
        let _ = writeln!(r, "  {} ({} bytes): {}", f.name, f.bytes.len(), f.what);
    }
    let _ = writeln!(
        r,
        "\nKernel command line (built into boot.scr where there is one):"
    );
    let _ = writeln!(r, "  {cmdline}");
    let _ = writeln!(
        r,
        "\nThe verdict is the TAP stream on the board's console: `qemu-run watch` \
         judges it, or read it by eye (`1..N`, then one `ok`/`not ok` line per test)."
    );
    r
}

/// Writes `files` and README.txt into `dir` (created if missing).
pub fn write(dir: &Path, board: &Board, files: &[OutFile], cmdline: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    for f in files {
        let p = dir.join(&f.name);
        std::fs::write(&p, &f.bytes).with_context(|| p.display().to_string())?;
    }
    let p = dir.join("README.txt");
    std::fs::write(&p, readme(board, files, cmdline)).with_context(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(boot: &str) -> Board {
        let text = format!(
            "name = \"b\"\ndescription = \"a board\"\narch = \"aarch64\"\n\
             target = \"aarch64-unknown-none\"\nboot = \"{boot}\"\nqemu = \"q\"\n\
             memory = \"1G\"\ncpus = 1\nexit_pass = 0\nexit_fail = 1\n"
        );
        Board::parse(&text, Path::new("b.toml")).unwrap()
    }

    fn names(files: &[OutFile]) -> Vec<&str> {
        files.iter().map(|f| f.name.as_str()).collect()
    }

    #[test]
    fn a_uboot_board_gets_image_script_and_disk() {
        let files = files_for(&board("uboot"), b"IMAGE", "exit=semihosting").unwrap();
        assert_eq!(names(&files), ["Image", "boot.scr", "disk.img"]);
        assert_eq!(files[0].bytes, b"IMAGE");
        let disk = &files[2].bytes;
        assert_eq!(crate::disk::read_file(disk, "Image").unwrap(), b"IMAGE");
        assert_eq!(
            crate::disk::read_file(disk, "boot.scr").unwrap(),
            files[1].bytes
        );
        let tmp = tempfile::tempdir().unwrap();
        write(tmp.path(), &board("uboot"), &files, "exit=semihosting").unwrap();
        let readme = std::fs::read_to_string(tmp.path().join("README.txt")).unwrap();
        for f in [
            "Image (5 bytes)",
            "boot.scr (",
            "disk.img (",
            "exit=semihosting",
        ] {
            assert!(readme.contains(f), "{f}: {readme}");
        }
        assert_eq!(std::fs::read(tmp.path().join("Image")).unwrap(), b"IMAGE");
    }

    #[test]
    fn other_boot_methods() {
        assert_eq!(
            names(&files_for(&board("image"), b"I", "").unwrap()),
            ["Image"]
        );
        assert_eq!(
            names(&files_for(&board("pvh"), b"E", "").unwrap()),
            ["kernel.elf"]
        );
        let e = files_for(&board("uefi"), b"E", "").unwrap_err();
        assert!(e.to_string().contains(".efi loader"), "{e}");
    }
}
