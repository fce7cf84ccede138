//! The VT-d driver in scalable mode (issue 8): the core's `IommuHw` for
//! one remapping unit.
//!
//! - Root table (scalable: two context tables per bus), 256-bit context
//!   entries with a PASID directory each, PASID tables of 64 entries
//!   allocated as PASIDs appear. The directory starts at one page (2^15
//!   PASIDs) and grows to the device's width when a larger PASID comes.
//! - Requests without PASID use RID_PASID 0: the primary domain is PASID
//!   entry 0 (first or second level; pass-through for identity). A
//!   blocked primary is a present entry over an empty table, so its
//!   faults carry addresses, and PASID-tagged requests still work (QEMU
//!   refuses a context entry whose RID_PASID entry is not present).
//!   Aux domains are the other PASID entries, with the domain's DID.
//! - The invalidation queue with 256-bit descriptors; every batch ends in
//!   one invalidation wait whose status write is polled (bounded). A
//!   descriptor the unit refuses (IQE) is reported, replaced and skipped.
//! - Faults are read from the fault recording registers, cleared, and
//!   turned into the core's faults; overflow (PFO) is counted.
use crate::memory::iommu::{free, read_u64, write_u64};
use crate::memory::{self, KernelTables};
use crate::platform::MsiVector;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;
use kernel::iommu::domain::{
    Attachment, DeviceId, DomainKind, DomainRef, Fault, FaultReason, IommuHw, TableFormat,
};
use kernel::iommu::pgtable::x86::{VtdSecondLevel, X86FirstLevel};
use kernel::iommu::pgtable::{Gather, TableMemory, PAGE_SIZE};
use tock_registers::interfaces::{Readable, Writeable};
use vtd::caps::{Caps, Ecaps};
use vtd::entries::{
    context_slot, pasid_dir_entry, pasid_slot, root_entry, ContextEntry, PasidEntry, Translation,
};
use vtd::fault::FaultRecord;
use vtd::probe::Unit;
use vtd::qi::Descriptor;

/// The driver's error until it moves into `drivers/vtd` with a typed
/// enum of its own: a message, kept for the rest of the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwError(pub &'static str);

impl HwError {
    fn new(s: alloc::string::String) -> Self {
        HwError(s.leak())
    }
}

impl core::fmt::Display for HwError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.0)
    }
}

/// Polls of a status before giving up (each one a memory or MMIO read).
const MAX_POLLS: u32 = 10_000_000;
/// Invalidation queue: one page of 256-bit descriptors.
const IQ_ENTRIES: u32 = 128;
/// More page-selective descriptors than this for one unmap batch:
/// invalidate the whole domain (or PASID) instead.
const MAX_PAGE_DESCRIPTORS: usize = 32;
/// The DID of pass-through PASID entries (identity domains and devices
/// the core does not manage).
const PASS_THROUGH_DID: u16 = 1;
/// The DID of blocking entries (an empty table: nothing is ever cached).
const BLOCKED_DID: u16 = 2;
/// PASIDs one PASID directory page covers (512 entries of 64 PASIDs).
const FIRST_DIR_ENTRIES: u32 = 512;

const GCMD_TE: u32 = 1 << 31;
const GCMD_SRTP: u32 = 1 << 30;
const GCMD_QIE: u32 = 1 << 26;
const RTADDR_SMT: u64 = 1 << 10;
const IQA_DW_256: u64 = 1 << 11;
const FSTS_PFO: u32 = 1 << 0;
const FSTS_IQE: u32 = 1 << 4;
const FSTS_ICE: u32 = 1 << 5;
const FSTS_ITE: u32 = 1 << 6;
const FECTL_IM: u32 = 1 << 31;

fn alloc_zeroed(bytes: u64) -> Result<u64, HwError> {
    memory::iommu::alloc_zeroed(bytes, PAGE_SIZE)
        .map_err(|e| HwError::new(format!("VT-d memory: {e}")))
}

fn fence() {
    // Table writes must be visible before the unit is told (x86 keeps
    // stores in order; this stops the compiler reordering them).
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// A descriptor the unit refused (FSTS.IQE), as it was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub index: u32,
    pub descriptor: [u64; 4],
}

/// What the primary domain of a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primary {
    Blocked,
    Identity,
    Paging,
}

/// A device the driver programs: its PASID directory and tables.
struct Device {
    dir: u64,
    dir_entries: u32,
    /// PASID tables (one page, 64 entries) by directory index.
    tables: BTreeMap<u32, u64>,
    /// Present PASID entries and their DIDs (PASID 0: RID_PASID).
    present: BTreeMap<u32, u16>,
    primary: Primary,
    /// The device's PASID width (the directory grows to it).
    pasid_bits: u8,
}

