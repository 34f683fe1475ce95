//! Module-layer tests over checkpoints built with `Checkpoint::from_parts` (no zip or pickle
//! code involved). Expected spec entries, report texts and conversion bits were produced with
//! torch 2.15 (`~/.cache/mmckpt/venv/bin/python`) and pasted in.

use super::convert::convert;
use super::*;
use crate::error::ErrorKind;
use crate::torch::TensorDesc;

fn desc(dtype: DType, shape: &[i64], strides: &[i64], offset: i64, storage: usize) -> TensorDesc {
    TensorDesc {
        dtype,
        shape: shape.into(),
        strides: strides.into(),
        storage_offset: offset,
        numel: shape.iter().product::<i64>() as u64,
        storage,
        requires_grad: false,
        is_parameter: false,
        conj: false,
        neg: false,
    }
}

fn f32s(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
fn as_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// A checkpoint laid out (file order) as: storage 0 = `b.weight` [2,3] f32 at 0..24 (also tied
/// as `tied` and transposed as `t` [3,2]); storage 1 = `a.weight` [4] f32 at 64..80; storage 2 =
/// `a.bias` [2] int64 at 128..144.
fn sample() -> Checkpoint {
    let mut bytes = vec![0u8; 192];
    bytes[0..24].copy_from_slice(&f32s(&[1., 2., 3., 4., 5., 6.]));
    bytes[64..80].copy_from_slice(&f32s(&[7., 8., 9., 10.]));
    bytes[128..136].copy_from_slice(&11i64.to_le_bytes());
    bytes[136..144].copy_from_slice(&12i64.to_le_bytes());
    Checkpoint::from_parts(
        &bytes,
        &[(0, 24), (64, 16), (128, 16)],
        vec![
            ("a.weight".into(), desc(DType::Float32, &[4], &[1], 0, 1)),
            (
                "b.weight".into(),
                desc(DType::Float32, &[2, 3], &[3, 1], 0, 0),
            ),
            ("a.bias".into(), desc(DType::Int64, &[2], &[1], 0, 2)),
            ("tied".into(), desc(DType::Float32, &[2, 3], &[3, 1], 0, 0)),
            ("t".into(), desc(DType::Float32, &[3, 2], &[1, 3], 0, 0)),
        ],
    )
    .unwrap()
}

fn sample_module() -> Module {
    let mut m = Module::new("Net");
    m.add("a.weight", DType::Float32, &[4], EntryKind::Parameter)
        .unwrap();
    m.add("a.bias", DType::Int64, &[2], EntryKind::Parameter)
        .unwrap();
    m.add("b.weight", DType::Float32, &[2, 3], EntryKind::Parameter)
        .unwrap();
    m.add("tied", DType::Float32, &[2, 3], EntryKind::Parameter)
        .unwrap();
    m.add("t", DType::Float32, &[3, 2], EntryKind::Parameter)
        .unwrap();
    m
}

fn assign() -> LoadOptions {
    LoadOptions {
        assign: true,
        ..LoadOptions::default()
    }
}

/// Everything observable about a module's entries, to prove "unchanged".
/// Name, dtype, strides, data address, storage id, bytes.
type Fingerprint = (String, DType, Vec<i64>, usize, u64, Option<Vec<u8>>);

fn fingerprint(m: &Module) -> Vec<Fingerprint> {
    m.entries()
        .iter()
        .map(|e| {
            (
                e.name().to_string(),
                e.dtype(),
                e.strides().to_vec(),
                e.data_ptr() as usize,
                e.storage_id(),
                e.bytes().map(<[u8]>::to_vec),
            )
        })
        .collect()
}

fn entries_of(m: &Module) -> Vec<(String, Vec<i64>, &'static str, bool)> {
    m.entries()
        .iter()
        .map(|e| {
            (
                e.name().to_string(),
                e.shape().to_vec(),
                e.dtype().name(),
                e.is_buffer(),
            )
        })
        .collect()
}

type SpecEntry = (String, Vec<i64>, &'static str);

fn spec_entries(json: &str) -> Vec<SpecEntry> {
    let m = Module::from_spec(json).unwrap();
    assert!(m.entries().iter().all(|e| !e.has_data()));
    entries_of(&m)
        .into_iter()
        .filter(|e| m.get(&e.0).unwrap().is_persistent())
        .map(|(n, s, d, _)| (n, s, d))
        .collect()
}

fn e(name: &str, shape: &[i64], dtype: &'static str) -> (String, Vec<i64>, &'static str) {
    (name.to_string(), shape.to_vec(), dtype)
}

#[test]
fn spec_layer_table_matches_torch_state_dicts() {
    let f = "float32";
    let cases: Vec<(&str, Vec<SpecEntry>)> = vec![
        (
            r#"{"type":"Linear","in_features":3,"out_features":4}"#,
            vec![e("weight", &[4, 3], f), e("bias", &[4], f)],
        ),
        (
            r#"{"type":"Linear","in_features":3,"out_features":4,"bias":false}"#,
            vec![e("weight", &[4, 3], f)],
        ),
        (
            r#"{"type":"Conv1d","in_channels":4,"out_channels":6,"kernel_size":3,"groups":2}"#,
            vec![e("weight", &[6, 2, 3], f), e("bias", &[6], f)],
        ),
        (
            r#"{"type":"Conv2d","in_channels":3,"out_channels":8,"kernel_size":[3,5],"bias":false}"#,
            vec![e("weight", &[8, 3, 3, 5], f)],
        ),
        (
            r#"{"type":"Conv3d","in_channels":2,"out_channels":4,"kernel_size":2}"#,
            vec![e("weight", &[4, 2, 2, 2, 2], f), e("bias", &[4], f)],
        ),
        (
            r#"{"type":"ConvTranspose1d","in_channels":4,"out_channels":6,"kernel_size":3,"groups":2}"#,
            vec![e("weight", &[4, 3, 3], f), e("bias", &[6], f)],
        ),
        (
            r#"{"type":"ConvTranspose2d","in_channels":3,"out_channels":8,"kernel_size":[3,5]}"#,
            vec![e("weight", &[3, 8, 3, 5], f), e("bias", &[8], f)],
        ),
        (
            r#"{"type":"ConvTranspose3d","in_channels":2,"out_channels":4,"kernel_size":2,"bias":false}"#,
            vec![e("weight", &[2, 4, 2, 2, 2], f)],
        ),
        (
            r#"{"type":"Embedding","num_embeddings":10,"embedding_dim":3}"#,
            vec![e("weight", &[10, 3], f)],
        ),
        (
            r#"{"type":"LayerNorm","normalized_shape":5}"#,
            vec![e("weight", &[5], f), e("bias", &[5], f)],
        ),
        (
            r#"{"type":"LayerNorm","normalized_shape":[2,3],"bias":false}"#,
            vec![e("weight", &[2, 3], f)],
        ),
        (
            r#"{"type":"LayerNorm","normalized_shape":4,"elementwise_affine":false}"#,
            vec![],
        ),
        (
            r#"{"type":"RMSNorm","normalized_shape":[2,3]}"#,
            vec![e("weight", &[2, 3], f)],
        ),
        (
            r#"{"type":"RMSNorm","normalized_shape":4,"elementwise_affine":false}"#,
            vec![],
        ),
        (
            r#"{"type":"GroupNorm","num_groups":2,"num_channels":6}"#,
            vec![e("weight", &[6], f), e("bias", &[6], f)],
        ),
        (
            r#"{"type":"GroupNorm","num_groups":2,"num_channels":6,"affine":false}"#,
            vec![],
        ),
        (
            r#"{"type":"BatchNorm1d","num_features":5}"#,
            vec![
                e("weight", &[5], f),
                e("bias", &[5], f),
                e("running_mean", &[5], f),
                e("running_var", &[5], f),
                e("num_batches_tracked", &[], "int64"),
            ],
        ),
        (
            r#"{"type":"BatchNorm2d","num_features":5,"affine":false}"#,
            vec![
                e("running_mean", &[5], f),
                e("running_var", &[5], f),
                e("num_batches_tracked", &[], "int64"),
            ],
        ),
        (
            r#"{"type":"BatchNorm3d","num_features":5,"track_running_stats":false}"#,
            vec![e("weight", &[5], f), e("bias", &[5], f)],
        ),
        (
            r#"{"type":"MultiheadAttention","embed_dim":8,"num_heads":2}"#,
            vec![
                e("in_proj_weight", &[24, 8], f),
                e("in_proj_bias", &[24], f),
                e("out_proj.weight", &[8, 8], f),
                e("out_proj.bias", &[8], f),
            ],
        ),
        (
            r#"{"type":"MultiheadAttention","embed_dim":8,"num_heads":2,"bias":false}"#,
            vec![
                e("in_proj_weight", &[24, 8], f),
                e("out_proj.weight", &[8, 8], f),
            ],
        ),
        (
            r#"{"type":"MultiheadAttention","embed_dim":8,"num_heads":2,"kdim":3,"vdim":5,"add_bias_kv":true}"#,
            vec![
                e("q_proj_weight", &[8, 8], f),
                e("k_proj_weight", &[8, 3], f),
                e("v_proj_weight", &[8, 5], f),
                e("in_proj_bias", &[24], f),
                e("bias_k", &[1, 1, 8], f),
                e("bias_v", &[1, 1, 8], f),
                e("out_proj.weight", &[8, 8], f),
                e("out_proj.bias", &[8], f),
            ],
        ),
        (r#"{"type":"PReLU"}"#, vec![e("weight", &[1], f)]),
        (
            r#"{"type":"PReLU","num_parameters":4}"#,
            vec![e("weight", &[4], f)],
        ),
        (
            r#"{"type":"Linear","in_features":3,"out_features":4,"dtype":"bfloat16"}"#,
            vec![
                e("weight", &[4, 3], "bfloat16"),
                e("bias", &[4], "bfloat16"),
            ],
        ),
        (
            r#"{"type":"BatchNorm1d","num_features":5,"dtype":"float16"}"#,
            vec![
                e("weight", &[5], "float16"),
                e("bias", &[5], "float16"),
                e("running_mean", &[5], "float16"),
                e("running_var", &[5], "float16"),
                e("num_batches_tracked", &[], "int64"),
            ],
        ),
    ];
    for (json, want) in cases {
        assert_eq!(spec_entries(json), want, "{json}");
    }
}

#[test]
fn spec_containers_inheritance_and_flat_form() {
    let recipe = r#"{"name": "SomeModule", "type": "Module", "children": {
       "linears": {"type": "ModuleList", "repeat": 10,
                   "item": {"type": "Linear", "in_features": 1000, "out_features": 1000}}}}"#;
    let m = Module::from_spec(recipe).unwrap();
    assert_eq!(m.name(), "SomeModule");
    assert_eq!(m.len(), 20);
    assert_eq!(m.entry_at(19).unwrap().name(), "linears.9.bias");
    assert!(m.entries().iter().all(|e| e.data_ptr().is_null()));

    // Own params and buffers come before children (torch's state-dict order), dtype inherits.
    let json = r#"{"type":"Module","name":"M","dtype":"float16","children":{
        "seq":{"type":"Sequential","items":[{"type":"Linear","in_features":2,"out_features":3,"dtype":"float64"},{"type":"ModuleDict","children":{}}]},
        "d":{"type":"ModuleDict","children":{"x":{"type":"Embedding","num_embeddings":4,"embedding_dim":2}}}},
      "params":{"scale":{"shape":[]}},
      "buffers":{"pos":{"shape":[3],"dtype":"int64"},"tmp":{"shape":[2],"persistent":false}}}"#;
    let m = Module::from_spec(json).unwrap();
    assert_eq!(
        entries_of(&m),
        vec![
            ("scale".into(), vec![], "float16", false),
            ("pos".into(), vec![3], "int64", true),
            ("tmp".into(), vec![2], "float16", true),
            ("seq.0.weight".into(), vec![3, 2], "float64", false),
            ("seq.0.bias".into(), vec![3], "float64", false),
            ("d.x.weight".into(), vec![4, 2], "float16", false),
        ]
    );
    assert!(!m.get("tmp").unwrap().is_persistent());

    let flat = r#"{"name":"Net","entries":[{"name":"linears.0.weight","shape":[4,2],"dtype":"bfloat16","kind":"parameter"},
        {"name":"bn.running_mean","shape":[2],"kind":"buffer"}]}"#;
    let m = Module::from_spec(flat).unwrap();
    assert_eq!(
        entries_of(&m),
        vec![
            ("linears.0.weight".into(), vec![4, 2], "bfloat16", false),
            ("bn.running_mean".into(), vec![2], "float32", true),
        ]
    );
}

