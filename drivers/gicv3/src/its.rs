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
//! inner-shareable, write-back cacheable. QEMU's ITS model is coherent, so no
//! cache cleaning is done. When an implementation only accepts non-shareable
//! for a table, the driver falls back to non-cacheable attributes for it and
//! reports `coherent == false` ([`Its::coherent`]); the driver does not clean
//! caches itself, so such a system additionally needs the memory handed out
//! by [`ItsMemory`] to be mapped non-cacheable.
//!
//! References: Arm IHI0069 (GICv3/v4 architecture specification), chapter 5
//! (the ITS: command formats, GITS_* registers) and chapter 12 (register
//! descriptions).

use core::ptr::NonNull;
use tock_registers::fields::FieldValue;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs, LocalRegisterCopy};

use crate::GicError;

/// First LPI INTID.
pub const LPI_BASE: u32 = 8192;
/// Alignment of an LPI pending table (GICR_PENDBASER holds bits [51:16]).
pub const LPI_PENDING_ALIGN: usize = 0x1_0000;
/// Alignment of the LPI configuration table (GICR_PROPBASER holds bits [51:12]).
pub const LPI_CONFIG_ALIGN: usize = 0x1000;
/// Offset of GITS_TRANSLATER from the ITS base.
pub const TRANSLATER_OFFSET: u64 = 0x1_0040;
/// Offset of the translation register page (the MSI doorbell page).
pub const TRANSLATION_PAGE_OFFSET: u64 = 0x1_0000;
/// ITT alignment required by MAPD (ITT_addr holds bits [51:8]).
pub const ITT_ALIGN: usize = 256;
/// Size of one command queue entry.
pub const CMD_BYTES: usize = 32;
/// Default command queue size.
pub const DEFAULT_QUEUE_BYTES: usize = 0x1_0000;
/// Collections whose target the driver remembers, for the trailing SYNC.
const TRACKED_COLLECTIONS: usize = 64;

/// Polls before an ITS wait is declared stuck.
const SPIN_LIMIT: u32 = 1_000_000;

/// Cacheability field values shared by GITS_CBASER, GITS_BASER<n>,
/// GICR_PROPBASER and GICR_PENDBASER.
const CACHE_SAME_AS_INNER: u64 = 0b000;
const CACHE_NON_CACHEABLE: u64 = 0b001;
const CACHE_RAWAWB: u64 = 0b111;
/// Shareability field values.
const SH_NON_SHAREABLE: u64 = 0b00;
const SH_INNER: u64 = 0b01;

register_bitfields![u32,
    GITS_CTLR [
        QUIESCENT OFFSET(31) NUMBITS(1) [],
        ENABLED OFFSET(0) NUMBITS(1) []
    ]
];

register_bitfields![u64,
    GITS_TYPER [
        /// GICR_INVLPIR-style INV/INVALL/SYNC at the ITS (GICv4.1).
        INV OFFSET(46) NUMBITS(1) [],
        /// GITS_TYPER.CIDbits is valid.
        CIL OFFSET(36) NUMBITS(1) [],
        /// Collection ID bits minus one (when CIL).
        CIDBITS OFFSET(32) NUMBITS(4) [],
        /// Collections held in hardware.
        HCC OFFSET(24) NUMBITS(8) [],
        /// Physical target addresses: RDbase is an address, not a processor number.
        PTA OFFSET(19) NUMBITS(1) [],
        SEIS OFFSET(18) NUMBITS(1) [],
        /// DeviceID bits minus one.
        DEVBITS OFFSET(13) NUMBITS(5) [],
        /// EventID bits minus one.
        IDBITS OFFSET(8) NUMBITS(5) [],
        /// Bytes per ITT entry minus one.
        ITT_ENTRY_SIZE OFFSET(4) NUMBITS(4) [],
        CCT OFFSET(2) NUMBITS(1) [],
        VIRTUAL OFFSET(1) NUMBITS(1) [],
        PHYSICAL OFFSET(0) NUMBITS(1) []
    ],
    GITS_CBASER [
        VALID OFFSET(63) NUMBITS(1) [],
        INNER_CACHE OFFSET(59) NUMBITS(3) [],
        OUTER_CACHE OFFSET(53) NUMBITS(3) [],
        /// Bits [51:12] of the queue address.
        PHYSICAL_ADDRESS OFFSET(12) NUMBITS(40) [],
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        /// Number of 4 KiB pages minus one.
        SIZE OFFSET(0) NUMBITS(8) []
    ],
    GITS_CWRITER [
        /// Byte offset of the next free entry, in units of 32 bytes.
        OFFSET OFFSET(5) NUMBITS(15) [],
        RETRY OFFSET(0) NUMBITS(1) []
    ],
    GITS_CREADR [
        OFFSET OFFSET(5) NUMBITS(15) [],
        STALLED OFFSET(0) NUMBITS(1) []
    ],
    GITS_BASER [
        VALID OFFSET(63) NUMBITS(1) [],
        INDIRECT OFFSET(62) NUMBITS(1) [],
        INNER_CACHE OFFSET(59) NUMBITS(3) [],
        TYPE OFFSET(56) NUMBITS(3) [
            Unimplemented = 0,
            Devices = 1,
            Vpes = 2,
            Collections = 4
        ],
        OUTER_CACHE OFFSET(53) NUMBITS(3) [],
        /// Bytes per entry minus one (read-only).
        ENTRY_SIZE OFFSET(48) NUMBITS(5) [],
        /// Bits [47:12] of the table address; with 64 KiB pages bits [15:12]
        /// of this field hold address bits [51:48].
        PHYSICAL_ADDRESS OFFSET(12) NUMBITS(36) [],
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        PAGE_SIZE OFFSET(8) NUMBITS(2) [
            Size4K = 0,
            Size16K = 1,
            Size64K = 2
        ],
        /// Number of pages minus one.
        SIZE OFFSET(0) NUMBITS(8) []
    ],
    // Command queue entries: four little-endian doublewords (IHI0069 5.3).
    CMD_DW0 [
        DEVICE_ID OFFSET(32) NUMBITS(32) [],
        COMMAND OFFSET(0) NUMBITS(8) []
    ],
    CMD_DW1 [
        PINTID OFFSET(32) NUMBITS(32) [],
        EVENT_ID OFFSET(0) NUMBITS(32) [],
        /// MAPD: EventID bits minus one.
        SIZE OFFSET(0) NUMBITS(5) []
    ],
    CMD_DW2 [
        VALID OFFSET(63) NUMBITS(1) [],
        /// MAPC, SYNC, MOVALL: target redistributor.
        RDBASE OFFSET(16) NUMBITS(36) [],
        /// MAPD: bits [51:8] of the ITT address.
        ITT_ADDR OFFSET(8) NUMBITS(44) [],
        ICID OFFSET(0) NUMBITS(16) []
    ],
    CMD_DW3 [
        /// MOVALL: destination redistributor.
        RDBASE2 OFFSET(16) NUMBITS(36) []
    ]
];

register_structs! {
    /// The ITS control frame (ITS_base) and translation frame (ITS_base + 64 KiB).
    pub GitsRegs {
        (0x0000 => ctlr: ReadWrite<u32, GITS_CTLR::Register>),
        (0x0004 => iidr: ReadOnly<u32>),
        (0x0008 => typer: ReadOnly<u64, GITS_TYPER::Register>),
        (0x0010 => _reserved0),
        (0x0080 => cbaser: ReadWrite<u64, GITS_CBASER::Register>),
        (0x0088 => cwriter: ReadWrite<u64, GITS_CWRITER::Register>),
        (0x0090 => creadr: ReadOnly<u64, GITS_CREADR::Register>),
        (0x0098 => _reserved1),
        (0x0100 => baser: [ReadWrite<u64, GITS_BASER::Register>; 8]),
        (0x0140 => _reserved2),
        (0x10040 => translater: WriteOnly<u32>),
        (0x10044 => _reserved3),
        (0x20000 => @END),
    }
}

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

