//! The common System Description Table header, the RSDP, and the XSDT/RSDT
//! that list the other tables.
use crate::bytes::{ascii, Bytes};
use crate::error::{ErrorKind, TableError};
use alloc::string::String;
use alloc::vec::Vec;

pub const HEADER_LEN: usize = 36;

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SdtHeader {
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::bytes::ser_sig"))]
    pub signature: [u8; 4],
    pub length: u32,
    pub revision: u8,
    pub checksum: u8,
    pub oem_id: String,
    pub oem_table_id: String,
    pub oem_revision: u32,
    pub creator_id: String,
    pub creator_revision: u32,
}

impl SdtHeader {
    pub fn signature_str(&self) -> &str {
        crate::error::sig_str(&self.signature)
    }
}

/// `DMAR rev 1 length 0x68 oem "BOCHS " "BXPC    " rev 0x1 creator "BXPC" rev 0x1`
impl core::fmt::Display for SdtHeader {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} rev {} length {:#x} oem {:?} {:?} rev {:#x} creator {:?} rev {:#x}",
            self.signature_str(),
            self.revision,
            self.length,
            self.oem_id,
            self.oem_table_id,
            self.oem_revision,
            self.creator_id,
            self.creator_revision
        )
    }
}

/// Sum of all bytes, mod 256: zero for a valid table.
pub fn checksum(data: &[u8]) -> u8 {
    data.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// Reads the header of a table whose bytes start at `data[0]`, checks the
/// signature (when `expected` is given), the length (at least a header, at
/// most the bytes given) and the checksum, and returns the header with the
/// table's bytes (cut to its length).
pub fn parse_table<'a>(
    data: &'a [u8],
    expected: Option<[u8; 4]>,
) -> Result<(SdtHeader, Bytes<'a>), TableError> {
    let sig = expected.unwrap_or_else(|| {
        let mut s = *b"????";
        for (d, b) in s.iter_mut().zip(data) {
            *d = *b;
        }
        s
    });
    let b = Bytes::new(data, sig);
    let found: [u8; 4] = b.array(0)?;
    if expected.is_some_and(|e| e != found) {
        return Err(b.err(0, ErrorKind::BadSignature { found }));
    }
    let length = b.u32(4)?;
    if (length as usize) < HEADER_LEN || length as usize > data.len() {
        return Err(b.err(
            4,
            ErrorKind::BadLength {
                length: length as u64,
            },
        ));
    }
    let b = Bytes::new(&data[..length as usize], found);
    let sum = checksum(b.data);
    if sum != 0 {
        return Err(b.err(9, ErrorKind::BadChecksum { sum }));
    }
    let header = SdtHeader {
        signature: found,
        length,
        revision: b.u8(8)?,
        checksum: b.u8(9)?,
        oem_id: ascii(b.slice(10, 6)?),
        oem_table_id: ascii(b.slice(16, 8)?),
        oem_revision: b.u32(24)?,
        creator_id: ascii(b.slice(28, 4)?),
        creator_revision: b.u32(32)?,
    };
    Ok((header, b))
}

/// The Root System Description Pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Rsdp {
    pub oem_id: String,
    pub revision: u8,
    pub rsdt_address: u32,
    /// Revision 2 and later.
    pub xsdt_address: Option<u64>,
}

impl Rsdp {
    /// Where the table list is: the XSDT when there is one, else the RSDT.
    pub fn root_table(&self) -> (u64, [u8; 4]) {
        match self.xsdt_address {
            Some(x) if x != 0 => (x, *b"XSDT"),
            _ => (self.rsdt_address as u64, *b"RSDT"),
        }
    }
}

pub const RSDP_V1_LEN: usize = 20;
pub const RSDP_V2_LEN: usize = 36;

/// Parses an RSDP: signature `RSD PTR `, the 20-byte checksum, and for
/// revision 2+ the extended length and checksum.
pub fn parse_rsdp(data: &[u8]) -> Result<Rsdp, TableError> {
    let b = Bytes::new(data, *b"RSDP");
    if b.slice(0, 8)? != b"RSD PTR " {
        return Err(b.err(0, ErrorKind::BadSignature { found: b.array(0)? }));
    }
    let sum = checksum(b.slice(0, RSDP_V1_LEN)?);
    if sum != 0 {
        return Err(b.err(8, ErrorKind::BadChecksum { sum }));
    }
    let revision = b.u8(15)?;
    let mut rsdp = Rsdp {
        oem_id: ascii(b.slice(9, 6)?),
        revision,
        rsdt_address: b.u32(16)?,
        xsdt_address: None,
    };
    if revision >= 2 {
        let length = b.u32(20)?;
        if (length as usize) < RSDP_V2_LEN || length as usize > data.len() {
            return Err(b.err(
                20,
                ErrorKind::BadLength {
                    length: length as u64,
                },
            ));
        }
        let sum = checksum(b.slice(0, length as usize)?);
        if sum != 0 {
            return Err(b.err(32, ErrorKind::BadChecksum { sum }));
        }
        rsdp.xsdt_address = Some(b.u64(24)?);
    }
    Ok(rsdp)
}

/// The table addresses an XSDT (8-byte entries) or RSDT (4-byte entries) lists.
pub fn parse_root_table(data: &[u8], sig: [u8; 4]) -> Result<Vec<u64>, TableError> {
    let (_, b) = parse_table(data, Some(sig))?;
    let width = if &sig == b"XSDT" { 8 } else { 4 };
    let body = b.len() - HEADER_LEN;
    if !body.is_multiple_of(width) {
        return Err(b.err(
            4,
            ErrorKind::BadLength {
                length: b.len() as u64,
            },
        ));
    }
    (0..body / width)
        .map(|i| {
            let at = HEADER_LEN + i * width;
            if width == 8 {
                b.u64(at)
            } else {
                b.u32(at).map(u64::from)
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
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
}
