//! Tests of the MADT parser: QEMU virt's and q35's tables, the captured
//! fixtures, GICC structures of other ACPI versions' lengths and corrupted
//! inputs.

use super::*;
use crate::sdt::tests::make_table;
use alloc::string::ToString;
use alloc::vec;

/// A structure of `ty` with the given little-endian fields after the
/// 2-byte header, its length set to the total.
fn st(ty: u8, fields: &[&[u8]]) -> Vec<u8> {
    let mut s = vec![ty, 0];
    for f in fields {
        s.extend_from_slice(f);
    }
    s[1] = s.len() as u8;
    s
}

fn madt(rev: u8, lic: u32, flags: u32, entries: &[Vec<u8>]) -> Vec<u8> {
    let mut body = lic.to_le_bytes().to_vec();
    body.extend_from_slice(&flags.to_le_bytes());
    for e in entries {
        body.extend_from_slice(e);
    }
    make_table(b"APIC", rev, &body)
}

/// QEMU virt's 80-byte GICC (hw/arm/virt-acpi-build.c, GICv3, virt=on).
fn gicc(i: u32, mpidr: u64) -> Vec<u8> {
    st(
        0xb,
        &[
            &[0, 0],
            &i.to_le_bytes(),     // CPU interface number
            &i.to_le_bytes(),     // UID
            &1u32.to_le_bytes(),  // flags: enabled
            &0u32.to_le_bytes(),  // parking protocol version
            &23u32.to_le_bytes(), // performance GSIV (PPI 7)
            &0u64.to_le_bytes(),  // parked address
            &0u64.to_le_bytes(),  // physical base
            &0u64.to_le_bytes(),  // GICV
            &0u64.to_le_bytes(),  // GICH
            &25u32.to_le_bytes(), // VGIC maintenance (PPI 9)
            &0u64.to_le_bytes(),  // GICR base
            &mpidr.to_le_bytes(), // MPIDR
            &[0, 0, 0, 0],        // efficiency class, reserved, SPE
        ],
    )
}

fn virt() -> Vec<u8> {
    let gicd = st(
        0xc,
        &[
            &[0, 0],
            &0u32.to_le_bytes(),
            &0x0800_0000u64.to_le_bytes(),
            &0u32.to_le_bytes(),
            &[3, 0, 0, 0],
        ],
    );
    let gicr = st(
        0xe,
        &[
            &[0, 0],
            &0x080a_0000u64.to_le_bytes(),
            &0x00f6_0000u32.to_le_bytes(),
        ],
    );
    let its = st(
        0xf,
        &[
            &[0, 0],
            &0u32.to_le_bytes(),
            &0x0808_0000u64.to_le_bytes(),
            &0u32.to_le_bytes(),
        ],
    );
    madt(4, 0, 0, &[gicd, gicc(0, 0), gicc(1, 1), gicr, its])
}

