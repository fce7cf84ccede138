//! pasid-dma: the DMA engine with PASID-tagged work queues that the
//! project adds to QEMU (`qemu-run/patches/`, `docs/pasid-dma.md`).
//!
//! [`Descriptor`] and [`Completion`] are the in-memory formats, in
//! [`kernel::dma`]'s vocabulary ([`DmaOp`], [`DmaTag`], [`DmaStatus`]),
//! encoded and decoded here without hardware (host-tested). [`PasidDma`]
//! drives BAR0: identification, reset, the error register, queue
//! configuration, and submission through a queue's 64-byte portal.
//! [`PasidDmaEngine`] is the device as a [`kernel::dma::DmaEngine`] over
//! any [`kernel::hal::Hal`].
#![no_std]

extern crate alloc;

pub mod engine;
pub use engine::PasidDmaEngine;

use core::fmt;
use core::ptr::NonNull;
use kernel::dma::{DmaOp, DmaResult, DmaStatus, DmaTag, EngineError, Ticket};
use kernel::hal::HalError;
use tock_registers::interfaces::{ReadWriteable, Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};

pub const VENDOR: u16 = 0x1234;
pub const DEVICE: u16 = 0x5a51;
pub const ID: u32 = 0x5044_4d41;
pub const QUEUES: usize = 4;
pub const VECTORS: u16 = 8;
pub const DESCRIPTOR_BYTES: usize = 64;
pub const COMPLETION_BYTES: usize = 32;
/// The first version with a device TLB, PRI and their counters.
pub const VERSION_DEVTLB: (u16, u16) = (1, 2);

register_bitfields![u32,
    pub CAP [
        QUEUES OFFSET(0) NUMBITS(8) [],
        PASID_WIDTH OFFSET(8) NUMBITS(5) [],
        PASID OFFSET(16) NUMBITS(1) [],
        PASID_EXEC OFFSET(17) NUMBITS(1) [],
        PASID_PRIV OFFSET(18) NUMBITS(1) [],
        ATS OFFSET(19) NUMBITS(1) [],
        /// A PRI capability (version 1.2).
        PRI OFFSET(20) NUMBITS(1) [],
        QUEUE_DEPTH OFFSET(24) NUMBITS(8) []
    ],
    pub CTRL [
        RESET OFFSET(0) NUMBITS(1) [],
        /// Queues take descriptors but run none (a test hook).
        PAUSE OFFSET(1) NUMBITS(1) [],
        /// Drops every device-TLB entry (version 1.2; reads 0).
        DEVTLB_FLUSH OFFSET(2) NUMBITS(1) []
    ],
    pub ERROR [
        QUEUE_DISABLED OFFSET(0) NUMBITS(1) [],
        QUEUE_FULL OFFSET(1) NUMBITS(1) [],
        COMPLETION_FAULT OFFSET(2) NUMBITS(1) [],
        BUS_MASTER_OFF OFFSET(3) NUMBITS(1) []
    ],
    pub WQ_CFG [
        ENABLE OFFSET(0) NUMBITS(1) [],
        SHARED OFFSET(1) NUMBITS(1) [],
        PRIV OFFSET(2) NUMBITS(1) [],
        PASID_EN OFFSET(3) NUMBITS(1) []
    ],
    pub WQ_STATUS [
        PENDING OFFSET(0) NUMBITS(16) [],
        BUSY OFFSET(31) NUMBITS(1) []
    ]
];

