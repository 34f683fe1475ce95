//! `mmckpt`, the command line: inspect and load PyTorch checkpoints, built on mmckpt's public
//! Rust API only. The binary (`src/main.rs`) calls [`run`]; the tests and the `cli` fuzz target
//! call the same functions.
//!
//! Output is written as it is produced (one tensor or value at a time), never built whole in
//! memory, so its size is bounded by the checkpoint's own bounds (the table's, and
//! [`ValueLimits`]'s name budget for the values `ls --json` lists) and its memory by a constant.
#![warn(missing_docs)]

use mmckpt::{
    save_with_progress, Checkpoint, DType, Error, ErrorKind, LoadOptions, LoadReport, Module,
    OpenMode, OpenOptions, SaveFormat, SaveOptions, SplitRule, Tensor, TensorParallel, ValueKind,
    ValueLimits, ValueRef,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `ls`'s synopsis (in [`USAGE`] and `mmckpt help ls`).
macro_rules! ls_synopsis {
    () => {
        "  mmckpt ls FILE [--root PATH] [--json] [--hash] [--max-hash-bytes N] [--strict] [--read]"
    };
}

/// `load`'s synopsis (in [`USAGE`] and `mmckpt help load`).
macro_rules! load_synopsis {
    () => {
        "  mmckpt load FILE [--spec SPEC] [--copy [--direct]] [--contiguous] [--dtype DTYPE]
                   [--prefix P] [--non-strict] [--root PATH] [--read] [--quiet]
                   [--tp RANK/WORLD [--split PATTERN=DIM]...]"
    };
}

/// `convert`'s synopsis (in [`USAGE`] and `mmckpt help convert`).
macro_rules! convert_synopsis {
    () => {
        "  mmckpt convert IN OUT [--format safetensors|torch] [--dtype DTYPE] [--contiguous]
                     [--root PATH] [--strict] [--read] [--quiet]"
    };
}

/// `index`'s synopsis (in [`USAGE`] and `mmckpt help index`).
macro_rules! index_synopsis {
    () => {
        "  mmckpt index FILE [--root PATH] [--json] [--strict]"
    };
}

/// `verify`'s synopsis (in [`USAGE`] and `mmckpt help verify`).
macro_rules! verify_synopsis {
    () => {
        "  mmckpt verify FILE [--root PATH]"
    };
}

/// What a usage error in a command's arguments prints after the message: its synopsis and
/// where the options are explained.
macro_rules! usage_error_text {
    ($synopsis:ident, $command:literal) => {
        concat!(
            "usage:\n",
            $synopsis!(),
            "\n(mmckpt help ",
            $command,
            ": what each option does)"
        )
    };
}

/// What `mmckpt --help` and `mmckpt help` print; the README's `## Command line` shows it
/// verbatim (a test compares them).
pub const USAGE: &str = concat!(
    "usage:\n",
    ls_synopsis!(),
    "
      list FILE's tensor table (--json: every tensor and every non-tensor value, as JSON)\n",
    load_synopsis!(),
    "
      build a meta module (from SPEC, else from FILE's own table) and load FILE into it\n",
    convert_synopsis!(),
    "
      write IN's tensor table to OUT as a torch.save archive or a safetensors file\n",
    index_synopsis!(),
    "
      where each tensor's bytes are in its file (offset, length, exact or not), for range readers\n",
    verify_synopsis!(),
    "
      check the CRC-32 of every zip record the checkpoint uses (fails on the first mismatch)
  mmckpt help [COMMAND]
      this text, or what COMMAND's options do (also: mmckpt COMMAND --help)
  mmckpt --version
      the version

FILE and IN are a torch.save file (zip, legacy or pre-1.0 tar), a TorchScript archive, a
safetensors file, or a sharded checkpoint's index (.index.json); SPEC is a module spec (JSON)."
);

/// What `mmckpt help ls` and `mmckpt ls --help` print.
pub const LS_HELP: &str = concat!(
    "usage:\n",
    ls_synopsis!(),
    "

List FILE's tensors, one row each: name, dtype, shape, stride, storage offset, bytes spanned,
file offset (\"-\" when not mapped) and storage id (tensors that share storage share it; the
same number as --json's \"storage_id\"). A tensor mmckpt cannot represent has its error in
place of the columns.

options:
  --root PATH         list the tensors under the sub-object PATH (dotted, as names are)
  --json              print JSON: {\"format\", \"tensors\": [...], \"values\": [...]}
  --hash              add the SHA-256 of each tensor's row-major bytes
  --max-hash-bytes N  refuse --hash when the tensors hold more than N bytes in all
                      (default 256 GiB)
  --strict            refuse globals outside the allowlist
  --read              read the file into memory instead of mapping it
  -h, --help          this text"
);

/// What `mmckpt help load` and `mmckpt load --help` print.
pub const LOAD_HELP: &str = concat!(
    "usage:\n",
    load_synopsis!(),
    "

Build a meta module and load FILE into it, as torch's load_state_dict does, then print each
entry and where its data is, torch's report line, and how long open, build and load took.

options:
  --spec SPEC      build the module from the JSON module spec SPEC (docs/module-spec.md), else
                   from FILE's own table
  --copy           copy into memory the module owns (default: assign zero-copy views)
  --direct         with --copy: read the entries from the file straight into that memory,
                   bypassing the page cache (O_DIRECT), in parallel
  --contiguous     assign, but copy strided entries into row-major memory the module owns
  --dtype DTYPE    declare floating entries as DTYPE (e.g. bfloat16), converting on load
  --prefix P       load only the keys under P (stripped)
  --non-strict     missing and unexpected keys do not fail the load
  --root PATH      take the tensors under the sub-object PATH
  --read           read the file into memory instead of mapping it
  --quiet          print no entry rows
  --tp RANK/WORLD  load tensor-parallel rank RANK's share (0 <= RANK < WORLD): entries a
                   split rule matches get torch.chunk(t, WORLD, DIM)[RANK], the others are
                   loaded whole; without --spec the module is FILE's table with those shapes
  --split PATTERN=DIM
                   split the entries whose name matches PATTERN ('*' matches any run of
                   characters) along DIM; repeatable, the first matching rule wins
  -h, --help       this text"
);

/// What `mmckpt help convert` and `mmckpt convert --help` print.
pub const CONVERT_HELP: &str = concat!(
    "usage:\n",
    convert_synopsis!(),
    "

Write IN to OUT: a torch.save zip archive that torch.load(..., mmap=True, weights_only=True)
maps, holding the saved object as torch.load returns it (non-tensor values too) when torch's
weights-only unpickler can read all of it, else the tensor table as a state dict (and says why);
or a safetensors file as the safetensors project's convert.py writes it: the table's tensors
(of tensors that start at the same bytes, the first name is kept and the others are listed in
__metadata__), the non-tensor values dropped and listed.
Tensors are streamed one at a time; OUT is written under a temporary name in its folder,
synced, and renamed, so OUT is never left half written. A progress bar is shown on a terminal
for inputs over 256 MiB.

options:
  --format FORMAT  torch or safetensors (default: safetensors when OUT ends in .safetensors,
                   else torch)
  --dtype DTYPE    write floating tensors as DTYPE (float32, float16, bfloat16 or float64),
                   rounded as torch's .to() rounds
  --contiguous     torch format: every tensor its own row-major storage (tied weights still
                   share one); safetensors is always contiguous
  --root PATH      take the tensors under the sub-object PATH
  --strict         refuse globals outside the allowlist
  --read           read IN into memory instead of mapping it
  --quiet          print nothing on success, and no progress bar
  -h, --help       this text"
);

/// What a usage error in `convert`'s arguments prints after the message.
const CONVERT_USAGE: &str = usage_error_text!(convert_synopsis, "convert");

/// What `mmckpt help index` and `mmckpt index --help` print.
pub const INDEX_HELP: &str = concat!(
    "usage:\n",
    index_synopsis!(),
    "

Print the offset index of FILE, read from its metadata alone (no tensor byte is read): for
each tensor its file, the absolute byte range from element [0, ..., 0] to the end of its last
element, dtype, shape and stride, and whether the range is exactly the tensor (row-major,
little-endian, stored: reading it gives the elements, nothing to gather or swap). A range
reader (an HTTP range request, pread, a streaming loader) can then fetch tensors one by one.

options:
  --root PATH   index the tensors under the sub-object PATH
  --json        print JSON: {\"format\", \"tensors\": [{\"name\", \"file\", \"offset\",
                \"length\", \"dtype\", \"shape\", \"stride\", \"exact\", \"whole_storage\",
                \"byte_swap_unit\", \"storage_offset\", \"storage_length\",
                \"storage_id\"}...]}
  --strict      refuse globals outside the allowlist
  -h, --help    this text"
);

/// What `mmckpt help verify` and `mmckpt verify --help` print.
pub const VERIFY_HELP: &str = concat!(
    "usage:\n",
    verify_synopsis!(),
    "

Open FILE checking the CRC-32 of every zip record its tensors use (the pickle, byteorder and
each storage the table views; every byte of them is read once) and print what was checked.
torch never checks these, so a corrupted download loads silently; here the first mismatch is
an error (MMCKPT_ERR_FORMAT, exit status 1) naming the record and both checksums. Records
written without a CRC (torch.serialization.set_crc32_options(False)) are counted, not
checked; a legacy file records no checksums (MMCKPT_ERR_UNSUPPORTED).

options:
  --root PATH   check only the records the tensors under the sub-object PATH use
  -h, --help    this text"
);

/// What a usage error in `verify`'s arguments prints after the message.
const VERIFY_USAGE: &str = usage_error_text!(verify_synopsis, "verify");

/// What a usage error in `index`'s arguments prints after the message.
const INDEX_USAGE: &str = usage_error_text!(index_synopsis, "index");

/// What a usage error in `ls`'s arguments prints after the message.
const LS_USAGE: &str = usage_error_text!(ls_synopsis, "ls");

/// What a usage error in `load`'s arguments prints after the message.
const LOAD_USAGE: &str = usage_error_text!(load_synopsis, "load");

/// A command's name, the usage shown with an error in its arguments, and its help.
struct Command {
    name: &'static str,
    usage: &'static str,
    help: &'static str,
}

static COMMANDS: [Command; 5] = [
    Command {
        name: "ls",
        usage: LS_USAGE,
        help: LS_HELP,
    },
    Command {
        name: "load",
        usage: LOAD_USAGE,
        help: LOAD_HELP,
    },
    Command {
        name: "convert",
        usage: CONVERT_USAGE,
        help: CONVERT_HELP,
    },
    Command {
        name: "index",
        usage: INDEX_USAGE,
        help: INDEX_HELP,
    },
    Command {
        name: "verify",
        usage: VERIFY_USAGE,
        help: VERIFY_HELP,
    },
];

/// Default of `--max-hash-bytes`: the row-major bytes `ls --hash` hashes, over all tensors. A
/// stride-0 view of a few stored bytes may describe exabytes; hashing is bounded by what the
/// tensors describe, so it is bounded here (about two minutes of SHA-256 at 2 GB/s). Checked
/// before anything is written.
pub const DEFAULT_MAX_HASH_BYTES: u64 = 256 << 30;

/// Columns of the text tables are padded to their widest cell, but to at most this many
/// characters: a longer cell (a 100 KB name) sticks out rather than pad every row to its width.
pub const MAX_COLUMN_WIDTH: usize = 120;

/// Runs the command line `args` (without the program name), writing results to `out` and
/// errors to `err`. Returns the exit status: 0 on success, 1 on an error, 2 on a usage error
/// or another invalid argument (a bad spec).
pub fn run(
    args: impl IntoIterator<Item = OsString>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let (e, usage) = match dispatch(args, out) {
        Ok(()) => return 0,
        Err(Failure::Usage(e, usage)) => (e, Some(usage)),
        Err(Failure::Run(e)) => (e, None),
    };
    let _ = writeln!(err, "mmckpt: {}: {}", e.kind.status_name(), e.message);
    if let Some(usage) = usage {
        let _ = writeln!(err, "{usage}");
    }
    if e.kind == ErrorKind::InvalidArgument {
        2
    } else {
        1
    }
}

/// Why a command line failed: its arguments (the usage to show with the error), or the run.
enum Failure {
    Usage(Error, &'static str),
    Run(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Run(e)
    }
}

/// What a command's arguments ask for: running it, or its help.
enum Parsed<T> {
    Run(T),
    Help,
}

fn dispatch(args: impl IntoIterator<Item = OsString>, out: &mut dyn Write) -> Result<(), Failure> {
    let program = std::iter::once(OsString::from("mmckpt"));
    let mut parser = lexopt::Parser::from_iter(program.chain(args));
    let top = |e: Error| Failure::Usage(e, USAGE);
    let print = |out: &mut dyn Write, text: &str| -> Result<(), Failure> {
        Ok(writeln!(out, "{text}").map_err(output_error)?)
    };
    let command = match parser.next().map_err(|e| top(usage(e)))? {
        Some(lexopt::Arg::Value(command)) => command,
        Some(lexopt::Arg::Long("help")) | Some(lexopt::Arg::Short('h')) => {
            return print(out, USAGE)
        }
        Some(lexopt::Arg::Long("version")) | Some(lexopt::Arg::Short('V')) => {
            return print(out, &format!("mmckpt {}", env!("CARGO_PKG_VERSION")))
        }
        Some(other) => return Err(top(usage(other.unexpected()))),
        None => return Err(top(Error::invalid_argument("no command given"))),
    };
    let command = command.to_string_lossy();
    if command == "help" {
        return match parser.next().map_err(|e| top(usage(e)))? {
            None | Some(lexopt::Arg::Long("help")) | Some(lexopt::Arg::Short('h')) => {
                print(out, USAGE)
            }
            Some(lexopt::Arg::Value(name)) => match command_named(&name.to_string_lossy()) {
                Some(c) if parser.next().map_err(|e| top(usage(e)))?.is_none() => {
                    print(out, c.help)
                }
                Some(_) => Err(top(Error::invalid_argument("help takes one COMMAND"))),
                None => Err(top(unknown_command(&name.to_string_lossy()))),
            },
            Some(other) => Err(top(usage(other.unexpected()))),
        };
    }
    let c = command_named(&command).ok_or_else(|| top(unknown_command(&command)))?;
    let arguments = |e: Error| Failure::Usage(e, c.usage);
    match c.name {
        "ls" => match LsArgs::parse(parser).map_err(arguments)? {
            Parsed::Run(args) => Ok(ls(&args, out)?),
            Parsed::Help => print(out, c.help),
        },
        "convert" => match ConvertArgs::parse(parser).map_err(arguments)? {
            Parsed::Run(args) => Ok(convert(&args, out)?),
            Parsed::Help => print(out, c.help),
        },
        "index" => match IndexArgs::parse(parser).map_err(arguments)? {
            Parsed::Run(args) => Ok(index(&args, out)?),
            Parsed::Help => print(out, c.help),
        },
        "verify" => match IndexArgs::parse_verify(parser).map_err(arguments)? {
            Parsed::Run(args) => Ok(verify(&args, out)?),
            Parsed::Help => print(out, c.help),
        },
        _ => match LoadArgs::parse(parser).map_err(arguments)? {
            Parsed::Run(args) => Ok(load(&args, out)?),
            Parsed::Help => print(out, c.help),
        },
    }
}

fn command_named(name: &str) -> Option<&'static Command> {
    COMMANDS.iter().find(|c| c.name == name)
}

fn unknown_command(command: &str) -> Error {
    Error::invalid_argument(format!(
        "unknown command '{command}' (the commands: ls, load, convert, index, verify, help)"
    ))
}

fn usage(e: lexopt::Error) -> Error {
    Error::invalid_argument(e.to_string())
}

fn output_error(e: io::Error) -> Error {
    Error::io(format!("cannot write the output: {e}"))
}

/// The options both commands take to open the file.
#[derive(Default)]
struct Open {
    root: Option<String>,
    strict: bool,
    read: bool,
}

impl Open {
    fn options(&self) -> OpenOptions {
        OpenOptions {
            mode: if self.read {
                OpenMode::Read
            } else {
                OpenMode::Map
            },
            strict: self.strict,
            root: self.root.clone(),
            ..OpenOptions::default()
        }
    }
}

fn string(value: OsString) -> Result<String, Error> {
    value
        .into_string()
        .map_err(|v| Error::invalid_argument(format!("'{}' is not UTF-8", v.to_string_lossy())))
}

/// Takes the positional FILE (once).
fn take_file(file: &mut Option<PathBuf>, arg: lexopt::Arg) -> Result<(), Error> {
    match arg {
        lexopt::Arg::Value(value) if file.is_none() => {
            *file = Some(value.into());
            Ok(())
        }
        other => Err(usage(other.unexpected())),
    }
}

fn required(file: Option<PathBuf>) -> Result<PathBuf, Error> {
    file.ok_or_else(|| Error::invalid_argument("no FILE given"))
}

/// `ls`'s flags.
struct LsArgs {
    file: PathBuf,
    open: Open,
    view: LsView,
}

/// What `ls` prints, once the checkpoint is open.
#[derive(Clone, Copy, Debug)]
pub struct LsView {
    /// JSON (with the values) instead of a table.
    pub json: bool,
    /// The SHA-256 of each tensor's row-major bytes.
    pub hash: bool,
    /// Row-major bytes hashed at most, over all tensors.
    pub max_hash_bytes: u64,
}

impl LsArgs {
    fn parse(mut parser: lexopt::Parser) -> Result<Parsed<LsArgs>, Error> {
        let (mut file, mut open) = (None, Open::default());
        let mut view = LsView {
            json: false,
            hash: false,
            max_hash_bytes: DEFAULT_MAX_HASH_BYTES,
        };
        while let Some(arg) = parser.next().map_err(usage)? {
            match arg {
                lexopt::Arg::Long("help") | lexopt::Arg::Short('h') => return Ok(Parsed::Help),
                lexopt::Arg::Long("root") => {
                    open.root = Some(string(parser.value().map_err(usage)?)?)
                }
                lexopt::Arg::Long("strict") => open.strict = true,
                lexopt::Arg::Long("read") => open.read = true,
                lexopt::Arg::Long("json") => view.json = true,
                lexopt::Arg::Long("hash") => view.hash = true,
                lexopt::Arg::Long("max-hash-bytes") => {
                    let text = string(parser.value().map_err(usage)?)?;
                    view.max_hash_bytes = text.parse().map_err(|_| {
                        Error::invalid_argument(format!(
                            "--max-hash-bytes {text}: not a number of bytes"
                        ))
                    })?;
                }
                other => take_file(&mut file, other)?,
            }
        }
        Ok(Parsed::Run(LsArgs {
            file: required(file)?,
            open,
            view,
        }))
    }
}

fn ls(args: &LsArgs, out: &mut dyn Write) -> Result<(), Error> {
    let ckpt = open_checkpoint(&args.file, &args.open)?;
    let mut out = io::BufWriter::new(out);
    print_ls(&ckpt, args.view, &mut out)?;
    out.flush().map_err(output_error)
}

/// Opens FILE; a module spec given as FILE (JSON, as a shard index is) is told apart.
fn open_checkpoint(file: &Path, open: &Open) -> Result<Checkpoint, Error> {
    Checkpoint::open(file, &open.options()).map_err(|e| spec_given_as_file(file).unwrap_or(e))
}

/// Spec files looked at again when opening them as a checkpoint failed: at most this many
/// bytes (the library has read the whole file once already, as a shard index).
const MAX_MISPLACED_SPEC_BYTES: u64 = 64 << 20;

/// When FILE, which failed to open, is a JSON object with a `"type"` or `"entries"` member and
/// no `"weight_map"`: the error that says it is a module spec and how to use it.
fn spec_given_as_file(file: &Path) -> Option<Error> {
    let size = std::fs::metadata(file).ok()?.len();
    if size > MAX_MISPLACED_SPEC_BYTES {
        return None;
    }
    // Only a regular file is read (a FIFO would block): read_spec_file refuses others.
    let text = Module::read_spec_file(file).ok()?;
    let doc: Value = serde_json::from_str(&text).ok()?;
    let members = doc.as_object()?;
    let key = ["type", "entries"]
        .into_iter()
        .find(|key| members.contains_key(*key))?;
    if members.contains_key("weight_map") {
        return None;
    }
    let shown = file.display();
    Some(Error::invalid_argument(format!(
        "'{shown}' is a module spec (it has \"{key}\"), not a checkpoint or a shard index: \
         to load a checkpoint into the module it describes, run `mmckpt load CHECKPOINT --spec \
         {shown}`"
    )))
}

/// `ls`'s output for an open checkpoint: the table, or with `json` the JSON document. With
/// `hash`, fails with `Limit` before writing anything when the tensors' row-major bytes add up
/// to more than `max_hash_bytes`.
pub fn print_ls(ckpt: &Checkpoint, view: LsView, out: &mut dyn Write) -> Result<(), Error> {
    if view.hash {
        check_hash_budget(ckpt, view.max_hash_bytes)?;
    }
    if view.json {
        print_json(ckpt, view.hash, out)
    } else {
        print_table(ckpt, view.hash, out)
    }
}

fn check_hash_budget(ckpt: &Checkpoint, max: u64) -> Result<(), Error> {
    let mut total = 0u64;
    for (name, tensor) in ckpt.iter() {
        let Ok(t) = tensor else { continue };
        total = total.saturating_add(t.row_major_bytes());
        if total > max {
            return Err(Error::limit(format!(
                "--hash would hash more than {max} bytes (at tensor '{}', {} elements of {}); \
                 raise --max-hash-bytes to hash them",
                clip(name, 200),
                t.numel(),
                t.dtype()
            )));
        }
    }
    Ok(())
}

/// The first `max` bytes of `text` (at a char boundary), for messages about huge names.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// SHA-256 of the tensor's row-major bytes, streamed (no copy of the tensor).
fn sha256_hex(t: &Tensor<'_>) -> String {
    let mut hasher = Sha256::new();
    t.for_each_row_major_chunk(1 << 20, |piece| {
        hasher.update(piece);
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 15)] as char);
    }
    text
}

/// `index`'s flags.
struct IndexArgs {
    file: PathBuf,
    open: Open,
    json: bool,
}

impl IndexArgs {
    fn parse(mut parser: lexopt::Parser) -> Result<Parsed<IndexArgs>, Error> {
        let (mut file, mut open, mut json) = (None, Open::default(), false);
        while let Some(arg) = parser.next().map_err(usage)? {
            match arg {
                lexopt::Arg::Long("help") | lexopt::Arg::Short('h') => return Ok(Parsed::Help),
                lexopt::Arg::Long("root") => {
                    open.root = Some(string(parser.value().map_err(usage)?)?)
                }
                lexopt::Arg::Long("strict") => open.strict = true,
                lexopt::Arg::Long("json") => json = true,
                other => take_file(&mut file, other)?,
            }
        }
        Ok(Parsed::Run(IndexArgs {
            file: required(file)?,
            open,
            json,
        }))
    }
}

impl IndexArgs {
    /// `verify`'s flags: FILE and `--root`.
    fn parse_verify(mut parser: lexopt::Parser) -> Result<Parsed<IndexArgs>, Error> {
        let (mut file, mut open) = (None, Open::default());
        while let Some(arg) = parser.next().map_err(usage)? {
            match arg {
                lexopt::Arg::Long("help") | lexopt::Arg::Short('h') => return Ok(Parsed::Help),
                lexopt::Arg::Long("root") => {
                    open.root = Some(string(parser.value().map_err(usage)?)?)
                }
                other => take_file(&mut file, other)?,
            }
        }
        Ok(Parsed::Run(IndexArgs {
            file: required(file)?,
            open,
            json: false,
        }))
    }
}

fn verify(args: &IndexArgs, out: &mut dyn Write) -> Result<(), Error> {
    let options = OpenOptions {
        verify_crc: true,
        ..args.open.options()
    };
    let start = Instant::now();
    let ckpt = Checkpoint::open(&args.file, &options)
        .map_err(|e| spec_given_as_file(&args.file).unwrap_or(e))?;
    let seconds = start.elapsed().as_secs_f64();
    let report = ckpt.crc_report().unwrap_or_default();
    writeln!(
        out,
        "ok: {} records ({} bytes) match their CRC-32 in {seconds:.3} s ({:.2} GB/s){}",
        report.records_checked,
        report.bytes_checked,
        report.bytes_checked as f64 / seconds.max(1e-9) / 1e9,
        match report.records_without_crc {
            0 => String::new(),
            n => format!("; {n} records carry no CRC (not checked)"),
        }
    )
    .map_err(output_error)
}

fn index(args: &IndexArgs, out: &mut dyn Write) -> Result<(), Error> {
    let ckpt = open_checkpoint(&args.file, &args.open)?;
    let mut out = io::BufWriter::new(out);
    print_index(&ckpt, args.json, &mut out)?;
    out.flush().map_err(output_error)
}

/// Prints the offset index of `ckpt` (`mmckpt index`): a table, or JSON written one tensor at
/// a time.
pub fn print_index(ckpt: &Checkpoint, json: bool, out: &mut dyn Write) -> Result<(), Error> {
    if json {
        let format = json!(ckpt.format().name());
        write!(out, "{{\n  \"format\": {format},\n  \"tensors\": [").map_err(output_error)?;
        let mut first = true;
        for i in 0..ckpt.len() {
            write_entry(out, &range_json(ckpt, i), &mut first)?;
        }
        let close = if first { "" } else { "\n  " };
        return writeln!(out, "{close}]\n}}").map_err(output_error);
    }
    let header = [
        "name", "dtype", "shape", "stride", "offset", "length", "exact", "file",
    ];
    let rows = (0..ckpt.len()).map(|i| range_row(ckpt, i));
    let mut columns = Columns::new();
    columns.measure(&header);
    for row in rows.clone() {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        // A row's last cell is not padded: an error row measures its name only.
        columns.measure(&cells[..cells.len() - 1]);
    }
    columns.write(out, "", &header).map_err(output_error)?;
    for row in rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        columns.write(out, "", &cells).map_err(output_error)?;
    }
    Ok(())
}

fn range_json(ckpt: &Checkpoint, i: usize) -> Value {
    let name = ckpt.name_at(i).unwrap_or("");
    match ckpt.tensor_range(i) {
        Ok(r) => json!({
            "name": name,
            "file": r.path.map(|p| p.to_string_lossy()),
            "offset": r.offset,
            "length": r.length,
            "dtype": r.dtype.name(),
            "shape": r.shape,
            "stride": r.strides,
            "exact": r.exact,
            "whole_storage": r.whole_storage,
            "byte_swap_unit": r.byte_swap_unit,
            "storage_offset": r.storage_offset,
            "storage_length": r.storage_length,
            "storage_id": r.storage_id,
        }),
        Err(e) => json!({"name": name, "error": error_json(&e)}),
    }
}

fn range_row(ckpt: &Checkpoint, i: usize) -> Vec<String> {
    let name = clip(ckpt.name_at(i).unwrap_or(""), MAX_COLUMN_WIDTH);
    match ckpt.tensor_range(i) {
        Ok(r) => vec![
            name,
            r.dtype.name().to_string(),
            format!("{:?}", r.shape),
            format!("{:?}", r.strides),
            r.offset.to_string(),
            r.length.to_string(),
            if r.exact { "yes" } else { "no" }.to_string(),
            r.path
                .map_or_else(|| "-".to_string(), |p| p.to_string_lossy().into_owned()),
        ],
        Err(e) => vec![
            name,
            format!("error: {}: {}", e.kind.status_name(), e.message),
        ],
    }
}

fn error_json(e: &Error) -> Value {
    json!({"status": e.kind.status_name(), "message": e.message})
}

/// `{"format", "tensors": [...], "values": [...], "values_truncated"?}`, written one entry at
/// a time (each entry on its own line).
fn print_json(ckpt: &Checkpoint, hash: bool, out: &mut dyn Write) -> Result<(), Error> {
    let format = json!(ckpt.format().name());
    write!(out, "{{\n  \"format\": {format},\n  \"tensors\": [").map_err(output_error)?;
    let mut first = true;
    for (name, tensor) in ckpt.iter() {
        let entry = match tensor {
            Ok(t) => tensor_json(&t, hash),
            Err(e) => json!({"name": name, "error": error_json(&e)}),
        };
        write_entry(out, &entry, &mut first)?;
    }
    let close = if first { "" } else { "\n  " };
    write!(out, "{close}],\n  \"values\": [").map_err(output_error)?;
    let mut first = true;
    let truncated = ckpt.for_each_value_leaf(&ValueLimits::default(), |leaf| {
        write_entry(out, &value_json(&leaf), &mut first)
    })?;
    let close = if first { "" } else { "\n  " };
    write!(out, "{close}]").map_err(output_error)?;
    if truncated {
        write!(out, ",\n  \"values_truncated\": true").map_err(output_error)?;
    }
    writeln!(out, "\n}}").map_err(output_error)
}

fn write_entry(out: &mut dyn Write, entry: &Value, first: &mut bool) -> Result<(), Error> {
    let separator: &[u8] = if *first { b"\n    " } else { b",\n    " };
    out.write_all(separator).map_err(output_error)?;
    *first = false;
    serde_json::to_writer(&mut *out, entry)
        .map_err(|e| Error::io(format!("cannot write the output: {e}")))
}

fn tensor_json(t: &Tensor<'_>, hash: bool) -> Value {
    let mut v = json!({
        "name": t.name(),
        "dtype": t.dtype().name(),
        "shape": t.shape(),
        "stride": t.strides(),
        "storage_offset": t.storage_offset(),
        "numel": t.numel(),
        "nbytes": t.span_bytes(),
        "file_offset": if t.is_mapped() { t.file_offset() } else { None },
        "storage_id": t.storage_id(),
        "mapped": t.is_mapped(),
        "parameter": t.is_parameter(),
        "requires_grad": t.requires_grad(),
    });
    if t.is_conj() {
        v["conj"] = json!(true);
    }
    if t.is_neg() {
        v["neg"] = json!(true);
    }
    if hash {
        v["sha256"] = json!(sha256_hex(t));
    }
    v
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
                              "error": error_json(&e)})
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

/// Rows of cells separated by two spaces, each cell but the last padded to its column's width
/// (at most [`MAX_COLUMN_WIDTH`]). Padding is written by hand: `format!`'s width argument is a
/// `u16`, and a wider cell would panic.
struct Columns {
    widths: Vec<usize>,
}

impl Columns {
    fn new() -> Columns {
        Columns { widths: Vec::new() }
    }
    fn measure(&mut self, row: &[&str]) {
        if self.widths.len() < row.len() {
            self.widths.resize(row.len(), 0);
        }
        for (width, cell) in self.widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().take(MAX_COLUMN_WIDTH).count());
        }
    }
    fn write(&self, out: &mut dyn Write, indent: &str, row: &[&str]) -> io::Result<()> {
        const SPACES: &[u8] = &[b' '; MAX_COLUMN_WIDTH + 2];
        out.write_all(indent.as_bytes())?;
        for (c, cell) in row.iter().enumerate() {
            out.write_all(cell.as_bytes())?;
            if c + 1 < row.len() {
                let width = self.widths.get(c).copied().unwrap_or(0);
                let pad = width.saturating_sub(cell.chars().take(width).count());
                out.write_all(&SPACES[..pad + 2])?;
            }
        }
        out.write_all(b"\n")
    }
}

