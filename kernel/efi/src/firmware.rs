//! Talking to firmware: the command line, the configuration tables, memory
//! for the kernel and the hand-over, the memory map and ExitBootServices,
//! and the jump into the kernel per its entry contract (`docs/boot.md`).
extern crate alloc;

use alloc::string::String;
use core::fmt::Write;
use efi::{align_up, pages_for_aligned, KERNEL_ALIGN, PAGE};
use kernel::handoff::{self, Handoff};
use uefi::boot::{self, AllocateType, MemoryType};
use uefi::proto::loaded_image::LoadedImage;
use uefi::table::cfg::ConfigTableEntry;
use uefi::{guid, Guid, Status};

include!(concat!(env!("OUT_DIR"), "/kernel.rs"));

/// The devicetree's configuration table entry (EFI_DTB_TABLE_GUID).
const DEVICETREE_GUID: Guid = guid!("b1b621d5-f19c-41a5-830b-d9152c69aae0");
/// The hand-over data stays below 4 GiB: the x86 kernel reads it on its
/// boot tables, which map only that much.
const BELOW_4G: u64 = (1 << 32) - 1;
/// GetMemoryMap/ExitBootServices rounds before giving up: the map key
/// changes when firmware allocates in between (an event, a timer).
const EXIT_TRIES: usize = 4;
/// Descriptors of room beyond the map's size when it was measured.
const MAP_SLACK: usize = 32;

macro_rules! say {
    ($($t:tt)*) => {
        uefi::system::with_stdout(|o| {
            let _ = o.write_str("efi loader: ");
            let _ = writeln!(o, $($t)*);
        })
    };
}

enum Never {}

#[uefi::entry]
fn main() -> Status {
    match run() {
        Ok(never) => match never {},
        Err(e) => {
            say!("{e}");
            Status::LOAD_ERROR
        }
    }
}

/// Where the kernel went and where it starts.
struct Placed {
    base: u64,
    size: u64,
    entry: u64,
}

fn run() -> Result<Never, String> {
    if KERNEL.is_empty() {
        return Err(String::from(
            "no kernel embedded in this loader: build it with IOMMU_EFI_KERNEL=<kernel> \
             (qemu-run does)",
        ));
    }
    let cmdline = command_line();
    let (rsdp, devicetree) = config_tables();
    let kernel = place_kernel()?;
    say!(
        "kernel at {:#x}..{:#x}, entry {:#x}; RSDP {rsdp:#x}; devicetree {:#x} ({} bytes); command line {cmdline:?}",
        kernel.base,
        kernel.base + kernel.size,
        kernel.entry,
        devicetree.0,
        devicetree.1
    );
    let cmdline_addr = copy_low(cmdline.as_bytes())?;
    let block = alloc_low(1)?;
    let mut h = Handoff {
        cmdline_addr,
        cmdline_len: cmdline.len() as u64,
        acpi_rsdp: rsdp,
        devicetree_addr: devicetree.0,
        devicetree_size: devicetree.1,
        efi_system_table: uefi::table::system_table_raw().map_or(0, |p| p.as_ptr() as u64),
        image_base: kernel.base,
        image_size: kernel.size,
        ..Handoff::default()
    };
    let (map_addr, map_size, desc_size, desc_version) = exit_boot_services()?;
    // Boot services are gone: no console, no allocation from here on.
    h.memory_map_addr = map_addr;
    h.memory_map_size = map_size;
    h.descriptor_size = desc_size;
    h.descriptor_version = desc_version;
    let bytes = h.to_bytes();
    // SAFETY: `block` is a page we allocated (LOADER_DATA, still ours).
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), block as *mut u8, bytes.len()) };
    let keep = [
        (kernel.base, kernel.size),
        (block, PAGE),
        (map_addr, map_size),
        (cmdline_addr, cmdline.len() as u64),
        devicetree,
    ];
    enter(kernel.entry, block, devicetree.0, &keep)
}

/// LoadOptions as UTF-8 (empty when there are none).
fn command_line() -> String {
    let Ok(image) = boot::open_protocol_exclusive::<LoadedImage>(boot::image_handle()) else {
        say!("cannot open the loaded image protocol: empty command line");
        return String::new();
    };
    image
        .load_options_as_bytes()
        .map(efi::options::command_line)
        .unwrap_or_default()
}

