//! JSON module specs (docs/module-spec.md): the layer form (containers and torch.nn layers with
//! torch's constructor arguments and defaults) and the flat form (a state dict's keys and
//! shapes), which may be mixed. Errors are InvalidArgument and name the node's path. The
//! known types are listed in `layers.rs`; stateless layers (activations, pooling, …) are
//! submodules without entries.
//!
//! The JSON is read into an order-preserving tree (object members keep document order, which is
//! torch's registration order; duplicate members are reported, not silently merged). Members a
//! node does not use (torch arguments that do not change the entries, like `stride` or `eps`)
//! are ignored.

use super::layers;
use super::{EntryKind, Module};
use crate::dtype::DType;
use crate::error::{Error, Result};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use std::fmt;

/// A JSON value with object members in document order.
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Int(_) => "an integer",
            Json::Float(_) => "a number with a fraction",
            Json::Str(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

struct JsonSeed;

impl<'de> DeserializeSeed<'de> for JsonSeed {
    type Value = Json;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> std::result::Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> std::result::Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> std::result::Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> std::result::Result<Json, E> {
        Ok(Json::Int(v as i128))
    }
    fn visit_u64<E>(self, v: u64) -> std::result::Result<Json, E> {
        Ok(Json::Int(v as i128))
    }
    fn visit_f64<E>(self, v: f64) -> std::result::Result<Json, E> {
        Ok(Json::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> std::result::Result<Json, E> {
        Ok(Json::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> std::result::Result<Json, E> {
        Ok(Json::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(JsonSeed)? {
            items.push(v);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> std::result::Result<Json, A::Error> {
        let mut members = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(JsonSeed)?;
            members.push((key, value));
        }
        Ok(Json::Object(members))
    }
}

fn parse_json(text: &str) -> Result<Json> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = JsonSeed
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v))
        .map_err(|e| Error::invalid_argument(format!("module spec is not valid JSON: {e}")))?;
    Ok(value)
}

/// Where a node is, for messages: `<root>`, `layers.3.attn`, `entries[2]`.
fn shown(path: &str) -> String {
    if path.is_empty() {
        "<root>".to_string()
    } else {
        path.to_string()
    }
}

fn join(path: &str, name: &str) -> String {
    // Called for every entry and module a spec builds: one exact allocation, no formatting.
    // One byte more: an entry's C name appends its NUL in place (`Module::add_owned`).
    let mut full = String::with_capacity(path.len() + name.len() + 2);
    if !path.is_empty() {
        full.push_str(path);
        full.push('.');
    }
    full.push_str(name);
    full
}

/// `path.i` (or `i` at the root), an item of a `ModuleList` / `Sequential`, written into
/// `out` (reused from item to item: a `repeat` of thousands allocates one path).
fn join_index(out: &mut String, path: &str, i: usize) {
    // The digits by hand: `write!` goes through the formatting machinery for every module.
    let mut digits = [0u8; 20];
    let (mut n, mut at) = (i, digits.len());
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.clear();
    if !path.is_empty() {
        out.push_str(path);
        out.push('.');
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

/// An object node's members, with the node path for messages.
struct Node<'a> {
    path: &'a str,
    what: &'a str,
    members: &'a [(String, Json)],
}

impl<'a> Node<'a> {
    fn new(json: &'a Json, path: &'a str, what: &'a str) -> Result<Node<'a>> {
        match json {
            Json::Object(members) => {
                if let Some(k) = duplicate(members) {
                    return Err(Error::invalid_argument(format!(
                        "module spec: {what} '{}': duplicate member '{k}'",
                        shown(path)
                    )));
                }
                Ok(Node {
                    path,
                    what,
                    members,
                })
            }
            other => Err(Error::invalid_argument(format!(
                "module spec: {what} '{}' must be an object, not {}",
                shown(path),
                other.kind()
            ))),
        }
    }

    fn err(&self, message: impl fmt::Display) -> Error {
        Error::invalid_argument(format!(
            "module spec: {} '{}': {message}",
            self.what,
            shown(self.path)
        ))
    }

    fn get(&self, key: &str) -> Option<&'a Json> {
        self.members.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn required(&self, key: &str) -> Result<&'a Json> {
        self.get(key)
            .ok_or_else(|| self.err(format!("missing argument '{key}'")))
    }

    fn size_value(&self, key: &str, v: &Json) -> Result<i64> {
        match v {
            Json::Int(n) if *n < 0 => Err(self.err(format!("'{key}' is negative ({n})"))),
            Json::Int(n) if *n > i64::MAX as i128 => {
                Err(self.err(format!("'{key}' is too large ({n})")))
            }
            Json::Int(n) => Ok(*n as i64),
            other => Err(self.err(format!(
                "'{key}' must be a non-negative integer, not {}",
                other.kind()
            ))),
        }
    }

    fn size(&self, key: &str) -> Result<i64> {
        self.size_value(key, self.required(key)?)
    }

    fn size_or(&self, key: &str, default: i64) -> Result<i64> {
        self.get(key)
            .map_or(Ok(default), |v| self.size_value(key, v))
    }

    fn flag(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(Json::Bool(b)) => Ok(*b),
            Some(other) => Err(self.err(format!(
                "'{key}' must be true or false, not {}",
                other.kind()
            ))),
        }
    }

    /// A list of sizes: `[2, 3]`.
    fn sizes_value(&self, key: &str, v: &Json) -> Result<Vec<i64>> {
        match v {
            Json::Array(items) => items
                .iter()
                .map(|item| self.size_value(key, item))
                .collect(),
            other => Err(self.err(format!(
                "'{key}' must be a list of non-negative integers, not {}",
                other.kind()
            ))),
        }
    }

    /// An int or a list (`kernel_size`, `normalized_shape`); an int repeats `n` times.
    fn int_or_list(&self, key: &str, n: usize) -> Result<Vec<i64>> {
        match self.required(key)? {
            Json::Array(_) => {
                let list = self.sizes_value(key, self.required(key)?)?;
                if n != 0 && list.len() != n {
                    return Err(
                        self.err(format!("'{key}' must have {n} values, not {}", list.len()))
                    );
                }
                Ok(list)
            }
            v => {
                let size = self.size_value(key, v).map_err(|_| {
                    self.err(format!(
                        "'{key}' must be a non-negative integer or a list of them, not {}",
                        v.kind()
                    ))
                })?;
                Ok(vec![size; n.max(1)])
            }
        }
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Json::Str(s)) => Ok(Some(s)),
            Some(other) => Err(self.err(format!("'{key}' must be a string, not {}", other.kind()))),
        }
    }

    fn dtype(&self, inherited: DType) -> Result<DType> {
        match self.string("dtype")? {
            None => Ok(inherited),
            Some(name) => DType::from_name(name.strip_prefix("torch.").unwrap_or(name))
                .ok_or_else(|| self.err(format!("unknown dtype '{name}'"))),
        }
    }

    fn object(&self, key: &str) -> Result<Option<&'a [(String, Json)]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Json::Object(members)) => match duplicate(members) {
                Some(dup) => Err(self.err(format!("'{key}' has a duplicate member '{dup}'"))),
                None => Ok(Some(members)),
            },
            Some(other) => {
                Err(self.err(format!("'{key}' must be an object, not {}", other.kind())))
            }
        }
    }
}

