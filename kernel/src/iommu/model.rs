//! A software IOMMU and DMA engine, for running the core and the
//! conformance suite on the host before (and besides) real hardware.
//!
//! The model walks the core's own page tables in a simulated physical
//! memory, caches translations in a TLB tagged like real hardware (by
//! domain tag and address), and forgets them only when the core asks it
//! to invalidate. A core that forgot an invalidation therefore sees stale
//! translations here, as it would on an SMMU or VT-d unit (QEMU's models
//! re-read more than hardware does, so they forgive more).
//!
//! Besides the IOTLB it keeps a walk cache (the tables a walk went
//! through, by tag and region), dropped only by an invalidation that
//! covers the region. Table pages the core frees are poisoned: freeing one
//! the walk cache still holds (freed before its invalidation), or walking
//! through one later, is a [`Violation`], which the host suite checks for
//! after every case.
use super::domain::DevTlb;
use super::domain::{
    Attachment, DeviceId, DomainKind, DomainRef, Fault, FaultReason, IommuHw, Pasid, TableFormat,
};
use super::iopf::{PageRequest, PageResponse, PrqPass};
use super::pgtable::arm::{ArmLpae, Stage};
use super::pgtable::{level_shift, Format, Gather, Prot, Pte, TableMemory, ENTRIES, PAGE_SIZE};
use crate::addr::{Iova, PhysAddr, PhysRange};
use crate::dma::{DmaEngine, DmaOp, DmaResult, DmaStatus, DmaTag, EngineError, Ticket};
use alloc::boxed::Box;
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    Blocked,
    Identity,
    Paged { root: u64, tag: u32 },
}

/// A TLB entry: the translation, the leaf it came from, and whether the
/// leaf was dirty when cached (as x86 and SMMUs cache the dirty state: a
/// write through an entry cached dirty updates no table).
#[derive(Debug, Clone, Copy)]
struct Cached {
    pa: u64,
    prot: Prot,
    /// The leaf's address in memory and its level.
    leaf: (u64, usize),
    dirty: bool,
}

/// Simulated physical memory, page tables, contexts, TLB and fault log.
pub struct ModelState {
    pages: BTreeMap<u64, Box<[u8; PAGE_SIZE as usize]>>,
    next_page: u64,
    format: TableFormat,
    pasid_bits: u8,
    primary: BTreeMap<DeviceId, Context>,
    pasids: BTreeMap<(DeviceId, Pasid), Context>,
    aux_enabled: BTreeSet<DeviceId>,
    tlb: BTreeMap<(u32, u64), Cached>,
    /// Walk cache: the table at `level` (1 and deeper) that a walk for
    /// tag `.0` reached, by `(tag, level, iova >> span of the entry
    /// above)`.
    walks: BTreeMap<(u32, usize, u64), u64>,
    /// Freed table pages, filled with [`POISON`]; never handed out again.
    poisoned: BTreeSet<u64>,
    /// What the core did that hardware would punish.
    pub violations: Vec<Violation>,
    /// Pages one invalidation names one by one at most (a driver's batch
    /// cap); past it the model drops every entry of the tag, as the
    /// drivers do. `None`: no cap.
    pub batch_cap: Option<u64>,
    next_tag: u32,
    /// Tags (ASIDs, domain ids) the model has; `None`: unbounded.
    pub tags: Option<u32>,
    pub faults: Vec<Fault>,
    pub invalidations: u32,
    /// PASID entries the driver cleared (a replacement must clear none).
    pub pasid_clears: u32,
    pub tables_live: usize,
    /// Where MSIs are written (through DMA translation, as on Arm), and
    /// how many reached it per device.
    pub msi_doorbell: Option<u64>,
    pub msis: BTreeMap<DeviceId, u32>,
    /// Direct regions (RMRRs) per device.
    pub direct: BTreeMap<DeviceId, Vec<(u64, u64)>>,
    /// Translation on (off: every request passes untranslated).
    enabled: bool,
    /// The next `Bringup::enable` fails (a test of bring-up's failure path).
    pub refuse_enable: bool,
    /// A driver bug to act out, for tests that show the suite catches it.
    pub broken: Option<Broken>,
    /// Device TLBs and page requests offered (off by default).
    pub dev_tlb: bool,
    pub page_requests: bool,
    /// Device TLBs the core turned on, by device.
    pub dev_tlbs: BTreeMap<DeviceId, DevTlb>,
    /// The page request queue is on; what it holds (tests push requests
    /// as a device would send them); the answers given.
    pub prq_on: bool,
    pub prq: Vec<PageRequest>,
    pub responses: Vec<(PageRequest, PageResponse)>,
    /// Dirty tracking offered (the formats that keep dirty state), and
    /// how many leaves the model's walks dirtied.
    pub dirty_tracking: bool,
    pub dirty_updates: u32,
}

