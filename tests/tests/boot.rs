//! Boots every board through the real `qemu-run` and requires a full pass;
//! checks that bad input fails fast with a clear message. Every QEMU run
//! here has a `--timeout`, so no test can hang on a stuck guest.
use std::time::Duration;

use tests::{board_names, qemu_lock, qemu_run, scratch_dir, silent_arm64_image, summary_rows};

/// Every board passes in the checking mode (`iommu.check`: table writes,
/// invalidations, frees and tags verified at each DMA), which finds
/// nothing, and the JUnit report says so. The plain mode is not booted
/// on its own here: the stress run below boots it twice on every board
/// (under load), and the guest-error run once more.
#[test]
fn every_board_passes() {
    let boards = board_names();
    assert!(boards.len() >= 2, "boards: {boards:?}");
    let junit = scratch_dir().join("boot-junit.xml");
    let _ = std::fs::remove_file(&junit);

    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "run",
        "--board",
        "all",
        "--append",
        "iommu.check",
        "--timeout",
        "120",
        "--junit",
        junit.to_str().unwrap(),
    ]);
    let text = run.text();
    assert_eq!(run.code, Some(0), "not every board passed checked:\n{text}");
    for b in &boards {
        let row = summary_rows(&run.stdout)
            .into_iter()
            .find(|l| l.split_whitespace().next() == Some(b.as_str()))
            .unwrap_or_else(|| panic!("no summary row for {b}:\n{text}"));
        assert_eq!(row.split_whitespace().nth(1), Some("PASS"), "{row}\n{text}");
    }
    assert!(
        text.contains("iommu.check: the driver's table writes"),
        "{text}"
    );
    assert!(!text.contains("iommu.check: live entry"), "{text}");
    let xml = std::fs::read_to_string(&junit).expect("JUnit report written");
    assert!(!xml.contains("<failure"), "{xml}");
    for b in &boards {
        assert!(xml.contains(&format!("<testsuite name=\"{b}\"")), "{xml}");
    }
}

/// The UEFI board boots the loader through OVMF, and the kernel runs on
/// what the loader handed over (its memory map, RSDP and command line),
/// not on a PVH start info. `every_board_passes` runs its whole suite.
#[test]
fn q35_uefi_boots_through_the_loader() {
    assert!(board_names().iter().any(|b| b == "qemu-q35-uefi"));
    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "run",
        "--board",
        "qemu-q35-uefi",
        "--filter",
        "boot::",
        "--timeout",
        "120",
    ]);
    let text = run.text();
    assert_eq!(run.code, Some(0), "{text}");
    assert!(text.contains("efi loader: kernel at "), "{text}");
    assert!(text.contains("a PC started through UEFI"), "{text}");
    assert!(text.contains("from UEFI memory map"), "{text}");
    assert!(
        text.contains("ok 1 - boot::memory_map_matches_qemu"),
        "{text}"
    );
}

/// The arm64 UEFI board: edk2 starts the loader, which enters the Image
/// with the hand-over block in x1; the kernel takes its RAM, command line
/// and ACPI tables from the block (edk2 gives no devicetree) and drives
/// both user-created SMMUs. `every_board_passes` runs its whole suite.
#[test]
fn virt_uefi_boots_through_the_loader() {
    assert!(board_names().iter().any(|b| b == "qemu-virt-uefi"));
    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "run",
        "--board",
        "qemu-virt-uefi",
        "--filter",
        "boot::,discovery::",
        "--timeout",
        "120",
    ]);
    let text = run.text();
    assert_eq!(run.code, Some(0), "{text}");
    assert!(text.contains("efi loader: kernel at "), "{text}");
    assert!(text.contains("started by our UEFI loader"), "{text}");
    assert!(text.contains("from UEFI memory map"), "{text}");
    assert!(text.contains("(RSDP from the boot information)"), "{text}");
    assert!(text.contains("iommu   SMMUv3 at 0xc020000"), "{text}");
    assert!(
        text.contains("ok 1 - boot::memory_map_matches_qemu"),
        "{text}"
    );
}

