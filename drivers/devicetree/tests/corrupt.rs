//! Hand-corrupted blobs give typed errors, never panics.
mod common;

use common::{cells, find, fixture, peek, poke, string, TNode};
use devicetree::*;

fn blob_err(blob: &[u8]) -> (usize, BlobError) {
    match Platform::parse(blob) {
        Err(DtError::Blob { offset, kind }) => (offset, kind),
        other => panic!("expected a blob error, got {other:?}"),
    }
}

/// Parses the real tree after `edit`, expecting an error at `path`/`property`.
fn node_err(edit: impl FnOnce(&mut TNode)) -> (String, Option<&'static str>, NodeError) {
    let mut t = TNode::fixture("virt-smmuv3");
    edit(&mut t);
    match Platform::parse(&t.to_blob()) {
        Err(DtError::Node {
            path,
            property,
            kind,
        }) => (path, property, kind),
        other => panic!("expected a node error, got {other:?}"),
    }
}

fn packed() -> Vec<u8> {
    TNode::fixture("virt-smmuv3").to_blob()
}

#[test]
fn truncated() {
    let b = fixture("virt-smmuv3");
    assert_eq!(
        blob_err(&b[..3]),
        (0, BlobError::Truncated { need: 8, have: 3 })
    );
    assert_eq!(
        blob_err(&b[..100]),
        (
            0,
            BlobError::Truncated {
                need: b.len() as u64,
                have: 100
            }
        )
    );
    assert_eq!(
        blob_err(&b[..b.len() - 1]),
        (
            0,
            BlobError::Truncated {
                need: b.len() as u64,
                have: b.len() - 1
            }
        )
    );
    assert_eq!(
        blob_size(&b[..7]),
        Err(DtError::Blob {
            offset: 0,
            kind: BlobError::Truncated { need: 8, have: 7 }
        })
    );
}

#[test]
fn bad_magic() {
    let mut b = packed();
    b[0] = 0xde;
    assert_eq!(
        blob_err(&b),
        (0, BlobError::BadMagic { found: 0xde0d_feed })
    );
    assert!(blob_size(&b).is_err());
}

#[test]
fn totalsize_lying() {
    let mut b = packed();
    let len = b.len();
    poke(&mut b, 4, 0x20_0000);
    assert_eq!(
        blob_err(&b),
        (
            0,
            BlobError::Truncated {
                need: 0x20_0000,
                have: len
            }
        )
    );
    // Smaller than the structure block's end.
    let (off_struct, size_struct) = (peek(&b, 8), peek(&b, 36));
    poke(&mut b, 4, 0x100);
    let want = BlobError::BadBlock {
        block: "structure",
        start: off_struct.into(),
        size: size_struct.into(),
    };
    assert_eq!(blob_err(&b), (8, want));
    poke(&mut b, 4, 12);
    assert_eq!(blob_err(&b), (4, BlobError::BadTotalSize { size: 12 }));
}

#[test]
fn header_fields_out_of_bounds() {
    let b = packed();
    let total = b.len() as u32;
    for (field, value) in [
        (8, total),
        (8, 2),
        (8, 0x42),
        (12, total + 1),
        (16, total + 8),
        (16, 44),
        (36, total),
        (32, u32::MAX),
    ] {
        let mut c = b.clone();
        poke(&mut c, field, value);
        let (offset, kind) = blob_err(&c);
        // A block's size is reported at its offset field.
        let reported = match field {
            36 => 8,
            32 => 12,
            f => f,
        };
        assert_eq!(offset, reported, "field {field:#x} = {value:#x}");
        assert!(matches!(kind, BlobError::BadBlock { .. }), "{kind:?}");
    }
    let mut c = b.clone();
    poke(&mut c, 20, 16);
    assert_eq!(
        blob_err(&c),
        (
            20,
            BlobError::UnsupportedVersion {
                version: 16,
                last_compatible: 16
            }
        )
    );
}

