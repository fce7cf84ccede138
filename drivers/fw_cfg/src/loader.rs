//! QEMU's ACPI table loader (`etc/table-loader`): a script of 128-byte
//! commands that allocate fw_cfg files in guest memory, patch pointers
//! between them and fix checksums. Firmware normally runs it; a kernel
//! booted without firmware runs it itself. Every offset is checked: the
//! script is input from the hypervisor, not trusted code.
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

const ENTRY_LEN: usize = 128;
const NAME_LEN: usize = 56;

const CMD_ALLOCATE: u32 = 1;
const CMD_ADD_POINTER: u32 = 2;
const CMD_ADD_CHECKSUM: u32 = 3;
const CMD_WRITE_POINTER: u32 = 4;

/// Where firmware would put a file: anywhere, or the legacy F segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Zone {
    High,
    FSeg,
}

/// One allocated file: its bytes as patched and the address chosen for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub name: String,
    pub addr: u64,
    pub zone: Zone,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub blobs: Vec<Blob>,
    /// Commands not acted on: WRITE_POINTER (it writes back to the
    /// hypervisor, which nothing here needs) and unknown commands.
    pub skipped: usize,
}

impl Loaded {
    pub fn find(&self, name: &str) -> Option<&Blob> {
        self.blobs.iter().find(|b| b.name == name)
    }

    /// The bytes at `[addr, addr+len)` if one blob holds them all.
    pub fn read(&self, addr: u64, len: usize) -> Option<&[u8]> {
        self.blobs.iter().find_map(|b| {
            let start = usize::try_from(addr.checked_sub(b.addr)?).ok()?;
            b.data.get(start..start.checked_add(len)?)
        })
    }

