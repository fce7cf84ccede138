//! FADT (signature `FACP`): the fixed hardware the OS drives itself. Read
//! here for what boot and power-off need: the DSDT, Arm's boot flags (is
//! PSCI there, and through which conduit), and x86's reset register and
//! PM1 event and control blocks. Layout from ACPI 6.5, 5.2.9; older
//! (shorter) tables give what they have and `None` for the rest.
use crate::bytes::Bytes;
use crate::error::TableError;
use crate::sdt::{parse_table, SdtHeader};
use crate::spcr::{Gas, SPACE_SYSTEM_IO};
use core::fmt;

/// ACPI 1.0's table ends after the flags: the shortest this parser reads.
pub const V1_LEN: usize = 116;

/// Flags (ACPI 6.5 table 5.10).
pub const FLAG_RESET_REG_SUP: u32 = 1 << 10;
pub const FLAG_HW_REDUCED_ACPI: u32 = 1 << 20;

/// ARM_BOOT_ARCH (ACPI 6.5 table 5.12).
pub const ARM_PSCI_COMPLIANT: u16 = 1;
pub const ARM_PSCI_USE_HVC: u16 = 1 << 1;

// Field offsets.
const DSDT: usize = 40;
const SCI_INT: usize = 46;
const PM1A_EVT_BLK: usize = 56;
const PM1B_EVT_BLK: usize = 60;
const PM1A_CNT_BLK: usize = 64;
const PM1B_CNT_BLK: usize = 68;
const PM1_EVT_LEN: usize = 88;
const PM1_CNT_LEN: usize = 89;
const IAPC_BOOT_ARCH: usize = 109;
const FLAGS: usize = 112;
const RESET_REG: usize = 116;
const RESET_VALUE: usize = 128;
const ARM_BOOT_ARCH: usize = 129;
const MINOR_VERSION: usize = 131;
const X_DSDT: usize = 140;
const X_PM1A_EVT_BLK: usize = 148;
const X_PM1B_EVT_BLK: usize = 160;
const X_PM1A_CNT_BLK: usize = 172;
const X_PM1B_CNT_BLK: usize = 184;
const GAS_LEN: usize = 12;

/// How PSCI is called, from ARM_BOOT_ARCH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum PsciConduit {
    Smc,
    Hvc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Fadt {
    pub header: SdtHeader,
    /// FADT minor version (ACPI 5.1 and later; 0 before).
    pub minor_version: u8,
    /// X_DSDT when present and not 0, else the 32-bit DSDT (0: none).
    pub dsdt: u64,
    pub sci_int: u16,
    pub flags: u32,
    pub iapc_boot_arch: u16,
    /// 0 in tables too old to have it.
    pub arm_boot_arch: u16,
    /// The reset register and the value to write, when RESET_REG_SUP is
    /// set and the table is long enough to hold them.
    pub reset: Option<(Gas, u8)>,
    /// PM1 blocks: the extended (GAS) field when it is set, else the
    /// 32-bit I/O port with the width the length fields give.
    pub pm1a_evt: Option<Gas>,
    pub pm1b_evt: Option<Gas>,
    pub pm1a_cnt: Option<Gas>,
    pub pm1b_cnt: Option<Gas>,
}

/// An extended block if the table has it and its address is set, else
/// the legacy port with `len` bytes (None for port 0).
fn block(b: &Bytes<'_>, x_at: usize, legacy_at: usize, len: u8) -> Result<Option<Gas>, TableError> {
    if b.len() >= x_at + GAS_LEN {
        let g = Gas::read(b, x_at)?;
        if g.address != 0 {
            return Ok(Some(g));
        }
    }
    let port = b.u32(legacy_at)?;
    Ok((port != 0).then_some(Gas {
        space_id: SPACE_SYSTEM_IO,
        bit_width: len.saturating_mul(8),
        bit_offset: 0,
        access_size: 0,
        address: port.into(),
    }))
}

