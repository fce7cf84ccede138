//! ATS and page requests on the conformance platform: a device TLB the
//! IOMMU keeps coherent, and I/O page faults served from a bound address
//! space. They run where the unit and a pasid-dma device offer them (on
//! q35, QEMU's intel-iommu with `device-iotlb` and `x-pri`, patched) and
//! SKIP with the core's reason elsewhere. The stale-entry halves use the
//! VT-d driver's hook that leaves device-TLB invalidations out, so they
//! are VT-d's for now: the SMMUv3 driver has no ATS (QEMU's SMMUv3 has
//! none).

super::conformance::board_tests!(
    "x86_64", "no ATS here: the SMMUv3 driver has none (QEMU's SMMUv3 offers neither ATS nor PRI)";
    ats_device_tlb_hits_and_unmap_invalidates,
    iopf_page_made_present_on_demand_completes_the_dma,
    iopf_queue_overflow_is_noticed_and_recovered,
    bench_device_tlb_hit_and_miss,
    bench_page_request_round_trip,
);

#[cfg(target_arch = "x86_64")]
mod on_board {
    use super::super::conformance::board::{fail, VtdPlatform};
    use alloc::format;
    use alloc::vec::Vec;
    use kernel::dma::{DmaOp, DmaResult, DmaStatus, DmaTag};
    use kernel::harness::{TestError, TestResult};
    use kernel::iommu::conformance::{core_err as core, read_u64, tagged, Platform, SVA_VA};
    use kernel::iommu::domain::{DeviceId, DomainKind, Feature};
    use kernel::iommu::pgtable::{Prot, PAGE_SIZE};
    use kernel::mm::space::{AddressSpace, Served, SpaceId};
    use kernel::{ensure, ensure_eq};
    use pasid_dma::DeviceCounters;

    const IOVA: u64 = 0x4000_0000;

    /// The first of the suite's devices that can have `feats`, or SKIP
    /// with why the first cannot.
    fn device_with(p: &mut VtdPlatform, feats: &[Feature]) -> Result<DeviceId, TestError> {
        let (x, _, _) = p.devices();
        for &f in feats {
            if let Some(why) = p.iommu().dev_feature_unavailable(x, f).map_err(core)? {
                return Err(TestError::skip(format!("no {f:?} for device {x}: {why}")));
            }
        }
        Ok(x)
    }

    /// One pass over the page request queue: pages of `space` made
    /// present from `pool` (an empty pool makes every absent page a
    /// failure: Invalid).
    fn serve(
        p: &mut VtdPlatform,
        space: &mut AddressSpace,
        pool: &mut Vec<u64>,
    ) -> Result<kernel::iommu::domain::IopfReport, TestError> {
        p.iommu()
            .serve_page_requests(&mut |_, va, write| {
                space.fault(va, write, &mut || pool.pop()).is_ok()
            })
            .map_err(core)
    }

    fn counters(p: &VtdPlatform, x: DeviceId) -> Result<DeviceCounters, TestError> {
        let (_, _, dev) = p.function_of(x).ok_or_else(|| fail("no such device"))?;
        dev.counters()
            .ok_or_else(|| TestError::skip("pasid-dma before version 1.2: no device TLB"))
    }

    /// ATS on in the IOMMU, then in the device (STU 4 KiB); or off again,
    /// the device first.
    fn ats(p: &mut VtdPlatform, x: DeviceId, on: bool) -> TestResult {
        let (segment, f, _) = p.function_of(x).ok_or_else(|| fail("no such device"))?;
        if on {
            p.iommu()
                .dev_enable_feature(x, Feature::Ats)
                .map_err(core)?;
        }
        crate::pcie::with_config(segment, |cfg, _| {
            if on {
                pci::features::enable_ats(cfg, f, 0).map(|_| ())
            } else {
                pci::features::disable_ats(cfg, f)
            }
        })
        .ok_or_else(|| fail("segment vanished"))?
        .map_err(fail)?;
        if !on {
            p.iommu()
                .dev_disable_feature(x, Feature::Ats)
                .map_err(core)?;
        }
        Ok(())
    }

