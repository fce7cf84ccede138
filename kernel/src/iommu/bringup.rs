//! Bringing an IOMMU up under the core, and down again, for any driver:
//! the one sequence the image's boot flow and its self-tests use, here so
//! that it runs on the host against the model.
//!
//! Up: every device the core will not manage is left untranslated first
//! (so enabling translation cuts nobody off), then the unit is enabled,
//! the platform tells the driver what it knows of each managed device
//! (VT-d RMRRs), and the core takes the driver and the managed devices.
//! Down: every device back as the driver found it, translation off, and
//! what the driver still holds reported (a leak check).
use super::domain::{DeviceCaps, DeviceId, Iommu, IommuError, IommuHw};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// What bring-up needs of a driver beyond the core's interface.
pub trait Bringup: IommuHw {
    /// Leaves a device the core does not manage untranslated.
    fn pass_through(&mut self, dev: DeviceId) -> Result<(), Self::Error>;
    /// Translation on.
    fn enable(&mut self) -> Result<(), Self::Error>;
    /// A device back as the driver found it, its structures freed.
    fn release(&mut self, dev: DeviceId) -> Result<(), Self::Error>;
    /// Translation off; driver-wide structures freed.
    fn shutdown(&mut self) -> Result<(), Self::Error>;
    /// Page-table pages and bytes of other translation structures (CD or
    /// PASID tables) still held.
    fn held(&self) -> (u64, u64);
}

/// Why bring-up stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum BringupError<E> {
    /// The platform has no such unit, or the unit cannot run what was
    /// asked: there is nothing to bring up (a test reports SKIP).
    Unavailable(String),
    /// The firmware gives a PCI function (segment, requester id) no id at
    /// the IOMMU.
    NoDeviceId {
        segment: u16,
        rid: u16,
    },
    /// The firmware tables and the platform disagree.
    Inconsistent(&'static str),
    Driver(E),
    Core(IommuError<E>),
}

impl<E: fmt::Display> fmt::Display for BringupError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BringupError::Unavailable(why) => f.write_str(why),
            BringupError::NoDeviceId { segment, rid } => write!(
                f,
                "the firmware gives {segment:04x}:{:02x}:{:02x}.{} no id at the IOMMU",
                rid >> 8,
                (rid >> 3) & 0x1f,
                rid & 7
            ),
            BringupError::Inconsistent(what) => f.write_str(what),
            BringupError::Driver(e) => write!(f, "{e}"),
            BringupError::Core(e) => write!(f, "{e}"),
        }
    }
}

/// A device the core is to manage: its PASID width and its ATS and PRI
/// capabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Managed {
    pub id: DeviceId,
    pub pasid_bits: u8,
    pub caps: DeviceCaps,
}

/// An IOMMU up: the core over the driver, the devices it manages, and
/// the devices left untranslated.
pub struct Up<H: Bringup> {
    pub iommu: Iommu<H>,
    pub managed: Vec<DeviceId>,
    pub untranslated: Vec<DeviceId>,
}

/// Brings `hw` (taken over, translation still off) up with `managed`
/// under the core and every other id of `all` untranslated. `learn` is
/// called with the driver and the index of each managed device before
/// the core takes them. On failure, translation is off again.
pub fn bring_up<H: Bringup>(
    mut hw: H,
    managed: &[Managed],
    all: &[DeviceId],
    mut learn: impl FnMut(&mut H, usize),
) -> Result<Up<H>, BringupError<H::Error>> {
    let ids: Vec<DeviceId> = managed.iter().map(|m| m.id).collect();
    let mut untranslated: Vec<DeviceId> = Vec::new();
    for &d in all {
        if !ids.contains(&d) && !untranslated.contains(&d) {
            untranslated.push(d);
        }
    }
    let ready = (|| {
        for &d in &untranslated {
            hw.pass_through(d)?;
        }
        hw.enable()
    })();
    if let Err(e) = ready {
        let _ = hw.shutdown();
        return Err(BringupError::Driver(e));
    }
    for i in 0..managed.len() {
        learn(&mut hw, i);
    }
    // PASIDs the unit can take, up to PCIe's 20 bits (at least PASID 1, so
    // the allocator has a range: attaching it to a unit without PASIDs is
    // then refused as too wide).
    let pasid_max = ((1u32 << hw.pasid_bits().min(20)) - 1).max(1);
    let mut iommu = match Iommu::new(hw, 1, pasid_max) {
        Ok(iommu) => iommu,
        Err(e) => return Err(BringupError::Core(e)),
    };
    for m in managed {
        let added = iommu
            .add_device(m.id, m.pasid_bits)
            .and_then(|()| iommu.declare_capabilities(m.id, m.caps));
        if let Err(e) = added {
            let _ = iommu.hw.shutdown();
            return Err(BringupError::Core(e));
        }
    }
    Ok(Up {
        iommu,
        managed: ids,
        untranslated,
    })
}

