//! A registry of handlers for message-signalled interrupts, keyed by the
//! vector id `arch::msi_alloc` hands out (an LPI INTID on Arm, an IDT
//! vector on x86). The arch code counts every delivery and then calls
//! [`dispatch`]; drivers register what should run.
//!
//! The table itself is a fixed array behind a spin lock, so dispatching
//! allocates nothing and never waits for the heap. Registration holds the
//! lock with interrupts off, so a handler can never interrupt its own CPU's
//! registration and spin on the lock forever.

use spin::Mutex;

/// Handlers run in interrupt context with the vector id and the context
/// word given at registration (typically a device's MMIO base).
pub type Handler = fn(id: u32, ctx: usize);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The vector already has a handler.
    Busy { id: u32 },
    /// Every slot is taken.
    Full { slots: usize },
}

impl core::fmt::Display for RegisterError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            RegisterError::Busy { id } => write!(f, "vector {id} already has a handler"),
            RegisterError::Full { slots } => write!(f, "all {slots} handler slots are in use"),
        }
    }
}

/// Up to `N` handlers, one per vector id.
pub struct Handlers<const N: usize> {
    slots: Mutex<[Option<(u32, Handler, usize)>; N]>,
}

impl<const N: usize> Default for Handlers<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Handlers<N> {
    pub const fn new() -> Self {
        Handlers {
            slots: Mutex::new([None; N]),
        }
    }

    pub fn register(&self, id: u32, handler: Handler, ctx: usize) -> Result<(), RegisterError> {
        let mut slots = self.slots.lock();
        if slots.iter().flatten().any(|&(i, _, _)| i == id) {
            return Err(RegisterError::Busy { id });
        }
        let free = slots
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(RegisterError::Full { slots: N })?;
        *free = Some((id, handler, ctx));
        Ok(())
    }

    /// Removes the vector's handler; true if there was one.
    pub fn unregister(&self, id: u32) -> bool {
        let mut slots = self.slots.lock();
        match slots
            .iter_mut()
            .find(|s| matches!(s, Some((i, _, _)) if *i == id))
        {
            Some(s) => {
                *s = None;
                true
            }
            None => false,
        }
    }

    /// Runs the vector's handler, outside the lock (so it may register or
    /// unregister). False when none is registered.
    pub fn dispatch(&self, id: u32) -> bool {
        let found = self
            .slots
            .lock()
            .iter()
            .flatten()
            .find(|&&(i, _, _)| i == id)
            .map(|&(_, h, ctx)| (h, ctx));
        match found {
            Some((h, ctx)) => {
                h(id, ctx);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::sync::atomic::{AtomicUsize, Ordering};

    static SEEN: AtomicUsize = AtomicUsize::new(0);

    fn record(id: u32, ctx: usize) {
        SEEN.fetch_add(id as usize * 1000 + ctx, Ordering::SeqCst);
    }

    #[test]
    fn register_dispatch_unregister() {
        let h: Handlers<2> = Handlers::new();
        assert!(!h.dispatch(7));
        h.register(7, record, 3).unwrap();
        assert_eq!(h.register(7, record, 4), Err(RegisterError::Busy { id: 7 }));
        h.register(8, record, 5).unwrap();
        assert_eq!(
            h.register(9, record, 6),
            Err(RegisterError::Full { slots: 2 })
        );
        assert!(h.dispatch(7));
        assert_eq!(SEEN.load(Ordering::SeqCst), 7003);
        assert!(h.unregister(7));
        assert!(!h.unregister(7));
        assert!(!h.dispatch(7));
        h.register(9, record, 6).unwrap();
        assert!(h.dispatch(9));
        assert_eq!(SEEN.load(Ordering::SeqCst), 7003 + 9006);
    }
}
