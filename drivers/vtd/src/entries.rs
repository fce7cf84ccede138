//! Scalable-mode translation structures (VT-d spec 9.2, 9.4, 9.5, 9.6):
//! a root entry per bus (two context tables: devfn 0-127 and 128-255),
//! 256-bit context entries pointing at a PASID directory, 64-bit PASID
//! directory entries (64 PASIDs per PASID table page of 64-byte entries),
//! and 512-bit PASID table entries.

const PRESENT: u64 = 1;
const PAGE_MASK: u64 = !0xfff;

/// A scalable-mode root entry: context tables for the lower and upper
/// halves of the devfn space. 128 bits.
pub fn root_entry(lower: Option<u64>, upper: Option<u64>) -> [u64; 2] {
    let half = |t: Option<u64>| t.map_or(0, |pa| (pa & PAGE_MASK) | PRESENT);
    [half(lower), half(upper)]
}

/// Where a devfn's context entry lives: which half table, which index
/// (scalable-mode context entries are 32 bytes, 128 per 4 KiB table).
pub fn context_slot(devfn: u8) -> (bool, usize) {
    (devfn >= 128, usize::from(devfn & 0x7f))
}

/// A scalable-mode context entry (256 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextEntry {
    /// The PASID directory.
    pub pasid_dir: u64,
    /// log2 of the directory's entries minus 7 (PDTS): entries = 2^(PDTS + 7).
    pub pdts: u8,
    /// The PASID that requests without one use (RID_PASID).
    pub rid_pasid: u32,
    /// Requests with PASID allowed (PASIDE): without it hardware blocks
    /// every PASID-tagged request of the device (QEMU does not check).
    pub pasids: bool,
    /// Device-TLB (ATS) enabled.
    pub device_tlb: bool,
    /// Page requests enabled.
    pub page_requests: bool,
}

impl ContextEntry {
    pub fn encode(&self) -> [u64; 4] {
        let lo = PRESENT
            | (u64::from(self.device_tlb) << 2)
            | (u64::from(self.pasids) << 3)
            | (u64::from(self.page_requests) << 4)
            | (u64::from(self.pdts & 7) << 9)
            | (self.pasid_dir & PAGE_MASK);
        [lo, u64::from(self.rid_pasid & 0xf_ffff), 0, 0]
    }

    /// The PDTS value for a directory of at least `entries` entries.
    pub fn pdts_for(entries: u32) -> u8 {
        let log2 = entries.max(128).next_power_of_two().trailing_zeros();
        (log2 - 7).min(7) as u8
    }
}

/// A PASID directory entry: the PASID table for 64 PASIDs.
pub fn pasid_dir_entry(table: u64) -> u64 {
    (table & PAGE_MASK) | PRESENT
}

/// Where a PASID lives: directory index and table index.
pub fn pasid_slot(pasid: u32) -> (usize, usize) {
    ((pasid >> 6) as usize, (pasid & 0x3f) as usize)
}

/// How a PASID table entry translates (PGTT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Translation {
    /// First-level only: x86-64 4-level paging at `root`.
    FirstLevel { root: u64, privileged: bool },
    /// Second-level only, `levels` 3 or 4.
    SecondLevel { root: u64, levels: u8 },
    /// Untranslated, requests checked against the address width of
    /// `levels` (3: 39 bits, 4: 48 bits), which SAGAW must support.
    PassThrough { levels: u8 },
}

/// A scalable-mode PASID table entry (512 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasidEntry {
    pub did: u16,
    pub translation: Translation,
    /// PWSNP: the unit's walks of this entry's page tables snoop the CPU
    /// caches (only where ECAP.SMPWC says it can).
    pub page_walk_snoop: bool,
}

impl PasidEntry {
    pub fn encode(&self) -> [u64; 8] {
        let mut e = [0u64; 8];
        e[1] = u64::from(self.did);
        if self.page_walk_snoop && !matches!(self.translation, Translation::PassThrough { .. }) {
            e[1] |= 1 << 23;
        }
        match self.translation {
            Translation::FirstLevel { root, privileged } => {
                // PGTT 1; AW 2 (48 bits, what 4-level paging covers: units
                // check the IOVA against it); FLPM 0 (4-level); SRE for
                // supervisor requests. No NXE: deprecated with execute
                // requests, and the leaves set no XD.
                e[0] = PRESENT | (2 << 2) | (1 << 6);
                e[2] = (root & PAGE_MASK) | u64::from(privileged);
            }
            Translation::SecondLevel { root, levels } => {
                // AW: 1 = 39-bit 3-level, 2 = 48-bit 4-level; PGTT 2.
                let aw = if levels == 3 { 1 } else { 2 };
                e[0] = PRESENT | (aw << 2) | (2 << 6) | (root & PAGE_MASK);
            }
            Translation::PassThrough { levels } => {
                // AW: the address width checked before passing through.
                let aw = if levels == 3 { 1 } else { 2 };
                e[0] = PRESENT | (aw << 2) | (4 << 6);
            }
        }
        e
    }
}

