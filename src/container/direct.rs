//! Reads of a checkpoint's file that bypass the page cache (`O_DIRECT`), straight into memory
//! the caller owns: a cold copy load then runs at the device's speed instead of the page
//! cache's (whose copy out of cached pages costs about an eighth of the time on top).
//!
//! `O_DIRECT` wants the buffer's address, the file offset and the length aligned to the
//! logical block size; callers read whole [`DIRECT_ALIGN`] blocks into the window of an
//! [`AlignedBuf::zeroed_for_direct_read`] buffer, whose address is placed like the file
//! offset. A file system that refuses `O_DIRECT` (tmpfs: `EINVAL` at open) is read with
//! plain `pread` into the same memory instead.

use super::aligned::DIRECT_ALIGN;
#[cfg(doc)]
use super::AlignedBuf;
use super::Source;
use crate::error::{Error, Result};
use std::fs::File;

/// The file behind a [`Source`], opened again for reads into caller memory: with `O_DIRECT`
/// where the file system allows it, and without (for what `O_DIRECT` cannot read).
pub struct DirectFile {
    direct: Option<File>,
    buffered: File,
    shown: String,
}

impl DirectFile {
    /// Opens the file `source` was mapped from again. `None` when that cannot be done
    /// safely or at all: bytes given in memory or read in, a copy-on-write mapping (its user
    /// may have written to it), a file deleted or replaced since (another
    /// device or inode than the source's), or one that cannot be opened; the caller
    /// then copies from the source's bytes as usual.
    pub fn open(source: &Source) -> Option<DirectFile> {
        if !source.maps_file_contents() {
            return None;
        }
        let path = source.path()?;
        let buffered = open(path, 0).ok()?;
        if !source.is_same_file(&buffered.metadata().ok()?) {
            return None;
        }
        #[cfg(target_os = "linux")]
        let direct = open(path, libc::O_DIRECT)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| source.is_same_file(&m)));
        #[cfg(not(target_os = "linux"))]
        let direct = None;
        Some(DirectFile {
            direct,
            buffered,
            shown: path.display().to_string(),
        })
    }

    /// Fills `buf`, which holds the file's bytes from `offset` on, with at least its first
    /// `needed` bytes (the rest of `buf` may lie past the end of the file). With `O_DIRECT`,
    /// `offset` and `buf`'s address are multiples of [`DIRECT_ALIGN`] and the whole of `buf`
    /// (whole blocks) is asked for; a read the kernel refuses there (`EINVAL`) is done again
    /// without. An `Io` error names the file and the byte where the read failed or the file
    /// ended.
    pub fn read_into(&self, offset: u64, buf: &mut [u8], needed: usize) -> Result<()> {
        use std::os::unix::fs::FileExt;
        debug_assert!(needed <= buf.len());
        let mut direct = self.direct.as_ref().filter(|_| {
            offset % DIRECT_ALIGN as u64 == 0 && buf.as_ptr() as usize % DIRECT_ALIGN == 0
        });
        let mut done = 0;
        while done < needed {
            let (file, end) = match direct {
                Some(file) => (file, buf.len()),
                None => (&self.buffered, needed),
            };
            let at = offset + done as u64;
            match file.read_at(&mut buf[done..end], at) {
                Ok(0) => {
                    // The file's length, not `at`: another thread's piece may start past it.
                    let end = file.metadata().map_or(at, |m| m.len().min(at));
                    return Err(Error::io(format!(
                        "'{}' ends at byte {end}, before byte {} (it was truncated after it \
                         was opened)",
                        self.shown,
                        offset + needed as u64
                    )));
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if direct.is_some() && e.raw_os_error() == Some(libc::EINVAL) => {
                    direct = None;
                }
                Err(e) => {
                    return Err(Error::io(format!(
                        "cannot read '{}' at byte {at}: {e}",
                        self.shown
                    )))
                }
            }
        }
        Ok(())
    }
}

fn open(path: &std::path::Path, flags: i32) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK: a FIFO put in the file's place must not block the open; the identity check
    // refuses it afterwards (reads of a regular file ignore the flag).
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NONBLOCK)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::{AlignedBuf, OpenMode};

    /// A file of `len` distinct bytes in the system's temporary directory (removed on drop).
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(tag: &str, len: usize) -> TempFile {
            let path = std::env::temp_dir()
                .join(format!("mmckpt-direct-unit-{tag}-{}", std::process::id()));
            std::fs::write(&path, pattern(len)).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    /// Reads `len` bytes at `offset` as the copy load does: into a placed buffer's window.
    fn read(file: &DirectFile, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = AlignedBuf::zeroed_for_direct_read(len, offset)?;
        let head = buf.direct_head();
        let window = buf.direct_window().unwrap();
        file.read_into(offset - head as u64, window, head + len)?;
        Ok(buf.as_slice().to_vec())
    }

    /// With O_DIRECT (where the file system takes it) and with plain pread (a file system that
    /// refuses it), block-straddling ranges read the file's bytes; a range past the end is an
    /// `Io` error naming the file's end.
    #[test]
    fn ranges_read_directly_or_not_are_the_files_bytes() {
        let len = 5 * DIRECT_ALIGN + 100;
        let temp = TempFile::new("ranges", len);
        let expected = pattern(len);
        let source = Source::open(&temp.0, OpenMode::Map).unwrap();
        let opened = DirectFile::open(&source).unwrap();
        let buffered = DirectFile {
            direct: None,
            buffered: open(&temp.0, 0).unwrap(),
            shown: "buffered".into(),
        };
        for file in [&opened, &buffered] {
            for (offset, n) in [
                (0, 1),
                (64, 4096),
                (4032, 128),
                (4096, 8192),
                (192, len - 192),
            ] {
                let got = read(file, offset as u64, n).unwrap();
                assert_eq!(got, expected[offset..offset + n], "{offset}+{n}");
            }
            let err = read(file, 4096, len).unwrap_err();
            assert_eq!(err.kind, crate::error::ErrorKind::Io);
            assert!(
                err.message.contains(&format!("ends at byte {len}")),
                "{err}"
            );
        }
    }

    /// A file put in the path's place since the open is not read: the mapping is copied.
    #[test]
    fn a_replaced_file_is_not_opened_again() {
        let temp = TempFile::new("replaced", 3 * DIRECT_ALIGN);
        let source = Source::open(&temp.0, OpenMode::Map).unwrap();
        assert!(DirectFile::open(&source).is_some());
        let other = temp.0.with_extension("new");
        std::fs::write(&other, pattern(100)).unwrap();
        std::fs::rename(&other, &temp.0).unwrap();
        assert!(DirectFile::open(&source).is_none());
        assert!(DirectFile::open(&Source::from_bytes(b"bytes").unwrap()).is_none());
    }
}
