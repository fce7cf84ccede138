extern crate std;

use super::arm::ArmLpae;
use super::x86::{VtdSecondLevel, X86FirstLevel};
use super::*;
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use std::collections::HashMap;

/// Tables in host memory, at made-up physical addresses.
#[derive(Default)]
pub struct HostTables {
    tables: HashMap<u64, Box<[u64; ENTRIES]>>,
    next: u64,
    /// Fail allocations once this many tables exist.
    pub limit: Option<usize>,
    /// Tables written since the last barrier.
    unordered: std::collections::HashSet<u64>,
    /// Tables allocated and not yet linked where a walker can reach them
    /// (every table but the root, until a link into a reachable table).
    hidden: std::collections::HashSet<u64>,
    /// Links written into a reachable table while writes into tables were
    /// not yet ordered before them.
    pub early_links: usize,
}

impl HostTables {
    pub fn live(&self) -> usize {
        self.tables.len()
    }
}

impl TableMemory for HostTables {
    fn alloc(&mut self) -> Option<u64> {
        if self.limit.is_some_and(|l| self.tables.len() >= l) {
            return None;
        }
        self.next += PAGE_SIZE;
        let pa = 0x10_0000_0000 + self.next;
        if !self.tables.is_empty() {
            self.hidden.insert(pa);
        }
        self.tables.insert(pa, Box::new([0; ENTRIES]));
        Some(pa)
    }

    fn free(&mut self, table: u64) {
        assert!(
            self.tables.remove(&table).is_some(),
            "double free of {table:#x}"
        );
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        self.tables[&table][index]
    }

    fn write(&mut self, table: u64, index: usize, value: u64) {
        // A link into a reachable table makes the tables below it
        // reachable: their contents must be ordered before it.
        let target = value & 0x000f_ffff_ffff_f000;
        if !self.hidden.contains(&table) && self.hidden.contains(&target) {
            self.early_links += usize::from(!self.unordered.is_empty());
            let mut reveal = alloc::vec![target];
            while let Some(t) = reveal.pop() {
                self.hidden.remove(&t);
                for &e in self.tables[&t].iter() {
                    let below = e & 0x000f_ffff_ffff_f000;
                    if self.hidden.contains(&below) {
                        reveal.push(below);
                    }
                }
            }
        }
        self.unordered.insert(table);
        self.tables.get_mut(&table).expect("write to a freed table")[index] = value;
    }

    fn barrier(&mut self) {
        self.unordered.clear();
    }
}

const K4: u64 = 4096;
const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

const FL: X86FirstLevel = X86FirstLevel { gib_pages: true };
const SL48: VtdSecondLevel = VtdSecondLevel {
    levels: 4,
    mib2_pages: true,
    gib_pages: true,
};
const SL39: VtdSecondLevel = VtdSecondLevel {
    levels: 3,
    mib2_pages: true,
    gib_pages: true,
};

fn prot(read: bool, write: bool, exec: bool, privileged: bool, device: bool) -> Prot {
    Prot {
        read,
        write,
        exec,
        privileged,
        device,
    }
}

#[test]
fn arm_encodings_bit_by_bit() {
    let s1 = ArmLpae::S1;
    // Page: valid+page, AP[1] unprivileged, SH inner, AF, nG, UXN+PXN.
    assert_eq!(
        s1.encode_leaf(0x1234_5000, 3, Prot::RW),
        0x0060_0000_1234_5f43
    );
    // 2 MiB block: AttrIndx 1 (device), AP[2] read-only, privileged, exec.
    assert_eq!(
        s1.encode_leaf(0x4020_0000, 2, prot(true, false, true, true, true)),
        0x0000_0000_4020_0c85
    );
    assert_eq!(s1.encode_table(0x8000_1000, 0), 0x8000_1003);
    let s2 = ArmLpae::S2;
    // Page: MemAttr 0b1111, S2AP read+write, SH inner, AF, XN.
    assert_eq!(
        s2.encode_leaf(0x1234_5000, 3, Prot::RW),
        0x0040_0000_1234_57ff
    );
    // 1 GiB block: MemAttr device nGnRE, read only, exec.
    assert_eq!(
        s2.encode_leaf(0x8000_0000, 1, prot(true, false, true, false, true)),
        0x8000_0445
    );
    // A level-3 descriptor with bit 1 clear is reserved; a level-0 block invalid.
    assert_eq!(s1.decode(0x1234_5001, 3), Pte::Invalid);
    assert_eq!(s1.decode(0x4000_0001, 0), Pte::Invalid);
    assert_eq!(s1.decode(0x8000_1003, 2), Pte::Table(0x8000_1000));
    assert_eq!(MAIR_CHECK, arm::MAIR);
}

