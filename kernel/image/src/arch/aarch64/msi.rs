//! MSIs on Arm: the GICv3 ITS turns a device's write to GITS_TRANSLATER
//! into an LPI. Brought up after the page allocator exists (its tables
//! come from it), on the boot CPU only for now.
use crate::memory;
use crate::platform::MsiVector;
use alloc::format;
use alloc::string::String;
use core::sync::atomic::{AtomicU32, Ordering};
use gicv3::its::{Its, ItsMemory, LpiConfigTable};
use gicv3::Redistributor;
use kernel::mm::PAGE_SIZE;
use spin::Mutex;

/// LPI ids start here.
pub const LPI_BASE: u32 = 8192;
/// LPIs we count (one counter each), from `LPI_BASE`.
const LPIS: usize = 64;
/// LPI id bits: 8192 + a few thousand LPIs is plenty for the tests.
const LPI_ID_BITS: u32 = 14;
const LPI_PRIORITY: u8 = 0x80;

static LPI_COUNT: [AtomicU32; LPIS] = [const { AtomicU32::new(0) }; LPIS];

struct MsiState {
    its: Its,
    config: LpiConfigTable,
    /// DeviceIDs mapped so far, with the events each has used.
    devices: alloc::vec::Vec<(u32, u32)>,
    next_lpi: u32,
}

/// Events per device: the ITT is sized once, when the device is first mapped.
const EVENTS_PER_DEVICE: u32 = 32;

static STATE: Mutex<Option<MsiState>> = Mutex::new(None);

/// Tables for the GIC from the page allocator (identity-mapped RAM).
struct Pages;

impl ItsMemory for Pages {
    fn alloc_zeroed(&mut self, bytes: usize, align: usize) -> Option<(u64, *mut u8)> {
        let pages = bytes.div_ceil(PAGE_SIZE as usize).max(1);
        let p = memory::alloc_pages(pages, (align as u64).max(PAGE_SIZE))
            .ok()?
            .as_u64();
        Some((p, p as *mut u8))
    }
}

/// Called from the IRQ path for INTIDs from `LPI_BASE` up.
pub fn on_lpi(intid: u32) {
    crate::interrupts::dispatch(intid);
    if let Some(c) = LPI_COUNT.get((intid - LPI_BASE) as usize) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn lpi_count(lpi: u32) -> u32 {
    lpi.checked_sub(LPI_BASE)
        .and_then(|i| LPI_COUNT.get(i as usize))
        .map_or(0, |c| c.load(Ordering::Relaxed))
}

/// Brings up the first ITS the boot facts name and LPIs on the boot CPU.
pub fn init() -> Result<String, String> {
    let facts = super::boot::facts().ok_or("no boot facts")?;
    let its_node = facts.its.first().ok_or("the firmware describes no ITS")?;
    let regions: alloc::vec::Vec<(usize, usize)> = facts
        .gicr
        .iter()
        .map(|r| (r.start as usize, r.size() as usize))
        .collect();
    let mpidr = super::boot::boot_mpidr();
    let affinity = ((((mpidr >> 32) & 0xff) << 24) | (mpidr & 0xff_ffff)) as u32;
    // SAFETY: the redistributor regions the boot facts name, mapped as
    // device memory.
    let rd = unsafe { Redistributor::find_in(&regions, affinity) }
        .map_err(|e| format!("redistributor: {e:?}"))?;
    // SAFETY: the ITS frame from the boot facts, identity-mapped as device
    // memory (the low 1 GiB); only this state ever drives it.
    let mut its = unsafe { Its::new(its_node.start as usize, its_node.start) };
    its.set_cache_clean(super::clean_to_poc);
    let info = its
        .init(&mut Pages)
        .map_err(|e| format!("ITS at {:#x}: {e:?}", its_node.start))?;
    let config =
        LpiConfigTable::alloc(&mut Pages, LPI_ID_BITS).map_err(|e| format!("LPI table: {e:?}"))?;
    rd.enable_lpis_alloc(&config, &mut Pages)
        .map_err(|e| format!("LPIs on cpu 0: {e:?}"))?;
    let target = its.rdbase_for(rd.frame_addr(), rd.processor_number());
    its.map_collection(0, target)
        .map_err(|e| format!("MAPC: {e:?}"))?;
    *STATE.lock() = Some(MsiState {
        its,
        config,
        devices: alloc::vec::Vec::new(),
        next_lpi: LPI_BASE,
    });
    Ok(format!("ITS at {:#x}: {info:?}", its_node.start))
}

/// A new LPI for `device_id` (the DeviceID its MSIs carry): the next event
/// of that device, mapped to the boot CPU's collection and enabled.
pub fn alloc(device_id: u32) -> Result<MsiVector, String> {
    let mut guard = STATE.lock();
    let st = guard.as_mut().ok_or("the ITS is not up")?;
    let lpi = st.next_lpi;
    if (lpi - LPI_BASE) as usize >= LPIS {
        return Err(format!("all {LPIS} LPIs the kernel counts are in use"));
    }
    let event = match st.devices.iter_mut().find(|(d, _)| *d == device_id) {
        Some((_, used)) if *used >= EVENTS_PER_DEVICE => {
            return Err(format!(
                "DeviceID {device_id:#x} has used its {EVENTS_PER_DEVICE} events"
            ))
        }
        Some((_, used)) => {
            *used += 1;
            *used - 1
        }
        None => {
            st.its
                .map_device(device_id, EVENTS_PER_DEVICE, &mut Pages)
                .map_err(|e| format!("MAPD {device_id:#x}: {e:?}"))?;
            st.devices.push((device_id, 1));
            0
        }
    };
    st.its
        .map_interrupt(device_id, event, lpi, 0)
        .map_err(|e| format!("MAPTI: {e:?}"))?;
    st.its
        .set_lpi_config(&mut st.config, device_id, event, lpi, LPI_PRIORITY, true)
        .map_err(|e| format!("LPI config: {e:?}"))?;
    st.next_lpi += 1;
    Ok(MsiVector {
        address: st.its.translater_phys(),
        data: event,
        id: lpi,
    })
}

/// A CPU write to GITS_TRANSLATER: QEMU gives CPU writes requester id 0.
/// GITS_TRANSLATER's physical address: where devices write their MSIs.
pub fn doorbell() -> Option<u64> {
    STATE.lock().as_ref().map(|st| st.its.translater_phys())
}

pub fn translater_write(event: u32) -> Result<(), String> {
    let guard = STATE.lock();
    let st = guard.as_ref().ok_or("the ITS is not up")?;
    st.its.write_translater(event);
    Ok(())
}