    fn copy8(
        p: &mut VtdPlatform,
        x: DeviceId,
        src: u64,
        dst: u64,
        tag: DmaTag,
    ) -> Result<DmaResult, TestError> {
        p.dma(x, DmaOp::Copy { src, dst, len: 8 }, tag)
            .map_err(fail)
    }

    /// With ATS on, the second copy of the same pages is served from the
    /// device TLB (hits, no new translation request). Remapping the source
    /// through the core invalidates the device TLB and the copy reads the
    /// new page; with the device-TLB invalidation left out (the driver's
    /// test hook), the device keeps reading the old page: what shows the
    /// case can fail.
    pub fn ats_device_tlb_hits_and_unmap_invalidates(p: &mut VtdPlatform) -> TestResult {
        let x = device_with(p, &[Feature::Ats])?;
        counters(p, x)?;
        let pages = p.alloc_pages(3, PAGE_SIZE)?;
        let (a, b, out) = (pages, pages + PAGE_SIZE, pages + 2 * PAGE_SIZE);
        p.write_phys(a, &0xaaaa_u64.to_le_bytes());
        p.write_phys(b, &0xbbbb_u64.to_le_bytes());
        let d = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        let result = (|| -> TestResult {
            let iommu = p.iommu();
            iommu.map(d, IOVA, a, PAGE_SIZE, Prot::RW).map_err(core)?;
            iommu
                .map(d, IOVA + PAGE_SIZE, out, PAGE_SIZE, Prot::RW)
                .map_err(core)?;
            iommu.attach_device(d, x).map_err(core)?;
            ats(p, x, true)?;
            let (_, _, dev) = p.function_of(x).ok_or_else(|| fail("no such device"))?;
            dev.flush_device_tlb().map_err(fail)?;
            let untagged = DmaTag::Untagged;
            let c0 = counters(p, x)?;
            ensure_eq!(
                copy8(p, x, IOVA, IOVA + PAGE_SIZE, untagged)?.status,
                DmaStatus::Success,
                "first copy"
            );
            let c1 = counters(p, x)?;
            ensure!(
                c1.devtlb_misses >= c0.devtlb_misses + 2,
                "the first copy sends translation requests for both pages: {c0:?} -> {c1:?}"
            );
            ensure_eq!(
                copy8(p, x, IOVA, IOVA + PAGE_SIZE, untagged)?.status,
                DmaStatus::Success,
                "second copy"
            );
            let c2 = counters(p, x)?;
            ensure!(
                c2.devtlb_hits >= c1.devtlb_hits + 2 && c2.devtlb_misses == c1.devtlb_misses,
                "the second copy is served from the device TLB: {c1:?} -> {c2:?}"
            );
            ensure_eq!(read_u64(p, out), 0xaaaa, "through the device TLB");
            // Remap through the core: the device TLB is invalidated.
            let iommu = p.iommu();
            iommu.unmap(d, IOVA, PAGE_SIZE).map_err(core)?;
            iommu.map(d, IOVA, b, PAGE_SIZE, Prot::RW).map_err(core)?;
            let c3 = counters(p, x)?;
            ensure!(
                c3.devtlb_invalidations > c2.devtlb_invalidations,
                "the unmap reached the device TLB: {c2:?} -> {c3:?}"
            );
            ensure_eq!(
                copy8(p, x, IOVA, IOVA + PAGE_SIZE, untagged)?.status,
                DmaStatus::Success,
                "after the remap"
            );
            ensure_eq!(read_u64(p, out), 0xbbbb, "the new page after the remap");
            // The same with the device-TLB invalidation left out.
            p.iommu().hw.suppress_dev_tlb_invalidation = true;
            let iommu = p.iommu();
            let stale = iommu
                .unmap(d, IOVA, PAGE_SIZE)
                .and_then(|()| iommu.map(d, IOVA, a, PAGE_SIZE, Prot::RW));
            p.iommu().hw.suppress_dev_tlb_invalidation = false;
            stale.map_err(core)?;
            ensure_eq!(
                copy8(p, x, IOVA, IOVA + PAGE_SIZE, untagged)?.status,
                DmaStatus::Success,
                "hook left out"
            );
            ensure_eq!(
                read_u64(p, out),
                0xbbbb,
                "without the device-TLB invalidation the device must still read the old page"
            );
            let iommu = p.iommu();
            iommu.unmap(d, IOVA, PAGE_SIZE).map_err(core)?;
            iommu.map(d, IOVA, a, PAGE_SIZE, Prot::RW).map_err(core)?;
            ensure_eq!(
                copy8(p, x, IOVA, IOVA + PAGE_SIZE, untagged)?.status,
                DmaStatus::Success,
                "invalidated again"
            );
            ensure_eq!(
                read_u64(p, out),
                0xaaaa,
                "the page after a full invalidation"
            );
            ensure!(
                p.take_faults().is_empty(),
                "translation requests record no faults"
            );
            Ok(())
        })();
        let off = ats(p, x, false);
        let iommu = p.iommu();
        let cleanup = iommu
            .detach_device(x)
            .and_then(|()| iommu.domain_free(d))
            .map_err(core);
        p.free_pages(pages, 3);
        result.and(off).and(cleanup)
    }

