//! Platform discovery: IOMMUs, PCI segments, interrupt controllers and the
//! console from the firmware's ACPI tables, printed as a topology report.
//! Nothing about them is hard-coded per board; a table that fails its
//! checks is reported and left out, and the rest is used.
// Reading firmware tables from physical memory and fw_cfg.
#[allow(unsafe_code)]
mod tables;

use crate::platform::BootInfo;
use acpi_tables::{dmar, iort, madt, mcfg, spcr};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use spin::Once;

pub use tables::TableSet;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IommuKind {
    SmmuV3,
    SmmuV1V2,
    VtdDrhd,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuUnit {
    pub kind: IommuKind,
    pub base: u64,
    /// PCI segment (VT-d units; SMMUs serve whatever the IORT routes to them).
    pub segment: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EcamWindow {
    pub segment: u16,
    pub base: u64,
    pub start_bus: u8,
    pub end_bus: u8,
}

/// What the kernel believes about the platform.
pub struct Topology {
    pub source: String,
    pub iommus: Vec<IommuUnit>,
    pub ecam: Vec<EcamWindow>,
    pub console: Option<spcr::Console>,
    pub gicd: Option<u64>,
    pub gic_its: Vec<u64>,
    pub ioapics: Vec<u64>,
    pub cpus: usize,
    pub problems: Vec<String>,
    pub iort: Option<iort::Iort>,
    pub dmar: Option<dmar::Dmar>,
    /// Every table found (signature, address).
    pub tables: Vec<([u8; 4], u64)>,
    pub discovery_ns: u64,
}

static TOPOLOGY: Once<Topology> = Once::new();

/// The discovered topology (after `discover` ran in `kmain`).
pub fn get() -> Option<&'static Topology> {
    TOPOLOGY.get()
}

/// Finds and parses the tables; never fails the boot: what could not be
/// read is in `problems`.
pub fn discover(boot: &BootInfo) -> &'static Topology {
    TOPOLOGY.call_once(|| {
        let t0 = crate::arch::now_ns();
        let mut topo = match tables::load(boot.acpi) {
            Ok(set) => from_tables(&set),
            Err(e) => empty(format!("no ACPI tables: {e}")),
        };
        topo.discovery_ns = crate::arch::now_ns() - t0;
        topo
    })
}

fn empty(problem: String) -> Topology {
    Topology {
        source: "none".into(),
        iommus: Vec::new(),
        ecam: Vec::new(),
        console: None,
        gicd: None,
        gic_its: Vec::new(),
        ioapics: Vec::new(),
        cpus: 0,
        problems: alloc::vec![problem],
        iort: None,
        dmar: None,
        tables: Vec::new(),
        discovery_ns: 0,
    }
}

/// Parses one table if present; a parse error goes to `problems`.
fn parse<T>(
    set: &TableSet,
    sig: &[u8; 4],
    parser: fn(&[u8]) -> Result<T, acpi_tables::TableError>,
    problems: &mut Vec<String>,
) -> Option<T> {
    let bytes = set.find(sig)?;
    parser(bytes).map_err(|e| problems.push(e.to_string())).ok()
}

