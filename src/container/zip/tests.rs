//! The parser's unit tests: archives from the test writer, patched where a test needs a
//! malformed one, and a torch-written archive.

use super::end::has_byte;
use super::writer::{local_header, Entry, Writer};
use super::*;
use crate::error::{Error, ErrorKind, Result};

/// Written with (torch 2.15):
/// `~/.cache/mmckpt/venv/bin/python -c "import torch;
///   torch.save({'a': torch.arange(4.)}, 'tests/data/zip/tiny_torch.pt')"`
const TINY_TORCH: &[u8] = include_bytes!("../../../tests/data/zip/tiny_torch.pt");

/// `parse`, checked against `parse_with` reading every local header through a reader.
fn parse_both(bytes: &[u8]) -> Result<ZipArchive> {
    let read_at = read_from(bytes);
    let reads = HeaderReads {
        read_at: &read_at,
        min_spacing: 0,
    };
    let mapped = parse(bytes, &ZipLimits::default());
    let read = parse_with(bytes, &ZipLimits::default(), Some(reads));
    match (&mapped, &read) {
        (Ok(a), Ok(b)) => assert_eq!(
            a.records().collect::<Vec<_>>(),
            b.records().collect::<Vec<_>>()
        ),
        (Err(a), Err(b)) => assert_eq!((a.kind, &a.message), (b.kind, &b.message)),
        _ => panic!("parse and parse_with disagree: {mapped:?} / {read:?}"),
    }
    mapped
}

fn ok(bytes: &[u8]) -> ZipArchive {
    match parse_both(bytes) {
        Ok(archive) => archive,
        Err(e) => panic!("parse failed: {e}"),
    }
}

fn err(bytes: &[u8]) -> Error {
    match parse_both(bytes) {
        Ok(archive) => panic!(
            "parse succeeded: {:?}",
            archive.records().collect::<Vec<_>>()
        ),
        Err(e) => e,
    }
}

fn expect(bytes: &[u8], kind: ErrorKind, needles: &[&str]) -> Error {
    let e = err(bytes);
    assert_eq!(e.kind, kind, "{e}");
    for needle in needles {
        assert!(e.message.contains(needle), "{e} should mention {needle}");
    }
    e
}

fn torch_like(prefix: &str) -> Vec<Entry> {
    vec![
        Entry::new(&format!("{prefix}/data.pkl"), b"\x80\x02}q\x00."),
        Entry::new(&format!("{prefix}/.format_version"), b"1"),
        Entry::new(&format!("{prefix}/.storage_alignment"), b"64"),
        Entry::new(&format!("{prefix}/byteorder"), b"little"),
        Entry::new(&format!("{prefix}/data/0"), &[1, 2, 3, 4, 5, 6, 7, 8]),
        Entry::new(&format!("{prefix}/data/1"), &[]),
        Entry::new(&format!("{prefix}/version"), b"3\n"),
    ]
}

fn set_u16(bytes: &mut [u8], at: usize, v: u16) {
    bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn set_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn prefixes_and_lookup() {
    for prefix in ["archive", "my_model", "x"] {
        for (zip64, descriptor) in [(false, false), (true, true), (true, false)] {
            let mut w = Writer::new(torch_like(prefix));
            w.zip64 = zip64;
            w.descriptor = descriptor;
            let built = w.build();
            let bytes = &built.bytes;
            assert!(looks_like_zip(bytes));
            let a = ok(bytes);
            assert_eq!(a.prefix(), prefix);
            assert_eq!(a.file_len(), bytes.len() as u64);
            let names: Vec<_> = a.records().map(|r| r.name).collect();
            let expected: Vec<_> = w.entries.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, expected);
            for (i, e) in w.entries.iter().enumerate() {
                let rel = &e.name[prefix.len() + 1..];
                let r = a.get(rel).unwrap();
                assert_eq!(Some(r), a.records().nth(i));
                assert_eq!(r.data_offset, built.data_offsets[i]);
                assert_eq!(a.data(bytes, r).unwrap(), &e.data[..]);
            }
            assert_eq!(
                a.text(bytes, "byteorder").unwrap().as_deref(),
                Some("little")
            );
            assert_eq!(
                a.text(bytes, ".storage_alignment").unwrap().as_deref(),
                Some("64")
            );
            assert_eq!(a.text(bytes, "version").unwrap().as_deref(), Some("3"));
            assert_eq!(a.text(bytes, "missing").unwrap(), None);
            assert!(a.get("missing").is_none());
            assert!(a.get(&format!("{prefix}/data.pkl")).is_none());
            assert!(a.get("data").is_none());
        }
    }
}

