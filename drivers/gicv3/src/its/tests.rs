//! Unit tests of the ITS: layouts, encodings, ring and table arithmetic, and the
//! driver on a fake register frame; `Arena` is the fake RAM the lib tests share.

extern crate std;
use super::*;
use crate::GicError;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::vec;
use std::vec::Vec;

// Command field positions (IHI0069 5.3, "ITS command descriptions"):
//   DW0 [7:0] command number, DW0 [63:32] DeviceID,
//   DW1 [31:0] EventID, DW1 [63:32] pINTID, DW1 [4:0] MAPD Size,
//   DW2 [15:0] ICID, DW2 [51:16] RDbase, DW2 [51:8] ITT_addr, DW2 [63] V,
//   DW3 [51:16] RDbase2 (MOVALL).
// Numbers: MOVI 0x01, INT 0x03, CLEAR 0x04, SYNC 0x05, MAPD 0x08,
// MAPC 0x09, MAPTI 0x0A, MAPI 0x0B, INV 0x0C, INVALL 0x0D, MOVALL 0x0E,
// DISCARD 0x0F.
const V: u64 = 1 << 63;

#[test]
fn layout() {
    assert_eq!(core::mem::size_of::<GitsRegs>(), 0x20000);
    assert_eq!(core::mem::offset_of!(GitsRegs, translater), 0x10040);
    assert_eq!(core::mem::offset_of!(GitsRegs, baser), 0x100);
    assert_eq!(core::mem::offset_of!(GitsRegs, creadr), 0x90);
}

#[test]
fn encode_mapd() {
    let c = ItsCommand::Mapd {
        device_id: 0x1234_5678,
        itt_addr: 0x8_1234_5600,
        size_bits: 5,
        valid: true,
    };
    assert_eq!(c.encode(), [0x1234_5678_0000_0008, 4, V | 0x8_1234_5600, 0]);
    // Unmap: V clear, ITT ignored.
    let c = ItsCommand::Mapd {
        device_id: 1,
        itt_addr: 0,
        size_bits: 0,
        valid: false,
    };
    assert_eq!(c.encode(), [(1 << 32) | 0x08, 0, 0, 0]);
    // ITT_addr holds bits [51:8] only: bits 52+ and 7:0 are dropped.
    let c = ItsCommand::Mapd {
        device_id: 0,
        itt_addr: (1 << 52) | 0xff,
        size_bits: 1,
        valid: false,
    };
    assert_eq!(c.encode()[2], 0);
}

#[test]
fn encode_mapc_and_sync() {
    let c = ItsCommand::Mapc {
        collection: 3,
        target: RdBase::Processor(2),
        valid: true,
    };
    assert_eq!(c.encode(), [0x09, 0, V | (2 << 16) | 3, 0]);
    // PTA = 1: RDbase is address bits [51:16], in place.
    let c = ItsCommand::Mapc {
        collection: 0xffff,
        target: RdBase::Address(0x000f_0808_00a0_0000),
        valid: false,
    };
    assert_eq!(c.encode(), [0x09, 0, 0x000f_0808_00a0_0000 | 0xffff, 0]);
    let c = ItsCommand::Sync {
        target: RdBase::Processor(0x1234),
    };
    assert_eq!(c.encode(), [0x05, 0, 0x1234 << 16, 0]);
    let c = ItsCommand::Movall {
        from: RdBase::Processor(1),
        to: RdBase::Address(0x80a_0000),
    };
    assert_eq!(c.encode(), [0x0e, 0, 1 << 16, 0x80a_0000]);
}

