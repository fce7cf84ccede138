//! MCFG: where each PCI segment's ECAM (memory-mapped configuration space)
//! is. Layout from the PCI Firmware Specification 3.0, 4.1.2: the header,
//! 8 reserved bytes, then 16-byte allocation structures.
use crate::bytes::Bytes;
use crate::error::{ErrorKind, TableError};
use crate::sdt::{parse_table, SdtHeader, HEADER_LEN};
use alloc::vec::Vec;
use core::fmt;

/// Where the first allocation structure starts (header + 8 reserved bytes).
pub const ENTRIES_OFFSET: usize = HEADER_LEN + 8;
pub const ENTRY_LEN: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Mcfg {
    pub header: SdtHeader,
    pub entries: Vec<McfgEntry>,
}

/// One ECAM window: buses `start_bus..=end_bus` of `segment`, with bus
/// `start_bus` at `base_address` (the base is that of bus 0 in the spec's
/// terms; see [`McfgEntry::config_address`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct McfgEntry {
    /// Offset of the structure in the table.
    pub offset: usize,
    pub base_address: u64,
    pub segment: u16,
    pub start_bus: u8,
    pub end_bus: u8,
}

impl McfgEntry {
    /// Bytes of configuration space the window's buses occupy (1 MiB a bus).
    pub fn size(&self) -> u64 {
        // Saturating: the fields are public, so end < start is constructible.
        (u64::from(self.end_bus).saturating_sub(self.start_bus.into()) + 1) << 20
    }

    /// Address of the configuration space of `bus:device.function`, if the
    /// bus is in this window. The spec defines the base as the address bus 0
    /// would have, so a window starting at bus N begins N MiB above it.
    pub fn config_address(&self, bus: u8, device: u8, function: u8) -> Option<u64> {
        if bus < self.start_bus || bus > self.end_bus || device > 31 || function > 7 {
            return None;
        }
        let off = (u64::from(bus) << 20) | (u64::from(device) << 15) | (u64::from(function) << 12);
        self.base_address.checked_add(off)
    }
}

impl Mcfg {
    /// The window holding `bus` of `segment`.
    pub fn find(&self, segment: u16, bus: u8) -> Option<&McfgEntry> {
        self.entries
            .iter()
            .find(|e| e.segment == segment && (e.start_bus..=e.end_bus).contains(&bus))
    }
}

pub fn parse(data: &[u8]) -> Result<Mcfg, TableError> {
    let (header, b) = parse_table(data, Some(*b"MCFG"))?;
    // The reserved bytes must be there even with no entries.
    b.slice(HEADER_LEN, 8)?;
    let body = b.len() - ENTRIES_OFFSET;
    if !body.is_multiple_of(ENTRY_LEN) {
        return Err(b.err(
            4,
            ErrorKind::BadLength {
                length: b.len() as u64,
            },
        ));
    }
    let entries = (0..body / ENTRY_LEN)
        .map(|i| parse_entry(&b, ENTRIES_OFFSET + i * ENTRY_LEN))
        .collect::<Result<_, _>>()?;
    Ok(Mcfg { header, entries })
}

fn parse_entry(b: &Bytes<'_>, at: usize) -> Result<McfgEntry, TableError> {
    let e = McfgEntry {
        offset: at,
        base_address: b.u64(at)?,
        segment: b.u16(at + 8)?,
        start_bus: b.u8(at + 10)?,
        end_bus: b.u8(at + 11)?,
    };
    if e.end_bus < e.start_bus {
        return Err(b.err(
            at + 11,
            ErrorKind::BadValue {
                field: "end bus number (below start bus)",
                value: e.end_bus.into(),
            },
        ));
    }
    Ok(e)
}

impl fmt::Display for Mcfg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        writeln!(
            f,
            "MCFG rev {} oem {:?} {:?} length {:#x}: {} ECAM window(s)",
            h.revision,
            h.oem_id,
            h.oem_table_id,
            h.length,
            self.entries.len()
        )?;
        for e in &self.entries {
            writeln!(
                f,
                "  [{:#06x}] segment {:#06x} buses {:#04x}-{:#04x} base {:#x} size {:#x}",
                e.offset,
                e.segment,
                e.start_bus,
                e.end_bus,
                e.base_address,
                e.size()
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
