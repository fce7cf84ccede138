//! What the unit, or the driver's use of it, refused.
use core::fmt;
use kernel::hal::HalError;

/// Capabilities the driver needs and a unit lacks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Missing {
    pub scalable_mode: bool,
    pub pasid: bool,
    pub queued_invalidation: bool,
    /// Neither first nor second level.
    pub translation_level: bool,
}

impl Missing {
    pub fn any(&self) -> bool {
        self.scalable_mode || self.pasid || self.queued_invalidation || self.translation_level
    }
}

impl fmt::Display for Missing {
    /// "no scalable mode, no PASID", as many as are missing.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (gone, what) in [
            (self.scalable_mode, "scalable mode"),
            (self.pasid, "PASID"),
            (self.queued_invalidation, "queued invalidation"),
            (self.translation_level, "a translation level"),
        ] {
            if gone {
                write!(f, "{}no {what}", if first { "" } else { ", " })?;
                first = false;
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VtdError {
    /// Memory for a table or the queue, or an access outside a region.
    Memory(HalError),
    /// The unit cannot be driven in scalable mode.
    Unsupported { base: u64, missing: Missing },
    /// Translation is on already: someone else drives the unit.
    AlreadyTranslating { base: u64 },
    /// GSTS did not reflect a GCMD write within the bound.
    CommandTimeout { base: u64, gcmd: u32, gsts: u32 },
    /// An invalidation wait's status write did not come within the bound.
    InvalidationTimeout {
        base: u64,
        seq: u32,
        iqh: u64,
        iqt: u64,
        fsts: u32,
    },
    /// More descriptors in one batch than the queue holds (with the wait).
    QueueTooSmall { descriptors: usize, room: u32 },
    /// The unit refused a descriptor (FSTS.IQE); it was skipped, so what
    /// it invalidates may still be cached.
    Refused { index: u32, descriptor: [u64; 4] },
    /// Every domain id of CAP.ND is in use.
    OutOfDomainIds { domains: u32 },
    /// Pass-through is needed (for `what`) and the unit has no ECAP.PT.
    NoPassThrough { what: &'static str },
    /// The PASID needs a paging domain.
    NotPaging { pasid: u32 },
    /// A device id wider than a 16-bit source id.
    DeviceIdTooWide { dev: u32 },
    /// A PASID past the unit's width (ECAP.PSS + 1).
    PasidTooWide { pasid: u32, bits: u8 },
    /// No context entry of this driver for the source id.
    NotManaged { sid: u16 },
    /// An address in none of the driver's PASID tables.
    NotOurs { pa: u64 },
    /// What was asked needs a capability (`what`, with its ECAP bit) the
    /// unit lacks.
    Lacks { base: u64, what: &'static str },
    /// Page requests were used before `enable_page_requests`.
    PageRequestsOff { base: u64 },
    /// A page request queue of 2^(`pqs` + 7) entries: PQS is 0 to 7.
    BadQueueSize { pqs: u8 },
    /// A page request queue descriptor the driver cannot serve (`why`),
    /// at `index`: skipped, never answered.
    BadPageRequest {
        index: u32,
        descriptor: [u64; 2],
        why: &'static str,
    },
    /// A page response for a request without PASID: the unit takes
    /// requests with a PASID only.
    ResponseWithoutPasid { rid: u16 },
}

impl fmt::Display for VtdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            VtdError::Memory(e) => write!(f, "VT-d memory: {e}"),
            VtdError::Unsupported { base, missing } => {
                write!(f, "VT-d at {base:#x} cannot be driven: {missing}")
            }
            VtdError::AlreadyTranslating { base } => {
                write!(f, "VT-d at {base:#x} is already translating")
            }
            VtdError::CommandTimeout { base, gcmd, gsts } => write!(
                f,
                "VT-d at {base:#x}: GCMD {gcmd:#x} not reflected in GSTS {gsts:#x}"
            ),
            VtdError::InvalidationTimeout {
                base,
                seq,
                iqh,
                iqt,
                fsts,
            } => write!(
                f,
                "VT-d at {base:#x}: invalidation wait {seq} not done (IQH {iqh:#x}, IQT {iqt:#x}, FSTS {fsts:#x})"
            ),
            VtdError::QueueTooSmall { descriptors, room } => write!(
                f,
                "{descriptors} descriptors do not fit the invalidation queue (room for {room})"
            ),
            VtdError::Refused { index, descriptor } => {
                write!(f, "VT-d refused descriptor {index} {descriptor:x?} (IQE)")
            }
            VtdError::OutOfDomainIds { domains } => write!(f, "out of domain ids ({domains})"),
            VtdError::NoPassThrough { what } => {
                write!(f, "{what} need pass-through (ECAP.PT), which the unit lacks")
            }
            VtdError::NotPaging { pasid } => write!(f, "PASID {pasid}: not a paging domain"),
            VtdError::DeviceIdTooWide { dev } => {
                write!(f, "device id {dev:#x} is wider than a 16-bit source id")
            }
            VtdError::PasidTooWide { pasid, bits } => {
                write!(f, "PASID {pasid:#x} does not fit the unit's {bits} PASID bits")
            }
            VtdError::NotManaged { sid } => {
                let [bus, devfn] = sid.to_be_bytes();
                write!(
                    f,
                    "source id {sid:#x} ({bus:02x}:{:02x}.{}) has no context entry of this driver",
                    devfn >> 3,
                    devfn & 7
                )
            }
            VtdError::NotOurs { pa } => {
                write!(f, "{pa:#x} is not in a PASID table of this driver")
            }
            VtdError::Lacks { base, what } => {
                write!(f, "VT-d at {base:#x} has no {what}")
            }
            VtdError::PageRequestsOff { base } => {
                write!(f, "VT-d at {base:#x}: the page request queue is not enabled")
            }
            VtdError::BadQueueSize { pqs } => {
                write!(f, "page request queue size {pqs}: PQS is 0 to 7")
            }
            VtdError::BadPageRequest {
                index,
                descriptor,
                why,
            } => write!(
                f,
                "page request descriptor {index} {descriptor:x?} skipped: {why}"
            ),
            VtdError::ResponseWithoutPasid { rid } => {
                write!(f, "no page response without PASID (requester {rid:#x})")
            }
        }
    }
}

impl From<HalError> for VtdError {
    fn from(e: HalError) -> Self {
        VtdError::Memory(e)
    }
}
