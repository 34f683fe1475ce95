//! The node types a module spec knows (docs/module-spec.md): containers, torch.nn layers that declare
//! entries (built in `spec.rs`), and stateless torch.nn layers, which declare none.
//!
//! The stateless list is torch's own: `scripts/stateless_layers.py` derives it from torch 2.15
//! (every torch.nn layer that can hold no parameter, buffer or submodule in any configuration)
//! into `stateless_layers.json`, and a unit test checks this table against that file.

/// Container types: a custom module and torch's three containers.
pub(super) const CONTAINERS: &[&str] = &["Module", "ModuleList", "Sequential", "ModuleDict"];

/// torch.nn layers with parameters or buffers, each built as torch builds it.
pub(super) const LAYERS_WITH_ENTRIES: &[&str] = &[
    "Linear",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Embedding",
    "LayerNorm",
    "RMSNorm",
    "GroupNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "MultiheadAttention",
    "PReLU",
];

/// torch.nn layers that never hold state: in a spec they are submodules with no entries, so
/// that a spec can mirror a model's `__init__` line for line. Their arguments are ignored.
pub(super) const STATELESS_LAYERS: &[&str] = &[
    // Activations.
    "CELU",
    "ELU",
    "GELU",
    "GLU",
    "Hardshrink",
    "Hardsigmoid",
    "Hardswish",
    "Hardtanh",
    "LeakyReLU",
    "LogSigmoid",
    "Mish",
    "RReLU",
    "ReLU",
    "ReLU6",
    "SELU",
    "SiLU",
    "Sigmoid",
    "Softplus",
    "Softshrink",
    "Softsign",
    "Tanh",
    "Tanhshrink",
    "Threshold",
    // The softmax family.
    "LogSoftmax",
    "Softmax",
    "Softmax2d",
    "Softmin",
    // Pooling.
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d",
    "AdaptiveMaxPool3d",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "LPPool1d",
    "LPPool2d",
    "LPPool3d",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "MaxUnpool1d",
    "MaxUnpool2d",
    "MaxUnpool3d",
    // Dropout.
    "AlphaDropout",
    "Dropout",
    "Dropout1d",
    "Dropout2d",
    "Dropout3d",
    "FeatureAlphaDropout",
    // Padding.
    "CircularPad1d",
    "CircularPad2d",
    "CircularPad3d",
    "ConstantPad1d",
    "ConstantPad2d",
    "ConstantPad3d",
    "ReflectionPad1d",
    "ReflectionPad2d",
    "ReflectionPad3d",
    "ReplicationPad1d",
    "ReplicationPad2d",
    "ReplicationPad3d",
    "ZeroPad1d",
    "ZeroPad2d",
    "ZeroPad3d",
    // Shapes: identity, flattening, folding, shuffling.
    "ChannelShuffle",
    "Flatten",
    "Fold",
    "Identity",
    "PixelShuffle",
    "PixelUnshuffle",
    "Unflatten",
    "Unfold",
    // Upsampling.
    "Upsample",
    "UpsamplingBilinear2d",
    "UpsamplingNearest2d",
    // Normalisation without affine parameters, distances.
    "CrossMapLRN2d",
    "LocalResponseNorm",
    "CosineSimilarity",
    "PairwiseDistance",
    // Losses that take no weight tensor.
    "CTCLoss",
    "CosineEmbeddingLoss",
    "GaussianNLLLoss",
    "HingeEmbeddingLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "MSELoss",
    "MarginRankingLoss",
    "MultiLabelMarginLoss",
    "PoissonNLLLoss",
    "SmoothL1Loss",
    "SoftMarginLoss",
    "TripletMarginLoss",
];

/// True for a torch.nn layer that contributes nothing to a state dict.
pub(super) fn is_stateless(ty: &str) -> bool {
    STATELESS_LAYERS.contains(&ty)
}

/// The message for a `type` no table knows: a spelling that differs only in case is named,
/// then every known type, grouped, with `1d`/`2d`/`3d` variants folded (`MaxPool1d/2d/3d`).
pub(super) fn unknown_type_message(ty: &str) -> String {
    let all = || {
        CONTAINERS
            .iter()
            .chain(LAYERS_WITH_ENTRIES)
            .chain(STATELESS_LAYERS)
    };
    let hint = all()
        .find(|known| known.eq_ignore_ascii_case(ty))
        .map(|known| format!(" (did you mean '{known}'?)"))
        .unwrap_or_default();
    format!(
        "unknown type '{ty}'{hint}; known types: containers {}; layers with entries {}; \
         stateless layers (no entries; arguments ignored) {}",
        folded(CONTAINERS),
        folded(LAYERS_WITH_ENTRIES),
        folded(STATELESS_LAYERS)
    )
}

/// `names` joined by ", ", consecutive `X1d`, `X2d`, `X3d` written `X1d/2d/3d`.
fn folded(names: &[&str]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut previous_stem: Option<&str> = None;
    for name in names {
        let stem = dimension_suffix(name).map(|suffix| &name[..name.len() - suffix.len()]);
        match (stem, previous_stem, parts.last_mut()) {
            (Some(stem), Some(previous), Some(last)) if stem == previous => {
                last.push('/');
                last.push_str(&name[stem.len()..]);
            }
            _ => parts.push(name.to_string()),
        }
        previous_stem = stem;
    }
    parts.join(", ")
}

