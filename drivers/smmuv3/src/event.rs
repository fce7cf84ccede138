//! Event queue records (IHI 0070, 7.3): four doublewords, decoded into a
//! typed event with the fields a driver reports.
use crate::bits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    UnsupportedUpstream,
    BadStreamId,
    SteFetch,
    BadSte,
    BadAtsRequest,
    StreamDisabled,
    TranslationForbidden,
    BadSubstreamId,
    CdFetch,
    BadCd,
    WalkExternalAbort,
    Translation,
    AddressSize,
    Access,
    Permission,
    TlbConflict,
    ConfigConflict,
    PageRequest,
    VmsFetch,
    Unknown(u8),
}

impl EventKind {
    pub fn from_id(id: u8) -> EventKind {
        match id {
            0x01 => EventKind::UnsupportedUpstream,
            0x02 => EventKind::BadStreamId,
            0x03 => EventKind::SteFetch,
            0x04 => EventKind::BadSte,
            0x05 => EventKind::BadAtsRequest,
            0x06 => EventKind::StreamDisabled,
            0x07 => EventKind::TranslationForbidden,
            0x08 => EventKind::BadSubstreamId,
            0x09 => EventKind::CdFetch,
            0x0a => EventKind::BadCd,
            0x0b => EventKind::WalkExternalAbort,
            0x10 => EventKind::Translation,
            0x11 => EventKind::AddressSize,
            0x12 => EventKind::Access,
            0x13 => EventKind::Permission,
            0x20 => EventKind::TlbConflict,
            0x21 => EventKind::ConfigConflict,
            0x24 => EventKind::PageRequest,
            0x25 => EventKind::VmsFetch,
            x => EventKind::Unknown(x),
        }
    }

    /// Translation-class faults carry the input address, direction and stage.
    pub fn is_translation_fault(self) -> bool {
        matches!(
            self,
            EventKind::Translation
                | EventKind::AddressSize
                | EventKind::Access
                | EventKind::Permission
                | EventKind::WalkExternalAbort
        )
    }
}

/// One decoded event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub sid: u32,
    /// The SubstreamID, when SSV says there is one.
    pub ssid: Option<u32>,
    /// The input address (translation faults; CD and STE fetch faults give
    /// the fetch address).
    pub addr: u64,
    /// The access was a read.
    pub read: bool,
    /// Privileged (PnU) and instruction (InD) access.
    pub privileged: bool,
    pub instruction: bool,
    /// The fault happened at stage 2.
    pub stage2: bool,
    /// CLASS: 0 CD fetch, 1 translation table walk, 2 input address.
    pub class: u8,
    /// Stage-2 faults: the IPA.
    pub ipa: u64,
}

/// Which stage a translation fault comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultStage {
    /// The stage-1 walk or its output.
    Stage1,
    /// Stage 2 (event S2 = 1), at `ipa`, while translating what `during`
    /// names.
    Stage2 { ipa: u64, during: S2Access },
}

/// What stage 2 was translating when it faulted: the event's CLASS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S2Access {
    /// CLASS 0: the fetch of a CD (its IPA).
    CdFetch,
    /// CLASS 1: a stage-1 table descriptor (nested walk).
    Stage1Walk,
    /// CLASS 2: the input (or stage-1 output) address itself.
    Output,
}

impl Event {
    /// The stage of a translation-class fault (`None` for other events):
    /// S2 and CLASS tell a stage-2 fault during a nested stage-1 walk or
    /// CD fetch from one of the output address and from a stage-1 fault.
    pub fn stage(&self) -> Option<FaultStage> {
        if !self.kind.is_translation_fault() {
            return None;
        }
        if !self.stage2 {
            return Some(FaultStage::Stage1);
        }
        let during = match self.class {
            0 => S2Access::CdFetch,
            1 => S2Access::Stage1Walk,
            // 2, and the reserved 3.
            _ => S2Access::Output,
        };
        Some(FaultStage::Stage2 {
            ipa: self.ipa,
            during,
        })
    }

