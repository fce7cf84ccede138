//! The SMMUv3 driver: the core's `IommuHw` for one SMMU.
//!
//! - A two-level (or linear) stream table, the command and event queues,
//!   and the wired interrupts the IORT names.
//! - Domains on stage 1 (CD tables that grow with the PASIDs in use: CD 0
//!   is the primary domain, substreams 1.. the aux domains), on stage 2,
//!   or nested (stage 1 over an identity stage 2).
//! - Invalidation from the core's gather: ranged TLBI per range and one
//!   CMD_SYNC per batch; events decoded into the core's faults.
//!
//! Streams the core does not manage are given bypass STEs by the caller,
//! so enabling the SMMU leaves other devices' DMA alone; `disable` turns
//! translation off again, and GBPA then aborts every transaction (it is
//! set to abort before SMMUEN is set or cleared: off is never bypass). `docs/smmuv3.md`
//! has the details.
use crate::cd::{l1_descriptor as cd_l1_descriptor, Cd, CdConfig};
use crate::cmd::{tlbi_nh_va_range, tlbi_s2_ipa_range, Command};
use crate::cmdq::{CmdqError, CmdqHw, CommandQueue, Rejected};
use crate::event::{Event, EventKind};
use crate::idr::{Features, StreamTableLevels, Unusable};
use crate::probe::Smmu;
use crate::queue::Queue;
use crate::regs::{cr1_for, strtab_base_for, CR0, CR2, GERROR, IRQ_CTRL, STRTAB_BASE_CFG};
use crate::ste::{l1_descriptor, CdFmt, CdTable, S1Dss, Stage2, Ste};
use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;
use core::fmt;
use kernel::addr::{Iova, PhysAddr, PhysRange};
use kernel::hal::{Coherency, DmaRegion, Hal, HalError, HalTables, RegionSet};
use kernel::iommu::check::{Cache, Note};
use kernel::iommu::domain::{
    Attachment, DeviceId, DomainKind, DomainRef, Fault, FaultReason, IommuHw, Pasid, TableFormat,
};
use kernel::iommu::entry::{write_entry, EntryFormat, EntryTarget};
use kernel::iommu::pgtable::arm::{ArmLpae, Stage, MAIR};
use kernel::iommu::pgtable::{Gather, PageTable, PgError, Prot, TableMemory, PAGE_SIZE};
use tock_registers::interfaces::{Readable, Writeable};

pub mod control;
pub mod errata;
pub mod nested;

pub use nested::{GuestS1, StagedFault};

/// StreamIDs per level-2 stream table (one PCI bus).
const SPLIT: u8 = 8;
const CMDQ_LOG2: u8 = 8;
const EVTQ_LOG2: u8 = 7;
/// The level-1 stream table at most 1 MiB (2^17 descriptors, as Linux):
/// StreamIDs beyond what it covers are refused, not a table of 128 MiB.
const MAX_L1_LOG2: u8 = 17;
/// A linear stream table at most 2^16 STEs (4 MiB).
const MAX_LINEAR_LOG2: u8 = 16;

/// The smallest command queue: a batch of two commands and its CMD_SYNC
/// (the reset's CFGI_ALL and TLBI_NSNH_ALL) must fit.
const MIN_CMDQ_LOG2: u8 = 2;

/// What the base registers hold at probe, and where the SMMU's registers
/// are: on an SMMU with IDR1.TABLES_PRESET or QUEUES_PRESET they name the
/// fixed stream table and queues (offsets from the SMMU with IDR1.REL).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct BaseRegisters {
    smmu: u64,
    strtab_base: u64,
    strtab_base_cfg: u32,
    cmdq_base: u64,
    eventq_base: u64,
}

/// The sizes the driver uses on an SMMU, and where its tables and queues
/// are fixed, from its ID and base registers: a pure function, so what an
/// SMMU with other registers would get is host-tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    linear: bool,
    /// StreamID bits per level-2 table (two-level tables).
    split: u8,
    /// StreamID bits the stream table covers (at most IDR1.SIDSIZE).
    sid_bits: u8,
    strtab_bytes: u64,
    /// The preset stream table (or level-1 table); else one is allocated.
    strtab_at: Option<u64>,
    /// Queue sizes, at most what IDR1.CMDQS / EVENTQS allow, or preset.
    cmdq_log2: u8,
    evtq_log2: u8,
    /// The preset queues; else they are allocated.
    cmdq_at: Option<u64>,
    evtq_at: Option<u64>,
}

fn plan(
    f: &Features,
    format: Option<StreamTableLevels>,
    regs: &BaseRegisters,
) -> Result<Plan, SmmuError> {
    let at = |addr: u64| {
        if f.preset_relative {
            regs.smmu + addr
        } else {
            addr
        }
    };
    let (linear, split, sid_bits, strtab_bytes, strtab_at) = if f.tables_preset {
        let cfg = u64::from(regs.strtab_base_cfg);
        let bad = SmmuError::Preset {
            register: "STRTAB_BASE_CFG",
            value: cfg,
        };
        let linear = match crate::bits(cfg, 17, 16) {
            0 => true,
            1 if f.stream_table == StreamTableLevels::TwoLevel => false,
            _ => return Err(bad),
        };
        if format.is_some_and(|want| (want == StreamTableLevels::Linear) != linear) {
            return Err(bad);
        }
        // A LOG2SIZE beyond SIDSIZE means SIDSIZE.
        let bits = (crate::bits(cfg, 5, 0) as u8).min(f.sid_bits);
        let split = crate::bits(cfg, 10, 6) as u8;
        let addr = at(crate::bits(regs.strtab_base, 51, 6) << 6);
        if linear {
            (true, 0, bits, 64u64 << bits, Some(addr))
        } else if matches!(split, 6 | 8 | 10) {
            let l1 = 8u64 << bits.saturating_sub(split);
            (false, split, bits, l1, Some(addr))
        } else {
            return Err(bad);
        }
    } else {
        let linear = match format {
            Some(StreamTableLevels::Linear) => true,
            Some(StreamTableLevels::TwoLevel) if f.stream_table == StreamTableLevels::Linear => {
                return Err(SmmuError::LinearOnly)
            }
            Some(StreamTableLevels::TwoLevel) => false,
            None => f.stream_table == StreamTableLevels::Linear || f.sid_bits <= SPLIT,
        };
        if linear {
            // One 64-byte STE per StreamID.
            let bits = f.sid_bits.min(MAX_LINEAR_LOG2);
            (true, 0, bits, 64u64 << bits, None)
        } else {
            // One 8-byte level-1 descriptor per 2^SPLIT StreamIDs.
            let bits = f.sid_bits.min(MAX_L1_LOG2 + SPLIT);
            (false, SPLIT, bits, 8u64 << bits.saturating_sub(SPLIT), None)
        }
    };
    // A preset queue: its size and address from Q_BASE, no larger than
    // IDR1 allows.
    let queue = |base: u64, max: u8, ours: u8, register| -> Result<(u8, Option<u64>), SmmuError> {
        if !f.queues_preset {
            return Ok((ours.min(max), None));
        }
        let log2 = crate::bits(base, 4, 0) as u8;
        if log2 > max {
            return Err(SmmuError::Preset {
                register,
                value: base,
            });
        }
        Ok((log2, Some(at(crate::bits(base, 51, 5) << 5))))
    };
    let (cmdq_log2, cmdq_at) = queue(regs.cmdq_base, f.cmdq_log2, CMDQ_LOG2, "CMDQ_BASE")?;
    let (evtq_log2, evtq_at) = queue(regs.eventq_base, f.eventq_log2, EVTQ_LOG2, "EVENTQ_BASE")?;
    if cmdq_log2 < MIN_CMDQ_LOG2 {
        return Err(SmmuError::CmdqTooSmall { log2: cmdq_log2 });
    }
    Ok(Plan {
        linear,
        split,
        sid_bits,
        strtab_bytes,
        strtab_at,
        cmdq_log2,
        evtq_log2,
        cmdq_at,
        evtq_at,
    })
}

/// The tag after `current` in a space of `bits` (ASIDs or VMIDs of 8 or
/// 16 bits); `None` when it is used up. Tag 0 is never handed out.
fn next_tag(current: u16, bits: u8) -> Option<u16> {
    let next = current.checked_add(1)?;
    (u32::from(next) < 1u32 << bits.min(16)).then_some(next)
}
/// More TLBI_NH_VA than this for one unmap batch: invalidate the ASID.
const MAX_TLBI_PER_BATCH: usize = 64;
/// Polls of CR0ACK or CMDQ_CONS before giving up (each poll is an MMIO read).
const MAX_POLLS: u32 = 1_000_000;

