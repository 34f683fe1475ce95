//! The outcome of a load, worded byte for byte as torch's `load_state_dict` words it
//! (checked against torch 2.15).

use std::fmt::Write;

/// Missing and unexpected keys of a load, in torch's order (module traversal order, then
/// state-dict order), and the size mismatches that made it fail.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub(crate) module_name: String,
    pub(crate) missing: Vec<String>,
    pub(crate) unexpected: Vec<String>,
    /// `size mismatch for …` lines.
    pub(crate) errors: Vec<String>,
    pub(crate) strict: bool,
    pub(crate) loaded: usize,
    /// Entries an assign load copied instead of binding a view, in load order.
    pub(crate) copied: Vec<String>,
}

impl LoadReport {
    /// Module entries the checkpoint did not provide (prefix stripped).
    pub fn missing_keys(&self) -> &[String] {
        &self.missing
    }
    /// Checkpoint keys (under the prefix, stripped) that match no entry.
    pub fn unexpected_keys(&self) -> &[String] {
        &self.unexpected
    }
    /// Entries that were bound or copied.
    pub fn loaded(&self) -> usize {
        self.loaded
    }
    /// Entries an assign load copied into module-owned row-major memory instead of binding a
    /// zero-copy view: those it converted (`convert`) and those whose checkpoint tensor was
    /// strided (`contiguous`), in load order (file order). Empty for copy loads, whose every
    /// entry is written into the module's own storage.
    pub fn copied_keys(&self) -> &[String] {
        &self.copied
    }
    /// What torch returns or raises: `<All keys matched successfully>`,
    /// `_IncompatibleKeys(missing_keys=[...], unexpected_keys=[...])`, or the
    /// `Error(s) in loading state_dict for <Name>:` text of a failed load.
    pub fn message(&self) -> String {
        if self.is_failure() {
            return self.error_message();
        }
        if self.missing.is_empty() && self.unexpected.is_empty() {
            return "<All keys matched successfully>".to_string();
        }
        format!(
            "_IncompatibleKeys(missing_keys={}, unexpected_keys={})",
            py_list(&self.missing),
            py_list(&self.unexpected)
        )
    }

    /// True when torch would raise: size mismatches, or key mismatches in a strict load.
    pub fn is_failure(&self) -> bool {
        !self.errors.is_empty()
            || (self.strict && (!self.missing.is_empty() || !self.unexpected.is_empty()))
    }

    /// torch's RuntimeError text: `Error(s) in loading state_dict for <Name>:\n\t…`.
    pub fn error_message(&self) -> String {
        let mut lines = Vec::new();
        if self.strict {
            if !self.missing.is_empty() {
                lines.push(format!(
                    "Missing key(s) in state_dict: {}. ",
                    quoted(&self.missing)
                ));
            }
            if !self.unexpected.is_empty() {
                lines.push(format!(
                    "Unexpected key(s) in state_dict: {}. ",
                    quoted(&self.unexpected)
                ));
            }
        }
        lines.extend(self.errors.iter().cloned());
        format!(
            "Error(s) in loading state_dict for {}:\n\t{}",
            self.module_name,
            lines.join("\n\t")
        )
    }
}

/// `"a", "b"`: torch's `', '.join(f'"{k}"' for k in keys)`.
fn quoted(keys: &[String]) -> String {
    let mut out = String::new();
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "\"{k}\"");
    }
    out
}

/// Python's `repr(list_of_str)`.
fn py_list(items: &[String]) -> String {
    let mut out = String::from("[");
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&py_repr(s));
    }
    out.push(']');
    out
}

/// Python's `repr(str)`: single quotes unless the text holds `'` and no `"`.
pub(crate) fn py_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (0x80..0xa0).contains(&(c as u32)) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// `torch.Size([5, 3])`.
pub(crate) fn torch_size(shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("torch.Size([{}])", dims.join(", "))
}

/// torch's size-mismatch line.
pub(crate) fn size_mismatch(key: &str, checkpoint: &[i64], model: &[i64]) -> String {
    format!(
        "size mismatch for {key}: copying a param with shape {} from checkpoint, the shape in \
         current model is {}.",
        torch_size(checkpoint),
        torch_size(model)
    )
}