/// What GITS_TYPER and GITS_IIDR say about this ITS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItsInfo {
    pub iidr: u32,
    pub physical: bool,
    pub virtual_lpis: bool,
    /// Bytes per ITT entry.
    pub itt_entry_size: usize,
    /// EventID width in bits.
    pub event_id_bits: u32,
    /// DeviceID width in bits.
    pub device_id_bits: u32,
    /// Collection ID width in bits (16 when GITS_TYPER.CIL is clear).
    pub collection_id_bits: u32,
    /// Targets are redistributor physical addresses (else processor numbers).
    pub pta: bool,
    /// Collections held in hardware (no table memory needed for those).
    pub hcc: u32,
}

impl ItsInfo {
    pub fn from_regs(typer: u64, iidr: u32) -> Self {
        let t = LocalRegisterCopy::<u64, GITS_TYPER::Register>::new(typer);
        ItsInfo {
            iidr,
            physical: t.is_set(GITS_TYPER::PHYSICAL),
            virtual_lpis: t.is_set(GITS_TYPER::VIRTUAL),
            itt_entry_size: t.read(GITS_TYPER::ITT_ENTRY_SIZE) as usize + 1,
            event_id_bits: t.read(GITS_TYPER::IDBITS) as u32 + 1,
            device_id_bits: t.read(GITS_TYPER::DEVBITS) as u32 + 1,
            collection_id_bits: if t.is_set(GITS_TYPER::CIL) {
                t.read(GITS_TYPER::CIDBITS) as u32 + 1
            } else {
                16
            },
            pta: t.is_set(GITS_TYPER::PTA),
            hcc: t.read(GITS_TYPER::HCC) as u32,
        }
    }
}

/// A target redistributor as commands name it: by physical address when
/// GITS_TYPER.PTA is 1, else by GICR_TYPER.Processor_Number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RdBase {
    /// Physical address of the redistributor's RD_base frame (64 KiB aligned).
    Address(u64),
    Processor(u16),
}

impl RdBase {
    /// Value of the 36-bit RDbase field (command bits [51:16]).
    fn field(self) -> u64 {
        match self {
            RdBase::Address(a) => a >> 16,
            RdBase::Processor(p) => p as u64,
        }
    }

    fn check(self, pta: bool) -> Result<(), ItsError> {
        match (self, pta) {
            (RdBase::Address(a), true) if a.is_multiple_of(0x1_0000) && a >> 52 == 0 => Ok(()),
            (RdBase::Processor(_), false) => Ok(()),
            _ => Err(ItsError::BadTarget),
        }
    }
}

/// One ITS command (IHI0069 5.3). `encode` gives the four doublewords of the
/// command queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItsCommand {
    /// Map (or with `valid == false` unmap) a device to its ITT.
    /// `size_bits` is the number of EventID bits the ITT covers (>= 1).
    Mapd {
        device_id: u32,
        itt_addr: u64,
        size_bits: u8,
        valid: bool,
    },
    /// Map (or unmap) a collection to a redistributor.
    Mapc {
        collection: u16,
        target: RdBase,
        valid: bool,
    },
    /// Map an event to LPI `intid` (>= 8192) in `collection`.
    Mapti {
        device_id: u32,
        event_id: u32,
        intid: u32,
        collection: u16,
    },
    /// MAPTI with `intid == event_id`.
    Mapi {
        device_id: u32,
        event_id: u32,
        collection: u16,
    },
    /// Re-read the configuration of the LPI an event maps to.
    Inv { device_id: u32, event_id: u32 },
    /// Re-read the configuration of every LPI routed to a collection.
    Invall { collection: u16 },
    /// Wait until the effects of earlier commands are visible at `target`.
    Sync { target: RdBase },
    /// Remove an event's mapping and clear its pending state.
    Discard { device_id: u32, event_id: u32 },
    /// Move an event's LPI to another collection.
    Movi {
        device_id: u32,
        event_id: u32,
        collection: u16,
    },
    /// Move every LPI pending at `from` to `to`.
    Movall { from: RdBase, to: RdBase },
    /// Make an event's LPI pending, as if the device had written it.
    Int { device_id: u32, event_id: u32 },
    /// Clear an event's LPI pending state.
    Clear { device_id: u32, event_id: u32 },
}

/// Command numbers, DW0 bits [7:0].
mod opcode {
    pub const MOVI: u64 = 0x01;
    pub const INT: u64 = 0x03;
    pub const CLEAR: u64 = 0x04;
    pub const SYNC: u64 = 0x05;
    pub const MAPD: u64 = 0x08;
    pub const MAPC: u64 = 0x09;
    pub const MAPTI: u64 = 0x0a;
    pub const MAPI: u64 = 0x0b;
    pub const INV: u64 = 0x0c;
    pub const INVALL: u64 = 0x0d;
    pub const MOVALL: u64 = 0x0e;
    pub const DISCARD: u64 = 0x0f;
}

/// Limits a command is checked against before it is queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandLimits {
    pub device_id_bits: u32,
    pub event_id_bits: u32,
    pub collections: u32,
    pub lpi_id_bits: u32,
    pub pta: bool,
}