/// What the SMMU (or the driver's use of it) refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmmuError {
    /// Memory for a table or queue, or an access outside the driver's own.
    Memory(HalError),
    /// The ID registers describe an SMMU this driver cannot use.
    Unusable(Unusable),
    /// A two-level stream table was asked of an SMMU with linear ones only.
    LinearOnly,
    /// A preset base register (IDR1.TABLES_PRESET / QUEUES_PRESET) holds
    /// what the driver cannot use (a reserved format or split, a queue
    /// larger than IDR1 allows, another format than the one asked for).
    Preset {
        register: &'static str,
        value: u64,
    },
    /// IDR1.CMDQS allows fewer entries than a command and its CMD_SYNC.
    CmdqTooSmall {
        log2: u8,
    },
    /// CR0 (or IRQ_CTRL) was not acknowledged within the bound.
    NotAcknowledged {
        register: &'static str,
        value: u32,
        ack: u32,
    },
    /// GBPA's Update handshake did not complete within the bound (or the
    /// abort did not take).
    GbpaNotUpdated {
        gbpa: u32,
    },
    /// The SMMU signals by MSI; only wired interrupts are driven.
    MsiOnly,
    /// An interrupt line could not be enabled.
    Interrupt(HalError),
    /// The command queue did not consume a batch within the bound.
    CmdqTimeout {
        prod: u32,
        cons: u32,
    },
    /// A batch larger than the command queue.
    CmdqTooMany {
        commands: usize,
        room: u32,
    },
    /// The SMMU refused a command (CMDQ_ERR).
    Refused(Rejected),
    /// CMDQ_ERR kept re-asserting after every acknowledgement.
    CmdqErrorStorm {
        refused: usize,
    },
    /// A CMD_SYNC completed with its ATC invalidations timed out
    /// (CERROR_ATC_INV_SYNC): devices may hold stale translations.
    AtcInvalidationTimeout,
    StreamIdTooWide {
        sid: u32,
        bits: u8,
    },
    /// A SubstreamID beyond what the SMMU or the CD table format holds.
    SubstreamTooWide {
        sid: u32,
        ssid: u32,
        bits: u8,
    },
    /// Two-level CD tables needed, IDR0.CD2L is 0.
    NoTwoLevelCd {
        sid: u32,
    },
    /// No substreams at all (IDR1.SSIDSIZE 0, or stage 2).
    NoSubstreams {
        sid: u32,
    },
    AuxNotEnabled {
        sid: u32,
    },
    NotPaging {
        pasid: u32,
    },
    NotManaged {
        sid: u32,
    },
    /// Translation stages chosen after streams were managed.
    StreamsManaged,
    /// The stages asked for are not implemented by this SMMU.
    StagesMissing {
        stage1: bool,
        stage2: bool,
    },
    /// Both stages exist, but an erratum of this part rules out nesting.
    NestingErratum,
    /// A guest stage 1 ([`SmmuHw::set_nested`]) the driver refuses.
    GuestS1 {
        sid: u32,
        reason: &'static str,
    },
    /// A guest's configuration invalidation names a stream without a
    /// guest stage 1.
    NotNested {
        sid: u32,
    },
    OutOfAsids,
    /// Building the nested mode's stage 2 failed.
    Stage2(PgError),
}

impl fmt::Display for SmmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SmmuError::Memory(e) => write!(f, "SMMU memory: {e}"),
            SmmuError::Unusable(u) => write!(f, "SMMU unusable: {u:?}"),
            SmmuError::LinearOnly => f.write_str("the SMMU has linear stream tables only"),
            SmmuError::Preset { register, value } => {
                write!(f, "preset {register} {value:#x} cannot be used")
            }
            SmmuError::CmdqTooSmall { log2 } => {
                write!(f, "a command queue of 2^{log2} entries is too small")
            }
            SmmuError::NotAcknowledged {
                register,
                value,
                ack,
            } => write!(
                f,
                "{register} {value:#x} not acknowledged ({register}ACK {ack:#x})"
            ),
            SmmuError::GbpaNotUpdated { gbpa } => write!(
                f,
                "GBPA not updated to abort within the bound (GBPA {gbpa:#x})"
            ),
            SmmuError::MsiOnly => {
                f.write_str("this SMMU signals by MSI; only wired interrupts are driven")
            }
            SmmuError::Interrupt(e) => write!(f, "SMMU interrupt: {e}"),
            SmmuError::CmdqTimeout { prod, cons } => write!(
                f,
                "command queue: not consumed in time (PROD {prod:#x} CONS {cons:#x})"
            ),
            SmmuError::CmdqTooMany { commands, room } => write!(
                f,
                "command queue: {commands} commands in one batch, room for {room}"
            ),
            SmmuError::CmdqErrorStorm { refused } => write!(
                f,
                "command queue: the error re-asserts ({refused} refusals in one batch)"
            ),
            SmmuError::AtcInvalidationTimeout => {
                f.write_str("command queue: an ATC invalidation timed out before its CMD_SYNC")
            }
            SmmuError::Refused(r) => write!(
                f,
                "SMMU refused {} ({:?})",
                Command::opcode_name(r.opcode),
                r.error
            ),
            SmmuError::StreamIdTooWide { sid, bits } => {
                write!(f, "StreamID {sid:#x} is wider than the SMMU's {bits} bits")
            }
            SmmuError::SubstreamTooWide { sid, ssid, bits } => write!(
                f,
                "stream {sid:#x}: SSID {ssid} does not fit {bits} bits of substreams"
            ),
            SmmuError::NoTwoLevelCd { sid } => write!(
                f,
                "stream {sid:#x}: a two-level CD table is needed (IDR0.CD2L is 0)"
            ),
            SmmuError::NoSubstreams { sid } => write!(
                f,
                "stream {sid:#x}: no substreams (IDR1.SSIDSIZE 0, or stage 2)"
            ),
            SmmuError::AuxNotEnabled { sid } => write!(f, "stream {sid:#x}: AUX is not enabled"),
            SmmuError::NotPaging { pasid } => write!(f, "PASID {pasid}: not a paging domain"),
            SmmuError::NotManaged { sid } => write!(f, "stream {sid:#x} is not managed"),
            SmmuError::StreamsManaged => f.write_str("streams are managed already"),
            SmmuError::StagesMissing { stage1, stage2 } => write!(
                f,
                "needs stage 1 {stage1} / stage 2 {stage2}, which this SMMU lacks"
            ),
            SmmuError::NestingErratum => {
                f.write_str("nesting is off on this SMMU (an erratum of its IIDR)")
            }
            SmmuError::GuestS1 { sid, reason } => {
                write!(f, "guest stage 1 for stream {sid:#x} refused: {reason}")
            }
            SmmuError::NotNested { sid } => {
                write!(f, "stream {sid:#x} has no guest stage 1 to invalidate")
            }
            SmmuError::OutOfAsids => f.write_str("out of ASIDs"),
            SmmuError::Stage2(e) => write!(f, "nested stage 2: {e}"),
        }
    }
}

impl From<HalError> for SmmuError {
    fn from(e: HalError) -> Self {
        SmmuError::Memory(e)
    }
}

impl From<CmdqError> for SmmuError {
    fn from(e: CmdqError) -> Self {
        match e {
            CmdqError::Timeout { prod, cons } => SmmuError::CmdqTimeout { prod, cons },
            CmdqError::TooMany { commands, room } => SmmuError::CmdqTooMany { commands, room },
            CmdqError::ErrorStorm { refused } => SmmuError::CmdqErrorStorm { refused },
        }
    }
}

struct Cmdq<'a, H: Hal> {
    smmu: &'a Smmu,
    hal: &'a H,
    mem: &'a mut RegionSet<H::Region>,
    base: u64,
    /// Completion by interrupt: the sync SPI and its count before the batch.
    sync_irq: Option<(u32, u32)>,
}

impl<H: Hal> CmdqHw for Cmdq<'_, H> {
    fn read_prod(&self) -> u32 {
        self.smmu.regs().cmdq_prod.get()
    }
    fn write_prod(&mut self, prod: u32) {
        self.smmu.regs().cmdq_prod.set(prod);
    }
    fn read_cons(&self) -> u32 {
        self.smmu.regs().cmdq_cons.get()
    }
    fn write_entry(&mut self, slot: usize, cmd: [u64; 2]) {
        // `slot` is below the queue's entries (queue arithmetic), and the
        // queue's region holds them all: these stores cannot miss.
        let at = self.base + 16 * slot as u64;
        let _ = self.mem.write_u64(at, cmd[0]);
        let _ = self.mem.write_u64(at + 8, cmd[1]);
    }
    fn read_entry(&self, slot: usize) -> [u64; 2] {
        let at = self.base + 16 * slot as u64;
        [
            self.mem.read_u64(at).unwrap_or(0),
            self.mem.read_u64(at + 8).unwrap_or(0),
        ]
    }
    fn cmdq_error_active(&self) -> bool {
        let r = self.smmu.regs();
        (r.gerror.get() ^ r.gerrorn.get()) & GERROR::CMDQ_ERR::SET.value != 0
    }
    fn acknowledge_cmdq_error(&mut self) {
        let r = self.smmu.regs();
        r.gerrorn.set(r.gerrorn.get() ^ GERROR::CMDQ_ERR::SET.value);
    }
    fn barrier(&mut self) {
        self.hal.barrier();
    }
    fn pause(&mut self) {
        // With completion by interrupt, wait (bounded) for the sync SPI
        // before looking at CONS again.
        if let Some((intid, before)) = self.sync_irq {
            let t0 = self.hal.now_ns();
            while self.hal.irq_count(intid) == before && self.hal.now_ns() - t0 < SYNC_IRQ_WAIT_NS {
                core::hint::spin_loop();
            }
            self.sync_irq = None;
        }
    }
}

struct Evtq<'a, H: Hal> {
    smmu: &'a Smmu,
    hal: &'a H,
    mem: &'a RegionSet<H::Region>,
    base: u64,
}

impl<H: Hal> crate::event::EvtqHw for Evtq<'_, H> {
    fn read_prod(&self) -> u32 {
        self.smmu.page1().eventq_prod.get()
    }
    fn read_cons(&self) -> u32 {
        self.smmu.page1().eventq_cons.get()
    }
    fn write_cons(&mut self, cons: u32) {
        self.smmu.page1().eventq_cons.set(cons);
    }
    fn read_record(&self, slot: usize) -> [u64; 4] {
        let at = self.base + 32 * slot as u64;
        // Inside the event queue's region (queue arithmetic).
        core::array::from_fn(|i| self.mem.read_u64(at + 8 * i as u64).unwrap_or(0))
    }
    fn barrier(&mut self) {
        self.hal.barrier();
    }
}

/// How long a batch waits for its completion interrupt before polling.
const SYNC_IRQ_WAIT_NS: u64 = 10_000_000;

