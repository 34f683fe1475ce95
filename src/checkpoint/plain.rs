//! The pickle `torch.save(model.state_dict())` writes, read straight into table rows without a
//! value tree. Most checkpoints are exactly that: an `OrderedDict` of tensors (protocol 2, each
//! `_rebuild_tensor_v2(('storage', torch.<T>Storage, key, location, numel), offset, size,
//! stride, requires_grad, OrderedDict())`), then its `_metadata` (`{module path: {'version':
//! n}}`). Building the generic value tree for it, then walking the tree and interpreting every
//! call, costs about four times what reading these bytes does.
//!
//! The reader accepts only that layout, spelled as CPython's pickler writes it, and only when
//! nothing in it could make the generic path answer differently: every memo reference names a
//! value of the expected kind, no dict key repeats, every count stays within the limits the
//! generic path enforces (counted generously), every tensor passes the checks that its rebuild
//! call gets. For anything else it returns `None` and the generic path opens the file (and
//! reports whatever is wrong, in its words). The value tree is then built from the same bytes
//! on first use ([`super::Tree`]). `tests/plain_state_dict.rs` opens every torch-written file
//! both ways and compares.

use super::table::Table;
use crate::container::PageVec;
use crate::dtype::DType;
use crate::pickle::opcodes as op;
use crate::pickle::PickleLimits;
use crate::torch::{self, Dims, TensorDesc, MAX_NDIM, MAX_STORAGE_FIELD_LEN};

/// What a plain state dict holds: its table (each row's tensor is the same-numbered desc) and,
/// per tensor, the storage it names, for the resolver.
pub(crate) struct Plain<'a> {
    pub table: Table,
    /// Each tensor's description; `storage` is set when its reference is resolved.
    pub descs: PageVec<TensorDesc>,
    pub refs: Vec<StorageRef<'a>>,
}

/// A tensor's storage reference: `('storage', torch.<T>Storage, key, location, numel)`.
pub(crate) struct StorageRef<'a> {
    pub key: &'a str,
    pub location: &'a str,
    pub numel: u64,
}

/// Dimensions of a size or stride read without an allocation.
const MAX_DIMS: usize = 8;

/// Longest dict key taken here (longer ones, which the table may refuse, go the generic way).
const MAX_KEY_LEN: usize = 4096;

/// Most memo keys past the highest one seen (picklers count up from 0).
const MAX_MEMO_GAP: usize = 1 << 16;

/// What a memo entry holds, as far as this reader needs to know, in a `u32` (the generic path
/// keeps a node id per entry: the same memory): the low three bits say what, the rest is a
/// string's position in the pickle or a storage class's dtype.
#[derive(Clone, Copy, PartialEq)]
enum Memo {
    Unset,
    /// A string: the position of its BINUNICODE / SHORT_BINUNICODE opcode in the pickle.
    Str(u32),
    OrderedDict,
    Rebuild,
    Storage(DType),
    /// Anything this reader never takes from the memo (tuples, dicts, tensors, ints).
    Other,
}

impl Memo {
    fn pack(self) -> u32 {
        match self {
            Memo::Unset => 0,
            Memo::Other => 1,
            Memo::OrderedDict => 2,
            Memo::Rebuild => 3,
            Memo::Storage(dtype) => 4 | dtype.code() << 3,
            Memo::Str(at) => 5 | at << 3,
        }
    }

    fn unpack(v: u32) -> Memo {
        match v & 7 {
            1 => Memo::Other,
            2 => Memo::OrderedDict,
            3 => Memo::Rebuild,
            4 => DType::from_code(v >> 3).map_or(Memo::Unset, Memo::Storage),
            5 => Memo::Str(v >> 3),
            _ => Memo::Unset,
        }
    }
}

/// Strings are memoized by position (29 bits): pickles up to this size only.
const MAX_PICKLE_LEN: usize = 1 << 29;

/// Memoized strings read again (`'storage'`, the location, `'version'`: a few, each read once
/// per tensor or module) are kept decoded here, so that a reference costs no UTF-8 check.
const DECODED: usize = 4;

