//! PCI host bridges from the DSDT and SSDTs: each bridge's segment (`_SEG`),
//! bus range and address windows (`_CRS`, with `_BBN` as the fallback for
//! the first bus), evaluated by the `acpi` crate's AML interpreter.
//!
//! The interpreter may touch the machine (an `OperationRegion` in system
//! memory, I/O ports or PCI config space): those accesses go through the
//! [`Platform`] trait the kernel implements; host tests give a fake that
//! records them. Our own parsers stay for the static tables (IORT, DMAR,
//! MCFG, MADT, SPCR); this crate is only for what needs AML.
//!
//! Limits of the interpreter (acpi 6.1.1), which bad firmware can reach:
//! it has no loop bound (`While (One) {}` spins forever) and some
//! malformed input panics inside it (out-of-range slice indexing in the
//! parser, `unimplemented!` for vendor-defined address-space descriptors).
//! We check the resource templates ourselves before its decoder sees them
//! ([`resources::check_template`]), so a bad `_CRS` buffer is a typed
//! error; bad AML bytecode can still panic in the interpreter.
#![no_std]

extern crate alloc;

mod handler;
pub mod resources;

#[cfg(test)]
mod tests;

pub use handler::{AccessWidth, PciFunction, Platform};

use acpi::aml::namespace::{AmlName, NameSeg, NamespaceLevel, NamespaceLevelKind};
use acpi::aml::object::{Object, WrappedObject};
use acpi::aml::{AmlError, Interpreter};
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use alloc::{format, vec};
use core::fmt;
use core::str::FromStr;
use handler::Adapter;

/// `_HID`/`_CID` of a PCI Express root bridge and of a PCI host bridge.
const PNP0A08: &str = "PNP0A08";
const PNP0A03: &str = "PNP0A03";
/// The SDT header every AML table starts with.
const SDT_HEADER_LEN: usize = 36;

/// An address window a host bridge forwards: `start..=end` on the PCI side;
/// the CPU sees it at `start + translation` (0 on PCs; non-zero where the
/// bus addresses differ from the CPU's, as on some Arm I/O windows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
    pub translation: u64,
}

impl Window {
    /// Where the CPU reaches the window's first byte.
    pub fn cpu_start(&self) -> u64 {
        self.start.wrapping_add(self.translation)
    }

    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}-{:#x}", self.start, self.end)?;
        if self.translation != 0 {
            write!(f, " (CPU {:#x})", self.cpu_start())?;
        }
        Ok(())
    }
}

/// One PCI host bridge as `_CRS` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostBridge {
    /// Its namespace path (`\_SB_.PCI0`).
    pub path: String,
    /// `_SEG` (0 when absent, as the spec says).
    pub segment: u16,
    /// First and last bus: the bus-number descriptor of `_CRS`; without one,
    /// `_BBN` (or 0) alone.
    pub buses: (u8, u8),
    pub io: Vec<Window>,
    /// Memory windows below 4 GiB (CPU side).
    pub mem32: Vec<Window>,
    /// Memory windows reaching above 4 GiB (CPU side).
    pub mem64: Vec<Window>,
}

/// What went wrong, with the bridge or table it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The table is shorter than its header or than its own length field.
    BadTable { signature: [u8; 4], len: usize },
    /// Loading a table's AML failed.
    Load { signature: [u8; 4], error: String },
    /// The AML raised `Fatal`.
    Fatal { kind: u8, code: u32, arg: u64 },
    /// Evaluating an object of a host bridge failed.
    Eval {
        path: String,
        object: &'static str,
        error: String,
    },
    /// A `_CRS` buffer that is not a well-formed resource template.
    BadResources { path: String, problem: String },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::BadTable { signature, len } => write!(
                f,
                "{}: {len} bytes, not a whole table",
                String::from_utf8_lossy(signature)
            ),
            Error::Load { signature, error } => write!(
                f,
                "{}: the AML interpreter refused it: {error}",
                String::from_utf8_lossy(signature)
            ),
            Error::Fatal { kind, code, arg } => write!(
                f,
                "the AML raised Fatal (type {kind:#x}, code {code:#x}, argument {arg:#x})"
            ),
            Error::Eval {
                path,
                object,
                error,
            } => write!(f, "{path}.{object}: {error}"),
            Error::BadResources { path, problem } => write!(f, "{path}._CRS: {problem}"),
        }
    }
}

/// The host bridges found, and what could not be read (one bridge's bad
/// `_CRS` does not hide the others).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    pub bridges: Vec<HostBridge>,
    /// What `\_S5` says to write to the PM1 control blocks' SLP_TYP
    /// fields for soft-off (None: no `\_S5`, as on hardware-reduced
    /// machines, or a malformed one, then also in `problems`).
    pub soft_off: Option<SleepType>,
    pub problems: Vec<Error>,
}

/// A sleep state's SLP_TYP values for the PM1a and PM1b control blocks
/// (the first two elements of its `\_Sx` package).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SleepType {
    pub pm1a: u8,
    pub pm1b: u8,
}

