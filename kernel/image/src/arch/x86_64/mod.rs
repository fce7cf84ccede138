//! x86_64 (qemu-q35): PVH entry, identity-mapped long mode, IDT with a
//! crash report, xAPIC or x2APIC with a TSC-calibrated periodic timer,
//! INIT/SIPI for each secondary the MADT lists, 16550 console, isa-debug-exit where a board asks for it.
mod apic;
mod boot;
mod entry;
mod exceptions;
mod paging;
mod time;

use crate::fault::{self, FaultInfo};
use crate::smp::MAX_CPUS;
use core::arch::asm;
use core::sync::atomic::{AtomicU16, AtomicU32, Ordering};
use x86_64::instructions::{hlt, interrupts};

pub const NAME: &str = "x86_64";
pub const BAD_ACCESS_KIND: &str = "page fault";

/// isa-debug-exit turns a write of V into QEMU exit status (V << 1) | 1.
const DEBUG_EXIT_PORT: u16 = 0xf4;
const EXIT_PASS: u32 = 0x10;
const EXIT_FAIL: u32 = 0x11;

/// CPU index + 1 by xAPIC-range id (0: not registered): the fast path for
/// the ids most machines use.
static CPU_OF_SMALL_ID: [AtomicU16; 256] = [const { AtomicU16::new(0) }; 256];
/// APIC id + 1 of each CPU whose id is past 255 (x2APIC), by CPU index.
static LARGE_ID_OF_CPU: [AtomicU32; MAX_CPUS] = [const { AtomicU32::new(0) }; MAX_CPUS];

fn register_cpu(apic_id: u32, cpu: usize) {
    match usize::try_from(apic_id)
        .ok()
        .filter(|&i| i < CPU_OF_SMALL_ID.len())
    {
        Some(i) => CPU_OF_SMALL_ID[i].store(cpu as u16 + 1, Ordering::Relaxed),
        None => {
            if let Some(slot) = LARGE_ID_OF_CPU.get(cpu) {
                slot.store(apic_id.wrapping_add(1), Ordering::Relaxed);
            }
        }
    }
}

/// The CPU index of APIC id `apic_id`; unknown ids read 0: only the boot
/// CPU runs kernel code before registering itself.
fn cpu_of_apic(apic_id: u32) -> usize {
    if let Some(slot) = CPU_OF_SMALL_ID.get(apic_id as usize) {
        return usize::from(slot.load(Ordering::Relaxed)).saturating_sub(1);
    }
    let key = apic_id.wrapping_add(1);
    LARGE_ID_OF_CPU
        .iter()
        .position(|s| s.load(Ordering::Relaxed) == key)
        .unwrap_or(0)
}

/// Ends the run the way the command line says (`crate::exit`): QEMU's
/// isa-debug-exit (exit status 33 pass, 35 fail) where the board has it;
/// otherwise ACPI power-off, or a halt with a last console line, and the
/// verdict is the TAP stream alone.
pub fn exit(pass: bool) -> ! {
    if crate::exit::method() == kernel::cmdline::ExitMethod::IsaDebugExit {
        let code = if pass { EXIT_PASS } else { EXIT_FAIL };
        // SAFETY: the isa-debug-exit port the command line says this
        // machine has; writing it only ends the emulation.
        unsafe { x86_64::instructions::port::Port::<u32>::new(DEBUG_EXIT_PORT).write(code) };
    }
    let Err(why) = acpi_power_off();
    crate::exit::halt_line(pass, why);
    loop {
        interrupts::disable();
        hlt();
    }
}

