//! PCI enumeration of every ECAM window discovery found, each root bus in
//! it (ACPI host bridges; on a devicetree machine, expanders found behind
//! its host bridge) inside its own bus range. Bus numbers are
//! kept where firmware set them (q35) and assigned where nobody did (virt
//! booted with -kernel); BARs likewise: from the devicetree's host bridge
//! windows where nobody assigned them, and where firmware did (ACPI
//! machines), kept, with only unassigned BARs placed in the `_CRS` windows.
use crate::discovery::{EcamWindow, Topology};
use alloc::vec::Vec;
use kernel::addr::PhysRange;
use pci::assign::{assign, fill_unassigned, Window};
use pci::config::ConfigSpace;
use pci::ecam::Ecam;
use pci::enumerate::{enumerate, Policy, Topology as Bus};
use spin::Once;

struct Segment {
    window: EcamWindow,
    bus: Bus,
}

static SEGMENTS: Once<Vec<Segment>> = Once::new();

pub fn buses() -> impl Iterator<Item = &'static Bus> {
    SEGMENTS.get().into_iter().flatten().map(|s| &s.bus)
}

/// Every function with this vendor and device id, with its segment, and
/// the CPU address of its BAR `bar` (`None` when unassigned).
pub fn functions_of(
    vendor: u16,
    device: u16,
    bar: u8,
) -> impl Iterator<Item = (u16, &'static pci::Function, Option<u64>)> {
    buses().flat_map(move |b| {
        b.functions
            .iter()
            .filter(move |f| f.vendor == vendor && f.device == device)
            .map(move |f| {
                let at = f
                    .bars
                    .iter()
                    .find(|x| x.index == bar)
                    .and_then(|x| x.cpu_address);
                (b.segment, f, at)
            })
    })
}

/// Config access to the window the firmware described; `None` (logged)
/// when the window cannot be mapped as device memory.
pub fn ecam(w: &EcamWindow) -> Option<Ecam> {
    // MCFG's base is bus 0's; the accessor wants the first bus's.
    let base = w.base + (u64::from(w.start_bus) << 20);
    let config = PhysRange {
        start: base,
        end: w.base + ((u64::from(w.end_bus) + 1) << 20),
    };
    if !crate::mapping::map_device(config, "ECAM") {
        return None;
    }
    // SAFETY: the ECAM window the firmware described, mapped as device memory
    // just above; config accesses are serialised by the callers (boot, then
    // one test at a time).
    Some(unsafe { Ecam::new(base as usize, w.start_bus..=w.end_bus) })
}

/// Runs `f` with config access to `segment` and its enumeration.
pub fn with_config<R>(segment: u16, f: impl FnOnce(&mut Ecam, &Bus) -> R) -> Option<R> {
    let s = SEGMENTS
        .get()?
        .iter()
        .find(|s| s.window.segment == segment)?;
    Some(f(&mut ecam(&s.window)?, &s.bus))
}

/// The host bridge windows the devicetree gives for the bridge with this ECAM.
fn dt_windows(w: &EcamWindow) -> Option<Vec<Window>> {
    let dt = crate::arch::devicetree()?;
    let host = dt
        .pcie
        .iter()
        .find(|h| h.ecam.base == w.base + (u64::from(w.start_bus) << 20))?;
    Some(host.windows.iter().filter_map(Window::from_dt).collect())
}

/// The windows of one host bridge discovery read from ACPI `_CRS`.
fn acpi_windows(b: &crate::discovery::PciHostBridge) -> Vec<Window> {
    let kinds = [
        (&b.io, pci::bar::BarKind::Io),
        (&b.mem32, pci::bar::BarKind::Mem32),
        (&b.mem64, pci::bar::BarKind::Mem64),
    ];
    let mut out = Vec::new();
    for (ws, kind) in kinds {
        out.extend(ws.iter().map(|w| Window {
            kind,
            prefetchable: false,
            cpu_base: w.cpu_start(),
            pci_base: w.start,
            size: w.len(),
        }));
    }
    out
}

