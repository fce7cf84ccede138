//! The register interfaces: memory-mapped (Arm `virt`) and I/O ports (x86).
use crate::Transport;
use core::ptr::NonNull;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::register_structs;
use tock_registers::registers::{ReadOnly, WriteOnly};

register_structs! {
    pub FwCfgMmioRegs {
        /// Item bytes in order; wider reads return them in string order.
        (0x00 => data: ReadOnly<u64>),
        /// Big-endian selector.
        (0x08 => selector: WriteOnly<u16>),
        (0x0a => _reserved),
        (0x10 => dma: WriteOnly<u64>),
        (0x18 => @END),
    }
}

/// fw_cfg as a devicetree `qemu,fw-cfg-mmio` node describes it.
pub struct Mmio {
    regs: NonNull<FwCfgMmioRegs>,
}

// SAFETY: MMIO owned by this value; callers serialise access.
unsafe impl Send for Mmio {}

impl Mmio {
    /// # Safety
    /// `base` must be the mapped fw_cfg register block, used by nothing else.
    pub unsafe fn new(base: usize) -> Self {
        Mmio {
            // SAFETY: the caller vouches for a valid, non-null MMIO address.
            regs: unsafe { NonNull::new_unchecked(base as *mut FwCfgMmioRegs) },
        }
    }

    fn regs(&self) -> &FwCfgMmioRegs {
        // SAFETY: `new`'s contract.
        unsafe { self.regs.as_ref() }
    }
}

impl Transport for Mmio {
    fn select(&mut self, key: u16) {
        self.regs().selector.set(key.to_be());
    }

    fn read(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.regs().data.get().to_le_bytes());
        }
        // A wide read would consume bytes past what was asked for.
        for b in chunks.into_remainder() {
            // SAFETY: a 1-byte read of the data register (offset 0), which
            // fw_cfg accepts at any width up to 8.
            *b = unsafe { core::ptr::read_volatile(self.regs.as_ptr().cast::<u8>()) };
        }
    }
}

/// fw_cfg at the PC's fixed I/O ports.
#[cfg(target_arch = "x86_64")]
pub struct PortIo {
    selector: x86_64::instructions::port::Port<u16>,
    data: x86_64::instructions::port::Port<u8>,
}

#[cfg(target_arch = "x86_64")]
impl PortIo {
    pub const SELECTOR: u16 = 0x510;
    pub const DATA: u16 = 0x511;

    /// # Safety
    /// The machine must have fw_cfg at ports 0x510/0x511 (or nothing there),
    /// and nothing else may use them.
    pub unsafe fn new() -> Self {
        PortIo {
            selector: x86_64::instructions::port::Port::new(Self::SELECTOR),
            data: x86_64::instructions::port::Port::new(Self::DATA),
        }
    }
}

#[cfg(target_arch = "x86_64")]
impl Transport for PortIo {
    fn select(&mut self, key: u16) {
        // SAFETY: `new`'s contract: these ports are fw_cfg's.
        unsafe { self.selector.write(key) };
    }

    fn read(&mut self, buf: &mut [u8]) {
        for b in buf {
            // SAFETY: as above.
            *b = unsafe { self.data.read() };
        }
    }
}

/// The fw_cfg DMA interface on the MMIO device: one access moves a whole
/// buffer instead of one trap per 8 bytes. Needs a small bounce buffer the
/// device can reach (identity-mapped RAM).
pub struct MmioDma {
    mmio: Mmio,
    /// The 16-byte `FWCfgDmaAccess` descriptor, then the bounce buffer.
    desc_phys: u64,
    desc: *mut u8,
    buf_phys: u64,
    buf: *mut u8,
    buf_len: usize,
    /// A selector to apply with the next transfer.
    pending_select: Option<u16>,
    failed: bool,
}

// SAFETY: owns its MMIO block and DMA memory; callers serialise access.
unsafe impl Send for MmioDma {}

const DMA_ERROR: u32 = 0x01;
const DMA_READ: u32 = 0x02;
const DMA_SELECT: u32 = 0x08;
/// Polls of the descriptor before a transfer is declared stuck.
const DMA_SPIN_LIMIT: u32 = 10_000_000;
/// Bit 1 of the `FW_CFG_ID` item: the DMA interface exists.
pub const FEATURE_DMA: u32 = 1 << 1;

impl MmioDma {
    /// # Safety
    /// `base` as for [`Mmio::new`]; `desc`/`buf` are `desc_phys`/`buf_phys`
    /// as the CPU sees them, 16 and `buf_len` bytes the caller owns for the
    /// life of this value, and the device may write them.
    pub unsafe fn new(
        base: usize,
        desc_phys: u64,
        desc: *mut u8,
        buf_phys: u64,
        buf: *mut u8,
        buf_len: usize,
    ) -> Self {
        MmioDma {
            // SAFETY: forwarded from the caller.
            mmio: unsafe { Mmio::new(base) },
            desc_phys,
            desc,
            buf_phys,
            buf,
            buf_len,
            pending_select: None,
            failed: false,
        }
    }

    /// Whether a transfer failed or timed out (its bytes then read as zero).
    pub fn failed(&self) -> bool {
        self.failed
    }

    fn transfer(&mut self, len: usize) -> bool {
        let mut control = DMA_READ;
        if let Some(key) = self.pending_select.take() {
            control |= DMA_SELECT | (u32::from(key) << 16);
        }
        let mut d = [0u8; 16];
        d[0..4].copy_from_slice(&control.to_be_bytes());
        d[4..8].copy_from_slice(&(len as u32).to_be_bytes());
        d[8..16].copy_from_slice(&self.buf_phys.to_be_bytes());
        for (i, b) in d.iter().enumerate() {
            // SAFETY: the descriptor memory `new`'s caller gave us.
            unsafe { core::ptr::write_volatile(self.desc.add(i), *b) };
        }
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
        // Writing the (big-endian) descriptor address starts the transfer.
        self.mmio.regs().dma.set(self.desc_phys.to_be());
        for _ in 0..DMA_SPIN_LIMIT {
            let mut c = [0u8; 4];
            for (i, b) in c.iter_mut().enumerate() {
                // SAFETY: as above; the device clears the control word when done.
                *b = unsafe { core::ptr::read_volatile(self.desc.add(i)) };
            }
            let c = u32::from_be_bytes(c);
            if c & !DMA_ERROR == 0 {
                core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
                return c & DMA_ERROR == 0;
            }
            core::hint::spin_loop();
        }
        false
    }
}

impl Transport for MmioDma {
    fn select(&mut self, key: u16) {
        self.pending_select = Some(key);
    }

    fn read(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(self.buf_len.max(1)) {
            if !self.transfer(chunk.len()) {
                self.failed = true;
                chunk.fill(0);
                continue;
            }
            // SAFETY: the bounce buffer the device just filled, at least chunk.len() bytes.
            let src = unsafe { core::slice::from_raw_parts(self.buf, chunk.len()) };
            chunk.copy_from_slice(src);
        }
    }
}
