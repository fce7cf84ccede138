//! Intel VT-d (Virtualization Technology for Directed I/O, revision 4)
//! in scalable mode, the driver for issue 8 and what it builds on. Typed
//! encoders and decoders, tested bit by bit on the host:
//!
//! - [`caps`]: CAP_REG and ECAP_REG decoded into what the driver decides;
//! - [`entries`]: scalable-mode root and context entries, PASID directory
//!   and PASID table entries (first level, second level, pass-through);
//! - [`qi`]: invalidation-queue descriptors;
//! - [`fault`]: primary fault records;
//! - [`regs`]: the register map (tock-registers); [`probe`]: the MMIO
//!   binding, reading a live unit;
//! - [`driver`]: the driver itself, the core's `IommuHw` for one unit,
//!   generic over the kernel's HAL (memory, barrier, clock).
#![no_std]
// Only `probe` touches MMIO.
#![deny(unsafe_code)]

extern crate alloc;

pub mod caps;
pub mod driver;
pub mod entries;
pub mod fault;
#[allow(unsafe_code)]
pub mod probe;
pub mod qi;
pub mod regs;

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
