//! The structures the unit walks, in memory only: the root table
//! (scalable: two context tables per bus), 256-bit context entries with a
//! PASID directory each, and PASID tables of 64 entries allocated as
//! PASIDs appear. The directory starts at one page (2^15 PASIDs) and
//! grows to the device's width when a larger PASID comes.
//!
//! No MMIO here: the invalidations an update needs go to an
//! [`Invalidate`], in order with the stores, so host tests can check
//! both against the fake HAL's log.
use super::error::VtdError;
use super::queue::pasid_flush;
use crate::entries::{
    context_slot, pasid_dir_entry, pasid_slot, root_entry, ContextEntry, PasidEntry,
};
use crate::qi::{AtsRange, Descriptor};
use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use kernel::hal::{Coherency, DmaRegion, Hal};
use kernel::iommu::check::{Cache, Note};
use kernel::iommu::entry::{write_entry, EntryTarget};
use kernel::iommu::pgtable::PAGE_SIZE;

/// PASIDs one PASID directory page covers (512 entries of 64 PASIDs).
pub const FIRST_DIR_ENTRIES: u32 = 512;
/// Bytes of a root entry, a context entry, a PASID directory entry and a
/// PASID table entry.
const ROOT_ENTRY: u64 = 16;
const CONTEXT_ENTRY: u64 = 32;
const DIR_ENTRY: u64 = 8;
const PASID_ENTRY: u64 = 64;

/// Where table updates send the invalidations they need, and wait for
/// them: the unit's invalidation queue, or a host test's recorder.
pub trait Invalidate {
    fn invalidate(&mut self, descs: &[Descriptor]) -> Result<(), VtdError>;
}

/// One live PASID entry, for the entry writer: stores go to the PASID
/// table, a sync is a barrier and the entry's invalidations, waited for.
struct LivePasidEntry<'a, H: Hal, I: Invalidate> {
    tables: &'a mut Tables<H>,
    inv: &'a mut I,
    sid: u16,
    table: u32,
    at: u64,
    flush: &'a [Descriptor],
}

impl<H: Hal, I: Invalidate> EntryTarget<8> for LivePasidEntry<'_, H, I> {
    type Error = VtdError;
    fn write(&mut self, word: usize, value: u64) -> Result<(), VtdError> {
        self.tables
            .write_entry(self.sid, self.table, self.at, [(word, value)])
    }
    fn sync(&mut self) -> Result<(), VtdError> {
        self.tables.hal.barrier();
        self.inv.invalidate(self.flush)
    }
    fn uncached(&mut self, on: bool) {
        self.tables.hal.note(Note::Uncached(on));
    }
}

/// What the primary domain of a device is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Primary {
    Blocked,
    Identity,
    Paging,
}

/// A device whose translations may sit in its device TLB (ATS on): the
/// context entry's DTE (and PRE with page requests) is set, and every
/// invalidation of what it reaches also goes to the device TLB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ats {
    /// The device's ATS Invalidate Queue Depth (32 for the field's 0).
    pub queue_depth: u8,
    /// The physical function's source id, where the unit wants it
    /// (ECAP.DIT); `None` otherwise.
    pub pfsid: Option<u16>,
    /// Page requests allowed (PRE).
    pub page_requests: bool,
}

impl Ats {
    /// The device-TLB invalidation of `range` for requests without PASID
    /// (`None`), one PASID, or every PASID of the device (`Some(None)`).
    pub fn invalidation(
        &self,
        sid: u16,
        pasid: Option<Option<u32>>,
        range: AtsRange,
    ) -> Descriptor {
        match pasid {
            None => Descriptor::DeviceTlb {
                sid,
                pfsid: self.pfsid,
                queue_depth: self.queue_depth,
                range,
            },
            Some(pasid) => Descriptor::PasidDeviceTlb {
                sid,
                pfsid: self.pfsid,
                queue_depth: self.queue_depth,
                pasid,
                range,
            },
        }
    }

    /// Everything the device TLB holds for PASID entry `pasid` (0: the
    /// requests without PASID, RID_PASID).
    pub fn entry_invalidation(&self, sid: u16, pasid: u32) -> Descriptor {
        let which = if pasid == 0 { None } else { Some(Some(pasid)) };
        self.invalidation(sid, which, AtsRange::All)
    }
}

