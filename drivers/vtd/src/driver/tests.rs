//! Host tests of what the driver writes to memory, over the fake HAL:
//! the tables (root, context, PASID directory and table entries, their
//! write order and invalidations, directory growth, teardown), the
//! invalidation queue's ring, the descriptor plans, and fault records.
//! What needs the unit's registers (GCMD/GSTS, IQT/IQH, FSTS, the fault
//! recording registers) is not here: no fake answers them.
use super::error::{Missing, VtdError};
use super::faults::{normalise, to_fault};
use super::queue::{page_chunks, pasid_flush, unmap_descriptors, Queue, Refused, IQ_ENTRIES};
use super::tables::{Invalidate, Primary, Tables, FIRST_DIR_ENTRIES};
use crate::entries::{ContextEntry, PasidEntry, Translation};
use crate::fault::FaultRecord;
use crate::qi::Descriptor;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;
use kernel::addr::Iova;
use kernel::hal::fake::{FakeHal, MemEvent};
use kernel::hal::{Coherency, Hal, HalError, HalTables};
use kernel::iommu::check::{Cache, Checking, Note, Violation};
use kernel::iommu::domain::{DeviceId, FaultReason, Pasid};
use kernel::iommu::entry::check::{check, Step, Torn};
use kernel::iommu::pgtable::TableMemory;

/// The mark an invalidation leaves in the fake HAL's log.
const INVALIDATION: u32 = 1;
const PAGE: u64 = 4096;

/// Records each batch in the HAL's log (so its order with the stores
/// shows) and in `seen`; fails every batch with `fail`.
struct Recorder {
    hal: FakeHal,
    seen: Vec<Descriptor>,
    fail: bool,
}

impl Invalidate for Recorder {
    fn invalidate(&mut self, descs: &[Descriptor]) -> Result<(), VtdError> {
        for d in descs {
            let [a, b, _, _] = d.encode();
            self.hal.mark(INVALIDATION, a, b);
        }
        self.seen.extend_from_slice(descs);
        if self.fail {
            return Err(VtdError::InvalidationTimeout {
                base: 0,
                seq: 1,
                iqh: 0,
                iqt: 0,
                fsts: 0,
            });
        }
        Ok(())
    }
}

fn setup(second_level: bool) -> (FakeHal, Tables<FakeHal>, Recorder) {
    let hal = FakeHal::new();
    let t = Tables::new(hal.clone(), Coherency::NonCoherent, second_level, 20).unwrap();
    let rec = Recorder {
        hal: hal.clone(),
        seen: Vec::new(),
        fail: false,
    };
    (hal, t, rec)
}

fn word(hal: &FakeHal, pa: u64) -> u64 {
    hal.peek(pa)
        .unwrap_or_else(|| panic!("{pa:#x} is in no live region"))
}

fn first_level(did: u16, root: u64) -> PasidEntry {
    PasidEntry {
        did,
        translation: Translation::FirstLevel {
            root,
            privileged: false,
        },
        page_walk_snoop: false,
    }
}

const FRAME: u64 = !0xfff;

/// The context table of `bus` (lower or upper half), from the root entry.
fn context_table(hal: &FakeHal, t: &Tables<FakeHal>, bus: u8, upper: bool) -> u64 {
    let e = word(
        hal,
        t.root() + 16 * u64::from(bus) + if upper { 8 } else { 0 },
    );
    assert_eq!(e & 1, 1, "root entry half present");
    e & FRAME
}

/// The PASID directory and its size (PDTS) from `sid`'s context entry.
fn directory(hal: &FakeHal, t: &Tables<FakeHal>, sid: u16) -> (u64, u32) {
    let [bus, devfn] = sid.to_be_bytes();
    let ctx = context_table(hal, t, bus, devfn >= 128);
    let lo = word(hal, ctx + 32 * u64::from(devfn & 0x7f));
    assert_eq!(lo & 1, 1, "context entry present");
    (lo & FRAME, 1 << (((lo >> 9) & 7) + 7))
}

#[test]
fn device_and_pasid_entries_land_where_the_spec_says() {
    let (hal, mut t, mut rec) = setup(false);
    let sid = 0x0210; // 02:02.0
    t.device(&mut rec, sid, 20).unwrap();
    assert_eq!(rec.seen, [Descriptor::ContextDevice { did: 0, sid }]);
    // Bus 2's root entry: the lower context table only.
    assert_eq!(word(&hal, t.root() + 32 + 8), 0);
    let (dir, entries) = directory(&hal, &t, sid);
    assert_eq!(entries, FIRST_DIR_ENTRIES);
    // RID_PASID 0, PASIDs enabled (PASIDE), no device TLB, no page requests.
    let ctx = context_table(&hal, &t, 2, false);
    assert_eq!(word(&hal, ctx + 32 * 0x10), dir | (2 << 9) | 1 << 3 | 1);
    assert_eq!(word(&hal, ctx + 32 * 0x10 + 8), 0);
    let table0 = word(&hal, dir) & FRAME;
    assert_eq!(word(&hal, dir) & 1, 1, "first PASID table linked");
    assert_eq!(t.primary(sid), Some(Primary::Blocked));

    // RID_PASID: entry 0 of table 0.
    let e0 = first_level(5, 0x1234_5000);
    t.set_entry(&mut rec, sid, 0, Some(e0)).unwrap();
    for (i, q) in e0.encode().iter().enumerate() {
        assert_eq!(word(&hal, table0 + 8 * i as u64), *q, "qword {i}");
    }
    assert_eq!(t.entry_address(sid, 0), Some(table0));

    // PASID 65: directory entry 1, a second table, entry 1 in it.
    let e65 = PasidEntry {
        did: 6,
        translation: Translation::SecondLevel {
            root: 0x6000_0000,
            levels: 4,
        },
        page_walk_snoop: false,
    };
    t.set_entry(&mut rec, sid, 65, Some(e65)).unwrap();
    let table1 = word(&hal, dir + 8) & FRAME;
    assert_eq!(word(&hal, dir + 8) & 1, 1);
    assert_ne!(table1, table0);
    for (i, q) in e65.encode().iter().enumerate() {
        assert_eq!(word(&hal, table1 + 64 + 8 * i as u64), *q, "qword {i}");
    }
    assert_eq!(t.entry_address(sid, 65), Some(table1 + 64));
    assert_eq!(t.pasid_directory(sid), Some((512, 2)));
    assert_eq!(t.pasid_table_bytes(), 3 * PAGE);
    // A fresh entry is announced twice: after the qwords the unit ignores
    // while P is clear, and after P (see `pasid_entry_switches_are_never_torn`).
    assert_eq!(
        rec.seen[1..],
        [
            Descriptor::PasidCachePasid { did: 5, pasid: 0 },
            Descriptor::PasidCachePasid { did: 5, pasid: 0 },
            Descriptor::PasidCachePasid { did: 6, pasid: 65 },
            Descriptor::PasidCachePasid { did: 6, pasid: 65 }
        ]
    );

    // A device in the upper half of the same bus: the root entry's
    // second half, the first one unchanged.
    let lower = word(&hal, t.root() + 32);
    t.device(&mut rec, 0x0288, 20).unwrap();
    assert_eq!(word(&hal, t.root() + 32), lower);
    let upper = context_table(&hal, &t, 2, true);
    assert_ne!(upper, context_table(&hal, &t, 2, false));
    assert_eq!(word(&hal, upper + 32 * 8) & 1, 1);
    // Nothing past the buses in use.
    assert_eq!(word(&hal, t.root() + 48), 0);
}

/// The driver's stores to the 64-byte entry at `at` and its invalidations,
/// from the fake HAL's log, as the entry checker's steps (one sync per
/// batch of invalidations).
fn entry_steps(log: &[MemEvent], at: u64) -> Vec<Step> {
    let mut steps = Vec::new();
    for e in log {
        match *e {
            MemEvent::Store { pa, value } if (at..at + 64).contains(&pa) => {
                steps.push(Step::Write {
                    word: ((pa - at) / 8) as usize,
                    value,
                });
            }
            MemEvent::Mark {
                what: INVALIDATION, ..
            } if steps.last() != Some(&Step::Sync) => steps.push(Step::Sync),
            _ => {}
        }
    }
    steps
}

fn entry_words(hal: &FakeHal, at: u64) -> [u64; 8] {
    core::array::from_fn(|i| word(hal, at + 8 * i as u64))
}

/// Every switch of a live PASID entry the driver makes (attach to a free
/// PASID, replace the domain, between first level, second level,
/// pass-through and the blocked entry, and clear), recorded store by
/// store and invalidation by invalidation: no state the unit could fetch
/// between two invalidations mixes the old entry and the new.
#[test]
fn pasid_entry_switches_are_never_torn() {
    let second = |did, root| PasidEntry {
        did,
        translation: Translation::SecondLevel { root, levels: 4 },
        page_walk_snoop: false,
    };
    let states = [
        None,
        Some(first_level(5, 0x4000_0000)),
        Some(first_level(7, 0x5000_0000)),
        Some(second(9, 0x6000_0000)),
        Some(PasidEntry {
            did: 1,
            translation: Translation::PassThrough { levels: 4 },
            page_walk_snoop: false,
        }),
        // The blocked entry: present, over an empty table.
        Some(first_level(2, 0x7000_0000)),
    ];
    let (hal, mut t, mut rec) = setup(false);
    let sid = 0x0008;
    t.device(&mut rec, sid, 20).unwrap();
    for (i, from) in states.iter().enumerate() {
        for (j, to) in states.iter().enumerate() {
            if i == j {
                continue;
            }
            t.set_entry(&mut rec, sid, 3, *from).unwrap();
            let at = t.entry_address(sid, 3).unwrap();
            let old = entry_words(&hal, at);
            hal.take_log();
            rec.seen.clear();
            t.set_entry(&mut rec, sid, 3, *to).unwrap();
            let log = hal.take_log();
            let new = entry_words(&hal, at);
            assert_eq!(new, to.map_or([0; 8], |e| e.encode()), "{i} -> {j}");
            if let Err(e) = check::<PasidEntry, 8>(&old, &new, &entry_steps(&log, at)) {
                panic!("{i} -> {j}: {e:x?}");
            }
            // A present entry's cached translations go with it.
            if let Some(f) = from {
                assert!(
                    rec.seen.contains(&Descriptor::PasidIotlbAll {
                        did: f.did,
                        pasid: 3
                    }),
                    "{i} -> {j}: no IOTLB flush of DID {}",
                    f.did
                );
            }
        }
    }
}

