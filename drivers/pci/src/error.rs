//! The crate's error type.
use crate::caps::CapError;
use crate::config::Bdf;
use core::fmt;

/// What went wrong with one function, bridge or BAR. Enumeration and
/// assignment collect these and carry on with the rest of the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciError {
    /// The function's capability list is malformed; the capabilities read
    /// before the fault are kept.
    Capability { bdf: Bdf, error: CapError },
    /// No bus number was left for this bridge's secondary bus; its subtree
    /// was not scanned.
    BusesExhausted { bridge: Bdf },
    /// Firmware-assigned secondary/subordinate numbers do not nest inside
    /// the parent's range (or overlap a sibling); the bridge was renumbered.
    BusNumbersNotNested {
        bridge: Bdf,
        secondary: u8,
        subordinate: u8,
        parent_first: u8,
        parent_last: u8,
    },
    /// A BAR whose type bits are reserved, or a 64-bit BAR in the last slot.
    BadBar { bdf: Bdf, bar: u8 },
    /// The BAR does not fit in what is left of its window; it stays
    /// unassigned and the function's decoding stays off.
    WindowExhausted { bdf: Bdf, bar: u8, size: u64 },
    /// A claim of a function with a BAR that has no address.
    UnassignedBar { bdf: Bdf, bar: u8 },
    /// The function lacks the capability (standard or extended id) asked for.
    MissingCapability { bdf: Bdf, id: u16 },
    /// The capability does not support what was asked (named).
    Unsupported { bdf: Bdf, what: &'static str },
    /// The page request interface is not Stopped (still enabled, or
    /// requests outstanding): it cannot be reset and enabled now.
    PriNotStopped { bdf: Bdf },
    /// The MSI-X capability points somewhere it cannot be (named).
    BadMsix { bdf: Bdf, what: &'static str },
    /// An MSI-X vector number at or past the table's size.
    NoSuchVector { bdf: Bdf, vector: u16, vectors: u16 },
    /// A configuration access outside the ECAM window (bus not covered, or
    /// offset beyond 4 KiB or misaligned).
    OutOfRange { bdf: Bdf, offset: u16 },
}

impl fmt::Display for PciError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PciError::Capability { bdf, error } => write!(f, "{bdf}: {error}"),
            PciError::BusesExhausted { bridge } => {
                write!(f, "{bridge}: no bus number left for the secondary bus")
            }
            PciError::BusNumbersNotNested {
                bridge,
                secondary,
                subordinate,
                parent_first,
                parent_last,
            } => write!(
                f,
                "{bridge}: buses {secondary:#04x}-{subordinate:#04x} do not nest in \
                 {parent_first:#04x}-{parent_last:#04x}"
            ),
            PciError::BadBar { bdf, bar } => write!(f, "{bdf}: BAR {bar} is malformed"),
            PciError::WindowExhausted { bdf, bar, size } => {
                write!(
                    f,
                    "{bdf}: BAR {bar} ({size:#x} bytes) does not fit its window"
                )
            }
            PciError::UnassignedBar { bdf, bar } => write!(f, "{bdf}: BAR {bar} has no address"),
            PciError::MissingCapability { bdf, id } => {
                write!(f, "{bdf}: no capability {id:#x}")
            }
            PciError::Unsupported { bdf, what } => write!(f, "{bdf}: {what} not supported"),
            PciError::PriNotStopped { bdf } => {
                write!(f, "{bdf}: page request interface not stopped")
            }
            PciError::BadMsix { bdf, what } => write!(f, "{bdf}: MSI-X: {what}"),
            PciError::NoSuchVector {
                bdf,
                vector,
                vectors,
            } => write!(f, "{bdf}: MSI-X vector {vector} of {vectors}"),
            PciError::OutOfRange { bdf, offset } => {
                write!(
                    f,
                    "{bdf}: config offset {offset:#x} outside the ECAM window"
                )
            }
        }
    }
}
