//! Any bytes: a parsed DMAR or a typed error; whatever parses resolves and prints.
#![no_main]
use acpi_tables::dmar::{self, Bdf};
use libfuzzer_sys::fuzz_target;
mod common;

fuzz_target!(|data: &[u8]| {
    let _ = dmar::parse(data);
    let Some(t) = common::as_table(data, b"DMAR") else { return };
    if let Ok(d) = dmar::parse(&t) {
        // A fake config space: every bridge's secondary bus is its bus + 1.
        let secondary = |_s: u16, bus: u8, _d: u8, _f: u8| bus.checked_add(1);
        let subordinate = |_s: u16, bus: u8, _d: u8, _f: u8| bus.checked_add(4);
        for (bus, device, function) in [(0, 0, 0), (0, 0x1f, 2), (1, 0, 0), (5, 3, 1)] {
            let bdf = Bdf { bus, device, function };
            let _ = d.drhd_for(0, bdf, &secondary, &subordinate);
            let _ = d.rmrrs_for(0, bdf, &secondary, &subordinate);
        }
        for drhd in d.drhds() {
            for s in &drhd.scopes {
                let _ = d.resolve_scope(drhd.segment, s, &secondary);
            }
        }
        let _ = format!("{d}");
    }
});
