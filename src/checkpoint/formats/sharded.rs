//! Hugging Face sharded checkpoints: `pytorch_model.bin.index.json`
//! (`{"metadata": {...}, "weight_map": {"name": "pytorch_model-00001-of-00002.bin", ...}}`)
//! opened as one checkpoint over all its shards.
//!
//! Order: the shards in sorted file-name order, and within each shard the tensors in that
//! file's own order — the order in which transformers' loader (`get_checkpoint_shard_files`
//! sorts `set(weight_map.values())`, then loads each shard's state dict) meets them. transformers
//! writes the weight map with sorted keys, so the index's own order is alphabetical and says
//! nothing about the model. Only the names the weight map assigns to a shard are listed.
//!
//! Every shard is opened (mapped) once; its storages keep their own mapping, shared by all of
//! its tensors.

use crate::checkpoint::{Checkpoint, Format, OpenOptions};
use crate::container::Source;
use crate::error::{Error, ErrorKind, Result};
use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// True for a shard index (`pytorch_model.bin.index.json`, `model.safetensors.index.json`):
/// the path ends with `.index.json`, or the file starts with `{` and is not a safetensors file
/// (whose header length may start with the byte `{`).
pub fn is_index(path: &Path, bytes: &[u8]) -> bool {
    path.to_str().is_some_and(|p| p.ends_with(".index.json"))
        || (bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
            && !super::safetensors::looks_like_safetensors(bytes))
}

/// A shard's path relative to the index's directory; anything that could leave that directory
/// (absolute paths, `..`, drive prefixes) is refused.
fn check_shard_path(index: &Path, shard: &str) -> Result<()> {
    let escapes = shard.is_empty()
        || shard.contains('\\')
        || shard.contains('\0')
        || Path::new(shard)
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if escapes {
        return Err(Error::format(format!(
            "shard index '{}': shard path '{shard}' is not a plain path inside the index's \
             directory",
            index.display()
        )));
    }
    Ok(())
}

/// Where a shard really is: its path with every symlink, `.` and `..` resolved, and the file's
/// identity (device, inode), so that one file named several ways is opened once.
struct ResolvedShard {
    path: PathBuf,
    identity: FileIdentity,
}

/// Resolves the shard `file` (the weight map's entry for `name`) against the index's
/// directory `dir` (already canonical). A shard must resolve to a regular file inside `dir`:
/// a symlink leading elsewhere is refused (Format), as is anything but a regular file (Io,
/// checked before opening, so a FIFO cannot block the open).
fn resolve_shard(index: &Path, dir: &Path, name: &str, file: &str) -> Result<ResolvedShard> {
    let shown = index.display();
    let path = std::fs::canonicalize(dir.join(file)).map_err(|e| {
        Error::io(format!(
            "shard index '{shown}': cannot open shard '{file}' (weight_map entry '{name}'): {e}"
        ))
    })?;
    if !path.starts_with(dir) {
        return Err(Error::format(format!(
            "shard index '{shown}': weight_map entry '{name}' names shard '{file}', which \
             resolves to '{}', outside the index's directory '{}'",
            path.display(),
            dir.display()
        )));
    }
    let meta = std::fs::metadata(&path).map_err(|e| {
        Error::io(format!(
            "shard index '{shown}': cannot stat shard '{file}' ('{}'): {e}",
            path.display()
        ))
    })?;
    if !meta.is_file() {
        return Err(Error::io(format!(
            "shard index '{shown}': shard '{file}' ('{}') is {}, not a regular file",
            path.display(),
            crate::container::source::file_type_name(&meta.file_type())
        )));
    }
    Ok(ResolvedShard {
        identity: file_identity(&path, &meta),
        path,
    })
}

/// What makes two paths one file: (st_dev, st_ino), so hard links count as one file too.
#[cfg(unix)]
type FileIdentity = (u64, u64);
/// Without inode numbers, the canonical path.
#[cfg(not(unix))]
type FileIdentity = PathBuf;

#[cfg(unix)]
fn file_identity(_path: &Path, meta: &std::fs::Metadata) -> FileIdentity {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_identity(path: &Path, _meta: &std::fs::Metadata) -> FileIdentity {
    path.to_path_buf()
}

/// One shard to open: the spelling it is shown by (the first in sorted order), where it
/// really is, and the names the weight map puts there under any of its spellings.
struct Shard<'a> {
    file: &'a str,
    path: PathBuf,
    names: HashMap<&'a str, bool>,
}

