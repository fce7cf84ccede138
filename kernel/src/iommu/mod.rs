//! The IOMMU core: domains and aux domains ([`domain`]), the PASID
//! allocator ([`pasid`]), IOVA allocation for DMA domains ([`iova`]) and
//! the I/O page tables ([`pgtable`]), and the ordering of live entry
//! updates every driver uses ([`entry`]), and the bring-up sequence that
//! puts a driver under the core ([`bringup`]), and the checking mode
//! that verifies drivers' invalidations at each DMA ([`check`]), and the
//! vocabulary of I/O page faults ([`iopf`]), and I/O address spaces with
//! the page tables made from them ([`ioas`]), and a guest's virtual IOMMU
//! ([`viommu`]). It knows no hardware: drivers
//! implement [`domain::IommuHw`].
pub mod bringup;
pub mod check;
pub mod conformance;
pub mod domain;
pub mod entry;
pub mod ioas;
pub mod iopf;
pub mod iova;
pub mod model;
pub mod pasid;
pub mod pgtable;
pub mod viommu;
