//! The mutant generator of the Rust mutation test. c_tests/test_mutation.c implements the same
//! classes in C (same seed, same boundaries) for the C ABI under sanitizers; both check the
//! mutants they generate against `tests/mutants/digests.tsv` ([`digest`]), so the two cannot
//! drift apart.
#![allow(dead_code)]

/// The torch-written fixtures (recipe.pt, 40 MB, is left out: its metadata is that of the
/// others, and copying it per mutant would dominate the run time).
pub const FIXTURES: &[&str] = &[
    "tests/fixtures/dtypes.pt",
    "tests/fixtures/forms.pt",
    "tests/fixtures/nested.pt",
    "tests/fixtures/proto4.pt",
    "tests/fixtures/align4096.pt",
    "tests/fixtures/script.pt",
    "tests/fixtures/legacy.pt",
    "tests/data/zip/tiny_torch.pt",
    "tests/fixtures/safetensors/dtypes.safetensors",
];

/// splitmix64: a fixed seed makes every run see the same mutants.
pub struct Rng(u64);
impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn u16_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?) as usize)
}
fn u32_at(b: &[u8], at: usize) -> Option<usize> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?) as usize)
}

/// One central directory entry as the mutator sees it.
pub struct CdEntry {
    pub at: usize,
    pub name: (usize, usize),
    pub local: usize,
    pub data: usize,
    pub size: usize,
}

/// Where the structure is: end record, central directory entries, local headers, record data.
pub struct Layout {
    pub eocd: usize,
    pub cd: usize,
    pub entries: Vec<CdEntry>,
    /// data.pkl's data range, when found.
    pub pickle: Option<(usize, usize)>,
}

pub fn layout(b: &[u8]) -> Option<Layout> {
    let eocd = (0..b.len().saturating_sub(21))
        .rev()
        .find(|&i| b[i..i + 4] == [0x50, 0x4b, 5, 6])?;
    let cd = u32_at(b, eocd + 16)?;
    let count = u16_at(b, eocd + 10)?;
    let mut entries = Vec::new();
    let mut pos = cd;
    let mut pickle = None;
    for _ in 0..count {
        if b.get(pos..pos + 4)? != [0x50, 0x4b, 1, 2] {
            return None;
        }
        let size = u32_at(b, pos + 20)?;
        let (n, e, c) = (
            u16_at(b, pos + 28)?,
            u16_at(b, pos + 30)?,
            u16_at(b, pos + 32)?,
        );
        let local = u32_at(b, pos + 42)?;
        let data = local + 30 + u16_at(b, local + 26)? + u16_at(b, local + 28)?;
        let name = (pos + 46, pos + 46 + n);
        if b.get(name.0..name.1)?.ends_with(b"data.pkl") && pickle.is_none() {
            pickle = Some((data, data + size));
        }
        entries.push(CdEntry {
            at: pos,
            name,
            local,
            data,
            size,
        });
        pos += 46 + n + e + c;
    }
    Some(Layout {
        eocd,
        cd,
        entries,
        pickle,
    })
}

/// Byte offsets of every opcode in a pickle (stops at STOP or at the first byte it cannot
/// decode). Argument lengths as in Python's pickletools.
pub fn opcode_offsets(p: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut i = 0usize;
    while i < p.len() {
        out.push(i);
        let op = p[i];
        i += 1;
        let len_at = |i: usize, n: usize| -> Option<usize> {
            let mut v = 0usize;
            for k in 0..n {
                v |= (*p.get(i + k)? as usize) << (8 * k);
            }
            Some(v)
        };
        let step = match op {
            b'.' => break,
            b'J' | b'j' | b'r' | 0x84 => Some(4),
            b'K' | b'h' | b'q' | 0x80 | 0x82 => Some(1),
            b'M' | 0x83 => Some(2),
            b'G' | 0x95 => Some(8),
            b'I' | b'L' | b'S' | b'V' | b'F' | b'g' | b'p' | b'P' => {
                p[i..].iter().position(|&c| c == b'\n').map(|n| n + 1)
            }
            b'c' | b'i' => {
                let first = p[i..].iter().position(|&c| c == b'\n');
                first.and_then(|a| {
                    p[i + a + 1..]
                        .iter()
                        .position(|&c| c == b'\n')
                        .map(|b| a + b + 2)
                })
            }
            0x8a | b'U' | b'C' | 0x8c => len_at(i, 1).map(|n| 1 + n),
            0x8b | b'T' | b'B' | b'X' => len_at(i, 4).map(|n| 4 + n),
            0x8e | 0x96 | 0x8d => len_at(i, 8).map(|n| 8 + n),
            _ => Some(0),
        };
        match step {
            Some(n) => i += n,
            None => break,
        }
    }
    out
}

/// Every pickle opcode byte (protocols 0-5).
pub const OPCODES: &[u8] = b"().012BCFGIJKLMNPQRSTUVX]abcdeghijlopqrstu}\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98";

