//! Set arithmetic on physical ranges: RAM minus what the kernel, the boot
//! data and the firmware occupy.
use crate::addr::PhysRange;
use alloc::vec::Vec;

/// `ram` minus every range in `reserved`, sorted, empty pieces dropped.
pub fn subtract(ram: &[PhysRange], reserved: &[PhysRange]) -> Vec<PhysRange> {
    let mut pieces: Vec<PhysRange> = ram.iter().copied().filter(|r| !r.is_empty()).collect();
    for cut in reserved.iter().filter(|r| !r.is_empty()) {
        let mut next = Vec::with_capacity(pieces.len() + 1);
        for p in pieces {
            if !p.overlaps(cut) {
                next.push(p);
                continue;
            }
            if p.start < cut.start {
                next.push(PhysRange {
                    start: p.start,
                    end: cut.start,
                });
            }
            if cut.end < p.end {
                next.push(PhysRange {
                    start: cut.end,
                    end: p.end,
                });
            }
        }
        pieces = next;
    }
    pieces.sort_by_key(|r| r.start);
    pieces
}

/// Shrinks a range inward to `align` boundaries (power of two).
pub fn align_inward(r: PhysRange, align: u64) -> PhysRange {
    let start = r.start.div_ceil(align).saturating_mul(align);
    let end = r.end / align * align;
    if end <= start {
        PhysRange { start, end: start }
    } else {
        PhysRange { start, end }
    }
}

/// Total bytes in a set of ranges.
pub fn total(ranges: &[PhysRange]) -> u64 {
    ranges.iter().map(|r| r.size()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: u64, e: u64) -> PhysRange {
        PhysRange { start: s, end: e }
    }

    #[test]
    fn subtract_cases() {
        let ram = [r(0x1000, 0x9000)];
        assert_eq!(subtract(&ram, &[]), [r(0x1000, 0x9000)]);
        assert_eq!(
            subtract(&ram, &[r(0x2000, 0x3000)]),
            [r(0x1000, 0x2000), r(0x3000, 0x9000)]
        );
        assert_eq!(
            subtract(&ram, &[r(0, 0x2000), r(0x8000, 0x10000)]),
            [r(0x2000, 0x8000)]
        );
        assert_eq!(subtract(&ram, &[r(0, 0x10000)]), []);
        assert_eq!(
            subtract(&[r(0x5000, 0x6000), r(0x1000, 0x2000)], &[]),
            [r(0x1000, 0x2000), r(0x5000, 0x6000)]
        );
    }

    #[test]
    fn align() {
        assert_eq!(align_inward(r(0x1001, 0x5fff), 0x1000), r(0x2000, 0x5000));
        assert!(align_inward(r(0x1001, 0x1fff), 0x1000).is_empty());
    }
}
