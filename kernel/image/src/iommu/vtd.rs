//! Bring-up facts of Intel VT-d: the units from the DMAR, each PCI
//! function's unit (device scopes, else its segment's INCLUDE_PCI_ALL
//! unit) and source id, and RMRRs from the DMAR's device scopes.
use super::DriverHal;
use super::{unavailable, BringupError, IommuDriver, Mode, Options, Route};
use crate::{discovery, pcie};
use ::vtd::driver::{VtdError, VtdHw};
use alloc::vec::Vec;
use kernel::iommu::domain::{DeviceId, Fault};

impl IommuDriver for VtdHw<DriverHal> {
    const KIND: discovery::IommuKind = discovery::IommuKind::VtdDrhd;

    fn open(base: u64, opts: Options) -> Result<Self, BringupError<VtdError>> {
        if opts.mode != Mode::Stage1 {
            return Err(unavailable(
                "VT-d runs the level its unit offers (the board's x-flts), as Stage1",
            ));
        }
        let unit = pcie::vtd_at(base).ok_or(BringupError::Inconsistent("unit vanished"))?;
        VtdHw::new(super::driver_hal(opts), unit, base).map_err(BringupError::Driver)
    }
    fn route(segment: u16, f: &pci::Function) -> Option<Route> {
        let dmar = discovery::get()?.dmar.as_ref()?;
        let (unit, sid) = dmar.route(segment, dmar_bdf(f), &bus_of(false), &bus_of(true))?;
        Some(Route {
            unit,
            id: DeviceId(u32::from(sid)),
        })
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
        let regions = dmar
            .rmrrs_for(segment, dmar_bdf(f), &bus_of(false), &bus_of(true))
            .into_iter()
            .map(|r| (r.base, r.limit + 1 - r.base))
            .collect();
        // Source ids are 16 bits (device_id above is the RID).
        if let Ok(sid) = u16::try_from(id.0) {
            self.set_rmrrs(sid, regions);
        }
    }
}

/// A bridge's secondary (`sub` false) or subordinate bus number, from
/// the enumeration, for resolving the DMAR's device scopes.
fn bus_of(sub: bool) -> impl Fn(u16, u8, u8, u8) -> Option<u8> {
    move |seg: u16, bus: u8, dev: u8, func: u8| -> Option<u8> {
        let bdf = pci::Bdf::new(bus, dev, func)?;
        pcie::buses()
            .filter(|b| b.segment == seg)
            .flat_map(|b| b.bridges.iter())
            .find(|br| br.bdf == bdf)
            .map(|br| if sub { br.subordinate } else { br.secondary })
    }
}

/// `f`'s address as the DMAR parser spells it.
fn dmar_bdf(f: &pci::Function) -> acpi_tables::dmar::Bdf {
    acpi_tables::dmar::Bdf {
        bus: f.bdf.bus(),
        device: f.bdf.device(),
        function: f.bdf.function(),
    }
}
