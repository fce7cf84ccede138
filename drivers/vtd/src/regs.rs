//! The remapping unit's registers (VT-d spec 11.4), as far as the driver
//! uses them.
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields![u32,
    pub GSTS [
        /// Compatibility format interrupts.
        CFIS OFFSET(23) NUMBITS(1) [],
        IRTPS OFFSET(24) NUMBITS(1) [],
        IRES OFFSET(25) NUMBITS(1) [],
        /// Queued invalidation enabled.
        QIES OFFSET(26) NUMBITS(1) [],
        WBFS OFFSET(27) NUMBITS(1) [],
        AFLS OFFSET(28) NUMBITS(1) [],
        FLS OFFSET(29) NUMBITS(1) [],
        /// Root table pointer set.
        RTPS OFFSET(30) NUMBITS(1) [],
        /// Translation enabled.
        TES OFFSET(31) NUMBITS(1) []
    ]
];

register_structs! {
    pub VtdRegs {
        (0x00 => pub ver: ReadOnly<u32>),
        (0x04 => _reserved0),
        (0x08 => pub cap: ReadOnly<u64>),
        (0x10 => pub ecap: ReadOnly<u64>),
        (0x18 => pub gcmd: WriteOnly<u32>),
        (0x1c => pub gsts: ReadOnly<u32, GSTS::Register>),
        (0x20 => pub rtaddr: ReadWrite<u64>),
        (0x28 => pub ccmd: ReadWrite<u64>),
        (0x30 => _reserved1),
        (0x34 => pub fsts: ReadWrite<u32>),
        (0x38 => pub fectl: ReadWrite<u32>),
        (0x3c => pub fedata: ReadWrite<u32>),
        (0x40 => pub feaddr: ReadWrite<u32>),
        (0x44 => pub feuaddr: ReadWrite<u32>),
        (0x48 => _reserved2),
        (0x80 => pub iqh: ReadOnly<u64>),
        (0x88 => pub iqt: ReadWrite<u64>),
        (0x90 => pub iqa: ReadWrite<u64>),
        (0x98 => _reserved3),
        (0x9c => pub ics: ReadWrite<u32>),
        (0xa0 => @END),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<VtdRegs>(), 0xa0);
    }
}
