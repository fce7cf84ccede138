//! The IOMMUs themselves, read and driven from the hardware (the drivers
//! are issues 7 and 8).
use crate::{discovery, pcie};
use kernel::harness::{TestError, TestResult};
use kernel::{ensure, ensure_eq};

/// The register bases of the IOMMUs of `kind` the firmware tables name;
/// SKIP when there is none.
fn units(kind: discovery::IommuKind, name: &str) -> Result<alloc::vec::Vec<u64>, TestError> {
    let topo = discovery::get().ok_or_else(|| TestError::fail("no discovery"))?;
    let units: alloc::vec::Vec<u64> = topo
        .iommus
        .iter()
        .filter(|u| u.kind == kind)
        .map(|u| u.base)
        .collect();
    if units.is_empty() {
        return Err(TestError::skip(alloc::format!("this board has no {name}")));
    }
    Ok(units)
}

/// Each SMMUv3 the IORT names identifies itself: its ID registers decode
/// into features a stage-1 driver can use (AArch64 tables, 4 KiB granule),
/// with command and event queues, and translation off once the platform's
/// resting bring-up is taken down.
pub fn smmuv3_identifies_itself() -> TestResult {
    crate::iommu::park();
    for base in units(discovery::IommuKind::SmmuV3, "SMMUv3")? {
        let smmu = pcie::smmuv3_at(base).ok_or_else(|| TestError::fail("SMMU vanished"))?;
        let (idr, iidr) = smmu.id_registers();
        let f = smmu.features().map_err(|e| {
            TestError::fail(alloc::format!(
                "SMMUv3 at {base:#x}: {e:?} (IDR {idr:08x?})"
            ))
        })?;
        log::info!(
            "SMMUv3 at {base:#x}: {:?} stream table, S1 {} S2 {}, SID {} bits, SSID {} bits, \
             ASID {} / VMID {} bits, OAS {} bits, cmdq 2^{} eventq 2^{}, RIL {}, ATS {}, PRI {}, \
             coherent {}, HTTU {}, IIDR {iidr:#x}",
            f.stream_table,
            f.stage1,
            f.stage2,
            f.sid_bits,
            f.ssid_bits,
            f.asid_bits,
            f.vmid_bits,
            f.oas,
            f.cmdq_log2,
            f.eventq_log2,
            f.range_invalidation,
            f.ats,
            f.pri,
            f.coherent,
            f.httu
        );
        ensure!(
            f.cmdq_log2 > 0 && f.eventq_log2 > 0,
            "SMMU at {base:#x}: queue sizes {f:?}"
        );
        ensure!(
            f.sid_bits >= 8,
            "SMMU at {base:#x}: {} StreamID bits",
            f.sid_bits
        );
        ensure_eq!(
            smmu.enabled(),
            false,
            "SMMU at {base:#x} enabled with no driver up"
        );
    }
    Ok(())
}

/// Each VT-d unit the DMAR names identifies itself: scalable mode with
/// PASIDs, queued invalidation, at least one translation level, and DMA
/// remapping still off.
pub fn vtd_identifies_itself() -> TestResult {
    for base in units(discovery::IommuKind::VtdDrhd, "VT-d unit")? {
        let unit = pcie::vtd_at(base).ok_or_else(|| TestError::fail("unit vanished"))?;
        let (c, e) = unit.caps();
        let (major, minor) = unit.version();
        log::info!(
            "VT-d {major}.{minor} at {base:#x}: {} domains, SAGAW {:#b}, MGAW {}, SL large pages {:#b}, \
             FL 1G {}, {} fault record(s) at {:#x}; scalable {}, PASID {} ({} bits), FL {}, SL {}, \
             QI {}, PT {}, device-TLB {}, PRS {}, nested {}, coherent {}",
            c.domains,
            c.sagaw,
            c.mgaw,
            c.second_level_large_pages,
            c.first_level_1g,
            c.fault_records,
            c.fault_record_offset,
            e.scalable_mode,
            e.pasid,
            e.pasid_bits,
            e.first_level,
            e.second_level,
            e.queued_invalidation,
            e.pass_through,
            e.device_tlb,
            e.page_requests,
            e.nested,
            e.coherent
        );
        ensure!(
            e.scalable_mode && e.pasid && e.queued_invalidation,
            "VT-d at {base:#x}: scalable mode, PASID and QI needed: {e:?}"
        );
        ensure!(
            e.first_level || e.second_level,
            "VT-d at {base:#x}: no translation level: {e:?}"
        );
        ensure!(
            c.fault_records >= 1,
            "VT-d at {base:#x}: no fault recording register"
        );
        ensure_eq!(
            unit.translating(),
            false,
            "VT-d at {base:#x} translating before any driver"
        );
    }
    Ok(())
}

