//! QEMU's `edu` device (hw/misc/edu.c): a 4 KiB internal buffer at device
//! address 0x40000 and a DMA engine that copies between it and guest memory,
//! raising an interrupt (status 0x100) on completion when asked.
#![no_std]

use core::ptr::NonNull;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x11e8;
/// The device-side address of the internal buffer, and its size.
pub const BUFFER: u64 = 0x40000;
pub const BUFFER_LEN: usize = 4096;
/// Interrupt status bit the DMA engine raises on completion.
pub const IRQ_DMA: u32 = 0x100;

register_bitfields![u64,
    DMA_CMD [
        START OFFSET(0) NUMBITS(1) [],
        /// 0: guest memory to the device buffer; 1: device buffer to guest memory.
        TO_RAM OFFSET(1) NUMBITS(1) [],
        IRQ OFFSET(2) NUMBITS(1) []
    ]
];

register_structs! {
    pub EduRegs {
        (0x00 => id: ReadOnly<u32>),
        (0x04 => liveness: ReadWrite<u32>),
        (0x08 => factorial: ReadWrite<u32>),
        (0x0c => _reserved0),
        (0x20 => status: ReadWrite<u32>),
        (0x24 => irq_status: ReadOnly<u32>),
        (0x28 => _reserved1),
        (0x60 => irq_raise: WriteOnly<u32>),
        (0x64 => irq_ack: WriteOnly<u32>),
        (0x68 => _reserved2),
        (0x80 => dma_src: ReadWrite<u64>),
        (0x88 => dma_dst: ReadWrite<u64>),
        (0x90 => dma_count: ReadWrite<u64>),
        (0x98 => dma_cmd: ReadWrite<u64, DMA_CMD::Register>),
        (0xa0 => @END),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EduError {
    /// The identification register is not edu's (`0xRRrr00ed`).
    NotEdu { id: u32 },
    /// More than the device buffer holds, or past its end.
    BadLength { offset: usize, len: usize },
    /// A DMA is still running.
    Busy,
    /// The DMA did not finish within the caller's bound.
    Timeout,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ToDevice,
    ToRam,
}

pub struct Edu {
    regs: NonNull<EduRegs>,
}

#[allow(unsafe_code)] // the MMIO binding
                      // SAFETY: owns its BAR0 mapping; callers serialise access.
unsafe impl Send for Edu {}

#[allow(unsafe_code)] // the MMIO binding: `new` and `regs`
impl Edu {
    /// # Safety
    /// `bar0` must be the mapped BAR0 of an edu function this value alone drives.
    pub unsafe fn new(bar0: usize) -> Result<Self, EduError> {
        let edu = Edu {
            // SAFETY: the caller vouches for a valid, non-null MMIO address.
            regs: unsafe { NonNull::new_unchecked(bar0 as *mut EduRegs) },
        };
        let id = edu.regs().id.get();
        if id & 0xff != 0xed {
            return Err(EduError::NotEdu { id });
        }
        Ok(edu)
    }

    fn regs(&self) -> &EduRegs {
        // SAFETY: `new`'s contract.
        unsafe { self.regs.as_ref() }
    }
}

impl Edu {
    pub fn id(&self) -> u32 {
        self.regs().id.get()
    }

    /// The liveness register returns the complement of what was written.
    pub fn liveness(&self, value: u32) -> u32 {
        self.regs().liveness.set(value);
        self.regs().liveness.get()
    }

    pub fn dma_busy(&self) -> bool {
        self.regs().dma_cmd.is_set(DMA_CMD::START)
    }

    /// Starts a DMA of `len` bytes between guest physical address `ram`
    /// (as the device addresses it) and offset `offset` of the device buffer.
    pub fn start_dma(
        &self,
        dir: Direction,
        ram: u64,
        offset: usize,
        len: usize,
        irq: bool,
    ) -> Result<(), EduError> {
        if offset.checked_add(len).is_none_or(|end| end > BUFFER_LEN) || len == 0 {
            return Err(EduError::BadLength { offset, len });
        }
        if self.dma_busy() {
            return Err(EduError::Busy);
        }
        let dev = BUFFER + offset as u64;
        let r = self.regs();
        let (src, dst, to_ram) = match dir {
            Direction::ToDevice => (ram, dev, DMA_CMD::TO_RAM::CLEAR),
            Direction::ToRam => (dev, ram, DMA_CMD::TO_RAM::SET),
        };
        r.dma_src.set(src);
        r.dma_dst.set(dst);
        r.dma_count.set(len as u64);
        let irq = if irq {
            DMA_CMD::IRQ::SET
        } else {
            DMA_CMD::IRQ::CLEAR
        };
        r.dma_cmd.write(DMA_CMD::START::SET + to_ram + irq);
        Ok(())
    }

    /// Polls until the DMA finished, at most `polls` times calling `pause` between.
    pub fn wait_dma(&self, polls: u32, mut pause: impl FnMut()) -> Result<(), EduError> {
        for _ in 0..polls {
            if !self.dma_busy() {
                return Ok(());
            }
            pause();
        }
        Err(EduError::Timeout)
    }

    pub fn irq_status(&self) -> u32 {
        self.regs().irq_status.get()
    }

    /// Sets `bits` in the interrupt status and raises the interrupt (an
    /// MSI when enabled, sent at once).
    pub fn raise_irq(&self, bits: u32) {
        self.regs().irq_raise.set(bits);
    }

    pub fn ack_irq(&self, bits: u32) {
        self.regs().irq_ack.set(bits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<EduRegs>(), 0xa0);
        assert_eq!(
            (DMA_CMD::START::SET + DMA_CMD::TO_RAM::SET + DMA_CMD::IRQ::SET).value,
            0b111
        );
    }
}
