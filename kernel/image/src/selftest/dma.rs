//! The pasid-dma engine with the IOMMUs not translating (VT-d translation
//! off, the SMMU up with bypass STEs: `crate::iommu::untranslated`):
//! every operation, completion records and MSI-X completions, each error
//! status on purpose, several queues at once, and what a PASID-tagged
//! request does on each platform.
use crate::hal::KernelHal;
use crate::memory::DmaBuffer;
use crate::pcie;
use crate::platform::MsiVector;
use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU32, Ordering};
use kernel::dma::{DmaEngine, DmaOp, DmaResult, DmaStatus, DmaTag};
use kernel::harness::{TestError, TestResult};
use kernel::iommu::pasid::Pasid;
use kernel::mm::PAGE_SIZE;
use kernel::{cmdline, ensure, ensure_eq};
use pasid_dma::PasidDma;
use pasid_dma::{
    Descriptor, PasidDmaEngine, QueueMode, Work, ERR_BUS_MASTER_OFF, ERR_COMPLETION_FAULT,
    ERR_QUEUE_DISABLED, ERR_QUEUE_FULL,
};
use pci::ConfigSpace;

/// Bound on one operation (TCG, a few MiB at most).
const BOUND_NS: u64 = 2_000_000_000;
/// An address nothing decodes on either board: DMA there faults.
const NOWHERE: u64 = 0x7000_0000_0000;

/// The pasid-dma engine as the self-tests drive it: memory from the
/// image's HAL.
pub(super) type Engine = PasidDmaEngine<KernelHal>;

/// A claimed pasid-dma function with MSI-X on, its first vector pointing
/// at a fresh MSI. The claim outlives it (see [`CLAIMS`]).
pub(super) struct Open {
    pub(super) segment: u16,
    pub(super) f: &'static pci::Function,
    bar0: u64,
    /// The one binding of BAR0; the engines of each queue share it.
    pub(super) dev: Rc<PasidDma>,
    msix: pci::msix::Msix,
    pub(super) vector: MsiVector,
}

impl Open {
    pub(super) fn engine(
        &self,
        queue: usize,
        mode: QueueMode,
        interrupt: bool,
    ) -> Result<Engine, TestError> {
        Engine::new(
            KernelHal,
            self.dev.clone(),
            queue,
            mode,
            interrupt.then_some(0),
        )
        .map_err(|e| fail(format!("{e}")))
    }

