//! A first SMMUv3 driver (issue 7 builds it out): a two-level stream
//! table, the command and event queues, stage-1 STEs with a one-entry CD
//! table, and the core's `IommuHw` on top. Streams the core does not
//! manage are given bypass STEs, so enabling the SMMU leaves other
//! devices' DMA alone; `disable` turns translation off again (the global
//! bypass applies).
use crate::memory;
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::vec::Vec;
use core::ptr::NonNull;
use kernel::iommu::domain::{
    Attachment, DeviceId, DomainKind, DomainRef, HwError, IommuHw, TableFormat,
};
use kernel::iommu::pgtable::arm::{ArmLpae, MAIR};
use kernel::iommu::pgtable::{Gather, TableMemory, ENTRIES, PAGE_SIZE};
use smmuv3::cd::{Cd, CdConfig};
use smmuv3::cmd::Command;
use smmuv3::cmdq::{CmdqHw, CommandQueue};
use smmuv3::event::Event;
use smmuv3::idr::Features;
use smmuv3::probe::Smmu;
use smmuv3::queue::Queue;
use smmuv3::regs::{SmmuPage1, CR0, CR1, CR2, STRTAB_BASE_CFG};
use smmuv3::ste::{l1_descriptor, CdTable, S1Dss, Ste};
use tock_registers::interfaces::{Readable, Writeable};

/// StreamIDs per level-2 stream table (one PCI bus).
const SPLIT: u8 = 8;
const CMDQ_LOG2: u8 = 8;
const EVTQ_LOG2: u8 = 7;
/// Polls of CR0ACK or CMDQ_CONS before giving up (each poll is an MMIO read).
const MAX_POLLS: u32 = 1_000_000;

fn barrier() {
    // Table and queue writes must reach memory before the SMMU is told.
    aarch64_cpu::asm::barrier::dsb(aarch64_cpu::asm::barrier::SY);
}

fn alloc_zeroed(bytes: u64, align: u64) -> Result<u64, HwError> {
    let pages = bytes.div_ceil(PAGE_SIZE) as usize;
    memory::alloc_pages(pages, align.max(PAGE_SIZE))
        .map(|p| p.as_u64())
        .map_err(|e| HwError(format!("SMMU memory: {e}")))
}

fn write_u64(pa: u64, value: u64) {
    // SAFETY: `pa` is in pages this driver allocated (identity-mapped RAM).
    unsafe { core::ptr::write_volatile(pa as *mut u64, value) }
}

fn read_u64(pa: u64) -> u64 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(pa as *const u64) }
}

/// Page-table pages from the page allocator.
pub struct KernelTables;

impl TableMemory for KernelTables {
    fn alloc(&mut self) -> Option<u64> {
        memory::alloc_pages(1, PAGE_SIZE).ok().map(|p| p.as_u64())
    }
    fn free(&mut self, table: u64) {
        let _ = memory::free_pages(kernel::addr::PhysAddr(table), 1);
    }
    fn read(&self, table: u64, index: usize) -> u64 {
        debug_assert!(index < ENTRIES);
        read_u64(table + 8 * index as u64)
    }
    fn write(&mut self, table: u64, index: usize, value: u64) {
        write_u64(table + 8 * index as u64, value)
    }
}

struct Cmdq<'a> {
    smmu: &'a Smmu,
    mem: u64,
}

impl CmdqHw for Cmdq<'_> {
    fn read_prod(&self) -> u32 {
        self.smmu.regs().cmdq_prod.get()
    }
    fn write_prod(&mut self, prod: u32) {
        barrier();
        self.smmu.regs().cmdq_prod.set(prod);
    }
    fn read_cons(&self) -> u32 {
        self.smmu.regs().cmdq_cons.get()
    }
    fn write_entry(&mut self, slot: usize, cmd: [u64; 2]) {
        write_u64(self.mem + 16 * slot as u64, cmd[0]);
        write_u64(self.mem + 16 * slot as u64 + 8, cmd[1]);
    }
    fn read_entry(&self, slot: usize) -> [u64; 2] {
        [
            read_u64(self.mem + 16 * slot as u64),
            read_u64(self.mem + 16 * slot as u64 + 8),
        ]
    }
    fn cmdq_error_active(&self) -> bool {
        let r = self.smmu.regs();
        (r.gerror.get() ^ r.gerrorn.get()) & 1 != 0
    }
    fn acknowledge_cmdq_error(&mut self) {
        let r = self.smmu.regs();
        r.gerrorn.set(r.gerrorn.get() ^ 1);
    }
}