#[test]
fn encode_event_commands() {
    let dw0 = |op: u64| (0xabcd_ef01u64 << 32) | op;
    let c = ItsCommand::Mapti {
        device_id: 0xabcd_ef01,
        event_id: 0x8765_4321,
        intid: 8192 + 5,
        collection: 0x4321,
    };
    assert_eq!(
        c.encode(),
        [dw0(0x0a), (8197 << 32) | 0x8765_4321, 0x4321, 0]
    );
    let c = ItsCommand::Mapi {
        device_id: 0xabcd_ef01,
        event_id: 9,
        collection: 1,
    };
    assert_eq!(c.encode(), [dw0(0x0b), 9, 1, 0]);
    let c = ItsCommand::Movi {
        device_id: 0xabcd_ef01,
        event_id: 9,
        collection: 7,
    };
    assert_eq!(c.encode(), [dw0(0x01), 9, 7, 0]);
    for (op, c) in [
        (
            0x0c,
            ItsCommand::Inv {
                device_id: 0xabcd_ef01,
                event_id: 0xffff_ffff,
            },
        ),
        (
            0x0f,
            ItsCommand::Discard {
                device_id: 0xabcd_ef01,
                event_id: 0xffff_ffff,
            },
        ),
        (
            0x03,
            ItsCommand::Int {
                device_id: 0xabcd_ef01,
                event_id: 0xffff_ffff,
            },
        ),
        (
            0x04,
            ItsCommand::Clear {
                device_id: 0xabcd_ef01,
                event_id: 0xffff_ffff,
            },
        ),
    ] {
        assert_eq!(c.encode(), [dw0(op), 0xffff_ffff, 0, 0], "{}", c.name());
    }
    let c = ItsCommand::Invall { collection: 0xbeef };
    assert_eq!(c.encode(), [0x0d, 0, 0xbeef, 0]);
}

fn limits() -> CommandLimits {
    CommandLimits {
        device_id_bits: 16,
        event_id_bits: 16,
        collections: 4,
        lpi_id_bits: 16,
        pta: false,
    }
}

#[test]
fn check_rejects_out_of_range() {
    let l = limits();
    let bad = |kind, id| Err(ItsError::BadId { kind, id });
    let mapti = |device_id, event_id, intid, collection| ItsCommand::Mapti {
        device_id,
        event_id,
        intid,
        collection,
    };
    assert_eq!(mapti(0xffff, 0xffff, 8192, 3).check(&l), Ok(()));
    assert_eq!(
        mapti(0x1_0000, 0, 8192, 0).check(&l),
        bad(IdKind::Device, 0x1_0000)
    );
    assert_eq!(
        mapti(0, 0x1_0000, 8192, 0).check(&l),
        bad(IdKind::Event, 0x1_0000)
    );
    assert_eq!(mapti(0, 0, 8191, 0).check(&l), bad(IdKind::Lpi, 8191));
    assert_eq!(
        mapti(0, 0, 0x1_0000, 0).check(&l),
        bad(IdKind::Lpi, 0x1_0000)
    );
    assert_eq!(mapti(0, 0, 8192, 4).check(&l), bad(IdKind::Collection, 4));
    // MAPI's LPI is the EventID.
    let mapi = ItsCommand::Mapi {
        device_id: 0,
        event_id: 5,
        collection: 0,
    };
    assert_eq!(mapi.check(&l), bad(IdKind::Lpi, 5));
    let mapd = |itt_addr, size_bits| ItsCommand::Mapd {
        device_id: 0,
        itt_addr,
        size_bits,
        valid: true,
    };
    assert_eq!(mapd(0x4000_0100, 16).check(&l), Ok(()));
    assert_eq!(
        mapd(0x4000_0080, 1).check(&l),
        Err(ItsError::Misaligned {
            addr: 0x4000_0080,
            align: 256
        })
    );
    assert_eq!(mapd(0x4000_0000, 17).check(&l), bad(IdKind::EventCount, 17));
    assert_eq!(mapd(0x4000_0000, 0).check(&l), bad(IdKind::EventCount, 0));
    // PTA decides the target form.
    let sync = |target| ItsCommand::Sync { target };
    assert_eq!(sync(RdBase::Processor(0)).check(&l), Ok(()));
    assert_eq!(
        sync(RdBase::Address(0x80a_0000)).check(&l),
        Err(ItsError::BadTarget)
    );
    let pta = CommandLimits { pta: true, ..l };
    assert_eq!(sync(RdBase::Address(0x80a_0000)).check(&pta), Ok(()));
    assert_eq!(
        sync(RdBase::Address(0x80a_8000)).check(&pta),
        Err(ItsError::BadTarget)
    );
    assert_eq!(
        sync(RdBase::Processor(0)).check(&pta),
        Err(ItsError::BadTarget)
    );
}

