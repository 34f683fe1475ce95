//! safetensors files: an 8-byte little-endian header length N, N bytes of JSON
//! (`{"__metadata__": {"k": "v"}, "name": {"dtype": "F32", "shape": [2, 3],
//! "data_offsets": [begin, end]}, ...}`), then the data area the offsets count from.
//!
//! The header is checked at least as strictly as the `safetensors` crate checks it (0.6,
//! `Metadata::validate`): in offset order the tensors tile the data area exactly, each span is
//! shape × dtype bytes, and the last one ends at the end of the file. Duplicate names, which
//! the crate lets the last one win, are refused.
//!
//! Each tensor is its own storage (a contiguous byte range of the file, key = its position in
//! the data area), so its bytes are the mapping's own; one misaligned for its dtype is copied
//! on first use as a zip archive's misaligned record is (`storage::fix_storages`), or handed
//! out as it is with `accept_unaligned`.
//!
//! Order: the table lists tensors by data offset, as `safetensors.torch.load_file` returns
//! them (it sorts by offsets, whatever order the header has; empty tensors sharing an offset
//! keep header order here, where the crate's order is a hash map's).
//!
//! Values: the tree is a dict of the tensors (leaves, in table order) after `__metadata__`,
//! a dict of strings, so `value("__metadata__.format")` reads the metadata.

use crate::checkpoint::storage::{fix_little_endian_storages, Storage, StorageKey};
use crate::checkpoint::table::Table;
use crate::checkpoint::{Checkpoint, Format, OpenOptions};
use crate::container::Source;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::hash::HashMap;
use crate::pickle::value::TupleItems;
use crate::pickle::{Arena, DictClass, NodeId, Value};
use crate::torch::{TensorDesc, MAX_NDIM};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::sync::Arc;

/// Bytes of the length prefix.
const PREFIX: usize = 8;

/// A safetensors file beyond doubt: its header starts with `{` and its length fits the file.
/// (JSON text starting with `{` never passes: its first eight bytes are a length far past any
/// file.)
pub fn looks_like_safetensors(bytes: &[u8]) -> bool {
    claims(bytes) && header_len(bytes).is_some_and(|n| n <= (bytes.len() - PREFIX) as u64)
}

/// The ninth byte opens a JSON object: the file means to be safetensors (checked after the
/// zip and pickle signatures, so a truncated or hostile header still gets a safetensors error).
pub fn claims(bytes: &[u8]) -> bool {
    bytes.get(PREFIX) == Some(&b'{')
}

fn header_len(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(bytes.get(..PREFIX)?.try_into().ok()?))
}

/// safetensors' dtype names (the crate's `Dtype`), with their bits per element and the
/// torch dtype each loads as (`None`: torch has none, `safetensors.torch` refuses it).
const DTYPES: &[(&str, usize, Option<DType>)] = &[
    ("BOOL", 8, Some(DType::Bool)),
    ("F4", 4, Some(DType::Float4E2M1FnX2)),
    ("F6_E2M3", 6, None),
    ("F6_E3M2", 6, None),
    ("U8", 8, Some(DType::UInt8)),
    ("I8", 8, Some(DType::Int8)),
    ("F8_E5M2", 8, Some(DType::Float8E5M2)),
    ("F8_E4M3", 8, Some(DType::Float8E4M3Fn)),
    ("F8_E8M0", 8, Some(DType::Float8E8M0Fnu)),
    ("F8_E4M3FNUZ", 8, Some(DType::Float8E4M3FnUz)),
    ("F8_E5M2FNUZ", 8, Some(DType::Float8E5M2FnUz)),
    ("I16", 16, Some(DType::Int16)),
    ("U16", 16, Some(DType::UInt16)),
    ("F16", 16, Some(DType::Float16)),
    ("BF16", 16, Some(DType::BFloat16)),
    ("I32", 32, Some(DType::Int32)),
    ("U32", 32, Some(DType::UInt32)),
    ("F32", 32, Some(DType::Float32)),
    ("C64", 64, Some(DType::Complex64)),
    ("F64", 64, Some(DType::Float64)),
    ("I64", 64, Some(DType::Int64)),
    ("U64", 64, Some(DType::UInt64)),
];

