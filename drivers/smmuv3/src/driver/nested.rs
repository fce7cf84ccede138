//! Nested translation with a guest-owned stage 1 (Linux's nested HWPT
//! and vIOMMU on SMMUv3): in the stage-2 mode, a stream whose primary is
//! a stage-2 domain can be given a guest's CD table, named by its IPA.
//! Its STE then says S1+S2 (Config 0b111): the SMMU fetches the guest's
//! CDs and walks the guest's stage-1 tables through the stage-2 domain,
//! and the guest's stage-1 TLB entries are tagged with that domain's
//! VMID. The guest's invalidations arrive through the core's vIOMMU
//! object (`kernel::iommu::viommu`) already checked and in physical ids,
//! and run here as TLBI_NH_* and CFGI_CD* commands.
use super::{
    stream_ste, Command, DeviceId, DomainRef, Fault, Hal, Primary, SmmuError, SmmuHw, SteParams,
    Translation, Vec,
};
use crate::cmd::tlbi_nh_va_range;
use crate::event::FaultStage;
use crate::idr::Features;
use crate::ste::{CdFmt, CdTable, S1Dss, Ste};
use kernel::iommu::viommu::{PhysRequest, ViommuHw};

/// A guest's stage-1 configuration: the STE fields a guest writes in its
/// own (virtual) STE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestS1 {
    /// The guest's CD table (or level-1 CD table): an IPA, which the SMMU
    /// translates through stage 2.
    pub cd_table: u64,
    /// STE.S1CDMax: log2 of the guest's CDs.
    pub s1cdmax: u8,
    pub s1fmt: CdFmt,
    pub s1dss: S1Dss,
}

/// A fault with the stage it came from (`None` for events that are not
/// translation faults). The core's `Fault` has no stage; this is the
/// driver's word for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StagedFault {
    pub fault: Fault,
    pub stage: Option<FaultStage>,
}

/// The STE of a stream with the guest stage 1 `g` over the stage-2
/// domain (`vmid`, `root`).
pub(super) fn guest_ste(p: &SteParams, vmid: u16, root: u64, g: &GuestS1) -> Ste {
    let cd = CdTable {
        base: g.cd_table,
        log2_cds: g.s1cdmax,
        fmt: g.s1fmt,
        s1dss: g.s1dss,
        walk: p.walk,
    };
    Ste::nested(&cd, &p.stage2(vmid, root))
}

/// Whether this SMMU, in `translation`, can take `g` for `sid` over a
/// stage 2 of `s2_ias` input bits.
fn check_guest(
    f: &Features,
    translation: Translation,
    s2_ias: u8,
    sid: u32,
    g: &GuestS1,
) -> Result<(), SmmuError> {
    let refuse = |reason| Err(SmmuError::GuestS1 { sid, reason });
    if translation != Translation::Stage2 {
        return refuse("the unit is not in stage-2 mode");
    }
    if !f.stage1 {
        return Err(SmmuError::StagesMissing {
            stage1: true,
            stage2: false,
        });
    }
    if !f.nesting {
        return Err(SmmuError::NestingErratum);
    }
    if g.s1cdmax > f.ssid_bits {
        return refuse("S1CDMax beyond IDR1.SSIDSIZE");
    }
    if g.s1fmt != CdFmt::Linear && !f.cd_two_level {
        return refuse("two-level CD table without IDR0.CD2L");
    }
    if g.s1fmt != CdFmt::Linear && g.s1cdmax <= g.s1fmt.leaf_log2() {
        return refuse("two-level CD table with no more CDs than one leaf");
    }
    if g.cd_table & 0x3f != 0 {
        return refuse("CD table not 64-byte aligned");
    }
    if g.cd_table >> s2_ias != 0 {
        return refuse("CD table beyond the stage-2 input range");
    }
    Ok(())
}

