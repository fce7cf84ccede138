//! ECAM host bridges (`pci-host-ecam-generic`) and the requester-ID maps of
//! the devicetree PCI IOMMU and MSI bindings (`iommu-map`, `msi-map`).
use crate::error::{DtError, NodeError};
use crate::platform::{Gic, Notes, Platform};
use crate::tree::{join, Tree};
use crate::Region;
use alloc::string::String;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

type Res<T> = Result<T, DtError>;

/// The address space of a `ranges` entry (phys.hi bits 24-25).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciSpace {
    Config,
    Io,
    Mem32,
    Mem64,
}

/// One `ranges` entry: PCI addresses `pci_addr..+size` appear at `cpu_addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciWindow {
    pub space: PciSpace,
    /// phys.hi bit 30.
    pub prefetchable: bool,
    pub pci_addr: u64,
    pub cpu_addr: u64,
    pub size: u64,
}

/// One (rid-base, phandle, out-base, length) tuple: RIDs
/// `rid_base..rid_base + length` map to `out_base..` at node `phandle`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdMapEntry {
    pub rid_base: u32,
    pub phandle: u32,
    pub out_base: u32,
    pub length: u32,
}

/// An `iommu-map` or `msi-map`, with its `-mask`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdMap {
    pub entries: Vec<IdMapEntry>,
    pub mask: Option<u32>,
}