pub fn parse(data: &[u8]) -> Result<Fadt, TableError> {
    let (header, b) = parse_table(data, Some(*b"FACP"))?;
    // The last ACPI 1.0 field first, so a short table fails at one place.
    b.slice(V1_LEN - 4, 4)?;
    let flags = b.u32(FLAGS)?;
    let has = |end: usize| b.len() >= end;
    let x_dsdt = if has(X_DSDT + 8) { b.u64(X_DSDT)? } else { 0 };
    let dsdt = if x_dsdt != 0 {
        x_dsdt
    } else {
        b.u32(DSDT)?.into()
    };
    let reset = if flags & FLAG_RESET_REG_SUP != 0 && has(RESET_VALUE + 1) {
        Some((Gas::read(&b, RESET_REG)?, b.u8(RESET_VALUE)?))
    } else {
        None
    };
    let evt_len = b.u8(PM1_EVT_LEN)?;
    let cnt_len = b.u8(PM1_CNT_LEN)?;
    Ok(Fadt {
        minor_version: if has(MINOR_VERSION + 1) {
            b.u8(MINOR_VERSION)?
        } else {
            0
        },
        dsdt,
        sci_int: b.u16(SCI_INT)?,
        flags,
        iapc_boot_arch: b.u16(IAPC_BOOT_ARCH)?,
        arm_boot_arch: if has(ARM_BOOT_ARCH + 2) {
            b.u16(ARM_BOOT_ARCH)?
        } else {
            0
        },
        reset,
        pm1a_evt: block(&b, X_PM1A_EVT_BLK, PM1A_EVT_BLK, evt_len)?,
        pm1b_evt: block(&b, X_PM1B_EVT_BLK, PM1B_EVT_BLK, evt_len)?,
        pm1a_cnt: block(&b, X_PM1A_CNT_BLK, PM1A_CNT_BLK, cnt_len)?,
        pm1b_cnt: block(&b, X_PM1B_CNT_BLK, PM1B_CNT_BLK, cnt_len)?,
        header,
    })
}

impl Fadt {
    /// The PSCI conduit, if the firmware says it implements PSCI.
    pub fn psci(&self) -> Option<PsciConduit> {
        if self.arm_boot_arch & ARM_PSCI_COMPLIANT == 0 {
            return None;
        }
        Some(if self.arm_boot_arch & ARM_PSCI_USE_HVC != 0 {
            PsciConduit::Hvc
        } else {
            PsciConduit::Smc
        })
    }

    /// A hardware-reduced platform: no PM1 blocks, no SCI (every Arm one).
    pub fn hw_reduced(&self) -> bool {
        self.flags & FLAG_HW_REDUCED_ACPI != 0
    }
}

impl fmt::Display for Fadt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        writeln!(
            f,
            "FACP (FADT) rev {}.{} oem {:?} {:?} length {:#x}: DSDT {:#x} flags {:#x}{}",
            h.revision,
            self.minor_version,
            h.oem_id,
            h.oem_table_id,
            h.length,
            self.dsdt,
            self.flags,
            if self.hw_reduced() {
                " (hardware-reduced)"
            } else {
                ""
            }
        )?;
        writeln!(f, "  [0x2e] SCI interrupt {}", self.sci_int)?;
        writeln!(f, "  [0x6d] IA-PC boot flags {:#x}", self.iapc_boot_arch)?;
        write!(f, "  [0x81] Arm boot flags {:#x}", self.arm_boot_arch)?;
        match self.psci() {
            Some(c) => writeln!(f, " (PSCI through {c:?})")?,
            None => writeln!(f, " (no PSCI)")?,
        }
        if let Some((g, v)) = &self.reset {
            writeln!(
                f,
                "  [0x74] reset register {} {:#x} (width {}), value {v:#x}",
                g.space_name(),
                g.address,
                g.bit_width
            )?;
        }
        let blocks = [
            ("PM1a event", &self.pm1a_evt),
            ("PM1b event", &self.pm1b_evt),
            ("PM1a control", &self.pm1a_cnt),
            ("PM1b control", &self.pm1b_cnt),
        ];
        for (name, g) in blocks {
            if let Some(g) = g {
                writeln!(
                    f,
                    "  {name} block {} {:#x} (width {})",
                    g.space_name(),
                    g.address,
                    g.bit_width
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
