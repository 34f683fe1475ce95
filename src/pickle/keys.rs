//! Python's dict-key (and set-item) equality, for the pickle machine's inserts: `d[k] = v` on a
//! key equal to one already in `d` replaces that item's value and keeps its key and position.
//!
//! Equality is CPython's `hash(a) == hash(b) and (a is b or a == b)`:
//! * numbers compare by exact mathematical value across `bool`, `int` (any size), `float` and
//!   `complex`: `1 == 1.0 == True == 1+0j`, `0 == -0.0 == False`, `2**64 == float(2**64)`, but
//!   `2**53 + 1 != float(2**53 + 1)`. A NaN equals only itself (the same memoized object).
//! * `str` and `bytes` compare by content, never with each other; `None` only with `None`.
//! * tuples compare item by item under the same rules (an item that is the same object is
//!   equal, so `(nan,)` memoized twice is one key).
//! * globals (`torch.float32`) are the object their name resolves to: equal when the names are.
//! * any other object (a tensor, a persistent id) is equal only to itself — Python's default;
//!   the checkpoint layer refuses the classes whose instances torch compares by value (see
//!   [`Arena::identity_keys`]).
//! * lists, dicts, sets and bytearrays are unhashable (Python raises; torch refuses the file):
//!   they are never merged, as before.
//!
//! Costs: a string key (the common case) is hashed once by content and compared only on a hash
//! match, allocating nothing. A long string, bytes or big-int key (at least
//! [`HASH_CACHE_MIN_LEN`] bytes) is read once per node: it gets a canonical id by content, so a
//! memoized copy of it inserted a million times is compared in O(1), not by content each time.
//! Tuple keys are interned: each tuple node gets, once, a canonical
//! id from its items' ids, computed iteratively (no recursion, whatever the nesting), so two
//! tuple keys compare in O(1) however deep they are and however often they are inserted.

use super::value::{Arena, NodeId, Value};
use crate::hash::{HashMap, RandomState};
use std::hash::{BuildHasher, Hash, Hasher};

/// Strings, bytes and big ints at least this long cache their hash by node (a memoized long
/// key inserted a million times is hashed once).
const HASH_CACHE_MIN_LEN: usize = 64;

/// A number as Python compares it: every integral value (`True`, `1`, `1.0`, `1+0j`, a big int
/// that fits) is one `Small` or `Big`, so equal numbers are equal here.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Number {
    Small(i64),
    /// An integer outside i64: minimal little-endian two's complement.
    Big(Box<[u8]>),
    /// A finite float that is not an integer, or an infinity: its bits.
    Fraction(u64),
    /// A complex with a non-zero imaginary part: the bits of both parts (-0.0 written +0.0).
    Complex(u64, u64),
    /// A NaN (or a complex with a NaN part): equal only to the same node.
    Nan(NodeId),
}

/// The number a `None`/`bool`/`int`/`float`/`complex` node is; `None` for other values.
pub(crate) fn number(arena: &Arena, node: NodeId) -> Option<Number> {
    Some(match arena.get(node) {
        Value::Bool(b) => Number::Small(i64::from(*b)),
        Value::Int(i) => Number::Small(*i),
        Value::BigInt(b) => big_number(b),
        Value::Float(f) => float_number(*f, node),
        Value::Complex(re, im) => {
            if *im == 0.0 {
                float_number(*re, node)
            } else if re.is_nan() || im.is_nan() {
                Number::Nan(node)
            } else {
                Number::Complex((re + 0.0).to_bits(), im.to_bits())
            }
        }
        _ => return None,
    })
}

fn float_number(f: f64, node: NodeId) -> Number {
    if f.is_nan() {
        return Number::Nan(node);
    }
    if !f.is_finite() || f.fract() != 0.0 {
        return Number::Fraction(f.to_bits());
    }
    // -2^63 <= f < 2^63: exactly an i64 (`as` is exact for integral values in range).
    if (-9_223_372_036_854_775_808.0..9_223_372_036_854_775_808.0).contains(&f) {
        return Number::Small(f as i64);
    }
    Number::Big(integral_float_bytes(f).into_boxed_slice())
}

