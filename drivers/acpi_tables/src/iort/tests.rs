//! Tests of the IORT parser and of the RID-to-SMMU/ITS resolver: hand-built
//! tables, QEMU virt's tables, the captured fixtures and corrupted inputs.

use super::*;
use crate::sdt::tests::{fix_checksum, make_table};
use alloc::string::ToString;
use alloc::vec;

fn put32(v: &mut Vec<u8>, x: u32) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn put64(v: &mut Vec<u8>, x: u64) {
    v.extend_from_slice(&x.to_le_bytes());
}

fn map(input: u32, count_minus_one: u32, output: u32, node: u32, flags: u32) -> [u32; 5] {
    [input, count_minus_one, output, node, flags]
}

/// A node: the 16-byte header, `fixed` (everything up to the mapping
/// array), then `maps`.
fn node(ty: u8, rev: u8, id: u32, fixed: &[u8], maps: &[[u32; 5]]) -> Vec<u8> {
    let len = NODE_HEADER_LEN + fixed.len() + ID_MAPPING_LEN * maps.len();
    let mut v = vec![ty];
    v.extend_from_slice(&(len as u16).to_le_bytes());
    v.push(rev);
    put32(&mut v, id);
    put32(&mut v, maps.len() as u32);
    let at = if maps.is_empty() {
        0
    } else {
        NODE_HEADER_LEN + fixed.len()
    };
    put32(&mut v, at as u32);
    v.extend_from_slice(fixed);
    maps.iter().flatten().for_each(|&x| put32(&mut v, x));
    v
}

fn table(rev: u8, nodes: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    put32(&mut body, nodes.len() as u32);
    put32(&mut body, IORT_HEADER_LEN as u32);
    put32(&mut body, 0);
    nodes.iter().for_each(|n| body.extend_from_slice(n));
    make_table(b"IORT", rev, &body)
}

fn its(id: u32, ids: &[u32]) -> Vec<u8> {
    let mut f = Vec::new();
    put32(&mut f, ids.len() as u32);
    ids.iter().for_each(|&i| put32(&mut f, i));
    node(NODE_ITS_GROUP, 1, id, &f, &[])
}

#[allow(clippy::too_many_arguments)]
fn smmuv3(
    rev: u8,
    id: u32,
    base: u64,
    flags: u32,
    gsiv: [u32; 4],
    idx: u32,
    maps: &[[u32; 5]],
) -> Vec<u8> {
    let mut f = Vec::new();
    put64(&mut f, base);
    put32(&mut f, flags);
    put32(&mut f, 0);
    put64(&mut f, 0x1234_0000); // VATOS
    put32(&mut f, 0); // generic model
    gsiv.iter().for_each(|&g| put32(&mut f, g));
    put32(&mut f, 7); // proximity domain
    put32(&mut f, idx);
    node(NODE_SMMU_V3, rev, id, &f, maps)
}

/// A root complex as QEMU writes it (rev 3, 36 bytes) or, with
/// `flags`, as E.f does (rev 4, 40 bytes).
fn rc(id: u32, segment: u32, flags: Option<u32>, maps: &[[u32; 5]]) -> Vec<u8> {
    let mut f = Vec::new();
    put32(&mut f, 1); // fully coherent
    f.extend_from_slice(&[0, 0, 0, 3]); // hints, reserved, CPM|DACS
    put32(
        &mut f,
        if flags.is_some() {
            RC_ATS_SUPPORTED | RC_PRI_SUPPORTED
        } else {
            0
        },
    );
    put32(&mut f, segment);
    f.push(64); // address size limit
    f.extend_from_slice(&[0x14, 0, 0]); // PASID caps (20 bits), reserved
    let rev = match flags {
        Some(fl) => {
            put32(&mut f, fl);
            4
        }
        None => 3,
    };
    node(NODE_ROOT_COMPLEX, rev, id, &f, maps)
}

const ITS: u32 = 0x30;
const SMMU: u32 = 0x48;
const RC: u32 = 0xa0;
const SMMU_BASE: u64 = 0x0905_0000;

/// `-M virt,iommu=smmuv3`: ITS group, SMMUv3 (GSIVs 106..=109), RC.
/// `rc_maps` are the root complex's mappings.
fn qemu_virt(rc_maps: &[[u32; 5]]) -> Vec<u8> {
    table(
        3,
        &[
            its(0, &[0]),
            smmuv3(
                4,
                1,
                SMMU_BASE,
                SMMU_V3_COHACC_OVERRIDE,
                [106, 107, 109, 108],
                0,
                &[map(0, 0xffff, 0, ITS, 0)],
            ),
            rc(2, 0, None, rc_maps),
        ],
    )
}

fn qemu_smmuv3() -> Vec<u8> {
    qemu_virt(&[map(0, 0xffff, 0, SMMU, 0)])
}

/// Sets the bytes at `at` and fixes the checksum.
fn patch(t: &[u8], at: usize, bytes: &[u8]) -> Vec<u8> {
    let mut t = t.to_vec();
    t[at..at + bytes.len()].copy_from_slice(bytes);
    fix_checksum(&mut t);
    t
}

fn err(t: &[u8]) -> (usize, ErrorKind) {
    let e = parse(t).unwrap_err();
    assert_eq!(e.table, *b"IORT");
    (e.offset, e.kind)
}

#[test]
fn qemu_virt_smmuv3_fields() {
    let t = qemu_smmuv3();
    let iort = parse(&t).unwrap();
    assert_eq!(iort.header.revision, 3);
    assert_eq!((iort.node_count, iort.node_offset), (3, 0x30));
    let offsets: Vec<u32> = iort.nodes.iter().map(|n| n.offset).collect();
    assert_eq!(offsets, [ITS, SMMU, RC]);

    let n = &iort.nodes[0];
    assert_eq!(
        (n.node_type, n.length, n.revision, n.identifier),
        (0, 24, 1, Some(0))
    );
    assert!(n.mappings.is_empty());
    assert_eq!(n.kind, NodeKind::ItsGroup(ItsGroup { its_ids: vec![0] }));

    let n = &iort.nodes[1];
    assert_eq!(
        (n.node_type, n.length, n.revision, n.identifier),
        (4, 88, 4, Some(1))
    );
    assert_eq!(n.mapping_offset, 68);
    assert_eq!(
        n.mappings,
        [IdMapping {
            input_base: 0,
            id_count: 0xffff,
            output_base: 0,
            output_reference: ITS,
            flags: 0
        }]
    );
    let NodeKind::SmmuV3(s) = &n.kind else {
        panic!("{:?}", n.kind)
    };
    assert_eq!(
        *s,
        SmmuV3 {
            base: SMMU_BASE,
            flags: 1,
            vatos_address: 0x1234_0000,
            model: 0,
            event_gsiv: 106,
            pri_gsiv: 107,
            gerr_gsiv: 109,
            sync_gsiv: 108,
            proximity_domain: Some(7),
            device_id_mapping_index: Some(0),
        }
    );
    assert!(s.cohacc_override());
    assert_eq!(s.httu_override(), 0);
    assert!(!s.proximity_domain_valid() && !s.device_id_mapping_valid());
    // All four interrupts are wired: the index names no MSI mapping.
    assert_eq!(n.msi_mapping_index(), None);

    let n = &iort.nodes[2];
    assert_eq!(
        (n.node_type, n.length, n.revision, n.identifier),
        (2, 56, 3, Some(2))
    );
    assert_eq!(n.mapping_offset, 36);
    let NodeKind::RootComplex(r) = &n.kind else {
        panic!("{:?}", n.kind)
    };
    assert_eq!(
        *r,
        RootComplex {
            memory: MemoryAccess {
                cache_coherency: 1,
                alloc_hints: 0,
                flags: 3
            },
            ats_attribute: 0,
            pci_segment: 0,
            address_size_limit: Some(64),
            pasid_capabilities: None,
            flags: None,
        }
    );
    assert_eq!(n.mappings[0].output_reference, SMMU);
}