/// The bits of a context entry the unit reads: P alone when clear;
/// otherwise qwords 0 and 1 (P, the PASID directory and its size, the
/// feature bits; RID_PASID).
impl kernel::iommu::entry::EntryFormat<4> for ContextEntry {
    const VALID: (usize, u64) = (0, PRESENT);

    fn used(e: &[u64; 4]) -> [u64; 4] {
        if e[0] & PRESENT == 0 {
            return [PRESENT, 0, 0, 0];
        }
        [!0, !0, 0, 0]
    }
}

/// The bits of a PASID entry the unit reads (for
/// [`kernel::iommu::entry::write_entry`]): P alone when not present;
/// otherwise qwords 0-2 whole (P, AW, PGTT, the second-level pointer; the
/// DID and attributes; the first-level pointer and its flags). Qwords 3-7
/// hold nothing this driver sets.
impl kernel::iommu::entry::EntryFormat<8> for PasidEntry {
    const VALID: (usize, u64) = (0, PRESENT);

    fn used(e: &[u64; 8]) -> [u64; 8] {
        if e[0] & PRESENT == 0 {
            return [PRESENT, 0, 0, 0, 0, 0, 0, 0];
        }
        [!0, !0, !0, 0, 0, 0, 0, 0]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_context() {
        assert_eq!(root_entry(Some(0x1000_0000), None), [0x1000_0001, 0]);
        assert_eq!(root_entry(None, Some(0x2000_0fff)), [0, 0x2000_0001]);
        assert_eq!(context_slot(0x08), (false, 8));
        assert_eq!(context_slot(0x88), (true, 8));
        let c = ContextEntry {
            pasid_dir: 0x3000_0000,
            pdts: ContextEntry::pdts_for(1 << 14),
            rid_pasid: 0,
            pasids: true,
            device_tlb: true,
            page_requests: false,
        };
        // 2^14 directory entries (2^20 PASIDs / 64): PDTS 7.
        assert_eq!(c.pdts, 7);
        assert_eq!(c.encode(), [0x3000_0000 | (7 << 9) | 8 | 4 | 1, 0, 0, 0]);
        assert_eq!(ContextEntry::pdts_for(1), 0);
        assert_eq!(ContextEntry::pdts_for(300), 2);
    }

    #[test]
    fn pasid_structures() {
        assert_eq!(pasid_dir_entry(0x4000_0000), 0x4000_0001);
        assert_eq!(pasid_slot(0xfffff), (0x3fff, 0x3f));
        assert_eq!(pasid_slot(65), (1, 1));
        let fl = PasidEntry {
            did: 7,
            translation: Translation::FirstLevel {
                root: 0x5000_0000,
                privileged: false,
            },
            page_walk_snoop: false,
        }
        .encode();
        assert_eq!(fl[0], 1 | (2 << 2) | (1 << 6));
        assert_eq!(fl[1], 7);
        // No NXE (bit 5): deprecated, execute requests are gone.
        assert_eq!(fl[2], 0x5000_0000);
        let sl = PasidEntry {
            did: 9,
            translation: Translation::SecondLevel {
                root: 0x6000_0000,
                levels: 3,
            },
            page_walk_snoop: false,
        }
        .encode();
        assert_eq!(sl[0], 0x6000_0000 | (2 << 6) | (1 << 2) | 1);
        assert_eq!(sl[1], 9);
        let pt = PasidEntry {
            did: 1,
            translation: Translation::PassThrough { levels: 4 },
            page_walk_snoop: false,
        }
        .encode();
        assert_eq!(pt[0], 1 | (2 << 2) | (4 << 6));
        // A unit with 39-bit SAGAW only: AW 1 (issue 13, point 16).
        let pt39 = PasidEntry {
            did: 1,
            translation: Translation::PassThrough { levels: 3 },
            page_walk_snoop: false,
        }
        .encode();
        assert_eq!(pt39[0], 1 | (1 << 2) | (4 << 6));
    }
}
