//! LPI tables the redistributors read: the shared configuration table
//! (GICR_PROPBASER) and the per-redistributor pending tables (GICR_PENDBASER).

use core::ptr::NonNull;

use super::regs::{attrs, CACHE_SAME_AS_INNER};
use super::ItsMemory;
use crate::GicError;

/// First LPI INTID.
pub const LPI_BASE: u32 = 8192;
/// Alignment of an LPI pending table (GICR_PENDBASER holds bits [51:16]).
pub const LPI_PENDING_ALIGN: usize = 0x1_0000;
/// Alignment of the LPI configuration table (GICR_PROPBASER holds bits [51:12]).
pub const LPI_CONFIG_ALIGN: usize = 0x1000;

/// GICR_PROPBASER for a configuration table at `phys` covering `id_bits`
/// INTID bits.
pub fn propbaser_value(phys: u64, id_bits: u32, coherent: bool) -> u64 {
    use crate::GICR_PROPBASER as P;
    let (inner, sh) = attrs(coherent);
    (P::OUTER_CACHE.val(CACHE_SAME_AS_INNER)
        + P::PHYSICAL_ADDRESS.val(phys >> 12)
        + P::SHAREABILITY.val(sh)
        + P::INNER_CACHE.val(inner)
        + P::ID_BITS.val(id_bits.saturating_sub(1) as u64))
    .value
}

/// GICR_PENDBASER for a zeroed pending table at `phys` (PTZ set).
pub fn pendbaser_value(phys: u64, coherent: bool) -> u64 {
    use crate::GICR_PENDBASER as P;
    let (inner, sh) = attrs(coherent);
    (P::PTZ::SET
        + P::OUTER_CACHE.val(CACHE_SAME_AS_INNER)
        + P::PHYSICAL_ADDRESS.val(phys >> 16)
        + P::SHAREABILITY.val(sh)
        + P::INNER_CACHE.val(inner))
    .value
}

/// LPI configuration byte (IHI0069 5.1.1): priority in bits [7:2], bit 1
/// RES1, enable in bit 0.
pub const fn lpi_config_byte(priority: u8, enabled: bool) -> u8 {
    (priority & 0xfc) | 0b10 | enabled as u8
}

/// Bytes of the LPI configuration table for `id_bits` INTID bits: one per
/// LPI, starting at INTID 8192.
pub const fn lpi_config_table_bytes(id_bits: u32) -> usize {
    (1usize << id_bits) - LPI_BASE as usize
}

/// Bytes of one LPI pending table for `id_bits` INTID bits: one bit per
/// INTID (the first 1 KiB covers INTIDs below 8192), rounded to 64 KiB.
pub const fn lpi_pending_table_bytes(id_bits: u32) -> usize {
    ((1usize << id_bits) / 8).next_multiple_of(LPI_PENDING_ALIGN)
}

/// Priority new LPIs get in a fresh configuration table.
pub const DEFAULT_LPI_PRIORITY: u8 = 0xa0;

/// The LPI configuration table shared by the redistributors (GICR_PROPBASER).
pub struct LpiConfigTable {
    phys: u64,
    virt: NonNull<u8>,
    id_bits: u32,
}

// SAFETY: the table memory is owned by this value; the GIC only reads it.
unsafe impl Send for LpiConfigTable {}

impl LpiConfigTable {
    /// Allocates a table for `id_bits` INTID bits (14..=24; no more than
    /// the distributor's GICD_TYPER.IDbits + 1), every LPI disabled at
    /// [`DEFAULT_LPI_PRIORITY`].
    pub fn alloc(mem: &mut dyn ItsMemory, id_bits: u32) -> Result<Self, GicError> {
        if !(14..=24).contains(&id_bits) {
            return Err(GicError::BadIntId(id_bits));
        }
        let bytes = lpi_config_table_bytes(id_bits);
        let (phys, virt) = mem
            .alloc_zeroed(bytes, LPI_CONFIG_ALIGN)
            .ok_or(GicError::NoMemory)?;
        let virt = NonNull::new(virt).ok_or(GicError::NoMemory)?;
        if !phys.is_multiple_of(LPI_CONFIG_ALIGN as u64) {
            return Err(GicError::Misaligned {
                addr: phys,
                align: LPI_CONFIG_ALIGN as u64,
            });
        }
        // SAFETY: `bytes` of fresh memory from the allocator.
        let t = unsafe { Self::from_raw(phys, virt, id_bits) };
        for i in 0..bytes {
            // SAFETY: i < bytes, inside the allocation.
            unsafe {
                virt.as_ptr()
                    .add(i)
                    .write_volatile(lpi_config_byte(DEFAULT_LPI_PRIORITY, false))
            };
        }
        Ok(t)
    }

    /// # Safety
    /// `virt` must map `lpi_config_table_bytes(id_bits)` bytes at `phys`,
    /// 4 KiB aligned, owned by the returned value.
    pub unsafe fn from_raw(phys: u64, virt: NonNull<u8>, id_bits: u32) -> Self {
        LpiConfigTable {
            phys,
            virt,
            id_bits,
        }
    }

    pub fn phys(&self) -> u64 {
        self.phys
    }

    /// INTID bits covered (GICR_PROPBASER.IDbits + 1).
    pub fn id_bits(&self) -> u32 {
        self.id_bits
    }

    /// One past the largest LPI the table covers.
    pub fn lpi_end(&self) -> u32 {
        (1u64 << self.id_bits).min(u32::MAX as u64) as u32
    }

    fn index(&self, lpi: u32) -> Result<usize, GicError> {
        if lpi < LPI_BASE || lpi >= self.lpi_end() {
            return Err(GicError::BadIntId(lpi));
        }
        Ok((lpi - LPI_BASE) as usize)
    }

    /// Writes LPI `lpi`'s configuration byte. The redistributors may cache
    /// it: follow with an ITS INV for the event that maps to it (see
    /// [`Its::set_lpi_config`](super::Its::set_lpi_config)) or `Redistributor::inv_lpi`.
    pub fn set(&mut self, lpi: u32, priority: u8, enabled: bool) -> Result<(), GicError> {
        let i = self.index(lpi)?;
        // SAFETY: i is inside the table (`from_raw`'s contract).
        unsafe {
            self.virt
                .as_ptr()
                .add(i)
                .write_volatile(lpi_config_byte(priority, enabled))
        };
        Ok(())
    }

    pub fn get(&self, lpi: u32) -> Result<u8, GicError> {
        let i = self.index(lpi)?;
        // SAFETY: i is inside the table.
        Ok(unsafe { self.virt.as_ptr().add(i).read_volatile() })
    }
}