const MAIR_CHECK: u64 = 0x04ff;

#[test]
fn x86_encodings_bit_by_bit() {
    // 4 KiB: P, RW, U/S, A, D; no XD (it needs the deprecated NXE).
    assert_eq!(FL.encode_leaf(0x1234_5000, 3, Prot::RW), 0x1234_5067);
    // 2 MiB: P, A, PS; supervisor, read-only, executable.
    assert_eq!(
        FL.encode_leaf(0x4020_0000, 2, prot(true, false, true, true, false)),
        0x4020_00a1
    );
    assert_eq!(FL.encode_table(0x8000_1000, 1), 0x8000_1027);
    // Second level 4 KiB: R, W, EMT write-back.
    assert_eq!(SL48.encode_leaf(0x1234_5000, 3, Prot::RW), 0x1234_5033);
    // 2 MiB write-only device: W, PS, EMT 0.
    assert_eq!(
        SL48.encode_leaf(0x4020_0000, 2, prot(false, true, false, false, true)),
        0x4020_0082
    );
    assert_eq!(SL48.encode_table(0x8000_1000, 0), 0x8000_1003);
    // 39-bit: three levels, the root covers 512 GiB.
    assert_eq!(SL39.ias(), 39);
    assert_eq!(SL39.encode_leaf(0x4000_0000, 0, Prot::RW), 0x4000_00b3);
    // No 1 GiB pages without FS1GP: such an entry is not a leaf.
    let no_gib = X86FirstLevel { gib_pages: false };
    assert_eq!(no_gib.decode(0x4000_00a1, 1), Pte::Invalid);
}

/// What each format can represent of a requested protection.
fn representable<F: Format>(f: &F, p: Prot) -> Prot {
    match f.name() {
        n if n.contains("stage 1") => Prot { read: true, ..p },
        n if n.contains("stage 2") => Prot {
            privileged: false,
            ..p
        },
        n if n.contains("first level") => Prot {
            read: true,
            exec: false,
            ..p
        },
        _ => Prot {
            exec: false,
            privileged: false,
            ..p
        },
    }
}

fn all_prots() -> impl Iterator<Item = Prot> {
    (0..32u8).map(|b| prot(b & 1 != 0, b & 2 != 0, b & 4 != 0, b & 8 != 0, b & 16 != 0))
}

fn round_trip<F: Format>(f: &F) {
    for p in all_prots().filter(|p| p.read || p.write) {
        for level in (0..f.levels()).filter(|&l| f.leaf_allowed(l) || l + 1 == f.levels()) {
            let pa = 0x7_0000_0000u64 & !((1u64 << level_shift(f.levels(), level)) - 1);
            let e = f.encode_leaf(pa, level, p);
            assert_eq!(
                f.decode(e, level),
                Pte::Leaf {
                    pa,
                    prot: representable(f, p)
                },
                "{} level {level} {p:?} -> {e:#x}",
                f.name()
            );
        }
    }
    for level in 0..f.levels() - 1 {
        assert_eq!(
            f.decode(f.encode_table(0x1234_5000, level), level),
            Pte::Table(0x1234_5000)
        );
        assert_eq!(f.decode(0, level), Pte::Invalid);
    }
}

#[test]
fn every_format_round_trips() {
    round_trip(&ArmLpae::S1);
    round_trip(&ArmLpae::S2);
    round_trip(&FL);
    round_trip(&SL48);
    round_trip(&SL39);
}

