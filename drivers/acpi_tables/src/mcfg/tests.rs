//! Tests of the MCFG parser, and `qemu_header`, the header of QEMU's captured
//! tables, which the MADT and SPCR tests share.

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
        include_bytes!("../../fixtures/virt-smmuv3/MCFG.bin"),
        include_bytes!("../../fixtures/virt-no-its/MCFG.bin"),
        include_bytes!("../../fixtures/virt-pxb/MCFG.bin"),
    ];
    let q35: [&[u8]; 2] = [
        include_bytes!("../../fixtures/q35-intel-iommu/MCFG.bin"),
        include_bytes!("../../fixtures/q35-device-iotlb/MCFG.bin"),
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
