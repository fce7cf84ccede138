//! Checks a blob before the `fdt` crate sees it. `fdt` 0.1.5 trusts the
//! blob: it slices the structure and strings blocks with the header's
//! offsets, slices property values with their own lengths, and `expect`s
//! NUL-terminated UTF-8 names, all of which panic on a bad blob. It also
//! mis-walks (and in `skip_current_node` asserts on) NOP tokens between
//! properties or children, which the format allows. So: every header field,
//! block bound, token, name and property is checked here, and a blob with
//! NOPs is copied without them; what reaches `fdt` is then well formed.
use crate::error::{BlobError, DtError};
use crate::Region;
use alloc::borrow::Cow;
use alloc::vec::Vec;

const MAGIC: u32 = 0xd00d_feed;
const HEADER_LEN: usize = 40;
/// The header layout with `size_dt_struct` (which `fdt` reads) is v17.
const VERSION: u32 = 17;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;
/// Bounds this reader's recursion and `fdt`'s (`skip_current_node` recurses
/// per level; `all_nodes` has a 64-entry stack). Real trees nest < 10 deep.
pub(crate) const MAX_DEPTH: usize = 32;

pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    let w = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
}

fn be64(b: &[u8], at: usize) -> Option<u64> {
    Some((u64::from(be32(b, at)?) << 32) | u64::from(be32(b, at + 4)?))
}

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The size the blob at the start of `header` claims (its `totalsize`), so
/// the caller knows how long a slice to make. Needs the first 8 bytes.
pub fn blob_size(header: &[u8]) -> Result<usize, DtError> {
    let truncated = |need| {
        DtError::blob(
            0,
            BlobError::Truncated {
                need,
                have: header.len(),
            },
        )
    };
    let magic = be32(header, 0).ok_or(truncated(8))?;
    if magic != MAGIC {
        return Err(DtError::blob(0, BlobError::BadMagic { found: magic }));
    }
    let size = be32(header, 4).ok_or(truncated(8))?;
    if (size as usize) < HEADER_LEN {
        return Err(DtError::blob(4, BlobError::BadTotalSize { size }));
    }
    Ok(size as usize)
}

struct Header {
    total: usize,
    off_struct: usize,
    off_strings: usize,
    off_rsvmap: usize,
    size_strings: usize,
    size_struct: usize,
    boot_cpuid: u32,
}

fn header(blob: &[u8]) -> Result<Header, DtError> {
    let total = blob_size(blob)?;
    // `blob_size` read the magic and size; the rest of the header must be there too.
    if blob.len() < total || blob.len() < HEADER_LEN {
        let need = total.max(HEADER_LEN) as u64;
        return Err(DtError::blob(
            0,
            BlobError::Truncated {
                need,
                have: blob.len(),
            },
        ));
    }
    let w = |i: usize| be32(blob, i * 4).unwrap_or(0);
    let (version, last_compatible) = (w(5), w(6));
    if version < VERSION || last_compatible > VERSION {
        let kind = BlobError::UnsupportedVersion {
            version,
            last_compatible,
        };
        return Err(DtError::blob(20, kind));
    }
    let h = Header {
        total,
        off_struct: w(2) as usize,
        off_strings: w(3) as usize,
        off_rsvmap: w(4) as usize,
        boot_cpuid: w(7),
        size_strings: w(8) as usize,
        size_struct: w(9) as usize,
    };
    let check = |block, start: usize, size: usize, align: usize, field: usize| {
        let end = start as u64 + size as u64;
        if start < HEADER_LEN || end > total as u64 || !start.is_multiple_of(align) {
            let kind = BlobError::BadBlock {
                block,
                start: start as u64,
                size: size as u64,
            };
            return Err(DtError::blob(field * 4, kind));
        }
        Ok(())
    };
    check("structure", h.off_struct, h.size_struct, 4, 2)?;
    check("strings", h.off_strings, h.size_strings, 1, 3)?;
    check("reservations", h.off_rsvmap, 0, 8, 4)?;
    Ok(h)
}

/// The memory reservation block: (address, size) pairs up to a (0, 0).
fn reservations(blob: &[u8], h: &Header) -> Result<Vec<Region>, DtError> {
    let mut out = Vec::new();
    let mut at = h.off_rsvmap;
    loop {
        let (Some(base), Some(size)) = (be64(&blob[..h.total], at), be64(&blob[..h.total], at + 8))
        else {
            let kind = BlobError::BadBlock {
                block: "reservations",
                start: h.off_rsvmap as u64,
                size: (at + 16 - h.off_rsvmap) as u64,
            };
            return Err(DtError::blob(at, kind));
        };
        if base == 0 && size == 0 {
            return Ok(out);
        }
        if base.checked_add(size).is_none() {
            return Err(DtError::blob(at, BlobError::BadReservation { base, size }));
        }
        out.push(Region { base, size });
        at += 16;
    }
}