#[test]
fn map_lookup_unmap_and_tables_freed() {
    let mut mem = HostTables::default();
    let mut pt = PageTable::new(ArmLpae::S1, &mut mem).unwrap();
    pt.map(&mut mem, 0x10_0000, 0x8000_0000, 3 * K4, Prot::RW)
        .unwrap();
    assert_eq!(pt.tables(), 4);
    assert_eq!(pt.iova_to_phys(&mem, 0x10_1234), Some(0x8000_1234));
    assert_eq!(
        pt.lookup(&mem, 0x10_2000),
        Some(Translation {
            pa: 0x8000_2000,
            prot: Prot::RW,
            leaf_size: K4
        })
    );
    assert_eq!(pt.iova_to_phys(&mem, 0x10_3000), None);
    let mut g = Gather::default();
    pt.unmap(&mut mem, 0x10_1000, K4, &mut g).unwrap();
    assert_eq!(pt.iova_to_phys(&mem, 0x10_1000), None);
    assert_eq!(pt.iova_to_phys(&mem, 0x10_2000), Some(0x8000_2000));
    assert_eq!(g.ranges, [(0x10_1000, K4)]);
    assert!(g.freed_tables.is_empty());
    pt.unmap(&mut mem, 0x10_0000, K4, &mut g).unwrap();
    pt.unmap(&mut mem, 0x10_2000, K4, &mut g).unwrap();
    assert_eq!(g.freed_tables.len(), 3, "L3, L2 and L1 tables emptied");
    assert_eq!(pt.tables(), 1);
    // Freed only on release: the driver invalidates first.
    assert_eq!(mem.live(), 4);
    g.release(&mut mem);
    assert_eq!(mem.live(), 1);
    let mut g = Gather::default();
    pt.destroy(&mut mem, &mut g);
    g.release(&mut mem);
    assert_eq!(mem.live(), 0);
}

#[test]
fn blocks_where_aligned() {
    for (name, gib, mib2) in [
        ("s1", true, true),
        ("fl no 1G", false, true),
        ("sl 4K only", false, false),
    ] {
        let mut mem = HostTables::default();
        let f = VtdSecondLevel {
            levels: 4,
            mib2_pages: mib2,
            gib_pages: gib,
        };
        let mut pt = PageTable::new(f, &mut mem).unwrap();
        // 1 GiB + 2 MiB + 4 KiB, from a 1 GiB aligned IOVA and PA.
        pt.map(&mut mem, G1, 2 * G1, G1 + M2 + K4, Prot::RW)
            .unwrap();
        let sizes = (
            pt.lookup(&mem, G1 + 5 * K4).unwrap().leaf_size,
            pt.lookup(&mem, 2 * G1 + K4).unwrap().leaf_size,
            pt.lookup(&mem, 2 * G1 + M2).unwrap().leaf_size,
        );
        let want = match (gib, mib2) {
            (true, true) => (G1, M2, K4),
            (false, true) => (M2, M2, K4),
            _ => (K4, K4, K4),
        };
        assert_eq!(sizes, want, "{name}");
        assert_eq!(pt.iova_to_phys(&mem, 2 * G1 + M2), Some(3 * G1 + M2));
    }
    // Misaligned by 4 KiB between IOVA and PA: no block is possible.
    let mut mem = HostTables::default();
    let mut pt = PageTable::new(ArmLpae::S1, &mut mem).unwrap();
    pt.map(&mut mem, 0, K4, M2, Prot::RW).unwrap();
    assert_eq!(pt.lookup(&mem, 0).unwrap().leaf_size, K4);
}

#[test]
fn partial_unmap_splits_a_block() {
    for f in [ArmLpae::S1, ArmLpae::S2] {
        let mut mem = HostTables::default();
        let mut pt = PageTable::new(f, &mut mem).unwrap();
        let p = prot(true, false, false, false, false);
        pt.map(&mut mem, G1, 4 * G1, G1, p).unwrap();
        assert_eq!(pt.tables(), 2);
        let mut g = Gather::default();
        // 4 KiB out of the middle: the 1 GiB block becomes a table of
        // 2 MiB blocks, one of which becomes a table of 4 KiB pages.
        let hole = G1 + 3 * M2 + 5 * K4;
        pt.unmap(&mut mem, hole, K4, &mut g).unwrap();
        assert_eq!(pt.tables(), 4);
        assert_eq!(pt.iova_to_phys(&mem, hole), None);
        for va in [G1, hole - K4, hole + K4, G1 + 3 * M2, 2 * G1 - K4] {
            let t = pt.lookup(&mem, va).unwrap();
            assert_eq!(t.pa, va - G1 + 4 * G1);
            assert_eq!(t.prot, representable(&f, p));
        }
        assert_eq!(pt.lookup(&mem, G1).unwrap().leaf_size, M2);
        assert_eq!(pt.lookup(&mem, hole + K4).unwrap().leaf_size, K4);
        // The whole block may have been cached: its range is gathered.
        assert!(
            g.ranges.iter().any(|&(a, s)| a == G1 && s == G1),
            "{:?}",
            g.ranges
        );
        // Unmap across the rest: everything goes, tables included.
        pt.unmap(&mut mem, G1, hole - G1, &mut g).unwrap();
        pt.unmap(&mut mem, hole + K4, 2 * G1 - hole - K4, &mut g)
            .unwrap();
        assert_eq!(pt.tables(), 1);
        g.release(&mut mem);
        assert_eq!(mem.live(), 1);
    }
}

