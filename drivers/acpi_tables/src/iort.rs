//! IORT, the I/O Remapping Table (Arm DEN 0049, issues E.a to E.f): which
//! SMMU translates a PCI requester or platform device, under which StreamID,
//! and which GIC ITS group receives its MSIs, under which DeviceID.
//!
//! Nodes are kept with their offset in the table, because every reference
//! inside the table (ID mapping output references, PMCG node references) is
//! such an offset. [`parse`] checks that every reference lands on a node and
//! that the ID-mapping graph has no cycle, so [`Iort::resolve_pci`] only
//! meets a loop in a value built by hand; it still bounds its walk.
//!
//! Table revisions 0 to 7 are accepted (up to E.g): later issues only added
//! node types and node fields, and each addition is gated here on the
//! *node* revision or on the room the node leaves for it. A revision above 7
//! is refused, since a future layout change would otherwise be misread.
use crate::bytes::{ascii, Bytes};
use crate::error::{ErrorKind, TableError};
use crate::sdt::{self, SdtHeader, HEADER_LEN};
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

/// The highest table revision this parser reads.
pub const MAX_REVISION: u8 = 7;
/// Bound on the nodes a resolution walks through (RC → SMMU → ITS needs 3).
pub const MAX_DEPTH: usize = 8;

const SIG: [u8; 4] = *b"IORT";
/// Table header, node count, node array offset, reserved.
const IORT_HEADER_LEN: usize = HEADER_LEN + 12;
const NODE_HEADER_LEN: usize = 16;
const ID_MAPPING_LEN: usize = 20;

pub const NODE_ITS_GROUP: u8 = 0;
pub const NODE_NAMED_COMPONENT: u8 = 1;
pub const NODE_ROOT_COMPLEX: u8 = 2;
pub const NODE_SMMU_V1V2: u8 = 3;
pub const NODE_SMMU_V3: u8 = 4;
pub const NODE_PMCG: u8 = 5;
pub const NODE_RMR: u8 = 6;

/// ID mapping flag: the mapping is for one ID, the input range is ignored.
pub const ID_SINGLE_MAPPING: u32 = 1 << 0;

/// SMMUv3 flags.
pub const SMMU_V3_COHACC_OVERRIDE: u32 = 1 << 0;
pub const SMMU_V3_HTTU_OVERRIDE_MASK: u32 = 3 << 1;
pub const SMMU_V3_PROXIMITY_DOMAIN_VALID: u32 = 1 << 3;
/// E.e (SMMUv3 node revision 5): the DeviceID mapping index is valid.
pub const SMMU_V3_DEVICEID_VALID: u32 = 1 << 4;

/// RMR flags (E.d): the OS may remap the ranges (else they must stay one
/// to one), and the accesses are privileged; bits 2..=9 are the memory
/// attributes (0..=3 device memory, 5 normal write-back).
pub const RMR_REMAP_PERMITTED: u32 = 1 << 0;
pub const RMR_ACCESS_PRIVILEGED: u32 = 1 << 1;
/// The first table revision (E.d) whose RMR nodes are used: E.b's and
/// E.c's were superseded (E.c is deprecated), so Linux ignores them too.
pub const RMR_MIN_TABLE_REVISION: u8 = 5;

/// Root complex ATS attribute bits.
pub const RC_ATS_SUPPORTED: u32 = 1 << 0;
pub const RC_PRI_SUPPORTED: u32 = 1 << 1;
pub const RC_PASID_FWD_SUPPORTED: u32 = 1 << 2;
/// Root complex flags (E.f): PASID supported.
pub const RC_FLAG_PASID_SUPPORTED: u32 = 1 << 0;

/// The parsed table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Iort {
    pub header: SdtHeader,
    pub node_count: u32,
    pub node_offset: u32,
    /// In table order, so sorted by `offset`.
    pub nodes: Vec<Node>,
}

/// One node with the fields its header gives every type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Node {
    /// Offset in the table: what references name.
    pub offset: u32,
    pub node_type: u8,
    pub length: u16,
    pub revision: u8,
    /// Table revision 3 (E.b) and later; the field was reserved before.
    pub identifier: Option<u32>,
    /// Node-relative offset of the ID mapping array, as the table says.
    pub mapping_offset: u32,
    /// Empty for unknown node types (their layout is unknown).
    pub mappings: Vec<IdMapping>,
    pub kind: NodeKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct IdMapping {
    pub input_base: u32,
    /// Number of IDs in the range minus one, as the specification has it.
    pub id_count: u32,
    pub output_base: u32,
    /// Offset of the output node.
    pub output_reference: u32,
    pub flags: u32,
}

impl IdMapping {
    pub fn is_single(&self) -> bool {
        self.flags & ID_SINGLE_MAPPING != 0
    }

    /// Last input ID of the range (inclusive), widened so it cannot wrap.
    pub fn input_last(&self) -> u64 {
        u64::from(self.input_base) + u64::from(self.id_count)
    }

    pub fn covers(&self, id: u32) -> bool {
        id >= self.input_base && u64::from(id) <= self.input_last()
    }