pub struct VtdHw {
    unit: Unit,
    base: u64,
    pub caps: Caps,
    pub ecaps: Ecaps,
    format: TableFormat,
    root: u64,
    /// The empty table blocking entries point at.
    empty: u64,
    /// Context tables by (bus, upper half).
    contexts: BTreeMap<(u8, bool), u64>,
    devices: BTreeMap<u16, Device>,
    iq: u64,
    iq_tail: u32,
    /// Where invalidation waits write their status.
    status: u64,
    seq: u32,
    gcmd: u32,
    tables: KernelTables,
    /// Bytes of PASID directories and tables held.
    meta_bytes: u64,
    next_did: u16,
    /// Descriptors queued and invalidation waits, since creation.
    pub descriptors: u64,
    pub waits: u64,
    /// Descriptors the unit refused, since creation.
    pub refused: Vec<Refused>,
    /// Primary fault overflows (FSTS.PFO) seen.
    pub fault_overflows: u32,
    /// Faults read from the recording registers, not yet taken.
    pending: Vec<FaultRecord>,
    /// Leave fault records in the registers after each DMA (a test of
    /// their overflow).
    pub defer_fault_collection: bool,
    /// Reserved memory regions (RMRRs) each device must keep reaching.
    rmrrs: BTreeMap<u16, Vec<(u64, u64)>>,
}

impl VtdHw {
    /// Takes over the unit (translation must be off): root table, the
    /// invalidation queue in 256-bit mode, caches invalidated. Translation
    /// stays off until [`VtdHw::enable`]. Units without scalable mode,
    /// PASIDs or queued invalidation are refused.
    pub fn new(unit: Unit, base: u64) -> Result<VtdHw, HwError> {
        let (caps, ecaps) = unit.caps();
        let mut missing = Vec::new();
        for (ok, what) in [
            (ecaps.scalable_mode, "scalable mode"),
            (ecaps.pasid, "PASID"),
            (ecaps.queued_invalidation, "queued invalidation"),
            (
                ecaps.first_level || ecaps.second_level,
                "a translation level",
            ),
        ] {
            if !ok {
                missing.push(what);
            }
        }
        if !missing.is_empty() {
            return Err(HwError::new(format!(
                "VT-d at {base:#x} cannot be driven: no {}",
                missing.join(", no ")
            )));
        }
        if unit.translating() {
            return Err(HwError::new(format!(
                "VT-d at {base:#x} is already translating"
            )));
        }
        let format = if ecaps.first_level {
            TableFormat::X86FirstLevel(X86FirstLevel {
                gib_pages: caps.first_level_1g,
            })
        } else {
            // 4 levels when the unit takes 48-bit addresses, else 3.
            let levels = if caps.sagaw & 0b100 != 0 && caps.mgaw >= 48 {
                4
            } else {
                3
            };
            TableFormat::VtdSecondLevel(VtdSecondLevel {
                levels,
                mib2_pages: caps.second_level_large_pages & 1 != 0,
                gib_pages: caps.second_level_large_pages & 2 != 0,
            })
        };
        if !ecaps.coherent {
            memory::iommu::set_non_coherent();
        }
        let root = alloc_zeroed(PAGE_SIZE)?;
        let empty = alloc_zeroed(PAGE_SIZE)?;
        let iq = alloc_zeroed(PAGE_SIZE)?;
        let status = alloc_zeroed(PAGE_SIZE)?;
        let mut hw = VtdHw {
            unit,
            base,
            caps,
            ecaps,
            format,
            root,
            empty,
            contexts: BTreeMap::new(),
            devices: BTreeMap::new(),
            iq,
            iq_tail: 0,
            status,
            seq: 0,
            gcmd: 0,
            tables: KernelTables::default(),
            meta_bytes: 0,
            next_did: BLOCKED_DID,
            descriptors: 0,
            waits: 0,
            refused: Vec::new(),
            fault_overflows: 0,
            pending: Vec::new(),
            defer_fault_collection: false,
            rmrrs: BTreeMap::new(),
        };
        let r = hw.unit.regs();
        r.rtaddr.set(root | RTADDR_SMT);
        hw.command(GCMD_SRTP, true)?;
        let r = hw.unit.regs();
        r.iqt.set(0);
        r.iqa.set(iq | IQA_DW_256);
        hw.gcmd |= GCMD_QIE;
        hw.command(0, false)?;
        hw.submit(&[Descriptor::ContextGlobal, Descriptor::IotlbGlobal])?;
        // Faults left from before are not ours.
        hw.clear_faults();
        static REPORTED: core::sync::atomic::AtomicBool =
            core::sync::atomic::AtomicBool::new(false);
        let level = crate::logger::once(&REPORTED);
        log::log!(
            level,
            "VT-d at {base:#x}: scalable mode; domains on {} ({}); PASIDs {} bits; {} domain ids; \
             QI with 256-bit descriptors, {} entries; page-selective invalidation up to 2^{} pages; \
             pass-through {}; {} fault record(s); device-TLB {}, page requests {}, nested {} (unused); \
             {}coherent",
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
            if ecaps.coherent { "" } else { "not " }
        );
        Ok(hw)
    }

