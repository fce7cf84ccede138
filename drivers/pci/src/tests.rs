extern crate std;

use crate::assign::{assign, fill_unassigned, Window};
use crate::bar::{size_bars, BarKind};
use crate::caps::{capabilities, CapError, Capability, PortType};
use crate::config::{Bdf, ConfigSpace, CMD_BUS_MASTER, CMD_IO, CMD_MEMORY};
use crate::driver::{claim, release, Driver};
use crate::ecam::Ecam;
use crate::enumerate::{
    enumerate, peer_root_buses, root_ranges, BridgeKind, Function, Policy, Topology,
};
use crate::error::PciError;
use crate::fake::{Fake, FakeFn};
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

const RP: u8 = 4;
const UP: u8 = 5;
const DOWN: u8 = 6;

fn bdf(b: u8, d: u8, f: u8) -> Bdf {
    Bdf::new(b, d, f).unwrap()
}

/// The endpoint with every capability the crate decodes.
fn rich_endpoint() -> FakeFn {
    FakeFn::endpoint(0x1234, 0x11e8, 0x00ff_0000)
        .mem32(0, 0x1000, false)
        .mem64(2, 0x10_0000, true)
        .io(4, 0x20)
        .cap(0x01, 0x0003, &[0]) // PM v3
        .cap(0x05, 0x0180 | 0x4, &[0, 0, 0, 0, 0]) // MSI: 64-bit, PVM, MMC=2
        .cap(0x11, 0x000f, &[0x0000_2000, 0x0000_3000 | 2]) // MSI-X: 16 vectors
        .pcie(0)
        .cap(0x09, 0, &[]) // vendor-specific: unknown
        .ext(0x001b, &[(20 << 8) | 0b110]) // PASID: 20 bits, exec + priv
        .ext(0x000f, &[0x0000_0005 | 1 << 5]) // ATS: depth 5, page aligned
        .ext(0x0013, &[1 << 24, 0x200, 0]) // PRI: stopped, 0x200 outstanding
        .ext(0x000d, &[0x0000_001f]) // ACS
        .ext(0x0001, &[0; 8]) // AER: unknown
}

struct Tree {
    fake: Fake,
    rp_a: usize,
    up: usize,
    ds0: usize,
    ds1: usize,
    rp_b: usize,
}

/// bus 0: 00:00.0 endpoint, 00:01.0 root port A, 00:02.0 root port B.
/// Behind A: switch upstream port, downstream ports 0 and 1, the rich
/// endpoint below downstream 0. Behind B: a two-function endpoint.
fn tree() -> Tree {
    let mut fake = Fake::default();
    fake.add(
        None,
        0,
        0,
        FakeFn::endpoint(0x1b36, 0x0008, 0x06_0000).mem32(0, 0x4000, false),
    );
    let rp_a = fake.add(None, 1, 0, FakeFn::bridge(Some(RP)));
    let rp_b = fake.add(None, 2, 0, FakeFn::bridge(Some(RP)));
    let up = fake.add(Some(rp_a), 0, 0, FakeFn::bridge(Some(UP)));
    let ds0 = fake.add(Some(up), 0, 0, FakeFn::bridge(Some(DOWN)));
    let ds1 = fake.add(Some(up), 1, 0, FakeFn::bridge(Some(DOWN)));
    fake.add(Some(ds0), 0, 0, rich_endpoint());
    fake.add(
        Some(rp_b),
        0,
        0,
        FakeFn::endpoint(0x8086, 0x10d3, 0x02_0000)
            .mem32(0, 0x2_0000, false)
            .multi(),
    );
    fake.add(
        Some(rp_b),
        0,
        1,
        FakeFn::endpoint(0x8086, 0x10d3, 0x02_0000).mem64(0, 0x4000_0000, true),
    );
    Tree {
        fake,
        rp_a,
        up,
        ds0,
        ds1,
        rp_b,
    }
}

fn buses(fake: &Fake, i: usize) -> (u8, u8, u8) {
    let n = fake.fns[i].get(0x18);
    (n as u8, (n >> 8) as u8, (n >> 16) as u8)
}

fn windows() -> Vec<Window> {
    vec![
        Window {
            kind: BarKind::Io,
            prefetchable: false,
            cpu_base: 0x3eff_0000,
            pci_base: 0,
            size: 0x1_0000,
        },
        Window {
            kind: BarKind::Mem32,
            prefetchable: false,
            cpu_base: 0x1000_0000,
            pci_base: 0x1000_0000,
            size: 0x2eff_0000,
        },
        Window {
            kind: BarKind::Mem64,
            prefetchable: true,
            cpu_base: 0x80_0000_0000,
            pci_base: 0x80_0000_0000,
            size: 0x80_0000_0000,
        },
    ]
}

#[test]
fn bdf_display_and_rid() {
    let b = bdf(0x3, 0x1f, 7);
    assert_eq!(format!("{b}"), "03:1f.7");
    assert_eq!(Bdf::from_rid(b.rid()), b);
    assert_eq!(Bdf::new(0, 32, 0), None);
    assert_eq!(Bdf::new(0, 0, 8), None);
}

/// A root port with QEMU's resource-reserve capability (vendor-specific,
/// length 20, type 1) asking for `buses` bus numbers, the rest unset.
fn reserving_port(buses: u32) -> FakeFn {
    FakeFn::bridge(Some(RP)).cap(
        0x09,
        1 << 8 | 20,
        &[buses, u32::MAX, u32::MAX, u32::MAX, u32::MAX],
    )
}

#[test]
fn qemu_bus_reservation_widens_a_bridge() {
    let mut fake = Fake::default();
    let a = fake.add(None, 1, 0, reserving_port(100));
    fake.add(Some(a), 0, 0, FakeFn::endpoint(0x1234, 0x5a51, 0x08_8000));
    let b = fake.add(None, 2, 0, FakeFn::bridge(Some(RP)));
    fake.add(Some(b), 0, 0, FakeFn::endpoint(0x1234, 0x5a51, 0x08_8000));
    let topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(topo.errors, vec![]);
    assert_eq!(buses(&fake, a), (0, 1, 100));
    assert_eq!(buses(&fake, b), (0, 101, 101));
    assert!(topo.functions.iter().any(|f| f.bdf == bdf(101, 0, 0)));
    // A reservation past the parent's range stops at its end.
    let mut fake = Fake::default();
    let a = fake.add(None, 1, 0, reserving_port(1000));
    enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(buses(&fake, a), (0, 1, 255));
}

