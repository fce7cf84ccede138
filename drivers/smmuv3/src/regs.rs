//! The SMMUv3 register map (IHI 0070, 6.2): page 0, and the queue
//! pointers that live in page 1 (64 KiB up).
use crate::{walk_cache, walk_share, Coherency};
use tock_registers::fields::FieldValue;
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields![u32,
    pub CR0 [
        SMMUEN OFFSET(0) NUMBITS(1) [],
        PRIQEN OFFSET(1) NUMBITS(1) [],
        EVENTQEN OFFSET(2) NUMBITS(1) [],
        CMDQEN OFFSET(3) NUMBITS(1) [],
        ATSCHK OFFSET(4) NUMBITS(1) []
    ],
    pub CR1 [
        QUEUE_IC OFFSET(0) NUMBITS(2) [],
        QUEUE_OC OFFSET(2) NUMBITS(2) [],
        QUEUE_SH OFFSET(4) NUMBITS(2) [],
        TABLE_IC OFFSET(6) NUMBITS(2) [],
        TABLE_OC OFFSET(8) NUMBITS(2) [],
        TABLE_SH OFFSET(10) NUMBITS(2) []
    ],
    pub CR2 [
        E2H OFFSET(0) NUMBITS(1) [],
        RECINVSID OFFSET(1) NUMBITS(1) [],
        PTM OFFSET(2) NUMBITS(1) []
    ],
    pub GBPA [
        ABORT OFFSET(20) NUMBITS(1) [],
        UPDATE OFFSET(31) NUMBITS(1) []
    ],
    pub IRQ_CTRL [
        GERROR_IRQEN OFFSET(0) NUMBITS(1) [],
        PRIQ_IRQEN OFFSET(1) NUMBITS(1) [],
        EVENTQ_IRQEN OFFSET(2) NUMBITS(1) []
    ],
    pub GERROR [
        CMDQ_ERR OFFSET(0) NUMBITS(1) [],
        EVENTQ_ABT_ERR OFFSET(2) NUMBITS(1) [],
        PRIQ_ABT_ERR OFFSET(3) NUMBITS(1) [],
        MSI_CMDQ_ABT_ERR OFFSET(4) NUMBITS(1) [],
        MSI_EVENTQ_ABT_ERR OFFSET(5) NUMBITS(1) [],
        MSI_PRIQ_ABT_ERR OFFSET(6) NUMBITS(1) [],
        MSI_GERROR_ABT_ERR OFFSET(7) NUMBITS(1) [],
        SFM_ERR OFFSET(8) NUMBITS(1) []
    ],
    pub STRTAB_BASE_CFG [
        LOG2SIZE OFFSET(0) NUMBITS(6) [],
        SPLIT OFFSET(6) NUMBITS(5) [],
        FMT OFFSET(16) NUMBITS(2) [
            Linear = 0,
            TwoLevel = 1
        ]
    ]
];

register_bitfields![u64,
    pub STRTAB_BASE [
        /// The stream table (or its level-1 table), 64-byte aligned.
        ADDR OFFSET(6) NUMBITS(46) [],
        /// Read-allocate hint for stream table walks.
        RA OFFSET(62) NUMBITS(1) []
    ]
];

