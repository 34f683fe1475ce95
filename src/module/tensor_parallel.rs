//! Tensor-parallel loads: which entries a rank loads only a share of (split rules matched by
//! `*` globs on the entry's name) and which share, `torch.chunk(t, world, dim)[rank]`.

use crate::error::{Error, Result};

/// Entries whose name matches `pattern` are split along `dim`.
///
/// `pattern` is matched against the whole entry name (the module's, after the load's prefix
/// is stripped from the checkpoint's key); `*` matches any run of characters, dots included,
/// and every other character matches itself. `dim` counts from the end when negative, as in
/// torch (`-1` is the last dimension).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitRule {
    /// The glob: `*.q_proj.weight`, `layers.*.mlp.down_proj.weight`, `*`.
    pub pattern: String,
    /// The dimension the matching entries are split along (0: rows of a row-major matrix, a
    /// column-parallel linear layer's weight; 1: its columns, a row-parallel layer's).
    pub dim: i64,
}

impl SplitRule {
    /// A rule splitting the entries that match `pattern` along `dim`.
    pub fn new(pattern: impl Into<String>, dim: i64) -> SplitRule {
        SplitRule {
            pattern: pattern.into(),
            dim,
        }
    }
}

/// One rank's share of a tensor-parallel model ([`LoadOptions::tensor_parallel`]): an entry
/// that matches a rule (the first that matches wins) receives
/// `torch.chunk(t, world, rule.dim)[rank]` of the checkpoint's tensor `t`, and must be
/// declared with that shape (the local shape); an entry that matches no rule is replicated,
/// loaded whole.
///
/// torch.chunk's sizes: chunks of `ceil(n / world)` along the dimension, the last one smaller
/// when `world` does not divide `n`, and fewer than `world` chunks when the rounding leaves
/// nothing for the last ranks (`n = 5, world = 4` gives 2, 2, 1): a rank without a chunk is a
/// size mismatch. The share is taken with [`Checkpoint::slice`](crate::Checkpoint::slice):
/// a view of the file for single-file checkpoints, served from the one covering chunk of a
/// distributed checkpoint's tensor (or a copy of only the share when it spans chunks).
///
/// ```
/// use mmckpt::{SplitRule, TensorParallel};
///
/// let tp = TensorParallel::new(1, 2, vec![
///     SplitRule::new("*.q_proj.weight", 0), // column-parallel: rows of the weight
///     SplitRule::new("*.o_proj.weight", 1), // row-parallel: columns of the weight
/// ]);
/// assert!(tp.validate().is_ok());
/// assert_eq!(tp.rule_for("layers.0.q_proj.weight").map(|r| r.dim), Some(0));
/// assert!(tp.rule_for("layers.0.q_proj.bias").is_none()); // replicated
/// ```
///
/// [`LoadOptions::tensor_parallel`]: crate::LoadOptions::tensor_parallel
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorParallel {
    /// This process's rank, `0 <= rank < world`.
    pub rank: usize,
    /// How many ranks share the model (at least 1).
    pub world: usize,
    /// Split rules, tried in order.
    pub rules: Vec<SplitRule>,
}

/// Where a rank's share lies along the split dimension.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Share {
    /// `narrow(dim, start, length)` of the whole tensor (`dim` wrapped to be non-negative).
    Slice { dim: usize, start: i64, length: i64 },
    /// torch.chunk gives only `chunks` chunks, none for this rank.
    None { dim: usize, chunks: u64 },
}

impl TensorParallel {
    /// Rank `rank` of `world`, with `rules`.
    pub fn new(rank: usize, world: usize, rules: Vec<SplitRule>) -> TensorParallel {
        TensorParallel { rank, world, rules }
    }

