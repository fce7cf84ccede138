//! Benchmarks: run instead of the tests when the command line has `bench`
//! (`qemu-run bench`). Each is reported as a TAP test point preceded by a
//! `# bench NAME n=… min_ns=… p10_ns=… median_ns=… p90_ns=… max_ns=…` line,
//! times measured inside the guest with `arch::now_ns`.
//!
//! Names under `vclock::` time operations whose duration QEMU's device
//! model fixes in virtual time (edu finishes a DMA 100 ms after it starts);
//! qemu-run runs them under `-icount sleep=off`, so the guest clock skips
//! the idle wait and a thousand iterations take seconds, not minutes.
use super::pci::{edu_release, edu_with_msi, EduWithMsi};
use crate::{arch, memory::DmaBuffer, pcie};
use alloc::format;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kernel::harness::{TestError, TestResult};
use kernel::stats::Stats;

const ITERATIONS: usize = 1000;
/// Bound on one iteration's wait for its interrupt.
const WAIT_NS: u64 = 1_000_000_000;

/// When the edu handler last ran (0: not since it was cleared).
static EDU_IRQ_AT: AtomicU64 = AtomicU64::new(0);

/// Registered for the edu vector: takes the time first, then acknowledges
/// every status bit, as a driver would.
fn on_edu(_id: u32, bar0: usize) {
    EDU_IRQ_AT.store(arch::now_ns().max(1), Ordering::Release);
    if let Ok(dev) = pcie::edu_at(bar0 as u64) {
        let status = dev.irq_status();
        dev.ack_irq(status);
    }
}

fn report(name: &str, samples: &mut [u64]) -> TestResult {
    let stats = Stats::of(samples).ok_or_else(|| TestError::fail("no samples"))?;
    crate::kprint!("# bench {name} {stats}\n");
    Ok(())
}

/// How a benchmark waits for its interrupt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Spinning: no wake-up latency in the figure.
    Spin,
    /// Idle until an interrupt: under `-icount sleep=off` QEMU then moves
    /// the virtual clock straight to the next timer deadline.
    Idle,
}

/// Runs `start` `ITERATIONS` times on the first edu, each time timing from
/// just before `start` to the edu handler, and reports the figures.
fn time_edu_interrupts(
    name: &str,
    wait: Wait,
    mut start: impl FnMut(&edu::Edu) -> TestResult,
) -> TestResult {
    let (segment, f, bar0) = pcie::functions_of(edu::VENDOR, edu::DEVICE, 0)
        .next()
        .ok_or_else(|| {
            TestError::skip("no edu device (the board's test configuration adds two)")
        })?;
    let EduWithMsi {
        dev,
        vector,
        claimed,
    } = edu_with_msi(segment, f, bar0)?;
    let bar0 = bar0.unwrap_or_default() as usize;
    crate::interrupts::register(vector.id, on_edu, bar0)
        .map_err(|e| TestError::fail(format!("{e}")))?;
    let mut samples = Vec::with_capacity(ITERATIONS);
    let mut result = Ok(());
    for i in 0..ITERATIONS {
        EDU_IRQ_AT.store(0, Ordering::Release);
        let t0 = arch::now_ns();
        if let Err(e) = start(&dev) {
            result = Err(e);
            break;
        }
        let at = loop {
            let at = EDU_IRQ_AT.load(Ordering::Acquire);
            if at != 0 {
                break Some(at);
            }
            if arch::now_ns() - t0 > WAIT_NS {
                break None;
            }
            match wait {
                Wait::Spin => core::hint::spin_loop(),
                Wait::Idle => {
                    // Checked again with interrupts off, so a handler that
                    // runs between the check and the wait cannot leave us
                    // asleep until the next tick.
                    let enabled = arch::interrupts_disable();
                    if EDU_IRQ_AT.load(Ordering::Acquire) == 0 {
                        arch::wait_for_interrupt();
                    }
                    arch::interrupts_restore(enabled);
                }
            }
        };
        match at {
            Some(at) => samples.push(at.saturating_sub(t0)),
            None => {
                result = Err(TestError::fail(format!(
                    "iteration {i}: no interrupt within {} ms",
                    WAIT_NS / 1_000_000
                )));
                break;
            }
        }
    }
    crate::interrupts::unregister(vector.id);
    edu_release(segment, f, claimed);
    result?;
    report(name, &mut samples)
}

/// A CPU write to edu's raise register until the MSI handler runs: the
/// MMIO write, QEMU's MSI, the interrupt controller (ITS and
/// redistributor, or local APIC) and the kernel's dispatch.
pub fn edu_msi_latency() -> TestResult {
    time_edu_interrupts("irq::edu_msi_latency", Wait::Spin, |dev| {
        dev.raise_irq(1);
        Ok(())
    })
}

/// A 4 KiB edu DMA from RAM started until its completion MSI's handler runs.
pub fn edu_dma_msi_round_trip() -> TestResult {
    let buf = DmaBuffer::new(edu::BUFFER_LEN, kernel::mm::PAGE_SIZE)
        .map_err(|e| TestError::fail(format!("{e}")))?;
    time_edu_interrupts("vclock::edu_dma_msi_round_trip", Wait::Idle, |dev| {
        dev.start_dma(
            edu::Direction::ToDevice,
            buf.phys().as_u64(),
            0,
            edu::BUFFER_LEN,
            true,
        )
        .map_err(|e| TestError::fail(format!("{e:?}")))
    })
}

/// A 4 KiB pasid-dma copy, submission to completion record (polled).
pub fn copy_4k() -> TestResult {
    let mut samples = super::dma::copy_samples(4096)?;
    report("dma::copy_4k", &mut samples)
}

/// A 1 MiB pasid-dma copy, submission to completion record (polled).
pub fn copy_1m() -> TestResult {
    let mut samples = super::dma::copy_samples(1 << 20)?;
    report("dma::copy_1m", &mut samples)
}

/// 1 MiB copies through SVA against a DMA domain, same device, same run.
pub fn copy_1m_sva_and_dma_domain() -> TestResult {
    super::conformance::board::run(super::conformance::board::copy_1m_sva_bench)
}