/// A device the driver programs: its PASID directory and tables.
struct Device<R> {
    dir: R,
    dir_entries: u32,
    /// PASID tables (one page, 64 entries) by directory index.
    tables: BTreeMap<u32, R>,
    /// Present PASID entries and their DIDs (PASID 0: RID_PASID).
    present: BTreeMap<u32, u16>,
    primary: Primary,
    /// The device's PASID width (the directory grows to it).
    pasid_bits: u8,
    /// ATS on: DTE (and PRE) in the context entry, device-TLB invalidations.
    ats: Option<Ats>,
}

impl<R> Device<R> {
    /// The context entry for the device as it is now.
    fn context(&self, dir: u64) -> ContextEntry {
        ContextEntry {
            pasid_dir: dir,
            pdts: ContextEntry::pdts_for(self.dir_entries),
            rid_pasid: 0,
            pasids: self.pasid_bits > 0,
            device_tlb: self.ats.is_some(),
            page_requests: self.ats.is_some_and(|a| a.page_requests),
        }
    }
}

/// (bus, devfn) of a source id.
fn bus_devfn(sid: u16) -> (u8, u8) {
    let [bus, devfn] = sid.to_be_bytes();
    (bus, devfn)
}

pub struct Tables<H: Hal> {
    hal: H,
    coherency: Coherency,
    /// IOTLB entries of second-level PASIDs are tagged by DID only.
    second_level: bool,
    /// The unit's PASID width.
    pasid_bits: u8,
    root: H::Region,
    /// The empty table blocking entries point at.
    empty: H::Region,
    /// Context tables by (bus, upper half).
    contexts: BTreeMap<(u8, bool), H::Region>,
    devices: BTreeMap<u16, Device<H::Region>>,
}

impl<H: Hal> Tables<H> {
    pub fn new(
        hal: H,
        coherency: Coherency,
        second_level: bool,
        pasid_bits: u8,
    ) -> Result<Self, VtdError> {
        let root = hal.alloc(PAGE_SIZE, PAGE_SIZE, coherency)?;
        hal.note(Note::Holds {
            pa: root.phys(),
            cache: Cache::Config,
        });
        // A page table that stays empty: the default label.
        let empty = hal.alloc(PAGE_SIZE, PAGE_SIZE, coherency)?;
        Ok(Tables {
            hal,
            coherency,
            second_level,
            pasid_bits,
            root,
            empty,
            contexts: BTreeMap::new(),
            devices: BTreeMap::new(),
        })
    }

    /// Memory for context, PASID directory or PASID tables.
    fn alloc(&self, bytes: u64) -> Result<H::Region, VtdError> {
        let r = self.hal.alloc(bytes, PAGE_SIZE, self.coherency)?;
        self.hal.note(Note::Holds {
            pa: r.phys(),
            cache: Cache::Config,
        });
        Ok(r)
    }

    pub fn root(&self) -> u64 {
        self.root.phys().as_u64()
    }

    pub fn empty(&self) -> u64 {
        self.empty.phys().as_u64()
    }

    pub fn contains(&self, sid: u16) -> bool {
        self.devices.contains_key(&sid)
    }

    pub fn pasid_bits_of(&self, sid: u16) -> Option<u8> {
        self.devices.get(&sid).map(|d| d.pasid_bits)
    }

    /// The device's ATS state, if ATS is on.
    pub fn ats(&self, sid: u16) -> Option<Ats> {
        self.devices.get(&sid).and_then(|d| d.ats)
    }

    /// Turns the device TLB (DTE) and page requests (PRE) on or off in
    /// `sid`'s context entry: qword 0 in one write, then the caches that
    /// hold it: the context cache of the device, the PASID cache and IOTLB
    /// of every domain it reaches (VT-d 6.5.3.3, as Linux's
    /// `intel_context_flush_present`), and the device TLB when ATS was on.
    pub fn set_ats(
        &mut self,
        inv: &mut impl Invalidate,
        sid: u16,
        ats: Option<Ats>,
    ) -> Result<(), VtdError> {
        let dev = self
            .devices
            .get_mut(&sid)
            .ok_or(VtdError::NotManaged { sid })?;
        let old = core::mem::replace(&mut dev.ats, ats);
        let lo = dev.context(dev.dir.phys().as_u64()).encode()[0];
        let mut dids: Vec<u16> = dev.present.values().copied().collect();
        dids.sort_unstable();
        dids.dedup();
        self.write_context(sid, &[(0, lo)])?;
        self.hal.barrier();
        let mut descs = alloc::vec![Descriptor::ContextDevice { did: 0, sid }];
        for did in dids {
            descs.push(Descriptor::PasidCacheDomain { did });
            descs.push(Descriptor::IotlbDomain { did });
        }
        if let Some(a) = old {
            descs.push(a.invalidation(sid, None, AtsRange::All));
            descs.push(a.invalidation(sid, Some(None), AtsRange::All));
        }
        inv.invalidate(&descs)
    }