    fn mmio32(&self, offset: u64) -> *mut u32 {
        (self.base + offset) as *mut u32
    }

    fn mmio64(&self, offset: u64) -> *mut u64 {
        (self.base + offset) as *mut u64
    }

    /// Writes GCMD with the persistent bits plus `one_shot`, and waits
    /// (bounded) until GSTS reflects the persistent bits (and RTPS for a
    /// root table pointer). `expect_set`: the one-shot bit's status shows.
    fn command(&mut self, one_shot: u32, expect_set: bool) -> Result<(), HwError> {
        let r = self.unit.regs();
        r.gcmd.set(self.gcmd | one_shot);
        // GSTS bits mirror GCMD bits.
        let want = self.gcmd | if expect_set { one_shot } else { 0 };
        let mask = GCMD_TE | GCMD_QIE | if expect_set { one_shot } else { 0 };
        for _ in 0..MAX_POLLS {
            if r.gsts.get() & mask == want & mask {
                return Ok(());
            }
        }
        Err(HwError::new(format!(
            "VT-d at {:#x}: GCMD {:#x} not reflected in GSTS {:#x}",
            self.base,
            self.gcmd | one_shot,
            r.gsts.get()
        )))
    }

    /// DMA remapping on.
    pub fn enable(&mut self) -> Result<(), HwError> {
        self.gcmd |= GCMD_TE;
        self.command(0, false)
    }

    /// DMA remapping off, then queued invalidation off; fault events
    /// masked.
    pub fn disable(&mut self) -> Result<(), HwError> {
        self.disable_fault_interrupt();
        self.gcmd &= !GCMD_TE;
        self.command(0, false)?;
        self.gcmd &= !GCMD_QIE;
        self.command(0, false)
    }

    fn fsts(&self) -> u32 {
        // SAFETY: FSTS of this unit's register page.
        unsafe { core::ptr::read_volatile(self.mmio32(0x34)) }
    }

    fn clear_fsts(&self, bits: u32) {
        // SAFETY: FSTS is RW1C.
        unsafe { core::ptr::write_volatile(self.mmio32(0x34), bits) }
    }

    /// Queues `descs` and one invalidation wait, and waits (bounded) for
    /// the wait's status write. A descriptor the unit refuses is
    /// recorded in `refused`, replaced by a harmless one, and the queue
    /// goes on.
    pub fn submit(&mut self, descs: &[Descriptor]) -> Result<(), HwError> {
        let entries: Vec<[u64; 4]> = descs.iter().map(Descriptor::encode).collect();
        self.submit_encoded(&entries).map(|_| ())
    }

