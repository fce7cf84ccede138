//! Entry points and the exception vector table. Everything here runs before
//! Rust can: it picks a stack, drops from EL2 if a loader left us there,
//! enables FP/SIMD (the target's code uses it), zeroes BSS, and calls Rust.
use crate::smp::MAX_CPUS;
use core::arch::global_asm;

pub const STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(4096))]
pub struct Stacks([[u8; STACK_SIZE]; MAX_CPUS]);

/// One boot stack per CPU; CPU n uses slot n (the stack grows down from its top).
pub static mut STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

/// Size of the register frame the vectors push (see `exceptions::Frame`).
pub const FRAME_SIZE: usize = 36 * 8;

global_asm!(
    r#"
.section .text.boot, "ax"
.global _start
_start:
    mov     x19, x0                 // devicetree pointer when booted as a raw Image
    mrs     x9, CurrentEL
    lsr     x9, x9, #2
    cmp     x9, #2
    b.ne    1f
    // At EL2: run the kernel at EL1 in AArch64 with the timers accessible.
    mov     x9, #(1 << 31)
    msr     hcr_el2, x9
    mov     x9, #3
    msr     cnthctl_el2, x9
    msr     cntvoff_el2, xzr
    mov     x9, #0x3c5              // EL1h, DAIF masked
    msr     spsr_el2, x9
    adr     x9, 1f
    msr     elr_el2, x9
    eret
1:
    mov     x9, #(3 << 20)          // CPACR_EL1.FPEN: no FP/SIMD traps
    msr     cpacr_el1, x9
    isb
    adrp    x9, {stacks}
    add     x9, x9, :lo12:{stacks}
    mov     x10, #{stack_size}
    add     sp, x9, x10
    adrp    x9, __bss_start
    add     x9, x9, :lo12:__bss_start
    adrp    x10, __bss_end
    add     x10, x10, :lo12:__bss_end
2:  cmp     x9, x10
    b.hs    3f
    str     xzr, [x9], #8
    b       2b
3:  mov     x0, x19
    bl      {boot}
4:  wfe
    b       4b

// PSCI CPU_ON target: x0 = the CPU's index (the context id we passed).
.global _secondary_start
_secondary_start:
    mov     x9, #(3 << 20)
    msr     cpacr_el1, x9
    isb
    adrp    x9, {stacks}
    add     x9, x9, :lo12:{stacks}
    mov     x10, #{stack_size}
    madd    x9, x0, x10, x9
    add     sp, x9, x10
    bl      {secondary}
5:  wfe
    b       5b

// The vector table: 16 entries of 0x80 bytes. Each saves x0/x1, puts its
// index in x0 and joins the common path, which saves the rest.
.macro VECTOR index
    .balign 0x80
    sub     sp, sp, #{frame_size}
    stp     x0, x1, [sp, #0]
    mov     x0, #\index
    b       exception_common
.endm

.section .text.vectors, "ax"
.balign 0x800
.global exception_vectors
exception_vectors:
    VECTOR 0
    VECTOR 1
    VECTOR 2
    VECTOR 3
    VECTOR 4
    VECTOR 5
    VECTOR 6
    VECTOR 7
    VECTOR 8
    VECTOR 9
    VECTOR 10
    VECTOR 11
    VECTOR 12
    VECTOR 13
    VECTOR 14
    VECTOR 15

exception_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    add     x9, sp, #{frame_size}   // the interrupted code's SP
    stp     x30, x9, [sp, #240]
    mrs     x9, elr_el1
    mrs     x10, spsr_el1
    stp     x9, x10, [sp, #256]
    mrs     x9, esr_el1
    mrs     x10, far_el1
    stp     x9, x10, [sp, #272]
    mov     x1, x0
    mov     x0, sp
    bl      {handler}
    // The handler may have moved ELR (to resume after an expected fault).
    ldp     x9, x10, [sp, #256]
    msr     elr_el1, x9
    msr     spsr_el1, x10
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    ldp     x0, x1, [sp, #0]
    add     sp, sp, #{frame_size}
    eret
"#,
    stacks = sym STACKS,
    stack_size = const STACK_SIZE,
    frame_size = const FRAME_SIZE,
    boot = sym super::boot::boot_cpu_entry,
    secondary = sym super::boot::secondary_cpu_entry,
    handler = sym super::exceptions::handle_exception,
);

unsafe extern "C" {
    pub static exception_vectors: u8;
    pub static _secondary_start: u8;
    pub static __kernel_start: u8;
    pub static __kernel_end: u8;
}
