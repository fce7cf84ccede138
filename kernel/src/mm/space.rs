//! A CPU address space, as a process has one: page tables in the CPU's
//! own format (Arm stage 1 with the CPU's memory attributes, x86-64
//! 4-level paging with every level user-accessible), which an IOMMU can
//! walk for shared virtual addressing (SVA) once the space is bound to a
//! device's PASID (`Iommu::sva_bind`).
//!
//! An IOMMU walking the tables caches what it read, so every change that
//! takes a translation away or replaces it goes through one hook, a
//! [`SpaceNotifier`], before the old page or the freed tables can be
//! reused: the role Linux's MMU notifier plays for SVA
//! (`arch_invalidate_secondary_tlbs`). Going from not present to present
//! needs no hook: the IOMMUs we drive cache no absent entries of these
//! tables (a first-level walk on VT-d, stage 1 on SMMUv3).
use crate::iommu::domain::TableFormat;
use crate::iommu::pgtable::{Format, Gather, PageTable, PgError, Prot, TableMemory, PAGE_SIZE};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::fmt;

/// Which address space: the key an IOMMU keeps its binding under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpaceId(pub u32);

/// Whoever caches translations of a space and must drop them when they
/// change: the IOMMU core for every space it bound.
pub trait SpaceNotifier {
    type Error: fmt::Display;
    /// `gather.ranges` of `space` were taken away or replaced, and
    /// `gather.freed_tables` unlinked: drop every cached copy (TLBs, walk
    /// caches, device TLBs) before returning.
    fn invalidate(&mut self, space: SpaceId, gather: &Gather) -> Result<(), Self::Error>;
}

/// A notifier that does nothing: the hook left out, for a test that shows
/// what a device sees without it. Never for real use.
pub struct Unobserved;

impl SpaceNotifier for Unobserved {
    type Error = core::convert::Infallible;
    fn invalidate(&mut self, _: SpaceId, _: &Gather) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpaceError<E> {
    PageTable(PgError),
    /// The hook failed: the change is made, but a cache may still hold
    /// the old translation, so the freed tables are kept (leaked).
    Notifier(E),
}

impl<E: fmt::Display> fmt::Display for SpaceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaceError::PageTable(e) => write!(f, "{e}"),
            SpaceError::Notifier(e) => write!(f, "invalidation hook: {e}"),
        }
    }
}

impl<E> From<PgError> for SpaceError<E> {
    fn from(e: PgError) -> Self {
        SpaceError::PageTable(e)
    }
}

/// Why a fault at an address was not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceFault {
    /// No region covers the address: the process never had it.
    NoRegion { va: u64 },
    /// A write to a region (or page) that allows reading only.
    ReadOnly { va: u64 },
    /// No page to make present, or no table memory.
    NoMemory { va: u64 },
}

impl fmt::Display for SpaceFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpaceFault::NoRegion { va } => write!(f, "{va:#x} is in no region of the space"),
            SpaceFault::ReadOnly { va } => write!(f, "{va:#x} is read-only"),
            SpaceFault::NoMemory { va } => write!(f, "no memory to make {va:#x} present"),
        }
    }
}

/// How a fault was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The page was there already with the access asked for.
    Present,
    /// A fresh page was mapped at the address.
    Made { pa: u64 },
}

/// A CPU address space: its page tables and the memory they live in.
pub struct AddressSpace {
    id: SpaceId,
    format: TableFormat,
    /// `None` only while dropping.
    table: Option<PageTable<TableFormat>>,
    mem: Box<dyn TableMemory>,
    /// Regions valid but made present on first touch, as a process's
    /// anonymous memory: `(start, size, prot)`.
    regions: Vec<(u64, u64, Prot)>,
    /// Pages [`AddressSpace::fault`] mapped, for their owner to free once
    /// the space is gone.
    made: Vec<u64>,
}

impl fmt::Debug for AddressSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AddressSpace({}, root {:#x})", self.id.0, self.root())
    }
}

impl AddressSpace {
    /// An empty space in `format` (the CPU's), its tables from `mem`.
    pub fn new(
        id: SpaceId,
        format: TableFormat,
        mut mem: Box<dyn TableMemory>,
    ) -> Result<Self, PgError> {
        let table = PageTable::new(format, &mut *mem)?;
        Ok(AddressSpace {
            id,
            format,
            table: Some(table),
            mem,
            regions: Vec::new(),
            made: Vec::new(),
        })
    }

