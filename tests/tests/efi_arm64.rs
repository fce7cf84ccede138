//! The arm64 UEFI loader under Debian's edk2 on QEMU virt, with a probe
//! `Image` in place of the kernel (the kernel itself boots this way as the
//! `qemu-virt-uefi` board). The probe checks the entry contract from
//! inside: it prints through virt's PL011 what it finds (MMU off, the
//! hand-over magic at x1, a devicetree in x0) and spins. And the ESP
//! disk `qemu-run image` writes boots by itself, from removable media.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tests::{qemu_lock, qemu_run, scratch_dir, workspace_root};

const EDK2: &str = "/usr/share/qemu-efi-aarch64/QEMU_EFI.fd";

/// An arm64 `Image` (64-byte header, then code) that prints
/// "IMAGE:" then M if SCTLR_EL1.M is clear, H if x1 points at "IOMMHOF1",
/// D if x0 is not zero, and a newline.
fn probe_image() -> Vec<u8> {
    let movz_w = |rd: u32, imm: u32| 0x5280_0000 | (imm << 5) | rd;
    let strb = |rt: u32, rn: u32| 0x3900_0000 | (rn << 5) | rt;
    let mut code: Vec<u32> = vec![0xd2a1_2009]; // movz x9, #0x0900, lsl #16: the PL011
    let putc = |code: &mut Vec<u32>, c: char| code.extend([movz_w(10, c as u32), strb(10, 9)]);
    for c in "IMAGE:".chars() {
        putc(&mut code, c);
    }
    code.extend([0xd538_100d, 0x3700_006d]); // mrs x13, sctlr_el1; tbnz x13, #0, +12
    putc(&mut code, 'M');
    code.push(0xf940_002b); // ldr x11, [x1]
    for (shift, half) in [0x4f49u32, 0x4d4d, 0x4f48, 0x3146].into_iter().enumerate() {
        let op = if shift == 0 { 0xd280_0000 } else { 0xf280_0000 };
        code.push(op | ((shift as u32) << 21) | (half << 5) | 12); // movz/movk x12
    }
    code.extend([0xeb0c_017f, 0x5400_0061]); // cmp x11, x12; b.ne +12
    putc(&mut code, 'H');
    code.push(0xb400_0060); // cbz x0, +12
    putc(&mut code, 'D');
    putc(&mut code, '\n');
    code.push(0x1400_0000); // b .
    let mut image = Vec::new();
    image.extend_from_slice(&0x1400_0010u32.to_le_bytes()); // b +64: past the header
    image.extend_from_slice(&0u32.to_le_bytes());
    image.extend_from_slice(&0u64.to_le_bytes()); // text_offset
    image.extend_from_slice(&0x1_0000u64.to_le_bytes()); // image_size
    image.extend_from_slice(&8u64.to_le_bytes()); // flags: anywhere in RAM
    image.extend_from_slice(&[0; 24]);
    image.extend_from_slice(b"ARM\x64");
    image.extend_from_slice(&[0; 4]);
    for c in code {
        image.extend_from_slice(&c.to_le_bytes());
    }
    image.resize(4096, 0);
    image
}

/// The patched QEMU's directory, from `qemu-run qemu status`.
/// Debian's edk2 for virt, installed through the runner when missing
/// (as the boards that boot through it are).
fn install_edk2() {
    let run = qemu_run(&["firmware", "--board", "qemu-virt-uefi"]);
    assert_eq!(run.code, Some(0), "{}", run.text());
    assert_eq!(run.stdout.trim(), EDK2, "{}", run.text());
}

fn qemu_dir() -> PathBuf {
    let run = qemu_run(&["qemu", "status"]);
    let line = run
        .stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("cache entry: "))
        .unwrap_or_else(|| panic!("no cache entry in `qemu-run qemu status`:\n{}", run.text()));
    PathBuf::from(line.trim())
}

fn build_loader(payload: &Path) -> PathBuf {
    let target_dir = workspace_root().join("target").join("tests-efi");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-q", "-p", "efi", "--release", "--target"])
        .arg("aarch64-unknown-uefi")
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(workspace_root())
        .env_remove("CARGO_TARGET_DIR")
        .env("IOMMU_EFI_KERNEL", payload)
        .stdin(Stdio::null())
        .status()
        .expect("run cargo");
    assert!(
        status.success(),
        "building the arm64 loader failed: {status}"
    );
    target_dir.join("aarch64-unknown-uefi/release/loader.efi")
}

