//! MADT (signature `APIC`): the interrupt controllers and the processors.
//! Layout from ACPI 6.5, 5.2.12: the header, the local interrupt controller
//! address and flags, then structures of `type, length, ...`.
use crate::bytes::Bytes;
use crate::error::{ErrorKind, TableError};
use crate::sdt::{parse_table, SdtHeader, HEADER_LEN};
use alloc::vec::Vec;
use core::fmt;

/// Where the first interrupt controller structure starts.
pub const ENTRIES_OFFSET: usize = HEADER_LEN + 8;
/// MADT flags bit 0: the system also has a PC-AT dual 8259 setup.
pub const PCAT_COMPAT: u32 = 1;
/// Local APIC / x2APIC flags (ACPI 6.5 table 5.23).
pub const APIC_ENABLED: u32 = 1;
pub const APIC_ONLINE_CAPABLE: u32 = 1 << 1;
/// GICC flags (ACPI 6.5 table 5.37).
pub const GICC_ENABLED: u32 = 1;
pub const GICC_ONLINE_CAPABLE: u32 = 1 << 3;

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Madt {
    pub header: SdtHeader,
    /// 32-bit physical address of each processor's local APIC (0 on Arm).
    pub local_interrupt_controller_address: u32,
    pub flags: u32,
    pub entries: Vec<Entry>,
}

/// One interrupt controller structure and where it starts in the table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Entry {
    pub offset: usize,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum EntryKind {
    LocalApic(LocalApic),
    IoApic(IoApic),
    InterruptOverride(InterruptOverride),
    NmiSource(NmiSource),
    LocalApicNmi(LocalApicNmi),
    LocalApicAddressOverride {
        address: u64,
    },
    LocalX2Apic(LocalX2Apic),
    LocalX2ApicNmi(LocalX2ApicNmi),
    Gicc(Gicc),
    Gicd(Gicd),
    GicMsiFrame(GicMsiFrame),
    Gicr(Gicr),
    GicIts(GicIts),
    MultiprocessorWakeup(MultiprocessorWakeup),
    /// A type this parser does not decode (I/O SAPIC, LoongArch, RISC-V,
    /// OEM...): skipped by its length.
    Unknown {
        r#type: u8,
        length: u8,
    },
}

/// Type 0.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LocalApic {
    pub uid: u8,
    pub apic_id: u8,
    pub flags: u32,
}

/// Type 1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct IoApic {
    pub id: u8,
    pub address: u32,
    pub gsi_base: u32,
}

/// Type 2: ISA IRQ `source` arrives at `gsi`. `flags` are MPS INTI flags.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct InterruptOverride {
    pub bus: u8,
    pub source: u8,
    pub gsi: u32,
    pub flags: u16,
}

/// Type 3.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NmiSource {
    pub flags: u16,
    pub gsi: u32,
}

/// Type 4: `uid` 0xff means all processors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LocalApicNmi {
    pub uid: u8,
    pub flags: u16,
    pub lint: u8,
}

/// Type 9.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LocalX2Apic {
    pub x2apic_id: u32,
    pub flags: u32,
    pub uid: u32,
}

/// Type 0xa: `uid` 0xffffffff means all processors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LocalX2ApicNmi {
    pub flags: u16,
    pub uid: u32,
    pub lint: u8,
}

/// Type 0xb: GIC CPU interface. The trailing fields came with later ACPI
/// versions and are read only when the structure is long enough for them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Gicc {
    pub cpu_interface_number: u32,
    pub uid: u32,
    pub flags: u32,
    pub parking_version: u32,
    pub performance_gsiv: u32,
    pub parked_address: u64,
    pub physical_base: u64,
    pub gicv: u64,
    pub gich: u64,
    pub vgic_maintenance_gsiv: u32,
    pub gicr_base: u64,
    pub mpidr: u64,
    /// ACPI 6.0.
    pub efficiency_class: Option<u8>,
    /// ACPI 6.3.
    pub spe_overflow_gsiv: Option<u16>,
    /// ACPI 6.5.
    pub trbe_gsiv: Option<u16>,
}

/// Type 0xc: GIC distributor.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Gicd {
    pub id: u32,
    pub base: u64,
    pub system_vector_base: u32,
    /// 0: find out from the hardware; 1..4: GICv1..GICv4.
    pub version: u8,
}

/// Type 0xd: GICv2m MSI frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GicMsiFrame {
    pub id: u32,
    pub base: u64,
    pub flags: u32,
    pub spi_count: u16,
    pub spi_base: u16,
}

/// Type 0xe: a range holding GICv3/v4 redistributors.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Gicr {
    /// ACPI 6.5: bit 0 = not coherent.
    pub flags: u8,
    pub base: u64,
    pub length: u32,
}

/// Type 0xf: GIC interrupt translation service; `id` is what IORT ITS
/// groups refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct GicIts {
    /// ACPI 6.5: bit 0 = not coherent.
    pub flags: u8,
    pub id: u32,
    pub base: u64,
}

