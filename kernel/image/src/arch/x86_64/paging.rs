//! The identity map. The 32-bit entry code maps 0..4 GiB with 2 MiB pages
//! (3..4 GiB uncached for MMIO); RAM above 4 GiB is added here, up to
//! `MAP_LIMIT`. Everything from `MAP_LIMIT` up stays unmapped.
use alloc::vec::Vec;
use kernel::addr::PhysRange;

const ENTRIES: usize = 512;
const PRESENT_WRITABLE: u64 = 0x3;
const HUGE: u64 = 0x80;
const GIB: u64 = 1 << 30;
const PAGE_2M: u64 = 2 << 20;

#[repr(C, align(4096))]
pub struct BootTables {
    pml4: [u64; ENTRIES],
    pdpt: [u64; ENTRIES],
    pd: [[u64; ENTRIES]; 4],
}

/// Filled by the boot code (`entry.rs`) before paging is on; shared by all CPUs.
pub static mut BOOT_TABLES: BootTables = BootTables {
    pml4: [0; ENTRIES],
    pdpt: [0; ENTRIES],
    pd: [[0; ENTRIES]; 4],
};

/// Page directories for RAM above 4 GiB, one per GiB.
const EXTRA_PDS: usize = 60;

#[repr(C, align(4096))]
struct ExtraPds([[u64; ENTRIES]; EXTRA_PDS]);

static mut EXTRA: ExtraPds = ExtraPds([[0; ENTRIES]; EXTRA_PDS]);

/// The first address never mapped: RAM beyond it is not used.
pub const MAP_LIMIT: u64 = (4 + EXTRA_PDS as u64) * GIB;

/// Identity-maps (write-back) the RAM in `ram` that lies between 4 GiB and
/// `MAP_LIMIT`, and drops RAM beyond `MAP_LIMIT` from `ram`, returning how
/// many bytes were dropped. Boot CPU only, before the secondaries start.
pub fn map_high_ram(ram: &mut Vec<PhysRange>) -> u64 {
    let before = kernel::mm::ranges::total(ram);
    ram.retain_mut(|r| {
        r.end = r.end.min(MAP_LIMIT);
        !r.is_empty()
    });
    // SAFETY: only the boot CPU runs, and nothing else holds references to
    // the tables; entries are only added (never changed), so no live
    // translation changes.
    let (pdpt, extra) = unsafe {
        (
            &mut *core::ptr::addr_of_mut!(BOOT_TABLES.pdpt),
            &mut *core::ptr::addr_of_mut!(EXTRA.0),
        )
    };
    for r in ram.iter().filter(|r| r.end > 4 * GIB) {
        let mut page = r.start.max(4 * GIB) & !(PAGE_2M - 1);
        while page < r.end {
            let gib = (page / GIB) as usize;
            let pd = &mut extra[gib - 4];
            if pdpt[gib] == 0 {
                pdpt[gib] = pd.as_ptr() as u64 | PRESENT_WRITABLE;
            }
            pd[(page / PAGE_2M) as usize % ENTRIES] = page | HUGE | PRESENT_WRITABLE;
            page += PAGE_2M;
        }
    }
    // SAFETY: reloading CR3 with its own value flushes any cached
    // not-present paging-structure entries; the tables stay the same.
    unsafe {
        let (frame, flags) = x86_64::registers::control::Cr3::read();
        x86_64::registers::control::Cr3::write(frame, flags);
    }
    before - kernel::mm::ranges::total(ram)
}
