//! The driver's live-entry updates, replayed against what an SMMU could
//! fetch (in the manner of Linux's arm-smmu-v3-test.c): for every switch
//! the driver makes on a live stream, each state a fetch could combine
//! between two syncs is the old entry, the new one, or invalid.
use super::{
    cd_table_switch, next_tag, plan, stream_ste, BaseRegisters, Plan, Primary, SmmuError,
    SteParams, Stream, Translation, LEAF_LOG2,
};
use crate::cd::{Cd, CdConfig};
use crate::cmd::Command;
use crate::idr::{Features, StreamTableLevels};
use crate::ste::Ste;
use crate::Coherency;
use alloc::collections::{BTreeMap, BTreeSet};
use kernel::iommu::entry::check::{check, syncs, writer_is_safe, Step, Torn};
use kernel::iommu::pgtable::arm::MAIR;

const LEAF0: u64 = 0x8000_0000;
const L1: u64 = 0x8010_0000;

fn params(translation: Translation) -> SteParams {
    SteParams {
        translation,
        s2_ias: 44,
        s2_ps: 4,
        s2_root: 0x9000_0000,
        walk: Coherency::Coherent,
        httu: 0,
    }
}

fn stream(primary: Primary, aux: bool, log2: u8, l1: bool) -> Stream {
    Stream {
        primary,
        aux,
        leaves: BTreeMap::from([(0, LEAF0)]),
        log2,
        l1: l1.then_some((L1, 16)),
        pasids: BTreeSet::new(),
        guest: None,
    }
}

fn ste(t: Translation, st: &Stream) -> [u64; 8] {
    stream_ste(&params(t), st).0
}

const PAGING_A: Primary = Primary::Paging {
    asid: 1,
    root: 0xa000_0000,
};
const PAGING_B: Primary = Primary::Paging {
    asid: 2,
    root: 0xb000_0000,
};

/// Every switch of `states` to every other is safe; returns the syncs of
/// each, in order.
fn all_switches(states: &[[u64; 8]], f: fn([u64; 8], [u64; 8]) -> Result<usize, Torn<8>>) {
    for (i, a) in states.iter().enumerate() {
        for (j, b) in states.iter().enumerate() {
            if i != j {
                if let Err(e) = f(*a, *b) {
                    panic!("switch {i} -> {j}: {e:?}\n  from {a:x?}\n  to   {b:x?}");
                }
            }
        }
    }
}

fn ste_switch(a: [u64; 8], b: [u64; 8]) -> Result<usize, Torn<8>> {
    writer_is_safe::<Ste, 8>(a, b).map(|s| syncs(&s))
}

fn cd_switch(a: [u64; 8], b: [u64; 8]) -> Result<usize, Torn<8>> {
    writer_is_safe::<Cd, 8>(a, b).map(|s| syncs(&s))
}

#[test]
fn stage1_blocked_identity_paging_switches() {
    let t = Translation::Stage1;
    let states = [
        ste(t, &stream(Primary::Blocked, false, 0, false)),
        ste(t, &stream(Primary::Identity, false, 0, false)),
        ste(t, &stream(PAGING_A, false, 0, false)),
        ste(t, &stream(Primary::Identity, true, LEAF_LOG2, false)),
        ste(t, &stream(PAGING_A, true, LEAF_LOG2, false)),
        Ste::bypass().0,
        Ste::abort().0,
        [0; 8],
    ];
    all_switches(&states, ste_switch);
    // Identity to paging (the primary changes, CD 0 already written) is
    // hitless: S1DSS (unused in bypass) first, then dword 0 alone.
    let steps = writer_is_safe::<Ste, 8>(states[1], states[2]).unwrap();
    assert_eq!(syncs(&steps), 2);
    assert!(steps
        .iter()
        .all(|s| !matches!(s, Step::Write { word: 0, value } if value & 1 == 0)));
}