#[test]
fn spec_errors_name_the_node_path() {
    let cases = [
        ("{not json", "not valid JSON"),
        (
            r#"{"type":"Module","children":{"enc":{"type":"Linearr","in_features":1,"out_features":1}}}"#,
            "'enc': unknown type 'Linearr'",
        ),
        (
            r#"{"type":"Module","children":{"l":{"type":"ModuleList","items":[{"type":"Linear","in_features":1}]}}}"#,
            "'l.0': missing argument 'out_features'",
        ),
        (
            r#"{"type":"Module","children":{"c":{"type":"Conv2d","in_channels":"3","out_channels":1,"kernel_size":1}}}"#,
            "'c': 'in_channels' must be a non-negative integer, not a string",
        ),
        (
            r#"{"type":"Module","children":{"e":{"type":"Embedding","num_embeddings":-1,"embedding_dim":2}}}"#,
            "'e': 'num_embeddings' is negative (-1)",
        ),
        (
            r#"{"type":"Module","children":{"x":{"type":"Linear","in_features":1.5,"out_features":1}}}"#,
            "'x': 'in_features' must be a non-negative integer, not a number with a fraction",
        ),
        (
            r#"{"type":"Module","params":{"w":{"shape":[2]}},"buffers":{"w":{"shape":[2]}}}"#,
            "duplicate entry name 'w'",
        ),
        (
            r#"{"entries":[{"name":"a","shape":[1]},{"name":"a","shape":[2]}]}"#,
            "entries[1]': duplicate entry name 'a'",
        ),
        (
            r#"{"type":"Module","children":{"a":{"type":"Linear","in_features":1,"out_features":1,"bias":1}}}"#,
            "'a': 'bias' must be true or false",
        ),
        (
            r#"{"type":"Module","children":{"a":{"type":"PReLU"},"a":{"type":"PReLU"}}}"#,
            "'children' has a duplicate member 'a'",
        ),
        (
            r#"{"type":"Module","params":{"w":{"shape":[2,-3]}}}"#,
            "'w': 'shape' is negative (-3)",
        ),
        (
            r#"{"type":"Linear","in_features":1,"out_features":1,"dtype":"float17"}"#,
            "unknown dtype 'float17'",
        ),
        (r#"[1,2]"#, "must be an object"),
    ];
    for (json, want) in cases {
        let err = Module::from_spec(json).err().unwrap();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{json}");
        assert!(err.message.contains(want), "{json}: {}", err.message);
    }
}

#[test]
fn add_validates_and_module_from_checkpoint_mirrors_the_table() {
    let mut m = Module::new("M");
    m.add("a.b", DType::Float32, &[2], EntryKind::Parameter)
        .unwrap();
    for (name, shape) in [("a.b", &[1][..]), ("", &[1]), ("x..y", &[1]), ("n", &[-1])] {
        let err = m
            .add(name, DType::Float32, shape, EntryKind::Parameter)
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{name}");
    }
    assert_eq!(m.len(), 1);
    let ckpt = sample();
    let m = Module::from_checkpoint(&ckpt).unwrap();
    assert_eq!(m.len(), 5);
    assert_eq!(m.get("a.bias").unwrap().dtype(), DType::Int64);
    assert_eq!(m.get("t").unwrap().shape(), &[3, 2]);
    assert!(!m.get("t").unwrap().has_data());
}

#[test]
fn report_wording_matches_torch() {
    let r = LoadReport {
        module_name: "M".into(),
        missing: vec!["s".into(), "x.bias".into()],
        unexpected: vec!["c".into(), "d".into()],
        ..LoadReport::default()
    };
    assert_eq!(
        r.message(),
        "_IncompatibleKeys(missing_keys=['s', 'x.bias'], unexpected_keys=['c', 'd'])"
    );
    let r = LoadReport {
        module_name: "Linear".into(),
        missing: vec!["weight".into(), "bias".into()],
        ..LoadReport::default()
    };
    assert_eq!(
        r.message(),
        "_IncompatibleKeys(missing_keys=['weight', 'bias'], unexpected_keys=[])"
    );
    assert_eq!(
        LoadReport::default().message(),
        "<All keys matched successfully>"
    );
    let r = LoadReport {
        module_name: "M".into(),
        missing: vec!["x.bias".into()],
        unexpected: vec!["e".into(), "f".into()],
        errors: vec![report::size_mismatch("x.weight", &[5, 3], &[4, 3])],
        strict: true,
        loaded: 0,
        copied: Vec::new(),
    };
    assert_eq!(
        r.message(),
        "Error(s) in loading state_dict for M:\n\tMissing key(s) in state_dict: \"x.bias\". \n\t\
         Unexpected key(s) in state_dict: \"e\", \"f\". \n\tsize mismatch for x.weight: copying a \
         param with shape torch.Size([5, 3]) from checkpoint, the shape in current model is \
         torch.Size([4, 3])."
    );
    assert_eq!(
        report::size_mismatch("s", &[3], &[]),
        "size mismatch for s: copying a param with shape torch.Size([3]) from checkpoint, the \
         shape in current model is torch.Size([])."
    );
    assert_eq!(report::py_repr("it's"), "\"it's\"");
    assert_eq!(report::py_repr("a'\"b"), "'a\\'\"b'");
}

#[test]
fn conversions_are_bit_identical_to_torch() {
    fn run(from: DType, to: DType, src: &[u8]) -> Vec<u8> {
        let n = src.len() / from.itemsize();
        let mut out = vec![0u8; n * to.itemsize()];
        convert(from, src, to, &mut out);
        out
    }
    fn u16s(b: &[u8]) -> Vec<u16> {
        b.chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect()
    }
    // float32 bits → torch's float16 / bfloat16 bits (ties, overflow, subnormals, inf, -0).
    let src: Vec<u32> = vec![
        0x3f802000, 0x3f801000, 0x3f803000, 0x477ff000, 0x477feffd, 0x33800000, 0x33000000,
        0x33000001, 0x000116c2, 0x7f800000, 0x80000000, 0x3f808000, 0x3f818000,
    ];
    let bytes: Vec<u8> = src.iter().flat_map(|v| v.to_le_bytes()).collect();
    assert_eq!(
        u16s(&run(DType::Float32, DType::Float16, &bytes)),
        vec![
            0x3c01, 0x3c00, 0x3c02, 0x7c00, 0x7bff, 0x1, 0x0, 0x1, 0x0, 0x7c00, 0x8000, 0x3c04,
            0x3c0c
        ]
    );
    assert_eq!(
        u16s(&run(DType::Float32, DType::BFloat16, &bytes)),
        vec![
            0x3f80, 0x3f80, 0x3f80, 0x4780, 0x4780, 0x3380, 0x3300, 0x3300, 0x1, 0x7f80, 0x8000,
            0x3f80, 0x3f82
        ]
    );
    // NaNs (torch's vectorised kernels): f32 → f16 keeps sign and top payload; → bf16 is 0xffff.
    let nans: Vec<u8> = [
        0x7fc00000u32,
        0xffc00000,
        0x7f800001,
        0x7fa00000,
        0x7fc12345,
    ]
    .iter()
    .flat_map(|v| v.to_le_bytes())
    .collect();
    assert_eq!(
        u16s(&run(DType::Float32, DType::Float16, &nans)),
        vec![0x7e00, 0xfe00, 0x7e00, 0x7f00, 0x7e09]
    );
    assert_eq!(
        u16s(&run(DType::Float32, DType::BFloat16, &nans)),
        vec![0xffff; 5]
    );
    // bfloat16 → float32 is a shift (signalling NaNs stay signalling); → float16 via float32.
    let bf: Vec<u8> = [
        0x3f80u16, 0x3f81, 0x0001, 0x7f80, 0xff80, 0x8000, 0x7f81, 0xffd5,
    ]
    .iter()
    .flat_map(|v| v.to_le_bytes())
    .collect();
    assert_eq!(
        as_f32(&run(DType::BFloat16, DType::Float32, &bf))[..2],
        [1.0, 1.0078125]
    );
    assert_eq!(
        run(DType::BFloat16, DType::Float32, &bf)[24..32],
        [0, 0, 0x81, 0x7f, 0, 0, 0xd5, 0xff]
    );
    assert_eq!(
        u16s(&run(DType::BFloat16, DType::Float16, &bf)),
        vec![0x3c00, 0x3c08, 0x0, 0x7c00, 0xfc00, 0x8000, 0x7e08, 0xfea8]
    );
    // float64 → float16 / bfloat16 round through float32 as torch does.
    let d: Vec<u8> = [
        0x3ff0080000000001u64,
        0x3ff0100000000001,
        0x7ff4000000000000,
    ]
    .iter()
    .flat_map(|v| v.to_le_bytes())
    .collect();
    assert_eq!(u16s(&run(DType::Float64, DType::Float16, &d))[2], 0x7f00);
    assert_eq!(u16s(&run(DType::Float64, DType::BFloat16, &d))[2], 0xffff);
    // float16 → bfloat16: every NaN is 0x7fc0.
    let h: Vec<u8> = [0x7e00u16, 0xfe00, 0x3c00]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(
        u16s(&run(DType::Float16, DType::BFloat16, &h)),
        vec![0x7fc0, 0x7fc0, 0x3f80]
    );
    // Large tensors take the two-thread path and give the same bytes.
    let n = convert::PARALLEL_THRESHOLD / 2 + 3;
    let big: Vec<u8> = (0..n as u32)
        .flat_map(|i| (i as f32 * 0.37).to_le_bytes())
        .collect();
    let two = run(DType::Float32, DType::BFloat16, &big);
    let mut one = vec![0u8; two.len()];
    for (s, d) in big.chunks(4096).zip(one.chunks_mut(2048)) {
        convert(DType::Float32, s, DType::BFloat16, d);
    }
    assert_eq!(one, two);
}

#[test]
fn assign_binds_views_keeps_aliasing_and_outlives_the_checkpoint() {
    let ckpt = sample();
    let mut m = sample_module();
    let mut order = Vec::new();
    let mut record = |e: &Entry| {
        order.push(e.name().to_string());
        true
    };
    let report = m.load_with(&ckpt, &assign(), Some(&mut record)).unwrap();
    assert_eq!(report.message(), "<All keys matched successfully>");
    assert_eq!(report.loaded(), 5);
    // File-offset order: storage 0 (b.weight, tied, t — table order on ties), then a.*.
    assert_eq!(order, ["b.weight", "tied", "t", "a.weight", "a.bias"]);
    for (name, _) in ckpt.iter() {
        let t = ckpt.tensor(name).unwrap();
        let entry = m.get(name).unwrap();
        assert_eq!(entry.data_ptr(), t.data_ptr(), "{name}");
        assert_eq!(entry.storage_id(), t.storage.id);
        assert_eq!(entry.strides(), &*t.desc.strides);
        assert_eq!(entry.file_offset(), t.file_offset());
    }
    assert_eq!(
        m.get("tied").unwrap().storage_id(),
        m.get("b.weight").unwrap().storage_id()
    );
    assert!(!m.get("t").unwrap().is_contiguous());
    drop(ckpt);
    assert_eq!(
        as_f32(m.get("a.weight").unwrap().bytes().unwrap()),
        [7., 8., 9., 10.]
    );
}

#[test]
fn assign_with_convert_keeps_declared_dtypes() {
    let ckpt = sample();
    let mut m = sample_module();
    let mut m2 = Module::new("Net");
    for e in m.entries() {
        let dtype = if e.name() == "b.weight" {
            DType::BFloat16
        } else {
            e.dtype()
        };
        m2.add(e.name(), dtype, e.shape(), e.kind()).unwrap();
    }
    let opts = LoadOptions {
        convert: true,
        ..assign()
    };
    m2.load(&ckpt, &opts).unwrap();
    let b = m2.get("b.weight").unwrap();
    assert_eq!(b.dtype(), DType::BFloat16);
    assert_eq!(
        b.bytes().unwrap(),
        &[0x80, 0x3f, 0, 0x40, 0x40, 0x40, 0x80, 0x40, 0xa0, 0x40, 0xc0, 0x40]
    );
    assert_ne!(b.storage_id(), ckpt.tensor("b.weight").unwrap().storage.id);
    assert_eq!(
        m2.get("tied").unwrap().data_ptr(),
        ckpt.tensor("tied").unwrap().data_ptr()
    );
    // Without convert the checkpoint's dtype wins.
    m.load(&ckpt, &assign()).unwrap();
    assert_eq!(m.get("b.weight").unwrap().dtype(), DType::Float32);
    // int64 cannot become float32: DtypeMismatch naming the entry, module unchanged.
    let mut m3 = Module::new("Net");
    m3.add("a.bias", DType::Float32, &[2], EntryKind::Parameter)
        .unwrap();
    let before = fingerprint(&m3);
    let err = m3
        .load(
            &ckpt,
            &LoadOptions {
                strict: false,
                ..opts
            },
        )
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::DtypeMismatch);
    assert!(err.message.contains("'a.bias'"));
    assert_eq!(fingerprint(&m3), before);
}