/// The variant matrix: qemu-virt and qemu-q35 under each of their named
/// configurations (`[[variant]]` in their board files: memory, CPUs, CPU
/// model, EL2 entry, narrower PASIDs, deeper and expanded hierarchies,
/// extra devices). Every run passes, and every SKIP says why. The boards
/// that extend qemu-q35 inherit its variants and differ only in VT-d's
/// levels; they are left out to keep the time bounded.
#[test]
fn every_variant_passes() {
    let listed = qemu_run(&["boards", "--variants"]);
    assert_eq!(listed.code, Some(0), "{}", listed.text());
    let _qemu = qemu_lock();
    // Every board's matrix runs before anything is judged, so one run
    // shows every variant that fails.
    let mut failures = Vec::new();
    let mut took = Duration::ZERO;
    for board in ["qemu-virt", "qemu-q35"] {
        let variants: Vec<&str> = listed
            .stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|v| v.split(':').next() == Some(board))
            .collect();
        assert!(variants.len() >= 8, "{board}: {variants:?}");
        let run = qemu_run(&[
            "run",
            "--board",
            board,
            "--variant",
            "all",
            "--timeout",
            "120",
        ]);
        took += run.elapsed;
        // The matrix's own summary, and how long it took, in the test's log.
        let summary = run
            .stdout
            .lines()
            .skip_while(|l| !l.starts_with("variant "))
            .collect::<Vec<_>>()
            .join("\n");
        eprintln!("{summary}\n{board}: the matrix took {:.1?}", run.elapsed);
        let not_passed: Vec<&str> = variants
            .iter()
            .copied()
            .filter(|v| {
                let row = summary
                    .lines()
                    .find(|l| l.split_whitespace().next() == Some(v));
                row.and_then(|r| r.split_whitespace().nth(1)) != Some("PASS")
            })
            .collect();
        let unreasoned: Vec<&str> = run
            .stdout
            .lines()
            .filter(|l| l.starts_with("ok "))
            .filter(|l| {
                l.split_once(" # SKIP")
                    .is_some_and(|(_, why)| why.trim().is_empty())
            })
            .collect();
        if run.code != Some(0) || !not_passed.is_empty() || !unreasoned.is_empty() {
            failures.push(format!(
                "{board}: exit {:?}; not passed: {not_passed:?}; SKIPs without a reason: \
                 {unreasoned:?}\n{}",
                run.code,
                // Without the runs' QEMU command lines.
                run.digest()
                    .lines()
                    .filter(|l| !l.contains(" -kernel "))
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
    }
    eprintln!("the variant matrix took {took:.1?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Bad input that needs no kernel build: each fails with exit status 2
/// (setup error) or 1 (a run that failed), a message that says what is
/// wrong, and quickly.
#[test]
fn bad_input_fails_clearly() {
    let dir = scratch_dir();

    let run = qemu_run(&["run", "--board", "no-such-board", "--timeout", "5"]);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(
        run.stderr
            .contains("qemu-run: error: unknown board `no-such-board`; known boards: ")
            && run.stderr.contains("qemu-virt"),
        "{}",
        run.text()
    );

    let missing = dir.join("no-such-kernel");
    let run = qemu_run(&[
        "run",
        "--board",
        "qemu-virt",
        "--kernel",
        missing.to_str().unwrap(),
        "--timeout",
        "5",
    ]);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(
        run.stderr.contains("qemu-run: error: kernel ")
            && run.stderr.contains("no-such-kernel")
            && run.stderr.contains("No such file"),
        "{}",
        run.text()
    );

    let empty = dir.join("empty-kernel");
    std::fs::write(&empty, b"").unwrap();
    let run = qemu_run(&[
        "run",
        "--board",
        "qemu-virt",
        "--kernel",
        empty.to_str().unwrap(),
        "--timeout",
        "5",
    ]);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(run.stderr.contains("the file is empty"), "{}", run.text());

    let run = qemu_run(&["run", "--board", "qemu-virt", "--filter", "mm alloc"]);
    assert_eq!(run.code, Some(2), "{}", run.text());
    assert!(
        run.stderr.contains("must not contain spaces"),
        "{}",
        run.text()
    );

    // A kernel that boots and never prints: killed at the timeout.
    let silent = dir.join("silent-Image");
    std::fs::write(&silent, silent_arm64_image()).unwrap();
    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "run",
        "--board",
        "qemu-virt",
        "--kernel",
        silent.to_str().unwrap(),
        "--timeout",
        "5",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(
        run.stdout.contains("timeout after 5s (QEMU killed)")
            && run.stdout.contains("kernel printed nothing"),
        "{}",
        run.text()
    );
    assert!(
        run.elapsed < Duration::from_secs(30),
        "took {:?}",
        run.elapsed
    );
}

/// `qemu-run image` writes what the boards boot: its `Image` is the one
/// `run` builds, and both arm64 boot paths start it (QEMU's `-kernel` at
/// the base of RAM, U-Boot's `booti` elsewhere); the U-Boot board's disk
/// holds it and the script.
#[test]
fn the_image_command_writes_what_the_boards_boot() {
    let out = scratch_dir().join("image-qemu-virt-uboot");
    let _ = std::fs::remove_dir_all(&out);
    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "image",
        "--board",
        "qemu-virt-uboot",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.text());
    for f in ["Image", "boot.scr", "disk.img", "README.txt"] {
        assert!(out.join(f).is_file(), "{f} missing:\n{}", run.text());
    }
    let image = std::fs::read(out.join("Image")).unwrap();
    let built = tests::workspace_root().join("target/kernel/aarch64-unknown-none/release/Image");
    assert_eq!(
        image,
        std::fs::read(built).unwrap(),
        "not the Image run boots"
    );
    assert_eq!(&image[0x38..0x3c], b"ARM\x64");
    let readme = std::fs::read_to_string(out.join("README.txt")).unwrap();
    assert!(readme.contains("exit=semihosting"), "{readme}");
    let kernel = out.join("Image");
    for board in ["qemu-virt", "qemu-virt-uboot"] {
        boots_given_kernel(board, &kernel);
    }
    // The UEFI boards: the loader.efi written is the one the board boots
    // (the same bytes as the runner's build, and it passes when given
    // back with --kernel), and the ESP holds it at the removable-media path.
    for (board, arch, boot_name) in [
        ("qemu-virt-uefi", "aarch64", "BOOTAA64.EFI"),
        ("qemu-q35-uefi", "x86_64", "BOOTX64.EFI"),
    ] {
        let out = scratch_dir().join(format!("image-{board}"));
        let _ = std::fs::remove_dir_all(&out);
        let run = qemu_run(&["image", "--board", board, "--out", out.to_str().unwrap()]);
        assert_eq!(run.code, Some(0), "{board}:\n{}", run.text());
        for f in ["loader.efi", "startup.nsh", "esp.img", "README.txt"] {
            assert!(
                out.join(f).is_file(),
                "{board}: {f} missing:\n{}",
                run.text()
            );
        }
        let loader = std::fs::read(out.join("loader.efi")).unwrap();
        assert_eq!(&loader[..2], b"MZ", "{board}: not a PE image");
        let built = tests::workspace_root().join(format!(
            "target/kernel/{arch}-unknown-uefi/release/loader.efi"
        ));
        assert_eq!(
            loader,
            std::fs::read(built).unwrap(),
            "{board}: not the loader a run boots"
        );
        let nsh = std::fs::read_to_string(out.join("startup.nsh")).unwrap();
        assert!(
            nsh.starts_with(&format!("\\EFI\\BOOT\\{boot_name} ")) && nsh.contains("exit="),
            "{board}: {nsh}"
        );
        let esp = std::fs::read(out.join("esp.img")).unwrap();
        assert_eq!(esp[446 + 4], 0xef, "{board}: not an EFI system partition");
        let kernel = out.join("loader.efi");
        let run = boots_given_kernel(board, &kernel);
        assert!(
            run.text().contains("efi loader: kernel at "),
            "{board}:\n{}",
            run.text()
        );
    }
}

/// `board` passes a short run on `kernel` (what `qemu-run image` wrote).
fn boots_given_kernel(board: &str, kernel: &std::path::Path) -> tests::Run {
    let run = qemu_run(&[
        "run",
        "--board",
        board,
        "--kernel",
        kernel.to_str().unwrap(),
        "--filter",
        "exceptions::*",
        "--timeout",
        "120",
    ]);
    assert_eq!(run.code, Some(0), "{board}:\n{}", run.text());
    run
}

/// A filter that selects no test is a failure that names the filter (the
/// kernel bails out with "no test matches filter ..."). Needs the kernel.
#[test]
fn filter_matching_no_test_fails() {
    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "run",
        "--board",
        "all",
        "--filter",
        "no_such_test",
        "--timeout",
        "60",
    ]);
    let text = run.text();
    // 1, not 2: the kernel built and booted, and the run failed.
    assert_eq!(run.code, Some(1), "{text}");
    let rows = summary_rows(&run.stdout);
    assert_eq!(rows.len(), board_names().len(), "{text}");
    for line in rows {
        assert_eq!(
            line.split_whitespace().nth(1),
            Some("FAIL"),
            "{line}\n{text}"
        );
        assert!(
            line.contains("no_such_test") || line.contains("no test matched the filter"),
            "the reason should name the filter: {line}\n{text}"
        );
    }
}

/// An unexpected fault prints a crash report and ends the run as failed on
/// every board (`crash=unexpected` faults before the tests start).
#[test]
fn crash_report_fails_the_run() {
    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "run",
        "--board",
        "all",
        "--append",
        "crash=unexpected",
        "--timeout",
        "60",
    ]);
    let text = run.text();
    assert_eq!(run.code, Some(1), "{text}");
    assert_eq!(
        run.stdout.matches("*** CRASH on cpu 0").count(),
        board_names().len(),
        "{text}"
    );
    for line in summary_rows(&run.stdout) {
        assert_eq!(
            line.split_whitespace().nth(1),
            Some("FAIL"),
            "{line}\n{text}"
        );
        assert!(line.contains("bail out: crash:"), "{line}\n{text}");
    }
}