/// What the firmware says of an SMMU beyond its ID registers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firmware {
    /// Whether the SMMU's table walks and queue accesses snoop the CPU
    /// caches: the IORT node's COHACC override or the devicetree's
    /// `dma-coherent`, which decide (IDR0.COHACC is only checked against
    /// them, as Linux does). `None`: the firmware did not say, IDR0.COHACC
    /// decides.
    pub coherent: Option<bool>,
    /// Streams that must keep reaching memory across bring-up (IORT RMR
    /// nodes): bypass STEs before translation is enabled, and the ranges
    /// are direct regions of those streams.
    pub reserved: Vec<ReservedStreams>,
}

/// StreamIDs `first..=last` and the memory they must keep reaching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedStreams {
    pub first: u32,
    pub last: u32,
    pub ranges: Vec<PhysRange>,
}

impl Firmware {
    /// The memory `sid` must keep reaching, from every reservation naming it.
    fn reserved_ranges(&self, sid: u32) -> Vec<PhysRange> {
        self.reserved
            .iter()
            .filter(|r| (r.first..=r.last).contains(&sid))
            .flat_map(|r| r.ranges.iter().copied())
            .collect()
    }
}

/// The wired interrupts of an SMMU (the IORT node's GSIVs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WiredIrqs {
    pub event: u32,
    pub gerror: u32,
    pub sync: u32,
}

pub struct SmmuHw<H: Hal> {
    smmu: Smmu,
    hal: H,
    pub features: Features,
    /// StreamID bits the stream table covers.
    sid_bits: u8,
    /// StreamID bits per level-2 table.
    split: u8,
    /// How the SMMU walks memory: coherent or not (the firmware's word,
    /// else IDR0.COHACC).
    coherency: Coherency,
    /// Coherency and reserved streams, as the firmware gave them.
    firmware: Firmware,
    /// Every stream table, queue and CD table the SMMU walks.
    mem: RegionSet<H::Region>,
    /// The stream table (linear) or its level-1 table.
    l1: u64,
    strtab_bytes: u64,
    linear: bool,
    l2: BTreeMap<u32, u64>,
    cmdq: CommandQueue,
    cmdq_mem: u64,
    evtq: Queue,
    evtq_mem: u64,
    tables: HalTables<H>,
    /// The streams the core manages.
    streams: BTreeMap<u32, Stream>,
    /// Bytes of CD tables held.
    cd_bytes: u64,
    /// Commands an erratum allows before a CMD_SYNC (else no limit).
    sync_every: usize,
    /// Event queue overflows noticed.
    pub overflows: u32,
    /// Wired interrupts in use.
    irqs: Option<WiredIrqs>,
    /// Where translated devices' MSIs go (the GIC ITS doorbell), if the
    /// platform has one: mapped in primary domains and the nested stage 2.
    msi_doorbell: Option<u64>,
    next_asid: u16,
    translation: Translation,
    /// Stage 2: the empty table blocked streams walk (VMID 0), so their
    /// faults are reported with addresses. Nested: the identity table
    /// of RAM under every stream's stage 1 (VMID [`NESTED_VMID`]).
    s2_root: Option<u64>,
    /// Pages of `s2_root`'s table (not counted in `tables`).
    s2_tables: HalTables<H>,
    s2_table: Option<PageTable<ArmLpae>>,
}

/// Which stages domains use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// Domains are stage-1 tables under CDs; substreams are aux domains.
    Stage1,
    /// Domains are stage-2 tables (VMIDs); no substreams.
    Stage2,
    /// Stage 1 as above, over a stage 2 that maps RAM and the MSI doorbell
    /// one to one: the configuration a hypervisor gives a guest's SMMU.
    Nested,
}

/// The VMID of the nested mode's stage 2.
const NESTED_VMID: u16 = 1;

impl<H: Hal> SmmuHw<H> {
    /// Takes over the SMMU (which must be disabled) and builds its
    /// structures; translation stays off until [`SmmuHw::enable`].
    /// `msi_doorbell` is where translated devices' MSIs are written (the
    /// GIC ITS's GITS_TRANSLATER), if they go through the SMMU.
    pub fn new(smmu: Smmu, hal: H, msi_doorbell: Option<u64>) -> Result<Self, SmmuError> {
        Self::with_stream_table(smmu, hal, msi_doorbell, None)
    }

    /// As [`SmmuHw::new`], with the stream table format forced (a test of
    /// the linear table on an SMMU that has both). By default it is
    /// two-level, unless the SMMU has only linear tables or its StreamIDs
    /// fit one level-2 table.
    pub fn with_stream_table(
        smmu: Smmu,
        hal: H,
        msi_doorbell: Option<u64>,
        format: Option<StreamTableLevels>,
    ) -> Result<Self, SmmuError> {
        Self::with_firmware(smmu, hal, msi_doorbell, format, Firmware::default())
    }

    /// As [`SmmuHw::with_stream_table`], with what the firmware says of
    /// the SMMU: its coherency, and the streams whose reserved memory
    /// must stay reachable (bypass STEs written here, before anything can
    /// enable translation).
    pub fn with_firmware(
        smmu: Smmu,
        hal: H,
        msi_doorbell: Option<u64>,
        format: Option<StreamTableLevels>,
        firmware: Firmware,
    ) -> Result<Self, SmmuError> {
        let base = smmu.base();
        let mut features = smmu.features().map_err(SmmuError::Unusable)?;
        let errata = errata::apply(&mut features);
        let r = smmu.regs();
        let regs = BaseRegisters {
            smmu: base,
            strtab_base: r.strtab_base.get(),
            strtab_base_cfg: r.strtab_base_cfg.get(),
            cmdq_base: r.cmdq_base.get(),
            eventq_base: r.eventq_base.get(),
        };
        let plan = plan(&features, format, &regs)?;
        let Plan {
            linear,
            split,
            sid_bits,
            strtab_bytes,
            ..
        } = plan;
        // Firmware may have left it on: reset (GBPA abort, then off), and
        // queues left on by an earlier user off before their base
        // registers are written.
        if control::take_over(&mut control::Control(&smmu), MAX_POLLS)? {
            log::warn!("SMMU at {base:#x} was enabled: reset (GBPA abort, then disabled)");
        }
        let coherent = match firmware.coherent {
            Some(fw) if fw != features.coherent => {
                log::warn!(
                    "SMMU at {base:#x}: IDR0.COHACC {} overridden by the firmware ({}coherent)",
                    u8::from(features.coherent),
                    if fw { "" } else { "non-" }
                );
                fw
            }
            Some(fw) => fw,
            None => features.coherent,
        };
        let coherency = if coherent {
            Coherency::Coherent
        } else {
            Coherency::NonCoherent
        };
        for cache in [Cache::Config, Cache::Tlb, Cache::None] {
            hal.note(Note::Walks { cache, coherency });
        }
        let mut mem = RegionSet::default();
        // Allocated, or the preset memory (zeroed: it holds whatever the
        // SMMU was last given).
        let mut place =
            |preset: Option<u64>, bytes: u64, align: u64, cache: Cache| -> Result<u64, SmmuError> {
                let pa = match preset {
                    None => mem.insert(hal.alloc(bytes, align, coherency)?),
                    Some(pa) => {
                        let mut region = hal.adopt(PhysAddr(pa), bytes, coherency)?;
                        for off in (0..bytes).step_by(4096) {
                            let chunk = (bytes - off).min(4096) as usize;
                            region.write_bytes(off, &[0; 4096][..chunk])?;
                        }
                        mem.insert(region)
                    }
                };
                hal.note(Note::Holds {
                    pa: PhysAddr(pa),
                    cache,
                });
                Ok(pa)
            };
        // The table aligned to its size.
        let l1 = place(
            plan.strtab_at,
            strtab_bytes,
            strtab_bytes.next_power_of_two().max(64),
            Cache::Config,
        )?;
        let cmdq_mem = place(plan.cmdq_at, 16 << plan.cmdq_log2, 32, Cache::None)?;
        let evtq_mem = place(plan.evtq_at, 32 << plan.evtq_log2, 32, Cache::None)?;
        r.cr1.write(cr1_for(coherency));
        r.cr2.write(CR2::RECINVSID::SET);
        // Preset base registers are read-only: the plan used their values.
        if plan.strtab_at.is_none() {
            r.strtab_base.write(strtab_base_for(l1, coherency));
            r.strtab_base_cfg.write(
                if linear {
                    STRTAB_BASE_CFG::FMT::Linear
                } else {
                    STRTAB_BASE_CFG::FMT::TwoLevel + STRTAB_BASE_CFG::SPLIT.val(u32::from(split))
                } + STRTAB_BASE_CFG::LOG2SIZE.val(u32::from(sid_bits)),
            );
        }
        let cmdq = CommandQueue::new(plan.cmdq_log2, MAX_POLLS);
        let evtq = Queue {
            log2size: plan.evtq_log2,
        };
        if plan.cmdq_at.is_none() {
            r.cmdq_base
                .set(cmdq.queue.base_register(cmdq_mem, coherency));
            r.eventq_base.set(evtq.base_register(evtq_mem, coherency));
        }
        r.cmdq_prod.set(0);
        r.cmdq_cons.set(0);
        let mut hw = SmmuHw {
            smmu,
            tables: HalTables::new(hal.clone(), coherency),
            s2_tables: HalTables::new(hal.clone(), coherency),
            hal,
            features,
            sid_bits,
            split,
            coherency,
            firmware,
            mem,
            l1,
            strtab_bytes,
            linear,
            l2: BTreeMap::new(),
            cmdq,
            cmdq_mem,
            evtq,
            evtq_mem,
            streams: BTreeMap::new(),
            cd_bytes: 0,
            sync_every: errata::sync_every(&errata).unwrap_or(usize::MAX),
            overflows: 0,
            irqs: None,
            msi_doorbell,
            next_asid: 0,
            translation: if features.stage1 {
                Translation::Stage1
            } else {
                Translation::Stage2
            },
            s2_root: None,
            s2_table: None,
        };
        hw.smmu.page1().eventq_prod.set(0);
        hw.smmu.page1().eventq_cons.set(0);
        hw.hal.barrier();
        hw.set_cr0(CR0::CMDQEN::SET.value)?;
        hw.commands(&[Command::CfgiAll, Command::TlbiNsnhAll])?;
        hw.set_cr0(CR0::CMDQEN::SET.value | CR0::EVENTQEN::SET.value)?;
        hw.install_reserved()?;
        let f = &hw.features;
        // The tests build a driver per case: say it in full once.
        static REPORTED: core::sync::atomic::AtomicBool =
            core::sync::atomic::AtomicBool::new(false);
        let level = kernel::info_once(&REPORTED);
        log::log!(
            level,
            "SMMU at {base:#x}: {} stream table of 2^{} STEs ({} bytes), stage 1 {} (ASID {} bits) / \
             stage 2 {} (VMID {} bits), domains on {:?}; SSID {} bits, {} CD tables; IAS 48 / OAS {} \
             bits, 4 KiB granule; {}coherent; range invalidation {}; ATS {} and PRI {} (unused), HTTU {} (HA/HD when 2); \
             IIDR implementer {:#x} product {:#x} r{}p{}, errata: {}",
            if linear { "linear" } else { "two-level" },
            hw.sid_bits,
            strtab_bytes,
            f.stage1,
            f.asid_bits,
            f.stage2,
            f.vmid_bits,
            hw.translation,
            f.ssid_bits,
            if f.cd_two_level { "linear and two-level" } else { "linear" },
            f.oas,
            if coherent { "" } else { "not " },
            f.range_invalidation,
            f.ats,
            f.pri,
            f.httu,
            f.implementer,
            f.product,
            f.variant,
            f.revision,
            ErrataList(&errata)
        );
        Ok(hw)
    }
}