/// The cells of one `ls` row, without the hash (computed while writing, never kept).
fn table_row(name: &str, tensor: &mmckpt::Result<Tensor<'_>>) -> Vec<String> {
    match tensor {
        Ok(t) => vec![
            name.to_string(),
            t.dtype().name().to_string(),
            format!("{:?}", t.shape()),
            format!("{:?}", t.strides()),
            t.storage_offset().to_string(),
            t.span_bytes().to_string(),
            match (t.is_mapped(), t.file_offset()) {
                (true, Some(o)) => o.to_string(),
                _ => "-".into(),
            },
            // One numbering with --json's "storage_id" (the key in the file is an address for
            // legacy files, a record name for zip ones).
            t.storage_id().to_string(),
        ],
        Err(e) => vec![
            name.to_string(),
            format!("<{}: {}>", e.kind.status_name(), e.message),
        ],
    }
}

const LS_HEADER: [&str; 8] = [
    "name",
    "dtype",
    "shape",
    "stride",
    "offset",
    "bytes",
    "file offset",
    "storage id",
];

/// The table: a first pass measures the columns, a second writes each row.
fn print_table(ckpt: &Checkpoint, hash: bool, out: &mut dyn Write) -> Result<(), Error> {
    let mut columns = Columns::new();
    let header: Vec<&str> = LS_HEADER
        .iter()
        .copied()
        .chain(hash.then_some("sha256"))
        .collect();
    columns.measure(&header);
    for (name, tensor) in ckpt.iter() {
        let row = table_row(name, &tensor);
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        // A row's last cell is not padded: an error row measures its name only.
        columns.measure(&cells[..cells.len() - 1]);
    }
    columns.write(out, "", &header).map_err(output_error)?;
    for (name, tensor) in ckpt.iter() {
        let mut row = table_row(name, &tensor);
        if let (true, Ok(t)) = (hash, &tensor) {
            row.push(sha256_hex(t));
        }
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        columns.write(out, "", &cells).map_err(output_error)?;
    }
    writeln!(
        out,
        "{} tensors, {} storages, format {}",
        ckpt.len(),
        ckpt.storage_count(),
        ckpt.format().name()
    )
    .map_err(output_error)
}

