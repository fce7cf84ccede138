//! Turning the PCIe PASID, ATS and PRI capabilities on and off. Each takes
//! the enumerated function (whose decoded capabilities say where the
//! registers are and what they support) and refuses what the function
//! does not offer.
use crate::caps::{Capability, EXT_CAP_ID_ATS, EXT_CAP_ID_PASID, EXT_CAP_ID_PRI};
use crate::config::ConfigSpace;
use crate::enumerate::Function;
use crate::error::PciError;

const PASID_CTRL: u16 = 0x06;
const PASID_ENABLE: u16 = 1 << 0;
const PASID_EXEC: u16 = 1 << 1;
const PASID_PRIV: u16 = 1 << 2;
const ATS_CAP: u16 = 0x04;
const ATS_CTRL: u16 = 0x06;
const ATS_ENABLE: u16 = 1 << 15;
const ATS_QUEUE_DEPTH: u16 = 0x1f;
const PRI_CTRL: u16 = 0x04;
const PRI_ENABLE: u16 = 1 << 0;
const PRI_RESET: u16 = 1 << 1;
/// Status, the upper half of the control dword (PCIe 10.5.2.3).
const PRI_STATUS_SHIFT: u32 = 16;
const PRI_RESPONSE_FAILURE: u16 = 1 << 0;
const PRI_UNEXPECTED_GROUP: u16 = 1 << 1;
const PRI_STOPPED: u16 = 1 << 8;
const PRI_PASID_REQUIRED: u16 = 1 << 15;
const PRI_ALLOC: u16 = 0x0c;

fn missing(f: &Function, id: u16) -> PciError {
    PciError::MissingCapability { bdf: f.bdf, id }
}

/// Enables PASID-tagged requests, with execute and privileged-mode
/// requests if asked (and supported).
pub fn enable_pasid<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    f: &Function,
    execute: bool,
    privileged: bool,
) -> Result<(), PciError> {
    let (offset, exec_ok, priv_ok) = f
        .find_cap(|c| match *c {
            Capability::Pasid {
                offset,
                execute,
                privileged,
                ..
            } => Some((offset, execute, privileged)),
            _ => None,
        })
        .ok_or_else(|| missing(f, EXT_CAP_ID_PASID))?;
    if execute && !exec_ok {
        return Err(PciError::Unsupported {
            bdf: f.bdf,
            what: "PASID execute requests",
        });
    }
    if privileged && !priv_ok {
        return Err(PciError::Unsupported {
            bdf: f.bdf,
            what: "PASID privileged-mode requests",
        });
    }
    let mut ctrl = PASID_ENABLE;
    if execute {
        ctrl |= PASID_EXEC;
    }
    if privileged {
        ctrl |= PASID_PRIV;
    }
    // The capability register (low half) is read-only: plain RMW is fine.
    cfg.write16(f.bdf, offset + PASID_CTRL, ctrl);
    Ok(())
}

pub fn disable_pasid<C: ConfigSpace + ?Sized>(cfg: &mut C, f: &Function) -> Result<(), PciError> {
    let offset = pasid_offset(f)?;
    cfg.write16(f.bdf, offset + PASID_CTRL, 0);
    Ok(())
}

fn pasid_offset(f: &Function) -> Result<u16, PciError> {
    f.find_cap(|c| match *c {
        Capability::Pasid { offset, .. } => Some(offset),
        _ => None,
    })
    .ok_or_else(|| missing(f, EXT_CAP_ID_PASID))
}

/// Enables ATS with Smallest Translation Unit `stu` (2^(12 + stu) bytes;
/// 0 for 4 KiB pages), and returns the function's Invalidate Queue Depth
/// (how many invalidations it takes at once; the field's 0 means 32),
/// which device-TLB invalidations carry.
pub fn enable_ats<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    f: &Function,
    stu: u8,
) -> Result<u8, PciError> {
    let offset = ats_offset(f)?;
    if stu > 0x1f {
        return Err(PciError::Unsupported {
            bdf: f.bdf,
            what: "ATS smallest translation unit above 31",
        });
    }
    cfg.write16(f.bdf, offset + ATS_CTRL, ATS_ENABLE | u16::from(stu));
    let depth = (cfg.read16(f.bdf, offset + ATS_CAP) & ATS_QUEUE_DEPTH) as u8;
    Ok(if depth == 0 { 32 } else { depth })
}

