//! The ITS register frame: GITS_* bitfields and the register block, the
//! cacheability and shareability encodings the base registers share, and
//! what GITS_TYPER and GITS_IIDR say about an ITS.

use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs, LocalRegisterCopy};

/// Offset of GITS_TRANSLATER from the ITS base.
pub const TRANSLATER_OFFSET: u64 = 0x1_0040;
/// Offset of the translation register page (the MSI doorbell page).
pub const TRANSLATION_PAGE_OFFSET: u64 = 0x1_0000;

/// Cacheability field values shared by GITS_CBASER, GITS_BASER<n>,
/// GICR_PROPBASER and GICR_PENDBASER.
pub(super) const CACHE_SAME_AS_INNER: u64 = 0b000;
pub(super) const CACHE_NON_CACHEABLE: u64 = 0b001;
pub(super) const CACHE_RAWAWB: u64 = 0b111;
/// Shareability field values.
pub(super) const SH_NON_SHAREABLE: u64 = 0b00;
pub(super) const SH_INNER: u64 = 0b01;

register_bitfields![u32,
    pub(super) GITS_CTLR [
        QUIESCENT OFFSET(31) NUMBITS(1) [],
        ENABLED OFFSET(0) NUMBITS(1) []
    ]
];

register_bitfields![u64,
    pub(super) GITS_TYPER [
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
    pub(super) GITS_CBASER [
        VALID OFFSET(63) NUMBITS(1) [],
        INNER_CACHE OFFSET(59) NUMBITS(3) [],
        OUTER_CACHE OFFSET(53) NUMBITS(3) [],
        /// Bits [51:12] of the queue address.
        PHYSICAL_ADDRESS OFFSET(12) NUMBITS(40) [],
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        /// Number of 4 KiB pages minus one.
        SIZE OFFSET(0) NUMBITS(8) []
    ],
    pub(super) GITS_CWRITER [
        /// Byte offset of the next free entry, in units of 32 bytes.
        OFFSET OFFSET(5) NUMBITS(15) [],
        RETRY OFFSET(0) NUMBITS(1) []
    ],
    pub(super) GITS_CREADR [
        OFFSET OFFSET(5) NUMBITS(15) [],
        STALLED OFFSET(0) NUMBITS(1) []
    ],
    pub(super) GITS_BASER [
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
    ]
];

register_structs! {
    /// The ITS control frame (ITS_base) and translation frame (ITS_base + 64 KiB).
    pub GitsRegs {
        (0x0000 => pub(super) ctlr: ReadWrite<u32, GITS_CTLR::Register>),
        (0x0004 => pub(super) iidr: ReadOnly<u32>),
        (0x0008 => pub(super) typer: ReadOnly<u64, GITS_TYPER::Register>),
        (0x0010 => _reserved0),
        (0x0080 => pub(super) cbaser: ReadWrite<u64, GITS_CBASER::Register>),
        (0x0088 => pub(super) cwriter: ReadWrite<u64, GITS_CWRITER::Register>),
        (0x0090 => pub(super) creadr: ReadOnly<u64, GITS_CREADR::Register>),
        (0x0098 => _reserved1),
        (0x0100 => pub(super) baser: [ReadWrite<u64, GITS_BASER::Register>; 8]),
        (0x0140 => _reserved2),
        (0x10040 => pub(super) translater: WriteOnly<u32>),
        (0x10044 => _reserved3),
        (0x20000 => @END),
    }
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

pub(super) fn attrs(coherent: bool) -> (u64, u64) {
    if coherent {
        (CACHE_RAWAWB, SH_INNER)
    } else {
        (CACHE_NON_CACHEABLE, SH_NON_SHAREABLE)
    }
}
