//! Domains, primary and aux attachment, device features: the rules of
//! `../shared/DESIGN.md` ("Domain and aux-domain semantics") as code. The
//! core decides; the hardware driver ([`IommuHw`]) programs what it is
//! told and invalidates when asked.
use super::check::Note;
use super::iopf::{PageRequest, PageResponse, PrqPass};
use super::iova::IovaAllocator;
pub use super::pasid::Pasid;
use super::pasid::{PasidAllocator, PasidError, PASID_MAX};
use super::pgtable::arm::ArmLpae;
use super::pgtable::x86::{VtdSecondLevel, X86FirstLevel};
use super::pgtable::{Format, Gather, PageTable, PgError, Prot, Pte, TableMemory, PAGE_SIZE};
use crate::addr::{Iova, PhysAddr, PhysRange};
pub use crate::mm::space::SpaceId;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

/// A device as the IOMMU knows it: the id its requests carry there (an
/// SMMUv3 StreamID, a VT-d source id), which the platform assigns from
/// the firmware tables. Not a PASID, a domain tag or an index: a distinct
/// type, so they cannot be mixed up.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u32);

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({:#x})", self.0)
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl fmt::LowerHex for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::LowerHex::fmt(&self.0, f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DomainId(pub u32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainKind {
    /// Every request faults.
    Blocked,
    /// Requests pass through untranslated.
    Identity,
    /// The caller maps.
    Unmanaged,
    /// The core hands out IOVAs ([`Iommu::dma_map`]).
    Dma,
    /// A CPU address space bound for shared virtual addressing: its page
    /// tables are the space's, changed by the CPU side only
    /// ([`Iommu::sva_bind`]).
    Sva,
}

impl DomainKind {
    fn paging(self) -> bool {
        matches!(self, DomainKind::Unmanaged | DomainKind::Dma)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Aux domains through PASIDs.
    Aux,
    /// Shared virtual addressing: CPU address spaces bound to PASIDs.
    Sva,
    /// I/O page faults: translation misses served on demand.
    Iopf,
    /// Address translation services: a device TLB.
    Ats,
    /// Page requests (PCIe PRI).
    Pri,
}

/// The page-table formats a driver can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableFormat {
    Arm(ArmLpae),
    X86FirstLevel(X86FirstLevel),
    VtdSecondLevel(VtdSecondLevel),
}

impl Format for TableFormat {
    fn name(&self) -> &'static str {
        match self {
            TableFormat::Arm(f) => f.name(),
            TableFormat::X86FirstLevel(f) => f.name(),
            TableFormat::VtdSecondLevel(f) => f.name(),
        }
    }
    fn levels(&self) -> usize {
        match self {
            TableFormat::Arm(f) => f.levels(),
            TableFormat::X86FirstLevel(f) => f.levels(),
            TableFormat::VtdSecondLevel(f) => f.levels(),
        }
    }
    fn oas(&self) -> u32 {
        match self {
            TableFormat::Arm(f) => f.oas(),
            TableFormat::X86FirstLevel(f) => f.oas(),
            TableFormat::VtdSecondLevel(f) => f.oas(),
        }
    }
    fn leaf_allowed(&self, level: usize) -> bool {
        match self {
            TableFormat::Arm(f) => f.leaf_allowed(level),
            TableFormat::X86FirstLevel(f) => f.leaf_allowed(level),
            TableFormat::VtdSecondLevel(f) => f.leaf_allowed(level),
        }
    }
    fn encode_table(&self, table: u64, level: usize) -> u64 {
        match self {
            TableFormat::Arm(f) => f.encode_table(table, level),
            TableFormat::X86FirstLevel(f) => f.encode_table(table, level),
            TableFormat::VtdSecondLevel(f) => f.encode_table(table, level),
        }
    }
    fn encode_leaf(&self, pa: u64, level: usize, prot: Prot) -> u64 {
        match self {
            TableFormat::Arm(f) => f.encode_leaf(pa, level, prot),
            TableFormat::X86FirstLevel(f) => f.encode_leaf(pa, level, prot),
            TableFormat::VtdSecondLevel(f) => f.encode_leaf(pa, level, prot),
        }
    }
    fn decode(&self, entry: u64, level: usize) -> Pte {
        match self {
            TableFormat::Arm(f) => f.decode(entry, level),
            TableFormat::X86FirstLevel(f) => f.decode(entry, level),
            TableFormat::VtdSecondLevel(f) => f.decode(entry, level),
        }
    }
    fn tracks_dirty(&self) -> bool {
        match self {
            TableFormat::Arm(f) => f.tracks_dirty(),
            TableFormat::X86FirstLevel(f) => f.tracks_dirty(),
            TableFormat::VtdSecondLevel(f) => f.tracks_dirty(),
        }
    }
    fn clean(&self, entry: u64, level: usize) -> Option<u64> {
        match self {
            TableFormat::Arm(f) => f.clean(entry, level),
            TableFormat::X86FirstLevel(f) => f.clean(entry, level),
            TableFormat::VtdSecondLevel(f) => f.clean(entry, level),
        }
    }
    fn dirtied(&self, entry: u64, level: usize) -> u64 {
        match self {
            TableFormat::Arm(f) => f.dirtied(entry, level),
            TableFormat::X86FirstLevel(f) => f.dirtied(entry, level),
            TableFormat::VtdSecondLevel(f) => f.dirtied(entry, level),
        }
    }
    fn is_dirty(&self, entry: u64, level: usize) -> bool {
        match self {
            TableFormat::Arm(f) => f.is_dirty(entry, level),
            TableFormat::X86FirstLevel(f) => f.is_dirty(entry, level),
            TableFormat::VtdSecondLevel(f) => f.is_dirty(entry, level),
        }
    }
}

/// What a driver is told about a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainRef {
    pub id: DomainId,
    pub kind: DomainKind,
    /// The page table's root, for paging domains.
    pub root: Option<PhysAddr>,
    pub format: TableFormat,
    /// The hardware tag (ASID on SMMUv3 stage 1, domain id on VT-d).
    pub tag: u32,
}

/// Where a domain is attached: the device, and the PASID for an aux
/// attachment (none for primary).
pub type Attachment = (DeviceId, Option<Pasid>);

/// Why the IOMMU refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultReason {
    /// The device's domain is blocked.
    Blocked,
    /// No translation for this PASID on this device.
    NoPasid,
    /// Nothing mapped at the address.
    NotMapped,
    /// Mapped, but not for this access (a write to a read-only page).
    Permission,
}

/// A fault as the driver decodes it from its event queue or fault
/// recording registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub dev: DeviceId,
    pub pasid: Option<Pasid>,
    pub iova: Iova,
    pub write: bool,
    pub reason: FaultReason,
}

