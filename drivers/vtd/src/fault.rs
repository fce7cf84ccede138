//! Primary fault records (VT-d spec 11.4.14): 128 bits each, read from
//! the fault recording registers. In the high qword: SID [15:0], PRIV
//! 29, EXE 30, PP 31, FR [39:32], PV [59:40], T 62, F 63.
use crate::bits;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultRecord {
    /// The F bit: the record holds a fault.
    pub valid: bool,
    pub source_id: u16,
    /// The PASID, when the request carried one.
    pub pasid: Option<u32>,
    /// Page-aligned faulting address.
    pub addr: u64,
    /// The fault reason code (FR).
    pub reason: u8,
    /// The request was a read (T: 1 read, 0 write).
    pub read: bool,
    /// Execute-requested and privileged-mode-requested, when a PASID was present.
    pub exec: bool,
    pub privileged: bool,
}

impl FaultRecord {
    /// From the record's low and high qwords.
    pub fn decode(lo: u64, hi: u64) -> FaultRecord {
        let pasid_present = bits(hi, 31, 31) == 1;
        FaultRecord {
            valid: bits(hi, 63, 63) == 1,
            source_id: bits(hi, 15, 0) as u16,
            pasid: pasid_present.then_some(bits(hi, 59, 40) as u32),
            addr: lo & !0xfff,
            reason: bits(hi, 39, 32) as u8,
            read: bits(hi, 62, 62) == 1,
            exec: bits(hi, 30, 30) == 1,
            privileged: bits(hi, 29, 29) == 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields() {
        // F, T (read), FR 0x30, PP, PASID 0x12345, SID 0x0208.
        let hi = (1 << 63) | (1 << 62) | (0x12345 << 40) | (0x30 << 32) | (1 << 31) | 0x0208;
        let r = FaultRecord::decode(0x4000_1234, hi);
        assert!(r.valid && r.read && !r.exec && !r.privileged);
        assert_eq!(
            (r.source_id, r.pasid, r.addr, r.reason),
            (0x0208, Some(0x12345), 0x4000_1000, 0x30)
        );
        let w = FaultRecord::decode(0x1000, (1 << 63) | (5 << 32) | 0x10);
        assert_eq!((w.read, w.pasid, w.reason), (false, None, 5));
    }
}
