//! Primary fault records as the core's faults. Reading and clearing the
//! recording registers is the driver's (MMIO); this is the logic after.
use super::tables::Primary;
use crate::fault::FaultRecord;
use kernel::addr::Iova;
use kernel::iommu::domain::{DeviceId, Fault, FaultReason, Pasid};

/// One fault recording register, for [`take_record`].
pub trait RecordRegs {
    /// Bits 127:64 (F, the reason, the source id, the PASID).
    fn read_hi(&self) -> u64;
    /// Bits 63:0 (the page address).
    fn read_lo(&self) -> u64;
    /// Writes 1 to F, freeing the register for the next fault.
    fn clear(&self);
}

impl RecordRegs for crate::regs::FaultRecordRegs {
    fn read_hi(&self) -> u64 {
        use tock_registers::interfaces::Readable;
        self.hi.get()
    }
    fn read_lo(&self) -> u64 {
        use tock_registers::interfaces::Readable;
        self.lo.get()
    }
    fn clear(&self) {
        use tock_registers::interfaces::Writeable;
        self.hi.write(crate::regs::FRCD_HI::F::SET);
    }
}

/// The record in `reg`, if it holds one, and the register cleared. F is
/// read first (VT-d 7.2.1: the rest of a record is valid only once F reads
/// set, so it is read after), and cleared last.
pub fn take_record(reg: &impl RecordRegs) -> Option<FaultRecord> {
    let hi = reg.read_hi();
    if hi >> 63 == 0 {
        return None;
    }
    let lo = reg.read_lo();
    reg.clear();
    Some(normalise(FaultRecord::decode(lo, hi)))
}

/// A record as read from its register. Requests without PASID are
/// processed as RID_PASID 0, and units may record them with PASID 0
/// present: they had none.
pub fn normalise(mut record: FaultRecord) -> FaultRecord {
    if record.pasid == Some(0) {
        record.pasid = None;
    }
    record
}

/// The core's fault for a record of a device whose primary domain is
/// `primary`; `None` (logged) for reasons that are not about translation.
pub fn to_fault(r: &FaultRecord, primary: Option<Primary>) -> Option<Fault> {
    let reason = match (r.reason, r.pasid) {
        // PASID entry (or directory entry) not present or, as
        // QEMU reports a cleared entry, invalid.
        (0x51 | 0x59 | 0x5b, None) => FaultReason::Blocked,
        (0x51 | 0x59 | 0x5b, Some(_)) => FaultReason::NoPasid,
        // First level: not present; second level: no access
        // (not present and read-only look the same).
        (0x71 | 0x05 | 0x06 | 0x70 | 0x72 | 0x04, _) => FaultReason::NotMapped,
        (0x81 | 0x85, _) => FaultReason::Permission,
        (0x02, _) => FaultReason::Blocked,
        (code, _) => {
            log::warn!("VT-d fault not about a translation (reason {code:#x}): {r:?}");
            return None;
        }
    };
    // A blocked primary is an empty table: its faults say "not mapped".
    let reason = match reason {
        FaultReason::NotMapped if r.pasid.is_none() && primary == Some(Primary::Blocked) => {
            FaultReason::Blocked
        }
        reason => reason,
    };
    Some(Fault {
        dev: DeviceId(u32::from(r.source_id)),
        pasid: r.pasid.map(Pasid),
        iova: Iova(r.addr),
        write: !r.read,
        reason,
    })
}
