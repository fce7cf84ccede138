//! Boot on the boot CPU and on the secondaries.
use super::facts::{self, BootFacts};
use super::{cache, dt, entry, gic, mmu, psci, timer, uart};
use crate::platform::{AcpiEntry, BootInfo};
use crate::{console, heap, logger, smp};
use aarch64_cpu::registers::*;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::addr::PhysRange;
use kernel::cmdline;
use kernel::handoff::{self, FactsSource, Handoff};
use spin::Once;

/// How long the boot CPU's first timer tick may take (100 Hz: 10 ms).
const FIRST_TICK_TIMEOUT_NS: u64 = 1_000_000_000;

/// How long the secondaries get to come online.
const CPU_ON_TIMEOUT_NS: u64 = 1_000_000_000;

/// A secondary's stack: it only idles and takes its timer tick.
const SECONDARY_STACK_SIZE: usize = 16 * 1024;

static FACTS: Once<BootFacts> = Once::new();
static MPIDR_OF: [AtomicU64; smp::MAX_CPUS] = [const { AtomicU64::new(0) }; smp::MAX_CPUS];

const MPIDR_AFFINITY: u64 = 0xff_00ff_ffff;

/// The boot CPU's MPIDR affinity.
pub fn boot_mpidr() -> u64 {
    MPIDR_OF[0].load(Ordering::Relaxed)
}

/// PSCI through HVC (true) or SMC (false), once the facts were read.
pub fn psci_conduit() -> Option<bool> {
    FACTS.get().and_then(|f| f.psci_hvc)
}

/// The boot facts (GIC, ITS, timer, CPUs), once the boot CPU read them.
pub fn facts() -> Option<&'static BootFacts> {
    FACTS.get()
}

fn set_vectors() {
    VBAR_EL1.set(core::ptr::addr_of!(entry::exception_vectors) as u64);
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
}