/// A reservation that would starve the bridges after it (16 buses, the
/// first port asking for 128) is cut to what is spare once every bridge
/// has its own buses: everything is reached, the first port keeps the rest.
#[test]
fn a_reservation_leaves_the_buses_later_bridges_need() {
    let mut fake = Fake::default();
    let a = fake.add(None, 1, 0, reserving_port(128));
    fake.add(Some(a), 0, 0, FakeFn::endpoint(0x1234, 0x11e8, 0x00ff_0000));
    let b = fake.add(None, 2, 0, FakeFn::bridge(Some(RP)));
    let up = fake.add(Some(b), 0, 0, FakeFn::bridge(Some(5)));
    let down = fake.add(Some(up), 0, 0, FakeFn::bridge(Some(6)));
    fake.add(
        Some(down),
        0,
        0,
        FakeFn::endpoint(0x1234, 0x5a51, 0x08_8000),
    );
    let c = fake.add(None, 3, 0, FakeFn::bridge(Some(RP)));
    fake.add(Some(c), 0, 0, FakeFn::endpoint(0x8086, 0x10c9, 0x02_0000));
    let topo = enumerate(&mut fake, 0, 0..=15, Policy::default());
    assert_eq!(topo.errors, vec![]);
    assert_eq!(
        topo.functions.iter().filter(|f| f.bdf.bus() != 0).count(),
        5
    );
    // b's subtree takes 3 buses, c's 1: a keeps 15 - 4 = 11.
    assert_eq!(buses(&fake, a), (0, 1, 11));
    assert_eq!(buses(&fake, b), (0, 12, 14));
    assert_eq!(buses(&fake, c), (0, 15, 15));
}

/// Bus 0 with a root port asking for 200 buses and an expander (a second
/// host bridge function), whose own root bus is 0x80, with a root port
/// and an endpoint behind it.
fn two_roots() -> (Fake, usize, usize) {
    let mut fake = Fake::default();
    fake.add(None, 0, 0, FakeFn::endpoint(0x1b36, 0x0008, 0x06_0000));
    let rp = fake.add(None, 1, 0, reserving_port(200));
    fake.add(
        Some(rp),
        0,
        0,
        FakeFn::endpoint(0x1234, 0x11e8, 0x00ff_0000).mem32(0, 0x10_0000, false),
    );
    fake.add(None, 2, 0, FakeFn::endpoint(0x1b36, 0x000b, 0x06_0000));
    let peer_rp = fake.add_peer(0x80, 0, 0, FakeFn::bridge(Some(RP)));
    fake.add(
        Some(peer_rp),
        0,
        0,
        FakeFn::endpoint(0x1234, 0x5a51, 0x08_8000).mem32(0, 0x4000, false),
    );
    (fake, rp, peer_rp)
}

/// The expander's root bus is found, each root is numbered inside its own
/// range (bus 0's reservation stops below 0x80, so no bus number is on
/// both sides), and one assignment over both places every BAR.
#[test]
fn a_second_root_bus_is_scanned_in_its_own_bus_range() {
    let (mut fake, rp, peer_rp) = two_roots();
    let peers = peer_root_buses(&fake, 0..=255);
    assert_eq!(peers, vec![0x80]);
    let roots = root_ranges(0..=255, &peers);
    assert_eq!(roots, vec![0..=0x7f, 0x80..=255]);
    let mut topo = enumerate(&mut fake, 0, roots[0].clone(), Policy::default());
    topo.merge(enumerate(&mut fake, 0, roots[1].clone(), Policy::default()));
    assert_eq!(topo.errors, vec![]);
    assert_eq!(topo.root_buses, 0..=255);
    assert_eq!(buses(&fake, rp), (0, 1, 0x7f));
    assert_eq!(buses(&fake, peer_rp), (0x80, 0x81, 0x81));
    let behind = topo.function(bdf(0x81, 0, 0)).expect("behind the expander");
    assert_eq!(
        (behind.vendor, behind.parent),
        (0x1234, Some(bdf(0x80, 0, 0)))
    );
    assert!(topo.function(bdf(1, 0, 0)).is_some());
    assert_eq!(assign(&mut fake, &mut topo, &windows()), vec![]);
    check_assignment(&fake, &topo, &windows());
    // Numbered now: the buses behind either root's bridges are no roots.
    assert_eq!(peer_root_buses(&fake, 0..=255), vec![0x80]);
    // Without a host bridge function beside 00.0 nothing is probed.
    let mut plain = Fake::default();
    plain.add(None, 0, 0, FakeFn::endpoint(0x1b36, 0x0008, 0x06_0000));
    plain.add_peer(0x80, 0, 0, FakeFn::bridge(Some(RP)));
    assert_eq!(peer_root_buses(&plain, 0..=255), vec![]);
    assert_eq!(root_ranges(0..=255, &[]), vec![0..=255]);
}

#[test]
fn enumeration_numbers_buses_depth_first() {
    let Tree {
        mut fake,
        rp_a,
        up,
        ds0,
        ds1,
        rp_b,
    } = tree();
    let topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(topo.errors, vec![]);
    assert_eq!(buses(&fake, rp_a), (0, 1, 4));
    assert_eq!(buses(&fake, up), (1, 2, 4));
    assert_eq!(buses(&fake, ds0), (2, 3, 3));
    assert_eq!(buses(&fake, ds1), (2, 4, 4));
    assert_eq!(buses(&fake, rp_b), (0, 5, 5));

    let found: Vec<Bdf> = topo.functions.iter().map(|f| f.bdf).collect();
    assert_eq!(
        found,
        vec![
            bdf(0, 0, 0),
            bdf(0, 1, 0),
            bdf(0, 2, 0),
            bdf(1, 0, 0),
            bdf(2, 0, 0),
            bdf(2, 1, 0),
            bdf(3, 0, 0),
            bdf(5, 0, 0),
            bdf(5, 0, 1),
        ]
    );
    let kinds: Vec<(Bdf, BridgeKind, u8, u8, Option<Bdf>)> = topo
        .bridges
        .iter()
        .map(|b| (b.bdf, b.kind, b.secondary, b.subordinate, b.parent))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (bdf(0, 1, 0), BridgeKind::RootPort, 1, 4, None),
            (
                bdf(1, 0, 0),
                BridgeKind::SwitchUpstream,
                2,
                4,
                Some(bdf(0, 1, 0))
            ),
            (
                bdf(2, 0, 0),
                BridgeKind::SwitchDownstream,
                3,
                3,
                Some(bdf(1, 0, 0))
            ),
            (
                bdf(2, 1, 0),
                BridgeKind::SwitchDownstream,
                4,
                4,
                Some(bdf(1, 0, 0))
            ),
            (bdf(0, 2, 0), BridgeKind::RootPort, 5, 5, None),
        ]
    );
    let ep = topo.function(bdf(3, 0, 0)).unwrap();
    assert_eq!(
        (ep.vendor, ep.device, ep.class),
        (0x1234, 0x11e8, 0x00ff_0000)
    );
    assert_eq!(ep.parent, Some(bdf(2, 0, 0)));
    assert_eq!(ep.port_type, Some(PortType::Endpoint));
    assert_eq!(
        topo.upstream_bridges(ep.bdf),
        vec![bdf(0, 1, 0), bdf(1, 0, 0), bdf(2, 0, 0)]
    );
    assert!(topo.function(bdf(5, 0, 0)).unwrap().multifunction);
    assert_eq!(
        topo.function(bdf(5, 0, 1)).unwrap().parent,
        Some(bdf(0, 2, 0))
    );
}

