//! The value tree as named paths: the one place that says what a node's children are, what each
//! is called, and how the tree is walked. The tensor table, value lookup and value listing all
//! use it, so a value and a tensor at the same place always have the same name (a C contract:
//! values are "named as the tensor table names tensors").
//!
//! Names: dict keys as written (ints in decimal, floats as Python's `repr`, tuple keys as `(a, b)`
//! of their items spelled the same way), list /
//! tuple / set indices in decimal, opaque objects' attributes from their BUILD state, joined
//! with `.`; a NUL inside a segment is written `\x00` (C strings end at a NUL). Tensors (rebuild
//! calls, see [`crate::torch::is_tensor_call`]) are leaves.
//!
//! [`Walk`] is iterative (nothing input-controlled recurses), keeps one name buffer for the
//! whole walk (no allocation per node for string keys and indices), skips a node that contains
//! itself, and stops at a step budget and a depth bound; what a bound means (an error, a
//! truncated listing) is the caller's choice.

use crate::error::{Error, Result};
use crate::pickle::repr::{int_decimal, python_float_repr};
use crate::pickle::{Arena, NodeId, Value};
use crate::torch;
use std::borrow::Cow;

/// Nesting depth the default limits allow on the way to a tensor or value.
pub const DEFAULT_MAX_DEPTH: usize = 1000;

/// Children examined by one lookup before it gives up with a limit error (a path through a huge
/// dict whose keys share long dotted prefixes could otherwise cost quadratic time).
pub const MAX_LOOKUP_STEPS: usize = 1 << 22;

/// What a value is. Python types are folded into a few kinds: `bytes` and `bytearray` are
/// [`Bytes`](ValueKind::Bytes), `set` and `frozenset` are [`Set`](ValueKind::Set), `dict` and
/// `OrderedDict` are [`Dict`](ValueKind::Dict).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum ValueKind {
    /// `None`.
    None,
    /// `True` or `False`.
    Bool,
    /// An int that fits in i64.
    Int,
    /// An int outside i64.
    BigInt,
    /// A `float` (a double).
    Float,
    /// A `complex`.
    Complex,
    /// A `str` (UTF-8).
    Str,
    /// `bytes` or `bytearray`.
    Bytes,
    /// A `list`.
    List,
    /// A `tuple` (also `torch.Size`).
    Tuple,
    /// A `dict` or `OrderedDict`.
    Dict,
    /// A `set` or `frozenset`.
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
            if torch::is_tensor_call(arena, node) {
                ValueKind::Tensor
            } else {
                ValueKind::Object
            }
        }
    }
}

/// A segment as names carry it: a NUL (C could not see past it) is written `\x00`.
#[inline]
pub fn sanitize(segment: &str) -> Cow<'_, str> {
    if segment.contains('\0') {
        Cow::Owned(segment.replace('\0', "\\x00"))
    } else {
        Cow::Borrowed(segment)
    }
}

/// The children of a container with their (sanitized) name segments, in walk order; `None` for
/// leaves, tensors included.
pub fn named_children(arena: &Arena, node: NodeId) -> Option<Vec<(String, NodeId)>> {
    if !kind_of(arena, node).is_container() {
        return None;
    }
    let children = children(arena, node)?;
    Some(
        children
            .into_iter()
            .map(|(name, child)| {
                let segment = name.segment_upto(arena, MAX_SEGMENT_LEN);
                let segment = match sanitize(&segment) {
                    Cow::Borrowed(_) => segment,
                    Cow::Owned(clean) => clean,
                };
                (segment, child)
            })
            .collect(),
    )
}

/// Number of children of a container (0 for leaves, tensors included).
pub fn child_count(arena: &Arena, node: NodeId) -> usize {
    if kind_of(arena, node).is_container() {
        children(arena, node).map_or(0, |c| c.len())
    } else {
        0
    }
}

/// Which bound stopped a [`Walk`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Exceeded {
    /// More children visited than [`WalkBounds::max_steps`].
    Steps,
    /// A container deeper than [`WalkBounds::max_depth`] was to be entered.
    Depth,
}

/// The bounds and policy of one [`Walk`].
#[derive(Copy, Clone, Debug)]
pub struct WalkBounds {
    /// Containers on the path from the root (the root's children are at depth 1).
    pub max_depth: usize,
    /// Children visited (a shared sub-object is visited once per path to it).
    pub max_steps: usize,
    /// Skip a child that is one of its own ancestors. Off only for a walk that every step makes
    /// progress on by itself (a lookup consumes its path).
    pub skip_cycles: bool,
    /// Names longer than this are of no use to the caller: each segment is cut just past what
    /// would reach it (a lookup needs no name longer than its path).
    pub max_name_len: usize,
}

