//! I/O page tables against peers, on the host, in one run:
//! `kernel::iommu::pgtable` (Arm stage 1 and x86-64 formats) beside the
//! `aarch64-paging` crate (stage 1, identity map) and the `x86_64` crate's
//! `OffsetPageTable` on the same work: 262,144 single 4 KiB maps, their
//! lookups, their unmaps, and one 1 GiB range map.
//!
//! `cargo bench -p kernel --bench pgtable`
// Host memory for the peers' tables (aarch64-paging and x86_64 take raw
// pointers): a benchmark, not kernel code.
#![allow(unsafe_code)]
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kernel::iommu::pgtable::arm::ArmLpae;
use kernel::iommu::pgtable::x86::X86FirstLevel;
use kernel::iommu::pgtable::{Format, Gather, PageTable, Prot, TableMemory, ENTRIES};

const PAGES: u64 = 262_144;
const K4: u64 = 4096;
const G1: u64 = 1 << 30;
const M2: u64 = 2 << 20;
/// Where the IOVAs start (1 GiB aligned, canonical for x86-64).
const BASE: u64 = 0x40_0000_0000;

/// Tables in host memory, addressed by their pointers: what the kernel
/// does with identity-mapped RAM.
#[derive(Default)]
struct Direct {
    live: usize,
}

fn layout() -> Layout {
    Layout::from_size_align(4096, 4096).unwrap()
}

impl TableMemory for Direct {
    fn alloc(&mut self) -> Option<u64> {
        // SAFETY: a non-zero-sized layout.
        let p = unsafe { alloc_zeroed(layout()) };
        self.live += 1;
        (!p.is_null()).then_some(p as u64)
    }
    fn free(&mut self, table: u64) {
        self.live -= 1;
        // SAFETY: allocated by `alloc` above with the same layout.
        unsafe { dealloc(table as *mut u8, layout()) }
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        debug_assert!(index < ENTRIES);
        // SAFETY: a live table of 512 entries.
        unsafe { (table as *const u64).add(index).read() }
    }
    fn write(&mut self, table: u64, index: usize, value: u64) {
        // SAFETY: as above.
        unsafe { (table as *mut u64).add(index).write(value) }
    }
}

fn ours_map_pages<F: Format + Copy>(fmt: F) -> (Direct, PageTable<F>) {
    let mut mem = Direct::default();
    let mut pt = PageTable::new(fmt, &mut mem).unwrap();
    for k in 0..PAGES {
        pt.map(
            &mut mem,
            BASE + k * K4,
            0x1_0000_0000 + k * K4,
            K4,
            Prot::RW,
        )
        .unwrap();
    }
    (mem, pt)
}

fn ours_teardown<F: Format>(mut mem: Direct, pt: PageTable<F>) {
    let mut g = Gather::default();
    pt.destroy(&mut mem, &mut g);
    g.release(&mut mem);
}

