//! Owned, aligned buffers for storages mmckpt allocates (copy and convert loads, materialize,
//! storages copied out of the file), and the thread split used to fill them.
//!
//! Large buffers are anonymous mappings: the kernel hands out zero pages lazily, so there is
//! no zeroing pass before the copy that fills them, and each page is first touched (faulted
//! in) by the thread that copies into it. They are aligned to 2 MiB and advised
//! `MADV_HUGEPAGE`, so a fault maps 2 MiB instead of 4 KiB where the kernel's transparent huge
//! pages allow it. Dropping one unmaps it: the memory goes back to the operating system at
//! once. Small buffers come from the allocator, zeroed.
//!
//! Together with `container::source`, one of the places with `unsafe` (allocation and
//! mapping only).

use crate::error::{Error, Result};
use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment of every buffer mmckpt allocates: enough for any dtype and for AVX-512 loads.
pub const BUFFER_ALIGN: usize = 64;

/// Buffers at least this large are mapped (zero pages on demand, huge pages where allowed)
/// rather than allocated and zero-filled.
pub const MAPPED_THRESHOLD: usize = 1 << 20;

/// Alignment and granule of mapped buffers: a transparent huge page on x86-64 and arm64.
const HUGE_PAGE: usize = 2 << 20;

/// Copies and conversions of at least this many destination bytes are split over threads.
pub const PARALLEL_THRESHOLD: usize = 8 << 20;

/// At most this many threads copy one buffer (memory bandwidth is shared long before).
const MAX_COPY_THREADS: usize = 8;

/// How many threads copy or convert `dst_len` bytes: one below [`PARALLEL_THRESHOLD`], else
/// one per 4 MiB of destination, at most the available cores and [`MAX_COPY_THREADS`].
pub fn copy_threads(dst_len: usize) -> usize {
    if dst_len < PARALLEL_THRESHOLD {
        return 1;
    }
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    cores
        .min(MAX_COPY_THREADS)
        .min(dst_len / (PARALLEL_THRESHOLD / 2))
        .max(1)
}

/// Block size direct (`O_DIRECT`) reads are aligned to: address, file offset and length are
/// multiples of it (the logical block size of every common device is at most this).
pub const DIRECT_ALIGN: usize = 4096;

