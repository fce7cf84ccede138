//! The hand-over block our UEFI loader (`kernel/efi`) leaves for the kernel,
//! and the UEFI memory map it points to.
//!
//! The block is `#[repr(C)]` little-endian; the loader builds it with
//! [`Handoff::to_bytes`] and the kernel reads it back with
//! [`Handoff::parse`], so both sides share one layout. Everything is decoded
//! from bytes: the kernel copies the block and the map out of firmware
//! memory first and never trusts a length it has not checked.
use crate::addr::PhysRange;
use alloc::vec::Vec;
use core::fmt;

/// ASCII "IOMMHOF1", read as a little-endian u64.
pub const MAGIC: u64 = 0x3146_4f48_4d4d_4f49;
pub const VERSION: u32 = 1;
/// Bytes in a version-1 block; a later version may append fields.
pub const SIZE: usize = 112;
/// `EFI_MEMORY_DESCRIPTOR` as UEFI 2.x defines it; firmware may use a
/// larger stride (`descriptor_size`), never a smaller one.
pub const EFI_DESCRIPTOR_SIZE: u64 = 40;
const EFI_PAGE: u64 = 4096;

/// The hand-over block, field by field (all physical addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Handoff {
    pub cmdline_addr: u64,
    /// UTF-8 bytes, no NUL.
    pub cmdline_len: u64,
    pub memory_map_addr: u64,
    pub memory_map_size: u64,
    pub descriptor_size: u64,
    pub descriptor_version: u32,
    /// 0: none.
    pub acpi_rsdp: u64,
    pub devicetree_addr: u64,
    /// 0: none.
    pub devicetree_size: u64,
    pub efi_system_table: u64,
    /// Where the loader put the kernel.
    pub image_base: u64,
    pub image_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandoffError {
    /// Fewer bytes than a block (or than its `size` says).
    Short {
        have: usize,
        need: usize,
    },
    BadMagic(u64),
    BadVersion(u32),
    /// `size` smaller than a version-1 block.
    BadSize(u32),
    /// The map's stride cannot hold an `EFI_MEMORY_DESCRIPTOR`.
    DescriptorTooSmall(u64),
    /// The map's size is not a whole number of descriptors.
    RaggedMap {
        size: u64,
        descriptor_size: u64,
    },
    /// A descriptor whose range wraps the address space.
    RangeOverflow {
        start: u64,
        pages: u64,
    },
    /// Two descriptors claim the same memory.
    Overlap {
        first: PhysRange,
        second: PhysRange,
    },
}

impl fmt::Display for HandoffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandoffError::Short { have, need } => {
                write!(f, "hand-over block: {have} bytes, need {need}")
            }
            HandoffError::BadMagic(m) => write!(
                f,
                "hand-over magic {m:#x}, expected {MAGIC:#x} (\"IOMMHOF1\"): not our loader?"
            ),
            HandoffError::BadVersion(v) => {
                write!(f, "hand-over version {v}, this kernel reads {VERSION}")
            }
            HandoffError::BadSize(s) => {
                write!(f, "hand-over size {s}, a version-1 block is {SIZE}")
            }
            HandoffError::DescriptorTooSmall(s) => write!(
                f,
                "UEFI memory descriptor size {s}, smaller than a descriptor ({EFI_DESCRIPTOR_SIZE})"
            ),
            HandoffError::RaggedMap {
                size,
                descriptor_size,
            } => write!(
                f,
                "UEFI memory map of {size} bytes is not a whole number of {descriptor_size}-byte descriptors"
            ),
            HandoffError::RangeOverflow { start, pages } => write!(
                f,
                "UEFI memory descriptor at {start:#x} with {pages} pages wraps the address space"
            ),
            HandoffError::Overlap { first, second } => {
                write!(f, "UEFI memory map: {first} overlaps {second}")
            }
        }
    }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut v = [0; 4];
    v.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(v)
}

