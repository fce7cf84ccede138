//! The interpreter's view of the machine: [`Platform`], which the kernel
//! implements (and host tests fake), adapted to the `acpi` crate's
//! `Handler`.
// One block: the all-zero `Fadt` (see `no_fixed_registers`).
#![allow(unsafe_code)]

use crate::Error;
use acpi::aml::AmlError;
use acpi::registers::FixedRegisters;
use acpi::sdt::fadt::Fadt;
use acpi::{Handle, PciAddress, PhysicalMapping};
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessWidth {
    U8,
    U16,
    U32,
    U64,
}

/// A PCI function's config space, as AML names it (segment, bus, device,
/// function).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciFunction {
    pub segment: u16,
    pub bus: u8,
    pub device: u8,
    pub function: u8,
}

impl From<PciAddress> for PciFunction {
    fn from(a: PciAddress) -> Self {
        PciFunction {
            segment: a.segment(),
            bus: a.bus(),
            device: a.device(),
            function: a.function(),
        }
    }
}

/// What AML may do to the machine. Reads of something the platform cannot
/// reach return all ones (what a bus returns for nothing there); writes are
/// dropped. The kernel decides which addresses it lets AML touch.
pub trait Platform: Send + Sync {
    fn read_memory(&self, address: u64, width: AccessWidth) -> u64;
    fn write_memory(&self, address: u64, width: AccessWidth, value: u64);
    fn read_io(&self, port: u16, width: AccessWidth) -> u32;
    fn write_io(&self, port: u16, width: AccessWidth, value: u32);
    fn read_pci(&self, function: PciFunction, offset: u16, width: AccessWidth) -> u32;
    fn write_pci(&self, function: PciFunction, offset: u16, width: AccessWidth, value: u32);
    /// Monotonic time, for AML's `Timer`.
    fn now_ns(&self) -> u64;
    /// Busy-waits (AML's `Stall`, also used for `Sleep`: nothing else runs
    /// during discovery).
    fn stall_us(&self, us: u64);
}

/// `Fatal` from AML: recorded, then reported by the caller.
const NO_FATAL: u64 = u64::MAX;

struct Shared<P> {
    platform: P,
    next_mutex: AtomicU32,
    /// `type << 32 | code` of the last `Fatal`, or `NO_FATAL`.
    fatal: AtomicU64,
    fatal_arg: AtomicU64,
}

/// The `acpi::Handler` around a [`Platform`].
pub(crate) struct Adapter<P> {
    shared: Arc<Shared<P>>,
}

impl<P> Clone for Adapter<P> {
    fn clone(&self) -> Self {
        Adapter {
            shared: self.shared.clone(),
        }
    }
}

impl<P: Platform> Adapter<P> {
    pub(crate) fn new(platform: P) -> Self {
        Adapter {
            shared: Arc::new(Shared {
                platform,
                next_mutex: AtomicU32::new(1),
                fatal: AtomicU64::new(NO_FATAL),
                fatal_arg: AtomicU64::new(0),
            }),
        }
    }

    /// The `Fatal` the AML raised since the last call, as an error.
    pub(crate) fn take_fatal(&self) -> Result<(), Error> {
        let f = self.shared.fatal.swap(NO_FATAL, Ordering::Relaxed);
        if f == NO_FATAL {
            return Ok(());
        }
        Err(Error::Fatal {
            kind: (f >> 32) as u8,
            code: f as u32,
            arg: self.shared.fatal_arg.load(Ordering::Relaxed),
        })
    }

    fn p(&self) -> &P {
        &self.shared.platform
    }
}

/// The interpreter wants the PM1 register blocks (for sleep states, which
/// we never enter). An all-zero FADT gives I/O blocks at port 0 that
/// nothing maps and only `_PTS`-style sleep code would touch, so the
/// interpreter needs no mapping of the real FADT.
pub(crate) fn no_fixed_registers<P: Platform>(
    handler: &Adapter<P>,
) -> Result<FixedRegisters<Adapter<P>>, Error> {
    // SAFETY: `Fadt` is a packed struct of integers and integer arrays (its
    // header included): all-zero bytes are a valid value of it.
    let fadt: Fadt = unsafe { core::mem::zeroed() };
    FixedRegisters::new(&fadt, handler.clone()).map_err(|e| Error::Eval {
        path: "\\".into(),
        object: "FADT",
        error: alloc::format!("{e:?}"),
    })
}

