//! PCI enumeration.
use crate::{pcie, platform};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::harness::{TestError, TestResult};
use kernel::{cmdline, ensure, ensure_eq};
use pci::enumerate::BridgeKind;

/// Enumeration found the devices the board's test configuration adds,
/// behind the kind of bridge the board file says, without errors, and bus
/// numbers nest (every bridge's range inside its parent's). A device the
/// board file does not mention is logged, not a failure: the platform may
/// have more than the board file knows.
pub fn topology_matches_board() -> TestResult {
    let buses: Vec<_> = pcie::buses().collect();
    ensure!(!buses.is_empty(), "no PCI segment was enumerated");
    for b in &buses {
        ensure!(b.errors.is_empty(), "segment {}: {:?}", b.segment, b.errors);
        for br in &b.bridges {
            ensure!(
                br.secondary <= br.subordinate,
                "bridge {} buses {}..{}",
                br.bdf,
                br.secondary,
                br.subordinate
            );
            if let Some(parent) = br
                .parent
                .and_then(|p| b.bridges.iter().find(|x| x.bdf == p))
            {
                ensure!(
                    parent.secondary <= br.bdf.bus() && br.subordinate <= parent.subordinate,
                    "bridge {} ({}..{}) escapes its parent {} ({}..{})",
                    br.bdf,
                    br.secondary,
                    br.subordinate,
                    parent.bdf,
                    parent.secondary,
                    parent.subordinate
                );
            }
        }
    }
    let Some(want) = cmdline::get(&platform::get().cmdline, "expect.pci") else {
        return Err(TestError::skip(
            "no expect.pci= on the command line: not started by qemu-run",
        ));
    };
    let mut seen: Vec<String> = Vec::new();
    for b in &buses {
        for f in b.functions.iter().filter(|f| f.header_type == 0) {
            let Some(parent) = f.parent.and_then(|p| b.bridges.iter().find(|x| x.bdf == p)) else {
                continue;
            };
            let place = match parent.kind {
                BridgeKind::RootPort => "rootport",
                BridgeKind::SwitchDownstream => "switch",
                _ => "bridge",
            };
            seen.push(format!("{:04x}:{:04x}@{place}", f.vendor, f.device));
        }
    }
    let want: Vec<&str> = want.split(',').filter(|s| !s.is_empty()).collect();
    let (missing, extra) = unmatched(&want, &seen);
    for e in &extra {
        log::info!("endpoint {e} is not in the board file (expect.pci): left alone");
    }
    ensure!(
        missing.is_empty(),
        "endpoints the board file states (expect.pci) but enumeration did not find: {}; \
         found: {}",
        missing.join(","),
        seen.join(",")
    );
    Ok(())
}

/// What `want` names that `seen` lacks, and what `seen` has beyond `want`,
/// counting repeats (two `x@switch` stated need two found).
fn unmatched<'a>(want: &[&'a str], seen: &'a [String]) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut extra: Vec<&str> = seen.iter().map(String::as_str).collect();
    let mut missing = Vec::new();
    for &w in want {
        match extra.iter().position(|&s| s == w) {
            Some(i) => {
                extra.remove(i);
            }
            None => missing.push(w),
        }
    }
    missing.sort_unstable();
    extra.sort_unstable();
    (missing, extra)
}