register_structs! {
    pub WorkQueueRegs {
        (0x00 => pub cfg: ReadWrite<u32, WQ_CFG::Register>),
        (0x04 => pub pasid: ReadWrite<u32>),
        (0x08 => pub status: ReadOnly<u32, WQ_STATUS::Register>),
        (0x0c => pub completed: ReadOnly<u32>),
        (0x10 => _reserved),
        (0x20 => @END),
    },
    pub Portal {
        (0x00 => pub words: [WriteOnly<u64>; 8]),
        (0x40 => @END),
    },
    /// A queue's last completion, laid out as a completion record.
    pub LastCompletion {
        (0x00 => pub words: [ReadOnly<u64>; 4]),
        (0x20 => @END),
    },
    pub PasidDmaRegs {
        (0x000 => pub id: ReadOnly<u32>),
        (0x004 => pub version: ReadOnly<u32>),
        (0x008 => pub cap: ReadOnly<u32, CAP::Register>),
        (0x00c => pub max_len: ReadOnly<u32>),
        (0x010 => pub ctrl: ReadWrite<u32, CTRL::Register>),
        (0x014 => pub error: ReadWrite<u32, ERROR::Register>),
        (0x018 => pub error_queue: ReadOnly<u32>),
        (0x01c => _reserved0),
        (0x020 => pub error_addr_lo: ReadOnly<u32>),
        (0x024 => pub error_addr_hi: ReadOnly<u32>),
        (0x028 => _reserved1),
        /// Version 1.2: the device TLB's and the page request
        /// interface's counters, cleared by CTRL.RESET.
        (0x030 => pub counters: [ReadOnly<u32>; 9]),
        (0x054 => _reserved1b),
        (0x100 => pub wq: [WorkQueueRegs; QUEUES]),
        (0x180 => _reserved2),
        (0x200 => pub last: [LastCompletion; QUEUES]),
        (0x280 => _reserved3),
        (0x1000 => pub portal: [Portal; QUEUES]),
        (0x1100 => @END),
    }
}

/// What a descriptor asks for: one of the operations every DMA engine
/// offers ([`DmaOp`]), or what only this device has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Work {
    Op(DmaOp),
    Nop,
    /// Any opcode number, for tests of the device's checks.
    Raw {
        opcode: u8,
        len: u64,
    },
}

impl From<DmaOp> for Work {
    fn from(op: DmaOp) -> Work {
        Work::Op(op)
    }
}

/// Opcodes (descriptor bits [7:0]).
pub const OP_NOP: u8 = 0;
pub const OP_COPY: u8 = 1;
pub const OP_FILL: u8 = 2;
pub const OP_COMPARE: u8 = 3;
pub const OP_WRITE_IMM: u8 = 4;

impl Work {
    /// The opcode and the source, destination, length and pattern fields.
    fn fields(&self) -> (u8, u64, u64, u64, u64) {
        match *self {
            Work::Nop => (OP_NOP, 0, 0, 0, 0),
            Work::Raw { opcode, len } => (opcode, 0, 0, len, 0),
            Work::Op(DmaOp::Copy { src, dst, len }) => (OP_COPY, src, dst, len, 0),
            Work::Op(DmaOp::Fill { dst, len, pattern }) => (OP_FILL, 0, dst, len, pattern),
            Work::Op(DmaOp::Compare { a, b, len }) => (OP_COMPARE, a, b, len, 0),
            // The length field holds the size.
            Work::Op(DmaOp::WriteImm { dst, value, size }) => {
                (OP_WRITE_IMM, 0, dst, u64::from(size), value)
            }
        }
    }
}

/// Error register bits (RW1C).
pub const ERR_QUEUE_DISABLED: u32 = 1 << 0;
pub const ERR_QUEUE_FULL: u32 = 1 << 1;
pub const ERR_COMPLETION_FAULT: u32 = 1 << 2;
pub const ERR_BUS_MASTER_OFF: u32 = 1 << 3;

pub const OP_FLAG_PASID: u32 = 1 << 8;
pub const OP_FLAG_PRIV: u32 = 1 << 9;
pub const OP_FLAG_INTR: u32 = 1 << 10;
pub const OP_FLAG_COMPLETION: u32 = 1 << 11;

/// A descriptor, ready for a portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub work: Work,
    /// Used by queues in shared mode; dedicated queues use their own.
    pub tag: DmaTag,
    /// Device address of the 32-byte completion record (32-byte aligned);
    /// `None` writes no record (the queue's last-completion registers
    /// still tell the outcome).
    pub completion: Option<u64>,
    /// MSI-X vector to send on completion.
    pub interrupt: Option<u16>,
    /// Copied into the completion record.
    pub cookie: u64,
}

