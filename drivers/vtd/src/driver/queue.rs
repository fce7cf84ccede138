//! The invalidation queue's memory: one page of 256-bit descriptors and
//! the page invalidation waits write their status to; and which
//! descriptors an update or an unmap batch needs. The MMIO side (IQT,
//! IQH, FSTS) is the driver's.
use super::error::VtdError;
use crate::qi::Descriptor;
use alloc::vec::Vec;
use kernel::hal::{Coherency, DmaRegion, Hal};
use kernel::iommu::check::{Cache, Note};
use kernel::iommu::domain::Attachment;
use kernel::iommu::pgtable::PAGE_SIZE;

/// Invalidation queue: one page of 256-bit descriptors.
pub const IQ_ENTRIES: u32 = 128;
const DESCRIPTOR: u64 = 32;
/// Where the harmless wait that replaces a refused descriptor writes (a
/// scratch word in the status page, away from the real status).
const SCRATCH: u64 = 64;
/// More page-selective descriptors than this for one unmap batch:
/// invalidate the whole domain (or PASID) instead.
pub const MAX_PAGE_DESCRIPTORS: usize = 32;

/// A descriptor the unit refused (FSTS.IQE), as it was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    pub index: u32,
    pub descriptor: [u64; 4],
}

pub struct Queue<H: Hal> {
    ring: H::Region,
    /// Where invalidation waits write their status.
    status: H::Region,
    tail: u32,
    seq: u32,
    /// Descriptors queued and invalidation waits, since creation.
    descriptors: u64,
    waits: u64,
}

impl<H: Hal> Queue<H> {
    pub fn new(hal: &H, coherency: Coherency) -> Result<Self, VtdError> {
        let queue_page = || -> Result<H::Region, VtdError> {
            let r = hal.alloc(PAGE_SIZE, PAGE_SIZE, coherency)?;
            hal.note(Note::Holds {
                pa: r.phys(),
                cache: Cache::None,
            });
            Ok(r)
        };
        Ok(Queue {
            ring: queue_page()?,
            status: queue_page()?,
            tail: 0,
            seq: 0,
            descriptors: 0,
            waits: 0,
        })
    }

    pub fn base(&self) -> u64 {
        self.ring.phys().as_u64()
    }

    /// The index the unit stops at (IQT).
    pub fn tail(&self) -> u32 {
        self.tail
    }

    pub fn descriptors(&self) -> u64 {
        self.descriptors
    }

    pub fn waits(&self) -> u64 {
        self.waits
    }

    /// Writes `entries` and one invalidation wait after them into the
    /// ring (draining page requests too with `drain`, PD), and returns the
    /// wait's sequence number. The caller makes the stores visible and
    /// publishes [`Queue::tail`].
    pub fn stage(&mut self, entries: &[[u64; 4]], drain: bool) -> Result<u32, VtdError> {
        if entries.len() as u32 + 1 >= IQ_ENTRIES {
            return Err(VtdError::QueueTooSmall {
                descriptors: entries.len(),
                room: IQ_ENTRIES - 2,
            });
        }
        self.seq = self.seq.wrapping_add(1).max(1);
        let seq = self.seq;
        self.status.write_u64(0, 0)?;
        let (addr, data) = (self.status.phys().as_u64(), seq);
        let wait = if drain {
            Descriptor::DrainWait { addr, data }
        } else {
            Descriptor::Wait { addr, data }
        }
        .encode();
        for e in entries.iter().chain(core::iter::once(&wait)) {
            self.write_descriptor(self.tail, e)?;
            self.tail = (self.tail + 1) % IQ_ENTRIES;
        }
        self.descriptors += entries.len() as u64 + 1;
        self.waits += 1;
        Ok(seq)
    }

    fn write_descriptor(&mut self, index: u32, d: &[u64; 4]) -> Result<(), VtdError> {
        let at = DESCRIPTOR * u64::from(index);
        for (i, &q) in d.iter().enumerate() {
            self.ring.write_u64(at + 8 * i as u64, q)?;
        }
        Ok(())
    }

    /// Whether wait `seq` wrote its status.
    pub fn done(&self, seq: u32) -> Result<bool, VtdError> {
        Ok(self.status.read_u64(0)? as u32 == seq)
    }