    /// An engine on `queue` in shared mode that writes no completion
    /// records (see [`PasidDmaEngine::unrecorded`]).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub(super) fn unrecorded_engine(
        &self,
        queue: usize,
        interrupt: bool,
    ) -> Result<Engine, TestError> {
        Engine::unrecorded(
            KernelHal,
            self.dev.clone(),
            queue,
            QueueMode::Shared,
            interrupt.then_some(0),
        )
        .map_err(|e| fail(format!("{e}")))
    }

    /// The Max PASID Width of the function's PASID capability (0: none).
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub(super) fn pasid_width(&self) -> u8 {
        self.f
            .find_cap(|c| match *c {
                pci::Capability::Pasid {
                    max_pasid_width, ..
                } => Some(max_pasid_width),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Sets PASID Enable in the function's PASID capability.
    #[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
    pub(super) fn enable_pasid(&self) -> TestResult {
        let f = self.f;
        pcie::with_config(self.segment, |cfg, _| {
            pci::features::enable_pasid(cfg, f, false, false)
        })
        .ok_or_else(|| fail("segment vanished"))?
        .map_err(|x| fail(format!("{x}")))
    }

    pub(super) fn name(&self) -> String {
        format!("pasid-dma {}", self.f.bdf)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.dev.reset();
        pcie::release_pasid_dma(self.bar0);
        let (f, msix) = (self.f, &self.msix);
        pcie::with_config(self.segment, |cfg, _| {
            let _ = pci::features::disable_pasid(cfg, f);
            msix.disable(cfg);
        });
    }
}

fn fail(m: impl Into<String>) -> TestError {
    TestError::fail(m)
}

/// Every pasid-dma function, widest PASID first; SKIP when there is none
/// (a board on the stock QEMU).
/// A function found: its segment, itself, and its BAR0's CPU address.
pub(super) type Found = (u16, &'static pci::Function, Option<u64>);

fn devices() -> Result<Vec<Found>, TestError> {
    let mut found: Vec<_> = pcie::functions_of(pasid_dma::VENDOR, pasid_dma::DEVICE, 0).collect();
    if found.is_empty() {
        return Err(TestError::skip(
            "no pasid-dma device: this QEMU lacks it (it comes with the patched QEMU \
             that qemu-run builds from qemu-run/patches)",
        ));
    }
    found.sort_by_key(|(_, f, _)| {
        core::cmp::Reverse(f.find_cap(|c| match *c {
            pci::Capability::Pasid {
                max_pasid_width, ..
            } => Some(max_pasid_width),
            _ => None,
        }))
    });
    Ok(found)
}

/// MSI vectors given to pasid-dma functions, by segment and requester id:
/// a function keeps its vector from one test to the next, so opening it
/// again costs no interrupt (the ITS and the kernel's counters are few).
static VECTORS: spin::Mutex<Vec<(u16, u16, MsiVector)>> = spin::Mutex::new(Vec::new());

fn vector_of(segment: u16, f: &pci::Function) -> Result<MsiVector, TestError> {
    let rid = f.bdf.rid();
    let mut vectors = VECTORS.lock();
    if let Some(&(_, _, v)) = vectors.iter().find(|(s, r, _)| *s == segment && *r == rid) {
        return Ok(v);
    }
    let v = crate::arch::msi_alloc(super::pci::msi_device_id(segment, f)).map_err(fail)?;
    vectors.push((segment, rid, v));
    Ok(v)
}

/// pasid-dma functions stay claimed (decoding and bus mastering on) from
/// their first open to the end of the run, by segment: turning a
/// function's command bits off after every case and on before the next
/// makes QEMU rebuild every address space's view each time, a third of a
/// conformance case's time (more on q35 once many PASIDs have their own
/// address spaces). Each open still resets the device, and its PASID
/// capability and MSI-X go off when it is dropped.
static CLAIMS: spin::Mutex<Vec<(u16, pci::Claimed)>> = spin::Mutex::new(Vec::new());

/// Whether `f` is claimed (and stays so for the run).
pub(super) fn stays_claimed(segment: u16, f: &pci::Function) -> bool {
    CLAIMS
        .lock()
        .iter()
        .any(|(s, c)| *s == segment && c.bdf == f.bdf)
}

/// Whether [`open`] makes DMA untranslated first, or the caller brings
/// the IOMMU up itself before any DMA.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rest {
    Untranslated,
    CallerBringsUp,
}

fn open(
    segment: u16,
    f: &'static pci::Function,
    bar0: Option<u64>,
    rest: Rest,
) -> Result<Open, TestError> {
    // Untranslated unless the test brings the IOMMU up (an SMMU that is
    // off aborts DMA). Opening does no DMA, so a caller that brings the
    // IOMMU up next is spared a resting bring-up it would take down at
    // once (on the SMMU a whole bring-up and tear-down per case).
    if rest == Rest::Untranslated {
        crate::iommu::untranslated().map_err(fail)?;
    }
    let bar0 = bar0.ok_or_else(|| fail(format!("pasid-dma {}: BAR0 unassigned", f.bdf)))?;
    let msix = pcie::msix_of(f).map_err(|e| fail(format!("{e}")))?;
    let vector = vector_of(segment, f)?;
    let claimed = stays_claimed(segment, f);
    pcie::with_config(segment, |cfg, topo| {
        if !claimed {
            CLAIMS
                .lock()
                .push((segment, pci::driver::claim(cfg, topo, f)?));
        }
        msix.enable(cfg, f);
        Ok::<_, pci::PciError>(())
    })
    .ok_or_else(|| fail("segment vanished"))?
    .map_err(|e| fail(format!("{e}")))?;
    msix.program(0, vector.address, vector.data)
        .and_then(|()| msix.unmask(0))
        .map_err(|e| fail(format!("{e}")))?;
    let dev = pcie::pasid_dma_at(bar0).map_err(|e| fail(format!("{e}")))?;
    dev.reset();
    Ok(Open {
        segment,
        f,
        bar0,
        dev: Rc::new(dev),
        msix,
        vector,
    })
}

pub(super) fn first() -> Result<Open, TestError> {
    let (segment, f, bar0) = devices()?[0];
    open(segment, f, bar0, Rest::Untranslated)
}

/// The pasid-dma functions behind each IOMMU unit (widest PASID first),
/// by unit in the firmware tables' order; units with none are left out,
/// and so are functions behind no unit. SKIP without pasid-dma functions.
pub(super) fn by_unit() -> Result<Vec<(u64, Vec<Found>)>, TestError> {
    let found = devices()?;
    let mut groups: Vec<(u64, Vec<Found>)> = Vec::new();
    for unit in crate::iommu::units() {
        let behind: Vec<Found> = found
            .iter()
            .copied()
            .filter(|(segment, f, _)| {
                crate::iommu::route(*segment, f).is_some_and(|r| r.unit == unit)
            })
            .collect();
        if !behind.is_empty() {
            groups.push((unit, behind));
        }
    }
    Ok(groups)
}

/// The widest pasid-dma function behind each unit, opened untranslated,
/// with its unit; SKIP when no pasid-dma sits behind a unit.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(super) fn first_behind_each_unit() -> Result<Vec<(u64, Open)>, TestError> {
    let groups = by_unit()?;
    if groups.is_empty() {
        return Err(TestError::skip(
            "no pasid-dma function sits behind an IOMMU",
        ));
    }
    groups
        .into_iter()
        .map(|(unit, found)| {
            let (segment, f, bar0) = found[0];
            open(segment, f, bar0, Rest::Untranslated).map(|o| (unit, o))
        })
        .collect()
}

/// `found`, opened, for a caller that brings their IOMMU up before any
/// DMA.
#[cfg_attr(not(target_arch = "aarch64"), allow(dead_code))]
pub(super) fn open_to_bring_up(found: &[Found]) -> Result<Vec<Open>, TestError> {
    found
        .iter()
        .map(|&(segment, f, bar0)| open(segment, f, bar0, Rest::CallerBringsUp))
        .collect()
}

fn buffer(pages: usize) -> Result<DmaBuffer, TestError> {
    DmaBuffer::new(pages * PAGE_SIZE as usize, PAGE_SIZE).map_err(|e| fail(format!("{e}")))
}

fn run(e: &mut Engine, op: DmaOp, tag: DmaTag) -> Result<DmaResult, TestError> {
    e.run(&op, tag, BOUND_NS)
        .map_err(|x| fail(format!("{op:?}: {x}")))
}

fn expect_ok(e: &mut Engine, op: DmaOp) -> TestResult {
    let r = run(e, op, DmaTag::Untagged)?;
    let len = match op {
        DmaOp::Copy { len, .. } | DmaOp::Fill { len, .. } | DmaOp::Compare { len, .. } => len,
        DmaOp::WriteImm { size, .. } => u64::from(size),
    };
    ensure_eq!(
        r,
        DmaResult {
            status: DmaStatus::Success,
            bytes: len
        },
        "{op:?}"
    );
    Ok(())
}

/// Copy (aligned, and unaligned across pages), fill, compare (equal and
/// not), write-immediate of every size: the bytes land where they should
/// and nowhere else, and each completion record says so.
pub fn operations_round_trip_untagged() -> TestResult {
    let o = first()?;
    let mut e = o.engine(0, QueueMode::Dedicated(DmaTag::Untagged), false)?;
    let mut src = buffer(3)?;
    let dst = buffer(3)?;
    for (i, b) in src.as_mut_slice().iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(31).wrapping_add(7);
    }
    let (s, d) = (src.phys().as_u64(), dst.phys().as_u64());
    let len = dst.len();
    let mut got = alloc::vec![0u8; len];

    expect_ok(
        &mut e,
        DmaOp::Copy {
            src: s,
            dst: d,
            len: PAGE_SIZE,
        },
    )?;
    dst.read_volatile(0, &mut got);
    ensure!(
        got[..4096] == src.as_slice()[..4096],
        "{}: aligned 4 KiB copy differs",
        o.name()
    );

    // 5000 bytes from src+100 to dst+300: both sides cross a page.
    dst.write_volatile(0, &alloc::vec![0u8; len]);
    expect_ok(
        &mut e,
        DmaOp::Copy {
            src: s + 100,
            dst: d + 300,
            len: 5000,
        },
    )?;
    dst.read_volatile(0, &mut got);
    ensure!(
        got[300..5300] == src.as_slice()[100..5100],
        "{}: unaligned copy differs",
        o.name()
    );
    ensure!(
        got[..300].iter().chain(&got[5300..]).all(|&b| b == 0),
        "{}: the copy wrote outside its destination",
        o.name()
    );

    let pattern = 0x0123_4567_89ab_cdef_u64;
    dst.write_volatile(0, &alloc::vec![0u8; len]);
    expect_ok(
        &mut e,
        DmaOp::Fill {
            dst: d + 3,
            len: 1000,
            pattern,
        },
    )?;
    dst.read_volatile(0, &mut got);
    let want: Vec<u8> = (0..1000).map(|i| pattern.to_le_bytes()[i % 8]).collect();
    ensure!(
        got[3..1003] == want[..],
        "{}: fill pattern differs",
        o.name()
    );
    ensure!(
        got[..3].iter().chain(&got[1003..]).all(|&b| b == 0),
        "{}: fill overran",
        o.name()
    );

    dst.write_volatile(0, &src.as_slice()[..len]);
    expect_ok(
        &mut e,
        DmaOp::Compare {
            a: s,
            b: d,
            len: len as u64,
        },
    )?;
    dst.write_volatile(7777, &[!src.as_slice()[7777]]);
    let r = run(
        &mut e,
        DmaOp::Compare {
            a: s,
            b: d,
            len: len as u64,
        },
        DmaTag::Untagged,
    )?;
    ensure_eq!(
        r.status,
        DmaStatus::Differs { offset: 7777 },
        "{}: compare",
        o.name()
    );

    for (k, size) in [1u8, 2, 4, 8].into_iter().enumerate() {
        let at = 64 * k;
        dst.write_volatile(at, &[0xee; 16]);
        let value = 0x8877_6655_4433_2211_u64;
        expect_ok(
            &mut e,
            DmaOp::WriteImm {
                dst: d + at as u64,
                value,
                size,
            },
        )?;
        let mut b = [0u8; 16];
        dst.read_volatile(at, &mut b);
        let n = usize::from(size);
        ensure!(
            b[..n] == value.to_le_bytes()[..n] && b[n..].iter().all(|&x| x == 0xee),
            "{}: write-immediate of {size} byte(s): {b:02x?}",
            o.name()
        );
    }
    Ok(())
}