/// Type 0x10 (ACPI 6.4).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MultiprocessorWakeup {
    pub mailbox_version: u16,
    pub mailbox_address: u64,
    /// Mailbox version 1 (24-byte structure).
    pub reset_vector: Option<u64>,
}

/// A usable processor: from a GICC (`Mpidr`) or a local (x2)APIC (`Apic`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Cpu {
    pub uid: u32,
    pub id: CpuId,
    pub enabled: bool,
    /// Not enabled now, but may be brought online later (hotplug).
    pub online_capable: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum CpuId {
    Apic(u32),
    Mpidr(u64),
}

/// Smallest valid length of each known type: a shorter one is an error
/// rather than a structure read short. Others need only their own header.
fn min_len(ty: u8) -> usize {
    match ty {
        0 => 8,
        1 => 12,
        2 => 10,
        3 => 8,
        4 => 6,
        5 => 12,
        9 => 16,
        0xa => 12,
        // ACPI 5.1's layout, which ends with the MPIDR.
        0xb => 76,
        0xc | 0xd => 24,
        0xe => 16,
        // ACPI 6.0 said 16 (Errata A: 20); nothing past 16 is read.
        0xf => 16,
        // Mailbox version 0; version 1 adds the reset vector.
        0x10 => 16,
        _ => 2,
    }
}

pub fn parse(data: &[u8]) -> Result<Madt, TableError> {
    let (header, b) = parse_table(data, Some(*b"APIC"))?;
    let local_interrupt_controller_address = b.u32(HEADER_LEN)?;
    let flags = b.u32(HEADER_LEN + 4)?;
    let mut entries = Vec::new();
    let mut at = ENTRIES_OFFSET;
    while at < b.len() {
        let ty = b.u8(at)?;
        let length = b.u8(at + 1)?;
        // Below 2 the walk would not advance; below the type's minimum the
        // fields would be read from the next structure.
        if usize::from(length) < min_len(ty).max(2) {
            return Err(b.err(
                at + 1,
                ErrorKind::BadEntryLength {
                    length: length.into(),
                },
            ));
        }
        let e = b.sub(at, length.into())?;
        // Reads inside `e` count from the structure; errors name table offsets.
        let kind = parse_entry(&e, ty).map_err(|err| TableError {
            offset: err.offset.saturating_add(at),
            ..err
        })?;
        entries.push(Entry { offset: at, kind });
        at += usize::from(length);
    }
    Ok(Madt {
        header,
        local_interrupt_controller_address,
        flags,
        entries,
    })
}

fn parse_entry(e: &Bytes<'_>, ty: u8) -> Result<EntryKind, TableError> {
    let len = e.len();
    Ok(match ty {
        0 => EntryKind::LocalApic(LocalApic {
            uid: e.u8(2)?,
            apic_id: e.u8(3)?,
            flags: e.u32(4)?,
        }),
        1 => EntryKind::IoApic(IoApic {
            id: e.u8(2)?,
            address: e.u32(4)?,
            gsi_base: e.u32(8)?,
        }),
        2 => EntryKind::InterruptOverride(InterruptOverride {
            bus: e.u8(2)?,
            source: e.u8(3)?,
            gsi: e.u32(4)?,
            flags: e.u16(8)?,
        }),
        3 => EntryKind::NmiSource(NmiSource {
            flags: e.u16(2)?,
            gsi: e.u32(4)?,
        }),
        4 => EntryKind::LocalApicNmi(LocalApicNmi {
            uid: e.u8(2)?,
            flags: e.u16(3)?,
            lint: e.u8(5)?,
        }),
        5 => EntryKind::LocalApicAddressOverride { address: e.u64(4)? },
        9 => EntryKind::LocalX2Apic(LocalX2Apic {
            x2apic_id: e.u32(4)?,
            flags: e.u32(8)?,
            uid: e.u32(12)?,
        }),
        0xa => EntryKind::LocalX2ApicNmi(LocalX2ApicNmi {
            flags: e.u16(2)?,
            uid: e.u32(4)?,
            lint: e.u8(8)?,
        }),
        0xb => EntryKind::Gicc(Gicc {
            cpu_interface_number: e.u32(4)?,
            uid: e.u32(8)?,
            flags: e.u32(12)?,
            parking_version: e.u32(16)?,
            performance_gsiv: e.u32(20)?,
            parked_address: e.u64(24)?,
            physical_base: e.u64(32)?,
            gicv: e.u64(40)?,
            gich: e.u64(48)?,
            vgic_maintenance_gsiv: e.u32(56)?,
            gicr_base: e.u64(60)?,
            mpidr: e.u64(68)?,
            efficiency_class: if len >= 77 { Some(e.u8(76)?) } else { None },
            spe_overflow_gsiv: if len >= 80 { Some(e.u16(78)?) } else { None },
            trbe_gsiv: if len >= 82 { Some(e.u16(80)?) } else { None },
        }),
        0xc => EntryKind::Gicd(Gicd {
            id: e.u32(4)?,
            base: e.u64(8)?,
            system_vector_base: e.u32(16)?,
            version: e.u8(20)?,
        }),
        0xd => EntryKind::GicMsiFrame(GicMsiFrame {
            id: e.u32(4)?,
            base: e.u64(8)?,
            flags: e.u32(16)?,
            spi_count: e.u16(20)?,
            spi_base: e.u16(22)?,
        }),
        0xe => EntryKind::Gicr(Gicr {
            flags: e.u8(2)?,
            base: e.u64(4)?,
            length: e.u32(12)?,
        }),
        0xf => EntryKind::GicIts(GicIts {
            flags: e.u8(2)?,
            id: e.u32(4)?,
            base: e.u64(8)?,
        }),
        0x10 => EntryKind::MultiprocessorWakeup(MultiprocessorWakeup {
            mailbox_version: e.u16(2)?,
            mailbox_address: e.u64(8)?,
            reset_vector: if len >= 24 { Some(e.u64(16)?) } else { None },
        }),
        _ => EntryKind::Unknown {
            r#type: ty,
            length: e.u8(1)?,
        },
    })
}

