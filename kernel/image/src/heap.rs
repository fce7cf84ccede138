//! The kernel heap: `linked_list_allocator` over a static arena, so it is
//! usable before the memory map is known.
use linked_list_allocator::LockedHeap;

const HEAP_SIZE: usize = 8 << 20;

#[repr(C, align(4096))]
struct Arena([u8; HEAP_SIZE]);

static mut ARENA: Arena = Arena([0; HEAP_SIZE]);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Must run once, on the boot CPU, before anything allocates.
pub fn init() {
    // SAFETY: called once before any allocation; the arena is used by nothing else.
    unsafe {
        HEAP.lock()
            .init(core::ptr::addr_of_mut!(ARENA).cast::<u8>(), HEAP_SIZE);
    }
}

/// Bytes in use (for leak checks and the boot log).
pub fn used() -> usize {
    HEAP.lock().used()
}
