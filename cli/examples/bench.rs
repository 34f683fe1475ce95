//! The mmckpt side of the benchmarks (`bench/run.py` drives it and runs torch's side in the
//! same run). Each subcommand measures one scenario on files that `bench/gen.py` wrote and
//! prints one JSON object on stdout; times are in seconds, one value per repetition.
//!
//! ```text
//! bench open FILE REPS                 open (metadata only): time, drop time, resident memory
//! bench recipe FILE SPEC REPS          open + meta module from spec + assign load
//! bench copy FILE TO REPS              copy load (TO = same) or conversion (TO = bfloat16,
//!                                      float32, …) vs memcpy of the same bytes
//! bench safetensors ST PT SPEC REPS    mmckpt vs the safetensors crate on the same tensors:
//!                                      the crate and mmckpt opening ST itself, interleaved,
//!                                      and mmckpt opening the torch file PT
//! bench cold FILE MODE                 one pass over every tensor byte (the driver evicts the
//!                                      file from the page cache first); MODE = map, populate,
//!                                      sequential, willneed, read
//! ```
//!
//! Memory figures are read from the OS (`/proc/self/status`, `/proc/self/smaps`,
//! `/proc/self/stat`), not estimated.

#[path = "shared/mod.rs"]
mod shared;

use mmckpt::{Checkpoint, DType, LoadOptions, Module, OpenMode, OpenOptions};
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| -> &str { args.get(i).map(String::as_str).unwrap_or_else(|| usage()) };
    let reps = |i: usize| -> usize { arg(i).parse().unwrap_or_else(|_| usage()) };
    let out = match arg(0) {
        "open" => open(arg(1), reps(2)),
        "recipe" => recipe(arg(1), arg(2), reps(3)),
        "copy" => copy(arg(1), arg(2), reps(3)),
        "safetensors" => safetensors(arg(1), arg(2), arg(3), reps(4)),
        "cold" => cold(arg(1), arg(2)),
        _ => usage(),
    };
    println!("{out}");
}

fn usage() -> ! {
    eprintln!(
        "usage: bench open FILE REPS | recipe FILE SPEC|mirror REPS | copy FILE TO REPS | \
         safetensors ST PT SPEC REPS | cold FILE MODE"
    );
    std::process::exit(2)
}

fn secs<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let start = Instant::now();
    let v = f();
    (start.elapsed().as_secs_f64(), v)
}

// ----- what the OS says -------------------------------------------------------------------

/// VmRSS of this process, in KiB.
fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Resident KiB of this process's mappings of `path` (pages of the file touched through the
/// mapping).
fn mapped_rss_kb(path: &str) -> u64 {
    let want = std::fs::canonicalize(path).unwrap_or_else(|_| path.into());
    let want = want.to_string_lossy();
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            inside = line.ends_with(&*want);
        } else if inside {
            if let Some(v) = line.strip_prefix("Rss:") {
                total += v
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap_or(0);
            }
        }
    }
    total
}

/// (minor, major) page faults of this process so far.
fn faults() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3; minflt 10, majflt 12.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    (
        f.get(7).copied().unwrap_or(0),
        f.get(9).copied().unwrap_or(0),
    )
}

fn file_len(path: &str) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// A read-only mapping of the whole file (the same mmap any loader would make).
fn map(path: &str) -> memmap2::Mmap {
    let file = std::fs::File::open(path).expect("open");
    // SAFETY: the benchmark's inputs are not modified while it runs.
    unsafe { memmap2::Mmap::map(&file) }.expect("map")
}

fn open_ckpt(path: &str, mode: OpenMode) -> Checkpoint {
    let options = OpenOptions {
        mode,
        ..OpenOptions::default()
    };
    Checkpoint::open(path, &options).unwrap_or_else(|e| panic!("open {path}: {e}"))
}

// ----- scenarios --------------------------------------------------------------------------

fn open(path: &str, reps: usize) -> Value {
    // Memory first, in a process that has not opened anything yet.
    let (rss_base, faults_base) = (rss_kb(), faults());
    let ckpt = open_ckpt(path, OpenMode::Map);
    let (rss_after, faults_after) = (rss_kb(), faults());
    let map_rss = mapped_rss_kb(path);
    let tensors = ckpt.len();
    let tensor_bytes: u64 = ckpt
        .iter()
        .filter_map(|(_, t)| t.ok())
        .map(|t| t.span_bytes())
        .sum();
    drop(ckpt);
    let (mut open_s, mut drop_s) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let (t, ckpt) = secs(|| open_ckpt(path, OpenMode::Map));
        open_s.push(t);
        drop_s.push(secs(|| drop(black_box(ckpt))).0);
    }
    json!({
        "file_bytes": file_len(path), "tensors": tensors, "tensor_bytes": tensor_bytes,
        "open_s": open_s, "drop_s": drop_s,
        "rss_base_kb": rss_base, "rss_after_open_kb": rss_after, "file_rss_kb": map_rss,
        "minor_faults": faults_after.0 - faults_base.0, "major_faults": faults_after.1 - faults_base.1,
    })
}

