//! Tests of the SPCR parser: QEMU virt's PL011, a revision 4 16550 on an I/O
//! port, the captured fixtures and malformed tables.

use super::*;
use crate::sdt::tests::make_table;
use alloc::string::ToString;
use alloc::vec::Vec;

/// An SPCR body (from offset 36) with the common fields; `tail` is what
/// follows offset 76 (reserved or UART clock, then revision 4's fields).
#[allow(clippy::too_many_arguments)]
fn body(iface: u8, gas: [u8; 4], addr: u64, itype: u8, irq: u8, gsiv: u32, baud: u8) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&[iface, 0, 0, 0]);
    b.extend_from_slice(&gas);
    b.extend_from_slice(&addr.to_le_bytes());
    b.extend_from_slice(&[itype, irq]);
    b.extend_from_slice(&gsiv.to_le_bytes());
    // baud, parity, stop bits, flow control (RTS/CTS), terminal, language
    b.extend_from_slice(&[baud, 0, 1, 2, 0, 0]);
    b.extend_from_slice(&0xffffu16.to_le_bytes());
    b.extend_from_slice(&0xffffu16.to_le_bytes());
    b.extend_from_slice(&[0, 0, 0]);
    b.extend_from_slice(&0u32.to_le_bytes());
    b.push(0);
    assert_eq!(b.len() + HEADER_LEN, 76);
    b
}

/// QEMU virt: PL011 at VIRT_UART0 0x0900_0000, SPI 1 = GSIV 33, rev 2.
fn virt() -> Vec<u8> {
    let mut b = body(3, [0, 32, 0, 3], 0x0900_0000, INT_GIC, 0, 33, 3);
    b.extend_from_slice(&[0; 4]);
    make_table(b"SPCR", 2, &b)
}

/// A revision 4 16550 on I/O port 0x3f8, IRQ 4, 115200, namespace ".".
fn com1(precise: u32, ns_offset: u16, ns_len: u16) -> Vec<u8> {
    let mut b = body(0, [1, 8, 0, 1], 0x3f8, INT_PIC_8259 | INT_IOAPIC, 4, 4, 7);
    b.extend_from_slice(&1_843_200u32.to_le_bytes());
    b.extend_from_slice(&precise.to_le_bytes());
    b.extend_from_slice(&ns_len.to_le_bytes());
    b.extend_from_slice(&ns_offset.to_le_bytes());
    b.extend_from_slice(b".\0");
    make_table(b"SPCR", 4, &b)
}

#[test]
fn qemu_virt_pl011() {
    let s = parse(&virt()).unwrap();
    assert_eq!(s.header.revision, 2);
    assert_eq!(s.header.length, 80);
    assert_eq!((s.interface_type, s.interface_name), (3, "Arm PL011"));
    assert_eq!(
        s.base_address,
        Gas {
            space_id: SPACE_SYSTEM_MEMORY,
            bit_width: 32,
            bit_offset: 0,
            access_size: 3,
            address: 0x0900_0000
        }
    );
    assert_eq!((s.interrupt_type, s.irq, s.gsiv), (INT_GIC, 0, 33));
    assert_eq!(s.configured_baud_rate, 3);
    assert_eq!((s.parity, s.stop_bits, s.flow_control), (0, 1, 2));
    assert_eq!((s.terminal_type, s.language), (0, 0));
    assert_eq!((s.pci_device_id, s.pci_vendor_id), (0xffff, 0xffff));
    assert_eq!(
        (
            s.pci_bus,
            s.pci_device,
            s.pci_function,
            s.pci_flags,
            s.pci_segment
        ),
        (0, 0, 0, 0, 0)
    );
    assert_eq!(
        (
            s.uart_clock_frequency,
            s.precise_baud_rate,
            &s.namespace_string
        ),
        (None, None, &None)
    );
    assert_eq!(
        s.console(),
        Some(Console {
            kind: ConsoleKind::Pl011,
            mmio: true,
            address: 0x0900_0000,
            baud: Some(9600)
        })
    );
    let t = s.to_string();
    assert!(t.contains("interface type 0x3 (Arm PL011)"), "{t}");
    assert!(t.contains("base address system memory 0x9000000 (space 0x0, bit width 32"));
    assert!(t.contains("interrupt type 0x8 (GIC) IRQ 0x0 GSIV 0x21"));
    assert!(t.contains("baud rate code 0x3 (9600)"));
}