impl Descriptor {
    /// The eight little-endian qwords, in portal order (the last submits).
    pub fn encode(&self) -> [u64; 8] {
        let (opcode, src, dst, len, pattern) = self.work.fields();
        let mut flags = u32::from(opcode);
        if self.completion.is_some() {
            flags |= OP_FLAG_COMPLETION;
        }
        let mut pasid = 0;
        if let DmaTag::Pasid {
            pasid: p,
            privileged,
        } = self.tag
        {
            flags |= OP_FLAG_PASID;
            if privileged {
                flags |= OP_FLAG_PRIV;
            }
            pasid = p.0;
        }
        let vector = match self.interrupt {
            Some(v) => {
                flags |= OP_FLAG_INTR;
                u64::from(v)
            }
            None => 0,
        };
        [
            u64::from(flags) | u64::from(pasid) << 32,
            src,
            dst,
            len,
            pattern,
            self.completion.unwrap_or(0),
            vector,
            self.cookie,
        ]
    }
}

/// Completion status codes (record byte 0); 0 means not done yet.
pub const STATUS_SUCCESS: u8 = 1;
pub const STATUS_READ_FAULT: u8 = 2;
pub const STATUS_WRITE_FAULT: u8 = 3;
pub const STATUS_INVALID: u8 = 4;
/// The platform gave no address space for the PASID (the record was
/// written untagged).
pub const STATUS_PASID_UNSUPPORTED: u8 = 5;
/// PASID use is not enabled in the device's PASID capability.
pub const STATUS_PASID_DISABLED: u8 = 6;
/// A page request was answered Invalid Request (version 1.2).
pub const STATUS_PAGE_REQUEST_INVALID: u8 = 7;
/// A page request was answered Response Failure (version 1.2).
pub const STATUS_PAGE_REQUEST_FAILED: u8 = 8;

/// The device TLB's and the page request interface's counters (version
/// 1.2), in register order from 0x030.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// 4 KiB pieces served from the device TLB.
    pub devtlb_hits: u32,
    /// Translation requests sent.
    pub devtlb_misses: u32,
    /// Invalidations received from the IOMMU (any size).
    pub devtlb_invalidations: u32,
    /// Entries valid now.
    pub devtlb_valid: u32,
    /// Page requests the IOMMU accepted.
    pub pri_requests: u32,
    /// Responses received, by code.
    pub pri_success: u32,
    pub pri_invalid: u32,
    pub pri_failure: u32,
    /// Page requests the IOMMU refused (its queue full or overflowed).
    pub pri_overflows: u32,
}

impl DeviceCounters {
    fn from_registers(r: [u32; 9]) -> DeviceCounters {
        DeviceCounters {
            devtlb_hits: r[0],
            devtlb_misses: r[1],
            devtlb_invalidations: r[2],
            devtlb_valid: r[3],
            pri_requests: r[4],
            pri_success: r[5],
            pri_invalid: r[6],
            pri_failure: r[7],
            pri_overflows: r[8],
        }
    }
}

/// A completion record as the device wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// `None` while the record is still zero: not completed.
    pub status: Option<DmaStatus>,
    pub bytes: u64,
    pub cookie: u64,
}

impl Completion {
    pub fn decode(r: &[u8; COMPLETION_BYTES]) -> Completion {
        let q = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&r[i..i + 8]);
            u64::from_le_bytes(b)
        };
        // Faults: the address that faulted; compare: the offset of the
        // first difference (with byte 1 set).
        let at = q(16);
        let status = match r[0] {
            0 => None,
            STATUS_SUCCESS if r[1] != 0 => Some(DmaStatus::Differs { offset: at }),
            STATUS_SUCCESS => Some(DmaStatus::Success),
            STATUS_READ_FAULT => Some(DmaStatus::ReadFault { addr: at }),
            STATUS_WRITE_FAULT => Some(DmaStatus::WriteFault { addr: at }),
            STATUS_INVALID => Some(DmaStatus::Invalid),
            STATUS_PASID_UNSUPPORTED => Some(DmaStatus::PasidUnsupported),
            STATUS_PASID_DISABLED => Some(DmaStatus::PasidDisabled),
            STATUS_PAGE_REQUEST_INVALID => Some(DmaStatus::PageRequestInvalid { addr: at }),
            STATUS_PAGE_REQUEST_FAILED => Some(DmaStatus::PageRequestFailed { addr: at }),
            c => Some(DmaStatus::Other(c)),
        };
        Completion {
            status,
            bytes: q(8),
            cookie: q(24),
        }
    }

    pub fn done(&self) -> bool {
        self.status.is_some()
    }

    /// The operation's result as [`kernel::dma::DmaEngine`] reports it;
    /// `None` until it is done.
    pub fn result(&self) -> Option<DmaResult> {
        let status = self.status?;
        Some(DmaResult {
            status,
            bytes: self.bytes,
        })
    }
}

