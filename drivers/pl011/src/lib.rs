//! Arm PL011 UART and the SBSA generic UART (its subset), transmit and
//! receive by polling.
#![no_std]

use core::ptr::NonNull;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

register_bitfields![u32,
    DR [ DATA OFFSET(0) NUMBITS(8) [] ],
    FR [
        TXFE OFFSET(7) NUMBITS(1) [],
        RXFF OFFSET(6) NUMBITS(1) [],
        TXFF OFFSET(5) NUMBITS(1) [],
        RXFE OFFSET(4) NUMBITS(1) [],
        BUSY OFFSET(3) NUMBITS(1) []
    ],
    LCR_H [
        WLEN OFFSET(5) NUMBITS(2) [ Bits8 = 0b11 ],
        FEN OFFSET(4) NUMBITS(1) []
    ],
    CR [
        RXE OFFSET(9) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        UARTEN OFFSET(0) NUMBITS(1) []
    ],
    ICR [ ALL OFFSET(0) NUMBITS(11) [] ]
];

register_structs! {
    pub Pl011Regs {
        (0x000 => dr: ReadWrite<u32, DR::Register>),
        (0x004 => rsr_ecr: ReadWrite<u32>),
        (0x008 => _reserved0),
        (0x018 => fr: ReadOnly<u32, FR::Register>),
        (0x01c => _reserved1),
        (0x024 => ibrd: ReadWrite<u32>),
        (0x028 => fbrd: ReadWrite<u32>),
        (0x02c => lcr_h: ReadWrite<u32, LCR_H::Register>),
        (0x030 => cr: ReadWrite<u32, CR::Register>),
        (0x034 => ifls: ReadWrite<u32>),
        (0x038 => imsc: ReadWrite<u32>),
        (0x03c => ris: ReadOnly<u32>),
        (0x040 => mis: ReadOnly<u32>),
        (0x044 => icr: WriteOnly<u32, ICR::Register>),
        (0x048 => @END),
    }
}

/// Polls of the flag register before a byte is dropped: the console must
/// never hang the kernel, even if the UART is wedged.
const TX_SPIN_LIMIT: u32 = 1_000_000;

pub struct Pl011 {
    regs: NonNull<Pl011Regs>,
    dropped: u64,
}

#[allow(unsafe_code)] // the MMIO binding
                      // SAFETY: the register block is MMIO owned by this value; callers serialise access.
unsafe impl Send for Pl011 {}

#[allow(unsafe_code)] // the MMIO binding: `new` and `regs`
impl Pl011 {
    /// # Safety
    /// `base` must be the mapped address of a PL011 register block that
    /// nothing else drives.
    pub const unsafe fn new(base: usize) -> Self {
        Pl011 {
            // SAFETY: the caller guarantees base is a valid, non-null MMIO address.
            regs: unsafe { NonNull::new_unchecked(base as *mut Pl011Regs) },
            dropped: 0,
        }
    }

    fn regs(&self) -> &Pl011Regs {
        // SAFETY: `new`'s contract: a valid register block for our lifetime.
        unsafe { self.regs.as_ref() }
    }
}

impl Pl011 {
    /// 8N1 with FIFOs, transmitter and receiver on. The baud rate is left as
    /// firmware (or QEMU, which ignores it) set it.
    pub fn init(&mut self) {
        let r = self.regs();
        r.cr.set(0);
        r.icr.write(ICR::ALL::SET);
        r.imsc.set(0);
        r.lcr_h.write(LCR_H::WLEN::Bits8 + LCR_H::FEN::SET);
        r.cr.write(CR::UARTEN::SET + CR::TXE::SET + CR::RXE::SET);
    }

    /// The SBSA generic UART: only DR, FR, the interrupt mask and clear
    /// exist (the rate, framing and enables belong to firmware), so this
    /// masks and clears interrupts and writes nothing else.
    pub fn init_sbsa(&mut self) {
        let r = self.regs();
        r.imsc.set(0);
        r.icr.write(ICR::ALL::SET);
    }

    pub fn write_byte(&mut self, b: u8) {
        for _ in 0..TX_SPIN_LIMIT {
            if !self.regs().fr.is_set(FR::TXFF) {
                self.regs().dr.set(b as u32);
                return;
            }
            core::hint::spin_loop();
        }
        self.dropped += 1;
    }

    pub fn read_byte(&mut self) -> Option<u8> {
        if self.regs().fr.is_set(FR::RXFE) {
            None
        } else {
            Some(self.regs().dr.read(DR::DATA) as u8)
        }
    }

    /// Bytes dropped because the transmit FIFO stayed full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[allow(unsafe_code)] // a fake register block in host memory
#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    /// Register words, by offset / 4, after `init` on a block filled with
    /// a marker.
    fn after(init: fn(&mut Pl011)) -> std::vec::Vec<u32> {
        let mut regs = std::vec![0xa5a5_a5a5u32; 0x48 / 4];
        // SAFETY: a fake register block owned by the test.
        let mut u = unsafe { Pl011::new(regs.as_mut_ptr() as usize) };
        init(&mut u);
        regs
    }

    /// The SBSA UART has no IBRD, FBRD, LCR_H or CR: init must not write them.
    #[test]
    fn sbsa_init_leaves_firmware_registers_alone() {
        let regs = after(Pl011::init_sbsa);
        for (name, off) in [
            ("IBRD", 0x24),
            ("FBRD", 0x28),
            ("LCR_H", 0x2c),
            ("CR", 0x30),
        ] {
            assert_eq!(regs[off / 4], 0xa5a5_a5a5, "{name} written");
        }
        assert_eq!((regs[0x38 / 4], regs[0x44 / 4]), (0, 0x7ff));
    }

    #[test]
    fn pl011_init_enables_8n1_with_fifos() {
        let regs = after(Pl011::init);
        assert_eq!(regs[0x2c / 4], 0x70);
        assert_eq!(regs[0x30 / 4], 0x301);
    }
}
