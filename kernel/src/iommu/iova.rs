//! IOVA space for DMA domains: first fit over a sorted list of free
//! ranges, aligned allocations, freed ranges merged with their neighbours.
use alloc::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct IovaAllocator {
    /// Free ranges, start -> end (exclusive).
    free: BTreeMap<u64, u64>,
}

impl IovaAllocator {
    pub fn new(base: u64, end: u64) -> Self {
        let mut free = BTreeMap::new();
        if base < end {
            free.insert(base, end);
        }
        IovaAllocator { free }
    }

    /// `size` bytes at a multiple of `align` (a power of two).
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        let (start, end, at) = self.free.iter().find_map(|(&s, &e)| {
            let at = s.checked_add(align - 1)? & !(align - 1);
            (at.checked_add(size)? <= e).then_some((s, e, at))
        })?;
        self.free.remove(&start);
        if start < at {
            self.free.insert(start, at);
        }
        if at + size < end {
            self.free.insert(at + size, end);
        }
        Some(at)
    }

    /// Returns `[iova, iova + size)`, merging with free neighbours.
    pub fn free(&mut self, iova: u64, size: u64) {
        let (mut start, mut end) = (iova, iova + size);
        if let Some((&s, &e)) = self.free.range(..start).next_back() {
            if e == start {
                self.free.remove(&s);
                start = s;
            }
        }
        if let Some(&e) = self.free.get(&end) {
            self.free.remove(&end);
            end = e;
        }
        self.free.insert(start, end);
    }

    /// Takes `[start, start + size)` out of the free space (a reserved
    /// region such as an MSI doorbell); the parts already taken stay so.
    pub fn reserve(&mut self, start: u64, size: u64) {
        let end = start + size;
        let hit: alloc::vec::Vec<(u64, u64)> = self
            .free
            .range(..end)
            .filter(|&(_, &e)| e > start)
            .map(|(&s, &e)| (s, e))
            .collect();
        for (s, e) in hit {
            self.free.remove(&s);
            if s < start {
                self.free.insert(s, start);
            }
            if end < e {
                self.free.insert(end, e);
            }
        }
    }

    /// Free bytes.
    pub fn available(&self) -> u64 {
        self.free.iter().map(|(s, e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_first_fit_and_merging() {
        let mut a = IovaAllocator::new(0x1000, 0x10_0000);
        assert_eq!(a.alloc(0x1000, 0x1000), Some(0x1000));
        assert_eq!(a.alloc(0x2000, 0x4000), Some(0x4000));
        assert_eq!(a.alloc(0x1000, 0x1000), Some(0x2000));
        a.free(0x1000, 0x1000);
        a.free(0x2000, 0x1000);
        a.free(0x4000, 0x2000);
        assert_eq!(a.available(), 0xff000);
        assert_eq!(a.alloc(0x10_0000, 0x1000), None);
        assert_eq!(a.alloc(0xff000, 0x1000), Some(0x1000));
        assert_eq!(a.alloc(0, 0x1000), None);
        assert_eq!(a.alloc(0x1000, 3), None);
    }

    #[test]
    fn reserved_ranges_are_never_handed_out() {
        let mut a = IovaAllocator::new(0x1000, 0x10000);
        a.reserve(0x3000, 0x2000);
        a.reserve(0xf000, 0x8000);
        assert_eq!(a.available(), 0x1000 * 15 - 0x2000 - 0x1000);
        let mut got = alloc::vec::Vec::new();
        while let Some(x) = a.alloc(0x1000, 0x1000) {
            got.push(x);
        }
        assert!(!got.contains(&0x3000) && !got.contains(&0x4000) && !got.contains(&0xf000));
        assert_eq!(got.len(), 12);
    }
}
