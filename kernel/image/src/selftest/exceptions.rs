//! The exception path.
use crate::arch;
use kernel::ensure_eq;
use kernel::harness::{TestError, TestResult};

/// A read of an unmapped address is caught by the exception path, reported
/// with the faulting address, and (because the test expects it) survived.
pub fn bad_access_caught() -> TestResult {
    let (addr, result) = arch::probe_unmapped();
    match result {
        Ok(v) => Err(TestError::mismatch(
            alloc::format!("read of unmapped address {addr:#x} did not fault"),
            "a synchronous fault",
            alloc::format!("value {v:#x}"),
        )),
        Err(f) => {
            ensure_eq!(f.kind, arch::BAD_ACCESS_KIND, "fault kind");
            ensure_eq!(f.addr, addr, "faulting address reported");
            log::debug!(
                "caught {} at {:#x}, syndrome {:#x}, pc {:#x}",
                f.kind,
                f.addr,
                f.syndrome,
                f.pc
            );
            Ok(())
        }
    }
}
