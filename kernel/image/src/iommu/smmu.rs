//! Bring-up facts of the Arm SMMUv3: the units from the IORT (else the
//! devicetree), each PCI function's unit and StreamID from its ID
//! mappings (else the devicetree's `iommu-map`), the ITS doorbell, which stages a mode uses, and
//! what the firmware says of the unit (coherency, RMR reserved streams).
use super::DriverHal;
use super::{unavailable, BringupError, IommuDriver, Mode, Options, Route};
use crate::discovery::{self, IommuKind};
use crate::pcie;
use acpi_tables::iort::NodeKind;
use alloc::vec::Vec;
use kernel::addr::PhysRange;
use kernel::iommu::domain::{DeviceId, Fault};
use smmuv3::driver::{Firmware, ReservedStreams, SmmuError, SmmuHw, Translation};
use smmuv3::idr::StreamTableLevels;

/// The SMMUv3 the IORT puts a PCI function behind (through its root
/// complex's ID mappings) and the StreamID it arrives with; without an
/// IORT, the devicetree's `iommu-map` says.
pub fn route(segment: u16, f: &pci::Function) -> Option<Route> {
    let rid = f.bdf.rid();
    let (unit, sid) = match &discovery::get()?.iort {
        Some(iort) => iort.smmuv3_route(segment, u32::from(rid))?,
        None => crate::arch::devicetree()?.smmu_route(segment, rid)?,
    };
    Some(Route {
        unit,
        id: DeviceId(sid),
    })
}

/// What the firmware says of the SMMU at `base`: the IORT node's COHACC
/// override and its RMR reservations, else the devicetree node's
/// `dma-coherent` (as Linux's `arm_smmu_device_acpi_probe` and
/// `_dt_probe`); nothing when neither describes it.
pub fn firmware(base: u64) -> Firmware {
    let iort_node = discovery::get()
        .and_then(|t| t.iort.as_ref())
        .and_then(|iort| {
            iort.nodes.iter().find_map(|n| match &n.kind {
                NodeKind::SmmuV3(s) if s.base == base => Some((iort, n.offset, s)),
                _ => None,
            })
        });
    if let Some((iort, offset, node)) = iort_node {
        let reserved = iort
            .reserved_for(offset)
            .into_iter()
            .flat_map(|r| {
                let ranges: Vec<PhysRange> = r
                    .ranges
                    .iter()
                    .map(|m| PhysRange::new(m.base, m.length))
                    .collect();
                r.stream_ids
                    .iter()
                    .map(|&(first, last)| ReservedStreams {
                        first,
                        last,
                        ranges: ranges.clone(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        return Firmware {
            coherent: Some(node.cohacc_override()),
            reserved,
        };
    }
    let dt = crate::arch::devicetree().and_then(|p| p.smmus.iter().find(|s| s.base == base));
    Firmware {
        coherent: dt.map(|s| s.dma_coherent),
        reserved: Vec::new(),
    }
}

impl IommuDriver for SmmuHw<DriverHal> {
    const KIND: IommuKind = IommuKind::SmmuV3;

    fn open(base: u64, opts: Options) -> Result<Self, BringupError<SmmuError>> {
        let smmu = pcie::smmuv3_at(base).ok_or(BringupError::Inconsistent("SMMU vanished"))?;
        let table = opts
            .linear_stream_table
            .then_some(StreamTableLevels::Linear);
        let mut hw = SmmuHw::with_firmware(
            smmu,
            super::driver_hal(opts),
            crate::arch::msi_doorbell(),
            table,
            firmware(base),
        )
        .map_err(BringupError::Driver)?;
        let translation = match opts.mode {
            Mode::Stage1 => Translation::Stage1,
            Mode::Stage2 => Translation::Stage2,
            Mode::Nested => Translation::Nested,
        };
        hw.set_translation(translation).map_err(unavailable)?;
        if opts.mode != Mode::Stage2 && hw.features.ssid_bits == 0 {
            return Err(unavailable(
                "this SMMU has no substreams (IDR1.SSIDSIZE 0): QEMU without our patch?",
            ));
        }
        Ok(hw)
    }
    fn route(segment: u16, f: &pci::Function) -> Option<Route> {
        route(segment, f)
    }
    fn faults(&mut self) -> Vec<Fault> {
        self.take_faults()
    }
    fn verify(&self) -> Result<(), Vec<kernel::iommu::check::Violation>> {
        self.hal().verify()
    }
}
