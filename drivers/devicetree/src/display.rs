//! The topology report: one fact per line, for the boot log.
use crate::pci::{IdMap, PciSpace};
use crate::platform::{EnableMethod, Gic, Note, Platform, PsciMethod, UartKind};
use crate::{Interrupt, IrqKind, Region};
use core::fmt;

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.base, self.end())
    }
}

impl fmt::Display for Interrupt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            IrqKind::Spi => "SPI",
            IrqKind::Ppi => "PPI",
            IrqKind::ExtendedSpi => "ESPI",
            IrqKind::ExtendedPpi => "EPPI",
        };
        let trigger = if self.is_edge() { "edge" } else { "level" };
        write!(
            f,
            "{kind} {} (INTID {}, {trigger})",
            self.number,
            self.intid()
        )
    }
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn opt<T: fmt::Display>(f: &mut fmt::Formatter<'_>, v: &Option<T>) -> fmt::Result {
    match v {
        Some(v) => write!(f, "{v}"),
        None => write!(f, "none"),
    }
}

fn map(f: &mut fmt::Formatter<'_>, name: &str, m: &Option<IdMap>) -> fmt::Result {
    let Some(m) = m else { return Ok(()) };
    write!(f, "    {name}")?;
    if let Some(mask) = m.mask {
        write!(f, " (mask {mask:#x})")?;
    }
    for e in &m.entries {
        write!(
            f,
            " [rid {:#x}+{:#x} -> phandle {:#x} id {:#x}]",
            e.rid_base, e.length, e.phandle, e.out_base
        )?;
    }
    writeln!(f)
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "devicetree: {} ({} bytes)",
            self.model.as_deref().unwrap_or("?"),
            self.blob_size
        )?;
        for r in &self.ram {
            writeln!(f, "  ram {r} ({} MiB)", r.size >> 20)?;
        }
        for r in &self.reserved {
            writeln!(f, "  reserved {r}")?;
        }
        for m in &self.reserved_memory {
            write!(f, "  reserved-memory {}", m.path)?;
            for r in &m.regions {
                write!(f, " {r}")?;
            }
            writeln!(f, "{}", if m.no_map { " no-map" } else { "" })?;
        }
        if let Some(c) = &self.chosen {
            write!(
                f,
                "  chosen: bootargs {:?}, stdout ",
                c.bootargs.as_deref().unwrap_or("")
            )?;
            opt(f, &c.stdout)?;
            writeln!(f)?;
        }
        if let Some(u) = &self.console {
            match u.kind {
                UartKind::Pl011 => write!(f, "  console PL011")?,
                UartKind::SbsaUart => write!(f, "  console SBSA UART")?,
                UartKind::Ns16550 {
                    reg_shift,
                    reg_io_width,
                } => write!(
                    f,
                    "  console 16550 (reg-shift {reg_shift}, reg-io-width {reg_io_width})"
                )?,
            }
            write!(f, " {} at {:#x}+{:#x}, irq ", u.path, u.base, u.size)?;
            opt(f, &u.interrupt)?;
            writeln!(f)?;
        }
        if let Some(c) = &self.fw_cfg {
            writeln!(f, "  fw_cfg {} at {:#x}+{:#x}", c.path, c.base, c.size)?;
        }
        match &self.gic {
            Gic::V3(g) => {
                write!(
                    f,
                    "  GICv3 {} distributor {}, redistributors",
                    g.path, g.distributor
                )?;
                g.redistributors
                    .iter()
                    .try_for_each(|r| write!(f, " {r}"))?;
                writeln!(f)?;
                for i in &g.its {
                    write!(
                        f,
                        "    ITS {} at {:#x}+{:#x}, phandle ",
                        i.path, i.base, i.size
                    )?;
                    opt(f, &i.phandle.map(|p| alloc::format!("{p:#x}")))?;
                    writeln!(f)?;
                }
            }
            Gic::V2(g) => {
                writeln!(
                    f,
                    "  GICv2 {} distributor {}, cpu interface {}",
                    g.path, g.distributor, g.cpu_interface
                )?;
                for v in &g.v2m {
                    writeln!(
                        f,
                        "    GICv2m frame {} at {:#x}+{:#x}",
                        v.path, v.base, v.size
                    )?;
                }
            }
        }
        let t = &self.timer;
        writeln!(
            f,
            "  timer: EL1 physical {}, virtual {}, hyp {}",
            t.nonsecure_phys, t.virt, t.hyp_phys
        )?;
        if let Some(p) = &self.psci {
            let m = if p.method == PsciMethod::Hvc {
                "hvc"
            } else {
                "smc"
            };
            writeln!(f, "  PSCI {} via {m}", p.compatible)?;
        }
        for c in &self.cpus {
            let how = match &c.enable_method {
                None => "-".into(),
                Some(EnableMethod::Psci) => "psci".into(),
                Some(EnableMethod::SpinTable { release_addr }) => {
                    alloc::format!("spin-table {release_addr:#x}")
                }
                Some(EnableMethod::Other(s)) => s.clone(),
            };
            writeln!(f, "  cpu {} MPIDR {:#x} ({how})", c.path, c.mpidr)?;
        }
        for s in &self.smmus {
            write!(f, "  SMMUv3 {} at {:#x}+{:#x}", s.path, s.base, s.size)?;
            if let Some(p) = s.phandle {
                write!(f, ", phandle {p:#x}")?;
            }
            writeln!(f, "{}", if s.dma_coherent { ", coherent" } else { "" })?;
            let irqs = [
                ("combined", &s.irqs.combined),
                ("eventq", &s.irqs.eventq),
                ("priq", &s.irqs.priq),
                ("cmdq-sync", &s.irqs.cmdq_sync),
                ("gerror", &s.irqs.gerror),
            ];
            for (name, irq) in irqs {
                if let Some(irq) = irq {
                    writeln!(f, "    {name} {irq}")?;
                }
            }
        }
        for h in &self.pcie {
            write!(
                f,
                "  PCIe {} ECAM {}, buses {}-{}",
                h.path,
                h.ecam,
                h.bus_range.start(),
                h.bus_range.end()
            )?;
            if let Some(d) = h.domain {
                write!(f, ", domain {d}")?;
            }
            writeln!(f)?;
            for w in &h.windows {
                let space = match w.space {
                    PciSpace::Config => "config",
                    PciSpace::Io => "io",
                    PciSpace::Mem32 => "mem32",
                    PciSpace::Mem64 => "mem64",
                };
                let pf = if w.prefetchable { " prefetchable" } else { "" };
                writeln!(
                    f,
                    "    {space}{pf} pci {:#x} at cpu {:#x}, size {:#x}",
                    w.pci_addr, w.cpu_addr, w.size
                )?;
            }
            map(f, "iommu-map", &h.iommu_map)?;
            map(f, "msi-map", &h.msi_map)?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}