/// Powers off through ACPI: S5's SLP_TYP with SLP_EN into the PM1
/// control blocks (the FADT's, with the DSDT's `\_S5` values), PM1a then
/// PM1b as the specification orders. Says why not when the tables give no
/// way, or when the machine is still running 1 s later; the caller halts.
fn acpi_power_off() -> Result<core::convert::Infallible, &'static str> {
    const SLP_TYP: u16 = 0b111 << 10;
    const SLP_EN: u16 = 1 << 13;
    let Some(off) = crate::discovery::get().and_then(|t| t.soft_off.as_ref()) else {
        return Err("the ACPI tables give no soft-off (FADT PM1 control block and \\_S5)");
    };
    let io_port = |gas: &acpi_tables::spcr::Gas| {
        // PM1 control blocks in memory are rare on PCs and the kernel maps
        // no ACPI register space: only I/O blocks are driven.
        (gas.space_id == acpi_tables::spcr::SPACE_SYSTEM_IO)
            .then(|| u16::try_from(gas.address).ok())
            .flatten()
            .ok_or("the PM1 control block is not an I/O port")
    };
    let mut ports = [None, None];
    ports[0] = Some((io_port(&off.pm1a_cnt)?, off.slp_typ.pm1a));
    if let Some(b) = &off.pm1b_cnt {
        ports[1] = Some((io_port(b)?, off.slp_typ.pm1b));
    }
    for (port, typ) in ports.into_iter().flatten() {
        let mut reg = x86_64::instructions::port::Port::<u16>::new(port);
        // SAFETY: the PM1 control register the FADT names; a
        // read-modify-write of its sleep fields is what the
        // specification asks of the OS to enter a sleep state.
        unsafe {
            let v = reg.read() & !(SLP_TYP | SLP_EN);
            reg.write(v | (u16::from(typ) << 10) | SLP_EN);
        }
    }
    let t0 = time::now_ns();
    while time::now_ns() - t0 < 1_000_000_000 {
        core::hint::spin_loop();
    }
    Err("the machine did not power off within 1 s of the ACPI S5 request")
}

pub fn now_ns() -> u64 {
    time::now_ns()
}

pub fn cpu_index() -> usize {
    cpu_of_apic(apic::id()).min(MAX_CPUS - 1)
}

/// Masks interrupts; returns whether they were enabled.
pub fn interrupts_disable() -> bool {
    let was = interrupts::are_enabled();
    interrupts::disable();
    was
}

pub fn interrupts_restore(enabled: bool) {
    if enabled {
        interrupts::enable();
    }
}

