//! The pickle `torch.save` writes, protocol 2, built opcode by opcode, in two shapes: a state
//! dict of tensors ([`StateDictPickle`]: an `OrderedDict` of name →
//! `torch._utils._rebuild_tensor_v2(...)`, or `_v3` for the dtypes that have no legacy storage
//! class, wrapped in `_rebuild_parameter` for parameters), and a whole value tree
//! ([`tree_pickle`]: the saved object as torch.load returns it, with its tensors written the
//! same way). Only what torch's weights-only unpickler reads is written; the tree is walked
//! with an explicit stack, so nothing recurses.

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pickle::{Arena, DictClass, NodeId, Value};
use std::collections::{HashMap, HashSet};

// Protocol 2 opcodes (Lib/pickletools.py), the ones torch's pickler emits: the reader's names.
use crate::pickle::opcodes::{
    APPENDS, BINFLOAT, BINGET, BININT, BININT1, BININT2, BINPERSID, BINPUT, BINUNICODE, BUILD,
    EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, GLOBAL, LONG1, LONG_BINGET, LONG_BINPUT, MARK, NEWFALSE,
    NEWTRUE, NONE, PROTO, REDUCE, SETITEMS, STOP, TUPLE, TUPLE1, TUPLE2, TUPLE3,
};

/// Items per SETITEMS, as Python's pickler batches them.
const BATCH: usize = 1000;

/// One tensor as the pickle describes it: which storage record, and the view.
pub struct TensorRecord<'a> {
    pub name: &'a str,
    pub dtype: DType,
    /// The storage's record key (`data/<key>`).
    pub storage_key: usize,
    /// Bytes of the storage.
    pub storage_bytes: u64,
    pub storage_offset: u64,
    pub shape: &'a [i64],
    pub strides: &'a [i64],
    pub requires_grad: bool,
    pub is_parameter: bool,
}

/// Builds `data.pkl` for a state dict: `add` each tensor in order, then `finish`.
pub struct StateDictPickle {
    e: Emitter,
    /// Items since the open MARK of the current SETITEMS batch.
    pending: usize,
}

impl StateDictPickle {
    pub fn new() -> StateDictPickle {
        let mut e = Emitter::new();
        e.empty_ordered_dict();
        StateDictPickle { e, pending: 0 }
    }

