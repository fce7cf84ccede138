//! SMMUv3 driver tests on the conformance platform (the driver under the
//! core, the pasid-dma devices as streams): every fault type the model
//! raises, with its fields; the configuration cache of a live substream;
//! event queue overflow; what an aux domain costs; and a benchmark of
//! copies through stage 1 against bypass.
use kernel::harness::TestResult;

super::conformance::board_tests!(
    "aarch64", "this board has no SMMUv3";
    smmuv3_inject_fault_types,
    smmuv3_cd_update_needs_cfgi,
    smmuv3_inject_event_queue_overflow,
    smmuv3_aux_domain_metadata,
    copy_1m_stage1_and_bypass,
    smmuv3_inject_interrupts,
);

/// The stream tables: the default two-level table serves a device whose
/// StreamID is past 0x8000, and a forced linear table of 2^SIDSIZE STEs
/// runs the first conformance case.
#[cfg(target_arch = "aarch64")]
pub fn smmuv3_stream_tables_inject_faults() -> TestResult {
    super::conformance::board::run(on_board::two_level_high_stream_id)?;
    super::conformance::board::run_with(
        super::conformance::board::Options {
            mode: super::conformance::Mode::Stage1,
            linear_stream_table: true,
            ..super::conformance::board::Options::default()
        },
        on_board::linear_stream_table,
    )
}

#[cfg(not(target_arch = "aarch64"))]
pub fn smmuv3_stream_tables_inject_faults() -> TestResult {
    Err(kernel::harness::TestError::skip("this board has no SMMUv3"))
}

/// An SMMU that is off aborts DMA instead of letting it bypass (its
/// driver sets GBPA.ABORT before SMMUEN is set or cleared): untranslated
/// DMA lands while the SMMU is up with bypass STEs; with the SMMU taken
/// down, it is off, GBPA says abort, and the same write faults and leaves
/// memory alone; up again, DMA lands again.
#[cfg(target_arch = "aarch64")]
pub fn smmuv3_off_aborts_dma() -> TestResult {
    use kernel::harness::TestError;
    if crate::iommu::units().is_empty() {
        return Err(TestError::skip("this board has no SMMUv3"));
    }
    for (base, open) in super::dma::first_behind_each_unit()? {
        super::on_unit(base, off_aborts_dma_on(base, open))?;
    }
    Ok(())
}

/// [`smmuv3_off_aborts_dma`] on the SMMU at `base`, with `open` behind it.
#[cfg(target_arch = "aarch64")]
fn off_aborts_dma_on(base: u64, open: super::dma::Open) -> TestResult {
    use crate::memory::DmaBuffer;
    use kernel::dma::{DmaEngine, DmaOp, DmaStatus, DmaTag};
    use kernel::harness::TestError;
    use kernel::{ensure, ensure_eq};
    use tock_registers::interfaces::Readable;
    const BOUND_NS: u64 = 2_000_000_000;
    let fail = |e: &dyn core::fmt::Display| TestError::fail(alloc::format!("{e}"));
    // No completion records: their writes would abort too.
    let mut e = open.unrecorded_engine(0, false)?;
    let buf = DmaBuffer::new(kernel::mm::PAGE_SIZE as usize, kernel::mm::PAGE_SIZE)
        .map_err(|e| fail(&e))?;
    let dst = buf.phys().as_u64();
    let mut write = |value: u64| {
        let op = DmaOp::WriteImm {
            dst,
            value,
            size: 8,
        };
        e.run(&op, DmaTag::Untagged, BOUND_NS).map_err(|e| fail(&e))
    };
    let landed = || {
        let mut b = [0u8; 8];
        buf.read_volatile(0, &mut b);
        u64::from_le_bytes(b)
    };
    ensure_eq!(write(1)?.status, DmaStatus::Success, "SMMU up, bypass STE");
    ensure_eq!(landed(), 1, "the write through a bypass STE");
    crate::iommu::park();
    let smmu = crate::pcie::smmuv3_at(base).ok_or_else(|| TestError::fail("SMMU vanished"))?;
    ensure!(!smmu.enabled(), "SMMU at {base:#x} still enabled");
    let gbpa = smmu.regs().gbpa.get();
    let off = write(2)?.status;
    let after_off = landed();
    crate::iommu::untranslated().map_err(|e| fail(&e))?;
    ensure_eq!(
        off,
        DmaStatus::WriteFault { addr: dst },
        "a write while the SMMU is off (GBPA {gbpa:#x})"
    );
    ensure_eq!(after_off, 1, "memory after the aborted write");
    ensure!(
        gbpa & smmuv3::regs::GBPA::ABORT::SET.value != 0,
        "SMMU off with GBPA {gbpa:#x}: not aborting"
    );
    ensure_eq!(write(3)?.status, DmaStatus::Success, "SMMU up again");
    ensure_eq!(landed(), 3, "the write after the SMMU came up again");
    Ok(())
}

#[cfg(not(target_arch = "aarch64"))]
pub fn smmuv3_off_aborts_dma() -> TestResult {
    Err(kernel::harness::TestError::skip("this board has no SMMUv3"))
}

