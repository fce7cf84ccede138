//! I/O address spaces (iommufd's IOAS): a set of mappings with no page
//! table format, from which hardware page tables (HWPTs: paging domains
//! of the core) are made per IOMMU. Attaching a device through an IOAS
//! reuses the IOAS's automatic HWPT on the device's IOMMU or makes one
//! (`IOMMU_HWPT_ALLOC` happens implicitly, as for iommufd's auto domains);
//! [`Ioas::hwpt_alloc`] makes one explicitly with flags (dirty tracking, a
//! nesting parent), refused with the unit's reason where it cannot. A
//! mapping made in the IOAS reaches every HWPT built from it, an unmap
//! costs each HWPT one invalidation batch.
//!
//! An IOAS may span IOMMUs: each call names the unit it works on, and the
//! IOAS keeps its HWPTs by the unit's id ([`Iommu::id`]).
use super::domain::{DeviceId, DomainId, DomainKind, Iommu, IommuError, IommuHw};
use super::pgtable::Prot;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

/// What an explicitly allocated HWPT must be able to do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HwptFlags {
    /// Dirty tracking (on from the start).
    pub dirty_tracking: bool,
    /// A stage-2 parent a guest's stage 1 may be nested over.
    pub nest_parent: bool,
}

/// A hardware page table made from an IOAS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hwpt {
    /// The unit it lives on ([`Iommu::id`]).
    pub unit: u32,
    pub domain: DomainId,
    /// Made by an attach, reused by later attaches on the same unit.
    pub auto: bool,
    pub flags: HwptFlags,
}

/// A set of mappings and the HWPTs built from it.
#[derive(Debug, Default)]
pub struct Ioas {
    /// iova -> (pa, size, prot).
    mappings: BTreeMap<u64, (u64, u64, Prot)>,
    hwpts: Vec<Hwpt>,
}

impl Ioas {
    pub fn new() -> Self {
        Ioas::default()
    }

    pub fn hwpts(&self) -> &[Hwpt] {
        &self.hwpts
    }

    /// The mappings, as (iova, pa, size).
    pub fn mappings(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.mappings.iter().map(|(&i, &(p, s, _))| (i, p, s))
    }

    /// Maps `[iova, iova + size)` to `pa` in the IOAS and in every HWPT
    /// of it on `unit`; a unit the IOAS has HWPTs on must be passed to
    /// each map (the IOAS refuses a map that would leave one behind).
    pub fn map<H: IommuHw>(
        &mut self,
        units: &mut [&mut Iommu<H>],
        iova: u64,
        pa: u64,
        size: u64,
        prot: Prot,
    ) -> Result<(), IommuError<H::Error>> {
        self.check_units(units)?;
        let mut done: Vec<(usize, DomainId)> = Vec::new();
        for (k, unit) in units.iter_mut().enumerate() {
            let id = unit.id();
            for h in self.hwpts.iter().filter(|h| h.unit == id) {
                if let Err(e) = unit.map(h.domain, iova, pa, size, prot) {
                    // Take back what reached the others.
                    for &(j, d) in &done {
                        let _ = units[j].unmap(d, iova, size);
                    }
                    return Err(e);
                }
                done.push((k, h.domain));
            }
        }
        self.mappings.insert(iova, (pa, size, prot));
        Ok(())
    }

    /// Unmaps the mapping made at `iova` from the IOAS and every HWPT of
    /// it: one invalidation batch per HWPT.
    pub fn unmap<H: IommuHw>(
        &mut self,
        units: &mut [&mut Iommu<H>],
        iova: u64,
    ) -> Result<(), IommuError<H::Error>> {
        self.check_units(units)?;
        let &(_, size, _) = self.mappings.get(&iova).ok_or(IommuError::PageTable(
            super::pgtable::PgError::NotMapped { iova },
        ))?;
        for unit in units.iter_mut() {
            let id = unit.id();
            for h in self.hwpts.iter().filter(|h| h.unit == id) {
                unit.unmap(h.domain, iova, size)?;
            }
        }
        self.mappings.remove(&iova);
        Ok(())
    }