#[test]
fn firmware_bus_numbers_are_kept_and_bad_ones_replaced() {
    let Tree {
        mut fake,
        rp_a,
        up,
        ds0,
        ds1,
        rp_b,
    } = tree();
    // Firmware gave root port A buses 0x10-0x1f and left the switch alone;
    // root port B claims 0x10 too, which overlaps A.
    fake.fns[rp_a].set(0x18, 0x001f_1000);
    fake.fns[rp_b].set(0x18, 0x0010_1000);
    let topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(buses(&fake, rp_a), (0, 0x10, 0x1f));
    assert_eq!(buses(&fake, up), (0x10, 0x11, 0x13));
    assert_eq!(buses(&fake, ds0), (0x11, 0x12, 0x12));
    assert_eq!(buses(&fake, ds1), (0x11, 0x13, 0x13));
    assert_eq!(buses(&fake, rp_b), (0, 0x20, 0x20));
    assert_eq!(
        topo.errors,
        vec![PciError::BusNumbersNotNested {
            bridge: bdf(0, 2, 0),
            secondary: 0x10,
            subordinate: 0x10,
            parent_first: 0,
            parent_last: 255,
        }]
    );
    assert!(topo.function(bdf(0x12, 0, 0)).is_some());
    assert!(topo.function(bdf(0x20, 0, 1)).is_some());
}

#[test]
fn running_out_of_bus_numbers_skips_only_that_subtree() {
    let Tree {
        mut fake, ds0, ds1, ..
    } = tree();
    let topo = enumerate(&mut fake, 0, 0..=2, Policy::default());
    assert_eq!(
        topo.errors,
        vec![
            PciError::BusesExhausted {
                bridge: bdf(2, 0, 0)
            },
            PciError::BusesExhausted {
                bridge: bdf(2, 1, 0)
            },
            PciError::BusesExhausted {
                bridge: bdf(0, 2, 0)
            },
        ]
    );
    assert_eq!(buses(&fake, ds0), (2, 0, 0));
    assert_eq!(buses(&fake, ds1), (2, 0, 0));
    let found: Vec<Bdf> = topo.functions.iter().map(|f| f.bdf).collect();
    assert_eq!(
        found,
        vec![
            bdf(0, 0, 0),
            bdf(0, 1, 0),
            bdf(0, 2, 0),
            bdf(1, 0, 0),
            bdf(2, 0, 0),
            bdf(2, 1, 0)
        ]
    );
    let rp = topo.bridge(bdf(0, 1, 0)).unwrap();
    assert_eq!((rp.secondary, rp.subordinate), (1, 2));
}

#[test]
fn bar_sizing_each_kind() {
    let mut fake = Fake::default();
    let i = fake.add(
        None,
        0,
        0,
        FakeFn::endpoint(1, 2, 0)
            .mem32(0, 0x1000, false)
            .mem64(1, 0x2_0000_0000, true)
            .io(3, 0x20)
            .mem32(4, 0x1_0000, true),
    );
    // Firmware addresses in BAR0 and the I/O BAR; decoding on.
    fake.fns[i].set(0x10, 0xfebf_0000);
    fake.fns[i].set(0x1c, 0xc001);
    fake.fns[i].set(0x04, 0x0003);
    let before: Vec<u32> = (0..8).map(|k| fake.fns[i].get(0x10 + 4 * k)).collect();
    let bars = size_bars(&mut fake, bdf(0, 0, 0), 0).unwrap();
    let got: Vec<_> = bars
        .iter()
        .map(|b| (b.index, b.kind, b.prefetchable, b.size, b.address))
        .collect();
    assert_eq!(
        got,
        vec![
            (0, BarKind::Mem32, false, 0x1000, Some(0xfebf_0000)),
            (1, BarKind::Mem64, true, 0x2_0000_0000, None),
            (3, BarKind::Io, false, 0x20, Some(0xc000)),
            (4, BarKind::Mem32, true, 0x1_0000, None),
        ]
    );
    let after: Vec<u32> = (0..8).map(|k| fake.fns[i].get(0x10 + 4 * k)).collect();
    assert_eq!(before, after, "BARs restored");
    assert_eq!(fake.fns[i].get(0x04) & 0xffff, 0x0003, "command restored");

    // A 64-bit BAR in the last slot is malformed.
    let mut fake = Fake::default();
    fake.add(
        None,
        0,
        0,
        FakeFn::endpoint(1, 2, 0).mem32(0, 0x1000, false),
    );
    fake.fns[0].set(0x24, 0x4);
    let (bars, e) = size_bars(&mut fake, bdf(0, 0, 0), 0).unwrap_err();
    assert_eq!(bars.len(), 1);
    assert_eq!(
        e,
        PciError::BadBar {
            bdf: bdf(0, 0, 0),
            bar: 5
        }
    );
}

#[test]
fn capabilities_decode() {
    let mut fake = Fake::default();
    fake.add(None, 0, 0, rich_endpoint());
    let (caps, errors) = capabilities(&fake, bdf(0, 0, 0));
    assert_eq!(errors, vec![]);
    assert_eq!(
        caps,
        vec![
            Capability::PowerManagement {
                offset: 0x40,
                version: 3,
                pmc: 3
            },
            Capability::Msi {
                offset: 0x48,
                addr64: true,
                per_vector_masking: true,
                multiple_message_capable: 2,
                control: 0x0184,
            },
            Capability::MsiX {
                offset: 0x60,
                table_size: 16,
                table_bir: 0,
                table_offset: 0x2000,
                pba_bir: 2,
                pba_offset: 0x3000,
            },
            Capability::PciExpress {
                offset: 0x70,
                version: 2,
                port_type: PortType::Endpoint,
                slot_implemented: false,
                max_payload_supported: 1,
            },
            Capability::Unknown {
                id: 9,
                offset: 0x98
            },
            Capability::Pasid {
                offset: 0x100,
                max_pasid_width: 20,
                execute: true,
                privileged: true
            },
            Capability::Ats {
                offset: 0x108,
                invalidate_queue_depth: 5,
                page_aligned_request: true,
                global_invalidate: false,
            },
            Capability::Pri {
                offset: 0x110,
                outstanding_requests: 0x200
            },
            Capability::Acs {
                offset: 0x120,
                capability: 0x1f,
                control: 0
            },
            Capability::Unknown {
                id: 1,
                offset: 0x128
            },
        ]
    );
}

