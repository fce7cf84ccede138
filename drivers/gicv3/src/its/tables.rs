//! The ITS's own tables: flat device and collection tables behind
//! `GITS_BASER<n>` (page size negotiation, sizing, register value) and the
//! per-device interrupt translation tables (ITTs).

use tock_registers::fields::FieldValue;

use super::regs::{attrs, CACHE_SAME_AS_INNER, GITS_BASER};
use super::{IdKind, ItsError};

/// ITT alignment required by MAPD (ITT_addr holds bits [51:8]).
pub const ITT_ALIGN: usize = 256;

/// GITS_BASER<n>.Page_Size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    Size4K,
    Size16K,
    Size64K,
}

impl PageSize {
    pub const fn bytes(self) -> usize {
        match self {
            PageSize::Size4K => 0x1000,
            PageSize::Size16K => 0x4000,
            PageSize::Size64K => 0x1_0000,
        }
    }

    fn field(self) -> u64 {
        match self {
            PageSize::Size4K => 0,
            PageSize::Size16K => 1,
            PageSize::Size64K => 2,
        }
    }

    pub(super) fn from_field(v: u64) -> Option<Self> {
        match v {
            0 => Some(PageSize::Size4K),
            1 => Some(PageSize::Size16K),
            2 => Some(PageSize::Size64K),
            _ => None,
        }
    }
}

/// Largest page size first, as Linux tries them.
const PAGE_SIZES: [PageSize; 3] = [PageSize::Size64K, PageSize::Size16K, PageSize::Size4K];

/// Finds a page size the register keeps: `write_read_back(p)` writes a BASER
/// value with page size `p` (Valid clear) and returns the page size read back.
pub fn negotiate_page_size(
    mut write_read_back: impl FnMut(PageSize) -> Option<PageSize>,
) -> Option<PageSize> {
    PAGE_SIZES
        .into_iter()
        .find(|&p| write_read_back(p) == Some(p))
}

/// Pages of `page` size needed for `entries` entries of `entry_size` bytes,
/// if GITS_BASER<n>.Size (at most 256 pages) can describe them.
pub fn table_pages(entries: u64, entry_size: usize, page: PageSize) -> Option<usize> {
    let bytes = entries.checked_mul(entry_size as u64)?;
    let pages = bytes.div_ceil(page.bytes() as u64).max(1);
    (pages <= 256).then_some(pages as usize)
}

/// A GITS_BASER<n> value for a flat table at `phys` of `pages` pages.
/// `current` supplies the read-only Type and Entry_Size fields. `coherent`
/// selects inner-shareable write-back, else non-shareable non-cacheable.
pub fn baser_value(
    current: u64,
    phys: u64,
    page: PageSize,
    pages: usize,
    coherent: bool,
    valid: bool,
) -> u64 {
    let addr_field = match page {
        // Bits [47:16] in place, bits [51:48] in field bits [15:12].
        PageSize::Size64K => ((phys & 0x0000_ffff_ffff_0000) >> 12) | ((phys >> 48) & 0xf),
        _ => (phys & 0x0000_ffff_ffff_f000) >> 12,
    };
    let keep = GITS_BASER::TYPE.mask << GITS_BASER::TYPE.shift
        | GITS_BASER::ENTRY_SIZE.mask << GITS_BASER::ENTRY_SIZE.shift;
    let (inner, sh) = attrs(coherent);
    let v: FieldValue<u64, GITS_BASER::Register> = GITS_BASER::VALID.val(valid as u64)
        + GITS_BASER::INDIRECT::CLEAR
        + GITS_BASER::INNER_CACHE.val(inner)
        + GITS_BASER::OUTER_CACHE.val(CACHE_SAME_AS_INNER)
        + GITS_BASER::PHYSICAL_ADDRESS.val(addr_field)
        + GITS_BASER::SHAREABILITY.val(sh)
        + GITS_BASER::PAGE_SIZE.val(page.field())
        + GITS_BASER::SIZE.val(pages.saturating_sub(1) as u64);
    (current & keep) | v.value
}

/// Size and EventID width of one device's ITT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IttLayout {
    /// EventID bits (MAPD Size + 1); the ITT has `1 << event_bits` entries.
    pub event_bits: u8,
    /// Bytes to allocate (256-byte aligned).
    pub bytes: usize,
}

/// ITT for `event_count` events: at least two entries, a power of two,
/// no more than `max_event_bits` EventID bits allow.
pub fn itt_layout(
    event_count: u32,
    entry_size: usize,
    max_event_bits: u32,
) -> Result<IttLayout, ItsError> {
    let bad = ItsError::BadId {
        kind: IdKind::EventCount,
        id: event_count as u64,
    };
    if event_count == 0 {
        return Err(bad);
    }
    let entries = (event_count as u64).next_power_of_two().max(2);
    let bits = entries.trailing_zeros();
    if bits > max_event_bits {
        return Err(bad);
    }
    let bytes = (entries as usize * entry_size).next_multiple_of(ITT_ALIGN);
    Ok(IttLayout {
        event_bits: bits as u8,
        bytes,
    })
}