#[test]
fn qemu_virt_smmuv3_resolves() {
    let iort = parse(&qemu_smmuv3()).unwrap();
    let r = iort.resolve_pci(0, 0x10).unwrap();
    assert_eq!(
        r,
        Route {
            origin: RC,
            input_id: 0x10,
            smmu: Some(SmmuTarget {
                node: SMMU,
                kind: SmmuKind::V3,
                base: SMMU_BASE,
                stream_id: 0x10
            }),
            msi: Some(MsiTarget {
                its_group: ITS,
                its_ids: vec![0],
                device_id: 0x10
            }),
        }
    );
    assert_eq!(
        iort.resolve_pci(0, 0xffff).unwrap().smmu.unwrap().stream_id,
        0xffff
    );
    assert_eq!(
        iort.resolve_pci(1, 0),
        Err(ResolveError::NoRootComplex { segment: 1 })
    );
    assert_eq!(
        iort.resolve_pci(0, 0x10000),
        Err(ResolveError::NoMapping {
            node: RC,
            id: 0x10000
        })
    );
    assert_eq!(iort.own_msi(SMMU), Ok(None));
    assert_eq!(
        iort.own_msi(ITS),
        Err(ResolveError::NoSuchNode { offset: ITS })
    );
    assert_eq!(
        iort.resolve_named("\\_SB.X", 0),
        Err(ResolveError::NoNamedComponent)
    );
}

#[test]
fn display_report() {
    let s = parse(&qemu_smmuv3()).unwrap().to_string();
    for line in [
        "IORT rev 3 oem \"BOCHS \" \"BXPC    \", 3 nodes at 0x30",
        "node @0x30: ITS group (type 0), rev 1, length 0x18, id 0x0",
        "  ITS ids: 0x0",
        "node @0x48: SMMUv3 (type 4), rev 4, length 0x58, id 0x1",
        "  base 0x9050000, flags 0x1 COHACC_OVERRIDE, VATOS 0x12340000, model 0x0",
        "  GSIV event 0x6a, PRI 0x6b, GERR 0x6d, sync 0x6c",
        "  input 0x0..0xffff -> output 0x0 @node 0x30",
        "node @0xa0: root complex (type 2), rev 3, length 0x38, id 0x2",
        "  input 0x0..0xffff -> output 0x0 @node 0x48",
    ] {
        assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
    }
}

/// QEMU with a bypassing pxb bus: RIDs of bus 0..0x7f go through the
/// SMMU, those of bus 0x80..0xff straight to the ITS.
#[test]
fn bypass_layout() {
    let t = qemu_virt(&[
        map(0, 0x7fff, 0, SMMU, 0),
        map(0x8000, 0x7fff, 0x8000, ITS, 0),
    ]);
    let iort = parse(&t).unwrap();
    let r = iort.resolve_pci(0, 0x7fff).unwrap();
    assert_eq!(r.smmu.map(|s| (s.node, s.stream_id)), Some((SMMU, 0x7fff)));
    assert_eq!(r.msi.map(|m| m.device_id), Some(0x7fff));
    let r = iort.resolve_pci(0, 0x8000).unwrap();
    assert_eq!(r.smmu, None);
    assert_eq!(
        r.msi,
        Some(MsiTarget {
            its_group: ITS,
            its_ids: vec![0],
            device_id: 0x8000
        })
    );
    assert_eq!(
        iort.resolve_pci(0, 0x8123).unwrap().msi.unwrap().device_id,
        0x8123
    );
    assert!(iort
        .to_string()
        .contains("  input 0x8000..0xffff -> output 0x8000 @node 0x30\n"));
}

/// `-M virt,iommu=smmuv3,its=off`: no ITS group, SMMU without mappings.
#[test]
fn no_its_layout() {
    let t = table(
        3,
        &[
            smmuv3(4, 0, SMMU_BASE, 1, [106, 107, 109, 108], 0, &[]),
            rc(1, 0, None, &[map(0, 0xffff, 0, 0x30, 0)]),
        ],
    );
    let iort = parse(&t).unwrap();
    assert_eq!(iort.nodes[0].mapping_offset, 0);
    let r = iort.resolve_pci(0, 8).unwrap();
    assert_eq!(r.smmu.map(|s| s.stream_id), Some(8));
    assert_eq!(r.msi, None);
    // And no SMMU either: a root complex without mappings.
    let t = table(3, &[rc(0, 0, None, &[])]);
    let r = parse(&t).unwrap().resolve_pci(0, 8).unwrap();
    assert_eq!((r.smmu, r.msi), (None, None));
}

const ITS_A: u32 = 0x30;
const ITS_B: u32 = 0x4c;
const SMMU1: u32 = 0x64;
const SMMU2: u32 = 0xd0;
const RC0: u32 = 0x140;
const RC1: u32 = 0x190;
const NC: u32 = 0x1c8;
const PMCG: u32 = 0x204;
const RMR: u32 = 0x240;
const UNKNOWN: u32 = 0x284;