#[test]
fn structure_token_errors() {
    let b = packed();
    let off_struct = peek(&b, 8) as usize;
    // The first property of the root: its length, then its name offset.
    let root_prop = off_struct + 8;
    assert_eq!(peek(&b, root_prop), 3);
    let cases: [(usize, u32, BlobError); 5] = [
        (
            root_prop + 4,
            0x7fff_ffff,
            BlobError::PropertyOverrun { len: 0x7fff_ffff },
        ),
        (
            root_prop + 8,
            0xffff,
            BlobError::BadPropertyName {
                name_offset: 0xffff,
            },
        ),
        (root_prop, 7, BlobError::BadToken { token: 7 }),
        (root_prop, 9, BlobError::Unbalanced),
        (off_struct, 2, BlobError::Unbalanced),
    ];
    for (at, value, want) in cases {
        let mut c = b.clone();
        poke(&mut c, at, value);
        assert_eq!(blob_err(&c).1, want, "word {at:#x} = {value:#x}");
    }
    // The structure block cut before its FDT_END.
    let mut c = b.clone();
    poke(&mut c, 36, peek(&b, 36) - 4);
    assert_eq!(blob_err(&c).1, BlobError::Unbalanced);
}

#[test]
fn too_deep() {
    let mut t = TNode::new("");
    let mut leaf = TNode::new("n");
    for _ in 0..40 {
        let mut up = TNode::new("n");
        up.child(leaf);
        leaf = up;
    }
    t.child(leaf);
    assert_eq!(blob_err(&t.to_blob()).1, BlobError::TooDeep { depth: 32 });
}

#[test]
fn property_with_the_wrong_length() {
    let e = node_err(|t| {
        t.node("/pl011@9000000")
            .set("reg", cells(&[0, 0x0900_0000, 0]));
    });
    assert_eq!(
        e,
        (
            "/pl011@9000000".into(),
            Some("reg"),
            NodeError::BadLength { len: 12, unit: 16 }
        )
    );
    let e = node_err(|t| {
        t.node("/pl011@9000000").set("reg", vec![0; 15]);
    });
    assert_eq!(e.2, NodeError::BadLength { len: 15, unit: 4 });
    let e = node_err(|t| {
        t.node("/intc@8000000")
            .set("#redistributor-regions", vec![0, 1]);
    });
    assert_eq!(
        e,
        (
            "/intc@8000000".into(),
            Some("#redistributor-regions"),
            NodeError::BadLength { len: 2, unit: 4 }
        )
    );
    let e = node_err(|t| {
        t.node("/cpus/cpu@1").set("reg", cells(&[0, 1]));
    });
    assert_eq!(
        e,
        (
            "/cpus/cpu@1".into(),
            Some("reg"),
            NodeError::BadLength { len: 8, unit: 4 }
        )
    );
    let e = node_err(|t| {
        t.node("/chosen").set("bootargs", b"no terminator".to_vec());
    });
    assert_eq!(
        e,
        ("/chosen".into(), Some("bootargs"), NodeError::BadString)
    );
}

#[test]
fn reg_too_short() {
    let e = node_err(|t| {
        t.node("/intc@8000000")
            .set("reg", cells(&[0, 0x0800_0000, 0, 0x1_0000]));
    });
    assert_eq!(
        e,
        (
            "/intc@8000000".into(),
            Some("reg"),
            NodeError::TooFewEntries { need: 2, have: 1 }
        )
    );
    let e = node_err(|t| {
        t.node("/intc@8000000")
            .set("#redistributor-regions", cells(&[2]));
    });
    assert_eq!(e.2, NodeError::TooFewEntries { need: 3, have: 2 });
    let e = node_err(|t| {
        t.node("/smmuv3@9050000").set("reg", Vec::new());
    });
    assert_eq!(
        e,
        (
            "/smmuv3@9050000".into(),
            Some("reg"),
            NodeError::BadLength { len: 0, unit: 16 }
        )
    );
}

#[test]
fn wrong_cell_counts() {
    let e = node_err(|t| {
        t.node("/").set("#address-cells", cells(&[3]));
    });
    assert_eq!(
        e,
        (
            "/".into(),
            Some("#address-cells"),
            NodeError::BadCells { cells: 3 }
        )
    );
    let e = node_err(|t| {
        t.node("/cpus").set("#size-cells", cells(&[1]));
    });
    assert_eq!(
        e,
        (
            "/cpus".into(),
            Some("#size-cells"),
            NodeError::BadCells { cells: 1 }
        )
    );
    let e = node_err(|t| {
        t.node("/pcie@10000000").set("#address-cells", cells(&[2]));
    });
    assert_eq!(
        e,
        (
            "/pcie@10000000".into(),
            Some("#address-cells"),
            NodeError::BadCells { cells: 2 }
        )
    );
    let e = node_err(|t| {
        t.node("/smmuv3@9050000").set("#iommu-cells", cells(&[2]));
    });
    assert_eq!(e.2, NodeError::BadCells { cells: 2 });
}

