//! Board descriptions (`boards/*.toml`) and the facts about a kernel image
//! the runner needs before it boots one: which arch an ELF is for.
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use anyhow::{anyhow, bail, Context, Result};

/// The runner-facing part of a board file. Other keys (`[memory_map]`, …)
/// are board facts for people and the kernel, so unknown keys are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Board {
    pub name: String,
    pub description: String,
    /// Matches the ELF machine of the kernel (`aarch64`, `x86_64`).
    pub arch: String,
    /// Rust target the kernel is built for.
    pub target: String,
    /// How the kernel is started: `elf` (QEMU `-kernel` with the ELF),
    /// `pvh` (the same, x86's PVH note), `image` (QEMU `-kernel` with the
    /// arm64 `Image`, devicetree in x0), `uboot` (the board's firmware is
    /// U-Boot, which runs `boot.scr` from a disk qemu-run builds).
    #[serde(default)]
    pub boot: String,
    /// QEMU binary name, looked up on PATH (or in `QEMU_DIR`). Empty (the
    /// key left out) for a board that is real hardware: `watch` judges its
    /// console, `run` refuses it and `--board all` leaves it out.
    #[serde(default)]
    pub qemu: String,
    /// A board file to copy for real hardware, not a board of its own:
    /// listed, never run.
    #[serde(default)]
    pub template: bool,
    /// Where a real board's console is (defaults for `watch --board`).
    #[serde(default)]
    pub console: Option<crate::hardware::Console>,
    /// How a real board's run ends (`psci`, `acpi`, `semihosting`,
    /// `isa-debug-exit`); QEMU boards say it through their command line.
    #[serde(default)]
    pub exit: Option<crate::hardware::ExitMethod>,
    /// The firmware file QEMU boots through and the Debian package that
    /// provides it, installed by the runner when missing.
    #[serde(default)]
    pub firmware: Option<crate::debian::Firmware>,
    /// Use the patched QEMU qemu-run builds (`qemu-run/patches/`) instead
    /// of the system's.
    #[serde(default)]
    pub patched_qemu: bool,
    /// QEMU `-m` value; also passed to the kernel as `qemu.mem=`.
    #[serde(default)]
    pub memory: String,
    /// QEMU `-smp` value; also passed to the kernel as `qemu.cpus=`.
    #[serde(default)]
    pub cpus: u32,
    #[serde(default)]
    pub machine: Vec<String>,
    #[serde(default)]
    pub io: Vec<String>,
    #[serde(default)]
    pub test_args: Vec<String>,
    /// Test configuration that needs the patched QEMU's devices, added
    /// only when the QEMU has them.
    #[serde(default)]
    pub patched_args: Vec<String>,
    /// Words for the kernel command line, first on it. `exit=` names how
    /// the run ends (`semihosting`, `isa-debug-exit`); without it the
    /// kernel powers off through firmware and there is no exit status.
    #[serde(default)]
    pub kernel_args: Vec<String>,
    /// For `boot = "uboot"`: entries replacing those of U-Boot's default
    /// environment, saved in its environment flash bank (`bootdelay = "0"`).
    #[serde(default)]
    pub uboot_env: std::collections::BTreeMap<String, String>,
    /// QEMU's exit status when the kernel reports success (read only when
    /// the exit method gives one: [`Board::exit_status`]).
    #[serde(default)]
    pub exit_pass: i32,
    /// QEMU's exit status when the kernel reports failure.
    #[serde(default)]
    pub exit_fail: i32,
    /// Where the machine's fw_cfg is (MMIO base or I/O port base), for
    /// capturing its ACPI tables from the host.
    #[serde(default)]
    pub fw_cfg_mmio: Option<u64>,
    #[serde(default)]
    pub fw_cfg_io: Option<u16>,
    /// qtest commands that do what firmware would before it reads the
    /// ACPI tables (QEMU builds some tables from the state firmware set up).
    #[serde(default)]
    pub acpi_capture_setup: Vec<String>,
    /// What the machine arguments create, passed to the kernel as
    /// `expect.KEY=VALUE` so its discovery tests compare against the board
    /// file rather than against constants of their own.
    #[serde(default)]
    pub expect: std::collections::BTreeMap<String, String>,
    /// What replaces entries of `expect` when `patched_args` are used.
    #[serde(default)]
    pub expect_patched: std::collections::BTreeMap<String, String>,
    /// Named configurations of this board (`[[variant]]`): the same
    /// machine with other memory, CPUs, devices or IOMMU settings, run
    /// with `run --variant NAME|all`.
    #[serde(default, rename = "variant")]
    pub variants: Vec<Variant>,
}

