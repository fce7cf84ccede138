//! Intel VT-d (Virtualization Technology for Directed I/O, revision 4)
//! in scalable mode: what the driver for issue 8 builds on. Typed
//! encoders and decoders, tested bit by bit on the host:
//!
//! - [`caps`]: CAP_REG and ECAP_REG decoded into what the driver decides;
//! - [`entries`]: scalable-mode root and context entries, PASID directory
//!   and PASID table entries (first level, second level, pass-through);
//! - [`qi`]: invalidation-queue descriptors;
//! - [`fault`]: primary fault records.
#![no_std]
#![forbid(unsafe_code)]

pub mod caps;
pub mod entries;
pub mod fault;
pub mod qi;

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
