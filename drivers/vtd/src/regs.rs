//! The remapping unit's registers (VT-d spec 11.4), as far as the driver
//! uses them, and the fault recording registers (11.4.14), which sit at
//! the offset CAP.FRO names.
use tock_registers::fields::FieldValue;
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields![u32,
    pub VER [
        MINOR OFFSET(0) NUMBITS(4) [],
        MAJOR OFFSET(4) NUMBITS(4) []
    ],
    /// Global command: TE and QIE persist (GSTS mirrors them); the
    /// others are one-shot.
    pub GCMD [
        CFI OFFSET(23) NUMBITS(1) [],
        SIRTP OFFSET(24) NUMBITS(1) [],
        IRE OFFSET(25) NUMBITS(1) [],
        /// Queued invalidation enable.
        QIE OFFSET(26) NUMBITS(1) [],
        WBF OFFSET(27) NUMBITS(1) [],
        EAFL OFFSET(28) NUMBITS(1) [],
        SFL OFFSET(29) NUMBITS(1) [],
        /// Set root table pointer (latches RTADDR).
        SRTP OFFSET(30) NUMBITS(1) [],
        /// Translation enable.
        TE OFFSET(31) NUMBITS(1) []
    ],
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
    ],
    /// Fault status; the error bits are write-1-to-clear.
    pub FSTS [
        /// Primary fault overflow.
        PFO OFFSET(0) NUMBITS(1) [],
        /// Primary pending fault (some recording register holds one).
        PPF OFFSET(1) NUMBITS(1) [],
        /// Invalidation queue error: the descriptor at IQH was refused.
        IQE OFFSET(4) NUMBITS(1) [],
        /// Invalidation completion error (device-TLB).
        ICE OFFSET(5) NUMBITS(1) [],
        /// Invalidation time-out error (device-TLB).
        ITE OFFSET(6) NUMBITS(1) [],
        /// Fault record index (valid with PPF).
        FRI OFFSET(8) NUMBITS(8) []
    ],
    /// Fault event control.
    pub FECTL [
        /// Interrupt pending.
        IP OFFSET(30) NUMBITS(1) [],
        /// Interrupt mask.
        IM OFFSET(31) NUMBITS(1) []
    ],
    /// Invalidation completion status (waits without a status write).
    pub ICS [
        IWC OFFSET(0) NUMBITS(1) []
    ],
    /// Page request status; both bits write-1-to-clear.
    pub PRS [
        /// Pending page request: the unit wrote requests since the last clear.
        PPR OFFSET(0) NUMBITS(1) [],
        /// Page request overflow: requests were refused (queue full).
        PRO OFFSET(1) NUMBITS(1) []
    ],
    /// Page request event control (as FECTL).
    pub PECTL [
        IP OFFSET(30) NUMBITS(1) [],
        IM OFFSET(31) NUMBITS(1) []
    ]
];

register_bitfields![u64,
    pub RTADDR [
        /// Translation table mode.
        TTM OFFSET(10) NUMBITS(2) [
            Legacy = 0,
            Scalable = 1
        ],
        /// The root table's page frame.
        RTA OFFSET(12) NUMBITS(52) []
    ],
    /// Queue head and tail. With 256-bit descriptors (IQA.DW) bit 4 is
    /// zero and bits 18:5 index descriptors.
    pub IQH [
        QH OFFSET(5) NUMBITS(14) []
    ],
    pub IQT [
        QT OFFSET(5) NUMBITS(14) []
    ],
    /// Page request queue head (software) and tail (the unit): bits 18:5
    /// index 32-byte descriptors.
    pub PQH [
        PQH OFFSET(5) NUMBITS(14) []
    ],
    pub PQT [
        PQT OFFSET(5) NUMBITS(14) []
    ],
    pub PQA [
        /// Queue size: 2^(PQS + 7) descriptors (2^PQS pages).
        PQS OFFSET(0) NUMBITS(3) [],
        /// The queue's page frame.
        PQA OFFSET(12) NUMBITS(52) []
    ],
    pub IQA [
        /// Queue size: 2^QS pages.
        QS OFFSET(0) NUMBITS(3) [],
        /// Descriptor width.
        DW OFFSET(11) NUMBITS(1) [
            Bits128 = 0,
            Bits256 = 1
        ],
        /// The queue's page frame.
        IQA OFFSET(12) NUMBITS(52) []
    ],
    /// The high qword of a fault recording register (the low one is the
    /// faulting page's address); `fault::FaultRecord` decodes the rest.
    pub FRCD_HI [
        /// The record holds a fault; write-1-to-clear.
        F OFFSET(63) NUMBITS(1) []
    ]
];