#[test]
fn io_port_16550_rev4() {
    let s = parse(&com1(0, 88, 2)).unwrap();
    assert_eq!(s.header.revision, 4);
    assert_eq!(s.interface_name, "16550");
    assert_eq!(
        s.base_address,
        Gas {
            space_id: SPACE_SYSTEM_IO,
            bit_width: 8,
            bit_offset: 0,
            access_size: 1,
            address: 0x3f8
        }
    );
    assert_eq!((s.interrupt_type, s.irq, s.gsiv), (3, 4, 4));
    assert_eq!(s.uart_clock_frequency, Some(1_843_200));
    assert_eq!(s.precise_baud_rate, Some(0));
    assert_eq!(s.namespace_string.as_deref(), Some("."));
    assert_eq!(
        s.console(),
        Some(Console {
            kind: ConsoleKind::Uart16550,
            mmio: false,
            address: 0x3f8,
            baud: Some(115_200)
        })
    );
    let t = s.to_string();
    assert!(t.contains("(8259, I/O APIC) IRQ 0x4"), "{t}");
    assert!(t.contains("namespace string \".\""));
    // A precise rate overrides the code.
    let s = parse(&com1(1_500_000, 88, 2)).unwrap();
    assert_eq!(s.console().unwrap().baud, Some(1_500_000));
}

#[test]
fn console_cases() {
    let mut s = parse(&virt()).unwrap();
    s.configured_baud_rate = 0;
    assert_eq!(s.console().unwrap().baud, None);
    assert!(s.to_string().contains("(as is)"));
    s.interface_type = 0xe;
    assert_eq!(s.console().unwrap().kind, ConsoleKind::Other(0xe));
    s.base_address.space_id = 2;
    assert_eq!(s.console(), None);
    s.base_address.space_id = 0;
    s.base_address.address = 0;
    assert_eq!(s.console(), None);
    // Revision 3: the UART clock, nothing more.
    let mut b = body(0x12, [0, 32, 0, 3], 0x1000_0000, 0x10, 0, 10, 7);
    b.extend_from_slice(&3_686_400u32.to_le_bytes());
    let s = parse(&make_table(b"SPCR", 3, &b)).unwrap();
    assert_eq!(s.uart_clock_frequency, Some(3_686_400));
    assert_eq!(s.precise_baud_rate, None);
    assert_eq!(s.console().unwrap().kind, ConsoleKind::Uart16550);
}

/// QEMU 10.0's virt SPCR (fixtures/capture.sh), compared whole: the
/// same in every virt configuration.
#[test]
fn qemu_fixtures() {
    let tables: [&[u8]; 3] = [
        include_bytes!("../../fixtures/virt-smmuv3/SPCR.bin"),
        include_bytes!("../../fixtures/virt-no-its/SPCR.bin"),
        include_bytes!("../../fixtures/virt-pxb/SPCR.bin"),
    ];
    for t in tables {
        let s = parse(t).unwrap();
        assert_eq!(
            s,
            Spcr {
                header: crate::mcfg::tests::qemu_header(b"SPCR", t, 2),
                interface_type: 3,
                interface_name: "Arm PL011",
                base_address: Gas {
                    space_id: SPACE_SYSTEM_MEMORY,
                    bit_width: 32,
                    bit_offset: 0,
                    access_size: 3,
                    address: 0x0900_0000
                },
                interrupt_type: INT_GIC,
                irq: 0,
                gsiv: 33,
                configured_baud_rate: 3,
                parity: 0,
                stop_bits: 1,
                flow_control: 2,
                terminal_type: 0,
                language: 0,
                pci_device_id: 0xffff,
                pci_vendor_id: 0xffff,
                pci_bus: 0,
                pci_device: 0,
                pci_function: 0,
                pci_flags: 0,
                pci_segment: 0,
                uart_clock_frequency: None,
                precise_baud_rate: None,
                namespace_string: None,
            }
        );
        // The hand-built table of `qemu_virt_pl011` is the same bar the header.
        let mut ours = parse(&virt()).unwrap();
        ours.header = s.header.clone();
        assert_eq!(ours, s);
    }
}

#[test]
fn errors() {
    for rev in [0, 5] {
        let mut t = virt();
        t[8] = rev;
        crate::sdt::tests::fix_checksum(&mut t);
        let e = parse(&t).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (8, ErrorKind::UnknownRevision { revision: rev })
        );
    }
    // One byte short of revision 2's fixed fields.
    let t = make_table(b"SPCR", 2, &virt()[HEADER_LEN..79]);
    let e = parse(&t).unwrap_err();
    assert_eq!(
        (e.offset, e.kind),
        (36, ErrorKind::Truncated { need: 44, have: 43 })
    );
    // Revision 4 needs its extra fields.
    let t = make_table(b"SPCR", 4, &virt()[HEADER_LEN..]);
    assert!(matches!(
        parse(&t).unwrap_err().kind,
        ErrorKind::Truncated { .. }
    ));
    // Namespace string past the end, or over the fixed fields.
    for (off, len) in [(88, 3), (89, 2), (0xffff, 1), (84, 2)] {
        let e = parse(&com1(0, off, len)).unwrap_err();
        assert_eq!(
            (e.offset, e.kind),
            (86, ErrorKind::BadOffset { offset: off.into() })
        );
    }
}