/// The hardware side of the core, one implementation per IOMMU.
pub trait IommuHw {
    /// The driver's own error: a small `Copy` value that says what the
    /// hardware (or the driver's use of it) refused.
    type Error: Copy + fmt::Debug + fmt::Display + PartialEq;
    /// The format of new paging domains' tables.
    fn format(&self) -> TableFormat;
    /// PASID bits the IOMMU supports (SSIDSIZE, PSS + 1); 0 for none.
    fn pasid_bits(&self) -> u8;
    fn tables(&mut self) -> &mut dyn TableMemory;
    /// A fresh ASID or domain id.
    fn alloc_tag(&mut self) -> Result<u32, Self::Error>;
    fn free_tag(&mut self, tag: u32);
    /// How many more tags [`Self::alloc_tag`] can hand out (the unit's
    /// ASIDs or domain ids not yet used); `None` when there is no bound
    /// worth knowing. Tests size their domain counts from it.
    fn tags_left(&self) -> Option<u32> {
        None
    }
    /// Makes `d` the translation of `dev`'s requests without PASID,
    /// replacing the previous one atomically.
    fn set_primary(&mut self, dev: DeviceId, d: &DomainRef) -> Result<(), Self::Error>;
    /// Allocates `dev`'s PASID structures and enables its PASID capability.
    fn enable_aux(&mut self, dev: DeviceId) -> Result<(), Self::Error>;
    fn disable_aux(&mut self, dev: DeviceId) -> Result<(), Self::Error>;
    fn set_pasid(&mut self, dev: DeviceId, pasid: Pasid, d: &DomainRef) -> Result<(), Self::Error>;
    /// Removes the PASID's translation and every cached copy of it.
    fn clear_pasid(
        &mut self,
        dev: DeviceId,
        pasid: Pasid,
        d: &DomainRef,
    ) -> Result<(), Self::Error>;
    /// Where the device's MSIs are written, if they go through DMA
    /// translation (the GIC ITS doorbell on Arm): the core maps that page,
    /// at the same address, in every primary paging domain so MSIs keep
    /// working. `None` where MSIs bypass translation (x86).
    fn msi_doorbell(&self) -> Option<PhysAddr> {
        None
    }
    /// Regions `dev` must keep reaching at their own addresses whatever
    /// its primary domain is (VT-d RMRRs, as `(base, size)`): the core maps
    /// them one to one in every paging domain that becomes the device's
    /// primary. Requests with a PASID are not covered.
    fn direct_regions(&self, _dev: DeviceId) -> Vec<PhysRange> {
        Vec::new()
    }
    /// `iova..iova + size` of `d` went from not present to present. Most
    /// IOMMUs cache no absent translations and need nothing; a VT-d unit
    /// in caching mode (CAP.CM) needs an invalidation, one that wants its
    /// write buffer flushed (CAP.RWBF) a flush.
    fn mapped(
        &mut self,
        _d: &DomainRef,
        _attached: &[Attachment],
        _iova: u64,
        _size: u64,
    ) -> Result<(), Self::Error> {
        Ok(())
    }
    /// At most how many address-selective invalidations (TLBI commands,
    /// page-selective descriptors) one batch of the driver carries; past
    /// that it invalidates the whole tag instead. Without range
    /// invalidation each page takes one, so an unmap of more pages than
    /// this goes past the cap; tests size ranges from it. `None`: no cap.
    fn invalidation_batch_cap(&self) -> Option<u64> {
        None
    }
    /// Invalidates `gather.ranges` of `d` wherever it is attached, and
    /// returns once the invalidation completed.
    fn invalidate(
        &mut self,
        d: &DomainRef,
        attached: &[Attachment],
        gather: &Gather,
    ) -> Result<(), Self::Error>;
    /// Tells the checking mode what the core did (drivers pass it to
    /// their HAL's [`crate::hal::Hal::note`]).
    fn note(&self, _n: Note) {}
    /// The unit keeps device TLBs coherent (ATS: VT-d ECAP.DT, SMMUv3
    /// IDR0.ATS).
    fn dev_tlb_supported(&self) -> bool {
        false
    }
    /// The unit takes page requests (PRI: VT-d ECAP.PRS, SMMUv3 IDR0.PRI).
    fn page_requests_supported(&self) -> bool {
        false
    }
    /// ATS on (`Some`) or off for `dev` in the unit: from then on the
    /// driver's invalidations of whatever `dev` reaches include its device
    /// TLB. The core calls it only where [`Self::dev_tlb_supported`] says
    /// so.
    fn set_dev_tlb(&mut self, _dev: DeviceId, _tlb: Option<DevTlb>) -> Result<(), Self::Error> {
        Ok(())
    }
    /// Starts the unit's page request queue (once; later calls do
    /// nothing). Called only where [`Self::page_requests_supported`].
    fn enable_page_requests(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    /// The page requests the queue holds, taken off it.
    fn take_page_requests(&mut self) -> Result<PrqPass<Self::Error>, Self::Error> {
        Ok(PrqPass::default())
    }
    /// Answers the page group `req` ends; says whether a response went.
    fn page_response(
        &mut self,
        _req: &PageRequest,
        _resp: PageResponse,
    ) -> Result<bool, Self::Error> {
        Ok(false)
    }
    /// The unit updates the dirty state of this format's leaves on a
    /// write (VT-d first level: the D bit; SMMUv3 with HTTU and HD).
    /// `None` when it can, else why not.
    fn dirty_tracking_unavailable(&self) -> Option<&'static str> {
        Some("the driver does not track dirty pages")
    }
    /// The unit can put a guest's stage 1 over a stage-2 table (a
    /// nesting parent). `None` when it can, else why not.
    fn nesting_unavailable(&self) -> Option<&'static str> {
        Some("the driver does not nest translations")
    }
    /// The unit can walk a CPU's page tables for PASID-tagged requests
    /// (SMMUv3 stage 1 with substreams; VT-d first-level translation).
    fn sva_supported(&self) -> bool {
        false
    }
    /// The unit can walk tables of `format` for a bound address space
    /// (a space's format is the CPU's).
    fn sva_accepts(&self, _format: &TableFormat) -> bool {
        false
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IommuError<E> {
    UnknownDevice(DeviceId),
    DeviceExists(DeviceId),
    UnknownDomain(DomainId),
    /// The device has aux domains attached: replacing its primary domain
    /// or disabling AUX must wait until they are detached.
    Busy {
        dev: DeviceId,
        aux_domains: usize,
    },
    /// The domain is attached somewhere (or is the default blocked domain).
    DomainInUse {
        domain: DomainId,
        attachments: usize,
    },
    AuxDisabled(DeviceId),
    /// Aux attachment takes unmanaged and DMA domains only.
    WrongDomainType {
        domain: DomainId,
        kind: DomainKind,
    },
    /// The operation needs a paging domain.
    NotPaging {
        domain: DomainId,
        kind: DomainKind,
    },
    /// The domain's PASID does not fit the device's or the IOMMU's width.
    PasidTooWide {
        pasid: Pasid,
        device_bits: u8,
        iommu_bits: u8,
    },
    AlreadyAttached {
        domain: DomainId,
        dev: DeviceId,
    },
    /// PASID 0 is the primary domain's (`attach_device`).
    PasidZero {
        dev: DeviceId,
    },
    /// The PASID allocator handed this PASID out (to an aux domain): a
    /// caller may not choose it.
    PasidOwned {
        pasid: Pasid,
    },
    /// Nothing is attached at this PASID of the device (it is blocked).
    PasidNotAttached {
        dev: DeviceId,
        pasid: Pasid,
    },
    NotAttached {
        domain: DomainId,
        dev: DeviceId,
    },
    Unsupported(Feature),
    /// The device, or the unit, lacks what the feature needs.
    FeatureUnavailable {
        dev: DeviceId,
        feature: Feature,
        why: &'static str,
    },
    /// The feature is supported but not enabled on the device.
    FeatureDisabled {
        dev: DeviceId,
        feature: Feature,
    },
    /// The feature is in use on the device (an address space is bound).
    FeatureInUse {
        dev: DeviceId,
        feature: Feature,
    },
    /// An SVA domain belongs to its address space: it is made, attached
    /// and freed through [`Iommu::sva_bind`] and [`Iommu::sva_unbind`].
    SvaDomain {
        domain: DomainId,
    },
    /// The unit cannot give a page table this property (dirty tracking, a
    /// nesting parent).
    HwptUnavailable {
        what: &'static str,
        why: &'static str,
    },
    /// The unit cannot walk an address space in this format.
    SpaceFormat {
        format: &'static str,
    },
    /// The address space is not bound to the device.
    NotBound {
        dev: DeviceId,
        space: SpaceId,
    },
    /// No IOVA space left in a DMA domain.
    NoIova {
        size: u64,
    },
    Pasid(PasidError),
    PageTable(PgError),
    /// The driver refused (its own error).
    Hw(E),
}

impl<E: fmt::Display> fmt::Display for IommuError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IommuError::UnknownDevice(d) => write!(f, "device {d} is unknown"),
            IommuError::DeviceExists(d) => write!(f, "device {d} is known already"),
            IommuError::UnknownDomain(d) => write!(f, "domain {} does not exist", d.0),
            IommuError::Busy { dev, aux_domains } => write!(
                f,
                "device {dev} is busy: {aux_domains} aux domain(s) attached; detach them first"
            ),
            IommuError::DomainInUse {
                domain,
                attachments,
            } => write!(
                f,
                "domain {} is in use ({attachments} attachment(s))",
                domain.0
            ),
            IommuError::AuxDisabled(d) => write!(f, "device {d} does not have AUX enabled"),
            IommuError::WrongDomainType { domain, kind } => {
                write!(
                    f,
                    "domain {} is {kind:?}: attaching at a PASID needs unmanaged or DMA",
                    domain.0
                )
            }
            IommuError::NotPaging { domain, kind } => {
                write!(f, "domain {} is {kind:?}: it has no page table", domain.0)
            }
            IommuError::PasidTooWide {
                pasid,
                device_bits,
                iommu_bits,
            } => write!(
                f,
                "PASID {pasid:#x} does not fit (device {device_bits} bits, IOMMU {iommu_bits} bits)"
            ),
            IommuError::AlreadyAttached { domain, dev } => {
                write!(
                    f,
                    "domain {} is already aux-attached to device {dev}",
                    domain.0
                )
            }
            IommuError::PasidZero { dev } => write!(
                f,
                "PASID 0 of device {dev} is the primary domain's: use attach_device"
            ),
            IommuError::PasidOwned { pasid } => {
                write!(f, "PASID {pasid:#x} belongs to the PASID allocator's user")
            }
            IommuError::PasidNotAttached { dev, pasid } => {
                write!(f, "nothing is attached at PASID {pasid:#x} of device {dev}")
            }
            IommuError::NotAttached { domain, dev } => {
                write!(f, "domain {} is not aux-attached to device {dev}", domain.0)
            }
            IommuError::Unsupported(feat) => write!(f, "{feat:?} is not supported"),
            IommuError::FeatureUnavailable { dev, feature, why } => {
                write!(f, "{feature:?} is not available for device {dev}: {why}")
            }
            IommuError::FeatureDisabled { dev, feature } => {
                write!(f, "{feature:?} is not enabled on device {dev}")
            }
            IommuError::FeatureInUse { dev, feature } => {
                write!(f, "{feature:?} is in use on device {dev}")
            }
            IommuError::SvaDomain { domain } => write!(
                f,
                "domain {} belongs to an address space: use sva_bind and sva_unbind",
                domain.0
            ),
            IommuError::HwptUnavailable { what, why } => {
                write!(f, "{what} is not available: {why}")
            }
            IommuError::SpaceFormat { format } => {
                write!(f, "the IOMMU cannot walk an address space in {format}")
            }
            IommuError::NotBound { dev, space } => {
                write!(f, "address space {} is not bound to device {dev}", space.0)
            }
            IommuError::NoIova { size } => write!(f, "no IOVA space for {size:#x} bytes"),
            IommuError::Pasid(e) => write!(f, "{e}"),
            IommuError::PageTable(e) => write!(f, "{e}"),
            IommuError::Hw(e) => write!(f, "hardware: {e}"),
        }
    }
}

