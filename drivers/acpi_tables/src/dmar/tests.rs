//! Tests of the DMAR parser and of device-scope resolution through bridges:
//! hand-built tables, QEMU q35's tables, the captured fixtures, malformed
//! and mutated tables.

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
    let plain = include_bytes!("../../fixtures/q35-intel-iommu/DMAR.bin");
    let iotlb = include_bytes!("../../fixtures/q35-device-iotlb/DMAR.bin");
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

/// Two DRHDs in segment 0 (one with a device scope: a root port and the
/// buses below it; one INCLUDE_PCI_ALL for the rest) and a third, the
/// INCLUDE_PCI_ALL unit of segment 1: each function is routed to its own
/// unit, with its requester id as the source id.
#[test]
fn route_to_each_unit() {
    let t = table(
        38,
        0,
        &[
            drhd(0, 0, 0xfed9_1000, &[scope(2, 0, 0, &[(0x1c, 0)])]),
            drhd(1, 0, 0xfed9_0000, &[]),
            drhd(1, 1, 0xfed9_2000, &[]),
        ],
    );
    let d = parse(&t).unwrap();
    // 00:1c.0 is a root port with buses 3..=4 below it.
    let bridges = [(0, 0x1c, 0, 3, 4), (3, 0, 0, 4, 4)];
    let (sec, sub) = (secondary(&bridges), subordinate(&bridges));
    let route = |seg, dev| d.route(seg, dev, &sec, &sub);
    assert_eq!(route(0, bdf(0, 0x1c, 0)), Some((0xfed9_1000, 0x00e0)));
    assert_eq!(route(0, bdf(3, 0, 0)), Some((0xfed9_1000, 0x0300)));
    assert_eq!(route(0, bdf(4, 2, 1)), Some((0xfed9_1000, 0x0411)));
    assert_eq!(route(0, bdf(0, 2, 0)), Some((0xfed9_0000, 0x0010)));
    assert_eq!(route(0, bdf(5, 0, 0)), Some((0xfed9_0000, 0x0500)));
    assert_eq!(route(1, bdf(3, 0, 0)), Some((0xfed9_2000, 0x0300)));
    assert_eq!(route(2, bdf(0, 2, 0)), None, "no unit for segment 2");
}