#[test]
fn qemu_virt_gicv3() {
    let m = parse(&virt()).unwrap();
    assert_eq!(m.header.revision, 4);
    assert_eq!((m.local_interrupt_controller_address, m.flags), (0, 0));
    assert!(!m.pcat_compat());
    let offsets: Vec<usize> = m.entries.iter().map(|e| e.offset).collect();
    assert_eq!(offsets, [44, 68, 148, 228, 244]);
    assert_eq!(m.header.length, 264);
    assert_eq!(
        m.gicd(),
        Some(&Gicd {
            id: 0,
            base: 0x0800_0000,
            system_vector_base: 0,
            version: 3
        })
    );
    let c: Vec<&Gicc> = m.gicc().collect();
    assert_eq!(c.len(), 2);
    assert_eq!(
        *c[1],
        Gicc {
            cpu_interface_number: 1,
            uid: 1,
            flags: 1,
            parking_version: 0,
            performance_gsiv: 23,
            parked_address: 0,
            physical_base: 0,
            gicv: 0,
            gich: 0,
            vgic_maintenance_gsiv: 25,
            gicr_base: 0,
            mpidr: 1,
            efficiency_class: Some(0),
            spe_overflow_gsiv: Some(0),
            trbe_gsiv: None,
        }
    );
    assert_eq!(c[0].mpidr, 0);
    let r: Vec<&Gicr> = m.redistributors().collect();
    assert_eq!(
        r,
        [&Gicr {
            flags: 0,
            base: 0x080a_0000,
            length: 0x00f6_0000
        }]
    );
    let i: Vec<&GicIts> = m.its().collect();
    assert_eq!(
        i,
        [&GicIts {
            flags: 0,
            id: 0,
            base: 0x0808_0000
        }]
    );
    assert_eq!(
        m.cpus(),
        [
            Cpu {
                uid: 0,
                id: CpuId::Mpidr(0),
                enabled: true,
                online_capable: false
            },
            Cpu {
                uid: 1,
                id: CpuId::Mpidr(1),
                enabled: true,
                online_capable: false
            }
        ]
    );
    assert_eq!(m.ioapics().count(), 0);
    let s = m.to_string();
    assert!(s.contains("[0x002c] GICD id 0x0 base 0x8000000"), "{s}");
    assert!(s.contains("[0x0094] GICC cpu interface 0x1 uid 0x1 flags 0x1 MPIDR 0x1"));
    assert!(s.contains("[0x00e4] GICR range base 0x80a0000 length 0xf60000"));
    assert!(s.contains("[0x00f4] GIC ITS id 0x0 base 0x8080000"));
}

#[test]
fn qemu_q35() {
    let lapic = |uid: u8, flags: u32| st(0, &[&[uid, uid], &flags.to_le_bytes()]);
    let iso = |src: u8, gsi: u32, flags: u16| {
        st(2, &[&[0, src], &gsi.to_le_bytes(), &flags.to_le_bytes()])
    };
    let mut e = vec![
        lapic(0, 1),
        lapic(1, 1),
        lapic(2, 2), // hotpluggable, not present
        lapic(3, 0), // unusable
        st(
            1,
            &[&[0, 0], &0xfec0_0000u32.to_le_bytes(), &0u32.to_le_bytes()],
        ),
        iso(0, 2, 0),
    ];
    for irq in [5, 9, 10, 11] {
        e.push(iso(irq, irq.into(), 0xd));
    }
    e.push(st(4, &[&[0xff], &0u16.to_le_bytes(), &[1]]));
    let m = parse(&madt(3, 0xfee0_0000, 1, &e)).unwrap();
    assert!(m.pcat_compat());
    assert_eq!(m.local_apic_address(), 0xfee0_0000);
    assert_eq!(m.entries.len(), 11);
    assert_eq!(
        m.entries[1],
        Entry {
            offset: 52,
            kind: EntryKind::LocalApic(LocalApic {
                uid: 1,
                apic_id: 1,
                flags: 1
            })
        }
    );
    assert_eq!(
        m.ioapics().collect::<Vec<_>>(),
        [&IoApic {
            id: 0,
            address: 0xfec0_0000,
            gsi_base: 0
        }]
    );
    let o: Vec<&InterruptOverride> = m.interrupt_overrides().collect();
    assert_eq!(o.len(), 5);
    assert_eq!(
        *o[0],
        InterruptOverride {
            bus: 0,
            source: 0,
            gsi: 2,
            flags: 0
        }
    );
    assert_eq!(
        *o[4],
        InterruptOverride {
            bus: 0,
            source: 11,
            gsi: 11,
            flags: 0xd
        }
    );
    assert_eq!(
        m.entries[10].kind,
        EntryKind::LocalApicNmi(LocalApicNmi {
            uid: 0xff,
            flags: 0,
            lint: 1
        })
    );
    let cpus = m.cpus();
    assert_eq!(cpus.len(), 3);
    assert_eq!(cpus[0].id, CpuId::Apic(0));
    assert!(cpus[1].enabled && !cpus[1].online_capable);
    assert!(!cpus[2].enabled && cpus[2].online_capable);
    assert_eq!(m.gicd(), None);
    let s = m.to_string();
    assert!(s.contains("(PCAT_COMPAT)"));
    assert!(
        s.contains("[0x004c] I/O APIC id 0x0 address 0xfec00000 GSI base 0x0"),
        "{s}"
    );
    assert!(s.contains("IRQ 0x9 -> GSI 0x9 flags 0xd (active-high, level)"));
    assert!(s.contains("local APIC NMI uid 0xff flags 0x0 LINT1"));
}