/// Segments enumerated from the devicetree before the ACPI tables were
/// read (see [`enumerate_early`]), waiting for [`enumerate_all`].
static EARLY: spin::Mutex<Vec<Segment>> = spin::Mutex::new(Vec::new());

/// Maps every placed memory BAR as device memory (windows the firmware
/// described are mapped already; this covers BARs firmware placed where
/// no window we know of says). A BAR that cannot be mapped is dropped
/// (`cpu_address` cleared): nothing binds to it, and the log says why.
fn map_bars(bus: &mut Bus) {
    for f in &mut bus.functions {
        for b in &mut f.bars {
            let (Some(at), true) = (b.cpu_address, b.kind != pci::BarKind::Io) else {
                continue;
            };
            let r = PhysRange::new(at, b.size);
            if !crate::mapping::map_device(r, "BAR") {
                log::error!("{} BAR{}: {r} left unbound", f.bdf, b.index);
                b.cpu_address = None;
            }
        }
    }
}

/// Enumerates every devicetree host bridge before the ACPI tables are
/// read. QEMU builds its tables when they are first read, and the IORT
/// maps each host bridge's RIDs by the bus range programmed at that
/// moment: without this, functions behind bridges on virt (booted without
/// firmware, so nobody numbered the buses) would have no StreamID in the
/// IORT. [`enumerate_all`] takes these segments over instead of scanning
/// them again. Runs once: the Arm ACPI boot path calls it before it reads
/// the tables for its boot facts, and `kmain` then finds it done.
pub fn enumerate_early() {
    static DONE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if DONE.swap(true, core::sync::atomic::Ordering::AcqRel) {
        return;
    }
    let Some(dt) = crate::arch::devicetree() else {
        return;
    };
    let segments = dt
        .pcie
        .iter()
        .map(|h| {
            let start = *h.bus_range.start();
            enumerate_window(&EcamWindow {
                segment: h.domain.unwrap_or(0) as u16,
                base: h.ecam.base - (u64::from(start) << 20),
                start_bus: start,
                end_bus: *h.bus_range.end(),
            })
        })
        .collect();
    *EARLY.lock() = segments;
}

/// Scans one ECAM window, every root bus in it: bus numbers,
/// capabilities, BARs (assigned from the devicetree's host bridge windows
/// where there is one, else kept from firmware and completed inside each
/// ACPI host bridge's `_CRS` windows).
fn enumerate_window(w: &EcamWindow) -> Segment {
    let t0 = crate::arch::now_ns();
    let Some(mut cfg) = ecam(w) else {
        log::error!("pci segment {}: ECAM not mapped, not enumerated", w.segment);
        return Segment {
            window: w.clone(),
            bus: Bus {
                segment: w.segment,
                root_buses: w.start_bus..=w.end_bus,
                policy: Policy::default(),
                functions: Vec::new(),
                bridges: Vec::new(),
                errors: Vec::new(),
            },
        };
    };
    let mut bus = match dt_windows(w) {
        Some(windows) => enumerate_dt(&mut cfg, w, &windows),
        None => enumerate_acpi(&mut cfg, w),
    };
    map_bars(&mut bus);
    log::info!(
        "pci segment {}: {} function(s), {} bridge(s), {} error(s) in {} us",
        bus.segment,
        bus.functions.len(),
        bus.bridges.len(),
        bus.errors.len(),
        (crate::arch::now_ns() - t0) / 1000
    );
    Segment {
        window: w.clone(),
        bus,
    }
}

