//! Non-tensor values by dotted path: `epoch`, `config.hidden_size`,
//! `optimizer.param_groups.0.lr`, read without Python.
//!
//! Paths name values exactly as the tensor table names tensors (see [`torch::children`] and
//! [`torch::ChildName::segment`]): dict keys as written (int keys in decimal), list / tuple / set
//! indices in decimal, opaque objects' attribute names from their BUILD state, joined with `.`,
//! relative to the checkpoint's selected root. The empty path is the root itself.
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
use crate::torch::{self, StorageId, StorageResolver};
use std::borrow::Cow;

/// Children examined by one lookup before it gives up with a limit error (a path through a huge
/// dict whose keys share long dotted prefixes could otherwise cost quadratic time).
pub const MAX_LOOKUP_STEPS: usize = 1 << 22;

/// Bytes of a big integer that [`ValueRef::decimal`] renders: like CPython's default
/// `sys.int_info.str_digits_check_threshold` (4300 digits), since the conversion is quadratic.
pub const MAX_DECIMAL_BYTES: usize = 1785;

/// What a value is. Python types are folded into a few kinds: `bytes` and `bytearray` are
/// [`Bytes`](ValueKind::Bytes), `set` and `frozenset` are [`Set`](ValueKind::Set), `dict` and
/// `OrderedDict` are [`Dict`](ValueKind::Dict).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    None,
    Bool,
    /// An int that fits in i64.
    Int,
    /// An int outside i64.
    BigInt,
    Float,
    Complex,
    /// A `str` (UTF-8).
    Str,
    Bytes,
    List,
    Tuple,
    Dict,
    Set,
    /// An instance of a class mmckpt does not interpret (`argparse.Namespace`, a dataclass):
    /// its children are the attributes its BUILD state set.
    Object,
    /// A tensor or Parameter: a leaf here, described by the tensor table.
    Tensor,
    /// A reference to a class or function (`torch.float32`), never resolved.
    Global,
    /// Anything else (a persistent id that is not a tensor's storage).
    Other,
}

impl ValueKind {
    /// Python's spelling: "none", "bool", "int", "bigint", "float", "complex", "str", "bytes",
    /// "list", "tuple", "dict", "set", "object", "tensor", "global", "other".
    pub fn name(self) -> &'static str {
        match self {
            ValueKind::None => "none",
            ValueKind::Bool => "bool",
            ValueKind::Int => "int",
            ValueKind::BigInt => "bigint",
            ValueKind::Float => "float",
            ValueKind::Complex => "complex",
            ValueKind::Str => "str",
            ValueKind::Bytes => "bytes",
            ValueKind::List => "list",
            ValueKind::Tuple => "tuple",
            ValueKind::Dict => "dict",
            ValueKind::Set => "set",
            ValueKind::Object => "object",
            ValueKind::Tensor => "tensor",
            ValueKind::Global => "global",
            ValueKind::Other => "other",
        }
    }

    /// The name with its article, for messages: "an int", "a str".
    pub fn with_article(self) -> String {
        let name = self.name();
        let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        };
        format!("{article} {name}")
    }

    /// Whether the kind can have children (a tensor cannot: it is a leaf).
    pub fn is_container(self) -> bool {
        matches!(
            self,
            ValueKind::List
                | ValueKind::Tuple
                | ValueKind::Dict
                | ValueKind::Set
                | ValueKind::Object
        )
    }
}

/// A resolver that resolves nothing: used to ask the torch layer whether a node is a tensor
/// rebuild call without touching storages.
struct NoStorages;

impl StorageResolver for NoStorages {
    fn resolve(&mut self, id: &StorageId<'_>) -> Result<(usize, u64)> {
        Err(Error::unsupported(format!(
            "storage '{}' is not resolved while reading values",
            id.key
        )))
    }
}

/// The kind of one node.
pub fn kind_of(arena: &Arena, node: NodeId) -> ValueKind {
    match arena.get(node) {
        Value::None => ValueKind::None,
        Value::Bool(_) => ValueKind::Bool,
        Value::Int(_) => ValueKind::Int,
        Value::BigInt(_) => ValueKind::BigInt,
        Value::Float(_) => ValueKind::Float,
        Value::Complex(..) => ValueKind::Complex,
        Value::Str(_) => ValueKind::Str,
        Value::Bytes(_) | Value::ByteArray(_) => ValueKind::Bytes,
        Value::List(_) => ValueKind::List,
        Value::Tuple(_) => ValueKind::Tuple,
        Value::Dict { .. } => ValueKind::Dict,
        Value::Set(_) | Value::FrozenSet(_) => ValueKind::Set,
        Value::Global { .. } => ValueKind::Global,
        Value::PersistentId(_) => ValueKind::Other,
        Value::Object { .. } => {
            if torch::interpret(arena, node, &mut NoStorages).is_some() {
                ValueKind::Tensor
            } else {
                ValueKind::Object
            }
        }
    }
}

