//! Depth-first enumeration with bus numbering.
use crate::bar::{size_bars, Bar};
use crate::caps::{capabilities, Capability, PortType};
use crate::config::{Bdf, ConfigSpace, BUS_NUMBERS, CLASS_REVISION, HEADER_TYPE, VENDOR_ID};
use crate::error::PciError;
use alloc::vec::Vec;
use core::ops::RangeInclusive;

/// Choices for `enumerate` and `assign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Keep BAR addresses (and bridge windows) firmware already programmed
    /// when they fit the host bridge windows; otherwise everything is
    /// reassigned. Bus numbers firmware assigned are always kept when they
    /// nest correctly.
    pub keep_firmware_assignments: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            keep_firmware_assignments: true,
        }
    }
}

/// One function found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub bdf: Bdf,
    pub vendor: u16,
    pub device: u16,
    /// Class, subclass, programming interface: 0xCCSSPP.
    pub class: u32,
    pub revision: u8,
    /// Header layout (bit 7, multi-function, masked off): 0 endpoint,
    /// 1 PCI-to-PCI bridge, 2 CardBus.
    pub header_type: u8,
    pub multifunction: bool,
    /// The bridge whose secondary side this function is on; `None` on the
    /// root bus.
    pub parent: Option<Bdf>,
    /// From the PCI Express capability, if any.
    pub port_type: Option<PortType>,
    pub caps: Vec<Capability>,
    pub bars: Vec<Bar>,
}

impl Function {
    /// The first capability `pick` accepts.
    pub fn find_cap<T>(&self, pick: impl FnMut(&Capability) -> Option<T>) -> Option<T> {
        self.caps.iter().find_map(pick)
    }
}

/// What role a bridge plays, from its PCI Express port type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BridgeKind {
    RootPort,
    SwitchUpstream,
    SwitchDownstream,
    /// A conventional PCI-to-PCI bridge (or any other type 1 function).
    PciBridge,
}

/// One type 1 function and the buses behind it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bridge {
    pub bdf: Bdf,
    pub parent: Option<Bdf>,
    pub secondary: u8,
    pub subordinate: u8,
    pub kind: BridgeKind,
}

/// The result of `enumerate`: every function (bridges included), every
/// bridge, and every fault met on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub segment: u16,
    pub root_buses: RangeInclusive<u8>,
    pub policy: Policy,
    pub functions: Vec<Function>,
    pub bridges: Vec<Bridge>,
    pub errors: Vec<PciError>,
}

impl Topology {
    pub fn function(&self, bdf: Bdf) -> Option<&Function> {
        self.functions.iter().find(|f| f.bdf == bdf)
    }

    pub fn bridge(&self, bdf: Bdf) -> Option<&Bridge> {
        self.bridges.iter().find(|b| b.bdf == bdf)
    }

    /// Takes in what was found under a further root bus of the same
    /// segment (scanned with its own bus range); `root_buses` grows to
    /// cover both.
    pub fn merge(&mut self, other: Topology) {
        let start = *self.root_buses.start().min(other.root_buses.start());
        let end = *self.root_buses.end().max(other.root_buses.end());
        self.root_buses = start..=end;
        self.functions.extend(other.functions);
        self.bridges.extend(other.bridges);
        self.errors.extend(other.errors);
    }

    /// The bridges from the root bus down to `bdf`'s parent, root first.
    pub fn upstream_bridges(&self, bdf: Bdf) -> Vec<Bdf> {
        let mut path = Vec::new();
        let mut cur = self.function(bdf).and_then(|f| f.parent);
        while let Some(b) = cur {
            if path.contains(&b) || path.len() > 256 {
                break;
            }
            path.push(b);
            cur = self.function(b).and_then(|f| f.parent);
        }
        path.reverse();
        path
    }
}

/// Class code (class and subclass) of a host bridge function.
const HOST_BRIDGE_CLASS: u32 = 0x0600;