    /// SVA with I/O page faults: the device copies into a page of the
    /// bound space that is reserved but not present; its translation
    /// fails, it sends a page request, the kernel makes the page present
    /// from the space and answers Success, the device retries and the
    /// copy lands. A copy from an address no region of the space covers
    /// gets an Invalid response, which the engine reports.
    pub fn iopf_page_made_present_on_demand_completes_the_dma(p: &mut VtdPlatform) -> TestResult {
        let feats = [Feature::Sva, Feature::Ats, Feature::Pri, Feature::Iopf];
        let x = device_with(p, &feats)?;
        counters(p, x)?;
        let src = p.alloc_pages(1, PAGE_SIZE)?;
        let pool_base = p.alloc_pages(4, PAGE_SIZE)?;
        let mut pool: Vec<u64> = (0..4).map(|i| pool_base + i * PAGE_SIZE).collect();
        p.write_phys(src, &0x1234_5678_u64.to_le_bytes());
        let format = p.cpu_format();
        let memory = p.space_memory();
        let mut space = AddressSpace::new(SpaceId(5), format, memory).map_err(fail)?;
        let (va_src, region) = (SVA_VA, SVA_VA + 16 * PAGE_SIZE);
        space.map(va_src, src, PAGE_SIZE, Prot::RO).map_err(fail)?;
        space
            .reserve(region, 4 * PAGE_SIZE, Prot::RW)
            .map_err(fail)?;
        let result = (|| -> TestResult {
            iopf(p, x, true)?;
            let pasid = p.iommu().sva_bind(x, &space).map_err(core)?;
            let c0 = counters(p, x)?;
            let mut served = Vec::new();
            let op = DmaOp::Copy {
                src: va_src,
                dst: region + 8,
                len: 8,
            };
            let r = p.dma_serving(x, op, tagged(pasid), |p| {
                let report = p
                    .iommu()
                    .serve_page_requests(&mut |_, va, write| match space.fault(
                        va,
                        write,
                        &mut || pool.pop(),
                    ) {
                        Ok(Served::Made { pa }) => {
                            served.push((va, pa));
                            true
                        }
                        Ok(Served::Present) => true,
                        Err(e) => {
                            log::info!("page request for {va:#x}: {e}");
                            false
                        }
                    })
                    .map_err(core)?;
                if report.requests > 0 {
                    log::info!("page requests served: {report:?}");
                }
                Ok(())
            })?;
            ensure_eq!(
                r.status,
                DmaStatus::Success,
                "the copy into a page made on demand"
            );
            ensure_eq!(served.len(), 1, "pages made present: {served:x?}");
            let (va, pa) = served[0];
            ensure_eq!(va, region, "the page made present");
            ensure_eq!(
                read_u64(p, pa + 8),
                0x1234_5678,
                "the copy on the page made present"
            );
            let c1 = counters(p, x)?;
            ensure!(
                c1.pri_requests > c0.pri_requests && c1.pri_success > c0.pri_success,
                "one page request, answered Success: {c0:?} -> {c1:?}"
            );
            // An address the space does not have: Invalid.
            let hole = SVA_VA + 64 * PAGE_SIZE;
            let op = DmaOp::Copy {
                src: hole,
                dst: region + 16,
                len: 8,
            };
            let r = p.dma_serving(x, op, tagged(pasid), |p| {
                serve(p, &mut space, &mut Vec::new()).map(|_| ())
            })?;
            ensure_eq!(
                r.status,
                DmaStatus::PageRequestInvalid { addr: hole },
                "a copy from an address the space does not have"
            );
            let c2 = counters(p, x)?;
            ensure!(
                c2.pri_invalid > c1.pri_invalid,
                "answered Invalid: {c1:?} -> {c2:?}"
            );
            ensure!(p.take_faults().is_empty(), "page requests record no faults");
            Ok(())
        })();
        let unbind = match p.iommu().sva_unbind(x, space.id()) {
            Ok(()) | Err(kernel::iommu::domain::IommuError::NotBound { .. }) => Ok(()),
            Err(e) => Err(core(e)),
        };
        let cleanup = unbind.and(iopf(p, x, false));
        drop(space);
        p.free_pages(src, 1);
        p.free_pages(pool_base, 4);
        result.and(cleanup)
    }