// Field offsets of the version-1 layout.
const MAGIC_AT: usize = 0;
const VERSION_AT: usize = 8;
const SIZE_AT: usize = 12;
const CMDLINE_ADDR_AT: usize = 16;
const CMDLINE_LEN_AT: usize = 24;
const MAP_ADDR_AT: usize = 32;
const MAP_SIZE_AT: usize = 40;
const DESC_SIZE_AT: usize = 48;
const DESC_VERSION_AT: usize = 56;
const RSDP_AT: usize = 64;
const DT_ADDR_AT: usize = 72;
const DT_SIZE_AT: usize = 80;
const SYSTAB_AT: usize = 88;
const IMAGE_BASE_AT: usize = 96;
const IMAGE_SIZE_AT: usize = 104;

impl Handoff {
    /// Reads a block from `bytes` (at least its header; the caller reads
    /// [`SIZE`] bytes at the address it was given).
    pub fn parse(bytes: &[u8]) -> Result<Handoff, HandoffError> {
        if bytes.len() < SIZE_AT + 4 {
            return Err(HandoffError::Short {
                have: bytes.len(),
                need: SIZE,
            });
        }
        let magic = u64_at(bytes, MAGIC_AT);
        if magic != MAGIC {
            return Err(HandoffError::BadMagic(magic));
        }
        let version = u32_at(bytes, VERSION_AT);
        if version != VERSION {
            return Err(HandoffError::BadVersion(version));
        }
        let size = u32_at(bytes, SIZE_AT);
        if (size as usize) < SIZE {
            return Err(HandoffError::BadSize(size));
        }
        if bytes.len() < SIZE {
            return Err(HandoffError::Short {
                have: bytes.len(),
                need: SIZE,
            });
        }
        let h = Handoff {
            cmdline_addr: u64_at(bytes, CMDLINE_ADDR_AT),
            cmdline_len: u64_at(bytes, CMDLINE_LEN_AT),
            memory_map_addr: u64_at(bytes, MAP_ADDR_AT),
            memory_map_size: u64_at(bytes, MAP_SIZE_AT),
            descriptor_size: u64_at(bytes, DESC_SIZE_AT),
            descriptor_version: u32_at(bytes, DESC_VERSION_AT),
            acpi_rsdp: u64_at(bytes, RSDP_AT),
            devicetree_addr: u64_at(bytes, DT_ADDR_AT),
            devicetree_size: u64_at(bytes, DT_SIZE_AT),
            efi_system_table: u64_at(bytes, SYSTAB_AT),
            image_base: u64_at(bytes, IMAGE_BASE_AT),
            image_size: u64_at(bytes, IMAGE_SIZE_AT),
        };
        if h.descriptor_size < EFI_DESCRIPTOR_SIZE {
            return Err(HandoffError::DescriptorTooSmall(h.descriptor_size));
        }
        if !h.memory_map_size.is_multiple_of(h.descriptor_size) {
            return Err(HandoffError::RaggedMap {
                size: h.memory_map_size,
                descriptor_size: h.descriptor_size,
            });
        }
        Ok(h)
    }

    /// The block as the loader writes it.
    pub fn to_bytes(&self) -> [u8; SIZE] {
        let mut b = [0u8; SIZE];
        let mut put64 = |off: usize, v: u64| b[off..off + 8].copy_from_slice(&v.to_le_bytes());
        put64(MAGIC_AT, MAGIC);
        put64(CMDLINE_ADDR_AT, self.cmdline_addr);
        put64(CMDLINE_LEN_AT, self.cmdline_len);
        put64(MAP_ADDR_AT, self.memory_map_addr);
        put64(MAP_SIZE_AT, self.memory_map_size);
        put64(DESC_SIZE_AT, self.descriptor_size);
        put64(RSDP_AT, self.acpi_rsdp);
        put64(DT_ADDR_AT, self.devicetree_addr);
        put64(DT_SIZE_AT, self.devicetree_size);
        put64(SYSTAB_AT, self.efi_system_table);
        put64(IMAGE_BASE_AT, self.image_base);
        put64(IMAGE_SIZE_AT, self.image_size);
        b[VERSION_AT..VERSION_AT + 4].copy_from_slice(&VERSION.to_le_bytes());
        b[SIZE_AT..SIZE_AT + 4].copy_from_slice(&(SIZE as u32).to_le_bytes());
        b[DESC_VERSION_AT..DESC_VERSION_AT + 4]
            .copy_from_slice(&self.descriptor_version.to_le_bytes());
        b
    }

