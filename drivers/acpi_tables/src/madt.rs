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
/// One redistributor's frames (GICv3: RD and SGI; GICv4 adds VLPI and a
/// reserved page).
pub const GICR_FRAME_V3: u64 = 0x2_0000;
pub const GICR_FRAME_V4: u64 = 0x4_0000;

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

    /// Where the GICv3 redistributors are, as `(base, size)`: the GICR
    /// structures when there are any, else each usable CPU's own frame
    /// from its GICC (ACPI allows either, never both). A GICC frame is
    /// one redistributor: two 64 KiB pages, four on a GICv4.
    pub fn redistributor_regions(&self) -> Vec<(u64, u64)> {
        let regions: Vec<(u64, u64)> = self
            .redistributors()
            .map(|r| (r.base, r.length.into()))
            .collect();
        if !regions.is_empty() {
            return regions;
        }
        let frame = match self.gicd().map(|d| d.version) {
            Some(4) => GICR_FRAME_V4,
            _ => GICR_FRAME_V3,
        };
        self.gicc()
            .filter(|c| c.flags & (GICC_ENABLED | GICC_ONLINE_CAPABLE) != 0 && c.gicr_base != 0)
            .map(|c| (c.gicr_base, frame))
            .collect()
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

/// Which application processors to start, from the local APIC and local
/// x2APIC structures: every enabled one but the boot CPU, in table order,
/// up to what the kernel drives; the rest stay parked (never sent a
/// startup IPI).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApStartPlan {
    /// APIC ids to start, one at a time.
    pub start: Vec<u32>,
    /// Enabled CPUs beyond the kernel's limit: left parked.
    pub parked: Vec<u32>,
    /// Online-capable CPUs that are not enabled (hot-plug slots): nothing
    /// to start.
    pub hotplug_slots: usize,
    /// Some CPU's id does not fit xAPIC's 8-bit destination (0xff is the
    /// broadcast id): the boot CPU must switch to x2APIC to reach it.
    pub needs_x2apic: bool,
}

/// The largest id an xAPIC IPI can name (0xff broadcasts).
pub const XAPIC_MAX_ID: u32 = 0xfe;

impl Madt {
    /// The start plan for a kernel that drives `max_cpus` CPUs, counting
    /// the boot CPU (`boot_apic_id`). A CPU listed twice (local APIC and
    /// x2APIC structures with the same id) counts once.
    pub fn ap_start_plan(&self, boot_apic_id: u32, max_cpus: usize) -> ApStartPlan {
        let mut plan = ApStartPlan::default();
        let mut seen: Vec<u32> = alloc::vec![boot_apic_id];
        for cpu in self.cpus() {
            let CpuId::Apic(id) = cpu.id else { continue };
            if !cpu.enabled {
                plan.hotplug_slots += usize::from(cpu.online_capable);
                continue;
            }
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            if 1 + plan.start.len() < max_cpus {
                plan.needs_x2apic |= id > XAPIC_MAX_ID;
                plan.start.push(id);
            } else {
                plan.parked.push(id);
            }
        }
        plan
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
mod tests;
