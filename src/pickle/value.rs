//! The value tree a pickle builds. Values live in an arena and refer to each other by index, so
//! memo sharing never copies, cycles cannot leak, deep trees drop without recursion, and the
//! finished tree is `Send + Sync`.

use crate::container::PageString;
use crate::hash::HashMap;

/// Index of a value in its [`Arena`].
pub type NodeId = u32;

#[derive(Clone, Debug)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer outside i64, as little-endian two's-complement bytes (pickle's LONG form).
    BigInt(Box<[u8]>),
    Float(f64),
    Complex(f64, f64),
    /// A string, kept in the arena's string pool (read it with [`Arena::str`]): strings are
    /// about two of every twenty values of a state dict, and a pool needs no allocation each.
    Str(PoolStr),
    Bytes(Box<[u8]>),
    ByteArray(Box<[u8]>),
    List(Vec<NodeId>),
    Tuple(TupleItems),
    /// A dict, `collections.OrderedDict` or `collections.Counter` (which: `class`), in
    /// insertion order. `state` is what BUILD set on it (a state dict's `_metadata` lives
    /// there).
    Dict {
        items: Vec<(NodeId, NodeId)>,
        state: Option<NodeId>,
        class: DictClass,
    },
    Set(Vec<NodeId>),
    FrozenSet(Vec<NodeId>),
    /// A reference to a global (`module.name`), never resolved to anything executable.
    Global {
        module: Box<str>,
        name: Box<str>,
    },
    /// Something the pickle asked to construct by calling a global that is not a known data
    /// constructor (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ). Nothing was called: the callable,
    /// its arguments, and whatever BUILD / APPENDS / SETITEMS did to the result are kept.
    /// The torch layer interprets the calls it knows (`_rebuild_tensor_v2`, `torch.Size`, …).
    Object {
        /// The callable: a `Global` node, or for REDUCE whatever was on the stack.
        callable: NodeId,
        /// A `Tuple` node with the positional arguments.
        args: NodeId,
        /// NEWOBJ_EX keyword arguments (a `Dict` node).
        #[allow(dead_code)]
        // what the pickle said; no rebuild call mmckpt knows takes keywords
        kwargs: Option<NodeId>,
        /// True for NEWOBJ/NEWOBJ_EX/OBJ/INST (class instantiation), false for REDUCE.
        #[allow(dead_code)] // what the pickle said; the tests check it
        new_object: bool,
        /// BUILD's argument (an attribute dict, or a `(dict, slots)` tuple, or anything).
        state: Option<NodeId>,
        /// Items that APPEND(S) / SETITEM(S) added (a list or dict subclass); `None` when
        /// there are none, as for nearly every object (out of line, to keep `Value` small).
        items: Option<Box<ObjectItems>>,
    },
    /// A persistent id (BINPERSID / PERSID): the pickled id object, not yet resolved.
    PersistentId(NodeId),
}

/// Which mapping class a [`Value::Dict`] was built as. The three hold and compare the same
/// items; the class is kept so that a writer gives back what torch.load returned (one byte, in
/// the padding of `Value::Dict`: `Value` stays 40 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DictClass {
    /// `builtins.dict`.
    #[default]
    Dict,
    /// `collections.OrderedDict` (every `state_dict()`).
    OrderedDict,
    /// `collections.Counter`.
    Counter,
}

/// Where a string is in its arena's pool: a handle, meaningful only with that arena.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStr {
    start: usize,
    end: usize,
}

/// The items of a tuple. Tuples are immutable and nearly always short (torch's rebuild
/// arguments have 6 to 8 items, a storage id 5, a size 1 to 4), so up to
/// [`TupleItems::INLINE`] items live inline: building one allocates nothing.
#[derive(Clone, PartialEq)]
pub enum TupleItems {
    Inline {
        len: u8,
        items: [NodeId; TupleItems::INLINE],
    },
    Heap(Box<[NodeId]>),
}