    pub fn decode(r: &[u64; 4]) -> Event {
        let kind = EventKind::from_id(bits(r[0], 7, 0) as u8);
        // C_BAD_SUBSTREAMID has no SSV bit: its SubstreamID is always the
        // request's.
        let ssv = bits(r[0], 11, 11) == 1 || kind == EventKind::BadSubstreamId;
        Event {
            kind,
            sid: bits(r[0], 63, 32) as u32,
            ssid: ssv.then_some(bits(r[0], 31, 12) as u32),
            addr: r[2],
            read: bits(r[1], 35, 35) == 1,
            privileged: bits(r[1], 33, 33) == 1,
            instruction: bits(r[1], 34, 34) == 1,
            stage2: bits(r[1], 39, 39) == 1,
            class: bits(r[1], 41, 40) as u8,
            ipa: r[3] & 0x000f_ffff_ffff_f000,
        }
    }
}

/// The registers and memory of the event queue, for [`drain`].
pub trait EvtqHw {
    fn read_prod(&self) -> u32;
    fn read_cons(&self) -> u32;
    fn write_cons(&mut self, cons: u32);
    fn read_record(&self, slot: usize) -> [u64; 4];
    /// Orders memory accesses against the register accesses around them.
    fn barrier(&mut self);
}

/// What one drain found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    pub records: alloc::vec::Vec<[u64; 4]>,
    /// EVENTQ_PROD.OVFLG differed from our acknowledgement: events were
    /// lost (and the flag is now acknowledged).
    pub overflowed: bool,
}