pub struct SmmuHw {
    smmu: Smmu,
    page1: NonNull<SmmuPage1>,
    pub features: Features,
    l1: u64,
    l2: BTreeMap<u32, u64>,
    cmdq: CommandQueue,
    cmdq_mem: u64,
    evtq: Queue,
    evtq_mem: u64,
    tables: KernelTables,
    /// The one-entry CD table of each stream under stage 1.
    cd_tables: BTreeMap<u32, u64>,
    next_asid: u16,
}

impl SmmuHw {
    /// Takes over the SMMU (which must be disabled) and builds its
    /// structures; translation stays off until [`SmmuHw::enable`].
    pub fn new(smmu: Smmu, base: u64) -> Result<SmmuHw, HwError> {
        let features = smmu
            .features()
            .map_err(|e| HwError(format!("SMMU at {base:#x}: {e:?}")))?;
        if smmu.enabled() {
            return Err(HwError(format!("SMMU at {base:#x} is already enabled")));
        }
        let l1_entries = 1u64 << features.sid_bits.saturating_sub(SPLIT);
        let l1 = alloc_zeroed(l1_entries * 8, 64)?;
        let cmdq_mem = alloc_zeroed(16 << CMDQ_LOG2, 32)?;
        let evtq_mem = alloc_zeroed(32 << EVTQ_LOG2, 32)?;
        let r = smmu.regs();
        r.cr1.write(
            CR1::QUEUE_IC.val(1)
                + CR1::QUEUE_OC.val(1)
                + CR1::QUEUE_SH.val(3)
                + CR1::TABLE_IC.val(1)
                + CR1::TABLE_OC.val(1)
                + CR1::TABLE_SH.val(3),
        );
        r.cr2.write(CR2::RECINVSID::SET);
        r.strtab_base.set((1 << 62) | l1);
        r.strtab_base_cfg.write(
            STRTAB_BASE_CFG::FMT::TwoLevel
                + STRTAB_BASE_CFG::SPLIT.val(u32::from(SPLIT))
                + STRTAB_BASE_CFG::LOG2SIZE.val(u32::from(features.sid_bits)),
        );
        let cmdq = CommandQueue::new(CMDQ_LOG2, MAX_POLLS);
        let evtq = Queue {
            log2size: EVTQ_LOG2,
        };
        r.cmdq_base.set(cmdq.queue.base_register(cmdq_mem));
        r.cmdq_prod.set(0);
        r.cmdq_cons.set(0);
        r.eventq_base.set(evtq.base_register(evtq_mem));
        // SAFETY: page 1 of the same SMMU frame.
        let page1 = unsafe {
            NonNull::new_unchecked((base as usize + smmuv3::regs::PAGE1) as *mut SmmuPage1)
        };
        let mut hw = SmmuHw {
            smmu,
            page1,
            features,
            l1,
            l2: BTreeMap::new(),
            cmdq,
            cmdq_mem,
            evtq,
            evtq_mem,
            tables: KernelTables,
            cd_tables: BTreeMap::new(),
            next_asid: 0,
        };
        hw.page1().eventq_prod.set(0);
        hw.page1().eventq_cons.set(0);
        barrier();
        hw.set_cr0(CR0::CMDQEN::SET.value)?;
        hw.commands(&[Command::CfgiAll, Command::TlbiNsnhAll])?;
        hw.set_cr0(CR0::CMDQEN::SET.value | CR0::EVENTQEN::SET.value)?;
        Ok(hw)
    }

    fn page1(&self) -> &SmmuPage1 {
        // SAFETY: `new` derived it from the SMMU's frame.
        unsafe { self.page1.as_ref() }
    }