impl Madt {
    pub fn pcat_compat(&self) -> bool {
        self.flags & PCAT_COMPAT != 0
    }

    fn kinds(&self) -> impl Iterator<Item = &EntryKind> {
        self.entries.iter().map(|e| &e.kind)
    }

    /// The (first) GIC distributor; ACPI allows only one.
    pub fn gicd(&self) -> Option<&Gicd> {
        self.kinds().find_map(|k| match k {
            EntryKind::Gicd(d) => Some(d),
            _ => None,
        })
    }

    pub fn redistributors(&self) -> impl Iterator<Item = &Gicr> {
        self.kinds().filter_map(|k| match k {
            EntryKind::Gicr(r) => Some(r),
            _ => None,
        })
    }

    pub fn its(&self) -> impl Iterator<Item = &GicIts> {
        self.kinds().filter_map(|k| match k {
            EntryKind::GicIts(i) => Some(i),
            _ => None,
        })
    }

    pub fn gicc(&self) -> impl Iterator<Item = &Gicc> {
        self.kinds().filter_map(|k| match k {
            EntryKind::Gicc(c) => Some(c),
            _ => None,
        })
    }

    pub fn ioapics(&self) -> impl Iterator<Item = &IoApic> {
        self.kinds().filter_map(|k| match k {
            EntryKind::IoApic(i) => Some(i),
            _ => None,
        })
    }

    pub fn interrupt_overrides(&self) -> impl Iterator<Item = &InterruptOverride> {
        self.kinds().filter_map(|k| match k {
            EntryKind::InterruptOverride(o) => Some(o),
            _ => None,
        })
    }

    /// The local APIC's address: the 64-bit override when there is one.
    pub fn local_apic_address(&self) -> u64 {
        self.kinds()
            .find_map(|k| match k {
                EntryKind::LocalApicAddressOverride { address } => Some(*address),
                _ => None,
            })
            .unwrap_or(self.local_interrupt_controller_address.into())
    }

    /// The processors the OS may use, in table order: enabled ones and ones
    /// that can be brought online later. Entries with neither flag are
    /// unusable (ACPI 6.5 5.2.12.2) and left out.
    pub fn cpus(&self) -> Vec<Cpu> {
        self.kinds()
            .filter_map(|k| {
                let (uid, id, enabled, online) = match k {
                    EntryKind::LocalApic(a) => (
                        a.uid.into(),
                        CpuId::Apic(a.apic_id.into()),
                        a.flags & APIC_ENABLED,
                        a.flags & APIC_ONLINE_CAPABLE,
                    ),
                    EntryKind::LocalX2Apic(a) => (
                        a.uid,
                        CpuId::Apic(a.x2apic_id),
                        a.flags & APIC_ENABLED,
                        a.flags & APIC_ONLINE_CAPABLE,
                    ),
                    EntryKind::Gicc(c) => (
                        c.uid,
                        CpuId::Mpidr(c.mpidr),
                        c.flags & GICC_ENABLED,
                        c.flags & GICC_ONLINE_CAPABLE,
                    ),
                    _ => return None,
                };
                (enabled != 0 || online != 0).then_some(Cpu {
                    uid,
                    id,
                    enabled: enabled != 0,
                    online_capable: online != 0,
                })
            })
            .collect()
    }
}

