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
    let n_src = from.itemsize();
    let n_dst = to.itemsize();
    for (s, d) in src.chunks(BLOCK * n_src).zip(dst.chunks_mut(BLOCK * n_dst)) {
        convert_block(from, s, to, d);
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

/// float32 bits → bfloat16 bits, round-to-nearest-even; NaN → 0xffff (torch's vector kernel).
#[inline]
fn f32_to_bf16(bits: u32) -> u16 {
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return 0xffff;
    }
    let lsb = (bits >> 16) & 1;
    (bits.wrapping_add(0x7fff + lsb) >> 16) as u16
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

/// `dst.copy_from_slice(src)`, by two threads when large.
pub fn copy(src: &[u8], dst: &mut [u8]) {
    convert(DType::UInt8, src, DType::UInt8, dst);
}
