//! Arm GICv3: distributor and redistributors (memory-mapped parts). The CPU
//! interface is system registers and lives with the arch code.
#![no_std]

use core::ptr::NonNull;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

register_bitfields![u32,
    GICD_CTLR [
        RWP OFFSET(31) NUMBITS(1) [],
        ARE OFFSET(4) NUMBITS(1) [],
        /// Group 1 enable (group 1 non-secure alias when two security states exist).
        ENABLE_GRP1A OFFSET(1) NUMBITS(1) [],
        ENABLE_GRP1 OFFSET(0) NUMBITS(1) []
    ],
    GICD_TYPER [
        ITLINES OFFSET(0) NUMBITS(5) []
    ],
    GICR_WAKER [
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) [],
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) []
    ],
    GICR_CTLR [
        RWP OFFSET(3) NUMBITS(1) []
    ]
];

register_bitfields![u64,
    GICR_TYPER [
        AFFINITY OFFSET(32) NUMBITS(32) [],
        LAST OFFSET(4) NUMBITS(1) [],
        VLPIS OFFSET(1) NUMBITS(1) []
    ]
];

register_structs! {
    pub GicdRegs {
        (0x0000 => ctlr: ReadWrite<u32, GICD_CTLR::Register>),
        (0x0004 => typer: ReadOnly<u32, GICD_TYPER::Register>),
        (0x0008 => iidr: ReadOnly<u32>),
        (0x000c => _reserved0),
        (0x0080 => igroupr: [ReadWrite<u32>; 32]),
        (0x0100 => isenabler: [ReadWrite<u32>; 32]),
        (0x0180 => icenabler: [ReadWrite<u32>; 32]),
        (0x0200 => ispendr: [ReadWrite<u32>; 32]),
        (0x0280 => icpendr: [ReadWrite<u32>; 32]),
        (0x0300 => isactiver: [ReadWrite<u32>; 32]),
        (0x0380 => icactiver: [ReadWrite<u32>; 32]),
        (0x0400 => ipriorityr: [ReadWrite<u32>; 256]),
        (0x0800 => _reserved1),
        (0x0c00 => icfgr: [ReadWrite<u32>; 64]),
        (0x0d00 => igrpmodr: [ReadWrite<u32>; 32]),
        (0x0d80 => _reserved2),
        (0x6100 => irouter: [ReadWrite<u64>; 988]),
        (0x7fe0 => _reserved3),
        (0x10000 => @END),
    }
}

register_structs! {
    /// One redistributor: the RD_base frame followed by the SGI_base frame.
    pub GicrRegs {
        (0x0000 => ctlr: ReadWrite<u32, GICR_CTLR::Register>),
        (0x0004 => iidr: ReadOnly<u32>),
        (0x0008 => typer: ReadOnly<u64, GICR_TYPER::Register>),
        (0x0010 => statusr: ReadWrite<u32>),
        (0x0014 => waker: ReadWrite<u32, GICR_WAKER::Register>),
        (0x0018 => _reserved0),
        (0x10080 => igroupr0: ReadWrite<u32>),
        (0x10084 => _reserved1),
        (0x10100 => isenabler0: ReadWrite<u32>),
        (0x10104 => _reserved2),
        (0x10180 => icenabler0: ReadWrite<u32>),
        (0x10184 => _reserved3),
        (0x10280 => icpendr0: ReadWrite<u32>),
        (0x10284 => _reserved4),
        (0x10400 => ipriorityr: [ReadWrite<u32>; 8]),
        (0x10420 => _reserved5),
        (0x10c00 => icfgr0: ReadWrite<u32>),
        (0x10c04 => icfgr1: ReadWrite<u32>),
        (0x10c08 => _reserved6),
        (0x10d00 => igrpmodr0: ReadWrite<u32>),
        (0x10d04 => _reserved7),
        (0x20000 => @END),
    }
}