    pub fn add(&mut self, t: &TensorRecord<'_>) {
        if self.pending == 0 {
            self.e.out.push(MARK);
        }
        self.e.string(t.name);
        self.e.tensor(t);
        self.pending += 1;
        if self.pending == BATCH {
            self.e.out.push(SETITEMS);
            self.pending = 0;
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        if self.pending > 0 {
            self.e.out.push(SETITEMS);
        }
        self.e.finish()
    }
}

/// One step of [`tree_pickle`]'s walk.
enum Step {
    /// Write this node (or a memo reference to it).
    Visit(NodeId),
    /// Write these opcodes.
    Ops(&'static [u8]),
    /// Memoize the object just built for this node, and end its construction.
    Memoize(NodeId),
}

/// `data.pkl` for the value tree below `root`, as torch.save pickles what torch.load returned:
/// None, bools, ints, floats, complex, str, bytes, bytearray, lists, tuples, dicts,
/// `OrderedDict`s and `Counter`s (each as the class it was, with its BUILD state: a state
/// dict's `_metadata`), sets, and tensors (`tensor(node)`: the record of the
/// tensor the table has for that node). A node reached twice is written once and referenced
/// (shared objects stay shared; a list or dict may contain itself).
///
/// `Unsupported`, naming the value, for what torch's weights-only unpickler cannot read or
/// mmckpt does not write: instances of other classes, references to globals, frozensets,
/// a plain dict with BUILD state (torch.load cannot set attributes on a dict), ints beyond
/// 255 bytes, strings beyond 4 GiB, a tuple that contains itself.
pub fn tree_pickle<'t>(
    arena: &Arena,
    root: NodeId,
    tensor: &dyn Fn(NodeId) -> Option<TensorRecord<'t>>,
) -> Result<Vec<u8>> {
    let mut e = Emitter::new();
    let mut memo: HashMap<NodeId, u32> = HashMap::new();
    // Tuples being built: one reached again before it is memoized contains itself.
    let mut building: HashSet<NodeId> = HashSet::new();
    let mut stack = vec![Step::Visit(root)];
    let mut steps = Vec::new();
    while let Some(step) = stack.pop() {
        let node = match step {
            Step::Ops(ops) => {
                e.out.extend_from_slice(ops);
                continue;
            }
            Step::Memoize(node) => {
                building.remove(&node);
                memo.insert(node, e.put_new());
                continue;
            }
            Step::Visit(node) => node,
        };
        if let Some(&index) = memo.get(&node) {
            e.get(index);
            continue;
        }
        if building.contains(&node) {
            return Err(Error::unsupported(
                "a tuple contains itself, which torch's weights-only unpickler cannot read",
            ));
        }
        // What follows this node's opening opcodes, in order (pushed reversed).
        steps.clear();
        match arena.get(node) {
            Value::None => e.out.push(NONE),
            Value::Bool(b) => e.bool(*b),
            Value::Int(i) => e.signed(*i),
            Value::BigInt(bytes) => {
                let len = u8::try_from(bytes.len()).map_err(|_| {
                    unsupported(format!("an int of {} bytes", bytes.len()), "LONG4")
                })?;
                e.out.extend_from_slice(&[LONG1, len]);
                e.out.extend_from_slice(bytes);
            }
            Value::Float(f) => e.float(*f),
            Value::Complex(re, im) => {
                e.global("builtins", "complex");
                e.float(*re);
                e.float(*im);
                e.out.extend_from_slice(&[TUPLE2, REDUCE]);
            }
            Value::Str(s) => e.checked_string(arena.str(*s))?,
            Value::Bytes(bytes) => e.bytes(bytes)?,
            Value::ByteArray(bytes) => {
                e.global("builtins", "bytearray");
                e.bytes(bytes)?;
                e.out.extend_from_slice(&[TUPLE1, REDUCE]);
                memo.insert(node, e.put_new());
            }
            Value::List(items) => {
                e.out.push(EMPTY_LIST);
                memo.insert(node, e.put_new());
                batches(&mut steps, items.iter().map(|&i| [Some(i), None]), APPENDS);
            }
            Value::Tuple(_) => {
                let items = arena.as_items(node).unwrap_or(&[]);
                if items.len() > 3 {
                    e.out.push(MARK);
                }
                steps.extend(items.iter().map(|&i| Step::Visit(i)));
                steps.push(Step::Ops(match items.len() {
                    0 => &[EMPTY_TUPLE],
                    1 => &[TUPLE1],
                    2 => &[TUPLE2],
                    3 => &[TUPLE3],
                    _ => &[TUPLE],
                }));
                steps.push(Step::Memoize(node));
                building.insert(node);
            }
            Value::Dict {
                items,
                state,
                class,
            } => {
                // `OrderedDict()` / `Counter()`, then its items: the call torch's weights-only
                // unpickler allows for both, memoized before the items so that a mapping may
                // contain itself (torch.save writes a Counter as `Counter({items})`, which
                // loads the same).
                match class {
                    DictClass::Dict if state.is_some() => {
                        return Err(unsupported(
                            "a dict with BUILD state".into(),
                            "BUILD on a dict (and torch.load cannot read it either)",
                        ))
                    }
                    DictClass::Dict => e.out.push(EMPTY_DICT),
                    DictClass::OrderedDict => e.empty_ordered_dict(),
                    DictClass::Counter => {
                        e.global("collections", "Counter");
                        e.out.extend_from_slice(&[EMPTY_TUPLE, REDUCE]);
                    }
                }
                memo.insert(node, e.put_new());
                batches(
                    &mut steps,
                    items.iter().map(|&(k, v)| [Some(k), Some(v)]),
                    SETITEMS,
                );
                if let Some(state) = *state {
                    steps.push(Step::Visit(state));
                    steps.push(Step::Ops(&[BUILD]));
                }
            }
            Value::Set(items) => {
                // As protocol 2 pickles a set: builtins.set([items]).
                e.global("builtins", "set");
                e.out.push(EMPTY_LIST);
                e.put_new();
                batches(&mut steps, items.iter().map(|&i| [Some(i), None]), APPENDS);
                steps.push(Step::Ops(&[TUPLE1, REDUCE]));
                steps.push(Step::Memoize(node));
                building.insert(node);
            }
            Value::Object { .. } => match tensor(node) {
                Some(record) => {
                    e.tensor(&record);
                    memo.insert(node, e.put_new());
                }
                None => {
                    let class = match arena.get(node) {
                        Value::Object { callable, .. } => arena
                            .global_name(*callable)
                            .map_or("an unknown class".to_string(), |(m, n)| format!("{m}.{n}")),
                        _ => unreachable!("matched an object"),
                    };
                    return Err(unsupported(
                        format!("an instance of {class}"),
                        "a class outside its allowlist",
                    ));
                }
            },
            Value::FrozenSet(_) => {
                return Err(unsupported("a frozenset".into(), "builtins.frozenset"))
            }
            Value::Global { module, name } => {
                return Err(unsupported(
                    format!("a reference to {module}.{name}"),
                    "globals outside its allowlist",
                ))
            }
            Value::PersistentId(_) => {
                return Err(unsupported(
                    "a persistent id that is not a tensor's storage".into(),
                    "it",
                ))
            }
        }
        stack.extend(steps.drain(..).rev());
    }
    Ok(e.finish())
}

fn unsupported(what: String, refused: &str) -> Error {
    Error::unsupported(format!(
        "the saved object holds {what}; torch's weights-only unpickler refuses {refused}, so \
         mmckpt does not write it"
    ))
}

/// `MARK items… op` per batch of [`BATCH`] items (each item one or two nodes).
fn batches(steps: &mut Vec<Step>, items: impl Iterator<Item = [Option<NodeId>; 2]>, op: u8) {
    let ops: &'static [u8] = if op == APPENDS {
        &[APPENDS]
    } else {
        &[SETITEMS]
    };
    let mut in_batch = 0;
    for item in items {
        if in_batch == 0 {
            steps.push(Step::Ops(&[MARK]));
        }
        steps.extend(item.into_iter().flatten().map(Step::Visit));
        in_batch += 1;
        if in_batch == BATCH {
            steps.push(Step::Ops(ops));
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        steps.push(Step::Ops(ops));
    }
}

/// The opcode writer both pickles share: memoized globals, the memo counter, scalars, and a
/// tensor's rebuild call.
struct Emitter {
    out: Vec<u8>,
    /// Globals written so far, by name, with their memo index.
    globals: HashMap<&'static str, u32>,
    next_memo: u32,
}

impl Emitter {
    fn new() -> Emitter {
        Emitter {
            out: vec![PROTO, 2],
            globals: HashMap::new(),
            next_memo: 0,
        }
    }

