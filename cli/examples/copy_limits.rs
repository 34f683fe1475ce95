//! The limits a copy load is measured against, timed natively (issue #17): `bench/copy_limits.py`
//! runs each subcommand in a process of its own and prints mmckpt's figures beside these.
//! Every subcommand prints one JSON object; times are seconds, one value per repetition, each
//! with the `/proc/vmstat` counters that moved during it (huge-page faults, fallbacks,
//! compaction and direct reclaim), so a slow repetition says what the kernel did.
//!
//! ```text
//! copy_limits memcpy FILE DST THREADS REPS  memcpy of the whole file from a fresh mapping of it
//!                                           (warm page cache) on THREADS threads into DST:
//!                                           fresh4k (new memory, MADV_NOHUGEPAGE), freshthp
//!                                           (new memory, 2 MiB-aligned, MADV_HUGEPAGE) or warm
//!                                           (memory already written once)
//! copy_limits load FILE TO REPS [populate]  mmckpt's copy load (TO = same) or conversion: fresh =
//!                                           materialize + load into new memory, warm = a second
//!                                           load into the same memory; with populate, the file's
//!                                           mapping is first faulted in (OpenMode::MapPopulate)
//! copy_limits cold FILE MODE [THREADS]      one pass over every tensor byte of a file the driver
//!                                           evicted: pread / direct (8 MiB reads, O_DIRECT) on
//!                                           THREADS threads = the device's throughput;
//!                                           direct-fresh (the same O_DIRECT reads into fresh
//!                                           MADV_HUGEPAGE memory of the file's size: the device
//!                                           plus the page faults any copy's memory costs); load /
//!                                           load-prefetch / load-direct (copy load, fresh
//!                                           memory; with LoadOptions::prefetch or
//!                                           ::direct_reads); mapsum (the
//!                                           mapped tensors summed; mapsum-prefetch: inside a
//!                                           prefetch plan); populate (fresh memory of the
//!                                           file's size populated, no I/O); verify (open with
//!                                           the CRC-32 check of every record)
//! ```

#[path = "shared/mod.rs"]
mod shared;

use mmckpt::{Checkpoint, DType, LoadOptions, Module, OpenMode, OpenOptions};
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or_else(|| usage()) };
    let num = |i: usize| -> usize { arg(i).parse().unwrap_or_else(|_| usage()) };
    let out = match arg(0) {
        "memcpy" => memcpy(arg(1), arg(2), num(3), num(4)),
        "load" => load(
            arg(1),
            arg(2),
            num(3),
            args.get(4).map(String::as_str) == Some("populate"),
        ),
        "cold" => cold(arg(1), arg(2), args.get(3).map_or(1, |_| num(3))),
        _ => usage(),
    };
    println!("{out}");
}

fn usage() -> ! {
    eprintln!(
        "usage: copy_limits memcpy FILE fresh4k|freshthp|warm THREADS REPS | \
         load FILE TO REPS [populate] | cold FILE pread|direct|direct-fresh|load|load-prefetch|load-direct|\
         mapsum|verify [THREADS]"
    );
    std::process::exit(2)
}

const HUGE_PAGE: usize = 2 << 20;
const READ_CHUNK: usize = 8 << 20;

/// The `/proc/vmstat` counters that say how fresh memory was obtained.
const VMSTAT_KEYS: &[&str] = &[
    "thp_fault_alloc",
    "thp_fault_fallback",
    "compact_stall",
    "compact_success",
    "allocstall_normal",
    "allocstall_movable",
    "pgscan_direct",
    "pgfault",
    "pgmajfault",
];

fn vmstat() -> Vec<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").unwrap_or_default();
    VMSTAT_KEYS
        .iter()
        .map(|key| {
            text.lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0)
        })
        .collect()
}