/// The order the driver used before it had the entry writer (clear P,
/// invalidate, qwords 1-7, qword 0, invalidate): the recorder catches it
/// letting a fetch combine the new qword 0 with the old DID.
#[test]
fn a_torn_pasid_entry_update_is_caught() {
    let old = first_level(5, 0x4000_0000).encode();
    let new = first_level(7, 0x5000_0000).encode();
    let mut steps = vec![Step::Write { word: 0, value: 0 }, Step::Sync];
    // Qwords 1-7, then qword 0.
    for i in [1, 2, 3, 4, 5, 6, 7, 0] {
        if old[i] != new[i] || i == 0 {
            steps.push(Step::Write {
                word: i,
                value: new[i],
            });
        }
    }
    steps.push(Step::Sync);
    assert!(matches!(
        check::<PasidEntry, 8>(&old, &new, &steps),
        Err(Torn::Mixed { .. })
    ));
}

/// A fresh entry: nothing is flushed but the new PASID's cache entry,
/// and the present bit comes last.
#[test]
fn a_new_entry_sets_present_last() {
    let (hal, mut t, mut rec) = setup(false);
    let sid = 0x0008;
    t.device(&mut rec, sid, 20).unwrap();
    let at = t.entry_address(sid, 3).unwrap();
    hal.take_log();
    rec.seen.clear();
    let e = first_level(5, 0x4000_0000);
    t.set_entry(&mut rec, sid, 3, Some(e)).unwrap();
    let steps = entry_steps(&hal.take_log(), at);
    assert_eq!(
        steps[steps.len() - 2..],
        [
            Step::Write {
                word: 0,
                value: e.encode()[0]
            },
            Step::Sync
        ]
    );
    assert!(rec
        .seen
        .iter()
        .all(|d| *d == Descriptor::PasidCachePasid { did: 5, pasid: 3 }));
    // Cleared, then cleared again: the second invalidates nothing, and a
    // PASID whose table was never needed allocates none.
    t.set_entry(&mut rec, sid, 3, None).unwrap();
    for i in 0..8 {
        assert_eq!(word(&hal, at + 8 * i), 0);
    }
    hal.take_log();
    let live = hal.live_regions();
    t.set_entry(&mut rec, sid, 3, None).unwrap();
    t.set_entry(&mut rec, sid, 0x4000, None).unwrap();
    assert!(!hal
        .take_log()
        .iter()
        .any(|e| matches!(e, MemEvent::Mark { .. })));
    assert_eq!(hal.live_regions(), live);
}

#[test]
fn second_level_flushes_the_whole_did_too() {
    let (_hal, mut t, mut rec) = setup(true);
    t.device(&mut rec, 0x10, 20).unwrap();
    t.set_entry(&mut rec, 0x10, 1, Some(first_level(9, 0x1000)))
        .unwrap();
    rec.seen.clear();
    t.set_entry(&mut rec, 0x10, 1, None).unwrap();
    assert_eq!(rec.seen, pasid_flush(9, 1, true));
    assert_eq!(rec.seen.last(), Some(&Descriptor::IotlbDomain { did: 9 }));
}

#[test]
fn the_pasid_directory_grows_to_the_device_width() {
    let (hal, mut t, mut rec) = setup(false);
    let sid = 0x0100;
    t.device(&mut rec, sid, 20).unwrap();
    t.set_entry(&mut rec, sid, 1, Some(first_level(4, 0x1000)))
        .unwrap();
    let (old_dir, _) = directory(&hal, &t, sid);
    let table0 = word(&hal, old_dir) & FRAME;
    rec.seen.clear();

    let top = 0xffff0;
    t.set_entry(&mut rec, sid, top, Some(first_level(5, 0x2000)))
        .unwrap();
    // 2^20 PASIDs / 64 per table: 2^14 directory entries (PDTS 7).
    let (dir, entries) = directory(&hal, &t, sid);
    assert_eq!(entries, 1 << 14);
    assert_eq!(t.pasid_directory(sid), Some((1 << 14, 2)));
    assert_ne!(dir, old_dir);
    assert_eq!(hal.peek(old_dir), None, "the old directory is freed");
    // Old tables carried over, the new one linked at 0xffff0 / 64.
    assert_eq!(word(&hal, dir), table0 | 1);
    let high = word(&hal, dir + 8 * 0x3fff);
    assert_eq!(high & 1, 1);
    assert_eq!(
        t.entry_address(sid, top),
        Some((high & FRAME) + 64 * (top as u64 & 0x3f))
    );
    assert_eq!(t.pasid_table_bytes(), 8 * (1 << 14) + 2 * PAGE);
    // The context cache forgets the old directory, the PASID cache what
    // it held under the present DIDs; then the new entry is announced.
    assert_eq!(
        rec.seen,
        [
            Descriptor::ContextDevice { did: 0, sid },
            Descriptor::PasidCacheDomain { did: 4 },
            Descriptor::PasidCachePasid { did: 5, pasid: top },
            Descriptor::PasidCachePasid { did: 5, pasid: top },
        ]
    );

    // Past the unit's 20 bits.
    assert_eq!(
        t.set_entry(&mut rec, sid, 1 << 20, Some(first_level(5, 0x2000))),
        Err(VtdError::PasidTooWide {
            pasid: 1 << 20,
            bits: 20
        })
    );
}

/// Growing the PASID directory switches the live context entry to the new
/// directory (pointer and size in qword 0) in one store, then invalidates:
/// no fetch of the context entry sees a mix.
#[test]
fn directory_growth_switches_the_context_entry_whole() {
    let (hal, mut t, mut rec) = setup(false);
    let sid = 0x0100;
    t.device(&mut rec, sid, 20).unwrap();
    t.set_entry(&mut rec, sid, 1, Some(first_level(4, 0x1000)))
        .unwrap();
    let [bus, devfn] = sid.to_be_bytes();
    let at = context_table(&hal, &t, bus, devfn >= 128) + 32 * u64::from(devfn & 0x7f);
    let words =
        |hal: &FakeHal| -> [u64; 4] { core::array::from_fn(|i| word(hal, at + 8 * i as u64)) };
    let old = words(&hal);
    hal.take_log();
    t.set_entry(&mut rec, sid, 0xffff0, Some(first_level(5, 0x2000)))
        .unwrap();
    let log = hal.take_log();
    let new = words(&hal);
    assert_ne!(old[0], new[0], "the directory moved");
    let mut steps = Vec::new();
    for e in &log {
        match *e {
            MemEvent::Store { pa, value } if (at..at + 32).contains(&pa) => {
                steps.push(Step::Write {
                    word: ((pa - at) / 8) as usize,
                    value,
                });
            }
            // The first invalidation after the context store ends its window.
            MemEvent::Mark { .. } if matches!(steps.last(), Some(Step::Write { .. })) => {
                steps.push(Step::Sync)
            }
            _ => {}
        }
    }
    assert_eq!(steps.len(), 2, "one store, one invalidation: {steps:x?}");
    check::<ContextEntry, 4>(&old, &new, &steps).unwrap();
}

#[test]
fn a_narrow_device_directory_grows_to_the_pasid() {
    // Devices set up for pass-through have width 0; the directory still
    // grows as far as a PASID needs.
    let (hal, mut t, mut rec) = setup(false);
    t.device(&mut rec, 0x20, 0).unwrap();
    t.set_entry(&mut rec, 0x20, 0x9000, Some(first_level(4, 0x1000)))
        .unwrap();
    let (_, entries) = directory(&hal, &t, 0x20);
    assert_eq!(entries, 1024);
    assert_eq!(t.pasid_directory(0x20), Some((1024, 2)));
}

#[test]
fn poke_writes_only_inside_pasid_tables() {
    let (hal, mut t, mut rec) = setup(false);
    t.device(&mut rec, 0x18, 20).unwrap();
    let at = t.entry_address(0x18, 2).unwrap();
    hal.take_log();
    t.poke(at, &[7, 8]).unwrap();
    assert_eq!(
        hal.take_log(),
        [
            MemEvent::Store { pa: at, value: 7 },
            MemEvent::Store {
                pa: at + 8,
                value: 8
            },
            MemEvent::Barrier
        ]
    );
    let (dir, _) = directory(&hal, &t, 0x18);
    assert_eq!(t.poke(dir, &[1]), Err(VtdError::NotOurs { pa: dir }));
    assert_eq!(
        t.poke(t.root(), &[1]),
        Err(VtdError::NotOurs { pa: t.root() })
    );
    assert!(rec.seen.len() == 1, "no invalidation");
}

