use super::*;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicUsize, Ordering};
use std::vec::Vec as StdVec;

extern crate std;

/// Answers every read with all ones and counts the accesses.
#[derive(Default)]
struct FakePlatform {
    accesses: Arc<AtomicUsize>,
}

impl Platform for FakePlatform {
    fn read_memory(&self, _: u64, _: AccessWidth) -> u64 {
        self.accesses.fetch_add(1, Ordering::Relaxed);
        u64::MAX
    }
    fn write_memory(&self, _: u64, _: AccessWidth, _: u64) {
        self.accesses.fetch_add(1, Ordering::Relaxed);
    }
    fn read_io(&self, _: u16, _: AccessWidth) -> u32 {
        self.accesses.fetch_add(1, Ordering::Relaxed);
        u32::MAX
    }
    fn write_io(&self, _: u16, _: AccessWidth, _: u32) {
        self.accesses.fetch_add(1, Ordering::Relaxed);
    }
    fn read_pci(&self, _: PciFunction, _: u16, _: AccessWidth) -> u32 {
        self.accesses.fetch_add(1, Ordering::Relaxed);
        u32::MAX
    }
    fn write_pci(&self, _: PciFunction, _: u16, _: AccessWidth, _: u32) {
        self.accesses.fetch_add(1, Ordering::Relaxed);
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn stall_us(&self, _: u64) {}
}

fn fixture(board: &str, table: &str) -> StdVec<u8> {
    let path = std::format!(
        "{}/../acpi_tables/fixtures/{board}/{table}.bin",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn bridges_of(board: &str) -> Discovery {
    host_bridges(FakePlatform::default(), &fixture(board, "DSDT"), &[]).unwrap()
}

fn w(start: u64, end: u64) -> Window {
    Window {
        start,
        end,
        translation: 0,
    }
}

#[test]
fn q35_pci0_windows_from_crs() {
    let d = bridges_of("q35-intel-iommu");
    assert_eq!(d.problems, []);
    assert_eq!(
        d.bridges,
        [HostBridge {
            path: "\\_SB_.PCI0".into(),
            segment: 0,
            buses: (0, 0xff),
            io: vec![w(0, 0xcf7), w(0xd00, 0xffff)],
            mem32: vec![
                w(0xa_0000, 0xb_ffff),
                w(0x4000_0000, 0xafff_ffff),
                w(0xc000_0000, 0xfebf_ffff)
            ],
            mem64: vec![w(0x1_0000_0000, 0x8_ffff_ffff)],
        }]
    );
}

#[test]
fn virt_io_window_keeps_its_translation() {
    let d = bridges_of("virt-smmuv3");
    let b = &d.bridges[0];
    assert_eq!(b.io[0].cpu_start(), 0x3eff_0000);
    assert_eq!(b.mem32, [w(0x1000_0000, 0x3efe_ffff)]);
    assert_eq!(b.mem64, [w(0x80_0000_0000, 0xff_ffff_ffff)]);
}

#[test]
fn expander_bridge_is_a_second_host_bridge_with_its_own_buses() {
    let d = bridges_of("virt-pxb");
    let buses: StdVec<_> = d
        .bridges
        .iter()
        .map(|b| (b.path.as_str(), b.buses))
        .collect();
    assert_eq!(
        buses,
        [("\\_SB_.PC80", (0x80, 0x80)), ("\\_SB_.PCI0", (0, 0x7f))]
    );
}

#[test]
fn eisa_id_text() {
    assert_eq!(device_id_text(0x080a_d041), "PNP0A08");
    assert_eq!(device_id_text(0x030a_d041), "PNP0A03");
}

/// A DSDT holding `body` at the root (header checksum not checked here).
fn dsdt(body: &[u8]) -> StdVec<u8> {
    let mut t = StdVec::from(*b"DSDT");
    t.extend_from_slice(&((36 + body.len()) as u32).to_le_bytes());
    t.push(2);
    t.extend_from_slice(&[0; 27]);
    t.extend_from_slice(body);
    t
}

/// AML PkgLength of `len` bytes of content (one or two bytes long).
fn pkg_length(len: usize) -> StdVec<u8> {
    if len + 1 < 64 {
        std::vec![len as u8 + 1]
    } else {
        let total = len + 2;
        std::vec![0x40 | (total & 0xf) as u8, (total >> 4) as u8]
    }
}

/// `Device (PCI0) { Name (_HID, EisaId ("PNP0A08")) Name (_CRS, Buffer { crs }) }`.
fn pci0_with_crs(crs: &[u8]) -> StdVec<u8> {
    pci0(crs, false)
}

/// As [`pci0_with_crs`]; with `hid_method`, `_HID` is
/// `Method (_HID) { Return (EisaId ("PNP0A08")) }`.
fn pci0(crs: &[u8], hid_method: bool) -> StdVec<u8> {
    let mut buffer = StdVec::from([0x0a, crs.len() as u8]);
    buffer.extend_from_slice(crs);
    let mut dev = StdVec::from(*b"PCI0");
    if hid_method {
        // MethodOp, PkgLength 12, "_HID", flags 0, Return (DWordConst).
        dev.extend_from_slice(&[0x14, 12, b'_', b'H', b'I', b'D', 0, 0xa4, 0x0c]);
        dev.extend_from_slice(&[0x41, 0xd0, 0x0a, 0x08]);
    } else {
        dev.extend_from_slice(&[0x08, b'_', b'H', b'I', b'D', 0x0c, 0x41, 0xd0, 0x0a, 0x08]);
    }
    dev.extend_from_slice(&[0x08, b'_', b'C', b'R', b'S', 0x11]);
    dev.extend_from_slice(&pkg_length(buffer.len()));
    dev.extend_from_slice(&buffer);
    let mut body = StdVec::from([0x5b, 0x82]);
    body.extend_from_slice(&pkg_length(dev.len()));
    body.extend_from_slice(&dev);
    dsdt(&body)
}

/// QWordMemory 0x1_0000_0000..=0x1_ffff_ffff, fixed.
const QWORD_MEM: [u8; 46] = {
    let mut d = [0u8; 46];
    d[0] = 0x8a;
    d[1] = 43;
    d[3] = 0; // memory
    d[4] = 0x0c; // _MIF, _MAF
                 // _MIN at 14, _MAX at 22, _LEN at 38.
    d[18] = 1;
    d[22] = 0xff;
    d[23] = 0xff;
    d[24] = 0xff;
    d[25] = 0xff;
    d[26] = 1;
    d[42] = 1;
    d
};

#[test]
fn hand_built_crs_is_decoded() {
    let mut crs = StdVec::from(QWORD_MEM);
    crs.extend_from_slice(&[0x79, 0]);
    let d = host_bridges(FakePlatform::default(), &pci0_with_crs(&crs), &[]).unwrap();
    assert_eq!(d.bridges[0].mem64, [w(0x1_0000_0000, 0x1_ffff_ffff)]);
}

#[test]
fn a_hid_computed_by_a_method_is_evaluated() {
    let mut crs = StdVec::from(QWORD_MEM);
    crs.extend_from_slice(&[0x79, 0]);
    let d = host_bridges(FakePlatform::default(), &pci0(&crs, true), &[]).unwrap();
    assert_eq!(d.problems, []);
    assert_eq!(d.bridges.len(), 1);
    assert_eq!(d.bridges[0].mem64, [w(0x1_0000_0000, 0x1_ffff_ffff)]);
}

#[test]
fn truncated_crs_is_a_typed_error_not_a_panic() {
    // The descriptor claims 43 bytes; 10 follow.
    let crs = &QWORD_MEM[..13];
    let d = host_bridges(FakePlatform::default(), &pci0_with_crs(crs), &[]).unwrap();
    assert_eq!(d.bridges, []);
    assert_eq!(
        d.problems,
        [Error::BadResources {
            path: "\\PCI0".into(),
            problem: "the descriptor at byte 0 runs past the buffer".into()
        }]
    );
}

#[test]
fn vendor_address_space_is_skipped_not_a_panic() {
    // Resource type 0xc0 (vendor-defined) stops the crate's decoder at
    // `unimplemented!`; the window beside it still counts.
    let mut vendor = QWORD_MEM;
    vendor[3] = 0xc0;
    let mut crs = StdVec::from(vendor);
    crs.extend_from_slice(&QWORD_MEM);
    crs.extend_from_slice(&[0x79, 0]);
    let d = host_bridges(FakePlatform::default(), &pci0_with_crs(&crs), &[]).unwrap();
    assert_eq!(d.problems, []);
    assert_eq!(d.bridges[0].mem64, [w(0x1_0000_0000, 0x1_ffff_ffff)]);
}

#[test]
fn aml_fatal_is_an_error_not_a_panic() {
    // Fatal (0x12, 0x3456, 7) at the table's top level.
    let body = [0x5b, 0x32, 0x12, 0x56, 0x34, 0, 0, 0x0a, 7];
    let got = host_bridges(FakePlatform::default(), &dsdt(&body), &[]);
    assert_eq!(
        got,
        Err(Error::Fatal {
            kind: 0x12,
            code: 0x3456,
            arg: 7
        })
    );
}

#[test]
fn short_table_is_refused() {
    let got = host_bridges(FakePlatform::default(), b"DSDT\x10\0\0\0", &[]);
    assert!(
        matches!(got, Err(Error::BadTable { len: 8, .. })),
        "{got:?}"
    );
}

#[test]
fn the_fixture_dsdts_touch_no_hardware() {
    let p = FakePlatform::default();
    let seen = p.accesses.clone();
    host_bridges(p, &fixture("q35-intel-iommu", "DSDT"), &[]).unwrap();
    assert_eq!(seen.load(Ordering::Relaxed), 0);
}

/// `Name (_S5, Package () { elements })`, each element already encoded.
fn s5(elements: &[&[u8]]) -> StdVec<u8> {
    let body: StdVec<u8> = elements.concat();
    let mut t = StdVec::from([0x08, b'_', b'S', b'5', b'_', 0x12]);
    t.push((2 + body.len()) as u8);
    t.push(elements.len() as u8);
    t.extend_from_slice(&body);
    t
}

fn soft_off_of(body: &[u8]) -> Discovery {
    host_bridges(FakePlatform::default(), &dsdt(body), &[]).unwrap()
}

#[test]
fn soft_off_comes_from_s5_for_each_pm1_block() {
    // QEMU's q35 powers off with SLP_TYP 0 (its `\_S5` is all zeros).
    let q35 = bridges_of("q35-intel-iommu");
    assert_eq!(q35.soft_off, Some(SleepType { pm1a: 0, pm1b: 0 }));
    // virt is hardware-reduced: no `\_S5`, nothing to write.
    assert_eq!(bridges_of("virt-smmuv3").soft_off, None);
    let d = soft_off_of(&s5(&[&[0x0a, 5], &[0x0a, 6]]));
    assert_eq!(d.soft_off, Some(SleepType { pm1a: 5, pm1b: 6 }));
    assert_eq!(d.problems, []);
    // One element: PM1b takes PM1a's value.
    let d = soft_off_of(&s5(&[&[0x0a, 7]]));
    assert_eq!(d.soft_off, Some(SleepType { pm1a: 7, pm1b: 7 }));
}

#[test]
fn a_malformed_s5_is_a_problem_not_a_power_off() {
    for body in [
        s5(&[]),
        s5(&[&[0x0a, 8]]),
        s5(&[&[0x0d, b'x', 0]]),
        StdVec::from([0x08, b'_', b'S', b'5', b'_', 0x0a, 5]),
    ] {
        let d = soft_off_of(&body);
        assert_eq!(d.soft_off, None, "{body:x?}");
        assert_eq!(d.problems.len(), 1, "{body:x?}: {:?}", d.problems);
        assert!(
            std::format!("{}", d.problems[0]).contains("_S5"),
            "{:?}",
            d.problems
        );
    }
}
