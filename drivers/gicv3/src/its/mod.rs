//! GICv3 Interrupt Translation Service (ITS) and the LPI tables the
//! redistributors read.
//!
//! The ITS turns a (DeviceID, EventID) pair, written by a device to
//! GITS_TRANSLATER, into an LPI delivered to the redistributor of a
//! collection. Software drives it through an in-memory command queue
//! (GITS_CBASER/CWRITER/CREADR) and gives it memory for its device and
//! collection tables (GITS_BASER<n>) and for one interrupt translation table
//! (ITT) per device.
//!
//! Memory comes from the caller through [`ItsMemory`]; the driver keeps
//! physical addresses (what the hardware sees) and virtual addresses (what
//! the CPU writes through) apart and never invents either.
//!
//! Cache maintenance: every table and the command queue are programmed
//! inner-shareable, write-back cacheable. When an implementation only
//! accepts non-shareable for a table, the driver falls back to
//! non-cacheable attributes for it and reports `coherent == false`
//! ([`Its::coherent`]). Where GITS_CBASER or a GITS_BASER<n> reads back
//! non-shareable or non-cacheable ([`needs_clean`]), the ITS reads memory
//! past the CPU's caches: as Linux's `its_flush_cmd` and
//! `gic_flush_dcache_to_poc`, the driver then cleans the table (and every
//! ITT) to the point of coherency once written, and each command after it
//! is written, with the clean the kernel hands it
//! ([`Its::set_cache_clean`]; the CPU's cache instructions are arch code).
//!
//! References: Arm IHI0069 (GICv3/v4 architecture specification), chapter 5
//! (the ITS: command formats, GITS_* registers) and chapter 12 (register
//! descriptions).

use core::ptr::NonNull;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::LocalRegisterCopy;

mod command;
mod lpi;
mod queue;
mod regs;
mod tables;

pub use command::{CommandLimits, ItsCommand, RdBase};
pub use lpi::{
    lpi_config_byte, lpi_config_table_bytes, lpi_pending_table_bytes, pendbaser_value,
    propbaser_value, LpiConfigTable, DEFAULT_LPI_PRIORITY, LPI_BASE, LPI_CONFIG_ALIGN,
    LPI_PENDING_ALIGN,
};
pub use queue::{cbaser_value, needs_clean, CommandRing, CMD_BYTES, DEFAULT_QUEUE_BYTES};
pub use regs::{GitsRegs, ItsInfo, TRANSLATER_OFFSET, TRANSLATION_PAGE_OFFSET};
pub use tables::{
    baser_value, itt_layout, negotiate_page_size, table_pages, IttLayout, PageSize, ITT_ALIGN,
};

use command::check_bits;
use regs::{GITS_BASER, GITS_CBASER, GITS_CREADR, GITS_CTLR, GITS_CWRITER, SH_NON_SHAREABLE};

/// Collections whose target the driver remembers, for the trailing SYNC.
const TRACKED_COLLECTIONS: usize = 64;

/// Polls before an ITS wait is declared stuck.
const SPIN_LIMIT: u32 = 1_000_000;

/// Cleans `bytes` of memory at CPU address `virt` to the point of
/// coherency and waits for it to complete (the kernel's arch code).
pub type CacheClean = fn(virt: *const u8, bytes: usize);

fn no_clean(_: *const u8, _: usize) {}

/// Memory for ITS and LPI tables, supplied by the kernel.
pub trait ItsMemory {
    /// `bytes` of zeroed memory aligned to `align` (a power of two), as
    /// (physical address for the GIC, virtual address for the CPU). The
    /// memory is never returned.
    fn alloc_zeroed(&mut self, bytes: usize, align: usize) -> Option<(u64, *mut u8)>;
}