impl IdMap {
    /// The target phandle and output ID for `rid`: the RID is masked, then
    /// the first entry covering it wins. `None`: no entry covers it, so the
    /// binding says the RID is not translated (no IOMMU / no MSI target).
    pub fn map(&self, rid: u32) -> Option<(u32, u32)> {
        let id = rid & self.mask.unwrap_or(u32::MAX);
        self.entries.iter().find_map(|e| {
            let off = id.checked_sub(e.rid_base).filter(|&o| o < e.length)?;
            Some((e.phandle, e.out_base.checked_add(off)?))
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcieHost {
    pub path: String,
    /// The ECAM window (`reg`), 1 MiB per bus from `bus_range.start()`.
    pub ecam: Region,
    /// `bus-range`; the binding's default is 0-255.
    pub bus_range: RangeInclusive<u8>,
    /// `linux,pci-domain` (the PCI segment), when given.
    pub domain: Option<u32>,
    pub windows: Vec<PciWindow>,
    pub dma_coherent: bool,
    pub iommu_map: Option<IdMap>,
    pub msi_map: Option<IdMap>,
    /// The first phandle of `iommus`: the IOMMU when there is no `iommu-map`.
    pub iommu_parent: Option<u32>,
    /// The first phandle of `msi-parent`: the MSI controller when there is
    /// no `msi-map`.
    pub msi_parent: Option<u32>,
}

/// Where a requester ID's DMA goes: the IOMMU node and the StreamID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IommuTarget {
    pub phandle: u32,
    /// The base of the SMMUv3 with that phandle, if it is one.
    pub smmu_base: Option<u64>,
    pub stream_id: u32,
}

/// Where a requester ID's MSIs go: the controller node and the DeviceID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiTarget {
    pub phandle: u32,
    /// The base of the ITS (or GICv2m frame) with that phandle, if it is one.
    pub base: Option<u64>,
    pub device_id: u32,
}

impl Platform {
    /// The IOMMU and StreamID for requester ID `rid` below `host`: through
    /// `iommu-map` if the bridge has one; else, with `iommus`, that IOMMU
    /// and StreamID = RID; else none.
    pub fn iommu_for(&self, host: &PcieHost, rid: u16) -> Option<IommuTarget> {
        let (phandle, stream_id) = match &host.iommu_map {
            Some(m) => m.map(rid.into())?,
            None => (host.iommu_parent?, rid.into()),
        };
        let smmu_base = self
            .smmus
            .iter()
            .find(|s| s.phandle == Some(phandle))
            .map(|s| s.base);
        Some(IommuTarget {
            phandle,
            smmu_base,
            stream_id,
        })
    }

    /// The SMMUv3 (register base) that translates the DMA of requester ID
    /// `rid` on the host bridge of PCI domain `segment` whose bus range
    /// holds its bus, and the StreamID it arrives with; `None` when the
    /// bridge's maps name no SMMUv3 node for it.
    pub fn smmu_route(&self, segment: u16, rid: u16) -> Option<(u64, u32)> {
        let bus = (rid >> 8) as u8;
        let host = self
            .pcie
            .iter()
            .find(|h| h.domain.unwrap_or(0) == u32::from(segment) && h.bus_range.contains(&bus))?;
        let target = self.iommu_for(host, rid)?;
        Some((target.smmu_base?, target.stream_id))
    }

    /// The MSI controller and DeviceID for requester ID `rid` below `host`:
    /// through `msi-map` if the bridge has one; else, with `msi-parent`,
    /// that controller and DeviceID = RID; else none.
    pub fn msi_for(&self, host: &PcieHost, rid: u16) -> Option<MsiTarget> {
        let (phandle, device_id) = match &host.msi_map {
            Some(m) => m.map(rid.into())?,
            None => (host.msi_parent?, rid.into()),
        };
        let base = match &self.gic {
            Gic::V3(g) => g
                .its
                .iter()
                .find(|i| i.phandle == Some(phandle))
                .map(|i| i.base),
            Gic::V2(g) => g
                .v2m
                .iter()
                .find(|f| f.phandle == Some(phandle))
                .map(|f| f.base),
        };
        Some(MsiTarget {
            phandle,
            base,
            device_id,
        })
    }
}

pub(crate) fn hosts(t: &Tree, notes: &mut Notes) -> Res<Vec<PcieHost>> {
    let found: Vec<usize> = t.find_all(&["pci-host-ecam-generic"]).collect();
    if found.is_empty() {
        notes.add("/", "no pci-host-ecam-generic node");
    }
    found.into_iter().map(|i| host(t, i, notes)).collect()
}

fn host(t: &Tree, i: usize, notes: &mut Notes) -> Res<PcieHost> {
    t.address_cells(i, &[3])?;
    let sc = t.size_cells(i, &[1, 2])?;
    let pa = t.address_cells(t.nodes[i].parent.unwrap_or(0), &[1, 2])?;
    let ecam = t.reg_min(i, 1)?[0];
    let bus_range = match t.cells(i, "bus-range")? {
        None => 0..=255,
        Some(c) if c.len() != 2 => {
            let kind = NodeError::BadLength {
                len: c.len() * 4,
                unit: 8,
            };
            return Err(t.err(i, "bus-range", kind));
        }
        Some(c) if c[0] <= c[1] && c[1] <= 255 => c[0] as u8..=c[1] as u8,
        Some(c) => {
            let kind = NodeError::BadValue { value: join(&c) };
            return Err(t.err(i, "bus-range", kind));
        }
    };
    let mut windows = Vec::new();
    match t.cells(i, "ranges")? {
        Some(c) if !c.is_empty() => {
            for e in t.entries(i, "ranges", &c, 3 + pa + sc)? {
                let cpu_addr = t.translate(i, "ranges", join(&e[3..3 + pa]))?;
                let size = join(&e[3 + pa..]);
                if cpu_addr.checked_add(size).is_none() {
                    let kind = NodeError::Overflow {
                        base: cpu_addr,
                        size,
                    };
                    return Err(t.err(i, "ranges", kind));
                }
                let space = [
                    PciSpace::Config,
                    PciSpace::Io,
                    PciSpace::Mem32,
                    PciSpace::Mem64,
                ];
                windows.push(PciWindow {
                    space: space[(e[0] >> 24) as usize & 3],
                    prefetchable: e[0] & (1 << 30) != 0,
                    pci_addr: join(&e[1..3]),
                    cpu_addr,
                    size,
                });
            }
        }
        _ => notes.add(&t.nodes[i].path, "host bridge without ranges: no windows"),
    }
    let first_phandle = |prop: &'static str| -> Res<Option<u32>> {
        let Some(c) = t.cells(i, prop)? else {
            return Ok(None);
        };
        let ph = *c
            .first()
            .ok_or_else(|| t.err(i, prop, NodeError::BadLength { len: 0, unit: 4 }))?;
        t.by_phandle(i, prop, ph)?;
        Ok(Some(ph))
    };
    Ok(PcieHost {
        path: t.path(i),
        ecam,
        bus_range,
        domain: t.u32(i, "linux,pci-domain")?,
        windows,
        dma_coherent: t.has(i, "dma-coherent"),
        iommu_map: id_map(t, i, "iommu-map", "iommu-map-mask")?,
        msi_map: id_map(t, i, "msi-map", "msi-map-mask")?,
        iommu_parent: first_phandle("iommus")?,
        msi_parent: first_phandle("msi-parent")?,
    })
}

/// Reads a map of 4-cell entries. Every entry is checked up front, so that
/// `IdMap::map` is plain arithmetic: no range may pass 2^32 and every
/// phandle must name a node.
fn id_map(t: &Tree, i: usize, name: &'static str, mask_name: &'static str) -> Res<Option<IdMap>> {
    let Some(c) = t.cells(i, name)? else {
        return Ok(None);
    };
    let mask = t.u32(i, mask_name)?;
    let mut entries = Vec::new();
    // An empty map is legal: it translates nothing.
    for e in if c.is_empty() {
        Vec::new()
    } else {
        t.entries(i, name, &c, 4)?
    } {
        let (rid_base, phandle, out_base, length) = (e[0], e[1], e[2], e[3]);
        for base in [rid_base, out_base] {
            if u64::from(base) + u64::from(length) > 1 << 32 {
                let kind = NodeError::Overflow {
                    base: base.into(),
                    size: length.into(),
                };
                return Err(t.err(i, name, kind));
            }
        }
        if let Some(mask) = mask.filter(|m| rid_base & !m != 0) {
            return Err(t.err(
                i,
                name,
                NodeError::MaskExcludesBase {
                    base: rid_base,
                    mask,
                },
            ));
        }
        t.by_phandle(i, name, phandle)?;
        entries.push(IdMapEntry {
            rid_base,
            phandle,
            out_base,
            length,
        });
    }
    Ok(Some(IdMap { entries, mask }))
}