/// Polls before a register-write-pending or wake wait is declared stuck.
const SPIN_LIMIT: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GicError {
    /// GICD_CTLR.RWP stayed set.
    DistributorWriteTimeout,
    /// GICR_CTLR.RWP stayed set.
    RedistributorWriteTimeout,
    /// GICR_WAKER.ChildrenAsleep stayed set after clearing ProcessorSleep.
    WakeTimeout,
    /// No redistributor frame has this CPU's affinity.
    NoRedistributor { affinity: u32 },
    /// An interrupt id outside the range the operation accepts.
    BadIntId(u32),
}

fn wait(mut done: impl FnMut() -> bool, err: GicError) -> Result<(), GicError> {
    for _ in 0..SPIN_LIMIT {
        if done() {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(err)
}

pub struct Distributor {
    regs: NonNull<GicdRegs>,
}

// SAFETY: MMIO owned by this value; callers serialise access.
unsafe impl Send for Distributor {}
// SAFETY: every method is a single register access or is called with a lock held.
unsafe impl Sync for Distributor {}

impl Distributor {
    /// # Safety
    /// `base` must be the mapped address of the GICv3 distributor.
    pub const unsafe fn new(base: usize) -> Self {
        Distributor {
            // SAFETY: the caller guarantees base is a valid MMIO address.
            regs: unsafe { NonNull::new_unchecked(base as *mut GicdRegs) },
        }
    }

    fn regs(&self) -> &GicdRegs {
        // SAFETY: `new`'s contract.
        unsafe { self.regs.as_ref() }
    }

    /// Number of SPI/PPI/SGI lines: 32 * (ITLinesNumber + 1), at most 1020.
    pub fn lines(&self) -> u32 {
        (32 * (self.regs().typer.read(GICD_TYPER::ITLINES) + 1)).min(1020)
    }

    pub fn iidr(&self) -> u32 {
        self.regs().iidr.get()
    }

    /// Affinity routing on, every SPI disabled, group 1, lowest-but-one priority,
    /// then group 1 enabled.
    pub fn init(&self) -> Result<(), GicError> {
        let r = self.regs();
        r.ctlr.set(0);
        self.wait_rwp()?;
        r.ctlr.write(GICD_CTLR::ARE::SET);
        self.wait_rwp()?;
        let lines = self.lines();
        for i in 1..(lines / 32) as usize {
            r.icenabler[i].set(u32::MAX);
            r.icpendr[i].set(u32::MAX);
            r.igroupr[i].set(u32::MAX);
        }
        for i in 8..(lines / 4) as usize {
            r.ipriorityr[i].set(0xa0a0_a0a0);
        }
        self.wait_rwp()?;
        r.ctlr.write(
            GICD_CTLR::ARE::SET + GICD_CTLR::ENABLE_GRP1A::SET + GICD_CTLR::ENABLE_GRP1::SET,
        );
        self.wait_rwp()
    }

    /// Routes SPI `intid` to the CPU with `affinity` (Aff3.Aff2.Aff1.Aff0 packed as in MPIDR).
    pub fn route_spi(&self, intid: u32, mpidr_aff: u64) -> Result<(), GicError> {
        if !(32..self.lines()).contains(&intid) {
            return Err(GicError::BadIntId(intid));
        }
        self.regs().irouter[(intid - 32) as usize].set(mpidr_aff);
        Ok(())
    }

    pub fn enable_spi(&self, intid: u32, priority: u8, edge: bool) -> Result<(), GicError> {
        if !(32..self.lines()).contains(&intid) {
            return Err(GicError::BadIntId(intid));
        }
        let r = self.regs();
        let (i, bit) = ((intid / 32) as usize, intid % 32);
        r.igroupr[i].set(r.igroupr[i].get() | (1 << bit));
        set_priority(&r.ipriorityr[(intid / 4) as usize], intid, priority);
        let cfg = &r.icfgr[(intid / 16) as usize];
        let shift = (intid % 16) * 2 + 1;
        cfg.set((cfg.get() & !(1 << shift)) | ((edge as u32) << shift));
        r.isenabler[i].set(1 << bit);
        self.wait_rwp()
    }

    fn wait_rwp(&self) -> Result<(), GicError> {
        wait(
            || !self.regs().ctlr.is_set(GICD_CTLR::RWP),
            GicError::DistributorWriteTimeout,
        )
    }
}

fn set_priority(reg: &ReadWrite<u32>, intid: u32, priority: u8) {
    let shift = (intid % 4) * 8;
    reg.set((reg.get() & !(0xff << shift)) | ((priority as u32) << shift));
}

/// The redistributor of one CPU.
pub struct Redistributor {
    regs: NonNull<GicrRegs>,
}

// SAFETY: MMIO owned by this value; each CPU drives only its own redistributor.
unsafe impl Send for Redistributor {}

impl Redistributor {
    /// Finds the frame whose GICR_TYPER affinity matches `affinity`
    /// (Aff3:Aff2:Aff1:Aff0 packed into 32 bits), walking frames of `stride`
    /// bytes until the one marked Last or `region_size` ends.
    ///
    /// # Safety
    /// `base..base+region_size` must be the mapped redistributor region.
    pub unsafe fn find(base: usize, region_size: usize, affinity: u32) -> Result<Self, GicError> {
        let mut offset = 0;
        while offset + 0x20000 <= region_size {
            let regs = (base + offset) as *mut GicrRegs;
            // SAFETY: inside the region the caller vouched for.
            let typer = unsafe { (*regs).typer.extract() };
            if typer.read(GICR_TYPER::AFFINITY) as u32 == affinity {
                return Ok(Redistributor {
                    // SAFETY: non-null, inside the region.
                    regs: unsafe { NonNull::new_unchecked(regs) },
                });
            }
            if typer.is_set(GICR_TYPER::LAST) {
                break;
            }
            // GICv4 frames carry two more 64 KiB pages for virtual LPIs.
            offset += if typer.is_set(GICR_TYPER::VLPIS) {
                0x40000
            } else {
                0x20000
            };
        }
        Err(GicError::NoRedistributor { affinity })
    }

    fn regs(&self) -> &GicrRegs {
        // SAFETY: `find`'s contract.
        unsafe { self.regs.as_ref() }
    }

    /// Wakes the redistributor and puts every SGI/PPI in group 1, disabled.
    pub fn init(&self) -> Result<(), GicError> {
        let r = self.regs();
        r.waker.modify(GICR_WAKER::PROCESSOR_SLEEP::CLEAR);
        wait(
            || !r.waker.is_set(GICR_WAKER::CHILDREN_ASLEEP),
            GicError::WakeTimeout,
        )?;
        r.icenabler0.set(u32::MAX);
        r.icpendr0.set(u32::MAX);
        r.igroupr0.set(u32::MAX);
        for p in r.ipriorityr.iter() {
            p.set(0xa0a0_a0a0);
        }
        self.wait_rwp()
    }

    /// Enables PPI or SGI `intid` (0..32) at `priority`.
    pub fn enable_private(&self, intid: u32, priority: u8) -> Result<(), GicError> {
        if intid >= 32 {
            return Err(GicError::BadIntId(intid));
        }
        let r = self.regs();
        set_priority(&r.ipriorityr[(intid / 4) as usize], intid, priority);
        r.isenabler0.set(1 << intid);
        self.wait_rwp()
    }

    fn wait_rwp(&self) -> Result<(), GicError> {
        wait(
            || !self.regs().ctlr.is_set(GICR_CTLR::RWP),
            GicError::RedistributorWriteTimeout,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<GicdRegs>(), 0x10000);
        assert_eq!(core::mem::size_of::<GicrRegs>(), 0x20000);
    }
}