/// Stage-1 DMA through the SMMUv3 with the core on top: a pasid-dma
/// device in an unmanaged domain writes through its mapping to the right
/// physical page; an unmapped IOVA faults, and the SMMU reports the
/// stream, the address and a write; after the unmap the IOVA faults too.
/// An illegal command is reported and skipped, and later commands run.
/// Every other stream bypasses meanwhile, and translation is off again
/// afterwards.
/// The driver takes each SMMUv3's coherency from the firmware (IORT
/// COHACC override, else devicetree `dma-coherent`), not from IDR0.COHACC
/// alone: a non-coherent SMMU's walks must be non-cacheable and its
/// table writes cleaned.
pub fn smmuv3_coherency_from_firmware() -> TestResult {
    #[cfg(target_arch = "aarch64")]
    {
        use crate::iommu::{bring_up_unit, BringupError, Driver, Options};
        use smmuv3::Coherency;
        for base in units(discovery::IommuKind::SmmuV3, "SMMUv3")? {
            let fw = crate::iommu::smmu::firmware(base);
            let Some(coherent) = fw.coherent else {
                return Err(TestError::skip(alloc::format!(
                    "neither the IORT nor the devicetree describes the SMMU at {base:#x}"
                )));
            };
            let up =
                bring_up_unit::<Driver>(base, Options::default(), &[]).map_err(|e| match e {
                    BringupError::Unavailable(why) => TestError::skip(why),
                    e => TestError::fail(alloc::format!("bring-up: {e}")),
                })?;
            let want = if coherent {
                Coherency::Coherent
            } else {
                Coherency::NonCoherent
            };
            let got = up.iommu.hw.coherency();
            let mut up = up;
            let down = up.tear_down();
            ensure_eq!(
                got,
                want,
                "SMMU at {base:#x}: the firmware says coherent {coherent}"
            );
            down.map_err(|e| TestError::fail(alloc::format!("tear-down: {e}")))?;
        }
        Ok(())
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        Err(TestError::skip("this board has no SMMUv3"))
    }
}

/// The StreamIDs of IORT RMR nodes bypass from before translation is on,
/// and their ranges are the direct regions of those streams (mapped one
/// to one in paging domains, never handed out as IOVAs). SKIP without
/// RMR nodes (QEMU's IORT has none): host tests cover the rest.
pub fn smmuv3_rmr_streams_reserved() -> TestResult {
    #[cfg(target_arch = "aarch64")]
    {
        use crate::iommu::{bring_up_unit, BringupError, Driver, Options};
        use kernel::iommu::domain::{DeviceId, IommuHw};
        let mut any = false;
        for base in units(discovery::IommuKind::SmmuV3, "SMMUv3")? {
            let fw = crate::iommu::smmu::firmware(base);
            if fw.reserved.is_empty() {
                continue;
            }
            any = true;
            let mut up =
                bring_up_unit::<Driver>(base, Options::default(), &[]).map_err(|e| match e {
                    BringupError::Unavailable(why) => TestError::skip(why),
                    e => TestError::fail(alloc::format!("bring-up with RMR streams: {e}")),
                })?;
            let mut result = Ok(());
            for r in &fw.reserved {
                for sid in [r.first, r.last] {
                    let got = up.iommu.hw.direct_regions(DeviceId(sid));
                    if !r.ranges.iter().all(|m| got.contains(m)) {
                        result = Err(TestError::fail(alloc::format!(
                            "SMMU at {base:#x}: stream {sid:#x} direct regions {got:x?}, RMR ranges {:x?}",
                            r.ranges
                        )));
                    }
                }
            }
            let down = up.tear_down();
            result?;
            down.map_err(|e| TestError::fail(alloc::format!("tear-down: {e}")))?;
        }
        if !any {
            return Err(TestError::skip("no IORT RMR nodes"));
        }
        Ok(())
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        Err(TestError::skip("this board has no SMMUv3"))
    }
}