/// A named configuration of a board: what it changes. The board with a
/// variant applied ([`Board::with_variant`]) is an ordinary board whose
/// name is `BOARD:VARIANT`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Replaces the board's `memory` (and so `-m` and `qemu.mem=`).
    #[serde(default)]
    pub memory: Option<String>,
    /// Replaces the board's `cpus` (and so `-smp` and `qemu.cpus=`).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// Replaces the board's `kernel_args` (another exit method, say).
    #[serde(default)]
    pub kernel_args: Option<Vec<String>>,
    /// Replaces the board's `io` (without semihosting, say).
    #[serde(default)]
    pub io: Option<Vec<String>>,
    /// QEMU arguments added after the board's test arguments. Later
    /// `-cpu` and `-global` win over the board's; `-M` properties merge.
    #[serde(default)]
    pub args: Vec<String>,
    /// Added after `args` when the QEMU has the patched devices.
    #[serde(default)]
    pub patched_args: Vec<String>,
    /// Entries of the board's `expect` this configuration changes.
    #[serde(default)]
    pub expect: std::collections::BTreeMap<String, String>,
    /// Entries of the board's `expect_patched` this configuration changes.
    #[serde(default)]
    pub expect_patched: std::collections::BTreeMap<String, String>,
}

/// Options a variant sets through its own keys, not through `args`.
const VARIANT_OWNED_OPTIONS: [&str; 4] = ["m", "smp", "kernel", "append"];

impl Board {
    pub fn parse(text: &str, origin: &Path) -> Result<Board> {
        let board: Board =
            toml::from_str(text).map_err(|e| anyhow!("{}: {}", origin.display(), e.message()))?;
        board.check(origin)
    }

