//! Paging. The 32-bit entry code maps 0..4 GiB with 2 MiB pages (3..4 GiB
//! uncached) only to reach long mode; the boot CPU then builds the real
//! identity map (`crate::mapping`: RAM write-back wherever the memory map
//! puts it, MMIO uncached where firmware describes it, nothing else) and
//! every CPU switches to it.
use alloc::vec::Vec;
use kernel::addr::PhysRange;
use kernel::idmap::MemKind;

const ENTRIES: usize = 512;

#[repr(C, align(4096))]
pub struct BootTables {
    pml4: [u64; ENTRIES],
    pdpt: [u64; ENTRIES],
    pd: [[u64; ENTRIES]; 4],
}

/// Filled by the boot code (`entry.rs`) before paging is on; the
/// secondaries' trampoline starts on it too, until they switch.
pub static mut BOOT_TABLES: BootTables = BootTables {
    pml4: [0; ENTRIES],
    pdpt: [0; ENTRIES],
    pd: [[0; ENTRIES]; 4],
};

fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
    // SAFETY: CPUID exists on every x86_64 CPU and has no side effects.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::__cpuid(leaf)
    }
}

/// Whether the CPU has 1 GiB pages (CPUID.80000001h:EDX bit 26).
pub fn gib_pages() -> bool {
    cpuid(0x8000_0000).eax >= 0x8000_0001 && cpuid(0x8000_0001).edx & (1 << 26) != 0
}

/// The CPU's physical address width (CPUID.80000008h:EAX[7:0]), at most
/// 48 (four levels).
pub fn pa_bits() -> u32 {
    if cpuid(0x8000_0000).eax >= 0x8000_0008 {
        (cpuid(0x8000_0008).eax & 0xff).min(48)
    } else {
        36
    }
}

/// Maps the RAM in `ram` (write-back) into the new map and switches this
/// (the boot) CPU to it. RAM that cannot be mapped (beyond the CPU's
/// reach, out of table pages) is dropped from `ram` and returned.
pub fn install(ram: &mut Vec<PhysRange>, kernel_image: PhysRange) -> Vec<PhysRange> {
    let mut dropped = Vec::new();
    ram.retain(|r| {
        let ok = crate::mapping::map(*r, MemKind::Normal, "RAM").is_ok();
        if !ok {
            dropped.push(*r);
        }
        ok
    });
    // The image is inside RAM on every loader we know; mapping it again is
    // free then, and saves the switch below if a memory map ever left it out.
    let _ = crate::mapping::map(kernel_image, MemKind::Normal, "kernel image");
    activate();
    dropped
}

/// Loads the identity map into CR3 (every CPU, once the boot CPU built it).
pub fn activate() {
    let root = crate::mapping::root();
    if root == 0 {
        return;
    }
    let frame =
        x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(root));
    // SAFETY: the map identity-maps the kernel image (code, stacks, data)
    // and all RAM exactly as the boot map did, so execution continues.
    unsafe {
        x86_64::registers::control::Cr3::write(frame, x86_64::registers::control::Cr3Flags::empty())
    };
}

/// After new entries were written: they were not present before, and x86
/// caches no translation for a not-present entry, so nothing to flush.
pub fn published() {}

/// Runs `f` on the page tables at `root` (CR3), interrupts off, and goes
/// back to the kernel's map. `root` must carry the kernel's half (its
/// root entries), so code, stack and data stay mapped.
pub fn with_tables<R>(root: u64, f: impl FnOnce() -> R) -> R {
    use x86_64::registers::control::Cr3;
    let enabled = super::interrupts_disable();
    let (old, flags) = Cr3::read_raw();
    let frame =
        x86_64::structures::paging::PhysFrame::containing_address(x86_64::PhysAddr::new(root));
    // SAFETY: the caller's tables map the kernel as the kernel's map does
    // (its root entries are linked in), so execution continues; the write
    // drops every non-global translation of the old tables.
    unsafe { Cr3::write(frame, x86_64::registers::control::Cr3Flags::empty()) };
    let r = f();
    // SAFETY: the kernel's own map, as before the switch.
    unsafe { Cr3::write_raw(old, flags) };
    super::interrupts_restore(enabled);
    r
}

/// On the tables at `root` (see [`with_tables`]): writes `value` at
/// virtual address `write_va` if given, then reads the u64 at `read_va`.
/// Both must be mapped there (a fault is the exception handler's).
pub fn access_on_tables(root: u64, write_va: Option<(u64, u64)>, read_va: u64) -> u64 {
    with_tables(root, || {
        if let Some((va, value)) = write_va {
            // SAFETY: `va` is mapped writable in the tables now loaded, to
            // a page the caller owns; aligned u64.
            unsafe { core::ptr::write_volatile(va as *mut u64, value) };
        }
        // SAFETY: as above, readable.
        unsafe { core::ptr::read_volatile(read_va as *const u64) }
    })
}
