//! The console UART the devicetree or the SPCR names: a PL011, an SBSA generic UART
//! (firmware owns its rate and framing) or an MMIO 16550.
use alloc::boxed::Box;
use core::fmt::{self, Write};
use devicetree::{Uart, UartKind};
use ns16550::Ns16550;
use pl011::Pl011;

/// A UART that sends one byte (bounded: it drops rather than waits forever).
pub trait ByteSink {
    fn put(&mut self, b: u8);
}

/// Text on a [`ByteSink`], each `\n` sent as `\r\n` as terminals expect.
pub struct Lines<T>(pub T);

impl<T: ByteSink> Write for Lines<T> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.put(b'\r');
            }
            self.0.put(b);
        }
        Ok(())
    }
}

#[derive(Debug)]
pub enum UartError {
    Ns16550(ns16550::Error),
}

impl fmt::Display for UartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UartError::Ns16550(e) => write!(f, "16550: {e:?}"),
        }
    }
}

/// Opens and initialises `u` as the console device.
pub fn open(u: &Uart) -> Result<Box<dyn Write + Send>, UartError> {
    let base = u.base as usize;
    Ok(match u.kind {
        UartKind::Pl011 | UartKind::SbsaUart => {
            // SAFETY: the UART the devicetree or SPCR names, identity-mapped as
            // device memory; only the console drives it.
            let mut p = unsafe { Pl011::new(base) };
            if u.kind == UartKind::SbsaUart {
                p.init_sbsa();
            } else {
                p.init();
            }
            Box::new(Lines(p))
        }
        UartKind::Ns16550 {
            reg_shift,
            reg_io_width,
        } => {
            // SAFETY: as above, with the register layout the firmware gives.
            let mut n = unsafe { Ns16550::mmio(base, reg_shift, reg_io_width) }
                .map_err(UartError::Ns16550)?;
            n.init(u.clock_frequency, u.baud)
                .map_err(UartError::Ns16550)?;
            Box::new(Lines(n))
        }
    })
}

impl ByteSink for Pl011 {
    fn put(&mut self, b: u8) {
        self.write_byte(b);
    }
}

impl ByteSink for Ns16550 {
    fn put(&mut self, b: u8) {
        self.write_byte(b);
    }
}