/// The commands for a checked batch of a guest's requests (ranges split
/// as unmaps are, the whole ASID past `cap`); a configuration request
/// for a stream without a guest stage 1 refuses the batch before any
/// command exists.
pub(super) fn viommu_commands(
    batch: &[PhysRequest],
    ril: bool,
    cap: usize,
    nested: impl Fn(u32) -> bool,
) -> Result<Vec<Command>, SmmuError> {
    let mut out = Vec::new();
    for r in batch {
        match *r {
            PhysRequest::TlbByAsid { vmid, asid } => out.push(Command::TlbiNhAsid { asid, vmid }),
            PhysRequest::TlbByAddress {
                vmid,
                asid,
                addr,
                pages,
                leaf,
            } => {
                let size = pages.saturating_mul(super::PAGE_SIZE);
                match tlbi_nh_va_range(asid, vmid, addr, size, leaf, ril, cap) {
                    Some(c) => out.extend(c),
                    None => out.push(Command::TlbiNhAsid { asid, vmid }),
                }
            }
            PhysRequest::TlbAll { vmid } => out.push(Command::TlbiNhAll { vmid }),
            PhysRequest::Config { dev, ssid } => {
                let sid = dev.0;
                if !nested(sid) {
                    return Err(SmmuError::NotNested { sid });
                }
                out.push(match ssid {
                    // Not leaf-only: the guest may have changed its
                    // level-1 CD descriptors too.
                    Some(ssid) => Command::CfgiCd {
                        sid,
                        ssid,
                        leaf: false,
                    },
                    None => Command::CfgiCdAll { sid },
                });
            }
        }
    }
    Ok(out)
}

impl<H: Hal> SmmuHw<H> {
    /// Puts the guest stage 1 `guest` over the stream's primary stage-2
    /// domain `s2` (attached through the core, in the stage-2 mode): the
    /// STE becomes S1+S2 through the entry writer (CFGI_STE), then
    /// CFGI_CD_ALL drops CDs cached from an earlier guest table.
    pub fn set_nested(
        &mut self,
        dev: DeviceId,
        s2: &DomainRef,
        guest: GuestS1,
    ) -> Result<(), SmmuError> {
        let sid = dev.0;
        let ias = self.ste_params().s2_ias;
        check_guest(&self.features, self.translation, ias, sid, &guest)?;
        let st = self.st_mut(sid)?;
        let parent = match (st.primary, s2.root) {
            (Primary::Paging { asid: vmid, root }, Some(r)) => {
                u32::from(vmid) == s2.tag && root == r.0
            }
            _ => false,
        };
        if !parent {
            return Err(SmmuError::GuestS1 {
                sid,
                reason: "the stage-2 domain is not the stream's primary",
            });
        }
        st.guest = Some(guest);
        self.update_ste(sid)?;
        self.commands(&[Command::CfgiCdAll { sid }])
    }

    /// Takes the guest stage 1 away: stage 2 alone again, and neither the
    /// guest's CDs nor its stage-1 TLB entries stay cached.
    pub fn clear_nested(&mut self, dev: DeviceId) -> Result<(), SmmuError> {
        let sid = dev.0;
        let st = self.st_mut(sid)?;
        if st.guest.take().is_none() {
            return Ok(());
        }
        let vmid = match st.primary {
            Primary::Paging { asid: vmid, .. } => vmid,
            _ => 0,
        };
        self.update_ste(sid)?;
        self.commands(&[Command::CfgiCdAll { sid }, Command::TlbiNhAll { vmid }])
    }

    /// Whether `sid` has a guest stage 1.
    pub fn is_nested(&self, sid: u32) -> bool {
        self.streams.get(&sid).is_some_and(|s| s.guest.is_some())
    }

    /// The STE the driver writes for `sid` now (for tests).
    pub fn ste_of(&self, sid: u32) -> Option<Ste> {
        self.streams
            .get(&sid)
            .map(|st| stream_ste(&self.ste_params(), st))
    }
}

