//! Platform discovery: what the firmware tables say matches what the board
//! file told QEMU to create (`expect.*` on the command line).
use crate::discovery::{self, describe, Topology};
use crate::platform;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kernel::cmdline;
use kernel::ensure;
use kernel::harness::{TestError, TestResult};

fn topology() -> Result<&'static Topology, TestError> {
    discovery::get().ok_or_else(|| TestError::fail("discovery did not run before the tests"))
}

fn expected(key: &str) -> Result<&'static str, TestError> {
    let key = format!("expect.{key}");
    cmdline::get(&platform::get().cmdline, &key).ok_or_else(|| {
        TestError::skip(format!(
            "no {key}= on the command line: not started by qemu-run"
        ))
    })
}

/// Sorted, comma-joined, so order in the tables does not matter.
fn set(items: impl Iterator<Item = String>) -> String {
    let mut v: Vec<String> = items.collect();
    v.sort();
    v.join(",")
}

/// Every table the root table lists was found and parsed without error.
pub fn tables_parse_cleanly() -> TestResult {
    let t = topology()?;
    ensure!(t.source != "none", "no ACPI tables: {:?}", t.problems);
    ensure!(t.problems.is_empty(), "problems: {:?}", t.problems);
    Ok(())
}

/// The IOMMUs described are the ones the board's QEMU command line creates.
pub fn iommus_match_board() -> TestResult {
    let want = expected("iommus")?;
    let t = topology()?;
    let seen = set(t
        .iommus
        .iter()
        .map(|u| format!("{}@{:#x}", u.kind.short(), u.base)));
    let want = set(want
        .split(',')
        .filter(|s| !s.is_empty() && *s != "none")
        .map(String::from));
    kernel::ensure_eq!(seen, want, "IOMMUs in the firmware tables (kind@base)");
    Ok(())
}

/// The ECAM windows described are the board's.
pub fn ecam_matches_board() -> TestResult {
    let want = expected("ecam")?;
    let t = topology()?;
    let seen = set(t
        .ecam
        .iter()
        .map(|e| format!("{}@{:#x}:{}-{}", e.segment, e.base, e.start_bus, e.end_bus)));
    let want = set(want
        .split(',')
        .filter(|s| !s.is_empty() && *s != "none")
        .map(String::from));
    kernel::ensure_eq!(seen, want, "ECAM windows in the MCFG (segment@base:buses)");
    Ok(())
}

/// The SPCR names the board's console, or there is none where QEMU gives none.
pub fn console_matches_board() -> TestResult {
    let want = expected("console")?;
    let t = topology()?;
    let seen = match &t.console {
        None => String::from("none"),
        Some(c) => {
            let kind = match c.kind {
                acpi_tables::spcr::ConsoleKind::Pl011 => String::from("pl011"),
                acpi_tables::spcr::ConsoleKind::Uart16550 => String::from("16550"),
                acpi_tables::spcr::ConsoleKind::Other(n) => format!("type{n}"),
            };
            format!("{kind}@{:#x}", c.address)
        }
    };
    kernel::ensure_eq!(seen, String::from(want), "console in the SPCR (kind@base)");
    Ok(())
}