impl<H: Bringup> Up<H> {
    /// Every device back as the driver found it, translation off; returns
    /// what the driver still holds (page-table pages, bytes of CD or PASID
    /// tables): both zero when nothing leaked.
    pub fn tear_down(&mut self) -> Result<(u64, u64), H::Error> {
        let hw = &mut self.iommu.hw;
        let mut result = Ok(());
        for &d in self.managed.iter().chain(&self.untranslated) {
            result = result.and(hw.release(d));
        }
        result = result.and(hw.shutdown());
        result.map(|()| hw.held())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::{DmaEngine, DmaOp, DmaStatus, DmaTag};
    use crate::iommu::domain::{DomainKind, FaultReason, TableFormat};
    use crate::iommu::model::{ModelDma, ModelError, ModelIommu, ModelState};
    use crate::iommu::pgtable::arm::ArmLpae;
    use crate::iommu::pgtable::{Prot, PAGE_SIZE};

    const FORMAT: TableFormat = TableFormat::Arm(ArmLpae::S1);

    fn write(dma: &mut ModelDma, at: u64, value: u64) -> DmaStatus {
        let op = DmaOp::WriteImm {
            dst: at,
            value,
            size: 8,
        };
        dma.run(&op, DmaTag::Untagged, 1).unwrap().status
    }

    /// Up with devices 0 and 1 managed and 7 and 8 left alone: 7's DMA
    /// passes untranslated, 0's is blocked until a domain is attached;
    /// down, nothing is held and translation is off.
    #[test]
    fn managed_devices_are_blocked_others_untranslated() {
        let state = ModelState::new(FORMAT, 20);
        let managed = [
            Managed {
                id: DeviceId(0),
                pasid_bits: 20,
                caps: DeviceCaps::default(),
            },
            Managed {
                id: DeviceId(1),
                pasid_bits: 4,
                caps: DeviceCaps::default(),
            },
        ];
        let mut learned = Vec::new();
        let mut up = bring_up(
            ModelIommu::new(state.clone()),
            &managed,
            &[0, 7, 1, 8, 7].map(DeviceId),
            |_, i| learned.push(i),
        )
        .unwrap();
        assert_eq!(learned, [0, 1]);
        assert_eq!(up.managed, [DeviceId(0), DeviceId(1)]);
        assert_eq!(up.untranslated, [DeviceId(7), DeviceId(8)]);
        let page = state.borrow_mut().alloc_pages(1, PAGE_SIZE);
        let mut seven = ModelDma::new(state.clone(), DeviceId(7), 0);
        assert_eq!(write(&mut seven, page, 1), DmaStatus::Success);
        let mut zero = ModelDma::new(state.clone(), DeviceId(0), 20);
        assert_eq!(
            write(&mut zero, page, 2),
            DmaStatus::WriteFault { addr: page }
        );
        let faults = core::mem::take(&mut state.borrow_mut().faults);
        assert_eq!(faults.len(), 1);
        assert_eq!(
            (faults[0].dev, faults[0].reason),
            (DeviceId(0), FaultReason::Blocked)
        );

        let iommu = &mut up.iommu;
        let d = iommu.domain_alloc(DomainKind::Unmanaged).unwrap();
        iommu
            .map(d, 0x1000_0000, page, PAGE_SIZE, Prot::RW)
            .unwrap();
        iommu.attach_device(d, DeviceId(0)).unwrap();
        assert_eq!(write(&mut zero, 0x1000_0008, 3), DmaStatus::Success);
        let mut b = [0; 8];
        state.borrow().read(page + 8, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 3);
        iommu.detach_device(DeviceId(0)).unwrap();
        iommu.domain_free(d).unwrap();

        assert_eq!(up.tear_down(), Ok((0, 0)));
        assert!(!state.borrow().enabled());
        assert_eq!(state.borrow().contexts(), 0);
    }

    /// The PASID allocator's range is what the unit takes: 8 bits of
    /// PASIDs (SSIDSIZE, PSS) give 1..=255, more than 20 give PCIe's 20, a
    /// unit without PASIDs a range whose one PASID is refused as too wide.
    #[test]
    fn the_pasid_range_follows_the_unit() {
        for (bits, max) in [(8, 0xff), (20, 0xf_ffff), (1, 1), (0, 1)] {
            let state = ModelState::new(FORMAT, bits);
            let managed = [Managed {
                id: DeviceId(0),
                pasid_bits: 20,
                caps: DeviceCaps::default(),
            }];
            let mut up = bring_up(ModelIommu::new(state), &managed, &[], |_, _| {}).unwrap();
            assert_eq!(up.iommu.pasid_range(), (1, max), "{bits} bits");
            let limit = up.iommu.pasid_limit(DeviceId(0)).unwrap();
            assert_eq!(limit, (bits > 0).then_some(max), "{bits} bits");
            assert_eq!(up.tear_down(), Ok((0, 0)));
        }
    }

    /// A unit that refuses to enable is shut down again, with the
    /// driver's error; so is one whose core refuses a device.
    #[test]
    fn failures_leave_translation_off() {
        let state = ModelState::new(FORMAT, 20);
        state.borrow_mut().refuse_enable = true;
        let r = bring_up(
            ModelIommu::new(state.clone()),
            &[],
            &[DeviceId(3)],
            |_, _| {},
        );
        assert_eq!(
            r.err(),
            Some(BringupError::Driver(ModelError::EnableRefused))
        );
        assert!(!state.borrow().enabled());

        let state = ModelState::new(FORMAT, 20);
        let twice = Managed {
            id: DeviceId(4),
            pasid_bits: 0,
            caps: DeviceCaps::default(),
        };
        let r = bring_up(
            ModelIommu::new(state.clone()),
            &[twice, twice],
            &[],
            |_, _| {},
        );
        assert!(matches!(
            r.err(),
            Some(BringupError::Core(IommuError::DeviceExists(DeviceId(4))))
        ));
        assert!(!state.borrow().enabled());
    }

    #[test]
    fn errors_say_what() {
        let e: BringupError<ModelError> = BringupError::NoDeviceId {
            segment: 0,
            rid: 0x0210,
        };
        assert_eq!(
            alloc::format!("{e}"),
            "the firmware gives 0000:02:02.0 no id at the IOMMU"
        );
    }
}