impl TupleItems {
    pub const INLINE: usize = 7;

    pub fn from_slice(items: &[NodeId]) -> TupleItems {
        if items.len() <= Self::INLINE {
            // A fixed-length loop, not copy_from_slice (a memcpy call for a few bytes).
            let inline: [NodeId; Self::INLINE] =
                std::array::from_fn(|i| items.get(i).copied().unwrap_or(0));
            TupleItems::Inline {
                len: items.len() as u8,
                items: inline,
            }
        } else {
            TupleItems::Heap(items.into())
        }
    }
}

impl std::ops::Deref for TupleItems {
    type Target = [NodeId];
    fn deref(&self) -> &[NodeId] {
        match self {
            TupleItems::Inline { len, items } => &items[..usize::from(*len)],
            TupleItems::Heap(items) => items,
        }
    }
}

impl From<Vec<NodeId>> for TupleItems {
    fn from(items: Vec<NodeId>) -> TupleItems {
        if items.len() <= Self::INLINE {
            TupleItems::from_slice(&items)
        } else {
            TupleItems::Heap(items.into_boxed_slice())
        }
    }
}

impl std::fmt::Debug for TupleItems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// What APPEND(S) and SETITEM(S) added to an [`Value::Object`].
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ObjectItems {
    /// Items that APPEND/APPENDS added (a list subclass).
    pub list: Vec<NodeId>,
    /// Items that SETITEM/SETITEMS added (a dict subclass).
    pub dict: Vec<(NodeId, NodeId)>,
}

impl Value {
    /// Items APPEND(S) added to an `Object` (empty for anything else).
    pub fn list_items(&self) -> &[NodeId] {
        match self {
            Value::Object { items: Some(i), .. } => &i.list,
            _ => &[],
        }
    }
    /// Items SETITEM(S) added to an `Object` (empty for anything else).
    pub fn dict_items(&self) -> &[(NodeId, NodeId)] {
        match self {
            Value::Object { items: Some(i), .. } => &i.dict,
            _ => &[],
        }
    }
}

impl Value {
    /// Python's name for the value's type, for messages (`dict`, `tuple`, `persistent id`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Complex(..) => "complex",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::ByteArray(_) => "bytearray",
            Value::List(_) => "list",
            Value::Tuple(_) => "tuple",
            Value::Dict { .. } => "dict",
            Value::Set(_) => "set",
            Value::FrozenSet(_) => "frozenset",
            Value::Global { .. } => "global",
            Value::Object { .. } => "object",
            Value::PersistentId(_) => "persistent id",
        }
    }
}

// Values are stored by the million: keep them at 40 bytes.
const _: () = assert!(std::mem::size_of::<Value>() <= 40);

/// Owns every value of one or more pickles (the legacy format loads several into one arena).
#[derive(Default, Debug)]
pub struct Arena {
    nodes: Vec<Value>,
    /// The text of every `Str` value, back to back.
    strings: PageString,
    /// (dict or set, opaque object) for every key that was compared by identity with an
    /// object whose class mmckpt does not know (see [`Arena::identity_keys`]).
    identity_keys: Vec<(NodeId, NodeId)>,
    /// What happened to values after they were made, for the few pickles where something
    /// did (out of line: the arena of a plain state dict stays as it was).
    history: Option<Box<History>>,
    /// BUILD opcodes run so far, in every pickle of this arena.
    builds: u32,
    /// Every persistent id node, in the order the pickles made them (torch's order of
    /// `persistent_load` calls).
    persistent_ids: Vec<NodeId>,
}

#[derive(Default, Debug)]
struct History {
    /// Containers changed (APPEND(S), SETITEM(S), ADDITEMS, BUILD) after something that
    /// could have read them (a call, a persistent id, a BUILD): when, by [`Change`]. Empty for
    /// files that fill every container before passing it on, as picklers do.
    changes: HashMap<NodeId, Change>,
    /// One bit per node, set for the keys of `changes`: the test every read makes is a bit
    /// test, not a hash lookup (a state dict filled after its tensors is such a key).
    changed: Vec<u64>,
    /// The BUILD count ([`Change::builds`]) at which each object got its BUILD state.
    built_at: HashMap<NodeId, u32>,
    /// `module.name` as the pickle wrote it, for globals renamed from Python 2's names.
    written_names: HashMap<NodeId, Box<str>>,
}