/// Every function on a root bus of each segment (its first bus, and each
/// further host bridge's, as an expander's) resolves to one of the
/// described IOMMUs, each with its own stream id (but on the root buses
/// the board file says bypass: `expect.bypass_buses=0,...`, where QEMU's
/// IORT sends a root bus without an SMMU straight to the ITS); where the board file says
/// so (`expect.stream_ids=rid`: QEMU's IORT maps RIDs to StreamIDs one to
/// one, and on VT-d the source id is the RID), the stream id is the
/// requester id.
pub fn pci_functions_routed() -> TestResult {
    let t = topology()?;
    if t.ecam.is_empty() {
        return Err(TestError::skip("no ECAM window described"));
    }
    if t.iommus.is_empty() {
        return Err(TestError::skip(
            "no IOMMU described: every function bypasses translation",
        ));
    }
    let functions = discovery::route_root_buses(t);
    ensure!(
        !functions.is_empty(),
        "no PCI function answered on bus 0 of {:?}",
        t.ecam
    );
    let rid_is_stream = match cmdline::get(&platform::get().cmdline, "expect.stream_ids") {
        None => false,
        Some("rid") => true,
        Some(other) => {
            return Err(TestError::fail(format!(
                "expect.stream_ids={other}: the only statement known is `rid`"
            )))
        }
    };
    let bypass_buses: Vec<u8> = match cmdline::get(&platform::get().cmdline, "expect.bypass_buses")
    {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|b| b.parse::<u8>())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                TestError::fail(format!("expect.bypass_buses={list}: want bus numbers"))
            })?,
    };
    let mut streams = Vec::new();
    for f in &functions {
        let name = format!("{:02x}:{:02x}.{}", f.bus, f.device, f.function);
        ensure!(
            f.problem.is_none(),
            "{name}: {}",
            f.problem.as_deref().unwrap_or("")
        );
        let bypasses = bypass_buses.contains(&f.bus);
        let Some((unit, stream)) = &f.iommu else {
            if bypasses {
                continue;
            }
            return Err(TestError::fail(format!("{name} bypasses every IOMMU")));
        };
        ensure!(
            !bypasses,
            "{name} routes to {} but the board says its bus bypasses",
            describe(unit)
        );
        ensure!(
            t.iommus.contains(unit),
            "{name} routes to {} which is not in the topology",
            describe(unit)
        );
        let rid = (f.bus as u32) << 8 | (f.device as u32) << 3 | f.function as u32;
        if rid_is_stream {
            kernel::ensure_eq!(*stream, rid, "stream id of {name}");
        }
        ensure!(
            !streams.contains(&(unit.base, *stream)),
            "{name} shares stream id {stream:#x} with another function"
        );
        streams.push((unit.base, *stream));
        if t.gicd.is_some() && !t.gic_its.is_empty() {
            ensure!(f.msi.is_some(), "{name}: no ITS for its MSIs");
        }
    }
    Ok(())
}

/// Which endpoints sit behind each IOMMU unit, by the image's routing
/// (IORT ID mappings; DMAR device scopes, else INCLUDE_PCI_ALL) over the
/// whole enumeration, said on the console per unit. Where the board file
/// names them (`expect.iommu_endpoints=UNIT/VID:DID+VID:DID;UNIT/...`,
/// UNIT as in `expect.iommus`), each named endpoint is found behind its
/// unit (endpoints it does not name are only logged), and every unit it
/// names is one the firmware describes.
pub fn devices_behind_each_unit() -> TestResult {
    let t = topology()?;
    let units = crate::iommu::units();
    if units.is_empty() {
        return Err(TestError::skip(
            "the firmware tables describe no IOMMU this image drives",
        ));
    }
    let kind = t
        .iommus
        .iter()
        .find(|u| u.base == units[0])
        .map_or("?", |u| u.kind.short());
    let unit_key = |base: u64| format!("{kind}@{base:#x}");
    let mut behind: Vec<(String, Vec<String>)> =
        units.iter().map(|&u| (unit_key(u), Vec::new())).collect();
    let mut untranslated = Vec::new();
    for bus in crate::pcie::buses() {
        for f in bus.functions.iter().filter(|f| f.header_type == 0) {
            let id = format!("{:04x}:{:04x}", f.vendor, f.device);
            match crate::iommu::route(bus.segment, f) {
                Some(r) => match behind.iter_mut().find(|(k, _)| *k == unit_key(r.unit)) {
                    Some((_, list)) => list.push(id),
                    None => {
                        return Err(TestError::fail(format!(
                            "{} is routed to {} which is not a unit the firmware describes",
                            f.bdf,
                            unit_key(r.unit)
                        )))
                    }
                },
                None => untranslated.push(format!("{id}@{}", f.bdf)),
            }
        }
    }
    log::info!("{} IOMMU unit(s)", behind.len());
    for (unit, list) in &behind {
        log::info!("  {unit}: {} endpoint(s): {}", list.len(), list.join(", "));
    }
    if !untranslated.is_empty() {
        log::info!("  behind no unit: {}", untranslated.join(", "));
    }
    let Some(want) = cmdline::get(&platform::get().cmdline, "expect.iommu_endpoints") else {
        return Err(TestError::skip(
            "no expect.iommu_endpoints= on the command line (the routing is logged above)",
        ));
    };
    for entry in want.split(';').filter(|e| !e.is_empty()) {
        let (unit, ids) = entry.split_once('/').ok_or_else(|| {
            TestError::fail(format!("expect.iommu_endpoints: {entry:?} is not UNIT/IDS"))
        })?;
        let Some((_, found)) = behind.iter().find(|(k, _)| k == unit) else {
            return Err(TestError::fail(format!(
                "expect.iommu_endpoints names {unit}, which the firmware does not describe"
            )));
        };
        let mut left = found.clone();
        for id in ids.split('+').filter(|i| !i.is_empty()) {
            let Some(at) = left.iter().position(|x| x == id) else {
                return Err(TestError::mismatch(
                    format!("endpoints behind {unit}"),
                    ids,
                    found.join("+"),
                ));
            };
            left.swap_remove(at);
        }
    }
    Ok(())
}

