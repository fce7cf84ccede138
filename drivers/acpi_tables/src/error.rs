//! The one error type of every parser here.
use core::fmt;

/// What was wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// `need` bytes were needed at the offset, the table has `have` from there.
    Truncated { need: usize, have: usize },
    /// The signature is not the one this parser reads.
    BadSignature { found: [u8; 4] },
    /// The header's length is shorter than the header or than the bytes given.
    BadLength { length: u64 },
    /// The bytes do not sum to zero.
    BadChecksum { sum: u8 },
    /// A revision this parser does not know.
    UnknownRevision { revision: u8 },
    /// An offset inside the table points outside it or into the header.
    BadOffset { offset: u64 },
    /// A structure's own length is too small for its type, or zero.
    BadEntryLength { length: u64 },
    /// A count field says more entries than fit.
    BadCount { count: u64 },
    /// References form a loop or go deeper than the bound.
    ReferenceLoop { depth: usize },
    /// A reference to an entry that does not exist.
    DanglingReference { offset: u64 },
    /// A field holds a value the specification does not allow.
    BadValue { field: &'static str, value: u64 },
}

/// A parse error: which table, where in it (bytes from its start), what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableError {
    pub table: [u8; 4],
    pub offset: usize,
    pub kind: ErrorKind,
}

impl TableError {
    pub const fn new(table: [u8; 4], offset: usize, kind: ErrorKind) -> Self {
        TableError {
            table,
            offset,
            kind,
        }
    }
}

pub(crate) fn sig_str(sig: &[u8; 4]) -> &str {
    core::str::from_utf8(sig).unwrap_or("????")
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {:#x}: ", sig_str(&self.table), self.offset)?;
        match self.kind {
            ErrorKind::Truncated { need, have } => {
                write!(f, "truncated: needs {need} bytes, {have} left")
            }
            ErrorKind::BadSignature { found } => {
                write!(
                    f,
                    "signature {:?} where {} was expected",
                    found,
                    sig_str(&self.table)
                )
            }
            ErrorKind::BadLength { length } => write!(f, "bad table length {length}"),
            ErrorKind::BadChecksum { sum } => write!(f, "checksum fails (bytes sum to {sum:#04x})"),
            ErrorKind::UnknownRevision { revision } => write!(f, "unknown revision {revision}"),
            ErrorKind::BadOffset { offset } => {
                write!(f, "offset {offset:#x} points outside the table")
            }
            ErrorKind::BadEntryLength { length } => {
                write!(f, "structure length {length} is too small")
            }
            ErrorKind::BadCount { count } => write!(f, "count {count} does not fit the table"),
            ErrorKind::ReferenceLoop { depth } => {
                write!(f, "references loop or nest deeper than {depth}")
            }
            ErrorKind::DanglingReference { offset } => {
                write!(
                    f,
                    "reference to offset {offset:#x}, where no structure starts"
                )
            }
            ErrorKind::BadValue { field, value } => {
                write!(f, "{field} has invalid value {value:#x}")
            }
        }
    }
}
