//! Bring-up facts of the Arm SMMUv3: the unit from the IORT, StreamIDs
//! from its ID mappings, the ITS doorbell, and which stages a mode uses.
use super::DriverHal;
use super::{unavailable, BringupError, IommuDriver, Mode, Options};
use crate::discovery::{self, IommuKind};
use crate::pcie;
use alloc::vec::Vec;
use kernel::iommu::domain::{DeviceId, Fault};
use smmuv3::driver::{SmmuError, SmmuHw, Translation};
use smmuv3::idr::StreamTableLevels;

/// The StreamID the IORT gives a PCI function.
pub fn stream_id(segment: u16, f: &pci::Function) -> Option<u32> {
    discovery::get()?
        .iort
        .as_ref()?
        .resolve_pci(segment, u32::from(f.bdf.rid()))
        .ok()?
        .smmu
        .map(|s| s.stream_id)
}

impl IommuDriver for SmmuHw<DriverHal> {
    fn open(opts: Options) -> Result<Self, BringupError<SmmuError>> {
        let base = super::unit_base(IommuKind::SmmuV3)
            .ok_or_else(|| unavailable("this board has no SMMUv3"))?;
        let smmu = pcie::smmuv3_at(base).ok_or(BringupError::Inconsistent("SMMU vanished"))?;
        let table = opts
            .linear_stream_table
            .then_some(StreamTableLevels::Linear);
        let mut hw = SmmuHw::with_stream_table(
            smmu,
            super::driver_hal(opts),
            crate::arch::msi_doorbell(),
            table,
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
    fn device_id(segment: u16, f: &pci::Function) -> Option<DeviceId> {
        stream_id(segment, f).map(DeviceId)
    }
    fn faults(&mut self) -> Vec<Fault> {
        self.take_faults()
    }
    fn verify(&self) -> Result<(), Vec<kernel::iommu::check::Violation>> {
        self.hal().verify()
    }
}
