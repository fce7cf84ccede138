//! The IOMMU core: I/O page tables now; domains, aux domains and the PASID
//! allocator build on them (issue 6).
pub mod pasid;
pub mod pgtable;