#[cfg(target_arch = "aarch64")]
mod on_board {
    use super::super::conformance::board::fail as hw;
    use super::super::conformance::board::SmmuPlatform;
    use acpi_tables::iort::NodeKind;
    use alloc::format;
    use alloc::vec::Vec;
    use kernel::dma::{DmaOp, DmaResult, DmaStatus, DmaTag};
    use kernel::harness::{TestError, TestResult};
    use kernel::iommu::conformance::{core_err as core, read_u64, tagged, write_u64, Platform};
    use kernel::iommu::domain::{DeviceId, DomainKind, Feature, Pasid};
    use kernel::iommu::pgtable::arm::MAIR;
    use kernel::iommu::pgtable::{Prot, PAGE_SIZE};
    use kernel::{ensure, ensure_eq};
    use smmuv3::cd::{Cd, CdConfig};
    use smmuv3::cmd::Command;
    use smmuv3::driver::WiredIrqs;
    use smmuv3::event::{Event, EventKind};
    use smmuv3::ste::{CdFmt, CdTable, S1Dss, Ste};

    const IOVA: u64 = 0x4000_0000;
    /// Inside the 44-bit output range, but no RAM or device decodes it.
    const UNBACKED: u64 = 0x10_0000_0000;

    fn read(
        p: &mut SmmuPlatform,
        dev: DeviceId,
        iova: u64,
        tag: DmaTag,
    ) -> Result<DmaResult, TestError> {
        p.dma(
            dev,
            DmaOp::Compare {
                a: iova,
                b: iova,
                len: 8,
            },
            tag,
        )
        .map_err(|e| TestError::fail(format!("read {iova:#x}: {e}")))
    }

    /// Exactly one event since the last drain, of `kind` from `sid`, with
    /// this SubstreamID; its address and direction when given.
    fn expect_event(
        p: &mut SmmuPlatform,
        what: &str,
        kind: EventKind,
        sid: u32,
        ssid: Option<u32>,
        addr: Option<u64>,
        read: Option<bool>,
    ) -> Result<Event, TestError> {
        let events: Vec<Event> = p.iommu().hw.drain_events();
        let ok = events.len() == 1 && {
            let e = &events[0];
            e.kind == kind
                && e.sid == sid
                && e.ssid == ssid
                && addr.is_none_or(|a| e.addr == a)
                && read.is_none_or(|r| e.read == r)
        };
        ensure!(
            ok,
            "{what}: expected one {kind:?} (SID {sid:#x}, SSID {ssid:?}, address {addr:x?}, read {read:?}), got {events:x?}"
        );
        log::info!("SMMU {what}: {:x?}", events[0]);
        Ok(events[0])
    }