#[test]
fn interrupts_with_the_wrong_cell_count() {
    let e = node_err(|t| {
        t.node("/intc@8000000").set("#interrupt-cells", cells(&[2]));
    });
    assert_eq!(
        e,
        (
            "/intc@8000000".into(),
            Some("#interrupt-cells"),
            NodeError::BadCells { cells: 2 }
        )
    );
    let e = node_err(|t| {
        t.node("/pl011@9000000")
            .set("interrupts", cells(&[0, 1, 4, 0]));
    });
    assert_eq!(
        e,
        (
            "/pl011@9000000".into(),
            Some("interrupts"),
            NodeError::BadLength { len: 16, unit: 12 }
        )
    );
    let e = node_err(|t| {
        t.node("/timer")
            .set("interrupts", cells(&[1, 13, 4, 1, 14, 4]));
    });
    assert_eq!(
        e,
        (
            "/timer".into(),
            Some("interrupts"),
            NodeError::TooFewEntries { need: 4, have: 2 }
        )
    );
    let e = node_err(|t| {
        t.node("/timer").set(
            "interrupts",
            cells(&[1, 13, 4, 1, 16, 4, 1, 11, 4, 1, 10, 4]),
        );
    });
    assert_eq!(
        e.2,
        NodeError::BadValue {
            value: 0x1_0000_0010
        },
        "PPI 16 does not exist"
    );
    let e = node_err(|t| {
        t.node("/smmuv3@9050000")
            .set("interrupt-names", string("eventq"));
    });
    assert_eq!(
        e,
        (
            "/smmuv3@9050000".into(),
            Some("interrupt-names"),
            NodeError::TooFewEntries { need: 4, have: 1 }
        )
    );
}

#[test]
fn dangling_phandle_in_iommu_map_of_the_real_blob() {
    // Patch the QEMU blob in place: iommu-map = <0 0x8005 0 0x10000>.
    let mut b = fixture("virt-smmuv3").to_vec();
    let at = find(&b, &cells(&[0, 0x8005, 0, 0x1_0000]));
    poke(&mut b, at + 4, 0x7777);
    assert_eq!(
        Platform::parse(&b),
        Err(DtError::Node {
            path: "/pcie@10000000".into(),
            property: Some("iommu-map"),
            kind: NodeError::DanglingPhandle { phandle: 0x7777 },
        })
    );
    assert_eq!(
        Platform::parse(&b).unwrap_err().to_string(),
        "devicetree /pcie@10000000 property iommu-map: phandle 0x7777 points to no node"
    );
}

#[test]
fn other_dangling_and_duplicate_phandles() {
    let e = node_err(|t| {
        t.node("/pcie@10000000").set("msi-parent", cells(&[0x4242]));
    });
    assert_eq!(
        e,
        (
            "/pcie@10000000".into(),
            Some("msi-parent"),
            NodeError::DanglingPhandle { phandle: 0x4242 }
        )
    );
    let e = node_err(|t| {
        t.node("/pl011@9000000")
            .set("interrupt-parent", cells(&[0x4242]));
    });
    assert_eq!(
        e,
        (
            "/pl011@9000000".into(),
            Some("interrupt-parent"),
            NodeError::DanglingPhandle { phandle: 0x4242 }
        )
    );
    let e = node_err(|t| {
        t.node("/smmuv3@9050000").set("phandle", cells(&[0x8003]));
    });
    assert_eq!(e.2, NodeError::DuplicatePhandle { phandle: 0x8003 });
    // A loop of interrupt-parent phandles through nodes without #interrupt-cells.
    let e = node_err(|t| {
        t.node("/").set("interrupt-parent", cells(&[0x8000]));
        t.node("/apb-pclk")
            .set("interrupt-parent", cells(&[0x8000]));
    });
    assert_eq!(
        e,
        (
            "/smmuv3@9050000".into(),
            Some("interrupts"),
            NodeError::NoInterruptParent
        )
    );
}

