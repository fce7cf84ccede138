//! The services a driver crate is handed: device-visible memory as owned
//! regions, the barrier that orders memory before MMIO, a clock for
//! bounded waits, and interrupt lines. The image implements [`Hal`] over
//! its page allocator and interrupt controller; host tests implement it
//! over plain vectors ([`fake`]), and may record every store and barrier.
//!
//! A driver never dereferences a physical address: it allocates a
//! [`DmaRegion`], hands the region's [`PhysAddr`] to the device, and reads
//! and writes the region through bounds-checked accessors.
use crate::addr::PhysAddr;
use crate::iommu::pgtable::{TableMemory, ENTRIES, PAGE_SIZE};
use alloc::collections::BTreeMap;
use core::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalError {
    /// No device-visible memory of that size and alignment is left.
    NoMemory { bytes: u64 },
    /// An access past the end of a region (a driver bug, refused).
    OutOfBounds { offset: u64, len: u64 },
    /// The interrupt line cannot be used.
    Interrupt { line: u32 },
    /// An address in none of the driver's regions.
    NotOwned { pa: u64 },
    /// Memory the hardware fixed (preset tables) that this platform cannot
    /// hand a driver.
    Unreachable { pa: u64, bytes: u64 },
}

impl fmt::Display for HalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            HalError::NoMemory { bytes } => write!(f, "no memory for {bytes} bytes"),
            HalError::OutOfBounds { offset, len } => {
                write!(f, "access at {offset:#x} past a region of {len:#x} bytes")
            }
            HalError::Interrupt { line } => write!(f, "interrupt line {line} cannot be used"),
            HalError::NotOwned { pa } => write!(f, "{pa:#x} is in none of the driver's regions"),
            HalError::Unreachable { pa, bytes } => write!(
                f,
                "{bytes:#x} bytes of fixed memory at {pa:#x} cannot be reached"
            ),
        }
    }
}

/// Whether the device that reads a region snoops the CPU's caches. Stores
/// to a non-coherent region are cleaned to memory; loads are preceded by
/// an invalidation, so the CPU sees what the device wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coherency {
    Coherent,
    NonCoherent,
}

/// A run of zeroed, physically contiguous memory a device may read and
/// write. Dropping it gives the memory back.
pub trait DmaRegion {
    /// Where the device finds it.
    fn phys(&self) -> PhysAddr;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// A naturally aligned 64-bit load (volatile: each call reads memory).
    fn read_u64(&self, offset: u64) -> Result<u64, HalError>;
    /// A naturally aligned 64-bit store, single-copy atomic.
    fn write_u64(&mut self, offset: u64, value: u64) -> Result<(), HalError>;
    fn read_bytes(&self, offset: u64, out: &mut [u8]) -> Result<(), HalError>;
    fn write_bytes(&mut self, offset: u64, data: &[u8]) -> Result<(), HalError>;
}

/// Checks that `[offset, offset + len)` lies in a region of `size` bytes
/// (and, for 64-bit accesses, that `offset` is 8-byte aligned).
pub fn check_bounds(offset: u64, len: u64, size: u64, word: bool) -> Result<(), HalError> {
    let end = offset.checked_add(len);
    if end.is_none_or(|e| e > size) || (word && !offset.is_multiple_of(8)) {
        return Err(HalError::OutOfBounds { offset, len: size });
    }
    Ok(())
}

/// What a driver is handed.
pub trait Hal: Clone {
    type Region: DmaRegion;
    /// `bytes` of zeroed memory at a multiple of `align` (at least a page),
    /// in memory (not only in the CPU's caches) when it is returned.
    fn alloc(&self, bytes: u64, align: u64, coherency: Coherency)
        -> Result<Self::Region, HalError>;
    /// The `bytes` at `pa` that the hardware fixed (an SMMU's preset
    /// tables and queues), as a region the driver reads and writes like
    /// its own; not given back on drop. Platforms that cannot reach such
    /// memory refuse.
    fn adopt(
        &self,
        pa: PhysAddr,
        bytes: u64,
        _coherency: Coherency,
    ) -> Result<Self::Region, HalError> {
        Err(HalError::Unreachable { pa: pa.0, bytes })
    }
    /// Orders every earlier store to a region before every later MMIO
    /// access (the device is told after it can see the memory).
    fn barrier(&self);
    /// A monotonic clock, for bounded waits.
    fn now_ns(&self) -> u64;
    /// Enables wired interrupt `line` (edge- or level-triggered).
    fn irq_enable(&self, line: u32, _edge: bool) -> Result<(), HalError> {
        Err(HalError::Interrupt { line })
    }
    fn irq_disable(&self, _line: u32) {}
    /// Deliveries of `line` so far (wired or MSI, as the platform numbers them).
    fn irq_count(&self, _line: u32) -> u32 {
        0
    }
    /// RAM the platform's allocator hands out (a stage 2 that must let a
    /// device reach every buffer maps these one to one).
    fn ram(&self) -> alloc::vec::Vec<crate::addr::PhysRange> {
        alloc::vec::Vec::new()
    }
    /// What a driver did that the checking mode
    /// ([`crate::iommu::check::Checking`]) verifies; nothing elsewhere.
    fn note(&self, _n: crate::iommu::check::Note) {}
}