/// Driver bugs the model can act out (the suite must catch each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broken {
    /// Invalidation covers the first page of each range only.
    FirstPageOnly,
    /// Unmaps invalidate nothing.
    NoUnmapInvalidation,
    /// Invalidation drops leaf entries but keeps the walk cache (leaf-only
    /// invalidation although tables were freed).
    LeafOnly,
    /// An aux detach leaves the PASID entry (CD) valid.
    DetachKeepsPasidEntry,
    /// Replacing a paging primary domain by another is not seen (the
    /// cached STE or context entry is not invalidated).
    StalePrimary,
}

pub type Shared = Rc<RefCell<ModelState>>;

impl ModelState {
    pub fn new(format: TableFormat, pasid_bits: u8) -> Shared {
        Rc::new(RefCell::new(ModelState {
            pages: BTreeMap::new(),
            next_page: 0x4000_0000,
            format,
            pasid_bits,
            primary: BTreeMap::new(),
            pasids: BTreeMap::new(),
            aux_enabled: BTreeSet::new(),
            tlb: BTreeMap::new(),
            walks: BTreeMap::new(),
            poisoned: BTreeSet::new(),
            violations: Vec::new(),
            batch_cap: Some(16),
            next_tag: 1,
            tags: None,
            faults: Vec::new(),
            invalidations: 0,
            pasid_clears: 0,
            tables_live: 0,
            msi_doorbell: None,
            msis: BTreeMap::new(),
            direct: BTreeMap::new(),
            enabled: true,
            refuse_enable: false,
            broken: None,
            dev_tlb: false,
            page_requests: false,
            dev_tlbs: BTreeMap::new(),
            prq_on: false,
            prq: Vec::new(),
            responses: Vec::new(),
            dirty_tracking: true,
            dirty_updates: 0,
        }))
    }

    /// `count` zeroed, contiguous pages at a multiple of `align`.
    pub fn alloc_pages(&mut self, count: u64, align: u64) -> u64 {
        let base = (self.next_page + align - 1) & !(align - 1);
        for k in 0..count {
            self.pages
                .insert(base + k * PAGE_SIZE, Box::new([0; PAGE_SIZE as usize]));
        }
        self.next_page = base + count * PAGE_SIZE;
        base
    }

    pub fn free_pages(&mut self, base: u64, count: u64) {
        for k in 0..count {
            self.pages.remove(&(base + k * PAGE_SIZE));
        }
    }

    /// Pages allocated and not freed (poisoned table pages are freed).
    pub fn pages_live(&self) -> usize {
        self.pages.len() - self.poisoned.len()
    }

    /// A page-table page the core gave back: a walk cache that still
    /// holds it means it went back before the invalidation covering it;
    /// its bytes become garbage, and it is never reused.
    fn free_table(&mut self, table: u64) {
        if self.walks.values().any(|&t| t == table) {
            self.violations.push(Violation::FreedWhileCached {
                table: PhysAddr(table),
            });
        }
        if let Some(page) = self.pages.get_mut(&table) {
            page.fill(POISON);
            self.poisoned.insert(table);
        }
    }

