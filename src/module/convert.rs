//! Element conversion between the floating dtypes (float64, float32, float16, bfloat16), bit for
//! bit as torch's `.to(dtype)` produces them on large CPU tensors, and plain copies; both split
//! across two threads when a tensor is big enough for that to pay.
//!
//! Rounding is round-to-nearest-even everywhere. What torch does, and so what this does:
//! - float64 → float16 / bfloat16 go through float32 first (torch's kernels do; the double
//!   rounding is theirs).
//! - NaN: float32/float64 → bfloat16 gives `0xffff` (torch's vectorised kernel; its scalar path,
//!   used for a handful of elements, gives `0x7fc0` — torch is itself inconsistent there);
//!   float16 → bfloat16 gives `0x7fc0`; conversions to float16/float32/float64 keep the sign,
//!   set the quiet bit and keep the top payload bits (what the hardware does); bfloat16 →
//!   float32 is a plain shift (a signalling NaN stays signalling, as in torch).
//!
//! Only safe code: elements are decoded from and encoded to little-endian bytes in small
//! blocks that stay in L1, around `half`'s slice conversions (F16C where available).

use crate::dtype::DType;
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Tensors at least this large (destination bytes) are copied or converted by two threads.
pub const PARALLEL_THRESHOLD: usize = 8 << 20;

/// Elements per block of the conversion loop (fits easily in L1 for every dtype pair).
const BLOCK: usize = 1024;

/// True when [`convert`] can turn `from` elements into `to` elements.
pub fn is_convertible(from: DType, to: DType) -> bool {
    from == to || (from.is_floating() && to.is_floating())
}

/// Writes `src` (contiguous elements of `from`) into `dst` as elements of `to`. `dst` holds
/// exactly as many elements as `src`. Panics on an undefined pair (checked by the caller with
/// [`is_convertible`]).
pub fn convert(from: DType, src: &[u8], to: DType, dst: &mut [u8]) {
    let n_src = from.itemsize();
    let n_dst = to.itemsize();
    debug_assert_eq!(src.len() / n_src, dst.len() / n_dst);
    if dst.len() >= PARALLEL_THRESHOLD {
        let elems = src.len() / n_src;
        let half = elems / 2;
        let (s0, s1) = src.split_at(half * n_src);
        let (d0, d1) = dst.split_at_mut(half * n_dst);
        std::thread::scope(|scope| {
            scope.spawn(|| convert_serial(from, s1, to, d1));
            convert_serial(from, s0, to, d0);
        });
    } else {
        convert_serial(from, src, to, dst);
    }
}

fn convert_serial(from: DType, src: &[u8], to: DType, dst: &mut [u8]) {
    if from == to {
        dst.copy_from_slice(src);
        return;
    }
    #[cfg(target_endian = "little")]
    if convert_typed(from, src, to, dst) {
        return;
    }
    let n_src = from.itemsize();
    let n_dst = to.itemsize();
    for (s, d) in src.chunks(BLOCK * n_src).zip(dst.chunks_mut(BLOCK * n_dst)) {
        convert_block(from, s, to, d);
    }
}