    pub fn id(&self) -> SpaceId {
        self.id
    }

    /// The root table: what the CPU's TTBR0/CR3 and an IOMMU's context
    /// descriptor or PASID entry point at.
    pub fn root(&self) -> u64 {
        self.table.as_ref().map_or(0, |t| t.root())
    }

    pub fn format(&self) -> TableFormat {
        self.format
    }

    /// Tables in use, the root included.
    pub fn tables(&self) -> usize {
        self.table.as_ref().map_or(0, |t| t.tables())
    }

    /// Makes `[va, va + size)` present at `pa`.
    pub fn map(&mut self, va: u64, pa: u64, size: u64, prot: Prot) -> Result<(), PgError> {
        let table = self.table.as_mut().ok_or(PgError::NoMemory)?;
        table.map(&mut *self.mem, va, pa, size, prot)
    }

    /// Takes `[va, va + size)` away; `n` drops the cached copies before
    /// the tables that emptied are freed.
    pub fn unmap<N: SpaceNotifier>(
        &mut self,
        va: u64,
        size: u64,
        n: &mut N,
    ) -> Result<(), SpaceError<N::Error>> {
        let table = self.table.as_mut().ok_or(PgError::NoMemory)?;
        let mut g = Gather::default();
        table.unmap(&mut *self.mem, va, size, &mut g)?;
        self.finish(g, n)
    }

    /// Points the page at `va` at `pa` instead (break, hook, make): the
    /// device may use the old page until the hook ran, never after.
    pub fn remap<N: SpaceNotifier>(
        &mut self,
        va: u64,
        pa: u64,
        prot: Prot,
        n: &mut N,
    ) -> Result<(), SpaceError<N::Error>> {
        self.unmap(va, PAGE_SIZE, n)?;
        self.map(va, pa, PAGE_SIZE, prot)?;
        Ok(())
    }

    /// Runs the hook for `[va, va + size)` without changing anything: what
    /// a late invalidation (after [`Unobserved`]) catches up with.
    pub fn invalidate_range<N: SpaceNotifier>(
        &self,
        va: u64,
        size: u64,
        n: &mut N,
    ) -> Result<(), N::Error> {
        let mut g = Gather::default();
        g.add_range(va, size);
        n.invalidate(self.id, &g)
    }

    /// Declares `[va, va + size)` valid for `prot` without making it
    /// present: pages there are made present when touched ([`Self::fault`]).
    pub fn reserve(&mut self, va: u64, size: u64, prot: Prot) -> Result<(), PgError> {
        let end = va
            .checked_add(size)
            .filter(|_| size > 0 && (va | size) & (PAGE_SIZE - 1) == 0)
            .ok_or(PgError::Misaligned {
                iova: va,
                pa: 0,
                size,
            })?;
        if let Some(&(s, ..)) = self
            .regions
            .iter()
            .find(|&&(s, l, _)| va < s + l && s < end)
        {
            return Err(PgError::Overlap { iova: s.max(va) });
        }
        self.regions.push((va, size, prot));
        Ok(())
    }

    /// Serves a touch of `va` (a write if `write`), as a CPU page fault
    /// or a device's page request: a page already there with that access
    /// is [`Served::Present`]; in a region that allows the access, a page
    /// from `page` is mapped ([`Served::Made`]). Going from not present to
    /// present needs no invalidation.
    pub fn fault(
        &mut self,
        va: u64,
        write: bool,
        page: &mut dyn FnMut() -> Option<u64>,
    ) -> Result<Served, SpaceFault> {
        let va = va & !(PAGE_SIZE - 1);
        if let Some((_, prot)) = self.translate(va) {
            return if write && !prot.write {
                Err(SpaceFault::ReadOnly { va })
            } else {
                Ok(Served::Present)
            };
        }
        let &(_, _, prot) = self
            .regions
            .iter()
            .find(|&&(s, l, _)| (s..s + l).contains(&va))
            .ok_or(SpaceFault::NoRegion { va })?;
        if write && !prot.write {
            return Err(SpaceFault::ReadOnly { va });
        }
        let pa = page().ok_or(SpaceFault::NoMemory { va })?;
        self.map(va, pa, PAGE_SIZE, prot)
            .map_err(|_| SpaceFault::NoMemory { va })?;
        self.made.push(pa);
        Ok(Served::Made { pa })
    }