    /// Drops the tag's cached translations and walks that overlap
    /// `ranges`, or all of them past the batch cap or with no ranges
    /// (freed tables only: the drivers invalidate the whole tag then).
    fn invalidate_tag(&mut self, tag: u32, ranges: &[(u64, u64)]) {
        let first_pages: Vec<(u64, u64)>;
        let ranges = match self.broken {
            Some(Broken::NoUnmapInvalidation) if !ranges.is_empty() => return,
            Some(Broken::FirstPageOnly) => {
                first_pages = ranges.iter().map(|&(a, _)| (a, PAGE_SIZE)).collect();
                &first_pages
            }
            _ => ranges,
        };
        let pages: u64 = ranges.iter().map(|&(_, len)| len / PAGE_SIZE).sum();
        let whole = ranges.is_empty() || self.batch_cap.is_some_and(|cap| pages > cap);
        let hit = |at: u64, len: u64| {
            whole
                || ranges
                    .iter()
                    .any(|&(a, l)| at < a.saturating_add(l) && a < at.saturating_add(len))
        };
        self.tlb
            .retain(|&(t, page), _| t != tag || !hit(page, PAGE_SIZE));
        if self.broken == Some(Broken::LeafOnly) {
            return;
        }
        let levels = self.format.levels();
        self.walks.retain(|&(t, level, region), _| {
            let span = level_shift(levels, level - 1);
            t != tag || !hit(region << span, 1u64 << span)
        });
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Devices with a primary context or a PASID entry.
    pub fn contexts(&self) -> usize {
        self.primary.len() + self.pasids.len()
    }

    /// CPU access to simulated RAM; `None` where there is none.
    pub fn read(&self, pa: u64, out: &mut [u8]) -> Option<()> {
        for (i, b) in out.iter_mut().enumerate() {
            let a = pa + i as u64;
            *b = self.pages.get(&(a & !(PAGE_SIZE - 1)))?[(a % PAGE_SIZE) as usize];
        }
        Some(())
    }

    pub fn write(&mut self, pa: u64, data: &[u8]) -> Option<()> {
        for (i, &b) in data.iter().enumerate() {
            let a = pa + i as u64;
            self.pages.get_mut(&(a & !(PAGE_SIZE - 1)))?[(a % PAGE_SIZE) as usize] = b;
        }
        Some(())
    }

    fn entry(&self, table: u64, index: usize) -> u64 {
        let mut b = [0u8; 8];
        self.read(table + 8 * index as u64, &mut b);
        u64::from_le_bytes(b)
    }

    /// Walks `root` for `iova` under `tag`, starting at the deepest table
    /// the walk cache holds for it and caching the tables it passes.
    fn walk(&mut self, tag: u32, root: u64, iova: u64) -> Option<Cached> {
        let f = self.format;
        let levels = f.levels();
        if iova >> f.ias() != 0 {
            return None;
        }
        let (start, mut table) = (1..levels)
            .rev()
            .find_map(|l| {
                let key = (tag, l, iova >> level_shift(levels, l - 1));
                self.walks.get(&key).map(|&t| (l, t))
            })
            .unwrap_or((0, root));
        for level in start..levels {
            if self.poisoned.contains(&table) {
                self.violations.push(Violation::WalkThroughFreed {
                    table: PhysAddr(table),
                    iova: Iova(iova),
                });
                return None;
            }
            let shift = level_shift(levels, level);
            let index = ((iova >> shift) as usize) & (ENTRIES - 1);
            let e = self.entry(table, index);
            match f.decode(e, level) {
                Pte::Table(next) if level + 1 < levels => {
                    self.walks.insert((tag, level + 1, iova >> shift), next);
                    table = next
                }
                Pte::Leaf { pa, prot } => {
                    return Some(Cached {
                        pa: pa + (iova & ((1 << shift) - 1)),
                        prot,
                        leaf: (table + 8 * index as u64, level),
                        dirty: f.is_dirty(e, level),
                    })
                }
                _ => return None,
            }
        }
        None
    }

    /// What the IOMMU does with one access of `dev` (tagged with `pasid`
    /// or not) to `iova`: the physical address, or a recorded fault.
    pub fn translate(
        &mut self,
        dev: DeviceId,
        pasid: Option<Pasid>,
        iova: u64,
        write: bool,
    ) -> Result<u64, Fault> {
        if !self.enabled {
            return Ok(iova);
        }
        let ctx = match pasid {
            None => self.primary.get(&dev).copied().unwrap_or(Context::Blocked),
            Some(p) => match self.pasids.get(&(dev, p)) {
                Some(&c) => c,
                None => return Err(self.fault(dev, pasid, iova, write, FaultReason::NoPasid)),
            },
        };
        let (root, tag) = match ctx {
            Context::Blocked => {
                return Err(self.fault(dev, pasid, iova, write, FaultReason::Blocked))
            }
            Context::Identity => return Ok(iova),
            Context::Paged { root, tag } => (root, tag),
        };
        let page = iova & !(PAGE_SIZE - 1);
        let hit = self.tlb.get(&(tag, page)).copied();
        let mut t = match hit.or_else(|| self.walk(tag, root, page)) {
            Some(t) => t,
            None => return Err(self.fault(dev, pasid, iova, write, FaultReason::NotMapped)),
        };
        if (write && !t.prot.write) || (!write && !t.prot.read) {
            return Err(self.fault(dev, pasid, iova, write, FaultReason::Permission));
        }
        if write && !t.dirty {
            // Hardware dirty-state update: the leaf in memory, once per
            // cached translation.
            let (at, level) = t.leaf;
            let mut b = [0u8; 8];
            self.read(at, &mut b);
            let e = u64::from_le_bytes(b);
            let d = self.format.dirtied(e, level);
            if d != e {
                self.write(at, &d.to_le_bytes());
                self.dirty_updates += 1;
            }
            t.dirty = true;
        }
        self.tlb.insert((tag, page), t);
        Ok(t.pa + (iova & (PAGE_SIZE - 1)))
    }

    fn fault(
        &mut self,
        dev: DeviceId,
        pasid: Option<Pasid>,
        iova: u64,
        write: bool,
        reason: FaultReason,
    ) -> Fault {
        let f = Fault {
            dev,
            pasid,
            iova: Iova(iova),
            write,
            reason,
        };
        self.faults.push(f);
        f
    }
}

/// The model IOMMU: what a driver would be, for the core.
pub struct ModelIommu {
    pub state: Shared,
    tables: ModelTables,
}

/// Page-table pages in the model's physical memory (a CPU address
/// space's too).
pub struct ModelTables(pub Shared);

impl TableMemory for ModelTables {
    fn alloc(&mut self) -> Option<u64> {
        let mut s = self.0.borrow_mut();
        s.tables_live += 1;
        Some(s.alloc_pages(1, PAGE_SIZE))
    }
    fn free(&mut self, table: u64) {
        let mut s = self.0.borrow_mut();
        s.tables_live -= 1;
        s.free_table(table);
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        self.0.borrow().entry(table, index)
    }
    fn write(&mut self, table: u64, index: usize, value: u64) {
        self.0
            .borrow_mut()
            .write(table + 8 * index as u64, &value.to_le_bytes());
    }
}

impl ModelIommu {
    pub fn new(state: Shared) -> Self {
        ModelIommu {
            tables: ModelTables(state.clone()),
            state,
        }
    }
}

fn context(d: &DomainRef) -> Context {
    match (d.kind, d.root) {
        (DomainKind::Identity, _) => Context::Identity,
        (DomainKind::Unmanaged | DomainKind::Dma | DomainKind::Sva, Some(root)) => Context::Paged {
            root: root.0,
            tag: d.tag,
        },
        _ => Context::Blocked,
    }
}

/// The format a CPU's page tables have on a platform whose IOMMU uses
/// `own`: what a process's address space looks like next to that IOMMU
/// (Arm stage 1 with the CPU's memory attributes; x86-64 paging). A
/// format with no CPU counterpart (a second level, stage 2) comes back
/// unchanged, and no IOMMU accepts it for SVA.
pub fn cpu_format_of(own: TableFormat) -> TableFormat {
    match own {
        TableFormat::Arm(f) if f.stage == Stage::One => TableFormat::Arm(ArmLpae::S1_CPU),
        other => other,
    }
}

/// The byte freed table pages are filled with: as entries, garbage.
pub const POISON: u8 = 0xd7;

/// What the core did that real hardware would punish, found by the
/// model's walk cache and poisoned table pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A table page went back while the walk cache still held it: it was
    /// freed before an invalidation covering it completed.
    FreedWhileCached { table: PhysAddr },
    /// A walk (through a stale walk-cache entry) read a freed table page.
    WalkThroughFreed { table: PhysAddr, iova: Iova },
}

