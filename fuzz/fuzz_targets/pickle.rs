//! The pickle machine alone: arbitrary bytes as one pickle, then visit every node built.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mmckpt::pickle::{self, Arena, PickleLimits};

fuzz_target!(|data: &[u8]| {
    let mut arena = Arena::new();
    if let Ok((root, used)) = pickle::load(&mut arena, data, &PickleLimits::default()) {
        assert!(used <= data.len());
        assert!((root as usize) < arena.len());
        for id in 0..arena.len() as pickle::NodeId {
            let _ = arena.as_str(id);
            let _ = arena.as_int(id);
            let _ = arena.as_seq(id);
            let _ = arena.global_name(id);
            let _ = mmckpt::tree::children(&arena, id);
        }
    }
});