#[test]
fn pc_console_from_spcr_else_com1() {
    assert_eq!(pc_console(None), Uart16550At::Port(COM1));
    // A PL011 is no 16550: COM1.
    let virt = parse(&virt()).unwrap();
    assert_eq!(pc_console(Some(&virt)), Uart16550At::Port(COM1));
    // A 16550 on I/O port 0x2f8 (COM2).
    let mut b = body(0, [1, 8, 0, 1], 0x2f8, INT_IOAPIC, 3, 3, 7);
    b.extend_from_slice(&[0; 4]);
    let com2 = parse(&make_table(b"SPCR", 2, &b)).unwrap();
    assert_eq!(pc_console(Some(&com2)), Uart16550At::Port(0x2f8));
    // A memory-mapped 16550 with 32-bit registers (interface 0x12).
    let mut b = body(0x12, [0, 32, 0, 3], 0xfe03_2000, INT_IOAPIC, 0, 20, 7);
    b.extend_from_slice(&[0; 4]);
    let mmio = parse(&make_table(b"SPCR", 2, &b)).unwrap();
    assert_eq!(
        pc_console(Some(&mmio)),
        Uart16550At::Mmio {
            address: 0xfe03_2000,
            stride: 4
        }
    );
    // Redirection off (address 0): COM1.
    let mut off = com2.clone();
    off.base_address.address = 0;
    assert_eq!(pc_console(Some(&off)), Uart16550At::Port(COM1));
}

#[test]
fn mmio_uarts_for_an_arm_console() {
    let virt = parse(&virt()).unwrap();
    assert_eq!(
        virt.mmio_uart(),
        Ok(Some(MmioUart {
            kind: MmioUartKind::Pl011,
            address: 0x0900_0000,
            baud: Some(9600),
            clock: None
        }))
    );
    let mut sbsa = virt.clone();
    sbsa.interface_type = 0x0e;
    assert_eq!(
        sbsa.mmio_uart().unwrap().unwrap().kind,
        MmioUartKind::SbsaUart
    );
    // A DesignWare-style 16550: 32-bit registers 4 bytes apart, its clock.
    let mut b = body(0x12, [0, 32, 0, 3], 0xfe03_2000, INT_GIC, 0, 40, 7);
    b.extend_from_slice(&1_843_200u32.to_le_bytes());
    let dw = parse(&make_table(b"SPCR", 3, &b)).unwrap();
    assert_eq!(
        dw.mmio_uart(),
        Ok(Some(MmioUart {
            kind: MmioUartKind::Ns16550 {
                reg_shift: 2,
                reg_io_width: 4
            },
            address: 0xfe03_2000,
            baud: Some(115_200),
            clock: Some(1_843_200)
        }))
    );
    // Byte registers packed together, clock unknown (0).
    let mut b = body(0, [0, 8, 0, 1], 0x1c02_8000, INT_GIC, 0, 40, 0);
    b.extend_from_slice(&0u32.to_le_bytes());
    let packed = parse(&make_table(b"SPCR", 3, &b)).unwrap().mmio_uart();
    assert_eq!(
        packed.map(|u| u.map(|u| (u.kind, u.clock, u.baud))),
        Ok(Some((
            MmioUartKind::Ns16550 {
                reg_shift: 0,
                reg_io_width: 1
            },
            None,
            None
        )))
    );
    // COM1 on an I/O port, a UART nobody drives, redirection off.
    assert_eq!(
        parse(&com1(0, 88, 2)).unwrap().mmio_uart(),
        Err(MmioUartError::IoSpace)
    );
    let mut dcc = virt.clone();
    dcc.interface_type = 0x0f;
    assert_eq!(dcc.mmio_uart(), Err(MmioUartError::Unsupported(0x0f)));
    assert!(dcc.mmio_uart().unwrap_err().to_string().contains("Arm DCC"));
    let mut off = virt.clone();
    off.base_address.address = 0;
    assert_eq!(off.mmio_uart(), Ok(None));
}
