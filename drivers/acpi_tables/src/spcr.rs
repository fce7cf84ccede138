//! SPCR: the serial port the firmware used as its console. Layout from
//! Microsoft's "Serial Port Console Redirection Table" (revisions 1 to 4;
//! the interface types are the DBG2 serial port subtypes).
use crate::bytes::{ascii, Bytes};
use crate::error::{ErrorKind, TableError};
use crate::sdt::{parse_table, SdtHeader, HEADER_LEN};
use alloc::string::String;
use core::fmt;

/// Length of revisions 1 to 3 (4 adds the precise baud rate and the
/// namespace string).
pub const V1_LEN: usize = 80;
const NAMESPACE_MIN_OFFSET: usize = 88;

/// Generic Address Structure address spaces an SPCR console can use.
pub const SPACE_SYSTEM_MEMORY: u8 = 0;
pub const SPACE_SYSTEM_IO: u8 = 1;

/// Interrupt type bits.
pub const INT_PIC_8259: u8 = 1;
pub const INT_IOAPIC: u8 = 1 << 1;
pub const INT_IOSAPIC: u8 = 1 << 2;
pub const INT_GIC: u8 = 1 << 3;
pub const INT_RISCV_PLIC: u8 = 1 << 4;

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Spcr {
    pub header: SdtHeader,
    pub interface_type: u8,
    /// [`interface_name`] of `interface_type`.
    pub interface_name: &'static str,
    /// Address 0 means console redirection is disabled.
    pub base_address: Gas,
    /// `INT_*` bits: which interrupt controllers `irq` / `gsiv` are for.
    pub interrupt_type: u8,
    /// PC-AT (8259) IRQ.
    pub irq: u8,
    pub gsiv: u32,
    /// Code: 0 = as is, 3 = 9600, 4 = 19200, 6 = 57600, 7 = 115200.
    pub configured_baud_rate: u8,
    pub parity: u8,
    pub stop_bits: u8,
    /// Bit 0 DCD, bit 1 RTS/CTS, bit 2 XON/XOFF.
    pub flow_control: u8,
    /// 0 VT100, 1 extended VT100, 2 VT-UTF8, 3 ANSI.
    pub terminal_type: u8,
    pub language: u8,
    /// 0xffff for a device that is not on PCI.
    pub pci_device_id: u16,
    pub pci_vendor_id: u16,
    pub pci_bus: u8,
    pub pci_device: u8,
    pub pci_function: u8,
    pub pci_flags: u32,
    pub pci_segment: u8,
    /// Revision 3 and later (0: unknown).
    pub uart_clock_frequency: Option<u32>,
    /// Revision 4; when not 0 it overrides the configured baud rate.
    pub precise_baud_rate: Option<u32>,
    /// Revision 4: the ACPI namespace path of the device ("." for none).
    pub namespace_string: Option<String>,
}

/// ACPI Generic Address Structure (ACPI 6.5, 5.2.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Gas {
    pub space_id: u8,
    pub bit_width: u8,
    pub bit_offset: u8,
    /// 0 undefined, 1 byte, 2 word, 3 dword, 4 qword.
    pub access_size: u8,
    pub address: u64,
}

impl Gas {
    pub(crate) fn read(b: &Bytes<'_>, at: usize) -> Result<Gas, TableError> {
        Ok(Gas {
            space_id: b.u8(at)?,
            bit_width: b.u8(at + 1)?,
            bit_offset: b.u8(at + 2)?,
            access_size: b.u8(at + 3)?,
            address: b.u64(at + 4)?,
        })
    }

    pub fn space_name(&self) -> &'static str {
        match self.space_id {
            SPACE_SYSTEM_MEMORY => "system memory",
            SPACE_SYSTEM_IO => "system I/O",
            2 => "PCI configuration",
            0x7f => "functional fixed hardware",
            _ => "other",
        }
    }
}

