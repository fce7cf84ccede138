//! Embeds the kernel named by `IOMMU_EFI_KERNEL` (qemu-run sets it: the
//! x86_64 kernel ELF, or the arm64 `Image`). Without it the loader still
//! builds (clippy, the host) and says at run time that it carries nothing.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=IOMMU_EFI_KERNEL");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("kernel.rs");
    let body = match std::env::var("IOMMU_EFI_KERNEL") {
        Ok(path) if !path.is_empty() => {
            println!("cargo:rerun-if-changed={path}");
            format!("pub static KERNEL: &[u8] = include_bytes!({path:?});\n")
        }
        _ => "pub static KERNEL: &[u8] = &[];\n".to_string(),
    };
    std::fs::write(out, body).unwrap();
}
