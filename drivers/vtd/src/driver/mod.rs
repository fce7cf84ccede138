//! The VT-d driver in scalable mode (issue 8): the core's `IommuHw` for
//! one remapping unit, generic over the kernel's HAL.
//!
//! - Root table (scalable: two context tables per bus), 256-bit context
//!   entries with a PASID directory each, PASID tables of 64 entries
//!   allocated as PASIDs appear. The directory starts at one page (2^15
//!   PASIDs) and grows to the device's width when a larger PASID comes.
//!   ([`tables`], memory only.)
//! - Requests without PASID use RID_PASID 0: the primary domain is PASID
//!   entry 0 (first or second level; pass-through for identity). A
//!   blocked primary is a present entry over an empty table, so its
//!   faults carry addresses, and PASID-tagged requests still work (QEMU
//!   refuses a context entry whose RID_PASID entry is not present).
//!   Aux domains are the other PASID entries, with the domain's DID.
//! - The invalidation queue with 256-bit descriptors; every batch ends in
//!   one invalidation wait whose status write is polled (bounded). A
//!   descriptor the unit refuses (IQE) is reported, replaced and skipped.
//!   ([`queue`] holds the memory and which descriptors a change needs.)
//! - Faults are read from the fault recording registers, cleared, and
//!   turned into the core's faults; overflow (PFO) is counted.
//!   ([`faults`] turns records into faults.)
//! - Devices with ATS on (DTE, and PRE for page requests, in their
//!   context entry) get device-TLB invalidations after every IOTLB
//!   invalidation that covers them; the page request queue is taken from
//!   PQH to PQT and page groups are answered ([`prq`]).
//!
//! Every structure the unit reads is a region of the HAL's, allocated
//! non-coherent when the unit does not snoop (ECAP.C = 0).
mod error;
mod faults;
mod mmio;
mod prq;
mod queue;
mod tables;
#[cfg(test)]
mod tests;

pub use error::{Missing, VtdError};
pub use mmio::UnitRegs;
pub use queue::Refused;
pub use tables::Ats;

use crate::caps::{Caps, Ecaps};
use crate::entries::{PasidEntry, Translation};
use crate::fault::FaultRecord;
use crate::probe::Unit;
use crate::qi::{AtsRange, Descriptor};
use crate::regs::{
    fault_event_address, iqa_one_page_256, rtaddr_scalable, FECTL, FSTS, GCMD, GSTS, IQH, IQT,
    PECTL, PQA, PQH, PQT, PRS,
};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::ops::{Deref, DerefMut};
use kernel::addr::PhysRange;
use kernel::hal::{Coherency, Hal, HalTables};
use kernel::iommu::check::{Cache, Note};
use kernel::iommu::domain::{
    Attachment, DevTlb, DeviceId, DomainKind, DomainRef, Fault, IommuHw, Pasid, TableFormat,
};
use kernel::iommu::iopf::{PageRequest, PageResponse, PrqPass};
use kernel::iommu::pgtable::x86::{VtdSecondLevel, X86FirstLevel};
use kernel::iommu::pgtable::{Gather, TableMemory};
use prq::PageRequestQueue;
use queue::{page_chunks, unmap_descriptors, Queue, IQ_ENTRIES, MAX_PAGE_DESCRIPTORS};
use tables::{Invalidate, Primary, Tables};
use tock_registers::fields::FieldValue;
use tock_registers::LocalRegisterCopy;

/// How long a wait for the unit may take (GSTS after GCMD, an
/// invalidation wait), by the HAL's clock...
const WAIT_NS: u64 = 1_000_000_000;
/// ...and in polls, should the clock not run yet.
const MAX_POLLS: u32 = 10_000_000;
/// The DID of pass-through PASID entries (identity domains and devices
/// the core does not manage).
const PASS_THROUGH_DID: u16 = 1;
/// The DID of blocking entries (an empty table: nothing is ever cached).
const BLOCKED_DID: u16 = 2;

/// Memory the unit may be reading: dropped with the driver, or leaked
/// when the unit does not turn off (only `Drop` leaks, so the value is
/// always there before).
struct Held<T>(Option<T>);

impl<T> Held<T> {
    fn leak(this: &mut Self) {
        core::mem::forget(this.0.take());
    }
}

impl<T> Deref for Held<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.0.as_ref().expect("leaked only on drop")
    }
}

impl<T> DerefMut for Held<T> {
    fn deref_mut(&mut self) -> &mut T {
        self.0.as_mut().expect("leaked only on drop")
    }
}

/// A bounded wait: [`WAIT_NS`] by the HAL's clock, at most [`MAX_POLLS`].
struct Deadline {
    end: u64,
    polls: u32,
}

impl Deadline {
    fn new(hal: &impl Hal) -> Self {
        Deadline {
            end: hal.now_ns().saturating_add(WAIT_NS),
            polls: 0,
        }
    }

    fn passed(&mut self, hal: &impl Hal) -> bool {
        self.polls += 1;
        self.polls > MAX_POLLS || hal.now_ns() > self.end
    }
}

/// The invalidation queue at work: descriptors into the ring, the tail
/// to IQT, the wait's status polled, refusals handled.
struct Qi<'a, H: Hal, R: UnitRegs> {
    regs: &'a R,
    hal: &'a H,
    queue: &'a mut Queue<H>,
    base: u64,
    /// Leave device-TLB invalidations out (a test of the stale device TLB).
    suppress_dev_tlb: bool,
}