    /// As [`VtdHw::submit`] for entries already encoded (a test's bad
    /// descriptor among them); returns what the unit refused.
    pub fn submit_encoded(&mut self, entries: &[[u64; 4]]) -> Result<Vec<Refused>, HwError> {
        if entries.len() as u32 + 1 >= IQ_ENTRIES {
            return Err(HwError::new(format!(
                "{} descriptors do not fit the invalidation queue",
                entries.len()
            )));
        }
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        write_u64(self.status, 0);
        let wait = Descriptor::Wait {
            addr: self.status,
            data: seq,
        }
        .encode();
        for e in entries.iter().chain(core::iter::once(&wait)) {
            let at = self.iq + 32 * u64::from(self.iq_tail);
            for (i, &q) in e.iter().enumerate() {
                write_u64(at + 8 * i as u64, q);
            }
            self.iq_tail = (self.iq_tail + 1) % IQ_ENTRIES;
        }
        self.descriptors += entries.len() as u64 + 1;
        self.waits += 1;
        fence();
        self.unit.regs().iqt.set(u64::from(self.iq_tail) << 5);
        let refused_before = self.refused.len();
        let mut polls = 0;
        while (read_u64(self.status) as u32) != seq {
            let fsts = self.fsts();
            if fsts & FSTS_IQE != 0 {
                // IQH names the refused descriptor: report it, put an
                // invalidation wait that writes to a scratch word in its
                // place, acknowledge, and restart the queue.
                let index = ((self.unit.regs().iqh.get() >> 5) as u32) % IQ_ENTRIES;
                let at = self.iq + 32 * u64::from(index);
                let descriptor = [
                    read_u64(at),
                    read_u64(at + 8),
                    read_u64(at + 16),
                    read_u64(at + 24),
                ];
                log::warn!("VT-d refused descriptor {index} {descriptor:x?} (IQE)");
                self.refused.push(Refused { index, descriptor });
                let harmless = Descriptor::Wait {
                    addr: self.status + 64,
                    data: 0,
                }
                .encode();
                for (i, &q) in harmless.iter().enumerate() {
                    write_u64(at + 8 * i as u64, q);
                }
                fence();
                self.clear_fsts(FSTS_IQE);
                self.unit.regs().iqt.set(u64::from(self.iq_tail) << 5);
                continue;
            }
            if fsts & (FSTS_ICE | FSTS_ITE) != 0 {
                log::warn!(
                    "VT-d invalidation error: FSTS {fsts:#x} (device-TLB completion or timeout)"
                );
                self.clear_fsts(fsts & (FSTS_ICE | FSTS_ITE));
            }
            polls += 1;
            if polls > MAX_POLLS {
                return Err(HwError::new(format!(
                    "VT-d at {:#x}: invalidation wait {seq} not done (IQH {:#x}, IQT {:#x}, FSTS {fsts:#x})",
                    self.base,
                    self.unit.regs().iqh.get(),
                    self.unit.regs().iqt.get()
                )));
            }
            core::hint::spin_loop();
        }
        Ok(self.refused[refused_before..].to_vec())
    }

    /// Root entry and context table for `sid`, allocated on first use;
    /// returns the context entry's address.
    fn context_slot_of(&mut self, sid: u16) -> Result<u64, HwError> {
        let (bus, devfn) = ((sid >> 8) as u8, sid as u8);
        let (upper, index) = context_slot(devfn);
        let table = match self.contexts.get(&(bus, upper)) {
            Some(&t) => t,
            None => {
                let t = alloc_zeroed(PAGE_SIZE)?;
                self.contexts.insert((bus, upper), t);
                let lower = self.contexts.get(&(bus, false)).copied();
                let upper_t = self.contexts.get(&(bus, true)).copied();
                let [lo, hi] = root_entry(lower, upper_t);
                let at = self.root + 16 * u64::from(bus);
                write_u64(at + 8, hi);
                write_u64(at, lo);
                fence();
                t
            }
        };
        Ok(table + 32 * index as u64)
    }

    /// The device's context entry, PASID directory and first PASID table,
    /// on first use. The context entry points at the directory with
    /// RID_PASID 0.
    fn device(&mut self, sid: u16, pasid_bits: u8) -> Result<(), HwError> {
        if self.devices.contains_key(&sid) {
            return Ok(());
        }
        let dir = alloc_zeroed(PAGE_SIZE)?;
        let table = alloc_zeroed(PAGE_SIZE)?;
        self.meta_bytes += 2 * PAGE_SIZE;
        write_u64(dir, pasid_dir_entry(table));
        let slot = self.context_slot_of(sid)?;
        let ce = ContextEntry {
            pasid_dir: dir,
            pdts: ContextEntry::pdts_for(FIRST_DIR_ENTRIES),
            rid_pasid: 0,
            device_tlb: false,
            page_requests: false,
        }
        .encode();
        for i in [3, 2, 1, 0] {
            write_u64(slot + 8 * i as u64, ce[i]);
        }
        fence();
        self.devices.insert(
            sid,
            Device {
                dir,
                dir_entries: FIRST_DIR_ENTRIES,
                tables: BTreeMap::from([(0, table)]),
                present: BTreeMap::new(),
                primary: Primary::Blocked,
                pasid_bits,
            },
        );
        // Not present before: the context cache may hold that.
        self.submit(&[Descriptor::ContextDevice { did: 0, sid }])
    }