/// How many threads read `dst_len` bytes of a file into fresh memory (direct reads): one
/// where [`copy_threads`] gives one, else twice as many, at most [`MAX_COPY_THREADS`]. A reader mostly waits for the device, and
/// the faults that bring its fresh destination pages in (the CPU's part) then overlap with
/// the other readers' waits (measured on 2 cores: 4 readers 1.9–2.1 GB/s where 2 give
/// 1.5–1.8).
/// Maps the pages of `[addr, addr + len)` writable now (`MADV_POPULATE_WRITE`), zero-filled
/// as a first write would, without writing: a thread that fills fresh memory later (a direct
/// read's DMA, which otherwise takes the faults itself, one huge page at a time, between its
/// requests) finds them present. For ranges of buffers the caller owns; another range is only
/// a failed call, which changes nothing. Linux 5.14+; elsewhere nothing.
pub fn populate_for_write(addr: usize, len: usize) {
    #[cfg(target_os = "linux")]
    {
        let page = 4096;
        let start = addr / page * page;
        let len = (addr + len).saturating_sub(start);
        // SAFETY: madvise reads and writes no memory: it maps pages of the range (already
        // mapped by the caller's buffer) as a write fault would, keeping their contents; a
        // range it cannot populate is an error return, ignored.
        unsafe {
            libc::madvise(start as *mut libc::c_void, len, libc::MADV_POPULATE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (addr, len);
}

pub fn read_threads(dst_len: usize) -> usize {
    match copy_threads(dst_len) {
        1 => 1,
        n => (2 * n).min(MAX_COPY_THREADS),
    }
}

/// A zero-initialised buffer aligned to [`BUFFER_ALIGN`] (large ones: to 2 MiB; one made by
/// [`AlignedBuf::zeroed_for_direct_read`]: to its file offset's place in a 4 KiB block).
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    /// Length of the anonymous mapping behind the buffer (from `ptr - head`); 0 when it came
    /// from the allocator.
    mapped_len: usize,
    /// Bytes the buffer owns before `ptr` (a direct-read buffer's head slack; otherwise 0).
    head: usize,
    /// The allocator's layout of the memory from `ptr - head`; `None` when mapped or empty.
    layout: Option<Layout>,
    /// Made by [`AlignedBuf::zeroed_for_direct_read`]: its slack may hold the file's bytes
    /// around the tensor's, so it is never grown in place.
    direct: bool,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out `&[u8]`; mutation needs `&mut self`.
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of no bytes (allocates nothing; its pointer is aligned to [`BUFFER_ALIGN`]).
    pub fn empty() -> AlignedBuf {
        #[repr(align(64))]
        struct Line;
        AlignedBuf {
            ptr: NonNull::<Line>::dangling().cast(),
            len: 0,
            mapped_len: 0,
            head: 0,
            layout: None,
            direct: false,
        }
    }

    /// Allocates `len` zeroed bytes; fails with `NoMemory` instead of aborting. Large
    /// buffers are zero pages mapped on first touch (no zeroing pass; see the module docs).
    pub fn zeroed(len: usize) -> Result<AlignedBuf> {
        if len == 0 {
            return Ok(AlignedBuf::empty());
        }
        #[cfg(unix)]
        if len >= MAPPED_THRESHOLD {
            if let Some(buf) = Self::mapped(len) {
                return Ok(buf);
            }
        }
        Self::allocated(len, BUFFER_ALIGN, 0)
    }

    /// `head + len` zeroed bytes (rounded up to `align`) from the allocator, aligned to
    /// `align`; the buffer starts `head` bytes in. `len > 0`.
    fn allocated(len: usize, align: usize, head: usize) -> Result<AlignedBuf> {
        let too_large = || Error::no_memory(format!("cannot allocate {len} bytes"));
        let size = head
            .checked_add(len)
            .and_then(|n| n.checked_next_multiple_of(align))
            .ok_or_else(too_large)?;
        let layout = Layout::from_size_align(size, align).map_err(|_| too_large())?;
        // SAFETY: layout has non-zero size (len > 0, checked by every caller).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let base = NonNull::new(raw)
            .ok_or_else(|| Error::no_memory(format!("out of memory allocating {len} bytes")))?;
        // SAFETY: head < size, so base + head is inside the allocation just made.
        let ptr = unsafe { base.add(head) };
        Ok(AlignedBuf {
            ptr,
            len,
            mapped_len: 0,
            head,
            layout: Some(layout),
            direct: false,
        })
    }

    /// A zeroed buffer of `len` bytes whose address has the same remainder modulo
    /// [`DIRECT_ALIGN`] as `file_offset`, with slack before and after that the buffer owns,
    /// so that the file's block-aligned range covering `file_offset..file_offset + len` can be
    /// read with `O_DIRECT` straight into [`AlignedBuf::direct_window`]: the bytes before and
    /// after the tensor's land in the slack. `file_offset` must be a multiple of
    /// [`BUFFER_ALIGN`] to be placed so (the buffer keeps that alignment); otherwise, and for
    /// `len == 0`, this is [`AlignedBuf::zeroed`] (no window).
    pub fn zeroed_for_direct_read(len: usize, file_offset: u64) -> Result<AlignedBuf> {
        let head = (file_offset % DIRECT_ALIGN as u64) as usize;
        if len == 0 || head % BUFFER_ALIGN != 0 {
            return Self::zeroed(len);
        }
        #[cfg(unix)]
        if len >= MAPPED_THRESHOLD {
            if let Some(mut buf) = head
                .checked_add(len)
                .and_then(|n| n.checked_next_multiple_of(DIRECT_ALIGN))
                .and_then(Self::mapped)
            {
                buf.head = head;
                buf.direct = true;
                // SAFETY: the mapping holds at least head + len bytes from its start.
                buf.ptr = unsafe { buf.ptr.add(head) };
                buf.len = len;
                return Ok(buf);
            }
        }
        let mut buf = Self::allocated(len, DIRECT_ALIGN, head)?;
        buf.direct = true;
        Ok(buf)
    }

    /// The block-aligned bytes around a buffer made by
    /// [`AlignedBuf::zeroed_for_direct_read`], which a direct read fills: from the
    /// [`DIRECT_ALIGN`] boundary at or before its first byte to the one at or after its last
    /// (slack the buffer owns). The buffer's bytes start [`AlignedBuf::direct_head`] bytes
    /// in. `None` for other buffers and empty ones.
    pub fn direct_window(&mut self) -> Option<&mut [u8]> {
        if !self.direct || self.len == 0 {
            return None;
        }
        let window = (self.head + self.len).next_multiple_of(DIRECT_ALIGN);
        // SAFETY: zeroed_for_direct_read made a mapping or allocation of at least `window`
        // bytes from ptr - head, all initialised (zeroed); &mut self makes it exclusive.
        Some(unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().sub(self.head), window) })
    }

    /// Bytes of [`AlignedBuf::direct_window`] before the buffer's first byte.
    pub fn direct_head(&self) -> usize {
        self.head
    }

    /// An anonymous private mapping of `len` bytes (rounded up to 2 MiB) starting on a 2 MiB
    /// boundary, advised `MADV_HUGEPAGE` on Linux; None when the kernel refuses (the caller
    /// falls back to the allocator, which reports NoMemory if that fails too).
    #[cfg(unix)]
    fn mapped(len: usize) -> Option<AlignedBuf> {
        let mapped_len = len.checked_next_multiple_of(HUGE_PAGE)?;
        let reserve = mapped_len.checked_add(HUGE_PAGE)?;
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses; it aliases
        // nothing. Its pages read as zeros until written.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                reserve,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = base as usize;
        let start = base.next_multiple_of(HUGE_PAGE);
        let (head, tail) = (start - base, base + reserve - (start + mapped_len));
        // SAFETY: [base, start) and [start + mapped_len, base + reserve) are whole pages of
        // the mapping just made (mmap returns page-aligned addresses, HUGE_PAGE is a multiple
        // of the page size) that nothing refers to; unmapping them keeps the aligned middle.
        unsafe {
            if head > 0 {
                libc::munmap(base as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((start + mapped_len) as *mut libc::c_void, tail);
            }
        }
        #[cfg(target_os = "linux")]
        // SAFETY: [start, start + mapped_len) is this buffer's own mapping; MADV_HUGEPAGE
        // changes only how later faults are served, never the contents. A hint: its result
        // is ignored (THP may be disabled).
        unsafe {
            libc::madvise(start as *mut libc::c_void, mapped_len, libc::MADV_HUGEPAGE);
        }
        Some(AlignedBuf {
            ptr: NonNull::new(start as *mut u8)?,
            len,
            mapped_len,
            head: 0,
            layout: None,
            direct: false,
        })
    }

    /// Grows the buffer to `new_len` bytes (at least its length): the first `len` bytes are
    /// kept, the rest read as zeros. A mapping is moved by the kernel (`mremap` on Linux:
    /// pages change address, nothing is copied); otherwise the bytes are copied into a new
    /// buffer. Fails with `NoMemory`, leaving the buffer as it was.
    pub fn grow(&mut self, new_len: usize) -> Result<()> {
        debug_assert!(new_len >= self.len);
        if !self.direct && new_len <= self.mapped_len {
            // The mapping's bytes past `len` were never handed out: still zero.
            self.len = new_len;
            return Ok(());
        }
        #[cfg(target_os = "linux")]
        if self.mapped_len > 0 && !self.direct {
            if let Some(new_mapped_len) = new_len.checked_next_multiple_of(HUGE_PAGE) {
                // SAFETY: ptr..ptr + mapped_len is this buffer's own mapping (made in
                // `mapped`, head 0 as it is not a direct-read buffer); MREMAP_MAYMOVE keeps
                // its contents and flags (MADV_HUGEPAGE) and maps zero pages after them. On
                // failure the old mapping is untouched.
                let moved = unsafe {
                    libc::mremap(
                        self.ptr.as_ptr() as *mut libc::c_void,
                        self.mapped_len,
                        new_mapped_len,
                        libc::MREMAP_MAYMOVE,
                    )
                };
                if let (false, Some(base)) = (moved == libc::MAP_FAILED, NonNull::new(moved)) {
                    self.ptr = base.cast();
                    self.len = new_len;
                    self.mapped_len = new_mapped_len;
                    return Ok(());
                }
            }
        }
        let mut grown = AlignedBuf::zeroed(new_len)?;
        grown.as_mut_slice()[..self.len].copy_from_slice(self.as_slice());
        *self = grown;
        Ok(())
    }

    /// A copy of `bytes`, written by [`copy_threads`] threads (each faults in its own part).
    pub fn from_slice(bytes: &[u8]) -> Result<AlignedBuf> {
        let mut buf = AlignedBuf::zeroed(bytes.len())?;
        parallel_copy(bytes, buf.as_mut_slice());
        Ok(buf)
    }

    /// The first byte (aligned to [`BUFFER_ALIGN`]; dangling when the buffer is empty).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes (or dangling with len 0) while self
        // lives; mapped pages read as zeros until written.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.mapped_len > 0 {
            #[cfg(unix)]
            // SAFETY: ptr - head..+mapped_len is the mapping made in `mapped`, owned by
            // self; nothing borrows it once self is dropped.
            unsafe {
                libc::munmap(
                    self.ptr.as_ptr().sub(self.head) as *mut libc::c_void,
                    self.mapped_len,
                );
            }
        } else if let Some(layout) = self.layout {
            // SAFETY: allocated in `allocated` with exactly this layout, at ptr - head.
            unsafe { alloc::dealloc(self.ptr.as_ptr().sub(self.head), layout) };
        }
    }
}