impl ItsCommand {
    pub fn name(&self) -> &'static str {
        match self {
            ItsCommand::Mapd { .. } => "MAPD",
            ItsCommand::Mapc { .. } => "MAPC",
            ItsCommand::Mapti { .. } => "MAPTI",
            ItsCommand::Mapi { .. } => "MAPI",
            ItsCommand::Inv { .. } => "INV",
            ItsCommand::Invall { .. } => "INVALL",
            ItsCommand::Sync { .. } => "SYNC",
            ItsCommand::Discard { .. } => "DISCARD",
            ItsCommand::Movi { .. } => "MOVI",
            ItsCommand::Movall { .. } => "MOVALL",
            ItsCommand::Int { .. } => "INT",
            ItsCommand::Clear { .. } => "CLEAR",
        }
    }

    fn opcode(&self) -> u64 {
        match self {
            ItsCommand::Mapd { .. } => opcode::MAPD,
            ItsCommand::Mapc { .. } => opcode::MAPC,
            ItsCommand::Mapti { .. } => opcode::MAPTI,
            ItsCommand::Mapi { .. } => opcode::MAPI,
            ItsCommand::Inv { .. } => opcode::INV,
            ItsCommand::Invall { .. } => opcode::INVALL,
            ItsCommand::Sync { .. } => opcode::SYNC,
            ItsCommand::Discard { .. } => opcode::DISCARD,
            ItsCommand::Movi { .. } => opcode::MOVI,
            ItsCommand::Movall { .. } => opcode::MOVALL,
            ItsCommand::Int { .. } => opcode::INT,
            ItsCommand::Clear { .. } => opcode::CLEAR,
        }
    }

    /// The 32-byte queue entry as four doublewords. Fields are truncated to
    /// their widths; [`Self::check`] rejects values that would not fit.
    pub fn encode(&self) -> [u64; 4] {
        let op = CMD_DW0::COMMAND.val(self.opcode());
        let dev = |d: u32| (op + CMD_DW0::DEVICE_ID.val(d as u64)).value;
        let ev = |e: u32| CMD_DW1::EVENT_ID.val(e as u64).value;
        let icid = |c: u16| CMD_DW2::ICID.val(c as u64).value;
        match *self {
            ItsCommand::Mapd {
                device_id,
                itt_addr,
                size_bits,
                valid,
            } => [
                dev(device_id),
                CMD_DW1::SIZE
                    .val((size_bits as u64).saturating_sub(1))
                    .value,
                (CMD_DW2::ITT_ADDR.val(itt_addr >> 8) + CMD_DW2::VALID.val(valid as u64)).value,
                0,
            ],
            ItsCommand::Mapc {
                collection,
                target,
                valid,
            } => [
                op.value,
                0,
                (CMD_DW2::ICID.val(collection as u64)
                    + CMD_DW2::RDBASE.val(target.field())
                    + CMD_DW2::VALID.val(valid as u64))
                .value,
                0,
            ],
            ItsCommand::Mapti {
                device_id,
                event_id,
                intid,
                collection,
            } => [
                dev(device_id),
                (CMD_DW1::EVENT_ID.val(event_id as u64) + CMD_DW1::PINTID.val(intid as u64)).value,
                icid(collection),
                0,
            ],
            ItsCommand::Mapi {
                device_id,
                event_id,
                collection,
            }
            | ItsCommand::Movi {
                device_id,
                event_id,
                collection,
            } => [dev(device_id), ev(event_id), icid(collection), 0],
            ItsCommand::Inv {
                device_id,
                event_id,
            }
            | ItsCommand::Discard {
                device_id,
                event_id,
            }
            | ItsCommand::Int {
                device_id,
                event_id,
            }
            | ItsCommand::Clear {
                device_id,
                event_id,
            } => [dev(device_id), ev(event_id), 0, 0],
            ItsCommand::Invall { collection } => [op.value, 0, icid(collection), 0],
            ItsCommand::Sync { target } => {
                [op.value, 0, CMD_DW2::RDBASE.val(target.field()).value, 0]
            }
            ItsCommand::Movall { from, to } => [
                op.value,
                0,
                CMD_DW2::RDBASE.val(from.field()).value,
                CMD_DW3::RDBASE2.val(to.field()).value,
            ],
        }
    }

    /// Rejects identifiers the ITS or the driver's tables cannot hold.
    pub fn check(&self, l: &CommandLimits) -> Result<(), ItsError> {
        let device = |d: u32| check_bits(IdKind::Device, d as u64, l.device_id_bits);
        let event = |e: u32| check_bits(IdKind::Event, e as u64, l.event_id_bits);
        let collection = |c: u16| {
            if (c as u32) < l.collections {
                Ok(())
            } else {
                Err(ItsError::BadId {
                    kind: IdKind::Collection,
                    id: c as u64,
                })
            }
        };
        match *self {
            ItsCommand::Mapd {
                device_id,
                itt_addr,
                size_bits,
                valid,
            } => {
                device(device_id)?;
                if valid {
                    if size_bits == 0 || size_bits as u32 > l.event_id_bits {
                        return Err(ItsError::BadId {
                            kind: IdKind::EventCount,
                            id: size_bits as u64,
                        });
                    }
                    if !itt_addr.is_multiple_of(ITT_ALIGN as u64) || itt_addr >> 52 != 0 {
                        return Err(ItsError::Misaligned {
                            addr: itt_addr,
                            align: ITT_ALIGN as u64,
                        });
                    }
                }
                Ok(())
            }
            ItsCommand::Mapc {
                collection: c,
                target,
                ..
            } => {
                collection(c)?;
                target.check(l.pta)
            }
            ItsCommand::Mapti {
                device_id,
                event_id,
                intid,
                collection: c,
            } => {
                device(device_id)?;
                event(event_id)?;
                collection(c)?;
                if intid < LPI_BASE || (l.lpi_id_bits < 32 && intid >> l.lpi_id_bits != 0) {
                    return Err(ItsError::BadId {
                        kind: IdKind::Lpi,
                        id: intid as u64,
                    });
                }
                Ok(())
            }
            ItsCommand::Mapi {
                device_id,
                event_id,
                collection: c,
            } => ItsCommand::Mapti {
                device_id,
                event_id,
                intid: event_id,
                collection: c,
            }
            .check(l),
            ItsCommand::Movi {
                device_id,
                event_id,
                collection: c,
            } => {
                device(device_id)?;
                event(event_id)?;
                collection(c)
            }
            ItsCommand::Inv {
                device_id,
                event_id,
            }
            | ItsCommand::Discard {
                device_id,
                event_id,
            }
            | ItsCommand::Int {
                device_id,
                event_id,
            }
            | ItsCommand::Clear {
                device_id,
                event_id,
            } => {
                device(device_id)?;
                event(event_id)
            }
            ItsCommand::Invall { collection: c } => collection(c),
            ItsCommand::Sync { target } => target.check(l.pta),
            ItsCommand::Movall { from, to } => {
                from.check(l.pta)?;
                to.check(l.pta)
            }
        }
    }

    /// The collection a command names, if any.
    fn collection(&self) -> Option<u16> {
        match *self {
            ItsCommand::Mapc { collection, .. }
            | ItsCommand::Mapti { collection, .. }
            | ItsCommand::Mapi { collection, .. }
            | ItsCommand::Movi { collection, .. }
            | ItsCommand::Invall { collection } => Some(collection),
            _ => None,
        }
    }
}

fn check_bits(kind: IdKind, id: u64, bits: u32) -> Result<(), ItsError> {
    if bits >= 64 || id >> bits == 0 {
        Ok(())
    } else {
        Err(ItsError::BadId { kind, id })
    }
}

/// Producer side of the command queue, as pure arithmetic: byte offsets of
/// slots in a ring of `size` bytes. One slot always stays empty, so
/// `write == read` means empty and the ring holds `slots() - 1` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRing {
    /// Physical address of the queue.
    pub base: u64,
    size: usize,
    write: usize,
}