/// When a container was last changed: the arena's length then (a value created later was
/// created after the change) and the BUILD count then.
#[derive(Clone, Copy, Debug)]
struct Change {
    len: u32,
    builds: u32,
}

/// When a caller read a value: during the call or persistent id that created node `Node` (its
/// arguments), or during the BUILD with a given count (its state).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadAt {
    Node(NodeId),
    Build(u32),
}

impl Arena {
    pub fn new() -> Self {
        Arena::default()
    }
    /// Room for `additional` more values without reallocating.
    /// Room for about `additional` more values, so that a large pickle does not copy the
    /// arena as it grows; a hint only (nothing happens when the memory is not available).
    pub fn reserve(&mut self, additional: usize) {
        if self.nodes.try_reserve(additional).is_ok() {
            crate::container::source::advise_huge_pages(&mut self.nodes);
        }
        // A state dict's strings (names, storage keys) are about one byte in five of the
        // pickle, which is about one value per five bytes.
        let _ = self.strings.try_reserve(additional);
    }
    /// Adds a string to the pool, for a `Value::Str`.
    pub fn store_str(&mut self, s: &str) -> PoolStr {
        let start = self.strings.len();
        self.strings.push_str(s);
        PoolStr {
            start,
            end: self.strings.len(),
        }
    }
    /// The text of a string handle from this arena.
    ///
    /// # Panics
    /// If the handle is from another arena and out of this pool's range.
    pub fn str(&self, s: PoolStr) -> &str {
        &self.strings[s.start..s.end]
    }
    /// Adds a `Str` value.
    #[cfg(test)]
    pub fn push_str(&mut self, s: &str) -> NodeId {
        let s = self.store_str(s);
        self.push(Value::Str(s))
    }
    /// Records that a key of `container` (or an item of a tuple key) is the opaque `object`,
    /// which the pickle machine compared with the other keys by identity.
    pub fn note_identity_key(&mut self, container: NodeId, object: NodeId) {
        self.identity_keys.push((container, object));
    }
    /// Every (dict or set, object) pair where an opaque object — an instance of a class the
    /// pickle machine does not interpret, or a persistent id — is a key or part of one. The
    /// machine compares such keys by identity (Python's default); classes that compare by value
    /// are the caller's to refuse.
    pub fn identity_keys(&self) -> &[(NodeId, NodeId)] {
        &self.identity_keys
    }
    /// Records a persistent id node (`persistent_load` runs for each, reachable or not).
    #[inline]
    pub fn note_persistent_id(&mut self, id: NodeId) {
        self.persistent_ids.push(id);
    }
    /// Every persistent id node, in the order they were made.
    pub fn persistent_ids(&self) -> &[NodeId] {
        &self.persistent_ids
    }
    /// Records that the global `id` was written as `written` (`__builtin__.set`) and renamed.
    pub fn note_written_name(&mut self, id: NodeId, written: String) {
        self.history_mut().written_names.insert(id, written.into());
    }
    /// `module.name` of a renamed global as the pickle wrote it; `None` when not renamed.
    pub fn written_name(&self, id: NodeId) -> Option<&str> {
        self.history.as_ref()?.written_names.get(&id).map(|s| &**s)
    }
    /// Records that `container` was changed now (its items, or its BUILD state).
    pub fn note_change(&mut self, container: NodeId) {
        let change = Change {
            len: self.nodes.len() as u32,
            builds: self.builds,
        };
        let history = self.history_mut();
        history.changes.insert(container, change);
        let word = container as usize / 64;
        if word >= history.changed.len() {
            history.changed.resize(word + 1 + word / 2, 0);
        }
        history.changed[word] |= 1 << (container % 64);
    }
    /// Counts a BUILD opcode; `object` (when it is one) gets its state at this count.
    pub fn note_build(&mut self, object: Option<NodeId>) -> u32 {
        self.builds = self.builds.saturating_add(1);
        if let Some(object) = object {
            let builds = self.builds;
            self.history_mut().built_at.insert(object, builds);
        }
        self.builds
    }
    /// When `object`'s BUILD state was read: at its BUILD (at its creation when it had none).
    pub fn build_read_at(&self, object: NodeId) -> ReadAt {
        match self.history.as_ref().and_then(|h| h.built_at.get(&object)) {
            Some(&builds) => ReadAt::Build(builds),
            None => ReadAt::Node(object),
        }
    }
    /// True when `container` was changed after a reader read it at `at`: the reader saw
    /// other contents than the finished tree holds.
    #[inline(always)]
    pub fn changed_after(&self, container: NodeId, at: ReadAt) -> bool {
        let Some(history) = &self.history else {
            return false;
        };
        let bit = history
            .changed
            .get(container as usize / 64)
            .is_some_and(|word| word >> (container % 64) & 1 != 0);
        bit && history.changed_after(container, at)
    }

