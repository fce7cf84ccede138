//! The DMA conformance suite: what the IOMMU core and a driver must do,
//! written once against [`Platform`] (the core, two or three devices with
//! DMA engines, physical pages the CPU can read and write, the fault log).
//! It runs on the host against the software model ([`super::model`]) and,
//! with the drivers, on both boards.
//!
//! Every test checks data at the physical page it should reach, and
//! faults with device, PASID, address and direction. Each leaves the
//! platform as it found it: devices back in the blocked domain, AUX
//! disabled, domains and pages freed.
use super::domain::{
    DeviceId, DomainId, DomainKind, Fault, FaultReason, Feature, Iommu, IommuError, IommuHw, Pasid,
    TableFormat,
};
use super::pgtable::{Prot, TableMemory, PAGE_SIZE};
use alloc::boxed::Box;

mod ioas_cases;
mod sva;
use crate::addr::Iova;
use crate::dma::{DmaOp, DmaResult, DmaStatus, DmaTag, EngineError};
use crate::harness::{TestError, TestResult};
use crate::{ensure, ensure_eq};
use alloc::format;
use alloc::vec::Vec;
pub use ioas_cases::*;
pub use sva::*;

/// What the suite runs against.
pub trait Platform {
    type Hw: IommuHw;
    fn iommu(&mut self) -> &mut Iommu<Self::Hw>;
    /// The two widest devices, and one with a PASID capability narrower
    /// than theirs (`None` if the platform has none): chosen by width, as
    /// [`pick_devices`] does, never by position.
    fn devices(&self) -> (DeviceId, DeviceId, Option<DeviceId>);
    fn dma(&mut self, dev: DeviceId, op: DmaOp, tag: DmaTag) -> Result<DmaResult, EngineError>;
    /// Runs `op` asking for a completion interrupt; says whether exactly
    /// one arrived.
    fn dma_with_interrupt(
        &mut self,
        dev: DeviceId,
        op: DmaOp,
        tag: DmaTag,
    ) -> Result<(DmaResult, bool), EngineError>;
    /// `count` zeroed contiguous pages at a multiple of `align`.
    fn alloc_pages(&mut self, count: u64, align: u64) -> Result<u64, TestError>;
    fn free_pages(&mut self, base: u64, count: u64);
    fn read_phys(&mut self, pa: u64, out: &mut [u8]);
    fn write_phys(&mut self, pa: u64, data: &[u8]);
    /// Faults reported since the last call.
    fn take_faults(&mut self) -> Vec<Fault>;
    /// The CPU's page-table format: what a process's address space has.
    fn cpu_format(&self) -> TableFormat;
    /// Memory for a CPU address space's tables (the IOMMU must be able to
    /// read it: it walks them once the space is bound).
    fn space_memory(&mut self) -> Box<dyn TableMemory>;
}

pub type Case<P> = (&'static str, fn(&mut P) -> TestResult);

/// The suite's devices among `widths` (each device's PASID capability
/// width), chosen by width, not position: the two widest, and the
/// narrowest of the rest whose PASIDs are narrower than the widest's (and
/// not none). `None` with fewer than two devices.
pub fn pick_devices(widths: &[(DeviceId, u8)]) -> Option<(DeviceId, DeviceId, Option<DeviceId>)> {
    let mut by_width = widths.to_vec();
    by_width.sort_by_key(|&(_, bits)| core::cmp::Reverse(bits));
    let [(x, widest), (y, _), rest @ ..] = by_width.as_slice() else {
        return None;
    };
    let narrow = rest
        .iter()
        .filter(|&&(_, bits)| bits > 0 && bits < *widest)
        .min_by_key(|&&(_, bits)| bits)
        .map(|&(d, _)| d);
    Some((*x, *y, narrow))
}

/// Every case of the suite, in order, named once: calls `$m!` with
/// `$args` and then each case as `primary NAME` (runs with primary
/// domains alone, so also on stage 2) or `aux NAME` (needs PASIDs). A
/// case's TAP name is `iommu::NAME` (with the mode between on the
/// boards); names with `inject` provoke IOMMU faults on purpose (QEMU
/// logs those as guest errors). `many_aux_domains` comes last: QEMU's
/// VT-d keeps an address space for each of its 256 PASIDs, and every
/// later memory transaction renders all of them.
#[macro_export]
macro_rules! conformance_cases {
    ($m:ident $(, $args:tt)*) => {
        $m! { $($args),* ;
            primary primary_dma_lands_and_unmapped_inject_faults,
            primary read_only_mapping_inject_faults_on_write,
            aux aux_domains_are_kept_apart,
            aux primary_on_one_aux_on_another_inject_faults,
            primary unmap_invalidates_and_remap_lands_anew_inject_faults,
            aux busy_while_aux_attached,
            aux narrow_device_refuses_wide_pasid,
            aux aux_get_pasid_and_pasid_reuse,
            aux interrupts_with_aux_domains,
            aux pasid_at_the_top_of_the_range,
            primary dma_domain_hands_out_iovas_inject_faults,
            aux blocked_inject_faults_identity_passes,
            primary blocks_and_dma_across_them,
            primary bad_requests_are_refused,
            aux aux_detach_faults_and_reattach_lands_inject_faults,
            primary unmap_of_a_range_invalidates_every_page_inject_faults,
            primary primary_replace_switches_translation,
            aux randomized_soak_inject_faults,
            aux chosen_pasids_replace_detach_reuse_inject_faults,
            aux chosen_pasid_refusals,
            aux chosen_pasid_too_wide_for_the_device_is_refused,
            aux sva_copy_between_cpu_addresses_inject_faults,
            aux sva_cpu_remap_reaches_the_device_through_the_hook,
            aux sva_refusals,
            primary device_features_where_offered,
            primary ioas_auto_hwpt_shared_and_follows_mappings_inject_faults,
            primary ioas_hwpt_flags_where_offered,
            primary dirty_tracking_marks_exactly_the_pages_written,
            aux many_aux_domains,
        }
    };
}

macro_rules! case_list {
    ($p:ty ; $($kind:ident $name:ident),* $(,)?) => {
        alloc::vec![$(
            (concat!("iommu::", stringify!($name)), $name::<$p> as fn(&mut $p) -> TestResult)
        ),*]
    };
}

/// Every case, in order, with its TAP name.
pub fn cases<P: Platform>() -> Vec<Case<P>> {
    conformance_cases!(case_list, P)
}

pub(crate) const IOVA: u64 = 0x4000_0000;
const PATTERN: u8 = 0xa5;

/// A core refusal as a test failure.
pub fn core_err<E: core::fmt::Display>(e: IommuError<E>) -> TestError {
    TestError::fail(format!("{e}"))
}

fn dma<P: Platform>(
    p: &mut P,
    dev: DeviceId,
    op: DmaOp,
    tag: DmaTag,
) -> Result<DmaResult, TestError> {
    p.dma(dev, op, tag)
        .map_err(|e| TestError::fail(format!("device {dev}: {op:?}: {e}")))
}

/// Writes `value` (8 bytes) at `iova` from `dev`.
pub fn write_u64<P: Platform>(
    p: &mut P,
    dev: DeviceId,
    iova: u64,
    value: u64,
    tag: DmaTag,
) -> Result<DmaResult, TestError> {
    dma(
        p,
        dev,
        DmaOp::WriteImm {
            dst: iova,
            value,
            size: 8,
        },
        tag,
    )
}

/// The 8 bytes at physical address `pa`, as the CPU reads them.
pub fn read_u64<P: Platform>(p: &mut P, pa: u64) -> u64 {
    let mut b = [0u8; 8];
    p.read_phys(pa, &mut b);
    u64::from_le_bytes(b)
}

fn ok(bytes: u64) -> DmaResult {
    DmaResult {
        status: DmaStatus::Success,
        bytes,
    }
}

/// A PASID-tagged, unprivileged request.
pub fn tagged(pasid: Pasid) -> DmaTag {
    DmaTag::Pasid {
        pasid,
        privileged: false,
    }
}

/// Expects exactly one fault, with these fields.
fn expect_fault<P: Platform>(
    p: &mut P,
    dev: DeviceId,
    pasid: Option<Pasid>,
    iova: u64,
    write: bool,
) -> TestResult {
    let faults = p.take_faults();
    let want =
        |f: &Fault| f.dev == dev && f.pasid == pasid && f.iova == Iova(iova) && f.write == write;
    ensure!(
        faults.len() == 1 && want(&faults[0]),
        "expected one fault (device {dev}, PASID {pasid:?}, iova {iova:#x}, write {write}), got {faults:?}"
    );
    Ok(())
}

fn paging<P: Platform>(p: &mut P) -> Result<DomainId, TestError> {
    p.iommu()
        .domain_alloc(DomainKind::Unmanaged)
        .map_err(core_err)
}

/// Tears down: every device back to blocked, AUX off, domains freed.
fn release<P: Platform>(p: &mut P, domains: &[DomainId]) -> TestResult {
    let (x, y, narrow) = p.devices();
    for dev in [Some(x), Some(y), narrow].into_iter().flatten() {
        for &d in domains {
            if p.iommu().aux_get_pasid(d, dev).map_err(core_err)?.is_some() {
                p.iommu().aux_detach_device(d, dev).map_err(core_err)?;
            }
        }
        p.iommu().detach_device(dev).map_err(core_err)?;
        p.iommu()
            .dev_disable_feature(dev, Feature::Aux)
            .map_err(core_err)?;
    }
    for &d in domains {
        p.iommu().domain_free(d).map_err(core_err)?;
    }
    p.take_faults();
    Ok(())
}

/// 1: DMA through the primary domain lands on the mapped pages; an
/// unmapped address faults with the device, no PASID, the address and
/// the direction.
pub fn primary_dma_lands_and_unmapped_inject_faults<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let d = paging(p)?;
    let pages = p.alloc_pages(2, PAGE_SIZE)?;
    let (src, dst) = (pages, pages + PAGE_SIZE);
    let data: Vec<u8> = (0..PAGE_SIZE)
        .map(|i| (i as u8).wrapping_mul(13) ^ PATTERN)
        .collect();
    p.write_phys(src, &data);
    p.iommu()
        .map(d, IOVA, src, PAGE_SIZE, Prot::RO)
        .map_err(core_err)?;
    p.iommu()
        .map(d, IOVA + 0x10_0000, dst, PAGE_SIZE, Prot::RW)
        .map_err(core_err)?;
    p.iommu().attach_device(d, x).map_err(core_err)?;
    let r = dma(
        p,
        x,
        DmaOp::Copy {
            src: IOVA,
            dst: IOVA + 0x10_0000,
            len: PAGE_SIZE,
        },
        DmaTag::Untagged,
    )?;
    ensure_eq!(r, ok(PAGE_SIZE), "copy through the primary domain");
    let mut got = alloc::vec![0u8; PAGE_SIZE as usize];
    p.read_phys(dst, &mut got);
    ensure!(
        got == data,
        "the copy did not land on the mapped destination page"
    );
    let hole = IOVA + 0x20_0000;
    let r = dma(
        p,
        x,
        DmaOp::Copy {
            src: hole,
            dst: IOVA + 0x10_0000,
            len: 64,
        },
        DmaTag::Untagged,
    )?;
    ensure_eq!(
        r.status,
        DmaStatus::ReadFault { addr: hole },
        "read from an unmapped IOVA"
    );
    expect_fault(p, x, None, hole, false)?;
    release(p, &[d])?;
    p.free_pages(pages, 2);
    Ok(())
}