#[test]
fn other_types() {
    let e = vec![
        st(3, &[&5u16.to_le_bytes(), &9u32.to_le_bytes()]),
        st(5, &[&[0, 0], &0xfee0_0000_0000u64.to_le_bytes()]),
        st(
            9,
            &[
                &[0, 0],
                &0x100u32.to_le_bytes(),
                &1u32.to_le_bytes(),
                &7u32.to_le_bytes(),
            ],
        ),
        st(
            0xa,
            &[&0u16.to_le_bytes(), &u32::MAX.to_le_bytes(), &[1, 0, 0, 0]],
        ),
        st(
            0xd,
            &[
                &[0, 0],
                &2u32.to_le_bytes(),
                &0x0802_0000u64.to_le_bytes(),
                &1u32.to_le_bytes(),
                &64u16.to_le_bytes(),
                &80u16.to_le_bytes(),
            ],
        ),
        st(
            0x10,
            &[
                &1u16.to_le_bytes(),
                &0u32.to_le_bytes(),
                &0x1000u64.to_le_bytes(),
                &0x2000u64.to_le_bytes(),
            ],
        ),
        st(0x80, &[&[1, 2, 3]]),
    ];
    let m = parse(&madt(5, 0xfee0_0000, 0, &e)).unwrap();
    let k: Vec<&EntryKind> = m.entries.iter().map(|e| &e.kind).collect();
    assert_eq!(*k[0], EntryKind::NmiSource(NmiSource { flags: 5, gsi: 9 }));
    assert_eq!(
        *k[1],
        EntryKind::LocalApicAddressOverride {
            address: 0xfee0_0000_0000
        }
    );
    assert_eq!(m.local_apic_address(), 0xfee0_0000_0000);
    assert_eq!(
        *k[2],
        EntryKind::LocalX2Apic(LocalX2Apic {
            x2apic_id: 0x100,
            flags: 1,
            uid: 7
        })
    );
    assert_eq!(
        *k[3],
        EntryKind::LocalX2ApicNmi(LocalX2ApicNmi {
            flags: 0,
            uid: u32::MAX,
            lint: 1
        })
    );
    assert_eq!(
        *k[4],
        EntryKind::GicMsiFrame(GicMsiFrame {
            id: 2,
            base: 0x0802_0000,
            flags: 1,
            spi_count: 64,
            spi_base: 80
        })
    );
    assert_eq!(
        *k[5],
        EntryKind::MultiprocessorWakeup(MultiprocessorWakeup {
            mailbox_version: 1,
            mailbox_address: 0x1000,
            reset_vector: Some(0x2000)
        })
    );
    assert_eq!(
        *k[6],
        EntryKind::Unknown {
            r#type: 0x80,
            length: 5
        }
    );
    assert_eq!(
        m.cpus(),
        [Cpu {
            uid: 7,
            id: CpuId::Apic(0x100),
            enabled: true,
            online_capable: false
        }]
    );
    let s = m.to_string();
    assert!(s.contains("unknown type 0x80 length 0x5"), "{s}");
    assert!(s.contains("reset vector 0x2000"));
}

#[test]
fn gicc_lengths() {
    // ACPI 5.1 (76 bytes): no efficiency class or SPE; 6.5 (82): TRBE.
    let mut short = gicc(0, 0x100);
    short.truncate(76);
    short[1] = 76;
    let mut long = gicc(1, 0x101);
    long.extend_from_slice(&[0x21, 0x00]);
    long[1] = 82;
    long[78] = 0x20; // SPE overflow GSIV
    let m = parse(&madt(6, 0, 0, &[short, long])).unwrap();
    let c: Vec<&Gicc> = m.gicc().collect();
    assert_eq!(c[0].mpidr, 0x100);
    assert_eq!(
        (
            c[0].efficiency_class,
            c[0].spe_overflow_gsiv,
            c[0].trbe_gsiv
        ),
        (None, None, None)
    );
    assert_eq!(c[1].mpidr, 0x101);
    assert_eq!(
        (
            c[1].efficiency_class,
            c[1].spe_overflow_gsiv,
            c[1].trbe_gsiv
        ),
        (Some(0), Some(0x20), Some(0x21))
    );
    assert_eq!(m.entries[1].offset, 44 + 76);
}

