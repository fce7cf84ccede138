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
pub(crate) mod tests;