#[test]
fn stage2_primary_replace_breaks_before_make() {
    let t = Translation::Stage2;
    let states = [
        ste(t, &stream(Primary::Blocked, false, 0, false)),
        ste(t, &stream(Primary::Identity, false, 0, false)),
        ste(t, &stream(PAGING_A, false, 0, false)),
        ste(t, &stream(PAGING_B, false, 0, false)),
    ];
    all_switches(&states, ste_switch);
    // VMID and S2TTB are in two dwords: invalid, rest, valid.
    assert_eq!(ste_switch(states[2], states[3]), Ok(3));
}

#[test]
fn nested_and_stage_changes() {
    let n = Translation::Nested;
    let states = [
        ste(n, &stream(Primary::Blocked, false, 0, false)),
        ste(n, &stream(Primary::Identity, false, 0, false)),
        ste(n, &stream(PAGING_A, true, LEAF_LOG2, false)),
        ste(n, &stream(Primary::Identity, true, 10, true)),
        // The same stream under the other modes.
        ste(Translation::Stage1, &stream(PAGING_A, false, 0, false)),
        ste(Translation::Stage2, &stream(PAGING_A, false, 0, false)),
        Ste::bypass().0,
    ];
    all_switches(&states, ste_switch);
}

#[test]
fn cd_table_growth_is_one_dword() {
    let t = Translation::Stage1;
    let linear1 = ste(t, &stream(PAGING_A, false, 0, false));
    let linear64 = ste(t, &stream(PAGING_A, true, LEAF_LOG2, false));
    let two_level = ste(t, &stream(PAGING_A, true, 10, true));
    // S1CDMax, S1Fmt and S1ContextPtr share dword 0: growing and
    // shrinking the CD table is hitless.
    assert_eq!(ste_switch(linear1, linear64), Ok(1));
    assert_eq!(ste_switch(linear64, two_level), Ok(1));
    assert_eq!(ste_switch(two_level, linear1), Ok(1));
}

/// Growing a stream's CD table to two levels (or to a larger level-1
/// table) invalidates the CDs the SMMU may hold from the old one, as
/// shrinking does; only a larger S1CDMax over the same table needs
/// nothing (issue 13, point 10).
#[test]
fn cd_table_growth_invalidates_as_shrinking_does() {
    let fields = |st: Stream| st.cd_table_fields();
    let linear1 = fields(stream(PAGING_A, false, 0, false));
    let linear64 = fields(stream(PAGING_A, true, LEAF_LOG2, false));
    let two_level = fields(stream(PAGING_A, true, 10, true));
    let mut wider = stream(PAGING_A, true, 12, true);
    wider.l1 = Some((L1 + 0x1_0000, 64));
    let wider = fields(wider);
    let cfgi = Some(Command::CfgiCdAll { sid: 7 });
    // Growing.
    assert_eq!(cd_table_switch(7, linear1, linear64), None);
    assert_eq!(cd_table_switch(7, linear64, two_level), cfgi);
    assert_eq!(cd_table_switch(7, two_level, wider), cfgi);
    // Shrinking.
    assert_eq!(cd_table_switch(7, wider, linear1), cfgi);
    assert_eq!(cd_table_switch(7, linear64, linear1), cfgi);
    assert_eq!(cd_table_switch(7, linear1, linear1), None);
}

fn paging_cd(asid: u16, root: u64) -> [u64; 8] {
    Cd::new(&CdConfig {
        asid,
        ttb0: root,
        ias: 48,
        ips: 4,
        mair: MAIR,
        walk: Coherency::Coherent,
        httu: 0,
    })
    .0
}

#[test]
fn context_descriptor_switches() {
    // CD 0: blocked, primary replace; CD n: aux attach, detach, reuse.
    let states = [
        Cd::blocking(0).0,
        paging_cd(1, 0xa000_0000),
        paging_cd(2, 0xb000_0000),
        Cd::invalid().0,
    ];
    all_switches(&states, cd_switch);
    // Attach to a free substream: the valid dword last, after a sync.
    let steps = writer_is_safe::<Cd, 8>(states[3], states[1]).unwrap();
    assert_eq!(steps.last(), Some(&Step::Sync));
    assert!(matches!(
        steps[steps.len() - 2],
        Step::Write { word: 0, .. }
    ));
    // Detach: invalid first.
    let steps = writer_is_safe::<Cd, 8>(states[1], states[3]).unwrap();
    assert_eq!(steps[0], Step::Write { word: 0, value: 0 });
}

