//! A 16550-compatible UART as a console, on MMIO as devicetrees describe
//! it: register `n` at `n << reg-shift`, accessed `reg-io-width` bytes
//! wide. The `uart_16550` crate drives the chip; byte-wide registers use
//! its MMIO backend, 32-bit ones (DesignWare APB UARTs, which fault or
//! ignore byte accesses) the [`Mmio32`] backend here. Sending is bounded:
//! a wedged UART drops bytes, never hangs the kernel.
#![no_std]

use core::num::NonZeroUsize;
use core::ptr::NonNull;
use uart_16550::backend::{Backend, MmioBackend};
use uart_16550::{BaudRate, Config, Uart16550};

/// Polls for room in the transmit holding register before a byte is dropped.
const TX_SPIN_LIMIT: u32 = 1_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A register layout this driver cannot express (shift above 3, a
    /// width other than 1 or 4) or a null or overflowing base.
    BadLayout {
        base: usize,
        reg_shift: u32,
        reg_io_width: u32,
    },
    /// The scratch register did not hold a value: nothing answers there.
    NotPresent,
    /// `uart_16550` refused the clock and baud rate (no exact divisor).
    BadRate { clock: u32, baud: u32 },
}

/// Registers 32 bits wide, `4 << ...` apart: each access is a whole word,
/// of which the low byte is the 16550 register.
pub struct Mmio32 {
    base: NonNull<u32>,
    reg_shift: u32,
}

impl Mmio32 {
    fn at(&self, register_offset: u8) -> *mut u32 {
        self.base
            .as_ptr()
            .cast::<u8>()
            .wrapping_add(usize::from(register_offset) << self.reg_shift)
            .cast()
    }
}

#[allow(unsafe_code)] // the MMIO binding
impl Backend for Mmio32 {
    unsafe fn read(&mut self, register_offset: u8) -> u8 {
        // SAFETY: `Ns16550::mmio`'s contract: the register block is mapped,
        // and the crate keeps `register_offset` below its register count.
        unsafe { self.at(register_offset).read_volatile() as u8 }
    }

    unsafe fn write(&mut self, register_offset: u8, value: u8) {
        // SAFETY: as in `read`.
        unsafe { self.at(register_offset).write_volatile(u32::from(value)) }
    }
}

/// One of the two access widths.
pub enum Ns16550 {
    Bytes(Uart16550<MmioBackend>, u64),
    Words(Uart16550<Mmio32>, u64),
}

#[allow(unsafe_code)] // the MMIO binding
                      // SAFETY: the register block is MMIO owned by this value; callers serialise access.
unsafe impl Send for Ns16550 {}

#[allow(unsafe_code)] // the MMIO binding
impl Ns16550 {
    /// # Safety
    /// `base` must be the mapped address of a 16550 register block with
    /// this layout (8 registers, `1 << reg_shift` apart) that nothing else
    /// drives, for the life of the value.
    pub unsafe fn mmio(base: usize, reg_shift: u32, reg_io_width: u32) -> Result<Self, Error> {
        let bad = Error::BadLayout {
            base,
            reg_shift,
            reg_io_width,
        };
        let (Some(nonzero), true) = (NonZeroUsize::new(base), reg_shift <= 3) else {
            return Err(bad);
        };
        let stride = 1u8 << reg_shift;
        if base.checked_add(8 * usize::from(stride)).is_none() {
            return Err(bad);
        }
        match reg_io_width {
            // SAFETY: the caller's contract; the crate checks the stride.
            1 => unsafe { Uart16550::new_mmio_from_address(nonzero, stride) }
                .map(|u| Ns16550::Bytes(u, 0))
                .map_err(|_| bad),
            4 if base.is_multiple_of(4) && reg_shift >= 2 => {
                let backend = Mmio32 {
                    base: NonNull::from_ref(&()).with_addr(nonzero).cast(),
                    reg_shift,
                };
                // SAFETY: the caller's contract for every register of the block.
                Ok(Ns16550::Words(
                    unsafe { Uart16550::new_with_backend(backend) },
                    0,
                ))
            }
            _ => Err(bad),
        }
    }

    /// With the input clock and a baud rate, programs 8N1 at that rate
    /// with FIFOs; without them, keeps the rate firmware set (a divisor
    /// from a guessed clock would garble the line) and only checks the
    /// chip answers and masks its interrupts.
    pub fn init(&mut self, clock: Option<u32>, baud: Option<u32>) -> Result<(), Error> {
        match self {
            Ns16550::Bytes(u, _) => init(u, clock, baud),
            Ns16550::Words(u, _) => init(u, clock, baud),
        }
    }

    pub fn write_byte(&mut self, b: u8) {
        match self {
            Ns16550::Bytes(u, dropped) => send(u, dropped, b),
            Ns16550::Words(u, dropped) => send(u, dropped, b),
        }
    }

    /// Bytes dropped because the transmitter stayed busy.
    pub fn dropped(&self) -> u64 {
        match self {
            Ns16550::Bytes(_, d) | Ns16550::Words(_, d) => *d,
        }
    }
}

fn init<B: Backend>(
    u: &mut Uart16550<B>,
    clock: Option<u32>,
    baud: Option<u32>,
) -> Result<(), Error> {
    match (clock, baud) {
        (Some(clock), Some(baud)) => {
            let config = Config {
                frequency: clock,
                baud_rate: BaudRate::from_integer(baud),
                ..Config::DEFAULT
            };
            u.init(config).map_err(|e| match e {
                uart_16550::InitError::DeviceNotPresent => Error::NotPresent,
                _ => Error::BadRate { clock, baud },
            })
        }
        _ if !u.check_present() => Err(Error::NotPresent),
        _ => {
            u.disable_interrupts(uart_16550::spec::registers::IER::all());
            Ok(())
        }
    }
}

fn send<B: Backend>(u: &mut Uart16550<B>, dropped: &mut u64, b: u8) {
    for _ in 0..TX_SPIN_LIMIT {
        if u.try_send_byte(b).is_ok() {
            return;
        }
        core::hint::spin_loop();
    }
    *dropped += 1;
}

#[allow(unsafe_code)] // fake register blocks in host memory
#[cfg(test)]
mod tests;
