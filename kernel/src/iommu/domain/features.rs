//! Device features (Linux's `iommu_dev_enable_feature` and the PCI
//! enables around it): AUX and SVA need PASIDs on both sides; ATS needs
//! the device's ATS capability and a unit that keeps device TLBs
//! coherent; PRI needs ATS on and the unit's page requests; I/O page
//! faults need PRI on and start the unit's page request queue. Each is
//! refused with the reason where the device or the unit lacks it, and
//! turned off only once nothing depends on it.
//!
//! The core turns the IOMMU's side on and off; the device's own
//! capabilities (PCI ATS and PRI enables) are its driver's, after the
//! IOMMU side is on and before it goes off, as the VT-d specification
//! orders it.
use super::{DeviceId, Feature, Iommu, IommuError, IommuHw};
use crate::iommu::iopf::{PageRequest, PageResponse};
use crate::mm::space::SpaceId;
use alloc::collections::BTreeMap;

/// What a device's capabilities offer, as its bus reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCaps {
    /// An ATS capability.
    pub ats: bool,
    /// Its Invalidate Queue Depth (0 means 32).
    pub ats_queue_depth: u8,
    /// A PRI capability.
    pub pri: bool,
}

/// A device TLB as the unit must know it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DevTlb {
    /// The device's ATS Invalidate Queue Depth (0 means 32).
    pub queue_depth: u8,
    /// Page requests allowed from the device.
    pub page_requests: bool,
}

/// What one pass over the page request queue did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IopfReport {
    /// Page requests taken (stop markers included).
    pub requests: usize,
    /// Page groups answered, by response.
    pub success: usize,
    pub invalid: usize,
    pub failure: usize,
    /// Descriptors the driver could not take.
    pub rejected: usize,
    pub overflow_seen: bool,
    pub overflow_cleared: bool,
}

impl<H: IommuHw> Iommu<H> {
    /// Records what `dev`'s capabilities offer (ATS, PRI).
    pub fn declare_capabilities(
        &mut self,
        dev: DeviceId,
        caps: DeviceCaps,
    ) -> Result<(), IommuError<H::Error>> {
        self.device(dev)?;
        if let Some(d) = self.devices.get_mut(&dev) {
            d.caps = caps;
        }
        Ok(())
    }