/// What a console driver needs, from [`Spcr::console`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Console {
    pub kind: ConsoleKind,
    /// Memory-mapped; otherwise an x86 I/O port.
    pub mmio: bool,
    pub address: u64,
    /// None: leave the UART's rate as the firmware set it.
    pub baud: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum ConsoleKind {
    Pl011,
    Uart16550,
    /// Any other interface type, by number. The SBSA generic UARTs (0xd,
    /// 0xe) land here: they are PL011 subsets without its configuration
    /// registers, so a PL011 driver that programs the line must not get one.
    Other(u8),
}

/// The DBG2 serial subtype names (revision 1 only defines 0 and 1).
pub fn interface_name(interface_type: u8) -> &'static str {
    match interface_type {
        0x00 => "16550",
        0x01 => "16450 (16550 subset)",
        0x02 => "MAX311xE SPI UART",
        0x03 => "Arm PL011",
        0x04 => "MSM8x60",
        0x05 => "Nvidia 16550",
        0x06 => "TI OMAP",
        0x08 => "APM88xxxx",
        0x09 => "MSM8974",
        0x0a => "SAM5250",
        0x0b => "Intel USIF",
        0x0c => "i.MX 6",
        0x0d => "Arm SBSA generic UART (32-bit only, deprecated)",
        0x0e => "Arm SBSA generic UART",
        0x0f => "Arm DCC",
        0x10 => "BCM2835",
        0x11 => "SDM845 (1.8432 MHz clock)",
        0x12 => "16550 with parameters in the GAS",
        0x13 => "SDM845 (7.372 MHz clock)",
        0x14 => "Intel LPSS",
        0x15 => "RISC-V SBI console",
        _ => "unknown",
    }
}

/// The configured baud rate code as a rate; None for "as is" and unknown codes.
pub fn baud_from_code(code: u8) -> Option<u32> {
    match code {
        3 => Some(9600),
        4 => Some(19200),
        6 => Some(57600),
        7 => Some(115_200),
        _ => None,
    }
}

pub fn parse(data: &[u8]) -> Result<Spcr, TableError> {
    let (header, b) = parse_table(data, Some(*b"SPCR"))?;
    let revision = header.revision;
    if !(1..=4).contains(&revision) {
        return Err(b.err(8, ErrorKind::UnknownRevision { revision }));
    }
    // Read the last fixed field first, so a short table fails at one place.
    b.slice(HEADER_LEN, V1_LEN - HEADER_LEN)?;
    let interface_type = b.u8(36)?;
    let mut s = Spcr {
        interface_type,
        interface_name: interface_name(interface_type),
        base_address: Gas::read(&b, 40)?,
        interrupt_type: b.u8(52)?,
        irq: b.u8(53)?,
        gsiv: b.u32(54)?,
        configured_baud_rate: b.u8(58)?,
        parity: b.u8(59)?,
        stop_bits: b.u8(60)?,
        flow_control: b.u8(61)?,
        terminal_type: b.u8(62)?,
        language: b.u8(63)?,
        pci_device_id: b.u16(64)?,
        pci_vendor_id: b.u16(66)?,
        pci_bus: b.u8(68)?,
        pci_device: b.u8(69)?,
        pci_function: b.u8(70)?,
        pci_flags: b.u32(71)?,
        pci_segment: b.u8(75)?,
        // Reserved before revision 3.
        uart_clock_frequency: if revision >= 3 {
            Some(b.u32(76)?)
        } else {
            None
        },
        precise_baud_rate: None,
        namespace_string: None,
        header,
    };
    if revision >= 4 {
        s.precise_baud_rate = Some(b.u32(80)?);
        let len = usize::from(b.u16(84)?);
        let offset = usize::from(b.u16(86)?);
        let bad = b.err(
            86,
            ErrorKind::BadOffset {
                offset: offset as u64,
            },
        );
        // The string must lie after the fixed fields and inside the table.
        if offset < NAMESPACE_MIN_OFFSET {
            return Err(bad);
        }
        s.namespace_string = Some(ascii(b.slice(offset, len).map_err(|_| bad)?));
    }
    Ok(s)
}

