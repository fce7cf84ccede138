//! Any bytes: a platform description or a typed error, never a panic; what
//! parses also resolves and prints.
#![no_main]
use devicetree::Platform;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = devicetree::blob_size(data);
    // Also with the header's totalsize made to match, so the fuzzer gets past it.
    let mut fixed = data.to_vec();
    if fixed.len() >= 8 {
        let n = fixed.len() as u32;
        fixed[4..8].copy_from_slice(&n.to_be_bytes());
    }
    for blob in [data, &fixed[..]] {
        if let Ok(p) = Platform::parse(blob) {
            for host in &p.pcie {
                for rid in [0u16, 8, 0x100, 0x8100, 0xffff] {
                    let _ = p.iommu_for(host, rid);
                    let _ = p.msi_for(host, rid);
                }
            }
            let _ = format!("{p}");
        }
    }
});
