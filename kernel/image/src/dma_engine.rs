//! The pasid-dma device behind the [`kernel::dma::DmaEngine`] trait: one
//! work queue, completion records in a page of RAM (slot per ticket),
//! optionally an MSI-X vector per completion.
//!
//! An engine made [`PasidDmaEngine::unrecorded`] writes no records: it
//! runs one operation at a time and reads the outcome from the queue's
//! last-completion registers. The IOMMU conformance suite uses it, so
//! that the device's only DMA is the operation under test, whatever
//! domain (blocked, or without the record page) serves the request.
use crate::arch;
use crate::memory::DmaBuffer;
use kernel::dma::{DmaEngine, DmaOp, DmaResult, DmaStatus, DmaTag, EngineError, Ticket};
use kernel::hal::HalError;
use kernel::mm::PAGE_SIZE;
use pasid_dma::{Completion, Descriptor, PasidDma, QueueMode, COMPLETION_BYTES};

/// Completion slots in the record page; also the most operations in flight.
const SLOTS: u64 = PAGE_SIZE / COMPLETION_BYTES as u64;

pub struct PasidDmaEngine {
    dev: PasidDma,
    queue: usize,
    records: DmaBuffer,
    next: u64,
    /// Oldest ticket not yet waited for.
    oldest: u64,
    interrupt: Option<u16>,
    /// Unrecorded mode: the queue's completed count before the operation
    /// in flight.
    unrecorded: Option<u32>,
}

impl PasidDmaEngine {
    /// Drives queue `queue` of the device at `bar0` in `mode`; completions
    /// send MSI-X vector `interrupt` if given.
    pub fn new(
        dev: PasidDma,
        queue: usize,
        mode: QueueMode,
        interrupt: Option<u16>,
    ) -> Result<Self, EngineError> {
        let records = DmaBuffer::new(PAGE_SIZE as usize, PAGE_SIZE)
            .map_err(|_| EngineError::Memory(HalError::NoMemory { bytes: PAGE_SIZE }))?;
        dev.configure_queue(queue, mode)
            .map_err(EngineError::from)?;
        Ok(PasidDmaEngine {
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
        dev: PasidDma,
        queue: usize,
        mode: QueueMode,
        interrupt: Option<u16>,
    ) -> Result<Self, EngineError> {
        let mut e = Self::new(dev, queue, mode, interrupt)?;
        e.unrecorded = Some(e.completed()?);
        Ok(e)
    }

    fn completed(&self) -> Result<u32, EngineError> {
        self.dev
            .completed(self.queue)
            .map_err(EngineError::from)
    }

    fn submit_unrecorded_op(&mut self, d: Descriptor) -> Result<Ticket, EngineError> {
        if self.next != self.oldest {
            return Err(EngineError::Busy);
        }
        self.unrecorded = Some(self.completed()?);
        self.push(d, None)
    }

    /// Submits `d` as the next ticket, with its record at `completion`.
    fn push(&mut self, mut d: Descriptor, completion: Option<u64>) -> Result<Ticket, EngineError> {
        let t = self.next;
        d.completion = completion;
        d.cookie = t;
        self.dev
            .submit(self.queue, &d)
            .map_err(EngineError::from)?;
        self.next += 1;
        Ok(Ticket(t))
    }

    fn wait_unrecorded(
        &mut self,
        t: Ticket,
        before: u32,
        bound_ns: u64,
    ) -> Result<Completion, EngineError> {
        let t0 = arch::now_ns();
        while self.completed()? == before {
            let waited = arch::now_ns() - t0;
            if waited > bound_ns {
                return Err(EngineError::Timeout { waited_ns: waited });
            }
            core::hint::spin_loop();
        }
        self.oldest = self.next;
        let c = self
            .dev
            .last_completion(self.queue)
            .map_err(EngineError::from)?;
        if c.cookie != t.0 {
            return Err(EngineError::WrongCompletion {
                ticket: t,
                got: c.cookie,
            });
        }
        Ok(c)
    }

    /// The device address of the completion-record page (to map it where
    /// the engine's requests are translated).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub fn record_page(&self) -> u64 {
        self.records.phys().as_u64()
    }

    pub fn device(&self) -> &PasidDma {
        &self.dev
    }

    /// The device address of ticket `t`'s record.
    fn slot(&self, t: u64) -> (usize, u64) {
        let off = ((t % SLOTS) as usize) * COMPLETION_BYTES;
        (off, self.records.phys().as_u64() + off as u64)
    }

    /// Submits a raw descriptor (for tests of the device's own checks);
    /// its completion record and cookie are filled in here.
    pub fn submit_descriptor(&mut self, d: Descriptor) -> Result<Ticket, EngineError> {
        if self.next - self.oldest >= SLOTS {
            return Err(EngineError::Busy);
        }
        let (off, iova) = self.slot(self.next);
        self.records.write_volatile(off, &[0; COMPLETION_BYTES]);
        self.push(d, Some(iova))
    }

    /// Submits `d` exactly as given (its completion address and cookie
    /// too), for tests of what the device does with bad ones.
    pub fn submit_unrecorded(&mut self, d: &Descriptor) -> Result<(), EngineError> {
        self.dev
            .submit(self.queue, d)
            .map_err(EngineError::from)
    }

    /// The completion record of `t` as the device left it.
    pub fn record(&self, t: Ticket) -> Completion {
        let mut r = [0u8; COMPLETION_BYTES];
        self.records.read_volatile(self.slot(t.0).0, &mut r);
        Completion::decode(&r)
    }

    /// Waits (bounded) for `t`'s record and returns it whole.
    pub fn wait_record(&mut self, t: Ticket, bound_ns: u64) -> Result<Completion, EngineError> {
        let t0 = arch::now_ns();
        loop {
            let c = self.record(t);
            if c.done() {
                if t.0 == self.oldest {
                    self.oldest += 1;
                }
                if c.cookie != t.0 {
                    return Err(EngineError::WrongCompletion {
                        ticket: t,
                        got: c.cookie,
                    });
                }
                return Ok(c);
            }
            let waited = arch::now_ns() - t0;
            if waited > bound_ns {
                return Err(EngineError::Timeout { waited_ns: waited });
            }
            core::hint::spin_loop();
        }
    }
}

/// The trait's view of a completion record (one the wait saw done).
pub fn to_result(c: &Completion) -> DmaResult {
    c.result().unwrap_or(DmaResult {
        status: DmaStatus::Other(0),
        bytes: c.bytes,
    })
}

impl DmaEngine for PasidDmaEngine {
    fn submit(&mut self, op: &DmaOp, tag: DmaTag) -> Result<Ticket, EngineError> {
        let d = Descriptor {
            work: (*op).into(),
            tag,
            completion: None,
            interrupt: self.interrupt,
            cookie: 0,
        };
        if self.unrecorded.is_some() {
            self.submit_unrecorded_op(d)
        } else {
            self.submit_descriptor(d)
        }
    }

    fn wait(&mut self, ticket: Ticket, bound_ns: u64) -> Result<DmaResult, EngineError> {
        match self.unrecorded {
            Some(before) => self.wait_unrecorded(ticket, before, bound_ns),
            None => self.wait_record(ticket, bound_ns),
        }
        .map(|c| to_result(&c))
    }
}