impl<E> From<PgError> for IommuError<E> {
    fn from(e: PgError) -> Self {
        IommuError::PageTable(e)
    }
}
impl<E> From<PasidError> for IommuError<E> {
    fn from(e: PasidError) -> Self {
        IommuError::Pasid(e)
    }
}

struct Domain {
    kind: DomainKind,
    table: Option<PageTable<TableFormat>>,
    tag: u32,
    pasid: Option<Pasid>,
    primary_of: Vec<DeviceId>,
    /// Every `(device, PASID)` the domain is attached at: its aux PASID
    /// and PASIDs callers chose.
    pasid_of: Vec<(DeviceId, Pasid)>,
    iova: Option<IovaAllocator>,
    /// The MSI doorbell page is mapped (while primary somewhere).
    msi_mapped: bool,
    /// Direct regions mapped for devices this domain is or was primary of
    /// (they stay until the domain is freed).
    direct: Vec<(u64, u64)>,
    /// An SVA domain's address space: its id, root table and format.
    space: Option<(SpaceId, u64, TableFormat)>,
}

struct Device {
    pasid_bits: u8,
    primary: DomainId,
    aux_enabled: bool,
    /// SVA enabled (implies PASIDs enabled).
    sva: bool,
    /// What the device's own capabilities offer (`declare_capabilities`).
    caps: DeviceCaps,
    /// ATS, PRI and I/O page faults turned on.
    ats: bool,
    pri: bool,
    iopf: bool,
    /// The domain at each attached PASID; a PASID not here is blocked.
    pasids: BTreeMap<Pasid, DomainId>,
}

