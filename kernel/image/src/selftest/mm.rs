//! Physical page allocation and DMA buffers.
use crate::memory::{alloc_pages, free_pages, managed_regions, pages_in_use, DmaBuffer};
use crate::{heap, platform};
use alloc::vec::Vec;
use kernel::addr::PhysRange;
use kernel::harness::{TestError, TestResult};
use kernel::mm::PAGE_SIZE;
use kernel::{ensure, ensure_eq};

fn fail(e: impl core::fmt::Display) -> TestError {
    TestError::fail(alloc::format!("{e}"))
}

/// Allocations are counted exactly, never overlap, a double free is
/// refused, and every page comes back.
pub fn page_alloc_round_trip() -> TestResult {
    let before = pages_in_use();
    let mut held = Vec::new();
    let mut expected_in_use = before;
    for n in [1usize, 3, 16, 512, 1] {
        let p = alloc_pages(n, PAGE_SIZE).map_err(fail)?;
        expected_in_use += n;
        ensure_eq!(
            pages_in_use(),
            expected_in_use,
            "pages in use after allocating {n} at {p}"
        );
        held.push((p, n));
    }
    for (i, (a, n)) in held.iter().enumerate() {
        let ra = PhysRange::new(a.as_u64(), *n as u64 * PAGE_SIZE);
        for (b, m) in &held[i + 1..] {
            let rb = PhysRange::new(b.as_u64(), *m as u64 * PAGE_SIZE);
            ensure!(!ra.overlaps(&rb), "allocations {ra} and {rb} overlap");
        }
    }
    let (first, n) = held[0];
    free_pages(first, n).map_err(fail)?;
    ensure!(
        free_pages(first, n).is_err(),
        "double free of {first} was accepted"
    );
    ensure_eq!(
        pages_in_use(),
        expected_in_use - n,
        "pages in use after a refused double free"
    );
    for &(p, n) in &held[1..] {
        free_pages(p, n).map_err(fail)?;
    }
    ensure_eq!(
        pages_in_use(),
        before,
        "pages in use after freeing everything"
    );
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
/// are zeroed (also when their pages held data before), and return their
/// pages when dropped.
pub fn dma_buffer_alignment() -> TestResult {
    let before = pages_in_use();
    for (len, align) in [
        (5000usize, PAGE_SIZE),
        (4096, 0x1_0000),
        (3 * 4096 + 1, 0x20_0000),
        (64, 0x1000),
    ] {
        let mut buf = DmaBuffer::new(len, align).map_err(fail)?;
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
    // First fit hands the scribbled pages out again: they must be clean.
    let reused = DmaBuffer::new(5000, PAGE_SIZE).map_err(fail)?;
    ensure!(
        reused.as_slice().iter().all(|&b| b == 0),
        "reused buffer at {} not zeroed",
        reused.phys()
    );
    Ok(())
}

/// The kernel heap gives back what it hands out.
pub fn heap_round_trip() -> TestResult {
    let before = heap::used();
    {
        let v: Vec<u64> = (0..10_000).collect();
        let boxed = core::hint::black_box(alloc::boxed::Box::new([0u8; 4096]));
        ensure!(
            heap::used() >= before + 80_000 + 4096,
            "heap use did not grow: {} -> {}",
            before,
            heap::used()
        );
        ensure_eq!(v.iter().sum::<u64>(), 49_995_000, "heap data");
        drop(boxed);
    }
    ensure_eq!(heap::used(), before, "heap bytes in use after freeing");
    Ok(())
}

/// The CPU's identity map follows what firmware described: every RAM range
/// is normal memory at both ends, every MMIO range the kernel bound (ECAM
/// windows, IOMMU registers, placed memory BARs) is device memory, and the
/// probe address of the fault tests is not mapped at all.
pub fn identity_map_follows_firmware() -> TestResult {
    use crate::mapping::kind_at;
    use kernel::idmap::MemKind;
    let boot = platform::get();
    for r in &boot.ram {
        for at in [r.start, r.end - 1] {
            ensure_eq!(kind_at(at), Some(MemKind::Normal), "RAM {r} at {at:#x}");
        }
    }
    let mut device = Vec::new();
    if let Some(t) = crate::discovery::get() {
        for w in &t.ecam {
            device.push((w.base + (u64::from(w.start_bus) << 20), "ECAM"));
        }
        // Bound (and so mapped) by the boot-time IOMMU check.
        for u in &t.iommus {
            device.push((u.base, "IOMMU registers"));
        }
    }
    for b in crate::pcie::buses() {
        for f in &b.functions {
            for bar in f.bars.iter().filter(|b| b.kind != pci::BarKind::Io) {
                if let Some(at) = bar.cpu_address {
                    device.push((at, "memory BAR"));
                }
            }
        }
    }
    ensure!(!device.is_empty(), "no ECAM window or memory BAR to check");
    for (at, what) in &device {
        ensure_eq!(kind_at(*at), Some(MemKind::Device), "{what} at {at:#x}");
    }
    let hole = crate::arch::unmapped_addr();
    ensure_eq!(
        kind_at(hole),
        None,
        "the fault tests' probe address {hole:#x}"
    );
    Ok(())
}
