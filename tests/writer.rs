//! The writer (`mmckpt::save`, `mmckpt convert`): every fixture written both ways and read back
//! by mmckpt (and, when the oracle's virtualenv is there, by torch and safetensors), the
//! refusals, cancelling, and crash safety (a convert killed mid-write leaves the old target).

mod child;
mod common;
mod support_zip;

use common::fixture;
use mmckpt::{
    save, save_with_progress, Checkpoint, DType, ErrorKind, OpenOptions, SaveFormat, SaveOptions,
    Tensor,
};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: &[&str] = &[
    "proto4.pt",
    "forms.pt",
    "legacy.pt",
    "legacy_odd.pt",
    "legacy_proto4.pt",
    "dtypes.pt",
    "bigendian.pt",
    "transposed.pt",
    "nested.pt",
    "align4096.pt",
    "location.pt",
    "recipe.pt",
    "script.pt",
    "script_attr.pt",
    "script_nested.pt",
    "script_traced.pt",
    "safetensors/dtypes.safetensors",
    "shards/pytorch_model.bin.index.json",
];

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mmckpt-writer-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn open(path: &Path) -> Checkpoint {
    Checkpoint::open(path, &OpenOptions::default())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn same_elements(a: &Tensor<'_>, b: &Tensor<'_>, what: &str) {
    assert_eq!(a.dtype(), b.dtype(), "{what}");
    assert_eq!(a.shape(), b.shape(), "{what}");
    assert_eq!(
        a.contiguous_bytes(),
        b.contiguous_bytes(),
        "{what}: elements"
    );
}

/// The torch archive holds every table tensor under its name, as the same view, with the same
/// storage sharing.
fn check_torch_round_trip(input: &Checkpoint, out: &Path, label: &str) {
    let output = open(out);
    assert_eq!(output.format(), mmckpt::Format::Zip);
    assert_eq!(output.len(), input.len(), "{label}");
    let (mut ours, mut theirs) = (HashMap::new(), HashMap::new());
    for (i, (name, t)) in input.iter().enumerate() {
        let t = t.unwrap();
        let o = output.tensor_at(i).unwrap();
        let what = format!("{label}: '{name}'");
        assert_eq!(o.name(), name, "{what}");
        same_elements(&t, &o, &what);
        assert_eq!(o.strides(), t.strides(), "{what}");
        assert_eq!(o.storage_offset(), t.storage_offset(), "{what}");
        assert_eq!(o.is_parameter(), t.is_parameter(), "{what}");
        assert_eq!(o.requires_grad(), t.requires_grad(), "{what}");
        assert_eq!(o.storage_nbytes(), t.storage_nbytes(), "{what}");
        assert!(
            o.is_mapped(),
            "{what}: the output's storages are aligned in place"
        );
        let n = ours.len();
        let a = *ours.entry(t.storage_id()).or_insert(n);
        let n = theirs.len();
        let b = *theirs.entry(o.storage_id()).or_insert(n);
        assert_eq!(a, b, "{what}: storage sharing");
    }
}

#[test]
fn every_fixture_round_trips_through_a_torch_archive() {
    let dir = scratch("torch");
    for name in FIXTURES {
        let input = open(&fixture(name));
        let out = dir.join("out.pt");
        save(&input, &out, &SaveOptions::default()).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_torch_round_trip(&input, &out, name);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_fixture_round_trips_through_safetensors() {
    let dir = scratch("safetensors");
    let options = SaveOptions {
        format: SaveFormat::Safetensors,
        ..SaveOptions::default()
    };
    for (i, name) in FIXTURES.iter().enumerate() {
        let input = open(&fixture(name));
        let out = dir.join(format!("{i}.safetensors"));
        let report = match save(&input, &out, &options) {
            Ok(report) => report,
            Err(e) => {
                // dtypes.pt holds complex128, complex32 and the bits types.
                assert_eq!(e.kind, ErrorKind::Unsupported, "{name}: {e}");
                assert!(
                    e.message.contains("which safetensors cannot hold"),
                    "{name}: {e}"
                );
                assert!(!out.exists());
                continue;
            }
        };
        let output = open(&out);
        assert_eq!(output.len(), report.tensors, "{name}");
        assert_eq!(report.tensors + report.dropped.len(), input.len(), "{name}");
        for (dropped, kept) in &report.dropped {
            let (d, k) = (input.tensor(dropped).unwrap(), input.tensor(kept).unwrap());
            assert_eq!(d.storage_id(), k.storage_id(), "{name}: {dropped}");
            assert_eq!(d.data_ptr(), k.data_ptr(), "{name}: {dropped}");
            assert_eq!(
                output
                    .value(&format!("__metadata__.{dropped}"))
                    .unwrap()
                    .as_str(),
                Ok(kept.as_str())
            );
        }
        for (tensor_name, t) in output.iter() {
            let o = t.unwrap();
            assert!(o.is_contiguous());
            same_elements(&input.tensor(tensor_name).unwrap(), &o, name);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_tied_view_is_written_once_and_listed() {
    // forms.pt: several views of one storage, some starting at its first byte.
    let input = open(&fixture("forms.pt"));
    let dir = scratch("tied");
    let out = dir.join("forms.safetensors");
    let options = SaveOptions {
        format: SaveFormat::Safetensors,
        ..SaveOptions::default()
    };
    let report = save(&input, &out, &options).unwrap();
    assert!(
        !report.dropped.is_empty(),
        "forms.pt has views sharing a start"
    );
    // The kept name is the first in table order.
    for (dropped, kept) in &report.dropped {
        assert!(input.index_of(kept) < input.index_of(dropped));
    }
    assert_eq!(
        open(&out).value("__metadata__.format").unwrap().as_str(),
        Ok("pt")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dtype_and_contiguous_options() {
    let input = open(&fixture("forms.pt"));
    let dir = scratch("dtype");
    let out = dir.join("out.pt");
    let options = SaveOptions {
        dtype: Some(DType::BFloat16),
        contiguous: true,
        ..SaveOptions::default()
    };
    save(&input, &out, &options).unwrap();
    let output = open(&out);
    for (name, t) in input.iter() {
        let t = t.unwrap();
        let o = output.tensor(name).unwrap();
        assert!(o.is_contiguous(), "{name}");
        assert_eq!(o.storage_offset(), 0, "{name}");
        if t.dtype().is_floating() {
            assert_eq!(o.dtype(), DType::BFloat16, "{name}");
            let src = t.contiguous_bytes();
            let mut want = vec![0u8; t.numel() as usize * 2];
            mmckpt::convert_elements(&src, t.dtype(), &mut want, DType::BFloat16).unwrap();
            assert_eq!(&*o.contiguous_bytes(), &want[..], "{name}");
        } else {
            same_elements(&t, &o, name);
        }
    }
    let bad = SaveOptions {
        dtype: Some(DType::Int8),
        ..SaveOptions::default()
    };
    assert_eq!(
        save(&input, dir.join("bad.pt"), &bad).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    assert!(!dir.join("bad.pt").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn refusals_name_the_tensor_and_leave_no_file() {
    let dir = scratch("refusals");
    let exotic = open(&fixture("exotic.pt"));
    let out = dir.join("out.pt");
    let e = save(&exotic, &out, &SaveOptions::default()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unsupported, "{e}");
    assert!(e.message.contains("'quantized'"), "{e}");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "no file left");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cancelled_save_leaves_the_old_target() {
    let dir = scratch("cancel");
    let input = open(&fixture("proto4.pt"));
    let out = dir.join("out.pt");
    std::fs::write(&out, b"old").unwrap();
    let e =
        save_with_progress(&input, &out, &SaveOptions::default(), &mut |_, _| false).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Callback);
    assert_eq!(std::fs::read(&out).unwrap(), b"old");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        1,
        "the temp file is removed"
    );
    let mut calls = Vec::new();
    save_with_progress(&input, &out, &SaveOptions::default(), &mut |done, total| {
        calls.push((done, total));
        true
    })
    .unwrap();
    let &(done, total) = calls.last().unwrap();
    assert_eq!(done, total);
    assert!(calls.windows(2).all(|w| w[0].0 <= w[1].0));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A safetensors file of one float32 tensor of `bytes` bytes of zeros (sparse on disk).
fn big_safetensors(path: &Path, bytes: u64) {
    let header = format!(
        r#"{{"big":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{bytes}]}}}}"#,
        bytes / 4
    );
    let mut header = header.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut head = (header.len() as u64).to_le_bytes().to_vec();
    head.extend_from_slice(&header);
    std::fs::write(path, &head).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(head.len() as u64 + bytes).unwrap();
}

#[test]
fn a_convert_killed_mid_write_leaves_the_old_target() {
    let dir = scratch("crash");
    let input = dir.join("big.safetensors");
    big_safetensors(&input, 1 << 30);
    let target = dir.join("target.pt");
    std::fs::write(&target, b"the old target").unwrap();
    let mut convert = Command::new(child::cli_path())
        .args([
            "convert".as_ref(),
            input.as_os_str(),
            target.as_os_str(),
            "--quiet".as_ref(),
        ])
        .spawn()
        .expect("target/release/mmckpt (cargo build --release)");
    // Wait until the temporary file holds some data, then kill the writer mid-write.
    let started = std::time::Instant::now();
    let temp = loop {
        let temp = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains(".mmckpt-tmp-"));
        if let Some(temp) =
            temp.filter(|t| t.metadata().map(|m| m.len() > 1 << 20).unwrap_or(false))
        {
            break temp;
        }
        assert!(
            convert.try_wait().unwrap().is_none(),
            "the convert ended before it was killed"
        );
        assert!(
            started.elapsed().as_secs() < 60,
            "no temporary file appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    convert.kill().unwrap(); // SIGKILL
    convert.wait().unwrap();
    assert!(
        temp.metadata().unwrap().len() < (1 << 30),
        "killed before the end"
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"the old target");
    // What a crash leaves: the old target and a stray temporary file beside it, never a
    // partial file under the target's name.
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names[0].starts_with(".target.pt.mmckpt-tmp-"), "{names:?}");
    assert_eq!(&names[1..], ["big.safetensors", "target.pt"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// torch and safetensors themselves read the outputs (when the oracle's virtualenv exists; the
/// full comparison is tests/oracle/test_convert.py).
#[test]
fn torch_and_safetensors_load_the_outputs() {
    let python = PathBuf::from(std::env::var("HOME").unwrap_or_default())
        .join(".cache/mmckpt/venv/bin/python");
    if !python.exists() {
        eprintln!("skipped: no {} (scripts/setup-venv.sh)", python.display());
        return;
    }
    let dir = scratch("python");
    let input = open(&fixture("nested.pt"));
    let (pt, st) = (dir.join("out.pt"), dir.join("out.safetensors"));
    save(&input, &pt, &SaveOptions::default()).unwrap();
    let options = SaveOptions {
        format: SaveFormat::Safetensors,
        ..SaveOptions::default()
    };
    save(&input, &st, &options).unwrap();
    let script = r#"
import sys, torch
from safetensors.torch import load_file
src = torch.load(sys.argv[1], weights_only=False)
flat = {}
def walk(o, p):
    if isinstance(o, torch.Tensor): flat[p] = o
    elif isinstance(o, dict):
        for k, v in o.items(): walk(v, f"{p}.{k}" if p else str(k))
    elif isinstance(o, (list, tuple)):
        for i, v in enumerate(o): walk(v, f"{p}.{i}" if p else str(i))
    elif hasattr(o, "__dict__"):
        for k, v in vars(o).items(): walk(v, f"{p}.{k}" if p else str(k))
walk(src, "")
pt = torch.load(sys.argv[2], mmap=True, weights_only=True)
assert list(pt) == list(flat), (list(pt), list(flat))
for k, v in flat.items():
    assert torch.equal(pt[k], v) and pt[k].stride() == v.stride(), k
st = load_file(sys.argv[3])
assert st and all(torch.equal(st[k], flat[k]) for k in st)
print(len(pt), len(st))
"#;
    let out = Command::new(&python)
        .args(["-c", script])
        .args([
            fixture("nested.pt").as_os_str(),
            pt.as_os_str(),
            st.as_os_str(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_torch_archive_keeps_the_whole_saved_object() {
    use support_zip::pk;
    // {"model": {"w": tensor}, "epoch": 3, "name": "run", "cfg": [1.5, None, True, -2**40],
    //  "again": <the same list>}
    let mut p = vec![0x80, 2, b'}', b'('];
    p.extend(pk::unicode("model"));
    p.extend_from_slice(b"}(");
    p.extend(pk::unicode("w"));
    p.extend(pk::tensor("0", 1, 0, &[1], &[1]));
    p.push(b'u');
    p.extend(pk::unicode("epoch"));
    p.extend_from_slice(&[b'K', 3]);
    p.extend(pk::unicode("name"));
    p.extend(pk::unicode("run"));
    p.extend(pk::unicode("cfg"));
    p.extend_from_slice(&[b']', b'q', 7, b'(', b'G']);
    p.extend_from_slice(&1.5f64.to_be_bytes());
    p.extend_from_slice(&[b'N', 0x88, 0x8a, 6, 0, 0, 0, 0, 0, 0xff, b'e']);
    p.extend(pk::unicode("again"));
    p.extend_from_slice(&[b'h', 7, b'u', b'.']);
    let dir = scratch("tree");
    let input = dir.join("in.pt");
    std::fs::write(
        &input,
        support_zip::checkpoint(&p, &[("0", &2.5f32.to_le_bytes())]),
    )
    .unwrap();
    let ckpt = open(&input);
    let out = dir.join("out.pt");
    let report = save(&ckpt, &out, &SaveOptions::default()).unwrap();
    assert!(report.whole_object, "{report:?}");
    assert_eq!(report.values_not_written, None);
    let back = open(&out);
    assert_eq!(back.value("epoch").unwrap().as_i64().unwrap(), 3);
    assert_eq!(back.value("name").unwrap().as_str().unwrap(), "run");
    assert_eq!(back.value("cfg.0").unwrap().as_f64().unwrap(), 1.5);
    assert_eq!(back.value("cfg.1").unwrap().kind(), mmckpt::ValueKind::None);
    assert!(back.value("cfg.2").unwrap().as_bool().unwrap());
    assert_eq!(back.value("cfg.3").unwrap().as_i64().unwrap(), -(1 << 40));
    assert_eq!(back.value("again.3").unwrap().as_i64().unwrap(), -(1 << 40));
    let w = back.tensor("model.w").unwrap();
    assert_eq!(w.bytes(), &2.5f32.to_le_bytes());
    let names: Vec<_> = (0..back.len()).map(|i| back.name_at(i).unwrap()).collect();
    assert_eq!(names, ["model.w"]);

    // Safetensors: the tensors only; the values are listed as not written.
    let st = dir.join("out.safetensors");
    let options = SaveOptions {
        format: SaveFormat::Safetensors,
        ..SaveOptions::default()
    };
    let report = save(&ckpt, &st, &options).unwrap();
    let why = report.values_not_written.unwrap();
    assert!(why.starts_with("10 non-tensor values"), "{why}");
    assert!(why.contains("'epoch'"), "{why}");

    // An object torch's weights-only unpickler refuses: the table as a state dict, and why.
    let report = save(&open(&fixture("nested.pt")), &out, &SaveOptions::default()).unwrap();
    assert!(!report.whole_object);
    let why = report.values_not_written.unwrap();
    assert!(why.contains("argparse.Namespace"), "{why}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_safetensors_input_written_as_torch_lists_only_values_it_had() {
    let dir = scratch("st-values");
    // No `__metadata__`: its state dict is all there is, nothing to report.
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut bare = (header.len() as u64).to_le_bytes().to_vec();
    bare.extend_from_slice(header);
    bare.extend_from_slice(&[0u8; 8]);
    let bare_path = dir.join("bare.safetensors");
    std::fs::write(&bare_path, &bare).unwrap();
    let report = save(
        &open(&bare_path),
        dir.join("bare.pt"),
        &SaveOptions::default(),
    )
    .unwrap();
    assert_eq!(report.values_not_written, None);
    // The fixture has `__metadata__`: its values are named as not written.
    let report = save(
        &open(&fixture("safetensors/dtypes.safetensors")),
        dir.join("meta.pt"),
        &SaveOptions::default(),
    )
    .unwrap();
    let why = report.values_not_written.expect("the metadata is reported");
    assert!(why.contains("'__metadata__.format'"), "{why}");
    std::fs::remove_dir_all(&dir).ok();
}
