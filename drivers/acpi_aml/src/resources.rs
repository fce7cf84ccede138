//! `_CRS` resource templates: our own bounds check before the `acpi`
//! crate's decoder sees them (its decoder indexes and splits slices on the
//! lengths inside the buffer and stops at `unimplemented!` for descriptor
//! types it lacks, so a short or unusual template would panic), then the
//! decoded address-space descriptors sorted into a bridge's windows.
use crate::{HostBridge, Window};
use acpi::aml::resource::{AddressSpaceResourceType, MemoryRangeDescriptor, Resource};
use alloc::vec::Vec;
use core::fmt;

/// Large-item names (ACPI 6.5, 6.4.3) of the descriptors that describe a
/// bridge's windows and that the crate's decoder handles.
const FIXED_MEMORY32: u8 = 0x86;
const DWORD_ADDRESS: u8 = 0x87;
const WORD_ADDRESS: u8 = 0x88;
const QWORD_ADDRESS: u8 = 0x8a;
/// Small item: End Tag (type 0xf, length 1).
const END_TAG: [u8; 2] = [0x79, 0x00];
/// Address-space resource types the decoder knows: memory, I/O, bus numbers
/// (192..=255 are vendor-defined).
const LAST_STANDARD_SPACE: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TemplateError {
    /// A descriptor's length runs past the buffer.
    Truncated { offset: usize },
    /// The buffer ends without an End Tag.
    NoEndTag,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Truncated { offset } => {
                write!(f, "the descriptor at byte {offset} runs past the buffer")
            }
            TemplateError::NoEndTag => write!(f, "no End Tag"),
        }
    }
}

/// Walks a resource template and returns a copy holding only the
/// descriptors a host bridge's windows come from (the decoder's own
/// types), ended by an End Tag. Interrupts, DMA, I/O port consumption
/// (a PC's `0xcf8` config ports) and vendor descriptors are left out.
pub fn check_template(bytes: &[u8]) -> Result<Vec<u8>, TemplateError> {
    let mut kept = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let tag = bytes[at];
        let (len, large) = if tag & 0x80 != 0 {
            let Some(l) = bytes.get(at + 1..at + 3) else {
                return Err(TemplateError::Truncated { offset: at });
            };
            (3 + usize::from(u16::from_le_bytes([l[0], l[1]])), true)
        } else {
            (1 + usize::from(tag & 0x7), false)
        };
        let Some(item) = bytes.get(at..at + len) else {
            return Err(TemplateError::Truncated { offset: at });
        };
        if !large && tag >> 3 == 0xf {
            kept.extend_from_slice(&END_TAG);
            return Ok(kept);
        }
        let window = match tag {
            FIXED_MEMORY32 => true,
            DWORD_ADDRESS | WORD_ADDRESS | QWORD_ADDRESS => {
                item.get(3).is_some_and(|&t| t <= LAST_STANDARD_SPACE)
            }
            _ => false,
        };
        if window {
            kept.extend_from_slice(item);
        }
        at += len;
    }
    Err(TemplateError::NoEndTag)
}

const FOUR_GIB: u64 = 1 << 32;

/// Sorts decoded descriptors into `bridge`'s bus range and windows.
pub fn fill(bridge: &mut HostBridge, resources: &[Resource]) {
    for r in resources {
        match r {
            Resource::AddressSpace(a) => {
                let (min, max) = a.address_range;
                // A fixed-size window is `_MIN` and `_LEN`; `_MAX` may be a
                // limit for a relocatable one.
                let end = if a.length != 0 {
                    min.saturating_add(a.length - 1)
                } else {
                    max
                };
                if a.length == 0 && max < min {
                    continue;
                }
                let w = Window {
                    start: min,
                    end,
                    translation: a.translation_offset,
                };
                match a.resource_type {
                    AddressSpaceResourceType::BusNumberRange => {
                        bridge.buses = (min.min(255) as u8, end.min(255) as u8)
                    }
                    AddressSpaceResourceType::IORange => bridge.io.push(w),
                    AddressSpaceResourceType::MemoryRange => push_memory(bridge, w),
                }
            }
            Resource::MemoryRange(MemoryRangeDescriptor::FixedLocation {
                base_address,
                range_length,
                ..
            }) if *range_length != 0 => push_memory(
                bridge,
                Window {
                    start: u64::from(*base_address),
                    end: u64::from(*base_address) + u64::from(*range_length) - 1,
                    translation: 0,
                },
            ),
            _ => {}
        }
    }
}

fn push_memory(bridge: &mut HostBridge, w: Window) {
    if w.cpu_start().saturating_add(w.len() - 1) < FOUR_GIB {
        bridge.mem32.push(w);
    } else {
        bridge.mem64.push(w);
    }
}
