//! `LoadOptions::contiguous` on tests/fixtures/transposed.pt (facenet-pytorch-like layouts saved
//! as-is): every entry becomes row-major, strided ones are copied (and named in the report),
//! row-major ones stay zero-copy views; without it the checkpoint's strides are kept.

use mmckpt::{Checkpoint, LoadOptions, Module, OpenOptions};

fn open() -> Checkpoint {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/transposed.pt");
    Checkpoint::open(path, &OpenOptions::default()).unwrap()
}

#[test]
fn contiguous_assign_relays_out_only_strided_entries() {
    let ckpt = open();
    let mut module = Module::from_checkpoint(&ckpt).unwrap();
    let options = LoadOptions {
        assign: true,
        contiguous: true,
        ..LoadOptions::default()
    };
    let report = module.load(&ckpt, &options).unwrap();
    assert_eq!(
        report.copied_keys(),
        ["conv1.weight", "fc.weight", "strided", "half_t"]
    );
    for entry in module.entries() {
        let tensor = ckpt.tensor(entry.name()).unwrap();
        assert!(entry.is_contiguous(), "{}", entry.name());
        assert_eq!(
            entry.dtype(),
            tensor.dtype(),
            "assign keeps the checkpoint's dtype"
        );
        assert_eq!(entry.storage_offset(), 0);
        let row_major = tensor.contiguous_bytes();
        assert_eq!(entry.bytes().unwrap(), &*row_major, "{}", entry.name());
        let copied = report.copied_keys().iter().any(|k| k == entry.name());
        assert_eq!(copied, !tensor.is_contiguous(), "{}", entry.name());
        assert_eq!(entry.is_mapped(), !copied, "{}", entry.name());
    }
}

#[test]
fn without_contiguous_the_checkpoint_strides_are_kept() {
    let ckpt = open();
    let mut module = Module::from_checkpoint(&ckpt).unwrap();
    let options = LoadOptions {
        assign: true,
        ..LoadOptions::default()
    };
    let report = module.load(&ckpt, &options).unwrap();
    assert!(report.copied_keys().is_empty());
    let conv = module.get("conv1.weight").unwrap();
    assert_eq!(conv.strides(), [1, 10, 30, 90]);
    assert!(!conv.is_contiguous() && conv.is_mapped());
}