#[test]
fn has_byte_never_misses() {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..200_000u64 {
        // xorshift words, half of them with a 0x50 planted somewhere.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let mut word = x.to_le_bytes();
        if i % 2 == 0 {
            word[(i / 2 % 8) as usize] = 0x50;
        }
        if word.contains(&0x50) {
            assert!(has_byte(u64::from_le_bytes(word), 0x50), "{word:?}");
        }
    }
    assert!(!has_byte(0, 0x50));
    assert!(has_byte(u64::from_le_bytes(*b"\0\0\0\0\0\0\0P"), b'P'));
}

#[test]
fn the_guess_of_the_first_record_is_the_parsed_record_or_nothing() {
    let a = ok(TINY_TORCH);
    let pkl = a.get("data.pkl").unwrap();
    assert_eq!(
        guess_first_record(TINY_TORCH, "data.pkl"),
        Some((pkl.data_offset, pkl.size, a.records().len() as u64))
    );
    assert_eq!(guess_first_record(TINY_TORCH, "version"), None);
    assert_eq!(guess_first_record(TINY_TORCH, "a.pkl"), None);
    for len in 0..TINY_TORCH.len() {
        let cut = &TINY_TORCH[..len];
        if let Some((offset, size, _)) = guess_first_record(cut, "data.pkl") {
            assert!(offset + size <= len as u64);
        }
    }
}

#[test]
fn comment_is_allowed() {
    let mut w = Writer::new(torch_like("archive"));
    w.comment = b"a comment that mentions PK\x05\x06 inside".to_vec();
    let a = ok(&w.build().bytes);
    assert_eq!(a.records().len(), 7);
}

#[test]
fn alignment_is_honoured() {
    for align in [64u64, 4096] {
        for zip64_extras in [false, true] {
            let mut w = Writer::new(torch_like("archive"));
            w.align = align;
            w.zip64 = true;
            w.descriptor = true;
            w.zip64_extras = zip64_extras;
            let built = w.build();
            let a = ok(&built.bytes);
            for (r, e) in a.records().zip(&w.entries) {
                assert_eq!(r.data_offset % align, 0, "{} at {}", r.name, r.data_offset);
                assert_eq!(a.data(&built.bytes, r).unwrap(), &e.data[..]);
            }
        }
    }
}

#[test]
fn zip64_extras_in_central_and_local_headers() {
    for descriptor in [false, true] {
        let mut w = Writer::new(torch_like("archive"));
        w.zip64 = true;
        w.zip64_extras = true;
        w.descriptor = descriptor;
        w.align = 64;
        let built = w.build();
        let a = ok(&built.bytes);
        for (i, (r, e)) in a.records().zip(&w.entries).enumerate() {
            assert_eq!(r.data_offset, built.data_offsets[i]);
            assert_eq!(a.data(&built.bytes, r).unwrap(), &e.data[..]);
        }
    }
}

