//! Boot on the boot CPU (from the 32-bit PVH entry, now in long mode, or
//! from our UEFI loader's 64-bit entry) and on the secondaries (from the
//! trampoline).
use super::{apic, entry, exceptions, paging, time};
use crate::platform::{AcpiEntry, BootInfo};
use crate::{console, heap, logger, smp};
use acpi_tables::madt::ApStartPlan;
use acpi_tables::spcr::{self, Uart16550At};
use alloc::boxed::Box;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use kernel::addr::PhysRange;
use kernel::cmdline;
use kernel::handoff::{self, Handoff};
use uart_16550::backend::Backend;
use uart_16550::{Config, Uart16550};

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
/// What UEFI firmware keeps of the RAM for itself (runtime services, ACPI
/// tables and NVS, reserved pages): OVMF on q35 keeps 6 MiB of 1 GiB.
const UEFI_RAM_SLACK: u64 = 16 << 20;
/// How long each secondary gets to come online.
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

/// The application processors to start, from the MADT (every enabled
/// local APIC / x2APIC structure but ours). Without a readable MADT only
/// the boot CPU runs, and the note says why.
fn cpu_plan(acpi: AcpiEntry) -> Result<ApStartPlan, String> {
    let madt = crate::discovery::madt(acpi)?;
    Ok(madt.ap_start_plan(apic::id(), smp::MAX_CPUS))
}