/// 2: a read-only mapping faults on a device write, and the page keeps its bytes.
pub fn read_only_mapping_inject_faults_on_write<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let d = paging(p)?;
    let page = p.alloc_pages(1, PAGE_SIZE)?;
    p.write_phys(page, &[PATTERN; 8]);
    p.iommu()
        .map(d, IOVA, page, PAGE_SIZE, Prot::RO)
        .map_err(core_err)?;
    p.iommu().attach_device(d, x).map_err(core_err)?;
    let r = write_u64(p, x, IOVA, 0, DmaTag::Untagged)?;
    ensure_eq!(
        r.status,
        DmaStatus::WriteFault { addr: IOVA },
        "write to a read-only page"
    );
    expect_fault(p, x, None, IOVA, true)?;
    ensure_eq!(
        read_u64(p, page),
        u64::from_le_bytes([PATTERN; 8]),
        "the read-only page changed"
    );
    release(p, &[d])?;
    p.free_pages(page, 1);
    Ok(())
}

/// 3: aux domains get distinct PASIDs; one IOVA mapped in each to its own
/// page is reached under each PASID on that domain's page only, and
/// untagged traffic to it still uses the primary domain.
pub fn aux_domains_are_kept_apart<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let Setup {
        primary,
        aux,
        pages,
        pasids,
    } = primary_and_aux(p, x, 3)?;
    let mut sorted = pasids.clone();
    sorted.sort();
    sorted.dedup();
    ensure_eq!(
        sorted.len(),
        pasids.len(),
        "PASIDs of the aux domains: {pasids:?}"
    );
    ensure!(
        !pasids.contains(&Pasid(0)),
        "PASID 0 belongs to the primary domain"
    );
    for (k, &pasid) in pasids.iter().enumerate() {
        let r = write_u64(p, x, IOVA, 0x100 + k as u64, tagged(pasid))?;
        ensure_eq!(r, ok(8), "write under PASID {pasid}");
    }
    let r = write_u64(p, x, IOVA, 0xff, DmaTag::Untagged)?;
    ensure_eq!(r, ok(8), "untagged write");
    ensure_eq!(read_u64(p, pages), 0xff, "the primary domain's page");
    for k in 0..aux.len() as u64 {
        ensure_eq!(
            read_u64(p, pages + (k + 1) * PAGE_SIZE),
            0x100 + k,
            "aux domain {k}'s page"
        );
    }
    ensure!(p.take_faults().is_empty(), "unexpected faults");
    release(p, &aux)?;
    release(p, &[primary])?;
    p.free_pages(pages, 4);
    Ok(())
}

/// 4: one domain primary on device X and aux on device Y: both reach its
/// mapping; after the unmap both fault (the invalidation reached both).
pub fn primary_on_one_aux_on_another_inject_faults<P: Platform>(p: &mut P) -> TestResult {
    let (x, y, _) = p.devices();
    let d = paging(p)?;
    let page = p.alloc_pages(1, PAGE_SIZE)?;
    p.iommu()
        .map(d, IOVA, page, PAGE_SIZE, Prot::RW)
        .map_err(core_err)?;
    p.iommu().attach_device(d, x).map_err(core_err)?;
    p.iommu()
        .dev_enable_feature(y, Feature::Aux)
        .map_err(core_err)?;
    let pasid = p.iommu().aux_attach_device(d, y).map_err(core_err)?;
    ensure_eq!(
        write_u64(p, x, IOVA, 1, DmaTag::Untagged)?,
        ok(8),
        "device X, primary"
    );
    ensure_eq!(read_u64(p, page), 1, "X's write");
    ensure_eq!(
        write_u64(p, y, IOVA + 8, 2, tagged(pasid))?,
        ok(8),
        "device Y, PASID {pasid}"
    );
    ensure_eq!(read_u64(p, page + 8), 2, "Y's write");
    p.iommu().unmap(d, IOVA, PAGE_SIZE).map_err(core_err)?;
    let r = write_u64(p, x, IOVA, 3, DmaTag::Untagged)?;
    ensure_eq!(
        r.status,
        DmaStatus::WriteFault { addr: IOVA },
        "X after the unmap"
    );
    expect_fault(p, x, None, IOVA, true)?;
    let r = write_u64(p, y, IOVA, 4, tagged(pasid))?;
    ensure_eq!(
        r.status,
        DmaStatus::WriteFault { addr: IOVA },
        "Y after the unmap"
    );
    expect_fault(p, y, Some(pasid), IOVA, true)?;
    ensure_eq!(
        (read_u64(p, page), read_u64(p, page + 8)),
        (1, 2),
        "the page after the unmap"
    );
    release(p, &[d])?;
    p.free_pages(page, 1);
    Ok(())
}

/// 5: map, DMA (warms the caches), unmap, DMA faults; remapped elsewhere,
/// DMA lands on the new page and not the old.
pub fn unmap_invalidates_and_remap_lands_anew_inject_faults<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let d = paging(p)?;
    let pages = p.alloc_pages(2, PAGE_SIZE)?;
    p.iommu().attach_device(d, x).map_err(core_err)?;
    p.iommu()
        .map(d, IOVA, pages, PAGE_SIZE, Prot::RW)
        .map_err(core_err)?;
    ensure_eq!(
        write_u64(p, x, IOVA, 7, DmaTag::Untagged)?,
        ok(8),
        "first write"
    );
    p.iommu().unmap(d, IOVA, PAGE_SIZE).map_err(core_err)?;
    let r = write_u64(p, x, IOVA, 8, DmaTag::Untagged)?;
    ensure_eq!(
        r.status,
        DmaStatus::WriteFault { addr: IOVA },
        "write after the unmap"
    );
    expect_fault(p, x, None, IOVA, true)?;
    p.iommu()
        .map(d, IOVA, pages + PAGE_SIZE, PAGE_SIZE, Prot::RW)
        .map_err(core_err)?;
    ensure_eq!(
        write_u64(p, x, IOVA, 9, DmaTag::Untagged)?,
        ok(8),
        "write after the remap"
    );
    ensure_eq!(
        (read_u64(p, pages), read_u64(p, pages + PAGE_SIZE)),
        (7, 9),
        "old page, new page"
    );
    release(p, &[d])?;
    p.free_pages(pages, 2);
    Ok(())
}

/// 6: replacing the primary domain or disabling AUX while an aux domain
/// is attached is refused as busy, and allowed once it is detached.
pub fn busy_while_aux_attached<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let (a, b) = (paging(p)?, paging(p)?);
    p.iommu().attach_device(a, x).map_err(core_err)?;
    p.iommu()
        .dev_enable_feature(x, Feature::Aux)
        .map_err(core_err)?;
    p.iommu().aux_attach_device(b, x).map_err(core_err)?;
    let busy = IommuError::Busy {
        dev: x,
        aux_domains: 1,
    };
    ensure_eq!(
        p.iommu().attach_device(b, x),
        Err(busy.clone()),
        "replace the primary"
    );
    ensure_eq!(
        p.iommu().detach_device(x),
        Err(busy.clone()),
        "detach the primary"
    );
    ensure_eq!(
        p.iommu().dev_disable_feature(x, Feature::Aux),
        Err(busy),
        "disable AUX"
    );
    ensure_eq!(
        p.iommu().domain_free(b),
        Err(IommuError::DomainInUse {
            domain: b,
            attachments: 1
        }),
        "free an attached domain"
    );
    ensure_eq!(
        p.iommu().primary_domain(x).map_err(core_err)?,
        a,
        "primary unchanged"
    );
    p.iommu().aux_detach_device(b, x).map_err(core_err)?;
    p.iommu().attach_device(b, x).map_err(core_err)?;
    p.iommu()
        .dev_disable_feature(x, Feature::Aux)
        .map_err(core_err)?;
    release(p, &[a, b])
}

/// 7: a device with a narrow PASID width gets an error at attach time for
/// a PASID beyond it (the domain's PASID is set by its first attachment,
/// to a wide device). The allocator's range is moved past the narrow
/// device's width for the test.
pub fn narrow_device_refuses_wide_pasid<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, narrow) = p.devices();
    let Some(n) = narrow else {
        return Err(TestError::skip(
            "this platform has no device with a PASID capability narrower than the others",
        ));
    };
    let bits = p.iommu().device_pasid_bits(n).map_err(core_err)?;
    let wide_bits = p.iommu().device_pasid_bits(x).map_err(core_err)?;
    ensure!(
        bits < wide_bits,
        "the platform's narrow device {n} ({bits} bits) is not narrower than device {x} \
         ({wide_bits} bits)"
    );
    let first_too_wide = 1u32 << bits.min(31);
    let saved = p.iommu().pasid_range();
    let wide_top = match p.iommu().pasid_limit(x).map_err(core_err)? {
        Some(top) if top >= first_too_wide => top,
        _ => {
            return Err(TestError::skip(format!(
                "the IOMMU takes no PASID wider than the narrow device's {bits} bits"
            )))
        }
    };
    p.iommu()
        .set_pasid_range(first_too_wide, wide_top)
        .map_err(core_err)?;
    let result = (|| {
        p.iommu()
            .dev_enable_feature(x, Feature::Aux)
            .map_err(core_err)?;
        p.iommu()
            .dev_enable_feature(n, Feature::Aux)
            .map_err(core_err)?;
        let d = paging(p)?;
        let pasid = p.iommu().aux_attach_device(d, x).map_err(core_err)?;
        ensure!(
            pasid.0 >= first_too_wide,
            "PASID {pasid} from the range {first_too_wide:#x}..={wide_top:#x}"
        );
        match p.iommu().aux_attach_device(d, n) {
            Err(IommuError::PasidTooWide { pasid: refused, .. }) => {
                ensure_eq!(refused, pasid, "the refused PASID")
            }
            other => {
                return Err(TestError::mismatch(
                    format!("aux attach of PASID {pasid:#x} to the {bits}-bit device"),
                    "PasidTooWide",
                    format!("{other:?}"),
                ))
            }
        }
        ensure_eq!(
            p.iommu().aux_get_pasid(d, n).map_err(core_err)?,
            None,
            "nothing attached"
        );
        release(p, &[d])
    })();
    let restored = p
        .iommu()
        .set_pasid_range(saved.0, saved.1)
        .map_err(core_err);
    result.and(restored)
}

/// 8: `aux_get_pasid` agrees across devices, is empty after detach, and a
/// PASID is reused only after its release.
pub fn aux_get_pasid_and_pasid_reuse<P: Platform>(p: &mut P) -> TestResult {
    let (x, y, _) = p.devices();
    let d = paging(p)?;
    p.iommu()
        .dev_enable_feature(x, Feature::Aux)
        .map_err(core_err)?;
    p.iommu()
        .dev_enable_feature(y, Feature::Aux)
        .map_err(core_err)?;
    let px = p.iommu().aux_attach_device(d, x).map_err(core_err)?;
    let py = p.iommu().aux_attach_device(d, y).map_err(core_err)?;
    ensure_eq!(px, py, "one domain, one PASID on every device");
    ensure_eq!(
        p.iommu().aux_get_pasid(d, y).map_err(core_err)?,
        Some(px),
        "aux_get_pasid on Y"
    );
    p.iommu().aux_detach_device(d, x).map_err(core_err)?;
    ensure_eq!(
        p.iommu().aux_get_pasid(d, x).map_err(core_err)?,
        None,
        "after detaching from X"
    );
    ensure_eq!(
        p.iommu().aux_detach_device(d, x),
        Err(IommuError::NotAttached { domain: d, dev: x }),
        "double detach"
    );
    // Still held by Y: another domain must get another PASID.
    let other = paging(p)?;
    let po = p.iommu().aux_attach_device(other, x).map_err(core_err)?;
    ensure!(
        po != px,
        "PASID {px} handed out again while still attached to Y"
    );
    p.iommu().aux_detach_device(other, x).map_err(core_err)?;
    p.iommu().aux_detach_device(d, y).map_err(core_err)?;
    ensure_eq!(
        p.iommu().aux_get_pasid(d, y).map_err(core_err)?,
        None,
        "after the last detach"
    );
    // Released: the lowest free PASID is px's again.
    let again = p.iommu().aux_attach_device(other, x).map_err(core_err)?;
    ensure_eq!(again, px.min(po), "the released PASID comes back");
    release(p, &[d, other])
}

