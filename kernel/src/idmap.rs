//! The kernel's own identity map, as pure logic: which physical ranges the
//! CPU may touch, and as what (normal memory or device memory). Firmware
//! describes RAM and MMIO; the arch code asks this module to map each range
//! it learns of, with the descriptor format of its MMU ([`Format`]) and the
//! table memory it owns ([`Tables`]).
//!
//! Rules that keep a live map safe without break-before-make:
//! - an entry only ever goes from invalid to valid, never changes after;
//! - a leaf covers only addresses inside the range it was asked for, so
//!   normal memory never spills over MMIO next to it (and the reverse);
//! - a range overlapping a leaf of the other kind is refused with
//!   [`MapError::Conflict`]: firmware contradicting itself is reported,
//!   not silently resolved.
use crate::addr::PhysRange;
use core::fmt;

/// 4 KiB pages, 512 entries per table, four levels (both MMUs we drive).
pub const PAGE: u64 = 4096;
const ENTRIES: usize = 512;
const LEVELS: usize = 4;

/// What a mapped range is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemKind {
    /// RAM and firmware tables: cacheable, write-back.
    Normal,
    /// MMIO: device memory (aarch64 Device-nGnRE, x86 uncached).
    Device,
}

impl fmt::Display for MemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemKind::Normal => "normal memory",
            MemKind::Device => "device memory",
        })
    }
}

/// An MMU's descriptor format for a 4-level, 4 KiB-granule identity map.
/// Level 0 is the root; level 3 holds 4 KiB pages.
pub trait Format {
    /// Whether a leaf may sit at `level` (1: 1 GiB, 2: 2 MiB, 3: 4 KiB).
    fn leaf_allowed(&self, level: usize) -> bool;
    /// A table descriptor pointing at the table at `table`.
    fn table(&self, table: u64) -> u64;
    /// A leaf mapping `addr` at `level` as `kind`.
    fn leaf(&self, level: usize, addr: u64, kind: MemKind) -> u64;
    fn is_valid(&self, entry: u64) -> bool;
    /// Whether a valid entry at `level` points at a next-level table.
    fn is_table(&self, level: usize, entry: u64) -> bool;
    /// The table a table descriptor points at.
    fn table_addr(&self, entry: u64) -> u64;
    /// The kind of a valid leaf (`None` for an encoding this module never
    /// writes: treated as a conflict).
    fn leaf_kind(&self, level: usize, entry: u64) -> Option<MemKind>;
}

/// Zeroed table pages and access to them, owned by the caller (a static
/// pool at boot, the page allocator later; a `Vec` in the host tests).
pub trait Tables {
    /// A zeroed, 4 KiB-aligned table, by its physical address.
    fn alloc(&mut self) -> Option<u64>;
    fn read(&self, table: u64, index: usize) -> u64;
    fn write(&mut self, table: u64, index: usize, entry: u64);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapError {
    /// No table page left.
    OutOfTables,
    /// The range reaches past what the map can translate.
    BeyondReach { end: u64, limit: u64 },
    /// Part of the range is already mapped as the other kind.
    Conflict {
        at: u64,
        mapped: Option<MemKind>,
        wanted: MemKind,
    },
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapError::OutOfTables => write!(f, "no page-table page left"),
            MapError::BeyondReach { end, limit } => {
                write!(
                    f,
                    "the range ends at {end:#x}, past the map's reach {limit:#x}"
                )
            }
            MapError::Conflict { at, mapped, wanted } => match mapped {
                Some(k) => write!(f, "{at:#x} is already mapped as {k}, wanted {wanted}"),
                None => write!(f, "{at:#x} holds an entry of unknown kind, wanted {wanted}"),
            },
        }
    }
}

/// What one [`IdMap::map`] call added.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MapStats {
    /// Leaves written, per level (index 1: 1 GiB, 2: 2 MiB, 3: 4 KiB).
    pub leaves: [u32; LEVELS],
    pub tables: u32,
}

