//! IOMMU bring-up: from the firmware's description of a remapping unit to
//! a driver under the core, and back. One path, used by the boot flow
//! (which brings the platform's IOMMU up with every function untranslated,
//! and takes it down again before the tests) and by every self-test that
//! needs translation (which names the devices the core manages).
//!
//! Bringing up means: the driver takes over the unit the firmware names,
//! translation still off ([`IommuDriver::open`]); every function the core
//! will not manage is left untranslated (bypass STE, pass-through PASID
//! entry), so enabling translation does not cut other devices off; the
//! unit is enabled; what the firmware says of each managed device is
//! given to the driver (VT-d RMRRs); the core takes the driver
//! (`Iommu::new`) and the managed devices (`add_device`). The driver finds
//! the MSI doorbell itself from what the image hands it. Taking down
//! releases every device, turns translation off and reports what the
//! driver still holds.
//!
//! A platform may have several units (every SMMUv3 in the IORT, every
//! DRHD in the DMAR). Each PCI function is routed to the unit the
//! firmware tables put it behind ([`IommuDriver::route`]); a bring-up
//! takes one unit, with the managed functions behind it and every other
//! function behind it untranslated, and leaves the other units alone.
use crate::discovery::IommuKind;
use crate::pcie;
use alloc::format;
use alloc::vec::Vec;
use core::fmt;
use kernel::iommu::bringup::{self, Bringup};
pub use kernel::iommu::bringup::{BringupError, Up};
use kernel::iommu::check::{Checking, Violation};
use kernel::iommu::domain::{DeviceId, Fault};

#[cfg(target_arch = "aarch64")]
pub mod smmu;
#[cfg(target_arch = "x86_64")]
mod vtd;

/// What the IOMMU driver is handed: the image's HAL, checked when the
/// command line says `iommu.check` (`kernel::iommu::check`).
pub type DriverHal = Checking<crate::hal::KernelHal>;

/// The platform's IOMMU driver.
#[cfg(target_arch = "aarch64")]
pub type Driver = smmuv3::driver::SmmuHw<DriverHal>;
#[cfg(target_arch = "x86_64")]
pub type Driver = ::vtd::driver::VtdHw<DriverHal>;

/// Which stages domains use. The SMMU driver takes all three; the VT-d
/// driver uses the level its unit offers (the board's `x-flts`) and runs
/// `Stage1` only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Stage1,
    /// Primary domains only: stage 2 has no substreams.
    Stage2,
    Nested,
}

/// How the driver is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// SMMUv3: force a linear stream table.
    pub linear_stream_table: bool,
    /// The checking mode: the driver's HAL records table writes and
    /// invalidations, and every DMA verifies them.
    pub check: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            mode: Mode::Stage1,
            linear_stream_table: false,
            check: check_mode(),
        }
    }
}

/// Whether the command line asks for the checking mode (`iommu.check`).
pub fn check_mode() -> bool {
    kernel::cmdline::get(&crate::platform::get().cmdline, "iommu.check").is_some()
}

/// The driver's HAL for `opts`.
pub fn driver_hal(opts: Options) -> DriverHal {
    Checking::new(crate::hal::KernelHal, opts.check)
}

/// What the image needs of a driver beyond bring-up itself: finding the
/// unit, naming PCI functions, faults, and the firmware's facts.
pub trait IommuDriver: Bringup + Sized {
    /// The units this driver takes.
    const KIND: IommuKind;
    /// Takes over the unit whose registers are at `base`, translation
    /// still off.
    fn open(base: u64, opts: Options) -> Result<Self, BringupError<Self::Error>>;
    /// The unit the firmware tables put a PCI function behind, and the
    /// id that unit knows it by (StreamID, source id); `None` when its
    /// DMA reaches memory through no unit of this kind.
    fn route(segment: u16, f: &pci::Function) -> Option<Route>;
    fn faults(&mut self) -> Vec<Fault>;
    /// The checking mode's findings since the last call (nothing when it
    /// is off): called at each DMA.
    fn verify(&self) -> Result<(), Vec<Violation>>;
    /// After each DMA (VT-d reads its fault registers before the next
    /// fault overwrites or is merged into a pending one).
    fn after_dma(&mut self) {}
    /// What the firmware says of a device the core will manage (VT-d: its
    /// RMRRs).
    fn learn_device(&mut self, _segment: u16, _f: &pci::Function, _id: DeviceId) {}
}

/// Where a PCI function's DMA is translated: the unit's register base and
/// the id the unit knows the function by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub unit: u64,
    pub id: DeviceId,
}