/// 9: completion interrupts keep arriving while aux domains are attached
/// and the primary domain is unmanaged: the core maps the MSI doorbell in
/// the primary domain where MSIs are translated (Arm), and MSIs carry no
/// PASID whatever the request's tag was.
pub fn interrupts_with_aux_domains<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let Setup {
        primary,
        aux,
        pages,
        pasids,
    } = primary_and_aux(p, x, 2)?;
    let mut tags = alloc::vec![DmaTag::Untagged];
    tags.extend(pasids.iter().map(|&pasid| tagged(pasid)));
    for (k, &tag) in tags.iter().enumerate() {
        let op = DmaOp::WriteImm {
            dst: IOVA,
            value: k as u64,
            size: 8,
        };
        let (r, irq) = p
            .dma_with_interrupt(x, op, tag)
            .map_err(|e| TestError::fail(format!("{e}")))?;
        ensure_eq!(r, ok(8), "write with {tag:?}");
        ensure!(irq, "no completion interrupt for the write with {tag:?}");
    }
    ensure!(p.take_faults().is_empty(), "unexpected faults");
    release(p, &aux)?;
    release(p, &[primary])?;
    p.free_pages(pages, 3);
    Ok(())
}

/// A primary domain and `n` aux domains on `dev`, each mapping [`IOVA`] to
/// its own page (the primary's first).
struct Setup {
    primary: DomainId,
    aux: Vec<DomainId>,
    pages: u64,
    pasids: Vec<Pasid>,
}

fn primary_and_aux<P: Platform>(p: &mut P, dev: DeviceId, n: usize) -> Result<Setup, TestError> {
    let primary = paging(p)?;
    let aux: Vec<DomainId> = (0..n).map(|_| paging(p)).collect::<Result<_, _>>()?;
    let pages = p.alloc_pages(n as u64 + 1, PAGE_SIZE)?;
    for (k, &d) in core::iter::once(&primary).chain(&aux).enumerate() {
        let pa = pages + k as u64 * PAGE_SIZE;
        p.iommu()
            .map(d, IOVA, pa, PAGE_SIZE, Prot::RW)
            .map_err(core_err)?;
    }
    p.iommu().attach_device(primary, dev).map_err(core_err)?;
    p.iommu()
        .dev_enable_feature(dev, Feature::Aux)
        .map_err(core_err)?;
    let mut pasids = Vec::new();
    for &d in &aux {
        pasids.push(p.iommu().aux_attach_device(d, dev).map_err(core_err)?);
    }
    Ok(Setup {
        primary,
        aux,
        pages,
        pasids,
    })
}

/// 11: many aux domains on one device at once (256, or as many as the
/// PASIDs both the device and the IOMMU take and the unit's tags allow),
/// each verified by DMA to its own page.
pub fn many_aux_domains<P: Platform>(p: &mut P) -> TestResult {
    const WANTED: u64 = 256;
    let (x, _, _) = p.devices();
    let n = aux_domains_possible(p, x)?.min(WANTED);
    if n < 2 {
        return Err(TestError::skip(format!(
            "device {x} can hold {n} aux domain(s) at once (PASIDs, tags)"
        )));
    }
    p.iommu()
        .dev_enable_feature(x, Feature::Aux)
        .map_err(core_err)?;
    let pages = p.alloc_pages(n, PAGE_SIZE)?;
    let mut doms = Vec::new();
    for k in 0..n {
        let d = paging(p)?;
        doms.push(d);
        p.iommu()
            .map(d, IOVA, pages + k * PAGE_SIZE, PAGE_SIZE, Prot::RW)
            .map_err(core_err)?;
        let pasid = p.iommu().aux_attach_device(d, x).map_err(core_err)?;
        ensure_eq!(
            write_u64(p, x, IOVA, 0x1000 + k, tagged(pasid))?,
            ok(8),
            "domain {k}, PASID {pasid}"
        );
    }
    for k in 0..n {
        ensure_eq!(
            read_u64(p, pages + k * PAGE_SIZE),
            0x1000 + k,
            "domain {k}'s page"
        );
    }
    release(p, &doms)?;
    p.free_pages(pages, n);
    Ok(())
}

/// How many aux domains `dev` can hold at once: PASIDs of the allocator's
/// range that fit both the device and the IOMMU, bounded by the tags
/// (ASIDs, domain ids) the unit has left.
pub fn aux_domains_possible<P: Platform>(p: &mut P, dev: DeviceId) -> Result<u64, TestError> {
    let (min, _) = p.iommu().pasid_range();
    let pasids = match p.iommu().pasid_limit(dev).map_err(core_err)? {
        Some(top) => u64::from(top - min) + 1,
        None => 0,
    };
    let tags = p.iommu().hw.tags_left().map_or(u64::MAX, u64::from);
    Ok(pasids.min(tags))
}

/// 10: the largest PASID both the device and the IOMMU take (2^20 - 1 with
/// full widths: two-level PASID structures on real hardware) works: the
/// allocator's range is moved to it for the test.
pub fn pasid_at_the_top_of_the_range<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let saved = p.iommu().pasid_range();
    let Some(top) = p.iommu().pasid_limit(x).map_err(core_err)? else {
        return Err(TestError::skip(format!(
            "device {x} and the IOMMU share no PASID"
        )));
    };
    p.iommu().set_pasid_range(top, top).map_err(core_err)?;
    let result = (|| {
        p.iommu()
            .dev_enable_feature(x, Feature::Aux)
            .map_err(core_err)?;
        let d = paging(p)?;
        let page = p.alloc_pages(1, PAGE_SIZE)?;
        p.iommu()
            .map(d, IOVA, page, PAGE_SIZE, Prot::RW)
            .map_err(core_err)?;
        let pasid = p.iommu().aux_attach_device(d, x).map_err(core_err)?;
        ensure_eq!(pasid, Pasid(top), "the top PASID");
        ensure_eq!(
            write_u64(p, x, IOVA, 0xf00, tagged(pasid))?,
            ok(8),
            "write under PASID {pasid:#x}"
        );
        ensure_eq!(read_u64(p, page), 0xf00, "the page behind PASID {pasid:#x}");
        release(p, &[d])?;
        p.free_pages(page, 1);
        Ok(())
    })();
    let restored = p
        .iommu()
        .set_pasid_range(saved.0, saved.1)
        .map_err(core_err);
    result.and(restored)
}

/// DMA domains pick IOVAs themselves: distinct, aligned, reaching the
/// right pages; unmapped IOVAs fault and their space is reused.
pub fn dma_domain_hands_out_iovas_inject_faults<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let d = p.iommu().domain_alloc(DomainKind::Dma).map_err(core_err)?;
    p.iommu().attach_device(d, x).map_err(core_err)?;
    let pages = p.alloc_pages(3, PAGE_SIZE)?;
    let mut iovas = Vec::new();
    for k in 0..3 {
        let iova = p
            .iommu()
            .dma_map(d, pages + k * PAGE_SIZE, PAGE_SIZE, Prot::RW)
            .map_err(core_err)?;
        ensure_eq!(iova % PAGE_SIZE, 0, "IOVA alignment");
        iovas.push(iova);
        ensure_eq!(
            write_u64(p, x, iova, 0x40 + k, DmaTag::Untagged)?,
            ok(8),
            "write to IOVA {iova:#x}"
        );
    }
    let mut sorted = iovas.clone();
    sorted.dedup();
    ensure_eq!(sorted.len(), 3, "distinct IOVAs: {iovas:?}");
    for k in 0..3 {
        ensure_eq!(read_u64(p, pages + k * PAGE_SIZE), 0x40 + k, "page {k}");
    }
    p.iommu()
        .dma_unmap(d, iovas[1], PAGE_SIZE)
        .map_err(core_err)?;
    let r = write_u64(p, x, iovas[1], 0, DmaTag::Untagged)?;
    ensure_eq!(
        r.status,
        DmaStatus::WriteFault { addr: iovas[1] },
        "write after dma_unmap"
    );
    expect_fault(p, x, None, iovas[1], true)?;
    let again = p
        .iommu()
        .dma_map(d, pages, PAGE_SIZE, Prot::RO)
        .map_err(core_err)?;
    ensure_eq!(again, iovas[1], "the freed IOVA is reused");
    for &iova in &[iovas[0], iovas[2], again] {
        p.iommu().dma_unmap(d, iova, PAGE_SIZE).map_err(core_err)?;
    }
    ensure!(
        matches!(
            p.iommu().dma_map(d, pages, 1 << 40, Prot::RW),
            Err(IommuError::NoIova { .. })
        ),
        "a map bigger than the IOVA space"
    );
    release(p, &[d])?;
    p.free_pages(pages, 3);
    Ok(())
}

/// 12: a blocked domain faults every access; an identity domain passes
/// them through to the same physical address.
pub fn blocked_inject_faults_identity_passes<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let page = p.alloc_pages(1, PAGE_SIZE)?;
    p.iommu().detach_device(x).map_err(core_err)?;
    let r = write_u64(p, x, page, 1, DmaTag::Untagged)?;
    ensure_eq!(
        r.status,
        DmaStatus::WriteFault { addr: page },
        "write while blocked"
    );
    let faults = p.take_faults();
    ensure!(
        faults.len() == 1
            && faults[0].reason == FaultReason::Blocked
            && faults[0].iova == Iova(page),
        "one blocked fault at {page:#x}: {faults:?}"
    );
    let id = p
        .iommu()
        .domain_alloc(DomainKind::Identity)
        .map_err(core_err)?;
    p.iommu().attach_device(id, x).map_err(core_err)?;
    ensure_eq!(
        write_u64(p, x, page, 0x1d, DmaTag::Untagged)?,
        ok(8),
        "identity write"
    );
    ensure_eq!(read_u64(p, page), 0x1d, "the identity-mapped page");
    ensure_eq!(
        p.iommu().aux_attach_device(id, x),
        Err(IommuError::AuxDisabled(x)),
        "aux attach without AUX"
    );
    p.iommu()
        .dev_enable_feature(x, Feature::Aux)
        .map_err(core_err)?;
    ensure_eq!(
        p.iommu().aux_attach_device(id, x),
        Err(IommuError::WrongDomainType {
            domain: id,
            kind: DomainKind::Identity
        }),
        "aux attach of an identity domain"
    );
    release(p, &[id])?;
    p.free_pages(page, 1);
    Ok(())
}

