//! The IDT, the per-CPU TSS (a separate stack for double faults), and the
//! Rust side of every interrupt: the timer tick, the expected page fault of
//! `probe_read`, and a crash report for anything else.
use super::entry::{self, FRAME_SIZE, GDT, ISR_STUB_SIZE, KERNEL_CS, TSS_SEL};
use super::{apic, BAD_ACCESS_KIND};
use crate::console::{bail_out, print_crash};
use crate::fault::{self, FaultInfo};
use crate::smp::MAX_CPUS;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::instructions::tables::{lidt, load_tss};
use x86_64::registers::control::{Cr0, Cr2, Cr3, Cr4};
use x86_64::structures::tss::TaskStateSegment;
use x86_64::structures::DescriptorTablePointer;
use x86_64::{PrivilegeLevel, VirtAddr};

/// Registers saved by the stubs (`entry.rs`), lowest address first.
#[repr(C)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<Frame>() == FRAME_SIZE);

const VECTOR_NAMES: [&str; 32] = [
    "divide error",
    "debug",
    "NMI",
    "breakpoint",
    "overflow",
    "bound range exceeded",
    "invalid opcode",
    "device not available",
    "double fault",
    "coprocessor segment overrun",
    "invalid TSS",
    "segment not present",
    "stack-segment fault",
    "general protection",
    "page fault",
    "reserved (15)",
    "x87 floating-point error",
    "alignment check",
    "machine check",
    "SIMD floating-point error",
    "virtualization exception",
    "control protection",
    "reserved (22)",
    "reserved (23)",
    "reserved (24)",
    "reserved (25)",
    "reserved (26)",
    "reserved (27)",
    "hypervisor injection",
    "VMM communication",
    "security exception",
    "reserved (31)",
];

const DOUBLE_FAULT: u64 = 8;
const PAGE_FAULT: u64 = 14;
/// IST slot (1-based in the gate, 0-based in the TSS) for double faults, so a
/// blown kernel stack still gets a report.
const DOUBLE_FAULT_IST: u8 = 1;
const IST_STACK_SIZE: usize = 16 * 1024;

/// 64-bit interrupt gate.
#[derive(Clone, Copy)]
#[repr(C)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    attributes: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

/// Written once by the boot CPU in `init_idt`, then only read (by `lidt`).
static mut IDT: Idt = Idt([Gate {
    offset_low: 0,
    selector: 0,
    ist: 0,
    attributes: 0,
    offset_mid: 0,
    offset_high: 0,
    reserved: 0,
}; 256]);

#[repr(C, align(16))]
struct IstStacks([[u8; IST_STACK_SIZE]; MAX_CPUS]);

static mut IST_STACKS: IstStacks = IstStacks([[0; IST_STACK_SIZE]; MAX_CPUS]);
static mut TSS: [TaskStateSegment; MAX_CPUS] = [const { TaskStateSegment::new() }; MAX_CPUS];

/// Where `probe_read` resumes after its load faults, per CPU; 0 = no probe.
pub static PROBE_RESUME: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

/// Points every vector at its stub. Boot CPU, once, before `init_cpu`.
pub fn init_idt() {
    let stubs = core::ptr::addr_of!(entry::isr_stubs) as u64;
    // SAFETY: only the boot CPU runs and no IDT is loaded yet.
    let idt = unsafe { &mut *core::ptr::addr_of_mut!(IDT) };
    for (vector, gate) in idt.0.iter_mut().enumerate() {
        let handler = stubs + (vector * ISR_STUB_SIZE) as u64;
        *gate = Gate {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist: if vector as u64 == DOUBLE_FAULT {
                DOUBLE_FAULT_IST
            } else {
                0
            },
            attributes: 0x8e, // present, DPL 0, interrupt gate (IF cleared on entry)
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        };
    }
}

/// This CPU's TSS (with the double-fault stack) and the IDT.
pub fn init_cpu(cpu: usize) {
    // SAFETY: each CPU touches only its own TSS, IST stack and GDT slot,
    // once, before it takes interrupts; the IDT was written before any
    // CPU got here and is only read from now on.
    unsafe {
        let tss = &mut *core::ptr::addr_of_mut!(TSS[cpu]);
        let stack_top = core::ptr::addr_of!(IST_STACKS.0[cpu]) as u64 + IST_STACK_SIZE as u64;
        tss.interrupt_stack_table[usize::from(DOUBLE_FAULT_IST - 1)] =
            VirtAddr::new_truncate(stack_top);
        let base = tss as *const TaskStateSegment as u64;
        let limit = (core::mem::size_of::<TaskStateSegment>() - 1) as u64;
        let low = (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | 0x89 << 40 // present, available 64-bit TSS
            | (limit >> 16 & 0xf) << 48
            | (base >> 24 & 0xff) << 56;
        let slot = usize::from(TSS_SEL) / 8 + 2 * cpu;
        let gdt = core::ptr::addr_of_mut!(GDT).cast::<u64>();
        gdt.add(slot).write_volatile(low);
        gdt.add(slot + 1).write_volatile(base >> 32);
        let selector =
            x86_64::structures::gdt::SegmentSelector::new(slot as u16, PrivilegeLevel::Ring0);
        load_tss(selector);
        lidt(&DescriptorTablePointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: VirtAddr::new_truncate(core::ptr::addr_of!(IDT) as u64),
        });
    }
}

