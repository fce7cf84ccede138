//! The device behind [`kernel::dma::DmaEngine`]: one work queue,
//! completion records in a page from the [`Hal`] (a slot per ticket),
//! optionally an MSI-X vector per completion.
//!
//! An engine made [`PasidDmaEngine::unrecorded`] writes no records: it
//! runs one operation at a time and reads the outcome from the queue's
//! last-completion registers. The IOMMU conformance suite uses it, so
//! that the device's only DMA is the operation under test, whatever
//! domain (blocked, or without the record page) serves the request.
use crate::{Completion, Descriptor, PasidDma, PasidDmaError, QueueMode, COMPLETION_BYTES};
use alloc::rc::Rc;
use kernel::addr::PhysAddr;
use kernel::dma::{DmaEngine, DmaOp, DmaResult, DmaTag, EngineError, Ticket};
use kernel::hal::{Coherency, DmaRegion, Hal};
use kernel::mm::PAGE_SIZE;

/// Completion slots in the record page; also the most operations in flight.
pub const SLOTS: u64 = PAGE_SIZE / COMPLETION_BYTES as u64;

/// Where ticket `t`'s record lives in the record page: tickets take the
/// slots in turn, so a slot is reused once its ticket is `SLOTS` old.
pub fn slot_offset(t: u64) -> u64 {
    (t % SLOTS) * COMPLETION_BYTES as u64
}

pub struct PasidDmaEngine<H: Hal> {
    hal: H,
    /// Shared with the engines of the device's other queues (one binding
    /// of BAR0, several queues).
    dev: Rc<PasidDma>,
    queue: usize,
    records: H::Region,
    next: u64,
    /// Oldest ticket not yet waited for.
    oldest: u64,
    interrupt: Option<u16>,
    /// Unrecorded mode: the queue's completed count before the operation
    /// in flight.
    unrecorded: Option<u32>,
}

impl<H: Hal> PasidDmaEngine<H> {
    /// Drives queue `queue` of `dev` in `mode`; completions send MSI-X
    /// vector `interrupt` if given.
    pub fn new(
        hal: H,
        dev: impl Into<Rc<PasidDma>>,
        queue: usize,
        mode: QueueMode,
        interrupt: Option<u16>,
    ) -> Result<Self, PasidDmaError> {
        let dev = dev.into();
        // The device writes the records and the CPU polls them: coherent
        // memory, so a poll sees the device's write without maintenance.
        let records = hal
            .alloc(PAGE_SIZE, PAGE_SIZE, Coherency::Coherent)
            .map_err(PasidDmaError::Memory)?;
        dev.configure_queue(queue, mode)?;
        Ok(PasidDmaEngine {
            hal,
            dev,
            queue,
            records,
            next: 0,
            oldest: 0,
            interrupt,
            unrecorded: None,
        })
    }

    /// As [`PasidDmaEngine::new`], but operations write no completion
    /// record; one runs at a time.
    pub fn unrecorded(
        hal: H,
        dev: impl Into<Rc<PasidDma>>,
        queue: usize,
        mode: QueueMode,
        interrupt: Option<u16>,
    ) -> Result<Self, PasidDmaError> {
        let mut e = Self::new(hal, dev, queue, mode, interrupt)?;
        e.unrecorded = Some(e.dev.completed(queue)?);
        Ok(e)
    }

    /// The device address of the completion-record page (to map it where
    /// the engine's requests are translated).
    pub fn record_page(&self) -> PhysAddr {
        self.records.phys()
    }

    pub fn device(&self) -> &PasidDma {
        &self.dev
    }

    /// Submits `d` as the next ticket, with its record at `completion`.
    fn push(
        &mut self,
        mut d: Descriptor,
        completion: Option<u64>,
    ) -> Result<Ticket, PasidDmaError> {
        let t = self.next;
        d.completion = completion;
        d.cookie = t;
        self.submit_unrecorded(&d)?;
        self.next += 1;
        Ok(Ticket(t))
    }

    /// Submits a raw descriptor (for tests of the device's own checks);
    /// its completion record and cookie are filled in here.
    pub fn submit_descriptor(&mut self, d: Descriptor) -> Result<Ticket, PasidDmaError> {
        let in_flight = self.next - self.oldest;
        if in_flight >= SLOTS {
            return Err(PasidDmaError::Busy { in_flight });
        }
        let off = slot_offset(self.next);
        // A zero status is what "not done" reads as.
        for w in (0..COMPLETION_BYTES as u64).step_by(8) {
            self.records.write_u64(off + w, 0)?;
        }
        let at = self.records.phys().as_u64() + off;
        self.push(d, Some(at))
    }

