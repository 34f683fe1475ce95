//! Non-tensor values by dotted path: `epoch`, `config.hidden_size`,
//! `optimizer.param_groups.0.lr`, read without Python.
//!
//! Paths name values exactly as the tensor table names tensors (both name them with
//! [`crate::tree`]): dict keys as written (int keys in decimal), list / tuple / set indices in
//! decimal, opaque objects' attribute names from their BUILD state, joined with `.`, relative to
//! the checkpoint's selected root. The empty path is the root itself.
//!
//! Dict keys may themselves contain dots (a state dict's `fc.weight`), so a path is matched
//! against the tree, not split blindly: the first value in walk order (children in their own
//! order, depth first) whose full name equals the path wins, as the tensor table's first entry
//! of a name does. Every step of a lookup consumes at least one byte of the path, so shared
//! values and cycles cannot make it loop, and the work is bounded by [`MAX_LOOKUP_STEPS`].
//!
//! Tensors are leaves here (kind [`ValueKind::Tensor`]); their descriptions are in the table
//! under the same name.

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::pickle::{Arena, NodeId, Value};
use crate::tree::{self, Walk, WalkBounds};
use std::borrow::Cow;

pub(crate) use crate::checkpoint::ValueLimits;
pub(crate) use crate::tree::{kind_of, ValueKind};

/// Bytes of a big integer that [`ValueRef::decimal`] renders: like CPython's default
/// `sys.int_info.str_digits_check_threshold` (4300 digits), since the conversion is quadratic.
pub const MAX_DECIMAL_BYTES: usize = 1785;

/// One value of a checkpoint's tree (a non-tensor value, a container, or a tensor as a leaf),
/// found by its path ([`Checkpoint::value`]) or listed ([`Checkpoint::value_leaves`]). Borrows
/// the checkpoint.
///
/// ```
/// use mmckpt::{Checkpoint, OpenOptions, ValueKind};
///
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nested.pt");
/// let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
/// let epoch = ckpt.value("epoch")?;
/// assert_eq!(epoch.kind(), ValueKind::Int);
/// assert_eq!(epoch.as_i64()?, 3);
/// assert_eq!(ckpt.value("lr")?.as_f64()?, 0.001);
/// assert_eq!(ckpt.value("args.hidden")?.as_i64()?, 16);
/// assert_eq!(ckpt.value("model")?.kind(), ValueKind::Dict);
/// # Ok::<(), mmckpt::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ValueRef<'a> {
    arena: &'a Arena,
    node: NodeId,
    path: String,
}

/// Finds the value at `path` below `root` (the empty path is `root` itself); see
/// [`tree::lookup`].
pub(crate) fn lookup<'a>(arena: &'a Arena, root: NodeId, path: &str) -> Result<ValueRef<'a>> {
    Ok(ValueRef {
        arena,
        node: tree::lookup(arena, root, path)?,
        path: path.to_string(),
    })
}

/// [`lookup`] below the checkpoint's selected root.
pub(crate) fn value<'a>(ckpt: &'a Checkpoint, path: &str) -> Result<ValueRef<'a>> {
    let (arena, root) = ckpt.tree()?;
    lookup(arena, root, path)
}

