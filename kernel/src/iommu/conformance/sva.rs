//! Shared virtual addressing cases: a CPU address space (the platform's
//! CPU format, [`Platform::cpu_format`]) bound to device PASIDs. They SKIP
//! where the unit cannot walk a CPU's tables (a VT-d unit without
//! first-level translation, an SMMU at stage 2) or the devices have no
//! PASIDs.
use super::{core_err, expect_fault, ok, read_u64, tagged, write_blocked, write_u64, Platform};
use crate::dma::{DmaOp, DmaStatus};
use crate::harness::{TestError, TestResult};
use crate::iommu::domain::{DeviceId, DomainKind, Feature, IommuError, IommuHw, TableFormat};
use crate::iommu::pgtable::arm::ArmLpae;
use crate::iommu::pgtable::x86::VtdSecondLevel;
use crate::iommu::pgtable::{Prot, PAGE_SIZE};
use crate::mm::space::{AddressSpace, SpaceId, Unobserved};
use crate::{ensure, ensure_eq};
use alloc::format;
use alloc::vec;

/// Where the cases map their pages: a process's kind of address, above
/// 4 GiB (no IOVA of the other cases lives there) in the lower half of a
/// 48-bit space.
pub const SVA_VA: u64 = 0x0000_7f12_3400_0000;

/// Enables SVA on `devs`, or says why the platform cannot.
fn sva_ready<P: Platform>(p: &mut P, devs: &[DeviceId]) -> TestResult {
    for &dev in devs {
        if !p
            .iommu()
            .dev_has_feature(dev, Feature::Sva)
            .map_err(core_err)?
        {
            return Err(TestError::skip(no_sva_reason(p, dev)?));
        }
        p.iommu()
            .dev_enable_feature(dev, Feature::Sva)
            .map_err(core_err)?;
    }
    Ok(())
}

/// Why `dev` cannot have SVA here.
fn no_sva_reason<P: Platform>(
    p: &mut P,
    dev: DeviceId,
) -> Result<alloc::string::String, TestError> {
    let iommu = p.iommu();
    Ok(if iommu.device_pasid_bits(dev).map_err(core_err)? == 0 {
        format!("no SVA: device {dev} has no PASID capability")
    } else if iommu.hw.pasid_bits() == 0 {
        "no SVA: the IOMMU takes no PASIDs here".into()
    } else {
        "no SVA: the IOMMU cannot walk a CPU's page tables here (VT-d without first-level \
         translation, ECAP.FLTS; an SMMU translating at stage 2 only)"
            .into()
    })
}

/// Unbinds what is bound, disables SVA and AUX on `devs`.
fn sva_done<P: Platform>(p: &mut P, space: &AddressSpace, devs: &[DeviceId]) -> TestResult {
    for &dev in devs {
        match p.iommu().sva_unbind(dev, space.id()) {
            Ok(()) | Err(IommuError::NotBound { .. }) => {}
            Err(e) => return Err(core_err(e)),
        }
        p.iommu()
            .dev_disable_feature(dev, Feature::Sva)
            .map_err(core_err)?;
        p.iommu()
            .dev_disable_feature(dev, Feature::Aux)
            .map_err(core_err)?;
    }
    p.take_faults();
    Ok(())
}

fn space<P: Platform>(p: &mut P, id: u32) -> Result<AddressSpace, TestError> {
    let format = p.cpu_format();
    new_space(p, id, format)
}

fn new_space<P: Platform>(
    p: &mut P,
    id: u32,
    format: TableFormat,
) -> Result<AddressSpace, TestError> {
    AddressSpace::new(SpaceId(id), format, p.space_memory())
        .map_err(|e| TestError::fail(format!("a CPU address space: {e}")))
}

/// A format no unit walks for a process: the other translation stage.
fn foreign_format(cpu: TableFormat) -> TableFormat {
    match cpu {
        TableFormat::Arm(_) => TableFormat::Arm(ArmLpae::S2),
        _ => TableFormat::VtdSecondLevel(VtdSecondLevel {
            levels: 4,
            mib2_pages: false,
            gib_pages: false,
        }),
    }
}