/// The register bases of the platform's units the image's driver takes,
/// in the firmware tables' order.
pub fn units() -> Vec<u64> {
    crate::discovery::get().map_or_else(Vec::new, |t| {
        t.iommus
            .iter()
            .filter(|u| u.kind == <Driver as IommuDriver>::KIND)
            .map(|u| u.base)
            .collect()
    })
}

/// The unit and id of a PCI function (see [`IommuDriver::route`]).
pub fn route(segment: u16, f: &pci::Function) -> Option<Route> {
    <Driver as IommuDriver>::route(segment, f)
}

/// For messages: the unit at `base` as `kind@base`.
pub fn unit_name(base: u64) -> alloc::string::String {
    format!("{}@{base:#x}", <Driver as IommuDriver>::KIND.name())
}

/// A function the core is to manage, with its PASID width.
#[derive(Clone, Copy)]
pub struct Managed<'a> {
    pub segment: u16,
    pub f: &'a pci::Function,
    pub pasid_bits: u8,
}

/// Brings up the unit `managed` sit behind (the first unit when there
/// are none) with them under the core and every other function behind
/// that unit left untranslated (`kernel::iommu::bringup` does the
/// sequence). Managed functions behind different units are refused: one
/// core drives one unit.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub fn bring_up<H: IommuDriver>(
    opts: Options,
    managed: &[Managed<'_>],
) -> Result<Up<H>, BringupError<H::Error>> {
    let unit = match managed.first() {
        Some(m) => {
            H::route(m.segment, m.f)
                .ok_or(BringupError::NoDeviceId {
                    segment: m.segment,
                    rid: m.f.bdf.rid(),
                })?
                .unit
        }
        None => first_unit::<H>()?,
    };
    bring_up_unit(unit, opts, managed)
}

