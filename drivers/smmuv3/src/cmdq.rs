//! The command queue protocol (IHI 0070, 3.5 and 7.1) over [`CmdqHw`]:
//! commands are written at PROD, a CMD_SYNC ends each batch, PROD is
//! published, and the driver waits (bounded) until CONS passes the sync.
//! When the SMMU stops on an error (GERROR.CMDQ_ERR, the reason in
//! CMDQ_CONS.ERR, IHI 0070 7.1), what happens next depends on the reason:
//!
//! - CERROR_ILL (or a reason this driver does not know): the command is
//!   reported with its opcode and replaced by a CMD_SYNC;
//! - CERROR_ABT, an abort on fetching the command: the command itself is
//!   fine and the SMMU fetches it again once the error is acknowledged, so
//!   it is left in place (not replaced as if it were illegal);
//! - CERROR_ATC_INV_SYNC, an ATC invalidation that timed out before the
//!   CMD_SYNC at CONS: that CMD_SYNC is complete, left as it is, and the
//!   timeout reported (a device may still hold stale translations).
//!
//! Then the error is acknowledged through GERRORN and the queue runs on.
use crate::cmd::{Command, CommandError};
use crate::queue::Queue;

/// The registers and memory of one command queue.
pub trait CmdqHw {
    fn read_prod(&self) -> u32;
    fn write_prod(&mut self, prod: u32);
    fn read_cons(&self) -> u32;
    fn write_entry(&mut self, slot: usize, cmd: [u64; 2]);
    fn read_entry(&self, slot: usize) -> [u64; 2];
    /// GERROR.CMDQ_ERR differs from GERRORN.CMDQ_ERR: an error is active.
    fn cmdq_error_active(&self) -> bool;
    /// Toggles GERRORN.CMDQ_ERR to match GERROR (acknowledges the error).
    fn acknowledge_cmdq_error(&mut self);
    /// Called between polls (a short delay, or nothing on the host).
    fn pause(&mut self) {}
    /// Orders the entries written so far before the next register write
    /// (PROD, or GERRORN after a refused entry was replaced).
    fn barrier(&mut self);
}

/// A command the SMMU refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejected {
    pub error: CommandError,
    pub opcode: u8,
    pub entry: [u64; 2],
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CmdqError {
    /// CONS did not pass the sync within the bound.
    Timeout { prod: u32, cons: u32 },
    /// More commands than the queue holds in one batch.
    TooMany { commands: usize, room: u32 },
    /// CMDQ_ERR kept re-asserting: more refusals than the batch has
    /// entries (a replaced entry refused again, or an SMMU stuck in error).
    ErrorStorm { refused: usize },
}

/// What one batch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Commands written, the CMD_SYNC included.
    pub commands: u32,
    pub syncs: u32,
    /// Commands the SMMU refused (each replaced by a CMD_SYNC).
    pub rejected: alloc::vec::Vec<Rejected>,
    /// Command fetches that aborted (CERROR_ABT) and were retried.
    pub fetch_aborts: u32,
    /// CMD_SYNCs that completed with an ATC invalidation timeout
    /// (CERROR_ATC_INV_SYNC).
    pub atc_timeouts: u32,
}

/// Fetch aborts one batch retries beyond one per entry before it calls the
/// error stuck.
const FETCH_RETRIES: usize = 4;

pub struct CommandQueue {
    pub queue: Queue,
    /// Polls before giving up on a batch.
    pub max_polls: u32,
    /// The CMD_SYNC that closes each batch: polled (no signal) by default;
    /// `Command::Sync { msi: Some(..) }` asks for the completion
    /// interrupt (CS = SIG_IRQ).
    pub sync: Command,
    /// Totals since creation, for the per-batch figures.
    pub issued: u64,
    pub synced: u64,
}

impl CommandQueue {
    pub fn new(log2size: u8, max_polls: u32) -> Self {
        CommandQueue {
            queue: Queue { log2size },
            max_polls,
            sync: Command::Sync { msi: None },
            issued: 0,
            synced: 0,
        }
    }

    /// Writes `cmds` and one CMD_SYNC, publishes them, and waits until
    /// the SMMU consumed all of them.
    pub fn submit<H: CmdqHw + ?Sized>(
        &mut self,
        hw: &mut H,
        cmds: &[Command],
    ) -> Result<Report, CmdqError> {
        let mut raw: alloc::vec::Vec<[u64; 2]> = cmds.iter().map(Command::encode).collect();
        raw.push(self.sync.encode());
        self.submit_encoded(hw, &raw)
    }