    pub fn primary(&self, sid: u16) -> Option<Primary> {
        self.devices.get(&sid).map(|d| d.primary)
    }

    pub fn set_primary_kind(&mut self, sid: u16, primary: Primary) -> Result<(), VtdError> {
        self.devices
            .get_mut(&sid)
            .ok_or(VtdError::NotManaged { sid })?
            .primary = primary;
        Ok(())
    }

    /// The context table for `sid` (allocated, and linked into the root
    /// table, on first use) and the context entry's offset in it.
    fn context_table(&mut self, sid: u16) -> Result<((u8, bool), u64), VtdError> {
        let (bus, devfn) = bus_devfn(sid);
        let (upper, index) = context_slot(devfn);
        if !self.contexts.contains_key(&(bus, upper)) {
            let t = self.alloc(PAGE_SIZE)?;
            self.contexts.insert((bus, upper), t);
            let half = |upper| self.contexts.get(&(bus, upper)).map(|r| r.phys().as_u64());
            let [lo, hi] = root_entry(half(false), half(true));
            let at = ROOT_ENTRY * u64::from(bus);
            self.root.write_u64(at + 8, hi)?;
            self.root.write_u64(at, lo)?;
            self.hal.barrier();
        }
        Ok(((bus, upper), CONTEXT_ENTRY * index as u64))
    }

    /// Writes qwords `(index, value)` of `sid`'s context entry, in order.
    fn write_context(&mut self, sid: u16, qwords: &[(usize, u64)]) -> Result<(), VtdError> {
        let (key, at) = self.context_table(sid)?;
        let table = self
            .contexts
            .get_mut(&key)
            .ok_or(VtdError::NotManaged { sid })?;
        for &(i, q) in qwords {
            table.write_u64(at + 8 * i as u64, q)?;
        }
        Ok(())
    }

    /// The device's context entry, PASID directory and first PASID table,
    /// on first use. The context entry points at the directory with
    /// RID_PASID 0.
    pub fn device(
        &mut self,
        inv: &mut impl Invalidate,
        sid: u16,
        pasid_bits: u8,
    ) -> Result<(), VtdError> {
        if self.devices.contains_key(&sid) {
            return Ok(());
        }
        let mut dir = self.alloc(PAGE_SIZE)?;
        let table = self.alloc(PAGE_SIZE)?;
        dir.write_u64(0, pasid_dir_entry(table.phys().as_u64()))?;
        let ce = ContextEntry {
            pasid_dir: dir.phys().as_u64(),
            pdts: ContextEntry::pdts_for(FIRST_DIR_ENTRIES),
            rid_pasid: 0,
            pasids: pasid_bits > 0,
            device_tlb: false,
            page_requests: false,
        }
        .encode();
        // Qword 0 (with P) last.
        self.write_context(sid, &[(3, ce[3]), (2, ce[2]), (1, ce[1]), (0, ce[0])])?;
        self.hal.barrier();
        self.devices.insert(
            sid,
            Device {
                dir,
                dir_entries: FIRST_DIR_ENTRIES,
                tables: BTreeMap::from([(0, table)]),
                present: BTreeMap::new(),
                primary: Primary::Blocked,
                pasid_bits,
                ats: None,
            },
        );
        // Not present before: the context cache may hold that.
        inv.invalidate(&[Descriptor::ContextDevice { did: 0, sid }])
    }

