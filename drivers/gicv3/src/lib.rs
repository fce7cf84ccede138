//! Arm GICv3: distributor and redistributors (memory-mapped parts). The CPU
//! interface is system registers and lives with the arch code.
#![no_std]

// The ITS driver: MMIO, and its command queue and tables in memory.
#[allow(unsafe_code)]
pub mod its;

pub use its::{CommandRing, Its, ItsCommand, ItsError, ItsInfo, ItsMemory, LpiConfigTable, RdBase};

use core::ptr::NonNull;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
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
        /// Number of INTID bits supported, minus one.
        IDBITS OFFSET(19) NUMBITS(5) [],
        /// LPIs supported.
        LPIS OFFSET(17) NUMBITS(1) [],
        ITLINES OFFSET(0) NUMBITS(5) []
    ],
    GICR_WAKER [
        CHILDREN_ASLEEP OFFSET(2) NUMBITS(1) [],
        PROCESSOR_SLEEP OFFSET(1) NUMBITS(1) []
    ],
    GICR_CTLR [
        RWP OFFSET(3) NUMBITS(1) [],
        ENABLE_LPIS OFFSET(0) NUMBITS(1) []
    ]
];

register_bitfields![u64,
    GICR_TYPER [
        AFFINITY OFFSET(32) NUMBITS(32) [],
        PROCESSOR_NUMBER OFFSET(8) NUMBITS(16) [],
        LAST OFFSET(4) NUMBITS(1) [],
        /// GICR_INVLPIR, GICR_INVALLR and GICR_SYNCR are implemented.
        DIRECT_LPI OFFSET(3) NUMBITS(1) [],
        VLPIS OFFSET(1) NUMBITS(1) [],
        PLPIS OFFSET(0) NUMBITS(1) []
    ],
    GICR_PROPBASER [
        OUTER_CACHE OFFSET(56) NUMBITS(3) [],
        /// Bits [51:12] of the LPI configuration table address.
        PHYSICAL_ADDRESS OFFSET(12) NUMBITS(40) [],
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        INNER_CACHE OFFSET(7) NUMBITS(3) [],
        /// Number of INTID bits, minus one.
        ID_BITS OFFSET(0) NUMBITS(5) []
    ],
    GICR_PENDBASER [
        /// Pending table zero: the table is known to be all zeroes.
        PTZ OFFSET(62) NUMBITS(1) [],
        OUTER_CACHE OFFSET(56) NUMBITS(3) [],
        /// Bits [51:16] of the LPI pending table address.
        PHYSICAL_ADDRESS OFFSET(16) NUMBITS(36) [],
        SHAREABILITY OFFSET(10) NUMBITS(2) [],
        INNER_CACHE OFFSET(7) NUMBITS(3) []
    ],
    GICR_INVLPIR [
        INTID OFFSET(0) NUMBITS(32) []
    ]
];