/// `load`'s flags.
struct LoadArgs {
    file: PathBuf,
    open: Open,
    spec: Option<PathBuf>,
    plan: LoadPlan,
    quiet: bool,
}

impl LoadArgs {
    fn parse(mut parser: lexopt::Parser) -> Result<Parsed<LoadArgs>, Error> {
        let (mut file, mut open, mut spec, mut quiet) = (None, Open::default(), None, false);
        let mut plan = LoadPlan::default();
        let (mut tp, mut rules) = (None, Vec::new());
        while let Some(arg) = parser.next().map_err(usage)? {
            match arg {
                lexopt::Arg::Long("help") | lexopt::Arg::Short('h') => return Ok(Parsed::Help),
                lexopt::Arg::Long("root") => {
                    open.root = Some(string(parser.value().map_err(usage)?)?)
                }
                lexopt::Arg::Long("read") => open.read = true,
                lexopt::Arg::Long("spec") => spec = Some(parser.value().map_err(usage)?.into()),
                lexopt::Arg::Long("copy") => plan.copy = true,
                lexopt::Arg::Long("direct") => plan.direct_reads = true,
                lexopt::Arg::Long("contiguous") => plan.contiguous = true,
                lexopt::Arg::Long("dtype") => {
                    let name = string(parser.value().map_err(usage)?)?;
                    plan.dtype = Some(DType::from_name(&name).ok_or_else(|| {
                        Error::invalid_argument(format!(
                            "--dtype {name}: not a torch dtype name (e.g. bfloat16)"
                        ))
                    })?);
                }
                lexopt::Arg::Long("prefix") => {
                    plan.prefix = string(parser.value().map_err(usage)?)?
                }
                lexopt::Arg::Long("non-strict") => plan.non_strict = true,
                lexopt::Arg::Long("quiet") => quiet = true,
                lexopt::Arg::Long("tp") => {
                    let value = string(parser.value().map_err(usage)?)?;
                    tp = Some(parse_rank(&value)?);
                }
                lexopt::Arg::Long("split") => {
                    let value = string(parser.value().map_err(usage)?)?;
                    rules.push(parse_split(&value)?);
                }
                other => take_file(&mut file, other)?,
            }
        }
        plan.tensor_parallel = match (tp, rules.is_empty()) {
            (Some((rank, world)), _) => Some(TensorParallel::new(rank, world, rules)),
            (None, true) => None,
            (None, false) => {
                return Err(Error::invalid_argument(
                    "--split needs --tp RANK/WORLD (which rank's share to load)",
                ))
            }
        };
        Ok(Parsed::Run(LoadArgs {
            file: required(file)?,
            open,
            spec,
            plan,
            quiet,
        }))
    }
}