    /// Grows the device's PASID directory so that `pasid` fits: a new
    /// directory for the device's whole width, the entries copied, and
    /// the context entry switched in one 64-bit write.
    fn grow_dir(&mut self, sid: u16, pasid: u32) -> Result<(), HwError> {
        let dev = &self.devices[&sid];
        let index = pasid >> 6;
        if index < dev.dir_entries {
            return Ok(());
        }
        let entries = (1u32 << dev.pasid_bits.max(7))
            .div_ceil(64)
            .max(index + 1)
            .next_power_of_two();
        let bytes = 8 * u64::from(entries);
        let dir = alloc_zeroed(bytes)?;
        self.meta_bytes += bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        for (&i, &t) in &dev.tables {
            write_u64(dir + 8 * u64::from(i), pasid_dir_entry(t));
        }
        let (old, old_entries) = (dev.dir, dev.dir_entries);
        let slot = self.context_slot_of(sid)?;
        let lo = ContextEntry {
            pasid_dir: dir,
            pdts: ContextEntry::pdts_for(entries),
            rid_pasid: 0,
            device_tlb: false,
            page_requests: false,
        }
        .encode()[0];
        fence();
        write_u64(slot, lo);
        let dev = self.devices.get_mut(&sid).expect("known device");
        dev.dir = dir;
        dev.dir_entries = entries;
        let dids: Vec<u16> = dev.present.values().copied().collect();
        let mut descs = alloc::vec![Descriptor::ContextDevice { did: 0, sid }];
        descs.extend(dids.iter().map(|&did| Descriptor::PasidCacheDomain { did }));
        self.submit(&descs)?;
        let old_bytes = 8 * u64::from(old_entries);
        free(old, old_bytes);
        self.meta_bytes -= old_bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        Ok(())
    }

    /// The PASID entry's address, its PASID table allocated (and linked
    /// into the directory) on first use.
    fn pasid_entry_slot(&mut self, sid: u16, pasid: u32) -> Result<u64, HwError> {
        self.grow_dir(sid, pasid)?;
        let (dir_index, index) = pasid_slot(pasid);
        let dev = &self.devices[&sid];
        let table = match dev.tables.get(&(dir_index as u32)) {
            Some(&t) => t,
            None => {
                let t = alloc_zeroed(PAGE_SIZE)?;
                self.meta_bytes += PAGE_SIZE;
                let dev = self.devices.get_mut(&sid).expect("known device");
                dev.tables.insert(dir_index as u32, t);
                write_u64(dev.dir + 8 * dir_index as u64, pasid_dir_entry(t));
                fence();
                t
            }
        };
        Ok(table + 64 * index as u64)
    }

    /// Writes (or, with `None`, clears) PASID entry `pasid` of `sid`,
    /// with the invalidations the specification asks for: a present
    /// entry is cleared first and its PASID-cache and IOTLB entries
    /// dropped; a new entry is written last qword first, present bit last,
    /// and the PASID cache told.
    fn set_entry(
        &mut self,
        sid: u16,
        pasid: u32,
        entry: Option<PasidEntry>,
    ) -> Result<(), HwError> {
        let slot = self.pasid_entry_slot(sid, pasid)?;
        let old = self.devices[&sid].present.get(&pasid).copied();
        if let Some(did) = old {
            write_u64(slot, 0);
            fence();
            self.flush_pasid(did, pasid)?;
            self.devices
                .get_mut(&sid)
                .expect("known")
                .present
                .remove(&pasid);
        }
        let Some(e) = entry else {
            for i in 1..8 {
                write_u64(slot + 8 * i, 0);
            }
            return Ok(());
        };
        let q = e.encode();
        for i in PasidEntry::write_order() {
            if i == 0 {
                fence();
            }
            write_u64(slot + 8 * i as u64, q[i]);
        }
        fence();
        self.submit(&[Descriptor::PasidCachePasid { did: e.did, pasid }])?;
        self.devices
            .get_mut(&sid)
            .expect("known")
            .present
            .insert(pasid, e.did);
        Ok(())
    }