    /// Each fault the model raises, provoked on purpose and reported with
    /// its stream, substream, address and direction: translation,
    /// permission, address size and walk abort on a substream; a bad CD
    /// and a substream beyond the table; a CD fetch abort, a disabled
    /// stream (S1DSS terminate) and a bad STE on the untagged stream.
    pub fn smmuv3_inject_fault_types(p: &mut SmmuPlatform) -> TestResult {
        let (x, _, _) = p.devices();
        let page = p.alloc_pages(1, PAGE_SIZE)?;
        let d = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        let e = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        let iommu = p.iommu();
        iommu
            .map(d, IOVA, page, PAGE_SIZE, Prot::RO)
            .map_err(core)?;
        // Inside OAS 48 of the format, beyond the SMMU's 44 bits.
        iommu
            .map(d, IOVA + 2 * PAGE_SIZE, 1 << 45, PAGE_SIZE, Prot::RW)
            .map_err(core)?;
        iommu
            .map(e, IOVA, page, PAGE_SIZE, Prot::RW)
            .map_err(core)?;
        iommu.dev_enable_feature(x, Feature::Aux).map_err(core)?;
        let pd = iommu.aux_attach_device(d, x).map_err(core)?;
        let pe = iommu.aux_attach_device(e, x).map_err(core)?;
        let result = (|| -> TestResult {
            let hole = IOVA + PAGE_SIZE;
            let r = write_u64(p, x, hole, 1, tagged(pd))?;
            ensure_eq!(r.status, DmaStatus::WriteFault { addr: hole }, "unmapped");
            expect_event(
                p,
                "unmapped, tagged",
                EventKind::Translation,
                x.0,
                Some(pd.0),
                Some(hole),
                Some(false),
            )?;

            let r = write_u64(p, x, IOVA, 1, tagged(pd))?;
            ensure_eq!(r.status, DmaStatus::WriteFault { addr: IOVA }, "read-only");
            expect_event(
                p,
                "write to read-only",
                EventKind::Permission,
                x.0,
                Some(pd.0),
                Some(IOVA),
                Some(false),
            )?;

            let big = IOVA + 2 * PAGE_SIZE;
            let r = read(p, x, big, tagged(pd))?;
            ensure_eq!(r.status, DmaStatus::ReadFault { addr: big }, "beyond OAS");
            expect_event(
                p,
                "output beyond OAS",
                EventKind::AddressSize,
                x.0,
                Some(pd.0),
                Some(big),
                Some(true),
            )?;

            // Substream pe's tables moved to where nothing answers.
            let slot = p
                .iommu()
                .hw
                .cd_address(x.0, pe.0)
                .ok_or_else(|| TestError::fail("no CD for the aux domain"))?;
            let tag = p.iommu().domain_ref(e).map_err(core)?.tag as u16;
            p.iommu()
                .hw
                .poke(
                    slot + 8,
                    &[UNBACKED],
                    &[
                        Command::CfgiCd {
                            sid: x.0,
                            ssid: pe.0,
                            leaf: true,
                        },
                        Command::TlbiNhAsid { asid: tag, vmid: 0 },
                    ],
                )
                .map_err(hw)?;
            let r = read(p, x, IOVA, tagged(pe))?;
            ensure_eq!(r.status, DmaStatus::ReadFault { addr: IOVA }, "walk abort");
            let ev = expect_event(
                p,
                "table walk abort",
                EventKind::WalkExternalAbort,
                x.0,
                Some(pe.0),
                Some(IOVA),
                Some(true),
            )?;
            ensure_eq!(ev.class, 1, "F_WALK_EABT class (translation table)");

            // A free CD slot inside the table, and a substream beyond it.
            let unused = Pasid(pe.0 + 1);
            let r = write_u64(p, x, IOVA, 1, tagged(unused))?;
            ensure_eq!(r.status, DmaStatus::WriteFault { addr: IOVA }, "bad CD");
            expect_event(
                p,
                "invalid CD",
                EventKind::BadCd,
                x.0,
                Some(unused.0),
                None,
                None,
            )?;
            let beyond = Pasid(1 << 6);
            let r = write_u64(p, x, IOVA, 1, tagged(beyond))?;
            ensure_eq!(
                r.status,
                DmaStatus::WriteFault { addr: IOVA },
                "bad substream"
            );
            expect_event(
                p,
                "substream beyond S1CDMax",
                EventKind::BadSubstreamId,
                x.0,
                Some(beyond.0),
                None,
                None,
            )?;

            // STEs the driver would not write.
            let leaf0 = p
                .iommu()
                .hw
                .cd_address(x.0, 0)
                .ok_or_else(|| TestError::fail("no CD table"))?;
            let walk = p.iommu().hw.coherency();
            let cases = [
                (
                    "CD table where nothing answers",
                    CdTable {
                        base: UNBACKED,
                        log2_cds: 0,
                        fmt: CdFmt::Linear,
                        s1dss: S1Dss::Substream0,
                        walk,
                    },
                    EventKind::CdFetch,
                    Some(UNBACKED),
                ),
                (
                    "S1DSS terminate",
                    CdTable {
                        base: leaf0,
                        log2_cds: 6,
                        fmt: CdFmt::Linear,
                        s1dss: S1Dss::Terminate,
                        walk,
                    },
                    EventKind::StreamDisabled,
                    None,
                ),
                (
                    "S1CDMax beyond SSIDSIZE",
                    CdTable {
                        base: leaf0,
                        log2_cds: 21,
                        fmt: CdFmt::Linear,
                        s1dss: S1Dss::Substream0,
                        walk,
                    },
                    EventKind::BadSte,
                    None,
                ),
            ];
            for (what, table, kind, addr) in cases {
                p.iommu()
                    .hw
                    .write_ste(x.0, &Ste::stage1(&table))
                    .map_err(hw)?;
                let r = write_u64(p, x, IOVA, 1, DmaTag::Untagged)?;
                ensure_eq!(r.status, DmaStatus::WriteFault { addr: IOVA }, "{what}");
                expect_event(p, what, kind, x.0, None, addr, None)?;
                p.iommu().hw.restore_ste(x.0).map_err(hw)?;
            }
            Ok(())
        })();
        let iommu = p.iommu();
        let cleanup = iommu
            .aux_detach_device(d, x)
            .and_then(|()| iommu.aux_detach_device(e, x))
            .and_then(|()| iommu.dev_disable_feature(x, Feature::Aux))
            .and_then(|()| iommu.domain_free(d))
            .and_then(|()| iommu.domain_free(e))
            .map_err(core);
        p.free_pages(page, 1);
        result.and(cleanup)
    }

    /// A CD rewritten under a live substream changes nothing until
    /// CFGI_CD: the SMMU keeps using its cached configuration, then takes
    /// the new one.
    pub fn smmuv3_cd_update_needs_cfgi(p: &mut SmmuPlatform) -> TestResult {
        use super::super::conformance::board::{live_change_needs_invalidation, LiveChange};
        let slot = |p: &mut SmmuPlatform, l: &LiveChange| {
            p.iommu()
                .hw
                .cd_address(l.dev.0, l.pasid.0)
                .ok_or_else(|| TestError::fail("no CD slot"))
        };
        live_change_needs_invalidation(
            p,
            "CFGI_CD",
            |p, l| {
                let cd_b = Cd::new(&CdConfig {
                    asid: l.b.tag as u16,
                    ttb0: l.b.root.ok_or_else(|| TestError::fail("B has no table"))?.0,
                    ias: 48,
                    // What the SMMU's IDR5.OAS says, as the driver's CDs.
                    ips: p.iommu().hw.oas_encoding(),
                    mair: MAIR,
                    walk: p.iommu().hw.coherency(),
                    httu: 0,
                });
                let at = slot(p, l)?;
                p.iommu().hw.poke(at, &cd_b.0, &[]).map_err(hw)
            },
            |p, l| {
                let cfgi = Command::CfgiCd {
                    sid: l.dev.0,
                    ssid: l.pasid.0,
                    leaf: true,
                };
                let at = slot(p, l)?;
                p.iommu().hw.poke(at, &[], &[cfgi]).map_err(hw)
            },
            // Detaching invalidates the CD and A's ASID; freeing B, B's.
            |_, _| Ok(()),
        )
    }

