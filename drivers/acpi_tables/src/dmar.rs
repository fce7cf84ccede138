//! DMAR, the DMA Remapping Reporting table (Intel VT-d specification,
//! chapter 8 "BIOS Considerations"): the remapping units (DRHD), the memory
//! that devices keep using through the hand-over (RMRR), the root ports that
//! support ATS (ATSR), NUMA affinity (RHSA), ACPI namespace devices (ANDD),
//! devices that need ATC (SATC) and SoC-integrated device properties (SIDP).
//!
//! Device scopes name a device by a start bus and a path of (device,
//! function) hops through bridges, so turning one into a bus/device/function
//! needs the bridges' secondary bus numbers from PCI config space: the
//! resolvers take that read as a closure ([`BusRead`]).
use crate::bytes::{ascii, Bytes};
use crate::error::{ErrorKind, TableError};
use crate::sdt::{parse_table, SdtHeader, HEADER_LEN};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The remapping structures follow the header, the width, the flags and
/// ten reserved bytes.
const STRUCTURES: usize = HEADER_LEN + 12;
/// Type, length, flags, reserved, enumeration id, start bus.
const SCOPE_HEADER: usize = 6;

/// Reads one byte of a bridge's config space: `(segment, bus, device,
/// function)` gives its secondary (or subordinate) bus number, `None` when no
/// bridge answers there.
pub type BusRead<'a> = dyn Fn(u16, u8, u8, u8) -> Option<u8> + 'a;

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Dmar {
    pub header: SdtHeader,
    /// As stored: the platform's DMA addresses are this plus one bits wide.
    pub host_address_width: u8,
    pub flags: u8,
    /// In table order.
    pub structures: Vec<Structure>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum Structure {
    Drhd(Drhd),
    Rmrr(Rmrr),
    Atsr(Atsr),
    Rhsa(Rhsa),
    Andd(Andd),
    Satc(Satc),
    Sidp(Sidp),
    /// A type this parser does not know, skipped as Linux does (the
    /// specification may add types).
    Unknown {
        offset: usize,
        r#type: u16,
        length: u16,
    },
}

/// A remapping hardware unit (type 0).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Drhd {
    pub offset: usize,
    pub flags: u8,
    /// Bits 3:0: the register set is 2^N 4 KiB pages (reserved, so 0, in
    /// tables older than VT-d 2.x).
    pub size: u8,
    pub segment: u16,
    pub register_base: u64,
    pub scopes: Vec<DeviceScope>,
}

/// A reserved memory region that the named devices may DMA to (type 1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Rmrr {
    pub offset: usize,
    pub segment: u16,
    pub base: u64,
    /// The last byte of the region (inclusive).
    pub limit: u64,
    pub scopes: Vec<DeviceScope>,
}

/// Root ports that support ATS (type 2).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Atsr {
    pub offset: usize,
    pub flags: u8,
    pub segment: u16,
    pub scopes: Vec<DeviceScope>,
}

/// The proximity domain of a remapping unit (type 3).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Rhsa {
    pub offset: usize,
    pub register_base: u64,
    pub proximity_domain: u32,
}

/// An ACPI namespace device, named by scopes of type
/// [`ScopeType::AcpiNamespace`] whose enumeration id is `device_number` (type 4).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Andd {
    pub offset: usize,
    pub device_number: u8,
    pub name: String,
}

/// SoC-integrated devices with an address translation cache (type 5).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Satc {
    pub offset: usize,
    pub flags: u8,
    pub segment: u16,
    pub scopes: Vec<DeviceScope>,
}

/// SoC-integrated devices with properties given in their scope flags (type 6).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Sidp {
    pub offset: usize,
    pub segment: u16,
    pub scopes: Vec<DeviceScope>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DeviceScope {
    pub offset: usize,
    pub scope_type: ScopeType,
    /// VT-d 4.0+ (meaningful in SIDP): see the `DeviceScope::*` constants.
    pub flags: u8,
    /// IOAPIC id, HPET number or ANDD device number; 0 for PCI scopes.
    pub enumeration_id: u8,
    pub start_bus: u8,
    pub path: Vec<PathEntry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum ScopeType {
    PciEndpoint,
    /// A bridge and everything below it.
    PciSubHierarchy,
    IoApic,
    Hpet,
    AcpiNamespace,
    /// 0 or 6..=255: kept, and never matched to a device.
    Reserved(u8),
}

/// One hop of a scope's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PathEntry {
    pub device: u8,
    pub function: u8,
}

/// A PCI function's bus, device (0..32) and function (0..8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Bdf {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

/// Why a scope did not resolve to a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum ResolveError {
    /// The scope's path has no hop.
    EmptyPath,
    /// Hop `index` names a device above 31 or a function above 7.
    BadPathEntry { index: usize },
    /// No bridge (no secondary bus) at this hop of the path.
    NoSecondaryBus { bridge: Bdf },
}

impl Bdf {
    /// `None` when the device or function is out of range.
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
}

impl Dmar {
    pub const INTR_REMAP: u8 = 1 << 0;
    pub const X2APIC_OPT_OUT: u8 = 1 << 1;
    pub const DMA_CTRL_PLATFORM_OPT_IN: u8 = 1 << 2;

    /// Width of the platform's DMA addresses in bits.
    pub fn address_width_bits(&self) -> u32 {
        u32::from(self.host_address_width) + 1
    }

    pub fn intr_remap(&self) -> bool {
        self.flags & Self::INTR_REMAP != 0
    }

    pub fn x2apic_opt_out(&self) -> bool {
        self.flags & Self::X2APIC_OPT_OUT != 0
    }

    pub fn dma_ctrl_platform_opt_in(&self) -> bool {
        self.flags & Self::DMA_CTRL_PLATFORM_OPT_IN != 0
    }

    pub fn drhds(&self) -> impl Iterator<Item = &Drhd> {
        self.structures.iter().filter_map(|s| match s {
            Structure::Drhd(d) => Some(d),
            _ => None,
        })
    }

    pub fn rmrrs(&self) -> impl Iterator<Item = &Rmrr> {
        self.structures.iter().filter_map(|s| match s {
            Structure::Rmrr(r) => Some(r),
            _ => None,
        })
    }

    /// The ANDD that declares ACPI device `number`.
    pub fn andd(&self, number: u8) -> Option<&Andd> {
        self.structures.iter().find_map(|s| match s {
            Structure::Andd(a) if a.device_number == number => Some(a),
            _ => None,
        })
    }

    /// The bus/device/function a scope names in `segment`.
    pub fn resolve_scope(
        &self,
        segment: u16,
        scope: &DeviceScope,
        secondary_bus: &BusRead<'_>,
    ) -> Result<Bdf, ResolveError> {
        scope.resolve(segment, secondary_bus)
    }

