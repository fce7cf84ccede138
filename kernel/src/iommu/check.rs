//! The checking mode: a [`Hal`] wrapper that sees every store a driver
//! makes to the memory an IOMMU walks, hears what the driver and the core
//! say they did ([`Note`]), and finds, at each DMA, what QEMU's models
//! never show: a live entry changed without the invalidation (and its
//! completion) that drops the cached copy, a table page freed while such
//! an invalidation is still outstanding, a table written without cache
//! maintenance for a unit that does not snoop, and one tag held by two
//! live domains. `docs/iommu-core.md` says how the rules were chosen.
//!
//! The checker is precise per cache kind, not per address: an
//! invalidation of the configuration caches discharges every pending
//! change of a configuration table. That catches a driver that forgets a
//! kind of invalidation (or its wait), not one that names the wrong
//! entry; the conformance cases' DMA after an update covers that.
use crate::addr::PhysAddr;
use crate::hal::{Coherency, DmaRegion, Hal, HalError};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

/// Which cache of the IOMMU may hold copies of a region's contents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cache {
    /// Stream table, CDs, root/context/PASID tables: CFGI_*, context- and
    /// PASID-cache invalidations drop copies.
    Config,
    /// I/O page tables: TLBI_*, IOTLB and PASID-based IOTLB invalidations
    /// drop copies (and the walk caches with them). Regions never labelled
    /// are taken to be page tables.
    Tlb,
    /// Queues and buffers: read as they are, nothing cached.
    None,
}

impl Cache {
    fn index(self) -> usize {
        self as usize
    }
}

/// What a driver or the core tells the checker (through [`Hal::note`] or
/// `IommuHw::note`); a plain [`Hal`] ignores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// The region that starts at `pa` holds the source of `cache`.
    Holds { pa: PhysAddr, cache: Cache },
    /// How the unit reads the memory behind `cache`: a non-coherent walk
    /// needs every store cleaned to memory.
    Walks { cache: Cache, coherency: Coherency },
    /// An invalidation of that kind was issued.
    Invalidate(Cache),
    /// Everything issued so far has completed (CMD_SYNC consumed, an
    /// invalidation wait's status written).
    Complete,
    /// A domain took this tag (ASID, VMID, domain id)...
    TagLive(u32),
    /// ...and gave it back.
    TagFree(u32),
    /// Stores from here until `Uncached(false)` go where no cache can hold
    /// a copy: the tables of a domain attached nowhere (detaching
    /// invalidated everything), the rest of an entry made invalid and
    /// synced. They need no invalidation.
    Uncached(bool),
}

/// A rule broken, with the address that shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A live word at `pa` changed and no invalidation of `cache` issued
    /// after it had completed by the time of a DMA.
    NotInvalidated { pa: u64, cache: Cache },
    /// The region at `region` went back to the allocator while the
    /// change at `pending` still waited for its invalidation to complete.
    FreedEarly { region: u64, pending: u64 },
    /// A store into the region at `region`, allocated coherent (never
    /// cleaned), which the unit reads without snooping.
    NotCleaned { region: u64, cache: Cache },
    /// A tag handed to a second live domain.
    TagTwice { tag: u32 },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Violation::NotInvalidated { pa, cache } => write!(
                f,
                "live entry at {pa:#x} changed, no completed {cache:?} invalidation since"
            ),
            Violation::FreedEarly { region, pending } => write!(
                f,
                "page {region:#x} freed before the completion of the invalidation of {pending:#x}"
            ),
            Violation::NotCleaned { region, cache } => write!(
                f,
                "{cache:?} memory at {region:#x} allocated coherent, the unit does not snoop it"
            ),
            Violation::TagTwice { tag } => write!(f, "tag {tag} given to two live domains"),
        }
    }
}

/// A change of a live word, waiting for its invalidation.
#[derive(Debug, Clone, Copy)]
struct Pending {
    pa: u64,
    cache: Cache,
    seq: u64,
}

#[derive(Default)]
struct State {
    /// Orders stores and invalidations.
    seq: u64,
    /// Labelled regions by base address.
    labels: BTreeMap<u64, Cache>,
    walks: [Option<Coherency>; 3],
    /// The latest invalidation issued of each kind (0: none).
    issued: [u64; 3],
    pending: Vec<Pending>,
    /// Regions that ever held a non-zero word (a page never written, as
    /// a page-table allocation's unused spare, was never walked).
    written: BTreeSet<u64>,
    /// Live domains per tag.
    tags: BTreeMap<u32, u32>,
    uncached: bool,
    violations: Vec<Violation>,
}

