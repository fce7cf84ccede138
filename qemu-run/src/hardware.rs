//! Boards that are real hardware: no QEMU command line, a console to
//! watch, a boot method that firmware carries out (`uefi`, `uboot`,
//! `image`) and an exit method. `run` refuses them; `watch --board NAME`
//! takes its defaults from them; `--board all` leaves them out.
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Deserialize;

use crate::board::Board;

/// Baud rate of a console that names none: what most arm64 boards'
/// firmware uses.
pub const DEFAULT_BAUD: u32 = 115200;
/// How long `watch` waits for a real board's verdict when neither the
/// board file nor the command line says: a slow board's firmware, the
/// boot and the whole suite.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// A real board's console, as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Console {
    /// The host's serial device (`/dev/ttyUSB0`, a `/dev/serial/by-id/`
    /// link); `watch --device` overrides it.
    pub device: Option<PathBuf>,
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Seconds `watch` waits for the verdict (`--timeout` overrides).
    pub timeout: Option<u64>,
}

fn default_baud() -> u32 {
    DEFAULT_BAUD
}

/// How a run ends on the board: the kernel's `exit=` word (none for the
/// firmware's power-off, the default on real hardware).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitMethod {
    /// PSCI SYSTEM_OFF (arm64).
    Psci,
    /// ACPI power-off, or a halt (x86).
    Acpi,
    Semihosting,
    IsaDebugExit,
}

impl ExitMethod {
    /// The kernel command-line word that selects it, if one is needed.
    pub fn cmdline_word(self) -> Option<&'static str> {
        match self {
            ExitMethod::Psci | ExitMethod::Acpi => None,
            ExitMethod::Semihosting => Some("exit=semihosting"),
            ExitMethod::IsaDebugExit => Some("exit=isa-debug-exit"),
        }
    }
}

/// How firmware starts the image on real hardware.
pub const BOOT_METHODS: [&str; 3] = ["uefi", "uboot", "image"];

