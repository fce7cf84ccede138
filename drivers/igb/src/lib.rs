//! The interrupt registers of an Intel 82576 (QEMU's `igb`, hw/net/igb*),
//! and nothing of its network function.
//!
//! We use it as a source of MSI-X messages the CPU can trigger: in MSI-X
//! mode, setting bit n of the Extended Interrupt Cause Set register makes
//! the function send table entry n (while bit n is enabled in EIMS). That
//! is what the masking tests need; no QEMU device we have does it with
//! less. Register offsets and bits are from the 82576 datasheet
//! (section 8.8, "Interrupt Register Descriptions").
#![no_std]

use core::ptr::NonNull;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

pub const VENDOR: u16 = 0x8086;
/// 82576 (copper), the function QEMU's `igb` presents.
pub const DEVICE: u16 = 0x10c9;
/// The vectors the physical function owns (QEMU: `IGB_MSIX_VEC_NUM`).
pub const VECTORS: u16 = 10;

register_bitfields![u32,
    GPIE [
        /// Causes map straight to vectors through EICR (MSI-X mode).
        MULTIPLE_MSIX OFFSET(4) NUMBITS(1) [],
        /// Extended interrupt auto-mask enable.
        EIAME OFFSET(30) NUMBITS(1) [],
        /// PBA support: the device clears pending bits itself.
        PBA_SUPPORT OFFSET(31) NUMBITS(1) []
    ]
];

register_structs! {
    pub IgbRegs {
        (0x0000 => _ctrl),
        (0x0008 => status: ReadOnly<u32>),
        (0x000c => _reserved0),
        (0x1514 => gpie: ReadWrite<u32, GPIE::Register>),
        (0x1518 => _reserved1),
        (0x1520 => eics: WriteOnly<u32>),
        (0x1524 => eims: ReadWrite<u32>),
        (0x1528 => eimc: WriteOnly<u32>),
        (0x152c => eiac: ReadWrite<u32>),
        (0x1530 => eiam: ReadWrite<u32>),
        (0x1534 => _reserved2),
        (0x1580 => eicr: ReadWrite<u32>),
        (0x1584 => _reserved3),
        (0x1680 => eitr: [ReadWrite<u32>; 25]),
        (0x16e4 => @END),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgbError {
    /// A vector number the physical function does not own.
    NoSuchVector(u16),
}

pub struct Igb {
    regs: NonNull<IgbRegs>,
}

#[allow(unsafe_code)] // the MMIO binding
                      // SAFETY: owns its BAR0 mapping; callers serialise access.
unsafe impl Send for Igb {}

#[allow(unsafe_code)] // the MMIO binding: `new` and `regs`
impl Igb {
    /// # Safety
    /// `bar0` must be the mapped BAR0 of an igb function this value alone
    /// drives (128 KiB of device memory).
    pub unsafe fn new(bar0: usize) -> Self {
        Igb {
            // SAFETY: the caller vouches for a valid, non-null MMIO address.
            regs: unsafe { NonNull::new_unchecked(bar0 as *mut IgbRegs) },
        }
    }

    fn regs(&self) -> &IgbRegs {
        // SAFETY: `new`'s contract.
        unsafe { self.regs.as_ref() }
    }
}

impl Igb {
    pub fn status(&self) -> u32 {
        self.regs().status.get()
    }

    /// MSI-X mode: cause n is vector n; no auto-clear, auto-mask or
    /// throttling, so each raise is one message and the driver
    /// acknowledges it in EICR.
    pub fn init_msix_mode(&self) {
        let r = self.regs();
        r.eimc.set(u32::MAX);
        r.gpie.write(GPIE::MULTIPLE_MSIX::SET);
        r.eiac.set(0);
        r.eiam.set(0);
        for t in r.eitr.iter() {
            t.set(0);
        }
        r.eicr.set(u32::MAX);
    }

    fn bit(vector: u16) -> Result<u32, IgbError> {
        if vector >= VECTORS {
            return Err(IgbError::NoSuchVector(vector));
        }
        Ok(1 << vector)
    }

    /// Lets cause `vector` send its message.
    pub fn enable(&self, vector: u16) -> Result<(), IgbError> {
        self.regs().eims.set(Self::bit(vector)?);
        Ok(())
    }

    pub fn disable(&self, vector: u16) -> Result<(), IgbError> {
        self.regs().eimc.set(Self::bit(vector)?);
        Ok(())
    }

    /// Sets cause `vector`: the function sends the vector's message (or,
    /// with the vector masked in the MSI-X table, sets its pending bit).
    pub fn raise(&self, vector: u16) -> Result<(), IgbError> {
        self.regs().eics.set(Self::bit(vector)?);
        Ok(())
    }

    /// Clears cause `vector` (write one to clear), so it can be raised again.
    pub fn ack(&self, vector: u16) -> Result<(), IgbError> {
        self.regs().eicr.set(Self::bit(vector)?);
        Ok(())
    }

    /// Causes set and not yet acknowledged.
    pub fn causes(&self) -> u32 {
        self.regs().eicr.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<IgbRegs>(), 0x16e4);
        assert_eq!(Igb::bit(9), Ok(1 << 9));
        assert_eq!(Igb::bit(10), Err(IgbError::NoSuchVector(10)));
    }
}
