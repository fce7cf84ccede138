//! The image's [`kernel::hal::Hal`]: device-visible memory from the page
//! allocator (identity-mapped RAM), the arch's barrier and clock, and
//! interrupt lines from the interrupt controller. One of the few modules
//! with `unsafe`: it turns the allocator's pages into volatile views.
use crate::{arch, memory};
use core::ptr::NonNull;
use kernel::addr::{PhysAddr, PhysRange};
use kernel::hal::{check_bounds, Coherency, DmaRegion, Hal, HalError};
use kernel::mm::{AllocError, PAGE_SIZE};
use volatile::VolatilePtr;

/// The platform as drivers see it.
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelHal;

/// Pages of RAM owned by one driver structure, freed on drop.
pub struct KernelRegion {
    phys: PhysAddr,
    len: u64,
    pages: usize,
    coherency: Coherency,
    bytes: VolatilePtr<'static, [u8]>,
}

// SAFETY: a region owns its pages alone (allocated for it, freed on its
// drop) and hands them out only through `&self`/`&mut self`, so moving it
// to another CPU moves that ownership (the IOMMU's resting state is kept
// in a static).
unsafe impl Send for KernelRegion {}

impl KernelRegion {
    /// `bytes` of zeroed pages at a multiple of `align` (at least a page),
    /// in memory (not only in the caches) when returned.
    pub fn new(bytes: u64, align: u64, coherency: Coherency) -> Result<Self, AllocError> {
        let pages = bytes.div_ceil(PAGE_SIZE).max(1) as usize;
        let phys = memory::alloc_pages(pages, align.max(PAGE_SIZE))?;
        let len = pages as u64 * PAGE_SIZE;
        let ptr = core::ptr::slice_from_raw_parts_mut(phys.as_u64() as *mut u8, len as usize);
        // SAFETY: the allocator just gave us these pages (zeroed), RAM is
        // identity-mapped, and nothing else refers to them until the
        // region is dropped.
        let bytes = unsafe { VolatilePtr::new(NonNull::new_unchecked(ptr)) };
        let r = KernelRegion {
            phys,
            len,
            pages,
            coherency,
            bytes,
        };
        // The zeroes must be in memory before a walker reads them.
        r.maintain(0, len);
        Ok(r)
    }

    fn word(&self, offset: u64) -> VolatilePtr<'_, u64> {
        // SAFETY: `offset` is in bounds and 8-byte aligned (checked by the
        // callers), inside pages this region owns; identity-mapped RAM.
        unsafe {
            self.bytes.map(|p| {
                NonNull::new_unchecked(p.as_ptr().cast::<u8>().add(offset as usize).cast::<u64>())
            })
        }
    }

    fn byte(&self, offset: u64) -> VolatilePtr<'_, u8> {
        // SAFETY: `offset` is in bounds (checked by the callers), inside
        // pages this region owns; identity-mapped RAM.
        unsafe {
            self.bytes
                .map(|p| NonNull::new_unchecked(p.as_ptr().cast::<u8>().add(offset as usize)))
        }
    }

    /// [`DmaRegion::write_bytes`] through a shared reference: the CPU side
    /// of a buffer the tests fill while engines hold its address.
    pub fn store_bytes(&self, offset: u64, data: &[u8]) -> Result<(), HalError> {
        check_bounds(offset, data.len() as u64, self.len, false)?;
        for (i, &b) in data.iter().enumerate() {
            self.byte(offset + i as u64).write(b);
        }
        self.maintain(offset, data.len() as u64);
        Ok(())
    }

    /// Cleans and invalidates the cache lines of `[offset, offset + len)`
    /// for a walker that does not snoop.
    fn maintain(&self, offset: u64, len: u64) {
        if self.coherency == Coherency::NonCoherent {
            const LINE: u64 = 64;
            let start = self.phys.as_u64() + offset;
            let mut at = start & !(LINE - 1);
            while at < start + len {
                arch::flush_cache_line(at);
                at += LINE;
            }
        }
    }
}

impl DmaRegion for KernelRegion {
    fn phys(&self) -> PhysAddr {
        self.phys
    }
    fn len(&self) -> u64 {
        self.len
    }
    fn read_u64(&self, offset: u64) -> Result<u64, HalError> {
        check_bounds(offset, 8, self.len, true)?;
        self.maintain(offset, 8);
        Ok(self.word(offset).read())
    }
    fn write_u64(&mut self, offset: u64, value: u64) -> Result<(), HalError> {
        check_bounds(offset, 8, self.len, true)?;
        self.word(offset).write(value);
        self.maintain(offset, 8);
        Ok(())
    }
    fn read_bytes(&self, offset: u64, out: &mut [u8]) -> Result<(), HalError> {
        check_bounds(offset, out.len() as u64, self.len, false)?;
        self.maintain(offset, out.len() as u64);
        for (i, b) in out.iter_mut().enumerate() {
            *b = self.byte(offset + i as u64).read();
        }
        Ok(())
    }
    fn write_bytes(&mut self, offset: u64, data: &[u8]) -> Result<(), HalError> {
        self.store_bytes(offset, data)
    }
}

impl Drop for KernelRegion {
    fn drop(&mut self) {
        if let Err(e) = memory::free_pages(self.phys, self.pages) {
            log::error!("device memory at {} ({} pages): {e}", self.phys, self.pages);
        }
    }
}

impl Hal for KernelHal {
    type Region = KernelRegion;

    fn alloc(
        &self,
        bytes: u64,
        align: u64,
        coherency: Coherency,
    ) -> Result<KernelRegion, HalError> {
        KernelRegion::new(bytes, align, coherency).map_err(|_| HalError::NoMemory { bytes })
    }

    fn barrier(&self) {
        arch::dma_barrier();
    }

    fn now_ns(&self) -> u64 {
        arch::now_ns()
    }

    #[cfg(target_arch = "aarch64")]
    fn irq_enable(&self, line: u32, edge: bool) -> Result<(), HalError> {
        arch::gic::enable_spi(line, edge).map_err(|_| HalError::Interrupt { line })
    }

    #[cfg(target_arch = "aarch64")]
    fn irq_disable(&self, line: u32) {
        let _ = arch::gic::disable_spi(line);
    }

    #[cfg(target_arch = "aarch64")]
    fn irq_count(&self, line: u32) -> u32 {
        arch::gic::spi_count(line)
    }

    #[cfg(target_arch = "x86_64")]
    fn irq_count(&self, line: u32) -> u32 {
        arch::msi_count(line)
    }

    fn ram(&self) -> alloc::vec::Vec<PhysRange> {
        memory::managed_regions()
    }
}