/// Loads `dsdt` and then `ssdts` (whole tables, headers included) into a
/// fresh interpreter and reads every PCI host bridge from it. A table that
/// will not load ends the walk (later tables may depend on it).
pub fn host_bridges<P: Platform + 'static>(
    platform: P,
    dsdt: &[u8],
    ssdts: &[&[u8]],
) -> Result<Discovery, Error> {
    let handler = Adapter::new(platform);
    let revision = aml_body(dsdt)?.0;
    let interpreter = Interpreter::new(
        handler.clone(),
        revision,
        alloc::sync::Arc::new(handler::no_fixed_registers(&handler)?),
        None,
    );
    for table in core::iter::once(&dsdt).chain(ssdts.iter()) {
        let (_, body, signature) = aml_body(table)?;
        let loaded = interpreter.load_table(body);
        handler.take_fatal()?;
        loaded.map_err(|e| Error::Load {
            signature,
            error: format!("{e:?}"),
        })?;
    }

    let mut out = Discovery::default();
    match soft_off(&interpreter) {
        Ok(s) => out.soft_off = s,
        Err(e) => out.problems.push(e),
    }
    handler.take_fatal()?;
    for candidate in candidates(&interpreter)? {
        let path = match candidate {
            Candidate::Bridge(path) => path,
            Candidate::Computed(path) => match is_host_bridge(&interpreter, &path) {
                Ok(true) => path,
                Ok(false) => continue,
                Err(e) => {
                    out.problems.push(e);
                    continue;
                }
            },
        };
        match read_bridge(&interpreter, &path) {
            Ok(b) => out.bridges.push(b),
            Err(e) => out.problems.push(e),
        }
        handler.take_fatal()?;
    }
    Ok(out)
}

/// `\_S5`: a package whose first two elements are integers (a
/// one-element package gives PM1b the same value, as firmware that has
/// no PM1b block writes it).
fn soft_off<H: acpi::Handler>(interpreter: &Interpreter<H>) -> Result<Option<SleepType>, Error> {
    const WHERE: &str = "\\";
    let name = AmlName::from_str("\\_S5_").map_err(|e| eval_error(WHERE, "_S5", e))?;
    let Some(value) = interpreter
        .evaluate_if_present(name, vec![])
        .map_err(|e| eval_error(WHERE, "_S5", e))?
    else {
        return Ok(None);
    };
    let bad = |why: String| Error::Eval {
        path: WHERE.into(),
        object: "_S5",
        error: why,
    };
    let Object::Package(elements) = &*value else {
        return Err(bad(format!("{:?} where a package belongs", value.typ())));
    };
    let typ = |i: usize| -> Result<Option<u8>, Error> {
        match elements.get(i).map(|e| &**e) {
            None => Ok(None),
            Some(Object::Integer(v)) => u8::try_from(*v)
                .ok()
                .filter(|v| *v <= 7)
                .map(Some)
                .ok_or_else(|| bad(format!("SLP_TYP {v:#x} does not fit 3 bits"))),
            Some(o) => Err(bad(format!("{:?} where an integer belongs", o.typ()))),
        }
    };
    let Some(pm1a) = typ(0)? else {
        return Err(bad("an empty package".into()));
    };
    let pm1b = typ(1)?.unwrap_or(pm1a);
    Ok(Some(SleepType { pm1a, pm1b }))
}

/// DSDT revision, the AML after the header, the signature.
fn aml_body(table: &[u8]) -> Result<(u8, &[u8], [u8; 4]), Error> {
    let mut signature = [0u8; 4];
    let n = table.len().min(4);
    signature[..n].copy_from_slice(&table[..n]);
    let bad = Error::BadTable {
        signature,
        len: table.len(),
    };
    if table.len() < SDT_HEADER_LEN {
        return Err(bad);
    }
    let declared = u32::from_le_bytes([table[4], table[5], table[6], table[7]]) as usize;
    if declared < SDT_HEADER_LEN || declared > table.len() {
        return Err(bad);
    }
    Ok((table[8], &table[SDT_HEADER_LEN..declared], signature))
}

/// A device that may be a host bridge.
enum Candidate {
    /// Its `_HID`/`_CID` are plain names that say so.
    Bridge(AmlName),
    /// Its `_HID` or `_CID` is a method: evaluate to know.
    Computed(AmlName),
}

/// What the `_HID`/`_CID` stored in a device's scope say, without running
/// AML: `None` when either is a method.
fn static_ids(level: &NamespaceLevel) -> Option<Vec<String>> {
    let mut ids = Vec::new();
    for seg in [*b"_HID", *b"_CID"] {
        let Ok(seg) = NameSeg::from_bytes(seg) else {
            continue;
        };
        if let Some((_, o)) = level.values.get(&seg) {
            if matches!(**o, Object::Method { .. } | Object::NativeMethod { .. }) {
                return None;
            }
            ids_of(o, &mut ids);
        }
    }
    Some(ids)
}

fn names_host_bridge(ids: &[String]) -> bool {
    ids.iter().any(|i| i == PNP0A08 || i == PNP0A03)
}