    /// The output ID for `id` under a range mapping, if the range covers it
    /// and the output does not leave the 32-bit ID space.
    fn translate(&self, id: u32) -> Option<u32> {
        if !self.covers(id) {
            return None;
        }
        self.output_base.checked_add(id - self.input_base)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum NodeKind {
    ItsGroup(ItsGroup),
    NamedComponent(NamedComponent),
    RootComplex(RootComplex),
    SmmuV1V2(SmmuV1V2),
    SmmuV3(SmmuV3),
    Pmcg(Pmcg),
    Rmr(Rmr),
    /// A type this parser does not know: kept, not an error.
    Unknown {
        node_type: u8,
        length: u16,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ItsGroup {
    /// GIC ITS identifiers (the MADT GIC ITS structures' translation IDs).
    pub its_ids: Vec<u32>,
}

/// Memory access properties shared by named components and root complexes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MemoryAccess {
    /// 1: fully coherent.
    pub cache_coherency: u32,
    pub alloc_hints: u8,
    /// Bit 0 CPM, bit 1 DACS, bit 2 CANWBS.
    pub flags: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NamedComponent {
    /// Bit 0 stall supported, bits 1..=5 substream (PASID) bits.
    pub flags: u32,
    pub memory: MemoryAccess,
    pub address_size_limit: u8,
    /// Full path of the device object in the namespace, e.g. `\_SB.DEV0`.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RootComplex {
    pub memory: MemoryAccess,
    /// [`RC_ATS_SUPPORTED`], [`RC_PRI_SUPPORTED`], [`RC_PASID_FWD_SUPPORTED`].
    pub ats_attribute: u32,
    pub pci_segment: u32,
    /// Node revision 1 and later.
    pub address_size_limit: Option<u8>,
    /// Node revision 4 (E.d) and later; bits 0..=4 are the max PASID width.
    pub pasid_capabilities: Option<u16>,
    /// Node revision 4 and later *and* the node leaves room for it before its
    /// mapping array: E.d defined the node as 36 bytes, E.f added this field
    /// at 36, so the room tells the two apart.
    pub flags: Option<u32>,
}

impl RootComplex {
    pub fn max_pasid_width(&self) -> Option<u8> {
        self.pasid_capabilities.map(|p| (p & 0x1f) as u8)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SmmuInterrupt {
    pub gsiv: u32,
    /// Bit 0: edge triggered.
    pub flags: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SmmuV1V2 {
    pub base: u64,
    pub span: u64,
    pub model: u32,
    /// Bit 0 DVM supported, bit 1 coherent page table walk.
    pub flags: u32,
    /// NSgIrpt and NSgCfgIrpt.
    pub global_interrupts: [SmmuInterrupt; 2],
    pub context_interrupts: Vec<SmmuInterrupt>,
    pub pmu_interrupts: Vec<SmmuInterrupt>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SmmuV3 {
    pub base: u64,
    pub flags: u32,
    pub vatos_address: u64,
    /// 0 generic, 1 HiSilicon Hi161x, 2 Cavium CN99xx.
    pub model: u32,
    pub event_gsiv: u32,
    pub pri_gsiv: u32,
    pub gerr_gsiv: u32,
    pub sync_gsiv: u32,
    /// Node revision 1 and later.
    pub proximity_domain: Option<u32>,
    /// Node revision 1 and later; see [`Node::msi_mapping_index`].
    pub device_id_mapping_index: Option<u32>,
}

impl SmmuV3 {
    pub fn cohacc_override(&self) -> bool {
        self.flags & SMMU_V3_COHACC_OVERRIDE != 0
    }

    /// 0 none, 1 access flag, 2 access and dirty flags (as SMMU_IDR0.HTTU).
    pub fn httu_override(&self) -> u8 {
        ((self.flags & SMMU_V3_HTTU_OVERRIDE_MASK) >> 1) as u8
    }

    pub fn proximity_domain_valid(&self) -> bool {
        self.flags & SMMU_V3_PROXIMITY_DOMAIN_VALID != 0
    }

    pub fn device_id_mapping_valid(&self) -> bool {
        self.flags & SMMU_V3_DEVICEID_VALID != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Pmcg {
    pub page0_base: u64,
    pub overflow_gsiv: u32,
    /// Offset of the node this PMCG belongs to; `None` when the table says 0.
    pub node_reference: Option<u32>,
    pub page1_base: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Rmr {
    /// Bit 0 remapping permitted, bit 1 privileged access, bits 2..=9 access attributes.
    pub flags: u32,
    /// At least one; each non-empty and not wrapping (checked by [`parse`]).
    pub ranges: Vec<MemoryRange>,
}

impl Rmr {
    pub fn remap_permitted(&self) -> bool {
        self.flags & RMR_REMAP_PERMITTED != 0
    }

    pub fn privileged(&self) -> bool {
        self.flags & RMR_ACCESS_PRIVILEGED != 0
    }

    pub fn access_attributes(&self) -> u8 {
        (self.flags >> 2) as u8
    }
}

/// What one RMR node asks of one SMMU: its StreamIDs keep reaching the
/// ranges at their own addresses, from before translation is enabled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Reserved {
    /// Offset of the RMR node.
    pub rmr: u32,
    /// Inclusive StreamID ranges (first, last), in mapping order.
    pub stream_ids: Vec<(u32, u32)>,
    pub ranges: Vec<MemoryRange>,
    pub flags: u32,
}

impl Reserved {
    pub fn covers(&self, sid: u32) -> bool {
        self.stream_ids.iter().any(|&(a, b)| (a..=b).contains(&sid))
    }

    /// Every StreamID, each once per range that names it.
    pub fn each_stream_id(&self) -> impl Iterator<Item = u32> + '_ {
        self.stream_ids.iter().flat_map(|&(a, b)| a..=b)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MemoryRange {
    pub base: u64,
    pub length: u64,
}

/// Reads inside one node: every read is checked against the node's own
/// length (not just the table's), and errors name table offsets.
struct NodeBytes<'a> {
    b: Bytes<'a>,
    off: usize,
    len: usize,
}

impl NodeBytes<'_> {
    fn err(&self, at: usize, kind: ErrorKind) -> TableError {
        self.b.err(self.off.saturating_add(at), kind)
    }

    fn at(&self, at: usize, n: usize) -> Result<usize, TableError> {
        match at.checked_add(n) {
            // off + len <= table length, so this cannot overflow.
            Some(end) if end <= self.len => Ok(self.off + at),
            _ => Err(self.err(
                at,
                ErrorKind::Truncated {
                    need: n,
                    have: self.len.saturating_sub(at),
                },
            )),
        }
    }

    fn u8(&self, at: usize) -> Result<u8, TableError> {
        self.b.u8(self.at(at, 1)?)
    }

    fn u16(&self, at: usize) -> Result<u16, TableError> {
        self.b.u16(self.at(at, 2)?)
    }

    fn u32(&self, at: usize) -> Result<u32, TableError> {
        self.b.u32(self.at(at, 4)?)
    }

    fn u64(&self, at: usize) -> Result<u64, TableError> {
        self.b.u64(self.at(at, 8)?)
    }

    /// Where an array of `count` (field at `count.0`) elements of `elem`
    /// bytes at node offset `start` (field at `start.0`) begins, checked to
    /// lie inside the node after its `fixed` part. A start outside that span
    /// blames the offset field; a plausible start with too long an array
    /// blames the count.
    fn array(
        &self,
        count: (usize, u32),
        start: (usize, u32),
        elem: usize,
        fixed: usize,
    ) -> Result<usize, TableError> {
        let (n, s) = (count.1 as usize, start.1 as usize);
        if n == 0 {
            return Ok(s);
        }
        if s < fixed || s > self.len {
            return Err(self.err(
                start.0,
                ErrorKind::BadOffset {
                    offset: u64::from(start.1),
                },
            ));
        }
        match n.checked_mul(elem) {
            Some(size) if size <= self.len - s => Ok(s),
            _ => Err(self.err(
                count.0,
                ErrorKind::BadCount {
                    count: u64::from(count.1),
                },
            )),
        }
    }
}

/// Smallest length of a node of this type and revision: its header and
/// fixed fields.
fn fixed_len(node_type: u8, revision: u8) -> usize {
    match node_type {
        NODE_ITS_GROUP => 20,
        NODE_NAMED_COMPONENT => 29,
        NODE_ROOT_COMPLEX if revision == 0 => 32,
        NODE_ROOT_COMPLEX => 36,
        NODE_SMMU_V1V2 => 60,
        NODE_SMMU_V3 if revision == 0 => 60,
        NODE_SMMU_V3 => 68,
        NODE_PMCG => 40,
        NODE_RMR => 28,
        _ => NODE_HEADER_LEN,
    }
}

/// Parses an IORT: header, node array, every node, and the references
/// between nodes.
pub fn parse(data: &[u8]) -> Result<Iort, TableError> {
    let (header, b) = sdt::parse_table(data, Some(SIG))?;
    if header.revision > MAX_REVISION {
        return Err(b.err(
            8,
            ErrorKind::UnknownRevision {
                revision: header.revision,
            },
        ));
    }
    let node_count = b.u32(HEADER_LEN)?;
    let node_offset = b.u32(HEADER_LEN + 4)?;
    b.u32(HEADER_LEN + 8)?; // reserved, but part of the fixed table
    let mut off = node_offset as usize;
    if node_count > 0 && (off < IORT_HEADER_LEN || off > b.len()) {
        return Err(b.err(
            HEADER_LEN + 4,
            ErrorKind::BadOffset {
                offset: u64::from(node_offset),
            },
        ));
    }
    // Every node takes at least its header: a larger count is a lie, caught
    // before it sizes an allocation.
    if node_count as usize > b.len().saturating_sub(off) / NODE_HEADER_LEN {
        return Err(b.err(
            HEADER_LEN,
            ErrorKind::BadCount {
                count: u64::from(node_count),
            },
        ));
    }
    let mut nodes = Vec::with_capacity(node_count as usize);
    for _ in 0..node_count {
        if off >= b.len() {
            return Err(b.err(
                HEADER_LEN,
                ErrorKind::BadCount {
                    count: u64::from(node_count),
                },
            ));
        }
        let node = parse_node(b, off, header.revision)?;
        off += usize::from(node.length);
        nodes.push(node);
    }
    check_references(b, &nodes)?;
    Ok(Iort {
        header,
        node_count,
        node_offset,
        nodes,
    })
}

fn parse_node(b: Bytes<'_>, off: usize, table_revision: u8) -> Result<Node, TableError> {
    b.slice(off, NODE_HEADER_LEN)?;
    let node_type = b.u8(off)?;
    let length = b.u16(off + 1)?;
    let revision = b.u8(off + 3)?;
    let len = usize::from(length);
    let fixed = fixed_len(node_type, revision);
    if len < fixed {
        return Err(b.err(
            off + 1,
            ErrorKind::BadEntryLength {
                length: u64::from(length),
            },
        ));
    }
    // A node running past the table.
    b.slice(off, len)?;
    let n = NodeBytes { b, off, len };
    let identifier = if table_revision >= 3 {
        Some(n.u32(4)?)
    } else {
        None
    };
    let mapping_count = n.u32(8)?;
    let mapping_offset = n.u32(12)?;
    let known = node_type <= NODE_RMR;
    let mut mappings = Vec::new();
    if known {
        let start = n.array(
            (8, mapping_count),
            (12, mapping_offset),
            ID_MAPPING_LEN,
            fixed,
        )?;
        mappings.reserve_exact(mapping_count as usize);
        for i in 0..mapping_count as usize {
            let at = start + i * ID_MAPPING_LEN;
            mappings.push(IdMapping {
                input_base: n.u32(at)?,
                id_count: n.u32(at + 4)?,
                output_base: n.u32(at + 8)?,
                output_reference: n.u32(at + 12)?,
                flags: n.u32(at + 16)?,
            });
        }
    }
    // Where the fixed part may end: at the mapping array when there is one.
    let fixed_end = if mapping_count > 0 && known {
        mapping_offset as usize
    } else {
        len
    };
    let kind = match node_type {
        NODE_ITS_GROUP => {
            let count = n.u32(16)?;
            n.array((16, count), (16, 20), 4, 20)?;
            let its_ids = (0..count as usize)
                .map(|i| n.u32(20 + 4 * i))
                .collect::<Result<_, _>>()?;
            NodeKind::ItsGroup(ItsGroup { its_ids })
        }
        NODE_NAMED_COMPONENT => {
            let name_field = b.slice(off + 29, fixed_end - 29)?;
            let Some(nul) = name_field.iter().position(|&c| c == 0) else {
                return Err(n.err(
                    29,
                    ErrorKind::BadValue {
                        field: "device object name (no NUL)",
                        value: name_field.len() as u64,
                    },
                ));
            };
            NodeKind::NamedComponent(NamedComponent {
                flags: n.u32(16)?,
                memory: memory_access(&n, 20)?,
                address_size_limit: n.u8(28)?,
                name: ascii(&name_field[..nul]),
            })
        }
        NODE_ROOT_COMPLEX => NodeKind::RootComplex(RootComplex {
            memory: memory_access(&n, 16)?,
            ats_attribute: n.u32(24)?,
            pci_segment: n.u32(28)?,
            address_size_limit: (revision >= 1).then(|| n.u8(32)).transpose()?,
            pasid_capabilities: (revision >= 4).then(|| n.u16(33)).transpose()?,
            flags: (revision >= 4 && fixed_end >= 40)
                .then(|| n.u32(36))
                .transpose()?,
        }),
        NODE_SMMU_V1V2 => {
            let global = n.array((40, 1), (40, n.u32(40)?), 16, 60)?;
            let irqs = |count_at: usize| -> Result<Vec<SmmuInterrupt>, TableError> {
                let count = n.u32(count_at)?;
                let start = n.array(
                    (count_at, count),
                    (count_at + 4, n.u32(count_at + 4)?),
                    8,
                    60,
                )?;
                (0..count as usize)
                    .map(|i| smmu_interrupt(&n, start + 8 * i))
                    .collect()
            };
            NodeKind::SmmuV1V2(SmmuV1V2 {
                base: n.u64(16)?,
                span: n.u64(24)?,
                model: n.u32(32)?,
                flags: n.u32(36)?,
                global_interrupts: [smmu_interrupt(&n, global)?, smmu_interrupt(&n, global + 8)?],
                context_interrupts: irqs(44)?,
                pmu_interrupts: irqs(52)?,
            })
        }
        NODE_SMMU_V3 => NodeKind::SmmuV3(SmmuV3 {
            base: n.u64(16)?,
            flags: n.u32(24)?,
            vatos_address: n.u64(32)?,
            model: n.u32(40)?,
            event_gsiv: n.u32(44)?,
            pri_gsiv: n.u32(48)?,
            gerr_gsiv: n.u32(52)?,
            sync_gsiv: n.u32(56)?,
            proximity_domain: (revision >= 1).then(|| n.u32(60)).transpose()?,
            device_id_mapping_index: (revision >= 1).then(|| n.u32(64)).transpose()?,
        }),
        NODE_PMCG => {
            let reference = n.u32(28)?;
            NodeKind::Pmcg(Pmcg {
                page0_base: n.u64(16)?,
                overflow_gsiv: n.u32(24)?,
                node_reference: (reference != 0).then_some(reference),
                page1_base: n.u64(32)?,
            })
        }
        NODE_RMR => {
            // An RMR names its StreamIDs only through ID mappings, and
            // reserves at least one range: without either it says nothing
            // a driver could honour.
            if mapping_count == 0 {
                return Err(n.err(
                    8,
                    ErrorKind::BadValue {
                        field: "RMR ID mapping count",
                        value: 0,
                    },
                ));
            }
            for (i, m) in mappings.iter().enumerate() {
                if u64::from(m.output_base) + u64::from(m.id_count) > u64::from(u32::MAX) {
                    return Err(n.err(
                        mapping_offset as usize + i * ID_MAPPING_LEN + 8,
                        ErrorKind::BadValue {
                            field: "RMR StreamID range (wraps)",
                            value: u64::from(m.output_base),
                        },
                    ));
                }
            }
            let count = n.u32(20)?;
            if count == 0 {
                return Err(n.err(
                    20,
                    ErrorKind::BadValue {
                        field: "RMR memory range count",
                        value: 0,
                    },
                ));
            }
            let start = n.array((20, count), (24, n.u32(24)?), 20, 28)?;
            let ranges = (0..count as usize)
                .map(|i| {
                    let at = start + 20 * i;
                    let range = MemoryRange {
                        base: n.u64(at)?,
                        length: n.u64(at + 8)?,
                    };
                    if range.length == 0 {
                        return Err(n.err(
                            at + 8,
                            ErrorKind::BadValue {
                                field: "RMR range length",
                                value: 0,
                            },
                        ));
                    }
                    if range.base.checked_add(range.length - 1).is_none() {
                        return Err(n.err(
                            at,
                            ErrorKind::BadValue {
                                field: "RMR range base (base + length wraps)",
                                value: range.base,
                            },
                        ));
                    }
                    Ok(range)
                })
                .collect::<Result<_, TableError>>()?;
            NodeKind::Rmr(Rmr {
                flags: n.u32(16)?,
                ranges,
            })
        }
        _ => NodeKind::Unknown { node_type, length },
    };
    Ok(Node {
        offset: off as u32, // the table length is a u32
        node_type,
        length,
        revision,
        identifier,
        mapping_offset,
        mappings,
        kind,
    })
}

fn memory_access(n: &NodeBytes<'_>, at: usize) -> Result<MemoryAccess, TableError> {
    Ok(MemoryAccess {
        cache_coherency: n.u32(at)?,
        alloc_hints: n.u8(at + 4)?,
        flags: n.u8(at + 7)?,
    })
}

fn smmu_interrupt(n: &NodeBytes<'_>, at: usize) -> Result<SmmuInterrupt, TableError> {
    Ok(SmmuInterrupt {
        gsiv: n.u32(at)?,
        flags: n.u32(at + 4)?,
    })
}

fn node_index(nodes: &[Node], offset: u32) -> Option<usize> {
    nodes.binary_search_by_key(&offset, |n| n.offset).ok()
}

/// Table offset of mapping `i`'s output reference field in `node`.
fn reference_field(node: &Node, i: usize) -> usize {
    (node.offset as usize)
        .saturating_add(node.mapping_offset as usize)
        .saturating_add(i.saturating_mul(ID_MAPPING_LEN))
        .saturating_add(12)
}

/// Every reference names a node, and the ID-mapping graph is acyclic
/// (Kahn's algorithm: iterative, linear, no recursion).
fn check_references(b: Bytes<'_>, nodes: &[Node]) -> Result<(), TableError> {
    let mut indegree = alloc::vec![0usize; nodes.len()];
    for node in nodes {
        for (i, m) in node.mappings.iter().enumerate() {
            let Some(j) = node_index(nodes, m.output_reference) else {
                return Err(b.err(
                    reference_field(node, i),
                    ErrorKind::DanglingReference {
                        offset: u64::from(m.output_reference),
                    },
                ));
            };
            if matches!(node.kind, NodeKind::Rmr(_))
                && !matches!(nodes[j].kind, NodeKind::SmmuV3(_) | NodeKind::SmmuV1V2(_))
            {
                return Err(b.err(
                    reference_field(node, i),
                    ErrorKind::BadValue {
                        field: "RMR ID mapping output (not an SMMU node)",
                        value: u64::from(m.output_reference),
                    },
                ));
            }
            indegree[j] += 1;
        }
        if let NodeKind::Pmcg(Pmcg {
            node_reference: Some(r),
            ..
        }) = node.kind
        {
            if node_index(nodes, r).is_none() {
                return Err(b.err(
                    node.offset as usize + 28,
                    ErrorKind::DanglingReference {
                        offset: u64::from(r),
                    },
                ));
            }
        }
    }
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for m in &nodes[i].mappings {
            if let Some(j) = node_index(nodes, m.output_reference) {
                indegree[j] -= 1;
                if indegree[j] == 0 {
                    ready.push(j);
                }
            }
        }
    }
    if done < nodes.len() {
        // A node on, or fed by, a cycle.
        let stuck = nodes
            .iter()
            .zip(&indegree)
            .find(|(_, &d)| d > 0)
            .map_or(0, |(n, _)| n.offset as usize);
        return Err(b.err(stuck, ErrorKind::ReferenceLoop { depth: nodes.len() }));
    }
    Ok(())
}

impl Node {
    /// Which mapping carries this node's own MSIs (SMMUv3 and PMCG), and so
    /// is not used to translate the IDs of the devices behind it. As Linux
    /// reads it: for an SMMUv3 node before revision 5 (E.e) the index is
    /// valid unless all four interrupts are wired GSIVs, from revision 5 only
    /// with [`SMMU_V3_DEVICEID_VALID`]; a PMCG uses mapping 0 when it has no
    /// overflow GSIV. An index past the mappings counts as none.
    pub fn msi_mapping_index(&self) -> Option<usize> {
        let index = match &self.kind {
            NodeKind::SmmuV3(s) => {
                let valid = if self.revision < 5 {
                    [s.event_gsiv, s.pri_gsiv, s.gerr_gsiv, s.sync_gsiv].contains(&0)
                } else {
                    s.device_id_mapping_valid()
                };
                if !valid {
                    return None;
                }
                s.device_id_mapping_index? as usize
            }
            NodeKind::Pmcg(p) if p.overflow_gsiv == 0 => 0,
            _ => return None,
        };
        (index < self.mappings.len()).then_some(index)
    }

    /// Maps an input ID to (output ID, output node offset). A single mapping
    /// applies to any input, but only in the nodes devices sit behind (root
    /// complexes, named components); elsewhere it can only describe the
    /// node's own ID and is skipped, as Linux does.
    pub fn map_id(&self, id: u32) -> Option<(u32, u32)> {
        let own = self.msi_mapping_index();
        let device = matches!(
            self.kind,
            NodeKind::RootComplex(_) | NodeKind::NamedComponent(_)
        );
        self.mappings
            .iter()
            .enumerate()
            .filter(|&(i, _)| Some(i) != own)
            .find_map(|(_, m)| {
                if m.is_single() {
                    device.then_some((m.output_base, m.output_reference))
                } else {
                    m.translate(id).map(|out| (out, m.output_reference))
                }
            })
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            NodeKind::ItsGroup(_) => "ITS group",
            NodeKind::NamedComponent(_) => "named component",
            NodeKind::RootComplex(_) => "root complex",
            NodeKind::SmmuV1V2(_) => "SMMUv1/v2",
            NodeKind::SmmuV3(_) => "SMMUv3",
            NodeKind::Pmcg(_) => "PMCG",
            NodeKind::Rmr(_) => "RMR",
            NodeKind::Unknown { .. } => "unknown",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub enum SmmuKind {
    V1V2,
    V3,
}

/// The SMMU that translates a device's DMA, and the StreamID it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct SmmuTarget {
    pub node: u32,
    pub kind: SmmuKind,
    pub base: u64,
    pub stream_id: u32,
}

/// The ITS group that receives a device's MSIs, and the DeviceID they carry.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MsiTarget {
    pub its_group: u32,
    pub its_ids: Vec<u32>,
    pub device_id: u32,
}

/// Where a device's requests go. `smmu: None` means the requests bypass any
/// SMMU; `msi: None` means the chain ends without an ITS group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Route {
    /// Offset of the root complex or named component the walk started at.
    pub origin: u32,
    /// The RID (PCI) or the input ID (named component).
    pub input_id: u32,
    pub smmu: Option<SmmuTarget>,
    pub msi: Option<MsiTarget>,
}

pub type PciRoute = Route;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    NoRootComplex {
        segment: u16,
    },
    NoNamedComponent,
    /// The caller named an offset where no suitable node starts.
    NoSuchNode {
        offset: u32,
    },
    /// No mapping of `node` covers `id`.
    NoMapping {
        node: u32,
        id: u32,
    },
    /// The walk went through more than [`MAX_DEPTH`] nodes: a loop.
    DepthExceeded {
        depth: usize,
    },
    DanglingReference {
        node: u32,
        reference: u32,
    },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ResolveError::NoRootComplex { segment } => {
                write!(f, "IORT: no root complex for PCI segment {segment:#x}")
            }
            ResolveError::NoNamedComponent => write!(f, "IORT: no named component of that name"),
            ResolveError::NoSuchNode { offset } => {
                write!(f, "IORT: no SMMUv3 or PMCG node at {offset:#x}")
            }
            ResolveError::NoMapping { node, id } => {
                write!(f, "IORT: no ID mapping of node {node:#x} covers ID {id:#x}")
            }
            ResolveError::DepthExceeded { depth } => {
                write!(f, "IORT: ID mappings loop or nest deeper than {depth}")
            }
            ResolveError::DanglingReference { node, reference } => write!(
                f,
                "IORT: node {node:#x} references {reference:#x}, where no node starts"
            ),
        }
    }
}

impl Iort {
    pub fn node_at(&self, offset: u32) -> Option<&Node> {
        node_index(&self.nodes, offset).map(|i| &self.nodes[i])
    }

    /// Follows `id` from `start` through the ID mappings: the first SMMU met
    /// is the translating one, an ITS group ends the walk, as does a node
    /// without mappings.
    fn walk(&self, start: &Node, id: u32) -> Result<Route, ResolveError> {
        let mut route = Route {
            origin: start.offset,
            input_id: id,
            smmu: None,
            msi: None,
        };
        let (mut node, mut id) = (start, id);
        for _ in 0..MAX_DEPTH {
            let smmu = match &node.kind {
                NodeKind::ItsGroup(g) => {
                    route.msi = Some(MsiTarget {
                        its_group: node.offset,
                        its_ids: g.its_ids.clone(),
                        device_id: id,
                    });
                    return Ok(route);
                }
                NodeKind::SmmuV3(s) => Some((SmmuKind::V3, s.base)),
                NodeKind::SmmuV1V2(s) => Some((SmmuKind::V1V2, s.base)),
                _ => None,
            };
            if let (None, Some((kind, base))) = (&route.smmu, smmu) {
                route.smmu = Some(SmmuTarget {
                    node: node.offset,
                    kind,
                    base,
                    stream_id: id,
                });
            }
            if node.mappings.is_empty() {
                return Ok(route);
            }
            let (out, reference) = node.map_id(id).ok_or(ResolveError::NoMapping {
                node: node.offset,
                id,
            })?;
            node = self
                .node_at(reference)
                .ok_or(ResolveError::DanglingReference {
                    node: node.offset,
                    reference,
                })?;
            id = out;
        }
        Err(ResolveError::DepthExceeded { depth: MAX_DEPTH })
    }

    /// The SMMU (and StreamID) and ITS group (and DeviceID) of the PCI
    /// function with requester ID `rid` in `segment`.
    pub fn resolve_pci(&self, segment: u16, rid: u32) -> Result<PciRoute, ResolveError> {
        let rc = self
            .nodes
            .iter()
            .find(|n| matches!(&n.kind, NodeKind::RootComplex(rc) if rc.pci_segment == u32::from(segment)))
            .ok_or(ResolveError::NoRootComplex { segment })?;
        self.walk(rc, rid)
    }

    /// The SMMUv3 that translates the DMA of the PCI function with
    /// requester ID `rid` in `segment` (its register base) and the
    /// StreamID it arrives with: where the root complex's ID mappings
    /// lead. `None` when they lead to no SMMUv3 (straight to an ITS, as
    /// QEMU maps a root bus without an SMMU, or to an SMMUv1/v2) or
    /// nowhere.
    pub fn smmuv3_route(&self, segment: u16, rid: u32) -> Option<(u64, u32)> {
        let smmu = self.resolve_pci(segment, rid).ok()?.smmu?;
        (smmu.kind == SmmuKind::V3).then_some((smmu.base, smmu.stream_id))
    }

    /// As [`Iort::resolve_pci`] for the named component whose device object
    /// is `name`, with input ID `id` (ignored by single mappings).
    pub fn resolve_named(&self, name: &str, id: u32) -> Result<Route, ResolveError> {
        let nc = self
            .nodes
            .iter()
            .find(|n| matches!(&n.kind, NodeKind::NamedComponent(c) if c.name == name))
            .ok_or(ResolveError::NoNamedComponent)?;
        self.walk(nc, id)
    }

    /// What the RMR nodes ask of the SMMU node at `smmu`: for each RMR
    /// with ID mappings into it, those StreamIDs and the ranges. Empty for
    /// tables before [`RMR_MIN_TABLE_REVISION`] (whose RMR layout is not
    /// E.d's), as Linux's `iort_find_rmrs` has it. Mappings output
    /// StreamIDs directly (the flags' single-mapping bit aside: the range
    /// is `output_base` to `output_base + id_count`).
    pub fn reserved_for(&self, smmu: u32) -> Vec<Reserved> {
        if self.header.revision < RMR_MIN_TABLE_REVISION {
            return Vec::new();
        }
        self.nodes
            .iter()
            .filter_map(|n| {
                let NodeKind::Rmr(rmr) = &n.kind else {
                    return None;
                };
                let stream_ids: Vec<(u32, u32)> = n
                    .mappings
                    .iter()
                    .filter(|m| m.output_reference == smmu)
                    // `parse` checked that the range does not wrap.
                    .map(|m| (m.output_base, m.output_base.saturating_add(m.id_count)))
                    .collect();
                (!stream_ids.is_empty()).then(|| Reserved {
                    rmr: n.offset,
                    stream_ids,
                    ranges: rmr.ranges.clone(),
                    flags: rmr.flags,
                })
            })
            .collect()
    }

    /// Where the SMMUv3 or PMCG node at `offset` sends its own MSIs (through
    /// [`Node::msi_mapping_index`]); `None` when it uses wired interrupts.
    pub fn own_msi(&self, offset: u32) -> Result<Option<MsiTarget>, ResolveError> {
        let node = self
            .node_at(offset)
            .filter(|n| matches!(n.kind, NodeKind::SmmuV3(_) | NodeKind::Pmcg(_)))
            .ok_or(ResolveError::NoSuchNode { offset })?;
        let Some(m) = node.msi_mapping_index().map(|i| node.mappings[i]) else {
            return Ok(None);
        };
        // The mapping names one ID, the node's own, whatever its input range.
        let target = self
            .node_at(m.output_reference)
            .ok_or(ResolveError::DanglingReference {
                node: offset,
                reference: m.output_reference,
            })?;
        Ok(self.walk(target, m.output_base)?.msi)
    }
}

impl fmt::Display for Iort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = &self.header;
        writeln!(
            f,
            "IORT rev {} oem {:?} {:?}, {} nodes at {:#x}",
            h.revision, h.oem_id, h.oem_table_id, self.node_count, self.node_offset
        )?;
        for n in &self.nodes {
            write!(
                f,
                "node @{:#x}: {} (type {}), rev {}, length {:#x}",
                n.offset,
                n.type_name(),
                n.node_type,
                n.revision,
                n.length
            )?;
            if let Some(id) = n.identifier {
                write!(f, ", id {id:#x}")?;
            }
            writeln!(f)?;
            fmt_kind(f, &n.kind)?;
            let own = n.msi_mapping_index();
            for (i, m) in n.mappings.iter().enumerate() {
                write!(
                    f,
                    "  input {:#x}..{:#x} -> output {:#x} @node {:#x}",
                    m.input_base,
                    m.input_last(),
                    m.output_base,
                    m.output_reference
                )?;
                if m.is_single() {
                    write!(f, " [single]")?;
                }
                if own == Some(i) {
                    write!(f, " [own MSI]")?;
                }
                writeln!(f)?;
            }
        }
        Ok(())
    }
}

fn fmt_memory(f: &mut fmt::Formatter<'_>, m: &MemoryAccess) -> fmt::Result {
    write!(
        f,
        "cache coherency {:#x}, alloc hints {:#x}, memory flags {:#x}",
        m.cache_coherency, m.alloc_hints, m.flags
    )
}

fn fmt_kind(f: &mut fmt::Formatter<'_>, kind: &NodeKind) -> fmt::Result {
    match kind {
        NodeKind::ItsGroup(g) => {
            write!(f, "  ITS ids:")?;
            for id in &g.its_ids {
                write!(f, " {id:#x}")?;
            }
            writeln!(f)
        }
        NodeKind::NamedComponent(c) => {
            write!(f, "  name {:?}, flags {:#x}, ", c.name, c.flags)?;
            fmt_memory(f, &c.memory)?;
            writeln!(f, ", address size limit {}", c.address_size_limit)
        }
        NodeKind::RootComplex(rc) => {
            write!(
                f,
                "  segment {:#x}, ATS attribute {:#x}, ",
                rc.pci_segment, rc.ats_attribute
            )?;
            fmt_memory(f, &rc.memory)?;
            writeln!(f)?;
            if let Some(limit) = rc.address_size_limit {
                write!(f, "  address size limit {limit}")?;
            }
            if let Some(p) = rc.pasid_capabilities {
                write!(f, ", PASID capabilities {p:#x}")?;
            }
            if let Some(fl) = rc.flags {
                write!(f, ", flags {fl:#x}")?;
            }
            writeln!(f)
        }
        NodeKind::SmmuV1V2(s) => {
            writeln!(
                f,
                "  base {:#x}, span {:#x}, model {:#x}, flags {:#x}",
                s.base, s.span, s.model, s.flags
            )?;
            let [g, c] = s.global_interrupts;
            writeln!(
                f,
                "  global GSIV {:#x} (flags {:#x}), config GSIV {:#x} (flags {:#x})",
                g.gsiv, g.flags, c.gsiv, c.flags
            )?;
            for (name, irqs) in [
                ("context", &s.context_interrupts),
                ("PMU", &s.pmu_interrupts),
            ] {
                write!(f, "  {name} GSIVs:")?;
                for i in irqs {
                    write!(f, " {:#x}/{:#x}", i.gsiv, i.flags)?;
                }
                writeln!(f)?;
            }
            Ok(())
        }
        NodeKind::SmmuV3(s) => {
            write!(f, "  base {:#x}, flags {:#x}", s.base, s.flags)?;
            for (set, name) in [
                (s.cohacc_override(), " COHACC_OVERRIDE"),
                (s.httu_override() != 0, " HTTU_OVERRIDE"),
                (s.proximity_domain_valid(), " PXM_VALID"),
                (s.device_id_mapping_valid(), " DEVICEID_VALID"),
            ] {
                if set {
                    f.write_str(name)?;
                }
            }
            writeln!(f, ", VATOS {:#x}, model {:#x}", s.vatos_address, s.model)?;
            writeln!(
                f,
                "  GSIV event {:#x}, PRI {:#x}, GERR {:#x}, sync {:#x}",
                s.event_gsiv, s.pri_gsiv, s.gerr_gsiv, s.sync_gsiv
            )?;
            if let (Some(pxm), Some(idx)) = (s.proximity_domain, s.device_id_mapping_index) {
                writeln!(
                    f,
                    "  proximity domain {pxm:#x}, DeviceID mapping index {idx:#x}"
                )?;
            }
            Ok(())
        }
        NodeKind::Pmcg(p) => {
            write!(
                f,
                "  page 0 {:#x}, page 1 {:#x}, overflow GSIV {:#x}",
                p.page0_base, p.page1_base, p.overflow_gsiv
            )?;
            if let Some(r) = p.node_reference {
                write!(f, ", node {r:#x}")?;
            }
            writeln!(f)
        }
        NodeKind::Rmr(r) => {
            writeln!(f, "  flags {:#x}", r.flags)?;
            for m in &r.ranges {
                writeln!(f, "  range {:#x} length {:#x}", m.base, m.length)?;
            }
            Ok(())
        }
        NodeKind::Unknown { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests;