/// MPS INTI flags as text: polarity (bits 0-1), trigger mode (bits 2-3).
fn inti(flags: u16) -> (&'static str, &'static str) {
    let polarity = ["conforming", "active-high", "reserved", "active-low"];
    let trigger = ["conforming", "edge", "reserved", "level"];
    (
        polarity[usize::from(flags & 3)],
        trigger[usize::from((flags >> 2) & 3)],
    )
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EntryKind::LocalApic(a) => write!(
                f,
                "local APIC uid {:#x} id {:#x} flags {:#x}",
                a.uid, a.apic_id, a.flags
            ),
            EntryKind::IoApic(i) => write!(
                f,
                "I/O APIC id {:#x} address {:#x} GSI base {:#x}",
                i.id, i.address, i.gsi_base
            ),
            EntryKind::InterruptOverride(o) => {
                let (p, t) = inti(o.flags);
                write!(
                    f,
                    "interrupt override bus {:#x} IRQ {:#x} -> GSI {:#x} flags {:#x} ({p}, {t})",
                    o.bus, o.source, o.gsi, o.flags
                )
            }
            EntryKind::NmiSource(n) => {
                let (p, t) = inti(n.flags);
                write!(
                    f,
                    "NMI source GSI {:#x} flags {:#x} ({p}, {t})",
                    n.gsi, n.flags
                )
            }
            EntryKind::LocalApicNmi(n) => write!(
                f,
                "local APIC NMI uid {:#x} flags {:#x} LINT{}",
                n.uid, n.flags, n.lint
            ),
            EntryKind::LocalApicAddressOverride { address } => {
                write!(f, "local APIC address override {address:#x}")
            }
            EntryKind::LocalX2Apic(a) => write!(
                f,
                "local x2APIC uid {:#x} id {:#x} flags {:#x}",
                a.uid, a.x2apic_id, a.flags
            ),
            EntryKind::LocalX2ApicNmi(n) => write!(
                f,
                "local x2APIC NMI uid {:#x} flags {:#x} LINT{}",
                n.uid, n.flags, n.lint
            ),
            EntryKind::Gicc(c) => {
                write!(
                    f,
                    "GICC cpu interface {:#x} uid {:#x} flags {:#x} MPIDR {:#x} parking version {:#x} \
                     parked address {:#x} performance GSIV {:#x} base {:#x} GICV {:#x} GICH {:#x} \
                     VGIC maintenance GSIV {:#x} GICR {:#x}",
                    c.cpu_interface_number,
                    c.uid,
                    c.flags,
                    c.mpidr,
                    c.parking_version,
                    c.parked_address,
                    c.performance_gsiv,
                    c.physical_base,
                    c.gicv,
                    c.gich,
                    c.vgic_maintenance_gsiv,
                    c.gicr_base
                )?;
                if let Some(v) = c.efficiency_class {
                    write!(f, " efficiency class {v:#x}")?;
                }
                if let Some(v) = c.spe_overflow_gsiv {
                    write!(f, " SPE overflow GSIV {v:#x}")?;
                }
                if let Some(v) = c.trbe_gsiv {
                    write!(f, " TRBE GSIV {v:#x}")?;
                }
                Ok(())
            }
            EntryKind::Gicd(d) => write!(
                f,
                "GICD id {:#x} base {:#x} system vector base {:#x} GIC version {}",
                d.id, d.base, d.system_vector_base, d.version
            ),
            EntryKind::GicMsiFrame(m) => write!(
                f,
                "GIC MSI frame id {:#x} base {:#x} flags {:#x} SPI count {:#x} SPI base {:#x}",
                m.id, m.base, m.flags, m.spi_count, m.spi_base
            ),
            EntryKind::Gicr(r) => write!(
                f,
                "GICR range base {:#x} length {:#x} flags {:#x}",
                r.base, r.length, r.flags
            ),
            EntryKind::GicIts(i) => write!(
                f,
                "GIC ITS id {:#x} base {:#x} flags {:#x}",
                i.id, i.base, i.flags
            ),
            EntryKind::MultiprocessorWakeup(w) => {
                write!(
                    f,
                    "multiprocessor wakeup mailbox version {:#x} address {:#x}",
                    w.mailbox_version, w.mailbox_address
                )?;
                if let Some(v) = w.reset_vector {
                    write!(f, " reset vector {v:#x}")?;
                }
                Ok(())
            }
            EntryKind::Unknown { r#type, length } => {
                write!(f, "unknown type {type:#x} length {length:#x}")
            }
        }
    }
}