#[test]
fn copy_load_writes_contiguous_converted_data() {
    let ckpt = sample();
    let mut m = Module::new("Net");
    m.add("t", DType::Float32, &[3, 2], EntryKind::Parameter)
        .unwrap();
    m.add("b.weight", DType::Float16, &[2, 3], EntryKind::Parameter)
        .unwrap();
    m.add(
        "nb",
        DType::Float32,
        &[2],
        EntryKind::Buffer { persistent: false },
    )
    .unwrap();
    let err = m
        .load(
            &ckpt,
            &LoadOptions {
                strict: false,
                ..LoadOptions::default()
            },
        )
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::State);
    m.materialize().unwrap();
    for entry in m.entries() {
        assert_eq!(
            entry.data_ptr() as usize % crate::container::BUFFER_ALIGN,
            0
        );
        assert!(entry.bytes().unwrap().iter().all(|&b| b == 0));
    }
    let report = m
        .load(
            &ckpt,
            &LoadOptions {
                strict: false,
                ..LoadOptions::default()
            },
        )
        .unwrap();
    assert_eq!(
        report.message(),
        "_IncompatibleKeys(missing_keys=[], unexpected_keys=['a.weight', 'a.bias', 'tied'])"
    );
    assert_eq!(
        as_f32(m.get("t").unwrap().bytes().unwrap()),
        [1., 4., 2., 5., 3., 6.]
    );
    let h = m.get("b.weight").unwrap().bytes().unwrap();
    assert_eq!(&h[..4], &[0x00, 0x3c, 0x00, 0x40]);
    assert!(m.get("t").unwrap().file_offset().is_none());
}

