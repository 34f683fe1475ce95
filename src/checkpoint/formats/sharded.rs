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
use std::path::{Component, Path};
use std::sync::Arc;

/// True for a shard index: the path ends with `.index.json`, or the file starts with `{`.
pub fn is_index(path: &Path, bytes: &[u8]) -> bool {
    path.to_str().is_some_and(|p| p.ends_with(".index.json"))
        || bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
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

/// Opens the index at `path` (whose bytes are `source`) and every shard it names.
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
    // shard file -> the names the weight map puts there
    let mut shards: BTreeMap<&str, HashMap<&str, bool>> = BTreeMap::new();
    for (name, file) in weight_map {
        let file = file.as_str().ok_or_else(|| {
            Error::format(format!(
                "shard index '{shown}': weight_map entry '{name}' is not a file name string"
            ))
        })?;
        check_shard_path(path, file)?;
        shards.entry(file).or_default().insert(name.as_str(), false);
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut parts = Vec::with_capacity(shards.len());
    for (file, mut names) in shards {
        let shard_path = dir.join(file);
        let shard = Arc::new(
            Source::open(&shard_path, options.mode)
                .map_err(|e| e.context(format!("shard '{file}' of index '{shown}'")))?,
        );
        let ckpt = Checkpoint::from_source(shard, options).map_err(|e| {
            e.context(format!(
                "shard '{file}' ('{}') of index '{shown}'",
                shard_path.display()
            ))
        })?;
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
