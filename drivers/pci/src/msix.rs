//! MSI-X (capability 0x11): the vector table and Pending Bit Array in a
//! memory BAR, per-vector masking, the function mask.
//!
//! [`locate`] checks the capability against the function's BARs (safe, on
//! any [`Function`]); [`Msix`] then drives the table through the CPU
//! address the caller maps. The table is touched only through volatile
//! register accesses, one 32-bit word at a time, as the specification
//! requires of software.
use crate::bar::BarKind;
use crate::caps::Capability;
use crate::config::{Bdf, ConfigSpace};
use crate::enumerate::Function;
use crate::error::PciError;
use core::ptr::NonNull;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::registers::{ReadOnly, ReadWrite};
use tock_registers::{register_bitfields, register_structs};

const CONTROL: u16 = 2;
const CONTROL_ENABLE: u16 = 1 << 15;
const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// The MSI capability's enable bit: MSI and MSI-X must not both be on.
const MSI_CONTROL_ENABLE: u16 = 1;
const ENTRY_BYTES: u64 = 16;

register_bitfields![u32,
    pub VECTOR_CONTROL [
        MASKED OFFSET(0) NUMBITS(1) []
    ]
];

register_structs! {
    /// One MSI-X table entry.
    pub MsixEntry {
        (0x0 => address_low: ReadWrite<u32>),
        (0x4 => address_high: ReadWrite<u32>),
        (0x8 => data: ReadWrite<u32>),
        (0xc => control: ReadWrite<u32, VECTOR_CONTROL::Register>),
        (0x10 => @END),
    }
}

/// Where a function's MSI-X structures are, in CPU physical addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixLayout {
    pub bdf: Bdf,
    /// Config-space offset of the capability.
    pub cap_offset: u16,
    pub vectors: u16,
    pub table: u64,
    pub pba: u64,
}

/// Finds the MSI-X capability and checks that the table and the PBA lie
/// inside assigned memory BARs of `f`.
pub fn locate(f: &Function) -> Result<MsixLayout, PciError> {
    let Some(&Capability::MsiX {
        offset: cap_offset,
        table_size: vectors,
        table_bir,
        table_offset,
        pba_bir,
        pba_offset,
    }) = f.caps.iter().find(|c| matches!(c, Capability::MsiX { .. }))
    else {
        return Err(PciError::MissingCapability {
            bdf: f.bdf,
            id: crate::caps::CAP_ID_MSIX as u16,
        });
    };
    let table_bytes = u64::from(vectors) * ENTRY_BYTES;
    let pba_bytes = u64::from(vectors).div_ceil(64) * 8;
    let table = place(
        f,
        (table_bir, table_offset, table_bytes),
        "the table's BAR indicator names no implemented BAR",
        "the table runs past the end of its BAR",
    )?;
    let pba = place(
        f,
        (pba_bir, pba_offset, pba_bytes),
        "the pending bit array's BAR indicator names no implemented BAR",
        "the pending bit array runs past the end of its BAR",
    )?;
    if table < pba + pba_bytes && pba < table + table_bytes {
        return Err(PciError::BadMsix {
            bdf: f.bdf,
            what: "the table and the pending bit array overlap",
        });
    }
    Ok(MsixLayout {
        bdf: f.bdf,
        cap_offset,
        vectors,
        table,
        pba,
    })
}

/// The CPU address of `bytes` at `offset` into BAR `bir`, if all of it is there.
fn place(
    f: &Function,
    (bir, offset, bytes): (u8, u32, u64),
    no_bar: &'static str,
    past_end: &'static str,
) -> Result<u64, PciError> {
    let bar = f
        .bars
        .iter()
        .find(|b| b.index == bir)
        .ok_or(PciError::BadMsix {
            bdf: f.bdf,
            what: no_bar,
        })?;
    if bar.kind == BarKind::Io {
        return Err(PciError::BadMsix {
            bdf: f.bdf,
            what: "an MSI-X structure in an I/O BAR",
        });
    }
    if u64::from(offset) + bytes > bar.size {
        return Err(PciError::BadMsix {
            bdf: f.bdf,
            what: past_end,
        });
    }
    let base = bar.cpu_address.ok_or(PciError::UnassignedBar {
        bdf: f.bdf,
        bar: bir,
    })?;
    Ok(base + u64::from(offset))
}

/// A function's MSI-X table and PBA, mapped.
pub struct Msix {
    layout: MsixLayout,
    table: NonNull<MsixEntry>,
    pba: NonNull<ReadOnly<u64>>,
}

// SAFETY: owns nothing but pointers to device memory; the driver holding it
// serialises access.
unsafe impl Send for Msix {}