static COMPLETIONS: AtomicU32 = AtomicU32::new(0);

fn on_completion(_id: u32, _ctx: usize) {
    COMPLETIONS.fetch_add(1, Ordering::Relaxed);
}

/// Each completion that asks for MSI-X vector 0 sends it exactly once,
/// and the handler registered for it runs.
pub fn completion_interrupts_arrive_once() -> TestResult {
    let o = first()?;
    let mut e = o.engine(1, QueueMode::Shared, true)?;
    let buf = buffer(1)?;
    let d = buf.phys().as_u64();
    crate::interrupts::register(o.vector.id, on_completion, 0).map_err(|x| fail(format!("{x}")))?;
    let mut result = Ok(());
    for round in 0..5u64 {
        let (count, handled) = (
            crate::arch::msi_count(o.vector.id),
            COMPLETIONS.load(Ordering::Relaxed),
        );
        if let Err(x) = expect_ok(
            &mut e,
            DmaOp::WriteImm {
                dst: d + 8 * round,
                value: round,
                size: 8,
            },
        ) {
            result = Err(x);
            break;
        }
        super::irq::wait_for_count(o.vector.id, count + 1);
        let seen = (
            crate::arch::msi_count(o.vector.id) - count,
            COMPLETIONS.load(Ordering::Relaxed) - handled,
        );
        if seen != (1, 1) {
            result = Err(TestError::mismatch(
                format!(
                    "{}: completion {round}: (MSI-X deliveries, handler runs)",
                    o.name()
                ),
                "(1, 1)",
                format!("{seen:?}"),
            ));
            break;
        }
    }
    crate::interrupts::unregister(o.vector.id);
    result
}