#[test]
fn ring_wraps_and_fills() {
    assert!(CommandRing::new(0, 0).is_none());
    assert!(CommandRing::new(0, 0x1800).is_none());
    assert!(CommandRing::new(0, 0x10_1000).is_none());
    let mut r = CommandRing::new(0x4000_0000, 0x1000).unwrap();
    assert_eq!(r.slots(), 128);
    // Empty ring: 127 usable slots (one stays empty).
    assert_eq!(r.free(0), 127);
    for i in 0..127 {
        assert_eq!(r.push(0), Some(i * 32));
    }
    assert!(r.is_full(0));
    assert_eq!(r.push(0), None);
    assert_eq!(r.write_offset(), 127 * 32);
    assert_eq!(r.pending(0), 127);
    // The ITS consumed 3 entries: 3 slots free, and the write wraps.
    assert_eq!(r.free(3 * 32), 3);
    assert_eq!(r.push(3 * 32), Some(127 * 32));
    assert_eq!(r.write_offset(), 0);
    assert_eq!(r.push(3 * 32), Some(0));
    assert_eq!(r.push(3 * 32), Some(32));
    assert_eq!(r.push(3 * 32), None);
    assert_eq!(r.pending(3 * 32), 127);
    // Everything consumed.
    assert_eq!(r.pending(64), 0);
    assert_eq!(r.free(64), 127);
}

#[test]
fn baser_composition() {
    // Read-only fields of a device BASER: Type = 1 (bits [58:56]),
    // Entry_Size = 8 - 1 (bits [52:48]); some junk in writable bits.
    let cur = (1 << 56) | (7 << 48) | 0xfff;
    let v = baser_value(cur, 0x4012_0000, PageSize::Size64K, 8, true, true);
    let expect = V                       // Valid
        | (0b111 << 59)                  // InnerCache RaWaWb
        | (1 << 56)                      // Type (kept)
        | (7 << 48)                      // Entry_Size (kept)
        | 0x4012_0000                    // PA bits [47:16] in place
        | (0b01 << 10)                   // Inner shareable
        | (0b10 << 8)                    // Page_Size 64K
        | 7; // Size = pages - 1
    assert_eq!(v, expect);
    // 64 KiB pages: PA bits [51:48] go to register bits [15:12].
    let v = baser_value(0, 0x000a_0000_1234_0000, PageSize::Size64K, 1, true, false);
    assert_eq!(v & 0x0000_ffff_ffff_f000, 0x1234_0000 | (0xa << 12));
    // 4 KiB pages, non-coherent fallback: non-cacheable, non-shareable.
    let v = baser_value(0, 0x4012_3000, PageSize::Size4K, 256, false, true);
    assert_eq!(v, V | (0b001 << 59) | 0x4012_3000 | 255);
    let v = baser_value(0, 0x4012_4000, PageSize::Size16K, 2, true, true);
    assert_eq!(
        v,
        V | (0b111 << 59) | 0x4012_4000 | (0b01 << 10) | (0b01 << 8) | 1
    );
}

#[test]
fn cbaser_and_lpi_bases() {
    // GITS_CBASER: Valid 63, InnerCache [61:59], PA [51:12], Sh [11:10],
    // Size [7:0] = 4 KiB pages - 1.
    assert_eq!(
        cbaser_value(0x4001_0000, 0x1_0000, true),
        V | (0b111 << 59) | 0x4001_0000 | (1 << 10) | 15
    );
    // GICR_PROPBASER: OuterCache [58:56], PA [51:12], Sh [11:10],
    // InnerCache [9:7], IDbits [4:0] = INTID bits - 1.
    assert_eq!(
        propbaser_value(0x4020_3000, 16, true),
        0x4020_3000 | (1 << 10) | (0b111 << 7) | 15
    );
    assert_eq!(
        propbaser_value(0x4020_3000, 16, false),
        0x4020_3000 | (0b001 << 7) | 15
    );
    // GICR_PENDBASER: PTZ 62, PA [51:16], Sh [11:10], InnerCache [9:7].
    assert_eq!(
        pendbaser_value(0x4030_0000, true),
        (1 << 62) | 0x4030_0000 | (1 << 10) | (0b111 << 7)
    );
}

#[test]
fn page_size_negotiation() {
    // Register that keeps whatever it is given.
    assert_eq!(negotiate_page_size(Some), Some(PageSize::Size64K));
    // Fixed at 4 KiB.
    assert_eq!(
        negotiate_page_size(|_| Some(PageSize::Size4K)),
        Some(PageSize::Size4K)
    );
    // Accepts 16 KiB and 4 KiB, reads 64 KiB back as 16 KiB.
    let mut tried = Vec::new();
    let got = negotiate_page_size(|p| {
        tried.push(p);
        Some(if p == PageSize::Size64K {
            PageSize::Size16K
        } else {
            p
        })
    });
    assert_eq!(got, Some(PageSize::Size16K));
    assert_eq!(tried, [PageSize::Size64K, PageSize::Size16K]);
    // Reads back the reserved encoding: nothing accepted.
    assert_eq!(negotiate_page_size(|_| None), None);
}