    /// A board from an already merged table (see [`resolve_extends`]).
    fn from_table(table: toml::Table, origin: &Path) -> Result<Board> {
        let board: Board = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow!("{}: {}", origin.display(), e.message()))?;
        board.check(origin)
    }

    fn check(self, origin: &Path) -> Result<Board> {
        let board = self;
        if board.is_hardware() {
            return crate::hardware::check(board, origin);
        }
        if board.template {
            bail!(
                "{}: a template describes real hardware: it has no qemu key",
                origin.display()
            );
        }
        if board.cpus == 0 {
            bail!("{}: cpus must be at least 1", origin.display());
        }
        if !is_size(&board.memory) {
            bail!(
                "{}: memory must be a QEMU size such as \"1G\"",
                origin.display()
            );
        }
        for (i, v) in board.variants.iter().enumerate() {
            let at = format!("{}: variant {:?}", origin.display(), v.name);
            let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
            if v.name.is_empty() || v.name == "all" || !v.name.chars().all(plain) {
                bail!("{at}: a variant's name is letters, digits, - and _ (and not `all`)");
            }
            if board.variants[..i].iter().any(|w| w.name == v.name) {
                bail!("{at}: named twice");
            }
            if v.cpus == Some(0) {
                bail!("{at}: cpus must be at least 1");
            }
            if v.memory.as_deref().is_some_and(|m| !is_size(m)) {
                bail!("{at}: memory must be a QEMU size such as \"1G\"");
            }
            let owned = v.args.iter().chain(&v.patched_args).find(|a| {
                let name = a.strip_prefix("--").or_else(|| a.strip_prefix('-'));
                name.is_some_and(|n| VARIANT_OWNED_OPTIONS.contains(&n))
            });
            if let Some(a) = owned {
                bail!("{at}: {a} in args: use the variant's memory / cpus keys");
            }
        }
        Ok(board)
    }

    /// Real hardware: no QEMU command line, judged by `watch`.
    pub fn is_hardware(&self) -> bool {
        self.qemu.is_empty()
    }

    /// The QEMU binary's name, or why this board has none.
    pub fn qemu_name(&self) -> Result<&str> {
        if self.is_hardware() {
            bail!(
                "board {} is real hardware, not a QEMU board: build its image with \
                 `qemu-run image` and judge its console with `qemu-run watch --board {}`",
                self.name,
                self.name
            );
        }
        Ok(&self.qemu)
    }

    /// The exit status that means a pass, when the board's exit method
    /// gives one (`exit=semihosting` or `exit=isa-debug-exit` in
    /// `kernel_args`); `None`: the run is judged by the TAP stream alone.
    pub fn exit_status(&self) -> Option<i32> {
        let words = self.kernel_args.join(" ");
        match kernel_exit_word(&words) {
            Some("semihosting" | "isa-debug-exit") => Some(self.exit_pass),
            _ => None,
        }
    }

    /// Whether the board starts the arm64 `Image` rather than the ELF.
    pub fn boots_image(&self) -> bool {
        self.boot == "image" || self.boots_uboot()
    }

    /// Whether U-Boot (the board's `-bios`) starts the `Image` from a disk.
    pub fn boots_uboot(&self) -> bool {
        self.boot == "uboot"
    }

    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// This board under variant `v`: named `BOARD:VARIANT`, with the
    /// variant's memory, CPUs, arguments and expectations.
    pub fn with_variant(&self, v: &Variant) -> Board {
        let mut b = self.clone();
        b.name = format!("{}:{}", self.name, v.name);
        if !v.description.is_empty() {
            b.description = format!("{} ({})", self.description, v.description);
        }
        if let Some(m) = &v.memory {
            b.memory = m.clone();
        }
        if let Some(c) = v.cpus {
            b.cpus = c;
        }
        if let Some(k) = &v.kernel_args {
            b.kernel_args = k.clone();
        }
        if let Some(io) = &v.io {
            b.io = io.clone();
        }
        b.test_args.extend(v.args.iter().cloned());
        b.patched_args.extend(v.patched_args.iter().cloned());
        b.expect.extend(v.expect.clone());
        // A variant's plain `expect` also wins over the board's
        // `expect_patched` (both say what this configuration creates).
        for k in v.expect.keys() {
            b.expect_patched.remove(k);
        }
        b.expect_patched.extend(v.expect_patched.clone());
        b.variants.clear();
        b
    }
}

/// The value of the last `exit=` word of a kernel command line.
fn kernel_exit_word(cmdline: &str) -> Option<&str> {
    cmdline
        .split_ascii_whitespace()
        .filter_map(|w| w.strip_prefix("exit="))
        .next_back()
}

/// A QEMU size: one word, not empty.
fn is_size(s: &str) -> bool {
    !s.trim().is_empty() && !s.contains(char::is_whitespace)
}