/// Two segments, two ITS groups, an SMMUv3 whose MSIs go through a
/// DeviceID mapping, an SMMUv2, a named component, a PMCG, an RMR and a
/// node type from the future.
fn multi() -> Vec<u8> {
    let smmu1 = smmuv3(
        5,
        2,
        0x2b40_0000,
        SMMU_V3_COHACC_OVERRIDE
            | (2 << 1)
            | SMMU_V3_PROXIMITY_DOMAIN_VALID
            | SMMU_V3_DEVICEID_VALID,
        [0; 4],
        0,
        // Mapping 0 is the SMMU's own: it covers every StreamID, so only
        // skipping it gives the right DeviceIDs.
        &[
            map(0, 0xffff, 0x5_0000, ITS_A, 0),
            map(0, 0xffff, 0, ITS_A, 0),
        ],
    );
    let mut f = Vec::new();
    put64(&mut f, 0x4000_0000);
    put64(&mut f, 0x1_0000);
    put32(&mut f, 3); // MMU-500
    put32(&mut f, 3); // DVM, coherent walk
    put32(&mut f, 60);
    put32(&mut f, 1);
    put32(&mut f, 76);
    put32(&mut f, 1);
    put32(&mut f, 84);
    [40, 0, 41, 1, 42, 1, 43, 0]
        .iter()
        .for_each(|&x| put32(&mut f, x));
    let smmu2 = node(
        NODE_SMMU_V1V2,
        1,
        3,
        &f,
        &[map(0, 0xffff, 0x2_0000, ITS_B, 0)],
    );
    let mut f = Vec::new();
    put32(&mut f, 1 | (16 << 1)); // stall, 16 PASID bits
    put32(&mut f, 0);
    f.extend_from_slice(&[0xa, 0, 0, 1, 48]);
    f.extend_from_slice(b"\\_SB.DMA0\0\0");
    let nc = node(
        NODE_NAMED_COMPONENT,
        4,
        6,
        &f,
        &[map(0, 0, 0x4242, SMMU1, ID_SINGLE_MAPPING)],
    );
    let mut f = Vec::new();
    put64(&mut f, 0x2b42_0000);
    put32(&mut f, 0);
    put32(&mut f, SMMU1);
    put64(&mut f, 0x2b43_0000);
    let pmcg = node(
        NODE_PMCG,
        2,
        7,
        &f,
        &[map(0, 0, 0x7000, ITS_B, ID_SINGLE_MAPPING)],
    );
    let mut f = Vec::new();
    put32(&mut f, 1 | (5 << 2)); // remap permitted, normal WB
    put32(&mut f, 1);
    put32(&mut f, 28);
    put64(&mut f, 0x8000_0000);
    put64(&mut f, 0x1_0000);
    put32(&mut f, 0);
    let rmr = node(
        NODE_RMR,
        3,
        8,
        &f,
        &[map(0x42, 0, 0x42, SMMU1, ID_SINGLE_MAPPING)],
    );
    let unknown = node(0x7f, 0, 9, &[0xee; 4], &[]);
    table(
        6,
        &[
            its(0, &[0, 1]),
            its(1, &[2]),
            smmu1,
            smmu2,
            rc(
                4,
                0,
                Some(RC_FLAG_PASID_SUPPORTED),
                &[
                    map(0, 0xff, 0x1000, SMMU1, 0),
                    map(0x200, 0xff, 0x200, ITS_A, 0),
                ],
            ),
            rc(5, 1, None, &[map(0, 0xffff, 0, SMMU2, 0)]),
            nc,
            pmcg,
            rmr,
            unknown,
        ],
    )
}

#[test]
fn multi_fields() {
    let iort = parse(&multi()).unwrap();
    let offsets: Vec<u32> = iort.nodes.iter().map(|n| n.offset).collect();
    assert_eq!(
        offsets,
        [ITS_A, ITS_B, SMMU1, SMMU2, RC0, RC1, NC, PMCG, RMR, UNKNOWN]
    );
    let kind = |o: u32| &iort.node_at(o).unwrap().kind;

    assert_eq!(
        *kind(ITS_A),
        NodeKind::ItsGroup(ItsGroup {
            its_ids: vec![0, 1]
        })
    );
    let NodeKind::SmmuV3(s) = kind(SMMU1) else {
        panic!()
    };
    assert_eq!(s.httu_override(), 2);
    assert!(s.cohacc_override() && s.proximity_domain_valid() && s.device_id_mapping_valid());
    assert_eq!(iort.node_at(SMMU1).unwrap().msi_mapping_index(), Some(0));

    assert_eq!(
        *kind(SMMU2),
        NodeKind::SmmuV1V2(SmmuV1V2 {
            base: 0x4000_0000,
            span: 0x1_0000,
            model: 3,
            flags: 3,
            global_interrupts: [
                SmmuInterrupt { gsiv: 40, flags: 0 },
                SmmuInterrupt { gsiv: 41, flags: 1 }
            ],
            context_interrupts: vec![SmmuInterrupt { gsiv: 42, flags: 1 }],
            pmu_interrupts: vec![SmmuInterrupt { gsiv: 43, flags: 0 }],
        })
    );
    let NodeKind::RootComplex(r) = kind(RC0) else {
        panic!()
    };
    assert_eq!(r.ats_attribute, RC_ATS_SUPPORTED | RC_PRI_SUPPORTED);
    assert_eq!((r.pci_segment, r.address_size_limit), (0, Some(64)));
    assert_eq!(
        (r.pasid_capabilities, r.max_pasid_width(), r.flags),
        (Some(0x14), Some(20), Some(1))
    );
    assert_eq!(iort.node_at(RC0).unwrap().mapping_offset, 40);
    let NodeKind::RootComplex(r) = kind(RC1) else {
        panic!()
    };
    assert_eq!(
        (r.pci_segment, r.pasid_capabilities, r.flags),
        (1, None, None)
    );

    assert_eq!(
        *kind(NC),
        NodeKind::NamedComponent(NamedComponent {
            flags: 0x21,
            memory: MemoryAccess {
                cache_coherency: 0,
                alloc_hints: 0xa,
                flags: 1
            },
            address_size_limit: 48,
            name: "\\_SB.DMA0".into(),
        })
    );
    assert_eq!(
        *kind(PMCG),
        NodeKind::Pmcg(Pmcg {
            page0_base: 0x2b42_0000,
            overflow_gsiv: 0,
            node_reference: Some(SMMU1),
            page1_base: 0x2b43_0000,
        })
    );
    assert_eq!(
        *kind(RMR),
        NodeKind::Rmr(Rmr {
            flags: 0x15,
            ranges: vec![MemoryRange {
                base: 0x8000_0000,
                length: 0x1_0000
            }]
        })
    );
    let u = iort.node_at(UNKNOWN).unwrap();
    assert_eq!(
        u.kind,
        NodeKind::Unknown {
            node_type: 0x7f,
            length: 20
        }
    );
    assert_eq!((u.identifier, u.mappings.len()), (Some(9), 0));

    let s = iort.to_string();
    for line in [
        "  base 0x2b400000, flags 0x1d COHACC_OVERRIDE HTTU_OVERRIDE PXM_VALID DEVICEID_VALID, VATOS 0x12340000, model 0x0",
        "  input 0x0..0xffff -> output 0x50000 @node 0x30 [own MSI]",
        "  name \"\\\\_SB.DMA0\", flags 0x21, cache coherency 0x0, alloc hints 0xa, memory flags 0x1, address size limit 48",
        "  input 0x0..0x0 -> output 0x4242 @node 0x64 [single]",
        "  address size limit 64, PASID capabilities 0x14, flags 0x1",
        "  context GSIVs: 0x2a/0x1",
        "  range 0x80000000 length 0x10000",
        "node @0x284: unknown (type 127), rev 0, length 0x14, id 0x9",
    ] {
        assert!(s.lines().any(|l| l == line), "missing {line:?} in\n{s}");
    }
}