#[test]
fn bind_checks_sizes_and_copy_fills_caller_memory() {
    let ckpt = sample();
    let mut m = Module::new("A");
    m.add("weight", DType::Float32, &[4], EntryKind::Parameter)
        .unwrap();
    let mut small = [0u8; 15];
    let mut mem = vec![0u8; 16];
    // SAFETY (test): the buffers outlive the module's use of them and are used by no one else.
    let err = m
        .bind("weight", unsafe {
            BorrowedBuf::from_raw(small.as_mut_ptr(), small.len())
        })
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::BufferTooSmall);
    assert!(!m.get("weight").unwrap().has_data());
    assert_eq!(
        m.bind("nope", unsafe {
            BorrowedBuf::from_raw(mem.as_mut_ptr(), 16)
        })
        .err()
        .unwrap()
        .kind,
        ErrorKind::NotFound
    );
    m.bind("weight", unsafe {
        BorrowedBuf::from_raw(mem.as_mut_ptr(), 16)
    })
    .unwrap();
    let opts = LoadOptions {
        prefix: "a".into(),
        strict: false,
        ..LoadOptions::default()
    };
    let report = m.load(&ckpt, &opts).unwrap();
    assert_eq!(report.loaded(), 1);
    drop(m);
    assert_eq!(as_f32(&mem), [7., 8., 9., 10.]);
}