/// Bytes one entry at `level` spans.
const fn span(level: usize) -> u64 {
    PAGE << (9 * (LEVELS - 1 - level))
}

/// An identity map rooted at one table.
pub struct IdMap<F: Format> {
    fmt: F,
    root: u64,
    /// First address the map cannot reach (2^48, or less if the CPU's
    /// physical address size is smaller).
    limit: u64,
}

impl<F: Format> IdMap<F> {
    /// An empty map; `pa_bits` caps what it reaches (at most 48).
    pub fn new(fmt: F, tables: &mut impl Tables, pa_bits: u32) -> Result<Self, MapError> {
        let root = tables.alloc().ok_or(MapError::OutOfTables)?;
        Ok(IdMap {
            fmt,
            root,
            limit: 1u64 << pa_bits.min(48),
        })
    }

    /// The root table, for TTBR0 or CR3.
    pub fn root(&self) -> u64 {
        self.root
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Maps `range` (widened to whole pages) as `kind`. Parts already
    /// mapped as `kind` stay as they are; a part mapped as the other kind
    /// fails the call with nothing written beyond what was valid before
    /// the conflicting address.
    pub fn map(
        &mut self,
        tables: &mut impl Tables,
        range: PhysRange,
        kind: MemKind,
    ) -> Result<MapStats, MapError> {
        let start = range.start & !(PAGE - 1);
        let end = range.end.div_ceil(PAGE) * PAGE;
        if end > self.limit || end < range.end {
            return Err(MapError::BeyondReach {
                end: range.end,
                limit: self.limit,
            });
        }
        let mut stats = MapStats::default();
        if start < end {
            self.map_in(tables, self.root, 0, start, end, kind, &mut stats)?;
        }
        Ok(stats)
    }

    #[allow(clippy::too_many_arguments)]
    fn map_in(
        &self,
        tables: &mut impl Tables,
        table: u64,
        level: usize,
        start: u64,
        end: u64,
        kind: MemKind,
        stats: &mut MapStats,
    ) -> Result<(), MapError> {
        let size = span(level);
        let mut at = start;
        while at < end {
            let index = ((at / size) % ENTRIES as u64) as usize;
            let slot = at & !(size - 1);
            let slot_end = slot + size;
            let upto = end.min(slot_end);
            let entry = tables.read(table, index);
            if !self.fmt.is_valid(entry) {
                if at == slot && upto == slot_end && self.fmt.leaf_allowed(level) {
                    tables.write(table, index, self.fmt.leaf(level, slot, kind));
                    stats.leaves[level] += 1;
                } else {
                    let next = tables.alloc().ok_or(MapError::OutOfTables)?;
                    stats.tables += 1;
                    tables.write(table, index, self.fmt.table(next));
                    self.map_in(tables, next, level + 1, at, upto, kind, stats)?;
                }
            } else if self.fmt.is_table(level, entry) {
                let next = self.fmt.table_addr(entry);
                self.map_in(tables, next, level + 1, at, upto, kind, stats)?;
            } else {
                let mapped = self.fmt.leaf_kind(level, entry);
                if mapped != Some(kind) {
                    return Err(MapError::Conflict {
                        at,
                        mapped,
                        wanted: kind,
                    });
                }
            }
            at = upto;
        }
        Ok(())
    }

    /// How `addr` is mapped, if it is.
    pub fn kind_at(&self, tables: &impl Tables, addr: u64) -> Option<MemKind> {
        if addr >= self.limit {
            return None;
        }
        let mut table = self.root;
        for level in 0..LEVELS {
            let index = ((addr / span(level)) % ENTRIES as u64) as usize;
            let entry = tables.read(table, index);
            if !self.fmt.is_valid(entry) {
                return None;
            }
            if level < LEVELS - 1 && self.fmt.is_table(level, entry) {
                table = self.fmt.table_addr(entry);
                continue;
            }
            return self.fmt.leaf_kind(level, entry);
        }
        None
    }
}

/// The stage-1 VMSAv8-64 descriptors (4 KiB granule) the aarch64 kernel
/// uses, with MAIR index 1 for Device-nGnRE and 2 for normal write-back.
#[derive(Debug, Clone, Copy)]
pub struct Aarch64;

mod a64 {
    pub const VALID: u64 = 1 << 0;
    pub const TABLE_OR_PAGE: u64 = 1 << 1;
    pub const ATTR_MASK: u64 = 7 << 2;
    pub const ATTR_DEVICE: u64 = 1 << 2;
    pub const ATTR_NORMAL: u64 = 2 << 2;
    pub const INNER_SHAREABLE: u64 = 3 << 8;
    pub const ACCESS_FLAG: u64 = 1 << 10;
    pub const PXN: u64 = 1 << 53;
    pub const UXN: u64 = 1 << 54;
    pub const ADDR: u64 = 0x0000_ffff_ffff_f000;
}

impl Format for Aarch64 {
    fn leaf_allowed(&self, level: usize) -> bool {
        (1..=3).contains(&level)
    }
    fn table(&self, table: u64) -> u64 {
        (table & a64::ADDR) | a64::VALID | a64::TABLE_OR_PAGE
    }
    fn leaf(&self, level: usize, addr: u64, kind: MemKind) -> u64 {
        let page = if level == 3 { a64::TABLE_OR_PAGE } else { 0 };
        let attrs = match kind {
            // Device memory is never executable.
            MemKind::Device => a64::ATTR_DEVICE | a64::PXN | a64::UXN,
            MemKind::Normal => a64::ATTR_NORMAL | a64::INNER_SHAREABLE | a64::UXN,
        };
        (addr & a64::ADDR) | a64::VALID | page | a64::ACCESS_FLAG | attrs
    }
    fn is_valid(&self, entry: u64) -> bool {
        entry & a64::VALID != 0
    }
    fn is_table(&self, level: usize, entry: u64) -> bool {
        level < 3 && entry & a64::TABLE_OR_PAGE != 0
    }
    fn table_addr(&self, entry: u64) -> u64 {
        entry & a64::ADDR
    }
    fn leaf_kind(&self, _level: usize, entry: u64) -> Option<MemKind> {
        match entry & a64::ATTR_MASK {
            a64::ATTR_DEVICE => Some(MemKind::Device),
            a64::ATTR_NORMAL => Some(MemKind::Normal),
            _ => None,
        }
    }
}

/// x86-64 4-level paging; device memory is uncached through PCD|PWT
/// (PAT entry 3 at its reset value, UC). 1 GiB pages only where the CPU
/// has them (CPUID.80000001h:EDX.Page1GB).
#[derive(Debug, Clone, Copy)]
pub struct X86_64 {
    pub gib_pages: bool,
}

mod x86 {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const PWT: u64 = 1 << 3;
    pub const PCD: u64 = 1 << 4;
    pub const HUGE: u64 = 1 << 7;
    pub const ADDR: u64 = 0x000f_ffff_ffff_f000;
}

impl Format for X86_64 {
    fn leaf_allowed(&self, level: usize) -> bool {
        level == 2 || level == 3 || (level == 1 && self.gib_pages)
    }
    fn table(&self, table: u64) -> u64 {
        (table & x86::ADDR) | x86::PRESENT | x86::WRITABLE
    }
    fn leaf(&self, level: usize, addr: u64, kind: MemKind) -> u64 {
        let huge = if level < 3 { x86::HUGE } else { 0 };
        let cache = match kind {
            MemKind::Device => x86::PCD | x86::PWT,
            MemKind::Normal => 0,
        };
        (addr & x86::ADDR) | x86::PRESENT | x86::WRITABLE | huge | cache
    }
    fn is_valid(&self, entry: u64) -> bool {
        entry & x86::PRESENT != 0
    }
    fn is_table(&self, level: usize, entry: u64) -> bool {
        level == 0 || (level < 3 && entry & x86::HUGE == 0)
    }
    fn table_addr(&self, entry: u64) -> u64 {
        entry & x86::ADDR
    }
    fn leaf_kind(&self, _level: usize, entry: u64) -> Option<MemKind> {
        match entry & (x86::PCD | x86::PWT) {
            0 => Some(MemKind::Normal),
            c if c == x86::PCD | x86::PWT => Some(MemKind::Device),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Tables as a map from address to 512 entries, at made-up addresses.
    struct VecTables {
        tables: BTreeMap<u64, [u64; ENTRIES]>,
        next: u64,
        budget: usize,
    }

    impl VecTables {
        fn new(budget: usize) -> Self {
            VecTables {
                tables: BTreeMap::new(),
                next: 0x1000_0000,
                budget,
            }
        }
    }

    impl Tables for VecTables {
        fn alloc(&mut self) -> Option<u64> {
            if self.tables.len() >= self.budget {
                return None;
            }
            let at = self.next;
            self.next += PAGE;
            self.tables.insert(at, [0; ENTRIES]);
            Some(at)
        }
        fn read(&self, table: u64, index: usize) -> u64 {
            self.tables[&table][index]
        }
        fn write(&mut self, table: u64, index: usize, entry: u64) {
            self.tables.get_mut(&table).unwrap()[index] = entry;
        }
    }

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    type NewMap = fn(&mut VecTables) -> Box<dyn Check>;

    fn both() -> [(&'static str, NewMap); 2] {
        fn a64(t: &mut VecTables) -> Box<dyn Check> {
            Box::new(IdMap::new(Aarch64, t, 48).unwrap())
        }
        fn x86(t: &mut VecTables) -> Box<dyn Check> {
            Box::new(IdMap::new(X86_64 { gib_pages: true }, t, 48).unwrap())
        }
        [("aarch64", a64), ("x86_64", x86)]
    }

    /// The map behind a trait object, so one test body covers both formats.
    trait Check {
        fn map(
            &mut self,
            t: &mut VecTables,
            r: PhysRange,
            k: MemKind,
        ) -> Result<MapStats, MapError>;
        fn kind_at(&self, t: &VecTables, a: u64) -> Option<MemKind>;
    }

    impl<F: Format> Check for IdMap<F> {
        fn map(
            &mut self,
            t: &mut VecTables,
            r: PhysRange,
            k: MemKind,
        ) -> Result<MapStats, MapError> {
            IdMap::map(self, t, r, k)
        }
        fn kind_at(&self, t: &VecTables, a: u64) -> Option<MemKind> {
            IdMap::kind_at(self, t, a)
        }
    }

    #[test]
    fn ram_takes_the_largest_leaves_that_fit_and_nothing_beyond() {
        for (name, new) in both() {
            let mut t = VecTables::new(64);
            let mut m = new(&mut t);
            // 1 MiB .. 3 GiB + 6 MiB + 12 KiB: 4 KiB pages up to 2 MiB, 2 MiB
            // leaves up to 1 GiB, two 1 GiB leaves, three 2 MiB, three pages.
            let ram = PhysRange {
                start: MIB,
                end: 3 * GIB + 6 * MIB + 12 * 1024,
            };
            let s = m.map(&mut t, ram, MemKind::Normal).unwrap();
            assert_eq!(s.leaves, [0, 2, 511 + 3, 256 + 3], "{name}");
            assert_eq!(m.kind_at(&t, MIB), Some(MemKind::Normal), "{name}");
            assert_eq!(m.kind_at(&t, MIB - 1), None, "{name}: below the range");
            assert_eq!(m.kind_at(&t, ram.end - 1), Some(MemKind::Normal), "{name}");
            assert_eq!(m.kind_at(&t, ram.end), None, "{name}: past the range");
            assert_eq!(m.kind_at(&t, 2 * GIB + 5), Some(MemKind::Normal), "{name}");
        }
    }

    #[test]
    fn device_next_to_ram_in_one_2mib_slot_stays_device() {
        for (name, new) in both() {
            let mut t = VecTables::new(64);
            let mut m = new(&mut t);
            let ram = PhysRange::new(0x4000_0000, 0x10_0000);
            let mmio = PhysRange::new(0x4010_0000, 0x1000);
            m.map(&mut t, ram, MemKind::Normal).unwrap();
            m.map(&mut t, mmio, MemKind::Device).unwrap();
            assert_eq!(m.kind_at(&t, 0x400f_f000), Some(MemKind::Normal), "{name}");
            assert_eq!(m.kind_at(&t, 0x4010_0000), Some(MemKind::Device), "{name}");
            assert_eq!(m.kind_at(&t, 0x4010_1000), None, "{name}");
        }
    }

    #[test]
    fn overlap_of_the_other_kind_is_refused_and_the_same_kind_is_kept() {
        for (name, new) in both() {
            let mut t = VecTables::new(64);
            let mut m = new(&mut t);
            m.map(&mut t, PhysRange::new(0, GIB), MemKind::Normal)
                .unwrap();
            let e = m
                .map(&mut t, PhysRange::new(0x3000_0000, 0x1000), MemKind::Device)
                .unwrap_err();
            assert_eq!(
                e,
                MapError::Conflict {
                    at: 0x3000_0000,
                    mapped: Some(MemKind::Normal),
                    wanted: MemKind::Device
                },
                "{name}"
            );
            // Mapping a part again as what it is changes nothing.
            let s = m
                .map(
                    &mut t,
                    PhysRange::new(0x1000_0000, 0x20_0000),
                    MemKind::Normal,
                )
                .unwrap();
            assert_eq!(s, MapStats::default(), "{name}");
        }
    }

    #[test]
    fn a_huge_window_is_cheap_and_the_reach_is_checked() {
        let mut t = VecTables::new(8);
        let mut m = IdMap::new(X86_64 { gib_pages: true }, &mut t, 46).unwrap();
        let window = PhysRange::new(0xc0_0000_0000, 0x40_0000_0000);
        let s = m.map(&mut t, window, MemKind::Device).unwrap();
        assert_eq!((s.leaves[1], s.tables), (256, 1));
        assert_eq!(
            m.map(&mut t, PhysRange::new(1 << 46, 0x1000), MemKind::Device),
            Err(MapError::BeyondReach {
                end: (1 << 46) + 0x1000,
                limit: 1 << 46
            })
        );
        // Without 1 GiB pages the same window costs a table per GiB.
        let mut t = VecTables::new(300);
        let mut m = IdMap::new(X86_64 { gib_pages: false }, &mut t, 46).unwrap();
        let s = m.map(&mut t, window, MemKind::Device).unwrap();
        assert_eq!((s.leaves[2], s.tables), (256 * 512, 257));
    }

    #[test]
    fn running_out_of_tables_is_an_error() {
        let mut t = VecTables::new(2);
        let mut m = IdMap::new(Aarch64, &mut t, 48).unwrap();
        assert_eq!(
            m.map(&mut t, PhysRange::new(0x1000, 0x1000), MemKind::Normal),
            Err(MapError::OutOfTables)
        );
    }

    #[test]
    fn encodings_are_what_each_mmu_expects() {
        let a = Aarch64;
        // Device block: AttrIndx 1, AF, PXN|UXN, no shareability bits.
        assert_eq!(
            a.leaf(2, 0x0900_0000, MemKind::Device),
            0x0060_0000_0900_0405
        );
        // Normal page: AttrIndx 2, inner shareable, AF, UXN, page bit.
        assert_eq!(
            a.leaf(3, 0x4000_1000, MemKind::Normal),
            0x0040_0000_4000_170b
        );
        let x = X86_64 { gib_pages: true };
        assert_eq!(x.leaf(2, 0xb000_0000, MemKind::Device), 0xb000_009b);
        assert_eq!(x.leaf(3, 0x1000, MemKind::Normal), 0x1003);
        assert!(!x.is_table(2, x.leaf(2, 0, MemKind::Normal)));
        assert!(x.is_table(2, x.table(0x5000)));
    }
}
