//! A growable vector whose large buffers are anonymous mappings of their own, for what an open
//! checkpoint keeps by the hundred thousand (tensor descriptions, storages, the table's names
//! and rows, the value tree's string pool).
//!
//! Why not `Vec`: glibc returns the top of its brk heap to the kernel when a free leaves more
//! than its trim threshold free there (twice the largest mapped block freed so far). Dropping
//! a large checkpoint whose lists sit on that heap did so, and each later open in the process
//! faulted them in again 4 KiB at a time and copied them as they grew. A [`PageVec`] of 2 MiB
//! or more is an [`AlignedBuf`] mapping instead: advised `MADV_HUGEPAGE` (a fault maps 2 MiB
//! where the system allows it), grown by `mremap` without a copy, unmapped at drop (its memory
//! goes back at once, whatever the allocator does). What an open leaves on the allocator's
//! heap are its short-lived buffers (memo, zip directory, dict index), which it reuses from
//! one open to the next.

use super::AlignedBuf;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;

/// Capacity, in bytes, from which a [`PageVec`] is a mapping of its own (rounded up to whole
/// 2 MiB huge pages, as every [`AlignedBuf`] mapping is): below, an ordinary `Vec` (a
/// checkpoint of a few thousand tensors stays wholly on the allocator's heap). Where a fault
/// costs a microsecond or more (virtual machines), one 2 MiB fault instead of 256 small ones
/// is the difference between 0.05 and 0.3 ms per megabyte.
const MAP_FROM: usize = super::aligned::MAPPED_THRESHOLD;

/// A `Vec<T>` that moves into an [`AlignedBuf`] mapping once it needs [`MAP_FROM`] bytes.
/// Elements must be aligned to at most 64 bytes and not zero-sized (checked at compile time).
pub struct PageVec<T> {
    /// The elements while the vector is small; empty (no allocation) once it is mapped.
    small: Vec<T>,
    /// The mapping once the vector is large (empty before).
    big: AlignedBuf,
    /// The first element and the count, in `small` or in `big`: what `deref` hands out,
    /// without asking which (kept in step by every change).
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: PageVec<T> owns its elements like Vec<T>; sending or sharing it sends or shares Ts.
unsafe impl<T: Send> Send for PageVec<T> {}
// SAFETY: as above: shared access hands out only `&T`.
unsafe impl<T: Sync> Sync for PageVec<T> {}

impl<T> PageVec<T> {
    const ELEMENT_OK: () = assert!(
        std::mem::size_of::<T>() > 0 && std::mem::align_of::<T>() <= super::aligned::BUFFER_ALIGN
    );

    pub fn new() -> PageVec<T> {
        #[allow(clippy::let_unit_value)]
        let () = Self::ELEMENT_OK;
        PageVec {
            small: Vec::new(),
            big: AlignedBuf::empty(),
            ptr: NonNull::dangling(),
            len: 0,
        }
    }

    /// Points `ptr` and `len` at `small`'s elements after a change to it.
    fn small_changed(&mut self) {
        self.ptr = NonNull::from(self.small.as_mut_slice()).cast();
        self.len = self.small.len();
    }

    /// Points `ptr` at the mapping after it was made or moved.
    fn big_moved(&mut self) {
        self.ptr = NonNull::from(self.big.as_mut_slice()).cast();
    }

    /// An empty vector with room for `capacity` elements. Panics when the memory cannot be
    /// had, as `Vec::with_capacity` does.
    pub fn with_capacity(capacity: usize) -> PageVec<T> {
        let mut vec = PageVec::new();
        vec.reserve(capacity);
        vec
    }

    fn is_big(&self) -> bool {
        !self.big.as_slice().is_empty()
    }

    pub fn capacity(&self) -> usize {
        if self.is_big() {
            self.big.as_slice().len() / std::mem::size_of::<T>()
        } else {
            self.small.capacity()
        }
    }

    /// Room for `additional` more elements; panics when the memory cannot be had.
    pub fn reserve(&mut self, additional: usize) {
        if self.try_reserve(additional).is_err() {
            let wanted = std::alloc::Layout::array::<T>(self.len().saturating_add(additional));
            std::alloc::handle_alloc_error(wanted.unwrap_or(std::alloc::Layout::new::<T>()));
        }
    }

