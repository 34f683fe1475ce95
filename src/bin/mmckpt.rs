//! `mmckpt`: inspect and load PyTorch checkpoints from the command line, built on the same
//! safe core as the C ABI.

use mmckpt::checkpoint::{Checkpoint, OpenOptions, TensorRef};
use mmckpt::container::source::read_regular_file;
use mmckpt::container::OpenMode;
use mmckpt::module::{LoadOptions, Module};
use mmckpt::values::{self, ValueKind, ValueLimits, ValueRef};
use mmckpt::{DType, Error, ErrorKind};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
usage:
  mmckpt ls FILE [--root PATH] [--json] [--hash] [--strict] [--read]
      list the tensor table (--hash adds the SHA-256 of each tensor's row-major bytes;
       --json also lists every non-tensor value, under \"values\")
  mmckpt load FILE [--spec SPEC.json] [--copy] [--dtype DTYPE] [--prefix P] [--non-strict]
                   [--root PATH] [--read] [--quiet]
      build a meta module (from SPEC, else from the checkpoint's own table) and load the
      checkpoint into it: assign (zero-copy views, the default) or --copy into owned memory;
      --dtype converts floating entries (e.g. bfloat16) while loading
  mmckpt help";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ls") => ls(&args[1..]),
        Some("load") => load(&args[1..]),
        Some("help") | Some("--help") | Some("-h") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(usage(format!("unknown command '{other}'"))),
        None => Err(usage("no command given".into())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mmckpt: {}: {}", e.kind.status_name(), e.message);
            if e.kind == ErrorKind::InvalidArgument {
                eprintln!("{USAGE}");
            }
            ExitCode::from(if e.kind == ErrorKind::InvalidArgument {
                2
            } else {
                1
            })
        }
    }
}

fn usage(message: String) -> Error {
    Error::invalid_argument(message)
}

/// Command-line flags: `--name value` options and `--name` switches, one positional FILE.
struct Args {
    file: Option<String>,
    options: Vec<(String, Option<String>)>,
}

impl Args {
    fn parse(args: &[String], with_value: &[&str], switches: &[&str]) -> Result<Args, Error> {
        let mut parsed = Args {
            file: None,
            options: Vec::new(),
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            if let Some(name) = arg.strip_prefix("--") {
                if with_value.contains(&name) {
                    let value = iter
                        .next()
                        .ok_or_else(|| usage(format!("--{name} needs a value")))?;
                    parsed.options.push((name.to_string(), Some(value.clone())));
                } else if switches.contains(&name) {
                    parsed.options.push((name.to_string(), None));
                } else {
                    return Err(usage(format!("unknown option '{arg}'")));
                }
            } else if parsed.file.is_none() {
                parsed.file = Some(arg.clone());
            } else {
                return Err(usage(format!("unexpected argument '{arg}'")));
            }
        }
        Ok(parsed)
    }
    fn file(&self) -> Result<&str, Error> {
        self.file
            .as_deref()
            .ok_or_else(|| usage("no FILE given".into()))
    }
    fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(n, _)| n == name)
    }
    fn value(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
    }
    fn open_options(&self) -> OpenOptions {
        OpenOptions {
            mode: if self.flag("read") {
                OpenMode::Read
            } else {
                OpenMode::Map
            },
            strict: self.flag("strict"),
            root: self.value("root").map(str::to_owned),
            ..OpenOptions::default()
        }
    }
}

fn ls(args: &[String]) -> Result<(), Error> {
    let args = Args::parse(args, &["root"], &["json", "hash", "strict", "read"])?;
    let ckpt = Checkpoint::open(args.file()?, &args.open_options())?;
    let hash = args.flag("hash");
    if args.flag("json") {
        let tensors: Vec<Value> = ckpt
            .iter()
            .map(|(name, tensor)| match tensor {
                Ok(t) => tensor_json(&t, hash),
                Err(e) => json!({"name": name, "error": {"status": e.kind.status_name(), "message": e.message}}),
            })
            .collect();
        let leaves = values::leaves(ckpt.arena(), ckpt.root(), &ValueLimits::default());
        let values: Vec<Value> = leaves.values.iter().map(value_json).collect();
        let mut doc = json!({"format": ckpt.format().name(), "tensors": tensors, "values": values});
        if leaves.truncated {
            doc["values_truncated"] = json!(true);
        }
        println!(
            "{}",
            serde_json::to_string_pretty(&doc).expect("JSON of plain values")
        );
        return Ok(());
    }
    print_table(&ckpt, hash);
    Ok(())
}

