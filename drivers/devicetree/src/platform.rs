//! The platform description and how each part is read.
use crate::error::{DtError, NodeError};
use crate::pci::{self, PcieHost};
use crate::tree::{join, Tree};
use crate::{blob, Interrupt, Region};
use alloc::string::String;
use alloc::vec::Vec;

type Res<T> = Result<T, DtError>;

/// Everything this crate reads from a devicetree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// The root's `model`, if any.
    pub model: Option<String>,
    /// The blob's `totalsize`: how much memory to keep reserved for it.
    pub blob_size: usize,
    /// Every enabled memory node's regions, in tree order (empty ones left out).
    pub ram: Vec<Region>,
    /// The header's memory reservation block (`/memreserve/`).
    pub reserved: Vec<Region>,
    /// `/reserved-memory` children with a `reg`: RAM that is not ours to
    /// allocate (firmware, secure world, shared buffers).
    pub reserved_memory: Vec<ReservedMemory>,
    pub chosen: Option<Chosen>,
    /// The UART `/chosen/stdout-path` names, else the first enabled one
    /// (see [`stdout`]).
    pub console: Option<Uart>,
    pub fw_cfg: Option<FwCfg>,
    pub gic: Gic,
    pub timer: Timer,
    pub psci: Option<Psci>,
    /// Enabled CPUs, in tree order.
    pub cpus: Vec<Cpu>,
    pub pcie: Vec<PcieHost>,
    pub smmus: Vec<SmmuV3>,
    /// Optional facts that were absent or ignored, for the boot log.
    pub notes: Vec<Note>,
}

/// An optional fact that was absent, or something ignored, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub path: String,
    pub message: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chosen {
    pub bootargs: Option<String>,
    /// `stdout-path` as written (it may be an alias, and may carry `:options`).
    pub stdout_path: Option<String>,
    /// The path of the node it names, when it names one.
    pub stdout: Option<String>,
}

/// A `/reserved-memory` child with a static placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservedMemory {
    pub path: String,
    pub regions: Vec<Region>,
    /// `no-map`: not even to be mapped (speculative accesses would hurt).
    pub no_map: bool,
}