#[test]
fn multi_resolves() {
    let iort = parse(&multi()).unwrap();
    let smmu1 = |sid| {
        Some(SmmuTarget {
            node: SMMU1,
            kind: SmmuKind::V3,
            base: 0x2b40_0000,
            stream_id: sid,
        })
    };
    let its_a = |dev| {
        Some(MsiTarget {
            its_group: ITS_A,
            its_ids: vec![0, 1],
            device_id: dev,
        })
    };

    let r = iort.resolve_pci(0, 0x5).unwrap();
    assert_eq!((r.origin, r.input_id), (RC0, 5));
    assert_eq!((r.smmu, r.msi), (smmu1(0x1005), its_a(0x1005)));
    assert_eq!(iort.resolve_pci(0, 0xff).unwrap().msi, its_a(0x10ff));
    assert_eq!(
        iort.resolve_pci(0, 0x100),
        Err(ResolveError::NoMapping {
            node: RC0,
            id: 0x100
        })
    );
    let r = iort.resolve_pci(0, 0x210).unwrap();
    assert_eq!((r.smmu, r.msi), (None, its_a(0x210)));
    assert_eq!(
        iort.resolve_pci(0, 0x300),
        Err(ResolveError::NoMapping {
            node: RC0,
            id: 0x300
        })
    );

    let r = iort.resolve_pci(1, 0x300).unwrap();
    assert_eq!(
        r.smmu,
        Some(SmmuTarget {
            node: SMMU2,
            kind: SmmuKind::V1V2,
            base: 0x4000_0000,
            stream_id: 0x300
        })
    );
    assert_eq!(
        r.msi,
        Some(MsiTarget {
            its_group: ITS_B,
            its_ids: vec![2],
            device_id: 0x2_0300
        })
    );
    assert_eq!(
        iort.resolve_pci(2, 0),
        Err(ResolveError::NoRootComplex { segment: 2 })
    );

    // A single mapping ignores the input ID.
    for id in [0, 0x1234] {
        let r = iort.resolve_named("\\_SB.DMA0", id).unwrap();
        assert_eq!(
            (r.origin, r.smmu, r.msi),
            (NC, smmu1(0x4242), its_a(0x4242))
        );
    }

    assert_eq!(iort.own_msi(SMMU1), Ok(its_a(0x5_0000)));
    assert_eq!(
        iort.own_msi(PMCG),
        Ok(Some(MsiTarget {
            its_group: ITS_B,
            its_ids: vec![2],
            device_id: 0x7000
        }))
    );
    assert_eq!(
        iort.own_msi(RC0),
        Err(ResolveError::NoSuchNode { offset: RC0 })
    );
}

#[test]
fn msi_mapping_index_rules() {
    let mut iort = parse(&qemu_smmuv3()).unwrap();
    let n = &mut iort.nodes[1];
    let NodeKind::SmmuV3(s) = &mut n.kind else {
        panic!()
    };
    // Before E.e: valid as soon as one interrupt is not a wired GSIV.
    s.pri_gsiv = 0;
    assert_eq!(n.msi_mapping_index(), Some(0));
    // The own mapping is not used for StreamIDs: none is left.
    assert_eq!(n.map_id(3), None);
    // From E.e (node revision 5) only with the flag.
    n.revision = 5;
    assert_eq!(n.msi_mapping_index(), None);
    let NodeKind::SmmuV3(s) = &mut n.kind else {
        panic!()
    };
    s.flags |= SMMU_V3_DEVICEID_VALID;
    assert_eq!(n.msi_mapping_index(), Some(0));
    // An index past the mappings names none.
    let NodeKind::SmmuV3(s) = &mut n.kind else {
        panic!()
    };
    s.device_id_mapping_index = Some(1);
    assert_eq!(n.msi_mapping_index(), None);
    // A single mapping in an SMMU node translates nothing.
    n.mappings[0].flags = ID_SINGLE_MAPPING;
    assert_eq!(n.map_id(3), None);
}

#[test]
fn old_revisions() {
    // Table revision 0: no identifiers; RC node revision 0: no address
    // size limit and a 32-byte node; SMMUv3 node revision 0: 60 bytes.
    let mut f = Vec::new();
    put32(&mut f, 1);
    f.extend_from_slice(&[0, 0, 0, 0]);
    put32(&mut f, 0);
    put32(&mut f, 0);
    let rc0 = node(NODE_ROOT_COMPLEX, 0, 0, &f, &[map(0, 0xffff, 0, 0x30, 0)]);
    let mut s = smmuv3(0, 0, SMMU_BASE, 0, [1, 2, 3, 4], 0, &[]);
    s.truncate(60);
    s[1..3].copy_from_slice(&60u16.to_le_bytes());
    let iort = parse(&table(0, &[s, rc0])).unwrap();
    assert!(iort.nodes.iter().all(|n| n.identifier.is_none()));
    let NodeKind::SmmuV3(s) = &iort.nodes[0].kind else {
        panic!()
    };
    assert_eq!(
        (s.sync_gsiv, s.proximity_domain, s.device_id_mapping_index),
        (4, None, None)
    );
    let NodeKind::RootComplex(r) = &iort.nodes[1].kind else {
        panic!()
    };
    assert_eq!(
        (r.address_size_limit, r.pasid_capabilities, r.flags),
        (None, None, None)
    );
    assert_eq!(iort.resolve_pci(0, 1).unwrap().smmu.unwrap().stream_id, 1);
    // Revision 7 reads, 8 does not.
    assert!(parse(&patch(&qemu_smmuv3(), 8, &[7])).is_ok());
    assert_eq!(
        err(&patch(&qemu_smmuv3(), 8, &[8])),
        (8, ErrorKind::UnknownRevision { revision: 8 })
    );
}

#[test]
fn truncated_table() {
    let t = qemu_smmuv3();
    assert!(matches!(
        parse(&t[..t.len() - 1]).unwrap_err().kind,
        ErrorKind::BadLength { .. }
    ));
    let short = make_table(b"IORT", 3, &[1, 0, 0, 0, 0x30, 0, 0, 0]);
    assert_eq!(err(&short), (44, ErrorKind::Truncated { need: 4, have: 0 }));
    assert_eq!(err(&t[..0]), (0, ErrorKind::Truncated { need: 4, have: 0 }));
    let empty = make_table(b"IORT", 3, &[0; 12]);
    assert_eq!(parse(&empty).unwrap().nodes, []);
}