/// The first member whose key an earlier member has. Linear: a node is checked every time a
/// `repeat` builds it, and an object may have many members.
fn duplicate(members: &[(String, Json)]) -> Option<&str> {
    // A layer node has a handful of members: comparing them pairwise allocates nothing (it
    // runs for every node a `repeat` builds); larger objects go through a set.
    if members.len() <= 16 {
        return members
            .iter()
            .enumerate()
            .find(|(i, (k, _))| members[..*i].iter().any(|(earlier, _)| earlier == k))
            .map(|(_, (k, _))| k.as_str());
    }
    let mut seen: std::collections::HashSet<&str, crate::hash::RandomState> =
        std::collections::HashSet::with_capacity_and_hasher(members.len(), Default::default());
    members
        .iter()
        .map(|(k, _)| k.as_str())
        .find(|k| !seen.insert(k))
}

pub(super) fn parse(text: &str) -> Result<Module> {
    let json = parse_json(text)?;
    let root = Node::new(&json, "", "node")?;
    let name = root.string("name")?.unwrap_or("Module");
    // Everything the spec expands to is counted, and bounded, before anything is built.
    let size = expansion(&json, &mut Vec::new())?;
    let mut builder = Builder {
        module: Module::with_capacity(name, size.entries as usize),
    };
    builder.node(&json, "", DType::Float32)?;
    Ok(builder.module)
}

