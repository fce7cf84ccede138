//! Shared virtual addressing: a CPU address space bound to a device's
//! PASID (Linux's `iommu_sva_bind_device`). The space keeps its own page
//! tables; the core makes an SVA domain over them (a hardware tag of its
//! own, no table of its own), gives the space one PASID on this IOMMU,
//! the same on every device it is bound to, and is the space's
//! invalidation hook ([`SpaceNotifier`]).
use super::{DeviceId, DomainId, DomainKind, Feature, Iommu, IommuError, IommuHw, Pasid};
use crate::iommu::pgtable::{Format, Gather};
use crate::mm::space::{AddressSpace, SpaceId, SpaceNotifier};

impl<H: IommuHw> Iommu<H> {
    /// Binds `space` to `dev`: requests `dev` tags with the returned PASID
    /// translate through the space's tables. The device needs SVA enabled
    /// ([`Feature::Sva`]); the unit must walk the space's format.
    pub fn sva_bind(
        &mut self,
        dev: DeviceId,
        space: &AddressSpace,
    ) -> Result<Pasid, IommuError<H::Error>> {
        if !self.device(dev)?.sva {
            return Err(IommuError::FeatureDisabled {
                dev,
                feature: Feature::Sva,
            });
        }
        let format = space.format();
        if !self.hw.sva_accepts(&format) {
            return Err(IommuError::SpaceFormat {
                format: format.name(),
            });
        }
        let (id, fresh_domain) = match self.spaces.get(&space.id()) {
            Some(&id) => (id, false),
            None => {
                let id =
                    self.new_domain(DomainKind::Sva, Some((space.id(), space.root(), format)))?;
                self.spaces.insert(space.id(), id);
                (id, true)
            }
        };
        let result = self.attach_own_pasid(id, dev);
        if result.is_err() && fresh_domain {
            let _ = self.domain_free(id);
        }
        result
    }

    /// Unbinds `space` from `dev`: its PASID goes back to blocked there and
    /// every cached translation of it goes. The last unbind frees the SVA
    /// domain and the PASID.
    pub fn sva_unbind(
        &mut self,
        dev: DeviceId,
        space: SpaceId,
    ) -> Result<(), IommuError<H::Error>> {
        self.device(dev)?;
        let id = *self
            .spaces
            .get(&space)
            .ok_or(IommuError::NotBound { dev, space })?;
        let d = self.domains.get(&id).ok_or(IommuError::UnknownDomain(id))?;
        let Some(pasid) = d.pasid.filter(|&p| d.pasid_of.contains(&(dev, p))) else {
            return Err(IommuError::NotBound { dev, space });
        };
        self.clear_device_pasid(dev, pasid)?;
        if self.domains.get(&id).is_some_and(|d| d.pasid_of.is_empty()) {
            self.domain_free(id)?;
        }
        Ok(())
    }

    /// The PASID `space` is bound with on this IOMMU, if it is bound.
    pub fn sva_pasid(&self, space: SpaceId) -> Option<Pasid> {
        let id = self.spaces.get(&space)?;
        self.domains.get(id)?.pasid
    }

    /// The SVA domain of `space`, while it is bound.
    pub fn sva_domain(&self, space: SpaceId) -> Option<DomainId> {
        self.spaces.get(&space).copied()
    }

    /// Address spaces bound to `dev`.
    pub(super) fn bound_spaces(&self, dev: DeviceId) -> usize {
        self.spaces
            .values()
            .filter_map(|id| self.domains.get(id))
            .filter(|d| d.pasid_of.iter().any(|&(x, _)| x == dev))
            .count()
    }
}

/// The core is the hook of every space it bound: a change of the space's
/// tables becomes the driver's invalidation of the SVA domain wherever
/// it is attached (and of the device TLBs there). A space bound nowhere
/// here has nothing cached here.
impl<H: IommuHw> SpaceNotifier for Iommu<H> {
    type Error = IommuError<H::Error>;

    fn invalidate(&mut self, space: SpaceId, gather: &Gather) -> Result<(), Self::Error> {
        let Some(&id) = self.spaces.get(&space) else {
            return Ok(());
        };
        let r = self.dref(id)?;
        let attached = self.attachments(id);
        self.hw
            .invalidate(&r, &attached, gather)
            .map_err(IommuError::Hw)
    }
}
