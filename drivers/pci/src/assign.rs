//! Resource assignment: BAR addresses from the host bridge windows, and
//! bridge windows that cover what lies behind them.
//!
//! Per resource class (I/O, non-prefetchable memory, prefetchable memory)
//! the bridge tree is sized bottom-up (a bridge window is the packed sum of
//! its children, rounded to the bridge granularity: 4 KiB for I/O, 1 MiB
//! for memory) and placed top-down, largest alignment first, each BAR at
//! its natural alignment.
use crate::bar::{write_bar, BarKind};
use crate::config::{
    Bdf, ConfigSpace, CMD_BUS_MASTER, CMD_IO, CMD_MEMORY, IO_BASE_LIMIT, IO_UPPER, MEM_BASE_LIMIT,
    PREF_BASE_LIMIT, PREF_BASE_UPPER, PREF_LIMIT_UPPER,
};
use crate::enumerate::Topology;
use crate::error::PciError;
use alloc::vec::Vec;

/// A host bridge window: PCI bus addresses `pci_base..pci_base + size`
/// appear to the CPU at `cpu_base`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub kind: BarKind,
    pub prefetchable: bool,
    pub cpu_base: u64,
    pub pci_base: u64,
    pub size: u64,
}

impl Window {
    /// The window of one devicetree `ranges` entry; `None` for the
    /// configuration space, which is no resource window.
    #[cfg(feature = "devicetree")]
    pub fn from_dt(w: &devicetree::PciWindow) -> Option<Window> {
        let kind = match w.space {
            devicetree::PciSpace::Config => return None,
            devicetree::PciSpace::Io => BarKind::Io,
            devicetree::PciSpace::Mem32 => BarKind::Mem32,
            devicetree::PciSpace::Mem64 => BarKind::Mem64,
        };
        Some(Window {
            kind,
            prefetchable: w.prefetchable,
            cpu_base: w.cpu_addr,
            pci_base: w.pci_addr,
            size: w.size,
        })
    }

    fn end(&self) -> u64 {
        self.pci_base.saturating_add(self.size)
    }

    fn contains(&self, addr: u64, size: u64) -> bool {
        addr >= self.pci_base && addr.checked_add(size).is_some_and(|e| e <= self.end())
    }

    fn cpu_of(self, pci: u64) -> u64 {
        pci - self.pci_base + self.cpu_base
    }
}

/// The three kinds of bridge window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Io,
    Mem,
    Pref,
}

const FOUR_GIB: u64 = 1 << 32;

impl Class {
    fn granularity(self) -> u64 {
        match self {
            Class::Io => 0x1000,
            Class::Mem | Class::Pref => 0x10_0000,
        }
    }
}

/// Which host window serves each class. When prefetchable memory has no
/// window of its own it shares the memory one and `pref` is `None` (the
/// BARs then go to the `Mem` class and bridges' prefetchable windows stay
/// closed).
struct HostWindows {
    io: Option<Window>,
    mem: Option<Window>,
    pref: Option<Window>,
}

impl HostWindows {
    fn pick(windows: &[Window]) -> HostWindows {
        let io = windows.iter().find(|w| w.kind == BarKind::Io).copied();
        let below_4g = |w: &&Window| w.end() <= FOUR_GIB;
        let mem = windows
            .iter()
            .filter(|w| w.kind != BarKind::Io && !w.prefetchable)
            .find(below_4g)
            .or_else(|| {
                windows
                    .iter()
                    .filter(|w| w.kind != BarKind::Io)
                    .find(below_4g)
            })
            .copied();
        let pref = windows
            .iter()
            .filter(|w| w.kind != BarKind::Io && w.prefetchable && Some(**w) != mem)
            .max_by_key(|w| w.kind)
            .or_else(|| {
                windows
                    .iter()
                    .find(|w| w.kind == BarKind::Mem64 && Some(**w) != mem)
            })
            .copied();
        HostWindows { io, mem, pref }
    }

    fn get(&self, class: Class) -> Option<Window> {
        match class {
            Class::Io => self.io,
            Class::Mem => self.mem,
            Class::Pref => self.pref,
        }
    }

    fn class_of(&self, kind: BarKind, prefetchable: bool) -> Class {
        match kind {
            BarKind::Io => Class::Io,
            BarKind::Mem64 if prefetchable && self.pref.is_some() => Class::Pref,
            _ => Class::Mem,
        }
    }
}

