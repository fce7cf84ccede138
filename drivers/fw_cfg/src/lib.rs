//! QEMU's firmware configuration device. The directory and file reads work
//! over any [`Transport`] (MMIO on Arm, I/O ports on x86, qtest on the host);
//! [`loader`] runs the `etc/table-loader` script that turns QEMU's ACPI
//! blobs into linked tables, as firmware would.
#![no_std]

extern crate alloc;

pub mod loader;
// The MMIO and port-I/O bindings of the fw_cfg device.
#[allow(unsafe_code)]
pub mod transport;

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Well-known selectors.
pub const SIGNATURE: u16 = 0x0000;
/// Feature bits (`transport::FEATURE_DMA`).
pub const ID: u16 = 0x0001;
pub const FILE_DIR: u16 = 0x0019;
pub const RAM_SIZE: u16 = 0x0003;
pub const NB_CPUS: u16 = 0x0005;

/// `"QEMU"` as the signature item reads.
pub const SIGNATURE_VALUE: [u8; 4] = *b"QEMU";

/// Longest file the kernel will read (QEMU's ACPI blobs are well below this).
pub const MAX_FILE: u32 = 16 << 20;
const NAME_LEN: usize = 56;
const DIR_ENTRY_LEN: usize = 64;

/// How bytes move: select an item, then read its bytes in order.
pub trait Transport {
    fn select(&mut self, key: u16);
    /// Reads the next `buf.len()` bytes of the selected item.
    fn read(&mut self, buf: &mut [u8]);
}

/// Reads a fixed-key item (CPU count, features...) after checking the
/// signature, without reading the file directory.
pub fn read_item<T: Transport>(t: &mut T, key: u16, buf: &mut [u8]) -> Result<(), FwCfgError> {
    let mut sig = [0u8; 4];
    t.select(SIGNATURE);
    t.read(&mut sig);
    if sig != SIGNATURE_VALUE {
        return Err(FwCfgError::NoDevice { signature: sig });
    }
    t.select(key);
    t.read(buf);
    Ok(())
}