/// 13: 2 MiB blocks where IOVA and physical address are aligned, and a DMA
/// across the boundary of two blocks is right.
pub fn blocks_and_dma_across_them<P: Platform>(p: &mut P) -> TestResult {
    const M2: u64 = 2 << 20;
    let (x, _, _) = p.devices();
    let d = paging(p)?;
    let big = p.alloc_pages(2 * M2 / PAGE_SIZE, M2)?;
    let small = p.alloc_pages(2, PAGE_SIZE)?;
    p.iommu()
        .map(d, 4 * M2, big, 2 * M2, Prot::RW)
        .map_err(core_err)?;
    p.iommu()
        .map(d, IOVA, small, 2 * PAGE_SIZE, Prot::RW)
        .map_err(core_err)?;
    p.iommu().attach_device(d, x).map_err(core_err)?;
    let data: Vec<u8> = (0..2 * PAGE_SIZE).map(|i| (i % 251) as u8).collect();
    p.write_phys(small, &data);
    // 8 KiB straddling the two blocks.
    let at = 5 * M2 - PAGE_SIZE;
    let r = dma(
        p,
        x,
        DmaOp::Copy {
            src: IOVA,
            dst: at,
            len: 2 * PAGE_SIZE,
        },
        DmaTag::Untagged,
    )?;
    ensure_eq!(r, ok(2 * PAGE_SIZE), "copy across the block boundary");
    let mut got = alloc::vec![0u8; 2 * PAGE_SIZE as usize];
    p.read_phys(big + M2 - PAGE_SIZE, &mut got);
    ensure!(got == data, "the bytes across the boundary");
    ensure_eq!(
        p.iommu().iova_to_phys(d, 5 * M2 + 123).map_err(core_err)?,
        Some(big + M2 + 123),
        "iova_to_phys in the second block"
    );
    release(p, &[d])?;
    p.free_pages(big, 2 * M2 / PAGE_SIZE);
    p.free_pages(small, 2);
    Ok(())
}

/// Bad requests get typed errors and change nothing.
pub fn bad_requests_are_refused<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let d = paging(p)?;
    let page = p.alloc_pages(1, PAGE_SIZE)?;
    let iommu = p.iommu();
    iommu
        .map(d, IOVA, page, PAGE_SIZE, Prot::RW)
        .map_err(core_err)?;
    ensure!(
        matches!(
            iommu.map(d, IOVA, page, PAGE_SIZE, Prot::RW),
            Err(IommuError::PageTable(_))
        ),
        "overlapping map"
    );
    ensure!(
        matches!(
            iommu.map(d, IOVA + 1, page, PAGE_SIZE, Prot::RW),
            Err(IommuError::PageTable(_))
        ),
        "misaligned map"
    );
    ensure!(
        matches!(
            iommu.map(d, !0xfff, page, 2 * PAGE_SIZE, Prot::RW),
            Err(IommuError::PageTable(_))
        ),
        "overflowing map"
    );
    ensure!(
        matches!(
            iommu.unmap(d, IOVA + PAGE_SIZE, PAGE_SIZE),
            Err(IommuError::PageTable(_))
        ),
        "unmap of what is not mapped"
    );
    ensure_eq!(
        iommu.attach_device(d, DeviceId(9999)),
        Err(IommuError::UnknownDevice(DeviceId(9999))),
        "unknown device"
    );
    ensure_eq!(
        iommu.attach_device(DomainId(9999), x),
        Err(IommuError::UnknownDomain(DomainId(9999))),
        "unknown domain"
    );
    if !iommu.dev_has_feature(x, Feature::Sva).map_err(core_err)? {
        ensure_eq!(
            iommu.dev_enable_feature(x, Feature::Sva),
            Err(IommuError::Unsupported(Feature::Sva)),
            "SVA where the unit cannot walk a CPU's tables"
        );
    }
    ensure_eq!(
        iommu.iova_to_phys(d, IOVA + 5).map_err(core_err)?,
        Some(page + 5),
        "the mapping survived"
    );
    let blocked = iommu.default_domain();
    ensure!(
        matches!(
            iommu.domain_free(blocked),
            Err(IommuError::DomainInUse { .. })
        ),
        "free the default domain"
    );
    release(p, &[d])?;
    p.free_pages(page, 1);
    Ok(())
}

/// Expects `dev`'s write to `iova` under `tag` to fault, with the fault
/// naming the device, the tag's PASID, the address and the direction;
/// `what` says which write it was.
fn write_faults<P: Platform>(
    p: &mut P,
    dev: DeviceId,
    iova: u64,
    tag: DmaTag,
    what: &str,
) -> TestResult {
    let r = write_u64(p, dev, iova, 0xdead_beef, tag)?;
    ensure_eq!(
        r.status,
        DmaStatus::WriteFault { addr: iova },
        "{what}: write to {iova:#x} with {tag:?}"
    );
    let pasid = match tag {
        DmaTag::Untagged => None,
        DmaTag::Pasid { pasid, .. } => Some(pasid),
    };
    expect_fault(p, dev, pasid, iova, true).map_err(|e| match e {
        TestError::Fail {
            message,
            expected,
            seen,
        } => TestError::Fail {
            message: format!("{what}: {message}"),
            expected,
            seen,
        },
        e => e,
    })
}

/// Two paging domains A and B mapping [`IOVA`] to two pages of their own:
/// `(A, B, A's page)`, B's page following A's.
fn two_domains<P: Platform>(p: &mut P) -> Result<(DomainId, DomainId, u64), TestError> {
    let (a, b) = (paging(p)?, paging(p)?);
    let pages = p.alloc_pages(2, PAGE_SIZE)?;
    for (k, d) in [a, b].into_iter().enumerate() {
        p.iommu()
            .map(d, IOVA, pages + k as u64 * PAGE_SIZE, PAGE_SIZE, Prot::RW)
            .map_err(core_err)?;
    }
    Ok((a, b, pages))
}

/// 15: after an aux detach, a write under the old PASID faults and
/// changes nothing, though the PASID carried DMA just before (its entry
/// and translations cached); the next domain attached gets the same
/// PASID, and a write under it lands on that domain's page alone.
pub fn aux_detach_faults_and_reattach_lands_inject_faults<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let (a, b, pages) = two_domains(p)?;
    let (pa, pb) = (pages, pages + PAGE_SIZE);
    p.iommu()
        .dev_enable_feature(x, Feature::Aux)
        .map_err(core_err)?;
    let pasid = p.iommu().aux_attach_device(a, x).map_err(core_err)?;
    ensure_eq!(
        write_u64(p, x, IOVA, 0x11, tagged(pasid))?,
        ok(8),
        "write under PASID {pasid} while attached"
    );
    ensure_eq!(read_u64(p, pa), 0x11, "the attached domain's page");
    p.iommu().aux_detach_device(a, x).map_err(core_err)?;
    write_blocked(p, x, pasid, 0x12, "write after the detach")?;
    ensure_eq!(
        (read_u64(p, pa), read_u64(p, pb)),
        (0x11, 0),
        "the pages after the write under the detached PASID"
    );
    let again = p.iommu().aux_attach_device(b, x).map_err(core_err)?;
    ensure_eq!(again, pasid, "the released PASID comes back");
    ensure_eq!(
        write_u64(p, x, IOVA, 0x22, tagged(again))?,
        ok(8),
        "write under PASID {again} after the re-attach"
    );
    ensure_eq!(
        (read_u64(p, pa), read_u64(p, pb)),
        (0x11, 0x22),
        "the old domain's page, the new domain's page"
    );
    ensure!(p.take_faults().is_empty(), "unexpected faults");
    release(p, &[a, b])?;
    p.free_pages(pages, 2);
    Ok(())
}

/// Warms `dev`'s translations of the first, middle and last of `pages`
/// pages at `iova` (mapped to `pa` on) by writing there, unmaps the range
/// in one call, and expects each of those writes to fault afterwards, the
/// pages keeping their bytes.
fn unmap_warm_range<P: Platform>(
    p: &mut P,
    dev: DeviceId,
    d: DomainId,
    iova: u64,
    pa: impl Fn(u64) -> u64,
    pages: u64,
) -> TestResult {
    let probes = [0, pages / 2, pages - 1];
    for (k, &page) in probes.iter().enumerate() {
        let value = 0x5000 + k as u64;
        ensure_eq!(
            write_u64(p, dev, iova + page * PAGE_SIZE, value, DmaTag::Untagged)?,
            ok(8),
            "warming page {page} of {pages}"
        );
        ensure_eq!(read_u64(p, pa(page)), value, "page {page} of {pages}");
    }
    p.iommu()
        .unmap(d, iova, pages * PAGE_SIZE)
        .map_err(core_err)?;
    for &page in probes.iter().rev() {
        let what = format!("page {page} of {pages} after the unmap");
        write_faults(p, dev, iova + page * PAGE_SIZE, DmaTag::Untagged, &what)?;
    }
    for (k, &page) in probes.iter().enumerate() {
        ensure_eq!(
            read_u64(p, pa(page)),
            0x5000 + k as u64,
            "page {page} of {pages} after the unmap"
        );
    }
    Ok(())
}

/// 16: one unmap of a range whose translations are cached invalidates
/// every page of it, not the first alone: writes to its middle and last
/// pages fault afterwards. Three ranges: a few pages; the upper half of a
/// 2 MiB block (split by the unmap where the format has 2 MiB leaves; the
/// lower half keeps working); and one page more than the driver's
/// invalidation batch names one by one (its cap, asked of the driver).
pub fn unmap_of_a_range_invalidates_every_page_inject_faults<P: Platform>(p: &mut P) -> TestResult {
    const M2: u64 = 2 << 20;
    const FEW: u64 = 4;
    let (x, _, _) = p.devices();
    // Without a cap, a range as long as the longest cap of our drivers.
    let long = p.iommu().hw.invalidation_batch_cap().unwrap_or(64) + 1;
    let d = paging(p)?;
    p.iommu().attach_device(d, x).map_err(core_err)?;
    let small = p.alloc_pages(FEW, PAGE_SIZE)?;
    p.iommu()
        .map(d, IOVA, small, FEW * PAGE_SIZE, Prot::RW)
        .map_err(core_err)?;
    unmap_warm_range(p, x, d, IOVA, |k| small + k * PAGE_SIZE, FEW)?;
    p.free_pages(small, FEW);

    let block = p.alloc_pages(M2 / PAGE_SIZE, M2)?;
    let at = IOVA + M2;
    p.iommu()
        .map(d, at, block, M2, Prot::RW)
        .map_err(core_err)?;
    let half = M2 / 2 / PAGE_SIZE;
    unmap_warm_range(
        p,
        x,
        d,
        at + M2 / 2,
        |k| block + M2 / 2 + k * PAGE_SIZE,
        half,
    )?;
    for page in [0, half - 1] {
        let iova = at + page * PAGE_SIZE;
        ensure_eq!(
            write_u64(p, x, iova, 0x6000 + page, DmaTag::Untagged)?,
            ok(8),
            "page {page} of the block's lower half after the split"
        );
        ensure_eq!(
            read_u64(p, block + page * PAGE_SIZE),
            0x6000 + page,
            "page {page} of the block"
        );
    }
    p.iommu().unmap(d, at, M2 / 2).map_err(core_err)?;
    p.free_pages(block, M2 / PAGE_SIZE);

    // Page by page, so no block forms: the first, middle and last page
    // each on its own physical page, the rest on a fourth.
    let pool = p.alloc_pages(4, PAGE_SIZE)?;
    let role = move |k: u64| match k {
        0 => 0,
        k if k == long / 2 => 1,
        k if k == long - 1 => 2,
        _ => 3,
    };
    let far = IOVA + 2 * M2;
    for k in 0..long {
        p.iommu()
            .map(
                d,
                far + k * PAGE_SIZE,
                pool + role(k) * PAGE_SIZE,
                PAGE_SIZE,
                Prot::RW,
            )
            .map_err(core_err)?;
    }
    unmap_warm_range(p, x, d, far, |k| pool + role(k) * PAGE_SIZE, long)?;
    p.free_pages(pool, 4);
    ensure!(p.take_faults().is_empty(), "unexpected faults");
    release(p, &[d])
}

