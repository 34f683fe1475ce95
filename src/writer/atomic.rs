//! A file written under a temporary name beside its target and renamed over it once complete
//! and synced: readers of the target see the old file or the whole new one, never part of it.

use crate::error::{Error, Result};
use std::fs::{File, OpenOptions};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes buffered before a write reaches the file (tensor data larger than this bypasses it).
const BUFFER: usize = 1 << 20;

/// The prefix of temporary files, after the dot: `.<target name>.mmckpt-tmp-<pid>-<n>`.
pub const TEMP_MARK: &str = ".mmckpt-tmp-";

pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Creates the temporary file in `target`'s folder (so the rename stays on one file
    /// system).
    pub fn create(target: &Path) -> Result<AtomicFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = target.file_name().ok_or_else(|| {
            Error::invalid_argument(format!("'{}' names no file", target.display()))
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(
            "{TEMP_MARK}{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let temp = target.with_file_name(temp_name);
        let file = OpenOptions::new()
            .write(true)
            .read(true)
            .create_new(true)
            .open(&temp)
            .map_err(|e| Error::io(format!("cannot create '{}': {e}", temp.display())))?;
        Ok(AtomicFile {
            target: target.to_path_buf(),
            temp,
            writer: Some(BufWriter::with_capacity(BUFFER, file)),
        })
    }

    pub fn writer(&mut self) -> &mut BufWriter<File> {
        self.writer.as_mut().expect("the file is open until commit")
    }

    /// Flushes and syncs the temporary file, renames it over the target, and syncs the folder
    /// so the rename itself survives a crash.
    pub fn commit(mut self) -> Result<()> {
        let writer = self.writer.take().expect("the file is open until commit");
        let io = |what: &str, e: std::io::Error| {
            Error::io(format!("cannot {what} '{}': {e}", self.temp.display()))
        };
        let file = writer
            .into_inner()
            .map_err(|e| io("write", e.into_error()))?;
        file.sync_all().map_err(|e| io("sync", e))?;
        drop(file);
        std::fs::rename(&self.temp, &self.target).map_err(|e| {
            let _ = std::fs::remove_file(&self.temp);
            Error::io(format!(
                "cannot rename '{}' to '{}': {e}",
                self.temp.display(),
                self.target.display()
            ))
        })?;
        let folder = match self.target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Some file systems cannot sync a directory; the data itself is synced already.
        if let Ok(dir) = File::open(folder) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for AtomicFile {
    /// An unfinished file (an error, a panic) is removed; the target was never touched.
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn an_uncommitted_file_is_removed_and_the_target_kept() {
        let dir = std::env::temp_dir().join(format!("mmckpt-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("out.bin");
        std::fs::write(&target, b"old").unwrap();
        {
            let mut f = AtomicFile::create(&target).unwrap();
            f.writer().write_all(b"new but unfinished").unwrap();
        }
        assert_eq!(std::fs::read(&target).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let mut f = AtomicFile::create(&target).unwrap();
        f.writer().write_all(b"new").unwrap();
        f.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