/// What the model refuses: the core asked for PASID work out of order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelError {
    /// AUX disabled on a device with PASID entries still live.
    PasidsLive(DeviceId),
    /// A PASID entry for a device whose PASID table is not set up.
    NoPasidTable(DeviceId),
    /// Asked to (`ModelState::refuse_enable`).
    EnableRefused,
    /// Every tag of `ModelState::tags` is in use.
    OutOfTags,
}

impl core::fmt::Display for ModelError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ModelError::PasidsLive(dev) => write!(f, "device {dev}: PASID entries still live"),
            ModelError::NoPasidTable(dev) => write!(f, "device {dev}: PASID table not set up"),
            ModelError::EnableRefused => f.write_str("translation refused to turn on"),
            ModelError::OutOfTags => f.write_str("no tag left"),
        }
    }
}

impl IommuHw for ModelIommu {
    type Error = ModelError;

    /// As SMMUv3 stage 1 and VT-d first level: the model walks a CPU's
    /// tables when its own format is the CPU's (Arm stage 1 with either
    /// memory-attribute layout, x86-64 paging).
    fn sva_supported(&self) -> bool {
        let s = self.state.borrow();
        s.pasid_bits > 0 && self.sva_accepts(&cpu_format_of(s.format))
    }

    fn dev_tlb_supported(&self) -> bool {
        self.state.borrow().dev_tlb
    }

