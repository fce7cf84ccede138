//! Reading a live remapping unit's identification.
use crate::caps::{Caps, Ecaps};
use crate::regs::{VtdRegs, GSTS};
use core::ptr::NonNull;
use tock_registers::interfaces::Readable;

pub struct Unit {
    regs: NonNull<VtdRegs>,
}

// SAFETY: owns its MMIO mapping; callers serialise access.
unsafe impl Send for Unit {}

impl Unit {
    /// # Safety
    /// `base` must be the unit's register page, mapped as uncached device
    /// memory, and the caller its only driver.
    pub unsafe fn new(base: usize) -> Unit {
        Unit {
            // SAFETY: the caller vouches for a valid, non-null address.
            regs: unsafe { NonNull::new_unchecked(base as *mut VtdRegs) },
        }
    }

    pub fn regs(&self) -> &VtdRegs {
        // SAFETY: `new`'s contract.
        unsafe { self.regs.as_ref() }
    }

    /// (major, minor) from VER_REG.
    pub fn version(&self) -> (u8, u8) {
        let v = self.regs().ver.get();
        (((v >> 4) & 0xf) as u8, (v & 0xf) as u8)
    }

    pub fn caps(&self) -> (Caps, Ecaps) {
        (
            Caps::decode(self.regs().cap.get()),
            Ecaps::decode(self.regs().ecap.get()),
        )
    }

    /// Whether DMA remapping is on (GSTS.TES).
    pub fn translating(&self) -> bool {
        self.regs().gsts.is_set(GSTS::TES)
    }
}