#[test]
fn node_past_end() {
    let t = patch(&qemu_smmuv3(), RC as usize + 1, &0x100u16.to_le_bytes());
    assert_eq!(
        err(&t),
        (
            RC as usize,
            ErrorKind::Truncated {
                need: 0x100,
                have: 56
            }
        )
    );
}

#[test]
fn lying_node_count() {
    let t = patch(&qemu_smmuv3(), 36, &4u32.to_le_bytes());
    assert_eq!(err(&t), (36, ErrorKind::BadCount { count: 4 }));
    let t = patch(&qemu_smmuv3(), 36, &u32::MAX.to_le_bytes());
    assert_eq!(
        err(&t),
        (
            36,
            ErrorKind::BadCount {
                count: u32::MAX as u64
            }
        )
    );
    // A short count is fine: the rest is not read.
    let t = patch(&qemu_smmuv3(), 36, &1u32.to_le_bytes());
    assert_eq!(parse(&t).unwrap().nodes.len(), 1);
}

#[test]
fn bad_node_array_offset() {
    for bad in [0u32, 0x10, 0x2f, 0x1000] {
        let t = patch(&qemu_smmuv3(), 40, &bad.to_le_bytes());
        assert_eq!(err(&t), (40, ErrorKind::BadOffset { offset: bad as u64 }));
    }
}

#[test]
fn mapping_array_outside_node() {
    let at = SMMU as usize;
    let t = patch(&qemu_smmuv3(), at + 12, &0x100u32.to_le_bytes());
    assert_eq!(err(&t), (at + 12, ErrorKind::BadOffset { offset: 0x100 }));
    // Inside the node header or the SMMUv3 fields.
    for inside in [8u32, 64] {
        let t = patch(&qemu_smmuv3(), at + 12, &inside.to_le_bytes());
        assert_eq!(
            err(&t),
            (
                at + 12,
                ErrorKind::BadOffset {
                    offset: inside as u64
                }
            )
        );
    }
    // Starting inside but running past the node.
    let t = patch(&qemu_smmuv3(), at + 12, &72u32.to_le_bytes());
    assert_eq!(err(&t), (at + 8, ErrorKind::BadCount { count: 1 }));
    let t = patch(&qemu_smmuv3(), at + 8, &2u32.to_le_bytes());
    assert_eq!(err(&t), (at + 8, ErrorKind::BadCount { count: 2 }));
    let t = patch(&qemu_smmuv3(), at + 8, &u32::MAX.to_le_bytes());
    assert_eq!(
        err(&t),
        (
            at + 8,
            ErrorKind::BadCount {
                count: u32::MAX as u64
            }
        )
    );
}

#[test]
fn dangling_reference() {
    let field = RC as usize + 36 + 12;
    let t = patch(&qemu_smmuv3(), field, &0x50u32.to_le_bytes());
    assert_eq!(
        err(&t),
        (field, ErrorKind::DanglingReference { offset: 0x50 })
    );
    let t = patch(&qemu_smmuv3(), field, &0u32.to_le_bytes());
    assert_eq!(err(&t), (field, ErrorKind::DanglingReference { offset: 0 }));
    // PMCG node reference.
    let t = patch(&multi(), PMCG as usize + 28, &0x31u32.to_le_bytes());
    assert_eq!(
        err(&t),
        (
            PMCG as usize + 28,
            ErrorKind::DanglingReference { offset: 0x31 }
        )
    );
}

#[test]
fn reference_loop() {
    // An ITS group mapping back to the SMMU that maps to it.
    let its_node = node(
        NODE_ITS_GROUP,
        1,
        0,
        &[1, 0, 0, 0, 0, 0, 0, 0],
        &[map(0, 0xffff, 0, 0x5c, 0)],
    );
    let smmu = smmuv3(
        4,
        1,
        SMMU_BASE,
        0,
        [1, 2, 3, 4],
        0,
        &[map(0, 0xffff, 0, 0x30, 0)],
    );
    let r = rc(2, 0, None, &[map(0, 0xffff, 0, 0x5c, 0)]);
    let t = table(3, &[its_node, smmu, r]);
    assert_eq!(err(&t), (0x30, ErrorKind::ReferenceLoop { depth: 3 }));
    // A node mapping to itself.
    let t = patch(&qemu_smmuv3(), SMMU as usize + 68 + 12, &SMMU.to_le_bytes());
    assert_eq!(
        err(&t),
        (SMMU as usize, ErrorKind::ReferenceLoop { depth: 3 })
    );
}

#[test]
fn resolver_bounds_hand_built_loops() {
    let mut iort = parse(&qemu_smmuv3()).unwrap();
    iort.nodes[1].mappings[0].output_reference = SMMU;
    assert_eq!(
        iort.resolve_pci(0, 1),
        Err(ResolveError::DepthExceeded { depth: MAX_DEPTH })
    );
    iort.nodes[2].mappings[0].output_reference = 0x99;
    assert_eq!(
        iort.resolve_pci(0, 1),
        Err(ResolveError::DanglingReference {
            node: RC,
            reference: 0x99
        })
    );
    assert!(iort
        .resolve_pci(0, 1)
        .unwrap_err()
        .to_string()
        .contains("0x99"));
}

#[test]
fn node_length_below_minimum() {
    let t = qemu_smmuv3();
    for (at, len) in [(SMMU, 60u16), (SMMU, 0), (RC, 35), (ITS, 19), (ITS, 15)] {
        let t = patch(&t, at as usize + 1, &len.to_le_bytes());
        assert_eq!(
            err(&t),
            (
                at as usize + 1,
                ErrorKind::BadEntryLength { length: len as u64 }
            )
        );
    }
    // An unknown type needs only its header.
    let t = table(3, &[node(0x42, 0, 0, &[], &[])]);
    assert_eq!(
        parse(&t).unwrap().nodes[0].kind,
        NodeKind::Unknown {
            node_type: 0x42,
            length: 16
        }
    );
    let t = patch(&t, 0x31, &15u16.to_le_bytes());
    assert_eq!(err(&t), (0x31, ErrorKind::BadEntryLength { length: 15 }));
}

