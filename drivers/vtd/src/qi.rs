//! Invalidation-queue descriptors (VT-d spec 6.5.2). In scalable mode the
//! queue holds 256-bit descriptors (IQA_REG.DW = 1); the upper 128 bits
//! of these are zero.

pub const CONTEXT_CACHE: u64 = 0x1;
pub const IOTLB: u64 = 0x2;
pub const DEVICE_TLB: u64 = 0x3;
pub const WAIT: u64 = 0x5;
pub const PASID_IOTLB: u64 = 0x6;
pub const PASID_CACHE: u64 = 0x7;

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
    /// Invalidation wait: writes `data` at `addr` when everything before
    /// it completed.
    Wait {
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
            // Status write (SW, bit 5) and fence (FN, bit 6).
            Descriptor::Wait { addr, data } => [
                WAIT | (1 << 5) | (1 << 6) | (u64::from(data) << 32),
                addr & !0x3,
            ],
        };
        [a, b, 0, 0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