register_structs! {
    pub VtdRegs {
        (0x00 => pub ver: ReadOnly<u32, VER::Register>),
        (0x04 => _reserved0),
        (0x08 => pub cap: ReadOnly<u64>),
        (0x10 => pub ecap: ReadOnly<u64>),
        (0x18 => pub gcmd: WriteOnly<u32, GCMD::Register>),
        (0x1c => pub gsts: ReadOnly<u32, GSTS::Register>),
        (0x20 => pub rtaddr: ReadWrite<u64, RTADDR::Register>),
        (0x28 => pub ccmd: ReadWrite<u64>),
        (0x30 => _reserved1),
        (0x34 => pub fsts: ReadWrite<u32, FSTS::Register>),
        (0x38 => pub fectl: ReadWrite<u32, FECTL::Register>),
        /// The fault event MSI's data, address and upper address.
        (0x3c => pub fedata: ReadWrite<u32>),
        (0x40 => pub feaddr: ReadWrite<u32>),
        (0x44 => pub feuaddr: ReadWrite<u32>),
        (0x48 => _reserved2),
        (0x80 => pub iqh: ReadOnly<u64, IQH::Register>),
        (0x88 => pub iqt: ReadWrite<u64, IQT::Register>),
        (0x90 => pub iqa: ReadWrite<u64, IQA::Register>),
        (0x98 => _reserved3),
        (0x9c => pub ics: ReadWrite<u32, ICS::Register>),
        (0xa0 => _reserved4),
        /// The page request queue (with ECAP.PRS): head, tail, address,
        /// status, and its event's MSI (as the fault event's).
        (0xc0 => pub pqh: ReadWrite<u64, PQH::Register>),
        (0xc8 => pub pqt: ReadOnly<u64, PQT::Register>),
        (0xd0 => pub pqa: ReadWrite<u64, PQA::Register>),
        (0xd8 => _reserved5),
        (0xdc => pub prs: ReadWrite<u32, PRS::Register>),
        (0xe0 => pub pectl: ReadWrite<u32, PECTL::Register>),
        (0xe4 => pub pedata: ReadWrite<u32>),
        (0xe8 => pub peaddr: ReadWrite<u32>),
        (0xec => pub peuaddr: ReadWrite<u32>),
        (0xf0 => @END),
    }
}

register_structs! {
    /// One fault recording register (128 bits).
    pub FaultRecordRegs {
        (0x00 => pub lo: ReadOnly<u64>),
        (0x08 => pub hi: ReadWrite<u64, FRCD_HI::Register>),
        (0x10 => @END),
    }
}

/// Page frame of a 4 KiB-aligned physical address.
const fn frame(pa: u64) -> u64 {
    pa >> 12
}

/// RTADDR for a scalable-mode root table at `root`.
pub fn rtaddr_scalable(root: u64) -> FieldValue<u64, RTADDR::Register> {
    RTADDR::RTA.val(frame(root)) + RTADDR::TTM::Scalable
}

/// IQA for a one-page queue of 256-bit descriptors at `queue`.
pub fn iqa_one_page_256(queue: u64) -> FieldValue<u64, IQA::Register> {
    IQA::IQA.val(frame(queue)) + IQA::DW::Bits256 + IQA::QS.val(0)
}

/// FEADDR and FEUADDR for an MSI address.
pub fn fault_event_address(address: u64) -> (u32, u32) {
    (address as u32, (address >> 32) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<VtdRegs>(), 0xf0);
        assert_eq!(core::mem::size_of::<FaultRecordRegs>(), 0x10);
    }

    #[test]
    fn composed_values() {
        assert_eq!(rtaddr_scalable(0x1234_5000).value, 0x1234_5000 | (1 << 10));
        assert_eq!(iqa_one_page_256(0x8000_0000).value, 0x8000_0000 | (1 << 11));
        assert_eq!(IQT::QT.val(3).value, 3 << 5);
        assert_eq!(fault_event_address(0x1_fee0_0000), (0xfee0_0000, 1));
        let gcmd = GCMD::TE::SET + GCMD::QIE::SET + GCMD::SRTP::SET;
        assert_eq!(gcmd.value, (1 << 31) | (1 << 30) | (1 << 26));
        assert_eq!(FRCD_HI::F::SET.value, 1 << 63);
        assert_eq!(FSTS::IQE::SET.value, 1 << 4);
        assert_eq!(FECTL::IM::SET.value, 1 << 31);
        assert_eq!(PECTL::IM::SET.value, 1 << 31);
        assert_eq!((PRS::PPR::SET.value, PRS::PRO::SET.value), (1, 2));
        assert_eq!(PQH::PQH.val(3).value, 3 << 5);
        assert_eq!(
            (PQA::PQA.val(0x8_0000) + PQA::PQS.val(2)).value,
            0x8000_0002
        );
    }
}
