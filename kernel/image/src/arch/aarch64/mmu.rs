//! The identity map: 4 KiB granule, 48-bit addresses, 1 GiB blocks. RAM is
//! normal write-back memory; the low 1 GiB (GIC, UART, fw_cfg, PCIe window)
//! and the high MMIO above 256 GiB (redistributors, ECAM, 64-bit PCIe
//! window) are device memory; everything else stays unmapped so a stray
//! access faults.
use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::*;
use kernel::addr::PhysRange;

const GIB: u64 = 1 << 30;

const VALID: u64 = 1 << 0;
const TABLE: u64 = 1 << 1;
const ATTR_DEVICE: u64 = 1 << 2; // AttrIndx 1: Device-nGnRE
const ATTR_NORMAL: u64 = 2 << 2; // AttrIndx 2: Normal write-back
const INNER_SHAREABLE: u64 = 3 << 8;
const ACCESS_FLAG: u64 = 1 << 10;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

const DEVICE_BLOCK: u64 = VALID | ATTR_DEVICE | ACCESS_FLAG | PXN | UXN;
const NORMAL_BLOCK: u64 = VALID | ATTR_NORMAL | INNER_SHAREABLE | ACCESS_FLAG | UXN;

#[repr(C, align(4096))]
struct Table([u64; 512]);

// Written once by the boot CPU before the MMU is on, read only by the walker afterwards.
static mut L0: Table = Table([0; 512]);
static mut L1_LOW: Table = Table([0; 512]); // 0 .. 512 GiB
static mut L1_HIGH: Table = Table([0; 512]); // 512 GiB .. 1 TiB

/// What each 1 GiB slot of the low table holds.
fn low_slot(i: u64, ram: &[PhysRange]) -> u64 {
    let slot = PhysRange::new(i * GIB, GIB);
    if ram.iter().any(|r| r.overlaps(&slot)) {
        NORMAL_BLOCK | slot.start
    } else if i == 0 || i >= 256 {
        DEVICE_BLOCK | slot.start
    } else {
        0
    }
}

/// An address in an unmapped slot, for the bad-access test.
pub fn unmapped_addr(ram: &[PhysRange]) -> u64 {
    let i = (2..256).find(|&i| low_slot(i, ram) == 0).unwrap_or(255);
    i * GIB + 0xbad000
}

/// Builds the tables (boot CPU only, once).
pub fn build(ram: &[PhysRange]) {
    // SAFETY: runs once on the boot CPU before the MMU is on and before any
    // other CPU starts; nothing else references the tables yet.
    unsafe {
        let l1_low = &mut *core::ptr::addr_of_mut!(L1_LOW);
        let l1_high = &mut *core::ptr::addr_of_mut!(L1_HIGH);
        let l0 = &mut *core::ptr::addr_of_mut!(L0);
        for i in 0..512u64 {
            l1_low.0[i as usize] = low_slot(i, ram);
            l1_high.0[i as usize] = DEVICE_BLOCK | ((512 + i) * GIB);
        }
        l0.0[0] = VALID | TABLE | l1_low.0.as_ptr() as u64;
        l0.0[1] = VALID | TABLE | l1_high.0.as_ptr() as u64;
    }
}

/// Maps further RAM as normal memory once the devicetree is read (boot CPU,
/// before the secondaries start). A slot that changes from one valid
/// mapping to another goes through break-before-make.
pub fn add_ram(ram: &[PhysRange]) {
    // SAFETY: boot CPU only, no other CPU runs; the walker may read the
    // table concurrently, which the break-before-make sequence accounts for.
    let table = unsafe { &mut *core::ptr::addr_of_mut!(L1_LOW) };
    for i in 0..512u64 {
        let want = low_slot(i, ram);
        let have = table.0[i as usize];
        if want == 0 || want == have {
            continue;
        }
        if have != 0 {
            table.0[i as usize] = 0;
            barrier::dsb(barrier::ISH);
            // SAFETY: drops stale translations of this CPU; no other effect.
            unsafe { core::arch::asm!("tlbi vmalle1", "dsb ish", "isb", options(nostack)) };
        }
        table.0[i as usize] = want;
    }
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
}

/// Turns the MMU and caches on with the tables `build` made (every CPU).
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
    TTBR0_EL1.set(core::ptr::addr_of!(L0) as u64);
    barrier::dsb(barrier::ISH);
    barrier::isb(barrier::SY);
    // SAFETY: invalidating this CPU's stale TLB entries has no other effect.
    unsafe { core::arch::asm!("tlbi vmalle1", "dsb nsh", "isb", options(nostack)) };
    SCTLR_EL1.modify(SCTLR_EL1::M::Enable + SCTLR_EL1::C::Cacheable + SCTLR_EL1::I::Cacheable);
    barrier::isb(barrier::SY);
}