    /// Grows the device's PASID directory so that `pasid` fits: a new
    /// directory for the device's whole width, the entries copied, and
    /// the context entry switched in one 64-bit write.
    fn grow_dir(
        &mut self,
        inv: &mut impl Invalidate,
        sid: u16,
        pasid: u32,
    ) -> Result<(), VtdError> {
        let dev = self.devices.get(&sid).ok_or(VtdError::NotManaged { sid })?;
        let (index, _) = pasid_slot(pasid);
        let index = index as u32;
        if index < dev.dir_entries {
            return Ok(());
        }
        let entries = (1u32 << dev.pasid_bits.max(7))
            .div_ceil(64)
            .max(index + 1)
            .next_power_of_two();
        let mut dir = self.alloc(DIR_ENTRY * u64::from(entries))?;
        for (&i, t) in &dev.tables {
            dir.write_u64(DIR_ENTRY * u64::from(i), pasid_dir_entry(t.phys().as_u64()))?;
        }
        // The device's DTE and PRE stay as they are.
        let lo = ContextEntry {
            pdts: ContextEntry::pdts_for(entries),
            ..dev.context(dir.phys().as_u64())
        }
        .encode()[0];
        // The new directory is complete before the unit can find it.
        self.hal.barrier();
        self.write_context(sid, &[(0, lo)])?;
        self.hal.barrier();
        let dev = self
            .devices
            .get_mut(&sid)
            .ok_or(VtdError::NotManaged { sid })?;
        let old = core::mem::replace(&mut dev.dir, dir);
        dev.dir_entries = entries;
        let mut descs = alloc::vec![Descriptor::ContextDevice { did: 0, sid }];
        descs.extend(
            dev.present
                .values()
                .map(|&did| Descriptor::PasidCacheDomain { did }),
        );
        if let Err(e) = inv.invalidate(&descs) {
            // The unit may still walk the old directory: keep it.
            core::mem::forget(old);
            return Err(e);
        }
        Ok(())
    }

    /// The PASID table (by directory index) and the entry's offset in it,
    /// the table allocated (and linked into the directory) on first use.
    fn entry_slot(
        &mut self,
        inv: &mut impl Invalidate,
        sid: u16,
        pasid: u32,
    ) -> Result<(u32, u64), VtdError> {
        self.grow_dir(inv, sid, pasid)?;
        let (dir_index, index) = pasid_slot(pasid);
        let dir_index = dir_index as u32;
        if !self
            .devices
            .get(&sid)
            .ok_or(VtdError::NotManaged { sid })?
            .tables
            .contains_key(&dir_index)
        {
            let t = self.alloc(PAGE_SIZE)?;
            let entry = pasid_dir_entry(t.phys().as_u64());
            let dev = self
                .devices
                .get_mut(&sid)
                .ok_or(VtdError::NotManaged { sid })?;
            dev.tables.insert(dir_index, t);
            dev.dir.write_u64(DIR_ENTRY * u64::from(dir_index), entry)?;
            self.hal.barrier();
        }
        Ok((dir_index, PASID_ENTRY * index as u64))
    }

    fn write_entry(
        &mut self,
        sid: u16,
        table: u32,
        at: u64,
        qwords: impl IntoIterator<Item = (usize, u64)>,
    ) -> Result<(), VtdError> {
        let t = self
            .devices
            .get_mut(&sid)
            .and_then(|d| d.tables.get_mut(&table))
            .ok_or(VtdError::NotManaged { sid })?;
        for (i, q) in qwords {
            t.write_u64(at + 8 * i as u64, q)?;
        }
        Ok(())
    }

    fn check_pasid(&self, pasid: u32) -> Result<(), VtdError> {
        if u64::from(pasid) >> self.pasid_bits != 0 {
            return Err(VtdError::PasidTooWide {
                pasid,
                bits: self.pasid_bits,
            });
        }
        Ok(())
    }

    /// Writes (or, with `None`, clears) PASID entry `pasid` of `sid`
    /// through the core's entry writer: no fetch of the unit can combine
    /// qwords of the old entry and the new. Each of its syncs drops what
    /// the unit caches of the PASID: the old entry's PASID-cache and
    /// IOTLB entries (while one was present), the new one's PASID-cache
    /// entry.
    pub fn set_entry(
        &mut self,
        inv: &mut impl Invalidate,
        sid: u16,
        pasid: u32,
        entry: Option<PasidEntry>,
    ) -> Result<(), VtdError> {
        self.check_pasid(pasid)?;
        let dev = self.devices.get(&sid).ok_or(VtdError::NotManaged { sid })?;
        let old = dev.present.get(&pasid).copied();
        let ats = dev.ats;
        let (table, at) = match entry {
            Some(_) => self.entry_slot(inv, sid, pasid)?,
            None => {
                // Nothing to clear where no table was ever allocated.
                let (dir_index, index) = pasid_slot(pasid);
                if !dev.tables.contains_key(&(dir_index as u32)) {
                    return Ok(());
                }
                (dir_index as u32, PASID_ENTRY * index as u64)
            }
        };
        let mut current = [0u64; 8];
        for (i, w) in current.iter_mut().enumerate() {
            *w = self.read_entry(sid, table, at + 8 * i as u64)?;
        }
        let target = entry.map_or([0; 8], |e| e.encode());
        let mut flush = Vec::new();
        if let Some(did) = old {
            flush.extend(pasid_flush(did, pasid, self.second_level));
            // After the IOTLB: what the device TLB holds of the old entry.
            if let Some(a) = ats {
                flush.push(a.entry_invalidation(sid, pasid));
            }
        }
        if let Some(e) = entry {
            flush.push(Descriptor::PasidCachePasid { did: e.did, pasid });
        }
        let result = write_entry::<8, PasidEntry, _>(
            &mut LivePasidEntry {
                tables: self,
                inv,
                sid,
                table,
                at,
                flush: &flush,
            },
            current,
            &target,
        );
        // What memory holds now is what the unit may use, whatever the
        // invalidations said.
        let now = self.read_entry(sid, table, at)?;
        if let Some(d) = self.devices.get_mut(&sid) {
            match entry {
                Some(e) if now == target[0] => {
                    d.present.insert(pasid, e.did);
                }
                _ if now & 1 == 0 => {
                    d.present.remove(&pasid);
                }
                _ => {}
            }
        }
        result
    }