/// The page table of paging domain `id`.
fn paging_table<E>(
    domains: &mut BTreeMap<DomainId, Domain>,
    id: DomainId,
) -> Result<&mut PageTable<TableFormat>, IommuError<E>> {
    let d = domains.get_mut(&id).ok_or(IommuError::UnknownDomain(id))?;
    let kind = d.kind;
    d.table
        .as_mut()
        .ok_or(IommuError::NotPaging { domain: id, kind })
}

/// IOVA space DMA domains hand out from: above the first 1 MiB, below 4 GiB
/// (what a 32-bit device can reach as well).
pub const DMA_IOVA_BASE: u64 = 0x10_0000;
pub const DMA_IOVA_END: u64 = 0x1_0000_0000;

/// The next core's id.
static NEXT_CORE: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(1);

mod features;
mod hwpt;
mod sva;
pub use features::{DevTlb, DeviceCaps, IopfReport};

/// One IOMMU's domains and devices.
pub struct Iommu<H: IommuHw> {
    pub hw: H,
    domains: BTreeMap<DomainId, Domain>,
    devices: BTreeMap<DeviceId, Device>,
    pasids: PasidAllocator,
    /// Caller-chosen PASIDs: on how many devices each is attached.
    chosen: BTreeMap<Pasid, u32>,
    /// The SVA domain of each bound address space.
    spaces: BTreeMap<SpaceId, DomainId>,
    /// Which core this is, among all made: what an IOAS keys its HWPTs by.
    id: u32,
    next: u32,
    blocked: DomainId,
}

impl<H: IommuHw> Iommu<H> {
    /// PASIDs for aux domains come from `[pasid_min, pasid_max]`.
    pub fn new(hw: H, pasid_min: u32, pasid_max: u32) -> Result<Self, IommuError<H::Error>> {
        let mut iommu = Iommu {
            hw,
            domains: BTreeMap::new(),
            devices: BTreeMap::new(),
            pasids: PasidAllocator::new(pasid_min, pasid_max)?,
            chosen: BTreeMap::new(),
            spaces: BTreeMap::new(),
            id: NEXT_CORE.fetch_add(1, core::sync::atomic::Ordering::Relaxed),
            next: 1,
            blocked: DomainId(0),
        };
        iommu.blocked = iommu.domain_alloc(DomainKind::Blocked)?;
        Ok(iommu)
    }

    /// This core's id, distinct from every other core's made before.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The domain every device starts in.
    pub fn default_domain(&self) -> DomainId {
        self.blocked
    }

    /// What the driver is told about domain `id` (its kind, table root
    /// and hardware tag).
    pub fn domain_ref(&self, id: DomainId) -> Result<DomainRef, IommuError<H::Error>> {
        self.dref(id)
    }

    fn dref(&self, id: DomainId) -> Result<DomainRef, IommuError<H::Error>> {
        let d = self.domains.get(&id).ok_or(IommuError::UnknownDomain(id))?;
        let (root, format) = match d.space {
            Some((_, root, format)) => (Some(PhysAddr(root)), format),
            None => (
                d.table.as_ref().map(|t| PhysAddr(t.root())),
                self.hw.format(),
            ),
        };
        Ok(DomainRef {
            id,
            kind: d.kind,
            root,
            format,
            tag: d.tag,
        })
    }

    /// Registers a device (its PASID capability's width, 0 for none) and
    /// puts it in the blocked domain.
    pub fn add_device(
        &mut self,
        dev: DeviceId,
        pasid_bits: u8,
    ) -> Result<(), IommuError<H::Error>> {
        if self.devices.contains_key(&dev) {
            return Err(IommuError::DeviceExists(dev));
        }
        let r = self.dref(self.blocked)?;
        self.hw.set_primary(dev, &r).map_err(IommuError::Hw)?;
        self.devices.insert(
            dev,
            Device {
                pasid_bits,
                primary: self.blocked,
                aux_enabled: false,
                sva: false,
                caps: DeviceCaps::default(),
                ats: false,
                pri: false,
                iopf: false,
                pasids: BTreeMap::new(),
            },
        );
        if let Some(d) = self.domains.get_mut(&self.blocked) {
            d.primary_of.push(dev);
        }
        Ok(())
    }

