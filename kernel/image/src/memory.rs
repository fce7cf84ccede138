//! The kernel's physical page allocator and DMA buffers, over the
//! host-tested book-keeping in `kernel::mm`. RAM is identity-mapped, so a
//! physical address is also the pointer to the memory.
use crate::hal::KernelRegion;
use crate::platform::BootInfo;
use alloc::vec::Vec;
use core::fmt;
use kernel::addr::{PhysAddr, PhysRange};
use kernel::hal::{Coherency, DmaRegion};
use kernel::mm::{ranges, AllocError, PageAllocator, PAGE_SIZE};
use spin::Mutex;

static PAGES: Mutex<PageAllocator> = Mutex::new(PageAllocator::new());

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmError {
    NoFreeMemory,
}

impl fmt::Display for MmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmError::NoFreeMemory => write!(f, "no free RAM left after the reserved ranges"),
        }
    }
}

/// Gives the allocator every RAM range not reserved.
pub fn init(boot: &BootInfo) -> Result<(), MmError> {
    let reserved: Vec<PhysRange> = boot.reserved.iter().map(|(r, _)| *r).collect();
    let free = ranges::subtract(&boot.ram, &reserved);
    let mut pages = PAGES.lock();
    for r in &free {
        pages.add_region(*r);
    }
    if pages.total_pages() == 0 {
        return Err(MmError::NoFreeMemory);
    }
    log::info!(
        "page allocator: {} pages ({} MiB) in {} region(s)",
        pages.total_pages(),
        (pages.total_pages() as u64 * PAGE_SIZE) >> 20,
        free.len()
    );
    Ok(())
}

/// `pages` zeroed contiguous pages aligned to `align` bytes.
pub fn alloc_pages(pages: usize, align: u64) -> Result<PhysAddr, AllocError> {
    let addr = PAGES.lock().alloc(pages, align)?;
    // SAFETY: the allocator just handed us these pages; RAM is identity-mapped.
    unsafe { core::ptr::write_bytes(addr.as_u64() as *mut u8, 0, pages * PAGE_SIZE as usize) };
    Ok(addr)
}

pub fn free_pages(addr: PhysAddr, pages: usize) -> Result<(), AllocError> {
    PAGES.lock().free(addr, pages)
}

pub fn pages_in_use() -> usize {
    PAGES.lock().pages_in_use()
}

pub fn managed_regions() -> Vec<PhysRange> {
    PAGES.lock().regions().collect()
}

/// A zeroed, physically contiguous buffer a device may DMA to: a coherent
/// HAL region (which gives the pages back when it is dropped), with the
/// CPU-side views the tests use.
pub struct DmaBuffer {
    region: KernelRegion,
    len: usize,
}

impl DmaBuffer {
    /// `len` bytes (rounded up to whole pages) starting at a multiple of `align`.
    pub fn new(len: usize, align: u64) -> Result<Self, AllocError> {
        let region = KernelRegion::new(len.max(1) as u64, align, Coherency::Coherent)?;
        Ok(DmaBuffer { region, len })
    }

    pub fn phys(&self) -> PhysAddr {
        self.region.phys()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the region owns these pages for our lifetime (at least
        // `len` bytes); identity-mapped RAM.
        unsafe { core::slice::from_raw_parts(self.phys().as_u64() as *const u8, self.len) }
    }

    /// Reads bytes a device may be writing, with volatile loads, so a
    /// polling loop sees each new value. `None` past the end.
    pub fn read_volatile(&self, offset: usize, out: &mut [u8]) -> Option<()> {
        (offset.checked_add(out.len())? <= self.len).then_some(())?;
        self.region.read_bytes(offset as u64, out).ok()
    }

    /// Writes bytes a device will read, with volatile stores (ordered before
    /// a later MMIO write that starts the device). `None` past the end.
    pub fn write_volatile(&self, offset: usize, data: &[u8]) -> Option<()> {
        (offset.checked_add(data.len())? <= self.len).then_some(())?;
        self.region.store_bytes(offset as u64, data).ok()
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive on the CPU side.
        unsafe { core::slice::from_raw_parts_mut(self.phys().as_u64() as *mut u8, self.len) }
    }
}
