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
        "uefi" => {
            let loader = file(
                "loader.efi",
                kernel.to_vec(),
                "our UEFI loader (an EFI application) with the kernel inside: start it \
                 from the UEFI shell or a boot entry; its LoadOptions are the kernel \
                 command line",
            );
            let boot_name = removable_boot_name(&board.arch)?;
            let path = format!("EFI/BOOT/{boot_name}");
            let nsh = startup_nsh(&path, cmdline);
            let disk = crate::disk::fat_disk(
                &[
                    (path.as_str(), loader.bytes.as_slice()),
                    ("startup.nsh", nsh.as_bytes()),
                ],
                crate::disk::Partition::EfiSystem,
            )?;
            vec![
                loader,
                file(
                    "startup.nsh",
                    nsh.into_bytes(),
                    "UEFI shell script: starts the loader with the command line below \
                     (the shell runs it from the ESP when no boot entry took over)",
                ),
                file(
                    "esp.img",
                    disk,
                    &format!(
                        "a whole disk (MBR, one EFI system partition) holding the loader \
                         as {path}, firmware's default for removable media, and \
                         startup.nsh: write it to a USB stick (dd if=esp.img of=/dev/sdX \
                         bs=1M). Started as {boot_name} the loader gets only the options \
                         of the boot entry (none for a removable disk), so the kernel runs \
                         with its defaults; for the command line below, create an entry \
                         whose optional data carries it (Linux: efibootmgr --create \
                         --disk /dev/sdX --part 1 --loader '\\EFI\\BOOT\\{boot_name}' \
                         --unicode 'COMMAND LINE') or run startup.nsh from the UEFI shell"
                    ),
                ),
            ]
        }
        _ => vec![file(
            "kernel.elf",
            kernel.to_vec(),
            "the kernel ELF, for a loader that takes one (QEMU -kernel; PVH on x86)",
        )],
    })
}

/// The file name UEFI firmware boots from removable media (the UEFI
/// specification's default boot path for each architecture).
pub fn removable_boot_name(arch: &str) -> Result<&'static str> {
    Ok(match arch {
        "aarch64" => "BOOTAA64.EFI",
        "x86_64" => "BOOTX64.EFI",
        other => bail!("no UEFI removable-media boot name for arch {other}"),
    })
}

/// A UEFI shell script that starts the loader at `path` on the ESP (the
/// shell's current file system when it runs startup.nsh) with `cmdline`.
fn startup_nsh(path: &str, cmdline: &str) -> String {
    format!("\\{} {cmdline}\r\n", path.replace('/', "\\"))
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
        "\nKernel command line (built into boot.scr or startup.nsh where there is one):"
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
    }

    #[test]
    fn a_uefi_board_gets_the_loader_and_an_esp_that_boots_it() {
        let files = files_for(&board("uefi"), b"MZ-LOADER", "exit=semihosting log=info").unwrap();
        assert_eq!(names(&files), ["loader.efi", "startup.nsh", "esp.img"]);
        assert_eq!(files[0].bytes, b"MZ-LOADER");
        assert_eq!(
            String::from_utf8_lossy(&files[1].bytes),
            "\\EFI\\BOOT\\BOOTAA64.EFI exit=semihosting log=info\r\n"
        );
        let esp = &files[2].bytes;
        // One partition, of the EFI system partition's MBR type.
        assert_eq!(esp[446 + 4], 0xef);
        assert_eq!(
            crate::disk::read_file(esp, "EFI/BOOT/BOOTAA64.EFI").unwrap(),
            b"MZ-LOADER"
        );
        assert_eq!(
            crate::disk::read_file(esp, "startup.nsh").unwrap(),
            files[1].bytes
        );
        assert!(files[2].what.contains("efibootmgr"), "{}", files[2].what);
        assert_eq!(removable_boot_name("x86_64").unwrap(), "BOOTX64.EFI");
        assert!(removable_boot_name("riscv64").is_err());
    }
}