#[test]
fn table_sizes() {
    assert_eq!(table_pages(1 << 16, 8, PageSize::Size64K), Some(8));
    assert_eq!(table_pages(1, 8, PageSize::Size64K), Some(1));
    assert_eq!(table_pages(1 << 21, 8, PageSize::Size64K), Some(256));
    assert_eq!(table_pages(1 << 22, 8, PageSize::Size64K), None);
    assert_eq!(table_pages(1 << 16, 8, PageSize::Size4K), Some(128));
    assert_eq!(table_pages(u64::MAX, 8, PageSize::Size4K), None);
}

#[test]
fn itt_sizes() {
    let l = |n, esz, max| itt_layout(n, esz, max);
    // QEMU's ITT entries are 12 bytes.
    assert_eq!(
        l(1, 12, 16),
        Ok(IttLayout {
            event_bits: 1,
            bytes: 256
        })
    );
    assert_eq!(
        l(2, 12, 16),
        Ok(IttLayout {
            event_bits: 1,
            bytes: 256
        })
    );
    assert_eq!(
        l(32, 12, 16),
        Ok(IttLayout {
            event_bits: 5,
            bytes: 512
        })
    );
    assert_eq!(
        l(33, 12, 16),
        Ok(IttLayout {
            event_bits: 6,
            bytes: 768
        })
    );
    assert_eq!(
        l(1 << 16, 8, 16),
        Ok(IttLayout {
            event_bits: 16,
            bytes: 1 << 19
        })
    );
    let bad = |id| {
        Err(ItsError::BadId {
            kind: IdKind::EventCount,
            id,
        })
    };
    assert_eq!(l(0, 8, 16), bad(0));
    assert_eq!(l((1 << 16) + 1, 8, 16), bad((1 << 16) + 1));
}

#[test]
fn lpi_config_bytes() {
    // Priority [7:2], bit 1 RES1, Enable bit 0.
    assert_eq!(lpi_config_byte(0xa0, true), 0xa3);
    assert_eq!(lpi_config_byte(0xa0, false), 0xa2);
    assert_eq!(lpi_config_byte(0xff, false), 0xfe);
    assert_eq!(lpi_config_byte(0x01, true), 0x03);
    assert_eq!(lpi_config_table_bytes(14), 8192);
    assert_eq!(lpi_config_table_bytes(16), 57344);
    assert_eq!(lpi_pending_table_bytes(16), 0x1_0000);
    assert_eq!(lpi_pending_table_bytes(20), 0x2_0000);
}

#[test]
fn info_from_typer() {
    // QEMU: Physical, ITT_entry_size 12-1, IDbits 16-1, Devbits 16-1,
    // CIL, CIDbits 16-1.
    let typer = 1 | (11 << 4) | (15 << 8) | (15 << 13) | (15 << 32) | (1 << 36);
    let i = ItsInfo::from_regs(typer, 0x43b);
    assert_eq!(
        i,
        ItsInfo {
            iidr: 0x43b,
            physical: true,
            virtual_lpis: false,
            itt_entry_size: 12,
            event_id_bits: 16,
            device_id_bits: 16,
            collection_id_bits: 16,
            pta: false,
            hcc: 0,
        }
    );
    // PTA (bit 19), HCC [31:24], Devbits 32, no CIL: 16-bit ICIDs.
    let i = ItsInfo::from_regs((1 << 19) | (4 << 24) | (31 << 13) | (7 << 4), 0);
    assert!(i.pta && !i.physical);
    assert_eq!((i.hcc, i.device_id_bits, i.collection_id_bits), (4, 32, 16));
    assert_eq!(i.itt_entry_size, 8);
}

/// Memory for tests: physical addresses are an offset into a 64 KiB
/// aligned buffer plus a fake RAM base, so phys != virt.
pub(crate) struct Arena {
    _buf: Vec<u8>,
    base: usize,
    size: usize,
    used: usize,
}

pub(crate) const FAKE_RAM: u64 = 0x8000_0000;