/// The writer the driver had before: every dword but 0, then dword 0,
/// one CFGI and sync. The recorder catches it tearing a stage-2 primary
/// replace (new S2TTB with the old VMID).
#[test]
fn a_torn_stage2_replace_is_caught() {
    let t = Translation::Stage2;
    let a = ste(t, &stream(PAGING_A, false, 0, false));
    let b = ste(t, &stream(PAGING_B, false, 0, false));
    // Every dword but 0, then dword 0.
    let mut steps: alloc::vec::Vec<Step> = [1, 2, 3, 4, 5, 6, 7, 0]
        .iter()
        .filter(|&&i| a[i] != b[i])
        .map(|&i| Step::Write {
            word: i,
            value: b[i],
        })
        .collect();
    steps.push(Step::Sync);
    match check::<Ste, 8>(&a, &b, &steps) {
        Err(Torn::Mixed { seen, .. }) => {
            assert!(seen[2] != a[2] || seen[3] != a[3], "a mix of old and new");
        }
        other => panic!("the torn update passed: {other:?}"),
    }
}

/// The plan for an SMMU without presets.
fn plan_of(f: &Features, format: Option<StreamTableLevels>) -> Result<Plan, SmmuError> {
    plan(f, format, &BaseRegisters::default())
}

fn features(sid_bits: u8, linear_only: bool, cmdq_log2: u8, eventq_log2: u8) -> Features {
    let mut idr = [0u32; 6];
    // S1P, TTF AArch64, 2-level stream tables unless linear only, COHACC.
    idr[0] = 1 << 1 | 2 << 2 | (u32::from(!linear_only) << 27) | 1 << 4;
    idr[1] = u32::from(sid_bits) | u32::from(eventq_log2) << 16 | u32::from(cmdq_log2) << 21;
    // 4 KiB granule, OAS 44.
    idr[5] = 1 << 4 | 4;
    Features::decode(idr, 0).expect("usable")
}

/// The ID registers bound what the driver builds (issue 13, point 8):
/// 32 StreamID bits do not make a 128 MiB level-1 table, queues are no
/// larger than IDR1 allows, a linear-only SMMU's table is capped, and a
/// forced two-level table on a linear-only SMMU is refused.
#[test]
fn id_registers_bound_the_tables_and_queues() {
    let p = plan_of(&features(32, false, 19, 19), None).unwrap();
    assert!(!p.linear);
    assert_eq!((p.sid_bits, p.strtab_bytes), (25, 1 << 20));
    assert_eq!((p.cmdq_log2, p.evtq_log2), (8, 7));
    let small = plan_of(&features(16, false, 5, 4), None).unwrap();
    assert_eq!((small.cmdq_log2, small.evtq_log2), (5, 4));
    assert_eq!((small.sid_bits, small.strtab_bytes), (16, 8 << 8));
    let lin = plan_of(&features(20, true, 8, 7), None).unwrap();
    assert!(lin.linear);
    assert_eq!((lin.sid_bits, lin.strtab_bytes), (16, 64 << 16));
    assert_eq!(
        plan_of(&features(20, true, 8, 7), Some(StreamTableLevels::TwoLevel)),
        Err(SmmuError::LinearOnly)
    );
    // A small SMMU's StreamIDs fit one level-2 table: linear.
    assert!(plan_of(&features(6, false, 8, 7), None).unwrap().linear);
}

/// An SMMU with IDR1 bits 30:28 (`presets`: TABLES_PRESET,
/// QUEUES_PRESET, REL).
fn preset_features(presets: u32, linear_only: bool) -> Features {
    let f = features(16, linear_only, 10, 9);
    let mut idr = [0u32; 6];
    idr[0] = 1 << 1 | 2 << 2 | (u32::from(!linear_only) << 27) | 1 << 4;
    idr[1] = 16 | 9 << 16 | 10 << 21 | presets << 28;
    idr[5] = 1 << 4 | 4;
    let p = Features::decode(idr, 0).expect("usable");
    assert_eq!((p.sid_bits, p.cmdq_log2), (f.sid_bits, f.cmdq_log2));
    p
}

