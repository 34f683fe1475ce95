//! TorchScript archives keep which attributes of a scripted module are parameters and buffers
//! only in their (deflate-compressed) `code/` records: `__parameters__ = ["weight", ]` and
//! `__buffers__ = [...]` lines of each class. mmckpt reads just those lines, so that a plain
//! tensor attribute, which `torch.jit.load(f).state_dict()` leaves out, stays out of the table,
//! and so does a tensor inside a tuple, list or dict attribute.

use crate::container::zip::ZipArchive;
use crate::error::{Error, Result};
use crate::pickle::{Arena, NodeId, Value};
use std::collections::{HashMap, HashSet};

/// Bytes of `code/` mmckpt inflates at most, over all records of one archive.
pub const MAX_CODE_BYTES: usize = 64 << 20;

/// Parameter and buffer names of each scripted class, by qualified name
/// (`__torch__.torch.nn.modules.linear.Linear`).
#[derive(Default, Debug)]
pub struct ScriptClasses {
    state: HashMap<String, HashSet<String>>,
    /// Classes declared `class Name(Module):` — scripted modules, whose objects are submodules.
    modules: HashSet<String>,
}

impl ScriptClasses {
    /// Reads every `code/**.py` record of the archive.
    pub fn read(archive: &ZipArchive, bytes: &[u8]) -> Result<ScriptClasses> {
        let mut classes = ScriptClasses::default();
        let mut budget = MAX_CODE_BYTES;
        let prefix_len = archive.prefix().len() + 1;
        for record in archive.records() {
            let Some(relative) = record.name.get(prefix_len..) else {
                continue;
            };
            // torch finds `code/<module path>.py` as it finds every record: ASCII
            // case-insensitively (the zip reader refuses two names equal up to case). The
            // module path is keyed lowercased; the class names in the file are kept as written.
            let Some(path) = strip_code_file(relative) else {
                continue;
            };
            let raw = archive.raw_data(bytes, record)?;
            let text = match record.method {
                0 => raw.to_vec(),
                8 => miniz_oxide::inflate::decompress_to_vec_with_limit(raw, budget).map_err(
                    |e| Error::format(format!("record '{}': cannot inflate: {e:?}", record.name)),
                )?,
                m => {
                    return Err(Error::unsupported(format!(
                        "record '{}' uses compression method {m}",
                        record.name
                    )))
                }
            };
            budget = budget.checked_sub(text.len()).ok_or_else(|| {
                Error::limit(format!(
                    "the code/ records inflate to more than {MAX_CODE_BYTES} bytes"
                ))
            })?;
            let module = path.replace('/', ".").to_ascii_lowercase();
            classes.parse(&module, &String::from_utf8_lossy(&text));
        }
        Ok(classes)
    }

    fn parse(&mut self, module: &str, code: &str) {
        let mut current: Option<String> = None;
        for line in code.lines() {
            if let Some(rest) = line.strip_prefix("class ") {
                let name = rest.split(['(', ':']).next().unwrap_or("").trim();
                let qualified = format!("{module}.{name}");
                self.state.entry(qualified.clone()).or_default();
                if rest[name.len()..].trim_start().starts_with("(Module)") {
                    self.modules.insert(qualified.clone());
                }
                current = Some(qualified);
                continue;
            }
            if !line.starts_with(' ') {
                current = None;
                continue;
            }
            let Some(class) = &current else { continue };
            let trimmed = line.trim_start();
            let list = trimmed
                .strip_prefix("__parameters__ = ")
                .or_else(|| trimmed.strip_prefix("__buffers__ = "));
            if let Some(list) = list {
                let names = self.state.entry(class.clone()).or_default();
                // ["weight", "bias", ]: every double-quoted name.
                names.extend(list.split('"').skip(1).step_by(2).map(str::to_owned));
            }
        }
    }

