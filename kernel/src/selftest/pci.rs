//! PCI enumeration.
use crate::{pcie, platform};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use kernel::harness::{TestError, TestResult};
use kernel::{cmdline, ensure, ensure_eq};
use pci::enumerate::BridgeKind;

/// Enumeration found the devices the board's test configuration adds,
/// behind the kind of bridge the board file says, without errors, and bus
/// numbers nest (every bridge's range inside its parent's).
pub fn topology_matches_board() -> TestResult {
    let buses: Vec<_> = pcie::buses().collect();
    ensure!(!buses.is_empty(), "no PCI segment was enumerated");
    for b in &buses {
        ensure!(b.errors.is_empty(), "segment {}: {:?}", b.segment, b.errors);
        for br in &b.bridges {
            ensure!(
                br.secondary <= br.subordinate,
                "bridge {} buses {}..{}",
                br.bdf,
                br.secondary,
                br.subordinate
            );
            if let Some(parent) = br
                .parent
                .and_then(|p| b.bridges.iter().find(|x| x.bdf == p))
            {
                ensure!(
                    parent.secondary <= br.bdf.bus() && br.subordinate <= parent.subordinate,
                    "bridge {} ({}..{}) escapes its parent {} ({}..{})",
                    br.bdf,
                    br.secondary,
                    br.subordinate,
                    parent.bdf,
                    parent.secondary,
                    parent.subordinate
                );
            }
        }
    }
    let Some(want) = cmdline::get(&platform::get().cmdline, "expect.pci") else {
        return Err(TestError::skip(
            "no expect.pci= on the command line: not started by qemu-run",
        ));
    };
    let mut seen: Vec<String> = Vec::new();
    for b in &buses {
        for f in b.functions.iter().filter(|f| f.header_type == 0) {
            let Some(parent) = f.parent.and_then(|p| b.bridges.iter().find(|x| x.bdf == p)) else {
                continue;
            };
            let place = match parent.kind {
                BridgeKind::RootPort => "rootport",
                BridgeKind::SwitchDownstream => "switch",
                _ => "bridge",
            };
            seen.push(format!("{:04x}:{:04x}@{place}", f.vendor, f.device));
        }
    }
    seen.sort();
    let mut want: Vec<String> = want
        .split(',')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    want.sort();
    ensure_eq!(
        seen.join(","),
        want.join(","),
        "endpoints behind bridges (vendor:device@where)"
    );
    Ok(())
}