/// Children of a node with their name segments as the tensor table writes them; `None` for
/// leaves (tensors included).
fn named_children(arena: &Arena, node: NodeId) -> Option<Vec<(String, NodeId)>> {
    named_children_upto(arena, node, torch::MAX_SEGMENT_LEN)
}

/// The children with their names cut after `max + 1` bytes (see `ChildName::segment_upto`):
/// a lookup only needs to know whether a key equals, or starts, the rest of its path, so huge
/// keys cost no more than the path is long.
fn named_children_upto(arena: &Arena, node: NodeId, max: usize) -> Option<Vec<(String, NodeId)>> {
    if !kind_of(arena, node).is_container() {
        return None;
    }
    let children = torch::children(arena, node)?;
    Some(
        children
            .into_iter()
            .map(|(name, child)| (sanitize(name.segment_upto(arena, max)), child))
            .collect(),
    )
}

/// The table writes a NUL inside a name as `\x00` (C strings); so do value names.
fn sanitize(segment: String) -> String {
    if segment.contains('\0') {
        segment.replace('\0', "\\x00")
    } else {
        segment
    }
}

/// One value of the tree, found by its path. Borrows the checkpoint's value tree.
#[derive(Clone, Debug)]
pub struct ValueRef<'a> {
    arena: &'a Arena,
    node: NodeId,
    path: String,
}

/// Finds the value at `path` below `root` (the empty path is `root` itself).
pub fn lookup<'a>(arena: &'a Arena, root: NodeId, path: &str) -> Result<ValueRef<'a>> {
    let found = |node| ValueRef {
        arena,
        node,
        path: path.to_string(),
    };
    if path.is_empty() {
        return Ok(found(root));
    }
    struct Frame {
        children: Vec<(String, NodeId)>,
        next: usize,
        /// Where the rest of the path starts for this node's children.
        offset: usize,
    }
    let Some(children) = named_children_upto(arena, root, path.len()) else {
        return Err(no_value(arena, path, root, 0));
    };
    let mut steps = children.len();
    // The deepest node reached, for the message when nothing matches.
    let mut deepest = (root, 0usize);
    let mut stack = vec![Frame {
        children,
        next: 0,
        offset: 0,
    }];
    while let Some(frame) = stack.last_mut() {
        let Some((segment, child)) = frame.children.get(frame.next) else {
            stack.pop();
            continue;
        };
        frame.next += 1;
        let child = *child;
        let rest = &path[frame.offset..];
        if rest == segment {
            return Ok(found(child));
        }
        let descends = rest.len() > segment.len()
            && rest.starts_with(segment.as_str())
            && rest.as_bytes()[segment.len()] == b'.';
        if !descends {
            continue;
        }
        let offset = frame.offset + segment.len() + 1;
        if offset > deepest.1 {
            deepest = (child, offset);
        }
        if let Some(grandchildren) = named_children_upto(arena, child, path.len() - offset) {
            steps = steps.saturating_add(grandchildren.len());
            if steps > MAX_LOOKUP_STEPS {
                return Err(Error::limit(format!(
                    "looking up value '{path}' examined more than {MAX_LOOKUP_STEPS} children"
                )));
            }
            stack.push(Frame {
                children: grandchildren,
                next: 0,
                offset,
            });
        }
    }
    Err(no_value(arena, path, deepest.0, deepest.1))
}

fn no_value(arena: &Arena, path: &str, node: NodeId, offset: usize) -> Error {
    let (at, rest) = if offset == 0 {
        ("the root".to_string(), path)
    } else {
        (format!("'{}'", &path[..offset - 1]), &path[offset..])
    };
    let kind = kind_of(arena, node);
    if kind.is_container() {
        Error::not_found(format!(
            "no value named '{path}': {at} ({}) has no member '{rest}'",
            kind.with_article()
        ))
    } else {
        Error::not_found(format!(
            "no value named '{path}': {at} is {}, which has no members",
            kind.with_article()
        ))
    }
}

/// [`lookup`] below the checkpoint's selected root.
pub fn value<'a>(ckpt: &'a Checkpoint, path: &str) -> Result<ValueRef<'a>> {
    lookup(ckpt.arena(), ckpt.root(), path)
}