/// Index into [`DTYPES`].
type StDType = u8;

fn st_dtype(name: &str) -> Option<StDType> {
    DTYPES
        .iter()
        .position(|d| d.0 == name)
        .map(|i| i as StDType)
}

/// One tensor as the header describes it.
pub struct HeaderTensor<'h> {
    pub name: Cow<'h, str>,
    dtype: StDType,
    pub shape: crate::torch::Dims,
    /// Byte range in the data area.
    pub begin: u64,
    pub end: u64,
}

impl HeaderTensor<'_> {
    /// safetensors' spelling of the dtype (`F32`).
    pub fn dtype_name(&self) -> &'static str {
        DTYPES[usize::from(self.dtype)].0
    }
}

/// A checked header: the tensors in data-offset order and the metadata in header order.
pub struct Header<'h> {
    pub tensors: Vec<HeaderTensor<'h>>,
    pub metadata: Vec<(Cow<'h, str>, Cow<'h, str>)>,
    /// Where the data area starts in the file (8 + N).
    pub data_start: usize,
}

/// Reads and checks the header of the safetensors file `bytes`.
pub fn parse_header<'h>(bytes: &'h [u8], options: &OpenOptions) -> Result<Header<'h>> {
    let Some(n) = header_len(bytes) else {
        return Err(Error::format(format!(
            "safetensors file is {} bytes, shorter than its 8-byte header length",
            bytes.len()
        )));
    };
    let max = options.limits.max_header_bytes;
    if n > max {
        return Err(Error::limit(format!(
            "safetensors header is {n} bytes; the limit is {max} (max_header_bytes)"
        )));
    }
    let available = (bytes.len() - PREFIX) as u64;
    if n > available {
        return Err(Error::format(format!(
            "safetensors header length {n} runs past the end of the file ({available} bytes \
             follow the length)"
        )));
    }
    let data_start = PREFIX + n as usize;
    let text = &bytes[PREFIX..data_start];
    if text.first() != Some(&b'{') {
        return Err(Error::format(
            "safetensors header does not start with '{' (a JSON object)",
        ));
    }
    let text = std::str::from_utf8(text).map_err(|e| {
        Error::format(format!(
            "safetensors header is not UTF-8 (at header byte {})",
            e.valid_up_to()
        ))
    })?;
    let mut failure = None;
    let seed = HeaderSeed {
        max_tensors: options.limits.table.max_tensors,
        failure: &mut failure,
    };
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = seed.deserialize(&mut de).and_then(|h| de.end().map(|()| h));
    let (mut tensors, metadata) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            return Err(failure
                .unwrap_or_else(|| Error::format(format!("safetensors header is not valid: {e}"))))
        }
    };
    check_unique_names(&tensors)?;
    // Stable: equal offsets (empty tensors) keep header order.
    tensors.sort_by_key(|t| (t.begin, t.end));
    check_layout(&tensors, (bytes.len() - data_start) as u64)?;
    Ok(Header {
        tensors,
        metadata,
        data_start,
    })
}