impl<H: Hal, R: UnitRegs> Qi<'_, H, R> {
    /// Queues `entries` and one invalidation wait, and waits (bounded)
    /// for the wait's status write. A descriptor the unit refuses is
    /// replaced by a harmless one and the queue goes on; the refused ones
    /// are returned.
    fn run(&mut self, entries: &[[u64; 4]]) -> Result<Vec<Refused>, VtdError> {
        self.run_with(entries, false)
    }

    /// As [`Qi::run`], the wait draining page requests too with `drain`.
    fn run_with(&mut self, entries: &[[u64; 4]], drain: bool) -> Result<Vec<Refused>, VtdError> {
        let seq = self.queue.stage(entries, drain)?;
        let tail = IQT::QT.val(u64::from(self.queue.tail()));
        // The descriptors are in memory before the unit is told.
        self.hal.barrier();
        self.regs.write_iqt(tail);
        let mut refused = Vec::new();
        let mut deadline = Deadline::new(self.hal);
        while !self.queue.done(seq)? {
            let fsts = self.regs.fsts();
            if fsts.is_set(FSTS::IQE) {
                // IQH names the refused descriptor: report it, put an
                // invalidation wait that writes to a scratch word in its
                // place, acknowledge, and restart the queue.
                let r = self
                    .queue
                    .replace_refused(self.regs.iqh().read(IQH::QH) as u32)?;
                log::warn!(
                    "VT-d refused descriptor {} {:x?} (IQE)",
                    r.index,
                    r.descriptor
                );
                refused.push(r);
                self.hal.barrier();
                self.regs.write_fsts(FSTS::IQE::SET);
                self.regs.write_iqt(tail);
                // No `continue`: an IQE that re-asserts still meets the
                // deadline below.
            }
            let errors = FSTS::ICE::SET + FSTS::ITE::SET;
            if fsts.any_matching_bits_set(errors) {
                log::warn!(
                    "VT-d invalidation error: FSTS {:#x} (device-TLB completion or timeout)",
                    fsts.get()
                );
                // Write-1-to-clear: clearing a bit that is not set does nothing.
                self.regs.write_fsts(errors);
            }
            if deadline.passed(self.hal) {
                return Err(VtdError::InvalidationTimeout {
                    base: self.base,
                    seq,
                    iqh: self.regs.iqh().get(),
                    iqt: self.regs.iqt().get(),
                    fsts: fsts.get(),
                });
            }
            core::hint::spin_loop();
        }
        Ok(refused)
    }
}

impl<H: Hal, R: UnitRegs> Invalidate for Qi<'_, H, R> {
    /// One batch; a refused descriptor is an error (what it invalidates
    /// may still be cached), after the batch completed.
    fn invalidate(&mut self, descs: &[Descriptor]) -> Result<(), VtdError> {
        let suppressed = |d: &&Descriptor| {
            self.suppress_dev_tlb
                && matches!(
                    d,
                    Descriptor::DeviceTlb { .. } | Descriptor::PasidDeviceTlb { .. }
                )
        };
        let entries: Vec<[u64; 4]> = descs
            .iter()
            .filter(|d| !suppressed(d))
            .map(Descriptor::encode)
            .collect();
        note_issued(self.hal, descs);
        match self.run(&entries)?.first() {
            Some(&Refused { index, descriptor }) => Err(VtdError::Refused { index, descriptor }),
            None => {
                self.hal.note(Note::Complete);
                Ok(())
            }
        }
    }
}

/// Tells the checking mode which caches a batch invalidates.
fn note_issued(hal: &impl Hal, descs: &[Descriptor]) {
    for c in descs.iter().filter_map(invalidates) {
        hal.note(Note::Invalidate(c));
    }
}

/// The cache a descriptor drops copies from, for the checking mode.
fn invalidates(d: &Descriptor) -> Option<Cache> {
    match d {
        Descriptor::ContextGlobal
        | Descriptor::ContextDomain { .. }
        | Descriptor::ContextDevice { .. }
        | Descriptor::PasidCacheDomain { .. }
        | Descriptor::PasidCachePasid { .. } => Some(Cache::Config),
        Descriptor::IotlbGlobal
        | Descriptor::IotlbDomain { .. }
        | Descriptor::IotlbPages { .. }
        | Descriptor::PasidIotlbAll { .. }
        | Descriptor::PasidIotlbPages { .. } => Some(Cache::Tlb),
        _ => None,
    }
}

/// The source id of a device id.
fn sid_of(dev: DeviceId) -> Result<u16, VtdError> {
    u16::try_from(dev.0).map_err(|_| VtdError::DeviceIdTooWide { dev: dev.0 })
}

/// How the unit reads memory, as Linux decides it in scalable mode: the
/// root, context and PASID tables and the queue by ECAP.C; page tables by
/// ECAP.SMPWC (their walks snoop when the PASID entry sets PWSNP, which
/// `paging_entry` does exactly then). Non-coherent memory is flushed.
pub fn walk_coherency(ecaps: &Ecaps) -> (Coherency, Coherency) {
    let of = |snoops: bool| {
        if snoops {
            Coherency::Coherent
        } else {
            Coherency::NonCoherent
        }
    };
    (of(ecaps.coherent), of(ecaps.page_walk_coherency))
}

/// Table levels for the unit's address width: 4 (48 bits) where SAGAW and
/// MGAW allow them, else 3 (39 bits). Second-level tables use this depth,
/// and pass-through entries check addresses against its width.
pub fn table_levels(sagaw: u8, mgaw: u8) -> u8 {
    if sagaw & 0b100 != 0 && mgaw >= 48 {
        4
    } else {
        3
    }
}

fn pass_through_entry(levels: u8) -> PasidEntry {
    PasidEntry {
        did: PASS_THROUGH_DID,
        translation: Translation::PassThrough { levels },
        page_walk_snoop: false,
    }
}

/// GSTS's persistent status bits, which mirror GCMD's persistent command
/// bits (VT-d 11.4.4.1: GCMD is write-only, so each command is composed
/// from these with one bit changed; the one-shot bits SRTP, SFL, WBF and
/// SIRTP are left out, or a command would repeat them).
fn persistent_commands(gsts: LocalRegisterCopy<u32, GSTS::Register>) -> u32 {
    let kept =
        GSTS::TES::SET + GSTS::AFLS::SET + GSTS::QIES::SET + GSTS::IRES::SET + GSTS::CFIS::SET;
    gsts.get() & kept.value
}