    /// More faults than the event queue holds, with nobody draining: the
    /// queue fills, the overflow flag is noticed once, the events that fit
    /// are all there, and recording works normally afterwards.
    pub fn smmuv3_inject_event_queue_overflow(p: &mut SmmuPlatform) -> TestResult {
        let (x, _, _) = p.devices();
        let d = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        p.iommu().attach_device(d, x).map_err(core)?;
        let result = (|| -> TestResult {
            p.iommu().hw.drain_events();
            let entries = p.iommu().hw.event_queue_entries();
            let before = p.iommu().hw.overflows;
            for i in 0..u64::from(entries) + 8 {
                let at = IOVA + i * PAGE_SIZE;
                let r = write_u64(p, x, at, i, DmaTag::Untagged)?;
                ensure_eq!(r.status, DmaStatus::WriteFault { addr: at }, "fault {i}");
            }
            let events = p.iommu().hw.drain_events();
            ensure_eq!(events.len(), entries as usize, "events kept (a full queue)");
            ensure!(
                events
                    .iter()
                    .enumerate()
                    .all(|(i, e)| e.kind == EventKind::Translation
                        && e.addr == IOVA + i as u64 * PAGE_SIZE),
                "the kept events are the first ones, in order"
            );
            ensure_eq!(p.iommu().hw.overflows - before, 1, "overflows noticed");
            let r = write_u64(p, x, IOVA, 0, DmaTag::Untagged)?;
            ensure_eq!(
                r.status,
                DmaStatus::WriteFault { addr: IOVA },
                "after the overflow"
            );
            expect_event(
                p,
                "after the overflow",
                EventKind::Translation,
                x.0,
                None,
                Some(IOVA),
                Some(false),
            )?;
            ensure_eq!(p.iommu().hw.overflows - before, 1, "no second overflow");
            Ok(())
        })();
        let iommu = p.iommu();
        let cleanup = iommu
            .detach_device(x)
            .and_then(|()| iommu.domain_free(d))
            .map_err(core);
        result.and(cleanup)
    }

    /// What an aux domain costs (see the shared measure).
    pub fn smmuv3_aux_domain_metadata(p: &mut SmmuPlatform) -> TestResult {
        super::super::conformance::board::aux_domain_metadata(p, "SMMU CD")
    }

    /// 1 MiB copies through stage 1 against bypass.
    pub fn copy_1m_stage1_and_bypass(p: &mut SmmuPlatform) -> TestResult {
        super::super::conformance::board::copy_1m_bench(
            p,
            "smmu::copy_1m_stage1",
            "smmu::copy_1m_bypass",
        )
    }

    /// The SMMU's wired interrupts, from its IORT node.
    fn wired_irqs(base: u64) -> Option<WiredIrqs> {
        if let Some(iort) = crate::discovery::get()?.iort.as_ref() {
            return iort.nodes.iter().find_map(|n| match &n.kind {
                NodeKind::SmmuV3(s) if s.base == base => Some(WiredIrqs {
                    event: s.event_gsiv,
                    gerror: s.gerr_gsiv,
                    sync: s.sync_gsiv,
                }),
                _ => None,
            });
        }
        // A devicetree-only boot: the SMMU node's named interrupts (their
        // INTIDs are the GSIVs an IORT would give).
        let dt = crate::arch::devicetree()?;
        let irqs = &dt.smmus.iter().find(|s| s.base == base)?.irqs;
        Some(WiredIrqs {
            event: irqs.eventq?.intid(),
            gerror: irqs.gerror?.intid(),
            sync: irqs.cmdq_sync?.intid(),
        })
    }

    /// Waits (bounded) until `f` says the counts moved far enough (a watch
    /// window: at least 100 ms and 10 of this CPU's own ticks).
    fn wait_counts(p: &mut SmmuPlatform, f: impl Fn((u32, u32, u32)) -> bool) -> (u32, u32, u32) {
        let watch = crate::selftest::Watch::start(kernel::harness::Window {
            min_ns: 100_000_000,
            min_ticks: 10,
            cap_ns: 5_000_000_000,
        });
        loop {
            let c = p.iommu().hw.interrupt_counts().unwrap_or_default();
            if f(c) || watch.closed() {
                return c;
            }
            core::hint::spin_loop();
        }
    }

    /// The wired interrupts the IORT names: each command batch ends in a
    /// CMD_SYNC that signals its completion interrupt once; a fault raises
    /// the event interrupt; a refused command raises the global-error
    /// interrupt. Polling again afterwards.
    pub fn smmuv3_inject_interrupts(p: &mut SmmuPlatform) -> TestResult {
        let (x, _, _) = p.devices();
        let base = p.unit();
        let irqs = wired_irqs(base).ok_or_else(|| {
            TestError::fail(format!(
                "no IORT or devicetree node names the interrupts of the SMMU at {base:#x}"
            ))
        })?;
        log::info!("SMMU interrupts (IORT GSIVs): {irqs:?}");
        p.iommu().hw.enable_interrupts(irqs, true).map_err(hw)?;
        let result = (|| -> TestResult {
            let (e0, g0, s0) = p.iommu().hw.interrupt_counts().unwrap_or_default();
            for i in 1..=3 {
                p.iommu()
                    .hw
                    .commands(&[Command::CfgiSte {
                        sid: x.0,
                        leaf: true,
                    }])
                    .map_err(hw)?;
                let (_, _, s) = wait_counts(p, |c| c.2 >= s0 + i);
                ensure_eq!(s - s0, i, "completion interrupts after {i} batch(es)");
            }
            // The device sits in the blocked domain: its write faults.
            let r = write_u64(p, x, IOVA, 1, DmaTag::Untagged)?;
            ensure_eq!(
                r.status,
                DmaStatus::WriteFault { addr: IOVA },
                "blocked write"
            );
            let (e, _, _) = wait_counts(p, |c| c.0 > e0);
            ensure_eq!(e - e0, 1, "event interrupts for one fault");
            ensure_eq!(p.take_faults().len(), 1, "the fault behind it");
            let sync = Command::Sync { msi: None }.encode();
            let rejected = p.iommu().hw.raw_commands(&[[0xff, 0], sync]).map_err(hw)?;
            ensure_eq!(rejected.len(), 1, "refused commands");
            let (_, g, _) = wait_counts(p, |c| c.1 > g0);
            ensure_eq!(g - g0, 1, "global-error interrupts for one refused command");
            Ok(())
        })();
        let off = p.iommu().hw.disable_interrupts().map_err(hw);
        result.and(off)?;
        // Polling again: batches complete without the interrupt.
        p.iommu()
            .hw
            .commands(&[Command::CfgiSte {
                sid: x.0,
                leaf: true,
            }])
            .map_err(hw)?;
        ensure_eq!(p.iommu().hw.interrupt_counts(), None, "interrupts off");
        Ok(())
    }