/// QEMU virt's GICC `i` as QEMU 10.0 builds it (virtualization off, PMU
/// on); GICv2 also gives the CPU interface, GICV and GICH frames.
fn qemu_gicc(i: u32, gicv2: bool) -> Gicc {
    let v2 = |a: u64| if gicv2 { a } else { 0 };
    Gicc {
        cpu_interface_number: i,
        uid: i,
        flags: GICC_ENABLED,
        parking_version: 0,
        performance_gsiv: 23,
        parked_address: 0,
        physical_base: v2(0x0801_0000),
        gicv: v2(0x0804_0000),
        gich: v2(0x0803_0000),
        vgic_maintenance_gsiv: 0,
        gicr_base: 0,
        mpidr: i.into(),
        efficiency_class: Some(0),
        spe_overflow_gsiv: Some(0),
        trbe_gsiv: None,
    }
}

/// Tables QEMU 10.0 built (fixtures/capture.sh), compared whole.
#[test]
fn qemu_fixtures() {
    use crate::mcfg::tests::qemu_header;
    let entry = |offset, kind| Entry { offset, kind };
    let gicd = |version| {
        entry(
            44,
            EntryKind::Gicd(Gicd {
                id: 0,
                base: 0x0800_0000,
                system_vector_base: 0,
                version,
            }),
        )
    };
    let gicv3: [&[u8]; 2] = [
        include_bytes!("../../fixtures/virt-smmuv3/APIC.bin"),
        include_bytes!("../../fixtures/virt-pxb/APIC.bin"),
    ];
    for t in gicv3 {
        let m = parse(t).unwrap();
        assert_eq!(
            m,
            Madt {
                header: qemu_header(b"APIC", t, 4),
                local_interrupt_controller_address: 0,
                flags: 0,
                entries: vec![
                    gicd(3),
                    entry(68, EntryKind::Gicc(qemu_gicc(0, false))),
                    entry(148, EntryKind::Gicc(qemu_gicc(1, false))),
                    entry(
                        228,
                        EntryKind::Gicr(Gicr {
                            flags: 0,
                            base: 0x080a_0000,
                            length: 0x00f6_0000
                        })
                    ),
                    entry(
                        244,
                        EntryKind::GicIts(GicIts {
                            flags: 0,
                            id: 0,
                            base: 0x0808_0000
                        })
                    ),
                ]
            }
        );
        assert_eq!(m.cpus().len(), 2);
    }

    let t = include_bytes!("../../fixtures/virt-no-its/APIC.bin");
    let m = parse(t).unwrap();
    assert_eq!(
        m,
        Madt {
            header: qemu_header(b"APIC", t, 4),
            local_interrupt_controller_address: 0,
            flags: 0,
            entries: vec![
                gicd(2),
                entry(68, EntryKind::Gicc(qemu_gicc(0, true))),
                entry(148, EntryKind::Gicc(qemu_gicc(1, true))),
                // GICv2m: SPIs 80..144 (irqmap VIRT_GIC_V2M 48 + 32).
                entry(
                    228,
                    EntryKind::GicMsiFrame(GicMsiFrame {
                        id: 0,
                        base: 0x0802_0000,
                        flags: 1,
                        spi_count: 64,
                        spi_base: 80
                    })
                ),
            ]
        }
    );
    assert_eq!((m.redistributors().count(), m.its().count()), (0, 0));

    let q35: [&[u8]; 2] = [
        include_bytes!("../../fixtures/q35-intel-iommu/APIC.bin"),
        include_bytes!("../../fixtures/q35-device-iotlb/APIC.bin"),
    ];
    for t in q35 {
        let lapic = |offset, i| {
            entry(
                offset,
                EntryKind::LocalApic(LocalApic {
                    uid: i,
                    apic_id: i,
                    flags: APIC_ENABLED,
                }),
            )
        };
        let iso = |offset, source, flags| {
            entry(
                offset,
                EntryKind::InterruptOverride(InterruptOverride {
                    bus: 0,
                    source,
                    gsi: if source == 0 { 2 } else { source.into() },
                    flags,
                }),
            )
        };
        let m = parse(t).unwrap();
        assert_eq!(
            m,
            Madt {
                header: qemu_header(b"APIC", t, 3),
                local_interrupt_controller_address: 0xfee0_0000,
                flags: PCAT_COMPAT,
                entries: vec![
                    lapic(44, 0),
                    lapic(52, 1),
                    entry(
                        60,
                        EntryKind::IoApic(IoApic {
                            id: 0,
                            address: 0xfec0_0000,
                            gsi_base: 0
                        })
                    ),
                    iso(72, 0, 0),
                    iso(82, 5, 0xd),
                    iso(92, 9, 0xd),
                    iso(102, 10, 0xd),
                    iso(112, 11, 0xd),
                    entry(
                        122,
                        EntryKind::LocalApicNmi(LocalApicNmi {
                            uid: 0xff,
                            flags: 0,
                            lint: 1
                        })
                    ),
                ]
            }
        );
        assert_eq!(
            m.cpus().iter().map(|c| c.id).collect::<Vec<_>>(),
            [CpuId::Apic(0), CpuId::Apic(1)]
        );
    }
}

