//! The restricted pickle machine: it reads every data-building opcode of protocols 0–5 into an
//! [`Arena`], and never imports or calls anything.
//!
//! * Iterative: one loop over the opcodes, an explicit stack and mark stack, no recursion.
//! * Bounded: nodes, stack depth, MARK depth, memo size, string lengths and container lengths
//!   are limited by [`PickleLimits`]; declared lengths are checked against the input before anything
//!   is allocated, with overflow-checked arithmetic.
//! * A few well-known callables are interpreted into plain data (`OrderedDict`, `set`,
//!   `frozenset`, `bytearray`, `bytes`, `complex`, `list`, `dict`, `tuple`, `_codecs.encode`,
//!   `copyreg._reconstructor`); every other call becomes an opaque [`Value::Object`].
//! * Dict (and set) inserts follow Python's key equality (see [`super::keys`]): an equal key
//!   replaces the value in place, keeping the first key and its position. A side index makes
//!   this O(1) per insert.

use crate::hash::HashMap;

use super::keys::Keys;
use super::opcodes as op;
use super::text::{self, Integer};
use super::value::{Arena, DictClass, NodeId, TupleItems, Value};
use crate::error::{Error, ErrorKind, Result};

/// Bounds on what one run of the pickle machine may build (one pickle of a checkpoint). Every bound holds in release builds too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PickleLimits {
    /// Values this call may add to the arena. Items copied by interpreted constructors
    /// (`list(x)`, `set(x)`, `dict(x)`, …) count against it as well.
    pub max_nodes: usize,
    /// Depth of the pickle stack.
    pub max_stack: usize,
    /// MARK nesting depth.
    pub max_marks: usize,
    /// Memo entries.
    pub max_memo: usize,
    /// Bytes of one string, bytes, bytearray or long-integer value.
    pub max_str_len: usize,
    /// Items of one list, tuple, dict, set or object.
    pub max_container_len: usize,
}

impl Default for PickleLimits {
    /// Generous bounds that any real checkpoint fits (the largest have < 100,000 tensors of
    /// ~20 nodes each), while keeping the worst case to about a gigabyte of memory.
    fn default() -> Self {
        PickleLimits {
            max_nodes: 10_000_000,
            max_stack: 10_000_000,
            max_marks: 10_000,
            max_memo: 10_000_000,
            max_str_len: 1 << 30,
            max_container_len: 10_000_000,
        }
    }
}

/// Parses one pickle that starts at `data[0]` into `arena`, and returns the root value and the
/// number of bytes consumed (through the STOP opcode; anything after it is ignored, so a stream
/// of several pickles can be loaded by calling this repeatedly on the rest of the input).
///
/// Nothing is imported or called. Errors: [`ErrorKind::Format`] for malformed or truncated
/// input, [`ErrorKind::Unsupported`] for extension-registry and out-of-band-buffer opcodes and
/// protocols above 5, [`ErrorKind::Limit`] when a bound of `limits` is exceeded. Messages name
/// the opcode and its byte offset. On error the arena may hold partial values of this call.
pub fn load(arena: &mut Arena, data: &[u8], limits: &PickleLimits) -> Result<(NodeId, usize)> {
    let mut machine = Machine {
        start_nodes: arena.len(),
        arena,
        data,
        limits,
        pos: 0,
        op_offset: 0,
        op: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Memo::with_capacity(data.len() / 12),
        shared: [NO_NODE; SHARED_SLOTS],
        index: HashMap::default(),
        keys: Keys::default(),
        copied_items: 0,
        copied_bytes: 0,
        read_until: 0,
        proto: 0,
    };
    machine.run()
}

/// The memo: picklers number entries 0, 1, 2, …, so a vector serves them; keys far beyond
/// the entries seen so far (hand-made pickles) go to a map, keeping memory proportional to
/// the entries.
#[derive(Default)]
struct Memo {
    dense: Vec<NodeId>,
    dense_count: usize,
    sparse: HashMap<u64, NodeId>,
}

#[cfg(test)]
thread_local! {
    /// Tests turn `fast_step` off to check that it changes no result and no error.
    pub(super) static STEP_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

#[inline(always)]
fn fast_steps_enabled() -> bool {
    #[cfg(test)]
    {
        !STEP_ONLY.with(|off| off.get())
    }
    #[cfg(not(test))]
    {
        true
    }
}

/// Slots of `Machine::shared`: ints 0..=255, None, False, True, ().
const SHARED_SLOTS: usize = 260;

/// Marks an unused slot of `Memo::dense` (the arena never hands out this id).
const NO_NODE: NodeId = NodeId::MAX;

impl Memo {
    /// A memo with room for `entries` numbered entries (torch's pickles memoize about one
    /// object per 12 bytes), so that the vector does not copy itself as it grows.
    fn with_capacity(entries: usize) -> Memo {
        Memo {
            dense: Vec::with_capacity(entries),
            ..Memo::default()
        }
    }

    fn len(&self) -> usize {
        self.dense_count + self.sparse.len()
    }

    fn get(&self, key: u64) -> Option<NodeId> {
        match usize::try_from(key).ok().and_then(|i| self.dense.get(i)) {
            Some(&id) if id != NO_NODE => Some(id),
            _ if self.sparse.is_empty() => None,
            _ => self.sparse.get(&key).copied(),
        }
    }

    /// Stores `id` under `key`; false when that would exceed `max` entries.
    #[inline(always)]
    fn put(&mut self, key: u64, id: NodeId, max: usize) -> bool {
        // The common case in line: a slot the vector already has (a pickler's keys count up
        // into the room the vector grew ahead of them), no map in use.
        let index = usize::try_from(key).unwrap_or(usize::MAX);
        if let Some(slot) = self.dense.get_mut(index) {
            if *slot != NO_NODE {
                *slot = id;
                return true;
            }
            if self.sparse.is_empty() && self.dense_count < max {
                *slot = id;
                self.dense_count += 1;
                return true;
            }
        }
        self.put_slow(key, id, max)
    }

    #[inline(never)]
    /// The rest of `put`: the key has no value in the vector yet.
    fn put_slow(&mut self, key: u64, id: NodeId, max: usize) -> bool {
        let index = usize::try_from(key).unwrap_or(usize::MAX);
        if !self.sparse.is_empty() {
            if let Some(slot) = self.sparse.get_mut(&key) {
                *slot = id;
                return true;
            }
        }
        if self.len() >= max {
            return false;
        }
        // Dense only near the entries stored so far, so that the vector stays proportional to
        // them (a bound on the vector's own length would let each far key double it).
        if index < self.dense_count.saturating_mul(2).saturating_add(1024) {
            if index >= self.dense.len() {
                // Grown by half at least: pickles number their memo keys 0, 1, 2, …; but not
                // past the room reserved for the pickle's size while the key fits in it (the
                // vector would be copied into one twice as large for nothing).
                let (len, room) = (self.dense.len(), self.dense.capacity());
                let mut grown = (index + 1).max(len + len / 2);
                if index < room {
                    grown = grown.min(room);
                }
                self.dense.resize(grown, NO_NODE);
            }
            self.dense[index] = id;
            self.dense_count += 1;
        } else {
            self.sparse.insert(key, id);
        }
        true
    }
}

/// Most bytes of a global's module and name together.
pub const MAX_GLOBAL_NAME_LEN: usize = 1024;

/// How an interpreted callable is being invoked.
#[derive(Clone, Copy, PartialEq, Eq)]
enum CallKind {
    /// REDUCE: `callable(*args)`.
    Reduce,
    /// INST / OBJ: `cls(*args)` (class instantiation through a call).
    Instantiate,
    /// NEWOBJ / NEWOBJ_EX: `cls.__new__(cls, *args)`; mutable builtins come out empty.
    New,
}

/// The callables that are interpreted into plain data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    OrderedDict,
    /// `collections.Counter`: a dict subclass, pickled as `Counter(dict(self))`.
    Counter,
    Dict,
    List,
    Tuple,
    Set,
    FrozenSet,
    ByteArray,
    Bytes,
    Complex,
    CodecsEncode,
    Reconstructor,
}

