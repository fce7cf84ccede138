//! The local APIC in xAPIC (MMIO) or x2APIC (MSR) mode: this CPU's
//! interrupt controller, its periodic timer, and the INIT/startup IPIs that
//! start the others, one CPU at a time. x2APIC is used when the CPU has it
//! (or firmware already enabled it): its 32-bit ids reach CPUs past id 254,
//! which xAPIC's 8-bit destination cannot.
//! The legacy 8259 PICs are masked and disconnected (LINT0 masked).
use core::fmt;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
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
/// CPUID.01H:ECX bit 21: the CPU has x2APIC mode.
const CPUID_X2APIC: u32 = 1 << 21;
/// x2APIC registers are MSRs at 0x800 + (xAPIC offset >> 4) (Intel SDM
/// vol. 3, 11.12.1.2).
mod x2 {
    pub const ID: u32 = 0x802;
    pub const TPR: u32 = 0x808;
    pub const EOI: u32 = 0x80b;
    pub const SVR: u32 = 0x80f;
    pub const ICR: u32 = 0x830;
    pub const LVT_TIMER: u32 = 0x832;
    pub const LVT_LINT0: u32 = 0x835;
    pub const LVT_ERROR: u32 = 0x837;
    pub const TIMER_INITIAL: u32 = 0x838;
    pub const TIMER_CURRENT: u32 = 0x839;
    pub const TIMER_DIVIDE: u32 = 0x83e;
}
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
        SHORTHAND OFFSET(18) NUMBITS(2) [None = 0],
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
    /// A CPU to start has an id xAPIC cannot address, and this CPU has no
    /// x2APIC mode.
    NoX2Apic(u32),
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
            ApicError::NoX2Apic(id) => write!(
                f,
                "APIC id {id:#x} needs x2APIC mode, which this CPU does not have"
            ),
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

/// Whether every CPU runs its local APIC in x2APIC mode (set by the boot
/// CPU before it starts the others).
static X2APIC: AtomicBool = AtomicBool::new(false);

fn x2() -> bool {
    X2APIC.load(Ordering::Relaxed)
}

fn rdmsr(msr: u32) -> u64 {
    // SAFETY: only x2APIC register MSRs, read while this CPU is in x2APIC
    // mode; reading them has no side effects.
    unsafe { Msr::new(msr).read() }
}

fn wrmsr(msr: u32, value: u64) {
    // SAFETY: only x2APIC register MSRs, written while this CPU is in
    // x2APIC mode, with values the SDM defines for them.
    unsafe { Msr::new(msr).write(value) }
}

fn cpu_has_x2apic() -> bool {
    let leaf1 = core::arch::x86_64::__cpuid(1);
    leaf1.ecx & CPUID_X2APIC != 0
}

/// Puts this CPU's local APIC in x2APIC mode if the boot CPU chose it.
/// Every CPU calls this before it reads its id.
pub fn enter_mode() {
    if !x2() {
        return;
    }
    // SAFETY: IA32_APIC_BASE; setting EXTD with EN already set is the
    // architectural xAPIC -> x2APIC switch and leaves the base unchanged.
    unsafe {
        let mut msr = Msr::new(IA32_APIC_BASE);
        let v = msr.read();
        if v & APIC_BASE_X2APIC == 0 {
            msr.write(v | APIC_BASE_X2APIC | APIC_BASE_ENABLE);
        }
    }
}

/// Chooses x2APIC mode on the boot CPU when it has it (or firmware
/// enabled it); refuses if `highest_id` needs it and the CPU lacks it.
/// Returns whether x2APIC mode is on.
///
/// `prefer_xapic` (`apic=xapic` on the command line) keeps xAPIC unless
/// firmware chose x2APIC or an id needs it: QEMU under `-icount` stops
/// with "Bad icount read" when the guest reads the x2APIC timer through
/// an MSR, so the runner's virtual-time benchmark asks for xAPIC.
pub fn choose_mode(highest_id: u32, prefer_xapic: bool) -> Result<bool, ApicError> {
    // SAFETY: reading IA32_APIC_BASE has no side effects.
    let already = unsafe { Msr::new(IA32_APIC_BASE).read() } & APIC_BASE_X2APIC != 0;
    let needed = highest_id > acpi_tables::madt::XAPIC_MAX_ID;
    let use_x2 = already || (cpu_has_x2apic() && (needed || !prefer_xapic));
    if !use_x2 && highest_id > acpi_tables::madt::XAPIC_MAX_ID {
        return Err(ApicError::NoX2Apic(highest_id));
    }
    X2APIC.store(use_x2, Ordering::Relaxed);
    enter_mode();
    BOOT_APIC_ID.store(id(), Ordering::Relaxed);
    Ok(use_x2)
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
        // Firmware chose x2APIC; there is no way back to xAPIC short of
        // disabling the APIC, so keep it.
        X2APIC.store(true, Ordering::Relaxed);
        BOOT_APIC_ID.store(id(), Ordering::Relaxed);
        return Ok(());
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
    if x2() {
        return rdmsr(x2::ID) as u32;
    }
    regs().map_or(0, |r| r.id.read(ID::ID))
}