    fn finish(mut self) -> Vec<u8> {
        self.out.push(STOP);
        self.out
    }

    /// `_rebuild_tensor_v2(...)` (or `_v3`), in `_rebuild_parameter` for a parameter.
    fn tensor(&mut self, t: &TensorRecord<'_>) {
        let class = t.dtype.storage_class();
        if t.is_parameter {
            self.global("torch._utils", "_rebuild_parameter");
        }
        match class {
            Some(_) => self.global("torch._utils", "_rebuild_tensor_v2"),
            None => self.global("torch._utils", "_rebuild_tensor_v3"),
        }
        self.out.push(MARK);
        // The persistent id: ('storage', class, key, location, numel).
        self.out.push(MARK);
        self.string("storage");
        let numel = match class {
            Some(class) => {
                self.global("torch", class);
                t.storage_bytes / t.dtype.itemsize() as u64
            }
            None => {
                self.global("torch.storage", "UntypedStorage");
                t.storage_bytes
            }
        };
        self.string(&t.storage_key.to_string());
        self.string("cpu");
        self.int(numel);
        self.out.extend_from_slice(&[TUPLE, BINPERSID]);
        self.int(t.storage_offset);
        self.tuple(t.shape);
        self.tuple(t.strides);
        // A parameter's inner tensor is saved without requires_grad; the parameter carries it.
        self.bool(t.requires_grad && !t.is_parameter);
        self.empty_ordered_dict();
        if class.is_none() {
            self.global("torch", t.dtype.name());
        }
        self.out.extend_from_slice(&[TUPLE, REDUCE]);
        if t.is_parameter {
            self.bool(t.requires_grad);
            self.empty_ordered_dict();
            self.out.extend_from_slice(&[TUPLE3, REDUCE]);
        }
    }