/// Consumes every record between CONS and PROD (IHI 0070, 3.5.2): PROD is
/// read first, and a barrier keeps the record reads after it (the SMMU
/// wrote the records before it moved PROD); a second barrier keeps the
/// record reads before the CONS write that lets the SMMU reuse the slots.
/// Keeping our OVACKFLG equal to OVFLG acknowledges an overflow.
pub fn drain(q: &crate::queue::Queue, hw: &mut impl EvtqHw) -> Drained {
    use crate::queue::OVERFLOW;
    let prod = hw.read_prod();
    hw.barrier();
    let mut cons = hw.read_cons();
    let acked = cons & OVERFLOW;
    let mut out = Drained::default();
    while !q.empty(prod, cons) {
        out.records.push(hw.read_record(q.slot(cons)));
        cons = q.next(cons);
    }
    let ovf = prod & OVERFLOW;
    out.overflowed = ovf != acked;
    hw.barrier();
    hw.write_cons((cons & !OVERFLOW) | ovf);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn translation_fault_with_substream() {
        // F_TRANSLATION, SSV, SSID 0x12345, SID 0x10; RnW (read), class 2
        // (input address), stage 1; address 0x4000_1234.
        let r = [
            0x10 | (1 << 11) | (0x12345 << 12) | (0x10 << 32),
            (1 << 35) | (2 << 40),
            0x4000_1234,
            0,
        ];
        let e = Event::decode(&r);
        assert_eq!(e.kind, EventKind::Translation);
        assert_eq!((e.sid, e.ssid, e.addr), (0x10, Some(0x12345), 0x4000_1234));
        assert!(e.read && !e.stage2 && !e.privileged && !e.instruction);
        assert_eq!(e.class, 2);
        assert!(e.kind.is_translation_fault());
    }

    #[test]
    fn kinds_and_no_substream() {
        let e = Event::decode(&[0x13 | (8 << 32), (1 << 39) | (1 << 33), 0x1000, 0x8000_2000]);
        assert_eq!(e.kind, EventKind::Permission);
        assert_eq!(e.ssid, None);
        assert!(!e.read && e.stage2 && e.privileged);
        assert_eq!(e.ipa, 0x8000_2000);
        assert_eq!(EventKind::from_id(0x08), EventKind::BadSubstreamId);
        let bad = Event::decode(&[0x08 | (0x42 << 12) | (8 << 32), 0, 0, 0]);
        assert_eq!(
            (bad.kind, bad.ssid),
            (EventKind::BadSubstreamId, Some(0x42))
        );
        assert_eq!(EventKind::from_id(0x0a), EventKind::BadCd);
        assert_eq!(EventKind::from_id(0x09), EventKind::CdFetch);
        assert_eq!(EventKind::from_id(0x99), EventKind::Unknown(0x99));
        assert!(!EventKind::BadSte.is_translation_fault());
    }

    /// A stage-2 fault on a nested stage-1 table walk, one of the output
    /// and a stage-1 fault are told apart by S2 [103] and CLASS [105:104]
    /// (IHI 0070, 7.3.12-7.3.15), with the IPA from dword 3.
    #[test]
    fn fault_stage_from_s2_and_class() {
        let rec = |id: u64, s2: u64, class: u64| {
            Event::decode(&[
                id | (3 << 32),
                (s2 << 39) | (class << 40) | (1 << 35),
                0x1_2345_6000,
                0x8765_4000,
            ])
        };
        assert_eq!(rec(0x10, 0, 2).stage(), Some(FaultStage::Stage1));
        assert_eq!(
            rec(0x10, 1, 1).stage(),
            Some(FaultStage::Stage2 {
                ipa: 0x8765_4000,
                during: S2Access::Stage1Walk
            })
        );
        assert_eq!(
            rec(0x13, 1, 2).stage(),
            Some(FaultStage::Stage2 {
                ipa: 0x8765_4000,
                during: S2Access::Output
            })
        );
        assert_eq!(
            rec(0x11, 1, 0).stage(),
            Some(FaultStage::Stage2 {
                ipa: 0x8765_4000,
                during: S2Access::CdFetch
            })
        );
        // Not a translation fault: no stage.
        assert_eq!(rec(0x0a, 1, 1).stage(), None);
    }

    /// The order of [`drain`]'s accesses: PROD, barrier, CONS and the
    /// records, barrier, CONS written (issue 13, point 3).
    #[test]
    fn drain_reads_prod_then_records_then_publishes_cons() {
        use super::{drain, EvtqHw};
        use crate::queue::{Queue, OVERFLOW};
        use alloc::vec::Vec;
        #[derive(Debug, PartialEq, Eq)]
        enum Op {
            Prod,
            Cons,
            Record(usize),
            Barrier,
            WriteCons(u32),
        }
        struct Rec {
            ops: core::cell::RefCell<Vec<Op>>,
            prod: u32,
            cons: u32,
        }
        impl EvtqHw for Rec {
            fn read_prod(&self) -> u32 {
                self.ops.borrow_mut().push(Op::Prod);
                self.prod
            }
            fn read_cons(&self) -> u32 {
                self.ops.borrow_mut().push(Op::Cons);
                self.cons
            }
            fn write_cons(&mut self, cons: u32) {
                self.ops.borrow_mut().push(Op::WriteCons(cons));
            }
            fn read_record(&self, slot: usize) -> [u64; 4] {
                self.ops.borrow_mut().push(Op::Record(slot));
                [slot as u64, 0, 0, 0]
            }
            fn barrier(&mut self) {
                self.ops.borrow_mut().push(Op::Barrier);
            }
        }
        let q = Queue { log2size: 2 };
        // Two records (slots 3 and 0, across the wrap), overflow flagged.
        let mut hw = Rec {
            ops: Default::default(),
            prod: OVERFLOW | 0b101,
            cons: 0b011,
        };
        let d = drain(&q, &mut hw);
        assert_eq!(d.records.len(), 2);
        assert!(d.overflowed);
        assert_eq!(
            hw.ops.into_inner(),
            [
                Op::Prod,
                Op::Barrier,
                Op::Cons,
                Op::Record(3),
                Op::Record(0),
                Op::Barrier,
                Op::WriteCons(OVERFLOW | 0b101)
            ]
        );
    }
}