/// The errata found, for the identification line.
struct ErrataList<'a>(&'a [&'a errata::Erratum]);

impl fmt::Display for ErrataList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        for (i, e) in self.0.iter().enumerate() {
            write!(f, "{}{e}", if i == 0 { "" } else { ", " })?;
        }
        Ok(())
    }
}

impl<H: Hal> SmmuHw<H> {
    /// Bypass STEs for the firmware's reserved streams (IORT RMR), as
    /// Linux's `arm_smmu_rmr_install_bypass_ste`: their DMA to the
    /// reserved memory (a firmware agent's buffers) keeps working once
    /// translation is on. A StreamID past the stream table is an error.
    fn install_reserved(&mut self) -> Result<(), SmmuError> {
        let spans: Vec<(u32, u32)> = self
            .firmware
            .reserved
            .iter()
            .map(|r| (r.first, r.last))
            .collect();
        let mut streams = 0u64;
        for (first, last) in spans {
            for sid in first..=last {
                self.write_ste(sid, &Ste::bypass())?;
                streams += 1;
            }
        }
        if streams > 0 {
            log::info!(
                "SMMU at {:#x}: {streams} StreamID(s) bypass for firmware-reserved memory (IORT RMR)",
                self.smmu.base()
            );
        }
        Ok(())
    }

    /// Zeroed memory the SMMU walks; its address.
    fn alloc(&mut self, bytes: u64, align: u64) -> Result<u64, SmmuError> {
        let r = self.hal.alloc(bytes, align, self.coherency)?;
        let pa = self.mem.insert(r);
        self.hal.note(Note::Holds {
            pa: PhysAddr(pa),
            cache: Cache::Config,
        });
        Ok(pa)
    }

    /// The HAL the driver was handed (the checking mode's, on a checked run).
    pub fn hal(&self) -> &H {
        &self.hal
    }

    fn free(&mut self, pa: u64) {
        self.mem.remove(pa);
    }

    fn write_u64(&mut self, pa: u64, value: u64) -> Result<(), SmmuError> {
        Ok(self.mem.write_u64(pa, value)?)
    }

    fn read_u64(&self, pa: u64) -> Result<u64, SmmuError> {
        Ok(self.mem.read_u64(pa)?)
    }

    fn set_cr0(&mut self, value: u32) -> Result<(), SmmuError> {
        control::write_cr0(&mut control::Control(&self.smmu), value, MAX_POLLS)
    }

    /// Translation on (GBPA set to abort first, so that off never means
    /// bypass).
    pub fn enable(&mut self) -> Result<(), SmmuError> {
        control::enable(
            &mut control::Control(&self.smmu),
            CR0::CMDQEN::SET.value | CR0::EVENTQEN::SET.value,
            MAX_POLLS,
        )
    }

    /// Enables the event and global-error interrupts (edge-triggered
    /// SPIs on QEMU) and, with `sync_by_irq`, ends each command batch with
    /// a CMD_SYNC that signals its completion interrupt.
    pub fn enable_interrupts(
        &mut self,
        irqs: WiredIrqs,
        sync_by_irq: bool,
    ) -> Result<(), SmmuError> {
        if self.features.msi {
            // CS = SIG_IRQ would write an MSI to the (unset) MSIADDR.
            return Err(SmmuError::MsiOnly);
        }
        for g in [irqs.event, irqs.gerror, irqs.sync] {
            self.hal.irq_enable(g, true).map_err(SmmuError::Interrupt)?;
        }
        self.irqs = Some(irqs);
        self.set_irq_ctrl(IRQ_CTRL::EVENTQ_IRQEN::SET.value | IRQ_CTRL::GERROR_IRQEN::SET.value)?;
        if sync_by_irq {
            // Wired: no MSI address.
            self.cmdq.sync = Command::Sync { msi: Some((0, 0)) };
        }
        Ok(())
    }

    /// Back to polling; interrupts off.
    pub fn disable_interrupts(&mut self) -> Result<(), SmmuError> {
        self.cmdq.sync = Command::Sync { msi: None };
        let Some(irqs) = self.irqs.take() else {
            return Ok(());
        };
        let r = self.set_irq_ctrl(0);
        for g in [irqs.event, irqs.gerror, irqs.sync] {
            self.hal.irq_disable(g);
        }
        r
    }

    /// Deliveries of the (event, global error, sync) interrupts so far.
    pub fn interrupt_counts(&self) -> Option<(u32, u32, u32)> {
        let i = self.irqs?;
        let c = |line| self.hal.irq_count(line);
        Some((c(i.event), c(i.gerror), c(i.sync)))
    }

    fn set_irq_ctrl(&mut self, value: u32) -> Result<(), SmmuError> {
        let r = self.smmu.regs();
        r.irq_ctrl.set(value);
        if (0..MAX_POLLS).any(|_| r.irq_ctrlack.get() == value) {
            Ok(())
        } else {
            Err(SmmuError::NotAcknowledged {
                register: "IRQ_CTRL",
                value,
                ack: r.irq_ctrlack.get(),
            })
        }
    }

    /// Translation off, queues off; GBPA aborts every transaction from
    /// then on (set before SMMUEN clears).
    pub fn disable(&mut self) -> Result<(), SmmuError> {
        self.disable_interrupts()?;
        control::disable(&mut control::Control(&self.smmu), MAX_POLLS)
    }

    /// Runs `cmds` and one CMD_SYNC; a refused command is an error.
    pub fn commands(&mut self, cmds: &[Command]) -> Result<(), SmmuError> {
        let sync_irq = match (self.irqs, self.cmdq.sync) {
            (Some(i), Command::Sync { msi: Some(_) }) => Some((i.sync, self.hal.irq_count(i.sync))),
            _ => None,
        };
        let mut q = Cmdq {
            smmu: &self.smmu,
            hal: &self.hal,
            mem: &mut self.mem,
            base: self.cmdq_mem,
            sync_irq,
        };
        for c in cmds.iter().filter_map(invalidates) {
            self.hal.note(Note::Invalidate(c));
        }
        let report = self.cmdq.submit(&mut q, cmds)?;
        if report.fetch_aborts > 0 {
            log::warn!(
                "SMMU command queue: {} command fetch(es) aborted and retried",
                report.fetch_aborts
            );
        }
        if let Some(&r) = report.rejected.first() {
            return Err(SmmuError::Refused(r));
        }
        // The CMD_SYNC completed even when an ATC invalidation before it
        // timed out: the SMMU's own caches are clean.
        self.hal.note(Note::Complete);
        if report.atc_timeouts > 0 {
            return Err(SmmuError::AtcInvalidationTimeout);
        }
        Ok(())
    }

    /// Queues already-encoded entries (a test's malformed command among
    /// them) and returns what the SMMU refused.
    #[cfg(feature = "test-hooks")]
    pub fn raw_commands(&mut self, entries: &[[u64; 2]]) -> Result<Vec<Rejected>, SmmuError> {
        let mut q = Cmdq {
            smmu: &self.smmu,
            hal: &self.hal,
            mem: &mut self.mem,
            base: self.cmdq_mem,
            sync_irq: None,
        };
        Ok(self
            .cmdq
            .submit_encoded(&mut q, entries)
            .map(|r| r.rejected)?)
    }

    /// Commands and syncs issued so far.
    pub fn command_counts(&self) -> (u64, u64) {
        (self.cmdq.issued, self.cmdq.synced)
    }

