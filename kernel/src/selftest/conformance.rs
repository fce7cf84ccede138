//! The IOMMU conformance suite (`kernel::iommu::conformance`) on the
//! board's IOMMU with its pasid-dma devices. Each case gets a fresh
//! platform: the driver takes over the IOMMU, the two widest devices and
//! the narrow one are added to the core, and afterwards every stream goes
//! back to bypass, translation is turned off, and leaks are checked (page
//! tables, CD tables, the case's own pages).
//!
//! The engines write no completion records: a record is DMA too, and in
//! a blocked or sparsely mapped domain it would fault or need a mapping
//! of its own. They read each outcome from the device's last-completion
//! registers instead, so the operation under test is the device's only
//! DMA.
/// Which stages the SMMU driver gives domains for a run of the suite
/// (the VT-d driver will have its own).
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
                #[cfg(target_arch = "aarch64")]
                pub fn $name() -> TestResult {
                    super::board::run_in(
                        $mode,
                        kernel::iommu::conformance::$name::<super::board::SmmuPlatform>,
                    )
                }
                #[cfg(not(target_arch = "aarch64"))]
                pub fn $name() -> TestResult {
                    let _ = $mode;
                    Err(kernel::harness::TestError::skip(
                        "the VT-d driver does not run the conformance suite yet (issue 8)",
                    ))
                }
            )*
        }
    };
}

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

#[cfg(target_arch = "aarch64")]
pub(super) mod board {
    use super::super::dma::{self, Open};
    use super::super::iommu::stage1::{smmu_base, stream_id};
    use super::Mode;
    use crate::arch::smmu::{SmmuHw, Translation};
    use crate::dma_engine::PasidDmaEngine;
    use crate::memory::DmaBuffer;
    use crate::pcie;
    use alloc::collections::BTreeMap;
    use alloc::format;
    use alloc::vec::Vec;
    use kernel::dma::{DmaEngine, DmaOp, DmaResult, DmaTag, EngineError};
    use kernel::harness::{TestError, TestResult};
    use kernel::iommu::conformance::Platform;
    use kernel::iommu::domain::{DeviceId, Fault, Iommu};
    use kernel::mm::PAGE_SIZE;
    use smmuv3::idr::StreamTableLevels;
    use smmuv3::ste::Ste;

    const BOUND_NS: u64 = 2_000_000_000;

    struct Dev {
        sid: u32,
        open: Open,
        plain: PasidDmaEngine,
        signalling: PasidDmaEngine,
    }

    pub struct SmmuPlatform {
        iommu: Iommu<SmmuHw>,
        devs: Vec<Dev>,
        /// Pages handed to the case, by base address.
        pages: BTreeMap<u64, DmaBuffer>,
        /// StreamIDs of every other function (bypass during the case).
        others: Vec<u32>,
    }

    fn fail(e: impl core::fmt::Debug) -> TestError {
        TestError::fail(format!("{e:?}"))
    }

    impl SmmuPlatform {
        fn dev(&mut self, id: DeviceId) -> Result<&mut Dev, EngineError> {
            self.devs
                .iter_mut()
                .find(|d| d.sid == id)
                .ok_or_else(|| EngineError::Device(format!("no device {id:#x}")))
        }

        fn buffer_of(&self, pa: u64, len: usize) -> Option<(&DmaBuffer, usize)> {
            let (&base, buf) = self.pages.range(..=pa).next_back()?;
            let off = (pa - base) as usize;
            (off + len <= buf.len()).then_some((buf, off))
        }
    }

    impl Platform for SmmuPlatform {
        type Hw = SmmuHw;

        fn iommu(&mut self) -> &mut Iommu<SmmuHw> {
            &mut self.iommu
        }

        fn devices(&self) -> (DeviceId, DeviceId, Option<DeviceId>) {
            (
                self.devs[0].sid,
                self.devs[1].sid,
                self.devs.get(2).map(|d| d.sid),
            )
        }

        fn dma(&mut self, dev: DeviceId, op: DmaOp, tag: DmaTag) -> Result<DmaResult, EngineError> {
            self.dev(dev)?.plain.run(&op, tag, BOUND_NS)
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
            let r = d.signalling.run(&op, tag, BOUND_NS)?;
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
            self.iommu.hw.take_faults()
        }
    }

