//! VT-d driver tests on the conformance platform (the driver under the
//! core, the pasid-dma devices behind the unit): fault records field by
//! field, a refused invalidation descriptor, fault overflow, the fault
//! event MSI, a PASID entry change and its invalidation, what an aux
//! domain costs, and a benchmark of copies through first level against
//! pass-through.

super::conformance::board_tests!(
    "x86_64", "this board has no VT-d unit";
    vtd_inject_fault_records,
    vtd_inject_invalid_descriptor,
    vtd_inject_fault_overflow,
    vtd_inject_fault_event_msi,
    vtd_pasid_entry_change_needs_invalidation,
    vtd_aux_domain_metadata,
    copy_1m_translated_and_pass_through,
    vtd_pasid_near_the_top,
);

#[cfg(target_arch = "x86_64")]
mod on_board {
    use super::super::conformance::board::{fail, VtdPlatform};
    use alloc::format;
    use kernel::dma::{DmaOp, DmaStatus, DmaTag};
    use kernel::harness::{TestError, TestResult};
    use kernel::iommu::conformance::{core_err as core, read_u64, tagged, write_u64, Platform};
    use kernel::iommu::domain::{DeviceId, DomainKind, Feature, IommuHw, Pasid};
    use kernel::iommu::pgtable::{Prot, PAGE_SIZE};
    use kernel::{ensure, ensure_eq};
    use vtd::fault::FaultRecord;
    use vtd::qi::Descriptor;

    const IOVA: u64 = 0x4000_0000;

    /// Exactly one fault record since the last look, with these fields.
    fn expect_record(
        p: &mut VtdPlatform,
        what: &str,
        sid: DeviceId,
        pasid: Option<u32>,
        addr: u64,
        read: bool,
        reasons: &[u8],
    ) -> Result<FaultRecord, TestError> {
        let records = p.iommu().hw.take_records();
        let ok = records.len() == 1 && {
            let r = &records[0];
            u32::from(r.source_id) == sid.0
                && r.pasid == pasid
                && r.addr == addr & !(PAGE_SIZE - 1)
                && r.read == read
                && reasons.contains(&r.reason)
        };
        ensure!(
            ok,
            "{what}: expected one record (source {sid:#x}, PASID {pasid:?}, page {addr:#x}, read {read}, \
             reason in {reasons:x?}), got {records:x?}"
        );
        log::info!("VT-d {what}: {:x?}", records[0]);
        Ok(records[0])
    }

    /// Every fault the model records for these requests, field by field:
    /// an untagged write to the blocked primary domain, a tagged write to
    /// an unmapped page and to a read-only one, a read of an unmapped
    /// page, and a PASID nobody attached.
    pub fn vtd_inject_fault_records(p: &mut VtdPlatform) -> TestResult {
        let (x, _, _) = p.devices();
        let page = p.alloc_pages(1, PAGE_SIZE)?;
        let d = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        let result = (|| -> TestResult {
            let r = write_u64(p, x, IOVA, 1, DmaTag::Untagged)?;
            ensure_eq!(r.status, DmaStatus::WriteFault { addr: IOVA }, "blocked");
            // The blocked entry's empty table: not present at the top.
            expect_record(p, "blocked primary", x, None, IOVA, false, &[0x71, 0x05])?;

            p.iommu()
                .map(d, IOVA, page, PAGE_SIZE, Prot::RO)
                .map_err(core)?;
            p.iommu()
                .dev_enable_feature(x, Feature::Aux)
                .map_err(core)?;
            let pasid = p.iommu().aux_attach_device(d, x).map_err(core)?;
            let hole = IOVA + PAGE_SIZE;
            let r = write_u64(p, x, hole, 1, tagged(pasid))?;
            ensure_eq!(r.status, DmaStatus::WriteFault { addr: hole }, "unmapped");
            expect_record(
                p,
                "unmapped, tagged",
                x,
                Some(pasid.0),
                hole,
                false,
                &[0x71, 0x05],
            )?;
            let r = write_u64(p, x, IOVA, 1, tagged(pasid))?;
            ensure_eq!(r.status, DmaStatus::WriteFault { addr: IOVA }, "read-only");
            expect_record(
                p,
                "write to read-only",
                x,
                Some(pasid.0),
                IOVA,
                false,
                &[0x85, 0x05],
            )?;
            let r = p
                .dma(
                    x,
                    DmaOp::Compare {
                        a: hole,
                        b: hole,
                        len: 8,
                    },
                    tagged(pasid),
                )
                .map_err(fail)?;
            ensure_eq!(
                r.status,
                DmaStatus::ReadFault { addr: hole },
                "read of unmapped"
            );
            expect_record(
                p,
                "read of unmapped",
                x,
                Some(pasid.0),
                hole,
                true,
                &[0x71, 0x06],
            )?;
            let stranger = Pasid(pasid.0 + 1);
            let r = write_u64(p, x, IOVA, 1, tagged(stranger))?;
            ensure_eq!(
                r.status,
                DmaStatus::WriteFault { addr: IOVA },
                "unattached PASID"
            );
            expect_record(
                p,
                "unattached PASID",
                x,
                Some(stranger.0),
                IOVA,
                false,
                &[0x59, 0x5b],
            )?;
            let (d0, w0) = (p.iommu().hw.descriptors(), p.iommu().hw.waits());
            p.iommu().unmap(d, IOVA, PAGE_SIZE).map_err(core)?;
            let (d1, w1) = (p.iommu().hw.descriptors(), p.iommu().hw.waits());
            log::info!(
                "VT-d: one unmap batch: {} descriptor(s), {} wait(s)",
                d1 - d0,
                w1 - w0
            );
            ensure_eq!(w1 - w0, 1, "invalidation waits for one unmap batch");
            p.iommu().aux_detach_device(d, x).map_err(core)?;
            p.iommu()
                .dev_disable_feature(x, Feature::Aux)
                .map_err(core)?;
            Ok(())
        })();
        let cleanup = p.iommu().domain_free(d).map_err(core);
        p.free_pages(page, 1);
        result.and(cleanup)
    }

