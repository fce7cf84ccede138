//! Function addresses and the configuration-space access trait.
use core::fmt;

/// Vendor ID (16 bits) and device ID (16 bits).
pub const VENDOR_ID: u16 = 0x00;
/// Command (16 bits) and status (16 bits).
pub const COMMAND: u16 = 0x04;
/// Revision (8 bits) and class code (24 bits).
pub const CLASS_REVISION: u16 = 0x08;
/// Header type (8 bits; bit 7 is multi-function).
pub const HEADER_TYPE: u16 = 0x0e;
/// The first BAR; BAR n is at `BAR0 + 4 * n`.
pub const BAR0: u16 = 0x10;
/// Type 1: primary, secondary, subordinate bus and secondary latency.
pub const BUS_NUMBERS: u16 = 0x18;
/// Type 1: I/O base and limit (8 bits each), secondary status above.
pub const IO_BASE_LIMIT: u16 = 0x1c;
/// Type 1: memory base and limit (16 bits each).
pub const MEM_BASE_LIMIT: u16 = 0x20;
/// Type 1: prefetchable memory base and limit (16 bits each).
pub const PREF_BASE_LIMIT: u16 = 0x24;
/// Type 1: prefetchable base, upper 32 bits.
pub const PREF_BASE_UPPER: u16 = 0x28;
/// Type 1: prefetchable limit, upper 32 bits.
pub const PREF_LIMIT_UPPER: u16 = 0x2c;
/// Type 1: I/O base and limit, upper 16 bits each.
pub const IO_UPPER: u16 = 0x30;
/// Capabilities pointer (type 0 and 1).
pub const CAP_PTR: u16 = 0x34;

/// Command register: I/O space decode.
pub const CMD_IO: u16 = 1 << 0;
/// Command register: memory space decode.
pub const CMD_MEMORY: u16 = 1 << 1;
/// Command register: bus mastering.
pub const CMD_BUS_MASTER: u16 = 1 << 2;
/// Status register: the capability list is present.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// The size of one function's configuration space under ECAM.
pub const CONFIG_SPACE_SIZE: u16 = 4096;

/// A function address: bus, device (0-31), function (0-7). The fields are
/// private so a `Bdf` is always in range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bdf {
    bus: u8,
    device: u8,
    function: u8,
}

impl Bdf {
    /// `None` if `device > 31` or `function > 7`.
    pub const fn new(bus: u8, device: u8, function: u8) -> Option<Bdf> {
        if device < 32 && function < 8 {
            Some(Bdf {
                bus,
                device,
                function,
            })
        } else {
            None
        }
    }

    /// From a 16-bit requester ID (bus << 8 | device << 3 | function).
    pub const fn from_rid(rid: u16) -> Bdf {
        Bdf {
            bus: (rid >> 8) as u8,
            device: ((rid >> 3) & 0x1f) as u8,
            function: (rid & 7) as u8,
        }
    }

    pub const fn bus(self) -> u8 {
        self.bus
    }

    pub const fn device(self) -> u8 {
        self.device
    }

    pub const fn function(self) -> u8 {
        self.function
    }

    /// The requester ID (bus << 8 | device << 3 | function).
    pub const fn rid(self) -> u16 {
        (self.bus as u16) << 8 | (self.device as u16) << 3 | self.function as u16
    }
}

impl fmt::Display for Bdf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02x}:{:02x}.{:x}",
            self.bus, self.device, self.function
        )
    }
}

/// Access to the configuration space of one PCI segment. Offsets are
/// bytes; `read32`/`write32` take dword-aligned offsets below 4096. An
/// implementation answers an absent function or an out-of-range offset
/// with all ones and ignores such writes, as the hardware does.
pub trait ConfigSpace {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32;
    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32);

    fn read16(&self, bdf: Bdf, offset: u16) -> u16 {
        (self.read32(bdf, offset & !3) >> ((offset & 2) * 8)) as u16
    }

    fn read8(&self, bdf: Bdf, offset: u16) -> u8 {
        (self.read32(bdf, offset & !3) >> ((offset & 3) * 8)) as u8
    }

    /// Read-modify-write of the containing dword. Do not use it on a
    /// register that shares its dword with RW1C bits (command/status):
    /// see [`ConfigSpace::write_command`].
    fn write16(&mut self, bdf: Bdf, offset: u16, value: u16) {
        let shift = (offset & 2) * 8;
        let old = self.read32(bdf, offset & !3);
        let new = (old & !(0xffff << shift)) | (u32::from(value) << shift);
        self.write32(bdf, offset & !3, new);
    }

    /// Read-modify-write of the containing dword (see [`ConfigSpace::write16`]).
    fn write8(&mut self, bdf: Bdf, offset: u16, value: u8) {
        let shift = (offset & 3) * 8;
        let old = self.read32(bdf, offset & !3);
        let new = (old & !(0xff << shift)) | (u32::from(value) << shift);
        self.write32(bdf, offset & !3, new);
    }

    fn command(&self, bdf: Bdf) -> u16 {
        self.read16(bdf, COMMAND)
    }

    /// Writes the command register with zeros in the status half, so the
    /// status register's write-one-to-clear bits are left alone.
    fn write_command(&mut self, bdf: Bdf, value: u16) {
        self.write32(bdf, COMMAND, u32::from(value));
    }
}
