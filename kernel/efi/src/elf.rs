//! Placing the x86_64 kernel ELF where firmware has room.
//!
//! The kernel is linked at 1 MiB for PVH, but under UEFI that memory is
//! not free (OVMF keeps ACPI NVS at 8 MiB). The loader copies the
//! `PT_LOAD` segments to a 2 MiB-aligned allocation below 2 GiB and adds
//! the displacement wherever the link-time relocations (kept by
//! `--emit-relocs`) hold an absolute address, and to every slot of the
//! GOT the linker filled in. PC-relative references move with the code.
//! Below 2 GiB, because `R_X86_64_32S` fields are sign-extended 32 bits.
use core::fmt;

const EM_X86_64: u16 = 62;
const ET_EXEC: u16 = 2;
const PT_LOAD: u32 = 1;
const SHT_SYMTAB: u32 = 2;
const SHT_RELA: u32 = 4;
const SHF_ALLOC: u64 = 2;

const R_NONE: u32 = 0;
const R_64: u32 = 1;
const R_PC32: u32 = 2;
const R_PLT32: u32 = 4;
const R_GOTPCREL: u32 = 9;
const R_32: u32 = 10;
const R_32S: u32 = 11;
const R_PC64: u32 = 24;
const R_GOTPCRELX: u32 = 41;
const R_REX_GOTPCRELX: u32 = 42;

/// Highest address (exclusive) a moved image may reach.
pub const PLACE_LIMIT: u64 = 1 << 31;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElfError {
    /// A header or table runs past the end of the file.
    Truncated(&'static str),
    NotElf,
    /// Not a little-endian 64-bit x86_64 executable.
    WrongKind {
        machine: u16,
        kind: u16,
    },
    NoLoadSegment,
    SymbolMissing(&'static str),
    UnknownRelocation {
        kind: u32,
        at: u64,
    },
    /// A relocation or GOT slot outside the loaded image.
    OutsideImage {
        at: u64,
    },
    /// The moved address no longer fits its field.
    OutOfRange {
        kind: u32,
        at: u64,
    },
    /// The destination is not the image's size.
    WrongDestination {
        have: u64,
        need: u64,
    },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::Truncated(what) => write!(f, "kernel ELF: {what} runs past the file"),
            ElfError::NotElf => write!(f, "the embedded kernel is not an ELF file"),
            ElfError::WrongKind { machine, kind } => write!(
                f,
                "kernel ELF: machine {machine}, type {kind}: not an x86_64 executable"
            ),
            ElfError::NoLoadSegment => write!(f, "kernel ELF has no PT_LOAD segment"),
            ElfError::SymbolMissing(s) => write!(f, "kernel ELF has no symbol {s}"),
            ElfError::UnknownRelocation { kind, at } => write!(
                f,
                "kernel ELF: relocation type {kind} at {at:#x} is not one the loader applies"
            ),
            ElfError::OutsideImage { at } => {
                write!(f, "kernel ELF: relocation at {at:#x} outside the image")
            }
            ElfError::OutOfRange { kind, at } => write!(
                f,
                "kernel ELF: relocation type {kind} at {at:#x} does not fit once moved"
            ),
            ElfError::WrongDestination { have, need } => write!(
                f,
                "kernel ELF: destination of {have:#x} bytes for an image of {need:#x}"
            ),
        }
    }
}

fn bytes<'a>(b: &'a [u8], off: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfError> {
    let end = off.checked_add(len).ok_or(ElfError::Truncated(what))?;
    b.get(off as usize..end as usize)
        .ok_or(ElfError::Truncated(what))
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    let mut v = [0; 4];
    v.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(v)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

#[derive(Debug, Clone, Copy)]
struct Section {
    name: u32,
    kind: u32,
    flags: u64,
    addr: u64,
    offset: u64,
    size: u64,
    link: u32,
    info: u32,
    entsize: u64,
}

/// A parsed kernel ELF, borrowed from the embedded bytes.
pub struct Elf<'a> {
    file: &'a [u8],
    segments: alloc::vec::Vec<(u64, u64, u64, u64)>, // vaddr, offset, filesz, memsz
    sections: alloc::vec::Vec<Section>,
    shstrndx: usize,
    low: u64,
    high: u64,
}

