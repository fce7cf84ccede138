//! Arm VMSAv8-64 translation table descriptors with the 4 KiB granule,
//! four levels (48-bit input), as an SMMUv3 walks them: stage 1 (a
//! context descriptor's TTB0) and stage 2 (an STE's S2TTB). Arm ARM
//! D8.3 ("Translation table descriptor formats").
//!
//! Stage 1 tables the SMMU owns use MAIR index 0 for normal memory and 1
//! for device memory; the driver programs MAIR to match ([`MAIR`]). A
//! CPU address space bound for shared virtual addressing uses the CPU's
//! indices instead ([`ArmLpae::S1_CPU`], [`CPU_MAIR`]), and its context
//! descriptor takes the CPU's MAIR. Stage 1 has no "write only": any
//! valid entry can be read.
use super::{Format, Prot, Pte};

/// MAIR for stage 1: attribute 0 normal write-back read/write-allocate,
/// attribute 1 device nGnRE.
pub const MAIR: u64 = 0xff | (0x04 << 8);

/// MAIR_EL1 as the aarch64 kernel programs it: attribute 0 Device-nGnRnE,
/// 1 Device-nGnRE, 2 normal write-back read/write-allocate.
pub const CPU_MAIR: u64 = (0x04 << 8) | (0xff << 16);

const VALID: u64 = 1 << 0;
/// Table (levels 0-2) or page (level 3); clear for a block.
const TABLE_OR_PAGE: u64 = 1 << 1;
const ATTR_INDX_SHIFT: u32 = 2;
/// Stage 1 AP[1]: unprivileged (EL0) access.
const AP_UNPRIV: u64 = 1 << 6;
/// Stage 1 AP[2]: read-only.
const AP_RDONLY: u64 = 1 << 7;
/// Stage 2 S2AP: read, write.
const S2AP_READ: u64 = 1 << 6;
const S2AP_WRITE: u64 = 1 << 7;
/// Stage 2 MemAttr[5:2].
const S2_MEMATTR_SHIFT: u32 = 2;
const S2_MEMATTR_NORMAL_WB: u64 = 0xf;
const S2_MEMATTR_DEVICE_NGNRE: u64 = 0x1;
const SH_INNER: u64 = 3 << 8;
const AF: u64 = 1 << 10;
const NG: u64 = 1 << 11;
const PXN: u64 = 1 << 53;
/// UXN at stage 1, XN[1] at stage 2.
const XN: u64 = 1 << 54;
const ADDR_MASK: u64 = 0x0000_ffff_ffff_f000;
/// Dirty Bit Modifier: with hardware dirty-state update on, the write
/// permission (AP[2] clear at stage 1, S2AP[1] set at stage 2) is the
/// dirty flag, and a write to a writable-clean leaf sets it instead of
/// faulting.
const DBM: u64 = 1 << 51;

/// Which stage's attribute and permission encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    One,
    Two,
}

/// Stage-1 AttrIndx values for normal and device memory, and the MAIR
/// that gives them their meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attrs {
    pub normal: u8,
    pub device: u8,
    pub mair: u64,
}

