//! The zip container alone: parse arbitrary bytes, then read every record's data.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmckpt::container::zip::{self, ZipLimits};

fuzz_target!(|data: &[u8]| {
    if let Ok(archive) = zip::parse(data, &ZipLimits::default()) {
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