#[test]
fn map_entries_that_overflow_or_escape_the_mask() {
    let e = node_err(|t| {
        t.node("/pcie@10000000")
            .set("iommu-map", cells(&[0x100, 0x8005, 0, 0xffff_ffff]));
    });
    assert_eq!(
        e,
        (
            "/pcie@10000000".into(),
            Some("iommu-map"),
            NodeError::Overflow {
                base: 0x100,
                size: 0xffff_ffff
            }
        )
    );
    let e = node_err(|t| {
        t.node("/pcie@10000000")
            .set("msi-map", cells(&[0, 0x8004, 0xffff_0001, 0x1_0000]));
    });
    assert_eq!(
        e.2,
        NodeError::Overflow {
            base: 0xffff_0001,
            size: 0x1_0000
        }
    );
    let e = node_err(|t| {
        let p = t.node("/pcie@10000000");
        p.set("iommu-map", cells(&[0x100, 0x8005, 0, 0x100]));
        p.set("iommu-map-mask", cells(&[0xff]));
    });
    assert_eq!(
        e.2,
        NodeError::MaskExcludesBase {
            base: 0x100,
            mask: 0xff
        }
    );
    let e = node_err(|t| {
        t.node("/pcie@10000000")
            .set("iommu-map", cells(&[0, 0x8005, 0]));
    });
    assert_eq!(e.2, NodeError::BadLength { len: 12, unit: 16 });
    let e = node_err(|t| {
        t.node("/pcie@10000000")
            .set("bus-range", cells(&[0x10, 0x100]));
    });
    assert_eq!(
        e,
        (
            "/pcie@10000000".into(),
            Some("bus-range"),
            NodeError::BadValue {
                value: 0x10_0000_0100
            }
        )
    );
    let e = node_err(|t| {
        t.node("/pcie@10000000")
            .set("ranges", cells(&[0x0200_0000, 0, 0x1000, 0, 0x1000, 0]));
    });
    assert_eq!(e.2, NodeError::BadLength { len: 24, unit: 28 });
}

#[test]
fn missing_required_things() {
    let missing = |edit: fn(&mut TNode)| {
        let mut t = TNode::fixture("virt-smmuv3");
        edit(&mut t);
        Platform::parse(&t.to_blob()).unwrap_err()
    };
    assert_eq!(
        missing(|t| {
            t.remove_child("cpus");
        }),
        DtError::Missing { what: "/cpus node" }
    );
    assert_eq!(
        missing(|t| {
            t.remove_child("timer");
        }),
        DtError::Missing {
            what: "arm,armv8-timer node"
        }
    );
    assert_eq!(
        missing(|t| {
            t.node("/intc@8000000")
                .set("compatible", string("vendor,other-intc"));
        }),
        DtError::Missing {
            what: "arm,gic-v3 or GICv2 interrupt controller"
        }
    );
    assert_eq!(
        missing(|t| {
            t.node("/memory@40000000")
                .set("reg", cells(&[0, 0x4000_0000, 0, 0]));
        }),
        DtError::Missing {
            what: "memory node with a non-empty reg"
        }
    );
    let e = missing(|t| {
        t.node("/memory@40000000").remove("reg");
    });
    assert_eq!(
        e,
        DtError::Node {
            path: "/memory@40000000".into(),
            property: Some("reg"),
            kind: NodeError::MissingProperty
        }
    );
    let e = missing(|t| {
        t.node("/psci").remove("method");
    });
    assert_eq!(
        e,
        DtError::Node {
            path: "/psci".into(),
            property: Some("method"),
            kind: NodeError::MissingProperty
        }
    );
    let e = missing(|t| {
        t.node("/psci").set("method", string("svc"));
    });
    assert_eq!(
        e,
        DtError::Node {
            path: "/psci".into(),
            property: Some("method"),
            kind: NodeError::BadString
        }
    );
    let e = missing(|t| {
        t.node("/cpus/cpu@0")
            .set("enable-method", string("spin-table"));
    });
    assert_eq!(
        e,
        DtError::Node {
            path: "/cpus/cpu@0".into(),
            property: Some("cpu-release-addr"),
            kind: NodeError::MissingProperty
        }
    );
    let e = missing(|t| {
        t.node("/smmuv3@9050000").remove("interrupt-names");
    });
    assert_eq!(
        e,
        DtError::Node {
            path: "/smmuv3@9050000".into(),
            property: Some("interrupt-names"),
            kind: NodeError::MissingProperty
        }
    );
}