pub struct VtdHw<H: Hal, R: UnitRegs = Unit> {
    unit: R,
    base: u64,
    hal: H,
    caps: Caps,
    ecaps: Ecaps,
    format: TableFormat,
    /// GCMD's persistent bits as last written, seeded from GSTS so that
    /// what firmware enabled (interrupt remapping, its format) stays on.
    gcmd: LocalRegisterCopy<u32, GCMD::Register>,
    tables: Held<Tables<H>>,
    queue: Held<Queue<H>>,
    /// The page tables of the core's domains.
    pages: Held<HalTables<H>>,
    next_did: u16,
    /// Primary fault overflows (FSTS.PFO) seen.
    fault_overflows: u32,
    /// Faults read from the recording registers, not yet taken.
    pending: Vec<FaultRecord>,
    /// Leave fault records in the registers after each DMA (a test of
    /// their overflow).
    #[cfg(feature = "test-hooks")]
    pub defer_fault_collection: bool,
    /// Send no device-TLB invalidation (a test that the device then uses
    /// its stale translations).
    #[cfg(any(test, feature = "test-hooks"))]
    pub suppress_dev_tlb_invalidation: bool,
    /// Take page requests without moving PQH past them (a test that fills
    /// the page request queue until it overflows).
    #[cfg(any(test, feature = "test-hooks"))]
    pub hold_page_request_head: bool,
    /// The page request queue, once enabled.
    prq: Option<PageRequestQueue<H>>,
    /// Reserved memory regions (RMRRs) each device must keep reaching.
    rmrrs: BTreeMap<u16, Vec<(u64, u64)>>,
}

impl<H: Hal, R: UnitRegs> VtdHw<H, R> {
    /// Takes over the unit at `base` (translation must be off): the
    /// invalidation queue in 256-bit mode (a queue firmware left on is
    /// drained and turned off first), the root table, then the caches
    /// SRTP leaves stale invalidated, globally: context cache, PASID
    /// cache, IOTLB (as Linux's `iommu_set_root_entry` does). Persistent
    /// GCMD bits firmware set (IRE, CFI) stay set. Translation stays off
    /// until [`VtdHw::enable`]. Units without scalable mode, PASIDs or
    /// queued invalidation are refused.
    pub fn new(hal: H, unit: R, base: u64) -> Result<Self, VtdError> {
        let (caps, ecaps) = (Caps::decode(unit.cap()), Ecaps::decode(unit.ecap()));
        let missing = Missing {
            scalable_mode: !ecaps.scalable_mode,
            pasid: !ecaps.pasid,
            queued_invalidation: !ecaps.queued_invalidation,
            translation_level: !(ecaps.first_level || ecaps.second_level),
        };
        if missing.any() {
            return Err(VtdError::Unsupported { base, missing });
        }
        let gsts = unit.gsts();
        if gsts.is_set(GSTS::TES) {
            return Err(VtdError::AlreadyTranslating { base });
        }
        let gcmd = LocalRegisterCopy::new(persistent_commands(gsts));
        let format = if ecaps.first_level {
            TableFormat::X86FirstLevel(X86FirstLevel {
                gib_pages: caps.first_level_1g,
            })
        } else {
            TableFormat::VtdSecondLevel(VtdSecondLevel {
                levels: usize::from(table_levels(caps.sagaw, caps.mgaw)),
                mib2_pages: caps.second_level_large_pages & 1 != 0,
                gib_pages: caps.second_level_large_pages & 2 != 0,
            })
        };
        let (coherency, page_coherency) = walk_coherency(&ecaps);
        for (cache, coherency) in [
            (Cache::Config, coherency),
            (Cache::None, coherency),
            (Cache::Tlb, page_coherency),
        ] {
            hal.note(Note::Walks { cache, coherency });
        }
        // The fixed domain ids, which `alloc_did` never hands out.
        hal.note(Note::TagLive(u32::from(PASS_THROUGH_DID)));
        hal.note(Note::TagLive(u32::from(BLOCKED_DID)));
        let second_level = matches!(format, TableFormat::VtdSecondLevel(_));
        let tables = Tables::new(hal.clone(), coherency, second_level, ecaps.pasid_bits)?;
        let queue = Queue::new(&hal, coherency)?;
        let pages = HalTables::new(hal.clone(), page_coherency);
        let mut hw = VtdHw {
            unit,
            base,
            hal,
            caps,
            ecaps,
            format,
            gcmd,
            tables: Held(Some(tables)),
            queue: Held(Some(queue)),
            pages: Held(Some(pages)),
            next_did: BLOCKED_DID,
            fault_overflows: 0,
            pending: Vec::new(),
            #[cfg(feature = "test-hooks")]
            defer_fault_collection: false,
            #[cfg(any(test, feature = "test-hooks"))]
            suppress_dev_tlb_invalidation: false,
            #[cfg(any(test, feature = "test-hooks"))]
            hold_page_request_head: false,
            prq: None,
            rmrrs: BTreeMap::new(),
        };
        if hw.gcmd.is_set(GCMD::QIE) {
            hw.drain_firmware_queue();
            hw.set(GCMD::QIE, GSTS::QIES, false)?;
        }
        // The queue registers are written only while QI is off.
        hw.unit.write_iqt(IQT::QT.val(0));
        hw.unit.write_iqa(iqa_one_page_256(hw.queue.base()));
        hw.set(GCMD::QIE, GSTS::QIES, true)?;
        hw.unit.write_rtaddr(rtaddr_scalable(hw.tables.root()));
        hw.command(GCMD::SRTP::SET, |g| g.is_set(GSTS::RTPS))?;
        hw.submit(&[
            Descriptor::ContextGlobal,
            Descriptor::PasidCacheAll,
            Descriptor::IotlbGlobal,
        ])?;
        // Faults left from before are not ours.
        hw.clear_faults();
        // The tests build a driver per case: say it in full once.
        static REPORTED: core::sync::atomic::AtomicBool =
            core::sync::atomic::AtomicBool::new(false);
        let level = kernel::info_once(&REPORTED);
        log::log!(
            level,
            "VT-d at {base:#x}: scalable mode; domains on {} ({}); PASIDs {} bits; {} domain ids; \
             QI with 256-bit descriptors, {} entries; page-selective invalidation up to 2^{} pages; \
             pass-through {}; {} fault record(s); device-TLB {}, page requests {} (when asked for), \
             nested {} (unused); \
             {}coherent, page walks {}snooped (SMPWC); caching mode {}, write-buffer flush {}; \
             firmware left GCMD {:#x}",
            if ecaps.first_level { "first level" } else { "second level" },
            kernel::iommu::pgtable::Format::name(&format),
            ecaps.pasid_bits,
            caps.domains,
            IQ_ENTRIES,
            caps.max_address_mask,
            ecaps.pass_through,
            caps.fault_records,
            ecaps.device_tlb,
            ecaps.page_requests,
            ecaps.nested,
            if ecaps.coherent { "" } else { "not " },
            if ecaps.page_walk_coherency { "" } else { "not " },
            caps.caching_mode,
            caps.required_write_buffer_flush,
            gcmd.get()
        );
        Ok(hw)
    }

