//! Element conversion between the floating dtypes (float64, float32, float16, bfloat16), bit for
//! bit as torch's `.to(dtype)` produces them on large CPU tensors, and plain copies; both split
//! over several threads (one per 4 MiB, at most the cores and 8) from 8 MiB of destination.
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
use crate::error::{Error, Result};
use half::f16;
use half::slice::HalfFloatSliceExt;

/// Tensors at least this large (destination bytes) are copied or converted by several threads.
#[cfg(test)]
pub use crate::container::aligned::PARALLEL_THRESHOLD;

/// Elements per block of the conversion loop (fits easily in L1 for every dtype pair).
const BLOCK: usize = 1024;

/// True when [`convert`] can turn `from` elements into `to` elements.
pub fn is_convertible(from: DType, to: DType) -> bool {
    from == to || (from.is_floating() && to.is_floating())
}

/// True when [`convert_elements`] turns `from` elements into `to` elements: any dtype into
/// itself (a copy), any two of float64, float32, float16 and bfloat16, and each float8 kind
/// into float32.
pub fn can_convert(from: DType, to: DType) -> bool {
    is_convertible(from, to) || (is_float8(from) && to == DType::Float32)
}

fn is_float8(d: DType) -> bool {
    use DType::*;
    matches!(
        d,
        Float8E4M3Fn | Float8E5M2 | Float8E4M3FnUz | Float8E5M2FnUz | Float8E8M0Fnu
    )
}

/// Converts the elements of `src` (little-endian `from` elements, any alignment) into `dst` as
/// `to` elements, bit for bit as torch's `.to(dtype)` does on the CPU (rounding to nearest even,
/// float64 to float16/bfloat16 through float32, NaN payloads, subnormals and infinities as
/// torch keeps them; see the module documentation for the NaN rules). `dst` must hold exactly
/// as many elements as `src`.
///
/// Errors: `Unsupported` for a pair [`can_convert`] refuses (into a float8 kind mmckpt does not
/// yet round as torch does; integers, complex and bit types only copy into themselves);
/// `InvalidArgument` when `src` is not a whole number of elements or `dst` has another count.
///
/// ```
/// use mmckpt::{convert_elements, DType};
/// let src: Vec<u8> = [1.0f32, -2.5].iter().flat_map(|v| v.to_le_bytes()).collect();
/// let mut dst = [0u8; 4];
/// convert_elements(&src, DType::Float32, &mut dst, DType::BFloat16)?;
/// assert_eq!(dst, [0x80, 0x3f, 0x20, 0xc0]);
/// # Ok::<(), mmckpt::Error>(())
/// ```
pub fn convert_elements(src: &[u8], from: DType, dst: &mut [u8], to: DType) -> Result<()> {
    if !can_convert(from, to) {
        return Err(Error::unsupported(format!(
            "converting {from} to {to} is not supported: mmckpt converts between float64, \
             float32, float16 and bfloat16, from each float8 kind to float32, and any dtype \
             into itself"
        )));
    }
    if src.len() % from.itemsize() != 0 {
        return Err(Error::invalid_argument(format!(
            "the source is {} bytes, not a whole number of {from} elements",
            src.len()
        )));
    }
    let count = src.len() / from.itemsize();
    if count.checked_mul(to.itemsize()) != Some(dst.len()) {
        return Err(Error::invalid_argument(format!(
            "the destination is {} bytes; {count} {to} elements are {} bytes",
            dst.len(),
            count.saturating_mul(to.itemsize())
        )));
    }
    if from != to && is_float8(from) {
        for (&byte, out) in src.iter().zip(dst.chunks_exact_mut(4)) {
            out.copy_from_slice(&float8_to_f32_bits(from, byte).to_le_bytes());
        }
    } else {
        convert(from, src, to, dst);
    }
    Ok(())
}