#[test]
fn capability_faults_are_typed_and_enumeration_goes_on() {
    let mut fake = Fake::default();
    // 00:00.0: the list loops (the third capability points at the first).
    let looped = fake.add(
        None,
        0,
        0,
        FakeFn::endpoint(1, 1, 0)
            .cap(0x01, 3, &[0])
            .cap(0x05, 0, &[0, 0])
            .cap(0x09, 0, &[]),
    );
    fake.fns[looped].set8(0x59, 0x40);
    // 00:01.0: the capabilities pointer points into the header.
    let low = fake.add(None, 1, 0, FakeFn::endpoint(1, 2, 0).cap(0x01, 3, &[0]));
    fake.fns[low].set8(0x34, 0x20);
    // 00:02.0: an extended capability's next pointer is below 0x100.
    let ext = fake.add(
        None,
        2,
        0,
        FakeFn::endpoint(1, 3, 0)
            .pcie(0)
            .ext(0x000d, &[0])
            .ext(0x000f, &[0]),
    );
    let h = fake.fns[ext].get(0x108);
    fake.fns[ext].set(0x108, (h & 0xf_ffff) | 0x0c0 << 20);
    // 00:03.0: fine.
    fake.add(None, 3, 0, rich_endpoint());

    let topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(
        topo.errors,
        vec![
            PciError::Capability {
                bdf: bdf(0, 0, 0),
                error: CapError::Loop { offset: 0x40 }
            },
            PciError::Capability {
                bdf: bdf(0, 1, 0),
                error: CapError::OutOfBounds { pointer: 0x20 }
            },
            PciError::Capability {
                bdf: bdf(0, 2, 0),
                error: CapError::OutOfBounds { pointer: 0xc0 }
            },
        ]
    );
    assert_eq!(topo.functions.len(), 4);
    assert_eq!(topo.functions[0].caps.len(), 3, "caps before the loop kept");
    assert_eq!(topo.functions[2].caps.len(), 3);
    assert_eq!(topo.functions[3].caps.len(), 10);
}

/// The bridge windows as programmed: (io, mem, pref) as inclusive ranges.
type Range = Option<(u64, u64)>;
fn bridge_windows(fake: &Fake, i: usize) -> (Range, Range, Range) {
    let f = &fake.fns[i];
    let io = f.get(0x1c);
    let up = f.get(0x30);
    let io_base = u64::from(io & 0xf0) << 8 | u64::from(up & 0xffff) << 16;
    let io_limit = u64::from(io & 0xf000) | 0xfff | u64::from(up >> 16) << 16;
    let mem = f.get(0x20);
    let mem_base = u64::from(mem & 0xfff0) << 16;
    let mem_limit = u64::from(mem >> 16 & 0xfff0) << 16 | 0xf_ffff;
    let pref = f.get(0x24);
    let pref_base = u64::from(pref & 0xfff0) << 16 | u64::from(f.get(0x28)) << 32;
    let pref_limit = u64::from(pref >> 16 & 0xfff0) << 16 | 0xf_ffff | u64::from(f.get(0x2c)) << 32;
    let open = |b: u64, l: u64| (b <= l).then_some((b, l));
    (
        open(io_base, io_limit),
        open(mem_base, mem_limit),
        open(pref_base, pref_limit),
    )
}

fn class(kind: BarKind, pref: bool, pref_window: bool) -> usize {
    match (kind, pref && pref_window) {
        (BarKind::Io, _) => 0,
        (BarKind::Mem64, true) => 2,
        _ => 1,
    }
}

fn check_assignment(fake: &Fake, topo: &Topology, windows: &[Window]) {
    // Every placed BAR: naturally aligned, inside its host window, written
    // to the device, not overlapping another.
    let mut placed: Vec<(u64, u64)> = Vec::new();
    for f in &topo.functions {
        for b in &f.bars {
            let Some(a) = b.address else { continue };
            assert_eq!(a % b.size, 0, "{} BAR {} aligned", f.bdf, b.index);
            let w = windows
                .iter()
                .find(|w| a >= w.pci_base && a + b.size <= w.pci_base + w.size)
                .expect("inside a window");
            assert_eq!(b.cpu_address, Some(a - w.pci_base + w.cpu_base));
            for &(s, e) in &placed {
                assert!(
                    a + b.size <= s || a >= e,
                    "{} BAR {} overlaps",
                    f.bdf,
                    b.index
                );
            }
            placed.push((a, a + b.size));
            let idx = fake.route(f.bdf).unwrap();
            let mut reg = u64::from(fake.fns[idx].get(0x10 + 4 * u16::from(b.index)));
            if b.kind == BarKind::Mem64 {
                reg |= u64::from(fake.fns[idx].get(0x14 + 4 * u16::from(b.index))) << 32;
            }
            let mask = if b.kind == BarKind::Io { !3 } else { !0xf };
            assert_eq!(reg & mask, a, "{} BAR {} programmed", f.bdf, b.index);
        }
    }
    let pref_window = windows.iter().any(|w| w.kind == BarKind::Mem64);
    // Every bridge window covers the BARs of its subtree and sits inside
    // its parent's window.
    for br in &topo.bridges {
        let idx = fake.route(br.bdf).unwrap();
        let w = bridge_windows(fake, idx);
        let w = [w.0, w.1, w.2];
        for f in &topo.functions {
            if !topo.upstream_bridges(f.bdf).contains(&br.bdf) {
                continue;
            }
            for b in &f.bars {
                let Some(a) = b.address else { continue };
                let (s, e) = w[class(b.kind, b.prefetchable, pref_window)].expect("window open");
                assert!(s <= a && a + b.size - 1 <= e, "{} covers {}", br.bdf, f.bdf);
            }
        }
        if let Some(p) = br.parent {
            let pw = bridge_windows(fake, fake.route(p).unwrap());
            let pw = [pw.0, pw.1, pw.2];
            for k in 0..3 {
                if let Some((s, e)) = w[k] {
                    let (ps, pe) = pw[k].expect("parent open");
                    assert!(ps <= s && e <= pe);
                }
            }
        }
    }
}

#[test]
fn assignment_places_bars_and_programs_bridge_windows() {
    let Tree { mut fake, .. } = tree();
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    let windows = windows();
    let errors = assign(&mut fake, &mut topo, &windows);
    assert_eq!(errors, vec![]);
    assert!(topo
        .functions
        .iter()
        .all(|f| f.bars.iter().all(|b| b.address.is_some())));
    check_assignment(&fake, &topo, &windows);
    // The 1 GiB prefetchable BAR went to the 64-bit window.
    let big = topo.function(bdf(5, 0, 1)).unwrap().bars[0];
    assert!(big.address.unwrap() >= 0x80_0000_0000);
    // Nothing decodes before a claim.
    for f in &topo.functions {
        let idx = fake.route(f.bdf).unwrap();
        assert_eq!(fake.fns[idx].get(4) & 7, 0);
    }
}

#[test]
fn firmware_bar_assignments_are_kept() {
    let Tree { mut fake, .. } = tree();
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    let windows = windows();
    assert_eq!(assign(&mut fake, &mut topo, &windows), vec![]);
    let first = topo.clone();
    // Enumerate again: the BARs now read as assigned and are kept as is.
    let mut again = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(assign(&mut fake, &mut again, &windows), vec![]);
    assert_eq!(first.functions, again.functions);
    check_assignment(&fake, &again, &windows);
}