/// A vIOMMU's checked batch, as commands in batches that fit the queue,
/// each ending in CMD_SYNC.
impl<H: Hal> ViommuHw for SmmuHw<H> {
    type Error = SmmuError;
    fn invalidate_physical(&mut self, batch: &[PhysRequest]) -> Result<(), SmmuError> {
        let cap = self.tlbi_cap();
        let cmds = viommu_commands(batch, self.features.range_invalidation, cap, |sid| {
            self.is_nested(sid)
        })?;
        for chunk in cmds.chunks(cap.max(1)) {
            self.commands(chunk)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BTreeMap, BTreeSet, Stream};
    use super::*;
    use crate::Coherency;
    use kernel::iommu::entry::check::writer_is_safe;

    fn params() -> SteParams {
        SteParams {
            translation: Translation::Stage2,
            s2_ias: 44,
            s2_ps: 4,
            s2_root: 0x9000_0000,
            walk: Coherency::Coherent,
            httu: 0,
        }
    }

    const GUEST: GuestS1 = GuestS1 {
        cd_table: 0x8_0000_1000,
        s1cdmax: 6,
        s1fmt: CdFmt::Linear,
        s1dss: S1Dss::Substream0,
    };

    fn stream(guest: Option<GuestS1>) -> Stream {
        Stream {
            primary: Primary::Paging {
                asid: 0x42,
                root: 0xa000_0000,
            },
            aux: false,
            leaves: BTreeMap::new(),
            log2: 0,
            l1: None,
            pasids: BTreeSet::new(),
            guest,
        }
    }

    fn features() -> Features {
        let mut f = Features::decode(
            // IDR0: two-level tables, S1P, S2P, TTF AArch64, CD2L, COHACC.
            [
                (1 << 27) | (2 << 2) | (1 << 1) | 1 | (1 << 19) | (1 << 4),
                // IDR1: SSIDSIZE 8, SIDSIZE 16, queues.
                (8 << 6) | 16 | (8 << 21) | (7 << 16),
                0,
                0,
                0,
                (1 << 4) | 5,
            ],
            0,
        )
        .unwrap();
        f.nesting = true;
        f
    }

    /// STE of a stream with a guest stage 1 (IHI 0070, 5.2): Config S1+S2
    /// (0b111), S1ContextPtr the guest's IPA, the guest's S1Fmt, S1CDMax
    /// and S1DSS, and the stage-2 domain's VMID and S2TTB; without the
    /// guest, the same stream is stage 2 alone.
    #[test]
    fn a_guest_stage1_makes_a_nested_ste_over_the_stage2_domain() {
        let s2_only = stream_ste(&params(), &stream(None)).0;
        assert_eq!((s2_only[0] >> 1) & 7, 0b110);
        let g = GuestS1 {
            s1fmt: CdFmt::TwoLevel4k,
            s1cdmax: 8,
            ..GUEST
        };
        let ste = stream_ste(&params(), &stream(Some(g))).0;
        assert_eq!(ste[0] & 1, 1, "V");
        assert_eq!((ste[0] >> 1) & 7, 0b111, "Config S1+S2");
        assert_eq!((ste[0] >> 4) & 3, 1, "S1Fmt two-level 4 KiB leaves");
        assert_eq!(
            ste[0] & 0x000f_ffff_ffff_ffc0,
            0x8_0000_1000,
            "S1ContextPtr"
        );
        assert_eq!(ste[0] >> 59, 8, "S1CDMax");
        assert_eq!(ste[1] & 3, 2, "S1DSS substream 0");
        assert_eq!(ste[2] & 0xffff, 0x42, "S2VMID");
        assert_eq!(ste[3], 0xa000_0000, "S2TTB");
        // Stage-2 words as the stage-2 STE's: the domain is the same.
        assert_eq!((ste[2], ste[3]), (s2_only[2], s2_only[3]));
        // Adding and removing the guest never shows a torn entry.
        writer_is_safe::<Ste, 8>(s2_only, ste).unwrap();
        writer_is_safe::<Ste, 8>(ste, s2_only).unwrap();
        writer_is_safe::<Ste, 8>(ste, stream_ste(&params(), &stream(Some(GUEST))).0).unwrap();
    }

    #[test]
    fn guest_stage1_refusals() {
        let f = features();
        let ok = |g: GuestS1| check_guest(&f, Translation::Stage2, 44, 3, &g);
        assert_eq!(ok(GUEST), Ok(()));
        let refused = |g: GuestS1| matches!(ok(g), Err(SmmuError::GuestS1 { sid: 3, .. }));
        assert!(refused(GuestS1 {
            s1cdmax: 9,
            ..GUEST
        }));
        assert!(refused(GuestS1 {
            cd_table: 0x1000_0000_0000,
            ..GUEST
        }));
        assert!(refused(GuestS1 {
            cd_table: 0x1010,
            ..GUEST
        }));
        assert!(refused(GuestS1 {
            s1fmt: CdFmt::TwoLevel4k,
            ..GUEST
        }));
        assert!(matches!(
            check_guest(&f, Translation::Stage1, 44, 3, &GUEST),
            Err(SmmuError::GuestS1 { .. })
        ));
        let mut no_cd2l = f;
        no_cd2l.cd_two_level = false;
        let two = GuestS1 {
            s1fmt: CdFmt::TwoLevel4k,
            s1cdmax: 8,
            ..GUEST
        };
        assert_eq!(check_guest(&f, Translation::Stage2, 44, 3, &two), Ok(()));
        assert!(check_guest(&no_cd2l, Translation::Stage2, 44, 3, &two).is_err());
        let mut erratum = f;
        erratum.nesting = false;
        assert_eq!(
            check_guest(&erratum, Translation::Stage2, 44, 3, &GUEST),
            Err(SmmuError::NestingErratum)
        );
    }

    /// Each physical request becomes its command with the VMID and the
    /// physical StreamID; a configuration request for a stream without a
    /// guest stage 1 refuses the batch.
    #[test]
    fn viommu_requests_become_commands() {
        let dev = DeviceId(0x18);
        let batch = [
            PhysRequest::TlbByAsid { vmid: 5, asid: 3 },
            PhysRequest::TlbByAddress {
                vmid: 5,
                asid: 3,
                addr: 0x4000,
                pages: 2,
                leaf: true,
            },
            PhysRequest::TlbAll { vmid: 5 },
            PhysRequest::Config { dev, ssid: Some(0) },
            PhysRequest::Config { dev, ssid: None },
        ];
        let cmds = viommu_commands(&batch, false, 64, |sid| sid == 0x18).unwrap();
        let va = |addr| Command::TlbiNhVa {
            asid: 3,
            vmid: 5,
            addr,
            leaf: true,
            range: None,
        };
        assert_eq!(
            cmds,
            [
                Command::TlbiNhAsid { asid: 3, vmid: 5 },
                va(0x4000),
                va(0x5000),
                Command::TlbiNhAll { vmid: 5 },
                Command::CfgiCd {
                    sid: 0x18,
                    ssid: 0,
                    leaf: false
                },
                Command::CfgiCdAll { sid: 0x18 },
            ]
        );
        // Past the cap: the whole ASID.
        let big = [PhysRequest::TlbByAddress {
            vmid: 5,
            asid: 3,
            addr: 0,
            pages: 100,
            leaf: true,
        }];
        assert_eq!(
            viommu_commands(&big, false, 64, |_| true).unwrap(),
            [Command::TlbiNhAsid { asid: 3, vmid: 5 }]
        );
        assert_eq!(
            viommu_commands(&batch, false, 64, |_| false),
            Err(SmmuError::NotNested { sid: 0x18 })
        );
    }
}