/// Preset stream tables and queues (IDR1.TABLES_PRESET, QUEUES_PRESET)
/// are used where and as large as the base registers say, nothing is
/// allocated for them, and REL makes their bases offsets from the SMMU;
/// presets the driver cannot use are typed errors (issue 13, point 8).
#[test]
fn preset_tables_and_queues_are_honoured() {
    const TABLES: u32 = 0b100;
    const QUEUES: u32 = 0b010;
    const REL: u32 = 0b001;
    let regs = BaseRegisters {
        smmu: 0x0900_0000,
        // RA, the table at 0x8_4000_0000; linear, 2^10 STEs.
        strtab_base: 1 << 62 | 0x8_4000_0000,
        strtab_base_cfg: 10,
        // RWA, 2^5 commands at 0x8_5000_0000, 2^4 events at 0x8_5100_0000.
        cmdq_base: 1 << 62 | 0x8_5000_0000 | 5,
        eventq_base: 1 << 62 | 0x8_5100_0000 | 4,
    };
    let p = plan(&preset_features(TABLES | QUEUES, false), None, &regs).unwrap();
    assert!(p.linear);
    assert_eq!((p.sid_bits, p.strtab_bytes), (10, 64 << 10));
    assert_eq!(p.strtab_at, Some(0x8_4000_0000));
    assert_eq!((p.cmdq_log2, p.cmdq_at), (5, Some(0x8_5000_0000)));
    assert_eq!((p.evtq_log2, p.evtq_at), (4, Some(0x8_5100_0000)));
    // Tables only: the queues are the driver's.
    let p = plan(&preset_features(TABLES, false), None, &regs).unwrap();
    assert_eq!((p.cmdq_log2, p.cmdq_at, p.evtq_at), (8, None, None));
    // Two levels, SPLIT 6, LOG2SIZE past SIDSIZE (means SIDSIZE); REL.
    let two = BaseRegisters {
        strtab_base: 0x10_0000,
        strtab_base_cfg: 1 << 16 | 6 << 6 | 20,
        ..regs
    };
    let p = plan(&preset_features(TABLES | QUEUES | REL, false), None, &two).unwrap();
    assert!(!p.linear);
    assert_eq!((p.split, p.sid_bits, p.strtab_bytes), (6, 16, 8 << 10));
    assert_eq!(p.strtab_at, Some(0x0900_0000 + 0x10_0000));
    assert_eq!(p.cmdq_at, Some(0x0900_0000 + 0x8_5000_0000));
    // What cannot be used.
    let refused = |f: Features, r: BaseRegisters, format| match plan(&f, format, &r) {
        Err(SmmuError::Preset { register, .. }) => register,
        other => panic!("{other:?}"),
    };
    let split7 = BaseRegisters {
        strtab_base_cfg: 1 << 16 | 7 << 6 | 16,
        ..regs
    };
    assert_eq!(
        refused(preset_features(TABLES, false), split7, None),
        "STRTAB_BASE_CFG"
    );
    assert_eq!(
        refused(preset_features(TABLES, true), two, None),
        "STRTAB_BASE_CFG",
        "two levels on a linear-only SMMU"
    );
    assert_eq!(
        refused(
            preset_features(TABLES, false),
            two,
            Some(StreamTableLevels::Linear)
        ),
        "STRTAB_BASE_CFG",
        "a forced format against the preset one"
    );
    let big = BaseRegisters {
        cmdq_base: 0x8_5000_0000 | 11,
        ..regs
    };
    assert_eq!(
        refused(preset_features(QUEUES, false), big, None),
        "CMDQ_BASE"
    );
}

/// Queue sizes are clamped to IDR1, and a command queue too small for a
/// command and its CMD_SYNC is refused, not used.
#[test]
fn queues_are_clamped_and_not_too_small() {
    assert_eq!(
        plan_of(&features(16, false, 1, 7), None),
        Err(SmmuError::CmdqTooSmall { log2: 1 })
    );
    let p = plan_of(&features(32, false, 2, 0), None).unwrap();
    assert_eq!((p.cmdq_log2, p.evtq_log2), (2, 0));
}