register_structs! {
    /// Page 0.
    pub SmmuRegs {
        (0x000 => pub idr: [ReadOnly<u32>; 6]),
        (0x018 => pub iidr: ReadOnly<u32>),
        (0x01c => pub aidr: ReadOnly<u32>),
        (0x020 => pub cr0: ReadWrite<u32, CR0::Register>),
        (0x024 => pub cr0ack: ReadOnly<u32, CR0::Register>),
        (0x028 => pub cr1: ReadWrite<u32, CR1::Register>),
        (0x02c => pub cr2: ReadWrite<u32, CR2::Register>),
        (0x030 => _reserved0),
        (0x040 => pub statusr: ReadOnly<u32>),
        (0x044 => pub gbpa: ReadWrite<u32, GBPA::Register>),
        (0x048 => pub agbpa: ReadWrite<u32>),
        (0x04c => _reserved1),
        (0x050 => pub irq_ctrl: ReadWrite<u32, IRQ_CTRL::Register>),
        (0x054 => pub irq_ctrlack: ReadOnly<u32, IRQ_CTRL::Register>),
        (0x058 => _reserved2),
        (0x060 => pub gerror: ReadOnly<u32, GERROR::Register>),
        (0x064 => pub gerrorn: ReadWrite<u32, GERROR::Register>),
        (0x068 => pub gerror_irq_cfg0: ReadWrite<u64>),
        (0x070 => pub gerror_irq_cfg1: ReadWrite<u32>),
        (0x074 => pub gerror_irq_cfg2: ReadWrite<u32>),
        (0x078 => _reserved3),
        (0x080 => pub strtab_base: ReadWrite<u64, STRTAB_BASE::Register>),
        (0x088 => pub strtab_base_cfg: ReadWrite<u32, STRTAB_BASE_CFG::Register>),
        (0x08c => _reserved4),
        (0x090 => pub cmdq_base: ReadWrite<u64>),
        (0x098 => pub cmdq_prod: ReadWrite<u32>),
        (0x09c => pub cmdq_cons: ReadWrite<u32>),
        (0x0a0 => pub eventq_base: ReadWrite<u64>),
        (0x0a8 => _eventq_pointers_in_page1),
        (0x0b0 => pub eventq_irq_cfg0: ReadWrite<u64>),
        (0x0b8 => pub eventq_irq_cfg1: ReadWrite<u32>),
        (0x0bc => pub eventq_irq_cfg2: ReadWrite<u32>),
        (0x0c0 => _reserved5),
        (0x100 => @END),
    },
    /// The start of page 1 (SMMU base + 64 KiB).
    pub SmmuPage1 {
        (0x000 => _reserved0),
        (0x0a8 => pub eventq_prod: ReadWrite<u32>),
        (0x0ac => pub eventq_cons: ReadWrite<u32>),
        (0x0b0 => _reserved1),
        (0x0c8 => pub priq_prod: ReadWrite<u32>),
        (0x0cc => pub priq_cons: ReadWrite<u32>),
        (0x0d0 => @END),
    }
}

/// Page 1's offset from the SMMU's base.
pub const PAGE1: usize = 0x1_0000;

/// CR1 for an SMMU whose accesses are `walk`: the queues and the stream
/// table (and, through STRTAB_BASE.RA, its allocation hint) with the same
/// attributes the STEs and CDs give table walks.
pub fn cr1_for(walk: Coherency) -> FieldValue<u32, CR1::Register> {
    let (cache, share) = (walk_cache(walk) as u32, walk_share(walk) as u32);
    CR1::QUEUE_IC.val(cache)
        + CR1::QUEUE_OC.val(cache)
        + CR1::QUEUE_SH.val(share)
        + CR1::TABLE_IC.val(cache)
        + CR1::TABLE_OC.val(cache)
        + CR1::TABLE_SH.val(share)
}

/// STRTAB_BASE for the table at `table`: the read-allocate hint only when
/// stream table walks are cacheable.
pub fn strtab_base_for(table: u64, walk: Coherency) -> FieldValue<u64, STRTAB_BASE::Register> {
    let ra = if walk == Coherency::Coherent {
        STRTAB_BASE::RA::SET
    } else {
        STRTAB_BASE::RA::CLEAR
    };
    ra + STRTAB_BASE::ADDR.val(table >> 6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<SmmuRegs>(), 0x100);
        assert_eq!(core::mem::size_of::<SmmuPage1>(), 0xd0);
    }

    /// IHI 0070 6.3.10: IC/OC 1 write-back, 0 non-cacheable; SH 3 inner,
    /// 2 outer.
    #[test]
    fn cr1_and_strtab_base_follow_coherency() {
        let coherent = cr1_for(Coherency::Coherent).value;
        assert_eq!(
            coherent,
            1 | (1 << 2) | (3 << 4) | (1 << 6) | (1 << 8) | (3 << 10)
        );
        let non = cr1_for(Coherency::NonCoherent).value;
        assert_eq!(non, (2 << 4) | (2 << 10));
        let base = 0x4000_0040;
        assert_eq!(
            strtab_base_for(base, Coherency::Coherent).value,
            (1 << 62) | base
        );
        assert_eq!(strtab_base_for(base, Coherency::NonCoherent).value, base);
    }
}
