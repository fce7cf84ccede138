//! Code that runs before Rust can, or around it: the PVH note, the boot
//! CPU's 32-bit entry (BSS, page tables, long mode) and its 64-bit entry
//! from our UEFI loader, the real-mode trampoline
//! the secondaries start in, and the interrupt stubs.
use crate::smp::MAX_CPUS;
use core::arch::global_asm;
use core::sync::atomic::{AtomicU32, AtomicU64};

/// The boot CPU's stack (the only static one: a secondary's comes from the
/// heap when it is started, so 256 possible CPUs cost no image space).
pub const STACK_SIZE: usize = 64 * 1024;
/// A secondary's stack: it only takes interrupts and idles.
pub const AP_STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(4096))]
pub struct Stack([u8; STACK_SIZE]);

pub static mut BOOT_STACK: Stack = Stack([0; STACK_SIZE]);

/// The top of the stack for the secondary being started: the boot CPU
/// sets it before each CPU's startup IPIs and waits for that CPU to come
/// online before it starts the next, so one slot serves them all.
pub static AP_STACK_TOP: AtomicU64 = AtomicU64::new(0);

/// Physical page the secondaries' real-mode trampoline is copied to: below
/// 1 MiB (a startup IPI names a page there) and inside the reserved low MiB.
pub const TRAMPOLINE_PHYS: u64 = 0x8000;

pub const KERNEL_CS: u16 = 0x08;
pub const KERNEL_DS: u16 = 0x10;
/// First TSS selector; CPU n's TSS descriptor is the 16 bytes at `TSS_SEL + 16 n`.
pub const TSS_SEL: u16 = 0x18;
pub const GDT_ENTRIES: usize = 3 + 2 * MAX_CPUS;

/// null, 64-bit code, data, then one 16-byte TSS descriptor per CPU that
/// `exceptions::init_cpu` fills in. The boot code loads it before long mode.
pub static mut GDT: [u64; GDT_ENTRIES] = {
    let mut g = [0u64; GDT_ENTRIES];
    g[1] = 0x00af_9a00_0000_ffff; // present, DPL 0, code, L (64-bit)
    g[2] = 0x00cf_9200_0000_ffff; // present, DPL 0, data, writable
    g
};

/// The next secondary CPU index; each secondary takes one with `lock xadd`,
/// because one broadcast startup IPI starts them all at once.
pub static AP_NEXT: AtomicU32 = AtomicU32::new(1);

/// Interrupt stubs are 16 bytes apart, vector n at `isr_stubs + 16 n`.
pub const ISR_STUB_SIZE: usize = 16;

/// Size of the frame the stubs build (see `exceptions::Frame`).
pub const FRAME_SIZE: usize = 22 * 8;