    pub fn domain_alloc(&mut self, kind: DomainKind) -> Result<DomainId, IommuError<H::Error>> {
        if kind == DomainKind::Sva {
            return Err(IommuError::SvaDomain {
                domain: DomainId(self.next),
            });
        }
        self.new_domain(kind, None)
    }

    /// A domain of `kind`; an SVA domain over `space`'s tables.
    fn new_domain(
        &mut self,
        kind: DomainKind,
        space: Option<(SpaceId, u64, TableFormat)>,
    ) -> Result<DomainId, IommuError<H::Error>> {
        let id = DomainId(self.next);
        let (table, tag) = if kind.paging() {
            let fmt = self.hw.format();
            let table = PageTable::new(fmt, self.hw.tables())?;
            match self.hw.alloc_tag() {
                Ok(tag) => {
                    self.hw.note(Note::TagLive(tag));
                    (Some(table), tag)
                }
                Err(e) => {
                    let mut g = Gather::default();
                    table.destroy(self.hw.tables(), &mut g);
                    g.release(self.hw.tables());
                    return Err(IommuError::Hw(e));
                }
            }
        } else if kind == DomainKind::Sva {
            let tag = self.hw.alloc_tag().map_err(IommuError::Hw)?;
            self.hw.note(Note::TagLive(tag));
            (None, tag)
        } else {
            (None, 0)
        };
        self.next += 1;
        self.domains.insert(
            id,
            Domain {
                kind,
                table,
                tag,
                pasid: None,
                primary_of: Vec::new(),
                pasid_of: Vec::new(),
                iova: (kind == DomainKind::Dma).then(|| {
                    let mut a = IovaAllocator::new(DMA_IOVA_BASE, DMA_IOVA_END);
                    if let Some(db) = self.hw.msi_doorbell() {
                        a.reserve(db.0 & !(PAGE_SIZE - 1), PAGE_SIZE);
                    }
                    a
                }),
                msi_mapped: false,
                direct: Vec::new(),
                space,
            },
        );
        Ok(id)
    }

    pub fn domain_kind(&self, id: DomainId) -> Result<DomainKind, IommuError<H::Error>> {
        Ok(self
            .domains
            .get(&id)
            .ok_or(IommuError::UnknownDomain(id))?
            .kind)
    }

    /// Frees a domain that nothing is attached to.
    pub fn domain_free(&mut self, id: DomainId) -> Result<(), IommuError<H::Error>> {
        let d = self.domains.get(&id).ok_or(IommuError::UnknownDomain(id))?;
        let attachments = d.primary_of.len() + d.pasid_of.len();
        if attachments > 0 || id == self.blocked {
            return Err(IommuError::DomainInUse {
                domain: id,
                attachments,
            });
        }
        let r = self.dref(id)?;
        let d = self
            .domains
            .remove(&id)
            .ok_or(IommuError::UnknownDomain(id))?;
        if let Some(table) = d.table {
            let mut g = Gather::default();
            table.destroy(self.hw.tables(), &mut g);
            // Nothing is attached, but the tag's entries may linger.
            let r = self.hw.invalidate(&r, &[], &g);
            g.release(self.hw.tables());
            self.hw.free_tag(d.tag);
            self.hw.note(Note::TagFree(d.tag));
            r.map_err(IommuError::Hw)?;
        } else if let Some((space, ..)) = d.space {
            self.spaces.remove(&space);
            self.hw.free_tag(d.tag);
            self.hw.note(Note::TagFree(d.tag));
        }
        Ok(())
    }

    pub fn map(
        &mut self,
        id: DomainId,
        iova: u64,
        pa: u64,
        size: u64,
        prot: Prot,
    ) -> Result<(), IommuError<H::Error>> {
        let mut g = Gather::default();
        let unattached = self.attachments(id).is_empty();
        let table = paging_table(&mut self.domains, id)?;
        // (A rollback's stores, in a domain attached nowhere, need no
        // invalidation; new entries never do.)
        self.hw.note(Note::Uncached(unattached));
        let mapped = table.map_gathered(self.hw.tables(), iova, pa, size, prot, &mut g);
        self.hw.note(Note::Uncached(false));
        if let Err(e) = mapped {
            // What the failed map took back is invalidated before its
            // tables go, as after an unmap.
            self.flush(id, &mut g)?;
            return Err(e.into());
        }
        let r = self.dref(id)?;
        let attached = self.attachments(id);
        self.hw
            .mapped(&r, &attached, iova, size)
            .map_err(IommuError::Hw)
    }

    /// Unmaps, invalidates every attachment's caches once, then frees the
    /// tables the unmap emptied.
    pub fn unmap(
        &mut self,
        id: DomainId,
        iova: u64,
        size: u64,
    ) -> Result<(), IommuError<H::Error>> {
        let mut g = Gather::default();
        let unattached = self.attachments(id).is_empty();
        let table = paging_table(&mut self.domains, id)?;
        self.hw.note(Note::Uncached(unattached));
        let r = table.unmap(self.hw.tables(), iova, size, &mut g);
        self.hw.note(Note::Uncached(false));
        r?;
        self.flush(id, &mut g)
    }

    /// Invalidates what `g` gathered for domain `id`, then releases its tables.
    fn flush(&mut self, id: DomainId, g: &mut Gather) -> Result<(), IommuError<H::Error>> {
        let r = self.dref(id)?;
        let attached = self.attachments(id);
        let res = self.hw.invalidate(&r, &attached, g);
        // Released only after the invalidation completed; on a hardware
        // error the tables are kept (leaked) rather than risk reuse.
        if res.is_ok() {
            g.release(self.hw.tables());
        }
        res.map_err(IommuError::Hw)
    }

