//! The unikernel binary. On a bare-metal target the arch code boots, brings
//! the platform up and calls [`kmain`], which runs the self-test suite and
//! ends the run with an exit status that matches the verdict. On the host
//! this file builds to a stub so `cargo test` can build the workspace.
#![cfg_attr(target_os = "none", no_std, no_main)]
// `unsafe` only in the modules marked `#[allow(unsafe_code)]` below: arch
// entry and CPU code, the HAL implementation and memory, the console and
// heap, and `pcie` (where MMIO bases are bound to register blocks).

#[cfg(not(target_os = "none"))]
fn main() {
    eprintln!("the kernel runs on bare metal; boot it with `cargo qemu-run run --board all`");
    std::process::exit(2);
}

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod arch;
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod console;
#[cfg(target_os = "none")]
mod discovery;
#[cfg(target_os = "none")]
mod exit;
#[cfg(target_os = "none")]
mod fault;
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod hal;
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod heap;
#[cfg(target_os = "none")]
mod interrupts;
#[cfg(target_os = "none")]
mod iommu;
#[cfg(target_os = "none")]
mod logger;
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod mapping;
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod memory;
#[cfg(target_os = "none")]
mod panic;
#[cfg(target_os = "none")]
#[allow(unsafe_code)]
mod pcie;
#[cfg(target_os = "none")]
mod platform;
#[cfg(target_os = "none")]
mod selftest;
#[cfg(target_os = "none")]
mod smp;

#[cfg(target_os = "none")]
pub use run::kmain;

#[cfg(target_os = "none")]
mod run {
    use crate::platform::BootInfo;
    use crate::{arch, console, memory, platform, selftest};

    /// The arch-independent part of boot. The arch code calls this once, on
    /// the boot CPU, with the console, heap, exceptions, interrupts and timer
    /// up and the secondary CPUs started.
    pub fn kmain(boot: BootInfo) -> ! {
        let boot = platform::set(boot);
        log::info!(
            "{} on {}: {} MiB RAM in {} region(s) from {}, {} of {} CPU(s) online",
            arch::NAME,
            kernel::cmdline::get(&boot.cmdline, "board").unwrap_or(boot.board),
            kernel::mm::ranges::total(&boot.ram) >> 20,
            boot.ram.len(),
            boot.memory_source,
            crate::smp::online(),
            boot.cpus_present,
        );
        log::info!("command line: {:?}", boot.cmdline);
        for r in &boot.ram {
            log::debug!("  ram {r}");
        }
        for (r, what) in &boot.reserved {
            log::debug!("  reserved {r} {what}");
        }
        if let Err(e) = memory::init(boot) {
            console::bail_out(format_args!("page allocator: {e}"));
        }
        arch::init_late();
        crate::pcie::enumerate_early();
        let topology = crate::discovery::discover(boot);
        crate::discovery::report(topology);
        crate::discovery::report_functions(&crate::discovery::route_root_buses(topology));
        crate::pcie::enumerate_all(topology);
        crate::iommu::boot_check();
        // `crash=unexpected` proves the crash path ends the run as failed.
        if kernel::cmdline::get(&boot.cmdline, "crash") == Some("unexpected") {
            let addr = arch::unmapped_addr();
            log::warn!("crash=unexpected: reading unmapped {addr:#x} without expecting a fault");
            arch::read_unmapped_unexpected();
        }
        let pass = selftest::run(&boot.cmdline);
        arch::exit(pass)
    }
}
