//! Implementation errata, keyed by SMMU_IIDR (implementer, product,
//! variant, revision), as Linux's arm-smmu-v3 applies them: a feature the
//! ID registers offer but a known-broken implementation must not be
//! trusted with is cleared before anything is built on it.
use crate::idr::Features;

/// JEP106 code of Arm in IIDR.Implementer.
const ARM: u16 = 0x43b;
const MMU_600: u16 = 0x483;
const MMU_700: u16 = 0x487;

/// What working around an erratum takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workaround {
    /// No stage 1 over stage 2 (`Features::nesting` cleared).
    NoNesting,
    /// No more than this many commands before a CMD_SYNC.
    SyncEvery(usize),
    /// A feature this driver does not use (SEV wake-ups, broadcast TLB
    /// maintenance): nothing to clear, named so the log says it was seen.
    Unused(&'static str),
}

/// One implementation erratum.
#[derive(Debug, Clone, Copy)]
pub struct Erratum {
    /// Arm's erratum number.
    pub number: u32,
    pub product: &'static str,
    implementer: u16,
    product_id: u16,
    /// Whether it affects (variant, revision), the rNpM of the part.
    affects: fn(u8, u8) -> bool,
    pub workaround: &'static [Workaround],
}

/// Every erratum the driver knows.
pub const ERRATA: &[Erratum] = &[
    Erratum {
        number: 1076982,
        product: "MMU-600",
        implementer: ARM,
        product_id: MMU_600,
        affects: |v, r| v == 0 && r <= 2,
        workaround: &[Workaround::Unused("SEV")],
    },
    Erratum {
        number: 1209401,
        product: "MMU-600",
        implementer: ARM,
        product_id: MMU_600,
        affects: |v, _| v < 2,
        workaround: &[Workaround::NoNesting],
    },
    Erratum {
        number: 2812531,
        product: "MMU-700",
        implementer: ARM,
        product_id: MMU_700,
        affects: |_, _| true,
        // As Linux: a CMD_SYNC at least every 64 entries.
        workaround: &[Workaround::Unused("BTM"), Workaround::SyncEvery(63)],
    },
    Erratum {
        number: 2268618,
        product: "MMU-700",
        implementer: ARM,
        product_id: MMU_700,
        affects: |v, r| v < 1 || (v == 1 && r < 1),
        workaround: &[Workaround::NoNesting],
    },
];

/// The errata of the SMMU `f` describes, applied to `f`.
pub fn apply(f: &mut Features) -> alloc::vec::Vec<&'static Erratum> {
    let found: alloc::vec::Vec<&'static Erratum> = ERRATA
        .iter()
        .filter(|e| {
            e.implementer == f.implementer
                && e.product_id == f.product
                && (e.affects)(f.variant, f.revision)
        })
        .collect();
    if found
        .iter()
        .any(|e| e.workaround.contains(&Workaround::NoNesting))
    {
        f.nesting = false;
    }
    found
}

/// The fewest commands any erratum in `errata` allows before a CMD_SYNC.
pub fn sync_every(errata: &[&Erratum]) -> Option<usize> {
    errata
        .iter()
        .flat_map(|e| e.workaround)
        .filter_map(|w| match *w {
            Workaround::SyncEvery(n) => Some(n),
            _ => None,
        })
        .min()
}

impl core::fmt::Display for Erratum {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} erratum {}:", self.product, self.number)?;
        for (i, w) in self.workaround.iter().enumerate() {
            f.write_str(if i == 0 { " " } else { "; " })?;
            match *w {
                Workaround::NoNesting => f.write_str("no nesting")?,
                Workaround::SyncEvery(n) => write!(f, "a CMD_SYNC every {n} commands")?,
                Workaround::Unused(what) => write!(f, "{what} (unused)")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn features(iidr: u32) -> Features {
        // Both stages, AArch64 tables, 4 KiB granule.
        let idr0 = 2 << 2 | 1 << 1 | 1;
        Features::decode([idr0, 0, 0, 0, 0, 1 << 4], iidr).expect("usable")
    }

    /// IIDR of an Arm part: product, variant (rN), revision (pM).
    fn arm(product: u16, variant: u8, revision: u8) -> u32 {
        u32::from(product) << 20
            | u32::from(variant) << 16
            | u32::from(revision) << 12
            | u32::from(ARM)
    }

    fn numbers(iidr: u32) -> (alloc::vec::Vec<u32>, bool, Option<usize>) {
        let mut f = features(iidr);
        let found = apply(&mut f);
        (
            found.iter().map(|e| e.number).collect(),
            f.nesting,
            sync_every(&found),
        )
    }

    /// The errata table follows IIDR as Linux's does (issue 13, point 9):
    /// early MMU-600s and MMU-700s lose nesting, MMU-700s sync every 63
    /// commands, other parts (QEMU's IIDR is 0) keep everything.
    #[test]
    fn errata_follow_the_iidr() {
        assert_eq!(numbers(0), (vec![], true, None), "QEMU");
        assert_eq!(
            numbers(arm(MMU_600, 0, 2)),
            (vec![1076982, 1209401], false, None)
        );
        assert_eq!(numbers(arm(MMU_600, 1, 0)), (vec![1209401], false, None));
        assert_eq!(numbers(arm(MMU_600, 2, 0)), (vec![], true, None));
        assert_eq!(
            numbers(arm(MMU_700, 0, 1)),
            (vec![2812531, 2268618], false, Some(63))
        );
        assert_eq!(numbers(arm(MMU_700, 1, 1)), (vec![2812531], true, Some(63)));
        // Another implementer's product 0x483 is no MMU-600.
        assert_eq!(
            numbers(arm(MMU_600, 0, 0) & !0xfff | 0x42),
            (vec![], true, None)
        );
    }

    #[test]
    fn errata_are_named_in_the_log() {
        let mut f = features(arm(MMU_700, 0, 0));
        let found = apply(&mut f);
        let text: alloc::vec::Vec<alloc::string::String> =
            found.iter().map(|e| alloc::format!("{e}")).collect();
        assert_eq!(
            text,
            [
                "MMU-700 erratum 2812531: BTM (unused); a CMD_SYNC every 63 commands",
                "MMU-700 erratum 2268618: no nesting"
            ]
        );
    }
}