impl CommandRing {
    /// `size` must be a multiple of 4 KiB between 4 KiB and 1 MiB
    /// (GITS_CBASER.Size counts up to 256 pages of 4 KiB).
    pub fn new(base: u64, size: usize) -> Option<Self> {
        if size == 0 || !size.is_multiple_of(0x1000) || size > 256 * 0x1000 {
            return None;
        }
        Some(CommandRing {
            base,
            size,
            write: 0,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn slots(&self) -> usize {
        self.size / CMD_BYTES
    }

    /// The GITS_CWRITER offset: the next slot to be written.
    pub fn write_offset(&self) -> usize {
        self.write
    }

    /// Commands written but not yet consumed, given the GITS_CREADR offset.
    pub fn pending(&self, read: usize) -> usize {
        let read = read % self.size;
        (self.write + self.size - read) % self.size / CMD_BYTES
    }

    pub fn free(&self, read: usize) -> usize {
        self.slots() - 1 - self.pending(read)
    }

    pub fn is_full(&self, read: usize) -> bool {
        self.free(read) == 0
    }

    /// Claims the next slot: its byte offset, with the write offset advanced
    /// past it (wrapping). `None` when the ring is full.
    pub fn push(&mut self, read: usize) -> Option<usize> {
        if self.is_full(read) {
            return None;
        }
        let slot = self.write;
        self.write = (self.write + CMD_BYTES) % self.size;
        Some(slot)
    }
}

/// GITS_BASER<n>.Page_Size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    Size4K,
    Size16K,
    Size64K,
}

impl PageSize {
    pub const fn bytes(self) -> usize {
        match self {
            PageSize::Size4K => 0x1000,
            PageSize::Size16K => 0x4000,
            PageSize::Size64K => 0x1_0000,
        }
    }

    fn field(self) -> u64 {
        match self {
            PageSize::Size4K => 0,
            PageSize::Size16K => 1,
            PageSize::Size64K => 2,
        }
    }

    fn from_field(v: u64) -> Option<Self> {
        match v {
            0 => Some(PageSize::Size4K),
            1 => Some(PageSize::Size16K),
            2 => Some(PageSize::Size64K),
            _ => None,
        }
    }
}

/// Largest page size first, as Linux tries them.
const PAGE_SIZES: [PageSize; 3] = [PageSize::Size64K, PageSize::Size16K, PageSize::Size4K];

/// Finds a page size the register keeps: `write_read_back(p)` writes a BASER
/// value with page size `p` (Valid clear) and returns the page size read back.
pub fn negotiate_page_size(
    mut write_read_back: impl FnMut(PageSize) -> Option<PageSize>,
) -> Option<PageSize> {
    PAGE_SIZES
        .into_iter()
        .find(|&p| write_read_back(p) == Some(p))
}

/// Pages of `page` size needed for `entries` entries of `entry_size` bytes,
/// if GITS_BASER<n>.Size (at most 256 pages) can describe them.
pub fn table_pages(entries: u64, entry_size: usize, page: PageSize) -> Option<usize> {
    let bytes = entries.checked_mul(entry_size as u64)?;
    let pages = bytes.div_ceil(page.bytes() as u64).max(1);
    (pages <= 256).then_some(pages as usize)
}

/// A GITS_BASER<n> value for a flat table at `phys` of `pages` pages.
/// `current` supplies the read-only Type and Entry_Size fields. `coherent`
/// selects inner-shareable write-back, else non-shareable non-cacheable.
pub fn baser_value(
    current: u64,
    phys: u64,
    page: PageSize,
    pages: usize,
    coherent: bool,
    valid: bool,
) -> u64 {
    let addr_field = match page {
        // Bits [47:16] in place, bits [51:48] in field bits [15:12].
        PageSize::Size64K => ((phys & 0x0000_ffff_ffff_0000) >> 12) | ((phys >> 48) & 0xf),
        _ => (phys & 0x0000_ffff_ffff_f000) >> 12,
    };
    let keep = GITS_BASER::TYPE.mask << GITS_BASER::TYPE.shift
        | GITS_BASER::ENTRY_SIZE.mask << GITS_BASER::ENTRY_SIZE.shift;
    let (inner, sh) = attrs(coherent);
    let v: FieldValue<u64, GITS_BASER::Register> = GITS_BASER::VALID.val(valid as u64)
        + GITS_BASER::INDIRECT::CLEAR
        + GITS_BASER::INNER_CACHE.val(inner)
        + GITS_BASER::OUTER_CACHE.val(CACHE_SAME_AS_INNER)
        + GITS_BASER::PHYSICAL_ADDRESS.val(addr_field)
        + GITS_BASER::SHAREABILITY.val(sh)
        + GITS_BASER::PAGE_SIZE.val(page.field())
        + GITS_BASER::SIZE.val(pages.saturating_sub(1) as u64);
    (current & keep) | v.value
}

/// A GITS_CBASER value for a queue of `bytes` (a multiple of 4 KiB) at `phys`.
pub fn cbaser_value(phys: u64, bytes: usize, coherent: bool) -> u64 {
    let (inner, sh) = attrs(coherent);
    (GITS_CBASER::VALID::SET
        + GITS_CBASER::INNER_CACHE.val(inner)
        + GITS_CBASER::OUTER_CACHE.val(CACHE_SAME_AS_INNER)
        + GITS_CBASER::PHYSICAL_ADDRESS.val(phys >> 12)
        + GITS_CBASER::SHAREABILITY.val(sh)
        + GITS_CBASER::SIZE.val((bytes / 0x1000).saturating_sub(1) as u64))
    .value
}

/// GICR_PROPBASER for a configuration table at `phys` covering `id_bits`
/// INTID bits.
pub fn propbaser_value(phys: u64, id_bits: u32, coherent: bool) -> u64 {
    use crate::GICR_PROPBASER as P;
    let (inner, sh) = attrs(coherent);
    (P::OUTER_CACHE.val(CACHE_SAME_AS_INNER)
        + P::PHYSICAL_ADDRESS.val(phys >> 12)
        + P::SHAREABILITY.val(sh)
        + P::INNER_CACHE.val(inner)
        + P::ID_BITS.val(id_bits.saturating_sub(1) as u64))
    .value
}

/// GICR_PENDBASER for a zeroed pending table at `phys` (PTZ set).
pub fn pendbaser_value(phys: u64, coherent: bool) -> u64 {
    use crate::GICR_PENDBASER as P;
    let (inner, sh) = attrs(coherent);
    (P::PTZ::SET
        + P::OUTER_CACHE.val(CACHE_SAME_AS_INNER)
        + P::PHYSICAL_ADDRESS.val(phys >> 16)
        + P::SHAREABILITY.val(sh)
        + P::INNER_CACHE.val(inner))
    .value
}

fn attrs(coherent: bool) -> (u64, u64) {
    if coherent {
        (CACHE_RAWAWB, SH_INNER)
    } else {
        (CACHE_NON_CACHEABLE, SH_NON_SHAREABLE)
    }
}

/// Size and EventID width of one device's ITT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IttLayout {
    /// EventID bits (MAPD Size + 1); the ITT has `1 << event_bits` entries.
    pub event_bits: u8,
    /// Bytes to allocate (256-byte aligned).
    pub bytes: usize,
}

/// ITT for `event_count` events: at least two entries, a power of two,
/// no more than `max_event_bits` EventID bits allow.
pub fn itt_layout(
    event_count: u32,
    entry_size: usize,
    max_event_bits: u32,
) -> Result<IttLayout, ItsError> {
    let bad = ItsError::BadId {
        kind: IdKind::EventCount,
        id: event_count as u64,
    };
    if event_count == 0 {
        return Err(bad);
    }
    let entries = (event_count as u64).next_power_of_two().max(2);
    let bits = entries.trailing_zeros();
    if bits > max_event_bits {
        return Err(bad);
    }
    let bytes = (entries as usize * entry_size).next_multiple_of(ITT_ALIGN);
    Ok(IttLayout {
        event_bits: bits as u8,
        bytes,
    })
}

/// LPI configuration byte (IHI0069 5.1.1): priority in bits [7:2], bit 1
/// RES1, enable in bit 0.
pub const fn lpi_config_byte(priority: u8, enabled: bool) -> u8 {
    (priority & 0xfc) | 0b10 | enabled as u8
}

/// Bytes of the LPI configuration table for `id_bits` INTID bits: one per
/// LPI, starting at INTID 8192.
pub const fn lpi_config_table_bytes(id_bits: u32) -> usize {
    (1usize << id_bits) - LPI_BASE as usize
}

/// Bytes of one LPI pending table for `id_bits` INTID bits: one bit per
/// INTID (the first 1 KiB covers INTIDs below 8192), rounded to 64 KiB.
pub const fn lpi_pending_table_bytes(id_bits: u32) -> usize {
    ((1usize << id_bits) / 8).next_multiple_of(LPI_PENDING_ALIGN)
}

/// Priority new LPIs get in a fresh configuration table.
pub const DEFAULT_LPI_PRIORITY: u8 = 0xa0;

/// The LPI configuration table shared by the redistributors (GICR_PROPBASER).
pub struct LpiConfigTable {
    phys: u64,
    virt: NonNull<u8>,
    id_bits: u32,
}

// SAFETY: the table memory is owned by this value; the GIC only reads it.
unsafe impl Send for LpiConfigTable {}

impl LpiConfigTable {
    /// Allocates a table for `id_bits` INTID bits (14..=24; no more than
    /// the distributor's GICD_TYPER.IDbits + 1), every LPI disabled at
    /// [`DEFAULT_LPI_PRIORITY`].
    pub fn alloc(mem: &mut dyn ItsMemory, id_bits: u32) -> Result<Self, GicError> {
        if !(14..=24).contains(&id_bits) {
            return Err(GicError::BadIntId(id_bits));
        }
        let bytes = lpi_config_table_bytes(id_bits);
        let (phys, virt) = mem
            .alloc_zeroed(bytes, LPI_CONFIG_ALIGN)
            .ok_or(GicError::NoMemory)?;
        let virt = NonNull::new(virt).ok_or(GicError::NoMemory)?;
        if !phys.is_multiple_of(LPI_CONFIG_ALIGN as u64) {
            return Err(GicError::Misaligned {
                addr: phys,
                align: LPI_CONFIG_ALIGN as u64,
            });
        }
        // SAFETY: `bytes` of fresh memory from the allocator.
        let t = unsafe { Self::from_raw(phys, virt, id_bits) };
        for i in 0..bytes {
            // SAFETY: i < bytes, inside the allocation.
            unsafe {
                virt.as_ptr()
                    .add(i)
                    .write_volatile(lpi_config_byte(DEFAULT_LPI_PRIORITY, false))
            };
        }
        Ok(t)
    }