/// The runs `--variant SPEC` asks of `board`: `all` (every variant),
/// or a comma-separated list of names, where `base` is the board as its
/// file describes it. A name the board lacks is an error when `strict`
/// (one board), and leaves the board out otherwise (`--board all`).
pub fn variant_runs(board: &Board, spec: &str, strict: bool) -> Result<Vec<Board>> {
    if spec == "all" {
        return Ok(board
            .variants
            .iter()
            .map(|v| board.with_variant(v))
            .collect());
    }
    let mut runs = Vec::new();
    for name in spec.split(',').map(str::trim) {
        if name == "base" {
            runs.push(board.clone());
            continue;
        }
        match board.variant(name) {
            Some(v) => runs.push(board.with_variant(v)),
            None if strict => bail!(
                "board {} has no variant `{name}`; its variants: {} (or `all`, `base`)",
                board.name,
                if board.variants.is_empty() {
                    "none".to_string()
                } else {
                    board
                        .variants
                        .iter()
                        .map(|v| v.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
            None => {}
        }
    }
    Ok(runs)
}

/// The workspace root: `IOMMU_WORKSPACE` if set, else the parent of this
/// crate's directory at compile time (the runner lives at `<root>/qemu-run`).
pub fn workspace_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("IOMMU_WORKSPACE").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Loads every `boards/*.toml` under `root`, sorted by name.
pub fn load_boards(root: &Path) -> Result<Vec<Board>> {
    let dir = root.join("boards");
    let entries = fs::read_dir(&dir).map_err(|e| {
        anyhow!(
            "cannot read the board directory {}: {e} (set IOMMU_WORKSPACE to the workspace root)",
            dir.display()
        )
    })?;
    let mut boards = Vec::new();
    for entry in entries {
        let path = entry.with_context(|| dir.display().to_string())?.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        let table = resolve_extends(&dir, &text, &path, 0)?;
        let board = Board::from_table(table, &path)?;
        // The file name is what people type; keep it and `name` in step.
        if path.file_stem().is_some_and(|s| s != board.name.as_str()) {
            bail!(
                "{}: name = {:?} does not match the file name",
                path.display(),
                board.name
            );
        }
        boards.push(board);
    }
    if boards.is_empty() {
        bail!("no boards found in {}", dir.display());
    }
    boards.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(boards)
}

/// Tables of facts that a board which `extends` another merges key by key
/// (everything else it names replaces the base's value).
const MERGED_TABLES: [&str; 3] = ["expect", "expect_patched", "memory_map"];

/// A board file as a table, with `extends = "BASE"` resolved: BASE's
/// table (from `dir/BASE.toml`, itself resolved), overridden by this
/// file's keys. How a board variant (another IOMMU setting, say) states
/// only what differs.
fn resolve_extends(dir: &Path, text: &str, origin: &Path, depth: u32) -> Result<toml::Table> {
    let mut table: toml::Table =
        toml::from_str(text).map_err(|e| anyhow!("{}: {}", origin.display(), e.message()))?;
    let Some(base) = table.remove("extends") else {
        return Ok(table);
    };
    let Some(base) = base.as_str().map(str::to_string) else {
        bail!("{}: extends must name a board", origin.display());
    };
    if depth >= 4 {
        bail!(
            "{}: extends {base:?}: boards extend each other too deeply (a cycle?)",
            origin.display()
        );
    }
    let base_path = dir.join(format!("{base}.toml"));
    let base_text = fs::read_to_string(&base_path).with_context(|| {
        format!(
            "{}: extends {base:?}: {}",
            origin.display(),
            base_path.display()
        )
    })?;
    let mut merged = resolve_extends(dir, &base_text, &base_path, depth + 1)?;
    for (key, value) in table {
        match (merged.get_mut(&key), value) {
            (Some(toml::Value::Table(into)), toml::Value::Table(from))
                if MERGED_TABLES.contains(&key.as_str()) =>
            {
                into.extend(from);
            }
            (_, value) => {
                merged.insert(key, value);
            }
        }
    }
    Ok(merged)
}

/// The boards `--board NAME|all` selects: `all` is every QEMU board (real
/// hardware and templates are run one by one, through `watch`).
pub fn select<'a>(boards: &'a [Board], name: &str) -> Result<Vec<&'a Board>> {
    if name == "all" {
        return Ok(boards.iter().filter(|b| !b.is_hardware()).collect());
    }
    match boards.iter().find(|b| b.name == name) {
        Some(b) => Ok(vec![b]),
        None => bail!(
            "unknown board `{name}`; known boards: {} (or `all`)",
            names(boards)
        ),
    }
}

pub fn names(boards: &[Board]) -> String {
    boards
        .iter()
        .map(|b| b.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `e_machine` of an ELF image, if `bytes` starts with an ELF header.
pub fn elf_machine(bytes: &[u8]) -> Option<u16> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return None;
    }
    let m = [bytes[18], bytes[19]];
    // EI_DATA: 1 = little endian, 2 = big endian.
    Some(match bytes[5] {
        2 => u16::from_be_bytes(m),
        _ => u16::from_le_bytes(m),
    })
}

pub const EM_X86_64: u16 = 62;
pub const EM_AARCH64: u16 = 183;

/// The board `arch` an ELF machine number runs on.
pub fn arch_of_machine(machine: u16) -> Option<&'static str> {
    match machine {
        EM_AARCH64 => Some("aarch64"),
        EM_X86_64 => Some("x86_64"),
        _ => None,
    }
}

