//! I/O page tables (the `io-pgtable` layer): one radix-tree engine, 512
//! entries of 8 bytes per 4 KiB table, over the descriptor formats of
//! [`arm`] (VMSAv8-64 stage 1 and stage 2) and [`x86`] (x86-64 4-level
//! paging as VT-d first-level translation uses it, and the VT-d
//! second-level format with 3 or 4 levels).
//!
//! The engine maps with the largest leaf the format allows where both
//! addresses are aligned, splits a block when an unmap covers part of it,
//! frees tables that become empty, and gathers what an unmap did (ranges,
//! freed tables) so the driver invalidates once per batch and only then
//! lets the tables go ([`Gather::release`]). Bad requests (misaligned,
//! overflowing, overlapping, unmapping what is not mapped) fail with a
//! [`PgError`] before anything changes.
//!
//! Table memory comes through [`TableMemory`]: the kernel's page
//! allocator on the target, a map of boxed tables on the host.

pub mod arm;
pub mod x86;

#[cfg(test)]
mod tests;

use alloc::vec::Vec;
use core::fmt;

pub const PAGE_SHIFT: u32 = 12;
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
pub const ENTRIES: usize = 512;
const BITS_PER_LEVEL: u32 = 9;

/// What a device may do through a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prot {
    pub read: bool,
    pub write: bool,
    /// Instruction fetch (formats without an execute control ignore it).
    pub exec: bool,
    /// Only privileged requests (formats without the distinction ignore it).
    pub privileged: bool,
    /// Device memory (MMIO, an MSI doorbell) rather than normal cacheable RAM.
    pub device: bool,
}

impl Prot {
    pub const RW: Prot = Prot {
        read: true,
        write: true,
        exec: false,
        privileged: false,
        device: false,
    };
    pub const RO: Prot = Prot {
        write: false,
        ..Prot::RW
    };
    pub const WO: Prot = Prot {
        read: false,
        ..Prot::RW
    };
}

/// One entry, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pte {
    Invalid,
    /// Points at the next level's table.
    Table(u64),
    /// Maps `1 << level_shift` bytes at this output address.
    Leaf {
        pa: u64,
        prot: Prot,
    },
}

/// A descriptor format. Levels count from 0 at the root; an entry at level
/// `l` of an `n`-level table covers `1 << (12 + 9 * (n - 1 - l))` bytes.
pub trait Format {
    fn name(&self) -> &'static str;
    fn levels(&self) -> usize;
    /// Output address bits the format can hold.
    fn oas(&self) -> u32;
    /// Whether level `l` may hold a leaf (always true for the last level).
    fn leaf_allowed(&self, level: usize) -> bool;
    fn encode_table(&self, table: u64, level: usize) -> u64;
    fn encode_leaf(&self, pa: u64, level: usize, prot: Prot) -> u64;
    fn decode(&self, entry: u64, level: usize) -> Pte;

    /// Whether leaves can carry dirty state that the IOMMU sets on a
    /// write (x86 D; Arm DBM with the write permission off until written).
    fn tracks_dirty(&self) -> bool {
        false
    }
    /// The writable leaf `entry` made clean (the next write through it
    /// makes it dirty); `None` for a read-only leaf or a format without
    /// dirty state.
    fn clean(&self, _entry: u64, _level: usize) -> Option<u64> {
        None
    }
    /// The leaf `entry` as the IOMMU leaves it after a write.
    fn dirtied(&self, entry: u64, _level: usize) -> u64 {
        entry
    }
    /// Whether the leaf `entry` is dirty (written since it was cleaned).
    fn is_dirty(&self, _entry: u64, _level: usize) -> bool {
        false
    }

    /// Input address bits.
    fn ias(&self) -> u32 {
        PAGE_SHIFT + BITS_PER_LEVEL * self.levels() as u32
    }
}

/// What [`PageTable`]'s leaf walks call for each leaf: the format, the
/// entry, its level and its (base, size); an entry it returns replaces it.
type LeafVisitor<'a, F> = dyn FnMut(&F, u64, usize, (u64, u64)) -> Option<u64> + 'a;

/// log2 of the size an entry at `level` maps.
#[inline]
pub fn level_shift(levels: usize, level: usize) -> u32 {
    PAGE_SHIFT + BITS_PER_LEVEL * (levels - 1 - level) as u32
}