#[test]
fn strict_failures_change_nothing() {
    let ckpt = sample();
    // Missing and unexpected keys: torch's text, KeyMismatch.
    let mut m = sample_module();
    m.add("extra.w", DType::Float32, &[1], EntryKind::Parameter)
        .unwrap();
    m.add(
        "b.running",
        DType::Float32,
        &[1],
        EntryKind::Buffer { persistent: true },
    )
    .unwrap();
    m.materialize().unwrap();
    let before = fingerprint(&m);
    for assign_it in [false, true] {
        let err = m
            .load(
                &ckpt,
                &LoadOptions {
                    assign: assign_it,
                    ..LoadOptions::default()
                },
            )
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::KeyMismatch);
        assert_eq!(
            err.message,
            "Error(s) in loading state_dict for Net:\n\tMissing key(s) in state_dict: \
             \"b.running\", \"extra.w\". "
        );
        assert_eq!(fingerprint(&m), before);
    }
    // A size mismatch fails even non-strict (as torch does), listing only the sizes.
    let mut m = Module::new("Net");
    m.add("b.weight", DType::Float32, &[3, 2], EntryKind::Parameter)
        .unwrap();
    let err = m
        .load(
            &ckpt,
            &LoadOptions {
                assign: true,
                strict: false,
                ..LoadOptions::default()
            },
        )
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::ShapeMismatch);
    assert_eq!(
        err.message,
        "Error(s) in loading state_dict for Net:\n\tsize mismatch for b.weight: copying a param \
         with shape torch.Size([2, 3]) from checkpoint, the shape in current model is \
         torch.Size([3, 2])."
    );
    assert!(!m.get("b.weight").unwrap().has_data());
    // A callback stop half-way restores everything, for copy and for assign loads.
    let mut m = sample_module();
    m.materialize().unwrap();
    let before = fingerprint(&m);
    for assign_it in [false, true] {
        let mut calls = 0;
        let mut stop_third = |_: &Entry| {
            calls += 1;
            calls < 3
        };
        let opts = LoadOptions {
            assign: assign_it,
            ..LoadOptions::default()
        };
        let err = m
            .load_with(&ckpt, &opts, Some(&mut stop_third))
            .err()
            .unwrap();
        assert_eq!(err.kind, ErrorKind::Callback);
        assert!(err.message.contains("'t'"), "{}", err.message);
        assert_eq!(fingerprint(&m), before);
    }
}

