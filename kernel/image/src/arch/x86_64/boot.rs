//! Boot on the boot CPU (from the 32-bit PVH entry, now in long mode) and
//! on the secondaries (from the trampoline).
use super::{apic, entry, exceptions, paging, time};
use crate::platform::{AcpiEntry, BootInfo};
use crate::{console, heap, logger, smp};
use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use kernel::addr::PhysRange;
use kernel::cmdline;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

const COM1: u16 = 0x3f8;
const PVH_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;
const PAGE: u64 = 4096;
/// Longest command line we take from the start info.
const CMDLINE_MAX: usize = 4096;
/// The boot code maps only 0..4 GiB; the start info must be below that.
const LOW_MAPPED: u64 = 1 << 32;
/// SeaBIOS keeps some RAM reserved (its high-memory copy, the EBDA), and
/// the 640 KiB..1 MiB hole is not RAM.
const RAM_SLACK: u64 = 2 << 20;
/// How long the secondaries get to come online.
const CPU_START_TIMEOUT_NS: u64 = 1_000_000_000;

/// `struct hvm_start_info` (Xen's public `arch-x86/hvm/start_info.h`).
#[repr(C)]
#[derive(Clone, Copy)]
struct StartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    // version >= 1:
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
#[derive(Clone, Copy)]
struct MemmapEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PvhError {
    BadMagic(u32),
    NoMemoryMap { version: u32 },
    OutOfReach { what: &'static str, addr: u64 },
}

impl fmt::Display for PvhError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PvhError::BadMagic(m) => write!(
                f,
                "start info magic {m:#x}, expected {PVH_MAGIC:#x}: not started through PVH?"
            ),
            PvhError::NoMemoryMap { version } => {
                write!(f, "start info version {version} has no memory map")
            }
            PvhError::OutOfReach { what, addr } => {
                write!(f, "{what} at {addr:#x} lies outside the mapped low 4 GiB")
            }
        }
    }
}

/// What the PVH start info told us, copied out of firmware memory.
struct Pvh {
    cmdline: String,
    ram: Vec<PhysRange>,
    /// The start info, memory map and command line themselves.
    boot_data: Vec<PhysRange>,
    /// The RSDP the PVH option ROM found (0: none).
    rsdp: u64,
}

fn check_reach(what: &'static str, addr: u64, len: u64) -> Result<(), PvhError> {
    match addr.checked_add(len) {
        Some(end) if addr != 0 && end <= LOW_MAPPED => Ok(()),
        _ => Err(PvhError::OutOfReach { what, addr }),
    }
}

fn page_span(addr: u64, len: u64) -> PhysRange {
    let start = addr & !(PAGE - 1);
    PhysRange {
        start,
        end: (addr + len.max(1)).div_ceil(PAGE) * PAGE,
    }
}

/// Copies the command line and memory map out of the start info at `addr`.
fn read_start_info(addr: u64) -> Result<Pvh, PvhError> {
    check_reach("start info", addr, core::mem::size_of::<StartInfo>() as u64)?;
    // SAFETY: identity-mapped low memory the firmware filled in; read
    // unaligned because nothing promises alignment.
    let info = unsafe { core::ptr::read_unaligned(addr as *const StartInfo) };
    if info.magic != PVH_MAGIC {
        return Err(PvhError::BadMagic(info.magic));
    }
    if info.version < 1 || info.memmap_entries == 0 {
        return Err(PvhError::NoMemoryMap {
            version: info.version,
        });
    }
    let mut boot_data = vec![page_span(addr, core::mem::size_of::<StartInfo>() as u64)];

    let map_len = u64::from(info.memmap_entries) * core::mem::size_of::<MemmapEntry>() as u64;
    check_reach("memory map", info.memmap_paddr, map_len)?;
    boot_data.push(page_span(info.memmap_paddr, map_len));
    let ram = (0..info.memmap_entries as usize)
        .map(|i| {
            // SAFETY: entry i of the map we just checked lies in mapped low memory.
            unsafe { core::ptr::read_unaligned((info.memmap_paddr as *const MemmapEntry).add(i)) }
        })
        .filter(|e| e.kind == E820_RAM && e.size != 0)
        .map(|e| PhysRange::new(e.addr, e.size))
        .collect();

    let mut cmdline = String::new();
    if info.cmdline_paddr != 0 {
        check_reach("command line", info.cmdline_paddr, CMDLINE_MAX as u64)?;
        // SAFETY: CMDLINE_MAX bytes of mapped low memory; we stop at the NUL.
        let bytes =
            unsafe { core::slice::from_raw_parts(info.cmdline_paddr as *const u8, CMDLINE_MAX) };
        let len = bytes.iter().position(|&b| b == 0).unwrap_or(CMDLINE_MAX);
        cmdline = String::from_utf8_lossy(&bytes[..len]).into_owned();
        boot_data.push(page_span(info.cmdline_paddr, len as u64 + 1));
    }
    Ok(Pvh {
        cmdline,
        ram,
        boot_data,
        rsdp: info.rsdp_paddr,
    })
}