/// 17: replacing a live primary domain takes effect at once: a write
/// lands in the old domain's page before, in the new one's after, and in
/// the old one's again when it comes back (also on stage 2, where the
/// SMMU's stream table entry changes in two words).
pub fn primary_replace_switches_translation<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let (a, b, pages) = two_domains(p)?;
    let (pa, pb) = (pages, pages + PAGE_SIZE);
    for (k, (dom, name)) in [(a, "A"), (b, "B"), (a, "A again")].into_iter().enumerate() {
        p.iommu().attach_device(dom, x).map_err(core_err)?;
        let value = 0x70 + k as u64;
        ensure_eq!(
            write_u64(p, x, IOVA, value, DmaTag::Untagged)?,
            ok(8),
            "write through {name}"
        );
        let want = match k {
            0 => (value, 0),
            1 => (0x70, value),
            _ => (value, 0x71),
        };
        ensure_eq!(
            (read_u64(p, pa), read_u64(p, pb)),
            want,
            "A's page, B's page after the write through {name}"
        );
    }
    ensure!(p.take_faults().is_empty(), "unexpected faults");
    release(p, &[a, b])?;
    p.free_pages(pages, 2);
    Ok(())
}

/// The randomized soak's reference: what each domain maps and what the
/// first word of every page must hold.
struct Soak {
    x: DeviceId,
    y: DeviceId,
    doms: [DomainId; 2],
    pages: u64,
    mapped: [[Option<u64>; Soak::SLOTS as usize]; 2],
    memory: [u64; Soak::SLOTS as usize],
    primary_of_x: Option<usize>,
    writes: u64,
}

impl Soak {
    const SLOTS: u64 = 16;

    /// Where domain `dom` is reached: X untagged while it is X's primary,
    /// Y under its PASID while aux-attached there.
    fn paths<P: Platform>(
        &self,
        p: &mut P,
        dom: usize,
    ) -> Result<Vec<(DeviceId, DmaTag)>, TestError> {
        let mut v = Vec::new();
        if self.primary_of_x == Some(dom) {
            v.push((self.x, DmaTag::Untagged));
        }
        if let Some(pasid) = p
            .iommu()
            .aux_get_pasid(self.doms[dom], self.y)
            .map_err(core_err)?
        {
            v.push((self.y, tagged(pasid)));
        }
        Ok(v)
    }

    /// One write through `path` to `slot` of domain `dom`, checked against
    /// the reference: it lands on the mapped page and nowhere else, or
    /// faults (reported in full) and changes nothing.
    fn write<P: Platform>(
        &mut self,
        p: &mut P,
        (dev, tag): (DeviceId, DmaTag),
        dom: usize,
        slot: u64,
        round: u64,
    ) -> TestResult {
        self.writes += 1;
        let value = self.writes << 8 | slot;
        let iova = IOVA + slot * PAGE_SIZE;
        match self.mapped[dom][slot as usize] {
            Some(pa) => {
                ensure_eq!(
                    write_u64(p, dev, iova, value, tag)?,
                    ok(8),
                    "round {round}: write with {tag:?} through domain {dom}, slot {slot}"
                );
                self.memory[((pa - self.pages) / PAGE_SIZE) as usize] = value;
            }
            None => {
                let what = format!("round {round}: domain {dom}, unmapped slot {slot}");
                write_faults(p, dev, iova, tag, &what)?
            }
        }
        for k in 0..Self::SLOTS {
            ensure_eq!(
                read_u64(p, self.pages + k * PAGE_SIZE),
                self.memory[k as usize],
                "round {round}: page {k} after a write with {tag:?} to slot {slot} of domain {dom}"
            );
        }
        Ok(())
    }

    /// Writes through every path of `dom` to each of `slots`.
    fn write_all<P: Platform>(
        &mut self,
        p: &mut P,
        dom: usize,
        slots: core::ops::Range<u64>,
        round: u64,
    ) -> TestResult {
        for path in self.paths(p, dom)? {
            for slot in slots.clone() {
                self.write(p, path, dom, slot, round)?;
            }
        }
        Ok(())
    }
}

/// 14: random map, unmap, DMA and reattach, every write checked against a
/// reference (the slots each domain maps, the word every page holds): a
/// write through a mapped slot lands on its page and nowhere else, one
/// through an unmapped slot faults, reported in full, and changes nothing.
/// Maps and unmaps take runs of up to three slots (an unmap in one call)
/// and are followed by writes through every path to the domain (an unmap
/// also preceded by them, to warm the caches), so a stale translation is
/// met at once. No table page or PASID is left over after teardown.
pub fn randomized_soak_inject_faults<P: Platform>(p: &mut P) -> TestResult {
    const SLOTS: u64 = Soak::SLOTS;
    let (x, y, _) = p.devices();
    let tables_before = p.iommu().table_pages();
    let pasids_before = p.iommu().pasids_in_use();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let pages = p.alloc_pages(SLOTS, PAGE_SIZE)?;
    let doms = [paging(p)?, paging(p)?];
    p.iommu()
        .dev_enable_feature(y, Feature::Aux)
        .map_err(core_err)?;
    let mut s = Soak {
        x,
        y,
        doms,
        pages,
        mapped: [[None; SLOTS as usize]; 2],
        memory: [0; SLOTS as usize],
        primary_of_x: None,
        writes: 0,
    };
    for round in 0..400u64 {
        let which = (next() % 2) as usize;
        let slot = next() % SLOTS;
        let want = (1 + next() % 3).min(SLOTS - slot);
        let slots = &mut s.mapped[which][slot as usize..(slot + want) as usize];
        match next() % 4 {
            0 if slots.iter().all(Option::is_none) => {
                for k in slot..slot + want {
                    let pa = pages + (next() % SLOTS) * PAGE_SIZE;
                    p.iommu()
                        .map(doms[which], IOVA + k * PAGE_SIZE, pa, PAGE_SIZE, Prot::RW)
                        .map_err(core_err)?;
                    s.mapped[which][k as usize] = Some(pa);
                }
                s.write_all(p, which, slot..slot + want, round)?;
            }
            1 if slots[0].is_some() => {
                let run = slots.iter().take_while(|m| m.is_some()).count() as u64;
                s.write_all(p, which, slot..slot + run, round)?;
                p.iommu()
                    .unmap(doms[which], IOVA + slot * PAGE_SIZE, run * PAGE_SIZE)
                    .map_err(core_err)?;
                for k in slot..slot + run {
                    s.mapped[which][k as usize] = None;
                }
                s.write_all(p, which, slot..slot + run, round)?;
            }
            2 => {
                // Re-attach: domain `which` primary on X, aux on Y.
                if s.primary_of_x != Some(which) {
                    p.iommu().attach_device(doms[which], x).map_err(core_err)?;
                    s.primary_of_x = Some(which);
                }
                if p.iommu()
                    .aux_get_pasid(doms[which], y)
                    .map_err(core_err)?
                    .is_some()
                {
                    p.iommu()
                        .aux_detach_device(doms[which], y)
                        .map_err(core_err)?;
                } else {
                    p.iommu()
                        .aux_attach_device(doms[which], y)
                        .map_err(core_err)?;
                }
            }
            _ => {
                // One write through one path to the domain, if it has one.
                let paths = s.paths(p, which)?;
                if !paths.is_empty() {
                    let path = paths[(next() % paths.len() as u64) as usize];
                    s.write(p, path, which, slot, round)?;
                }
            }
        }
    }
    for (w, &d) in doms.iter().enumerate() {
        for slot in 0..SLOTS {
            if s.mapped[w][slot as usize].is_some() {
                p.iommu()
                    .unmap(d, IOVA + slot * PAGE_SIZE, PAGE_SIZE)
                    .map_err(core_err)?;
            }
        }
    }
    release(p, &doms)?;
    p.free_pages(pages, SLOTS);
    ensure_eq!(
        p.iommu().table_pages(),
        tables_before,
        "page-table pages after teardown"
    );
    ensure_eq!(
        p.iommu().pasids_in_use(),
        pasids_before,
        "PASIDs after teardown"
    );
    Ok(())
}

/// The software platform: the model IOMMU under the core, three model DMA
/// engines (two 20-bit devices, one 4-bit).
pub mod host {
    use super::*;
    use crate::dma::DmaEngine;
    use crate::iommu::model::{
        cpu_format_of, ModelDma, ModelIommu, ModelState, ModelTables, Shared,
    };

    pub struct ModelPlatform {
        pub state: Shared,
        iommu: Iommu<ModelIommu>,
        engines: Vec<ModelDma>,
        widths: Vec<(DeviceId, u8)>,
    }

    impl ModelPlatform {
        pub fn new(format: TableFormat) -> Self {
            Self::with(format, 20, &[20, 20, 4])
        }

        /// An IOMMU with `iommu_bits` of PASIDs and one device per entry
        /// of `widths` (its PASID capability's width), in that order.
        pub fn with(format: TableFormat, iommu_bits: u8, widths: &[u8]) -> Self {
            let state = ModelState::new(format, iommu_bits);
            // MSIs through translation, as with the GIC ITS (GITS_TRANSLATER
            // on QEMU virt), outside the model's RAM.
            state.borrow_mut().msi_doorbell = Some(0x0808_0040);
            // The whole PCIe range, whatever the IOMMU takes: the cases
            // must bound themselves.
            let mut iommu =
                Iommu::new(ModelIommu::new(state.clone()), 1, (1 << 20) - 1).expect("core");
            let mut engines = Vec::new();
            for (dev, &bits) in widths.iter().enumerate() {
                iommu
                    .add_device(DeviceId(dev as u32), bits)
                    .expect("device");
                engines.push(ModelDma::new(state.clone(), DeviceId(dev as u32), bits));
            }
            let widths = widths
                .iter()
                .enumerate()
                .map(|(dev, &bits)| (DeviceId(dev as u32), bits))
                .collect();
            ModelPlatform {
                state,
                iommu,
                engines,
                widths,
            }
        }
    }

    impl Platform for ModelPlatform {
        type Hw = ModelIommu;
        fn iommu(&mut self) -> &mut Iommu<ModelIommu> {
            &mut self.iommu
        }
        fn devices(&self) -> (DeviceId, DeviceId, Option<DeviceId>) {
            pick_devices(&self.widths).expect("the model has two devices or more")
        }
        fn dma(&mut self, dev: DeviceId, op: DmaOp, tag: DmaTag) -> Result<DmaResult, EngineError> {
            self.engines[dev.0 as usize].run(&op, tag, 0)
        }
        fn dma_with_interrupt(
            &mut self,
            dev: DeviceId,
            op: DmaOp,
            tag: DmaTag,
        ) -> Result<(DmaResult, bool), EngineError> {
            Ok(self.engines[dev.0 as usize].run_with_interrupt(&op, tag))
        }
        fn alloc_pages(&mut self, count: u64, align: u64) -> Result<u64, TestError> {
            Ok(self.state.borrow_mut().alloc_pages(count, align))
        }
        fn free_pages(&mut self, base: u64, count: u64) {
            self.state.borrow_mut().free_pages(base, count)
        }
        fn read_phys(&mut self, pa: u64, out: &mut [u8]) {
            self.state.borrow().read(pa, out);
        }
        fn write_phys(&mut self, pa: u64, data: &[u8]) {
            self.state.borrow_mut().write(pa, data);
        }
        fn take_faults(&mut self) -> Vec<Fault> {
            core::mem::take(&mut self.state.borrow_mut().faults)
        }
        fn cpu_format(&self) -> TableFormat {
            cpu_format_of(self.iommu.hw.format())
        }
        fn space_memory(&mut self) -> Box<dyn TableMemory> {
            Box::new(ModelTables(self.state.clone()))
        }
    }
}