fn tensor_json(t: &TensorRef<'_>, hash: bool) -> Value {
    let d = t.desc;
    let mut v = json!({
        "name": t.name(),
        "dtype": d.dtype.name(),
        "shape": &*d.shape,
        "stride": &*d.strides,
        "storage_offset": d.storage_offset,
        "numel": d.numel,
        "nbytes": d.span_bytes(),
        "file_offset": if t.storage.is_mapped() { t.file_offset() } else { None },
        "storage_id": t.storage.id,
        "mapped": t.storage.is_mapped(),
        "parameter": d.is_parameter,
        "requires_grad": d.requires_grad,
    });
    if d.conj {
        v["conj"] = json!(true);
    }
    if d.neg {
        v["neg"] = json!(true);
    }
    if hash {
        match tensor_sha256(t) {
            Ok(h) => v["sha256"] = json!(h),
            Err(e) => v["sha256_error"] = json!(e),
        }
    }
    v
}

/// Largest strided tensor `--hash` copies to hash: a view (a stride-0 `expand`, say) may
/// declare far more elements than its file holds, and its contiguous copy is what the hash is
/// of. Contiguous tensors are hashed in place whatever their size.
const MAX_HASH_COPY: u64 = 256 << 20;

/// The SHA-256 of the tensor's elements in row-major order, or why it is not computed.
fn tensor_sha256(t: &TensorRef<'_>) -> Result<String, String> {
    let d = t.desc;
    let bytes = d.numel.saturating_mul(d.dtype.itemsize() as u64);
    if !d.is_contiguous() && bytes > MAX_HASH_COPY {
        return Err(format!(
            "MMCKPT_ERR_LIMIT: not hashed: a strided view of {bytes} bytes (more than \
             {MAX_HASH_COPY} to copy)"
        ));
    }
    Ok(sha256_hex(&t.contiguous_bytes()))
}

/// A JSON number, or for NaN and the infinities the strings "nan", "inf", "-inf".
fn float_json(f: f64) -> Value {
    if f.is_finite() {
        json!(f)
    } else if f.is_nan() {
        json!("nan")
    } else if f > 0.0 {
        json!("inf")
    } else {
        json!("-inf")
    }
}

/// `{"name", "kind", "value"}` of a non-tensor leaf. Kinds: none, bool, int (a JSON number
/// within i64, else a decimal string), float, complex (`[real, imag]`), str, bytes (hex),
/// global (the dotted name), other (null).
fn value_json(v: &ValueRef<'_>) -> Value {
    let (kind, value) = match v.kind() {
        ValueKind::None => ("none", Value::Null),
        ValueKind::Bool => ("bool", json!(v.as_bool().unwrap_or(false))),
        ValueKind::Int => ("int", json!(v.as_i64().unwrap_or(0))),
        ValueKind::BigInt => match v.decimal() {
            Ok(text) => ("int", json!(text)),
            Err(e) => {
                return json!({"name": v.path(), "kind": "int", "value": null,
                              "error": {"status": e.kind.status_name(), "message": e.message}})
            }
        },
        ValueKind::Float => ("float", float_json(v.as_f64().unwrap_or(f64::NAN))),
        ValueKind::Complex => {
            let (re, im) = v.as_complex().unwrap_or((f64::NAN, f64::NAN));
            ("complex", json!([float_json(re), float_json(im)]))
        }
        ValueKind::Str => ("str", json!(v.as_str().unwrap_or(""))),
        ValueKind::Bytes => ("bytes", json!(hex(v.as_bytes().unwrap_or(&[])))),
        ValueKind::Global => ("global", json!(v.class_name().unwrap_or_default())),
        other => (other.name(), Value::Null),
    };
    json!({"name": v.path(), "kind": kind, "value": value})
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn print_table(ckpt: &Checkpoint, hash: bool) {
    let mut rows = vec![vec![
        "name".to_string(),
        "dtype".into(),
        "shape".into(),
        "stride".into(),
        "offset".into(),
        "bytes".into(),
        "file offset".into(),
        "storage".into(),
    ]];
    if hash {
        rows[0].push("sha256".into());
    }
    for (name, tensor) in ckpt.iter() {
        let row = match tensor {
            Ok(t) => {
                let d = t.desc;
                let mut row = vec![
                    name.to_string(),
                    d.dtype.name().to_string(),
                    format!("{:?}", d.shape),
                    format!("{:?}", d.strides),
                    d.storage_offset.to_string(),
                    d.span_bytes().to_string(),
                    match (t.storage.is_mapped(), t.file_offset()) {
                        (true, Some(o)) => o.to_string(),
                        _ => "-".into(),
                    },
                    t.storage.key.to_string(),
                ];
                if hash {
                    row.push(tensor_sha256(&t).unwrap_or_else(|e| e));
                }
                row
            }
            Err(e) => vec![
                name.to_string(),
                format!("<{}: {}>", e.kind.status_name(), e.message),
            ],
        };
        rows.push(row);
    }
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c + 1 == row.len() {
                    s.clone()
                } else {
                    format!("{s:<w$}", w = widths[c])
                }
            })
            .collect();
        println!("{}", cells.join("  "));
    }
    println!(
        "{} tensors, {} storages, format {}",
        ckpt.len(),
        ckpt.storages().len(),
        ckpt.format().name()
    );
}

