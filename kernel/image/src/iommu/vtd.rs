//! Bring-up facts of Intel VT-d: the unit from the DMAR, source ids,
//! and RMRRs from the DMAR's device scopes.
use super::DriverHal;
use super::{unavailable, BringupError, IommuDriver, Mode, Options};
use crate::{discovery, pcie};
use ::vtd::driver::{VtdError, VtdHw};
use alloc::vec::Vec;
use kernel::iommu::domain::{DeviceId, Fault};

impl IommuDriver for VtdHw<DriverHal> {
    fn open(opts: Options) -> Result<Self, BringupError<VtdError>> {
        if opts.mode != Mode::Stage1 {
            return Err(unavailable(
                "VT-d runs the level its unit offers (the board's x-flts), as Stage1",
            ));
        }
        let base = super::unit_base(discovery::IommuKind::VtdDrhd)
            .ok_or_else(|| unavailable("this board has no VT-d unit"))?;
        let unit = pcie::vtd_at(base).ok_or(BringupError::Inconsistent("unit vanished"))?;
        VtdHw::new(super::driver_hal(opts), unit, base).map_err(BringupError::Driver)
    }
    fn device_id(_segment: u16, f: &pci::Function) -> Option<DeviceId> {
        // The DMAR on q35 covers every function (INCLUDE_PCI_ALL):
        // the source id is the requester id.
        Some(DeviceId(u32::from(f.bdf.rid())))
    }
    fn faults(&mut self) -> Vec<Fault> {
        self.take_faults()
    }
    fn verify(&self) -> Result<(), Vec<kernel::iommu::check::Violation>> {
        self.hal().verify()
    }
    fn after_dma(&mut self) {
        if !self.defer_fault_collection {
            self.collect_faults();
        }
    }
    fn learn_device(&mut self, segment: u16, f: &pci::Function, id: DeviceId) {
        let Some(dmar) = discovery::get().and_then(|t| t.dmar.as_ref()) else {
            return;
        };
        // Bridges' bus numbers, from the enumeration.
        let bus_of = |sub: bool| {
            move |seg: u16, bus: u8, dev: u8, func: u8| -> Option<u8> {
                let bdf = pci::Bdf::new(bus, dev, func)?;
                pcie::buses()
                    .filter(|b| b.segment == seg)
                    .flat_map(|b| b.bridges.iter())
                    .find(|br| br.bdf == bdf)
                    .map(|br| if sub { br.subordinate } else { br.secondary })
            }
        };
        let bdf = acpi_tables::dmar::Bdf {
            bus: f.bdf.bus(),
            device: f.bdf.device(),
            function: f.bdf.function(),
        };
        let regions = dmar
            .rmrrs_for(segment, bdf, &bus_of(false), &bus_of(true))
            .into_iter()
            .map(|r| (r.base, r.limit + 1 - r.base))
            .collect();
        // Source ids are 16 bits (device_id above is the RID).
        if let Ok(sid) = u16::try_from(id.0) {
            self.set_rmrrs(sid, regions);
        }
    }
}