    /// Every place `id` is attached.
    pub fn attachments(&self, id: DomainId) -> Vec<Attachment> {
        let Some(d) = self.domains.get(&id) else {
            return Vec::new();
        };
        let mut v: Vec<Attachment> = d.primary_of.iter().map(|&dev| (dev, None)).collect();
        v.extend(d.pasid_of.iter().map(|&(dev, p)| (dev, Some(p))));
        v
    }

    pub fn iova_to_phys(
        &mut self,
        id: DomainId,
        iova: u64,
    ) -> Result<Option<u64>, IommuError<H::Error>> {
        let table = paging_table(&mut self.domains, id)?;
        Ok(table.iova_to_phys(self.hw.tables(), iova))
    }

    /// DMA domains: maps `size` bytes at `pa` at an IOVA the core picks
    /// (aligned to the mapping's size, up to 2 MiB, so blocks can be used).
    pub fn dma_map(
        &mut self,
        id: DomainId,
        pa: u64,
        size: u64,
        prot: Prot,
    ) -> Result<u64, IommuError<H::Error>> {
        let d = self
            .domains
            .get_mut(&id)
            .ok_or(IommuError::UnknownDomain(id))?;
        let Some(alloc) = d.iova.as_mut() else {
            return Err(IommuError::WrongDomainType {
                domain: id,
                kind: d.kind,
            });
        };
        let align = size.next_power_of_two().clamp(4096, 2 << 20);
        let iova = alloc
            .alloc(size, align)
            .ok_or(IommuError::NoIova { size })?;
        if let Err(e) = self.map(id, iova, pa, size, prot) {
            if let Some(a) = self.domains.get_mut(&id).and_then(|d| d.iova.as_mut()) {
                a.free(iova, size);
            }
            return Err(e);
        }
        Ok(iova)
    }

    pub fn dma_unmap(
        &mut self,
        id: DomainId,
        iova: u64,
        size: u64,
    ) -> Result<(), IommuError<H::Error>> {
        let kind = self.domain_kind(id)?;
        if kind != DomainKind::Dma {
            return Err(IommuError::WrongDomainType { domain: id, kind });
        }
        self.unmap(id, iova, size)?;
        if let Some(a) = self.domains.get_mut(&id).and_then(|d| d.iova.as_mut()) {
            a.free(iova, size);
        }
        Ok(())
    }

    fn device(&self, dev: DeviceId) -> Result<&Device, IommuError<H::Error>> {
        self.devices.get(&dev).ok_or(IommuError::UnknownDevice(dev))
    }

    /// Makes `id` the primary domain of `dev` (atomic replace). Refused
    /// while aux domains are attached to `dev`.
    pub fn attach_device(
        &mut self,
        id: DomainId,
        dev: DeviceId,
    ) -> Result<(), IommuError<H::Error>> {
        let device = self.device(dev)?;
        if !device.pasids.is_empty() {
            return Err(IommuError::Busy {
                dev,
                aux_domains: device.pasids.len(),
            });
        }
        if self.domain_kind(id)? == DomainKind::Sva {
            return Err(IommuError::SvaDomain { domain: id });
        }
        let old = device.primary;
        if old == id {
            self.dref(id)?;
            return Ok(());
        }
        let r = self.dref(id)?;
        // MSIs must keep reaching the doorbell through the new domain.
        let doorbell = self.hw.msi_doorbell().map(|db| db.0 & !(PAGE_SIZE - 1));
        let map_doorbell = r.kind.paging()
            && doorbell.is_some()
            && self.domains.get(&id).is_some_and(|d| !d.msi_mapped);
        if let (true, Some(db)) = (map_doorbell, doorbell) {
            let device = Prot {
                read: true,
                write: true,
                exec: false,
                privileged: false,
                device: true,
            };
            self.map(id, db, db, PAGE_SIZE, device)?;
        }
        let direct = if r.kind.paging() {
            match self.map_direct_regions(id, dev) {
                Ok(mapped) => mapped,
                Err(e) => {
                    if let (true, Some(db)) = (map_doorbell, doorbell) {
                        let _ = self.unmap(id, db, PAGE_SIZE);
                    }
                    return Err(e);
                }
            }
        } else {
            Vec::new()
        };
        if let Err(e) = self.hw.set_primary(dev, &r) {
            if let (true, Some(db)) = (map_doorbell, doorbell) {
                let _ = self.unmap(id, db, PAGE_SIZE);
            }
            for &(base, size) in &direct {
                let _ = self.unmap(id, base, size);
            }
            if let Some(d) = self.domains.get_mut(&id) {
                d.direct.retain(|r| !direct.contains(r));
            }
            return Err(IommuError::Hw(e));
        }
        if let Some(d) = self.domains.get_mut(&id) {
            d.primary_of.push(dev);
            d.msi_mapped |= map_doorbell;
        }
        let old_unused = self.domains.get_mut(&old).is_some_and(|d| {
            d.primary_of.retain(|&x| x != dev);
            d.primary_of.is_empty() && d.msi_mapped
        });
        if let (true, Some(db)) = (old_unused, doorbell) {
            // Primary nowhere now: the doorbell goes from its tables (the
            // caller may have unmapped it already).
            match self.unmap(old, db, PAGE_SIZE) {
                Ok(()) | Err(IommuError::PageTable(PgError::NotMapped { .. })) => {}
                Err(e) => return Err(e),
            }
            if let Some(d) = self.domains.get_mut(&old) {
                d.msi_mapped = false;
            }
        }
        if let Some(device) = self.devices.get_mut(&dev) {
            device.primary = id;
        }
        Ok(())
    }

    /// Maps `dev`'s direct regions one to one in paging domain `id` (those
    /// not mapped there already), and keeps them out of its DMA IOVA
    /// space; returns what was mapped now. All or nothing.
    fn map_direct_regions(
        &mut self,
        id: DomainId,
        dev: DeviceId,
    ) -> Result<Vec<(u64, u64)>, IommuError<H::Error>> {
        let mut done: Vec<(u64, u64)> = Vec::new();
        for r in self.hw.direct_regions(dev) {
            let (base, size) = (r.start, r.size());
            let base_page = base & !(PAGE_SIZE - 1);
            let region = (
                base_page,
                (base + size).next_multiple_of(PAGE_SIZE) - base_page,
            );
            if self
                .domains
                .get(&id)
                .is_some_and(|d| d.direct.contains(&region))
            {
                continue;
            }
            if let Some(a) = self.domains.get_mut(&id).and_then(|d| d.iova.as_mut()) {
                a.reserve(region.0, region.1);
            }
            if let Err(e) = self.map(id, region.0, region.0, region.1, Prot::RW) {
                for &(b, s) in &done {
                    let _ = self.unmap(id, b, s);
                }
                if let Some(d) = self.domains.get_mut(&id) {
                    d.direct.retain(|r| !done.contains(r));
                }
                return Err(e);
            }
            if let Some(d) = self.domains.get_mut(&id) {
                d.direct.push(region);
            }
            done.push(region);
        }
        Ok(done)
    }

