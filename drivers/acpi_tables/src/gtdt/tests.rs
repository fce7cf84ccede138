//! Tests of the GTDT parser: QEMU virt's table, tables of each revision
//! built by hand, and corrupted inputs.

use super::*;
use crate::sdt::tests::make_table;
use alloc::format;
use alloc::vec;

/// The fixed body after the header: CntControlBase, reserved, then the
/// four timers with distinct GSIVs, so a field read from the wrong
/// offset shows.
fn body(rev: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&u64::MAX.to_le_bytes());
    b.extend_from_slice(&0u32.to_le_bytes());
    for (gsiv, flags) in [(29u32, 0u32), (30, 4), (27, 1), (26, 2)] {
        b.extend_from_slice(&gsiv.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
    }
    if rev >= 2 {
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // platform timer count
        b.extend_from_slice(&0u32.to_le_bytes()); // platform timer offset
    }
    if rev >= 3 {
        b.extend_from_slice(&28u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
    }
    b
}

fn set_u32(t: &mut [u8], at: usize, v: u32) {
    t[at..at + 4].copy_from_slice(&v.to_le_bytes());
    crate::sdt::tests::fix_checksum(t);
}

#[test]
fn the_el1_physical_timer_is_the_non_secure_el1_field() {
    for rev in 1..=3 {
        let g = parse(&make_table(b"GTDT", rev, &body(rev))).unwrap();
        assert_eq!(g.nonsecure_el1, Timer { gsiv: 30, flags: 4 }, "rev {rev}");
        assert_eq!(g.secure_el1.gsiv, 29);
        assert_eq!(g.virtual_el1.gsiv, 27);
        assert!(g.virtual_el1.edge());
        assert_eq!(g.el2.gsiv, 26);
        assert!(g.el2.active_low());
        assert_eq!(g.cnt_read_base.is_some(), rev >= 2);
        assert_eq!(g.virtual_el2.map(|t| t.gsiv), (rev >= 3).then_some(28));
    }
}

/// QEMU 10.0's virt table (hw/arm/virt-acpi-build.c): the PPIs of the
/// devicetree's /timer (secure 13, non-secure 14, virtual 11, EL2 10).
#[test]
fn qemu_virt_fixture() {
    let g = parse(include_bytes!("../../fixtures/virt-smmuv3/GTDT.bin")).unwrap();
    assert_eq!(g.header.revision, 3);
    assert_eq!(g.nonsecure_el1.gsiv, 30);
    assert_eq!(g.nonsecure_el1.flags, FLAG_ALWAYS_ON);
    assert_eq!(g.secure_el1.gsiv, 29);
    assert_eq!(g.virtual_el1.gsiv, 27);
    assert_eq!(g.el2.gsiv, 26);
    assert!(g.platform_timers.is_empty());
    let text = format!("{g}");
    assert!(text.contains("non-secure EL1 timer GSIV 30"), "{text}");
}

#[test]
fn platform_timers_are_walked_by_their_lengths() {
    let mut b = body(2);
    let offset = (36 + b.len()) as u32;
    // A GT block header (20 bytes, no frames) and a watchdog (28 bytes).
    let mut gt = vec![PLATFORM_GT_BLOCK, 20, 0, 0];
    gt.resize(20, 0);
    let mut wd = vec![PLATFORM_WATCHDOG, 28, 0, 0];
    wd.resize(28, 0);
    b.extend_from_slice(&gt);
    b.extend_from_slice(&wd);
    let mut t = make_table(b"GTDT", 2, &b);
    set_u32(&mut t, 88, 2);
    set_u32(&mut t, 92, offset);
    let g = parse(&t).unwrap();
    assert_eq!(
        g.platform_timers,
        vec![
            PlatformTimer {
                offset: offset as usize,
                r#type: PLATFORM_GT_BLOCK,
                length: 20
            },
            PlatformTimer {
                offset: offset as usize + 20,
                r#type: PLATFORM_WATCHDOG,
                length: 28
            },
        ]
    );
    assert!(format!("{g}").contains("SBSA generic watchdog"));
}

#[test]
fn bad_platform_timer_counts_offsets_and_lengths_are_errors() {
    let mut b = body(2);
    b.extend_from_slice(&[PLATFORM_WATCHDOG, 28, 0, 0]);
    b.resize(b.len() + 24, 0);
    let base = make_table(b"GTDT", 2, &b);
    let with = |count: u32, offset: u32| {
        let mut t = base.clone();
        set_u32(&mut t, 88, count);
        set_u32(&mut t, 92, offset);
        parse(&t).map(|_| ()).unwrap_err().kind
    };
    assert!(matches!(with(1, 40), ErrorKind::BadOffset { offset: 40 }));
    assert!(matches!(with(1, 4096), ErrorKind::BadOffset { .. }));
    assert!(matches!(
        with(1000, 96),
        ErrorKind::BadCount { count: 1000 }
    ));
    assert!(matches!(with(2, 96), ErrorKind::Truncated { .. }));
    let mut zero = base.clone();
    zero[97] = 0;
    crate::sdt::tests::fix_checksum(&mut zero);
    set_u32(&mut zero, 88, 1);
    set_u32(&mut zero, 92, 96);
    assert!(matches!(
        parse(&zero).unwrap_err().kind,
        ErrorKind::BadEntryLength { length: 0 }
    ));
}

#[test]
fn short_tables_and_unknown_revisions_are_errors() {
    let short = make_table(b"GTDT", 1, &body(1)[..40]);
    assert!(matches!(
        parse(&short).unwrap_err().kind,
        ErrorKind::Truncated { .. }
    ));
    // Revision 2 promises the CntReadBase and the platform timer fields.
    let v2_short = make_table(b"GTDT", 2, &body(1));
    assert!(matches!(
        parse(&v2_short).unwrap_err().kind,
        ErrorKind::Truncated { .. }
    ));
    let rev9 = make_table(b"GTDT", 9, &body(3));
    assert_eq!(
        parse(&rev9).unwrap_err().kind,
        ErrorKind::UnknownRevision { revision: 9 }
    );
    assert!(matches!(
        parse(&make_table(b"APIC", 3, &body(3))).unwrap_err().kind,
        ErrorKind::BadSignature { .. }
    ));
}