    /// A descriptor the unit cannot take (an unknown type) between two
    /// good ones: reported as IQE with its index and contents, replaced,
    /// and the wait after it completes.
    pub fn vtd_inject_invalid_descriptor(p: &mut VtdPlatform) -> TestResult {
        let good = Descriptor::ContextGlobal.encode();
        let bad = [0xf, 0, 0, 0];
        let refused = p
            .iommu()
            .hw
            .submit_encoded(&[good, bad, good])
            .map_err(fail)?;
        ensure!(
            refused.len() == 1 && refused[0].descriptor == bad,
            "the refused descriptor's report: {refused:x?}"
        );
        // The queue goes on.
        p.iommu()
            .hw
            .submit(&[Descriptor::IotlbGlobal])
            .map_err(fail)?;
        Ok(())
    }

    /// Faults left in the (single) recording register: the next one from
    /// another source overflows (PFO), which is noticed once; recording
    /// works again after the registers are read.
    pub fn vtd_inject_fault_overflow(p: &mut VtdPlatform) -> TestResult {
        let (x, y, _) = p.devices();
        let records = p.iommu().hw.caps().fault_records;
        p.iommu().hw.take_records();
        let before = p.iommu().hw.fault_overflows();
        p.iommu().hw.defer_fault_collection = true;
        let result = (|| -> TestResult {
            // One fault per recording register, then one more.
            for i in 0..=u64::from(records) {
                let dev = if i % 2 == 0 { x } else { y };
                let at = IOVA + i * PAGE_SIZE;
                let r = write_u64(p, dev, at, 1, DmaTag::Untagged)?;
                ensure_eq!(r.status, DmaStatus::WriteFault { addr: at }, "fault {i}");
            }
            let kept = p.iommu().hw.take_records();
            ensure_eq!(kept.len(), usize::from(records), "records kept");
            ensure_eq!(
                p.iommu().hw.fault_overflows() - before,
                1,
                "overflows noticed"
            );
            Ok(())
        })();
        p.iommu().hw.defer_fault_collection = false;
        result?;
        let r = write_u64(p, y, IOVA, 1, DmaTag::Untagged)?;
        ensure_eq!(
            r.status,
            DmaStatus::WriteFault { addr: IOVA },
            "after the overflow"
        );
        expect_record(p, "after the overflow", y, None, IOVA, false, &[0x71, 0x05])?;
        ensure_eq!(
            p.iommu().hw.fault_overflows() - before,
            1,
            "no second overflow"
        );
        Ok(())
    }

    /// The fault event interrupt by MSI: one fault, one delivery.
    pub fn vtd_inject_fault_event_msi(p: &mut VtdPlatform) -> TestResult {
        let (x, _, _) = p.devices();
        let v = crate::arch::msi_alloc(0).map_err(TestError::fail)?;
        p.iommu().hw.enable_fault_interrupt(v.address, v.data);
        let before = crate::arch::msi_count(v.id);
        let r = write_u64(p, x, IOVA, 1, DmaTag::Untagged);
        super::super::irq::wait_for_count(v.id, before + 1);
        let seen = crate::arch::msi_count(v.id) - before;
        p.iommu().hw.disable_fault_interrupt();
        ensure_eq!(
            r?.status,
            DmaStatus::WriteFault { addr: IOVA },
            "blocked write"
        );
        ensure_eq!(seen, 1, "fault event MSIs for one fault");
        ensure_eq!(p.take_faults().len(), 1, "the fault behind it");
        Ok(())
    }