enum What {
    Bar { func: usize, bar: usize },
    Bridge { bridge: usize, children: Vec<Item> },
}

struct Item {
    size: u64,
    align: u64,
    what: What,
}

fn align_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v & !(align - 1))
}

/// The packed size of `items` (sorted by alignment, largest first);
/// `u64::MAX` if it overflows.
fn packed_size(items: &[Item]) -> u64 {
    let mut cursor = 0u64;
    for it in items {
        cursor = match align_up(cursor, it.align).and_then(|a| a.checked_add(it.size)) {
            Some(c) => c,
            None => return u64::MAX,
        };
    }
    cursor
}

struct Ctx<'a, C: ConfigSpace + ?Sized> {
    cfg: &'a mut C,
    topo: &'a mut Topology,
    host: HostWindows,
    errors: Vec<PciError>,
    /// Bridges whose window of the current class was programmed open.
    opened: Vec<bool>,
    /// Whether firmware's memory-class assignment was kept.
    mem_kept: bool,
}

/// Assigns BAR addresses and programs bridge windows. Per class, when the
/// policy keeps firmware assignments and every BAR of the class already
/// has an address inside the host window, the class is left as firmware
/// set it. Otherwise the class is reassigned from scratch: the affected
/// functions have decoding and bus mastering turned off (a driver's claim
/// turns them on). A BAR that does not fit gets `WindowExhausted` and no
/// address; the rest is still placed.
pub fn assign<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    topology: &mut Topology,
    windows: &[Window],
) -> Vec<PciError> {
    let host = HostWindows::pick(windows);
    let bridges = topology.bridges.len();
    let mut ctx = Ctx {
        cfg,
        topo: topology,
        host,
        errors: Vec::new(),
        opened: alloc::vec![false; bridges],
        mem_kept: false,
    };
    for class in [Class::Io, Class::Mem, Class::Pref] {
        ctx.assign_class(class);
    }
    ctx.errors
}