impl<'a> Elf<'a> {
    pub fn parse(file: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        let h = bytes(file, 0, 64, "the ELF header")?;
        if &h[0..4] != b"\x7fELF" || h[4] != 2 || h[5] != 1 {
            return Err(ElfError::NotElf);
        }
        let (kind, machine) = (u16_at(h, 16), u16_at(h, 18));
        if kind != ET_EXEC || machine != EM_X86_64 {
            return Err(ElfError::WrongKind { machine, kind });
        }
        let (phoff, shoff) = (u64_at(h, 32), u64_at(h, 40));
        let (phentsize, phnum) = (u64::from(u16_at(h, 54)), u64::from(u16_at(h, 56)));
        let (shentsize, shnum) = (u64::from(u16_at(h, 58)), u64::from(u16_at(h, 60)));
        let shstrndx = usize::from(u16_at(h, 62));

        let mut segments = alloc::vec::Vec::new();
        for i in 0..phnum {
            let p = bytes(file, phoff + i * phentsize, 56, "a program header")?;
            if u32_at(p, 0) != PT_LOAD || u64_at(p, 40) == 0 {
                continue;
            }
            let (offset, vaddr, filesz, memsz) =
                (u64_at(p, 8), u64_at(p, 16), u64_at(p, 32), u64_at(p, 40));
            bytes(file, offset, filesz, "a segment")?;
            if filesz > memsz || vaddr.checked_add(memsz).is_none() {
                return Err(ElfError::Truncated("a segment"));
            }
            segments.push((vaddr, offset, filesz, memsz));
        }
        let low = segments
            .iter()
            .map(|s| s.0)
            .min()
            .ok_or(ElfError::NoLoadSegment)?;
        let high = segments.iter().map(|s| s.0 + s.3).max().unwrap_or(low);

        let mut sections = alloc::vec::Vec::new();
        for i in 0..shnum {
            let s = bytes(file, shoff + i * shentsize, 64, "a section header")?;
            sections.push(Section {
                name: u32_at(s, 0),
                kind: u32_at(s, 4),
                flags: u64_at(s, 8),
                addr: u64_at(s, 16),
                offset: u64_at(s, 24),
                size: u64_at(s, 32),
                link: u32_at(s, 40),
                info: u32_at(s, 44),
                entsize: u64_at(s, 56),
            });
        }
        Ok(Elf {
            file,
            segments,
            sections,
            shstrndx,
            low,
            high,
        })
    }

    /// The linked address of the image's first byte.
    pub fn link_base(&self) -> u64 {
        self.low
    }

    /// Bytes from the first loaded byte to the end of the last segment
    /// (BSS included).
    pub fn image_size(&self) -> u64 {
        self.high - self.low
    }

