//! Tests of the bounds-checked byte reader and the ASCII field helper.

use super::*;

#[test]
fn reads_and_bounds() {
    let b = Bytes::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9], *b"TEST");
    assert_eq!(b.u8(0), Ok(1));
    assert_eq!(b.u16(1), Ok(0x0302));
    assert_eq!(b.u32(0), Ok(0x04030201));
    assert_eq!(b.u64(1), Ok(0x0908070605040302));
    let e = b.u64(2).unwrap_err();
    assert_eq!(e.offset, 2);
    assert_eq!(e.kind, ErrorKind::Truncated { need: 8, have: 7 });
    assert!(b.u8(9).is_err());
    assert!(b.slice(usize::MAX, 2).is_err());
    assert_eq!(b.sub(2, 3).unwrap().data, &[3, 4, 5]);
    assert_eq!(ascii(b"BOCHS \0xx"), "BOCHS ");
}