#[test]
fn node_array_errors() {
    // ITS count larger than the node.
    let t = patch(&qemu_smmuv3(), ITS as usize + 16, &2u32.to_le_bytes());
    assert_eq!(
        err(&t),
        (ITS as usize + 16, ErrorKind::BadCount { count: 2 })
    );
    // Named component name without NUL before its mapping array.
    let m = multi();
    let name = NC as usize + 16 + 13;
    let t = patch(&m, name, b"\\_SB.DMA0XX");
    assert!(matches!(err(&t), (o, ErrorKind::BadValue { value: 11, .. }) if o == name));
    // SMMUv2 context interrupts outside the node / too many of them.
    let t = patch(&m, SMMU2 as usize + 48, &200u32.to_le_bytes());
    assert_eq!(
        err(&t),
        (SMMU2 as usize + 48, ErrorKind::BadOffset { offset: 200 })
    );
    let t = patch(&m, SMMU2 as usize + 44, &5u32.to_le_bytes());
    assert_eq!(
        err(&t),
        (SMMU2 as usize + 44, ErrorKind::BadCount { count: 5 })
    );
    // Global interrupts pointing into the fixed fields.
    let t = patch(&m, SMMU2 as usize + 40, &20u32.to_le_bytes());
    assert_eq!(
        err(&t),
        (SMMU2 as usize + 40, ErrorKind::BadOffset { offset: 20 })
    );
    // RMR descriptors.
    let t = patch(&m, RMR as usize + 20, &3u32.to_le_bytes());
    assert_eq!(
        err(&t),
        (RMR as usize + 20, ErrorKind::BadCount { count: 3 })
    );
    let t = patch(&m, RMR as usize + 24, &4u32.to_le_bytes());
    assert_eq!(
        err(&t),
        (RMR as usize + 24, ErrorKind::BadOffset { offset: 4 })
    );
}

/// Every truncation and every byte value at every position (checksum
/// fixed): an error or a table, never a panic; what parses resolves.
#[test]
fn corrupt_tables_never_panic() {
    let pxb = include_bytes!("../../fixtures/virt-pxb/IORT.bin").to_vec();
    for t in [qemu_smmuv3(), multi(), pxb, rmr_table(5)] {
        let body = &t[HEADER_LEN..];
        for k in 0..body.len() {
            let _ = parse(&make_table(b"IORT", 6, &body[..k]));
        }
        for at in HEADER_LEN..t.len() {
            for v in [0u8, 1, 0x13, 0x30, 0x7f, 0x80, 0xff] {
                let c = patch(&t, at, &[v]);
                if let Ok(iort) = parse(&c) {
                    let _ = iort.to_string();
                    for (seg, rid) in [(0, 0), (0, 0x210), (1, 0x300), (0, u32::MAX)] {
                        let _ = iort.resolve_pci(seg, rid);
                    }
                    let _ = iort.resolve_named("\\_SB.DMA0", 1);
                    iort.nodes.iter().for_each(|n| {
                        let _ = iort.own_msi(n.offset);
                        for r in iort.reserved_for(n.offset) {
                            let _ = (r.each_stream_id().take(4).count(), r.covers(0x10));
                        }
                    });
                }
            }
        }
    }
}

/// QEMU 10.0's own tables (fixtures/capture.sh). They were captured
/// before anything numbered the PCI buses, so QEMU saw bus 0 only behind
/// the SMMU: RIDs 0..=0xff go through it, the rest straight to the ITS.
#[test]
fn qemu_fixtures() {
    let smmuv3 = include_bytes!("../../fixtures/virt-smmuv3/IORT.bin");
    let no_its = include_bytes!("../../fixtures/virt-no-its/IORT.bin");
    let pxb = include_bytes!("../../fixtures/virt-pxb/IORT.bin");
    // QEMU 10.0 writes the ITS group whatever the GIC: with GICv2 (whose
    // MADT has a v2m frame and no ITS) the IORT is byte for byte the same.
    assert_eq!(smmuv3, no_its);
    for t in [&smmuv3[..], &pxb[..]] {
        let iort = parse(t).unwrap();
        let h = &iort.header;
        assert_eq!(
            (h.revision, h.oem_id.as_str(), h.oem_table_id.as_str()),
            (3, "BOCHS ", "BXPC    ")
        );
        assert_eq!(
            (iort.node_count, iort.node_offset, iort.nodes.len()),
            (3, 0x30, 3)
        );
        let [its, smmu, rc] = &iort.nodes[..] else {
            panic!()
        };
        assert_eq!(
            (its.offset, its.node_type, its.length, its.revision),
            (ITS, 0, 0x18, 1)
        );
        assert_eq!((its.identifier, its.mappings.len()), (Some(0), 0));
        assert_eq!(its.kind, NodeKind::ItsGroup(ItsGroup { its_ids: vec![0] }));
        assert_eq!(
            (smmu.offset, smmu.node_type, smmu.length, smmu.revision),
            (SMMU, 4, 0x58, 4)
        );
        assert_eq!((smmu.identifier, smmu.mapping_offset), (Some(1), 68));
        assert_eq!(
            smmu.kind,
            NodeKind::SmmuV3(SmmuV3 {
                base: SMMU_BASE, // memmap[VIRT_SMMU]
                flags: SMMU_V3_COHACC_OVERRIDE,
                vatos_address: 0,
                model: 0,
                // irqmap[VIRT_SMMU] = 74, plus the 32 SGIs/PPIs
                event_gsiv: 106,
                pri_gsiv: 107,
                gerr_gsiv: 109,
                sync_gsiv: 108,
                proximity_domain: Some(0),
                device_id_mapping_index: Some(0),
            })
        );
        assert_eq!(
            smmu.mappings,
            [IdMapping {
                input_base: 0,
                id_count: 0xffff,
                output_base: 0,
                output_reference: ITS,
                flags: 0
            }]
        );
        assert_eq!(smmu.msi_mapping_index(), None);
        assert_eq!(iort.own_msi(SMMU), Ok(None));
        assert_eq!(
            (
                rc.offset,
                rc.node_type,
                rc.revision,
                rc.identifier,
                rc.mapping_offset
            ),
            (RC, 2, 3, Some(2), 36)
        );
        assert_eq!(
            rc.kind,
            NodeKind::RootComplex(RootComplex {
                memory: MemoryAccess {
                    cache_coherency: 1,
                    alloc_hints: 0,
                    flags: 3
                },
                ats_attribute: 0,
                pci_segment: 0,
                address_size_limit: Some(64),
                pasid_capabilities: None,
                flags: None,
            })
        );
        // 00:01.0 through the SMMU, StreamID = DeviceID = RID.
        let r = iort.resolve_pci(0, 0x8).unwrap();
        assert_eq!(
            r.smmu,
            Some(SmmuTarget {
                node: SMMU,
                kind: SmmuKind::V3,
                base: SMMU_BASE,
                stream_id: 8
            })
        );
        assert_eq!(
            r.msi,
            Some(MsiTarget {
                its_group: ITS,
                its_ids: vec![0],
                device_id: 8
            })
        );
        assert_eq!(
            iort.resolve_pci(1, 0),
            Err(ResolveError::NoRootComplex { segment: 1 })
        );
    }

    let iort = parse(smmuv3).unwrap();
    let rc = &iort.nodes[2];
    assert_eq!(rc.length, 0x4c);
    let m = |input_base, id_count, output_reference| IdMapping {
        input_base,
        id_count,
        output_base: input_base,
        output_reference,
        flags: 0,
    };
    assert_eq!(rc.mappings, [m(0, 0xff, SMMU), m(0x100, 0xfeff, ITS)]);
    let r = iort.resolve_pci(0, 0x100).unwrap();
    assert_eq!((r.smmu, r.msi.map(|m| m.device_id)), (None, Some(0x100)));

    // The expander bus (0x80) adds a second RC -> SMMU range; without bus
    // numbers QEMU computed it as 0..=0x80ff, overlapping the others.
    // The first mapping that covers a RID wins, as in Linux.
    let iort = parse(pxb).unwrap();
    let rc = &iort.nodes[2];
    assert_eq!(rc.length, 0x60);
    assert_eq!(
        rc.mappings,
        [m(0, 0x80ff, SMMU), m(0, 0xff, SMMU), m(0x100, 0xfeff, ITS)]
    );
    assert_eq!(
        iort.resolve_pci(0, 0x8008)
            .unwrap()
            .smmu
            .map(|s| s.stream_id),
        Some(0x8008)
    );
    let r = iort.resolve_pci(0, 0x8100).unwrap();
    assert_eq!((r.smmu, r.msi.map(|m| m.device_id)), (None, Some(0x8100)));
}