/// What went wrong, in the driver's terms; converts into the trait's
/// [`EngineError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasidDmaError {
    /// The identification register is not pasid-dma's.
    NotPasidDma {
        id: u32,
    },
    /// The device has [`QUEUES`] work queues.
    NoSuchQueue(usize),
    /// Every completion slot is taken by an operation not yet waited for
    /// (unrecorded: the one operation allowed is in flight).
    Busy {
        in_flight: u64,
    },
    Timeout {
        waited_ns: u64,
    },
    /// The completion found for `ticket` carries another cookie.
    WrongCookie {
        ticket: u64,
        cookie: u64,
    },
    /// The queue counted `ticket` done, yet its last completion reads
    /// pending.
    NotDone {
        ticket: u64,
    },
    /// The completion records' memory.
    Memory(HalError),
    /// What was asked needs a newer device version (`needs`) than this
    /// one (`has`), as (major, minor).
    TooOld {
        what: &'static str,
        needs: (u16, u16),
        has: (u16, u16),
    },
}

impl From<HalError> for PasidDmaError {
    fn from(e: HalError) -> PasidDmaError {
        PasidDmaError::Memory(e)
    }
}

impl fmt::Display for PasidDmaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            PasidDmaError::NotPasidDma { id } => {
                write!(f, "identification register {id:#x}: not pasid-dma")
            }
            PasidDmaError::NoSuchQueue(q) => {
                write!(f, "pasid-dma has {QUEUES} work queues, not a queue {q}")
            }
            PasidDmaError::Busy { in_flight } => write!(
                f,
                "{in_flight} operation(s) in flight: no room for another until one is waited for"
            ),
            PasidDmaError::Timeout { waited_ns } => {
                write!(f, "no completion within {} ms", waited_ns / 1_000_000)
            }
            PasidDmaError::WrongCookie { ticket, cookie } => write!(
                f,
                "the completion of ticket {ticket} carries cookie {cookie}"
            ),
            PasidDmaError::NotDone { ticket } => write!(
                f,
                "the queue counted ticket {ticket} done, yet its last completion reads pending"
            ),
            PasidDmaError::Memory(e) => write!(f, "completion records: {e}"),
            PasidDmaError::TooOld { what, needs, has } => write!(
                f,
                "{what} needs pasid-dma {}.{}, the device is {}.{}",
                needs.0, needs.1, has.0, has.1
            ),
        }
    }
}

impl From<PasidDmaError> for EngineError {
    fn from(e: PasidDmaError) -> EngineError {
        match e {
            PasidDmaError::NotPasidDma { id } => EngineError::Device {
                what: "not pasid-dma: its identification register reads",
                value: u64::from(id),
            },
            PasidDmaError::NoSuchQueue(q) => EngineError::Device {
                what: "pasid-dma has no such work queue",
                value: q as u64,
            },
            PasidDmaError::Busy { .. } => EngineError::Busy,
            PasidDmaError::Timeout { waited_ns } => EngineError::Timeout { waited_ns },
            PasidDmaError::WrongCookie { ticket, cookie } => EngineError::WrongCompletion {
                ticket: Ticket(ticket),
                got: cookie,
            },
            PasidDmaError::NotDone { ticket } => EngineError::Device {
                what: "pasid-dma: counted done, its last completion pending: ticket",
                value: ticket,
            },
            PasidDmaError::Memory(e) => EngineError::Memory(e),
            PasidDmaError::TooOld { has, .. } => EngineError::Device {
                what: "pasid-dma too old (1.2 needed): its version reads",
                value: u64::from(has.0) << 16 | u64::from(has.1),
            },
        }
    }
}

/// How a work queue tags its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMode {
    /// Each descriptor's own tag.
    Shared,
    /// Every request tagged with this (or untagged).
    Dedicated(DmaTag),
}

pub struct PasidDma {
    regs: NonNull<PasidDmaRegs>,
}