impl Spcr {
    /// The baud rate to program: the precise rate when given, else the code's.
    pub fn baud_rate(&self) -> Option<u32> {
        match self.precise_baud_rate {
            Some(rate) if rate != 0 => Some(rate),
            _ => baud_from_code(self.configured_baud_rate),
        }
    }

    /// The console, if redirection is enabled (address not 0) and the
    /// registers are in memory or I/O space.
    pub fn console(&self) -> Option<Console> {
        let g = &self.base_address;
        let mmio = match g.space_id {
            SPACE_SYSTEM_MEMORY => true,
            SPACE_SYSTEM_IO => false,
            _ => return None,
        };
        if g.address == 0 {
            return None;
        }
        let kind = match self.interface_type {
            0x03 => ConsoleKind::Pl011,
            0x00 | 0x01 | 0x12 => ConsoleKind::Uart16550,
            other => ConsoleKind::Other(other),
        };
        Some(Console {
            kind,
            mmio,
            address: g.address,
            baud: self.baud_rate(),
        })
    }
}

/// A PC's first serial port. Not a QEMU assumption: COM1 at I/O port
/// 0x3f8 is the PC platform's legacy serial port (the BIOS data area's
/// first entry), which firmware without an SPCR still leaves there.
pub const COM1: u16 = 0x3f8;

/// Where a 16550-compatible console's registers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uart16550At {
    Port(u16),
    /// Registers `stride` bytes apart.
    Mmio {
        address: u64,
        stride: u8,
    },
}

impl Spcr {
    /// The SPCR's UART, when it is 16550-compatible and in memory or I/O
    /// space (a port must fit 16 bits). MMIO register spacing comes from
    /// the address's access size (or else its bit width; bytes when
    /// neither says).
    pub fn uart_16550(&self) -> Option<Uart16550At> {
        let c = self.console()?;
        if c.kind != ConsoleKind::Uart16550 {
            return None;
        }
        if !c.mmio {
            return u16::try_from(c.address).ok().map(Uart16550At::Port);
        }
        let g = &self.base_address;
        let stride = match (g.access_size, g.bit_width) {
            (1..=4, _) => 1u8 << (g.access_size - 1),
            (_, 16 | 32 | 64) => g.bit_width / 8,
            _ => 1,
        };
        Some(Uart16550At::Mmio {
            address: c.address,
            stride,
        })
    }
}

/// A PC's console: the SPCR's 16550 when it names one, else COM1.
pub fn pc_console(spcr: Option<&Spcr>) -> Uart16550At {
    spcr.and_then(Spcr::uart_16550)
        .unwrap_or(Uart16550At::Port(COM1))
}

/// The console as a memory-mapped UART driver takes it (Arm has no I/O
/// ports), from [`Spcr::mmio_uart`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioUart {
    pub kind: MmioUartKind,
    pub address: u64,
    /// None: leave the rate as the firmware set it.
    pub baud: Option<u32>,
    /// The input clock a 16550 divisor needs (revision 3 and later, not 0).
    pub clock: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioUartKind {
    Pl011,
    /// The SBSA generic UART (0xd, 0xe): firmware owns rate and framing.
    SbsaUart,
    /// Registers `1 << reg_shift` bytes apart, accessed `reg_io_width`
    /// bytes wide (1 or 4), as the devicetree's properties say.
    Ns16550 {
        reg_shift: u32,
        reg_io_width: u32,
    },
}

/// Why the SPCR's console cannot be a memory-mapped UART here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioUartError {
    /// In I/O space.
    IoSpace,
    /// An interface type with no driver (by number).
    Unsupported(u8),
}

impl fmt::Display for MmioUartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmioUartError::IoSpace => write!(f, "the SPCR's UART is in I/O space"),
            MmioUartError::Unsupported(t) => write!(
                f,
                "the SPCR's UART type {t:#x} ({}) has no driver",
                interface_name(*t)
            ),
        }
    }
}