register_bitfields![u32,
    GICR_SYNCR [
        BUSY OFFSET(0) NUMBITS(1) []
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
        (0x0070 => propbaser: ReadWrite<u64, GICR_PROPBASER::Register>),
        (0x0078 => pendbaser: ReadWrite<u64, GICR_PENDBASER::Register>),
        (0x0080 => _reserved0a),
        (0x00a0 => invlpir: WriteOnly<u64, GICR_INVLPIR::Register>),
        (0x00a8 => _reserved0b),
        (0x00b0 => invallr: WriteOnly<u64>),
        (0x00b8 => _reserved0c),
        (0x00c0 => syncr: ReadOnly<u32, GICR_SYNCR::Register>),
        (0x00c4 => _reserved0d),
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
    /// GICR_TYPER.PLPIS is clear: this redistributor has no physical LPIs.
    LpisUnsupported,
    /// GICR_CTLR.EnableLPIs is already set; PROPBASER/PENDBASER must not be
    /// reprogrammed once LPIs are on.
    LpisAlreadyEnabled,
    /// GICR_CTLR.EnableLPIs did not read back as set.
    LpiEnableFailed,
    /// The caller's allocator returned nothing.
    NoMemory,
    /// A table address that does not meet the architecture's alignment.
    Misaligned { addr: u64, align: u64 },
    /// GICR_TYPER.DirectLPI is clear: invalidate through the ITS instead.
    DirectLpiUnsupported,
    /// GICR_SYNCR.Busy stayed set.
    RedistributorSyncTimeout,
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

#[allow(unsafe_code)] // the distributor/redistributor MMIO binding
                      // SAFETY: MMIO owned by this value; callers serialise access.
unsafe impl Send for Distributor {}
#[allow(unsafe_code)] // the distributor/redistributor MMIO binding
                      // SAFETY: every method is a single register access or is called with a lock held.
unsafe impl Sync for Distributor {}

#[allow(unsafe_code)] // the distributor/redistributor MMIO binding
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

    /// Number of INTID bits the GIC supports (GICD_TYPER.IDbits + 1); LPIs
    /// exist only when this is at least 14.
    pub fn intid_bits(&self) -> u32 {
        self.regs().typer.read(GICD_TYPER::IDBITS) + 1
    }

    /// GICD_TYPER.LPIS.
    pub fn lpis_supported(&self) -> bool {
        self.regs().typer.is_set(GICD_TYPER::LPIS)
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

    pub fn disable_spi(&self, intid: u32) -> Result<(), GicError> {
        if !(32..self.lines()).contains(&intid) {
            return Err(GicError::BadIntId(intid));
        }
        self.regs().icenabler[(intid / 32) as usize].set(1 << (intid % 32));
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

#[allow(unsafe_code)] // the distributor/redistributor MMIO binding
                      // SAFETY: MMIO owned by this value; each CPU drives only its own redistributor.
unsafe impl Send for Redistributor {}

#[allow(unsafe_code)] // the distributor/redistributor MMIO binding
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

    /// Finds the frame for `affinity` in any of the redistributor regions
    /// (`(base, size)` each): a platform may spread its CPUs' frames over
    /// several (devicetree `#redistributor-regions`, one MADT GICR entry each).
    ///
    /// # Safety
    /// Each region must be a mapped redistributor region.
    pub unsafe fn find_in(regions: &[(usize, usize)], affinity: u32) -> Result<Self, GicError> {
        for &(base, size) in regions {
            // SAFETY: the caller vouched for every region.
            match unsafe { Self::find(base, size, affinity) } {
                Err(GicError::NoRedistributor { .. }) => continue,
                found => return found,
            }
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

    /// GICR_TYPER.Processor_Number: the ITS target when GITS_TYPER.PTA is 0.
    /// The address of this redistributor's frame (the ITS's RDbase when GITS_TYPER.PTA is set).
    pub fn frame_addr(&self) -> u64 {
        self.regs.as_ptr() as u64
    }

    pub fn processor_number(&self) -> u16 {
        self.regs().typer.read(GICR_TYPER::PROCESSOR_NUMBER) as u16
    }

    /// GICR_TYPER.PLPIS.
    pub fn lpis_supported(&self) -> bool {
        self.regs().typer.is_set(GICR_TYPER::PLPIS)
    }

    /// GICR_TYPER.DirectLPI: GICR_INVLPIR/INVALLR/SYNCR are usable.
    pub fn direct_lpi(&self) -> bool {
        self.regs().typer.is_set(GICR_TYPER::DIRECT_LPI)
    }

    /// GICR_CTLR.EnableLPIs.
    pub fn lpis_enabled(&self) -> bool {
        self.regs().ctlr.is_set(GICR_CTLR::ENABLE_LPIS)
    }

    /// Points this redistributor at the shared LPI configuration table and at
    /// its own pending table (`pending_phys`: zeroed, 64 KiB aligned, at least
    /// [`its::lpi_pending_table_bytes`] long), then sets EnableLPIs.
    ///
    /// Tables are programmed before LPIs are enabled and never after: if
    /// EnableLPIs is already set this fails with `LpisAlreadyEnabled`.
    /// Shareability is inner-shareable write-back (QEMU's model is coherent);
    /// if the redistributor only accepts non-shareable, the tables are
    /// programmed non-cacheable instead.
    pub fn enable_lpis(&self, config: &LpiConfigTable, pending_phys: u64) -> Result<(), GicError> {
        if !self.lpis_supported() {
            return Err(GicError::LpisUnsupported);
        }
        if self.lpis_enabled() {
            return Err(GicError::LpisAlreadyEnabled);
        }
        if !pending_phys.is_multiple_of(its::LPI_PENDING_ALIGN as u64) {
            return Err(GicError::Misaligned {
                addr: pending_phys,
                align: its::LPI_PENDING_ALIGN as u64,
            });
        }
        let r = self.regs();
        let prop = its::propbaser_value(config.phys(), config.id_bits(), true);
        r.propbaser.set(prop);
        if r.propbaser.read(GICR_PROPBASER::SHAREABILITY) == 0 {
            r.propbaser
                .set(its::propbaser_value(config.phys(), config.id_bits(), false));
        }
        r.pendbaser.set(its::pendbaser_value(pending_phys, true));
        if r.pendbaser.read(GICR_PENDBASER::SHAREABILITY) == 0 {
            r.pendbaser.set(its::pendbaser_value(pending_phys, false));
        }
        // The tables' contents and the base registers must be visible before
        // the redistributor starts reading them.
        its::write_barrier();
        r.ctlr.modify(GICR_CTLR::ENABLE_LPIS::SET);
        self.wait_rwp()?;
        if !self.lpis_enabled() {
            return Err(GicError::LpiEnableFailed);
        }
        Ok(())
    }

    /// Like [`Self::enable_lpis`], allocating the pending table from `mem`.
    /// Returns the pending table's physical address.
    pub fn enable_lpis_alloc(
        &self,
        config: &LpiConfigTable,
        mem: &mut dyn ItsMemory,
    ) -> Result<u64, GicError> {
        let bytes = its::lpi_pending_table_bytes(config.id_bits());
        let (phys, _virt) = mem
            .alloc_zeroed(bytes, its::LPI_PENDING_ALIGN)
            .ok_or(GicError::NoMemory)?;
        self.enable_lpis(config, phys)?;
        Ok(phys)
    }

    /// Makes the redistributor re-read LPI `lpi`'s configuration byte
    /// (GICR_INVLPIR, then a bounded wait on GICR_SYNCR). Needs DirectLPI;
    /// otherwise use an ITS INV for the (device, event) that maps to it.
    pub fn inv_lpi(&self, lpi: u32) -> Result<(), GicError> {
        if lpi < its::LPI_BASE {
            return Err(GicError::BadIntId(lpi));
        }
        if !self.direct_lpi() {
            return Err(GicError::DirectLpiUnsupported);
        }
        its::write_barrier();
        let r = self.regs();
        r.invlpir.write(GICR_INVLPIR::INTID.val(lpi as u64));
        wait(
            || !r.syncr.is_set(GICR_SYNCR::BUSY),
            GicError::RedistributorSyncTimeout,
        )
    }
}

#[allow(unsafe_code)] // fake register frames in host memory
#[cfg(test)]
mod tests;