    /// Puts `dev` back in the blocked domain.
    pub fn detach_device(&mut self, dev: DeviceId) -> Result<(), IommuError<H::Error>> {
        self.attach_device(self.blocked, dev)
    }

    pub fn primary_domain(&self, dev: DeviceId) -> Result<DomainId, IommuError<H::Error>> {
        Ok(self.device(dev)?.primary)
    }

    /// Attaches paging domain `id` to `dev` at `pasid`, a PASID the caller
    /// chose: requests tagged with it use `id`. A domain already at that
    /// PASID is replaced by one driver update (never blocked in between).
    /// A PASID inside the allocator's range is refused while the allocator
    /// has handed it out (to an aux domain); otherwise it is taken from the
    /// allocator until the last device attached at it lets it go.
    pub fn attach_device_pasid(
        &mut self,
        id: DomainId,
        dev: DeviceId,
        pasid: Pasid,
    ) -> Result<(), IommuError<H::Error>> {
        self.check_pasid_attach(id, dev, pasid)?;
        let chosen = self.chosen.get(&pasid).copied().unwrap_or(0);
        let in_range = self.pasids.contains(pasid.0);
        if in_range && chosen == 0 && self.pasids.is_allocated(pasid.0) {
            return Err(IommuError::PasidOwned { pasid });
        }
        let old = self.device(dev)?.pasids.get(&pasid).copied();
        if old == Some(id) {
            return Ok(());
        }
        let claim = in_range && chosen == 0;
        if claim {
            self.pasids.claim(pasid.0)?;
        }
        if let Err(e) = self.set_pasid_domain(id, dev, pasid, old) {
            if claim {
                let _ = self.pasids.free(pasid.0);
            }
            return Err(e);
        }
        if old.is_none() {
            *self.chosen.entry(pasid).or_insert(0) += 1;
        }
        Ok(())
    }

    /// Puts `pasid` of `dev` back to blocked: its translation and every
    /// cached copy go, and requests with it fault. A caller-chosen PASID
    /// goes back to the allocator when no device is attached at it any
    /// more; an aux domain's when it was the domain's last attachment.
    pub fn detach_device_pasid(
        &mut self,
        dev: DeviceId,
        pasid: Pasid,
    ) -> Result<(), IommuError<H::Error>> {
        if let Some(id) = self.device(dev)?.pasids.get(&pasid) {
            if self.domain_kind(*id)? == DomainKind::Sva {
                return Err(IommuError::SvaDomain { domain: *id });
            }
        }
        self.clear_device_pasid(dev, pasid)
    }

    /// [`Self::detach_device_pasid`] for any domain, SVA ones included.
    fn clear_device_pasid(
        &mut self,
        dev: DeviceId,
        pasid: Pasid,
    ) -> Result<(), IommuError<H::Error>> {
        let id = self
            .device(dev)?
            .pasids
            .get(&pasid)
            .copied()
            .ok_or(IommuError::PasidNotAttached { dev, pasid })?;
        let r = self.dref(id)?;
        self.hw
            .clear_pasid(dev, pasid, &r)
            .map_err(IommuError::Hw)?;
        if let Some(device) = self.devices.get_mut(&dev) {
            device.pasids.remove(&pasid);
        }
        let mut aux_released = false;
        if let Some(d) = self.domains.get_mut(&id) {
            d.pasid_of.retain(|&a| a != (dev, pasid));
            if d.pasid == Some(pasid) && !d.pasid_of.iter().any(|&(_, p)| p == pasid) {
                d.pasid = None;
                aux_released = true;
            }
        }
        if aux_released {
            self.pasids.free(pasid.0)?;
        } else if let Some(n) = self.chosen.get_mut(&pasid) {
            *n -= 1;
            if *n == 0 {
                self.chosen.remove(&pasid);
                if self.pasids.contains(pasid.0) {
                    self.pasids.free(pasid.0)?;
                }
            }
        }
        Ok(())
    }

    /// The domain attached at `pasid` of `dev`; `None` when the PASID is
    /// blocked (the default).
    pub fn device_pasid_domain(
        &self,
        dev: DeviceId,
        pasid: Pasid,
    ) -> Result<Option<DomainId>, IommuError<H::Error>> {
        Ok(self.device(dev)?.pasids.get(&pasid).copied())
    }

    /// What every attach at a PASID checks first: a known device with
    /// PASIDs enabled, a paging domain, a PASID other than 0 that fits
    /// the device and the IOMMU.
    fn check_pasid_attach(
        &self,
        id: DomainId,
        dev: DeviceId,
        pasid: Pasid,
    ) -> Result<(), IommuError<H::Error>> {
        self.pasid_target(id, dev)?;
        self.check_pasid_width(dev, pasid)
    }

    /// A PASID other than 0 that fits the device and the IOMMU.
    fn check_pasid_width(&self, dev: DeviceId, pasid: Pasid) -> Result<(), IommuError<H::Error>> {
        let device = self.device(dev)?;
        if pasid.0 == 0 {
            return Err(IommuError::PasidZero { dev });
        }
        let (device_bits, iommu_bits) = (device.pasid_bits, self.hw.pasid_bits());
        let fits = |bits: u8| bits >= 32 || u64::from(pasid.0) < 1u64 << bits;
        if !fits(device_bits) || !fits(iommu_bits) || pasid.0 > PASID_MAX {
            return Err(IommuError::PasidTooWide {
                pasid,
                device_bits,
                iommu_bits,
            });
        }
        Ok(())
    }