fn load(args: &[String]) -> Result<(), Error> {
    let args = Args::parse(
        args,
        &["spec", "dtype", "prefix", "root"],
        &["copy", "non-strict", "read", "quiet"],
    )?;
    let file = args.file()?;
    let dtype = match args.value("dtype") {
        Some(name) => Some(DType::from_name(name).ok_or_else(|| {
            usage(format!(
                "--dtype {name}: not a torch dtype name (e.g. bfloat16)"
            ))
        })?),
        None => None,
    };
    let spec = match args.value("spec") {
        Some(path) => Some(
            String::from_utf8(read_regular_file(std::path::Path::new(path))?)
                .map_err(|e| Error::io(format!("cannot read spec '{path}': {e}")))?,
        ),
        None => None,
    };
    let copy = args.flag("copy");

    let started = Instant::now();
    let ckpt = Checkpoint::open(file, &args.open_options())?;
    let opened = Instant::now();
    let mut module = match &spec {
        Some(json) => Module::from_spec(json)?,
        None => Module::from_checkpoint_under(&ckpt, args.value("prefix").unwrap_or(""))?,
    };
    if let Some(dtype) = dtype {
        module.set_floating_dtype(dtype)?;
    }
    if copy {
        module.materialize()?;
    }
    let built = Instant::now();
    let options = LoadOptions {
        assign: !copy,
        strict: !args.flag("non-strict"),
        convert: !copy && dtype.is_some(),
        prefix: args.value("prefix").unwrap_or("").to_string(),
    };
    let report = module.load(&ckpt, &options)?;
    let loaded = Instant::now();

    let mode = match (copy, options.convert) {
        (true, _) => "copy",
        (false, true) => "assign+convert",
        (false, false) => "assign",
    };
    println!(
        "{} -> {} ({} entries, {mode} load, {} checkpoint)",
        file,
        module.name(),
        module.len(),
        ckpt.format().name()
    );
    let (mut zero_copy_bytes, mut copied_bytes) = (0usize, 0usize);
    let mut rows = Vec::new();
    for entry in module.entries() {
        let zero_copy = entry.is_mapped();
        if entry.has_data() {
            if zero_copy {
                zero_copy_bytes += entry.nbytes();
            } else {
                copied_bytes += entry.nbytes();
            }
        }
        rows.push([
            entry.name().to_string(),
            entry.dtype().name().to_string(),
            format!("{:?}", entry.shape()),
            if !entry.has_data() {
                "no data".to_string()
            } else if zero_copy {
                match entry.file_offset() {
                    Some(offset) => format!("zero-copy @ file offset {offset}"),
                    None => "zero-copy".to_string(),
                }
            } else {
                "copied".to_string()
            },
        ]);
    }
    if !args.flag("quiet") {
        let widths: Vec<usize> = (0..3)
            .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            println!(
                "  {:<w0$}  {:<w1$}  {:<w2$}  {}",
                r[0],
                r[1],
                r[2],
                r[3],
                w0 = widths[0],
                w1 = widths[1],
                w2 = widths[2]
            );
        }
    }
    println!("{}", report.message());
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    println!(
        "open {:.3} ms, build {:.3} ms, load {:.3} ms; {} bytes zero-copy, {} bytes copied",
        ms(started, opened),
        ms(opened, built),
        ms(built, loaded),
        zero_copy_bytes,
        copied_bytes
    );
    Ok(())
}
