//! Command queue entries (IHI 0070, 4): two doublewords each.
use crate::field;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Re-read the STE of `sid` (`leaf`: only its leaf entry changed).
    CfgiSte { sid: u32, leaf: bool },
    /// Re-read the CD of `ssid` on `sid`.
    CfgiCd { sid: u32, ssid: u32, leaf: bool },
    /// Re-read every CD of `sid`.
    CfgiCdAll { sid: u32 },
    /// Re-read every STE and CD.
    CfgiAll,
    /// Every stage-1 TLB entry of `vmid` (a guest's whole stage 1).
    TlbiNhAll { vmid: u16 },
    /// Stage-1 TLB entries of `asid` (in `vmid`, 0 without stage 2).
    TlbiNhAsid { asid: u16, vmid: u16 },
    /// Stage-1 TLB entries of `asid` at `addr`. With `range`, `num` + 1
    /// units of 2^(`scale` * 5 + 12) bytes from `addr` (IDR3.RIL); `ttl`
    /// names the level of the leaf (0 when unknown).
    TlbiNhVa {
        asid: u16,
        vmid: u16,
        addr: u64,
        leaf: bool,
        range: Option<Range>,
    },
    /// Stage-2 entries of `vmid` at IPA `addr`.
    TlbiS2Ipa {
        vmid: u16,
        addr: u64,
        leaf: bool,
        range: Option<Range>,
    },
    /// Everything cached for `vmid`, both stages.
    TlbiS12Vmall { vmid: u16 },
    /// Every non-secure, non-hypervisor TLB entry.
    TlbiNsnhAll,
    /// Waits for every earlier command. `msi`: write `data` to `addr` when
    /// done (completion by interrupt or memory write); else poll CONS.
    Sync { msi: Option<(u64, u32)> },
}

/// A range invalidation (TLBI with IDR3.RIL): NUM, SCALE, TG and TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub num: u8,
    pub scale: u8,
    /// Translation granule: 1 = 4 KiB.
    pub tg: u8,
    pub ttl: u8,
}

pub const CFGI_STE: u64 = 0x03;
pub const CFGI_ALL: u64 = 0x04;
pub const CFGI_CD: u64 = 0x05;
pub const CFGI_CD_ALL: u64 = 0x06;
pub const TLBI_NH_ALL: u64 = 0x10;
pub const TLBI_NH_ASID: u64 = 0x11;
pub const TLBI_NH_VA: u64 = 0x12;
pub const TLBI_S12_VMALL: u64 = 0x28;
pub const TLBI_S2_IPA: u64 = 0x2a;
pub const TLBI_NSNH_ALL: u64 = 0x30;
pub const CMD_SYNC: u64 = 0x46;

/// CMD_SYNC completion signal: none (poll), or the MSI it writes.
const CS_NONE: u64 = 0;
const CS_IRQ: u64 = 1;
/// Shareability and attributes of the completion write: inner shareable,
/// normal write-back.
const MSH_INNER: u64 = 3;
const MSIATTR_OIWB: u64 = 0xf;

fn tlbi_range(w0: u64, w1: u64, r: Option<Range>) -> (u64, u64) {
    match r {
        None => (w0, w1),
        Some(r) => (
            w0 | field(u64::from(r.num), 16, 12) | field(u64::from(r.scale), 24, 20),
            w1 | field(u64::from(r.ttl), 9, 8) | field(u64::from(r.tg), 11, 10),
        ),
    }
}

/// TLBI_NH_VA commands covering `[iova, iova + size)` of `asid` (4 KiB
/// pages). With `ril` (IDR3.RIL) each command covers up to 31 × 2^SCALE
/// pages, the largest run the remaining page count allows; without it one
/// command per page. `leaf`: only last-level entries changed (no table was
/// freed). `None` when more than `max` commands would be needed: the caller
/// then invalidates the whole ASID.
pub fn tlbi_nh_va_range(
    asid: u16,
    vmid: u16,
    iova: u64,
    size: u64,
    leaf: bool,
    ril: bool,
    max: usize,
) -> Option<alloc::vec::Vec<Command>> {
    tlbi_range_commands(iova, size, ril, max, |addr, range| Command::TlbiNhVa {
        asid,
        vmid,
        addr,
        leaf,
        range,
    })
}