/// A devicetree host bridge: its root bus, and every further root bus
/// found behind it (an expander bridge's, which the devicetree does not
/// describe), each numbered inside its own bus range so that no bus
/// number is on both sides; then BARs from the devicetree's windows, which
/// the expanders decode inside too. Bus numbers and windows set here are
/// what the ACPI tables (built when first read, after this) describe.
fn enumerate_dt(cfg: &mut Ecam, w: &EcamWindow, windows: &[Window]) -> Bus {
    let range = w.start_bus..=w.end_bus;
    let peers = pci::peer_root_buses(&*cfg, range.clone());
    let mut roots = pci::root_ranges(range.clone(), &peers).into_iter();
    let first = roots.next().unwrap_or(range);
    let mut bus = enumerate(cfg, w.segment, first, Policy::default());
    for root in roots {
        log::info!(
            "pci segment {}: a further root bus {:#x} (buses {:#x}-{:#x})",
            w.segment,
            root.start(),
            root.start(),
            root.end()
        );
        bus.merge(enumerate(cfg, w.segment, root, Policy::default()));
    }
    // Every devicetree window is CPU memory (I/O space too, on the
    // platforms that describe themselves this way).
    for win in windows {
        let r = PhysRange::new(win.cpu_base, win.size);
        crate::mapping::map_device(r, "PCI host-bridge window");
    }
    let errors = assign(cfg, &mut bus, windows);
    bus.errors.extend(errors);
    decode_expander_ports(cfg, &bus, &peers);
    bus
}

/// Turns memory decoding on for the bridges on the expanders' root buses
/// that have a memory BAR of their own (as claiming a function behind
/// them would). Without firmware, the platform describes an expander's
/// windows (its `_CRS`, built when the ACPI tables are first read) from
/// what decodes on its root bus then: bridge windows always, a function's
/// own BARs only with memory decoding on; a root port's BAR would
/// otherwise lie outside its host bridge's windows. Nothing behind the
/// bridges decodes until a driver claims it.
fn decode_expander_ports(cfg: &mut Ecam, bus: &Bus, peers: &[u8]) {
    let ports = bus
        .functions
        .iter()
        .filter(|f| f.parent.is_none() && f.header_type == 1 && peers.contains(&f.bdf.bus()));
    for f in ports {
        let memory = f
            .bars
            .iter()
            .any(|b| b.kind != pci::BarKind::Io && b.address.is_some());
        if memory {
            let cmd = cfg.command(f.bdf);
            cfg.write_command(f.bdf, cmd | pci::config::CMD_MEMORY);
        }
    }
}

/// Firmware (a PC's BIOS or UEFI) numbered the buses and assigned
/// resources: each ACPI host bridge of the window's segment is a root bus
/// scanned inside its own `_CRS` bus range, its firmware BARs and bridge
/// windows kept and only what firmware left unassigned placed inside its
/// own `_CRS` windows.
fn enumerate_acpi(cfg: &mut Ecam, w: &EcamWindow) -> Bus {
    let mut bridges: Vec<&crate::discovery::PciHostBridge> = crate::discovery::get()
        .map(|t| {
            t.host_bridges
                .iter()
                .filter(|b| b.segment == w.segment)
                .filter(|b| b.buses.0 >= w.start_bus && b.buses.0 <= w.end_bus)
                .collect()
        })
        .unwrap_or_default();
    bridges.sort_by_key(|b| b.buses.0);
    if let Some(t) = crate::discovery::get() {
        for r in t.pci_mmio_windows(w.segment) {
            crate::mapping::map_device(r, "PCI host-bridge window");
        }
    }
    let mut roots: Vec<(core::ops::RangeInclusive<u8>, Vec<Window>)> = bridges
        .iter()
        .map(|b| {
            (
                b.buses.0..=b.buses.1.clamp(b.buses.0, w.end_bus),
                acpi_windows(b),
            )
        })
        .collect();
    if roots.is_empty() {
        // No host bridge described: one root over the whole window.
        roots.push((w.start_bus..=w.end_bus, Vec::new()));
    }
    let mut all: Option<Bus> = None;
    for (root, windows) in roots {
        let mut bus = enumerate(cfg, w.segment, root, Policy::default());
        if windows.is_empty() {
            // No windows known: take firmware's addresses as the CPU's own
            // (what a PC's host bridge does).
            for f in &mut bus.functions {
                for bar in &mut f.bars {
                    bar.cpu_address = bar.address;
                }
            }
        } else {
            let errors = fill_unassigned(cfg, &mut bus, &windows);
            bus.errors.extend(errors);
        }
        match &mut all {
            Some(a) => a.merge(bus),
            None => all = Some(bus),
        }
    }
    all.unwrap_or_else(|| enumerate(cfg, w.segment, w.start_bus..=w.end_bus, Policy::default()))
}