    /// Submits `d` exactly as given (its completion address and cookie
    /// too), for tests of what the device does with bad ones.
    pub fn submit_unrecorded(&mut self, d: &Descriptor) -> Result<(), PasidDmaError> {
        // The zeroed record, and whatever the caller wrote for the
        // operation, reach memory before the portal write starts it.
        self.hal.barrier();
        self.dev.submit(self.queue, d)
    }

    /// The completion record of `t` as the device left it.
    pub fn record(&self, t: Ticket) -> Result<Completion, PasidDmaError> {
        let mut r = [0u8; COMPLETION_BYTES];
        self.records.read_bytes(slot_offset(t.0), &mut r)?;
        Ok(Completion::decode(&r))
    }

    /// Polls `done` until it says yes or `bound_ns` has passed.
    fn poll<T>(
        &mut self,
        bound_ns: u64,
        mut done: impl FnMut(&mut Self) -> Result<Option<T>, PasidDmaError>,
    ) -> Result<T, PasidDmaError> {
        let t0 = self.hal.now_ns();
        loop {
            if let Some(v) = done(self)? {
                return Ok(v);
            }
            let waited = self.hal.now_ns().saturating_sub(t0);
            if waited > bound_ns {
                return Err(PasidDmaError::Timeout { waited_ns: waited });
            }
            core::hint::spin_loop();
        }
    }

    /// Waits (bounded) for `t`'s record and returns it whole.
    pub fn wait_record(&mut self, t: Ticket, bound_ns: u64) -> Result<Completion, PasidDmaError> {
        let c = self.poll(
            bound_ns,
            |e| Ok(Some(e.record(t)?).filter(Completion::done)),
        )?;
        if t.0 == self.oldest {
            self.oldest += 1;
        }
        if c.cookie != t.0 {
            return Err(PasidDmaError::WrongCookie {
                ticket: t.0,
                cookie: c.cookie,
            });
        }
        Ok(c)
    }

    fn submit_unrecorded_op(&mut self, d: Descriptor) -> Result<Ticket, PasidDmaError> {
        if self.next != self.oldest {
            return Err(PasidDmaError::Busy { in_flight: 1 });
        }
        self.unrecorded = Some(self.dev.completed(self.queue)?);
        self.push(d, None)
    }

    /// Waits (bounded) for the queue's completed count to pass `before`,
    /// then reads the outcome from its last-completion registers.
    fn wait_unrecorded(
        &mut self,
        t: Ticket,
        before: u32,
        bound_ns: u64,
    ) -> Result<Completion, PasidDmaError> {
        let q = self.queue;
        self.poll(bound_ns, |e| {
            Ok((e.dev.completed(q)? != before).then_some(()))
        })?;
        self.oldest = self.next;
        let c = self.dev.last_completion(q)?;
        if c.cookie != t.0 {
            return Err(PasidDmaError::WrongCookie {
                ticket: t.0,
                cookie: c.cookie,
            });
        }
        if !c.done() {
            return Err(PasidDmaError::NotDone { ticket: t.0 });
        }
        Ok(c)
    }
}

impl<H: Hal> DmaEngine for PasidDmaEngine<H> {
    fn submit(&mut self, op: &DmaOp, tag: DmaTag) -> Result<Ticket, EngineError> {
        let d = Descriptor {
            work: (*op).into(),
            tag,
            completion: None,
            interrupt: self.interrupt,
            cookie: 0,
        };
        Ok(if self.unrecorded.is_some() {
            self.submit_unrecorded_op(d)?
        } else {
            self.submit_descriptor(d)?
        })
    }

    fn wait(&mut self, ticket: Ticket, bound_ns: u64) -> Result<DmaResult, EngineError> {
        let c = match self.unrecorded {
            Some(before) => self.wait_unrecorded(ticket, before, bound_ns)?,
            None => self.wait_record(ticket, bound_ns)?,
        };
        // Both waits return only records that are done.
        c.result()
            .ok_or(PasidDmaError::NotDone { ticket: ticket.0 }.into())
    }
}