/// `--tp RANK/WORLD`.
fn parse_rank(value: &str) -> Result<(usize, usize), Error> {
    let parsed = value
        .split_once('/')
        .and_then(|(rank, world)| Some((rank.parse().ok()?, world.parse().ok()?)));
    parsed.ok_or_else(|| {
        Error::invalid_argument(format!(
            "--tp {value}: expected RANK/WORLD, two non-negative integers (e.g. 1/4)"
        ))
    })
}

/// `--split PATTERN=DIM` (the last `=` separates them: a pattern may hold one).
fn parse_split(value: &str) -> Result<SplitRule, Error> {
    let parsed = value
        .rsplit_once('=')
        .and_then(|(pattern, dim)| Some(SplitRule::new(pattern, dim.parse().ok()?)));
    parsed.ok_or_else(|| {
        Error::invalid_argument(format!(
            "--split {value}: expected PATTERN=DIM, DIM an integer (e.g. '*.q_proj.weight=0')"
        ))
    })
}

/// How `load` loads: the module to build and the load options (`convert` follows `dtype`).
#[derive(Clone, Debug, Default)]
pub struct LoadPlan {
    /// A JSON module spec; `None` mirrors the checkpoint's table under `prefix`.
    pub spec: Option<String>,
    /// Copy into owned memory instead of an assign load.
    pub copy: bool,
    /// With `copy`: read the entries with direct reads ([`LoadOptions::direct_reads`]).
    pub direct_reads: bool,
    /// Assign, but make every entry row-major (strided ones are copied).
    pub contiguous: bool,
    /// Declare floating entries with this dtype (converting while loading).
    pub dtype: Option<DType>,
    /// Only checkpoint keys under this prefix, stripped.
    pub prefix: String,
    /// Missing or unexpected keys do not fail the load.
    pub non_strict: bool,
    /// Load one tensor-parallel rank's share (a module built from the table gets its local
    /// shapes).
    pub tensor_parallel: Option<TensorParallel>,
}