impl<C: ConfigSpace + ?Sized> Ctx<'_, C> {
    fn bars_of(&self, class: Class) -> Vec<(usize, usize)> {
        let mut v = Vec::new();
        for (fi, f) in self.topo.functions.iter().enumerate() {
            for (bi, b) in f.bars.iter().enumerate() {
                if self.host.class_of(b.kind, b.prefetchable) == class {
                    v.push((fi, bi));
                }
            }
        }
        v
    }

    fn assign_class(&mut self, class: Class) {
        let bars = self.bars_of(class);
        let window = self.host.get(class);
        if class == Class::Pref && window.is_none() {
            // Prefetchable BARs went to the memory class; unless firmware's
            // memory assignment (which may use these windows) was kept,
            // close the bridges' prefetchable windows.
            if !self.mem_kept {
                self.close_all(class);
            }
            return;
        }
        let Some(window) = window else {
            for (fi, bi) in bars {
                self.fail_bar(fi, bi);
            }
            self.close_all(class);
            return;
        };
        // With no BARs of the class there is nothing to keep: the bridges'
        // windows are closed (their reset values would open 0-1 MiB).
        let keep = self.topo.policy.keep_firmware_assignments
            && !bars.is_empty()
            && self.firmware_valid(&bars, &window);
        if class == Class::Mem {
            self.mem_kept = keep;
        }
        if keep {
            for (fi, bi) in bars {
                let b = &mut self.topo.functions[fi].bars[bi];
                b.cpu_address = b.address.map(|a| window.cpu_of(a));
            }
            return;
        }
        // Reassign: decoding off for everything whose resources move.
        let off = CMD_IO | CMD_MEMORY | CMD_BUS_MASTER;
        let mut touched: Vec<Bdf> = bars
            .iter()
            .map(|&(fi, _)| self.topo.functions[fi].bdf)
            .collect();
        touched.extend(self.topo.bridges.iter().map(|b| b.bdf));
        touched.dedup();
        for bdf in touched {
            let cmd = self.cfg.command(bdf);
            if cmd & off != 0 {
                self.cfg.write_command(bdf, cmd & !off);
            }
        }
        self.opened.iter_mut().for_each(|o| *o = false);
        let items = self.build(class, None, window.size, 0);
        self.place(class, &window, items, window.pci_base, window.end());
        for i in 0..self.topo.bridges.len() {
            if !self.opened[i] {
                let bdf = self.topo.bridges[i].bdf;
                self.program_window(bdf, class, None);
            }
        }
    }

    /// Whether firmware's addresses for `bars` can be kept: each inside
    /// the host window, none overlapping another, each forwarded by every
    /// bridge above its function.
    fn firmware_valid(&self, bars: &[(usize, usize)], window: &Window) -> bool {
        let mut ranges = Vec::with_capacity(bars.len());
        for &(fi, bi) in bars {
            let f = &self.topo.functions[fi];
            let b = &f.bars[bi];
            let Some(a) = b.address.filter(|&a| window.contains(a, b.size)) else {
                return false;
            };
            let last = a + (b.size - 1);
            for up in self.topo.upstream_bridges(f.bdf) {
                let inside = |r: Option<(u64, u64)>| r.is_some_and(|(s, e)| s <= a && last <= e);
                let forwarded = if b.kind == BarKind::Io {
                    inside(read_window(&*self.cfg, up, Class::Io))
                } else {
                    inside(read_window(&*self.cfg, up, Class::Mem))
                        || inside(read_window(&*self.cfg, up, Class::Pref))
                };
                if !forwarded {
                    return false;
                }
            }
            ranges.push((a, last));
        }
        ranges.sort_unstable();
        ranges.windows(2).all(|w| w[0].1 < w[1].0)
    }

    /// The items behind `parent` (the root bus for `None`), sorted by
    /// alignment, largest first. BARs larger than the whole host window
    /// are failed here so they do not take their siblings down with them.
    fn build(&mut self, class: Class, parent: Option<Bdf>, max: u64, depth: usize) -> Vec<Item> {
        let mut items = Vec::new();
        if depth > 256 {
            return items;
        }
        for fi in 0..self.topo.functions.len() {
            if self.topo.functions[fi].parent != parent {
                continue;
            }
            for bi in 0..self.topo.functions[fi].bars.len() {
                let b = self.topo.functions[fi].bars[bi];
                if self.host.class_of(b.kind, b.prefetchable) != class {
                    continue;
                }
                if b.size > max {
                    self.fail_bar(fi, bi);
                    continue;
                }
                items.push(Item {
                    size: b.size,
                    align: b.size,
                    what: What::Bar { func: fi, bar: bi },
                });
            }
        }
        for bi in 0..self.topo.bridges.len() {
            if self.topo.bridges[bi].parent != parent {
                continue;
            }
            let bdf = self.topo.bridges[bi].bdf;
            let children = self.build(class, Some(bdf), max, depth + 1);
            if children.is_empty() {
                continue;
            }
            let gran = class.granularity();
            let align = children
                .iter()
                .map(|c| c.align)
                .max()
                .unwrap_or(gran)
                .max(gran);
            let size = align_up(packed_size(&children), gran).unwrap_or(u64::MAX);
            items.push(Item {
                size,
                align,
                what: What::Bridge {
                    bridge: bi,
                    children,
                },
            });
        }
        items.sort_by_key(|it| core::cmp::Reverse(it.align));
        items
    }

    fn place(&mut self, class: Class, window: &Window, items: Vec<Item>, start: u64, end: u64) {
        let mut cursor = start;
        for it in items {
            let addr = align_up(cursor, it.align)
                .filter(|a| a.checked_add(it.size).is_some_and(|e| e <= end));
            match (addr, it.what) {
                (Some(addr), What::Bar { func, bar }) => {
                    let f = &mut self.topo.functions[func];
                    let b = &mut f.bars[bar];
                    b.address = Some(addr);
                    b.cpu_address = Some(window.cpu_of(addr));
                    let (bdf, b) = (f.bdf, *b);
                    write_bar(self.cfg, bdf, &b, addr);
                    cursor = addr + it.size;
                }
                (Some(addr), What::Bridge { bridge, children }) => {
                    self.opened[bridge] = true;
                    let bdf = self.topo.bridges[bridge].bdf;
                    self.program_window(bdf, class, Some((addr, addr + it.size - 1)));
                    self.place(class, window, children, addr, addr + it.size);
                    cursor = addr + it.size;
                }
                (None, what) => self.fail(what),
            }
        }
    }

    fn fail(&mut self, what: What) {
        match what {
            What::Bar { func, bar } => self.fail_bar(func, bar),
            What::Bridge { children, .. } => {
                for c in children {
                    self.fail(c.what);
                }
            }
        }
    }

    fn fail_bar(&mut self, func: usize, bar: usize) {
        let f = &mut self.topo.functions[func];
        let b = &mut f.bars[bar];
        b.address = None;
        b.cpu_address = None;
        self.errors.push(PciError::WindowExhausted {
            bdf: f.bdf,
            bar: b.index,
            size: b.size,
        });
    }

    fn close_all(&mut self, class: Class) {
        for i in 0..self.topo.bridges.len() {
            let bdf = self.topo.bridges[i].bdf;
            self.program_window(bdf, class, None);
        }
    }

    /// Programs (or, for `None`, closes: base above limit) the bridge's
    /// window of `class` to cover PCI addresses `base..=limit`.
    fn program_window(&mut self, bdf: Bdf, class: Class, range: Option<(u64, u64)>) {
        match class {
            Class::Io => {
                let (base, limit) = range.unwrap_or((0xf000, 0));
                // Status is in the upper half (RW1C): write zeros there.
                let lo = (base >> 8) as u32 & 0xf0 | ((limit >> 8) as u32 & 0xf0) << 8;
                self.cfg.write32(bdf, IO_BASE_LIMIT, lo);
                let up = (base >> 16) as u32 & 0xffff | ((limit >> 16) as u32 & 0xffff) << 16;
                self.cfg
                    .write32(bdf, IO_UPPER, if range.is_some() { up } else { 0 });
            }
            Class::Mem => {
                let (base, limit) = range.unwrap_or((0xfff0_0000, 0));
                let v = (base >> 16) as u32 & 0xfff0 | ((limit >> 16) as u32 & 0xfff0) << 16;
                self.cfg.write32(bdf, MEM_BASE_LIMIT, v);
            }
            Class::Pref => {
                let (base, limit) = range.unwrap_or((0xfff0_0000, 0));
                let v = (base >> 16) as u32 & 0xfff0 | ((limit >> 16) as u32 & 0xfff0) << 16;
                self.cfg.write32(bdf, PREF_BASE_LIMIT, v);
                self.cfg.write32(bdf, PREF_BASE_UPPER, (base >> 32) as u32);
                self.cfg
                    .write32(bdf, PREF_LIMIT_UPPER, (limit >> 32) as u32);
            }
        }
    }
}

