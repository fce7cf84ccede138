//! Queue index arithmetic (IHI 0070, 3.5): PROD and CONS hold an index of
//! log2size bits, then a wrap bit that flips each lap; full when indexes
//! match and wrap bits differ, empty when both match. Bit 31 of the
//! event queue's PROD is the overflow flag.
use crate::{field, Coherency};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queue {
    pub log2size: u8,
}

pub const OVERFLOW: u32 = 1 << 31;

impl Queue {
    pub fn entries(&self) -> u32 {
        1 << self.log2size
    }

    fn index(&self, p: u32) -> u32 {
        p & (self.entries() - 1)
    }

    fn wrap(&self, p: u32) -> u32 {
        p & self.entries()
    }

    pub fn empty(&self, prod: u32, cons: u32) -> bool {
        self.index(prod) == self.index(cons) && self.wrap(prod) == self.wrap(cons)
    }

    pub fn full(&self, prod: u32, cons: u32) -> bool {
        self.index(prod) == self.index(cons) && self.wrap(prod) != self.wrap(cons)
    }

    /// Entries waiting between `cons` and `prod`.
    pub fn used(&self, prod: u32, cons: u32) -> u32 {
        let mask = (self.entries() << 1) - 1;
        ((prod & mask).wrapping_sub(cons & mask)) & mask
    }

    /// `p` advanced by one, the wrap bit flipping at the end (flags kept).
    pub fn next(&self, p: u32) -> u32 {
        let mask = (self.entries() << 1) - 1;
        (p & !mask) | ((p & mask) + 1) & mask
    }

    /// The slot `p` names.
    pub fn slot(&self, p: u32) -> usize {
        self.index(p) as usize
    }

    /// The Q_BASE register: address, log2 size, and the allocation hint
    /// (RA for the command queue, WA for the event queue, both bit 62)
    /// when the SMMU's accesses are cacheable; a non-coherent SMMU's
    /// queues are non-cacheable (CR1), where a hint means nothing.
    pub fn base_register(&self, base: u64, walk: Coherency) -> u64 {
        let hint = u64::from(walk == Coherency::Coherent) << 62;
        hint | (base & 0x000f_ffff_ffff_ffe0) | field(u64::from(self.log2size), 4, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_full_empty() {
        let q = Queue { log2size: 2 };
        assert!(q.empty(0, 0));
        let mut p = 0;
        for _ in 0..4 {
            p = q.next(p);
        }
        assert_eq!(p, 0b100, "wrapped once");
        assert!(q.full(p, 0) && !q.empty(p, 0));
        assert_eq!(q.used(p, 0), 4);
        assert_eq!(q.used(q.next(p), 0b101), 0);
        for _ in 0..4 {
            p = q.next(p);
        }
        assert_eq!(p, 0, "wrap bit back to 0");
        assert_eq!(q.next(OVERFLOW | 3), OVERFLOW | 4, "flags are kept");
        assert_eq!(q.slot(0b110), 2);
        assert_eq!(
            q.base_register(0x4000_0000, Coherency::Coherent),
            (1 << 62) | 0x4000_0000 | 2
        );
        assert_eq!(
            q.base_register(0x4000_0000, Coherency::NonCoherent),
            0x4000_0000 | 2,
            "no allocation hint for non-cacheable queues"
        );
    }
}
