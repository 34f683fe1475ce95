//! Shard indexes whose paths are spelled many ways or lead elsewhere: every shard path is
//! resolved (symlinks included) and must stay inside the index's directory, and one file is
//! opened once however many spellings name it (issue 11, B.10).

mod support_zip;

use mmckpt::fuzzing::Backing;
use mmckpt::ErrorKind;
use mmckpt::{Checkpoint, OpenOptions};
use serde_json::{json, Map, Value};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use support_zip::pk;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmckpt-shards-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A checkpoint of `count` one-element float32 tensors `t<i>`, all views of storage "0".
fn shard(count: usize) -> Vec<u8> {
    let mut pkl = vec![0x80, 2, b'}', b'('];
    for i in 0..count {
        pkl.extend(pk::unicode(&format!("t{i}")));
        pkl.extend(pk::tensor("0", 1, 0, &[1], &[1]));
    }
    pkl.extend_from_slice(b"u.");
    support_zip::checkpoint(&pkl, &[("0", &7f32.to_le_bytes())])
}

fn write_index(path: &Path, weight_map: Map<String, Value>) {
    let doc = json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(path, doc.to_string()).unwrap();
}

fn open_err(path: &Path, options: &OpenOptions) -> mmckpt::Error {
    match Checkpoint::open(path, options) {
        Ok(_) => panic!("{} opened", path.display()),
        Err(e) => e,
    }
}

#[test]
fn one_shard_under_300_spellings_is_opened_once() {
    let dir = scratch("spellings");
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::fs::write(dir.join("x.bin"), shard(300)).unwrap();
    let mut spellings = Vec::new();
    for k in 0..100 {
        spellings.push(format!("{}x.bin", "./".repeat(k)));
        symlink("x.bin", dir.join(format!("link{k}"))).unwrap();
        spellings.push(format!("link{k}"));
        // A symlink inside that goes up and back: still inside the directory.
        symlink("../x.bin", dir.join(format!("sub/link{k}"))).unwrap();
        spellings.push(format!("./sub/link{k}"));
    }
    let map: Map<String, Value> = spellings
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("t{i}"), Value::from(s.as_str())))
        .collect();
    write_index(&dir.join("m.index.json"), map);

    let ckpt = Checkpoint::open(dir.join("m.index.json"), &OpenOptions::default()).unwrap();
    assert_eq!(ckpt.len(), 300);
    // One file opened once: one storage, one mapping behind every tensor.
    assert_eq!(ckpt.storage_count(), 1);
    let first = match mmckpt::fuzzing::backing(&ckpt.tensor("t0").unwrap()) {
        Backing::File(s) => s.clone(),
        Backing::Owned(_) => panic!("copied"),
    };
    for (name, tensor) in ckpt.iter() {
        let tensor = tensor.unwrap();
        assert_eq!(tensor.bytes(), 7f32.to_le_bytes(), "{name}");
        match mmckpt::fuzzing::backing(&tensor) {
            Backing::File(s) => assert!(Arc::ptr_eq(s, &first), "{name}"),
            Backing::Owned(_) => panic!("{name}: copied"),
        }
    }
    // The checkpoint's own handle plus the one storage: no other mapping holds the file.
    assert_eq!(Arc::strong_count(&first), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_symlink_leading_out_of_the_index_directory_is_refused() {
    let root = scratch("escape");
    let (dir, outside) = (root.join("model"), root.join("elsewhere"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("x.bin"), shard(2)).unwrap();
    std::fs::write(dir.join("x.bin"), shard(2)).unwrap();
    symlink(outside.join("x.bin"), dir.join("out.bin")).unwrap();
    symlink("../elsewhere", dir.join("sub")).unwrap();
    for leading in ["out.bin", "./sub/x.bin"] {
        let mut map = Map::new();
        map.insert("t0".into(), Value::from("x.bin"));
        map.insert("t1".into(), Value::from(leading));
        write_index(&dir.join("m.index.json"), map);
        let err = open_err(&dir.join("m.index.json"), &OpenOptions::default());
        assert_eq!(err.kind, ErrorKind::Format, "{leading}: {err}");
        let resolved = std::fs::canonicalize(outside.join("x.bin")).unwrap();
        assert!(
            err.message.contains("'t1'")
                && err.message.contains(leading)
                && err.message.contains(&*resolved.to_string_lossy()),
            "{}",
            err.message
        );
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn an_index_reached_through_a_symlinked_directory_reads_its_shards() {
    let root = scratch("dirlink");
    let dir = root.join("model");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("x.bin"), shard(2)).unwrap();
    let mut map = Map::new();
    map.insert("t0".into(), Value::from("x.bin"));
    map.insert("t1".into(), Value::from("./x.bin"));
    write_index(&dir.join("m.index.json"), map);
    symlink(&dir, root.join("alias")).unwrap();
    let ckpt = Checkpoint::open(root.join("alias/m.index.json"), &OpenOptions::default()).unwrap();
    assert_eq!(ckpt.len(), 2);
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn distinct_shards_are_bounded_and_a_fifo_is_not_opened() {
    let dir = scratch("bounded");
    std::fs::write(dir.join("a.bin"), shard(1)).unwrap();
    std::fs::write(dir.join("b.bin"), shard(1)).unwrap();
    let mut map = Map::new();
    map.insert("t0".into(), Value::from("a.bin"));
    write_index(&dir.join("one.index.json"), map);

    let mut options = OpenOptions::default();
    options.limits.max_shards = 1;
    assert_eq!(
        Checkpoint::open(dir.join("one.index.json"), &options)
            .unwrap()
            .len(),
        1
    );
    // A name and a hard link to it are one file: one shard.
    std::fs::write(dir.join("x.bin"), shard(2)).unwrap();
    std::fs::hard_link(dir.join("x.bin"), dir.join("y.bin")).unwrap();
    let mut linked = Map::new();
    linked.insert("t0".into(), Value::from("x.bin"));
    linked.insert("t1".into(), Value::from("y.bin"));
    write_index(&dir.join("linked.index.json"), linked);
    assert_eq!(
        Checkpoint::open(dir.join("linked.index.json"), &options)
            .unwrap()
            .storage_count(),
        1
    );
    // Two files: over the bound.
    let mut over = Map::new();
    over.insert("t0".into(), Value::from("a.bin"));
    over.insert("t0x".into(), Value::from("b.bin"));
    write_index(&dir.join("over.index.json"), over);
    let err = open_err(&dir.join("over.index.json"), &options);
    assert_eq!(err.kind, ErrorKind::Limit, "{err}");
    assert!(err.message.contains("max_shards"), "{}", err.message);

    // A FIFO named as a shard fails at once instead of blocking the open.
    let fifo = dir.join("fifo.bin");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: c_path is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let mut fifo_map = Map::new();
    fifo_map.insert("t0".into(), Value::from("fifo.bin"));
    write_index(&dir.join("fifo.index.json"), fifo_map);
    let err = open_err(&dir.join("fifo.index.json"), &OpenOptions::default());
    assert_eq!(err.kind, ErrorKind::Io, "{err}");
    assert!(
        err.message.contains("not a regular file"),
        "{}",
        err.message
    );
    let _ = std::fs::remove_dir_all(&dir);
}
