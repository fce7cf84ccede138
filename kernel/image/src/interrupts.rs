//! The kernel's MSI handler registry (see `kernel::irq`): drivers register
//! a handler for the vector id `arch::msi_alloc` gave them; the arch
//! interrupt path calls [`dispatch`] for every MSI it takes.
use crate::arch;
use kernel::irq::{Handler, Handlers, RegisterError};

/// One slot per vector the arch code can hand out (64 LPIs or IDT vectors).
static HANDLERS: Handlers<64> = Handlers::new();

pub fn register(id: u32, handler: Handler, ctx: usize) -> Result<(), RegisterError> {
    let enabled = arch::interrupts_disable();
    let r = HANDLERS.register(id, handler, ctx);
    arch::interrupts_restore(enabled);
    r
}

pub fn unregister(id: u32) -> bool {
    let enabled = arch::interrupts_disable();
    let r = HANDLERS.unregister(id);
    arch::interrupts_restore(enabled);
    r
}

/// From the arch interrupt path, before it counts the delivery.
pub fn dispatch(id: u32) {
    HANDLERS.dispatch(id);
}