    /// ATS, PRI and I/O page faults on for `x`, the IOMMU's side and the
    /// device's; or off again in reverse. Errors on the way off are
    /// collected, not stopped at.
    fn iopf(p: &mut VtdPlatform, x: DeviceId, on: bool) -> TestResult {
        let (segment, f, _) = p.function_of(x).ok_or_else(|| fail("no such device"))?;
        let feats = [Feature::Sva, Feature::Ats, Feature::Pri, Feature::Iopf];
        if on {
            for feat in feats {
                p.iommu().dev_enable_feature(x, feat).map_err(core)?;
            }
            return crate::pcie::with_config(segment, |cfg, _| {
                pci::features::enable_ats(cfg, f, 0)
                    .and_then(|_| pci::features::enable_pri(cfg, f, 32))
                    .map(|_| ())
            })
            .ok_or_else(|| fail("segment vanished"))?
            .map_err(fail);
        }
        let mut r: TestResult = crate::pcie::with_config(segment, |cfg, _| {
            pci::features::disable_pri(cfg, f).and_then(|()| pci::features::disable_ats(cfg, f))
        })
        .ok_or_else(|| fail("segment vanished"))
        .and_then(|x| x.map_err(fail));
        for feat in [
            Feature::Iopf,
            Feature::Pri,
            Feature::Ats,
            Feature::Sva,
            Feature::Aux,
        ] {
            if let Err(e) = p.iommu().dev_disable_feature(x, feat) {
                r = r.and(Err(core(e)));
            }
        }
        r
    }

