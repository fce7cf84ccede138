//! Reading a live SMMU's identification (the first step of a probe).
use crate::idr::{Features, Unusable};
use crate::regs::{SmmuPage1, SmmuRegs, PAGE1};
use core::ptr::NonNull;
use tock_registers::interfaces::Readable;

/// The register pages of one SMMU, mapped.
pub struct Smmu {
    regs: NonNull<SmmuRegs>,
    page1: NonNull<SmmuPage1>,
    base: usize,
}

// SAFETY: owns its MMIO mapping; callers serialise access.
unsafe impl Send for Smmu {}

impl Smmu {
    /// # Safety
    /// `base` must be the SMMU's register frame (both 64 KiB pages),
    /// mapped as device memory, and the caller its only driver.
    pub unsafe fn new(base: usize) -> Smmu {
        Smmu {
            // SAFETY: the caller vouches for a valid, non-null address.
            regs: unsafe { NonNull::new_unchecked(base as *mut SmmuRegs) },
            // SAFETY: page 1 of the same frame, which the caller vouches for.
            page1: unsafe { NonNull::new_unchecked((base + PAGE1) as *mut SmmuPage1) },
            base,
        }
    }

    pub fn regs(&self) -> &SmmuRegs {
        // SAFETY: `new`'s contract.
        unsafe { self.regs.as_ref() }
    }

    /// Register page 1 (the event and PRI queue indexes).
    pub fn page1(&self) -> &SmmuPage1 {
        // SAFETY: `new`'s contract covers both pages.
        unsafe { self.page1.as_ref() }
    }

    /// The register frame's physical address (for messages).
    pub fn base(&self) -> u64 {
        self.base as u64
    }

    /// IDR0..5 and IIDR, raw.
    pub fn id_registers(&self) -> ([u32; 6], u32) {
        let r = self.regs();
        (core::array::from_fn(|i| r.idr[i].get()), r.iidr.get())
    }

    pub fn features(&self) -> Result<Features, Unusable> {
        let (idr, iidr) = self.id_registers();
        Features::decode(idr, iidr)
    }

    /// Whether translation is on (CR0.SMMUEN as acknowledged).
    pub fn enabled(&self) -> bool {
        self.regs().cr0ack.is_set(crate::regs::CR0::SMMUEN)
    }
}

/// A register file in host memory for host tests: `regs` must outlive the
/// `Smmu` and hold both pages (128 KiB).
#[cfg(test)]
pub(crate) fn over_host_memory(regs: &mut [u64]) -> Smmu {
    assert!(regs.len() * 8 >= 2 * PAGE1);
    // SAFETY: the slice covers both register pages and outlives the test's
    // Smmu; its only other user is the test's stand-in for the hardware.
    unsafe { Smmu::new(regs.as_mut_ptr() as usize) }
}

/// The hardware's side of a [`over_host_memory`] register file: a 32-bit
/// register at byte `offset`.
#[cfg(test)]
pub(crate) fn host_reg(base: usize, offset: usize) -> u32 {
    assert!(offset + 4 <= 2 * PAGE1);
    // SAFETY: inside the register file, which the test keeps alive while
    // its hardware thread runs.
    unsafe { core::ptr::read_volatile((base + offset) as *const u32) }
}

#[cfg(test)]
pub(crate) fn set_host_reg(base: usize, offset: usize, value: u32) {
    assert!(offset + 4 <= 2 * PAGE1);
    // SAFETY: as in `host_reg`.
    unsafe { core::ptr::write_volatile((base + offset) as *mut u32, value) }
}
