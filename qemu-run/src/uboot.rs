//! Booting through U-Boot: a boot script (`boot.scr`, a legacy U-Boot
//! script image) that loads the arm64 `Image` from the boot disk's FAT
//! partition, sets `bootargs` and starts it with `booti` and the
//! devicetree, and the disk image that holds both.
//!
//! The script image format is U-Boot's `include/image.h`: a 64-byte
//! big-endian header (magic, header CRC32, time, data size, load and entry
//! address, data CRC32, OS, arch, type, compression, name), then the data;
//! a script's data is a table of lengths ended by 0, then the script.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::disk;

pub const IH_MAGIC: u32 = 0x2705_1956;
pub const HEADER_SIZE: usize = 64;
const IH_OS_LINUX: u8 = 5;
const IH_ARCH_ARM64: u8 = 22;
pub const IH_TYPE_SCRIPT: u8 = 6;
const IH_COMP_NONE: u8 = 0;
const NAME_LEN: usize = 32;

/// Where the script loads the `Image`: U-Boot's `kernel_addr_r` (0x4040_0000
/// in Debian's qemu_arm64), 2 MiB-aligned and not where QEMU's `-kernel`
/// puts it, so the image's self-relocation is exercised. The devicetree is
/// the one QEMU hands U-Boot, at `fdt_addr` (the base of RAM).
pub const LOAD_ADDR: &str = "${kernel_addr_r}";
pub const FDT_ADDR: &str = "${fdt_addr}";
/// The partition U-Boot reads (virtio-blk over virtio-mmio: no PCI
/// function is added to the boards' test topology).
pub const DEVICE: &str = "virtio 0:1";

/// Debian's qemu_arm64 keeps its environment in the second flash bank
/// (CONFIG_ENV_ADDR 0x400_0000, CONFIG_ENV_SIZE 0x4_0000): QEMU virt's
/// `-drive if=pflash,unit=1`, a 64 MiB bank.
pub const ENV_SIZE: usize = 0x4_0000;
pub const FLASH_BANK_SIZE: u64 = 64 << 20;