#[test]
fn a_bar_bigger_than_its_window_is_an_error_and_the_rest_is_placed() {
    let Tree { mut fake, ds1, .. } = tree();
    // Below downstream port 1: an endpoint wanting 2 GiB of 32-bit memory.
    fake.add(
        Some(ds1),
        0,
        0,
        FakeFn::endpoint(0xdead, 0xbeef, 0)
            .mem32(0, 0x8000_0000, false)
            .mem32(1, 0x1000, false),
    );
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(topo.errors, vec![]);
    let windows = windows();
    let errors = assign(&mut fake, &mut topo, &windows);
    assert_eq!(
        errors,
        vec![PciError::WindowExhausted {
            bdf: bdf(4, 0, 0),
            bar: 0,
            size: 0x8000_0000
        }]
    );
    let bad = topo.function(bdf(4, 0, 0)).unwrap().clone();
    assert_eq!(bad.bars[0].address, None);
    assert!(bad.bars[1].address.is_some());
    for f in &topo.functions {
        if f.bdf != bad.bdf {
            assert!(f.bars.iter().all(|b| b.address.is_some()), "{}", f.bdf);
        }
    }
    check_assignment(&fake, &topo, &windows);
    // Its decoding stays off: a claim is refused.
    assert_eq!(
        claim(&mut fake, &topo, &bad),
        Err(PciError::UnassignedBar {
            bdf: bdf(4, 0, 0),
            bar: 0
        })
    );
    assert_eq!(fake.read16(bad.bdf, 4) & 7, 0);
}

#[test]
fn exhausting_a_window_fails_only_what_does_not_fit() {
    let Tree { mut fake, .. } = tree();
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    // A small 32-bit window, no 64-bit one: the 1 GiB BAR cannot fit.
    let windows = [Window {
        kind: BarKind::Mem32,
        prefetchable: false,
        cpu_base: 0x4000_0000,
        pci_base: 0x4000_0000,
        size: 0x0100_0000,
    }];
    let errors = assign(&mut fake, &mut topo, &windows);
    assert_eq!(
        errors,
        vec![
            PciError::WindowExhausted {
                bdf: bdf(3, 0, 0),
                bar: 4,
                size: 0x20
            },
            PciError::WindowExhausted {
                bdf: bdf(5, 0, 1),
                bar: 0,
                size: 0x4000_0000
            },
        ]
    );
    check_assignment(&fake, &topo, &windows);
    let placed = topo
        .functions
        .iter()
        .flat_map(|f| f.bars.iter())
        .filter(|b| b.address.is_some())
        .count();
    assert_eq!(placed, 4);
}

struct Edu;

impl Driver for Edu {
    fn matches(&self, f: &Function) -> bool {
        f.vendor == 0x1234 && f.device == 0x11e8
    }
}

#[test]
fn claim_enables_only_the_claimed_function() {
    let Tree { mut fake, .. } = tree();
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(assign(&mut fake, &mut topo, &windows()), vec![]);
    let f = topo.matching(&Edu).next().unwrap().clone();
    assert_eq!(f.bdf, bdf(3, 0, 0));
    let c = claim(&mut fake, &topo, &f).unwrap();
    assert_eq!(
        fake.read16(f.bdf, 4) & 7,
        CMD_IO | CMD_MEMORY | CMD_BUS_MASTER
    );
    for up in [bdf(0, 1, 0), bdf(1, 0, 0), bdf(2, 0, 0)] {
        assert_eq!(fake.read16(up, 4) & 7, 7, "{up} forwards");
    }
    for other in [
        bdf(0, 0, 0),
        bdf(0, 2, 0),
        bdf(2, 1, 0),
        bdf(5, 0, 0),
        bdf(5, 0, 1),
    ] {
        assert_eq!(fake.read16(other, 4) & 7, 0, "{other} untouched");
    }
    release(&mut fake, c);
    assert_eq!(fake.read16(f.bdf, 4) & 7, 0);
}

/// Config space that counts writes to each function's command register.
struct CountingCommands<'a> {
    inner: &'a mut Fake,
    writes: Vec<Bdf>,
}

impl ConfigSpace for CountingCommands<'_> {
    fn read32(&self, bdf: Bdf, offset: u16) -> u32 {
        self.inner.read32(bdf, offset)
    }

    fn write32(&mut self, bdf: Bdf, offset: u16, value: u32) {
        if offset == 4 {
            self.writes.push(bdf);
        }
        self.inner.write32(bdf, offset, value);
    }
}

/// A second claim behind the same bridges writes only the function's own
/// command register: an emulator remaps a bridge's windows at every
/// write to its command register (QEMU rebuilds every address space's
/// view), which made each claim cost as much as a page of DMA.
#[test]
fn claim_leaves_open_bridges_alone() {
    let Tree { mut fake, .. } = tree();
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(assign(&mut fake, &mut topo, &windows()), vec![]);
    let f = topo.matching(&Edu).next().unwrap().clone();
    let mut cfg = CountingCommands {
        inner: &mut fake,
        writes: Vec::new(),
    };
    let c = claim(&mut cfg, &topo, &f).unwrap();
    assert_eq!(cfg.writes.len(), 4, "three bridges and the function");
    release(&mut cfg, c);
    cfg.writes.clear();
    let c = claim(&mut cfg, &topo, &f).unwrap();
    assert_eq!(cfg.writes, vec![f.bdf], "bridges already open");
    release(&mut cfg, c);
    for up in [bdf(0, 1, 0), bdf(1, 0, 0), bdf(2, 0, 0)] {
        assert_eq!(cfg.read16(up, 4) & 7, 7, "{up} forwards");
    }
}

#[test]
#[allow(unsafe_code)]
fn ecam_bounds() {
    let mut mem = vec![0u32; 2 << 18]; // two buses
    let base = mem.as_mut_ptr() as usize;
    {
        // SAFETY: `mem` is a 2 MiB buffer of u32 (so 4-byte aligned)
        // that outlives `ecam` and is not touched while it is used.
        let mut ecam = unsafe { Ecam::new(base, 4..=5) };
        let b = bdf(5, 3, 2);
        ecam.write32(b, 0x104, 0xabcd_1234);
        assert_eq!(ecam.read32(b, 0x104), 0xabcd_1234);
        assert_eq!(ecam.read16(b, 0x106), 0xabcd);
        assert_eq!(ecam.read8(b, 0x105), 0x12);
        assert_eq!(
            ecam.window_offset(b, 0x104),
            Ok(1 << 20 | 3 << 15 | 2 << 12 | 0x104)
        );
        for (bus, off) in [(3, 0), (6, 0), (4, 4096), (4, 2)] {
            let x = bdf(bus, 0, 0);
            assert_eq!(
                ecam.try_read32(x, off),
                Err(PciError::OutOfRange {
                    bdf: x,
                    offset: off
                })
            );
            assert_eq!(ecam.read32(x, off), u32::MAX);
            ecam.write32(x, off, 0);
        }
    }
    let idx = (1 << 20 | 3 << 15 | 2 << 12 | 0x104) / 4;
    assert_eq!(mem[idx], 0xabcd_1234);
    assert_eq!(mem.iter().filter(|&&v| v != 0).count(), 1);
}

