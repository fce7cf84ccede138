//! `qemu-run acpi`: capture the ACPI tables a board's QEMU offers, and
//! decode table files with the kernel's own parsers.
//!
//! Capture needs no guest code: QEMU runs stopped (`-S`) under the qtest
//! protocol, we read fw_cfg through it, run the table-loader script with the
//! same code the kernel uses, and write each linked table to a file.
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use acpi_tables::sdt;
use fw_cfg::loader::{self, Zone};
use fw_cfg::{FwCfg, Transport};

use crate::board::Board;
use anyhow::{anyhow, bail, Context, Result};

/// Where the capture pretends firmware placed the loader's files.
const FAKE_BASE: u64 = 0x1000_0000;

/// fw_cfg reached through QEMU's qtest protocol on a stopped machine.
pub struct Qtest {
    child: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
    port: Port,
    failed: Option<String>,
}

#[derive(Clone, Copy)]
enum Port {
    Mmio(u64),
    Io(u16),
}

impl Qtest {
    /// Starts QEMU stopped under qtest with the board's machine (or
    /// `machine` instead) and `extra`, and runs the board's capture setup.
    pub fn start(
        qemu: &Path,
        board: &Board,
        machine: Option<&[String]>,
        extra: &[String],
    ) -> Result<Qtest> {
        let port = match (board.fw_cfg_mmio, board.fw_cfg_io) {
            (Some(m), _) => Port::Mmio(m),
            (None, Some(p)) => Port::Io(p),
            _ => bail!(
                "board {} names no fw_cfg (fw_cfg_mmio or fw_cfg_io)",
                board.name
            ),
        };
        let mut args: Vec<String> = machine.unwrap_or(&board.machine).to_vec();
        if !extra.iter().any(|a| a == "-m") {
            args.extend(["-m".into(), board.memory.clone()]);
        }
        if !extra.iter().any(|a| a == "-smp") {
            args.extend(["-smp".into(), board.cpus.to_string()]);
        }
        args.extend(extra.iter().cloned());
        args.extend(
            [
                "-nodefaults",
                "-display",
                "none",
                "-S",
                "-qtest",
                "stdio",
                "-qtest-log",
                "/dev/null",
            ]
            .map(String::from),
        );
        eprintln!(
            "qemu-run: {}: {} {}",
            board.name,
            qemu.display(),
            args.join(" ")
        );
        let mut child = Command::new(qemu)
            .args(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| qemu.display().to_string())?;
        let input = child.stdin.take().expect("piped stdin");
        let output = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut qt = Qtest {
            child,
            input,
            output,
            port,
            failed: None,
        };
        for c in &board.acpi_capture_setup {
            qt.cmd(c);
        }
        match qt.failed.take() {
            Some(e) => bail!("capture setup: {e}"),
            None => Ok(qt),
        }
    }

    /// Sends one command and returns the text after `OK`.
    fn cmd(&mut self, line: &str) -> String {
        if self.failed.is_some() {
            return String::new();
        }
        let mut reply = String::new();
        let ok = writeln!(self.input, "{line}").is_ok()
            && self.input.flush().is_ok()
            && self.output.read_line(&mut reply).is_ok_and(|n| n > 0);
        match reply.trim().strip_prefix("OK") {
            Some(rest) if ok => rest.trim().to_string(),
            _ => {
                self.failed = Some(match self.child.try_wait() {
                    Ok(Some(status)) => format!(
                        "QEMU exited ({status}) before answering `{line}`; see its message above"
                    ),
                    _ => format!("qtest `{line}` answered {:?}", reply.trim()),
                });
                String::new()
            }
        }
    }

    fn hex(&mut self, line: &str) -> u64 {
        let r = self.cmd(line);
        u64::from_str_radix(r.trim_start_matches("0x"), 16).unwrap_or(0)
    }

    /// The first protocol failure, if any (reads after it return zeros).
    pub fn error(&self) -> Option<&str> {
        self.failed.as_deref()
    }
}

