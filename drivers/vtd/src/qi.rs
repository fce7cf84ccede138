//! Invalidation-queue descriptors (VT-d spec 6.5.2). In scalable mode the
//! queue holds 256-bit descriptors (IQA_REG.DW = 1); the upper 128 bits
//! of these are zero.

pub const CONTEXT_CACHE: u64 = 0x1;
pub const IOTLB: u64 = 0x2;
pub const DEVICE_TLB: u64 = 0x3;
pub const WAIT: u64 = 0x5;
pub const PASID_IOTLB: u64 = 0x6;
pub const PASID_CACHE: u64 = 0x7;
pub const PASID_DEVICE_TLB: u64 = 0x8;
pub const PAGE_GROUP_RESPONSE: u64 = 0x9;

/// What a device-TLB invalidation covers, in the ATS size encoding
/// (PCIe ATS 10.3.8): the address with S = 0 is one page; with S = 1 the
/// range is 2^(n + 1) pages, n the number of ones from address bit 12 up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtsRange {
    /// Everything: address bits 62:12 all ones, bit 63 zero, S = 1.
    All,
    /// 2^`order` pages from `addr` (aligned to that size).
    Pages { addr: u64, order: u8 },
}

impl AtsRange {
    /// Address bits 63:12 and S.
    pub fn encode(self) -> (u64, bool) {
        match self {
            AtsRange::All => (((1 << 63) - 1) & !0xfff, true),
            AtsRange::Pages { addr, order: 0 } => (addr & !0xfff, false),
            AtsRange::Pages { addr, order } => {
                // Ones in bits 12 .. 12 + order - 2; bit 12 + order - 1 stays 0.
                let order = u32::from(order.min(51));
                let ones = ((1u64 << (11 + order)) - 1) & !0xfff;
                ((addr & !0xfff & !((1u64 << (12 + order)) - 1)) | ones, true)
            }
        }
    }
}

/// The Max Invalidations Pending field from the ATS Invalidate Queue
/// Depth: 32 and more is 0 (Linux's `qi_flush_dev_iotlb` does the same).
fn mip(queue_depth: u8) -> u64 {
    if queue_depth >= 32 {
        0
    } else {
        u64::from(queue_depth)
    }
}