#[allow(unsafe_code)] // the MMIO binding of BAR0
                      // SAFETY: owns its BAR0 mapping; callers serialise access.
unsafe impl Send for PasidDma {}

#[allow(unsafe_code)] // the MMIO binding of BAR0: `new` and `regs`
impl PasidDma {
    /// # Safety
    /// `bar0` must be the mapped BAR0 of a pasid-dma function this value
    /// alone drives (16 KiB of device memory).
    pub unsafe fn new(bar0: usize) -> Result<Self, PasidDmaError> {
        let d = PasidDma {
            // SAFETY: the caller vouches for a valid, non-null MMIO address.
            regs: unsafe { NonNull::new_unchecked(bar0 as *mut PasidDmaRegs) },
        };
        let id = d.regs().id.get();
        if id != ID {
            return Err(PasidDmaError::NotPasidDma { id });
        }
        Ok(d)
    }

    pub fn regs(&self) -> &PasidDmaRegs {
        // SAFETY: `new`'s contract.
        unsafe { self.regs.as_ref() }
    }
}

impl PasidDma {
    pub fn version(&self) -> (u16, u16) {
        let v = self.regs().version.get();
        ((v >> 16) as u16, v as u16)
    }

    /// The PASID width the device supports (0: no PASID capability).
    pub fn pasid_width(&self) -> u8 {
        let cap = &self.regs().cap;
        if cap.is_set(CAP::PASID) {
            cap.read(CAP::PASID_WIDTH) as u8
        } else {
            0
        }
    }

    /// A PRI capability (version 1.2 devices started with `pri=on`).
    pub fn has_pri(&self) -> bool {
        self.regs().cap.is_set(CAP::PRI)
    }

    /// The device TLB's and page request counters; `None` on a device
    /// before version 1.2, which has neither.
    pub fn counters(&self) -> Option<DeviceCounters> {
        if self.version() < VERSION_DEVTLB {
            return None;
        }
        let c = &self.regs().counters;
        Some(DeviceCounters::from_registers(core::array::from_fn(|i| {
            c[i].get()
        })))
    }

    /// Drops every entry of the device TLB (version 1.2): how a test
    /// makes the next access miss. PAUSE keeps its state.
    pub fn flush_device_tlb(&self) -> Result<(), PasidDmaError> {
        let has = self.version();
        if has < VERSION_DEVTLB {
            return Err(PasidDmaError::TooOld {
                what: "flushing the device TLB",
                needs: VERSION_DEVTLB,
                has,
            });
        }
        self.regs().ctrl.modify(CTRL::DEVTLB_FLUSH::SET);
        Ok(())
    }

    pub fn queue_depth(&self) -> u32 {
        self.regs().cap.read(CAP::QUEUE_DEPTH)
    }

    pub fn max_len(&self) -> u64 {
        u64::from(self.regs().max_len.get())
    }

    /// Drops every queued descriptor, disables the queues, clears errors.
    pub fn reset(&self) {
        self.regs().ctrl.write(CTRL::RESET::SET);
    }

    /// Paused, the queues keep what is submitted and run nothing until
    /// resumed: how a test fills a queue or watches it busy.
    pub fn set_paused(&self, paused: bool) {
        self.regs().ctrl.write(if paused {
            CTRL::PAUSE::SET
        } else {
            CTRL::PAUSE::CLEAR
        });
    }

    pub fn paused(&self) -> bool {
        self.regs().ctrl.is_set(CTRL::PAUSE)
    }

    fn queue(&self, q: usize) -> Result<&WorkQueueRegs, PasidDmaError> {
        self.regs().wq.get(q).ok_or(PasidDmaError::NoSuchQueue(q))
    }

    pub fn configure_queue(&self, q: usize, mode: QueueMode) -> Result<(), PasidDmaError> {
        let wq = self.queue(q)?;
        wq.cfg.set(0);
        match mode {
            QueueMode::Shared => wq.cfg.write(WQ_CFG::ENABLE::SET + WQ_CFG::SHARED::SET),
            QueueMode::Dedicated(DmaTag::Untagged) => wq.cfg.write(WQ_CFG::ENABLE::SET),
            QueueMode::Dedicated(DmaTag::Pasid { pasid, privileged }) => {
                wq.pasid.set(pasid.0);
                wq.cfg.write(
                    WQ_CFG::ENABLE::SET
                        + WQ_CFG::PASID_EN::SET
                        + if privileged {
                            WQ_CFG::PRIV::SET
                        } else {
                            WQ_CFG::PRIV::CLEAR
                        },
                );
            }
        }
        Ok(())
    }