/// The boot CPU's Rust entry, per the entry contract: `dtb` is the
/// devicetree's address or 0 (x0), `handoff` our UEFI loader's hand-over
/// block or 0 (x1; U-Boot and QEMU pass 0).
pub extern "C" fn boot_cpu_entry(dtb: u64, handoff: u64) -> ! {
    TPIDR_EL1.set(0);
    set_vectors();
    let image = PhysRange {
        start: core::ptr::addr_of!(entry::__kernel_start) as u64,
        end: core::ptr::addr_of!(entry::__kernel_end) as u64,
    };
    // x1 is 0 unless our UEFI loader started us. Without a hand-over
    // block or a devicetree there is no console and no command line to
    // name an exit method, so the CPU halts (the runner's timeout ends
    // the run).
    let block = handoff::block_pages(handoff);
    let x0_dt = dt::locate(dtb).ok();
    if block.is_none() && x0_dt.is_none() {
        super::exit(false)
    }
    if let Some(block) = block {
        // The block's pages only: the rest of what it names is mapped
        // once the MMU is on and the block has been read.
        mmu::build(&[image, block]);
        before_mmu_on(image.start, image.end);
        mmu::enable();
        heap::init();
        match read_handoff(handoff) {
            Ok(h) => uefi_boot(h, handoff, image, dtb),
            // Not our loader's block: go on with the devicetree in x0,
            // and say so once its console is up.
            Err(e) => BAD_HANDOFF.call_once(|| alloc::format!("{e}")),
        };
    }
    let Some(dtb) = x0_dt else {
        // A bad block and no devicetree: nothing to report on.
        super::exit(false)
    };
    // Until the devicetree is read, RAM is what we know holds RAM: our own
    // image (with the heap) and the devicetree.
    if block.is_none() {
        mmu::build(&[image, dtb]);
        // BSS, the stack and the tables were written with the MMU off, past
        // the caches: drop any cached copies (a loader's, or speculative
        // fills) before cacheable accesses could hit them.
        before_mmu_on(image.start, image.end);
        mmu::enable();
        heap::init();
    } else {
        // The MMU is on already: the devicetree is mapped now.
        crate::mapping::map_firmware(dtb, "devicetree");
    }
    // The early console: read alone first, so a fault in the rest of the
    // tree (or in the ACPI tables) is reported on it. No usable UART
    // described: no console, and the exit status is all the runner gets.
    let uart = dt::console(dtb).ok().flatten();
    if !open_console(uart.as_ref()) {
        super::exit(false)
    }
    if let Some(e) = BAD_HANDOFF.get() {
        log::warn!("boot: x1 ({handoff:#x}) holds no UEFI hand-over block ({e}); booting from the devicetree in x0");
    }
    let dtf = dt::parse(dtb).unwrap_or_else(|e| console::bail_out(format_args!("devicetree: {e}")));
    // `no-map` reservations are RAM the kernel must not even map
    // (speculative accesses to firmware's memory could hurt).
    let no_map: alloc::vec::Vec<PhysRange> = dt::platform()
        .into_iter()
        .flat_map(|p| p.reserved_memory.iter().filter(|m| m.no_map))
        .flat_map(|m| m.regions.iter().map(|r| PhysRange::new(r.base, r.size)))
        .collect();
    let unmapped = mmu::add_ram(&kernel::mm::ranges::subtract(&dtf.ram, &no_map));
    if let Some(p) = dt::platform() {
        mmu::map_described(p);
    }
    logger::init(cmdline::get(dtf.bootargs, "log"));
    crate::exit::configure(dtf.bootargs);
    for r in &unmapped {
        log::warn!("RAM {r} left unmapped and unused");
    }
    let memory = BootMemory {
        // RAM the map could not take is not RAM the kernel may use.
        ram: kernel::mm::ranges::subtract(&dtf.ram, &unmapped),
        source: "devicetree",
        ram_slack: 0,
        reserved: vec![(image, "kernel image"), (dtf.dtb, "devicetree")]
            .into_iter()
            .chain(dtf.reserved.iter().copied())
            .collect(),
    };
    let acpi = dtf.fw_cfg.map_or(AcpiEntry::None, AcpiEntry::FwCfgMmio);
    log::info!("boot: command line from the devicetree /chosen");
    if wants_acpi(dtf.bootargs) {
        log::info!("boot: acpi=force: the machine's facts come from ACPI, not the devicetree");
        boot_from_acpi(memory, acpi, dtf.bootargs, Some(dtb));
    }
    let board = dt::platform()
        .and_then(|p| p.model.as_deref())
        .unwrap_or("a devicetree machine without a model");
    start(dtf.boot, memory, dtf.bootargs, acpi, Some(dtb), board)
}

/// Where our UEFI loader's hand-over block was, for the log once the
/// console (perhaps the SPCR's, opened later) is up.
static HANDOFF_AT: Once<u64> = Once::new();

/// Why x1's block was not used, for the console once there is one.
static BAD_HANDOFF: Once<alloc::string::String> = Once::new();

/// What UEFI firmware keeps of the RAM for itself (runtime services,
/// ACPI tables, reserved pages): edk2 on virt keeps about 7 MiB of 1 GiB.
const UEFI_RAM_SLACK: u64 = 16 << 20;

/// Longest command line taken from the hand-over block.
const CMDLINE_MAX: u64 = 4096;

/// Copies the hand-over block at `addr` (its pages are mapped) and checks it.
fn read_handoff(addr: u64) -> Result<Handoff, handoff::HandoffError> {
    let mut bytes = [0u8; handoff::SIZE];
    // SAFETY: `block_pages` pages, mapped as normal memory before the MMU
    // went on; the loader wrote and cleaned them to the point of
    // coherency. Copied byte-wise: nothing promises more alignment.
    unsafe { core::ptr::copy_nonoverlapping(addr as *const u8, bytes.as_mut_ptr(), bytes.len()) };
    Handoff::parse(&bytes)
}

