//! The zip container alone: parse arbitrary bytes, then read every record's data. Parsing with
//! local headers read through a reader (as a mapped file with sparse records is parsed) must
//! give exactly the same archive or error.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmckpt::container::zip::{self, HeaderReads, ZipLimits};

fuzz_target!(|data: &[u8]| {
    let parsed = zip::parse(data, &ZipLimits::default());
    let read_at = zip::read_from(data);
    let reads = HeaderReads {
        read_at: &read_at,
        min_spacing: 0,
    };
    match (&parsed, &zip::parse_with(data, &ZipLimits::default(), Some(reads))) {
        (Ok(a), Ok(b)) => assert!(a.records().eq(b.records())),
        (Err(a), Err(b)) => assert_eq!((a.kind, &a.message), (b.kind, &b.message)),
        (a, b) => panic!("parse and parse_with disagree: {a:?} / {b:?}"),
    }
    if let Ok(archive) = parsed {
        for record in archive.records() {
            if let Ok(bytes) = archive.data(data, record) {
                assert_eq!(bytes.len() as u64, record.size);
                assert!(record.data_offset + record.size <= data.len() as u64);
            }
        }
        let _ = archive.get("data.pkl");
        let _ = archive.text(data, "byteorder");
    }
});