    /// # Safety
    /// `virt` must map `lpi_config_table_bytes(id_bits)` bytes at `phys`,
    /// 4 KiB aligned, owned by the returned value.
    pub unsafe fn from_raw(phys: u64, virt: NonNull<u8>, id_bits: u32) -> Self {
        LpiConfigTable {
            phys,
            virt,
            id_bits,
        }
    }

    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// INTID bits covered (GICR_PROPBASER.IDbits + 1).
    pub fn id_bits(&self) -> u32 {
        self.id_bits
    }

    /// One past the largest LPI the table covers.
    pub fn lpi_end(&self) -> u32 {
        (1u64 << self.id_bits).min(u32::MAX as u64) as u32
    }

    fn index(&self, lpi: u32) -> Result<usize, GicError> {
        if lpi < LPI_BASE || lpi >= self.lpi_end() {
            return Err(GicError::BadIntId(lpi));
        }
        Ok((lpi - LPI_BASE) as usize)
    }

    /// Writes LPI `lpi`'s configuration byte. The redistributors may cache
    /// it: follow with an ITS INV for the event that maps to it (see
    /// [`Its::set_lpi_config`]) or `Redistributor::inv_lpi`.
    pub fn set(&mut self, lpi: u32, priority: u8, enabled: bool) -> Result<(), GicError> {
        let i = self.index(lpi)?;
        // SAFETY: i is inside the table (`from_raw`'s contract).
        unsafe {
            self.virt
                .as_ptr()
                .add(i)
                .write_volatile(lpi_config_byte(priority, enabled))
        };
        Ok(())
    }

    pub fn get(&self, lpi: u32) -> Result<u8, GicError> {
        let i = self.index(lpi)?;
        // SAFETY: i is inside the table.
        Ok(unsafe { self.virt.as_ptr().add(i).read_volatile() })
    }
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
        let (phys, _virt) = mem
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
        let (itt_phys, _virt) = mem
            .alloc_zeroed(layout.bytes, ITT_ALIGN)
            .ok_or(ItsError::NoMemory)?;
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
pub(crate) mod tests {
    extern crate std;
    use super::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    use std::vec;
    use std::vec::Vec;

    // Command field positions (IHI0069 5.3, "ITS command descriptions"):
    //   DW0 [7:0] command number, DW0 [63:32] DeviceID,
    //   DW1 [31:0] EventID, DW1 [63:32] pINTID, DW1 [4:0] MAPD Size,
    //   DW2 [15:0] ICID, DW2 [51:16] RDbase, DW2 [51:8] ITT_addr, DW2 [63] V,
    //   DW3 [51:16] RDbase2 (MOVALL).
    // Numbers: MOVI 0x01, INT 0x03, CLEAR 0x04, SYNC 0x05, MAPD 0x08,
    // MAPC 0x09, MAPTI 0x0A, MAPI 0x0B, INV 0x0C, INVALL 0x0D, MOVALL 0x0E,
    // DISCARD 0x0F.
    const V: u64 = 1 << 63;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<GitsRegs>(), 0x20000);
        assert_eq!(core::mem::offset_of!(GitsRegs, translater), 0x10040);
        assert_eq!(core::mem::offset_of!(GitsRegs, baser), 0x100);
        assert_eq!(core::mem::offset_of!(GitsRegs, creadr), 0x90);
    }

    #[test]
    fn encode_mapd() {
        let c = ItsCommand::Mapd {
            device_id: 0x1234_5678,
            itt_addr: 0x8_1234_5600,
            size_bits: 5,
            valid: true,
        };
        assert_eq!(c.encode(), [0x1234_5678_0000_0008, 4, V | 0x8_1234_5600, 0]);
        // Unmap: V clear, ITT ignored.
        let c = ItsCommand::Mapd {
            device_id: 1,
            itt_addr: 0,
            size_bits: 0,
            valid: false,
        };
        assert_eq!(c.encode(), [(1 << 32) | 0x08, 0, 0, 0]);
        // ITT_addr holds bits [51:8] only: bits 52+ and 7:0 are dropped.
        let c = ItsCommand::Mapd {
            device_id: 0,
            itt_addr: (1 << 52) | 0xff,
            size_bits: 1,
            valid: false,
        };
        assert_eq!(c.encode()[2], 0);
    }

    #[test]
    fn encode_mapc_and_sync() {
        let c = ItsCommand::Mapc {
            collection: 3,
            target: RdBase::Processor(2),
            valid: true,
        };
        assert_eq!(c.encode(), [0x09, 0, V | (2 << 16) | 3, 0]);
        // PTA = 1: RDbase is address bits [51:16], in place.
        let c = ItsCommand::Mapc {
            collection: 0xffff,
            target: RdBase::Address(0x000f_0808_00a0_0000),
            valid: false,
        };
        assert_eq!(c.encode(), [0x09, 0, 0x000f_0808_00a0_0000 | 0xffff, 0]);
        let c = ItsCommand::Sync {
            target: RdBase::Processor(0x1234),
        };
        assert_eq!(c.encode(), [0x05, 0, 0x1234 << 16, 0]);
        let c = ItsCommand::Movall {
            from: RdBase::Processor(1),
            to: RdBase::Address(0x80a_0000),
        };
        assert_eq!(c.encode(), [0x0e, 0, 1 << 16, 0x80a_0000]);
    }

    #[test]
    fn encode_event_commands() {
        let dw0 = |op: u64| (0xabcd_ef01u64 << 32) | op;
        let c = ItsCommand::Mapti {
            device_id: 0xabcd_ef01,
            event_id: 0x8765_4321,
            intid: 8192 + 5,
            collection: 0x4321,
        };
        assert_eq!(
            c.encode(),
            [dw0(0x0a), (8197 << 32) | 0x8765_4321, 0x4321, 0]
        );
        let c = ItsCommand::Mapi {
            device_id: 0xabcd_ef01,
            event_id: 9,
            collection: 1,
        };
        assert_eq!(c.encode(), [dw0(0x0b), 9, 1, 0]);
        let c = ItsCommand::Movi {
            device_id: 0xabcd_ef01,
            event_id: 9,
            collection: 7,
        };
        assert_eq!(c.encode(), [dw0(0x01), 9, 7, 0]);
        for (op, c) in [
            (
                0x0c,
                ItsCommand::Inv {
                    device_id: 0xabcd_ef01,
                    event_id: 0xffff_ffff,
                },
            ),
            (
                0x0f,
                ItsCommand::Discard {
                    device_id: 0xabcd_ef01,
                    event_id: 0xffff_ffff,
                },
            ),
            (
                0x03,
                ItsCommand::Int {
                    device_id: 0xabcd_ef01,
                    event_id: 0xffff_ffff,
                },
            ),
            (
                0x04,
                ItsCommand::Clear {
                    device_id: 0xabcd_ef01,
                    event_id: 0xffff_ffff,
                },
            ),
        ] {
            assert_eq!(c.encode(), [dw0(op), 0xffff_ffff, 0, 0], "{}", c.name());
        }
        let c = ItsCommand::Invall { collection: 0xbeef };
        assert_eq!(c.encode(), [0x0d, 0, 0xbeef, 0]);
    }

    fn limits() -> CommandLimits {
        CommandLimits {
            device_id_bits: 16,
            event_id_bits: 16,
            collections: 4,
            lpi_id_bits: 16,
            pta: false,
        }
    }