/// A finished load: the module, torch's report, and when building and loading ended.
pub struct Loaded {
    /// The loaded module.
    pub module: Module,
    /// torch's report.
    pub report: LoadReport,
    /// The load converted dtypes (an assign load with a dtype).
    pub convert: bool,
    built: Instant,
    loaded: Instant,
}

/// Builds the module `plan` asks for and loads `ckpt` into it.
pub fn load_checkpoint(ckpt: &Checkpoint, plan: &LoadPlan) -> Result<Loaded, Error> {
    let module = match &plan.spec {
        Some(json) => Module::from_spec(json)?,
        None => module_from_table(ckpt, plan)?,
    };
    load_module(module, ckpt, plan)
}

/// The module mirroring `ckpt`'s table under the plan's prefix (with one rank's local shapes
/// for a tensor-parallel plan).
fn module_from_table(ckpt: &Checkpoint, plan: &LoadPlan) -> Result<Module, Error> {
    match &plan.tensor_parallel {
        Some(tp) => Module::from_checkpoint_for_rank(ckpt, &plan.prefix, tp),
        None => Module::from_checkpoint_under(ckpt, &plan.prefix),
    }
}

/// Loads `ckpt` into `module` (built from a spec, or from the checkpoint) as `plan` says.
fn load_module(mut module: Module, ckpt: &Checkpoint, plan: &LoadPlan) -> Result<Loaded, Error> {
    if let Some(dtype) = plan.dtype {
        module.set_floating_dtype(dtype)?;
    }
    if plan.copy {
        module.materialize()?;
    }
    let built = Instant::now();
    let options = LoadOptions {
        assign: !plan.copy,
        strict: !plan.non_strict,
        convert: !plan.copy && plan.dtype.is_some(),
        contiguous: plan.contiguous,
        prefix: plan.prefix.clone(),
        prefetch: false,
        tensor_parallel: plan.tensor_parallel.clone(),
        direct_reads: plan.direct_reads,
    };
    let report = module.load(ckpt, &options)?;
    Ok(Loaded {
        module,
        report,
        convert: options.convert,
        built,
        loaded: Instant::now(),
    })
}