    /// The page request queue made to overflow: the driver answers page
    /// requests but holds the queue's head (its test hook), so every
    /// request stays in the queue, until one finds it full. The unit sets
    /// PRS.PRO and the device's request is refused; the kernel notices the
    /// overflow, lets the head go, the queue empties and the overflow is
    /// cleared, and the device's retry gets through: the DMA completes.
    pub fn iopf_queue_overflow_is_noticed_and_recovered(p: &mut VtdPlatform) -> TestResult {
        // PQS 0: 128 descriptors (`IommuHw::enable_page_requests`).
        const ROUNDS: u64 = 160;
        let x = device_with(
            p,
            &[Feature::Sva, Feature::Ats, Feature::Pri, Feature::Iopf],
        )?;
        counters(p, x)?;
        let src = p.alloc_pages(1, PAGE_SIZE)?;
        let pool_base = p.alloc_pages(ROUNDS, PAGE_SIZE)?;
        let mut pool: Vec<u64> = (0..ROUNDS).map(|i| pool_base + i * PAGE_SIZE).collect();
        let format = p.cpu_format();
        let memory = p.space_memory();
        let mut space = AddressSpace::new(SpaceId(7), format, memory).map_err(fail)?;
        let region = SVA_VA + 0x10_0000;
        space.map(SVA_VA, src, PAGE_SIZE, Prot::RO).map_err(fail)?;
        space
            .reserve(region, ROUNDS * PAGE_SIZE, Prot::RW)
            .map_err(fail)?;
        let result = (|| -> TestResult {
            iopf(p, x, true)?;
            let pasid = p.iommu().sva_bind(x, &space).map_err(core)?;
            let c0 = counters(p, x)?;
            p.iommu().hw.hold_page_request_head = true;
            let (mut seen, mut cleared) = (0, 0);
            let mut rounds = 0;
            for i in 0..ROUNDS {
                let op = DmaOp::Copy {
                    src: SVA_VA,
                    dst: region + i * PAGE_SIZE,
                    len: 8,
                };
                let r = p.dma_serving(x, op, tagged(pasid), |p| {
                    let report = serve(p, &mut space, &mut pool)?;
                    if report.overflow_seen {
                        seen += 1;
                        // Noticed: let the head go, so the queue empties.
                        p.iommu().hw.hold_page_request_head = false;
                    }
                    cleared += usize::from(report.overflow_cleared);
                    Ok(())
                })?;
                ensure_eq!(r.status, DmaStatus::Success, "round {i}");
                rounds += 1;
                if cleared > 0 {
                    break;
                }
            }
            p.iommu().hw.hold_page_request_head = false;
            let c1 = counters(p, x)?;
            log::info!(
                "page request queue: overflow after {rounds} rounds, seen in {seen} passes; {c0:?} -> {c1:?}"
            );
            ensure!(
                seen > 0 && cleared > 0,
                "the overflow was noticed ({seen}) and cleared ({cleared})"
            );
            ensure!(
                c1.pri_overflows > c0.pri_overflows,
                "the device saw a request refused: {c0:?} -> {c1:?}"
            );
            // After the recovery a fresh fault is served as before.
            let op = DmaOp::Copy {
                src: SVA_VA,
                dst: region + (ROUNDS - 1) * PAGE_SIZE,
                len: 8,
            };
            let r = p.dma_serving(x, op, tagged(pasid), |p| {
                serve(p, &mut space, &mut pool).map(|_| ())
            })?;
            ensure_eq!(r.status, DmaStatus::Success, "a fault after the recovery");
            Ok(())
        })();
        p.iommu().hw.hold_page_request_head = false;
        let unbind = match p.iommu().sva_unbind(x, space.id()) {
            Ok(()) | Err(kernel::iommu::domain::IommuError::NotBound { .. }) => Ok(()),
            Err(e) => Err(core(e)),
        };
        let off = iopf(p, x, false);
        drop(space);
        p.free_pages(src, 1);
        p.free_pages(pool_base, ROUNDS);
        result.and(unbind).and(off)
    }

    const SAMPLES: usize = 500;

    fn report(name: &str, samples: &mut [u64]) -> TestResult {
        let stats = kernel::stats::Stats::of(samples).ok_or_else(|| fail("no samples"))?;
        crate::kprint!("# bench {name} {stats}\n");
        Ok(())
    }

