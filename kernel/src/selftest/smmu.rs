//! The Arm SMMUv3, read from the hardware (the driver itself is issue 7).
use crate::{discovery, pcie};
use kernel::harness::{TestError, TestResult};
use kernel::{ensure, ensure_eq};

/// Each SMMUv3 the IORT names identifies itself: its ID registers decode
/// into features a stage-1 driver can use (AArch64 tables, 4 KiB granule),
/// with command and event queues, and translation still off.
pub fn smmuv3_identifies_itself() -> TestResult {
    let topo = discovery::get().ok_or_else(|| TestError::fail("no discovery"))?;
    let units: alloc::vec::Vec<u64> = topo
        .iommus
        .iter()
        .filter(|u| u.kind == discovery::IommuKind::SmmuV3)
        .map(|u| u.base)
        .collect();
    if units.is_empty() {
        return Err(TestError::skip("this board has no SMMUv3"));
    }
    for base in units {
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
            "SMMU at {base:#x} enabled before any driver"
        );
    }
    Ok(())
}
