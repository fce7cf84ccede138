//! PCI core for the kernel: configuration-space access through ECAM,
//! depth-first enumeration with bus numbering, the capability walk
//! (standard and extended), BAR sizing, resource assignment from the host
//! bridge windows, and a tiny driver-claim model.
//!
//! Everything but [`ecam`] and [`msix`]'s table access is safe code over the [`ConfigSpace`] trait, so
//! it runs on the host against a fake configuration space in the tests.
//! Every walk over device-provided data is bounded: a bad function gives a
//! typed [`PciError`] and enumeration goes on with the rest of the bus.
#![no_std]
// `forbid` could not be relaxed for the MMIO modules, so `deny` it is:
// only `ecam` and `msix` (the vector table in BAR memory) allow unsafe code.
#![deny(unsafe_code)]

extern crate alloc;

pub mod assign;
pub mod bar;
pub mod caps;
pub mod config;
pub mod driver;
#[allow(unsafe_code)]
pub mod ecam;
pub mod enumerate;
pub mod error;
pub mod features;
pub mod msi;
#[allow(unsafe_code)]
pub mod msix;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

pub use assign::{assign, Window};
pub use bar::{size_bars, Bar, BarKind};
pub use caps::{capabilities, CapError, Capability, ExtCapIter, PortType, RawCap, StdCapIter};
pub use config::{Bdf, ConfigSpace};
pub use driver::{claim, release, Claimed, Driver};
pub use ecam::Ecam;
pub use enumerate::{
    enumerate, peer_root_buses, root_ranges, Bridge, BridgeKind, Function, Policy, Topology,
};
pub use error::PciError;
pub use features::{
    clear_pri_status, disable_ats, disable_pasid, disable_pri, enable_ats, enable_pasid,
    enable_pri, pri_status, PriStatus,
};