fn check_unique_names(tensors: &[HeaderTensor<'_>]) -> Result<()> {
    let mut seen: HashMap<&str, ()> = HashMap::default();
    seen.reserve(tensors.len());
    for t in tensors {
        if seen.insert(&t.name, ()).is_some() {
            return Err(Error::format(format!(
                "safetensors header names tensor '{}' twice",
                t.name
            )));
        }
    }
    Ok(())
}

/// In offset order the tensors must tile the data area of `data_len` bytes exactly, each
/// span holding exactly its shape × dtype.
fn check_layout(tensors: &[HeaderTensor<'_>], data_len: u64) -> Result<()> {
    let mut at = 0u64;
    for t in tensors {
        let name = &t.name;
        let (begin, end) = (t.begin, t.end);
        if end < begin {
            return Err(Error::format(format!(
                "safetensors tensor '{name}' has data_offsets [{begin}, {end}]: it ends before \
                 it begins"
            )));
        }
        if end > data_len {
            return Err(Error::format(format!(
                "safetensors tensor '{name}' has data_offsets [{begin}, {end}], outside the \
                 data area of {data_len} bytes"
            )));
        }
        if begin < at {
            return Err(Error::format(format!(
                "safetensors tensor '{name}' has data_offsets [{begin}, {end}], overlapping \
                 the tensor before it, which ends at {at}"
            )));
        }
        if begin > at {
            return Err(Error::format(format!(
                "safetensors tensor '{name}' has data_offsets [{begin}, {end}], leaving bytes \
                 {at}..{begin} of the data area to no tensor"
            )));
        }
        let bits = DTYPES[usize::from(t.dtype)].1 as u64;
        let nbits = t
            .shape
            .iter()
            .try_fold(bits, |acc, &d| acc.checked_mul(d as u64))
            .ok_or_else(|| {
                Error::format(format!(
                    "safetensors tensor '{name}': shape {:?} of {} overflows 64 bits",
                    &*t.shape,
                    t.dtype_name()
                ))
            })?;
        if nbits % 8 != 0 {
            return Err(Error::format(format!(
                "safetensors tensor '{name}': shape {:?} of {} is {nbits} bits, not whole bytes",
                &*t.shape,
                t.dtype_name()
            )));
        }
        if end - begin != nbits / 8 {
            return Err(Error::format(format!(
                "safetensors tensor '{name}' has data_offsets [{begin}, {end}] ({} bytes), but \
                 shape {:?} of {} takes {} bytes",
                end - begin,
                &*t.shape,
                t.dtype_name(),
                nbits / 8
            )));
        }
        at = end;
    }
    if at != data_len {
        return Err(Error::format(format!(
            "safetensors tensors end at data offset {at}, but the data area holds {data_len} \
             bytes (the crate: \"incomplete metadata, file not fully covered\")"
        )));
    }
    Ok(())
}

/// Opens a safetensors file.
pub(crate) fn open(source: &Arc<Source>, options: &OpenOptions) -> Result<Checkpoint> {
    if options.verify_crc {
        return Err(Error::unsupported(
            "a CRC check was asked for, but a safetensors file records no checksums",
        ));
    }
    let bytes = source.bytes();
    let header = parse_header(bytes, options)?;
    let count = header.tensors.len();

    // The value tree: {"__metadata__": {...}, name: tensor leaf, ...}. A leaf is a call of
    // torch's rebuild function, so the value API sees a tensor (its description is the
    // table's); every leaf shares the one callable and argument tuple.
    let mut arena = Arena::new();
    arena.reserve(2 * count + 2 * header.metadata.len() + 8);
    let callable = arena.push(Value::Global {
        module: "torch._utils".into(),
        name: "_rebuild_tensor_v2".into(),
    });
    let no_args = arena.push(Value::Tuple(TupleItems::from_slice(&[])));
    let mut items = Vec::with_capacity(count + 1);
    if !header.metadata.is_empty() {
        let mut entries = Vec::with_capacity(header.metadata.len());
        for (key, value) in &header.metadata {
            let key = push_str(&mut arena, key);
            entries.push((key, push_str(&mut arena, value)));
        }
        let metadata = arena.push(Value::Dict {
            items: entries,
            state: None,
            class: DictClass::Dict,
        });
        items.push((push_str(&mut arena, "__metadata__"), metadata));
    }
    let mut leaves = Vec::with_capacity(count);
    for t in &header.tensors {
        let key = push_str(&mut arena, &t.name);
        let leaf = arena.push(Value::Object {
            callable,
            args: no_args,
            kwargs: None,
            new_object: false,
            state: None,
            items: None,
        });
        items.push((key, leaf));
        leaves.push(leaf);
    }
    let top = arena.push(Value::Dict {
        items,
        state: None,
        class: DictClass::Dict,
    });

    // The table, limited to the selected root: the whole dict, one tensor (named ""), or a
    // value that holds none.
    let root = match options.root.as_deref().filter(|p| !p.is_empty()) {
        Some(path) => crate::tree::lookup(&arena, top, path)
            .map_err(|e| e.context(format!("root '{path}'")))?,
        None => top,
    };
    let location: Arc<str> = "cpu".into();
    let mut storages = Vec::with_capacity(count);
    let mut tensors = Vec::with_capacity(count);
    let mut table = Table::default();
    for (position, (t, &leaf)) in header.tensors.iter().zip(&leaves).enumerate() {
        let name: &str = if root == top {
            &t.name
        } else if root == leaf {
            ""
        } else {
            continue;
        };
        match describe(t, storages.len()) {
            Ok(desc) => {
                // `position` < max_tensors (≤ u32::MAX in any sane configuration).
                let key = StorageKey::Number(u32::try_from(position).unwrap_or(u32::MAX));
                let start = header.data_start + t.begin as usize;
                let len = (t.end - t.begin) as usize;
                storages.push(Storage::in_file(key, location.clone(), source, start, len));
                table.push(name, Ok(tensors.len()));
                tensors.push(desc);
            }
            Err(e) => table.push(name, Err(e)),
        }
    }
    // Little-endian by definition: only misaligned tensors are marked for a copy on first use.
    fix_little_endian_storages(&mut storages, &tensors, options.accept_unaligned)?;
    Ok(Checkpoint {
        source: source.clone(),
        format: Format::Safetensors,
        tree: crate::checkpoint::ValueTree::new(arena, root),
        storages: storages.into(),
        tensors: tensors.into(),
        table,
        byte_order_big: false,
        crc_report: None,
        chunks: Default::default(),
    })
}

fn push_str(arena: &mut Arena, s: &str) -> NodeId {
    let s = arena.store_str(s);
    arena.push(Value::Str(s))
}

/// The torch description of a checked tensor in storage `storage`, or why torch has none
/// (`Unsupported`, kept in the table's row as for any unrepresentable tensor).
fn describe(t: &HeaderTensor<'_>, storage: usize) -> Result<TensorDesc> {
    let Some(dtype) = DTYPES[usize::from(t.dtype)].2 else {
        return Err(Error::unsupported(format!(
            "safetensors tensor '{}' has dtype {}, which torch has no dtype for",
            t.name,
            t.dtype_name()
        )));
    };
    let mut shape = t.shape.clone();
    if dtype == DType::Float4E2M1FnX2 {
        // safetensors counts 4-bit elements; torch's float4_e2m1fn_x2 packs two along the
        // last dimension (`safetensors.torch`: "the last dim be divisible by 2").
        let last = match &mut shape {
            crate::torch::Dims::Inline { len, dims } if *len > 0 => {
                &mut dims[usize::from(*len) - 1]
            }
            crate::torch::Dims::Heap(dims) if !dims.is_empty() => {
                let at = dims.len() - 1;
                &mut dims[at]
            }
            _ => unreachable!("a 0-d F4 tensor is 4 bits, refused by the layout check"),
        };
        if *last % 2 != 0 {
            return Err(Error::unsupported(format!(
                "safetensors tensor '{}' is F4 of shape {:?}: torch's float4_e2m1fn_x2 needs \
                 an even last dimension",
                t.name, &*t.shape
            )));
        }
        *last /= 2;
    }
    let mut strides = [0i64; MAX_NDIM];
    let mut step = 1i64;
    let mut numel = 1u64;
    for (slot, &size) in strides[..shape.len()].iter_mut().zip(shape.iter()).rev() {
        *slot = step;
        // The layout check bounded shape × bits by 64 bits, so these fit.
        step = step.saturating_mul(size.max(1));
        numel = numel.saturating_mul(size as u64);
    }
    Ok(TensorDesc {
        dtype,
        strides: crate::torch::Dims::from_slice(&strides[..shape.len()]),
        shape,
        storage_offset: 0,
        numel,
        storage,
        requires_grad: false,
        is_parameter: false,
        conj: false,
        neg: false,
    })
}

// ----- the JSON header, read straight into `HeaderTensor`s (no JSON value tree) ----------

/// The first error the header's meaning (not its JSON syntax) caused: reported as is, rather
/// than through serde's message.
type Failure<'a> = &'a mut Option<Error>;

fn fail<E: de::Error>(failure: Failure<'_>, error: Error) -> E {
    *failure = Some(error);
    E::custom("invalid safetensors header")
}

/// A string, borrowed from the header when it has no escapes.
struct Text;

impl<'de> DeserializeSeed<'de> for Text {
    type Value = Cow<'de, str>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Text {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_string()))
    }
}

type Parsed<'h> = (Vec<HeaderTensor<'h>>, Vec<(Cow<'h, str>, Cow<'h, str>)>);

