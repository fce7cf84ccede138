//! What the UEFI loader decides, as plain functions the host tests: where
//! an x86 kernel ELF goes and how it is moved there (`elf`), what an arm64
//! `Image` header asks for (`arm64`), and the command line from
//! LoadOptions (`options`). The EFI application itself (`main.rs`) only
//! talks to firmware and jumps.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod arm64;
pub mod elf;
pub mod options;

/// Where the kernel image starts: 2 MiB boundaries suit large pages on
/// both architectures and the arm64 boot protocol.
pub const KERNEL_ALIGN: u64 = 2 << 20;
pub const PAGE: u64 = 4096;

/// `x` rounded up to a multiple of `align` (a power of two); `None` on overflow.
pub fn align_up(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// Pages to ask firmware for so that `len` bytes fit at a
/// [`KERNEL_ALIGN`]-aligned address inside the allocation.
pub fn pages_for_aligned(len: u64) -> u64 {
    (len + KERNEL_ALIGN - PAGE).div_ceil(PAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aligned_image_fits_wherever_firmware_allocates() {
        let len = 0xe3_2000;
        let pages = pages_for_aligned(len);
        for alloc in [0x7e00_0000u64, 0x7e00_1000, 0x7e1f_f000] {
            let base = align_up(alloc, KERNEL_ALIGN).unwrap();
            assert_eq!(base % KERNEL_ALIGN, 0);
            assert!(base + len <= alloc + pages * PAGE, "{alloc:#x}");
        }
        assert_eq!(align_up(u64::MAX - 5, KERNEL_ALIGN), None);
    }
}