    /// The pages [`Self::fault`] made present, taken: the caller frees them
    /// once nothing maps them.
    pub fn take_made_pages(&mut self) -> Vec<u64> {
        core::mem::take(&mut self.made)
    }

    /// Runs `f` with `kernel` (top-level entries of the kernel's own
    /// tables, by index) linked into slots of the space's root that it
    /// leaves empty, as a process's tables carry the kernel's half: `f`
    /// gets the root, which the CPU can then load and keep running. A slot
    /// the space uses is refused ([`PgError::Overlap`]). The entries go
    /// again before this returns; meanwhile the space cannot change (it is
    /// borrowed), so nothing of it walks into or frees the kernel's tables.
    pub fn with_kernel_entries<R>(
        &mut self,
        kernel: &[(usize, u64)],
        f: impl FnOnce(u64) -> R,
    ) -> Result<R, PgError> {
        let root = self.root();
        let shift = crate::iommu::pgtable::level_shift(self.format.levels(), 0);
        for &(i, _) in kernel {
            if i >= 512 || self.mem.read(root, i) != 0 {
                return Err(PgError::Overlap {
                    iova: (i as u64) << shift,
                });
            }
        }
        for &(i, e) in kernel {
            self.mem.write(root, i, e);
        }
        self.mem.barrier();
        let r = f(root);
        for &(i, _) in kernel {
            self.mem.write(root, i, 0);
        }
        self.mem.barrier();
        Ok(r)
    }

    /// The physical address and permissions `va` translates to.
    pub fn translate(&self, va: u64) -> Option<(u64, Prot)> {
        let t = self.table.as_ref()?.lookup(&*self.mem, va)?;
        Some((t.pa, t.prot))
    }

    fn finish<N: SpaceNotifier>(
        &mut self,
        mut g: Gather,
        n: &mut N,
    ) -> Result<(), SpaceError<N::Error>> {
        if g.is_empty() {
            return Ok(());
        }
        match n.invalidate(self.id, &g) {
            Ok(()) => {
                g.release(&mut *self.mem);
                Ok(())
            }
            Err(e) => Err(SpaceError::Notifier(e)),
        }
    }
}

