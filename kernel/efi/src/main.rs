//! The UEFI loader's EFI application (`loader.efi`); its decisions live in
//! the library beside it (host-tested), this only talks to firmware.
#![cfg_attr(target_os = "uefi", no_std, no_main)]

#[cfg(not(target_os = "uefi"))]
fn main() {
    eprintln!(
        "the loader is an EFI application: cargo build -p efi --target x86_64-unknown-uefi \
         (or aarch64-unknown-uefi) with IOMMU_EFI_KERNEL naming the kernel; qemu-run does"
    );
    std::process::exit(2);
}

#[cfg(target_os = "uefi")]
#[allow(unsafe_code)]
mod firmware;