/// The same for stage 2: TLBI_S2_IPA commands for `[ipa, ipa + size)` of
/// `vmid`.
pub fn tlbi_s2_ipa_range(
    vmid: u16,
    ipa: u64,
    size: u64,
    leaf: bool,
    ril: bool,
    max: usize,
) -> Option<alloc::vec::Vec<Command>> {
    tlbi_range_commands(ipa, size, ril, max, |addr, range| Command::TlbiS2Ipa {
        vmid,
        addr,
        leaf,
        range,
    })
}

fn tlbi_range_commands(
    iova: u64,
    size: u64,
    ril: bool,
    max: usize,
    make: impl Fn(u64, Option<Range>) -> Command,
) -> Option<alloc::vec::Vec<Command>> {
    let mut out = alloc::vec::Vec::new();
    let mut addr = iova & !0xfff;
    let mut pages = (iova + size - addr).div_ceil(0x1000);
    while pages > 0 {
        if out.len() == max {
            return None;
        }
        let (range, covered) = if ril {
            let scale = pages.trailing_zeros().min(31);
            let num = (pages >> scale) & 0x1f;
            if num == 1 && scale == 0 {
                // One page: TG set with NUM, SCALE and TTL all zero is not
                // a valid command (IHI 0070, 4.4.1.1); the non-range form.
                out.push(make(addr, None));
                addr += 0x1000;
                pages -= 1;
                continue;
            }
            (
                Some(Range {
                    num: (num - 1) as u8,
                    scale: scale as u8,
                    tg: 1,
                    ttl: 0,
                }),
                num << scale,
            )
        } else {
            (None, 1)
        };
        out.push(make(addr, range));
        addr += covered << 12;
        pages -= covered;
    }
    Some(out)
}

impl Command {
    pub fn encode(&self) -> [u64; 2] {
        match *self {
            Command::CfgiSte { sid, leaf } => {
                [CFGI_STE | field(u64::from(sid), 63, 32), u64::from(leaf)]
            }
            Command::CfgiCd { sid, ssid, leaf } => [
                CFGI_CD | field(u64::from(ssid), 31, 12) | field(u64::from(sid), 63, 32),
                u64::from(leaf),
            ],
            Command::CfgiCdAll { sid } => [CFGI_CD_ALL | field(u64::from(sid), 63, 32), 0],
            // CFGI_STE_RANGE with a range of 2^32 StreamIDs.
            Command::CfgiAll => [CFGI_ALL, 31],
            Command::TlbiNhAll { vmid } => [TLBI_NH_ALL | field(u64::from(vmid), 47, 32), 0],
            Command::TlbiNhAsid { asid, vmid } => [
                TLBI_NH_ASID | field(u64::from(vmid), 47, 32) | field(u64::from(asid), 63, 48),
                0,
            ],
            Command::TlbiNhVa {
                asid,
                vmid,
                addr,
                leaf,
                range,
            } => {
                let (w0, w1) = tlbi_range(
                    TLBI_NH_VA | field(u64::from(vmid), 47, 32) | field(u64::from(asid), 63, 48),
                    (addr & !0xfff) | u64::from(leaf),
                    range,
                );
                [w0, w1]
            }
            Command::TlbiS2Ipa {
                vmid,
                addr,
                leaf,
                range,
            } => {
                let (w0, w1) = tlbi_range(
                    TLBI_S2_IPA | field(u64::from(vmid), 47, 32),
                    (addr & 0x000f_ffff_ffff_f000) | u64::from(leaf),
                    range,
                );
                [w0, w1]
            }
            Command::TlbiS12Vmall { vmid } => [TLBI_S12_VMALL | field(u64::from(vmid), 47, 32), 0],
            Command::TlbiNsnhAll => [TLBI_NSNH_ALL, 0],
            Command::Sync { msi: None } => [CMD_SYNC | field(CS_NONE, 13, 12), 0],
            Command::Sync {
                msi: Some((addr, data)),
            } => [
                CMD_SYNC
                    | field(CS_IRQ, 13, 12)
                    | field(MSH_INNER, 23, 22)
                    | field(MSIATTR_OIWB, 27, 24)
                    | field(u64::from(data), 63, 32),
                addr & 0x000f_ffff_ffff_fffc,
            ],
        }
    }

