//! Turning an SMMU on and off (IHI 0070 6.3.9-6.3.10 CR0 and CR0ACK,
//! 6.3.14 GBPA), over [`ControlHw`] so the order is host-tested.
//!
//! While SMMUEN is 0 the SMMU applies GBPA to every transaction: bypass
//! unless GBPA.ABORT is set. So GBPA is set to abort (through its Update
//! handshake) before SMMUEN is set and before it is cleared: "SMMU off"
//! never lets DMA through. An SMMU that firmware left enabled is taken
//! over the same way: abort first, then disabled, CR0ACK awaited.
use super::SmmuError;
use crate::probe::Smmu;
use crate::regs::{CR0, GBPA};
use tock_registers::interfaces::{Readable, Writeable};

/// The registers that turn an SMMU on and off.
pub trait ControlHw {
    fn cr0(&self) -> u32;
    fn set_cr0(&mut self, value: u32);
    fn cr0ack(&self) -> u32;
    fn gbpa(&self) -> u32;
    fn set_gbpa(&mut self, value: u32);
}

/// A live SMMU's control registers.
pub struct Control<'a>(pub &'a Smmu);

impl ControlHw for Control<'_> {
    fn cr0(&self) -> u32 {
        self.0.regs().cr0.get()
    }
    fn set_cr0(&mut self, value: u32) {
        self.0.regs().cr0.set(value);
    }
    fn cr0ack(&self) -> u32 {
        self.0.regs().cr0ack.get()
    }
    fn gbpa(&self) -> u32 {
        self.0.regs().gbpa.get()
    }
    fn set_gbpa(&mut self, value: u32) {
        self.0.regs().gbpa.set(value);
    }
}

const SMMUEN: u32 = CR0::SMMUEN::SET.value;
const ABORT: u32 = GBPA::ABORT::SET.value;
const UPDATE: u32 = GBPA::UPDATE::SET.value;

/// Writes CR0 and waits (at most `polls` reads) until CR0ACK says so.
pub fn write_cr0<C: ControlHw>(hw: &mut C, value: u32, polls: u32) -> Result<(), SmmuError> {
    hw.set_cr0(value);
    if (0..polls).any(|_| hw.cr0ack() == value) {
        return Ok(());
    }
    Err(SmmuError::NotAcknowledged {
        register: "CR0",
        value,
        ack: hw.cr0ack(),
    })
}

/// GBPA.ABORT set: transactions abort while SMMUEN is 0. A pending
/// update is waited for, then the new value is written with Update set
/// and Update awaited clear (each wait at most `polls` reads).
pub fn abort_while_off<C: ControlHw>(hw: &mut C, polls: u32) -> Result<(), SmmuError> {
    let settled = |hw: &C| (0..polls).find_map(|_| Some(hw.gbpa()).filter(|g| g & UPDATE == 0));
    let now = settled(hw).ok_or(SmmuError::GbpaNotUpdated { gbpa: hw.gbpa() })?;
    if now & ABORT != 0 {
        return Ok(());
    }
    hw.set_gbpa(now | ABORT | UPDATE);
    let after = settled(hw).ok_or(SmmuError::GbpaNotUpdated { gbpa: hw.gbpa() })?;
    if after & ABORT == 0 {
        return Err(SmmuError::GbpaNotUpdated { gbpa: after });
    }
    Ok(())
}

/// Makes the SMMU the driver's: an enabled one (firmware left it on) is
/// reset, GBPA abort first, then CR0 cleared; queues left on are turned
/// off. Says whether it was enabled.
pub fn take_over<C: ControlHw>(hw: &mut C, polls: u32) -> Result<bool, SmmuError> {
    let enabled = (hw.cr0() | hw.cr0ack()) & SMMUEN != 0;
    if enabled {
        abort_while_off(hw, polls)?;
    }
    if enabled || hw.cr0() != 0 || hw.cr0ack() != 0 {
        write_cr0(hw, 0, polls)?;
    }
    Ok(enabled)
}

/// Translation on with the queues in `queues`: GBPA abort first, so that
/// turning it off later cannot let traffic bypass.
pub fn enable<C: ControlHw>(hw: &mut C, queues: u32, polls: u32) -> Result<(), SmmuError> {
    abort_while_off(hw, polls)?;
    write_cr0(hw, queues | SMMUEN, polls)
}