    /// A PASID entry rewritten under a live PASID to another domain
    /// changes nothing until the PASID cache and the IOTLB are told; then
    /// the writes land in the other domain's page.
    pub fn vtd_pasid_entry_change_needs_invalidation(p: &mut VtdPlatform) -> TestResult {
        use super::super::conformance::board::{live_change_needs_invalidation, LiveChange};
        // Writes the entry of `to` at the PASID and returns the old DID.
        let point_at =
            |p: &mut VtdPlatform, l: &LiveChange, to: &kernel::iommu::domain::DomainRef| {
                let root = to.root.ok_or_else(|| TestError::fail("no table"))?;
                let entry = p.iommu().hw.paging_entry(to.tag as u16, root.0).encode();
                let at = p
                    .iommu()
                    .hw
                    .pasid_entry_address(l.dev.0 as u16, l.pasid.0)
                    .ok_or_else(|| TestError::fail("no PASID entry"))?;
                p.iommu().hw.poke(at, &entry).map_err(fail)
            };
        // The PASID cache and IOTLB forget `from`; the PASID cache learns `to`.
        let switch = |p: &mut VtdPlatform, l: &LiveChange, from: u32, to: u32| {
            let hw = &mut p.iommu().hw;
            hw.flush_pasid(from as u16, l.pasid.0).map_err(fail)?;
            hw.submit(&[Descriptor::PasidCachePasid {
                did: to as u16,
                pasid: l.pasid.0,
            }])
            .map_err(fail)
        };
        live_change_needs_invalidation(
            p,
            "the PASID-cache and IOTLB invalidation",
            |p, l| point_at(p, l, &l.b),
            |p, l| switch(p, l, l.a.tag, l.b.tag),
            // Back as the driver wrote it, so detaching finds A's DID.
            |p, l| {
                point_at(p, l, &l.a)?;
                switch(p, l, l.b.tag, l.a.tag)
            },
        )
    }

    /// What an aux domain costs (see the shared measure).
    pub fn vtd_aux_domain_metadata(p: &mut VtdPlatform) -> TestResult {
        super::super::conformance::board::aux_domain_metadata(p, "VT-d PASID")
    }

    /// 1 MiB copies through the unit's translation against pass-through.
    pub fn copy_1m_translated_and_pass_through(p: &mut VtdPlatform) -> TestResult {
        super::super::conformance::board::copy_1m_bench(
            p,
            "vtd::copy_1m_translated",
            "vtd::copy_1m_pass_through",
        )
    }

    /// The largest PASID both the device and the unit take (2^20 - 1 with
    /// full widths) needs a PASID table of its own, past the first (64
    /// PASIDs each), and with more than 15 bits a directory entry past
    /// the first directory page: the directory then grows to the unit's
    /// width (2^(bits - 6) entries). DMA under that PASID lands.
    pub fn vtd_pasid_near_the_top(p: &mut VtdPlatform) -> TestResult {
        let (x, _, _) = p.devices();
        let sid = x.0 as u16;
        let saved = p.iommu().pasid_range();
        let top = match p.iommu().pasid_limit(x).map_err(core)? {
            Some(top) if top >= 64 => top,
            other => {
                return Err(TestError::skip(format!(
                    "the largest PASID device {x} and the unit share is {other:?}: \
                     one PASID table covers it"
                )))
            }
        };
        let unit_bits = p.iommu().hw.pasid_bits();
        let page = p.alloc_pages(1, PAGE_SIZE)?;
        let d = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        let result = (|| -> TestResult {
            p.iommu().set_pasid_range(top, top).map_err(core)?;
            p.iommu()
                .map(d, IOVA, page, PAGE_SIZE, Prot::RW)
                .map_err(core)?;
            p.iommu()
                .dev_enable_feature(x, Feature::Aux)
                .map_err(core)?;
            let before = p.iommu().hw.pasid_directory(sid);
            let pasid = p.iommu().aux_attach_device(d, x).map_err(core)?;
            let after = p.iommu().hw.pasid_directory(sid);
            log::info!("VT-d PASID {pasid:#x}: directory and tables {before:?} -> {after:?}");
            ensure_eq!(pasid, Pasid(top), "the PASID");
            let (Some(before), Some(after)) = (before, after) else {
                return Err(fail("the device has no PASID directory"));
            };
            let index = top >> 6;
            let entries = if index < before.0 {
                before.0
            } else {
                1u32 << (unit_bits.max(7) - 6)
            };
            ensure_eq!(after.0, entries, "directory entries");
            ensure_eq!(after.1, before.1 + 1, "PASID tables (a second one)");
            ensure_eq!(
                write_u64(p, x, IOVA + 8, 0x7a, tagged(pasid))?.status,
                DmaStatus::Success,
                "write"
            );
            ensure_eq!(read_u64(p, page + 8), 0x7a, "the page");
            p.iommu().aux_detach_device(d, x).map_err(core)?;
            p.iommu()
                .dev_disable_feature(x, Feature::Aux)
                .map_err(core)?;
            Ok(())
        })();
        let cleanup = p
            .iommu()
            .domain_free(d)
            .and_then(|()| p.iommu().set_pasid_range(saved.0, saved.1))
            .map_err(core);
        p.free_pages(page, 1);
        result.and(cleanup)
    }
}