/// The module the spec file at `path` describes; its errors name the file.
fn module_from_spec_file(path: &Path) -> Result<Module, Error> {
    let text = Module::read_spec_file(path)?;
    Module::from_spec(&text).map_err(|e| {
        let detail = e
            .message
            .strip_prefix("module spec: ")
            .unwrap_or(&e.message);
        Error {
            message: format!("spec '{}': {detail}", path.display()),
            ..e
        }
    })
}

fn load(args: &LoadArgs, out: &mut dyn Write) -> Result<(), Error> {
    let plan = &args.plan;
    // The spec first: its errors come before the checkpoint is even opened.
    let spec_started = Instant::now();
    let spec_module = args
        .spec
        .as_deref()
        .map(module_from_spec_file)
        .transpose()?;
    let started = Instant::now();
    let ckpt = open_checkpoint(&args.file, &args.open)?;
    let opened = Instant::now();
    let module = match spec_module {
        Some(module) => module,
        None => module_from_table(&ckpt, plan)?,
    };
    let loaded = load_module(module, &ckpt, plan)?;
    let mut out = io::BufWriter::new(out);
    let label = args.file.display().to_string();
    print_load(&label, &ckpt, &loaded, plan.copy, args.quiet, &mut out)?;
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    let (zero_copy, copied) = data_bytes(&loaded.module);
    writeln!(
        out,
        "open {:.3} ms, build {:.3} ms, load {:.3} ms; {zero_copy} bytes zero-copy, {copied} \
         bytes copied",
        ms(started, opened),
        ms(spec_started, started) + ms(opened, loaded.built),
        ms(loaded.built, loaded.loaded),
    )
    .map_err(output_error)?;
    out.flush().map_err(output_error)
}

