//! The CRC-32 check (`OpenOptions::verify_crc`, `MMCKPT_OPEN_VERIFY_CRC`): torch-written files
//! pass it, a byte changed in any record the checkpoint uses fails it naming the record and
//! both checksums (the same file opens silently without the check, as torch loads it), and
//! records written without a CRC are skipped and counted.

mod common;

use common::{fixture, manifest, repo_path};
use mmckpt::{Checkpoint, ErrorKind, OpenOptions};
use serde_json::Value;

fn verifying() -> OpenOptions {
    OpenOptions {
        verify_crc: true,
        ..OpenOptions::default()
    }
}

/// The CRC-32 torch recorded for record `name` of nested.pt, and its size
/// (scripts/make_crc_cases.py).
fn recorded(name: &str) -> (u32, usize) {
    let text = std::fs::read_to_string(repo_path("tests/data/crc/expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    let record = &expected["nested.pt"][name];
    (
        record["crc"].as_u64().unwrap() as u32,
        record["size"].as_u64().unwrap() as usize,
    )
}

/// Where the data of record `name` starts, from its local header (found by its name).
fn data_offset(bytes: &[u8], name: &str) -> usize {
    let header = (0..bytes.len() - 30)
        .find(|&h| {
            bytes[h..].starts_with(b"PK\x03\x04") && bytes[h + 30..].starts_with(name.as_bytes())
        })
        .unwrap();
    let le16 = |o: usize| usize::from(u16::from_le_bytes([bytes[o], bytes[o + 1]]));
    header + 30 + le16(header + 26) + le16(header + 28)
}

fn scratch(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("crc-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn torch_written_archives_pass_and_legacy_files_are_refused() {
    for (file, expected) in manifest() {
        let format = expected["format"].as_str().unwrap();
        let opened = Checkpoint::open(fixture(&file), &verifying());
        if format == "legacy" {
            let e = opened.unwrap_err();
            assert_eq!(e.kind, ErrorKind::Unsupported, "{file}: {e}");
            assert!(e.message.contains("no checksums"), "{file}: {e}");
            continue;
        }
        let ckpt = opened.unwrap_or_else(|e| panic!("{file}: {e}"));
        let report = ckpt.crc_report().expect("a report");
        // The pickle and every storage (and `byteorder` when there is one).
        assert!(
            report.records_checked > ckpt.storage_count() as u64,
            "{file}: {report:?}"
        );
        assert_eq!(report.records_without_crc, 0, "{file}");
        let plain = Checkpoint::open(fixture(&file), &OpenOptions::default()).unwrap();
        assert_eq!(plain.crc_report(), None);
        for i in 0..ckpt.len() {
            assert_eq!(
                ckpt.tensor_at(i).unwrap().bytes(),
                plain.tensor_at(i).unwrap().bytes(),
                "{file}"
            );
        }
    }
}

#[test]
fn a_changed_byte_in_a_used_record_names_the_record_and_both_checksums() {
    let original = std::fs::read(fixture("nested.pt")).unwrap();
    let ckpt = Checkpoint::open(fixture("nested.pt"), &OpenOptions::default()).unwrap();
    let weight = ckpt
        .tensor_range(ckpt.index_of("model.fc.weight").unwrap())
        .unwrap();
    let storage_record = format!("nested/data/{}", {
        let t = ckpt.tensor("model.fc.weight").unwrap();
        t.storage_key()
    });
    for (record, at) in [
        (
            "nested/data.pkl",
            data_offset(&original, "nested/data.pkl") + 2,
        ),
        (storage_record.as_str(), weight.offset as usize + 5),
        (
            "nested/byteorder",
            data_offset(&original, "nested/byteorder"),
        ),
    ] {
        let mut bytes = original.clone();
        bytes[at] ^= 0x10;
        let (crc, size) = recorded(record);
        let start = data_offset(&original, record);
        assert_eq!(
            crc32fast::hash(&original[start..start + size]),
            crc,
            "{record}"
        );
        let actual = crc32fast::hash(&bytes[start..start + size]);
        let path = scratch(&record.replace('/', "_"), &bytes);
        let e = Checkpoint::open(&path, &verifying()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Format, "{record}: {e}");
        for needle in [
            format!("record '{record}' is corrupt"),
            format!("0x{actual:08x}"),
            format!("0x{crc:08x}"),
        ] {
            assert!(e.message.contains(&needle), "{record}: {e} lacks {needle}");
        }
        // Without the check the same file opens, as torch loads it.
        if !record.ends_with("byteorder") && !record.ends_with("data.pkl") {
            let silent = Checkpoint::open(&path, &OpenOptions::default()).unwrap();
            assert_ne!(
                silent.tensor("model.fc.weight").unwrap().bytes(),
                ckpt.tensor("model.fc.weight").unwrap().bytes()
            );
        }
    }
}

#[test]
fn only_the_records_a_checkpoint_uses_are_checked() {
    // A byte changed in the weight's storage: an open of another sub-object does not read it.
    let original = std::fs::read(fixture("nested.pt")).unwrap();
    let ckpt = Checkpoint::open(fixture("nested.pt"), &OpenOptions::default()).unwrap();
    let weight = ckpt
        .tensor_range(ckpt.index_of("model.fc.weight").unwrap())
        .unwrap();
    let mut bytes = original.clone();
    bytes[weight.offset as usize] ^= 1;
    let path = scratch("unused.pt", &bytes);
    let options = OpenOptions {
        root: Some("optimizer".into()),
        ..verifying()
    };
    let report = Checkpoint::open(&path, &options)
        .unwrap()
        .crc_report()
        .unwrap();
    assert!(report.records_checked >= 2, "{report:?}");
    assert!(Checkpoint::open(&path, &verifying()).is_err());
}

#[test]
fn records_written_without_a_crc_are_counted_not_checked() {
    let path = repo_path("tests/data/crc/nocrc.pt");
    let ckpt = Checkpoint::open(&path, &verifying()).unwrap();
    let report = ckpt.crc_report().unwrap();
    // data.pkl, byteorder and the two storages carry 0.
    assert_eq!(report.records_without_crc, 4, "{report:?}");
    assert_eq!(report.records_checked, 0, "{report:?}");
    assert_eq!(ckpt.len(), 2);
}

#[test]
fn a_sharded_checkpoint_sums_its_shards_reports() {
    let index = fixture("shards/pytorch_model.bin.index.json");
    let ckpt = Checkpoint::open(&index, &verifying()).unwrap();
    let report = ckpt.crc_report().unwrap();
    assert!(report.records_checked >= 4, "{report:?}");
    assert_eq!(report.records_without_crc, 0);
}

#[test]
fn every_cut_of_a_torch_written_archive_is_refused_without_the_check() {
    // Truncated downloads need no CRC: the zip directory is at the end of the file.
    let whole = std::fs::read(fixture("nested.pt")).unwrap();
    for len in 0..whole.len() {
        let e = Checkpoint::from_bytes(&whole[..len], &OpenOptions::default()).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Format, "cut at {len}: {e}");
    }
}