pub fn smmuv3_stage1_dma_inject_faults() -> TestResult {
    #[cfg(target_arch = "aarch64")]
    {
        stage1::run()
    }
    #[cfg(not(target_arch = "aarch64"))]
    {
        Err(TestError::skip("this board has no SMMUv3"))
    }
}

#[cfg(target_arch = "aarch64")]
pub(super) mod stage1 {
    use super::super::conformance::board::fail as hw_err;
    use super::super::dma;
    use crate::iommu::{bring_up, BringupError, Driver, Managed, Options};
    use crate::memory::DmaBuffer;
    use alloc::format;
    use kernel::dma::{DmaEngine, DmaOp, DmaStatus, DmaTag};
    use kernel::harness::{TestError, TestResult};
    use kernel::iommu::domain::DomainKind;
    use kernel::iommu::pgtable::Prot;
    use kernel::mm::PAGE_SIZE;
    use kernel::{ensure, ensure_eq};
    use pasid_dma::QueueMode;
    use smmuv3::event::EventKind;

    const IOVA: u64 = 0x1000_0000;
    const BOUND_NS: u64 = 2_000_000_000;

    /// On each unit, with the widest pasid-dma function behind it.
    pub fn run() -> TestResult {
        for (unit, open) in dma::first_behind_each_unit()? {
            crate::selftest::on_unit(unit, run_on(open))?;
        }
        Ok(())
    }

