//! aarch64 (qemu-virt): EL1, identity-mapped, GICv3, generic timer, PL011,
//! PSCI for secondaries and SYSTEM_OFF, semihosting where a board asks.
mod boot;
mod cache;
mod dt;
mod entry;
mod exceptions;
pub mod facts;
pub mod gic;
mod mmu;
mod msi;
mod psci;

mod timer;
mod uart;

use crate::fault::{self, FaultInfo};
use aarch64_cpu::registers::{Readable, DAIF, TPIDR_EL1};
use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

pub const NAME: &str = "aarch64";
pub const BAD_ACCESS_KIND: &str = "data abort";

static EXITING: AtomicBool = AtomicBool::new(false);

/// Ends the run the way the command line says (`crate::exit`):
/// semihosting SYS_EXIT 0 (pass) or 1 (fail) where the board has it;
/// otherwise PSCI SYSTEM_OFF, and the verdict is the TAP stream alone.
pub fn exit(pass: bool) -> ! {
    // A second call means the semihosting trap itself faulted: skip it.
    let first = !EXITING.swap(true, Ordering::SeqCst);
    if first && crate::exit::method() == kernel::cmdline::ExitMethod::Semihosting {
        psci::semihosting_exit(if pass { 0 } else { 1 });
    }
    if let Some(hvc) = boot::psci_conduit() {
        psci::system_off(hvc);
        crate::exit::halt_line(pass, "PSCI SYSTEM_OFF returned");
    } else {
        crate::exit::halt_line(pass, "no PSCI conduit to power off with");
    }
    loop {
        aarch64_cpu::asm::wfe();
    }
}

pub fn now_ns() -> u64 {
    timer::now_ns()
}

pub fn cpu_index() -> usize {
    (TPIDR_EL1.get() as usize).min(crate::smp::MAX_CPUS - 1)
}

/// Masks IRQs; returns whether they were unmasked.
pub fn interrupts_disable() -> bool {
    let was = !DAIF.is_set(DAIF::I);
    // SAFETY: masking IRQs on this CPU.
    unsafe { asm!("msr daifset, #2", options(nomem, nostack)) };
    was
}

pub fn interrupts_restore(enabled: bool) {
    if enabled {
        // SAFETY: unmasking IRQs on this CPU; handlers are installed.
        unsafe { asm!("msr daifclr, #2", options(nomem, nostack)) };
    }
}

pub fn wait_for_interrupt() {
    aarch64_cpu::asm::wfi();
}

/// Cleans and invalidates the data cache line holding `pa` to the point of
/// coherency, for a device that does not snoop (a non-coherent IOMMU's
/// tables and queues): what the CPU wrote reaches memory, and what the
/// device wrote is read from memory.
/// Where devices write their MSIs (GITS_TRANSLATER), once the ITS is up:
/// an SMMU translates these writes, so its domains must map the page.
pub fn msi_doorbell() -> Option<u64> {
    msi::doorbell()
}

/// Orders earlier stores to memory a device reads before later MMIO
/// accesses (DSB SY).
pub fn dma_barrier() {
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
}

pub fn flush_cache_line(pa: u64) {
    cache::clean_invalidate_to_poc(pa as usize, pa as usize + 1);
}

/// Cleans `bytes` at `virt` to the point of coherency (DC CVAC over each
/// data cache line), then waits for it (DSB SY): for memory a device reads
/// past the caches (a non-coherent GIC ITS).
pub fn clean_to_poc(virt: *const u8, bytes: usize) {
    cache::clean_to_poc(virt as usize, virt as usize + bytes);
}

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
pub type MapFormat = kernel::idmap::Aarch64;

pub fn map_format() -> MapFormat {
    kernel::idmap::Aarch64
}

pub fn pa_bits() -> u32 {
    mmu::pa_bits()
}

/// After new identity-map entries were written.
pub fn map_published() {
    mmu::published();
}

/// Reads [`unmapped_addr`] with this CPU armed for a data abort: the
/// exception path's test. Only that address: a probe of device memory
/// could have side effects.
pub fn probe_unmapped() -> (u64, Result<u64, FaultInfo>) {
    let addr = unmapped_addr();
    (addr, probe_read(addr))
}

/// Reads `addr` with this CPU armed for a data abort.
fn probe_read(addr: u64) -> Result<u64, FaultInfo> {
    let cpu = cpu_index();
    fault::arm(cpu);
    let value: u64;
    // SAFETY: the load may fault; the exception handler then records it and
    // resumes at the next instruction (this single `ldr`), leaving `value` stale.
    unsafe {
        asm!("ldr {v}, [{a}]", a = in(reg) addr, v = out(reg) value, options(nostack, readonly))
    };
    match fault::disarm(cpu) {
        Some(info) => Err(info),
        None => Ok(value),
    }
}

/// Whether firmware tables at `r` may be read (mapping them as normal
/// memory if firmware left them outside the RAM mapped so far).
pub fn firmware_readable(r: kernel::addr::PhysRange) -> bool {
    crate::mapping::map_firmware(r, "firmware tables")
}

/// Arm has no BIOS areas to scan for an RSDP.
pub fn legacy_rsdp_scan() -> Option<Option<u64>> {
    None
}

/// The boot facts (GIC, timer, CPUs, PSCI, console) as ACPI alone gives
/// them, whatever the boot used: for comparing with the devicetree's.
pub fn acpi_boot_facts() -> Result<facts::BootFacts, alloc::string::String> {
    let set = crate::discovery::boot_tables(crate::platform::get().acpi)?;
    facts::from_acpi(set).map(|(f, _)| f)
}

/// The same facts as the devicetree gives them, if there is one.
pub fn devicetree_boot_facts() -> Option<Result<facts::BootFacts, alloc::string::String>> {
    dt::platform().map(|p| dt::boot_facts(p).map_err(|e| alloc::format!("{e}")))
}

/// The devicetree the boot path parsed.
pub fn devicetree() -> Option<&'static devicetree::Platform> {
    dt::platform()
}

/// Late platform bring-up, once the page allocator works: the ITS and LPIs.
pub fn init_late() {
    match msi::init() {
        Ok(what) => log::info!("MSI: {what}"),
        Err(e) => log::warn!("MSI: {e}; MSI tests will fail"),
    }
}

/// A message-signalled interrupt for a device whose MSIs carry `device_id`
/// (the ITS DeviceID the IORT or msi-map gives its requester id).
pub fn msi_alloc(device_id: u32) -> Result<crate::platform::MsiVector, alloc::string::String> {
    msi::alloc(device_id)
}

/// Makes the CPU raise `v` the way a device would, where the platform
/// allows it: here a write to GITS_TRANSLATER, which QEMU tags with
/// DeviceID 0.
pub fn msi_fire(v: &crate::platform::MsiVector) -> Result<(), alloc::string::String> {
    msi::translater_write(v.data)
}

pub fn msi_count(id: u32) -> u32 {
    msi::lpi_count(id)
}

/// The CPU's own access through a process's tables (see
/// `mmu::access_on_tables`).
pub fn access_on_tables(root: u64, write_va: Option<(u64, u64)>, read_va: u64) -> u64 {
    mmu::access_on_tables(root, write_va, read_va)
}