    /// Drops what the unit caches of PASID `pasid` under `did`: its PASID
    /// cache entry and its IOTLB entries (of the whole DID on second
    /// level, where PASID-based invalidation does not reach).
    pub fn flush_pasid(&mut self, did: u16, pasid: u32) -> Result<(), HwError> {
        let mut descs = alloc::vec![
            Descriptor::PasidCachePasid { did, pasid },
            Descriptor::PasidIotlbAll { did, pasid },
        ];
        if matches!(self.format, TableFormat::VtdSecondLevel(_)) {
            descs.push(Descriptor::IotlbDomain { did });
        }
        self.submit(&descs)
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
        }
    }

    /// A device the core does not manage keeps working untranslated: its
    /// RID_PASID entry is pass-through.
    pub fn pass_through(&mut self, sid: u16) -> Result<(), HwError> {
        if !self.ecaps.pass_through {
            return Err(HwError("the unit has no pass-through (ECAP.PT)"));
        }
        self.device(sid, 0)?;
        self.set_entry(
            sid,
            0,
            Some(PasidEntry {
                did: PASS_THROUGH_DID,
                translation: Translation::PassThrough,
            }),
        )?;
        self.devices.get_mut(&sid).expect("known").primary = Primary::Identity;
        Ok(())
    }

    /// The device's context entry goes, and its PASID structures are
    /// freed (a test's teardown).
    pub fn release_device(&mut self, sid: u16) -> Result<(), HwError> {
        let Some(dev) = self.devices.remove(&sid) else {
            return Ok(());
        };
        let slot = self.context_slot_of(sid)?;
        write_u64(slot, 0);
        fence();
        let mut descs = alloc::vec![Descriptor::ContextDevice { did: 0, sid }];
        for (&pasid, &did) in &dev.present {
            descs.push(Descriptor::PasidCachePasid { did, pasid });
            descs.push(Descriptor::PasidIotlbAll { did, pasid });
        }
        descs.push(Descriptor::IotlbGlobal);
        self.submit(&descs)?;
        for &t in dev.tables.values() {
            free(t, PAGE_SIZE);
            self.meta_bytes -= PAGE_SIZE;
        }
        let dir_bytes = (8 * u64::from(dev.dir_entries)).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        free(dev.dir, dir_bytes);
        self.meta_bytes -= dir_bytes;
        Ok(())
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
        self.devices
            .get(&sid)
            .map(|d| (d.dir_entries, d.tables.len()))
    }

    /// Page-table pages held by the core's domains.
    pub fn tables_live(&self) -> u64 {
        self.tables.live
    }

    /// Bytes of PASID directories and tables held now.
    pub fn pasid_table_bytes(&self) -> u64 {
        self.meta_bytes
    }

    /// Where PASID entry `pasid` of `sid` lives, if its table exists (for
    /// tests that edit entries behind the driver's back).
    pub fn pasid_entry_address(&self, sid: u16, pasid: u32) -> Option<u64> {
        let dev = self.devices.get(&sid)?;
        let (dir_index, index) = pasid_slot(pasid);
        Some(dev.tables.get(&(dir_index as u32))? + 64 * index as u64)
    }

    /// Writes `words` at `pa`, inside a PASID table this driver owns, with
    /// no invalidation: how a test changes a live entry.
    pub fn poke(&mut self, pa: u64, words: &[u64]) -> Result<(), HwError> {
        let owned = self
            .devices
            .values()
            .any(|d| d.tables.values().any(|&t| (t..t + PAGE_SIZE).contains(&pa)));
        if !owned {
            return Err(HwError::new(format!(
                "{pa:#x} is not in a PASID table of this driver"
            )));
        }
        for (i, &w) in words.iter().enumerate() {
            write_u64(pa + 8 * i as u64, w);
        }
        fence();
        Ok(())
    }

    /// Fault events by MSI: the fault event registers get `v`'s address
    /// and data, and the interrupt is unmasked.
    pub fn enable_fault_interrupt(&mut self, v: MsiVector) {
        // SAFETY: FEDATA, FEADDR, FEUADDR and FECTL of this unit.
        unsafe {
            core::ptr::write_volatile(self.mmio32(0x3c), v.data);
            core::ptr::write_volatile(self.mmio32(0x40), v.address as u32);
            core::ptr::write_volatile(self.mmio32(0x44), (v.address >> 32) as u32);
            core::ptr::write_volatile(self.mmio32(0x38), 0);
        }
    }

    pub fn disable_fault_interrupt(&mut self) {
        // SAFETY: FECTL of this unit.
        unsafe { core::ptr::write_volatile(self.mmio32(0x38), FECTL_IM) };
    }

    /// Reads every fault recording register that holds a fault, clears
    /// it, and keeps the records until [`VtdHw::take_faults`]. A primary
    /// fault overflow is counted and cleared.
    pub fn collect_faults(&mut self) {
        let offset = u64::from(self.caps.fault_record_offset);
        for i in 0..u64::from(self.caps.fault_records) {
            let at = offset + 16 * i;
            // SAFETY: the unit's fault recording registers (CAP.FRO, NFR).
            let (lo, hi) = unsafe {
                (
                    core::ptr::read_volatile(self.mmio64(at)),
                    core::ptr::read_volatile(self.mmio64(at + 8)),
                )
            };
            let mut record = FaultRecord::decode(lo, hi);
            // Requests without PASID are processed as RID_PASID 0, and
            // units may record them with PASID 0 present: they had none.
            if record.pasid == Some(0) {
                record.pasid = None;
            }
            if record.valid {
                self.pending.push(record);
                // F is write-1-to-clear.
                // SAFETY: as above.
                unsafe { core::ptr::write_volatile(self.mmio64(at + 8), 1 << 63) };
            }
        }
        let fsts = self.fsts();
        if fsts & FSTS_PFO != 0 {
            self.fault_overflows += 1;
            log::warn!(
                "VT-d at {:#x}: primary fault overflow: faults were lost",
                self.base
            );
            self.clear_fsts(FSTS_PFO);
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
            .into_iter()
            .filter_map(|r| {
                let dev = self.devices.get(&r.source_id);
                let reason = match (r.reason, r.pasid) {
                    // PASID entry (or directory entry) not present or, as
                    // QEMU reports a cleared entry, invalid.
                    (0x51 | 0x59 | 0x5b, None) => FaultReason::Blocked,
                    (0x51 | 0x59 | 0x5b, Some(_)) => FaultReason::NoPasid,
                    // First level: not present; second level: no access
                    // (not present and read-only look the same).
                    (0x71 | 0x05 | 0x06 | 0x70 | 0x72 | 0x04, _) => FaultReason::NotMapped,
                    (0x81 | 0x85, _) => FaultReason::Permission,
                    (0x02, _) => FaultReason::Blocked,
                    (code, _) => {
                        log::warn!("VT-d fault not about a translation (reason {code:#x}): {r:?}");
                        return None;
                    }
                };
                let reason = match (reason, dev) {
                    (FaultReason::NotMapped, Some(d))
                        if r.pasid.is_none() && d.primary == Primary::Blocked =>
                    {
                        FaultReason::Blocked
                    }
                    (reason, _) => reason,
                };
                Some(Fault {
                    dev: u32::from(r.source_id),
                    pasid: r.pasid,
                    iova: r.addr,
                    write: !r.read,
                    reason,
                })
            })
            .collect()
    }

    /// Descriptors that invalidate `size` bytes at `iova`: power-of-two,
    /// aligned chunks within CAP.MAMV; `None` past the cap.
    fn page_chunks(&self, iova: u64, size: u64, room: usize) -> Option<Vec<(u64, u8)>> {
        let mut out = Vec::new();
        let mut at = iova & !(PAGE_SIZE - 1);
        let end = (iova + size).next_multiple_of(PAGE_SIZE);
        while at < end {
            if out.len() == room {
                return None;
            }
            let pages = (end - at) / PAGE_SIZE;
            let align = (at / PAGE_SIZE).trailing_zeros();
            let am = (63 - pages.leading_zeros())
                .min(align)
                .min(u32::from(self.caps.max_address_mask));
            out.push((at, am as u8));
            at += PAGE_SIZE << am;
        }
        Some(out)
    }
}

