//! The arm64 `Image` (Linux `Documentation/arch/arm64/booting.rst`): the
//! flat copy of the kernel ELF's loadable segments, which begins with the
//! 64-byte header the kernel's entry code writes. What QEMU's `-kernel`,
//! U-Boot's `booti` and our UEFI loader start.
//!
//! The kernel is a static PIE that applies its own relocations at entry and
//! knows only `R_AARCH64_RELATIVE`: an ELF with any other dynamic relocation
//! is refused here, before it could boot half-relocated.
use std::fmt;
use std::path::{Path, PathBuf};

/// Offset of the header's magic, "ARM\x64".
pub const MAGIC_OFFSET: usize = 0x38;
pub const MAGIC: &[u8; 4] = b"ARM\x64";
pub const HEADER_SIZE: usize = 64;
/// Header flags: bit 0 big-endian, bits 1-2 page size (1 = 4 KiB), bit 3
/// placement anywhere in RAM (not only near its base).
pub const FLAG_BIG_ENDIAN: u64 = 1;
pub const FLAG_PAGE_4K: u64 = 1 << 1;
pub const FLAG_PAGE_MASK: u64 = 3 << 1;
pub const FLAG_ANYWHERE: u64 = 1 << 3;

const EM_AARCH64: u16 = 183;
const PT_LOAD: u32 = 1;
const SHT_RELA: u32 = 4;
const SHT_REL: u32 = 9;
const R_AARCH64_RELATIVE: u32 = 1027;

/// Why an ELF cannot become a bootable `Image`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageError {
    /// Not a little-endian ELF64 file for aarch64.
    NotAarch64Elf,
    /// A header or table lies past the end of the file.
    Truncated(&'static str),
    NoLoadSegment,
    /// The first loadable byte is not at link address 0 (the entry code
    /// takes the running address of the image's start as the load offset).
    NotLinkedAtZero(u64),
    /// A dynamic relocation the entry code does not apply.
    Relocation {
        kind: u32,
        offset: u64,
    },
    /// `SHT_REL` (no addend): never produced for aarch64, not applied.
    RelSection,
    /// The flat image does not start with a valid arm64 header.
    Header(&'static str),
    /// The header's image_size is smaller than what the segments occupy.
    ImageSize {
        header: u64,
        needed: u64,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::NotAarch64Elf => write!(f, "not a little-endian ELF64 file for aarch64"),
            ImageError::Truncated(what) => write!(f, "the ELF is truncated ({what})"),
            ImageError::NoLoadSegment => write!(f, "the ELF has no loadable segment"),
            ImageError::NotLinkedAtZero(a) => write!(
                f,
                "the first loadable segment is linked at {a:#x}, not 0 (linker/aarch64.ld)"
            ),
            ImageError::Relocation { kind, offset } => write!(
                f,
                "dynamic relocation of type {kind} at {offset:#x}: the entry code applies \
                 R_AARCH64_RELATIVE ({R_AARCH64_RELATIVE}) only"
            ),
            ImageError::RelSection => {
                write!(f, "an SHT_REL relocation section: only RELA is applied")
            }
            ImageError::Header(what) => write!(f, "arm64 Image header: {what}"),
            ImageError::ImageSize { header, needed } => write!(
                f,
                "arm64 Image header: image_size {header:#x} is below the {needed:#x} bytes the \
                 segments occupy"
            ),
        }
    }
}

impl std::error::Error for ImageError {}

/// The header fields a loader reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub text_offset: u64,
    pub image_size: u64,
    pub flags: u64,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads and checks the header: magic, a branch in code0, text_offset 0,