#[test]
fn errors() {
    let lapic = st(0, &[&[0, 0], &1u32.to_le_bytes()]);
    let check = |entries: &[Vec<u8>], offset: usize, kind: ErrorKind| {
        let e = parse(&madt(3, 0, 0, entries)).unwrap_err();
        assert_eq!((e.offset, e.kind), (offset, kind), "{e}");
    };
    // Entry shorter than its type's minimum (a 6-byte local APIC).
    let mut short = lapic.clone();
    short.truncate(6);
    short[1] = 6;
    check(
        &[lapic.clone(), short],
        53,
        ErrorKind::BadEntryLength { length: 6 },
    );
    // GICC with ACPI 5.0's 40-byte length.
    let mut g = gicc(0, 0);
    g.truncate(40);
    g[1] = 40;
    check(&[g], 45, ErrorKind::BadEntryLength { length: 40 });
    // Zero and one byte lengths would not advance.
    check(
        &[vec![0x80, 0]],
        45,
        ErrorKind::BadEntryLength { length: 0 },
    );
    check(
        &[vec![0x80, 1]],
        45,
        ErrorKind::BadEntryLength { length: 1 },
    );
    // Entry running past the end of the table.
    let mut past = lapic.clone();
    past[1] = 12;
    check(
        &[lapic.clone(), past],
        52,
        ErrorKind::Truncated { need: 12, have: 8 },
    );
    // A lone type byte at the end.
    check(
        &[lapic, vec![0]],
        53,
        ErrorKind::Truncated { need: 1, have: 0 },
    );
    // No room for the flags.
    let e = parse(&make_table(b"APIC", 3, &[0; 6])).unwrap_err();
    assert_eq!(
        (e.offset, e.kind),
        (40, ErrorKind::Truncated { need: 4, have: 2 })
    );
}

