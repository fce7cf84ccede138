//! Any bytes as a MADT, an MCFG and an SPCR: parsed or a typed error.
#![no_main]
use acpi_tables::{madt, mcfg, spcr};
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    if let Some(t) = common::as_table(data, b"APIC") {
        if let Ok(m) = madt::parse(&t) {
            let _ = (m.gicd(), m.redistributor_regions(), m.its().count(), m.cpus(), format!("{m}"));
        }
    }
    if let Some(t) = common::as_table(data, b"MCFG") {
        if let Ok(m) = mcfg::parse(&t) {
            let _ = format!("{m}");
        }
    }
    if let Some(t) = common::as_table(data, b"SPCR") {
        if let Ok(s) = spcr::parse(&t) {
            let _ = (s.console(), s.mmio_uart(), format!("{s}"));
        }
    }
});
