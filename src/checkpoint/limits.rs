//! Every bound mmckpt enforces on its input, in one type: [`Limits`], whose fields group the
//! bounds by the stage that applies them. Defaults fit any real checkpoint (the largest real
//! models have fewer than 100,000 tensors).

use crate::container::zip::ZipLimits;
use crate::pickle::PickleLimits;
use crate::tree::DEFAULT_MAX_DEPTH;

/// Every bound the parser enforces (set through [`OpenOptions::limits`](super::OpenOptions)).
#[derive(Clone, Debug)]
pub struct Limits {
    /// The pickle machine: values built, stack, memo, string lengths.
    pub pickle: PickleLimits,
    /// The zip directory.
    pub zip: ZipLimits,
    /// Bytes of the `data.pkl` record (legacy files: of all the pickles before the storages).
    pub max_pickle_bytes: u64,
    /// Bytes one deflated record may declare it inflates to (a storage, or `data.pkl` within
    /// `max_pickle_bytes`); a larger declaration is a `Limit` error at open. A record is never
    /// inflated past its declared size, so this bounds the memory any record can take.
    pub max_inflated_bytes: u64,
    /// The walk that names tensors.
    pub table: TableLimits,
    /// Listing values ([`Checkpoint::value_leaves`](crate::Checkpoint::value_leaves)).
    pub values: ValueLimits,
    /// Distinct files a shard index may name (told apart by file identity, not spelling).
    pub max_shards: usize,
    /// Bytes of a safetensors file's JSON header (the `safetensors` crate's bound: 100 MB).
    pub max_header_bytes: u64,
    /// Chunks a distributed checkpoint's `.metadata` may list, over all its tensors.
    pub max_chunks: usize,
    /// Chunks one tensor of a distributed checkpoint may have (every pair is checked for
    /// overlap at open, so the work grows with the square of this).
    pub max_chunks_per_tensor: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pickle: PickleLimits::default(),
            zip: ZipLimits::default(),
            max_pickle_bytes: 1 << 30,
            max_inflated_bytes: 1 << 34,
            table: TableLimits::default(),
            values: ValueLimits::default(),
            max_shards: 16_384,
            max_header_bytes: 100_000_000,
            max_chunks: 1 << 22,
            max_chunks_per_tensor: 4096,
        }
    }
}

/// Bounds of the tensor table and of the walk that names its tensors.
#[derive(Clone, Debug)]
pub struct TableLimits {
    /// Entries in the tensor table.
    pub max_tensors: usize,
    /// Nesting depth of containers on the way to a tensor.
    pub max_depth: usize,
    /// Nodes visited while naming tensors (shared sub-trees are visited once per path).
    pub max_walk_steps: usize,
    /// Bytes of names made while naming tensors: every name segment walked plus every table
    /// entry's full name (a long key shared by many paths would otherwise cost its length each
    /// time). One segment is at most 65,536 bytes (a longer key is a `Limit` error).
    pub max_name_bytes: usize,
}

impl Default for TableLimits {
    fn default() -> Self {
        TableLimits {
            max_tensors: 1 << 22,
            max_depth: DEFAULT_MAX_DEPTH,
            max_walk_steps: 1 << 26,
            max_name_bytes: 1 << 28,
        }
    }
}

/// Bounds for listing values ([`Checkpoint::for_each_value_leaf`](crate::Checkpoint::for_each_value_leaf)): reaching one stops the listing early
/// and marks it truncated (not an error).
#[derive(Clone, Debug)]
pub struct ValueLimits {
    /// Containers nested deeper than this are not entered (the walk is marked truncated).
    pub max_depth: usize,
    /// Leaves listed at most.
    pub max_values: usize,
    /// Children visited at most (shared sub-objects are visited once per path).
    pub max_steps: usize,
    /// Bytes of names made: every name segment walked plus every listed leaf's full path (a
    /// long key above a sub-object shared by many paths would otherwise cost its length once
    /// per path, in the listing and in anything written from it, such as `ls --json`).
    pub max_name_bytes: usize,
}

impl Default for ValueLimits {
    fn default() -> Self {
        ValueLimits {
            max_depth: DEFAULT_MAX_DEPTH,
            max_values: 100_000,
            max_steps: 1 << 24,
            max_name_bytes: 1 << 26,
        }
    }
}