#[test]
fn zip64_many_entries() {
    let n = 70_000usize;
    let mut entries = vec![Entry::new("big/data.pkl", b"pickle")];
    entries.extend((0..n).map(|i| Entry::new(&format!("big/data/{i}"), &(i as u32).to_le_bytes())));
    let mut w = Writer::new(entries);
    w.zip64 = true;
    w.descriptor = true;
    let bytes = w.build().bytes;
    let start = std::time::Instant::now();
    let a = ok(&bytes);
    let elapsed = start.elapsed();
    assert_eq!(a.records().len(), n + 1);
    assert_eq!(a.prefix(), "big");
    for i in [0usize, 1, 65_534, 65_535, 65_536, n - 1] {
        let r = a.get(&format!("data/{i}")).unwrap();
        assert_eq!(a.data(&bytes, r).unwrap(), (i as u32).to_le_bytes());
    }
    // Timing belongs to the benchmarks (shared, noisy machines); here it is only shown.
    eprintln!("parsed {} records in {elapsed:?}", n + 1);

    let limits = ZipLimits { max_records: n };
    let e = parse(&bytes, &limits).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Limit, "{e}");
}

#[test]
fn real_torch_archive() {
    let bytes = TINY_TORCH;
    assert!(looks_like_zip(bytes));
    let a = ok(bytes);
    assert_eq!(a.prefix(), "tiny_torch");
    let names: Vec<_> = a.records().map(|r| r.name).collect();
    assert_eq!(
        names,
        [
            "tiny_torch/data.pkl",
            "tiny_torch/.format_version",
            "tiny_torch/.storage_alignment",
            "tiny_torch/byteorder",
            "tiny_torch/data/0",
            "tiny_torch/version",
            "tiny_torch/.data/serialization_id",
        ]
    );
    let data0 = a.get("data/0").unwrap();
    assert_eq!(data0.size, 16);
    assert_eq!(data0.data_offset % 64, 0);
    let expected: Vec<u8> = [0f32, 1., 2., 3.]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(a.data(bytes, data0).unwrap(), &expected[..]);
    for r in a.records() {
        assert_eq!(r.data_offset % 64, 0, "{}", r.name);
    }
    let pkl = a.data(bytes, a.get("data.pkl").unwrap()).unwrap();
    assert_eq!(&pkl[..2], b"\x80\x02");
    assert_eq!(pkl.last(), Some(&b'.'));
    assert_eq!(
        a.text(bytes, "byteorder").unwrap().as_deref(),
        Some("little")
    );
    assert_eq!(
        a.text(bytes, ".storage_alignment").unwrap().as_deref(),
        Some("64")
    );
}

#[test]
fn every_truncation_is_an_error() {
    for len in 0..TINY_TORCH.len() {
        let e = err(&TINY_TORCH[..len]);
        assert_eq!(e.kind, ErrorKind::Format, "length {len}: {e}");
    }
}

#[test]
fn not_a_zip() {
    expect(&[], ErrorKind::Format, &["0 bytes"]);
    assert!(!looks_like_zip(&[]));
    let mut state = 0x1234_5678_9abc_def0u64;
    for len in [1usize, 21, 22, 100, 5000, 70_000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                (state >> 33) as u8
            })
            .collect();
        assert!(!looks_like_zip(&bytes));
        expect(&bytes, ErrorKind::Format, &[]);
    }
    // An end record alone: no records.
    let w = Writer::new(vec![]);
    expect(&w.build().bytes, ErrorKind::Format, &["no records"]);
}

#[test]
fn compressed_entry_parses_but_its_data_is_unsupported() {
    let mut entries = torch_like("archive");
    entries[4].method = 8;
    let bytes = Writer::new(entries).build().bytes;
    let archive = ok(&bytes);
    let record = archive.get("data/0").unwrap();
    let err = archive.data(&bytes, record).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported);
    for needle in ["archive/data/0", "method 8", "deflate"] {
        assert!(err.message.contains(needle), "{}", err.message);
    }
    assert!(archive
        .data(&bytes, archive.get("data.pkl").unwrap())
        .is_ok());
}