    /// What the kernel must keep out of its page allocator besides the
    /// block itself (at `block_addr`): the memory map, the command line,
    /// the devicetree and the kernel image, each widened to whole pages.
    pub fn boot_data(&self, block_addr: u64) -> Vec<(PhysRange, &'static str)> {
        [
            (block_addr, SIZE as u64, "UEFI hand-over block"),
            (
                self.memory_map_addr,
                self.memory_map_size,
                "UEFI memory map",
            ),
            (self.cmdline_addr, self.cmdline_len, "command line"),
            (self.devicetree_addr, self.devicetree_size, "devicetree"),
            (self.image_base, self.image_size, "kernel image"),
        ]
        .into_iter()
        .filter(|&(addr, len, _)| addr != 0 && len != 0)
        .map(|(addr, len, what)| {
            let start = addr & !(EFI_PAGE - 1);
            let end = addr.saturating_add(len).div_ceil(EFI_PAGE) * EFI_PAGE;
            (PhysRange { start, end }, what)
        })
        .collect()
    }
}

/// Where an arm64 kernel started through UEFI takes the machine's facts
/// (interrupt controller, CPUs, timer, PSCI, console) from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactsSource {
    /// The ACPI tables at the RSDP.
    Acpi(u64),
    /// The devicetree firmware installed (ACPI may still be there, for
    /// discovery's IORT).
    Devicetree,
    /// Firmware gave neither: nothing to boot from.
    Neither,
}

impl Handoff {
    /// As Linux on arm64 decides: the devicetree when firmware gave one,
    /// unless the command line says `acpi=force` (`acpi_force`) and
    /// there is an RSDP; ACPI when it is all there is.
    pub fn facts_source(&self, acpi_force: bool) -> FactsSource {
        let has_dt = self.devicetree_addr != 0 && self.devicetree_size != 0;
        match (self.acpi_rsdp, has_dt) {
            (0, true) => FactsSource::Devicetree,
            (0, false) => FactsSource::Neither,
            (rsdp, false) => FactsSource::Acpi(rsdp),
            (rsdp, true) if acpi_force => FactsSource::Acpi(rsdp),
            (_, true) => FactsSource::Devicetree,
        }
    }
}

/// The whole pages holding a block at `addr` (x1 at an arm64 entry), to
/// map before the block is read: `None` for 0 (U-Boot and QEMU pass 0)
/// or an address no block of ours could have (unaligned, wrapping).
pub fn block_pages(addr: u64) -> Option<PhysRange> {
    if addr == 0 || !addr.is_multiple_of(8) {
        return None;
    }
    let end = addr.checked_add(SIZE as u64)?.checked_add(EFI_PAGE - 1)?;
    Some(PhysRange {
        start: addr & !(EFI_PAGE - 1),
        end: end & !(EFI_PAGE - 1),
    })
}

/// `EFI_MEMORY_TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryType {
    Reserved,
    LoaderCode,
    LoaderData,
    BootServicesCode,
    BootServicesData,
    RuntimeServicesCode,
    RuntimeServicesData,
    Conventional,
    Unusable,
    AcpiReclaim,
    AcpiNvs,
    Mmio,
    MmioPortSpace,
    PalCode,
    Persistent,
    Unaccepted,
    /// OEM or OS-loader types (0x7000_0000 and up), or one we do not know.
    Other(u32),
}