/// `len` bytes of boot data at `addr`, mapped as normal memory first;
/// `None` when the range cannot be mapped (MMIO, beyond the map).
fn boot_bytes(addr: u64, len: u64, what: &str) -> Option<&'static [u8]> {
    if addr == 0 || len == 0 || addr.checked_add(len).is_none() {
        return None;
    }
    if !crate::mapping::map_firmware(PhysRange::new(addr, len), what) {
        return None;
    }
    // SAFETY: just mapped as normal memory; the loader's pages, kept from
    // the page allocator (`Handoff::boot_data`) and never written again.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

/// Boot from our UEFI loader's hand-over block (`h`, at `block`): the
/// command line first (it names the exit method), the devicetree's
/// console if firmware gave a devicetree, RAM from the UEFI memory map,
/// then the facts from ACPI or the devicetree as `Handoff::facts_source`
/// decides. Before a console is up a failure can only end the run the
/// way the command line says.
fn uefi_boot(h: Handoff, block: u64, image: PhysRange, x0: u64) -> ! {
    let cmdline: &'static str = match boot_bytes(
        h.cmdline_addr,
        h.cmdline_len.min(CMDLINE_MAX),
        "command line",
    ) {
        Some(b) => {
            alloc::string::String::leak(alloc::string::String::from_utf8_lossy(b).into_owned())
        }
        None => "",
    };
    crate::exit::configure(cmdline);
    logger::init(cmdline::get(cmdline, "log"));
    let source = h.facts_source(wants_acpi(cmdline));
    // The loader passes the devicetree in x0 as well; the block's is the one.
    let dt_addr = if h.devicetree_addr != 0 {
        h.devicetree_addr
    } else {
        x0
    };
    let dtb = match source {
        FactsSource::Devicetree => boot_bytes(dt_addr, h.devicetree_size, "devicetree")
            .and_then(|_| dt::locate(dt_addr).ok()),
        _ => None,
    };
    if let Some(dtb) = dtb {
        let uart = dt::console(dtb).ok().flatten();
        if !open_console(uart.as_ref()) {
            super::exit(false)
        }
    }
    // The map as the loader left it: a ragged or overlapping map is a
    // broken loader, said on the console when there is one.
    let map = boot_bytes(h.memory_map_addr, h.memory_map_size, "UEFI memory map")
        .ok_or_else(|| {
            alloc::format!(
                "{} bytes at {:#x} cannot be mapped",
                h.memory_map_size,
                h.memory_map_addr
            )
        })
        .and_then(|m| {
            handoff::decode_memory_map(m, h.descriptor_size).map_err(|e| alloc::format!("{e}"))
        })
        .unwrap_or_else(|e| {
            console::bail_out(format_args!(
                "UEFI hand-over at {block:#x}: memory map: {e}"
            ))
        });
    let unmapped = mmu::add_ram(&map.ram);
    for r in &unmapped {
        log::warn!("RAM {r} left unmapped and unused");
    }
    let mut reserved = vec![(image, "kernel image")];
    reserved.extend(h.boot_data(block));
    let memory = |reserved| BootMemory {
        ram: kernel::mm::ranges::subtract(&map.ram, &unmapped),
        source: crate::platform::UEFI_MEMORY_MAP,
        ram_slack: UEFI_RAM_SLACK,
        reserved,
    };
    HANDOFF_AT.call_once(|| block);
    match (source, dtb) {
        (FactsSource::Acpi(rsdp), _) => {
            boot_from_acpi(memory(reserved), AcpiEntry::Rsdp(rsdp), cmdline, None)
        }
        (FactsSource::Devicetree, Some(dtb)) => {
            let dtf = dt::parse(dtb)
                .unwrap_or_else(|e| console::bail_out(format_args!("devicetree: {e}")));
            if let Some(p) = dt::platform() {
                mmu::map_described(p);
            }
            reserved.extend(dtf.reserved.iter().copied());
            let acpi = match h.acpi_rsdp {
                0 => AcpiEntry::None,
                a => AcpiEntry::Rsdp(a),
            };
            let board = dt::platform()
                .and_then(|p| p.model.as_deref())
                .unwrap_or("a devicetree machine without a model");
            start(dtf.boot, memory(reserved), cmdline, acpi, Some(dtb), board)
        }
        (FactsSource::Devicetree, None) => console::bail_out(format_args!(
            "UEFI hand-over at {block:#x}: no devicetree at {dt_addr:#x}"
        )),
        (FactsSource::Neither, _) => console::bail_out(format_args!(
            "UEFI hand-over at {block:#x}: firmware gave neither ACPI tables nor a devicetree"
        )),
    }
}