    /// The STE slot of `sid`, allocating its level-2 table on first use.
    fn ste_slot(&mut self, sid: u32) -> Result<u64, SmmuError> {
        if u64::from(sid) >> self.sid_bits != 0 {
            return Err(SmmuError::StreamIdTooWide {
                sid,
                bits: self.sid_bits,
            });
        }
        if self.linear {
            return Ok(self.l1 + 64 * u64::from(sid));
        }
        let split = self.split;
        let l1_index = sid >> split;
        let l2 = match self.l2.get(&l1_index) {
            Some(&t) => t,
            None => {
                let t = self.alloc(64 << split, 64 << split)?;
                self.l2.insert(l1_index, t);
                self.hal.barrier();
                self.write_u64(self.l1 + 8 * u64::from(l1_index), l1_descriptor(t, split))?;
                self.hal.barrier();
                // The level-1 descriptor changed: the SMMU may cache it.
                self.commands(&[Command::CfgiSte { sid, leaf: false }])?;
                t
            }
        };
        Ok(l2 + 64 * u64::from(sid & ((1 << split) - 1)))
    }

    /// Makes the STE of `sid` hold `ste`, in an order no fetch can see
    /// torn ([`write_entry`]), each step made visible by CFGI_STE and a
    /// CMD_SYNC.
    pub fn write_ste(&mut self, sid: u32, ste: &Ste) -> Result<(), SmmuError> {
        let slot = self.ste_slot(sid)?;
        let cfgi = Command::CfgiSte { sid, leaf: true };
        self.write_entry::<Ste>(slot, cfgi, &ste.0)
    }

    /// Rewrites the 8-dword entry at `slot` to `target`, syncing with
    /// `cfgi` and a CMD_SYNC.
    fn write_entry<F: EntryFormat<8>>(
        &mut self,
        slot: u64,
        cfgi: Command,
        target: &[u64; 8],
    ) -> Result<(), SmmuError> {
        let mut current = [0; 8];
        for (i, w) in current.iter_mut().enumerate() {
            *w = self.read_u64(slot + 8 * i as u64)?;
        }
        write_entry::<8, F, _>(
            &mut LiveEntry {
                hw: self,
                slot,
                cfgi,
            },
            current,
            target,
        )
    }

    /// Global errors other than CMDQ_ERR (which the command queue
    /// protocol handles): logged with their names and acknowledged.
    /// Returns the GERROR bits that were active.
    pub fn check_global_errors(&mut self) -> u32 {
        const NAMES: [(u32, &str); 7] = [
            (
                GERROR::EVENTQ_ABT_ERR::SET.value,
                "EVENTQ_ABT_ERR (an event could not be written)",
            ),
            (GERROR::PRIQ_ABT_ERR::SET.value, "PRIQ_ABT_ERR"),
            (GERROR::MSI_CMDQ_ABT_ERR::SET.value, "MSI_CMDQ_ABT_ERR"),
            (GERROR::MSI_EVENTQ_ABT_ERR::SET.value, "MSI_EVENTQ_ABT_ERR"),
            (GERROR::MSI_PRIQ_ABT_ERR::SET.value, "MSI_PRIQ_ABT_ERR"),
            (GERROR::MSI_GERROR_ABT_ERR::SET.value, "MSI_GERROR_ABT_ERR"),
            (
                GERROR::SFM_ERR::SET.value,
                "SFM_ERR (the SMMU entered service failure mode)",
            ),
        ];
        let r = self.smmu.regs();
        let active = (r.gerror.get() ^ r.gerrorn.get()) & !GERROR::CMDQ_ERR::SET.value;
        for (bit, name) in NAMES {
            if active & bit != 0 {
                log::error!("SMMU global error: {name}");
            }
        }
        if active != 0 {
            r.gerrorn.set(r.gerrorn.get() ^ active);
        }
        active
    }

    /// Events the SMMU reported since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        self.check_global_errors();
        let mut q = Evtq {
            smmu: &self.smmu,
            hal: &self.hal,
            mem: &self.mem,
            base: self.evtq_mem,
        };
        let drained = crate::event::drain(&self.evtq, &mut q);
        if drained.overflowed {
            self.overflows += 1;
            log::warn!("SMMU event queue overflowed: events were lost");
        }
        drained.records.iter().map(Event::decode).collect()
    }

    /// The SMMU's output address size (IDR5.OAS) as a CD's IPS field.
    pub fn oas_encoding(&self) -> u8 {
        match self.features.oas {
            32 => 0,
            36 => 1,
            40 => 2,
            42 => 3,
            44 => 4,
            48 => 5,
            _ => 6,
        }
    }
}

impl<H: Hal> SmmuHw<H> {
    /// Chooses the stages domains use; before any stream is managed.
    pub fn set_translation(&mut self, t: Translation) -> Result<(), SmmuError> {
        if !self.streams.is_empty() {
            return Err(SmmuError::StreamsManaged);
        }
        let f = &self.features;
        let (s1, s2) = match t {
            Translation::Stage1 => (true, false),
            Translation::Stage2 => (false, true),
            Translation::Nested => (true, true),
        };
        if (s1 && !f.stage1) || (s2 && !f.stage2) {
            return Err(SmmuError::StagesMissing {
                stage1: s1 && !f.stage1,
                stage2: s2 && !f.stage2,
            });
        }
        if t == Translation::Nested && !f.nesting {
            return Err(SmmuError::NestingErratum);
        }
        self.release_s2();
        match t {
            Translation::Stage1 => {}
            Translation::Stage2 => {
                let root = self
                    .s2_tables
                    .alloc()
                    .ok_or(SmmuError::Stage2(PgError::NoMemory))?;
                self.s2_root = Some(root);
            }
            Translation::Nested => self.build_nested_s2()?,
        }
        self.translation = t;
        Ok(())
    }

    /// The nested mode's stage 2: every RAM region the page allocator
    /// manages (where tables, CDs and DMA buffers live) and the MSI
    /// doorbell, one to one, in the largest blocks that fit.
    fn build_nested_s2(&mut self) -> Result<(), SmmuError> {
        let err = SmmuError::Stage2;
        let mut table = PageTable::new(ArmLpae::S2, &mut self.s2_tables).map_err(err)?;
        for r in self.hal.ram() {
            let start = r.start & !(PAGE_SIZE - 1);
            let end = r.end.next_multiple_of(PAGE_SIZE);
            table
                .map(&mut self.s2_tables, start, start, end - start, Prot::RW)
                .map_err(err)?;
        }
        if let Some(db) = self.msi_doorbell {
            let page = db & !(PAGE_SIZE - 1);
            table
                .map(&mut self.s2_tables, page, page, PAGE_SIZE, Prot::RW)
                .map_err(err)?;
        }
        self.s2_root = Some(table.root());
        self.s2_table = Some(table);
        Ok(())
    }

    /// Frees the stage-2 tables of the nested and stage-2 modes.
    pub fn release_s2(&mut self) {
        let mut gather = Gather::default();
        if let Some(t) = self.s2_table.take() {
            t.destroy(&mut self.s2_tables, &mut gather);
        } else if let Some(root) = self.s2_root {
            gather.freed_tables.push(root);
        }
        self.s2_root = None;
        if !gather.is_empty() {
            let _ = self.commands(&[Command::TlbiS12Vmall { vmid: NESTED_VMID }]);
        }
        gather.release(&mut self.s2_tables);
    }

    /// The VMID stage-1 TLB entries are tagged with.
    fn s1_vmid(&self) -> u16 {
        if self.translation == Translation::Nested {
            NESTED_VMID
        } else {
            0
        }
    }
}

impl<H: Hal> SmmuHw<H> {
    /// How the SMMU's walks, fetches and queue accesses are attributed
    /// (and its tables allocated): what the firmware said.
    pub fn coherency(&self) -> Coherency {
        self.coherency
    }

    /// Whether the stream table is linear (else two-level).
    pub fn linear_stream_table(&self) -> bool {
        self.linear
    }

    /// Bytes of stream table: the linear table or the level-1 table plus
    /// the level-2 tables allocated so far.
    pub fn stream_table_bytes(&self) -> u64 {
        self.strtab_bytes + self.l2.len() as u64 * (64 << self.split)
    }
}

/// Turns the SMMU off and frees what it walked. If it does not turn off,
/// the memory is left to it (and the failure is logged), never freed
/// under a live SMMU.
impl<H: Hal> Drop for SmmuHw<H> {
    fn drop(&mut self) {
        if let Err(e) = self.disable() {
            log::error!("SMMU does not turn off ({e}): its tables stay allocated");
            // Leaked on purpose: the SMMU may still walk them.
            core::mem::forget(self.mem.take_all());
            core::mem::forget(core::mem::replace(
                &mut self.tables,
                HalTables::new(self.hal.clone(), self.coherency),
            ));
            core::mem::forget(core::mem::replace(
                &mut self.s2_tables,
                HalTables::new(self.hal.clone(), self.coherency),
            ));
            return;
        }
        self.release_s2();
        // The stream table, queues and CD tables go with `mem`.
    }
}

/// Bring-up under the core: streams the core does not manage bypass,
/// released streams bypass again with their CD tables freed, and
/// shutdown frees the stage-2 tables and turns translation off.
impl<H: Hal> kernel::iommu::bringup::Bringup for SmmuHw<H> {
    fn pass_through(&mut self, dev: DeviceId) -> Result<(), SmmuError> {
        let dev = dev.0;
        self.write_ste(dev, &Ste::bypass())
    }
    fn enable(&mut self) -> Result<(), SmmuError> {
        SmmuHw::enable(self)
    }
    fn release(&mut self, dev: DeviceId) -> Result<(), SmmuError> {
        let dev = dev.0;
        self.release_stream(dev)?;
        self.write_ste(dev, &Ste::bypass())
    }
    fn shutdown(&mut self) -> Result<(), SmmuError> {
        self.release_s2();
        self.disable()
    }
    fn held(&self) -> (u64, u64) {
        (self.tables_live(), self.cd_table_bytes())
    }
}

/// One live 8-dword entry (STE or CD) of the SMMU's, for the entry writer.
struct LiveEntry<'a, H: Hal> {
    hw: &'a mut SmmuHw<H>,
    slot: u64,
    cfgi: Command,
}