    /// Refuses a world of 0, a rank outside `0..world` and an empty pattern
    /// (`InvalidArgument`, naming them). A rule's dimension is checked against each tensor it
    /// matches, when loading.
    pub fn validate(&self) -> Result<()> {
        if self.world == 0 {
            return Err(Error::invalid_argument(
                "tensor-parallel world size is 0; it must be at least 1",
            ));
        }
        if self.rank >= self.world {
            return Err(Error::invalid_argument(format!(
                "tensor-parallel rank {} is out of range for world size {} (ranks are 0 to {})",
                self.rank,
                self.world,
                self.world - 1
            )));
        }
        if let Some(i) = self.rules.iter().position(|r| r.pattern.is_empty()) {
            return Err(Error::invalid_argument(format!(
                "tensor-parallel split rule {i} has an empty pattern"
            )));
        }
        Ok(())
    }

    /// The first rule whose pattern matches `name`, or `None` (the entry is replicated).
    pub fn rule_for(&self, name: &str) -> Option<&SplitRule> {
        self.rules.iter().find(|r| glob_matches(&r.pattern, name))
    }

    /// The shape entry `name` has on this rank when the checkpoint's tensor has `shape`: the
    /// shape of `torch.chunk(t, world, dim)[rank]` for an entry a rule splits, `shape` itself
    /// for a replicated one, and `None` when torch.chunk gives this rank no chunk. What to
    /// declare a module's entries with (a module mirroring a checkpoint's table, for one
    /// rank). A rule's `dim` out of range for `shape` is `InvalidArgument`.
    ///
    /// ```
    /// use mmckpt::{SplitRule, TensorParallel};
    ///
    /// let tp = TensorParallel::new(3, 4, vec![SplitRule::new("*.weight", 1)]);
    /// assert_eq!(tp.local_shape("fc.weight", &[6, 10])?, Some(vec![6, 1])); // 3, 3, 3, 1
    /// assert_eq!(tp.local_shape("fc.bias", &[6])?, Some(vec![6]));
    /// assert_eq!(tp.local_shape("fc.weight", &[6, 5])?, None); // 2, 2, 1: no fourth chunk
    /// # Ok::<(), mmckpt::Error>(())
    /// ```
    pub fn local_shape(&self, name: &str, shape: &[i64]) -> Result<Option<Vec<i64>>> {
        let Some(rule) = self.rule_for(name) else {
            return Ok(Some(shape.to_vec()));
        };
        Ok(match self.share(name, rule, shape)? {
            Share::Slice { dim, length, .. } => {
                let mut local = shape.to_vec();
                local[dim] = length;
                Some(local)
            }
            Share::None { .. } => None,
        })
    }

    /// This rank's share of a tensor of `shape` split along `dim` by torch.chunk; a `dim` out
    /// of range is `InvalidArgument` naming the entry and the rule.
    pub(crate) fn share(&self, name: &str, rule: &SplitRule, shape: &[i64]) -> Result<Share> {
        let ndim = shape.len() as i64;
        let dim = rule.dim;
        if ndim == 0 || dim < -ndim || dim >= ndim {
            let range = if ndim == 0 {
                "it is 0-dimensional: torch.chunk needs at least 1 dimension".to_string()
            } else {
                format!(
                    "expected to be in range of [{}, {}] for its {ndim} dimensions",
                    -ndim,
                    ndim - 1
                )
            };
            return Err(Error::invalid_argument(format!(
                "tensor-parallel split rule '{}' (dim {dim}) matches entry '{name}', whose \
                 checkpoint tensor has shape {}: dimension {dim} is out of range ({range})",
                rule.pattern,
                super::report::torch_size(shape),
            )));
        }
        let dim = if dim < 0 { dim + ndim } else { dim } as usize;
        Ok(chunk_share(
            shape[dim],
            self.world as u64,
            self.rank as u64,
            dim,
        ))
    }
}

/// `torch.chunk(t, world, dim)[rank]` along a dimension of size `n`, as ATen's `chunk` does:
/// `split(ceil(n / world))`, except that a dimension of size 0 gives `world` empty chunks.
fn chunk_share(n: i64, world: u64, rank: u64, dim: usize) -> Share {
    if n == 0 {
        return Share::Slice {
            dim,
            start: 0,
            length: 0,
        };
    }
    let n = n as u64;
    let split = n.div_ceil(world);
    let chunks = n.div_ceil(split);
    if rank >= chunks {
        return Share::None { dim, chunks };
    }
    let start = rank * split;
    let length = split.min(n - start);
    Share::Slice {
        dim,
        start: start as i64,
        length: length as i64,
    }
}

