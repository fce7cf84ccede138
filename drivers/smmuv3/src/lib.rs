//! The Arm SMMUv3 driver (Arm IHI 0070). The in-memory formats are typed
//! encoders and decoders, tested bit by bit on
//! the host:
//!
//! - [`idr`]: the ID registers decoded into the features the driver uses;
//! - [`ste`]: stream table entries (abort, bypass, stage 1 with a CD
//!   table, stage 2, nested) and level-1 stream table descriptors;
//! - [`cd`]: context descriptors for AArch64 stage 1 with the 4 KiB
//!   granule, and level-1 CD table descriptors;
//! - [`cmd`]: command queue entries;
//! - [`cmdq`]: the command queue protocol (batches ending in one CMD_SYNC,
//!   bounded waits, refused commands reported and skipped);
//! - [`event`]: event queue records decoded into typed events;
//! - [`queue`]: producer/consumer index arithmetic with the wrap bit;
//! - [`regs`]: the register map (tock-registers);
//! - [`probe`]: reading a live SMMU's identification;
//! - [`driver`]: the driver itself, the core's `IommuHw` for one SMMU,
//!   generic over the kernel's HAL (memory, barrier, clock, interrupts).
#![no_std]
// Only `probe` touches MMIO.
#![deny(unsafe_code)]

extern crate alloc;

pub mod cd;
pub mod cmd;
pub mod cmdq;
pub mod driver;
pub mod event;
pub mod idr;
#[allow(unsafe_code)]
pub mod probe;
pub mod queue;
pub mod regs;
pub mod ste;

pub use kernel::hal::Coherency;

/// Cacheability of the SMMU's own accesses (table walks, STE/CD fetches,
/// queues) as the IRGN/ORGN-style 2-bit fields encode it: write-back
/// (read- and write-allocate) when they snoop the CPU caches, else
/// non-cacheable, so they read what the CPU cleaned to memory.
pub(crate) const fn walk_cache(c: Coherency) -> u64 {
    match c {
        Coherency::Coherent => 1,
        Coherency::NonCoherent => 0,
    }
}

/// Shareability of those accesses: inner shareable when coherent, outer
/// shareable otherwise (what Linux's io-pgtable gives a non-coherent walk).
pub(crate) const fn walk_share(c: Coherency) -> u64 {
    match c {
        Coherency::Coherent => 3,
        Coherency::NonCoherent => 2,
    }
}

/// `value` placed in bits `[hi:lo]` (masked to the field).
#[inline]
pub(crate) const fn field(value: u64, hi: u32, lo: u32) -> u64 {
    let width = hi - lo + 1;
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1 << width) - 1
    };
    (value & mask) << lo
}

/// Bits `[hi:lo]` of `word`.
#[inline]
pub(crate) const fn bits(word: u64, hi: u32, lo: u32) -> u64 {
    let width = hi - lo + 1;
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1 << width) - 1
    };
    (word >> lo) & mask
}