/// Where tables live. `alloc` returns a zeroed 4 KiB table's physical
/// address (what the hardware walker follows).
pub trait TableMemory {
    fn alloc(&mut self) -> Option<u64>;
    fn free(&mut self, table: u64);
    fn read(&self, table: u64, index: usize) -> u64;
    fn write(&mut self, table: u64, index: usize, value: u64);
    /// Orders the writes so far before the next one: called between
    /// filling a table and the write that links it, so a walker that
    /// follows the link never reads the table's old contents.
    fn barrier(&mut self) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgError {
    /// An address or size is not a multiple of 4 KiB, or the size is 0.
    Misaligned { iova: u64, pa: u64, size: u64 },
    /// The range runs past the input (or output) address size, or wraps.
    OutOfRange { iova: u64, size: u64 },
    /// Part of the range is mapped already (at `iova`).
    Overlap { iova: u64 },
    /// Part of the range is not mapped (at `iova`).
    NotMapped { iova: u64 },
    /// No memory for a table.
    NoMemory,
    /// The format keeps no dirty state.
    NoDirtyTracking,
    /// A mapping that allows neither reads nor writes (unmap instead).
    NoAccess { iova: u64 },
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PgError::Misaligned { iova, pa, size } => write!(
                f,
                "iova {iova:#x}, pa {pa:#x}, size {size:#x}: not 4 KiB aligned (or empty)"
            ),
            PgError::OutOfRange { iova, size } => {
                write!(f, "iova {iova:#x} + {size:#x}: outside the address size")
            }
            PgError::Overlap { iova } => write!(f, "iova {iova:#x} is mapped already"),
            PgError::NotMapped { iova } => write!(f, "iova {iova:#x} is not mapped"),
            PgError::NoMemory => f.write_str("no memory for a page table"),
            PgError::NoDirtyTracking => f.write_str("the table format keeps no dirty state"),
            PgError::NoAccess { iova } => {
                write!(f, "iova {iova:#x}: a mapping must allow reads or writes")
            }
        }
    }
}

/// What one or more unmaps did, for the driver's invalidation: the IOVA
/// ranges whose translations changed, and the tables no longer linked. The
/// tables stay allocated until [`Gather::release`], which the driver calls
/// after its invalidation completed, so a walker that still holds one
/// never sees it reused.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Gather {
    pub ranges: Vec<(u64, u64)>,
    pub freed_tables: Vec<u64>,
}

impl Gather {
    /// Adds `[iova, iova + size)`, merging with the previous range when
    /// they touch (unmaps usually come in order).
    #[inline]
    pub fn add_range(&mut self, iova: u64, size: u64) {
        if let Some(last) = self.ranges.last_mut() {
            if last.0 + last.1 == iova {
                last.1 += size;
                return;
            }
        }
        self.ranges.push((iova, size));
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty() && self.freed_tables.is_empty()
    }

    /// Frees the gathered tables: only once the IOTLB and walk caches were
    /// invalidated for [`Gather::ranges`].
    pub fn release<M: TableMemory + ?Sized>(&mut self, mem: &mut M) {
        for t in self.freed_tables.drain(..) {
            mem.free(t);
        }
        self.ranges.clear();
    }
}

/// Whether `table` has no valid entry, looking first near `hint` (where an
/// entry was just cleared): unmaps usually run in order, so a live
/// neighbour is usually right there.
#[inline]
fn table_empty<M: TableMemory + ?Sized>(mem: &M, table: u64, hint: usize) -> bool {
    (hint..ENTRIES)
        .chain(0..hint)
        .all(|k| mem.read(table, k) == 0)
}

/// Whether every entry of `table` but `skip` is zero.
fn table_empty_but<M: TableMemory + ?Sized>(mem: &M, table: u64, skip: usize) -> bool {
    // No early exit: the whole-table OR vectorizes, and the early exit
    // would rarely come (this runs when the neighbours are empty).
    (0..ENTRIES).fold(0, |acc, k| {
        acc | if k == skip { 0 } else { mem.read(table, k) }
    }) == 0
}

/// A translation found by [`PageTable::lookup`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub pa: u64,
    pub prot: Prot,
    /// The size of the leaf that maps it (4 KiB, 2 MiB, 1 GiB).
    pub leaf_size: u64,
}

