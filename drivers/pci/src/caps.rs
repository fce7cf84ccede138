//! The capability lists: standard (from 0x34, 8-bit pointers in
//! 0x40..0x100) and extended (from 0x100, 12-bit pointers). Both walks
//! remember the offsets they visited, so a loop is reported at the first
//! revisit, and they give up after the most hops the space could hold.
use crate::config::{Bdf, ConfigSpace, CAP_PTR, CONFIG_SPACE_SIZE, STATUS_CAP_LIST};
use alloc::vec::Vec;
use core::fmt;

pub const CAP_ID_PM: u8 = 0x01;
pub const CAP_ID_MSI: u8 = 0x05;
pub const CAP_ID_PCIE: u8 = 0x10;
pub const CAP_ID_MSIX: u8 = 0x11;
pub const EXT_CAP_ID_ACS: u16 = 0x000d;
pub const EXT_CAP_ID_ATS: u16 = 0x000f;
pub const EXT_CAP_ID_PRI: u16 = 0x0013;
pub const EXT_CAP_ID_PASID: u16 = 0x001b;

const STD_MAX_HOPS: usize = 48;
const EXT_START: u16 = 0x100;
const EXT_MAX_HOPS: usize = (4096 - 256) / 4;

/// A malformed capability list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapError {
    /// The list comes back to `offset`, already visited (or is longer than
    /// the space could hold).
    Loop { offset: u16 },
    /// A next pointer outside the capability area: below 0x40 or past
    /// 0xff for standard capabilities, below 0x100 for extended ones.
    OutOfBounds { pointer: u16 },
}

impl fmt::Display for CapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CapError::Loop { offset } => {
                write!(f, "capability list loops back to {offset:#x}")
            }
            CapError::OutOfBounds { pointer } => {
                write!(
                    f,
                    "capability pointer {pointer:#x} outside the capability area"
                )
            }
        }
    }
}

/// One list entry before decoding: its id and where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawCap {
    pub id: u16,
    pub offset: u16,
    /// From the extended list (16-bit ids) rather than the standard one.
    pub extended: bool,
}

/// A set of visited offsets (dword granular) over the 4 KiB space.
struct Visited([u64; 16]);

impl Visited {
    /// Marks `offset`; false if it was already marked.
    fn insert(&mut self, offset: u16) -> bool {
        let dw = usize::from(offset / 4);
        let (word, bit) = (dw / 64, dw % 64);
        let seen = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        !seen
    }
}

/// The standard capability list. Yields `Err` once and then stops.
pub struct StdCapIter<'a, C: ConfigSpace + ?Sized> {
    cfg: &'a C,
    bdf: Bdf,
    next: u16,
    hops: usize,
    visited: Visited,
    done: bool,
}

impl<'a, C: ConfigSpace + ?Sized> StdCapIter<'a, C> {
    pub fn new(cfg: &'a C, bdf: Bdf) -> Self {
        let has_list = cfg.read16(bdf, 0x06) & STATUS_CAP_LIST != 0 && cfg.read16(bdf, 0) != 0xffff;
        let next = if has_list {
            u16::from(cfg.read8(bdf, CAP_PTR) & !3)
        } else {
            0
        };
        StdCapIter {
            cfg,
            bdf,
            next,
            hops: 0,
            visited: Visited([0; 16]),
            done: false,
        }
    }
}

impl<C: ConfigSpace + ?Sized> Iterator for StdCapIter<'_, C> {
    type Item = Result<RawCap, CapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next == 0 {
            return None;
        }
        let offset = self.next;
        if !(0x40..0x100).contains(&offset) {
            self.done = true;
            return Some(Err(CapError::OutOfBounds { pointer: offset }));
        }
        self.hops += 1;
        if !self.visited.insert(offset) || self.hops > STD_MAX_HOPS {
            self.done = true;
            return Some(Err(CapError::Loop { offset }));
        }
        let header = self.cfg.read16(self.bdf, offset);
        self.next = (header >> 8) & 0xfc;
        Some(Ok(RawCap {
            id: header & 0xff,
            offset,
            extended: false,
        }))
    }
}

/// The extended capability list. Yields `Err` once and then stops.
pub struct ExtCapIter<'a, C: ConfigSpace + ?Sized> {
    cfg: &'a C,
    bdf: Bdf,
    next: u16,
    hops: usize,
    visited: Visited,
    done: bool,
}