pub fn disable_ats<C: ConfigSpace + ?Sized>(cfg: &mut C, f: &Function) -> Result<(), PciError> {
    let offset = ats_offset(f)?;
    cfg.write16(f.bdf, offset + ATS_CTRL, 0);
    Ok(())
}

fn ats_offset(f: &Function) -> Result<u16, PciError> {
    f.find_cap(|c| match *c {
        Capability::Ats { offset, .. } => Some(offset),
        _ => None,
    })
    .ok_or_else(|| missing(f, EXT_CAP_ID_ATS))
}

/// The PRI status register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PriStatus {
    /// The function got a Response Failure and makes no more requests
    /// until its PRI is reset.
    pub response_failure: bool,
    /// A response named a page group the function had not asked about.
    pub unexpected_group: bool,
    /// Disabled with nothing outstanding: safe to reset and enable.
    pub stopped: bool,
    /// Responses to PASID-tagged requests must carry the PASID.
    pub pasid_required: bool,
}

fn pri_cap(f: &Function) -> Result<(u16, u32), PciError> {
    f.find_cap(|c| match *c {
        Capability::Pri {
            offset,
            outstanding_requests,
        } => Some((offset, outstanding_requests)),
        _ => None,
    })
    .ok_or_else(|| missing(f, EXT_CAP_ID_PRI))
}

fn read_pri_status<C: ConfigSpace + ?Sized>(cfg: &C, f: &Function, offset: u16) -> PriStatus {
    let s = (cfg.read32(f.bdf, offset + PRI_CTRL) >> PRI_STATUS_SHIFT) as u16;
    PriStatus {
        response_failure: s & PRI_RESPONSE_FAILURE != 0,
        unexpected_group: s & PRI_UNEXPECTED_GROUP != 0,
        stopped: s & PRI_STOPPED != 0,
        pasid_required: s & PRI_PASID_REQUIRED != 0,
    }
}

/// Reads the page request interface's status.
pub fn pri_status<C: ConfigSpace + ?Sized>(cfg: &C, f: &Function) -> Result<PriStatus, PciError> {
    let (offset, _) = pri_cap(f)?;
    Ok(read_pri_status(cfg, f, offset))
}

/// Clears the status's Response Failure and Unexpected PRG Index bits
/// (write-1-to-clear), leaving control as it is.
pub fn clear_pri_status<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    f: &Function,
) -> Result<(), PciError> {
    let (offset, _) = pri_cap(f)?;
    let ctrl = cfg.read32(f.bdf, offset + PRI_CTRL) & 0xffff;
    let clear = u32::from(PRI_RESPONSE_FAILURE | PRI_UNEXPECTED_GROUP) << PRI_STATUS_SHIFT;
    cfg.write32(f.bdf, offset + PRI_CTRL, ctrl | clear);
    Ok(())
}

/// Resets the page request interface, allocates `requests` outstanding
/// page requests (at most the capacity) and enables it. Returns the
/// allocation made. Refused while the interface is not Stopped (enabled,
/// or requests still outstanding): PCIe 10.5.2.3 makes reset and the
/// allocation undefined then, as Linux's `pci_enable_pri` refuses.
pub fn enable_pri<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    f: &Function,
    requests: u32,
) -> Result<u32, PciError> {
    let (offset, capacity) = pri_cap(f)?;
    if !read_pri_status(cfg, f, offset).stopped {
        return Err(PciError::PriNotStopped { bdf: f.bdf });
    }
    let alloc = requests.min(capacity);
    // Control shares its dword with the status register's RW1C bits:
    // write whole dwords; the reset also clears a failure left from
    // before, so the status starts clean.
    let clear = u32::from(PRI_RESPONSE_FAILURE | PRI_UNEXPECTED_GROUP) << PRI_STATUS_SHIFT;
    cfg.write32(f.bdf, offset + PRI_CTRL, u32::from(PRI_RESET) | clear);
    cfg.write32(f.bdf, offset + PRI_ALLOC, alloc);
    cfg.write32(f.bdf, offset + PRI_CTRL, u32::from(PRI_ENABLE));
    Ok(alloc)
}

pub fn disable_pri<C: ConfigSpace + ?Sized>(cfg: &mut C, f: &Function) -> Result<(), PciError> {
    let (offset, _) = pri_cap(f)?;
    cfg.write32(f.bdf, offset + PRI_CTRL, 0);
    Ok(())
}
