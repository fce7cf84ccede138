//! Bounds-checked little-endian reads over a table's bytes. Every read
//! names its offset, so an error says exactly where the table went wrong.
use crate::error::{ErrorKind, TableError};

/// A table's bytes and its signature (for error messages).
#[derive(Clone, Copy, Debug)]
pub struct Bytes<'a> {
    pub data: &'a [u8],
    pub sig: [u8; 4],
}

impl<'a> Bytes<'a> {
    pub const fn new(data: &'a [u8], sig: [u8; 4]) -> Self {
        Bytes { data, sig }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn err(&self, offset: usize, kind: ErrorKind) -> TableError {
        TableError::new(self.sig, offset, kind)
    }

    /// `len` bytes at `offset`.
    pub fn slice(&self, offset: usize, len: usize) -> Result<&'a [u8], TableError> {
        let have = self.data.len().saturating_sub(offset);
        match offset.checked_add(len) {
            Some(end) if end <= self.data.len() => Ok(&self.data[offset..end]),
            _ => Err(self.err(offset, ErrorKind::Truncated { need: len, have })),
        }
    }

    /// The sub-range `[offset, offset+len)` as its own `Bytes` (same signature).
    pub fn sub(&self, offset: usize, len: usize) -> Result<Bytes<'a>, TableError> {
        Ok(Bytes::new(self.slice(offset, len)?, self.sig))
    }

    pub fn u8(&self, offset: usize) -> Result<u8, TableError> {
        Ok(self.slice(offset, 1)?[0])
    }

    pub fn u16(&self, offset: usize) -> Result<u16, TableError> {
        let b = self.slice(offset, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&self, offset: usize) -> Result<u32, TableError> {
        let b = self.slice(offset, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&self, offset: usize) -> Result<u64, TableError> {
        let b = self.slice(offset, 8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn array<const N: usize>(&self, offset: usize) -> Result<[u8; N], TableError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.slice(offset, N)?);
        Ok(a)
    }
}

/// Bytes of a fixed-width text field up to the first NUL, lossily as ASCII.
pub fn ascii(field: &[u8]) -> alloc::string::String {
    field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '?'
            }
        })
        .collect()
}

/// Serializes a 4-byte signature as text (`"IORT"`), for `#[serde(serialize_with)]`.
#[cfg(feature = "serde")]
pub fn ser_sig<S: serde::Serializer>(sig: &[u8; 4], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(crate::error::sig_str(sig))
}

#[cfg(test)]
mod tests;
