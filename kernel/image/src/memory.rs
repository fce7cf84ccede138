//! The kernel's physical page allocator and DMA buffers, over the
//! host-tested book-keeping in `kernel::mm`. RAM is identity-mapped, so a
//! physical address is also the pointer to the memory.
use crate::platform::BootInfo;
use alloc::vec::Vec;
use core::fmt;
use kernel::addr::{PhysAddr, PhysRange};
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

/// A zeroed, physically contiguous buffer a device may DMA to. The pages go
/// back to the allocator when it is dropped.
pub struct DmaBuffer {
    phys: PhysAddr,
    len: usize,
    pages: usize,
}

impl DmaBuffer {
    /// `len` bytes (rounded up to whole pages) starting at a multiple of `align`.
    pub fn new(len: usize, align: u64) -> Result<Self, AllocError> {
        let pages = len.div_ceil(PAGE_SIZE as usize).max(1);
        let phys = alloc_pages(pages, align.max(PAGE_SIZE))?;
        Ok(DmaBuffer { phys, len, pages })
    }

    pub fn phys(&self) -> PhysAddr {
        self.phys
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: we own these pages for our lifetime; identity-mapped RAM.
        unsafe { core::slice::from_raw_parts(self.phys.as_u64() as *const u8, self.len) }
    }

    /// Reads bytes a device may be writing, with volatile loads, so a
    /// polling loop sees each new value. `None` past the end.
    pub fn read_volatile(&self, offset: usize, out: &mut [u8]) -> Option<()> {
        if offset.checked_add(out.len())? > self.len {
            return None;
        }
        let base = self.phys.as_u64() as *const u8;
        for (i, b) in out.iter_mut().enumerate() {
            // SAFETY: inside our pages (checked above), identity-mapped RAM.
            *b = unsafe { core::ptr::read_volatile(base.add(offset + i)) };
        }
        Some(())
    }

    /// Writes bytes a device will read, with volatile stores (ordered before
    /// a later MMIO write that starts the device). `None` past the end.
    pub fn write_volatile(&self, offset: usize, data: &[u8]) -> Option<()> {
        if offset.checked_add(data.len())? > self.len {
            return None;
        }
        let base = self.phys.as_u64() as *mut u8;
        for (i, b) in data.iter().enumerate() {
            // SAFETY: inside our pages (checked above), identity-mapped RAM;
            // the device is not writing them (no operation targets them yet).
            unsafe { core::ptr::write_volatile(base.add(offset + i), *b) };
        }
        Some(())
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive on the CPU side.
        unsafe { core::slice::from_raw_parts_mut(self.phys.as_u64() as *mut u8, self.len) }
    }
}

impl Drop for DmaBuffer {
    fn drop(&mut self) {
        if let Err(e) = free_pages(self.phys, self.pages) {
            log::error!("DMA buffer at {} ({} pages): {e}", self.phys, self.pages);
        }
    }
}
