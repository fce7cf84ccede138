//! The self-test suite: every test is registered once in [`TESTS`] and runs
//! on every board. The command line selects tests: `filter=PATTERNS` and
//! `exclude=PATTERNS` (comma-separated; globs with `*`/`?`, otherwise substrings).
//! Tests use only safe kernel interfaces.
#![forbid(unsafe_code)]
use crate::console::bail_out;
use crate::kprint;
use kernel::cmdline;
use kernel::harness::{select, TapWriter, Test};

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
mod vtd;

pub static TESTS: &[Test] = &[
    Test::new(
        "boot::memory_map_matches_qemu",
        boot::memory_map_matches_qemu,
    ),
    Test::new("mm::page_alloc_round_trip", mm::page_alloc_round_trip),
    Test::new(
        "mm::page_alloc_stays_in_free_ram",
        mm::page_alloc_stays_in_free_ram,
    ),
    Test::new("mm::dma_buffer_alignment", mm::dma_buffer_alignment),
    Test::new("mm::heap_round_trip", mm::heap_round_trip),
    Test::new("irq::timer_every_cpu", irq::timer_every_cpu),
    Test::new(
        "irq::msi_doorbell_delivers_once",
        irq::msi_doorbell_delivers_once,
    ),
    Test::new(
        "discovery::tables_parse_cleanly",
        discovery::tables_parse_cleanly,
    ),
    Test::new(
        "discovery::iommus_match_board",
        discovery::iommus_match_board,
    ),
    Test::new(
        "discovery::ecam_matches_board",
        discovery::ecam_matches_board,
    ),
    Test::new(
        "discovery::console_matches_board",
        discovery::console_matches_board,
    ),
    Test::new(
        "discovery::pci_functions_routed",
        discovery::pci_functions_routed,
    ),
    Test::new("discovery::rsdp_scan_agrees", discovery::rsdp_scan_agrees),
    Test::new(
        "discovery::acpi_agrees_with_devicetree",
        discovery::acpi_agrees_with_devicetree,
    ),
    Test::new("pci::topology_matches_board", pci::topology_matches_board),
    Test::new(
        "pci::bars_disjoint_and_inside_windows",
        pci::bars_disjoint_and_inside_windows,
    ),
    Test::new(
        "pci::root_port_capabilities_complete",
        pci::root_port_capabilities_complete,
    ),
    Test::new(
        "pci::edu_dma_round_trip_with_msi",
        pci::edu_dma_round_trip_with_msi,
    ),
    Test::new(
        "pci::msix_masked_vector_waits_for_unmask",
        pci::msix_masked_vector_waits_for_unmask,
    ),
    Test::new(
        "dma::operations_round_trip_untagged",
        dma::operations_round_trip_untagged,
    ),
    Test::new(
        "dma::completion_interrupts_arrive_once",
        dma::completion_interrupts_arrive_once,
    ),
    Test::new("dma::inject_error_statuses", dma::inject_error_statuses),
    Test::new("dma::queues_run_concurrently", dma::queues_run_concurrently),
    Test::new(
        "dma::inject_queue_full_while_paused",
        dma::inject_queue_full_while_paused,
    ),
    Test::new(
        "dma::pasid_tagged_requests_without_translation",
        dma::pasid_tagged_requests_without_translation,
    ),
    Test::new(
        "iommu::smmuv3_identifies_itself",
        iommu::smmuv3_identifies_itself,
    ),
    Test::new("iommu::vtd_identifies_itself", iommu::vtd_identifies_itself),
    Test::new(
        "iommu::smmuv3_stage1_dma_inject_faults",
        iommu::smmuv3_stage1_dma,
    ),
    Test::new(
        "iommu::primary_dma_lands_and_unmapped_inject_faults",
        conformance::stage1::primary_dma_lands_and_unmapped_faults,
    ),
    Test::new(
        "iommu::read_only_mapping_inject_faults_on_write",
        conformance::stage1::read_only_mapping_faults_on_write,
    ),
    Test::new(
        "iommu::aux_domains_are_kept_apart",
        conformance::stage1::aux_domains_are_kept_apart,
    ),
    Test::new(
        "iommu::primary_on_one_aux_on_another_inject_faults",
        conformance::stage1::primary_on_one_aux_on_another,
    ),
    Test::new(
        "iommu::unmap_invalidates_and_remap_lands_anew_inject_faults",
        conformance::stage1::unmap_invalidates_and_remap_lands_anew,
    ),
    Test::new(
        "iommu::busy_while_aux_attached",
        conformance::stage1::busy_while_aux_attached,
    ),
    Test::new(
        "iommu::narrow_device_refuses_wide_pasid",
        conformance::stage1::narrow_device_refuses_wide_pasid,
    ),
    Test::new(
        "iommu::aux_get_pasid_and_pasid_reuse",
        conformance::stage1::aux_get_pasid_and_pasid_reuse,
    ),
    Test::new(
        "iommu::many_aux_domains",
        conformance::stage1::many_aux_domains,
    ),
    Test::new(
        "iommu::interrupts_with_aux_domains",
        conformance::stage1::interrupts_with_aux_domains,
    ),
    Test::new(
        "iommu::pasid_at_the_top_of_the_range",
        conformance::stage1::pasid_at_the_top_of_the_range,
    ),
    Test::new(
        "iommu::dma_domain_hands_out_iovas_inject_faults",
        conformance::stage1::dma_domain_hands_out_iovas,
    ),
    Test::new(
        "iommu::blocked_inject_faults_identity_passes",
        conformance::stage1::blocked_faults_identity_passes,
    ),
    Test::new(
        "iommu::blocks_and_dma_across_them",
        conformance::stage1::blocks_and_dma_across_them,
    ),
    Test::new(
        "iommu::bad_requests_are_refused",
        conformance::stage1::bad_requests_are_refused,
    ),
    Test::new(
        "iommu::randomized_soak_inject_faults",
        conformance::stage1::randomized_soak,
    ),
    Test::new(
        "iommu::nested::primary_dma_lands_and_unmapped_inject_faults",
        conformance::nested::primary_dma_lands_and_unmapped_faults,
    ),
    Test::new(
        "iommu::nested::read_only_mapping_inject_faults_on_write",
        conformance::nested::read_only_mapping_faults_on_write,
    ),
    Test::new(
        "iommu::nested::aux_domains_are_kept_apart",
        conformance::nested::aux_domains_are_kept_apart,
    ),
    Test::new(
        "iommu::nested::primary_on_one_aux_on_another_inject_faults",
        conformance::nested::primary_on_one_aux_on_another,
    ),
    Test::new(
        "iommu::nested::unmap_invalidates_and_remap_lands_anew_inject_faults",
        conformance::nested::unmap_invalidates_and_remap_lands_anew,
    ),
    Test::new(
        "iommu::nested::busy_while_aux_attached",
        conformance::nested::busy_while_aux_attached,
    ),
    Test::new(
        "iommu::nested::narrow_device_refuses_wide_pasid",
        conformance::nested::narrow_device_refuses_wide_pasid,
    ),
    Test::new(
        "iommu::nested::aux_get_pasid_and_pasid_reuse",
        conformance::nested::aux_get_pasid_and_pasid_reuse,
    ),
    Test::new(
        "iommu::nested::many_aux_domains",
        conformance::nested::many_aux_domains,
    ),
    Test::new(
        "iommu::nested::interrupts_with_aux_domains",
        conformance::nested::interrupts_with_aux_domains,
    ),
    Test::new(
        "iommu::nested::pasid_at_the_top_of_the_range",
        conformance::nested::pasid_at_the_top_of_the_range,
    ),
    Test::new(
        "iommu::nested::dma_domain_hands_out_iovas_inject_faults",
        conformance::nested::dma_domain_hands_out_iovas,
    ),
    Test::new(
        "iommu::nested::blocked_inject_faults_identity_passes",
        conformance::nested::blocked_faults_identity_passes,
    ),
    Test::new(
        "iommu::nested::blocks_and_dma_across_them",
        conformance::nested::blocks_and_dma_across_them,
    ),
    Test::new(
        "iommu::nested::bad_requests_are_refused",
        conformance::nested::bad_requests_are_refused,
    ),
    Test::new(
        "iommu::nested::randomized_soak_inject_faults",
        conformance::nested::randomized_soak,
    ),
    Test::new(
        "iommu::stage2::primary_dma_lands_and_unmapped_inject_faults",
        conformance::stage2::primary_dma_lands_and_unmapped_faults,
    ),
    Test::new(
        "iommu::stage2::read_only_mapping_inject_faults_on_write",
        conformance::stage2::read_only_mapping_faults_on_write,
    ),
    Test::new(
        "iommu::stage2::unmap_invalidates_and_remap_lands_anew_inject_faults",
        conformance::stage2::unmap_invalidates_and_remap_lands_anew,
    ),
    Test::new(
        "iommu::stage2::dma_domain_hands_out_iovas_inject_faults",
        conformance::stage2::dma_domain_hands_out_iovas,
    ),
    Test::new(
        "iommu::stage2::blocks_and_dma_across_them",
        conformance::stage2::blocks_and_dma_across_them,
    ),
    Test::new(
        "iommu::stage2::bad_requests_are_refused",
        conformance::stage2::bad_requests_are_refused,
    ),
    Test::new("iommu::smmuv3_inject_fault_types", smmuv3::fault_types),
    Test::new("iommu::smmuv3_inject_interrupts", smmuv3::interrupts),
    Test::new(
        "iommu::smmuv3_stream_tables_inject_faults",
        smmuv3::stream_tables,
    ),
    Test::new(
        "iommu::smmuv3_cd_update_needs_cfgi",
        smmuv3::cd_update_needs_cfgi,
    ),
    Test::new(
        "iommu::smmuv3_inject_event_queue_overflow",
        smmuv3::event_queue_overflow,
    ),
    Test::new(
        "iommu::smmuv3_aux_domain_metadata",
        smmuv3::aux_domain_metadata,
    ),
    Test::new("iommu::vtd_inject_fault_records", vtd::fault_records),
    Test::new(
        "iommu::vtd_inject_invalid_descriptor",
        vtd::invalid_descriptor,
    ),
    Test::new("iommu::vtd_inject_fault_overflow", vtd::fault_overflow),
    Test::new("iommu::vtd_inject_fault_event_msi", vtd::fault_event_msi),
    Test::new(
        "iommu::vtd_pasid_entry_change_needs_invalidation",
        vtd::pasid_entry_change_needs_invalidation,
    ),
    Test::new("iommu::vtd_aux_domain_metadata", vtd::aux_domain_metadata),
    Test::new("iommu::vtd_pasid_near_the_top", vtd::pasid_near_the_top),
    Test::new(
        "exceptions::bad_access_caught",
        exceptions::bad_access_caught,
    ),
];

/// Benchmarks, selected instead of the tests by `bench` on the command line.
pub static BENCHES: &[Test] = &[
    Test::new("irq::edu_msi_latency", bench::irq_edu_msi_latency),
    Test::new("dma::copy_4k", bench::dma_copy_4k),
    Test::new("dma::copy_1m", bench::dma_copy_1m),
    Test::new(
        "smmu::copy_1m_stage1_and_bypass",
        smmuv3::copy_1m_stage1_and_bypass,
    ),
    Test::new(
        "vtd::copy_1m_translated_and_pass_through",
        vtd::copy_1m_translated_and_pass_through,
    ),
    Test::new(
        "vclock::edu_dma_msi_round_trip",
        bench::vclock_edu_dma_msi_round_trip,
    ),
];

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
        (BENCHES, "benchmarks")
    } else {
        (TESTS, "tests")
    };
    let mut selected = select(list, filter, exclude);
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
        let result = (test.run)();
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