#[test]
fn unexpected_keys_follow_torch_module_order_and_non_persistent_buffers() {
    // torch groups unexpected keys by the module that finds them (pre-order), then file order.
    let ckpt = Checkpoint::from_parts(
        &[0u8; 64],
        &[(0, 64)],
        ["x.w", "zz", "x.nb", "x.sub.q", "y", "x.w2"]
            .iter()
            .map(|n| (n.to_string(), desc(DType::Float32, &[1], &[1], 0, 0)))
            .collect(),
    )
    .unwrap();
    let mut m = Module::new("M");
    m.add("x.w", DType::Float32, &[1], EntryKind::Parameter)
        .unwrap();
    m.add(
        "x.nb",
        DType::Float32,
        &[1],
        EntryKind::Buffer { persistent: false },
    )
    .unwrap();
    m.declare_submodule("x.sub").unwrap();
    m.add("s", DType::Float32, &[], EntryKind::Parameter)
        .unwrap();
    m.add("x.bias", DType::Float32, &[1], EntryKind::Parameter)
        .unwrap();
    let report = m
        .load(
            &ckpt,
            &LoadOptions {
                assign: true,
                strict: false,
                ..LoadOptions::default()
            },
        )
        .unwrap();
    assert_eq!(report.missing_keys(), ["s", "x.bias"]);
    assert_eq!(
        report.unexpected_keys(),
        ["zz", "y", "x.nb", "x.w2", "x.sub.q"]
    );
    assert!(!m.get("x.nb").unwrap().has_data());
    assert!(!m.get("s").unwrap().has_data());
    // A [1] tensor fills a 0-d entry (torch's backward compatibility).
    let mut m = Module::new("M");
    m.add("y", DType::Float32, &[], EntryKind::Parameter)
        .unwrap();
    let opts = LoadOptions {
        assign: true,
        strict: false,
        ..LoadOptions::default()
    };
    m.load(&ckpt, &opts).unwrap();
    assert_eq!(m.get("y").unwrap().nbytes(), 4);
    assert!(m.get("y").unwrap().strides().is_empty());
}

