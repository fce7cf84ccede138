//! What the boot path needs from the devicetree: RAM, the console, the GIC,
//! the timer interrupt, PSCI and the CPUs. Parsed before the heap exists,
//! so results go into fixed arrays.
use crate::smp::MAX_CPUS;
use core::fmt;
use fdt::Fdt;
use kernel::addr::PhysRange;

const MAX_RAM: usize = 8;
const FDT_MAGIC: u32 = 0xd00d_feed;
/// The non-secure EL1 physical timer is the second entry of the timer node.
const TIMER_NS_EL1_INDEX: usize = 1;
/// PPIs are numbered from 16 in the GIC's interrupt id space.
const PPI_BASE: u32 = 16;

#[derive(Debug, Clone, Copy)]
pub enum DtError {
    NotFound { tried: u64 },
    Malformed,
    NoMemory,
    NoGic,
    NoTimer,
    TooManyCpus(usize),
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DtError::NotFound { tried } => write!(f, "no devicetree in x0 or at {tried:#x}"),
            DtError::Malformed => write!(f, "devicetree header or structure is malformed"),
            DtError::NoMemory => write!(f, "devicetree has no /memory with a reg"),
            DtError::NoGic => write!(f, "devicetree has no arm,gic-v3 node with two reg entries"),
            DtError::NoTimer => write!(f, "devicetree has no arm,armv8-timer node with interrupts"),
            DtError::TooManyCpus(n) => write!(
                f,
                "devicetree lists {n} CPUs, the kernel supports {MAX_CPUS}"
            ),
        }
    }
}

pub struct DtFacts {
    pub dtb: PhysRange,
    pub ram: [PhysRange; MAX_RAM],
    pub ram_len: usize,
    pub uart: Option<u64>,
    pub fw_cfg: Option<u64>,
    pub gicd: u64,
    pub gicr: PhysRange,
    pub timer_intid: u32,
    /// PSCI through HVC (true) or SMC (false); None without a PSCI node.
    pub psci_hvc: Option<bool>,
    pub mpidr: [u64; MAX_CPUS],
    pub cpus: usize,
    pub bootargs: &'static str,
}

impl DtFacts {
    pub fn ram(&self) -> &[PhysRange] {
        &self.ram[..self.ram_len]
    }
}

/// Finds the devicetree: x0 (raw Image boot), else the base of RAM (ELF boot).
pub fn locate(x0: u64, ram_base: u64) -> Result<u64, DtError> {
    for addr in [x0, ram_base] {
        if addr == 0 || !addr.is_multiple_of(8) {
            continue;
        }
        // SAFETY: a 4-byte read at a candidate inside RAM: x0 as the boot
        // protocol hands it over, or the base of RAM where QEMU puts the blob.
        let magic = unsafe { core::ptr::read_volatile(addr as *const u32) };
        if u32::from_be(magic) == FDT_MAGIC {
            return Ok(addr);
        }
    }
    Err(DtError::NotFound { tried: ram_base })
}

/// Parses the devicetree at `addr`, which stays reserved for the whole run.
pub fn parse(addr: u64) -> Result<DtFacts, DtError> {
    // SAFETY: `locate` found the magic here; the blob's own header gives its
    // size, and the memory is never reused (it is reserved in the memory map).
    let fdt: Fdt<'static> =
        unsafe { Fdt::from_ptr(addr as *const u8) }.map_err(|_| DtError::Malformed)?;
    let mut facts = DtFacts {
        dtb: PhysRange::new(addr, fdt.total_size() as u64),
        ram: [PhysRange::default(); MAX_RAM],
        ram_len: 0,
        uart: None,
        fw_cfg: None,
        gicd: 0,
        gicr: PhysRange::default(),
        timer_intid: 0,
        psci_hvc: None,
        mpidr: [0; MAX_CPUS],
        cpus: 0,
        bootargs: fdt.chosen().bootargs().unwrap_or(""),
    };
    for node in fdt.find_all_nodes("/memory") {
        for r in node.reg().into_iter().flatten() {
            if let (Some(size), true) = (r.size, facts.ram_len < MAX_RAM) {
                facts.ram[facts.ram_len] = PhysRange::new(r.starting_address as u64, size as u64);
                facts.ram_len += 1;
            }
        }
    }
    if facts.ram_len == 0 {
        return Err(DtError::NoMemory);
    }
    facts.uart = fdt
        .chosen()
        .stdout()
        .filter(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == "arm,pl011"))
        })
        .or_else(|| fdt.find_compatible(&["arm,pl011"]))
        .and_then(|n| n.reg()?.next())
        .map(|r| r.starting_address as u64);
    facts.fw_cfg = fdt
        .find_compatible(&["qemu,fw-cfg-mmio"])
        .and_then(|n| n.reg()?.next())
        .map(|r| r.starting_address as u64);
    let gic = fdt.find_compatible(&["arm,gic-v3"]).ok_or(DtError::NoGic)?;
    let mut regs = gic.reg().ok_or(DtError::NoGic)?;
    let d = regs.next().ok_or(DtError::NoGic)?;
    let r = regs.next().ok_or(DtError::NoGic)?;
    facts.gicd = d.starting_address as u64;
    facts.gicr = PhysRange::new(r.starting_address as u64, r.size.unwrap_or(0) as u64);
    let timer = fdt
        .find_compatible(&["arm,armv8-timer"])
        .ok_or(DtError::NoTimer)?;
    facts.timer_intid =
        timer_ppi(timer.property("interrupts").map(|p| p.value)).ok_or(DtError::NoTimer)?;
    facts.psci_hvc = fdt
        .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])
        .and_then(|n| n.property("method")?.as_str())
        .map(|m| m == "hvc");
    for cpu in fdt.cpus() {
        if facts.cpus == MAX_CPUS {
            return Err(DtError::TooManyCpus(fdt.cpus().count()));
        }
        facts.mpidr[facts.cpus] = cpu.ids().first() as u64;
        facts.cpus += 1;
    }
    Ok(facts)
}

/// The interrupt id of the non-secure EL1 physical timer from the timer
/// node's `interrupts` (3 cells each: type, number, flags; type 1 = PPI).
fn timer_ppi(raw: Option<&[u8]>) -> Option<u32> {
    let raw = raw?;
    let cell = |i: usize| {
        raw.get(i * 4..i * 4 + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let base = TIMER_NS_EL1_INDEX * 3;
    match (cell(base)?, cell(base + 1)?) {
        (1, n) if n < 16 => Some(PPI_BASE + n),
        _ => None,
    }
}
