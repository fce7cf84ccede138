//! The CPU's identity map, built from what firmware describes: RAM and
//! firmware tables as normal memory, each MMIO range as device memory when
//! the kernel first binds it (console, interrupt controller, IOMMU
//! registers, ECAM, BARs, host-bridge windows). Nothing else is mapped, so
//! a stray access faults and normal memory never covers MMIO. The format
//! logic is `kernel::idmap` (host-tested); this module owns the table
//! memory and the one map, and the arch code points the MMU at its root.
use crate::arch;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::addr::PhysRange;
use kernel::idmap::{IdMap, MapError, MemKind, Tables, PAGE};
use spin::mutex::SpinMutex;

/// Table pages for the map before the page allocator runs (the boot
/// CPU maps the kernel, RAM and the first devices from here); later
/// tables come from the page allocator.
const POOL_TABLES: usize = 64;

#[repr(C, align(4096))]
struct Pool([[u64; 512]; POOL_TABLES]);

// Zeroed with the BSS; handed out one table at a time under `MAP`'s lock.
static mut POOL: Pool = Pool([[0; 512]; POOL_TABLES]);

struct KernelTables {
    pool_used: usize,
}

impl KernelTables {
    fn pool_range() -> PhysRange {
        let base = core::ptr::addr_of!(POOL) as u64;
        PhysRange::new(base, core::mem::size_of::<Pool>() as u64)
    }
}

impl Tables for KernelTables {
    fn alloc(&mut self) -> Option<u64> {
        if self.pool_used < POOL_TABLES {
            let at = Self::pool_range().start + self.pool_used as u64 * PAGE;
            self.pool_used += 1;
            return Some(at);
        }
        // Zeroed; identity-mapped RAM; never freed (the map only grows).
        crate::memory::alloc_pages(1, PAGE).ok().map(|a| a.as_u64())
    }

    fn read(&self, table: u64, index: usize) -> u64 {
        // SAFETY: `table` is a table page this type handed out (pool or
        // page allocator), identity-mapped once the MMU is on; index < 512.
        unsafe { core::ptr::read_volatile((table as *const u64).add(index)) }
    }

    fn write(&mut self, table: u64, index: usize, entry: u64) {
        // SAFETY: as in `read`; only entries that were invalid are written
        // (kernel::idmap never changes a valid one), so no live translation
        // changes under another CPU.
        unsafe { core::ptr::write_volatile((table as *mut u64).add(index), entry) }
    }
}

struct State {
    map: IdMap<arch::MapFormat>,
    tables: KernelTables,
}

static MAP: SpinMutex<Option<State>> = SpinMutex::new(None);
/// The map's root table, once it exists.
static ROOT: AtomicU64 = AtomicU64::new(0);

fn state(slot: &mut Option<State>) -> Result<&mut State, MapError> {
    if slot.is_none() {
        let mut tables = KernelTables { pool_used: 0 };
        let map = IdMap::new(arch::map_format(), &mut tables, arch::pa_bits())?;
        ROOT.store(map.root(), Ordering::Relaxed);
        *slot = Some(State { map, tables });
    }
    slot.as_mut().ok_or(MapError::OutOfTables)
}

fn with_map<R>(f: impl FnOnce(&mut State) -> R) -> Result<R, MapError> {
    let mut guard = MAP.lock();
    Ok(f(state(&mut guard)?))
}

/// Maps `range` as normal memory on the boot CPU before its MMU is on:
/// no lock (atomics need the MMU on some CPUs: exclusives only work on
/// cacheable memory), no log (no console yet).
///
/// # Safety
/// Only the boot CPU runs, and nothing else touches the map meanwhile.
#[cfg(target_arch = "aarch64")]
pub unsafe fn map_before_mmu(range: PhysRange) -> Result<(), MapError> {
    // SAFETY: the caller guarantees exclusive access; the lock is not held.
    let slot = unsafe { &mut *MAP.as_mut_ptr() };
    let s = state(slot)?;
    s.map.map(&mut s.tables, range, MemKind::Normal).map(|_| ())
}

/// Maps `range` as `kind`; `what` names it in the log. A conflict or a
/// lack of table pages is logged and returned.
pub fn map(range: PhysRange, kind: MemKind, what: &str) -> Result<(), MapError> {
    let r = with_map(|s| s.map.map(&mut s.tables, range, kind)).and_then(|r| r);
    match r {
        Ok(stats) => {
            if stats != Default::default() {
                arch::map_published();
                log::debug!(
                    "mapping: {what} {range} as {kind}: leaves 1G/2M/4K {}/{}/{}, {} table(s)",
                    stats.leaves[1],
                    stats.leaves[2],
                    stats.leaves[3],
                    stats.tables
                );
            }
            Ok(())
        }
        Err(e) => {
            log::error!("mapping: {what} {range} as {kind}: {e}");
            Err(e)
        }
    }
}

/// Maps an MMIO range the firmware describes as device memory.
pub fn map_device(range: PhysRange, what: &str) -> bool {
    map(range, MemKind::Device, what).is_ok()
}

/// Maps firmware memory (tables, boot data) as normal memory for reading
/// (a range already normal memory stays as it is); false when the range
/// is device memory or cannot be mapped.
pub fn map_firmware(range: PhysRange, what: &str) -> bool {
    map(range, MemKind::Normal, what).is_ok()
}

/// How `addr` is mapped, if at all.
pub fn kind_at(addr: u64) -> Option<MemKind> {
    with_map(|s| s.map.kind_at(&s.tables, addr)).ok().flatten()
}

/// The root table, for the MMU (every CPU loads the same one). Read
/// without the lock: CPUs read it with their MMU still off.
pub fn root() -> u64 {
    ROOT.load(Ordering::Relaxed)
}

/// The valid entries of the map's root table, by index: the kernel's
/// half that a process's tables carry (`AddressSpace::with_kernel_entries`).
pub fn root_entries() -> alloc::vec::Vec<(usize, u64)> {
    let guard = MAP.lock();
    let Some(s) = guard.as_ref() else {
        return alloc::vec::Vec::new();
    };
    let root = s.map.root();
    (0..512)
        .map(|i| (i, s.tables.read(root, i)))
        .filter(|&(_, e)| e != 0)
        .collect()
}

/// An address nothing is mapped at: the first 1 GiB slot (from 2 GiB up)
/// whose probe address is unmapped; firmware-described ranges are mapped
/// when bound, so this is checked against the map itself.
pub fn unmapped_addr() -> u64 {
    const GIB: u64 = 1 << 30;
    let limit = with_map(|s| s.map.limit()).unwrap_or(1 << 32);
    (2..limit / GIB)
        .map(|i| i * GIB + 0xbad000)
        .find(|&a| kind_at(a).is_none())
        .unwrap_or(limit - GIB + 0xbad000)
}