#[test]
fn a_bus_without_ranges_is_untranslatable() {
    let e = node_err(|t| {
        let mut uart = t.node("/pl011@9000000").clone();
        uart.name = "serial@1000".into();
        let mut bus = TNode::new("bus");
        bus.set("#address-cells", cells(&[2]))
            .set("#size-cells", cells(&[2]));
        bus.child(uart);
        t.remove_child("pl011@9000000").child(bus);
    });
    assert_eq!(
        e,
        (
            "/bus/serial@1000".into(),
            Some("reg"),
            NodeError::Untranslatable {
                address: 0x0900_0000
            }
        )
    );
}

/// Every word of the structure block and header, overwritten with values
/// that are tokens, lengths or offsets elsewhere, and every truncation:
/// the parser may accept or reject, but must return.
#[test]
fn no_panic_on_any_single_word_corruption_or_truncation() {
    let b = packed();
    for len in 0..b.len() {
        let _ = Platform::parse(&b[..len]);
    }
    let end = (peek(&b, 8) + peek(&b, 36)) as usize;
    for at in (0..end).step_by(4) {
        for v in [
            0,
            1,
            2,
            3,
            4,
            9,
            0x10,
            0x1000,
            0x7fff_fff0,
            u32::MAX,
            peek(&b, at) ^ 0x8000_0000,
        ] {
            let mut c = b.clone();
            poke(&mut c, at, v);
            let _ = Platform::parse(&c);
        }
    }
}

/// What the checks in front of `fdt` 0.1.5 are for: the same blobs make
/// `fdt` alone panic.
#[test]
fn fdt_alone_panics_where_we_return_errors() {
    let walk = |blob: Vec<u8>| {
        std::panic::catch_unwind(move || {
            let fdt = fdt::Fdt::new(&blob).ok()?;
            let n = fdt
                .all_nodes()
                .map(|n| n.properties().count() + n.children().count())
                .sum::<usize>();
            // `find_node` skips cpu@0 with `skip_current_node`, which asserts.
            Some(n + fdt.find_node("/cpus/cpu@1").map_or(0, |_| 1))
        })
    };
    let b = packed();
    let prop = peek(&b, 8) as usize + 8;
    let mut overrun = b.clone();
    poke(&mut overrun, prop + 4, 0x7fff_ffff);
    let mut bad_name = b.clone();
    poke(&mut bad_name, prop + 8, 0xffff);
    let mut bad_struct = b.clone();
    poke(&mut bad_struct, 36, 0x7fff_ffff);
    let tree = TNode::fixture("virt-smmuv3");
    let nops = tree.to_blob_with(Some("cpu@0"));
    // NOPs everywhere do not panic `fdt`: it silently stops at the first.
    let everywhere = tree.to_blob_with(Some("*"));
    let count = |b: &[u8]| fdt::Fdt::new(b).unwrap().all_nodes().count();
    assert_eq!(count(&everywhere), 1);
    assert!(count(&b) > 50);
    let cases = [
        ("overrun", overrun),
        ("name", bad_name),
        ("struct", bad_struct),
        ("nops", nops),
    ];
    // Silence the expected panics' messages (the hook is process-wide, so
    // restore it before asserting anything).
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let fdt_panicked: Vec<bool> = cases
        .iter()
        .map(|(_, b)| walk(b.clone()).is_err())
        .collect();
    std::panic::set_hook(hook);
    for ((what, blob), panicked) in cases.iter().zip(fdt_panicked) {
        assert!(panicked, "{what}: fdt did not panic");
        let ours = Platform::parse(blob);
        if *what == "nops" {
            assert!(ours.is_ok(), "{ours:?}");
        } else {
            assert!(
                matches!(ours, Err(DtError::Blob { .. })),
                "{what}: {ours:?}"
            );
        }
    }
}

/// The timer's `clock-frequency` (for a CNTFRQ_EL0 firmware left at 0) is
/// read when present; one of the wrong length is an error (issue 13,
/// point 18).
#[test]
fn timer_clock_frequency() {
    let mut t = TNode::fixture("virt-smmuv3");
    t.node("/timer")
        .set("clock-frequency", cells(&[24_000_000]));
    let p = Platform::parse(&t.to_blob()).unwrap();
    assert_eq!(p.timer.clock_frequency, Some(24_000_000));
    let e = node_err(|t| {
        t.node("/timer")
            .set("clock-frequency", cells(&[0, 24_000_000]));
    });
    assert_eq!(
        e,
        (
            "/timer".into(),
            Some("clock-frequency"),
            NodeError::BadLength { len: 8, unit: 4 }
        )
    );
}
