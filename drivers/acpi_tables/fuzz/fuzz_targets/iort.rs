//! Any bytes: a parsed IORT or a typed error; whatever parses resolves and prints.
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
        }
        let _ = iort.resolve_named("\\_SB.DEV0", 0);
        let _ = format!("{iort}");
    }
});