#[test]
fn unknown_devices_are_refused() {
    let (_hal, mut t, mut rec) = setup(false);
    assert_eq!(
        t.set_entry(&mut rec, 0x99, 1, Some(first_level(4, 0x1000))),
        Err(VtdError::NotManaged { sid: 0x99 })
    );
    assert_eq!(
        t.set_primary_kind(0x99, Primary::Identity),
        Err(VtdError::NotManaged { sid: 0x99 })
    );
    assert_eq!(t.release(&mut rec, 0x99), Ok(()));
    assert!(rec.seen.is_empty());
}

#[test]
fn teardown_frees_every_region() {
    let hal = FakeHal::new();
    {
        let mut t = Tables::new(hal.clone(), Coherency::Coherent, false, 20).unwrap();
        let queue = Queue::new(&hal, Coherency::Coherent).unwrap();
        let mut pages = HalTables::new(hal.clone(), Coherency::Coherent);
        let mut rec = Recorder {
            hal: hal.clone(),
            seen: Vec::new(),
            fail: false,
        };
        for sid in [0x0008, 0x0110, 0x0188] {
            t.device(&mut rec, sid, 20).unwrap();
            t.set_entry(&mut rec, sid, 0, Some(first_level(3, 0x1000)))
                .unwrap();
            t.set_entry(&mut rec, sid, 100, Some(first_level(4, 0x2000)))
                .unwrap();
        }
        t.set_entry(&mut rec, 0x0110, 0xfffff, Some(first_level(5, 0x3000)))
            .unwrap();
        assert!(pages.alloc().is_some());
        let held = hal.live_regions();
        assert!(held > 10, "{held} regions");

        let (dir, _) = directory(&hal, &t, 0x0110);
        rec.seen.clear();
        t.release(&mut rec, 0x0110).unwrap();
        assert_eq!(
            rec.seen,
            [
                Descriptor::ContextDevice {
                    did: 0,
                    sid: 0x0110
                },
                Descriptor::PasidCachePasid { did: 3, pasid: 0 },
                Descriptor::PasidIotlbAll { did: 3, pasid: 0 },
                Descriptor::PasidCachePasid { did: 4, pasid: 100 },
                Descriptor::PasidIotlbAll { did: 4, pasid: 100 },
                Descriptor::PasidCachePasid {
                    did: 5,
                    pasid: 0xfffff
                },
                Descriptor::PasidIotlbAll {
                    did: 5,
                    pasid: 0xfffff
                },
                Descriptor::IotlbGlobal,
            ]
        );
        // Context entry not present, its directory and 3 tables gone.
        let ctx = context_table(&hal, &t, 1, false);
        assert_eq!(word(&hal, ctx + 32 * 0x10) & 1, 0);
        assert_eq!(hal.peek(dir), None);
        assert_eq!(hal.live_regions(), held - 4);
        assert_eq!(t.pasid_directory(0x0110), None);
        t.release(&mut rec, 0x0008).unwrap();
        drop((t, queue, pages));
    }
    assert_eq!(hal.live_regions(), 0);
}

#[test]
fn what_the_unit_may_still_read_is_kept_when_invalidation_fails() {
    let (hal, mut t, mut rec) = setup(false);
    t.device(&mut rec, 0x30, 20).unwrap();
    let live = hal.live_regions();
    let (dir, _) = directory(&hal, &t, 0x30);
    rec.fail = true;
    assert!(matches!(
        t.release(&mut rec, 0x30),
        Err(VtdError::InvalidationTimeout { .. })
    ));
    assert_eq!(hal.live_regions(), live);
    assert!(hal.peek(dir).is_some());
}

#[test]
fn allocation_failures_leak_nothing() {
    let (hal, mut t, mut rec) = setup(false);
    let live = hal.live_regions();
    // The directory, then no table for it.
    hal.fail_after.set(Some(1));
    assert_eq!(
        t.device(&mut rec, 0x40, 20),
        Err(VtdError::Memory(HalError::NoMemory { bytes: PAGE }))
    );
    assert_eq!(hal.live_regions(), live);
    assert!(!t.contains(0x40));
    hal.fail_after.set(None);
    t.device(&mut rec, 0x40, 20).unwrap();
}

#[test]
fn the_queue_holds_descriptors_and_a_wait() {
    let hal = FakeHal::new();
    let mut q = Queue::<FakeHal>::new(&hal, Coherency::Coherent).unwrap();
    let ring = q.base();
    let batch = [
        Descriptor::ContextGlobal.encode(),
        Descriptor::IotlbGlobal.encode(),
    ];
    let seq = q.stage(&batch, false).unwrap();
    assert_eq!((seq, q.tail(), q.descriptors(), q.waits()), (1, 3, 3, 1));
    for (i, d) in batch.iter().enumerate() {
        for (j, w) in d.iter().enumerate() {
            assert_eq!(word(&hal, ring + 32 * i as u64 + 8 * j as u64), *w);
        }
    }
    // The wait writes `seq` to the status page.
    let w0 = word(&hal, ring + 64);
    let status = word(&hal, ring + 72);
    assert_eq!(
        [w0, status],
        Descriptor::Wait {
            addr: status,
            data: 1
        }
        .encode()[..2]
    );
    assert_eq!(word(&hal, status), 0);
    assert!(!q.done(seq).unwrap());
    q.complete(seq);
    assert!(q.done(seq).unwrap());

    // A refused descriptor is read back and replaced by a wait that
    // writes next to the status.
    let r = q.replace_refused(1).unwrap();
    assert_eq!(
        r,
        Refused {
            index: 1,
            descriptor: batch[1]
        }
    );
    assert_eq!(
        [word(&hal, ring + 32), word(&hal, ring + 40)],
        Descriptor::Wait {
            addr: status + 64,
            data: 0
        }
        .encode()[..2]
    );

    // The ring wraps; a batch that does not fit is refused.
    let many = vec![Descriptor::IotlbGlobal.encode(); 126];
    assert_eq!(q.stage(&many, false).unwrap(), 2);
    assert_eq!(q.tail(), (3 + 127) % IQ_ENTRIES);
    assert_eq!(
        q.stage(&[[0; 4]; 127], false),
        Err(VtdError::QueueTooSmall {
            descriptors: 127,
            room: 126
        })
    );
    drop(q);
    assert_eq!(hal.live_regions(), 0);
}

#[test]
fn unmap_batches_invalidate_pages_or_everything() {
    assert_eq!(
        page_chunks(0x1000, 0x3000, 32, 18),
        Some(vec![(0x1000, 0), (0x2000, 1)])
    );
    assert_eq!(
        page_chunks(0x1000, 0x3000, 32, 0),
        Some(vec![(0x1000, 0), (0x2000, 0), (0x3000, 0)])
    );
    assert_eq!(
        page_chunks(0x20_0000, 0x20_0000, 32, 9),
        Some(vec![(0x20_0000, 9)])
    );
    assert_eq!(page_chunks(0x1000, 0x3000, 1, 18), None);

    let attached = [
        (DeviceId(1), None),
        (DeviceId(2), Some(Pasid(5))),
        (DeviceId(1), Some(Pasid(5))),
    ];
    let ranges = [(0x4000_0000, 0x1000)];
    // First level: PASID-based, per PASID the domain is reached through.
    assert_eq!(
        unmap_descriptors(false, 18, 3, &attached, &ranges),
        [
            Descriptor::PasidIotlbPages {
                did: 3,
                pasid: 0,
                addr: 0x4000_0000,
                am: 0
            },
            Descriptor::PasidIotlbPages {
                did: 3,
                pasid: 5,
                addr: 0x4000_0000,
                am: 0
            },
        ]
    );
    // Second level: by DID, once.
    assert_eq!(
        unmap_descriptors(true, 18, 3, &attached, &ranges),
        [Descriptor::IotlbPages {
            did: 3,
            addr: 0x4000_0000,
            am: 0
        }]
    );
    // Too many pages for page-selective invalidation, or no ranges.
    let wide = [(0, 40 * PAGE)];
    assert_eq!(
        unmap_descriptors(false, 0, 3, &attached[..1], &wide),
        [Descriptor::PasidIotlbAll { did: 3, pasid: 0 }]
    );
    assert_eq!(
        unmap_descriptors(true, 0, 3, &attached, &wide),
        [Descriptor::IotlbDomain { did: 3 }]
    );
    assert_eq!(
        unmap_descriptors(true, 18, 3, &attached, &[]),
        [Descriptor::IotlbDomain { did: 3 }]
    );
    assert_eq!(
        unmap_descriptors(false, 18, 3, &attached[1..2], &[]),
        [Descriptor::PasidIotlbAll { did: 3, pasid: 5 }]
    );
}

#[test]
fn fault_records_become_the_cores_faults() {
    let record = |reason, pasid, read| FaultRecord {
        valid: true,
        source_id: 0x10,
        pasid,
        addr: 0x4000_0000,
        reason,
        read,
        exec: false,
        privileged: false,
    };
    assert_eq!(normalise(record(5, Some(0), false)).pasid, None);
    assert_eq!(normalise(record(5, Some(3), false)).pasid, Some(3));
    let reason = |r: FaultRecord, p| to_fault(&r, p).map(|f| f.reason);
    assert_eq!(
        reason(record(0x59, None, false), None),
        Some(FaultReason::Blocked)
    );
    assert_eq!(
        reason(record(0x5b, Some(2), false), None),
        Some(FaultReason::NoPasid)
    );
    assert_eq!(
        reason(record(0x71, None, false), Some(Primary::Paging)),
        Some(FaultReason::NotMapped)
    );
    // The blocked primary's empty table: blocked, for untagged requests.
    assert_eq!(
        reason(record(0x05, None, false), Some(Primary::Blocked)),
        Some(FaultReason::Blocked)
    );
    assert_eq!(
        reason(record(0x05, Some(1), false), Some(Primary::Blocked)),
        Some(FaultReason::NotMapped)
    );
    assert_eq!(
        reason(record(0x85, Some(1), false), None),
        Some(FaultReason::Permission)
    );
    assert_eq!(reason(record(0x30, None, false), None), None);
    let f = to_fault(&record(0x06, Some(1), true), None).unwrap();
    assert_eq!(
        (f.dev, f.pasid, f.iova, f.write),
        (DeviceId(0x10), Some(Pasid(1)), Iova(0x4000_0000), false)
    );
}

