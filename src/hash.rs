//! Hash maps for the open path. Keys that come from a file (names, storage keys, memo keys,
//! pickle dict keys) are attacker-chosen, so every map is keyed with a per-process random seed
//! (foldhash's `RandomState`): collisions cannot be precomputed, and hashing a short string
//! costs a few nanoseconds instead of SipHash-1-3's tens.

use std::hash::BuildHasher;

/// A `HashMap` with foldhash's randomly seeded hasher. Build with `HashMap::default()` or
/// `HashMap::with_capacity_and_hasher(n, Default::default())`.
pub type HashMap<K, V> = std::collections::HashMap<K, V, RandomState>;

/// The randomly seeded hasher state (per process, varied per map).
pub type RandomState = foldhash::fast::RandomState;

/// Indices of named items (zip records, table rows) by name, without a copy of the names:
/// open addressing with linear probing over a power-of-two table at most half full, keyed with
/// a random seed. The names stay where their owner keeps them; the closures given to `find`
/// and `insert` compare a name with item `i`'s.
#[derive(Clone, Debug)]
pub(crate) struct NameTable {
    hasher: RandomState,
    /// Item index + 1; 0 marks an empty slot.
    slots: Vec<u32>,
}

impl NameTable {
    pub(crate) fn with_capacity(items: usize) -> NameTable {
        NameTable {
            hasher: RandomState::default(),
            slots: vec![0; (items.max(1) * 2).next_power_of_two()],
        }
    }

    /// The slot holding the record whose name `is_name` accepts, or the empty slot that ends
    /// the probe sequence of `name`.
    fn probe(&self, name: &[u8], is_name: impl Fn(usize) -> bool) -> usize {
        let mask = self.slots.len() - 1;
        let mut slot = self.hasher.hash_one(name) as usize & mask;
        loop {
            match self.slots[slot] {
                0 => return slot,
                k if is_name(k as usize - 1) => return slot,
                _ => slot = (slot + 1) & mask,
            }
        }
    }

    pub(crate) fn find(&self, name: &[u8], is_name: impl Fn(usize) -> bool) -> Option<usize> {
        match self.slots[self.probe(name, is_name)] {
            0 => None,
            k => Some(k as usize - 1),
        }
    }

    /// Room for `items` items in all (the table stays at most half full): rebuilt at twice the
    /// size when needed, reading each held item's name with `name_of` (the names are unique).
    pub(crate) fn reserve<'n>(&mut self, items: usize, name_of: impl Fn(usize) -> &'n [u8]) {
        if items.saturating_mul(2) <= self.slots.len() {
            return;
        }
        let size = (items.max(1) * 2).next_power_of_two();
        let old = std::mem::replace(&mut self.slots, vec![0; size]);
        let mask = size - 1;
        for k in old.into_iter().filter(|&k| k != 0) {
            let mut slot = self.hasher.hash_one(name_of(k as usize - 1)) as usize & mask;
            while self.slots[slot] != 0 {
                slot = (slot + 1) & mask;
            }
            self.slots[slot] = k;
        }
    }

    /// Where `name` is: `Ok(item)` when an item has it, else `Err(slot)`, the empty slot that
    /// [`NameTable::occupy`] fills to add it (one hash for a check and the insert after it).
    pub(crate) fn locate(
        &self,
        name: &[u8],
        is_name: impl Fn(usize) -> bool,
    ) -> Result<usize, usize> {
        let slot = self.probe(name, is_name);
        match self.slots[slot] {
            0 => Err(slot),
            k => Ok(k as usize - 1),
        }
    }

    /// Adds item `i` (< u32::MAX) at `slot`, which [`NameTable::locate`] returned for its name
    /// with no change to the table since.
    pub(crate) fn occupy(&mut self, slot: usize, i: usize) {
        debug_assert_eq!(self.slots[slot], 0);
        self.slots[slot] = i as u32 + 1;
    }

    /// Adds item `i` (< u32::MAX) under `name`; returns the item that already has that name
    /// instead, if any. Never more items than the table was made (or last reserved) for.
    pub(crate) fn insert(
        &mut self,
        name: &[u8],
        i: usize,
        is_name: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        let slot = self.probe(name, is_name);
        match self.slots[slot] {
            0 => {
                self.slots[slot] = i as u32 + 1;
                None
            }
            k => Some(k as usize - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NameTable;

    #[test]
    fn name_table_finds_every_name_through_collisions_and_reports_duplicates() {
        let names: Vec<String> = (0..5000).map(|i| format!("layer.{i}.weight")).collect();
        let mut table = NameTable::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let dup = table.insert(name.as_bytes(), i, |j| names[j] == *name);
            assert_eq!(dup, None);
        }
        for (i, name) in names.iter().enumerate() {
            assert_eq!(table.find(name.as_bytes(), |j| names[j] == *name), Some(i));
            let again = table.insert(name.as_bytes(), 0, |j| names[j] == *name);
            assert_eq!(again, Some(i), "the first item keeps the name");
        }
        for missing in ["layer.5000.weight", "", "layer.1.bias"] {
            assert_eq!(
                table.find(missing.as_bytes(), |j| names[j] == missing),
                None
            );
        }
    }

    #[test]
    fn name_table_keeps_every_name_as_it_grows() {
        let names: Vec<String> = (0..3000).map(|i| format!("block.{i}.bias")).collect();
        let mut table = NameTable::with_capacity(1);
        for (i, name) in names.iter().enumerate() {
            table.reserve(i + 1, |j| names[j].as_bytes());
            assert_eq!(
                table.insert(name.as_bytes(), i, |j| names[j] == *name),
                None
            );
        }
        assert!(table.slots.len() >= 2 * names.len());
        for (i, name) in names.iter().enumerate() {
            assert_eq!(table.find(name.as_bytes(), |j| names[j] == *name), Some(i));
        }
        assert_eq!(table.find(b"block.3000.bias", |_| false), None);
    }
}
