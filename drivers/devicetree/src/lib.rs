//! What an aarch64 kernel needs from a flattened devicetree, as typed
//! values: RAM and reserved memory, /chosen, the console (PL011, SBSA UART
//! or 16550), fw_cfg, the GIC (v3 with its redistributor regions and ITSes,
//! or v2 with GICv2m frames), the generic
//! timer's PPIs, PSCI, the CPUs, ECAM PCIe host bridges (windows, iommu-map,
//! msi-map) and SMMUv3s, plus a resolver from a PCI requester ID to its
//! IOMMU StreamID and MSI DeviceID.
//!
//! The `fdt` crate walks the tree, but only after [`blob`] has checked the
//! header, block bounds and every token, because `fdt` 0.1.5 panics on a
//! malformed blob. Properties are then decoded here, each bad one giving a
//! [`DtError`] naming the node and property; an absent optional fact gives
//! `None` and a [`Note`]. Nothing panics on any input.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod blob;
mod display;
pub mod error;
mod pci;
mod platform;
mod tree;

pub use blob::blob_size;
pub use error::{BlobError, DtError, NodeError};
pub use pci::{IdMap, IdMapEntry, IommuTarget, MsiTarget, PciSpace, PciWindow, PcieHost};
pub use platform::{
    stdout, Chosen, Cpu, EnableMethod, FwCfg, Gic, GicV2, GicV3, Its, Note, Platform, Psci,
    PsciMethod, ReservedMemory, SmmuIrqs, SmmuV3, Timer, Uart, UartKind, V2mFrame,
};

/// A range of CPU physical addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Region {
    pub base: u64,
    pub size: u64,
}

impl Region {
    /// One past the last byte (`reg` decoding rejects regions that overflow).
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
}

/// The first cell of a GIC interrupt specifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqKind {
    Spi,
    Ppi,
    ExtendedSpi,
    ExtendedPpi,
}

/// One GIC interrupt specifier (`#interrupt-cells = 3`): kind, number
/// within the kind, flags (trigger in bits 0-3; on GICv2 PPIs, a CPU mask
/// in bits 8-15).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupt {
    pub kind: IrqKind,
    pub number: u32,
    pub flags: u32,
}

impl Interrupt {
    /// The GIC interrupt ID (INTID) the distributor and CPU interface use.
    pub const fn intid(&self) -> u32 {
        // Saturating: the fields are public, parsing keeps numbers in range.
        self.number.saturating_add(match self.kind {
            IrqKind::Spi => 32,
            IrqKind::Ppi => 16,
            IrqKind::ExtendedSpi => 4096,
            IrqKind::ExtendedPpi => 1056,
        })
    }

    /// Edge-triggered (flags 1 or 2) rather than level (4 or 8).
    pub const fn is_edge(&self) -> bool {
        self.flags & 0x3 != 0
    }
}