/// QEMU refusing its command line is reported as such, not as a test failure.
#[test]
fn qemu_error_is_reported() {
    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "run",
        "--board",
        "qemu-virt",
        "--timeout",
        "30",
        "--",
        "-device",
        "no-such-device",
    ]);
    let text = run.text();
    assert_ne!(run.code, Some(0), "{text}");
    assert!(
        text.contains("QEMU failed to start") && text.contains("no-such-device"),
        "{text}"
    );
}

/// A firmware table that lies (an IORT whose node count runs past it, with
/// a valid checksum, added to q35's tables with `-acpitable`) is reported
/// with table, offset and problem, and the kernel goes on with the rest:
/// only the test that demands clean tables fails.
#[test]
fn corrupt_firmware_table_is_reported_and_survived() {
    let fixture = tests::workspace_root().join("drivers/acpi_tables/fixtures/virt-smmuv3/IORT.bin");
    let mut iort = std::fs::read(&fixture).expect("IORT fixture");
    iort[36] = 9; // node count
    iort[9] = 0;
    let sum = iort.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    iort[9] = 0u8.wrapping_sub(sum);
    let bad = scratch_dir().join("lying-iort.bin");
    std::fs::write(&bad, &iort).unwrap();
    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "run",
        "--board",
        "qemu-q35",
        "--filter",
        "discovery::*",
        "--timeout",
        "60",
        "--",
        "-acpitable",
        &format!("file={}", bad.display()),
    ]);
    let text = run.text();
    assert_eq!(run.code, Some(1), "{text}");
    assert!(
        text.contains("IORT at offset 0x24: count 9 does not fit the table"),
        "{text}"
    );
    let failed: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("not ok"))
        .collect();
    assert_eq!(
        failed,
        ["not ok 1 - discovery::tables_parse_cleanly"],
        "{text}"
    );
}

