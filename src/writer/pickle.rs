//! The pickle `torch.save` writes for a state dict of tensors, protocol 2, built opcode by
//! opcode: an `OrderedDict` of name → `torch._utils._rebuild_tensor_v2(...)` (or `_v3` for the
//! dtypes that have no legacy storage class), wrapped in `_rebuild_parameter` for parameters.
//! Only this subset is written; nothing here reads input, so nothing recurses.

use crate::dtype::DType;
use std::collections::HashMap;

// Protocol 2 opcodes (Lib/pickletools.py), the ones torch's pickler emits for a state dict:
// the reader's names.
use crate::pickle::opcodes::{
    BINGET, BININT, BININT1, BININT2, BINPERSID, BINPUT, BINUNICODE, EMPTY_TUPLE, GLOBAL, LONG1,
    LONG_BINGET, LONG_BINPUT, MARK, NEWFALSE, NEWTRUE, PROTO, REDUCE, SETITEMS, STOP, TUPLE,
    TUPLE1, TUPLE2, TUPLE3,
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

/// Builds `data.pkl`: `add` each tensor in order, then `finish`.
pub struct StateDictPickle {
    out: Vec<u8>,
    memo: HashMap<&'static str, u32>,
    /// Items since the open MARK of the current SETITEMS batch.
    pending: usize,
}

impl StateDictPickle {
    pub fn new() -> StateDictPickle {
        let mut p = StateDictPickle {
            out: vec![PROTO, 2],
            memo: HashMap::new(),
            pending: 0,
        };
        p.global("collections", "OrderedDict");
        p.out.extend_from_slice(&[EMPTY_TUPLE, REDUCE]);
        p
    }

    pub fn add(&mut self, t: &TensorRecord<'_>) {
        if self.pending == 0 {
            self.out.push(MARK);
        }
        self.string(t.name);
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
        self.pending += 1;
        if self.pending == BATCH {
            self.out.push(SETITEMS);
            self.pending = 0;
        }
    }

    pub fn finish(mut self) -> Vec<u8> {
        if self.pending > 0 {
            self.out.push(SETITEMS);
        }
        self.out.push(STOP);
        self.out
    }

    /// `module\nname\n`, memoized: later uses are a BINGET.
    fn global(&mut self, module: &'static str, name: &'static str) {
        // The key is the name alone: every name used here is unique across modules.
        if let Some(&index) = self.memo.get(name) {
            self.get(index);
            return;
        }
        self.out.push(GLOBAL);
        self.out.extend_from_slice(module.as_bytes());
        self.out.push(b'\n');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'\n');
        let index = self.memo.len() as u32;
        self.memo.insert(name, index);
        self.put(index);
    }

    fn put(&mut self, index: u32) {
        match u8::try_from(index) {
            Ok(i) => self.out.extend_from_slice(&[BINPUT, i]),
            Err(_) => {
                self.out.push(LONG_BINPUT);
                self.out.extend_from_slice(&index.to_le_bytes());
            }
        }
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

    fn bool(&mut self, b: bool) {
        self.out.push(if b { NEWTRUE } else { NEWFALSE });
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

    #[test]
    fn ints_use_the_smallest_opcode() {
        let mut p = StateDictPickle::new();
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