#[test]
fn errors_say_what_went_wrong() {
    let missing = Missing {
        scalable_mode: true,
        queued_invalidation: true,
        ..Missing::default()
    };
    assert_eq!(
        format!(
            "{}",
            VtdError::Unsupported {
                base: 0xfed9_0000,
                missing
            }
        ),
        "VT-d at 0xfed90000 cannot be driven: no scalable mode, no queued invalidation"
    );
    assert_eq!(
        format!(
            "{}",
            VtdError::Refused {
                index: 72,
                descriptor: [0xf, 0, 0, 0]
            }
        ),
        "VT-d refused descriptor 72 [f, 0, 0, 0] (IQE)"
    );
    assert_eq!(
        format!("{}", VtdError::NotManaged { sid: 0x0210 }),
        "source id 0x210 (02:02.0) has no context entry of this driver"
    );
    assert_eq!(
        format!("{}", VtdError::Memory(HalError::NoMemory { bytes: 4096 })),
        "VT-d memory: no memory for 4096 bytes"
    );
    assert_eq!(
        format!("{}", VtdError::OutOfDomainIds { domains: 256 }),
        "out of domain ids (256)"
    );
}

/// A fault record is read F first, the rest after, and cleared last; an
/// empty register is left alone (issue 13, point 15).
#[test]
fn fault_records_are_read_f_first_then_cleared() {
    use super::faults::{take_record, RecordRegs};
    use core::cell::RefCell;
    struct Reg {
        hi: u64,
        lo: u64,
        ops: RefCell<Vec<&'static str>>,
    }
    impl RecordRegs for Reg {
        fn read_hi(&self) -> u64 {
            self.ops.borrow_mut().push("hi");
            self.hi
        }
        fn read_lo(&self) -> u64 {
            self.ops.borrow_mut().push("lo");
            self.lo
        }
        fn clear(&self) {
            self.ops.borrow_mut().push("clear");
        }
    }
    let full = Reg {
        hi: (1 << 63) | (0x71 << 32) | 0x0010,
        lo: 0x4000_0000,
        ops: RefCell::new(Vec::new()),
    };
    let r = take_record(&full).unwrap();
    assert_eq!((r.source_id, r.reason, r.addr), (0x10, 0x71, 0x4000_0000));
    assert_eq!(*full.ops.borrow(), ["hi", "lo", "clear"]);
    let empty = Reg {
        hi: 0x71 << 32,
        lo: 0,
        ops: RefCell::new(Vec::new()),
    };
    assert_eq!(take_record(&empty), None);
    assert_eq!(*empty.ops.borrow(), ["hi"]);
}

/// Page tables are coherent by ECAP.SMPWC with PWSNP set, the other
/// structures by ECAP.C, as Linux decides in scalable mode: a unit that
/// snoops its structures but not its page walks still gets its page
/// tables flushed (QEMU's q35 unit has neither) (issue 13, point 12).
#[test]
fn page_walk_snooping_follows_smpwc() {
    use super::walk_coherency;
    use crate::caps::Ecaps;
    let base = 1 << 43; // scalable mode
    let c = |e| walk_coherency(&Ecaps::decode(e));
    assert_eq!(c(base), (Coherency::NonCoherent, Coherency::NonCoherent));
    assert_eq!(c(base | 1), (Coherency::Coherent, Coherency::NonCoherent));
    assert_eq!(
        c(base | 1 << 48),
        (Coherency::NonCoherent, Coherency::Coherent)
    );
    let e = PasidEntry {
        did: 3,
        translation: Translation::SecondLevel {
            root: 0x6000_0000,
            levels: 4,
        },
        page_walk_snoop: true,
    }
    .encode();
    assert_eq!(e[1], 3 | 1 << 23, "PWSNP is bit 87");
}

/// Pass-through entries take their address width from SAGAW: 48 bits
/// where the unit supports 4-level tables, else 39 (issue 13, point 16).
#[test]
fn pass_through_width_follows_sagaw() {
    use super::table_levels;
    assert_eq!(table_levels(0b0110, 48), 4);
    assert_eq!(table_levels(0b0100, 48), 4);
    assert_eq!(table_levels(0b0010, 48), 3);
}

/// A remapping unit that answers: GSTS follows GCMD (persistent bits
/// mirrored, SRTP completing at once, WBF done at once), and, with
/// `completes`, the queue runs to IQT when it is written (invalidation
/// waits write their status). What the driver wrote is in `events`.
mod fake_unit {
    use super::super::UnitRegs;
    use crate::regs::{
        FaultRecordRegs, FECTL, FSTS, GCMD, GSTS, IQA, IQH, IQT, PECTL, PQA, PQH, PQT, PRS, RTADDR,
    };
    use alloc::rc::Rc;
    use alloc::vec::Vec;
    use core::cell::{Cell, RefCell};
    use kernel::hal::fake::FakeHal;
    use tock_registers::fields::FieldValue;
    use tock_registers::LocalRegisterCopy;

    /// More register reads than this in one test: a wait without a bound.
    const POLL_GUARD: u64 = 20_000_000;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Event {
        Gcmd(u32),
        /// A descriptor the unit ran, as queued.
        Ran([u64; 4]),
        /// Page request registers: writes (PRS: the bits written, which
        /// clear), and PQT read.
        Pqh(u64),
        Pqa(u64),
        Prs(u32),
        Pectl(u32),
        PqtRead,
    }

    #[derive(Default)]
    pub struct State {
        pub cap: u64,
        pub ecap: u64,
        pub gsts: Cell<u32>,
        pub completes: bool,
        pub iqa: Cell<u64>,
        pub iqt: Cell<u64>,
        pub iqh: Cell<u64>,
        pub reads: Cell<u64>,
        pub events: RefCell<Vec<Event>>,
        /// The page request queue's registers (the test plays the unit
        /// writing requests: it sets PQT and PRS).
        pub pqh: Cell<u64>,
        pub pqt: Cell<u64>,
        pub prs: Cell<u32>,
    }

    #[derive(Clone)]
    pub struct FakeUnit {
        pub state: Rc<State>,
        pub hal: FakeHal,
    }

    impl FakeUnit {
        fn read(&self) {
            let n = self.state.reads.get() + 1;
            self.state.reads.set(n);
            assert!(n < POLL_GUARD, "the driver polls without a bound");
        }

        /// The queue runs from IQH to IQT.
        fn run_queue(&self) {
            let s = &self.state;
            let base = s.iqa.get() & !0xfff;
            let (mut head, tail) = (s.iqh.get() >> 5, s.iqt.get() >> 5);
            while head != tail {
                let at = base + 32 * head;
                let d: [u64; 4] =
                    core::array::from_fn(|i| self.hal.peek(at + 8 * i as u64).unwrap());
                s.events.borrow_mut().push(Event::Ran(d));
                // An invalidation wait with a status write.
                if d[0] & 0xf == 5 && d[0] & (1 << 5) != 0 {
                    self.hal.poke(d[1], d[0] >> 32).unwrap();
                }
                head = (head + 1) % 128;
            }
            s.iqh.set(head << 5);
        }
    }