    /// Room for `additional` more elements (at least doubling the capacity, so that pushes
    /// are amortised O(1)); fails with `NoMemory` and changes nothing when it cannot.
    pub fn try_reserve(&mut self, additional: usize) -> crate::error::Result<()> {
        let overflow = || crate::error::Error::no_memory("capacity overflow");
        let needed = self.len().checked_add(additional).ok_or_else(overflow)?;
        if needed <= self.capacity() {
            return Ok(());
        }
        let capacity = needed.max(self.capacity() * 2);
        let bytes = capacity
            .checked_mul(std::mem::size_of::<T>())
            .filter(|&bytes| bytes <= isize::MAX as usize)
            .ok_or_else(overflow)?;
        if self.is_big() {
            self.big.grow(bytes)?;
            self.big_moved();
            return Ok(());
        }
        if bytes < MAP_FROM {
            let reserved = self.small.try_reserve(additional);
            self.small_changed();
            return reserved.map_err(|_| {
                crate::error::Error::no_memory(format!("cannot allocate {bytes} bytes"))
            });
        }
        let mut big = AlignedBuf::zeroed(bytes)?;
        let count = self.small.len();
        // SAFETY: `big` has room for `capacity` >= count elements, aligned for T (64-byte
        // aligned buffer, T's alignment divides 64); the elements are moved bitwise out of
        // `small`, whose length is then set to 0 so that it drops none of them.
        unsafe {
            std::ptr::copy_nonoverlapping(self.small.as_ptr(), big.as_mut_ptr().cast::<T>(), count);
            self.small.set_len(0);
        }
        self.small = Vec::new();
        self.big = big;
        self.big_moved();
        self.len = count;
        Ok(())
    }

    #[inline]
    pub fn push(&mut self, value: T) {
        if self.is_big() {
            if self.len < self.capacity() {
                // SAFETY: len < capacity, so slot `len` lies inside the mapping, aligned for
                // T (see `try_reserve`); it holds no live element.
                unsafe { self.ptr.as_ptr().add(self.len).write(value) };
                self.len += 1;
                return;
            }
        } else if self.small.len() < self.small.capacity() {
            self.small.push(value);
            self.small_changed();
            return;
        }
        self.push_growing(value);
    }

    #[cold]
    fn push_growing(&mut self, value: T) {
        self.reserve(1);
        if !self.is_big() {
            self.small.push(value);
            self.small_changed();
            return;
        }
        // SAFETY: the reservation made len < capacity, so slot `len` lies inside the mapping,
        // aligned for T (see `try_reserve`); it holds no live element.
        unsafe { self.ptr.as_ptr().add(self.len).write(value) };
        self.len += 1;
    }