/// The bytes, the position, and the generic path's counts so far.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    memo: Vec<u32>,
    /// The last memoized strings read again: (position, text).
    decoded: [(u32, &'a str); DECODED],
    next_decoded: usize,
    /// Values the generic path would add to its arena (counted for every opcode that may).
    nodes: usize,
    /// Memo writes (the generic path counts entries; writes are at least as many).
    puts: usize,
}

/// `Some(())` when `cond` holds: a failed check ends the reading (`?`).
fn check(cond: bool) -> Option<()> {
    cond.then_some(())
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.data.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    fn peek(&self) -> Option<u8> {
        self.data.get(self.pos).copied()
    }

    fn expect(&mut self, opcode: u8) -> Option<()> {
        check(self.byte()? == opcode)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let bytes = self.data.get(self.pos..self.pos.checked_add(N)?)?;
        self.pos += N;
        bytes.try_into().ok()
    }

    /// BINPUT / LONG_BINPUT after a value: each records `value` under its key.
    #[inline(always)]
    fn puts(&mut self, value: Memo) -> Option<()> {
        while let Some(&opcode @ (op::BINPUT | op::LONG_BINPUT)) = self.data.get(self.pos) {
            self.pos += 1;
            let key = if opcode == op::BINPUT {
                usize::from(self.byte()?)
            } else {
                u32::from_le_bytes(self.array()?) as usize
            };
            self.put(key, value)?;
        }
        Some(())
    }

    fn put(&mut self, key: usize, value: Memo) -> Option<()> {
        if key >= self.memo.len() {
            check(key <= self.memo.len() + MAX_MEMO_GAP)?;
            // Grown by half at least: keys count up one at a time.
            let len = self.memo.len();
            self.memo.resize((key + 1).max(len + len / 2), 0);
        }
        self.memo[key] = value.pack();
        self.puts += 1;
        Some(())
    }

    /// A BINGET / LONG_BINGET: what the memo holds under its key.
    fn get(&mut self) -> Option<Memo> {
        let key = match self.byte()? {
            op::BINGET => usize::from(self.byte()?),
            op::LONG_BINGET => u32::from_le_bytes(self.array()?) as usize,
            _ => return None,
        };
        match Memo::unpack(*self.memo.get(key)?) {
            Memo::Unset => None,
            value => Some(value),
        }
    }

    /// BINUNICODE / SHORT_BINUNICODE, or a memoized string; then its memo writes.
    #[inline(always)]
    fn string(&mut self, max_len: usize) -> Option<&'a str> {
        let at = match self.peek()? {
            op::BINUNICODE | op::SHORT_BINUNICODE => {
                let at = self.pos;
                let n = if self.byte()? == op::SHORT_BINUNICODE {
                    usize::from(self.byte()?)
                } else {
                    u32::from_le_bytes(self.array()?) as usize
                };
                check(n <= max_len)?;
                let bytes = self.data.get(self.pos..self.pos.checked_add(n)?)?;
                self.pos += n;
                self.nodes += 1;
                let text = std::str::from_utf8(bytes).ok()?;
                self.puts(Memo::Str(at as u32))?;
                return Some(text);
            }
            _ => match self.get()? {
                Memo::Str(at) => at,
                _ => return None,
            },
        };
        let text = self.memoized_text(at)?;
        check(text.len() <= max_len)?;
        self.puts(Memo::Str(at))?;
        Some(text)
    }

    /// The text of the memoized string whose opcode is at `at` (read, and checked, when it was
    /// memoized).
    fn memoized_text(&mut self, at: u32) -> Option<&'a str> {
        if let Some(&(_, text)) = self.decoded.iter().find(|(p, _)| *p == at) {
            return Some(text);
        }
        let at = at as usize;
        let (len, start) = match *self.data.get(at)? {
            op::SHORT_BINUNICODE => (usize::from(*self.data.get(at + 1)?), at + 2),
            _ => {
                let len: [u8; 4] = self.data.get(at + 1..at + 5)?.try_into().ok()?;
                (u32::from_le_bytes(len) as usize, at + 5)
            }
        };
        let text = std::str::from_utf8(self.data.get(start..start.checked_add(len)?)?).ok()?;
        self.decoded[self.next_decoded] = (at as u32, text);
        self.next_decoded = (self.next_decoded + 1) % DECODED;
        Some(text)
    }

    /// A GLOBAL opcode naming exactly `module.name`.
    fn global(&mut self, module: &str, name: &str) -> Option<()> {
        self.expect(op::GLOBAL)?;
        let m = self.line()?;
        let n = self.line()?;
        self.nodes += 1;
        check(m == module.as_bytes() && n == name.as_bytes())
    }

    fn line(&mut self) -> Option<&'a [u8]> {
        let rest = self.data.get(self.pos..)?;
        let end = rest.iter().take(256).position(|&b| b == b'\n')?;
        self.pos += end + 1;
        Some(&rest[..end])
    }

    /// `collections.OrderedDict`: the GLOBAL, or the memoized global.
    fn ordered_dict_class(&mut self) -> Option<()> {
        if self.peek()? == op::GLOBAL {
            self.global("collections", "OrderedDict")?;
        } else {
            check(self.get()? == Memo::OrderedDict)?;
        }
        self.puts(Memo::OrderedDict)
    }

    /// `OrderedDict()`: the class, EMPTY_TUPLE, REDUCE (a new empty dict).
    fn new_ordered_dict(&mut self) -> Option<()> {
        self.ordered_dict_class()?;
        self.expect(op::EMPTY_TUPLE)?;
        self.puts(Memo::Other)?;
        self.expect(op::REDUCE)?;
        self.nodes += 2;
        self.puts(Memo::Other)
    }

    /// BININT1, BININT2 or BININT (no memo write: ints are not memoized by picklers).
    fn int(&mut self) -> Option<i64> {
        self.nodes += 1;
        match self.byte()? {
            op::BININT1 => Some(i64::from(self.byte()?)),
            op::BININT2 => Some(i64::from(u16::from_le_bytes(self.array()?))),
            op::BININT => Some(i64::from(i32::from_le_bytes(self.array()?))),
            _ => None,
        }
    }

    /// A tuple of ints (a size or stride): EMPTY_TUPLE, TUPLE1/2/3 after one to three ints,
    /// or MARK, ints, TUPLE; then its memo writes.
    fn ints(&mut self, limits: &PickleLimits) -> Option<Dims> {
        // In line up to MAX_DIMS values (nearly every tensor), in a vector past that.
        let mut values = [0i64; MAX_DIMS];
        let mut more: Vec<i64> = Vec::new();
        let mut len = 0;
        let mut push = |r: &mut Self, len: &mut usize| -> Option<()> {
            let v = r.int()?;
            match values.get_mut(*len) {
                Some(slot) => *slot = v,
                None => {
                    check(*len < MAX_NDIM)?;
                    if more.is_empty() {
                        more.extend_from_slice(&values);
                    }
                    more.push(v);
                }
            }
            *len += 1;
            Some(())
        };
        match self.peek()? {
            op::EMPTY_TUPLE => self.pos += 1,
            op::MARK => {
                self.pos += 1;
                while self.peek()? != op::TUPLE {
                    push(self, &mut len)?;
                }
                self.pos += 1;
            }
            _ => {
                while !matches!(self.peek()?, op::TUPLE1 | op::TUPLE2 | op::TUPLE3) {
                    push(self, &mut len)?;
                }
                check(usize::from(self.byte()? - op::TUPLE1 + 1) == len)?;
            }
        }
        check(len <= limits.max_container_len)?;
        self.nodes += 1;
        self.puts(Memo::Other)?;
        Some(if len <= MAX_DIMS {
            Dims::from_slice(&values[..len])
        } else {
            Dims::from_slice(&more)
        })
    }

    /// One `_rebuild_tensor_v2(...)` call, from its callable to its REDUCE and memo writes:
    /// the tensor's description (checked as its rebuild call is) and its storage reference.
    fn tensor(&mut self, limits: &PickleLimits) -> Option<(TensorDesc, StorageRef<'a>)> {
        if self.peek()? == op::GLOBAL {
            self.global("torch._utils", "_rebuild_tensor_v2")?;
        } else {
            check(self.get()? == Memo::Rebuild)?;
        }
        self.puts(Memo::Rebuild)?;
        self.expect(op::MARK)?;
        self.expect(op::MARK)?;
        let field_len = MAX_STORAGE_FIELD_LEN.min(limits.max_str_len);
        check(self.string(field_len)? == "storage")?;
        let dtype = if self.peek()? == op::GLOBAL {
            self.expect(op::GLOBAL)?;
            check(self.line()? == b"torch")?;
            let class = std::str::from_utf8(self.line()?).ok()?;
            self.nodes += 1;
            // `torch.UntypedStorage` (no dtype) is refused by torch under that spelling.
            DType::from_storage_class(class)?
        } else {
            match self.get()? {
                Memo::Storage(dtype) => dtype,
                _ => return None,
            }
        };
        self.puts(Memo::Storage(dtype))?;
        let key = self.string(field_len)?;
        let location = self.string(field_len)?;
        let numel = u64::try_from(self.int()?).ok()?;
        self.expect(op::TUPLE)?;
        self.nodes += 2; // the storage id tuple, the persistent id
        self.puts(Memo::Other)?;
        self.expect(op::BINPERSID)?;
        self.puts(Memo::Other)?;
        let offset = self.int()?;
        let shape = self.ints(limits)?;
        let strides = self.ints(limits)?;
        let requires_grad = match self.byte()? {
            op::NEWFALSE => false,
            op::NEWTRUE => true,
            _ => return None,
        };
        self.nodes += 1;
        self.new_ordered_dict()?;
        self.expect(op::TUPLE)?;
        self.puts(Memo::Other)?;
        self.expect(op::REDUCE)?;
        self.nodes += 2; // the arguments, the call
        self.puts(Memo::Other)?;
        let desc = torch::plain_desc(dtype, offset, shape, strides, requires_grad)?;
        Some((
            desc,
            StorageRef {
                key,
                location,
                numel,
            },
        ))
    }

    /// The items CPython's `_batch_setitems` writes into a dict: batches of 1000 pairs (MARK,
    /// pairs, SETITEMS), the last one shorter or a single pair with SETITEM. `item` reads one
    /// pair. Returns the number of pairs, stopping after the last chunk (a batch shorter than
    /// 1000 or a single pair) or before any other opcode. In a dict that is itself a value of
    /// a batch (`nested`), what follows a full batch could be the next outer pair: refused.
    fn dict_items(
        &mut self,
        limits: &PickleLimits,
        nested: bool,
        mut item: impl FnMut(&mut Self) -> Option<()>,
    ) -> Option<usize> {
        const BATCH: usize = 1000;
        let mut count = 0;
        loop {
            match self.peek()? {
                op::MARK => {
                    self.pos += 1;
                    let mut batch = 0;
                    while self.peek()? != op::SETITEMS {
                        item(self)?;
                        batch += 1;
                    }
                    self.pos += 1;
                    // Each pair is two stack items; the generic path holds a batch at once.
                    check(batch > 0 && 2 * batch + 16 <= limits.max_stack)?;
                    count += batch;
                    check(count <= limits.max_container_len)?;
                    if batch != BATCH {
                        return Some(count);
                    }
                    check(!nested)?;
                }
                op::BINUNICODE | op::SHORT_BINUNICODE | op::BINGET | op::LONG_BINGET => {
                    item(self)?;
                    self.expect(op::SETITEM)?;
                    count += 1;
                    check(count <= limits.max_container_len)?;
                    return Some(count);
                }
                _ => return Some(count),
            }
        }
    }

    /// A module's metadata value: `{'version': n, ...}` with str keys and int, bool or None
    /// values.
    fn metadata_value(&mut self, limits: &PickleLimits) -> Option<()> {
        self.expect(op::EMPTY_DICT)?;
        self.nodes += 1;
        self.puts(Memo::Other)?;
        self.dict_items(limits, true, |r| {
            r.string(limits.max_str_len)?;
            match r.peek()? {
                op::BININT1 | op::BININT2 | op::BININT => {
                    r.int()?;
                }
                op::NEWTRUE | op::NEWFALSE | op::NONE => {
                    r.pos += 1;
                    r.nodes += 1;
                }
                _ => return None,
            }
            Some(())
        })
        .map(drop)
    }
}