fn ours<F: Format + Copy + 'static>(c: &mut Criterion, name: &str, fmt: F) {
    let mut g = c.benchmark_group(format!("ours {name}"));
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    g.bench_function("map 262144 x 4 KiB", |b| {
        b.iter_batched(
            || (),
            |()| {
                let (mem, pt) = ours_map_pages(fmt);
                ours_teardown(mem, pt);
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("lookup 262144", |b| {
        let (mem, pt) = ours_map_pages(fmt);
        b.iter(|| {
            for k in 0..PAGES {
                black_box(pt.iova_to_phys(&mem, BASE + k * K4));
            }
        });
        ours_teardown(mem, pt);
    });
    g.bench_function("unmap 262144 x 4 KiB", |b| {
        b.iter_batched(
            || ours_map_pages(fmt),
            |(mut mem, mut pt)| {
                let mut gather = Gather::default();
                for k in 0..PAGES {
                    pt.unmap(&mut mem, BASE + k * K4, K4, &mut gather).unwrap();
                }
                // Returned, so freeing happens outside the timing, as the
                // peers' unmaps free nothing at all.
                (mem, pt, gather)
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("map 1 GiB range", |b| {
        b.iter(|| {
            let mut mem = Direct::default();
            let mut pt = PageTable::new(fmt, &mut mem).unwrap();
            pt.map(&mut mem, BASE, 0x1_0000_0000 - G1 + G1, G1, Prot::RW)
                .unwrap();
            ours_teardown(mem, pt);
        })
    });
    g.finish();
    let (mem, pt) = ours_map_pages(fmt);
    eprintln!(
        "ours {name}: 1 GiB in 4 KiB pages uses {} table pages ({} KiB); the format's minimum is 515",
        pt.tables(),
        pt.tables() * 4
    );
    let mut mem2 = Direct::default();
    let mut one = PageTable::new(fmt, &mut mem2).unwrap();
    one.map(&mut mem2, BASE, 0x1_0000_0000, G1, Prot::RW)
        .unwrap();
    eprintln!(
        "ours {name}: a 1 GiB range maps as {} leaf of {} bytes, {} tables",
        1,
        one.lookup(&mem2, BASE).unwrap().leaf_size,
        one.tables()
    );
    ours_teardown(mem, pt);
    ours_teardown(mem2, one);
}

mod arm_peer {
    use super::*;
    use aarch64_paging::idmap::IdMap;
    use aarch64_paging::paging::{Attributes, MemoryRegion, TranslationRegime};

    fn flags() -> Attributes {
        Attributes::VALID
            | Attributes::ATTRIBUTE_INDEX_0
            | Attributes::INNER_SHAREABLE
            | Attributes::ACCESSED
            | Attributes::NON_GLOBAL
            | Attributes::UXN
            | Attributes::PXN
    }

    fn map_pages() -> IdMap {
        let mut m = IdMap::new(1, 0, TranslationRegime::El1And0);
        for k in 0..PAGES {
            let va = (BASE + k * K4) as usize;
            m.map_range(&MemoryRegion::new(va, va + K4 as usize), flags())
                .unwrap();
        }
        m
    }

    pub fn bench(c: &mut Criterion) {
        let mut g = c.benchmark_group("aarch64-paging stage 1");
        g.sample_size(10).measurement_time(Duration::from_secs(4));
        g.bench_function("map 262144 x 4 KiB", |b| {
            b.iter_batched(|| (), |()| drop(map_pages()), BatchSize::PerIteration)
        });
        g.bench_function("lookup 262144", |b| {
            let m = map_pages();
            b.iter(|| {
                for k in 0..PAGES {
                    let va = (BASE + k * K4) as usize;
                    let mut pa = None;
                    m.walk_range(&MemoryRegion::new(va, va + 1), &mut |_, d, _| {
                        pa = Some(d.output_address());
                        Ok(())
                    })
                    .unwrap();
                    black_box(pa);
                }
            })
        });
        g.bench_function("unmap 262144 x 4 KiB", |b| {
            b.iter_batched(
                map_pages,
                |mut m| {
                    for k in 0..PAGES {
                        let va = (BASE + k * K4) as usize;
                        m.map_range(
                            &MemoryRegion::new(va, va + K4 as usize),
                            Attributes::empty(),
                        )
                        .unwrap();
                    }
                    // Dropped (tables freed) outside the timing.
                    m
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("map 1 GiB range", |b| {
            b.iter(|| {
                let mut m = IdMap::new(1, 0, TranslationRegime::El1And0);
                m.map_range(
                    &MemoryRegion::new(BASE as usize, (BASE + G1) as usize),
                    flags(),
                )
                .unwrap();
                drop(m)
            })
        });
        g.finish();
    }
}

mod x86_peer {
    use super::*;
    use x86_64::structures::paging::{
        FrameAllocator, Mapper, OffsetPageTable, Page, PageTable as X86Table, PageTableFlags,
        PhysFrame, Size1GiB, Size4KiB, Translate,
    };
    use x86_64::{PhysAddr, VirtAddr};

    /// Frames from the host heap; physical address = pointer (offset 0).
    struct Frames;

    // SAFETY: each frame is a fresh, page-aligned, zeroed allocation that
    // nothing else uses.
    unsafe impl FrameAllocator<Size4KiB> for Frames {
        fn allocate_frame(&mut self) -> Option<PhysFrame<Size4KiB>> {
            // SAFETY: a non-zero-sized layout.
            let p = unsafe { alloc_zeroed(layout()) };
            PhysFrame::from_start_address(PhysAddr::new(p as u64)).ok()
        }
    }

    struct Table {
        root: *mut X86Table,
    }

    impl Table {
        fn new() -> Self {
            let root = Frames.allocate_frame().unwrap().start_address().as_u64() as *mut X86Table;
            Table { root }
        }

        fn mapper(&mut self) -> OffsetPageTable<'_> {
            // SAFETY: the root table is ours; tables are addressed by
            // pointer, so the physical offset is 0.
            unsafe { OffsetPageTable::new(&mut *self.root, VirtAddr::new(0)) }
        }
    }

    fn flags() -> PageTableFlags {
        PageTableFlags::PRESENT
            | PageTableFlags::WRITABLE
            | PageTableFlags::USER_ACCESSIBLE
            | PageTableFlags::NO_EXECUTE
    }

    fn map_pages() -> Table {
        let mut t = Table::new();
        let mut m = t.mapper();
        for k in 0..PAGES {
            let page = Page::<Size4KiB>::containing_address(VirtAddr::new(BASE + k * K4));
            let frame = PhysFrame::containing_address(PhysAddr::new(0x1_0000_0000 + k * K4));
            // SAFETY: nothing runs on these mappings; no flush (invlpg is
            // privileged, and the table is not live).
            unsafe { m.map_to(page, frame, flags(), &mut Frames) }
                .unwrap()
                .ignore();
        }
        t
    }

    pub fn bench(c: &mut Criterion) {
        let mut g = c.benchmark_group("x86_64 OffsetPageTable");
        g.sample_size(10).measurement_time(Duration::from_secs(4));
        // The peer frees no tables; its memory is left to the process, which
        // only makes it look faster.
        g.bench_function("map 262144 x 4 KiB", |b| {
            b.iter_batched(|| (), |()| black_box(map_pages()), BatchSize::PerIteration)
        });
        g.bench_function("lookup 262144", |b| {
            let mut t = map_pages();
            let m = t.mapper();
            b.iter(|| {
                for k in 0..PAGES {
                    black_box(m.translate_addr(VirtAddr::new(BASE + k * K4)));
                }
            })
        });
        g.bench_function("unmap 262144 x 4 KiB", |b| {
            b.iter_batched(
                map_pages,
                |mut t| {
                    let mut m = t.mapper();
                    for k in 0..PAGES {
                        let page =
                            Page::<Size4KiB>::containing_address(VirtAddr::new(BASE + k * K4));
                        m.unmap(page).unwrap().1.ignore();
                    }
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("map 1 GiB range", |b| {
            b.iter(|| {
                let mut t = Table::new();
                let mut m = t.mapper();
                let page = Page::<Size1GiB>::containing_address(VirtAddr::new(BASE));
                let frame = PhysFrame::containing_address(PhysAddr::new(0x1_0000_0000 - G1 + G1));
                // SAFETY: as in map_pages.
                unsafe {
                    m.map_to(
                        page,
                        frame,
                        flags() | PageTableFlags::HUGE_PAGE,
                        &mut Frames,
                    )
                }
                .unwrap()
                .ignore();
            })
        });
        g.finish();
    }
}

/// Dirty tracking: read-and-clear over 1 GiB mapped as 4 KiB pages
/// (every page dirty, or none) and as 2 MiB blocks (every block dirty).
/// Each iteration first sets the dirty state (untimed).
fn dirty<F: Format + Copy + 'static>(c: &mut Criterion, name: &str, fmt: F) {
    let mut g = c.benchmark_group(format!("dirty {name}"));
    g.sample_size(10).measurement_time(Duration::from_secs(4));
    let timed = |pt: &mut PageTable<F>, mem: &mut Direct, all_dirty: bool, iters: u64| {
        let mut total = Duration::ZERO;
        for _ in 0..iters {
            let mut gather = Gather::default();
            pt.set_dirty_tracking(mem, true, &mut gather).unwrap();
            if all_dirty {
                // Off marks every leaf as written: what a full write pass leaves.
                pt.set_dirty_tracking(mem, false, &mut gather).unwrap();
            }
            let mut gather = Gather::default();
            let t = std::time::Instant::now();
            let d = pt
                .read_and_clear_dirty(mem, BASE, G1, true, &mut gather)
                .unwrap();
            total += t.elapsed();
            black_box((d.len(), gather.ranges.len()));
        }
        total
    };
    for (label, all_dirty) in [("every page dirty", true), ("no page dirty", false)] {
        let (mut mem, mut pt) = ours_map_pages(fmt);
        g.bench_function(
            format!("read-and-clear 1 GiB of 4 KiB pages, {label}"),
            |b| b.iter_custom(|iters| timed(&mut pt, &mut mem, all_dirty, iters)),
        );
        ours_teardown(mem, pt);
    }
    let mut mem = Direct::default();
    let mut pt = PageTable::new(fmt, &mut mem).unwrap();
    // One map per block: a single 1 GiB map would be one 1 GiB block.
    for k in 0..G1 / M2 {
        pt.map(
            &mut mem,
            BASE + k * M2,
            0x1_0000_0000 + k * M2,
            M2,
            Prot::RW,
        )
        .unwrap();
    }
    g.bench_function(
        "read-and-clear 1 GiB of 2 MiB blocks, every block dirty",
        |b| b.iter_custom(|iters| timed(&mut pt, &mut mem, true, iters)),
    );
    ours_teardown(mem, pt);
}

fn all(c: &mut Criterion) {
    dirty(c, "Arm stage 1", ArmLpae::S1);
    dirty(c, "x86-64 first level", X86FirstLevel { gib_pages: false });
    ours(c, "Arm stage 1", ArmLpae::S1);
    arm_peer::bench(c);
    ours(c, "x86-64 first level", X86FirstLevel { gib_pages: true });
    x86_peer::bench(c);
}

criterion_group!(benches, all);
criterion_main!(benches);