    pub fn caps(&self) -> &Caps {
        &self.caps
    }

    /// The HAL the driver was handed (the checking mode's, on a checked run).
    pub fn hal(&self) -> &H {
        &self.hal
    }

    pub fn ecaps(&self) -> &Ecaps {
        &self.ecaps
    }

    /// The tables and the invalidation queue they send their
    /// invalidations to, borrowed apart.
    fn split(&mut self) -> (&mut Tables<H>, Qi<'_, H, R>) {
        #[cfg(any(test, feature = "test-hooks"))]
        let suppress_dev_tlb = self.suppress_dev_tlb_invalidation;
        #[cfg(not(any(test, feature = "test-hooks")))]
        let suppress_dev_tlb = false;
        (
            &mut self.tables,
            Qi {
                regs: &self.unit,
                hal: &self.hal,
                queue: &mut self.queue,
                base: self.base,
                suppress_dev_tlb,
            },
        )
    }

    fn holding_page_request_head(&self) -> bool {
        #[cfg(any(test, feature = "test-hooks"))]
        return self.hold_page_request_head;
        #[cfg(not(any(test, feature = "test-hooks")))]
        false
    }

    /// Writes GCMD: the persistent bits plus `extra` (a one-shot command,
    /// SRTP or WBF, never kept in the shadow), and waits (bounded) until
    /// GSTS says `done`.
    fn command(
        &mut self,
        extra: FieldValue<u32, GCMD::Register>,
        done: impl Fn(LocalRegisterCopy<u32, GSTS::Register>) -> bool,
    ) -> Result<(), VtdError> {
        let mut cmd = self.gcmd;
        cmd.modify(extra);
        // What the unit is told about is in memory first.
        self.hal.barrier();
        self.unit.write_gcmd(cmd);
        let mut deadline = Deadline::new(&self.hal);
        loop {
            let gsts = self.unit.gsts();
            if done(gsts) {
                return Ok(());
            }
            if deadline.passed(&self.hal) {
                return Err(VtdError::CommandTimeout {
                    base: self.base,
                    gcmd: cmd.get(),
                    gsts: gsts.get(),
                });
            }
            core::hint::spin_loop();
        }
    }

    /// Turns the persistent command `bit` on or off, the others as they
    /// are, and waits for its status bit.
    fn set(
        &mut self,
        bit: tock_registers::fields::Field<u32, GCMD::Register>,
        status: tock_registers::fields::Field<u32, GSTS::Register>,
        on: bool,
    ) -> Result<(), VtdError> {
        self.gcmd.modify(bit.val(u32::from(on)));
        self.command(FieldValue::<u32, GCMD::Register>::new(0, 0, 0), |g| {
            g.is_set(status) == on
        })
    }

    /// A queue firmware left enabled is let run dry (IQH reaching IQT,
    /// bounded) before it is turned off, as Linux's `dmar_disable_qi`.
    fn drain_firmware_queue(&mut self) {
        let mut deadline = Deadline::new(&self.hal);
        while self.unit.iqh().read(IQH::QH) != self.unit.iqt().read(IQT::QT) {
            if deadline.passed(&self.hal) {
                log::warn!(
                    "VT-d at {:#x}: firmware's invalidation queue does not drain (IQH {:#x}, IQT {:#x}); turning it off anyway",
                    self.base,
                    self.unit.iqh().get(),
                    self.unit.iqt().get()
                );
                return;
            }
            core::hint::spin_loop();
        }
    }

    /// Flushes the unit's write buffer where CAP.RWBF asks software to
    /// (after making entries present without an invalidation), and waits
    /// (bounded) until GSTS.WBFS clears.
    fn flush_write_buffer(&mut self) -> Result<(), VtdError> {
        if !self.caps.required_write_buffer_flush {
            return Ok(());
        }
        self.command(GCMD::WBF::SET, |g| !g.is_set(GSTS::WBFS))
    }

    /// DMA remapping on.
    pub fn enable(&mut self) -> Result<(), VtdError> {
        self.set(GCMD::TE, GSTS::TES, true)
    }

    /// DMA remapping off, then queued invalidation off; fault events
    /// masked. What firmware enabled besides (interrupt remapping) stays.
    pub fn disable(&mut self) -> Result<(), VtdError> {
        self.disable_fault_interrupt();
        if self.prq.is_some() {
            self.disable_page_request_interrupt();
        }
        self.set(GCMD::TE, GSTS::TES, false)?;
        // PQA must not name the queue once it is freed.
        self.disable_page_requests();
        self.set(GCMD::QIE, GSTS::QIES, false)
    }

    /// Queues `descs` and one invalidation wait, and waits (bounded) for
    /// the wait's status write. A descriptor the unit refuses is
    /// replaced by a harmless one, the queue goes on, and the first
    /// refused one is the error.
    pub fn submit(&mut self, descs: &[Descriptor]) -> Result<(), VtdError> {
        self.split().1.invalidate(descs)
    }

    /// As [`VtdHw::submit`] for entries already encoded (a test's bad
    /// descriptor among them); returns what the unit refused.
    #[cfg(feature = "test-hooks")]
    pub fn submit_encoded(&mut self, entries: &[[u64; 4]]) -> Result<Vec<Refused>, VtdError> {
        self.split().1.run(entries)
    }

    /// Descriptors queued, since creation (waits included).
    pub fn descriptors(&self) -> u64 {
        self.queue.descriptors()
    }

    /// Invalidation waits, since creation.
    pub fn waits(&self) -> u64 {
        self.queue.waits()
    }

    /// Primary fault overflows (FSTS.PFO) seen.
    pub fn fault_overflows(&self) -> u32 {
        self.fault_overflows
    }

    /// Drops what the unit caches of PASID `pasid` under `did`: its PASID
    /// cache entry and its IOTLB entries (of the whole DID on second
    /// level, where PASID-based invalidation does not reach).
    pub fn flush_pasid(&mut self, did: u16, pasid: u32) -> Result<(), VtdError> {
        let (t, mut qi) = self.split();
        t.flush_pasid(&mut qi, did, pasid)
    }