fn map(space: &mut AddressSpace, va: u64, pa: u64, prot: Prot) -> TestResult {
    space
        .map(va, pa, PAGE_SIZE, prot)
        .map_err(|e| TestError::fail(format!("map {va:#x} in the CPU address space: {e}")))
}

/// The device copies between two CPU virtual addresses of a bound space
/// and the bytes arrive at the page the CPU mapped there; a second device
/// bound to the same space gets the same PASID and writes through it; an
/// address the space does not map faults with the PASID and that
/// address; after an unbind the PASID is blocked on that device only.
pub fn sva_copy_between_cpu_addresses_inject_faults<P: Platform>(p: &mut P) -> TestResult {
    let (x, y, _) = p.devices();
    sva_ready(p, &[x, y])?;
    let mut s = space(p, 1)?;
    let pages = p.alloc_pages(2, PAGE_SIZE)?;
    let (src, dst) = (pages, pages + PAGE_SIZE);
    let (va_src, va_dst) = (SVA_VA, SVA_VA + PAGE_SIZE);
    map(&mut s, va_src, src, Prot::RW)?;
    map(&mut s, va_dst, dst, Prot::RW)?;
    let pattern: alloc::vec::Vec<u8> = (0..PAGE_SIZE).map(|i| (i * 7 + 3) as u8).collect();
    p.write_phys(src, &pattern);
    let pasid = p.iommu().sva_bind(x, &s).map_err(core_err)?;
    let again = p.iommu().sva_bind(y, &s).map_err(core_err)?;
    ensure_eq!(again, pasid, "the space's PASID on the second device");
    ensure_eq!(
        p.iommu().sva_bind(x, &s),
        Err(IommuError::AlreadyAttached {
            domain: p
                .iommu()
                .sva_domain(s.id())
                .ok_or_else(|| TestError::fail("no SVA domain"))?,
            dev: x,
        }),
        "a second bind of the same space"
    );
    let copy = DmaOp::Copy {
        src: va_src,
        dst: va_dst,
        len: PAGE_SIZE,
    };
    ensure_eq!(
        p.dma(x, copy, tagged(pasid))
            .map_err(|e| TestError::fail(format!("{e}")))?,
        ok(PAGE_SIZE),
        "copy {va_src:#x} -> {va_dst:#x} under PASID {pasid}"
    );
    let mut got = vec![0u8; PAGE_SIZE as usize];
    p.read_phys(dst, &mut got);
    ensure!(
        got == pattern,
        "the copy did not arrive at the page mapped at {va_dst:#x}"
    );
    ensure_eq!(
        write_u64(p, y, va_dst + 8, 0x5ca1_ab1e, tagged(pasid))?,
        ok(8),
        "the second device writes through the space"
    );
    ensure_eq!(
        read_u64(p, dst + 8),
        0x5ca1_ab1e,
        "the second device's write"
    );
    ensure!(
        p.take_faults().is_empty(),
        "faults while everything was mapped"
    );
    // An address the space does not have.
    let hole = SVA_VA + 16 * PAGE_SIZE;
    let r = p
        .dma(
            x,
            DmaOp::Copy {
                src: hole,
                dst: va_dst,
                len: 8,
            },
            tagged(pasid),
        )
        .map_err(|e| TestError::fail(format!("{e}")))?;
    ensure_eq!(
        r.status,
        DmaStatus::ReadFault { addr: hole },
        "read of an address the space does not map"
    );
    expect_fault(p, x, Some(pasid), hole, false)?;
    // Unbound on x, still bound on y.
    p.iommu().sva_unbind(x, s.id()).map_err(core_err)?;
    write_blocked(p, x, pasid, 0xdead, "write after the unbind")?;
    ensure_eq!(
        write_u64(p, y, va_dst + 16, 0x77, tagged(pasid))?,
        ok(8),
        "the device still bound"
    );
    ensure_eq!(
        read_u64(p, dst + 16),
        0x77,
        "the still-bound device's write"
    );
    p.iommu().sva_unbind(y, s.id()).map_err(core_err)?;
    ensure_eq!(
        p.iommu().sva_pasid(s.id()),
        None,
        "the PASID after the last unbind"
    );
    ensure_eq!(
        p.iommu().pasids_in_use(),
        0,
        "PASIDs in use after the last unbind"
    );
    sva_done(p, &s, &[x, y])?;
    drop(s);
    p.free_pages(pages, 2);
    Ok(())
}