/// Most modules one spec expands to (`repeat` multiplies its item): the largest real models
/// have fewer than 100,000 modules, so this leaves a wide margin while a spec such as
/// `"repeat": 2222222222222` fails at once instead of running for hours.
pub const MAX_SPEC_NODES: usize = 1 << 20;

/// Most entries (parameters and buffers) one spec expands to: the largest real models have
/// fewer than 100,000.
pub const MAX_SPEC_ENTRIES: usize = 1 << 20;

/// Most bytes of names one spec expands to: every entry name and submodule path (a path counted
/// with one byte more). 100,000 names of 200 bytes are 20 MB.
pub const MAX_SPEC_NAME_BYTES: usize = 64 << 20;

/// Most JSON values a spec holds with every `repeat` unrolled: this bounds the building work
/// (every member of every module node built is looked at), whatever the entries.
pub const MAX_SPEC_VALUES: usize = 1 << 22;

/// What a spec node expands to. Names are counted relative to the node.
#[derive(Clone, Copy, Default)]
struct Size {
    values: u128,
    modules: u128,
    entries: u128,
    name_bytes: u128,
    /// A `repeat` of more than one item is inside (for the message).
    repeats: bool,
}

impl Size {
    fn plus(self, other: Size) -> Size {
        Size {
            values: self.values.saturating_add(other.values),
            modules: self.modules.saturating_add(other.modules),
            entries: self.entries.saturating_add(other.entries),
            name_bytes: self.name_bytes.saturating_add(other.name_bytes),
            repeats: self.repeats || other.repeats,
        }
    }

    /// This node placed `count` times, copy `i` under a segment of `segment_bytes(i)` bytes in
    /// all: every name inside gains the segments and one separator each.
    fn placed(self, count: u128, segment_bytes: u128) -> Size {
        let names = self.entries.saturating_add(self.modules);
        Size {
            values: self.values.saturating_mul(count),
            modules: self.modules.saturating_mul(count),
            entries: self.entries.saturating_mul(count),
            name_bytes: self
                .name_bytes
                .saturating_mul(count)
                .saturating_add(names.saturating_mul(segment_bytes.saturating_add(count))),
            repeats: self.repeats || count > 1,
        }
    }

    fn entries(count: u128, name_bytes: u128) -> Size {
        Size {
            entries: count,
            name_bytes,
            ..Size::default()
        }
    }
}

/// Decimal digits of 0, 1, …, n − 1 together (the segments `repeat` names its copies with).
pub(super) fn digits_below(n: u128) -> u128 {
    let mut total = n.min(1); // "0"
    let (mut low, mut digits) = (1u128, 1u128);
    while low < n {
        let high = low.saturating_mul(10).min(n);
        total = total.saturating_add((high - low).saturating_mul(digits));
        low = high;
        digits += 1;
    }
    total
}

/// JSON values in `json`, counted plainly.
fn json_values(json: &Json) -> u128 {
    // An explicit stack: JSON nesting is bounded by the reader, but this needs no bound.
    let mut total = 0u128;
    let mut stack = vec![json];
    while let Some(v) = stack.pop() {
        total += 1;
        match v {
            Json::Array(items) => stack.extend(items),
            Json::Object(members) => stack.extend(members.iter().map(|(_, v)| v)),
            _ => {}
        }
    }
    total
}