/// The ACPI 2.0 RSDP (0: none) and the devicetree (address, size; 0: none).
fn config_tables() -> (u64, (u64, u64)) {
    uefi::system::with_config_table(|entries| {
        let find = |g: Guid| {
            entries
                .iter()
                .find(|e| e.guid == g)
                .map_or(0, |e| e.address as u64)
        };
        let dt = find(DEVICETREE_GUID);
        let dt_size = if dt == 0 {
            0
        } else {
            // SAFETY: firmware's devicetree; `totalsize` is the big-endian
            // word at offset 4 of its header.
            u64::from(u32::from_be(unsafe {
                core::ptr::read_unaligned((dt + 4) as *const u32)
            }))
        };
        (find(ConfigTableEntry::ACPI2_GUID), (dt, dt_size))
    })
}

fn alloc_pages(kind: AllocateType, mem: MemoryType, pages: u64) -> Result<u64, String> {
    boot::allocate_pages(kind, mem, pages as usize)
        .map(|p| p.as_ptr() as u64)
        .map_err(|e| alloc::format!("AllocatePages of {pages} pages: {:?}", e.status()))
}

fn alloc_low(pages: u64) -> Result<u64, String> {
    alloc_pages(
        AllocateType::MaxAddress(BELOW_4G),
        MemoryType::LOADER_DATA,
        pages,
    )
}

fn copy_low(bytes: &[u8]) -> Result<u64, String> {
    let at = alloc_low((bytes.len() as u64).div_ceil(PAGE).max(1))?;
    // SAFETY: pages we just allocated, at least `bytes.len()` long.
    unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len()) };
    Ok(at)
}

/// Memory for `size` bytes at a 2 MiB boundary, below `limit`.
fn alloc_aligned(size: u64, limit: u64) -> Result<u64, String> {
    let pages = pages_for_aligned(size);
    let at = alloc_pages(
        AllocateType::MaxAddress(limit - 1),
        MemoryType::LOADER_CODE,
        pages,
    )
    .map_err(|e| alloc::format!("no room for the kernel ({size:#x} bytes): {e}"))?;
    align_up(at, KERNEL_ALIGN).ok_or_else(|| String::from("kernel allocation at the top of memory"))
}

/// The x86_64 kernel ELF, moved to where firmware had room.
#[cfg(target_arch = "x86_64")]
fn place_kernel() -> Result<Placed, String> {
    use efi::elf::{Elf, PLACE_LIMIT};
    let elf = Elf::parse(KERNEL).map_err(|e| alloc::format!("{e}"))?;
    let size = elf.image_size();
    let entry = elf
        .symbol("efi_start64")
        .map_err(|e| alloc::format!("{e}"))?;
    let base = alloc_aligned(size, PLACE_LIMIT)?;
    // SAFETY: `size` bytes at `base` lie inside the pages just allocated.
    let dest = unsafe { core::slice::from_raw_parts_mut(base as *mut u8, size as usize) };
    elf.load(dest, base).map_err(|e| alloc::format!("{e}"))?;
    Ok(Placed {
        base,
        size,
        entry: entry - elf.link_base() + base,
    })
}

/// The arm64 `Image`: position independent, entered at its first byte.
#[cfg(target_arch = "aarch64")]
fn place_kernel() -> Result<Placed, String> {
    let header = efi::arm64::parse_header(KERNEL).map_err(|e| alloc::format!("{e}"))?;
    let size = header.image_size + header.text_offset;
    let base = alloc_aligned(size, u64::MAX)? + header.text_offset;
    // SAFETY: `image_size` bytes at `base` lie inside the pages just allocated.
    let dest =
        unsafe { core::slice::from_raw_parts_mut(base as *mut u8, header.image_size as usize) };
    dest[..KERNEL.len()].copy_from_slice(KERNEL);
    dest[KERNEL.len()..].fill(0);
    Ok(Placed {
        base,
        size: header.image_size,
        entry: base,
    })
}