/// An integral float's value as minimal little-endian two's complement.
fn integral_float_bytes(f: f64) -> Vec<u8> {
    let bits = f.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i64 - 1075;
    let mantissa = (bits & ((1 << 52) - 1)) | (1 << 52);
    // Integral and at least 2^63 in magnitude, so the exponent is positive.
    let shift = exponent.max(0) as usize;
    let mut magnitude = vec![0u8; (53 + shift) / 8 + 2];
    let (byte, bit) = (shift / 8, shift % 8);
    let wide = u128::from(mantissa) << bit;
    for (i, b) in wide.to_le_bytes().iter().enumerate() {
        if let Some(slot) = magnitude.get_mut(byte + i) {
            *slot |= *b;
        }
    }
    if f < 0.0 {
        // Two's complement: invert and add one.
        let mut carry = true;
        for b in magnitude.iter_mut() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    minimal(magnitude)
}

/// A big int's bytes in minimal form; an i64 when they fit (a LONG opcode may pad).
fn big_number(bytes: &[u8]) -> Number {
    let bytes = minimal(bytes.to_vec());
    if bytes.len() <= 8 {
        let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut wide = [fill; 8];
        wide[..bytes.len()].copy_from_slice(&bytes);
        return Number::Small(i64::from_le_bytes(wide));
    }
    Number::Big(bytes.into_boxed_slice())
}

/// Drops the most significant bytes that only repeat the sign.
fn minimal(mut bytes: Vec<u8>) -> Vec<u8> {
    while let [.., next, top] = bytes[..] {
        let redundant = (top == 0 && next & 0x80 == 0) || (top == 0xff && next & 0x80 != 0);
        if !redundant {
            break;
        }
        bytes.pop();
    }
    if bytes == [0] {
        bytes.clear();
    }
    bytes
}

/// Whether a key is a string, bytes or big int long enough to cache its hash and canonical id.
fn is_long(arena: &Arena, node: NodeId) -> bool {
    match arena.get(node) {
        Value::BigInt(b) | Value::Bytes(b) => b.len() >= HASH_CACHE_MIN_LEN,
        Value::Str(s) => arena.str(*s).len() >= HASH_CACHE_MIN_LEN,
        _ => false,
    }
}

/// The atom of a key that is not a tuple; `None` when it is unhashable (or a tuple).
fn scalar_atom(arena: &Arena, node: NodeId) -> Option<Atom> {
    Some(match arena.get(node) {
        Value::None => Atom::None,
        Value::Str(s) => Atom::Str(arena.str(*s).into()),
        Value::Bytes(b) => Atom::Bytes(b.clone()),
        Value::Global { module, name } => Atom::Global(module.clone(), name.clone()),
        Value::Object { .. } | Value::PersistentId(_) => Atom::Object(node),
        _ => Atom::Number(number(arena, node)?),
    })
}

/// What an item of a tuple key is, for interning.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Atom {
    None,
    Number(Number),
    Str(Box<str>),
    Bytes(Box<[u8]>),
    Global(Box<str>, Box<str>),
    /// Compared by identity.
    Object(NodeId),
    /// A tuple: the canonical ids of its items.
    Tuple(Box<[u32]>),
}

/// A tuple's interning: its canonical id and the first item (at any depth) compared by
/// identity with an opaque object; `None` when it holds an unhashable item.
#[derive(Clone, Copy)]
struct Interned {
    id: u32,
    opaque: Option<NodeId>,
}

/// Hashes and equality of keys for one pickle machine (see the module doc).
#[derive(Default)]
pub(crate) struct Keys {
    hasher: RandomState,
    /// Hashes of long string / bytes / big-int keys, by node.
    hash_cache: HashMap<NodeId, u64>,
    /// Canonical ids (in `atoms`) of long string / bytes / big-int keys and tuple items, by
    /// node: equal contents share one id.
    long_ids: HashMap<NodeId, u32>,
    /// Interned tuple nodes (`None`: unhashable).
    tuples: HashMap<NodeId, Option<Interned>>,
    /// Canonical ids of tuple items.
    atoms: HashMap<Atom, u32>,
}