    fn name(&self, strtab: usize, off: u32) -> Option<&'a [u8]> {
        let s = self.sections.get(strtab)?;
        let tab = bytes(self.file, s.offset, s.size, "a string table").ok()?;
        let start = tab.get(off as usize..)?;
        Some(&start[..start.iter().position(|&b| b == 0)?])
    }

    fn section_named(&self, name: &str) -> Option<&Section> {
        self.sections
            .iter()
            .find(|s| self.name(self.shstrndx, s.name) == Some(name.as_bytes()))
    }

    /// The linked address of symbol `name` (from `.symtab`).
    pub fn symbol(&self, name: &'static str) -> Result<u64, ElfError> {
        for symtab in self.sections.iter().filter(|s| s.kind == SHT_SYMTAB) {
            let tab = bytes(self.file, symtab.offset, symtab.size, "the symbol table")?;
            for sym in tab.chunks_exact(24) {
                if self.name(symtab.link as usize, u32_at(sym, 0)) == Some(name.as_bytes()) {
                    return Ok(u64_at(sym, 8));
                }
            }
        }
        Err(ElfError::SymbolMissing(name))
    }

    /// Copies the image into `dest` (its [`image_size`](Self::image_size)
    /// bytes, which will sit at physical `base`), zeroes the rest (BSS), and
    /// applies the relocations for the move from [`link_base`](Self::link_base)
    /// to `base`.
    pub fn load(&self, dest: &mut [u8], base: u64) -> Result<(), ElfError> {
        let need = self.image_size();
        if dest.len() as u64 != need {
            return Err(ElfError::WrongDestination {
                have: dest.len() as u64,
                need,
            });
        }
        if base.checked_add(need).is_none_or(|end| end > PLACE_LIMIT) {
            return Err(ElfError::OutOfRange {
                kind: R_32S,
                at: base,
            });
        }
        dest.fill(0);
        for &(vaddr, offset, filesz, _) in &self.segments {
            let at = (vaddr - self.low) as usize;
            dest[at..at + filesz as usize]
                .copy_from_slice(&self.file[offset as usize..(offset + filesz) as usize]);
        }
        let delta = base.wrapping_sub(self.low);
        for rela in self.sections.iter().filter(|s| s.kind == SHT_RELA) {
            let target = self.sections.get(rela.info as usize);
            if target.is_none_or(|t| t.flags & SHF_ALLOC == 0) {
                continue; // debug information: not loaded
            }
            let entsize = if rela.entsize == 0 { 24 } else { rela.entsize };
            let tab = bytes(self.file, rela.offset, rela.size, "a relocation table")?;
            for r in tab.chunks_exact(entsize as usize) {
                self.relocate(dest, u64_at(r, 0), u64_at(r, 8) as u32, delta)?;
            }
        }
        if let Some(got) = self
            .section_named(".got")
            .filter(|s| s.flags & SHF_ALLOC != 0)
        {
            for slot in (got.addr..got.addr + got.size).step_by(8) {
                let field = self.field(dest, slot, 8)?;
                let v = u64::from_le_bytes(field.try_into().unwrap_or([0; 8]));
                // A zero slot is an undefined weak symbol: it stays zero.
                if v != 0 {
                    field.copy_from_slice(&v.wrapping_add(delta).to_le_bytes());
                }
            }
        }
        Ok(())
    }

    fn field<'d>(&self, dest: &'d mut [u8], at: u64, len: u64) -> Result<&'d mut [u8], ElfError> {
        let off = at
            .checked_sub(self.low)
            .ok_or(ElfError::OutsideImage { at })?;
        let end = off.checked_add(len).ok_or(ElfError::OutsideImage { at })?;
        dest.get_mut(off as usize..end as usize)
            .ok_or(ElfError::OutsideImage { at })
    }

    fn relocate(&self, dest: &mut [u8], at: u64, kind: u32, delta: u64) -> Result<(), ElfError> {
        match kind {
            // Relative to the code itself (or to a GOT slot moved below).
            R_NONE | R_PC32 | R_PLT32 | R_PC64 | R_GOTPCREL | R_GOTPCRELX | R_REX_GOTPCRELX => {}
            R_64 => {
                let f = self.field(dest, at, 8)?;
                let v = u64_at(f, 0).wrapping_add(delta);
                f.copy_from_slice(&v.to_le_bytes());
            }
            R_32 => {
                let f = self.field(dest, at, 4)?;
                let v = u64::from(u32_at(f, 0)).wrapping_add(delta);
                let v = u32::try_from(v).map_err(|_| ElfError::OutOfRange { kind, at })?;
                f.copy_from_slice(&v.to_le_bytes());
            }
            R_32S => {
                let f = self.field(dest, at, 4)?;
                let v = i64::from(u32_at(f, 0) as i32).wrapping_add(delta as i64);
                let v = i32::try_from(v).map_err(|_| ElfError::OutOfRange { kind, at })?;
                f.copy_from_slice(&v.to_le_bytes());
            }
            _ => return Err(ElfError::UnknownRelocation { kind, at }),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    /// A small ELF as the kernel's link produces it: one segment of code
    /// and data at 1 MiB (0x40 bytes of file, 0x1000 in memory), a `.got`
    /// with two slots, and relocations of each kind against it.
    struct Built {
        file: Vec<u8>,
    }

    const LINK: u64 = 0x10_0000;

    fn put16(b: &mut [u8], o: usize, v: u16) {
        b[o..o + 2].copy_from_slice(&v.to_le_bytes());
    }
    fn put32(b: &mut [u8], o: usize, v: u32) {
        b[o..o + 4].copy_from_slice(&v.to_le_bytes());
    }
    fn put64(b: &mut [u8], o: usize, v: u64) {
        b[o..o + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn build(relocs: &[(u64, u32)]) -> Built {
        // Layout: header 0..64, phdr 64..120, image 0x100..0x140, rela,
        // symtab, strtab, shstrtab, section headers.
        let mut f = vec![0u8; 0x100];
        f[0..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        put16(&mut f, 16, ET_EXEC);
        put16(&mut f, 18, EM_X86_64);
        put64(&mut f, 32, 64);
        put16(&mut f, 54, 56);
        put16(&mut f, 56, 1);
        // PT_LOAD
        put32(&mut f, 64, PT_LOAD);
        put64(&mut f, 64 + 8, 0x100);
        put64(&mut f, 64 + 16, LINK);
        put64(&mut f, 64 + 32, 0x40);
        put64(&mut f, 64 + 40, 0x1000);
        // Image: 0x00 a u64 pointer, 0x08 a u32, 0x0c an i32, 0x10 a PC32,
        // 0x20..0x30 the GOT (one slot used, one zero).
        let mut img = vec![0u8; 0x40];
        put64(&mut img, 0x00, LINK + 0x30);
        put32(&mut img, 0x08, (LINK + 0x34) as u32);
        put32(&mut img, 0x0c, (LINK + 0x38) as u32);
        put32(&mut img, 0x10, 0x1234);
        put64(&mut img, 0x20, LINK + 0x3c);
        f.extend_from_slice(&img);
        let rela_off = f.len();
        for &(at, kind) in relocs {
            let mut r = [0u8; 24];
            put64(&mut r, 0, at);
            put64(&mut r, 8, u64::from(kind));
            f.extend_from_slice(&r);
        }
        let rela_size = f.len() - rela_off;
        let strtab = b"\0efi_start64\0".to_vec();
        let sym_off = f.len();
        let mut sym = [0u8; 48];
        put32(&mut sym, 24, 1);
        put64(&mut sym, 24 + 8, LINK + 0x18);
        f.extend_from_slice(&sym);
        let str_off = f.len();
        f.extend_from_slice(&strtab);
        let shstr = b"\0.text\0.rela.text\0.got\0.symtab\0.strtab\0.shstrtab\0".to_vec();
        let shstr_off = f.len();
        f.extend_from_slice(&shstr);
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let shoff = f.len();
        // null, .text(1), .rela.text(2), .got(3), .symtab(4), .strtab(5), .shstrtab(6)
        // name, type, flags, addr, offset, size, link, info
        type Header = (u32, u32, u64, u64, u64, u64, u32, u32);
        let secs: [Header; 7] = [
            (0, 0, 0, 0, 0, 0, 0, 0),
            (1, 1, 6, LINK, 0x100, 0x20, 0, 0),
            (
                7,
                SHT_RELA,
                0x40,
                0,
                rela_off as u64,
                rela_size as u64,
                4,
                1,
            ),
            (18, 1, 3, LINK + 0x20, 0x120, 0x10, 0, 0),
            (23, SHT_SYMTAB, 0, 0, sym_off as u64, 48, 5, 1),
            (31, 3, 0, 0, str_off as u64, strtab.len() as u64, 0, 0),
            (39, 3, 0, 0, shstr_off as u64, shstr.len() as u64, 0, 0),
        ];
        for (name, kind, flags, addr, off, size, link, info) in secs {
            let mut s = [0u8; 64];
            put32(&mut s, 0, name);
            put32(&mut s, 4, kind);
            put64(&mut s, 8, flags);
            put64(&mut s, 16, addr);
            put64(&mut s, 24, off);
            put64(&mut s, 32, size);
            put32(&mut s, 40, link);
            put32(&mut s, 44, info);
            put64(&mut s, 56, if kind == SHT_RELA { 24 } else { 0 });
            f.extend_from_slice(&s);
        }
        put64(&mut f, 40, shoff as u64);
        put16(&mut f, 58, 64);
        put16(&mut f, 60, 7);
        put16(&mut f, 62, 6);
        Built { file: f }
    }

    fn all_kinds() -> Built {
        build(&[
            (LINK, R_64),
            (LINK + 0x08, R_32),
            (LINK + 0x0c, R_32S),
            (LINK + 0x10, R_PC32),
        ])
    }

    #[test]
    fn moves_every_absolute_address() {
        let b = all_kinds();
        let elf = Elf::parse(&b.file).unwrap();
        assert_eq!(elf.link_base(), LINK);
        assert_eq!(elf.image_size(), 0x1000);
        let mut dest = vec![0xffu8; 0x1000];
        let base = 0x7e00_0000;
        elf.load(&mut dest, base).unwrap();
        assert_eq!(u64_at(&dest, 0x00), base + 0x30);
        assert_eq!(u64::from(u32_at(&dest, 0x08)), base + 0x34);
        assert_eq!(u64::from(u32_at(&dest, 0x0c)), base + 0x38);
        assert_eq!(u32_at(&dest, 0x10), 0x1234, "PC-relative: unchanged");
        assert_eq!(u64_at(&dest, 0x20), base + 0x3c, "GOT slot moved");
        assert_eq!(u64_at(&dest, 0x28), 0, "empty GOT slot stays empty");
        assert!(dest[0x40..].iter().all(|&b| b == 0), "BSS zeroed");
    }

    #[test]
    fn loading_at_the_link_address_changes_nothing() {
        let b = all_kinds();
        let elf = Elf::parse(&b.file).unwrap();
        let mut dest = vec![0u8; 0x1000];
        elf.load(&mut dest, LINK).unwrap();
        assert_eq!(&dest[..0x40], &b.file[0x100..0x140]);
    }

    #[test]
    fn finds_the_uefi_entry() {
        let b = all_kinds();
        let elf = Elf::parse(&b.file).unwrap();
        assert_eq!(elf.symbol("efi_start64"), Ok(LINK + 0x18));
        assert_eq!(elf.symbol("nope"), Err(ElfError::SymbolMissing("nope")));
    }

    #[test]
    fn refuses_a_place_the_32_bit_fields_cannot_reach() {
        let b = all_kinds();
        let elf = Elf::parse(&b.file).unwrap();
        let mut dest = vec![0u8; 0x1000];
        assert!(matches!(
            elf.load(&mut dest, PLACE_LIMIT - 0x800),
            Err(ElfError::OutOfRange { .. })
        ));
    }

    #[test]
    fn refuses_unknown_relocations_and_ones_outside_the_image() {
        let b = build(&[(LINK, 37)]);
        let mut dest = vec![0u8; 0x1000];
        assert_eq!(
            Elf::parse(&b.file).unwrap().load(&mut dest, 0x20_0000),
            Err(ElfError::UnknownRelocation { kind: 37, at: LINK })
        );
        let b = build(&[(LINK + 0x2000, R_64)]);
        assert_eq!(
            Elf::parse(&b.file).unwrap().load(&mut dest, 0x20_0000),
            Err(ElfError::OutsideImage { at: LINK + 0x2000 })
        );
    }

    #[test]
    fn refuses_what_is_not_an_x86_64_executable() {
        let mut b = all_kinds();
        assert!(Elf::parse(&b.file[..40]).is_err());
        b.file[18] = 183; // aarch64
        assert!(matches!(
            Elf::parse(&b.file),
            Err(ElfError::WrongKind { machine: 183, .. })
        ));
        b.file[0] = 0;
        assert!(matches!(Elf::parse(&b.file), Err(ElfError::NotElf)));
    }
}