/// Every truncation and many single-byte corruptions either parse or
/// give an error: no panic, no overflow (tests run with debug checks).
#[test]
fn corrupted_never_panics() {
    let t = virt();
    for len in HEADER_LEN..t.len() {
        let mut c = t[..len].to_vec();
        c[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        crate::sdt::tests::fix_checksum(&mut c);
        let _ = parse(&c);
    }
    for i in HEADER_LEN..t.len() {
        for v in [0u8, 1, 2, 0x7f, 0xff] {
            let mut c = t.clone();
            c[i] = v;
            crate::sdt::tests::fix_checksum(&mut c);
            if let Ok(m) = parse(&c) {
                let _ = (m.to_string(), m.cpus());
            }
        }
    }
}

fn local_apic(uid: u8, id: u8, flags: u32) -> Vec<u8> {
    st(0, &[&[uid, id], &flags.to_le_bytes()])
}

fn local_x2apic(id: u32, flags: u32, uid: u32) -> Vec<u8> {
    st(
        9,
        &[
            &[0, 0],
            &id.to_le_bytes(),
            &flags.to_le_bytes(),
            &uid.to_le_bytes(),
        ],
    )
}

#[test]
fn ap_start_plan_starts_enabled_cpus_one_list_and_parks_the_rest() {
    let t = madt(
        5,
        0xfee0_0000,
        PCAT_COMPAT,
        &[
            local_apic(0, 0, APIC_ENABLED),
            local_apic(1, 1, APIC_ENABLED),
            // Disabled and not online-capable: absent.
            local_apic(2, 2, 0),
            // A hot-plug slot.
            local_apic(3, 3, APIC_ONLINE_CAPABLE),
            local_apic(4, 4, APIC_ENABLED),
            // x2APIC ids past xAPIC's reach, one listed twice.
            local_x2apic(0x100, APIC_ENABLED, 5),
            local_x2apic(0x100, APIC_ENABLED, 5),
            local_x2apic(0x101, APIC_ENABLED, 6),
            local_x2apic(0x102, APIC_ENABLED, 7),
        ],
    );
    let m = parse(&t).unwrap();
    let plan = m.ap_start_plan(0, 4);
    assert_eq!(
        plan,
        ApStartPlan {
            start: vec![1, 4, 0x100],
            parked: vec![0x101, 0x102],
            hotplug_slots: 1,
            needs_x2apic: true,
        }
    );
    // The boot CPU need not be first, and is never started.
    let plan = m.ap_start_plan(4, 3);
    assert_eq!(plan.start, [0, 1]);
    assert!(!plan.needs_x2apic);
}

#[test]
fn ap_start_plan_for_one_cpu_and_for_the_q35_fixture() {
    let m = parse(&make_table(b"APIC", 5, &{
        let mut b = 0xfee0_0000u32.to_le_bytes().to_vec();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&local_apic(0, 0, APIC_ENABLED));
        b
    }))
    .unwrap();
    assert_eq!(m.ap_start_plan(0, 8), ApStartPlan::default());
    let q35 = parse(include_bytes!("../../fixtures/q35-intel-iommu/APIC.bin")).unwrap();
    let plan = q35.ap_start_plan(0, 8);
    assert_eq!(plan.parked, []);
    assert!(!plan.needs_x2apic);
}

#[test]
fn redistributors_from_gicr_structures_else_from_each_usable_gicc() {
    let m = parse(include_bytes!("../../fixtures/virt-smmuv3/APIC.bin")).unwrap();
    assert_eq!(m.redistributor_regions(), [(0x080a_0000, 0x00f6_0000)]);
    // No GICR structure: each CPU's frame, enabled or online-capable ones
    // only, sized by the distributor's version.
    let per_cpu = |i: u32, flags: u32, gicr: u64| {
        let mut c = gicc(i, i.into());
        c[12..16].copy_from_slice(&flags.to_le_bytes());
        c[60..68].copy_from_slice(&gicr.to_le_bytes());
        c
    };
    let gicd = |version: u8| {
        st(
            0xc,
            &[
                &[0, 0],
                &0u32.to_le_bytes(),
                &0x0800_0000u64.to_le_bytes(),
                &0u32.to_le_bytes(),
                &[version, 0, 0, 0],
            ],
        )
    };
    let cpus = [
        per_cpu(0, GICC_ENABLED, 0x080a_0000),
        per_cpu(1, 0, 0x080c_0000),
        per_cpu(2, GICC_ONLINE_CAPABLE, 0x080e_0000),
    ];
    let mut entries = vec![gicd(3)];
    entries.extend(cpus.iter().cloned());
    let m = parse(&madt(5, 0, 0, &entries)).unwrap();
    assert_eq!(
        m.redistributor_regions(),
        [(0x080a_0000, GICR_FRAME_V3), (0x080e_0000, GICR_FRAME_V3)]
    );
    entries[0] = gicd(4);
    let m = parse(&madt(5, 0, 0, &entries)).unwrap();
    assert_eq!(m.redistributor_regions()[0], (0x080a_0000, GICR_FRAME_V4));
}
