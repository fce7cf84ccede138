//! The local APIC in xAPIC (MMIO) mode: this CPU's interrupt controller,
//! its periodic timer, and the INIT/startup IPIs that start the others.
//! The legacy 8259 PICs are masked and disconnected (LINT0 masked).
use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite, WriteOnly};
use tock_registers::{register_bitfields, register_structs};
use x86_64::instructions::port::Port;
use x86_64::registers::model_specific::Msr;

pub const TIMER_VECTOR: u64 = 0x30;
pub const SPURIOUS_VECTOR: u64 = 0xff;
pub const TICK_HZ: u64 = 100;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
/// Polls of the ICR delivery-status bit before giving up.
const IPI_SPIN_LIMIT: u32 = 1_000_000;

register_bitfields![u32,
    ID [
        ID OFFSET(24) NUMBITS(8) []
    ],
    SVR [
        ENABLE OFFSET(8) NUMBITS(1) [],
        VECTOR OFFSET(0) NUMBITS(8) []
    ],
    LVT [
        TIMER_MODE OFFSET(17) NUMBITS(2) [OneShot = 0, Periodic = 1],
        MASK OFFSET(16) NUMBITS(1) [],
        VECTOR OFFSET(0) NUMBITS(8) []
    ],
    DIVIDE [
        /// Bits 3, 1:0 of the divide configuration; 0b0011 divides by 16.
        VALUE OFFSET(0) NUMBITS(4) [By16 = 0b0011]
    ],
    ICR_LOW [
        SHORTHAND OFFSET(18) NUMBITS(2) [None = 0, AllButSelf = 3],
        TRIGGER OFFSET(15) NUMBITS(1) [Edge = 0, Level = 1],
        LEVEL OFFSET(14) NUMBITS(1) [Deassert = 0, Assert = 1],
        DELIVERY_STATUS OFFSET(12) NUMBITS(1) [Idle = 0, Pending = 1],
        DELIVERY_MODE OFFSET(8) NUMBITS(3) [Fixed = 0, Init = 5, Startup = 6],
        VECTOR OFFSET(0) NUMBITS(8) []
    ],
];

register_structs! {
    LapicRegs {
        (0x000 => _reserved0),
        (0x020 => id: ReadOnly<u32, ID::Register>),
        (0x024 => _reserved1),
        (0x080 => tpr: ReadWrite<u32>),
        (0x084 => _reserved2),
        (0x0b0 => eoi: WriteOnly<u32>),
        (0x0b4 => _reserved3),
        (0x0f0 => svr: ReadWrite<u32, SVR::Register>),
        (0x0f4 => _reserved4),
        (0x300 => icr_low: ReadWrite<u32, ICR_LOW::Register>),
        (0x304 => _reserved5),
        (0x310 => icr_high: ReadWrite<u32>),
        (0x314 => _reserved6),
        (0x320 => lvt_timer: ReadWrite<u32, LVT::Register>),
        (0x324 => _reserved7),
        (0x350 => lvt_lint0: ReadWrite<u32, LVT::Register>),
        (0x354 => _reserved8),
        (0x370 => lvt_error: ReadWrite<u32, LVT::Register>),
        (0x374 => _reserved9),
        (0x380 => timer_initial: ReadWrite<u32>),
        (0x384 => _reserved10),
        (0x390 => timer_current: ReadOnly<u32>),
        (0x394 => _reserved11),
        (0x3e0 => timer_divide: ReadWrite<u32, DIVIDE::Register>),
        (0x3e4 => _reserved12),
        (0x400 => @END),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApicError {
    /// IA32_APIC_BASE says the APIC is globally disabled.
    Disabled,
    /// The firmware left the APIC in x2APIC mode; this code drives xAPIC MMIO.
    X2ApicMode,
    /// The register block could not be mapped as device memory (the log
    /// says why: beyond the CPU's reach, or inside RAM).
    NotMapped(u64),
    /// An IPI stayed pending.
    IpiNotDelivered,
}

impl fmt::Display for ApicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApicError::Disabled => write!(f, "the local APIC is disabled in IA32_APIC_BASE"),
            ApicError::X2ApicMode => write!(f, "the local APIC is in x2APIC mode (xAPIC expected)"),
            ApicError::NotMapped(b) => {
                write!(
                    f,
                    "local APIC base {b:#x} could not be mapped as device memory"
                )
            }
            ApicError::IpiNotDelivered => {
                write!(f, "IPI still pending after {IPI_SPIN_LIMIT} polls")
            }
        }
    }
}

/// Register block address; 0 until `init_boot`.
static BASE: AtomicUsize = AtomicUsize::new(0);
/// Timer counts per tick (bus clock / 16 / TICK_HZ), from the calibration.
static TICK_COUNT: AtomicU32 = AtomicU32::new(0);