/// The devices that are or may be host bridges, in namespace order. Most
/// devices name themselves with plain `_HID`/`_CID` objects, read here
/// without running AML (evaluating every device costs more than the rest
/// of discovery on an emulated CPU). A host bridge's children are PCI
/// devices, not walked.
fn candidates<H: acpi::Handler>(interpreter: &Interpreter<H>) -> Result<Vec<Candidate>, Error> {
    let mut found = Vec::new();
    interpreter
        .namespace
        .lock()
        .traverse(|name, level| {
            if level.kind != NamespaceLevelKind::Device {
                return Ok(true);
            }
            match static_ids(level) {
                Some(ids) if names_host_bridge(&ids) => {
                    found.push(Candidate::Bridge(name.clone()));
                    Ok(false)
                }
                Some(_) => Ok(true),
                None => {
                    found.push(Candidate::Computed(name.clone()));
                    Ok(true)
                }
            }
        })
        .map_err(|e| eval_error("\\", "namespace walk", e))?;
    Ok(found)
}

fn eval_error(path: &str, object: &'static str, e: AmlError) -> Error {
    Error::Eval {
        path: path.to_string(),
        object,
        error: format!("{e:?}"),
    }
}

fn child(path: &AmlName, seg: &str) -> Result<AmlName, Error> {
    let text = format!("{}.{seg}", path.as_string());
    AmlName::from_str(&text).map_err(|e| eval_error(&path.as_string(), "name", e))
}

/// Evaluates `path.obj` if it exists.
fn eval<H: acpi::Handler>(
    interpreter: &Interpreter<H>,
    path: &AmlName,
    obj: &'static str,
) -> Result<Option<Object>, Error> {
    let name = child(path, obj)?;
    interpreter
        .evaluate_if_present(name, vec![])
        .map(|o| o.map(|o| (*o).clone()))
        .map_err(|e| eval_error(&path.as_string(), obj, e))
}

fn eval_integer<H: acpi::Handler>(
    interpreter: &Interpreter<H>,
    path: &AmlName,
    obj: &'static str,
) -> Result<Option<u64>, Error> {
    match eval(interpreter, path, obj)? {
        None => Ok(None),
        Some(Object::Integer(v)) => Ok(Some(v)),
        Some(other) => Err(Error::Eval {
            path: path.as_string(),
            object: obj,
            error: format!("{:?} where an integer belongs", other.typ()),
        }),
    }
}

/// The text form of a `_HID`/`_CID` value: an EISA id (integer) or a string.
pub fn device_id_text(value: u64) -> String {
    // The compressed EISA id is stored big-endian in the low 32 bits.
    let v = (value as u32).swap_bytes();
    let letter = |shift: u32| char::from(b'@' + ((v >> shift) & 0x1f) as u8);
    format!(
        "{}{}{}{:04X}",
        letter(26),
        letter(21),
        letter(16),
        v & 0xffff
    )
}

fn ids_of(o: &Object, out: &mut Vec<String>) {
    match o {
        Object::Integer(v) => out.push(device_id_text(*v)),
        Object::String(s) => out.push(s.clone()),
        Object::Package(items) => items.iter().for_each(|i| ids_of(i, out)),
        _ => {}
    }
}

fn is_host_bridge<H: acpi::Handler>(
    interpreter: &Interpreter<H>,
    path: &AmlName,
) -> Result<bool, Error> {
    let mut ids = Vec::new();
    for obj in ["_HID", "_CID"] {
        if let Some(o) = eval(interpreter, path, obj)? {
            ids_of(&o, &mut ids);
        }
    }
    Ok(names_host_bridge(&ids))
}

fn read_bridge<H: acpi::Handler>(
    interpreter: &Interpreter<H>,
    path: &AmlName,
) -> Result<HostBridge, Error> {
    let text = path.as_string();
    let segment = eval_integer(interpreter, path, "_SEG")?.unwrap_or(0);
    let segment = u16::try_from(segment).map_err(|_| Error::Eval {
        path: text.clone(),
        object: "_SEG",
        error: format!("{segment:#x} is not a segment number"),
    })?;
    let bbn = eval_integer(interpreter, path, "_BBN")?.unwrap_or(0) as u8;
    let mut bridge = HostBridge {
        path: text.clone(),
        segment,
        buses: (bbn, bbn),
        io: Vec::new(),
        mem32: Vec::new(),
        mem64: Vec::new(),
    };
    let Some(crs) = eval(interpreter, path, "_CRS")? else {
        return Ok(bridge);
    };
    let Object::Buffer(bytes) = &crs else {
        return Err(Error::BadResources {
            path: text,
            problem: format!("{:?} where a resource template belongs", crs.typ()),
        });
    };
    let windows = resources::check_template(bytes).map_err(|problem| Error::BadResources {
        path: text.clone(),
        problem: problem.to_string(),
    })?;
    let decoded =
        acpi::aml::resource::resource_descriptor_list(WrappedObject::new(Object::Buffer(windows)))
            .map_err(|e| Error::BadResources {
                path: text.clone(),
                problem: format!("{e:?}"),
            })?;
    resources::fill(&mut bridge, &decoded);
    Ok(bridge)
}