/// The checks for a board without `qemu`.
pub fn check(mut board: Board, origin: &Path) -> Result<Board> {
    let at = origin.display();
    if !BOOT_METHODS.contains(&board.boot.as_str()) {
        bail!(
            "{at}: a board without qemu is real hardware: boot must be one of {} (not {:?})",
            BOOT_METHODS.join(", "),
            board.boot
        );
    }
    let qemu_only = [
        ("machine", board.machine.is_empty()),
        ("io", board.io.is_empty()),
        ("test_args", board.test_args.is_empty()),
        ("patched_args", board.patched_args.is_empty()),
        ("variant", board.variants.is_empty()),
        ("acpi_capture_setup", board.acpi_capture_setup.is_empty()),
        ("patched_qemu", !board.patched_qemu),
        ("firmware", board.firmware.is_none()),
    ];
    if let Some((key, _)) = qemu_only.iter().find(|(_, absent)| !absent) {
        bail!("{at}: {key} is for QEMU boards; this board has no qemu key (real hardware)");
    }
    let Some(console) = &board.console else {
        bail!("{at}: real hardware needs a [console] (device, baud) for `watch`");
    };
    crate::watch::baud_rate(console.baud).map_err(|e| anyhow::anyhow!("{at}: console: {e}"))?;
    if console.timeout == Some(0) {
        bail!("{at}: console: timeout must be at least 1 second");
    }
    let Some(exit) = board.exit else {
        bail!("{at}: real hardware needs exit = \"psci\", \"acpi\", \"semihosting\" or \"isa-debug-exit\"");
    };
    // The kernel learns the exit method from its command line: the word
    // goes first in `kernel_args`, so `qemu-run image` bakes it into
    // boot.scr / startup.nsh. A different `exit=` there is a contradiction.
    let stated: Vec<&String> = board
        .kernel_args
        .iter()
        .filter(|w| w.starts_with("exit="))
        .collect();
    match (exit.cmdline_word(), stated.as_slice()) {
        (Some(w), []) => board.kernel_args.insert(0, w.to_string()),
        (Some(w), [s]) if s.as_str() == w => {}
        (None, []) => {}
        (_, s) => bail!(
            "{at}: kernel_args say {} but exit = {exit:?} (leave the exit= word to the exit key)",
            s.iter().map(|w| w.as_str()).collect::<Vec<_>>().join(" ")
        ),
    }
    Ok(board)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOARD: &str = r#"
name = "my-board"
description = "an arm64 board"
arch = "aarch64"
target = "aarch64-unknown-none"
boot = "uboot"
exit = "psci"
[console]
device = "/dev/ttyUSB0"
[expect]
iommus = "smmuv3@0x4000000"
"#;

    fn parse(text: &str) -> Result<Board> {
        Board::parse(text, Path::new("b.toml"))
    }

    #[test]
    fn a_hardware_board_parses_with_defaults() {
        let b = parse(BOARD).unwrap();
        assert!(b.is_hardware());
        let c = b.console.as_ref().unwrap();
        assert_eq!(c.device.as_deref(), Some(Path::new("/dev/ttyUSB0")));
        assert_eq!((c.baud, c.timeout), (115200, None));
        assert_eq!(b.exit, Some(ExitMethod::Psci));
        assert_eq!(b.expect["iommus"], "smmuv3@0x4000000");
        let e = format!("{:#}", b.qemu_name().unwrap_err());
        assert!(
            e.contains("real hardware") && e.contains("watch --board my-board"),
            "{e}"
        );
        assert_eq!(
            ExitMethod::IsaDebugExit.cmdline_word(),
            Some("exit=isa-debug-exit")
        );
        assert_eq!(ExitMethod::Psci.cmdline_word(), None);
        assert!(b.kernel_args.is_empty());
    }

    #[test]
    fn the_exit_key_reaches_the_kernel_command_line() {
        let b = parse(&BOARD.replace("exit = \"psci\"", "exit = \"semihosting\"")).unwrap();
        assert_eq!(b.kernel_args, ["exit=semihosting"]);
        let cmdline = crate::run::invocation(&b, Path::new("Image"), &Default::default())
            .unwrap()
            .cmdline;
        assert!(cmdline.starts_with("exit=semihosting "), "{cmdline}");
        let clash = BOARD.replace(
            "exit = \"psci\"",
            "exit = \"psci\"\nkernel_args = [\"exit=semihosting\"]",
        );
        let e = format!("{:#}", parse(&clash).unwrap_err());
        assert!(e.contains("exit = Psci"), "{e}");
    }

    #[test]
    fn hardware_boards_refuse_qemu_keys_and_need_their_facts() {
        let err = |text: &str| format!("{:#}", parse(text).unwrap_err());
        let e = err(&BOARD.replace(
            "exit = \"psci\"",
            "exit = \"psci\"\nmachine = [\"-M\", \"virt\"]",
        ));
        assert!(e.contains("machine is for QEMU boards"), "{e}");
        let e = err(&BOARD.replace("boot = \"uboot\"", "boot = \"elf\""));
        assert!(e.contains("boot must be one of uefi, uboot, image"), "{e}");
        let e = err(&BOARD.replace("[console]\ndevice = \"/dev/ttyUSB0\"", ""));
        assert!(e.contains("needs a [console]"), "{e}");
        let e = err(&BOARD.replace("exit = \"psci\"\n", ""));
        assert!(e.contains("needs exit = "), "{e}");
        let e = err(&BOARD.replace("exit = \"psci\"", "exit = \"reboot\""));
        assert!(e.contains("unknown variant `reboot`"), "{e}");
        let e = err(&BOARD.replace("device = ", "baud = 1234\ndevice = "));
        assert!(e.contains("console: baud rate 1234"), "{e}");
        // A template is real hardware: a QEMU board cannot be one.
        let e = err(
            "name = \"q\"\ndescription = \"\"\narch = \"x\"\ntarget = \"t\"\nqemu = \"q\"\n\
                     memory = \"1G\"\ncpus = 1\ntemplate = true\n",
        );
        assert!(e.contains("a template describes real hardware"), "{e}");
    }
}
