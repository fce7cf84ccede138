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
pub(crate) mod tests {
    use super::*;
    use crate::sdt::tests::make_table;
    use alloc::string::ToString;
    use alloc::vec;

    fn entry(base: u64, seg: u16, start: u8, end: u8) -> Vec<u8> {
        let mut e = base.to_le_bytes().to_vec();
        e.extend_from_slice(&seg.to_le_bytes());
        e.extend_from_slice(&[start, end, 0, 0, 0, 0]);
        e
    }

    fn mcfg(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![0u8; 8];
        for e in entries {
            body.extend_from_slice(e);
        }
        make_table(b"MCFG", 1, &body)
    }

    #[test]
    fn virt_high_ecam() {
        // QEMU virt, highmem ECAM: VIRT_HIGH_PCIE_ECAM = 0x40_1000_0000, 256 MiB.
        let m = parse(&mcfg(&[entry(0x40_1000_0000, 0, 0, 0xff)])).unwrap();
        assert_eq!(m.header.revision, 1);
        assert_eq!(m.header.length, 60);
        assert_eq!(
            m.entries,
            [McfgEntry {
                offset: 44,
                base_address: 0x40_1000_0000,
                segment: 0,
                start_bus: 0,
                end_bus: 0xff
            }]
        );
        let e = &m.entries[0];
        assert_eq!(e.size(), 0x1000_0000);
        assert_eq!(e.config_address(1, 2, 3), Some(0x40_1011_3000));
        assert_eq!(e.config_address(0, 32, 0), None);
        assert_eq!(m.find(0, 0xff), Some(e));
        assert_eq!(m.find(1, 0), None);
        let s = m.to_string();
        assert!(s.contains("[0x002c] segment 0x0000 buses 0x00-0xff base 0x4010000000"));
    }

    #[test]
    fn q35_and_multi_segment() {
        // q35: MCH_HOST_BRIDGE_PCIEXBAR_DEFAULT 0xb0000000, 256 buses.
        let m = parse(&mcfg(&[
            entry(0xb000_0000, 0, 0, 0xff),
            entry(0x3f00_0000, 1, 0x10, 0x1f),
        ]))
        .unwrap();
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[0].base_address, 0xb000_0000);
        assert_eq!(m.entries[1].offset, 60);
        assert_eq!(m.entries[1].segment, 1);
        assert_eq!(m.entries[1].size(), 16 << 20);
        assert_eq!(m.entries[1].config_address(0x0f, 0, 0), None);
        assert_eq!(m.entries[1].config_address(0x10, 0, 0), Some(0x4000_0000));
        assert_eq!(m.find(1, 0x12).map(|e| e.offset), Some(60));
        // No entries at all is valid.
        assert!(parse(&mcfg(&[])).unwrap().entries.is_empty());
    }

    /// The header QEMU writes (`BOCHS `/`BXPC    `, OEM and creator
    /// revisions 1); the checksum is taken from the file. Shared by the
    /// MADT and SPCR fixture tests.
    pub(crate) fn qemu_header(sig: &[u8; 4], t: &[u8], revision: u8) -> SdtHeader {
        SdtHeader {
            signature: *sig,
            length: t.len() as u32,
            revision,
            checksum: t[9],
            oem_id: "BOCHS ".into(),
            oem_table_id: "BXPC    ".into(),
            oem_revision: 1,
            creator_id: "BXPC".into(),
            creator_revision: 1,
        }
    }

    /// Tables QEMU 10.0 built (fixtures/capture.sh).
    #[test]
    fn qemu_fixtures() {
        let virt: [&[u8]; 3] = [
            include_bytes!("../fixtures/virt-smmuv3/MCFG.bin"),
            include_bytes!("../fixtures/virt-no-its/MCFG.bin"),
            include_bytes!("../fixtures/virt-pxb/MCFG.bin"),
        ];
        let q35: [&[u8]; 2] = [
            include_bytes!("../fixtures/q35-intel-iommu/MCFG.bin"),
            include_bytes!("../fixtures/q35-device-iotlb/MCFG.bin"),
        ];
        for (tables, base) in [(&virt[..], 0x40_1000_0000), (&q35[..], 0xb000_0000)] {
            for t in tables {
                assert_eq!(
                    parse(t).unwrap(),
                    Mcfg {
                        header: qemu_header(b"MCFG", t, 1),
                        entries: vec![McfgEntry {
                            offset: 44,
                            base_address: base,
                            segment: 0,
                            start_bus: 0,
                            end_bus: 0xff
                        }]
                    }
                );
            }
        }
    }

    #[test]
    fn errors() {
        let mut body = vec![0u8; 8];
        body.extend_from_slice(&entry(0xb000_0000, 0, 0, 0xff)[..12]);
        let e = parse(&make_table(b"MCFG", 1, &body)).unwrap_err();
        assert_eq!((e.offset, e.kind), (4, ErrorKind::BadLength { length: 56 }));

        let e = parse(&mcfg(&[entry(0, 0, 0, 0xff), entry(0, 0, 5, 4)])).unwrap_err();
        assert_eq!(e.offset, 60 + 11);
        assert!(
            matches!(e.kind, ErrorKind::BadValue { value: 4, .. }),
            "{e}"
        );

        // Shorter than the reserved bytes.
        let e = parse(&make_table(b"MCFG", 1, &[0; 4])).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (36, ErrorKind::Truncated { need: 8, have: 4 })
        );
        assert!(matches!(
            parse(&make_table(b"APIC", 1, &[0; 8])).unwrap_err().kind,
            ErrorKind::BadSignature { .. }
        ));
    }
}