    /// The unit that translates `bdf`'s DMA: the one whose scopes name it
    /// (an endpoint scope, or a sub-hierarchy scope of the bridge above it),
    /// else the segment's INCLUDE_PCI_ALL unit wherever it sits in the table
    /// (Linux also looks at that one last). A scope whose bridges cannot be
    /// read matches nothing.
    pub fn drhd_for(
        &self,
        segment: u16,
        bdf: Bdf,
        secondary_bus: &BusRead<'_>,
        subordinate_bus: &BusRead<'_>,
    ) -> Option<&Drhd> {
        let mut all = None;
        for d in self.drhds().filter(|d| d.segment == segment) {
            if covers(&d.scopes, segment, bdf, secondary_bus, subordinate_bus) {
                return Some(d);
            }
            if all.is_none() && d.include_pci_all() {
                all = Some(d);
            }
        }
        all
    }

    /// The reserved regions `bdf` must keep reaching, in table order.
    pub fn rmrrs_for(
        &self,
        segment: u16,
        bdf: Bdf,
        secondary_bus: &BusRead<'_>,
        subordinate_bus: &BusRead<'_>,
    ) -> Vec<&Rmrr> {
        self.rmrrs()
            .filter(|r| {
                r.segment == segment
                    && covers(&r.scopes, segment, bdf, secondary_bus, subordinate_bus)
            })
            .collect()
    }
}

/// Whether one of `scopes` names `bdf`: an endpoint exactly, a bridge as
/// itself or anything in its secondary..=subordinate bus range.
fn covers(
    scopes: &[DeviceScope],
    segment: u16,
    bdf: Bdf,
    secondary_bus: &BusRead<'_>,
    subordinate_bus: &BusRead<'_>,
) -> bool {
    scopes.iter().any(|s| {
        let Ok(at) = s.resolve(segment, secondary_bus) else {
            return false;
        };
        match s.scope_type {
            ScopeType::PciEndpoint => at == bdf,
            ScopeType::PciSubHierarchy => {
                let range = |read: &BusRead<'_>| read(segment, at.bus, at.device, at.function);
                at == bdf
                    || matches!((range(secondary_bus), range(subordinate_bus)),
                        (Some(sec), Some(sub)) if (sec..=sub).contains(&bdf.bus))
            }
            _ => false,
        }
    })
}

impl Drhd {
    pub const INCLUDE_PCI_ALL: u8 = 1 << 0;

    pub fn include_pci_all(&self) -> bool {
        self.flags & Self::INCLUDE_PCI_ALL != 0
    }

    /// Bytes of the register set to map.
    pub fn register_set_len(&self) -> u64 {
        0x1000 << (self.size & 0x0f)
    }
}

impl Rmrr {
    /// Bytes in the region; `None` for the whole 64-bit space (or a limit
    /// below the base, which `parse` refuses).
    pub fn size(&self) -> Option<u64> {
        self.limit.checked_sub(self.base)?.checked_add(1)
    }
}

impl Atsr {
    pub const ALL_PORTS: u8 = 1 << 0;

    pub fn all_ports(&self) -> bool {
        self.flags & Self::ALL_PORTS != 0
    }
}

impl Satc {
    pub const ATC_REQUIRED: u8 = 1 << 0;

    pub fn atc_required(&self) -> bool {
        self.flags & Self::ATC_REQUIRED != 0
    }
}

impl DeviceScope {
    pub const REQ_WO_PASID_NESTED_NOTALLOWED: u8 = 1 << 0;
    pub const REQ_WO_PASID_PWSNP_NOTALLOWED: u8 = 1 << 1;
    pub const REQ_WO_PASID_PGSNP_NOTALLOWED: u8 = 1 << 2;
    pub const ATC_HARDENED: u8 = 1 << 3;
    pub const ATC_REQUIRED: u8 = 1 << 4;

    /// Walks the path: the first hop is on the start bus, each later hop
    /// on the secondary bus of the bridge named by the hop before.
    pub fn resolve(&self, segment: u16, secondary_bus: &BusRead<'_>) -> Result<Bdf, ResolveError> {
        let mut bus = self.start_bus;
        let mut last = None;
        for (index, hop) in self.path.iter().enumerate() {
            if let Some(
                bridge @ Bdf {
                    bus: on,
                    device,
                    function,
                },
            ) = last
            {
                bus = secondary_bus(segment, on, device, function)
                    .ok_or(ResolveError::NoSecondaryBus { bridge })?;
            }
            last = Some(
                Bdf::new(bus, hop.device, hop.function)
                    .ok_or(ResolveError::BadPathEntry { index })?,
            );
        }
        last.ok_or(ResolveError::EmptyPath)
    }
}

/// Parses a DMAR table: header and checksum, then every remapping structure
/// and device scope, each bounded by its own length and its parent's.
pub fn parse(data: &[u8]) -> Result<Dmar, TableError> {
    let (header, b) = parse_table(data, Some(*b"DMAR"))?;
    let host_address_width = b.u8(HEADER_LEN)?;
    let flags = b.u8(HEADER_LEN + 1)?;
    b.slice(HEADER_LEN + 2, 10)?;
    // Linux refuses a width below a page (< PAGE_SHIFT - 1): nothing could
    // be remapped.
    if host_address_width < 11 {
        return Err(b.err(
            HEADER_LEN,
            ErrorKind::BadValue {
                field: "host address width",
                value: host_address_width.into(),
            },
        ));
    }
    let mut structures = Vec::new();
    let mut at = STRUCTURES;
    while at < b.len() {
        let (s, len) = parse_structure(&b, at)?;
        structures.push(s);
        at += len; // `len` > 0 and within the table: checked by parse_structure
    }
    let dmar = Dmar {
        header,
        host_address_width,
        flags,
        structures,
    };
    // Two INCLUDE_PCI_ALL units in one segment leave the unlisted devices
    // with two translators.
    for (i, d) in dmar.drhds().enumerate() {
        let twice = dmar
            .drhds()
            .take(i)
            .any(|e| e.include_pci_all() && e.segment == d.segment);
        if d.include_pci_all() && twice {
            return Err(b.err(
                d.offset + 4,
                ErrorKind::BadValue {
                    field: "second INCLUDE_PCI_ALL DRHD of segment",
                    value: d.segment.into(),
                },
            ));
        }
    }
    Ok(dmar)
}