/// The CPU points a bound page at another physical page. With the hook
/// left out ([`Unobserved`]) the device, whose IOTLB holds the old
/// translation, still reads the old page (this is what shows that the
/// case can fail); once the hook ran for the range it reads the new page.
/// A remap with the hook in place is seen at once.
pub fn sva_cpu_remap_reaches_the_device_through_the_hook<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    sva_ready(p, &[x])?;
    let mut s = space(p, 2)?;
    let pages = p.alloc_pages(3, PAGE_SIZE)?;
    let (old, new, out) = (pages, pages + PAGE_SIZE, pages + 2 * PAGE_SIZE);
    p.write_phys(old, &0x01d0_01d0_u64.to_le_bytes());
    p.write_phys(new, &0x0e30_0e30_u64.to_le_bytes());
    let (va, va_out) = (SVA_VA, SVA_VA + PAGE_SIZE);
    map(&mut s, va, old, Prot::RW)?;
    map(&mut s, va_out, out, Prot::RW)?;
    let pasid = p.iommu().sva_bind(x, &s).map_err(core_err)?;
    let read = |p: &mut P, what: &str| -> Result<u64, TestError> {
        let r = p
            .dma(
                x,
                DmaOp::Copy {
                    src: va,
                    dst: va_out,
                    len: 8,
                },
                tagged(pasid),
            )
            .map_err(|e| TestError::fail(format!("{what}: {e}")))?;
        ensure_eq!(r, ok(8), "{what}: copy under PASID {pasid}");
        Ok(read_u64(p, out))
    };
    ensure_eq!(read(p, "before the remap")?, 0x01d0_01d0, "the old page");
    s.remap(va, new, Prot::RW, &mut Unobserved)
        .map_err(|e| TestError::fail(format!("remap: {e}")))?;
    ensure_eq!(
        read(p, "remapped, hook left out")?,
        0x01d0_01d0,
        "with the hook left out the device must still see the old page (its IOTLB \
         holds it); seeing the new one means this IOMMU cached nothing, and the case \
         cannot tell a missing invalidation"
    );
    s.invalidate_range(va, PAGE_SIZE, p.iommu())
        .map_err(|e| TestError::fail(format!("the hook: {e}")))?;
    ensure_eq!(read(p, "after the hook ran")?, 0x0e30_0e30, "the new page");
    s.remap(va, old, Prot::RW, p.iommu())
        .map_err(|e| TestError::fail(format!("remap with the hook: {e}")))?;
    ensure_eq!(
        read(p, "remapped back with the hook")?,
        0x01d0_01d0,
        "the old page again"
    );
    ensure!(p.take_faults().is_empty(), "unexpected faults");
    sva_done(p, &s, &[x])?;
    drop(s);
    p.free_pages(pages, 3);
    Ok(())
}