    /// An 8-byte copy with ATS on, its two pages in the device TLB (hit)
    /// against the same copy right after the device TLB was flushed
    /// (miss: two translation requests): `ats::copy_8_devtlb_hit`,
    /// `ats::copy_8_devtlb_miss`.
    pub fn bench_device_tlb_hit_and_miss(p: &mut VtdPlatform) -> TestResult {
        let x = device_with(p, &[Feature::Ats])?;
        counters(p, x)?;
        let pages = p.alloc_pages(2, PAGE_SIZE)?;
        let d = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        let result = (|| -> TestResult {
            let iommu = p.iommu();
            iommu
                .map(d, IOVA, pages, 2 * PAGE_SIZE, Prot::RW)
                .map_err(core)?;
            iommu.attach_device(d, x).map_err(core)?;
            ats(p, x, true)?;
            let (_, _, dev) = p.function_of(x).ok_or_else(|| fail("no such device"))?;
            for (name, flush) in [
                ("ats::copy_8_devtlb_hit", false),
                ("ats::copy_8_devtlb_miss", true),
            ] {
                let mut samples = Vec::with_capacity(SAMPLES);
                copy8(p, x, IOVA, IOVA + PAGE_SIZE, DmaTag::Untagged)?;
                for _ in 0..SAMPLES {
                    if flush {
                        dev.flush_device_tlb().map_err(fail)?;
                    }
                    let t0 = crate::arch::now_ns();
                    let r = copy8(p, x, IOVA, IOVA + PAGE_SIZE, DmaTag::Untagged)?;
                    samples.push(crate::arch::now_ns() - t0);
                    ensure_eq!(r.status, DmaStatus::Success, "{name}");
                }
                report(name, &mut samples)?;
            }
            Ok(())
        })();
        let off = ats(p, x, false);
        let iommu = p.iommu();
        let cleanup = iommu
            .detach_device(x)
            .and_then(|()| iommu.domain_free(d))
            .map_err(core);
        p.free_pages(pages, 2);
        result.and(off).and(cleanup)
    }

    /// Page request to response: an 8-byte copy into a page of a bound
    /// space that is not present, from submission to completion, the
    /// kernel serving the request as soon as it polls it
    /// (`iopf::copy_8_page_request_round_trip`); and the kernel's share,
    /// from the pass that found the request to the response sent
    /// (`iopf::serve_request_to_response`).
    pub fn bench_page_request_round_trip(p: &mut VtdPlatform) -> TestResult {
        const ROUNDS: u64 = 200;
        let feats = [Feature::Sva, Feature::Ats, Feature::Pri, Feature::Iopf];
        let x = device_with(p, &feats)?;
        counters(p, x)?;
        let src = p.alloc_pages(1, PAGE_SIZE)?;
        let pool_base = p.alloc_pages(ROUNDS, PAGE_SIZE)?;
        let mut pool: Vec<u64> = (0..ROUNDS).map(|i| pool_base + i * PAGE_SIZE).collect();
        let format = p.cpu_format();
        let memory = p.space_memory();
        let mut space = AddressSpace::new(SpaceId(6), format, memory).map_err(fail)?;
        let region = SVA_VA + 0x10_0000;
        space.map(SVA_VA, src, PAGE_SIZE, Prot::RO).map_err(fail)?;
        space
            .reserve(region, ROUNDS * PAGE_SIZE, Prot::RW)
            .map_err(fail)?;
        let result = (|| -> TestResult {
            iopf(p, x, true)?;
            let pasid = p.iommu().sva_bind(x, &space).map_err(core)?;
            let (mut round_trip, mut service) = (Vec::new(), Vec::new());
            for i in 0..ROUNDS {
                let op = DmaOp::Copy {
                    src: SVA_VA,
                    dst: region + i * PAGE_SIZE,
                    len: 8,
                };
                let t0 = crate::arch::now_ns();
                let r = p.dma_serving(x, op, tagged(pasid), |p| {
                    let t = crate::arch::now_ns();
                    let report = serve(p, &mut space, &mut pool)?;
                    if report.success > 0 {
                        service.push(crate::arch::now_ns() - t);
                    }
                    Ok(())
                })?;
                round_trip.push(crate::arch::now_ns() - t0);
                ensure_eq!(r.status, DmaStatus::Success, "round {i}");
            }
            report("iopf::copy_8_page_request_round_trip", &mut round_trip)?;
            report("iopf::serve_request_to_response", &mut service)
        })();
        let unbind = p.iommu().sva_unbind(x, space.id()).map_err(core);
        let off = iopf(p, x, false);
        drop(space);
        p.free_pages(src, 1);
        p.free_pages(pool_base, ROUNDS);
        result.and(unbind).and(off)
    }
}