impl<H: Hal> EntryTarget<8> for LiveEntry<'_, H> {
    type Error = SmmuError;
    fn write(&mut self, word: usize, value: u64) -> Result<(), SmmuError> {
        self.hw.write_u64(self.slot + 8 * word as u64, value)
    }
    fn sync(&mut self) -> Result<(), SmmuError> {
        // `commands` orders the stores before the SMMU sees the batch.
        self.hw.commands(&[self.cfgi])
    }
    fn uncached(&mut self, on: bool) {
        self.hw.hal.note(Note::Uncached(on));
    }
}

/// What the STEs of a driver instance share: the stages in use and the
/// stage-2 settings.
#[derive(Debug, Clone, Copy)]
struct SteParams {
    translation: Translation,
    /// Stage-2 input size (no more than the output size, IDR5.OAS).
    s2_ias: u8,
    /// IDR5.OAS as the PS encoding.
    s2_ps: u8,
    /// Stage 2: the empty table of blocked streams; nested: the identity
    /// table under stage 1.
    s2_root: u64,
    /// How the SMMU walks tables and fetches CDs.
    walk: Coherency,
    /// Hardware access-flag and dirty-state updates (IDR0.HTTU).
    httu: u8,
}

impl SteParams {
    fn stage2(&self, vmid: u16, root: u64) -> Stage2 {
        Stage2 {
            vmid,
            ias: self.s2_ias,
            ps: self.s2_ps,
            // Start at level 0 (4 KiB granule).
            sl0: 2,
            ttb: root,
            walk: self.walk,
            httu: self.httu,
        }
    }
}

/// The STE of a managed stream in state `st`.
fn stream_ste(p: &SteParams, st: &Stream) -> Ste {
    if p.translation == Translation::Stage2 {
        return match st.primary {
            Primary::Identity => Ste::bypass(),
            Primary::Paging { asid: vmid, root } => match &st.guest {
                Some(g) => nested::guest_ste(p, vmid, root, g),
                None => Ste::stage2(&p.stage2(vmid, root)),
            },
            Primary::Blocked => Ste::stage2(&p.stage2(0, p.s2_root)),
        };
    }
    let (base, fmt) = match st.l1 {
        Some((l1, _)) => (l1, CdFmt::TwoLevel4k),
        None => (st.leaves.get(&0).copied().unwrap_or(0), CdFmt::Linear),
    };
    let cd = CdTable {
        base,
        log2_cds: st.log2,
        fmt,
        s1dss: if st.primary == Primary::Identity {
            S1Dss::Bypass
        } else {
            S1Dss::Substream0
        },
        walk: p.walk,
    };
    let identity_only = st.primary == Primary::Identity && !st.aux;
    if p.translation == Translation::Nested {
        let s2 = p.stage2(NESTED_VMID, p.s2_root);
        let mut nested = Ste::nested(&cd, &s2);
        if identity_only {
            // Stage 2 alone: the "identity" of a guest is its IPA space.
            nested.0[0] = Ste::stage2(&s2).0[0];
        }
        return nested;
    }
    let mut ste = Ste::stage1(&cd);
    if identity_only {
        // Dword 1 keeps its stage-1 fields (ignored in bypass), so a
        // later switch to stage 1 changes dword 0 alone.
        ste.0[0] = Ste::bypass().0[0];
    }
    ste
}

/// What a managed stream's untagged traffic gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primary {
    Blocked,
    Identity,
    Paging { asid: u16, root: u64 },
}

/// A stream the core manages: its primary domain and its CD table. CD 0
/// is the primary domain (S1DSS substream 0); CDs 1.. are aux domains.
/// The table grows with the PASIDs in use: one 4 KiB page of 64 CDs
/// (linear) until a PASID reaches 64, then two levels with 4 KiB leaves
/// (the first leaf is the old linear page), with a level-1 table sized to
/// the largest PASID so far.
struct Stream {
    primary: Primary,
    aux: bool,
    /// Leaf tables (64 CDs each) by level-1 index; leaf 0 always exists.
    leaves: BTreeMap<u32, u64>,
    /// S1CDMax: 0 until AUX is enabled.
    log2: u8,
    /// The level-1 table and its entries, once there are two levels.
    l1: Option<(u64, u32)>,
    /// Attached PASIDs.
    pasids: BTreeSet<u32>,
    /// Stage-2 mode: a guest's stage 1 over the primary stage-2 domain
    /// ([`SmmuHw::set_nested`]).
    guest: Option<GuestS1>,
}

impl Stream {
    /// What its STE says of its CD table.
    fn cd_table_fields(&self) -> CdTableFields {
        CdTableFields {
            base: self
                .l1
                .map_or_else(|| self.leaves.get(&0).copied().unwrap_or(0), |(l1, _)| l1),
            two_level: self.l1.is_some(),
            log2: self.log2,
        }
    }
}

/// The CD-table fields of a stage-1 STE: S1ContextPtr, S1Fmt, S1CDMax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CdTableFields {
    base: u64,
    two_level: bool,
    log2: u8,
}

/// The invalidation a switch of a stream's CD table needs once the new
/// STE is visible (CFGI_STE does not reach CDs or level-1 CD descriptors
/// the SMMU cached, IHI 0070 4.3): another table or format (growing to
/// two levels, a larger level-1 table, shrinking back to one leaf) and a
/// smaller S1CDMax take CFGI_CD_ALL, as the old table's descriptors may
/// be cached and are about to be freed; a larger S1CDMax over the same
/// table takes nothing (CDs beyond the old size were never fetched).
fn cd_table_switch(sid: u32, before: CdTableFields, after: CdTableFields) -> Option<Command> {
    let same_table = before.base == after.base && before.two_level == after.two_level;
    (!(same_table && after.log2 >= before.log2)).then_some(Command::CfgiCdAll { sid })
}

/// CDs per leaf table (S1Fmt 4 KiB leaves).
const LEAF_LOG2: u8 = CdFmt::TwoLevel4k.leaf_log2();
/// The ASID of blocking CDs: they never translate, so nothing is cached.
const BLOCKING_ASID: u16 = 0;

impl<H: Hal> SmmuHw<H> {
    fn stream(&mut self, sid: u32) -> Result<&mut Stream, SmmuError> {
        if !self.streams.contains_key(&sid) {
            let leaf = self.alloc_meta(PAGE_SIZE)?;
            let st = Stream {
                primary: Primary::Blocked,
                aux: false,
                leaves: BTreeMap::from([(0, leaf)]),
                log2: 0,
                l1: None,
                pasids: BTreeSet::new(),
                guest: None,
            };
            self.streams.insert(sid, st);
        }
        self.st_mut(sid)
    }

    /// A managed stream's state (the core only names streams it added).
    fn st(&self, sid: u32) -> Result<&Stream, SmmuError> {
        self.streams.get(&sid).ok_or(SmmuError::NotManaged { sid })
    }

    fn st_mut(&mut self, sid: u32) -> Result<&mut Stream, SmmuError> {
        self.streams
            .get_mut(&sid)
            .ok_or(SmmuError::NotManaged { sid })
    }

    /// Zeroed memory for CD tables, counted in [`SmmuHw::cd_table_bytes`].
    fn alloc_meta(&mut self, bytes: u64) -> Result<u64, SmmuError> {
        let pa = self.alloc(bytes, bytes.next_power_of_two())?;
        self.cd_bytes += bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        Ok(pa)
    }

    fn free_meta(&mut self, pa: u64, bytes: u64) {
        self.free(pa);
        self.cd_bytes -= bytes.div_ceil(PAGE_SIZE) * PAGE_SIZE;
    }

    /// Page-table pages held by the core's domains.
    pub fn tables_live(&self) -> u64 {
        self.tables.live()
    }

    /// Bytes of CD tables (leaves and level-1 tables) held now.
    pub fn cd_table_bytes(&self) -> u64 {
        self.cd_bytes
    }

    /// The STE for a managed stream's current state.
    fn stream_ste(&self, st: &Stream) -> Ste {
        stream_ste(&self.ste_params(), st)
    }

    fn ste_params(&self) -> SteParams {
        SteParams {
            translation: self.translation,
            s2_ias: self.features.oas.min(48),
            s2_ps: self.oas_encoding(),
            s2_root: self.s2_root.unwrap_or(0),
            httu: self.features.httu.min(2),
            walk: self.coherency,
        }
    }

    fn update_ste(&mut self, sid: u32) -> Result<(), SmmuError> {
        let ste = self.stream_ste(self.st(sid)?);
        self.write_ste(sid, &ste)
    }

    /// The CD slot of `ssid`, allocating its leaf table (and linking it
    /// into the level-1 table) on first use; says whether a level-1
    /// descriptor was written.
    fn cd_slot(&mut self, sid: u32, ssid: u32) -> Result<(u64, bool), SmmuError> {
        let leaf_index = ssid >> LEAF_LOG2;
        let existing = self.st(sid)?.leaves.get(&leaf_index).copied();
        let (leaf, linked) = match existing {
            Some(leaf) => (leaf, false),
            None => {
                let leaf = self.alloc_meta(PAGE_SIZE)?;
                let st = self.st_mut(sid)?;
                st.leaves.insert(leaf_index, leaf);
                let (l1, _) = st.l1.ok_or(SmmuError::SubstreamTooWide {
                    sid,
                    ssid,
                    bits: LEAF_LOG2,
                })?;
                self.hal.barrier();
                self.write_u64(l1 + 8 * u64::from(leaf_index), cd_l1_descriptor(leaf))?;
                (leaf, true)
            }
        };
        Ok((leaf + 64 * u64::from(ssid & ((1 << LEAF_LOG2) - 1)), linked))
    }

