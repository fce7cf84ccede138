//! Interrupt delivery.
use crate::{arch, platform, smp};
use alloc::vec::Vec;
use kernel::harness::{TestError, TestResult, Window};

/// Ticks each online CPU must see while we watch.
const TICKS_WANTED: u64 = 3;
/// How long we watch: half a second in which the watching CPU itself saw
/// 50 of its 10 ms ticks (so it really ran that long: a busy host starves
/// a TCG guest of CPU time while its clock goes on), at most 10 s.
const WATCH: Window = Window {
    min_ns: 500_000_000,
    min_ticks: 50,
    cap_ns: 10_000_000_000,
};

/// The periodic timer interrupt arrives on every CPU that was brought up.
pub fn timer_every_cpu() -> TestResult {
    let boot = platform::get();
    let online = smp::online();
    let start: Vec<u64> = (0..online).map(smp::ticks).collect();
    let watch = super::Watch::start(WATCH);
    loop {
        let behind: Vec<usize> = (0..online)
            .filter(|&c| smp::ticks(c) < start[c] + TICKS_WANTED)
            .collect();
        if behind.is_empty() {
            break;
        }
        if watch.closed() {
            let seen: Vec<u64> = behind.iter().map(|&c| smp::ticks(c) - start[c]).collect();
            return Err(TestError::mismatch(
                alloc::format!(
                    "timer interrupts missing on CPU(s) {behind:?} within {} ms",
                    watch.elapsed_ns() / 1_000_000
                ),
                alloc::format!(">= {TICKS_WANTED} ticks each"),
                alloc::format!("{seen:?} ticks"),
            ));
        }
        arch::wait_for_interrupt();
    }
    if online < boot.cpus_present {
        return Err(TestError::skip(alloc::format!(
            "timer ticks on all {online} online CPU(s), but {} of {} CPUs were left off: {}",
            boot.cpus_present - online,
            boot.cpus_present,
            boot.cpus_note
                .unwrap_or("secondary CPU bring-up not done on this board")
        )));
    }
    Ok(())
}

/// Every CPU the kernel started set up its interrupts: found its
/// redistributor (in whichever GICR region holds it), woke it, enabled its
/// CPU interface. A CPU that could not stays idle and is named here.
pub fn started_cpus_take_interrupts() -> TestResult {
    let failed = smp::failed();
    if failed.is_empty() {
        return Ok(());
    }
    Err(TestError::mismatch(
        "interrupt setup failed on started CPUs",
        "none",
        alloc::format!("{failed:?}"),
    ))
}

/// Fired MSIs each arrive exactly once: the CPU raises one the way a
/// device would (on Arm, a write to the ITS doorbell for DeviceID 0).
pub fn msi_doorbell_delivers_once() -> TestResult {
    let v = arch::msi_alloc(0).map_err(TestError::fail)?;
    for round in 1..=3u32 {
        let before = arch::msi_count(v.id);
        if let Err(e) = arch::msi_fire(&v) {
            return Err(TestError::skip(e));
        }
        wait_for_count(v.id, before + 1);
        kernel::ensure_eq!(
            arch::msi_count(v.id) - before,
            1,
            "deliveries of MSI {} for write {round}",
            v.id
        );
    }
    Ok(())
}

/// Waits (bounded) until MSI `id` was delivered `target` times, then a
/// little longer so a duplicate would show.
pub fn wait_for_count(id: u32, target: u32) {
    let watch = super::Watch::start(WATCH);
    while arch::msi_count(id) < target && !watch.closed() {
        arch::wait_for_interrupt();
    }
    let settle = arch::now_ns();
    while arch::now_ns() - settle < 5_000_000 {
        core::hint::spin_loop();
    }
}