    fn dirty_tracking_unavailable(&self) -> Option<&'static str> {
        let s = self.state.borrow();
        if !s.format.tracks_dirty() {
            Some("the format keeps no dirty state")
        } else if !s.dirty_tracking {
            Some("dirty tracking turned off in the model")
        } else {
            None
        }
    }

    fn page_requests_supported(&self) -> bool {
        self.state.borrow().page_requests
    }

    fn set_dev_tlb(&mut self, dev: DeviceId, tlb: Option<DevTlb>) -> Result<(), ModelError> {
        let mut s = self.state.borrow_mut();
        match tlb {
            Some(t) => s.dev_tlbs.insert(dev, t),
            None => s.dev_tlbs.remove(&dev),
        };
        Ok(())
    }

    fn enable_page_requests(&mut self) -> Result<(), ModelError> {
        self.state.borrow_mut().prq_on = true;
        Ok(())
    }

    fn take_page_requests(&mut self) -> Result<PrqPass<ModelError>, ModelError> {
        let mut s = self.state.borrow_mut();
        Ok(PrqPass {
            requests: core::mem::take(&mut s.prq),
            ..PrqPass::default()
        })
    }

    fn page_response(&mut self, req: &PageRequest, resp: PageResponse) -> Result<bool, ModelError> {
        if !req.needs_response() {
            return Ok(false);
        }
        self.state.borrow_mut().responses.push((*req, resp));
        Ok(true)
    }

    fn sva_accepts(&self, format: &TableFormat) -> bool {
        match (self.state.borrow().format, format) {
            (TableFormat::Arm(own), TableFormat::Arm(f)) => {
                own.stage == Stage::One && f.stage == Stage::One
            }
            (TableFormat::X86FirstLevel(_), TableFormat::X86FirstLevel(_)) => true,
            _ => false,
        }
    }

    fn format(&self) -> TableFormat {
        self.state.borrow().format
    }

    fn pasid_bits(&self) -> u8 {
        self.state.borrow().pasid_bits
    }

    fn tables(&mut self) -> &mut dyn TableMemory {
        &mut self.tables
    }

    fn msi_doorbell(&self) -> Option<PhysAddr> {
        self.state.borrow().msi_doorbell.map(PhysAddr)
    }

    fn invalidation_batch_cap(&self) -> Option<u64> {
        self.state.borrow().batch_cap
    }

    fn direct_regions(&self, dev: DeviceId) -> Vec<PhysRange> {
        self.state
            .borrow()
            .direct
            .get(&dev)
            .map(|v| v.iter().map(|&(b, s)| PhysRange::new(b, s)).collect())
            .unwrap_or_default()
    }

    fn alloc_tag(&mut self) -> Result<u32, ModelError> {
        if self.tags_left() == Some(0) {
            return Err(ModelError::OutOfTags);
        }
        let mut s = self.state.borrow_mut();
        s.next_tag += 1;
        Ok(s.next_tag)
    }

    fn tags_left(&self) -> Option<u32> {
        let s = self.state.borrow();
        // Tags are handed out from 2 on and not reused (as the drivers do).
        s.tags.map(|n| (n + 1).saturating_sub(s.next_tag))
    }

    fn free_tag(&mut self, tag: u32) {
        let mut s = self.state.borrow_mut();
        s.tlb.retain(|&(t, _), _| t != tag);
        s.walks.retain(|&(t, _, _), _| t != tag);
    }

    fn set_primary(&mut self, dev: DeviceId, d: &DomainRef) -> Result<(), ModelError> {
        let mut s = self.state.borrow_mut();
        let paged = |c: Option<&Context>| matches!(c, Some(Context::Paged { .. }));
        if s.broken == Some(Broken::StalePrimary)
            && paged(s.primary.get(&dev))
            && paged(Some(&context(d)))
        {
            return Ok(());
        }
        s.primary.insert(dev, context(d));
        Ok(())
    }

    fn enable_aux(&mut self, dev: DeviceId) -> Result<(), ModelError> {
        self.state.borrow_mut().aux_enabled.insert(dev);
        Ok(())
    }

    fn disable_aux(&mut self, dev: DeviceId) -> Result<(), ModelError> {
        let mut s = self.state.borrow_mut();
        if s.pasids.keys().any(|&(d, _)| d == dev) {
            return Err(ModelError::PasidsLive(dev));
        }
        s.aux_enabled.remove(&dev);
        Ok(())
    }

    fn set_pasid(&mut self, dev: DeviceId, pasid: Pasid, d: &DomainRef) -> Result<(), ModelError> {
        let mut s = self.state.borrow_mut();
        if !s.aux_enabled.contains(&dev) {
            return Err(ModelError::NoPasidTable(dev));
        }
        s.pasids.insert((dev, pasid), context(d));
        Ok(())
    }

    fn clear_pasid(
        &mut self,
        dev: DeviceId,
        pasid: Pasid,
        _d: &DomainRef,
    ) -> Result<(), ModelError> {
        let mut s = self.state.borrow_mut();
        if s.broken == Some(Broken::DetachKeepsPasidEntry) {
            return Ok(());
        }
        s.pasid_clears += 1;
        s.pasids.remove(&(dev, pasid));
        Ok(())
    }

    fn invalidate(
        &mut self,
        d: &DomainRef,
        _attached: &[Attachment],
        gather: &Gather,
    ) -> Result<(), ModelError> {
        let mut s = self.state.borrow_mut();
        s.invalidations += 1;
        s.invalidate_tag(d.tag, &gather.ranges);
        Ok(())
    }
}

