//! The self-test suite: every test is registered once in [`tests`] and runs
//! on every board. The command line selects tests: `filter=PATTERNS` and
//! `exclude=PATTERNS` (comma-separated; globs with `*`/`?`, otherwise substrings).
//! Tests use only safe kernel interfaces.
#![forbid(unsafe_code)]
use crate::console::bail_out;
use crate::kprint;
use alloc::vec::Vec;
use kernel::cmdline;
use kernel::harness::{select, TapWriter, Test};

mod ats;
mod bench;
mod boot;
mod conformance;
mod discovery;
mod dma;
mod exceptions;
mod iommu;
mod irq;
mod mm;
mod pci;
mod smmuv3;
mod sva;
mod vtd;

/// A watch window opened now on this CPU: it closes once the window's
/// time has passed *and* this CPU saw its own ticks (see
/// `kernel::harness::Window`), so a guest starved by a busy host is not
/// failed for time it never ran.
pub struct Watch {
    window: kernel::harness::Window,
    t0: u64,
    own0: u64,
}

impl Watch {
    pub fn start(window: kernel::harness::Window) -> Self {
        Watch {
            window,
            t0: crate::arch::now_ns(),
            own0: crate::smp::ticks(crate::arch::cpu_index()),
        }
    }

    pub fn closed(&self) -> bool {
        let own = crate::smp::ticks(crate::arch::cpu_index()).saturating_sub(self.own0);
        self.window
            .closed(crate::arch::now_ns().saturating_sub(self.t0), own)
    }

    /// Nanoseconds since the window opened.
    pub fn elapsed_ns(&self) -> u64 {
        crate::arch::now_ns().saturating_sub(self.t0)
    }
}

/// `result` of a part of a test run on the IOMMU unit at `unit`, its
/// failure message naming the unit when the platform has several.
pub(crate) fn on_unit(
    unit: u64,
    result: kernel::harness::TestResult,
) -> kernel::harness::TestResult {
    match result {
        Err(kernel::harness::TestError::Fail {
            message,
            expected,
            seen,
        }) if crate::iommu::units().len() > 1 => Err(kernel::harness::TestError::Fail {
            message: alloc::format!("on {}: {message}", crate::iommu::unit_name(unit)),
            expected,
            seen,
        }),
        other => other,
    }
}

/// A registry entry whose TAP name is `AREA::FUNCTION`, for the function
/// `MODULE::FUNCTION`: a failure line names the function to grep for.
macro_rules! test {
    ($area:ident, $module:ident :: $name:ident) => {
        Test::new(
            concat!(stringify!($area), "::", stringify!($name)),
            $module::$name,
        )
    };
}

/// Every test, in the order they run; each runs on every board (SKIP
/// where the board cannot run it). A test is added here, once; the IOMMU
/// conformance cases come from the suite's own list.
pub fn tests() -> Vec<Test> {
    let mut v = alloc::vec![
        test!(boot, boot::memory_map_matches_qemu),
        test!(mm, mm::page_alloc_round_trip),
        test!(mm, mm::page_alloc_stays_in_free_ram),
        test!(mm, mm::dma_buffer_alignment),
        test!(mm, mm::heap_round_trip),
        test!(mm, mm::identity_map_follows_firmware),
        test!(irq, irq::timer_every_cpu),
        test!(irq, irq::started_cpus_take_interrupts),
        test!(irq, irq::msi_doorbell_delivers_once),
        test!(discovery, discovery::tables_parse_cleanly),
        test!(discovery, discovery::iommus_match_board),
        test!(discovery, discovery::ecam_matches_board),
        test!(discovery, discovery::console_matches_board),
        test!(discovery, discovery::pci_functions_routed),
        test!(discovery, discovery::devices_behind_each_unit),
        test!(discovery, discovery::rsdp_scan_agrees),
        test!(discovery, discovery::acpi_agrees_with_devicetree),
        test!(pci, pci::topology_matches_board),
        test!(pci, pci::bars_disjoint_and_inside_windows),
        test!(pci, pci::root_port_capabilities_complete),
        test!(pci, pci::edu_dma_round_trip_with_msi),
        test!(pci, pci::msix_masked_vector_waits_for_unmask),
        test!(dma, dma::operations_round_trip_untagged),
        test!(dma, dma::completion_interrupts_arrive_once),
        test!(dma, dma::inject_error_statuses),
        test!(dma, dma::queues_run_concurrently),
        test!(dma, dma::inject_queue_full_while_paused),
        test!(dma, dma::pasid_tagged_requests_without_translation),
        test!(iommu, iommu::smmuv3_identifies_itself),
        test!(iommu, iommu::vtd_identifies_itself),
        test!(iommu, iommu::smmuv3_coherency_from_firmware),
        test!(iommu, iommu::smmuv3_rmr_streams_reserved),
        test!(iommu, iommu::smmuv3_stage1_dma_inject_faults),
        test!(iommu, iommu::faults_come_from_their_unit_inject_faults),
        test!(iommu, iommu::one_bring_up_per_case),
        test!(iommu, iommu::devices_stay_claimed_across_cases),
    ];
    v.extend([
        test!(iommu, smmuv3::smmuv3_off_aborts_dma),
        test!(iommu, smmuv3::smmuv3_inject_fault_types),
        test!(iommu, smmuv3::smmuv3_inject_interrupts),
        test!(iommu, smmuv3::smmuv3_stream_tables_inject_faults),
        test!(iommu, smmuv3::smmuv3_cd_update_needs_cfgi),
        test!(iommu, smmuv3::smmuv3_inject_event_queue_overflow),
        test!(iommu, smmuv3::smmuv3_aux_domain_metadata),
        test!(iommu, smmuv3::smmuv3_nested_guest_stage1_inject_faults),
        test!(iommu, vtd::vtd_inject_fault_records),
        test!(iommu, vtd::vtd_inject_invalid_descriptor),
        test!(iommu, vtd::vtd_inject_fault_overflow),
        test!(iommu, vtd::vtd_inject_fault_event_msi),
        test!(iommu, vtd::vtd_pasid_entry_change_needs_invalidation),
        test!(iommu, vtd::vtd_aux_domain_metadata),
        test!(iommu, vtd::vtd_pasid_near_the_top),
        test!(iommu, ats::ats_device_tlb_hits_and_unmap_invalidates),
        test!(
            iommu,
            ats::iopf_page_made_present_on_demand_completes_the_dma
        ),
        test!(iommu, ats::iopf_queue_overflow_is_noticed_and_recovered),
        test!(iommu, sva::sva_cpu_and_device_share_an_address_space),
    ]);
    // After the driver tests: the suite ends with its PASID-hungriest
    // case, whose 256 address spaces QEMU's VT-d keeps and renders at
    // every later memory transaction.
    v.extend(conformance::tests());
    v.push(test!(exceptions, exceptions::bad_access_caught));
    v
}

