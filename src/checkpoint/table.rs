//! The tensor table: every tensor reachable from the selected root, named by the tree walk
//! ([`crate::tree`]), in walk order, with its names in one buffer.

use super::limits::TableLimits;
use crate::container::{PageString, PageVec};
use crate::error::{Error, ErrorKind};
use crate::hash::NameTable;
use crate::pickle::{Arena, NodeId};
use crate::torch::{self, Interpreted, StorageResolver, TensorDesc};
use crate::tree::{self, Walk, WalkBounds};
use std::ffi::CStr;

/// The rows of the tensor table: each a name and the tensor it names. The names are back to
/// back in one buffer, each NUL-terminated for C callers (no allocation per row), and indexed:
/// a name finds its first row in O(1). The index is built by the first lookup by name, not
/// by opening: a caller that walks the table by position never pays for it.
#[derive(Default)]
pub(crate) struct Table {
    /// Every name, each followed by a NUL (text: names are sanitized `&str`s).
    names: PageString,
    rows: PageVec<Row>,
    errors: Vec<Error>,
    index: std::sync::OnceLock<NameTable>,
}

pub(crate) struct Row {
    /// The name is `names[name_start..name_end]`, followed by a NUL.
    name_start: usize,
    name_end: usize,
    tensor: RowTensor,
}

/// What a row names: an index into `tensors`, or into the table's `errors` (why this tensor
/// cannot be represented). Rows are kept by the hundred thousand: eight bytes, not an `Error`.
#[derive(Clone, Copy)]
enum RowTensor {
    Tensor(u32),
    Error(u32),
}

impl Table {
    /// Adds a row. A NUL in the name (C could not see past it) is written as `\x00`.
    pub(crate) fn push(&mut self, name: &str, tensor: std::result::Result<usize, Error>) {
        let name_start = self.names.len();
        self.names.push_str(&tree::sanitize(name));
        let name_end = self.names.len();
        self.names.push_str("\0");
        // Tensor and row counts are bounded by `Limits::max_tensors`, far below u32::MAX.
        let tensor = match tensor {
            Ok(t) => RowTensor::Tensor(t as u32),
            Err(e) => {
                self.errors.push(e);
                RowTensor::Error(self.errors.len() as u32 - 1)
            }
        };
        self.rows.push(Row {
            name_start,
            name_end,
            tensor,
        });
    }

    /// [`Table::push`] of a tensor row whose name the caller checked holds no NUL.
    pub(crate) fn push_clean(&mut self, name: &str, tensor: usize) {
        debug_assert!(!name.contains('\0'));
        let name_start = self.names.len();
        self.names.push_str(name);
        let name_end = self.names.len();
        self.names.push_str("\0");
        self.rows.push(Row {
            name_start,
            name_end,
            tensor: RowTensor::Tensor(tensor as u32),
        });
    }

    /// Bytes of all the rows' names (each is followed by a NUL in the pool).
    pub(crate) fn name_bytes(&self) -> usize {
        self.names.len() - self.rows.len()
    }

    /// Room for `rows` more rows and `name_bytes` more bytes of names.
    pub(crate) fn reserve(&mut self, rows: usize, name_bytes: usize) {
        self.rows.reserve(rows);
        let _ = self.names.try_reserve(name_bytes);
    }

    /// Whether no name repeats; builds the index by name (which later lookups use) to tell.
    pub(crate) fn names_are_unique(&self) -> bool {
        let mut index = NameTable::with_capacity(self.rows.len());
        for row in 0..self.rows.len() {
            let name = self.name(row);
            if index
                .insert(name, row, |other| self.name(other) == name)
                .is_some()
            {
                return false;
            }
        }
        let _ = self.index.set(index);
        true
    }

    /// The tensor of a row, or why it cannot be represented.
    pub(crate) fn tensor(&self, row: &Row) -> std::result::Result<usize, &Error> {
        match row.tensor {
            RowTensor::Tensor(t) => Ok(t as usize),
            RowTensor::Error(e) => Err(&self.errors[e as usize]),
        }
    }

    pub(crate) fn row(&self, index: usize) -> Option<&Row> {
        self.rows.get(index)
    }

    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn name(&self, row: usize) -> &[u8] {
        self.name_str(row).as_bytes()
    }

    /// Row `row`'s name as text (no check: the pool is text).
    pub(crate) fn name_str(&self, row: usize) -> &str {
        let row = &self.rows[row];
        &self.names[row.name_start..row.name_end]
    }

    pub(crate) fn name_c(&self, row: usize) -> Option<&CStr> {
        let row = self.rows.get(row)?;
        CStr::from_bytes_with_nul(&self.names.as_bytes()[row.name_start..=row.name_end]).ok()
    }

    /// The index by name (the first row of a name wins), built on first use; rows are never
    /// added once a table is in a checkpoint.
    fn index(&self) -> &NameTable {
        self.index.get_or_init(|| {
            let mut index = NameTable::with_capacity(self.rows.len());
            for row in 0..self.rows.len() {
                let name = self.name(row);
                index.insert(name, row, |other| self.name(other) == name);
            }
            index
        })
    }

    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        let name = name.as_bytes();
        self.index().find(name, |row| self.name(row) == name)
    }
}