#[cfg(test)]
#[allow(unsafe_code)] // a fake BAR0 in host memory
mod tests {
    extern crate alloc;
    use super::*;
    use crate::{PasidDmaRegs, Work, ID, OP_FLAG_COMPLETION, STATUS_SUCCESS, STATUS_WRITE_FAULT};
    use alloc::boxed::Box;
    use alloc::vec;
    use kernel::dma::DmaStatus;
    use kernel::hal::fake::{FakeHal, MemEvent};
    use kernel::hal::HalError;
    use kernel::iommu::pasid::Pasid;

    const BAR_BYTES: usize = core::mem::size_of::<PasidDmaRegs>();
    const BOUND_NS: u64 = 1_000_000;

    /// Plain memory posing as BAR0, with the test playing the device: it
    /// reads what the driver wrote to a portal and answers through the
    /// registers and the fake HAL's memory.
    struct FakeBar {
        base: *mut u64,
    }

    impl FakeBar {
        fn new() -> FakeBar {
            let words: Box<[u64]> = vec![0u64; BAR_BYTES / 8].into_boxed_slice();
            let bar = FakeBar {
                base: Box::into_raw(words).cast::<u64>(),
            };
            bar.set32(0, ID);
            bar
        }

        fn dev(&self) -> PasidDma {
            // SAFETY: BAR_BYTES of 8-byte aligned memory this FakeBar owns
            // until it is dropped, after every engine of the test (declared
            // later); the test touches it only through raw pointers.
            unsafe { PasidDma::new(self.base as usize) }.unwrap()
        }

        fn at<T>(&self, off: usize) -> *mut T {
            assert!(off + core::mem::size_of::<T>() <= BAR_BYTES);
            assert!(off.is_multiple_of(core::mem::size_of::<T>()));
            self.base.cast::<u8>().wrapping_add(off).cast::<T>()
        }

        fn set32(&self, off: usize, v: u32) {
            // SAFETY: in bounds and aligned (checked by `at`).
            unsafe { self.at::<u32>(off).write_volatile(v) }
        }

        fn get32(&self, off: usize) -> u32 {
            // SAFETY: as in `set32`.
            unsafe { self.at::<u32>(off).read_volatile() }
        }

        fn set64(&self, off: usize, v: u64) {
            // SAFETY: as in `set32`.
            unsafe { self.at::<u64>(off).write_volatile(v) }
        }

        fn get64(&self, off: usize) -> u64 {
            // SAFETY: as in `set32`.
            unsafe { self.at::<u64>(off).read_volatile() }
        }

        /// The descriptor last written to queue `q`'s portal.
        fn portal(&self, q: usize) -> [u64; 8] {
            core::array::from_fn(|i| self.get64(0x1000 + 0x40 * q + 8 * i))
        }

        fn completed(&self, q: usize) -> u32 {
            self.get32(0x10c + 0x20 * q)
        }

        fn set_completed(&self, q: usize, n: u32) {
            self.set32(0x10c + 0x20 * q, n);
        }

        /// Finishes the descriptor last submitted to `q` the way the device
        /// does: the record (if it asked for one), the queue's
        /// last-completion registers, then the completed count.
        fn complete(
            &self,
            hal: &FakeHal,
            q: usize,
            status: u8,
            differs: bool,
            bytes: u64,
            at: u64,
        ) {
            let d = self.portal(q);
            let record = [u64::from(status) | u64::from(differs) << 8, bytes, at, d[7]];
            for (i, &w) in record.iter().enumerate() {
                if d[0] & u64::from(OP_FLAG_COMPLETION) != 0 {
                    hal.poke(d[5] + 8 * i as u64, w).unwrap();
                }
                self.set64(0x200 + 0x20 * q + 8 * i, w);
            }
            self.set_completed(q, self.completed(q) + 1);
        }
    }

    impl Drop for FakeBar {
        fn drop(&mut self) {
            let words = core::ptr::slice_from_raw_parts_mut(self.base, BAR_BYTES / 8);
            // SAFETY: `words` is the allocation `new` leaked, freed once, here.
            drop(unsafe { Box::from_raw(words) });
        }
    }

    fn fill() -> DmaOp {
        DmaOp::Fill {
            dst: 0x4000,
            len: 64,
            pattern: 0x5a,
        }
    }

    #[test]
    fn slots_are_taken_in_turn() {
        assert_eq!(SLOTS, 128);
        assert_eq!(slot_offset(0), 0);
        assert_eq!(slot_offset(1), 32);
        assert_eq!(slot_offset(127), 4064);
        assert_eq!(slot_offset(128), 0, "reused once its ticket is SLOTS old");
        assert_eq!(slot_offset(130), 64);
    }