    fn history_mut(&mut self) -> &mut History {
        self.history.get_or_insert_with(Default::default)
    }
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
    /// Adds a value; the caller enforces the node-count limit before calling.
    pub fn push(&mut self, value: Value) -> NodeId {
        let id = self.nodes.len() as NodeId;
        self.nodes.push(value);
        id
    }
    pub fn get(&self, id: NodeId) -> &Value {
        &self.nodes[id as usize]
    }
    pub fn get_mut(&mut self, id: NodeId) -> &mut Value {
        &mut self.nodes[id as usize]
    }
    /// The string payload of a `Str` node.
    pub fn as_str(&self, id: NodeId) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(self.str(*s)),
            _ => None,
        }
    }
    pub fn as_int(&self, id: NodeId) -> Option<i64> {
        match self.get(id) {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }
    /// The items of a `Tuple`, `List`, `Set` or `FrozenSet` node.
    pub fn as_items(&self, id: NodeId) -> Option<&[NodeId]> {
        match self.get(id) {
            Value::Tuple(items) => Some(items),
            Value::List(items) | Value::Set(items) | Value::FrozenSet(items) => Some(items),
            _ => None,
        }
    }
    /// The items of a `Tuple` or `List` node.
    pub fn as_seq(&self, id: NodeId) -> Option<&[NodeId]> {
        match self.get(id) {
            Value::Tuple(items) => Some(items),
            Value::List(items) => Some(items),
            _ => None,
        }
    }
    /// `module.name` of a `Global` node.
    pub fn global_name(&self, id: NodeId) -> Option<(&str, &str)> {
        match self.get(id) {
            Value::Global { module, name } => Some((module, name)),
            _ => None,
        }
    }
}

impl History {
    #[inline(never)]
    fn changed_after(&self, container: NodeId, at: ReadAt) -> bool {
        match (self.changes.get(&container), at) {
            (None, _) => false,
            // A change made after node `n` existed saw an arena longer than `n`.
            (Some(change), ReadAt::Node(n)) => change.len > n,
            (Some(change), ReadAt::Build(b)) => change.builds >= b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::TupleItems;

    #[test]
    fn tuples_up_to_inline_are_inline_and_all_read_back() {
        for n in 0..=TupleItems::INLINE + 2 {
            let items: Vec<u32> = (0..n as u32).collect();
            let tuple = TupleItems::from_slice(&items);
            assert_eq!(&*tuple, items.as_slice());
            assert_eq!(tuple, TupleItems::from(items.clone()));
            assert_eq!(
                matches!(tuple, TupleItems::Inline { .. }),
                n <= TupleItems::INLINE
            );
        }
    }
}