/// A PASID both `x` and `y` can carry that the allocator has not handed
/// out: the top of their common width within the allocator's range, at
/// most 0xffff. (QEMU 10.2's VT-d keeps 16 bits of the PASID in a fault
/// record, whose PV field has 20; these cases check the PASID a fault
/// reports, not the width, which `pasid_at_the_top_of_the_range` covers.)
fn common_free_pasid<P: Platform>(p: &mut P, x: DeviceId, y: DeviceId) -> Result<Pasid, TestError> {
    let lx = p.iommu().pasid_limit(x).map_err(core_err)?;
    let ly = p.iommu().pasid_limit(y).map_err(core_err)?;
    match (lx, ly) {
        (Some(a), Some(b)) => Ok(Pasid(a.min(b).min(0xffff))),
        _ => Err(TestError::skip(
            "the two devices share no PASID of the allocator's range",
        )),
    }
}

/// Writes `value` at [`IOVA`] from `dev` under `pasid`, which is blocked:
/// expects the write to fault, and one fault record for it (an SMMU
/// reports a substream without a valid CD as C_BAD_CD, with no address:
/// IHI 0070, 7.3.10).
fn write_blocked<P: Platform>(
    p: &mut P,
    dev: DeviceId,
    pasid: Pasid,
    value: u64,
    what: &str,
) -> TestResult {
    let r = write_u64(p, dev, IOVA, value, tagged(pasid))?;
    ensure_eq!(
        r.status,
        DmaStatus::WriteFault { addr: IOVA },
        "{what} (PASID {pasid})"
    );
    let faults = p.take_faults();
    ensure!(
        faults.len() == 1
            && faults[0].dev == dev
            && faults[0].pasid == Some(pasid)
            && faults[0].write
            && (faults[0].iova == Iova(IOVA)
                || (faults[0].reason == FaultReason::NoPasid && faults[0].iova == Iova(0))),
        "expected one fault (device {dev}, PASID {pasid}, iova {IOVA:#x}, write), got {faults:?}"
    );
    Ok(())
}

/// Writes `value` at [`IOVA`] from `dev` under `pasid` and expects it to
/// succeed with the pages of domains A and B then holding `want`.
fn write_lands<P: Platform>(
    p: &mut P,
    dev: DeviceId,
    pasid: Pasid,
    value: u64,
    (pa, pb): (u64, u64),
    want: (u64, u64),
    what: &str,
) -> TestResult {
    let r = write_u64(p, dev, IOVA, value, tagged(pasid))?;
    ensure_eq!(r, ok(8), "{what}: write under PASID {pasid}");
    ensure_eq!(
        (read_u64(p, pa), read_u64(p, pb)),
        want,
        "{what}: A's and B's pages"
    );
    Ok(())
}

/// 20: one caller-chosen PASID on two devices, each with its own domain:
/// writes land on each domain's page. Detached on `y` only, `y`'s request
/// faults with the PASID while `x`'s still lands. Replaced on `x` while
/// quiet (one update, never blocked between), the next write lands in the
/// new domain. Detached and attached again, the PASID works as before.
pub fn chosen_pasids_replace_detach_reuse_inject_faults<P: Platform>(p: &mut P) -> TestResult {
    let (x, y, _) = p.devices();
    let pasid = common_free_pasid(p, x, y)?;
    let (a, b, pages) = two_domains(p)?;
    let (pa, pb) = (pages, pages + PAGE_SIZE);
    for dev in [x, y] {
        p.iommu()
            .dev_enable_feature(dev, Feature::Aux)
            .map_err(core_err)?;
    }
    let result = (|| {
        p.iommu()
            .attach_device_pasid(a, x, pasid)
            .map_err(core_err)?;
        p.iommu()
            .attach_device_pasid(b, y, pasid)
            .map_err(core_err)?;
        ensure_eq!(
            p.iommu().device_pasid_domain(y, pasid).map_err(core_err)?,
            Some(b),
            "the domain at PASID {pasid} of device {y}"
        );
        let pages = (pa, pb);
        write_lands(p, x, pasid, 0x1a, pages, (0x1a, 0), "device x in A")?;
        write_lands(p, y, pasid, 0x1b, pages, (0x1a, 0x1b), "device y in B")?;
        p.iommu().detach_device_pasid(y, pasid).map_err(core_err)?;
        ensure_eq!(
            p.iommu().device_pasid_domain(y, pasid).map_err(core_err)?,
            None,
            "PASID {pasid} of device {y} after the detach"
        );
        write_blocked(
            p,
            y,
            pasid,
            0x2b,
            "write from the device it is not attached on",
        )?;
        let what = "x still in A, y's refused write changed nothing";
        write_lands(p, x, pasid, 0x2a, pages, (0x2a, 0x1b), what)?;
        // Replacement: A's translations were used (and may be cached).
        p.iommu()
            .attach_device_pasid(b, x, pasid)
            .map_err(core_err)?;
        let what = "right after replacing A by B, the write lands in B only";
        write_lands(p, x, pasid, 0x3b, pages, (0x2a, 0x3b), what)?;
        p.iommu().detach_device_pasid(x, pasid).map_err(core_err)?;
        write_blocked(p, x, pasid, 0x4b, "write after the detach")?;
        p.iommu()
            .attach_device_pasid(a, x, pasid)
            .map_err(core_err)?;
        let what = "the PASID attached again lands in A";
        write_lands(p, x, pasid, 0x5a, pages, (0x5a, 0x3b), what)?;
        ensure!(p.take_faults().is_empty(), "unexpected faults");
        p.iommu().detach_device_pasid(x, pasid).map_err(core_err)?;
        ensure_eq!(p.iommu().pasids_in_use(), 0, "PASIDs left taken");
        Ok(())
    })();
    for dev in [x, y] {
        if p.iommu()
            .device_pasid_domain(dev, pasid)
            .ok()
            .flatten()
            .is_some()
        {
            let _ = p.iommu().detach_device_pasid(dev, pasid);
        }
    }
    let released = release(p, &[a, b]);
    p.free_pages(pages, 2);
    result.and(released)
}

/// Expects `r` to be the refusal `want` names.
fn refused<E: core::fmt::Debug>(
    what: &str,
    r: Result<(), IommuError<E>>,
    want: &str,
    ok: impl Fn(&IommuError<E>) -> bool,
) -> TestResult {
    match r {
        Err(e) if ok(&e) => Ok(()),
        other => Err(TestError::mismatch(what, want, format!("{other:?}"))),
    }
}

/// 21: attach at a chosen PASID refuses PASID 0, a PASID wider than the
/// IOMMU, a blocked or identity domain, a device without PASIDs enabled,
/// and a PASID the allocator handed to an aux domain; none of them
/// changes what the PASID translates.
pub fn chosen_pasid_refusals<P: Platform>(p: &mut P) -> TestResult {
    let (x, y, _) = p.devices();
    let pasid = common_free_pasid(p, x, y)?;
    let d = paging(p)?;
    let result = (|| {
        refused(
            "attach before PASIDs are enabled",
            p.iommu().attach_device_pasid(d, x, pasid),
            "AuxDisabled",
            |e| matches!(e, IommuError::AuxDisabled(dev) if *dev == x),
        )?;
        for dev in [x, y] {
            p.iommu()
                .dev_enable_feature(dev, Feature::Aux)
                .map_err(core_err)?;
        }
        refused(
            "attach at PASID 0",
            p.iommu().attach_device_pasid(d, x, Pasid(0)),
            "PasidZero",
            |e| matches!(e, IommuError::PasidZero { .. }),
        )?;
        let iommu_bits = p.iommu().hw.pasid_bits();
        let too_wide = Pasid(if iommu_bits >= 20 {
            crate::iommu::pasid::PASID_MAX + 1
        } else {
            1 << iommu_bits
        });
        refused(
            "attach at a PASID wider than the IOMMU",
            p.iommu().attach_device_pasid(d, x, too_wide),
            "PasidTooWide",
            |e| matches!(e, IommuError::PasidTooWide { pasid, .. } if *pasid == too_wide),
        )?;
        let blocked = p.iommu().default_domain();
        refused(
            "attach of the blocked domain",
            p.iommu().attach_device_pasid(blocked, x, pasid),
            "WrongDomainType",
            |e| matches!(e, IommuError::WrongDomainType { .. }),
        )?;
        let identity = p
            .iommu()
            .domain_alloc(DomainKind::Identity)
            .map_err(core_err)?;
        let r = p.iommu().attach_device_pasid(identity, x, pasid);
        p.iommu().domain_free(identity).map_err(core_err)?;
        refused("attach of an identity domain", r, "WrongDomainType", |e| {
            matches!(e, IommuError::WrongDomainType { .. })
        })?;
        let aux = paging(p)?;
        let owned = p.iommu().aux_attach_device(aux, y).map_err(core_err)?;
        let r = p.iommu().attach_device_pasid(d, x, owned);
        let detached = p.iommu().aux_detach_device(aux, y).map_err(core_err);
        let freed = p.iommu().domain_free(aux).map_err(core_err);
        refused(
            "attach at a PASID the allocator handed out",
            r,
            "PasidOwned",
            |e| matches!(e, IommuError::PasidOwned { pasid } if *pasid == owned),
        )?;
        detached?;
        freed?;
        ensure_eq!(
            p.iommu().device_pasid_domain(x, pasid).map_err(core_err)?,
            None,
            "PASID {pasid} after the refusals"
        );
        ensure_eq!(p.iommu().pasids_in_use(), 0, "PASIDs left taken");
        Ok(())
    })();
    let released = release(p, &[d]);
    result.and(released)
}

/// 22: a PASID the IOMMU takes but the narrow device's capability cannot
/// carry is refused for that device with `PasidTooWide`.
pub fn chosen_pasid_too_wide_for_the_device_is_refused<P: Platform>(p: &mut P) -> TestResult {
    let (_, _, narrow) = p.devices();
    let Some(n) = narrow else {
        return Err(TestError::skip(
            "this platform has no device with a PASID capability narrower than the others",
        ));
    };
    let bits = p.iommu().device_pasid_bits(n).map_err(core_err)?;
    let iommu_bits = p.iommu().hw.pasid_bits();
    if bits >= iommu_bits || bits >= 20 {
        return Err(TestError::skip(format!(
            "the IOMMU takes no PASID wider than the narrow device's {bits} bits"
        )));
    }
    let too_wide = Pasid(1 << bits);
    let d = paging(p)?;
    let result = (|| {
        p.iommu()
            .dev_enable_feature(n, Feature::Aux)
            .map_err(core_err)?;
        refused(
            "attach at a PASID wider than the device",
            p.iommu().attach_device_pasid(d, n, too_wide),
            "PasidTooWide",
            |e| {
                matches!(e, IommuError::PasidTooWide { pasid, device_bits, .. }
                    if *pasid == too_wide && *device_bits == bits)
            },
        )?;
        ensure_eq!(
            p.iommu()
                .device_pasid_domain(n, too_wide)
                .map_err(core_err)?,
            None,
            "nothing attached"
        );
        Ok(())
    })();
    let released = release(p, &[d]);
    result.and(released)
}

#[cfg(test)]
mod tests {
    use super::host::ModelPlatform;
    use super::*;
    use crate::iommu::domain::TableFormat;
    use crate::iommu::pgtable::arm::ArmLpae;
    use crate::iommu::pgtable::x86::{VtdSecondLevel, X86FirstLevel};