/// One I/O page table.
#[derive(Debug)]
pub struct PageTable<F: Format> {
    fmt: F,
    root: u64,
    tables: usize,
    /// The last-level table that served the latest walk, with the region
    /// it covers (`va >> shift(levels - 2)`): consecutive pages share it,
    /// so most walks start there. Forgotten whenever a table is unlinked.
    leaf_table: core::cell::Cell<Option<(u64, u64)>>,
    /// Dirty tracking on: new writable leaves start clean.
    track: bool,
}

impl<F: Format> PageTable<F> {
    pub fn new<M: TableMemory + ?Sized>(fmt: F, mem: &mut M) -> Result<Self, PgError> {
        let root = mem.alloc().ok_or(PgError::NoMemory)?;
        Ok(PageTable {
            fmt,
            root,
            tables: 1,
            leaf_table: core::cell::Cell::new(None),
            track: false,
        })
    }

    pub fn format(&self) -> &F {
        &self.fmt
    }

    /// The root table's physical address (for the STE/CD or PASID entry).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Tables in use, the root included.
    pub fn tables(&self) -> usize {
        self.tables
    }

    #[inline]
    fn shift(&self, level: usize) -> u32 {
        level_shift(self.fmt.levels(), level)
    }

    #[inline]
    fn region(&self, va: u64) -> u64 {
        va >> self.shift(self.fmt.levels() - 2)
    }

    /// The cached last-level table for `va`, if it covers it.
    #[inline]
    fn cached_leaf_table(&self, va: u64) -> Option<u64> {
        match self.leaf_table.get() {
            Some((region, table)) if region == self.region(va) => Some(table),
            _ => None,
        }
    }

    #[inline]
    fn index(&self, iova: u64, level: usize) -> usize {
        ((iova >> self.shift(level)) as usize) & (ENTRIES - 1)
    }

    fn check_range(&self, iova: u64, size: u64) -> Result<(), PgError> {
        let end = iova
            .checked_add(size)
            .ok_or(PgError::OutOfRange { iova, size })?;
        if end > 1u64 << self.fmt.ias() {
            return Err(PgError::OutOfRange { iova, size });
        }
        Ok(())
    }