/// Takes the final memory map into a buffer of our own (below 4 GiB) and
/// leaves boot services, fetching the map again while its key is stale.
/// Returns the map's address, size, descriptor size and version.
fn exit_boot_services() -> Result<(u64, u64, u64, u32), String> {
    let st = uefi::table::system_table_raw().ok_or("no system table")?;
    // SAFETY: the system table firmware gave us; boot services are live.
    let bs = unsafe { &*st.as_ref().boot_services };
    let (mut size, mut key, mut desc_size, mut desc_version) = (0usize, 0usize, 0usize, 0u32);
    // SAFETY: a size query (null buffer, size 0): firmware writes only the
    // four out-parameters.
    let _ = unsafe {
        (bs.get_memory_map)(
            &mut size,
            core::ptr::null_mut(),
            &mut key,
            &mut desc_size,
            &mut desc_version,
        )
    };
    if desc_size < handoff::EFI_DESCRIPTOR_SIZE as usize {
        return Err(alloc::format!(
            "GetMemoryMap: descriptor size {desc_size} is smaller than a descriptor"
        ));
    }
    let capacity = size + MAP_SLACK * desc_size;
    let buf = alloc_low((capacity as u64).div_ceil(PAGE))?;
    let image = boot::image_handle();
    for _ in 0..EXIT_TRIES {
        size = capacity;
        // SAFETY: `buf` holds `capacity` bytes we allocated.
        let status = unsafe {
            (bs.get_memory_map)(
                &mut size,
                buf as *mut _,
                &mut key,
                &mut desc_size,
                &mut desc_version,
            )
        };
        if status != Status::SUCCESS {
            return Err(alloc::format!("GetMemoryMap: {status:?}"));
        }
        // SAFETY: the map key just returned; on success nothing of boot
        // services is used again (the caller neither prints nor allocates).
        let status = unsafe { (bs.exit_boot_services)(image.as_ptr(), key) };
        if status == Status::SUCCESS {
            return Ok((buf, size as u64, desc_size as u64, desc_version));
        }
    }
    Err(alloc::format!(
        "ExitBootServices refused the memory map {EXIT_TRIES} times"
    ))
}

/// x86_64: the kernel's 64-bit entry in long mode, rdi = hand-over block.
#[cfg(target_arch = "x86_64")]
fn enter(entry: u64, block: u64, _devicetree: u64, _keep: &[(u64, u64)]) -> ! {
    // SAFETY: boot services are gone and `entry` is the kernel's
    // `efi_start64` in memory we loaded; it takes nothing from our stack
    // and never returns.
    unsafe {
        core::arch::asm!(
            "cli",
            "jmp {entry}",
            entry = in(reg) entry,
            in("rdi") block,
            options(noreturn)
        )
    }
}

/// arm64: what the kernel reads with its MMU off is cleaned to the point
/// of coherency, the MMU and D-cache go off at the current EL, and the
/// `Image` is entered at its first byte with x0 = devicetree, x1 = block.
#[cfg(target_arch = "aarch64")]
fn enter(entry: u64, block: u64, devicetree: u64, keep: &[(u64, u64)]) -> ! {
    let ctr: u64;
    // SAFETY: reading CTR_EL0 has no side effects.
    unsafe { core::arch::asm!("mrs {}, ctr_el0", out(reg) ctr) };
    let line = 4u64 << ((ctr >> 16) & 0xf);
    for &(start, len) in keep {
        let mut at = start & !(line - 1);
        while at < start + len {
            // SAFETY: clean by VA of memory identity-mapped by firmware.
            unsafe { core::arch::asm!("dc cvac, {}", in(reg) at) };
            at += line;
        }
    }
    // SAFETY: the code and stack stay identity-mapped, so execution goes on
    // once translation is off; `entry` is the Image's first byte, loaded
    // and cleaned above; it never returns.
    unsafe {
        core::arch::asm!(
            "dsb sy",
            "mrs x9, CurrentEL",
            "cmp x9, #8",
            "b.ne 1f",
            "mrs x9, sctlr_el2",
            "bic x9, x9, #1",
            "bic x9, x9, #4",
            "msr sctlr_el2, x9",
            "b 2f",
            "1:",
            "mrs x9, sctlr_el1",
            "bic x9, x9, #1",
            "bic x9, x9, #4",
            "msr sctlr_el1, x9",
            "2:",
            "isb",
            "ic iallu",
            "dsb nsh",
            "isb",
            "br x2",
            in("x0") devicetree,
            in("x1") block,
            in("x2") entry,
            options(noreturn)
        )
    }
}
