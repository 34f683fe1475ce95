//! Hash maps for the open path. Keys that come from a file (names, storage keys, memo keys,
//! pickle dict keys) are attacker-chosen, so every map is keyed with a per-process random seed
//! (foldhash's `RandomState`): collisions cannot be precomputed, and hashing a short string
//! costs a few nanoseconds instead of SipHash-1-3's tens.

/// A `HashMap` with foldhash's randomly seeded hasher. Build with `HashMap::default()` or
/// `HashMap::with_capacity_and_hasher(n, Default::default())`.
pub type HashMap<K, V> = std::collections::HashMap<K, V, RandomState>;

/// The randomly seeded hasher state (per process, varied per map).
pub type RandomState = foldhash::fast::RandomState;
