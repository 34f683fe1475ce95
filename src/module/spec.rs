//! JSON module specs (module-spec.md): the layer form (containers and torch.nn layers with
//! torch's constructor arguments and defaults) and the flat form (a state dict's keys and
//! shapes), which may be mixed. Errors are InvalidArgument and name the node's path.
//!
//! The JSON is read into an order-preserving tree (object members keep document order, which is
//! torch's registration order; duplicate members are reported, not silently merged). Members a
//! node does not use (torch arguments that do not change the entries, like `stride` or `eps`)
//! are ignored.

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
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
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

fn duplicate(members: &[(String, Json)]) -> Option<&str> {
    members
        .iter()
        .enumerate()
        .find(|(i, (k, _))| members[..*i].iter().any(|(o, _)| o == k))
        .map(|(_, (k, _))| k.as_str())
}

pub(super) fn parse(text: &str) -> Result<Module> {
    let json = parse_json(text)?;
    let root = Node::new(&json, "", "node")?;
    let name = root.string("name")?.unwrap_or("Module");
    let mut builder = Builder {
        module: Module::new(name),
        nodes: 0,
    };
    builder.node(&json, "", DType::Float32)?;
    Ok(builder.module)
}

/// Most spec nodes one build expands (`repeat` multiplies its item): the largest real models
/// have fewer than 100,000 entries, so this leaves a wide margin while a spec such as
/// `"repeat": 2222222222222` fails at once instead of running for hours.
pub const MAX_SPEC_NODES: usize = 1 << 20;

/// How many nodes a spec node expands to (`repeat` multiplies its item), saturating. Recursion
/// is bounded by the JSON reader's nesting limit.
fn expanded_nodes(json: &Json) -> u128 {
    let Json::Object(members) = json else {
        return 0;
    };
    let get = |key: &str| members.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let mut total: u128 = 1;
    for (key, value) in members {
        total = total.saturating_add(match (key.as_str(), value) {
            ("children", Json::Object(children)) => children
                .iter()
                .fold(0u128, |acc, (_, c)| acc.saturating_add(expanded_nodes(c))),
            ("items", Json::Array(items)) => items
                .iter()
                .fold(0u128, |acc, c| acc.saturating_add(expanded_nodes(c))),
            ("item", item) => {
                let count = match get("repeat") {
                    Some(Json::Int(n)) if *n > 0 => *n as u128,
                    _ => 1,
                };
                count.saturating_mul(expanded_nodes(item))
            }
            _ => 0,
        });
    }
    total
}

struct Builder {
    module: Module,
    /// Nodes expanded so far, bounded by MAX_SPEC_NODES.
    nodes: usize,
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
        let full = join(node.path, name);
        self.module
            .add(&full, dtype, shape, kind)
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
        self.nodes += 1;
        if self.nodes > MAX_SPEC_NODES {
            return Err(Error::limit(format!(
                "module spec: node '{path}': the spec expands to more than {MAX_SPEC_NODES} \
                 modules (check 'repeat')"
            )));
        }
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
                    for (i, item) in items.iter().enumerate() {
                        self.node(item, &join(path, &i.to_string()), dtype)?;
                    }
                } else if n.get("repeat").is_some() || n.get("item").is_some() {
                    let count = n.size("repeat")?;
                    let item = n.required("item")?;
                    let expands_to = (count as u128).saturating_mul(expanded_nodes(item));
                    if expands_to > (MAX_SPEC_NODES - self.nodes) as u128 {
                        return Err(Error::limit(format!(
                            "module spec: node '{path}': 'repeat' {count} expands to more than \
                             {MAX_SPEC_NODES} modules"
                        )));
                    }
                    for i in 0..count {
                        self.node(item, &join(path, &i.to_string()), dtype)?;
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
            other => return Err(n.err(format!("unknown type '{other}'"))),
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
                    .add(&join(n.path, name), entry_dtype, &shape, kind)
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