impl MemoryType {
    pub fn from_raw(v: u32) -> MemoryType {
        use MemoryType::*;
        match v {
            0 => Reserved,
            1 => LoaderCode,
            2 => LoaderData,
            3 => BootServicesCode,
            4 => BootServicesData,
            5 => RuntimeServicesCode,
            6 => RuntimeServicesData,
            7 => Conventional,
            8 => Unusable,
            9 => AcpiReclaim,
            10 => AcpiNvs,
            11 => Mmio,
            12 => MmioPortSpace,
            13 => PalCode,
            14 => Persistent,
            15 => Unaccepted,
            other => Other(other),
        }
    }

    /// RAM the kernel may use once boot services are gone. Runtime
    /// services and ACPI memory stay firmware's (we keep the tables we
    /// read in place); persistent memory is storage, not RAM; unaccepted
    /// memory must be accepted first, which we do not do.
    pub fn is_ram(self) -> bool {
        use MemoryType::*;
        matches!(
            self,
            LoaderCode | LoaderData | BootServicesCode | BootServicesData | Conventional
        )
    }
}

/// The map split into what the page allocator may use and what it may not.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemoryMap {
    /// Usable RAM, sorted, adjacent descriptors merged.
    pub ram: Vec<PhysRange>,
    /// Everything else the map describes, sorted, with its type.
    pub reserved: Vec<(PhysRange, MemoryType)>,
}

/// Decodes an `EFI_MEMORY_DESCRIPTOR` array of `descriptor_size`-byte
/// strides (as GetMemoryMap returned it).
pub fn decode_memory_map(map: &[u8], descriptor_size: u64) -> Result<MemoryMap, HandoffError> {
    if descriptor_size < EFI_DESCRIPTOR_SIZE {
        return Err(HandoffError::DescriptorTooSmall(descriptor_size));
    }
    if !(map.len() as u64).is_multiple_of(descriptor_size) {
        return Err(HandoffError::RaggedMap {
            size: map.len() as u64,
            descriptor_size,
        });
    }
    let mut all: Vec<(PhysRange, MemoryType)> = Vec::new();
    for d in map.chunks_exact(descriptor_size as usize) {
        let kind = MemoryType::from_raw(u32_at(d, 0));
        let start = u64_at(d, 8);
        let pages = u64_at(d, 24);
        if pages == 0 {
            continue;
        }
        let end = pages
            .checked_mul(EFI_PAGE)
            .and_then(|len| start.checked_add(len))
            .ok_or(HandoffError::RangeOverflow { start, pages })?;
        all.push((PhysRange { start, end }, kind));
    }
    all.sort_by_key(|(r, _)| r.start);
    for w in all.windows(2) {
        if w[1].0.start < w[0].0.end {
            return Err(HandoffError::Overlap {
                first: w[0].0,
                second: w[1].0,
            });
        }
    }
    let mut out = MemoryMap::default();
    for (r, kind) in all {
        if !kind.is_ram() {
            out.reserved.push((r, kind));
            continue;
        }
        match out.ram.last_mut() {
            Some(last) if last.end == r.start => last.end = r.end,
            _ => out.ram.push(r),
        }
    }
    Ok(out)
}