/// A device whose BAR is bigger than the host bridge window (an ivshmem
/// with a 1 TiB BAR on virt, whose 64-bit window is 512 GiB) is reported
/// with its size, and the rest of the bus is placed and works: only the
/// test that demands an error-free enumeration fails.
#[test]
fn oversized_bar_is_reported_and_survived() {
    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "run",
        "--board",
        "qemu-virt",
        "--filter",
        "pci::*",
        "--timeout",
        "60",
        "--",
        "-object",
        "memory-backend-ram,id=huge,size=1T,reserve=off",
        "-device",
        "ivshmem-plain,memdev=huge",
    ]);
    let text = run.text();
    assert_eq!(run.code, Some(1), "{text}");
    assert!(
        text.contains("BAR 2 (0x10000000000 bytes) does not fit its window"),
        "{text}"
    );
    let failed: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("not ok"))
        .collect();
    assert_eq!(failed, ["not ok 1 - pci::topology_matches_board"], "{text}");
    for passed in [
        "pci::bars_disjoint_and_inside_windows",
        "pci::edu_dma_round_trip_with_msi",
        "pci::msix_masked_vector_waits_for_unmask",
    ] {
        assert!(
            run.stdout
                .lines()
                .any(|l| l.starts_with("ok ") && l.ends_with(passed)),
            "{passed} should pass:\n{text}"
        );
    }
}