    /// The opcode of an encoded command (for error reports).
    pub fn opcode_name(op: u8) -> &'static str {
        match u64::from(op) {
            CFGI_STE => "CFGI_STE",
            CFGI_ALL => "CFGI_ALL",
            CFGI_CD => "CFGI_CD",
            CFGI_CD_ALL => "CFGI_CD_ALL",
            TLBI_NH_ALL => "TLBI_NH_ALL",
            TLBI_NH_ASID => "TLBI_NH_ASID",
            TLBI_NH_VA => "TLBI_NH_VA",
            TLBI_S12_VMALL => "TLBI_S12_VMALL",
            TLBI_S2_IPA => "TLBI_S2_IPA",
            TLBI_NSNH_ALL => "TLBI_NSNH_ALL",
            CMD_SYNC => "CMD_SYNC",
            _ => "unknown",
        }
    }
}

/// A command error reported in CMDQ_CONS.ERR (IHI 0070, 7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    None,
    /// CERROR_ILL: unknown opcode or reserved field set.
    Illegal,
    /// CERROR_ABT: the command fetch aborted.
    Abort,
    /// CERROR_ATC_INV_SYNC: an ATC invalidation timed out.
    AtcInvalidationSync,
    Other(u8),
}

impl CommandError {
    /// From SMMU_CMDQ_CONS.ERR (bits 30:24).
    pub fn from_cons(cons: u32) -> CommandError {
        match (cons >> 24) & 0x7f {
            0 => CommandError::None,
            1 => CommandError::Illegal,
            2 => CommandError::Abort,
            3 => CommandError::AtcInvalidationSync,
            x => CommandError::Other(x as u8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The pages a list of TLBI_NH_VA commands covers, in order.
    fn covered(cmds: &[Command]) -> alloc::vec::Vec<(u64, u64)> {
        cmds.iter()
            .map(|c| match *c {
                Command::TlbiNhVa { addr, range, .. } | Command::TlbiS2Ipa { addr, range, .. } => {
                    let pages = range.map_or(1, |r| (u64::from(r.num) + 1) << r.scale);
                    (addr, pages)
                }
                _ => panic!("{c:?}"),
            })
            .collect()
    }

    #[test]
    fn ranged_invalidation_covers_exactly_the_range() {
        for pages in [1u64, 2, 3, 31, 32, 33, 100, 512, 513, 4096, 262_143] {
            let iova = 0x4000_0000;
            let cmds = tlbi_nh_va_range(3, 0, iova, pages << 12, true, true, 64).unwrap();
            let mut at = iova;
            for (addr, n) in covered(&cmds) {
                assert_eq!(addr, at, "{pages} pages: contiguous");
                at += n << 12;
            }
            assert_eq!(at, iova + (pages << 12), "{pages} pages: exact");
            assert!(
                cmds.len() <= 64 && cmds.len() as u32 <= pages.count_ones() * 2 + 1,
                "{pages}: {}",
                cmds.len()
            );
        }
        // 4 pages in one command: NUM 3 (4 - 1) at SCALE 0... or 1 at SCALE 2.
        let one = tlbi_nh_va_range(3, 0, 0x1000, 0x4000, false, true, 8).unwrap();
        assert_eq!(one.len(), 1);
        let w = one[0].encode();
        assert_eq!((w[0] >> 12) & 0x1f, 0, "NUM");
        assert_eq!((w[0] >> 20) & 0x1f, 2, "SCALE");
        assert_eq!((w[1] >> 10) & 3, 1, "TG 4 KiB");
        assert_eq!(w[1] & 1, 0, "not leaf-only");
    }

    /// A range command for one page would have TG set and TTL, NUM and
    /// SCALE all zero, which the architecture does not define: single
    /// pages (alone, or the odd remainder of a run) use the non-range form.
    #[test]
    fn no_range_command_names_a_single_page() {
        for pages in [1u64, 3, 33, 65, 513, 262_143] {
            let cmds = tlbi_nh_va_range(3, 0, 0x4000_0000, pages << 12, true, true, 64).unwrap();
            for c in &cmds {
                let w = c.encode();
                let (num, scale, tg, ttl) = (
                    (w[0] >> 12) & 0x1f,
                    (w[0] >> 20) & 0x1f,
                    (w[1] >> 10) & 3,
                    (w[1] >> 8) & 3,
                );
                assert!(
                    tg == 0 || num != 0 || scale != 0 || ttl != 0,
                    "{pages} pages: an illegal range command {c:?}"
                );
            }
        }
        let one = tlbi_nh_va_range(3, 0, 0x1000, 0x1000, true, true, 8).unwrap();
        assert_eq!(
            one,
            [Command::TlbiNhVa {
                asid: 3,
                vmid: 0,
                addr: 0x1000,
                leaf: true,
                range: None
            }]
        );
    }

    #[test]
    fn without_ril_one_command_per_page_and_a_cap() {
        let cmds = tlbi_nh_va_range(3, 0, 0x2000, 0x3000, true, false, 8).unwrap();
        assert_eq!(covered(&cmds), [(0x2000, 1), (0x3000, 1), (0x4000, 1)]);
        assert_eq!(tlbi_nh_va_range(3, 0, 0, 9 << 12, true, false, 8), None);
        let s2 = tlbi_s2_ipa_range(9, 0x8000_0000, 0x20_0000, false, true, 8).unwrap();
        assert_eq!(covered(&s2), [(0x8000_0000, 512)]);
        assert_eq!(s2[0].encode()[0] & 0xff, TLBI_S2_IPA);
        // An unaligned range covers every page it touches.
        let cmds = tlbi_nh_va_range(3, 0, 0x1800, 0x1000, true, false, 8).unwrap();
        assert_eq!(covered(&cmds), [(0x1000, 1), (0x2000, 1)]);
    }

    #[test]
    fn encodings() {
        assert_eq!(
            Command::CfgiSte {
                sid: 0x10,
                leaf: true
            }
            .encode(),
            [0x10_0000_0003, 1]
        );
        assert_eq!(
            Command::CfgiCd {
                sid: 0x208,
                ssid: 0xfffff,
                leaf: true
            }
            .encode(),
            [0x208_ffff_f005, 1]
        );
        assert_eq!(Command::CfgiCdAll { sid: 8 }.encode(), [0x8_0000_0006, 0]);
        assert_eq!(Command::CfgiAll.encode(), [4, 31]);
        assert_eq!(
            Command::TlbiNhAsid {
                asid: 0x1234,
                vmid: 0
            }
            .encode(),
            [0x1234_0000_0000_0011, 0]
        );
        assert_eq!(
            Command::TlbiNhVa {
                asid: 7,
                vmid: 0,
                addr: 0x4000_1234,
                leaf: true,
                range: None
            }
            .encode(),
            [0x0007_0000_0000_0012, 0x4000_1001]
        );
        let r = Range {
            num: 3,
            scale: 1,
            tg: 1,
            ttl: 3,
        };
        assert_eq!(
            Command::TlbiNhVa {
                asid: 7,
                vmid: 0,
                addr: 0x4000_0000,
                leaf: true,
                range: Some(r)
            }
            .encode(),
            [
                0x0007_0000_0000_0012 | (3 << 12) | (1 << 20),
                0x4000_0000 | 1 | (3 << 8) | (1 << 10)
            ]
        );
        assert_eq!(
            Command::TlbiS2Ipa {
                vmid: 2,
                addr: 0x8000_0000,
                leaf: false,
                range: None
            }
            .encode(),
            [0x2_0000_002a, 0x8000_0000]
        );
        // TLBI_NH_ALL: VMID in [47:32].
        assert_eq!(
            Command::TlbiNhAll { vmid: 0x55 }.encode(),
            [0x55_0000_0010, 0]
        );
        assert_eq!(
            Command::TlbiS12Vmall { vmid: 2 }.encode(),
            [0x2_0000_0028, 0]
        );
        assert_eq!(Command::Sync { msi: None }.encode(), [0x46, 0]);
        assert_eq!(
            Command::Sync {
                msi: Some((0x4000_0040, 0xabcd))
            }
            .encode(),
            [
                0x46 | (1 << 12) | (3 << 22) | (0xf << 24) | (0xabcd << 32),
                0x4000_0040
            ]
        );
    }

    #[test]
    fn errors_from_cons() {
        assert_eq!(CommandError::from_cons(0x0000_0005), CommandError::None);
        assert_eq!(CommandError::from_cons(0x0100_0005), CommandError::Illegal);
        assert_eq!(CommandError::from_cons(0x0200_0000), CommandError::Abort);
        assert_eq!(
            CommandError::from_cons(0x0300_0000),
            CommandError::AtcInvalidationSync
        );
        assert_eq!(Command::opcode_name(0x46), "CMD_SYNC");
    }
}