/// ASIDs and VMIDs run out at their width (8 or 16 bits) with a typed
/// error, not at 2^16 regardless.
#[test]
fn tags_run_out_at_their_width() {
    assert_eq!(next_tag(0, 8), Some(1));
    assert_eq!(next_tag(254, 8), Some(255));
    assert_eq!(next_tag(255, 8), None);
    assert_eq!(next_tag(255, 16), Some(256));
    assert_eq!(next_tag(u16::MAX, 16), None);
}

/// A stand-in SMMU on the host for the bring-up order: the register file
/// is host memory, a thread plays the hardware (acknowledges CR0 and
/// IRQ_CTRL, consumes the command queue) and, at the CR0 write that sets
/// SMMUEN and before acknowledging it (the driver waits for that), reads
/// the STEs of the firmware's reserved streams from the driver's memory.
mod fake_smmu {
    extern crate std;
    use super::super::{Firmware, ReservedStreams, SmmuError, SmmuHw};
    use crate::ste::Ste;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::sync::atomic::{AtomicBool, Ordering};
    use kernel::addr::{PhysAddr, PhysRange};
    use kernel::hal::{check_bounds, Coherency, DmaRegion, Hal, HalError};
    use kernel::iommu::domain::{DeviceId, IommuHw};
    use std::sync::{Arc, Mutex};

    const ARENA: u64 = 0x1000_0000;

    /// Memory both the driver and the hardware thread see.
    #[derive(Clone, Default)]
    struct SharedHal {
        arena: Arc<Mutex<(Vec<u64>, u64)>>,
    }

    struct Region {
        pa: u64,
        len: u64,
        arena: Arc<Mutex<(Vec<u64>, u64)>>,
    }

    impl DmaRegion for Region {
        fn phys(&self) -> PhysAddr {
            PhysAddr(self.pa)
        }
        fn len(&self) -> u64 {
            self.len
        }
        fn read_u64(&self, offset: u64) -> Result<u64, HalError> {
            check_bounds(offset, 8, self.len, true)?;
            Ok(self.arena.lock().unwrap().0[((self.pa - ARENA + offset) / 8) as usize])
        }
        fn write_u64(&mut self, offset: u64, value: u64) -> Result<(), HalError> {
            check_bounds(offset, 8, self.len, true)?;
            self.arena.lock().unwrap().0[((self.pa - ARENA + offset) / 8) as usize] = value;
            Ok(())
        }
        fn read_bytes(&self, _offset: u64, _out: &mut [u8]) -> Result<(), HalError> {
            unimplemented!()
        }
        fn write_bytes(&mut self, _offset: u64, _data: &[u8]) -> Result<(), HalError> {
            unimplemented!()
        }
    }

    impl Hal for SharedHal {
        type Region = Region;
        fn alloc(&self, bytes: u64, align: u64, _c: Coherency) -> Result<Region, HalError> {
            let mut a = self.arena.lock().unwrap();
            if a.0.is_empty() {
                a.0 = vec![0; 1 << 17];
                a.1 = ARENA;
            }
            let pa = a.1.next_multiple_of(align.max(4096));
            a.1 = pa + bytes;
            assert!(a.1 - ARENA <= 8 << 17, "arena exhausted");
            Ok(Region {
                pa,
                len: bytes,
                arena: self.arena.clone(),
            })
        }
        fn barrier(&self) {
            core::sync::atomic::fence(Ordering::SeqCst);
        }
        fn now_ns(&self) -> u64 {
            std::time::Instant::now()
                .duration_since(*START.get_or_init(std::time::Instant::now))
                .as_nanos() as u64
        }
    }

    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

    use crate::probe::{host_reg as reg32, set_host_reg as set32};