/// Opens the index at `path` (whose bytes are `source`) and every shard it names.
///
/// Each shard path is resolved (symlinks included) and must stay inside the index's
/// directory; shards are told apart by file identity, not by spelling, so a file named many
/// ways (`x`, `./x`, a symlink to `x`) is opened and mapped once. At most
/// `options.limits.max_shards` distinct files are opened.
pub fn open_index(path: &Path, source: Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
    let shown = path.display();
    let doc: serde_json::Value = serde_json::from_slice(source.bytes())
        .map_err(|e| Error::format(format!("shard index '{shown}' is not valid JSON: {e}")))?;
    let weight_map = doc
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| {
            Error::format(format!(
                "shard index '{shown}' has no \"weight_map\" object"
            ))
        })?;
    // shard spelling -> the names the weight map puts there
    let mut spellings: BTreeMap<&str, (&str, HashMap<&str, bool>)> = BTreeMap::new();
    for (name, file) in weight_map {
        let file = file.as_str().ok_or_else(|| {
            Error::format(format!(
                "shard index '{shown}': weight_map entry '{name}' is not a file name string"
            ))
        })?;
        check_shard_path(path, file)?;
        spellings
            .entry(file)
            .or_insert_with(|| (name.as_str(), HashMap::new()))
            .1
            .insert(name.as_str(), false);
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = std::fs::canonicalize(parent).map_err(|e| {
        Error::io(format!(
            "shard index '{shown}': cannot resolve its directory '{}': {e}",
            parent.display()
        ))
    })?;
    // Distinct files in the sorted order of their first spelling.
    let mut shards: Vec<Shard> = Vec::new();
    let mut by_identity: HashMap<FileIdentity, usize> = HashMap::new();
    for (file, (first_name, names)) in spellings {
        let resolved = resolve_shard(path, &dir, first_name, file)?;
        match by_identity.get(&resolved.identity) {
            Some(&at) => shards[at].names.extend(names),
            None => {
                if shards.len() == options.limits.max_shards {
                    return Err(Error::limit(format!(
                        "shard index '{shown}' names more than {} distinct shard files \
                         (max_shards)",
                        options.limits.max_shards
                    )));
                }
                by_identity.insert(resolved.identity, shards.len());
                shards.push(Shard {
                    file,
                    path: resolved.path,
                    names,
                });
            }
        }
    }
    let mut parts = Vec::with_capacity(shards.len());
    for Shard {
        file,
        path: shard_path,
        mut names,
    } in shards
    {
        let shard = Arc::new(
            Source::open(&shard_path, options.mode)
                .map_err(|e| e.context(format!("shard '{file}' of index '{shown}'")))?,
        );
        let mut ckpt = Checkpoint::from_source(shard, options).map_err(|e| {
            e.context(format!(
                "shard '{file}' ('{}') of index '{shown}'",
                shard_path.display()
            ))
        })?;
        // Only the table survives the join: let the shard's value tree go now, so that the
        // peak holds one shard's tree at a time.
        ckpt.drop_tree();
        let mut keep = Vec::with_capacity(names.len());
        for index in 0..ckpt.len() {
            let name = ckpt.name_at(index).unwrap_or("");
            if let Some(seen) = names.get_mut(name) {
                if !*seen {
                    *seen = true;
                    keep.push(index);
                }
            }
        }
        let mut missing: Vec<&str> = names
            .iter()
            .filter(|(_, &seen)| !seen)
            .map(|(&n, _)| n)
            .collect();
        if !missing.is_empty() {
            missing.sort_unstable();
            return Err(Error::new(
                ErrorKind::Format,
                format!(
                    "shard index '{shown}' puts tensor '{}' in shard '{file}', which has no \
                     tensor of that name{}",
                    missing[0],
                    if missing.len() > 1 {
                        format!(" ({} such names)", missing.len())
                    } else {
                        String::new()
                    }
                ),
            ));
        }
        parts.push((ckpt, keep));
    }
    Ok(Checkpoint::concat(source, Format::Sharded, parts))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_paths_must_stay_in_the_directory() {
        let index = Path::new("/models/x/pytorch_model.bin.index.json");
        for good in ["a.bin", "sub/a.bin", "./a.bin"] {
            assert!(check_shard_path(index, good).is_ok(), "{good}");
        }
        for bad in [
            "../a.bin",
            "/etc/passwd",
            "sub/../../a.bin",
            "",
            "a\\..\\b",
            "sub/..",
        ] {
            let e = check_shard_path(index, bad).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Format);
            assert!(e.message.contains(bad), "{}", e.message);
        }
    }

    #[test]
    fn detection() {
        assert!(is_index(Path::new("m.bin.index.json"), b"PK"));
        assert!(is_index(Path::new("m.json"), b" \n{\"weight_map\": {}}"));
        assert!(!is_index(Path::new("m.bin"), b"PK\x03\x04"));
    }
}