impl Default for WalkBounds {
    fn default() -> Self {
        WalkBounds {
            max_depth: DEFAULT_MAX_DEPTH,
            max_steps: usize::MAX,
            skip_cycles: true,
            max_name_len: usize::MAX,
        }
    }
}

struct Frame {
    node: NodeId,
    children: Vec<(ChildName, NodeId)>,
    next: usize,
    /// Length of this node's own name in the buffer.
    name_len: usize,
}

/// A depth-first walk in the tree's own order (children in pickle order), naming each node it
/// passes. The caller decides, for each node yielded, whether to [`enter`](Walk::enter) it.
pub struct Walk<'a> {
    arena: &'a Arena,
    bounds: WalkBounds,
    stack: Vec<Frame>,
    /// Child lists of popped frames, kept for reuse.
    spare: Vec<Vec<(ChildName, NodeId)>>,
    /// `on_path[node]`: the node is an ancestor of the current one (empty: cycles followed).
    on_path: Vec<bool>,
    name: String,
    steps: usize,
    /// The node last yielded (what [`Walk::enter`] enters).
    last: Option<NodeId>,
}

/// One node of a walk, as [`Walk::next`] yields it.
pub struct Entry<'w> {
    /// The full name (segments joined by `.`, NULs written `\x00`).
    pub name: &'w str,
    pub node: NodeId,
    /// Containers from the root to this node's parent, inclusive (the root's children: 1).
    #[cfg_attr(not(test), allow(dead_code))] // no user needs it yet; the walk's tests check it
    pub depth: usize,
    /// Where the node's own segment starts in `name` (after its parent's name and the dot).
    pub segment_start: usize,
    /// Bytes of the segment as the key spelled it, before NULs were escaped: more than
    /// [`MAX_SEGMENT_LEN`] means the key was cut.
    pub raw_segment_len: usize,
}

impl<'w> Entry<'w> {
    /// The parent's name followed by the dot (empty for the root's children).
    pub fn parent_prefix(&self) -> &'w str {
        &self.name[..self.segment_start]
    }
    /// The node's own segment.
    pub fn segment(&self) -> &'w str {
        &self.name[self.segment_start..]
    }
}

impl<'a> Walk<'a> {
    /// A walk below `root`, which is entered when it is a container. Nothing is allocated for
    /// the cycle check unless `bounds.skip_cycles`.
    pub fn new(arena: &'a Arena, root: NodeId, bounds: WalkBounds) -> Walk<'a> {
        let mut walk = Walk {
            arena,
            bounds,
            stack: Vec::new(),
            spare: Vec::new(),
            on_path: if bounds.skip_cycles {
                vec![false; arena.len()]
            } else {
                Vec::new()
            },
            name: String::new(),
            steps: 0,
            last: None,
        };
        // The root is entered whatever the depth bound (it has no name to report).
        walk.push(root);
        walk
    }

    /// Children the root has (0 for a leaf root).
    pub fn root_children(&self) -> usize {
        self.stack.first().map_or(0, |f| f.children.len())
    }

    /// The name of the node last yielded.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next node in walk order, or `None` when the walk is over; `Err` when it visited more
    /// than `max_steps` children (the walk is over then too).
    #[allow(clippy::should_implement_trait)] // yields a borrow of the walk's name buffer
    #[inline]
    pub fn next(&mut self) -> std::result::Result<Option<Entry<'_>>, Exceeded> {
        self.last = None;
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(&(child_name, child)) = frame.children.get(frame.next) else {
                let done = self.stack.pop().expect("a frame");
                if let Some(on_path) = self.on_path.get_mut(done.node as usize) {
                    *on_path = false;
                }
                self.spare.push(done.children);
                continue;
            };
            frame.next += 1;
            let name_len = frame.name_len;
            self.steps += 1;
            if self.steps > self.bounds.max_steps {
                self.stack.clear();
                return Err(Exceeded::Steps);
            }
            if self.on_path.get(child as usize) == Some(&true) {
                continue; // a cycle: the object contains itself
            }
            self.name.truncate(name_len);
            if !self.name.is_empty() {
                self.name.push('.');
            }
            let segment_start = self.name.len();
            let cap = self
                .bounds
                .max_name_len
                .saturating_sub(segment_start)
                .min(MAX_SEGMENT_LEN);
            child_name.push_segment_upto(self.arena, cap, &mut self.name);
            let raw_segment_len = self.name.len() - segment_start;
            if self.name[segment_start..].contains('\0') {
                let segment = sanitize(&self.name[segment_start..]).into_owned();
                self.name.truncate(segment_start);
                self.name.push_str(&segment);
            }
            self.last = Some(child);
            return Ok(Some(Entry {
                name: &self.name,
                node: child,
                depth: self.stack.len(),
                segment_start,
                raw_segment_len,
            }));
        }
    }

    /// Walks into the node last yielded when it is a container (a tensor or other leaf is not
    /// entered): returns how many children it has (0 for a leaf), or `Err` when entering would
    /// pass `max_depth` (the walk then goes on with the node's next sibling).
    pub fn enter(&mut self) -> std::result::Result<usize, Exceeded> {
        let Some(node) = self.last.take() else {
            return Ok(0);
        };
        if torch::is_tensor_call(self.arena, node) || !is_container_value(self.arena.get(node)) {
            return Ok(0);
        }
        if self.stack.len() >= self.bounds.max_depth {
            return Err(Exceeded::Depth);
        }
        self.push(node);
        Ok(self.stack.last().map_or(0, |f| f.children.len()))
    }

    fn push(&mut self, node: NodeId) {
        if torch::is_tensor_call(self.arena, node) {
            return;
        }
        let mut children = self.spare.pop().unwrap_or_default();
        children.clear();
        if !push_children(self.arena, node, &mut children) {
            self.spare.push(children);
            return;
        }
        if let Some(on_path) = self.on_path.get_mut(node as usize) {
            *on_path = true;
        }
        self.stack.push(Frame {
            node,
            children,
            next: 0,
            name_len: self.name.len(),
        });
    }
}