/// [`bring_up`] of the unit at `unit`.
pub fn bring_up_unit<H: IommuDriver>(
    unit: u64,
    opts: Options,
    managed: &[Managed<'_>],
) -> Result<Up<H>, BringupError<H::Error>> {
    park();
    bring_up_unparked(unit, opts, managed)
}

/// The first unit of `H`'s kind, or why there is none.
fn first_unit<H: IommuDriver>() -> Result<u64, BringupError<H::Error>> {
    crate::discovery::get()
        .and_then(|t| t.iommus.iter().find(|u| u.kind == H::KIND))
        .map(|u| u.base)
        .ok_or_else(|| unavailable(format!("this board has no {}", H::KIND.name())))
}

/// Bring-ups started since boot (the resting one included): a test
/// checks that a conformance case costs one.
static BRING_UPS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// How many bring-ups have started since boot.
pub fn bring_ups() -> u64 {
    BRING_UPS.load(core::sync::atomic::Ordering::Relaxed)
}

fn bring_up_unparked<H: IommuDriver>(
    unit: u64,
    opts: Options,
    managed: &[Managed<'_>],
) -> Result<Up<H>, BringupError<H::Error>> {
    BRING_UPS.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
    let mut devices = Vec::new();
    for m in managed {
        let route = H::route(m.segment, m.f).ok_or(BringupError::NoDeviceId {
            segment: m.segment,
            rid: m.f.bdf.rid(),
        })?;
        if route.unit != unit {
            return Err(BringupError::Inconsistent(
                "a managed function sits behind another IOMMU than the one brought up",
            ));
        }
        devices.push(bringup::Managed {
            id: route.id,
            pasid_bits: m.pasid_bits,
            caps: device_caps(m.f),
        });
    }
    // Only the functions behind this unit: the others' ids mean nothing
    // to it (another unit may give the same id to another function).
    let all: Vec<DeviceId> = pcie::buses()
        .flat_map(|bus| {
            bus.functions
                .iter()
                .filter_map(move |f| H::route(bus.segment, f))
        })
        .filter(|r| r.unit == unit)
        .map(|r| r.id)
        .collect();
    let hw = H::open(unit, opts)?;
    bringup::bring_up(hw, &devices, &all, |hw, i| {
        let m = &managed[i];
        hw.learn_device(m.segment, m.f, devices[i].id);
    })
}

/// What `f`'s ATS and PRI capabilities offer the core.
fn device_caps(f: &pci::Function) -> kernel::iommu::domain::DeviceCaps {
    use pci::caps::Capability;
    let ats = f.find_cap(|c| match c {
        Capability::Ats {
            invalidate_queue_depth,
            ..
        } => Some(*invalidate_queue_depth),
        _ => None,
    });
    kernel::iommu::domain::DeviceCaps {
        ats: ats.is_some(),
        ats_queue_depth: ats.unwrap_or(0),
        pri: f
            .find_cap(|c| matches!(c, Capability::Pri { .. }).then_some(()))
            .is_some(),
    }
}

/// The boot flow's bring-up: the platform's IOMMU up with every function
/// untranslated, then down again (the self-tests take it over case by
/// case). Says on the console what happened; a failure is logged, not
/// fatal: the tests report it in detail.
pub fn boot_check() {
    if check_mode() {
        log::info!(
            "iommu.check: the driver's table writes and invalidations are verified at each DMA"
        );
    }
    let units = units();
    if units.is_empty() {
        let why = first_unit::<Driver>().err().map(|e| format!("{e}"));
        log::info!("none brought up: {}", why.unwrap_or_default());
    }
    for unit in units {
        let name = unit_name(unit);
        match bring_up_unit::<Driver>(unit, Options::default(), &[]) {
            Ok(mut up) => {
                let n = up.untranslated.len();
                match up.tear_down() {
                    Ok((0, 0)) => {
                        log::info!("{name} up with {n} function(s) untranslated, and down again")
                    }
                    Ok((pages, bytes)) => log::error!(
                        "{name} down, but {pages} page-table page(s) and {bytes} bytes of \
                         tables held"
                    ),
                    Err(e) => log::error!("{name} does not come down: {e}"),
                }
            }
            Err(BringupError::Unavailable(why)) => log::info!("{name} not brought up: {why}"),
            Err(e) => log::error!("{name}: bring-up failed: {e}"),
        }
    }
}

/// The platform at rest between IOMMU tests, when every function's DMA
/// goes untranslated. An SMMU that is off aborts every transaction (its
/// driver sets GBPA.ABORT before SMMUEN is set or cleared), so on Arm
/// the rest is each SMMU up with every function behind it on a bypass
/// STE; VT-d with translation off passes DMA, so x86 needs nothing.
#[cfg(target_arch = "aarch64")]
static RESTING: spin::Mutex<Vec<Resting>> = spin::Mutex::new(Vec::new());

/// The resting bring-up of one unit, held in [`RESTING`].
#[cfg(target_arch = "aarch64")]
struct Resting {
    unit: u64,
    up: Up<Driver>,
}

// SAFETY: only the boot CPU, which runs the self-tests, creates, uses and
// drops the resting state (secondary CPUs only take timer ticks), so the
// checking mode's `Rc`-shared state inside the driver's HAL is never
// reached from two CPUs; the mutex orders the boot CPU's own accesses.
#[cfg(target_arch = "aarch64")]
#[allow(unsafe_code)]
unsafe impl Send for Resting {}

/// Makes DMA of every function untranslated for a test that does not
/// bring the IOMMU up itself (see `RESTING`); the next [`bring_up`] takes
/// this state down first. An IOMMU a test holds up is left to it.
pub fn untranslated() -> Result<(), alloc::string::String> {
    #[cfg(target_arch = "aarch64")]
    {
        let mut resting = RESTING.lock();
        for unit in units() {
            if resting.iter().any(|r| r.unit == unit) {
                continue;
            }
            let held = pcie::smmuv3_at(unit).is_some_and(|smmu| smmu.enabled());
            if held {
                continue;
            }
            match bring_up_unparked::<Driver>(unit, Options::default(), &[]) {
                Ok(up) => resting.push(Resting { unit, up }),
                Err(BringupError::Unavailable(_)) => {}
                Err(e) => {
                    return Err(format!(
                        "untranslated DMA through the SMMU at {unit:#x}: {e}"
                    ))
                }
            }
        }
    }
    Ok(())
}

/// Takes the resting state of [`untranslated`] down (the IOMMU off, DMA
/// aborted on Arm); nothing when it is not up.
pub fn park() {
    #[cfg(target_arch = "aarch64")]
    for Resting { unit, mut up } in core::mem::take(&mut *RESTING.lock()) {
        match up.tear_down() {
            Ok((0, 0)) => {}
            Ok((pages, bytes)) => log::error!(
                "resting SMMU at {unit:#x} down, but {pages} page-table page(s) and {bytes} \
                 bytes held"
            ),
            Err(e) => log::error!("resting SMMU at {unit:#x} does not come down: {e}"),
        }
    }
}

/// `what`'s absence, as an [`BringupError::Unavailable`].
pub fn unavailable<E>(what: impl fmt::Display) -> BringupError<E> {
    BringupError::Unavailable(format!("{what}"))
}
