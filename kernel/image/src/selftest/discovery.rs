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
/// described IOMMUs, each with its own stream id; where the board file says
/// so (`expect.stream_ids=rid`: QEMU's IORT maps RIDs to StreamIDs one to
/// one, and on VT-d the source id is the RID), the stream id is the
/// requester id.
pub fn pci_functions_routed() -> TestResult {
    let t = topology()?;
    if t.ecam.is_empty() {
        return Err(TestError::skip("no ECAM window described"));
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
    let mut streams = Vec::new();
    for f in &functions {
        let name = format!("{:02x}:{:02x}.{}", f.bus, f.device, f.function);
        ensure!(
            f.problem.is_none(),
            "{name}: {}",
            f.problem.as_deref().unwrap_or("")
        );
        let Some((unit, stream)) = &f.iommu else {
            return Err(TestError::fail(format!("{name} bypasses every IOMMU")));
        };
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

/// Where the boot protocol also gave a devicetree, it and the ACPI tables
/// describe the same machine: SMMUs, ECAM, GIC distributor and ITS, the
/// console, and the same StreamID and ITS DeviceID for every bus-0 function.
pub fn acpi_agrees_with_devicetree() -> TestResult {
    let Some(dt) = crate::arch::devicetree() else {
        return Err(TestError::skip("no devicetree on this board"));
    };
    let t = topology()?;
    let acpi_smmus = set(t.iommus.iter().map(|u| format!("{:#x}", u.base)));
    let dt_smmus = set(dt.smmus.iter().map(|s| format!("{:#x}", s.base)));
    kernel::ensure_eq!(acpi_smmus, dt_smmus, "SMMU bases: IORT vs devicetree");
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
        kernel::ensure_eq!(
            acpi_iommu,
            dt_iommu,
            "SMMU and StreamID of RID {rid:#x}: IORT vs iommu-map"
        );
        let dt_msi = dt.msi_for(host, rid).map(|m| m.device_id);
        kernel::ensure_eq!(
            f.msi.as_ref().map(|m| m.1),
            dt_msi,
            "ITS DeviceID of RID {rid:#x}: IORT vs msi-map"
        );
    }
    Ok(())
}