impl Checkpoint {
    /// The value at a dotted `path` below the selected root (`epoch`, `args.hidden`,
    /// `optimizer.param_groups.0.lr`; the empty path is the root). Paths name values as the
    /// tensor table names tensors, and a dict key may itself contain dots: the first value in
    /// walk order whose full name equals `path` wins. `NotFound` names the part that matched.
    pub fn value(&self, path: &str) -> Result<ValueRef<'_>> {
        value(self, path)
    }

    /// Every non-tensor leaf below the selected root, in walk order, collected. See
    /// [`Checkpoint::for_each_value_leaf`] for the order, the names and the bounds.
    ///
    /// A value tree that cannot be read (a plain state dict's pickle, read for its values on
    /// first use, changed in the file since the open) lists nothing and is marked truncated;
    /// [`Checkpoint::value`] says why.
    pub fn value_leaves(&self, limits: &ValueLimits) -> Leaves<'_> {
        match self.tree() {
            Ok((arena, root)) => leaves(arena, root, limits),
            Err(_) => Leaves {
                values: Vec::new(),
                truncated: true,
            },
        }
    }

    /// Calls `f` with every leaf below the selected root that is not a tensor (None, bool,
    /// int, float, complex, str, bytes, global, other), named as the tensor table names
    /// tensors, in the table's walk order, one at a time (nothing is collected). Empty
    /// containers are not leaves; a value that contains itself is not entered again.
    ///
    /// Returns whether a bound of `limits` stopped the listing early (leaves, steps, name
    /// bytes; a container nested too deep is skipped): a truncated listing, not an error. A
    /// value tree that cannot be read (see [`Checkpoint::value_leaves`]) calls `f` for nothing
    /// and returns true.
    /// Stops at the first error of `f`.
    ///
    /// ```
    /// use mmckpt::{Checkpoint, OpenOptions, ValueLimits};
    ///
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/nested.pt");
    /// let ckpt = Checkpoint::open(path, &OpenOptions::default())?;
    /// let mut names = Vec::new();
    /// let truncated = ckpt.for_each_value_leaf(&ValueLimits::default(), |leaf| {
    ///     names.push(leaf.path().to_string());
    ///     Ok::<(), mmckpt::Error>(())
    /// })?;
    /// assert!(!truncated && names.iter().any(|n| n == "epoch"));
    /// # Ok::<(), mmckpt::Error>(())
    /// ```
    pub fn for_each_value_leaf<E>(
        &self,
        limits: &ValueLimits,
        f: impl FnMut(ValueRef<'_>) -> std::result::Result<(), E>,
    ) -> std::result::Result<bool, E> {
        match self.tree() {
            Ok((arena, root)) => for_each_leaf(arena, root, limits, f),
            Err(_) => Ok(true),
        }
    }
}

