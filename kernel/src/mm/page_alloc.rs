//! Physical page allocator for DMA-able memory: contiguous runs of 4 KiB
//! pages at any power-of-two alignment, with an exact count of pages in use
//! so tests can prove nothing leaked. A bitmap per region, first fit; the
//! kernel zeroes pages through its identity map, this type only keeps books.
use crate::addr::{PhysAddr, PhysRange};
use crate::mm::ranges::align_inward;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

pub const PAGE_SIZE: u64 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocError {
    /// No run of free pages of that size and alignment.
    OutOfMemory { pages: usize, align: u64 },
    /// Zero pages, or an alignment that is not a power of two of at least a page.
    BadRequest { pages: usize, align: u64 },
    /// Freeing pages this allocator does not manage.
    NotManaged { addr: u64 },
    /// Freeing pages that are not allocated (a double free).
    NotAllocated { addr: u64 },
}

impl fmt::Display for AllocError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            AllocError::OutOfMemory { pages, align } => {
                write!(f, "out of memory: {pages} pages aligned to {align:#x}")
            }
            AllocError::BadRequest { pages, align } => {
                write!(f, "bad request: {pages} pages aligned to {align:#x}")
            }
            AllocError::NotManaged { addr } => write!(f, "free of unmanaged address {addr:#x}"),
            AllocError::NotAllocated { addr } => {
                write!(f, "free of page {addr:#x} that is not allocated")
            }
        }
    }
}

struct Region {
    base: u64,
    pages: usize,
    /// One bit per page, set = in use.
    used: Vec<u64>,
}

impl Region {
    fn is_used(&self, i: usize) -> bool {
        self.used[i / 64] & (1 << (i % 64)) != 0
    }
    fn set(&mut self, i: usize, v: bool) {
        if v {
            self.used[i / 64] |= 1 << (i % 64);
        } else {
            self.used[i / 64] &= !(1 << (i % 64));
        }
    }
}

#[derive(Default)]
pub struct PageAllocator {
    regions: Vec<Region>,
    in_use: usize,
}

impl PageAllocator {
    pub const fn new() -> Self {
        PageAllocator {
            regions: Vec::new(),
            in_use: 0,
        }
    }

    /// Hands a range of free RAM to the allocator (trimmed to whole pages).
    pub fn add_region(&mut self, range: PhysRange) {
        let r = align_inward(range, PAGE_SIZE);
        let pages = (r.size() / PAGE_SIZE) as usize;
        if pages == 0 {
            return;
        }
        self.regions.push(Region {
            base: r.start,
            pages,
            used: vec![0; pages.div_ceil(64)],
        });
    }

    pub fn total_pages(&self) -> usize {
        self.regions.iter().map(|r| r.pages).sum()
    }

    pub fn pages_in_use(&self) -> usize {
        self.in_use
    }

    pub fn regions(&self) -> impl Iterator<Item = PhysRange> + '_ {
        self.regions
            .iter()
            .map(|r| PhysRange::new(r.base, r.pages as u64 * PAGE_SIZE))
    }

    /// Allocates `pages` contiguous pages whose start is aligned to `align` bytes.
    pub fn alloc(&mut self, pages: usize, align: u64) -> Result<PhysAddr, AllocError> {
        if pages == 0 || !align.is_power_of_two() || align < PAGE_SIZE {
            return Err(AllocError::BadRequest { pages, align });
        }
        for region in &mut self.regions {
            if let Some(first) = find_run(region, pages, align) {
                for i in first..first + pages {
                    region.set(i, true);
                }
                self.in_use += pages;
                return Ok(PhysAddr(region.base + first as u64 * PAGE_SIZE));
            }
        }
        Err(AllocError::OutOfMemory { pages, align })
    }

    /// Frees `pages` pages starting at `addr`; every page must be allocated.
    pub fn free(&mut self, addr: PhysAddr, pages: usize) -> Result<(), AllocError> {
        let a = addr.as_u64();
        let region = self
            .regions
            .iter_mut()
            .find(|r| a >= r.base && a < r.base + r.pages as u64 * PAGE_SIZE)
            .ok_or(AllocError::NotManaged { addr: a })?;
        if !a.is_multiple_of(PAGE_SIZE) {
            return Err(AllocError::NotManaged { addr: a });
        }
        let first = ((a - region.base) / PAGE_SIZE) as usize;
        if first + pages > region.pages {
            return Err(AllocError::NotManaged {
                addr: region.base + region.pages as u64 * PAGE_SIZE,
            });
        }
        // Check everything before changing anything, so a bad free leaves the books intact.
        if let Some(i) = (first..first + pages).find(|&i| !region.is_used(i)) {
            return Err(AllocError::NotAllocated {
                addr: region.base + i as u64 * PAGE_SIZE,
            });
        }
        for i in first..first + pages {
            region.set(i, false);
        }
        self.in_use -= pages;
        Ok(())
    }
}

