//! PCI enumeration of every ECAM window discovery found. Bus numbers are
//! kept where firmware set them (q35) and assigned where nobody did (virt
//! booted with -kernel). BAR assignment and drivers come next.
use crate::discovery::Topology;
use alloc::vec::Vec;
use pci::enumerate::{enumerate, Policy, Topology as Bus};
use spin::Once;

static BUSES: Once<Vec<Bus>> = Once::new();

pub fn get() -> &'static [Bus] {
    BUSES.get().map_or(&[], |v| v.as_slice())
}

pub fn enumerate_all(t: &Topology) -> &'static [Bus] {
    BUSES.call_once(|| {
        let t0 = crate::arch::now_ns();
        let buses: Vec<Bus> = t
            .ecam
            .iter()
            .map(|w| {
                // MCFG's base is bus 0's; the accessor wants the first bus's.
                let base = w.base + (u64::from(w.start_bus) << 20);
                // SAFETY: the ECAM window the firmware described, mapped as
                // device memory by the arch code; only enumeration uses it now.
                let mut ecam =
                    unsafe { pci::ecam::Ecam::new(base as usize, w.start_bus..=w.end_bus) };
                enumerate(
                    &mut ecam,
                    w.segment,
                    w.start_bus..=w.end_bus,
                    Policy::default(),
                )
            })
            .collect();
        let us = (crate::arch::now_ns() - t0) / 1000;
        for b in &buses {
            log::info!(
                "pci segment {}: {} function(s), {} bridge(s), {} error(s) in {us} us",
                b.segment,
                b.functions.len(),
                b.bridges.len(),
                b.errors.len()
            );
            for f in &b.functions {
                log::info!(
                    "  {} {:04x}:{:04x} class {:06x}{}",
                    f.bdf,
                    f.vendor,
                    f.device,
                    f.class,
                    f.parent
                        .map(|p| alloc::format!(" behind {p}"))
                        .unwrap_or_default()
                );
            }
            for e in &b.errors {
                log::warn!("  error: {e}");
            }
        }
        buses
    })
}