struct HeaderSeed<'f> {
    max_tensors: usize,
    failure: Failure<'f>,
}

impl<'de> DeserializeSeed<'de> for HeaderSeed<'_> {
    type Value = Parsed<'de>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for HeaderSeed<'_> {
    type Value = Parsed<'de>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object of tensors")
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let failure = self.failure;
        let mut tensors = Vec::with_capacity(map.size_hint().unwrap_or(0).min(1 << 16));
        let mut metadata: Option<Vec<_>> = None;
        while let Some(name) = map.next_key_seed(Text)? {
            if name == "__metadata__" {
                if metadata.is_some() {
                    return Err(fail(
                        failure,
                        Error::format("safetensors header has two \"__metadata__\" entries"),
                    ));
                }
                metadata = Some(map.next_value_seed(MetadataSeed)?.unwrap_or_default());
                continue;
            }
            if tensors.len() == self.max_tensors {
                return Err(fail(
                    failure,
                    Error::limit(format!(
                        "safetensors header describes more than {} tensors (max_tensors)",
                        self.max_tensors
                    )),
                ));
            }
            let info = map.next_value_seed(InfoSeed {
                name: &name,
                failure: &mut *failure,
            })?;
            tensors.push(HeaderTensor {
                name,
                dtype: info.0,
                shape: info.1,
                begin: info.2[0],
                end: info.2[1],
            });
        }
        Ok((tensors, metadata.unwrap_or_default()))
    }
}

