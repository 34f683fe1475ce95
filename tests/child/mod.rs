//! Running a test case in a child process: the test binary re-invokes itself for one test,
//! with an environment variable that makes the test run its body instead of spawning. The
//! child may get an address-space limit (RLIMIT_AS) and runs the body on a thread with a small
//! stack, so that unbounded memory or recursion proportional to the input fails loudly (the
//! child dies of a signal or an abort) without taking the other tests down with it.
#![allow(dead_code)]

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Output};

/// The environment variable naming the test whose body a child runs.
const CASE_VAR: &str = "MMCKPT_CHILD_CASE";

/// The stack of the thread a case body runs on: anything that recurses once per level of a
/// million-deep input overflows it.
pub const SMALL_STACK: usize = 256 << 10;

/// The command-line tool, built by `cargo build --release` (one place to change if it moves).
pub fn cli_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/mmckpt")
}

/// Sets RLIMIT_AS (when `limit` is given) and RLIMIT_STACK (when `stack` is given) for the
/// program `command` is about to execute.
pub fn limit_child(command: &mut Command, limit: Option<u64>, stack: Option<u64>) {
    // SAFETY: the closure runs between fork and exec and only calls setrlimit, which is
    // async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for (resource, value) in [(libc::RLIMIT_AS, limit), (libc::RLIMIT_STACK, stack)] {
                if let Some(value) = value {
                    let rl = libc::rlimit {
                        rlim_cur: value as libc::rlim_t,
                        rlim_max: value as libc::rlim_t,
                    };
                    if libc::setrlimit(resource, &rl) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            Ok(())
        });
    }
}

/// How a child ended, for assertion messages.
pub fn describe(output: &Output) -> String {
    let how = match (output.status.code(), output.status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "ended".to_string(),
    };
    format!(
        "{how}\n--- stdout (tail)\n{}\n--- stderr (tail)\n{}",
        tail(&output.stdout),
        tail(&output.stderr)
    )
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.len().saturating_sub(4000);
    let start = (start..=text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// Runs `body` for the test named `test` (its function name) in a child process whose address
/// space is limited to `address_space` bytes (or unlimited), on a thread with a
/// [`SMALL_STACK`]; asserts the child ran it to completion (no panic, no signal, no abort).
/// Called from the test itself: in the child it runs the body, in the parent it spawns the
/// child and waits.
pub fn in_child(test: &str, address_space: Option<u64>, body: fn()) {
    if std::env::var(CASE_VAR).as_deref() == Ok(test) {
        let worker = std::thread::Builder::new()
            .stack_size(SMALL_STACK)
            .spawn(body)
            .expect("a small-stack thread");
        if worker.join().is_err() {
            std::process::exit(3);
        }
        return;
    }
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CASE_VAR, test);
    limit_child(&mut command, address_space, None);
    let output = command.output().expect("the test binary runs");
    assert!(
        output.status.success(),
        "case {test} (address space {address_space:?}) {}",
        describe(&output)
    );
}

/// The peak virtual size of this process so far (`VmPeak`), in bytes.
pub fn peak_address_space() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmPeak:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb << 10)
}

/// Pickles (protocol 2) and archives that amplify or nest, for the bound tests.
pub mod inputs {
    use crate::support_zip::{self, pk};

    pub const PROTO: [u8; 2] = [0x80, 2];
    /// BINPUT / BINGET of memo slot `i` (< 256).
    pub fn put(i: u8) -> [u8; 2] {
        [b'q', i]
    }
    pub fn get(i: u8) -> [u8; 2] {
        [b'h', i]
    }

    /// The one-element float32 tensor `pk::tensor("0", 1, …)` over storage "0".
    pub fn tensor() -> Vec<u8> {
        pk::tensor("0", 1, 0, &[1], &[1])
    }

    /// A checkpoint archive around `pickle` with storage "0" of 4 bytes.
    pub fn archive(pickle: &[u8]) -> Vec<u8> {
        support_zip::checkpoint(pickle, &[("0", &1f32.to_le_bytes())])
    }

    /// `{"a": {"a": … {"a": tensor, "b": 7} …}}`: `depth` dicts, so the tensor is named `a`
    /// repeated `depth` times joined by `.` and the int `…a.b`.
    pub fn deep_dicts(depth: usize) -> Vec<u8> {
        let mut p = PROTO.to_vec();
        p.push(b'}');
        p.extend(pk::unicode("a"));
        p.extend(put(0));
        for _ in 1..depth {
            p.push(b'}');
            p.extend(get(0));
        }
        p.push(b'}');
        p.push(b'(');
        p.extend(get(0));
        p.extend(tensor());
        p.extend(pk::unicode("b"));
        p.extend_from_slice(&[b'K', 7]);
        p.push(b'u');
        p.extend(std::iter::repeat(b's').take(depth));
        p.push(b'.');
        p
    }

    /// `{"t": tensor, "deep": (((…(None,),)…),), "l": [[[…]]]}`: a tuple and a list nested
    /// `depth` deep as values; with `tuple_key`, also `((…(None,),)…): 1`, a key nested
    /// `depth` deep (its name is longer than a segment may be).
    pub fn deep_sequences(depth: usize, tuple_key: bool) -> Vec<u8> {
        let mut p = PROTO.to_vec();
        p.push(b'}');
        p.push(b'(');
        p.extend(pk::unicode("t"));
        p.extend(tensor());
        p.extend(pk::unicode("deep"));
        p.push(b'N');
        p.extend(std::iter::repeat(0x85).take(depth)); // TUPLE1
        p.extend(pk::unicode("l"));
        p.extend(std::iter::repeat(b']').take(depth + 1));
        p.extend(std::iter::repeat(b'a').take(depth));
        if tuple_key {
            p.push(b'N');
            p.extend(std::iter::repeat(0x85).take(depth));
            p.extend_from_slice(&[b'K', 1]);
        }
        p.push(b'u');
        p.push(b'.');
        p
    }

    /// The dotted name `a.a.….a` of `segments` segments.
    pub fn dotted(segments: usize) -> String {
        let mut name = "a.".repeat(segments);
        name.pop();
        name
    }
}