    pub fn extend_from_slice(&mut self, values: &[T])
    where
        T: Copy,
    {
        // In place when `small` has the room; any growth goes through `try_reserve`, which
        // moves a vector that would reach MAP_FROM bytes into a mapping.
        if !self.is_big() && self.small.capacity() - self.small.len() >= values.len() {
            self.small.extend_from_slice(values);
            self.small_changed();
            return;
        }
        self.reserve(values.len());
        if !self.is_big() {
            self.small.extend_from_slice(values);
            self.small_changed();
            return;
        }
        // SAFETY: the reservation makes slots len..len + values.len() part of the mapping,
        // aligned for T and free; `values` is a borrowed slice, so it cannot overlap them.
        // T: Copy, so the bitwise copies are valid elements and nothing needs dropping.
        unsafe {
            let end = self.ptr.as_ptr().add(self.len);
            std::ptr::copy_nonoverlapping(values.as_ptr(), end, values.len());
        }
        self.len += values.len();
    }
}

impl<T> Default for PageVec<T> {
    fn default() -> Self {
        PageVec::new()
    }
}

impl<T> Deref for PageVec<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` and `len` describe the live elements, in `small` or in the mapping
        // (kept in step by every change; `ptr` is aligned for T, see `try_reserve`); their
        // buffer outlives the borrow.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> DerefMut for PageVec<T> {
    #[inline]
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for PageVec<T> {
    fn drop(&mut self) {
        if self.is_big() {
            let live: *mut [T] = &mut **self;
            // SAFETY: the mapping's first `len` slots hold live elements owned by this
            // vector, dropped here once; AlignedBuf's drop then unmaps the buffer.
            unsafe { std::ptr::drop_in_place(live) };
        }
    }
}

impl<T> Extend<T> for PageVec<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        let items = items.into_iter();
        self.reserve(items.size_hint().0);
        for item in items {
            self.push(item);
        }
    }
}

impl<T> FromIterator<T> for PageVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(items: I) -> Self {
        let mut vec = PageVec::new();
        vec.extend(items);
        vec
    }
}

impl<T> From<Vec<T>> for PageVec<T> {
    fn from(vec: Vec<T>) -> Self {
        vec.into_iter().collect()
    }
}

impl<T> IntoIterator for PageVec<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(mut self) -> IntoIter<T> {
        let small = std::mem::take(&mut self.small).into_iter();
        let count = std::mem::replace(&mut self.len, 0);
        let end = if self.is_big() { count } else { 0 };
        IntoIter {
            small,
            big: self,
            next: 0,
            end,
        }
    }
}

impl<'a, T> IntoIterator for &'a PageVec<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// The elements of a [`PageVec`], moved out in order.
pub struct IntoIter<T> {
    /// The elements of a small vector.
    small: std::vec::IntoIter<T>,
    /// The mapping of a large one, its length set to 0: slots `next..end` still hold live
    /// elements.
    big: PageVec<T>,
    next: usize,
    end: usize,
}

impl<T> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        if self.next == self.end {
            return self.small.next();
        }
        // SAFETY: slot `next` < end holds a live element (see the field's comment), read out
        // once: `next` moves past it.
        let item = unsafe { self.big.big.as_ptr().cast::<T>().add(self.next).read() };
        self.next += 1;
        Some(item)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.end - self.next + self.small.len();
        (left, Some(left))
    }
}

impl<T> Drop for IntoIter<T> {
    fn drop(&mut self) {
        let base = self.big.big.as_mut_ptr().cast::<T>();
        // SAFETY: slots next..end hold the live elements not yet moved out, dropped here once;
        // the vector's own drop sees length 0 and drops none.
        unsafe {
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(
                base.add(self.next),
                self.end - self.next,
            ))
        };
    }
}

/// A `String` over a [`PageVec<u8>`]: text appended piece by piece (a pool of names).
#[derive(Default)]
pub struct PageString {
    /// Only ever extended by whole `&str`s: always UTF-8.
    bytes: PageVec<u8>,
}

impl PageString {
    /// Room for `additional` more bytes; fails with `NoMemory` and changes nothing when it
    /// cannot.
    pub fn try_reserve(&mut self, additional: usize) -> crate::error::Result<()> {
        self.bytes.try_reserve(additional)
    }

    pub fn push_str(&mut self, text: &str) {
        self.bytes.extend_from_slice(text.as_bytes());
    }

    pub fn as_str(&self) -> &str {
        // SAFETY: `bytes` holds only whole `&str`s appended by `push_str` (see the field).
        unsafe { std::str::from_utf8_unchecked(&self.bytes) }
    }
}

impl Deref for PageString {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for PageString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn grows_past_the_mapping_threshold_keeping_every_element() {
        let mut vec = PageVec::new();
        let n = 3 * MAP_FROM / 8 + 5;
        for i in 0..n as u64 {
            vec.push(i * 3);
            assert_eq!(vec.is_big(), vec.capacity() * 8 >= MAP_FROM);
        }
        assert!(vec.is_big());
        assert_eq!(vec.len(), n);
        assert!(vec.iter().enumerate().all(|(i, &v)| v == i as u64 * 3));
        vec.extend_from_slice(&[1, 2]);
        assert_eq!(&vec[n - 1..], &[(n as u64 - 1) * 3, 1, 2]);
        vec[0] = 5;
        assert_eq!(vec.into_iter().take(2).collect::<Vec<_>>(), [5, 3]);
        let mut small: PageVec<u64> = PageVec::with_capacity(4);
        small.extend_from_slice(&[7, 8]);
        assert!(!small.is_big());
        assert_eq!(small.into_iter().collect::<Vec<_>>(), [7, 8]);
    }

    #[test]
    fn drops_each_element_once() {
        let counted = Rc::new(());
        for n in [10, MAP_FROM] {
            let vec: PageVec<Rc<()>> = (0..n).map(|_| counted.clone()).collect();
            assert_eq!(Rc::strong_count(&counted), n + 1);
            let mut moved = vec.into_iter();
            drop(moved.next());
            assert_eq!(Rc::strong_count(&counted), n);
            drop(moved);
            assert_eq!(Rc::strong_count(&counted), 1);
            let vec: PageVec<Rc<()>> = vec![counted.clone(); n].into();
            assert_eq!((vec.len(), Rc::strong_count(&counted)), (n, n + 1));
            drop(vec);
            assert_eq!(Rc::strong_count(&counted), 1);
        }
    }

    #[test]
    fn strings_keep_every_piece() {
        let mut text = PageString::default();
        for piece in ["a", "é", "", "xyz"] {
            text.push_str(piece);
        }
        assert_eq!((&text[..], text.len()), ("aéxyz", 6));
        // Appends move the text into a mapping before its heap buffer would reach MAP_FROM
        // (a large block freed on the heap would raise glibc's trim threshold).
        let piece = "n".repeat(1000);
        while text.len() < 3 * MAP_FROM / 2 {
            text.push_str(&piece);
            let bytes = &text.bytes;
            assert!(
                bytes.is_big() || bytes.capacity() < MAP_FROM,
                "{}",
                bytes.capacity()
            );
        }
        assert!(text.bytes.is_big());
        assert!(text[6..].bytes().all(|b| b == b'n'));
    }

    #[test]
    fn reserving_too_much_fails_without_changing_the_vector() {
        let mut vec: PageVec<u64> = [1, 2].into_iter().collect();
        assert!(vec.try_reserve(usize::MAX).is_err());
        assert!(vec.try_reserve(usize::MAX / 16).is_err());
        assert_eq!(&vec[..], &[1, 2]);
    }
}