    #[test]
    fn new_takes_a_page_and_configures_its_queue() {
        let bar = FakeBar::new();
        let hal = FakeHal::new();
        let mode = QueueMode::Dedicated(DmaTag::Pasid {
            pasid: Pasid(5),
            privileged: true,
        });
        let e = PasidDmaEngine::new(hal.clone(), bar.dev(), 2, mode, None).unwrap();
        // ENABLE, PRIV and PASID_EN; the queue's PASID.
        assert_eq!((bar.get32(0x140), bar.get32(0x144)), (0b1101, 5));
        assert_eq!(hal.live_regions(), 1);
        assert!(e.record_page().is_aligned(PAGE_SIZE));
        drop(e);
        assert_eq!(
            hal.live_regions(),
            0,
            "the record page goes with the engine"
        );

        let none = PasidDmaEngine::new(hal.clone(), bar.dev(), 4, QueueMode::Shared, None);
        assert_eq!(none.err(), Some(PasidDmaError::NoSuchQueue(4)));
        assert_eq!(hal.live_regions(), 0, "nor is it kept on failure");

        hal.fail_after.set(Some(0));
        let no_memory = PasidDmaEngine::new(hal.clone(), bar.dev(), 0, QueueMode::Shared, None);
        assert_eq!(
            no_memory.err(),
            Some(PasidDmaError::Memory(HalError::NoMemory {
                bytes: PAGE_SIZE
            }))
        );
    }

    #[test]
    fn a_submission_zeroes_its_slot_and_orders_it_before_the_portal() {
        let bar = FakeBar::new();
        let hal = FakeHal::new();
        let mut e =
            PasidDmaEngine::new(hal.clone(), bar.dev(), 1, QueueMode::Shared, Some(3)).unwrap();
        let page = e.record_page().as_u64();
        hal.poke(page + 24, 0xdead).unwrap();
        hal.take_log();
        let tag = DmaTag::Pasid {
            pasid: Pasid(9),
            privileged: false,
        };
        assert_eq!(e.submit(&fill(), tag), Ok(Ticket(0)));
        assert_eq!(
            hal.take_log(),
            [
                MemEvent::Store { pa: page, value: 0 },
                MemEvent::Store {
                    pa: page + 8,
                    value: 0
                },
                MemEvent::Store {
                    pa: page + 16,
                    value: 0
                },
                MemEvent::Store {
                    pa: page + 24,
                    value: 0
                },
                MemEvent::Barrier,
            ]
        );
        let want = |completion, cookie| {
            Descriptor {
                work: Work::Op(fill()),
                tag,
                completion: Some(completion),
                interrupt: Some(3),
                cookie,
            }
            .encode()
        };
        assert_eq!(bar.portal(1), want(page, 0));
        assert_eq!(e.submit(&fill(), tag), Ok(Ticket(1)));
        assert_eq!(bar.portal(1), want(page + 32, 1));
    }

    #[test]
    fn a_wait_turns_the_record_into_the_trait_result() {
        let bar = FakeBar::new();
        let hal = FakeHal::new();
        let mut e =
            PasidDmaEngine::new(hal.clone(), bar.dev(), 0, QueueMode::Shared, None).unwrap();
        let cmp = DmaOp::Compare {
            a: 0x1000,
            b: 0x2000,
            len: 100,
        };
        let t = e.submit(&cmp, DmaTag::Untagged).unwrap();
        assert_eq!(e.record(t).unwrap().status, None, "pending");
        bar.complete(&hal, 0, STATUS_SUCCESS, true, 100, 0x30);
        assert_eq!(
            e.wait(t, BOUND_NS),
            Ok(DmaResult {
                status: DmaStatus::Differs { offset: 0x30 },
                bytes: 100
            })
        );
        let t = e.submit(&fill(), DmaTag::Untagged).unwrap();
        bar.complete(&hal, 0, STATUS_WRITE_FAULT, false, 0, 0x4000);
        let c = e.wait_record(t, BOUND_NS).unwrap();
        assert_eq!(
            (c.status, c.cookie),
            (Some(DmaStatus::WriteFault { addr: 0x4000 }), 1)
        );
    }

