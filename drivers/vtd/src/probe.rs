//! The MMIO binding: a live remapping unit's registers, and reading its
//! identification. The only module with `unsafe`.
use crate::caps::{Caps, Ecaps};
use crate::regs::{FaultRecordRegs, VtdRegs, GSTS, VER};
use core::ptr::NonNull;
use tock_registers::interfaces::Readable;

pub struct Unit {
    regs: NonNull<VtdRegs>,
}

// SAFETY: owns its MMIO mapping; callers serialise access.
unsafe impl Send for Unit {}

impl Unit {
    /// # Safety
    /// `base` must be the unit's register set (including the fault
    /// recording registers at CAP.FRO), mapped as uncached device memory,
    /// and the caller its only driver.
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

    /// The fault recording registers: CAP.NFR of them at CAP.FRO.
    pub fn fault_records(&self) -> &[FaultRecordRegs] {
        let caps = Caps::decode(self.regs().cap.get());
        let first = self
            .regs
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(caps.fault_record_offset as usize)
            .cast::<FaultRecordRegs>();
        // SAFETY: `new`'s contract covers the register set, which holds
        // these registers where CAP says; FRO is a multiple of 16, so they
        // are aligned, and they are only accessed volatilely.
        unsafe { core::slice::from_raw_parts(first, usize::from(caps.fault_records)) }
    }

    /// (major, minor) from VER_REG.
    pub fn version(&self) -> (u8, u8) {
        let v = self.regs().ver.extract();
        (v.read(VER::MAJOR) as u8, v.read(VER::MINOR) as u8)
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
