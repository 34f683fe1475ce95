//! CRC-32 checks of the zip records a checkpoint uses (`OpenOptions::verify_crc`,
//! `MMCKPT_OPEN_VERIFY_CRC`). torch never checks them, so a corrupted download loads silently;
//! with the flag, the open reads every byte of the records it uses (the pickle, `byteorder`,
//! each storage the table views) and fails on the first mismatch, naming the record and both
//! checksums. Large records are split into pieces hashed on several threads and combined
//! (CRC-32 composes), so the check runs at memory speed once the file is in the page cache.

use crate::container::zip::ZipRecord;
use crate::container::Source;
use crate::error::{Error, Result};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// What a CRC check covered ([`crate::Checkpoint::crc_report`]).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq)]
pub struct CrcReport {
    /// Records whose CRC-32 was computed and matched.
    pub records_checked: u64,
    /// Bytes those records hold.
    pub bytes_checked: u64,
    /// Records the writer gave no CRC (0 in the directory for non-empty data:
    /// `torch.serialization.set_crc32_options(False)`); their bytes were not checked.
    pub records_without_crc: u64,
}

impl CrcReport {
    /// The sum of two reports (a sharded checkpoint's shards).
    pub(crate) fn add(self, other: CrcReport) -> CrcReport {
        CrcReport {
            records_checked: self.records_checked + other.records_checked,
            bytes_checked: self.bytes_checked + other.bytes_checked,
            records_without_crc: self.records_without_crc + other.records_without_crc,
        }
    }
}

/// Bytes hashed as one piece: big enough that a thread's work dwarfs its start, small enough
/// that one large tensor still spreads over every thread.
const PIECE_BYTES: u64 = 64 << 20;

/// Threads hashing at most (memory bandwidth is shared; more add nothing).
const MAX_THREADS: usize = 8;

/// Checks the CRC-32 of each record (each once, however many storages name it) against the
/// bytes of `source`; the first mismatch in `records` order is a `Format` error naming the
/// record and both checksums.
pub(crate) fn check_records(source: &Source, records: &[ZipRecord<'_>]) -> Result<CrcReport> {
    let mut report = CrcReport::default();
    let mut checked: Vec<&ZipRecord<'_>> = Vec::with_capacity(records.len());
    for record in records {
        if record.crc == 0 && record.size > 0 {
            report.records_without_crc += 1;
        } else {
            record.require_stored()?;
            checked.push(record);
        }
    }
    // (record index, offset within the record, length) of every piece, in file order.
    let mut pieces: Vec<(usize, u64, u64)> = Vec::new();
    for (i, record) in checked.iter().enumerate() {
        let mut at = 0;
        loop {
            let len = (record.size - at).min(PIECE_BYTES);
            pieces.push((i, at, len));
            at += len;
            if at >= record.size {
                break;
            }
        }
    }
    let hashes: Vec<Mutex<Option<Result<crc32fast::Hasher>>>> =
        pieces.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let work = || loop {
        let p = next.fetch_add(1, Ordering::Relaxed);
        let Some(&(i, at, len)) = pieces.get(p) else {
            return;
        };
        let result = hash_range(source, checked[i].data_offset + at, len).map_err(|e| {
            e.context(format!(
                "checking the CRC-32 of record '{}'",
                checked[i].name
            ))
        });
        *hashes[p].lock().unwrap_or_else(|e| e.into_inner()) = Some(result);
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_THREADS)
        .min(pieces.len());
    if threads > 1 && pieces.len() > 1 {
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(work);
            }
            work();
        });
    } else {
        work();
    }
    let mut hashes = hashes
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()));
    for (i, record) in checked.iter().enumerate() {
        let mut whole = crc32fast::Hasher::new();
        for _ in pieces.iter().filter(|p| p.0 == i) {
            let piece = hashes
                .next()
                .flatten()
                .ok_or_else(|| Error::format("CRC-32 check: a piece was not hashed"))??;
            whole.combine(&piece);
        }
        let actual = whole.finalize();
        if actual != record.crc {
            return Err(Error::format(format!(
                "record '{}' is corrupt: its bytes have CRC-32 0x{actual:08x}, the zip directory \
                 records 0x{:08x}",
                record.name, record.crc
            )));
        }
        report.records_checked += 1;
        report.bytes_checked += record.size;
    }
    Ok(report)
}

/// The CRC-32 of `len` bytes at `offset` of the file: from its bytes in memory (mapped or
/// read), else read with `pread` a few MiB at a time.
fn hash_range(source: &Source, offset: u64, len: u64) -> Result<crc32fast::Hasher> {
    let mut hasher = crc32fast::Hasher::new();
    if let Some(bytes) = source.bytes_in_memory() {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let range = start
            .checked_add(len as usize)
            .and_then(|end| bytes.get(start..end))
            .ok_or_else(|| Error::format(format!("bytes {offset}..+{len} are outside the file")))?;
        hasher.update(range);
        return Ok(hasher);
    }
    const CHUNK: u64 = 4 << 20;
    let mut buf = vec![0u8; CHUNK.min(len) as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(CHUNK) as usize;
        source.read_exact_at(offset + at, &mut buf[..n])?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(hasher)
}