/// The buses of `range` (after its first, the root bus) that are further
/// root buses of the same configuration space, each behind a host bridge
/// of its own (an expander bridge: a host-bridge function on the root
/// bus, its buses starting at a number of its own that no bridge of the
/// root bus forwards). Only looked for when the root bus holds a host
/// bridge function beside the root complex's own at device 0: probing
/// buses nobody forwards is then safe. Buses behind the bridges of the
/// root bus or of a root found are skipped. For a machine described by a
/// devicetree only; ACPI names each root bus (`_BBN`, `_CRS`).
pub fn peer_root_buses<C: ConfigSpace + ?Sized>(cfg: &C, range: RangeInclusive<u8>) -> Vec<u8> {
    let first = *range.start();
    let mut roots = Vec::new();
    let expander = (1..32).any(|d| {
        Bdf::new(first, d, 0).is_some_and(|f| {
            present(cfg, f) && cfg.read32(f, CLASS_REVISION) >> 16 == HOST_BRIDGE_CLASS
        })
    });
    if !expander {
        return roots;
    }
    let mut forwarded = forwarded_buses(cfg, first);
    for bus in range.clone().skip(1) {
        if forwarded.iter().any(|r| r.contains(&bus)) {
            continue;
        }
        if (0..32).any(|d| Bdf::new(bus, d, 0).is_some_and(|f| present(cfg, f))) {
            roots.push(bus);
            forwarded.extend(forwarded_buses(cfg, bus));
        }
    }
    roots
}

/// Each root bus's range: from its number to the bus before the next
/// root's (the last one to the end of `range`). `peers` ascending, inside
/// `range`, after its first bus.
pub fn root_ranges(range: RangeInclusive<u8>, peers: &[u8]) -> Vec<RangeInclusive<u8>> {
    let starts = core::iter::once(*range.start()).chain(peers.iter().copied());
    let ends = peers
        .iter()
        .map(|p| p.saturating_sub(1))
        .chain(core::iter::once(*range.end()));
    starts.zip(ends).map(|(s, e)| s..=e).collect()
}

fn present<C: ConfigSpace + ?Sized>(cfg: &C, bdf: Bdf) -> bool {
    let vendor = cfg.read16(bdf, VENDOR_ID);
    vendor != 0xffff && vendor != 0
}

/// The bus ranges the bridges on `bus` forward (firmware's numbers).
fn forwarded_buses<C: ConfigSpace + ?Sized>(cfg: &C, bus: u8) -> Vec<RangeInclusive<u8>> {
    let mut out = Vec::new();
    for d in 0..32 {
        for f in 0..8 {
            let Some(bdf) = Bdf::new(bus, d, f) else {
                continue;
            };
            if !present(cfg, bdf) {
                if f == 0 {
                    break;
                }
                continue;
            }
            let header = cfg.read8(bdf, HEADER_TYPE);
            if header & 0x7f == 1 {
                let n = cfg.read32(bdf, BUS_NUMBERS);
                let (sec, sub) = ((n >> 8) as u8, (n >> 16) as u8);
                if sec > bus && sub >= sec {
                    out.push(sec..=sub);
                }
            }
            if f == 0 && header & 0x80 == 0 {
                break;
            }
        }
    }
    out
}

struct Walk<'a, C: ConfigSpace + ?Sized> {
    cfg: &'a mut C,
    topo: Topology,
    /// The next bus number not yet handed out.
    next_free: u16,
    /// Buses bus reservations may still take beyond what each subtree
    /// holds (`None`: as many as each asks for and its parent allows).
    reserve_budget: Option<u16>,
    /// Whether a reservation widened some bridge.
    widened: bool,
    /// The bridges this walk numbered, in the order it numbered them.
    ours: Vec<Bdf>,
}

/// Scans the segment from `root_buses.start()` depth-first. Bridges whose
/// secondary bus is 0 get the next free bus number (subordinate set to the
/// end of the range during the scan, then to the last bus found below);
/// bridges with firmware numbers that nest keep them. BARs are sized and
/// capabilities read for every function; a fault in one function is
/// recorded in `errors` and the walk goes on. On each bus the bridges
/// firmware numbered are walked first, so the unnumbered ones get numbers
/// after theirs (as Linux does). `functions` lists each bus's functions
/// before those of the buses behind it.
pub fn enumerate<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    segment: u16,
    root_buses: RangeInclusive<u8>,
    policy: Policy,
) -> Topology {
    let walk = walk_once(cfg, segment, root_buses.clone(), policy, None);
    let starved = walk.widened
        && walk
            .topo
            .errors
            .iter()
            .any(|e| matches!(e, PciError::BusesExhausted { .. }));
    if !starved {
        return walk.topo;
    }
    // A reservation (a hint for hotplug) took buses that bridges after it
    // need: number the tree without reservations to learn what it needs,
    // then again with only the spare buses shared out, in scan order.
    let ours = walk.ours;
    reset_buses(cfg, &ours);
    let bare = walk_once(cfg, segment, root_buses.clone(), policy, Some(0));
    let spare = (u16::from(*root_buses.end()) + 1).saturating_sub(bare.next_free);
    let ours = bare.ours;
    reset_buses(cfg, &ours);
    walk_once(cfg, segment, root_buses, policy, Some(spare)).topo
}

