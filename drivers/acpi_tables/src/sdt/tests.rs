//! Tests of the common table header, the RSDP and the root tables, and
//! `make_table`/`fix_checksum`, which every other parser's tests build tables with.

use super::*;
use alloc::vec;

/// A table with a valid header and checksum around `body`.
pub fn make_table(sig: &[u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; HEADER_LEN];
    t[0..4].copy_from_slice(sig);
    t[4..8].copy_from_slice(&((HEADER_LEN + body.len()) as u32).to_le_bytes());
    t[8] = revision;
    t[10..16].copy_from_slice(b"BOCHS ");
    t[16..24].copy_from_slice(b"BXPC    ");
    t[24..28].copy_from_slice(&1u32.to_le_bytes());
    t[28..32].copy_from_slice(b"BXPC");
    t[32..36].copy_from_slice(&1u32.to_le_bytes());
    t.extend_from_slice(body);
    fix_checksum(&mut t);
    t
}

pub fn fix_checksum(t: &mut [u8]) {
    t[9] = 0;
    t[9] = 0u8.wrapping_sub(checksum(t));
}

#[test]
fn header_round_trip() {
    let t = make_table(b"IORT", 3, &[1, 2, 3]);
    let (h, b) = parse_table(&t, Some(*b"IORT")).unwrap();
    assert_eq!(h.signature_str(), "IORT");
    assert_eq!(h.length, 39);
    assert_eq!(h.revision, 3);
    assert_eq!(h.oem_id, "BOCHS ");
    assert_eq!(h.oem_table_id, "BXPC    ");
    assert_eq!(b.len(), 39);
}

#[test]
fn header_errors() {
    let mut t = make_table(b"IORT", 3, &[1, 2, 3]);
    assert_eq!(
        parse_table(&t, Some(*b"DMAR")).unwrap_err().kind,
        ErrorKind::BadSignature { found: *b"IORT" }
    );
    assert!(matches!(
        parse_table(&t[..20], None).unwrap_err().kind,
        ErrorKind::BadLength { .. }
    ));
    assert!(matches!(
        parse_table(&t[..3], None).unwrap_err().kind,
        ErrorKind::Truncated { .. }
    ));
    t[36] ^= 0xff;
    let e = parse_table(&t, None).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::BadChecksum { .. }), "{e}");
    assert_eq!(e.table, *b"IORT");
    t[4..8].copy_from_slice(&10u32.to_le_bytes());
    assert_eq!(
        parse_table(&t, None).unwrap_err().kind,
        ErrorKind::BadLength { length: 10 }
    );
}

#[test]
fn rsdp_and_xsdt() {
    let mut r = vec![0u8; 36];
    r[0..8].copy_from_slice(b"RSD PTR ");
    r[9..15].copy_from_slice(b"BOCHS ");
    r[15] = 2;
    r[16..20].copy_from_slice(&0x1234u32.to_le_bytes());
    r[20..24].copy_from_slice(&36u32.to_le_bytes());
    r[24..32].copy_from_slice(&0x8000_0000u64.to_le_bytes());
    r[8] = 0u8.wrapping_sub(checksum(&r[..20]));
    r[32] = 0u8.wrapping_sub(checksum(&r));
    let p = parse_rsdp(&r).unwrap();
    assert_eq!(p.root_table(), (0x8000_0000, *b"XSDT"));
    r[24] = 1;
    assert!(matches!(
        parse_rsdp(&r).unwrap_err().kind,
        ErrorKind::BadChecksum { .. }
    ));

    let mut body = Vec::new();
    body.extend_from_slice(&0x1000u64.to_le_bytes());
    body.extend_from_slice(&0x2000u64.to_le_bytes());
    let x = make_table(b"XSDT", 1, &body);
    assert_eq!(parse_root_table(&x, *b"XSDT").unwrap(), [0x1000, 0x2000]);
    let x = make_table(b"XSDT", 1, &body[..12]);
    assert!(parse_root_table(&x, *b"XSDT").is_err());
    let r = make_table(b"RSDT", 1, &body[..8]);
    assert_eq!(parse_root_table(&r, *b"RSDT").unwrap(), [0x1000, 0]);
}