/// One float8 element as float32 bits, as torch's c10 conversions compute it.
fn float8_to_f32_bits(from: DType, x: u8) -> u32 {
    match from {
        DType::Float8E4M3Fn => {
            // c10::detail::fp8e4m3fn_to_fp32_value, including its NaN (sign | 0x7ff00000).
            let w = u32::from(x) << 24;
            let sign = w & 0x8000_0000;
            let nonsign = w & 0x7fff_ffff;
            let renorm_shift = nonsign.leading_zeros().saturating_sub(4);
            let inf_nan_mask = ((nonsign.wrapping_add(0x0100_0000) as i32) >> 8) & 0x7f80_0000;
            let zero_mask = (nonsign.wrapping_sub(1) as i32) >> 31;
            let body = ((nonsign << renorm_shift >> 4).wrapping_add((0x78 - renorm_shift) << 23))
                | inf_nan_mask as u32;
            sign | (body & !(zero_mask as u32))
        }
        // The top byte of a float16 (c10: fp16_ieee_to_fp32_value of x << 8).
        DType::Float8E5M2 => f16::from_bits(u16::from(x) << 8).to_f32().to_bits(),
        DType::Float8E4M3FnUz => fnuz_to_f32_bits(x, 4, 3),
        DType::Float8E5M2FnUz => fnuz_to_f32_bits(x, 5, 2),
        DType::Float8E8M0Fnu => match x {
            0 => 0x0040_0000,    // 2^-127, a float32 subnormal
            0xff => 0x7f80_0001, // c10's NaN
            e => u32::from(e) << 23,
        },
        other => unreachable!("{other} is not a float8 kind"),
    }
}

/// c10::detail::fp8_fnuz_to_fp32_value<we, wm>: no infinities, no negative zero, 0x80 is NaN.
fn fnuz_to_f32_bits(x: u8, we: u32, wm: u32) -> u32 {
    if x == 0 {
        return 0;
    }
    if x == 0x80 {
        return 0x7f80_0001;
    }
    let mut mantissa = u32::from(x) & ((1 << wm) - 1);
    let mut exponent = (u32::from(x) & 0x7f) >> wm;
    if exponent == 0 {
        let sh = 1 + mantissa.leading_zeros() - (32 - wm);
        mantissa <<= sh;
        exponent = exponent + 1 - sh;
        mantissa &= (1 << wm) - 1;
    }
    let exp_low_cutoff = (1u32 << 7) - (1 << (we - 1));
    exponent = exponent.wrapping_add(exp_low_cutoff - 1);
    mantissa <<= 23 - wm;
    (u32::from(x >> 7) << 31) | (exponent << 23) | mantissa
}

/// Writes `src` (contiguous elements of `from`) into `dst` as elements of `to`. `dst` holds
/// exactly as many elements as `src`. Panics on an undefined pair (checked by the caller with
/// [`is_convertible`]).
pub fn convert(from: DType, src: &[u8], to: DType, dst: &mut [u8]) {
    let n_src = from.itemsize();
    let n_dst = to.itemsize();
    debug_assert_eq!(src.len() / n_src, dst.len() / n_dst);
    let threads = crate::container::copy_threads(dst.len());
    if threads > 1 {
        // Equal parts of whole elements, each a multiple of 64 elements so that every part
        // stays aligned for its typed loop and no two threads write one cache line.
        let elems = src.len() / n_src;
        let part = elems.div_ceil(threads).next_multiple_of(64);
        std::thread::scope(|scope| {
            let mut pieces = src.chunks(part * n_src).zip(dst.chunks_mut(part * n_dst));
            let first = pieces.next();
            for (s, d) in pieces {
                scope.spawn(move || convert_serial(from, s, to, d));
            }
            if let Some((s, d)) = first {
                convert_serial(from, s, to, d);
            }
        });
    } else {
        convert_serial(from, src, to, dst);
    }
}

pub(crate) fn convert_serial(from: DType, src: &[u8], to: DType, dst: &mut [u8]) {
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
