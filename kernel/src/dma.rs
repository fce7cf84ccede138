//! The DMA engine abstraction the test suite drives: submit an operation,
//! tagged with a PASID or not, wait for it with a bound, read its status.
//! Devices (the project's pasid-dma engine, later a software model on the
//! host) implement [`DmaEngine`]; tests never name the device.
use crate::hal::HalError;

/// What to do. Addresses are as the device sees them (IOVAs once an IOMMU
/// translates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaOp {
    Copy {
        src: u64,
        dst: u64,
        len: u64,
    },
    /// `pattern` repeats from the first destination byte, little-endian.
    Fill {
        dst: u64,
        len: u64,
        pattern: u64,
    },
    Compare {
        a: u64,
        b: u64,
        len: u64,
    },
    /// `size` (1, 2, 4 or 8) bytes of `value`, little-endian.
    WriteImm {
        dst: u64,
        value: u64,
        size: u8,
    },
}

/// How the device tags the operation's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaTag {
    /// Requester id only: the device's primary domain.
    Untagged,
    /// Requester id and PASID: an aux domain.
    Pasid {
        pasid: crate::iommu::pasid::Pasid,
        privileged: bool,
    },
}

/// How an operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DmaStatus {
    Success,
    /// A compare found the operands differ from this offset on.
    Differs {
        offset: u64,
    },
    ReadFault {
        addr: u64,
    },
    WriteFault {
        addr: u64,
    },
    /// The device refused the request as malformed.
    Invalid,
    /// The platform takes no requests with this PASID from the device.
    PasidUnsupported,
    /// The device's PASID capability is not enabled (or lacks privileged mode).
    PasidDisabled,
    /// A page request for the page at `addr` was answered Invalid Request
    /// (the address space has no such page).
    PageRequestInvalid {
        addr: u64,
    },
    /// A page request for the page at `addr` was answered Response
    /// Failure: the device makes no more page requests until its page
    /// request interface is reset.
    PageRequestFailed {
        addr: u64,
    },
    /// A status code the driver does not know.
    Other(u8),
}

/// A finished operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaResult {
    pub status: DmaStatus,
    /// Bytes done before the operation ended.
    pub bytes: u64,
}

/// Why an engine could not run or report an operation. `Copy`, with
/// numbers rather than text: a driver converts its own error into it, and
/// a test can match on what went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineError {
    /// No room for another operation until one completes.
    Busy,
    /// The operation did not complete within the bound.
    Timeout { waited_ns: u64 },
    /// The engine has no operation under this ticket (never submitted, or
    /// already waited for).
    UnknownTicket(Ticket),
    /// The completion found for `ticket` is another operation's: it
    /// carries `got`.
    WrongCompletion { ticket: Ticket, got: u64 },
    /// The platform has no engine for this device.
    NoDevice { id: u32 },
    /// Memory the engine needs (its completion records) could not be had
    /// or reached.
    Memory(HalError),
    /// A failure of the device's own: what, in its driver's words, and the
    /// number that goes with it (a register's value, a queue).
    Device { what: &'static str, value: u64 },
}

impl core::fmt::Display for EngineError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            EngineError::Busy => f.write_str("the engine has no room for another operation"),
            EngineError::Timeout { waited_ns } => {
                write!(f, "no completion within {} ms", waited_ns / 1_000_000)
            }
            EngineError::UnknownTicket(t) => write!(f, "no operation {}", t.0),
            EngineError::WrongCompletion { ticket, got } => write!(
                f,
                "the completion of ticket {} carries cookie {got}",
                ticket.0
            ),
            EngineError::NoDevice { id } => write!(f, "no engine for device {id:#x}"),
            EngineError::Memory(e) => write!(f, "the engine's memory: {e}"),
            EngineError::Device { what, value } => write!(f, "{what} ({value:#x})"),
        }
    }
}

/// A submitted operation, for [`DmaEngine::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(pub u64);

pub trait DmaEngine {
    fn submit(&mut self, op: &DmaOp, tag: DmaTag) -> Result<Ticket, EngineError>;

    /// Waits at most `bound_ns` for the ticket's operation.
    fn wait(&mut self, ticket: Ticket, bound_ns: u64) -> Result<DmaResult, EngineError>;

    /// Submits and waits.
    fn run(&mut self, op: &DmaOp, tag: DmaTag, bound_ns: u64) -> Result<DmaResult, EngineError> {
        let t = self.submit(op, tag)?;
        self.wait(t, bound_ns)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn engine_errors_say_what_went_wrong() {
        let cases = [
            (
                EngineError::Busy,
                "the engine has no room for another operation",
            ),
            (
                EngineError::Timeout {
                    waited_ns: 2_500_000_000,
                },
                "no completion within 2500 ms",
            ),
            (EngineError::UnknownTicket(Ticket(7)), "no operation 7"),
            (
                EngineError::WrongCompletion {
                    ticket: Ticket(3),
                    got: 131,
                },
                "the completion of ticket 3 carries cookie 131",
            ),
            (
                EngineError::NoDevice { id: 0x10 },
                "no engine for device 0x10",
            ),
            (
                EngineError::Memory(HalError::NoMemory { bytes: 4096 }),
                "the engine's memory: no memory for 4096 bytes",
            ),
            (
                EngineError::Device {
                    what: "no such queue",
                    value: 5,
                },
                "no such queue (0x5)",
            ),
        ];
        for (e, text) in cases {
            assert_eq!(e.to_string(), text);
        }
    }
}
