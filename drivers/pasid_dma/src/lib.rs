//! pasid-dma: the DMA engine with PASID-tagged work queues that the
//! project adds to QEMU (`qemu-run/patches/`, `docs/pasid-dma.md`).
//!
//! [`Descriptor`] and [`Completion`] are the in-memory formats, encoded
//! and decoded here without hardware (host-tested). [`PasidDma`] drives
//! BAR0: identification, reset, the error register, queue configuration,
//! and submission through a queue's 64-byte portal.
#![no_std]
// `PasidDma::new` binds BAR0 (MMIO): the crate's only `unsafe`.
#![allow(unsafe_code)]

use core::ptr::NonNull;
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

register_bitfields![u32,
    pub CAP [
        QUEUES OFFSET(0) NUMBITS(8) [],
        PASID_WIDTH OFFSET(8) NUMBITS(5) [],
        PASID OFFSET(16) NUMBITS(1) [],
        PASID_EXEC OFFSET(17) NUMBITS(1) [],
        PASID_PRIV OFFSET(18) NUMBITS(1) [],
        ATS OFFSET(19) NUMBITS(1) [],
        QUEUE_DEPTH OFFSET(24) NUMBITS(8) []
    ],
    pub CTRL [
        RESET OFFSET(0) NUMBITS(1) [],
        /// Queues take descriptors but run none (a test hook).
        PAUSE OFFSET(1) NUMBITS(1) []
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
        (0x100 => pub wq: [WorkQueueRegs; QUEUES]),
        (0x180 => _reserved2),
        (0x200 => pub last: [LastCompletion; QUEUES]),
        (0x280 => _reserved3),
        (0x1000 => pub portal: [Portal; QUEUES]),
        (0x1100 => @END),
    }
}

/// What a descriptor asks the engine to do. Addresses are as the device
/// sees them (IOVAs once an IOMMU translates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Nop,
    Copy {
        src: u64,
        dst: u64,
        len: u64,
    },
    /// `pattern` repeats from the first destination byte, little-endian.
    Fill {
        dst: u64,
        len: u64,
        pattern: u64,
    },
    /// Equal or not; the completion says where they first differ.
    Compare {
        a: u64,
        b: u64,
        len: u64,
    },
    /// `size` of 1, 2, 4 or 8 bytes of `value`, little-endian.
    WriteImm {
        dst: u64,
        value: u64,
        size: u8,
    },
    /// Any opcode number, for tests of the device's checks.
    Raw {
        opcode: u8,
        len: u64,
    },
}

/// How a request is tagged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tag {
    /// Requester id only.
    Untagged,
    /// Requester id and PASID, privileged or not.
    Pasid { pasid: u32, privileged: bool },
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
    pub op: Op,
    /// Used by queues in shared mode; dedicated queues use their own.
    pub tag: Tag,
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
        let (opcode, src, dst, len, pattern) = match self.op {
            Op::Nop => (0u8, 0, 0, 0, 0),
            Op::Copy { src, dst, len } => (1, src, dst, len, 0),
            Op::Fill { dst, len, pattern } => (2, 0, dst, len, pattern),
            Op::Compare { a, b, len } => (3, a, b, len, 0),
            Op::WriteImm { dst, value, size } => (4, 0, dst, u64::from(size), value),
            Op::Raw { opcode, len } => (opcode, 0, 0, len, 0),
        };
        let mut flags = u32::from(opcode);
        if self.completion.is_some() {
            flags |= OP_FLAG_COMPLETION;
        }
        let mut pasid = 0;
        if let Tag::Pasid {
            pasid: p,
            privileged,
        } = self.tag
        {
            flags |= OP_FLAG_PASID;
            if privileged {
                flags |= OP_FLAG_PRIV;
            }
            pasid = p;
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

/// Completion status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The record is still zero: not completed.
    Pending,
    Success,
    ReadFault,
    WriteFault,
    InvalidDescriptor,
    /// The platform gave no address space for the PASID (the record was
    /// written untagged).
    PasidUnsupported,
    /// PASID use is not enabled in the device's PASID capability.
    PasidDisabled,
    Unknown(u8),
}

impl Status {
    pub fn from_code(c: u8) -> Status {
        match c {
            0 => Status::Pending,
            1 => Status::Success,
            2 => Status::ReadFault,
            3 => Status::WriteFault,
            4 => Status::InvalidDescriptor,
            5 => Status::PasidUnsupported,
            6 => Status::PasidDisabled,
            c => Status::Unknown(c),
        }
    }
}

/// A completion record as the device wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    pub status: Status,
    /// Compare: the operands differ.
    pub differs: bool,
    pub bytes: u64,
    /// Faults: the address that faulted. Compare: the offset of the first
    /// difference.
    pub fault_addr: u64,
    pub cookie: u64,
}

impl Completion {
    pub fn decode(r: &[u8; COMPLETION_BYTES]) -> Completion {
        let q = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&r[i..i + 8]);
            u64::from_le_bytes(b)
        };
        Completion {
            status: Status::from_code(r[0]),
            differs: r[1] != 0,
            bytes: q(8),
            fault_addr: q(16),
            cookie: q(24),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasidDmaError {
    /// The identification register is not pasid-dma's.
    NotPasidDma {
        id: u32,
    },
    NoSuchQueue(usize),
}

/// How a work queue tags its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueMode {
    /// Each descriptor's own tag.
    Shared,
    /// Every request tagged with this (or untagged).
    Dedicated(Tag),
}

pub struct PasidDma {
    regs: NonNull<PasidDmaRegs>,
}

// SAFETY: owns its BAR0 mapping; callers serialise access.
unsafe impl Send for PasidDma {}

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
            QueueMode::Dedicated(Tag::Untagged) => wq.cfg.write(WQ_CFG::ENABLE::SET),
            QueueMode::Dedicated(Tag::Pasid { pasid, privileged }) => {
                wq.pasid.set(pasid);
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
        let addr = u64::from(r.error_addr_hi.get()) << 32 | u64::from(r.error_addr_lo.get());
        (r.error.get(), r.error_queue.get(), addr)
    }

    pub fn clear_errors(&self, bits: u32) {
        self.regs().error.set(bits);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            op: Op::Copy {
                src: 0x1000,
                dst: 0x2000,
                len: 0x30,
            },
            tag: Tag::Pasid {
                pasid: 0xabcde,
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
            op: Op::WriteImm {
                dst: 8,
                value: 0xfeed,
                size: 2,
            },
            tag: Tag::Untagged,
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
    fn completion_decoding() {
        let mut r = [0u8; COMPLETION_BYTES];
        assert_eq!(Completion::decode(&r).status, Status::Pending);
        r[0] = 3;
        r[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
        r[16..24].copy_from_slice(&0xdead_b000u64.to_le_bytes());
        r[24..32].copy_from_slice(&7u64.to_le_bytes());
        assert_eq!(
            Completion::decode(&r),
            Completion {
                status: Status::WriteFault,
                differs: false,
                bytes: 0x1000,
                fault_addr: 0xdead_b000,
                cookie: 7
            }
        );
        assert_eq!(Status::from_code(9), Status::Unknown(9));
    }
}