    impl UnitRegs for FakeUnit {
        fn cap(&self) -> u64 {
            self.state.cap
        }
        fn ecap(&self) -> u64 {
            self.state.ecap
        }
        fn gsts(&self) -> LocalRegisterCopy<u32, GSTS::Register> {
            self.read();
            LocalRegisterCopy::new(self.state.gsts.get())
        }
        fn write_gcmd(&self, cmd: LocalRegisterCopy<u32, GCMD::Register>) {
            let s = &self.state;
            s.events.borrow_mut().push(Event::Gcmd(cmd.get()));
            let mirrored =
                GCMD::TE::SET + GCMD::EAFL::SET + GCMD::QIE::SET + GCMD::IRE::SET + GCMD::CFI::SET;
            let mut gsts = cmd.get() & mirrored.value;
            if cmd.is_set(GCMD::SRTP) || s.gsts.get() & GSTS::RTPS::SET.value != 0 {
                gsts |= GSTS::RTPS::SET.value;
            }
            if cmd.is_set(GCMD::QIE) && s.gsts.get() & GSTS::QIES::SET.value == 0 {
                s.iqh.set(0);
            }
            s.gsts.set(gsts);
        }
        fn write_rtaddr(&self, _v: FieldValue<u64, RTADDR::Register>) {}
        fn write_iqa(&self, v: FieldValue<u64, IQA::Register>) {
            assert_eq!(
                self.state.gsts.get() & GSTS::QIES::SET.value,
                0,
                "IQA written with QI on"
            );
            self.state.iqa.set(v.value);
        }
        fn write_iqt(&self, v: FieldValue<u64, IQT::Register>) {
            self.state.iqt.set(v.value);
            if self.state.completes && self.state.gsts.get() & GSTS::QIES::SET.value != 0 {
                self.run_queue();
            }
        }
        fn iqt(&self) -> LocalRegisterCopy<u64, IQT::Register> {
            LocalRegisterCopy::new(self.state.iqt.get())
        }
        fn iqh(&self) -> LocalRegisterCopy<u64, IQH::Register> {
            self.read();
            LocalRegisterCopy::new(self.state.iqh.get())
        }
        fn fsts(&self) -> LocalRegisterCopy<u32, FSTS::Register> {
            self.read();
            LocalRegisterCopy::new(0)
        }
        fn write_fsts(&self, _v: FieldValue<u32, FSTS::Register>) {}
        fn set_fault_event(&self, _data: u32, _addr: u32, _upper: u32) {}
        fn write_fectl(&self, _v: FieldValue<u32, FECTL::Register>) {}
        fn fault_records(&self) -> &[FaultRecordRegs] {
            &[]
        }
        fn pqh(&self) -> LocalRegisterCopy<u64, PQH::Register> {
            self.read();
            LocalRegisterCopy::new(self.state.pqh.get())
        }
        fn write_pqh(&self, v: FieldValue<u64, PQH::Register>) {
            self.state.events.borrow_mut().push(Event::Pqh(v.value));
            self.state.pqh.set(v.value);
        }
        fn pqt(&self) -> LocalRegisterCopy<u64, PQT::Register> {
            self.read();
            self.state.events.borrow_mut().push(Event::PqtRead);
            LocalRegisterCopy::new(self.state.pqt.get())
        }
        fn write_pqa(&self, v: FieldValue<u64, PQA::Register>) {
            self.state.events.borrow_mut().push(Event::Pqa(v.value));
        }
        fn prs(&self) -> LocalRegisterCopy<u32, PRS::Register> {
            self.read();
            LocalRegisterCopy::new(self.state.prs.get())
        }
        fn write_prs(&self, v: FieldValue<u32, PRS::Register>) {
            self.state.events.borrow_mut().push(Event::Prs(v.value));
            self.state.prs.set(self.state.prs.get() & !v.value);
        }
        fn set_page_request_event(&self, _data: u32, _addr: u32, _upper: u32) {}
        fn write_pectl(&self, v: FieldValue<u32, PECTL::Register>) {
            self.state.events.borrow_mut().push(Event::Pectl(v.value));
        }
    }
}

use super::VtdHw;
use fake_unit::{Event, FakeUnit, State};

/// CAP of a unit like QEMU's: 256 domains, 48-bit 4-level second level,
/// one fault record, page-selective invalidation up to 2^18 pages.
const CAP: u64 = 2 | (0b0100 << 8) | (47 << 16) | (0x22 << 24) | (1 << 39) | (18 << 48);
const CAP_RWBF: u64 = 1 << 4;
const CAP_CM: u64 = 1 << 7;
/// ECAP: QI, pass-through, 20 PASID bits, PASID, scalable mode, second
/// level only.
const ECAP: u64 = 2 | (1 << 6) | (19 << 35) | (1 << 40) | (1 << 43) | (1 << 46);

fn fake_unit(cap: u64, gsts: u32, completes: bool) -> (FakeHal, FakeUnit) {
    let hal = FakeHal::new();
    let state = State {
        cap,
        ecap: ECAP,
        completes,
        ..State::default()
    };
    state.gsts.set(gsts);
    let unit = FakeUnit {
        state: alloc::rc::Rc::new(state),
        hal: hal.clone(),
    };
    (hal, unit)
}

fn gcmd_writes(unit: &FakeUnit) -> Vec<u32> {
    unit.state
        .events
        .borrow()
        .iter()
        .filter_map(|e| match *e {
            Event::Gcmd(v) => Some(v),
            _ => None,
        })
        .collect()
}

fn ran(unit: &FakeUnit) -> Vec<[u64; 4]> {
    unit.state
        .events
        .borrow()
        .iter()
        .filter_map(|e| match *e {
            Event::Ran(d) => Some(d),
            _ => None,
        })
        .collect()
}

/// Firmware left interrupt remapping (IRE, compatibility format CFI) and
/// its own invalidation queue on: every GCMD the driver writes keeps IRE
/// and CFI, the firmware's queue is turned off before IQA is written, and
/// the one-shot SRTP goes out once, never repeated by later commands
/// (issue 13, point 14).
#[test]
fn firmware_enabled_bits_survive_the_drivers_commands() {
    use crate::regs::{GCMD, GSTS};
    let ire_cfi = GCMD::IRE::SET.value | GCMD::CFI::SET.value;
    let fw = GSTS::IRES::SET.value
        | GSTS::CFIS::SET.value
        | GSTS::QIES::SET.value
        | GSTS::RTPS::SET.value;
    let (hal, unit) = fake_unit(CAP, fw, true);
    let mut hw = VtdHw::new(hal, unit.clone(), 0xfed9_0000).unwrap();
    hw.enable().unwrap();
    hw.disable().unwrap();
    drop(hw);
    let writes = gcmd_writes(&unit);
    for w in &writes {
        assert_eq!(
            w & ire_cfi,
            ire_cfi,
            "GCMD {w:#x} clears what firmware enabled"
        );
    }
    let srtp = writes.iter().filter(|&&w| w & GCMD::SRTP::SET.value != 0);
    assert_eq!(srtp.count(), 1, "{writes:x?}");
    assert_eq!(
        writes[0] & GCMD::QIE::SET.value,
        0,
        "firmware's queue off first"
    );
    assert_ne!(unit.state.gsts.get() & GSTS::IRES::SET.value, 0);
}

/// After the root table pointer is set, the caches it leaves stale are
/// invalidated globally, context cache, PASID cache, IOTLB, in that order
/// (Linux's `iommu_set_root_entry`), before anything else runs (issue 13,
/// point 14).
#[test]
fn the_root_table_pointer_is_followed_by_global_invalidations() {
    use crate::regs::GCMD;
    let (hal, unit) = fake_unit(CAP, 0, true);
    let hw = VtdHw::new(hal, unit.clone(), 0xfed9_0000).unwrap();
    let events = unit.state.events.borrow().clone();
    let srtp = events
        .iter()
        .position(|e| matches!(e, Event::Gcmd(v) if v & GCMD::SRTP::SET.value != 0))
        .expect("SRTP written");
    let after: Vec<u64> = events[srtp..]
        .iter()
        .filter_map(|e| match e {
            Event::Ran(d) => Some(d[0]),
            _ => None,
        })
        .take(4)
        .collect();
    let want: Vec<u64> = [
        Descriptor::ContextGlobal,
        Descriptor::PasidCacheAll,
        Descriptor::IotlbGlobal,
    ]
    .iter()
    .map(|d| d.encode()[0])
    .collect();
    assert_eq!(after[..3], want[..]);
    assert_eq!(after[3] & 0xf, crate::qi::WAIT, "then the wait");
    assert!(
        events[..srtp].iter().all(|e| !matches!(e, Event::Ran(_))),
        "nothing ran before SRTP"
    );
    drop(hw);
}

/// A queue that never completes: the wait ends in a typed
/// InvalidationTimeout within the bound (the fake unit fails the test if
/// the driver polls on without one) (issue 13, point 16).
#[test]
fn an_invalidation_that_never_completes_times_out() {
    let (hal, unit) = fake_unit(CAP, 0, false);
    match VtdHw::new(hal, unit, 0xfed9_0000) {
        Err(VtdError::InvalidationTimeout { seq, .. }) => assert_eq!(seq, 1),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a queue that never runs completed"),
    }
}

/// Caching mode (CAP.CM): absent entries may be cached, so a map is
/// followed by a page-selective IOTLB invalidation of what it mapped; a
/// unit that asks for write-buffer flushing (CAP.RWBF) and caches no
/// absent entries gets GCMD.WBF instead; a unit with neither gets
/// nothing (issue 13, point 16).
#[test]
fn maps_invalidate_in_caching_mode_and_flush_the_write_buffer_under_rwbf() {
    use crate::regs::GCMD;
    use kernel::iommu::domain::{DomainKind, Iommu};
    use kernel::iommu::pgtable::Prot;
    let run = |cap: u64| {
        let (hal, unit) = fake_unit(cap, 0, true);
        let hw = VtdHw::new(hal, unit.clone(), 0xfed9_0000).unwrap();
        let mut iommu = Iommu::new(hw, 1, 255).unwrap();
        let d = iommu.domain_alloc(DomainKind::Unmanaged).unwrap();
        let (ran0, gcmd0) = (ran(&unit).len(), gcmd_writes(&unit).len());
        iommu
            .map(d, 0x40_0000, 0x8000_0000, 0x4000, Prot::RW)
            .unwrap();
        let ran = ran(&unit)[ran0..].to_vec();
        let gcmd = gcmd_writes(&unit)[gcmd0..].to_vec();
        (ran, gcmd)
    };
    let (ran_cm, gcmd_cm) = run(CAP | CAP_CM);
    assert_eq!(ran_cm.len(), 2, "{ran_cm:x?}");
    let did = (ran_cm[0][0] >> 16) as u16;
    assert_eq!(
        ran_cm[0],
        Descriptor::IotlbPages {
            did,
            addr: 0x40_0000,
            am: 2
        }
        .encode()
    );
    assert!(gcmd_cm.is_empty());
    let (ran_wb, gcmd_wb) = run(CAP | CAP_RWBF);
    assert!(ran_wb.is_empty(), "{ran_wb:x?}");
    assert_eq!(gcmd_wb.len(), 1);
    assert_ne!(gcmd_wb[0] & GCMD::WBF::SET.value, 0);
    let (ran_none, gcmd_none) = run(CAP);
    assert!(ran_none.is_empty() && gcmd_none.is_empty());
}