impl Drop for Qtest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Transport for Qtest {
    fn select(&mut self, key: u16) {
        match self.port {
            // The MMIO selector is big-endian; qtest writes little-endian values.
            Port::Mmio(base) => {
                self.cmd(&format!("writew {:#x} {:#x}", base + 8, key.swap_bytes()))
            }
            Port::Io(port) => self.cmd(&format!("outw {port:#x} {key:#x}")),
        };
    }

    fn read(&mut self, buf: &mut [u8]) {
        match self.port {
            // 8 bytes per access at the data register, in string order.
            Port::Mmio(base) => {
                let mut chunks = buf.chunks_exact_mut(8);
                for chunk in &mut chunks {
                    chunk.copy_from_slice(&self.hex(&format!("readq {base:#x}")).to_le_bytes());
                }
                // A wide read would consume bytes past what was asked for.
                for b in chunks.into_remainder() {
                    *b = self.hex(&format!("readb {base:#x}")) as u8;
                }
            }
            Port::Io(port) => {
                for b in buf {
                    *b = self.hex(&format!("inb {:#x}", port + 1)) as u8;
                }
            }
        }
    }
}

/// One captured table.
pub struct Captured {
    pub file: String,
    pub signature: String,
    pub bytes: Vec<u8>,
}

/// Reads fw_cfg, runs the loader and returns every table the XSDT/RSDT lists.
pub fn capture(qt: Qtest) -> Result<Vec<Captured>> {
    let mut fw = FwCfg::new(qt).map_err(anyhow::Error::msg)?;
    if fw.find("etc/table-loader").is_none() {
        let names: Vec<&str> = fw.files().iter().map(|f| f.name.as_str()).collect();
        bail!(
            "this machine offers no ACPI tables (fw_cfg files: {})",
            names.join(", ")
        );
    }
    let script = fw
        .read_file("etc/table-loader")
        .map_err(anyhow::Error::msg)?;
    let mut next = FAKE_BASE;
    let place = |_: &str, size: usize, align: u64, _: Zone| {
        let at = next.div_ceil(align.max(16)) * align.max(16);
        next = at + size as u64;
        Some(at)
    };
    let mut fetch_err = None;
    let loaded = {
        let fetch = |name: &str| match fw.read_file(name) {
            Ok(d) => Some(d),
            Err(e) => {
                fetch_err = Some(e.to_string());
                None
            }
        };
        loader::run(&script, fetch, place)
    };
    if let Some(e) = fw_transport_error(&fw) {
        bail!("{e}");
    }
    let loaded = loaded.map_err(|e| {
        anyhow!(
            "{e}{}",
            fetch_err.map(|f| format!(" ({f})")).unwrap_or_default()
        )
    })?;
    let rsdp = loaded
        .find("etc/acpi/rsdp")
        .context("no etc/acpi/rsdp was allocated")?;
    let rsdp = sdt::parse_rsdp(&rsdp.data).map_err(anyhow::Error::msg)?;
    let (root_addr, root_sig) = rsdp.root_table();
    let root = loaded
        .read_rest(root_addr)
        .with_context(|| format!("root table address {root_addr:#x} is in no loaded file"))?;
    let addrs = sdt::parse_root_table(root, root_sig).map_err(anyhow::Error::msg)?;
    let mut out: Vec<Captured> = Vec::new();
    let mut push = |bytes: &[u8]| -> Result<()> {
        let (h, b) = sdt::parse_table(bytes, None).map_err(anyhow::Error::msg)?;
        let sig = h.signature_str().to_string();
        let n = out.iter().filter(|c| c.signature == sig).count();
        let file = if n == 0 {
            format!("{sig}.bin")
        } else {
            format!("{sig}-{n}.bin")
        };
        out.push(Captured {
            file,
            signature: sig,
            bytes: b.data.to_vec(),
        });
        Ok(())
    };
    push(root)?;
    for a in addrs {
        let t = loaded
            .read_rest(a)
            .with_context(|| format!("table address {a:#x} is in no loaded file"))?;
        push(t)?;
        // The FADT points at the DSDT (and FACS), which the root table does not list.
        if t.starts_with(b"FACP") {
            if let Some(dsdt) = fadt_dsdt(t) {
                if let Some(d) = loaded.read_rest(dsdt) {
                    push(d)?;
                }
            }
        }
    }
    Ok(out)
}

