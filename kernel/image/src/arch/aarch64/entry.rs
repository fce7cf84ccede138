//! The arm64 Image header, entry points and the exception vector table.
//! Everything here runs before Rust can: it relocates the image for where
//! the loader put it, hands over from EL2 to EL1 if a loader left us at EL2 (on
//! every CPU: firmware starts secondaries at the level it entered the boot
//! CPU at), puts SCTLR_EL1 in a known state, enables FP/SIMD (the target's
//! code uses it), picks a stack, zeroes BSS, and calls Rust.
use core::arch::global_asm;

/// The boot CPU's stack. Secondaries get theirs from the heap when they are
/// started (`boot::start_secondaries`), so static memory does not grow with
/// the CPU count.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

#[repr(C, align(4096))]
pub struct BootStack([u8; BOOT_STACK_SIZE]);

pub static mut BOOT_STACK: BootStack = BootStack([0; BOOT_STACK_SIZE]);

/// The Image header's flags: little-endian (bit 0 clear), 4 KiB pages
/// (bits 1-2 = 1), placement anywhere in RAM (bit 3).
pub const IMAGE_FLAGS: u64 = (1 << 1) | (1 << 3);
/// "ARM\x64" at offset 0x38, read as a little-endian u32.
pub const IMAGE_MAGIC: u32 = u32::from_le_bytes(*b"ARM\x64");
/// The only dynamic relocation a static PIE of ours carries.
const R_AARCH64_RELATIVE: u32 = 1027;

/// Size of the register frame the vectors push (see `exceptions::Frame`).
pub const FRAME_SIZE: usize = 36 * 8;

/// SCTLR_EL1 with the MMU and caches off, little-endian, alignment checks
/// off, and every bit that was RES1 in Armv8.0 set (EOS, TSCXT, EIS, SPAN,
/// nTLSMD, LSMAOE): written whole so nothing a loader or reset left in it
/// (an enabled MMU, big-endian data, WXN) survives. `mmu::enable` sets M, C
/// and I from here.
pub const SCTLR_EL1_MMU_OFF: u64 =
    (1 << 29) | (1 << 28) | (1 << 23) | (1 << 22) | (1 << 20) | (1 << 11);

/// HCR_EL2: EL1 is AArch64 (RW); no stage 2, no traps, physical interrupts
/// go to EL1 (IMO/FMO/AMO clear), E2H clear (we are not a host kernel).
const HCR_EL2_RW: u64 = 1 << 31;
/// HCR_EL2.API and APK: pointer-authentication instructions and keys not
/// trapped (set only when the CPU has pointer authentication: RES0 otherwise).
const HCR_EL2_API_APK: u64 = (1 << 41) | (1 << 40);
/// CPTR_EL2 (E2H clear): TFP, TZ (SVE), TSM (SME), TTA, TAM, TCPAC clear: no
/// trap of FP/SIMD, SVE, SME, trace, activity monitors, CPACR accesses.
/// Bits 13, 9 and 7:0 are RES1; TZ and TSM are RES1 when the CPU lacks SVE
/// or SME, which the code below adds.
const CPTR_EL2_RES1: u64 = (1 << 13) | (1 << 9) | 0xff;
const CPTR_EL2_TZ: u64 = 1 << 8;
const CPTR_EL2_TSM: u64 = 1 << 12;
/// CNTHCTL_EL2 (E2H clear): EL1PCTEN and EL1PCEN, EL1 reads the physical
/// counter and drives the physical timer (the one the kernel ticks with).
const CNTHCTL_EL2_EL1_ACCESS: u64 = 0b11;
/// ICC_SRE_EL2: SRE (system-register CPU interface at EL2) and Enable (EL1
/// may use the system registers too), DFB and DIB (no IRQ/FIQ bypass).
const ICC_SRE_EL2_VALUE: u64 = 0b1111;
/// SPSR_EL2 for the ERET: EL1h (SP_EL1), D, A, I and F masked.
const SPSR_EL1H_MASKED: u64 = 0x3c5;
/// CPACR_EL1.FPEN: no FP/SIMD traps at EL1.
const CPACR_EL1_FPEN: u64 = 3 << 20;