/// Starts the timer counting down from the maximum, masked, for calibration.
pub fn start_calibration_count() {
    if x2() {
        wrmsr(x2::TIMER_DIVIDE, DIVIDE::VALUE::By16.value.into());
        let lvt = LVT::MASK::SET + LVT::TIMER_MODE::OneShot + LVT::VECTOR.val(TIMER_VECTOR as u32);
        wrmsr(x2::LVT_TIMER, lvt.value.into());
        wrmsr(x2::TIMER_INITIAL, u32::MAX.into());
        return;
    }
    if let Some(r) = regs() {
        r.timer_divide.write(DIVIDE::VALUE::By16);
        r.lvt_timer.write(
            LVT::MASK::SET + LVT::TIMER_MODE::OneShot + LVT::VECTOR.val(TIMER_VECTOR as u32),
        );
        r.timer_initial.set(u32::MAX);
    }
}

pub fn current_count() -> u32 {
    if x2() {
        return rdmsr(x2::TIMER_CURRENT) as u32;
    }
    regs().map_or(0, |r| r.timer_current.get())
}

pub fn set_tick_count(counts_per_tick: u32) {
    TICK_COUNT.store(counts_per_tick.max(1), Ordering::Relaxed);
}

/// Software-enables this CPU's LAPIC and starts its periodic tick.
pub fn init_cpu() {
    if x2() {
        wrmsr(x2::TPR, 0);
        let svr = SVR::ENABLE::SET + SVR::VECTOR.val(SPURIOUS_VECTOR as u32);
        wrmsr(x2::SVR, svr.value.into());
        wrmsr(x2::LVT_LINT0, LVT::MASK::SET.value.into());
        wrmsr(x2::LVT_ERROR, LVT::MASK::SET.value.into());
        wrmsr(x2::TIMER_DIVIDE, DIVIDE::VALUE::By16.value.into());
        let lvt = LVT::TIMER_MODE::Periodic + LVT::VECTOR.val(TIMER_VECTOR as u32);
        wrmsr(x2::LVT_TIMER, lvt.value.into());
        wrmsr(x2::TIMER_INITIAL, TICK_COUNT.load(Ordering::Relaxed).into());
        return;
    }
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
    if x2() {
        wrmsr(x2::EOI, 0);
    } else if let Some(r) = regs() {
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
    eoi();
}

/// Sends `cmd` to the CPU with APIC id `dest`; waits (bounded) until the
/// xAPIC reports it sent (x2APIC ICR writes complete before the next
/// instruction).
fn send_ipi(
    dest: u32,
    cmd: tock_registers::fields::FieldValue<u32, ICR_LOW::Register>,
) -> Result<(), ApicError> {
    if x2() {
        wrmsr(x2::ICR, u64::from(dest) << 32 | u64::from(cmd.value));
        return Ok(());
    }
    let r = regs().ok_or(ApicError::Disabled)?;
    r.icr_high.set(dest << 24);
    r.icr_low.write(cmd);
    for _ in 0..IPI_SPIN_LIMIT {
        if r.icr_low.matches_all(ICR_LOW::DELIVERY_STATUS::Idle) {
            return Ok(());
        }
        core::hint::spin_loop();
    }
    Err(ApicError::IpiNotDelivered)
}

/// INIT to one CPU: it resets and waits for a startup IPI.
pub fn send_init(dest: u32) -> Result<(), ApicError> {
    send_ipi(
        dest,
        ICR_LOW::SHORTHAND::None
            + ICR_LOW::TRIGGER::Level
            + ICR_LOW::LEVEL::Assert
            + ICR_LOW::DELIVERY_MODE::Init,
    )
}

/// Startup IPI to one CPU: it starts in real mode at `page << 12`.
pub fn send_startup(dest: u32, page: u8) -> Result<(), ApicError> {
    send_ipi(
        dest,
        ICR_LOW::SHORTHAND::None
            + ICR_LOW::LEVEL::Assert
            + ICR_LOW::DELIVERY_MODE::Startup
            + ICR_LOW::VECTOR.val(u32::from(page)),
    )
}