/// PFSID at bits 15:12 and 63:52 of qword 0 (only with ECAP.DIT; the
/// bits are reserved otherwise, so `None` writes zeros).
fn pfsid(p: Option<u16>) -> u64 {
    p.map_or(0, |p| {
        let p = u64::from(p);
        ((p & 0xf) << 12) | ((p >> 4) << 52)
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    /// Context-cache invalidation: global, of a domain, or of one device.
    ContextGlobal,
    ContextDomain {
        did: u16,
    },
    ContextDevice {
        did: u16,
        sid: u16,
    },
    /// PASID-cache invalidation: all of it, of a domain, or of one PASID
    /// in it.
    PasidCacheAll,
    PasidCacheDomain {
        did: u16,
    },
    PasidCachePasid {
        did: u16,
        pasid: u32,
    },
    /// IOTLB invalidation (requests without PASID; second-level).
    IotlbGlobal,
    IotlbDomain {
        did: u16,
    },
    /// 2^`am` pages from `addr` (aligned to that size).
    IotlbPages {
        did: u16,
        addr: u64,
        am: u8,
    },
    /// PASID-based IOTLB invalidation: all of a PASID, or pages of it.
    PasidIotlbAll {
        did: u16,
        pasid: u32,
    },
    PasidIotlbPages {
        did: u16,
        pasid: u32,
        addr: u64,
        am: u8,
    },
    /// Device-TLB invalidation of a device's translations for requests
    /// without PASID (type 3). `pfsid` only where ECAP.DIT.
    DeviceTlb {
        sid: u16,
        pfsid: Option<u16>,
        queue_depth: u8,
        range: AtsRange,
    },
    /// PASID-based device-TLB invalidation (type 8): of one PASID, or
    /// with `pasid: None` of every PASID of the device (G = 1).
    PasidDeviceTlb {
        sid: u16,
        pfsid: Option<u16>,
        queue_depth: u8,
        pasid: Option<u32>,
        range: AtsRange,
    },
    /// Page group response (type 9) to the page group `group` of
    /// requester `rid` under `pasid`; `code` is the PCIe response code
    /// (0 success, 1 invalid request, 0xf failure).
    PageGroupResponse {
        rid: u16,
        pasid: u32,
        code: u8,
        last: bool,
        group: u16,
    },
    /// Invalidation wait: writes `data` at `addr` when everything before
    /// it completed.
    Wait {
        addr: u64,
        data: u32,
    },
    /// An invalidation wait that also drains page requests (PD, bit 7):
    /// only for units with ECAP.PDS, where the bit is otherwise reserved.
    DrainWait {
        addr: u64,
        data: u32,
    },
}

impl Descriptor {
    pub fn encode(&self) -> [u64; 4] {
        let [a, b] = match *self {
            Descriptor::ContextGlobal => [CONTEXT_CACHE | (1 << 4), 0],
            Descriptor::ContextDomain { did } => {
                [CONTEXT_CACHE | (2 << 4) | (u64::from(did) << 16), 0]
            }
            Descriptor::ContextDevice { did, sid } => [
                CONTEXT_CACHE | (3 << 4) | (u64::from(did) << 16) | (u64::from(sid) << 32),
                0,
            ],
            Descriptor::PasidCacheAll => [PASID_CACHE | (3 << 4), 0],
            Descriptor::PasidCacheDomain { did } => [PASID_CACHE | (u64::from(did) << 16), 0],
            Descriptor::PasidCachePasid { did, pasid } => [
                PASID_CACHE
                    | (1 << 4)
                    | (u64::from(did) << 16)
                    | (u64::from(pasid & 0xf_ffff) << 32),
                0,
            ],
            // Drain reads and writes (bits 7 and 6) with every IOTLB flush.
            Descriptor::IotlbGlobal => [IOTLB | (1 << 4) | (3 << 6), 0],
            Descriptor::IotlbDomain { did } => {
                [IOTLB | (2 << 4) | (3 << 6) | (u64::from(did) << 16), 0]
            }
            Descriptor::IotlbPages { did, addr, am } => [
                IOTLB | (3 << 4) | (3 << 6) | (u64::from(did) << 16),
                (addr & !0xfff) | u64::from(am & 0x3f),
            ],
            Descriptor::PasidIotlbAll { did, pasid } => [
                PASID_IOTLB
                    | (2 << 4)
                    | (u64::from(did) << 16)
                    | (u64::from(pasid & 0xf_ffff) << 32),
                0,
            ],
            Descriptor::PasidIotlbPages {
                did,
                pasid,
                addr,
                am,
            } => [
                PASID_IOTLB
                    | (3 << 4)
                    | (u64::from(did) << 16)
                    | (u64::from(pasid & 0xf_ffff) << 32),
                (addr & !0xfff) | u64::from(am & 0x3f),
            ],
            Descriptor::DeviceTlb {
                sid,
                pfsid: p,
                queue_depth,
                range,
            } => {
                let (addr, s) = range.encode();
                [
                    DEVICE_TLB | (mip(queue_depth) << 16) | (u64::from(sid) << 32) | pfsid(p),
                    addr | u64::from(s),
                ]
            }
            Descriptor::PasidDeviceTlb {
                sid,
                pfsid: p,
                queue_depth,
                pasid,
                range,
            } => {
                let (addr, s) = range.encode();
                [
                    PASID_DEVICE_TLB
                        | (mip(queue_depth) << 4)
                        | (u64::from(sid) << 16)
                        | (u64::from(pasid.unwrap_or(0) & 0xf_ffff) << 32)
                        | pfsid(p),
                    addr | (u64::from(s) << 11) | u64::from(pasid.is_none()),
                ]
            }
            // PASID present (PP, bit 4) always: responses to PASID-tagged
            // requests carry it, and QEMU refuses PP = 0.
            Descriptor::PageGroupResponse {
                rid,
                pasid,
                code,
                last,
                group,
            } => [
                PAGE_GROUP_RESPONSE
                    | (1 << 4)
                    | (u64::from(code & 0xf) << 12)
                    | (u64::from(rid) << 16)
                    | (u64::from(pasid & 0xf_ffff) << 32),
                (u64::from(last) << 2) | (u64::from(group & 0x1ff) << 3),
            ],
            // Status write (SW, bit 5) and fence (FN, bit 6).
            Descriptor::Wait { addr, data } => [
                WAIT | (1 << 5) | (1 << 6) | (u64::from(data) << 32),
                addr & !0x3,
            ],
            Descriptor::DrainWait { addr, data } => [
                WAIT | (1 << 5) | (1 << 6) | (1 << 7) | (u64::from(data) << 32),
                addr & !0x3,
            ],
        };
        [a, b, 0, 0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// QEMU 10.2's reserved masks (`intel_iommu_internal.h`): a descriptor
    /// with any of these bits set is refused (IQE). Type 3 qw0/qw1, type 8
    /// qw0/qw1, type 9 qw0/qw1, the wait's qw0 (bit 7, PD, reserved
    /// without ECAP.PDS).
    const QEMU_DEVICE_TLB: (u64, u64) = (0xffff_0000_ffe0_f1f0, 0xffe);
    const QEMU_PASID_DEVICE_TLB: (u64, u64) = (0xfff0_0000_0000_f000, 0x7fe);
    const QEMU_PAGE_GROUP_RESPONSE: (u64, u64) = (0xfff0_0000_0000_01e0, 0xffff_ffff_ffff_f003);
    const QEMU_WAIT_LO: u64 = 0xffff_f180;

    /// Everything the driver may send, with the widest fields.
    fn sent_by_the_driver() -> alloc::vec::Vec<Descriptor> {
        let mut v = alloc::vec::Vec::new();
        for range in [
            AtsRange::All,
            AtsRange::Pages {
                addr: 0xffff_ffff_f000,
                order: 0,
            },
            AtsRange::Pages {
                addr: 0x4000_0000,
                order: 18,
            },
        ] {
            for queue_depth in [1, 31, 32] {
                v.push(Descriptor::DeviceTlb {
                    sid: 0xffff,
                    pfsid: None,
                    queue_depth,
                    range,
                });
                for pasid in [None, Some(0xf_ffff)] {
                    v.push(Descriptor::PasidDeviceTlb {
                        sid: 0xffff,
                        pfsid: None,
                        queue_depth,
                        pasid,
                        range,
                    });
                }
            }
        }
        v
    }

    #[test]
    fn device_tlb_invalidations_set_no_bit_qemu_reserves() {
        for d in sent_by_the_driver() {
            let [lo, hi, ..] = d.encode();
            let (rlo, rhi) = match d {
                Descriptor::DeviceTlb { .. } => QEMU_DEVICE_TLB,
                _ => QEMU_PASID_DEVICE_TLB,
            };
            assert_eq!((lo & rlo, hi & rhi), (0, 0), "{d:x?}: {lo:#x} {hi:#x}");
        }
        for code in [0, 1, 0xf] {
            let [lo, hi, ..] = Descriptor::PageGroupResponse {
                rid: 0xffff,
                pasid: 0xf_ffff,
                code,
                last: true,
                group: 0x1ff,
            }
            .encode();
            let (rlo, rhi) = QEMU_PAGE_GROUP_RESPONSE;
            assert_eq!((lo & rlo, hi & rhi), (0, 0));
        }
        let wait = Descriptor::Wait {
            addr: 0x1000,
            data: 1,
        }
        .encode()[0];
        assert_eq!(wait & QEMU_WAIT_LO, 0, "no PD on a plain wait");
    }

    #[test]
    fn device_tlb_and_page_request_encodings() {
        // Type 3: MIP 5 at 20:16, SID 0x0210 at 47:32; 4 pages at
        // 0x4000_0000: S = 1 and bit 12 set (2^(1 + 1) pages).
        assert_eq!(
            Descriptor::DeviceTlb {
                sid: 0x0210,
                pfsid: None,
                queue_depth: 5,
                range: AtsRange::Pages {
                    addr: 0x4000_0000,
                    order: 2
                },
            }
            .encode(),
            [0x0210_0005_0003, 0x4000_1001, 0, 0]
        );
        // One page: S = 0; queue depth 32 is MIP 0.
        assert_eq!(
            Descriptor::DeviceTlb {
                sid: 0x0008,
                pfsid: None,
                queue_depth: 32,
                range: AtsRange::Pages {
                    addr: 0x1234_5678,
                    order: 0
                },
            }
            .encode()[..2],
            [0x0008_0000_0003, 0x1234_5000]
        );
        // Everything: bits 62:12 ones, S.
        assert_eq!(AtsRange::All.encode(), (0x7fff_ffff_ffff_f000, true));
        // Two pages: S alone (bit 12 zero); 2^9 pages: bits 12..19 ones.
        assert_eq!(
            AtsRange::Pages {
                addr: 0x2000,
                order: 1
            }
            .encode(),
            (0x2000, true)
        );
        assert_eq!(
            AtsRange::Pages {
                addr: 0x20_0000,
                order: 9
            }
            .encode(),
            (0x20_0000 | 0xf_f000, true)
        );
        // Type 8: MIP at 8:4, SID at 31:16, PASID at 51:32; S at bit 11.
        assert_eq!(
            Descriptor::PasidDeviceTlb {
                sid: 0x0210,
                pfsid: None,
                queue_depth: 4,
                pasid: Some(0x12345),
                range: AtsRange::Pages {
                    addr: 0x8000,
                    order: 1
                },
            }
            .encode(),
            [0x0001_2345_0210_0048, 0x8000 | 1 << 11, 0, 0]
        );
        // G = 1: every PASID of the device, the PASID field 0.
        assert_eq!(
            Descriptor::PasidDeviceTlb {
                sid: 0x0210,
                pfsid: None,
                queue_depth: 32,
                pasid: None,
                range: AtsRange::All,
            }
            .encode()[..2],
            [0x0210_0008, 0x7fff_ffff_ffff_f000 | 1 << 11 | 1]
        );
        // PFSID (with ECAP.DIT) at 15:12 and 63:52.
        let lo = Descriptor::DeviceTlb {
            sid: 1,
            pfsid: Some(0xabcd),
            queue_depth: 32,
            range: AtsRange::All,
        }
        .encode()[0];
        assert_eq!(lo, 0xabc0_0001_0000_d003);
        // Type 9: PP, RC 0xf at 15:12, RID at 31:16, PASID at 51:32; LPIG
        // bit 2, PRGI 11:3.
        assert_eq!(
            Descriptor::PageGroupResponse {
                rid: 0x0210,
                pasid: 0x12345,
                code: 0xf,
                last: true,
                group: 0x1ff,
            }
            .encode(),
            [0x0001_2345_0210_f019, 0xffc, 0, 0]
        );
        assert_eq!(
            Descriptor::PageGroupResponse {
                rid: 8,
                pasid: 1,
                code: 1,
                last: false,
                group: 3,
            }
            .encode()[..2],
            [0x0000_0001_0008_1019, 3 << 3]
        );
        // A drain wait: PD (bit 7) on top of SW and FN.
        assert_eq!(
            Descriptor::DrainWait {
                addr: 0x8000_0040,
                data: 2
            }
            .encode()[..2],
            [0x2_0000_00e5, 0x8000_0040]
        );
    }

    #[test]
    fn encodings() {
        assert_eq!(Descriptor::ContextGlobal.encode()[0], 0x11);
        assert_eq!(
            Descriptor::ContextDevice {
                did: 3,
                sid: 0x0208
            }
            .encode(),
            [0x0208_0003_0031, 0, 0, 0]
        );
        assert_eq!(
            Descriptor::PasidCachePasid {
                did: 5,
                pasid: 0xfffff
            }
            .encode()[0],
            0x000f_ffff_0005_0017
        );
        // Granularity 11b: every PASID-cache entry.
        assert_eq!(Descriptor::PasidCacheAll.encode()[0], 0x37);
        assert_eq!(Descriptor::IotlbDomain { did: 2 }.encode()[0], 0x2_00e2);
        assert_eq!(
            Descriptor::IotlbPages {
                did: 2,
                addr: 0x4020_0000,
                am: 9
            }
            .encode(),
            [0x2_00f2, 0x4020_0009, 0, 0]
        );
        assert_eq!(
            Descriptor::PasidIotlbPages {
                did: 1,
                pasid: 7,
                addr: 0x1000,
                am: 0
            }
            .encode(),
            [0x7_0001_0036, 0x1000, 0, 0]
        );
        assert_eq!(
            Descriptor::PasidIotlbAll { did: 1, pasid: 7 }.encode()[0],
            0x7_0001_0026
        );
        assert_eq!(
            Descriptor::Wait {
                addr: 0x8000_0040,
                data: 0xabcd
            }
            .encode(),
            [0xabcd_0000_0065, 0x8000_0040, 0, 0]
        );
    }
}