fn from_tables(set: &TableSet) -> Topology {
    let mut t = empty(String::new());
    t.problems = set.problems.clone();
    t.source = format!("{} at {:#x}", set.source, set.rsdp);
    t.tables = set.tables.iter().map(|r| (r.signature, r.addr)).collect();
    let iort = parse(set, b"IORT", iort::parse, &mut t.problems);
    let dmar = parse(set, b"DMAR", dmar::parse, &mut t.problems);
    let madt = parse(set, b"APIC", madt::parse, &mut t.problems);
    let mcfg = parse(set, b"MCFG", mcfg::parse, &mut t.problems);
    let spcr = parse(set, b"SPCR", spcr::parse, &mut t.problems);
    if let Some(iort) = &iort {
        for n in &iort.nodes {
            match &n.kind {
                iort::NodeKind::SmmuV3(s) => t.iommus.push(IommuUnit {
                    kind: IommuKind::SmmuV3,
                    base: s.base,
                    segment: None,
                }),
                iort::NodeKind::SmmuV1V2(s) => t.iommus.push(IommuUnit {
                    kind: IommuKind::SmmuV1V2,
                    base: s.base,
                    segment: None,
                }),
                _ => {}
            }
        }
    }
    if let Some(dmar) = &dmar {
        for d in dmar.drhds() {
            t.iommus.push(IommuUnit {
                kind: IommuKind::VtdDrhd,
                base: d.register_base,
                segment: Some(d.segment),
            });
        }
    }
    if let Some(mcfg) = &mcfg {
        t.ecam = mcfg
            .entries
            .iter()
            .map(|e| EcamWindow {
                segment: e.segment,
                base: e.base_address,
                start_bus: e.start_bus,
                end_bus: e.end_bus,
            })
            .collect();
    }
    if let Some(madt) = &madt {
        t.gicd = madt.gicd().map(|d| d.base);
        t.gic_its = madt.its().map(|i| i.base).collect();
        t.ioapics = madt.ioapics().map(|i| i.address as u64).collect();
        t.cpus = madt.cpus().iter().filter(|c| c.enabled).count();
    }
    t.console = spcr.as_ref().and_then(|s| s.console());
    t.iort = iort;
    t.dmar = dmar;
    t
}

impl IommuKind {
    /// The board file's spelling (`expect.iommus=smmuv3@0x9050000`).
    pub fn short(self) -> &'static str {
        match self {
            IommuKind::SmmuV3 => "smmuv3",
            IommuKind::SmmuV1V2 => "smmuv2",
            IommuKind::VtdDrhd => "vtd",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IommuKind::SmmuV3 => "SMMUv3",
            IommuKind::SmmuV1V2 => "SMMUv1/v2",
            IommuKind::VtdDrhd => "VT-d DRHD",
        }
    }
}

/// The topology report printed at boot.
pub fn report(t: &Topology) {
    log::info!("topology from {} ({} us)", t.source, t.discovery_ns / 1000);
    for (sig, addr) in &t.tables {
        log::debug!("  table   {} at {addr:#x}", String::from_utf8_lossy(sig));
    }
    for u in &t.iommus {
        match u.segment {
            Some(s) => log::info!(
                "  iommu   {} at {:#x}, PCI segment {s}",
                u.kind.name(),
                u.base
            ),
            None => log::info!("  iommu   {} at {:#x}", u.kind.name(), u.base),
        }
    }
    if t.iommus.is_empty() {
        log::info!("  iommu   none described");
    }
    for e in &t.ecam {
        log::info!(
            "  pci     segment {} ECAM at {:#x}, buses {}-{}",
            e.segment,
            e.base,
            e.start_bus,
            e.end_bus
        );
    }
    if let Some(d) = t.gicd {
        log::info!("  irq     GIC distributor at {d:#x}, ITS {:x?}", t.gic_its);
    }
    if !t.ioapics.is_empty() {
        log::info!("  irq     IOAPIC {:x?}", t.ioapics);
    }
    log::info!("  cpus    {} enabled in the MADT", t.cpus);
    match &t.console {
        Some(c) => log::info!(
            "  console {:?} at {} {:#x} (SPCR)",
            c.kind,
            if c.mmio { "MMIO" } else { "I/O port" },
            c.address
        ),
        None => log::info!("  console not described (no SPCR)"),
    }
    for p in &t.problems {
        log::warn!("  problem {p}");
    }
}

/// For messages: a unit as `kind@base`.
pub fn describe(u: &IommuUnit) -> String {
    format!("{}@{:#x}", u.kind.name(), u.base)
}

/// A PCI function found by the bus-0 probe, and where its DMA and MSIs go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedFunction {
    pub bus: u8,
    pub device: u8,
    pub function: u8,
    pub vendor: u16,
    pub device_id: u16,
    /// `kind@base` of the IOMMU that translates its DMA, and the stream id
    /// (SMMU StreamID; on VT-d the requester id).
    pub iommu: Option<(IommuUnit, u32)>,
    /// ITS base and DeviceID for its MSIs (Arm).
    pub msi: Option<(Vec<u32>, u32)>,
    pub problem: Option<String>,
}