/// Each error the device can report, provoked on purpose: malformed
/// descriptors, read and write faults with their address, PASID use
/// before the capability is enabled, a descriptor to a disabled queue, a
/// completion record nobody can write, DMA with bus mastering off.
pub fn inject_error_statuses() -> TestResult {
    let o = first()?;
    let mut e = o.engine(0, QueueMode::Shared, false)?;
    let buf = buffer(1)?;
    let d = buf.phys().as_u64();
    let name = o.name();
    let max = e.device().max_len();

    let cases: [(&str, Descriptor, DmaStatus, u64); 7] = [
        (
            "unknown opcode 9",
            raw(Work::Raw { opcode: 9, len: 8 }),
            DmaStatus::Invalid,
            0,
        ),
        (
            "a zero-length copy",
            raw(DmaOp::Copy {
                src: d,
                dst: d,
                len: 0,
            }),
            DmaStatus::Invalid,
            0,
        ),
        (
            "a copy over the length limit",
            raw(DmaOp::Copy {
                src: d,
                dst: d,
                len: max + 1,
            }),
            DmaStatus::Invalid,
            0,
        ),
        (
            "a 3-byte write-immediate",
            raw(DmaOp::WriteImm {
                dst: d,
                value: 1,
                size: 3,
            }),
            DmaStatus::Invalid,
            0,
        ),
        (
            "a copy from nowhere",
            raw(DmaOp::Copy {
                src: NOWHERE,
                dst: d,
                len: 64,
            }),
            DmaStatus::ReadFault { addr: NOWHERE },
            0,
        ),
        (
            "a copy to nowhere",
            raw(DmaOp::Copy {
                src: d,
                dst: NOWHERE,
                len: 64,
            }),
            DmaStatus::WriteFault { addr: NOWHERE },
            0,
        ),
        (
            "a PASID-tagged copy before PASID is enabled",
            Descriptor {
                tag: DmaTag::Pasid {
                    pasid: Pasid(1),
                    privileged: false,
                },
                ..raw(DmaOp::Copy {
                    src: d,
                    dst: d + 64,
                    len: 64,
                })
            },
            DmaStatus::PasidDisabled,
            0,
        ),
    ];
    for (what, desc, status, bytes) in cases {
        let t = e
            .submit_descriptor(desc)
            .map_err(|x| fail(format!("{x}")))?;
        let r = e
            .wait(t, BOUND_NS)
            .map_err(|x| fail(format!("{what}: {x}")))?;
        ensure_eq!(r, DmaResult { status, bytes }, "{name}: {what}");
    }

    // A descriptor to a queue nobody enabled is dropped and flagged.
    let dev = &*o.dev;
    dev.clear_errors(u32::MAX);
    let mut idle = o.engine(3, QueueMode::Shared, false)?;
    idle.device()
        .disable_queue(3)
        .map_err(|x| fail(format!("{x}")))?;
    let t = idle
        .submit(
            &DmaOp::Fill {
                dst: d,
                len: 8,
                pattern: 1,
            },
            DmaTag::Untagged,
        )
        .map_err(|x| fail(format!("{x}")))?;
    let (bits, queue, _) = wait_error(dev, ERR_QUEUE_DISABLED)?;
    ensure_eq!(
        (bits & ERR_QUEUE_DISABLED, queue),
        (ERR_QUEUE_DISABLED, 3),
        "{name}: error register, queue"
    );
    let record = idle.record(t).map_err(|x| fail(format!("{x}")))?;
    ensure_eq!(record.status, None, "{name}: dropped descriptor's record");
    dev.clear_errors(u32::MAX);

    // A completion record to nowhere: the operation runs, the error says where.
    e.submit_unrecorded(&Descriptor {
        completion: Some(NOWHERE),
        ..raw(DmaOp::Fill {
            dst: d,
            len: 8,
            pattern: 0x55,
        })
    })
    .map_err(|x| fail(format!("{x}")))?;
    let (bits, _, addr) = wait_error(dev, ERR_COMPLETION_FAULT)?;
    ensure_eq!(
        (bits & ERR_COMPLETION_FAULT, addr),
        (ERR_COMPLETION_FAULT, NOWHERE),
        "{name}: completion fault bit and address"
    );
    dev.clear_errors(u32::MAX);

    // Bus mastering off: nothing can be read, written or signalled.
    set_bus_master(&o, false);
    let t = e.submit(
        &DmaOp::Fill {
            dst: d,
            len: 8,
            pattern: 2,
        },
        DmaTag::Untagged,
    );
    let flagged = wait_error(dev, ERR_BUS_MASTER_OFF);
    set_bus_master(&o, true);
    let t = t.map_err(|x| fail(format!("{x}")))?;
    let (bits, _, _) = flagged?;
    ensure_eq!(
        bits & ERR_BUS_MASTER_OFF,
        ERR_BUS_MASTER_OFF,
        "{name}: bus-master-off bit"
    );
    let record = e.record(t).map_err(|x| fail(format!("{x}")))?;
    ensure_eq!(record.status, None, "{name}: record with bus mastering off");
    Ok(())
}