/// One remapping structure at `at` and its length.
fn parse_structure(b: &Bytes, at: usize) -> Result<(Structure, usize), TableError> {
    b.slice(at, 4)?;
    let ty = b.u16(at)?;
    let length = b.u16(at + 2)?;
    let len = usize::from(length);
    // The fixed part of each type; 4 (the header) for unknown ones, which
    // also stops a zero length from looping.
    let min = match ty {
        0 => 16,
        1 => 24,
        3 => 20,
        2 | 4..=6 => 8,
        _ => 4,
    };
    if len < min {
        return Err(b.err(
            at,
            ErrorKind::BadEntryLength {
                length: length.into(),
            },
        ));
    }
    b.slice(at, len)?;
    let end = at + len;
    let bad = |off: usize, field: &'static str, value: u64| {
        Err(b.err(off, ErrorKind::BadValue { field, value }))
    };
    let s = match ty {
        0 => {
            let register_base = b.u64(at + 8)?;
            // Linux rejects it too: a unit at zero is a firmware bug.
            if register_base == 0 {
                return bad(at + 8, "DRHD register base", 0);
            }
            Structure::Drhd(Drhd {
                offset: at,
                flags: b.u8(at + 4)?,
                size: b.u8(at + 5)?,
                segment: b.u16(at + 6)?,
                register_base,
                scopes: parse_scopes(b, at + 16, end)?,
            })
        }
        1 => {
            let (base, limit) = (b.u64(at + 8)?, b.u64(at + 16)?);
            if limit < base {
                return bad(at + 16, "RMRR limit below base", limit);
            }
            Structure::Rmrr(Rmrr {
                offset: at,
                segment: b.u16(at + 6)?,
                base,
                limit,
                scopes: parse_scopes(b, at + 24, end)?,
            })
        }
        2 => Structure::Atsr(Atsr {
            offset: at,
            flags: b.u8(at + 4)?,
            segment: b.u16(at + 6)?,
            scopes: parse_scopes(b, at + 8, end)?,
        }),
        3 => Structure::Rhsa(Rhsa {
            offset: at,
            register_base: b.u64(at + 8)?,
            proximity_domain: b.u32(at + 16)?,
        }),
        4 => Structure::Andd(Andd {
            offset: at,
            device_number: b.u8(at + 7)?,
            name: ascii(b.slice(at + 8, len - 8)?),
        }),
        5 => Structure::Satc(Satc {
            offset: at,
            flags: b.u8(at + 4)?,
            segment: b.u16(at + 6)?,
            scopes: parse_scopes(b, at + 8, end)?,
        }),
        6 => Structure::Sidp(Sidp {
            offset: at,
            segment: b.u16(at + 6)?,
            scopes: parse_scopes(b, at + 8, end)?,
        }),
        r#type => Structure::Unknown {
            offset: at,
            r#type,
            length,
        },
    };
    Ok((s, len))
}

/// The device scopes in `[at, end)`, the rest of a structure.
fn parse_scopes(b: &Bytes, mut at: usize, end: usize) -> Result<Vec<DeviceScope>, TableError> {
    let mut scopes = Vec::new();
    while at < end {
        let room = end - at;
        let truncated = |need| b.err(at, ErrorKind::Truncated { need, have: room });
        if room < SCOPE_HEADER {
            return Err(truncated(SCOPE_HEADER));
        }
        let len = usize::from(b.u8(at + 1)?);
        if len < SCOPE_HEADER {
            return Err(b.err(at, ErrorKind::BadEntryLength { length: len as u64 }));
        }
        if len > room {
            return Err(truncated(len));
        }
        if !(len - SCOPE_HEADER).is_multiple_of(2) {
            let value = len as u64;
            let field = "device scope length (6 + 2 per path hop)";
            return Err(b.err(at, ErrorKind::BadValue { field, value }));
        }
        let mut path = Vec::with_capacity((len - SCOPE_HEADER) / 2);
        for hop in (at + SCOPE_HEADER..at + len).step_by(2) {
            let (device, function) = (b.u8(hop)?, b.u8(hop + 1)?);
            if device > 31 || function > 7 {
                let value = (u64::from(device) << 8) | u64::from(function);
                let field = "device scope path hop (device << 8 | function)";
                return Err(b.err(hop, ErrorKind::BadValue { field, value }));
            }
            path.push(PathEntry { device, function });
        }
        let scope_type = match b.u8(at)? {
            1 => ScopeType::PciEndpoint,
            2 => ScopeType::PciSubHierarchy,
            3 => ScopeType::IoApic,
            4 => ScopeType::Hpet,
            5 => ScopeType::AcpiNamespace,
            t => ScopeType::Reserved(t),
        };
        scopes.push(DeviceScope {
            offset: at,
            scope_type,
            flags: b.u8(at + 2)?,
            enumeration_id: b.u8(at + 4)?,
            start_bus: b.u8(at + 5)?,
            path,
        });
        at += len;
    }
    Ok(scopes)
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

impl fmt::Display for PathEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}.{:x}", self.device, self.function)
    }
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::EmptyPath => write!(f, "device scope has an empty path"),
            ResolveError::BadPathEntry { index } => {
                write!(f, "device scope path hop {index} is not a device/function")
            }
            ResolveError::NoSecondaryBus { bridge } => {
                write!(f, "no bridge at {bridge} on the device scope's path")
            }
        }
    }
}

const SCOPE_FLAGS: [(u8, &str); 5] = [
    (
        DeviceScope::REQ_WO_PASID_NESTED_NOTALLOWED,
        "REQ_WO_PASID_NESTED_NOTALLOWED",
    ),
    (
        DeviceScope::REQ_WO_PASID_PWSNP_NOTALLOWED,
        "REQ_WO_PASID_PWSNP_NOTALLOWED",
    ),
    (
        DeviceScope::REQ_WO_PASID_PGSNP_NOTALLOWED,
        "REQ_WO_PASID_PGSNP_NOTALLOWED",
    ),
    (DeviceScope::ATC_HARDENED, "ATC_HARDENED"),
    (DeviceScope::ATC_REQUIRED, "ATC_REQUIRED"),
];

/// `flags 0x11 (NAME|NAME)`.
fn write_flags(f: &mut fmt::Formatter<'_>, flags: u8, names: &[(u8, &str)]) -> fmt::Result {
    write!(f, "flags {flags:#04x}")?;
    let mut sep = " (";
    for (bit, name) in names {
        if flags & bit != 0 {
            write!(f, "{sep}{name}")?;
            sep = "|";
        }
    }
    if sep == "|" {
        write!(f, ")")?;
    }
    Ok(())
}

impl Dmar {
    fn write_scopes(&self, f: &mut fmt::Formatter<'_>, scopes: &[DeviceScope]) -> fmt::Result {
        for s in scopes {
            write!(f, "\n          [{:#05x}] ", s.offset)?;
            let id =
                |f: &mut fmt::Formatter<'_>, what| write!(f, "{what} id {} ", s.enumeration_id);
            match s.scope_type {
                ScopeType::PciEndpoint => write!(f, "endpoint ")?,
                ScopeType::PciSubHierarchy => write!(f, "sub-hierarchy ")?,
                ScopeType::IoApic => id(f, "ioapic")?,
                ScopeType::Hpet => id(f, "hpet")?,
                ScopeType::AcpiNamespace => id(f, "acpi-namespace")?,
                ScopeType::Reserved(t) => write!(f, "reserved type {t} id {} ", s.enumeration_id)?,
            }
            // A one-hop path is the device itself; longer ones need the
            // bridges' config space, so only the start bus is certain.
            match s.path.as_slice() {
                [hop] => write!(f, "{:02x}:{hop}", s.start_bus)?,
                _ => write!(f, "bus {:02x}", s.start_bus)?,
            }
            let mut sep = " (path ";
            for hop in &s.path {
                write!(f, "{sep}{hop}")?;
                sep = " -> ";
            }
            f.write_str(if s.path.is_empty() {
                " (empty path)"
            } else {
                ")"
            })?;
            if s.flags != 0 {
                write!(f, " ")?;
                write_flags(f, s.flags, &SCOPE_FLAGS)?;
            }
            if s.scope_type == ScopeType::AcpiNamespace {
                if let Some(a) = self.andd(s.enumeration_id) {
                    write!(f, " = {}", a.name)?;
                }
            }
        }
        Ok(())
    }
}