impl Msix {
    /// # Safety
    /// `layout.table` and `layout.pba` must be mapped as device memory at
    /// the same virtual addresses (identity), for as long as the value
    /// lives, and the caller must be the function's only driver.
    pub unsafe fn new(layout: MsixLayout) -> Self {
        Msix {
            layout,
            // SAFETY: `locate` never yields 0 for a placed BAR; the caller
            // vouches for the mapping.
            table: unsafe { NonNull::new_unchecked(layout.table as *mut MsixEntry) },
            // SAFETY: as above.
            pba: unsafe { NonNull::new_unchecked(layout.pba as *mut ReadOnly<u64>) },
        }
    }

    pub fn layout(&self) -> &MsixLayout {
        &self.layout
    }

    pub fn vectors(&self) -> u16 {
        self.layout.vectors
    }

    fn entry(&self, vector: u16) -> Result<&MsixEntry, PciError> {
        if vector >= self.layout.vectors {
            return Err(PciError::NoSuchVector {
                bdf: self.layout.bdf,
                vector,
                vectors: self.layout.vectors,
            });
        }
        // SAFETY: inside the table `locate` checked against the BAR.
        Ok(unsafe { &*self.table.as_ptr().add(usize::from(vector)) })
    }

    /// Turns MSI-X on with every vector masked (MSI off, as the two must
    /// not run together). Vectors fire once programmed and unmasked.
    pub fn enable<C: ConfigSpace + ?Sized>(&self, cfg: &mut C, f: &Function) {
        let bdf = self.layout.bdf;
        if let Some(msi) = f.find_cap(|c| match *c {
            Capability::Msi { offset, .. } => Some(offset),
            _ => None,
        }) {
            let control = cfg.read16(bdf, msi + CONTROL);
            cfg.write16(bdf, msi + CONTROL, control & !MSI_CONTROL_ENABLE);
        }
        let at = self.layout.cap_offset + CONTROL;
        // The function mask holds everything back while the table is
        // brought to a known state (its reset state is masked, but firmware
        // or an earlier driver may have left entries live).
        let control = cfg.read16(bdf, at);
        cfg.write16(bdf, at, control | CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        for v in 0..self.layout.vectors {
            let _ = self.mask(v);
        }
        cfg.write16(bdf, at, (control | CONTROL_ENABLE) & !CONTROL_FUNCTION_MASK);
    }

    /// Masks every vector and turns MSI-X off.
    pub fn disable<C: ConfigSpace + ?Sized>(&self, cfg: &mut C) {
        for v in 0..self.layout.vectors {
            let _ = self.mask(v);
        }
        let at = self.layout.cap_offset + CONTROL;
        let control = cfg.read16(self.layout.bdf, at);
        cfg.write16(
            self.layout.bdf,
            at,
            control & !(CONTROL_ENABLE | CONTROL_FUNCTION_MASK),
        );
    }

    /// Sets or clears the function mask, which holds back every vector
    /// whatever its own mask bit says.
    pub fn set_function_mask<C: ConfigSpace + ?Sized>(&self, cfg: &mut C, masked: bool) {
        let at = self.layout.cap_offset + CONTROL;
        let control = cfg.read16(self.layout.bdf, at);
        let control = if masked {
            control | CONTROL_FUNCTION_MASK
        } else {
            control & !CONTROL_FUNCTION_MASK
        };
        cfg.write16(self.layout.bdf, at, control);
    }

    /// Writes a vector's message; the vector is masked first and left
    /// masked, so a half-written entry can never fire.
    pub fn program(&self, vector: u16, address: u64, data: u32) -> Result<(), PciError> {
        let e = self.entry(vector)?;
        e.control.write(VECTOR_CONTROL::MASKED::SET);
        e.address_low.set(address as u32);
        e.address_high.set((address >> 32) as u32);
        e.data.set(data);
        Ok(())
    }

    /// The message `vector` holds: address and data.
    pub fn message(&self, vector: u16) -> Result<(u64, u32), PciError> {
        let e = self.entry(vector)?;
        let address = u64::from(e.address_high.get()) << 32 | u64::from(e.address_low.get());
        Ok((address, e.data.get()))
    }

    pub fn mask(&self, vector: u16) -> Result<(), PciError> {
        self.entry(vector)?
            .control
            .write(VECTOR_CONTROL::MASKED::SET);
        Ok(())
    }

    /// Unmasks `vector`; a message the function held back while it was
    /// masked is sent now.
    pub fn unmask(&self, vector: u16) -> Result<(), PciError> {
        self.entry(vector)?
            .control
            .write(VECTOR_CONTROL::MASKED::CLEAR);
        Ok(())
    }

    pub fn is_masked(&self, vector: u16) -> Result<bool, PciError> {
        Ok(self.entry(vector)?.control.is_set(VECTOR_CONTROL::MASKED))
    }

    /// The vector's Pending Bit: the function wanted to send it while it
    /// was masked.
    pub fn pending(&self, vector: u16) -> Result<bool, PciError> {
        self.entry(vector)?;
        // SAFETY: qword `vector / 64` lies inside the PBA `locate` checked.
        let word = unsafe { &*self.pba.as_ptr().add(usize::from(vector / 64)) };
        Ok(word.get() >> (vector % 64) & 1 != 0)
    }
}
