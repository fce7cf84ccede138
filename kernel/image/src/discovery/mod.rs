//! Platform discovery: IOMMUs, PCI segments, interrupt controllers and the
//! console from the firmware's ACPI tables, printed as a topology report.
//! Nothing about them is hard-coded per board; a table that fails its
//! checks is reported and left out, and the rest is used.
// Reading firmware tables from physical memory and fw_cfg.
#[allow(unsafe_code)]
mod tables;

use crate::platform::BootInfo;
use acpi_aml::Window;
use acpi_tables::{dmar, fadt, iort, madt, mcfg, spcr};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use kernel::addr::PhysRange;
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

/// One PCI host bridge: its buses and the address windows it forwards,
/// from ACPI `_CRS` or the devicetree's `ranges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciHostBridge {
    pub segment: u16,
    /// Where it was described (`_CRS of \_SB_.PCI0`, `devicetree ranges`).
    pub source: String,
    pub buses: (u8, u8),
    pub io: Vec<Window>,
    pub mem32: Vec<Window>,
    pub mem64: Vec<Window>,
}

/// Whether this CPU has an I/O port space. Without one, a host bridge's
/// I/O window is reached through memory (its CPU side is MMIO too).
const PORT_IO: bool = cfg!(target_arch = "x86_64");

impl PciHostBridge {
    /// The CPU-side ranges the bridge decodes as MMIO: its memory windows,
    /// and its I/O window where I/O space is memory-mapped.
    pub fn mmio(&self) -> Vec<PhysRange> {
        let io = self.io.iter().filter(|_| !PORT_IO);
        self.mem32
            .iter()
            .chain(&self.mem64)
            .chain(io)
            .map(|w| PhysRange::new(w.cpu_start(), w.len()))
            .collect()
    }

    fn from_acpi(b: acpi_aml::HostBridge) -> Self {
        PciHostBridge {
            segment: b.segment,
            source: format!("_CRS of {}", b.path),
            buses: b.buses,
            io: b.io,
            mem32: b.mem32,
            mem64: b.mem64,
        }
    }

    fn from_devicetree(h: &devicetree::PcieHost) -> Self {
        let mut b = PciHostBridge {
            segment: h.domain.unwrap_or(0) as u16,
            source: "devicetree ranges".into(),
            buses: (*h.bus_range.start(), *h.bus_range.end()),
            io: Vec::new(),
            mem32: Vec::new(),
            mem64: Vec::new(),
        };
        for w in h.windows.iter().filter(|w| w.size != 0) {
            let window = Window {
                start: w.pci_addr,
                end: w.pci_addr.saturating_add(w.size - 1),
                translation: w.cpu_addr.wrapping_sub(w.pci_addr),
            };
            match w.space {
                devicetree::PciSpace::Config => {}
                devicetree::PciSpace::Io => b.io.push(window),
                _ if window.cpu_start().saturating_add(w.size - 1) < 1 << 32 => {
                    b.mem32.push(window)
                }
                _ => b.mem64.push(window),
            }
        }
        b
    }
}

/// What the kernel believes about the platform.
pub struct Topology {
    pub source: String,
    pub iommus: Vec<IommuUnit>,
    pub ecam: Vec<EcamWindow>,
    /// Every PCI host bridge and its windows (ACPI `_CRS`, else the
    /// devicetree).
    pub host_bridges: Vec<PciHostBridge>,
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
    /// How to power the machine off through ACPI (S5), when the FADT and
    /// the DSDT's `\_S5` say.
    pub soft_off: Option<SoftOff>,
}

/// ACPI soft-off: SLP_TYP and SLP_EN written to the PM1 control blocks.
#[derive(Debug, Clone)]
pub struct SoftOff {
    pub pm1a_cnt: spcr::Gas,
    pub pm1b_cnt: Option<spcr::Gas>,
    pub slp_typ: acpi_aml::SleepType,
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
        let mut topo = match tables::load_once(boot.acpi) {
            Ok(set) => from_tables(set),
            Err(e) => empty(format!("no ACPI tables: {e}")),
        };
        if topo.host_bridges.is_empty() {
            if let Some(dt) = crate::arch::devicetree() {
                topo.host_bridges = dt.pcie.iter().map(PciHostBridge::from_devicetree).collect();
            }
        }
        // Without an IORT (a devicetree-only boot), the devicetree's SMMUs
        // are the units, and its iommu-map routes to them.
        if topo.iort.is_none() {
            if let Some(dt) = crate::arch::devicetree() {
                topo.iommus.extend(dt.smmus.iter().map(|s| IommuUnit {
                    kind: IommuKind::SmmuV3,
                    base: s.base,
                    segment: None,
                }));
            }
        }
        topo.discovery_ns = crate::arch::now_ns() - t0;
        topo
    })
}

/// The ACPI tables at `entry`, for the Arm boot path's facts; discovery
/// later uses the same set.
#[cfg(target_arch = "aarch64")]
pub fn boot_tables(entry: crate::platform::AcpiEntry) -> Result<&'static TableSet, String> {
    tables::load_once(entry)
}

/// The MADT alone, for bringing up CPUs before discovery proper (x86;
/// on Arm the devicetree or the GICC entries come through `discover`).
#[cfg(target_arch = "x86_64")]
pub fn madt(entry: crate::platform::AcpiEntry) -> Result<madt::Madt, String> {
    let set = tables::load(entry)?;
    let bytes = set.find(b"APIC").ok_or("no MADT among the tables")?;
    madt::parse(bytes).map_err(|e| e.to_string())
}