/// CPUs the machine has, from QEMU's fw_cfg (`FW_CFG_NB_CPUS`); falls back
/// to `qemu.cpus=` on the command line, then 1. The MADT is the general
/// answer and comes with the ACPI work.
fn cpus_present(cmdline_text: &str) -> usize {
    // SAFETY: q35 has fw_cfg at its fixed ports; without it the signature
    // check fails and nothing else is read.
    let mut port = unsafe { fw_cfg::transport::PortIo::new() };
    let mut n = [0u8; 2];
    let from_fw_cfg = fw_cfg::read_item(&mut port, fw_cfg::NB_CPUS, &mut n)
        .ok()
        .map(|()| usize::from(u16::from_le_bytes(n)));
    from_fw_cfg
        .filter(|&n| n > 0)
        .or_else(|| cmdline::get(cmdline_text, "qemu.cpus").and_then(|n| n.parse().ok()))
        .unwrap_or(1)
}

pub extern "C" fn boot_cpu_entry(start_info: u64) -> ! {
    time::set_epoch();
    exceptions::init_idt();
    exceptions::init_cpu(0);
    heap::init();
    // SAFETY: COM1, which every PC-compatible machine (and q35) has at 0x3f8;
    // nothing else drives it.
    let Ok(mut uart) = (unsafe { Uart16550::new_port(COM1) }) else {
        super::exit(false)
    };
    if uart.init(Config::DEFAULT).is_err() {
        // No console to say it on: the exit status is all the runner gets.
        super::exit(false)
    }
    let uart = SerialConsole { uart, dropped: 0 };
    console::install(Box::new(uart));
    // Nothing has written low memory yet: the start info is intact.
    let pvh = match read_start_info(start_info) {
        Ok(p) => p,
        Err(e) => console::bail_out(format_args!("PVH start info at {start_info:#x}: {e}")),
    };
    logger::init(cmdline::get(&pvh.cmdline, "log"));

    let mut ram = pvh.ram;
    let (kstart, kend) = (
        core::ptr::addr_of!(entry::__kernel_start) as u64,
        core::ptr::addr_of!(entry::__kernel_end) as u64,
    );
    for r in paging::install(&mut ram, PhysRange::new(kstart, kend - kstart)) {
        log::warn!("RAM {r} left unmapped and unused");
    }
    if let Err(e) = apic::init_boot() {
        console::bail_out(format_args!("local APIC: {e}"));
    }
    register_this_cpu(0);
    match time::calibrate() {
        Ok((tsc_hz, lapic_hz)) => log::debug!(
            "TSC {} MHz, LAPIC timer {} kHz (/16)",
            tsc_hz / 1_000_000,
            lapic_hz / 1000
        ),
        Err(e) => console::bail_out(format_args!("clock calibration: {e}")),
    }
    apic::init_cpu();
    smp::mark_online();
    super::interrupts_restore(true);

    let present = cpus_present(&pvh.cmdline);
    let cpus_note = start_secondaries(present);

    let mut reserved = vec![
        (PhysRange::new(kstart, kend - kstart), "kernel image"),
        (PhysRange::new(0, 1 << 20), "BIOS area and CPU trampoline"),
    ];
    reserved.extend(pvh.boot_data.iter().map(|r| (*r, "PVH start info")));
    crate::kmain(BootInfo {
        board: "a PC started through PVH",
        memory_source: "PVH memory map",
        ram,
        reserved,
        ram_slack: RAM_SLACK,
        cmdline: pvh.cmdline,
        cpus_present: present,
        cpus_note,
        acpi: match pvh.rsdp {
            0 => scan_rsdp().map_or(AcpiEntry::None, AcpiEntry::Rsdp),
            a => AcpiEntry::Rsdp(a),
        },
        devicetree: None,
    })
}

fn register_this_cpu(cpu: usize) {
    super::register_cpu(apic::id(), cpu);
}

