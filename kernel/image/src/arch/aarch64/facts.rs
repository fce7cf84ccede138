//! What the boot path needs to know about the machine before `kmain`:
//! the GIC, the timer's interrupt, the CPUs, PSCI and the console. Either
//! the devicetree fills it (`dt::parse`) or ACPI does ([`from_acpi`]);
//! boot has one path after that. RAM and the command line are not here:
//! they come from the boot protocol (devicetree memory nodes and
//! `/chosen`, or the UEFI hand-over).
use crate::discovery::TableSet;
use acpi_tables::{fadt, gtdt, madt, spcr};
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use devicetree::{Uart, UartKind};
use kernel::addr::PhysRange;

/// An ITS's register frames: the control page and GITS_TRANSLATER's.
const ITS_SIZE: u64 = 0x2_0000;
/// What a UART described without a size gets mapped as.
const UART_SIZE: u64 = 0x1000;
/// PPIs are INTIDs 16 to 31: a per-CPU timer must be one.
const PPIS: core::ops::Range<u32> = 16..32;

pub struct BootFacts {
    pub gicd: u64,
    /// Every redistributor region: a CPU's frame may be in any of them.
    pub gicr: Vec<PhysRange>,
    pub its: Vec<PhysRange>,
    /// The EL1 physical timer's PPI.
    pub timer_intid: u32,
    /// The counter's frequency where CNTFRQ_EL0 may be 0 (the
    /// devicetree's `/timer` `clock-frequency`; ACPI has none).
    pub timer_frequency: Option<u32>,
    /// PSCI through HVC (true) or SMC (false); None without PSCI.
    pub psci_hvc: Option<bool>,
    /// The CPUs to run (enabled ones).
    pub mpidr: Vec<u64>,
    pub console: Option<Uart>,
    /// Where each fact came from, for the boot log.
    pub sources: Sources,
}

/// Where each fact came from (`devicetree /timer`, `GTDT`, ...).
#[derive(Default)]
pub struct Sources {
    pub gic: &'static str,
    pub redistributors: &'static str,
    pub its: &'static str,
    pub timer: &'static str,
    pub psci: &'static str,
    pub cpus: String,
    pub console: &'static str,
}

impl BootFacts {
    /// One boot-log line per fact, with its source.
    pub fn log(&self) {
        let s = &self.sources;
        let ranges = |rs: &[PhysRange]| {
            let items: Vec<String> = rs.iter().map(|r| r.to_string()).collect();
            items.join(", ")
        };
        log::info!("boot: GIC distributor at {:#x} ({})", self.gicd, s.gic);
        log::info!(
            "boot: GIC redistributors {} ({})",
            ranges(&self.gicr),
            s.redistributors
        );
        log::info!("boot: GIC ITS {} ({})", ranges(&self.its), s.its);
        log::info!("boot: timer INTID {} ({})", self.timer_intid, s.timer);
        let psci = match self.psci_hvc {
            Some(true) => "HVC",
            Some(false) => "SMC",
            None => "none",
        };
        log::info!("boot: PSCI conduit {psci} ({})", s.psci);
        log::info!("boot: {} CPU(s) ({})", self.mpidr.len(), s.cpus);
        match &self.console {
            Some(u) => log::info!(
                "boot: console {:?} at {:#x} ({})",
                u.kind,
                u.base,
                s.console
            ),
            None => log::info!("boot: no console described ({})", s.console),
        }
    }
}

fn parse<T>(
    set: &TableSet,
    sig: &[u8; 4],
    parser: fn(&[u8]) -> Result<T, acpi_tables::TableError>,
) -> Result<Option<T>, String> {
    set.find(sig)
        .map(|b| parser(b).map_err(|e| e.to_string()))
        .transpose()
}

