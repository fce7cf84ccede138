//! The driver model: a driver says which functions it wants; claiming one
//! turns on its decoding and bus mastering, and nothing else's.
use crate::bar::BarKind;
use crate::config::{Bdf, ConfigSpace, CMD_BUS_MASTER, CMD_IO, CMD_MEMORY};
use crate::enumerate::{Function, Topology};
use crate::error::PciError;

pub trait Driver {
    fn matches(&self, f: &Function) -> bool;
}

impl Topology {
    /// The functions `driver` matches.
    pub fn matching<'a>(
        &'a self,
        driver: &'a dyn Driver,
    ) -> impl Iterator<Item = &'a Function> + 'a {
        self.functions.iter().filter(move |f| driver.matches(f))
    }
}

/// A claimed function: decoding and bus mastering are on until `release`.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a claim is undone with `release`"]
pub struct Claimed {
    pub bdf: Bdf,
    /// The command bits this claim turned on.
    pub enabled: u16,
}

/// Enables memory and/or I/O decoding (for the kinds of BARs it has) and
/// bus mastering for `f`. The bridges above it get memory and I/O
/// forwarding and bus mastering too, without which neither its BARs nor
/// its DMA would get through. Refuses a function with an unassigned BAR.
pub fn claim<C: ConfigSpace + ?Sized>(
    cfg: &mut C,
    topology: &Topology,
    f: &Function,
) -> Result<Claimed, PciError> {
    if let Some(bar) = f.bars.iter().find(|b| b.address.is_none()) {
        return Err(PciError::UnassignedBar {
            bdf: f.bdf,
            bar: bar.index,
        });
    }
    let mut enable = CMD_BUS_MASTER;
    for bar in &f.bars {
        enable |= match bar.kind {
            BarKind::Io => CMD_IO,
            BarKind::Mem32 | BarKind::Mem64 => CMD_MEMORY,
        };
    }
    // A bridge already open is left alone: rewriting its command register
    // makes an emulator remap its windows (QEMU rebuilds every address
    // space's view for each such write), and opening the bridges is all
    // that is wanted.
    let open = CMD_IO | CMD_MEMORY | CMD_BUS_MASTER;
    for bridge in topology.upstream_bridges(f.bdf) {
        let cmd = cfg.command(bridge);
        if cmd & open != open {
            cfg.write_command(bridge, cmd | open);
        }
    }
    let cmd = cfg.command(f.bdf);
    cfg.write_command(f.bdf, cmd | enable);
    Ok(Claimed {
        bdf: f.bdf,
        enabled: enable,
    })
}

/// Turns the function's decoding and bus mastering off (the bridges above
/// stay open: other functions may be behind them).
pub fn release<C: ConfigSpace + ?Sized>(cfg: &mut C, claimed: Claimed) {
    let cmd = cfg.command(claimed.bdf);
    cfg.write_command(claimed.bdf, cmd & !(CMD_IO | CMD_MEMORY | CMD_BUS_MASTER));
}
