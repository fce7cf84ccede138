//! Any bytes: a parsed IORT or a typed error; whatever parses resolves
//! (PCI routes, own MSIs, RMR reservations per SMMU) and prints.
#![no_main]
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    // Raw input first (header checks), then with the header made valid.
    let _ = acpi_tables::iort::parse(data);
    let Some(t) = common::as_table(data, b"IORT") else { return };
    if let Ok(iort) = acpi_tables::iort::parse(&t) {
        for rid in [0u32, 0x8, 0xff, 0x100, 0x8000, 0xffff] {
            let _ = iort.resolve_pci(0, rid);
            let _ = iort.resolve_pci(1, rid);
        }
        for n in &iort.nodes {
            let _ = iort.own_msi(n.offset);
            if let acpi_tables::iort::NodeKind::SmmuV3(s) = &n.kind {
                let _ = (s.cohacc_override(), s.httu_override());
            }
            // RMR nodes: what each SMMU must keep reaching (bounded: a
            // range can name 2^32 StreamIDs).
            for r in iort.reserved_for(n.offset) {
                let _ = (r.each_stream_id().take(64).count(), r.covers(0x10));
                assert!(r.ranges.iter().all(|m| m.length > 0 && m.base.checked_add(m.length - 1).is_some()));
            }
        }
        let _ = iort.resolve_named("\\_SB.DEV0", 0);
        let _ = format!("{iort}");
    }
});