/// Walks the structure block, checking every token, and hands each token
/// except NOPs (with its payload and padding) to `emit`. Returns whether
/// there were NOPs.
fn walk(blob: &[u8], h: &Header, mut emit: impl FnMut(&[u8])) -> Result<bool, DtError> {
    let s = &blob[h.off_struct..h.off_struct + h.size_struct];
    let strings = &blob[h.off_strings..h.off_strings + h.size_strings];
    let err = |pos: usize, kind| DtError::blob(h.off_struct + pos, kind);
    let (mut pos, mut depth, mut seen_root, mut had_child, mut nops) = (0, 0, false, false, false);
    loop {
        let token = be32(s, pos).ok_or(err(pos, BlobError::Unbalanced))?;
        let next = match token {
            BEGIN_NODE => {
                let name = s.get(pos + 4..).unwrap_or_default();
                let len = name.iter().position(|&b| b == 0);
                let name = len.and_then(|n| core::str::from_utf8(&name[..n]).ok());
                if depth == 0 && seen_root {
                    return Err(err(pos, BlobError::Unbalanced));
                }
                // Only the root has an empty name (paths are built from names).
                if name.is_none_or(|n| (depth == 0) != n.is_empty()) {
                    return Err(err(pos, BlobError::BadNodeName));
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(err(pos, BlobError::TooDeep { depth: MAX_DEPTH }));
                }
                seen_root = true;
                had_child = false;
                // The name's padding may end past the block only if the
                // block is cut mid-node; the next token read then fails.
                align4(pos + 4 + name.map_or(0, str::len) + 1).min(s.len())
            }
            END_NODE if depth > 0 => {
                depth -= 1;
                had_child = true;
                pos + 4
            }
            PROP if depth > 0 => {
                if had_child {
                    return Err(err(pos, BlobError::PropertyAfterChild));
                }
                let (len, name_offset) = match (be32(s, pos + 4), be32(s, pos + 8)) {
                    (Some(l), Some(n)) => (l, n),
                    _ => return Err(err(pos, BlobError::Unbalanced)),
                };
                let end = (pos + 12)
                    .checked_add(len as usize)
                    .filter(|&e| e <= s.len());
                let end = end.ok_or(err(pos, BlobError::PropertyOverrun { len }))?;
                let name = strings.get(name_offset as usize..).unwrap_or_default();
                let named = name
                    .iter()
                    .position(|&b| b == 0)
                    .is_some_and(|n| core::str::from_utf8(&name[..n]).is_ok());
                if !named {
                    return Err(err(pos, BlobError::BadPropertyName { name_offset }));
                }
                align4(end).min(s.len())
            }
            NOP => {
                nops = true;
                pos += 4;
                continue;
            }
            END if depth == 0 && seen_root => {
                emit(&s[pos..pos + 4]);
                return Ok(nops);
            }
            END | END_NODE | PROP => return Err(err(pos, BlobError::Unbalanced)),
            token => return Err(err(pos, BlobError::BadToken { token })),
        };
        emit(&s[pos..next]);
        pos = next;
    }
}

/// A checked blob `fdt` can walk without panicking (a NOP-free copy if the
/// original had NOPs), cut to `totalsize`, and its memory reservations.
pub(crate) struct Checked<'a> {
    pub blob: Cow<'a, [u8]>,
    pub reserved: Vec<Region>,
}

pub(crate) fn check(blob: &[u8]) -> Result<Checked<'_>, DtError> {
    let h = header(blob)?;
    let reserved = reservations(blob, &h)?;
    if !walk(blob, &h, |_| {})? {
        return Ok(Checked {
            blob: Cow::Borrowed(&blob[..h.total]),
            reserved,
        });
    }
    // Rebuild: header, reservations, structure without NOPs, strings.
    let mut structure = Vec::with_capacity(h.size_struct);
    walk(blob, &h, |t| structure.extend_from_slice(t))?;
    let rsv_len = (reserved.len() + 1) * 16;
    let off_struct = HEADER_LEN + rsv_len;
    let off_strings = off_struct + structure.len();
    let total = off_strings + h.size_strings;
    let mut out = Vec::with_capacity(total);
    let fields = [
        MAGIC,
        total as u32,
        off_struct as u32,
        off_strings as u32,
        HEADER_LEN as u32,
        VERSION,
        16,
        h.boot_cpuid,
        h.size_strings as u32,
        structure.len() as u32,
    ];
    fields
        .iter()
        .for_each(|f| out.extend_from_slice(&f.to_be_bytes()));
    out.extend_from_slice(&blob[h.off_rsvmap..h.off_rsvmap + rsv_len]);
    out.extend_from_slice(&structure);
    out.extend_from_slice(&blob[h.off_strings..h.off_strings + h.size_strings]);
    Ok(Checked {
        blob: Cow::Owned(out),
        reserved,
    })
}