/// `__metadata__`: `null` or an object of strings (the crate's `Option<HashMap<String,
/// String>>`), kept in header order.
struct MetadataSeed;

impl<'de> DeserializeSeed<'de> for MetadataSeed {
    type Value = Option<Vec<(Cow<'de, str>, Cow<'de, str>)>>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for MetadataSeed {
    type Value = Option<Vec<(Cow<'de, str>, Cow<'de, str>)>>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("__metadata__ as an object of strings")
    }
    fn visit_none<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> std::result::Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_some<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
    fn visit_map<A: MapAccess<'de>>(
        self,
        mut map: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(Text)? {
            let value = map.next_value_seed(Text)?;
            // A repeated key: JSON's last one wins, as for the crate's map.
            if let Some(at) = entries.iter().position(|(k, _): &(Cow<str>, _)| *k == key) {
                entries.remove(at);
            }
            entries.push((key, value));
        }
        Ok(Some(entries))
    }
}

/// One tensor's entry: dtype, shape, data_offsets (other fields are ignored, as by the crate).
struct InfoSeed<'n, 'f> {
    name: &'n str,
    failure: Failure<'f>,
}

type Info = (StDType, crate::torch::Dims, [u64; 2]);

impl<'de> DeserializeSeed<'de> for InfoSeed<'_, '_> {
    type Value = Info;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Info, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for InfoSeed<'_, '_> {
    type Value = Info;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "tensor '{}' as an object with dtype, shape and data_offsets",
            self.name
        )
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Info, A::Error> {
        let (name, failure) = (self.name, self.failure);
        let (mut dtype, mut shape, mut offsets) = (None, None, None);
        while let Some(field) = map.next_key_seed(Text)? {
            let repeated = match &*field {
                "dtype" => {
                    let text = map.next_value_seed(Text)?;
                    let Some(d) = st_dtype(&text) else {
                        return Err(fail(
                            failure,
                            Error::format(format!(
                                "safetensors tensor '{name}' has dtype \"{}\", which \
                                 safetensors does not define",
                                text.escape_debug()
                            )),
                        ));
                    };
                    dtype.replace(d).is_some()
                }
                "shape" => {
                    let dims = map.next_value_seed(Numbers::<MAX_NDIM> {
                        name,
                        field: "shape",
                    })?;
                    if let Some(&big) = dims.iter().find(|&&d| d > i64::MAX as u64) {
                        return Err(fail(
                            failure,
                            Error::format(format!(
                                "safetensors tensor '{name}' has dimension {big}, past 2^63 - 1"
                            )),
                        ));
                    }
                    let dims: Vec<i64> = dims.iter().map(|&d| d as i64).collect();
                    shape
                        .replace(crate::torch::Dims::from_slice(&dims))
                        .is_some()
                }
                "data_offsets" => {
                    let pair = map.next_value_seed(Numbers::<2> {
                        name,
                        field: "data_offsets",
                    })?;
                    if pair.len() != 2 {
                        return Err(fail(
                            failure,
                            Error::format(format!(
                                "safetensors tensor '{name}' has {} data_offsets, not 2",
                                pair.len()
                            )),
                        ));
                    }
                    offsets.replace([pair[0], pair[1]]).is_some()
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    false
                }
            };
            if repeated {
                return Err(fail(
                    failure,
                    Error::format(format!(
                        "safetensors tensor '{name}' has two \"{field}\" fields"
                    )),
                ));
            }
        }
        let missing =
            |field: &str| Error::format(format!("safetensors tensor '{name}' has no \"{field}\""));
        match (dtype, shape, offsets) {
            (Some(d), Some(s), Some(o)) => Ok((d, s, o)),
            (None, ..) => Err(fail(failure, missing("dtype"))),
            (_, None, _) => Err(fail(failure, missing("shape"))),
            (_, _, None) => Err(fail(failure, missing("data_offsets"))),
        }
    }
}