/// U-Boot's built-in default environment, found in its binary: the block
/// of NUL-separated `name=value` entries that starts with `bootcmd=` and
/// holds `bootdelay=`, ended by an empty entry.
pub fn default_environment(uboot: &[u8]) -> Result<Vec<String>> {
    let mut from = 0;
    while let Some(at) = find(&uboot[from..], b"\0bootcmd=").map(|i| from + i + 1) {
        let len = find(&uboot[at..], b"\0\0").map_or(uboot.len() - at, |e| e + 1);
        let entries: Vec<String> = uboot[at..at + len]
            .split(|&c| c == 0)
            .filter(|e| !e.is_empty())
            .map(|e| String::from_utf8_lossy(e).into_owned())
            .collect();
        let has = |name: &str| entries.iter().any(|e| e.starts_with(name));
        if has("bootdelay=") && entries.iter().all(|e| e.contains('=')) {
            return Ok(entries);
        }
        from = at;
    }
    bail!("no default environment (bootcmd=, bootdelay=) found in the U-Boot binary")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A flash environment as U-Boot stores it (`saveenv`): CRC32 of the data,
/// then `ENV_SIZE - 4` bytes of NUL-separated entries padded with zeros.
/// Entries of `set` replace those of `env` with the same name.
pub fn flash_environment(env: &[String], set: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut data = Vec::with_capacity(ENV_SIZE);
    for e in env {
        let name = e.split('=').next().unwrap_or("");
        if set.iter().any(|(n, _)| *n == name) {
            continue;
        }
        data.extend(e.as_bytes());
        data.push(0);
    }
    for (n, v) in set {
        data.extend(format!("{n}={v}").as_bytes());
        data.push(0);
    }
    data.push(0);
    if data.len() > ENV_SIZE - 4 {
        bail!(
            "the U-Boot environment ({} bytes) does not fit its {ENV_SIZE} bytes",
            data.len()
        );
    }
    data.resize(ENV_SIZE - 4, 0);
    let mut out = crc32fast::hash(&data).to_le_bytes().to_vec();
    out.extend(data);
    Ok(out)
}

/// The environment flash bank for a U-Boot board run, beside the `Image`.
pub fn env_path(image: &Path, board: &str) -> PathBuf {
    image.with_file_name(format!("{}.uboot-env.img", board.replace(':', "-")))
}

/// Writes a flash bank holding `firmware`'s own default environment with
/// the entries of `set` replaced (as `setenv NAME VALUE; saveenv` would
/// leave it): `bootdelay=0` skips the 2 s U-Boot waits for a key.
pub fn write_env_flash(firmware: &Path, set: &[(&str, &str)], out: &Path) -> Result<()> {
    let bin = std::fs::read(firmware).with_context(|| firmware.display().to_string())?;
    let env = default_environment(&bin).with_context(|| firmware.display().to_string())?;
    let bank = flash_environment(&env, set)?;
    let f = std::fs::File::create(out).with_context(|| out.display().to_string())?;
    use std::io::Write as _;
    (&f).write_all(&bank)
        .and_then(|()| f.set_len(FLASH_BANK_SIZE))
        .with_context(|| out.display().to_string())
}

/// The firmware file a board's QEMU arguments load (`-bios FILE`).
pub fn bios_of(args: &[String]) -> Option<&str> {
    args.windows(2)
        .filter(|w| w[0] == "-bios" || w[0] == "--bios")
        .map(|w| w[1].as_str())
        .next_back()
}

/// A legacy U-Boot script image of `script`, as `mkimage -T script -C none
/// -A arm64 -O linux` makes it (time 0: the same input gives the same bytes).
pub fn script_image(script: &str, name: &str) -> Vec<u8> {
    let body = script.as_bytes();
    let mut data = Vec::with_capacity(body.len() + 8);
    data.extend((body.len() as u32).to_be_bytes());
    data.extend(0u32.to_be_bytes());
    data.extend(body);
    let mut h = vec![0u8; HEADER_SIZE];
    h[0..4].copy_from_slice(&IH_MAGIC.to_be_bytes());
    h[12..16].copy_from_slice(&(data.len() as u32).to_be_bytes());
    h[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    h[28] = IH_OS_LINUX;
    h[29] = IH_ARCH_ARM64;
    h[30] = IH_TYPE_SCRIPT;
    h[31] = IH_COMP_NONE;
    let n = name.len().min(NAME_LEN - 1);
    h[32..32 + n].copy_from_slice(&name.as_bytes()[..n]);
    // The header CRC covers the header with its own field zero.
    let hcrc = crc32fast::hash(&h);
    h[4..8].copy_from_slice(&hcrc.to_be_bytes());
    h.extend(data);
    h
}

/// The script U-Boot runs: load the `Image`, set the command line, boot.
pub fn boot_script(cmdline: &str) -> Result<String> {
    // Single quotes keep U-Boot's shell from expanding anything in it.
    if cmdline.contains(['\'', '\n']) {
        bail!("the kernel command line {cmdline:?} has a quote or newline: U-Boot's bootargs cannot carry it");
    }
    Ok(format!(
        "# Made by qemu-run: boots the IOMMU self-test kernel.\n\
         setenv bootargs '{cmdline}'\n\
         load {DEVICE} {LOAD_ADDR} Image\n\
         booti {LOAD_ADDR} - {FDT_ADDR}\n\
         echo booti returned: the Image was refused\n"
    ))
}

/// The files a U-Boot board boots from: the `Image` and `boot.scr`.
pub fn boot_files(image: &[u8], cmdline: &str) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let script = boot_script(cmdline)?;
    Ok(vec![
        ("Image", image.to_vec()),
        ("boot.scr", script_image(&script, "iommu self-test")),
    ])
}

/// The disk image a U-Boot board run boots, beside the `Image`.
pub fn disk_path(image: &Path, board: &str) -> PathBuf {
    image.with_file_name(format!("{}.disk.img", board.replace(':', "-")))
}

/// Writes the boot disk (MBR, one FAT partition with `Image` and
/// `boot.scr` for `cmdline`) to `out`.
pub fn write_disk(image: &Path, cmdline: &str, out: &Path) -> Result<()> {
    let bytes = std::fs::read(image).with_context(|| format!("kernel {}", image.display()))?;
    let files = boot_files(&bytes, cmdline)?;
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
    let disk = disk::fat_disk(&refs, disk::Partition::Fat)?;
    std::fs::write(out, disk).with_context(|| out.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_image_header_and_checksums() {
        let script = "echo hi\n";
        let img = script_image(script, "test");
        let be = |at: usize| u32::from_be_bytes(img[at..at + 4].try_into().unwrap());
        assert_eq!(be(0), IH_MAGIC);
        assert_eq!(be(8), 0, "time");
        assert_eq!(be(12) as usize, img.len() - HEADER_SIZE);
        assert_eq!((be(16), be(20)), (0, 0), "load, entry");
        assert_eq!(&img[28..32], &[5, 22, IH_TYPE_SCRIPT, 0]);
        assert_eq!(&img[32..37], b"test\0");
        // Data: length table (one entry, then 0), then the script.
        assert_eq!(&img[64..72], &[0, 0, 0, 8, 0, 0, 0, 0]);
        assert_eq!(&img[72..], script.as_bytes());
        assert_eq!(be(24), crc32fast::hash(&img[64..]));
        let mut h = img[..64].to_vec();
        h[4..8].fill(0);
        assert_eq!(be(4), crc32fast::hash(&h));
        // A known value: CRC-32 (IEEE) of "123456789".
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn the_default_environment_comes_from_the_binary_and_is_saved_with_its_crc() {
        // A decoy block without bootdelay= first, as a string table might hold.
        let bin = b"\x01\x02%s%d\0bootcmd=x\0\0%s\0bootcmd=run distro_bootcmd\0bootdelay=2\0\
                    boot_targets=virtio0\0\0after\0";
        let env = default_environment(bin).unwrap();
        assert_eq!(
            env,
            [
                "bootcmd=run distro_bootcmd",
                "bootdelay=2",
                "boot_targets=virtio0"
            ]
        );
        assert!(default_environment(b"\0bootcmd=x\0\0").is_err());
        let bank = flash_environment(&env, &[("bootdelay", "0")]).unwrap();
        assert_eq!(bank.len(), ENV_SIZE);
        let crc = u32::from_le_bytes(bank[..4].try_into().unwrap());
        assert_eq!(crc, crc32fast::hash(&bank[4..]));
        let text = b"bootcmd=run distro_bootcmd\0boot_targets=virtio0\0bootdelay=0\0\0";
        assert_eq!(&bank[4..4 + text.len()], text);
        assert!(bank[4 + text.len()..].iter().all(|&b| b == 0));
    }

    #[test]
    fn the_script_boots_the_image_with_the_devicetree() {
        let s = boot_script("exit=semihosting filter=mm::*").unwrap();
        assert!(
            s.contains("setenv bootargs 'exit=semihosting filter=mm::*'\n"),
            "{s}"
        );
        assert!(
            s.contains("load virtio 0:1 ${kernel_addr_r} Image\n"),
            "{s}"
        );
        assert!(s.contains("booti ${kernel_addr_r} - ${fdt_addr}\n"), "{s}");
        assert!(boot_script("it's").is_err());
    }

    #[test]
    fn the_disk_holds_the_image_and_the_script() {
        let files = boot_files(b"IMAGE", "log=debug").unwrap();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(n, b)| (*n, b.as_slice())).collect();
        let d = disk::fat_disk(&refs, disk::Partition::Fat).unwrap();
        assert_eq!(disk::read_file(&d, "Image").unwrap(), b"IMAGE");
        let scr = disk::read_file(&d, "boot.scr").unwrap();
        assert_eq!(
            scr,
            script_image(&boot_script("log=debug").unwrap(), "iommu self-test")
        );
        assert_eq!(
            disk_path(Path::new("/t/Image"), "qemu-virt-uboot:el2"),
            Path::new("/t/qemu-virt-uboot-el2.disk.img")
        );
    }
}
