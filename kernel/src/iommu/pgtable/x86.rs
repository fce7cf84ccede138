//! Intel VT-d page-table formats (VT-d spec 3.x, chapter 9): first-level
//! translation, which is x86-64 4-level paging (9.7, "First-Stage Paging
//! Entries"), and second-level translation with 3 or 4 levels (9.8,
//! "Second-Stage Paging Entries"), for 39- and 48-bit guest address widths.
use super::{Format, Prot, Pte};

const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Large page (1 GiB at level 1, 2 MiB at level 2 of a 4-level table).
const PS: u64 = 1 << 7;

// First level (x86-64 paging).
const FL_P: u64 = 1 << 0;
const FL_RW: u64 = 1 << 1;
const FL_US: u64 = 1 << 2;
const FL_PWT: u64 = 1 << 3;
const FL_PCD: u64 = 1 << 4;
const FL_A: u64 = 1 << 5;
const FL_D: u64 = 1 << 6;
// XD (bit 63) is never set: it means something only with the PASID
// entry's NXE, which VT-d deprecates (execute requests are gone), so
// leaves carry no execute control and `Prot::exec` is ignored.

// Second level.
const SL_R: u64 = 1 << 0;
const SL_W: u64 = 1 << 1;
const SL_EMT_SHIFT: u32 = 3;
/// EMT write-back; 0 is uncacheable (device).
const SL_EMT_WB: u64 = 6;

/// x86-64 4-level paging, as VT-d first-level translation walks it.
/// 2 MiB pages always; 1 GiB pages when the unit has CAP.FS1GP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct X86FirstLevel {
    pub gib_pages: bool,
}

impl Format for X86FirstLevel {
    fn name(&self) -> &'static str {
        "x86-64 4-level paging (VT-d first level)"
    }

    #[inline]
    fn levels(&self) -> usize {
        4
    }

    fn oas(&self) -> u32 {
        52
    }

    #[inline]
    fn leaf_allowed(&self, level: usize) -> bool {
        level == 2 || (level == 1 && self.gib_pages)
    }

    /// Intermediate entries allow everything; the leaf decides.
    #[inline]
    fn encode_table(&self, table: u64, _level: usize) -> u64 {
        (table & ADDR_MASK) | FL_P | FL_RW | FL_US | FL_A
    }

    #[inline]
    fn encode_leaf(&self, pa: u64, level: usize, prot: Prot) -> u64 {
        let mut e = (pa & ADDR_MASK) | FL_P | FL_A;
        if level < 3 {
            e |= PS;
        }
        if prot.write {
            // Dirty set up front: the IOMMU need not write it back.
            e |= FL_RW | FL_D;
        }
        if !prot.privileged {
            e |= FL_US;
        }
        if prot.device {
            e |= FL_PCD | FL_PWT;
        }
        e
    }

    #[inline]
    /// x86 paging's D bit, which a first-level walk sets on a write.
    fn tracks_dirty(&self) -> bool {
        true
    }

    fn clean(&self, e: u64, _level: usize) -> Option<u64> {
        (e & FL_RW != 0).then_some(e & !FL_D)
    }

    fn dirtied(&self, e: u64, _level: usize) -> u64 {
        if e & FL_RW != 0 {
            e | FL_D
        } else {
            e
        }
    }

    fn is_dirty(&self, e: u64, _level: usize) -> bool {
        e & (FL_RW | FL_D) == FL_RW | FL_D
    }

    fn decode(&self, e: u64, level: usize) -> Pte {
        if e & FL_P == 0 {
            return Pte::Invalid;
        }
        if level < 3 && e & PS == 0 {
            return Pte::Table(e & ADDR_MASK);
        }
        if level == 0 || (level == 1 && !self.gib_pages) {
            return Pte::Invalid;
        }
        Pte::Leaf {
            pa: e & ADDR_MASK & !((1u64 << super::level_shift(4, level)) - 1),
            prot: Prot {
                read: true,
                write: e & FL_RW != 0,
                exec: false,
                privileged: e & FL_US == 0,
                device: e & FL_PCD != 0,
            },
        }
    }
}

/// VT-d second-level paging: 3 levels for a 39-bit address width, 4 for
/// 48. Large pages as CAP.SLLPS allows (2 MiB, 1 GiB). Execute is not
/// granted (the X bit needs ECAP support this driver does not use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VtdSecondLevel {
    pub levels: usize,
    pub mib2_pages: bool,
    pub gib_pages: bool,
}

impl VtdSecondLevel {
    /// For an address width of `aw_bits` (39 or 48), with the large pages
    /// the unit supports.
    pub fn for_width(aw_bits: u32, mib2_pages: bool, gib_pages: bool) -> Option<Self> {
        let levels = match aw_bits {
            39 => 3,
            48 => 4,
            _ => return None,
        };
        Some(VtdSecondLevel {
            levels,
            mib2_pages,
            gib_pages,
        })
    }

    #[inline]
    fn leaf_size_ok(&self, level: usize) -> bool {
        match self.levels - 1 - level {
            0 => true,
            1 => self.mib2_pages,
            2 => self.gib_pages,
            _ => false,
        }
    }
}

impl Format for VtdSecondLevel {
    fn name(&self) -> &'static str {
        if self.levels == 3 {
            "VT-d second level, 3 levels (39-bit)"
        } else {
            "VT-d second level, 4 levels (48-bit)"
        }
    }

    #[inline]
    fn levels(&self) -> usize {
        self.levels
    }

    fn oas(&self) -> u32 {
        52
    }

    #[inline]
    fn leaf_allowed(&self, level: usize) -> bool {
        self.leaf_size_ok(level)
    }

    #[inline]
    fn encode_table(&self, table: u64, _level: usize) -> u64 {
        (table & ADDR_MASK) | SL_R | SL_W
    }

    #[inline]
    fn encode_leaf(&self, pa: u64, level: usize, prot: Prot) -> u64 {
        // A 2 MiB or 1 GiB leaf's address bits below its size are
        // reserved (VT-d 9.8), not ignored: a misaligned address must not
        // reach them.
        let size = 1u64 << super::level_shift(self.levels, level);
        let mut e = pa & ADDR_MASK & !(size - 1);
        if level + 1 < self.levels {
            e |= PS;
        }
        if prot.read {
            e |= SL_R;
        }
        if prot.write {
            e |= SL_W;
        }
        if !prot.device {
            e |= SL_EMT_WB << SL_EMT_SHIFT;
        }
        e
    }

    #[inline]
    fn decode(&self, e: u64, level: usize) -> Pte {
        if e & (SL_R | SL_W) == 0 {
            return Pte::Invalid;
        }
        let last = level + 1 == self.levels;
        if !last && e & PS == 0 {
            return Pte::Table(e & ADDR_MASK);
        }
        if !self.leaf_size_ok(level) {
            return Pte::Invalid;
        }
        Pte::Leaf {
            pa: e & ADDR_MASK & !((1u64 << super::level_shift(self.levels, level)) - 1),
            prot: Prot {
                read: e & SL_R != 0,
                write: e & SL_W != 0,
                exec: false,
                privileged: false,
                device: (e >> SL_EMT_SHIFT) & 7 != SL_EMT_WB,
            },
        }
    }
}
