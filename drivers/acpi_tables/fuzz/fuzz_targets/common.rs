/// Makes the input a table the header checks accept (signature, length,
/// checksum), so the fuzzer spends its time in the structure parsing.
pub fn as_table(data: &[u8], sig: &[u8; 4]) -> Option<Vec<u8>> {
    if data.len() < 36 {
        return None;
    }
    let mut t = data.to_vec();
    t[0..4].copy_from_slice(sig);
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[9] = 0;
    let sum = t.iter().fold(0u8, |a, &b| a.wrapping_add(b));
    t[9] = 0u8.wrapping_sub(sum);
    Some(t)
}