/// COHACC comes from the node's flags: QEMU's captured table sets it,
/// the same table with the bit cleared reads as a non-coherent SMMU.
#[test]
fn smmuv3_cohacc_override_decoded() {
    let t = include_bytes!("../../fixtures/virt-smmuv3/IORT.bin");
    let cohacc = |t: &[u8]| {
        let iort = parse(t).unwrap();
        let NodeKind::SmmuV3(s) = &iort.node_at(SMMU).unwrap().kind else {
            panic!()
        };
        (s.cohacc_override(), s.httu_override())
    };
    assert_eq!(cohacc(t), (true, 0));
    // Flags at node offset 24: the other flags stay.
    let flags = u32::from_le_bytes(t[SMMU as usize + 24..][..4].try_into().unwrap());
    let cleared = patch(t, SMMU as usize + 24, &(flags & !1).to_le_bytes());
    assert_eq!(cohacc(&cleared), (false, 0));
    let httu = patch(t, SMMU as usize + 24, &(flags | 2 << 1).to_le_bytes());
    assert_eq!(cohacc(&httu), (true, 2));
}

fn rmr(id: u32, flags: u32, ranges: &[(u64, u64)], maps: &[[u32; 5]]) -> Vec<u8> {
    let mut f = Vec::new();
    put32(&mut f, flags);
    put32(&mut f, ranges.len() as u32);
    put32(&mut f, if ranges.is_empty() { 0 } else { 28 });
    for &(base, length) in ranges {
        put64(&mut f, base);
        put64(&mut f, length);
        put32(&mut f, 0);
    }
    node(NODE_RMR, 3, id, &f, maps)
}

const RMR_SMMU_A: u32 = 0x48;
const RMR_SMMU_B: u32 = 0xa0;
const RMR_RC: u32 = 0xf8;
const RMR1: u32 = 0x130;
const RMR2: u32 = 0x19c;

/// E.d (revision 5) with two SMMUs and two RMR nodes: RMR1 gives
/// StreamIDs 0x10..=0x13 of SMMU A and 7 of SMMU B two ranges; RMR2 gives
/// StreamID 0x20 of SMMU A one device-memory range, remapping forbidden.
fn rmr_table(rev: u8) -> Vec<u8> {
    let smmu = |id, base| {
        smmuv3(
            4,
            id,
            base,
            0,
            [1, 2, 3, 4],
            0,
            &[map(0, 0xffff, 0, ITS, 0)],
        )
    };
    table(
        rev,
        &[
            its(0, &[0]),
            smmu(1, 0x2b40_0000),
            smmu(2, 0x2b50_0000),
            rc(3, 0, None, &[map(0, 0xffff, 0, RMR_SMMU_A, 0)]),
            rmr(
                4,
                RMR_REMAP_PERMITTED | (5 << 2),
                &[(0x8000_0000, 0x1_0000), (0x8010_0000, 0x2000)],
                &[
                    map(0, 3, 0x10, RMR_SMMU_A, 0),
                    map(0, 0, 7, RMR_SMMU_B, ID_SINGLE_MAPPING),
                ],
            ),
            rmr(
                5,
                RMR_ACCESS_PRIVILEGED,
                &[(0x0900_0000, 0x1000)],
                &[map(0, 0, 0x20, RMR_SMMU_A, 0)],
            ),
        ],
    )
}

#[test]
fn rmr_nodes_parse_and_resolve_per_smmu() {
    let iort = parse(&rmr_table(5)).unwrap();
    let offsets: Vec<u32> = iort.nodes.iter().map(|n| n.offset).collect();
    assert_eq!(offsets, [ITS, RMR_SMMU_A, RMR_SMMU_B, RMR_RC, RMR1, RMR2]);
    let NodeKind::Rmr(r) = &iort.node_at(RMR1).unwrap().kind else {
        panic!()
    };
    assert!(r.remap_permitted() && !r.privileged());
    assert_eq!(r.access_attributes(), 5);
    let NodeKind::Rmr(r) = &iort.node_at(RMR2).unwrap().kind else {
        panic!()
    };
    assert!(!r.remap_permitted() && r.privileged());
    assert_eq!(r.access_attributes(), 0);

    let a = iort.reserved_for(RMR_SMMU_A);
    assert_eq!(
        a,
        [
            Reserved {
                rmr: RMR1,
                stream_ids: vec![(0x10, 0x13)],
                ranges: vec![
                    MemoryRange {
                        base: 0x8000_0000,
                        length: 0x1_0000
                    },
                    MemoryRange {
                        base: 0x8010_0000,
                        length: 0x2000
                    }
                ],
                flags: RMR_REMAP_PERMITTED | (5 << 2),
            },
            Reserved {
                rmr: RMR2,
                stream_ids: vec![(0x20, 0x20)],
                ranges: vec![MemoryRange {
                    base: 0x0900_0000,
                    length: 0x1000
                }],
                flags: RMR_ACCESS_PRIVILEGED,
            }
        ]
    );
    assert_eq!(
        a[0].each_stream_id().collect::<Vec<_>>(),
        [0x10, 0x11, 0x12, 0x13]
    );
    assert!(a[0].covers(0x13) && !a[0].covers(0x14) && !a[0].covers(7));
    let b = iort.reserved_for(RMR_SMMU_B);
    assert_eq!(b.len(), 1);
    assert_eq!((b[0].rmr, &b[0].stream_ids[..]), (RMR1, &[(7, 7)][..]));
    // Not an SMMU: nothing.
    assert!(iort.reserved_for(RMR_RC).is_empty());
    // Devices still resolve through the RC as before.
    let route = iort.resolve_pci(0, 0x10).unwrap();
    assert_eq!(
        route.smmu.map(|s| (s.node, s.stream_id)),
        Some((RMR_SMMU_A, 0x10))
    );
    assert!(iort
        .to_string()
        .contains("  range 0x80100000 length 0x2000"));
}