#[test]
fn modules_are_send_and_load_from_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Module>();
    send_sync::<Checkpoint>();
    let ckpt = sample();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let mut m = sample_module();
                m.load(&ckpt, &assign()).unwrap();
                m.materialize().unwrap();
            });
        }
    });
}

#[test]
fn building_and_assigning_ten_thousand_entries_is_fast() {
    let n = 10_000;
    let names: Vec<String> = (0..n)
        .map(|i| format!("layers.{}.linear.weight", i))
        .collect();
    let ckpt = Checkpoint::from_parts(
        &vec![0u8; n * 16],
        &[(0, n * 16)],
        names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                (
                    name.clone(),
                    desc(DType::Float32, &[2, 2], &[2, 1], 4 * i as i64, 0),
                )
            })
            .collect(),
    )
    .unwrap();
    let start = std::time::Instant::now();
    let mut m = Module::with_capacity("Big", n);
    for name in &names {
        m.add(name, DType::Float32, &[2, 2], EntryKind::Parameter)
            .unwrap();
    }
    let built = start.elapsed();
    let report = m.load(&ckpt, &assign()).unwrap();
    let took = start.elapsed();
    // Timing is measured by bench/run.py (scenario 3), not asserted here: the machines are
    // shared and noisy.
    eprintln!("build {built:?} total {took:?}");
    assert_eq!(report.loaded(), n);
}

/// `a.a.…` of `segments` segments, then `.leaf`.
fn deep_name(segments: usize, leaf: &str) -> String {
    let mut name = "a.".repeat(segments);
    name.push_str(leaf);
    name
}

/// Runs `f` on a thread with a 256 KiB stack: anything that recursed once per name segment
/// would overflow it long before a million segments.
fn on_small_stack(f: impl FnOnce() + Send) {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn_scoped(s, f)
            .unwrap()
            .join()
            .unwrap();
    });
}