/// What SVA refuses, each with its typed error: a bind without SVA
/// enabled, a space whose format the unit cannot walk, the SVA domain
/// used as a primary or caller-chosen-PASID domain or detached behind the
/// binding's back, an unbind of what is not bound, disabling SVA while a
/// space is bound.
pub fn sva_refusals<P: Platform>(p: &mut P) -> TestResult {
    let (x, y, _) = p.devices();
    if !p
        .iommu()
        .dev_has_feature(x, Feature::Sva)
        .map_err(core_err)?
    {
        let s = space(p, 3)?;
        ensure_eq!(
            p.iommu().dev_enable_feature(x, Feature::Sva),
            Err(IommuError::Unsupported(Feature::Sva)),
            "SVA where the unit cannot"
        );
        ensure!(
            matches!(
                p.iommu().sva_bind(x, &s),
                Err(IommuError::FeatureDisabled { .. })
            ),
            "a bind where SVA is unsupported"
        );
        drop(s);
        let why = no_sva_reason(p, x)?;
        return Err(TestError::skip(format!(
            "{why}: only the refusals were checked"
        )));
    }
    let s = space(p, 3)?;
    ensure_eq!(
        p.iommu().sva_bind(x, &s),
        Err(IommuError::FeatureDisabled {
            dev: x,
            feature: Feature::Sva
        }),
        "a bind before SVA is enabled"
    );
    ensure!(
        matches!(
            p.iommu().domain_alloc(DomainKind::Sva),
            Err(IommuError::SvaDomain { .. })
        ),
        "an SVA domain allocated by hand"
    );
    sva_ready(p, &[x])?;
    // A stage-2 / second-level format: no unit walks that for a process.
    let cpu = p.cpu_format();
    let foreign = new_space(p, 4, foreign_format(cpu))?;
    ensure!(
        matches!(
            p.iommu().sva_bind(x, &foreign),
            Err(IommuError::SpaceFormat { .. })
        ),
        "a space in a format the unit does not walk for SVA"
    );
    drop(foreign);
    let pasid = p.iommu().sva_bind(x, &s).map_err(core_err)?;
    let d = p
        .iommu()
        .sva_domain(s.id())
        .ok_or_else(|| TestError::fail("no SVA domain while bound"))?;
    ensure_eq!(
        p.iommu().attach_device(d, y),
        Err(IommuError::SvaDomain { domain: d }),
        "the SVA domain as a primary domain"
    );
    p.iommu()
        .dev_enable_feature(y, Feature::Aux)
        .map_err(core_err)?;
    ensure_eq!(
        p.iommu().attach_device_pasid(d, y, pasid),
        Err(IommuError::SvaDomain { domain: d }),
        "the SVA domain at a chosen PASID"
    );
    ensure_eq!(
        p.iommu().detach_device_pasid(x, pasid),
        Err(IommuError::SvaDomain { domain: d }),
        "the binding's PASID detached by hand"
    );
    ensure_eq!(
        p.iommu().sva_unbind(y, s.id()),
        Err(IommuError::NotBound {
            dev: y,
            space: s.id()
        }),
        "an unbind from a device the space is not bound to"
    );
    ensure_eq!(
        p.iommu().dev_disable_feature(x, Feature::Sva),
        Err(IommuError::FeatureInUse {
            dev: x,
            feature: Feature::Sva
        }),
        "SVA disabled while bound"
    );
    ensure!(
        matches!(
            p.iommu().domain_free(d),
            Err(IommuError::DomainInUse { .. })
        ),
        "the SVA domain freed while bound"
    );
    p.iommu().sva_unbind(x, s.id()).map_err(core_err)?;
    ensure_eq!(
        p.iommu().sva_domain(s.id()),
        None,
        "the SVA domain after the last unbind"
    );
    p.iommu()
        .dev_disable_feature(y, Feature::Aux)
        .map_err(core_err)?;
    sva_done(p, &s, &[x])?;
    Ok(())
}

/// ATS, PRI and I/O page faults: each is enabled where the unit and the
/// device have it (in that order, each needing the one before) and
/// refused with the reason where either lacks it; off again in reverse.
pub fn device_features_where_offered<P: Platform>(p: &mut P) -> TestResult {
    let (x, _, _) = p.devices();
    let mut on = alloc::vec::Vec::new();
    for feat in [Feature::Ats, Feature::Pri, Feature::Iopf] {
        let why = p
            .iommu()
            .dev_feature_unavailable(x, feat)
            .map_err(core_err)?;
        let got = p.iommu().dev_enable_feature(x, feat);
        match why {
            Some(why) => {
                ensure_eq!(
                    got,
                    Err(IommuError::FeatureUnavailable {
                        dev: x,
                        feature: feat,
                        why
                    }),
                    "{feat:?} where it is not offered"
                );
                log::info!("device {x}: {feat:?} refused: {why}");
            }
            None => {
                got.map_err(core_err)?;
                ensure!(
                    p.iommu().dev_feature_enabled(x, feat).map_err(core_err)?,
                    "{feat:?} reads enabled"
                );
                on.push(feat);
            }
        }
    }
    for &feat in on.iter().rev() {
        p.iommu().dev_disable_feature(x, feat).map_err(core_err)?;
    }
    p.take_faults();
    Ok(())
}