/// The SPCR alone, for choosing the console before anything is printed
/// (x86; on Arm the early console comes from the devicetree or the board).
#[cfg(target_arch = "x86_64")]
pub fn spcr(entry: crate::platform::AcpiEntry) -> Option<spcr::Spcr> {
    let set = tables::load(entry).ok()?;
    spcr::parse(set.find(b"SPCR")?).ok()
}

fn empty(problem: String) -> Topology {
    Topology {
        source: "none".into(),
        iommus: Vec::new(),
        ecam: Vec::new(),
        host_bridges: Vec::new(),
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
        soft_off: None,
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
    let (bridges, slp_typ) = host_bridges_from_aml(set, &t.ecam, &mut t.problems);
    t.host_bridges = bridges;
    // The FADT was read once already for the DSDT's address: a bad one is
    // in `problems` from then.
    let fadt = set.find(b"FACP").and_then(|b| fadt::parse(b).ok());
    t.soft_off = match (fadt.and_then(|f| Some((f.pm1a_cnt?, f.pm1b_cnt))), slp_typ) {
        (Some((pm1a_cnt, pm1b_cnt)), Some(slp_typ)) => Some(SoftOff {
            pm1a_cnt,
            pm1b_cnt,
            slp_typ,
        }),
        _ => None,
    };
    t.console = spcr.as_ref().and_then(|s| s.console());
    t.iort = iort;
    t.dmar = dmar;
    t
}

/// The host bridges the DSDT and SSDTs describe (empty without a DSDT),
/// and `\_S5`'s sleep types.
fn host_bridges_from_aml(
    set: &TableSet,
    ecam: &[EcamWindow],
    problems: &mut Vec<String>,
) -> (Vec<PciHostBridge>, Option<acpi_aml::SleepType>) {
    let Some(dsdt) = set.find(b"DSDT") else {
        return (Vec::new(), None);
    };
    let ssdts: Vec<&[u8]> = set
        .tables
        .iter()
        .filter(|t| &t.signature == b"SSDT")
        .map(|t| t.bytes)
        .collect();
    let platform = tables::AmlPlatform {
        ecam: ecam.to_vec(),
    };
    let t0 = crate::arch::now_ns();
    let found = acpi_aml::host_bridges(platform, dsdt, &ssdts);
    log::debug!(
        "AML: DSDT and {} SSDT(s) loaded, host bridges read in {} us",
        ssdts.len(),
        (crate::arch::now_ns() - t0) / 1000
    );
    match found {
        Ok(d) => {
            problems.extend(d.problems.iter().map(|p| format!("AML: {p}")));
            let bridges = d
                .bridges
                .into_iter()
                .map(PciHostBridge::from_acpi)
                .collect();
            (bridges, d.soft_off)
        }
        Err(e) => {
            problems.push(format!("AML: {e}"));
            (Vec::new(), None)
        }
    }
}

impl Topology {
    /// The host bridge whose bus range holds `bus` of `segment`: the root
    /// whose windows a function there decodes in.
    pub fn host_bridge_of(&self, segment: u16, bus: u8) -> Option<&PciHostBridge> {
        self.host_bridges
            .iter()
            .find(|b| b.segment == segment && (b.buses.0..=b.buses.1).contains(&bus))
    }

    /// The CPU-side MMIO ranges of the host bridges of `segment`: where
    /// BARs live, to be mapped as device memory.
    pub fn pci_mmio_windows(&self, segment: u16) -> Vec<PhysRange> {
        self.host_bridges
            .iter()
            .filter(|b| b.segment == segment)
            .flat_map(|b| b.mmio())
            .collect()
    }
}

fn list(ws: &[Window]) -> String {
    if ws.is_empty() {
        return "none".into();
    }
    let items: Vec<String> = ws.iter().map(|w| w.to_string()).collect();
    items.join(", ")
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
    for b in &t.host_bridges {
        log::info!(
            "  pci     segment {} windows: mem32 {}, mem64 {}, io {}; buses {:#x}-{:#x} ({})",
            b.segment,
            list(&b.mem32),
            list(&b.mem64),
            list(&b.io),
            b.buses.0,
            b.buses.1,
            b.source
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
    if let Some(off) = &t.soft_off {
        log::info!(
            "  soft-off SLP_TYP {}/{} into PM1a control {} {:#x}{} (FADT, \\_S5)",
            off.slp_typ.pm1a,
            off.slp_typ.pm1b,
            off.pm1a_cnt.space_name(),
            off.pm1a_cnt.address,
            off.pm1b_cnt
                .as_ref()
                .map_or(String::new(), |b| format!(", PM1b {:#x}", b.address)),
        );
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

/// Probes the root buses of each ECAM window, its first bus and the first
/// bus of every host bridge of its segment inside it (an expander's; full
/// enumeration is the PCI driver's job), and resolves every function
/// through the IORT or DMAR.
pub fn route_root_buses(t: &Topology) -> Vec<RoutedFunction> {
    let mut out = Vec::new();
    for w in &t.ecam {
        let mut roots: Vec<u8> = t
            .host_bridges
            .iter()
            .filter(|b| b.segment == w.segment)
            .map(|b| b.buses.0)
            .filter(|&b| b > w.start_bus && b <= w.end_bus)
            .collect();
        roots.push(w.start_bus);
        roots.sort_unstable();
        roots.dedup();
        for bus in roots {
            route_bus(t, w, bus, &mut out);
        }
    }
    out
}

/// Every function answering on `bus` of window `w`, routed.
fn route_bus(t: &Topology, w: &EcamWindow, bus: u8, out: &mut Vec<RoutedFunction>) {
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