fn regs() -> Option<&'static LapicRegs> {
    let base = BASE.load(Ordering::Acquire);
    // SAFETY: a non-zero base was checked by `init_boot` to be the LAPIC's
    // register block, identity-mapped uncached; every CPU sees its own
    // LAPIC at that address.
    (base != 0).then(|| unsafe { &*(base as *const LapicRegs) })
}

/// Masks both 8259 PICs, then finds the LAPIC. Boot CPU, once.
pub fn init_boot() -> Result<(), ApicError> {
    // SAFETY: the PIC data ports; writing 0xff masks every line.
    unsafe {
        Port::<u8>::new(0x21).write(0xff);
        Port::<u8>::new(0xa1).write(0xff);
    }
    // SAFETY: IA32_APIC_BASE exists on every x86_64 CPU; reading has no side effects.
    let msr = unsafe { Msr::new(IA32_APIC_BASE).read() };
    if msr & APIC_BASE_ENABLE == 0 {
        return Err(ApicError::Disabled);
    }
    if msr & APIC_BASE_X2APIC != 0 {
        return Err(ApicError::X2ApicMode);
    }
    let base = msr & 0x000f_ffff_ffff_f000;
    let page = kernel::addr::PhysRange::new(base, 0x1000);
    if !crate::mapping::map_device(page, "local APIC") {
        return Err(ApicError::NotMapped(base));
    }
    BASE.store(base as usize, Ordering::Release);
    BOOT_APIC_ID.store(id(), Ordering::Relaxed);
    Ok(())
}

/// This CPU's APIC id (0 before `init_boot`).
pub fn id() -> u32 {
    regs().map_or(0, |r| r.id.read(ID::ID))
}

/// Starts the timer counting down from the maximum, masked, for calibration.
pub fn start_calibration_count() {
    if let Some(r) = regs() {
        r.timer_divide.write(DIVIDE::VALUE::By16);
        r.lvt_timer.write(
            LVT::MASK::SET + LVT::TIMER_MODE::OneShot + LVT::VECTOR.val(TIMER_VECTOR as u32),
        );
        r.timer_initial.set(u32::MAX);
    }
}

pub fn current_count() -> u32 {
    regs().map_or(0, |r| r.timer_current.get())
}

pub fn set_tick_count(counts_per_tick: u32) {
    TICK_COUNT.store(counts_per_tick.max(1), Ordering::Relaxed);
}

/// Software-enables this CPU's LAPIC and starts its periodic tick.
pub fn init_cpu() {
    let Some(r) = regs() else { return };
    r.tpr.set(0);
    r.svr
        .write(SVR::ENABLE::SET + SVR::VECTOR.val(SPURIOUS_VECTOR as u32));
    // ExtINT from the (masked) PICs and LAPIC errors stay off.
    r.lvt_lint0.write(LVT::MASK::SET);
    r.lvt_error.write(LVT::MASK::SET);
    r.timer_divide.write(DIVIDE::VALUE::By16);
    r.lvt_timer
        .write(LVT::TIMER_MODE::Periodic + LVT::VECTOR.val(TIMER_VECTOR as u32));
    r.timer_initial.set(TICK_COUNT.load(Ordering::Relaxed));
}

/// Ends the interrupt being handled.
pub fn eoi() {
    if let Some(r) = regs() {
        r.eoi.set(0);
    }
}

/// The boot CPU's APIC id (MSIs are delivered there).
pub fn boot_apic_id() -> u32 {
    BOOT_APIC_ID.load(core::sync::atomic::Ordering::Relaxed)
}

static BOOT_APIC_ID: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

pub fn on_timer(cpu: usize) {
    crate::smp::timer_tick(cpu);
    if let Some(r) = regs() {
        r.eoi.set(0);
    }
}

fn send_ipi(
    cmd: tock_registers::fields::FieldValue<u32, ICR_LOW::Register>,
) -> Result<(), ApicError> {
    let r = regs().ok_or(ApicError::Disabled)?;
    r.icr_high.set(0);
    r.icr_low.write(cmd);
    for _ in 0..IPI_SPIN_LIMIT {
        if r.icr_low.matches_all(ICR_LOW::DELIVERY_STATUS::Idle) {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(ApicError::IpiNotDelivered)
}

/// INIT to every other CPU: they reset and wait for a startup IPI.
pub fn send_init_to_others() -> Result<(), ApicError> {
    send_ipi(
        ICR_LOW::SHORTHAND::AllButSelf
            + ICR_LOW::TRIGGER::Level
            + ICR_LOW::LEVEL::Assert
            + ICR_LOW::DELIVERY_MODE::Init,
    )
}

/// Startup IPI to every other CPU: real mode at `page << 12`.
pub fn send_startup_to_others(page: u8) -> Result<(), ApicError> {
    send_ipi(
        ICR_LOW::SHORTHAND::AllButSelf
            + ICR_LOW::LEVEL::Assert
            + ICR_LOW::DELIVERY_MODE::Startup
            + ICR_LOW::VECTOR.val(u32::from(page)),
    )
}