fn is_container_value(value: &Value) -> bool {
    matches!(
        value,
        Value::List(_)
            | Value::Tuple(_)
            | Value::Set(_)
            | Value::FrozenSet(_)
            | Value::Dict { .. }
            | Value::Object { .. }
    )
}

/// Finds the node at `path` below `root` (the empty path is `root` itself).
///
/// Dict keys may themselves contain dots (a state dict's `fc.weight`), so a path is matched
/// against the tree, not split blindly: the first node in walk order whose full name equals the
/// path wins, as the tensor table's first entry of a name does. Every step consumes at least one
/// byte of the path, so shared values and cycles cannot make it loop, and the work is bounded by
/// [`MAX_LOOKUP_STEPS`] children examined.
pub fn lookup(arena: &Arena, root: NodeId, path: &str) -> Result<NodeId> {
    if path.is_empty() {
        return Ok(root);
    }
    let mut walk = Walk::new(
        arena,
        root,
        WalkBounds {
            max_depth: usize::MAX,
            max_steps: usize::MAX,
            skip_cycles: false,
            max_name_len: path.len(),
        },
    );
    let mut steps = walk.root_children();
    // The deepest node reached, for the message when nothing matches.
    let mut deepest = (root, 0usize);
    while let Some(entry) = walk.next().map_err(|_| unreachable_bound())? {
        // The parent's name is `path[..segment_start]` (the walk only enters prefixes).
        let rest = &path.as_bytes()[entry.segment_start..];
        let segment = entry.segment().as_bytes();
        if rest == segment {
            return Ok(entry.node);
        }
        let descends =
            rest.len() > segment.len() && rest.starts_with(segment) && rest[segment.len()] == b'.';
        if !descends {
            continue;
        }
        let offset = entry.name.len() + 1;
        if offset > deepest.1 {
            deepest = (entry.node, offset);
        }
        steps = steps.saturating_add(walk.enter().map_err(|_| unreachable_bound())?);
        if steps > MAX_LOOKUP_STEPS {
            return Err(Error::limit(format!(
                "looking up value '{path}' examined more than {MAX_LOOKUP_STEPS} children"
            )));
        }
    }
    Err(no_value(arena, path, deepest.0, deepest.1))
}

/// A lookup's walk has no step or depth bound of its own (its path bounds it).
fn unreachable_bound() -> Error {
    Error::limit("value lookup walked past its bounds")
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

/// Children of a data node, named as the tensor table names them. Returns `None` for leaves.
pub fn children(arena: &Arena, node: NodeId) -> Option<Vec<(ChildName, NodeId)>> {
    let mut out = Vec::new();
    push_children(arena, node, &mut out).then_some(out)
}

/// Appends the children of `node` to `out`; false (nothing appended) for leaves.
fn push_children(arena: &Arena, node: NodeId, out: &mut Vec<(ChildName, NodeId)>) -> bool {
    match arena.get(node) {
        Value::List(_) | Value::Tuple(_) | Value::Set(_) | Value::FrozenSet(_) => {
            let items = arena.as_items(node).expect("a sequence");
            out.extend(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (ChildName::Index(i), v)),
            );
        }
        Value::Dict { items, .. } => {
            out.extend(items.iter().map(|&(k, v)| (ChildName::Key(k), v)));
        }
        object @ Value::Object { state, .. } => {
            if let Some(state) = *state {
                push_state_attrs(arena, state, out);
            }
            let (list_items, dict_items) = (object.list_items(), object.dict_items());
            out.extend(
                list_items
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| (ChildName::Index(i), v)),
            );
            out.extend(dict_items.iter().map(|&(k, v)| (ChildName::Key(k), v)));
        }
        _ => return false,
    }
    true
}