impl fmt::Display for Madt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        writeln!(
            f,
            "APIC (MADT) rev {} oem {:?} {:?} length {:#x}: local interrupt controller {:#x} flags {:#x}{}",
            h.revision,
            h.oem_id,
            h.oem_table_id,
            h.length,
            self.local_interrupt_controller_address,
            self.flags,
            if self.pcat_compat() { " (PCAT_COMPAT)" } else { "" }
        )?;
        for e in &self.entries {
            writeln!(f, "  [{:#06x}] {}", e.offset, e.kind)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sdt::tests::make_table;
    use alloc::string::ToString;
    use alloc::vec;

    /// A structure of `ty` with the given little-endian fields after the
    /// 2-byte header, its length set to the total.
    fn st(ty: u8, fields: &[&[u8]]) -> Vec<u8> {
        let mut s = vec![ty, 0];
        for f in fields {
            s.extend_from_slice(f);
        }
        s[1] = s.len() as u8;
        s
    }

    fn madt(rev: u8, lic: u32, flags: u32, entries: &[Vec<u8>]) -> Vec<u8> {
        let mut body = lic.to_le_bytes().to_vec();
        body.extend_from_slice(&flags.to_le_bytes());
        for e in entries {
            body.extend_from_slice(e);
        }
        make_table(b"APIC", rev, &body)
    }

    /// QEMU virt's 80-byte GICC (hw/arm/virt-acpi-build.c, GICv3, virt=on).
    fn gicc(i: u32, mpidr: u64) -> Vec<u8> {
        st(
            0xb,
            &[
                &[0, 0],
                &i.to_le_bytes(),     // CPU interface number
                &i.to_le_bytes(),     // UID
                &1u32.to_le_bytes(),  // flags: enabled
                &0u32.to_le_bytes(),  // parking protocol version
                &23u32.to_le_bytes(), // performance GSIV (PPI 7)
                &0u64.to_le_bytes(),  // parked address
                &0u64.to_le_bytes(),  // physical base
                &0u64.to_le_bytes(),  // GICV
                &0u64.to_le_bytes(),  // GICH
                &25u32.to_le_bytes(), // VGIC maintenance (PPI 9)
                &0u64.to_le_bytes(),  // GICR base
                &mpidr.to_le_bytes(), // MPIDR
                &[0, 0, 0, 0],        // efficiency class, reserved, SPE
            ],
        )
    }

    fn virt() -> Vec<u8> {
        let gicd = st(
            0xc,
            &[
                &[0, 0],
                &0u32.to_le_bytes(),
                &0x0800_0000u64.to_le_bytes(),
                &0u32.to_le_bytes(),
                &[3, 0, 0, 0],
            ],
        );
        let gicr = st(
            0xe,
            &[
                &[0, 0],
                &0x080a_0000u64.to_le_bytes(),
                &0x00f6_0000u32.to_le_bytes(),
            ],
        );
        let its = st(
            0xf,
            &[
                &[0, 0],
                &0u32.to_le_bytes(),
                &0x0808_0000u64.to_le_bytes(),
                &0u32.to_le_bytes(),
            ],
        );
        madt(4, 0, 0, &[gicd, gicc(0, 0), gicc(1, 1), gicr, its])
    }

    #[test]
    fn qemu_virt_gicv3() {
        let m = parse(&virt()).unwrap();
        assert_eq!(m.header.revision, 4);
        assert_eq!((m.local_interrupt_controller_address, m.flags), (0, 0));
        assert!(!m.pcat_compat());
        let offsets: Vec<usize> = m.entries.iter().map(|e| e.offset).collect();
        assert_eq!(offsets, [44, 68, 148, 228, 244]);
        assert_eq!(m.header.length, 264);
        assert_eq!(
            m.gicd(),
            Some(&Gicd {
                id: 0,
                base: 0x0800_0000,
                system_vector_base: 0,
                version: 3
            })
        );
        let c: Vec<&Gicc> = m.gicc().collect();
        assert_eq!(c.len(), 2);
        assert_eq!(
            *c[1],
            Gicc {
                cpu_interface_number: 1,
                uid: 1,
                flags: 1,
                parking_version: 0,
                performance_gsiv: 23,
                parked_address: 0,
                physical_base: 0,
                gicv: 0,
                gich: 0,
                vgic_maintenance_gsiv: 25,
                gicr_base: 0,
                mpidr: 1,
                efficiency_class: Some(0),
                spe_overflow_gsiv: Some(0),
                trbe_gsiv: None,
            }
        );
        assert_eq!(c[0].mpidr, 0);
        let r: Vec<&Gicr> = m.redistributors().collect();
        assert_eq!(
            r,
            [&Gicr {
                flags: 0,
                base: 0x080a_0000,
                length: 0x00f6_0000
            }]
        );
        let i: Vec<&GicIts> = m.its().collect();
        assert_eq!(
            i,
            [&GicIts {
                flags: 0,
                id: 0,
                base: 0x0808_0000
            }]
        );
        assert_eq!(
            m.cpus(),
            [
                Cpu {
                    uid: 0,
                    id: CpuId::Mpidr(0),
                    enabled: true,
                    online_capable: false
                },
                Cpu {
                    uid: 1,
                    id: CpuId::Mpidr(1),
                    enabled: true,
                    online_capable: false
                }
            ]
        );
        assert_eq!(m.ioapics().count(), 0);
        let s = m.to_string();
        assert!(s.contains("[0x002c] GICD id 0x0 base 0x8000000"), "{s}");
        assert!(s.contains("[0x0094] GICC cpu interface 0x1 uid 0x1 flags 0x1 MPIDR 0x1"));
        assert!(s.contains("[0x00e4] GICR range base 0x80a0000 length 0xf60000"));
        assert!(s.contains("[0x00f4] GIC ITS id 0x0 base 0x8080000"));
    }

    #[test]
    fn qemu_q35() {
        let lapic = |uid: u8, flags: u32| st(0, &[&[uid, uid], &flags.to_le_bytes()]);
        let iso = |src: u8, gsi: u32, flags: u16| {
            st(2, &[&[0, src], &gsi.to_le_bytes(), &flags.to_le_bytes()])
        };
        let mut e = vec![
            lapic(0, 1),
            lapic(1, 1),
            lapic(2, 2), // hotpluggable, not present
            lapic(3, 0), // unusable
            st(
                1,
                &[&[0, 0], &0xfec0_0000u32.to_le_bytes(), &0u32.to_le_bytes()],
            ),
            iso(0, 2, 0),
        ];
        for irq in [5, 9, 10, 11] {
            e.push(iso(irq, irq.into(), 0xd));
        }
        e.push(st(4, &[&[0xff], &0u16.to_le_bytes(), &[1]]));
        let m = parse(&madt(3, 0xfee0_0000, 1, &e)).unwrap();
        assert!(m.pcat_compat());
        assert_eq!(m.local_apic_address(), 0xfee0_0000);
        assert_eq!(m.entries.len(), 11);
        assert_eq!(
            m.entries[1],
            Entry {
                offset: 52,
                kind: EntryKind::LocalApic(LocalApic {
                    uid: 1,
                    apic_id: 1,
                    flags: 1
                })
            }
        );
        assert_eq!(
            m.ioapics().collect::<Vec<_>>(),
            [&IoApic {
                id: 0,
                address: 0xfec0_0000,
                gsi_base: 0
            }]
        );
        let o: Vec<&InterruptOverride> = m.interrupt_overrides().collect();
        assert_eq!(o.len(), 5);
        assert_eq!(
            *o[0],
            InterruptOverride {
                bus: 0,
                source: 0,
                gsi: 2,
                flags: 0
            }
        );
        assert_eq!(
            *o[4],
            InterruptOverride {
                bus: 0,
                source: 11,
                gsi: 11,
                flags: 0xd
            }
        );
        assert_eq!(
            m.entries[10].kind,
            EntryKind::LocalApicNmi(LocalApicNmi {
                uid: 0xff,
                flags: 0,
                lint: 1
            })
        );
        let cpus = m.cpus();
        assert_eq!(cpus.len(), 3);
        assert_eq!(cpus[0].id, CpuId::Apic(0));
        assert!(cpus[1].enabled && !cpus[1].online_capable);
        assert!(!cpus[2].enabled && cpus[2].online_capable);
        assert_eq!(m.gicd(), None);
        let s = m.to_string();
        assert!(s.contains("(PCAT_COMPAT)"));
        assert!(
            s.contains("[0x004c] I/O APIC id 0x0 address 0xfec00000 GSI base 0x0"),
            "{s}"
        );
        assert!(s.contains("IRQ 0x9 -> GSI 0x9 flags 0xd (active-high, level)"));
        assert!(s.contains("local APIC NMI uid 0xff flags 0x0 LINT1"));
    }

    #[test]
    fn other_types() {
        let e = vec![
            st(3, &[&5u16.to_le_bytes(), &9u32.to_le_bytes()]),
            st(5, &[&[0, 0], &0xfee0_0000_0000u64.to_le_bytes()]),
            st(
                9,
                &[
                    &[0, 0],
                    &0x100u32.to_le_bytes(),
                    &1u32.to_le_bytes(),
                    &7u32.to_le_bytes(),
                ],
            ),
            st(
                0xa,
                &[&0u16.to_le_bytes(), &u32::MAX.to_le_bytes(), &[1, 0, 0, 0]],
            ),
            st(
                0xd,
                &[
                    &[0, 0],
                    &2u32.to_le_bytes(),
                    &0x0802_0000u64.to_le_bytes(),
                    &1u32.to_le_bytes(),
                    &64u16.to_le_bytes(),
                    &80u16.to_le_bytes(),
                ],
            ),
            st(
                0x10,
                &[
                    &1u16.to_le_bytes(),
                    &0u32.to_le_bytes(),
                    &0x1000u64.to_le_bytes(),
                    &0x2000u64.to_le_bytes(),
                ],
            ),
            st(0x80, &[&[1, 2, 3]]),
        ];
        let m = parse(&madt(5, 0xfee0_0000, 0, &e)).unwrap();
        let k: Vec<&EntryKind> = m.entries.iter().map(|e| &e.kind).collect();
        assert_eq!(*k[0], EntryKind::NmiSource(NmiSource { flags: 5, gsi: 9 }));
        assert_eq!(
            *k[1],
            EntryKind::LocalApicAddressOverride {
                address: 0xfee0_0000_0000
            }
        );
        assert_eq!(m.local_apic_address(), 0xfee0_0000_0000);
        assert_eq!(
            *k[2],
            EntryKind::LocalX2Apic(LocalX2Apic {
                x2apic_id: 0x100,
                flags: 1,
                uid: 7
            })
        );
        assert_eq!(
            *k[3],
            EntryKind::LocalX2ApicNmi(LocalX2ApicNmi {
                flags: 0,
                uid: u32::MAX,
                lint: 1
            })
        );
        assert_eq!(
            *k[4],
            EntryKind::GicMsiFrame(GicMsiFrame {
                id: 2,
                base: 0x0802_0000,
                flags: 1,
                spi_count: 64,
                spi_base: 80
            })
        );
        assert_eq!(
            *k[5],
            EntryKind::MultiprocessorWakeup(MultiprocessorWakeup {
                mailbox_version: 1,
                mailbox_address: 0x1000,
                reset_vector: Some(0x2000)
            })
        );
        assert_eq!(
            *k[6],
            EntryKind::Unknown {
                r#type: 0x80,
                length: 5
            }
        );
        assert_eq!(
            m.cpus(),
            [Cpu {
                uid: 7,
                id: CpuId::Apic(0x100),
                enabled: true,
                online_capable: false
            }]
        );
        let s = m.to_string();
        assert!(s.contains("unknown type 0x80 length 0x5"), "{s}");
        assert!(s.contains("reset vector 0x2000"));
    }

    #[test]
    fn gicc_lengths() {
        // ACPI 5.1 (76 bytes): no efficiency class or SPE; 6.5 (82): TRBE.
        let mut short = gicc(0, 0x100);
        short.truncate(76);
        short[1] = 76;
        let mut long = gicc(1, 0x101);
        long.extend_from_slice(&[0x21, 0x00]);
        long[1] = 82;
        long[78] = 0x20; // SPE overflow GSIV
        let m = parse(&madt(6, 0, 0, &[short, long])).unwrap();
        let c: Vec<&Gicc> = m.gicc().collect();
        assert_eq!(c[0].mpidr, 0x100);
        assert_eq!(
            (
                c[0].efficiency_class,
                c[0].spe_overflow_gsiv,
                c[0].trbe_gsiv
            ),
            (None, None, None)
        );
        assert_eq!(c[1].mpidr, 0x101);
        assert_eq!(
            (
                c[1].efficiency_class,
                c[1].spe_overflow_gsiv,
                c[1].trbe_gsiv
            ),
            (Some(0), Some(0x20), Some(0x21))
        );
        assert_eq!(m.entries[1].offset, 44 + 76);
    }

    /// QEMU virt's GICC `i` as QEMU 10.0 builds it (virtualization off, PMU
    /// on); GICv2 also gives the CPU interface, GICV and GICH frames.
    fn qemu_gicc(i: u32, gicv2: bool) -> Gicc {
        let v2 = |a: u64| if gicv2 { a } else { 0 };
        Gicc {
            cpu_interface_number: i,
            uid: i,
            flags: GICC_ENABLED,
            parking_version: 0,
            performance_gsiv: 23,
            parked_address: 0,
            physical_base: v2(0x0801_0000),
            gicv: v2(0x0804_0000),
            gich: v2(0x0803_0000),
            vgic_maintenance_gsiv: 0,
            gicr_base: 0,
            mpidr: i.into(),
            efficiency_class: Some(0),
            spe_overflow_gsiv: Some(0),
            trbe_gsiv: None,
        }
    }

    /// Tables QEMU 10.0 built (fixtures/capture.sh), compared whole.
    #[test]
    fn qemu_fixtures() {
        use crate::mcfg::tests::qemu_header;
        let entry = |offset, kind| Entry { offset, kind };
        let gicd = |version| {
            entry(
                44,
                EntryKind::Gicd(Gicd {
                    id: 0,
                    base: 0x0800_0000,
                    system_vector_base: 0,
                    version,
                }),
            )
        };
        let gicv3: [&[u8]; 2] = [
            include_bytes!("../fixtures/virt-smmuv3/APIC.bin"),
            include_bytes!("../fixtures/virt-pxb/APIC.bin"),
        ];
        for t in gicv3 {
            let m = parse(t).unwrap();
            assert_eq!(
                m,
                Madt {
                    header: qemu_header(b"APIC", t, 4),
                    local_interrupt_controller_address: 0,
                    flags: 0,
                    entries: vec![
                        gicd(3),
                        entry(68, EntryKind::Gicc(qemu_gicc(0, false))),
                        entry(148, EntryKind::Gicc(qemu_gicc(1, false))),
                        entry(
                            228,
                            EntryKind::Gicr(Gicr {
                                flags: 0,
                                base: 0x080a_0000,
                                length: 0x00f6_0000
                            })
                        ),
                        entry(
                            244,
                            EntryKind::GicIts(GicIts {
                                flags: 0,
                                id: 0,
                                base: 0x0808_0000
                            })
                        ),
                    ]
                }
            );
            assert_eq!(m.cpus().len(), 2);
        }

        let t = include_bytes!("../fixtures/virt-no-its/APIC.bin");
        let m = parse(t).unwrap();
        assert_eq!(
            m,
            Madt {
                header: qemu_header(b"APIC", t, 4),
                local_interrupt_controller_address: 0,
                flags: 0,
                entries: vec![
                    gicd(2),
                    entry(68, EntryKind::Gicc(qemu_gicc(0, true))),
                    entry(148, EntryKind::Gicc(qemu_gicc(1, true))),
                    // GICv2m: SPIs 80..144 (irqmap VIRT_GIC_V2M 48 + 32).
                    entry(
                        228,
                        EntryKind::GicMsiFrame(GicMsiFrame {
                            id: 0,
                            base: 0x0802_0000,
                            flags: 1,
                            spi_count: 64,
                            spi_base: 80
                        })
                    ),
                ]
            }
        );
        assert_eq!((m.redistributors().count(), m.its().count()), (0, 0));

        let q35: [&[u8]; 2] = [
            include_bytes!("../fixtures/q35-intel-iommu/APIC.bin"),
            include_bytes!("../fixtures/q35-device-iotlb/APIC.bin"),
        ];
        for t in q35 {
            let lapic = |offset, i| {
                entry(
                    offset,
                    EntryKind::LocalApic(LocalApic {
                        uid: i,
                        apic_id: i,
                        flags: APIC_ENABLED,
                    }),
                )
            };
            let iso = |offset, source, flags| {
                entry(
                    offset,
                    EntryKind::InterruptOverride(InterruptOverride {
                        bus: 0,
                        source,
                        gsi: if source == 0 { 2 } else { source.into() },
                        flags,
                    }),
                )
            };
            let m = parse(t).unwrap();
            assert_eq!(
                m,
                Madt {
                    header: qemu_header(b"APIC", t, 3),
                    local_interrupt_controller_address: 0xfee0_0000,
                    flags: PCAT_COMPAT,
                    entries: vec![
                        lapic(44, 0),
                        lapic(52, 1),
                        entry(
                            60,
                            EntryKind::IoApic(IoApic {
                                id: 0,
                                address: 0xfec0_0000,
                                gsi_base: 0
                            })
                        ),
                        iso(72, 0, 0),
                        iso(82, 5, 0xd),
                        iso(92, 9, 0xd),
                        iso(102, 10, 0xd),
                        iso(112, 11, 0xd),
                        entry(
                            122,
                            EntryKind::LocalApicNmi(LocalApicNmi {
                                uid: 0xff,
                                flags: 0,
                                lint: 1
                            })
                        ),
                    ]
                }
            );
            assert_eq!(
                m.cpus().iter().map(|c| c.id).collect::<Vec<_>>(),
                [CpuId::Apic(0), CpuId::Apic(1)]
            );
        }
    }

    #[test]
    fn errors() {
        let lapic = st(0, &[&[0, 0], &1u32.to_le_bytes()]);
        let check = |entries: &[Vec<u8>], offset: usize, kind: ErrorKind| {
            let e = parse(&madt(3, 0, 0, entries)).unwrap_err();
            assert_eq!((e.offset, e.kind), (offset, kind), "{e}");
        };
        // Entry shorter than its type's minimum (a 6-byte local APIC).
        let mut short = lapic.clone();
        short.truncate(6);
        short[1] = 6;
        check(
            &[lapic.clone(), short],
            53,
            ErrorKind::BadEntryLength { length: 6 },
        );
        // GICC with ACPI 5.0's 40-byte length.
        let mut g = gicc(0, 0);
        g.truncate(40);
        g[1] = 40;
        check(&[g], 45, ErrorKind::BadEntryLength { length: 40 });
        // Zero and one byte lengths would not advance.
        check(
            &[vec![0x80, 0]],
            45,
            ErrorKind::BadEntryLength { length: 0 },
        );
        check(
            &[vec![0x80, 1]],
            45,
            ErrorKind::BadEntryLength { length: 1 },
        );
        // Entry running past the end of the table.
        let mut past = lapic.clone();
        past[1] = 12;
        check(
            &[lapic.clone(), past],
            52,
            ErrorKind::Truncated { need: 12, have: 8 },
        );
        // A lone type byte at the end.
        check(
            &[lapic, vec![0]],
            53,
            ErrorKind::Truncated { need: 1, have: 0 },
        );
        // No room for the flags.
        let e = parse(&make_table(b"APIC", 3, &[0; 6])).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (40, ErrorKind::Truncated { need: 4, have: 2 })
        );
    }

    /// Every truncation and many single-byte corruptions either parse or
    /// give an error: no panic, no overflow (tests run with debug checks).
    #[test]
    fn corrupted_never_panics() {
        let t = virt();
        for len in HEADER_LEN..t.len() {
            let mut c = t[..len].to_vec();
            c[4..8].copy_from_slice(&(len as u32).to_le_bytes());
            crate::sdt::tests::fix_checksum(&mut c);
            let _ = parse(&c);
        }
        for i in HEADER_LEN..t.len() {
            for v in [0u8, 1, 2, 0x7f, 0xff] {
                let mut c = t.clone();
                c[i] = v;
                crate::sdt::tests::fix_checksum(&mut c);
                if let Ok(m) = parse(&c) {
                    let _ = (m.to_string(), m.cpus());
                }
            }
        }
    }
}