impl Known {
    /// The class of the dict that calling `OrderedDict`, `Counter` or `dict` builds (asked
    /// only of those three).
    fn dict_class(self) -> DictClass {
        match self {
            Known::OrderedDict => DictClass::OrderedDict,
            Known::Counter => DictClass::Counter,
            _ => DictClass::Dict,
        }
    }
}

fn classify(module: &str, name: &str) -> Option<Known> {
    match (module, name) {
        ("collections", "OrderedDict") => Some(Known::OrderedDict),
        ("collections", "Counter") => Some(Known::Counter),
        ("_codecs", "encode") => Some(Known::CodecsEncode),
        ("copyreg" | "copy_reg", "_reconstructor") => Some(Known::Reconstructor),
        ("builtins" | "__builtin__", _) => match name {
            "dict" => Some(Known::Dict),
            "list" => Some(Known::List),
            "tuple" => Some(Known::Tuple),
            "set" => Some(Known::Set),
            "frozenset" => Some(Known::FrozenSet),
            "bytearray" => Some(Known::ByteArray),
            "bytes" => Some(Known::Bytes),
            "complex" => Some(Known::Complex),
            _ => None,
        },
        _ => None,
    }
}

/// Python 2 module and global names as torch 2.15 renames them (`torch/_utils.py`,
/// `NAME_MAPPING` first, then `IMPORT_MAPPING`, applied by
/// `_weights_only_unpickler._read_global_instruction`), so that `UserDict.OrderedDict` is
/// `collections.OrderedDict` and `__builtin__.set` is `builtins.set`.
fn python2_rename<'n>(module: &'n str, name: &'n str) -> (&'n str, &'n str) {
    let renamed = match (module, name) {
        ("__builtin__", "xrange") => Some(("builtins", "range")),
        ("__builtin__", "reduce") => Some(("functools", "reduce")),
        ("__builtin__", "intern") => Some(("sys", "intern")),
        ("__builtin__", "unichr") => Some(("builtins", "chr")),
        ("__builtin__", "unicode" | "basestring") => Some(("builtins", "str")),
        ("__builtin__", "long") => Some(("builtins", "int")),
        ("itertools", "izip") => Some(("builtins", "zip")),
        ("itertools", "imap") => Some(("builtins", "map")),
        ("itertools", "ifilter") => Some(("builtins", "filter")),
        ("itertools", "ifilterfalse") => Some(("itertools", "filterfalse")),
        ("itertools", "izip_longest") => Some(("itertools", "zip_longest")),
        ("UserDict", "IterableUserDict" | "UserDict") => Some(("collections", "UserDict")),
        ("UserList", "UserList") => Some(("collections", "UserList")),
        ("UserString", "UserString") => Some(("collections", "UserString")),
        ("exceptions", "StandardError") => Some(("builtins", "Exception")),
        _ => None,
    };
    if let Some(renamed) = renamed {
        return renamed;
    }
    let module = match module {
        "__builtin__" => "builtins",
        "copy_reg" => "copyreg",
        "Queue" => "queue",
        "repr" => "reprlib",
        "_abcoll" => "collections.abc",
        "UserDict" | "UserList" | "UserString" => "collections",
        "whichdb" => "dbm",
        "StringIO" | "cStringIO" => "io",
        other => other,
    };
    (module, name)
}

/// `latin1`, `latin-1`, `iso-8859-1` and the other spellings Python's codec lookup accepts.
fn is_latin1(encoding: &str) -> bool {
    let e = encoding.to_ascii_lowercase().replace(['-', '_', ' '], "");
    matches!(e.as_str(), "latin1" | "iso88591" | "l1" | "latin")
}

fn is_utf8(encoding: &str) -> bool {
    let e = encoding.to_ascii_lowercase().replace(['-', '_', ' '], "");
    matches!(e.as_str(), "utf8" | "u8" | "utf")
}

struct Machine<'a> {
    arena: &'a mut Arena,
    data: &'a [u8],
    limits: &'a PickleLimits,
    /// Arena length when this call began: nodes beyond it count against `max_nodes`.
    start_nodes: usize,
    /// Read position in `data`.
    pos: usize,
    /// Offset and byte of the opcode being executed, for messages.
    op_offset: usize,
    op: u8,
    stack: Vec<NodeId>,
    /// Stack lengths at each MARK; the top one is the fence below which no opcode may pop.
    marks: Vec<usize>,
    memo: Memo,
    /// Nodes of the ints 0..=255, None, False, True and the empty tuple made by this call (see
    /// `push_shared`).
    shared: [NodeId; SHARED_SLOTS],
    /// (dict or set node, key hash) → position of the item with that key.
    index: HashMap<(NodeId, u64), usize>,
    /// Python's key equality, for dict and set inserts.
    keys: Keys,
    /// Items copied by interpreted constructors (charged with the nodes against `max_nodes`).
    copied_items: usize,
    /// Bytes copied by interpreted constructors (`bytearray(b)`, `_codecs.encode`).
    copied_bytes: usize,
    /// The arena's length after the last opcode that reads values it is given (a call that
    /// stays an object, a persistent id, a BUILD): values below it may have been read, so a
    /// change to one is recorded ([`Arena::note_change`]) for torch's interpretation, which
    /// reads a call's arguments as they were at the call.
    read_until: usize,
    /// The protocol the PROTO opcode declared (0 without one), for Python 2 renames.
    proto: u8,
}

impl<'a> Machine<'a> {
    // ----- errors -------------------------------------------------------------------------

    fn op_name(&self) -> String {
        match op::name(self.op) {
            Some(n) => n.to_string(),
            None => format!("0x{:02x}", self.op),
        }
    }

    fn error(&self, kind: ErrorKind, msg: impl std::fmt::Display) -> Error {
        Error::new(
            kind,
            format!(
                "pickle opcode {} at offset {}: {msg}",
                self.op_name(),
                self.op_offset
            ),
        )
    }

    fn format(&self, msg: impl std::fmt::Display) -> Error {
        self.error(ErrorKind::Format, msg)
    }

    fn limit(&self, name: &str, value: usize) -> Error {
        self.error(ErrorKind::Limit, format!("limit {name} = {value} exceeded"))
    }

    fn truncated(&self, wanted: impl std::fmt::Display) -> Error {
        self.format(format!(
            "truncated: needs {wanted} bytes at offset {}, {} left",
            self.pos,
            self.data.len() - self.pos
        ))
    }