/// The checking mode over the tables: batches reach the checker as the
/// unit's queue passes them (`Qi::invalidate`: the kinds issued, then the
/// completion), less what `drop` removes (a broken driver).
struct CheckedQueue {
    hal: Checking<FakeHal>,
    drop: fn(&Descriptor) -> bool,
}

impl Invalidate for CheckedQueue {
    fn invalidate(&mut self, descs: &[Descriptor]) -> Result<(), VtdError> {
        let kept: Vec<Descriptor> = descs.iter().copied().filter(|d| !(self.drop)(d)).collect();
        super::note_issued(&self.hal, &kept);
        self.hal.note(Note::Complete);
        Ok(())
    }
}

/// A non-coherent unit's tables (allocated `coherency`) under the checker.
fn checked(
    coherency: Coherency,
    drop: fn(&Descriptor) -> bool,
) -> (Tables<Checking<FakeHal>>, CheckedQueue) {
    let hal = Checking::new(FakeHal::new(), true);
    for cache in [Cache::Config, Cache::Tlb, Cache::None] {
        hal.note(Note::Walks {
            cache,
            coherency: Coherency::NonCoherent,
        });
    }
    let t = Tables::new(hal.clone(), coherency, false, 20).unwrap();
    (t, CheckedQueue { hal, drop })
}

/// Attach, replace, aux attach and detach, a directory that grows, and a
/// release, each followed by a DMA's verification.
fn attach_replace_detach_release(
    t: &mut Tables<Checking<FakeHal>>,
    q: &mut CheckedQueue,
) -> Vec<Violation> {
    let mut found = Vec::new();
    let mut dma = |q: &CheckedQueue| found.extend(q.hal.verify().err().unwrap_or_default());
    let sid = 0x0020;
    t.device(q, sid, 20).unwrap();
    t.set_entry(q, sid, 0, Some(first_level(3, 0x7000_0000)))
        .unwrap();
    dma(q);
    t.set_entry(q, sid, 0, Some(first_level(4, 0x7100_0000)))
        .unwrap();
    dma(q);
    for pasid in [5, 40_000] {
        t.set_entry(q, sid, pasid, Some(first_level(6, 0x7200_0000)))
            .unwrap();
        dma(q);
        t.set_entry(q, sid, pasid, None).unwrap();
        dma(q);
    }
    t.release(q, sid).unwrap();
    dma(q);
    found
}

#[test]
fn checked_table_updates_verify_clean() {
    let (mut t, mut q) = checked(Coherency::NonCoherent, |_| false);
    assert_eq!(attach_replace_detach_release(&mut t, &mut q), []);
}

/// What QEMU cannot show: it re-reads PASID entries on every IOTLB miss.
/// Mutation record: `pasid_flush` without its `PasidCachePasid` fails
/// `checked_table_updates_verify_clean` the same way.
#[test]
fn checked_a_missing_pasid_cache_invalidation_is_caught() {
    let (mut t, mut q) = checked(Coherency::NonCoherent, |d| {
        matches!(
            d,
            Descriptor::PasidCachePasid { .. } | Descriptor::PasidCacheDomain { .. }
        )
    });
    let found = attach_replace_detach_release(&mut t, &mut q);
    assert!(
        found.iter().any(|v| matches!(
            v,
            Violation::NotInvalidated {
                cache: Cache::Config,
                ..
            }
        )),
        "{found:x?}"
    );
}

#[test]
fn checked_a_non_coherent_units_tables_allocated_coherent_are_caught() {
    let (mut t, mut q) = checked(Coherency::Coherent, |_| false);
    let found = attach_replace_detach_release(&mut t, &mut q);
    assert!(
        found.iter().any(|v| matches!(
            v,
            Violation::NotCleaned {
                cache: Cache::Config,
                ..
            }
        )),
        "{found:x?}"
    );
}

/// The domain ids left (what tests size their domain counts from) count
/// down to zero exactly when the unit's CAP.ND runs out.
#[test]
fn tags_left_counts_down_to_out_of_domain_ids() {
    use kernel::iommu::domain::IommuHw;
    let (hal, unit) = fake_unit(CAP, 0, true);
    let mut hw = VtdHw::new(hal, unit, 0xfed9_0000).unwrap();
    let mut left = hw.tags_left().unwrap();
    assert!((250..256).contains(&left), "{left} of 256");
    while left > 0 {
        hw.alloc_tag().unwrap();
        assert_eq!(hw.tags_left(), Some(left - 1));
        left -= 1;
    }
    assert_eq!(
        hw.alloc_tag(),
        Err(VtdError::OutOfDomainIds { domains: 256 })
    );
}

// ---- Issue 16: device TLB (ATS) and page requests ----

/// ECAP bits for ATS and page requests: DT, PRS, PDS.
const ECAP_DT: u64 = 1 << 2;
const ECAP_PRS: u64 = 1 << 29;
const ECAP_PDS: u64 = 1 << 42;
/// A first-level unit (FLTS instead of SLTS).
const ECAP_FL: u64 = (ECAP & !(1 << 46)) | (1 << 47);

/// A driver over a fake unit with `ecap` that completes its queue.
fn ats_unit(ecap: u64) -> (FakeHal, FakeUnit, VtdHw<FakeHal, FakeUnit>) {
    let hal = FakeHal::new();
    let state = State {
        cap: CAP,
        ecap,
        completes: true,
        ..State::default()
    };
    let unit = FakeUnit {
        state: alloc::rc::Rc::new(state),
        hal: hal.clone(),
    };
    let hw = VtdHw::new(hal.clone(), unit.clone(), 0xfed9_0000).unwrap();
    (hal, unit, hw)
}

const ATS: super::Ats = super::Ats {
    queue_depth: 32,
    pfsid: None,
    page_requests: false,
};

fn is_dev_tlb(d: &[u64; 4]) -> bool {
    matches!(
        d[0] & 0xf,
        crate::qi::DEVICE_TLB | crate::qi::PASID_DEVICE_TLB
    )
}

/// What ran, in batches (each up to and including its wait).
fn batches(ran: &[[u64; 4]]) -> Vec<Vec<[u64; 4]>> {
    let mut out = vec![Vec::new()];
    for d in ran {
        out.last_mut().unwrap().push(*d);
        if d[0] & 0xf == crate::qi::WAIT {
            out.push(Vec::new());
        }
    }
    out.pop();
    out
}

fn paging_domain(
    hw: &VtdHw<FakeHal, FakeUnit>,
    tag: u32,
    root: u64,
) -> kernel::iommu::domain::DomainRef {
    use kernel::iommu::domain::{DomainId, DomainKind, IommuHw};
    kernel::iommu::domain::DomainRef {
        id: DomainId(tag),
        kind: DomainKind::Unmanaged,
        root: Some(kernel::addr::PhysAddr(root)),
        format: hw.format(),
        tag,
    }
}

/// A unit without ECAP.DT refuses the device TLB, one without ECAP.PRS
/// page requests (in the context entry and the queue), each with a typed
/// error naming the capability; nothing is written (issue 16, point 2).
#[test]
fn ats_and_page_requests_are_refused_without_ecap_dt_and_prs() {
    let (_, unit, mut hw) = ats_unit(ECAP_FL);
    let ran0 = ran(&unit).len();
    let lacks = |what| VtdError::Lacks {
        base: 0xfed9_0000,
        what,
    };
    assert_eq!(
        hw.set_device_ats(DeviceId(0x10), Some(ATS)),
        Err(lacks("device TLB (ECAP.DT)"))
    );
    assert_eq!(
        hw.enable_page_requests(0),
        Err(lacks("page requests (ECAP.PRS)"))
    );
    assert_eq!(ran(&unit).len(), ran0, "nothing sent");
    let (_, _, mut dt_only) = ats_unit(ECAP_FL | ECAP_DT);
    let pri = super::Ats {
        page_requests: true,
        ..ATS
    };
    assert_eq!(
        dt_only.set_device_ats(DeviceId(0x10), Some(pri)),
        Err(lacks("page requests (ECAP.PRS)"))
    );
    assert_eq!(dt_only.device_ats(DeviceId(0x10)), None);
    dt_only.set_device_ats(DeviceId(0x20), None).unwrap();
    assert_eq!(
        dt_only.pasid_directory(0x20),
        None,
        "off on a new device: no entry made"
    );
    dt_only.set_device_ats(DeviceId(0x10), Some(ATS)).unwrap();
    assert_eq!(dt_only.device_ats(DeviceId(0x10)), Some(ATS));
    assert_eq!(
        dt_only.poll_page_requests(),
        Err(VtdError::PageRequestsOff { base: 0xfed9_0000 })
    );
    assert_eq!(
        format!("{}", lacks("device TLB (ECAP.DT)")),
        "VT-d at 0xfed90000 has no device TLB (ECAP.DT)"
    );
}

