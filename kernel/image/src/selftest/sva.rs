//! Shared virtual addressing with the CPU on the same tables: the
//! conformance cases (`kernel::iommu::conformance::sva_*`) show the device
//! side; here the CPU itself loads the address space's tables (TTBR0 or
//! CR3, with the kernel's half linked in as a process's tables carry it)
//! and reads and writes through the same virtual addresses as the device.

use super::conformance::board::{fail, run};
use alloc::format;
use kernel::dma::{DmaOp, DmaStatus};
use kernel::harness::{TestError, TestResult};
use kernel::iommu::conformance::{core_err as core, read_u64, tagged, Platform, SVA_VA};
use kernel::iommu::domain::Feature;
use kernel::iommu::pgtable::{Prot, PAGE_SIZE};
use kernel::mm::space::{AddressSpace, SpaceId};
use kernel::{ensure, ensure_eq};

/// The CPU writes a value through a virtual address of a process-like
/// address space, on that space's own tables; the value is at the
/// physical page mapped there; a device bound to the space copies it to
/// another virtual address; the CPU, on the space's tables again, reads
/// the copy there.
pub fn sva_cpu_and_device_share_an_address_space() -> TestResult {
    run(|p| {
        let (x, _, _) = p.devices();
        if let Some(why) = p
            .iommu()
            .dev_feature_unavailable(x, Feature::Sva)
            .map_err(core)?
        {
            return Err(TestError::skip(format!("no SVA for device {x}: {why}")));
        }
        let pages = p.alloc_pages(2, PAGE_SIZE)?;
        let format = p.cpu_format();
        let memory = p.space_memory();
        let mut space = AddressSpace::new(SpaceId(9), format, memory).map_err(fail)?;
        let (va, va_out) = (SVA_VA, SVA_VA + PAGE_SIZE);
        space
            .map(va, pages, 2 * PAGE_SIZE, Prot::RW)
            .map_err(fail)?;
        let kernel = crate::mapping::root_entries();
        let value = 0x5ba5_e000_0000_0001_u64;
        let result = (|| -> TestResult {
            let back = space
                .with_kernel_entries(&kernel, |root| {
                    crate::arch::access_on_tables(root, Some((va, value)), va)
                })
                .map_err(fail)?;
            ensure_eq!(back, value, "the CPU reads back its write through {va:#x}");
            ensure_eq!(
                read_u64(p, pages),
                value,
                "the CPU's write at the page mapped at {va:#x}"
            );
            p.iommu()
                .dev_enable_feature(x, Feature::Sva)
                .map_err(core)?;
            let pasid = p.iommu().sva_bind(x, &space).map_err(core)?;
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
                .map_err(fail)?;
            ensure_eq!(
                r.status,
                DmaStatus::Success,
                "the device's copy {va:#x} -> {va_out:#x}"
            );
            let seen = space
                .with_kernel_entries(&kernel, |root| {
                    crate::arch::access_on_tables(root, None, va_out)
                })
                .map_err(fail)?;
            ensure_eq!(
                seen,
                value,
                "the CPU reads the device's copy through {va_out:#x}"
            );
            ensure!(p.take_faults().is_empty(), "unexpected faults");
            Ok(())
        })();
        let cleanup = match p.iommu().sva_unbind(x, space.id()) {
            Ok(()) | Err(kernel::iommu::domain::IommuError::NotBound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
        .and_then(|()| p.iommu().dev_disable_feature(x, Feature::Sva))
        .and_then(|()| p.iommu().dev_disable_feature(x, Feature::Aux))
        .map_err(core);
        drop(space);
        p.free_pages(pages, 2);
        result.and(cleanup)
    })
}