global_asm!(
    r#"
// The arm64 Image header (Linux Documentation/arch/arm64/booting.rst): a
// loader enters at its first byte, which branches over it.
.section .text.head, "ax"
.global _start
_start:
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0                       // text_offset: the image starts at the 2 MiB boundary
    .quad   __kernel_size           // image_size, BSS included (linker script)
    .quad   {image_flags}
    .quad   0, 0, 0                 // res2..res4
    .long   {image_magic}
    .long   0                       // res5: no PE header

.section .text.boot, "ax"
primary_entry:
    mov     x19, x0                 // devicetree, or 0
    mov     x20, x1                 // hand-over block, or 0
    bl      relocate
    bl      el1_from_any
    adrp    x9, {boot_stack}
    add     x9, x9, :lo12:{boot_stack}
    mov     x10, #{boot_stack_size}
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
    mov     x1, x20
    bl      {boot}
4:  wfe
    b       4b

// Applies `.rela.dyn` for where we run: the image is linked at 0, so the
// load offset is the running address of __kernel_start, and each
// R_AARCH64_RELATIVE entry stores offset + addend at offset. Writing the
// value (not adding to it) makes a second pass harmless. Other types are
// skipped: the runner refuses an image that has any. Clobbers x9-x14.
relocate:
    adrp    x9, __kernel_start
    add     x9, x9, :lo12:__kernel_start
    adrp    x10, __rela_start
    add     x10, x10, :lo12:__rela_start
    adrp    x11, __rela_end
    add     x11, x11, :lo12:__rela_end
5:  cmp     x10, x11
    b.hs    7f
    ldp     x12, x13, [x10], #16    // r_offset, r_info
    ldr     x14, [x10], #8          // r_addend
    cmp     w13, #{r_relative}
    b.ne    5b
    add     x14, x14, x9
    str     x14, [x9, x12]
    b       5b
7:  ret

// PSCI CPU_ON target: x0 = the context id the boot CPU passed, the top of
// this CPU's stack, below which it stored the CPU index and the stack's
// bottom (cleaned to memory, readable with the MMU off).
.global _secondary_start
_secondary_start:
    mov     x19, x0
    bl      el1_from_any
    sub     sp, x19, #16
    ldp     x0, x1, [sp]
    mov     x2, x19
    bl      {secondary}
5:  wfe
    b       5b

// Puts this CPU at EL1h with interrupts masked, SCTLR_EL1 whole and FP/SIMD
// untrapped, and returns there (x30). From EL2 this is the whole hand-over
// a hypervisor-less kernel needs; it clobbers x9-x12 only.
el1_from_any:
    mrs     x9, CurrentEL
    lsr     x9, x9, #2
    cmp     x9, #2
    b.ne    9f
    // HCR_EL2, with pointer authentication untrapped when the CPU has it
    // (ID_AA64ISAR1_EL1.APA/API, ID_AA64ISAR2_EL1.APA3).
    mov     x10, #{hcr_rw}
    mrs     x9, id_aa64isar1_el1
    mov     x11, #0xff0
    tst     x9, x11
    b.ne    6f
    mrs     x9, id_aa64isar2_el1
    tst     x9, #0xf000
    b.eq    7f
6:  orr     x10, x10, #{hcr_api_apk}
7:  msr     hcr_el2, x10
    // CPTR_EL2: nothing trapped; TZ/TSM set only where RES1 (no SVE/SME).
    mov     x10, #{cptr_res1}
    mrs     x9, id_aa64pfr0_el1
    ubfx    x11, x9, #32, #4        // SVE
    cbnz    x11, 6f
    orr     x10, x10, #{cptr_tz}
6:  mrs     x11, id_aa64pfr1_el1
    ubfx    x11, x11, #24, #4       // SME
    cbnz    x11, 7f
    orr     x10, x10, #{cptr_tsm}
7:  msr     cptr_el2, x10
    msr     hstr_el2, xzr
    // The EL1 physical counter and timer, and no virtual offset.
    mov     x10, #{cnthctl}
    msr     cnthctl_el2, x10
    msr     cntvoff_el2, xzr
    // GICv3 CPU interface by system registers, usable at EL1, when the
    // CPU has one (ID_AA64PFR0_EL1.GIC); the virtual interface off.
    ubfx    x11, x9, #24, #4
    cbz     x11, 8f
    mrs     x10, icc_sre_el2
    orr     x10, x10, #{icc_sre}
    msr     icc_sre_el2, x10
    isb
    msr     ich_hcr_el2, xzr
8:  // No stage 2; EL1 reads of MIDR/MPIDR return the real ones (the
    // virtual ones reset to UNKNOWN values).
    msr     vttbr_el2, xzr
    mrs     x10, midr_el1
    msr     vpidr_el2, x10
    mrs     x10, mpidr_el1
    msr     vmpidr_el2, x10
    // MDCR_EL2: no debug or PMU traps; HPMN = every counter the PMU has
    // (PMCR_EL0.N) when there is an Arm PMU (ID_AA64DFR0_EL1.PMUVer 1..14).
    mov     x10, xzr
    mrs     x9, id_aa64dfr0_el1
    ubfx    x9, x9, #8, #4
    cbz     x9, 8f
    cmp     x9, #0xf
    b.eq    8f
    mrs     x10, pmcr_el0
    ubfx    x10, x10, #11, #5
8:  msr     mdcr_el2, x10
    ldr     x10, ={sctlr_el1}
    msr     sctlr_el1, x10
    mov     x10, #{spsr}
    msr     spsr_el2, x10
    adr     x10, 9f                 // on at EL1, which returns to x30
    msr     elr_el2, x10
    isb
    eret
9:  msr     daifset, #0xf
    ldr     x10, ={sctlr_el1}
    msr     sctlr_el1, x10
    mov     x10, #{cpacr}
    msr     cpacr_el1, x10
    isb
    ret
.ltorg

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
    image_flags = const IMAGE_FLAGS,
    image_magic = const IMAGE_MAGIC,
    r_relative = const R_AARCH64_RELATIVE,
    boot_stack = sym BOOT_STACK,
    boot_stack_size = const BOOT_STACK_SIZE,
    hcr_rw = const HCR_EL2_RW,
    hcr_api_apk = const HCR_EL2_API_APK,
    cptr_res1 = const CPTR_EL2_RES1,
    cptr_tz = const CPTR_EL2_TZ,
    cptr_tsm = const CPTR_EL2_TSM,
    cnthctl = const CNTHCTL_EL2_EL1_ACCESS,
    icc_sre = const ICC_SRE_EL2_VALUE,
    spsr = const SPSR_EL1H_MASKED,
    sctlr_el1 = const SCTLR_EL1_MMU_OFF,
    cpacr = const CPACR_EL1_FPEN,
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