    /// The descriptor at `index`, which the unit refused, read back and
    /// replaced by an invalidation wait that writes to a scratch word.
    pub fn replace_refused(&mut self, index: u32) -> Result<Refused, VtdError> {
        let index = index % IQ_ENTRIES;
        let at = DESCRIPTOR * u64::from(index);
        let mut descriptor = [0; 4];
        for (i, q) in descriptor.iter_mut().enumerate() {
            *q = self.ring.read_u64(at + 8 * i as u64)?;
        }
        let harmless = Descriptor::Wait {
            addr: self.status.phys().as_u64() + SCRATCH,
            data: 0,
        }
        .encode();
        self.write_descriptor(index, &harmless)?;
        Ok(Refused { index, descriptor })
    }

    /// What the unit does at the end of a wait (host tests only).
    #[cfg(test)]
    pub fn complete(&mut self, seq: u32) {
        self.status.write_u64(0, u64::from(seq)).unwrap();
    }
}

/// What drops a PASID's cached translations under `did`: its PASID-cache
/// entry and its IOTLB entries (of the whole DID on second level, where
/// PASID-based invalidation does not reach).
pub fn pasid_flush(did: u16, pasid: u32, second_level: bool) -> Vec<Descriptor> {
    let mut descs = alloc::vec![
        Descriptor::PasidCachePasid { did, pasid },
        Descriptor::PasidIotlbAll { did, pasid },
    ];
    if second_level {
        descs.push(Descriptor::IotlbDomain { did });
    }
    descs
}

/// `size` bytes at `iova` as power-of-two, aligned chunks of pages
/// (`(address, log2 pages)`) within `max_mask` (CAP.MAMV); `None` past
/// `room` chunks.
pub fn page_chunks(iova: u64, size: u64, room: usize, max_mask: u8) -> Option<Vec<(u64, u8)>> {
    let mut out = Vec::new();
    let mut at = iova & !(PAGE_SIZE - 1);
    let end = (iova + size).next_multiple_of(PAGE_SIZE);
    while at < end {
        if out.len() == room {
            return None;
        }
        let pages = (end - at) / PAGE_SIZE;
        let align = (at / PAGE_SIZE).trailing_zeros();
        let am = (63 - pages.leading_zeros())
            .min(align)
            .min(u32::from(max_mask));
        out.push((at, am as u8));
        at += PAGE_SIZE << am;
    }
    Some(out)
}

/// The descriptors of one unmap batch of domain `did`: second level:
/// page-selective IOTLB invalidation by DID, which covers every
/// attachment; first level: PASID-based page invalidation for each PASID
/// the domain is reached through (RID_PASID 0 for primaries). Past
/// [`MAX_PAGE_DESCRIPTORS`], or with no ranges (freed tables only), the
/// whole domain or PASID.
pub fn unmap_descriptors(
    second_level: bool,
    max_mask: u8,
    did: u16,
    attached: &[Attachment],
    ranges: &[(u64, u64)],
) -> Vec<Descriptor> {
    let mut descs = Vec::new();
    if second_level {
        for &(iova, size) in ranges {
            let room = MAX_PAGE_DESCRIPTORS.saturating_sub(descs.len());
            match page_chunks(iova, size, room, max_mask) {
                Some(c) => descs.extend(c.into_iter().map(|(addr, am)| Descriptor::IotlbPages {
                    did,
                    addr,
                    am,
                })),
                None => return alloc::vec![Descriptor::IotlbDomain { did }],
            }
        }
        if descs.is_empty() {
            descs.push(Descriptor::IotlbDomain { did });
        }
        return descs;
    }
    let mut pasids: Vec<u32> = attached.iter().map(|a| a.1.map_or(0, |p| p.0)).collect();
    pasids.sort_unstable();
    pasids.dedup();
    for pasid in pasids {
        let mut mine = Vec::new();
        let mut whole = false;
        for &(iova, size) in ranges {
            let room = MAX_PAGE_DESCRIPTORS.saturating_sub(mine.len());
            match page_chunks(iova, size, room, max_mask) {
                Some(c) => {
                    mine.extend(c.into_iter().map(|(addr, am)| Descriptor::PasidIotlbPages {
                        did,
                        pasid,
                        addr,
                        am,
                    }))
                }
                None => {
                    whole = true;
                    break;
                }
            }
        }
        if whole || mine.is_empty() {
            mine = alloc::vec![Descriptor::PasidIotlbAll { did, pasid }];
        }
        descs.extend(mine);
    }
    descs
}