    /// The PASID entry of a paging domain in the unit's translation level.
    pub fn paging_entry(&self, did: u16, root: u64) -> PasidEntry {
        PasidEntry {
            did,
            translation: match self.format {
                TableFormat::VtdSecondLevel(f) => Translation::SecondLevel {
                    root,
                    levels: f.levels as u8,
                },
                _ => Translation::FirstLevel {
                    root,
                    privileged: false,
                },
            },
            // Snooped walks where the unit offers them (ECAP.SMPWC): its
            // page tables then need no flushes (`walk_coherency`).
            page_walk_snoop: self.ecaps.page_walk_coherency,
        }
    }

    /// A device the core does not manage keeps working untranslated: its
    /// RID_PASID entry is pass-through.
    pub fn pass_through(&mut self, dev: DeviceId) -> Result<(), VtdError> {
        if !self.ecaps.pass_through {
            return Err(VtdError::NoPassThrough {
                what: "devices the core does not manage",
            });
        }
        let sid = sid_of(dev)?;
        let entry = pass_through_entry(table_levels(self.caps.sagaw, self.caps.mgaw));
        let (t, mut qi) = self.split();
        t.device(&mut qi, sid, 0)?;
        t.set_entry(&mut qi, sid, 0, Some(entry))?;
        t.set_primary_kind(sid, Primary::Identity)
    }

    /// The device's context entry goes, and its PASID structures are
    /// freed (a test's teardown).
    pub fn release_device(&mut self, dev: DeviceId) -> Result<(), VtdError> {
        let sid = sid_of(dev)?;
        let (t, mut qi) = self.split();
        t.release(&mut qi, sid)
    }

    /// The RMRRs the DMAR names for `sid` (`(base, size)`): the core maps
    /// them one to one in its primary domains.
    pub fn set_rmrrs(&mut self, sid: u16, regions: Vec<(u64, u64)>) {
        if regions.is_empty() {
            self.rmrrs.remove(&sid);
        } else {
            self.rmrrs.insert(sid, regions);
        }
    }

    /// Entries of `sid`'s PASID directory and PASID tables allocated.
    pub fn pasid_directory(&self, sid: u16) -> Option<(u32, usize)> {
        self.tables.pasid_directory(sid)
    }

    /// Page-table pages held by the core's domains.
    pub fn tables_live(&self) -> u64 {
        self.pages.live()
    }

    /// Bytes of PASID directories and tables held now.
    pub fn pasid_table_bytes(&self) -> u64 {
        self.tables.pasid_table_bytes()
    }

    /// Where PASID entry `pasid` of `sid` lives, if its table exists (for
    /// tests that edit entries behind the driver's back).
    #[cfg(feature = "test-hooks")]
    pub fn pasid_entry_address(&self, sid: u16, pasid: u32) -> Option<u64> {
        self.tables.entry_address(sid, pasid)
    }

    /// Writes `words` at `pa`, inside a PASID table this driver owns, with
    /// no invalidation: how a test changes a live entry.
    #[cfg(feature = "test-hooks")]
    pub fn poke(&mut self, pa: u64, words: &[u64]) -> Result<(), VtdError> {
        self.tables.poke(pa, words)
    }

    /// Fault events by MSI: the fault event registers get the MSI's
    /// address and data, and the interrupt is unmasked.
    pub fn enable_fault_interrupt(&mut self, address: u64, data: u32) {
        let (lo, hi) = fault_event_address(address);
        self.unit.set_fault_event(data, lo, hi);
        self.unit.write_fectl(FECTL::IM::CLEAR);
    }

    pub fn disable_fault_interrupt(&mut self) {
        self.unit.write_fectl(FECTL::IM::SET);
    }

    /// Reads every fault recording register that holds a fault, clears
    /// it, and keeps the records until [`VtdHw::take_faults`]. A primary
    /// fault overflow is counted and cleared.
    pub fn collect_faults(&mut self) {
        for reg in self.unit.fault_records() {
            if let Some(record) = faults::take_record(reg) {
                self.pending.push(record);
            }
        }
        if self.unit.fsts().is_set(FSTS::PFO) {
            self.fault_overflows += 1;
            log::warn!(
                "VT-d at {:#x}: primary fault overflow: faults were lost",
                self.base
            );
            self.unit.write_fsts(FSTS::PFO::SET);
        }
    }

    fn clear_faults(&mut self) {
        self.collect_faults();
        self.pending.clear();
    }

    /// Fault records read so far, as they are (for tests of the fields).
    pub fn take_records(&mut self) -> Vec<FaultRecord> {
        self.collect_faults();
        core::mem::take(&mut self.pending)
    }

    /// Faults since the last call, as the core's faults.
    pub fn take_faults(&mut self) -> Vec<Fault> {
        let records = self.take_records();
        records
            .iter()
            .filter_map(|r| faults::to_fault(r, self.tables.primary(r.source_id)))
            .collect()
    }

    /// Turns the device TLB on (`Some`) or off for `dev`: DTE, and PRE
    /// with page requests, in its context entry, with the context-cache
    /// invalidation that needs (`Tables::set_ats`). From then on every
    /// invalidation of what the device reaches is followed by a device-TLB
    /// invalidation, before the wait. The device's own ATS (and PRI)
    /// capability is the caller's to enable after this, and to disable
    /// before turning it off here. Refused without ECAP.DT (and ECAP.PRS
    /// for page requests).
    pub fn set_device_ats(&mut self, dev: DeviceId, ats: Option<Ats>) -> Result<(), VtdError> {
        if let Some(a) = ats {
            if !self.ecaps.device_tlb {
                return Err(VtdError::Lacks {
                    base: self.base,
                    what: "device TLB (ECAP.DT)",
                });
            }
            if a.page_requests && !self.ecaps.page_requests {
                return Err(VtdError::Lacks {
                    base: self.base,
                    what: "page requests (ECAP.PRS)",
                });
            }
        }
        let sid = sid_of(dev)?;
        if ats.is_none() && !self.tables.contains(sid) {
            // Never programmed: nothing to turn off, no entry to make.
            return Ok(());
        }
        // The physical function's source id only where the unit reads it;
        // the functions we drive are their own PFs.
        let ats = ats.map(|a| Ats {
            pfsid: self.ecaps.device_tlb_throttle.then_some(sid),
            ..a
        });
        let bits = self
            .tables
            .pasid_bits_of(sid)
            .unwrap_or(self.ecaps.pasid_bits);
        let (t, mut qi) = self.split();
        t.device(&mut qi, sid, bits)?;
        t.set_ats(&mut qi, sid, ats)
    }

