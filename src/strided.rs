//! Walking strided views: gathering a view's elements into row-major order.

/// Copies the elements of a strided view into `out` in row-major order.
///
/// `src` starts at element [0, …, 0]; `shape`/`strides` count elements of `itemsize` bytes and
/// were bounds-checked against `src` when the checkpoint was opened. `out` holds exactly
/// numel × itemsize bytes.
pub fn gather(src: &[u8], itemsize: usize, shape: &[i64], strides: &[i64], out: &mut [u8]) {
    let numel: usize = shape.iter().map(|&s| s as usize).product();
    debug_assert_eq!(out.len(), numel * itemsize);
    if numel == 0 {
        return;
    }
    // Merge the innermost run: elements that are adjacent in memory copy as one block.
    let (run_elems, outer_dims) = inner_run(shape, strides);
    let run_bytes = run_elems * itemsize;
    let outer_shape = &shape[..outer_dims];
    let outer_strides = &strides[..outer_dims];
    let mut index = vec![0i64; outer_dims];
    let mut offset_elems: usize = 0;
    for chunk in out.chunks_exact_mut(run_bytes) {
        let start = offset_elems * itemsize;
        chunk.copy_from_slice(&src[start..start + run_bytes]);
        // Advance the outer multi-index (odometer), keeping offset in step.
        for d in (0..outer_dims).rev() {
            index[d] += 1;
            offset_elems += outer_strides[d] as usize;
            if index[d] < outer_shape[d] {
                break;
            }
            offset_elems -= (outer_strides[d] * outer_shape[d]) as usize;
            index[d] = 0;
        }
    }
}

/// Passes the elements of a strided view to `f` in row-major order, in consecutive pieces of
/// at most `chunk_bytes` (rounded down to whole elements, at least one), without gathering the
/// whole view: a contiguous run at least a piece long goes straight from `src`, shorter runs are
/// gathered through one buffer of `chunk_bytes`. Same preconditions as [`gather`]. Stops at
/// the first error of `f`.
pub fn for_each_chunk<E>(
    src: &[u8],
    itemsize: usize,
    shape: &[i64],
    strides: &[i64],
    chunk_bytes: usize,
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    if shape.iter().any(|&s| s <= 0) {
        return Ok(());
    }
    let piece = (chunk_bytes / itemsize).max(1) * itemsize;
    let (run_elems, outer_dims) = inner_run(shape, strides);
    let run_bytes = run_elems * itemsize;
    let outer_shape = &shape[..outer_dims];
    let outer_strides = &strides[..outer_dims];
    let mut index = vec![0i64; outer_dims];
    let mut offset_elems: usize = 0;
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let start = offset_elems * itemsize;
        let run = &src[start..start + run_bytes];
        if run_bytes >= piece {
            if !buf.is_empty() {
                f(&buf)?;
                buf.clear();
            }
            for part in run.chunks(piece) {
                f(part)?;
            }
        } else {
            if buf.len() + run_bytes > piece {
                f(&buf)?;
                buf.clear();
            }
            if buf.capacity() == 0 {
                buf.reserve_exact(piece);
            }
            buf.extend_from_slice(run);
        }
        // Advance the outer multi-index (odometer); done when every dimension wrapped.
        let mut d = outer_dims;
        loop {
            if d == 0 {
                if !buf.is_empty() {
                    f(&buf)?;
                }
                return Ok(());
            }
            d -= 1;
            index[d] += 1;
            offset_elems += outer_strides[d] as usize;
            if index[d] < outer_shape[d] {
                break;
            }
            offset_elems -= (outer_strides[d] * outer_shape[d]) as usize;
            index[d] = 0;
        }
    }
}

/// Row-major contiguous: each stride is the product of the sizes after it (strides of size-1
/// dimensions do not matter).
pub fn is_contiguous(shape: &[i64], strides: &[i64]) -> bool {
    let mut expected: i64 = 1;
    for (&size, &stride) in shape.iter().zip(strides).rev() {
        if size != 1 && stride != expected {
            return false;
        }
        expected = expected.saturating_mul(size);
    }
    true
}

/// How many trailing elements are contiguous in memory, and how many leading dimensions remain.
fn inner_run(shape: &[i64], strides: &[i64]) -> (usize, usize) {
    let mut run: i64 = 1;
    let mut dims = shape.len();
    while dims > 0 {
        let d = dims - 1;
        if shape[d] == 1 {
            dims -= 1;
            continue;
        }
        if strides[d] != run {
            break;
        }
        run *= shape[d];
        dims -= 1;
    }
    (run as usize, dims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gather_u8(src: &[u8], shape: &[i64], strides: &[i64]) -> Vec<u8> {
        let n: i64 = shape.iter().product();
        let mut out = vec![0u8; n as usize];
        gather(src, 1, shape, strides, &mut out);
        out
    }

    #[test]
    fn transposes_slices_and_broadcasts() {
        let src: Vec<u8> = (0..12).collect();
        assert_eq!(gather_u8(&src, &[3, 4], &[4, 1]), src);
        assert_eq!(
            gather_u8(&src, &[4, 3], &[1, 4]),
            vec![0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11]
        );
        assert_eq!(gather_u8(&src, &[2, 3], &[0, 1]), vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(gather_u8(&src[5..], &[], &[]), vec![5]);
        assert_eq!(gather_u8(&src, &[0, 3], &[3, 1]), Vec::<u8>::new());
        assert_eq!(gather_u8(&src, &[2, 1, 2], &[6, 99, 2]), vec![0, 2, 6, 8]);
    }

    /// Every piece size gives the bytes `gather` gives, in pieces of whole elements.
    #[test]
    fn chunks_concatenate_to_the_gathered_bytes() {
        let src: Vec<u8> = (0..48).collect();
        let views: &[(&[i64], &[i64])] = &[
            (&[3, 4], &[4, 1]),
            (&[4, 3], &[1, 4]),
            (&[2, 3], &[0, 1]),
            (&[], &[]),
            (&[0, 3], &[3, 1]),
            (&[2, 1, 2], &[6, 99, 2]),
            (&[5, 2], &[0, 0]),
        ];
        for &(shape, strides) in views {
            let n: i64 = shape.iter().product();
            let mut want = vec![0u8; n as usize * 4];
            gather(&src, 4, shape, strides, &mut want);
            for chunk in [1, 4, 7, 8, 16, 100] {
                let mut got = Vec::new();
                for_each_chunk(&src, 4, shape, strides, chunk, |p| {
                    assert!(!p.is_empty() && p.len() % 4 == 0 && p.len() <= chunk.max(4));
                    got.extend_from_slice(p);
                    Ok::<(), ()>(())
                })
                .unwrap();
                assert_eq!(got, want, "{shape:?} {strides:?} in pieces of {chunk}");
            }
        }
        // An error from the callback stops the walk.
        let mut calls = 0;
        let stopped = for_each_chunk(&src, 1, &[1 << 40], &[0], 8, |_| {
            calls += 1;
            Err(())
        });
        assert_eq!((stopped, calls), (Err(()), 1));
    }

    #[test]
    fn multi_byte_elements() {
        let src: Vec<u8> = (0..16).collect();
        let mut out = vec![0u8; 8];
        gather(&src, 4, &[2], &[2], &mut out);
        assert_eq!(out, vec![0, 1, 2, 3, 8, 9, 10, 11]);
    }
}