/// Each edu device copies a buffer into its memory and back by DMA (the
/// IOMMUs not translating: VT-d translation disabled, the SMMU up with
/// bypass STEs), the bytes come back unchanged, and each completion raises
/// its MSI exactly once. The devices run each direction at the same time:
/// edu takes 100 ms (virtual) per DMA, so one device after another would
/// cost the suite 200 ms per device; started together they also show that
/// one function's DMA and MSI do not disturb another's.
pub fn edu_dma_round_trip_with_msi() -> TestResult {
    use crate::memory::DmaBuffer;
    use edu::{Direction, BUFFER_LEN, IRQ_DMA};
    use kernel::mm::PAGE_SIZE;

    struct Under {
        name: String,
        segment: u16,
        f: &'static pci::Function,
        edu: EduWithMsi,
        out: DmaBuffer,
        back: DmaBuffer,
    }
    let mut devs = Vec::new();
    for (segment, f, bar0) in pcie::functions_of(edu::VENDOR, edu::DEVICE, 0) {
        let buffer =
            || DmaBuffer::new(BUFFER_LEN, PAGE_SIZE).map_err(|e| TestError::fail(format!("{e}")));
        let mut out = buffer()?;
        for (i, b) in out.as_mut_slice().iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7) ^ f.bdf.bus();
        }
        devs.push(Under {
            name: format!("edu {}", f.bdf),
            segment,
            f,
            edu: edu_with_msi(segment, f, bar0)?,
            out,
            back: buffer()?,
        });
    }
    // What the board file says is there, `topology_matches_board` checks.
    if devs.is_empty() {
        return Err(TestError::skip(
            "no edu device (QEMU's DMA test device): nothing to test here",
        ));
    }
    let result = (|| -> TestResult {
        for dir in [Direction::ToDevice, Direction::ToRam] {
            let mut before = Vec::new();
            for d in &devs {
                let e = &d.edu;
                let buf = match dir {
                    Direction::ToDevice => &d.out,
                    Direction::ToRam => &d.back,
                };
                before.push(crate::arch::msi_count(e.vector.id));
                e.dev
                    .start_dma(dir, buf.phys().as_u64(), 0, BUFFER_LEN, true)
                    .map_err(|x| TestError::fail(format!("{}: {x:?}", d.name)))?;
            }
            // Started one after another within microseconds, each 100 ms
            // long: all still running, or the overlap was lost.
            let running = devs.iter().filter(|d| d.edu.dev.dma_busy()).count();
            ensure_eq!(running, devs.len(), "edu {dir:?} DMAs in flight together");
            for (d, &before) in devs.iter().zip(&before) {
                let e = &d.edu;
                wait_dma(&e.dev)
                    .map_err(|x| TestError::fail(format!("{}: {dir:?} DMA: {x:?}", d.name)))?;
                super::irq::wait_for_count(e.vector.id, before + 1);
                ensure_eq!(
                    crate::arch::msi_count(e.vector.id) - before,
                    1,
                    "{}: MSIs for one {dir:?} completion",
                    d.name
                );
                ensure_eq!(
                    e.dev.irq_status() & IRQ_DMA,
                    IRQ_DMA,
                    "{}: DMA bit in the interrupt status",
                    d.name
                );
                e.dev.ack_irq(IRQ_DMA);
            }
        }
        for d in &devs {
            let (out, back) = (d.out.as_slice(), d.back.as_slice());
            if let Some(i) = (0..BUFFER_LEN).find(|&i| back[i] != out[i]) {
                return Err(TestError::mismatch(
                    format!("{}: byte {i} changed on the round trip", d.name),
                    out[i],
                    back[i],
                ));
            }
        }
        Ok(())
    })();
    for d in devs {
        edu_release(d.segment, d.f, d.edu.claimed);
    }
    result
}

/// An edu function claimed, with its MSI pointed at a fresh vector.
pub(super) struct EduWithMsi {
    pub dev: edu::Edu,
    pub vector: crate::platform::MsiVector,
    pub claimed: pci::Claimed,
}