/// BUILD state: an attribute dict, or `(dict, slots_dict)`.
fn push_state_attrs(arena: &Arena, state: NodeId, out: &mut Vec<(ChildName, NodeId)>) {
    match arena.get(state) {
        Value::Dict { items, .. } => out.extend(items.iter().map(|&(k, v)| (ChildName::Key(k), v))),
        Value::Tuple(parts) if parts.len() == 2 => {
            for &part in parts.iter() {
                if let Value::Dict { items, .. } = arena.get(part) {
                    out.extend(items.iter().map(|&(k, v)| (ChildName::Key(k), v)));
                }
            }
        }
        _ => {}
    }
}

#[derive(Copy, Clone, Debug)]
pub enum ChildName {
    Index(usize),
    Key(NodeId),
}

impl ChildName {
    /// The name segment (dict keys as written, ints in decimal; indices in decimal), except
    /// that a key longer than `max` bytes is cut after `max + 1`:
    /// enough to tell it differs from any name of `max` bytes, at a cost bounded by `max`.
    pub fn segment_upto(self, arena: &Arena, max: usize) -> String {
        match self {
            ChildName::Index(i) => i.to_string(),
            ChildName::Key(k) => key_segment_upto(arena, k, max.min(MAX_SEGMENT_LEN)),
        }
    }

    /// Appends [`ChildName::segment_upto`] to `out`, except that a string key (the common case,
    /// borrowed from the arena: no allocation) is cut past `max` forward to a char boundary, so
    /// a cut key is always seen to be longer than `max`.
    #[inline]
    pub fn push_segment_upto(self, arena: &Arena, max: usize, out: &mut String) {
        match self {
            ChildName::Key(k) => match arena.get(k) {
                Value::Str(s) => out.push_str(cut_past(arena.str(*s), max)),
                _ => out.push_str(&key_segment_upto(arena, k, max)),
            },
            ChildName::Index(i) => {
                use std::fmt::Write;
                let _ = write!(out, "{i}");
            }
        }
    }
}

/// `s` cut to its first `max + 1` bytes (or a little more, to end on a char boundary), so that a
/// longer string is still seen to be longer than `max`.
fn cut_past(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max + 1;
    while !s.is_char_boundary(end) {
        end += 1;
    }
    &s[..end]
}

/// Longest name segment [`key_segment`] produces: a longer key is cut at this many bytes (plus
/// one more, so that callers can tell), which the tensor walk reports as a `Limit` error.
pub const MAX_SEGMENT_LEN: usize = 1 << 16;