impl Attrs {
    /// The SMMU's own tables.
    pub const SMMU: Attrs = Attrs {
        normal: 0,
        device: 1,
        mair: MAIR,
    };
    /// A CPU address space of the aarch64 kernel.
    pub const CPU: Attrs = Attrs {
        normal: 2,
        device: 1,
        mair: CPU_MAIR,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmLpae {
    pub stage: Stage,
    /// Stage 1 only.
    pub attrs: Attrs,
}

impl ArmLpae {
    pub const S1: ArmLpae = ArmLpae {
        stage: Stage::One,
        attrs: Attrs::SMMU,
    };
    pub const S2: ArmLpae = ArmLpae {
        stage: Stage::Two,
        attrs: Attrs::SMMU,
    };
    /// Stage 1 as the CPU's own tables (EL0 pages of a process): what an
    /// SMMU walks for shared virtual addressing.
    pub const S1_CPU: ArmLpae = ArmLpae {
        stage: Stage::One,
        attrs: Attrs::CPU,
    };

    /// The MAIR a context descriptor over these tables needs.
    pub fn mair(&self) -> u64 {
        self.attrs.mair
    }
}

impl Format for ArmLpae {
    fn name(&self) -> &'static str {
        match self.stage {
            Stage::One => "Arm VMSAv8-64 stage 1, 4 KiB granule",
            Stage::Two => "Arm VMSAv8-64 stage 2, 4 KiB granule",
        }
    }

    #[inline]
    fn levels(&self) -> usize {
        4
    }

    fn oas(&self) -> u32 {
        48
    }

    /// 1 GiB blocks at level 1, 2 MiB at level 2; none at level 0.
    #[inline]
    fn leaf_allowed(&self, level: usize) -> bool {
        level >= 1
    }

    #[inline]
    fn encode_table(&self, table: u64, _level: usize) -> u64 {
        (table & ADDR_MASK) | TABLE_OR_PAGE | VALID
    }

    #[inline]
    fn encode_leaf(&self, pa: u64, level: usize, prot: Prot) -> u64 {
        let kind = if level == 3 { TABLE_OR_PAGE } else { 0 };
        let mut e = (pa & ADDR_MASK) | kind | VALID | AF;
        match self.stage {
            Stage::One => {
                e |= NG;
                if prot.device {
                    e |= u64::from(self.attrs.device) << ATTR_INDX_SHIFT;
                } else {
                    e |= (u64::from(self.attrs.normal) << ATTR_INDX_SHIFT) | SH_INNER;
                }
                if !prot.write {
                    e |= AP_RDONLY;
                }
                if !prot.privileged {
                    e |= AP_UNPRIV;
                }
                if !prot.exec {
                    e |= XN | PXN;
                }
            }
            Stage::Two => {
                if prot.device {
                    e |= S2_MEMATTR_DEVICE_NGNRE << S2_MEMATTR_SHIFT;
                } else {
                    e |= (S2_MEMATTR_NORMAL_WB << S2_MEMATTR_SHIFT) | SH_INNER;
                }
                if prot.read {
                    e |= S2AP_READ;
                }
                if prot.write {
                    e |= S2AP_WRITE;
                }
                if !prot.exec {
                    e |= XN;
                }
            }
        }
        e
    }

    /// DBM (needs the SMMU's HTTU with HD in the CD or STE).
    fn tracks_dirty(&self) -> bool {
        true
    }

    fn clean(&self, e: u64, level: usize) -> Option<u64> {
        let writable = match self.decode(e, level) {
            Pte::Leaf { prot, .. } => prot.write,
            _ => false,
        };
        writable.then_some(match self.stage {
            Stage::One => e | DBM | AP_RDONLY,
            Stage::Two => (e | DBM) & !S2AP_WRITE,
        })
    }

    fn dirtied(&self, e: u64, _level: usize) -> u64 {
        if e & DBM == 0 {
            return e;
        }
        match self.stage {
            Stage::One => e & !AP_RDONLY,
            Stage::Two => e | S2AP_WRITE,
        }
    }

    fn is_dirty(&self, e: u64, _level: usize) -> bool {
        e & DBM != 0
            && match self.stage {
                Stage::One => e & AP_RDONLY == 0,
                Stage::Two => e & S2AP_WRITE != 0,
            }
    }

    #[inline]
    fn decode(&self, e: u64, level: usize) -> Pte {
        if e & VALID == 0 {
            return Pte::Invalid;
        }
        let table_or_page = e & TABLE_OR_PAGE != 0;
        match (level, table_or_page) {
            (3, true) | (1..=2, false) => {}
            (0..=2, true) => return Pte::Table(e & ADDR_MASK),
            // A block at level 0, or the reserved encoding at level 3.
            _ => return Pte::Invalid,
        }
        let prot = match self.stage {
            Stage::One => Prot {
                read: true,
                write: e & AP_RDONLY == 0 || e & DBM != 0,
                exec: e & (XN | PXN) == 0,
                privileged: e & AP_UNPRIV == 0,
                device: (e >> ATTR_INDX_SHIFT) & 7 == u64::from(self.attrs.device),
            },
            Stage::Two => Prot {
                read: e & S2AP_READ != 0,
                write: e & S2AP_WRITE != 0 || e & DBM != 0,
                exec: e & XN == 0,
                privileged: false,
                device: (e >> S2_MEMATTR_SHIFT) & 0xf == S2_MEMATTR_DEVICE_NGNRE,
            },
        };
        Pte::Leaf {
            pa: e & ADDR_MASK,
            prot,
        }
    }
}