    /// The device's ATS state, if it is on.
    pub fn device_ats(&self, dev: DeviceId) -> Option<Ats> {
        u16::try_from(dev.0)
            .ok()
            .and_then(|sid| self.tables.ats(sid))
    }

    /// The device-TLB invalidations for an unmap of `ranges` in a domain
    /// attached at `attached`: one per range chunk (the ATS size encoding
    /// takes aligned powers of two) for each attachment whose device has
    /// ATS on, without PASID for primaries (type 3), with it for the
    /// others (type 8); past [`MAX_PAGE_DESCRIPTORS`], or with no ranges,
    /// everything of that attachment.
    fn dev_tlb_descriptors(
        &self,
        attached: &[Attachment],
        ranges: &[(u64, u64)],
    ) -> Vec<Descriptor> {
        let mut seen: Vec<Attachment> = attached.to_vec();
        seen.sort_unstable_by_key(|&(d, p)| (d.0, p.map(|p| p.0)));
        seen.dedup();
        let mut descs = Vec::new();
        for (dev, pasid) in seen {
            let Ok(sid) = u16::try_from(dev.0) else {
                continue;
            };
            let Some(ats) = self.tables.ats(sid) else {
                continue;
            };
            let which = pasid.map(|p| Some(p.0));
            let mut mine = Vec::new();
            for &(iova, size) in ranges {
                let room = MAX_PAGE_DESCRIPTORS.saturating_sub(mine.len());
                match page_chunks(iova, size, room, 51) {
                    Some(c) => mine.extend(c.into_iter().map(|(addr, order)| {
                        ats.invalidation(sid, which, AtsRange::Pages { addr, order })
                    })),
                    None => {
                        mine.clear();
                        break;
                    }
                }
            }
            if mine.is_empty() {
                mine.push(ats.invalidation(sid, which, AtsRange::All));
            }
            descs.extend(mine);
        }
        descs
    }

    /// Page requests on: a queue of 2^(`pqs` + 7) descriptors (2^`pqs`
    /// pages) at PQA, PQH at its start, any status left from before
    /// cleared; the page request event stays masked (polled) until
    /// [`VtdHw::enable_page_request_interrupt`]. As Linux's
    /// `intel_iommu_enable_prq`. Refused without ECAP.PRS.
    pub fn enable_page_requests(&mut self, pqs: u8) -> Result<(), VtdError> {
        if !self.ecaps.page_requests {
            return Err(VtdError::Lacks {
                base: self.base,
                what: "page requests (ECAP.PRS)",
            });
        }
        if self.prq.is_some() {
            return Ok(());
        }
        let (coherency, _) = walk_coherency(&self.ecaps);
        let q = PageRequestQueue::new(&self.hal, pqs, coherency)?;
        self.unit.write_pectl(PECTL::IM::SET);
        // The queue starts empty where the tail is: software cannot move
        // PQT (QEMU's stays where an earlier queue left it), and a head
        // of 0 would read whatever lies between as requests.
        let tail = self.unit.pqt().read(PQT::PQT);
        self.unit.write_pqh(PQH::PQH.val(tail));
        self.hal.barrier();
        self.unit
            .write_pqa(PQA::PQA.val(q.base() >> 12) + PQA::PQS.val(u64::from(q.pqs())));
        self.unit.write_prs(PRS::PPR::SET + PRS::PRO::SET);
        self.prq = Some(q);
        Ok(())
    }

    /// Page request events by MSI, as [`VtdHw::enable_fault_interrupt`]:
    /// PEADDR/PEUADDR/PEDATA, then PECTL unmasked.
    pub fn enable_page_request_interrupt(
        &mut self,
        address: u64,
        data: u32,
    ) -> Result<(), VtdError> {
        if self.prq.is_none() {
            return Err(VtdError::PageRequestsOff { base: self.base });
        }
        let (lo, hi) = fault_event_address(address);
        self.unit.set_page_request_event(data, lo, hi);
        self.unit.write_pectl(PECTL::IM::CLEAR);
        Ok(())
    }

    pub fn disable_page_request_interrupt(&mut self) {
        self.unit.write_pectl(PECTL::IM::SET);
    }

    /// Takes the page requests from PQH to PQT, as Linux's `prq_event_thread`:
    /// PRS.PPR cleared first (so a request written meanwhile raises a new
    /// event), PQT read, each descriptor decoded (those the driver cannot
    /// serve are in `rejected`, skipped), PQH moved to that tail. An
    /// overflow (PRS.PRO) is reported, and cleared only once PQH and PQT
    /// read equal (VT-d 7.5.1: the unit then takes requests again).
    pub fn poll_page_requests(&mut self) -> Result<PrqPass<VtdError>, VtdError> {
        let base = self.base;
        let hold = self.holding_page_request_head();
        let q = self
            .prq
            .as_ref()
            .ok_or(VtdError::PageRequestsOff { base })?;
        let ring = q.entries();
        let mut pass = PrqPass::default();
        self.unit.write_prs(PRS::PPR::SET);
        let tail = self.unit.pqt().read(PQT::PQT) as u32 % ring;
        // The descriptors up to that tail are read after it.
        self.hal.barrier();
        let mut head = self.unit.pqh().read(PQH::PQH) as u32 % ring;
        // At most one lap: the indices are within the ring.
        while head != tail {
            match q.read(head).and_then(|d| prq::decode(head, d)) {
                Ok(r) => pass.requests.push(r),
                Err(e) => {
                    log::warn!("VT-d at {base:#x}: {e}");
                    pass.rejected.push(e);
                }
            }
            head = (head + 1) % ring;
        }
        if !hold {
            self.unit.write_pqh(PQH::PQH.val(u64::from(tail)));
        }
        if self.unit.prs().is_set(PRS::PRO) {
            pass.overflow_seen = true;
            let empty = self.unit.pqh().read(PQH::PQH) == self.unit.pqt().read(PQT::PQT);
            if empty {
                self.unit.write_prs(PRS::PRO::SET);
                pass.overflow_cleared = true;
            }
            log::warn!(
                "VT-d at {base:#x}: page request queue overflowed: requests were refused{}",
                if empty {
                    "; cleared"
                } else {
                    "; not empty, left set"
                }
            );
        }
        Ok(pass)
    }