    pub fn disable_queue(&self, q: usize) -> Result<(), PasidDmaError> {
        self.queue(q)?.cfg.modify(WQ_CFG::ENABLE::CLEAR);
        Ok(())
    }

    /// Descriptors queued or running on `q`.
    pub fn pending(&self, q: usize) -> Result<u32, PasidDmaError> {
        Ok(self.queue(q)?.status.read(WQ_STATUS::PENDING))
    }

    /// The queue has descriptors waiting or running.
    pub fn busy(&self, q: usize) -> Result<bool, PasidDmaError> {
        Ok(self.queue(q)?.status.is_set(WQ_STATUS::BUSY))
    }

    pub fn completed(&self, q: usize) -> Result<u32, PasidDmaError> {
        Ok(self.queue(q)?.completed.get())
    }

    /// The last completion of queue `q`, whether or not it was recorded
    /// in memory (device version 1.1 and later).
    pub fn last_completion(&self, q: usize) -> Result<Completion, PasidDmaError> {
        self.queue(q)?;
        let mut r = [0u8; COMPLETION_BYTES];
        for (i, w) in self.regs().last[q].words.iter().enumerate() {
            r[8 * i..8 * i + 8].copy_from_slice(&w.get().to_le_bytes());
        }
        Ok(Completion::decode(&r))
    }

    /// Writes `d` to queue `q`'s portal; the last qword submits it.
    pub fn submit(&self, q: usize, d: &Descriptor) -> Result<(), PasidDmaError> {
        self.queue(q)?;
        let portal = &self.regs().portal[q];
        for (reg, word) in portal.words.iter().zip(d.encode()) {
            reg.set(word);
        }
        Ok(())
    }

    /// The error register (queue-disabled, queue-full, completion-fault,
    /// bus-master-off bits), the queue it last named, and the completion
    /// address that last faulted.
    pub fn errors(&self) -> (u32, u32, u64) {
        let r = self.regs();
        // The error bits first: the device sets a bit and its queue and
        // address together, so once a bit reads set they are there; read
        // before the bit, they could predate it (a lost fault address).
        let bits = r.error.get();
        let addr = u64::from(r.error_addr_hi.get()) << 32 | u64::from(r.error_addr_lo.get());
        (bits, r.error_queue.get(), addr)
    }