/// The regions one driver owns, found by the physical addresses it hands
/// the hardware: a driver keeps addresses in its structures (as the
/// hardware does) and every access goes through the region that holds the
/// address, bounds-checked. An address outside every region is refused.
pub struct RegionSet<R: DmaRegion> {
    regions: BTreeMap<u64, R>,
}

impl<R: DmaRegion> Default for RegionSet<R> {
    fn default() -> Self {
        RegionSet {
            regions: BTreeMap::new(),
        }
    }
}

impl<R: DmaRegion> RegionSet<R> {
    /// Keeps `r`; returns its physical address.
    pub fn insert(&mut self, r: R) -> u64 {
        let pa = r.phys().as_u64();
        self.regions.insert(pa, r);
        pa
    }

    /// Gives back the region that starts at `pa`.
    pub fn remove(&mut self, pa: u64) -> Option<R> {
        self.regions.remove(&pa)
    }

    /// The region holding `pa`, and the offset of `pa` in it.
    fn find(&self, pa: u64) -> Option<(u64, u64)> {
        let (&base, r) = self.regions.range(..=pa).next_back()?;
        (pa - base < r.len()).then_some((base, pa - base))
    }

    pub fn contains(&self, pa: u64) -> bool {
        self.find(pa).is_some()
    }

    pub fn read_u64(&self, pa: u64) -> Result<u64, HalError> {
        let (base, off) = self.find(pa).ok_or(HalError::NotOwned { pa })?;
        self.regions[&base].read_u64(off)
    }

    pub fn write_u64(&mut self, pa: u64, value: u64) -> Result<(), HalError> {
        let (base, off) = self.find(pa).ok_or(HalError::NotOwned { pa })?;
        self.regions
            .get_mut(&base)
            .ok_or(HalError::NotOwned { pa })?
            .write_u64(off, value)
    }

    pub fn len(&self) -> usize {
        self.regions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    /// Every region, out of the set (to leak them on purpose when the
    /// hardware may still be reading them).
    pub fn take_all(&mut self) -> BTreeMap<u64, R> {
        core::mem::take(&mut self.regions)
    }
}

/// Page-table memory from a [`Hal`] (a handle to it: the image's is a
/// unit struct, the fake an `Rc`): the walker's coherency decides how
/// entries are written.
pub struct HalTables<H: Hal> {
    hal: H,
    coherency: Coherency,
    live: BTreeMap<u64, H::Region>,
}

impl<H: Hal> HalTables<H> {
    pub fn new(hal: H, coherency: Coherency) -> Self {
        HalTables {
            hal,
            coherency,
            live: BTreeMap::new(),
        }
    }

    pub fn live(&self) -> u64 {
        self.live.len() as u64
    }
}

fn table_entry<R: DmaRegion>(
    live: &BTreeMap<u64, R>,
    table: u64,
    index: usize,
) -> Option<(&R, u64)> {
    (index < ENTRIES).then_some(())?;
    live.get(&table).map(|r| (r, 8 * index as u64))
}

impl<H: Hal> TableMemory for HalTables<H> {
    fn alloc(&mut self) -> Option<u64> {
        let r = self.hal.alloc(PAGE_SIZE, PAGE_SIZE, self.coherency).ok()?;
        let pa = r.phys().as_u64();
        self.live.insert(pa, r);
        Some(pa)
    }
    fn free(&mut self, table: u64) {
        self.live.remove(&table);
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        match table_entry(&self.live, table, index) {
            Some((r, off)) => r.read_u64(off).unwrap_or(0),
            None => {
                log::error!("page-table read of {table:#x}[{index}]: not a table of ours");
                0
            }
        }
    }
    fn barrier(&mut self) {
        self.hal.barrier();
    }
    fn write(&mut self, table: u64, index: usize, value: u64) {
        let ok = index < ENTRIES
            && self
                .live
                .get_mut(&table)
                .is_some_and(|r| r.write_u64(8 * index as u64, value).is_ok());
        if !ok {
            log::error!("page-table write of {table:#x}[{index}]: not a table of ours");
        }
    }
}

/// A [`Hal`] over host memory, for driver tests: regions are vectors at
/// made-up physical addresses, and every store, barrier and allocation is
/// appended to a log a recorder can replay.
#[cfg(any(test, feature = "fake-hal"))]
pub mod fake {
    use super::{check_bounds, Coherency, DmaRegion, Hal, HalError};
    use crate::addr::PhysAddr;
    use alloc::collections::BTreeMap;
    use alloc::rc::Rc;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::{Cell, RefCell};