pub(super) fn edu_with_msi(
    segment: u16,
    f: &pci::Function,
    bar0: Option<u64>,
) -> Result<EduWithMsi, TestError> {
    let name = format!("edu {}", f.bdf);
    // Its DMA and MSIs untranslated (an SMMU that is off aborts them).
    crate::iommu::untranslated().map_err(TestError::fail)?;
    let bar0 = bar0.ok_or_else(|| TestError::fail(format!("{name}: BAR0 unassigned")))?;
    let vector = crate::arch::msi_alloc(msi_device_id(segment, f)).map_err(TestError::fail)?;
    let claimed = pcie::with_config(segment, |cfg, topo| {
        let claimed = pci::driver::claim(cfg, topo, f)?;
        pci::msi::enable_msi(cfg, f, vector.address, vector.data as u16).map(|()| claimed)
    })
    .ok_or_else(|| TestError::fail("segment vanished"))?
    .map_err(|e| TestError::fail(format!("{name}: {e}")))?;
    let dev = pcie::edu_at(bar0).map_err(|e| TestError::fail(format!("{name}: {e:?}")))?;
    Ok(EduWithMsi {
        dev,
        vector,
        claimed,
    })
}

pub(super) fn edu_release(segment: u16, f: &pci::Function, claimed: pci::Claimed) {
    pcie::with_config(segment, |cfg, _| {
        pci::msi::disable_msi(cfg, f.bdf, f);
        pci::driver::release(cfg, claimed);
    });
}

/// The ITS DeviceID of a function's MSIs (the IORT's answer); elsewhere unused.
pub(super) fn msi_device_id(segment: u16, f: &pci::Function) -> u32 {
    crate::discovery::get()
        .and_then(|t| t.iort.as_ref())
        .and_then(|i| i.resolve_pci(segment, u32::from(f.bdf.rid())).ok())
        .and_then(|r| r.msi.map(|m| m.device_id))
        .unwrap_or(u32::from(f.bdf.rid()))
}

/// The igb vector the MSI-X test drives.
const IGB_VECTOR: u16 = 3;
static IGB_HANDLED: AtomicU32 = AtomicU32::new(0);

/// Registered for the igb vector: acknowledges the cause, as a driver would.
fn on_igb(_id: u32, bar0: usize) {
    if let Some(igb) = pcie::igb_at(bar0 as u64) {
        let _ = igb.ack(IGB_VECTOR);
    }
    IGB_HANDLED.fetch_add(1, Ordering::Relaxed);
}

/// MSI-X through igb's table: a vector raised while unmasked arrives once
/// and its registered handler runs; raised while masked (by its own mask
/// bit, then by the function mask) it does not arrive, its pending bit is
/// set, and it arrives exactly once when unmasked.
pub fn msix_masked_vector_waits_for_unmask() -> TestResult {
    // MSI-X writes untranslated (an SMMU that is off aborts them).
    crate::iommu::untranslated().map_err(TestError::fail)?;
    let mut found = 0;
    for (segment, f, bar0) in pcie::functions_of(igb::VENDOR, igb::DEVICE, 0) {
        found += 1;
        let name = format!("igb {}", f.bdf);
        let msix = pcie::msix_of(f).map_err(|e| TestError::fail(format!("{e}")))?;
        ensure!(
            msix.vectors() >= igb::VECTORS,
            "{name}: {} MSI-X vectors, igb has {}",
            msix.vectors(),
            igb::VECTORS
        );
        let bar0 = bar0.ok_or_else(|| TestError::fail(format!("{name}: BAR0 unassigned")))?;
        let vector = crate::arch::msi_alloc(msi_device_id(segment, f)).map_err(TestError::fail)?;
        let claimed = pcie::with_config(segment, |cfg, topo| {
            let c = pci::driver::claim(cfg, topo, f)?;
            msix.enable(cfg, f);
            Ok::<_, pci::PciError>(c)
        })
        .ok_or_else(|| TestError::fail("segment vanished"))?
        .map_err(|e| TestError::fail(format!("{name}: {e}")))?;
        let igb = pcie::igb_at(bar0)
            .ok_or_else(|| TestError::fail(format!("{name}: not at {bar0:#x}")))?;
        crate::interrupts::register(vector.id, on_igb, bar0 as usize)
            .map_err(|e| TestError::fail(format!("{e}")))?;
        let result = msix_rounds(&msix, &igb, &vector, segment, &name);
        let _ = igb.disable(IGB_VECTOR);
        crate::interrupts::unregister(vector.id);
        pcie::with_config(segment, |cfg, _| {
            msix.disable(cfg);
            pci::driver::release(cfg, claimed);
        });
        result?;
    }
    // What the board file says is there, `topology_matches_board` checks.
    if found == 0 {
        return Err(TestError::skip(
            "no igb NIC (the MSI-X test device the CPU can trigger): nothing to test here",
        ));
    }
    Ok(())
}

