//! The IOMMU conformance suite (`kernel::iommu::conformance`) on the
//! board's IOMMU with its pasid-dma devices. Each case gets a fresh
//! platform: the driver takes over the IOMMU, the two widest devices and
//! the narrow one are added to the core, every other function is left
//! untranslated, and afterwards every device goes back as it was found,
//! translation is turned off, and leaks are checked (page tables, CD or
//! PASID tables, the case's own pages).
//!
//! The engines write no completion records: a record is DMA too, and in
//! a blocked or sparsely mapped domain it would fault or need a mapping
//! of its own. They read each outcome from the device's last-completion
//! registers instead, so the operation under test is the device's only
//! DMA.
//!
//! The platform is generic over [`board::BoardIommu`], which each driver
//! implements: the SMMUv3 on Arm, VT-d on x86.

/// Which stages domains use for a run of the suite. The SMMU driver
/// takes all three; the VT-d driver uses the level its unit offers (the
/// board's `x-flts`) and runs `Stage1` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stage1,
    /// Primary domains only: stage 2 has no substreams.
    Stage2,
    Nested,
}

/// One wrapper per case and mode, in a module named after the mode.
macro_rules! cases {
    ($module:ident, $mode:expr; $($name:ident),* $(,)?) => {
        pub mod $module {
            use kernel::harness::TestResult;
            $(
                pub fn $name() -> TestResult {
                    super::board::run_in(
                        $mode,
                        kernel::iommu::conformance::$name::<super::board::Board>,
                    )
                }
            )*
        }
    };
}

/// Driver tests that run on one architecture's board platform: a wrapper
/// per test that runs `on_board::$name` on a fresh platform there, and
/// reports SKIP with `$skip` elsewhere.
macro_rules! board_tests {
    ($arch:literal, $skip:literal; $($name:ident),* $(,)?) => {
        $(
            #[cfg(target_arch = $arch)]
            pub fn $name() -> kernel::harness::TestResult {
                super::conformance::board::run(on_board::$name)
            }
            #[cfg(not(target_arch = $arch))]
            pub fn $name() -> kernel::harness::TestResult {
                Err(kernel::harness::TestError::skip($skip))
            }
        )*
    };
}
pub(super) use board_tests;

/// Calls `$m!` with its arguments and every case of the suite.
macro_rules! every_case {
    ($m:ident, $($args:tt)*) => {
        $m!($($args)*;
            primary_dma_lands_and_unmapped_faults,
            read_only_mapping_faults_on_write,
            aux_domains_are_kept_apart,
            primary_on_one_aux_on_another,
            unmap_invalidates_and_remap_lands_anew,
            busy_while_aux_attached,
            narrow_device_refuses_wide_pasid,
            aux_get_pasid_and_pasid_reuse,
            many_aux_domains,
            interrupts_with_aux_domains,
            pasid_at_the_top_of_the_range,
            dma_domain_hands_out_iovas,
            blocked_faults_identity_passes,
            blocks_and_dma_across_them,
            bad_requests_are_refused,
            randomized_soak,
        );
    };
}

every_case!(cases, stage1, super::Mode::Stage1);
every_case!(cases, nested, super::Mode::Nested);

cases!(stage2, super::Mode::Stage2;
    primary_dma_lands_and_unmapped_faults,
    read_only_mapping_faults_on_write,
    unmap_invalidates_and_remap_lands_anew,
    dma_domain_hands_out_iovas,
    blocks_and_dma_across_them,
    bad_requests_are_refused,
);

pub(super) mod board {
    use super::super::dma::{self, Open};
    use super::Mode;
    use crate::dma_engine::PasidDmaEngine;
    use crate::memory::DmaBuffer;
    use crate::pcie;
    use alloc::collections::BTreeMap;
    use alloc::format;
    use alloc::vec::Vec;
    use kernel::dma::{DmaEngine, DmaOp, DmaResult, DmaTag, EngineError};
    use kernel::harness::{TestError, TestResult};
    use kernel::iommu::conformance::Platform;
    use kernel::iommu::domain::{DeviceId, Fault, HwError, Iommu, IommuHw};
    use kernel::mm::PAGE_SIZE;

