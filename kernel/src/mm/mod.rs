//! Physical memory bookkeeping that needs no hardware.
pub mod page_alloc;
pub mod ranges;
pub mod space;

pub use page_alloc::{AllocError, PageAllocator, PAGE_SIZE};
