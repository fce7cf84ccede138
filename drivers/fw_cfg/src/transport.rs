//! The register interfaces: memory-mapped (Arm `virt`) and I/O ports (x86).
use crate::Transport;
use core::ptr::NonNull;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, WriteOnly};

register_structs! {
    pub FwCfgMmioRegs {
        /// Item bytes in order; wider reads return them in string order.
        (0x00 => data: ReadOnly<u64>),
        /// Big-endian selector.
        (0x08 => selector: WriteOnly<u16>),
        (0x0a => _reserved),
        (0x10 => dma: WriteOnly<u64>),
        (0x18 => @END),
    }
}

/// fw_cfg as a devicetree `qemu,fw-cfg-mmio` node describes it.
pub struct Mmio {
    regs: NonNull<FwCfgMmioRegs>,
}

// SAFETY: MMIO owned by this value; callers serialise access.
unsafe impl Send for Mmio {}

impl Mmio {
    /// # Safety
    /// `base` must be the mapped fw_cfg register block, used by nothing else.
    pub unsafe fn new(base: usize) -> Self {
        Mmio {
            // SAFETY: the caller vouches for a valid, non-null MMIO address.
            regs: unsafe { NonNull::new_unchecked(base as *mut FwCfgMmioRegs) },
        }
    }

    fn regs(&self) -> &FwCfgMmioRegs {
        // SAFETY: `new`'s contract.
        unsafe { self.regs.as_ref() }
    }
}

impl Transport for Mmio {
    fn select(&mut self, key: u16) {
        self.regs().selector.set(key.to_be());
    }

    fn read(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.regs().data.get().to_le_bytes());
        }
        // A wide read would consume bytes past what was asked for.
        for b in chunks.into_remainder() {
            // SAFETY: a 1-byte read of the data register (offset 0), which
            // fw_cfg accepts at any width up to 8.
            *b = unsafe { core::ptr::read_volatile(self.regs.as_ptr().cast::<u8>()) };
        }
    }
}

/// fw_cfg at the PC's fixed I/O ports.
#[cfg(target_arch = "x86_64")]
pub struct PortIo {
    selector: x86_64::instructions::port::Port<u16>,
    data: x86_64::instructions::port::Port<u8>,
}

#[cfg(target_arch = "x86_64")]
impl PortIo {
    pub const SELECTOR: u16 = 0x510;
    pub const DATA: u16 = 0x511;

    /// # Safety
    /// The machine must have fw_cfg at ports 0x510/0x511 (or nothing there),
    /// and nothing else may use them.
    pub unsafe fn new() -> Self {
        PortIo {
            selector: x86_64::instructions::port::Port::new(Self::SELECTOR),
            data: x86_64::instructions::port::Port::new(Self::DATA),
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Transport for PortIo {
    fn select(&mut self, key: u16) {
        // SAFETY: `new`'s contract: these ports are fw_cfg's.
        unsafe { self.selector.write(key) };
    }

    fn read(&mut self, buf: &mut [u8]) {
        for b in buf {
            // SAFETY: as above.
            *b = unsafe { self.data.read() };
        }
    }
}