/// `convert`'s flags.
struct ConvertArgs {
    input: PathBuf,
    output: PathBuf,
    open: Open,
    options: SaveOptions,
    quiet: bool,
}

impl ConvertArgs {
    fn parse(mut parser: lexopt::Parser) -> Result<Parsed<ConvertArgs>, Error> {
        let (mut input, mut output, mut open) = (None, None, Open::default());
        let (mut format, mut dtype, mut contiguous, mut quiet) = (None, None, false, false);
        while let Some(arg) = parser.next().map_err(usage)? {
            match arg {
                lexopt::Arg::Long("help") | lexopt::Arg::Short('h') => return Ok(Parsed::Help),
                lexopt::Arg::Long("root") => {
                    open.root = Some(string(parser.value().map_err(usage)?)?)
                }
                lexopt::Arg::Long("strict") => open.strict = true,
                lexopt::Arg::Long("read") => open.read = true,
                lexopt::Arg::Long("quiet") => quiet = true,
                lexopt::Arg::Long("contiguous") => contiguous = true,
                lexopt::Arg::Long("format") => {
                    let name = string(parser.value().map_err(usage)?)?;
                    format = Some(SaveFormat::from_name(&name).ok_or_else(|| {
                        Error::invalid_argument(format!(
                            "--format {name}: not a format (torch or safetensors)"
                        ))
                    })?);
                }
                lexopt::Arg::Long("dtype") => {
                    let name = string(parser.value().map_err(usage)?)?;
                    dtype = Some(
                        DType::from_name(&name)
                            .filter(|d| d.is_floating())
                            .ok_or_else(|| {
                                Error::invalid_argument(format!(
                                    "--dtype {name}: not a floating dtype (float32, float16, \
                                     bfloat16 or float64)"
                                ))
                            })?,
                    );
                }
                lexopt::Arg::Value(value) if input.is_none() => input = Some(value.into()),
                other => take_file(&mut output, other)?,
            }
        }
        let input = input.ok_or_else(|| Error::invalid_argument("no IN given"))?;
        let output: PathBuf = output.ok_or_else(|| Error::invalid_argument("no OUT given"))?;
        let format = format.unwrap_or_else(|| {
            if output.extension().is_some_and(|e| e == "safetensors") {
                SaveFormat::Safetensors
            } else {
                SaveFormat::Torch
            }
        });
        let options = SaveOptions {
            format,
            dtype,
            contiguous,
        };
        Ok(Parsed::Run(ConvertArgs {
            input,
            output,
            open,
            options,
            quiet,
        }))
    }
}