/// INIT, then two startup IPIs (as the MP protocol asks) to every other CPU
/// at once; each takes an index in the trampoline. Waits (bounded) for
/// `present` CPUs to be online; returns why not if they are not.
fn start_secondaries(present: usize) -> Option<&'static str> {
    if present <= 1 {
        return None;
    }
    let start = core::ptr::addr_of!(entry::ap_trampoline_start);
    let len = core::ptr::addr_of!(entry::ap_trampoline_end) as usize - start as usize;
    if len > PAGE as usize {
        return Some("the CPU trampoline does not fit its page");
    }
    // SAFETY: the trampoline page is in the reserved low MiB, identity-mapped,
    // and nothing else uses it; the source is our own read-only data.
    unsafe { core::ptr::copy_nonoverlapping(start, entry::TRAMPOLINE_PHYS as *mut u8, len) };
    let page = (entry::TRAMPOLINE_PHYS >> 12) as u8;
    // The MP protocol's 10 ms INIT-to-SIPI wait is for old discrete APICs;
    // like Linux on modern CPUs we wait only briefly.
    let sent = apic::send_init_to_others()
        .inspect(|_| time::delay_us(1000))
        .and_then(|_| apic::send_startup_to_others(page))
        .inspect(|_| time::delay_us(200))
        .and_then(|_| apic::send_startup_to_others(page));
    if let Err(e) = sent {
        log::error!("starting the secondary CPUs: {e}");
        return Some("the INIT/startup IPIs were not delivered");
    }
    let wanted = present.min(smp::MAX_CPUS);
    let t0 = time::now_ns();
    while smp::online() < wanted {
        if time::now_ns() - t0 > CPU_START_TIMEOUT_NS {
            log::error!(
                "only {} of {present} CPUs came online within 1 s",
                smp::online()
            );
            return Some("a secondary CPU did not come online within 1 s");
        }
        core::hint::spin_loop();
    }
    (present > smp::MAX_CPUS).then_some("more CPUs than the kernel supports (smp::MAX_CPUS)")
}

pub extern "C" fn secondary_cpu_entry(cpu: u32) -> ! {
    paging::activate();
    let cpu = cpu as usize;
    register_this_cpu(cpu);
    exceptions::init_cpu(cpu);
    apic::init_cpu();
    smp::mark_online();
    log::debug!("cpu {cpu} (APIC id {}) online", apic::id());
    super::interrupts_restore(true);
    loop {
        x86_64::instructions::hlt();
    }
}

/// Polls for room in the transmit FIFO before a byte is dropped: the console
/// must never hang the kernel, even with a wedged UART.
const TX_SPIN_LIMIT: u32 = 1_000_000;

/// COM1 through `uart_16550`'s non-blocking send, with our own bound on the wait.
struct SerialConsole {
    uart: Uart16550<PioBackend>,
    dropped: u64,
}

impl SerialConsole {
    fn send(&mut self, b: u8) {
        for _ in 0..TX_SPIN_LIMIT {
            if self.uart.try_send_byte(b).is_ok() {
                return;
            }
            core::hint::spin_loop();
        }
        self.dropped += 1;
    }
}

impl core::fmt::Write for SerialConsole {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.send(b'\r');
            }
            self.send(b);
        }
        Ok(())
    }
}

/// Where a PC BIOS leaves the RSDP when nobody told us: the first KiB of the
/// EBDA, then the BIOS area 0xe0000..0x100000, on 16-byte boundaries.
pub fn scan_rsdp() -> Option<u64> {
    // The BIOS data and ROM areas, as PC firmware lays them out: memory,
    // read-only here (0xa0000..0xe0000, video and option ROM space, stays
    // unmapped).
    let bda = PhysRange::new(0, 0x1000);
    let rom = PhysRange::new(0xe0000, 0x20000);
    if !crate::mapping::map_firmware(bda, "BIOS data area")
        || !crate::mapping::map_firmware(rom, "BIOS ROM area")
    {
        return None;
    }
    // SAFETY: the BDA word at 0x40e (the EBDA segment), mapped just above.
    let ebda = u64::from(unsafe { core::ptr::read_unaligned(0x40e as *const u16) }) << 4;
    let ebda = (0x80000..0xa0000)
        .contains(&ebda)
        .then_some(ebda..ebda + 1024)
        .filter(|e| crate::mapping::map_firmware(PhysRange::new(e.start, 1024), "EBDA"));
    ebda.into_iter()
        .chain(core::iter::once(0xe0000..0x100000))
        .find_map(|area| {
            area.step_by(16).find(|&addr| {
                // SAFETY: 36 bytes inside the low MiB, identity-mapped and readable.
                let bytes = unsafe { core::slice::from_raw_parts(addr as *const u8, 36) };
                acpi_tables::sdt::parse_rsdp(bytes).is_ok()
            })
        })
}