    fn set_cr0(&mut self, value: u32) -> Result<(), HwError> {
        let r = self.smmu.regs();
        r.cr0.set(value);
        for _ in 0..MAX_POLLS {
            if r.cr0ack.get() == value {
                return Ok(());
            }
        }
        Err(HwError(format!(
            "CR0 {value:#x} not acknowledged (CR0ACK {:#x})",
            r.cr0ack.get()
        )))
    }

    /// Translation on.
    pub fn enable(&mut self) -> Result<(), HwError> {
        self.set_cr0(CR0::CMDQEN::SET.value | CR0::EVENTQEN::SET.value | CR0::SMMUEN::SET.value)
    }

    /// Translation off (the global bypass applies), queues off.
    pub fn disable(&mut self) -> Result<(), HwError> {
        self.set_cr0(CR0::CMDQEN::SET.value | CR0::EVENTQEN::SET.value)?;
        self.set_cr0(0)
    }

    /// Runs `cmds` and one CMD_SYNC; a refused command is an error.
    pub fn commands(&mut self, cmds: &[Command]) -> Result<(), HwError> {
        let mut q = Cmdq {
            smmu: &self.smmu,
            mem: self.cmdq_mem,
        };
        let report = self
            .cmdq
            .submit(&mut q, cmds)
            .map_err(|e| HwError(format!("command queue: {e:?}")))?;
        if let Some(r) = report.rejected.first() {
            return Err(HwError(format!(
                "SMMU refused {} ({:?})",
                Command::opcode_name(r.opcode),
                r.error
            )));
        }
        Ok(())
    }

    /// Queues already-encoded entries (a test's malformed command among
    /// them) and returns what the SMMU refused.
    pub fn raw_commands(
        &mut self,
        entries: &[[u64; 2]],
    ) -> Result<Vec<smmuv3::cmdq::Rejected>, HwError> {
        let mut q = Cmdq {
            smmu: &self.smmu,
            mem: self.cmdq_mem,
        };
        self.cmdq
            .submit_encoded(&mut q, entries)
            .map(|r| r.rejected)
            .map_err(|e| HwError(format!("command queue: {e:?}")))
    }

    /// Commands and syncs issued so far.
    pub fn command_counts(&self) -> (u64, u64) {
        (self.cmdq.issued, self.cmdq.synced)
    }

    /// The STE slot of `sid`, allocating its level-2 table on first use.
    fn ste_slot(&mut self, sid: u32) -> Result<u64, HwError> {
        let l1_index = sid >> SPLIT;
        let l2 = match self.l2.get(&l1_index) {
            Some(&t) => t,
            None => {
                let t = alloc_zeroed(64 << SPLIT, 64 << SPLIT)?;
                self.l2.insert(l1_index, t);
                barrier();
                write_u64(self.l1 + 8 * u64::from(l1_index), l1_descriptor(t, SPLIT));
                barrier();
                // The level-1 descriptor changed: the SMMU may cache it.
                self.commands(&[Command::CfgiSte { sid, leaf: false }])?;
                t
            }
        };
        Ok(l2 + 64 * u64::from(sid & ((1 << SPLIT) - 1)))
    }

    /// Writes `ste` for `sid` (dword 0 last) and makes the SMMU re-read it.
    pub fn write_ste(&mut self, sid: u32, ste: &Ste) -> Result<(), HwError> {
        let slot = self.ste_slot(sid)?;
        for i in Ste::write_order() {
            if i == 0 {
                barrier();
            }
            write_u64(slot + 8 * i as u64, ste.0[i]);
        }
        self.commands(&[Command::CfgiSte { sid, leaf: true }])
    }

    /// Events the SMMU reported since the last call.
    pub fn drain_events(&mut self) -> Vec<Event> {
        let mut out = Vec::new();
        let p1 = self.page1();
        let prod = p1.eventq_prod.get();
        let mut cons = p1.eventq_cons.get();
        while !self.evtq.empty(prod, cons) {
            let at = self.evtq_mem + 32 * self.evtq.slot(cons) as u64;
            let rec = [
                read_u64(at),
                read_u64(at + 8),
                read_u64(at + 16),
                read_u64(at + 24),
            ];
            out.push(Event::decode(&rec));
            cons = self.evtq.next(cons);
        }
        // Keep the overflow flag in step with PROD's (acknowledges it).
        let ovf = prod & smmuv3::queue::OVERFLOW;
        self.page1()
            .eventq_cons
            .set((cons & !smmuv3::queue::OVERFLOW) | ovf);
        out
    }

