//! Exception handling: interrupts go to the GIC code, an expected data
//! abort resumes after the faulting load, anything else is a crash report.
use crate::console::{bail_out, print_crash};
use crate::fault::{self, FaultInfo};

/// Registers saved by the vector code, in this order (see `entry.rs`).
#[repr(C)]
pub struct Frame {
    pub x: [u64; 31],
    pub sp: u64,
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
}

const _: () = assert!(core::mem::size_of::<Frame>() == super::entry::FRAME_SIZE);

const VECTOR_NAMES: [&str; 16] = [
    "synchronous, current EL with SP0",
    "IRQ, current EL with SP0",
    "FIQ, current EL with SP0",
    "SError, current EL with SP0",
    "synchronous, current EL with SPx",
    "IRQ, current EL with SPx",
    "FIQ, current EL with SPx",
    "SError, current EL with SPx",
    "synchronous, lower EL (AArch64)",
    "IRQ, lower EL (AArch64)",
    "FIQ, lower EL (AArch64)",
    "SError, lower EL (AArch64)",
    "synchronous, lower EL (AArch32)",
    "IRQ, lower EL (AArch32)",
    "FIQ, lower EL (AArch32)",
    "SError, lower EL (AArch32)",
];

const SYNC_SPX: u64 = 4;
const IRQ_SPX: u64 = 5;

/// ESR_EL1.EC: the exception class.
fn exception_class(esr: u64) -> u64 {
    (esr >> 26) & 0x3f
}

fn class_name(ec: u64) -> &'static str {
    match ec {
        0x00 => "unknown reason",
        0x01 => "WFI/WFE trapped",
        0x07 => "FP/SIMD access trapped",
        0x0e => "illegal execution state",
        0x15 => "SVC",
        0x16 => "HVC",
        0x17 => "SMC",
        0x18 => "system register access trapped",
        0x20 => "instruction abort, lower EL",
        0x21 => "instruction abort",
        0x22 => "PC alignment fault",
        0x24 => "data abort, lower EL",
        0x25 => "data abort",
        0x26 => "SP alignment fault",
        0x2f => "SError",
        0x30 | 0x31 => "breakpoint",
        0x32 | 0x33 => "software step",
        0x34 | 0x35 => "watchpoint",
        0x3c => "BRK instruction",
        _ => "other",
    }
}

/// DFSC/IFSC: what kind of abort.
fn fault_status(esr: u64) -> &'static str {
    match esr & 0x3f {
        0x04..=0x07 => "translation fault",
        0x09..=0x0b => "access flag fault",
        0x0d..=0x0f => "permission fault",
        0x10 => "synchronous external abort",
        0x21 => "alignment fault",
        0x00..=0x03 => "address size fault",
        _ => "other fault",
    }
}

#[unsafe(no_mangle)]
pub extern "C" fn handle_exception(frame: &mut Frame, vector: u64) {
    let cpu = super::cpu_index();
    if vector == IRQ_SPX {
        super::gic::handle_irq(cpu);
        return;
    }
    if vector == SYNC_SPX && exception_class(frame.esr) == 0x25 {
        let info = FaultInfo {
            kind: super::BAD_ACCESS_KIND,
            syndrome: frame.esr,
            addr: frame.far,
            pc: frame.elr,
        };
        if fault::on_fault(cpu, info) {
            // Expected: step over the faulting load (A64 instructions are 4 bytes).
            frame.elr += 4;
            return;
        }
    }
    crash(frame, vector, cpu)
}

fn crash(frame: &Frame, vector: u64, cpu: usize) -> ! {
    let name = VECTOR_NAMES
        .get(vector as usize)
        .copied()
        .unwrap_or("unknown vector");
    let ec = exception_class(frame.esr);
    print_crash(format_args!("\n*** CRASH on cpu {cpu}: {name} exception\n"));
    print_crash(format_args!(
        "  EC {ec:#04x} ({}), ESR {:#010x}, ISS {:#x}\n",
        class_name(ec),
        frame.esr,
        frame.esr & 0x1ff_ffff
    ));
    if matches!(ec, 0x20 | 0x21 | 0x24 | 0x25) {
        let rw = if ec >= 0x24 && frame.esr & (1 << 6) != 0 {
            "write"
        } else {
            "read"
        };
        print_crash(format_args!(
            "  {} on {rw} of FAR {:#018x}\n",
            fault_status(frame.esr),
            frame.far
        ));
    }
    print_crash(format_args!(
        "  ELR {:#018x}  SPSR {:#010x}  SP {:#018x}  FAR {:#018x}\n",
        frame.elr, frame.spsr, frame.sp, frame.far
    ));
    // No allocation here: the heap may be what broke.
    let x = &frame.x;
    for i in (0..28).step_by(4) {
        print_crash(format_args!(
            "  x{:<2} {:#018x}  x{:<2} {:#018x}  x{:<2} {:#018x}  x{:<2} {:#018x}\n",
            i,
            x[i],
            i + 1,
            x[i + 1],
            i + 2,
            x[i + 2],
            i + 3,
            x[i + 3]
        ));
    }
    print_crash(format_args!(
        "  x28 {:#018x}  x29 {:#018x}  x30 {:#018x}\n",
        x[28], x[29], x[30]
    ));
    bail_out(format_args!(
        "crash: {} (EC {ec:#04x}) on cpu {cpu} at ELR {:#x}, FAR {:#x}, ESR {:#x}",
        class_name(ec),
        frame.elr,
        frame.far,
        frame.esr
    ))
}