/// `qemu-run bench` boots every board twice (real time, then virtual time
/// under -icount) and prints one row per benchmark and board; a filter that
/// matches no benchmark fails and says so.
#[test]
fn benchmarks_report_figures() {
    let _qemu = qemu_lock();
    let run = qemu_run(&["bench", "--board", "all", "--timeout", "300"]);
    let text = run.text();
    assert_eq!(run.code, Some(0), "{text}");
    for b in board_names() {
        for name in ["irq::edu_msi_latency", "vclock::edu_dma_msi_round_trip"] {
            let row = run
                .stdout
                .lines()
                .find(|l| {
                    let mut w = l.split_whitespace();
                    w.next() == Some(b.as_str()) && w.next() == Some(name)
                })
                .unwrap_or_else(|| panic!("no row for {b} {name}:\n{text}"));
            assert_eq!(row.split_whitespace().nth(2), Some("1000"), "{row}");
        }
    }
    let run = qemu_run(&[
        "bench",
        "--board",
        "qemu-virt",
        "--filter",
        "no_such_bench",
        "--timeout",
        "60",
    ]);
    assert_eq!(run.code, Some(1), "{}", run.text());
    assert!(
        run.stderr
            .contains("qemu-virt: FAIL: no benchmark matches --filter \"no_such_bench\""),
        "{}",
        run.text()
    );
}

/// Our programming never upsets QEMU's models by accident: with the tests
/// that provoke model errors on purpose (`inject` in their names) left
/// out, QEMU's guest-error log stays empty on every board.
#[test]
fn no_guest_errors_outside_inject_tests() {
    let _qemu = qemu_lock();
    for b in board_names() {
        let log = scratch_dir().join(format!("guest-errors-{b}.log"));
        let _ = std::fs::remove_file(&log);
        let run = qemu_run(&[
            "run",
            "--board",
            &b,
            "--exclude",
            "inject",
            "--timeout",
            "120",
            "--",
            "-d",
            "guest_errors",
            "-D",
            log.to_str().unwrap(),
        ]);
        assert_eq!(run.code, Some(0), "{b}:\n{}", run.text());
        let errors = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            errors.is_empty(),
            "{b}: QEMU logged guest errors:\n{errors}"
        );
    }
}

/// The suite holds up on a busy machine: every board booted twice more
/// beside two busy host threads (as a second QEMU or a parallel build
/// would load it), with no failure in any round. Flaky tests show here.
#[test]
fn boards_pass_repeatedly_beside_a_load() {
    let _qemu = qemu_lock();
    let run = qemu_run(&[
        "run",
        "--board",
        "all",
        "--repeat",
        "2",
        "--load",
        "2",
        "--timeout",
        "300",
    ]);
    let text = run.text();
    assert_eq!(run.code, Some(0), "a round failed under load:\n{text}");
    assert!(
        run.stdout
            .contains("stress: 2 round(s) per board beside 2 busy host thread(s)"),
        "{text}"
    );
    for b in board_names() {
        assert!(
            run.stdout
                .contains(&format!("  {b}: no failures in 2 run(s)")),
            "{b}:\n{text}"
        );
    }
}