/// The name segment of a dict key, cut after `max + 1` bytes (so that a longer key is seen to
/// be longer). Iterative (a tuple key may nest as deep as the pickle allows) and bounded: a
/// tuple's items are visited one at a time, so the work is bounded by the output too.
fn key_segment_upto(arena: &Arena, key: NodeId, max: usize) -> String {
    enum Step<'a> {
        Node(NodeId),
        /// The items of a tuple, from the given index on.
        Items(&'a [NodeId], usize),
    }
    let mut out = String::new();
    let mut todo = vec![Step::Node(key)];
    while let Some(step) = todo.pop() {
        if out.len() > max {
            break;
        }
        let node = match step {
            Step::Items(items, i) => {
                match items.get(i) {
                    None => out.push(')'),
                    Some(&item) => {
                        if i > 0 {
                            out.push_str(", ");
                        }
                        todo.push(Step::Items(items, i + 1));
                        todo.push(Step::Node(item));
                    }
                }
                continue;
            }
            Step::Node(node) => node,
        };
        match arena.get(node) {
            Value::Str(s) => push_bounded(&mut out, arena.str(*s), max),
            Value::Int(i) => out.push_str(&i.to_string()),
            Value::Bool(b) => out.push_str(if *b { "True" } else { "False" }),
            Value::None => out.push_str("None"),
            Value::Float(f) => out.push_str(&python_float_repr(*f)),
            Value::BigInt(b) => out.push_str(int_decimal(b).as_deref().unwrap_or("?")),
            Value::Bytes(b) => {
                let cut = &b[..b.len().min(max + 1)];
                push_bounded(&mut out, &String::from_utf8_lossy(cut), max);
            }
            Value::Tuple(items) => {
                out.push('(');
                todo.push(Step::Items(items, 0));
            }
            _ => out.push('?'),
        }
    }
    if out.len() > max + 1 {
        let mut cut = max + 1;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

fn push_bounded(out: &mut String, s: &str, max: usize) {
    let room = (max + 1).saturating_sub(out.len());
    let mut cut = s.len().min(room);
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    out.push_str(&s[..cut]);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{"a": [1, {"x\0y": 2}], 7: 3, "me": <root>, "abcé": 4}`
    fn tree() -> (Arena, NodeId) {
        let mut a = Arena::new();
        let one = a.push(Value::Int(1));
        let k_nul = a.push_str("x\0y");
        let two = a.push(Value::Int(2));
        let inner = a.push(Value::Dict {
            items: vec![(k_nul, two)],
            state: None,
            class: crate::pickle::DictClass::Dict,
        });
        let list = a.push(Value::List(vec![one, inner]));
        let k_a = a.push_str("a");
        let k_7 = a.push(Value::Int(7));
        let three = a.push(Value::Int(3));
        let k_me = a.push_str("me");
        let k_long = a.push_str("abcé");
        let four = a.push(Value::Int(4));
        let root = a.push(Value::Dict {
            items: vec![(k_a, list), (k_7, three), (k_long, four)],
            state: None,
            class: crate::pickle::DictClass::Dict,
        });
        if let Value::Dict { items, .. } = a.get_mut(root) {
            items.insert(2, (k_me, root));
        }
        (a, root)
    }

    fn walk_all(a: &Arena, root: NodeId, bounds: WalkBounds) -> Vec<(String, NodeId, usize)> {
        let mut walk = Walk::new(a, root, bounds);
        let mut out = Vec::new();
        while let Some(entry) = walk.next().unwrap() {
            out.push((entry.name.to_string(), entry.node, entry.depth));
            walk.enter().unwrap();
        }
        out
    }

    #[test]
    fn walk_names_in_pickle_order_skips_cycles_and_escapes_nul() {
        let (a, root) = tree();
        let names: Vec<(String, usize)> = walk_all(&a, root, WalkBounds::default())
            .into_iter()
            .map(|(name, _, depth)| (name, depth))
            .collect();
        let expected = [
            ("a", 1),
            ("a.0", 2),
            ("a.1", 2),
            ("a.1.x\\x00y", 3),
            ("7", 1),
            ("abcé", 1),
        ];
        let expected: Vec<(String, usize)> =
            expected.iter().map(|&(n, d)| (n.to_string(), d)).collect();
        assert_eq!(names, expected, "'me' is the root itself: skipped");
    }

    #[test]
    fn bounds_stop_the_walk() {
        let (a, root) = tree();
        let bounds = WalkBounds {
            max_steps: 2,
            ..WalkBounds::default()
        };
        let mut walk = Walk::new(&a, root, bounds);
        assert!(walk.next().unwrap().is_some());
        walk.enter().unwrap();
        assert!(walk.next().unwrap().is_some());
        assert_eq!(walk.next().err(), Some(Exceeded::Steps));
        let bounds = WalkBounds {
            max_depth: 1,
            ..WalkBounds::default()
        };
        let mut walk = Walk::new(&a, root, bounds);
        assert_eq!(walk.next().unwrap().unwrap().name, "a");
        assert_eq!(walk.enter(), Err(Exceeded::Depth));
        assert_eq!(walk.next().unwrap().unwrap().name, "7", "the walk goes on");
    }

    #[test]
    fn lookup_finds_every_walked_name_at_the_same_node() {
        let (a, root) = tree();
        for (name, node, _) in walk_all(&a, root, WalkBounds::default()) {
            assert_eq!(lookup(&a, root, &name).unwrap(), node, "{name}");
        }
        // Through the cycle: a lookup consumes its path, so it may follow it.
        let two = lookup(&a, root, "a.1.x\\x00y").unwrap();
        assert_eq!(lookup(&a, root, "me.me.a.1.x\\x00y").unwrap(), two);
    }

    #[test]
    fn lookup_never_matches_a_key_cut_inside_a_character() {
        // "abcé" cut to the 3 bytes of "abc" must not be taken for "abc".
        let (a, root) = tree();
        let e = lookup(&a, root, "abc").unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::NotFound);
        assert_eq!(
            e.message,
            "no value named 'abc': the root (a dict) has no member 'abc'"
        );
    }
}