/// A descriptor as the device would take it from anyone: untagged, no
/// record, no interrupt (the engine fills in record and cookie).
fn raw(work: impl Into<Work>) -> Descriptor {
    Descriptor {
        work: work.into(),
        tag: DmaTag::Untagged,
        completion: None,
        interrupt: None,
        cookie: 0,
    }
}

fn set_bus_master(o: &Open, on: bool) {
    let bdf = o.f.bdf;
    pcie::with_config(o.segment, |cfg, _| {
        let c = cfg.read16(bdf, 4) & !pci::config::CMD_BUS_MASTER;
        let bit = if on { pci::config::CMD_BUS_MASTER } else { 0 };
        cfg.write16(bdf, 4, c | bit);
    });
}

/// Polls (bounded) until any of `mask` shows in the error register.
fn wait_error(dev: &pasid_dma::PasidDma, mask: u32) -> Result<(u32, u32, u64), TestError> {
    let t0 = crate::arch::now_ns();
    loop {
        let (bits, queue, addr) = dev.errors();
        if bits & mask != 0 {
            return Ok((bits, queue, addr));
        }
        if crate::arch::now_ns() - t0 > BOUND_NS {
            return Err(fail(format!(
                "error bit(s) {mask:#x} not set (error register {bits:#x})"
            )));
        }
        core::hint::spin_loop();
    }
}