/// `pattern` matches all of `text`, `*` standing for any run of characters (bytes: patterns
/// and names are UTF-8, and `*` never splits a character because the literal parts around it
/// are whole characters). Iterative, backtracking only to the last `*`: O(len × len) at worst.
pub(crate) fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // The position after the last `*` seen, and where in `text` it started matching.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            pi += 1;
            star = Some((pi, ti));
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((after, from)) = star {
            pi = after;
            ti = from + 1;
            star = Some((after, from + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        assert!(glob_matches(
            "*.q_proj.weight",
            "layers.0.attn.q_proj.weight"
        ));
        assert!(!glob_matches(
            "*.q_proj.weight",
            "layers.0.attn.q_proj.bias"
        ));
        assert!(!glob_matches("*.q_proj.weight", "q_proj.weight"));
        assert!(glob_matches("*q_proj.weight", "q_proj.weight"));
        assert!(glob_matches("*", ""));
        assert!(glob_matches("*", "anything.at.all"));
        assert!(glob_matches("layers.*.w", "layers.1.2.w"));
        assert!(!glob_matches("layers.*.w", "layers.1.2.wx"));
        assert!(glob_matches("a*b*c", "aXbYbZc"));
        assert!(!glob_matches("a*b*c", "aXbYbZ"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(glob_matches("**x", "x"));
        // A pathological pattern stays quadratic, not exponential.
        let name = "a".repeat(4000);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!glob_matches(&pattern, &name));
    }

    #[test]
    fn shares_follow_torch_chunk() {
        // torch.chunk(arange(n), world): sizes of every chunk.
        let sizes = |n: i64, world: u64| -> Vec<Option<(i64, i64)>> {
            (0..world)
                .map(|rank| match chunk_share(n, world, rank, 0) {
                    Share::Slice { start, length, .. } => Some((start, length)),
                    Share::None { .. } => None,
                })
                .collect()
        };
        assert_eq!(sizes(8, 2), [Some((0, 4)), Some((4, 4))]);
        assert_eq!(sizes(7, 2), [Some((0, 4)), Some((4, 3))]);
        assert_eq!(
            sizes(5, 4),
            [Some((0, 2)), Some((2, 2)), Some((4, 1)), None]
        );
        assert_eq!(sizes(1, 3), [Some((0, 1)), None, None]);
        assert_eq!(sizes(0, 3), [Some((0, 0)); 3]);
        assert_eq!(sizes(3, 1), [Some((0, 3))]);
        assert_eq!(chunk_share(5, 4, 3, 1), Share::None { dim: 1, chunks: 3 });
    }

    #[test]
    fn options_are_checked() {
        let ok = TensorParallel::new(1, 2, vec![SplitRule::new("*", 0)]);
        assert!(ok.validate().is_ok());
        let err = TensorParallel::new(0, 0, vec![]).validate().unwrap_err();
        assert!(err.message.contains("world size is 0"), "{}", err.message);
        let err = TensorParallel::new(2, 2, vec![]).validate().unwrap_err();
        assert!(err.message.contains("rank 2"), "{}", err.message);
        let err = TensorParallel::new(0, 2, vec![SplitRule::new("", 0)])
            .validate()
            .unwrap_err();
        assert!(err.message.contains("rule 0"), "{}", err.message);
        let rule = SplitRule::new("*.w", 2);
        let err = ok.share("l.w", &rule, &[4, 4]).unwrap_err();
        assert!(
            err.message.contains("'*.w' (dim 2)") && err.message.contains("[-2, 1]"),
            "{}",
            err.message
        );
        assert!(ok.share("s", &rule, &[]).is_err());
        assert_eq!(
            ok.share("l.w", &SplitRule::new("*", -1), &[4, 6]).unwrap(),
            Share::Slice {
                dim: 1,
                start: 3,
                length: 3
            }
        );
    }
}