    const BOUND_NS: u64 = 2_000_000_000;

    /// How the driver is set up for a run.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Options {
        pub mode: Mode,
        /// SMMUv3: force a linear stream table.
        pub linear_stream_table: bool,
    }

    /// What the platform needs of a driver beyond the core's interface.
    pub trait BoardIommu: IommuHw + Sized {
        /// Takes over the board's IOMMU, translation still off; SKIP when
        /// the board has none or it cannot run `opts`.
        fn open(opts: Options) -> Result<Self, TestError>;
        /// The id the IOMMU knows a PCI function by (StreamID, source id).
        fn device_id(segment: u16, f: &pci::Function) -> Option<DeviceId>;
        /// Leaves a function the core does not manage untranslated.
        fn pass_through(&mut self, dev: DeviceId) -> Result<(), HwError>;
        fn enable(&mut self) -> Result<(), HwError>;
        /// A device back as the driver found it, its structures freed.
        fn release(&mut self, dev: DeviceId) -> Result<(), HwError>;
        /// Translation off; driver-wide structures (stage 2) freed.
        fn shutdown(&mut self) -> Result<(), HwError>;
        /// Page-table pages and bytes of other translation structures
        /// (CD or PASID tables) still held.
        fn held(&self) -> (u64, u64);
        fn faults(&mut self) -> Vec<Fault>;
        /// After each DMA (VT-d reads its fault registers before the next
        /// fault overwrites or is merged into a pending one).
        fn after_dma(&mut self) {}
        /// What the firmware says of a device the core will manage (VT-d:
        /// its RMRRs).
        fn learn_device(&mut self, _segment: u16, _f: &pci::Function, _id: DeviceId) {}
    }

    struct Dev {
        id: DeviceId,
        open: Open,
        plain: PasidDmaEngine,
        signalling: PasidDmaEngine,
    }

    pub struct BoardPlatform<H: BoardIommu> {
        iommu: Iommu<H>,
        devs: Vec<Dev>,
        /// Pages handed to the case, by base address.
        pages: BTreeMap<u64, DmaBuffer>,
        /// Every other function (untranslated during the case).
        others: Vec<DeviceId>,
    }

    #[cfg(target_arch = "aarch64")]
    pub type Board = BoardPlatform<crate::arch::smmu::SmmuHw>;
    #[cfg(target_arch = "x86_64")]
    pub type Board = BoardPlatform<::vtd::driver::VtdHw<crate::hal::KernelHal>>;
    #[cfg(target_arch = "aarch64")]
    pub type SmmuPlatform = Board;
    #[cfg(target_arch = "x86_64")]
    pub type VtdPlatform = Board;

    pub fn fail(e: impl core::fmt::Debug) -> TestError {
        TestError::fail(format!("{e:?}"))
    }

    impl<H: BoardIommu> BoardPlatform<H> {
        fn dev(&mut self, id: DeviceId) -> Result<&mut Dev, EngineError> {
            self.devs
                .iter_mut()
                .find(|d| d.id == id)
                .ok_or_else(|| EngineError::Device(format!("no device {id:#x}")))
        }

        fn buffer_of(&self, pa: u64, len: usize) -> Option<(&DmaBuffer, usize)> {
            let (&base, buf) = self.pages.range(..=pa).next_back()?;
            let off = (pa - base) as usize;
            (off + len <= buf.len()).then_some((buf, off))
        }
    }

    impl<H: BoardIommu> Platform for BoardPlatform<H> {
        type Hw = H;

        fn iommu(&mut self) -> &mut Iommu<H> {
            &mut self.iommu
        }

        fn devices(&self) -> (DeviceId, DeviceId, Option<DeviceId>) {
            (
                self.devs[0].id,
                self.devs[1].id,
                self.devs.get(2).map(|d| d.id),
            )
        }

        fn dma(&mut self, dev: DeviceId, op: DmaOp, tag: DmaTag) -> Result<DmaResult, EngineError> {
            let r = self.dev(dev)?.plain.run(&op, tag, BOUND_NS);
            self.iommu.hw.after_dma();
            r
        }

        fn dma_with_interrupt(
            &mut self,
            dev: DeviceId,
            op: DmaOp,
            tag: DmaTag,
        ) -> Result<(DmaResult, bool), EngineError> {
            let d = self.dev(dev)?;
            let id = d.open.vector.id;
            let before = crate::arch::msi_count(id);
            let r = d.signalling.run(&op, tag, BOUND_NS);
            self.iommu.hw.after_dma();
            let r = r?;
            super::super::irq::wait_for_count(id, before + 1);
            Ok((r, crate::arch::msi_count(id) - before == 1))
        }

        fn alloc_pages(&mut self, count: u64, align: u64) -> Result<u64, TestError> {
            let buf = DmaBuffer::new((count * PAGE_SIZE) as usize, align.max(PAGE_SIZE))
                .map_err(|e| TestError::fail(format!("{e}")))?;
            let base = buf.phys().as_u64();
            self.pages.insert(base, buf);
            Ok(base)
        }

        fn free_pages(&mut self, base: u64, _count: u64) {
            self.pages.remove(&base);
        }

        fn read_phys(&mut self, pa: u64, out: &mut [u8]) {
            match self.buffer_of(pa, out.len()) {
                Some((buf, off)) => {
                    buf.read_volatile(off, out);
                }
                None => {
                    log::error!("conformance: read of {pa:#x}, not a page the case holds");
                    out.fill(0xee);
                }
            }
        }

        fn write_phys(&mut self, pa: u64, data: &[u8]) {
            match self.buffer_of(pa, data.len()) {
                Some((buf, off)) => {
                    buf.write_volatile(off, data);
                }
                None => log::error!("conformance: write of {pa:#x}, not a page the case holds"),
            }
        }

        fn take_faults(&mut self) -> Vec<Fault> {
            self.iommu.hw.faults()
        }
    }

    fn setup<H: BoardIommu>(opts: Options) -> Result<BoardPlatform<H>, TestError> {
        let opens = dma::open_all()?;
        if opens.len() < 2 {
            return Err(TestError::skip(format!(
                "the suite needs two pasid-dma devices, the board has {}",
                opens.len()
            )));
        }
        let mut devs = Vec::new();
        for open in opens {
            let id = H::device_id(open.segment, open.f).ok_or_else(|| {
                TestError::fail(format!("the firmware gives {} no IOMMU id", open.name()))
            })?;
            open.enable_pasid()?;
            let plain = open.unrecorded_engine(0, false)?;
            let signalling = open.unrecorded_engine(1, true)?;
            devs.push(Dev {
                id,
                open,
                plain,
                signalling,
            });
        }
        let mut others = Vec::new();
        for bus in pcie::buses() {
            for f in &bus.functions {
                match H::device_id(bus.segment, f) {
                    Some(s) if !devs.iter().any(|d| d.id == s) && !others.contains(&s) => {
                        others.push(s)
                    }
                    _ => {}
                }
            }
        }
        let mut hw = H::open(opts)?;
        let ready = (|| {
            for &s in &others {
                hw.pass_through(s).map_err(fail)?;
            }
            hw.enable().map_err(fail)
        })();
        if let Err(e) = ready {
            let _ = hw.shutdown();
            return Err(e);
        }
        for d in &devs {
            hw.learn_device(d.open.segment, d.open.f, d.id);
        }
        let mut iommu = Iommu::new(hw, 1, (1 << 20) - 1).map_err(fail)?;
        for d in &devs {
            if let Err(e) = iommu.add_device(d.id, d.open.pasid_width()) {
                let _ = iommu.hw.shutdown();
                return Err(fail(e));
            }
        }
        Ok(BoardPlatform {
            iommu,
            devs,
            pages: BTreeMap::new(),
            others,
        })
    }

    /// Runs one case on a fresh platform with stage 1 and tears it down.
    pub fn run(case: impl FnOnce(&mut Board) -> TestResult) -> TestResult {
        run_in(Mode::Stage1, case)
    }

    /// Runs one case on a fresh platform whose domains use `mode`'s
    /// stages and tears it down, whatever happened; a leak fails the case.
    pub fn run_in(mode: Mode, case: impl FnOnce(&mut Board) -> TestResult) -> TestResult {
        run_with(
            Options {
                mode,
                linear_stream_table: false,
            },
            case,
        )
    }

    /// [`run_in`] with all the options.
    pub fn run_with(opts: Options, case: impl FnOnce(&mut Board) -> TestResult) -> TestResult {
        let mut p: Board = setup(opts)?;
        let result = case(&mut p);
        let leftover_pages = p.pages.len();
        let hw = &mut p.iommu.hw;
        let mut teardown = Ok(());
        for d in p.devs.iter().map(|d| d.id).chain(p.others.iter().copied()) {
            teardown = teardown.and(hw.release(d));
        }
        teardown = teardown.and(hw.shutdown());
        let (tables, meta) = hw.held();
        let teardown = teardown.map_err(fail).and_then(|()| {
            if result.is_ok() && (tables != 0 || meta != 0 || leftover_pages != 0) {
                Err(TestError::fail(format!(
                    "leaked: {tables} page-table page(s), {meta} bytes of CD or PASID tables, \
                     {leftover_pages} of the case's page run(s)"
                )))
            } else {
                Ok(())
            }
        });
        result.and(teardown)
    }

    /// What one aux domain costs on `p`'s IOMMU: its share of the
    /// device's CD or PASID tables (`held().1`) and the page tables for one
    /// mapped page, as the first and the second aux domain of a device are
    /// attached. A second aux domain must need no table memory of the
    /// driver's, and one page table per level.
    pub fn aux_domain_metadata(p: &mut Board, what: &str) -> TestResult {
        use kernel::iommu::domain::{DomainKind, Feature};
        use kernel::iommu::pgtable::{Format, Prot};
        const IOVA: u64 = 0x4000_0000;
        let core = kernel::iommu::conformance::core_err;
        let (x, _, _) = p.devices();
        let page = p.alloc_pages(1, PAGE_SIZE)?;
        let metadata = |p: &mut Board| {
            let iommu = p.iommu();
            (iommu.hw.held().1, iommu.table_pages() as u64 * PAGE_SIZE)
        };
        let mut doms = Vec::new();
        let result = (|| -> TestResult {
            let (meta0, pt0) = metadata(p);
            p.iommu()
                .dev_enable_feature(x, Feature::Aux)
                .map_err(core)?;
            let mut costs = Vec::new();
            for _ in 0..2 {
                let (m1, t1) = metadata(p);
                let d = p
                    .iommu()
                    .domain_alloc(DomainKind::Unmanaged)
                    .map_err(core)?;
                doms.push(d);
                p.iommu()
                    .map(d, IOVA, page, PAGE_SIZE, Prot::RW)
                    .map_err(core)?;
                p.iommu().aux_attach_device(d, x).map_err(core)?;
                let (m2, t2) = metadata(p);
                costs.push((m2 - m1, t2 - t1));
            }
            let (meta_end, _) = metadata(p);
            let levels = p.iommu().hw.format().levels() as u64;
            log::info!(
                "{what} metadata per aux domain with one mapped page: first {} B of {what} tables + {} B \
                 of page tables, second {} B + {} B; {what} tables of all managed devices: {} B ({} B \
                 before AUX)",
                costs[0].0,
                costs[0].1,
                costs[1].0,
                costs[1].1,
                meta_end,
                meta0
            );
            kernel::ensure_eq!(pt0, 0, "page tables before");
            kernel::ensure_eq!(costs[1].0, 0, "{what} table bytes for a second aux domain");
            kernel::ensure_eq!(
                costs[1].1,
                levels * PAGE_SIZE,
                "page tables for one page ({levels} levels)"
            );
            Ok(())
        })();
        let iommu = p.iommu();
        let mut cleanup = Ok(());
        for &d in &doms {
            cleanup = cleanup
                .and_then(|()| iommu.aux_detach_device(d, x))
                .and_then(|()| iommu.domain_free(d));
        }
        let cleanup = cleanup
            .and_then(|()| iommu.dev_disable_feature(x, Feature::Aux))
            .map_err(core);
        p.free_pages(page, 1);
        result.and(cleanup)
    }

    /// The two domains and the PASID of a live-change test.
    pub struct LiveChange {
        pub dev: DeviceId,
        pub pasid: u32,
        /// (What the SMMU test restores needs no A: detaching does it.)
        #[cfg_attr(target_arch = "aarch64", allow(dead_code))]
        pub a: kernel::iommu::domain::DomainRef,
        pub b: kernel::iommu::domain::DomainRef,
    }

    /// A translation structure rewritten under a live PASID changes
    /// nothing until the IOMMU is told: domain A (attached at the PASID)
    /// and B map the same IOVA to two pages; `rewrite` points the PASID at
    /// B behind the driver's back, a write still lands in A's page;
    /// `invalidate` tells the IOMMU, and the next write lands in B's.
    /// `restore` puts back what the driver wrote before the teardown.
    pub fn live_change_needs_invalidation(
        p: &mut Board,
        invalidation: &str,
        rewrite: impl FnOnce(&mut Board, &LiveChange) -> TestResult,
        invalidate: impl FnOnce(&mut Board, &LiveChange) -> TestResult,
        restore: impl FnOnce(&mut Board, &LiveChange) -> TestResult,
    ) -> TestResult {
        use kernel::dma::DmaStatus;
        use kernel::ensure_eq;
        use kernel::iommu::conformance::{read_u64, tagged, write_u64};
        use kernel::iommu::domain::{DomainKind, Feature};
        use kernel::iommu::pgtable::Prot;
        const IOVA: u64 = 0x4000_0000;
        let core = kernel::iommu::conformance::core_err;
        let (x, _, _) = p.devices();
        let pages = p.alloc_pages(2, PAGE_SIZE)?;
        let (pa, pb) = (pages, pages + PAGE_SIZE);
        let a = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        let b = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        let result = (|| -> TestResult {
            let iommu = p.iommu();
            iommu.map(a, IOVA, pa, PAGE_SIZE, Prot::RW).map_err(core)?;
            iommu.map(b, IOVA, pb, PAGE_SIZE, Prot::RW).map_err(core)?;
            iommu.dev_enable_feature(x, Feature::Aux).map_err(core)?;
            let pasid = iommu.aux_attach_device(a, x).map_err(core)?;
            let live = LiveChange {
                dev: x,
                pasid,
                a: iommu.domain_ref(a).map_err(core)?,
                b: iommu.domain_ref(b).map_err(core)?,
            };
            let write = |p: &mut Board, value| write_u64(p, x, IOVA, value, tagged(pasid));
            ensure_eq!(write(p, 1)?.status, DmaStatus::Success, "through A");
            ensure_eq!(read_u64(p, pa), 1, "A's page");
            rewrite(p, &live)?;
            ensure_eq!(
                write(p, 2)?.status,
                DmaStatus::Success,
                "before {invalidation}"
            );
            ensure_eq!(
                (read_u64(p, pa), read_u64(p, pb)),
                (2, 0),
                "before {invalidation} domain A still applies"
            );
            invalidate(p, &live)?;
            ensure_eq!(
                write(p, 3)?.status,
                DmaStatus::Success,
                "after {invalidation}"
            );
            ensure_eq!(
                (read_u64(p, pa), read_u64(p, pb)),
                (2, 3),
                "after {invalidation} domain B applies"
            );
            restore(p, &live)
        })();
        let iommu = p.iommu();
        let cleanup = iommu
            .aux_detach_device(a, x)
            .and_then(|()| iommu.dev_disable_feature(x, Feature::Aux))
            .and_then(|()| iommu.domain_free(a))
            .and_then(|()| iommu.domain_free(b))
            .map_err(core);
        p.free_pages(pages, 2);
        result.and(cleanup)
    }

    /// 100 copies of 1 MiB through a translating primary domain, then 100
    /// with the device in an identity domain, on the same device in the
    /// same run; reported as benchmarks `translated` and `direct`.
    pub fn copy_1m_bench(p: &mut Board, translated: &str, direct: &str) -> TestResult {
        use kernel::dma::DmaStatus;
        use kernel::iommu::domain::DomainKind;
        use kernel::iommu::pgtable::Prot;
        const LEN: u64 = 1 << 20;
        const PAGES: u64 = LEN / PAGE_SIZE;
        const IOVA: u64 = 0x4000_0000;
        let core = kernel::iommu::conformance::core_err;
        let (x, _, _) = p.devices();
        let src = p.alloc_pages(PAGES, 2 << 20)?;
        let dst = p.alloc_pages(PAGES, 2 << 20)?;
        let d = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        let id = p.iommu().domain_alloc(DomainKind::Identity).map_err(core)?;
        let result = (|| -> TestResult {
            let iommu = p.iommu();
            iommu.map(d, IOVA, src, LEN, Prot::RO).map_err(core)?;
            iommu
                .map(d, IOVA + (2 << 20), dst, LEN, Prot::RW)
                .map_err(core)?;
            let runs = [
                (translated, d, IOVA, IOVA + (2 << 20)),
                (direct, id, src, dst),
            ];
            for (name, dom, from, to) in runs {
                p.iommu().attach_device(dom, x).map_err(core)?;
                let op = DmaOp::Copy {
                    src: from,
                    dst: to,
                    len: LEN,
                };
                let mut samples = Vec::with_capacity(100);
                for _ in 0..100 {
                    let t0 = crate::arch::now_ns();
                    let r = p
                        .dma(x, op, DmaTag::Untagged)
                        .map_err(|e| TestError::fail(format!("{name}: {e}")))?;
                    samples.push(crate::arch::now_ns() - t0);
                    kernel::ensure_eq!(r.status, DmaStatus::Success, "{name}");
                }
                let stats = kernel::stats::Stats::of(&mut samples)
                    .ok_or_else(|| TestError::fail("no samples"))?;
                crate::kprint!("# bench {name} {stats}\n");
            }
            Ok(())
        })();
        let iommu = p.iommu();
        let cleanup = iommu
            .detach_device(x)
            .and_then(|()| iommu.domain_free(d))
            .and_then(|()| iommu.domain_free(id))
            .map_err(core);
        p.free_pages(src, PAGES);
        p.free_pages(dst, PAGES);
        result.and(cleanup)
    }

    #[cfg(target_arch = "aarch64")]
    mod smmu {
        use super::super::super::iommu::stage1::{smmu_base, stream_id};
        use super::super::Mode;
        use super::{fail, BoardIommu, Options};
        use crate::arch::smmu::{SmmuHw, Translation};
        use crate::pcie;
        use alloc::vec::Vec;
        use kernel::harness::TestError;
        use kernel::iommu::domain::{DeviceId, Fault, HwError};
        use smmuv3::idr::StreamTableLevels;
        use smmuv3::ste::Ste;

        impl BoardIommu for SmmuHw {
            fn open(opts: Options) -> Result<Self, TestError> {
                let base = smmu_base()?;
                let smmu = pcie::smmuv3_at(base).ok_or_else(|| TestError::fail("SMMU vanished"))?;
                let table = opts
                    .linear_stream_table
                    .then_some(StreamTableLevels::Linear);
                let mut hw = SmmuHw::with_stream_table(smmu, base, table).map_err(fail)?;
                let translation = match opts.mode {
                    Mode::Stage1 => Translation::Stage1,
                    Mode::Stage2 => Translation::Stage2,
                    Mode::Nested => Translation::Nested,
                };
                hw.set_translation(translation)
                    .map_err(|e| TestError::skip(e.0))?;
                if opts.mode != Mode::Stage2 && hw.features.ssid_bits == 0 {
                    return Err(TestError::skip(
                        "this SMMU has no substreams (IDR1.SSIDSIZE 0): QEMU without our patch?",
                    ));
                }
                Ok(hw)
            }
            fn device_id(segment: u16, f: &pci::Function) -> Option<DeviceId> {
                stream_id(segment, f)
            }
            fn pass_through(&mut self, dev: DeviceId) -> Result<(), HwError> {
                self.write_ste(dev, &Ste::bypass())
            }
            fn enable(&mut self) -> Result<(), HwError> {
                SmmuHw::enable(self)
            }
            fn release(&mut self, dev: DeviceId) -> Result<(), HwError> {
                self.release_stream(dev)?;
                self.write_ste(dev, &Ste::bypass())
            }
            fn shutdown(&mut self) -> Result<(), HwError> {
                self.release_s2();
                self.disable()
            }
            fn held(&self) -> (u64, u64) {
                (self.tables_live(), self.cd_table_bytes())
            }
            fn faults(&mut self) -> Vec<Fault> {
                self.take_faults()
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    mod vtd {
        use super::super::Mode;
        use super::{fail, BoardIommu, Options};
        use crate::hal::KernelHal;
        use crate::{discovery, pcie};
        use ::vtd::driver::{hw, VtdHw};
        use alloc::vec::Vec;
        use kernel::harness::TestError;
        use kernel::iommu::domain::{DeviceId, Fault, HwError};

        impl BoardIommu for VtdHw<KernelHal> {
            fn open(opts: Options) -> Result<Self, TestError> {
                if opts.mode != Mode::Stage1 {
                    return Err(TestError::skip(
                        "VT-d runs the level its unit offers (the board's x-flts), as Stage1",
                    ));
                }
                let base = discovery::get()
                    .and_then(|t| {
                        t.iommus
                            .iter()
                            .find(|u| u.kind == discovery::IommuKind::VtdDrhd)
                            .map(|u| u.base)
                    })
                    .ok_or_else(|| TestError::skip("this board has no VT-d unit"))?;
                let unit = pcie::vtd_at(base).ok_or_else(|| TestError::fail("unit vanished"))?;
                VtdHw::new(KernelHal, unit, base).map_err(fail)
            }
            fn device_id(_segment: u16, f: &pci::Function) -> Option<DeviceId> {
                // The DMAR on q35 covers every function (INCLUDE_PCI_ALL):
                // the source id is the requester id.
                Some(u32::from(f.bdf.rid()))
            }
            fn pass_through(&mut self, dev: DeviceId) -> Result<(), HwError> {
                VtdHw::pass_through(self, dev).map_err(hw)
            }
            fn enable(&mut self) -> Result<(), HwError> {
                VtdHw::enable(self).map_err(hw)
            }
            fn release(&mut self, dev: DeviceId) -> Result<(), HwError> {
                self.release_device(dev).map_err(hw)
            }
            fn shutdown(&mut self) -> Result<(), HwError> {
                self.disable().map_err(hw)
            }
            fn held(&self) -> (u64, u64) {
                (self.tables_live(), self.pasid_table_bytes())
            }
            fn faults(&mut self) -> Vec<Fault> {
                self.take_faults()
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
                if let Ok(sid) = u16::try_from(id) {
                    self.set_rmrrs(sid, regions);
                }
            }
        }
    }
}