/// The boot facts from the MADT (GIC, CPUs), the GTDT (timer), the FADT
/// (PSCI) and the SPCR (console). The MADT and GTDT are required; without
/// an FADT there is no PSCI, without an SPCR no console. Also returns a
/// name for the machine (the MADT's OEM ids).
pub fn from_acpi(set: &TableSet) -> Result<(BootFacts, String), String> {
    let madt = parse(set, b"APIC", madt::parse)?.ok_or("no MADT among the ACPI tables")?;
    let gtdt = parse(set, b"GTDT", gtdt::parse)?.ok_or("no GTDT among the ACPI tables")?;
    let fadt = parse(set, b"FACP", fadt::parse)?;
    let spcr = parse(set, b"SPCR", spcr::parse)?;
    let gicd = madt.gicd().ok_or("the MADT describes no GIC distributor")?;
    if matches!(gicd.version, 1 | 2) {
        return Err(format!(
            "the MADT's GIC distributor is a GICv{}, not a GICv3",
            gicd.version
        ));
    }
    let gicr: Vec<PhysRange> = madt
        .redistributor_regions()
        .into_iter()
        .map(|(base, size)| PhysRange::new(base, size))
        .collect();
    if gicr.is_empty() {
        return Err("the MADT describes no GIC redistributor".into());
    }
    let redistributors = if madt.redistributors().next().is_some() {
        "MADT GICR structures"
    } else {
        "MADT GICC structures, one frame each"
    };
    let timer_intid = gtdt.nonsecure_el1.gsiv;
    if !PPIS.contains(&timer_intid) {
        return Err(format!(
            "the GTDT's non-secure EL1 timer interrupt {timer_intid} is not a PPI"
        ));
    }
    let cpus = madt.cpus();
    let mpidr: Vec<u64> = cpus
        .iter()
        .filter(|c| c.enabled)
        .filter_map(|c| match c.id {
            madt::CpuId::Mpidr(m) => Some(m),
            _ => None,
        })
        .collect();
    let later = cpus.iter().filter(|c| !c.enabled).count();
    let console = spcr.as_ref().map(spcr_uart).transpose()?.flatten();
    let psci_hvc = fadt
        .as_ref()
        .and_then(|f| f.psci())
        .map(|c| c == fadt::PsciConduit::Hvc);
    let h = &madt.header;
    let board = format!("{} {} (ACPI)", h.oem_id.trim(), h.oem_table_id.trim());
    Ok((
        BootFacts {
            gicd: gicd.base,
            gicr,
            its: madt
                .its()
                .map(|i| PhysRange::new(i.base, ITS_SIZE))
                .collect(),
            timer_intid,
            timer_frequency: None,
            psci_hvc,
            mpidr,
            console,
            sources: Sources {
                gic: "MADT GICD",
                redistributors,
                its: "MADT GIC ITS structures",
                timer: "GTDT non-secure EL1 timer",
                psci: if fadt.is_some() {
                    "FADT Arm boot flags"
                } else {
                    "no FADT"
                },
                cpus: format!(
                    "MADT GICC structures marked enabled; {later} online-capable left off"
                ),
                console: if spcr.is_some() { "SPCR" } else { "no SPCR" },
            },
        },
        board,
    ))
}

/// The SPCR's UART as the console driver takes it (a devicetree `Uart`).
fn spcr_uart(s: &spcr::Spcr) -> Result<Option<Uart>, String> {
    let Some(u) = s.mmio_uart().map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    Ok(Some(Uart {
        path: "SPCR".into(),
        kind: match u.kind {
            spcr::MmioUartKind::Pl011 => UartKind::Pl011,
            spcr::MmioUartKind::SbsaUart => UartKind::SbsaUart,
            spcr::MmioUartKind::Ns16550 {
                reg_shift,
                reg_io_width,
            } => UartKind::Ns16550 {
                reg_shift,
                reg_io_width,
            },
        },
        base: u.address,
        size: UART_SIZE,
        interrupt: None,
        baud: u.baud,
        clock_frequency: u.clock,
    }))
}