/// Which identifier an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    Device,
    Event,
    /// A number of events for MAPD (0, or more than EventID bits allow).
    EventCount,
    Lpi,
    Collection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItsError {
    /// GITS_TYPER.Physical is clear.
    NoPhysicalLpis,
    /// GITS_CTLR.Quiescent did not become set after disabling.
    NotQuiescent,
    /// The ITS did not consume `cmd` in time.
    CommandTimeout { cmd: &'static str },
    /// GITS_CREADR.Stalled: the ITS stopped at `cmd`.
    QueueStalled { cmd: &'static str },
    /// GITS_BASER<n> did not keep the value written (no page size accepted,
    /// address or valid bit dropped).
    BaserRejected { n: usize },
    /// GITS_CBASER did not keep the value written.
    CbaserRejected,
    /// No GITS_BASER<n> describes a device table.
    NoDeviceTable,
    /// No collection table and no hardware collections.
    NoCollections,
    /// The caller's allocator returned nothing.
    NoMemory,
    /// An identifier outside what the ITS (or this driver's tables) accept.
    BadId { kind: IdKind, id: u64 },
    /// A target redistributor of the wrong form for GITS_TYPER.PTA, or an
    /// address that is not 64 KiB aligned.
    BadTarget,
    /// An address without the alignment a command or register requires.
    Misaligned { addr: u64, align: u64 },
    /// `init` has not completed.
    NotInitialised,
}

/// Makes prior normal-memory writes (tables, queue entries) visible to the
/// GIC before a following MMIO write.
pub(crate) fn write_barrier() {
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a barrier; it only orders memory accesses.
    unsafe {
        core::arch::asm!("dsb st", options(nostack, preserves_flags))
    };
    #[cfg(not(target_arch = "aarch64"))]
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

/// Sizing choices for [`Its::init_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItsConfig {
    /// Command queue bytes (multiple of 4 KiB, at most 1 MiB).
    pub queue_bytes: usize,
    /// Upper bound on DeviceID bits for the flat device table.
    pub max_device_bits: u32,
    /// Collections to provide (typically the number of CPUs).
    pub collections: u32,
    /// INTID bits of the LPI space (GICR_PROPBASER.IDbits + 1), for checks.
    pub lpi_id_bits: u32,
}

impl Default for ItsConfig {
    fn default() -> Self {
        ItsConfig {
            queue_bytes: DEFAULT_QUEUE_BYTES,
            max_device_bits: 16,
            collections: 64,
            lpi_id_bits: 16,
        }
    }
}

/// A device mapped with MAPD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItsDevice {
    pub device_id: u32,
    pub itt_phys: u64,
    /// The device may use EventIDs below `1 << event_bits`.
    pub event_bits: u8,
}

struct Ready {
    ring: CommandRing,
    queue: NonNull<u8>,
    limits: CommandLimits,
    coherent: bool,
    /// The queue is read past the CPU's caches: commands are cleaned.
    clean_queue: bool,
    /// Target of each collection mapped so far (for the trailing SYNC).
    targets: [Option<RdBase>; TRACKED_COLLECTIONS],
    default_target: Option<RdBase>,
}

/// One ITS.
pub struct Its {
    regs: NonNull<GitsRegs>,
    phys_base: u64,
    info: ItsInfo,
    ready: Option<Ready>,
    clean: CacheClean,
}

// SAFETY: MMIO and queue memory owned by this value; callers serialise access.
unsafe impl Send for Its {}

impl Its {
    /// Binds the ITS whose 128 KiB frame is mapped at virtual `base` and
    /// lives at physical `phys_base`, and reads GITS_TYPER/IIDR.
    ///
    /// # Safety
    /// `base` must be the mapped address of a GICv3 ITS frame, used by no
    /// one else.
    pub unsafe fn new(base: usize, phys_base: u64) -> Self {
        let mut its = Its {
            // SAFETY: the caller guarantees base is a valid MMIO address.
            regs: unsafe { NonNull::new_unchecked(base as *mut GitsRegs) },
            phys_base,
            info: ItsInfo::from_regs(0, 0),
            ready: None,
            clean: no_clean,
        };
        its.info = its.probe();
        its
    }

    fn regs(&self) -> &GitsRegs {
        // SAFETY: `new`'s contract.
        unsafe { self.regs.as_ref() }
    }

    /// Reads GITS_TYPER and GITS_IIDR.
    pub fn probe(&self) -> ItsInfo {
        let r = self.regs();
        ItsInfo::from_regs(r.typer.get(), r.iidr.get())
    }

    pub fn info(&self) -> ItsInfo {
        self.info
    }

    /// Physical address of GITS_TRANSLATER: the MSI address devices write
    /// their EventID to.
    pub fn translater_phys(&self) -> u64 {
        self.phys_base + TRANSLATER_OFFSET
    }

    /// Physical address of the 64 KiB translation page holding
    /// GITS_TRANSLATER (what an IOMMU domain must map for MSIs).
    pub fn doorbell_page_phys(&self) -> u64 {
        self.phys_base + TRANSLATION_PAGE_OFFSET
    }

    /// Writes `event_id` to GITS_TRANSLATER from the CPU. Which DeviceID the
    /// ITS attributes it to is implementation defined (QEMU: requester id 0);
    /// useful only for self-tests.
    pub fn write_translater(&self, event_id: u32) {
        self.regs().translater.set(event_id);
    }

    pub fn is_enabled(&self) -> bool {
        self.regs().ctlr.is_set(GITS_CTLR::ENABLED)
    }

    /// Whether every table is programmed inner-shareable write-back (else
    /// the implementation forced non-shareable; see the module notes).
    pub fn coherent(&self) -> Option<bool> {
        self.ready.as_ref().map(|r| r.coherent)
    }

    /// How memory the ITS reads past the CPU's caches is cleaned; set
    /// before `init` (by default nothing is cleaned).
    pub fn set_cache_clean(&mut self, clean: CacheClean) {
        self.clean = clean;
    }

    /// Limits commands are checked against (after `init`).
    pub fn limits(&self) -> Option<CommandLimits> {
        self.ready.as_ref().map(|r| r.limits)
    }

    /// The command target for a redistributor, per GITS_TYPER.PTA.
    pub fn rdbase_for(&self, rd_phys: u64, processor_number: u16) -> RdBase {
        if self.info.pta {
            RdBase::Address(rd_phys)
        } else {
            RdBase::Processor(processor_number)
        }
    }

    /// [`Self::init_with`] with [`ItsConfig::default`].
    pub fn init(&mut self, mem: &mut dyn ItsMemory) -> Result<ItsInfo, ItsError> {
        self.init_with(mem, &ItsConfig::default())
    }

    /// Disables the ITS, waits for Quiescent, installs the command queue and
    /// flat device and collection tables, and enables it.
    pub fn init_with(
        &mut self,
        mem: &mut dyn ItsMemory,
        cfg: &ItsConfig,
    ) -> Result<ItsInfo, ItsError> {
        self.ready = None;
        let info = self.probe();
        self.info = info;
        if !info.physical {
            return Err(ItsError::NoPhysicalLpis);
        }
        let r = self.regs();
        r.ctlr.modify(GITS_CTLR::ENABLED::CLEAR);
        if !spin(|| r.ctlr.is_set(GITS_CTLR::QUIESCENT)) {
            return Err(ItsError::NotQuiescent);
        }

        // Command queue.
        let qbytes = cfg.queue_bytes;
        let (qphys, qvirt) = mem
            .alloc_zeroed(qbytes, 0x1_0000)
            .ok_or(ItsError::NoMemory)?;
        let queue = NonNull::new(qvirt).ok_or(ItsError::NoMemory)?;
        let ring = CommandRing::new(qphys, qbytes).ok_or(ItsError::CbaserRejected)?;
        if !qphys.is_multiple_of(0x1000) {
            return Err(ItsError::Misaligned {
                addr: qphys,
                align: 0x1000,
            });
        }
        let mut coherent = true;
        r.cbaser.set(cbaser_value(qphys, qbytes, true));
        if r.cbaser.read(GITS_CBASER::SHAREABILITY) == SH_NON_SHAREABLE {
            coherent = false;
            r.cbaser.set(cbaser_value(qphys, qbytes, false));
        }
        let cb = r.cbaser.extract();
        if !cb.is_set(GITS_CBASER::VALID) || cb.read(GITS_CBASER::PHYSICAL_ADDRESS) != qphys >> 12 {
            return Err(ItsError::CbaserRejected);
        }
        let clean_queue = needs_clean(cb.get());
        if clean_queue {
            coherent = false;
            (self.clean)(qvirt, qbytes);
        }
        r.cwriter.set(0);

        // Device and collection tables.
        let mut device_bits = None;
        let mut collection_table = false;
        let cid_limit = 1u64 << info.collection_id_bits.min(16);
        let collections = (cfg.collections as u64).min(cid_limit).max(1);
        for n in 0..r.baser.len() {
            let cur = r.baser[n].extract();
            let entry_size = cur.read(GITS_BASER::ENTRY_SIZE) as usize + 1;
            match cur.read_as_enum(GITS_BASER::TYPE) {
                Some(GITS_BASER::TYPE::Value::Devices) => {
                    let want = info.device_id_bits.min(cfg.max_device_bits).min(32);
                    let (bits, c) = self.setup_baser(n, mem, entry_size, |page| {
                        // The largest DeviceID width a flat table of at most
                        // 256 pages can cover.
                        (1..=want)
                            .rev()
                            .find(|&b| table_pages(1 << b, entry_size, page).is_some())
                            .map(|b| (b, 1u64 << b))
                    })?;
                    coherent &= c;
                    device_bits = Some(bits);
                }
                Some(GITS_BASER::TYPE::Value::Collections) => {
                    let (_, c) = self.setup_baser(n, mem, entry_size, |page| {
                        table_pages(collections, entry_size, page).map(|_| (0, collections))
                    })?;
                    coherent &= c;
                    collection_table = true;
                }
                // vPE tables (GICv4) and unimplemented registers stay invalid.
                _ => r.baser[n].modify(GITS_BASER::VALID::CLEAR),
            }
        }
        let device_id_bits = device_bits.ok_or(ItsError::NoDeviceTable)?;
        let collections = if collection_table {
            collections as u32
        } else if info.hcc > 0 {
            info.hcc.min(collections as u32)
        } else {
            return Err(ItsError::NoCollections);
        };

        write_barrier();
        r.ctlr.modify(GITS_CTLR::ENABLED::SET);
        self.ready = Some(Ready {
            ring,
            queue,
            limits: CommandLimits {
                device_id_bits,
                event_id_bits: info.event_id_bits,
                collections,
                lpi_id_bits: cfg.lpi_id_bits,
                pta: info.pta,
            },
            coherent,
            clean_queue,
            targets: [None; TRACKED_COLLECTIONS],
            default_target: None,
        });
        Ok(info)
    }

    /// Programs GITS_BASER<n> with a flat table. `size_for(page)` gives
    /// (ID bits, entries) of a table that fits with that page size, or
    /// `None` if none does. Returns (ID bits, coherent).
    fn setup_baser(
        &self,
        n: usize,
        mem: &mut dyn ItsMemory,
        entry_size: usize,
        size_for: impl Fn(PageSize) -> Option<(u32, u64)>,
    ) -> Result<(u32, bool), ItsError> {
        let reg = &self.regs().baser[n];
        let cur = reg.get();
        let page = negotiate_page_size(|p| {
            reg.set(baser_value(cur, 0, p, 1, true, false));
            PageSize::from_field(reg.read(GITS_BASER::PAGE_SIZE))
        })
        .ok_or(ItsError::BaserRejected { n })?;
        let (bits, entries) = size_for(page).ok_or(ItsError::BaserRejected { n })?;
        let pages = table_pages(entries, entry_size, page).ok_or(ItsError::BaserRejected { n })?;
        let bytes = pages * page.bytes();
        let (phys, virt) = mem
            .alloc_zeroed(bytes, page.bytes())
            .ok_or(ItsError::NoMemory)?;
        if !phys.is_multiple_of(page.bytes() as u64) {
            return Err(ItsError::Misaligned {
                addr: phys,
                align: page.bytes() as u64,
            });
        }
        if page != PageSize::Size64K && phys >> 48 != 0 {
            return Err(ItsError::BaserRejected { n });
        }
        let mut coherent = true;
        let want = baser_value(cur, phys, page, pages, true, true);
        reg.set(want);
        if reg.read(GITS_BASER::SHAREABILITY) == SH_NON_SHAREABLE {
            coherent = false;
            reg.set(baser_value(cur, phys, page, pages, false, true));
        }
        let got = reg.extract();
        let want = LocalRegisterCopy::<u64, GITS_BASER::Register>::new(want);
        let same = |f| got.read(f) == want.read(f);
        if !same(GITS_BASER::VALID)
            || !same(GITS_BASER::PHYSICAL_ADDRESS)
            || !same(GITS_BASER::PAGE_SIZE)
            || !same(GITS_BASER::SIZE)
        {
            return Err(ItsError::BaserRejected { n });
        }
        if needs_clean(got.get()) {
            coherent = false;
            (self.clean)(virt, bytes);
        }
        Ok((bits, coherent))
    }

    /// Queues `cmds` followed by a SYNC and waits (bounded) until the ITS
    /// has consumed all of them (GITS_CREADR == GITS_CWRITER). Every command
    /// is checked first; nothing is queued if one is out of range.
    ///
    /// The SYNC goes to the target of the last collection the batch names
    /// (as mapped by an earlier MAPC), else to the first collection target
    /// ever mapped, else to processor 0 when GITS_TYPER.PTA is 0. With PTA
    /// set and no collection mapped yet there is no valid target, and the
    /// batch ends without SYNC (waiting for CREADR still applies).
    ///
    /// When the ring is full the queued part is published and the driver
    /// waits (bounded) for room. A stalled queue (GITS_CREADR.Stalled) or a
    /// timeout names the command the ITS stopped at; the queue is then left
    /// as is (no GITS_CWRITER.Retry), so later submits report it again.
    pub fn submit(&mut self, cmds: &[ItsCommand]) -> Result<(), ItsError> {
        let regs = self.regs;
        let clean = self.clean;
        // SAFETY: `new`'s contract; the borrow does not alias `self.ready`.
        let r = unsafe { regs.as_ref() };
        let st = self.ready.as_mut().ok_or(ItsError::NotInitialised)?;
        for c in cmds {
            c.check(&st.limits)?;
        }
        // Remember collection targets; SYNC the last collection touched.
        let mut sync_target = None;
        for c in cmds {
            if let ItsCommand::Mapc {
                collection,
                target,
                valid,
            } = *c
            {
                sync_target = Some(target);
                if let Some(t) = st.targets.get_mut(collection as usize) {
                    *t = valid.then_some(target);
                }
                if valid {
                    st.default_target.get_or_insert(target);
                }
            } else if let Some(Some(t)) =
                c.collection().and_then(|col| st.targets.get(col as usize))
            {
                sync_target = Some(*t);
            }
        }
        let sync_target = sync_target.or(st.default_target).or(if st.limits.pta {
            None
        } else {
            Some(RdBase::Processor(0))
        });
        let sync = sync_target.map(|target| ItsCommand::Sync { target });
        let total = cmds.len() + sync.is_some() as usize;
        let name = |written: usize, pending: usize| -> &'static str {
            match written.checked_sub(pending) {
                Some(i) if i < cmds.len() => cmds[i].name(),
                Some(_) => "SYNC",
                None => "earlier command",
            }
        };
        let read = || {
            let v = r.creadr.extract();
            (
                v.read(GITS_CREADR::OFFSET) as usize * CMD_BYTES,
                v.is_set(GITS_CREADR::STALLED),
            )
        };
        for i in 0..total {
            let cmd = match (cmds.get(i), sync) {
                (Some(c), _) => *c,
                (None, Some(sync)) => sync,
                (None, None) => break,
            };
            let mut spins = 0;
            let slot = loop {
                let (rd, stalled) = read();
                if stalled {
                    return Err(ItsError::QueueStalled {
                        cmd: name(i, st.ring.pending(rd)),
                    });
                }
                if let Some(slot) = st.ring.push(rd) {
                    break slot;
                }
                // Full: let the ITS see what is queued, then wait for room.
                if spins == 0 {
                    write_barrier();
                    r.cwriter.write(
                        GITS_CWRITER::OFFSET.val((st.ring.write_offset() / CMD_BYTES) as u64),
                    );
                }
                spins += 1;
                if spins > SPIN_LIMIT {
                    return Err(ItsError::CommandTimeout {
                        cmd: name(i, st.ring.pending(rd)),
                    });
                }
                core::hint::spin_loop();
            };
            let words = cmd.encode();
            for (k, w) in words.iter().enumerate() {
                // SAFETY: slot + 32 <= queue size; the queue memory is ours
                // and 64 KiB aligned, so each u64 is aligned.
                unsafe {
                    st.queue
                        .as_ptr()
                        .add(slot)
                        .cast::<u64>()
                        .add(k)
                        .write_volatile(*w)
                };
            }
            if st.clean_queue {
                // SAFETY: the slot is inside the queue (as above).
                clean(unsafe { st.queue.as_ptr().add(slot) }, CMD_BYTES);
            }
        }
        write_barrier();
        let write = st.ring.write_offset();
        r.cwriter
            .write(GITS_CWRITER::OFFSET.val((write / CMD_BYTES) as u64));
        let mut last = 0;
        for _ in 0..SPIN_LIMIT {
            let (rd, stalled) = read();
            if stalled {
                return Err(ItsError::QueueStalled {
                    cmd: name(total, st.ring.pending(rd)),
                });
            }
            if rd == write {
                return Ok(());
            }
            last = rd;
            core::hint::spin_loop();
        }
        Err(ItsError::CommandTimeout {
            cmd: name(total, st.ring.pending(last)),
        })
    }

    /// MAPC: route `collection` to `target` (see [`Self::rdbase_for`]).
    pub fn map_collection(&mut self, collection: u16, target: RdBase) -> Result<(), ItsError> {
        self.submit(&[
            ItsCommand::Mapc {
                collection,
                target,
                valid: true,
            },
            ItsCommand::Invall { collection },
        ])
    }

    /// Allocates an ITT for `event_count` events and maps `device_id` to it.
    pub fn map_device(
        &mut self,
        device_id: u32,
        event_count: u32,
        mem: &mut dyn ItsMemory,
    ) -> Result<ItsDevice, ItsError> {
        let limits = self.limits().ok_or(ItsError::NotInitialised)?;
        check_bits(IdKind::Device, device_id as u64, limits.device_id_bits)?;
        let layout = itt_layout(event_count, self.info.itt_entry_size, limits.event_id_bits)?;
        let (itt_phys, itt_virt) = mem
            .alloc_zeroed(layout.bytes, ITT_ALIGN)
            .ok_or(ItsError::NoMemory)?;
        if self.coherent() == Some(false) {
            // The ITS may read the zeroed ITT past the CPU's caches.
            (self.clean)(itt_virt, layout.bytes);
        }
        self.submit(&[ItsCommand::Mapd {
            device_id,
            itt_addr: itt_phys,
            size_bits: layout.event_bits,
            valid: true,
        }])?;
        Ok(ItsDevice {
            device_id,
            itt_phys,
            event_bits: layout.event_bits,
        })
    }

    /// MAPD with Valid clear. The ITT memory is not reclaimed.
    pub fn unmap_device(&mut self, device_id: u32) -> Result<(), ItsError> {
        self.submit(&[ItsCommand::Mapd {
            device_id,
            itt_addr: 0,
            size_bits: 0,
            valid: false,
        }])
    }

    /// MAPTI then INV: `device_id`'s `event_id` raises `lpi` on
    /// `collection`'s redistributor, with the configuration table's
    /// current byte for `lpi`.
    pub fn map_interrupt(
        &mut self,
        device_id: u32,
        event_id: u32,
        lpi: u32,
        collection: u16,
    ) -> Result<(), ItsError> {
        self.submit(&[
            ItsCommand::Mapti {
                device_id,
                event_id,
                intid: lpi,
                collection,
            },
            ItsCommand::Inv {
                device_id,
                event_id,
            },
        ])
    }

    /// DISCARD: forget `device_id`'s `event_id` mapping and pending state.
    pub fn unmap_interrupt(&mut self, device_id: u32, event_id: u32) -> Result<(), ItsError> {
        self.submit(&[ItsCommand::Discard {
            device_id,
            event_id,
        }])
    }

    /// Changes `lpi`'s configuration byte and has the ITS invalidate the
    /// cached copy through the event that maps to it.
    pub fn set_lpi_config(
        &mut self,
        table: &mut LpiConfigTable,
        device_id: u32,
        event_id: u32,
        lpi: u32,
        priority: u8,
        enabled: bool,
    ) -> Result<(), ItsError> {
        table
            .set(lpi, priority, enabled)
            .map_err(|_| ItsError::BadId {
                kind: IdKind::Lpi,
                id: lpi as u64,
            })?;
        self.submit(&[ItsCommand::Inv {
            device_id,
            event_id,
        }])
    }
}

/// Bounded poll.
fn spin(mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..SPIN_LIMIT {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    false
}

#[cfg(test)]
pub(crate) mod tests;