global_asm!(
    r#"
// PVH: QEMU reads an 8-byte entry address after the 4-byte-padded name.
.section .note.Xen, "a", @note
.balign 4
    .long 4, 8, 18                   // namesz, descsz, XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .quad pvh_start

.section .data
.balign 8
boot_gdtr:
    .word {gdt_limit}
    .quad {gdt}

.section .text.boot, "ax"
.code32
// 32-bit protected mode, paging off, ebx = hvm_start_info.
.global pvh_start
pvh_start:
    cli
    cld
    mov     %ebx, %esi
    // BSS holds the page tables and stacks, so it is zeroed first.
    mov     $__bss_start, %edi
    mov     $__bss_end, %ecx
    sub     %edi, %ecx
    shr     $2, %ecx
    xor     %eax, %eax
    rep stosl
    // PML4[0] -> PDPT; PDPT[0..4] -> four PDs of 2 MiB pages: 0..4 GiB identity.
    mov     ${tables}, %edi
    lea     0x1003(%edi), %eax
    mov     %eax, (%edi)
    lea     0x2003(%edi), %eax
    xor     %ecx, %ecx
1:  mov     %eax, 0x1000(%edi,%ecx,8)
    add     $0x1000, %eax
    inc     %ecx
    cmp     $4, %ecx
    jb      1b
    xor     %ecx, %ecx
2:  mov     %ecx, %eax
    shl     $21, %eax
    or      $0x83, %eax              // present, writable, 2 MiB page
    cmp     $1536, %ecx
    jb      3f
    or      $0x18, %eax              // 3..4 GiB is MMIO (LAPIC, IOAPIC, PCI): PCD|PWT
3:  mov     %eax, 0x2000(%edi,%ecx,8)
    inc     %ecx
    cmp     $2048, %ecx
    jb      2b
    mov     %edi, %cr3
    mov     %cr4, %eax
    or      $0x20, %eax              // PAE
    mov     %eax, %cr4
    mov     $0xc0000080, %ecx        // EFER.LME
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000001, %eax        // PG|PE
    mov     %eax, %cr0
    lgdt    boot_gdtr
    ljmp    ${cs}, $long_mode_start

.code64
long_mode_start:
    mov     ${ds}, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    lea     {boot_stack}+{stack_size}(%rip), %rsp
    call    sse_on
    mov     %esi, %edi               // start info address (upper half zeroed)
    call    {boot}
4:  cli
    hlt
    jmp     4b

// UEFI (our loader, `kernel/efi`): long mode on firmware's identity map,
// interrupts off, rdi = hand-over block, the image wherever the loader
// found room below 2 GiB (it applied the link-time relocations). From
// here the boot CPU takes the PVH path's state: the BSS zeroed, the boot
// tables (0..4 GiB, which the secondaries' trampoline needs too), our GDT,
// our stack.
.global efi_start64
efi_start64:
    cli
    cld
    mov     %rdi, %r12
    lea     __bss_start(%rip), %rdi
    lea     __bss_end(%rip), %rcx
    sub     %rdi, %rcx
    xor     %eax, %eax
    rep stosb
    // Our stack before anything is pushed: firmware's may lie above the
    // 4 GiB the boot tables map.
    lea     {boot_stack}+{stack_size}(%rip), %rsp
    lea     {tables}(%rip), %rdi
    lea     0x1003(%rdi), %rax
    mov     %rax, (%rdi)
    lea     0x2003(%rdi), %rax
    xor     %ecx, %ecx
6:  mov     %rax, 0x1000(%rdi,%rcx,8)
    add     $0x1000, %rax
    inc     %ecx
    cmp     $4, %ecx
    jb      6b
    xor     %ecx, %ecx
7:  mov     %rcx, %rax
    shl     $21, %rax
    or      $0x83, %rax
    cmp     $1536, %ecx
    jb      8f
    or      $0x18, %rax
8:  mov     %rax, 0x2000(%rdi,%rcx,8)
    inc     %ecx
    cmp     $2048, %ecx
    jb      7b
    mov     %rdi, %cr3
    // The GDT's address in boot_gdtr was relocated with the image.
    lgdt    boot_gdtr(%rip)
    lea     9f(%rip), %rax
    push    ${cs}
    push    %rax
    lretq
9:  mov     ${ds}, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    call    sse_on
    mov     %r12, %rdi
    call    {efi_boot}
10: cli
    hlt
    jmp     10b

// SSE on (CR0.EM=0, MP, NE; CR4.OSFXSR|OSXMMEXCPT): the target is
// soft-float, but nothing should trap if some code uses SSE anyway.
sse_on:
    mov     %cr0, %rax
    and     $-5, %rax
    or      $0x22, %rax
    mov     %rax, %cr0
    mov     %cr4, %rax
    or      $0x600, %rax
    mov     %rax, %cr4
    ret

// Secondaries: the trampoline far-jumps here, already in long mode.
ap_long_mode:
    mov     ${ds}, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    mov     $1, %eax
    lock xadd %eax, {ap_next}(%rip)
    cmp     ${max_cpus}, %eax
    jae     5f                       // more CPUs than slots: park this one
    mov     %eax, %edi
    mov     {ap_stack_top}(%rip), %rsp
    test    %rsp, %rsp
    jz      5f                       // no stack given: park
    call    sse_on
    call    {secondary}
5:  cli
    hlt
    jmp     5b

// Real-mode trampoline, copied to TRAMPOLINE_PHYS; a startup IPI enters it
// at CS:IP = 0x0800:0000. It goes straight from real mode to long mode
// (PAE, CR3, EFER.LME, then PE|PG together) and far-jumps into the image.
.section .rodata.trampoline, "a"
.balign 16
.global ap_trampoline_start
ap_trampoline_start:
.code16
    cli
    cld
    xor     %ax, %ax
    mov     %ax, %ds
    lgdtl   ({tramp} + tramp_gdtr - ap_trampoline_start)
    mov     %cr4, %eax
    or      $0x20, %eax
    mov     %eax, %cr4
    movl    ({tramp} + tramp_cr3 - ap_trampoline_start), %eax
    mov     %eax, %cr3
    mov     $0xc0000080, %ecx
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000001, %eax
    mov     %eax, %cr0
    ljmpl   ${cs}, $ap_long_mode
.balign 8
tramp_gdtr:
    .word   {gdt_limit}
    .long   {gdt}
tramp_cr3:
    .long   {tables}
.global ap_trampoline_end
ap_trampoline_end:
.code64

// Interrupt stubs: push a zero error code where the CPU pushes none, then
// the vector, and join the common path, which saves the general registers
// and calls Rust with the frame.
.section .text
.balign 16
.global isr_stubs
isr_stubs:
.set vec, 0
.rept 256
    .balign 16
    .if (vec == 8) || (vec == 10) || (vec == 11) || (vec == 12) || (vec == 13) || (vec == 14) || (vec == 17) || (vec == 21) || (vec == 29) || (vec == 30)
    .else
    push    $0
    .endif
    push    $vec
    jmp     isr_common
    .set vec, vec + 1
.endr

isr_common:
    push    %rax
    push    %rbx
    push    %rcx
    push    %rdx
    push    %rsi
    push    %rdi
    push    %rbp
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    // The CPU aligned RSP to 16 before its 5 pushes; with ours (17) the
    // frame is 176 bytes, so RSP is 16-aligned for the call.
    mov     %rsp, %rdi
    cld
    call    {handler}
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rbp
    pop     %rdi
    pop     %rsi
    pop     %rdx
    pop     %rcx
    pop     %rbx
    pop     %rax
    add     $16, %rsp                // vector and error code
    iretq
"#,
    gdt = sym GDT,
    gdt_limit = const GDT_ENTRIES * 8 - 1,
    tables = sym super::paging::BOOT_TABLES,
    boot_stack = sym BOOT_STACK,
    ap_stack_top = sym AP_STACK_TOP,
    stack_size = const STACK_SIZE,
    max_cpus = const MAX_CPUS,
    ap_next = sym AP_NEXT,
    cs = const KERNEL_CS,
    ds = const KERNEL_DS,
    tramp = const TRAMPOLINE_PHYS,
    boot = sym super::boot::boot_cpu_entry,
    efi_boot = sym super::boot::efi_boot_cpu_entry,
    secondary = sym super::boot::secondary_cpu_entry,
    handler = sym super::exceptions::handle_exception,
    options(att_syntax)
);

unsafe extern "C" {
    pub static isr_stubs: u8;
    pub static ap_trampoline_start: u8;
    pub static ap_trampoline_end: u8;
    pub static __kernel_start: u8;
    pub static __kernel_end: u8;
}