/// The feature bits (`FW_CFG_ID`; 0 without fw_cfg), read before choosing a transport.
pub fn features<T: Transport>(t: &mut T) -> u32 {
    let mut b = [0u8; 4];
    read_item(t, ID, &mut b).map_or(0, |()| u32::from_le_bytes(b))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FwCfgError {
    /// The signature item does not read "QEMU": no fw_cfg here.
    NoDevice {
        signature: [u8; 4],
    },
    /// The directory claims more entries than any real one has.
    BadDirectory {
        count: u32,
    },
    NoSuchFile(String),
    /// A file larger than [`MAX_FILE`].
    TooLarge {
        name: String,
        size: u32,
    },
}

impl fmt::Display for FwCfgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FwCfgError::NoDevice { signature } => {
                write!(
                    f,
                    "no fw_cfg device (signature {signature:02x?}, expected \"QEMU\")"
                )
            }
            FwCfgError::BadDirectory { count } => {
                write!(f, "fw_cfg directory claims {count} files")
            }
            FwCfgError::NoSuchFile(n) => write!(f, "fw_cfg has no file {n:?}"),
            FwCfgError::TooLarge { name, size } => {
                write!(f, "fw_cfg file {name:?} is {size} bytes, over the limit")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub size: u32,
    pub select: u16,
}

/// A fw_cfg device over some transport.
pub struct FwCfg<T: Transport> {
    t: T,
    files: Vec<FileEntry>,
}

impl<T: Transport> FwCfg<T> {
    /// Checks the signature and reads the file directory.
    pub fn new(mut t: T) -> Result<Self, FwCfgError> {
        let mut sig = [0u8; 4];
        t.select(SIGNATURE);
        t.read(&mut sig);
        if sig != SIGNATURE_VALUE {
            return Err(FwCfgError::NoDevice { signature: sig });
        }
        t.select(FILE_DIR);
        let mut count = [0u8; 4];
        t.read(&mut count);
        let count = u32::from_be_bytes(count);
        // The selector space for files is 0x20..0x4000: more is a broken device.
        if count > 0x4000 {
            return Err(FwCfgError::BadDirectory { count });
        }
        let mut files = Vec::with_capacity(count as usize);
        let mut e = [0u8; DIR_ENTRY_LEN];
        for _ in 0..count {
            t.read(&mut e);
            files.push(parse_dir_entry(&e));
        }
        Ok(FwCfg { t, files })
    }

    pub fn transport(&self) -> &T {
        &self.t
    }

    pub fn files(&self) -> &[FileEntry] {
        &self.files
    }

    pub fn find(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// A whole file by name.
    pub fn read_file(&mut self, name: &str) -> Result<Vec<u8>, FwCfgError> {
        let entry = self
            .find(name)
            .ok_or_else(|| FwCfgError::NoSuchFile(name.into()))?
            .clone();
        if entry.size > MAX_FILE {
            return Err(FwCfgError::TooLarge {
                name: entry.name,
                size: entry.size,
            });
        }
        let mut buf = vec![0u8; entry.size as usize];
        self.t.select(entry.select);
        self.t.read(&mut buf);
        Ok(buf)
    }
}

fn parse_dir_entry(e: &[u8; DIR_ENTRY_LEN]) -> FileEntry {
    let name = &e[8..8 + NAME_LEN];
    let name: String = name
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect();
    FileEntry {
        name,
        size: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
        select: u16::from_be_bytes([e[4], e[5]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;

    /// A fw_cfg in memory: items by key.
    pub struct Fake {
        items: BTreeMap<u16, Vec<u8>>,
        cur: u16,
        pos: usize,
    }

    impl Transport for Fake {
        fn select(&mut self, key: u16) {
            self.cur = key;
            self.pos = 0;
        }
        fn read(&mut self, buf: &mut [u8]) {
            let item = self
                .items
                .get(&self.cur)
                .map(|v| v.as_slice())
                .unwrap_or(&[]);
            for b in buf.iter_mut() {
                *b = item.get(self.pos).copied().unwrap_or(0);
                self.pos += 1;
            }
        }
    }

    fn fake(files: &[(&str, &[u8])]) -> Fake {
        let mut items = BTreeMap::new();
        items.insert(SIGNATURE, b"QEMU".to_vec());
        let mut dir = (files.len() as u32).to_be_bytes().to_vec();
        for (i, (name, data)) in files.iter().enumerate() {
            let mut e = [0u8; 64];
            e[0..4].copy_from_slice(&(data.len() as u32).to_be_bytes());
            e[4..6].copy_from_slice(&(0x20 + i as u16).to_be_bytes());
            e[8..8 + name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&e);
            items.insert(0x20 + i as u16, data.to_vec());
        }
        items.insert(FILE_DIR, dir);
        Fake {
            items,
            cur: 0,
            pos: 0,
        }
    }

    #[test]
    fn directory_and_files() {
        let mut f = FwCfg::new(fake(&[
            ("etc/acpi/rsdp", b"RSD PTR "),
            ("etc/e820", &[1, 2]),
        ]))
        .unwrap();
        assert_eq!(f.files().len(), 2);
        assert_eq!(f.find("etc/e820").unwrap().size, 2);
        assert_eq!(f.read_file("etc/acpi/rsdp").unwrap(), b"RSD PTR ");
        assert_eq!(
            f.read_file("nope"),
            Err(FwCfgError::NoSuchFile("nope".into()))
        );
    }

    #[test]
    fn no_device() {
        let mut t = fake(&[]);
        t.items.insert(SIGNATURE, b"\xff\xff\xff\xff".to_vec());
        assert!(matches!(FwCfg::new(t), Err(FwCfgError::NoDevice { .. })));
    }
}
