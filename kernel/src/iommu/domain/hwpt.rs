//! Dirty tracking on a paging domain (a hardware page table, HWPT, in
//! iommufd's words): turned on and off per domain, read and cleared over
//! an IOVA range with the invalidation that makes the next write set the
//! dirty state again (Linux's `set_dirty_tracking` and
//! `read_and_clear_dirty` iommu domain ops).
use super::{paging_table, DomainId, Iommu, IommuError, IommuHw};
use crate::iommu::check::Note;
use crate::iommu::pgtable::Gather;
use alloc::vec::Vec;

impl<H: IommuHw> Iommu<H> {
    /// Dirty tracking on or off for paging domain `id`: its writable
    /// leaves made clean (or dirty again), and the domain invalidated
    /// wherever it is attached. Refused where the unit does not update
    /// dirty state ([`IommuError::HwptUnavailable`]).
    pub fn set_dirty_tracking(
        &mut self,
        id: DomainId,
        on: bool,
    ) -> Result<(), IommuError<H::Error>> {
        if let Some(why) = self.hw.dirty_tracking_unavailable() {
            return Err(IommuError::HwptUnavailable {
                what: "dirty tracking",
                why,
            });
        }
        let mut g = Gather::default();
        let table = paging_table(&mut self.domains, id)?;
        table.set_dirty_tracking(self.hw.tables(), on, &mut g)?;
        self.invalidate_domain(id, &g)
    }

    /// Whether dirty tracking is on for `id`.
    pub fn dirty_tracking(&mut self, id: DomainId) -> Result<bool, IommuError<H::Error>> {
        Ok(paging_table(&mut self.domains, id)?.dirty_tracking())
    }

    /// The dirty leaves of `id` in `[iova, iova + size)` as (IOVA, size):
    /// a block counts whole. With `clear` each is made clean, and unless
    /// `invalidate` is false (a test showing the unit keeps the dirty
    /// state cached) one invalidation batch follows, so that the next
    /// write through it sets the dirty state again.
    pub fn read_and_clear_dirty(
        &mut self,
        id: DomainId,
        iova: u64,
        size: u64,
        clear: bool,
        invalidate: bool,
    ) -> Result<Vec<(u64, u64)>, IommuError<H::Error>> {
        let mut g = Gather::default();
        let table = paging_table(&mut self.domains, id)?;
        if !table.dirty_tracking() {
            return Err(IommuError::HwptUnavailable {
                what: "reading dirty state",
                why: "dirty tracking is off for the domain",
            });
        }
        if !invalidate {
            // Left stale on purpose (a test of the unit's cached dirty
            // state): the checking mode is told not to expect an
            // invalidation of these stores.
            self.hw.note(Note::Uncached(true));
        }
        let dirty = table.read_and_clear_dirty(self.hw.tables(), iova, size, clear, &mut g);
        if !invalidate {
            self.hw.note(Note::Uncached(false));
        }
        let dirty = dirty?;
        if invalidate {
            self.invalidate_domain(id, &g)?;
        }
        Ok(dirty)
    }

    /// Drops every cached translation of `[iova, iova + size)` of `id`
    /// wherever it is attached (what a read-and-clear without its
    /// invalidation left for later).
    pub fn invalidate_range(
        &mut self,
        id: DomainId,
        iova: u64,
        size: u64,
    ) -> Result<(), IommuError<H::Error>> {
        let mut g = Gather::default();
        g.add_range(iova, size);
        self.invalidate_domain(id, &g)
    }

    /// One invalidation of `g.ranges` of `id` wherever it is attached.
    fn invalidate_domain(&mut self, id: DomainId, g: &Gather) -> Result<(), IommuError<H::Error>> {
        if g.is_empty() {
            return Ok(());
        }
        let r = self.dref(id)?;
        let attached = self.attachments(id);
        self.hw.invalidate(&r, &attached, g).map_err(IommuError::Hw)
    }
}
