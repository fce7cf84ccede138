//! A fake configuration space for the tests: functions in a tree of
//! bridges, with config cycles routed through the bridges' bus numbers as
//! hardware does, and registers that keep only their writable bits (which
//! is all the BAR sizing protocol needs).
use crate::config::{Bdf, ConfigSpace};
use alloc::vec;
use alloc::vec::Vec;

pub struct FakeFn {
    pub regs: Vec<u32>,
    pub wmask: Vec<u32>,
    /// For bridges: (device, function, index) on the secondary bus.
    children: Vec<(u8, u8, usize)>,
    last_cap: Option<u16>,
    next_cap: u16,
    last_ext: Option<u16>,
    next_ext: u16,
}

impl FakeFn {
    fn blank(vendor: u16, device: u16, class: u32, header: u8) -> FakeFn {
        let mut f = FakeFn {
            regs: vec![0; 1024],
            wmask: vec![0; 1024],
            children: Vec::new(),
            last_cap: None,
            next_cap: 0x40,
            last_ext: None,
            next_ext: 0x100,
        };
        f.regs[0] = u32::from(device) << 16 | u32::from(vendor);
        f.regs[2] = class << 8 | 1;
        f.regs[3] = u32::from(header) << 16;
        f.wmask[1] = 0x0000_0547;
        f
    }

    pub fn endpoint(vendor: u16, device: u16, class: u32) -> FakeFn {
        FakeFn::blank(vendor, device, class, 0)
    }

    /// A type 1 bridge, with a PCIe capability of `port_type` if given.
    pub fn bridge(port_type: Option<u8>) -> FakeFn {
        let mut f = FakeFn::blank(0x1b36, 0x000c, 0x06_0400, 1);
        f.wmask[0x18 / 4] = 0x00ff_ffff;
        f.wmask[0x1c / 4] = 0x0000_f0f0;
        f.regs[0x1c / 4] = 0x0000_0101; // 32-bit I/O addressing
        f.wmask[0x20 / 4] = 0xfff0_fff0;
        f.wmask[0x24 / 4] = 0xfff0_fff0;
        f.regs[0x24 / 4] = 0x0001_0001; // 64-bit prefetchable
        f.wmask[0x28 / 4] = u32::MAX;
        f.wmask[0x2c / 4] = u32::MAX;
        f.wmask[0x30 / 4] = u32::MAX;
        if let Some(t) = port_type {
            f = f.pcie(t);
        }
        f
    }

    pub fn multi(mut self) -> FakeFn {
        self.regs[3] |= 0x80 << 16;
        self
    }

    pub fn set(&mut self, offset: u16, value: u32) {
        self.regs[usize::from(offset / 4)] = value;
    }

    pub fn set8(&mut self, offset: u16, value: u8) {
        let i = usize::from(offset / 4);
        let sh = (offset % 4) * 8;
        self.regs[i] = (self.regs[i] & !(0xff << sh)) | u32::from(value) << sh;
    }

    pub fn get(&self, offset: u16) -> u32 {
        self.regs[usize::from(offset / 4)]
    }

    fn bar(mut self, i: usize, low: u32, mask: u64) -> FakeFn {
        self.regs[4 + i] = low;
        self.wmask[4 + i] = mask as u32;
        self
    }

    pub fn mem32(self, i: usize, size: u32, pref: bool) -> FakeFn {
        let mask = !(size - 1) & !0xf;
        self.bar(i, if pref { 8 } else { 0 }, u64::from(mask))
    }

    pub fn mem64(self, i: usize, size: u64, pref: bool) -> FakeFn {
        let mask = !(size - 1) & !0xf;
        let mut f = self.bar(i, if pref { 0xc } else { 4 }, mask);
        f.wmask[5 + i] = (mask >> 32) as u32;
        f
    }

    /// An I/O BAR whose upper 16 bits are hardwired to zero.
    pub fn io(self, i: usize, size: u32) -> FakeFn {
        let mask = !(size - 1) & 0xfffc;
        self.bar(i, 1, u64::from(mask))
    }

    /// Appends a standard capability: `id`, the upper half of its first
    /// dword, then `rest` dwords.
    pub fn cap(mut self, id: u8, hi: u16, rest: &[u32]) -> FakeFn {
        let off = self.next_cap;
        self.set(off, u32::from(hi) << 16 | u32::from(id));
        for (k, v) in rest.iter().enumerate() {
            self.set(off + 4 + 4 * k as u16, *v);
        }
        match self.last_cap {
            None => {
                self.regs[1] |= 1 << 20; // status: capability list
                self.set8(0x34, off as u8);
            }
            Some(prev) => self.set8(prev + 1, off as u8),
        }
        self.last_cap = Some(off);
        self.next_cap = off + 4 + 4 * rest.len() as u16;
        self.next_cap = (self.next_cap + 7) & !7;
        self
    }