impl<P: Platform> acpi::Handler for Adapter<P> {
    /// Never reached: we load tables from bytes, pass no FACS and give the
    /// interpreter I/O-port PM1 blocks; the interpreter's own field accesses
    /// go through `read_u*`/`write_u*`.
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        _: usize,
    ) -> PhysicalMapping<Self, T> {
        panic!("acpi_aml: the interpreter asked to map {physical_address:#x}, which this crate never hands it")
    }

    fn unmap_physical_region<T>(_: &PhysicalMapping<Self, T>) {}

    fn read_u8(&self, a: usize) -> u8 {
        self.p().read_memory(a as u64, AccessWidth::U8) as u8
    }
    fn read_u16(&self, a: usize) -> u16 {
        self.p().read_memory(a as u64, AccessWidth::U16) as u16
    }
    fn read_u32(&self, a: usize) -> u32 {
        self.p().read_memory(a as u64, AccessWidth::U32) as u32
    }
    fn read_u64(&self, a: usize) -> u64 {
        self.p().read_memory(a as u64, AccessWidth::U64)
    }
    fn write_u8(&self, a: usize, v: u8) {
        self.p().write_memory(a as u64, AccessWidth::U8, v.into())
    }
    fn write_u16(&self, a: usize, v: u16) {
        self.p().write_memory(a as u64, AccessWidth::U16, v.into())
    }
    fn write_u32(&self, a: usize, v: u32) {
        self.p().write_memory(a as u64, AccessWidth::U32, v.into())
    }
    fn write_u64(&self, a: usize, v: u64) {
        self.p().write_memory(a as u64, AccessWidth::U64, v)
    }
    fn read_io_u8(&self, port: u16) -> u8 {
        self.p().read_io(port, AccessWidth::U8) as u8
    }
    fn read_io_u16(&self, port: u16) -> u16 {
        self.p().read_io(port, AccessWidth::U16) as u16
    }
    fn read_io_u32(&self, port: u16) -> u32 {
        self.p().read_io(port, AccessWidth::U32)
    }
    fn write_io_u8(&self, port: u16, v: u8) {
        self.p().write_io(port, AccessWidth::U8, v.into())
    }
    fn write_io_u16(&self, port: u16, v: u16) {
        self.p().write_io(port, AccessWidth::U16, v.into())
    }
    fn write_io_u32(&self, port: u16, v: u32) {
        self.p().write_io(port, AccessWidth::U32, v)
    }
    fn read_pci_u8(&self, a: PciAddress, off: u16) -> u8 {
        self.p().read_pci(a.into(), off, AccessWidth::U8) as u8
    }
    fn read_pci_u16(&self, a: PciAddress, off: u16) -> u16 {
        self.p().read_pci(a.into(), off, AccessWidth::U16) as u16
    }
    fn read_pci_u32(&self, a: PciAddress, off: u16) -> u32 {
        self.p().read_pci(a.into(), off, AccessWidth::U32)
    }
    fn write_pci_u8(&self, a: PciAddress, off: u16, v: u8) {
        self.p().write_pci(a.into(), off, AccessWidth::U8, v.into())
    }
    fn write_pci_u16(&self, a: PciAddress, off: u16, v: u16) {
        self.p()
            .write_pci(a.into(), off, AccessWidth::U16, v.into())
    }
    fn write_pci_u32(&self, a: PciAddress, off: u16, v: u32) {
        self.p().write_pci(a.into(), off, AccessWidth::U32, v)
    }
    fn nanos_since_boot(&self) -> u64 {
        self.p().now_ns()
    }
    fn stall(&self, us: u64) {
        self.p().stall_us(us)
    }
    fn sleep(&self, ms: u64) {
        self.p().stall_us(ms.saturating_mul(1000))
    }

    fn create_mutex(&self) -> Handle {
        Handle(self.shared.next_mutex.fetch_add(1, Ordering::Relaxed))
    }

    /// One thread runs AML, once, during discovery: every acquire succeeds.
    fn acquire(&self, _: Handle, _: u16) -> Result<(), AmlError> {
        Ok(())
    }

    fn release(&self, _: Handle) {}

    /// Recorded instead of the default panic; the caller reports it.
    fn handle_fatal_error(&self, kind: u8, code: u32, arg: u64) {
        self.shared.fatal_arg.store(arg, Ordering::Relaxed);
        self.shared
            .fatal
            .store(u64::from(kind) << 32 | u64::from(code), Ordering::Relaxed);
    }
}
