//! Reading a live SMMU's identification (the first step of a probe).
use crate::idr::{Features, Unusable};
use crate::regs::SmmuRegs;
use core::ptr::NonNull;
use tock_registers::interfaces::Readable;

/// The register pages of one SMMU, mapped.
pub struct Smmu {
    regs: NonNull<SmmuRegs>,
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
        }
    }

    pub fn regs(&self) -> &SmmuRegs {
        // SAFETY: `new`'s contract.
        unsafe { self.regs.as_ref() }
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