/// Calls `f(kind, mutant)` for every mutant of `original`. `scale` multiplies the random
/// classes' counts (the boundary classes are exhaustive).
pub fn for_each_mutant(original: &[u8], scale: f64, mut f: impl FnMut(&str, &[u8])) {
    let mut rng = Rng::new(0x6d6d_636b_7074 ^ original.len() as u64);
    let n = |base: usize| ((base as f64 * scale) as usize).max(1);
    let lay = layout(original);
    let mut buf = original.to_vec();

    // 1. Bit flips: half anywhere, half in the metadata (pickle, headers, directory, end).
    let mut meta: Vec<(usize, usize)> = Vec::new();
    if let Some(l) = &lay {
        meta.push((l.cd, original.len()));
        for e in &l.entries {
            meta.push((e.local, e.data));
        }
        if let Some(p) = l.pickle {
            meta.push(p);
        }
    }
    for i in 0..n(1000) {
        let at = if i % 2 == 0 || meta.is_empty() {
            rng.below(original.len())
        } else {
            let (a, b) = meta[rng.below(meta.len())];
            a + rng.below(b.saturating_sub(a))
        };
        let bit = rng.below(8);
        if at < buf.len() {
            buf[at] ^= 1 << bit;
            f("bit flip", &buf);
            buf[at] ^= 1 << bit;
        }
    }

    // 2. Truncations at every boundary (and one byte either side).
    let mut cuts: Vec<usize> = vec![0, 1, 4, 22, original.len().saturating_sub(1)];
    if let Some(l) = &lay {
        cuts.extend([l.eocd, l.eocd + 22, l.cd]);
        for e in &l.entries {
            cuts.extend([
                e.at,
                e.at + 46,
                e.local,
                e.local + 30,
                e.data,
                e.data + e.size,
            ]);
        }
        if let Some((start, end)) = l.pickle {
            cuts.extend([start, end]);
            let ops = opcode_offsets(&original[start..end]);
            let stride = (ops.len() / n(200)).max(1);
            cuts.extend(ops.iter().step_by(stride).map(|&o| start + o));
        }
        // zip64 end record and locator sit just before the classic end record.
        cuts.extend([l.eocd.saturating_sub(20), l.eocd.saturating_sub(76)]);
    }
    let mut all: Vec<usize> = cuts
        .iter()
        .flat_map(|&c| [c.saturating_sub(1), c, c + 1])
        .filter(|&c| c < original.len())
        .collect();
    all.sort_unstable();
    all.dedup();
    for c in all {
        f("truncation", &original[..c]);
    }

    // 3. Byte-range duplications: a range copied over (or inserted at) another place.
    for i in 0..n(300) {
        let len = 1 + rng.below(64.min(original.len()));
        let from = rng.below(original.len() - len + 1);
        let to = rng.below(original.len());
        let mut m = original.to_vec();
        if i % 2 == 0 {
            let end = (to + len).min(m.len());
            m[to..end].copy_from_slice(&original[from..from + (end - to)]);
        } else {
            m.splice(to..to, original[from..from + len].iter().copied());
        }
        f("duplication", &m);
    }

    let Some(l) = lay else { return };

    // 4. Zip entry substitutions: swap two entries' local header offsets, or their names when
    //    the names are equally long.
    for a in 0..l.entries.len() {
        for b in a + 1..l.entries.len() {
            let (ea, eb) = (&l.entries[a], &l.entries[b]);
            let mut m = original.to_vec();
            let (oa, ob) = (ea.at + 42, eb.at + 42);
            let tmp: [u8; 4] = m[oa..oa + 4].try_into().unwrap();
            m.copy_within(ob..ob + 4, oa);
            m[ob..ob + 4].copy_from_slice(&tmp);
            f("swapped offsets", &m);
            if ea.name.1 - ea.name.0 == eb.name.1 - eb.name.0 {
                let mut m = original.to_vec();
                let na = original[ea.name.0..ea.name.1].to_vec();
                m.copy_within(eb.name.0..eb.name.1, ea.name.0);
                m[eb.name.0..eb.name.1].copy_from_slice(&na);
                f("swapped names", &m);
            }
        }
    }

    // 5. Pickle opcode substitutions: opcodes at evenly spread positions replaced by every
    //    other opcode.
    if let Some((start, end)) = l.pickle {
        let ops = opcode_offsets(&original[start..end]);
        let positions = n(48).min(ops.len());
        for k in 0..positions {
            let at = start + ops[k * ops.len() / positions];
            for &op in OPCODES {
                if op == original[at] {
                    continue;
                }
                buf[at] = op;
                f("opcode substitution", &buf);
            }
            buf[at] = original[at];
        }
    }
}

/// FNV-1a (64-bit) over every mutant of `original` at `scale`, in generation order, each as
/// its length (8 bytes, little-endian) then its bytes; and the number of mutants. The C test
/// computes the same over the mutants it opens.
pub fn digest(original: &[u8], scale: f64) -> (usize, u64) {
    let mut count = 0usize;
    let mut hash = Fnv1a::new();
    for_each_mutant(original, scale, |_, mutant| {
        hash.update(&(mutant.len() as u64).to_le_bytes());
        hash.update(mutant);
        count += 1;
    });
    (count, hash.0)
}

struct Fnv1a(u64);
impl Fnv1a {
    fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn update(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The scales whose digests `digests.tsv` lists: the CI amount, and the tenth the C test runs
/// under valgrind (`MMCKPT_TEST_SKIP_LARGE`).
pub const DIGEST_SCALES: &[f64] = &[1.0, 0.1];

/// `tests/mutants/digests.tsv` as this generator writes it.
pub fn digests_tsv(read: impl Fn(&str) -> Vec<u8>) -> String {
    let mut out = String::from(
        "# Mutants of each fixture per scale (MMCKPT_MUTANTS_PER_CLASS), as tests/mutants/mod.rs\n\
         # generates them, and their FNV-1a digest (mutants::digest). tests/mutation.rs checks this\n\
         # file against the Rust generator, c_tests/test_mutation.c against the C one.\n\
         # fixture (under tests/)\tscale\tmutants\tfnv1a64\n",
    );
    for file in FIXTURES {
        let original = read(file);
        for &scale in DIGEST_SCALES {
            let (count, hash) = digest(&original, scale);
            let name = file
                .strip_prefix("tests/")
                .expect("fixtures are under tests/");
            out.push_str(&format!("{name}\t{scale}\t{count}\t{hash:016x}\n"));
        }
    }
    out
}