/// Seconds `f` took and the vmstat counters that moved meanwhile.
fn timed<T>(f: impl FnOnce() -> T) -> (f64, Value, T) {
    let before = vmstat();
    let start = Instant::now();
    let v = f();
    let t = start.elapsed().as_secs_f64();
    let after = vmstat();
    let moved: serde_json::Map<String, Value> = VMSTAT_KEYS
        .iter()
        .zip(before.iter().zip(&after))
        .filter(|(_, (b, a))| a > b)
        .map(|(k, (b, a))| (k.to_string(), json!(a - b)))
        .collect();
    (t, Value::Object(moved), v)
}

/// Anonymous memory for a destination, unmapped on drop. `huge`: 2 MiB-aligned and advised
/// MADV_HUGEPAGE; otherwise advised MADV_NOHUGEPAGE (4 KiB pages whatever the THP mode).
struct Anon {
    ptr: *mut u8,
    len: usize,
}

impl Anon {
    fn new(len: usize, huge: bool) -> Anon {
        let len = len.next_multiple_of(HUGE_PAGE);
        // SAFETY: a fresh private anonymous mapping; it aliases nothing.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len + HUGE_PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED, "mmap {len} bytes");
        let start = (base as usize).next_multiple_of(HUGE_PAGE);
        let head = start - base as usize;
        // SAFETY: the unaligned head and tail are whole pages of the mapping just made; nothing
        // refers to them. The advice is a hint about later faults, never the contents.
        unsafe {
            if head > 0 {
                libc::munmap(base, head);
            }
            libc::munmap((start + len) as *mut libc::c_void, HUGE_PAGE - head);
            let advice = if huge {
                libc::MADV_HUGEPAGE
            } else {
                libc::MADV_NOHUGEPAGE
            };
            libc::madvise(start as *mut libc::c_void, len, advice);
        }
        Anon {
            ptr: start as *mut u8,
            len,
        }
    }

