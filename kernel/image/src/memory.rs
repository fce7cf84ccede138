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

/// Memory an IOMMU walks or writes (its tables, queues, status words):
/// allocation zeroed, and 64-bit accesses that keep a non-snooping IOMMU
/// in step with the CPU's caches. Only the SMMUv3 driver still uses it:
/// the VT-d driver has regions of the HAL's.
#[cfg(target_arch = "aarch64")]
pub mod iommu {
    use super::{alloc_pages, free_pages, AllocError, PhysAddr, PAGE_SIZE};
    use core::sync::atomic::{AtomicBool, Ordering};

    /// Set once an IOMMU that does not snoop the CPU's caches is driven:
    /// from then on every access below flushes its cache line.
    static NON_COHERENT: AtomicBool = AtomicBool::new(false);

    pub fn set_non_coherent() {
        NON_COHERENT.store(true, Ordering::Relaxed);
    }

    pub fn non_coherent() -> bool {
        NON_COHERENT.load(Ordering::Relaxed)
    }

    /// `bytes` of zeroed memory at a multiple of `align` (at least a page),
    /// in memory before the IOMMU can read it.
    pub fn alloc_zeroed(bytes: u64, align: u64) -> Result<u64, AllocError> {
        let pages = bytes.div_ceil(PAGE_SIZE);
        let pa = alloc_pages(pages as usize, align.max(PAGE_SIZE))?.as_u64();
        if non_coherent() {
            flush_range(pa, pages * PAGE_SIZE);
        }
        Ok(pa)
    }

    /// Gives back what [`alloc_zeroed`] handed out for `bytes`.
    pub fn free(pa: u64, bytes: u64) {
        let _ = free_pages(PhysAddr(pa), bytes.div_ceil(PAGE_SIZE) as usize);
    }

    pub fn write_u64(pa: u64, value: u64) {
        // SAFETY: `pa` is in identity-mapped RAM a driver allocated with
        // `alloc_zeroed` (or the page allocator) for its IOMMU.
        unsafe { core::ptr::write_volatile(pa as *mut u64, value) }
        if non_coherent() {
            crate::arch::flush_cache_line(pa);
        }
    }

    pub fn read_u64(pa: u64) -> u64 {
        if non_coherent() {
            crate::arch::flush_cache_line(pa);
        }
        // SAFETY: as for `write_u64`.
        unsafe { core::ptr::read_volatile(pa as *const u64) }
    }

    /// Flushes every cache line of `[pa, pa + len)` (see
    /// `arch::flush_cache_line`).
    fn flush_range(pa: u64, len: u64) {
        const LINE: u64 = 64;
        let mut at = pa & !(LINE - 1);
        while at < pa + len {
            crate::arch::flush_cache_line(at);
            at += LINE;
        }
    }
}

/// Page-table pages from the page allocator, counted (so a test can
/// tell that a driver and the core gave every table back). Reads and
/// writes go through [`iommu`], so a non-snooping IOMMU sees them.
#[cfg(target_arch = "aarch64")]
#[derive(Default)]
pub struct KernelTables {
    pub live: u64,
}

#[cfg(target_arch = "aarch64")]
impl kernel::iommu::pgtable::TableMemory for KernelTables {
    fn alloc(&mut self) -> Option<u64> {
        let t = iommu::alloc_zeroed(PAGE_SIZE, PAGE_SIZE).ok()?;
        self.live += 1;
        Some(t)
    }
    fn free(&mut self, table: u64) {
        self.live -= 1;
        iommu::free(table, PAGE_SIZE);
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        debug_assert!(index < kernel::iommu::pgtable::ENTRIES);
        iommu::read_u64(table + 8 * index as u64)
    }
    fn write(&mut self, table: u64, index: usize, value: u64) {
        debug_assert!(index < kernel::iommu::pgtable::ENTRIES);
        iommu::write_u64(table + 8 * index as u64, value)
    }
}