impl<'a, C: ConfigSpace + ?Sized> ExtCapIter<'a, C> {
    /// Starts at 0x100. A header of 0 or all ones there means no list
    /// (conventional PCI, or a function without extended capabilities).
    pub fn new(cfg: &'a C, bdf: Bdf) -> Self {
        let first = cfg.read32(bdf, EXT_START);
        let next = if first == 0 || first == u32::MAX {
            0
        } else {
            EXT_START
        };
        ExtCapIter {
            cfg,
            bdf,
            next,
            hops: 0,
            visited: Visited([0; 16]),
            done: false,
        }
    }
}

impl<C: ConfigSpace + ?Sized> Iterator for ExtCapIter<'_, C> {
    type Item = Result<RawCap, CapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done || self.next == 0 {
            return None;
        }
        let offset = self.next;
        if !(EXT_START..CONFIG_SPACE_SIZE).contains(&offset) {
            self.done = true;
            return Some(Err(CapError::OutOfBounds { pointer: offset }));
        }
        self.hops += 1;
        if !self.visited.insert(offset) || self.hops > EXT_MAX_HOPS {
            self.done = true;
            return Some(Err(CapError::Loop { offset }));
        }
        let header = self.cfg.read32(self.bdf, offset);
        if header == u32::MAX {
            // The function went away, or the space is not really there.
            self.done = true;
            return None;
        }
        // Bits 1:0 of the next pointer are reserved: mask them.
        self.next = ((header >> 20) & 0xffc) as u16;
        Some(Ok(RawCap {
            id: (header & 0xffff) as u16,
            offset,
            extended: true,
        }))
    }
}

/// The PCI Express device/port type (PCIe capability bits 7:4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortType {
    Endpoint,
    LegacyEndpoint,
    RootPort,
    SwitchUpstream,
    SwitchDownstream,
    PcieToPciBridge,
    PciToPcieBridge,
    RootComplexIntegratedEndpoint,
    RootComplexEventCollector,
    Other(u8),
}

impl PortType {
    pub fn from_bits(v: u8) -> PortType {
        match v {
            0x0 => PortType::Endpoint,
            0x1 => PortType::LegacyEndpoint,
            0x4 => PortType::RootPort,
            0x5 => PortType::SwitchUpstream,
            0x6 => PortType::SwitchDownstream,
            0x7 => PortType::PcieToPciBridge,
            0x8 => PortType::PciToPcieBridge,
            0x9 => PortType::RootComplexIntegratedEndpoint,
            0xa => PortType::RootComplexEventCollector,
            v => PortType::Other(v),
        }
    }
}

/// A decoded capability. `offset` is where its header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    PowerManagement {
        offset: u16,
        /// PMC bits 2:0.
        version: u8,
        /// The whole PMC register.
        pmc: u16,
    },
    Msi {
        offset: u16,
        /// 64-bit message address capable.
        addr64: bool,
        per_vector_masking: bool,
        /// log2 of the vectors the function asks for (Multiple Message Capable).
        multiple_message_capable: u8,
        control: u16,
    },
    MsiX {
        offset: u16,
        /// Number of vectors (the field plus one).
        table_size: u16,
        table_bir: u8,
        table_offset: u32,
        pba_bir: u8,
        pba_offset: u32,
    },
    PciExpress {
        offset: u16,
        version: u8,
        port_type: PortType,
        slot_implemented: bool,
        /// Device Capabilities bits 2:0: 128 << n bytes.
        max_payload_supported: u8,
    },
    Pasid {
        offset: u16,
        /// PASIDs are this many bits wide (1..=20).
        max_pasid_width: u8,
        execute: bool,
        privileged: bool,
    },
    Ats {
        offset: u16,
        /// Invalidate Queue Depth; the field's 0 means 32.
        invalidate_queue_depth: u8,
        page_aligned_request: bool,
        global_invalidate: bool,
    },
    Pri {
        offset: u16,
        /// Outstanding Page Request Capacity.
        outstanding_requests: u32,
    },
    Acs {
        offset: u16,
        capability: u16,
        control: u16,
    },
    /// Any other id. An offset of 0x100 or more means an extended
    /// capability (16-bit id), else a standard one (8-bit id).
    Unknown { id: u16, offset: u16 },
}

