//! The table-loader script is hypervisor input: any bytes must give a
//! loaded set or a typed error, and whatever loads must walk safely.
#![no_main]
use fw_cfg::loader::{run, Zone};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|script: &[u8]| {
    let fetch = |name: &str| match name {
        "etc/acpi/rsdp" => Some(vec![0u8; 36]),
        "etc/acpi/tables" => Some(vec![0u8; 512]),
        "etc/tpm/log" => Some(Vec::new()),
        _ => None,
    };
    let mut next = 0x1000u64;
    let place = |_: &str, size: usize, align: u64, _: Zone| {
        let at = next.checked_next_multiple_of(align)?;
        next = at.checked_add(size as u64)?;
        Some(at)
    };
    if let Ok(loaded) = run(script, fetch, place) {
        if let Some(r) = loaded.find("etc/acpi/rsdp") {
            if let Ok(rsdp) = acpi_tables::sdt::parse_rsdp(&r.data) {
                let (addr, sig) = rsdp.root_table();
                if let Some(root) = loaded.read_rest(addr) {
                    let _ = acpi_tables::sdt::parse_root_table(root, sig);
                }
            }
        }
        let _ = loaded.read(0x1000, 64);
    }
});