    /// Keeps, in each scripted module whose class is known, only what
    /// `torch.jit.load(f).state_dict()` reaches: parameter and buffer slots, submodules (objects
    /// of a scripted module class) and plain scalar attributes (`training`: no tensor can hide
    /// in them). Everything else — a tensor attribute that is neither parameter nor buffer, a
    /// tuple, list or dict attribute, an object of a scripted non-module class — is dropped,
    /// since `state_dict()` only follows `_parameters`, `_buffers` and `_modules`
    /// (`torch/jit/_script.py`: `ParameterDict` / `BufferDict` of the class type).
    pub fn prune_plain_tensor_attributes(&self, arena: &mut Arena) {
        for id in 0..arena.len() as NodeId {
            let Some(qualified) = self.script_class(arena, id) else {
                continue;
            };
            if !self.modules.contains(&qualified) {
                continue;
            }
            let Some(state_names) = self.state.get(&qualified) else {
                continue;
            };
            let Value::Object {
                state: Some(state), ..
            } = arena.get(id)
            else {
                continue;
            };
            let state = *state;
            let Value::Dict { items, .. } = arena.get(state) else {
                continue;
            };
            let keep: Vec<(NodeId, NodeId)> = items
                .iter()
                .copied()
                .filter(|&(k, v)| self.is_state(arena, state_names, k, v))
                .collect();
            if keep.len() == items.len() {
                continue;
            }
            if let Value::Dict { items, .. } = arena.get_mut(state) {
                *items = keep;
            }
        }
    }

    /// `module.Name` of a scripted object (`__torch__…`).
    fn script_class(&self, arena: &Arena, id: NodeId) -> Option<String> {
        let Value::Object { callable, .. } = arena.get(id) else {
            return None;
        };
        let (module, name) = arena.global_name(*callable)?;
        // Module paths are keyed lowercased (`code/` records are found in any ASCII case).
        module
            .starts_with("__torch__")
            .then(|| format!("{}.{name}", module.to_ascii_lowercase()))
    }

    fn is_state(
        &self,
        arena: &Arena,
        state_names: &HashSet<String>,
        key: NodeId,
        value: NodeId,
    ) -> bool {
        if crate::torch::is_tensor_call(arena, value) {
            return arena.as_str(key).is_some_and(|k| state_names.contains(k));
        }
        match arena.get(value) {
            Value::None
            | Value::Bool(_)
            | Value::Int(_)
            | Value::BigInt(_)
            | Value::Float(_)
            | Value::Complex(..)
            | Value::Str(_)
            | Value::Bytes(_) => true,
            Value::Object { .. } => self
                .script_class(arena, value)
                .is_some_and(|class| self.modules.contains(&class)),
            _ => false,
        }
    }
}

/// `<path>` of a record named `code/<path>.py`, both fixed parts in any ASCII case.
fn strip_code_file(relative: &str) -> Option<&str> {
    let bytes = relative.as_bytes();
    let fixed_parts = bytes.len() >= "code/.py".len()
        && bytes[..5].eq_ignore_ascii_case(b"code/")
        && bytes[bytes.len() - 3..].eq_ignore_ascii_case(b".py");
    // The fixed parts are ASCII, so both cuts fall on character boundaries.
    fixed_parts.then(|| &relative[5..relative.len() - 3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_state_lists_are_read() {
        let mut c = ScriptClasses::default();
        c.parse(
            "__torch__.torch.nn.modules.linear",
            "class Linear(Module):\n  __parameters__ = [\"weight\", \"bias\", ]\n  __buffers__ = []\n  weight : Tensor\n  def forward(self):\n    return 1\nclass Other(Module):\n  __parameters__ = []\n  __buffers__ = [\"stat\", ]\n",
        );
        let linear = &c.state["__torch__.torch.nn.modules.linear.Linear"];
        assert!(linear.contains("weight") && linear.contains("bias") && linear.len() == 2);
        let other = &c.state["__torch__.torch.nn.modules.linear.Other"];
        assert!(other.contains("stat") && other.len() == 1);
    }

    #[test]
    fn code_records_are_found_in_any_ascii_case() {
        assert_eq!(strip_code_file("code/__torch__/m.py"), Some("__torch__/m"));
        assert_eq!(strip_code_file("CODE/__torch__/M.PY"), Some("__torch__/M"));
        assert_eq!(strip_code_file("Code/.Py"), Some(""));
        for not in [
            "code/m.py.debug_pkl",
            "code/m",
            "codex/m.py",
            "code.py",
            "data.pkl",
        ] {
            assert_eq!(strip_code_file(not), None, "{not}");
        }
    }
}