/// One descriptor as firmware writes it, for the loader's and the tests'
/// use: type, physical start, page count, attributes.
pub fn encode_descriptor(kind: u32, start: u64, pages: u64, attribute: u64) -> [u8; 40] {
    let mut d = [0u8; 40];
    d[0..4].copy_from_slice(&kind.to_le_bytes());
    d[8..16].copy_from_slice(&start.to_le_bytes());
    d[16..24].copy_from_slice(&start.to_le_bytes());
    d[24..32].copy_from_slice(&pages.to_le_bytes());
    d[32..40].copy_from_slice(&attribute.to_le_bytes());
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Handoff {
        Handoff {
            cmdline_addr: 0x7000_1000,
            cmdline_len: 20,
            memory_map_addr: 0x7000_2000,
            memory_map_size: 48 * 3,
            descriptor_size: 48,
            descriptor_version: 1,
            acpi_rsdp: 0x7fbf_e014,
            devicetree_addr: 0,
            devicetree_size: 0,
            efi_system_table: 0x7fbe_e018,
            image_base: 0x4000_0000,
            image_size: 0xe3_2000,
        }
    }

    #[test]
    fn round_trips() {
        let b = block().to_bytes();
        assert_eq!(&b[0..8], b"IOMMHOF1");
        assert_eq!(Handoff::parse(&b), Ok(block()));
    }

    #[test]
    fn layout_matches_the_shared_definition() {
        let b = block().to_bytes();
        assert_eq!(u32_at(&b, 8), 1);
        assert_eq!(u32_at(&b, 12), 112);
        assert_eq!(u64_at(&b, 48), 48);
        assert_eq!(u32_at(&b, 56), 1);
        assert_eq!(u32_at(&b, 60), 0, "padding");
        assert_eq!(u64_at(&b, 64), 0x7fbf_e014);
        assert_eq!(u64_at(&b, 104), 0xe3_2000);
    }

    #[test]
    fn bad_magic_is_refused() {
        let mut b = block().to_bytes();
        b[0] ^= 1;
        assert!(matches!(Handoff::parse(&b), Err(HandoffError::BadMagic(_))));
    }

    #[test]
    fn bad_version_is_refused() {
        let mut b = block().to_bytes();
        b[8] = 2;
        assert_eq!(Handoff::parse(&b), Err(HandoffError::BadVersion(2)));
    }

    #[test]
    fn short_block_is_refused() {
        let b = block().to_bytes();
        assert_eq!(
            Handoff::parse(&b[..100]),
            Err(HandoffError::Short {
                have: 100,
                need: SIZE
            })
        );
        assert!(matches!(
            Handoff::parse(&b[..4]),
            Err(HandoffError::Short { .. })
        ));
        let mut small = b;
        small[12..16].copy_from_slice(&64u32.to_le_bytes());
        assert_eq!(Handoff::parse(&small), Err(HandoffError::BadSize(64)));
    }

    #[test]
    fn a_longer_block_of_a_later_layout_is_read() {
        let mut b = block().to_bytes().to_vec();
        b.extend_from_slice(&[0xaa; 16]);
        b[12..16].copy_from_slice(&128u32.to_le_bytes());
        assert_eq!(Handoff::parse(&b), Ok(block()));
    }

    #[test]
    fn descriptor_smaller_than_a_descriptor_is_refused() {
        let mut h = block();
        h.descriptor_size = 24;
        h.memory_map_size = 48;
        assert_eq!(
            Handoff::parse(&h.to_bytes()),
            Err(HandoffError::DescriptorTooSmall(24))
        );
        assert_eq!(
            decode_memory_map(&[0; 48], 24),
            Err(HandoffError::DescriptorTooSmall(24))
        );
    }

    #[test]
    fn ragged_map_is_refused() {
        let mut h = block();
        h.memory_map_size = 100;
        assert!(matches!(
            Handoff::parse(&h.to_bytes()),
            Err(HandoffError::RaggedMap { .. })
        ));
    }

    /// A map with firmware's larger stride (OVMF uses 48 bytes).
    fn map(entries: &[(u32, u64, u64)]) -> Vec<u8> {
        let mut m = Vec::new();
        for &(kind, start, pages) in entries {
            m.extend_from_slice(&encode_descriptor(kind, start, pages, 0xf));
            m.extend_from_slice(&[0; 8]);
        }
        m
    }

    #[test]
    fn memory_types_split_into_ram_and_reserved() {
        let m = map(&[
            (7, 0x10_0000, 0x700),      // conventional 1..8 MiB
            (10, 0x80_0000, 0x8),       // ACPI NVS at 8 MiB
            (1, 0x80_8000, 0x10),       // loader code
            (2, 0x81_8000, 0x10),       // loader data
            (3, 0x82_8000, 0x10),       // boot services code
            (4, 0x83_8000, 0x10),       // boot services data
            (5, 0x84_8000, 0x1),        // runtime code
            (6, 0x84_9000, 0x1),        // runtime data
            (9, 0x84_a000, 0x1),        // ACPI reclaim
            (14, 0x1_0000_0000, 0x10),  // persistent: not RAM
            (11, 0xb000_0000, 0x10000), // MMIO (ECAM)
            (0, 0x0, 0x1),              // reserved page 0
            (7, 0x1000, 0x9f),          // conventional low memory
            (15, 0x2_0000_0000, 0x10),  // unaccepted
        ]);
        let mm = decode_memory_map(&m, 48).unwrap();
        assert_eq!(
            mm.ram,
            [
                PhysRange {
                    start: 0x1000,
                    end: 0xa0000
                },
                PhysRange {
                    start: 0x10_0000,
                    end: 0x80_0000
                },
                PhysRange {
                    start: 0x80_8000,
                    end: 0x84_8000
                },
            ]
        );
        let kinds: Vec<MemoryType> = mm.reserved.iter().map(|&(_, k)| k).collect();
        assert_eq!(
            kinds,
            [
                MemoryType::Reserved,
                MemoryType::AcpiNvs,
                MemoryType::RuntimeServicesCode,
                MemoryType::RuntimeServicesData,
                MemoryType::AcpiReclaim,
                MemoryType::Mmio,
                MemoryType::Persistent,
                MemoryType::Unaccepted,
            ]
        );
    }

    #[test]
    fn overlapping_descriptors_are_refused() {
        let m = map(&[(7, 0x10_0000, 0x100), (4, 0x1ff_000, 0x2)]);
        assert!(matches!(
            decode_memory_map(&m, 48),
            Err(HandoffError::Overlap { .. })
        ));
    }

    #[test]
    fn wrapping_descriptor_is_refused() {
        let m = map(&[(7, 0xffff_ffff_ffff_0000, 0x100)]);
        assert!(matches!(
            decode_memory_map(&m, 48),
            Err(HandoffError::RangeOverflow { .. })
        ));
    }

    #[test]
    fn boot_data_covers_whole_pages_and_skips_absent_parts() {
        let got = block().boot_data(0x7000_0010);
        let names: Vec<&str> = got.iter().map(|&(_, w)| w).collect();
        assert_eq!(
            names,
            [
                "UEFI hand-over block",
                "UEFI memory map",
                "command line",
                "kernel image"
            ]
        );
        assert_eq!(
            got[0].0,
            PhysRange {
                start: 0x7000_0000,
                end: 0x7000_1000
            }
        );
    }

    #[test]
    fn facts_come_from_the_devicetree_unless_acpi_is_all_there_is_or_forced() {
        let acpi_only = block();
        assert_eq!(
            acpi_only.facts_source(false),
            FactsSource::Acpi(0x7fbf_e014)
        );
        let both = Handoff {
            devicetree_addr: 0x7e00_0000,
            devicetree_size: 0x10_0000,
            ..block()
        };
        assert_eq!(both.facts_source(false), FactsSource::Devicetree);
        assert_eq!(both.facts_source(true), FactsSource::Acpi(0x7fbf_e014));
        let dt_only = Handoff {
            acpi_rsdp: 0,
            ..both
        };
        assert_eq!(dt_only.facts_source(true), FactsSource::Devicetree);
        // An address without a size is no devicetree.
        let neither = Handoff {
            acpi_rsdp: 0,
            devicetree_addr: 0x7e00_0000,
            ..block()
        };
        assert_eq!(neither.facts_source(false), FactsSource::Neither);
    }

    #[test]
    fn block_pages_cover_the_block_and_refuse_what_no_loader_passes() {
        assert_eq!(block_pages(0), None);
        assert_eq!(block_pages(0x7000_0004), None);
        assert_eq!(block_pages(u64::MAX - 15), None);
        assert_eq!(
            block_pages(0x7000_0010),
            Some(PhysRange {
                start: 0x7000_0000,
                end: 0x7000_1000
            })
        );
        // A block that crosses a page boundary needs both pages.
        assert_eq!(
            block_pages(0x7000_0fc0),
            Some(PhysRange {
                start: 0x7000_0000,
                end: 0x7000_2000
            })
        );
    }
}