    fn run_all(format: TableFormat) {
        let mut p = ModelPlatform::new(format);
        let pages = p.state.borrow().pages_live();
        let sva = p.iommu().hw.sva_supported();
        // A second level keeps no dirty state.
        let dirty = p.iommu().hw.dirty_tracking_unavailable().is_none();
        for (name, case) in cases::<ModelPlatform>() {
            match case(&mut p) {
                Ok(()) => {}
                // A second level or stage 2 walks no CPU tables.
                Err(TestError::Skip(_)) if !sva && name.starts_with("iommu::sva_") => {}
                Err(TestError::Skip(_)) if !dirty && name.starts_with("iommu::dirty_") => {}
                Err(e) => panic!("{name} on {:?}: {e:?}", format),
            }
            let violations = core::mem::take(&mut p.state.borrow_mut().violations);
            assert!(
                violations.is_empty(),
                "{name} on {format:?}: the model saw {violations:?}"
            );
        }
        assert_eq!(
            p.state.borrow().pages_live(),
            pages,
            "pages leaked on {format:?}"
        );
        assert_eq!(
            p.state.borrow().tables_live,
            0,
            "tables leaked on {format:?}"
        );
    }

    /// Runs every case, each on a fresh platform from `make` (as on the
    /// boards); returns the names of the cases that skipped.
    fn run_cases(make: impl Fn() -> ModelPlatform, what: &str) -> Vec<&'static str> {
        let mut skipped = Vec::new();
        for (name, case) in cases::<ModelPlatform>() {
            let mut p = make();
            match case(&mut p) {
                Ok(()) => {}
                Err(TestError::Skip(_)) => skipped.push(name),
                Err(e) => panic!("{name} on {what}: {e:?}"),
            }
            let violations = core::mem::take(&mut p.state.borrow_mut().violations);
            assert!(violations.is_empty(), "{name} on {what}: {violations:?}");
        }
        skipped
    }

    /// The cases size themselves from the platform: an IOMMU with 8 or 4
    /// PASID bits, few tags, devices in any order, more than one wide
    /// device before the narrow one, none narrow. What the platform
    /// cannot express is a SKIP with the reason, never a failure.
    #[test]
    fn the_suite_adapts_to_pasid_widths_tags_and_device_order() {
        let format = TableFormat::Arm(ArmLpae::S1);
        let skips = |iommu_bits, widths: &[u8], tags| {
            let make = || {
                let p = ModelPlatform::with(format, iommu_bits, widths);
                p.state.borrow_mut().tags = tags;
                p
            };
            let what = format!("IOMMU {iommu_bits} bits, devices {widths:?}, tags {tags:?}");
            run_cases(make, &what)
        };
        assert_eq!(skips(8, &[20, 20, 4], None), [] as [&str; 0]);
        assert_eq!(skips(20, &[20, 20, 20, 4], None), [] as [&str; 0]);
        assert_eq!(skips(20, &[4, 20, 20, 20], None), [] as [&str; 0]);
        assert_eq!(skips(20, &[20, 20, 6], Some(40)), [] as [&str; 0]);
        assert_eq!(
            skips(20, &[20, 20, 20], None),
            [
                "iommu::narrow_device_refuses_wide_pasid",
                "iommu::chosen_pasid_too_wide_for_the_device_is_refused"
            ]
        );
        assert_eq!(
            skips(4, &[20, 20, 4], None),
            [
                "iommu::narrow_device_refuses_wide_pasid",
                "iommu::chosen_pasid_too_wide_for_the_device_is_refused"
            ]
        );
    }

    #[test]
    fn pick_devices_goes_by_width() {
        let d = |widths: &[u8]| {
            let w: Vec<_> = widths
                .iter()
                .enumerate()
                .map(|(i, &b)| (DeviceId(i as u32), b))
                .collect();
            pick_devices(&w).map(|(x, y, n)| (x.0, y.0, n.map(|n| n.0)))
        };
        assert_eq!(d(&[20, 20, 4]), Some((0, 1, Some(2))));
        assert_eq!(d(&[20, 4, 20, 20]), Some((0, 2, Some(1))));
        assert_eq!(d(&[20, 20, 20, 4]), Some((0, 1, Some(3))));
        assert_eq!(d(&[20, 20, 20]), Some((0, 1, None)));
        assert_eq!(
            d(&[20, 20, 0]),
            Some((0, 1, None)),
            "no PASIDs is not narrow"
        );
        assert_eq!(d(&[20, 8, 4]), Some((0, 1, Some(2))));
        assert_eq!(d(&[20]), None);
    }

    /// The case that uses 256 PASIDs runs after every other: on QEMU's
    /// VT-d each PASID leaves an address space that slows every later
    /// translation switch.
    #[test]
    fn many_aux_domains_runs_last() {
        let names: Vec<&str> = cases::<ModelPlatform>().iter().map(|c| c.0).collect();
        assert_eq!(names.last(), Some(&"iommu::many_aux_domains"), "{names:?}");
    }

    #[test]
    fn the_suite_passes_on_the_model_with_every_format() {
        run_all(TableFormat::Arm(ArmLpae::S1));
        run_all(TableFormat::Arm(ArmLpae::S2));
        run_all(TableFormat::X86FirstLevel(X86FirstLevel {
            gib_pages: true,
        }));
        run_all(TableFormat::VtdSecondLevel(VtdSecondLevel {
            levels: 3,
            mib2_pages: true,
            gib_pages: true,
        }));
    }

    /// Each driver bug the model can act out fails the cases written to
    /// catch it, with every table format: the case fails, or (a walk cache
    /// kept past the tables' release) the model saw the violation.
    #[test]
    fn the_suite_catches_each_broken_driver() {
        use crate::iommu::model::Broken;
        type CaseFn = fn(&mut ModelPlatform) -> TestResult;
        let range: CaseFn = unmap_of_a_range_invalidates_every_page_inject_faults;
        let soak: CaseFn = randomized_soak_inject_faults;
        let detach: CaseFn = aux_detach_faults_and_reattach_lands_inject_faults;
        let replace: CaseFn = primary_replace_switches_translation;
        let chosen: CaseFn = chosen_pasids_replace_detach_reuse_inject_faults;
        let bugs: [(Broken, &[(&str, CaseFn)]); 5] = [
            (Broken::FirstPageOnly, &[("range", range), ("soak", soak)]),
            (
                Broken::NoUnmapInvalidation,
                &[("range", range), ("soak", soak)],
            ),
            (Broken::LeafOnly, &[("range", range), ("soak", soak)]),
            (
                Broken::DetachKeepsPasidEntry,
                &[("detach", detach), ("chosen", chosen)],
            ),
            (Broken::StalePrimary, &[("replace", replace)]),
        ];
        let formats = [
            TableFormat::Arm(ArmLpae::S1),
            TableFormat::Arm(ArmLpae::S2),
            TableFormat::X86FirstLevel(X86FirstLevel { gib_pages: true }),
            TableFormat::VtdSecondLevel(VtdSecondLevel {
                levels: 3,
                mib2_pages: true,
                gib_pages: true,
            }),
        ];
        for format in formats {
            for (bug, cases) in bugs {
                for &(name, case) in cases {
                    let mut p = ModelPlatform::new(format);
                    p.state.borrow_mut().broken = Some(bug);
                    let result = case(&mut p);
                    // Stale walks show as violations only; the rest as
                    // failed cases, as on a board.
                    let caught = if bug == Broken::LeafOnly {
                        !p.state.borrow().violations.is_empty()
                    } else {
                        result.is_err()
                    };
                    assert!(caught, "{bug:?} on {format:?}: the {name} case passed");
                }
            }
        }
    }

    /// Freeing a table page before the invalidation that covers it is a
    /// violation, and a walk through it (the walk cache still holding it)
    /// another; in the right order there is neither.
    #[test]
    fn a_table_freed_before_its_invalidation_is_caught() {
        use crate::addr::PhysAddr;
        use crate::iommu::domain::DomainRef;
        use crate::iommu::model::{ModelIommu, ModelState, Violation};
        use crate::iommu::pgtable::{Gather, PageTable};
        let format = TableFormat::Arm(ArmLpae::S1);
        for invalidate_first in [true, false] {
            let state = ModelState::new(format, 20);
            let mut hw = ModelIommu::new(state.clone());
            let mut table = PageTable::new(format, hw.tables()).unwrap();
            let page = state.borrow_mut().alloc_pages(1, PAGE_SIZE);
            table
                .map(hw.tables(), IOVA, page, PAGE_SIZE, Prot::RW)
                .unwrap();
            let d = DomainRef {
                id: DomainId(1),
                kind: DomainKind::Unmanaged,
                root: Some(PhysAddr(table.root())),
                format,
                tag: hw.alloc_tag().unwrap(),
            };
            let dev = DeviceId(0);
            hw.set_primary(dev, &d).unwrap();
            let translate = |iova| state.borrow_mut().translate(dev, None, iova, true);
            assert_eq!(translate(IOVA), Ok(page));
            let mut g = Gather::default();
            table.unmap(hw.tables(), IOVA, PAGE_SIZE, &mut g).unwrap();
            let freed = g.freed_tables.clone();
            assert!(!freed.is_empty(), "the unmap emptied tables");
            if invalidate_first {
                hw.invalidate(&d, &[(dev, None)], &g).unwrap();
                g.release(hw.tables());
            } else {
                g.clone().release(hw.tables());
                // A neighbour of the unmapped page: the walk cache leads
                // into the freed table.
                assert!(translate(IOVA + PAGE_SIZE).is_err());
                hw.invalidate(&d, &[(dev, None)], &g).unwrap();
            }
            assert!(translate(IOVA).is_err());
            let violations = core::mem::take(&mut state.borrow_mut().violations);
            if invalidate_first {
                assert_eq!(violations, [], "in order");
            } else {
                assert!(
                    violations.contains(&Violation::FreedWhileCached {
                        table: PhysAddr(freed[0])
                    }) && violations
                        .iter()
                        .any(|v| matches!(v, Violation::WalkThroughFreed { .. })),
                    "{violations:?}"
                );
            }
        }
    }

    /// Direct regions (RMRRs): mapped one to one in every paging domain
    /// that becomes the device's primary, so its DMA there lands; kept out
    /// of DMA IOVA space; not for PASID requests; and an attach whose
    /// region collides with a mapping fails with nothing left behind.
    #[test]
    fn direct_regions_follow_the_primary_domain() {
        let mut p = ModelPlatform::new(TableFormat::X86FirstLevel(X86FirstLevel {
            gib_pages: true,
        }));
        let (x, _, _) = p.devices();
        let rmrr = p.alloc_pages(2, PAGE_SIZE).unwrap();
        p.state
            .borrow_mut()
            .direct
            .insert(x, alloc::vec![(rmrr, 2 * PAGE_SIZE)]);
        let d = p.iommu().domain_alloc(DomainKind::Unmanaged).unwrap();
        p.iommu().attach_device(d, x).unwrap();
        assert_eq!(
            write_u64(&mut p, x, rmrr + PAGE_SIZE, 0x77, DmaTag::Untagged).unwrap(),
            ok(8)
        );
        assert_eq!(read_u64(&mut p, rmrr + PAGE_SIZE), 0x77);
        // PASID requests do not see it.
        p.iommu().dev_enable_feature(x, Feature::Aux).unwrap();
        let aux = paging(&mut p).unwrap();
        let pasid = p.iommu().aux_attach_device(aux, x).unwrap();
        let r = write_u64(&mut p, x, rmrr, 1, tagged(pasid)).unwrap();
        assert_eq!(r.status, DmaStatus::WriteFault { addr: rmrr });
        p.take_faults();
        p.iommu().aux_detach_device(aux, x).unwrap();
        p.iommu().dev_disable_feature(x, Feature::Aux).unwrap();
        // A DMA domain never hands out the region's IOVAs.
        let dma = p.iommu().domain_alloc(DomainKind::Dma).unwrap();
        p.iommu().attach_device(dma, x).unwrap();
        for _ in 0..64 {
            let iova = p.iommu().dma_map(dma, rmrr, PAGE_SIZE, Prot::RW).unwrap();
            assert!(!(rmrr..rmrr + 2 * PAGE_SIZE).contains(&iova), "{iova:#x}");
        }
        // A colliding mapping: the attach fails and changes nothing.
        let clash = paging(&mut p).unwrap();
        p.iommu()
            .map(clash, rmrr, rmrr, PAGE_SIZE, Prot::RW)
            .unwrap();
        assert!(p.iommu().attach_device(clash, x).is_err());
        assert_eq!(p.iommu().primary_domain(x).unwrap(), dma);
        assert_eq!(
            p.iommu().iova_to_phys(clash, rmrr + PAGE_SIZE).unwrap(),
            None
        );
    }

    /// The model catches a core that forgets to invalidate: with the
    /// invalidation dropped, test 5 sees the stale translation.
    #[test]
    fn a_missed_invalidation_is_caught() {
        use crate::iommu::domain::{Attachment, DomainRef};
        use crate::iommu::model::ModelError as HwError;
        use crate::iommu::model::ModelIommu;
        use crate::iommu::pgtable::Gather;
        struct Forgetful(ModelIommu);
        impl IommuHw for Forgetful {
            type Error = HwError;
            fn format(&self) -> TableFormat {
                self.0.format()
            }
            fn pasid_bits(&self) -> u8 {
                self.0.pasid_bits()
            }
            fn tables(&mut self) -> &mut dyn crate::iommu::pgtable::TableMemory {
                self.0.tables()
            }
            fn alloc_tag(&mut self) -> Result<u32, HwError> {
                self.0.alloc_tag()
            }
            fn free_tag(&mut self, tag: u32) {
                self.0.free_tag(tag)
            }
            fn set_primary(&mut self, dev: DeviceId, d: &DomainRef) -> Result<(), HwError> {
                self.0.set_primary(dev, d)
            }
            fn enable_aux(&mut self, dev: DeviceId) -> Result<(), HwError> {
                self.0.enable_aux(dev)
            }
            fn disable_aux(&mut self, dev: DeviceId) -> Result<(), HwError> {
                self.0.disable_aux(dev)
            }
            fn set_pasid(
                &mut self,
                dev: DeviceId,
                pasid: Pasid,
                d: &DomainRef,
            ) -> Result<(), HwError> {
                self.0.set_pasid(dev, pasid, d)
            }
            fn clear_pasid(
                &mut self,
                dev: DeviceId,
                pasid: Pasid,
                d: &DomainRef,
            ) -> Result<(), HwError> {
                self.0.clear_pasid(dev, pasid, d)
            }
            fn invalidate(
                &mut self,
                _d: &DomainRef,
                _a: &[Attachment],
                _g: &Gather,
            ) -> Result<(), HwError> {
                Ok(())
            }
        }
        let state = crate::iommu::model::ModelState::new(TableFormat::Arm(ArmLpae::S1), 20);
        let mut iommu = Iommu::new(Forgetful(ModelIommu::new(state.clone())), 1, 1000).unwrap();
        iommu.add_device(DeviceId(0), 20).unwrap();
        let d = iommu.domain_alloc(DomainKind::Unmanaged).unwrap();
        iommu.attach_device(d, DeviceId(0)).unwrap();
        let page = state.borrow_mut().alloc_pages(1, PAGE_SIZE);
        iommu.map(d, IOVA, page, PAGE_SIZE, Prot::RW).unwrap();
        let mut dma = crate::iommu::model::ModelDma::new(state.clone(), DeviceId(0), 20);
        use crate::dma::DmaEngine;
        let w = DmaOp::WriteImm {
            dst: IOVA,
            value: 1,
            size: 8,
        };
        assert_eq!(
            dma.run(&w, DmaTag::Untagged, 0).unwrap().status,
            DmaStatus::Success
        );
        iommu.unmap(d, IOVA, PAGE_SIZE).unwrap();
        // Stale: the write still lands.
        assert_eq!(
            dma.run(&w, DmaTag::Untagged, 0).unwrap().status,
            DmaStatus::Success
        );
    }

    /// A platform with AUX on devices 0 and 1, a paging domain mapping
    /// [`IOVA`] to a page of its own for each of `n` domains.
    fn pasid_platform(n: usize) -> (ModelPlatform, Vec<(DomainId, u64)>) {
        let mut p = ModelPlatform::new(TableFormat::Arm(ArmLpae::S1));
        for dev in [DeviceId(0), DeviceId(1)] {
            p.iommu().dev_enable_feature(dev, Feature::Aux).unwrap();
        }
        let mut v = Vec::new();
        for _ in 0..n {
            let d = p.iommu().domain_alloc(DomainKind::Unmanaged).unwrap();
            let page = p.alloc_pages(1, PAGE_SIZE).unwrap();
            p.iommu().map(d, IOVA, page, PAGE_SIZE, Prot::RW).unwrap();
            v.push((d, page));
        }
        (p, v)
    }

    #[test]
    fn replacing_the_domain_at_a_pasid_never_blocks_it() {
        let (mut p, d) = pasid_platform(2);
        let (x, pasid) = (DeviceId(0), Pasid(0x40));
        p.iommu().attach_device_pasid(d[0].0, x, pasid).unwrap();
        write_u64(&mut p, x, IOVA, 1, tagged(pasid)).unwrap();
        let clears = p.state.borrow().pasid_clears;
        p.iommu().attach_device_pasid(d[1].0, x, pasid).unwrap();
        assert_eq!(
            p.state.borrow().pasid_clears,
            clears,
            "the replacement went through a blocked PASID"
        );
        assert_eq!(
            p.iommu().device_pasid_domain(x, pasid).unwrap(),
            Some(d[1].0)
        );
        assert_eq!(write_u64(&mut p, x, IOVA, 2, tagged(pasid)).unwrap(), ok(8));
        assert_eq!((read_u64(&mut p, d[0].1), read_u64(&mut p, d[1].1)), (1, 2));
        // The old domain is attached nowhere now: it can be freed.
        assert!(p.iommu().attachments(d[0].0).is_empty());
        p.iommu().detach_device_pasid(x, pasid).unwrap();
        assert_eq!(p.iommu().pasids_in_use(), 0);
    }

    #[test]
    fn detached_pasid_is_blocked_and_faults_with_the_pasid() {
        let (mut p, d) = pasid_platform(1);
        let (x, pasid) = (DeviceId(0), Pasid(7));
        assert_eq!(p.iommu().device_pasid_domain(x, pasid).unwrap(), None);
        p.iommu().attach_device_pasid(d[0].0, x, pasid).unwrap();
        p.iommu().detach_device_pasid(x, pasid).unwrap();
        let r = write_u64(&mut p, x, IOVA, 3, tagged(pasid)).unwrap();
        assert_eq!(r.status, DmaStatus::WriteFault { addr: IOVA });
        let f = p.take_faults();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].pasid, Some(pasid));
        assert_eq!(read_u64(&mut p, d[0].1), 0);
        assert_eq!(
            p.iommu().detach_device_pasid(x, pasid),
            Err(IommuError::PasidNotAttached { dev: x, pasid })
        );
    }

    #[test]
    fn chosen_pasids_and_the_allocator_keep_apart() {
        let (mut p, d) = pasid_platform(3);
        let (x, y) = (DeviceId(0), DeviceId(1));
        // PASID 1 is the allocator's first: chosen, it is not handed out.
        p.iommu().attach_device_pasid(d[0].0, x, Pasid(1)).unwrap();
        p.iommu().attach_device_pasid(d[1].0, y, Pasid(1)).unwrap();
        let aux = p.iommu().aux_attach_device(d[2].0, x).unwrap();
        assert_eq!(aux, Pasid(2));
        // The aux domain's PASID may not be chosen by anyone else.
        assert_eq!(
            p.iommu().attach_device_pasid(d[0].0, y, aux),
            Err(IommuError::PasidOwned { pasid: aux })
        );
        assert!(matches!(
            p.iommu().set_pasid_range(1, 100),
            Err(IommuError::Pasid(_))
        ));
        p.iommu().aux_detach_device(d[2].0, x).unwrap();
        // Still chosen on y after x lets go: still not handed out.
        p.iommu().detach_device_pasid(x, Pasid(1)).unwrap();
        assert_eq!(p.iommu().pasids_in_use(), 1);
        assert_eq!(p.iommu().aux_attach_device(d[2].0, x).unwrap(), Pasid(2));
        p.iommu().aux_detach_device(d[2].0, x).unwrap();
        p.iommu().detach_device_pasid(y, Pasid(1)).unwrap();
        assert_eq!(p.iommu().pasids_in_use(), 0);
        assert_eq!(p.iommu().aux_attach_device(d[2].0, x).unwrap(), Pasid(1));
        // A chosen PASID outside the range keeps the range from moving
        // over it.
        p.iommu().aux_detach_device(d[2].0, x).unwrap();
        p.iommu().set_pasid_range(1, 100).unwrap();
        p.iommu()
            .attach_device_pasid(d[2].0, x, Pasid(200))
            .unwrap();
        assert_eq!(p.iommu().pasids_in_use(), 0);
        assert_eq!(
            p.iommu().set_pasid_range(1, 300),
            Err(IommuError::PasidOwned { pasid: Pasid(200) })
        );
        // Busy covers PASIDs attached by choice as well.
        p.iommu().attach_device_pasid(d[0].0, y, Pasid(9)).unwrap();
        assert!(matches!(
            p.iommu().detach_device(y),
            Err(IommuError::Busy { .. })
        ));
        assert!(matches!(
            p.iommu().dev_disable_feature(y, Feature::Aux),
            Err(IommuError::Busy { .. })
        ));
    }

    #[test]
    fn chosen_pasid_refusals_are_typed() {
        let (mut p, d) = pasid_platform(1);
        let (x, narrow) = (DeviceId(0), DeviceId(2));
        assert_eq!(
            p.iommu().attach_device_pasid(d[0].0, x, Pasid(0)),
            Err(IommuError::PasidZero { dev: x })
        );
        assert!(matches!(
            p.iommu().attach_device_pasid(d[0].0, x, Pasid(1 << 20)),
            Err(IommuError::PasidTooWide { .. })
        ));
        assert_eq!(
            p.iommu().attach_device_pasid(d[0].0, narrow, Pasid(16)),
            Err(IommuError::AuxDisabled(narrow))
        );
        p.iommu().dev_enable_feature(narrow, Feature::Aux).unwrap();
        assert_eq!(
            p.iommu().attach_device_pasid(d[0].0, narrow, Pasid(16)),
            Err(IommuError::PasidTooWide {
                pasid: Pasid(16),
                device_bits: 4,
                iommu_bits: 20
            })
        );
        let blocked = p.iommu().default_domain();
        assert!(matches!(
            p.iommu().attach_device_pasid(blocked, x, Pasid(3)),
            Err(IommuError::WrongDomainType { .. })
        ));
        assert_eq!(p.iommu().pasids_in_use(), 0);
        assert_eq!(p.iommu().device_pasid_domain(x, Pasid(3)).unwrap(), None);
    }

    #[test]
    fn narrow_iommu_refuses_a_chosen_pasid_it_cannot_carry() {
        let mut p = ModelPlatform::with(TableFormat::Arm(ArmLpae::S1), 8, &[20, 20]);
        let x = DeviceId(0);
        p.iommu().dev_enable_feature(x, Feature::Aux).unwrap();
        let d = p.iommu().domain_alloc(DomainKind::Unmanaged).unwrap();
        assert_eq!(
            p.iommu().attach_device_pasid(d, x, Pasid(256)),
            Err(IommuError::PasidTooWide {
                pasid: Pasid(256),
                device_bits: 20,
                iommu_bits: 8
            })
        );
        p.iommu().attach_device_pasid(d, x, Pasid(255)).unwrap();
    }
}