/// Open, build the skeleton (from a JSON spec, or with SPEC `mirror` from the checkpoint's
/// own table, `Module::from_checkpoint`), assign.
fn recipe(path: &str, spec_path: &str, reps: usize) -> Value {
    let spec = match spec_path {
        "mirror" => None,
        file => Some(std::fs::read_to_string(file).expect("read spec")),
    };
    let (mut open_s, mut spec_s, mut assign_s, mut total_s) = (vec![], vec![], vec![], vec![]);
    let mut last = json!({});
    for rep in 0..reps {
        let rss0 = rss_kb();
        let start = Instant::now();
        let (t_open, ckpt) = secs(|| open_ckpt(path, OpenMode::Map));
        let (t_spec, module) = secs(|| match &spec {
            Some(spec) => Module::from_spec(spec).expect("spec"),
            None => Module::from_checkpoint(&ckpt).expect("mirror"),
        });
        let mut module = module;
        let f0 = faults();
        let file_rss_before = if rep == 0 { mapped_rss_kb(path) } else { 0 };
        let options = LoadOptions {
            assign: true,
            ..LoadOptions::default()
        };
        let (t_assign, report) = secs(|| module.load(&ckpt, &options).expect("assign load"));
        let total = start.elapsed().as_secs_f64();
        if rep == 0 {
            // Pages of the file that the assign load touched (0: no tensor byte was read).
            let f1 = faults();
            last = json!({
                "entries": module.len(), "loaded": report.loaded(),
                "file_bytes": file_len(path),
                "file_rss_after_open_kb": file_rss_before,
                "file_rss_after_assign_kb": mapped_rss_kb(path),
                "assign_minor_faults": f1.0 - f0.0, "assign_major_faults": f1.1 - f0.1,
                "rss_delta_kb": rss_kb() as i64 - rss0 as i64,
            });
        }
        open_s.push(t_open);
        spec_s.push(t_spec);
        assign_s.push(t_assign);
        total_s.push(total);
        drop(black_box((module, ckpt)));
    }
    last["open_s"] = json!(open_s);
    last["spec_s"] = json!(spec_s);
    last["assign_s"] = json!(assign_s);
    last["total_s"] = json!(total_s);
    last
}

/// Sum of one word per 4 KiB page: touches memory without being a copy.
fn touch(bytes: &[u8]) -> u64 {
    bytes.iter().step_by(4096).map(|&b| b as u64).sum()
}

fn copy(path: &str, to: &str, reps: usize) -> Value {
    let target = match to {
        "same" => None,
        name => Some(DType::from_name(name).unwrap_or_else(|| panic!("dtype {name}"))),
    };
    let (mut load_fresh, mut load_warm, mut memcpy_fresh, mut memcpy_warm) =
        (vec![], vec![], vec![], vec![]);
    let (mut src_bytes, mut dst_bytes) = (0u64, 0u64);
    // Warm the page cache (the scenario is warm-cache).
    touch(black_box(&map(path)[..]));
    for _ in 0..reps {
        // memcpy baseline: the same source bytes (a fresh mapping, as a load sees them) into
        // fresh memory, then again into the same (warm) memory.
        {
            let ckpt = open_ckpt(path, OpenMode::Map);
            let srcs: Vec<&[u8]> = ckpt
                .iter()
                .filter_map(|(_, t)| t.ok())
                .map(|t| t.bytes())
                .collect();
            let (t, mut dsts) = secs(|| {
                srcs.iter()
                    .map(|s| {
                        let mut d = vec![0u8; s.len()];
                        d.copy_from_slice(s);
                        d
                    })
                    .collect::<Vec<_>>()
            });
            memcpy_fresh.push(t);
            memcpy_warm.push(
                secs(|| {
                    for (d, s) in dsts.iter_mut().zip(&srcs) {
                        d.copy_from_slice(s);
                    }
                })
                .0,
            );
            src_bytes = srcs.iter().map(|s| s.len() as u64).sum();
            black_box(&dsts);
        }
        let ckpt = open_ckpt(path, OpenMode::Map);
        let mut module = Module::from_checkpoint(&ckpt).expect("skeleton");
        if let Some(dtype) = target {
            module.set_floating_dtype(dtype).expect("dtype");
        }
        let options = LoadOptions::default();
        let (t, ()) = secs(|| {
            module.materialize().expect("materialize");
            module.load(&ckpt, &options).expect("copy load");
        });
        load_fresh.push(t);
        load_warm.push(secs(|| module.load(&ckpt, &options).expect("copy load")).0);
        dst_bytes = module.entries().iter().map(|e| e.nbytes() as u64).sum();
        drop(black_box(module));
    }
    json!({
        "to": to, "src_bytes": src_bytes, "dst_bytes": dst_bytes,
        "load_fresh_s": load_fresh, "load_warm_s": load_warm,
        "memcpy_fresh_s": memcpy_fresh, "memcpy_warm_s": memcpy_warm,
        "threads": std::thread::available_parallelism().map_or(1, |n| n.get()),
    })
}