/// With the engine paused a queue holds what is submitted: it reads busy
/// with every descriptor pending and no record written; one more than its
/// depth is refused (queue-full error, naming the queue). Resumed, each
/// held descriptor completes.
pub fn inject_queue_full_while_paused() -> TestResult {
    let o = first()?;
    let mut e = o.engine(2, QueueMode::Dedicated(DmaTag::Untagged), false)?;
    let dev = &*o.dev;
    let depth = dev.queue_depth();
    let name = o.name();
    let buf = buffer(1)?;
    let d = buf.phys().as_u64();
    dev.set_paused(true);
    ensure!(dev.paused(), "{name}: the pause bit does not read back");
    let mut tickets = Vec::new();
    for i in 0..u64::from(depth) {
        let op = DmaOp::WriteImm {
            dst: d + 8 * (i % 512),
            value: i,
            size: 8,
        };
        tickets.push(
            e.submit(&op, DmaTag::Untagged)
                .map_err(|x| fail(format!("{x}")))?,
        );
    }
    let pending = dev.pending(2).map_err(|x| fail(format!("{x}")))?;
    let busy = dev.busy(2).map_err(|x| fail(format!("{x}")))?;
    // Still paused: a record that cannot be read counts as written (the
    // check below fails) rather than leaving with the engine paused.
    let early = tickets
        .iter()
        .filter(|&&t| e.record(t).map(|c| c.done()).unwrap_or(true))
        .count();
    let overflow = e.submit(
        &DmaOp::WriteImm {
            dst: d,
            value: 0,
            size: 8,
        },
        DmaTag::Untagged,
    );
    let full = wait_error(dev, ERR_QUEUE_FULL);
    dev.set_paused(false);
    ensure_eq!(
        (pending, busy, early),
        (depth, true, 0),
        "{name}: paused queue (pending, busy, records written)"
    );
    overflow.map_err(|x| fail(format!("{x}")))?;
    let (_, queue, _) = full?;
    ensure_eq!(queue, 2, "{name}: the queue the queue-full error names");
    for t in tickets {
        let r = e
            .wait(t, BOUND_NS)
            .map_err(|x| fail(format!("{name}: after resuming: {x}")))?;
        ensure_eq!(
            r.status,
            DmaStatus::Success,
            "{name}: held descriptor after resuming"
        );
    }
    ensure_eq!(
        dev.completed(2).map_err(|x| fail(format!("{x}")))?,
        depth,
        "{name}: completed count"
    );
    Ok(())
}

/// All four queues, four copies queued on each before any is waited for:
/// every copy completes and its data is right.
pub fn queues_run_concurrently() -> TestResult {
    let o = first()?;
    let mut engines = Vec::new();
    for q in 0..pasid_dma::QUEUES {
        engines.push(o.engine(q, QueueMode::Dedicated(DmaTag::Untagged), false)?);
    }
    let mut src = buffer(4)?;
    let dst = buffer(4)?;
    for (i, b) in src.as_mut_slice().iter_mut().enumerate() {
        *b = (i / 7) as u8 ^ 0x5a;
    }
    let chunk = 1024u64;
    let mut tickets = Vec::new();
    for k in 0..4u64 {
        for (q, e) in engines.iter_mut().enumerate() {
            let off = (k * pasid_dma::QUEUES as u64 + q as u64) * chunk;
            let op = DmaOp::Copy {
                src: src.phys().as_u64() + off,
                dst: dst.phys().as_u64() + off,
                len: chunk,
            };
            let t = e
                .submit(&op, DmaTag::Untagged)
                .map_err(|x| fail(format!("queue {q}: {x}")))?;
            tickets.push((q, t));
        }
    }
    for (q, t) in tickets {
        let r = engines[q]
            .wait(t, BOUND_NS)
            .map_err(|x| fail(format!("queue {q}: {x}")))?;
        ensure_eq!(
            r,
            DmaResult {
                status: DmaStatus::Success,
                bytes: chunk
            },
            "queue {q}"
        );
    }
    let mut got = alloc::vec![0u8; dst.len()];
    dst.read_volatile(0, &mut got);
    ensure!(
        got == src.as_slice(),
        "{}: data after 16 concurrent copies differs",
        o.name()
    );
    for (q, e) in engines.iter().enumerate() {
        ensure_eq!(
            e.device().completed(q).map_err(|x| fail(format!("{x}")))?,
            4,
            "queue {q} completed"
        );
    }
    Ok(())
}