/// What the boot protocol (PVH or our UEFI loader) told us, copied out of
/// firmware memory.
struct Firmware {
    board: &'static str,
    memory_source: &'static str,
    cmdline: String,
    ram: Vec<PhysRange>,
    /// Boot data to keep out of the page allocator.
    boot_data: Vec<(PhysRange, &'static str)>,
    acpi: AcpiEntry,
    /// What a memory-size check allows the firmware to keep.
    ram_slack: u64,
}

impl From<Pvh> for Firmware {
    fn from(p: Pvh) -> Firmware {
        Firmware {
            board: "a PC started through PVH",
            memory_source: "PVH memory map",
            cmdline: p.cmdline,
            ram: p.ram,
            boot_data: p.boot_data.iter().map(|r| (*r, "PVH start info")).collect(),
            // Where the start info gives none, the BIOS areas are scanned
            // (once the identity map is up).
            acpi: match p.rsdp {
                0 => AcpiEntry::None,
                a => AcpiEntry::Rsdp(a),
            },
            ram_slack: RAM_SLACK,
        }
    }
}

pub extern "C" fn boot_cpu_entry(start_info: u64) -> ! {
    time::set_epoch();
    exceptions::init_idt();
    exceptions::init_cpu(0);
    heap::init();
    // Nothing has written low memory yet: the start info is intact.
    let fw = read_start_info(start_info)
        .map(Firmware::from)
        .map_err(|e| alloc::format!("PVH start info at {start_info:#x}: {e}"));
    boot(fw, true)
}

/// From our UEFI loader (`efi_start64`): the hand-over block at `handoff`.
pub extern "C" fn efi_boot_cpu_entry(handoff: u64) -> ! {
    time::set_epoch();
    exceptions::init_idt();
    exceptions::init_cpu(0);
    heap::init();
    super::BOOTED_BY_UEFI.store(true, core::sync::atomic::Ordering::Relaxed);
    let fw =
        read_handoff(handoff).map_err(|e| alloc::format!("UEFI hand-over at {handoff:#x}: {e}"));
    boot(fw, false)
}

/// Copies the memory map and command line the hand-over block points to.
fn read_handoff(addr: u64) -> Result<Firmware, String> {
    check_reach("hand-over block", addr, handoff::SIZE as u64).map_err(|e| e.to_string())?;
    let mut block = [0u8; handoff::SIZE];
    // SAFETY: identity-mapped low memory the loader filled in; copied out
    // byte by byte (no alignment promised) before anything else runs.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, block.as_mut_ptr(), block.len()) };
    let h = Handoff::parse(&block).map_err(|e| e.to_string())?;
    check_reach("UEFI memory map", h.memory_map_addr, h.memory_map_size)
        .map_err(|e| e.to_string())?;
    // SAFETY: the map the loader left, inside mapped low memory (checked).
    let map = unsafe {
        core::slice::from_raw_parts(h.memory_map_addr as *const u8, h.memory_map_size as usize)
    };
    let map = handoff::decode_memory_map(map, h.descriptor_size).map_err(|e| e.to_string())?;
    let mut cmdline = String::new();
    if h.cmdline_len != 0 {
        let len = h.cmdline_len.min(CMDLINE_MAX as u64);
        check_reach("command line", h.cmdline_addr, len).map_err(|e| e.to_string())?;
        // SAFETY: `len` bytes of mapped low memory the loader wrote (checked).
        let bytes =
            unsafe { core::slice::from_raw_parts(h.cmdline_addr as *const u8, len as usize) };
        cmdline = String::from_utf8_lossy(bytes).into_owned();
    }
    Ok(Firmware {
        board: "a PC started through UEFI",
        memory_source: crate::platform::UEFI_MEMORY_MAP,
        cmdline,
        ram: map.ram,
        boot_data: h.boot_data(addr),
        // UEFI hands the RSDP over; there is no BIOS area to scan.
        acpi: match h.acpi_rsdp {
            0 => AcpiEntry::None,
            a => AcpiEntry::Rsdp(a),
        },
        ram_slack: UEFI_RAM_SLACK,
    })
}

/// The boot CPU's way from what the boot protocol gave to `kmain`;
/// `scan_bios` says whether a missing RSDP is looked for in the BIOS areas.
fn boot(mut fw: Result<Firmware, String>, scan_bios: bool) -> ! {
    // The real identity map first, so the console (perhaps MMIO) and the
    // tables are reached through it.
    let (kstart, kend) = (
        core::ptr::addr_of!(entry::__kernel_start) as u64,
        core::ptr::addr_of!(entry::__kernel_end) as u64,
    );
    let unmapped = match fw.as_mut() {
        Ok(f) => paging::install(&mut f.ram, PhysRange::new(kstart, kend - kstart)),
        Err(_) => Vec::new(),
    };
    let acpi = match fw.as_ref().map_or(AcpiEntry::None, |f| f.acpi) {
        AcpiEntry::None if scan_bios => scan_rsdp().map_or(AcpiEntry::None, AcpiEntry::Rsdp),
        a => a,
    };
    let console_note = install_console(acpi);
    let fw = match fw {
        Ok(f) => f,
        Err(e) => console::bail_out(format_args!("{e}")),
    };
    logger::init(cmdline::get(&fw.cmdline, "log"));
    crate::exit::configure(&fw.cmdline);

    let ram = fw.ram;
    for r in unmapped {
        log::warn!("RAM {r} left unmapped and unused");
    }
    if let Err(e) = apic::init_boot() {
        console::bail_out(format_args!("local APIC: {e}"));
    }
    if let Some(note) = console_note {
        log::warn!("{note}");
    }
    if acpi == AcpiEntry::None {
        log::warn!("no RSDP from {}: no ACPI tables", fw.memory_source);
    }
    let plan = cpu_plan(acpi);
    let highest = plan
        .as_ref()
        .map_or(0, |p| p.start.iter().copied().max().unwrap_or(0));
    let prefer_xapic = cmdline::get(&fw.cmdline, "apic") == Some("xapic");
    match apic::choose_mode(highest, prefer_xapic) {
        Ok(x2) => log::debug!("local APIC in {} mode", if x2 { "x2APIC" } else { "xAPIC" }),
        Err(e) => console::bail_out(format_args!("local APIC: {e}")),
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

    let (present, cpus_note) = match &plan {
        Ok(p) => (1 + p.start.len() + p.parked.len(), start_secondaries(p)),
        Err(e) => {
            log::warn!("no MADT ({e}): only the boot CPU runs");
            (1, Some("no readable MADT: only the boot CPU was started"))
        }
    };

    let mut reserved = vec![
        (PhysRange::new(kstart, kend - kstart), "kernel image"),
        (PhysRange::new(0, 1 << 20), "BIOS area and CPU trampoline"),
    ];
    reserved.extend(fw.boot_data);
    crate::kmain(BootInfo {
        board: fw.board,
        memory_source: fw.memory_source,
        ram,
        reserved,
        ram_slack: fw.ram_slack,
        cmdline: fw.cmdline,
        cpus_present: present,
        cpus_note,
        acpi,
        devicetree: None,
    })
}

/// The console: the SPCR's 16550 (I/O port or MMIO) when the tables name
/// one, else COM1 (see `spcr::COM1`). Returns a note when the SPCR's UART
/// could not be used; without any console the run ends with a failing exit
/// status, all the runner gets then.
fn install_console(acpi: AcpiEntry) -> Option<String> {
    let spcr = crate::discovery::spcr(acpi);
    let mut note = None;
    let at = match spcr::pc_console(spcr.as_ref()) {
        // Eight registers at the SPCR's spacing, mapped uncached.
        Uart16550At::Mmio { address, stride }
            if !crate::mapping::map_device(
                PhysRange::new(address, 8 * u64::from(stride)),
                "SPCR console",
            ) =>
        {
            note = Some(alloc::format!(
                "SPCR console at MMIO {address:#x} could not be mapped as device memory; using COM1"
            ));
            Uart16550At::Port(spcr::COM1)
        }
        at => at,
    };
    let installed = match at {
        Uart16550At::Port(port) => {
            // SAFETY: the port firmware named for the console (or COM1);
            // nothing else drives it.
            unsafe { Uart16550::new_port(port) }
                .ok()
                .and_then(SerialConsole::start)
        }
        Uart16550At::Mmio { address, stride } => {
            // SAFETY: the UART firmware named, mapped uncached above;
            // nothing else drives it.
            unsafe {
                Uart16550::new_mmio_from_address(
                    core::num::NonZeroUsize::new(address as usize)
                        .unwrap_or(core::num::NonZeroUsize::MIN),
                    stride,
                )
            }
            .ok()
            .and_then(SerialConsole::start)
        }
    };
    if installed.is_none() {
        super::exit(false)
    }
    note
}

fn register_this_cpu(cpu: usize) {
    super::register_cpu(apic::id(), cpu);
}

/// Starts the planned CPUs one at a time: INIT, then two startup IPIs (as
/// the MP protocol asks), then a bounded wait for it to come online before
/// the next (each takes the next index in the trampoline, so a late one
/// must not race the next). Returns why fewer than present run, if so.
fn start_secondaries(plan: &ApStartPlan) -> Option<&'static str> {
    let parked = (!plan.parked.is_empty()).then(|| {
        log::warn!(
            "{} CPU(s) beyond smp::MAX_CPUS = {} left parked (APIC ids {:#x}..={:#x})",
            plan.parked.len(),
            smp::MAX_CPUS,
            plan.parked.iter().min().unwrap_or(&0),
            plan.parked.iter().max().unwrap_or(&0)
        );
        "more CPUs than the kernel drives (smp::MAX_CPUS): the rest left parked"
    });
    if plan.hotplug_slots != 0 {
        log::debug!("{} hot-plug CPU slot(s) in the MADT", plan.hotplug_slots);
    }
    if plan.start.is_empty() {
        return parked;
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
    for &id in &plan.start {
        // This CPU's stack, from the heap; none left: it and the rest stay parked.
        let mut stack: Vec<u8> = Vec::new();
        if stack.try_reserve_exact(entry::AP_STACK_SIZE).is_err() {
            log::error!("no heap left for the stack of the CPU with APIC id {id:#x}");
            return Some("the heap had no stack left for every CPU: the rest left parked");
        }
        stack.resize(entry::AP_STACK_SIZE, 0);
        let stack = stack.leak();
        let top = (stack.as_ptr() as u64 + stack.len() as u64) & !0xf;
        entry::AP_STACK_TOP.store(top, core::sync::atomic::Ordering::Release);
        let before = smp::online();
        // The MP protocol's 10 ms INIT-to-SIPI wait is for old discrete
        // APICs; like Linux on modern CPUs we wait only briefly.
        let sent = apic::send_init(id)
            .inspect(|_| time::delay_us(1000))
            .and_then(|_| apic::send_startup(id, page))
            .inspect(|_| time::delay_us(200))
            .and_then(|_| apic::send_startup(id, page));
        if let Err(e) = sent {
            log::error!("starting the CPU with APIC id {id:#x}: {e}");
            return Some("an INIT/startup IPI was not delivered");
        }
        let t0 = time::now_ns();
        while smp::online() == before {
            if time::now_ns() - t0 > CPU_START_TIMEOUT_NS {
                log::error!(
                    "the CPU with APIC id {id:#x} did not come online within 1 s; \
                     not starting the rest"
                );
                return Some("a secondary CPU did not come online within 1 s");
            }
            core::hint::spin_loop();
        }
    }
    parked
}

pub extern "C" fn secondary_cpu_entry(cpu: u32) -> ! {
    paging::activate();
    let cpu = cpu as usize;
    apic::enter_mode();
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

/// A 16550 through `uart_16550`'s non-blocking send, with our own bound on
/// the wait.
struct SerialConsole<B: Backend> {
    uart: Uart16550<B>,
    dropped: u64,
}

impl<B: Backend + Send + 'static> SerialConsole<B> {
    /// Initialises the UART and makes it the console; false if it would not.
    fn start(mut uart: Uart16550<B>) -> Option<()> {
        uart.init(Config::DEFAULT).ok()?;
        console::install(Box::new(SerialConsole { uart, dropped: 0 }));
        Some(())
    }

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

impl<B: Backend + Send + 'static> core::fmt::Write for SerialConsole<B> {
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