    /// The device with the highest StreamID gets an STE in a level-2
    /// table past the first (far into the level-1 table where the board
    /// file says how far: `expect.high_stream_id`), and its DMA lands.
    pub fn two_level_high_stream_id(p: &mut SmmuPlatform) -> TestResult {
        ensure!(
            !p.iommu().hw.linear_stream_table(),
            "the default stream table is linear"
        );
        let (x, _, _) = p.devices();
        let high = p.managed().into_iter().max().unwrap_or(x);
        let stated = kernel::cmdline::get(&crate::platform::get().cmdline, "expect.high_stream_id");
        match stated {
            Some(s) => {
                let at_least = s
                    .strip_prefix("0x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        TestError::fail(format!("expect.high_stream_id={s}: want 0xHEX"))
                    })?;
                ensure!(
                    high.0 >= at_least,
                    "no device with a StreamID of {at_least:#x} or more (highest {high:#x}), \
                     as the board file states"
                );
            }
            // A level-2 table covers 256 StreamIDs (the driver's split).
            None if high.0 < 0x100 => {
                return Err(TestError::skip(format!(
                    "every managed device is in the first level-2 table (highest StreamID \
                     {high:#x})"
                )))
            }
            None => {}
        }
        let page = p.alloc_pages(1, PAGE_SIZE)?;
        let d = p
            .iommu()
            .domain_alloc(DomainKind::Unmanaged)
            .map_err(core)?;
        let result = (|| -> TestResult {
            p.iommu()
                .map(d, IOVA, page, PAGE_SIZE, Prot::RW)
                .map_err(core)?;
            p.iommu().attach_device(d, high).map_err(core)?;
            let r = write_u64(p, high, IOVA, 0x5151, DmaTag::Untagged)?;
            ensure_eq!(
                r.status,
                DmaStatus::Success,
                "write from StreamID {high:#x}"
            );
            ensure_eq!(read_u64(p, page), 0x5151, "the page");
            log::info!(
                "SMMU two-level stream table: StreamID {high:#x} at level-1 index {}; {} bytes of stream table",
                high.0 >> 8,
                p.iommu().hw.stream_table_bytes()
            );
            Ok(())
        })();
        let iommu = p.iommu();
        let cleanup = iommu
            .detach_device(high)
            .and_then(|()| iommu.domain_free(d))
            .map_err(core);
        p.free_pages(page, 1);
        result.and(cleanup)
    }

    /// With a linear stream table, the first case of the suite.
    pub fn linear_stream_table(p: &mut SmmuPlatform) -> TestResult {
        ensure!(
            p.iommu().hw.linear_stream_table(),
            "the forced table is not linear"
        );
        log::info!(
            "SMMU linear stream table: {} bytes",
            p.iommu().hw.stream_table_bytes()
        );
        kernel::iommu::conformance::primary_dma_lands_and_unmapped_inject_faults(p)
    }
}

/// Nested translation with a guest-owned stage 1 (issue 17): the kernel
/// plays a guest over a stage-2 domain whose IPAs are not the physical
/// addresses; it builds its CD table and stage-1 tables in memory stage 2
/// maps, the STE points at them (S1+S2), DMA lands through both stages,
/// a guest remap is seen only after the invalidation forwarded through
/// the vIOMMU object, a request for a stream the guest does not own
/// reaches no hardware, and faults of each stage say which.
#[cfg(target_arch = "aarch64")]
pub fn smmuv3_nested_guest_stage1_inject_faults() -> TestResult {
    super::conformance::board::run_in(super::conformance::Mode::Stage2, nested::guest_stage1)
}

#[cfg(not(target_arch = "aarch64"))]
pub fn smmuv3_nested_guest_stage1_inject_faults() -> TestResult {
    Err(kernel::harness::TestError::skip("this board has no SMMUv3"))
}

/// Benchmark: 4 KiB copies through nested translation (a guest's stage 1
/// over a stage-2 page table) against stage 1 alone, same device, same
/// run: `smmu::copy_4k_nested`, `smmu::copy_4k_stage1`.
#[cfg(target_arch = "aarch64")]
pub fn copy_4k_nested_and_stage1() -> TestResult {
    use super::conformance::{board::run_in, Mode};
    run_in(Mode::Stage2, nested::nested_copy_bench)?;
    run_in(Mode::Stage1, stage1_copy_bench)
}

#[cfg(not(target_arch = "aarch64"))]
pub fn copy_4k_nested_and_stage1() -> TestResult {
    Err(kernel::harness::TestError::skip("this board has no SMMUv3"))
}