/// Linux's word: ACPI even when there is a devicetree.
fn wants_acpi(cmdline: &str) -> bool {
    cmdline::get(cmdline, "acpi") == Some("force")
}

/// RAM for the page allocator, with where it came from and what in it
/// must not be handed out.
pub struct BootMemory {
    pub ram: Vec<PhysRange>,
    pub source: &'static str,
    /// How much RAM firmware may keep for itself (`BootInfo::ram_slack`).
    pub ram_slack: u64,
    pub reserved: Vec<(PhysRange, &'static str)>,
}

/// Boots with every machine fact from ACPI: RAM is mapped already
/// (`memory`), the tables are at `acpi`. A devicetree boot with
/// `acpi=force` comes here; so will the UEFI hand-over, with RAM from
/// its memory map and `AcpiEntry::Rsdp` from its configuration table.
/// The console switches to the SPCR's UART when that is another one.
pub fn boot_from_acpi(
    memory: BootMemory,
    acpi: AcpiEntry,
    cmdline: &'static str,
    dtb: Option<PhysRange>,
) -> ! {
    if matches!(acpi, AcpiEntry::FwCfgMmio(_)) {
        // No firmware ran, so the kernel numbers the PCI buses before it
        // reads the tables, as firmware would: QEMU builds them (the
        // IORT's RID maps) when they are first read.
        crate::pcie::enumerate_early();
    }
    let set = crate::discovery::boot_tables(acpi)
        .unwrap_or_else(|e| console::bail_out(format_args!("ACPI tables: {e}")));
    let (facts, board) = facts::from_acpi(set)
        .unwrap_or_else(|e| console::bail_out(format_args!("ACPI boot facts: {e}")));
    let current = CONSOLE_BASE.load(Ordering::Relaxed);
    match &facts.console {
        Some(u) if u.base == current => {
            log::info!("boot: the SPCR's UART is the console already")
        }
        Some(u) => {
            log::info!(
                "boot: console moves to the SPCR's {:?} at {:#x}",
                u.kind,
                u.base
            );
            if !open_console(Some(u)) {
                console::bail_out(format_args!(
                    "the SPCR's UART at {:#x} did not open",
                    u.base
                ));
            }
        }
        None if current != 0 => log::warn!("boot: no SPCR console; keeping the early console"),
        None => super::exit(false),
    }
    let board: &'static str = alloc::string::String::leak(board);
    start(facts, memory, cmdline, acpi, dtb, board)
}

/// The console's UART base, 0 before one is open.
static CONSOLE_BASE: AtomicU64 = AtomicU64::new(0);

/// Maps and opens `uart` as the console; false when there is none or it
/// cannot be used.
fn open_console(uart: Option<&devicetree::Uart>) -> bool {
    let Some(u) = uart else {
        return false;
    };
    if !crate::mapping::map_device(PhysRange::new(u.base, u.size), "console") {
        return false;
    }
    match uart::open(u) {
        Ok(dev) => {
            console::install(dev);
            CONSOLE_BASE.store(u.base, Ordering::Relaxed);
            true
        }
        Err(e) => {
            log::error!("console at {:#x}: {e}", u.base);
            false
        }
    }
}

/// The one boot path after the facts: GIC, timer, CPUs, then `kmain`.
fn start(
    facts: BootFacts,
    memory: BootMemory,
    cmdline: &'static str,
    acpi: AcpiEntry,
    dtb: Option<PhysRange>,
    board: &'static str,
) -> ! {
    facts.log();
    if let Some(block) = HANDOFF_AT.get() {
        log::info!(
            "boot: started by our UEFI loader (hand-over block at {block:#x}); command line from it"
        );
    }
    log::info!("boot: RAM from the {}", memory.source);
    mmu::map_facts(&facts);
    let facts = FACTS.call_once(|| facts);
    if let Err(e) = timer::init_clock(facts.timer_intid, facts.timer_frequency) {
        console::bail_out(format_args!("generic timer: {e}"));
    }

    let mpidr = MPIDR_EL1.get() & MPIDR_AFFINITY;
    MPIDR_OF[0].store(mpidr, Ordering::Relaxed);
    if let Err(e) = gic::init_distributor(facts.gicd) {
        console::bail_out(format_args!("GIC distributor at {:#x}: {e:?}", facts.gicd));
    }
    if let Err(e) = init_this_cpu(facts, mpidr) {
        console::bail_out(format_args!(
            "cpu 0 (MPIDR {mpidr:#x}): interrupt setup: {e:?}"
        ));
    }
    first_tick(facts);
    let cpus_note = start_secondaries(facts, mpidr);

    crate::kmain(BootInfo {
        board,
        memory_source: memory.source,
        ram: memory.ram,
        reserved: memory.reserved,
        ram_slack: memory.ram_slack,
        cmdline: cmdline.to_string(),
        cpus_present: facts.mpidr.len(),
        cpus_note,
        acpi,
        devicetree: dtb,
    })
}

/// Redistributor, CPU interface, timer tick, then interrupts on.
fn init_this_cpu(facts: &BootFacts, mpidr: u64) -> Result<(), gicv3::GicError> {
    let gicr = gic::init_cpu(&facts.gicr, mpidr)?;
    gicr.enable_private(facts.timer_intid, gic::DEFAULT_PRIORITY)?;
    timer::start_tick();
    smp::mark_online();
    super::interrupts_restore(true);
    Ok(())
}

/// Waits (bounded, without WFI) for the boot CPU's first timer tick.
/// Later waits sleep in WFI until an interrupt, the tick at least: a
/// timer INTID that never fires (a wrong GTDT or `/timer`) would leave
/// them asleep for good, so boot ends here instead, saying which.
fn first_tick(facts: &BootFacts) {
    let t0 = timer::now_ns();
    while smp::ticks(0) == 0 {
        if timer::now_ns() - t0 > FIRST_TICK_TIMEOUT_NS {
            console::bail_out(format_args!(
                "the timer's INTID {} ({}) did not interrupt within 1 s",
                facts.timer_intid, facts.sources.timer
            ));
        }
        core::hint::spin_loop();
    }
}

/// Starts every other CPU through PSCI and waits (bounded) for them. CPUs
/// beyond `smp::MAX_CPUS`, or beyond the stacks the heap can give, stay
/// parked; the note says so.
fn start_secondaries(facts: &BootFacts, boot_mpidr: u64) -> Option<&'static str> {
    let others: Vec<u64> = facts
        .mpidr
        .iter()
        .copied()
        .filter(|&m| m & MPIDR_AFFINITY != boot_mpidr)
        .collect();
    let Some(hvc) = facts.psci_hvc else {
        return (!others.is_empty()).then_some("the firmware describes no PSCI to start them with");
    };
    let entry = core::ptr::addr_of!(entry::_secondary_start) as u64;
    let mut started = 1;
    let mut note = None;
    for (i, &mpidr) in others.iter().enumerate() {
        let idx = i + 1;
        if idx >= smp::MAX_CPUS {
            log::warn!(
                "{} CPUs beyond the kernel's {} left parked (first MPIDR {mpidr:#x})",
                others.len() + 1 - idx,
                smp::MAX_CPUS
            );
            note = Some("CPUs beyond smp::MAX_CPUS left parked (see the boot log)");
            break;
        }
        let Some(stack_top) = secondary_stack(idx) else {
            log::warn!(
                "no heap for a stack: {} CPUs from MPIDR {mpidr:#x} on left parked",
                others.len() + 1 - idx
            );
            note = Some("no memory for more CPU stacks: the rest left parked");
            break;
        };
        MPIDR_OF[idx].store(mpidr & MPIDR_AFFINITY, Ordering::Release);
        match psci::cpu_on(hvc, mpidr, entry, stack_top) {
            Ok(()) => started += 1,
            Err(e) => {
                log::error!("PSCI CPU_ON for MPIDR {mpidr:#x} failed with {}", e.0);
                note = Some("PSCI CPU_ON failed for some CPUs (see the boot log)");
            }
        }
    }
    let t0 = timer::now_ns();
    while smp::online() + smp::failed_count() < started {
        if timer::now_ns() - t0 > CPU_ON_TIMEOUT_NS {
            log::error!(
                "only {} of {started} started CPUs came online within 1 s",
                smp::online()
            );
            return Some("a secondary CPU did not come online within 1 s");
        }
        core::hint::spin_loop();
    }
    if smp::failed_count() != 0 {
        return Some("interrupt setup failed on some CPUs (see irq::started_cpus_take_interrupts)");
    }
    note
}