fn fw_transport_error(fw: &FwCfg<Qtest>) -> Option<String> {
    fw.transport().error().map(String::from)
}

/// The FADT's X_DSDT (offset 140) or DSDT (offset 40) address.
fn fadt_dsdt(fadt: &[u8]) -> Option<u64> {
    let x = fadt
        .get(140..148)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .filter(|&a| a != 0);
    x.or_else(|| {
        fadt.get(40..44)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as u64)
            .filter(|&a| a != 0)
    })
}

/// The decoded form of one table file, as text or JSON.
pub struct Decoded {
    pub text: String,
    pub json: serde_json::Value,
    pub ok: bool,
}

/// Decodes one table with the kernel's parsers (chosen by signature).
pub fn decode(file: &str, bytes: &[u8]) -> Decoded {
    use acpi_tables::{dmar, fadt, gtdt, iort, madt, mcfg, spcr};
    use serde_json::json;

    fn show<T: std::fmt::Display + serde::Serialize>(
        r: std::result::Result<T, acpi_tables::TableError>,
    ) -> (String, serde_json::Value, bool) {
        match r {
            Ok(t) => (t.to_string(), json!({ "table": t }), true),
            Err(e) => (
                format!("error: {e}\n"),
                json!({ "error": e.to_string() }),
                false,
            ),
        }
    }

    let header = sdt::parse_table(bytes, None);
    let (head_text, head_json) = match &header {
        Ok((h, _)) => (
            format!("{h}\n"),
            serde_json::to_value(h).unwrap_or_default(),
        ),
        Err(e) => {
            return Decoded {
                text: format!("{file}: error: {e}\n"),
                json: json!({ "file": file, "error": e.to_string() }),
                ok: false,
            }
        }
    };
    let sig = header
        .as_ref()
        .map(|(h, _)| h.signature)
        .unwrap_or_default();
    let (body, mut value, ok) = match &sig {
        b"IORT" => show(iort::parse(bytes)),
        b"DMAR" => show(dmar::parse(bytes)),
        b"MCFG" => show(mcfg::parse(bytes)),
        b"APIC" => show(madt::parse(bytes)),
        b"SPCR" => show(spcr::parse(bytes)),
        b"GTDT" => show(gtdt::parse(bytes)),
        b"FACP" => show(fadt::parse(bytes)),
        _ => (
            format!("{head_text}  (no decoder for this table: header only)\n"),
            json!({}),
            true,
        ),
    };
    value["file"] = json!(file);
    value["header"] = head_json;
    Decoded {
        text: format!("== {file}\n{body}"),
        json: value,
        ok,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixtures() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../drivers/acpi_tables/fixtures")
    }

    #[test]
    fn decodes_every_captured_table() {
        let mut seen = 0;
        for config in std::fs::read_dir(fixtures())
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
        {
            for f in std::fs::read_dir(config.path()).unwrap().flatten() {
                let bytes = std::fs::read(f.path()).unwrap();
                let d = decode(&f.path().display().to_string(), &bytes);
                assert!(d.ok, "{}", d.text);
                assert!(d.json["header"]["signature"].is_string(), "{}", d.json);
                seen += 1;
            }
        }
        assert!(seen >= 40, "{seen} fixture tables");
    }

    #[test]
    fn decode_reports_errors() {
        let mut bytes = std::fs::read(fixtures().join("virt-smmuv3/IORT.bin")).unwrap();
        // Make the node count lie, and fix the checksum so only that is wrong.
        bytes[36] = 9;
        bytes[9] = 0;
        bytes[9] = 0u8.wrapping_sub(sdt::checksum(&bytes));
        let d = decode("IORT.bin", &bytes);
        assert!(!d.ok);
        assert!(d.text.contains("error: IORT at offset"), "{}", d.text);
        assert!(
            d.json["error"]
                .as_str()
                .unwrap()
                .starts_with("IORT at offset"),
            "{}",
            d.json
        );
        let d = decode("short.bin", b"IORT");
        assert!(!d.ok && d.text.contains("truncated"), "{}", d.text);
    }
}