/// DTE (bit 2) and PRE (bit 4) of the context entry follow the device's
/// ATS state, in one write of qword 0, followed by the device's
/// context-cache invalidation and, with entries present, the PASID cache
/// and IOTLB of their domains; turning ATS off also empties the device
/// TLB (both types). Directory growth keeps the bits (issue 16, point 2).
#[test]
fn the_context_entry_carries_dte_and_pre_and_is_invalidated() {
    let (hal, mut t, mut rec) = setup(false);
    let sid = 0x0210;
    t.device(&mut rec, sid, 20).unwrap();
    t.set_entry(&mut rec, sid, 0, Some(first_level(5, 0x1234_5000)))
        .unwrap();
    let ctx = context_table(&hal, &t, 2, false) + 32 * 0x10;
    let before = word(&hal, ctx);
    rec.seen.clear();
    let pri = super::Ats {
        page_requests: true,
        ..ATS
    };
    t.set_ats(&mut rec, sid, Some(pri)).unwrap();
    assert_eq!(word(&hal, ctx), before | 1 << 2 | 1 << 4, "DTE and PRE");
    assert_eq!(
        rec.seen,
        [
            Descriptor::ContextDevice { did: 0, sid },
            Descriptor::PasidCacheDomain { did: 5 },
            Descriptor::IotlbDomain { did: 5 },
        ]
    );
    // A PASID past the first directory page: the new directory's context
    // entry keeps DTE and PRE.
    t.set_entry(&mut rec, sid, 40_000, Some(first_level(6, 0x2000_0000)))
        .unwrap();
    assert_eq!(
        word(&hal, ctx) & 0x1c,
        1 << 2 | 1 << 3 | 1 << 4,
        "kept through growth"
    );
    rec.seen.clear();
    t.set_ats(&mut rec, sid, Some(ATS)).unwrap();
    assert_eq!(word(&hal, ctx) & 0x1c, 1 << 2 | 1 << 3, "PRE off, DTE on");
    rec.seen.clear();
    t.set_ats(&mut rec, sid, None).unwrap();
    assert_eq!(word(&hal, ctx) & 0x1c, 1 << 3, "PASIDE alone");
    let all = crate::qi::AtsRange::All;
    assert_eq!(
        rec.seen[rec.seen.len() - 2..],
        [
            ATS.invalidation(sid, None, all),
            ATS.invalidation(sid, Some(None), all)
        ],
        "the device TLB emptied last"
    );
}

/// An unmap batch: the IOTLB (PASID-based) invalidations first, then one
/// device-TLB invalidation per attachment with ATS on, without PASID
/// (type 3) for the primary, with its PASID (type 8) for the aux one,
/// the range in the ATS size encoding, and one wait; nothing for a device
/// without ATS, and none at all when no device has it (issue 16, point 2).
#[test]
fn unmaps_invalidate_the_device_tlb_after_the_iotlb_before_the_wait() {
    use kernel::iommu::domain::IommuHw;
    use kernel::iommu::pgtable::Gather;
    let run = |ats: bool| {
        let (_, unit, mut hw) = ats_unit(ECAP_FL | ECAP_DT);
        if ats {
            hw.set_device_ats(DeviceId(0x10), Some(ATS)).unwrap();
            let qd4 = super::Ats {
                queue_depth: 4,
                ..ATS
            };
            hw.set_device_ats(DeviceId(0x18), Some(qd4)).unwrap();
        }
        let d = paging_domain(&hw, 3, 0x7000_0000);
        let attached = [
            (DeviceId(0x10), None),
            (DeviceId(0x18), Some(Pasid(5))),
            (DeviceId(0x20), None),
        ];
        let mut g = Gather::default();
        g.add_range(0x40_0000, 0x4000);
        let ran0 = ran(&unit).len();
        hw.invalidate(&d, &attached, &g).unwrap();
        ran(&unit)[ran0..].to_vec()
    };
    let with = run(true);
    let range = crate::qi::AtsRange::Pages {
        addr: 0x40_0000,
        order: 2,
    };
    let want: Vec<[u64; 4]> = [
        Descriptor::PasidIotlbPages {
            did: 3,
            pasid: 0,
            addr: 0x40_0000,
            am: 2,
        },
        Descriptor::PasidIotlbPages {
            did: 3,
            pasid: 5,
            addr: 0x40_0000,
            am: 2,
        },
        Descriptor::DeviceTlb {
            sid: 0x10,
            pfsid: None,
            queue_depth: 32,
            range,
        },
        Descriptor::PasidDeviceTlb {
            sid: 0x18,
            pfsid: None,
            queue_depth: 4,
            pasid: Some(5),
            range,
        },
    ]
    .iter()
    .map(Descriptor::encode)
    .collect();
    assert_eq!(with[..4], want[..], "{with:x?}");
    assert_eq!(with.len(), 5);
    assert_eq!(with[4][0] & 0xf, crate::qi::WAIT, "then the wait");
    let without = run(false);
    assert_eq!(without.len(), 3, "{without:x?}");
    assert!(!without.iter().any(is_dev_tlb));
}

/// Replacing the primary (RID_PASID), replacing and clearing a PASID
/// entry, and releasing the device each send the device-TLB invalidation
/// of what the old entry reached, after its IOTLB invalidation and
/// before the batch's wait; a device without ATS gets none (issue 16,
/// point 2).
#[test]
fn entry_replacement_and_clearing_invalidate_the_device_tlb() {
    use kernel::iommu::domain::IommuHw;
    let all = crate::qi::AtsRange::All;
    let dev = DeviceId(0x10);
    let run = |ats: bool| {
        let (_, unit, mut hw) = ats_unit(ECAP_FL | ECAP_DT);
        if ats {
            hw.set_device_ats(dev, Some(ATS)).unwrap();
        }
        let (d1, d2) = (
            paging_domain(&hw, 3, 0x7000_0000),
            paging_domain(&hw, 4, 0x7100_0000),
        );
        let mut step = |f: &mut dyn FnMut(&mut VtdHw<FakeHal, FakeUnit>)| {
            let ran0 = ran(&unit).len();
            f(&mut hw);
            batches(&ran(&unit)[ran0..])
        };
        let fresh = step(&mut |hw| hw.set_primary(dev, &d1).unwrap());
        let primary = step(&mut |hw| hw.set_primary(dev, &d2).unwrap());
        step(&mut |hw| hw.set_pasid(dev, Pasid(5), &d1).unwrap());
        let replace = step(&mut |hw| hw.set_pasid(dev, Pasid(5), &d2).unwrap());
        let clear = step(&mut |hw| hw.clear_pasid(dev, Pasid(5), &d2).unwrap());
        let release = step(&mut |hw| hw.release_device(dev).unwrap());
        (fresh, primary, replace, clear, release)
    };
    let (fresh, primary, replace, clear, release) = run(true);
    assert!(
        !fresh.iter().flatten().any(is_dev_tlb),
        "nothing cached yet"
    );
    // Every batch with the old entry's IOTLB invalidation has the device
    // TLB's right after it, then the wait.
    let check = |batches: &[Vec<[u64; 4]>], want: Descriptor, what: &str| {
        let with: Vec<_> = batches
            .iter()
            .filter(|b| b.iter().any(|d| d[0] & 0xf == crate::qi::PASID_IOTLB))
            .collect();
        assert!(!with.is_empty(), "{what}: no IOTLB invalidation");
        for b in with {
            let iotlb = b
                .iter()
                .rposition(|d| d[0] & 0xf == crate::qi::PASID_IOTLB)
                .unwrap();
            let dev_tlb = b.iter().position(|d| *d == want.encode());
            assert!(
                dev_tlb.is_some_and(|i| i > iotlb && i < b.len() - 1),
                "{what}: {b:x?}"
            );
        }
    };
    check(&primary, ATS.invalidation(0x10, None, all), "primary");
    check(
        &replace,
        ATS.invalidation(0x10, Some(Some(5)), all),
        "replace",
    );
    check(&clear, ATS.invalidation(0x10, Some(Some(5)), all), "clear");
    let last = release.last().unwrap();
    assert_eq!(
        last[last.len() - 3..last.len() - 1],
        [
            ATS.invalidation(0x10, None, all).encode(),
            ATS.invalidation(0x10, Some(None), all).encode()
        ],
        "release: no PASID and every PASID (G)"
    );
    let (a, b, c, d, e) = run(false);
    for batches in [a, b, c, d, e] {
        assert!(!batches.iter().flatten().any(is_dev_tlb));
    }
}

/// With the test hook set, device-TLB invalidations are left out and the
/// rest of the batch still goes (how a board test shows the stale device
/// TLB) (issue 16, point 2).
#[test]
fn suppressed_device_tlb_invalidations_are_left_out() {
    use kernel::iommu::domain::IommuHw;
    use kernel::iommu::pgtable::Gather;
    let (_, unit, mut hw) = ats_unit(ECAP_FL | ECAP_DT);
    hw.set_device_ats(DeviceId(0x10), Some(ATS)).unwrap();
    hw.suppress_dev_tlb_invalidation = true;
    let d = paging_domain(&hw, 3, 0x7000_0000);
    let mut g = Gather::default();
    g.add_range(0x1000, 0x1000);
    let ran0 = ran(&unit).len();
    hw.invalidate(&d, &[(DeviceId(0x10), None)], &g).unwrap();
    let sent = ran(&unit)[ran0..].to_vec();
    assert_eq!(sent.len(), 2, "the IOTLB's and the wait: {sent:x?}");
    assert!(!sent.iter().any(is_dev_tlb));
}

