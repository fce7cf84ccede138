//! The register layouts on plain memory: which address and width each
//! access takes.
extern crate std;
use super::*;
use std::vec;

const LSR_THR_EMPTY: u32 = 1 << 5;

/// A DesignWare-style UART (reg-shift 2, reg-io-width 4): the send writes
/// the whole data word at offset 0, and init touches no byte lanes.
#[test]
fn word_registers_take_whole_word_accesses() {
    let mut regs = vec![0xffff_ff00u32; 8];
    regs[5] = LSR_THR_EMPTY;
    let base = regs.as_mut_ptr() as usize;
    // SAFETY: a fake register block of 8 words owned by the test.
    let mut u = unsafe { Ns16550::mmio(base, 2, 4) }.unwrap();
    u.init(None, None).unwrap();
    assert_eq!(regs[1], 0, "IER masked with a word write");
    u.write_byte(b'A');
    assert_eq!(regs[0], 0x41);
    assert_eq!(u.dropped(), 0);
}

/// Byte registers 4 apart (reg-shift 2, reg-io-width 1).
#[test]
fn byte_registers_with_a_stride() {
    let mut regs = vec![0u8; 32];
    regs[5 * 4] = LSR_THR_EMPTY as u8;
    let base = regs.as_mut_ptr() as usize;
    // SAFETY: a fake register block of 32 bytes owned by the test.
    let mut u = unsafe { Ns16550::mmio(base, 2, 1) }.unwrap();
    u.init(None, None).unwrap();
    u.write_byte(b'Z');
    assert_eq!((regs[0], regs[1]), (b'Z', 0));
}

#[test]
fn a_full_transmitter_drops_instead_of_hanging() {
    let mut regs = vec![0u32; 8];
    let base = regs.as_mut_ptr() as usize;
    // SAFETY: as above.
    let mut u = unsafe { Ns16550::mmio(base, 2, 4) }.unwrap();
    u.write_byte(b'x');
    assert_eq!((u.dropped(), regs[0]), (1, 0));
}

#[test]
fn layouts_it_cannot_drive_are_errors() {
    let bad = |base, reg_shift, reg_io_width| Error::BadLayout {
        base,
        reg_shift,
        reg_io_width,
    };
    // SAFETY: none of these is accessed: each is refused first.
    unsafe {
        assert_eq!(Ns16550::mmio(0x1000, 2, 2).err(), Some(bad(0x1000, 2, 2)));
        assert_eq!(Ns16550::mmio(0x1000, 0, 4).err(), Some(bad(0x1000, 0, 4)));
        assert_eq!(Ns16550::mmio(0x1000, 4, 1).err(), Some(bad(0x1000, 4, 1)));
        assert_eq!(Ns16550::mmio(0, 0, 1).err(), Some(bad(0, 0, 1)));
    }
}