/// Most entries and entry-name bytes a layer type declares (its largest configuration).
fn layer_entries(ty: &str) -> Size {
    match ty {
        "Linear" | "LayerNorm" | "GroupNorm" => Size::entries(2, 10),
        "Conv1d" | "Conv2d" | "Conv3d" | "ConvTranspose1d" | "ConvTranspose2d"
        | "ConvTranspose3d" => Size::entries(2, 10),
        "Embedding" | "RMSNorm" | "PReLU" => Size::entries(1, 6),
        // weight, bias, running_mean, running_var, num_batches_tracked.
        "BatchNorm1d" | "BatchNorm2d" | "BatchNorm3d" => Size::entries(5, 52),
        // {q,k,v}_proj_weight, in_proj_bias, bias_k, bias_v, out_proj.weight, out_proj.bias.
        "MultiheadAttention" => Size::entries(8, 91),
        _ => Size::default(),
    }
}

/// Counts what the spec node `json` expands to, following exactly the members
/// [`Builder::node`] follows, and fails with Limit at the first node (innermost first) whose
/// expansion exceeds a bound. `trail` is the node's path. Recursion follows JSON nesting,
/// which the JSON reader bounds (128 levels).
fn expansion(json: &Json, trail: &mut Vec<String>) -> Result<Size> {
    let Json::Object(members) = json else {
        return Ok(Size {
            values: json_values(json),
            ..Size::default()
        });
    };
    let get = |key: &str| members.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let ty = match get("type") {
        Some(Json::Str(t)) => t.as_str(),
        None if get("entries").is_some() => "Module",
        _ => "",
    };
    let mut size = Size {
        values: 1,
        modules: 1,
        ..Size::default()
    };
    // Members holding submodules, counted below; everything else is counted plainly.
    let mut followed: &[&str] = &[];
    let child = |key: &str, value: &Json, trail: &mut Vec<String>| -> Result<Size> {
        trail.push(key.to_string());
        let inner = expansion(value, trail);
        trail.pop();
        Ok(inner?.placed(1, key.len() as u128))
    };
    let children = |trail: &mut Vec<String>| -> Result<Size> {
        let mut total = Size::default();
        if let Some(Json::Object(kids)) = get("children") {
            total.values = 1;
            for (name, kid) in kids {
                total = total.plus(child(name, kid, trail)?);
            }
        }
        Ok(total)
    };
    match ty {
        "Module" => {
            for key in ["params", "buffers"] {
                if let Some(Json::Object(entries)) = get(key) {
                    let names = entries.iter().map(|(name, _)| name.len() as u128).sum();
                    size = size.plus(Size::entries(entries.len() as u128, names));
                }
            }
            if let Some(Json::Array(entries)) = get("entries") {
                let names = entries
                    .iter()
                    .map(|entry| match entry {
                        Json::Object(m) => {
                            m.iter()
                                .find(|(k, _)| k == "name")
                                .map_or(0, |(_, v)| match v {
                                    Json::Str(name) => name.len() as u128,
                                    _ => 0,
                                })
                        }
                        _ => 0,
                    })
                    .sum();
                size = size.plus(Size::entries(entries.len() as u128, names));
            }
            followed = &["children"];
            size = size.plus(children(trail)?);
        }
        "ModuleList" | "Sequential" => {
            if let Some(items) = get("items") {
                followed = &["items"];
                if let Json::Array(items) = items {
                    size.values += 1;
                    for (i, item) in items.iter().enumerate() {
                        size = size.plus(child(&i.to_string(), item, trail)?);
                    }
                }
            } else if get("repeat").is_some() || get("item").is_some() {
                followed = &["item"];
                let count = match get("repeat") {
                    Some(Json::Int(n)) if *n > 0 => *n as u128,
                    _ => 0,
                };
                if let (Some(item), true) = (get("item"), count > 0) {
                    trail.push("0".to_string());
                    let one = expansion(item, trail);
                    trail.pop();
                    size = size.plus(one?.placed(count, digits_below(count)));
                }
            } else {
                followed = &["children"];
                size = size.plus(children(trail)?);
            }
        }
        "ModuleDict" => {
            followed = &["children"];
            size = size.plus(children(trail)?);
        }
        layer => size = size.plus(layer_entries(layer)),
    }
    for (key, value) in members {
        if !followed.contains(&key.as_str()) {
            size.values = size.values.saturating_add(json_values(value));
        }
    }
    check_expansion(&size, trail)?;
    Ok(size)
}