#[cfg(feature = "fuzzing")]
thread_local! {
    /// The differential tests turn the reader off (on their own thread) to open a file the
    /// generic way too (`mmckpt::fuzzing::plain_matches_generic`).
    static OFF: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with the reader off on this thread: every open takes the generic path.
#[cfg(feature = "fuzzing")]
pub(crate) fn without<R>(f: impl FnOnce() -> R) -> R {
    OFF.with(|off| off.set(true));
    let result = f();
    OFF.with(|off| off.set(false));
    result
}

/// Whether opens on this thread may read plain state dicts directly (always, but in tests).
pub(crate) fn enabled() -> bool {
    #[cfg(feature = "fuzzing")]
    {
        !OFF.with(|off| off.get())
    }
    #[cfg(not(feature = "fuzzing"))]
    {
        true
    }
}

/// The table of a plain state-dict pickle, or `None` when `data` is anything else (or anything
/// the generic path might answer differently). `data` is the whole pickle.
pub(crate) fn read<'a>(data: &'a [u8], limits: &PickleLimits) -> Option<Plain<'a>> {
    check(data.len() <= MAX_PICKLE_LEN)?;
    let mut r = Reader {
        data,
        pos: 0,
        memo: Vec::with_capacity(data.len() / 12),
        decoded: [(u32::MAX, ""); DECODED],
        next_decoded: 0,
        nodes: 0,
        puts: 0,
    };
    r.expect(op::PROTO)?;
    check(r.byte()? == 2)?;
    r.new_ordered_dict()?;
    // About 110 pickle bytes per tensor.
    let expected = data.len() / 100 + 1;
    let mut plain = Plain {
        table: Table::default(),
        descs: PageVec::with_capacity(expected),
        refs: Vec::with_capacity(expected),
    };
    plain.table.reserve(expected, data.len() / 10);
    r.dict_items(limits, false, |r| {
        let name = r.string(MAX_KEY_LEN.min(limits.max_str_len))?;
        // The table writes a NUL as `\x00`: such names go the generic way.
        check(!name.contains('\0'))?;
        let (desc, storage) = r.tensor(limits)?;
        plain.table.push_clean(name, plain.descs.len());
        plain.descs.push(desc);
        plain.refs.push(storage);
        Some(())
    })?;
    // The state (`vars(state_dict)`): {'_metadata': OrderedDict of module metadata}, or none.
    if r.peek()? == op::EMPTY_DICT {
        r.pos += 1;
        r.nodes += 1;
        r.puts(Memo::Other)?;
        check(r.string(limits.max_str_len)? == "_metadata")?;
        r.new_ordered_dict()?;
        r.dict_items(limits, false, |r| {
            r.string(limits.max_str_len)?;
            r.metadata_value(limits)
        })?;
        r.expect(op::SETITEM)?;
        r.expect(op::BUILD)?;
    }
    r.expect(op::STOP)?;
    // Marks nest three deep at most (a dict batch, a call's arguments, its storage id).
    check(
        r.nodes <= limits.max_nodes
            && r.puts <= limits.max_memo
            && 3 <= limits.max_marks
            && 32 <= limits.max_stack
            && 6 <= limits.max_container_len,
    )?;
    // A key that repeats: the generic path folds it as Python's dict does.
    check(plain.table.names_are_unique())?;
    Some(plain)
}
