//! The devicetree: found at boot, parsed by the `devicetree` crate (which
//! checks the blob before walking it) once the heap exists, and turned into
//! the facts the boot path needs.
use super::facts::{BootFacts, Sources};
use alloc::vec::Vec;
use core::fmt;
use devicetree::{Gic, Platform, PsciMethod};
use kernel::addr::PhysRange;
use spin::Once;

const FDT_MAGIC: u32 = 0xd00d_feed;

#[derive(Debug, Clone)]
pub enum DtError {
    NotFound { x0: u64 },
    Parse(devicetree::DtError),
    NotGicV3,
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::NotFound { x0 } => write!(f, "no devicetree at x0 ({x0:#x})"),
            DtError::Parse(e) => write!(f, "{e}"),
            DtError::NotGicV3 => write!(f, "the interrupt controller is not a GICv3"),
        }
    }
}

pub struct DtFacts {
    pub dtb: PhysRange,
    pub ram: Vec<PhysRange>,
    /// `/memreserve/` entries and `/reserved-memory` children with a `reg`:
    /// kept from the page allocator.
    pub reserved: Vec<(PhysRange, &'static str)>,
    pub fw_cfg: Option<u64>,
    pub bootargs: &'static str,
    /// What boot needs of the machine, unless ACPI is to give it.
    pub boot: BootFacts,
}

static PLATFORM: Once<Result<Platform, DtError>> = Once::new();

/// The parsed devicetree, for discovery's cross-check with ACPI.
pub fn platform() -> Option<&'static Platform> {
    PLATFORM.get()?.as_ref().ok()
}

/// Checks the devicetree the loader handed over in x0 (the arm64 boot
/// protocol: no search, the image may sit anywhere). Returns its address
/// and size (from its header).
pub fn locate(x0: u64) -> Result<PhysRange, DtError> {
    if x0 == 0 || !x0.is_multiple_of(8) {
        return Err(DtError::NotFound { x0 });
    }
    // SAFETY: an 8-byte read at the address the boot protocol hands over,
    // inside RAM the loader filled.
    let header = unsafe { core::ptr::read_volatile(x0 as *const [u8; 8]) };
    if u32::from_be_bytes([header[0], header[1], header[2], header[3]]) != FDT_MAGIC {
        return Err(DtError::NotFound { x0 });
    }
    match devicetree::blob_size(&header) {
        Ok(size) => Ok(PhysRange::new(x0, size as u64)),
        Err(_) => Err(DtError::NotFound { x0 }),
    }
}

/// The blob as a slice.
fn blob(dtb: PhysRange) -> &'static [u8] {
    // SAFETY: `locate` found a devicetree header here giving this size; the
    // blob lies in mapped RAM and stays reserved, unwritten, for the whole run.
    unsafe { core::slice::from_raw_parts(dtb.start as *const u8, dtb.size() as usize) }
}

/// The console UART alone (heap needed), read before the rest so that
/// errors in the rest of the tree are reported on it.
pub fn console(dtb: PhysRange) -> Result<Option<devicetree::Uart>, devicetree::DtError> {
    devicetree::stdout(blob(dtb))
}

fn reservations(p: &Platform) -> Vec<(PhysRange, &'static str)> {
    let memreserve = p
        .reserved
        .iter()
        .map(|r| (PhysRange::new(r.base, r.size), "devicetree /memreserve/"));
    let nodes = p.reserved_memory.iter().flat_map(|m| {
        let what = if m.no_map {
            "devicetree /reserved-memory (no-map)"
        } else {
            "devicetree /reserved-memory"
        };
        m.regions
            .iter()
            .map(move |r| (PhysRange::new(r.base, r.size), what))
    });
    memreserve
        .chain(nodes)
        .filter(|(r, _)| r.size() > 0)
        .collect()
}

/// What boot needs of the machine, as the devicetree describes it.
pub fn boot_facts(p: &Platform) -> Result<BootFacts, DtError> {
    let Gic::V3(gic) = &p.gic else {
        return Err(DtError::NotGicV3);
    };
    let range = |base: u64, size: u64| PhysRange::new(base, size);
    Ok(BootFacts {
        gicd: gic.distributor.base,
        gicr: gic
            .redistributors
            .iter()
            .map(|r| range(r.base, r.size))
            .collect(),
        its: gic.its.iter().map(|i| range(i.base, i.size)).collect(),
        timer_intid: p.timer.nonsecure_phys.intid(),
        timer_frequency: p.timer.clock_frequency,
        psci_hvc: p.psci.as_ref().map(|p| p.method == PsciMethod::Hvc),
        mpidr: p.cpus.iter().map(|c| c.mpidr).collect(),
        console: p.console.clone(),
        sources: Sources {
            gic: "devicetree GICv3 node",
            redistributors: "devicetree GICv3 node",
            its: "devicetree ITS nodes",
            timer: "devicetree /timer",
            psci: "devicetree /psci",
            cpus: "devicetree /cpus".into(),
            console: "devicetree /chosen stdout-path",
        },
    })
}

/// Parses the blob (heap needed) and extracts the boot facts.
pub fn parse(dtb: PhysRange) -> Result<DtFacts, DtError> {
    let p = PLATFORM
        .call_once(|| Platform::parse(blob(dtb)).map_err(DtError::Parse))
        .as_ref();
    let p = match p {
        Ok(p) => p,
        Err(e) => return Err(e.clone()),
    };
    let boot = boot_facts(p)?;
    Ok(DtFacts {
        dtb,
        ram: p
            .ram
            .iter()
            .map(|r| PhysRange::new(r.base, r.size))
            .collect(),
        reserved: reservations(p),
        fw_cfg: p.fw_cfg.as_ref().map(|f| f.base),
        bootargs: p
            .chosen
            .as_ref()
            .and_then(|c| c.bootargs.as_deref())
            .unwrap_or(""),
        boot,
    })
}
