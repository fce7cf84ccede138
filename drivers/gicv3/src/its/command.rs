//! ITS commands (IHI0069 5.3): how commands name their target redistributor,
//! the limits a command is checked against, and the 32-byte queue entry
//! each command encodes to.

use tock_registers::register_bitfields;

use super::lpi::LPI_BASE;
use super::tables::ITT_ALIGN;
use super::{IdKind, ItsError};

register_bitfields![u64,
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
    pub(super) fn collection(&self) -> Option<u16> {
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

pub(super) fn check_bits(kind: IdKind, id: u64, bits: u32) -> Result<(), ItsError> {
    if bits >= 64 || id >> bits == 0 {
        Ok(())
    } else {
        Err(ItsError::BadId { kind, id })
    }
}