/// First index `i` with `pages` free pages from `i` on and `base + i*4K` aligned.
fn find_run(region: &Region, pages: usize, align: u64) -> Option<usize> {
    let mut i = first_aligned_index(region.base, 0, align);
    while i + pages <= region.pages {
        match (i..i + pages).rev().find(|&j| region.is_used(j)) {
            None => return Some(i),
            // Skip past the used page to the next aligned candidate.
            Some(used) => i = first_aligned_index(region.base, used + 1, align),
        }
    }
    None
}

fn first_aligned_index(base: u64, from: usize, align: u64) -> usize {
    let addr = base + from as u64 * PAGE_SIZE;
    let aligned = addr.div_ceil(align) * align;
    ((aligned - base) / PAGE_SIZE) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc_with(base: u64, pages: u64) -> PageAllocator {
        let mut a = PageAllocator::new();
        a.add_region(PhysRange::new(base, pages * PAGE_SIZE));
        a
    }

    #[test]
    fn round_trip_accounting() {
        let mut a = alloc_with(0x4000_0000, 1024);
        assert_eq!(a.total_pages(), 1024);
        let x = a.alloc(3, PAGE_SIZE).unwrap();
        let y = a.alloc(5, PAGE_SIZE).unwrap();
        assert_eq!(a.pages_in_use(), 8);
        assert_ne!(x, y);
        a.free(x, 3).unwrap();
        assert_eq!(a.pages_in_use(), 5);
        assert_eq!(a.free(x, 3), Err(AllocError::NotAllocated { addr: x.0 }));
        a.free(y, 5).unwrap();
        assert_eq!(a.pages_in_use(), 0);
    }

    #[test]
    fn alignment_is_honoured() {
        // A base that is page- but not 64 KiB-aligned.
        let mut a = alloc_with(0x4000_3000, 4096);
        for align in [PAGE_SIZE, 0x1_0000, 0x20_0000] {
            let p = a.alloc(2, align).unwrap();
            assert!(p.is_aligned(align), "{p:?} not aligned to {align:#x}");
        }
    }

    #[test]
    fn no_overlap_and_exhaustion() {
        let mut a = alloc_with(0x1000, 16);
        let mut got = Vec::new();
        while let Ok(p) = a.alloc(1, PAGE_SIZE) {
            got.push(p.0);
        }
        assert_eq!(got.len(), 16);
        got.sort();
        got.dedup();
        assert_eq!(got.len(), 16);
        assert_eq!(
            a.alloc(1, PAGE_SIZE),
            Err(AllocError::OutOfMemory {
                pages: 1,
                align: PAGE_SIZE
            })
        );
    }

    #[test]
    fn fragmented_fit() {
        let mut a = alloc_with(0, 8);
        let p: Vec<_> = (0..8).map(|_| a.alloc(1, PAGE_SIZE).unwrap()).collect();
        a.free(p[2], 1).unwrap();
        a.free(p[4], 1).unwrap();
        a.free(p[5], 1).unwrap();
        assert_eq!(a.alloc(2, PAGE_SIZE).unwrap(), p[4]);
        assert!(a.alloc(2, PAGE_SIZE).is_err());
    }

    #[test]
    fn bad_requests() {
        let mut a = alloc_with(0x10000, 16);
        assert!(matches!(
            a.alloc(0, PAGE_SIZE),
            Err(AllocError::BadRequest { .. })
        ));
        assert!(matches!(
            a.alloc(1, 3000),
            Err(AllocError::BadRequest { .. })
        ));
        assert!(matches!(
            a.alloc(1, 0x800),
            Err(AllocError::BadRequest { .. })
        ));
        assert!(matches!(
            a.free(PhysAddr(0x1000), 1),
            Err(AllocError::NotManaged { .. })
        ));
        assert!(matches!(
            a.free(PhysAddr(0x10800), 1),
            Err(AllocError::NotManaged { .. })
        ));
        let p = a.alloc(1, PAGE_SIZE).unwrap();
        // Freeing past the end of the region is refused and changes nothing.
        assert!(a.free(p, 100).is_err());
        assert_eq!(a.pages_in_use(), 1);
    }

    #[test]
    fn multiple_regions() {
        let mut a = PageAllocator::new();
        a.add_region(PhysRange::new(0x1000, 2 * PAGE_SIZE));
        a.add_region(PhysRange::new(0x10_0000, 8 * PAGE_SIZE));
        a.add_region(PhysRange::new(0x20_0000, 100)); // less than a page: ignored
        assert_eq!(a.total_pages(), 10);
        let p = a.alloc(4, PAGE_SIZE).unwrap();
        assert_eq!(p.0, 0x10_0000);
    }
}