/// Every ECAM window discovery found, enumerated (or taken over from
/// [`enumerate_early`] when it is the same window), then reported.
pub fn enumerate_all(t: &Topology) {
    SEGMENTS.call_once(|| {
        let mut early = core::mem::take(&mut *EARLY.lock());
        let mut segments: Vec<Segment> = t
            .ecam
            .iter()
            .map(|w| match early.iter().position(|s| s.window == *w) {
                Some(i) => early.swap_remove(i),
                None => enumerate_window(w),
            })
            .collect();
        // A devicetree host bridge the MCFG does not name is still a bus.
        segments.extend(early);
        for s in &segments {
            let b = &s.bus;
            for f in &b.functions {
                log::info!(
                    "  {} {:04x}:{:04x} class {:06x}{}",
                    f.bdf,
                    f.vendor,
                    f.device,
                    f.class,
                    f.parent
                        .map(|p| alloc::format!(" behind {p}"))
                        .unwrap_or_default()
                );
                for bar in &f.bars {
                    log::debug!(
                        "    BAR{} {:?} size {:#x} at {:x?}",
                        bar.index,
                        bar.kind,
                        bar.size,
                        bar.cpu_address.or(bar.address)
                    );
                }
            }
            for e in &b.errors {
                log::warn!("  error: {e}");
            }
            report_bars_outside_windows(t, b);
        }
        segments
    });
}

/// Memory BARs firmware (or we) placed where no host-bridge window of
/// their segment reaches: the CPU cannot reach them there. Reported, not
/// moved (firmware's assignment is kept; see docs/pci.md).
fn report_bars_outside_windows(t: &Topology, b: &Bus) {
    let windows = t.pci_mmio_windows(b.segment);
    if windows.is_empty() {
        return;
    }
    for f in &b.functions {
        for bar in f.bars.iter().filter(|x| x.kind != pci::bar::BarKind::Io) {
            let Some(at) = bar.cpu_address else { continue };
            let end = at.saturating_add(bar.size);
            if !windows.iter().any(|w| w.start <= at && end <= w.end) {
                log::warn!(
                    "  {} BAR{} at {at:#x} (size {:#x}) is outside segment {}'s host bridge windows",
                    f.bdf,
                    bar.index,
                    bar.size,
                    b.segment
                );
            }
        }
    }
}

/// Whether enumeration placed BAR0 of a vendor:device function at `bar0`:
/// the check before a driver maps it.
fn bar0_placed(vendor: u16, device: u16, bar0: u64) -> bool {
    functions_of(vendor, device, 0).any(|(_, _, at)| at == Some(bar0))
}

/// The igb function whose BAR0 enumeration placed at `bar0` (device
/// memory inside a host bridge window the arch maps).
pub fn igb_at(bar0: u64) -> Option<igb::Igb> {
    let known = bar0_placed(igb::VENDOR, igb::DEVICE, bar0);
    // SAFETY: BAR0 of an igb function enumeration found and placed, mapped
    // as device memory; the MSI-X test is its only driver.
    known.then(|| unsafe { igb::Igb::new(bar0 as usize) })
}

/// Why a device's registers cannot be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindError {
    /// Enumeration placed no such function's BAR0 there.
    NotPlaced {
        bar0: u64,
    },
    /// A driver holds it already (until its binding is released).
    InUse {
        bar0: u64,
    },
    Device(pasid_dma::PasidDmaError),
}

impl core::fmt::Display for BindError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BindError::NotPlaced { bar0 } => {
                write!(f, "no function of that kind has BAR0 at {bar0:#x}")
            }
            BindError::InUse { bar0 } => write!(f, "the device at {bar0:#x} has a driver"),
            BindError::Device(e) => write!(f, "{e}"),
        }
    }
}

/// BAR0s of pasid-dma functions a driver holds.
static BOUND: spin::Mutex<alloc::collections::BTreeSet<u64>> =
    spin::Mutex::new(alloc::collections::BTreeSet::new());