/// (modules, entries, bytes of names) that `text` is counted to expand to.
#[cfg(test)]
pub(super) fn counted(text: &str) -> Result<(u128, u128, u128)> {
    let size = expansion(&parse_json(text)?, &mut Vec::new())?;
    Ok((size.modules, size.entries, size.name_bytes))
}

fn check_expansion(size: &Size, trail: &[String]) -> Result<()> {
    let over = [
        (size.modules, MAX_SPEC_NODES, "modules"),
        (size.entries, MAX_SPEC_ENTRIES, "entries"),
        (size.name_bytes, MAX_SPEC_NAME_BYTES, "bytes of names"),
        (size.values, MAX_SPEC_VALUES, "JSON values"),
    ]
    .into_iter()
    .find(|&(count, limit, _)| count > limit as u128);
    let Some((_, limit, what)) = over else {
        return Ok(());
    };
    Err(Error::limit(format!(
        "module spec: node '{}': expands to more than {limit} {what}{}",
        shown(&trail.join(".")),
        if size.repeats {
            " (check 'repeat': it multiplies its item)"
        } else {
            ""
        }
    )))
}

struct Builder {
    module: Module,
}

impl Builder {
    fn add(
        &mut self,
        node: &Node<'_>,
        name: &str,
        dtype: DType,
        shape: &[i64],
        kind: EntryKind,
    ) -> Result<()> {
        self.module
            .add_owned(join(node.path, name), dtype, shape, kind)
            .map_err(|e| node.err(e.message))
    }

    fn param(&mut self, node: &Node<'_>, name: &str, dtype: DType, shape: &[i64]) -> Result<()> {
        self.add(node, name, dtype, shape, EntryKind::Parameter)
    }

    fn buffer(&mut self, node: &Node<'_>, name: &str, dtype: DType, shape: &[i64]) -> Result<()> {
        self.add(
            node,
            name,
            dtype,
            shape,
            EntryKind::Buffer { persistent: true },
        )
    }