/// The page request queue at work, with the test playing the unit:
/// enabling writes PQH, PQA (base and PQS) with the event masked; a poll
/// clears PPR before it reads PQT, decodes PQH..PQT (requests with their
/// fields; a wrong type, reserved bits and a request without PASID
/// rejected with typed errors and skipped), and moves PQH to the tail
/// (issue 16, point 2).
/// A queue enabled while PQT is not 0 (an earlier queue's tail: software
/// cannot move PQT) starts empty at that tail, and a disabled unit's PQA
/// names no queue once it is freed.
#[test]
fn a_new_queue_starts_empty_at_the_tail_and_disable_lets_it_go() {
    let (_hal, unit, mut hw) = ats_unit(ECAP_FL | ECAP_DT | ECAP_PRS);
    unit.state.pqt.set(7 << 5);
    hw.enable_page_requests(0).unwrap();
    assert_eq!(unit.state.pqh.get(), 7 << 5, "head at the tail");
    let pass = hw.poll_page_requests().unwrap();
    assert!(pass.is_empty(), "nothing read from a fresh queue: {pass:?}");
    hw.disable().unwrap();
    let last_pqa = unit
        .state
        .events
        .borrow()
        .iter()
        .rev()
        .find_map(|e| match *e {
            Event::Pqa(v) => Some(v),
            _ => None,
        });
    assert_eq!(last_pqa, Some(0), "PQA cleared when the unit turns off");
}

#[test]
fn page_requests_are_taken_from_head_to_tail() {
    use crate::regs::{PECTL, PRS};
    use kernel::iommu::iopf::PageRequest;
    let (hal, unit, mut hw) = ats_unit(ECAP_FL | ECAP_DT | ECAP_PRS);
    hw.enable_page_requests(0).unwrap();
    let ev = unit.state.events.borrow().clone();
    let pqa = ev
        .iter()
        .find_map(|e| match *e {
            Event::Pqa(v) => Some(v),
            _ => None,
        })
        .expect("PQA written");
    assert_eq!(pqa & 0xfff, 0, "PQS 0: 128 entries");
    let ring = pqa & !0xfff;
    let at = |e: &Event| ev.iter().position(|x| x == e).unwrap();
    assert!(at(&Event::Pectl(PECTL::IM::SET.value)) < at(&Event::Pqa(pqa)));
    assert!(at(&Event::Pqh(0)) < at(&Event::Pqa(pqa)));
    // The unit writes five descriptors from index 126 (the ring wraps).
    let request = |rid: u64, pasid: u64, flags: u64| 1 | 1 << 8 | rid << 16 | pasid << 32 | flags;
    let descs = [
        (request(0x10, 5, 0), 0x1234_5000 | 1 | 4 | 7 << 3),
        (2 | 1 << 8, 0),
        (
            request(0x18, 0xf_ffff, 1 << 52 | 1 << 53),
            0x8000 | 2 | 0x1ff << 3,
        ),
        (1 | 0x10 << 16, 0x9000 | 1 | 4),
        (request(0x10, 5, 1 << 60), 0xa000 | 1),
    ];
    for (i, (lo, hi)) in descs.iter().enumerate() {
        let slot = ring + 32 * ((126 + i as u64) % 128);
        hal.poke(slot, *lo).unwrap();
        hal.poke(slot + 8, *hi).unwrap();
    }
    unit.state.pqh.set(126 << 5);
    unit.state.pqt.set(3 << 5);
    unit.state.prs.set(PRS::PPR::SET.value);
    let ev0 = unit.state.events.borrow().len();
    let pass = hw.poll_page_requests().unwrap();
    assert_eq!(
        pass.requests,
        [
            PageRequest {
                dev: DeviceId(0x10),
                pasid: Some(Pasid(5)),
                addr: 0x1234_5000,
                read: true,
                write: false,
                privileged: false,
                exec: false,
                last: true,
                group: 7,
            },
            PageRequest {
                dev: DeviceId(0x18),
                pasid: Some(Pasid(0xf_ffff)),
                addr: 0x8000,
                read: false,
                write: true,
                privileged: true,
                exec: true,
                last: false,
                group: 0x1ff,
            }
        ]
    );
    let whys: Vec<(u32, &str)> = pass
        .rejected
        .iter()
        .map(|e| match *e {
            VtdError::BadPageRequest { index, why, .. } => (index, why),
            e => panic!("{e}"),
        })
        .collect();
    assert_eq!(
        whys,
        [
            (127, "not a page request (type)"),
            (1, "no PASID"),
            (2, "reserved bits set")
        ]
    );
    assert!(!pass.overflow_seen && !pass.overflow_cleared);
    let ev = unit.state.events.borrow()[ev0..].to_vec();
    assert_eq!(ev[0], Event::Prs(PRS::PPR::SET.value), "PPR cleared first");
    assert_eq!(ev[1], Event::PqtRead);
    assert!(ev.contains(&Event::Pqh(3 << 5)), "PQH moved to the tail");
    assert_eq!(unit.state.prs.get(), 0);
    // Nothing new: an empty pass.
    assert!(hw.poll_page_requests().unwrap().is_empty());
}

/// An overflow (PRS.PRO) is reported, and cleared only once the queue
/// reads empty: with the head held (the test hook) the requests are
/// seen, PQH stays and PRO stays set; released, PQH reaches PQT and PRO
/// is cleared (issue 16, point 2).
#[test]
fn an_overflow_is_cleared_only_once_the_queue_is_empty() {
    use crate::regs::PRS;
    let (hal, unit, mut hw) = ats_unit(ECAP_FL | ECAP_DT | ECAP_PRS);
    hw.enable_page_requests(0).unwrap();
    let ring = unit
        .state
        .events
        .borrow()
        .iter()
        .find_map(|e| match *e {
            Event::Pqa(v) => Some(v & !0xfff),
            _ => None,
        })
        .unwrap();
    for i in 0..2u64 {
        hal.poke(ring + 32 * i, 1 | 1 << 8 | 0x10 << 16 | 5 << 32)
            .unwrap();
        hal.poke(ring + 32 * i + 8, (0x1000 * (i + 1)) | 1 | 4)
            .unwrap();
    }
    unit.state.pqt.set(2 << 5);
    unit.state.prs.set((PRS::PPR::SET + PRS::PRO::SET).value);
    hw.hold_page_request_head = true;
    let held = hw.poll_page_requests().unwrap();
    assert_eq!(held.requests.len(), 2);
    assert!(held.overflow_seen && !held.overflow_cleared);
    assert_eq!(unit.state.pqh.get(), 0, "head held");
    assert_eq!(unit.state.prs.get(), PRS::PRO::SET.value, "PRO left set");
    hw.hold_page_request_head = false;
    let drained = hw.poll_page_requests().unwrap();
    assert_eq!(drained.requests.len(), 2, "the same two, not taken before");
    assert!(drained.overflow_seen && drained.overflow_cleared);
    assert_eq!(unit.state.pqh.get(), 2 << 5);
    assert_eq!(unit.state.prs.get(), 0, "PRO cleared");
}

/// A page response is a page group response (PP, RID, PASID, the
/// response code, LPIG, PRGI) followed by a wait, for the last request
/// of a group only; stop markers and other requests get none. A drain
/// wait carries PD only where ECAP.PDS says the unit takes it (issue 16,
/// point 2).
#[test]
fn page_responses_and_drains() {
    use kernel::iommu::iopf::{PageRequest, PageResponse};
    let (_, unit, mut hw) = ats_unit(ECAP_FL | ECAP_DT | ECAP_PRS);
    let req = PageRequest {
        dev: DeviceId(0x10),
        pasid: Some(Pasid(5)),
        addr: 0x4000,
        read: true,
        write: false,
        privileged: false,
        exec: false,
        last: true,
        group: 9,
    };
    assert_eq!(
        hw.page_response(&req, PageResponse::Success),
        Err(VtdError::PageRequestsOff { base: 0xfed9_0000 })
    );
    assert_eq!(
        hw.enable_page_requests(8),
        Err(VtdError::BadQueueSize { pqs: 8 })
    );
    hw.enable_page_requests(2).unwrap();
    let ran0 = ran(&unit).len();
    assert_eq!(hw.page_response(&req, PageResponse::Failure), Ok(true));
    let sent = ran(&unit)[ran0..].to_vec();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[0],
        Descriptor::PageGroupResponse {
            rid: 0x10,
            pasid: 5,
            code: 0xf,
            last: true,
            group: 9
        }
        .encode()
    );
    assert_eq!(sent[1][0] & 0xf, crate::qi::WAIT);
    let not_last = PageRequest { last: false, ..req };
    let stop = PageRequest { read: false, ..req };
    assert_eq!(
        hw.page_response(&not_last, PageResponse::Success),
        Ok(false)
    );
    assert_eq!(hw.page_response(&stop, PageResponse::Success), Ok(false));
    assert_eq!(ran(&unit).len(), ran0 + 2, "nothing more sent");
    let pd = |ecap| {
        let (_, unit, mut hw) = ats_unit(ecap);
        hw.enable_page_requests(0).unwrap();
        hw.drain_page_requests().unwrap();
        ran(&unit).last().unwrap()[0] & (1 << 7) != 0
    };
    assert!(
        !pd(ECAP_FL | ECAP_DT | ECAP_PRS),
        "PD is reserved without PDS"
    );
    assert!(pd(ECAP_FL | ECAP_DT | ECAP_PRS | ECAP_PDS));
}

/// Units with ECAP.DIT get the physical function's source id in their
/// device-TLB invalidations (the device's own: it is its PF); others
/// zeros, where those bits are reserved (issue 16, point 2).
#[test]
fn pfsid_only_with_dit() {
    let (_, _, mut plain) = ats_unit(ECAP_FL | ECAP_DT);
    plain.set_device_ats(DeviceId(0x10), Some(ATS)).unwrap();
    assert_eq!(plain.device_ats(DeviceId(0x10)).unwrap().pfsid, None);
    let (_, _, mut dit) = ats_unit(ECAP_FL | ECAP_DT | 1 << 41);
    dit.set_device_ats(DeviceId(0x10), Some(ATS)).unwrap();
    assert_eq!(dit.device_ats(DeviceId(0x10)).unwrap().pfsid, Some(0x10));
}