/// With PASID enabled and the IOMMU not translating, what a PASID-tagged
/// request does follows from the IOMMU's PASID width (SMMUv3 IDR1.SSIDSIZE,
/// VT-d ECAP.PSS): with N bits, PASIDs of N bits reach the physical
/// address like untagged requests (q35's VT-d with 8 bits, or 20 with the
/// patched QEMU's x-pasid-bits; virt's SMMUv3 with our substream patch
/// and 20) and wider ones are refused; with none, only PASID 0 is taken
/// (an SMMUv3 without substreams), and a function behind no IOMMU on a
/// platform that has some (a root bus QEMU's IORT leaves without an SMMU)
/// has no PASID taken at all. The board file states the answer
/// (`expect.pasid_tagged`: `passthrough:BITS` or `unsupported`); where it
/// and the ID registers differ (QEMU started with other widths than the
/// board file's), the difference is logged and the registers decide. A
/// PASID wider than the device's capability is refused by the device,
/// and a privileged request needs privileged mode enabled.
pub fn pasid_tagged_requests_without_translation() -> TestResult {
    let stated = cmdline::get(&crate::platform::get().cmdline, "expect.pasid_tagged");
    let stated_bits = match stated {
        None => None,
        Some("unsupported") => Some(0),
        Some(s) => match s.split_once(':') {
            Some(("passthrough", n)) => Some(
                n.parse::<u8>()
                    .ok()
                    .filter(|&n| (1..=20).contains(&n))
                    .ok_or_else(|| fail(format!("expect.pasid_tagged={s}: BITS is 1 to 20")))?,
            ),
            _ => {
                return Err(fail(format!(
                    "expect.pasid_tagged={s}: want passthrough:BITS or unsupported"
                )))
            }
        },
    };
    let units = crate::iommu::units();
    for (segment, f, bar0) in devices()? {
        // What the unit the function sits behind says; a function behind
        // none on a platform with units has nothing to carry its PASID.
        let route = crate::iommu::route(segment, f);
        let behind_none = route.is_none() && !units.is_empty();
        let reported = route.and_then(|r| iommu_pasid_bits(r.unit));
        let bits = match (stated_bits, reported) {
            _ if behind_none => 0,
            (Some(s), Some((r, register))) if s != r => {
                log::warn!(
                    "expect.pasid_tagged={} (the board file) but the IOMMU's {register} says \
                     {r} PASID bits: the platform is not the one the board file describes; \
                     testing what the IOMMU says",
                    stated.unwrap_or_default()
                );
                r
            }
            (_, Some((r, _))) => r,
            (Some(s), None) => s,
            (None, None) => {
                return Err(TestError::skip(
                    "no expect.pasid_tagged= on the command line and no IOMMU whose PASID \
                     width says what a PASID-tagged request does",
                ))
            }
        };
        let o = open(segment, f, bar0, Rest::Untranslated)?;
        let name = o.name();
        let width = f
            .find_cap(|c| match *c {
                pci::Capability::Pasid {
                    max_pasid_width, ..
                } => Some(max_pasid_width),
                _ => None,
            })
            .ok_or_else(|| fail(format!("{name}: no PASID capability")))?;
        pcie::with_config(segment, |cfg, _| {
            pci::features::enable_pasid(cfg, f, false, false)
        })
        .ok_or_else(|| fail("segment vanished"))?
        .map_err(|x| fail(format!("{x}")))?;
        let mut e = o.engine(0, QueueMode::Shared, false)?;
        let buf = buffer(1)?;
        let d = buf.phys().as_u64();
        let pasid = (1u32 << width.min(bits)) - 1;
        // The raw PASID values the device sends (tests of its width).
        let tagged = |pasid: u32, privileged| DmaTag::Pasid {
            pasid: Pasid(pasid),
            privileged,
        };
        buf.write_volatile(0, &[0; 16]);
        let r = run(
            &mut e,
            DmaOp::WriteImm {
                dst: d,
                value: 0xabcd,
                size: 8,
            },
            tagged(pasid, false),
        )?;
        let mut b = [0u8; 8];
        buf.read_volatile(0, &mut b);
        match bits {
            1.. => {
                ensure_eq!(r.status, DmaStatus::Success, "{name}: PASID {pasid}");
                ensure_eq!(
                    u64::from_le_bytes(b),
                    0xabcd,
                    "{name}: PASID {pasid} write at the physical address"
                );
            }
            0 => {
                ensure_eq!(
                    r.status,
                    DmaStatus::PasidUnsupported,
                    "{name}: PASID {pasid}"
                );
                ensure_eq!(
                    u64::from_le_bytes(b),
                    0,
                    "{name}: PASID {pasid} must not write"
                );
                let r0 = run(
                    &mut e,
                    DmaOp::WriteImm {
                        dst: d + 8,
                        value: 7,
                        size: 8,
                    },
                    tagged(0, false),
                )?;
                // With no IOMMU in its path there is no address space for
                // any PASID, 0 included; an IOMMU without PASIDs still
                // takes substream 0.
                let want = if behind_none {
                    DmaStatus::PasidUnsupported
                } else {
                    DmaStatus::Success
                };
                ensure_eq!(r0.status, want, "{name}: PASID 0 (substream 0)");
            }
        }
        let one_byte = DmaOp::WriteImm {
            dst: d,
            value: 1,
            size: 1,
        };
        if width > bits && bits > 0 {
            // Beyond what the IOMMU takes (VT-d in QEMU 10.2 offers 8-bit
            // PASIDs, ECAP.PSS).
            let r = run(&mut e, one_byte, tagged(1 << bits, false))?;
            ensure_eq!(
                r.status,
                DmaStatus::PasidUnsupported,
                "{name}: PASID {}, wider than the platform takes",
                1u32 << bits
            );
        }
        if width < 20 {
            let r = run(&mut e, one_byte, tagged(1 << width, false))?;
            ensure_eq!(
                r.status,
                DmaStatus::Invalid,
                "{name}: PASID {} on a {width}-bit device",
                1u32 << width
            );
        }
        let r = run(&mut e, one_byte, tagged(1, true))?;
        ensure_eq!(
            r.status,
            DmaStatus::PasidDisabled,
            "{name}: privileged request, privileged mode off"
        );
    }
    Ok(())
}