    /// Writes CD `ssid` of `sid` (in an order no fetch can see torn) and
    /// makes the SMMU re-read it; then runs `extra` (the invalidation of
    /// what the old CD left in the TLBs).
    fn write_cd(
        &mut self,
        sid: u32,
        ssid: u32,
        cd: &Cd,
        extra: &[Command],
    ) -> Result<(), SmmuError> {
        let (slot, linked) = self.cd_slot(sid, ssid)?;
        let cfgi = Command::CfgiCd {
            sid,
            ssid,
            leaf: !linked,
        };
        self.write_entry::<Cd>(slot, cfgi, &cd.0)?;
        if extra.is_empty() {
            Ok(())
        } else {
            self.commands(extra)
        }
    }

    /// A CD over stage-1 tables in `format`: the SMMU's own, or a bound
    /// CPU address space's, whose memory attributes are the CPU's MAIR.
    fn paging_cd(&self, asid: u16, root: u64, format: &TableFormat) -> Cd {
        let mair = match format {
            TableFormat::Arm(f) => f.mair(),
            _ => MAIR,
        };
        Cd::new(&CdConfig {
            asid,
            ttb0: root,
            ias: 48,
            ips: self.oas_encoding(),
            mair,
            walk: self.coherency,
            httu: self.features.httu.min(2),
        })
    }

    /// Makes the CD table of `sid` hold SSID `ssid`: S1CDMax grows, to two
    /// levels past 64 CDs, with a level-1 table for at least 2^10 CDs so
    /// that it is not rebuilt at every new power of two.
    fn grow(&mut self, sid: u32, ssid: u32) -> Result<(), SmmuError> {
        let need = (32 - ssid.leading_zeros()) as u8;
        let st = self.st(sid)?;
        if need <= st.log2 {
            return Ok(());
        }
        if need > self.features.ssid_bits {
            return Err(SmmuError::SubstreamTooWide {
                sid,
                ssid,
                bits: self.features.ssid_bits,
            });
        }
        if need <= LEAF_LOG2 {
            let before = st.cd_table_fields();
            self.st_mut(sid)?.log2 = LEAF_LOG2.min(self.features.ssid_bits);
            return self.switch_cd_table(sid, before);
        }
        if !self.features.cd_two_level {
            return Err(SmmuError::NoTwoLevelCd { sid });
        }
        let log2 = need.max(10).min(self.features.ssid_bits);
        let entries = 1u32 << (log2 - LEAF_LOG2);
        let bytes = 8 * u64::from(entries);
        let l1 = self.alloc_meta(bytes)?;
        let leaves: Vec<(u32, u64)> = self
            .st(sid)?
            .leaves
            .iter()
            .map(|(&i, &leaf)| (i, leaf))
            .collect();
        for (i, leaf) in leaves {
            self.write_u64(l1 + 8 * u64::from(i), cd_l1_descriptor(leaf))?;
        }
        let before = self.st(sid)?.cd_table_fields();
        let st = self.st_mut(sid)?;
        let old = st.l1.replace((l1, entries));
        st.log2 = log2;
        // One 64-bit write of dword 0 switches pointer, format and size.
        self.switch_cd_table(sid, before)?;
        if let Some((old_l1, old_entries)) = old {
            self.free_meta(old_l1, 8 * u64::from(old_entries));
        }
        Ok(())
    }

    /// Rewrites the STE of `sid` after its CD table changed from `before`,
    /// then invalidates what the SMMU may hold from the old table
    /// ([`cd_table_switch`]), before anything of it is freed.
    fn switch_cd_table(&mut self, sid: u32, before: CdTableFields) -> Result<(), SmmuError> {
        self.update_ste(sid)?;
        let after = self.st(sid)?.cd_table_fields();
        match cd_table_switch(sid, before, after) {
            Some(cmd) => self.commands(&[cmd]),
            None => Ok(()),
        }
    }

    /// The stream's CD tables, back to one linear leaf with CD 0.
    fn shrink(&mut self, sid: u32) -> Result<(), SmmuError> {
        let st = self.st_mut(sid)?;
        let before = st.cd_table_fields();
        st.log2 = 0;
        let l1 = st.l1.take();
        let leaves: Vec<(u32, u64)> = st
            .leaves
            .iter()
            .map(|(&i, &p)| (i, p))
            .filter(|&(i, _)| i != 0)
            .collect();
        st.leaves.retain(|&i, _| i == 0);
        // Nothing cached from the tables about to be freed.
        self.switch_cd_table(sid, before)?;
        if let Some((l1, entries)) = l1 {
            self.free_meta(l1, 8 * u64::from(entries));
        }
        for (_, leaf) in leaves {
            self.free_meta(leaf, PAGE_SIZE);
        }
        // CDs 1..63 of leaf 0 were invalidated when their PASIDs went.
        Ok(())
    }

    /// The stream goes back to bypass and its CD tables are freed (a
    /// test's teardown).
    pub fn release_stream(&mut self, sid: u32) -> Result<(), SmmuError> {
        let Some(st) = self.streams.remove(&sid) else {
            return Ok(());
        };
        self.write_ste(sid, &Ste::bypass())?;
        self.commands(&[Command::CfgiCdAll { sid }])?;
        if let Some((l1, entries)) = st.l1 {
            self.free_meta(l1, 8 * u64::from(entries));
        }
        for (_, leaf) in st.leaves {
            self.free_meta(leaf, PAGE_SIZE);
        }
        Ok(())
    }

    /// Entries of the event queue.
    pub fn event_queue_entries(&self) -> u32 {
        1 << self.evtq.log2size
    }

    /// Where CD `ssid` of a managed stream lives, if its leaf exists (for
    /// tests that edit CDs behind the driver's back).
    #[cfg(feature = "test-hooks")]
    pub fn cd_address(&self, sid: u32, ssid: u32) -> Option<u64> {
        let leaf = self.streams.get(&sid)?.leaves.get(&(ssid >> LEAF_LOG2))?;
        Some(leaf + 64 * u64::from(ssid & ((1 << LEAF_LOG2) - 1)))
    }

    /// Writes `words` at `pa`, in order, inside a CD table or stream table
    /// the driver owns, and optionally runs `cmds` after: how a test
    /// changes a live structure without the driver's ordering rules.
    #[cfg(feature = "test-hooks")]
    pub fn poke(&mut self, pa: u64, words: &[u64], cmds: &[Command]) -> Result<(), SmmuError> {
        let owned = self.streams.values().any(|st| {
            st.leaves
                .values()
                .any(|&l| (l..l + PAGE_SIZE).contains(&pa))
                || st
                    .l1
                    .is_some_and(|(l1, n)| (l1..l1 + 8 * u64::from(n)).contains(&pa))
        });
        if !owned {
            return Err(SmmuError::Memory(HalError::NotOwned { pa }));
        }
        // A test's own breakage, not the driver's: unseen by the checking mode.
        self.hal.note(Note::Uncached(true));
        let written = words
            .iter()
            .enumerate()
            .try_for_each(|(i, &w)| self.write_u64(pa + 8 * i as u64, w));
        self.hal.note(Note::Uncached(false));
        written?;
        self.hal.barrier();
        if cmds.is_empty() {
            Ok(())
        } else {
            self.commands(cmds)
        }
    }

    /// Rewrites the STE of a managed stream from the driver's state (after
    /// a test wrote another).
    #[cfg(feature = "test-hooks")]
    pub fn restore_ste(&mut self, sid: u32) -> Result<(), SmmuError> {
        if !self.streams.contains_key(&sid) {
            return Err(SmmuError::NotManaged { sid });
        }
        self.update_ste(sid)
    }

    /// TLBIs one unmap batch carries at most before the whole ASID (or
    /// VMID) is invalidated instead: a batch and its CMD_SYNC must fit the
    /// command queue, whose size IDR1 bounds, and an erratum may ask for
    /// a CMD_SYNC sooner (`sync_every`).
    fn tlbi_cap(&self) -> usize {
        MAX_TLBI_PER_BATCH
            .min(self.cmdq.queue.entries() as usize - 1)
            .min(self.sync_every)
    }

    /// Events since the last call, as the core's faults. Events that are
    /// not about a request (or that the core has no words for) are logged.
    pub fn take_faults(&mut self) -> Vec<Fault> {
        self.take_staged_faults()
            .into_iter()
            .map(|f| f.fault)
            .collect()
    }

    /// [`SmmuHw::take_faults`] with the stage each translation fault came
    /// from (stage 1, or stage 2 with its IPA and what it was translating).
    pub fn take_staged_faults(&mut self) -> Vec<StagedFault> {
        let mut out = Vec::new();
        for ev in self.drain_events() {
            let st = self.streams.get(&ev.sid);
            let attached = |p: u32| st.is_some_and(|s| s.pasids.contains(&p));
            let reason = match ev.kind {
                EventKind::Translation | EventKind::AddressSize => match ev.ssid {
                    None if st.is_some_and(|s| s.primary == Primary::Blocked) => {
                        FaultReason::Blocked
                    }
                    Some(p) if !attached(p) => FaultReason::NoPasid,
                    _ => FaultReason::NotMapped,
                },
                EventKind::Permission | EventKind::Access => FaultReason::Permission,
                EventKind::StreamDisabled => FaultReason::Blocked,
                EventKind::BadSubstreamId | EventKind::BadCd => FaultReason::NoPasid,
                _ => {
                    log::warn!("SMMU event not about a translation: {ev:?}");
                    continue;
                }
            };
            out.push(StagedFault {
                fault: Fault {
                    dev: DeviceId(ev.sid),
                    pasid: ev.ssid.map(Pasid),
                    iova: Iova(ev.addr),
                    write: !ev.read,
                    reason,
                },
                stage: ev.stage(),
            });
        }
        out
    }
}

