//! Any bytes as a GTDT and an FADT: parsed or a typed error.
#![no_main]
use acpi_tables::{fadt, gtdt};
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some(t) = common::as_table(data, b"GTDT") {
        if let Ok(g) = gtdt::parse(&t) {
            let _ = (g.nonsecure_el1.edge(), format!("{g}"));
        }
    }
    if let Some(t) = common::as_table(data, b"FACP") {
        if let Ok(f) = fadt::parse(&t) {
            let _ = (f.psci(), f.hw_reduced(), format!("{f}"));
        }
    }
});
