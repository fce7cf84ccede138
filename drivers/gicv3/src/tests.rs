//! Unit tests of the distributor and redistributor drivers: register layouts,
//! LPI enabling and direct LPI invalidation on redistributor frames in plain memory.

use super::*;
#[test]
fn layout() {
    assert_eq!(core::mem::size_of::<GicdRegs>(), 0x10000);
    assert_eq!(core::mem::size_of::<GicrRegs>(), 0x20000);
    assert_eq!(core::mem::offset_of!(GicrRegs, propbaser), 0x70);
    assert_eq!(core::mem::offset_of!(GicrRegs, pendbaser), 0x78);
    assert_eq!(core::mem::offset_of!(GicrRegs, invlpir), 0xa0);
    assert_eq!(core::mem::offset_of!(GicrRegs, syncr), 0xc0);
    assert_eq!(core::mem::offset_of!(GicrRegs, igroupr0), 0x10080);
}

extern crate std;
use its::tests::{Arena, FAKE_RAM};
use std::vec;
use std::vec::Vec;

/// One redistributor frame in plain memory; GICR_TYPER = `typer` | Last.
fn fake_gicr(typer: u64) -> Vec<u64> {
    let mut f = vec![0u64; 0x20000 / 8];
    f[1] = typer | (1 << 4);
    f
}

fn get(f: &[u64], off: usize) -> u64 {
    // SAFETY: inside the buffer, which the driver wrote through a raw pointer.
    unsafe { f.as_ptr().add(off / 8).read_volatile() }
}

#[test]
fn lpis_enable_in_order_once() {
    let mut mem = Arena::new(1 << 20);
    let table = LpiConfigTable::alloc(&mut mem, 16).unwrap();
    // No PLPIS.
    let mut f = fake_gicr(0);
    // SAFETY: a fake 128 KiB frame owned by the test.
    let rd = unsafe { Redistributor::find(f.as_mut_ptr() as usize, 0x20000, 0) }.unwrap();
    assert_eq!(
        rd.enable_lpis(&table, FAKE_RAM),
        Err(GicError::LpisUnsupported)
    );

    // PLPIS, processor number 3.
    let mut f = fake_gicr(1 | (3 << 8));
    // SAFETY: as above.
    let rd = unsafe { Redistributor::find(f.as_mut_ptr() as usize, 0x20000, 0) }.unwrap();
    assert_eq!(rd.processor_number(), 3);
    assert_eq!(
        rd.enable_lpis(&table, FAKE_RAM + 0x8000),
        Err(GicError::Misaligned {
            addr: FAKE_RAM + 0x8000,
            align: 0x1_0000
        })
    );
    let pend = rd.enable_lpis_alloc(&table, &mut mem).unwrap();
    assert_eq!(pend % 0x1_0000, 0);
    assert_eq!(get(&f, 0x70), its::propbaser_value(table.phys(), 16, true));
    assert_eq!(get(&f, 0x78), its::pendbaser_value(pend, true));
    assert_eq!(get(&f, 0x0) & 1, 1, "EnableLPIs");
    // Never reprogrammed once enabled.
    assert_eq!(
        rd.enable_lpis(&table, pend),
        Err(GicError::LpisAlreadyEnabled)
    );
    assert_eq!(rd.inv_lpi(8192), Err(GicError::DirectLpiUnsupported));
}

#[test]
fn direct_lpi_invalidate() {
    let mut f = fake_gicr(1 | (1 << 3));
    // SAFETY: a fake 128 KiB frame owned by the test.
    let rd = unsafe { Redistributor::find(f.as_mut_ptr() as usize, 0x20000, 0) }.unwrap();
    assert_eq!(rd.inv_lpi(8191), Err(GicError::BadIntId(8191)));
    assert_eq!(rd.inv_lpi(8200), Ok(()));
    assert_eq!(get(&f, 0xa0), 8200);
    f[0xc0 / 8] = 1; // GICR_SYNCR.Busy stuck
    assert_eq!(rd.inv_lpi(8200), Err(GicError::RedistributorSyncTimeout));
}

/// Two regions of two frames each; the CPU with affinity 0x0100_0001 is
/// the second frame of the second region.
#[test]
fn redistributor_found_in_any_region() {
    let frame = 0x20000 / 8;
    let mut first = vec![0u64; 2 * frame];
    first[frame + 1] = (1 << 32) | (1 << 4);
    let mut second = vec![0u64; 2 * frame];
    second[1] = 0x0100_0000 << 32;
    second[frame + 1] = (0x0100_0001 << 32) | (1 << 4);
    let regions = [
        (first.as_mut_ptr() as usize, 0x40000),
        (second.as_mut_ptr() as usize, 0x40000),
    ];
    // SAFETY: both fake regions are owned by the test.
    let rd = unsafe { Redistributor::find_in(&regions, 0x0100_0001) }.unwrap();
    assert_eq!(rd.regs.as_ptr() as usize, regions[1].0 + 0x20000);
    // SAFETY: as above.
    let rd = unsafe { Redistributor::find_in(&regions, 1) }.unwrap();
    assert_eq!(rd.regs.as_ptr() as usize, regions[0].0 + 0x20000);
    // SAFETY: as above.
    let missing = unsafe { Redistributor::find_in(&regions, 0x0200_0000) };
    assert_eq!(
        missing.err(),
        Some(GicError::NoRedistributor {
            affinity: 0x0200_0000
        })
    );
}