/// little-endian, 4 KiB pages, placement anywhere.
pub fn header(image: &[u8]) -> Result<Header, ImageError> {
    if image.len() < HEADER_SIZE {
        return Err(ImageError::Header("shorter than 64 bytes"));
    }
    if &image[MAGIC_OFFSET..MAGIC_OFFSET + 4] != MAGIC {
        return Err(ImageError::Header("no \"ARM\\x64\" magic at 0x38"));
    }
    // code0 is the first instruction: an unconditional branch (B imm26).
    let code0 = u32_at(image, 0).unwrap_or(0);
    if code0 >> 26 != 0b000101 {
        return Err(ImageError::Header("code0 is not a branch"));
    }
    let h = Header {
        text_offset: u64_at(image, 8).unwrap_or(0),
        image_size: u64_at(image, 16).unwrap_or(0),
        flags: u64_at(image, 24).unwrap_or(0),
    };
    if h.text_offset != 0 {
        return Err(ImageError::Header("text_offset is not 0"));
    }
    if h.image_size == 0 {
        return Err(ImageError::Header("image_size is 0 (a loader would guess)"));
    }
    if h.flags & FLAG_BIG_ENDIAN != 0 {
        return Err(ImageError::Header("big-endian"));
    }
    if h.flags & FLAG_PAGE_MASK != FLAG_PAGE_4K {
        return Err(ImageError::Header("page size is not 4 KiB"));
    }
    if h.flags & FLAG_ANYWHERE == 0 {
        return Err(ImageError::Header(
            "placement is not `anywhere` (flags bit 3)",
        ));
    }
    Ok(h)
}

/// The `Image` for an aarch64 kernel ELF: its loadable segments laid out
/// flat from link address 0 (gaps zeroed, BSS left out: the header's
/// image_size counts it), after checking the relocations and the header.
pub fn from_elf(elf: &[u8]) -> Result<Vec<u8>, ImageError> {
    let ok = elf.len() >= 64
        && &elf[..4] == b"\x7fELF"
        && elf[4] == 2 // ELFCLASS64
        && elf[5] == 1 // little-endian
        && u16_at(elf, 18) == Some(EM_AARCH64);
    if !ok {
        return Err(ImageError::NotAarch64Elf);
    }
    check_relocations(elf)?;
    let phoff = u64_at(elf, 32).unwrap_or(0) as usize;
    let phentsize = u16_at(elf, 54).unwrap_or(0) as usize;
    let phnum = u16_at(elf, 56).unwrap_or(0) as usize;
    let mut loads = Vec::new();
    for i in 0..phnum {
        let at = phoff + i * phentsize;
        let ph = elf
            .get(at..at + 56)
            .ok_or(ImageError::Truncated("program headers"))?;
        if u32_at(ph, 0) != Some(PT_LOAD) {
            continue;
        }
        let (offset, vaddr) = (u64_at(ph, 8).unwrap_or(0), u64_at(ph, 16).unwrap_or(0));
        let (filesz, memsz) = (u64_at(ph, 32).unwrap_or(0), u64_at(ph, 40).unwrap_or(0));
        loads.push((offset, vaddr, filesz, memsz));
    }
    let first = loads
        .iter()
        .map(|l| l.1)
        .min()
        .ok_or(ImageError::NoLoadSegment)?;
    if first != 0 {
        return Err(ImageError::NotLinkedAtZero(first));
    }
    let file_end = loads.iter().map(|l| l.1 + l.2).max().unwrap_or(0);
    let mem_end = loads.iter().map(|l| l.1 + l.3).max().unwrap_or(0);
    let mut image = vec![0u8; file_end as usize];
    for &(offset, vaddr, filesz, _) in &loads {
        let src = elf
            .get(offset as usize..(offset + filesz) as usize)
            .ok_or(ImageError::Truncated("a loadable segment"))?;
        image[vaddr as usize..(vaddr + filesz) as usize].copy_from_slice(src);
    }
    let h = header(&image)?;
    if h.image_size < mem_end {
        return Err(ImageError::ImageSize {
            header: h.image_size,
            needed: mem_end,
        });
    }
    Ok(image)
}