/// A bridge's window of `class` as programmed: inclusive PCI addresses, or
/// `None` when closed (base above limit).
fn read_window<C: ConfigSpace + ?Sized>(cfg: &C, bdf: Bdf, class: Class) -> Option<(u64, u64)> {
    let (base, limit) = match class {
        Class::Io => {
            let v = cfg.read32(bdf, IO_BASE_LIMIT);
            let (up_base, up_limit) = if v & 0xf == 1 {
                let up = cfg.read32(bdf, IO_UPPER);
                (u64::from(up & 0xffff) << 16, u64::from(up >> 16) << 16)
            } else {
                (0, 0)
            };
            (
                up_base | u64::from(v & 0xf0) << 8,
                up_limit | u64::from(v & 0xf000) | 0xfff,
            )
        }
        Class::Mem => {
            let v = cfg.read32(bdf, MEM_BASE_LIMIT);
            (
                u64::from(v & 0xfff0) << 16,
                u64::from((v >> 16) & 0xfff0) << 16 | 0xf_ffff,
            )
        }
        Class::Pref => {
            let v = cfg.read32(bdf, PREF_BASE_LIMIT);
            let (up_base, up_limit) = if v & 0xf == 1 {
                (
                    u64::from(cfg.read32(bdf, PREF_BASE_UPPER)) << 32,
                    u64::from(cfg.read32(bdf, PREF_LIMIT_UPPER)) << 32,
                )
            } else {
                (0, 0)
            };
            (
                up_base | u64::from(v & 0xfff0) << 16,
                up_limit | u64::from((v >> 16) & 0xfff0) << 16 | 0xf_ffff,
            )
        }
    };
    (base <= limit).then_some((base, limit))
}