impl Keys {
    /// The hash of a key, or `None` for unhashable values (never merged).
    pub(crate) fn hash(&mut self, arena: &Arena, key: NodeId) -> Option<u64> {
        // A short string (a state dict's names): hashed as below, without the checks for
        // the other kinds of key.
        if let Value::Str(s) = arena.get(key) {
            let text = arena.str(*s).as_bytes();
            if text.len() < HASH_CACHE_MIN_LEN {
                return Some(self.hasher.hash_one((3u8, text)));
            }
        }
        if matches!(
            arena.get(key),
            Value::List(_) | Value::Dict { .. } | Value::Set(_) | Value::ByteArray(_)
        ) {
            return None;
        }
        let long = is_long(arena, key);
        if long {
            if let Some(&h) = self.hash_cache.get(&key) {
                return Some(h);
            }
        }
        let mut h = self.hasher.build_hasher();
        match arena.get(key) {
            Value::Str(s) => (3u8, arena.str(*s).as_bytes()).hash(&mut h),
            Value::Bytes(b) => (4u8, b).hash(&mut h),
            Value::None => 0u8.hash(&mut h),
            Value::Bool(_) | Value::Int(_) | Value::BigInt(_) | Value::Float(_) => {
                match number(arena, key)? {
                    Number::Small(i) => (1u8, i).hash(&mut h),
                    other => (2u8, other).hash(&mut h),
                }
            }
            Value::Complex(..) => match number(arena, key)? {
                Number::Small(i) => (1u8, i).hash(&mut h),
                other => (2u8, other).hash(&mut h),
            },
            Value::Tuple(_) => (5u8, self.intern_tuple(arena, key)?.id).hash(&mut h),
            Value::Global { module, name } => (6u8, module, name).hash(&mut h),
            Value::Object { .. } | Value::PersistentId(_) => (7u8, key).hash(&mut h),
            Value::List(_) | Value::Dict { .. } | Value::Set(_) | Value::ByteArray(_) => {
                return None
            }
            Value::FrozenSet(_) => return None,
        }
        let hash = h.finish();
        if long {
            self.hash_cache.insert(key, hash);
            self.long_id(arena, key)?;
        }
        Some(hash)
    }

    /// The canonical id of a long key's content (computed once per node).
    fn long_id(&mut self, arena: &Arena, node: NodeId) -> Option<u32> {
        if let Some(&id) = self.long_ids.get(&node) {
            return Some(id);
        }
        let id = self.intern(scalar_atom(arena, node)?);
        self.long_ids.insert(node, id);
        Some(id)
    }

    /// Python equality of two keys already hashed with [`Keys::hash`].
    pub(crate) fn equal(&self, arena: &Arena, a: NodeId, b: NodeId) -> bool {
        let hashable = |n: NodeId| {
            !matches!(
                arena.get(n),
                Value::List(_)
                    | Value::Dict { .. }
                    | Value::Set(_)
                    | Value::FrozenSet(_)
                    | Value::ByteArray(_)
            )
        };
        if a == b {
            return hashable(a) && !matches!(self.tuples.get(&a), Some(None));
        }
        // Long keys compare by canonical id, never by content again; a short key equals a long
        // one (a padded big int and a float) only if its atom is the long one's.
        match (self.long_ids.get(&a), self.long_ids.get(&b)) {
            (Some(x), Some(y)) => return x == y,
            (Some(&id), None) | (None, Some(&id)) => {
                let other = if self.long_ids.contains_key(&a) { b } else { a };
                if !is_long(arena, other) {
                    return scalar_atom(arena, other)
                        .is_some_and(|atom| self.atoms.get(&atom) == Some(&id));
                }
            }
            (None, None) => {}
        }
        match (arena.get(a), arena.get(b)) {
            (Value::Str(x), Value::Str(y)) => arena.str(*x) == arena.str(*y),
            (Value::Bytes(x), Value::Bytes(y)) => x == y,
            (Value::None, Value::None) => true,
            (Value::Tuple(_), Value::Tuple(_)) => {
                match (self.tuples.get(&a), self.tuples.get(&b)) {
                    (Some(Some(x)), Some(Some(y))) => x.id == y.id,
                    _ => false,
                }
            }
            (
                Value::Global { module, name },
                Value::Global {
                    module: m2,
                    name: n2,
                },
            ) => module == m2 && name == n2,
            _ => match (number(arena, a), number(arena, b)) {
                (Some(x), Some(y)) => x == y,
                _ => false,
            },
        }
    }

    /// The opaque object (a key itself, or an item of a tuple key) this key was compared by
    /// identity with, if any.
    pub(crate) fn opaque_in(&self, arena: &Arena, key: NodeId) -> Option<NodeId> {
        match arena.get(key) {
            Value::Object { .. } | Value::PersistentId(_) => Some(key),
            Value::Tuple(_) => self.tuples.get(&key).copied().flatten()?.opaque,
            _ => None,
        }
    }

    fn intern(&mut self, atom: Atom) -> u32 {
        let next = self.atoms.len() as u32;
        *self.atoms.entry(atom).or_insert(next)
    }