impl Arena {
    pub(crate) fn new(size: usize) -> Self {
        let mut buf = vec![0u8; size + 0x1_0000];
        let base = (buf.as_mut_ptr() as usize).next_multiple_of(0x1_0000);
        Arena {
            _buf: buf,
            base,
            size,
            used: 0,
        }
    }
    pub(crate) fn virt(&self, phys: u64) -> *mut u8 {
        (self.base + (phys - FAKE_RAM) as usize) as *mut u8
    }
}

impl ItsMemory for Arena {
    fn alloc_zeroed(&mut self, bytes: usize, align: usize) -> Option<(u64, *mut u8)> {
        let off = self.used.next_multiple_of(align);
        if off + bytes > self.size {
            return None;
        }
        self.used = off + bytes;
        Some((FAKE_RAM + off as u64, (self.base + off) as *mut u8))
    }
}

/// A register frame in plain memory, preset like QEMU's ITS.
struct FakeIts {
    regs: Vec<u64>,
}

impl FakeIts {
    fn new() -> Self {
        let mut f = FakeIts {
            regs: vec![0; 0x20000 / 8],
        };
        f.set(0x0, 1 << 31); // CTLR.Quiescent
        f.set(
            0x8,
            1 | (11 << 4) | (15 << 8) | (15 << 13) | (15 << 32) | (1 << 36),
        );
        f.set(0x100, (1 << 56) | (7 << 48) | (2 << 8)); // devices, 8 bytes
        f.set(0x108, (4 << 56) | (7 << 48) | (2 << 8)); // collections
        f
    }
    fn base(&mut self) -> usize {
        self.regs.as_mut_ptr() as usize
    }
    fn set(&mut self, off: usize, v: u64) {
        self.regs[off / 8] = v;
    }
    fn get(&self, off: usize) -> u64 {
        // SAFETY: inside the buffer; volatile because the driver wrote it
        // through a raw pointer.
        unsafe { self.regs.as_ptr().add(off / 8).read_volatile() }
    }
}

fn ready_its(fake: &mut FakeIts, mem: &mut Arena, queue_bytes: usize) -> Its {
    // SAFETY: the fake frame is 128 KiB of memory owned by the test.
    let mut its = unsafe { Its::new(fake.base(), 0x0808_0000) };
    let cfg = ItsConfig {
        queue_bytes,
        ..ItsConfig::default()
    };
    its.init_with(mem, &cfg).unwrap();
    its
}

#[test]
fn init_programs_queue_and_tables() {
    let mut fake = FakeIts::new();
    let mut mem = Arena::new(4 << 20);
    let its = ready_its(&mut fake, &mut mem, DEFAULT_QUEUE_BYTES);
    assert_eq!(its.translater_phys(), 0x0809_0040);
    assert_eq!(its.doorbell_page_phys(), 0x0809_0000);
    assert_eq!(fake.get(0x0) & 1, 1, "enabled");
    // Queue first (64 KiB at the arena start), CWRITER reset.
    assert_eq!(fake.get(0x80), cbaser_value(FAKE_RAM, 0x1_0000, true));
    assert_eq!(fake.get(0x88), 0);
    // Device table: 2^16 entries of 8 bytes in 8 pages of 64 KiB.
    let b0 = fake.get(0x100);
    assert_eq!(
        b0,
        baser_value(b0, FAKE_RAM + 0x1_0000, PageSize::Size64K, 8, true, true)
    );
    // Collection table: 64 collections fit one page.
    let b1 = fake.get(0x108);
    assert_eq!(
        b1,
        baser_value(b1, FAKE_RAM + 0x9_0000, PageSize::Size64K, 1, true, true)
    );
    assert_eq!(fake.get(0x110) >> 63, 0, "unimplemented BASER left invalid");
    let l = its.limits().unwrap();
    assert_eq!(
        (l.device_id_bits, l.event_id_bits, l.collections),
        (16, 16, 64)
    );
    assert_eq!(its.coherent(), Some(true));
}

#[test]
fn init_needs_quiescent_and_device_table() {
    let mut fake = FakeIts::new();
    fake.set(0x0, 0);
    let mut mem = Arena::new(4 << 20);
    // SAFETY: fake frame owned by the test.
    let mut its = unsafe { Its::new(fake.base(), 0) };
    assert_eq!(its.init(&mut mem), Err(ItsError::NotQuiescent));
    let mut fake = FakeIts::new();
    fake.set(0x100, 0);
    // SAFETY: as above.
    let mut its = unsafe { Its::new(fake.base(), 0) };
    assert_eq!(its.init(&mut mem), Err(ItsError::NoDeviceTable));
    assert_eq!(its.submit(&[]), Err(ItsError::NotInitialised));
    // No memory for the queue.
    let mut fake = FakeIts::new();
    let mut tiny = Arena::new(0x1000);
    // SAFETY: as above.
    let mut its = unsafe { Its::new(fake.base(), 0) };
    assert_eq!(its.init(&mut tiny), Err(ItsError::NoMemory));
}