/// The PASID width the IOMMU at `base` reports in its ID registers, and
/// which register says so.
fn iommu_pasid_bits(base: u64) -> Option<(u8, &'static str)> {
    #[cfg(target_arch = "aarch64")]
    {
        let f = pcie::smmuv3_at(base)?.features().ok()?;
        Some((f.ssid_bits, "IDR1.SSIDSIZE"))
    }
    #[cfg(target_arch = "x86_64")]
    {
        let (_, e) = pcie::vtd_at(base)?.caps();
        Some((if e.pasid { e.pasid_bits } else { 0 }, "ECAP.PSS"))
    }
}

/// Times of 100 copies of `len` bytes, submission to completion record
/// (for the benchmarks).
pub fn copy_samples(len: u64) -> Result<Vec<u64>, TestError> {
    let o = first()?;
    let mut e = o.engine(0, QueueMode::Dedicated(DmaTag::Untagged), false)?;
    let pages = (len / PAGE_SIZE).max(1) as usize;
    let src = buffer(pages)?;
    let dst = buffer(pages)?;
    let op = DmaOp::Copy {
        src: src.phys().as_u64(),
        dst: dst.phys().as_u64(),
        len,
    };
    let mut samples = Vec::with_capacity(100);
    for _ in 0..100 {
        let t0 = crate::arch::now_ns();
        let t = e
            .submit(&op, DmaTag::Untagged)
            .map_err(|x| fail(format!("{x}")))?;
        let c = e
            .wait_record(t, BOUND_NS)
            .map_err(|x| fail(format!("{x}")))?;
        samples.push(crate::arch::now_ns() - t0);
        ensure_eq!(
            c.result(),
            Some(DmaResult {
                status: DmaStatus::Success,
                bytes: len
            }),
            "copy of {len} bytes"
        );
    }
    Ok(samples)
}