/// The fast path: when both sides are aligned for their element types (tensor data in torch
/// files and module storage always are), convert typed slices (viewed safely with bytemuck),
/// in loops the compiler vectorises. On a little-endian host the file's little-endian bytes
/// are the values. Returns false (nothing written) for other pairs or misaligned slices,
/// which take the byte-level path.
#[cfg(target_endian = "little")]
fn convert_typed(from: DType, src: &[u8], to: DType, dst: &mut [u8]) -> bool {
    use bytemuck::{try_cast_slice as cast, try_cast_slice_mut as cast_mut};
    use DType::*;
    match (from, to) {
        (Float32, BFloat16) => match (cast::<u8, u32>(src), cast_mut::<u8, u16>(dst)) {
            (Ok(s), Ok(d)) => {
                interleaved(s, d, |d, s| {
                    for (d, &s) in d.iter_mut().zip(s) {
                        *d = f32_to_bf16(s);
                    }
                });
                true
            }
            _ => false,
        },
        (BFloat16, Float32) => match (cast::<u8, u16>(src), cast_mut::<u8, u32>(dst)) {
            (Ok(s), Ok(d)) => {
                for (d, &s) in d.iter_mut().zip(s) {
                    *d = u32::from(s) << 16;
                }
                true
            }
            _ => false,
        },
        (Float32, Float16) => match (cast::<u8, f32>(src), cast_mut::<u8, f16>(dst)) {
            (Ok(s), Ok(d)) => {
                d.convert_from_f32_slice(s);
                true
            }
            _ => false,
        },
        (Float16, Float32) => match (cast::<u8, f16>(src), cast_mut::<u8, f32>(dst)) {
            (Ok(s), Ok(d)) => {
                s.convert_to_f32_slice(d);
                true
            }
            _ => false,
        },
        (Float32, Float64) => match (cast::<u8, f32>(src), cast_mut::<u8, f64>(dst)) {
            (Ok(s), Ok(d)) => {
                for (d, &s) in d.iter_mut().zip(s) {
                    *d = f64::from(s);
                }
                true
            }
            _ => false,
        },
        (Float64, Float32) => match (cast::<u8, f64>(src), cast_mut::<u8, f32>(dst)) {
            (Ok(s), Ok(d)) => {
                for (d, &s) in d.iter_mut().zip(s) {
                    *d = s as f32;
                }
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// One block of at most BLOCK elements.
fn convert_block(from: DType, src: &[u8], to: DType, dst: &mut [u8]) {
    use DType::*;
    let n = src.len() / from.itemsize();
    match (from, to) {
        (Float32, Float64) => {
            for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(8)) {
                let v = f32::from_le_bytes(s.try_into().unwrap()) as f64;
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        (Float64, Float32) => {
            for (s, d) in src.chunks_exact(8).zip(dst.chunks_exact_mut(4)) {
                let v = f64::from_le_bytes(s.try_into().unwrap()) as f32;
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        (BFloat16, Float32) => {
            for (s, d) in src.chunks_exact(2).zip(dst.chunks_exact_mut(4)) {
                let v = (u16::from_le_bytes([s[0], s[1]]) as u32) << 16;
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        (Float32, BFloat16) => {
            for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(2)) {
                let v = f32_to_bf16(u32::from_le_bytes(s.try_into().unwrap()));
                d.copy_from_slice(&v.to_le_bytes());
            }
        }
        (Float32, Float16) => {
            let mut a = [0f32; BLOCK];
            let mut h = [f16::ZERO; BLOCK];
            decode_f32(src, &mut a[..n]);
            h[..n].convert_from_f32_slice(&a[..n]);
            encode_f16(&h[..n], dst);
        }
        (Float16, Float32) => {
            let mut a = [0f32; BLOCK];
            let mut h = [f16::ZERO; BLOCK];
            decode_f16(src, &mut h[..n]);
            h[..n].convert_to_f32_slice(&mut a[..n]);
            encode_f32(&a[..n], dst);
        }
        // Everything else goes through float32, as torch's kernels do.
        (f, t) => {
            let mut a = [0u8; BLOCK * 4];
            let mid = &mut a[..n * 4];
            convert_block(f, src, Float32, mid);
            if (f, t) == (Float16, BFloat16) {
                // torch's scalar c10::BFloat16 path: every NaN becomes 0x7fc0.
                for (s, d) in mid.chunks_exact(4).zip(dst.chunks_exact_mut(2)) {
                    let bits = u32::from_le_bytes(s.try_into().unwrap());
                    let v = if f32::from_bits(bits).is_nan() {
                        0x7fc0
                    } else {
                        f32_to_bf16(bits)
                    };
                    d.copy_from_slice(&v.to_le_bytes());
                }
            } else {
                convert_block(Float32, mid, t, dst);
            }
        }
    }
}

/// Runs `f` over `src`/`dst` (equal element counts) as STREAMS interleaved sequential
/// streams, a block of each in turn. A narrowing conversion reads twice what it writes and
/// stalls on loads when it walks one stream; several streams keep more cache lines in flight.
#[cfg(target_endian = "little")]
fn interleaved<S, D>(src: &[S], dst: &mut [D], f: impl Fn(&mut [D], &[S])) {
    const STREAMS: usize = 4;
    const BLOCK: usize = 256;
    let part = src.len() / STREAMS;
    if part < BLOCK {
        f(dst, src);
        return;
    }
    let mut srcs: Vec<&[S]> = src.chunks(part).collect();
    let mut dsts: Vec<&mut [D]> = dst.chunks_mut(part).collect();
    loop {
        let mut done = true;
        for (s, d) in srcs.iter_mut().zip(dsts.iter_mut()) {
            let n = s.len().min(BLOCK);
            if n == 0 {
                continue;
            }
            done = false;
            let (s_now, s_rest) = s.split_at(n);
            let (d_now, d_rest) = std::mem::take(d).split_at_mut(n);
            f(d_now, s_now);
            *s = s_rest;
            *d = d_rest;
        }
        if done {
            break;
        }
    }
}

/// float32 bits → bfloat16 bits, round-to-nearest-even; NaN → 0xffff (torch's vector kernel).
/// Branch-free (a select), so that loops over it vectorise.
#[inline]
fn f32_to_bf16(bits: u32) -> u16 {
    let lsb = (bits >> 16) & 1;
    let rounded = bits.wrapping_add(0x7fff + lsb) >> 16;
    let nan = bits & 0x7fff_ffff > 0x7f80_0000;
    (if nan { 0xffff } else { rounded }) as u16
}

fn decode_f32(src: &[u8], out: &mut [f32]) {
    for (s, o) in src.chunks_exact(4).zip(out.iter_mut()) {
        *o = f32::from_le_bytes(s.try_into().unwrap());
    }
}
fn encode_f32(values: &[f32], dst: &mut [u8]) {
    for (v, d) in values.iter().zip(dst.chunks_exact_mut(4)) {
        d.copy_from_slice(&v.to_le_bytes());
    }
}
fn decode_f16(src: &[u8], out: &mut [f16]) {
    for (s, o) in src.chunks_exact(2).zip(out.iter_mut()) {
        *o = f16::from_bits(u16::from_le_bytes([s[0], s[1]]));
    }
}
fn encode_f16(values: &[f16], dst: &mut [u8]) {
    for (v, d) in values.iter().zip(dst.chunks_exact_mut(2)) {
        d.copy_from_slice(&v.to_bits().to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bit patterns that exercise rounding, subnormals, infinities and NaNs of every type.
    fn patterns(itemsize: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let specials: [u64; 12] = [
            0,
            1,
            0x7fff,
            0x8000,
            0x7f80_0000,
            0x7fc0_0001,
            0xff80_0001,
            0x3f80_8000,
            0x3f81_8000,
            0x7ff0_0000_0000_0001,
            0x7c01,
            0xffff_ffff_ffff_ffff,
        ];
        for i in 0..4099u64 {
            // Specials first, then a xorshift sequence.
            let v = if (i as usize) < specials.len() {
                specials[i as usize]
            } else {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            out.extend_from_slice(&v.to_le_bytes()[..itemsize]);
        }
        out
    }

    #[test]
    fn typed_fast_path_matches_the_byte_path() {
        use DType::*;
        let floats = [Float64, Float32, Float16, BFloat16];
        for from in floats {
            for to in floats {
                let src = patterns(from.itemsize());
                let n = src.len() / from.itemsize();
                // Aligned (the fast path) vs one byte off (the byte path).
                let mut aligned = crate::container::AlignedBuf::zeroed(n * to.itemsize()).unwrap();
                let mut src_aligned = crate::container::AlignedBuf::zeroed(src.len()).unwrap();
                src_aligned.as_mut_slice().copy_from_slice(&src);
                convert(from, src_aligned.as_slice(), to, aligned.as_mut_slice());
                let mut shifted_src = vec![0u8; src.len() + 1];
                shifted_src[1..].copy_from_slice(&src);
                let mut shifted_dst = vec![0u8; n * to.itemsize() + 1];
                convert_serial(from, &shifted_src[1..], to, &mut shifted_dst[1..]);
                assert_eq!(
                    aligned.as_slice(),
                    &shifted_dst[1..],
                    "{from:?} -> {to:?}: the typed and byte paths disagree"
                );
            }
        }
    }
}