    #[test]
    fn check_rejects_out_of_range() {
        let l = limits();
        let bad = |kind, id| Err(ItsError::BadId { kind, id });
        let mapti = |device_id, event_id, intid, collection| ItsCommand::Mapti {
            device_id,
            event_id,
            intid,
            collection,
        };
        assert_eq!(mapti(0xffff, 0xffff, 8192, 3).check(&l), Ok(()));
        assert_eq!(
            mapti(0x1_0000, 0, 8192, 0).check(&l),
            bad(IdKind::Device, 0x1_0000)
        );
        assert_eq!(
            mapti(0, 0x1_0000, 8192, 0).check(&l),
            bad(IdKind::Event, 0x1_0000)
        );
        assert_eq!(mapti(0, 0, 8191, 0).check(&l), bad(IdKind::Lpi, 8191));
        assert_eq!(
            mapti(0, 0, 0x1_0000, 0).check(&l),
            bad(IdKind::Lpi, 0x1_0000)
        );
        assert_eq!(mapti(0, 0, 8192, 4).check(&l), bad(IdKind::Collection, 4));
        // MAPI's LPI is the EventID.
        let mapi = ItsCommand::Mapi {
            device_id: 0,
            event_id: 5,
            collection: 0,
        };
        assert_eq!(mapi.check(&l), bad(IdKind::Lpi, 5));
        let mapd = |itt_addr, size_bits| ItsCommand::Mapd {
            device_id: 0,
            itt_addr,
            size_bits,
            valid: true,
        };
        assert_eq!(mapd(0x4000_0100, 16).check(&l), Ok(()));
        assert_eq!(
            mapd(0x4000_0080, 1).check(&l),
            Err(ItsError::Misaligned {
                addr: 0x4000_0080,
                align: 256
            })
        );
        assert_eq!(mapd(0x4000_0000, 17).check(&l), bad(IdKind::EventCount, 17));
        assert_eq!(mapd(0x4000_0000, 0).check(&l), bad(IdKind::EventCount, 0));
        // PTA decides the target form.
        let sync = |target| ItsCommand::Sync { target };
        assert_eq!(sync(RdBase::Processor(0)).check(&l), Ok(()));
        assert_eq!(
            sync(RdBase::Address(0x80a_0000)).check(&l),
            Err(ItsError::BadTarget)
        );
        let pta = CommandLimits { pta: true, ..l };
        assert_eq!(sync(RdBase::Address(0x80a_0000)).check(&pta), Ok(()));
        assert_eq!(
            sync(RdBase::Address(0x80a_8000)).check(&pta),
            Err(ItsError::BadTarget)
        );
        assert_eq!(
            sync(RdBase::Processor(0)).check(&pta),
            Err(ItsError::BadTarget)
        );
    }

    #[test]
    fn ring_wraps_and_fills() {
        assert!(CommandRing::new(0, 0).is_none());
        assert!(CommandRing::new(0, 0x1800).is_none());
        assert!(CommandRing::new(0, 0x10_1000).is_none());
        let mut r = CommandRing::new(0x4000_0000, 0x1000).unwrap();
        assert_eq!(r.slots(), 128);
        // Empty ring: 127 usable slots (one stays empty).
        assert_eq!(r.free(0), 127);
        for i in 0..127 {
            assert_eq!(r.push(0), Some(i * 32));
        }
        assert!(r.is_full(0));
        assert_eq!(r.push(0), None);
        assert_eq!(r.write_offset(), 127 * 32);
        assert_eq!(r.pending(0), 127);
        // The ITS consumed 3 entries: 3 slots free, and the write wraps.
        assert_eq!(r.free(3 * 32), 3);
        assert_eq!(r.push(3 * 32), Some(127 * 32));
        assert_eq!(r.write_offset(), 0);
        assert_eq!(r.push(3 * 32), Some(0));
        assert_eq!(r.push(3 * 32), Some(32));
        assert_eq!(r.push(3 * 32), None);
        assert_eq!(r.pending(3 * 32), 127);
        // Everything consumed.
        assert_eq!(r.pending(64), 0);
        assert_eq!(r.free(64), 127);
    }

    #[test]
    fn baser_composition() {
        // Read-only fields of a device BASER: Type = 1 (bits [58:56]),
        // Entry_Size = 8 - 1 (bits [52:48]); some junk in writable bits.
        let cur = (1 << 56) | (7 << 48) | 0xfff;
        let v = baser_value(cur, 0x4012_0000, PageSize::Size64K, 8, true, true);
        let expect = V                       // Valid
            | (0b111 << 59)                  // InnerCache RaWaWb
            | (1 << 56)                      // Type (kept)
            | (7 << 48)                      // Entry_Size (kept)
            | 0x4012_0000                    // PA bits [47:16] in place
            | (0b01 << 10)                   // Inner shareable
            | (0b10 << 8)                    // Page_Size 64K
            | 7; // Size = pages - 1
        assert_eq!(v, expect);
        // 64 KiB pages: PA bits [51:48] go to register bits [15:12].
        let v = baser_value(0, 0x000a_0000_1234_0000, PageSize::Size64K, 1, true, false);
        assert_eq!(v & 0x0000_ffff_ffff_f000, 0x1234_0000 | (0xa << 12));
        // 4 KiB pages, non-coherent fallback: non-cacheable, non-shareable.
        let v = baser_value(0, 0x4012_3000, PageSize::Size4K, 256, false, true);
        assert_eq!(v, V | (0b001 << 59) | 0x4012_3000 | 255);
        let v = baser_value(0, 0x4012_4000, PageSize::Size16K, 2, true, true);
        assert_eq!(
            v,
            V | (0b111 << 59) | 0x4012_4000 | (0b01 << 10) | (0b01 << 8) | 1
        );
    }

    #[test]
    fn cbaser_and_lpi_bases() {
        // GITS_CBASER: Valid 63, InnerCache [61:59], PA [51:12], Sh [11:10],
        // Size [7:0] = 4 KiB pages - 1.
        assert_eq!(
            cbaser_value(0x4001_0000, 0x1_0000, true),
            V | (0b111 << 59) | 0x4001_0000 | (1 << 10) | 15
        );
        // GICR_PROPBASER: OuterCache [58:56], PA [51:12], Sh [11:10],
        // InnerCache [9:7], IDbits [4:0] = INTID bits - 1.
        assert_eq!(
            propbaser_value(0x4020_3000, 16, true),
            0x4020_3000 | (1 << 10) | (0b111 << 7) | 15
        );
        assert_eq!(
            propbaser_value(0x4020_3000, 16, false),
            0x4020_3000 | (0b001 << 7) | 15
        );
        // GICR_PENDBASER: PTZ 62, PA [51:16], Sh [11:10], InnerCache [9:7].
        assert_eq!(
            pendbaser_value(0x4030_0000, true),
            (1 << 62) | 0x4030_0000 | (1 << 10) | (0b111 << 7)
        );
    }

    #[test]
    fn page_size_negotiation() {
        // Register that keeps whatever it is given.
        assert_eq!(negotiate_page_size(Some), Some(PageSize::Size64K));
        // Fixed at 4 KiB.
        assert_eq!(
            negotiate_page_size(|_| Some(PageSize::Size4K)),
            Some(PageSize::Size4K)
        );
        // Accepts 16 KiB and 4 KiB, reads 64 KiB back as 16 KiB.
        let mut tried = Vec::new();
        let got = negotiate_page_size(|p| {
            tried.push(p);
            Some(if p == PageSize::Size64K {
                PageSize::Size16K
            } else {
                p
            })
        });
        assert_eq!(got, Some(PageSize::Size16K));
        assert_eq!(tried, [PageSize::Size64K, PageSize::Size16K]);
        // Reads back the reserved encoding: nothing accepted.
        assert_eq!(negotiate_page_size(|_| None), None);
    }

    #[test]
    fn table_sizes() {
        assert_eq!(table_pages(1 << 16, 8, PageSize::Size64K), Some(8));
        assert_eq!(table_pages(1, 8, PageSize::Size64K), Some(1));
        assert_eq!(table_pages(1 << 21, 8, PageSize::Size64K), Some(256));
        assert_eq!(table_pages(1 << 22, 8, PageSize::Size64K), None);
        assert_eq!(table_pages(1 << 16, 8, PageSize::Size4K), Some(128));
        assert_eq!(table_pages(u64::MAX, 8, PageSize::Size4K), None);
    }