#[test]
fn overlapping_firmware_bars_are_reassigned() {
    let Tree { mut fake, .. } = tree();
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    let windows = windows();
    assert_eq!(assign(&mut fake, &mut topo, &windows), vec![]);
    // Firmware left 00:00.0's BAR0 on top of 05:00.0's.
    let other = topo.function(bdf(5, 0, 0)).unwrap().bars[0]
        .address
        .unwrap();
    fake.write32(bdf(0, 0, 0), 0x10, other as u32);
    let mut again = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(
        again.function(bdf(0, 0, 0)).unwrap().bars[0].address,
        Some(other)
    );
    assert_eq!(assign(&mut fake, &mut again, &windows), vec![]);
    check_assignment(&fake, &again, &windows);
    assert_ne!(
        again.function(bdf(0, 0, 0)).unwrap().bars[0].address,
        Some(other)
    );

    // Without the keep policy everything is placed afresh (and the same
    // way, as the algorithm is deterministic).
    let mut fresh = enumerate(
        &mut fake,
        0,
        0..=255,
        Policy {
            keep_firmware_assignments: false,
        },
    );
    assert_eq!(assign(&mut fake, &mut fresh, &windows), vec![]);
    check_assignment(&fake, &fresh, &windows);
}

/// PRI is enabled only from Stopped (refused with a typed error while it
/// is not), reset with its failure bits cleared, given min(capacity,
/// request), then enabled; the status decodes Response Failure,
/// Unexpected PRG Index, Stopped and PRG Response PASID Required; ATS
/// reports the Invalidate Queue Depth, 0 meaning 32; both refuse a
/// function without the capability (issue 16, point 3).
#[test]
fn pri_enables_only_from_stopped_and_reports_its_status() {
    use crate::features::*;
    let mut fake = Fake::default();
    let pri_at: u16 = 0x108;
    let i = fake.add(
        None,
        0,
        0,
        FakeFn::endpoint(0x1234, 0x5a51, 0x0880)
            .pcie(0)
            .ext(0x000f, &[0]) // ATS at 0x100: depth field 0 (32)
            .ext(0x0013, &[0, 32, 0]), // PRI at 0x108: running, capacity 32
    );
    fake.fns[i].wmask[0x104 / 4] = 0xffff_0000;
    fake.fns[i].wmask[usize::from(pri_at + 4) / 4] = u32::MAX;
    fake.fns[i].wmask[usize::from(pri_at + 12) / 4] = u32::MAX;
    let topo = enumerate(&mut fake, 0, 0..=0, Policy::default());
    let f = topo.function(bdf(0, 0, 0)).unwrap();
    assert_eq!(enable_ats(&mut fake, f, 0), Ok(32));
    // Not stopped: nothing is written.
    fake.fns[i].set(pri_at + 4, 1);
    assert_eq!(
        enable_pri(&mut fake, f, 2048),
        Err(PciError::PriNotStopped { bdf: f.bdf })
    );
    assert_eq!(fake.fns[i].get(pri_at + 4), 1);
    assert_eq!(fake.fns[i].get(pri_at + 12), 0, "no allocation written");
    // Stopped, PASID required, with a failure left from before.
    fake.fns[i].set(pri_at + 4, (0x8000 | 0x100 | 1) << 16);
    let st = pri_status(&fake, f).unwrap();
    assert_eq!(
        st,
        PriStatus {
            response_failure: true,
            unexpected_group: false,
            stopped: true,
            pasid_required: true,
        }
    );
    assert_eq!(enable_pri(&mut fake, f, 2048), Ok(32));
    assert_eq!(fake.fns[i].get(pri_at + 12), 32);
    assert_eq!(fake.fns[i].get(pri_at + 4), 1, "enabled last");
    // The reset write cleared RF and UPRGI (their 1s), then enable.
    fake.fns[i].set(pri_at + 4, 1 | (2 << 16));
    assert!(pri_status(&fake, f).unwrap().unexpected_group);
    clear_pri_status(&mut fake, f).unwrap();
    assert_eq!(
        fake.fns[i].get(pri_at + 4),
        1 | (3 << 16),
        "W1C both, control kept"
    );
    disable_pri(&mut fake, f).unwrap();
    assert_eq!(fake.fns[i].get(pri_at + 4) & 0xffff, 0);

    fake.add(None, 1, 0, FakeFn::endpoint(1, 1, 0).pcie(0));
    let topo = enumerate(&mut fake, 0, 0..=0, Policy::default());
    let g = topo.function(bdf(0, 1, 0)).unwrap();
    let no_pri = Err(PciError::MissingCapability {
        bdf: g.bdf,
        id: 0x13,
    });
    assert_eq!(enable_pri(&mut fake, g, 1), no_pri);
    assert_eq!(pri_status(&fake, g).map(|_| ()), no_pri.map(|_: u32| ()));
    assert_eq!(clear_pri_status(&mut fake, g), no_pri.map(|_: u32| ()));
    assert_eq!(disable_pri(&mut fake, g), no_pri.map(|_: u32| ()));
}

#[test]
fn pasid_ats_pri_enable() {
    use crate::features::*;
    let mut fake = Fake::default();
    let i = fake.add(None, 0, 0, rich_endpoint());
    // Control registers writable.
    fake.fns[i].wmask[0x104 / 4] = 0xffff_0000;
    fake.fns[i].wmask[0x10c / 4] = 0xffff_0000;
    fake.fns[i].wmask[0x114 / 4] = 0x0000_ffff;
    fake.fns[i].wmask[0x11c / 4] = u32::MAX;
    let topo = enumerate(&mut fake, 0, 0..=0, Policy::default());
    let f = topo.function(bdf(0, 0, 0)).unwrap();
    enable_pasid(&mut fake, f, true, true).unwrap();
    assert_eq!(fake.fns[i].get(0x104) >> 16, 0b111);
    assert_eq!(fake.fns[i].get(0x104) & 0xffff, (20 << 8) | 0b110);
    assert_eq!(enable_ats(&mut fake, f, 0), Ok(5), "invalidate queue depth");
    assert_eq!(fake.fns[i].get(0x10c) >> 16, 0x8000);
    assert_eq!(enable_pri(&mut fake, f, 0x1000), Ok(0x200));
    assert_eq!(fake.fns[i].get(0x11c), 0x200);
    assert_eq!(fake.fns[i].get(0x114) & 0xffff, 1);
    disable_pri(&mut fake, f).unwrap();
    disable_ats(&mut fake, f).unwrap();
    disable_pasid(&mut fake, f).unwrap();
    assert_eq!(fake.fns[i].get(0x104) >> 16, 0);

    let plain = fake.add(
        None,
        1,
        0,
        FakeFn::endpoint(1, 1, 0).pcie(0).ext(0x001b, &[8 << 8]),
    );
    fake.fns[plain].wmask[0x104 / 4] = 0xffff_0000;
    let topo = enumerate(&mut fake, 0, 0..=0, Policy::default());
    let g = topo.function(bdf(0, 1, 0)).unwrap();
    assert_eq!(
        enable_pasid(&mut fake, g, true, false),
        Err(PciError::Unsupported {
            bdf: g.bdf,
            what: "PASID execute requests"
        })
    );
    assert_eq!(
        enable_ats(&mut fake, g, 0),
        Err(PciError::MissingCapability {
            bdf: g.bdf,
            id: 0xf
        })
    );
    enable_pasid(&mut fake, g, false, false).unwrap();
}