/// An array of at most `MAX` unsigned integers (more is a serde error naming the field).
struct Numbers<'n, const MAX: usize> {
    name: &'n str,
    field: &'static str,
}

/// Up to `MAX` numbers, without allocating.
struct Bounded<const MAX: usize> {
    len: usize,
    items: [u64; MAX],
}

impl<const MAX: usize> std::ops::Deref for Bounded<MAX> {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        &self.items[..self.len]
    }
}

impl<'de, const MAX: usize> DeserializeSeed<'de> for Numbers<'_, MAX> {
    type Value = Bounded<MAX>;
    fn deserialize<D: de::Deserializer<'de>>(
        self,
        d: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, const MAX: usize> Visitor<'de> for Numbers<'_, MAX> {
    type Value = Bounded<MAX>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "tensor '{}': \"{}\" as an array of at most {MAX} non-negative integers",
            self.name, self.field
        )
    }
    fn visit_seq<A: SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let mut out = Bounded {
            len: 0,
            items: [0; MAX],
        };
        while let Some(n) = seq.next_element::<u64>()? {
            if out.len == MAX {
                return Err(de::Error::invalid_length(MAX + 1, &self));
            }
            out.items[out.len] = n;
            out.len += 1;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(header: &str, data: &[u8]) -> Vec<u8> {
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn detection() {
        let st = file(
            r#"{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}"#,
            b"x",
        );
        assert!(looks_like_safetensors(&st));
        assert!(!looks_like_safetensors(b"{\"weight_map\": {}}"));
        assert!(!looks_like_safetensors(b"PK\x03\x04"));
        // Header length 640: its first bytes are 80 02, a pickle's PROTO 2.
        let padded = format!("{{{}}}", " ".repeat(638));
        let st = file(&padded, b"");
        assert_eq!(&st[..2], b"\x80\x02");
        assert!(looks_like_safetensors(&st));
    }

    #[test]
    fn f4_packs_two_along_the_last_dimension() {
        let st = file(
            r#"{"f":{"dtype":"F4","shape":[2,6],"data_offsets":[0,6]}}"#,
            &[0; 6],
        );
        let header = parse_header(&st, &OpenOptions::default()).unwrap();
        let desc = describe(&header.tensors[0], 0).unwrap();
        assert_eq!(
            (&*desc.shape, &*desc.strides, desc.numel),
            (&[2i64, 3][..], &[3i64, 1][..], 6)
        );
    }
}