/// 500 copies of 4 KiB from `iova` to `iova + 4 KiB` by `x`, untagged,
/// reported as benchmark `name`.
#[cfg(target_arch = "aarch64")]
fn copy_4k_samples(
    p: &mut super::conformance::board::SmmuPlatform,
    x: kernel::iommu::domain::DeviceId,
    name: &str,
    iova: u64,
) -> TestResult {
    use kernel::dma::{DmaOp, DmaStatus, DmaTag};
    use kernel::iommu::conformance::Platform;
    use kernel::iommu::pgtable::PAGE_SIZE;
    let op = DmaOp::Copy {
        src: iova,
        dst: iova + PAGE_SIZE,
        len: PAGE_SIZE,
    };
    let mut samples = alloc::vec::Vec::with_capacity(500);
    for _ in 0..500 {
        let t0 = crate::arch::now_ns();
        let r = p
            .dma(x, op, DmaTag::Untagged)
            .map_err(|e| kernel::harness::TestError::fail(alloc::format!("{name}: {e}")))?;
        samples.push(crate::arch::now_ns() - t0);
        kernel::ensure_eq!(r.status, DmaStatus::Success, "{name}");
    }
    let stats = kernel::stats::Stats::of(&mut samples)
        .ok_or_else(|| kernel::harness::TestError::fail("no samples"))?;
    crate::kprint!("# bench {name} {stats}\n");
    Ok(())
}

/// The stage-1 half: a paging domain with two pages, the same copies.
#[cfg(target_arch = "aarch64")]
fn stage1_copy_bench(p: &mut super::conformance::board::SmmuPlatform) -> TestResult {
    use kernel::iommu::conformance::{core_err as core, Platform};
    use kernel::iommu::domain::DomainKind;
    use kernel::iommu::pgtable::{Prot, PAGE_SIZE};
    const IOVA: u64 = 0x1000_0000;
    let (x, _, _) = p.devices();
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
        copy_4k_samples(p, x, "smmu::copy_4k_stage1", IOVA)
    })();
    let iommu = p.iommu();
    let cleanup = iommu
        .detach_device(x)
        .and_then(|()| iommu.domain_free(d))
        .map_err(core);
    p.free_pages(pages, 2);
    result.and(cleanup)
}

#[cfg(target_arch = "aarch64")]
mod nested {
    use super::super::conformance::board::{fail as hw, SmmuPlatform};
    use crate::hal::KernelRegion;
    use alloc::format;
    use kernel::dma::{DmaStatus, DmaTag};
    use kernel::hal::DmaRegion;
    use kernel::harness::{TestError, TestResult};
    use kernel::iommu::conformance::{core_err as core, write_u64, Platform};
    use kernel::iommu::domain::{DeviceId, FaultReason};
    use kernel::iommu::ioas::{HwptFlags, Ioas};
    use kernel::iommu::pgtable::arm::{ArmLpae, MAIR};
    use kernel::iommu::pgtable::{Gather, PageTable, Prot, TableMemory, PAGE_SIZE};
    use kernel::iommu::viommu::{Limits, Refusal, Refused, Request, Viommu, ViommuError};
    use kernel::{ensure, ensure_eq};
    use smmuv3::cd::{Cd, CdConfig};
    use smmuv3::driver::GuestS1;
    use smmuv3::event::{FaultStage, S2Access};
    use smmuv3::ste::{CdFmt, S1Dss};

    /// Where the guest's memory sits in its IPA space: far from its
    /// physical address (RAM on virt starts at 1 GiB).
    const GUEST_IPA: u64 = 0x8_0000_0000;
    const GUEST_PAGES: u64 = 16;
    /// Guest pages: the CD table, stage-1 tables, and two data pages.
    const CD_PAGE: u64 = 0;
    const FIRST_TABLE_PAGE: u64 = 1;
    const DATA_A: u64 = 12;
    const DATA_B: u64 = 13;
    /// An IPA inside the stage-2 input range that stage 2 does not map.
    const IPA_HOLE: u64 = 0x9_0000_0000;
    const VA: u64 = 0x1000_0000;
    const VA_UNMAPPED: u64 = VA + 0x10_0000;
    const VA_TO_HOLE: u64 = VA + 0x20_0000;
    const GUEST_ASID: u16 = 3;
    const GUEST_VSID: u32 = 1;

    /// The guest's RAM: physical pages the CPU reaches at their PA, the
    /// guest's tables at their IPA.
    struct GuestMemory {
        region: KernelRegion,
        next_table: u64,
    }

    impl GuestMemory {
        fn pa(&self, ipa: u64) -> u64 {
            self.region.phys().as_u64() + (ipa - GUEST_IPA)
        }
        fn ipa_of_page(page: u64) -> u64 {
            GUEST_IPA + page * PAGE_SIZE
        }
        fn offset(ipa: u64) -> u64 {
            ipa - GUEST_IPA
        }
        fn read(&self, ipa: u64) -> u64 {
            self.region.read_u64(Self::offset(ipa)).unwrap_or(u64::MAX)
        }
        fn write(&mut self, ipa: u64, v: u64) {
            if let Err(e) = self.region.write_u64(Self::offset(ipa), v) {
                log::error!("guest memory write at IPA {ipa:#x}: {e}");
            }
        }
    }

