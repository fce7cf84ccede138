//! GTDT: the Arm generic timer's interrupts and the platform timers
//! (memory-mapped GT blocks, SBSA watchdogs). Layout from ACPI 6.5,
//! 5.2.25: revision 1 (ACPI 5.0) ends after the EL2 timer (80 bytes),
//! revision 2 adds the CntReadBase and the platform timer array (96),
//! revision 3 the virtual EL2 timer (104).
use crate::bytes::Bytes;
use crate::error::{ErrorKind, TableError};
use crate::sdt::{parse_table, SdtHeader};
use alloc::vec::Vec;
use core::fmt;

/// Length of a revision 1 table, the shortest this parser reads.
pub const V1_LEN: usize = 80;
/// Length of revision 2 (CntReadBase and the platform timers added).
pub const V2_LEN: usize = 96;
/// Length of revision 3 (the virtual EL2 timer added).
pub const V3_LEN: usize = 104;

/// Timer flags (ACPI 6.5 table 5.125): bit 0 edge triggered, bit 1
/// active low, bit 2 always on (keeps counting in low-power states).
pub const FLAG_EDGE: u32 = 1;
pub const FLAG_ACTIVE_LOW: u32 = 1 << 1;
pub const FLAG_ALWAYS_ON: u32 = 1 << 2;

/// Platform timer structure types.
pub const PLATFORM_GT_BLOCK: u8 = 0;
pub const PLATFORM_WATCHDOG: u8 = 1;

/// One of the per-CPU timers: its interrupt (a PPI's GSIV, 0 when the
/// platform does not give it) and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Timer {
    pub gsiv: u32,
    pub flags: u32,
}

impl Timer {
    pub fn edge(&self) -> bool {
        self.flags & FLAG_EDGE != 0
    }

    pub fn active_low(&self) -> bool {
        self.flags & FLAG_ACTIVE_LOW != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Gtdt {
    pub header: SdtHeader,
    /// CNTControlBase (all ones or 0 when not provided, as from EL1).
    pub cnt_control_base: u64,
    pub secure_el1: Timer,
    /// The EL1 physical timer (CNTP), which an EL1 kernel ticks with.
    pub nonsecure_el1: Timer,
    pub virtual_el1: Timer,
    pub el2: Timer,
    /// Revision 2 and later.
    pub cnt_read_base: Option<u64>,
    /// Revision 3 and later.
    pub virtual_el2: Option<Timer>,
    pub platform_timers: Vec<PlatformTimer>,
}

/// A platform timer structure, by type and where it is; its contents are
/// not needed at boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PlatformTimer {
    pub offset: usize,
    pub r#type: u8,
    pub length: u16,
}

fn timer(b: &Bytes<'_>, at: usize) -> Result<Timer, TableError> {
    Ok(Timer {
        gsiv: b.u32(at)?,
        flags: b.u32(at + 4)?,
    })
}

pub fn parse(data: &[u8]) -> Result<Gtdt, TableError> {
    let (header, b) = parse_table(data, Some(*b"GTDT"))?;
    let revision = header.revision;
    if !(1..=3).contains(&revision) {
        return Err(b.err(8, ErrorKind::UnknownRevision { revision }));
    }
    // The last fixed field first, so a short table fails at one place.
    b.slice(V1_LEN - 4, 4)?;
    let mut g = Gtdt {
        cnt_control_base: b.u64(36)?,
        secure_el1: timer(&b, 48)?,
        nonsecure_el1: timer(&b, 56)?,
        virtual_el1: timer(&b, 64)?,
        el2: timer(&b, 72)?,
        cnt_read_base: None,
        virtual_el2: None,
        platform_timers: Vec::new(),
        header,
    };
    if revision < 2 {
        return Ok(g);
    }
    b.slice(V2_LEN - 4, 4)?;
    g.cnt_read_base = Some(b.u64(80)?);
    let count = b.u32(88)? as usize;
    let offset = b.u32(92)? as usize;
    if revision >= 3 {
        g.virtual_el2 = Some(timer(&b, 96)?);
    }
    if count == 0 {
        return Ok(g);
    }
    let fixed = if revision >= 3 { V3_LEN } else { V2_LEN };
    if offset < fixed || offset >= b.len() {
        return Err(b.err(
            92,
            ErrorKind::BadOffset {
                offset: offset as u64,
            },
        ));
    }
    // Each structure is at least type, length and a reserved byte.
    if count > (b.len() - offset) / 4 {
        return Err(b.err(
            88,
            ErrorKind::BadCount {
                count: count as u64,
            },
        ));
    }
    let mut at = offset;
    for _ in 0..count {
        let r#type = b.u8(at)?;
        let length = b.u16(at + 1)?;
        if length < 4 {
            return Err(b.err(
                at + 1,
                ErrorKind::BadEntryLength {
                    length: length.into(),
                },
            ));
        }
        b.slice(at, length.into())?;
        g.platform_timers.push(PlatformTimer {
            offset: at,
            r#type,
            length,
        });
        at += usize::from(length);
    }
    Ok(g)
}

impl fmt::Display for Gtdt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        writeln!(
            f,
            "GTDT rev {} oem {:?} {:?} length {:#x}: CntControlBase {:#x}",
            h.revision, h.oem_id, h.oem_table_id, h.length, self.cnt_control_base
        )?;
        let line = |f: &mut fmt::Formatter<'_>, at: usize, name: &str, t: &Timer| {
            writeln!(
                f,
                "  [{at:#04x}] {name} timer GSIV {} flags {:#x} ({}, {}{})",
                t.gsiv,
                t.flags,
                if t.edge() { "edge" } else { "level" },
                if t.active_low() {
                    "active low"
                } else {
                    "active high"
                },
                if t.flags & FLAG_ALWAYS_ON != 0 {
                    ", always on"
                } else {
                    ""
                }
            )
        };
        line(f, 0x30, "secure EL1", &self.secure_el1)?;
        line(f, 0x38, "non-secure EL1", &self.nonsecure_el1)?;
        line(f, 0x40, "virtual EL1", &self.virtual_el1)?;
        line(f, 0x48, "EL2", &self.el2)?;
        if let Some(base) = self.cnt_read_base {
            writeln!(f, "  [0x50] CntReadBase {base:#x}")?;
        }
        if let Some(t) = &self.virtual_el2 {
            line(f, 0x60, "virtual EL2", t)?;
        }
        for p in &self.platform_timers {
            let what = match p.r#type {
                PLATFORM_GT_BLOCK => "GT block",
                PLATFORM_WATCHDOG => "SBSA generic watchdog",
                _ => "unknown platform timer",
            };
            writeln!(f, "  [{:#06x}] {what} ({} bytes)", p.offset, p.length)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