    /// The bytes from `addr` to the end of the blob holding it.
    pub fn read_rest(&self, addr: u64) -> Option<&[u8]> {
        self.blobs.iter().find_map(|b| {
            let start = usize::try_from(addr.checked_sub(b.addr)?).ok()?;
            b.data.get(start..)
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoaderError {
    /// The script is not a whole number of 128-byte commands.
    ScriptLength(usize),
    /// A file name field without a NUL, or not ASCII.
    BadName { entry: usize },
    /// A command names a file that fw_cfg does not have or that was not allocated.
    UnknownFile { entry: usize, name: String },
    /// The same file allocated twice.
    Reallocated { entry: usize, name: String },
    /// Alignment not a power of two, or a zone that does not exist.
    BadAllocation { entry: usize, align: u32, zone: u8 },
    /// No memory for a file.
    NoMemory {
        entry: usize,
        name: String,
        size: usize,
    },
    /// A pointer or checksum range outside its file.
    OutOfRange {
        entry: usize,
        name: String,
        offset: u64,
        len: u64,
        file_len: usize,
    },
    /// A pointer width other than 1, 2, 4 or 8.
    BadPointerSize { entry: usize, size: u8 },
}

impl fmt::Display for LoaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etc/table-loader: ")?;
        match self {
            LoaderError::ScriptLength(n) => write!(f, "{n} bytes is not a whole number of commands"),
            LoaderError::BadName { entry } => write!(f, "command {entry}: file name is not NUL-terminated ASCII"),
            LoaderError::UnknownFile { entry, name } => write!(f, "command {entry}: unknown file {name:?}"),
            LoaderError::Reallocated { entry, name } => write!(f, "command {entry}: {name:?} allocated twice"),
            LoaderError::BadAllocation { entry, align, zone } => {
                write!(f, "command {entry}: bad allocation (align {align:#x}, zone {zone})")
            }
            LoaderError::NoMemory { entry, name, size } => {
                write!(f, "command {entry}: no memory for {name:?} ({size} bytes)")
            }
            LoaderError::OutOfRange { entry, name, offset, len, file_len } => write!(
                f,
                "command {entry}: {len} bytes at offset {offset:#x} lie outside {name:?} ({file_len} bytes)"
            ),
            LoaderError::BadPointerSize { entry, size } => write!(f, "command {entry}: pointer size {size}"),
        }
    }
}

fn name(e: &[u8], at: usize, entry: usize) -> Result<String, LoaderError> {
    let field = &e[at..at + NAME_LEN];
    let end = field
        .iter()
        .position(|&b| b == 0)
        .ok_or(LoaderError::BadName { entry })?;
    let n = &field[..end];
    if !n.iter().all(|b| b.is_ascii_graphic()) {
        return Err(LoaderError::BadName { entry });
    }
    Ok(n.iter().map(|&b| b as char).collect())
}

fn u32_at(e: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([e[at], e[at + 1], e[at + 2], e[at + 3]])
}

/// Checks `[offset, offset+len)` lies in `blob`, returning it as a range.
fn range(
    blob: &Blob,
    entry: usize,
    offset: u64,
    len: u64,
) -> Result<core::ops::Range<usize>, LoaderError> {
    let end = offset.checked_add(len);
    match end {
        Some(end) if end <= blob.data.len() as u64 => Ok(offset as usize..end as usize),
        _ => Err(LoaderError::OutOfRange {
            entry,
            name: blob.name.clone(),
            offset,
            len,
            file_len: blob.data.len(),
        }),
    }
}

fn blob_index(blobs: &[Blob], entry: usize, name: &str) -> Result<usize, LoaderError> {
    blobs
        .iter()
        .position(|b| b.name == name)
        .ok_or_else(|| LoaderError::UnknownFile {
            entry,
            name: name.into(),
        })
}

/// Runs the loader script. `fetch` reads a fw_cfg file by name; `place`
/// picks the address of a file of that size and alignment.
pub fn run(
    script: &[u8],
    mut fetch: impl FnMut(&str) -> Option<Vec<u8>>,
    mut place: impl FnMut(&str, usize, u64, Zone) -> Option<u64>,
) -> Result<Loaded, LoaderError> {
    if !script.len().is_multiple_of(ENTRY_LEN) {
        return Err(LoaderError::ScriptLength(script.len()));
    }
    let mut blobs: Vec<Blob> = Vec::new();
    let mut skipped = 0;
    for (entry, e) in script.chunks_exact(ENTRY_LEN).enumerate() {
        match u32_at(e, 0) {
            // Zero-filled padding at the end of the script.
            0 => {}
            CMD_ALLOCATE => {
                let file = name(e, 4, entry)?;
                let align = u32_at(e, 60);
                let zone = match e[64] {
                    1 => Zone::High,
                    2 => Zone::FSeg,
                    z => {
                        return Err(LoaderError::BadAllocation {
                            entry,
                            align,
                            zone: z,
                        })
                    }
                };
                if !align.is_power_of_two() {
                    return Err(LoaderError::BadAllocation {
                        entry,
                        align,
                        zone: e[64],
                    });
                }
                if blobs.iter().any(|b| b.name == file) {
                    return Err(LoaderError::Reallocated { entry, name: file });
                }
                let data = fetch(&file).ok_or_else(|| LoaderError::UnknownFile {
                    entry,
                    name: file.clone(),
                })?;
                let addr = place(&file, data.len(), align as u64, zone).ok_or_else(|| {
                    LoaderError::NoMemory {
                        entry,
                        name: file.clone(),
                        size: data.len(),
                    }
                })?;
                blobs.push(Blob {
                    name: file,
                    addr,
                    zone,
                    data,
                });
            }
            CMD_ADD_POINTER => {
                let dest = blob_index(&blobs, entry, &name(e, 4, entry)?)?;
                let src = blob_index(&blobs, entry, &name(e, 60, entry)?)?;
                let size = e[120];
                if !matches!(size, 1 | 2 | 4 | 8) {
                    return Err(LoaderError::BadPointerSize { entry, size });
                }
                let r = range(&blobs[dest], entry, u32_at(e, 116) as u64, size as u64)?;
                let src_addr = blobs[src].addr;
                let field = &mut blobs[dest].data[r];
                let mut v = [0u8; 8];
                v[..field.len()].copy_from_slice(field);
                // The field holds an offset into src; it becomes an address
                // (truncated to the field's width, as firmware does).
                let patched = u64::from_le_bytes(v).wrapping_add(src_addr).to_le_bytes();
                let n = field.len();
                field.copy_from_slice(&patched[..n]);
            }
            CMD_ADD_CHECKSUM => {
                let i = blob_index(&blobs, entry, &name(e, 4, entry)?)?;
                let at = range(&blobs[i], entry, u32_at(e, 60) as u64, 1)?.start;
                let r = range(&blobs[i], entry, u32_at(e, 64) as u64, u32_at(e, 68) as u64)?;
                let blob = &mut blobs[i];
                let sum = blob.data[r].iter().fold(0u8, |a, &b| a.wrapping_add(b));
                blob.data[at] = blob.data[at].wrapping_sub(sum);
            }
            CMD_WRITE_POINTER => skipped += 1,
            _ => skipped += 1,
        }
    }
    Ok(Loaded { blobs, skipped })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn cmd(kind: u32) -> Vec<u8> {
        let mut e = vec![0u8; ENTRY_LEN];
        e[0..4].copy_from_slice(&kind.to_le_bytes());
        e
    }
    fn put_name(e: &mut [u8], at: usize, n: &str) {
        e[at..at + n.len()].copy_from_slice(n.as_bytes());
    }
    fn allocate(file: &str, align: u32, zone: u8) -> Vec<u8> {
        let mut e = cmd(CMD_ALLOCATE);
        put_name(&mut e, 4, file);
        e[60..64].copy_from_slice(&align.to_le_bytes());
        e[64] = zone;
        e
    }
    fn add_pointer(dest: &str, src: &str, offset: u32, size: u8) -> Vec<u8> {
        let mut e = cmd(CMD_ADD_POINTER);
        put_name(&mut e, 4, dest);
        put_name(&mut e, 60, src);
        e[116..120].copy_from_slice(&offset.to_le_bytes());
        e[120] = size;
        e
    }
    fn add_checksum(file: &str, at: u32, start: u32, len: u32) -> Vec<u8> {
        let mut e = cmd(CMD_ADD_CHECKSUM);
        put_name(&mut e, 4, file);
        e[60..64].copy_from_slice(&at.to_le_bytes());
        e[64..68].copy_from_slice(&start.to_le_bytes());
        e[68..72].copy_from_slice(&len.to_le_bytes());
        e
    }

    fn files(name: &str) -> Option<Vec<u8>> {
        match name {
            // rsdp: a 4-byte pointer at 4 holding offset 8 into "tables", checksum at 0 over 0..8
            "rsdp" => Some(vec![0, 0, 0, 0, 8, 0, 0, 0]),
            "tables" => Some(vec![0x11; 16]),
            _ => None,
        }
    }

    fn placer() -> impl FnMut(&str, usize, u64, Zone) -> Option<u64> {
        let mut next = 0x1000u64;
        move |_, size, align, _| {
            let at = next.div_ceil(align) * align;
            next = at + size as u64;
            Some(at)
        }
    }

    #[test]
    fn allocate_patch_checksum() {
        let script = [
            allocate("tables", 64, 1),
            allocate("rsdp", 16, 2),
            add_pointer("rsdp", "tables", 4, 4),
            add_checksum("rsdp", 0, 0, 8),
            cmd(CMD_WRITE_POINTER),
            cmd(0),
        ]
        .concat();
        let l = run(&script, files, placer()).unwrap();
        assert_eq!(l.skipped, 1);
        let tables = l.find("tables").unwrap();
        assert_eq!(tables.addr, 0x1000);
        let rsdp = l.find("rsdp").unwrap();
        assert_eq!(rsdp.addr, 0x1010);
        assert_eq!(rsdp.zone, Zone::FSeg);
        assert_eq!(
            u32::from_le_bytes(rsdp.data[4..8].try_into().unwrap()),
            0x1008
        );
        assert_eq!(rsdp.data.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        assert_eq!(l.read(0x1008, 8), Some(&[0x11u8; 8][..]));
        assert_eq!(l.read(0x100c, 8), None);
        assert_eq!(l.read_rest(0x100c).map(|r| r.len()), Some(4));
    }

    #[test]
    fn bad_scripts() {
        assert_eq!(
            run(&[0; 100], files, placer()),
            Err(LoaderError::ScriptLength(100))
        );
        let unknown = allocate("nope", 4, 1);
        assert!(matches!(
            run(&unknown, files, placer()),
            Err(LoaderError::UnknownFile { entry: 0, .. })
        ));
        let not_allocated = [allocate("rsdp", 4, 1), add_pointer("rsdp", "tables", 0, 4)].concat();
        assert!(matches!(
            run(&not_allocated, files, placer()),
            Err(LoaderError::UnknownFile { entry: 1, .. })
        ));
        let past_end = [allocate("rsdp", 4, 1), add_pointer("rsdp", "rsdp", 6, 4)].concat();
        assert!(matches!(
            run(&past_end, files, placer()),
            Err(LoaderError::OutOfRange { entry: 1, .. })
        ));
        let huge = [allocate("rsdp", 4, 1), add_checksum("rsdp", 0, 4, u32::MAX)].concat();
        assert!(matches!(
            run(&huge, files, placer()),
            Err(LoaderError::OutOfRange { .. })
        ));
        let bad_size = [allocate("rsdp", 4, 1), add_pointer("rsdp", "rsdp", 0, 3)].concat();
        assert!(matches!(
            run(&bad_size, files, placer()),
            Err(LoaderError::BadPointerSize { size: 3, .. })
        ));
        assert!(matches!(
            run(&allocate("rsdp", 3, 1), files, placer()),
            Err(LoaderError::BadAllocation { .. })
        ));
        assert!(matches!(
            run(&allocate("rsdp", 4, 7), files, placer()),
            Err(LoaderError::BadAllocation { .. })
        ));
        let twice = [allocate("rsdp", 4, 1), allocate("rsdp", 4, 1)].concat();
        assert!(matches!(
            run(&twice, files, placer()),
            Err(LoaderError::Reallocated { .. })
        ));
        let mut no_nul = allocate("rsdp", 4, 1);
        no_nul[4..60].fill(b'a');
        assert!(matches!(
            run(&no_nul, files, placer()),
            Err(LoaderError::BadName { .. })
        ));
        let full = allocate("rsdp", 4, 1);
        assert!(matches!(
            run(&full, files, |_, _, _, _| None),
            Err(LoaderError::NoMemory { .. })
        ));
    }
}