/// Every relocation section must hold `R_AARCH64_RELATIVE` entries only.
fn check_relocations(elf: &[u8]) -> Result<(), ImageError> {
    let shoff = u64_at(elf, 40).unwrap_or(0) as usize;
    let shentsize = u16_at(elf, 58).unwrap_or(0) as usize;
    let shnum = u16_at(elf, 60).unwrap_or(0) as usize;
    for i in 0..shnum {
        let at = shoff + i * shentsize;
        let sh = elf
            .get(at..at + 64)
            .ok_or(ImageError::Truncated("section headers"))?;
        match u32_at(sh, 4).unwrap_or(0) {
            SHT_REL => return Err(ImageError::RelSection),
            SHT_RELA => {}
            _ => continue,
        }
        let (offset, size) = (
            u64_at(sh, 24).unwrap_or(0) as usize,
            u64_at(sh, 32).unwrap_or(0) as usize,
        );
        let table = elf
            .get(offset..offset + size)
            .ok_or(ImageError::Truncated("a relocation section"))?;
        for rela in table.chunks_exact(24) {
            let kind = u64_at(rela, 8).unwrap_or(0) as u32;
            if kind != R_AARCH64_RELATIVE {
                return Err(ImageError::Relocation {
                    kind,
                    offset: u64_at(rela, 0).unwrap_or(0),
                });
            }
        }
    }
    Ok(())
}