/// A serial port this crate recognises as a console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uart {
    pub path: String,
    pub kind: UartKind,
    pub base: u64,
    pub size: u64,
    pub interrupt: Option<Interrupt>,
    /// The line rate: `/chosen/stdout-path`'s options (`serial0:115200n8`)
    /// for the stdout node, else `current-speed`.
    pub baud: Option<u32>,
    /// The UART's input clock (`clock-frequency`), which a 16550 divisor
    /// needs; absent, the rate firmware programmed has to stay.
    pub clock_frequency: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PL011 (`arm,pl011`).
    Pl011,
    /// The SBSA generic UART (`arm,sbsa-uart`): the PL011 subset without
    /// the baud, line and control registers, which firmware owns.
    SbsaUart,
    /// A 16550-compatible UART on MMIO: register `n` at `n << reg_shift`,
    /// accessed `reg_io_width` bytes wide (1 or 4).
    Ns16550 { reg_shift: u32, reg_io_width: u32 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwCfg {
    pub path: String,
    pub base: u64,
    pub size: u64,
    pub dma_coherent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gic {
    V2(GicV2),
    V3(GicV3),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GicV3 {
    pub path: String,
    pub phandle: Option<u32>,
    pub distributor: Region,
    /// `#redistributor-regions` regions (default 1), after the distributor in `reg`.
    pub redistributors: Vec<Region>,
    pub redistributor_stride: Option<u64>,
    /// The virtualization maintenance interrupt, when described.
    pub maintenance: Option<Interrupt>,
    /// Enabled `arm,gic-v3-its` children.
    pub its: Vec<Its>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Its {
    pub path: String,
    pub base: u64,
    pub size: u64,
    /// What `msi-map`/`msi-parent` name it by.
    pub phandle: Option<u32>,
    pub msi_controller: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GicV2 {
    pub path: String,
    pub phandle: Option<u32>,
    pub distributor: Region,
    pub cpu_interface: Region,
    /// Enabled `arm,gic-v2m-frame` children (MSI frames).
    pub v2m: Vec<V2mFrame>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2mFrame {
    pub path: String,
    pub base: u64,
    pub size: u64,
    pub phandle: Option<u32>,
}

/// The generic timer's interrupts, in the binding's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timer {
    pub path: String,
    pub secure_phys: Interrupt,
    /// The EL1 physical timer a non-secure kernel uses.
    pub nonsecure_phys: Interrupt,
    pub virt: Interrupt,
    pub hyp_phys: Interrupt,
    pub hyp_virt: Option<Interrupt>,
    /// `clock-frequency`: the counter's rate, for firmware that leaves
    /// CNTFRQ_EL0 unprogrammed.
    pub clock_frequency: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsciMethod {
    Hvc,
    Smc,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Psci {
    pub path: String,
    pub method: PsciMethod,
    /// The first (most specific) compatible, e.g. "arm,psci-1.0".
    pub compatible: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnableMethod {
    Psci,
    SpinTable { release_addr: u64 },
    Other(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpu {
    pub path: String,
    /// The MPIDR affinity fields `reg` holds.
    pub mpidr: u64,
    pub enable_method: Option<EnableMethod>,
}

/// SMMUv3 wired interrupts by `interrupt-names`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SmmuIrqs {
    pub combined: Option<Interrupt>,
    pub eventq: Option<Interrupt>,
    pub priq: Option<Interrupt>,
    pub cmdq_sync: Option<Interrupt>,
    pub gerror: Option<Interrupt>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmmuV3 {
    pub path: String,
    pub base: u64,
    pub size: u64,
    /// What `iommu-map`/`iommus` name it by.
    pub phandle: Option<u32>,
    pub irqs: SmmuIrqs,
    pub dma_coherent: bool,
    pub iommu_cells: u32,
}

const PL011: &[&str] = &["arm,pl011"];
const SBSA_UART: &[&str] = &["arm,sbsa-uart"];
const NS16550: &[&str] = &[
    "ns16550a",
    "ns16550",
    "ns16450",
    "ns8250",
    "snps,dw-apb-uart",
];
const GICV3: &[&str] = &["arm,gic-v3"];
const GICV2: &[&str] = &[
    "arm,gic-400",
    "arm,cortex-a15-gic",
    "arm,cortex-a9-gic",
    "arm,cortex-a7-gic",
    "arm,pl390",
];
const TIMER: &[&str] = &["arm,armv8-timer", "arm,armv7-timer"];
const PSCI: &[&str] = &["arm,psci-1.0", "arm,psci-0.2", "arm,psci"];

pub(crate) struct Notes(pub Vec<Note>);

impl Notes {
    pub fn add(&mut self, path: &str, message: &'static str) {
        self.0.push(Note {
            path: path.into(),
            message,
        });
    }
}

impl Platform {
    /// Reads the devicetree blob in `blob` (at least `totalsize` bytes; see
    /// [`crate::blob_size`]).
    pub fn parse(blob: &[u8]) -> Result<Platform, DtError> {
        let checked = blob::check(blob)?;
        let t = Tree::new(&checked.blob)?;
        let mut notes = Notes(Vec::new());
        let chosen = chosen(&t, &mut notes)?;
        let stdout = chosen.as_ref().and_then(|c| c.1);
        let stdout_options = chosen.as_ref().and_then(|c| c.0.stdout_path.clone());
        let smmus = smmus(&t, &mut notes)?;
        if smmus.is_empty() {
            notes.add("/", "no arm,smmu-v3 node");
        }
        Ok(Platform {
            model: t.string(0, "model")?,
            blob_size: checked.blob.len(),
            ram: ram(&t)?,
            reserved: checked.reserved,
            reserved_memory: reserved_memory(&t, &mut notes)?,
            console: console(&t, stdout, stdout_options.as_deref(), &mut notes)?,
            chosen: chosen.map(|c| c.0),
            fw_cfg: fw_cfg(&t, &mut notes)?,
            gic: gic(&t, &mut notes)?,
            timer: timer(&t)?,
            psci: psci(&t, &mut notes)?,
            cpus: cpus(&t, &mut notes)?,
            pcie: pci::hosts(&t, &mut notes)?,
            smmus,
            notes: notes.0,
        })
    }
}

fn first(
    t: &Tree,
    compat: &'static [&'static str],
    notes: &mut Notes,
    what: &'static str,
) -> Option<usize> {
    let mut all = t.find_all(compat);
    let i = all.next();
    if let Some(extra) = all.next() {
        notes.add(&t.nodes[extra].path, what);
    }
    i
}

fn ram(t: &Tree) -> Res<Vec<Region>> {
    let mut out = Vec::new();
    for i in 0..t.nodes.len() {
        // device_type is what the spec requires; some loaders only name it.
        let named = t.nodes[i].parent == Some(0) && t.name(i).split('@').next() == Some("memory");
        if (t.prop(i, "device_type") == Some(b"memory\0") || named) && t.enabled(i) {
            out.extend(t.reg(i)?.into_iter().filter(|r| r.size > 0));
        }
    }
    if out.is_empty() {
        return Err(DtError::Missing {
            what: "memory node with a non-empty reg",
        });
    }
    Ok(out)
}

/// /chosen, and the index of the node its stdout-path names.
fn chosen(t: &Tree, notes: &mut Notes) -> Res<Option<(Chosen, Option<usize>)>> {
    let Some(c) = t.children(0).find(|&i| t.name(i) == "chosen") else {
        notes.add("/", "no /chosen node");
        return Ok(None);
    };
    let bootargs = t.string(c, "bootargs")?;
    let stdout_path = match t.string(c, "stdout-path")? {
        Some(s) => Some(s),
        None => t.string(c, "linux,stdout-path")?,
    };
    let node = stdout_path.as_deref().and_then(|p| {
        let p = p.split(':').next().unwrap_or(p);
        if p.starts_with('/') {
            return t.by_path(p);
        }
        let aliases = t.children(0).find(|&i| t.name(i) == "aliases")?;
        let target = t.prop(aliases, p)?.strip_suffix(&[0])?;
        t.by_path(core::str::from_utf8(target).ok()?)
    });
    match (&stdout_path, node) {
        (None, _) => notes.add(&t.nodes[c].path, "no stdout-path"),
        (Some(_), None) => notes.add(&t.nodes[c].path, "stdout-path names no node"),
        _ => {}
    }
    let stdout = node.map(|n| t.path(n));
    Ok(Some((
        Chosen {
            bootargs,
            stdout_path,
            stdout,
        },
        node,
    )))
}

/// What kind of UART node `i` is, if one this crate drives.
fn uart_kind(t: &Tree, i: usize) -> Res<Option<UartKind>> {
    if t.compatible(i, SBSA_UART) {
        return Ok(Some(UartKind::SbsaUart));
    }
    if t.compatible(i, PL011) {
        return Ok(Some(UartKind::Pl011));
    }
    if !t.compatible(i, NS16550) {
        return Ok(None);
    }
    let reg_shift = t.u32(i, "reg-shift")?.unwrap_or(0);
    if reg_shift > 3 {
        let kind = NodeError::BadValue {
            value: reg_shift.into(),
        };
        return Err(t.err(i, "reg-shift", kind));
    }
    let reg_io_width = t.u32(i, "reg-io-width")?.unwrap_or(1);
    if !matches!(reg_io_width, 1 | 4) {
        let kind = NodeError::BadValue {
            value: reg_io_width.into(),
        };
        return Err(t.err(i, "reg-io-width", kind));
    }
    Ok(Some(UartKind::Ns16550 {
        reg_shift,
        reg_io_width,
    }))
}

/// The baud rate at the start of a `stdout-path`'s options (`115200n8`).
fn baud_option(stdout_path: &str) -> Option<u32> {
    let (_, options) = stdout_path.split_once(':')?;
    let digits = options.len()
        - options
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .len();
    options[..digits].parse().ok()
}

/// The console: the enabled UART stdout-path names, else the first enabled
/// UART in tree order.
fn console(
    t: &Tree,
    stdout: Option<usize>,
    stdout_path: Option<&str>,
    notes: &mut Notes,
) -> Res<Option<Uart>> {
    let mut chosen = None;
    if let Some(i) = stdout {
        match uart_kind(t, i)? {
            Some(kind) if t.enabled(i) => {
                chosen = Some((i, kind, stdout_path.and_then(baud_option)))
            }
            _ => notes.add(
                &t.nodes[i].path,
                "stdout is not an enabled UART this kernel drives; using the first one",
            ),
        }
    }
    if chosen.is_none() {
        for i in (0..t.nodes.len()).filter(|&i| t.enabled(i)) {
            if let Some(kind) = uart_kind(t, i)? {
                chosen = Some((i, kind, None));
                break;
            }
        }
    }
    let Some((i, kind, baud)) = chosen else {
        notes.add("/", "no UART node");
        return Ok(None);
    };
    let r = t.reg_min(i, 1)?[0];
    let interrupt = t.interrupts(i)?.and_then(|v| v.first().copied());
    let baud = match baud {
        Some(b) => Some(b),
        None => t.u32(i, "current-speed")?,
    };
    Ok(Some(Uart {
        path: t.path(i),
        kind,
        base: r.base,
        size: r.size,
        interrupt,
        baud,
        clock_frequency: t.u32(i, "clock-frequency")?,
    }))
}

/// Only the console, for the early console: the blob's checks, /chosen and
/// the UART nodes, so a mistake elsewhere in the tree still gets reported
/// on it.
pub fn stdout(blob: &[u8]) -> Result<Option<Uart>, DtError> {
    let checked = blob::check(blob)?;
    let t = Tree::new(&checked.blob)?;
    let mut notes = Notes(Vec::new());
    let chosen = chosen(&t, &mut notes)?;
    let stdout = chosen.as_ref().and_then(|c| c.1);
    let path = chosen.as_ref().and_then(|c| c.0.stdout_path.as_deref());
    console(&t, stdout, path, &mut notes)
}

/// `/reserved-memory` children that have a `reg` (statically placed);
/// those with only a `size` ask the OS to allocate and are left to it.
fn reserved_memory(t: &Tree, notes: &mut Notes) -> Res<Vec<ReservedMemory>> {
    let Some(r) = t.children(0).find(|&i| t.name(i) == "reserved-memory") else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for c in t.children(r).filter(|&c| t.enabled(c)) {
        if !t.has(c, "reg") {
            notes.add(
                &t.nodes[c].path,
                "dynamically placed reserved memory ignored",
            );
            continue;
        }
        out.push(ReservedMemory {
            path: t.path(c),
            regions: t.reg(c)?.into_iter().filter(|r| r.size > 0).collect(),
            no_map: t.has(c, "no-map"),
        });
    }
    Ok(out)
}

fn fw_cfg(t: &Tree, notes: &mut Notes) -> Res<Option<FwCfg>> {
    let Some(i) = first(t, &["qemu,fw-cfg-mmio"], notes, "second fw_cfg ignored") else {
        notes.add("/", "no qemu,fw-cfg-mmio node");
        return Ok(None);
    };
    let r = t.reg_min(i, 1)?[0];
    let dma_coherent = t.has(i, "dma-coherent");
    Ok(Some(FwCfg {
        path: t.path(i),
        base: r.base,
        size: r.size,
        dma_coherent,
    }))
}

fn gic(t: &Tree, notes: &mut Notes) -> Res<Gic> {
    if let Some(i) = first(t, GICV3, notes, "second GICv3 ignored") {
        let n = t.u32(i, "#redistributor-regions")?.unwrap_or(1);
        if n == 0 {
            let kind = NodeError::BadValue { value: 0 };
            return Err(t.err(i, "#redistributor-regions", kind));
        }
        let reg = t.reg_min(i, (n as usize).saturating_add(1))?;
        let redistributor_stride = match t.cells(i, "redistributor-stride")? {
            None => None,
            Some(c) if c.len() == 2 => Some(join(&c)),
            Some(c) => {
                let kind = NodeError::BadLength {
                    len: c.len() * 4,
                    unit: 8,
                };
                return Err(t.err(i, "redistributor-stride", kind));
            }
        };
        let mut its = Vec::new();
        for c in t
            .children(i)
            .filter(|&c| t.enabled(c) && t.compatible(c, &["arm,gic-v3-its"]))
        {
            let r = t.reg_min(c, 1)?[0];
            let (phandle, msi_controller) = (t.phandle(c), t.has(c, "msi-controller"));
            its.push(Its {
                path: t.path(c),
                base: r.base,
                size: r.size,
                phandle,
                msi_controller,
            });
        }
        if its.is_empty() {
            notes.add(&t.nodes[i].path, "GICv3 without an ITS");
        }
        return Ok(Gic::V3(GicV3 {
            path: t.path(i),
            phandle: t.phandle(i),
            distributor: reg[0],
            redistributors: reg[1..=n as usize].to_vec(),
            redistributor_stride,
            maintenance: t.interrupts(i)?.and_then(|v| v.first().copied()),
            its,
        }));
    }
    let i = first(t, GICV2, notes, "second GICv2 ignored").ok_or(DtError::Missing {
        what: "arm,gic-v3 or GICv2 interrupt controller",
    })?;
    let reg = t.reg_min(i, 2)?;
    let mut v2m = Vec::new();
    for c in t
        .children(i)
        .filter(|&c| t.enabled(c) && t.compatible(c, &["arm,gic-v2m-frame"]))
    {
        let r = t.reg_min(c, 1)?[0];
        v2m.push(V2mFrame {
            path: t.path(c),
            base: r.base,
            size: r.size,
            phandle: t.phandle(c),
        });
    }
    Ok(Gic::V2(GicV2 {
        path: t.path(i),
        phandle: t.phandle(i),
        distributor: reg[0],
        cpu_interface: reg[1],
        v2m,
    }))
}

fn timer(t: &Tree) -> Res<Timer> {
    let i = t.find_all(TIMER).next().ok_or(DtError::Missing {
        what: "arm,armv8-timer node",
    })?;
    let irqs = t.interrupts(i)?;
    let irqs = irqs.ok_or_else(|| t.err(i, "interrupts", NodeError::MissingProperty))?;
    if irqs.len() < 4 {
        let kind = NodeError::TooFewEntries {
            need: 4,
            have: irqs.len(),
        };
        return Err(t.err(i, "interrupts", kind));
    }
    Ok(Timer {
        path: t.path(i),
        secure_phys: irqs[0],
        nonsecure_phys: irqs[1],
        virt: irqs[2],
        hyp_phys: irqs[3],
        hyp_virt: irqs.get(4).copied(),
        clock_frequency: t.u32(i, "clock-frequency")?,
    })
}

fn psci(t: &Tree, notes: &mut Notes) -> Res<Option<Psci>> {
    let Some(i) = t.find_all(PSCI).next() else {
        notes.add("/", "no PSCI node");
        return Ok(None);
    };
    let method = match t.string(i, "method")?.as_deref() {
        Some("hvc") => PsciMethod::Hvc,
        Some("smc") => PsciMethod::Smc,
        Some(_) => return Err(t.err(i, "method", NodeError::BadString)),
        None => return Err(t.err(i, "method", NodeError::MissingProperty)),
    };
    let compatible = t.string(i, "compatible")?.unwrap_or_default();
    Ok(Some(Psci {
        path: t.path(i),
        method,
        compatible,
    }))
}

fn cpus(t: &Tree, notes: &mut Notes) -> Res<Vec<Cpu>> {
    let c = t.children(0).find(|&i| t.name(i) == "cpus");
    let c = c.ok_or(DtError::Missing { what: "/cpus node" })?;
    let ac = t.address_cells(c, &[1, 2])?;
    t.size_cells(c, &[0])?;
    let mut out = Vec::new();
    for i in t
        .children(c)
        .filter(|&i| t.prop(i, "device_type") == Some(b"cpu\0"))
    {
        if !t.enabled(i) {
            notes.add(&t.nodes[i].path, "disabled CPU left out");
            continue;
        }
        let reg = t
            .cells(i, "reg")?
            .ok_or_else(|| t.err(i, "reg", NodeError::MissingProperty))?;
        if reg.len() != ac {
            let kind = NodeError::BadLength {
                len: reg.len() * 4,
                unit: ac * 4,
            };
            return Err(t.err(i, "reg", kind));
        }
        let enable_method = match t.string(i, "enable-method")? {
            None => None,
            Some(m) if m == "psci" => Some(EnableMethod::Psci),
            Some(m) if m == "spin-table" => {
                let a = t.cells(i, "cpu-release-addr")?;
                let a =
                    a.ok_or_else(|| t.err(i, "cpu-release-addr", NodeError::MissingProperty))?;
                if !(1..=2).contains(&a.len()) {
                    let kind = NodeError::BadLength {
                        len: a.len() * 4,
                        unit: 8,
                    };
                    return Err(t.err(i, "cpu-release-addr", kind));
                }
                Some(EnableMethod::SpinTable {
                    release_addr: join(&a),
                })
            }
            Some(m) => Some(EnableMethod::Other(m)),
        };
        out.push(Cpu {
            path: t.path(i),
            mpidr: join(&reg),
            enable_method,
        });
    }
    if out.is_empty() {
        return Err(DtError::Missing {
            what: "enabled CPU node",
        });
    }
    Ok(out)
}

fn smmus(t: &Tree, notes: &mut Notes) -> Res<Vec<SmmuV3>> {
    let mut out = Vec::new();
    for i in t.find_all(&["arm,smmu-v3"]) {
        let r = t.reg_min(i, 1)?[0];
        let iommu_cells = t.u32(i, "#iommu-cells")?;
        let iommu_cells =
            iommu_cells.ok_or_else(|| t.err(i, "#iommu-cells", NodeError::MissingProperty))?;
        if iommu_cells != 1 {
            let kind = NodeError::BadCells { cells: iommu_cells };
            return Err(t.err(i, "#iommu-cells", kind));
        }
        let mut irqs = SmmuIrqs::default();
        match (t.interrupts(i)?, t.strings(i, "interrupt-names")?) {
            (None, _) => notes.add(&t.nodes[i].path, "SMMUv3 without wired interrupts"),
            (Some(_), None) => {
                return Err(t.err(i, "interrupt-names", NodeError::MissingProperty));
            }
            (Some(v), Some(n)) if v.len() != n.len() => {
                let kind = NodeError::TooFewEntries {
                    need: v.len(),
                    have: n.len(),
                };
                return Err(t.err(i, "interrupt-names", kind));
            }
            (Some(v), Some(n)) => {
                for (irq, name) in v.into_iter().zip(n) {
                    let slot = match name.as_str() {
                        "combined" => &mut irqs.combined,
                        "eventq" => &mut irqs.eventq,
                        "priq" => &mut irqs.priq,
                        "cmdq-sync" => &mut irqs.cmdq_sync,
                        "gerror" => &mut irqs.gerror,
                        _ => {
                            notes.add(&t.nodes[i].path, "unknown SMMUv3 interrupt name ignored");
                            continue;
                        }
                    };
                    *slot = Some(irq);
                }
            }
        }
        out.push(SmmuV3 {
            path: t.path(i),
            base: r.base,
            size: r.size,
            phandle: t.phandle(i),
            irqs,
            dma_coherent: t.has(i, "dma-coherent"),
            iommu_cells,
        });
    }
    Ok(out)
}