    // ----- input --------------------------------------------------------------------------

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        match self.pos.checked_add(n) {
            Some(end) if end <= data.len() => {
                let s = &data[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => Err(self.truncated(n)),
        }
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn read_u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn read_u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.take_array()?))
    }

    fn read_u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take_array()?))
    }

    fn read_i32(&mut self) -> Result<i32> {
        Ok(i32::from_le_bytes(self.take_array()?))
    }

    fn read_u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take_array()?))
    }

    /// A length-prefixed payload: checks the declared length against the input first (Format,
    /// "truncated"), then against `max_str_len` (Limit), and only then borrows it.
    fn take_sized(&mut self, declared: u64) -> Result<&'a [u8]> {
        let left = (self.data.len() - self.pos) as u64;
        if declared > left {
            return Err(self.truncated(declared));
        }
        let n = declared as usize; // <= left, so it fits
        self.check_str_len(n)?;
        self.take(n)
    }

    /// One protocol 0 text argument, without its terminating newline.
    fn line(&mut self) -> Result<&'a [u8]> {
        let data: &'a [u8] = self.data;
        let rest = &data[self.pos..];
        match rest.iter().position(|&c| c == b'\n') {
            Some(n) => {
                self.pos += n + 1;
                Ok(&rest[..n])
            }
            None => Err(self.format(format!(
                "truncated: no newline after offset {} ending the text argument",
                self.pos
            ))),
        }
    }

    fn utf8_line(&mut self, what: &str) -> Result<&'a str> {
        let line = self.line()?;
        std::str::from_utf8(line).map_err(|_| self.format(format!("{what} is not valid UTF-8")))
    }

    // ----- bounds -------------------------------------------------------------------------

    fn check_str_len(&self, n: usize) -> Result<()> {
        if n > self.limits.max_str_len {
            return Err(self.limit("max_str_len", self.limits.max_str_len));
        }
        Ok(())
    }

    fn check_container_len(&self, n: usize) -> Result<()> {
        if n > self.limits.max_container_len {
            return Err(self.limit("max_container_len", self.limits.max_container_len));
        }
        Ok(())
    }

    fn nodes_used(&self) -> usize {
        (self.arena.len() - self.start_nodes).saturating_add(self.copied_items)
    }

    fn new_node(&mut self, value: Value) -> Result<NodeId> {
        // fast_step's can_add_node is the same pair of checks.
        if self.nodes_used() >= self.limits.max_nodes {
            return Err(self.limit("max_nodes", self.limits.max_nodes));
        }
        if self.arena.len() >= NodeId::MAX as usize {
            return Err(self.error(ErrorKind::Limit, "the arena is full (2^32 - 1 values)"));
        }
        Ok(self.arena.push(value))
    }

    /// Charges `n` items copied out of an existing container against `max_nodes`.
    fn charge_items(&mut self, n: usize) -> Result<()> {
        self.check_container_len(n)?;
        self.copied_items = self.copied_items.saturating_add(n);
        if self.nodes_used() > self.limits.max_nodes {
            return Err(self.limit("max_nodes", self.limits.max_nodes));
        }
        Ok(())
    }

    /// Charges `n` bytes copied out of an existing value. One call may copy at most the input
    /// size plus `max_str_len` bytes in all, so a memoized string reused many times cannot
    /// multiply memory.
    fn charge_bytes(&mut self, n: usize) -> Result<()> {
        self.check_str_len(n)?;
        self.copied_bytes = self.copied_bytes.saturating_add(n);
        let budget = self.data.len().saturating_add(self.limits.max_str_len);
        if self.copied_bytes > budget {
            return Err(self.error(
                ErrorKind::Limit,
                format!(
                    "interpreted constructors copied more than {budget} bytes \
                     (pickle size + max_str_len = {})",
                    self.limits.max_str_len
                ),
            ));
        }
        Ok(())
    }

    // ----- stack --------------------------------------------------------------------------

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, id: NodeId) -> Result<()> {
        if self.stack.len() >= self.limits.max_stack {
            return Err(self.limit("max_stack", self.limits.max_stack));
        }
        self.stack.push(id);
        Ok(())
    }

    /// Pushes None, a bool, a small int (0..=255) or the empty tuple, sharing one node per
    /// value within this call: they are immutable, so sharing is unobservable, and torch's
    /// pickles hold several per tensor (offsets, sizes, strides, requires_grad, the empty
    /// arguments of `OrderedDict()`).
    fn push_shared(&mut self, value: Value) -> Result<NodeId> {
        let slot = match &value {
            Value::Int(i @ 0..=255) => *i as usize,
            Value::None => 256,
            Value::Bool(b) => 257 + usize::from(*b),
            Value::Tuple(items) if items.is_empty() => 259,
            _ => return self.push_new(value),
        };
        match self.shared[slot] {
            NO_NODE => {
                let id = self.push_new(value)?;
                self.shared[slot] = id;
                Ok(id)
            }
            id => {
                self.push(id)?;
                Ok(id)
            }
        }
    }

    fn push_new(&mut self, value: Value) -> Result<NodeId> {
        let id = self.new_node(value)?;
        self.push(id)?;
        Ok(id)
    }

    fn underflow(&self) -> Error {
        if self.marks.is_empty() {
            self.format("stack underflow")
        } else {
            self.format("stack underflow (cannot pop below the current MARK)")
        }
    }

    fn pop(&mut self) -> Result<NodeId> {
        if self.stack.len() <= self.fence() {
            return Err(self.underflow());
        }
        Ok(self.stack.pop().expect("checked above"))
    }

    fn top(&self) -> Result<NodeId> {
        if self.stack.len() <= self.fence() {
            return Err(self.underflow());
        }
        Ok(self.stack[self.stack.len() - 1])
    }

    /// Pops the top MARK and the items above it.
    fn pop_mark(&mut self) -> Result<Vec<NodeId>> {
        match self.marks.pop() {
            Some(mark) => Ok(self.stack.split_off(mark)),
            None => Err(self.format("no MARK on the stack")),
        }
    }

    // ----- memo ---------------------------------------------------------------------------

    fn memo_put(&mut self, key: u64) -> Result<()> {
        let top = self.top()?;
        if !self.memo.put(key, top, self.limits.max_memo) {
            return Err(self.limit("max_memo", self.limits.max_memo));
        }
        Ok(())
    }

    fn memo_get(&mut self, key: u64) -> Result<()> {
        match self.memo.get(key) {
            Some(id) => self.push(id),
            None => Err(self.format(format!("memo key {key} not found"))),
        }
    }

    fn text_memo_key(&mut self) -> Result<u64> {
        let line = self.line()?;
        match text::parse_decimal(line, 20) {
            Ok(Integer::Small(k)) if k >= 0 => Ok(k as u64),
            Ok(_) => Err(self.format("memo key out of range")),
            Err(e) => Err(self.format(e)),
        }
    }

    // ----- dict and set inserts ---------------------------------------------------------

    /// `target[key] = value` for a Dict (items) or an Object (dict_items).
    fn dict_insert(&mut self, target: NodeId, key: NodeId, value: NodeId) -> Result<()> {
        let hash = self.keys.hash(self.arena, key);
        let arena: &Arena = self.arena;
        let items: &[(NodeId, NodeId)] = match arena.get(target) {
            Value::Dict { items, .. } => items,
            Value::Object { items, .. } => items.as_deref().map_or(&[][..], |i| &i.dict),
            other => {
                return Err(self.format(format!("cannot set an item on a {}", other.type_name())))
            }
        };
        let len = items.len();
        let mut found = None;
        if let Some(h) = hash {
            // One probe of the index for both the lookup and the insert (a state dict's
            // SETITEMS runs this once per tensor).
            match self.index.entry((target, h)) {
                std::collections::hash_map::Entry::Occupied(slot) => {
                    let pos = *slot.get();
                    if self.keys.equal(arena, items[pos].0, key) {
                        found = Some(pos);
                    } else {
                        // A 64-bit hash collision between different keys: rare, so scan.
                        found = items
                            .iter()
                            .position(|&(k, _)| self.keys.equal(arena, k, key));
                    }
                }
                std::collections::hash_map::Entry::Vacant(slot) => {
                    // No key with this hash yet, so none equal: the item is new, at `len`
                    // (indexed only when the length check below lets it in).
                    if len < self.limits.max_container_len {
                        slot.insert(len);
                    }
                }
            }
        }
        if found.is_none() {
            self.check_container_len(len + 1)?;
        }
        let items = match self.arena.get_mut(target) {
            Value::Dict { items, .. } => items,
            Value::Object { items, .. } => &mut items.get_or_insert_with(Default::default).dict,
            _ => unreachable!("checked above"),
        };
        match found {
            Some(pos) => items[pos].1 = value,
            None => {
                items.push((key, value));
                if let Some(object) = self.keys.opaque_in(self.arena, key) {
                    self.arena.note_identity_key(target, object);
                }
            }
        }
        Ok(())
    }

    /// `target.add(item)` for a Set or FrozenSet under construction.
    fn set_insert(&mut self, target: NodeId, item: NodeId) -> Result<()> {
        let hash = self.keys.hash(self.arena, item);
        let arena: &Arena = self.arena;
        let items: &[NodeId] = match arena.get(target) {
            Value::Set(items) | Value::FrozenSet(items) => items,
            other => {
                return Err(self.format(format!("cannot add items to a {}", other.type_name())))
            }
        };
        let mut index_it = hash.is_some();
        if let Some(h) = hash {
            if let Some(&pos) = self.index.get(&(target, h)) {
                index_it = false;
                if self.keys.equal(arena, items[pos], item)
                    || items.iter().any(|&k| self.keys.equal(arena, k, item))
                {
                    return Ok(());
                }
            }
        }
        let len = items.len();
        self.check_container_len(len + 1)?;
        if let Value::Set(items) | Value::FrozenSet(items) = self.arena.get_mut(target) {
            items.push(item);
        }
        if let Some(object) = self.keys.opaque_in(self.arena, item) {
            self.arena.note_identity_key(target, object);
        }
        if let (true, Some(h)) = (index_it, hash) {
            self.index.insert((target, h), len);
        }
        Ok(())
    }

    fn new_dict_from_pairs(&mut self, flat: &[NodeId], class: DictClass) -> Result<NodeId> {
        if flat.len() % 2 != 0 {
            return Err(self.format("odd number of items for a dict"));
        }
        let id = self.new_node(Value::Dict {
            items: Vec::new(),
            state: None,
            class,
        })?;
        for pair in flat.chunks_exact(2) {
            self.dict_insert(id, pair[0], pair[1])?;
        }
        Ok(id)
    }

    fn new_set(&mut self, items: &[NodeId], frozen: bool) -> Result<NodeId> {
        let id = self.new_node(if frozen {
            Value::FrozenSet(Vec::new())
        } else {
            Value::Set(Vec::new())
        })?;
        for &item in items {
            self.set_insert(id, item)?;
        }
        Ok(id)
    }

    fn new_seq(&mut self, items: Vec<NodeId>, tuple: bool) -> Result<NodeId> {
        self.check_container_len(items.len())?;
        self.new_node(if tuple {
            Value::Tuple(items.into())
        } else {
            Value::List(items)
        })
    }

    /// A tuple or list of the stack's items from `start` on, which are popped. Short tuples
    /// (nearly all of them) are built without allocating.
    fn seq_from_stack(&mut self, start: usize, tuple: bool) -> Result<NodeId> {
        let items = &self.stack[start..];
        self.check_container_len(items.len())?;
        let value = if tuple {
            Value::Tuple(TupleItems::from_slice(items))
        } else {
            Value::List(items.to_vec())
        };
        self.stack.truncate(start);
        self.new_node(value)
    }

    // ----- mutation opcodes ---------------------------------------------------------------

    /// Records a change to `target` if anything could have read it before.
    #[inline]
    fn note_change(&mut self, target: NodeId) {
        if (target as usize) < self.read_until {
            self.arena.note_change(target);
        }
    }

    fn append(&mut self, target: NodeId, items: &[NodeId]) -> Result<()> {
        self.note_change(target);
        let max = self.limits.max_container_len;
        let (list, kind) = match self.arena.get_mut(target) {
            Value::List(v) => (Some(v), ""),
            Value::Object { items, .. } => (
                Some(&mut items.get_or_insert_with(Default::default).list),
                "",
            ),
            other => (None, other.type_name()),
        };
        match list {
            Some(v) if v.len().saturating_add(items.len()) <= max => {
                v.extend_from_slice(items);
                Ok(())
            }
            Some(_) => Err(self.limit("max_container_len", max)),
            None => Err(self.format(format!("cannot append to a {kind}"))),
        }
    }

    fn build(&mut self, target: NodeId, state: NodeId) -> Result<()> {
        // One state per torch object: torch applies every BUILD on a tensor in turn (`set_`
        // twice, or `__setstate__` then `set_`) and its result depends on all of them, so
        // keeping only the last would describe a different tensor. Neither torch nor pickle
        // builds one object twice.
        if let Value::Object {
            callable,
            state: Some(_),
            ..
        } = self.arena.get(target)
        {
            if let Value::Global { module, name } = self.arena.get(*callable) {
                if module.starts_with("torch") {
                    return Err(self.error(
                        ErrorKind::Unsupported,
                        format!("BUILD sets the state of a {module}.{name} object a second time"),
                    ));
                }
            }
        }
        let object = matches!(self.arena.get(target), Value::Object { .. }).then_some(target);
        self.arena.note_build(object);
        self.note_change(target);
        self.read_until = self.arena.len();
        match self.arena.get_mut(target) {
            Value::Dict { state: s, .. } | Value::Object { state: s, .. } => {
                *s = Some(state);
                Ok(())
            }
            other => {
                let kind = other.type_name();
                Err(self.format(format!("cannot set the state of a {kind}")))
            }
        }
    }

    // ----- calls --------------------------------------------------------------------------

    fn call(
        &mut self,
        callable: NodeId,
        args: NodeId,
        kwargs: Option<NodeId>,
        kind: CallKind,
    ) -> Result<NodeId> {
        if !matches!(self.arena.get(args), Value::Tuple(_)) {
            let got = self.arena.get(args).type_name();
            return Err(self.format(format!("the arguments must be a tuple, not a {got}")));
        }
        let no_kwargs = match kwargs.map(|k| self.arena.get(k)) {
            None => true,
            Some(Value::Dict { items, .. }) => items.is_empty(),
            Some(other) => {
                let got = other.type_name();
                return Err(
                    self.format(format!("the keyword arguments must be a dict, not a {got}"))
                );
            }
        };
        let known = match self.arena.global_name(callable) {
            Some((module, name)) if no_kwargs => classify(module, name),
            _ => None,
        };
        if let Some(known) = known {
            if let Some(id) = self.interpret(known, args, kind)? {
                return Ok(id);
            }
        }
        let id = self.new_node(Value::Object {
            callable,
            args,
            kwargs,
            new_object: kind != CallKind::Reduce,
            state: None,
            items: None,
        })?;
        self.read_until = self.arena.len();
        Ok(id)
    }

    fn arg(&self, args: NodeId, i: usize) -> NodeId {
        self.arena.as_seq(args).expect("args is a tuple")[i]
    }

    /// The items of an iterable argument (`list`, `tuple`, `set`, `frozenset`, or a dict's
    /// keys), charged as copies; `None` for anything else.
    fn iterable_items(&mut self, source: NodeId) -> Result<Option<Vec<NodeId>>> {
        let n = match self.arena.get(source) {
            Value::Dict { items, .. } => items.len(),
            _ => match self.arena.as_items(source) {
                Some(v) => v.len(),
                None => return Ok(None),
            },
        };
        self.charge_items(n)?;
        Ok(Some(match self.arena.get(source) {
            Value::Dict { items, .. } => items.iter().map(|&(k, _)| k).collect(),
            _ => self.arena.as_items(source).expect("matched above").to_vec(),
        }))
    }

    /// Flat key/value list of a dict-like argument: a dict, or a list/tuple of 2-item
    /// lists/tuples. `None` for anything else.
    fn pair_items(&mut self, source: NodeId) -> Result<Option<Vec<NodeId>>> {
        let flat: Vec<NodeId> = match self.arena.get(source) {
            Value::Dict { items, .. } => {
                let n = items.len();
                self.charge_items(n.saturating_mul(2))?;
                let Value::Dict { items, .. } = self.arena.get(source) else {
                    unreachable!("matched above")
                };
                items.iter().flat_map(|&(k, v)| [k, v]).collect()
            }
            Value::List(_) | Value::Tuple(_) => {
                let n = self.arena.as_seq(source).map_or(0, <[NodeId]>::len);
                self.charge_items(n.saturating_mul(2))?;
                let arena: &Arena = self.arena;
                let seq = arena.as_seq(source).expect("matched above");
                let mut flat = Vec::with_capacity(n * 2);
                for &pair in seq {
                    match arena.as_seq(pair) {
                        Some([k, v]) => flat.extend([*k, *v]),
                        _ => return Ok(None),
                    }
                }
                flat
            }
            _ => return Ok(None),
        };
        Ok(Some(flat))
    }

    fn bytes_of(&self, id: NodeId) -> Option<&[u8]> {
        match self.arena.get(id) {
            Value::Bytes(b) | Value::ByteArray(b) => Some(b),
            _ => None,
        }
    }

    fn float_of(&self, id: NodeId) -> Option<f64> {
        match self.arena.get(id) {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            Value::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
    }

    /// `str.encode(encoding)` for the encodings pickle writes; `None` for others.
    fn encode_str(&mut self, s: NodeId, encoding: Option<NodeId>) -> Result<Option<Vec<u8>>> {
        let encoding = match encoding {
            None => "utf-8",
            Some(e) => match self.arena.as_str(e) {
                Some(e) => e,
                None => return Ok(None),
            },
        };
        let latin1 = is_latin1(encoding);
        if !latin1 && !is_utf8(encoding) {
            return Ok(None);
        }
        let Some(text) = self.arena.as_str(s) else {
            return Ok(None);
        };
        let out = if latin1 {
            let mut out = Vec::with_capacity(text.len());
            for c in text.chars() {
                match u8::try_from(u32::from(c)) {
                    Ok(b) => out.push(b),
                    Err(_) => {
                        let code = u32::from(c);
                        return Err(self.format(format!(
                            "character U+{code:04X} cannot be encoded as latin-1"
                        )));
                    }
                }
            }
            out
        } else {
            text.as_bytes().to_vec()
        };
        self.charge_bytes(out.len())?;
        Ok(Some(out))
    }

    /// Builds plain data for a known callable; `None` when the arguments have a shape this
    /// machine does not interpret (the call then stays an opaque Object).
    fn interpret(&mut self, known: Known, args: NodeId, kind: CallKind) -> Result<Option<NodeId>> {
        let argc = self.arena.as_seq(args).map_or(0, <[NodeId]>::len);
        // `cls.__new__(cls, ...)` of a mutable builtin ignores its arguments.
        if kind == CallKind::New {
            let empty = match known {
                Known::OrderedDict | Known::Counter | Known::Dict => Some(Value::Dict {
                    items: Vec::new(),
                    state: None,
                    class: known.dict_class(),
                }),
                Known::List => Some(Value::List(Vec::new())),
                Known::Set => Some(Value::Set(Vec::new())),
                Known::ByteArray => Some(Value::ByteArray(Box::default())),
                Known::CodecsEncode | Known::Reconstructor => return Ok(None),
                Known::Tuple | Known::FrozenSet | Known::Bytes | Known::Complex => None,
            };
            if let Some(empty) = empty {
                return self.new_node(empty).map(Some);
            }
        }
        match known {
            Known::OrderedDict | Known::Dict => match argc {
                0 => self.new_dict_from_pairs(&[], known.dict_class()).map(Some),
                1 => match self.pair_items(self.arg(args, 0))? {
                    Some(flat) => self
                        .new_dict_from_pairs(&flat, known.dict_class())
                        .map(Some),
                    None => Ok(None),
                },
                _ => Ok(None),
            },
            // `Counter(mapping)` copies the mapping's items (`Counter.update`: `dict.update`
            // when the counter is empty); any other argument is counted, which stays a call.
            Known::Counter => match argc {
                0 => self.new_dict_from_pairs(&[], known.dict_class()).map(Some),
                1 if matches!(self.arena.get(self.arg(args, 0)), Value::Dict { .. }) => {
                    match self.pair_items(self.arg(args, 0))? {
                        Some(flat) => self
                            .new_dict_from_pairs(&flat, known.dict_class())
                            .map(Some),
                        None => Ok(None),
                    }
                }
                _ => Ok(None),
            },
            Known::List | Known::Tuple | Known::Set | Known::FrozenSet => {
                let items = match argc {
                    0 => Vec::new(),
                    1 => match self.iterable_items(self.arg(args, 0))? {
                        Some(items) => items,
                        None => return Ok(None),
                    },
                    _ => return Ok(None),
                };
                match known {
                    Known::List => self.new_seq(items, false).map(Some),
                    Known::Tuple => self.new_seq(items, true).map(Some),
                    Known::Set => self.new_set(&items, false).map(Some),
                    _ => self.new_set(&items, true).map(Some),
                }
            }
            Known::ByteArray | Known::Bytes => {
                let bytes = match argc {
                    0 => Vec::new(),
                    1 => {
                        let source = self.arg(args, 0);
                        match self.bytes_of(source) {
                            Some(b) => {
                                let b = b.to_vec();
                                self.charge_bytes(b.len())?;
                                b
                            }
                            None => return Ok(None),
                        }
                    }
                    2 => {
                        let (s, e) = (self.arg(args, 0), self.arg(args, 1));
                        match self.encode_str(s, Some(e))? {
                            Some(b) => b,
                            None => return Ok(None),
                        }
                    }
                    _ => return Ok(None),
                };
                let value = if known == Known::Bytes {
                    Value::Bytes(bytes.into_boxed_slice())
                } else {
                    Value::ByteArray(bytes.into_boxed_slice())
                };
                self.new_node(value).map(Some)
            }
            Known::Complex => {
                let parts: Vec<Option<f64>> = (0..argc)
                    .map(|i| self.float_of(self.arg(args, i)))
                    .collect();
                let (re, im) = match parts.as_slice() {
                    [] => (0.0, 0.0),
                    [Some(re)] => (*re, 0.0),
                    [Some(re), Some(im)] => (*re, *im),
                    _ => return Ok(None),
                };
                self.new_node(Value::Complex(re, im)).map(Some)
            }
            Known::CodecsEncode => {
                let (s, e) = match argc {
                    1 => (self.arg(args, 0), None),
                    2 => (self.arg(args, 0), Some(self.arg(args, 1))),
                    _ => return Ok(None),
                };
                match self.encode_str(s, e)? {
                    Some(b) => self.new_node(Value::Bytes(b.into_boxed_slice())).map(Some),
                    None => Ok(None),
                }
            }
            Known::Reconstructor => {
                if argc != 3 {
                    return Ok(None);
                }
                // copyreg._reconstructor(cls, base, state): base.__new__(cls[, state]).
                let cls = self.arg(args, 0);
                let state = self.arg(args, 2);
                let new_args = if matches!(self.arena.get(state), Value::None) {
                    Vec::new()
                } else {
                    vec![state]
                };
                let new_args = self.new_node(Value::Tuple(new_args.into()))?;
                let id = self.new_node(Value::Object {
                    callable: cls,
                    args: new_args,
                    kwargs: None,
                    new_object: true,
                    state: None,
                    items: None,
                })?;
                self.read_until = self.arena.len();
                Ok(Some(id))
            }
        }
    }

    // ----- values from bytes ----------------------------------------------------------------

    fn push_integer(&mut self, value: Integer) -> Result<()> {
        let v = match value {
            Integer::Small(i) => Value::Int(i),
            Integer::Big(b) => {
                self.check_str_len(b.len())?;
                Value::BigInt(b.into_boxed_slice())
            }
        };
        self.push_new(v).map(drop)
    }

    fn push_text_integer(&mut self, line: &[u8]) -> Result<()> {
        let max_digits = self.limits.max_str_len.min(text::MAX_DECIMAL_DIGITS);
        match text::parse_decimal(line, max_digits) {
            Ok(v) => self.push_integer(v),
            Err(e) if e.contains("over the limit") => Err(self.error(
                ErrorKind::Limit,
                format!(
                    "{e} (the limit is the smaller of max_str_len = {} and {})",
                    self.limits.max_str_len,
                    text::MAX_DECIMAL_DIGITS
                ),
            )),
            Err(e) => Err(self.format(e)),
        }
    }

    /// A Python 2 `str`: text when it is valid UTF-8, bytes otherwise.
    fn push_py2_str(&mut self, bytes: Vec<u8>) -> Result<()> {
        self.check_str_len(bytes.len())?;
        let v = match String::from_utf8(bytes) {
            Ok(s) => Value::Str(self.arena.store_str(&s)),
            Err(e) => Value::Bytes(e.into_bytes().into_boxed_slice()),
        };
        self.push_new(v).map(drop)
    }

    fn push_utf8(&mut self, bytes: &[u8]) -> Result<()> {
        match std::str::from_utf8(bytes) {
            Ok(s) => {
                let s = self.arena.store_str(s);
                self.push_new(Value::Str(s)).map(drop)
            }
            Err(e) => Err(self.format(format!("string is not valid UTF-8 ({e})"))),
        }
    }

    fn new_global(&mut self, module: &str, name: &str) -> Result<NodeId> {
        // Globals are named in messages and compared once per tensor that uses them, so a
        // shared one must be short; real module paths and qualified names are < 200 bytes.
        if module.len().saturating_add(name.len()) > MAX_GLOBAL_NAME_LEN {
            return Err(self.error(
                ErrorKind::Limit,
                format!(
                    "global name of {} bytes; the limit is {MAX_GLOBAL_NAME_LEN}",
                    module.len().saturating_add(name.len())
                ),
            ));
        }
        self.new_node(Value::Global {
            module: module.into(),
            name: name.into(),
        })
    }

    /// A global, renamed from Python 2's names when `rename` (see [`python2_rename`]); a
    /// renamed one keeps its written name for messages.
    fn new_renamed_global(&mut self, module: &str, name: &str, rename: bool) -> Result<NodeId> {
        let (new_module, new_name) = if rename {
            python2_rename(module, name)
        } else {
            (module, name)
        };
        let id = self.new_global(new_module, new_name)?;
        if (new_module, new_name) != (module, name) {
            self.arena.note_written_name(id, format!("{module}.{name}"));
        }
        Ok(id)
    }

    // ----- the loop -----------------------------------------------------------------------

    fn run(&mut self) -> Result<(NodeId, usize)> {
        loop {
            let Some(&opcode) = self.data.get(self.pos) else {
                return Err(Error::format(format!(
                    "pickle truncated at offset {}: no STOP opcode",
                    self.pos
                )));
            };
            self.pos += 1;
            if fast_steps_enabled() && self.fast_step(opcode) {
                continue;
            }
            // For messages; `fast_step` reports none, so only the opcodes `step` runs set them.
            self.op_offset = self.pos - 1;
            self.op = opcode;
            if opcode == op::STOP {
                let root = self.pop()?;
                return Ok((root, self.pos));
            }
            self.step(opcode)?;
        }
    }

    /// The commonest opcodes of torch's pickles (memo writes and reads, small ints, False,
    /// None, MARK: two of every three), done in the loop when nothing about them can fail.
    /// `false` changes nothing and leaves the opcode to `step`, which does the same with
    /// every check and reports any error.
    #[inline(always)]
    fn fast_step(&mut self, opcode: u8) -> bool {
        // Each arm reads only what its opcode needs (the memo key, the stack's room): this
        // runs two of every three opcodes.
        match opcode {
            op::BINPUT | op::LONG_BINPUT => {
                let (key, key_len) = match self.memo_key(opcode) {
                    Some(k) => k,
                    None => return false,
                };
                let Some(&top) = self.stack.last() else {
                    return false;
                };
                if self.stack.len() <= self.fence()
                    || !self.memo.put(key as u64, top, self.limits.max_memo)
                {
                    return false;
                }
                self.pos += key_len;
                true
            }
            op::BINGET | op::LONG_BINGET if self.room() => {
                let Some((key, key_len)) = self.memo_key(opcode) else {
                    return false;
                };
                match self.memo.dense.get(key) {
                    Some(&id) if id != NO_NODE => {
                        self.pos += key_len;
                        self.stack.push(id);
                        true
                    }
                    _ => false,
                }
            }
            op::BININT1 | op::NONE | op::NEWFALSE | op::NEWTRUE | op::EMPTY_TUPLE
                if self.room() =>
            {
                let slot = match opcode {
                    op::BININT1 => match self.data.get(self.pos) {
                        Some(&v) => usize::from(v),
                        None => return false,
                    },
                    op::NONE => 256,
                    op::NEWFALSE => 257,
                    op::NEWTRUE => 258,
                    _ => 259,
                };
                match self.shared[slot] {
                    NO_NODE => false,
                    id => {
                        if opcode == op::BININT1 {
                            self.pos += 1;
                        }
                        self.stack.push(id);
                        true
                    }
                }
            }
            op::MARK if self.marks.len() < self.limits.max_marks => {
                self.marks.push(self.stack.len());
                true
            }
            // A new tuple of the top 1 to 3 items, or a persistent id of the top item: each
            // replaces what it pops, so the stack has room.
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 | op::BINPERSID if self.can_add_node() => {
                let n = match opcode {
                    op::BINPERSID => 1,
                    _ => usize::from(opcode - op::TUPLE1 + 1),
                };
                let start = self.stack.len().wrapping_sub(n);
                if self.stack.len() < self.fence() + n || n > self.limits.max_container_len {
                    return false;
                }
                let value = if opcode == op::BINPERSID {
                    Value::PersistentId(self.stack[start])
                } else {
                    Value::Tuple(TupleItems::from_slice(&self.stack[start..]))
                };
                self.stack.truncate(start);
                let id = self.arena.push(value);
                self.stack.push(id);
                if opcode == op::BINPERSID {
                    self.read_until = self.arena.len();
                    self.arena.note_persistent_id(id);
                }
                true
            }
            // A call (twice per tensor in torch's pickles: `_rebuild_tensor_v2(...)` and its
            // empty `OrderedDict()` of hooks) of a global that stays an object, or an empty
            // dict: what `call` makes of them. Other calls go to `step`.
            op::REDUCE if self.can_add_node() => {
                let len = self.stack.len();
                if len < self.fence() + 2 {
                    return false;
                }
                let (callable, args) = (self.stack[len - 2], self.stack[len - 1]);
                let Value::Tuple(items) = self.arena.get(args) else {
                    return false;
                };
                let Value::Global { module, name } = self.arena.get(callable) else {
                    return false;
                };
                let value = match classify(module, name) {
                    None => Value::Object {
                        callable,
                        args,
                        kwargs: None,
                        new_object: false,
                        state: None,
                        items: None,
                    },
                    Some(known @ (Known::OrderedDict | Known::Dict)) if items.is_empty() => {
                        Value::Dict {
                            items: Vec::new(),
                            state: None,
                            class: known.dict_class(),
                        }
                    }
                    Some(_) => return false,
                };
                let object = matches!(value, Value::Object { .. });
                self.stack.truncate(len - 2);
                let id = self.arena.push(value);
                self.stack.push(id);
                if object {
                    self.read_until = self.arena.len();
                }
                true
            }
            op::TUPLE if self.room() && self.can_add_node() => {
                let Some(&start) = self.marks.last() else {
                    return false;
                };
                match self.stack.len().checked_sub(start) {
                    Some(n) if n <= self.limits.max_container_len => {}
                    _ => return false,
                }
                self.marks.pop();
                let value = Value::Tuple(TupleItems::from_slice(&self.stack[start..]));
                self.stack.truncate(start);
                let id = self.arena.push(value);
                self.stack.push(id);
                true
            }
            op::SHORT_BINUNICODE | op::BINUNICODE if self.room() && self.can_add_node() => {
                let (len_bytes, n) = match opcode {
                    op::SHORT_BINUNICODE => match self.data.get(self.pos) {
                        Some(&n) => (1, usize::from(n)),
                        None => return false,
                    },
                    _ => match self.data.get(self.pos..self.pos + 4) {
                        Some(&[a, b, c, d]) => (4, u32::from_le_bytes([a, b, c, d]) as usize),
                        _ => return false,
                    },
                };
                let start = self.pos + len_bytes;
                let text = match self.data.get(start..start.saturating_add(n)) {
                    Some(bytes) if n <= self.limits.max_str_len => std::str::from_utf8(bytes),
                    _ => return false,
                };
                let Ok(text) = text else {
                    return false;
                };
                let text = self.arena.store_str(text);
                let id = self.arena.push(Value::Str(text));
                self.stack.push(id);
                self.pos = start + n;
                true
            }
            _ => false,
        }
    }

    /// The key of a BINPUT / BINGET (one byte) or LONG_BINPUT / LONG_BINGET (four) and its
    /// length, when its bytes are all there.
    #[inline(always)]
    fn memo_key(&self, opcode: u8) -> Option<(usize, usize)> {
        if matches!(opcode, op::BINPUT | op::BINGET) {
            self.data.get(self.pos).map(|&k| (usize::from(k), 1))
        } else {
            match self.data.get(self.pos..self.pos.checked_add(4)?) {
                Some(&[a, b, c, d]) => Some((u32::from_le_bytes([a, b, c, d]) as usize, 4)),
                _ => None,
            }
        }
    }

    /// Whether the stack has room for one more item (what `push` checks).
    #[inline(always)]
    fn room(&self) -> bool {
        self.stack.len() < self.limits.max_stack
    }

    /// What `new_node` checks before it adds a value.
    #[inline(always)]
    fn can_add_node(&self) -> bool {
        self.nodes_used() < self.limits.max_nodes && self.arena.len() < NodeId::MAX as usize
    }

    fn step(&mut self, opcode: u8) -> Result<()> {
        match opcode {
            op::MARK => {
                if self.marks.len() >= self.limits.max_marks {
                    return Err(self.limit("max_marks", self.limits.max_marks));
                }
                self.marks.push(self.stack.len());
            }
            op::POP => {
                if self.marks.last() == Some(&self.stack.len()) {
                    self.marks.pop();
                } else {
                    self.pop()?;
                }
            }
            op::POP_MARK => {
                self.pop_mark()?;
            }
            op::DUP => {
                let top = self.top()?;
                self.push(top)?;
            }

            // ----- numbers -----
            op::NONE => {
                self.push_shared(Value::None)?;
            }
            op::NEWTRUE | op::NEWFALSE => {
                self.push_shared(Value::Bool(opcode == op::NEWTRUE))?;
            }
            op::INT => {
                let line = self.line()?;
                match line {
                    b"00" => self.push_new(Value::Bool(false)).map(drop)?,
                    b"01" => self.push_new(Value::Bool(true)).map(drop)?,
                    _ => self.push_text_integer(line)?,
                }
            }
            op::LONG => {
                let mut line = self.line()?;
                if let Some(rest) = line.strip_suffix(b"L") {
                    line = rest;
                }
                self.push_text_integer(line)?;
            }
            op::BININT => {
                let v = self.read_i32()?;
                self.push_shared(Value::Int(i64::from(v)))?;
            }
            op::BININT1 => {
                let v = self.read_u8()?;
                self.push_shared(Value::Int(i64::from(v)))?;
            }
            op::BININT2 => {
                let v = self.read_u16()?;
                self.push_shared(Value::Int(i64::from(v)))?;
            }
            op::LONG1 | op::LONG4 => {
                let n = if opcode == op::LONG1 {
                    u64::from(self.read_u8()?)
                } else {
                    let n = self.read_i32()?;
                    u64::try_from(n).map_err(|_| self.format("negative byte count"))?
                };
                let bytes = self.take_sized(n)?;
                self.push_integer(text::integer_from_le(bytes))?;
            }
            op::FLOAT => {
                let line = self.line()?;
                let v = std::str::from_utf8(line)
                    .ok()
                    .and_then(|s| s.trim_ascii().parse::<f64>().ok())
                    .ok_or_else(|| self.format("invalid float literal"))?;
                self.push_new(Value::Float(v))?;
            }
            op::BINFLOAT => {
                let v = f64::from_be_bytes(self.take_array()?);
                self.push_new(Value::Float(v))?;
            }

            // ----- strings -----
            op::STRING => {
                let line = self.line()?;
                let body = match line {
                    [q, body @ .., q2] if q == q2 && (*q == b'\'' || *q == b'"') => body,
                    _ => return Err(self.format("the STRING argument must be quoted")),
                };
                let bytes = text::escape_decode(body).map_err(|e| self.format(e))?;
                self.push_py2_str(bytes)?;
            }
            op::BINSTRING | op::SHORT_BINSTRING => {
                let n = if opcode == op::SHORT_BINSTRING {
                    u64::from(self.read_u8()?)
                } else {
                    let n = self.read_i32()?;
                    u64::try_from(n).map_err(|_| self.format("negative byte count"))?
                };
                let bytes = self.take_sized(n)?;
                self.push_py2_str(bytes.to_vec())?;
            }
            op::UNICODE => {
                let line = self.line()?;
                let s = text::raw_unicode_escape_decode(line).map_err(|e| self.format(e))?;
                self.check_str_len(s.len())?;
                let s = self.arena.store_str(&s);
                self.push_new(Value::Str(s))?;
            }
            op::BINUNICODE | op::SHORT_BINUNICODE | op::BINUNICODE8 => {
                let n = match opcode {
                    op::SHORT_BINUNICODE => u64::from(self.read_u8()?),
                    op::BINUNICODE => u64::from(self.read_u32()?),
                    _ => self.read_u64()?,
                };
                let bytes = self.take_sized(n)?;
                self.push_utf8(bytes)?;
            }
            op::BINBYTES | op::SHORT_BINBYTES | op::BINBYTES8 | op::BYTEARRAY8 => {
                let n = match opcode {
                    op::SHORT_BINBYTES => u64::from(self.read_u8()?),
                    op::BINBYTES => u64::from(self.read_u32()?),
                    _ => self.read_u64()?,
                };
                let bytes: Box<[u8]> = self.take_sized(n)?.into();
                self.push_new(if opcode == op::BYTEARRAY8 {
                    Value::ByteArray(bytes)
                } else {
                    Value::Bytes(bytes)
                })?;
            }

            // ----- containers -----
            op::EMPTY_LIST => {
                self.push_new(Value::List(Vec::new()))?;
            }
            op::EMPTY_TUPLE => {
                self.push_shared(Value::Tuple(TupleItems::from_slice(&[])))?;
            }
            op::EMPTY_DICT => {
                self.push_new(Value::Dict {
                    items: Vec::new(),
                    state: None,
                    class: DictClass::Dict,
                })?;
            }
            op::EMPTY_SET => {
                self.push_new(Value::Set(Vec::new()))?;
            }
            op::LIST | op::TUPLE => {
                let mark = self
                    .marks
                    .pop()
                    .ok_or_else(|| self.format("no MARK on the stack"))?;
                let id = self.seq_from_stack(mark, opcode == op::TUPLE)?;
                self.push(id)?;
            }
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(opcode - op::TUPLE1 + 1);
                if self.stack.len() < self.fence() + n {
                    return Err(self.underflow());
                }
                let id = self.seq_from_stack(self.stack.len() - n, true)?;
                self.push(id)?;
            }
            op::DICT => {
                let items = self.pop_mark()?;
                let id = self.new_dict_from_pairs(&items, DictClass::Dict)?;
                self.push(id)?;
            }
            op::FROZENSET => {
                let items = self.pop_mark()?;
                let id = self.new_set(&items, true)?;
                self.push(id)?;
            }
            op::APPEND => {
                let item = self.pop()?;
                let target = self.top()?;
                self.append(target, &[item])?;
            }
            op::APPENDS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.append(target, &items)?;
            }
            op::SETITEM => {
                let value = self.pop()?;
                let key = self.pop()?;
                let target = self.top()?;
                self.note_change(target);
                self.dict_insert(target, key, value)?;
            }
            op::SETITEMS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                if items.len() % 2 != 0 {
                    return Err(self.format("odd number of items"));
                }
                self.note_change(target);
                self.index.reserve(items.len() / 2);
                for pair in items.chunks_exact(2) {
                    self.dict_insert(target, pair[0], pair[1])?;
                }
            }
            op::ADDITEMS => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                if !matches!(self.arena.get(target), Value::Set(_)) {
                    let kind = self.arena.get(target).type_name();
                    return Err(self.format(format!("cannot add items to a {kind}")));
                }
                self.note_change(target);
                for item in items {
                    self.set_insert(target, item)?;
                }
            }
            op::BUILD => {
                let state = self.pop()?;
                let target = self.top()?;
                self.build(target, state)?;
            }

            // ----- memo -----
            op::PUT => {
                let key = self.text_memo_key()?;
                self.memo_put(key)?;
            }
            op::BINPUT => {
                let key = self.read_u8()?;
                self.memo_put(u64::from(key))?;
            }
            op::LONG_BINPUT => {
                let key = self.read_u32()?;
                self.memo_put(u64::from(key))?;
            }
            op::MEMOIZE => {
                let key = self.memo.len() as u64;
                self.memo_put(key)?;
            }
            op::GET => {
                let key = self.text_memo_key()?;
                self.memo_get(key)?;
            }
            op::BINGET => {
                let key = self.read_u8()?;
                self.memo_get(u64::from(key))?;
            }
            op::LONG_BINGET => {
                let key = self.read_u32()?;
                self.memo_get(u64::from(key))?;
            }

            // ----- globals and calls (never resolved, never called) -----
            op::GLOBAL => {
                let module = self.utf8_line("module name")?;
                let name = self.utf8_line("global name")?;
                // torch's weights_only unpickler renames Python 2 names at every GLOBAL.
                let id = self.new_renamed_global(module, name, true)?;
                self.push(id)?;
            }
            op::STACK_GLOBAL => {
                let name = self.pop()?;
                let module = self.pop()?;
                let (Some(m), Some(n)) = (self.arena.as_str(module), self.arena.as_str(name))
                else {
                    return Err(self.format("module and name must be strings"));
                };
                // CPython's find_class renames Python 2 names below protocol 3 only (torch's
                // weights_only unpickler refuses STACK_GLOBAL).
                let (m, n) = (m.to_owned(), n.to_owned());
                let id = self.new_renamed_global(&m, &n, self.proto < 3)?;
                self.push(id)?;
            }
            op::REDUCE => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let id = self.call(callable, args, None, CallKind::Reduce)?;
                self.push(id)?;
            }
            op::NEWOBJ => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let id = self.call(cls, args, None, CallKind::New)?;
                self.push(id)?;
            }
            op::NEWOBJ_EX => {
                let kwargs = self.pop()?;
                let args = self.pop()?;
                let cls = self.pop()?;
                let id = self.call(cls, args, Some(kwargs), CallKind::New)?;
                self.push(id)?;
            }
            op::INST => {
                let module = self.utf8_line("module name")?;
                let name = self.utf8_line("class name")?;
                let items = self.pop_mark()?;
                let cls = self.new_renamed_global(module, name, self.proto < 3)?;
                let args = self.new_seq(items, true)?;
                let id = self.call(cls, args, None, CallKind::Instantiate)?;
                self.push(id)?;
            }
            op::OBJ => {
                let mut items = self.pop_mark()?;
                if items.is_empty() {
                    return Err(self.format("no class between MARK and OBJ"));
                }
                let cls = items.remove(0);
                let args = self.new_seq(items, true)?;
                let id = self.call(cls, args, None, CallKind::Instantiate)?;
                self.push(id)?;
            }
            op::PERSID => {
                let line = self.line()?;
                if !line.is_ascii() {
                    return Err(self.format("persistent id is not ASCII"));
                }
                self.check_str_len(line.len())?;
                let s = std::str::from_utf8(line).expect("ASCII");
                let s = self.arena.store_str(s);
                let pid = self.new_node(Value::Str(s))?;
                let id = self.push_new(Value::PersistentId(pid))?;
                self.read_until = self.arena.len();
                self.arena.note_persistent_id(id);
            }
            op::BINPERSID => {
                let pid = self.pop()?;
                let id = self.push_new(Value::PersistentId(pid))?;
                self.read_until = self.arena.len();
                self.arena.note_persistent_id(id);
            }

            // ----- framing and protocol -----
            op::PROTO => {
                let proto = self.read_u8()?;
                self.proto = proto;
                if proto > op::HIGHEST_PROTOCOL {
                    return Err(self.error(
                        ErrorKind::Unsupported,
                        format!("unsupported pickle protocol {proto}"),
                    ));
                }
            }
            op::FRAME => {
                // Frames only group opcodes for buffered readers; the input is contiguous, so
                // only check that the declared frame is present.
                let n = self.read_u64()?;
                if n > (self.data.len() - self.pos) as u64 {
                    return Err(self.truncated(n));
                }
            }

            op::EXT1 | op::EXT2 | op::EXT4 => {
                return Err(self.error(
                    ErrorKind::Unsupported,
                    "the extension registry (copyreg) is not supported",
                ));
            }
            op::NEXT_BUFFER | op::READONLY_BUFFER => {
                return Err(self.error(
                    ErrorKind::Unsupported,
                    "out-of-band buffers (protocol 5) are not supported",
                ));
            }
            other => {
                return Err(Error::format(format!(
                    "pickle: unknown opcode byte 0x{other:02x} at offset {}",
                    self.op_offset
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod memo_tests {
    use super::Memo;

    #[test]
    fn memo_memory_stays_proportional_to_its_entries() {
        // Each key just inside twice the vector's length used to double the vector: 30 puts
        // asked for gigabytes.
        let mut memo = Memo::default();
        let mut key = 1023u64;
        for id in 0..40 {
            assert!(memo.put(key, id, usize::MAX));
            assert_eq!(memo.get(key), Some(id));
            key = key * 2 + 1025;
        }
        assert!(memo.dense.len() <= 4096, "{} slots", memo.dense.len());
        // Keys in order, as picklers write them, all land in the vector.
        let mut memo = Memo::default();
        for key in 0..100_000u64 {
            assert!(memo.put(key, key as u32, usize::MAX));
        }
        assert!(memo.sparse.is_empty());
        assert_eq!(memo.get(99_999), Some(99_999));
        assert!(memo.dense.len() < 150_000);
    }
}
