//! The one error type: where (a blob offset, or a node path and property)
//! and what was wrong.
use alloc::string::String;
use core::fmt;

/// Why a devicetree cannot be described.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DtError {
    /// The blob itself: header, block bounds or token stream. `offset` is
    /// bytes from the start of the blob.
    Blob { offset: usize, kind: BlobError },
    /// A node, or one of its properties (`None`: the node as a whole).
    Node {
        path: String,
        property: Option<&'static str>,
        kind: NodeError,
    },
    /// No node of this kind, and the platform cannot be described without it.
    Missing { what: &'static str },
}

/// What is wrong with the blob's layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobError {
    /// `need` bytes were needed, the slice has `have`.
    Truncated { need: u64, have: usize },
    /// Not the FDT magic 0xd00dfeed.
    BadMagic { found: u32 },
    /// `totalsize` is smaller than the header.
    BadTotalSize { size: u32 },
    /// A version this reader does not take (it needs the v17 header).
    UnsupportedVersion { version: u32, last_compatible: u32 },
    /// A block (`"structure"`, `"strings"`, `"reservations"`) lies outside
    /// `totalsize` or is misaligned.
    BadBlock {
        block: &'static str,
        start: u64,
        size: u64,
    },
    /// A memory reservation whose end overflows.
    BadReservation { base: u64, size: u64 },
    /// A structure token that is not one of the five the format defines, or
    /// one where it may not stand.
    BadToken { token: u32 },
    /// A node name with no NUL inside the structure block, or not UTF-8, or
    /// a root node with a name.
    BadNodeName,
    /// A property whose value runs past the structure block.
    PropertyOverrun { len: u32 },
    /// A property name offset outside the strings block, or a name with no
    /// NUL there, or not UTF-8.
    BadPropertyName { name_offset: u32 },
    /// A property after a child node (the format puts properties first).
    PropertyAfterChild,
    /// END_NODE without a node, a second root, or the block ends (or hits
    /// FDT_END) inside a node.
    Unbalanced,
    /// Nodes nest deeper than this reader walks.
    TooDeep { depth: usize },
}

/// What is wrong with a node or property.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeError {
    /// A property the binding requires is absent.
    MissingProperty,
    /// The value's `len` bytes are not a whole, non-zero number of
    /// `unit`-byte entries.
    BadLength { len: usize, unit: usize },
    /// Fewer entries than the binding needs.
    TooFewEntries { need: usize, have: usize },
    /// A `#…-cells` count this reader cannot use here.
    BadCells { cells: u32 },
    /// Not a NUL-terminated UTF-8 string (list), or a string the binding
    /// does not allow.
    BadString,
    /// A value the binding does not allow.
    BadValue { value: u64 },
    /// A phandle no node carries.
    DanglingPhandle { phandle: u32 },
    /// Two nodes carry the same phandle.
    DuplicatePhandle { phandle: u32 },
    /// `base + size` (a region, or an id-map entry) passes the address or id
    /// space.
    Overflow { base: u64, size: u64 },
    /// A map entry's input base has bits its map mask clears.
    MaskExcludesBase { base: u32, mask: u32 },
    /// No parent `ranges` maps this bus address to a CPU address.
    Untranslatable { address: u64 },
    /// Walking up for the interrupt parent found no `#interrupt-cells`.
    NoInterruptParent,
}

impl DtError {
    pub(crate) fn node(path: &str, property: Option<&'static str>, kind: NodeError) -> Self {
        DtError::Node {
            path: path.into(),
            property,
            kind,
        }
    }

    pub(crate) const fn blob(offset: usize, kind: BlobError) -> Self {
        DtError::Blob { offset, kind }
    }
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::Blob { offset, kind } => write!(f, "devicetree at offset {offset:#x}: {kind}"),
            DtError::Node {
                path,
                property: Some(p),
                kind,
            } => write!(f, "devicetree {path} property {p}: {kind}"),
            DtError::Node {
                path,
                property: None,
                kind,
            } => write!(f, "devicetree {path}: {kind}"),
            DtError::Missing { what } => write!(f, "devicetree has no {what}"),
        }
    }
}

impl fmt::Display for BlobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BlobError::Truncated { need, have } => {
                write!(f, "truncated: needs {need} bytes, has {have}")
            }
            BlobError::BadMagic { found } => write!(f, "magic {found:#010x}, not 0xd00dfeed"),
            BlobError::BadTotalSize { size } => write!(f, "totalsize {size} is below the header"),
            BlobError::UnsupportedVersion {
                version,
                last_compatible,
            } => write!(
                f,
                "version {version} (last compatible {last_compatible}); needs 17"
            ),
            BlobError::BadBlock { block, start, size } => write!(
                f,
                "{block} block {start:#x}+{size:#x} is outside the blob or misaligned"
            ),
            BlobError::BadReservation { base, size } => {
                write!(f, "memory reservation {base:#x}+{size:#x} overflows")
            }
            BlobError::BadToken { token } => write!(f, "unexpected structure token {token:#x}"),
            BlobError::BadNodeName => {
                write!(f, "node name is unterminated, not UTF-8 or misplaced")
            }
            BlobError::PropertyOverrun { len } => {
                write!(f, "property of {len} bytes runs past the structure block")
            }
            BlobError::BadPropertyName { name_offset } => {
                write!(f, "property name offset {name_offset:#x} names no string")
            }
            BlobError::PropertyAfterChild => write!(f, "property after a child node"),
            BlobError::Unbalanced => write!(f, "node begin/end tokens do not balance"),
            BlobError::TooDeep { depth } => write!(f, "nodes nest deeper than {depth}"),
        }
    }
}

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NodeError::MissingProperty => write!(f, "required but absent"),
            NodeError::BadLength { len, unit } => {
                write!(
                    f,
                    "{len} bytes is not a whole number of {unit}-byte entries"
                )
            }
            NodeError::TooFewEntries { need, have } => {
                write!(f, "has {have} entries, needs {need}")
            }
            NodeError::BadCells { cells } => write!(f, "cell count {cells} is not usable here"),
            NodeError::BadString => write!(f, "not a valid string for this property"),
            NodeError::BadValue { value } => write!(f, "invalid value {value:#x}"),
            NodeError::DanglingPhandle { phandle } => {
                write!(f, "phandle {phandle:#x} points to no node")
            }
            NodeError::DuplicatePhandle { phandle } => {
                write!(f, "phandle {phandle:#x} is used by two nodes")
            }
            NodeError::Overflow { base, size } => {
                write!(f, "{base:#x} + {size:#x} overflows")
            }
            NodeError::MaskExcludesBase { base, mask } => {
                write!(f, "mask {mask:#x} clears bits of base {base:#x}")
            }
            NodeError::Untranslatable { address } => {
                write!(
                    f,
                    "address {address:#x} is not mapped by the parent's ranges"
                )
            }
            NodeError::NoInterruptParent => write!(f, "no interrupt parent found"),
        }
    }
}