/// The pasid-dma function whose BAR0 enumeration placed at `bar0`, bound
/// to its one driver until [`release_pasid_dma`]: a second binding is
/// refused, so only one owner ever drives the registers.
pub fn pasid_dma_at(bar0: u64) -> Result<pasid_dma::PasidDma, BindError> {
    if !bar0_placed(pasid_dma::VENDOR, pasid_dma::DEVICE, bar0) {
        return Err(BindError::NotPlaced { bar0 });
    }
    let mut bound = BOUND.lock();
    if !bound.insert(bar0) {
        return Err(BindError::InUse { bar0 });
    }
    // SAFETY: BAR0 of a pasid-dma function enumeration found and placed,
    // mapped as device memory; `BOUND` makes this its only binding.
    let dev = unsafe { pasid_dma::PasidDma::new(bar0 as usize) };
    if dev.is_err() {
        bound.remove(&bar0);
    }
    dev.map_err(BindError::Device)
}

/// Gives up the binding of the pasid-dma at `bar0` (its driver is gone).
pub fn release_pasid_dma(bar0: u64) {
    BOUND.lock().remove(&bar0);
}

/// The SMMUv3 whose register frame discovery found at `base` (identity-
/// mapped as device memory with the rest of the low MMIO).
pub fn smmuv3_at(base: u64) -> Option<smmuv3::probe::Smmu> {
    let known = crate::discovery::get().is_some_and(|t| {
        t.iommus
            .iter()
            .any(|u| u.kind == crate::discovery::IommuKind::SmmuV3 && u.base == base)
    });
    // Register pages 0 and 1 (64 KiB each): the architected frame.
    let mapped = known && crate::mapping::map_device(PhysRange::new(base, 0x2_0000), "SMMUv3");
    // SAFETY: an SMMUv3 frame the firmware tables name, mapped as device
    // memory just above; the self-tests read its ID registers only.
    mapped.then(|| unsafe { smmuv3::probe::Smmu::new(base as usize) })
}

/// The VT-d unit whose registers discovery found at `base` (identity-mapped
/// as uncached memory below 4 GiB).
pub fn vtd_at(base: u64) -> Option<vtd::probe::Unit> {
    let known = crate::discovery::get().is_some_and(|t| {
        t.iommus
            .iter()
            .any(|u| u.kind == crate::discovery::IommuKind::VtdDrhd && u.base == base)
    });
    // The DRHD's size field: 2^N pages (0, one page, in older tables).
    let pages = crate::discovery::get()
        .and_then(|t| t.dmar.as_ref())
        .and_then(|d| d.drhds().find(|u| u.register_base == base))
        .map_or(1, |u| 1u64 << (u.size & 0xf));
    let mapped = known && crate::mapping::map_device(PhysRange::new(base, pages << 12), "VT-d");
    // SAFETY: a DRHD register set the DMAR names, mapped uncached just
    // above; the self-tests read its identification only.
    mapped.then(|| unsafe { vtd::probe::Unit::new(base as usize) })
}

/// The MSI-X table and PBA of a function enumeration placed, mapped.
pub fn msix_of(f: &pci::Function) -> Result<pci::msix::Msix, pci::PciError> {
    let layout = pci::msix::locate(f)?;
    // SAFETY: `locate` checked both structures lie inside assigned memory
    // BARs, which are in host bridge windows the arch maps as device memory.
    Ok(unsafe { pci::msix::Msix::new(layout) })
}

/// The edu device whose BAR0 enumeration placed at `bar0` (identity-mapped
/// as device memory: inside a host bridge window the arch maps).
pub fn edu_at(bar0: u64) -> Result<edu::Edu, edu::EduError> {
    let known = buses().any(|b| {
        b.functions.iter().any(|f| {
            f.vendor == edu::VENDOR
                && f.bars
                    .iter()
                    .any(|bar| bar.index == 0 && bar.cpu_address.or(bar.address) == Some(bar0))
        })
    });
    if !known {
        return Err(edu::EduError::NotEdu { id: 0 });
    }
    // SAFETY: BAR0 of an edu function enumeration found and placed, in MMIO
    // the arch maps as device memory; the caller is its only driver.
    unsafe { edu::Edu::new(bar0 as usize) }
}