    /// The interned form of a tuple node, computed for it and every tuple inside it (once per
    /// node, iteratively: a child tuple is finished before its parent is revisited).
    fn intern_tuple(&mut self, arena: &Arena, tuple: NodeId) -> Option<Interned> {
        if let Some(&done) = self.tuples.get(&tuple) {
            return done;
        }
        let mut todo = vec![tuple];
        while let Some(&node) = todo.last() {
            if self.tuples.contains_key(&node) {
                todo.pop();
                continue;
            }
            let items = arena.as_seq(node).unwrap_or(&[]);
            // First visit: queue the item tuples not interned yet. A tuple is built after its
            // items, so item ids are lower: a higher one (impossible from a pickle) would be a
            // cycle, and is unhashable here.
            let mut waiting = false;
            for &item in items {
                if matches!(arena.get(item), Value::Tuple(_)) && !self.tuples.contains_key(&item) {
                    if item >= node {
                        self.tuples.insert(item, None);
                    } else {
                        todo.push(item);
                        waiting = true;
                    }
                }
            }
            if waiting {
                continue;
            }
            let interned = self.intern_items(arena, items);
            self.tuples.insert(node, interned);
            todo.pop();
        }
        self.tuples.get(&tuple).copied().flatten()
    }

    /// Interns a tuple whose item tuples are interned already.
    fn intern_items(&mut self, arena: &Arena, items: &[NodeId]) -> Option<Interned> {
        let mut ids = Vec::with_capacity(items.len());
        let mut opaque = None;
        for &item in items {
            if let Value::Tuple(_) = arena.get(item) {
                let inner = self.tuples.get(&item).copied().flatten()?;
                opaque = opaque.or(inner.opaque);
                ids.push(inner.id);
                continue;
            }
            if is_long(arena, item) {
                // A memoized long string repeated in many tuples is copied and hashed once.
                ids.push(self.long_id(arena, item)?);
                continue;
            }
            let atom = scalar_atom(arena, item)?;
            if let Atom::Object(object) = atom {
                opaque = opaque.or(Some(object));
            }
            ids.push(self.intern(atom));
        }
        let id = self.intern(Atom::Tuple(ids.into_boxed_slice()));
        Some(Interned { id, opaque })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(v: Value) -> Number {
        let mut a = Arena::new();
        let n = a.push(v);
        number(&a, n).unwrap()
    }

    #[test]
    fn equal_numbers_are_one_number() {
        let one = num(Value::Int(1));
        assert_eq!(num(Value::Bool(true)), one);
        assert_eq!(num(Value::Float(1.0)), one);
        assert_eq!(num(Value::Complex(1.0, 0.0)), one);
        assert_eq!(num(Value::Complex(1.0, -0.0)), one);
        assert_eq!(
            num(Value::BigInt(vec![1, 0, 0, 0, 0, 0, 0, 0, 0, 0].into())),
            one
        );
        assert_eq!(num(Value::Float(-0.0)), num(Value::Bool(false)));
        assert_eq!(num(Value::BigInt(Box::default())), num(Value::Int(0)));
        // 2**64 and -2**80 as pickle writes them (LONG1, little-endian two's complement).
        let mut p64 = vec![0u8; 8];
        p64.extend([1, 0]);
        assert_eq!(
            num(Value::BigInt(p64.into())),
            num(Value::Float(2f64.powi(64)))
        );
        let mut m80 = vec![0u8; 10];
        m80.push(0xff);
        assert_eq!(
            num(Value::BigInt(m80.into())),
            num(Value::Float(-(2f64.powi(80))))
        );
        assert_eq!(
            num(Value::Float(-(2f64.powi(63)))),
            num(Value::Int(i64::MIN))
        );
        // 2**53 + 1 is not a float: the nearest float is 2**53.
        assert_ne!(
            num(Value::Int((1 << 53) + 1)),
            num(Value::Float(((1i64 << 53) + 1) as f64))
        );
        assert_ne!(num(Value::Float(1.5)), num(Value::Int(1)));
        assert_eq!(
            num(Value::Complex(-0.0, 2.0)),
            num(Value::Complex(0.0, 2.0))
        );
        assert_eq!(
            num(Value::Float(f64::INFINITY)),
            num(Value::Complex(f64::INFINITY, 0.0))
        );
    }

    #[test]
    fn tuples_fold_item_by_item_and_nans_by_identity() {
        let mut a = Arena::new();
        let one = a.push(Value::Int(1));
        let one_f = a.push(Value::Float(1.0));
        let two = a.push(Value::Int(2));
        let two_f = a.push(Value::Float(2.0));
        let t1 = a.push(Value::Tuple(vec![one, two].into()));
        let t2 = a.push(Value::Tuple(vec![one_f, two_f].into()));
        let nested1 = a.push(Value::Tuple(vec![t1, one].into()));
        let nested2 = a.push(Value::Tuple(vec![t2, one_f].into()));
        let nan = a.push(Value::Float(f64::NAN));
        let nan2 = a.push(Value::Float(f64::NAN));
        let with_nan = a.push(Value::Tuple(vec![nan].into()));
        let with_same_nan = a.push(Value::Tuple(vec![nan].into()));
        let with_other_nan = a.push(Value::Tuple(vec![nan2].into()));
        let list = a.push(Value::List(vec![]));
        let unhashable = a.push(Value::Tuple(vec![one, list].into()));
        let mut keys = Keys::default();
        for n in [
            t1,
            t2,
            nested1,
            nested2,
            nan,
            nan2,
            with_nan,
            with_same_nan,
            with_other_nan,
        ] {
            assert!(keys.hash(&a, n).is_some());
        }
        assert!(keys.equal(&a, t1, t2));
        assert_eq!(keys.hash(&a, t1), keys.hash(&a, t2));
        assert!(keys.equal(&a, nested1, nested2));
        assert!(keys.equal(&a, nan, nan));
        assert!(!keys.equal(&a, nan, nan2));
        assert!(keys.equal(&a, with_nan, with_same_nan));
        assert!(!keys.equal(&a, with_nan, with_other_nan));
        assert_eq!(keys.hash(&a, unhashable), None);
        assert!(!keys.equal(&a, unhashable, unhashable));
    }

    #[test]
    fn long_keys_fold_by_content_across_nodes_and_kinds() {
        let mut a = Arena::new();
        let text = "k".repeat(HASH_CACHE_MIN_LEN * 2);
        let s1 = a.push_str(&text);
        let s2 = a.push_str(&text);
        let other = a.push_str(&"j".repeat(HASH_CACHE_MIN_LEN * 2));
        let short = a.push_str("k");
        let bytes = a.push(Value::Bytes(text.as_bytes().into()));
        // 2**600 as a LONG padded to 200 bytes, as an unpadded LONG and as a float.
        let mut padded = vec![0u8; 200];
        padded[75] = 1;
        let big_padded = a.push(Value::BigInt(padded.into()));
        let mut unpadded = vec![0u8; 76];
        unpadded[75] = 1;
        let big = a.push(Value::BigInt(unpadded.into()));
        let float = a.push(Value::Float(2f64.powi(600)));
        let one_padded = a.push(Value::BigInt(
            [1u8].into_iter().chain([0; 99]).collect::<Vec<_>>().into(),
        ));
        let one = a.push(Value::Int(1));
        let t1 = a.push(Value::Tuple(vec![s1, big_padded].into()));
        let t2 = a.push(Value::Tuple(vec![s2, float].into()));
        let t3 = a.push(Value::Tuple(vec![other, big].into()));
        let mut keys = Keys::default();
        for n in [
            s1, s2, other, short, bytes, big_padded, big, float, one_padded, one, t1, t2, t3,
        ] {
            assert!(keys.hash(&a, n).is_some());
        }
        assert!(keys.equal(&a, s1, s2));
        assert_eq!(keys.hash(&a, s1), keys.hash(&a, s2));
        assert!(!keys.equal(&a, s1, other));
        assert!(!keys.equal(&a, s1, short));
        assert!(!keys.equal(&a, s1, bytes));
        assert!(keys.equal(&a, big_padded, big));
        assert!(keys.equal(&a, big_padded, float));
        assert!(keys.equal(&a, float, big_padded));
        assert_eq!(keys.hash(&a, big_padded), keys.hash(&a, float));
        assert!(keys.equal(&a, one_padded, one));
        assert!(!keys.equal(&a, one_padded, big));
        assert!(keys.equal(&a, t1, t2));
        assert!(!keys.equal(&a, t1, t3));
    }

    #[test]
    fn deep_tuples_intern_without_recursion() {
        let mut a = Arena::new();
        let mut t = a.push(Value::Int(0));
        let mut u = a.push(Value::Float(0.0));
        for _ in 0..200_000 {
            t = a.push(Value::Tuple(vec![t].into()));
            u = a.push(Value::Tuple(vec![u].into()));
        }
        let mut keys = Keys::default();
        assert_eq!(keys.hash(&a, t), keys.hash(&a, u));
        assert!(keys.equal(&a, t, u));
    }
}