#[test]
fn bad_requests_change_nothing() {
    let mut mem = HostTables::default();
    let mut pt = PageTable::new(SL39, &mut mem).unwrap();
    pt.map(&mut mem, 0x20_0000, 0x100_0000, M2, Prot::RW)
        .unwrap();
    let before = (pt.tables(), mem.live(), pt.lookup(&mem, 0x20_0000));
    let mut g = Gather::default();
    assert_eq!(
        pt.map(&mut mem, 0x1000, 0x2001, K4, Prot::RW),
        Err(PgError::Misaligned {
            iova: 0x1000,
            pa: 0x2001,
            size: K4
        })
    );
    assert!(matches!(
        pt.map(&mut mem, 0, 0, 0, Prot::RW),
        Err(PgError::Misaligned { .. })
    ));
    assert_eq!(
        pt.map(&mut mem, 0, 0, K4, prot(false, false, true, false, false)),
        Err(PgError::NoAccess { iova: 0 })
    );
    assert_eq!(
        pt.map(&mut mem, (1 << 39) - K4, 0, 2 * K4, Prot::RW),
        Err(PgError::OutOfRange {
            iova: (1 << 39) - K4,
            size: 2 * K4
        })
    );
    assert!(matches!(
        pt.map(&mut mem, u64::MAX - K4 + 1, 0, 2 * K4, Prot::RW),
        Err(PgError::OutOfRange { .. })
    ));
    // Overlap in the middle of the range: nothing of it gets mapped.
    assert_eq!(
        pt.map(&mut mem, 0x10_0000, 0x900_0000, 0x20_0000, Prot::RW),
        Err(PgError::Overlap { iova: 0x20_0000 })
    );
    assert_eq!(pt.iova_to_phys(&mem, 0x10_0000), None);
    assert_eq!(
        pt.unmap(&mut mem, 0x3f_f000, 2 * K4, &mut g),
        Err(PgError::NotMapped { iova: 0x40_0000 })
    );
    assert_eq!(
        pt.unmap(&mut mem, 0x1f_f000, 2 * K4, &mut g),
        Err(PgError::NotMapped { iova: 0x1f_f000 })
    );
    assert!(g.is_empty());
    assert_eq!(
        (pt.tables(), mem.live(), pt.lookup(&mem, 0x20_0000)),
        before
    );

    // Out of table memory halfway: what this call mapped is taken back.
    mem.limit = Some(mem.live() + 1);
    assert_eq!(
        pt.map(&mut mem, G1, G1, G1 + K4, Prot::RW),
        Err(PgError::NoMemory)
    );
    assert_eq!(pt.iova_to_phys(&mem, G1), None);
    assert_eq!((pt.tables(), mem.live()), (before.0, before.1));
    // Splitting a block needs memory too: refused whole, block intact.
    mem.limit = Some(mem.live());
    assert_eq!(
        pt.unmap(&mut mem, 0x20_1000, K4, &mut g),
        Err(PgError::NoMemory)
    );
    assert_eq!(pt.lookup(&mem, 0x20_1000).unwrap().leaf_size, M2);
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random maps and unmaps against a page-by-page reference model: every
/// result and every lookup agree, and tearing down frees every table.
fn property<F: Format + Copy>(f: F, seed: u64) {
    let mut mem = HostTables::default();
    let mut pt = PageTable::new(f, &mut mem).unwrap();
    let mut model: BTreeMap<u64, (u64, Prot)> = BTreeMap::new();
    let mut rng = Rng(seed);
    // A window of 8 GiB so 1 GiB blocks appear; sizes favour blocks.
    let window = 8 * G1;
    let sizes = [K4, 2 * K4, 5 * K4, M2, M2 + K4, 2 * M2, 3 * M2, G1, G1 + M2];
    let prots = [Prot::RW, Prot::RO, Prot::WO];
    let mut gather = Gather::default();
    for step in 0..1500 {
        let size = sizes[rng.below(sizes.len() as u64) as usize];
        let align = [K4, M2, G1][rng.below(3) as usize];
        let iova = (rng.below(window / align) * align).min(window - size);
        let iova = iova & !(K4 - 1);
        if rng.below(3) != 0 {
            let pa = rng.below(window / align) * align + 16 * G1;
            let p = prots[rng.below(3) as usize];
            let clash = (0..size / K4)
                .map(|k| iova + k * K4)
                .find(|va| model.contains_key(va));
            let r = pt.map(&mut mem, iova, pa, size, p);
            match clash {
                Some(va) => assert_eq!(r, Err(PgError::Overlap { iova: va }), "step {step}"),
                None => {
                    assert_eq!(r, Ok(()), "step {step}");
                    for k in 0..size / K4 {
                        model.insert(iova + k * K4, (pa + k * K4, representable(&f, p)));
                    }
                }
            }
        } else {
            let hole = (0..size / K4)
                .map(|k| iova + k * K4)
                .find(|va| !model.contains_key(va));
            let r = pt.unmap(&mut mem, iova, size, &mut gather);
            match hole {
                Some(va) => assert_eq!(r, Err(PgError::NotMapped { iova: va }), "step {step}"),
                None => {
                    assert_eq!(r, Ok(()), "step {step}");
                    for k in 0..size / K4 {
                        model.remove(&(iova + k * K4));
                    }
                }
            }
        }
        if step % 50 == 0 {
            gather.release(&mut mem);
        }
        for _ in 0..8 {
            let va = rng.below(window / K4) * K4;
            let want = model.get(&va).copied();
            let got = pt.lookup(&mem, va).map(|t| (t.pa, t.prot));
            assert_eq!(got, want, "{} step {step} lookup {va:#x}", f.name());
        }
    }
    // Every page of the model, then tear down in ranges of what is mapped.
    for (&va, &want) in &model {
        assert_eq!(pt.lookup(&mem, va).map(|t| (t.pa, t.prot)), Some(want));
    }
    let pages: alloc::vec::Vec<u64> = model.keys().copied().collect();
    let mut i = 0;
    while i < pages.len() {
        let mut j = i + 1;
        while j < pages.len() && pages[j] == pages[j - 1] + K4 {
            j += 1;
        }
        pt.unmap(&mut mem, pages[i], (j - i) as u64 * K4, &mut gather)
            .unwrap();
        i = j;
    }
    assert_eq!(pt.tables(), 1, "{}", f.name());
    gather.release(&mut mem);
    assert_eq!(mem.live(), 1, "{}: leaked tables", f.name());
}

#[test]
fn random_operations_match_a_reference_model() {
    property(ArmLpae::S1, 1);
    property(ArmLpae::S2, 2);
    property(FL, 3);
    property(X86FirstLevel { gib_pages: false }, 4);
    property(SL48, 5);
    property(
        VtdSecondLevel {
            levels: 4,
            mib2_pages: false,
            gib_pages: false,
        },
        6,
    );
}

/// 1 GiB in 4 KiB pages takes the minimum the format needs: the root, one
/// table per level above the leaves, 512 leaf tables.
#[test]
fn table_memory_for_a_gib_of_pages_is_minimal() {
    let mut mem = HostTables::default();
    let mut pt = PageTable::new(ArmLpae::S1, &mut mem).unwrap();
    // PA offset by 4 KiB from a block boundary: only pages fit.
    pt.map(&mut mem, 0, K4, G1, Prot::RW).unwrap();
    assert_eq!(pt.tables(), 1 + 1 + 1 + 512);
    assert_eq!(mem.live(), pt.tables());
    assert_eq!(pt.lookup(&mem, G1 - K4).unwrap().pa, G1);
}

/// A table is filled before the write that links it becomes visible: a
/// barrier stands between them, when new levels are linked by a map and
/// when a block is split by a partial unmap (issue 13, point 11).
#[test]
fn tables_are_filled_before_they_are_linked() {
    for fmt in [
        crate::iommu::domain::TableFormat::Arm(ArmLpae::S1),
        crate::iommu::domain::TableFormat::X86FirstLevel(X86FirstLevel { gib_pages: true }),
    ] {
        let mut mem = HostTables::default();
        let mut t = PageTable::new(fmt, &mut mem).unwrap();
        t.map(&mut mem, 0x4000_0000, 0x8000_0000, 0x1000, Prot::RW)
            .unwrap();
        // A 2 MiB block, then a hole punched in it: split one level down.
        t.map(&mut mem, 0x8020_0000, 0x9020_0000, 0x20_0000, Prot::RW)
            .unwrap();
        let mut g = Gather::default();
        t.unmap(&mut mem, 0x8020_1000, 0x1000, &mut g).unwrap();
        assert_eq!(
            mem.early_links, 0,
            "{fmt:?}: a table linked before it was filled"
        );
        t.destroy(&mut mem, &mut g);
        g.release(&mut mem);
    }
}

/// Second-level entries set only the fields VT-d 9.8 defines for their
/// type: a 4 KiB leaf R/W/X, EMT, IPAT and the address; a 2 MiB or 1 GiB
/// leaf the same with PS and an address whose low bits (reserved there)
/// are clear, whatever address it was handed; a non-leaf R/W/X and the
/// table's address, PS clear (issue 13, point 16).
#[test]
fn second_level_entries_set_no_reserved_bits() {
    const ATTRS: u64 = 0x7f; // R, W, X, EMT, IPAT
    const PS: u64 = 1 << 7;
    let addr = |low_bit: u32| 0x000f_ffff_ffff_f000u64 & !((1u64 << low_bit) - 1);
    for f in [SL48, SL39] {
        for level in 0..f.levels {
            let table = f.encode_table(u64::MAX, level);
            assert_eq!(
                table & !(0x7 | addr(12)),
                0,
                "{} table at {level}: {table:#x}",
                f.name()
            );
            if !f.leaf_allowed(level) {
                continue;
            }
            let shift = level_shift(f.levels, level);
            let allowed = ATTRS | addr(shift) | if shift > 12 { PS } else { 0 };
            for p in all_prots().filter(|p| p.read || p.write) {
                let e = f.encode_leaf(u64::MAX, level, p);
                assert_eq!(
                    e & !allowed,
                    0,
                    "{} leaf of 2^{shift} at {level}: {e:#x}",
                    f.name()
                );
            }
        }
    }
}

/// The slot of the leaf that maps `va`: (table, index, level).
fn leaf_slot<F: Format>(pt: &PageTable<F>, mem: &HostTables, va: u64) -> (u64, usize, usize) {
    let f = pt.format();
    let mut table = pt.root();
    for level in 0..f.levels() {
        let i = ((va >> level_shift(f.levels(), level)) as usize) & (ENTRIES - 1);
        match f.decode(mem.read(table, i), level) {
            Pte::Table(next) => table = next,
            Pte::Leaf { .. } => return (table, i, level),
            Pte::Invalid => break,
        }
    }
    panic!("{va:#x} is not mapped");
}

/// What the IOMMU does on a write through `va`'s leaf.
fn hw_write<F: Format>(pt: &PageTable<F>, mem: &mut HostTables, va: u64) {
    let (t, i, level) = leaf_slot(pt, mem, va);
    let e = mem.read(t, i);
    mem.write(t, i, pt.format().dirtied(e, level));
}

fn dirty_tracking_in<F: Format + Copy>(f: F) {
    const MIB2: u64 = 2 << 20;
    let mut mem = HostTables::default();
    let mut pt = PageTable::new(f, &mut mem).unwrap();
    let base = 0x4000_0000;
    pt.map(&mut mem, base, 0x8000_0000, 4 * PAGE_SIZE, Prot::RW)
        .unwrap();
    pt.map(
        &mut mem,
        base + 4 * PAGE_SIZE,
        0x8000_4000,
        PAGE_SIZE,
        Prot::RO,
    )
    .unwrap();
    let block = base + MIB2;
    pt.map(&mut mem, block, 0x9000_0000, MIB2, Prot::RW)
        .unwrap();
    let name = f.name();
    let mut g = Gather::default();
    pt.set_dirty_tracking(&mut mem, true, &mut g).unwrap();
    assert!(
        !g.is_empty(),
        "{name}: the cleaned leaves want an invalidation"
    );
    let mut g = Gather::default();
    let all = pt
        .read_and_clear_dirty(&mut mem, base, 2 * MIB2, true, &mut g)
        .unwrap();
    assert!(
        all.is_empty(),
        "{name}: clean after turning tracking on: {all:x?}"
    );
    // Still writable for the walker, and reads do not dirty.
    assert!(pt.lookup(&mem, base).unwrap().prot.write, "{name}");
    assert!(
        !pt.lookup(&mem, base + 4 * PAGE_SIZE).unwrap().prot.write,
        "{name}"
    );
    hw_write(&pt, &mut mem, base + PAGE_SIZE);
    hw_write(&pt, &mut mem, block + 0x1234);
    let mut g = Gather::default();
    let seen = pt
        .read_and_clear_dirty(&mut mem, base, 2 * MIB2, false, &mut g)
        .unwrap();
    assert_eq!(
        seen,
        [(base + PAGE_SIZE, PAGE_SIZE), (block, MIB2)],
        "{name}: block granularity"
    );
    assert!(g.is_empty(), "{name}: no clear, nothing to invalidate");
    let seen = pt
        .read_and_clear_dirty(&mut mem, base, 2 * MIB2, true, &mut g)
        .unwrap();
    assert_eq!(seen.len(), 2, "{name}");
    assert_eq!(
        g.ranges,
        [(base + PAGE_SIZE, PAGE_SIZE), (block, MIB2)],
        "{name}"
    );
    let again = pt
        .read_and_clear_dirty(&mut mem, base, 2 * MIB2, true, &mut Gather::default())
        .unwrap();
    assert!(again.is_empty(), "{name}: cleared");
    // A dirty block cut in part keeps its other pages dirty.
    hw_write(&pt, &mut mem, block);
    let mut g = Gather::default();
    pt.unmap(&mut mem, block, PAGE_SIZE, &mut g).unwrap();
    let seen = pt
        .read_and_clear_dirty(&mut mem, block, MIB2, false, &mut Gather::default())
        .unwrap();
    assert_eq!(
        seen.len(),
        511,
        "{name}: the split block's pages stay dirty"
    );
    // New mappings start clean while tracking is on.
    pt.map(&mut mem, block, 0x9000_0000, PAGE_SIZE, Prot::RW)
        .unwrap();
    let (t, i, level) = leaf_slot(&pt, &mem, block);
    assert!(!pt.format().is_dirty(mem.read(t, i), level), "{name}");
    // Off: everything reads as written.
    pt.set_dirty_tracking(&mut mem, false, &mut Gather::default())
        .unwrap();
    let (t, i, level) = leaf_slot(&pt, &mem, base);
    assert!(
        pt.format().is_dirty(mem.read(t, i), level) || !pt.format().tracks_dirty(),
        "{name}"
    );
    assert!(pt.lookup(&mem, base).unwrap().prot.write, "{name}");
}

#[test]
fn dirty_state_is_read_cleared_and_kept_per_leaf() {
    dirty_tracking_in(FL);
    dirty_tracking_in(ArmLpae::S1);
    dirty_tracking_in(ArmLpae::S2);
    let mut mem = HostTables::default();
    let sl = VtdSecondLevel {
        levels: 4,
        mib2_pages: true,
        gib_pages: false,
    };
    let mut pt = PageTable::new(sl, &mut mem).unwrap();
    assert_eq!(
        pt.set_dirty_tracking(&mut mem, true, &mut Gather::default()),
        Err(PgError::NoDirtyTracking)
    );
}

#[test]
fn dirty_tracking_over_hal_tables() {
    use crate::hal::fake::FakeHal;
    use crate::hal::{Coherency, HalTables};
    let mut mem = HalTables::new(FakeHal::new(), Coherency::NonCoherent);
    let f = X86FirstLevel { gib_pages: false };
    let mut pt = PageTable::new(f, &mut mem).unwrap();
    pt.set_dirty_tracking(&mut mem, true, &mut Gather::default())
        .unwrap();
    pt.map(&mut mem, 0x4000_0000, 0x80_0000, 16 * PAGE_SIZE, Prot::RW)
        .unwrap();
    pt.map(&mut mem, 0x4020_0000, 0x100_0000, 2 << 20, Prot::RW)
        .unwrap();
    let mut seen = 0;
    pt.each_leaf(
        &mut mem,
        0x4000_0000,
        0x4040_0000,
        &mut |_, _, _, _| {
            seen += 1;
            None
        },
        &mut Gather::default(),
    );
    assert_eq!(seen, 17);
}