    #[test]
    fn itt_sizes() {
        let l = |n, esz, max| itt_layout(n, esz, max);
        // QEMU's ITT entries are 12 bytes.
        assert_eq!(
            l(1, 12, 16),
            Ok(IttLayout {
                event_bits: 1,
                bytes: 256
            })
        );
        assert_eq!(
            l(2, 12, 16),
            Ok(IttLayout {
                event_bits: 1,
                bytes: 256
            })
        );
        assert_eq!(
            l(32, 12, 16),
            Ok(IttLayout {
                event_bits: 5,
                bytes: 512
            })
        );
        assert_eq!(
            l(33, 12, 16),
            Ok(IttLayout {
                event_bits: 6,
                bytes: 768
            })
        );
        assert_eq!(
            l(1 << 16, 8, 16),
            Ok(IttLayout {
                event_bits: 16,
                bytes: 1 << 19
            })
        );
        let bad = |id| {
            Err(ItsError::BadId {
                kind: IdKind::EventCount,
                id,
            })
        };
        assert_eq!(l(0, 8, 16), bad(0));
        assert_eq!(l((1 << 16) + 1, 8, 16), bad((1 << 16) + 1));
    }

    #[test]
    fn lpi_config_bytes() {
        // Priority [7:2], bit 1 RES1, Enable bit 0.
        assert_eq!(lpi_config_byte(0xa0, true), 0xa3);
        assert_eq!(lpi_config_byte(0xa0, false), 0xa2);
        assert_eq!(lpi_config_byte(0xff, false), 0xfe);
        assert_eq!(lpi_config_byte(0x01, true), 0x03);
        assert_eq!(lpi_config_table_bytes(14), 8192);
        assert_eq!(lpi_config_table_bytes(16), 57344);
        assert_eq!(lpi_pending_table_bytes(16), 0x1_0000);
        assert_eq!(lpi_pending_table_bytes(20), 0x2_0000);
    }

    #[test]
    fn info_from_typer() {
        // QEMU: Physical, ITT_entry_size 12-1, IDbits 16-1, Devbits 16-1,
        // CIL, CIDbits 16-1.
        let typer = 1 | (11 << 4) | (15 << 8) | (15 << 13) | (15 << 32) | (1 << 36);
        let i = ItsInfo::from_regs(typer, 0x43b);
        assert_eq!(
            i,
            ItsInfo {
                iidr: 0x43b,
                physical: true,
                virtual_lpis: false,
                itt_entry_size: 12,
                event_id_bits: 16,
                device_id_bits: 16,
                collection_id_bits: 16,
                pta: false,
                hcc: 0,
            }
        );
        // PTA (bit 19), HCC [31:24], Devbits 32, no CIL: 16-bit ICIDs.
        let i = ItsInfo::from_regs((1 << 19) | (4 << 24) | (31 << 13) | (7 << 4), 0);
        assert!(i.pta && !i.physical);
        assert_eq!((i.hcc, i.device_id_bits, i.collection_id_bits), (4, 32, 16));
        assert_eq!(i.itt_entry_size, 8);
    }

    /// Memory for tests: physical addresses are an offset into a 64 KiB
    /// aligned buffer plus a fake RAM base, so phys != virt.
    pub(crate) struct Arena {
        _buf: Vec<u8>,
        base: usize,
        size: usize,
        used: usize,
    }

    pub(crate) const FAKE_RAM: u64 = 0x8000_0000;

    impl Arena {
        pub(crate) fn new(size: usize) -> Self {
            let mut buf = vec![0u8; size + 0x1_0000];
            let base = (buf.as_mut_ptr() as usize).next_multiple_of(0x1_0000);
            Arena {
                _buf: buf,
                base,
                size,
                used: 0,
            }
        }
        pub(crate) fn virt(&self, phys: u64) -> *mut u8 {
            (self.base + (phys - FAKE_RAM) as usize) as *mut u8
        }
    }

    impl ItsMemory for Arena {
        fn alloc_zeroed(&mut self, bytes: usize, align: usize) -> Option<(u64, *mut u8)> {
            let off = self.used.next_multiple_of(align);
            if off + bytes > self.size {
                return None;
            }
            self.used = off + bytes;
            Some((FAKE_RAM + off as u64, (self.base + off) as *mut u8))
        }
    }

    /// A register frame in plain memory, preset like QEMU's ITS.
    struct FakeIts {
        regs: Vec<u64>,
    }

    impl FakeIts {
        fn new() -> Self {
            let mut f = FakeIts {
                regs: vec![0; 0x20000 / 8],
            };
            f.set(0x0, 1 << 31); // CTLR.Quiescent
            f.set(
                0x8,
                1 | (11 << 4) | (15 << 8) | (15 << 13) | (15 << 32) | (1 << 36),
            );
            f.set(0x100, (1 << 56) | (7 << 48) | (2 << 8)); // devices, 8 bytes
            f.set(0x108, (4 << 56) | (7 << 48) | (2 << 8)); // collections
            f
        }
        fn base(&mut self) -> usize {
            self.regs.as_mut_ptr() as usize
        }
        fn set(&mut self, off: usize, v: u64) {
            self.regs[off / 8] = v;
        }
        fn get(&self, off: usize) -> u64 {
            // SAFETY: inside the buffer; volatile because the driver wrote it
            // through a raw pointer.
            unsafe { self.regs.as_ptr().add(off / 8).read_volatile() }
        }
    }

    fn ready_its(fake: &mut FakeIts, mem: &mut Arena, queue_bytes: usize) -> Its {
        // SAFETY: the fake frame is 128 KiB of memory owned by the test.
        let mut its = unsafe { Its::new(fake.base(), 0x0808_0000) };
        let cfg = ItsConfig {
            queue_bytes,
            ..ItsConfig::default()
        };
        its.init_with(mem, &cfg).unwrap();
        its
    }

    #[test]
    fn init_programs_queue_and_tables() {
        let mut fake = FakeIts::new();
        let mut mem = Arena::new(4 << 20);
        let its = ready_its(&mut fake, &mut mem, DEFAULT_QUEUE_BYTES);
        assert_eq!(its.translater_phys(), 0x0809_0040);
        assert_eq!(its.doorbell_page_phys(), 0x0809_0000);
        assert_eq!(fake.get(0x0) & 1, 1, "enabled");
        // Queue first (64 KiB at the arena start), CWRITER reset.
        assert_eq!(fake.get(0x80), cbaser_value(FAKE_RAM, 0x1_0000, true));
        assert_eq!(fake.get(0x88), 0);
        // Device table: 2^16 entries of 8 bytes in 8 pages of 64 KiB.
        let b0 = fake.get(0x100);
        assert_eq!(
            b0,
            baser_value(b0, FAKE_RAM + 0x1_0000, PageSize::Size64K, 8, true, true)
        );
        // Collection table: 64 collections fit one page.
        let b1 = fake.get(0x108);
        assert_eq!(
            b1,
            baser_value(b1, FAKE_RAM + 0x9_0000, PageSize::Size64K, 1, true, true)
        );
        assert_eq!(fake.get(0x110) >> 63, 0, "unimplemented BASER left invalid");
        let l = its.limits().unwrap();
        assert_eq!(
            (l.device_id_bits, l.event_id_bits, l.collections),
            (16, 16, 64)
        );
        assert_eq!(its.coherent(), Some(true));
    }

