//! The arm64 `Image` header (Linux's `Documentation/arch/arm64/booting.rst`):
//! how much memory the image needs and where inside a 2 MiB-aligned
//! region its first byte goes.
use core::fmt;

/// "ARM\x64" at offset 56, little-endian.
pub const MAGIC: u32 = 0x644d_5241;
const HEADER: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arm64Image {
    /// Offset from a 2 MiB-aligned base at which the image is placed.
    pub text_offset: u64,
    /// Bytes the image occupies once running (file plus BSS and more).
    pub image_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageError {
    Short(usize),
    BadMagic(u32),
    /// The header's size is smaller than the file.
    SizeBelowFile {
        image_size: u64,
        file: u64,
    },
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Short(n) => write!(f, "{n} bytes: shorter than an arm64 Image header"),
            ImageError::BadMagic(m) => {
                write!(
                    f,
                    "Image magic {m:#x}, expected {MAGIC:#x}: not an arm64 Image"
                )
            }
            ImageError::SizeBelowFile { image_size, file } => write!(
                f,
                "Image header says {image_size:#x} bytes, the file has {file:#x}"
            ),
        }
    }
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut v = [0; 8];
    v.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(v)
}

pub fn parse_header(image: &[u8]) -> Result<Arm64Image, ImageError> {
    if image.len() < HEADER {
        return Err(ImageError::Short(image.len()));
    }
    let magic = u32::from_le_bytes([image[56], image[57], image[58], image[59]]);
    if magic != MAGIC {
        return Err(ImageError::BadMagic(magic));
    }
    let text_offset = u64_at(image, 8);
    let file = image.len() as u64;
    // An image_size of 0 comes from kernels older than 3.17: the size is
    // unknown, the file is all we can go by.
    let image_size = match u64_at(image, 16) {
        0 => file,
        s if s < file => {
            return Err(ImageError::SizeBelowFile {
                image_size: s,
                file,
            })
        }
        s => s,
    };
    Ok(Arm64Image {
        text_offset,
        image_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(text_offset: u64, size: u64) -> Vec<u8> {
        let mut h = vec![0u8; 4096];
        h[8..16].copy_from_slice(&text_offset.to_le_bytes());
        h[16..24].copy_from_slice(&size.to_le_bytes());
        h[56..60].copy_from_slice(b"ARM\x64");
        h
    }

    #[test]
    fn reads_size_and_offset() {
        assert_eq!(
            parse_header(&header(0, 0x20_0000)),
            Ok(Arm64Image {
                text_offset: 0,
                image_size: 0x20_0000
            })
        );
        assert_eq!(parse_header(&header(0x8_0000, 0)).unwrap().image_size, 4096);
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        let mut h = header(0, 0x20_0000);
        h[56] = b'X';
        assert!(matches!(parse_header(&h), Err(ImageError::BadMagic(_))));
        assert_eq!(parse_header(&h[..10]), Err(ImageError::Short(10)));
        assert!(matches!(
            parse_header(&header(0, 16)),
            Err(ImageError::SizeBelowFile { .. })
        ));
    }
}