fn walk_once<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    segment: u16,
    root_buses: RangeInclusive<u8>,
    policy: Policy,
    reserve_budget: Option<u16>,
) -> Walk<'_, C> {
    let root = *root_buses.start();
    let last = *root_buses.end();
    let mut walk = Walk {
        cfg,
        topo: Topology {
            segment,
            root_buses,
            policy,
            functions: Vec::new(),
            bridges: Vec::new(),
            errors: Vec::new(),
        },
        next_free: u16::from(root) + 1,
        reserve_budget,
        widened: false,
        ours: Vec::new(),
    };
    walk.scan_bus(root, None, root, last);
    walk
}

/// Closes the bridges a walk numbered (secondary and subordinate 0),
/// deepest first, so each is still reachable when its turn comes.
fn reset_buses<C: ConfigSpace + ?Sized>(cfg: &mut C, bridges: &[Bdf]) {
    for &bdf in bridges.iter().rev() {
        let old = cfg.read32(bdf, BUS_NUMBERS);
        cfg.write32(bdf, BUS_NUMBERS, (old & 0xff00_0000) | u32::from(bdf.bus()));
    }
}

impl<C: ConfigSpace + ?Sized> Walk<'_, C> {
    /// Scans `bus`, behind `parent`, whose subtree may use buses up to
    /// `limit`. `first` is the parent's secondary bus.
    fn scan_bus(&mut self, bus: u8, parent: Option<Bdf>, first: u8, limit: u8) {
        let mut bridges = Vec::new();
        for device in 0..32 {
            let Some(f0) = Bdf::new(bus, device, 0) else {
                continue;
            };
            if !self.present(f0) {
                continue;
            }
            let multi = self.cfg.read8(f0, HEADER_TYPE) & 0x80 != 0;
            let functions = if multi { 8 } else { 1 };
            for function in 0..functions {
                let Some(bdf) = Bdf::new(bus, device, function) else {
                    continue;
                };
                if function != 0 && !self.present(bdf) {
                    continue;
                }
                if let Some(kind) = self.scan_function(bdf, parent) {
                    bridges.push((bdf, kind));
                }
            }
        }
        // As Linux does: first the bridges firmware numbered (kept when
        // they nest), then the others get numbers after all of those.
        let mut rest = Vec::new();
        for (bdf, kind) in bridges {
            if !self.keep_firmware_buses(bdf, parent, kind, limit) {
                rest.push((bdf, kind));
            }
        }
        for (bdf, kind) in rest {
            self.number_bridge(bdf, parent, kind, first, limit);
        }
    }

    fn present(&self, bdf: Bdf) -> bool {
        present(&*self.cfg, bdf)
    }

    /// Records the function; for a bridge, returns its kind.
    fn scan_function(&mut self, bdf: Bdf, parent: Option<Bdf>) -> Option<BridgeKind> {
        let id = self.cfg.read32(bdf, VENDOR_ID);
        let class_rev = self.cfg.read32(bdf, CLASS_REVISION);
        let header = self.cfg.read8(bdf, HEADER_TYPE);
        let header_type = header & 0x7f;
        let (caps, cap_errors) = capabilities(&*self.cfg, bdf);
        for error in cap_errors {
            self.topo.errors.push(PciError::Capability { bdf, error });
        }
        let bars = match size_bars(self.cfg, bdf, header_type) {
            Ok(bars) => bars,
            Err((bars, e)) => {
                self.topo.errors.push(e);
                bars
            }
        };
        let port_type = caps.iter().find_map(|c| match c {
            Capability::PciExpress { port_type, .. } => Some(*port_type),
            _ => None,
        });
        self.topo.functions.push(Function {
            bdf,
            vendor: id as u16,
            device: (id >> 16) as u16,
            class: class_rev >> 8,
            revision: class_rev as u8,
            header_type,
            multifunction: header & 0x80 != 0,
            parent,
            port_type,
            caps,
            bars,
        });
        (header_type == 1).then_some(match port_type {
            Some(PortType::RootPort) => BridgeKind::RootPort,
            Some(PortType::SwitchUpstream) => BridgeKind::SwitchUpstream,
            Some(PortType::SwitchDownstream) => BridgeKind::SwitchDownstream,
            _ => BridgeKind::PciBridge,
        })
    }

    fn write_buses(&mut self, bdf: Bdf, primary: u8, secondary: u8, subordinate: u8) {
        let old = self.cfg.read32(bdf, BUS_NUMBERS);
        let value = (old & 0xff00_0000)
            | u32::from(subordinate) << 16
            | u32::from(secondary) << 8
            | u32::from(primary);
        self.cfg.write32(bdf, BUS_NUMBERS, value);
    }

    /// If firmware numbered the bridge and the numbers nest below its bus,
    /// inside the parent's range and after the buses already used: keeps
    /// them, scans behind it and returns true.
    fn keep_firmware_buses(
        &mut self,
        bdf: Bdf,
        parent: Option<Bdf>,
        kind: BridgeKind,
        limit: u8,
    ) -> bool {
        let numbers = self.cfg.read32(bdf, BUS_NUMBERS);
        let secondary = (numbers >> 8) as u8;
        let subordinate = (numbers >> 16) as u8;
        let nests = secondary != 0
            && secondary > bdf.bus()
            && u16::from(secondary) >= self.next_free
            && subordinate >= secondary
            && subordinate <= limit;
        if !nests {
            return false;
        }
        self.topo.bridges.push(Bridge {
            bdf,
            parent,
            secondary,
            subordinate,
            kind,
        });
        self.next_free = u16::from(secondary) + 1;
        self.scan_bus(secondary, Some(bdf), secondary, subordinate);
        self.next_free = u16::from(subordinate) + 1;
        true
    }

    /// Gives the bridge the next free bus number (reporting firmware
    /// numbers that did not nest) and scans behind it.
    fn number_bridge(
        &mut self,
        bdf: Bdf,
        parent: Option<Bdf>,
        kind: BridgeKind,
        first: u8,
        limit: u8,
    ) {
        let bus = bdf.bus();
        let numbers = self.cfg.read32(bdf, BUS_NUMBERS);
        let secondary = (numbers >> 8) as u8;
        let subordinate = (numbers >> 16) as u8;
        if secondary != 0 {
            self.topo.errors.push(PciError::BusNumbersNotNested {
                bridge: bdf,
                secondary,
                subordinate,
                parent_first: first,
                parent_last: limit,
            });
        }
        if self.next_free > u16::from(limit) {
            self.topo
                .errors
                .push(PciError::BusesExhausted { bridge: bdf });
            // Leave it closed: nothing behind it is reachable.
            self.write_buses(bdf, bus, 0, 0);
            return;
        }
        let secondary = self.next_free as u8;
        self.next_free += 1;
        // Open the bridge to everything the parent may forward while the
        // subtree is scanned, then shrink it to what was found.
        self.write_buses(bdf, bus, secondary, limit);
        self.ours.push(bdf);
        let index = self.topo.bridges.len();
        self.topo.bridges.push(Bridge {
            bdf,
            parent,
            secondary,
            subordinate: limit,
            kind,
        });
        self.scan_bus(secondary, Some(bdf), secondary, limit);
        let mut subordinate = (self.next_free - 1) as u8;
        // A bus reservation (QEMU's bridges, for hotplug) widens the range
        // as far as the parent allows.
        if let Some(reserve) = self.qemu_bus_reserve(bdf) {
            let want = (u16::from(secondary) + reserve.min(256) as u16 - 1).min(u16::from(limit));
            let mut extra = want.saturating_sub(u16::from(subordinate));
            if let Some(budget) = self.reserve_budget.as_mut() {
                extra = extra.min(*budget);
                *budget -= extra;
            }
            self.widened |= extra > 0;
            subordinate = (u16::from(subordinate) + extra) as u8;
            self.next_free = u16::from(subordinate) + 1;
        }
        self.write_buses(bdf, bus, secondary, subordinate);
        self.topo.bridges[index].subordinate = subordinate;
    }

    /// The bus count a QEMU bridge asks firmware to reserve behind it: the
    /// Red Hat vendor-specific capability of type 1 (resource reserve),
    /// whose `bus_res` dword follows the header. `None` when absent or
    /// unset (all ones).
    fn qemu_bus_reserve(&mut self, bdf: Bdf) -> Option<u32> {
        const VENDOR_SPECIFIC: u16 = 0x09;
        const RESOURCE_RESERVE: u8 = 1;
        let cap = crate::caps::StdCapIter::new(&*self.cfg, bdf)
            .map_while(Result::ok)
            .find(|c| {
                c.id == VENDOR_SPECIFIC
                    && self.cfg.read8(bdf, c.offset + 2) >= 8
                    && self.cfg.read8(bdf, c.offset + 3) == RESOURCE_RESERVE
            })?;
        let reserve = self.cfg.read32(bdf, cap.offset + 4);
        (reserve != u32::MAX && reserve != 0).then_some(reserve)
    }
}