    fn run_on(open: dma::Open) -> TestResult {
        // The device under the core (without PASIDs); every other
        // function keeps working untranslated.
        let device = Managed {
            segment: open.segment,
            f: open.f,
            pasid_bits: 0,
        };
        let mut up = bring_up::<Driver>(Options::default(), &[device]).map_err(|e| match e {
            BringupError::Unavailable(why) => TestError::skip(why),
            e => hw_err(e),
        })?;
        let sid = up.managed[0];
        let (cmds0, syncs0) = up.iommu.hw.command_counts();
        let iommu = &mut up.iommu;
        let result = (|| -> TestResult {
            let mut e = open.engine(0, QueueMode::Dedicated(DmaTag::Untagged), false)?;
            let page = DmaBuffer::new(PAGE_SIZE as usize, PAGE_SIZE)
                .map_err(|x| TestError::fail(format!("{x}")))?;
            let d = iommu.domain_alloc(DomainKind::Unmanaged).map_err(hw_err)?;
            iommu
                .map(d, IOVA, page.phys().as_u64(), PAGE_SIZE, Prot::RW)
                .map_err(hw_err)?;
            // Completion records are DMA too: their page at its own address.
            let rec = e.record_page().as_u64();
            iommu
                .map(d, rec, rec, PAGE_SIZE, Prot::RW)
                .map_err(hw_err)?;
            iommu.attach_device(d, sid).map_err(hw_err)?;

            let write = |at: u64, value: u64| DmaOp::WriteImm {
                dst: at,
                value,
                size: 8,
            };
            let r = e
                .run(&write(IOVA + 8, 0x5a5a_0001), DmaTag::Untagged, BOUND_NS)
                .map_err(hw_err)?;
            ensure_eq!(
                r.status,
                DmaStatus::Success,
                "write through the stage-1 mapping"
            );
            let mut b = [0u8; 8];
            page.read_volatile(8, &mut b);
            ensure_eq!(
                u64::from_le_bytes(b),
                0x5a5a_0001,
                "the value at the mapped physical page"
            );

            let hole = IOVA + 0x10_0000;
            let r = e
                .run(&write(hole, 1), DmaTag::Untagged, BOUND_NS)
                .map_err(hw_err)?;
            ensure_eq!(
                r.status,
                DmaStatus::WriteFault { addr: hole },
                "write to an unmapped IOVA"
            );
            let events = iommu.hw.drain_events();
            ensure!(
                events.iter().any(|ev| ev.kind == EventKind::Translation
                    && ev.sid == sid.0
                    && ev.addr == hole
                    && !ev.read),
                "no F_TRANSLATION for stream {sid:#x} at {hole:#x} (write): {events:?}"
            );

            let (c1, s1) = iommu.hw.command_counts();
            iommu.unmap(d, IOVA, PAGE_SIZE).map_err(hw_err)?;
            let (c2, s2) = iommu.hw.command_counts();
            ensure_eq!(s2 - s1, 1, "CMD_SYNCs for one unmap batch");
            log::info!(
                "SMMU: one unmap batch: {} command(s), {} sync(s)",
                c2 - c1,
                s2 - s1
            );
            let r = e
                .run(&write(IOVA, 2), DmaTag::Untagged, BOUND_NS)
                .map_err(hw_err)?;
            ensure_eq!(
                r.status,
                DmaStatus::WriteFault { addr: IOVA },
                "write after the unmap"
            );
            let events = iommu.hw.drain_events();
            ensure!(
                events.iter().any(|ev| ev.kind == EventKind::Translation
                    && ev.sid == sid.0
                    && ev.addr == IOVA),
                "no F_TRANSLATION after the unmap: {events:?}"
            );
            // An illegal command (opcode 0xff) between two good ones: it
            // is reported and skipped, and the ones after it complete.
            let good = smmuv3::cmd::Command::CfgiSte {
                sid: sid.0,
                leaf: true,
            }
            .encode();
            let sync = smmuv3::cmd::Command::Sync { msi: None }.encode();
            let rejected = iommu
                .hw
                .raw_commands(&[good, [0xff, 0], good, sync])
                .map_err(hw_err)?;
            ensure!(
                rejected.len() == 1
                    && rejected[0].opcode == 0xff
                    && rejected[0].error == smmuv3::cmd::CommandError::Illegal,
                "the illegal command's report: {rejected:?}"
            );
            let r = e
                .run(&write(rec + 0x800, 3), DmaTag::Untagged, BOUND_NS)
                .map_err(hw_err)?;
            ensure_eq!(
                r.status,
                DmaStatus::Success,
                "DMA after the refused command"
            );
            iommu.detach_device(sid).map_err(hw_err)?;
            iommu.unmap(d, rec, PAGE_SIZE).map_err(hw_err)?;
            iommu.domain_free(d).map_err(hw_err)?;
            Ok(())
        })();
        let (cmds, syncs) = up.iommu.hw.command_counts();
        log::info!(
            "SMMU: {} command(s), {} sync(s) during the test",
            cmds - cmds0,
            syncs - syncs0
        );
        // Back to bypass and translation off, whatever happened.
        let restore = up.tear_down().map(|_| ()).map_err(hw_err);
        drop(open);
        result.and(restore)
    }
}

/// A conformance case brings the IOMMU up once: opening its devices
/// brings up no resting IOMMU that the case's own bring-up takes down at
/// once (on the SMMU that was a second bring-up and tear-down in every
/// case, about a tenth of the suite's time).
pub fn one_bring_up_per_case() -> TestResult {
    // As a case finds it after another case: nothing up.
    crate::iommu::park();
    let before = crate::iommu::bring_ups();
    super::conformance::board::run(|_| Ok(()))?;
    ensure_eq!(
        crate::iommu::bring_ups() - before,
        1,
        "IOMMU bring-ups for one conformance case"
    );
    Ok(())
}

/// The pasid-dma functions stay claimed from one conformance case to the
/// next, decoding and bus mastering on: each case turning them off and
/// on again made QEMU rebuild every address space's view four times per
/// function.
pub fn devices_stay_claimed_across_cases() -> TestResult {
    use pci::config::{CMD_BUS_MASTER, CMD_MEMORY};
    use pci::ConfigSpace;
    let mut functions = alloc::vec::Vec::new();
    super::conformance::board::run(|p| {
        functions = p.functions();
        Ok(())
    })?;
    let mut seen = 0;
    for (segment, f) in functions {
        seen += 1;
        let cmd = pcie::with_config(segment, |cfg, _| cfg.read16(f.bdf, 4))
            .ok_or_else(|| TestError::fail("segment vanished"))?;
        ensure!(
            super::dma::stays_claimed(segment, f),
            "pasid-dma {} is not held claimed after a case",
            f.bdf
        );
        ensure_eq!(
            cmd & (CMD_MEMORY | CMD_BUS_MASTER),
            CMD_MEMORY | CMD_BUS_MASTER,
            "pasid-dma {}: memory decoding and bus mastering after a case",
            f.bdf
        );
    }
    ensure!(seen > 0, "no pasid-dma function");
    Ok(())
}