    pub fn pcie(self, port_type: u8) -> FakeFn {
        self.cap(
            0x10,
            u16::from(port_type) << 4 | 2,
            &[0x8001, 0, 0, 0, 0, 0, 0, 0],
        )
    }

    /// Appends an extended capability.
    pub fn ext(mut self, id: u16, rest: &[u32]) -> FakeFn {
        let off = self.next_ext;
        self.set(off, 1 << 16 | u32::from(id));
        for (k, v) in rest.iter().enumerate() {
            self.set(off + 4 + 4 * k as u16, *v);
        }
        if let Some(prev) = self.last_ext {
            let h = self.get(prev);
            self.set(prev, (h & 0x000f_ffff) | u32::from(off) << 20);
        }
        self.last_ext = Some(off);
        self.next_ext = off + 4 + 4 * rest.len() as u16;
        self
    }
}

/// The functions on one bus: (device, function, index into `fns`).
type BusList = Vec<(u8, u8, usize)>;

#[derive(Default)]
pub struct Fake {
    pub fns: Vec<FakeFn>,
    root: BusList,
    /// Further root buses (a host bridge beside bus 0's, as an expander
    /// bridge is): their bus number and functions.
    peers: Vec<(u8, BusList)>,
}

impl Fake {
    /// Adds `f` at device/function on the root bus (`parent` None) or on
    /// the secondary bus of the bridge with index `parent`. Returns its index.
    pub fn add(&mut self, parent: Option<usize>, dev: u8, func: u8, f: FakeFn) -> usize {
        let i = self.fns.len();
        self.fns.push(f);
        match parent {
            None => self.root.push((dev, func, i)),
            Some(p) => self.fns[p].children.push((dev, func, i)),
        }
        i
    }

    /// Adds `f` at device/function on the further root bus `bus`.
    pub fn add_peer(&mut self, bus: u8, dev: u8, func: u8, f: FakeFn) -> usize {
        let i = self.fns.len();
        self.fns.push(f);
        match self.peers.iter_mut().find(|(b, _)| *b == bus) {
            Some((_, list)) => list.push((dev, func, i)),
            None => self.peers.push((bus, vec![(dev, func, i)])),
        }
        i
    }

    /// Routes a config cycle as the bridges would: from root bus 0, then
    /// from each further root bus at or below the target bus.
    pub fn route(&self, bdf: Bdf) -> Option<usize> {
        let peers = self.peers.iter().filter(|(b, _)| *b <= bdf.bus());
        core::iter::once((0u8, &self.root))
            .chain(peers.map(|(b, l)| (*b, l)))
            .find_map(|(bus, list)| self.route_from(bus, list, bdf))
    }

    fn route_from(&self, root: u8, list: &BusList, bdf: Bdf) -> Option<usize> {
        let mut list = list;
        let mut bus = root;
        for _ in 0..256 {
            if bdf.bus() == bus {
                return list
                    .iter()
                    .find(|&&(d, f, _)| d == bdf.device() && f == bdf.function())
                    .map(|&(_, _, i)| i);
            }
            let mut next = None;
            for &(_, _, i) in list {
                let f = &self.fns[i];
                if (f.regs[3] >> 16) & 0x7f != 1 {
                    continue;
                }
                let n = f.regs[6];
                let (sec, sub) = ((n >> 8) as u8, (n >> 16) as u8);
                if sec != 0 && sec > bus && sec <= bdf.bus() && bdf.bus() <= sub {
                    next = Some((i, sec));
                    break;
                }
            }
            let (i, sec) = next?;
            list = &self.fns[i].children;
            bus = sec;
        }
        None
    }
}

impl ConfigSpace for Fake {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        match self.route(bdf) {
            Some(i) if offset < 4096 => self.fns[i].regs[usize::from(offset / 4)],
            _ => u32::MAX,
        }
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        if let Some(i) = self.route(bdf) {
            if offset < 4096 {
                let f = &mut self.fns[i];
                let k = usize::from(offset / 4);
                f.regs[k] = (f.regs[k] & !f.wmask[k]) | (value & f.wmask[k]);
            }
        }
    }
}