impl fmt::Display for Dmar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}\n  host address width {} ({} bits) ",
            self.header,
            self.host_address_width,
            self.address_width_bits(),
        )?;
        let names = [
            (Dmar::INTR_REMAP, "INTR_REMAP"),
            (Dmar::X2APIC_OPT_OUT, "X2APIC_OPT_OUT"),
            (Dmar::DMA_CTRL_PLATFORM_OPT_IN, "DMA_CTRL_PLATFORM_OPT_IN"),
        ];
        write_flags(f, self.flags, &names)?;
        for s in &self.structures {
            match s {
                Structure::Drhd(d) => {
                    write!(f, "\n  [{:#05x}] DRHD ", d.offset)?;
                    write_flags(f, d.flags, &[(Drhd::INCLUDE_PCI_ALL, "INCLUDE_PCI_ALL")])?;
                    write!(
                        f,
                        " segment {:#06x} register base {:#x} size {} ({:#x} bytes)",
                        d.segment,
                        d.register_base,
                        d.size,
                        d.register_set_len()
                    )?;
                    self.write_scopes(f, &d.scopes)?;
                }
                Structure::Rmrr(r) => {
                    write!(
                        f,
                        "\n  [{:#05x}] RMRR segment {:#06x} base {:#x} limit {:#x}",
                        r.offset, r.segment, r.base, r.limit
                    )?;
                    self.write_scopes(f, &r.scopes)?;
                }
                Structure::Atsr(a) => {
                    write!(f, "\n  [{:#05x}] ATSR ", a.offset)?;
                    write_flags(f, a.flags, &[(Atsr::ALL_PORTS, "ALL_PORTS")])?;
                    write!(f, " segment {:#06x}", a.segment)?;
                    self.write_scopes(f, &a.scopes)?;
                }
                Structure::Rhsa(r) => write!(
                    f,
                    "\n  [{:#05x}] RHSA register base {:#x} proximity domain {:#x}",
                    r.offset, r.register_base, r.proximity_domain
                )?,
                Structure::Andd(a) => write!(
                    f,
                    "\n  [{:#05x}] ANDD device number {} name {:?}",
                    a.offset, a.device_number, a.name
                )?,
                Structure::Satc(s) => {
                    write!(f, "\n  [{:#05x}] SATC ", s.offset)?;
                    write_flags(f, s.flags, &[(Satc::ATC_REQUIRED, "ATC_REQUIRED")])?;
                    write!(f, " segment {:#06x}", s.segment)?;
                    self.write_scopes(f, &s.scopes)?;
                }
                Structure::Sidp(s) => {
                    write!(f, "\n  [{:#05x}] SIDP segment {:#06x}", s.offset, s.segment)?;
                    self.write_scopes(f, &s.scopes)?;
                }
                Structure::Unknown {
                    offset,
                    r#type,
                    length,
                } => write!(
                    f,
                    "\n  [{offset:#05x}] unknown type {ty} length {length}",
                    ty = r#type
                )?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdt::tests::{fix_checksum, make_table};
    use alloc::string::ToString;
    use alloc::vec;

    fn scope(ty: u8, id: u8, bus: u8, path: &[(u8, u8)]) -> Vec<u8> {
        let mut s = vec![ty, (6 + 2 * path.len()) as u8, 0, 0, id, bus];
        for &(d, f) in path {
            s.extend_from_slice(&[d, f]);
        }
        s
    }

    /// Type, length, then the rest of the fixed part and the scopes.
    fn structure(ty: u16, fixed: &[u8], scopes: &[Vec<u8>]) -> Vec<u8> {
        let len = 4 + fixed.len() + scopes.iter().map(Vec::len).sum::<usize>();
        let mut s = ty.to_le_bytes().to_vec();
        s.extend_from_slice(&(len as u16).to_le_bytes());
        s.extend_from_slice(fixed);
        scopes.iter().for_each(|sc| s.extend_from_slice(sc));
        s
    }

    fn drhd(flags: u8, segment: u16, base: u64, scopes: &[Vec<u8>]) -> Vec<u8> {
        let mut f = vec![flags, 0];
        f.extend_from_slice(&segment.to_le_bytes());
        f.extend_from_slice(&base.to_le_bytes());
        structure(0, &f, scopes)
    }

    /// ATSR and SATC share the layout: flags, reserved, segment.
    fn flags_segment(ty: u16, flags: u8, segment: u16, scopes: &[Vec<u8>]) -> Vec<u8> {
        let [s0, s1] = segment.to_le_bytes();
        structure(ty, &[flags, 0, s0, s1], scopes)
    }

    fn table(haw: u8, flags: u8, structures: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![haw, flags];
        body.extend_from_slice(&[0; 10]);
        structures.iter().for_each(|s| body.extend_from_slice(s));
        make_table(b"DMAR", 1, &body)
    }

    fn sc(
        offset: usize,
        scope_type: ScopeType,
        id: u8,
        start_bus: u8,
        path: &[(u8, u8)],
    ) -> DeviceScope {
        DeviceScope {
            offset,
            scope_type,
            flags: 0,
            enumeration_id: id,
            start_bus,
            path: path
                .iter()
                .map(|&(device, function)| PathEntry { device, function })
                .collect(),
        }
    }

    fn bdf(bus: u8, device: u8, function: u8) -> Bdf {
        Bdf::new(bus, device, function).unwrap()
    }

    /// A fake config space for segment 0: bridges as
    /// (bus, device, function, secondary, subordinate).
    type Bridges = [(u8, u8, u8, u8, u8)];
    fn secondary(bridges: &Bridges) -> impl Fn(u16, u8, u8, u8) -> Option<u8> + '_ {
        move |seg, b, d, f| {
            let x = bridges
                .iter()
                .find(|x| seg == 0 && (x.0, x.1, x.2) == (b, d, f))?;
            Some(x.3)
        }
    }
    fn subordinate(bridges: &Bridges) -> impl Fn(u16, u8, u8, u8) -> Option<u8> + '_ {
        move |seg, b, d, f| {
            let x = bridges
                .iter()
                .find(|x| seg == 0 && (x.0, x.1, x.2) == (b, d, f))?;
            Some(x.4)
        }
    }

    /// What QEMU's build_dmar_q35 emits for `-M q35 -device
    /// intel-iommu,intremap=on` (aw-bits 48, the default since 9.2) with a
    /// root port at 00:01.0: one DRHD at Q35_HOST_BRIDGE_IOMMU_ADDR without
    /// INCLUDE_PCI_ALL, the IOAPIC's scope (ACPI_BUILD_IOAPIC_ID 0 at
    /// Q35_PSEUDO_BUS_PLATFORM 0xff, Q35_PSEUDO_DEVFN_IOAPIC 0x00), then one
    /// scope per device on the root bus (bridges as sub-hierarchies); with
    /// device-iotlb=on an ATSR with ALL_PORTS follows. The captured
    /// fixtures below are the same without the root port.
    fn q35(device_iotlb: bool) -> Vec<u8> {
        let unit = drhd(
            0,
            0,
            0xfed9_0000,
            &[
                scope(3, 0, 0xff, &[(0, 0)]),
                scope(1, 0, 0, &[(0, 0)]),
                scope(2, 0, 0, &[(1, 0)]),
                scope(1, 0, 0, &[(0x1f, 0)]),
                scope(1, 0, 0, &[(0x1f, 2)]),
                scope(1, 0, 0, &[(0x1f, 3)]),
            ],
        );
        let mut s = vec![unit];
        if device_iotlb {
            s.push(flags_segment(2, 1, 0, &[]));
        }
        table(47, Dmar::INTR_REMAP, &s)
    }

    #[test]
    fn q35_intel_iommu() {
        let t = q35(false);
        assert_eq!(t.len(), 36 + 12 + 16 + 6 * 8);
        let d = parse(&t).unwrap();
        assert_eq!(d.header.signature_str(), "DMAR");
        assert_eq!(d.header.revision, 1);
        assert_eq!(d.header.length as usize, t.len());
        assert_eq!(d.host_address_width, 47);
        assert_eq!(d.address_width_bits(), 48);
        assert!(d.intr_remap() && !d.x2apic_opt_out() && !d.dma_ctrl_platform_opt_in());
        use ScopeType::*;
        let unit = Drhd {
            offset: 0x30,
            flags: 0,
            size: 0,
            segment: 0,
            register_base: 0xfed9_0000,
            scopes: vec![
                sc(0x40, IoApic, 0, 0xff, &[(0, 0)]),
                sc(0x48, PciEndpoint, 0, 0, &[(0, 0)]),
                sc(0x50, PciSubHierarchy, 0, 0, &[(1, 0)]),
                sc(0x58, PciEndpoint, 0, 0, &[(0x1f, 0)]),
                sc(0x60, PciEndpoint, 0, 0, &[(0x1f, 2)]),
                sc(0x68, PciEndpoint, 0, 0, &[(0x1f, 3)]),
            ],
        };
        assert_eq!(d.structures, [Structure::Drhd(unit.clone())]);
        assert!(!unit.include_pci_all());
        assert_eq!(unit.register_set_len(), 0x1000);

        let ioapic = &unit.scopes[0];
        assert_eq!(d.resolve_scope(0, ioapic, &no_bridge), Ok(bdf(0xff, 0, 0)));
        // The root port 00:01.0 leads to bus 1.
        let bridges = [(0, 1, 0, 1, 1)];
        let (sec, sub) = (secondary(&bridges), subordinate(&bridges));
        for dev in [bdf(0, 0x1f, 2), bdf(0, 1, 0), bdf(1, 0, 0), bdf(0, 0, 0)] {
            assert_eq!(d.drhd_for(0, dev, &sec, &sub), Some(&unit), "{dev}");
        }
        // Not listed, and no INCLUDE_PCI_ALL unit to fall back on.
        assert_eq!(d.drhd_for(0, bdf(0, 3, 0), &sec, &sub), None);
        assert_eq!(d.drhd_for(0, bdf(2, 0, 0), &sec, &sub), None);
        assert_eq!(d.drhd_for(1, bdf(0, 0x1f, 2), &sec, &sub), None);
        assert!(d.rmrrs_for(0, bdf(0, 0x1f, 2), &sec, &sub).is_empty());

        let text = d.to_string();
        for line in [
            "DMAR rev 1 length 0x70 oem \"BOCHS \" \"BXPC    \" rev 0x1 creator \"BXPC\" rev 0x1",
            "  host address width 47 (48 bits) flags 0x01 (INTR_REMAP)",
            "  [0x030] DRHD flags 0x00 segment 0x0000 register base 0xfed90000 size 0 (0x1000 bytes)",
            "          [0x040] ioapic id 0 ff:00.0 (path 00.0)",
            "          [0x050] sub-hierarchy 00:01.0 (path 01.0)",
            "          [0x060] endpoint 00:1f.2 (path 1f.2)",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} not in\n{text}");
        }
    }

    fn no_bridge(_: u16, _: u8, _: u8, _: u8) -> Option<u8> {
        None
    }

    #[test]
    fn q35_device_iotlb_adds_atsr_all_ports() {
        let d = parse(&q35(true)).unwrap();
        assert_eq!(d.structures.len(), 2);
        let atsr = Atsr {
            offset: 0x70,
            flags: Atsr::ALL_PORTS,
            segment: 0,
            scopes: vec![],
        };
        assert!(atsr.all_ports());
        assert_eq!(d.structures[1], Structure::Atsr(atsr));
        assert!(d
            .to_string()
            .contains("\n  [0x070] ATSR flags 0x01 (ALL_PORTS) segment 0x0000"));
    }

    /// Older QEMU (and many PCs): the one unit covers everything.
    #[test]
    fn include_pci_all_unit() {
        let t = table(
            38,
            0,
            &[drhd(1, 0, 0xfed9_0000, &[scope(3, 0, 0xff, &[(0, 0)])])],
        );
        let d = parse(&t).unwrap();
        assert_eq!(d.address_width_bits(), 39);
        let unit = d.drhds().next().unwrap();
        assert!(unit.include_pci_all());
        let found = d.drhd_for(0, bdf(7, 3, 1), &no_bridge, &no_bridge);
        assert_eq!(found.map(|u| u.offset), Some(0x30));
        assert_eq!(d.drhd_for(1, bdf(7, 3, 1), &no_bridge, &no_bridge), None);
        assert!(d.to_string().contains("DRHD flags 0x01 (INCLUDE_PCI_ALL)"));
    }

    #[test]
    fn two_units() {
        // The INCLUDE_PCI_ALL unit first, against the specification's order,
        // to show that the explicit unit wins anyway.
        let t = table(
            38,
            Dmar::INTR_REMAP | Dmar::X2APIC_OPT_OUT | Dmar::DMA_CTRL_PLATFORM_OPT_IN,
            &[
                drhd(
                    1,
                    0,
                    0xfed9_1000,
                    &[
                        scope(3, 2, 0xf0, &[(0x1f, 0)]),
                        scope(4, 0, 0, &[(0x1f, 0)]),
                    ],
                ),
                drhd(
                    0,
                    0,
                    0xfed9_0000,
                    &[scope(1, 0, 0, &[(2, 0)]), scope(2, 0, 0, &[(0x1c, 0)])],
                ),
            ],
        );
        let d = parse(&t).unwrap();
        assert!(d.intr_remap() && d.x2apic_opt_out() && d.dma_ctrl_platform_opt_in());
        let units: Vec<_> = d.drhds().collect();
        assert_eq!(units.len(), 2);
        assert_eq!(
            *units[0],
            Drhd {
                offset: 0x30,
                flags: 1,
                size: 0,
                segment: 0,
                register_base: 0xfed9_1000,
                scopes: vec![
                    sc(0x40, ScopeType::IoApic, 2, 0xf0, &[(0x1f, 0)]),
                    sc(0x48, ScopeType::Hpet, 0, 0, &[(0x1f, 0)]),
                ],
            }
        );
        assert_eq!(units[1].offset, 0x50);
        assert_eq!(units[1].scopes[1].scope_type, ScopeType::PciSubHierarchy);

        // 00:1c.0 is a root port with buses 3..=4 below it.
        let bridges = [(0, 0x1c, 0, 3, 4), (3, 0, 0, 4, 4)];
        let (sec, sub) = (secondary(&bridges), subordinate(&bridges));
        let unit_of = |seg, dev| d.drhd_for(seg, dev, &sec, &sub).map(|u| u.register_base);
        assert_eq!(unit_of(0, bdf(0, 2, 0)), Some(0xfed9_0000));
        assert_eq!(unit_of(0, bdf(0, 0x1c, 0)), Some(0xfed9_0000));
        assert_eq!(unit_of(0, bdf(3, 0, 0)), Some(0xfed9_0000));
        assert_eq!(unit_of(0, bdf(4, 0, 0)), Some(0xfed9_0000));
        assert_eq!(unit_of(0, bdf(0, 2, 1)), Some(0xfed9_1000));
        assert_eq!(unit_of(0, bdf(5, 0, 0)), Some(0xfed9_1000));
        assert_eq!(unit_of(0, bdf(0, 0x1f, 0)), Some(0xfed9_1000));
        assert_eq!(unit_of(1, bdf(0, 2, 0)), None);
        // Without config space the sub-hierarchy cannot be placed, so its
        // devices fall to the INCLUDE_PCI_ALL unit; the bridge itself too.
        let unit = d.drhd_for(0, bdf(3, 0, 0), &no_bridge, &no_bridge);
        assert_eq!(unit.map(|u| u.register_base), Some(0xfed9_1000));
        assert!(d
            .to_string()
            .contains("flags 0x07 (INTR_REMAP|X2APIC_OPT_OUT|DMA_CTRL_PLATFORM_OPT_IN)"));
        assert!(d
            .to_string()
            .contains("[0x048] hpet id 0 00:1f.0 (path 1f.0)"));
    }

    #[test]
    fn every_other_structure() {
        let mut rmrr = vec![0, 0, 0, 0];
        rmrr.extend_from_slice(&0x7c00_0000u64.to_le_bytes());
        rmrr.extend_from_slice(&0x7c7f_ffffu64.to_le_bytes());
        let mut rhsa = vec![0; 4];
        rhsa.extend_from_slice(&0xfed9_1000u64.to_le_bytes());
        rhsa.extend_from_slice(&1u32.to_le_bytes());
        let mut sidp_scope = scope(1, 0, 0, &[(0x0b, 0)]);
        sidp_scope[2] = DeviceScope::ATC_REQUIRED | DeviceScope::REQ_WO_PASID_NESTED_NOTALLOWED;
        let t = table(
            45,
            0,
            &[
                drhd(1, 0, 0xfed9_1000, &[scope(5, 1, 0, &[(0x15, 0)])]),
                structure(
                    1,
                    &rmrr,
                    &[scope(1, 0, 0, &[(0x14, 0)]), scope(2, 0, 0, &[(0x1c, 0)])],
                ),
                flags_segment(2, 0, 0, &[scope(2, 0, 0, &[(0x1c, 0)])]),
                structure(3, &rhsa, &[]),
                structure(4, b"\0\0\0\x01\\_SB.PCI0.I2C0\0", &[]),
                flags_segment(5, Satc::ATC_REQUIRED, 0, &[scope(1, 0, 0, &[(2, 0)])]),
                structure(6, &[0, 0, 0, 0], &[sidp_scope]),
                structure(0x1234, &[9, 9], &[]),
            ],
        );
        let d = parse(&t).unwrap();
        use ScopeType::*;
        let mut flagged = sc(0xc3, PciEndpoint, 0, 0, &[(0x0b, 0)]);
        flagged.flags = 0x11;
        let rmrr = Rmrr {
            offset: 0x48,
            segment: 0,
            base: 0x7c00_0000,
            limit: 0x7c7f_ffff,
            scopes: vec![
                sc(0x60, PciEndpoint, 0, 0, &[(0x14, 0)]),
                sc(0x68, PciSubHierarchy, 0, 0, &[(0x1c, 0)]),
            ],
        };
        let expect = [
            Structure::Drhd(Drhd {
                offset: 0x30,
                flags: 1,
                size: 0,
                segment: 0,
                register_base: 0xfed9_1000,
                scopes: vec![sc(0x40, AcpiNamespace, 1, 0, &[(0x15, 0)])],
            }),
            Structure::Rmrr(rmrr.clone()),
            Structure::Atsr(Atsr {
                offset: 0x70,
                flags: 0,
                segment: 0,
                scopes: vec![sc(0x78, PciSubHierarchy, 0, 0, &[(0x1c, 0)])],
            }),
            Structure::Rhsa(Rhsa {
                offset: 0x80,
                register_base: 0xfed9_1000,
                proximity_domain: 1,
            }),
            Structure::Andd(Andd {
                offset: 0x94,
                device_number: 1,
                name: "\\_SB.PCI0.I2C0".into(),
            }),
            Structure::Satc(Satc {
                offset: 0xab,
                flags: 1,
                segment: 0,
                scopes: vec![sc(0xb3, PciEndpoint, 0, 0, &[(2, 0)])],
            }),
            Structure::Sidp(Sidp {
                offset: 0xbb,
                segment: 0,
                scopes: vec![flagged],
            }),
            Structure::Unknown {
                offset: 0xcb,
                r#type: 0x1234,
                length: 6,
            },
        ];
        assert_eq!(d.structures.len(), expect.len());
        for (got, want) in d.structures.iter().zip(&expect) {
            assert_eq!(got, want);
        }
        assert_eq!(rmrr.size(), Some(0x80_0000));
        assert_eq!(d.andd(1).map(|a| a.name.as_str()), Some("\\_SB.PCI0.I2C0"));

        let bridges = [(0, 0x1c, 0, 2, 6)];
        let (sec, sub) = (secondary(&bridges), subordinate(&bridges));
        assert_eq!(d.rmrrs_for(0, bdf(0, 0x14, 0), &sec, &sub), [&rmrr]);
        assert_eq!(d.rmrrs_for(0, bdf(6, 0, 0), &sec, &sub), [&rmrr]);
        assert!(d.rmrrs_for(0, bdf(7, 0, 0), &sec, &sub).is_empty());
        assert!(d.rmrrs_for(1, bdf(0, 0x14, 0), &sec, &sub).is_empty());
        // The namespace device's pseudo-BDF is not a PCI device of the unit...
        // but the unit includes all PCI devices anyway.
        assert!(d.drhd_for(0, bdf(0, 0x15, 0), &sec, &sub).is_some());

        let text = d.to_string();
        for part in [
            "[0x040] acpi-namespace id 1 00:15.0 (path 15.0) = \\_SB.PCI0.I2C0",
            "[0x048] RMRR segment 0x0000 base 0x7c000000 limit 0x7c7fffff",
            "[0x070] ATSR flags 0x00 segment 0x0000",
            "[0x080] RHSA register base 0xfed91000 proximity domain 0x1",
            "[0x094] ANDD device number 1 name \"\\\\_SB.PCI0.I2C0\"",
            "[0x0ab] SATC flags 0x01 (ATC_REQUIRED) segment 0x0000",
            "[0x0bb] SIDP segment 0x0000",
            "[0x0c3] endpoint 00:0b.0 (path 0b.0) flags 0x11 \
             (REQ_WO_PASID_NESTED_NOTALLOWED|ATC_REQUIRED)",
            "[0x0cb] unknown type 4660 length 6",
        ] {
            assert!(text.contains(part), "{part:?} not in\n{text}");
        }
    }

    #[test]
    fn resolve_through_bridges() {
        let d = parse(&q35(false)).unwrap();
        // 00:1c.0 -> bus 3; 03:00.0 -> bus 4; 04:02.1 is the device.
        let bridges = [(0, 0x1c, 0, 3, 5), (3, 0, 0, 4, 4)];
        let sec = secondary(&bridges);
        let one = sc(0, ScopeType::PciEndpoint, 0, 0, &[(0x1c, 0), (0, 0)]);
        assert_eq!(d.resolve_scope(0, &one, &sec), Ok(bdf(3, 0, 0)));
        let two = sc(
            0,
            ScopeType::PciEndpoint,
            0,
            0,
            &[(0x1c, 0), (0, 0), (2, 1)],
        );
        assert_eq!(d.resolve_scope(0, &two, &sec), Ok(bdf(4, 2, 1)));
        // No bridge at the first hop in another segment, or at all.
        assert_eq!(
            d.resolve_scope(1, &two, &sec),
            Err(ResolveError::NoSecondaryBus {
                bridge: bdf(0, 0x1c, 0)
            })
        );
        assert_eq!(
            two.resolve(0, &no_bridge),
            Err(ResolveError::NoSecondaryBus {
                bridge: bdf(0, 0x1c, 0)
            })
        );
        let empty = sc(0, ScopeType::PciEndpoint, 0, 0, &[]);
        assert_eq!(empty.resolve(0, &sec), Err(ResolveError::EmptyPath));
        let bad = sc(0, ScopeType::PciEndpoint, 0, 0, &[(0x1c, 0), (32, 0)]);
        assert_eq!(
            bad.resolve(0, &sec),
            Err(ResolveError::BadPathEntry { index: 1 })
        );
        assert_eq!(
            ResolveError::NoSecondaryBus {
                bridge: bdf(0, 0x1c, 0)
            }
            .to_string(),
            "no bridge at 00:1c.0 on the device scope's path"
        );

        // A unit whose scopes reach through two bridges: an endpoint, and
        // a sub-hierarchy under 03:00.0 (buses 4..=4).
        let t = table(
            47,
            0,
            &[drhd(
                0,
                0,
                0xfed9_0000,
                &[
                    scope(1, 0, 0, &[(0x1c, 0), (0, 0), (2, 1)]),
                    scope(2, 0, 0, &[(0x1c, 0), (0, 0)]),
                ],
            )],
        );
        let d = parse(&t).unwrap();
        let sub = subordinate(&bridges);
        let found = |dev| d.drhd_for(0, dev, &sec, &sub).is_some();
        assert!(found(bdf(4, 2, 1)));
        assert!(found(bdf(4, 7, 0)));
        assert!(found(bdf(3, 0, 0)));
        assert!(!found(bdf(3, 1, 0)));
        assert!(!found(bdf(5, 0, 0)));
        assert!(d
            .to_string()
            .contains("endpoint bus 00 (path 1c.0 -> 00.0 -> 02.1)"));
    }

    /// The error a table gives, as (offset, kind).
    fn error(t: &[u8]) -> (usize, ErrorKind) {
        let e = parse(t).unwrap_err();
        assert_eq!(e.table, *b"DMAR");
        (e.offset, e.kind)
    }

    fn bad_value(offset: usize, t: &[u8]) -> u64 {
        match error(t) {
            (o, ErrorKind::BadValue { value, .. }) if o == offset => value,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_errors() {
        let t = q35(false);
        assert_eq!(
            error(&t[..6]),
            (4, ErrorKind::Truncated { need: 4, have: 2 })
        );
        assert!(matches!(error(&t[..60]).1, ErrorKind::BadLength { .. }));
        let mut other = t.clone();
        other[0..4].copy_from_slice(b"IVRS");
        assert_eq!(
            error(&other),
            (0, ErrorKind::BadSignature { found: *b"IVRS" })
        );
        let mut sum = t.clone();
        sum[0x38] ^= 1;
        assert!(matches!(error(&sum), (9, ErrorKind::BadChecksum { .. })));
        // A header that ends inside the width, flags and reserved bytes.
        let short = make_table(b"DMAR", 1, &[47, 1, 0, 0]);
        assert_eq!(
            error(&short),
            (38, ErrorKind::Truncated { need: 10, have: 2 })
        );
        let short = make_table(b"DMAR", 1, &[]);
        assert_eq!(
            error(&short),
            (36, ErrorKind::Truncated { need: 1, have: 0 })
        );
        assert_eq!(bad_value(36, &table(10, 0, &[])), 10);
        // No structures at all is a valid (if useless) table.
        assert_eq!(parse(&table(47, 0, &[])).unwrap().structures, []);
    }

    #[test]
    fn structure_errors() {
        let unit = drhd(0, 0, 0xfed9_0000, &[scope(1, 0, 0, &[(3, 0)])]);
        // Past the table: the length says 24, 20 bytes are left.
        let t = table(47, 0, &[unit[..20].to_vec()]);
        assert_eq!(error(&t), (48, ErrorKind::Truncated { need: 24, have: 20 }));
        // Zero length (would loop), and below each type's fixed part.
        for (ty, len) in [
            (0u16, 0u16),
            (0, 15),
            (1, 23),
            (2, 7),
            (3, 19),
            (4, 7),
            (5, 7),
            (6, 7),
            (99, 3),
        ] {
            let mut s = ty.to_le_bytes().to_vec();
            s.extend_from_slice(&len.to_le_bytes());
            s.resize(32, 0);
            let t = table(47, 0, &[s]);
            let length = len.into();
            assert_eq!(
                error(&t),
                (48, ErrorKind::BadEntryLength { length }),
                "{ty}"
            );
        }
        // Two or three stray bytes after the last structure.
        let t = table(47, 0, &[unit.clone(), vec![0, 0]]);
        assert_eq!(error(&t), (72, ErrorKind::Truncated { need: 4, have: 2 }));
        let t = table(47, 0, &[unit.clone(), vec![0, 0, 8]]);
        assert_eq!(error(&t), (72, ErrorKind::Truncated { need: 4, have: 3 }));
        // Values no table may hold.
        assert_eq!(bad_value(56, &table(47, 0, &[drhd(0, 0, 0, &[])])), 0);
        let mut rmrr = vec![0; 4];
        rmrr.extend_from_slice(&0x2000u64.to_le_bytes());
        rmrr.extend_from_slice(&0x1fffu64.to_le_bytes());
        assert_eq!(
            bad_value(64, &table(47, 0, &[structure(1, &rmrr, &[])])),
            0x1fff
        );
        let all = drhd(1, 2, 0xfed9_0000, &[]);
        let t = table(
            47,
            0,
            &[all.clone(), drhd(1, 3, 0xfed9_1000, &[]), all.clone()],
        );
        assert_eq!(bad_value(48 + 32 + 4, &t), 2);
    }

    #[test]
    fn scope_errors() {
        let with = |scope: Vec<u8>| table(47, 0, &[drhd(0, 0, 0xfed9_0000, &[scope])]);
        // The scope header does not fit in what is left of the structure.
        let t = with(vec![1, 6, 0, 0]);
        assert_eq!(error(&t), (64, ErrorKind::Truncated { need: 6, have: 4 }));
        // Its length runs past the structure.
        let mut s = scope(1, 0, 0, &[(3, 0)]);
        s[1] = 10;
        assert_eq!(
            error(&with(s)),
            (64, ErrorKind::Truncated { need: 10, have: 8 })
        );
        // Zero and too small.
        for len in [0u8, 5] {
            let mut s = scope(1, 0, 0, &[(3, 0)]);
            s[1] = len;
            let length = len.into();
            assert_eq!(error(&with(s)), (64, ErrorKind::BadEntryLength { length }));
        }
        // Half a path hop.
        let mut s = scope(1, 0, 0, &[(3, 0)]);
        s[1] = 7;
        assert_eq!(bad_value(64, &with(s)), 7);
        // A hop that is no device/function.
        assert_eq!(bad_value(70, &with(scope(1, 0, 0, &[(32, 0)]))), 32 << 8);
        assert_eq!(
            bad_value(72, &with(scope(1, 0, 0, &[(1, 0), (3, 8)]))),
            0x308
        );
        // A structure whose length stops inside its last scope: the scope
        // reads as running past the structure, not into the next one.
        let mut lying = drhd(0, 0, 0xfed9_0000, &[scope(1, 0, 0, &[(3, 0), (0, 0)])]);
        lying[2] -= 2;
        let t = table(47, 0, &[lying, vec![2, 0, 8, 0, 1, 0, 0, 0]]);
        assert_eq!(error(&t), (64, ErrorKind::Truncated { need: 10, have: 8 }));
        // An empty path is kept (nothing to resolve), reserved types too.
        let d = parse(&with(scope(9, 0, 0, &[]))).unwrap();
        let unit = d.drhds().next().unwrap();
        assert_eq!(unit.scopes[0].scope_type, ScopeType::Reserved(9));
        assert!(d
            .to_string()
            .contains("reserved type 9 id 0 bus 00 (empty path)"));
    }

    /// QEMU 10.0's own tables (fixtures/capture.sh): `-M q35 -device
    /// intel-iommu,intremap=on` and, for device-iotlb, `-device
    /// intel-iommu,x-scalable-mode=on,aw-bits=48,device-iotlb=on`.
    #[test]
    fn qemu_fixtures() {
        let plain = include_bytes!("../fixtures/q35-intel-iommu/DMAR.bin");
        let iotlb = include_bytes!("../fixtures/q35-device-iotlb/DMAR.bin");
        use ScopeType::*;
        let unit = Drhd {
            offset: 0x30,
            flags: 0,
            size: 0,
            segment: 0,
            register_base: 0xfed9_0000,
            scopes: vec![
                sc(0x40, IoApic, 0, 0xff, &[(0, 0)]),
                sc(0x48, PciEndpoint, 0, 0, &[(0, 0)]),
                sc(0x50, PciEndpoint, 0, 0, &[(0x1f, 0)]),
                sc(0x58, PciEndpoint, 0, 0, &[(0x1f, 2)]),
                sc(0x60, PciEndpoint, 0, 0, &[(0x1f, 3)]),
            ],
        };
        for (bytes, length, checksum) in [(&plain[..], 0x68, 0x39), (&iotlb[..], 0x70, 0x26)] {
            let d = parse(bytes).unwrap();
            let h = &d.header;
            assert_eq!((h.length, h.revision, h.checksum), (length, 1, checksum));
            assert_eq!(
                (h.oem_id.as_str(), h.oem_table_id.as_str()),
                ("BOCHS ", "BXPC    ")
            );
            assert_eq!(
                (h.oem_revision, h.creator_id.as_str(), h.creator_revision),
                (1, "BXPC", 1)
            );
            assert_eq!((d.host_address_width, d.address_width_bits()), (47, 48));
            assert_eq!(d.flags, Dmar::INTR_REMAP);
            assert_eq!(d.structures[0], Structure::Drhd(unit.clone()));
            let ioapic = &unit.scopes[0];
            assert_eq!(d.resolve_scope(0, ioapic, &no_bridge), Ok(bdf(0xff, 0, 0)));
            for dev in [
                bdf(0, 0, 0),
                bdf(0, 0x1f, 0),
                bdf(0, 0x1f, 2),
                bdf(0, 0x1f, 3),
            ] {
                assert_eq!(d.drhd_for(0, dev, &no_bridge, &no_bridge), Some(&unit));
            }
            assert_eq!(d.drhd_for(0, bdf(0, 2, 0), &no_bridge, &no_bridge), None);
        }
        assert_eq!(parse(plain).unwrap().structures.len(), 1);
        let d = parse(iotlb).unwrap();
        let atsr = Atsr {
            offset: 0x68,
            flags: Atsr::ALL_PORTS,
            segment: 0,
            scopes: vec![],
        };
        assert_eq!(d.structures[1..], [Structure::Atsr(atsr)]);
    }

    /// Every byte of a table with every structure type, set to a few values
    /// (checksum fixed up), and every truncation: an error or a table,
    /// never a panic.
    #[test]
    fn mutations_never_panic() {
        let mut base = q35(true);
        let extra = [
            structure(1, &[0; 20], &[scope(1, 0, 0, &[(1, 0), (2, 0)])]),
            structure(3, &[0; 16], &[]),
            structure(4, b"\0\0\0\x01AB\0", &[]),
            flags_segment(5, 1, 0, &[scope(2, 0, 0, &[(1, 0)])]),
            structure(6, &[0; 4], &[scope(1, 0, 0, &[(1, 0)])]),
        ];
        let mut body = base[36..].to_vec();
        extra.iter().for_each(|s| body.extend_from_slice(s));
        base = make_table(b"DMAR", 1, &body);
        assert!(parse(&base).is_ok());
        let bridges = [(0, 1, 0, 1, 3), (1, 2, 0, 2, 2)];
        let (sec, sub) = (secondary(&bridges), subordinate(&bridges));
        for i in 36..base.len() {
            for v in [0, 1, 2, 5, 6, 7, 0x20, 0x7f, 0xff] {
                let mut t = base.clone();
                t[i] = v;
                fix_checksum(&mut t);
                if let Ok(d) = parse(&t) {
                    let _ = d.to_string();
                    let _ = d.drhd_for(0, bdf(2, 0, 0), &sec, &sub);
                    let _ = d.rmrrs_for(0, bdf(2, 0, 0), &sec, &sub);
                }
            }
        }
        for n in 36..base.len() {
            let mut t = base[..n].to_vec();
            t[4..8].copy_from_slice(&(n as u32).to_le_bytes());
            fix_checksum(&mut t);
            let _ = parse(&t);
        }
    }
}
