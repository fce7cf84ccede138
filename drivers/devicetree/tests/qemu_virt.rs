//! Every field read from QEMU 10.0.2 `virt` blobs (fixtures/capture.sh),
//! checked against what hw/arm/virt.c builds: base_memmap (GIC 0x0800_0000,
//! ITS 0x0808_0000, redistributors 0x080a_0000, UART 0x0900_0000, fw_cfg
//! 0x0902_0000, SMMU 0x0905_0000), the high ECAM at 256 GiB + 256 MiB,
//! a15irqmap (UART SPI 1, SMMU SPIs 74-77) and the timer PPIs 13/14/11/10.
mod common;

use common::{cells, fixture, string, TNode};
use devicetree::*;

const SMMU_PHANDLE: u32 = 0x8005;
const ITS_PHANDLE: u32 = 0x8004;

fn parse(name: &str) -> Platform {
    Platform::parse(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

const fn spi(number: u32, flags: u32) -> Interrupt {
    Interrupt {
        kind: IrqKind::Spi,
        number,
        flags,
    }
}

const fn ppi(number: u32, flags: u32) -> Interrupt {
    Interrupt {
        kind: IrqKind::Ppi,
        number,
        flags,
    }
}

fn virt_pcie() -> PcieHost {
    let window = |space, addr, size| PciWindow {
        space,
        prefetchable: false,
        pci_addr: addr,
        cpu_addr: addr,
        size,
    };
    let map = |phandle| IdMap {
        entries: vec![IdMapEntry {
            rid_base: 0,
            phandle,
            out_base: 0,
            length: 0x1_0000,
        }],
        mask: None,
    };
    PcieHost {
        path: "/pcie@10000000".into(),
        // VIRT_HIGH_PCIE_ECAM: 256 MiB after the 64 MiB REDIST2 slot at 256 GiB.
        ecam: Region {
            base: 0x40_1000_0000,
            size: 0x1000_0000,
        },
        bus_range: 0..=255,
        domain: Some(0),
        windows: vec![
            PciWindow {
                pci_addr: 0,
                ..window(PciSpace::Io, 0x3eff_0000, 0x1_0000)
            },
            window(PciSpace::Mem32, 0x1000_0000, 0x2eff_0000),
            window(PciSpace::Mem64, 0x80_0000_0000, 0x80_0000_0000),
        ],
        dma_coherent: true,
        iommu_map: Some(map(SMMU_PHANDLE)),
        msi_map: Some(map(ITS_PHANDLE)),
        iommu_parent: None,
        msi_parent: None,
    }
}

#[test]
fn virt_smmuv3_every_field() {
    let p = parse("virt-smmuv3");
    assert_eq!(p.model.as_deref(), Some("linux,dummy-virt"));
    assert_eq!(
        p.blob_size, 8096,
        "the fixture is packed (capture.sh trims QEMU's 1 MiB of free space)"
    );
    assert_eq!(
        p.ram,
        [Region {
            base: 0x4000_0000,
            size: 0x4000_0000
        }]
    );
    assert!(p.reserved.is_empty() && p.reserved_memory.is_empty());
    let chosen = p.chosen.as_ref().unwrap();
    assert_eq!(
        chosen.bootargs, None,
        "no -kernel, so boot.c wrote no bootargs"
    );
    assert_eq!(chosen.stdout_path.as_deref(), Some("/pl011@9000000"));
    assert_eq!(chosen.stdout.as_deref(), Some("/pl011@9000000"));
    let console = p.console.as_ref().unwrap();
    assert_eq!(
        console,
        &Uart {
            path: "/pl011@9000000".into(),
            kind: UartKind::Pl011,
            base: 0x0900_0000,
            size: 0x1000,
            interrupt: Some(spi(1, 4)),
            baud: None,
            clock_frequency: None,
        }
    );
    assert_eq!(console.interrupt.unwrap().intid(), 33);
    assert_eq!(
        p.fw_cfg,
        Some(FwCfg {
            path: "/fw-cfg@9020000".into(),
            base: 0x0902_0000,
            size: 0x18,
            dma_coherent: true,
        })
    );
    assert_eq!(
        p.gic,
        Gic::V3(GicV3 {
            path: "/intc@8000000".into(),
            phandle: Some(0x8003),
            distributor: Region {
                base: 0x0800_0000,
                size: 0x1_0000
            },
            redistributors: vec![Region {
                base: 0x080a_0000,
                size: 0xf6_0000
            }],
            redistributor_stride: None,
            maintenance: None,
            its: vec![Its {
                path: "/intc@8000000/its@8080000".into(),
                base: 0x0808_0000,
                size: 0x2_0000,
                phandle: Some(ITS_PHANDLE),
                msi_controller: true,
            }],
        })
    );
    assert_eq!(
        p.timer,
        Timer {
            path: "/timer".into(),
            secure_phys: ppi(13, 4),
            nonsecure_phys: ppi(14, 4),
            virt: ppi(11, 4),
            hyp_phys: ppi(10, 4),
            hyp_virt: None,
            clock_frequency: None,
        }
    );
    assert_eq!(p.timer.nonsecure_phys.intid(), 30);
    assert_eq!(
        p.psci,
        Some(Psci {
            path: "/psci".into(),
            method: PsciMethod::Hvc,
            compatible: "arm,psci-1.0".into()
        })
    );
    let cpu = |n: u64| Cpu {
        path: format!("/cpus/cpu@{n}"),
        mpidr: n,
        enable_method: Some(EnableMethod::Psci),
    };
    assert_eq!(p.cpus, [cpu(0), cpu(1)]);
    assert_eq!(
        p.smmus,
        [SmmuV3 {
            path: "/smmuv3@9050000".into(),
            base: 0x0905_0000,
            size: 0x2_0000,
            phandle: Some(SMMU_PHANDLE),
            irqs: SmmuIrqs {
                combined: None,
                eventq: Some(spi(74, 1)),
                priq: Some(spi(75, 1)),
                cmdq_sync: Some(spi(76, 1)),
                gerror: Some(spi(77, 1)),
            },
            dma_coherent: true,
            iommu_cells: 1,
        }]
    );
    assert_eq!(p.pcie, [virt_pcie()]);
    assert_eq!(p.notes, []);
}

#[test]
fn stream_id_and_device_id_equal_the_rid_on_virt() {
    let p = parse("virt-smmuv3");
    let host = &p.pcie[0];
    for rid in [0, 0x8, 0x100, 0x8000, 0x8100, 0xffff] {
        assert_eq!(
            p.iommu_for(host, rid),
            Some(IommuTarget {
                phandle: SMMU_PHANDLE,
                smmu_base: Some(0x0905_0000),
                stream_id: rid.into()
            })
        );
        assert_eq!(
            p.msi_for(host, rid),
            Some(MsiTarget {
                phandle: ITS_PHANDLE,
                base: Some(0x0808_0000),
                device_id: rid.into()
            })
        );
    }
}

#[test]
fn bootargs_come_with_a_kernel() {
    let p = parse("virt-smmuv3-bootargs");
    assert_eq!(
        p.chosen.as_ref().unwrap().bootargs.as_deref(),
        Some("console=ttyAMA0 x=y")
    );
    // Otherwise the same machine.
    let mut base = parse("virt-smmuv3");
    base.chosen = p.chosen.clone();
    // Packed blobs: the bootargs string makes this one longer.
    base.blob_size = p.blob_size;
    assert_eq!(p, base);
}

#[test]
fn pxb_changes_nothing_in_the_devicetree() {
    let p = parse("virt-pxb");
    assert_eq!(p, parse("virt-smmuv3"));
    // The expander's bus 0x80 and the bus behind its root port sit inside
    // the one bridge's bus-range and identity maps.
    let host = &p.pcie[0];
    assert!(host.bus_range.contains(&0x80) && host.bus_range.contains(&0x81));
    assert_eq!(p.iommu_for(host, 0x8100).unwrap().stream_id, 0x8100);
    assert_eq!(p.msi_for(host, 0x8000).unwrap().device_id, 0x8000);
}

#[test]
fn gicv2_has_v2m_frames_and_cpu_masks_in_ppi_flags() {
    let p = parse("virt-gicv2");
    assert_eq!(
        p.gic,
        Gic::V2(GicV2 {
            path: "/intc@8000000".into(),
            phandle: Some(0x8003),
            distributor: Region {
                base: 0x0800_0000,
                size: 0x1_0000
            },
            cpu_interface: Region {
                base: 0x0801_0000,
                size: 0x1_0000
            },
            v2m: vec![V2mFrame {
                path: "/intc@8000000/v2m@8020000".into(),
                base: 0x0802_0000,
                size: 0x1000,
                phandle: Some(0x8004),
            }],
        })
    );
    // GICv2 PPI flags carry the CPU mask (two CPUs) in bits 8-15.
    assert_eq!(p.timer.nonsecure_phys, ppi(14, 0x304));
    assert_eq!(p.timer.nonsecure_phys.intid(), 30);
    // msi-map names the v2m frame, which has no DeviceIDs; the map still resolves.
    let host = &p.pcie[0];
    assert_eq!(
        p.msi_for(host, 0x10),
        Some(MsiTarget {
            phandle: 0x8004,
            base: Some(0x0802_0000),
            device_id: 0x10
        })
    );
    assert_eq!(
        p.iommu_for(host, 0x10).unwrap().smmu_base,
        Some(0x0905_0000)
    );
    assert_eq!(p.notes, []);
}

#[test]
fn repacked_and_nop_laden_blobs_read_the_same() {
    let p = parse("virt-smmuv3");
    let tree = TNode::fixture("virt-smmuv3");
    for nops in [None, Some("*"), Some("cpu@0")] {
        let blob = tree.to_blob_with(nops);
        let q = Platform::parse(&blob).unwrap();
        assert_eq!(
            q,
            Platform {
                blob_size: q.blob_size,
                ..p.clone()
            },
            "nops: {nops:?}"
        );
    }
    // A blob longer than totalsize is read up to totalsize.
    let mut long = tree.to_blob();
    long.extend_from_slice(&[0xff; 64]);
    assert!(Platform::parse(&long).is_ok());
    assert_eq!(blob_size(fixture("virt-smmuv3")), Ok(8096));
}

#[test]
fn display_reports_the_topology() {
    let text = parse("virt-smmuv3").to_string();
    print!("{text}");
    for line in [
        "devicetree: linux,dummy-virt (8096 bytes)",
        "  ram 0x40000000..0x80000000 (1024 MiB)",
        "  console PL011 /pl011@9000000 at 0x9000000+0x1000, irq SPI 1 (INTID 33, level)",
        "  GICv3 /intc@8000000 distributor 0x8000000..0x8010000, redistributors 0x80a0000..0x9000000",
        "    ITS /intc@8000000/its@8080000 at 0x8080000+0x20000, phandle 0x8004",
        "  cpu /cpus/cpu@1 MPIDR 0x1 (psci)",
        "    eventq SPI 74 (INTID 106, edge)",
        "  PCIe /pcie@10000000 ECAM 0x4010000000..0x4020000000, buses 0-255, domain 0",
        "    mem64 pci 0x8000000000 at cpu 0x8000000000, size 0x8000000000",
        "    iommu-map [rid 0x0+0x10000 -> phandle 0x8005 id 0x0]",
    ] {
        assert!(text.lines().any(|l| l == line), "missing line {line:?}");
    }
}

/// A tree edited from the real one: maps with a mask and several entries.
#[test]
fn iommu_map_with_mask_and_several_entries() {
    let mut t = TNode::fixture("virt-smmuv3");
    let pcie = t.node("/pcie@10000000");
    pcie.set(
        "iommu-map",
        cells(&[
            0x0,
            SMMU_PHANDLE,
            0x1000,
            0x100,
            0x100,
            SMMU_PHANDLE,
            0x0,
            0x100,
        ]),
    );
    pcie.set("iommu-map-mask", cells(&[0x1ff]));
    pcie.set("msi-map", cells(&[0x10, ITS_PHANDLE, 0x20, 0x8]));
    let blob = t.to_blob();
    let p = Platform::parse(&blob).unwrap();
    let host = &p.pcie[0];
    let sid = |rid| p.iommu_for(host, rid).map(|t| t.stream_id);
    assert_eq!(sid(0x10), Some(0x1010));
    assert_eq!(sid(0x110), Some(0x10));
    assert_eq!(sid(0x210), Some(0x1010), "the mask drops bit 9");
    assert_eq!(sid(0x1ff), Some(0xff));
    let did = |rid| p.msi_for(host, rid).map(|t| t.device_id);
    assert_eq!(did(0x10), Some(0x20));
    assert_eq!(did(0x17), Some(0x27));
    assert_eq!(
        did(0x18),
        None,
        "outside every msi-map entry: no MSI translation"
    );
    assert_eq!(did(0x0f), None);
}

#[test]
fn without_maps_the_parent_properties_give_the_identity() {
    let mut t = TNode::fixture("virt-smmuv3");
    let pcie = t.node("/pcie@10000000");
    pcie.remove("iommu-map").remove("msi-map");
    let p = Platform::parse(&t.to_blob()).unwrap();
    assert_eq!(
        p.iommu_for(&p.pcie[0], 0x8),
        None,
        "no iommu-map and no iommus: no IOMMU"
    );
    assert_eq!(p.msi_for(&p.pcie[0], 0x8), None);

    let pcie = t.node("/pcie@10000000");
    pcie.set("iommus", cells(&[SMMU_PHANDLE, 0x7]));
    pcie.set("msi-parent", cells(&[ITS_PHANDLE]));
    let p = Platform::parse(&t.to_blob()).unwrap();
    let host = &p.pcie[0];
    assert_eq!(
        (host.iommu_parent, host.msi_parent),
        (Some(SMMU_PHANDLE), Some(ITS_PHANDLE))
    );
    assert_eq!(
        p.iommu_for(host, 0x8),
        Some(IommuTarget {
            phandle: SMMU_PHANDLE,
            smmu_base: Some(0x0905_0000),
            stream_id: 0x8
        })
    );
    assert_eq!(p.msi_for(host, 0x8).unwrap().device_id, 0x8);
}

#[test]
fn optional_facts_missing_give_none_and_notes() {
    let mut t = TNode::fixture("virt-smmuv3");
    t.remove_child("chosen")
        .remove_child("psci")
        .remove_child("fw-cfg@9020000");
    t.remove_child("smmuv3@9050000")
        .remove_child("pcie@10000000")
        .remove_child("pl011@9000000");
    let p = Platform::parse(&t.to_blob()).unwrap();
    assert_eq!(
        (p.chosen, p.console, p.fw_cfg, p.psci),
        (None, None, None, None)
    );
    assert!(p.pcie.is_empty() && p.smmus.is_empty());
    let notes: Vec<&str> = p.notes.iter().map(|n| n.message).collect();
    assert_eq!(
        notes,
        [
            "no /chosen node",
            "no arm,smmu-v3 node",
            "no UART node",
            "no qemu,fw-cfg-mmio node",
            "no PSCI node",
            "no pci-host-ecam-generic node"
        ]
    );
}

#[test]
fn stdout_through_an_alias_with_options() {
    let mut t = TNode::fixture("virt-smmuv3");
    t.node("/chosen")
        .set("stdout-path", string("serial0:115200n8"));
    let p = Platform::parse(&t.to_blob()).unwrap();
    assert_eq!(p.chosen.unwrap().stdout.as_deref(), Some("/pl011@9000000"));
    assert_eq!(p.console.unwrap().base, 0x0900_0000);
}

#[test]
fn reg_is_translated_through_bus_ranges() {
    let mut t = TNode::fixture("virt-smmuv3");
    let mut uart = t.node("/pl011@9000000").clone();
    uart.name = "serial@1000".into();
    uart.set("reg", cells(&[0x1000, 0x1000]));
    let mut bus = TNode::new("soc");
    bus.set("compatible", string("simple-bus"));
    bus.set("#address-cells", cells(&[1]))
        .set("#size-cells", cells(&[1]));
    // Bus 0x0..0x10000 appears at CPU 0x1_2000_0000.
    bus.set("ranges", cells(&[0x0, 0x1, 0x2000_0000, 0x1_0000]));
    bus.child(uart);
    t.remove_child("pl011@9000000").child(bus);
    t.node("/chosen")
        .set("stdout-path", string("/soc/serial@1000"));
    let p = Platform::parse(&t.to_blob()).unwrap();
    assert_eq!(p.console.as_ref().map(|c| c.base), Some(0x1_2000_1000));
}

/// `dma-coherent` on the SMMU node is what makes its walks coherent
/// (QEMU writes it); without it the SMMU is non-coherent, as in Linux's
/// `arm_smmu_device_dt_probe`. A value-less property: any value counts.
#[test]
fn smmu_dma_coherent_decides_coherency() {
    let p = parse("virt-smmuv3");
    assert!(p.smmus[0].dma_coherent);
    let mut t = TNode::fixture("virt-smmuv3");
    t.node("/smmuv3@9050000").remove("dma-coherent");
    let p = Platform::parse(&t.to_blob()).unwrap();
    assert!(!p.smmus[0].dma_coherent);
    assert!(!p.to_string().contains(", coherent"), "{p}");
    t.node("/smmuv3@9050000").set("dma-coherent", Vec::new());
    assert!(Platform::parse(&t.to_blob()).unwrap().smmus[0].dma_coherent);
}

/// Two SMMUs, the host bridge's `iommu-map` sending buses 0x00-0x7f to
/// the first and 0x80-0xff to the second: each RID is routed to its own
/// SMMU with the StreamID the map gives.
#[test]
fn smmu_route_follows_the_iommu_map_to_each_smmu() {
    const SECOND: u32 = 0x9000;
    let mut t = TNode::fixture("virt-smmuv3");
    let mut second = t.node("/smmuv3@9050000").clone();
    second.name = "smmuv3@9070000".into();
    second.set("reg", cells(&[0, 0x0907_0000, 0, 0x2_0000]));
    second.set("phandle", cells(&[SECOND]));
    t.child(second);
    t.node("/pcie@10000000").set(
        "iommu-map",
        cells(&[
            0x0,
            SMMU_PHANDLE,
            0x0,
            0x8000,
            0x8000,
            SECOND,
            0x8000,
            0x8000,
        ]),
    );
    let p = Platform::parse(&t.to_blob()).unwrap();
    assert_eq!(p.smmus.len(), 2);
    assert_eq!(p.smmu_route(0, 0x0010), Some((0x0905_0000, 0x10)));
    assert_eq!(p.smmu_route(0, 0x7fff), Some((0x0905_0000, 0x7fff)));
    assert_eq!(p.smmu_route(0, 0x8000), Some((0x0907_0000, 0x8000)));
    assert_eq!(p.smmu_route(0, 0xc310), Some((0x0907_0000, 0xc310)));
    assert_eq!(p.smmu_route(1, 0x0010), None, "no host bridge in domain 1");
}