/// `dst.copy_from_slice(src)`, split over [`copy_threads`] threads in equal parts.
pub fn parallel_copy(src: &[u8], dst: &mut [u8]) {
    let threads = copy_threads(dst.len());
    if threads <= 1 {
        dst.copy_from_slice(src);
        return;
    }
    assert_eq!(src.len(), dst.len(), "parallel_copy needs equal lengths");
    // Parts are whole 64-byte lines, so no two threads write one cache line.
    let part = dst.len().div_ceil(threads).next_multiple_of(BUFFER_ALIGN);
    std::thread::scope(|scope| {
        let mut pieces = src.chunks(part).zip(dst.chunks_mut(part));
        let first = pieces.next();
        for (s, d) in pieces {
            scope.spawn(move || d.copy_from_slice(s));
        }
        if let Some((s, d)) = first {
            d.copy_from_slice(s);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_and_zeroed() {
        for len in [1usize, 3, 64, 1000] {
            let buf = AlignedBuf::zeroed(len).unwrap();
            assert_eq!(buf.as_slice().as_ptr() as usize % BUFFER_ALIGN, 0);
            assert!(buf.as_slice().iter().all(|&b| b == 0));
        }
        assert!(AlignedBuf::zeroed(0).unwrap().is_empty());
    }

    #[test]
    fn large_buffers_are_mapped_on_huge_page_boundaries_and_read_as_zeros() {
        for len in [MAPPED_THRESHOLD, 3 * HUGE_PAGE + 5] {
            let mut buf = AlignedBuf::zeroed(len).unwrap();
            assert_eq!(buf.len(), len);
            if cfg!(unix) {
                assert!(buf.mapped_len >= len);
                assert_eq!(buf.as_slice().as_ptr() as usize % HUGE_PAGE, 0);
            }
            assert!(buf.as_slice().iter().all(|&b| b == 0));
            let last = len - 1;
            buf.as_mut_slice()[last] = 7;
            assert_eq!(buf.as_slice()[last], 7);
            buf.grow(len + HUGE_PAGE + 3).unwrap();
            assert_eq!(buf.len(), len + HUGE_PAGE + 3);
            assert_eq!(buf.as_slice()[last], 7);
            assert!(buf.as_slice()[len..].iter().all(|&b| b == 0));
        }
        let mut small = AlignedBuf::from_slice(&[1, 2, 3]).unwrap();
        small.grow(100).unwrap();
        assert_eq!(&small.as_slice()[..4], &[1, 2, 3, 0]);
        assert!(small.as_slice()[3..].iter().all(|&b| b == 0));
    }

    #[test]
    fn direct_read_buffers_are_placed_like_their_file_offset_and_own_their_window() {
        for len in [1usize, 4096, 5000, MAPPED_THRESHOLD + 3] {
            for offset in [0u64, 64, 4032, 8192 + 640] {
                let mut buf = AlignedBuf::zeroed_for_direct_read(len, offset).unwrap();
                let head = (offset % DIRECT_ALIGN as u64) as usize;
                assert_eq!(buf.as_ptr() as usize % DIRECT_ALIGN, head, "{len} {offset}");
                assert_eq!(buf.direct_head(), head);
                let window = buf.direct_window().unwrap();
                assert_eq!(window.as_ptr() as usize % DIRECT_ALIGN, 0);
                assert_eq!(window.len(), (head + len).next_multiple_of(DIRECT_ALIGN));
                // The slack is the buffer's own: writing all of it is fine (Miri/ASan would
                // tell), and only the middle is the buffer's bytes.
                window.fill(7);
                assert!(buf.as_slice().iter().all(|&b| b == 7));
                assert_eq!(buf.as_slice().len(), len);
                // Grown, the bytes past the old end read as zeros, not as the slack's.
                buf.grow(len + 10).unwrap();
                assert!(buf.as_slice()[len..].iter().all(|&b| b == 0));
                assert!(buf.as_slice()[..len].iter().all(|&b| b == 7));
            }
        }
        // Not on a 64-byte boundary, or empty: an ordinary buffer, no window.
        let mut odd = AlignedBuf::zeroed_for_direct_read(100, 4100).unwrap();
        assert_eq!(odd.as_ptr() as usize % BUFFER_ALIGN, 0);
        assert!(odd.direct_window().is_none());
        assert!(AlignedBuf::zeroed_for_direct_read(0, 64)
            .unwrap()
            .direct_window()
            .is_none());
        assert!(AlignedBuf::zeroed(8192).unwrap().direct_window().is_none());
    }

    #[test]
    fn copies_split_over_threads_give_the_same_bytes() {
        assert_eq!(copy_threads(PARALLEL_THRESHOLD - 1), 1);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(copy_threads(PARALLEL_THRESHOLD), cores.clamp(1, 2));
        assert!(copy_threads(1 << 40) <= MAX_COPY_THREADS);
        let src: Vec<u8> = (0..PARALLEL_THRESHOLD * 2 + 13)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        let buf = AlignedBuf::from_slice(&src).unwrap();
        assert_eq!(buf.as_slice(), &src[..]);
    }
}
