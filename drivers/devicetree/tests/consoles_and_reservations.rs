//! The console choice (PL011, SBSA UART, MMIO 16550 with its register
//! layout, from stdout-path or the first enabled UART), the console-only
//! read the early console uses, and reserved memory (`/memreserve/` and
//! `/reserved-memory`), on QEMU's virt tree edited node by node.
mod common;
use common::{cells, string, TNode};
use devicetree::*;

/// A DesignWare 16550 as arm64 SoCs describe it: 32-bit registers 4 bytes
/// apart, its clock given, named through an alias with options.
fn with_dw_uart(t: &mut TNode) {
    let mut uart = TNode::new("serial@1c28000");
    uart.set("compatible", string("snps,dw-apb-uart"))
        .set("reg", cells(&[0, 0x1c2_8000, 0, 0x400]))
        .set("reg-shift", cells(&[2]))
        .set("reg-io-width", cells(&[4]))
        .set("clock-frequency", cells(&[24_000_000]))
        .set("current-speed", cells(&[9600]));
    t.child(uart);
    let mut aliases = TNode::new("aliases");
    aliases.set("serial1", string("/serial@1c28000"));
    t.remove_child("aliases").child(aliases);
    t.node("/chosen")
        .set("stdout-path", string("serial1:1500000n8"));
}

#[test]
fn mmio_16550_named_by_stdout_path_alias() {
    let mut t = TNode::fixture("virt-smmuv3");
    with_dw_uart(&mut t);
    let blob = t.to_blob();
    let want = Uart {
        path: "/serial@1c28000".into(),
        kind: UartKind::Ns16550 {
            reg_shift: 2,
            reg_io_width: 4,
        },
        base: 0x1c2_8000,
        size: 0x400,
        interrupt: None,
        baud: Some(1_500_000),
        clock_frequency: Some(24_000_000),
    };
    assert_eq!(Platform::parse(&blob).unwrap().console, Some(want.clone()));
    assert_eq!(stdout(&blob), Ok(Some(want)));
}

#[test]
fn without_stdout_path_the_first_enabled_uart_in_tree_order() {
    let mut t = TNode::fixture("virt-smmuv3");
    with_dw_uart(&mut t);
    t.node("/chosen").remove("stdout-path");
    t.node("/pl011@9000000").set("status", string("disabled"));
    let c = Platform::parse(&t.to_blob()).unwrap().console.unwrap();
    assert_eq!((c.path.as_str(), c.baud), ("/serial@1c28000", Some(9600)));
}

#[test]
fn sbsa_generic_uart_is_its_own_kind() {
    let mut t = TNode::fixture("virt-smmuv3");
    t.node("/pl011@9000000")
        .set("compatible", string("arm,sbsa-uart"));
    let c = Platform::parse(&t.to_blob()).unwrap().console.unwrap();
    assert_eq!((c.kind, c.base), (UartKind::SbsaUart, 0x0900_0000));
}

#[test]
fn unusable_16550_register_width_is_an_error() {
    let mut t = TNode::fixture("virt-smmuv3");
    with_dw_uart(&mut t);
    t.node("/serial@1c28000").set("reg-io-width", cells(&[2]));
    let e = Platform::parse(&t.to_blob()).unwrap_err();
    assert_eq!(
        e,
        DtError::Node {
            path: "/serial@1c28000".into(),
            property: Some("reg-io-width"),
            kind: NodeError::BadValue { value: 2 },
        }
    );
}

/// The early console needs only /chosen and the UART: a broken interrupt
/// controller must still be reported on it.
#[test]
fn console_only_read_survives_errors_elsewhere() {
    let mut t = TNode::fixture("virt-smmuv3");
    t.node("/intc@8000000").remove("reg");
    let blob = t.to_blob();
    assert!(Platform::parse(&blob).is_err());
    let c = stdout(&blob).unwrap().unwrap();
    assert_eq!((c.kind, c.base), (UartKind::Pl011, 0x0900_0000));
}

#[test]
fn memreserve_and_reserved_memory_children() {
    let mut t = TNode::fixture("virt-smmuv3");
    let mut rm = TNode::new("reserved-memory");
    rm.set("#address-cells", cells(&[2]))
        .set("#size-cells", cells(&[2]))
        .set("ranges", Vec::new());
    let mut secmon = TNode::new("secmon@4e000000");
    secmon
        .set("reg", cells(&[0, 0x4e00_0000, 0, 0x10_0000]))
        .set("no-map", Vec::new());
    let mut shm = TNode::new("shm@4f000000");
    shm.set("reg", cells(&[0, 0x4f00_0000, 0, 0x2000]));
    let mut cma = TNode::new("linux,cma");
    cma.set("size", cells(&[0, 0x100_0000]));
    let mut off = TNode::new("off@4f100000");
    off.set("reg", cells(&[0, 0x4f10_0000, 0, 0x1000]))
        .set("status", string("disabled"));
    rm.child(secmon).child(shm).child(cma).child(off);
    t.child(rm);
    let p = Platform::parse(&t.to_blob_reserving(&[(0x4800_0000, 0x1000)])).unwrap();
    assert_eq!(
        p.reserved,
        [Region {
            base: 0x4800_0000,
            size: 0x1000
        }]
    );
    assert_eq!(
        p.reserved_memory,
        [
            ReservedMemory {
                path: "/reserved-memory/secmon@4e000000".into(),
                regions: vec![Region {
                    base: 0x4e00_0000,
                    size: 0x10_0000
                }],
                no_map: true,
            },
            ReservedMemory {
                path: "/reserved-memory/shm@4f000000".into(),
                regions: vec![Region {
                    base: 0x4f00_0000,
                    size: 0x2000
                }],
                no_map: false,
            },
        ]
    );
    assert!(p
        .notes
        .iter()
        .any(|n| n.path == "/reserved-memory/linux,cma"));
}
