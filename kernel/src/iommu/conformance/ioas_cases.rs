//! I/O address spaces, the page tables made from them, and dirty
//! tracking ([`crate::iommu::ioas`], `Iommu::read_and_clear_dirty`).
use super::{core_err, expect_fault, ok, read_u64, write_u64, Platform, IOVA};
use crate::dma::DmaTag;
use crate::harness::{TestError, TestResult};
use crate::iommu::domain::{IommuError, IommuHw};
use crate::iommu::ioas::{HwptFlags, Ioas};
use crate::iommu::pgtable::{Prot, PAGE_SIZE};
use crate::{ensure, ensure_eq};
use alloc::format;
use alloc::vec::Vec;

/// Two devices attached through one IOAS share its automatic page table
/// on their IOMMU; a mapping made in the IOAS afterwards reaches both, an
/// unmap takes it from both (the device then faults).
pub fn ioas_auto_hwpt_shared_and_follows_mappings_inject_faults<P: Platform>(
    p: &mut P,
) -> TestResult {
    let (x, y, _) = p.devices();
    let pages = p.alloc_pages(2, PAGE_SIZE)?;
    let mut ioas = Ioas::new();
    let result = (|| -> TestResult {
        ioas.map(&mut [p.iommu()], IOVA, pages, PAGE_SIZE, Prot::RW)
            .map_err(core_err)?;
        let dx = ioas.attach(p.iommu(), x).map_err(core_err)?;
        let dy = ioas.attach(p.iommu(), y).map_err(core_err)?;
        ensure_eq!(dx, dy, "one automatic page table per IOMMU, shared");
        ensure_eq!(ioas.hwpts().len(), 1, "page tables of the IOAS");
        ensure_eq!(
            write_u64(p, x, IOVA, 0x10, DmaTag::Untagged)?,
            ok(8),
            "x writes"
        );
        ensure_eq!(
            write_u64(p, y, IOVA + 8, 0x20, DmaTag::Untagged)?,
            ok(8),
            "y writes"
        );
        ensure_eq!(
            (read_u64(p, pages), read_u64(p, pages + 8)),
            (0x10, 0x20),
            "both writes"
        );
        let second = IOVA + 0x10_0000;
        ioas.map(
            &mut [p.iommu()],
            second,
            pages + PAGE_SIZE,
            PAGE_SIZE,
            Prot::RW,
        )
        .map_err(core_err)?;
        ensure_eq!(
            write_u64(p, y, second, 0x30, DmaTag::Untagged)?,
            ok(8),
            "a later mapping"
        );
        ensure_eq!(
            read_u64(p, pages + PAGE_SIZE),
            0x30,
            "the later mapping's page"
        );
        ioas.unmap(&mut [p.iommu()], IOVA).map_err(core_err)?;
        let r = write_u64(p, x, IOVA, 0x40, DmaTag::Untagged)?;
        ensure!(r != ok(8), "a write after the IOAS unmap must fault");
        expect_fault(p, x, None, IOVA, true)?;
        ensure_eq!(read_u64(p, pages), 0x10, "the unmapped page kept its bytes");
        Ok(())
    })();
    let iommu = p.iommu();
    let cleanup = iommu
        .detach_device(x)
        .and_then(|()| iommu.detach_device(y))
        .and_then(|()| ioas.release(iommu))
        .map_err(core_err);
    p.take_faults();
    p.free_pages(pages, 2);
    result.and(cleanup)?;
    ensure!(
        ioas.hwpts().is_empty(),
        "page tables left after the release"
    );
    Ok(())
}

/// A page table allocated with flags gets them where the IOMMU offers
/// them and is refused with the unit's reason where it does not.
pub fn ioas_hwpt_flags_where_offered<P: Platform>(p: &mut P) -> TestResult {
    let mut ioas = Ioas::new();
    let dirty = HwptFlags {
        dirty_tracking: true,
        ..HwptFlags::default()
    };
    let nest = HwptFlags {
        nest_parent: true,
        ..HwptFlags::default()
    };
    let cases = [
        (
            "dirty tracking",
            dirty,
            p.iommu().hw.dirty_tracking_unavailable(),
        ),
        ("a nesting parent", nest, p.iommu().hw.nesting_unavailable()),
    ];
    for (what, flags, why) in cases {
        let got = ioas.hwpt_alloc(p.iommu(), flags);
        match why {
            Some(why) => {
                ensure_eq!(
                    got,
                    Err(IommuError::HwptUnavailable { what, why }),
                    "{what}"
                );
                log::info!("IOAS page table with {what}: refused: {why}");
            }
            None => {
                let d = got.map_err(core_err)?;
                if flags.dirty_tracking {
                    ensure!(
                        p.iommu().dirty_tracking(d).map_err(core_err)?,
                        "tracking on"
                    );
                }
            }
        }
    }
    ioas.release(p.iommu()).map_err(core_err)?;
    ensure!(
        ioas.hwpts().is_empty(),
        "page tables left after the release"
    );
    Ok(())
}

