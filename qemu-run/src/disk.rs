//! Disk images for boards that boot from firmware: an MBR with one FAT
//! partition holding the files given, the way an SD card or USB stick
//! prepared for a board looks. U-Boot boards get the `Image` and
//! `boot.scr`; a UEFI board's ESP is the same with another partition type.
use std::io::{Cursor, Read, Seek, SeekFrom, Write};

use anyhow::{bail, Context, Result};

const SECTOR: u64 = 512;
/// The partition starts 1 MiB in, as partitioning tools align it.
const PARTITION_START: u64 = 2048;
const MIB: u64 = 1 << 20;
/// The smallest FAT volume made: room for FAT16's minimum cluster count.
const MIN_VOLUME: u64 = 16 * MIB;

/// What the one partition is to firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Partition {
    /// A plain FAT partition (MBR type 0x0e FAT16 LBA, 0x0c FAT32 LBA).
    Fat,
    /// An EFI system partition (MBR type 0xef).
    EfiSystem,
}

/// A whole disk: MBR, then one partition formatted FAT, holding `files`
/// (`path -> contents`; `/` in a path makes directories).
pub fn fat_disk(files: &[(&str, &[u8])], kind: Partition) -> Result<Vec<u8>> {
    let payload: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    // Room for the files, their clusters' slack and the FATs.
    let volume = (payload + payload / 4 + 4 * MIB)
        .div_ceil(MIB)
        .saturating_mul(MIB)
        .max(MIN_VOLUME);
    let mut fat = Cursor::new(vec![0u8; volume as usize]);
    fatfs::format_volume(
        &mut fat,
        fatfs::FormatVolumeOptions::new().volume_label(*b"IOMMU-TEST "),
    )
    .context("formatting the FAT volume")?;
    fat.seek(SeekFrom::Start(0))?;
    let fat_type = {
        let fs = fatfs::FileSystem::new(&mut fat, fatfs::FsOptions::new())
            .context("opening the new FAT volume")?;
        for (path, bytes) in files {
            write_file(&fs, path, bytes).with_context(|| format!("writing {path}"))?;
        }
        let t = fs.fat_type();
        fs.unmount().context("flushing the FAT volume")?;
        t
    };
    let type_byte = match (kind, fat_type) {
        (Partition::EfiSystem, _) => 0xef,
        (Partition::Fat, fatfs::FatType::Fat32) => 0x0c,
        (Partition::Fat, _) => 0x0e,
    };
    let mut disk = mbr(PARTITION_START, volume / SECTOR, type_byte);
    disk.resize((PARTITION_START * SECTOR) as usize, 0);
    disk.extend(fat.into_inner());
    Ok(disk)
}

fn write_file<T: fatfs::ReadWriteSeek>(
    fs: &fatfs::FileSystem<T>,
    path: &str,
    bytes: &[u8],
) -> Result<()> {
    let mut dir = fs.root_dir();
    let mut parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some(name) = parts.pop() else {
        bail!("an empty file name");
    };
    for p in parts {
        dir = match dir.open_dir(p) {
            Ok(d) => d,
            Err(_) => dir.create_dir(p)?,
        };
    }
    let mut f = dir.create_file(name)?;
    f.truncate()?;
    f.write_all(bytes)?;
    f.flush()?;
    Ok(())
}

/// A master boot record with one bootable partition of `sectors` sectors
/// from LBA `start`.
fn mbr(start: u64, sectors: u64, type_byte: u8) -> Vec<u8> {
    let mut m = vec![0u8; SECTOR as usize];
    let e = &mut m[446..462];
    e[0] = 0x80; // bootable
                 // CHS fields past what CHS can say: firmware uses the LBA fields.
    e[1..4].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[4] = type_byte;
    e[5..8].copy_from_slice(&[0xfe, 0xff, 0xff]);
    e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(sectors as u32).to_le_bytes());
    m[510] = 0x55;
    m[511] = 0xaa;
    m
}

/// The first partition of an MBR disk: (type, byte range).
pub fn first_partition(disk: &[u8]) -> Result<(u8, std::ops::Range<usize>)> {
    if disk.len() < SECTOR as usize || disk[510..512] != [0x55, 0xaa] {
        bail!("no MBR signature");
    }
    let e = &disk[446..462];
    let start = u32::from_le_bytes(e[8..12].try_into()?) as usize * SECTOR as usize;
    let len = u32::from_le_bytes(e[12..16].try_into()?) as usize * SECTOR as usize;
    if start + len > disk.len() {
        bail!("the partition runs past the end of the disk");
    }
    Ok((e[4], start..start + len))
}

/// Reads a file back from a disk [`fat_disk`] made (for tests and checks).
pub fn read_file(disk: &[u8], path: &str) -> Result<Vec<u8>> {
    let (_, range) = first_partition(disk)?;
    let mut part = Cursor::new(disk[range].to_vec());
    let fs = fatfs::FileSystem::new(&mut part, fatfs::FsOptions::new())?;
    let mut f = fs.root_dir().open_file(path)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_read_back_from_the_fat_partition() {
        let image: Vec<u8> = (0..3 * MIB as usize).map(|i| (i * 7 % 251) as u8).collect();
        let disk = fat_disk(
            &[
                ("Image", &image),
                ("boot.scr", b"script"),
                ("EFI/BOOT/BOOTAA64.EFI", b"MZ"),
            ],
            Partition::Fat,
        )
        .unwrap();
        let (kind, range) = first_partition(&disk).unwrap();
        assert_eq!(range.start, 1 << 20, "aligned to 1 MiB");
        assert_eq!(kind, 0x0e, "a 16 MiB volume is FAT16");
        assert_eq!(disk[446], 0x80);
        assert_eq!(read_file(&disk, "Image").unwrap(), image);
        assert_eq!(read_file(&disk, "boot.scr").unwrap(), b"script");
        assert_eq!(read_file(&disk, "EFI/BOOT/BOOTAA64.EFI").unwrap(), b"MZ");
        assert!(read_file(&disk, "missing").is_err());
    }

    #[test]
    fn an_esp_is_typed_so() {
        let disk = fat_disk(&[("x", b"1")], Partition::EfiSystem).unwrap();
        assert_eq!(first_partition(&disk).unwrap().0, 0xef);
        assert!(first_partition(&disk[..100]).is_err());
        assert!(fat_disk(&[("/", b"1")], Partition::Fat).is_err());
    }
}
