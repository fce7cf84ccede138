//! The MMU: stage-1 EL1 translation through TTBR0 with the identity map
//! `crate::mapping` builds (4 KiB granule, 48-bit addresses): normal
//! write-back memory where firmware describes RAM, Device-nGnRE where it
//! describes MMIO, nothing elsewhere.
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use kernel::addr::PhysRange;
use kernel::idmap::MemKind;

/// Maps the ranges the boot CPU must reach before the devicetree is
/// read (its own image, the devicetree) as normal memory. MMU still off.
pub fn build(ram: &[PhysRange]) {
    for r in ram {
        // SAFETY: the boot CPU, MMU off, before any other CPU starts.
        // Boot has no console yet; a failure shows as the fault that follows.
        let _ = unsafe { crate::mapping::map_before_mmu(*r) };
    }
}

/// Maps the RAM the devicetree describes (boot CPU, before the
/// secondaries start). Entries only go from invalid to valid.
/// Returns the RAM that could not be mapped (beyond the CPU's reach, or
/// contradicting an earlier mapping), which must not be handed out.
pub fn add_ram(ram: &[PhysRange]) -> alloc::vec::Vec<PhysRange> {
    ram.iter()
        .filter(|r| crate::mapping::map(**r, MemKind::Normal, "RAM").is_err())
        .copied()
        .collect()
}

/// Makes new entries visible to the table walker: they were invalid
/// before, so no TLB entry can hold them and no invalidation is needed.
pub fn published() {
    barrier::dsb(barrier::ISHST);
    barrier::isb(barrier::SY);
}

/// The CPU's physical address size in bits (ID_AA64MMFR0_EL1.PARange),
/// at most 48: the map has four levels of 4 KiB tables.
pub fn pa_bits() -> u32 {
    match ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange) {
        0 => 32,
        1 => 36,
        2 => 40,
        3 => 42,
        4 => 44,
        _ => 48,
    }
}

/// Turns the MMU and caches on with the identity map (every CPU).
pub fn enable() {
    MAIR_EL1.write(
        MAIR_EL1::Attr0_Device::nonGathering_nonReordering_noEarlyWriteAck
            + MAIR_EL1::Attr1_Device::nonGathering_nonReordering_EarlyWriteAck
            + MAIR_EL1::Attr2_Normal_Outer::WriteBack_NonTransient_ReadWriteAlloc
            + MAIR_EL1::Attr2_Normal_Inner::WriteBack_NonTransient_ReadWriteAlloc,
    );
    // Physical address size: what the CPU has, at most 48 bits (our tables stop there).
    let pa_range = ID_AA64MMFR0_EL1.read(ID_AA64MMFR0_EL1::PARange).min(5);
    TCR_EL1.write(
        TCR_EL1::T0SZ.val(16)
            + TCR_EL1::TG0::KiB_4
            + TCR_EL1::SH0::Inner
            + TCR_EL1::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL1::EPD1::DisableTTBR1Walks
            + TCR_EL1::IPS.val(pa_range),
    );
    TTBR0_EL1.set(crate::mapping::root());
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating this CPU's stale TLB entries has no other effect.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb nsh", "isb", options(nostack)) };
    SCTLR_EL1.modify(SCTLR_EL1::M::Enable + SCTLR_EL1::C::Cacheable + SCTLR_EL1::I::Cacheable);
    barrier::isb(barrier::SY);
}

/// Maps, as device memory, every MMIO range the devicetree describes and
/// the kernel may touch: console, fw_cfg, the GIC's distributor,
/// redistributor regions and ITSes, the SMMUs. PCIe ECAM windows and
/// host-bridge windows are mapped where PCI binds them (`pcie`).
pub fn map_described(p: &devicetree::Platform) {
    use crate::mapping::map_device;
    let r = |base: u64, size: u64| PhysRange::new(base, size);
    if let Some(c) = &p.console {
        map_device(r(c.base, c.size), "console");
    }
    if let Some(f) = &p.fw_cfg {
        map_device(r(f.base, f.size), "fw_cfg");
    }
    if let devicetree::Gic::V3(g) = &p.gic {
        map_device(r(g.distributor.base, g.distributor.size), "GIC distributor");
        for rd in &g.redistributors {
            map_device(r(rd.base, rd.size), "GIC redistributors");
        }
        for its in &g.its {
            map_device(r(its.base, its.size), "GIC ITS");
        }
    }
    for s in &p.smmus {
        map_device(r(s.base, s.size), "SMMUv3");
    }
}

/// A GIC distributor's register frame.
const GICD_SIZE: u64 = 0x1_0000;

/// Maps the GIC's frames the boot facts name, as device memory (again,
/// where the devicetree's were mapped already).
pub fn map_facts(f: &super::facts::BootFacts) {
    use crate::mapping::map_device;
    map_device(PhysRange::new(f.gicd, GICD_SIZE), "GIC distributor");
    for r in &f.gicr {
        map_device(*r, "GIC redistributors");
    }
    for r in &f.its {
        map_device(*r, "GIC ITS");
    }
}

/// The ASID the tables of [`access_on_tables`] run under (the kernel's map
/// is ASID 0; its entries are global anyway).
const SPACE_ASID: u64 = 1;

/// Loads `root` into TTBR0_EL1 under [`SPACE_ASID`], interrupts off,
/// writes `value` at `write_va` if given, reads the u64 at `read_va`, and
/// goes back to the kernel's map, dropping what the TLB cached under that
/// ASID. `root` must carry the kernel's half (its root entries), so code,
/// stack and data stay mapped; both addresses must be mapped there.
pub fn access_on_tables(root: u64, write_va: Option<(u64, u64)>, read_va: u64) -> u64 {
    let enabled = super::interrupts_disable();
    let old = TTBR0_EL1.get();
    barrier::dsb(barrier::ISH);
    TTBR0_EL1.set(root | SPACE_ASID << 48);
    barrier::isb(barrier::SY);
    if let Some((va, value)) = write_va {
        // SAFETY: `va` is mapped writable in the tables now loaded, to a
        // page the caller owns; aligned u64.
        unsafe { core::ptr::write_volatile(va as *mut u64, value) };
    }
    // SAFETY: as above, readable.
    let v = unsafe { core::ptr::read_volatile(read_va as *const u64) };
    barrier::dsb(barrier::ISH);
    TTBR0_EL1.set(old);
    barrier::isb(barrier::SY);
    // SAFETY: dropping this CPU's translations under SPACE_ASID has no
    // other effect; the next use of the ASID walks the tables afresh.
    unsafe {
        core::arch::asm!(
            "tlbi aside1, {a}",
            "dsb nsh",
            "isb",
            a = in(reg) SPACE_ASID << 48,
            options(nostack)
        )
    };
    super::interrupts_restore(enabled);
    v
}