/// A tiny xorshift: the soak's writes differ run to run only by seed.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Dirty tracking on a page table made from an IOAS: DMA writes mark
/// exactly the pages written, a 2 MiB block as a whole; a read-and-clear
/// followed by no writes reads clean; a write after a read-and-clear
/// whose invalidation was left out is not marked (the IOMMU's TLB holds
/// the dirty state), and is once the invalidation ran; a soak of random
/// writes matches a reference bitmap round after round.
pub fn dirty_tracking_marks_exactly_the_pages_written<P: Platform>(p: &mut P) -> TestResult {
    const PAGES: u64 = 16;
    const MIB2: u64 = 2 << 20;
    if let Some(why) = p.iommu().hw.dirty_tracking_unavailable() {
        return Err(TestError::skip(format!("no dirty tracking: {why}")));
    }
    let (x, _, _) = p.devices();
    let pages = p.alloc_pages(PAGES, PAGE_SIZE)?;
    let block = p.alloc_pages(MIB2 / PAGE_SIZE, MIB2)?;
    let block_iova = IOVA + MIB2;
    let mut ioas = Ioas::new();
    let result = (|| -> TestResult {
        ioas.map(&mut [p.iommu()], IOVA, pages, PAGES * PAGE_SIZE, Prot::RW)
            .map_err(core_err)?;
        ioas.map(&mut [p.iommu()], block_iova, block, MIB2, Prot::RW)
            .map_err(core_err)?;
        let flags = HwptFlags {
            dirty_tracking: true,
            ..HwptFlags::default()
        };
        let d = ioas.hwpt_alloc(p.iommu(), flags).map_err(core_err)?;
        ioas.attach_hwpt(p.iommu(), x, d).map_err(core_err)?;
        let span = 2 * MIB2;
        let read =
            |p: &mut P, clear: bool, invalidate: bool| -> Result<Vec<(u64, u64)>, TestError> {
                p.iommu()
                    .read_and_clear_dirty(d, IOVA, span, clear, invalidate)
                    .map_err(core_err)
            };
        let write = |p: &mut P, iova: u64, v: u64| -> TestResult {
            ensure_eq!(
                write_u64(p, x, iova, v, DmaTag::Untagged)?,
                ok(8),
                "write at {iova:#x}"
            );
            Ok(())
        };
        let page = |i: u64| IOVA + i * PAGE_SIZE;
        ensure_eq!(read(p, true, true)?, [], "dirty before any write");
        for i in [1, 5, 6] {
            write(p, page(i) + 8 * i, i)?;
        }
        write(p, block_iova + 0x3008, 7)?;
        ensure_eq!(
            read(p, true, true)?,
            [
                (page(1), PAGE_SIZE),
                (page(5), PAGE_SIZE),
                (page(6), PAGE_SIZE),
                (block_iova, MIB2)
            ],
            "the pages written, the block whole"
        );
        ensure_eq!(
            read(p, true, true)?,
            [],
            "after a read-and-clear and no writes"
        );
        // The dirty state cached: a clear without its invalidation.
        write(p, page(7), 1)?;
        ensure_eq!(
            read(p, true, false)?,
            [(page(7), PAGE_SIZE)],
            "page 7 written"
        );
        write(p, page(7), 2)?;
        ensure_eq!(
            read(p, false, true)?,
            [],
            "without the invalidation the IOMMU keeps the dirty state cached and marks nothing"
        );
        p.iommu()
            .invalidate_range(d, page(7), PAGE_SIZE)
            .map_err(core_err)?;
        write(p, page(7), 3)?;
        ensure_eq!(
            read(p, true, true)?,
            [(page(7), PAGE_SIZE)],
            "marked again after it"
        );
        // Soak: random writes against a reference bitmap.
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..8 {
            let mut want = [false; PAGES as usize];
            for _ in 0..6 {
                let i = next(&mut seed) % PAGES;
                want[i as usize] = true;
                write(p, page(i) + 8 * (next(&mut seed) % 512), round)?;
            }
            let expect: Vec<(u64, u64)> = (0..PAGES)
                .filter(|&i| want[i as usize])
                .map(|i| (page(i), PAGE_SIZE))
                .collect();
            ensure_eq!(read(p, true, true)?, expect, "soak round {round}");
        }
        ensure!(p.take_faults().is_empty(), "unexpected faults");
        Ok(())
    })();
    let iommu = p.iommu();
    let cleanup = iommu
        .detach_device(x)
        .and_then(|()| ioas.release(iommu))
        .map_err(core_err);
    p.free_pages(pages, PAGES);
    p.free_pages(block, MIB2 / PAGE_SIZE);
    result.and(cleanup)
}
