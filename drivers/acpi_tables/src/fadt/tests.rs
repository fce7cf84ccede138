//! Tests of the FADT parser: QEMU virt's and q35's tables, an ACPI 1.0
//! length table and corrupted inputs.

use super::*;
use crate::error::ErrorKind;
use crate::sdt::tests::{fix_checksum, make_table};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

/// A current-length (276-byte) FADT body, all zero.
fn zeroed() -> Vec<u8> {
    vec![0u8; 276 - 36]
}

fn with(body: &mut [u8], at: usize, bytes: &[u8]) {
    body[at - 36..at - 36 + bytes.len()].copy_from_slice(bytes);
}

/// QEMU virt (hw/arm/virt-acpi-build.c): hardware-reduced, PSCI through
/// HVC when the guest runs at EL1 under no hypervisor of its own.
#[test]
fn qemu_virt_fixture() {
    let f = parse(include_bytes!("../../fixtures/virt-smmuv3/FACP.bin")).unwrap();
    assert_eq!(f.header.revision, 6);
    assert!(f.hw_reduced());
    assert_eq!(f.arm_boot_arch, ARM_PSCI_COMPLIANT | ARM_PSCI_USE_HVC);
    assert_eq!(f.psci(), Some(PsciConduit::Hvc));
    assert_eq!(f.dsdt, 0x1000_0040);
    assert_eq!(f.reset, None);
    assert_eq!(f.pm1a_cnt, None);
    assert!(format!("{f}").contains("PSCI through Hvc"));
}

/// QEMU q35 (captured with the PM base at 0, as before firmware set it):
/// the reset register is port 0xcf9 with 0x0f, PM1a control the extended
/// field's port.
#[test]
fn qemu_q35_fixture() {
    let f = parse(include_bytes!("../../fixtures/q35-intel-iommu/FACP.bin")).unwrap();
    assert_eq!(f.header.revision, 3);
    assert!(!f.hw_reduced());
    assert_eq!(f.psci(), None);
    assert_eq!(f.sci_int, 9);
    let (reset, value) = f.reset.clone().unwrap();
    assert_eq!(
        (reset.space_id, reset.bit_width, reset.address, value),
        (SPACE_SYSTEM_IO, 8, 0xcf9, 0x0f)
    );
    let cnt = f.pm1a_cnt.clone().unwrap();
    assert_eq!((cnt.space_id, cnt.bit_width, cnt.address), (1, 16, 4));
    assert_eq!(f.pm1b_cnt, None);
    assert_eq!(f.dsdt, 0x1000_0080);
}

#[test]
fn psci_conduit_comes_from_the_arm_boot_flags() {
    let conduit = |flags: u16| {
        let mut b = zeroed();
        with(&mut b, 129, &flags.to_le_bytes());
        parse(&make_table(b"FACP", 6, &b)).unwrap().psci()
    };
    assert_eq!(conduit(0), None);
    assert_eq!(conduit(ARM_PSCI_USE_HVC), None);
    assert_eq!(conduit(ARM_PSCI_COMPLIANT), Some(PsciConduit::Smc));
    assert_eq!(
        conduit(ARM_PSCI_COMPLIANT | ARM_PSCI_USE_HVC),
        Some(PsciConduit::Hvc)
    );
}

/// An ACPI 1.0 table: legacy PM1 ports with the widths the length fields
/// give, the 32-bit DSDT, nothing past the flags.
#[test]
fn acpi_1_tables_give_the_legacy_fields() {
    let mut b = vec![0u8; V1_LEN - 36];
    with(&mut b, 40, &0x1234u32.to_le_bytes());
    with(&mut b, 56, &0x600u32.to_le_bytes());
    with(&mut b, 64, &0x604u32.to_le_bytes());
    with(&mut b, 88, &[4, 2]);
    // RESET_REG_SUP without the room for the register: no reset.
    with(&mut b, 112, &FLAG_RESET_REG_SUP.to_le_bytes());
    let f = parse(&make_table(b"FACP", 1, &b)).unwrap();
    assert_eq!(f.dsdt, 0x1234);
    assert_eq!(f.reset, None);
    assert_eq!(f.arm_boot_arch, 0);
    let evt = f.pm1a_evt.unwrap();
    assert_eq!((evt.address, evt.bit_width), (0x600, 32));
    let cnt = f.pm1a_cnt.unwrap();
    assert_eq!((cnt.space_id, cnt.address, cnt.bit_width), (1, 0x604, 16));
}

#[test]
fn the_extended_dsdt_and_blocks_win_when_set() {
    let mut b = zeroed();
    with(&mut b, 40, &0x1234u32.to_le_bytes());
    with(&mut b, 140, &0x8_0000_0000u64.to_le_bytes());
    with(&mut b, 64, &0x604u32.to_le_bytes());
    with(&mut b, 172, &[0, 16, 0, 2]);
    with(&mut b, 176, &0x9000_0000u64.to_le_bytes());
    let f = parse(&make_table(b"FACP", 6, &b)).unwrap();
    assert_eq!(f.dsdt, 0x8_0000_0000);
    let cnt = f.pm1a_cnt.unwrap();
    assert_eq!((cnt.space_id, cnt.address), (0, 0x9000_0000));
}

#[test]
fn short_and_corrupt_tables_are_errors() {
    let short = make_table(b"FACP", 1, &[0u8; 60]);
    assert!(matches!(
        parse(&short).unwrap_err().kind,
        ErrorKind::Truncated { .. }
    ));
    let mut bad = make_table(b"FACP", 6, &zeroed());
    bad[50] ^= 1;
    assert!(matches!(
        parse(&bad).unwrap_err().kind,
        ErrorKind::BadChecksum { .. }
    ));
    fix_checksum(&mut bad);
    assert!(parse(&bad).is_ok());
}
