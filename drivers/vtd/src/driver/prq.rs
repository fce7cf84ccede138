//! The page request queue's memory (VT-d 7.5): 2^(PQS + 7) descriptors of
//! 32 bytes the unit writes at PQT and software takes at PQH; and the
//! page request descriptor decoded into the core's [`PageRequest`]. The
//! MMIO side (PQH, PQT, PQA, PRS, the event registers) is the driver's.
use super::error::VtdError;
use kernel::hal::{Coherency, DmaRegion, Hal};
use kernel::iommu::check::{Cache, Note};
use kernel::iommu::domain::DeviceId;
use kernel::iommu::iopf::PageRequest;
use kernel::iommu::pasid::Pasid;
use kernel::iommu::pgtable::PAGE_SIZE;

/// Bytes of one page request descriptor.
pub const DESCRIPTOR: u64 = 32;
/// Descriptor type of a page request.
const PAGE_REQUEST: u64 = 1;
/// Qword 0's reserved bits: 15:9 and 63:54.
const RESERVED_LO: u64 = 0x7f << 9 | 0x3ff << 54;

pub struct PageRequestQueue<H: Hal> {
    ring: H::Region,
    pqs: u8,
}

impl<H: Hal> PageRequestQueue<H> {
    /// A queue of 2^(`pqs` + 7) descriptors (2^`pqs` pages).
    pub fn new(hal: &H, pqs: u8, coherency: Coherency) -> Result<Self, VtdError> {
        if pqs > 7 {
            return Err(VtdError::BadQueueSize { pqs });
        }
        let ring = hal.alloc(PAGE_SIZE << pqs, PAGE_SIZE, coherency)?;
        hal.note(Note::Holds {
            pa: ring.phys(),
            cache: Cache::None,
        });
        Ok(PageRequestQueue { ring, pqs })
    }

    pub fn base(&self) -> u64 {
        self.ring.phys().as_u64()
    }

    pub fn pqs(&self) -> u8 {
        self.pqs
    }

    /// Descriptors the ring holds.
    pub fn entries(&self) -> u32 {
        1 << (u32::from(self.pqs) + 7)
    }

    /// The two qwords of descriptor `index` that carry the request.
    pub fn read(&self, index: u32) -> Result<[u64; 2], VtdError> {
        let at = DESCRIPTOR * u64::from(index % self.entries());
        Ok([self.ring.read_u64(at)?, self.ring.read_u64(at + 8)?])
    }
}

/// A page request descriptor as the core's request; refused (typed, with
/// the reason) when it is not a page request, sets reserved bits, or has
/// no PASID (the unit delivers only PASID-tagged requests; the response
/// needs one).
pub fn decode(index: u32, d: [u64; 2]) -> Result<PageRequest, VtdError> {
    let bad = |why| VtdError::BadPageRequest {
        index,
        descriptor: d,
        why,
    };
    let [lo, hi] = d;
    if lo & 0xff != PAGE_REQUEST {
        return Err(bad("not a page request (type)"));
    }
    if lo & RESERVED_LO != 0 {
        return Err(bad("reserved bits set"));
    }
    if lo & (1 << 8) == 0 {
        return Err(bad("no PASID"));
    }
    Ok(PageRequest {
        dev: DeviceId(((lo >> 16) & 0xffff) as u32),
        pasid: Some(Pasid(((lo >> 32) & 0xf_ffff) as u32)),
        addr: hi & !0xfff,
        read: hi & 1 != 0,
        write: hi & 2 != 0,
        privileged: lo & (1 << 53) != 0,
        exec: lo & (1 << 52) != 0,
        last: hi & 4 != 0,
        group: ((hi >> 3) & 0x1ff) as u16,
    })
}