#[test]
fn submit_times_out_naming_the_command() {
    let mut fake = FakeIts::new();
    let mut mem = Arena::new(4 << 20);
    let mut its = ready_its(&mut fake, &mut mem, DEFAULT_QUEUE_BYTES);
    // Nobody advances CREADR.
    let r = its.map_collection(1, RdBase::Processor(0));
    assert_eq!(r, Err(ItsError::CommandTimeout { cmd: "MAPC" }));
    // MAPC, INVALL and the trailing SYNC to the collection's target.
    assert_eq!(fake.get(0x88), 3 * 32);
    let q = mem.virt(FAKE_RAM) as *const u64;
    // SAFETY: the queue is the first 64 KiB of the arena.
    let slot = |i: usize| unsafe { [0, 1, 2, 3].map(|k| q.add(i * 4 + k).read_volatile()) };
    assert_eq!(slot(0), [0x09, 0, V | 1, 0]);
    assert_eq!(slot(1), [0x0d, 0, 1, 0]);
    assert_eq!(slot(2), [0x05, 0, 0, 0]);
    // Out-of-range commands are refused before anything is queued.
    let r = its.map_interrupt(0, 0, 100, 0);
    assert_eq!(
        r,
        Err(ItsError::BadId {
            kind: IdKind::Lpi,
            id: 100
        })
    );
    assert_eq!(fake.get(0x88), 3 * 32);
}

#[test]
fn stalled_queue_is_reported() {
    let mut fake = FakeIts::new();
    let mut mem = Arena::new(4 << 20);
    let mut its = ready_its(&mut fake, &mut mem, DEFAULT_QUEUE_BYTES);
    fake.set(0x90, 1); // CREADR.Stalled at offset 0
    let r = its.submit(&[ItsCommand::Invall { collection: 0 }]);
    assert_eq!(r, Err(ItsError::QueueStalled { cmd: "INVALL" }));
}

/// A thread that consumes commands like the ITS: copies each entry
/// between CREADR and CWRITER out of the queue, then advances CREADR.
fn consumer(
    regs: usize,
    queue: usize,
    size: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<[u64; 4]>> {
    std::thread::spawn(move || {
        // SAFETY: the fake frame outlives the thread (joined before drop).
        let cwriter = unsafe { &*((regs + 0x88) as *const AtomicU64) };
        // SAFETY: as above.
        let creadr = unsafe { &*((regs + 0x90) as *const AtomicU64) };
        let mut seen = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            let w = cwriter.load(Ordering::SeqCst) as usize;
            let mut rd = creadr.load(Ordering::SeqCst) as usize;
            while rd != w {
                let p = (queue + rd) as *const u64;
                // SAFETY: rd < size, inside the queue.
                seen.push(unsafe { [0, 1, 2, 3].map(|k| p.add(k).read_volatile()) });
                rd = (rd + 32) % size;
                creadr.store(rd as u64, Ordering::SeqCst);
            }
            std::thread::yield_now();
        }
        seen
    })
}

#[test]
fn submit_wraps_and_waits_for_room() {
    let mut fake = FakeIts::new();
    let mut mem = Arena::new(4 << 20);
    // A 4 KiB queue: 127 usable slots, so 300 commands must wrap and
    // wait for the consumer more than once.
    let mut its = ready_its(&mut fake, &mut mem, 0x1000);
    let stop = Arc::new(AtomicBool::new(false));
    let t = consumer(
        fake.base(),
        mem.virt(FAKE_RAM) as usize,
        0x1000,
        stop.clone(),
    );
    its.map_collection(0, RdBase::Processor(0)).unwrap();
    let dev = its.map_device(7, 32, &mut mem).unwrap();
    assert_eq!(dev.event_bits, 5);
    assert_eq!(dev.itt_phys % 256, 0);
    let cmds: Vec<ItsCommand> = (0..300)
        .map(|e| ItsCommand::Mapti {
            device_id: 7,
            event_id: e,
            intid: 8192 + e,
            collection: 0,
        })
        .collect();
    its.submit(&cmds).unwrap();
    stop.store(true, Ordering::SeqCst);
    let seen = t.join().unwrap();
    let mut expect = vec![
        ItsCommand::Mapc {
            collection: 0,
            target: RdBase::Processor(0),
            valid: true,
        }
        .encode(),
        ItsCommand::Invall { collection: 0 }.encode(),
        ItsCommand::Sync {
            target: RdBase::Processor(0),
        }
        .encode(),
        ItsCommand::Mapd {
            device_id: 7,
            itt_addr: dev.itt_phys,
            size_bits: 5,
            valid: true,
        }
        .encode(),
        ItsCommand::Sync {
            target: RdBase::Processor(0),
        }
        .encode(),
    ];
    expect.extend(cmds.iter().map(|c| c.encode()));
    expect.push(
        ItsCommand::Sync {
            target: RdBase::Processor(0),
        }
        .encode(),
    );
    assert_eq!(seen, expect);
}