    /// Maps `size` bytes at `iova` to `pa`. Uses the largest leaves the
    /// format allows where both addresses are aligned. Nothing changes if
    /// any part of the range is mapped already. A map that runs out of
    /// table memory takes back what it mapped and frees its tables at
    /// once: for tables no walker has seen (see [`PageTable::map_gathered`]).
    pub fn map<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        iova: u64,
        pa: u64,
        size: u64,
        prot: Prot,
    ) -> Result<(), PgError> {
        let mut g = Gather::default();
        let r = self.map_gathered(mem, iova, pa, size, prot, &mut g);
        g.release(mem);
        r
    }

    /// [`PageTable::map`] for tables a walker may use: what a failed map
    /// takes back is left in `g` (ranges and tables), for the caller to
    /// invalidate before the tables are released, as after an unmap (a
    /// walk cache may hold the links to them).
    pub fn map_gathered<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        iova: u64,
        pa: u64,
        size: u64,
        prot: Prot,
        g: &mut Gather,
    ) -> Result<(), PgError> {
        if size == 0 || (iova | pa | size) & (PAGE_SIZE - 1) != 0 {
            return Err(PgError::Misaligned { iova, pa, size });
        }
        if !prot.read && !prot.write {
            return Err(PgError::NoAccess { iova });
        }
        self.check_range(iova, size)?;
        let pa_end = pa
            .checked_add(size)
            .ok_or(PgError::OutOfRange { iova: pa, size })?;
        if self.fmt.oas() < 64 && pa_end > 1u64 << self.fmt.oas() {
            return Err(PgError::OutOfRange { iova: pa, size });
        }
        // One leaf covers it all: install_leaf checks the slot is free, so
        // the separate walk for overlaps is not needed.
        let level = self.leaf_level_for(iova, pa, size);
        if size == 1u64 << self.shift(level) {
            return match self.install_leaf(mem, iova, pa, level, prot) {
                Err(PgError::Overlap { .. }) => Err(PgError::Overlap {
                    iova: self.first_mapped(mem, iova, size).unwrap_or(iova),
                }),
                r => r,
            };
        }
        if let Some(at) = self.first_mapped(mem, iova, size) {
            return Err(PgError::Overlap { iova: at });
        }
        let mut done = 0;
        while done < size {
            let (va, out) = (iova + done, pa + done);
            let level = self.leaf_level_for(va, out, size - done);
            if let Err(e) = self.install_leaf(mem, va, out, level, prot) {
                // Out of table memory: take back what this call mapped.
                if done > 0 {
                    let _ = self.unmap(mem, iova, done, g);
                }
                return Err(e);
            }
            done += 1 << self.shift(level);
        }
        Ok(())
    }

    /// The shallowest level whose leaf fits at `va`/`pa` within `left`.
    fn leaf_level_for(&self, va: u64, pa: u64, left: u64) -> usize {
        let last = self.fmt.levels() - 1;
        (0..last)
            .find(|&l| {
                let sz = 1u64 << self.shift(l);
                self.fmt.leaf_allowed(l) && (va | pa) & (sz - 1) == 0 && left >= sz
            })
            .unwrap_or(last)
    }

    fn install_leaf<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        va: u64,
        pa: u64,
        level: usize,
        prot: Prot,
    ) -> Result<(), PgError> {
        let last = self.fmt.levels() - 1;
        if level == last {
            if let Some(t) = self.cached_leaf_table(va) {
                let i = self.index(va, level);
                if mem.read(t, i) != 0 {
                    return Err(PgError::Overlap { iova: va });
                }
                mem.write(t, i, self.leaf(pa, level, prot));
                return Ok(());
            }
        }
        // Follow existing tables as far as they go.
        let mut table = self.root;
        let mut l = 0;
        while l < level {
            match self.fmt.decode(mem.read(table, self.index(va, l)), l) {
                Pte::Table(next) => table = next,
                Pte::Invalid => break,
                // `first_mapped` ruled this out.
                Pte::Leaf { .. } => return Err(PgError::Overlap { iova: va }),
            }
            l += 1;
        }
        // Allocate every missing table before linking any, so a failure
        // leaves nothing a walker could have seen.
        let mut fresh = Vec::with_capacity(level - l);
        for _ in l..level {
            match mem.alloc() {
                Some(t) => fresh.push(t),
                None => {
                    for t in fresh {
                        mem.free(t);
                    }
                    return Err(PgError::NoMemory);
                }
            }
        }
        // Link from the bottom up: each table is complete before it is visible.
        let mut below: Option<u64> = None;
        for (k, &t) in fresh.iter().enumerate().rev() {
            if let Some(child) = below {
                let lv = l + k + 1;
                mem.write(t, self.index(va, lv), self.fmt.encode_table(child, lv));
            }
            below = Some(t);
        }
        self.tables += fresh.len();
        let leaf_table = fresh.last().copied().unwrap_or(table);
        let i = self.index(va, level);
        if fresh.is_empty() && mem.read(leaf_table, i) != 0 {
            return Err(PgError::Overlap { iova: va });
        }
        mem.write(leaf_table, i, self.leaf(pa, level, prot));
        if let Some(&top) = fresh.first() {
            mem.barrier();
            mem.write(table, self.index(va, l), self.fmt.encode_table(top, l));
        }
        if level == last {
            self.leaf_table.set(Some((self.region(va), leaf_table)));
        }
        Ok(())
    }

    /// The first mapped address in `[iova, iova + size)`, if any.
    fn first_mapped<M: TableMemory + ?Sized>(&self, mem: &M, iova: u64, size: u64) -> Option<u64> {
        let mut va = iova;
        let end = iova + size;
        while va < end {
            match self.walk(mem, va) {
                (Pte::Leaf { .. }, _) => return Some(va),
                (_, level) => {
                    // Skip the whole hole this level's invalid entry covers.
                    let sz = 1u64 << self.shift(level);
                    va = (va & !(sz - 1)) + sz;
                }
            }
        }
        None
    }

    /// The first unmapped address in `[iova, iova + size)`, if any.
    fn first_unmapped<M: TableMemory + ?Sized>(
        &self,
        mem: &M,
        iova: u64,
        size: u64,
    ) -> Option<u64> {
        let mut va = iova;
        let end = iova + size;
        while va < end {
            match self.walk(mem, va) {
                (Pte::Leaf { .. }, level) => {
                    let sz = 1u64 << self.shift(level);
                    va = (va & !(sz - 1)) + sz;
                }
                _ => return Some(va),
            }
        }
        None
    }

    /// The entry that decides `va` and its level: a leaf, or the invalid
    /// entry where the walk stopped.
    fn walk<M: TableMemory + ?Sized>(&self, mem: &M, va: u64) -> (Pte, usize) {
        let last = self.fmt.levels() - 1;
        if let Some(t) = self.cached_leaf_table(va) {
            return (
                self.fmt.decode(mem.read(t, self.index(va, last)), last),
                last,
            );
        }
        let mut table = self.root;
        for l in 0..self.fmt.levels() {
            match self.fmt.decode(mem.read(table, self.index(va, l)), l) {
                Pte::Table(next) if l + 1 < self.fmt.levels() => {
                    if l + 1 == last {
                        self.leaf_table.set(Some((self.region(va), next)));
                    }
                    table = next
                }
                Pte::Table(_) => return (Pte::Invalid, l),
                other => return (other, l),
            }
        }
        (Pte::Invalid, self.fmt.levels() - 1)
    }

    pub fn lookup<M: TableMemory + ?Sized>(&self, mem: &M, iova: u64) -> Option<Translation> {
        if iova >> self.fmt.ias() != 0 {
            return None;
        }
        match self.walk(mem, iova) {
            (Pte::Leaf { pa, prot }, level) => {
                let size = 1u64 << self.shift(level);
                Some(Translation {
                    pa: pa + (iova & (size - 1)),
                    prot,
                    leaf_size: size,
                })
            }
            _ => None,
        }
    }

    pub fn iova_to_phys<M: TableMemory + ?Sized>(&self, mem: &M, iova: u64) -> Option<u64> {
        self.lookup(mem, iova).map(|t| t.pa)
    }

    /// Unmaps `[iova, iova + size)`, splitting blocks it covers in part.
    /// Nothing changes if any part of the range is unmapped. What changed
    /// goes into `gather`.
    #[inline]
    pub fn unmap<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        iova: u64,
        size: u64,
        gather: &mut Gather,
    ) -> Result<(), PgError> {
        if size == 0 || (iova | size) & (PAGE_SIZE - 1) != 0 {
            return Err(PgError::Misaligned { iova, pa: 0, size });
        }
        // A page in the cached table: in range by construction.
        if size == PAGE_SIZE && self.unmap_cached_page(mem, iova, gather) {
            return Ok(());
        }
        self.unmap_walk(mem, iova, size, gather)
    }

    /// Everything but the cached-page case, out of line so the common
    /// path stays small.
    #[inline(never)]
    fn unmap_walk<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        iova: u64,
        size: u64,
        gather: &mut Gather,
    ) -> Result<(), PgError> {
        self.check_range(iova, size)?;
        if self.unmap_one_leaf(mem, iova, size, gather) {
            return Ok(());
        }
        if let Some(at) = self.first_unmapped(mem, iova, size) {
            return Err(PgError::NotMapped { iova: at });
        }
        // Splitting needs tables: allocate them all first so running out of
        // memory cannot leave the range half unmapped.
        let splits = self.blocks_cut(mem, iova, size);
        let mut spare = Vec::with_capacity(splits);
        for _ in 0..splits {
            match mem.alloc() {
                Some(t) => spare.push(t),
                None => {
                    for t in spare {
                        mem.free(t);
                    }
                    return Err(PgError::NoMemory);
                }
            }
        }
        // Splits and frees below: forget the cached table.
        self.leaf_table.set(None);
        self.unmap_in(mem, self.root, 0, iova, iova + size, gather, &mut spare);
        for t in spare {
            mem.free(t);
        }
        Ok(())
    }

    /// The commonest case: a 4 KiB page in the cached last-level table,
    /// which keeps other entries (emptying it needs the path up, for
    /// pruning). Every entry this engine writes at the last level is a
    /// valid page (map refuses no-access mappings), so non-zero is mapped.
    #[inline]
    fn unmap_cached_page<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        iova: u64,
        gather: &mut Gather,
    ) -> bool {
        let Some(t) = self.cached_leaf_table(iova) else {
            return false;
        };
        let i = self.index(iova, self.fmt.levels() - 1);
        if mem.read(t, i) == 0 {
            return false;
        }
        let neighbour =
            (i + 1 < ENTRIES && mem.read(t, i + 1) != 0) || (i > 0 && mem.read(t, i - 1) != 0);
        if !neighbour && table_empty_but(mem, t, i) {
            return false;
        }
        mem.write(t, i, 0);
        gather.add_range(iova, PAGE_SIZE);
        true
    }

    /// The common case: exactly one leaf maps `[iova, iova + size)`. Clears
    /// it, frees the tables that leaves empty, and says whether it did.
    fn unmap_one_leaf<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        iova: u64,
        size: u64,
        gather: &mut Gather,
    ) -> bool {
        let last = self.fmt.levels() - 1;
        let mut path = [(0u64, 0usize); 8];
        let mut table = self.root;
        for l in 0..self.fmt.levels() {
            let i = self.index(iova, l);
            path[l] = (table, i);
            match self.fmt.decode(mem.read(table, i), l) {
                Pte::Table(next) if l + 1 < self.fmt.levels() => {
                    if l + 1 == last {
                        self.leaf_table.set(Some((self.region(iova), next)));
                    }
                    table = next
                }
                Pte::Leaf { .. } if 1u64 << self.shift(l) == size && iova & (size - 1) == 0 => {
                    mem.write(table, i, 0);
                    gather.add_range(iova, size);
                    // Prune upwards while tables empty out (never the root).
                    for up in (1..=l).rev() {
                        let (t, idx) = path[up];
                        if !table_empty(mem, t, idx) {
                            break;
                        }
                        let (parent, pidx) = path[up - 1];
                        mem.write(parent, pidx, 0);
                        gather.freed_tables.push(t);
                        self.tables -= 1;
                        self.leaf_table.set(None);
                    }
                    return true;
                }
                _ => return false,
            }
        }
        false
    }

    /// At most how many tables splitting will need: a block cut by an end
    /// of the range is split level by level until that end falls on an
    /// entry boundary (when both ends cut one block this counts some
    /// tables twice; the spares go back).
    fn blocks_cut<M: TableMemory + ?Sized>(&self, mem: &M, start: u64, size: u64) -> usize {
        let end = start + size;
        let last = self.fmt.levels() - 1;
        let mut n = 0;
        for (cut, probe) in [(start, start), (end, end - 1)] {
            if let (Pte::Leaf { .. }, level) = self.walk(mem, probe) {
                n += (level..last)
                    .filter(|&l| cut & ((1u64 << self.shift(l)) - 1) != 0)
                    .count();
            }
        }
        n
    }

    #[allow(clippy::too_many_arguments)]
    fn unmap_in<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        table: u64,
        level: usize,
        start: u64,
        end: u64,
        gather: &mut Gather,
        spare: &mut Vec<u64>,
    ) {
        let sz = 1u64 << self.shift(level);
        let mut va = start;
        while va < end {
            let i = self.index(va, level);
            let base = va & !(sz - 1);
            let stop = end.min(base + sz);
            match self.fmt.decode(mem.read(table, i), level) {
                Pte::Leaf { .. } if va == base && stop == base + sz => {
                    mem.write(table, i, 0);
                    gather.add_range(base, sz);
                }
                Pte::Leaf { pa, prot } => {
                    // A block cut in part: the same translations one level
                    // down (dirty where the block was), then unmap from
                    // the new table.
                    let next = spare.pop().expect("counted by blocks_cut");
                    self.tables += 1;
                    let child = 1u64 << self.shift(level + 1);
                    let dirty = self.fmt.is_dirty(mem.read(table, i), level);
                    for k in 0..ENTRIES {
                        let mut e = self.leaf(pa + k as u64 * child, level + 1, prot);
                        if dirty {
                            e = self.fmt.dirtied(e, level + 1);
                        }
                        mem.write(next, k, e);
                    }
                    mem.barrier();
                    mem.write(table, i, self.fmt.encode_table(next, level));
                    // The block's translation may be cached whole.
                    gather.add_range(base, sz);
                    self.unmap_in(mem, next, level + 1, va, stop, gather, spare);
                }
                Pte::Table(next) => {
                    self.unmap_in(mem, next, level + 1, va, stop, gather, spare);
                    if table_empty(mem, next, self.index(va, level + 1)) {
                        mem.write(table, i, 0);
                        gather.freed_tables.push(next);
                        self.tables -= 1;
                    }
                }
                Pte::Invalid => {}
            }
            va = stop;
        }
    }

    /// A leaf as this table writes it: clean when tracking is on.
    fn leaf(&self, pa: u64, level: usize, prot: Prot) -> u64 {
        let e = self.fmt.encode_leaf(pa, level, prot);
        if self.track {
            self.fmt.clean(e, level).unwrap_or(e)
        } else {
            e
        }
    }

    pub fn dirty_tracking(&self) -> bool {
        self.track
    }

    /// Turns dirty tracking on (every writable leaf made clean) or off
    /// (every leaf as after a write); what changed goes into `gather`,
    /// for the invalidation that makes the IOMMU see it.
    pub fn set_dirty_tracking<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        on: bool,
        gather: &mut Gather,
    ) -> Result<(), PgError> {
        if !self.fmt.tracks_dirty() {
            return Err(PgError::NoDirtyTracking);
        }
        self.track = on;
        let end = 1u64 << self.fmt.ias();
        self.each_leaf(
            mem,
            0,
            end,
            &mut |fmt, e, level, _| {
                if on {
                    fmt.clean(e, level)
                } else {
                    Some(fmt.dirtied(e, level)).filter(|&d| d != e)
                }
            },
            gather,
        );
        Ok(())
    }

    /// The dirty leaves overlapping `[iova, iova + size)`, each as (base,
    /// size): a block reports its whole size. With `clear`, each is made
    /// clean again and its range goes into `gather`: the IOMMU may hold
    /// the dirty state in its TLB, and a write sets the bit again only
    /// once that invalidation ran.
    pub fn read_and_clear_dirty<M: TableMemory + ?Sized>(
        &mut self,
        mem: &mut M,
        iova: u64,
        size: u64,
        clear: bool,
        gather: &mut Gather,
    ) -> Result<Vec<(u64, u64)>, PgError> {
        if !self.fmt.tracks_dirty() {
            return Err(PgError::NoDirtyTracking);
        }
        self.check_range(iova, size)?;
        let mut dirty = Vec::new();
        self.each_leaf(
            mem,
            iova,
            iova + size,
            &mut |fmt, e, level, (base, sz)| {
                if !fmt.is_dirty(e, level) {
                    return None;
                }
                dirty.push((base, sz));
                if clear {
                    fmt.clean(e, level)
                } else {
                    None
                }
            },
            gather,
        );
        Ok(dirty)
    }

    /// Calls `f` for each leaf overlapping `[start, end)` with the entry,
    /// its level and its range; an entry `f` returns is written in its
    /// place, and its range goes into `gather`. Walks from the root for
    /// each leaf, skipping absent ranges a level at a time.
    fn each_leaf<M: TableMemory + ?Sized>(
        &self,
        mem: &mut M,
        start: u64,
        end: u64,
        f: &mut LeafVisitor<'_, F>,
        gather: &mut Gather,
    ) {
        let levels = self.fmt.levels();
        let mut va = start;
        while va < end {
            let mut table = self.root;
            let mut level = 0;
            let next = loop {
                let sz = 1u64 << self.shift(level);
                let base = va & !(sz - 1);
                let i = self.index(va, level);
                let e = mem.read(table, i);
                match self.fmt.decode(e, level) {
                    Pte::Table(t) if level + 1 < levels => {
                        table = t;
                        level += 1;
                    }
                    Pte::Leaf { .. } => {
                        if let Some(new) = f(&self.fmt, e, level, (base, sz)) {
                            mem.write(table, i, new);
                            gather.add_range(base, sz);
                        }
                        break base + sz;
                    }
                    _ => break base + sz,
                }
            };
            va = next;
        }
    }

    /// Unlinks every table below the root into `gather` (the root too):
    /// for a domain being freed, after its last detach.
    pub fn destroy<M: TableMemory + ?Sized>(self, mem: &mut M, gather: &mut Gather) {
        self.collect(mem, self.root, 0, gather);
        gather.freed_tables.push(self.root);
    }

    fn collect<M: TableMemory + ?Sized>(
        &self,
        mem: &M,
        table: u64,
        level: usize,
        gather: &mut Gather,
    ) {
        if level + 1 >= self.fmt.levels() {
            return;
        }
        for i in 0..ENTRIES {
            if let Pte::Table(next) = self.fmt.decode(mem.read(table, i), level) {
                self.collect(mem, next, level + 1, gather);
                gather.freed_tables.push(next);
            }
        }
    }
}
