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

    /// The unit that translates `bdf`'s DMA (see [`Dmar::drhd_for`]), as
    /// its register base, and the source id the requests arrive with:
    /// the requester id.
    pub fn route(
        &self,
        segment: u16,
        bdf: Bdf,
        secondary_bus: &BusRead<'_>,
        subordinate_bus: &BusRead<'_>,
    ) -> Option<(u64, u16)> {
        let unit = self.drhd_for(segment, bdf, secondary_bus, subordinate_bus)?;
        let rid = u16::from(bdf.bus) << 8 | u16::from(bdf.device) << 3 | u16::from(bdf.function);
        Some((unit.register_base, rid))
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
mod tests;