    #[test]
    fn init_needs_quiescent_and_device_table() {
        let mut fake = FakeIts::new();
        fake.set(0x0, 0);
        let mut mem = Arena::new(4 << 20);
        // SAFETY: fake frame owned by the test.
        let mut its = unsafe { Its::new(fake.base(), 0) };
        assert_eq!(its.init(&mut mem), Err(ItsError::NotQuiescent));
        let mut fake = FakeIts::new();
        fake.set(0x100, 0);
        // SAFETY: as above.
        let mut its = unsafe { Its::new(fake.base(), 0) };
        assert_eq!(its.init(&mut mem), Err(ItsError::NoDeviceTable));
        assert_eq!(its.submit(&[]), Err(ItsError::NotInitialised));
        // No memory for the queue.
        let mut fake = FakeIts::new();
        let mut tiny = Arena::new(0x1000);
        // SAFETY: as above.
        let mut its = unsafe { Its::new(fake.base(), 0) };
        assert_eq!(its.init(&mut tiny), Err(ItsError::NoMemory));
    }

    #[test]
    fn submit_times_out_naming_the_command() {
        let mut fake = FakeIts::new();
        let mut mem = Arena::new(4 << 20);
        let mut its = ready_its(&mut fake, &mut mem, DEFAULT_QUEUE_BYTES);
        // Nobody advances CREADR.
        let r = its.map_collection(1, RdBase::Processor(0));
        assert_eq!(r, Err(ItsError::CommandTimeout { cmd: "MAPC" }));
        // MAPC, INVALL and the trailing SYNC to the collection's target.
        assert_eq!(fake.get(0x88), 3 * 32);
        let q = mem.virt(FAKE_RAM) as *const u64;
        // SAFETY: the queue is the first 64 KiB of the arena.
        let slot = |i: usize| unsafe { [0, 1, 2, 3].map(|k| q.add(i * 4 + k).read_volatile()) };
        assert_eq!(slot(0), [0x09, 0, V | 1, 0]);
        assert_eq!(slot(1), [0x0d, 0, 1, 0]);
        assert_eq!(slot(2), [0x05, 0, 0, 0]);
        // Out-of-range commands are refused before anything is queued.
        let r = its.map_interrupt(0, 0, 100, 0);
        assert_eq!(
            r,
            Err(ItsError::BadId {
                kind: IdKind::Lpi,
                id: 100
            })
        );
        assert_eq!(fake.get(0x88), 3 * 32);
    }

    #[test]
    fn stalled_queue_is_reported() {
        let mut fake = FakeIts::new();
        let mut mem = Arena::new(4 << 20);
        let mut its = ready_its(&mut fake, &mut mem, DEFAULT_QUEUE_BYTES);
        fake.set(0x90, 1); // CREADR.Stalled at offset 0
        let r = its.submit(&[ItsCommand::Invall { collection: 0 }]);
        assert_eq!(r, Err(ItsError::QueueStalled { cmd: "INVALL" }));
    }

    /// A thread that consumes commands like the ITS: copies each entry
    /// between CREADR and CWRITER out of the queue, then advances CREADR.
    fn consumer(
        regs: usize,
        queue: usize,
        size: usize,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<Vec<[u64; 4]>> {
        std::thread::spawn(move || {
            // SAFETY: the fake frame outlives the thread (joined before drop).
            let cwriter = unsafe { &*((regs + 0x88) as *const AtomicU64) };
            // SAFETY: as above.
            let creadr = unsafe { &*((regs + 0x90) as *const AtomicU64) };
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                let w = cwriter.load(Ordering::SeqCst) as usize;
                let mut rd = creadr.load(Ordering::SeqCst) as usize;
                while rd != w {
                    let p = (queue + rd) as *const u64;
                    // SAFETY: rd < size, inside the queue.
                    seen.push(unsafe { [0, 1, 2, 3].map(|k| p.add(k).read_volatile()) });
                    rd = (rd + 32) % size;
                    creadr.store(rd as u64, Ordering::SeqCst);
                }
                std::thread::yield_now();
            }
            seen
        })
    }

    #[test]
    fn submit_wraps_and_waits_for_room() {
        let mut fake = FakeIts::new();
        let mut mem = Arena::new(4 << 20);
        // A 4 KiB queue: 127 usable slots, so 300 commands must wrap and
        // wait for the consumer more than once.
        let mut its = ready_its(&mut fake, &mut mem, 0x1000);
        let stop = Arc::new(AtomicBool::new(false));
        let t = consumer(
            fake.base(),
            mem.virt(FAKE_RAM) as usize,
            0x1000,
            stop.clone(),
        );
        its.map_collection(0, RdBase::Processor(0)).unwrap();
        let dev = its.map_device(7, 32, &mut mem).unwrap();
        assert_eq!(dev.event_bits, 5);
        assert_eq!(dev.itt_phys % 256, 0);
        let cmds: Vec<ItsCommand> = (0..300)
            .map(|e| ItsCommand::Mapti {
                device_id: 7,
                event_id: e,
                intid: 8192 + e,
                collection: 0,
            })
            .collect();
        its.submit(&cmds).unwrap();
        stop.store(true, Ordering::SeqCst);
        let seen = t.join().unwrap();
        let mut expect = vec![
            ItsCommand::Mapc {
                collection: 0,
                target: RdBase::Processor(0),
                valid: true,
            }
            .encode(),
            ItsCommand::Invall { collection: 0 }.encode(),
            ItsCommand::Sync {
                target: RdBase::Processor(0),
            }
            .encode(),
            ItsCommand::Mapd {
                device_id: 7,
                itt_addr: dev.itt_phys,
                size_bits: 5,
                valid: true,
            }
            .encode(),
            ItsCommand::Sync {
                target: RdBase::Processor(0),
            }
            .encode(),
        ];
        expect.extend(cmds.iter().map(|c| c.encode()));
        expect.push(
            ItsCommand::Sync {
                target: RdBase::Processor(0),
            }
            .encode(),
        );
        assert_eq!(seen, expect);
    }

    #[test]
    fn empty_batch_is_a_sync_and_unmap_forgets_target() {
        let mut fake = FakeIts::new();
        let mut mem = Arena::new(4 << 20);
        let mut its = ready_its(&mut fake, &mut mem, 0x1000);
        let stop = Arc::new(AtomicBool::new(false));
        let t = consumer(
            fake.base(),
            mem.virt(FAKE_RAM) as usize,
            0x1000,
            stop.clone(),
        );
        its.submit(&[]).unwrap();
        its.map_collection(2, RdBase::Processor(5)).unwrap();
        its.submit(&[ItsCommand::Invall { collection: 2 }]).unwrap();
        let unmap = ItsCommand::Mapc {
            collection: 2,
            target: RdBase::Processor(5),
            valid: false,
        };
        its.submit(&[unmap]).unwrap();
        stop.store(true, Ordering::SeqCst);
        let seen = t.join().unwrap();
        let sync = |p| {
            ItsCommand::Sync {
                target: RdBase::Processor(p),
            }
            .encode()
        };
        let expect = [
            sync(0),
            ItsCommand::Mapc {
                collection: 2,
                target: RdBase::Processor(5),
                valid: true,
            }
            .encode(),
            ItsCommand::Invall { collection: 2 }.encode(),
            sync(5),
            ItsCommand::Invall { collection: 2 }.encode(),
            sync(5),
            unmap.encode(),
            sync(5),
        ];
        assert_eq!(seen, expect);
    }

    #[test]
    fn lpi_config_table() {
        let mut mem = Arena::new(1 << 20);
        assert_eq!(
            LpiConfigTable::alloc(&mut mem, 13).err(),
            Some(GicError::BadIntId(13))
        );
        let mut t = LpiConfigTable::alloc(&mut mem, 14).unwrap();
        assert_eq!(t.lpi_end(), 16384);
        assert_eq!(t.get(8192), Ok(0xa2));
        t.set(8193, 0x80, true).unwrap();
        assert_eq!(t.get(8193), Ok(0x83));
        // SAFETY: the table's second byte, inside the arena.
        assert_eq!(unsafe { mem.virt(t.phys()).add(1).read() }, 0x83);
        assert_eq!(t.set(8191, 0, true), Err(GicError::BadIntId(8191)));
        assert_eq!(t.set(16384, 0, true), Err(GicError::BadIntId(16384)));
    }
}