    fn setup(mode: Mode, table: Option<StreamTableLevels>) -> Result<SmmuPlatform, TestError> {
        let base = smmu_base()?;
        let opens = dma::open_all()?;
        if opens.len() < 2 {
            return Err(TestError::skip(format!(
                "the suite needs two pasid-dma devices, the board has {}",
                opens.len()
            )));
        }
        let mut devs = Vec::new();
        for open in opens {
            let sid = stream_id(open.segment, open.f).ok_or_else(|| {
                TestError::fail(format!("the IORT gives {} no StreamID", open.name()))
            })?;
            open.enable_pasid()?;
            let plain = open.unrecorded_engine(0, false)?;
            let signalling = open.unrecorded_engine(1, true)?;
            devs.push(Dev {
                sid,
                open,
                plain,
                signalling,
            });
        }
        let mut others = Vec::new();
        for bus in pcie::buses() {
            for f in &bus.functions {
                match stream_id(bus.segment, f) {
                    Some(s) if !devs.iter().any(|d| d.sid == s) => others.push(s),
                    _ => {}
                }
            }
        }
        let smmu = pcie::smmuv3_at(base).ok_or_else(|| TestError::fail("SMMU vanished"))?;
        let mut hw = SmmuHw::with_stream_table(smmu, base, table).map_err(fail)?;
        let ready = (|| {
            let translation = match mode {
                Mode::Stage1 => Translation::Stage1,
                Mode::Stage2 => Translation::Stage2,
                Mode::Nested => Translation::Nested,
            };
            hw.set_translation(translation)
                .map_err(|e| TestError::skip(e.0))?;
            if mode != Mode::Stage2 && hw.features.ssid_bits == 0 {
                return Err(TestError::skip(
                    "this SMMU has no substreams (IDR1.SSIDSIZE 0): QEMU without our patch?",
                ));
            }
            for &s in &others {
                hw.write_ste(s, &Ste::bypass()).map_err(fail)?;
            }
            hw.enable().map_err(fail)
        })();
        if let Err(e) = ready {
            hw.release_s2();
            let _ = hw.disable();
            return Err(e);
        }
        let mut iommu = Iommu::new(hw, 1, (1 << 20) - 1).map_err(fail)?;
        for d in &devs {
            if let Err(e) = iommu.add_device(d.sid, d.open.pasid_width()) {
                iommu.hw.release_s2();
                let _ = iommu.hw.disable();
                return Err(fail(e));
            }
        }
        Ok(SmmuPlatform {
            iommu,
            devs,
            pages: BTreeMap::new(),
            others,
        })
    }

    /// Runs one case on a fresh platform with stage 1 and tears it down.
    pub fn run(case: impl FnOnce(&mut SmmuPlatform) -> TestResult) -> TestResult {
        run_in(Mode::Stage1, case)
    }

    /// Runs one case on a fresh platform whose domains use `mode`'s
    /// stages and tears it down, whatever happened; a leak fails the case.
    pub fn run_in(mode: Mode, case: impl FnOnce(&mut SmmuPlatform) -> TestResult) -> TestResult {
        run_with(mode, None, case)
    }

    /// [`run_in`] with the stream table format forced.
    pub fn run_with(
        mode: Mode,
        table: Option<StreamTableLevels>,
        case: impl FnOnce(&mut SmmuPlatform) -> TestResult,
    ) -> TestResult {
        let mut p = setup(mode, table)?;
        let result = case(&mut p);
        let leftover_pages = p.pages.len();
        let hw = &mut p.iommu.hw;
        let mut teardown = Ok(());
        for d in &p.devs {
            teardown = teardown.and(hw.release_stream(d.sid));
        }
        for &s in &p.others {
            teardown = teardown.and(hw.write_ste(s, &Ste::bypass()));
        }
        hw.release_s2();
        teardown = teardown.and(hw.disable());
        let (tables, cd_bytes) = (hw.tables_live(), hw.cd_table_bytes());
        let teardown = teardown.map_err(fail).and_then(|()| {
            if result.is_ok() && (tables != 0 || cd_bytes != 0 || leftover_pages != 0) {
                Err(TestError::fail(format!(
                    "leaked: {tables} page-table page(s), {cd_bytes} bytes of CD tables, \
                     {leftover_pages} of the case's page run(s)"
                )))
            } else {
                Ok(())
            }
        });
        result.and(teardown)
    }
}
