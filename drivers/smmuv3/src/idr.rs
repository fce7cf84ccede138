//! SMMU_IDR0..5 and SMMU_IIDR, decoded into what the driver decides with.
use crate::bits;

/// Stream table formats the SMMU offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamTableLevels {
    Linear,
    TwoLevel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Features {
    pub stream_table: StreamTableLevels,
    /// Two-level context-descriptor tables (IDR0.CD2L).
    pub cd_two_level: bool,
    pub stage1: bool,
    pub stage2: bool,
    /// Stage 1 over stage 2 (both stages, unless an erratum says no).
    pub nesting: bool,
    /// AArch64 translation tables (IDR0.TTF says AArch64 or both).
    pub aarch64_tables: bool,
    pub coherent: bool,
    pub ats: bool,
    pub pri: bool,
    pub msi: bool,
    pub hyp: bool,
    pub asid_bits: u8,
    pub vmid_bits: u8,
    /// HTTU: 0 none, 1 access flag, 2 access flag and dirty state.
    pub httu: u8,
    pub sid_bits: u8,
    pub ssid_bits: u8,
    /// log2 of the largest command, event and PRI queues.
    pub cmdq_log2: u8,
    pub eventq_log2: u8,
    pub priq_log2: u8,
    /// Range invalidation (IDR3.RIL).
    pub range_invalidation: bool,
    /// Output address size in bits (IDR5.OAS).
    pub oas: u8,
    pub granule_4k: bool,
    pub granule_16k: bool,
    pub granule_64k: bool,
    /// 52-bit input addresses for stage 1 (IDR5.VAX).
    pub vax52: bool,
    /// The stream table's base registers are fixed (IDR1.TABLES_PRESET).
    pub tables_preset: bool,
    /// The queues' base registers are fixed (IDR1.QUEUES_PRESET).
    pub queues_preset: bool,
    /// Preset base addresses are offsets from the SMMU's base (IDR1.REL).
    pub preset_relative: bool,
    pub implementer: u16,
    pub product: u16,
    pub variant: u8,
    pub revision: u8,
}

/// Why the driver cannot use this SMMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    NoStage1,
    NoAarch64Tables,
    No4kGranule,
    /// A reserved OAS encoding.
    BadOas(u8),
}