    /// Answers the page group `req` ends: a page group response (type 9)
    /// with the PCIe response code, then a wait. Only the last request of
    /// a group is answered, stop markers never; returns whether a response
    /// was sent.
    pub fn page_response(
        &mut self,
        req: &PageRequest,
        resp: PageResponse,
    ) -> Result<bool, VtdError> {
        if self.prq.is_none() {
            return Err(VtdError::PageRequestsOff { base: self.base });
        }
        if !req.needs_response() {
            return Ok(false);
        }
        let rid = sid_of(req.dev)?;
        let pasid = req.pasid.ok_or(VtdError::ResponseWithoutPasid { rid })?;
        self.submit(&[Descriptor::PageGroupResponse {
            rid,
            pasid: pasid.0,
            code: resp.code(),
            last: req.last,
            group: req.group,
        }])?;
        Ok(true)
    }

    /// An invalidation wait that waits for page requests in flight to
    /// reach the queue too (PD), where the unit offers that (ECAP.PDS);
    /// a plain wait elsewhere, never a bit the unit reserves.
    pub fn drain_page_requests(&mut self) -> Result<(), VtdError> {
        if self.prq.is_none() {
            return Err(VtdError::PageRequestsOff { base: self.base });
        }
        let drain = self.ecaps.page_request_drain;
        match self.split().1.run_with(&[], drain)?.first() {
            Some(&Refused { index, descriptor }) => Err(VtdError::Refused { index, descriptor }),
            None => Ok(()),
        }
    }

    /// Page requests off: the event masked, PQA and PQH cleared, the
    /// queue freed. Devices' PRI must be off first.
    pub fn disable_page_requests(&mut self) {
        if self.prq.is_none() {
            return;
        }
        self.disable_page_request_interrupt();
        self.unit.write_pqa(PQA::PQA.val(0));
        self.unit.write_pqh(PQH::PQH.val(0));
        self.prq = None;
    }

    fn alloc_did(&mut self) -> Result<u16, VtdError> {
        if u32::from(self.next_did) + 1 >= self.caps.domains {
            return Err(VtdError::OutOfDomainIds {
                domains: self.caps.domains,
            });
        }
        self.next_did += 1;
        Ok(self.next_did)
    }

    fn free_did(&mut self, did: u16) {
        let descs = [
            Descriptor::IotlbDomain { did },
            Descriptor::PasidCacheDomain { did },
        ];
        if let Err(e) = self.submit(&descs) {
            log::warn!("VT-d: domain {did} freed, its invalidation failed: {e}");
        }
    }

    fn attach_primary(&mut self, dev: DeviceId, d: &DomainRef) -> Result<(), VtdError> {
        let sid = sid_of(dev)?;
        let bits = self
            .tables
            .pasid_bits_of(sid)
            .unwrap_or(self.ecaps.pasid_bits);
        let (primary, entry) = match (d.kind, d.root) {
            (DomainKind::Identity, _) => {
                if !self.ecaps.pass_through {
                    return Err(VtdError::NoPassThrough {
                        what: "identity domains",
                    });
                }
                (
                    Primary::Identity,
                    pass_through_entry(table_levels(self.caps.sagaw, self.caps.mgaw)),
                )
            }
            (DomainKind::Unmanaged | DomainKind::Dma, Some(root)) => {
                (Primary::Paging, self.paging_entry(d.tag as u16, root.0))
            }
            _ => (
                Primary::Blocked,
                self.paging_entry(BLOCKED_DID, self.tables.empty()),
            ),
        };
        let (t, mut qi) = self.split();
        t.device(&mut qi, sid, bits)?;
        t.set_entry(&mut qi, sid, 0, Some(entry))?;
        t.set_primary_kind(sid, primary)
    }

    fn prepare_aux(&mut self, dev: DeviceId) -> Result<(), VtdError> {
        let sid = sid_of(dev)?;
        let bits = self.ecaps.pasid_bits;
        let (t, mut qi) = self.split();
        t.device(&mut qi, sid, bits)
    }

    fn attach_pasid(&mut self, dev: DeviceId, pasid: u32, d: &DomainRef) -> Result<(), VtdError> {
        let root = d.root.ok_or(VtdError::NotPaging { pasid })?;
        let sid = sid_of(dev)?;
        let entry = if d.kind == DomainKind::Sva {
            // A CPU's tables: always first level, whatever the unit's
            // own domains use.
            PasidEntry {
                did: d.tag as u16,
                translation: Translation::FirstLevel {
                    root: root.0,
                    privileged: false,
                },
                page_walk_snoop: self.ecaps.page_walk_coherency,
            }
        } else {
            self.paging_entry(d.tag as u16, root.0)
        };
        let bits = self.ecaps.pasid_bits;
        let (t, mut qi) = self.split();
        t.device(&mut qi, sid, bits)?;
        t.set_entry(&mut qi, sid, pasid, Some(entry))
    }

    fn detach_pasid(&mut self, dev: DeviceId, pasid: u32) -> Result<(), VtdError> {
        let sid = sid_of(dev)?;
        if !self.tables.contains(sid) {
            return Ok(());
        }
        let (t, mut qi) = self.split();
        t.set_entry(&mut qi, sid, pasid, None)
    }

    /// After a map: a unit in caching mode may have cached the absent
    /// entries, so second-level domains get a page-selective IOTLB
    /// invalidation of the range (first-level translations never cache
    /// absent entries: Linux flushes only the write buffer there); else
    /// the write buffer is flushed where CAP.RWBF asks for it.
    fn flush_map(&mut self, d: &DomainRef, iova: u64, size: u64) -> Result<(), VtdError> {
        let second_level = matches!(d.format, TableFormat::VtdSecondLevel(_));
        if !(self.caps.caching_mode && second_level) {
            return self.flush_write_buffer();
        }
        let descs = unmap_descriptors(
            true,
            self.caps.max_address_mask,
            d.tag as u16,
            &[],
            &[(iova, size)],
        );
        self.submit(&descs)
    }

    fn flush_unmap(
        &mut self,
        d: &DomainRef,
        attached: &[Attachment],
        gather: &Gather,
    ) -> Result<(), VtdError> {
        if gather.is_empty() {
            return Ok(());
        }
        let mut descs = unmap_descriptors(
            matches!(d.format, TableFormat::VtdSecondLevel(_)),
            self.caps.max_address_mask,
            d.tag as u16,
            attached,
            &gather.ranges,
        );
        // After the IOTLB, in the same batch, before the wait.
        descs.extend(self.dev_tlb_descriptors(attached, &gather.ranges));
        if descs.is_empty() {
            return Ok(());
        }
        self.submit(&descs)
    }
}