    pub fn clear_errors(&self, bits: u32) {
        self.regs().error.set(bits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernel::iommu::pasid::Pasid;

    #[test]
    fn layout() {
        assert_eq!(core::mem::size_of::<WorkQueueRegs>(), 0x20);
        assert_eq!(core::mem::size_of::<Portal>(), 0x40);
        assert_eq!(core::mem::size_of::<LastCompletion>(), 0x20);
        assert_eq!(core::mem::size_of::<PasidDmaRegs>(), 0x1100);
    }

    #[test]
    fn descriptor_encoding() {
        let d = Descriptor {
            work: DmaOp::Copy {
                src: 0x1000,
                dst: 0x2000,
                len: 0x30,
            }
            .into(),
            tag: DmaTag::Pasid {
                pasid: Pasid(0xabcde),
                privileged: true,
            },
            completion: Some(0x3000),
            interrupt: Some(5),
            cookie: 0x1122_3344,
        };
        assert_eq!(
            d.encode(),
            [
                0x000a_bcde_0000_0f01,
                0x1000,
                0x2000,
                0x30,
                0,
                0x3000,
                5,
                0x1122_3344
            ]
        );
        let w = Descriptor {
            work: DmaOp::WriteImm {
                dst: 8,
                value: 0xfeed,
                size: 2,
            }
            .into(),
            tag: DmaTag::Untagged,
            completion: Some(0x40),
            interrupt: None,
            cookie: 0,
        };
        assert_eq!(w.encode()[..5], [0x804, 0, 8, 2, 0xfeed]);
        let unrecorded = Descriptor {
            completion: None,
            ..w
        };
        assert_eq!(unrecorded.encode()[0], 0x004, "no COMPLETION flag");
        assert_eq!(unrecorded.encode()[5], 0);
    }

    #[test]
    fn every_operation_has_its_opcode_and_fields() {
        let plain = |work: Work| {
            let w = Descriptor {
                work,
                tag: DmaTag::Untagged,
                completion: None,
                interrupt: None,
                cookie: 9,
            }
            .encode();
            assert_eq!(w[5..], [0, 0, 9], "{work:?}");
            (w[0], w[1], w[2], w[3], w[4])
        };
        assert_eq!(plain(Work::Nop), (0, 0, 0, 0, 0));
        assert_eq!(
            plain(Work::Raw {
                opcode: 0x7f,
                len: 8
            }),
            (0x7f, 0, 0, 8, 0)
        );
        let op = |op: DmaOp| plain(op.into());
        assert_eq!(
            op(DmaOp::Copy {
                src: 1,
                dst: 2,
                len: 3
            }),
            (1, 1, 2, 3, 0)
        );
        assert_eq!(
            op(DmaOp::Fill {
                dst: 2,
                len: 3,
                pattern: 0xaa55
            }),
            (2, 0, 2, 3, 0xaa55)
        );
        assert_eq!(op(DmaOp::Compare { a: 1, b: 2, len: 3 }), (3, 1, 2, 3, 0));
        assert_eq!(
            op(DmaOp::WriteImm {
                dst: 2,
                value: 0x1234,
                size: 4
            }),
            (4, 0, 2, 4, 0x1234)
        );
        // A PASID tag without privilege: the PASID flag only.
        let t = Descriptor {
            work: Work::Nop,
            tag: DmaTag::Pasid {
                pasid: Pasid(3),
                privileged: false,
            },
            completion: None,
            interrupt: None,
            cookie: 0,
        };
        assert_eq!(t.encode()[0], 3 << 32 | u64::from(OP_FLAG_PASID));
    }

    fn record(status: u8, differs: u8, bytes: u64, at: u64, cookie: u64) -> [u8; 32] {
        let mut r = [0u8; COMPLETION_BYTES];
        r[0] = status;
        r[1] = differs;
        r[8..16].copy_from_slice(&bytes.to_le_bytes());
        r[16..24].copy_from_slice(&at.to_le_bytes());
        r[24..32].copy_from_slice(&cookie.to_le_bytes());
        r
    }

    #[test]
    fn completion_decoding() {
        let pending = Completion::decode(&[0; COMPLETION_BYTES]);
        assert_eq!(pending.status, None);
        assert!(!pending.done());
        assert_eq!(pending.result(), None);
        let c = Completion::decode(&record(3, 0, 0x1000, 0xdead_b000, 7));
        assert_eq!(
            c,
            Completion {
                status: Some(DmaStatus::WriteFault { addr: 0xdead_b000 }),
                bytes: 0x1000,
                cookie: 7
            }
        );
        assert_eq!(
            c.result(),
            Some(DmaResult {
                status: DmaStatus::WriteFault { addr: 0xdead_b000 },
                bytes: 0x1000
            })
        );
        let status = |code, differs| Completion::decode(&record(code, differs, 8, 0x40, 1)).status;
        assert_eq!(status(1, 0), Some(DmaStatus::Success));
        assert_eq!(status(1, 1), Some(DmaStatus::Differs { offset: 0x40 }));
        assert_eq!(status(2, 0), Some(DmaStatus::ReadFault { addr: 0x40 }));
        assert_eq!(status(4, 0), Some(DmaStatus::Invalid));
        assert_eq!(status(5, 0), Some(DmaStatus::PasidUnsupported));
        assert_eq!(status(6, 0), Some(DmaStatus::PasidDisabled));
        assert_eq!(
            status(7, 0),
            Some(DmaStatus::PageRequestInvalid { addr: 0x40 })
        );
        assert_eq!(
            status(8, 0),
            Some(DmaStatus::PageRequestFailed { addr: 0x40 })
        );
        assert_eq!(status(9, 0), Some(DmaStatus::Other(9)));
    }
}
