//! Picks the linker script for the bare-metal target being built.
use std::path::PathBuf;

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os != "none" {
        return;
    }
    let script = match target.as_str() {
        "aarch64-unknown-none" => "aarch64.ld",
        "x86_64-unknown-none" => "x86_64-pvh.ld",
        other => panic!("no linker script for target {other}"),
    };
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../../linker");
    let path = dir.join(script);
    println!("cargo:rerun-if-changed={}", path.display());
    println!("cargo:rustc-link-arg-bins=-T{}", path.display());
    if target == "aarch64-unknown-none" {
        // A static PIE (the code is built with relocation-model=pie,
        // .cargo/config.toml) with no interpreter. The prebuilt `core` has
        // absolute pointers in .rodata: they become relocations too
        // (`notext`, as Linux links arm64), applied before the MMU is on;
        // nothing is made read-only after relocation (`norelro`).
        for arg in [
            "-pie",
            "--no-dynamic-linker",
            "-z",
            "notext",
            "-z",
            "norelro",
        ] {
            println!("cargo:rustc-link-arg-bins={arg}");
        }
    }
    if target == "x86_64-unknown-none" {
        // The UEFI loader places the image wherever firmware has room and
        // moves it there with the link-time relocations kept here.
        println!("cargo:rustc-link-arg-bins=--emit-relocs");
    }
}
