//! What the arch code learned at boot about the machine, kept for the rest of the run.
use alloc::string::String;
use alloc::vec::Vec;
use kernel::addr::PhysRange;
use spin::Once;

/// Where the ACPI tables can be found: a parameter of boot, not a board
/// assumption (PVH start info, fw_cfg on a firmware-less Arm boot, and
/// later the UEFI configuration table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiEntry {
    /// The RSDP's physical address, as firmware left it.
    Rsdp(u64),
    /// No firmware ran: QEMU's fw_cfg at this MMIO base holds the tables
    /// and the table-loader script that links them.
    FwCfgMmio(u64),
    None,
}

/// `BootInfo::memory_source` when our UEFI loader handed the memory map over.
pub const UEFI_MEMORY_MAP: &str = "UEFI memory map";

pub struct BootInfo {
    /// What the firmware calls the machine (the devicetree's `model`), for
    /// messages; `board=` on the command line names it instead.
    pub board: &'static str,
    /// Where the memory map came from (`devicetree`, `PVH memory map`).
    pub memory_source: &'static str,
    /// Usable RAM as the firmware or devicetree describes it.
    pub ram: Vec<PhysRange>,
    /// Parts of RAM that must not be handed out: the kernel image, boot data,
    /// firmware tables.
    pub reserved: Vec<(PhysRange, &'static str)>,
    /// RAM the firmware keeps for itself (legacy holes, BIOS data) that a
    /// memory-size check must allow for; 0 where the map is exact.
    pub ram_slack: u64,
    pub cmdline: String,
    /// CPUs the platform describes; `smp::online()` says how many run.
    pub cpus_present: usize,
    /// Why fewer CPUs than present were brought up, if so.
    pub cpus_note: Option<&'static str>,
    pub acpi: AcpiEntry,
    /// The devicetree blob, when the boot protocol gave one.
    pub devicetree: Option<PhysRange>,
}

static BOOT: Once<BootInfo> = Once::new();

pub fn set(info: BootInfo) -> &'static BootInfo {
    BOOT.call_once(|| info)
}

/// The boot information; only valid after `kmain` started.
pub fn get() -> &'static BootInfo {
    BOOT.get().expect("boot information read before kmain")
}

/// A message-signalled interrupt: the write a device makes to raise it,
/// and the kernel's counter for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiVector {
    pub address: u64,
    pub data: u32,
    /// What `arch::msi_count` takes.
    pub id: u32,
}
