//! Physical page allocation and DMA buffers.
use crate::memory::{alloc_pages, free_pages, managed_regions, pages_in_use, DmaBuffer};
use crate::platform;
use alloc::vec::Vec;
use kernel::addr::PhysRange;
use kernel::harness::TestResult;
use kernel::mm::PAGE_SIZE;
use kernel::{ensure, ensure_eq};

/// Allocations are zeroed, counted exactly, and every page comes back.
pub fn page_alloc_round_trip() -> TestResult {
    let before = pages_in_use();
    let sizes = [1usize, 3, 16, 512, 1];
    let mut held = Vec::new();
    let mut expected_in_use = before;
    for &n in &sizes {
        let p = alloc_pages(n, PAGE_SIZE)
            .map_err(|e| kernel::harness::TestError::fail(alloc::format!("{e}")))?;
        // SAFETY: freshly allocated, identity-mapped pages we own.
        let bytes = unsafe {
            core::slice::from_raw_parts_mut(p.as_u64() as *mut u8, n * PAGE_SIZE as usize)
        };
        ensure!(
            bytes.iter().all(|&b| b == 0),
            "{n} page(s) at {p} were not zeroed"
        );
        bytes.fill(0xa5);
        expected_in_use += n;
        ensure_eq!(
            pages_in_use(),
            expected_in_use,
            "pages in use after allocating {n} at {p}"
        );
        held.push((p, n));
    }
    // No two allocations overlap.
    for (i, (a, n)) in held.iter().enumerate() {
        let ra = PhysRange::new(a.as_u64(), *n as u64 * PAGE_SIZE);
        for (b, m) in &held[i + 1..] {
            ensure!(
                !ra.overlaps(&PhysRange::new(b.as_u64(), *m as u64 * PAGE_SIZE)),
                "allocations at {a} and {b} overlap"
            );
        }
    }
    // A double free is refused and changes nothing.
    let (first, n) = held[0];
    free_pages(first, n).map_err(|e| kernel::harness::TestError::fail(alloc::format!("{e}")))?;
    ensure!(
        free_pages(first, n).is_err(),
        "double free of {first} was accepted"
    );
    for &(p, n) in &held[1..] {
        free_pages(p, n).map_err(|e| kernel::harness::TestError::fail(alloc::format!("{e}")))?;
    }
    ensure_eq!(
        pages_in_use(),
        before,
        "pages in use after freeing everything"
    );
    // Freed pages come back zeroed even though we scribbled on them.
    let p = alloc_pages(1, PAGE_SIZE)
        .map_err(|e| kernel::harness::TestError::fail(alloc::format!("{e}")))?;
    // SAFETY: freshly allocated page we own.
    let zero = unsafe { core::slice::from_raw_parts(p.as_u64() as *const u8, PAGE_SIZE as usize) }
        .iter()
        .all(|&b| b == 0);
    let _ = free_pages(p, 1);
    ensure!(zero, "a reused page at {p} was not zeroed");
    Ok(())
}

/// Pages come only from RAM, never from the kernel image or boot data.
pub fn page_alloc_stays_in_free_ram() -> TestResult {
    let boot = platform::get();
    for region in managed_regions() {
        ensure!(
            boot.ram
                .iter()
                .any(|r| r.start <= region.start && region.end <= r.end),
            "managed region {region} lies outside RAM"
        );
        for (res, what) in &boot.reserved {
            ensure!(
                !res.overlaps(&region),
                "managed region {region} overlaps the {what} at {res}"
            );
        }
    }
    Ok(())
}

/// DMA buffers start on the requested boundary, hold the requested length,
/// are zeroed, and return their pages when dropped.
pub fn dma_buffer_alignment() -> TestResult {
    let before = pages_in_use();
    for (len, align) in [
        (5000usize, PAGE_SIZE),
        (4096, 0x1_0000),
        (3 * 4096 + 1, 0x20_0000),
        (64, 0x1000),
    ] {
        let mut buf = DmaBuffer::new(len, align)
            .map_err(|e| kernel::harness::TestError::fail(alloc::format!("{e}")))?;
        ensure!(
            buf.phys().is_aligned(align),
            "buffer of {len} bytes at {} is not aligned to {align:#x}",
            buf.phys()
        );
        ensure_eq!(buf.len(), len, "buffer length");
        ensure!(
            buf.as_slice().iter().all(|&b| b == 0),
            "buffer at {} not zeroed",
            buf.phys()
        );
        buf.as_mut_slice().fill(0x5a);
        let pages = len.div_ceil(PAGE_SIZE as usize);
        ensure_eq!(
            pages_in_use(),
            before + pages,
            "pages in use while a {len}-byte buffer lives"
        );
    }
    ensure_eq!(
        pages_in_use(),
        before,
        "pages in use after the buffers were dropped"
    );
    Ok(())
}