/// Where the boot information gives an RSDP, a scan of the BIOS areas
/// finds the same one (the fallback when no boot protocol says). Under
/// UEFI there are no BIOS areas; there the RSDP from the configuration
/// table must lie outside the RAM the kernel hands out (firmware keeps it
/// in ACPI or reserved memory), or the page allocator would overwrite it.
pub fn rsdp_scan_agrees() -> TestResult {
    let boot = platform::get();
    let given = match boot.acpi {
        crate::platform::AcpiEntry::Rsdp(given) => Some(given),
        _ => None,
    };
    if boot.memory_source == platform::UEFI_MEMORY_MAP {
        let Some(given) = given else {
            return Err(TestError::skip("UEFI gave no RSDP"));
        };
        if let Some(r) = boot.ram.iter().find(|r| r.contains(given)) {
            return Err(TestError::fail(format!(
                "the RSDP at {given:#x} lies in RAM {r} that the UEFI memory map calls free"
            )));
        }
        return Ok(());
    }
    let Some(scanned) = crate::arch::legacy_rsdp_scan() else {
        return Err(TestError::skip(
            "this architecture has no BIOS areas to scan",
        ));
    };
    let Some(given) = given else {
        return Err(TestError::skip(
            "the boot information gave no RSDP to compare with",
        ));
    };
    kernel::ensure_eq!(
        scanned,
        Some(given),
        "RSDP found by scanning the EBDA and 0xe0000..0x100000"
    );
    Ok(())
}

/// The facts the Arm boot path takes from the devicetree or from ACPI
/// (`acpi=force`) are the same either way.
#[cfg(target_arch = "aarch64")]
fn boot_facts_agree() -> TestResult {
    let acpi = crate::arch::acpi_boot_facts()
        .map_err(|e| TestError::fail(format!("boot facts from ACPI: {e}")))?;
    let Some(dt) = crate::arch::devicetree_boot_facts() else {
        return Ok(());
    };
    let dt = dt.map_err(|e| TestError::fail(format!("boot facts from the devicetree: {e}")))?;
    kernel::ensure_eq!(acpi.gicd, dt.gicd, "GIC distributor: MADT vs devicetree");
    kernel::ensure_eq!(
        set(acpi.gicr.iter().map(|r| format!("{r}"))),
        set(dt.gicr.iter().map(|r| format!("{r}"))),
        "GIC redistributor regions: MADT vs devicetree"
    );
    kernel::ensure_eq!(
        acpi.timer_intid,
        dt.timer_intid,
        "EL1 physical timer INTID: GTDT vs devicetree /timer"
    );
    kernel::ensure_eq!(
        acpi.psci_hvc,
        dt.psci_hvc,
        "PSCI through HVC: FADT vs devicetree /psci"
    );
    kernel::ensure_eq!(
        set(acpi.mpidr.iter().map(|m| format!("{m:#x}"))),
        set(dt.mpidr.iter().map(|m| format!("{m:#x}"))),
        "CPU MPIDRs: MADT GICC vs devicetree /cpus"
    );
    kernel::ensure_eq!(
        acpi.console.map(|u| (u.base, u.kind)),
        dt.console.map(|u| (u.base, u.kind)),
        "console UART: SPCR vs devicetree stdout"
    );
    Ok(())
}

