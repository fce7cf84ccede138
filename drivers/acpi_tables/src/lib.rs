//! Parsers for the ACPI tables the kernel needs. Every parser takes
//! untrusted bytes and is total: a bad length, offset, count, checksum or
//! revision gives a [`TableError`] naming the table, the offset and the
//! problem, never a panic or an out-of-bounds read. The same code runs in
//! the kernel and in `qemu-run acpi decode`.
//!
//! Why not the `acpi` crate: it reads tables through physical-memory
//! mappings (`Handler::map_physical_region`) and packed-struct casts that
//! trust the lengths inside the table, which the fuzzing requirement rules
//! out and which cannot read a table from a file; it also has no IORT or DMAR.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bytes;
pub mod dmar;
pub mod error;
pub mod fadt;
pub mod gtdt;
pub mod iort;
pub mod madt;
pub mod mcfg;
pub mod sdt;
pub mod spcr;

pub use error::{ErrorKind, TableError};