    /// Tables at IPAs, allocated from the guest's table pages.
    impl TableMemory for GuestMemory {
        fn alloc(&mut self) -> Option<u64> {
            if self.next_table >= DATA_A {
                return None;
            }
            let ipa = Self::ipa_of_page(self.next_table);
            self.next_table += 1;
            for i in 0..PAGE_SIZE / 8 {
                self.write(ipa + 8 * i, 0);
            }
            Some(ipa)
        }
        fn free(&mut self, _table: u64) {}
        fn read(&self, table: u64, index: usize) -> u64 {
            GuestMemory::read(self, table + 8 * index as u64)
        }
        fn write(&mut self, table: u64, index: usize, value: u64) {
            GuestMemory::write(self, table + 8 * index as u64, value)
        }
        fn barrier(&mut self) {
            crate::arch::dma_barrier();
        }
    }

    pub fn guest_stage1(p: &mut SmmuPlatform) -> TestResult {
        with_guest(p, run)
    }

    /// 4 KiB copies between two pages of the guest through both stages,
    /// median of many: `smmu::copy_4k_nested`.
    pub fn nested_copy_bench(p: &mut SmmuPlatform) -> TestResult {
        with_guest(p, |p, mem, s2, x| {
            let maps = [
                (VA, GuestMemory::ipa_of_page(DATA_A)),
                (VA + PAGE_SIZE, GuestMemory::ipa_of_page(DATA_B)),
            ];
            guest_s1(p, mem, s2, x, &maps)?;
            super::copy_4k_samples(p, x, "smmu::copy_4k_nested", VA)
        })
    }

    /// What a case does with the guest set up: its memory, the stage-2
    /// page table and the device.
    type GuestBody = fn(
        &mut SmmuPlatform,
        &mut GuestMemory,
        kernel::iommu::domain::DomainId,
        DeviceId,
    ) -> TestResult;

    /// The guest's RAM behind a stage-2 page table made from an IOAS as
    /// a nesting parent, the device attached to it, `body` run, and all
    /// of it taken down again.
    fn with_guest(p: &mut SmmuPlatform, body: GuestBody) -> TestResult {
        let f = p.iommu().hw.features;
        if !f.stage1 || !f.stage2 {
            return Err(TestError::skip("this SMMU lacks stage 1 or stage 2"));
        }
        if !f.nesting {
            return Err(TestError::skip("nesting is off on this SMMU (erratum)"));
        }
        if f.ssid_bits == 0 {
            return Err(TestError::skip("this SMMU has no substreams"));
        }
        let (x, _, _) = p.devices();
        let region =
            KernelRegion::new(GUEST_PAGES * PAGE_SIZE, PAGE_SIZE, p.iommu().hw.coherency())
                .map_err(|e| TestError::fail(format!("guest memory: {e}")))?;
        let mut mem = GuestMemory {
            region,
            next_table: FIRST_TABLE_PAGE,
        };
        // The guest's RAM as an I/O address space; its stage-2 page table
        // allocated as a nesting parent.
        let mut ioas = Ioas::new();
        let gpa = mem.pa(GUEST_IPA);
        ensure!(gpa != GUEST_IPA, "guest RAM at its own IPA");
        ioas.map(
            &mut [p.iommu()],
            GUEST_IPA,
            gpa,
            GUEST_PAGES * PAGE_SIZE,
            Prot::RW,
        )
        .map_err(core)?;
        let parent = HwptFlags {
            nest_parent: true,
            ..HwptFlags::default()
        };
        let s2 = ioas.hwpt_alloc(p.iommu(), parent).map_err(core)?;
        let result = (|| -> TestResult {
            ioas.attach_hwpt(p.iommu(), x, s2).map_err(core)?;
            body(p, &mut mem, s2, x)
        })();
        let iommu = p.iommu();
        let cleared = if iommu.hw.is_nested(x.0) {
            iommu.hw.clear_nested(x).map_err(hw)
        } else {
            Ok(())
        };
        let cleanup = cleared
            .and_then(|()| iommu.detach_device(x).map_err(core))
            .and_then(|()| ioas.release(iommu).map_err(core));
        result.and(cleanup)
    }

    /// The guest's stage 1 mapping each (VA, IPA) page of `maps`, its CD,
    /// the nested STE over `s2`, and the guest's CFGI_CD forwarded
    /// through its vIOMMU.
    fn guest_s1(
        p: &mut SmmuPlatform,
        mem: &mut GuestMemory,
        s2: kernel::iommu::domain::DomainId,
        x: DeviceId,
        maps: &[(u64, u64)],
    ) -> Result<(PageTable<ArmLpae>, Viommu), TestError> {
        let mut s1 = PageTable::new(ArmLpae::S1, mem).map_err(hw)?;
        for &(va, ipa) in maps {
            s1.map(mem, va, ipa, PAGE_SIZE, Prot::RW).map_err(hw)?;
        }
        let hwp = &p.iommu().hw;
        let cd = Cd::new(&CdConfig {
            asid: GUEST_ASID,
            ttb0: s1.root(),
            ias: 48,
            ips: hwp.oas_encoding(),
            mair: MAIR,
            walk: hwp.coherency(),
            httu: 0,
        });
        let cd_ipa = GuestMemory::ipa_of_page(CD_PAGE);
        for (i, w) in cd.0.iter().enumerate() {
            mem.write(cd_ipa + 8 * i as u64, *w);
        }
        crate::arch::dma_barrier();
        let s2ref = p.iommu().domain_ref(s2).map_err(core)?;
        let limits = Limits {
            asid_bits: p.iommu().hw.features.asid_bits,
            ssid_bits: p.iommu().hw.features.ssid_bits,
            va_bits: 48,
        };
        let mut viommu = Viommu::new(s2ref.tag as u16, &[x], limits);
        viommu.bind(GUEST_VSID, x).map_err(hw)?;
        p.iommu()
            .hw
            .set_nested(
                x,
                &s2ref,
                GuestS1 {
                    cd_table: cd_ipa,
                    s1cdmax: 0,
                    s1fmt: CdFmt::Linear,
                    s1dss: S1Dss::Substream0,
                },
            )
            .map_err(hw)?;
        // The guest's own CFGI_CD for its new CD, forwarded.
        viommu
            .invalidate(
                &mut p.iommu().hw,
                &[Request::ConfigByVsid {
                    vsid: GUEST_VSID,
                    ssid: None,
                }],
            )
            .map_err(hw)?;
        Ok((s1, viommu))
    }