/// With several units, each reports the faults of the functions behind
/// it and no others: every unit that has a pasid-dma function behind it
/// is up at once with that function in its blocked primary domain; an
/// untagged write from each faults, and only the unit it sits behind
/// reports it, naming that function. SKIP with fewer than two such units.
pub fn faults_come_from_their_unit_inject_faults() -> TestResult {
    use crate::iommu::{bring_up_unit, unit_name, BringupError, Driver, Managed, Options, Up};
    use crate::memory::DmaBuffer;
    use kernel::dma::{DmaEngine, DmaOp, DmaStatus, DmaTag};
    use kernel::iommu::domain::DeviceId;
    const BOUND_NS: u64 = 2_000_000_000;
    let fail = |e: &dyn core::fmt::Display| TestError::fail(alloc::format!("{e}"));
    let opens = super::dma::first_behind_each_unit()?;
    if opens.len() < 2 {
        return Err(TestError::skip(alloc::format!(
            "needs pasid-dma functions behind two IOMMUs; {} unit(s) have one",
            opens.len()
        )));
    }
    let mut ups: alloc::vec::Vec<(u64, Up<Driver>)> = alloc::vec::Vec::new();
    let mut result = Ok(());
    for (unit, open) in &opens {
        let m = Managed {
            segment: open.segment,
            f: open.f,
            pasid_bits: 0,
        };
        match bring_up_unit::<Driver>(*unit, Options::default(), &[m]) {
            Ok(up) => ups.push((*unit, up)),
            Err(BringupError::Unavailable(why)) => {
                result = Err(TestError::skip(why));
                break;
            }
            Err(e) => {
                result = Err(TestError::fail(alloc::format!("{}: {e}", unit_name(*unit))));
                break;
            }
        }
    }
    if result.is_ok() {
        result = (|| -> TestResult {
            let buf = DmaBuffer::new(kernel::mm::PAGE_SIZE as usize, kernel::mm::PAGE_SIZE)
                .map_err(|e| fail(&e))?;
            let dst = buf.phys().as_u64();
            for (i, (unit, open)) in opens.iter().enumerate() {
                let from = alloc::format!("{} behind {}", open.name(), unit_name(*unit));
                let mut e = open.unrecorded_engine(0, false)?;
                let op = DmaOp::WriteImm {
                    dst,
                    value: 1,
                    size: 8,
                };
                let r = e
                    .run(&op, DmaTag::Untagged, BOUND_NS)
                    .map_err(|e| fail(&e))?;
                ensure_eq!(
                    r.status,
                    DmaStatus::WriteFault { addr: dst },
                    "a write from {from} in its blocked domain"
                );
                for (j, (other, up)) in ups.iter_mut().enumerate() {
                    crate::iommu::IommuDriver::after_dma(&mut up.iommu.hw);
                    let got: alloc::vec::Vec<DeviceId> =
                        crate::iommu::IommuDriver::faults(&mut up.iommu.hw)
                            .iter()
                            .map(|f| f.dev)
                            .collect();
                    let want = if i == j {
                        alloc::vec![up.managed[0]]
                    } else {
                        alloc::vec::Vec::new()
                    };
                    ensure_eq!(
                        got,
                        want,
                        "faults {} reports after a write from {from}",
                        unit_name(*other)
                    );
                }
            }
            Ok(())
        })();
    }
    for (unit, mut up) in ups {
        let down = up.tear_down();
        if result.is_ok() {
            down.map_err(|e| TestError::fail(alloc::format!("{}: {e}", unit_name(unit))))?;
        }
    }
    result
}
