//! The command queue: the producer-side ring arithmetic over GITS_CWRITER and
//! GITS_CREADR offsets, and the GITS_CBASER value that installs the queue.

use super::regs::{
    attrs, CACHE_NON_CACHEABLE, CACHE_SAME_AS_INNER, GITS_BASER, GITS_CBASER, SH_NON_SHAREABLE,
};
use tock_registers::LocalRegisterCopy;

/// Size of one command queue entry.
pub const CMD_BYTES: usize = 32;
/// Default command queue size.
pub const DEFAULT_QUEUE_BYTES: usize = 0x1_0000;

/// Producer side of the command queue, as pure arithmetic: byte offsets of
/// slots in a ring of `size` bytes. One slot always stays empty, so
/// `write == read` means empty and the ring holds `slots() - 1` commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandRing {
    /// Physical address of the queue.
    pub base: u64,
    size: usize,
    write: usize,
}

impl CommandRing {
    /// `size` must be a multiple of 4 KiB between 4 KiB and 1 MiB
    /// (GITS_CBASER.Size counts up to 256 pages of 4 KiB).
    pub fn new(base: u64, size: usize) -> Option<Self> {
        if size == 0 || !size.is_multiple_of(0x1000) || size > 256 * 0x1000 {
            return None;
        }
        Some(CommandRing {
            base,
            size,
            write: 0,
        })
    }

    pub fn size(&self) -> usize {
        self.size
    }

    pub fn slots(&self) -> usize {
        self.size / CMD_BYTES
    }

    /// The GITS_CWRITER offset: the next slot to be written.
    pub fn write_offset(&self) -> usize {
        self.write
    }

    /// Commands written but not yet consumed, given the GITS_CREADR offset.
    pub fn pending(&self, read: usize) -> usize {
        let read = read % self.size;
        (self.write + self.size - read) % self.size / CMD_BYTES
    }

    pub fn free(&self, read: usize) -> usize {
        self.slots() - 1 - self.pending(read)
    }

    pub fn is_full(&self, read: usize) -> bool {
        self.free(read) == 0
    }

    /// Claims the next slot: its byte offset, with the write offset advanced
    /// past it (wrapping). `None` when the ring is full.
    pub fn push(&mut self, read: usize) -> Option<usize> {
        if self.is_full(read) {
            return None;
        }
        let slot = self.write;
        self.write = (self.write + CMD_BYTES) % self.size;
        Some(slot)
    }
}

/// A GITS_CBASER value for a queue of `bytes` (a multiple of 4 KiB) at `phys`.
pub fn cbaser_value(phys: u64, bytes: usize, coherent: bool) -> u64 {
    let (inner, sh) = attrs(coherent);
    (GITS_CBASER::VALID::SET
        + GITS_CBASER::INNER_CACHE.val(inner)
        + GITS_CBASER::OUTER_CACHE.val(CACHE_SAME_AS_INNER)
        + GITS_CBASER::PHYSICAL_ADDRESS.val(phys >> 12)
        + GITS_CBASER::SHAREABILITY.val(sh)
        + GITS_CBASER::SIZE.val((bytes / 0x1000).saturating_sub(1) as u64))
    .value
}

/// Whether the ITS reads the memory a GITS_CBASER or GITS_BASER<n> value
/// (as read back: what the implementation kept) describes past the CPU's
/// caches: non-shareable, or inner non-cacheable or Device. Then the CPU's
/// writes to it must be cleaned to the point of coherency. Both registers
/// keep Shareability and InnerCache at the same bits.
pub fn needs_clean(readback: u64) -> bool {
    let v = LocalRegisterCopy::<u64, GITS_BASER::Register>::new(readback);
    v.read(GITS_BASER::SHAREABILITY) == SH_NON_SHAREABLE
        || matches!(v.read(GITS_BASER::INNER_CACHE), 0 | CACHE_NON_CACHEABLE)
}
