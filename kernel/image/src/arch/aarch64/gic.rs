//! GICv3 bring-up and interrupt dispatch. The distributor and
//! redistributors are memory-mapped (`gicv3` driver); the CPU interface is
//! the ICC system registers, accessed here.
use alloc::vec::Vec;
use core::arch::asm;
use gicv3::{Distributor, GicError, Redistributor};
use kernel::addr::PhysRange;
use spin::Once;

static GICD: Once<Distributor> = Once::new();

/// INTIDs 1020..=1023 are special (spurious and friends), not interrupts;
/// LPIs start at 8192.
const SPECIAL: core::ops::RangeInclusive<u64> = 1020..=1023;

/// Interrupt priority for everything we enable (lower is more urgent).
pub const DEFAULT_PRIORITY: u8 = 0x80;

pub fn init_distributor(base: u64) -> Result<(), GicError> {
    // SAFETY: `base` is the distributor from the boot facts, identity-mapped
    // as device memory; only this Once ever wraps it.
    let gicd = GICD.call_once(|| unsafe { Distributor::new(base as usize) });
    gicd.init()?;
    log::debug!(
        "GICv3 distributor at {base:#x}: {} interrupt lines, IIDR {:#x}",
        gicd.lines(),
        gicd.iidr()
    );
    Ok(())
}

/// Finds this CPU's redistributor in any of the regions, wakes it and
/// enables its CPU interface.
pub fn init_cpu(regions: &[PhysRange], mpidr: u64) -> Result<Redistributor, GicError> {
    let affinity = (((mpidr >> 32) & 0xff) << 24) | (mpidr & 0xff_ffff);
    let regions: Vec<(usize, usize)> = regions
        .iter()
        .map(|r| (r.start as usize, r.size() as usize))
        .collect();
    // SAFETY: the redistributor regions from the boot facts, mapped as device memory.
    let gicr = unsafe { Redistributor::find_in(&regions, affinity as u32) }?;
    gicr.init()?;
    // SAFETY: ICC register writes configure only this CPU's interface:
    // system-register access on, all priorities unmasked, no preemption
    // grouping, group 1 interrupts enabled.
    unsafe {
        asm!(
            "mrs {t}, icc_sre_el1",
            "orr {t}, {t}, #7",
            "msr icc_sre_el1, {t}",
            "isb",
            "mov {t}, #0xff",
            "msr icc_pmr_el1, {t}",
            "msr icc_bpr1_el1, xzr",
            "mov {t}, #1",
            "msr icc_igrpen1_el1, {t}",
            "isb",
            t = out(reg) _,
            options(nostack)
        );
    }
    Ok(gicr)
}

/// SPIs the kernel counts, from 32.
const SPIS: usize = 256;
static SPI_COUNT: [core::sync::atomic::AtomicU32; SPIS] =
    [const { core::sync::atomic::AtomicU32::new(0) }; SPIS];

fn on_spi(intid: u32) {
    crate::interrupts::dispatch(intid);
    match SPI_COUNT.get((intid - 32) as usize) {
        Some(c) => {
            c.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        }
        None => log::warn!("SPI {intid} beyond the ones the kernel counts"),
    }
}

/// Deliveries of SPI `intid` so far.
pub fn spi_count(intid: u32) -> u32 {
    intid
        .checked_sub(32)
        .and_then(|i| SPI_COUNT.get(i as usize))
        .map_or(0, |c| c.load(core::sync::atomic::Ordering::Relaxed))
}

/// Routes wired interrupt `intid` to the boot CPU and enables it.
pub fn enable_spi(intid: u32, edge: bool) -> Result<(), GicError> {
    let gicd = GICD.get().ok_or(GicError::BadIntId(intid))?;
    let mpidr = super::boot::boot_mpidr();
    gicd.route_spi(intid, mpidr & 0xff_00ff_ffff)?;
    gicd.enable_spi(intid, DEFAULT_PRIORITY, edge)
}

pub fn disable_spi(intid: u32) -> Result<(), GicError> {
    GICD.get()
        .ok_or(GicError::BadIntId(intid))?
        .disable_spi(intid)
}

/// Takes and dispatches every pending interrupt on this CPU.
pub fn handle_irq(cpu: usize) {
    loop {
        let intid: u64;
        // SAFETY: reading IAR1 acknowledges the highest-priority pending interrupt.
        unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) intid, options(nostack)) };
        if SPECIAL.contains(&intid) {
            return;
        }
        if intid == super::timer::intid() as u64 {
            super::timer::on_tick(cpu);
        } else if intid >= super::msi::LPI_BASE as u64 {
            super::msi::on_lpi(intid as u32);
        } else if (32..1020).contains(&intid) {
            on_spi(intid as u32);
        } else {
            log::warn!("cpu {cpu}: unexpected interrupt {intid}");
        }
        // SAFETY: ends the interrupt we acknowledged above.
        unsafe { asm!("msr icc_eoir1_el1, {}", in(reg) intid, options(nostack)) };
    }
}