    /// `dev` with PASIDs enabled and `id` a paging domain.
    fn pasid_target(
        &self,
        id: DomainId,
        dev: DeviceId,
    ) -> Result<(&Device, &Domain), IommuError<H::Error>> {
        let device = self.device(dev)?;
        if !device.aux_enabled {
            return Err(IommuError::AuxDisabled(dev));
        }
        let d = self.domains.get(&id).ok_or(IommuError::UnknownDomain(id))?;
        if d.kind == DomainKind::Sva {
            return Err(IommuError::SvaDomain { domain: id });
        }
        if !d.kind.paging() {
            return Err(IommuError::WrongDomainType {
                domain: id,
                kind: d.kind,
            });
        }
        Ok((device, d))
    }

    /// Points `pasid` of `dev` at `id` with one driver call, replacing
    /// `old` when there is one, and records it.
    fn set_pasid_domain(
        &mut self,
        id: DomainId,
        dev: DeviceId,
        pasid: Pasid,
        old: Option<DomainId>,
    ) -> Result<(), IommuError<H::Error>> {
        let r = self.dref(id)?;
        self.hw.set_pasid(dev, pasid, &r).map_err(IommuError::Hw)?;
        if let Some(o) = old.and_then(|o| self.domains.get_mut(&o)) {
            o.pasid_of.retain(|&a| a != (dev, pasid));
        }
        if let Some(d) = self.domains.get_mut(&id) {
            d.pasid_of.push((dev, pasid));
        }
        if let Some(device) = self.devices.get_mut(&dev) {
            device.pasids.insert(pasid, id);
        }
        Ok(())
    }

    /// Attaches `id` to `dev` through the domain's PASID (allocated at its
    /// first aux attachment, the same on every device) and returns it:
    /// allocate, then attach at that PASID.
    pub fn aux_attach_device(
        &mut self,
        id: DomainId,
        dev: DeviceId,
    ) -> Result<Pasid, IommuError<H::Error>> {
        self.pasid_target(id, dev)?;
        self.attach_own_pasid(id, dev)
    }

    /// Attaches `id` to `dev` at the domain's own PASID (an aux domain's,
    /// an SVA domain's), allocated at its first attachment.
    fn attach_own_pasid(
        &mut self,
        id: DomainId,
        dev: DeviceId,
    ) -> Result<Pasid, IommuError<H::Error>> {
        let d = self.domains.get(&id).ok_or(IommuError::UnknownDomain(id))?;
        if let Some(p) = d.pasid {
            if d.pasid_of.contains(&(dev, p)) {
                return Err(IommuError::AlreadyAttached { domain: id, dev });
            }
        }
        let (pasid, fresh) = match d.pasid {
            Some(p) => (p, false),
            None => (Pasid(self.pasids.alloc()?), true),
        };
        let result = self
            .check_pasid_width(dev, pasid)
            .and_then(|()| self.set_pasid_domain(id, dev, pasid, None));
        if let Err(e) = result {
            if fresh {
                let _ = self.pasids.free(pasid.0);
            }
            return Err(e);
        }
        if let Some(d) = self.domains.get_mut(&id) {
            d.pasid = Some(pasid);
        }
        Ok(pasid)
    }

    pub fn aux_get_pasid(
        &self,
        id: DomainId,
        dev: DeviceId,
    ) -> Result<Option<Pasid>, IommuError<H::Error>> {
        self.device(dev)?;
        let d = self.domains.get(&id).ok_or(IommuError::UnknownDomain(id))?;
        Ok(d.pasid.filter(|&p| d.pasid_of.contains(&(dev, p))))
    }

    /// Detaches `id` from `dev` (its aux PASID back to blocked); the PASID
    /// goes back to the allocator when this was the domain's last aux
    /// attachment.
    pub fn aux_detach_device(
        &mut self,
        id: DomainId,
        dev: DeviceId,
    ) -> Result<(), IommuError<H::Error>> {
        self.device(dev)?;
        let d = self.domains.get(&id).ok_or(IommuError::UnknownDomain(id))?;
        let Some(pasid) = d.pasid.filter(|&p| d.pasid_of.contains(&(dev, p))) else {
            return Err(IommuError::NotAttached { domain: id, dev });
        };
        self.detach_device_pasid(dev, pasid)
    }

    /// Moves the PASID range; only while no PASID is allocated.
    pub fn set_pasid_range(&mut self, min: u32, max: u32) -> Result<(), IommuError<H::Error>> {
        let used = self.pasids.used();
        if used > 0 {
            return Err(IommuError::Pasid(PasidError::InUse { allocated: used }));
        }
        // The allocator must not hand out a PASID attached by choice.
        if let Some(&p) = self.chosen.keys().find(|p| (min..=max).contains(&p.0)) {
            return Err(IommuError::PasidOwned { pasid: p });
        }
        self.pasids = PasidAllocator::new(min, max)?;
        Ok(())
    }

    pub fn pasid_range(&self) -> (u32, u32) {
        self.pasids.range()
    }

    /// The PASID width of `dev`'s capability, as registered.
    pub fn device_pasid_bits(&self, dev: DeviceId) -> Result<u8, IommuError<H::Error>> {
        Ok(self.device(dev)?.pasid_bits)
    }

    /// The largest PASID `dev` can be aux-attached with: the smaller of
    /// its width and the IOMMU's, within the allocator's range; `None`
    /// when no PASID of the range fits.
    pub fn pasid_limit(&self, dev: DeviceId) -> Result<Option<u32>, IommuError<H::Error>> {
        let bits = self
            .device_pasid_bits(dev)?
            .min(self.hw.pasid_bits())
            .min(31);
        let (min, max) = self.pasids.range();
        let top = max.min((1u32 << bits).saturating_sub(1));
        Ok((top >= min).then_some(top))
    }

    /// PASIDs in use (for leak checks).
    pub fn pasids_in_use(&self) -> u32 {
        self.pasids.used()
    }

    /// Page-table pages in use by paging domains.
    pub fn table_pages(&self) -> usize {
        self.domains
            .values()
            .filter_map(|d| d.table.as_ref())
            .map(|t| t.tables())
            .sum()
    }
}