impl State {
    fn violate(&mut self, v: Violation) {
        if !self.violations.contains(&v) {
            self.violations.push(v);
        }
    }

    fn cache_of(&self, base: u64) -> Cache {
        self.labels.get(&base).copied().unwrap_or(Cache::Tlb)
    }

    fn note(&mut self, n: Note) {
        self.seq += 1;
        match n {
            Note::Holds { pa, cache } => {
                self.labels.insert(pa.as_u64(), cache);
            }
            Note::Walks { cache, coherency } => self.walks[cache.index()] = Some(coherency),
            Note::Invalidate(cache) => self.issued[cache.index()] = self.seq,
            Note::Complete => {
                let issued = self.issued;
                self.pending.retain(|p| issued[p.cache.index()] < p.seq);
            }
            Note::TagLive(tag) => {
                let live = self.tags.entry(tag).or_default();
                *live += 1;
                if *live > 1 {
                    self.violate(Violation::TagTwice { tag });
                }
            }
            Note::TagFree(tag) => {
                if let Some(live) = self.tags.get_mut(&tag) {
                    *live = live.saturating_sub(1);
                }
            }
            Note::Uncached(on) => self.uncached = on,
        }
    }

    fn store(&mut self, base: u64, offset: u64, old: u64, new: u64, coherency: Coherency) {
        self.seq += 1;
        let cache = self.cache_of(base);
        if coherency == Coherency::Coherent
            && self.walks[cache.index()] == Some(Coherency::NonCoherent)
        {
            self.violate(Violation::NotCleaned {
                region: base,
                cache,
            });
        }
        if new != 0 {
            self.written.insert(base);
        }
        let live_change = old != 0 && old != new;
        if live_change && cache != Cache::None && !self.uncached {
            self.pending.push(Pending {
                pa: base + offset,
                cache,
                seq: self.seq,
            });
        }
    }

    fn free(&mut self, base: u64, len: u64) {
        let cache = self.labels.remove(&base).unwrap_or(Cache::Tlb);
        if !self.written.remove(&base) || cache == Cache::None {
            return;
        }
        if let Some(p) = self.pending.first() {
            let pending = p.pa;
            self.violate(Violation::FreedEarly {
                region: base,
                pending,
            });
        }
        // The freed page's own changes are reported as the early free.
        self.pending.retain(|p| !(base..base + len).contains(&p.pa));
    }

    fn verify(&mut self) -> Vec<Violation> {
        for p in core::mem::take(&mut self.pending) {
            self.violate(Violation::NotInvalidated {
                pa: p.pa,
                cache: p.cache,
            });
        }
        core::mem::take(&mut self.violations)
    }
}

/// A [`Hal`] that checks what a driver does with it (on), or passes
/// everything through untouched (off). Clones share one checker.
#[derive(Clone)]
pub struct Checking<H: Hal> {
    inner: H,
    state: Option<Rc<RefCell<State>>>,
}

impl<H: Hal> Checking<H> {
    /// `inner`, checked when `on`.
    pub fn new(inner: H, on: bool) -> Self {
        Checking {
            inner,
            state: on.then(Rc::default),
        }
    }

    pub fn is_on(&self) -> bool {
        self.state.is_some()
    }

    pub fn inner(&self) -> &H {
        &self.inner
    }

    /// The rules broken since the last call, and every change still
    /// waiting for its invalidation (reported once: the checker forgets
    /// them). Called at each DMA.
    pub fn verify(&self) -> Result<(), Vec<Violation>> {
        let found = match &self.state {
            Some(s) => s.borrow_mut().verify(),
            None => Vec::new(),
        };
        if found.is_empty() {
            Ok(())
        } else {
            Err(found)
        }
    }
}

/// A region of a [`Checking`] HAL: stores are seen with the value they
/// replace, and dropping it is seen as a free.
pub struct CheckedRegion<R: DmaRegion> {
    inner: R,
    coherency: Coherency,
    state: Option<Rc<RefCell<State>>>,
}

