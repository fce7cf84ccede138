//! What the boot path learned matches what QEMU was told.
use crate::platform;
use kernel::harness::{TestError, TestResult};
use kernel::{cmdline, ensure};

/// The RAM in the memory map adds up to the `-m` QEMU was given (passed by
/// qemu-run as `qemu.mem=`), less what the firmware keeps for itself.
pub fn memory_map_matches_qemu() -> TestResult {
    let boot = platform::get();
    let Some(given) = cmdline::get(&boot.cmdline, "qemu.mem") else {
        return Err(TestError::skip(
            "no qemu.mem= on the command line: not started by qemu-run",
        ));
    };
    let Some(expected) = cmdline::parse_size(given) else {
        return Err(TestError::fail(alloc::format!(
            "qemu.mem={given:?} is not a size"
        )));
    };
    ensure!(
        !boot.ram.is_empty(),
        "{} describes no RAM",
        boot.memory_source
    );
    let seen = kernel::mm::ranges::total(&boot.ram);
    if seen > expected || seen + boot.ram_slack < expected {
        return Err(TestError::mismatch(
            alloc::format!(
                "RAM in the {} does not match -m {given} (firmware may keep {} KiB)",
                boot.memory_source,
                boot.ram_slack >> 10
            ),
            alloc::format!("{expected:#x} bytes"),
            alloc::format!("{seen:#x} bytes in {} region(s)", boot.ram.len()),
        ));
    }
    // Ranges must not overlap: a map that double-counts could still add up.
    for (i, a) in boot.ram.iter().enumerate() {
        for b in &boot.ram[i + 1..] {
            ensure!(!a.overlaps(b), "RAM ranges {a} and {b} overlap");
        }
    }
    Ok(())
}