/// Before E.d the RMR layout was another (E.c is deprecated): such a
/// table's RMR nodes are parsed but reserve nothing, as in Linux.
#[test]
fn rmr_nodes_before_revision_5_are_not_used() {
    for rev in [3, 4] {
        let iort = parse(&rmr_table(rev)).unwrap();
        assert!(matches!(iort.node_at(RMR1).unwrap().kind, NodeKind::Rmr(_)));
        assert!(iort.reserved_for(RMR_SMMU_A).is_empty(), "revision {rev}");
    }
    assert_eq!(
        parse(&rmr_table(6)).unwrap().reserved_for(RMR_SMMU_A).len(),
        2
    );
}

#[test]
fn malformed_rmr_nodes_are_typed_errors() {
    let t = rmr_table(5);
    let bad = |field: &'static str, value: u64| ErrorKind::BadValue { field, value };
    // No ID mappings.
    let t2 = table(5, &[rmr(1, 0, &[(0x8000_0000, 0x1000)], &[])]);
    assert_eq!(err(&t2), (0x30 + 8, bad("RMR ID mapping count", 0)));
    // No ranges.
    let t2 = table(5, &[its(0, &[0]), rmr(1, 0, &[], &[map(0, 0, 1, ITS, 0)])]);
    assert_eq!(err(&t2), (0x48 + 20, bad("RMR memory range count", 0)));
    // A zero-length range (RMR1's second descriptor: node offset 28 + 20).
    let len2 = RMR1 as usize + 28 + 20 + 8;
    let t2 = patch(&t, len2, &0u64.to_le_bytes());
    assert_eq!(err(&t2), (len2, bad("RMR range length", 0)));
    // A range that wraps the address space.
    let base2 = RMR1 as usize + 28 + 20;
    let t2 = patch(&t, base2, &(u64::MAX - 0xfff).to_le_bytes());
    assert_eq!(
        err(&t2),
        (
            base2,
            bad("RMR range base (base + length wraps)", u64::MAX - 0xfff)
        )
    );
    // StreamIDs past u32::MAX: RMR1's first mapping (after its 2 ranges),
    // output base field.
    let maps = RMR1 as usize + 28 + 40;
    let t2 = patch(&t, maps + 8, &u32::MAX.to_le_bytes());
    assert_eq!(
        err(&t2),
        (
            maps + 8,
            bad("RMR StreamID range (wraps)", u64::from(u32::MAX))
        )
    );
    // A mapping to something that is not an SMMU: RMR2's to the RC.
    let reference = RMR2 as usize + 28 + 20 + 12;
    let t2 = patch(&t, reference, &RMR_RC.to_le_bytes());
    assert_eq!(
        err(&t2),
        (
            reference,
            bad(
                "RMR ID mapping output (not an SMMU node)",
                u64::from(RMR_RC)
            )
        )
    );
    // A dangling one stays what it was.
    let t2 = patch(&t, reference, &0x4444u32.to_le_bytes());
    assert_eq!(
        err(&t2),
        (reference, ErrorKind::DanglingReference { offset: 0x4444 })
    );
}

/// `fixtures/hand-built-rmr/IORT.bin` is this table (revision E.d, two
/// SMMUs, two RMR nodes): the fuzz targets' seed for the RMR paths, as
/// QEMU's tables have no RMR node. Regenerate it from `rmr_table(5)` when
/// that changes.
#[test]
fn the_rmr_fixture_is_the_hand_built_table() {
    let fixture = include_bytes!("../../fixtures/hand-built-rmr/IORT.bin");
    assert_eq!(fixture.as_slice(), rmr_table(5).as_slice());
}

/// What QEMU virt builds for two user-created SMMUv3s (`-device
/// arm-smmuv3,primary-bus=PXB` on two expander bridges, no machine-wide
/// SMMU): the root complex sends the root bus's RIDs straight to the
/// ITS, and each expander's bus range to its own SMMU, whose output goes
/// to the ITS.
fn two_smmuv3s() -> Vec<u8> {
    const SMMU_A: u32 = 0x48;
    const SMMU_B: u32 = 0xa0;
    let smmu = |id, base, gsiv| {
        smmuv3(
            4,
            id,
            base,
            SMMU_V3_COHACC_OVERRIDE,
            [gsiv, gsiv + 1, gsiv + 3, gsiv + 2],
            0,
            &[map(0, 0xffff, 0, ITS, 0)],
        )
    };
    table(
        3,
        &[
            its(0, &[0]),
            smmu(1, 0x0c00_0000, 80),
            smmu(2, 0x0c02_0000, 84),
            rc(
                3,
                0,
                None,
                &[
                    map(0, 0xb3ff, 0, ITS, 0),
                    map(0xb400, 0x27ff, 0xb400, SMMU_A, 0),
                    map(0xdc00, 0x23ff, 0xdc00, SMMU_B, 0),
                ],
            ),
        ],
    )
}

#[test]
fn two_smmuv3s_each_route_their_buses() {
    let iort = parse(&two_smmuv3s()).unwrap();
    let bases: Vec<u64> = iort
        .nodes
        .iter()
        .filter_map(|n| match &n.kind {
            NodeKind::SmmuV3(s) => Some(s.base),
            _ => None,
        })
        .collect();
    assert_eq!(bases, [0x0c00_0000, 0x0c02_0000]);
    // The root bus: no SMMU, MSIs straight to the ITS.
    assert_eq!(iort.smmuv3_route(0, 0x0030), None);
    let root = iort.resolve_pci(0, 0x0030).unwrap();
    assert_eq!(root.msi.map(|m| m.device_id), Some(0x30));
    // Each expander's buses: its own SMMU, the StreamID the RID.
    for (rid, base) in [
        (0xb400, 0x0c00_0000),
        (0xb518, 0x0c00_0000),
        (0xdbff, 0x0c00_0000),
        (0xdc00, 0x0c02_0000),
        (0xdd10, 0x0c02_0000),
        (0xffff, 0x0c02_0000),
    ] {
        assert_eq!(iort.smmuv3_route(0, rid), Some((base, rid)), "RID {rid:#x}");
        let msi = iort.resolve_pci(0, rid).unwrap().msi.unwrap();
        assert_eq!(msi.device_id, rid, "ITS DeviceID of RID {rid:#x}");
    }
    assert_eq!(iort.smmuv3_route(1, 0xb400), None, "no root complex");
}

#[test]
fn smmuv3_route_only_names_smmuv3s() {
    let iort = parse(&multi()).unwrap();
    assert_eq!(iort.smmuv3_route(0, 0x5), Some((0x2b40_0000, 0x1005)));
    // Behind an SMMUv1/v2, and straight to an ITS: no SMMUv3.
    assert!(iort.resolve_pci(1, 0x300).unwrap().smmu.is_some());
    assert_eq!(iort.smmuv3_route(1, 0x300), None);
    assert_eq!(iort.smmuv3_route(0, 0x210), None);
}
