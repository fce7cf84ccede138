//! The unit's registers as the driver uses them. A trait, so the host
//! tests can stand in a unit that answers (GSTS after a GCMD write, the
//! queue's progress); the live unit's registers ([`Unit`]) implement it.
use crate::probe::Unit;
use crate::regs::{
    FaultRecordRegs, FECTL, FSTS, GCMD, GSTS, IQA, IQH, IQT, PECTL, PQA, PQH, PQT, PRS, RTADDR,
};
use tock_registers::fields::FieldValue;
use tock_registers::interfaces::{Readable, Writeable};
use tock_registers::LocalRegisterCopy;

pub trait UnitRegs {
    fn cap(&self) -> u64;
    fn ecap(&self) -> u64;
    fn gsts(&self) -> LocalRegisterCopy<u32, GSTS::Register>;
    /// GCMD is write-only: the whole command, persistent bits included.
    fn write_gcmd(&self, cmd: LocalRegisterCopy<u32, GCMD::Register>);
    fn write_rtaddr(&self, v: FieldValue<u64, RTADDR::Register>);
    fn write_iqa(&self, v: FieldValue<u64, IQA::Register>);
    fn write_iqt(&self, v: FieldValue<u64, IQT::Register>);
    fn iqt(&self) -> LocalRegisterCopy<u64, IQT::Register>;
    fn iqh(&self) -> LocalRegisterCopy<u64, IQH::Register>;
    fn fsts(&self) -> LocalRegisterCopy<u32, FSTS::Register>;
    /// Write-1-to-clear of FSTS's error bits.
    fn write_fsts(&self, v: FieldValue<u32, FSTS::Register>);
    /// The fault event MSI: data, address, upper address.
    fn set_fault_event(&self, data: u32, addr: u32, upper: u32);
    fn write_fectl(&self, v: FieldValue<u32, FECTL::Register>);
    /// The fault recording registers (CAP.NFR of them at CAP.FRO).
    fn fault_records(&self) -> &[FaultRecordRegs];
    /// The page request queue (ECAP.PRS): PQH is software's, PQT the
    /// unit's (read-only), PQA written while no request can come.
    fn pqh(&self) -> LocalRegisterCopy<u64, PQH::Register>;
    fn write_pqh(&self, v: FieldValue<u64, PQH::Register>);
    fn pqt(&self) -> LocalRegisterCopy<u64, PQT::Register>;
    fn write_pqa(&self, v: FieldValue<u64, PQA::Register>);
    fn prs(&self) -> LocalRegisterCopy<u32, PRS::Register>;
    /// Write-1-to-clear of PRS.
    fn write_prs(&self, v: FieldValue<u32, PRS::Register>);
    /// The page request event MSI: data, address, upper address.
    fn set_page_request_event(&self, data: u32, addr: u32, upper: u32);
    fn write_pectl(&self, v: FieldValue<u32, PECTL::Register>);
}

impl UnitRegs for Unit {
    fn cap(&self) -> u64 {
        self.regs().cap.get()
    }
    fn ecap(&self) -> u64 {
        self.regs().ecap.get()
    }
    fn gsts(&self) -> LocalRegisterCopy<u32, GSTS::Register> {
        self.regs().gsts.extract()
    }
    fn write_gcmd(&self, cmd: LocalRegisterCopy<u32, GCMD::Register>) {
        self.regs().gcmd.set(cmd.get());
    }
    fn write_rtaddr(&self, v: FieldValue<u64, RTADDR::Register>) {
        self.regs().rtaddr.write(v);
    }
    fn write_iqa(&self, v: FieldValue<u64, IQA::Register>) {
        self.regs().iqa.write(v);
    }
    fn write_iqt(&self, v: FieldValue<u64, IQT::Register>) {
        self.regs().iqt.write(v);
    }
    fn iqt(&self) -> LocalRegisterCopy<u64, IQT::Register> {
        self.regs().iqt.extract()
    }
    fn iqh(&self) -> LocalRegisterCopy<u64, IQH::Register> {
        self.regs().iqh.extract()
    }
    fn fsts(&self) -> LocalRegisterCopy<u32, FSTS::Register> {
        self.regs().fsts.extract()
    }
    fn write_fsts(&self, v: FieldValue<u32, FSTS::Register>) {
        self.regs().fsts.write(v);
    }
    fn set_fault_event(&self, data: u32, addr: u32, upper: u32) {
        let r = self.regs();
        r.fedata.set(data);
        r.feaddr.set(addr);
        r.feuaddr.set(upper);
    }
    fn write_fectl(&self, v: FieldValue<u32, FECTL::Register>) {
        self.regs().fectl.write(v);
    }
    fn fault_records(&self) -> &[FaultRecordRegs] {
        Unit::fault_records(self)
    }
    fn pqh(&self) -> LocalRegisterCopy<u64, PQH::Register> {
        self.regs().pqh.extract()
    }
    fn write_pqh(&self, v: FieldValue<u64, PQH::Register>) {
        self.regs().pqh.write(v);
    }
    fn pqt(&self) -> LocalRegisterCopy<u64, PQT::Register> {
        self.regs().pqt.extract()
    }
    fn write_pqa(&self, v: FieldValue<u64, PQA::Register>) {
        self.regs().pqa.write(v);
    }
    fn prs(&self) -> LocalRegisterCopy<u32, PRS::Register> {
        self.regs().prs.extract()
    }
    fn write_prs(&self, v: FieldValue<u32, PRS::Register>) {
        self.regs().prs.write(v);
    }
    fn set_page_request_event(&self, data: u32, addr: u32, upper: u32) {
        let r = self.regs();
        r.pedata.set(data);
        r.peaddr.set(addr);
        r.peuaddr.set(upper);
    }
    fn write_pectl(&self, v: FieldValue<u32, PECTL::Register>) {
        self.regs().pectl.write(v);
    }
}