/// Dropping a space frees its tables: whoever bound it must have unbound
/// it first (the core refuses to free a bound space's domain otherwise,
/// and keeps the PASID blocked).
impl Drop for AddressSpace {
    fn drop(&mut self) {
        if let Some(t) = self.table.take() {
            let mut g = Gather::default();
            t.destroy(&mut *self.mem, &mut g);
            g.release(&mut *self.mem);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iommu::pgtable::arm::{ArmLpae, CPU_MAIR};
    use crate::iommu::pgtable::Pte;
    use alloc::rc::Rc;
    use alloc::vec::Vec;
    use core::cell::RefCell;
    use std::collections::BTreeMap;

    /// Table pages in a map; `freed` counts what went back.
    #[derive(Default)]
    struct Pages {
        tables: BTreeMap<u64, [u64; 512]>,
        next: u64,
        freed: usize,
    }

    #[derive(Clone, Default)]
    struct Mem(Rc<RefCell<Pages>>);

    impl TableMemory for Mem {
        fn alloc(&mut self) -> Option<u64> {
            let mut p = self.0.borrow_mut();
            p.next += PAGE_SIZE;
            let pa = 0x8000_0000 + p.next;
            p.tables.insert(pa, [0; 512]);
            Some(pa)
        }
        fn free(&mut self, table: u64) {
            let mut p = self.0.borrow_mut();
            assert!(p.tables.remove(&table).is_some(), "double free");
            p.freed += 1;
        }
        fn read(&self, table: u64, index: usize) -> u64 {
            self.0.borrow().tables[&table][index]
        }
        fn write(&mut self, table: u64, index: usize, value: u64) {
            self.0.borrow_mut().tables.get_mut(&table).expect("a table")[index] = value;
        }
    }

    /// One hook call: the space, the ranges, how many tables the gather
    /// held, how many had been freed by then.
    type Call = (SpaceId, Vec<(u64, u64)>, usize, usize);

    /// Records each call.
    struct Recorder {
        mem: Mem,
        calls: Vec<Call>,
        fail: bool,
    }

    impl SpaceNotifier for Recorder {
        type Error = &'static str;
        fn invalidate(&mut self, space: SpaceId, g: &Gather) -> Result<(), &'static str> {
            let freed = self.mem.0.borrow().freed;
            self.calls
                .push((space, g.ranges.clone(), g.freed_tables.len(), freed));
            if self.fail {
                Err("refused")
            } else {
                Ok(())
            }
        }
    }

    const VA: u64 = 0x7f12_3400_0000;

    fn space(mem: &Mem) -> AddressSpace {
        AddressSpace::new(
            SpaceId(7),
            TableFormat::Arm(ArmLpae::S1_CPU),
            Box::new(mem.clone()),
        )
        .expect("space")
    }

    #[test]
    fn cpu_leaves_use_the_cpu_memory_attributes() {
        let f = ArmLpae::S1_CPU;
        let normal = f.encode_leaf(0x4000_0000, 3, Prot::RW);
        assert_eq!((normal >> 2) & 7, 2, "AttrIndx of normal memory");
        assert_eq!((normal >> 8) & 3, 3, "inner shareable");
        let device = f.encode_leaf(
            0x900_0000,
            3,
            Prot {
                device: true,
                ..Prot::RW
            },
        );
        assert_eq!((device >> 2) & 7, 1, "AttrIndx of device memory");
        assert!(matches!(f.decode(device, 3), Pte::Leaf { prot, .. } if prot.device));
        assert!(matches!(f.decode(normal, 3), Pte::Leaf { prot, .. } if !prot.device));
        // What the aarch64 kernel writes to MAIR_EL1 (arch/aarch64/mmu.rs).
        assert_eq!(CPU_MAIR.to_le_bytes()[..3], [0x00, 0x04, 0xff]);
        assert_eq!(f.mair(), CPU_MAIR);
        assert_ne!(ArmLpae::S1.mair(), CPU_MAIR);
    }

    #[test]
    fn the_hook_runs_before_emptied_tables_go_back() {
        let mem = Mem::default();
        let mut s = space(&mem);
        s.map(VA, 0x4000_0000, PAGE_SIZE, Prot::RW).expect("map");
        assert_eq!(s.tables(), 4);
        let mut n = Recorder {
            mem: mem.clone(),
            calls: Vec::new(),
            fail: false,
        };
        s.unmap(VA, PAGE_SIZE, &mut n).expect("unmap");
        assert_eq!(n.calls.len(), 1);
        let (id, ranges, tables, freed_then) = n.calls[0].clone();
        assert_eq!(id, SpaceId(7));
        assert_eq!(ranges, [(VA, PAGE_SIZE)]);
        assert!(tables > 0, "the emptied tables are in the gather");
        assert_eq!(freed_then, 0, "nothing freed before the hook ran");
        assert_eq!(mem.0.borrow().freed, tables, "freed after it");
        assert_eq!(s.translate(VA), None);
    }

    #[test]
    fn a_failing_hook_keeps_the_tables() {
        let mem = Mem::default();
        let mut s = space(&mem);
        s.map(VA, 0x4000_0000, PAGE_SIZE, Prot::RW).expect("map");
        let mut n = Recorder {
            mem: mem.clone(),
            calls: Vec::new(),
            fail: true,
        };
        assert_eq!(
            s.unmap(VA, PAGE_SIZE, &mut n),
            Err(SpaceError::Notifier("refused"))
        );
        assert_eq!(mem.0.borrow().freed, 0, "a walker may still hold them");
    }

    #[test]
    fn faults_fill_reserved_regions_only() {
        let mem = Mem::default();
        let mut s = space(&mem);
        s.reserve(VA, 4 * PAGE_SIZE, Prot::RW).expect("reserve");
        s.reserve(VA + 8 * PAGE_SIZE, PAGE_SIZE, Prot::RO)
            .expect("reserve");
        assert_eq!(
            s.reserve(VA + PAGE_SIZE, PAGE_SIZE, Prot::RW),
            Err(PgError::Overlap {
                iova: VA + PAGE_SIZE
            })
        );
        let mut next = 0x9000_0000u64;
        let mut page = || {
            next += PAGE_SIZE;
            Some(next)
        };
        assert_eq!(
            s.fault(VA + 0x123, true, &mut page),
            Ok(Served::Made { pa: 0x9000_1000 })
        );
        assert_eq!(s.translate(VA + 8).map(|t| t.0), Some(0x9000_1008));
        assert_eq!(s.fault(VA, false, &mut page), Ok(Served::Present));
        assert_eq!(
            s.fault(VA + 5 * PAGE_SIZE, false, &mut page),
            Err(SpaceFault::NoRegion {
                va: VA + 5 * PAGE_SIZE
            })
        );
        let ro = VA + 8 * PAGE_SIZE;
        assert_eq!(
            s.fault(ro, true, &mut page),
            Err(SpaceFault::ReadOnly { va: ro })
        );
        assert_eq!(
            s.fault(ro, false, &mut page),
            Ok(Served::Made { pa: 0x9000_2000 })
        );
        assert_eq!(
            s.fault(ro, true, &mut page),
            Err(SpaceFault::ReadOnly { va: ro }),
            "present but read-only"
        );
        assert_eq!(
            s.fault(VA + PAGE_SIZE, false, &mut || None),
            Err(SpaceFault::NoMemory { va: VA + PAGE_SIZE })
        );
        assert_eq!(s.take_made_pages(), [0x9000_1000, 0x9000_2000]);
    }

    #[test]
    fn kernel_entries_are_linked_for_the_call_only() {
        let mem = Mem::default();
        let mut s = space(&mem);
        s.map(VA, 0x4000_0000, PAGE_SIZE, Prot::RW).expect("map");
        let own = (VA >> 39) as usize;
        let root = s.root();
        let seen = s
            .with_kernel_entries(&[(0, 0x1234_5003), (1, 0x5678_9003)], |r| {
                assert_eq!(r, root);
                let m = mem.0.borrow();
                (m.tables[&r][0], m.tables[&r][1], m.tables[&r][own] != 0)
            })
            .expect("linked");
        assert_eq!(seen, (0x1234_5003, 0x5678_9003, true));
        assert_eq!(mem.0.borrow().tables[&root][..2], [0, 0], "unlinked after");
        assert_eq!(
            s.with_kernel_entries(&[(own, 0x1003)], |_| ()),
            Err(PgError::Overlap {
                iova: (own as u64) << 39
            }),
            "a slot the space uses"
        );
        assert_eq!(
            mem.0.borrow().tables[&root][0],
            0,
            "a refusal writes nothing"
        );
        drop(s);
        assert!(
            mem.0.borrow().tables.is_empty(),
            "the kernel's tables were not freed"
        );
    }

    #[test]
    fn remap_breaks_calls_the_hook_then_makes() {
        let mem = Mem::default();
        let mut s = space(&mem);
        s.map(VA, 0x4000_0000, PAGE_SIZE, Prot::RW).expect("map");
        s.map(VA + PAGE_SIZE, 0x4000_1000, PAGE_SIZE, Prot::RW)
            .expect("map");
        let mut n = Recorder {
            mem: mem.clone(),
            calls: Vec::new(),
            fail: false,
        };
        s.remap(VA, 0x5000_0000, Prot::RO, &mut n).expect("remap");
        assert_eq!(n.calls.len(), 1);
        assert_eq!(n.calls[0].1, [(VA, PAGE_SIZE)]);
        let (pa, prot) = s.translate(VA).expect("mapped");
        assert_eq!((pa, prot.write), (0x5000_0000, false));
        s.invalidate_range(VA, 2 * PAGE_SIZE, &mut n).expect("hook");
        assert_eq!(n.calls[1].1, [(VA, 2 * PAGE_SIZE)]);
        // Unobserved runs nothing and still frees.
        s.unmap(VA, 2 * PAGE_SIZE, &mut Unobserved).expect("unmap");
        assert_eq!(n.calls.len(), 2);
        drop(s);
        assert!(
            mem.0.borrow().tables.is_empty(),
            "dropping frees every table"
        );
    }
}