/// Writes the `Image` for the kernel ELF at `elf` beside it (`Image` in
/// the same directory) and returns its path.
pub fn write_beside(elf: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let bytes = std::fs::read(elf).with_context(|| format!("kernel {}", elf.display()))?;
    let image = from_elf(&bytes).with_context(|| format!("kernel {}", elf.display()))?;
    let out = elf.with_file_name("Image");
    std::fs::write(&out, image).with_context(|| out.display().to_string())?;
    Ok(out)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A valid header for an image of `size` bytes.
    pub fn header_bytes(size: u64) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_SIZE];
        h[..4].copy_from_slice(&0x1400_0010u32.to_le_bytes()); // b +0x40
        h[16..24].copy_from_slice(&size.to_le_bytes());
        h[24..32].copy_from_slice(&(FLAG_PAGE_4K | FLAG_ANYWHERE).to_le_bytes());
        h[MAGIC_OFFSET..MAGIC_OFFSET + 4].copy_from_slice(MAGIC);
        h
    }

    /// An aarch64 ELF64 with one PT_LOAD holding `load` at `vaddr` (plus
    /// `bss` bytes of memory), and a RELA section of (offset, type) entries.
    pub fn elf(load: &[u8], vaddr: u64, bss: u64, relas: &[(u64, u32)]) -> Vec<u8> {
        let mut e = vec![0u8; 64];
        e[..4].copy_from_slice(b"\x7fELF");
        e[4] = 2;
        e[5] = 1;
        e[6] = 1;
        e[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        e[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        let put = |e: &mut Vec<u8>, at: usize, v: &[u8]| e[at..at + v.len()].copy_from_slice(v);
        // Program header at 64, segment data at 0x1000.
        let mut ph = vec![0u8; 56];
        put(&mut ph, 0, &PT_LOAD.to_le_bytes());
        put(&mut ph, 8, &0x1000u64.to_le_bytes());
        put(&mut ph, 16, &vaddr.to_le_bytes());
        put(&mut ph, 24, &vaddr.to_le_bytes());
        put(&mut ph, 32, &(load.len() as u64).to_le_bytes());
        put(&mut ph, 40, &(load.len() as u64 + bss).to_le_bytes());
        e.extend(ph);
        put(&mut e, 32, &64u64.to_le_bytes());
        put(&mut e, 54, &56u16.to_le_bytes());
        put(&mut e, 56, &1u16.to_le_bytes());
        e.resize(0x1000, 0);
        e.extend(load);
        let rela_at = e.len();
        for &(off, kind) in relas {
            e.extend(off.to_le_bytes());
            e.extend(u64::from(kind).to_le_bytes());
            e.extend(0x40u64.to_le_bytes());
        }
        // Section headers: null, then the RELA section.
        let shoff = e.len();
        e.extend([0u8; 64]);
        let mut sh = vec![0u8; 64];
        put(&mut sh, 4, &SHT_RELA.to_le_bytes());
        put(&mut sh, 24, &(rela_at as u64).to_le_bytes());
        put(&mut sh, 32, &(relas.len() as u64 * 24).to_le_bytes());
        put(&mut sh, 56, &24u64.to_le_bytes());
        e.extend(sh);
        put(&mut e, 40, &(shoff as u64).to_le_bytes());
        put(&mut e, 58, &64u16.to_le_bytes());
        put(&mut e, 60, &2u16.to_le_bytes());
        e
    }

    fn payload(image_size: u64) -> Vec<u8> {
        let mut p = header_bytes(image_size);
        p.extend([0xaa; 64]);
        p
    }

    #[test]
    fn an_image_is_the_flat_load_segment_with_its_header() {
        let load = payload(0x3000);
        let image = from_elf(&elf(&load, 0, 0x2000, &[(0x40, 1027)])).unwrap();
        assert_eq!(image, load);
        let h = header(&image).unwrap();
        assert_eq!(
            h,
            Header {
                text_offset: 0,
                image_size: 0x3000,
                flags: 0b1010
            }
        );
    }

    #[test]
    fn other_dynamic_relocations_are_refused() {
        let load = payload(0x1000);
        // R_AARCH64_ABS64 (257) and R_AARCH64_GLOB_DAT (1025).
        for kind in [257, 1025] {
            let e = from_elf(&elf(&load, 0, 0, &[(0x40, 1027), (0x48, kind)])).unwrap_err();
            assert_eq!(e, ImageError::Relocation { kind, offset: 0x48 });
            assert!(
                e.to_string().contains("R_AARCH64_RELATIVE (1027) only"),
                "{e}"
            );
        }
    }

    #[test]
    fn bss_must_be_counted_in_image_size() {
        let load = payload(0x1000);
        let e = from_elf(&elf(&load, 0, 0x2000, &[])).unwrap_err();
        assert_eq!(
            e,
            ImageError::ImageSize {
                header: 0x1000,
                needed: 0x2080
            }
        );
    }

    #[test]
    fn bad_elves_and_headers_are_refused() {
        let load = payload(0x1000);
        assert_eq!(from_elf(b"MZ"), Err(ImageError::NotAarch64Elf));
        let mut x86 = elf(&load, 0, 0, &[]);
        x86[18] = 62;
        assert_eq!(from_elf(&x86), Err(ImageError::NotAarch64Elf));
        assert_eq!(
            from_elf(&elf(&load, 0x4020_0000, 0, &[])),
            Err(ImageError::NotLinkedAtZero(0x4020_0000))
        );
        let bad = |edit: &dyn Fn(&mut Vec<u8>)| {
            let mut h = header_bytes(0x1000);
            edit(&mut h);
            header(&h).unwrap_err()
        };
        assert_eq!(
            bad(&|h| h[MAGIC_OFFSET] = b'X'),
            ImageError::Header("no \"ARM\\x64\" magic at 0x38")
        );
        assert_eq!(
            bad(&|h| h[..4].copy_from_slice(&0xd503_201fu32.to_le_bytes())),
            ImageError::Header("code0 is not a branch")
        );
        assert_eq!(
            bad(&|h| h[8] = 0x80),
            ImageError::Header("text_offset is not 0")
        );
        assert_eq!(
            bad(&|h| h[24] = 0b0010),
            ImageError::Header("placement is not `anywhere` (flags bit 3)")
        );
        assert_eq!(
            bad(&|h| h[24] = 0b1100),
            ImageError::Header("page size is not 4 KiB")
        );
        assert_eq!(
            bad(&|h| h[16..24].fill(0)),
            ImageError::Header("image_size is 0 (a loader would guess)")
        );
    }
}