    #[test]
    fn a_wait_is_bounded_and_can_be_retried() {
        let bar = FakeBar::new();
        let hal = FakeHal::new();
        let mut e =
            PasidDmaEngine::new(hal.clone(), bar.dev(), 0, QueueMode::Shared, None).unwrap();
        let t = e.submit(&fill(), DmaTag::Untagged).unwrap();
        match e.wait(t, BOUND_NS) {
            // The fake clock moves 1 µs a look.
            Err(EngineError::Timeout { waited_ns }) => {
                assert!(
                    (BOUND_NS..BOUND_NS + 10_000).contains(&waited_ns),
                    "{waited_ns}"
                )
            }
            other => panic!("{other:?}"),
        }
        bar.complete(&hal, 0, STATUS_SUCCESS, false, 64, 0);
        assert_eq!(
            e.wait(t, BOUND_NS).map(|r| r.status),
            Ok(DmaStatus::Success)
        );
    }

    #[test]
    fn a_record_with_another_cookie_is_refused() {
        let bar = FakeBar::new();
        let hal = FakeHal::new();
        let mut e =
            PasidDmaEngine::new(hal.clone(), bar.dev(), 0, QueueMode::Shared, None).unwrap();
        let t = e.submit(&fill(), DmaTag::Untagged).unwrap();
        bar.complete(&hal, 0, STATUS_SUCCESS, false, 64, 0);
        hal.poke(e.record_page().as_u64() + 24, 99).unwrap();
        assert_eq!(
            e.wait(t, BOUND_NS),
            Err(EngineError::WrongCompletion {
                ticket: Ticket(0),
                got: 99
            })
        );
    }

    #[test]
    fn slots_run_out_and_free_up_as_tickets_are_waited_for() {
        let bar = FakeBar::new();
        let hal = FakeHal::new();
        let mut e =
            PasidDmaEngine::new(hal.clone(), bar.dev(), 0, QueueMode::Shared, None).unwrap();
        let page = e.record_page().as_u64();
        for i in 0..SLOTS {
            assert_eq!(e.submit(&fill(), DmaTag::Untagged), Ok(Ticket(i)));
        }
        assert_eq!(e.submit(&fill(), DmaTag::Untagged), Err(EngineError::Busy));
        assert_eq!(
            e.submit_descriptor(Descriptor {
                work: Work::Nop,
                tag: DmaTag::Untagged,
                completion: None,
                interrupt: None,
                cookie: 0
            }),
            Err(PasidDmaError::Busy { in_flight: SLOTS })
        );
        // Ticket 0 done (the device wrote its record in slot 0).
        hal.poke(page, u64::from(STATUS_SUCCESS)).unwrap();
        hal.poke(page + 8, 64).unwrap();
        assert_eq!(e.wait(Ticket(0), BOUND_NS).map(|r| r.bytes), Ok(64));
        assert_eq!(e.submit(&fill(), DmaTag::Untagged), Ok(Ticket(SLOTS)));
        assert_eq!(bar.portal(0)[5], page, "slot 0 again");
        assert_eq!(hal.peek(page), Some(0), "zeroed for its new ticket");
        assert_eq!(e.submit(&fill(), DmaTag::Untagged), Err(EngineError::Busy));
    }

    #[test]
    fn an_unrecorded_engine_runs_one_operation_from_the_queue_registers() {
        let bar = FakeBar::new();
        let hal = FakeHal::new();
        bar.set_completed(1, 5);
        let mut e =
            PasidDmaEngine::unrecorded(hal.clone(), bar.dev(), 1, QueueMode::Shared, None).unwrap();
        let page = e.record_page().as_u64();
        let imm = DmaOp::WriteImm {
            dst: 0x8000,
            value: 7,
            size: 8,
        };
        let t = e.submit(&imm, DmaTag::Untagged).unwrap();
        let d = bar.portal(1);
        assert_eq!(
            d[0] & u64::from(OP_FLAG_COMPLETION),
            0,
            "no record asked for"
        );
        assert_eq!((d[5], d[7]), (0, 0));
        assert_eq!(e.submit(&imm, DmaTag::Untagged), Err(EngineError::Busy));
        assert!(matches!(
            e.wait(t, BOUND_NS),
            Err(EngineError::Timeout { .. })
        ));
        bar.complete(&hal, 1, STATUS_SUCCESS, false, 8, 0);
        assert_eq!(
            e.wait(t, BOUND_NS),
            Ok(DmaResult {
                status: DmaStatus::Success,
                bytes: 8
            })
        );
        assert_eq!(hal.peek(page), Some(0), "the record page untouched");

        let t = e.submit(&imm, DmaTag::Untagged).unwrap();
        bar.complete(&hal, 1, STATUS_SUCCESS, false, 8, 0);
        bar.set64(0x200 + 0x20 + 24, 42);
        assert_eq!(
            e.wait(t, BOUND_NS),
            Err(EngineError::WrongCompletion {
                ticket: Ticket(1),
                got: 42
            })
        );
        let t = e.submit(&imm, DmaTag::Untagged).unwrap();
        bar.complete(&hal, 1, 0, false, 0, 0);
        assert_eq!(
            e.wait(t, BOUND_NS),
            Err(PasidDmaError::NotDone { ticket: 2 }.into()),
            "counted done, its registers still pending"
        );
    }

