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
const ATS_CTRL: u16 = 0x06;
const ATS_ENABLE: u16 = 1 << 15;
const PRI_CTRL: u16 = 0x04;
const PRI_ENABLE: u16 = 1 << 0;
const PRI_RESET: u16 = 1 << 1;
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

/// Enables ATS with Smallest Translation Unit `stu` (2^(12 + stu) bytes).
pub fn enable_ats<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    f: &Function,
    stu: u8,
) -> Result<(), PciError> {
    let offset = ats_offset(f)?;
    if stu > 0x1f {
        return Err(PciError::Unsupported {
            bdf: f.bdf,
            what: "ATS smallest translation unit above 31",
        });
    }
    cfg.write16(f.bdf, offset + ATS_CTRL, ATS_ENABLE | u16::from(stu));
    Ok(())
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

/// Resets the page request interface, allocates `requests` outstanding
/// page requests (at most the capacity) and enables it. Returns the
/// allocation made.
pub fn enable_pri<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    f: &Function,
    requests: u32,
) -> Result<u32, PciError> {
    let (offset, capacity) = f
        .find_cap(|c| match *c {
            Capability::Pri {
                offset,
                outstanding_requests,
            } => Some((offset, outstanding_requests)),
            _ => None,
        })
        .ok_or_else(|| missing(f, EXT_CAP_ID_PRI))?;
    let alloc = requests.min(capacity);
    // Control shares its dword with the status register's RW1C bits:
    // write whole dwords with zeros in the status half.
    cfg.write32(f.bdf, offset + PRI_CTRL, u32::from(PRI_RESET));
    cfg.write32(f.bdf, offset + PRI_ALLOC, alloc);
    cfg.write32(f.bdf, offset + PRI_CTRL, u32::from(PRI_ENABLE));
    Ok(alloc)
}

pub fn disable_pri<C: ConfigSpace + ?Sized>(cfg: &mut C, f: &Function) -> Result<(), PciError> {
    let offset = f
        .find_cap(|c| match *c {
            Capability::Pri { offset, .. } => Some(offset),
            _ => None,
        })
        .ok_or_else(|| missing(f, EXT_CAP_ID_PRI))?;
    cfg.write32(f.bdf, offset + PRI_CTRL, 0);
    Ok(())
}
