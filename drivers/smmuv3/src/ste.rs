//! Stream table entries (IHI 0070, 5.2) and level-1 stream table
//! descriptors (5.1). An STE is eight little-endian doublewords; dword 0
//! holds V. A live STE changes through `kernel::iommu::entry::write_entry`
//! with the bits `EntryFormat::used` names.
use crate::{field, walk_cache, walk_share, Coherency};

/// What an SMMU does with a stream's untagged traffic when stage 1 uses
/// substreams (STE.S1DSS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S1Dss {
    /// Untagged traffic faults.
    Terminate,
    /// Untagged traffic bypasses stage 1.
    Bypass,
    /// Untagged traffic uses substream 0: the primary domain.
    Substream0,
}

/// STE.S1Fmt: how the context-descriptor table is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdFmt {
    Linear,
    /// A level-1 table of descriptors to 4 KiB leaf tables (64 CDs each).
    TwoLevel4k,
    /// The same with 64 KiB leaf tables (1024 CDs each).
    TwoLevel64k,
}

impl CdFmt {
    /// log2 of the CDs in one leaf table (two-level formats).
    pub const fn leaf_log2(self) -> u8 {
        match self {
            CdFmt::Linear => 0,
            CdFmt::TwoLevel4k => 6,
            CdFmt::TwoLevel64k => 10,
        }
    }
}

/// The CD table an STE points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdTable {
    /// Physical address (64-byte aligned for linear, 4 KiB for 2-level).
    pub base: u64,
    /// log2 of the number of substreams (S1CDMax); 0 means one CD.
    pub log2_cds: u8,
    pub fmt: CdFmt,
    pub s1dss: S1Dss,
    /// How the SMMU fetches CDs (S1CIR, S1COR, S1CSH).
    pub walk: Coherency,
}

/// Stage-2 translation settings (the VTCR fields and S2TTB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage2 {
    pub vmid: u16,
    /// Input address bits (T0SZ = 64 - ias).
    pub ias: u8,
    /// Output address size: the IDR5.OAS encoding (PS).
    pub ps: u8,
    /// Starting level (SL0 for 4 KiB: 0 = level 2, 1 = level 1, 2 = level 0).
    pub sl0: u8,
    pub ttb: u64,
    /// How the SMMU walks the stage-2 table (S2IR0, S2OR0, S2SH0).
    pub walk: Coherency,
    /// Hardware updates of the leaves (IDR0.HTTU's encoding): 1 S2HA, 2
    /// S2HA and S2HD.
    pub httu: u8,
}

/// One stream table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ste(pub [u64; 8]);

const V: u64 = 1;
const CFG_ABORT: u64 = 0;
const CFG_BYPASS: u64 = 4;
const CFG_S1: u64 = 5;
const CFG_S2: u64 = 6;
const CFG_NESTED: u64 = 7;
/// SHCFG: use the incoming shareability.
const SHCFG_INCOMING: u64 = 1;

impl Ste {
    /// Every access of the stream aborts (and is reported).
    pub fn abort() -> Ste {
        Ste([V | field(CFG_ABORT, 3, 1), 0, 0, 0, 0, 0, 0, 0])
    }

    /// Accesses pass through untranslated.
    pub fn bypass() -> Ste {
        Ste([
            V | field(CFG_BYPASS, 3, 1),
            field(SHCFG_INCOMING, 45, 44),
            0,
            0,
            0,
            0,
            0,
            0,
        ])
    }

    fn s1_words(cd: &CdTable) -> (u64, u64) {
        let fmt = match cd.fmt {
            CdFmt::Linear => 0,
            CdFmt::TwoLevel4k => 1,
            CdFmt::TwoLevel64k => 2,
        };
        let dss = match cd.s1dss {
            S1Dss::Terminate => 0,
            S1Dss::Bypass => 1,
            S1Dss::Substream0 => 2,
        };
        let w0 = field(fmt, 5, 4)
            | (cd.base & 0x000f_ffff_ffff_ffc0)
            | field(u64::from(cd.log2_cds), 63, 59);
        let w1 = field(dss, 1, 0)
            | field(walk_cache(cd.walk), 3, 2)
            | field(walk_cache(cd.walk), 5, 4)
            | field(walk_share(cd.walk), 7, 6)
            // S1STALLD stays 0: it is RES0 where the SMMU has no stall
            // model, and CD.S = 0 already makes faults terminate.
            | field(SHCFG_INCOMING, 45, 44);
        (w0, w1)
    }