/// Where the boot protocol also gave a devicetree, it and the ACPI tables
/// describe the same machine: SMMUs, ECAM, GIC distributor and ITS, the
/// console, the same StreamID and ITS DeviceID for every bus-0 function,
/// and on Arm the same boot facts (GIC, timer interrupt, CPUs, PSCI).
pub fn acpi_agrees_with_devicetree() -> TestResult {
    let Some(dt) = crate::arch::devicetree() else {
        return Err(TestError::skip("no devicetree on this board"));
    };
    #[cfg(target_arch = "aarch64")]
    boot_facts_agree()?;
    let t = topology()?;
    let acpi_smmus = set(t.iommus.iter().map(|u| format!("{:#x}", u.base)));
    let dt_smmus = set(dt.smmus.iter().map(|s| format!("{:#x}", s.base)));
    // QEMU puts user-created SMMUs (`-device arm-smmuv3`) in the IORT
    // only: a devicetree with no SMMU at all says nothing of them.
    let dt_knows_smmus = !dt.smmus.is_empty();
    if dt_knows_smmus {
        kernel::ensure_eq!(acpi_smmus, dt_smmus, "SMMU bases: IORT vs devicetree");
    } else if !acpi_smmus.is_empty() {
        log::info!("the devicetree describes no SMMU, the IORT {acpi_smmus}: not compared");
    }
    let acpi_ecam = set(t.ecam.iter().map(|e| format!("{:#x}", e.base)));
    let dt_ecam = set(dt.pcie.iter().map(|h| format!("{:#x}", h.ecam.base)));
    kernel::ensure_eq!(acpi_ecam, dt_ecam, "ECAM bases: MCFG vs devicetree");
    if let devicetree::Gic::V3(gic) = &dt.gic {
        kernel::ensure_eq!(
            t.gicd,
            Some(gic.distributor.base),
            "GIC distributor: MADT vs devicetree"
        );
        let dt_its = set(gic.its.iter().map(|i| format!("{:#x}", i.base)));
        kernel::ensure_eq!(
            set(t.gic_its.iter().map(|b| format!("{b:#x}"))),
            dt_its,
            "ITS: MADT vs devicetree"
        );
    }
    kernel::ensure_eq!(
        t.console.as_ref().map(|c| c.address),
        dt.console.as_ref().map(|c| c.base),
        "console: SPCR vs devicetree stdout"
    );
    let Some(host) = dt.pcie.first() else {
        return Ok(());
    };
    for f in discovery::route_root_buses(t) {
        let rid = (f.bus as u16) << 8 | (f.device as u16) << 3 | f.function as u16;
        let dt_iommu = dt.iommu_for(host, rid).map(|i| (i.smmu_base, i.stream_id));
        let acpi_iommu = f.iommu.as_ref().map(|(u, sid)| (Some(u.base), *sid));
        if dt_knows_smmus {
            kernel::ensure_eq!(
                acpi_iommu,
                dt_iommu,
                "SMMU and StreamID of RID {rid:#x}: IORT vs iommu-map"
            );
        }
        let dt_msi = dt.msi_for(host, rid).map(|m| m.device_id);
        kernel::ensure_eq!(
            f.msi.as_ref().map(|m| m.1),
            dt_msi,
            "ITS DeviceID of RID {rid:#x}: IORT vs msi-map"
        );
    }
    Ok(())
}
