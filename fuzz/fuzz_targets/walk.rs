//! Open a fuzzed checkpoint and walk it fully: every name looked up, every tensor's bytes read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmckpt::{Checkpoint, OpenOptions};

fuzz_target!(|data: &[u8]| {
    let Ok(ckpt) = Checkpoint::from_bytes(data, &OpenOptions::default()) else {
        return;
    };
    mmckpt_fuzz_walk(&ckpt, data.len());
});

fn mmckpt_fuzz_walk(ckpt: &Checkpoint, file_len: usize) {
    let mut sum = 0u64;
    for i in 0..ckpt.len() {
        let name = ckpt.name_at(i).expect("index in range").to_owned();
        let by_name = ckpt.index_of(&name).expect("every name is found");
        assert!(by_name <= i, "a name maps to its first entry");
        let Ok(t) = ckpt.tensor_at(i) else { continue };
        if let Some(off) = t.file_offset() {
            assert!(off + t.desc.span_bytes() <= file_len as u64);
        }
        let bytes = t.bytes();
        assert_eq!(bytes.len() as u64, t.desc.span_bytes());
        // A cap keeps one stride-0 tensor from asking for terabytes: the copy itself is tested
        // by the strided unit tests; here the bounds matter.
        let logical = t.desc.numel.saturating_mul(t.desc.dtype.itemsize() as u64);
        if logical <= 1 << 24 {
            let c = t.contiguous_bytes();
            assert_eq!(c.len() as u64, logical);
            sum = c.iter().fold(sum, |s, &b| s.wrapping_add(b as u64));
        }
    }
    std::hint::black_box(sum);
}