    fn slice(&mut self, len: usize) -> &mut [u8] {
        assert!(len <= self.len);
        // SAFETY: the mapping is ours, readable and writable for self.len bytes; &mut self
        // makes the slice exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, len) }
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: the aligned mapping made in `new`; no slice of it outlives self.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

/// The file mapped afresh (its page-cache pages are mapped into the process on first touch, as
/// a load from a mapping sees them).
fn map(path: &str) -> memmap2::Mmap {
    let file = std::fs::File::open(path).expect("open");
    // SAFETY: the benchmark's inputs are not modified while it runs.
    unsafe { memmap2::Mmap::map(&file) }.expect("map")
}

/// `dst.copy_from_slice(src)` on `threads` threads in equal parts of whole cache lines; the
/// calling thread copies the first part.
fn copy_on(threads: usize, src: &[u8], dst: &mut [u8]) {
    let part = src.len().div_ceil(threads).next_multiple_of(64);
    std::thread::scope(|scope| {
        let mut pieces = src.chunks(part).zip(dst.chunks_mut(part));
        let first = pieces.next();
        for (s, d) in pieces {
            scope.spawn(move || d.copy_from_slice(s));
        }
        if let Some((s, d)) = first {
            d.copy_from_slice(s);
        }
    });
}

fn memcpy(path: &str, dst_kind: &str, threads: usize, reps: usize) -> Value {
    let len = map(path).len();
    let mut warm = (dst_kind == "warm").then(|| {
        let mut dst = Anon::new(len, true);
        copy_on(threads, &map(path), dst.slice(len));
        dst
    });
    let (mut seconds, mut kernel) = (vec![], vec![]);
    for _ in 0..reps {
        let src = map(path);
        // A fresh destination is returned and unmapped after the clock stops, as a loaded
        // module outlives its load.
        let (t, moved, dst) = timed(|| match warm.as_mut() {
            Some(dst) => {
                copy_on(threads, &src, dst.slice(len));
                None
            }
            None => {
                let mut dst = Anon::new(len, dst_kind == "freshthp");
                copy_on(threads, &src, dst.slice(len));
                Some(dst)
            }
        });
        drop(black_box(dst));
        seconds.push(t);
        kernel.push(moved);
    }
    json!({"kind": "memcpy", "dst": dst_kind, "threads": threads, "bytes": len,
           "seconds": seconds, "kernel": kernel})
}

fn open_ckpt(path: &str, options: &OpenOptions) -> Checkpoint {
    Checkpoint::open(path, options).unwrap_or_else(|e| panic!("open {path}: {e}"))
}

fn load(path: &str, to: &str, reps: usize, populate: bool) -> Value {
    let target =
        (to != "same").then(|| DType::from_name(to).unwrap_or_else(|| panic!("dtype {to}")));
    let (mut fresh, mut warm, mut kernel) = (vec![], vec![], vec![]);
    let (mut src_bytes, mut dst_bytes) = (0u64, 0u64);
    for _ in 0..reps {
        let mode = if populate {
            OpenMode::MapPopulate
        } else {
            OpenMode::Map
        };
        let ckpt = open_ckpt(
            path,
            &OpenOptions {
                mode,
                ..OpenOptions::default()
            },
        );
        let mut module = Module::from_checkpoint(&ckpt).expect("skeleton");
        if let Some(dtype) = target {
            module.set_floating_dtype(dtype).expect("dtype");
        }
        let options = LoadOptions::default();
        let (t, moved, ()) = timed(|| {
            module.materialize().expect("materialize");
            module.load(&ckpt, &options).expect("copy load");
        });
        fresh.push(t);
        kernel.push(moved);
        warm.push(timed(|| module.load(&ckpt, &options).expect("copy load")).0);
        src_bytes = ckpt
            .iter()
            .map(|(_, t)| t.expect("tensor").span_bytes())
            .sum();
        dst_bytes = module.entries().iter().map(|e| e.nbytes() as u64).sum();
        drop(black_box(module));
    }
    json!({"kind": "load", "to": to, "populate": populate, "src_bytes": src_bytes,
           "dst_bytes": dst_bytes, "fresh_s": fresh, "warm_s": warm, "kernel": kernel})
}

fn cold(path: &str, mode: &str, threads: usize) -> Value {
    let (t, moved, (bytes, check)) = timed(|| match mode {
        "pread" | "direct" => read_file(path, mode == "direct", threads),
        "direct-fresh" => read_file_fresh(path, threads),
        "populate" => populate_fresh(path),
        "load" | "load-prefetch" | "load-direct" => {
            let ckpt = open_ckpt(path, &OpenOptions::default());
            let mut module = Module::from_checkpoint(&ckpt).expect("skeleton");
            module.materialize().expect("materialize");
            let options = LoadOptions {
                prefetch: mode == "load-prefetch",
                direct_reads: mode == "load-direct",
                ..LoadOptions::default()
            };
            module.load(&ckpt, &options).expect("copy load");
            let bytes = module.entries().iter().map(|e| e.nbytes() as u64).sum();
            (bytes, module.len() as u64)
        }
        "mapsum" => {
            let ckpt = open_ckpt(path, &OpenOptions::default());
            shared::sum_tensor_bytes(&ckpt)
        }
        "mapsum-prefetch" => {
            // The mapped sum inside a prefetch plan (Checkpoint::prefetch_while): the storages
            // are advised in file order ahead of the sum, which marks each one consumed.
            let ckpt = open_ckpt(path, &OpenOptions::default());
            let indices: Vec<usize> = (0..ckpt.len()).collect();
            ckpt.prefetch_while(&indices, mmckpt::DEFAULT_PREFETCH_BUDGET, |cursor| {
                let (mut bytes, mut sum) = (0u64, 0u64);
                for (_, t) in ckpt.iter() {
                    let t = t.expect("tensor");
                    let b = t.bytes();
                    bytes += b.len() as u64;
                    sum = b
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .fold(sum, u64::wrapping_add);
                    cursor.consumed(&t);
                }
                (bytes, sum)
            })
        }
        "verify" => {
            let options = OpenOptions {
                verify_crc: true,
                mode: OpenMode::Map,
                ..OpenOptions::default()
            };
            let ckpt = open_ckpt(path, &options);
            let report = ckpt.crc_report().expect("verified");
            (report.bytes_checked, report.records_checked)
        }
        other => panic!("mode {other}"),
    });
    json!({"kind": "cold", "mode": mode, "threads": threads, "seconds": t, "bytes": bytes,
           "check": check, "kernel": moved, "file_bytes": map(path).len()})
}

/// Fresh 2 MiB-aligned MADV_HUGEPAGE memory of the file's size, populated writable in one
/// `MADV_POPULATE_WRITE` (no I/O): what placing the file's bytes in new memory costs the
/// kernel (and, in a virtual machine, its host) whatever reads them. Returns (bytes, 0).
fn populate_fresh(path: &str) -> (u64, u64) {
    let len = std::fs::metadata(path).expect("stat").len() as usize;
    let mut dst = Anon::new(len.next_multiple_of(READ_CHUNK), true);
    let dst = dst.slice(len.next_multiple_of(READ_CHUNK));
    // SAFETY: the range is the mapping just made; madvise only maps its pages.
    let rc = unsafe {
        libc::madvise(
            dst.as_mut_ptr().cast(),
            dst.len(),
            libc::MADV_POPULATE_WRITE,
        )
    };
    assert_eq!(rc, 0, "MADV_POPULATE_WRITE");
    (len as u64, 0)
}

/// [`read_file`] with O_DIRECT into one fresh 2 MiB-aligned MADV_HUGEPAGE destination of the
/// file's size (chunk `c` lands at `c` × 8 MiB), unmapped after the clock stops: what a load
/// into new memory costs at least. (0, 1) when the file system refuses O_DIRECT.
fn read_file_fresh(path: &str, threads: usize) -> (u64, u64) {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
    else {
        return (0, 1);
    };
    let len = file.metadata().expect("stat").len() as usize;
    let mut dst = Anon::new(len.next_multiple_of(READ_CHUNK), true);
    let dst = dst.slice(len.next_multiple_of(READ_CHUNK));
    let mut chunks: Vec<(usize, &mut [u8])> = dst.chunks_mut(READ_CHUNK).enumerate().collect();
    let total: u64 = std::thread::scope(|scope| {
        let mut parts: Vec<Vec<(usize, &mut [u8])>> = (0..threads).map(|_| Vec::new()).collect();
        for (i, chunk) in chunks.drain(..) {
            parts[i % threads].push((i, chunk));
        }
        let file = &file;
        let workers: Vec<_> = parts
            .into_iter()
            .map(|part| {
                scope.spawn(move || {
                    part.into_iter()
                        .map(|(i, buf)| {
                            // O_DIRECT reads whole blocks; the file's last one may be short.
                            file.read_at(buf, (i * READ_CHUNK) as u64).expect("pread") as u64
                        })
                        .sum::<u64>()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("reader")).sum()
    });
    (total, 0)
}

/// Reads the whole file in 8 MiB preads: thread `i` of `threads` reads chunks i, i + threads, …
/// (more requests in flight than one thread keeps). Returns (bytes read, 0); with `direct`,
/// O_DIRECT into 2 MiB-aligned buffers, or (0, 1) when the file system refuses O_DIRECT.
fn read_file(path: &str, direct: bool, threads: usize) -> (u64, u64) {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let flags = if direct { libc::O_DIRECT } else { 0 };
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    else {
        return (0, 1);
    };
    let len = file.metadata().expect("stat").len();
    let chunks = len.div_ceil(READ_CHUNK as u64);
    let total: u64 = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads as u64)
            .map(|first| {
                let file = &file;
                scope.spawn(move || {
                    let mut buf = Anon::new(READ_CHUNK, true);
                    let buf = buf.slice(READ_CHUNK);
                    let mut read = 0u64;
                    let mut chunk = first;
                    while chunk < chunks {
                        let offset = chunk * READ_CHUNK as u64;
                        // O_DIRECT reads whole blocks; the file's last one may be short.
                        let n = file.read_at(buf, offset).expect("pread");
                        read += n as u64;
                        chunk += threads as u64;
                    }
                    read
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("reader")).sum()
    });
    (total, 0)
}