#[cfg(feature = "devicetree")]
#[test]
fn windows_from_devicetree() {
    use devicetree::{PciSpace, PciWindow};
    let dt = PciWindow {
        space: PciSpace::Mem64,
        prefetchable: true,
        pci_addr: 0x80_0000_0000,
        cpu_addr: 0x80_0000_0000,
        size: 0x80_0000_0000,
    };
    assert_eq!(Window::from_dt(&dt), Some(windows()[2]));
    let cfg = PciWindow {
        space: PciSpace::Config,
        ..dt
    };
    assert_eq!(Window::from_dt(&cfg), None);
}

#[test]
fn conventional_bridge_io_window() {
    let mut fake = Fake::default();
    let br = fake.add(None, 3, 0, FakeFn::bridge(None));
    fake.add(
        Some(br),
        4,
        0,
        FakeFn::endpoint(0x10ec, 0x8139, 0x02_0000)
            .io(0, 0x100)
            .mem32(1, 0x100, false),
    );
    fake.add(None, 0, 0, FakeFn::endpoint(1, 1, 0).io(0, 0x8));
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(topo.errors, vec![]);
    assert_eq!(topo.bridges[0].kind, BridgeKind::PciBridge);
    assert_eq!(topo.function(bdf(1, 4, 0)).unwrap().port_type, None);
    let windows = windows();
    assert_eq!(assign(&mut fake, &mut topo, &windows), vec![]);
    check_assignment(&fake, &topo, &windows);
    let (io, mem, pref) = bridge_windows(&fake, br);
    let (s, e) = io.unwrap();
    assert_eq!((s % 0x1000, (e + 1) % 0x1000), (0, 0));
    let (s, e) = mem.unwrap();
    assert_eq!((s % 0x10_0000, (e + 1) % 0x10_0000), (0, 0));
    assert_eq!(pref, None, "nothing prefetchable behind it: closed");
}

#[test]
fn firmware_numbers_win_over_unnumbered_siblings() {
    let Tree {
        mut fake,
        rp_a,
        up,
        ds0,
        ds1,
        rp_b,
    } = tree();
    // Firmware numbered only root port B (bus 2); A comes first on bus 0
    // but must not take bus 2.
    fake.fns[rp_b].set(0x18, 0x0002_0200);
    let topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(topo.errors, vec![]);
    assert_eq!(buses(&fake, rp_b), (0, 2, 2));
    assert_eq!(buses(&fake, rp_a), (0, 3, 6));
    assert_eq!(buses(&fake, up), (3, 4, 6));
    assert_eq!(buses(&fake, ds0), (4, 5, 5));
    assert_eq!(buses(&fake, ds1), (4, 6, 6));
    assert!(topo.function(bdf(2, 0, 1)).is_some());
    assert!(topo.function(bdf(5, 0, 0)).is_some());
}

/// An endpoint with MSI and a 10-vector MSI-X whose table (offset 0) and
/// PBA (offset 0x2000) share a 16 KiB BAR 3, as QEMU's igb has them.
fn msix_endpoint(table: u32, pba: u32) -> FakeFn {
    FakeFn::endpoint(0x8086, 0x10c9, 0x02_0000)
        .mem32(0, 0x2_0000, false)
        .mem32(3, 0x4000, false)
        .cap(0x05, 0x0080, &[0, 0, 0, 0, 0])
        .cap(0x11, 9, &[table, pba])
        .pcie(0)
}

fn msix_topology(mut f: FakeFn) -> (Fake, Function) {
    // MSI control's enable bit and MSI-X control's enable and function mask.
    f.wmask[0x40 / 4] = 1 << 16;
    f.wmask[0x58 / 4] = 0xc000 << 16;
    let mut fake = Fake::default();
    fake.add(None, 0, 0, f);
    let mut topo = enumerate(&mut fake, 0, 0..=0, Policy::default());
    assert_eq!(assign(&mut fake, &mut topo, &windows()), vec![]);
    let f = topo.functions[0].clone();
    (fake, f)
}

#[test]
fn msix_layout_is_checked_against_the_bars() {
    use crate::msix::locate;
    let (_, f) = msix_topology(msix_endpoint(3, 0x2000 | 3));
    let bar3 = f.bars.iter().find(|b| b.index == 3).unwrap();
    let base = bar3.cpu_address.unwrap();
    let l = locate(&f).unwrap();
    assert_eq!((l.vectors, l.table, l.pba), (10, base, base + 0x2000));
    assert_eq!(l.cap_offset, 0x58);

    let bad = |table: u32, pba: u32| locate(&msix_topology(msix_endpoint(table, pba)).1);
    let what = |r: Result<_, PciError>| match r {
        Err(PciError::BadMsix { what, .. }) => what,
        other => panic!("{other:?}"),
    };
    // 10 entries of 16 bytes from 0x3f80 run past the 16 KiB BAR.
    assert_eq!(
        what(bad(0x3f80 | 3, 0x2000 | 3)),
        "the table runs past the end of its BAR"
    );
    assert_eq!(
        what(bad(3, 0x4000 | 3)),
        "the pending bit array runs past the end of its BAR"
    );
    assert_eq!(
        what(bad(5, 0x2000 | 3)),
        "the table's BAR indicator names no implemented BAR"
    );
    assert_eq!(
        what(bad(3, 0x40 | 3)),
        "the table and the pending bit array overlap"
    );
    // The rich endpoint's 16-vector table does not fit its 4 KiB BAR 0.
    let mut fake = Fake::default();
    fake.add(None, 0, 0, rich_endpoint());
    let mut topo = enumerate(&mut fake, 0, 0..=0, Policy::default());
    assert_eq!(assign(&mut fake, &mut topo, &windows()), vec![]);
    assert_eq!(
        what(locate(&topo.functions[0])),
        "the table runs past the end of its BAR"
    );
    // A table in a BAR that was never placed.
    let (_, mut f) = msix_topology(msix_endpoint(3, 0x2000 | 3));
    f.bars.iter_mut().for_each(|b| b.cpu_address = None);
    assert_eq!(
        locate(&f),
        Err(PciError::UnassignedBar { bdf: f.bdf, bar: 3 })
    );
    let (_, mut f) = msix_topology(msix_endpoint(3, 0x2000 | 3));
    f.caps.clear();
    assert!(matches!(
        locate(&f),
        Err(PciError::MissingCapability { id: 0x11, .. })
    ));
}