    fn run(
        p: &mut SmmuPlatform,
        mem: &mut GuestMemory,
        s2: kernel::iommu::domain::DomainId,
        x: DeviceId,
    ) -> TestResult {
        let (data_a, data_b) = (
            GuestMemory::ipa_of_page(DATA_A),
            GuestMemory::ipa_of_page(DATA_B),
        );
        // The guest's stage 1: VA -> data A; VA_TO_HOLE -> an IPA stage 2
        // does not map.
        let (mut s1, viommu) = guest_s1(p, mem, s2, x, &[(VA, data_a), (VA_TO_HOLE, IPA_HOLE)])?;

        // Through both stages: VA -> IPA data A -> its physical page.
        let r = write_u64(p, x, VA, 0xa1, DmaTag::Untagged)?;
        ensure_eq!(r.status, DmaStatus::Success, "DMA through both stages");
        ensure_eq!(mem.read(data_a), 0xa1, "data A (PA {:#x})", mem.pa(data_a));

        // The guest remaps VA to data B. Without an invalidation the SMMU
        // keeps the combined translation it cached.
        let mut g = Gather::default();
        s1.unmap(mem, VA, PAGE_SIZE, &mut g).map_err(hw)?;
        s1.map(mem, VA, data_b, PAGE_SIZE, Prot::RW).map_err(hw)?;
        crate::arch::dma_barrier();
        let r = write_u64(p, x, VA, 0xb2, DmaTag::Untagged)?;
        ensure_eq!(r.status, DmaStatus::Success, "DMA after the guest's remap");
        ensure_eq!(
            (mem.read(data_a), mem.read(data_b)),
            (0xb2, 0),
            "before the forwarded invalidation: the stale page (A) written"
        );
        viommu
            .invalidate(
                &mut p.iommu().hw,
                &[Request::TlbByAddress {
                    asid: GUEST_ASID,
                    addr: VA,
                    pages: 1,
                    leaf: true,
                }],
            )
            .map_err(hw)?;
        let r = write_u64(p, x, VA, 0xc3, DmaTag::Untagged)?;
        ensure_eq!(r.status, DmaStatus::Success, "DMA after the invalidation");
        ensure_eq!(
            (mem.read(data_a), mem.read(data_b)),
            (0xb2, 0xc3),
            "after the forwarded invalidation: the new page (B) written"
        );

        // A request naming a stream the guest does not own: refused
        // whole, and not one command reaches the SMMU.
        let before = p.iommu().hw.command_counts();
        let refused = viommu.invalidate(
            &mut p.iommu().hw,
            &[
                Request::TlbByAsid { asid: GUEST_ASID },
                Request::ConfigByVsid {
                    vsid: GUEST_VSID + 1,
                    ssid: None,
                },
            ],
        );
        ensure_eq!(
            refused,
            Err(ViommuError::Refused(Refused {
                index: 1,
                why: Refusal::UnknownVsid(GUEST_VSID + 1)
            })),
            "a request for a vsid the guest does not own"
        );
        ensure_eq!(
            p.iommu().hw.command_counts(),
            before,
            "commands issued for a refused batch"
        );

        // Faults, with their stage.
        let _ = p.iommu().hw.take_staged_faults();
        let r = write_u64(p, x, VA_UNMAPPED, 1, DmaTag::Untagged)?;
        ensure_eq!(
            r.status,
            DmaStatus::WriteFault { addr: VA_UNMAPPED },
            "a VA the guest did not map"
        );
        let faults = p.iommu().hw.take_staged_faults();
        ensure!(
            faults.len() == 1
                && faults[0].fault.iova.0 == VA_UNMAPPED
                && faults[0].fault.reason == FaultReason::NotMapped
                && faults[0].stage == Some(FaultStage::Stage1),
            "stage-1 fault: expected one at {VA_UNMAPPED:#x} of stage 1, got {faults:x?}"
        );
        let r = write_u64(p, x, VA_TO_HOLE, 1, DmaTag::Untagged)?;
        ensure_eq!(
            r.status,
            DmaStatus::WriteFault { addr: VA_TO_HOLE },
            "a VA the guest mapped to an IPA stage 2 does not map"
        );
        let faults = p.iommu().hw.take_staged_faults();
        ensure!(
            faults.len() == 1
                && faults[0].fault.iova.0 == VA_TO_HOLE
                && faults[0].stage
                    == Some(FaultStage::Stage2 {
                        ipa: IPA_HOLE,
                        during: S2Access::Output
                    }),
            "stage-2 fault: expected one at {VA_TO_HOLE:#x} of stage 2 at IPA {IPA_HOLE:#x}, got {faults:x?}"
        );
        log::info!("nested: faults reported with their stage: {faults:x?}");
        Ok(())
    }
}
