//! What the arch code learned at boot about the machine, kept for the rest of the run.
use alloc::string::String;
use alloc::vec::Vec;
use kernel::addr::PhysRange;
use spin::Once;

pub struct BootInfo {
    /// Board name for messages (`qemu-virt`, `qemu-q35`).
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
}

static BOOT: Once<BootInfo> = Once::new();

pub fn set(info: BootInfo) -> &'static BootInfo {
    BOOT.call_once(|| info)
}

/// The boot information; only valid after `kmain` started.
pub fn get() -> &'static BootInfo {
    BOOT.get().expect("boot information read before kmain")
}