fn safetensors(st_path: &str, pt_path: &str, spec_path: &str, reps: usize) -> Value {
    use safetensors::SafeTensors;
    let spec = std::fs::read_to_string(spec_path).expect("read spec");
    let (mut st_open, mut st_deserialize, mut st_tensors) = (vec![], vec![], vec![]);
    let (mut mm_open, mut mm_recipe, mut mm_open_st) = (vec![], vec![], vec![]);
    let mut count = (0, 0);
    for _ in 0..reps {
        // mmckpt on the same .safetensors file, measured as the crate's open below is: map
        // the file, read the header, every tensor described (mmckpt's table is built by open).
        let (t, n) = secs(|| open_ckpt(st_path, OpenMode::Map).len());
        mm_open_st.push(t);
        assert_eq!(n, count_st(st_path), "both read the same tensors");
        // The crate's documented zero-copy path: map the file, deserialize the header.
        let (t, n) = secs(|| {
            let m = map(st_path);
            let st = SafeTensors::deserialize(&m[..]).expect("deserialize");
            st.len()
        });
        st_open.push(t);
        let m = map(st_path);
        st_deserialize
            .push(secs(|| black_box(SafeTensors::deserialize(&m[..]).expect("d")).len()).0);
        // Every tensor as a view (name, dtype, shape, data slice), as a loader would use them.
        st_tensors.push(
            secs(|| {
                let st = SafeTensors::deserialize(&m[..]).expect("d");
                black_box(st.tensors()).len()
            })
            .0,
        );
        let (t, ckpt) = secs(|| open_ckpt(pt_path, OpenMode::Map));
        mm_open.push(t);
        count = (n, ckpt.len());
        drop(ckpt);
        let (t, _) = secs(|| {
            let ckpt = open_ckpt(pt_path, OpenMode::Map);
            let mut module = Module::from_spec(&spec).expect("spec");
            let options = LoadOptions {
                assign: true,
                ..LoadOptions::default()
            };
            module.load(&ckpt, &options).expect("assign");
            black_box((module, ckpt))
        });
        mm_recipe.push(t);
    }
    json!({
        "st_tensors": count.0, "pt_tensors": count.1,
        "st_map_deserialize_s": st_open, "st_deserialize_s": st_deserialize,
        "st_deserialize_tensors_s": st_tensors,
        "mmckpt_open_s": mm_open, "mmckpt_open_spec_assign_s": mm_recipe,
        "mmckpt_open_safetensors_s": mm_open_st,
    })
}

/// Tensors the crate finds in a safetensors file.
fn count_st(path: &str) -> usize {
    let m = map(path);
    safetensors::SafeTensors::deserialize(&m[..])
        .expect("deserialize")
        .len()
}

fn cold(path: &str, mode: &str) -> Value {
    let load_mode = match mode {
        "populate" => OpenMode::MapPopulate,
        "read" => OpenMode::Read,
        _ => OpenMode::Map,
    };
    let f0 = faults();
    let (t, sum) = secs(|| {
        let ckpt = open_ckpt(path, load_mode);
        match mode {
            "sequential" => ckpt.advise_sequential(),
            "willneed" => ckpt.advise_will_need(),
            "map" | "populate" | "read" => {}
            other => panic!("mode {other}"),
        }
        let (bytes, sum) = shared::sum_tensor_bytes(&ckpt);
        (sum, bytes)
    });
    let f1 = faults();
    json!({
        "mode": mode, "seconds": t, "bytes": sum.1, "checksum": sum.0,
        "minor_faults": f1.0 - f0.0, "major_faults": f1.1 - f0.1,
        "file_bytes": file_len(path),
    })
}
