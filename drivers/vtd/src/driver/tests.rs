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
    // RID_PASID 0, no device TLB, no page requests.
    let ctx = context_table(&hal, &t, 2, false);
    assert_eq!(word(&hal, ctx + 32 * 0x10), dir | (2 << 9) | 1);
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
    let seq = q.stage(&batch).unwrap();
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
    assert_eq!(q.stage(&many).unwrap(), 2);
    assert_eq!(q.tail(), (3 + 127) % IQ_ENTRIES);
    assert_eq!(
        q.stage(&[[0; 4]; 127]),
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
