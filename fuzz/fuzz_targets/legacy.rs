//! The legacy (pre-zip) stream reader: inputs are forced onto that path by starting with a
//! pickle PROTO opcode, so every mutation exercises the magic/version/sys-info/keys/storages walk.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmckpt::{Checkpoint, OpenOptions};

fuzz_target!(|data: &[u8]| {
    if data.first() != Some(&0x80) {
        return;
    }
    let Ok(ckpt) = Checkpoint::from_bytes(data, &OpenOptions::default()) else {
        return;
    };
    for i in 0..ckpt.len() {
        if let Ok(t) = ckpt.tensor_at(i) {
            // The span lies inside the storage, which lies inside the input or an owned copy.
            std::hint::black_box(t.bytes().iter().fold(0u8, |a, &b| a ^ b));
        }
    }
});