    /// `module\nname\n`, memoized: later uses are a BINGET.
    fn global(&mut self, module: &'static str, name: &'static str) {
        // The key is the name alone: every name used here is unique across modules.
        if let Some(&index) = self.globals.get(name) {
            self.get(index);
            return;
        }
        self.out.push(GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        let index = self.put_new();
        self.globals.insert(name, index);
    }

    /// Memoizes the object on top of the stack under the next index, and returns it.
    fn put_new(&mut self) -> u32 {
        let index = self.next_memo;
        self.next_memo += 1;
        match u8::try_from(index) {
            Ok(i) => self.out.extend_from_slice(&[BINPUT, i]),
            Err(_) => {
                self.out.push(LONG_BINPUT);
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
        index
    }

    fn get(&mut self, index: u32) {
        match u8::try_from(index) {
            Ok(i) => self.out.extend_from_slice(&[BINGET, i]),
            Err(_) => {
                self.out.push(LONG_BINGET);
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.out.extend_from_slice(&[EMPTY_TUPLE, REDUCE]);
    }

    fn string(&mut self, s: &str) {
        self.out.push(BINUNICODE);
        self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.out.extend_from_slice(s.as_bytes());
    }

    /// A str of the tree: BINUNICODE holds at most 4 GiB (BINUNICODE8 is not read by torch's
    /// weights-only unpickler).
    fn checked_string(&mut self, s: &str) -> Result<()> {
        if u32::try_from(s.len()).is_err() {
            return Err(unsupported(
                format!("a str of {} bytes", s.len()),
                "BINUNICODE8",
            ));
        }
        self.string(s);
        Ok(())
    }

    /// bytes as protocol 2 pickles them: `_codecs.encode(latin-1 text, 'latin1')`.
    fn bytes(&mut self, bytes: &[u8]) -> Result<()> {
        let text: String = bytes.iter().map(|&b| char::from(b)).collect();
        self.global("_codecs", "encode");
        self.checked_string(&text)?;
        self.string("latin1");
        self.out.extend_from_slice(&[TUPLE2, REDUCE]);
        Ok(())
    }

    fn bool(&mut self, b: bool) {
        self.out.push(if b { NEWTRUE } else { NEWFALSE });
    }

    fn float(&mut self, f: f64) {
        self.out.push(BINFLOAT);
        self.out.extend_from_slice(&f.to_be_bytes());
    }

    /// An int of the tree: BININT for what fits in i32 (as Python's pickler), else LONG1.
    fn signed(&mut self, v: i64) {
        if (0..0x1_0000).contains(&v) {
            self.int(v as u64);
        } else if let Ok(v) = i32::try_from(v) {
            self.out.push(BININT);
            self.out.extend_from_slice(&v.to_le_bytes());
        } else {
            // LONG1: the fewest little-endian two's complement bytes that keep the sign.
            let bytes = v.to_le_bytes();
            let mut len = 8;
            while len > 1 {
                let (top, next) = (bytes[len - 1], bytes[len - 2]);
                let redundant = (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0);
                if !redundant {
                    break;
                }
                len -= 1;
            }
            self.out.extend_from_slice(&[LONG1, len as u8]);
            self.out.extend_from_slice(&bytes[..len]);
        }
    }

    fn int(&mut self, v: u64) {
        if v < 0x100 {
            self.out.extend_from_slice(&[BININT1, v as u8]);
        } else if v < 0x1_0000 {
            self.out.push(BININT2);
            self.out.extend_from_slice(&(v as u16).to_le_bytes());
        } else if v < 0x8000_0000 {
            self.out.push(BININT);
            self.out.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            // LONG1: little-endian two's complement, with a 0 byte when the top bit is set.
            let bytes = v.to_le_bytes();
            let mut len = 8 - (v.leading_zeros() / 8) as usize;
            let mut body = bytes[..len].to_vec();
            if body[len - 1] & 0x80 != 0 {
                body.push(0);
                len += 1;
            }
            self.out.extend_from_slice(&[LONG1, len as u8]);
            self.out.extend_from_slice(&body);
        }
    }

    fn tuple(&mut self, items: &[i64]) {
        if items.len() > 3 {
            self.out.push(MARK);
        }
        for &v in items {
            // Sizes and strides of a table tensor are never negative.
            self.int(v.max(0) as u64);
        }
        self.out.push(match items.len() {
            0 => EMPTY_TUPLE,
            1 => TUPLE1,
            2 => TUPLE2,
            3 => TUPLE3,
            _ => TUPLE,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use crate::pickle::{load, PickleLimits};

    fn dict(arena: &mut Arena, class: DictClass, state: Option<NodeId>) -> NodeId {
        arena.push(Value::Dict {
            items: Vec::new(),
            state,
            class,
        })
    }

    #[test]
    fn mappings_read_back_as_their_class_with_their_state() {
        let mut a = Arena::new();
        let key = a.push_str("k");
        let one = a.push(Value::Int(1));
        let state = dict(&mut a, DictClass::Dict, None);
        let ordered = dict(&mut a, DictClass::OrderedDict, Some(state));
        let counter = dict(&mut a, DictClass::Counter, None);
        let plain = dict(&mut a, DictClass::Dict, None);
        if let Value::Dict { items, .. } = a.get_mut(state) {
            items.push((key, one));
        }
        // The counter holds itself: it is memoized before its items.
        for (map, value) in [(ordered, counter), (counter, counter), (plain, ordered)] {
            let k = a.push(Value::Int(i64::from(map)));
            if let Value::Dict { items, .. } = a.get_mut(map) {
                items.push((k, value));
            }
        }
        let root = a.push(Value::List(vec![plain, ordered, counter]));
        let pickle = tree_pickle(&a, root, &|_| None).unwrap();

        let mut back = Arena::new();
        let (root, _) = load(&mut back, &pickle, &PickleLimits::default()).unwrap();
        let maps = back.as_seq(root).unwrap().to_vec();
        let parts = |id: NodeId| match back.get(id) {
            Value::Dict {
                items,
                state,
                class,
            } => (*class, items.clone(), *state),
            other => panic!("a {} came back", other.type_name()),
        };
        let (plain, ordered, counter) = (parts(maps[0]), parts(maps[1]), parts(maps[2]));
        assert_eq!(
            (plain.0, plain.1[0].1, plain.2),
            (DictClass::Dict, maps[1], None)
        );
        assert_eq!(
            (ordered.0, ordered.1[0].1),
            (DictClass::OrderedDict, maps[2])
        );
        assert_eq!((counter.0, counter.1[0].1), (DictClass::Counter, maps[2]));
        let state = parts(ordered.2.expect("the OrderedDict's state"));
        assert_eq!(state.0, DictClass::Dict);
        assert_eq!(back.as_str(state.1[0].0), Some("k"));
    }

    #[test]
    fn a_plain_dict_with_build_state_is_not_written() {
        let mut a = Arena::new();
        let state = dict(&mut a, DictClass::Dict, None);
        let root = dict(&mut a, DictClass::Dict, Some(state));
        let err = tree_pickle(&a, root, &|_| None).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unsupported);
        assert!(
            err.message.contains("a dict with BUILD state"),
            "{}",
            err.message
        );
    }

    #[test]
    fn ints_use_the_smallest_opcode() {
        let mut p = Emitter::new();
        let start = p.out.len();
        for v in [
            0,
            255,
            256,
            65535,
            65536,
            0x7fff_ffff,
            0x8000_0000,
            u64::MAX,
        ] {
            p.int(v);
        }
        assert_eq!(
            &p.out[start..],
            &[
                BININT1, 0, BININT1, 255, BININT2, 0, 1, BININT2, 255, 255, BININT, 0, 0, 1, 0,
                BININT, 255, 255, 255, 127, LONG1, 5, 0, 0, 0, 128, 0, LONG1, 9, 255, 255, 255,
                255, 255, 255, 255, 255, 0
            ][..]
        );
    }
}