impl super::bringup::Bringup for ModelIommu {
    fn pass_through(&mut self, dev: DeviceId) -> Result<(), ModelError> {
        self.state
            .borrow_mut()
            .primary
            .insert(dev, Context::Identity);
        Ok(())
    }
    fn enable(&mut self) -> Result<(), ModelError> {
        let mut s = self.state.borrow_mut();
        if core::mem::take(&mut s.refuse_enable) {
            return Err(ModelError::EnableRefused);
        }
        s.enabled = true;
        Ok(())
    }
    fn release(&mut self, dev: DeviceId) -> Result<(), ModelError> {
        let mut s = self.state.borrow_mut();
        s.primary.remove(&dev);
        s.pasids.retain(|&(d, _), _| d != dev);
        s.aux_enabled.remove(&dev);
        Ok(())
    }
    fn shutdown(&mut self) -> Result<(), ModelError> {
        self.state.borrow_mut().enabled = false;
        Ok(())
    }
    fn held(&self) -> (u64, u64) {
        (self.state.borrow().tables_live as u64, 0)
    }
}

/// A DMA engine in the model: operations run at once, access by access,
/// through [`ModelState::translate`].
pub struct ModelDma {
    state: Shared,
    dev: DeviceId,
    pasid_bits: u8,
    results: BTreeMap<u64, DmaResult>,
    next: u64,
}

impl ModelDma {
    pub fn new(state: Shared, dev: DeviceId, pasid_bits: u8) -> Self {
        ModelDma {
            state,
            dev,
            pasid_bits,
            results: BTreeMap::new(),
            next: 0,
        }
    }