/// Benchmarks, selected instead of the tests by `bench` on the command
/// line (`vclock::` ones under QEMU's virtual clock).
pub fn benches() -> Vec<Test> {
    alloc::vec![
        test!(irq, bench::edu_msi_latency),
        test!(dma, bench::copy_4k),
        test!(dma, bench::copy_1m),
        test!(smmu, smmuv3::copy_1m_stage1_and_bypass),
        test!(vtd, vtd::copy_1m_translated_and_pass_through),
        test!(sva, bench::copy_1m_sva_and_dma_domain),
        test!(smmu, smmuv3::copy_4k_nested_and_stage1),
        test!(ats, ats::bench_device_tlb_hit_and_miss),
        test!(iopf, ats::bench_page_request_round_trip),
        test!(vclock, bench::edu_dma_msi_round_trip),
    ]
}

/// Console sink for the TAP writer.
struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        kprint!("{s}");
        Ok(())
    }
}

/// Runs the selected tests; true when none failed.
pub fn run(cmdline_text: &str) -> bool {
    let filter = cmdline::get(cmdline_text, "filter");
    let exclude = cmdline::get(cmdline_text, "exclude");
    let bench = cmdline::get(cmdline_text, "bench");
    let (list, what) = if bench.is_some() {
        (benches(), "benchmarks")
    } else {
        (tests(), "tests")
    };
    let mut selected = select(&list, filter, exclude);
    if let Some(clock) = bench {
        // `bench=virtual`: QEMU runs with -icount sleep=off, for the
        // `vclock::` benchmarks only; anything else (`bench`, `bench=real`)
        // runs the others. qemu-run runs both passes, so an empty one is
        // no failure.
        let virtual_clock = clock == "virtual";
        selected.retain(|t| t.name.starts_with("vclock::") == virtual_clock);
        if selected.is_empty() {
            kprint!("TAP version 14\n1..0 # SKIP no benchmark for this clock is selected\n");
            return true;
        }
    }
    if selected.is_empty() {
        bail_out(format_args!(
            "no test matches filter {:?} exclude {:?} ({} {what} registered)",
            filter.unwrap_or(""),
            exclude.unwrap_or(""),
            list.len()
        ));
    }
    let mut tap = TapWriter::start(Console, selected.len());
    for test in selected {
        let start = crate::arch::now_ns();
        let result = (test.run)();
        // Per-test durations for finding slow tests (`log=debug`).
        log::debug!(
            "{} took {} us",
            test.name,
            (crate::arch::now_ns() - start) / 1000
        );
        tap.report(test.name, &result);
    }
    let s = tap.summary;
    kprint!(
        "# {} passed, {} failed, {} skipped\n",
        s.passed,
        s.failed,
        s.skipped
    );
    s.ok()
}