    /// Every unit with HWPTs of this IOAS is among `units`.
    fn check_units<H: IommuHw>(&self, units: &[&mut Iommu<H>]) -> Result<(), IommuError<H::Error>> {
        match self
            .hwpts
            .iter()
            .find(|h| !units.iter().any(|u| u.id() == h.unit))
        {
            Some(h) => Err(IommuError::HwptUnavailable {
                what: "an IOAS change",
                why: if h.auto {
                    "a unit holding one of the IOAS's page tables was not passed"
                } else {
                    "a unit holding an explicitly allocated page table of the IOAS was not passed"
                },
            }),
            None => Ok(()),
        }
    }

    /// A HWPT on `unit` with the IOAS's mappings and `flags`; refused with
    /// the unit's reason where it cannot have them.
    pub fn hwpt_alloc<H: IommuHw>(
        &mut self,
        unit: &mut Iommu<H>,
        flags: HwptFlags,
    ) -> Result<DomainId, IommuError<H::Error>> {
        self.make_hwpt(unit, flags, false)
    }

    fn make_hwpt<H: IommuHw>(
        &mut self,
        unit: &mut Iommu<H>,
        flags: HwptFlags,
        auto: bool,
    ) -> Result<DomainId, IommuError<H::Error>> {
        if flags.dirty_tracking {
            if let Some(why) = unit.hw.dirty_tracking_unavailable() {
                return Err(IommuError::HwptUnavailable {
                    what: "dirty tracking",
                    why,
                });
            }
        }
        if flags.nest_parent {
            if let Some(why) = unit.hw.nesting_unavailable() {
                return Err(IommuError::HwptUnavailable {
                    what: "a nesting parent",
                    why,
                });
            }
        }
        let d = unit.domain_alloc(DomainKind::Unmanaged)?;
        let filled = (|| {
            if flags.dirty_tracking {
                unit.set_dirty_tracking(d, true)?;
            }
            for (&iova, &(pa, size, prot)) in &self.mappings {
                unit.map(d, iova, pa, size, prot)?;
            }
            Ok(())
        })();
        if let Err(e) = filled {
            let _ = unit.domain_free(d);
            return Err(e);
        }
        self.hwpts.push(Hwpt {
            unit: unit.id(),
            domain: d,
            auto,
            flags,
        });
        Ok(d)
    }

    /// Attaches `dev` on `unit` through the IOAS: to the IOAS's automatic
    /// HWPT there, made on first use. Returns it.
    pub fn attach<H: IommuHw>(
        &mut self,
        unit: &mut Iommu<H>,
        dev: DeviceId,
    ) -> Result<DomainId, IommuError<H::Error>> {
        let found = self
            .hwpts
            .iter()
            .find(|h| h.unit == unit.id() && h.auto)
            .map(|h| h.domain);
        let (d, fresh) = match found {
            Some(d) => (d, false),
            None => (self.make_hwpt(unit, HwptFlags::default(), true)?, true),
        };
        if let Err(e) = unit.attach_device(d, dev) {
            if fresh {
                self.hwpts.retain(|h| h.domain != d || h.unit != unit.id());
                let _ = unit.domain_free(d);
            }
            return Err(e);
        }
        Ok(d)
    }

    /// Attaches `dev` on `unit` to the IOAS's HWPT `d` (one made by
    /// [`Ioas::hwpt_alloc`]).
    pub fn attach_hwpt<H: IommuHw>(
        &mut self,
        unit: &mut Iommu<H>,
        dev: DeviceId,
        d: DomainId,
    ) -> Result<(), IommuError<H::Error>> {
        if !self
            .hwpts
            .iter()
            .any(|h| h.unit == unit.id() && h.domain == d)
        {
            return Err(IommuError::UnknownDomain(d));
        }
        unit.attach_device(d, dev)
    }

    /// Frees the IOAS's HWPTs on `unit` that nothing is attached to.
    pub fn release<H: IommuHw>(&mut self, unit: &mut Iommu<H>) -> Result<(), IommuError<H::Error>> {
        let mine: Vec<DomainId> = self
            .hwpts
            .iter()
            .filter(|h| h.unit == unit.id())
            .map(|h| h.domain)
            .collect();
        for d in mine {
            if unit.attachments(d).is_empty() {
                unit.domain_free(d)?;
                self.hwpts
                    .retain(|h| !(h.unit == unit.id() && h.domain == d));
            }
        }
        Ok(())
    }
}