    fn execute(&self, op: &DmaOp, tag: DmaTag) -> DmaResult {
        let pasid = match tag {
            DmaTag::Untagged => None,
            DmaTag::Pasid { pasid, .. } => {
                if self.pasid_bits == 0 || u64::from(pasid.0) >= 1u64 << self.pasid_bits {
                    return DmaResult {
                        status: DmaStatus::Invalid,
                        bytes: 0,
                    };
                }
                if !self.state.borrow().aux_enabled.contains(&self.dev) {
                    return DmaResult {
                        status: DmaStatus::PasidDisabled,
                        bytes: 0,
                    };
                }
                Some(pasid)
            }
        };
        let mut s = self.state.borrow_mut();
        let dev = self.dev;
        // One byte at a time through the IOMMU: slow, and exactly right.
        let read = |s: &mut ModelState, a: u64| -> Result<u8, DmaStatus> {
            let pa = s
                .translate(dev, pasid, a, false)
                .map_err(|_| DmaStatus::ReadFault { addr: a })?;
            let mut b = [0u8];
            s.read(pa, &mut b).ok_or(DmaStatus::ReadFault { addr: a })?;
            Ok(b[0])
        };
        let write = |s: &mut ModelState, a: u64, v: u8| -> Result<(), DmaStatus> {
            let pa = s
                .translate(dev, pasid, a, true)
                .map_err(|_| DmaStatus::WriteFault { addr: a })?;
            s.write(pa, &[v]).ok_or(DmaStatus::WriteFault { addr: a })
        };
        let (len, mut step): (u64, _) = match *op {
            DmaOp::Copy { src, dst, len } => (
                len,
                Box::new(move |s: &mut ModelState, i: u64| {
                    let v = read(s, src + i)?;
                    write(s, dst + i, v)
                }) as Box<dyn FnMut(&mut ModelState, u64) -> Result<(), DmaStatus>>,
            ),
            DmaOp::Fill { dst, len, pattern } => (
                len,
                Box::new(move |s: &mut ModelState, i: u64| {
                    write(s, dst + i, pattern.to_le_bytes()[(i % 8) as usize])
                }),
            ),
            DmaOp::WriteImm { dst, value, size } => (
                u64::from(size),
                Box::new(move |s: &mut ModelState, i: u64| {
                    write(s, dst + i, value.to_le_bytes()[i as usize])
                }),
            ),
            DmaOp::Compare { a, b, len } => {
                for i in 0..len {
                    let (x, y) = match (read(&mut s, a + i), read(&mut s, b + i)) {
                        (Ok(x), Ok(y)) => (x, y),
                        (Err(e), _) | (_, Err(e)) => {
                            return DmaResult {
                                status: e,
                                bytes: i,
                            }
                        }
                    };
                    if x != y {
                        return DmaResult {
                            status: DmaStatus::Differs { offset: i },
                            bytes: i,
                        };
                    }
                }
                return DmaResult {
                    status: DmaStatus::Success,
                    bytes: len,
                };
            }
        };
        for i in 0..len {
            if let Err(status) = step(&mut s, i) {
                // Faults are reported per page, at the first byte that faulted.
                return DmaResult { status, bytes: i };
            }
        }
        DmaResult {
            status: DmaStatus::Success,
            bytes: len,
        }
    }
}

impl ModelDma {
    /// Runs `op`, then sends the completion MSI the way a device does: a
    /// write to the doorbell, requester id only (MSIs carry no PASID),
    /// through the device's primary domain. Says whether it arrived.
    pub fn run_with_interrupt(&mut self, op: &DmaOp, tag: DmaTag) -> (DmaResult, bool) {
        let r = self.execute(op, tag);
        let mut s = self.state.borrow_mut();
        let Some(db) = s.msi_doorbell else {
            // MSIs that bypass translation always arrive.
            *s.msis.entry(self.dev).or_insert(0) += 1;
            return (r, true);
        };
        let arrived = s.translate(self.dev, None, db, true).is_ok();
        if arrived {
            *s.msis.entry(self.dev).or_insert(0) += 1;
        }
        (r, arrived)
    }
}

impl DmaEngine for ModelDma {
    fn submit(&mut self, op: &DmaOp, tag: DmaTag) -> Result<Ticket, EngineError> {
        let r = self.execute(op, tag);
        self.next += 1;
        self.results.insert(self.next, r);
        Ok(Ticket(self.next))
    }

    fn wait(&mut self, ticket: Ticket, _bound_ns: u64) -> Result<DmaResult, EngineError> {
        self.results
            .remove(&ticket.0)
            .ok_or(EngineError::UnknownTicket(ticket))
    }
}