/// `1d`, `2d` or `3d` when `name` ends with one.
fn dimension_suffix(name: &str) -> Option<&str> {
    let suffix = name.get(name.len().checked_sub(2)?..)?;
    matches!(suffix, "1d" | "2d" | "3d").then_some(suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table is the list `scripts/stateless_layers.py` derived from torch and committed
    /// (the oracle suite reruns the script against torch: tests/oracle/test_modules.py).
    #[test]
    fn the_stateless_table_is_the_one_derived_from_torch() {
        let text = include_str!("stateless_layers.json");
        let doc: serde_json::Value = serde_json::from_str(text).unwrap();
        let mut derived: Vec<&str> = doc["layers"]
            .as_object()
            .expect("a \"layers\" object")
            .keys()
            .map(String::as_str)
            .collect();
        derived.sort_unstable();
        let mut ours = STATELESS_LAYERS.to_vec();
        ours.sort_unstable();
        assert_eq!(
            ours, derived,
            "src/module/layers.rs against stateless_layers.json"
        );
        assert!(ours.len() >= 90, "{} stateless layers", ours.len());
    }

    #[test]
    fn the_tables_do_not_overlap() {
        let mut all: Vec<&str> = CONTAINERS
            .iter()
            .chain(LAYERS_WITH_ENTRIES)
            .chain(STATELESS_LAYERS)
            .copied()
            .collect();
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "a type is in two tables");
    }

    /// Every stateless layer builds, with its arguments ignored, and declares nothing: a spec
    /// that mirrors an `__init__` line for line has the entries of one without them.
    #[test]
    fn stateless_layers_contribute_nothing() {
        use crate::module::Module;
        for ty in STATELESS_LAYERS {
            let spec = format!(r#"{{"type": "{ty}", "kernel_size": 2, "inplace": true}}"#);
            let module = Module::from_spec(&spec).unwrap_or_else(|e| panic!("{ty}: {e}"));
            assert!(module.is_empty(), "{ty}");
        }
        let mirrored = r#"{"type": "Module", "children": {
            "conv": {"type": "Conv2d", "in_channels": 3, "out_channels": 8, "kernel_size": 3},
            "act": {"type": "ReLU", "inplace": true},
            "pool": {"type": "MaxPool2d", "kernel_size": 2, "stride": 2},
            "drop": {"type": "Dropout", "p": 0.1},
            "flat": {"type": "Flatten"},
            "head": {"type": "Sequential", "items": [
                {"type": "Linear", "in_features": 8, "out_features": 2},
                {"type": "Softmax", "dim": -1}]}}}"#;
        let names = |text: &str| -> Vec<String> {
            let module = Module::from_spec(text).unwrap();
            module
                .entries()
                .iter()
                .map(|e| e.name().to_string())
                .collect()
        };
        assert_eq!(
            names(mirrored),
            ["conv.weight", "conv.bias", "head.0.weight", "head.0.bias"]
        );
    }

    /// Every name of the entries table is one the builder knows (a bare node fails on a missing
    /// argument, or builds, never as an unknown type); an unknown one lists them all.
    #[test]
    fn the_known_types_are_the_builders() {
        use crate::module::Module;
        for ty in CONTAINERS.iter().chain(LAYERS_WITH_ENTRIES) {
            if let Err(e) = Module::from_spec(&format!(r#"{{"type": "{ty}"}}"#)) {
                assert!(!e.message.contains("unknown type"), "{ty}: {e}");
            }
        }
        let e = Module::from_spec(r#"{"type": "Module", "children": {"act": {"type": "Relu"}}}"#)
            .unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::InvalidArgument);
        assert!(
            e.message
                .starts_with("module spec: node 'act': unknown type 'Relu' (did you mean 'ReLU'?)"),
            "{e}"
        );
        for ty in CONTAINERS.iter().chain(LAYERS_WITH_ENTRIES) {
            let shown = ty.trim_end_matches(['1', '2', '3', 'd']);
            assert!(e.message.contains(shown), "{ty} is not listed: {e}");
        }
        assert!(e.message.contains("MaxPool1d/2d/3d") && e.message.contains("Identity"));
    }

    #[test]
    fn variants_are_folded_in_the_message() {
        assert_eq!(
            folded(&[
                "Dropout",
                "Dropout1d",
                "Dropout2d",
                "Dropout3d",
                "Softmax2d",
                "Tanh"
            ]),
            "Dropout, Dropout1d/2d/3d, Softmax2d, Tanh"
        );
        let message = unknown_type_message("relu");
        assert!(message.starts_with("unknown type 'relu' (did you mean 'ReLU'?); known types: "));
        assert!(message.contains("MaxPool1d/2d/3d") && message.contains("Conv1d/2d/3d"));
        assert!(!unknown_type_message("Frobnicate").contains("did you mean"));
    }
}