/// A stack for secondary `idx` from the heap, returned as its top (the
/// PSCI context id). The CPU starts with its MMU off, so it reads the
/// words below the top (its index and the stack's bottom) from memory:
/// they, and the whole stack, are written back and dropped from our
/// caches so no dirty line of ours later lands over what it wrote.
fn secondary_stack(idx: usize) -> Option<u64> {
    let mut stack: Vec<u8> = Vec::new();
    stack.try_reserve_exact(SECONDARY_STACK_SIZE).ok()?;
    stack.resize(SECONDARY_STACK_SIZE, 0);
    let stack = stack.leak();
    let bottom = stack.as_ptr() as u64;
    let top = (bottom + SECONDARY_STACK_SIZE as u64) & !15;
    let args = (top - 16 - bottom) as usize;
    stack[args..args + 8].copy_from_slice(&(idx as u64).to_le_bytes());
    stack[args + 8..args + 16].copy_from_slice(&bottom.to_le_bytes());
    cache::clean_invalidate_to_poc(bottom as usize, top as usize);
    Some(top)
}

/// Cache maintenance before this CPU turns its MMU and caches on:
/// `[start, end)` was written with the MMU off, so memory holds it and any
/// cached copy is stale; the instruction cache may hold a loader's code.
fn before_mmu_on(start: u64, end: u64) {
    cache::invalidate_to_poc(start as usize, end as usize);
    cache::invalidate_icache();
}

pub extern "C" fn secondary_cpu_entry(idx: u64, stack_bottom: u64, stack_top: u64) -> ! {
    TPIDR_EL1.set(idx);
    set_vectors();
    before_mmu_on(stack_bottom, stack_top);
    mmu::enable();
    let facts = FACTS
        .get()
        .expect("secondary started before the boot CPU recorded the boot facts");
    let mpidr = MPIDR_OF[idx as usize].load(Ordering::Acquire);
    match init_this_cpu(facts, mpidr) {
        Ok(()) => log::debug!("cpu {idx} (MPIDR {mpidr:#x}) online"),
        Err(e) => {
            log::error!("cpu {idx} (MPIDR {mpidr:#x}): interrupt setup failed: {e:?}");
            smp::mark_failed(idx as usize, alloc::format!("MPIDR {mpidr:#x}: {e:?}"));
        }
    }
    loop {
        aarch64_cpu::asm::wfi();
    }
}