#[test]
fn million_segment_names_go_through_add_mirror_load_report_and_drop() {
    on_small_stack(|| {
        const SEGMENTS: usize = 1_000_000;
        let kept = deep_name(SEGMENTS, "w");
        let unexpected = deep_name(SEGMENTS, "v");
        let elsewhere = deep_name(SEGMENTS / 2, "u");
        let ckpt = Checkpoint::from_parts(
            &[0u8; 16],
            &[(0, 16)],
            [
                kept.as_str(),
                unexpected.as_str(),
                "top",
                elsewhere.as_str(),
            ]
            .iter()
            .map(|n| (n.to_string(), desc(DType::Float32, &[1], &[1], 0, 0)))
            .collect(),
        )
        .unwrap();

        // A module built with add, missing one deep entry and meeting unexpected deep keys.
        let mut m = Module::new("Deep");
        m.add(&kept, DType::Float32, &[1], EntryKind::Parameter)
            .unwrap();
        let missing = deep_name(SEGMENTS, "m");
        m.add(&missing, DType::Float32, &[1], EntryKind::Parameter)
            .unwrap();
        m.declare_submodule(&deep_name(SEGMENTS - 1, "a.b"))
            .unwrap();
        let opts = LoadOptions {
            assign: true,
            strict: false,
            ..LoadOptions::default()
        };
        let report = m.load(&ckpt, &opts).unwrap();
        assert_eq!(report.loaded(), 1);
        assert_eq!(report.missing_keys(), std::slice::from_ref(&missing));
        // torch's order: the root finds `top`, module `a` (rank 1) finds `a.….u`, the deepest
        // module finds `a.….v`.
        assert_eq!(
            report.unexpected_keys(),
            ["top".to_string(), elsewhere.clone(), unexpected.clone()]
        );
        assert_eq!(
            report.message(),
            format!(
                "_IncompatibleKeys(missing_keys=['{missing}'], unexpected_keys=['top', \
                 '{elsewhere}', '{unexpected}'])"
            )
        );
        // A strict load fails with torch's text naming the keys, and changes nothing.
        let err = m.load(&ckpt, &LoadOptions::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::KeyMismatch);
        assert!(err.message.contains(&missing));

        // The checkpoint mirrored: every deep name is an entry, and a load matches them all.
        let mut mirror = Module::from_checkpoint(&ckpt).unwrap();
        assert_eq!(mirror.len(), 4);
        assert_eq!(mirror.entry_at(0).unwrap().name(), kept);
        let report = mirror.load(&ckpt, &assign()).unwrap();
        assert_eq!(report.message(), "<All keys matched successfully>");
        // A shape mismatch on a deep entry is reported (the tree orders size mismatches too).
        let mut shaped = Module::new("Deep");
        shaped
            .add(&kept, DType::Float32, &[2], EntryKind::Parameter)
            .unwrap();
        let err = shaped.load(&ckpt, &opts).unwrap_err();
        assert_eq!(err.kind, ErrorKind::ShapeMismatch);
        assert!(err.message.contains(&format!("size mismatch for {kept}:")));
        drop((m, mirror, shaped, report, ckpt));
    });
}

#[test]
fn spec_expansion_arithmetic() {
    use super::spec::digits_below;
    let plain = |n: u128| (0..n).map(|i| i.to_string().len() as u128).sum::<u128>();
    for n in [0, 1, 9, 10, 11, 99, 100, 101, 12345] {
        assert_eq!(digits_below(n), plain(n), "{n}");
    }
    assert_eq!(digits_below(u128::MAX), u128::MAX);
}

/// The count made before building bounds what is built: exactly the modules, at least the
/// entries and name bytes (a layer counts as its largest configuration), for every spec of the
/// torch-checked fixtures.
#[test]
fn spec_counts_bound_what_every_fixture_spec_builds() {
    let cases: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/fixtures/specs.json")).unwrap();
    let mut checked = 0;
    for case in cases.as_array().unwrap() {
        let text = case["spec_text"].as_str().unwrap();
        let Ok(m) = Module::from_spec(text) else {
            continue;
        };
        let (modules, entries, name_bytes) = super::spec::counted(text).unwrap();
        let built_names: usize = m.entries().iter().map(|e| e.name().len()).sum::<usize>()
            + m.declared.iter().map(|(_, p)| p.len()).sum::<usize>();
        let name = case["name"].as_str().unwrap();
        assert_eq!(modules as usize, m.declared.len() + 1, "{name}");
        assert!(entries as usize >= m.len(), "{name}");
        assert!(name_bytes as usize >= built_names, "{name}");
        checked += 1;
    }
    assert!(checked >= 40, "{checked}");
}

#[test]
fn dotted_names_are_checked_as_by_splitting() {
    // `is_dotted_name` is one pass over the bytes; it must accept exactly what splitting on
    // '.' and looking for an empty segment or a NUL accepts.
    let pieces = [
        "", ".", "..", "a", "ab", "\0", "a.b", ".a", "a.", "a..b", "é", "x\0y",
    ];
    for a in pieces {
        for b in pieces {
            for c in ["", ".", "z", "..", "\0"] {
                let name = format!("{a}{b}{c}");
                let by_split =
                    !(name.is_empty() || name.split('.').any(str::is_empty) || name.contains('\0'));
                assert_eq!(super::is_dotted_name(&name), by_split, "{name:?}");
            }
        }
    }
}