impl<H: Hal> SmmuHw<H> {
    /// Width of the domains' tags: VMIDs on stage 2, ASIDs otherwise.
    fn tag_bits(&self) -> u8 {
        if self.translation == Translation::Stage2 {
            self.features.vmid_bits
        } else {
            self.features.asid_bits
        }
    }
}

impl<H: Hal> IommuHw for SmmuHw<H> {
    type Error = SmmuError;

    fn format(&self) -> TableFormat {
        match self.translation {
            Translation::Stage2 => TableFormat::Arm(ArmLpae::S2),
            _ => TableFormat::Arm(ArmLpae::S1),
        }
    }

    fn pasid_bits(&self) -> u8 {
        if self.translation == Translation::Stage2 {
            0
        } else if self.features.cd_two_level {
            self.features.ssid_bits
        } else {
            self.features.ssid_bits.min(LEAF_LOG2)
        }
    }

    fn tables(&mut self) -> &mut dyn TableMemory {
        &mut self.tables
    }

    fn alloc_tag(&mut self) -> Result<u32, SmmuError> {
        self.next_asid = next_tag(self.next_asid, self.tag_bits()).ok_or(SmmuError::OutOfAsids)?;
        Ok(u32::from(self.next_asid))
    }

    fn tags_left(&self) -> Option<u32> {
        // `next_tag` hands out 1 to 2^bits - 1, each once.
        let all = (1u32 << self.tag_bits().min(16)) - 1;
        Some(all.saturating_sub(u32::from(self.next_asid)))
    }

    fn free_tag(&mut self, tag: u32) {
        let cmd = match self.translation {
            Translation::Stage2 => Command::TlbiS12Vmall { vmid: tag as u16 },
            _ => Command::TlbiNhAsid {
                asid: tag as u16,
                vmid: self.s1_vmid(),
            },
        };
        let _ = self.commands(&[cmd]);
    }

    fn set_primary(&mut self, dev: DeviceId, d: &DomainRef) -> Result<(), SmmuError> {
        let dev = dev.0;
        let primary = match (d.kind, d.root) {
            (DomainKind::Identity, _) => Primary::Identity,
            (DomainKind::Unmanaged | DomainKind::Dma, Some(root)) => Primary::Paging {
                asid: d.tag as u16,
                root: root.0,
            },
            _ => Primary::Blocked,
        };
        self.stream(dev)?;
        if self.translation == Translation::Stage2 {
            let st = self.st_mut(dev)?;
            // A guest's stage 1 lived in the old stage 2's IPA space.
            let had_guest = st.guest.take().is_some();
            st.primary = primary;
            self.update_ste(dev)?;
            return if had_guest {
                self.commands(&[Command::CfgiCdAll { sid: dev }])
            } else {
                Ok(())
            };
        }
        // CD 0 first: the STE may already point at it.
        match primary {
            Primary::Paging { asid, root } => {
                let cd = self.paging_cd(asid, root, &d.format);
                self.write_cd(dev, 0, &cd, &[])?;
            }
            Primary::Blocked => self.write_cd(dev, 0, &Cd::blocking(BLOCKING_ASID), &[])?,
            Primary::Identity => {}
        }
        self.st_mut(dev)?.primary = primary;
        self.update_ste(dev)
    }

    fn enable_aux(&mut self, dev: DeviceId) -> Result<(), SmmuError> {
        let dev = dev.0;
        if self.pasid_bits() == 0 {
            return Err(SmmuError::NoSubstreams { sid: dev });
        }
        let st = self.stream(dev)?;
        st.aux = true;
        self.grow(dev, 1)?;
        self.update_ste(dev)
    }

    fn disable_aux(&mut self, dev: DeviceId) -> Result<(), SmmuError> {
        let dev = dev.0;
        let Some(st) = self.streams.get_mut(&dev) else {
            return Ok(());
        };
        st.aux = false;
        self.shrink(dev)
    }

    fn set_pasid(&mut self, dev: DeviceId, pasid: Pasid, d: &DomainRef) -> Result<(), SmmuError> {
        let (dev, pasid) = (dev.0, pasid.0);
        let root = d.root.ok_or(SmmuError::NotPaging { pasid })?;
        if !self.streams.get(&dev).is_some_and(|s| s.aux) {
            return Err(SmmuError::AuxNotEnabled { sid: dev });
        }
        self.grow(dev, pasid)?;
        let cd = self.paging_cd(d.tag as u16, root.0, &d.format);
        self.write_cd(dev, pasid, &cd, &[])?;
        self.st_mut(dev)?.pasids.insert(pasid);
        Ok(())
    }

    fn clear_pasid(&mut self, dev: DeviceId, pasid: Pasid, d: &DomainRef) -> Result<(), SmmuError> {
        let (dev, pasid) = (dev.0, pasid.0);
        if !self
            .streams
            .get(&dev)
            .is_some_and(|s| s.pasids.contains(&pasid))
        {
            return Ok(());
        }
        // The CD goes, then whatever the TLBs hold under its ASID.
        self.write_cd(
            dev,
            pasid,
            &Cd::invalid(),
            &[Command::TlbiNhAsid {
                asid: d.tag as u16,
                vmid: self.s1_vmid(),
            }],
        )?;
        self.st_mut(dev)?.pasids.remove(&pasid);
        Ok(())
    }

    fn invalidate(
        &mut self,
        d: &DomainRef,
        _attached: &[Attachment],
        gather: &Gather,
    ) -> Result<(), SmmuError> {
        if gather.is_empty() {
            return Ok(());
        }
        // TLBI_NH_VA for the gathered ranges (ranged where IDR3.RIL says
        // so; not leaf-only when tables were freed, so walk caches go
        // too), the whole ASID when that would take too many commands;
        // one CMD_SYNC for the batch.
        let tag = d.tag as u16;
        let (stage2, vmid) = (self.translation == Translation::Stage2, self.s1_vmid());
        let (leaf, ril) = (
            gather.freed_tables.is_empty(),
            self.features.range_invalidation,
        );
        let cap = self.tlbi_cap();
        let mut cmds = Vec::new();
        for &(iova, size) in &gather.ranges {
            let room = cap.saturating_sub(cmds.len());
            let more = if stage2 {
                tlbi_s2_ipa_range(tag, iova, size, leaf, ril, room)
            } else {
                tlbi_nh_va_range(tag, vmid, iova, size, leaf, ril, room)
            };
            match more {
                Some(c) => cmds.extend(c),
                None => {
                    cmds.clear();
                    break;
                }
            }
        }
        if cmds.is_empty() {
            cmds.push(if stage2 {
                Command::TlbiS12Vmall { vmid: tag }
            } else {
                Command::TlbiNhAsid { asid: tag, vmid }
            });
        }
        self.commands(&cmds)
    }

    fn direct_regions(&self, dev: DeviceId) -> Vec<PhysRange> {
        // The RMR ranges stay reachable at their own addresses in every
        // primary paging domain, and out of its IOVA space.
        self.firmware.reserved_ranges(dev.0)
    }

    fn invalidation_batch_cap(&self) -> Option<u64> {
        Some(self.tlbi_cap() as u64)
    }

    fn msi_doorbell(&self) -> Option<PhysAddr> {
        // GITS_TRANSLATER, which the MSIs of translated devices must reach.
        self.msi_doorbell.map(PhysAddr)
    }

    fn note(&self, n: Note) {
        self.hal.note(n);
    }

    /// Stage 1 with substreams walks a CPU's tables. The SVA domain gets
    /// an ASID of its own and every CPU-side change is invalidated with
    /// explicit commands, as Linux does since 6.10: sharing the CPU's
    /// ASID pays only where IDR0.BTM lets the CPU's broadcast TLBIs reach
    /// the SMMU, and QEMU's SMMU has no BTM.
    fn sva_supported(&self) -> bool {
        self.translation != Translation::Stage2 && self.pasid_bits() > 0
    }

    /// A stage-2 domain a guest's stage 1 can be nested over
    /// (`set_nested`): the unit in stage-2 mode with stage 1 and nesting.
    fn nesting_unavailable(&self) -> Option<&'static str> {
        if self.translation != Translation::Stage2 {
            Some("the unit translates at stage 1 here; a nesting parent is a stage-2 table")
        } else if !self.features.stage1 {
            Some("the SMMU has no stage 1 (IDR0.S1P)")
        } else if !self.features.nesting {
            Some("nesting is unusable on this SMMU (erratum)")
        } else {
            None
        }
    }

    /// With HTTU's dirty-state update (IDR0.HTTU = 2) every CD carries HA
    /// and HD, every stage-2 STE S2HA and S2HD, so a domain's DBM leaves
    /// (dirty tracking on) become dirty on a write.
    fn dirty_tracking_unavailable(&self) -> Option<&'static str> {
        match self.features.httu {
            0 => Some("the SMMU updates no access flag or dirty state (IDR0.HTTU = 0)"),
            1 => Some("the SMMU updates the access flag only (IDR0.HTTU = 1)"),
            _ => None,
        }
    }

    fn sva_accepts(&self, format: &TableFormat) -> bool {
        matches!(format, TableFormat::Arm(f) if f.stage == Stage::One)
    }
}

/// The cache a command drops copies from, for the checking mode.
fn invalidates(cmd: &Command) -> Option<Cache> {
    match cmd {
        Command::CfgiSte { .. }
        | Command::CfgiCd { .. }
        | Command::CfgiCdAll { .. }
        | Command::CfgiAll => Some(Cache::Config),
        Command::TlbiNhAll { .. }
        | Command::TlbiNhAsid { .. }
        | Command::TlbiNhVa { .. }
        | Command::TlbiS2Ipa { .. }
        | Command::TlbiS12Vmall { .. }
        | Command::TlbiNsnhAll => Some(Cache::Tlb),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