impl Drop for VtdHw {
    fn drop(&mut self) {
        if let Err(e) = self.disable() {
            log::error!(
                "VT-d does not turn off ({}): its tables stay allocated",
                e.0
            );
            return;
        }
        let sids: Vec<u16> = self.devices.keys().copied().collect();
        for sid in sids {
            if let Some(dev) = self.devices.remove(&sid) {
                for &t in dev.tables.values() {
                    free(t, PAGE_SIZE);
                }
                free(dev.dir, 8 * u64::from(dev.dir_entries));
            }
        }
        for &t in self.contexts.values() {
            free(t, PAGE_SIZE);
        }
        free(self.root, PAGE_SIZE);
        free(self.empty, PAGE_SIZE);
        free(self.iq, PAGE_SIZE);
        free(self.status, PAGE_SIZE);
    }
}

impl IommuHw for VtdHw {
    type Error = HwError;

    fn format(&self) -> TableFormat {
        self.format
    }

    fn pasid_bits(&self) -> u8 {
        self.ecaps.pasid_bits
    }

    fn direct_regions(&self, dev: DeviceId) -> Vec<(u64, u64)> {
        self.rmrrs.get(&(dev as u16)).cloned().unwrap_or_default()
    }

    fn tables(&mut self) -> &mut dyn TableMemory {
        &mut self.tables
    }

    fn alloc_tag(&mut self) -> Result<u32, HwError> {
        if u32::from(self.next_did) + 1 >= self.caps.domains {
            return Err(HwError::new(format!(
                "out of domain ids ({})",
                self.caps.domains
            )));
        }
        self.next_did += 1;
        Ok(u32::from(self.next_did))
    }

    fn free_tag(&mut self, tag: u32) {
        let did = tag as u16;
        let _ = self.submit(&[
            Descriptor::IotlbDomain { did },
            Descriptor::PasidCacheDomain { did },
        ]);
    }

