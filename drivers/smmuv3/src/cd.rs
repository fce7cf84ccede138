//! Context descriptors (IHI 0070, 5.4) for AArch64 stage 1 with the 4 KiB
//! granule, and level-1 CD table descriptors (5.3). A CD is eight
//! doublewords; dword 0 holds V. A live CD changes through
//! `kernel::iommu::entry::write_entry` with the bits `EntryFormat::used`
//! names.
use crate::{field, walk_cache, walk_share, Coherency};

/// What goes in a CD.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CdConfig {
    pub asid: u16,
    /// The stage-1 table's root (`TTB0`).
    pub ttb0: u64,
    /// Input address bits (T0SZ = 64 - ias).
    pub ias: u8,
    /// Intermediate physical address size: the IDR5.OAS encoding (IPS).
    pub ips: u8,
    /// MAIR for the table's AttrIndx values.
    pub mair: u64,
    /// How the SMMU walks TTB0 (IRGN0, ORGN0, SH0).
    pub walk: Coherency,
    /// Hardware updates of the leaves (IDR0.HTTU's encoding): 1 sets the
    /// access flag (HA), 2 also the dirty state of DBM leaves (HD).
    pub httu: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cd(pub [u64; 8]);

impl Cd {
    /// A valid CD: TTB0 walks with the 4 KiB granule, write-back
    /// inner-shareable walks (non-cacheable outer-shareable ones on a
    /// non-coherent SMMU), TTB1 disabled, AArch64, faults recorded and
    /// aborted (not stalled), the ASID private to the SMMU.
    pub fn new(c: &CdConfig) -> Cd {
        let w0 = field(64 - u64::from(c.ias), 5, 0)
            // TG0 0: 4 KiB.
            | field(walk_cache(c.walk), 9, 8)
            | field(walk_cache(c.walk), 11, 10)
            | field(walk_share(c.walk), 13, 12)
            // EPD1: no TTB1 walks.
            | (1 << 30)
            // V.
            | (1 << 31)
            | field(u64::from(c.ips), 34, 32)
            // AA64, R (record), A (abort), ASET (not shared with the CPU).
            | (1 << 41)
            | (1 << 45)
            | (1 << 46)
            | (1 << 47)
            | (u64::from(c.httu >= 2) << 42)
            | (u64::from(c.httu >= 1) << 43)
            | field(u64::from(c.asid), 63, 48);
        Cd([w0, c.ttb0 & 0x000f_ffff_ffff_fff0, 0, c.mair, 0, 0, 0, 0])
    }

    /// A valid CD with both translation tables disabled (EPD0, EPD1) and
    /// faults recorded: every access takes a translation fault that names
    /// its address, which an invalid CD's C_BAD_CD would not.
    pub fn blocking(asid: u16) -> Cd {
        // T0SZ in the architected range (16..=39 for the 4 KiB granule,
        // here 48 bits) although EPD0 stops every walk: a CD with T0SZ 0
        // is ILLEGAL (C_BAD_CD) on hardware that checks it.
        let w0 = field(64 - 48, 5, 0)
            | (1 << 14)
            | (1 << 30)
            | (1 << 31)
            | (1 << 41)
            | (1 << 45)
            | (1 << 46)
            | (1 << 47)
            | field(u64::from(asid), 63, 48);
        Cd([w0, 0, 0, 0, 0, 0, 0, 0])
    }

    /// The CD of an unused substream.
    pub fn invalid() -> Cd {
        Cd([0; 8])
    }

    pub fn valid(&self) -> bool {
        self.0[0] & (1 << 31) != 0
    }
}

/// The bits of a CD the SMMU reads (for
/// [`kernel::iommu::entry::write_entry`]): all of dwords 0, 1, 3 and 4
/// (control, TTB0, MAIR, AMAIR) of a valid CD, and TTB1 unless EPD1.
impl kernel::iommu::entry::EntryFormat<8> for Cd {
    const VALID: (usize, u64) = (0, 1 << 31);

    fn used(e: &[u64; 8]) -> [u64; 8] {
        if e[0] & (1 << 31) == 0 {
            return [1 << 31, 0, 0, 0, 0, 0, 0, 0];
        }
        let ttb1 = if e[0] & (1 << 30) == 0 { !0 } else { 0 };
        [!0, !0, ttb1, !0, !0, 0, 0, 0]
    }
}

/// A level-1 CD table descriptor pointing at a 4 KiB leaf table (64 CDs).
pub fn l1_descriptor(l2_table: u64) -> u64 {
    (l2_table & 0x000f_ffff_ffff_f000) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_at_their_places() {
        let cd = Cd::new(&CdConfig {
            asid: 0xbeef,
            ttb0: 0x4567_8000,
            ias: 48,
            ips: 5,
            mair: 0x04ff,
            walk: Coherency::Coherent,
            httu: 0,
        });
        let want0 = 16
            | (1 << 8)
            | (1 << 10)
            | (3 << 12)
            | (1 << 30)
            | (1 << 31)
            | (5 << 32)
            | (1 << 41)
            | (1 << 45)
            | (1 << 46)
            | (1 << 47)
            | (0xbeef << 48);
        assert_eq!(cd.0[0], want0);
        assert_eq!(cd.0[1], 0x4567_8000);
        assert_eq!(cd.0[3], 0x04ff);
        assert!(cd.valid() && !Cd::invalid().valid());
        assert_eq!(l1_descriptor(0x4001_2000), 0x4001_2001);
        let b = Cd::blocking(7);
        assert!(b.valid());
        assert_eq!(
            b.0[0] & ((1 << 14) | (1 << 30)),
            (1 << 14) | (1 << 30),
            "EPD0, EPD1"
        );
        assert_eq!(b.0[0] >> 48, 7);
        // A legal T0SZ even though no walk happens (IHI 0070, 5.4: an
        // out-of-range T0SZ makes the CD ILLEGAL).
        let t0sz = b.0[0] & 0x3f;
        assert!((16..=39).contains(&t0sz), "blocking CD T0SZ {t0sz}");
    }

    fn cd_with(walk: Coherency, httu: u8) -> Cd {
        Cd::new(&CdConfig {
            asid: 9,
            ttb0: 0x4567_8000,
            ias: 48,
            ips: 5,
            mair: 0x04ff,
            walk,
            httu,
        })
    }

    /// HA (bit 43) with HTTU 1, HD (bit 42) too with HTTU 2; nothing else
    /// changes.
    #[test]
    fn httu_sets_ha_and_hd() {
        let cd = |httu| cd_with(Coherency::Coherent, httu).0[0];
        assert_eq!(cd(0) & (3 << 42), 0);
        assert_eq!(cd(1) ^ cd(0), 1 << 43);
        assert_eq!(cd(2) ^ cd(0), 3 << 42);
    }

    /// A non-coherent SMMU walks TTB0 non-cacheable (IRGN0 [9:8] and
    /// ORGN0 [11:10] 0) and outer shareable (SH0 [13:12] 2); the rest of
    /// the CD is the coherent one's.
    #[test]
    fn non_coherent_walk_attributes() {
        let cd = |walk| cd_with(walk, 0);
        let (c, n) = (cd(Coherency::Coherent), cd(Coherency::NonCoherent));
        assert_eq!((n.0[0] >> 8) & 0x3f, 2 << 4);
        assert_eq!((c.0[0] >> 8) & 0x3f, 1 | (1 << 2) | (3 << 4));
        assert_eq!(c.0[0] & !(0x3f << 8), n.0[0] & !(0x3f << 8));
        assert_eq!(&c.0[1..], &n.0[1..]);
    }
}