pub extern "C" fn handle_exception(frame: &mut Frame) {
    let cpu = super::cpu_index();
    match frame.vector {
        PAGE_FAULT => {
            let cr2 = Cr2::read_raw();
            let info = FaultInfo {
                kind: BAD_ACCESS_KIND,
                syndrome: frame.error,
                addr: cr2,
                pc: frame.rip,
            };
            if fault::on_fault(cpu, info) {
                let resume = PROBE_RESUME[cpu].swap(0, Ordering::SeqCst);
                if resume != 0 {
                    frame.rip = resume;
                    return;
                }
                print_crash(format_args!(
                    "\n*** armed fault on cpu {cpu} outside probe_read\n"
                ));
            }
            crash(frame, cpu)
        }
        apic::TIMER_VECTOR => apic::on_timer(cpu),
        v if (MSI_FIRST..MSI_FIRST + MSI_VECTORS as u64).contains(&v) => {
            crate::interrupts::dispatch(v as u32);
            MSI_COUNT[(v - MSI_FIRST) as usize].fetch_add(1, Ordering::Relaxed);
            apic::eoi();
        }
        // Spurious interrupts need no EOI.
        apic::SPURIOUS_VECTOR => {}
        _ => crash(frame, cpu),
    }
}

/// Decodes a page-fault error code.
fn page_fault_cause(error: u64) -> (&'static str, &'static str, &'static str) {
    let what = if error & 1 != 0 {
        "protection violation"
    } else {
        "page not present"
    };
    let access = if error & 0x10 != 0 {
        "instruction fetch"
    } else if error & 2 != 0 {
        "write"
    } else {
        "read"
    };
    let mode = if error & 4 != 0 { "user" } else { "kernel" };
    (what, access, mode)
}

fn crash(f: &Frame, cpu: usize) -> ! {
    // No allocation here: the heap may be what broke.
    let v = f.vector;
    let name = VECTOR_NAMES
        .get(v as usize)
        .copied()
        .unwrap_or("unexpected interrupt");
    print_crash(format_args!(
        "\n*** CRASH on cpu {cpu}: {name} (vector {v}), error code {:#x}\n",
        f.error
    ));
    let cr2 = Cr2::read_raw();
    if v == PAGE_FAULT {
        let (what, access, mode) = page_fault_cause(f.error);
        print_crash(format_args!(
            "  {what} on {mode} {access} of CR2 {cr2:#018x}\n"
        ));
    }
    print_crash(format_args!(
        "  RIP {:#018x}  CS {:#06x}  RFLAGS {:#010x}  RSP {:#018x}  SS {:#06x}\n",
        f.rip, f.cs, f.rflags, f.rsp, f.ss
    ));
    print_crash(format_args!(
        "  CR0 {:#010x}  CR2 {cr2:#018x}  CR3 {:#010x}  CR4 {:#010x}\n",
        Cr0::read_raw(),
        Cr3::read_raw().0.start_address().as_u64(),
        Cr4::read_raw()
    ));
    let regs = [
        ("rax", f.rax),
        ("rbx", f.rbx),
        ("rcx", f.rcx),
        ("rdx", f.rdx),
        ("rsi", f.rsi),
        ("rdi", f.rdi),
        ("rbp", f.rbp),
        ("r8 ", f.r8),
        ("r9 ", f.r9),
        ("r10", f.r10),
        ("r11", f.r11),
        ("r12", f.r12),
        ("r13", f.r13),
        ("r14", f.r14),
        ("r15", f.r15),
    ];
    for row in regs.chunks(4) {
        for (n, val) in row {
            print_crash(format_args!("  {n} {val:#018x}"));
        }
        print_crash(format_args!("\n"));
    }
    if v == PAGE_FAULT {
        bail_out(format_args!(
            "crash: page fault on cpu {cpu} at RIP {:#x}, CR2 {cr2:#x}, error code {:#x}",
            f.rip, f.error
        ))
    }
    bail_out(format_args!(
        "crash: {name} (vector {v}) on cpu {cpu} at RIP {:#x}, error code {:#x}",
        f.rip, f.error
    ))
}

/// IDT vectors handed out for MSIs: above the exceptions and the timer.
const MSI_FIRST: u64 = 0x40;
const MSI_VECTORS: usize = 64;
static MSI_COUNT: [core::sync::atomic::AtomicU32; MSI_VECTORS] =
    [const { core::sync::atomic::AtomicU32::new(0) }; MSI_VECTORS];
static MSI_NEXT: core::sync::atomic::AtomicU32 = core::sync::atomic::AtomicU32::new(0);

/// The next free MSI vector.
pub fn alloc_msi_vector() -> Result<u32, alloc::string::String> {
    let n = MSI_NEXT.fetch_add(1, Ordering::Relaxed);
    if n as usize >= MSI_VECTORS {
        return Err(alloc::format!("all {MSI_VECTORS} MSI vectors are in use"));
    }
    Ok(MSI_FIRST as u32 + n)
}

/// Deliveries of MSI vector `vector` so far.
pub fn msi_count(vector: u32) -> u32 {
    (vector as u64)
        .checked_sub(MSI_FIRST)
        .and_then(|i| MSI_COUNT.get(i as usize))
        .map_or(0, |c| c.load(Ordering::Relaxed))
}