    /// One round of the hardware's answers: CR0ACK = `cr0`, a GBPA
    /// update completes at once, IRQ_CTRLACK follows IRQ_CTRL, and the
    /// command queue is consumed (CONS = PROD).
    fn answer(base: usize, cr0: u32) {
        set32(base, 0x24, cr0);
        let gbpa = reg32(base, 0x44);
        if gbpa & (1 << 31) != 0 {
            set32(base, 0x44, gbpa & !(1 << 31));
        }
        set32(base, 0x54, reg32(base, 0x50));
        set32(base, 0x9c, reg32(base, 0x98));
        std::thread::yield_now();
    }

    /// Brings an SMMU with 6-bit StreamIDs (linear stream table) up with
    /// `firmware`, enables it, and returns the STE dword 0 of each of
    /// `sids` as they were when SMMUEN was written.
    fn stes_at_smmuen(
        firmware: Firmware,
        sids: &[u32],
    ) -> Result<(Vec<u64>, SmmuHw<SharedHal>), SmmuError> {
        let mut regs = vec![0u64; 2 * crate::regs::PAGE1 / 8];
        // IDR0: linear stream tables, stage 1, AArch64 tables, COHACC.
        regs[0] = u64::from((2u32 << 2) | (1 << 1) | (1 << 4));
        // IDR1: CMDQS 8, EVENTQS 7, SIDSIZE 6 (IDR1 is the upper half).
        regs[0] |= u64::from((8u32 << 21) | (7 << 16) | 6) << 32;
        // IDR5 (at 0x14): 4 KiB granule, 48-bit OAS.
        regs[2] |= u64::from((1u32 << 4) | 5) << 32;
        let hal = SharedHal::default();
        let smmu = crate::probe::over_host_memory(&mut regs);
        let base = smmu.base() as usize;
        let stop = Arc::new(AtomicBool::new(false));
        let seen: Arc<Mutex<Option<Vec<u64>>>> = Arc::default();
        let hw_thread = {
            let (stop, seen, arena, sids) =
                (stop.clone(), seen.clone(), hal.arena.clone(), sids.to_vec());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let cr0 = reg32(base, 0x20);
                    if cr0 & 1 != 0 && seen.lock().unwrap().is_none() {
                        let strtab = (u64::from(reg32(base, 0x80))
                            | u64::from(reg32(base, 0x84)) << 32)
                            & 0x000f_ffff_ffff_ffc0;
                        let a = arena.lock().unwrap();
                        let stes = sids
                            .iter()
                            .map(|&sid| a.0[((strtab - ARENA) / 8) as usize + 8 * sid as usize])
                            .collect();
                        *seen.lock().unwrap() = Some(stes);
                    }
                    answer(base, cr0);
                }
            })
        };
        let hw = SmmuHw::with_firmware(smmu, hal, None, None, firmware).and_then(|mut hw| {
            hw.enable()?;
            // Off again while the hardware still answers.
            hw.disable()?;
            Ok(hw)
        });
        stop.store(true, Ordering::SeqCst);
        hw_thread.join().unwrap();
        // The driver may still name the register file (its Drop finds CR0
        // at 0 and stops there): it outlives the test.
        core::mem::forget(regs);
        let hw = hw?;
        let stes = seen.lock().unwrap().take().expect("SMMUEN was never set");
        Ok((stes, hw))
    }

    /// IORT RMR StreamIDs bypass from before SMMUEN is written, and their
    /// ranges are those streams' direct regions (mapped one to one and
    /// reserved in every primary paging domain by the core); other
    /// streams stay invalid and have none.
    #[test]
    fn rmr_streams_bypass_before_smmuen() {
        let ranges = vec![
            PhysRange::new(0x8000_0000, 0x1_0000),
            PhysRange::new(0x9000_0000, 0x2000),
        ];
        let fw = Firmware {
            coherent: Some(true),
            reserved: vec![
                ReservedStreams {
                    first: 3,
                    last: 5,
                    ranges: ranges.clone(),
                },
                ReservedStreams {
                    first: 9,
                    last: 9,
                    ranges: vec![ranges[1]],
                },
            ],
        };
        let (stes, hw) = stes_at_smmuen(fw, &[3, 4, 5, 9, 6]).unwrap();
        let bypass = Ste::bypass().0[0];
        assert_eq!(stes, [bypass, bypass, bypass, bypass, 0]);
        assert_eq!(hw.direct_regions(DeviceId(4)), ranges);
        assert_eq!(hw.direct_regions(DeviceId(9)), [ranges[1]]);
        assert!(hw.direct_regions(DeviceId(6)).is_empty());
        core::mem::forget(hw);
    }

    /// A reserved StreamID the stream table cannot hold fails bring-up.
    #[test]
    fn rmr_stream_beyond_the_table_is_refused() {
        let fw = Firmware {
            coherent: None,
            reserved: vec![ReservedStreams {
                first: 0x40,
                last: 0x40,
                ranges: vec![PhysRange::new(0x8000_0000, 0x1000)],
            }],
        };
        assert_eq!(
            stes_at_smmuen(fw, &[]).err(),
            Some(SmmuError::StreamIdTooWide { sid: 0x40, bits: 6 })
        );
    }

    /// The firmware decides coherency over IDR0.COHACC (set here), as in
    /// Linux; without a word from it, IDR0.COHACC does.
    #[test]
    fn firmware_coherency_overrides_idr0() {
        let fw = |coherent| Firmware {
            coherent,
            reserved: Vec::new(),
        };
        for (said, want) in [
            (Some(false), Coherency::NonCoherent),
            (Some(true), Coherency::Coherent),
            (None, Coherency::Coherent),
        ] {
            let (_, hw) = stes_at_smmuen(fw(said), &[]).unwrap();
            assert_eq!(hw.coherency(), want, "firmware says {said:?}");
            core::mem::forget(hw);
        }
    }

    /// An SMMU with both stages and substreams (linear stream table,
    /// 6-bit StreamIDs) brought up in the stage-2 mode, run through `f`
    /// while a thread plays the hardware; `f` gets the driver and a
    /// reader of the commands queued so far.
    fn stage2_smmu<R>(
        f: impl FnOnce(&mut SmmuHw<SharedHal>, &dyn Fn() -> Vec<[u64; 2]>) -> R,
    ) -> R {
        let mut regs = vec![0u64; 2 * crate::regs::PAGE1 / 8];
        // IDR0: linear stream tables, S1P, S2P, AArch64 tables, COHACC,
        // CD2L, 16-bit VMIDs and ASIDs.
        regs[0] = u64::from(3 | (2u32 << 2) | (1 << 4) | (1 << 19) | (1 << 18) | (1 << 12));
        // IDR1: CMDQS 8, EVENTQS 7, SSIDSIZE 8, SIDSIZE 6.
        regs[0] |= u64::from((8u32 << 21) | (7 << 16) | (8 << 6) | 6) << 32;
        // IDR5: 4 KiB granule, 48-bit OAS.
        regs[2] |= u64::from((1u32 << 4) | 5) << 32;
        let hal = SharedHal::default();
        let smmu = crate::probe::over_host_memory(&mut regs);
        let base = smmu.base() as usize;
        let stop = Arc::new(AtomicBool::new(false));
        let hw_thread = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    answer(base, reg32(base, 0x20));
                }
            })
        };
        let fw = Firmware {
            coherent: Some(true),
            reserved: Vec::new(),
        };
        let mut hw = SmmuHw::with_firmware(smmu, hal.clone(), None, None, fw).unwrap();
        hw.set_translation(super::super::Translation::Stage2)
            .unwrap();
        hw.enable().unwrap();
        let arena = hal.arena.clone();
        let commands = move || {
            let q = u64::from(reg32(base, 0x90)) | u64::from(reg32(base, 0x94)) << 32;
            let (addr, log2) = (q & 0x000f_ffff_ffff_ffe0, q & 0x1f);
            let prod = reg32(base, 0x98) & ((2 << log2) - 1);
            let a = arena.lock().unwrap();
            (0..prod)
                .map(|i| {
                    let at = ((addr - ARENA) / 8) as usize + 2 * (i & ((1 << log2) - 1)) as usize;
                    [a.0[at], a.0[at + 1]]
                })
                .collect()
        };
        let r = f(&mut hw, &commands);
        hw.disable().unwrap();
        stop.store(true, Ordering::SeqCst);
        hw_thread.join().unwrap();
        core::mem::forget(regs);
        core::mem::forget(hw);
        r
    }

    /// `set_nested` on a live driver: the STE in the stream table is the
    /// nested one (guest CD table IPA, stage-2 domain), made visible by
    /// CFGI_STE, with CFGI_CD_ALL after it; a vIOMMU batch becomes its
    /// commands with the VMID and one CMD_SYNC; a configuration request
    /// for a stream without a guest refuses the batch with nothing queued.
    #[test]
    fn set_nested_and_forwarded_invalidations_on_a_live_driver() {
        use crate::cmd::{CFGI_CD_ALL, CFGI_STE, CMD_SYNC, TLBI_NH_VA};
        use crate::ste::{CdFmt, S1Dss};
        use kernel::iommu::domain::{DomainId, DomainKind, DomainRef, TableFormat};
        use kernel::iommu::pgtable::arm::ArmLpae;
        use kernel::iommu::viommu::{PhysRequest, ViommuHw};
        stage2_smmu(|hw, commands| {
            let s2 = DomainRef {
                id: DomainId(1),
                kind: DomainKind::Unmanaged,
                root: Some(PhysAddr(0x7000_0000)),
                format: TableFormat::Arm(ArmLpae::S2),
                tag: 9,
            };
            let dev = DeviceId(5);
            let guest = super::super::GuestS1 {
                cd_table: 0x8_0000_0000,
                s1cdmax: 0,
                s1fmt: CdFmt::Linear,
                s1dss: S1Dss::Substream0,
            };
            // Not the stream's primary yet: refused.
            assert!(matches!(
                hw.set_nested(dev, &s2, guest),
                Err(SmmuError::NotManaged { .. } | SmmuError::GuestS1 { .. })
            ));
            hw.set_primary(dev, &s2).unwrap();
            let before = commands().len();
            hw.set_nested(dev, &s2, guest).unwrap();
            let strtab = u64::from(reg32(hw_base(hw), 0x80)) & 0xffff_ffc0;
            let ste: Vec<u64> = (0..4)
                .map(|i| hw.hal().peek(strtab + 64 * 5 + 8 * i))
                .collect();
            assert_eq!((ste[0] >> 1) & 7, 0b111, "Config S1+S2");
            assert_eq!(ste[0] & 0x000f_ffff_ffff_ffc0, 0x8_0000_0000);
            assert_eq!(ste[2] & 0xffff, 9, "S2VMID");
            assert_eq!(ste[3], 0x7000_0000, "S2TTB");
            let ops: Vec<u64> = commands()[before..].iter().map(|c| c[0] & 0xff).collect();
            assert!(ops.contains(&CFGI_STE), "{ops:x?}");
            assert_eq!(ops[ops.len() - 2..], [CFGI_CD_ALL, CMD_SYNC]);

            let before = commands().len();
            hw.invalidate_physical(&[PhysRequest::TlbByAddress {
                vmid: 9,
                asid: 3,
                addr: 0x1000_0000,
                pages: 1,
                leaf: true,
            }])
            .unwrap();
            let new = &commands()[before..];
            assert_eq!(new.len(), 2);
            assert_eq!(new[0][0], TLBI_NH_VA | (9 << 32) | (3 << 48));
            assert_eq!(new[0][1], 0x1000_0001);
            assert_eq!(new[1][0] & 0xff, CMD_SYNC);

            let before = commands().len();
            assert_eq!(
                hw.invalidate_physical(&[
                    PhysRequest::TlbAll { vmid: 9 },
                    PhysRequest::Config {
                        dev: DeviceId(6),
                        ssid: None
                    }
                ]),
                Err(SmmuError::NotNested { sid: 6 })
            );
            assert_eq!(commands().len(), before, "nothing queued");
        });
    }

    fn hw_base(hw: &SmmuHw<SharedHal>) -> usize {
        hw.smmu.base() as usize
    }

    impl SharedHal {
        fn peek(&self, pa: u64) -> u64 {
            self.arena.lock().unwrap().0[((pa - ARENA) / 8) as usize]
        }
    }
}
