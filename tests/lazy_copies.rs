//! Storages that cannot be handed out as they are (misaligned in a legacy file, big-endian)
//! are copied when one of their tensors is first asked for, not at open: opening costs
//! metadata only. The copy is made once, even when threads ask at once, and covers only that
//! tensor's storage. `accept_unaligned` hands misaligned little-endian storages out as they are.

mod common;

use common::fixture;
use mmckpt::{Checkpoint, OpenOptions};
use std::sync::Barrier;

fn open(name: &str, options: &OpenOptions) -> Checkpoint {
    Checkpoint::open(fixture(name), options).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The index of the first entry whose storage is copied on first use (asking for the tensors
/// before it, which copies theirs).
fn first_deferred(ckpt: &Checkpoint) -> usize {
    (0..ckpt.len())
        .find(|&i| {
            let pending = ckpt.copies_pending();
            ckpt.tensor_at(i).is_ok() && ckpt.copies_pending() < pending
        })
        .expect("a storage copied on first use")
}

#[test]
fn opening_copies_nothing_and_a_tensor_copies_only_its_storage() {
    for file in ["legacy_odd.pt", "bigendian.pt"] {
        let ckpt = open(file, &OpenOptions::default());
        let pending = ckpt.copies_pending();
        assert!(pending > 0, "{file}: no storage waits for a copy");
        assert_eq!(ckpt.copied_bytes(), 0, "{file}: opening copied");
        let mut copied = 0u64;
        for i in 0..ckpt.len() {
            let before = (ckpt.copies_pending(), ckpt.copied_bytes());
            let t = ckpt.tensor_at(i).unwrap();
            let after = (ckpt.copies_pending(), ckpt.copied_bytes());
            if after.0 < before.0 {
                // This tensor's storage, and nothing else, was copied; it is no longer mapped.
                assert_eq!(after.0, before.0 - 1, "{file}: {}", t.name());
                assert_eq!(
                    after.1 - before.1,
                    t.storage_nbytes() as u64,
                    "{}",
                    t.name()
                );
                assert!(!t.is_mapped() && t.file_offset().is_none(), "{}", t.name());
                copied += t.storage_nbytes() as u64;
            } else {
                assert_eq!(after, before, "{file}: {} copied another storage", t.name());
            }
            let itemsize = t.dtype().itemsize().min(8);
            assert_eq!(t.data_ptr() as usize % itemsize, 0, "{}", t.name());
            // Asking again copies nothing and gives the same bytes.
            let again = ckpt.tensor_at(i).unwrap();
            assert_eq!(again.data_ptr(), t.data_ptr(), "{}", t.name());
            assert_eq!(ckpt.copied_bytes(), after.1);
        }
        assert_eq!(ckpt.copies_pending(), 0, "{file}");
        assert_eq!(ckpt.copied_bytes(), copied, "{file}");
    }
}

#[test]
fn threads_asking_for_the_same_tensor_at_once_share_one_copy() {
    for file in ["legacy_odd.pt", "bigendian.pt"] {
        for round in 0..20 {
            let ckpt = open(file, &OpenOptions::default());
            // The first deferred entry, found on a second handle (finding it copies).
            let index = first_deferred(&open(file, &OpenOptions::default()));
            assert!(ckpt.copied_bytes() == 0 && ckpt.copies_pending() > 0);
            let threads = 8;
            let barrier = Barrier::new(threads);
            let seen: Vec<(usize, Vec<u8>)> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..threads)
                    .map(|_| {
                        scope.spawn(|| {
                            barrier.wait();
                            let t = ckpt.tensor_at(index).unwrap();
                            (t.data_ptr() as usize, t.bytes().to_vec())
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert!(
                seen.iter().all(|s| *s == seen[0]),
                "{file} round {round}: threads saw different copies"
            );
            let t = ckpt.tensor_at(index).unwrap();
            assert_eq!(t.data_ptr() as usize, seen[0].0);
            assert_eq!(
                ckpt.copied_bytes(),
                t.storage_nbytes() as u64,
                "{file}: copied twice"
            );
        }
    }
}

#[test]
fn accept_unaligned_hands_out_misaligned_little_endian_storages_as_they_are() {
    let unaligned = OpenOptions {
        accept_unaligned: true,
        ..OpenOptions::default()
    };
    let plain = open("legacy_odd.pt", &OpenOptions::default());
    let ckpt = open("legacy_odd.pt", &unaligned);
    assert_eq!(ckpt.copies_pending(), 0, "nothing left to copy");
    let mut misaligned = 0;
    for i in 0..ckpt.len() {
        let (t, p) = (ckpt.tensor_at(i).unwrap(), plain.tensor_at(i).unwrap());
        assert!(t.is_mapped(), "{}: copied", t.name());
        assert_eq!(t.bytes(), p.bytes(), "{}: other values", t.name());
        if t.data_ptr() as usize % t.dtype().itemsize().min(8) != 0 {
            misaligned += 1;
            assert!(
                !p.is_mapped(),
                "{}: the plain open maps a misaligned storage",
                t.name()
            );
        }
    }
    assert!(misaligned > 0, "legacy_odd.pt has misaligned storages");
    assert_eq!(ckpt.copied_bytes(), 0);

    // Big-endian storages still need their swap.
    let big = open("bigendian.pt", &unaligned);
    assert!(big.copies_pending() > 0);
    let plain_big = open("bigendian.pt", &OpenOptions::default());
    for i in 0..big.len() {
        let (t, p) = (big.tensor_at(i).unwrap(), plain_big.tensor_at(i).unwrap());
        assert_eq!(t.bytes(), p.bytes(), "{}", t.name());
    }
}