/// Sleeps until an interrupt. `sti; hlt` back to back: STI takes effect
/// after the next instruction, so an interrupt already pending wakes the
/// HLT instead of slipping in before it. The interrupt state is kept.
/// Writes back and drops the cache line holding `pa`, for a device that
/// does not snoop (a non-coherent IOMMU's tables and queues, ECAP.C = 0).
/// Orders earlier stores to memory a device reads before later MMIO
/// accesses: x86 keeps write-back stores in order before uncached ones,
/// so only the compiler must not reorder (a full fence costs little).
pub fn dma_barrier() {
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

pub fn flush_cache_line(pa: u64) {
    // SAFETY: CLFLUSH on an identity-mapped address writes back and drops
    // a line; it changes no data. The fence orders it before what follows.
    unsafe {
        core::arch::x86_64::_mm_clflush(pa as *const u8);
        core::arch::x86_64::_mm_mfence();
    }
}

pub fn wait_for_interrupt() {
    let was = interrupts::are_enabled();
    interrupts::enable_and_hlt();
    if !was {
        interrupts::disable();
    }
}

/// Never mapped: the identity map stops below `MAP_LIMIT`.
/// Reads [`unmapped_addr`] without arming the fault path: the crash
/// report of an unexpected fault ends the run (`crash=unexpected`).
pub fn read_unmapped_unexpected() {
    let addr = unmapped_addr();
    // SAFETY: nothing is mapped there (no device, no memory): the load
    // faults, and the exception path reports and ends the run.
    unsafe { core::ptr::read_volatile(addr as *const u64) };
}

pub fn unmapped_addr() -> u64 {
    crate::mapping::unmapped_addr()
}

/// The identity map's descriptor format (`crate::mapping`).
pub type MapFormat = kernel::idmap::X86_64;

pub fn map_format() -> MapFormat {
    kernel::idmap::X86_64 {
        gib_pages: paging::gib_pages(),
    }
}

pub fn pa_bits() -> u32 {
    paging::pa_bits()
}

/// After new identity-map entries were written.
pub fn map_published() {
    paging::published();
}

/// Reads [`unmapped_addr`] with this CPU armed for a page fault: the
/// exception path's test. Only that address: a probe of device memory
/// could have side effects.
pub fn probe_unmapped() -> (u64, Result<u64, FaultInfo>) {
    let addr = unmapped_addr();
    (addr, probe_read(addr))
}

/// Reads `addr` with this CPU armed for a page fault.
fn probe_read(addr: u64) -> Result<u64, FaultInfo> {
    let cpu = cpu_index();
    let resume = &exceptions::PROBE_RESUME[cpu];
    fault::arm(cpu);
    let value: u64;
    // SAFETY: the load may fault; the page-fault handler then records it and
    // resumes at label 2 (whose address we stored first), with every
    // register restored and `value` left stale. Nothing else is touched.
    unsafe {
        asm!(
            "lea 2f(%rip), {tmp}",
            "mov {tmp}, ({slot})",
            "mov ({addr}), {value}",
            "2:",
            slot = in(reg) resume.as_ptr(),
            addr = in(reg) addr,
            tmp = out(reg) _,
            value = out(reg) value,
            options(att_syntax, nostack),
        );
    }
    resume.store(0, Ordering::SeqCst);
    match fault::disarm(cpu) {
        Some(info) => Err(info),
        None => Ok(value),
    }
}

/// Whether firmware tables at `r` may be read (mapped as normal memory
/// here unless the range is MMIO).
pub fn firmware_readable(r: kernel::addr::PhysRange) -> bool {
    r.start < r.end && crate::mapping::map_firmware(r, "firmware tables")
}

/// Set when our UEFI loader started the kernel: there are no BIOS areas
/// then (the RSDP comes from the configuration table).
pub static BOOTED_BY_UEFI: core::sync::atomic::AtomicBool =
    core::sync::atomic::AtomicBool::new(false);

/// The RSDP found by scanning the BIOS areas (`None` inside: not found);
/// `None` outside when UEFI started us and there is no BIOS to scan.
pub fn legacy_rsdp_scan() -> Option<Option<u64>> {
    if BOOTED_BY_UEFI.load(core::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    Some(boot::scan_rsdp())
}

/// PCs describe themselves through ACPI only.
pub fn devicetree() -> Option<&'static devicetree::Platform> {
    None
}

/// Late platform bring-up: nothing yet (MSIs to the local APIC need no tables).
pub fn init_late() {}

/// A message-signalled interrupt: the next free IDT vector, delivered to
/// the boot CPU's local APIC (compatibility format: interrupt remapping is off).
pub fn msi_alloc(_device_id: u32) -> Result<crate::platform::MsiVector, alloc::string::String> {
    exceptions::alloc_msi_vector().map(|vector| crate::platform::MsiVector {
        address: 0xfee0_0000 | (u64::from(apic::boot_apic_id()) << 12),
        data: vector,
        id: vector,
    })
}

/// A CPU cannot send an MSI on x86: a write to 0xfee0_0000 reaches its own
/// local APIC's registers, not the interrupt bus.
pub fn msi_fire(_v: &crate::platform::MsiVector) -> Result<(), alloc::string::String> {
    Err("on x86 only a device can send an MSI".into())
}

pub fn msi_count(id: u32) -> u32 {
    exceptions::msi_count(id)
}

/// The CPU's own access through a process's tables (see
/// `paging::access_on_tables`).
pub fn access_on_tables(root: u64, write_va: Option<(u64, u64)>, read_va: u64) -> u64 {
    paging::access_on_tables(root, write_va, read_va)
}