    fn oas_encoding(&self) -> u8 {
        match self.features.oas {
            32 => 0,
            36 => 1,
            40 => 2,
            42 => 3,
            44 => 4,
            48 => 5,
            _ => 6,
        }
    }
}

impl IommuHw for SmmuHw {
    fn format(&self) -> TableFormat {
        TableFormat::Arm(ArmLpae::S1)
    }

    fn pasid_bits(&self) -> u8 {
        // Substreams need the one-entry CD tables to grow first (issue 7).
        0
    }

    fn tables(&mut self) -> &mut dyn TableMemory {
        &mut self.tables
    }

    fn alloc_tag(&mut self) -> Result<u32, HwError> {
        self.next_asid = self
            .next_asid
            .checked_add(1)
            .ok_or_else(|| HwError("out of ASIDs".into()))?;
        Ok(u32::from(self.next_asid))
    }

    fn free_tag(&mut self, tag: u32) {
        let _ = self.commands(&[Command::TlbiNhAsid {
            asid: tag as u16,
            vmid: 0,
        }]);
    }

    fn set_primary(&mut self, dev: DeviceId, d: &DomainRef) -> Result<(), HwError> {
        let ste = match (d.kind, d.root) {
            (DomainKind::Identity, _) => Ste::bypass(),
            (DomainKind::Unmanaged | DomainKind::Dma, Some(root)) => {
                let cd_table = match self.cd_tables.get(&dev) {
                    Some(&t) => t,
                    None => {
                        let t = alloc_zeroed(64, 64)?;
                        self.cd_tables.insert(dev, t);
                        t
                    }
                };
                let cd = Cd::new(&CdConfig {
                    asid: d.tag as u16,
                    ttb0: root,
                    ias: 48,
                    ips: self.oas_encoding(),
                    mair: MAIR,
                });
                for i in Cd::write_order() {
                    if i == 0 {
                        barrier();
                    }
                    write_u64(cd_table + 8 * i as u64, cd.0[i]);
                }
                self.commands(&[Command::CfgiCd {
                    sid: dev,
                    ssid: 0,
                    leaf: true,
                }])?;
                Ste::stage1(&CdTable {
                    base: cd_table,
                    log2_cds: 0,
                    two_level: false,
                    s1dss: S1Dss::Substream0,
                })
            }
            _ => Ste::abort(),
        };
        self.write_ste(dev, &ste)
    }

    fn enable_aux(&mut self, dev: DeviceId) -> Result<(), HwError> {
        Err(HwError(format!(
            "stream {dev}: substreams are not driven yet"
        )))
    }

    fn disable_aux(&mut self, _dev: DeviceId) -> Result<(), HwError> {
        Ok(())
    }

    fn set_pasid(&mut self, dev: DeviceId, _pasid: u32, _d: &DomainRef) -> Result<(), HwError> {
        Err(HwError(format!(
            "stream {dev}: substreams are not driven yet"
        )))
    }

    fn clear_pasid(&mut self, _dev: DeviceId, _pasid: u32, _d: &DomainRef) -> Result<(), HwError> {
        Ok(())
    }

    fn invalidate(
        &mut self,
        d: &DomainRef,
        _attached: &[Attachment],
        gather: &Gather,
    ) -> Result<(), HwError> {
        if gather.is_empty() {
            return Ok(());
        }
        // One TLBI for the ASID and one sync per batch.
        self.commands(&[Command::TlbiNhAsid {
            asid: d.tag as u16,
            vmid: 0,
        }])
    }

    fn msi_doorbell(&self) -> Option<u64> {
        // GITS_TRANSLATER, which the MSIs of translated devices must reach.
        super::msi::doorbell()
    }
}