impl<R: DmaRegion> CheckedRegion<R> {
    fn seen(&self, offset: u64, old: u64, new: u64) {
        if let Some(s) = &self.state {
            let base = self.inner.phys().as_u64();
            s.borrow_mut().store(base, offset, old, new, self.coherency);
        }
    }

    /// The aligned words `[offset, offset + len)` touches.
    fn words(&self, offset: u64, len: u64) -> core::ops::Range<u64> {
        let first = offset & !7;
        let end = (offset + len).next_multiple_of(8).min(self.inner.len());
        first / 8..end / 8
    }
}

impl<R: DmaRegion> Drop for CheckedRegion<R> {
    fn drop(&mut self) {
        if let Some(s) = &self.state {
            s.borrow_mut()
                .free(self.inner.phys().as_u64(), self.inner.len());
        }
    }
}

impl<R: DmaRegion> DmaRegion for CheckedRegion<R> {
    fn phys(&self) -> PhysAddr {
        self.inner.phys()
    }
    fn len(&self) -> u64 {
        self.inner.len()
    }
    fn read_u64(&self, offset: u64) -> Result<u64, HalError> {
        self.inner.read_u64(offset)
    }
    fn write_u64(&mut self, offset: u64, value: u64) -> Result<(), HalError> {
        if self.state.is_none() {
            return self.inner.write_u64(offset, value);
        }
        let old = self.inner.read_u64(offset)?;
        self.inner.write_u64(offset, value)?;
        self.seen(offset, old, value);
        Ok(())
    }
    fn read_bytes(&self, offset: u64, out: &mut [u8]) -> Result<(), HalError> {
        self.inner.read_bytes(offset, out)
    }
    fn write_bytes(&mut self, offset: u64, data: &[u8]) -> Result<(), HalError> {
        if self.state.is_none() {
            return self.inner.write_bytes(offset, data);
        }
        let words = self.words(offset, data.len() as u64);
        let old: Vec<u64> = words
            .clone()
            .map(|w| self.inner.read_u64(8 * w).unwrap_or(0))
            .collect();
        self.inner.write_bytes(offset, data)?;
        for (w, old) in words.zip(old) {
            let new = self.inner.read_u64(8 * w).unwrap_or(0);
            self.seen(8 * w, old, new);
        }
        Ok(())
    }
}

