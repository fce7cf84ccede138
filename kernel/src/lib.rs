//! Hardware-independent parts of the kernel: the self-test harness and TAP
//! output, the physical page allocator, address types and the command line.
//! Everything here builds and is unit-tested on the host.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod addr;
pub mod clock;
pub mod cmdline;
pub mod dma;
pub mod hal;
pub mod handoff;
pub mod harness;
pub mod idmap;
pub mod iommu;
pub mod irq;
pub mod mm;
pub mod stats;

/// `Info` the first time `flag` is seen, `Debug` after: for a driver the
/// tests set up once per case but that should say what it uses once.
pub fn info_once(flag: &core::sync::atomic::AtomicBool) -> log::Level {
    if flag.swap(true, core::sync::atomic::Ordering::Relaxed) {
        log::Level::Debug
    } else {
        log::Level::Info
    }
}