impl<'a> ValueRef<'a> {
    /// The node in the checkpoint's arena.
    #[cfg(feature = "fuzzing")]
    pub(crate) fn node(&self) -> NodeId {
        self.node
    }
    /// The path it was found by (or, for walked leaves, its name).
    pub fn path(&self) -> &str {
        &self.path
    }
    /// What the value is.
    pub fn kind(&self) -> ValueKind {
        kind_of(self.arena, self.node)
    }
    pub(crate) fn raw(&self) -> &'a Value {
        self.arena.get(self.node)
    }

    fn mismatch(&self, wanted: &str) -> Error {
        Error::invalid_argument(format!(
            "value '{}' is {}, not {wanted}",
            self.path,
            self.kind().with_article()
        ))
    }

    /// A `bool`.
    pub fn as_bool(&self) -> Result<bool> {
        match self.raw() {
            Value::Bool(b) => Ok(*b),
            _ => Err(self.mismatch("a bool")),
        }
    }

    /// An int that fits in i64; a bool is 0 or 1 (Python's bool is an int). A bigger int is a
    /// limit error (its decimal text is [`decimal`](Self::decimal)).
    pub fn as_i64(&self) -> Result<i64> {
        match self.raw() {
            Value::Int(i) => Ok(*i),
            Value::Bool(b) => Ok(*b as i64),
            Value::BigInt(b) => Err(Error::limit(format!(
                "value '{}' is an int of {} bits, which does not fit in int64; read its decimal \
                 text instead",
                self.path,
                b.len() * 8
            ))),
            _ => Err(self.mismatch("an int")),
        }
    }

    /// A float, or an int / bool converted as Python's `float()` does (round to nearest even;
    /// an int too large for a double is a limit error, as Python's OverflowError).
    pub fn as_f64(&self) -> Result<f64> {
        match self.raw() {
            Value::Float(f) => Ok(*f),
            Value::Int(i) => Ok(*i as f64),
            Value::Bool(b) => Ok(*b as i64 as f64),
            Value::BigInt(_) => {
                let text = self.decimal()?;
                match text.parse::<f64>() {
                    Ok(f) if f.is_finite() => Ok(f),
                    _ => Err(Error::limit(format!(
                        "value '{}' is an int too large to convert to a double",
                        self.path
                    ))),
                }
            }
            _ => Err(self.mismatch("a float")),
        }
    }

    /// A complex as (real, imag), or a real number as [`as_f64`](Self::as_f64) with imag 0.
    pub fn as_complex(&self) -> Result<(f64, f64)> {
        match self.raw() {
            Value::Complex(re, im) => Ok((*re, *im)),
            Value::Float(_) | Value::Int(_) | Value::Bool(_) | Value::BigInt(_) => {
                Ok((self.as_f64()?, 0.0))
            }
            _ => Err(self.mismatch("a complex")),
        }
    }

    /// A `str`.
    pub fn as_str(&self) -> Result<&'a str> {
        match self.raw() {
            Value::Str(s) => Ok(self.arena.str(*s)),
            _ => Err(self.mismatch("a str")),
        }
    }

    /// A `bytes` or `bytearray`.
    pub fn as_bytes(&self) -> Result<&'a [u8]> {
        match self.raw() {
            Value::Bytes(b) | Value::ByteArray(b) => Ok(b),
            _ => Err(self.mismatch("bytes")),
        }
    }

    /// The decimal text of an int (any size; bools are not ints here).
    pub fn decimal(&self) -> Result<String> {
        match self.raw() {
            Value::Int(i) => Ok(i.to_string()),
            Value::BigInt(b) => {
                if b.len() > MAX_DECIMAL_BYTES {
                    return Err(Error::limit(format!(
                        "value '{}' is an int of {} bytes; at most {MAX_DECIMAL_BYTES} bytes \
                         (about 4300 digits, Python's own default limit) are converted to decimal",
                        self.path,
                        b.len()
                    )));
                }
                Ok(le_twos_complement_to_decimal(b))
            }
            _ => Err(self.mismatch("an int")),
        }
    }

    /// The text C callers read with `mmckpt_checkpoint_value_string`: a str's UTF-8 bytes, the
    /// raw bytes of bytes / bytearray, or the decimal digits of an int of any size.
    pub fn text(&self) -> Result<Cow<'a, [u8]>> {
        match self.raw() {
            Value::Str(s) => Ok(Cow::Borrowed(self.arena.str(*s).as_bytes())),
            Value::Bytes(b) | Value::ByteArray(b) => Ok(Cow::Borrowed(b)),
            Value::Int(_) | Value::BigInt(_) => Ok(Cow::Owned(self.decimal()?.into_bytes())),
            _ => Err(self.mismatch("a str, bytes or int")),
        }
    }

    /// The dotted class name of an object (`argparse.Namespace`), or the name a global refers
    /// to (`torch.float32`).
    pub fn class_name(&self) -> Result<String> {
        let global = |id: NodeId| {
            self.arena
                .global_name(id)
                .map(|(module, name)| format!("{module}.{name}"))
        };
        match (self.kind(), self.raw()) {
            (ValueKind::Global, _) => Ok(global(self.node).unwrap_or_default()),
            (ValueKind::Object, Value::Object { callable, args, .. }) => {
                // Protocol 0/1 style `copyreg._reconstructor(cls, base, state)`: the class is
                // the first argument.
                if self.arena.global_name(*callable) == Some(("copyreg", "_reconstructor"))
                    || self.arena.global_name(*callable) == Some(("copy_reg", "_reconstructor"))
                {
                    if let Some(name) = self
                        .arena
                        .as_seq(*args)
                        .and_then(|a| a.first().copied())
                        .and_then(global)
                    {
                        return Ok(name);
                    }
                }
                global(*callable).ok_or_else(|| {
                    Error::unsupported(format!(
                        "object '{}' was built by a callable that is not a named global",
                        self.path
                    ))
                })
            }
            _ => Err(self.mismatch("an object or a global")),
        }
    }

    /// Children of a container in walk order with their name segments; empty for leaves.
    pub fn children(&self) -> Vec<(String, ValueRef<'a>)> {
        tree::named_children(self.arena, self.node)
            .unwrap_or_default()
            .into_iter()
            .map(|(segment, node)| {
                let path = join(&self.path, &segment);
                (
                    segment,
                    ValueRef {
                        arena: self.arena,
                        node,
                        path,
                    },
                )
            })
            .collect()
    }

    /// Number of children (0 for leaves, tensors included).
    pub fn child_count(&self) -> usize {
        tree::child_count(self.arena, self.node)
    }

    /// The name segment of child `index`, as it appears in paths.
    pub fn child_key(&self, index: usize) -> Result<String> {
        let children = tree::named_children(self.arena, self.node).unwrap_or_default();
        let count = children.len();
        children
            .into_iter()
            .nth(index)
            .map(|(segment, _)| segment)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "value '{}' ({}) has {count} children; index {index} is out of range",
                    self.path,
                    self.kind().with_article()
                ))
            })
    }

    /// The value at `path` below this one.
    pub fn get(&self, path: &str) -> Result<ValueRef<'a>> {
        let mut found = lookup(self.arena, self.node, path)?;
        found.path = join(&self.path, path);
        Ok(found)
    }
}