/// Translation off, then the queues: GBPA abort before SMMUEN clears.
pub fn disable<C: ControlHw>(hw: &mut C, polls: u32) -> Result<(), SmmuError> {
    abort_while_off(hw, polls)?;
    let cr0 = hw.cr0();
    if cr0 & SMMUEN != 0 {
        write_cr0(hw, cr0 & !SMMUEN, polls)?;
    }
    if hw.cr0() != 0 {
        write_cr0(hw, 0, polls)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Ev {
        Cr0(u32),
        /// GBPA written (Update set), and when the update took effect.
        Gbpa(u32),
        GbpaDone(u32),
    }

    /// CR0ACK follows CR0 at once; a GBPA update takes effect after
    /// `lag` reads (never, with `u32::MAX`).
    struct Fake {
        cr0: u32,
        ack: u32,
        gbpa: core::cell::Cell<u32>,
        pending: core::cell::Cell<u32>,
        lag: u32,
        log: core::cell::RefCell<Vec<Ev>>,
    }

    impl Fake {
        fn new(cr0: u32, gbpa: u32, lag: u32) -> Fake {
            Fake {
                cr0,
                ack: cr0,
                gbpa: gbpa.into(),
                pending: 0.into(),
                lag,
                log: Vec::new().into(),
            }
        }
        fn log(&self) -> Vec<Ev> {
            self.log.borrow().clone()
        }
    }

    impl ControlHw for Fake {
        fn cr0(&self) -> u32 {
            self.cr0
        }
        fn set_cr0(&mut self, value: u32) {
            self.log.borrow_mut().push(Ev::Cr0(value));
            self.cr0 = value;
            self.ack = value;
        }
        fn cr0ack(&self) -> u32 {
            self.ack
        }
        fn gbpa(&self) -> u32 {
            let g = self.gbpa.get();
            if g & UPDATE != 0 {
                if self.pending.get() >= self.lag {
                    let done = g & !UPDATE;
                    self.gbpa.set(done);
                    self.log.borrow_mut().push(Ev::GbpaDone(done));
                } else {
                    self.pending.set(self.pending.get() + 1);
                }
            }
            self.gbpa.get()
        }
        fn set_gbpa(&mut self, value: u32) {
            self.log.borrow_mut().push(Ev::Gbpa(value));
            self.pending.set(0);
            self.gbpa.set(value);
        }
    }

    const QUEUES: u32 = CR0::CMDQEN::SET.value | CR0::EVENTQEN::SET.value;
    /// GBPA's reset value on QEMU: SHCFG "use incoming", no abort.
    const BYPASS: u32 = 1 << 12;

    /// GBPA is set to abort, and the update has taken effect, before
    /// SMMUEN is set (issue 13, point 4).
    #[test]
    fn gbpa_aborts_before_smmuen_is_set() {
        let mut hw = Fake::new(QUEUES, BYPASS, 3);
        enable(&mut hw, QUEUES, 100).unwrap();
        assert_eq!(
            hw.log(),
            [
                Ev::Gbpa(BYPASS | ABORT | UPDATE),
                Ev::GbpaDone(BYPASS | ABORT),
                Ev::Cr0(QUEUES | SMMUEN)
            ]
        );
    }

    /// Teardown: GBPA abort before SMMUEN clears, then the queues go.
    #[test]
    fn teardown_aborts_before_smmuen_clears() {
        let mut hw = Fake::new(QUEUES | SMMUEN, BYPASS, 0);
        disable(&mut hw, 100).unwrap();
        assert_eq!(
            hw.log(),
            [
                Ev::Gbpa(BYPASS | ABORT | UPDATE),
                Ev::GbpaDone(BYPASS | ABORT),
                Ev::Cr0(QUEUES),
                Ev::Cr0(0)
            ]
        );
        // Already aborting: no second update.
        let mut hw = Fake::new(QUEUES | SMMUEN, ABORT, 0);
        disable(&mut hw, 100).unwrap();
        assert_eq!(hw.log(), [Ev::Cr0(QUEUES), Ev::Cr0(0)]);
    }

    /// An SMMU firmware left enabled is reset (GBPA abort, then CR0 0 with
    /// CR0ACK awaited), not refused; a disabled one is left as it is.
    #[test]
    fn a_firmware_enabled_smmu_is_reset() {
        let mut hw = Fake::new(QUEUES | SMMUEN, BYPASS, 2);
        assert_eq!(take_over(&mut hw, 100), Ok(true));
        assert_eq!(
            hw.log(),
            [
                Ev::Gbpa(BYPASS | ABORT | UPDATE),
                Ev::GbpaDone(BYPASS | ABORT),
                Ev::Cr0(0)
            ]
        );
        assert_eq!(hw.cr0ack(), 0);
        let mut hw = Fake::new(0, BYPASS, 0);
        assert_eq!(take_over(&mut hw, 100), Ok(false));
        assert_eq!(hw.log(), []);
        let mut hw = Fake::new(QUEUES, BYPASS, 0);
        assert_eq!(take_over(&mut hw, 100), Ok(false));
        assert_eq!(hw.log(), [Ev::Cr0(0)], "queues off, GBPA left");
    }

    /// A GBPA whose update never completes is a typed error after the
    /// bound, and SMMUEN is never set.
    #[test]
    fn a_stuck_gbpa_update_is_bounded() {
        let mut hw = Fake::new(QUEUES, BYPASS, u32::MAX);
        assert_eq!(
            enable(&mut hw, QUEUES, 50),
            Err(SmmuError::GbpaNotUpdated {
                gbpa: BYPASS | ABORT | UPDATE
            })
        );
        assert!(!hw.log().contains(&Ev::Cr0(QUEUES | SMMUEN)));
        // A CR0 that is never acknowledged too.
        struct Deaf(Fake);
        impl ControlHw for Deaf {
            fn cr0(&self) -> u32 {
                self.0.cr0()
            }
            fn set_cr0(&mut self, value: u32) {
                self.0.cr0 = value;
            }
            fn cr0ack(&self) -> u32 {
                self.0.ack
            }
            fn gbpa(&self) -> u32 {
                self.0.gbpa()
            }
            fn set_gbpa(&mut self, value: u32) {
                self.0.set_gbpa(value)
            }
        }
        let mut hw = Deaf(Fake::new(QUEUES | SMMUEN, ABORT, 0));
        assert!(matches!(
            take_over(&mut hw, 50),
            Err(SmmuError::NotAcknowledged { value: 0, .. })
        ));
    }
}