    fn set_primary(&mut self, dev: DeviceId, d: &DomainRef) -> Result<(), HwError> {
        let sid = dev as u16;
        let bits = self
            .devices
            .get(&sid)
            .map_or(self.ecaps.pasid_bits, |d| d.pasid_bits);
        self.device(sid, bits)?;
        let (primary, entry) = match (d.kind, d.root) {
            (DomainKind::Identity, _) => {
                if !self.ecaps.pass_through {
                    return Err(HwError(
                        "identity domains need pass-through (ECAP.PT)".into(),
                    ));
                }
                (
                    Primary::Identity,
                    Some(PasidEntry {
                        did: PASS_THROUGH_DID,
                        translation: Translation::PassThrough,
                    }),
                )
            }
            (DomainKind::Unmanaged | DomainKind::Dma, Some(root)) => {
                (Primary::Paging, Some(self.paging_entry(d.tag as u16, root)))
            }
            _ => (
                Primary::Blocked,
                Some(self.paging_entry(BLOCKED_DID, self.empty)),
            ),
        };
        self.set_entry(sid, 0, entry)?;
        self.devices.get_mut(&sid).expect("known").primary = primary;
        Ok(())
    }

    fn enable_aux(&mut self, dev: DeviceId) -> Result<(), HwError> {
        let sid = dev as u16;
        if !self.devices.contains_key(&sid) {
            self.device(sid, self.ecaps.pasid_bits)?;
        }
        Ok(())
    }

    fn disable_aux(&mut self, _dev: DeviceId) -> Result<(), HwError> {
        Ok(())
    }

    fn set_pasid(&mut self, dev: DeviceId, pasid: u32, d: &DomainRef) -> Result<(), HwError> {
        let root = d
            .root
            .ok_or_else(|| HwError::new(format!("PASID {pasid}: not a paging domain")))?;
        let sid = dev as u16;
        self.device(sid, self.ecaps.pasid_bits)?;
        let entry = self.paging_entry(d.tag as u16, root);
        self.set_entry(sid, pasid, Some(entry))
    }

    fn clear_pasid(&mut self, dev: DeviceId, pasid: u32, _d: &DomainRef) -> Result<(), HwError> {
        let sid = dev as u16;
        if !self.devices.contains_key(&sid) {
            return Ok(());
        }
        self.set_entry(sid, pasid, None)
    }

    fn invalidate(
        &mut self,
        d: &DomainRef,
        attached: &[Attachment],
        gather: &Gather,
    ) -> Result<(), HwError> {
        if gather.is_empty() {
            return Ok(());
        }
        let did = d.tag as u16;
        let mut descs = Vec::new();
        if matches!(self.format, TableFormat::VtdSecondLevel(_)) {
            // Second level: IOTLB entries are tagged by DID, so one set
            // of page-selective descriptors covers every attachment.
            for &(iova, size) in &gather.ranges {
                let room = MAX_PAGE_DESCRIPTORS.saturating_sub(descs.len());
                match self.page_chunks(iova, size, room) {
                    Some(c) => {
                        descs.extend(c.into_iter().map(|(addr, am)| Descriptor::IotlbPages {
                            did,
                            addr,
                            am,
                        }))
                    }
                    None => {
                        descs = alloc::vec![Descriptor::IotlbDomain { did }];
                        break;
                    }
                }
            }
            if descs.is_empty() {
                descs.push(Descriptor::IotlbDomain { did });
            }
        } else {
            // First level: PASID-based IOTLB invalidation for each PASID
            // the domain is reached through (RID_PASID 0 for primaries).
            let mut pasids: Vec<u32> = attached.iter().map(|a| a.1.unwrap_or(0)).collect();
            pasids.sort_unstable();
            pasids.dedup();
            for pasid in pasids {
                let mut mine = Vec::new();
                let mut whole = false;
                for &(iova, size) in &gather.ranges {
                    let room = MAX_PAGE_DESCRIPTORS.saturating_sub(mine.len());
                    match self.page_chunks(iova, size, room) {
                        Some(c) => mine.extend(c.into_iter().map(|(addr, am)| {
                            Descriptor::PasidIotlbPages {
                                did,
                                pasid,
                                addr,
                                am,
                            }
                        })),
                        None => {
                            whole = true;
                            break;
                        }
                    }
                }
                if whole || mine.is_empty() {
                    mine = alloc::vec![Descriptor::PasidIotlbAll { did, pasid }];
                }
                descs.extend(mine);
            }
        }
        if descs.is_empty() {
            return Ok(());
        }
        self.submit(&descs)
    }
}