impl<'a> ValueRef<'a> {
    /// The node in the checkpoint's arena.
    pub fn node(&self) -> NodeId {
        self.node
    }
    /// The path it was found by (or, for walked leaves, its name).
    pub fn path(&self) -> &str {
        &self.path
    }
    pub fn kind(&self) -> ValueKind {
        kind_of(self.arena, self.node)
    }
    pub fn raw(&self) -> &'a Value {
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
        named_children(self.arena, self.node)
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
        if self.kind().is_container() {
            torch::children(self.arena, self.node).map_or(0, |c| c.len())
        } else {
            0
        }
    }

    /// The name segment of child `index`, as it appears in paths.
    pub fn child_key(&self, index: usize) -> Result<String> {
        let children = named_children(self.arena, self.node).unwrap_or_default();
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

/// Decimal text of a little-endian two's-complement integer of any length.
pub fn le_twos_complement_to_decimal(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "0".to_string();
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut magnitude: Vec<u8> = bytes.to_vec();
    if negative {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in magnitude.iter_mut() {
            let (v, c) = (!*b).overflowing_add(carry as u8);
            *b = v;
            carry = c;
        }
    }
    // Big-endian u32 limbs, divided by 10^9 repeatedly.
    let mut limbs: Vec<u32> = magnitude
        .chunks(4)
        .rev()
        .map(|c| {
            let mut buf = [0u8; 4];
            buf[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(buf)
        })
        .collect();
    let mut groups: Vec<u32> = Vec::new();
    loop {
        while limbs.first() == Some(&0) {
            limbs.remove(0);
        }
        if limbs.is_empty() {
            break;
        }
        let mut rem: u64 = 0;
        for limb in limbs.iter_mut() {
            let cur = (rem << 32) | *limb as u64;
            *limb = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        groups.push(rem as u32);
    }
    let mut out = String::new();
    if negative {
        out.push('-');
    }
    match groups.split_last() {
        None => out.push('0'),
        Some((most, rest)) => {
            out.push_str(&most.to_string());
            for g in rest.iter().rev() {
                out.push_str(&format!("{g:09}"));
            }
        }
    }
    out
}

/// Bounds for [`leaves`].
#[derive(Clone, Debug)]
pub struct WalkLimits {
    /// Containers nested deeper than this are not entered (the walk is marked truncated).
    pub max_depth: usize,
    /// Leaves listed at most.
    pub max_values: usize,
    /// Children visited at most (shared sub-objects are visited once per path).
    pub max_steps: usize,
}

impl Default for WalkLimits {
    fn default() -> Self {
        WalkLimits {
            max_depth: crate::checkpoint::Limits::default().max_depth,
            max_values: 100_000,
            max_steps: 1 << 24,
        }
    }
}

/// Every non-tensor leaf reachable from a root, in walk order.
pub struct Leaves<'a> {
    pub values: Vec<ValueRef<'a>>,
    /// True when a bound stopped the walk early (or kept it out of a too-deep container).
    pub truncated: bool,
}

/// Lists every leaf that is not a tensor (None, bool, int, float, complex, str, bytes, global,
/// other) reachable from `root`, named as the tensor table names tensors, in the table's walk
/// order. Empty containers are not leaves. A value that contains itself is not entered again.
pub fn leaves<'a>(arena: &'a Arena, root: NodeId, limits: &WalkLimits) -> Leaves<'a> {
    let mut out = Leaves {
        values: Vec::new(),
        truncated: false,
    };
    let kind = kind_of(arena, root);
    if !kind.is_container() {
        if kind != ValueKind::Tensor {
            out.values.push(ValueRef {
                arena,
                node: root,
                path: String::new(),
            });
        }
        return out;
    }
    struct Frame {
        node: NodeId,
        children: Vec<(String, NodeId)>,
        next: usize,
        name_len: usize,
    }
    let mut on_path = vec![false; arena.len()];
    on_path[root as usize] = true;
    let mut stack = vec![Frame {
        node: root,
        children: named_children(arena, root).unwrap_or_default(),
        next: 0,
        name_len: 0,
    }];
    let mut name = String::new();
    let mut steps = 0usize;
    while let Some(frame) = stack.last_mut() {
        let Some((segment, child)) = frame.children.get(frame.next) else {
            on_path[frame.node as usize] = false;
            stack.pop();
            continue;
        };
        frame.next += 1;
        let child = *child;
        steps += 1;
        if steps > limits.max_steps {
            out.truncated = true;
            break;
        }
        if on_path[child as usize] {
            continue;
        }
        name.truncate(frame.name_len);
        if !name.is_empty() {
            name.push('.');
        }
        name.push_str(segment);
        let kind = kind_of(arena, child);
        if kind == ValueKind::Tensor {
            continue;
        }
        if !kind.is_container() {
            if out.values.len() >= limits.max_values {
                out.truncated = true;
                break;
            }
            out.values.push(ValueRef {
                arena,
                node: child,
                path: name.clone(),
            });
            continue;
        }
        if stack.len() >= limits.max_depth {
            out.truncated = true;
            continue;
        }
        on_path[child as usize] = true;
        stack.push(Frame {
            node: child,
            children: named_children(arena, child).unwrap_or_default(),
            next: 0,
            name_len: name.len(),
        });
    }
    out
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
        });
        let k_self = a.push_str("me");
        let root = a.push(Value::Dict {
            items: vec![(k_fc, v_fc), (k_fc2, inner)],
            state: None,
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
        let leaves = leaves(&a, root, &WalkLimits::default());
        let names: Vec<&str> = leaves.values.iter().map(|v| v.path()).collect();
        assert_eq!(names, ["fc.weight", "fc.weight"]);
        assert!(!leaves.truncated);
    }
}