/// Walks the tree from `root` in pickle order, naming every tensor it reaches.
pub(crate) fn build_table(
    arena: &Arena,
    root: NodeId,
    resolver: &mut dyn StorageResolver,
    limits: &TableLimits,
) -> crate::error::Result<(PageVec<TensorDesc>, Table)> {
    let mut tensors = PageVec::with_capacity(resolver.expected_storages());
    let mut entries = Table::default();
    entries.rows.reserve(resolver.expected_storages());
    // One interpretation per tensor node: a tensor saved under two names is one tensor.
    // `row_of[node]` is the first row naming it (NO_ROW: not interpreted yet).
    const NO_ROW: u32 = u32::MAX;
    let mut row_of = Vec::with_capacity(arena.len());
    crate::container::source::advise_huge_pages(&mut row_of);
    row_of.resize(arena.len(), NO_ROW);
    let mut name_bytes = 0usize;

    let mut visit = |node: NodeId,
                     name: &str,
                     entries: &mut Table,
                     tensors: &mut PageVec<TensorDesc>|
     -> crate::error::Result<bool> {
        if let Some(row) = entries.rows.get(row_of[node as usize] as usize) {
            let tensor = entries.tensor(row).map_err(Clone::clone);
            entries.push(name, tensor);
            return Ok(true);
        }
        let Some(result) = torch::interpret(arena, node, resolver) else {
            return Ok(false);
        };
        let slot = match result {
            Interpreted::Tensor(desc) => {
                tensors.push(desc);
                Ok(tensors.len() - 1)
            }
            Interpreted::Unsupported(e) if e.kind == ErrorKind::Unsupported => Err(e),
            Interpreted::Unsupported(e) => {
                return Err(e.context(format!("tensor '{name}'")));
            }
        };
        let slot = slot.map_err(|e| e.context(format!("tensor '{name}'")));
        // Rows past u32::MAX - 1 are beyond any table limit; they would only be reinterpreted.
        row_of[node as usize] = u32::try_from(entries.len()).unwrap_or(NO_ROW);
        entries.push(name, slot);
        Ok(true)
    };

    if visit(root, "", &mut entries, &mut tensors)? {
        return Ok((tensors, entries));
    }
    let bounds = WalkBounds {
        max_depth: limits.max_depth,
        max_steps: limits.max_walk_steps,
        ..WalkBounds::default()
    };
    let mut walk = Walk::new(arena, root, bounds);
    loop {
        let entry = match walk.next() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(_) => {
                return Err(Error::limit(format!(
                    "naming tensors visited more than {} nodes (shared sub-objects repeated too \
                     often)",
                    limits.max_walk_steps
                )))
            }
        };
        if entry.raw_segment_len > tree::MAX_SEGMENT_LEN {
            return Err(Error::limit(format!(
                "a name segment under '{}' is longer than {} bytes",
                entry.parent_prefix(),
                tree::MAX_SEGMENT_LEN
            )));
        }
        name_bytes = name_bytes.saturating_add(entry.raw_segment_len);
        let entries_before = entries.len();
        let is_tensor = visit(entry.node, entry.name, &mut entries, &mut tensors)?;
        if let Some(row) = entries.rows.get(entries_before) {
            // An entry keeps its name and, for a tensor that cannot be represented, a copy of
            // the error (which names the first path to it): both count.
            let message = entries.tensor(row).err().map_or(0, |e| e.message.len());
            name_bytes = name_bytes
                .saturating_add(entry.name.len())
                .saturating_add(message);
        }
        if name_bytes > limits.max_name_bytes {
            return Err(Error::limit(format!(
                "naming tensors made more than {} bytes of names (long keys repeated too often)",
                limits.max_name_bytes
            )));
        }
        if is_tensor {
            if entries.len() > limits.max_tensors {
                return Err(Error::limit(format!(
                    "more than {} tensors in the table",
                    limits.max_tensors
                )));
            }
            continue;
        }
        if walk.enter().is_err() {
            return Err(Error::limit(format!(
                "objects nest deeper than {} levels at '{}'",
                limits.max_depth,
                walk.name()
            )));
        }
    }
    Ok((tensors, entries))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_finds_the_first_row_of_a_name_and_keeps_c_names() {
        let mut table = Table::default();
        for name in ["a", "b", "a", "", "nul\0inside"] {
            table.push(name, Err(Error::format("x")));
        }
        assert_eq!(table.find("a"), Some(0), "a duplicate: the first wins");
        assert_eq!(table.find("b"), Some(1));
        assert_eq!(table.find(""), Some(3));
        assert_eq!(table.find("c"), None);
        assert_eq!(table.find("nul\\x00inside"), Some(4));
        let c_names: Vec<_> = (0..table.len()).map(|i| table.name_c(i).unwrap()).collect();
        assert_eq!(c_names[2].to_bytes(), b"a");
        assert_eq!(c_names[3].to_bytes(), b"");
        assert_eq!(c_names[4].to_bytes(), b"nul\\x00inside");
        assert!(table.name_c(5).is_none());
    }
}
