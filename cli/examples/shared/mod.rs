//! What several benchmark examples do alike.

use mmckpt::Checkpoint;

/// Reads every byte of every tensor of `ckpt` as a consumer of the data would: a wrapping sum
/// of little-endian 8-byte words. Returns (bytes read, sum).
pub fn sum_tensor_bytes(ckpt: &Checkpoint) -> (u64, u64) {
    let (mut bytes, mut sum) = (0u64, 0u64);
    for (_, t) in ckpt.iter() {
        let b = t.expect("tensor").bytes();
        bytes += b.len() as u64;
        sum = b
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
            .fold(sum, u64::wrapping_add);
    }
    (bytes, sum)
}