    /// One thing a driver did to memory, in program order.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum MemEvent {
        /// A 64-bit store of `value` at physical address `pa`.
        Store {
            pa: u64,
            value: u64,
        },
        Barrier,
        /// A mark a test's fake device adds (an invalidation it saw).
        Mark {
            what: u32,
            a: u64,
            b: u64,
        },
    }

    #[derive(Default)]
    struct Shared {
        mem: BTreeMap<u64, Vec<u8>>,
        log: Vec<MemEvent>,
        next: u64,
        live: usize,
        clock: u64,
    }

    /// Host memory posing as device-visible RAM.
    #[derive(Clone, Default)]
    pub struct FakeHal {
        shared: Rc<RefCell<Shared>>,
        /// Fail allocations after this many more (None: never).
        pub fail_after: Rc<Cell<Option<usize>>>,
    }

    impl FakeHal {
        pub fn new() -> Self {
            let h = FakeHal::default();
            h.shared.borrow_mut().next = 0x8000_0000;
            h
        }
        /// Everything logged so far, and the log emptied.
        pub fn take_log(&self) -> Vec<MemEvent> {
            core::mem::take(&mut self.shared.borrow_mut().log)
        }
        pub fn mark(&self, what: u32, a: u64, b: u64) {
            self.shared
                .borrow_mut()
                .log
                .push(MemEvent::Mark { what, a, b });
        }
        /// The 64-bit word at `pa` as memory holds it now.
        pub fn peek(&self, pa: u64) -> Option<u64> {
            let s = self.shared.borrow();
            let (&base, bytes) = s.mem.range(..=pa).next_back()?;
            let off = (pa - base) as usize;
            let w = bytes.get(off..off + 8)?;
            Some(u64::from_le_bytes(w.try_into().ok()?))
        }
        /// A device's 64-bit store at `pa` (a fake device completing
        /// work): memory changes, the log, which records what the driver
        /// did, does not. `None` outside every live region.
        pub fn poke(&self, pa: u64, value: u64) -> Option<()> {
            let mut s = self.shared.borrow_mut();
            let (&base, bytes) = s.mem.range_mut(..=pa).next_back()?;
            let off = (pa - base) as usize;
            bytes
                .get_mut(off..off + 8)?
                .copy_from_slice(&value.to_le_bytes());
            Some(())
        }
        /// Regions not yet dropped.
        pub fn live_regions(&self) -> usize {
            self.shared.borrow().live
        }
    }

    pub struct FakeRegion {
        shared: Rc<RefCell<Shared>>,
        pa: u64,
        len: u64,
    }

    impl Drop for FakeRegion {
        fn drop(&mut self) {
            let mut s = self.shared.borrow_mut();
            s.mem.remove(&self.pa);
            s.live -= 1;
        }
    }

    impl DmaRegion for FakeRegion {
        fn phys(&self) -> PhysAddr {
            PhysAddr(self.pa)
        }
        fn len(&self) -> u64 {
            self.len
        }
        fn read_u64(&self, offset: u64) -> Result<u64, HalError> {
            let mut b = [0; 8];
            check_bounds(offset, 8, self.len, true)?;
            self.read_bytes(offset, &mut b)?;
            Ok(u64::from_le_bytes(b))
        }
        fn write_u64(&mut self, offset: u64, value: u64) -> Result<(), HalError> {
            check_bounds(offset, 8, self.len, true)?;
            let mut s = self.shared.borrow_mut();
            let o = offset as usize;
            s.mem.get_mut(&self.pa).expect("live region")[o..o + 8]
                .copy_from_slice(&value.to_le_bytes());
            s.log.push(MemEvent::Store {
                pa: self.pa + offset,
                value,
            });
            Ok(())
        }
        fn read_bytes(&self, offset: u64, out: &mut [u8]) -> Result<(), HalError> {
            check_bounds(offset, out.len() as u64, self.len, false)?;
            let s = self.shared.borrow();
            let o = offset as usize;
            out.copy_from_slice(&s.mem[&self.pa][o..o + out.len()]);
            Ok(())
        }
        fn write_bytes(&mut self, offset: u64, data: &[u8]) -> Result<(), HalError> {
            check_bounds(offset, data.len() as u64, self.len, false)?;
            let mut s = self.shared.borrow_mut();
            let o = offset as usize;
            s.mem.get_mut(&self.pa).expect("live region")[o..o + data.len()].copy_from_slice(data);
            Ok(())
        }
    }