#[test]
#[allow(unsafe_code)]
fn msix_table_masking_and_pending_bits() {
    use crate::msix::{locate, Msix};
    let (mut fake, f) = msix_topology(msix_endpoint(3, 0x2000 | 3));
    // Turn MSI on first: enabling MSI-X must turn it off.
    fake.write16(f.bdf, 0x40 + 2, 1);
    // Host memory stands in for BAR 3: the table, then the PBA at 0x2000.
    let mut bar = vec![0u64; 0x4000 / 8];
    for (i, q) in bar.iter_mut().enumerate().take(10 * 2) {
        // Reset state: every vector masked, except two left live by "firmware".
        if i % 2 == 1 && i != 3 && i != 7 {
            *q = 1 << 32;
        }
    }
    let base = bar.as_mut_ptr() as u64;
    let layout = crate::msix::MsixLayout {
        table: base,
        pba: base + 0x2000,
        ..locate(&f).unwrap()
    };
    // SAFETY: `bar` outlives `msix` and nothing else touches it meanwhile.
    let msix = unsafe { Msix::new(layout) };
    msix.enable(&mut fake, &f);
    let control = fake.read16(f.bdf, 0x58 + 2);
    assert_eq!(control & 0xc000, 0x8000, "enabled, function mask clear");
    assert_eq!(fake.read16(f.bdf, 0x40 + 2) & 1, 0, "MSI turned off");
    for v in 0..10 {
        assert_eq!(
            msix.is_masked(v),
            Ok(true),
            "vector {v} masked after enable"
        );
    }
    msix.program(4, 0xfee0_1000_0000_0040, 0x4321).unwrap();
    assert_eq!(msix.message(4), Ok((0xfee0_1000_0000_0040, 0x4321)));
    assert_eq!(bar[8], 0xfee0_1000_0000_0040);
    assert_eq!(msix.is_masked(4), Ok(true), "programming leaves it masked");
    msix.unmask(4).unwrap();
    assert_eq!(msix.is_masked(4), Ok(false));
    assert_eq!(bar[9] >> 32, 0, "vector control word cleared");
    assert_eq!(msix.pending(4), Ok(false));
    bar[0x2000 / 8] = 1 << 4;
    assert_eq!(msix.pending(4), Ok(true));
    assert_eq!(msix.pending(5), Ok(false));
    let none = Err(PciError::NoSuchVector {
        bdf: f.bdf,
        vector: 10,
        vectors: 10,
    });
    assert_eq!(msix.unmask(10), none);
    assert_eq!(msix.pending(10).map(|_| ()), none);
    msix.set_function_mask(&mut fake, true);
    assert_eq!(fake.read16(f.bdf, 0x58 + 2) & 0xc000, 0xc000);
    msix.disable(&mut fake);
    assert_eq!(fake.read16(f.bdf, 0x58 + 2) & 0xc000, 0);
    assert_eq!(msix.is_masked(4), Ok(true));
}

/// [`windows`] with I/O from 0x1000, where firmware puts it (the first
/// 4 KiB are the ISA devices'; a BAR at 0 reads as unassigned).
fn pc_windows() -> Vec<Window> {
    let mut w = windows();
    w[0].pci_base = 0x1000;
    w[0].cpu_base += 0x1000;
    w[0].size -= 0x1000;
    w
}

/// What firmware leaves: everything assigned (here by `assign`), then a
/// function nobody assigned appears on the root bus and one behind a
/// switch port whose window has room. Only those two are placed; nothing else moves.
#[test]
fn only_unassigned_bars_are_filled_and_firmware_bars_stay() {
    let Tree { mut fake, ds0, .. } = tree();
    let windows = pc_windows();
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(assign(&mut fake, &mut topo, &windows), vec![]);
    let firmware = topo.clone();
    fake.add(
        None,
        9,
        0,
        FakeFn::endpoint(0x1234, 0x0001, 0).mem32(0, 0x1000, false),
    );
    fake.add(
        Some(ds0),
        1,
        0,
        FakeFn::endpoint(0x1234, 0x0002, 0).mem32(0, 0x1000, false),
    );
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(fill_unassigned(&mut fake, &mut topo, &windows), vec![]);
    for f in &firmware.functions {
        assert_eq!(
            topo.function(f.bdf).unwrap().bars,
            f.bars,
            "{} moved",
            f.bdf
        );
    }
    let root_new = topo.function(bdf(0, 9, 0)).unwrap().bars[0];
    assert!(root_new.address.is_some());
    check_assignment(&fake, &topo, &windows);
    // The one behind the switch lies inside its port's memory window.
    let behind = topo
        .functions
        .iter()
        .find(|f| f.vendor == 0x1234 && f.device == 0x0002)
        .unwrap();
    let at = behind.bars[0].address.unwrap();
    let port = topo.function(behind.parent.unwrap()).unwrap().bdf;
    let v = fake.read32(port, 0x20);
    let (base, limit) = (
        u64::from(v & 0xfff0) << 16,
        u64::from((v >> 16) & 0xfff0) << 16 | 0xf_ffff,
    );
    assert!(
        base <= at && at + 0xfff <= limit,
        "{at:#x} in {base:#x}-{limit:#x}"
    );
}

#[test]
fn a_bar_with_no_room_is_an_error_and_stays_unassigned() {
    let Tree { mut fake, .. } = tree();
    let windows = pc_windows();
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    assert_eq!(assign(&mut fake, &mut topo, &windows), vec![]);
    // 4 GiB of 32-bit memory fits no window.
    fake.add(
        None,
        9,
        0,
        FakeFn::endpoint(0x1234, 0x0001, 0).mem64(0, 1 << 32, false),
    );
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    let only_32 = [windows[0], windows[1]];
    assert_eq!(
        fill_unassigned(&mut fake, &mut topo, &only_32),
        vec![PciError::WindowExhausted {
            bdf: bdf(0, 9, 0),
            bar: 0,
            size: 1 << 32
        }]
    );
    assert_eq!(topo.function(bdf(0, 9, 0)).unwrap().bars[0].address, None);
}

#[test]
fn an_unassigned_bar_goes_to_the_large_window_not_the_vga_hole() {
    let mut fake = Fake::default();
    fake.add(
        None,
        3,
        0,
        FakeFn::endpoint(0x1234, 0x0001, 0).mem32(0, 0x1000, false),
    );
    let mut topo = enumerate(&mut fake, 0, 0..=255, Policy::default());
    let window = |base: u64, size: u64| Window {
        kind: BarKind::Mem32,
        prefetchable: false,
        cpu_base: base,
        pci_base: base,
        size,
    };
    // As a PC's _CRS lists them: the legacy VGA hole first.
    let windows = [window(0xa_0000, 0x2_0000), window(0xc000_0000, 0x3ec0_0000)];
    assert_eq!(fill_unassigned(&mut fake, &mut topo, &windows), vec![]);
    let bar = topo.functions[0].bars[0];
    assert_eq!(bar.address, Some(0xc000_0000));
    assert_eq!(bar.cpu_address, Some(0xc000_0000));
}
