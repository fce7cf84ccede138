//! I/O page faults: what a device asks for through its page request
//! interface (PCIe PRI, a page request queue on the IOMMU) and how the
//! IOMMU answers a page group. Hardware-free: a driver decodes its queue
//! into [`PageRequest`]s and encodes [`PageResponse`]s; the core decides
//! what to do with them.
use super::domain::DeviceId;
use super::pasid::Pasid;
use alloc::vec::Vec;

/// One page request, as the device sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageRequest {
    pub dev: DeviceId,
    /// `None` for a request without PASID.
    pub pasid: Option<Pasid>,
    /// The page's address (4 KiB aligned).
    pub addr: u64,
    pub read: bool,
    pub write: bool,
    pub privileged: bool,
    pub exec: bool,
    /// Last request of its page group: the group is answered after it.
    pub last: bool,
    /// Page Request Group Index (9 bits).
    pub group: u16,
}

impl PageRequest {
    /// A stop marker (last of its group, asking for no access): the
    /// device says it will send no more for the PASID. PCIe 10.4.1.2;
    /// it gets no response.
    pub fn stop_marker(&self) -> bool {
        self.last && !self.read && !self.write
    }

    /// Whether the group this request ends is answered: the last request
    /// of a group, unless it is a stop marker.
    pub fn needs_response(&self) -> bool {
        self.last && !self.stop_marker()
    }
}

/// The answer to a page group (PCIe 10.4.2.1, PRG Response Message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageResponse {
    /// The pages are there: the device retries its translation.
    Success,
    /// The request cannot be served (no such page): the device reports
    /// it for this request and goes on.
    Invalid,
    /// Something is wrong beyond this request: the device stops making
    /// page requests until its PRI is reset.
    Failure,
}

impl PageResponse {
    /// The Response Code field: 0 success, 1 invalid request, 0xf
    /// response failure.
    pub fn code(self) -> u8 {
        match self {
            PageResponse::Success => 0,
            PageResponse::Invalid => 1,
            PageResponse::Failure => 0xf,
        }
    }
}

/// What one pass over an IOMMU's page request queue saw. `E` is the
/// driver's error for a descriptor it could not take (skipped, never
/// answered).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrqPass<E> {
    /// The requests taken, in queue order.
    pub requests: Vec<PageRequest>,
    /// Descriptors that were not page requests the driver can serve.
    pub rejected: Vec<E>,
    /// The queue had overflowed: requests were refused, so devices may
    /// be waiting on requests nobody will answer.
    pub overflow_seen: bool,
    /// The overflow was cleared (only once the queue read empty), so the
    /// unit takes requests again.
    pub overflow_cleared: bool,
}

impl<E> Default for PrqPass<E> {
    fn default() -> Self {
        PrqPass {
            requests: Vec::new(),
            rejected: Vec::new(),
            overflow_seen: false,
            overflow_cleared: false,
        }
    }
}

impl<E> PrqPass<E> {
    /// Nothing seen: no request, no rejected descriptor, no overflow.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.rejected.is_empty() && !self.overflow_seen
    }

    /// The requests whose groups want an answer (see
    /// [`PageRequest::needs_response`]).
    pub fn to_answer(&self) -> impl Iterator<Item = &PageRequest> {
        self.requests.iter().filter(|r| r.needs_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(read: bool, write: bool, last: bool) -> PageRequest {
        PageRequest {
            dev: DeviceId(0x10),
            pasid: Some(Pasid(5)),
            addr: 0x4000,
            read,
            write,
            privileged: false,
            exec: false,
            last,
            group: 3,
        }
    }

    #[test]
    fn response_codes_are_the_pcie_ones() {
        assert_eq!(PageResponse::Success.code(), 0);
        assert_eq!(PageResponse::Invalid.code(), 1);
        assert_eq!(PageResponse::Failure.code(), 0xf);
    }

    #[test]
    fn only_the_last_request_of_a_group_is_answered_and_stop_markers_never() {
        assert!(req(true, false, true).needs_response());
        assert!(req(false, true, true).needs_response());
        assert!(!req(true, true, false).needs_response(), "not last");
        let stop = req(false, false, true);
        assert!(stop.stop_marker() && !stop.needs_response());
        assert!(!req(false, false, false).stop_marker());
    }

    #[test]
    fn a_pass_lists_what_to_answer() {
        let mut pass: PrqPass<()> = PrqPass::default();
        assert!(pass.is_empty());
        pass.overflow_seen = true;
        assert!(!pass.is_empty(), "an overflow alone is news");
        pass.requests = alloc::vec![
            req(true, false, false),
            req(true, false, true),
            req(false, false, true)
        ];
        let answer: Vec<_> = pass.to_answer().collect();
        assert_eq!(answer, [&req(true, false, true)]);
    }
}