    impl Hal for FakeHal {
        type Region = FakeRegion;
        fn alloc(
            &self,
            bytes: u64,
            align: u64,
            _coherency: Coherency,
        ) -> Result<FakeRegion, HalError> {
            if let Some(n) = self.fail_after.get() {
                if n == 0 {
                    return Err(HalError::NoMemory { bytes });
                }
                self.fail_after.set(Some(n - 1));
            }
            let mut s = self.shared.borrow_mut();
            let align = align.max(4096).next_power_of_two();
            let len = bytes.max(1).next_multiple_of(4096);
            let pa = s.next.next_multiple_of(align);
            s.next = pa + len;
            s.mem.insert(pa, vec![0; len as usize]);
            s.live += 1;
            Ok(FakeRegion {
                shared: self.shared.clone(),
                pa,
                len,
            })
        }
        fn barrier(&self) {
            self.shared.borrow_mut().log.push(MemEvent::Barrier);
        }
        fn now_ns(&self) -> u64 {
            // Each look at the clock advances it 1 µs, so bounded waits end.
            let mut s = self.shared.borrow_mut();
            s.clock += 1_000;
            s.clock
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::{FakeHal, MemEvent};
    use super::*;

    #[test]
    fn regions_are_bounds_checked_and_freed() {
        let hal = FakeHal::new();
        let mut r = hal.alloc(100, 4096, Coherency::Coherent).unwrap();
        assert_eq!(r.len(), 4096);
        assert!(r.phys().is_aligned(4096));
        r.write_u64(8, 0x1234).unwrap();
        assert_eq!(r.read_u64(8).unwrap(), 0x1234);
        assert_eq!(hal.peek(r.phys().as_u64() + 8), Some(0x1234));
        assert!(r.write_u64(4096, 1).is_err());
        assert!(r.read_u64(4).is_err(), "unaligned");
        assert!(r.write_bytes(4090, &[0; 7]).is_err());
        assert!(r.read_u64(u64::MAX - 3).is_err(), "no overflow");
        hal.poke(r.phys().as_u64() + 16, 0x77).unwrap();
        assert_eq!(r.read_u64(16).unwrap(), 0x77, "a device's store is seen");
        assert_eq!(hal.poke(r.phys().as_u64() + 4096, 1), None);
        hal.barrier();
        assert_eq!(
            hal.take_log(),
            [
                MemEvent::Store {
                    pa: r.phys().as_u64() + 8,
                    value: 0x1234
                },
                MemEvent::Barrier
            ]
        );
        assert_eq!(hal.live_regions(), 1);
        let mut set = RegionSet::default();
        let pa = set.insert(r);
        set.write_u64(pa + 16, 7).unwrap();
        assert_eq!(set.read_u64(pa + 16).unwrap(), 7);
        assert_eq!(
            set.read_u64(pa + 4096),
            Err(HalError::NotOwned { pa: pa + 4096 })
        );
        assert!(set.write_u64(pa - 8, 1).is_err());
        let r = set.remove(pa).unwrap();
        drop(r);
        assert_eq!(hal.live_regions(), 0);
    }

    #[test]
    fn hal_tables_serve_the_page_table_engine() {
        use crate::iommu::pgtable::arm::ArmLpae;
        use crate::iommu::pgtable::{Gather, PageTable, Prot};
        let hal = FakeHal::new();
        let mut mem = HalTables::new(hal.clone(), Coherency::Coherent);
        let mut t = PageTable::new(ArmLpae::S1, &mut mem).unwrap();
        t.map(&mut mem, 0x4000_0000, 0x8000_0000, 0x1000, Prot::RW)
            .unwrap();
        assert_eq!(mem.live(), 4);
        assert!(t.lookup(&mem, 0x4000_0000).is_some());
        let mut g = Gather::default();
        t.destroy(&mut mem, &mut g);
        g.release(&mut mem);
        assert_eq!(mem.live(), 0);
        assert_eq!(hal.live_regions(), 0);
    }
}