    fn node(&mut self, json: &Json, path: &str, inherited: DType) -> Result<()> {
        let node = Node::new(json, path, "node")?;
        let dtype = node.dtype(inherited)?;
        let ty = match node.get("type") {
            Some(Json::Str(t)) => t.as_str(),
            Some(other) => {
                return Err(node.err(format!("'type' must be a string, not {}", other.kind())))
            }
            None if node.get("entries").is_some() => "Module",
            None => return Err(node.err("missing 'type' (or 'entries' for the flat form)")),
        };
        if !path.is_empty() {
            self.module
                .declare_submodule(path)
                .map_err(|e| node.err(e.message))?;
        }
        let n = &node;
        match ty {
            "Module" => self.custom(n, dtype)?,
            "ModuleList" | "Sequential" => {
                if let Some(items) = n.get("items") {
                    let Json::Array(items) = items else {
                        return Err(
                            n.err(format!("'items' must be an array, not {}", items.kind()))
                        );
                    };
                    let mut item_path = String::new();
                    for (i, item) in items.iter().enumerate() {
                        join_index(&mut item_path, path, i);
                        self.node(item, &item_path, dtype)?;
                    }
                } else if n.get("repeat").is_some() || n.get("item").is_some() {
                    let count = n.size("repeat")?;
                    let item = n.required("item")?;
                    let mut item_path = String::new();
                    for i in 0..count {
                        join_index(&mut item_path, path, i as usize);
                        self.node(item, &item_path, dtype)?;
                    }
                } else if n.get("children").is_some() {
                    self.children(n, dtype)?;
                } else {
                    return Err(n.err("missing argument 'items' (or 'repeat' and 'item')"));
                }
            }
            "ModuleDict" => self.children(n, dtype)?,
            "Linear" => {
                let (i, o) = (n.size("in_features")?, n.size("out_features")?);
                self.param(n, "weight", dtype, &[o, i])?;
                if n.flag("bias", true)? {
                    self.param(n, "bias", dtype, &[o])?;
                }
            }
            "Conv1d" | "Conv2d" | "Conv3d" | "ConvTranspose1d" | "ConvTranspose2d"
            | "ConvTranspose3d" => {
                let dims = (ty.as_bytes()[ty.len() - 2] - b'0') as usize;
                let transposed = ty.starts_with("ConvTranspose");
                let (i, o) = (n.size("in_channels")?, n.size("out_channels")?);
                let k = n.int_or_list("kernel_size", dims)?;
                let groups = n.size_or("groups", 1)?;
                if groups == 0 {
                    return Err(n.err("'groups' must be a positive integer"));
                }
                if i % groups != 0 {
                    return Err(n.err("in_channels must be divisible by groups"));
                }
                if o % groups != 0 {
                    return Err(n.err("out_channels must be divisible by groups"));
                }
                let mut shape = if transposed {
                    vec![i, o / groups]
                } else {
                    vec![o, i / groups]
                };
                shape.extend_from_slice(&k);
                self.param(n, "weight", dtype, &shape)?;
                if n.flag("bias", true)? {
                    self.param(n, "bias", dtype, &[o])?;
                }
            }
            "Embedding" => {
                let (num, dim) = (n.size("num_embeddings")?, n.size("embedding_dim")?);
                self.param(n, "weight", dtype, &[num, dim])?;
            }
            "LayerNorm" => {
                let shape = n.int_or_list("normalized_shape", 0)?;
                if n.flag("elementwise_affine", true)? {
                    self.param(n, "weight", dtype, &shape)?;
                    if n.flag("bias", true)? {
                        self.param(n, "bias", dtype, &shape)?;
                    }
                }
            }
            "RMSNorm" => {
                let shape = n.int_or_list("normalized_shape", 0)?;
                if n.flag("elementwise_affine", true)? {
                    self.param(n, "weight", dtype, &shape)?;
                }
            }
            "GroupNorm" => {
                let (groups, c) = (n.size("num_groups")?, n.size("num_channels")?);
                if groups == 0 || c % groups != 0 {
                    return Err(n.err("num_channels must be divisible by num_groups"));
                }
                if n.flag("affine", true)? {
                    self.param(n, "weight", dtype, &[c])?;
                    self.param(n, "bias", dtype, &[c])?;
                }
            }
            "BatchNorm1d" | "BatchNorm2d" | "BatchNorm3d" => {
                let c = n.size("num_features")?;
                if n.flag("affine", true)? {
                    self.param(n, "weight", dtype, &[c])?;
                    self.param(n, "bias", dtype, &[c])?;
                }
                if n.flag("track_running_stats", true)? {
                    self.buffer(n, "running_mean", dtype, &[c])?;
                    self.buffer(n, "running_var", dtype, &[c])?;
                    self.buffer(n, "num_batches_tracked", DType::Int64, &[])?;
                }
            }
            "MultiheadAttention" => {
                let e = n.size("embed_dim")?;
                let heads = n.size("num_heads")?;
                if heads == 0 || e % heads != 0 {
                    return Err(n.err("embed_dim must be divisible by num_heads"));
                }
                let kdim = n.size_or("kdim", e)?;
                let vdim = n.size_or("vdim", e)?;
                let bias = n.flag("bias", true)?;
                if kdim == e && vdim == e {
                    self.param(n, "in_proj_weight", dtype, &[3 * e, e])?;
                } else {
                    self.param(n, "q_proj_weight", dtype, &[e, e])?;
                    self.param(n, "k_proj_weight", dtype, &[e, kdim])?;
                    self.param(n, "v_proj_weight", dtype, &[e, vdim])?;
                }
                if bias {
                    self.param(n, "in_proj_bias", dtype, &[3 * e])?;
                }
                if n.flag("add_bias_kv", false)? {
                    self.param(n, "bias_k", dtype, &[1, 1, e])?;
                    self.param(n, "bias_v", dtype, &[1, 1, e])?;
                }
                self.param(n, "out_proj.weight", dtype, &[e, e])?;
                if bias {
                    self.param(n, "out_proj.bias", dtype, &[e])?;
                }
            }
            "PReLU" => {
                let count = n.size_or("num_parameters", 1)?;
                self.param(n, "weight", dtype, &[count])?;
            }
            // Nothing to declare: the layer is a submodule, as in torch, whatever its arguments.
            stateless if layers::is_stateless(stateless) => {}
            other => return Err(n.err(layers::unknown_type_message(other))),
        }
        Ok(())
    }

