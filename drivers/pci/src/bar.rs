//! BAR sizing: write all ones, read back, restore, with decoding off
//! meanwhile so the half-written BAR never claims an address.
use crate::config::{Bdf, ConfigSpace, BAR0, CMD_IO, CMD_MEMORY};
use crate::error::PciError;
use alloc::vec::Vec;

/// The address space a BAR (or a host bridge window) decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BarKind {
    Io,
    Mem32,
    Mem64,
}

/// One implemented BAR. A 64-bit BAR takes slots `index` and `index + 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bar {
    pub index: u8,
    pub kind: BarKind,
    pub prefetchable: bool,
    /// A power of two, which is also the BAR's alignment.
    pub size: u64,
    /// The PCI bus address; `None` while the BAR reads as 0 (unassigned)
    /// or after assignment could not place it.
    pub address: Option<u64>,
    /// The CPU physical address of `address`, once `assign` has placed the
    /// BAR in (or found it inside) a host bridge window.
    pub cpu_address: Option<u64>,
}

/// How many BAR slots a header type has: 6 for type 0, 2 for type 1
/// (bridges), none for anything else.
pub fn bar_slots(header_type: u8) -> u8 {
    match header_type & 0x7f {
        0 => 6,
        1 => 2,
        _ => 0,
    }
}

/// Sizes the BARs of `bdf`. Decoding is turned off around the probe and
/// the command register restored after. A 64-bit BAR in the last slot or
/// with reserved type bits ends the walk with `BadBar`; the BARs sized
/// before it are returned with the error.
pub fn size_bars<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    bdf: Bdf,
    header_type: u8,
) -> Result<Vec<Bar>, (Vec<Bar>, PciError)> {
    let slots = bar_slots(header_type);
    let mut bars = Vec::new();
    let command = cfg.command(bdf);
    if slots > 0 {
        cfg.write_command(bdf, command & !(CMD_IO | CMD_MEMORY));
    }
    let mut error = None;
    let mut i = 0;
    while i < slots {
        let off = BAR0 + 4 * u16::from(i);
        let orig = cfg.read32(bdf, off);
        cfg.write32(bdf, off, u32::MAX);
        let probe = cfg.read32(bdf, off);
        cfg.write32(bdf, off, orig);
        if orig & 1 == 1 {
            // I/O: bits 31:2 (the upper 16 may be hardwired to 0).
            let mask = probe & !3;
            if mask != 0 {
                let addr = u64::from(orig & !3);
                bars.push(Bar {
                    index: i,
                    kind: BarKind::Io,
                    prefetchable: false,
                    size: 1 << mask.trailing_zeros(),
                    address: (addr != 0).then_some(addr),
                    cpu_address: None,
                });
            }
            i += 1;
            continue;
        }
        let prefetchable = orig & (1 << 3) != 0;
        match (orig >> 1) & 3 {
            // 32-bit, or below-1-MiB (legacy, sized and placed as 32-bit).
            0 | 1 => {
                let mask = probe & !0xf;
                if mask != 0 {
                    let addr = u64::from(orig & !0xf);
                    bars.push(Bar {
                        index: i,
                        kind: BarKind::Mem32,
                        prefetchable,
                        size: 1 << mask.trailing_zeros(),
                        address: (addr != 0).then_some(addr),
                        cpu_address: None,
                    });
                }
                i += 1;
            }
            2 if i + 1 < slots => {
                let hi_off = off + 4;
                let orig_hi = cfg.read32(bdf, hi_off);
                cfg.write32(bdf, hi_off, u32::MAX);
                let probe_hi = cfg.read32(bdf, hi_off);
                cfg.write32(bdf, hi_off, orig_hi);
                let mask = u64::from(probe_hi) << 32 | u64::from(probe & !0xf);
                if mask != 0 {
                    let addr = u64::from(orig_hi) << 32 | u64::from(orig & !0xf);
                    bars.push(Bar {
                        index: i,
                        kind: BarKind::Mem64,
                        prefetchable,
                        size: 1 << mask.trailing_zeros(),
                        address: (addr != 0).then_some(addr),
                        cpu_address: None,
                    });
                }
                i += 2;
            }
            _ => {
                error = Some(PciError::BadBar { bdf, bar: i });
                break;
            }
        }
    }
    if slots > 0 {
        cfg.write_command(bdf, command);
    }
    match error {
        None => Ok(bars),
        Some(e) => Err((bars, e)),
    }
}

/// Writes `address` into BAR `bar` (both halves for a 64-bit BAR).
pub fn write_bar<C: ConfigSpace + ?Sized>(cfg: &mut C, bdf: Bdf, bar: &Bar, address: u64) {
    let off = BAR0 + 4 * u16::from(bar.index);
    let low = cfg.read32(bdf, off);
    let value = match bar.kind {
        BarKind::Io => (address as u32 & !3) | (low & 3),
        _ => (address as u32 & !0xf) | (low & 0xf),
    };
    cfg.write32(bdf, off, value);
    if bar.kind == BarKind::Mem64 {
        cfg.write32(bdf, off + 4, (address >> 32) as u32);
    }
}
