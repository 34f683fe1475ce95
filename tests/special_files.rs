//! Paths that are not regular files — a FIFO above all, whose open for reading waits for a
//! writer — are refused at once, wherever mmckpt opens a file: a checkpoint, a shard of an
//! index (the CLI's `--spec` is tested in cli/tests/cli.rs). Each open runs under a deadline, so a regression fails here
//! instead of hanging the suite.

mod common;

use common::fixture;
use mmckpt::ErrorKind;
use mmckpt::OpenMode;
use mmckpt::{Checkpoint, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

/// A fresh directory under the system's temporary one, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("mmckpt-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY (test): c_path is a NUL-terminated path that outlives the call.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

/// Opens `path` on another thread and returns the error, failing if the open succeeds or
/// takes longer than the deadline (it would block forever on a FIFO opened plainly).
fn open_error(path: &Path, mode: OpenMode) -> mmckpt::Error {
    let (send, receive) = mpsc::channel();
    let owned = path.to_path_buf();
    std::thread::spawn(move || {
        let options = OpenOptions {
            mode,
            ..OpenOptions::default()
        };
        let _ = send.send(Checkpoint::open(&owned, &options).err());
    });
    match receive.recv_timeout(DEADLINE) {
        Ok(Some(error)) => error,
        Ok(None) => panic!("'{}' opened as a checkpoint", path.display()),
        Err(_) => panic!("opening '{}' blocked", path.display()),
    }
}

#[test]
fn a_fifo_is_refused_without_blocking() {
    let dir = TempDir::new("fifo");
    let fifo = dir.0.join("model.pt");
    mkfifo(&fifo);
    for mode in [OpenMode::Map, OpenMode::MapPopulate, OpenMode::Read] {
        let e = open_error(&fifo, mode);
        assert_eq!(e.kind, ErrorKind::Io, "{e}");
        for needle in [fifo.to_str().unwrap(), "FIFO", "not a regular file"] {
            assert!(e.message.contains(needle), "{e} should mention {needle}");
        }
    }
}

#[test]
fn devices_and_directories_are_refused_without_blocking() {
    for (path, kind) in [
        ("/dev/null", "character device"),
        ("/dev/zero", "character device"),
        ("/tmp", "directory"),
    ] {
        let e = open_error(Path::new(path), OpenMode::Map);
        assert_eq!(e.kind, ErrorKind::Io, "{e}");
        assert!(e.message.contains(path) && e.message.contains(kind), "{e}");
    }
}

#[test]
fn a_fifo_shard_is_refused_without_blocking() {
    let dir = TempDir::new("fifo-shard");
    std::fs::copy(fixture("dtypes.pt"), dir.0.join("real.pt")).unwrap();
    let names = Checkpoint::open(dir.0.join("real.pt"), &OpenOptions::default()).unwrap();
    let first = names.name_at(0).unwrap().to_owned();
    mkfifo(&dir.0.join("pipe.bin"));
    let index = dir.0.join("model.index.json");
    let doc = serde_json::json!({"weight_map": {first: "real.pt", "x": "pipe.bin"}});
    std::fs::write(&index, doc.to_string()).unwrap();
    let e = open_error(&index, OpenMode::Map);
    assert_eq!(e.kind, ErrorKind::Io, "{e}");
    for needle in ["pipe.bin", "FIFO", "model.index.json"] {
        assert!(e.message.contains(needle), "{e} should mention {needle}");
    }
    // The index itself as a FIFO.
    let fifo_index = dir.0.join("fifo.index.json");
    mkfifo(&fifo_index);
    let e = open_error(&fifo_index, OpenMode::Map);
    assert!(e.message.contains("FIFO"), "{e}");
}