/// A config-space read through the PCI driver's ECAM accessor (which
/// bounds-checks bus, device, function and offset).
fn ecam_read32(w: &EcamWindow, bus: u8, dev: u8, func: u8, offset: u16) -> Option<u32> {
    let bdf = pci::config::Bdf::new(bus, dev, func)?;
    crate::pcie::ecam(w)?.try_read32(bdf, offset).ok()
}

/// Probes the first bus of each ECAM window (full enumeration is the PCI
/// driver's job) and resolves every function through the IORT or DMAR.
pub fn route_bus0(t: &Topology) -> Vec<RoutedFunction> {
    let mut out = Vec::new();
    for w in &t.ecam {
        let bus = w.start_bus;
        for dev in 0..32u8 {
            for func in 0..8u8 {
                let Some(id) = ecam_read32(w, bus, dev, func, 0) else {
                    continue;
                };
                if id & 0xffff == 0xffff {
                    if func == 0 {
                        break;
                    }
                    continue;
                }
                out.push(route(t, w, bus, dev, func, id));
                let header = ecam_read32(w, bus, dev, 0, 0xc).unwrap_or(0) >> 16;
                if func == 0 && header & 0x80 == 0 {
                    break;
                }
            }
        }
    }
    out
}

fn route(t: &Topology, w: &EcamWindow, bus: u8, dev: u8, func: u8, id: u32) -> RoutedFunction {
    let rid = (bus as u32) << 8 | (dev as u32) << 3 | func as u32;
    let mut f = RoutedFunction {
        bus,
        device: dev,
        function: func,
        vendor: id as u16,
        device_id: (id >> 16) as u16,
        iommu: None,
        msi: None,
        problem: None,
    };
    if let Some(iort) = &t.iort {
        match iort.resolve_pci(w.segment, rid) {
            Ok(r) => {
                f.iommu = r.smmu.map(|s| {
                    let kind = match s.kind {
                        iort::SmmuKind::V3 => IommuKind::SmmuV3,
                        iort::SmmuKind::V1V2 => IommuKind::SmmuV1V2,
                    };
                    (
                        IommuUnit {
                            kind,
                            base: s.base,
                            segment: None,
                        },
                        s.stream_id,
                    )
                });
                f.msi = r.msi.map(|m| (m.its_ids, m.device_id));
            }
            Err(e) => f.problem = Some(format!("IORT: {e:?}")),
        }
    }
    if let Some(dmar) = &t.dmar {
        let secondary = |_seg: u16, b: u8, d: u8, fun: u8| {
            ecam_read32(w, b, d, fun, 0x18).map(|v| (v >> 8) as u8)
        };
        let subordinate = |_seg: u16, b: u8, d: u8, fun: u8| {
            ecam_read32(w, b, d, fun, 0x18).map(|v| (v >> 16) as u8)
        };
        let bdf = dmar::Bdf {
            bus,
            device: dev,
            function: func,
        };
        match dmar.drhd_for(w.segment, bdf, &secondary, &subordinate) {
            Some(d) => {
                f.iommu = Some((
                    IommuUnit {
                        kind: IommuKind::VtdDrhd,
                        base: d.register_base,
                        segment: Some(d.segment),
                    },
                    rid,
                ))
            }
            None => f.problem = Some("no DRHD covers it".into()),
        }
    }
    f
}

/// The per-function lines of the boot report.
pub fn report_functions(fs: &[RoutedFunction]) {
    for f in fs {
        let iommu = match &f.iommu {
            Some((u, sid)) => format!("{} stream {sid:#x}", describe(u)),
            None => "no IOMMU (bypass)".into(),
        };
        let msi = match &f.msi {
            Some((its, dev)) => format!(", MSI to ITS {its:?} DeviceID {dev:#x}"),
            None => String::new(),
        };
        log::info!(
            "  pci     {:02x}:{:02x}.{} {:04x}:{:04x} -> {iommu}{msi}{}",
            f.bus,
            f.device,
            f.function,
            f.vendor,
            f.device_id,
            f.problem
                .as_deref()
                .map(|p| format!(" ({p})"))
                .unwrap_or_default()
        );
    }
}