    /// Like [`CommandQueue::submit`] for entries already encoded (the
    /// last should be a CMD_SYNC): how a test queues a malformed command.
    pub fn submit_encoded<H: CmdqHw + ?Sized>(
        &mut self,
        hw: &mut H,
        entries: &[[u64; 2]],
    ) -> Result<Report, CmdqError> {
        let room = self.queue.entries() - self.queue.used(hw.read_prod(), hw.read_cons());
        if entries.len() as u64 > u64::from(room) {
            return Err(CmdqError::TooMany {
                commands: entries.len(),
                room,
            });
        }
        let mut prod = hw.read_prod();
        for &e in entries {
            hw.write_entry(self.queue.slot(prod), e);
            prod = self.queue.next(prod);
        }
        // The SMMU may read the entries as soon as it sees PROD move.
        hw.barrier();
        hw.write_prod(prod);
        let mut report = Report {
            commands: entries.len() as u32,
            syncs: entries
                .iter()
                .filter(|e| e[0] & 0xff == crate::cmd::CMD_SYNC)
                .count() as u32,
            rejected: alloc::vec::Vec::new(),
            fetch_aborts: 0,
            atc_timeouts: 0,
        };
        self.issued += u64::from(report.commands);
        self.synced += u64::from(report.syncs);
        let mut polls = 0;
        loop {
            let cons = hw.read_cons();
            if hw.cmdq_error_active() {
                // Each entry can be refused once (its replacement, a
                // CMD_SYNC, cannot be), a few fetches may abort. More
                // errors than that: the error re-asserts, and looping on
                // would never end.
                let errors = report.rejected.len()
                    + report.fetch_aborts as usize
                    + report.atc_timeouts as usize;
                if errors >= entries.len() + FETCH_RETRIES.min(report.fetch_aborts as usize) {
                    return Err(CmdqError::ErrorStorm { refused: errors });
                }
                let slot = self.queue.slot(cons);
                match CommandError::from_cons(cons) {
                    // Nothing wrong with the command: the SMMU fetches it
                    // again after the acknowledgement.
                    CommandError::Abort => report.fetch_aborts += 1,
                    // The CMD_SYNC at CONS is complete; its ATC
                    // invalidations are not.
                    CommandError::AtcInvalidationSync => report.atc_timeouts += 1,
                    error => {
                        // CONS names the refused command: report it, put a
                        // harmless CMD_SYNC in its place.
                        let entry = hw.read_entry(slot);
                        report.rejected.push(Rejected {
                            error,
                            opcode: entry[0] as u8,
                            entry,
                        });
                        hw.write_entry(slot, Command::Sync { msi: None }.encode());
                    }
                }
                // The replacement before the acknowledgement that restarts
                // the queue at it.
                hw.barrier();
                hw.acknowledge_cmdq_error();
                continue;
            }
            if self.queue.used(prod, cons) == 0 {
                return Ok(report);
            }
            polls += 1;
            if polls > self.max_polls {
                return Err(CmdqError::Timeout { prod, cons });
            }
            hw.pause();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    /// An SMMU that consumes commands `per_poll` at a time, refusing
    /// opcode 0xff as CERROR_ILL, failing the first fetch of opcode 0xfe
    /// (CERROR_ABT), and timing out the ATC invalidations (CMD_ATC_INV,
    /// 0x40) a CMD_SYNC waits for (CERROR_ATC_INV_SYNC).
    struct Fake {
        q: Queue,
        mem: Vec<[u64; 2]>,
        prod: u32,
        cons: u32,
        err: bool,
        per_poll: u32,
        seen: Vec<u8>,
        stuck: bool,
        /// Entries written since the last barrier, and register writes
        /// that came while there were any.
        unordered: bool,
        misordered: u32,
        /// Fetches of 0xfe that aborted so far.
        fetch_aborts: u32,
        /// An ATC invalidation consumed since the last CMD_SYNC.
        atc_pending: bool,
        /// The error raised: the acknowledgement of an ATC timeout moves
        /// past the completed CMD_SYNC.
        code: u32,
    }

    impl Fake {
        fn new(log2: u8, per_poll: u32) -> Fake {
            Fake {
                q: Queue { log2size: log2 },
                mem: vec![[0; 2]; 1 << log2],
                prod: 0,
                cons: 0,
                err: false,
                per_poll,
                seen: Vec::new(),
                stuck: false,
                unordered: false,
                misordered: 0,
                fetch_aborts: 0,
                atc_pending: false,
                code: 0,
            }
        }

        fn raise(&mut self, code: u32) {
            self.err = true;
            self.code = code;
            self.cons = (self.cons & 0x00ff_ffff) | (code << 24);
        }

        fn consume(&mut self) {
            for _ in 0..self.per_poll {
                if self.err || self.stuck || self.q.used(self.prod, self.cons) == 0 {
                    return;
                }
                let e = self.mem[self.q.slot(self.cons)];
                match e[0] as u8 {
                    0xff => return self.raise(1),
                    0xfe if self.fetch_aborts == 0 => {
                        self.fetch_aborts += 1;
                        return self.raise(2);
                    }
                    0x40 => self.atc_pending = true,
                    0x46 if self.atc_pending => {
                        self.atc_pending = false;
                        self.seen.push(0x46);
                        return self.raise(3);
                    }
                    _ => {}
                }
                self.seen.push(e[0] as u8);
                self.cons = self.q.next(self.cons & 0x00ff_ffff);
            }
        }
    }

    impl CmdqHw for Fake {
        fn read_prod(&self) -> u32 {
            self.prod
        }
        fn write_prod(&mut self, prod: u32) {
            self.misordered += u32::from(self.unordered);
            self.prod = prod;
        }
        fn read_cons(&self) -> u32 {
            self.cons
        }
        fn write_entry(&mut self, slot: usize, cmd: [u64; 2]) {
            self.unordered = true;
            self.mem[slot] = cmd;
        }
        fn read_entry(&self, slot: usize) -> [u64; 2] {
            self.mem[slot]
        }
        fn cmdq_error_active(&self) -> bool {
            self.err
        }
        fn acknowledge_cmdq_error(&mut self) {
            self.misordered += u32::from(self.unordered);
            self.err = false;
            self.cons &= 0x00ff_ffff;
            if self.code == 3 {
                self.cons = self.q.next(self.cons);
            }
            self.code = 0;
        }
        fn pause(&mut self) {
            self.consume();
        }
        fn barrier(&mut self) {
            self.unordered = false;
        }
    }

    /// An SMMU whose CMDQ_ERR re-asserts after every acknowledgement ends
    /// the batch with an error instead of looping forever (issue 13,
    /// point 7).
    #[test]
    fn a_reasserting_error_is_bounded() {
        struct Stuck(Fake);
        impl CmdqHw for Stuck {
            fn read_prod(&self) -> u32 {
                self.0.read_prod()
            }
            fn write_prod(&mut self, prod: u32) {
                self.0.write_prod(prod)
            }
            fn read_cons(&self) -> u32 {
                self.0.read_cons()
            }
            fn write_entry(&mut self, slot: usize, cmd: [u64; 2]) {
                self.0.write_entry(slot, cmd)
            }
            fn read_entry(&self, slot: usize) -> [u64; 2] {
                self.0.read_entry(slot)
            }
            fn cmdq_error_active(&self) -> bool {
                true
            }
            fn acknowledge_cmdq_error(&mut self) {}
            fn barrier(&mut self) {}
        }
        let mut hw = Stuck(Fake::new(3, 1));
        let mut q = CommandQueue::new(3, 100);
        let r = q.submit(&mut hw, &[Command::CfgiAll]);
        assert_eq!(r, Err(CmdqError::ErrorStorm { refused: 2 }));
    }

    /// Entries are ordered before the PROD write that publishes them, and
    /// a refused entry's replacement before the GERRORN write that
    /// restarts the queue (issue 13, points 3, 7 and 11).
    #[test]
    fn entries_are_ordered_before_prod_and_gerrorn() {
        let mut hw = Fake::new(3, 4);
        let mut q = CommandQueue::new(3, 100);
        let sync = Command::Sync { msi: None }.encode();
        let r = q
            .submit_encoded(&mut hw, &[[0x11, 0], [0xff, 0], [0x12, 0], sync])
            .unwrap();
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(hw.misordered, 0, "a register write before a barrier");
    }

    /// An abort on fetching a command (CERROR_ABT) is no refusal: the
    /// command stays in place, the SMMU fetches it again after the
    /// acknowledgement, and it runs (issue 13, point 7).
    #[test]
    fn a_fetch_abort_refetches_the_command() {
        let mut hw = Fake::new(3, 8);
        let mut q = CommandQueue::new(3, 100);
        let sync = Command::Sync { msi: None }.encode();
        let r = q
            .submit_encoded(&mut hw, &[[0x11, 0], [0xfe, 0], [0x12, 0], sync])
            .unwrap();
        assert_eq!(r.fetch_aborts, 1);
        assert!(r.rejected.is_empty(), "not refused: {:?}", r.rejected);
        assert_eq!(hw.seen, [0x11, 0xfe, 0x12, 0x46], "run after the retry");
        assert_eq!(hw.misordered, 0);
    }

    /// A CMD_SYNC whose ATC invalidations timed out (CERROR_ATC_INV_SYNC)
    /// is complete: it is left as it is, the queue runs on after it, and
    /// the timeout is reported, not taken for an illegal command.
    #[test]
    fn an_atc_sync_timeout_completes_the_sync_and_is_reported() {
        let mut hw = Fake::new(3, 8);
        let mut q = CommandQueue::new(3, 100);
        let r = q
            .submit(&mut hw, &[Command::TlbiNhAsid { asid: 1, vmid: 0 }])
            .unwrap();
        assert_eq!(r.atc_timeouts, 0);
        let sync = Command::Sync { msi: None }.encode();
        let r = q
            .submit_encoded(&mut hw, &[[0x40, 0], sync, [0x12, 0], sync])
            .unwrap();
        assert_eq!(r.atc_timeouts, 1);
        assert!(r.rejected.is_empty(), "not refused: {:?}", r.rejected);
        assert_eq!(hw.seen[2..], [0x40, 0x46, 0x12, 0x46]);
        assert_eq!(hw.mem[3], sync, "the completed CMD_SYNC is left alone");
    }

    #[test]
    fn a_batch_ends_with_one_sync() {
        let mut hw = Fake::new(3, 2);
        let mut q = CommandQueue::new(3, 100);
        let r = q
            .submit(
                &mut hw,
                &[
                    Command::CfgiSte { sid: 1, leaf: true },
                    Command::TlbiNhAsid { asid: 1, vmid: 0 },
                ],
            )
            .unwrap();
        assert_eq!((r.commands, r.syncs), (3, 1));
        assert_eq!(hw.seen, [0x03, 0x11, 0x46]);
        // Around the ring several times: indexes wrap.
        for k in 0..10 {
            q.submit(&mut hw, &[Command::CfgiCdAll { sid: k }]).unwrap();
        }
        assert_eq!(hw.seen.len(), 3 + 20);
        assert_eq!((q.issued, q.synced), (23, 11));
    }

    #[test]
    fn an_illegal_command_is_reported_skipped_and_the_rest_runs() {
        let mut hw = Fake::new(3, 8);
        let mut q = CommandQueue::new(3, 100);
        // An opcode the fake refuses, already queued ahead of the batch.
        hw.write_entry(0, [0xff, 0]);
        hw.prod = 1;
        let r = q
            .submit(
                &mut hw,
                &[Command::CfgiSte {
                    sid: 2,
                    leaf: false,
                }],
            )
            .unwrap();
        assert_eq!(r.rejected.len(), 1);
        assert_eq!(r.rejected[0].error, CommandError::Illegal);
        assert_eq!(r.rejected[0].opcode, 0xff);
        assert_eq!(
            hw.seen,
            [0x46, 0x03, 0x46],
            "replaced by a sync, then the batch"
        );
    }

    #[test]
    fn bounded_wait_and_room() {
        let mut hw = Fake::new(2, 1);
        hw.stuck = true;
        let mut q = CommandQueue::new(2, 5);
        assert!(matches!(
            q.submit(&mut hw, &[]),
            Err(CmdqError::Timeout { .. })
        ));
        let mut hw = Fake::new(2, 1);
        let cmds = [Command::TlbiNsnhAll; 4];
        assert_eq!(
            q.submit(&mut hw, &cmds),
            Err(CmdqError::TooMany {
                commands: 5,
                room: 4
            })
        );
    }
}