impl Capability {
    pub fn offset(&self) -> u16 {
        match *self {
            Capability::PowerManagement { offset, .. }
            | Capability::Msi { offset, .. }
            | Capability::MsiX { offset, .. }
            | Capability::PciExpress { offset, .. }
            | Capability::Pasid { offset, .. }
            | Capability::Ats { offset, .. }
            | Capability::Pri { offset, .. }
            | Capability::Acs { offset, .. }
            | Capability::Unknown { offset, .. } => offset,
        }
    }

    /// Decodes the capability at `raw`.
    pub fn decode<C: ConfigSpace + ?Sized>(cfg: &C, bdf: Bdf, raw: RawCap) -> Capability {
        let o = raw.offset;
        if raw.extended {
            match raw.id {
                EXT_CAP_ID_PASID => {
                    let cap = cfg.read16(bdf, o + 4);
                    Capability::Pasid {
                        offset: o,
                        max_pasid_width: ((cap >> 8) & 0x1f) as u8,
                        execute: cap & (1 << 1) != 0,
                        privileged: cap & (1 << 2) != 0,
                    }
                }
                EXT_CAP_ID_ATS => {
                    let cap = cfg.read16(bdf, o + 4);
                    let depth = (cap & 0x1f) as u8;
                    Capability::Ats {
                        offset: o,
                        invalidate_queue_depth: if depth == 0 { 32 } else { depth },
                        page_aligned_request: cap & (1 << 5) != 0,
                        global_invalidate: cap & (1 << 6) != 0,
                    }
                }
                EXT_CAP_ID_PRI => Capability::Pri {
                    offset: o,
                    outstanding_requests: cfg.read32(bdf, o + 8),
                },
                EXT_CAP_ID_ACS => Capability::Acs {
                    offset: o,
                    capability: cfg.read16(bdf, o + 4),
                    control: cfg.read16(bdf, o + 6),
                },
                id => Capability::Unknown { id, offset: o },
            }
        } else {
            match raw.id as u8 {
                CAP_ID_PM => {
                    let pmc = cfg.read16(bdf, o + 2);
                    Capability::PowerManagement {
                        offset: o,
                        version: (pmc & 7) as u8,
                        pmc,
                    }
                }
                CAP_ID_MSI => {
                    let control = cfg.read16(bdf, o + 2);
                    Capability::Msi {
                        offset: o,
                        addr64: control & (1 << 7) != 0,
                        per_vector_masking: control & (1 << 8) != 0,
                        multiple_message_capable: ((control >> 1) & 7) as u8,
                        control,
                    }
                }
                CAP_ID_MSIX => {
                    let control = cfg.read16(bdf, o + 2);
                    let table = cfg.read32(bdf, o + 4);
                    let pba = cfg.read32(bdf, o + 8);
                    Capability::MsiX {
                        offset: o,
                        table_size: (control & 0x7ff) + 1,
                        table_bir: (table & 7) as u8,
                        table_offset: table & !7,
                        pba_bir: (pba & 7) as u8,
                        pba_offset: pba & !7,
                    }
                }
                CAP_ID_PCIE => {
                    let caps = cfg.read16(bdf, o + 2);
                    let devcap = cfg.read32(bdf, o + 4);
                    Capability::PciExpress {
                        offset: o,
                        version: (caps & 0xf) as u8,
                        port_type: PortType::from_bits(((caps >> 4) & 0xf) as u8),
                        slot_implemented: caps & (1 << 8) != 0,
                        max_payload_supported: (devcap & 7) as u8,
                    }
                }
                _ => Capability::Unknown {
                    id: raw.id,
                    offset: o,
                },
            }
        }
    }
}

/// Walks and decodes both lists. The extended list is read only for PCI
/// Express functions (with a PCIe capability). Each list stops at its
/// first fault; what was read before it is kept and the fault is returned
/// alongside (at most one per list).
pub fn capabilities<C: ConfigSpace + ?Sized>(
    cfg: &C,
    bdf: Bdf,
) -> (Vec<Capability>, Vec<CapError>) {
    let mut caps = Vec::new();
    let mut errors = Vec::new();
    for raw in StdCapIter::new(cfg, bdf) {
        match raw {
            Ok(raw) => caps.push(Capability::decode(cfg, bdf, raw)),
            Err(e) => errors.push(e),
        }
    }
    if caps
        .iter()
        .any(|c| matches!(c, Capability::PciExpress { .. }))
    {
        for raw in ExtCapIter::new(cfg, bdf) {
            match raw {
                Ok(raw) => caps.push(Capability::decode(cfg, bdf, raw)),
                Err(e) => errors.push(e),
            }
        }
    }
    (caps, errors)
}