fn msix_rounds(
    msix: &pci::msix::Msix,
    igb: &igb::Igb,
    vector: &crate::platform::MsiVector,
    segment: u16,
    name: &str,
) -> TestResult {
    let v = IGB_VECTOR;
    let pci_err = |e: pci::PciError| TestError::fail(format!("{e}"));
    let igb_err = |e: igb::IgbError| TestError::fail(format!("{name}: {e:?}"));
    let id = vector.id;
    igb.init_msix_mode();
    msix.program(v, vector.address, vector.data)
        .map_err(pci_err)?;
    igb.enable(v).map_err(igb_err)?;
    msix.unmask(v).map_err(pci_err)?;
    let counts = || {
        (
            crate::arch::msi_count(id),
            IGB_HANDLED.load(Ordering::Relaxed),
        )
    };
    // After a raise while unmasked, or when a hold ends: one message, one
    // handler run, the pending bit clear.
    let expect_one = |before: (u32, u32), what: &str| -> TestResult {
        super::irq::wait_for_count(id, before.0 + 1);
        let now = counts();
        ensure_eq!(now.0 - before.0, 1, "{name}: MSI-X deliveries {what}");
        ensure_eq!(now.1 - before.1, 1, "{name}: handler runs {what}");
        ensure_eq!(
            msix.pending(v).map_err(pci_err)?,
            false,
            "{name}: pending bit {what}"
        );
        Ok(())
    };
    // Raised while held back: nothing arrives, the pending bit is set.
    let expect_held = |what: &str| -> TestResult {
        let before = counts();
        igb.raise(v).map_err(igb_err)?;
        let t0 = crate::arch::now_ns();
        while crate::arch::now_ns() - t0 < HOLD_WATCH_NS {
            core::hint::spin_loop();
        }
        ensure_eq!(counts().0 - before.0, 0, "{name}: deliveries {what}");
        ensure_eq!(
            msix.pending(v).map_err(pci_err)?,
            true,
            "{name}: pending bit {what}"
        );
        Ok(())
    };

    let before = counts();
    igb.raise(v).map_err(igb_err)?;
    expect_one(before, "for a raise while unmasked")?;

    msix.mask(v).map_err(pci_err)?;
    expect_held("while the vector is masked")?;
    let before = counts();
    msix.unmask(v).map_err(pci_err)?;
    expect_one(before, "once the vector is unmasked")?;

    pcie::with_config(segment, |cfg, _| msix.set_function_mask(cfg, true));
    expect_held("while the function is masked")?;
    let before = counts();
    pcie::with_config(segment, |cfg, _| msix.set_function_mask(cfg, false));
    expect_one(before, "once the function mask is cleared")
}

/// How long a held-back vector is watched for a delivery that must not come.
const HOLD_WATCH_NS: u64 = 20_000_000;

/// Waits for an edu DMA: edu finishes one 100 ms (virtual) after it
/// starts, and ticks wake us. The watch closes after 2 s *and* 200 of this
/// CPU's own ticks, so a guest starved by a busy host is not failed for
/// time it never ran.
fn wait_dma(dev: &edu::Edu) -> Result<(), edu::EduError> {
    let watch = super::Watch::start(kernel::harness::Window {
        min_ns: 2_000_000_000,
        min_ticks: 200,
        cap_ns: 20_000_000_000,
    });
    loop {
        match dev.wait_dma(1, crate::arch::wait_for_interrupt) {
            Err(_) if !watch.closed() => {}
            done => return done,
        }
    }
}

