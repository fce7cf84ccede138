//! CAP_REG (offset 0x08) and ECAP_REG (0x10), VT-d spec 11.4.2 and 11.4.3.
use crate::bits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Domain ids the unit supports.
    pub domains: u32,
    pub required_write_buffer_flush: bool,
    pub caching_mode: bool,
    /// Supported adjusted guest address widths (bit 1: 39-bit 3-level,
    /// bit 2: 48-bit 4-level, bit 3: 57-bit 5-level).
    pub sagaw: u8,
    /// Maximum guest address width.
    pub mgaw: u8,
    /// Fault recording registers: where, and how many.
    pub fault_record_offset: u32,
    pub fault_records: u16,
    /// Second-level large pages: bit 0 2 MiB, bit 1 1 GiB.
    pub second_level_large_pages: u8,
    pub page_selective_invalidation: bool,
    /// Largest address mask (log2 pages) a page-selective invalidation takes.
    pub max_address_mask: u8,
    pub first_level_1g: bool,
    pub first_level_5level: bool,
}

impl Caps {
    pub fn decode(cap: u64) -> Caps {
        Caps {
            domains: 1 << (4 + 2 * bits(cap, 2, 0)),
            required_write_buffer_flush: bits(cap, 4, 4) == 1,
            caching_mode: bits(cap, 7, 7) == 1,
            sagaw: bits(cap, 12, 8) as u8,
            mgaw: bits(cap, 21, 16) as u8 + 1,
            fault_record_offset: bits(cap, 33, 24) as u32 * 16,
            second_level_large_pages: bits(cap, 37, 34) as u8,
            page_selective_invalidation: bits(cap, 39, 39) == 1,
            fault_records: bits(cap, 47, 40) as u16 + 1,
            max_address_mask: bits(cap, 53, 48) as u8,
            first_level_1g: bits(cap, 56, 56) == 1,
            first_level_5level: bits(cap, 60, 60) == 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecaps {
    pub coherent: bool,
    pub queued_invalidation: bool,
    /// DT: the unit takes ATS translation requests and device-TLB
    /// invalidation descriptors.
    pub device_tlb: bool,
    pub interrupt_remapping: bool,
    pub pass_through: bool,
    pub snoop_control: bool,
    /// IOTLB registers' offset.
    pub iotlb_offset: u32,
    pub nested: bool,
    /// PRS: a page request queue.
    pub page_requests: bool,
    /// PASID bits supported (PSS + 1).
    pub pasid_bits: u8,
    pub pasid: bool,
    /// DIT: device-TLB invalidations carry the physical function's source
    /// id (PFSID); without it those bits are reserved.
    pub device_tlb_throttle: bool,
    /// PDS: the invalidation wait's Page-request Drain (PD) is honoured;
    /// without it the bit is reserved.
    pub page_request_drain: bool,
    pub scalable_mode: bool,
    pub second_level_ad: bool,
    pub second_level: bool,
    pub first_level: bool,
    /// SMPWC: scalable-mode page walks can snoop (with PWSNP set in the
    /// PASID entry); then page tables need no cache flushes.
    pub page_walk_coherency: bool,
}

impl Ecaps {
    pub fn decode(ecap: u64) -> Ecaps {
        Ecaps {
            coherent: bits(ecap, 0, 0) == 1,
            queued_invalidation: bits(ecap, 1, 1) == 1,
            device_tlb: bits(ecap, 2, 2) == 1,
            interrupt_remapping: bits(ecap, 3, 3) == 1,
            pass_through: bits(ecap, 6, 6) == 1,
            snoop_control: bits(ecap, 7, 7) == 1,
            iotlb_offset: bits(ecap, 17, 8) as u32 * 16,
            nested: bits(ecap, 26, 26) == 1,
            page_requests: bits(ecap, 29, 29) == 1,
            pasid_bits: bits(ecap, 39, 35) as u8 + 1,
            pasid: bits(ecap, 40, 40) == 1,
            device_tlb_throttle: bits(ecap, 41, 41) == 1,
            page_request_drain: bits(ecap, 42, 42) == 1,
            scalable_mode: bits(ecap, 43, 43) == 1,
            second_level_ad: bits(ecap, 45, 45) == 1,
            second_level: bits(ecap, 46, 46) == 1,
            first_level: bits(ecap, 47, 47) == 1,
            page_walk_coherency: bits(ecap, 48, 48) == 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_fields() {
        // ND 2 (256 domains), CM, SAGAW 39+48, MGAW 48, FRO 0x220, SLLPS
        // 2M+1G, PSI, NFR field 0 (one register), MAMV 18, FL1GP.
        let cap = 2
            | (1 << 7)
            | (0b0110 << 8)
            | (47 << 16)
            | (0x22 << 24)
            | (0b11 << 34)
            | (1 << 39)
            | (18 << 48)
            | (1 << 56);
        let c = Caps::decode(cap);
        assert_eq!(c.domains, 256);
        assert!(c.caching_mode && c.page_selective_invalidation && c.first_level_1g);
        assert!(!c.required_write_buffer_flush && !c.first_level_5level);
        assert_eq!((c.sagaw, c.mgaw), (0b0110, 48));
        assert_eq!((c.fault_record_offset, c.fault_records), (0x220, 1));
        assert_eq!((c.second_level_large_pages, c.max_address_mask), (3, 18));
    }

    #[test]
    fn ecap_fields() {
        let ecap = 1
            | 2
            | (1 << 6)
            | (0x50 << 8)
            | (7 << 35)
            | (1 << 40)
            | (1 << 43)
            | (1 << 46)
            | (1 << 47);
        let e = Ecaps::decode(ecap);
        assert!(e.coherent && e.queued_invalidation && e.pass_through);
        assert!(!e.device_tlb && !e.interrupt_remapping && !e.snoop_control && !e.nested);
        assert_eq!(e.iotlb_offset, 0x500);
        assert_eq!(e.pasid_bits, 8);
        assert!(e.pasid && e.scalable_mode && e.second_level && e.first_level);
        assert!(!e.page_walk_coherency);
        assert!(!e.page_requests && !e.page_request_drain && !e.device_tlb_throttle);
        // What `device-iotlb=on,x-pri=on` adds on the patched QEMU.
        let ats = Ecaps::decode(ecap | 1 << 2 | 1 << 29 | 1 << 42);
        assert!(ats.device_tlb && ats.page_requests && ats.page_request_drain);
        assert!(!ats.device_tlb_throttle);
        assert!(
            Ecaps::decode(ecap | 1 << 41).device_tlb_throttle,
            "DIT is bit 41"
        );
        assert!(
            Ecaps::decode(ecap | 1 << 48).page_walk_coherency,
            "SMPWC is bit 48"
        );
    }
}