impl<H: Hal> Hal for Checking<H> {
    type Region = CheckedRegion<H::Region>;
    fn alloc(
        &self,
        bytes: u64,
        align: u64,
        coherency: Coherency,
    ) -> Result<Self::Region, HalError> {
        Ok(CheckedRegion {
            inner: self.inner.alloc(bytes, align, coherency)?,
            coherency,
            state: self.state.clone(),
        })
    }
    fn adopt(
        &self,
        pa: crate::addr::PhysAddr,
        bytes: u64,
        coherency: Coherency,
    ) -> Result<Self::Region, HalError> {
        Ok(CheckedRegion {
            inner: self.inner.adopt(pa, bytes, coherency)?,
            coherency,
            state: self.state.clone(),
        })
    }
    fn barrier(&self) {
        self.inner.barrier();
    }
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
    fn irq_enable(&self, line: u32, edge: bool) -> Result<(), HalError> {
        self.inner.irq_enable(line, edge)
    }
    fn irq_disable(&self, line: u32) {
        self.inner.irq_disable(line);
    }
    fn irq_count(&self, line: u32) -> u32 {
        self.inner.irq_count(line)
    }
    fn ram(&self) -> Vec<crate::addr::PhysRange> {
        self.inner.ram()
    }
    fn note(&self, n: Note) {
        if let Some(s) = &self.state {
            s.borrow_mut().note(n);
        }
        self.inner.note(n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hal::fake::FakeHal;

    fn checked() -> Checking<FakeHal> {
        Checking::new(FakeHal::new(), true)
    }

    fn region(h: &Checking<FakeHal>, cache: Cache) -> CheckedRegion<crate::hal::fake::FakeRegion> {
        let r = h.alloc(4096, 4096, Coherency::NonCoherent).unwrap();
        h.note(Note::Holds {
            pa: r.phys(),
            cache,
        });
        r
    }

    #[test]
    fn check_new_entries_need_no_invalidation_changed_ones_do() {
        let h = checked();
        let mut t = region(&h, Cache::Config);
        t.write_u64(0, 5).unwrap();
        t.write_u64(0, 5).unwrap();
        assert_eq!(h.verify(), Ok(()), "zero to live, and an unchanged word");
        t.write_u64(0, 6).unwrap();
        let pa = t.phys().as_u64();
        assert_eq!(
            h.verify(),
            Err(alloc::vec![Violation::NotInvalidated {
                pa,
                cache: Cache::Config
            }])
        );
        assert_eq!(h.verify(), Ok(()), "reported once");
    }

    #[test]
    fn check_only_an_invalidation_of_the_kind_after_the_store_then_completed_discharges() {
        let h = checked();
        let mut t = region(&h, Cache::Config);
        t.write_u64(8, 1).unwrap();
        // Issued before the store: does not cover it.
        h.note(Note::Invalidate(Cache::Config));
        t.write_u64(8, 0).unwrap();
        h.note(Note::Complete);
        // The wrong kind.
        h.note(Note::Invalidate(Cache::Tlb));
        h.note(Note::Complete);
        // Issued, not completed.
        h.note(Note::Invalidate(Cache::Config));
        assert!(h.verify().is_err());
        t.write_u64(8, 1).unwrap();
        t.write_u64(8, 2).unwrap();
        h.note(Note::Invalidate(Cache::Config));
        h.note(Note::Complete);
        assert_eq!(h.verify(), Ok(()));
    }

    #[test]
    fn check_queues_need_nothing_page_tables_are_the_default() {
        let h = checked();
        let mut q = region(&h, Cache::None);
        q.write_u64(0, 1).unwrap();
        q.write_u64(0, 2).unwrap();
        assert_eq!(h.verify(), Ok(()));
        let mut pt = h.alloc(4096, 4096, Coherency::Coherent).unwrap();
        pt.write_u64(0, 1).unwrap();
        pt.write_u64(0, 0).unwrap();
        assert!(matches!(
            h.verify().unwrap_err()[..],
            [Violation::NotInvalidated {
                cache: Cache::Tlb,
                ..
            }]
        ));
        // A domain attached nowhere: nothing can be cached.
        pt.write_u64(0, 1).unwrap();
        h.note(Note::Uncached(true));
        pt.write_u64(0, 0).unwrap();
        h.note(Note::Uncached(false));
        assert_eq!(h.verify(), Ok(()));
    }

    #[test]
    fn check_a_page_freed_before_the_completion_is_caught() {
        let h = checked();
        let mut parent = region(&h, Cache::Tlb);
        let mut child = region(&h, Cache::Tlb);
        child.write_u64(0, 0x9000_0703).unwrap();
        parent.write_u64(0, child.phys().as_u64() | 3).unwrap();
        parent.write_u64(0, 0).unwrap();
        let (p, c) = (parent.phys().as_u64(), child.phys().as_u64());
        h.note(Note::Invalidate(Cache::Tlb));
        drop(child);
        h.note(Note::Complete);
        assert_eq!(
            h.verify(),
            Err(alloc::vec![Violation::FreedEarly {
                region: c,
                pending: p
            }])
        );
        // In order, the same is clean.
        let mut child = region(&h, Cache::Tlb);
        child.write_u64(0, 0x9000_0703).unwrap();
        parent.write_u64(0, child.phys().as_u64() | 3).unwrap();
        parent.write_u64(0, 0).unwrap();
        h.note(Note::Invalidate(Cache::Tlb));
        h.note(Note::Complete);
        drop(child);
        assert_eq!(h.verify(), Ok(()));
        // A page never written (a spare) was never walked.
        let spare = region(&h, Cache::Tlb);
        parent.write_u64(0, 1).unwrap();
        parent.write_u64(0, 0).unwrap();
        drop(spare);
        assert!(matches!(
            h.verify().unwrap_err()[..],
            [Violation::NotInvalidated { .. }]
        ));
    }

    #[test]
    fn check_coherent_memory_for_a_walker_that_does_not_snoop_is_caught() {
        let h = checked();
        h.note(Note::Walks {
            cache: Cache::Config,
            coherency: Coherency::NonCoherent,
        });
        h.note(Note::Walks {
            cache: Cache::Tlb,
            coherency: Coherency::Coherent,
        });
        let mut ok = region(&h, Cache::Config);
        ok.write_u64(0, 1).unwrap();
        let mut pt = h.alloc(4096, 4096, Coherency::Coherent).unwrap();
        pt.write_u64(0, 1).unwrap();
        assert_eq!(h.verify(), Ok(()));
        let mut bad = h.alloc(4096, 4096, Coherency::Coherent).unwrap();
        h.note(Note::Holds {
            pa: bad.phys(),
            cache: Cache::Config,
        });
        bad.write_bytes(3, &[1, 2]).unwrap();
        assert_eq!(
            h.verify(),
            Err(alloc::vec![Violation::NotCleaned {
                region: bad.phys().as_u64(),
                cache: Cache::Config
            }])
        );
    }

    #[test]
    fn check_a_tag_live_twice_is_caught() {
        let h = checked();
        h.note(Note::TagLive(3));
        h.note(Note::TagLive(4));
        h.note(Note::TagFree(3));
        h.note(Note::TagLive(3));
        assert_eq!(h.verify(), Ok(()));
        h.note(Note::TagLive(4));
        assert_eq!(h.verify(), Err(alloc::vec![Violation::TagTwice { tag: 4 }]));
    }

    /// A driver that does everything right, over checked memory, unless
    /// told to hand out one tag twice.
    struct CheckedHw {
        hal: Checking<FakeHal>,
        tables: crate::hal::HalTables<Checking<FakeHal>>,
        next: u32,
        same_tag: bool,
    }

    impl CheckedHw {
        fn new(same_tag: bool) -> Self {
            let hal = checked();
            CheckedHw {
                tables: crate::hal::HalTables::new(hal.clone(), Coherency::Coherent),
                hal,
                next: 0,
                same_tag,
            }
        }
        fn flush(&self) {
            self.hal.note(Note::Invalidate(Cache::Tlb));
            self.hal.note(Note::Complete);
        }
    }

    use crate::iommu::domain::{
        Attachment, DeviceId, DomainKind, DomainRef, Iommu, IommuHw, Pasid, TableFormat,
    };
    use crate::iommu::pgtable::{Gather, Prot, TableMemory};

    impl IommuHw for CheckedHw {
        type Error = HalError;
        fn format(&self) -> TableFormat {
            TableFormat::Arm(crate::iommu::pgtable::arm::ArmLpae::S1)
        }
        fn pasid_bits(&self) -> u8 {
            8
        }
        fn tables(&mut self) -> &mut dyn TableMemory {
            &mut self.tables
        }
        fn alloc_tag(&mut self) -> Result<u32, HalError> {
            if !(self.same_tag && self.next > 0) {
                self.next += 1;
            }
            Ok(self.next)
        }
        fn free_tag(&mut self, _tag: u32) {
            self.flush();
        }
        fn set_primary(&mut self, _: DeviceId, _: &DomainRef) -> Result<(), HalError> {
            Ok(())
        }
        fn enable_aux(&mut self, _: DeviceId) -> Result<(), HalError> {
            Ok(())
        }
        fn disable_aux(&mut self, _: DeviceId) -> Result<(), HalError> {
            Ok(())
        }
        fn set_pasid(&mut self, _: DeviceId, _: Pasid, _: &DomainRef) -> Result<(), HalError> {
            Ok(())
        }
        fn clear_pasid(&mut self, _: DeviceId, _: Pasid, _: &DomainRef) -> Result<(), HalError> {
            self.flush();
            Ok(())
        }
        fn invalidate(
            &mut self,
            _: &DomainRef,
            _: &[Attachment],
            _: &Gather,
        ) -> Result<(), HalError> {
            self.flush();
            Ok(())
        }
        fn note(&self, n: Note) {
            self.hal.note(n);
        }
    }

    /// Maps and unmaps across several table pages of an attached domain
    /// (the unmap empties and frees them), and of one attached nowhere.
    fn map_unmap_free(iommu: &mut Iommu<CheckedHw>) {
        const MIB: u64 = 1 << 20;
        let dev = DeviceId(1);
        iommu.add_device(dev, 8).unwrap();
        let d = iommu.domain_alloc(DomainKind::Unmanaged).unwrap();
        iommu.attach_device(d, dev).unwrap();
        let lone = iommu.domain_alloc(DomainKind::Unmanaged).unwrap();
        for id in [d, lone] {
            iommu
                .map(id, 0x4000_0000, 0x8000_0000, 4 * MIB, Prot::RW)
                .unwrap();
            iommu
                .map(id, 1 << 39, 0x8000_0000, 0x1000, Prot::RW)
                .unwrap();
            iommu.unmap(id, 0x4000_0000 + MIB, 0x3000).unwrap();
            iommu.unmap(id, 1 << 39, 0x1000).unwrap();
        }
        iommu.detach_device(dev).unwrap();
        iommu.domain_free(d).unwrap();
        iommu.domain_free(lone).unwrap();
    }

    #[test]
    fn check_the_core_over_a_correct_driver_verifies_clean() {
        let mut iommu = Iommu::new(CheckedHw::new(false), 1, 255).unwrap();
        map_unmap_free(&mut iommu);
        assert_eq!(iommu.hw.hal.verify(), Ok(()));
    }

    /// Mutation record: `Iommu::flush` releasing the gathered tables
    /// before `hw.invalidate` makes this fail with `FreedEarly`.
    #[test]
    fn check_tables_freed_only_after_their_invalidation_completed() {
        let mut iommu = Iommu::new(CheckedHw::new(false), 1, 255).unwrap();
        map_unmap_free(&mut iommu);
        let found = iommu.hw.hal.verify();
        assert!(
            !matches!(&found, Err(v) if v.iter().any(|v| matches!(v, Violation::FreedEarly { .. }))),
            "{found:x?}"
        );
        assert_eq!(found, Ok(()));
    }

    /// A map that runs out of table memory half-way takes back what it
    /// mapped through the same invalidation as an unmap before its tables
    /// go (a walk cache may hold links to them). Mutation record: the
    /// core calling `PageTable::map`, which releases them at once, makes
    /// this fail with `FreedEarly`.
    #[test]
    fn check_a_failed_map_invalidates_before_its_tables_go() {
        let mut iommu = Iommu::new(CheckedHw::new(false), 1, 255).unwrap();
        let dev = DeviceId(1);
        iommu.add_device(dev, 8).unwrap();
        let d = iommu.domain_alloc(DomainKind::Unmanaged).unwrap();
        iommu.attach_device(d, dev).unwrap();
        let tables = iommu.table_pages();
        // Two pages below 1 GiB take three new tables; the two above it
        // need two more, and the third allocation from here on fails.
        iommu.hw.hal.inner().fail_after.set(Some(3));
        let r = iommu.map(d, 0x4000_0000 - 0x2000, 0x8000_0000, 0x4000, Prot::RW);
        iommu.hw.hal.inner().fail_after.set(None);
        assert!(r.is_err(), "{r:?}");
        assert_eq!(iommu.table_pages(), tables, "the rollback freed its tables");
        assert_eq!(iommu.hw.hal.verify(), Ok(()));
        assert_eq!(iommu.iova_to_phys(d, 0x4000_0000 - 0x2000).unwrap(), None);
    }

    #[test]
    fn check_two_live_domains_with_one_tag_are_caught() {
        let mut iommu = Iommu::new(CheckedHw::new(true), 1, 255).unwrap();
        let a = iommu.domain_alloc(DomainKind::Unmanaged).unwrap();
        assert_eq!(iommu.hw.hal.verify(), Ok(()));
        let _b = iommu.domain_alloc(DomainKind::Dma).unwrap();
        assert_eq!(
            iommu.hw.hal.verify(),
            Err(alloc::vec![Violation::TagTwice { tag: 1 }])
        );
        // Once the first domain gave it back, the tag may be reused.
        iommu.domain_free(a).unwrap();
        let _c = iommu.domain_alloc(DomainKind::Unmanaged).unwrap();
        assert_eq!(
            iommu.hw.hal.verify(),
            Err(alloc::vec![Violation::TagTwice { tag: 1 }]),
            "b still holds it"
        );
    }

    #[test]
    fn check_off_passes_through_and_finds_nothing() {
        let h = Checking::new(FakeHal::new(), false);
        let mut r = h.alloc(4096, 4096, Coherency::Coherent).unwrap();
        r.write_u64(0, 1).unwrap();
        r.write_u64(0, 2).unwrap();
        h.note(Note::TagLive(1));
        h.note(Note::TagLive(1));
        assert!(!h.is_on());
        assert_eq!(h.verify(), Ok(()));
        assert_eq!(h.inner().peek(r.phys().as_u64()), Some(2));
    }
}