    /// Why `dev` cannot have `feat` here; `None` when it can.
    pub fn dev_feature_unavailable(
        &self,
        dev: DeviceId,
        feat: Feature,
    ) -> Result<Option<&'static str>, IommuError<H::Error>> {
        let d = self.device(dev)?;
        let pasids = if d.pasid_bits == 0 {
            Some("the device has no PASID capability")
        } else if self.hw.pasid_bits() == 0 {
            Some("the IOMMU takes no PASIDs")
        } else {
            None
        };
        let ats = if !d.caps.ats {
            Some("the device has no ATS capability")
        } else if !self.hw.dev_tlb_supported() {
            Some("the IOMMU keeps no device TLBs coherent (VT-d ECAP.DT, SMMUv3 IDR0.ATS)")
        } else {
            None
        };
        let pri = ats.or(if !d.caps.pri {
            Some("the device has no PRI capability")
        } else if !self.hw.page_requests_supported() {
            Some("the IOMMU takes no page requests (VT-d ECAP.PRS, SMMUv3 IDR0.PRI)")
        } else {
            None
        });
        Ok(match feat {
            Feature::Aux => pasids,
            Feature::Sva => pasids.or((!self.hw.sva_supported()).then_some(
                "the IOMMU cannot walk a CPU's page tables (VT-d without first-level \
                 translation, ECAP.FLTS; an SMMU translating at stage 2 only)",
            )),
            Feature::Ats => ats,
            Feature::Pri | Feature::Iopf => pri,
        })
    }

    pub fn dev_has_feature(
        &self,
        dev: DeviceId,
        feat: Feature,
    ) -> Result<bool, IommuError<H::Error>> {
        Ok(self.dev_feature_unavailable(dev, feat)?.is_none())
    }

    pub fn dev_feature_enabled(
        &self,
        dev: DeviceId,
        feat: Feature,
    ) -> Result<bool, IommuError<H::Error>> {
        let d = self.device(dev)?;
        Ok(match feat {
            Feature::Aux => d.aux_enabled,
            Feature::Sva => d.sva,
            Feature::Ats => d.ats,
            Feature::Pri => d.pri,
            Feature::Iopf => d.iopf,
        })
    }

    /// Enables `feat` on `dev`. AUX and SVA enable PASIDs; PRI needs ATS
    /// on, I/O page faults PRI on. Refused with the reason
    /// ([`IommuError::FeatureUnavailable`]) where the device or the unit
    /// lacks it; AUX and SVA keep [`IommuError::Unsupported`].
    pub fn dev_enable_feature(
        &mut self,
        dev: DeviceId,
        feat: Feature,
    ) -> Result<(), IommuError<H::Error>> {
        if let Some(why) = self.dev_feature_unavailable(dev, feat)? {
            return Err(match feat {
                Feature::Aux | Feature::Sva => IommuError::Unsupported(feat),
                _ => IommuError::FeatureUnavailable {
                    dev,
                    feature: feat,
                    why,
                },
            });
        }
        let d = self.device(dev)?;
        let (ats, pri) = (d.ats, d.pri);
        let needs = match feat {
            Feature::Pri => (!ats).then_some(Feature::Ats),
            Feature::Iopf => (!pri).then_some(Feature::Pri),
            _ => None,
        };
        if let Some(needed) = needs {
            return Err(IommuError::FeatureDisabled {
                dev,
                feature: needed,
            });
        }
        match feat {
            Feature::Aux | Feature::Sva => {
                if !d.aux_enabled {
                    self.hw.enable_aux(dev).map_err(IommuError::Hw)?;
                }
            }
            Feature::Ats | Feature::Pri => {
                let tlb = DevTlb {
                    queue_depth: d.caps.ats_queue_depth,
                    page_requests: feat == Feature::Pri,
                };
                self.hw
                    .set_dev_tlb(dev, Some(tlb))
                    .map_err(IommuError::Hw)?;
            }
            Feature::Iopf => self.hw.enable_page_requests().map_err(IommuError::Hw)?,
        }
        if let Some(d) = self.devices.get_mut(&dev) {
            match feat {
                Feature::Aux => d.aux_enabled = true,
                Feature::Sva => (d.aux_enabled, d.sva) = (true, true),
                Feature::Ats => d.ats = true,
                Feature::Pri => d.pri = true,
                Feature::Iopf => d.iopf = true,
            }
        }
        Ok(())
    }

    /// Disables `feat` on `dev`: AUX (PASIDs, and SVA with them) once no
    /// PASID is attached, SVA once no address space is bound, ATS once
    /// PRI is off, PRI once I/O page faults are off.
    pub fn dev_disable_feature(
        &mut self,
        dev: DeviceId,
        feat: Feature,
    ) -> Result<(), IommuError<H::Error>> {
        let d = self.device(dev)?;
        let in_use = match feat {
            Feature::Aux => {
                if !d.pasids.is_empty() {
                    return Err(IommuError::Busy {
                        dev,
                        aux_domains: d.pasids.len(),
                    });
                }
                false
            }
            Feature::Sva => self.bound_spaces(dev) > 0,
            Feature::Ats => d.pri,
            Feature::Pri => d.iopf,
            Feature::Iopf => false,
        };
        if in_use {
            return Err(IommuError::FeatureInUse { dev, feature: feat });
        }
        if !self.dev_feature_enabled(dev, feat)? {
            return Ok(());
        }
        match feat {
            Feature::Aux => self.hw.disable_aux(dev).map_err(IommuError::Hw)?,
            Feature::Ats => self.hw.set_dev_tlb(dev, None).map_err(IommuError::Hw)?,
            Feature::Pri => {
                let tlb = DevTlb {
                    queue_depth: d.caps.ats_queue_depth,
                    page_requests: false,
                };
                self.hw
                    .set_dev_tlb(dev, Some(tlb))
                    .map_err(IommuError::Hw)?
            }
            // The queue is the unit's, shared by every device.
            Feature::Sva | Feature::Iopf => {}
        }
        if let Some(d) = self.devices.get_mut(&dev) {
            match feat {
                Feature::Aux => (d.aux_enabled, d.sva) = (false, false),
                Feature::Sva => d.sva = false,
                Feature::Ats => d.ats = false,
                Feature::Pri => d.pri = false,
                Feature::Iopf => d.iopf = false,
            }
        }
        Ok(())
    }

    /// Serves what the page request queue holds: each page of a request
    /// for a PASID with an SVA domain goes to `fault_in` (the space, the
    /// page, whether for writing; true when the space made it present);
    /// a page of any other domain is there when it is mapped with the
    /// access asked for. Each page group is answered once its last
    /// request came: Success when every page of it is there, Invalid
    /// otherwise (and for requests from devices without I/O page faults
    /// enabled, or without a PASID).
    pub fn serve_page_requests(
        &mut self,
        fault_in: &mut dyn FnMut(SpaceId, u64, bool) -> bool,
    ) -> Result<IopfReport, IommuError<H::Error>> {
        let pass = self.hw.take_page_requests().map_err(IommuError::Hw)?;
        let mut report = IopfReport {
            requests: pass.requests.len(),
            rejected: pass.rejected.len(),
            overflow_seen: pass.overflow_seen,
            overflow_cleared: pass.overflow_cleared,
            ..IopfReport::default()
        };
        // Whether every page of a group so far is there.
        let mut groups: BTreeMap<(u32, Option<u32>, u16), bool> = BTreeMap::new();
        for req in pass.requests.iter().filter(|r| !r.stop_marker()) {
            let here = self.page_there(req, fault_in);
            let key = (req.dev.0, req.pasid.map(|p| p.0), req.group);
            let all = groups.entry(key).or_insert(true);
            *all &= here;
            if !req.last {
                continue;
            }
            let resp = if groups.remove(&key).unwrap_or(false) {
                PageResponse::Success
            } else {
                PageResponse::Invalid
            };
            if self.hw.page_response(req, resp).map_err(IommuError::Hw)? {
                match resp {
                    PageResponse::Success => report.success += 1,
                    PageResponse::Invalid => report.invalid += 1,
                    PageResponse::Failure => report.failure += 1,
                }
            }
        }
        Ok(report)
    }

    /// Whether the page `req` asks for is there (made present if it is an
    /// SVA page `fault_in` can make).
    fn page_there(
        &mut self,
        req: &PageRequest,
        fault_in: &mut dyn FnMut(SpaceId, u64, bool) -> bool,
    ) -> bool {
        let Some(device) = self.devices.get(&req.dev) else {
            log::warn!("page request from unknown device {}", req.dev);
            return false;
        };
        if !device.iopf {
            log::warn!(
                "page request from device {} without I/O page faults on",
                req.dev
            );
            return false;
        }
        let Some(pasid) = req.pasid else {
            return false;
        };
        let Some(d) = device
            .pasids
            .get(&pasid)
            .and_then(|id| self.domains.get(id))
        else {
            return false;
        };
        if let Some((space, ..)) = d.space {
            return fault_in(space, req.addr, req.write);
        }
        let Some(table) = d.table.as_ref() else {
            return false;
        };
        // A mapped page of a caller-mapped domain: the device may retry.
        match table.lookup(self.hw.tables(), req.addr) {
            Some(t) => !req.write || t.prot.write,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iommu::domain::TableFormat;
    use crate::iommu::model::{cpu_format_of, ModelIommu, ModelState, ModelTables, Shared};
    use crate::iommu::pasid::Pasid;
    use crate::iommu::pgtable::arm::ArmLpae;
    use crate::iommu::pgtable::{Prot, PAGE_SIZE};
    use crate::mm::space::{AddressSpace, Served};
    use alloc::boxed::Box;
    use alloc::vec::Vec;

    const X: DeviceId = DeviceId(8);
    const VA: u64 = 0x7f00_0000_0000;

    fn iommu(ats: bool, pri: bool) -> (Shared, Iommu<ModelIommu>) {
        let state = ModelState::new(TableFormat::Arm(ArmLpae::S1), 20);
        {
            let mut s = state.borrow_mut();
            s.dev_tlb = ats;
            s.page_requests = pri;
        }
        let mut iommu = Iommu::new(ModelIommu::new(state.clone()), 1, 0xfff).expect("core");
        iommu.add_device(X, 20).expect("device");
        (state, iommu)
    }

    fn caps(ats: bool, pri: bool) -> DeviceCaps {
        DeviceCaps {
            ats,
            ats_queue_depth: 0,
            pri,
        }
    }

    #[test]
    fn each_feature_is_refused_with_what_is_missing() {
        let (_, mut unit) = iommu(false, false);
        let e = unit.dev_enable_feature(X, Feature::Ats);
        assert!(
            matches!(e, Err(IommuError::FeatureUnavailable { why, .. }) if why.contains("device has no ATS")),
            "{e:?}"
        );
        unit.declare_capabilities(X, caps(true, true))
            .expect("caps");
        let e = unit.dev_enable_feature(X, Feature::Ats);
        assert!(
            matches!(e, Err(IommuError::FeatureUnavailable { why, .. }) if why.contains("ECAP.DT")),
            "{e:?}"
        );
        let (_, mut unit) = iommu(true, false);
        unit.declare_capabilities(X, caps(true, true))
            .expect("caps");
        unit.dev_enable_feature(X, Feature::Ats).expect("ATS");
        let e = unit.dev_enable_feature(X, Feature::Pri);
        assert!(
            matches!(e, Err(IommuError::FeatureUnavailable { why, .. }) if why.contains("ECAP.PRS")),
            "{e:?}"
        );
        assert!(matches!(
            unit.dev_enable_feature(DeviceId(99), Feature::Ats),
            Err(IommuError::UnknownDevice(_))
        ));
    }

    #[test]
    fn features_go_on_in_order_and_off_in_reverse() {
        let (state, mut unit) = iommu(true, true);
        unit.declare_capabilities(
            X,
            DeviceCaps {
                ats: true,
                ats_queue_depth: 4,
                pri: true,
            },
        )
        .expect("caps");
        let disabled = |f| Err(IommuError::FeatureDisabled { dev: X, feature: f });
        assert_eq!(
            unit.dev_enable_feature(X, Feature::Pri),
            disabled(Feature::Ats)
        );
        assert_eq!(
            unit.dev_enable_feature(X, Feature::Iopf),
            disabled(Feature::Pri)
        );
        unit.dev_enable_feature(X, Feature::Ats).expect("ATS");
        assert_eq!(
            state.borrow().dev_tlbs.get(&X),
            Some(&DevTlb {
                queue_depth: 4,
                page_requests: false
            })
        );
        unit.dev_enable_feature(X, Feature::Pri).expect("PRI");
        assert!(state.borrow().dev_tlbs[&X].page_requests);
        unit.dev_enable_feature(X, Feature::Iopf).expect("IOPF");
        assert!(state.borrow().prq_on);
        let in_use = |f| Err(IommuError::FeatureInUse { dev: X, feature: f });
        assert_eq!(
            unit.dev_disable_feature(X, Feature::Ats),
            in_use(Feature::Ats)
        );
        assert_eq!(
            unit.dev_disable_feature(X, Feature::Pri),
            in_use(Feature::Pri)
        );
        for f in [Feature::Iopf, Feature::Pri, Feature::Ats] {
            unit.dev_disable_feature(X, f).expect("off");
            assert!(!unit.dev_feature_enabled(X, f).expect("state"));
        }
        assert!(!state.borrow().dev_tlbs.contains_key(&X));
    }

    fn request(pasid: u32, addr: u64, write: bool, last: bool, group: u16) -> PageRequest {
        PageRequest {
            dev: X,
            pasid: Some(Pasid(pasid)),
            addr,
            read: !write,
            write,
            privileged: false,
            exec: false,
            last,
            group,
        }
    }

    #[test]
    fn page_requests_for_a_bound_space_are_made_present_and_answered() {
        let (state, mut unit) = iommu(true, true);
        unit.declare_capabilities(X, caps(true, true))
            .expect("caps");
        for f in [Feature::Sva, Feature::Ats, Feature::Pri] {
            unit.dev_enable_feature(X, f).expect("feature");
        }
        let format = cpu_format_of(TableFormat::Arm(ArmLpae::S1));
        let mut space = AddressSpace::new(
            crate::mm::space::SpaceId(3),
            format,
            Box::new(ModelTables(state.clone())),
        )
        .expect("space");
        space.reserve(VA, 4 * PAGE_SIZE, Prot::RW).expect("reserve");
        let pasid = unit.sva_bind(X, &space).expect("bind");
        let p = pasid.0;
        let requests = [
            request(p, VA, true, true, 1),
            // Two pages in one group: one there, one not.
            request(p, VA + PAGE_SIZE, false, false, 2),
            request(p, VA + 9 * PAGE_SIZE, false, true, 2),
            // A stop marker: no answer.
            PageRequest {
                read: false,
                write: false,
                ..request(p, 0, false, true, 3)
            },
        ];
        // I/O page faults off: every group Invalid, nothing mapped.
        state.borrow_mut().prq.extend(requests);
        let mut pages = 0x7000_0000u64;
        let report = unit
            .serve_page_requests(&mut |_, va, write| {
                space
                    .fault(va, write, &mut || {
                        pages += PAGE_SIZE;
                        Some(pages)
                    })
                    .is_ok()
            })
            .expect("serve");
        assert_eq!((report.requests, report.success, report.invalid), (4, 0, 2));
        assert_eq!(space.translate(VA), None);
        unit.dev_enable_feature(X, Feature::Iopf).expect("IOPF");
        state.borrow_mut().responses.clear();
        state.borrow_mut().prq.extend(requests);
        let mut made = Vec::new();
        let report = unit
            .serve_page_requests(&mut |sid, va, write| {
                assert_eq!(sid, space.id());
                match space.fault(va, write, &mut || {
                    pages += PAGE_SIZE;
                    Some(pages)
                }) {
                    Ok(Served::Made { pa }) => {
                        made.push(pa);
                        true
                    }
                    Ok(Served::Present) => true,
                    Err(_) => false,
                }
            })
            .expect("serve");
        assert_eq!((report.requests, report.success, report.invalid), (4, 1, 1));
        let answers: Vec<(u16, PageResponse)> = state
            .borrow()
            .responses
            .iter()
            .map(|(r, a)| (r.group, *a))
            .collect();
        assert_eq!(
            answers,
            [(1, PageResponse::Success), (2, PageResponse::Invalid)]
        );
        assert_eq!(made.len(), 2, "both pages inside the region were made");
        assert!(space.translate(VA).is_some_and(|(_, prot)| prot.write));
        unit.sva_unbind(X, space.id()).expect("unbind");
    }
}