    fn s2_words(s2: &Stage2) -> (u64, u64) {
        let vtcr = field(64 - u64::from(s2.ias), 5, 0)
            | field(u64::from(s2.sl0), 7, 6)
            | field(walk_cache(s2.walk), 9, 8)
            | field(walk_cache(s2.walk), 11, 10)
            | field(walk_share(s2.walk), 13, 12)
            // TG 0: 4 KiB.
            | field(u64::from(s2.ps), 18, 16);
        let w2 = field(u64::from(s2.vmid), 15, 0)
            | (vtcr << 32)
            // S2AA64, S2PTW (protected table walk), S2R (record faults).
            | (1 << 51)
            | (1 << 54)
            | (u64::from(s2.httu >= 2) << 55)
            | (u64::from(s2.httu >= 1) << 56)
            | (1 << 58);
        (w2, s2.ttb & 0x000f_ffff_ffff_fff0)
    }

    /// Stage 1 through the CD table `cd`.
    pub fn stage1(cd: &CdTable) -> Ste {
        let (w0, w1) = Self::s1_words(cd);
        Ste([V | field(CFG_S1, 3, 1) | w0, w1, 0, 0, 0, 0, 0, 0])
    }

    pub fn stage2(s2: &Stage2) -> Ste {
        let (w2, w3) = Self::s2_words(s2);
        Ste([
            V | field(CFG_S2, 3, 1),
            field(SHCFG_INCOMING, 45, 44),
            w2,
            w3,
            0,
            0,
            0,
            0,
        ])
    }

    /// Stage 1 (the CD table) over stage 2.
    pub fn nested(cd: &CdTable, s2: &Stage2) -> Ste {
        let (w0, w1) = Self::s1_words(cd);
        let (w2, w3) = Self::s2_words(s2);
        Ste([V | field(CFG_NESTED, 3, 1) | w0, w1, w2, w3, 0, 0, 0, 0])
    }

    pub fn valid(&self) -> bool {
        self.0[0] & V != 0
    }
}

/// The bits of an STE the SMMU reads for the configuration it selects
/// (for [`kernel::iommu::entry::write_entry`]).
impl kernel::iommu::entry::EntryFormat<8> for Ste {
    const VALID: (usize, u64) = (0, V);

    fn used(e: &[u64; 8]) -> [u64; 8] {
        let mut u = [0u64; 8];
        u[0] = V;
        if e[0] & V == 0 {
            return u;
        }
        // V and Config.
        u[0] |= field(!0, 3, 0);
        // MemAttr, MTCFG, ALLOCCFG, SHCFG, NSCFG, PRIVCFG, INSTCFG: the
        // attribute overrides of incoming transactions.
        let overrides = field(!0, 51, 32);
        let cfg = (e[0] >> 1) & 7;
        let s1 = cfg == CFG_S1 || cfg == CFG_NESTED;
        let s2 = cfg == CFG_S2 || cfg == CFG_NESTED;
        if cfg == CFG_BYPASS {
            u[1] |= overrides;
        }
        if s1 {
            // S1Fmt, S1ContextPtr, S1CDMax.
            u[0] |= field(!0, 63, 59) | field(!0, 51, 4);
            // S1DSS, S1CIR/COR/CSH, S1STALLD, EATS, STRW.
            u[1] |= field(!0, 7, 0) | (1 << 27) | field(!0, 31, 28) | overrides;
        }
        if s2 {
            // EATS; S2VMID, the VTCR fields, S2AA64 .. S2R; S2TTB.
            u[1] |= field(!0, 29, 28) | overrides;
            u[2] |= field(!0, 15, 0) | field(!0, 58, 32);
            u[3] |= field(!0, 51, 4);
        }
        u
    }
}