    fn read_entry(&self, sid: u16, table: u32, at: u64) -> Result<u64, VtdError> {
        let t = self
            .devices
            .get(&sid)
            .and_then(|d| d.tables.get(&table))
            .ok_or(VtdError::NotManaged { sid })?;
        Ok(t.read_u64(at)?)
    }

    /// Drops what the unit caches of PASID `pasid` under `did`.
    pub fn flush_pasid(
        &self,
        inv: &mut impl Invalidate,
        did: u16,
        pasid: u32,
    ) -> Result<(), VtdError> {
        inv.invalidate(&pasid_flush(did, pasid, self.second_level))
    }

    /// The device's context entry goes, and its PASID structures are
    /// freed once the unit has forgotten them.
    pub fn release(&mut self, inv: &mut impl Invalidate, sid: u16) -> Result<(), VtdError> {
        let Some(dev) = self.devices.remove(&sid) else {
            return Ok(());
        };
        self.write_context(sid, &[(0, 0)])?;
        self.hal.barrier();
        let mut descs = alloc::vec![Descriptor::ContextDevice { did: 0, sid }];
        for (&pasid, &did) in &dev.present {
            descs.push(Descriptor::PasidCachePasid { did, pasid });
            descs.push(Descriptor::PasidIotlbAll { did, pasid });
        }
        descs.push(Descriptor::IotlbGlobal);
        if let Some(a) = dev.ats {
            descs.push(a.invalidation(sid, None, AtsRange::All));
            descs.push(a.invalidation(sid, Some(None), AtsRange::All));
        }
        if let Err(e) = inv.invalidate(&descs) {
            // The unit may still walk them.
            core::mem::forget(dev);
            return Err(e);
        }
        Ok(())
    }

    /// Entries of `sid`'s PASID directory and PASID tables allocated.
    pub fn pasid_directory(&self, sid: u16) -> Option<(u32, usize)> {
        self.devices
            .get(&sid)
            .map(|d| (d.dir_entries, d.tables.len()))
    }

    /// Bytes of PASID directories and tables held.
    pub fn pasid_table_bytes(&self) -> u64 {
        self.devices
            .values()
            .map(|d| d.dir.len() + d.tables.values().map(|t| t.len()).sum::<u64>())
            .sum()
    }

    /// Where PASID entry `pasid` of `sid` lives, if its table exists.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn entry_address(&self, sid: u16, pasid: u32) -> Option<u64> {
        let dev = self.devices.get(&sid)?;
        let (dir_index, index) = pasid_slot(pasid);
        let t = dev.tables.get(&(dir_index as u32))?;
        Some(t.phys().as_u64() + PASID_ENTRY * index as u64)
    }

    /// Writes `words` at `pa`, inside one of the PASID tables, with no
    /// invalidation.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn poke(&mut self, pa: u64, words: &[u64]) -> Result<(), VtdError> {
        let table = self
            .devices
            .values_mut()
            .flat_map(|d| d.tables.values_mut())
            .find(|t| (t.phys().as_u64()..t.phys().as_u64() + t.len()).contains(&pa))
            .ok_or(VtdError::NotOurs { pa })?;
        let off = pa - table.phys().as_u64();
        // A test's own breakage, not the driver's: unseen by the checking mode.
        self.hal.note(Note::Uncached(true));
        let written = words
            .iter()
            .enumerate()
            .try_for_each(|(i, &w)| table.write_u64(off + 8 * i as u64, w));
        self.hal.note(Note::Uncached(false));
        written?;
        self.hal.barrier();
        Ok(())
    }
}