impl<H: Hal, R: UnitRegs> Drop for VtdHw<H, R> {
    fn drop(&mut self) {
        if let Err(e) = self.disable() {
            log::error!("VT-d does not turn off ({e}): its tables stay allocated");
            Held::leak(&mut self.tables);
            Held::leak(&mut self.queue);
            Held::leak(&mut self.pages);
            // The unit may still write page requests into it.
            core::mem::forget(self.prq.take());
        }
    }
}

/// Bring-up under the core: devices the core does not manage get a
/// pass-through RID_PASID entry; released devices lose their context
/// entry and PASID structures; shutdown turns translation off.
impl<H: Hal, R: UnitRegs> kernel::iommu::bringup::Bringup for VtdHw<H, R> {
    fn pass_through(&mut self, dev: DeviceId) -> Result<(), VtdError> {
        VtdHw::pass_through(self, dev)
    }
    fn enable(&mut self) -> Result<(), VtdError> {
        VtdHw::enable(self)
    }
    fn release(&mut self, dev: DeviceId) -> Result<(), VtdError> {
        self.release_device(dev)
    }
    fn shutdown(&mut self) -> Result<(), VtdError> {
        self.disable()
    }
    fn held(&self) -> (u64, u64) {
        (self.tables_live(), self.pasid_table_bytes())
    }
}

impl<H: Hal, R: UnitRegs> IommuHw for VtdHw<H, R> {
    type Error = VtdError;

    fn format(&self) -> TableFormat {
        self.format
    }

    fn pasid_bits(&self) -> u8 {
        self.ecaps.pasid_bits
    }

    fn direct_regions(&self, dev: DeviceId) -> Vec<PhysRange> {
        u16::try_from(dev.0)
            .ok()
            .and_then(|sid| self.rmrrs.get(&sid))
            .map(|v| v.iter().map(|&(b, s)| PhysRange::new(b, s)).collect())
            .unwrap_or_default()
    }

    fn tables(&mut self) -> &mut dyn TableMemory {
        &mut *self.pages
    }

    fn alloc_tag(&mut self) -> Result<u32, VtdError> {
        self.alloc_did().map(u32::from)
    }

    fn tags_left(&self) -> Option<u32> {
        // `alloc_did` hands out 1 to CAP.ND's count - 1, each once.
        Some(
            self.caps
                .domains
                .saturating_sub(u32::from(self.next_did) + 1),
        )
    }

    fn free_tag(&mut self, tag: u32) {
        self.free_did(tag as u16);
    }

    fn set_primary(&mut self, dev: DeviceId, d: &DomainRef) -> Result<(), VtdError> {
        self.attach_primary(dev, d)
    }

    fn enable_aux(&mut self, dev: DeviceId) -> Result<(), VtdError> {
        self.prepare_aux(dev)
    }

    fn disable_aux(&mut self, _dev: DeviceId) -> Result<(), VtdError> {
        Ok(())
    }

    fn set_pasid(&mut self, dev: DeviceId, pasid: Pasid, d: &DomainRef) -> Result<(), VtdError> {
        self.attach_pasid(dev, pasid.0, d)
    }

    fn clear_pasid(&mut self, dev: DeviceId, pasid: Pasid, _d: &DomainRef) -> Result<(), VtdError> {
        self.detach_pasid(dev, pasid.0)
    }

    fn mapped(
        &mut self,
        d: &DomainRef,
        _attached: &[Attachment],
        iova: u64,
        size: u64,
    ) -> Result<(), VtdError> {
        self.flush_map(d, iova, size)
    }

    fn invalidation_batch_cap(&self) -> Option<u64> {
        Some(queue::MAX_PAGE_DESCRIPTORS as u64)
    }

    fn invalidate(
        &mut self,
        d: &DomainRef,
        attached: &[Attachment],
        gather: &Gather,
    ) -> Result<(), VtdError> {
        self.flush_unmap(d, attached, gather)
    }

    fn note(&self, n: Note) {
        self.hal.note(n);
    }

    fn dev_tlb_supported(&self) -> bool {
        self.ecaps.device_tlb
    }

    /// First-level leaves carry x86's D bit, which the unit sets on a
    /// write walk (QEMU only with patch 0019: before it, an entry whose A
    /// bit was set never got D). Second-level dirty state needs
    /// ECAP.SLADS and the PASID entry's SSADE, which QEMU 10.2 lacks.
    fn dirty_tracking_unavailable(&self) -> Option<&'static str> {
        match self.format {
            TableFormat::X86FirstLevel(_) => None,
            _ => Some("second-level translation: the driver keeps no dirty state there (ECAP.SLADS unused; QEMU 10.2 has none)"),
        }
    }

    fn page_requests_supported(&self) -> bool {
        self.ecaps.page_requests
    }

    fn set_dev_tlb(&mut self, dev: DeviceId, tlb: Option<DevTlb>) -> Result<(), VtdError> {
        let ats = tlb.map(|t| Ats {
            queue_depth: t.queue_depth,
            pfsid: None,
            page_requests: t.page_requests,
        });
        self.set_device_ats(dev, ats)
    }

    /// 128 descriptors (one page): devices here have few requests
    /// outstanding, and a small queue is quick to fill in an overflow test.
    fn enable_page_requests(&mut self) -> Result<(), VtdError> {
        VtdHw::enable_page_requests(self, 0)
    }

    fn take_page_requests(&mut self) -> Result<PrqPass<VtdError>, VtdError> {
        self.poll_page_requests()
    }

    fn page_response(&mut self, req: &PageRequest, resp: PageResponse) -> Result<bool, VtdError> {
        VtdHw::page_response(self, req, resp)
    }

    /// First-level translation walks x86-64 paging, a process's tables;
    /// PASIDs need scalable mode.
    fn sva_supported(&self) -> bool {
        self.ecaps.first_level && self.ecaps.pasid_bits > 0
    }

    fn sva_accepts(&self, format: &TableFormat) -> bool {
        match format {
            TableFormat::X86FirstLevel(f) => !f.gib_pages || self.caps.first_level_1g,
            _ => false,
        }
    }
}
