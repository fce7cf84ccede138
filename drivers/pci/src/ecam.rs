//! ECAM: the memory-mapped configuration space of one PCIe segment. The
//! only unsafe code of the crate: one volatile load and one volatile store,
//! each after a bounds check.
use crate::config::{Bdf, ConfigSpace, CONFIG_SPACE_SIZE};
use crate::error::PciError;
use core::ops::RangeInclusive;

/// The ECAM window of one segment: bus `b` (within `buses`) starts at
/// `base + ((b - buses.start()) << 20)`, device at bit 15, function at
/// bit 12, register offset in the low 12 bits.
#[derive(Debug)]
pub struct Ecam {
    base: usize,
    first_bus: u8,
    last_bus: u8,
}

impl Ecam {
    /// # Safety
    ///
    /// `base` must be the 4-byte aligned (ECAM windows are 1 MiB aligned)
    /// virtual address of the ECAM window for `buses` (1 MiB per bus), mapped as device memory for as long as the `Ecam`
    /// is used, and accessed by nothing else meanwhile (no references into
    /// it, no second `Ecam` over it).
    pub unsafe fn new(base: usize, buses: RangeInclusive<u8>) -> Ecam {
        Ecam {
            base,
            first_bus: *buses.start(),
            last_bus: *buses.end(),
        }
    }

    pub fn buses(&self) -> RangeInclusive<u8> {
        self.first_bus..=self.last_bus
    }

    /// The byte offset of (bdf, offset) inside the window, or why not:
    /// the bus must be in range and the offset dword-aligned below 4 KiB.
    pub fn window_offset(&self, bdf: Bdf, offset: u16) -> Result<usize, PciError> {
        if bdf.bus() < self.first_bus
            || bdf.bus() > self.last_bus
            || offset >= CONFIG_SPACE_SIZE
            || offset & 3 != 0
        {
            return Err(PciError::OutOfRange { bdf, offset });
        }
        Ok(usize::from(bdf.bus() - self.first_bus) << 20
            | usize::from(bdf.device()) << 15
            | usize::from(bdf.function()) << 12
            | usize::from(offset))
    }

    /// `read32` with the range check visible.
    pub fn try_read32(&self, bdf: Bdf, offset: u16) -> Result<u32, PciError> {
        let off = self.window_offset(bdf, offset)?;
        let ptr = (self.base + off) as *const u32;
        // SAFETY: `window_offset` checked that `off` lies in the window for
        // the buses given to `new` and is 4-aligned, as `base` is by
        // `new`'s contract; that contract says that window is mapped
        // device memory nobody else accesses, so a volatile 32-bit load
        // there is a config read and nothing else.
        Ok(unsafe { core::ptr::read_volatile(ptr) })
    }

    /// `write32` with the range check visible.
    pub fn try_write32(&mut self, bdf: Bdf, offset: u16, value: u32) -> Result<(), PciError> {
        let off = self.window_offset(bdf, offset)?;
        let ptr = (self.base + off) as *mut u32;
        // SAFETY: as in `try_read32`: in bounds, aligned, mapped device
        // memory owned by this `Ecam` (which `&mut self` makes exclusive).
        unsafe { core::ptr::write_volatile(ptr, value) };
        Ok(())
    }
}

impl ConfigSpace for Ecam {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        self.try_read32(bdf, offset).unwrap_or(u32::MAX)
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        let _ = self.try_write32(bdf, offset, value);
    }
}
