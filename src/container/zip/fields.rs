//! Byte access for the decoders: everything returns `None` when out of range, and callers turn
//! that into a `Format` error with context. Fixed-size headers are read as arrays, so a field
//! offset cannot overrun them.

pub(super) fn range(bytes: &[u8], start: u64, len: u64) -> Option<&[u8]> {
    let end = start.checked_add(len)?;
    let start = usize::try_from(start).ok()?;
    let end = usize::try_from(end).ok()?;
    bytes.get(start..end)
}

pub(super) fn fixed<const N: usize>(bytes: &[u8], start: u64) -> Option<&[u8; N]> {
    range(bytes, start, N as u64)?.try_into().ok()
}

pub(super) fn le16<const N: usize>(b: &[u8; N], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

pub(super) fn le32<const N: usize>(b: &[u8; N], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

pub(super) fn le64<const N: usize>(b: &[u8; N], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}