/// Assigned BARs do not overlap, and where the host bridge windows are
/// known they lie inside the windows of their own host bridge.
pub fn bars_disjoint_and_inside_windows() -> TestResult {
    // The host bridges' windows as discovery found them: ACPI `_CRS` or
    // the devicetree's `ranges`. A function lies in the windows of the
    // host bridge whose bus range holds its bus (an expander's own, for
    // the functions behind it); all of them where none does.
    let windows_of = |segment: u16, bus: u8| -> Windows {
        let Some(t) = crate::discovery::get() else {
            return Vec::new();
        };
        let ranges = match t.host_bridge_of(segment, bus) {
            Some(b) => b.mmio(),
            None => t.host_bridges.iter().flat_map(|b| b.mmio()).collect(),
        };
        ranges.iter().map(|r| (r.start, r.end)).collect()
    };
    /// A placed BAR: its range, name, whether it is I/O space, and the
    /// windows of its host bridge.
    type Placed = (u64, u64, String, bool, Windows);
    type Windows = Vec<(u64, u64)>;
    let mut ranges: Vec<Placed> = Vec::new();
    for bus in pcie::buses() {
        for f in &bus.functions {
            let windows = windows_of(bus.segment, f.bdf.bus());
            for bar in &f.bars {
                let Some(at) = bar.cpu_address.or(bar.address) else {
                    continue;
                };
                let io = matches!(bar.kind, pci::bar::BarKind::Io);
                ranges.push((
                    at,
                    at.saturating_add(bar.size),
                    format!("{} BAR{}", f.bdf, bar.index),
                    io,
                    windows.clone(),
                ));
            }
        }
    }
    ensure!(!ranges.is_empty(), "no BAR was assigned");
    for (i, a) in ranges.iter().enumerate() {
        for b in &ranges[i + 1..] {
            ensure!(
                a.3 != b.3 || a.1 <= b.0 || b.1 <= a.0,
                "{} [{:#x}, {:#x}) overlaps {} [{:#x}, {:#x})",
                a.2,
                a.0,
                a.1,
                b.2,
                b.0,
                b.1
            );
        }
        if !a.4.is_empty() && !a.3 {
            ensure!(
                a.4.iter().any(|&(s, e)| s <= a.0 && a.1 <= e),
                "{} [{:#x}, {:#x}) lies outside its host bridge's windows {:x?}",
                a.2,
                a.0,
                a.1,
                a.4
            );
        }
    }
    Ok(())
}

/// Capability lists are read to the end: every root port shows its PCI
/// Express capability and, in the extended list, its ACS capability.
pub fn root_port_capabilities_complete() -> TestResult {
    use pci::caps::Capability;
    let mut ports = 0;
    for bus in pcie::buses() {
        for br in bus
            .bridges
            .iter()
            .filter(|b| matches!(b.kind, BridgeKind::RootPort))
        {
            let Some(f) = bus.functions.iter().find(|f| f.bdf == br.bdf) else {
                continue;
            };
            ports += 1;
            let names: Vec<String> = f
                .caps
                .iter()
                .map(|c| {
                    format!("{c:?}")
                        .split([' ', '{'])
                        .next()
                        .unwrap_or("")
                        .into()
                })
                .collect();
            ensure!(
                f.caps
                    .iter()
                    .any(|c| matches!(c, Capability::PciExpress { .. })),
                "root port {}: no PCIe capability in {names:?}",
                f.bdf
            );
            ensure!(
                f.caps.iter().any(|c| matches!(c, Capability::Acs { .. })),
                "root port {}: no ACS in the extended list {names:?}",
                f.bdf
            );
        }
    }
    if ports == 0 {
        return Err(TestError::skip(
            "no PCIe root port on this platform (only root-complex devices)",
        ));
    }
    Ok(())
}