/// Reads the first bytes of a kernel image, with a clear error when it is
/// missing, not a file, or empty.
pub fn read_kernel_head(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let meta = fs::metadata(path).with_context(|| format!("kernel {}", path.display()))?;
    if !meta.is_file() {
        bail!("kernel {}: not a regular file", path.display());
    }
    if meta.len() == 0 {
        bail!("kernel {}: the file is empty", path.display());
    }
    let mut head = Vec::with_capacity(64);
    fs::File::open(path)
        .and_then(|f| f.take(64).read_to_end(&mut head))
        .with_context(|| format!("kernel {}", path.display()))?;
    Ok(head)
}

/// The board a cargo-runner ELF is for: the board whose `arch` matches the
/// ELF's machine (the first by name if several do).
pub fn board_for_elf<'a>(boards: &'a [Board], path: &Path) -> Result<&'a Board> {
    let head = read_kernel_head(path)?;
    let Some(machine) = elf_machine(&head) else {
        bail!("{}: not an ELF file", path.display());
    };
    let Some(arch) = arch_of_machine(machine) else {
        bail!(
            "{}: ELF machine {machine} has no board (known: {EM_AARCH64} aarch64, {EM_X86_64} x86_64)",
            path.display()
        );
    };
    match boards.iter().find(|b| b.arch == arch && !b.is_hardware()) {
        Some(b) => Ok(b),
        None => bail!("{}: no board file has arch = \"{arch}\"", path.display()),
    }
}