impl Spcr {
    /// The console as a PL011, an SBSA generic UART or a 16550 in
    /// memory; None when redirection is off. A 16550's register width is
    /// 32 bits when its address structure says dword access, else bytes.
    pub fn mmio_uart(&self) -> Result<Option<MmioUart>, MmioUartError> {
        let Some(c) = self.console() else {
            return Ok(None);
        };
        if !c.mmio {
            return Err(MmioUartError::IoSpace);
        }
        let kind = match (c.kind, self.uart_16550()) {
            (ConsoleKind::Pl011, _) => MmioUartKind::Pl011,
            (ConsoleKind::Other(0x0d | 0x0e), _) => MmioUartKind::SbsaUart,
            (_, Some(Uart16550At::Mmio { stride, .. })) => MmioUartKind::Ns16550 {
                reg_shift: stride.trailing_zeros(),
                reg_io_width: if self.base_address.access_size == 3 {
                    4
                } else {
                    1
                },
            },
            _ => return Err(MmioUartError::Unsupported(self.interface_type)),
        };
        Ok(Some(MmioUart {
            kind,
            address: c.address,
            baud: c.baud,
            clock: self.uart_clock_frequency.filter(|&f| f != 0),
        }))
    }
}

impl fmt::Display for Spcr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        let g = &self.base_address;
        writeln!(
            f,
            "SPCR rev {} oem {:?} {:?} length {:#x}",
            h.revision, h.oem_id, h.oem_table_id, h.length
        )?;
        writeln!(
            f,
            "  [0x24] interface type {:#x} ({})",
            self.interface_type, self.interface_name
        )?;
        writeln!(
            f,
            "  [0x28] base address {} {:#x} (space {:#x}, bit width {}, bit offset {}, access size {})",
            g.space_name(),
            g.address,
            g.space_id,
            g.bit_width,
            g.bit_offset,
            g.access_size
        )?;
        write!(f, "  [0x34] interrupt type {:#x} (", self.interrupt_type)?;
        let names = ["8259", "I/O APIC", "I/O SAPIC", "GIC", "RISC-V PLIC/APLIC"];
        let mut sep = "";
        for (bit, name) in names.iter().enumerate() {
            if self.interrupt_type & (1 << bit) != 0 {
                write!(f, "{sep}{name}")?;
                sep = ", ";
            }
        }
        writeln!(f, ") IRQ {:#x} GSIV {:#x}", self.irq, self.gsiv)?;
        write!(
            f,
            "  [0x3a] baud rate code {:#x} (",
            self.configured_baud_rate
        )?;
        match baud_from_code(self.configured_baud_rate) {
            Some(rate) => write!(f, "{rate}")?,
            None if self.configured_baud_rate == 0 => write!(f, "as is")?,
            None => write!(f, "reserved")?,
        }
        writeln!(
            f,
            ") parity {:#x} stop bits {:#x} flow control {:#x} terminal type {:#x} language {:#x}",
            self.parity, self.stop_bits, self.flow_control, self.terminal_type, self.language
        )?;
        writeln!(
            f,
            "  [0x40] PCI device {:#06x} vendor {:#06x} at {:#x}:{:#x}:{:#x}.{:#x} flags {:#x}",
            self.pci_device_id,
            self.pci_vendor_id,
            self.pci_segment,
            self.pci_bus,
            self.pci_device,
            self.pci_function,
            self.pci_flags
        )?;
        if let Some(v) = self.uart_clock_frequency {
            writeln!(f, "  [0x4c] UART clock frequency {v:#x} ({v} Hz)")?;
        }
        if let Some(v) = self.precise_baud_rate {
            writeln!(f, "  [0x50] precise baud rate {v:#x} ({v})")?;
        }
        if let Some(ns) = &self.namespace_string {
            writeln!(f, "  namespace string {ns:?}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