/// A level-1 stream table descriptor: `span` is log2 of the STEs in the
/// level-2 table plus one (0 means none: the streams are invalid).
pub fn l1_descriptor(l2_table: u64, l2_log2_stes: u8) -> u64 {
    field(u64::from(l2_log2_stes) + 1, 4, 0) | (l2_table & 0x000f_ffff_ffff_ffc0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abort_and_bypass() {
        assert_eq!(Ste::abort().0, [1, 0, 0, 0, 0, 0, 0, 0]);
        let b = Ste::bypass();
        assert_eq!(b.0[0], 0b1001);
        assert_eq!(b.0[1], 1 << 44);
        assert!(b.valid());
    }

    #[test]
    fn stage1_with_substreams() {
        let s = Ste::stage1(&CdTable {
            base: 0x4012_3000,
            log2_cds: 20,
            fmt: CdFmt::TwoLevel64k,
            s1dss: S1Dss::Substream0,
            walk: Coherency::Coherent,
        });
        // V, Config 5 (0b101 << 1), S1Fmt 2 (<< 4), S1ContextPtr, S1CDMax 20 (<< 59).
        assert_eq!(s.0[0], 1 | (5 << 1) | (2 << 4) | 0x4012_3000 | (20 << 59));
        // S1DSS 2, S1CIR/S1COR WBRA, S1CSH inner, SHCFG incoming.
        assert_eq!(s.0[1], 2 | (1 << 2) | (1 << 4) | (3 << 6) | (1 << 44));
        assert_eq!(&s.0[2..], &[0; 6]);
    }

    #[test]
    fn stage2_and_nested() {
        let s2 = Stage2 {
            vmid: 0x1234,
            ias: 48,
            ps: 4,
            sl0: 2,
            ttb: 0x8000_1000,
            walk: Coherency::Coherent,
            httu: 0,
        };
        let s = Ste::stage2(&s2);
        assert_eq!(s.0[0], 1 | (6 << 1));
        // S2HD (55) and S2HA (56) only with HTTU.
        assert_eq!(s.0[2] & (3 << 55), 0);
        let d = Ste::stage2(&Stage2 { httu: 2, ..s2 });
        assert_eq!(d.0[2] ^ s.0[2], 3 << 55);
        let vtcr: u64 = 16 | (2 << 6) | (1 << 8) | (1 << 10) | (3 << 12) | (4 << 16);
        assert_eq!(
            s.0[2],
            0x1234 | (vtcr << 32) | (1 << 51) | (1 << 54) | (1 << 58)
        );
        assert_eq!(s.0[3], 0x8000_1000);
        let cd = CdTable {
            base: 0x4000_0040,
            log2_cds: 0,
            fmt: CdFmt::Linear,
            s1dss: S1Dss::Terminate,
            walk: Coherency::Coherent,
        };
        let n = Ste::nested(&cd, &s2);
        assert_eq!(n.0[0], 1 | (7 << 1) | 0x4000_0040);
        assert_eq!((n.0[2], n.0[3]), (s.0[2], s.0[3]));
    }

    /// A non-coherent SMMU fetches CDs and walks stage 2 non-cacheable and
    /// outer shareable (IHI 0070 5.2: S1CIR/S1COR/S1CSH, S2IR0/S2OR0/S2SH0);
    /// nothing else in the entry changes.
    #[test]
    fn non_coherent_walk_attributes() {
        let cd = |walk| CdTable {
            base: 0x4012_3000,
            log2_cds: 6,
            fmt: CdFmt::Linear,
            s1dss: S1Dss::Substream0,
            walk,
        };
        let s2 = |walk| Stage2 {
            vmid: 3,
            ias: 48,
            ps: 5,
            sl0: 2,
            ttb: 0x8000_1000,
            walk,
            httu: 0,
        };
        let (c, n) = (Coherency::Coherent, Coherency::NonCoherent);
        let s1c = Ste::stage1(&cd(c)).0[1];
        let s1n = Ste::stage1(&cd(n)).0[1];
        // S1CIR [3:2] and S1COR [5:4] 0 (non-cacheable), S1CSH [7:6] 2 (outer).
        assert_eq!(s1n, 2 | (2 << 6) | (1 << 44));
        assert_eq!(s1c & !0xfc, s1n & !0xfc);
        let s2c = Ste::stage2(&s2(c)).0[2];
        let s2n = Ste::stage2(&s2(n)).0[2];
        // S2IR0 [41:40] and S2OR0 [43:42] 0, S2SH0 [45:44] 2.
        assert_eq!((s2n >> 40) & 0x3f, 2 << 4);
        assert_eq!((s2c >> 40) & 0x3f, 1 | (1 << 2) | (3 << 4));
        assert_eq!(s2c & !(0x3f << 40), s2n & !(0x3f << 40));
        let nested = Ste::nested(&cd(n), &s2(n));
        assert_eq!((nested.0[1], nested.0[2]), (s1n, s2n));
    }

    #[test]
    fn l1_descriptors() {
        // 256 STEs per level-2 table: span 9.
        assert_eq!(l1_descriptor(0x4000_2000, 8), 0x4000_2000 | 9);
    }
}