    /// `params`, `buffers`, flat `entries`, then `children` — torch's state-dict order.
    fn custom(&mut self, n: &Node<'_>, dtype: DType) -> Result<()> {
        for (key, kind) in [
            ("params", EntryKind::Parameter),
            ("buffers", EntryKind::Buffer { persistent: true }),
        ] {
            let Some(members) = n.object(key)? else {
                continue;
            };
            for (name, json) in members {
                let path = join(n.path, name);
                let what = if key == "params" {
                    "parameter"
                } else {
                    "buffer"
                };
                let entry = Node::new(json, &path, what)?;
                check_segment(n, name)?;
                let shape = entry.sizes_value("shape", entry.required("shape")?)?;
                let entry_dtype = entry.dtype(dtype)?;
                let kind = match kind {
                    EntryKind::Buffer { .. } => EntryKind::Buffer {
                        persistent: entry.flag("persistent", true)?,
                    },
                    k => k,
                };
                self.add(n, name, entry_dtype, &shape, kind)?;
            }
        }
        if let Some(entries) = n.get("entries") {
            let Json::Array(items) = entries else {
                return Err(n.err(format!(
                    "'entries' must be an array, not {}",
                    entries.kind()
                )));
            };
            for (i, item) in items.iter().enumerate() {
                let at = format!(
                    "{}entries[{i}]",
                    if n.path.is_empty() {
                        String::new()
                    } else {
                        format!("{}.", n.path)
                    }
                );
                let entry = Node::new(item, &at, "entry")?;
                let name = match entry.required("name")? {
                    Json::Str(s) => s.as_str(),
                    other => {
                        return Err(
                            entry.err(format!("'name' must be a string, not {}", other.kind()))
                        )
                    }
                };
                let shape = entry.sizes_value("shape", entry.required("shape")?)?;
                let entry_dtype = entry.dtype(dtype)?;
                let kind = match entry.string("kind")? {
                    None | Some("parameter") => EntryKind::Parameter,
                    Some("buffer") => EntryKind::Buffer {
                        persistent: entry.flag("persistent", true)?,
                    },
                    Some(other) => {
                        return Err(entry.err(format!(
                            "'kind' must be \"parameter\" or \"buffer\", not '{other}'"
                        )))
                    }
                };
                self.module
                    .add_owned(join(n.path, name), entry_dtype, &shape, kind)
                    .map_err(|e| entry.err(e.message))?;
            }
        }
        if n.get("children").is_some() {
            self.children(n, dtype)?;
        }
        Ok(())
    }

    fn children(&mut self, n: &Node<'_>, dtype: DType) -> Result<()> {
        let members = n
            .object("children")?
            .ok_or_else(|| n.err("missing argument 'children'"))?;
        for (name, child) in members {
            check_segment(n, name)?;
            self.node(child, &join(n.path, name), dtype)?;
        }
        Ok(())
    }
}

fn check_segment(n: &Node<'_>, name: &str) -> Result<()> {
    if name.is_empty() || name.contains('.') {
        return Err(n.err(format!(
            "'{name}' is not a valid attribute name (empty or containing '.')"
        )));
    }
    Ok(())
}