/// Boots the loader on `machine` and returns the console up to the
/// probe's line (or all of it after 60 s).
fn boot(qemu: &Path, loader: &Path, machine: &str) -> String {
    let mut child = Command::new(qemu.join("bin/qemu-system-aarch64"))
        .arg("-L")
        .arg(qemu.join("share"))
        .args(["-M", machine, "-cpu", "max", "-m", "1G", "-nodefaults"])
        .args(["-display", "none", "-serial", "stdio", "-bios", EDK2])
        .arg("-kernel")
        .arg(loader)
        .args(["-append", "probe=1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start QEMU");
    let mut out = child.stdout.take().expect("QEMU's stdout");
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(n) = out.read(&mut buf) {
            if n == 0 {
                break;
            }
            text.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&text).contains("IMAGE:") && text.ends_with(b"\n") {
                break;
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    });
    let start = Instant::now();
    while !reader.is_finished() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    reader.join().unwrap_or_default()
}

#[test]
fn arm64_loader_enters_an_image_per_the_contract() {
    install_edk2();
    let payload = scratch_dir().join("probe-Image");
    std::fs::write(&payload, probe_image()).expect("write the probe Image");
    let loader = build_loader(&payload);
    let qemu = qemu_dir();
    let _qemu = qemu_lock();
    // ACPI (edk2's default on virt): no devicetree in the configuration table.
    let acpi = boot(&qemu, &loader, "virt");
    assert!(acpi.contains("command line \"probe=1\""), "{acpi}");
    assert!(
        acpi.contains("IMAGE:MH\r\n") || acpi.contains("IMAGE:MH\n"),
        "{acpi}"
    );
    // Devicetree only: x0 carries it.
    let dt = boot(&qemu, &loader, "virt,acpi=off");
    assert!(dt.contains("RSDP 0x0;"), "{dt}");
    assert!(dt.contains("IMAGE:MHD"), "{dt}");
}

/// `qemu-run image --board qemu-virt-uefi` writes an ESP that edk2 boots
/// by itself (no `-kernel`): the loader, as `EFI/BOOT/BOOTAA64.EFI`, gets
/// no LoadOptions, so the kernel runs with its defaults, prints its whole
/// plan and powers off through PSCI (QEMU exits). The bare machine has no
/// IOMMU and none of the board's devices: what it cannot express SKIPs,
/// and nothing fails.
#[test]
fn esp_image_boots_from_removable_media() {
    install_edk2();
    let qemu = qemu_dir();
    let _qemu = qemu_lock();
    let out = scratch_dir().join("esp-qemu-virt-uefi");
    let _ = std::fs::remove_dir_all(&out);
    let run = qemu_run(&[
        "image",
        "--board",
        "qemu-virt-uefi",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.text());
    let console = out.join("console.txt");
    let drive = format!(
        "if=none,id=esp,format=raw,snapshot=on,file={}",
        out.join("esp.img").display()
    );
    let mut child = Command::new(qemu.join("bin/qemu-system-aarch64"))
        .arg("-L")
        .arg(qemu.join("share"))
        .args([
            "-M",
            "virt,gic-version=3",
            "-cpu",
            "max",
            "-m",
            "1G",
            "-smp",
            "2",
        ])
        .args([
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
        ])
        .args([
            "-bios",
            EDK2,
            "-drive",
            &drive,
            "-device",
            "virtio-blk-pci,drive=esp",
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&console).expect("console file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start QEMU");
    let start = Instant::now();
    let exited = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break Some(status);
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&console).unwrap_or_default()).into_owned();
    assert!(exited.is_some(), "QEMU still running after 120 s:\n{text}");
    assert!(text.contains("command line \"\""), "{text}");
    assert!(text.contains("started by our UEFI loader"), "{text}");
    let plan: usize = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("1.."))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no TAP plan:\n{text}"));
    let last = format!("ok {plan} - ");
    assert!(
        text.lines()
            .any(|l| l.starts_with(&last) || l.starts_with(&format!("not {last}"))),
        "the plan's last test did not report:\n{text}"
    );
    let failed: Vec<&str> = text.lines().filter(|l| l.starts_with("not ok")).collect();
    assert!(
        failed.is_empty(),
        "a bare machine fails tests instead of skipping them: {failed:#?}"
    );
}