impl Features {
    pub fn decode(idr: [u32; 6], iidr: u32) -> Result<Features, Unusable> {
        let [i0, i1, _i2, i3, _i4, i5] = idr.map(u64::from);
        let oas = match bits(i5, 2, 0) {
            0 => 32,
            1 => 36,
            2 => 40,
            3 => 42,
            4 => 44,
            5 => 48,
            6 => 52,
            x => return Err(Unusable::BadOas(x as u8)),
        };
        let f = Features {
            stream_table: if bits(i0, 28, 27) == 1 {
                StreamTableLevels::TwoLevel
            } else {
                StreamTableLevels::Linear
            },
            cd_two_level: bits(i0, 19, 19) == 1,
            stage1: bits(i0, 1, 1) == 1,
            stage2: bits(i0, 0, 0) == 1,
            nesting: bits(i0, 1, 0) == 3,
            aarch64_tables: bits(i0, 3, 2) >= 2,
            coherent: bits(i0, 4, 4) == 1,
            ats: bits(i0, 10, 10) == 1,
            pri: bits(i0, 16, 16) == 1,
            msi: bits(i0, 13, 13) == 1,
            hyp: bits(i0, 9, 9) == 1,
            asid_bits: if bits(i0, 12, 12) == 1 { 16 } else { 8 },
            vmid_bits: if bits(i0, 18, 18) == 1 { 16 } else { 8 },
            httu: bits(i0, 7, 6) as u8,
            // At most 32 and 20 bits (larger encodings are reserved).
            sid_bits: bits(i1, 5, 0).min(32) as u8,
            ssid_bits: bits(i1, 10, 6).min(20) as u8,
            priq_log2: bits(i1, 15, 11) as u8,
            eventq_log2: bits(i1, 20, 16) as u8,
            cmdq_log2: bits(i1, 25, 21) as u8,
            range_invalidation: bits(i3, 10, 10) == 1,
            oas,
            granule_4k: bits(i5, 4, 4) == 1,
            granule_16k: bits(i5, 5, 5) == 1,
            granule_64k: bits(i5, 6, 6) == 1,
            vax52: bits(i5, 11, 10) == 1,
            tables_preset: bits(i1, 30, 30) == 1,
            queues_preset: bits(i1, 29, 29) == 1,
            preset_relative: bits(i1, 28, 28) == 1,
            implementer: bits(u64::from(iidr), 11, 0) as u16,
            revision: bits(u64::from(iidr), 15, 12) as u8,
            variant: bits(u64::from(iidr), 19, 16) as u8,
            product: bits(u64::from(iidr), 31, 20) as u16,
        };
        if !f.stage1 {
            return Err(Unusable::NoStage1);
        }
        if !f.aarch64_tables {
            return Err(Unusable::NoAarch64Tables);
        }
        if !f.granule_4k {
            return Err(Unusable::No4kGranule);
        }
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field at its place (IHI 0070, 6.3.1-6.3.6).
    #[test]
    fn decode_fields() {
        let idr0 = (1 << 27)
            | (1 << 19)
            | (1 << 18)
            | (1 << 13)
            | (1 << 12)
            | (1 << 4)
            | (2 << 2)
            | (1 << 1)
            | 1;
        let idr1 = (19 << 21) | (19 << 16) | (20 << 6) | 16;
        let idr3 = 1 << 10;
        let idr5 = (1 << 6) | (1 << 4) | 4;
        let iidr = (0x123 << 20) | (2 << 16) | (3 << 12) | 0x43b;
        let f = Features::decode([idr0, idr1, 0, idr3, 0, idr5], iidr).unwrap();
        assert_eq!(f.stream_table, StreamTableLevels::TwoLevel);
        assert!(f.cd_two_level && f.stage1 && f.stage2 && f.aarch64_tables && f.coherent && f.msi);
        assert!(!f.ats && !f.pri && !f.hyp);
        assert_eq!((f.asid_bits, f.vmid_bits, f.httu), (16, 16, 0));
        assert_eq!((f.sid_bits, f.ssid_bits), (16, 20));
        assert_eq!((f.cmdq_log2, f.eventq_log2, f.priq_log2), (19, 19, 0));
        assert!(f.range_invalidation);
        assert_eq!(f.oas, 44);
        assert!(f.granule_4k && !f.granule_16k && f.granule_64k && !f.vax52);
        assert!(!f.tables_preset && !f.queues_preset && !f.preset_relative);
        let presets = Features::decode([idr0, 7 << 28 | 63 | 31 << 6, 0, 0, 0, idr5], 0).unwrap();
        assert!(presets.tables_preset && presets.queues_preset && presets.preset_relative);
        assert_eq!(
            (presets.sid_bits, presets.ssid_bits),
            (32, 20),
            "reserved sizes capped"
        );
        assert_eq!(
            (f.implementer, f.product, f.variant, f.revision),
            (0x43b, 0x123, 2, 3)
        );
    }

    #[test]
    fn refusals() {
        let s1 = (2 << 2) | (1 << 1);
        let g4 = 1 << 4;
        assert_eq!(
            Features::decode([s1, 0, 0, 0, 0, g4 | 7], 0),
            Err(Unusable::BadOas(7))
        );
        assert_eq!(
            Features::decode([2 << 2, 0, 0, 0, 0, g4], 0),
            Err(Unusable::NoStage1)
        );
        assert_eq!(
            Features::decode([1 << 1, 0, 0, 0, 0, g4], 0),
            Err(Unusable::NoAarch64Tables)
        );
        assert_eq!(
            Features::decode([s1, 0, 0, 0, 0, 1 << 6], 0),
            Err(Unusable::No4kGranule)
        );
    }
}
