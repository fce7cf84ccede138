//! The system-wide PASID allocator: one PASID per aux domain, from a
//! configurable `[min, max]` inside `1..2^20` (PASID 0 is the primary
//! domain's: RID_PASID on VT-d, SubstreamID 0 on SMMUv3).
//!
//! A 64-ary tree of bitmaps: the leaves hold one bit per PASID (set when
//! taken), each level above one bit per word below (set when that word is
//! full). Allocation descends from the root to the lowest free PASID and
//! release clears bits on the way up: O(log64 n), four levels for 2^20.
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

/// Largest PASID the PCIe PASID capability can carry.
pub const PASID_MAX: u32 = (1 << 20) - 1;

/// A Process Address Space ID: the tag a request carries beside its
/// device id (an SMMUv3 SubstreamID, a VT-d PASID). 0 is the primary
/// (RID_PASID / SSID 0); aux domains get theirs from the allocator.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pasid(pub u32);

impl core::fmt::Debug for Pasid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Pasid({:#x})", self.0)
    }
}

impl core::fmt::Display for Pasid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl core::fmt::LowerHex for Pasid {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::LowerHex::fmt(&self.0, f)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasidError {
    /// `[min, max]` is empty, includes 0, or goes past 2^20 - 1.
    BadRange { min: u32, max: u32 },
    /// Every PASID in the range is taken.
    Exhausted,
    /// Not in the allocator's range.
    OutOfRange(u32),
    /// Claimed but allocated already.
    Taken(u32),
    /// Released but not allocated.
    NotAllocated(u32),
    /// The range cannot change while PASIDs are allocated.
    InUse { allocated: u32 },
}

impl fmt::Display for PasidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PasidError::BadRange { min, max } => write!(
                f,
                "PASID range [{min:#x}, {max:#x}] must lie in [1, {PASID_MAX:#x}] and not be empty"
            ),
            PasidError::Exhausted => f.write_str("no PASID left in the range"),
            PasidError::OutOfRange(p) => write!(f, "PASID {p:#x} is outside the allocator's range"),
            PasidError::NotAllocated(p) => write!(f, "PASID {p:#x} is not allocated"),
            PasidError::Taken(p) => write!(f, "PASID {p:#x} is allocated already"),
            PasidError::InUse { allocated } => {
                write!(f, "{allocated} PASID(s) allocated: the range cannot change")
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct PasidAllocator {
    min: u32,
    max: u32,
    /// levels[0] are the leaves; the last level is a single word.
    levels: Vec<Vec<u64>>,
    used: u32,
}

impl PasidAllocator {
    pub fn new(min: u32, max: u32) -> Result<Self, PasidError> {
        if min == 0 || min > max || max > PASID_MAX {
            return Err(PasidError::BadRange { min, max });
        }
        // Bits for 0..=max; the ones below `min` start taken.
        let bits = max as usize + 1;
        let mut levels = Vec::new();
        let mut words = bits.div_ceil(64);
        loop {
            levels.push(vec![0u64; words]);
            if words == 1 {
                break;
            }
            words = words.div_ceil(64);
        }
        let mut a = PasidAllocator {
            min,
            max,
            levels,
            used: 0,
        };
        // Words above the leaves have bits for children that do not
        // exist: they read as full. Then pad past `max` in the last leaf
        // word and reserve below `min`.
        for k in 1..a.levels.len() {
            let children = a.levels[k - 1].len();
            for c in children..a.levels[k].len() * 64 {
                a.levels[k][c / 64] |= 1 << (c % 64);
            }
        }
        let leaves = a.levels[0].len();
        for bit in bits..leaves * 64 {
            a.set(bit);
        }
        for p in 0..min as usize {
            a.set(p);
        }
        Ok(a)
    }

    pub fn range(&self) -> (u32, u32) {
        (self.min, self.max)
    }

    /// PASIDs allocated now.
    pub fn used(&self) -> u32 {
        self.used
    }

    /// Marks `bit` taken and propagates fullness upwards.
    fn set(&mut self, bit: usize) {
        let mut idx = bit;
        for level in 0..self.levels.len() {
            let (w, b) = (idx / 64, idx % 64);
            self.levels[level][w] |= 1 << b;
            if self.levels[level][w] != u64::MAX {
                return;
            }
            idx = w;
        }
    }

    /// Marks `bit` free; every word on the way up now has room.
    fn clear(&mut self, bit: usize) {
        let mut idx = bit;
        for level in 0..self.levels.len() {
            let (w, b) = (idx / 64, idx % 64);
            self.levels[level][w] &= !(1 << b);
            idx = w;
        }
    }

    /// The lowest free PASID in the range.
    pub fn alloc(&mut self) -> Result<u32, PasidError> {
        let top = self.levels.len() - 1;
        let mut idx = 0usize;
        for level in (0..=top).rev() {
            let word = self.levels[level][idx];
            if word == u64::MAX {
                return Err(PasidError::Exhausted);
            }
            idx = idx * 64 + (!word).trailing_zeros() as usize;
        }
        let p = idx as u32;
        debug_assert!(p >= self.min && p <= self.max);
        self.set(idx);
        self.used += 1;
        Ok(p)
    }

    /// `p` lies in the range the allocator hands out.
    pub fn contains(&self, p: u32) -> bool {
        (self.min..=self.max).contains(&p)
    }

    /// Takes the specific PASID `p` (chosen by a caller), so that
    /// [`Self::alloc`] does not hand it out.
    pub fn claim(&mut self, p: u32) -> Result<(), PasidError> {
        if !self.contains(p) {
            return Err(PasidError::OutOfRange(p));
        }
        if self.is_allocated(p) {
            return Err(PasidError::Taken(p));
        }
        self.set(p as usize);
        self.used += 1;
        Ok(())
    }

    pub fn is_allocated(&self, p: u32) -> bool {
        p >= self.min && p <= self.max && self.levels[0][p as usize / 64] & (1 << (p % 64)) != 0
    }

    pub fn free(&mut self, p: u32) -> Result<(), PasidError> {
        if p < self.min || p > self.max {
            return Err(PasidError::OutOfRange(p));
        }
        if !self.is_allocated(p) {
            return Err(PasidError::NotAllocated(p));
        }
        self.clear(p as usize);
        self.used -= 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn range_checks() {
        assert_eq!(
            PasidAllocator::new(0, 10).unwrap_err(),
            PasidError::BadRange { min: 0, max: 10 }
        );
        assert!(PasidAllocator::new(5, 4).is_err());
        assert!(PasidAllocator::new(1, PASID_MAX + 1).is_err());
        let mut a = PasidAllocator::new(3, 5).unwrap();
        assert_eq!((a.alloc(), a.alloc(), a.alloc()), (Ok(3), Ok(4), Ok(5)));
        assert_eq!(a.alloc(), Err(PasidError::Exhausted));
        assert_eq!(a.free(2), Err(PasidError::OutOfRange(2)));
        assert_eq!(a.free(4), Ok(()));
        assert_eq!(a.free(4), Err(PasidError::NotAllocated(4)));
        assert_eq!(a.alloc(), Ok(4), "the lowest free one comes back");
        assert_eq!(a.used(), 3);
    }

    #[test]
    fn the_whole_20_bit_space() {
        let mut a = PasidAllocator::new(1, PASID_MAX).unwrap();
        for want in 1..=PASID_MAX {
            assert_eq!(a.alloc(), Ok(want));
        }
        assert_eq!(a.alloc(), Err(PasidError::Exhausted));
        assert_eq!(a.used(), PASID_MAX);
        // Free a scattered few: they come back lowest first.
        for p in [0xfffff, 77, 4096, 64, 65] {
            a.free(p).unwrap();
        }
        for want in [64, 65, 77, 4096, 0xfffff] {
            assert_eq!(a.alloc(), Ok(want));
        }
        assert_eq!(a.alloc(), Err(PasidError::Exhausted));
    }

    #[test]
    fn top_of_the_range() {
        let mut a = PasidAllocator::new(0xffff0, PASID_MAX).unwrap();
        assert_eq!(a.alloc(), Ok(0xffff0));
        assert!(a.is_allocated(0xffff0) && !a.is_allocated(0xffff1) && !a.is_allocated(3));
    }
}