/// Places only the BARs nobody assigned (firmware left them at 0), each
/// in free space of the window that reaches it: its bridge's forwarding
/// window, or on the root bus a host bridge window of its kind (outside
/// every bridge's window). Every BAR and bridge window firmware set stays
/// as it is, so this is what a machine whose firmware assigned resources
/// gets, unlike [`assign`], which redoes a whole class when one BAR is
/// missing. A BAR with no room gets `WindowExhausted` and no address.
/// Assigned BARs get their CPU address from the host window holding them.
pub fn fill_unassigned<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    topology: &mut Topology,
    windows: &[Window],
) -> Vec<PciError> {
    let mut errors = Vec::new();
    for fi in 0..topology.functions.len() {
        for bi in 0..topology.functions[fi].bars.len() {
            let bar = topology.functions[fi].bars[bi];
            if bar.address.is_some() {
                continue;
            }
            let bdf = topology.functions[fi].bdf;
            let placed = free_slot(&*cfg, topology, windows, fi, bi);
            let b = &mut topology.functions[fi].bars[bi];
            match placed {
                Some(addr) => {
                    write_bar(cfg, bdf, &bar, addr);
                    b.address = Some(addr);
                }
                None => errors.push(PciError::WindowExhausted {
                    bdf,
                    bar: bar.index,
                    size: bar.size,
                }),
            }
        }
    }
    for f in &mut topology.functions {
        for b in &mut f.bars {
            b.cpu_address = b.address.and_then(|a| {
                windows
                    .iter()
                    .find(|w| {
                        (w.kind == BarKind::Io) == (b.kind == BarKind::Io) && w.contains(a, b.size)
                    })
                    .map(|w| w.cpu_of(a))
            });
        }
    }
    errors
}

/// The lowest naturally aligned address where BAR `bi` of function `fi`
/// fits: inside the range that reaches it and a host window, clear of
/// every assigned BAR and every bridge window not on its own path.
fn free_slot<C: ConfigSpace + ?Sized>(
    cfg: &C,
    topo: &Topology,
    windows: &[Window],
    fi: usize,
    bi: usize,
) -> Option<u64> {
    let f = &topo.functions[fi];
    let bar = f.bars[bi];
    let io = bar.kind == BarKind::Io;
    let last_allowed = if bar.kind == BarKind::Mem32 {
        FOUR_GIB - 1
    } else {
        u64::MAX
    };
    // The first 4 KiB of I/O space belong to legacy ISA devices.
    let floor = if io { 0x1000 } else { 0 };
    let classes: &[Class] = match (io, bar.prefetchable) {
        (true, _) => &[Class::Io],
        (false, true) => &[Class::Pref, Class::Mem],
        (false, false) => &[Class::Mem],
    };
    // Largest window first: a PC lists the legacy VGA hole (128 KiB at
    // 0xa0000) before its real MMIO windows.
    let mut host: Vec<(u64, u64)> = windows
        .iter()
        .filter(|w| (w.kind == BarKind::Io) == io && w.size != 0)
        .map(|w| (w.pci_base, w.end() - 1))
        .collect();
    host.sort_unstable_by_key(|&(s, e)| core::cmp::Reverse(e - s));
    let reach: Vec<(u64, u64)> = match f.parent {
        Some(p) => classes
            .iter()
            .filter_map(|&c| read_window(cfg, p, c))
            .filter(|&(s, e)| s <= e)
            .collect(),
        None => host.clone(),
    };
    let own_path = topo.upstream_bridges(f.bdf);
    let mut used: Vec<(u64, u64)> = Vec::new();
    for g in &topo.functions {
        for b in &g.bars {
            if let Some(a) = b.address.filter(|_| (b.kind == BarKind::Io) == io) {
                used.push((a, a.saturating_add(b.size - 1)));
            }
        }
    }
    let space: &[Class] = if io {
        &[Class::Io]
    } else {
        &[Class::Mem, Class::Pref]
    };
    for br in topo.bridges.iter().filter(|b| !own_path.contains(&b.bdf)) {
        for &c in space {
            if let Some((s, e)) = read_window(cfg, br.bdf, c).filter(|(s, e)| s <= e) {
                used.push((s, e));
            }
        }
    }
    used.sort_unstable();
    reach.iter().find_map(|&(start, end)| {
        let end = end.min(last_allowed);
        let mut a = align_up(start.max(floor), bar.size)?;
        for &(us, ue) in &used {
            if ue < a {
                continue;
            }
            if us > a.checked_add(bar.size - 1)? {
                break;
            }
            a = align_up(ue.checked_add(1)?, bar.size)?;
        }
        let last = a.checked_add(bar.size - 1)?;
        let in_host = host.iter().any(|&(s, e)| s <= a && last <= e);
        (last <= end && in_host).then_some(a)
    })
}