#[test]
fn encrypted_entry_is_unsupported() {
    let mut entries = torch_like("archive");
    entries[2].flags = 1;
    let bytes = Writer::new(entries).build().bytes;
    expect(
        &bytes,
        ErrorKind::Unsupported,
        &["archive/.storage_alignment", "encrypted"],
    );
}

#[test]
fn duplicate_names() {
    let mut entries = torch_like("archive");
    entries.push(Entry::new("archive/data/0", b"again"));
    let bytes = Writer::new(entries).build().bytes;
    expect(&bytes, ErrorKind::Format, &["duplicate", "archive/data/0"]);
}

#[test]
fn numbered_and_other_data_names_are_distinct_records() {
    // "data/1" is found by number, "data/01", "data/x" and a number past the record count
    // by name; all of them are records of their own.
    let mut entries = torch_like("archive");
    for (name, data) in [
        ("01", b"zero-one"),
        ("x", b"ex-ex-ex"),
        ("99999", b"big-numb"),
    ] {
        entries.push(Entry::new(&format!("archive/data/{name}"), data));
    }
    let bytes = Writer::new(entries).build().bytes;
    let a = ok(&bytes);
    let text = |r: Option<ZipRecord<'_>>| a.data(&bytes, r.unwrap()).unwrap().to_vec();
    assert_eq!(text(a.get("data/0")), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(text(a.storage_record("0")), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(text(a.get("data/1")), b"");
    assert_eq!(text(a.get("data/01")), b"zero-one");
    assert_eq!(text(a.storage_record("01")), b"zero-one");
    assert_eq!(text(a.storage_record("x")), b"ex-ex-ex");
    assert_eq!(text(a.storage_record("99999")), b"big-numb");
    for missing in ["2", "001", "9", "+1", "-0", ""] {
        assert!(a.storage_record(missing).is_none(), "{missing}");
        assert!(a.get(&format!("data/{missing}")).is_none(), "{missing}");
    }
    assert_eq!(canonical_index("0"), Some(0));
    assert_eq!(canonical_index("123456789"), Some(123_456_789));
    for not in ["", "00", "01", "1234567890", "1a", " 1", "+1"] {
        assert_eq!(canonical_index(not), None, "{not}");
    }
}

#[test]
fn local_name_differs() {
    let mut entries = torch_like("archive");
    entries[4].local_name = Some("archive/data/9".into());
    let built = Writer::new(entries).build();
    let at = built.local_offsets[4].to_string();
    expect(
        &built.bytes,
        ErrorKind::Format,
        &["archive/data/0", "archive/data/9", &at],
    );
}

#[test]
fn local_header_disagreements() {
    // Local size (written, no descriptor) differs from the central directory's.
    let mut entries = torch_like("archive");
    entries[4].cd_size = Some(7);
    let bytes = Writer::new(entries).build().bytes;
    expect(&bytes, ErrorKind::Format, &["archive/data/0", "size of 8"]);

    // Local method differs.
    let mut built = Writer::new(torch_like("archive")).build();
    set_u16(&mut built.bytes, built.local_offsets[3] as usize + 8, 8);
    expect(
        &built.bytes,
        ErrorKind::Format,
        &["archive/byteorder", "method 8"],
    );

    // Local CRC differs (non-zero).
    let mut built = Writer::new(torch_like("archive")).build();
    set_u32(
        &mut built.bytes,
        built.local_offsets[3] as usize + 14,
        0xdead_beef,
    );
    expect(
        &built.bytes,
        ErrorKind::Format,
        &["archive/byteorder", "CRC"],
    );

    // Zero local CRC is fine even without a descriptor.
    let mut built = Writer::new(torch_like("archive")).build();
    set_u32(&mut built.bytes, built.local_offsets[3] as usize + 14, 0);
    ok(&built.bytes);

    // Bad local signature.
    let mut built = Writer::new(torch_like("archive")).build();
    built.bytes[built.local_offsets[5] as usize] = b'X';
    let at = built.local_offsets[5].to_string();
    expect(
        &built.bytes,
        ErrorKind::Format,
        &["archive/data/1", &at, "signature"],
    );
}

#[test]
fn offset_past_end_of_file() {
    for offset in [1u64 << 20, 0xFFFF_FFFE, 1 << 40, u64::MAX - 10] {
        let mut w = Writer::new(torch_like("archive"));
        w.zip64 = true;
        w.entries[4].cd_offset = Some(offset);
        let bytes = w.build().bytes;
        expect(
            &bytes,
            ErrorKind::Format,
            &["archive/data/0", &offset.to_string()],
        );
    }
    // A local header offset inside the central directory.
    let mut w = Writer::new(torch_like("archive"));
    let cd = w.build().cd_offset as u64;
    w.entries[1].cd_offset = Some(cd);
    expect(
        &w.build().bytes,
        ErrorKind::Format,
        &["archive/.format_version"],
    );
}

#[test]
fn overlapping_records() {
    // A size that runs into the next local header.
    let mut w = Writer::new(torch_like("archive"));
    w.descriptor = true;
    w.entries[0].cd_size = Some(w.entries[0].data.len() as u64 + 20);
    expect(
        &w.build().bytes,
        ErrorKind::Format,
        &["overlap", "archive/data.pkl", "archive/.format_version"],
    );

    // A central directory entry pointing at a local header planted inside another record.
    let mut entries = torch_like("archive");
    let mut planted = local_header("archive/hidden");
    planted.extend_from_slice(b"12345678");
    entries.push(Entry::new("archive/data/2", &planted));
    let mut hidden = Entry::new("archive/hidden", b"12345678");
    hidden.write_local = false;
    entries.push(hidden);
    let mut w = Writer::new(entries);
    w.descriptor = true;
    let host = w.build().data_offsets[7];
    w.entries[8].cd_offset = Some(host);
    expect(
        &w.build().bytes,
        ErrorKind::Format,
        &["overlap", "archive/data/2", "archive/hidden"],
    );

    // Two entries sharing one local header (and names differing): caught by the name check;
    // same name twice: caught as a duplicate.
    let mut w = Writer::new(torch_like("archive"));
    w.entries
        .push(Entry::new("archive/data/0", &[1, 2, 3, 4, 5, 6, 7, 8]));
    let lh = w.build().local_offsets[4];
    w.entries[7].write_local = false;
    w.entries[7].cd_offset = Some(lh);
    expect(&w.build().bytes, ErrorKind::Format, &["duplicate"]);
}

#[test]
fn junk_after_end_record() {
    for junk in [&b"x"[..], b"\0\0\0\0", &[7u8; 100]] {
        let mut bytes = Writer::new(torch_like("archive")).build().bytes;
        bytes.extend_from_slice(junk);
        expect(&bytes, ErrorKind::Format, &["junk"]);
    }
    let mut bytes = TINY_TORCH.to_vec();
    bytes.push(0);
    expect(&bytes, ErrorKind::Format, &["junk"]);
    // A comment length that claims more than is there.
    let mut built = Writer::new(torch_like("archive")).build();
    set_u16(&mut built.bytes, built.eocd + 20, 5);
    expect(&built.bytes, ErrorKind::Format, &[]);
}

#[test]
fn entry_outside_prefix() {
    let mut entries = torch_like("archive");
    entries.insert(3, Entry::new("other/byteorder", b"big"));
    expect(
        &Writer::new(entries).build().bytes,
        ErrorKind::Format,
        &["other/byteorder", "'archive/'"],
    );
    // A name that only shares the prefix's characters.
    let mut entries = torch_like("archive");
    entries.push(Entry::new("archive2/data/0", b""));
    expect(
        &Writer::new(entries).build().bytes,
        ErrorKind::Format,
        &["archive2/data/0"],
    );
    // First entry with no folder.
    let entries = vec![Entry::new("data.pkl", b"")];
    expect(
        &Writer::new(entries).build().bytes,
        ErrorKind::Format,
        &["top-level folder"],
    );
}

#[test]
fn bad_names() {
    for name in [
        "archive/../etc/passwd",
        "archive/data/..",
        "/archive/data.pkl",
    ] {
        let mut entries = torch_like("archive");
        entries.push(Entry::new(name, b""));
        expect(
            &Writer::new(entries).build().bytes,
            ErrorKind::Format,
            &[name],
        );
    }
    let mut entries = torch_like("archive");
    entries.push(Entry::new("archive/a\0b", b""));
    expect(
        &Writer::new(entries).build().bytes,
        ErrorKind::Format,
        &["NUL"],
    );
    // Invalid UTF-8: patch one byte of a central directory name.
    let mut built = Writer::new(torch_like("archive")).build();
    let at = built.cd_entries[3] + 46 + "archive/".len();
    built.bytes[at] = 0xFF;
    expect(
        &built.bytes,
        ErrorKind::Format,
        &["UTF-8", &built.cd_entries[3].to_string()],
    );
}

#[test]
fn huge_zip64_sizes() {
    for size in [1u64 << 62, (1 << 62) + 12345, u64::MAX, u64::MAX - 100] {
        let mut w = Writer::new(torch_like("archive"));
        w.zip64 = true;
        w.descriptor = true;
        w.zip64_extras = true;
        w.entries[4].cd_size = Some(size);
        expect(&w.build().bytes, ErrorKind::Format, &["archive/data/0"]);
    }
    // A zip64 extra field too short for the fields the sentinels call for.
    let mut w = Writer::new(torch_like("archive"));
    w.zip64 = true;
    w.zip64_extras = true;
    let mut built = w.build();
    let cd = built.cd_entries[2];
    let name_len = "archive/.storage_alignment".len();
    set_u16(&mut built.bytes, cd + 46 + name_len + 2, 8);
    expect(
        &built.bytes,
        ErrorKind::Format,
        &["archive/.storage_alignment"],
    );
    // Sentinel without any zip64 extra.
    let mut built = Writer::new(torch_like("archive")).build();
    set_u32(&mut built.bytes, built.cd_entries[1] + 24, 0xFFFF_FFFF);
    expect(
        &built.bytes,
        ErrorKind::Format,
        &["archive/.format_version", "zip64"],
    );
}

#[test]
fn end_record_checks() {
    // Multi-disk: classic record.
    let mut built = Writer::new(torch_like("archive")).build();
    set_u16(&mut built.bytes, built.eocd + 4, 1);
    expect(&built.bytes, ErrorKind::Unsupported, &["multi-disk"]);
    // Multi-disk: zip64 locator says 2 disks.
    let mut w = Writer::new(torch_like("archive"));
    w.zip64 = true;
    let mut built = w.build();
    set_u32(&mut built.bytes, built.eocd - 4, 2);
    expect(&built.bytes, ErrorKind::Unsupported, &["multi-disk"]);
    // Classic record disagrees with the zip64 record.
    let mut built = w.build();
    set_u32(&mut built.bytes, built.eocd + 16, 3);
    expect(&built.bytes, ErrorKind::Format, &["disagrees"]);
    // Sentinels in the classic record are fine.
    let mut built = w.build();
    set_u16(&mut built.bytes, built.eocd + 8, 0xFFFF);
    set_u16(&mut built.bytes, built.eocd + 10, 0xFFFF);
    set_u32(&mut built.bytes, built.eocd + 12, 0xFFFF_FFFF);
    set_u32(&mut built.bytes, built.eocd + 16, 0xFFFF_FFFF);
    ok(&built.bytes);
    // The zip64 locator pointing nowhere.
    let mut built = w.build();
    let at = built.eocd - 12;
    built.bytes[at..at + 8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    expect(&built.bytes, ErrorKind::Format, &["zip64"]);
    // Entry count that does not match the directory.
    let mut built = Writer::new(torch_like("archive")).build();
    set_u16(&mut built.bytes, built.eocd + 8, 6);
    set_u16(&mut built.bytes, built.eocd + 10, 6);
    expect(&built.bytes, ErrorKind::Format, &["unexplained"]);
    let mut built = Writer::new(torch_like("archive")).build();
    set_u16(&mut built.bytes, built.eocd + 8, 8);
    set_u16(&mut built.bytes, built.eocd + 10, 8);
    expect(&built.bytes, ErrorKind::Format, &[]);
    // A huge entry count in a tiny directory is not allocated.
    let mut w = Writer::new(torch_like("archive"));
    w.zip64 = true;
    let mut built = w.build();
    let z64 = built.eocd - 20 - 56;
    for field in [24, 32] {
        built.bytes[z64 + field..z64 + field + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    }
    set_u16(&mut built.bytes, built.eocd + 8, 0xFFFF);
    set_u16(&mut built.bytes, built.eocd + 10, 0xFFFF);
    let e = parse(
        &built.bytes,
        &ZipLimits {
            max_records: usize::MAX,
        },
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Format, "{e}");
    assert_eq!(err(&built.bytes).kind, ErrorKind::Limit);
}

#[test]
fn ambiguous_end_records() {
    // A comment that holds a second end record which also reaches the end of the file,
    // with a comment of its own: two candidates, neither of them the plain last 22 bytes.
    let mut w = Writer::new(torch_like("archive"));
    let mut fake = 0x0605_4b50u32.to_le_bytes().to_vec();
    fake.extend_from_slice(&[0; 16]);
    fake.extend_from_slice(&2u16.to_le_bytes());
    fake.extend_from_slice(b"!!");
    w.comment = fake;
    expect(&w.build().bytes, ErrorKind::Format, &["ambiguous"]);

    // A comment that is itself a comment-less end record in the last 22 bytes: torch and
    // Python's zipfile both read that last record (here: an empty directory), so does this.
    let mut w = Writer::new(torch_like("archive"));
    let mut fake = 0x0605_4b50u32.to_le_bytes().to_vec();
    fake.extend_from_slice(&[0; 18]);
    w.comment = fake;
    expect(&w.build().bytes, ErrorKind::Format, &["no records"]);
}

#[test]
fn data_with_the_wrong_slice_is_an_error() {
    let a = ok(TINY_TORCH);
    let r = a.get("data/0").unwrap();
    let err = a.data(&TINY_TORCH[..100], r).unwrap_err();
    assert!(
        err.message.contains("outside the given slice"),
        "{}",
        err.message
    );
}

#[test]
fn directory_entries() {
    let mut entries = torch_like("archive");
    entries.insert(0, Entry::new("archive/", b""));
    entries.insert(1, Entry::new("archive/data/", b""));
    let a = ok(&Writer::new(entries).build().bytes);
    assert_eq!(a.prefix(), "archive");
    assert_eq!(a.get("data/").map(|r| r.size), Some(0));
    let mut entries = torch_like("archive");
    entries.push(Entry::new("archive/dir/", b"data"));
    expect(
        &Writer::new(entries).build().bytes,
        ErrorKind::Format,
        &["directory"],
    );
}

/// Names equal up to ASCII case are one record to torch's reader (miniz compares
/// `MZ_TOLOWER` bytes), which would pick one of them by its sort order: refused, whichever
/// comes first, on the numbered path (`data/<n>`) and the hashed one alike.
#[test]
fn names_equal_up_to_ascii_case_are_refused() {
    for (first, second) in [
        ("data.pkl", "DATA.PKL"),
        ("data.pkl", "Data.pkl"),
        ("data/0", "DATA/0"),
        ("data/0", "dAtA/0"),
        ("data/1", "Data/1"),
        ("byteorder", "BYTEORDER"),
        (".format_version", ".FORMAT_VERSION"),
        (".data/serialization_id", ".DATA/serialization_id"),
        ("data/x", "DATA/X"),
        ("data/99999", "DATA/99999"),
        ("code/__torch__/m.py", "CODE/__torch__/M.py"),
    ] {
        for (a, b) in [(first, second), (second, first)] {
            let mut entries = torch_like("archive");
            entries.retain(|e| !e.name.eq_ignore_ascii_case(&format!("archive/{a}")));
            entries.insert(1, Entry::new(&format!("archive/{a}"), b"one"));
            entries.push(Entry::new(&format!("archive/{b}"), b"two"));
            let bytes = Writer::new(entries).build().bytes;
            let e = expect(
                &bytes,
                ErrorKind::Format,
                &[
                    &format!("'archive/{a}'"),
                    &format!("'archive/{b}'"),
                    "differ only in case",
                    "miniz",
                ],
            );
            assert!(!e.message.contains("duplicate"), "{e}");
        }
    }
}

/// Lookup ignores ASCII case, as torch's does: `DATA.PKL`, `BYTEORDER`, `Data/0` alone are the
/// records torch reads for `data.pkl`, `byteorder`, `data/0`. Other bytes are compared as
/// they are (miniz folds ASCII only).
#[test]
fn lookup_ignores_ascii_case_only() {
    let entries = vec![
        Entry::new("archive/DATA.PKL", b"pickle"),
        Entry::new("archive/BYTEORDER", b"big"),
        Entry::new("archive/Data/0", b"zero"),
        Entry::new("archive/DATA/1", b"one"),
        Entry::new("archive/data/Ab", b"ab"),
        Entry::new("archive/DATA/77", b"seventy-seven"),
        Entry::new("archive/data/\u{c9}", b"e-acute"),
        Entry::new("archive/data/\u{e9}", b"small-e-acute"),
        Entry::new("archive/.Data/Version", b"3"),
    ];
    let bytes = Writer::new(entries).build().bytes;
    let a = ok(&bytes);
    let text = |r: Option<ZipRecord<'_>>| a.data(&bytes, r.unwrap()).unwrap().to_vec();
    for name in ["data.pkl", "DATA.PKL", "Data.Pkl"] {
        assert_eq!(text(a.get(name)), b"pickle", "{name}");
    }
    assert_eq!(a.text(&bytes, "byteorder").unwrap().as_deref(), Some("big"));
    assert_eq!(text(a.storage_record("0")), b"zero");
    assert_eq!(text(a.get("data/0")), b"zero");
    assert_eq!(text(a.get("DATA/0")), b"zero");
    assert_eq!(text(a.storage_record("1")), b"one");
    assert_eq!(text(a.storage_record("ab")), b"ab");
    assert_eq!(text(a.storage_record("AB")), b"ab");
    assert_eq!(text(a.storage_record("77")), b"seventy-seven");
    assert_eq!(text(a.storage_record("\u{c9}")), b"e-acute");
    assert_eq!(text(a.storage_record("\u{e9}")), b"small-e-acute");
    assert_eq!(text(a.get(".data/version")), b"3");
    assert!(a.get("data/2").is_none() && a.get("dat/0").is_none());
    assert!(a.get("data.pk").is_none() && a.get("data.pkl ").is_none());
}

/// torch checks every record against the first one's folder byte for byte
/// ("file in archive is not in a subdirectory"), so a folder spelled in another case is refused,
/// not folded.
#[test]
fn the_folder_is_compared_exactly() {
    let mut entries = torch_like("archive");
    entries.push(Entry::new("ARCHIVE/data/9", b"x"));
    expect(
        &Writer::new(entries).build().bytes,
        ErrorKind::Format,
        &["ARCHIVE/data/9", "'archive/'"],
    );
}