/// Refuses a kernel that cannot boot on `board` before QEMU gets it: missing,
/// empty, or an ELF for another arch. Non-ELF images (a raw arm64 `Image`)
/// are passed through.
pub fn check_kernel(path: &Path, board: &Board) -> Result<()> {
    let head = read_kernel_head(path)?;
    if let Some(machine) = elf_machine(&head) {
        let arch = arch_of_machine(machine).unwrap_or("an unknown arch");
        if arch != board.arch {
            bail!(
                "kernel {} is an ELF for {arch} (e_machine {machine}) but board {} is {}",
                path.display(),
                board.name,
                board.arch
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const VIRT: &str = r#"
name = "qemu-virt"
description = "virt"
arch = "aarch64"
target = "aarch64-unknown-none"
qemu = "qemu-system-aarch64"
memory = "1G"
cpus = 2
machine = ["-M", "virt"]
io = ["-serial", "stdio"]
exit_pass = 0
exit_fail = 1
[memory_map]
uart = "pl011"
"#;

    pub fn virt() -> Board {
        Board::parse(VIRT, Path::new("virt.toml")).unwrap()
    }

    #[test]
    fn a_board_extends_another() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir_all(dir.join("boards")).unwrap();
        let with_expect = format!("{VIRT}[expect]\niommus = \"smmuv3\"\necam = \"0\"\n");
        fs::write(dir.join("boards/qemu-virt.toml"), with_expect).unwrap();
        fs::write(
            dir.join("boards/qemu-virt-s2.toml"),
            "extends = \"qemu-virt\"\nname = \"qemu-virt-s2\"\nmachine = [\"-M\", \"virt,x=1\"]\n\
             [expect]\necam = \"1\"\n",
        )
        .unwrap();
        let boards = load_boards(dir).unwrap();
        let v = &boards[1];
        assert_eq!(v.name, "qemu-virt-s2");
        assert_eq!(v.machine, ["-M", "virt,x=1"], "replaced");
        assert_eq!(v.io, ["-serial", "stdio"], "inherited");
        assert_eq!(v.expect["iommus"], "smmuv3", "merged: kept");
        assert_eq!(v.expect["ecam"], "1", "merged: overridden");
        // Unknown bases and cycles are refused with the file named.
        fs::write(dir.join("boards/qemu-virt-s2.toml"), "extends = \"nope\"\n").unwrap();
        let e = load_boards(dir).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("qemu-virt-s2.toml: extends \"nope\""), "{e}");
        fs::write(
            dir.join("boards/qemu-virt-s2.toml"),
            "extends = \"qemu-virt-s2\"\n",
        )
        .unwrap();
        let e = load_boards(dir).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("too deeply"), "{e}");
    }

    const VARIANTS: &str = r#"
patched_args = ["-device", "pasid-dma", "-global", "intel-iommu.x-pasid-bits=20"]
[expect]
pci = "edu@rootport"
pasid_tagged = "passthrough:8"
[expect_patched]
pci = "edu@rootport,pasid@rootport"
pasid_tagged = "passthrough:20"

[[variant]]
name = "smp12"
description = "12 CPUs, 6 GiB"
cpus = 12
memory = "6G"

[[variant]]
name = "pasid8"
patched_args = ["-global", "intel-iommu.x-pasid-bits=8"]
[variant.expect_patched]
pasid_tagged = "passthrough:8"

[[variant]]
name = "deep"
args = ["-device", "edu,bus=dn9"]
[variant.expect]
pci = "edu@rootport,edu@switch"

[[variant]]
name = "acpi"
kernel_args = ["exit=semihosting", "acpi=force"]
"#;

    fn with_variants() -> Board {
        let text = VIRT.replace("[memory_map]", &format!("{VARIANTS}\n[memory_map]"));
        Board::parse(&text, Path::new("v.toml")).unwrap()
    }

    #[test]
    fn variants_parse_and_apply() {
        use crate::run::{invocation, Request};
        let b = with_variants();
        let names: Vec<_> = b.variants.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["smp12", "pasid8", "deep", "acpi"]);
        let req = Request {
            patched_devices: true,
            ..Request::default()
        };
        let line = |b: &Board| {
            let inv = invocation(b, Path::new("k"), &req).unwrap();
            let args: Vec<String> = inv
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            (args.join(" "), inv.cmdline)
        };

        let smp = b.with_variant(b.variant("smp12").unwrap());
        assert_eq!(smp.name, "qemu-virt:smp12");
        assert!(smp.variants.is_empty());
        let (args, cmdline) = line(&smp);
        assert!(args.contains("-smp 12 -m 6G"), "{args}");
        assert!(cmdline.contains("qemu.mem=6G qemu.cpus=12"), "{cmdline}");

        // The variant's -global comes after the board's, so it wins; its
        // expectation replaces the board's patched one.
        let p8 = b.with_variant(b.variant("pasid8").unwrap());
        let (args, cmdline) = line(&p8);
        assert!(
            args.contains("x-pasid-bits=20 -global intel-iommu.x-pasid-bits=8 -kernel k"),
            "{args}"
        );
        assert!(
            cmdline.contains("expect.pasid_tagged=passthrough:8"),
            "{cmdline}"
        );
        assert!(
            cmdline.contains("expect.pci=edu@rootport,pasid@rootport"),
            "{cmdline}"
        );

        // A plain expectation of the variant wins over the board's patched
        // one too; its args go after the board's test args.
        let deep = b.with_variant(b.variant("deep").unwrap());
        let (args, cmdline) = line(&deep);
        assert!(args.contains("edu,bus=dn9 -device pasid-dma"), "{args}");
        assert!(
            cmdline.contains("expect.pci=edu@rootport,edu@switch"),
            "{cmdline}"
        );
        assert!(
            cmdline.contains("expect.pasid_tagged=passthrough:20"),
            "{cmdline}"
        );

        // A variant's kernel words reach the command line, the base's not.
        let acpi = b.with_variant(b.variant("acpi").unwrap());
        let (_, cmdline) = line(&acpi);
        assert!(
            cmdline.starts_with("exit=semihosting acpi=force "),
            "{cmdline}"
        );
        assert!(!line(&b).1.contains("acpi="));
    }

    #[test]
    fn variant_selection() {
        let b = with_variants();
        let names = |spec, strict| {
            variant_runs(&b, spec, strict)
                .map(|r| r.into_iter().map(|b| b.name).collect::<Vec<_>>())
                .map_err(|e| format!("{e:#}"))
        };
        assert_eq!(
            names("all", true).unwrap(),
            [
                "qemu-virt:smp12",
                "qemu-virt:pasid8",
                "qemu-virt:deep",
                "qemu-virt:acpi"
            ]
        );
        assert_eq!(
            names("base,deep", true).unwrap(),
            ["qemu-virt", "qemu-virt:deep"]
        );
        assert_eq!(
            names("nope", true).unwrap_err(),
            "board qemu-virt has no variant `nope`; its variants: smp12, pasid8, deep, acpi (or `all`, `base`)"
        );
        assert_eq!(names("nope,deep", false).unwrap(), ["qemu-virt:deep"]);
        assert_eq!(variant_runs(&virt(), "all", true).unwrap(), []);
    }

    #[test]
    fn bad_variants_are_refused() {
        let bad = |variant: &str| {
            let text = VIRT.replace("[memory_map]", &format!("{variant}\n[memory_map]"));
            let e = Board::parse(&text, Path::new("v.toml")).unwrap_err();
            format!("{e:#}")
        };
        let e = bad("[[variant]]\nname = \"a b\"");
        assert!(e.contains("variant \"a b\": a variant's name is"), "{e}");
        let e = bad("[[variant]]\nname = \"all\"");
        assert!(e.contains("not `all`"), "{e}");
        let e = bad("[[variant]]\nname = \"x\"\n[[variant]]\nname = \"x\"");
        assert!(e.contains("variant \"x\": named twice"), "{e}");
        let e = bad("[[variant]]\nname = \"x\"\ncpus = 0");
        assert!(e.contains("cpus must be at least 1"), "{e}");
        let e = bad("[[variant]]\nname = \"x\"\nargs = [\"-m\", \"2G\"]");
        assert!(
            e.contains("-m in args: use the variant's memory / cpus keys"),
            "{e}"
        );
        let e = bad("[[variant]]\nname = \"x\"\nmemroy = \"2G\"");
        assert!(e.contains("unknown field `memroy`"), "{e}");
    }

    #[test]
    fn only_a_status_giving_exit_method_is_judged_by_status() {
        let b = |args: &str| {
            let text = VIRT.replace(
                "exit_pass = 0",
                &format!("kernel_args = [{args}]\nexit_pass = 0"),
            );
            Board::parse(&text, Path::new("v.toml")).unwrap()
        };
        assert_eq!(b("\"exit=semihosting\"").exit_status(), Some(0));
        assert_eq!(
            b("\"log=debug\", \"exit=isa-debug-exit\"").exit_status(),
            Some(0)
        );
        // PSCI SYSTEM_OFF, a halt, an unknown method: no status to read.
        assert_eq!(b("").exit_status(), None);
        assert_eq!(b("\"exit=psci\"").exit_status(), None);
        assert_eq!(b("\"exit=semihosting\", \"exit=nope\"").exit_status(), None);
        // A variant replaces the words (and QEMU's io).
        let text = VIRT.replace("exit_pass = 0", "kernel_args = [\"exit=semihosting\"]\nexit_pass = 0")
            .replace("[memory_map]", "[[variant]]\nname = \"psci-exit\"\nkernel_args = []\nio = [\"-serial\", \"stdio\"]\n[memory_map]");
        let board = Board::parse(&text, Path::new("v.toml")).unwrap();
        let v = board.with_variant(board.variant("psci-exit").unwrap());
        assert_eq!(v.exit_status(), None);
        assert!(v.kernel_args.is_empty());
    }

    #[test]
    fn parses_and_ignores_board_facts() {
        let b = virt();
        assert_eq!(b.name, "qemu-virt");
        assert_eq!(b.cpus, 2);
        assert!(b.test_args.is_empty());
        assert_eq!(b.machine, ["-M", "virt"]);
    }

    #[test]
    fn rejects_missing_keys_and_bad_values() {
        let e = Board::parse("name = \"x\"", Path::new("x.toml")).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.starts_with("x.toml: missing field"), "{e}");
        let bad = VIRT.replace("cpus = 2", "cpus = 0");
        assert!(Board::parse(&bad, Path::new("v.toml")).is_err());
        let bad = VIRT.replace("\"1G\"", "\"1 G\"");
        assert!(Board::parse(&bad, Path::new("v.toml")).is_err());
    }

    #[test]
    fn the_repository_boards_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let boards = load_boards(root).unwrap();
        let names: Vec<_> = boards.iter().map(|b| b.name.as_str()).collect();
        assert!(names.contains(&"qemu-virt") && names.contains(&"qemu-q35"));
        // Every file parsed (load_boards stops at the first bad one); the
        // templates are real hardware, named as such and not in `all`.
        let files = fs::read_dir(root.join("boards"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "toml")
            })
            .count();
        assert_eq!(boards.len(), files);
        let templates: Vec<_> = boards.iter().filter(|b| b.template).collect();
        let names: Vec<_> = templates.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["template-systemready-arm64", "template-uboot-arm64"]
        );
        for t in &templates {
            assert!(t.is_hardware() && t.description.starts_with("TEMPLATE: "));
        }
        assert_eq!(templates[0].boot, "uefi");
        assert_eq!(templates[1].boot, "uboot");
        let all = select(&boards, "all").unwrap();
        assert!(all.iter().all(|b| !b.is_hardware() && !b.template));
        assert_eq!(all.len(), boards.len() - templates.len());
    }

    #[test]
    fn select_all_one_and_unknown() {
        let boards = vec![virt()];
        assert_eq!(select(&boards, "all").unwrap().len(), 1);
        assert_eq!(select(&boards, "qemu-virt").unwrap()[0].name, "qemu-virt");
        let e = select(&boards, "nope").unwrap_err();
        let e = format!("{e:#}");
        assert_eq!(
            e,
            "unknown board `nope`; known boards: qemu-virt (or `all`)"
        );
    }

    fn elf_head(machine: u16) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h
    }

    #[test]
    fn elf_machine_and_board_choice() {
        assert_eq!(elf_machine(&elf_head(183)), Some(183));
        assert_eq!(elf_machine(b"MZ not an elf at all"), None);
        assert_eq!(elf_machine(b"\x7fELF"), None);

        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let arm = dir.join("arm.elf");
        let x86 = dir.join("x86.elf");
        let empty = dir.join("empty");
        let raw = dir.join("Image");
        fs::write(&arm, elf_head(EM_AARCH64)).unwrap();
        fs::write(&x86, elf_head(EM_X86_64)).unwrap();
        fs::write(&empty, b"").unwrap();
        fs::write(&raw, b"raw arm64 image bytes").unwrap();

        let boards = vec![virt()];
        assert_eq!(board_for_elf(&boards, &arm).unwrap().name, "qemu-virt");
        let e = board_for_elf(&boards, &x86).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("no board file has arch = \"x86_64\""), "{e}");
        assert!(board_for_elf(&boards, &raw)
            .unwrap_err()
            .to_string()
            .contains("not an ELF"));

        let b = virt();
        check_kernel(&arm, &b).unwrap();
        check_kernel(&raw, &b).unwrap();
        let e = check_kernel(&x86, &b).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("is an ELF for x86_64"), "{e}");
        assert!(check_kernel(&empty, &b)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let e = check_kernel(&dir.join("missing"), &b).unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("missing") && e.contains("No such file"), "{e}");
        assert!(check_kernel(dir, &b)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
    }
}