/// Inputs larger than this get a progress bar when stderr is a terminal.
pub const PROGRESS_THRESHOLD: u64 = 256 << 20;

fn convert(args: &ConvertArgs, out: &mut dyn Write) -> Result<(), Error> {
    let started = Instant::now();
    // Misaligned storages (legacy files) are read in place, not copied into memory.
    let options = OpenOptions {
        accept_unaligned: true,
        ..args.open.options()
    };
    let ckpt = Checkpoint::open(&args.input, &options)
        .map_err(|e| spec_given_as_file(&args.input).unwrap_or(e))?;
    ckpt.advise_sequential();
    let input_bytes = std::fs::metadata(&args.input).map(|m| m.len()).unwrap_or(0);
    let show_bar = !args.quiet && input_bytes > PROGRESS_THRESHOLD && io::stderr().is_terminal();
    let bar = show_bar.then(progress_bar);
    let report = save_with_progress(&ckpt, &args.output, &args.options, &mut |done, total| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
        true
    });
    if let Some(bar) = bar {
        bar.finish();
    }
    let report = report?;
    if args.quiet {
        return Ok(());
    }
    let mut out = io::BufWriter::new(out);
    for (dropped, kept) in &report.dropped {
        writeln!(out, "dropped {dropped} (shares its data with {kept})").map_err(output_error)?;
    }
    if let Some(why) = &report.values_not_written {
        writeln!(out, "non-tensor values not written: {why}").map_err(output_error)?;
    }
    writeln!(
        out,
        "wrote {} ({}): {} tensors, {} storages, {} bytes of data in {:.3} s",
        args.output.display(),
        args.options.format.name(),
        report.tensors,
        report.storages,
        report.data_bytes,
        started.elapsed().as_secs_f64()
    )
    .map_err(output_error)?;
    out.flush().map_err(output_error)
}

/// The convert progress bar (indicatif, drawn on stderr at most 20 times a second): bytes of
/// tensor data written, the total, the rate and the time left.
fn progress_bar() -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template(
        "[{bar:40}] {percent:>3}% {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|style| style.progress_chars("#>-"))
    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Bytes of entry data that are the file's pages, and bytes that are copies.
fn data_bytes(module: &Module) -> (usize, usize) {
    let (mut zero_copy, mut copied) = (0usize, 0usize);
    for entry in module.entries().iter().filter(|e| e.has_data()) {
        if entry.is_mapped() {
            zero_copy += entry.nbytes();
        } else {
            copied += entry.nbytes();
        }
    }
    (zero_copy, copied)
}

/// `load`'s report without the timings: the header line, each entry and where its data is
/// (unless `quiet`), and torch's report line.
pub fn print_load(
    label: &str,
    ckpt: &Checkpoint,
    loaded: &Loaded,
    copy: bool,
    quiet: bool,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let module = &loaded.module;
    let mode = match (copy, loaded.convert) {
        (true, _) => "copy",
        (false, true) => "assign+convert",
        (false, false) => "assign",
    };
    writeln!(
        out,
        "{label} -> {} ({} entries, {mode} load, {} checkpoint)",
        module.name(),
        module.len(),
        ckpt.format().name()
    )
    .map_err(output_error)?;
    if !quiet {
        let row = |entry: &mmckpt::Entry| {
            [
                entry.name().to_string(),
                entry.dtype().name().to_string(),
                format!("{:?}", entry.shape()),
                if !entry.has_data() {
                    "no data".to_string()
                } else if entry.is_mapped() {
                    match entry.file_offset() {
                        Some(offset) => format!("zero-copy @ file offset {offset}"),
                        None => "zero-copy".to_string(),
                    }
                } else {
                    "copied".to_string()
                },
            ]
        };
        let mut columns = Columns::new();
        for entry in module.entries() {
            let cells = row(entry);
            columns.measure(&[&cells[0], &cells[1], &cells[2]]);
        }
        for entry in module.entries() {
            let cells = row(entry);
            let cells: Vec<&str> = cells.iter().map(String::as_str).collect();
            columns.write(out, "  ", &cells).map_err(output_error)?;
        }
    }
    writeln!(out, "{}", loaded.report.message()).map_err(output_error)
}

/// The `cli` fuzz target's body (fuzz/fuzz_targets/cli.rs): the first byte chooses the
/// options, the rest is the checkpoint. Every output path runs on whatever opens — `ls` as a
/// table and as JSON, with or without hashes (at most 16 MiB hashed), and `load` (assign, with
/// or without row-major copies, or copy / convert for checkpoints of at most 8 MiB of tensors)
/// — into a sink; none may panic.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    let Some((&choice, bytes)) = data.split_first() else {
        return;
    };
    let Ok(ckpt) = Checkpoint::from_bytes(bytes, &OpenOptions::default()) else {
        return;
    };
    let mut sink = io::sink();
    let view = LsView {
        json: choice & 1 != 0,
        hash: choice & 2 != 0,
        max_hash_bytes: 16 << 20,
    };
    let _ = print_ls(&ckpt, view, &mut sink);
    let other = LsView {
        json: !view.json,
        ..view
    };
    let _ = print_ls(&ckpt, other, &mut sink);
    let declared = ckpt
        .iter()
        .filter_map(|(_, t)| t.ok())
        .map(|t| t.row_major_bytes())
        .fold(0u64, u64::saturating_add);
    let plan = LoadPlan {
        copy: choice & 4 != 0 && declared <= 8 << 20,
        dtype: (choice & 8 != 0 && declared <= 4 << 20).then_some(DType::BFloat16),
        non_strict: choice & 16 != 0,
        contiguous: choice & 64 != 0 && declared <= 8 << 20,
        ..LoadPlan::default()
    };
    if let Ok(loaded) = load_checkpoint(&ckpt, &plan) {
        let quiet = choice & 32 != 0;
        let _ = print_load("fuzz", &ckpt, &loaded, plan.copy, quiet, &mut sink);
    }
}
