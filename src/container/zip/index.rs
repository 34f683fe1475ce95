//! Record names: what a name may be, and the index that finds a record by its name under the
//! archive's prefix.

use crate::error::{Error, Result};
use crate::hash::NameTable;
use std::borrow::Cow;

/// Rejects names no reader should be handed: empty, absolute, with a NUL or a `..` component.
/// `at` is the central directory entry's offset, for the message.
pub(super) fn check_name(name: &str, at: u64) -> Result<()> {
    let bad = |why: &str| {
        Error::format(format!(
            "record '{}' (central directory entry at offset {at}): {why}",
            name.escape_debug()
        ))
    };
    if name.is_empty() {
        return Err(bad("empty name"));
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(bad("absolute path"));
    }
    if name.contains('\0') {
        return Err(bad("name contains a NUL byte"));
    }
    // The substring search is fast; splitting into components is only needed when it hits.
    if name.contains("..") && name.split(['/', '\\']).any(|part| part == "..") {
        return Err(bad("name contains a '..' component"));
    }
    Ok(())
}

/// The number `text` is when it is written in canonical decimal (`0`, `17`; not `01`, `+1`),
/// up to 9 digits.
pub fn canonical_index(text: &str) -> Option<u32> {
    canonical_index_of(text.as_bytes())
}

fn canonical_index_of(digits: &[u8]) -> Option<u32> {
    let canonical = digits == b"0" || !digits.starts_with(b"0");
    if digits.is_empty() || digits.len() > 9 || !canonical {
        return None;
    }
    // Nine digits cannot overflow a u32.
    digits.iter().try_fold(0u32, |n, &d| {
        d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
    })
}

/// Records by name relative to the prefix, found as torch's reader (miniz) finds them: ASCII
/// case-insensitively (`mz_zip_reader_locate_file` without `MZ_ZIP_FLAG_CASE_SENSITIVE`
/// compares `MZ_TOLOWER` bytes), so `DATA.PKL` alone is the `data.pkl` record. Two names equal
/// under that folding are refused at insert: miniz would pick one of them by its sort order.
///
/// Those named `data/<n>` (any case of `data`; n in canonical decimal, below the record count)
/// are found without hashing, in the order they are usually read: torch names its storages so.
/// Every other name is hashed as written when it has no ASCII capital (the usual case), and
/// lowercased first otherwise.
#[derive(Clone, Debug)]
pub(super) struct NameIndex {
    /// Record number + 1 at index n for `data/<n>`, 0 for none.
    numbered: Vec<u32>,
    /// Every other record.
    others: NameTable,
}

/// Where a relative name goes in the index.
enum Slot {
    Numbered(usize),
    Other,
}

/// `name` with ASCII capitals lowercased, copied only when it has any.
fn fold_case(name: &str) -> Cow<'_, [u8]> {
    let bytes = name.as_bytes();
    if bytes.iter().any(u8::is_ascii_uppercase) {
        Cow::Owned(bytes.to_ascii_lowercase())
    } else {
        Cow::Borrowed(bytes)
    }
}

/// True for `data` in any ASCII case. Setting bit 5 lowercases a capital letter and maps no
/// other byte to a lowercase letter, so the four letters compare in one step (this runs once
/// per record on the open path).
fn is_data_folder(folder: [u8; 4]) -> bool {
    u32::from_le_bytes(folder) | 0x2020_2020 == u32::from_le_bytes(*b"data")
}

impl NameIndex {
    pub fn with_capacity(count: usize) -> NameIndex {
        NameIndex {
            numbered: vec![0; count],
            others: NameTable::with_capacity(count),
        }
    }

    /// Where `numbered` has the record `data/<digits>`, if it is one of those.
    pub fn numbered_slot(&self, digits: &str) -> Option<usize> {
        self.numbered_slot_of(digits.as_bytes())
    }

    fn numbered_slot_of(&self, digits: &[u8]) -> Option<usize> {
        let n = canonical_index_of(digits)? as usize;
        (n < self.numbered.len()).then_some(n)
    }

    #[inline]
    fn slot(&self, relative: &str) -> Slot {
        match relative.as_bytes() {
            [d, a, t, a2, b'/', digits @ ..] if is_data_folder([*d, *a, *t, *a2]) => {
                match self.numbered_slot_of(digits) {
                    Some(n) => Slot::Numbered(n),
                    None => Slot::Other,
                }
            }
            _ => Slot::Other,
        }
    }

    /// Adds record `i` under `relative`, or returns the record already there under a name
    /// equal to it up to ASCII case (which the archive must not have). `relative_of(j)` is
    /// record `j`'s relative name.
    pub fn insert<'n>(
        &mut self,
        relative: &str,
        i: usize,
        relative_of: impl Fn(usize) -> &'n [u8],
    ) -> std::result::Result<(), usize> {
        match self.slot(relative) {
            Slot::Numbered(n) => match self.numbered(n) {
                Some(existing) => Err(existing),
                None => {
                    self.numbered[n] = i as u32 + 1;
                    Ok(())
                }
            },
            Slot::Other => {
                let is_name = |j| relative_of(j).eq_ignore_ascii_case(relative.as_bytes());
                match self.others.insert(&fold_case(relative), i, is_name) {
                    Some(existing) => Err(existing),
                    None => Ok(()),
                }
            }
        }
    }

    /// The number of the record named `data/<n>`, for `n` from [`NameIndex::numbered_slot`].
    pub fn numbered(&self, n: usize) -> Option<usize> {
        self.numbered[n].checked_sub(1).map(|i| i as usize)
    }

    /// The number of the record named `relative`, up to ASCII case.
    pub fn find<'n>(
        &self,
        relative: &str,
        relative_of: impl Fn(usize) -> &'n [u8],
    ) -> Option<usize> {
        match self.slot(relative) {
            Slot::Numbered(n) => self.numbered(n),
            Slot::Other => self.others.find(&fold_case(relative), |i| {
                relative_of(i).eq_ignore_ascii_case(relative.as_bytes())
            }),
        }
    }
}