fn join(base: &str, segment: &str) -> String {
    if base.is_empty() {
        segment.to_string()
    } else {
        format!("{base}.{segment}")
    }
}

pub(crate) use crate::pickle::repr::le_twos_complement_to_decimal;

/// Every non-tensor leaf reachable from a root, in walk order
/// ([`Checkpoint::value_leaves`]).
#[derive(Clone, Debug)]
pub struct Leaves<'a> {
    /// The leaves, each named by its path.
    pub values: Vec<ValueRef<'a>>,
    /// True when a bound stopped the walk early (or kept it out of a too-deep container).
    pub truncated: bool,
}

/// Lists every leaf that is not a tensor reachable from `root`: [`for_each_leaf`], collected.
pub(crate) fn leaves<'a>(arena: &'a Arena, root: NodeId, limits: &ValueLimits) -> Leaves<'a> {
    let mut values = Vec::new();
    let truncated = for_each_leaf(arena, root, limits, |leaf| {
        values.push(leaf);
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    Leaves { values, truncated }
}

/// Calls `f` with every leaf that is not a tensor (None, bool, int, float, complex, str, bytes,
/// global, other) reachable from `root`, named as the tensor table names tensors, in the
/// table's walk order. Empty containers are not leaves. A value that contains itself is not
/// entered again. Returns whether a bound stopped the walk (`Ok(true)`: truncated).
///
/// The names made are bounded by `limits.max_name_bytes`: every segment walked and every
/// listed leaf's full path count, so a long key under a sub-object shared by many paths cannot
/// make the listing (or what a caller writes from it) grow past that budget.
pub(crate) fn for_each_leaf<'a, E>(
    arena: &'a Arena,
    root: NodeId,
    limits: &ValueLimits,
    mut f: impl FnMut(ValueRef<'a>) -> std::result::Result<(), E>,
) -> std::result::Result<bool, E> {
    let kind = kind_of(arena, root);
    if !kind.is_container() {
        if kind != ValueKind::Tensor {
            f(ValueRef {
                arena,
                node: root,
                path: String::new(),
            })?;
        }
        return Ok(false);
    }
    let bounds = WalkBounds {
        max_depth: limits.max_depth,
        max_steps: limits.max_steps,
        ..WalkBounds::default()
    };
    let mut walk = Walk::new(arena, root, bounds);
    let (mut listed, mut name_bytes) = (0usize, 0usize);
    let mut truncated = false;
    loop {
        let entry = match walk.next() {
            Ok(Some(entry)) => entry,
            Ok(None) => break,
            Err(_) => {
                truncated = true;
                break;
            }
        };
        name_bytes = name_bytes.saturating_add(entry.raw_segment_len);
        let kind = kind_of(arena, entry.node);
        if kind == ValueKind::Tensor {
            continue;
        }
        if !kind.is_container() {
            name_bytes = name_bytes.saturating_add(entry.name.len());
            if listed >= limits.max_values || name_bytes > limits.max_name_bytes {
                truncated = true;
                break;
            }
            listed += 1;
            f(ValueRef {
                arena,
                node: entry.node,
                path: entry.name.to_string(),
            })?;
            continue;
        }
        if name_bytes > limits.max_name_bytes {
            truncated = true;
            break;
        }
        if walk.enter().is_err() {
            truncated = true; // too deep: listed up to here, not entered
        }
    }
    Ok(truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_of_twos_complement() {
        assert_eq!(le_twos_complement_to_decimal(&[]), "0");
        assert_eq!(le_twos_complement_to_decimal(&[0]), "0");
        assert_eq!(le_twos_complement_to_decimal(&[0xff]), "-1");
        assert_eq!(le_twos_complement_to_decimal(&[0x80]), "-128");
        // 2**70 as LONG1 writes it.
        let mut b = vec![0u8; 8];
        b.extend_from_slice(&[0x40, 0]);
        assert_eq!(le_twos_complement_to_decimal(&b), "1180591620717411303424");
        // -(2**70)
        let mut b = vec![0u8; 8];
        b.extend_from_slice(&[0xc0, 0xff]);
        assert_eq!(le_twos_complement_to_decimal(&b), "-1180591620717411303424");
        // 10**18 * 10**9 + 7: crosses the 10^9 group boundary with inner zero groups.
        let v: u128 = 1_000_000_000_000_000_000_000_000_007;
        let bytes = v.to_le_bytes();
        assert_eq!(le_twos_complement_to_decimal(&bytes), v.to_string());
        let n: i128 = -170141183460469231731687303715884105728;
        assert_eq!(
            le_twos_complement_to_decimal(&n.to_le_bytes()),
            n.to_string()
        );
    }

    fn tree() -> (Arena, NodeId) {
        let mut a = Arena::new();
        let k_fc = a.push_str("fc.weight");
        let v_fc = a.push(Value::Int(1));
        let k_fc2 = a.push_str("fc");
        let inner_k = a.push_str("weight");
        let inner_v = a.push(Value::Int(2));
        let inner = a.push(Value::Dict {
            items: vec![(inner_k, inner_v)],
            state: None,
            class: crate::pickle::DictClass::Dict,
        });
        let k_self = a.push_str("me");
        let root = a.push(Value::Dict {
            items: vec![(k_fc, v_fc), (k_fc2, inner)],
            state: None,
            class: crate::pickle::DictClass::Dict,
        });
        // A cycle: root["me"] = root.
        if let Value::Dict { items, .. } = a.get_mut(root) {
            items.push((k_self, root));
        }
        (a, root)
    }

    #[test]
    fn dotted_keys_first_match_wins_and_cycles_are_bounded() {
        let (a, root) = tree();
        assert_eq!(lookup(&a, root, "fc.weight").unwrap().as_i64().unwrap(), 1);
        assert_eq!(
            lookup(&a, root, "me.me.me.fc.weight")
                .unwrap()
                .as_i64()
                .unwrap(),
            1
        );
        assert_eq!(lookup(&a, root, "").unwrap().kind(), ValueKind::Dict);
        let e = lookup(&a, root, "fc.bias").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::NotFound);
        assert!(e.message.contains("'fc'"), "{}", e.message);
        let e = lookup(&a, root, "fc.weight.x").unwrap_err();
        assert!(
            e.message.contains("is an int, which has no members"),
            "{}",
            e.message
        );
        let leaves = leaves(&a, root, &ValueLimits::default());
        let names: Vec<&str> = leaves.values.iter().map(|v| v.path()).collect();
        assert_eq!(names, ["fc.weight", "fc.weight"]);
        assert!(!leaves.truncated);
    }
}
