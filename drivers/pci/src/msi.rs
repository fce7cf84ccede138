//! MSI (capability 0x05) programming: one vector, address and data as the
//! platform's interrupt controller wants them.
use crate::caps::Capability;
use crate::config::{Bdf, ConfigSpace};
use crate::enumerate::Function;
use crate::error::PciError;

const CONTROL: u16 = 2;
const ENABLE: u16 = 1 << 0;
/// Multiple Message Enable (bits 6:4): 0 = one vector.
const MME_MASK: u16 = 0b111 << 4;

/// Points the function's MSI at `address`/`data` with one vector and enables it.
pub fn enable_msi<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    f: &Function,
    address: u64,
    data: u16,
) -> Result<(), PciError> {
    let (offset, addr64) = f
        .find_cap(|c| match *c {
            Capability::Msi { offset, addr64, .. } => Some((offset, addr64)),
            _ => None,
        })
        .ok_or(PciError::MissingCapability {
            bdf: f.bdf,
            id: crate::caps::CAP_ID_MSI as u16,
        })?;
    if !addr64 && address >> 32 != 0 {
        return Err(PciError::Unsupported {
            bdf: f.bdf,
            what: "a 64-bit MSI address on a 32-bit MSI function",
        });
    }
    let control = cfg.read16(f.bdf, offset + CONTROL) & !(ENABLE | MME_MASK);
    cfg.write16(f.bdf, offset + CONTROL, control);
    cfg.write32(f.bdf, offset + 4, address as u32);
    let data_at = if addr64 {
        cfg.write32(f.bdf, offset + 8, (address >> 32) as u32);
        offset + 12
    } else {
        offset + 8
    };
    cfg.write16(f.bdf, data_at, data);
    cfg.write16(f.bdf, offset + CONTROL, control | ENABLE);
    Ok(())
}

/// Turns the function's MSI off.
pub fn disable_msi<C: ConfigSpace + ?Sized>(cfg: &mut C, bdf: Bdf, f: &Function) {
    if let Some(offset) = f.find_cap(|c| match *c {
        Capability::Msi { offset, .. } => Some(offset),
        _ => None,
    }) {
        let control = cfg.read16(bdf, offset + CONTROL);
        cfg.write16(bdf, offset + CONTROL, control & !ENABLE);
    }
}
