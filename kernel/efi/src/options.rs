//! The kernel command line from the loaded image's LoadOptions: UCS-2
//! little-endian, perhaps NUL-terminated (OVMF's `-kernel` loader and the
//! UEFI shell both pass it so; the shell puts the program's name first).
use alloc::string::String;

/// The command line as UTF-8: up to the first NUL, unpaired surrogates
/// replaced, surrounding blanks trimmed. An odd trailing byte is dropped.
pub fn command_line(load_options: &[u8]) -> String {
    let units = load_options
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0);
    let s: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect();
    String::from(s.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ucs2(s: &str) -> Vec<u8> {
        s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
    }

    #[test]
    fn stops_at_the_nul_and_trims() {
        let mut b = ucs2(" exit=isa-debug-exit log=info \0garbage");
        b.push(0x41);
        assert_eq!(command_line(&b), "exit=isa-debug-exit log=info");
    }

    #[test]
    fn empty_and_odd_input() {
        assert_eq!(command_line(&[]), "");
        assert_eq!(command_line(&[0x61]), "");
        assert_eq!(command_line(&[0x00, 0xd8, 0x61, 0x00]), "\u{fffd}a");
    }
}