    /// Version 1.2's counters come from 0x030 in register order, the
    /// device-TLB flush sets CTRL bit 2 and keeps PAUSE, and PRI is CAP
    /// bit 20; a 1.1 device is still driven, without counters and with a
    /// typed refusal of the flush (issue 16, point 4).
    #[test]
    fn version_1_2_counters_and_flush_and_1_1_without_them() {
        let bar = FakeBar::new();
        let dev = bar.dev();
        bar.set32(0x004, 0x0001_0001);
        assert_eq!(dev.counters(), None);
        assert_eq!(
            dev.flush_device_tlb(),
            Err(PasidDmaError::TooOld {
                what: "flushing the device TLB",
                needs: (1, 2),
                has: (1, 1)
            })
        );
        assert_eq!(bar.get32(0x010), 0, "nothing written");
        assert!(!dev.has_pri());

        bar.set32(0x004, 0x0001_0002);
        bar.set32(0x008, 1 << 20 | 1 << 19);
        assert!(dev.has_pri());
        for i in 0..9 {
            bar.set32(0x030 + 4 * i, 0x100 + i as u32);
        }
        assert_eq!(
            dev.counters(),
            Some(crate::DeviceCounters {
                devtlb_hits: 0x100,
                devtlb_misses: 0x101,
                devtlb_invalidations: 0x102,
                devtlb_valid: 0x103,
                pri_requests: 0x104,
                pri_success: 0x105,
                pri_invalid: 0x106,
                pri_failure: 0x107,
                pri_overflows: 0x108,
            })
        );
        assert_eq!(bar.get32(0x054), 0, "nothing past the counters");
        bar.set32(0x010, 1 << 1); // paused
        dev.flush_device_tlb().unwrap();
        assert_eq!(bar.get32(0x010), 1 << 2 | 1 << 1, "flush, PAUSE kept");
        use alloc::string::ToString;
        assert_eq!(
            PasidDmaError::TooOld {
                what: "flushing the device TLB",
                needs: (1, 2),
                has: (1, 1)
            }
            .to_string(),
            "flushing the device TLB needs pasid-dma 1.2, the device is 1.1"
        );
    }

    #[test]
    fn driver_errors_convert_into_the_traits() {
        let cases = [
            (PasidDmaError::Busy { in_flight: 128 }, EngineError::Busy),
            (
                PasidDmaError::Timeout { waited_ns: 5 },
                EngineError::Timeout { waited_ns: 5 },
            ),
            (
                PasidDmaError::WrongCookie {
                    ticket: 3,
                    cookie: 4,
                },
                EngineError::WrongCompletion {
                    ticket: Ticket(3),
                    got: 4,
                },
            ),
            (
                PasidDmaError::Memory(HalError::NoMemory { bytes: 4096 }),
                EngineError::Memory(HalError::NoMemory { bytes: 4096 }),
            ),
            (
                PasidDmaError::NoSuchQueue(6),
                EngineError::Device {
                    what: "pasid-dma has no such work queue",
                    value: 6,
                },
            ),
        ];
        for (driver, engine) in cases {
            assert_eq!(EngineError::from(driver), engine);
        }
        use alloc::string::ToString;
        assert_eq!(
            PasidDmaError::NoSuchQueue(6).to_string(),
            "pasid-dma has 4 work queues, not a queue 6"
        );
        assert_eq!(
            PasidDmaError::NotPasidDma { id: 0x1234 }.to_string(),
            "identification register 0x1234: not pasid-dma"
        );
        assert_eq!(
            PasidDmaError::Busy { in_flight: 1 }.to_string(),
            "1 operation(s) in flight: no room for another until one is waited for"
        );
    }
}
