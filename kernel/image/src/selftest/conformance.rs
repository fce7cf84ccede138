//! The IOMMU conformance suite (`kernel::iommu::conformance`) on the
//! board's IOMMU with its pasid-dma devices. Each case gets a fresh
//! platform on one unit (with several, the cases take the units that
//! have two or more pasid-dma functions behind them in turn, and say
//! which): the driver takes over the unit, every pasid-dma device behind
//! it is added to the core (the cases take the two widest and a narrow one by
//! their PASID widths, `conformance::pick_devices`), every other function
//! is left untranslated, and afterwards every device goes back as it was
//! found (but for its claim, which lasts the run: `dma::CLAIMS`),
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

pub use crate::iommu::Mode;

/// One wrapper per case for `$mode`, in a module named after the mode,
/// from the suite's one list of cases (`kernel::conformance_cases!`);
/// `primary_only` keeps the cases that need no PASID.
macro_rules! cases {
    ($module:ident, $mode:expr, $which:ident ; $($kind:ident $name:ident),* $(,)?) => {
        pub mod $module {
            $( cases!(@one $which $kind $name $mode); )*
        }
    };
    (@one primary_only aux $name:ident $mode:expr) => {};
    (@one $which:ident $kind:ident $name:ident $mode:expr) => {
        pub fn $name() -> kernel::harness::TestResult {
            super::board::run_in(
                $mode,
                kernel::iommu::conformance::$name::<super::board::Board>,
            )
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

kernel::conformance_cases!(cases, stage1, (super::Mode::Stage1), all);
kernel::conformance_cases!(cases, nested, (super::Mode::Nested), all);
kernel::conformance_cases!(cases, stage2, (super::Mode::Stage2), primary_only);

/// Registry entries for every case in each mode, in the suite's order:
/// `iommu::NAME`, `iommu::nested::NAME`, `iommu::stage2::NAME`.
macro_rules! entries {
    ($module:ident, $prefix:literal, $which:ident ; $($kind:ident $name:ident),* $(,)?) => {
        {
            let mut v = alloc::vec::Vec::new();
            $( entries!(@one v $module $prefix $which $kind $name); )*
            v
        }
    };
    (@one $v:ident $module:ident $prefix:literal primary_only aux $name:ident) => {};
    (@one $v:ident $module:ident $prefix:literal $which:ident $kind:ident $name:ident) => {
        $v.push(kernel::harness::Test::new(
            concat!($prefix, stringify!($name)),
            $module::$name,
        ));
    };
}

/// The suite's registry entries for every mode.
#[allow(clippy::vec_init_then_push)] // `entries!` pushes one per case of the list
pub fn tests() -> alloc::vec::Vec<kernel::harness::Test> {
    let mut v = kernel::conformance_cases!(entries, stage1, "iommu::", all);
    v.extend(kernel::conformance_cases!(
        entries,
        nested,
        "iommu::nested::",
        all
    ));
    v.extend(kernel::conformance_cases!(
        entries,
        stage2,
        "iommu::stage2::",
        primary_only
    ));
    v
}

pub(super) mod board {
    use super::super::dma::{self, Engine, Open};
    use super::Mode;
    use crate::hal::KernelHal;
    use crate::iommu::{bring_up_unit, BringupError, Managed, Up};
    use crate::memory::DmaBuffer;
    use alloc::boxed::Box;
    use alloc::collections::BTreeMap;
    use alloc::format;
    use alloc::vec::Vec;
    use kernel::dma::{DmaEngine, DmaOp, DmaResult, DmaTag, EngineError};
    use kernel::hal::{Coherency, HalTables};
    use kernel::harness::{TestError, TestResult};
    use kernel::iommu::bringup::Bringup;
    use kernel::iommu::conformance::Platform;
    use kernel::iommu::domain::{DeviceId, Fault, Iommu, IommuHw, TableFormat};
    use kernel::iommu::pgtable::TableMemory;
    use kernel::mm::PAGE_SIZE;

    const BOUND_NS: u64 = 2_000_000_000;

    pub use crate::iommu::{IommuDriver as BoardIommu, Options};

    /// The engines go before `open`, which releases the device.
    struct Dev {
        id: DeviceId,
        /// Its PASID capability's width.
        pasid_bits: u8,
        plain: Engine,
        signalling: Engine,
        open: Open,
    }

    pub struct BoardPlatform<H: BoardIommu> {
        /// The register base of the unit brought up.
        unit: u64,
        /// The IOMMU, brought up with the devices under the core.
        up: Up<H>,
        devs: Vec<Dev>,
        /// Pages handed to the case, by base address.
        pages: BTreeMap<u64, DmaBuffer>,
        /// What the checking mode found at the case's DMAs.
        violations: usize,
    }

    pub type Board = BoardPlatform<crate::iommu::Driver>;
    #[cfg(target_arch = "aarch64")]
    pub type SmmuPlatform = Board;
    #[cfg(target_arch = "x86_64")]
    pub type VtdPlatform = Board;

    /// A driver's (or the bring-up's) refusal as a test failure.
    pub fn fail(e: impl core::fmt::Display) -> TestError {
        TestError::fail(format!("{e}"))
    }

    impl<H: BoardIommu> BoardPlatform<H> {
        fn dev(&mut self, id: DeviceId) -> Result<&mut Dev, EngineError> {
            self.devs
                .iter_mut()
                .find(|d| d.id == id)
                .ok_or(EngineError::NoDevice { id: id.0 })
        }

        /// The checking mode's verification before a DMA: a broken rule
        /// is said on the console and refuses the DMA (and fails the case).
        fn check(&mut self) -> Result<(), EngineError> {
            let Err(found) = self.up.iommu.hw.verify() else {
                return Ok(());
            };
            for v in &found {
                log::error!("iommu.check: {v}");
            }
            self.violations += found.len();
            Err(EngineError::Device {
                what: "iommu.check: the driver broke a rule of the checking mode",
                value: found.len() as u64,
            })
        }

        fn buffer_of(&self, pa: u64, len: usize) -> Option<(&DmaBuffer, usize)> {
            let (&base, buf) = self.pages.range(..=pa).next_back()?;
            let off = (pa - base) as usize;
            (off + len <= buf.len()).then_some((buf, off))
        }
    }

    impl<H: BoardIommu> BoardPlatform<H> {
        /// Every device under the core, not only the suite's three.
        #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
        pub fn managed(&self) -> Vec<DeviceId> {
            self.devs.iter().map(|d| d.id).collect()
        }

        /// The PCI functions under the core (segment and function).
        pub fn functions(&self) -> Vec<(u16, &'static pci::Function)> {
            self.devs
                .iter()
                .map(|d| (d.open.segment, d.open.f))
                .collect()
        }

        /// The PCI function of `id` (its segment) and its registers.
        #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
        pub fn function_of(
            &self,
            id: DeviceId,
        ) -> Option<(
            u16,
            &'static pci::Function,
            alloc::rc::Rc<pasid_dma::PasidDma>,
        )> {
            let d = self.devs.iter().find(|d| d.id == id)?;
            Some((d.open.segment, d.open.f, d.open.dev.clone()))
        }

        /// Runs `op` on `dev` and, while it is not done, calls `between`
        /// every 10 µs or so (to serve page requests the operation waits
        /// on), for at most [`BOUND_NS`].
        #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
        pub fn dma_serving(
            &mut self,
            dev: DeviceId,
            op: DmaOp,
            tag: DmaTag,
            mut between: impl FnMut(&mut Self) -> TestResult,
        ) -> Result<DmaResult, TestError> {
            self.check().map_err(fail)?;
            let ticket = self
                .dev(dev)
                .map_err(fail)?
                .plain
                .submit(&op, tag)
                .map_err(fail)?;
            let t0 = crate::arch::now_ns();
            let r = loop {
                match self.dev(dev).map_err(fail)?.plain.wait(ticket, 10_000) {
                    Err(EngineError::Timeout { .. }) if crate::arch::now_ns() - t0 < BOUND_NS => {
                        between(self)?
                    }
                    other => break other.map_err(fail),
                }
            };
            self.up.iommu.hw.after_dma();
            r
        }

        /// The register base of the unit the case runs on.
        #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
        pub fn unit(&self) -> u64 {
            self.unit
        }
    }

    impl<H: BoardIommu> Platform for BoardPlatform<H> {
        type Hw = H;

        fn iommu(&mut self) -> &mut Iommu<H> {
            &mut self.up.iommu
        }

        fn devices(&self) -> (DeviceId, DeviceId, Option<DeviceId>) {
            let widths: Vec<_> = self.devs.iter().map(|d| (d.id, d.pasid_bits)).collect();
            // `setup` refuses fewer than two devices.
            kernel::iommu::conformance::pick_devices(&widths).unwrap_or((
                self.devs[0].id,
                self.devs[0].id,
                None,
            ))
        }

        fn dma(&mut self, dev: DeviceId, op: DmaOp, tag: DmaTag) -> Result<DmaResult, EngineError> {
            self.check()?;
            let r = self.dev(dev)?.plain.run(&op, tag, BOUND_NS);
            self.up.iommu.hw.after_dma();
            r
        }

        fn dma_with_interrupt(
            &mut self,
            dev: DeviceId,
            op: DmaOp,
            tag: DmaTag,
        ) -> Result<(DmaResult, bool), EngineError> {
            self.check()?;
            let d = self.dev(dev)?;
            let id = d.open.vector.id;
            let before = crate::arch::msi_count(id);
            let r = d.signalling.run(&op, tag, BOUND_NS);
            self.up.iommu.hw.after_dma();
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
            self.up.iommu.hw.faults()
        }

        /// Stage 1 with the kernel's own MAIR on Arm; x86-64 paging with
        /// 4 KiB and 2 MiB pages on x86.
        fn cpu_format(&self) -> TableFormat {
            #[cfg(target_arch = "aarch64")]
            let f = TableFormat::Arm(kernel::iommu::pgtable::arm::ArmLpae::S1_CPU);
            #[cfg(target_arch = "x86_64")]
            let f = TableFormat::X86FirstLevel(kernel::iommu::pgtable::x86::X86FirstLevel {
                gib_pages: false,
            });
            f
        }

        /// Pages from the kernel's allocator, written as for a walker that
        /// does not snoop (cleaned to the point of coherency): a CPU's
        /// tables do not know which IOMMU will walk them.
        fn space_memory(&mut self) -> Box<dyn TableMemory> {
            Box::new(HalTables::new(KernelHal, Coherency::NonCoherent))
        }
    }

    /// Cases set up so far: each takes the next unit in turn, so on a
    /// platform with several units the suite runs across them all.
    static CASES: core::sync::atomic::AtomicUsize = core::sync::atomic::AtomicUsize::new(0);

    /// The unit the next case runs on and the pasid-dma functions behind
    /// it: the units with two or more, taken in turn.
    fn pick_unit() -> Result<(u64, Vec<dma::Found>), TestError> {
        let groups = dma::by_unit()?;
        let counts: Vec<_> = groups
            .iter()
            .map(|(u, found)| format!("{} {}", crate::iommu::unit_name(*u), found.len()))
            .collect();
        let mut usable: Vec<_> = groups.into_iter().filter(|(_, f)| f.len() >= 2).collect();
        if usable.is_empty() {
            return Err(TestError::skip(format!(
                "the suite needs two pasid-dma devices behind one IOMMU; behind each: [{}]",
                counts.join(", ")
            )));
        }
        let turn = CASES.fetch_add(1, core::sync::atomic::Ordering::Relaxed) % usable.len();
        Ok(usable.swap_remove(turn))
    }

    fn setup<H: BoardIommu>(opts: Options) -> Result<BoardPlatform<H>, TestError> {
        let (unit, found) = pick_unit()?;
        if crate::iommu::units().len() > 1 {
            log::info!(
                "conformance: on {} with {} pasid-dma function(s)",
                crate::iommu::unit_name(unit),
                found.len()
            );
        }
        let opens = dma::open_to_bring_up(&found)?;
        let mut managed = Vec::new();
        for open in &opens {
            open.enable_pasid()?;
            managed.push(Managed {
                segment: open.segment,
                f: open.f,
                pasid_bits: open.pasid_width(),
            });
        }
        let up = bring_up_unit::<H>(unit, opts, &managed).map_err(|e| match e {
            BringupError::Unavailable(why) => TestError::skip(why),
            e => fail(e),
        })?;
        let mut devs = Vec::new();
        for (open, &id) in opens.into_iter().zip(&up.managed) {
            let plain = open.unrecorded_engine(0, false)?;
            let signalling = open.unrecorded_engine(1, true)?;
            devs.push(Dev {
                id,
                pasid_bits: open.pasid_width(),
                plain,
                signalling,
                open,
            });
        }
        Ok(BoardPlatform {
            unit,
            up,
            devs,
            pages: BTreeMap::new(),
            violations: 0,
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
                ..Options::default()
            },
            case,
        )
    }

    /// [`run_in`] with all the options.
    pub fn run_with(opts: Options, case: impl FnOnce(&mut Board) -> TestResult) -> TestResult {
        let p: Board = setup(opts)?;
        let unit = p.unit;
        let result = run_set_up(p, case);
        super::super::on_unit(unit, result)
    }

    /// [`run_with`] on the platform set up.
    fn run_set_up(mut p: Board, case: impl FnOnce(&mut Board) -> TestResult) -> TestResult {
        let mut result = case(&mut p);
        // What the case's last changes left, and what a case that took
        // a refused DMA in its stride did.
        let _ = p.check();
        if result.is_ok() && p.violations > 0 {
            result = Err(TestError::fail(format!(
                "iommu.check: {} violation(s), listed above",
                p.violations
            )));
        }
        let leftover_pages = p.pages.len();
        let teardown = p.up.tear_down().map_err(fail).and_then(|(tables, meta)| {
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
        pub pasid: kernel::iommu::domain::Pasid,
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
                time_copies(p, x, name, from, to, DmaTag::Untagged)?;
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

    const COPIES: usize = 100;
    const COPY_LEN: u64 = 1 << 20;

    /// Times [`COPIES`] copies of [`COPY_LEN`] bytes from `src` to `dst` by
    /// `x` under `tag`, and reports them as benchmark `name`.
    fn time_copies(
        p: &mut Board,
        x: DeviceId,
        name: &str,
        src: u64,
        dst: u64,
        tag: DmaTag,
    ) -> TestResult {
        use kernel::dma::DmaStatus;
        let op = DmaOp::Copy {
            src,
            dst,
            len: COPY_LEN,
        };
        let mut samples = Vec::with_capacity(COPIES);
        for _ in 0..COPIES {
            let t0 = crate::arch::now_ns();
            let r = p
                .dma(x, op, tag)
                .map_err(|e| TestError::fail(format!("{name}: {e}")))?;
            samples.push(crate::arch::now_ns() - t0);
            kernel::ensure_eq!(r.status, DmaStatus::Success, "{name}");
        }
        let stats =
            kernel::stats::Stats::of(&mut samples).ok_or_else(|| TestError::fail("no samples"))?;
        crate::kprint!("# bench {name} {stats}\n");
        Ok(())
    }

    /// The same 1 MiB copy on the same device in the same run: between two
    /// CPU virtual addresses of a bound address space (SVA, PASID-tagged),
    /// then between two IOVAs a DMA domain handed out (the device's
    /// primary domain); reported as `sva::copy_1m_sva` and
    /// `sva::copy_1m_dma_domain`.
    pub fn copy_1m_sva_bench(p: &mut Board) -> TestResult {
        use kernel::iommu::conformance::SVA_VA;
        use kernel::iommu::domain::{DomainKind, Feature};
        use kernel::iommu::pgtable::Prot;
        use kernel::mm::space::{AddressSpace, SpaceId};
        let core = kernel::iommu::conformance::core_err;
        let pages = COPY_LEN / PAGE_SIZE;
        let (x, _, _) = p.devices();
        if !p.iommu().dev_has_feature(x, Feature::Sva).map_err(core)? {
            return Err(TestError::skip(
                "no SVA here: the unit cannot walk a CPU's page tables",
            ));
        }
        let src = p.alloc_pages(pages, 2 << 20)?;
        let dst = p.alloc_pages(pages, 2 << 20)?;
        let format = p.cpu_format();
        let memory = p.space_memory();
        let mut space = AddressSpace::new(SpaceId(1), format, memory)
            .map_err(|e| TestError::fail(format!("a CPU address space: {e}")))?;
        let d = p.iommu().domain_alloc(DomainKind::Dma).map_err(core)?;
        let result = (|| -> TestResult {
            let (va_src, va_dst) = (SVA_VA, SVA_VA + (2 << 20));
            space
                .map(va_src, src, COPY_LEN, Prot::RO)
                .and_then(|()| space.map(va_dst, dst, COPY_LEN, Prot::RW))
                .map_err(|e| TestError::fail(format!("{e}")))?;
            let iommu = p.iommu();
            let from = iommu.dma_map(d, src, COPY_LEN, Prot::RO).map_err(core)?;
            let to = iommu.dma_map(d, dst, COPY_LEN, Prot::RW).map_err(core)?;
            // The primary domain first: it cannot change under a bound PASID.
            iommu.attach_device(d, x).map_err(core)?;
            iommu.dev_enable_feature(x, Feature::Sva).map_err(core)?;
            let pasid = iommu.sva_bind(x, &space).map_err(core)?;
            let tag = kernel::iommu::conformance::tagged(pasid);
            time_copies(p, x, "sva::copy_1m_sva", va_src, va_dst, tag)?;
            time_copies(p, x, "sva::copy_1m_dma_domain", from, to, DmaTag::Untagged)
        })();
        let iommu = p.iommu();
        let cleanup = match iommu.sva_unbind(x, space.id()) {
            Ok(()) | Err(kernel::iommu::domain::IommuError::NotBound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
        .and_then(|()| iommu.detach_device(x))
        .and_then(|()| iommu.dev_disable_feature(x, Feature::Sva))
        .and_then(|()| iommu.dev_disable_feature(x, Feature::Aux))
        .and_then(|()| iommu.domain_free(d))
        .map_err(core);
        drop(space);
        p.free_pages(src, pages);
        p.free_pages(dst, pages);
        result.and(cleanup)
    }
}