#[test]
fn empty_batch_is_a_sync_and_unmap_forgets_target() {
    let mut fake = FakeIts::new();
    let mut mem = Arena::new(4 << 20);
    let mut its = ready_its(&mut fake, &mut mem, 0x1000);
    let stop = Arc::new(AtomicBool::new(false));
    let t = consumer(
        fake.base(),
        mem.virt(FAKE_RAM) as usize,
        0x1000,
        stop.clone(),
    );
    its.submit(&[]).unwrap();
    its.map_collection(2, RdBase::Processor(5)).unwrap();
    its.submit(&[ItsCommand::Invall { collection: 2 }]).unwrap();
    let unmap = ItsCommand::Mapc {
        collection: 2,
        target: RdBase::Processor(5),
        valid: false,
    };
    its.submit(&[unmap]).unwrap();
    stop.store(true, Ordering::SeqCst);
    let seen = t.join().unwrap();
    let sync = |p| {
        ItsCommand::Sync {
            target: RdBase::Processor(p),
        }
        .encode()
    };
    let expect = [
        sync(0),
        ItsCommand::Mapc {
            collection: 2,
            target: RdBase::Processor(5),
            valid: true,
        }
        .encode(),
        ItsCommand::Invall { collection: 2 }.encode(),
        sync(5),
        ItsCommand::Invall { collection: 2 }.encode(),
        sync(5),
        unmap.encode(),
        sync(5),
    ];
    assert_eq!(seen, expect);
}

#[test]
fn lpi_config_table() {
    let mut mem = Arena::new(1 << 20);
    assert_eq!(
        LpiConfigTable::alloc(&mut mem, 13).err(),
        Some(GicError::BadIntId(13))
    );
    let mut t = LpiConfigTable::alloc(&mut mem, 14).unwrap();
    assert_eq!(t.lpi_end(), 16384);
    assert_eq!(t.get(8192), Ok(0xa2));
    t.set(8193, 0x80, true).unwrap();
    assert_eq!(t.get(8193), Ok(0x83));
    // SAFETY: the table's second byte, inside the arena.
    assert_eq!(unsafe { mem.virt(t.phys()).add(1).read() }, 0x83);
    assert_eq!(t.set(8191, 0, true), Err(GicError::BadIntId(8191)));
    assert_eq!(t.set(16384, 0, true), Err(GicError::BadIntId(16384)));
}

/// The ITS reads the queue or a table past the CPU's caches when the
/// register reads back non-shareable, inner non-cacheable or Device: then
/// (and only then) the driver cleans it to the point of coherency
/// (issue 13, point 17).
#[test]
fn non_shareable_or_non_cacheable_memory_needs_cleaning() {
    const INNER: u64 = 7 << 59;
    const SH: u64 = 3 << 10;
    assert!(!needs_clean(cbaser_value(FAKE_RAM, 0x1_0000, true)));
    assert!(needs_clean(cbaser_value(FAKE_RAM, 0x1_0000, false)));
    let b = baser_value(0, FAKE_RAM, PageSize::Size64K, 1, true, true);
    assert!(!needs_clean(b));
    assert!(needs_clean(b & !SH), "non-shareable, write-back");
    assert!(needs_clean((b & !INNER) | (1 << 59)), "inner non-cacheable");
    assert!(needs_clean(b & !INNER), "Device-nGnRnE");
    assert!(!needs_clean((b & !SH) | (2 << 10)), "outer shareable");
}
