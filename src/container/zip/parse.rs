//! The parse: end records, then every central directory entry checked against its local
//! header, then the whole-archive checks (no overlap, one prefix, no duplicate names).

use super::archive::{Stored, ZipArchive, ZipLimits};
use super::central::{read_entry, CentralHeader, CENTRAL_LEN, CENTRAL_SIG};
use super::end::read_end;
use super::fields::{fixed, range};
use super::index::{check_name, NameIndex};
use super::local::{check_local, Expected, LocalHeader, LOCAL_LEN, LOCAL_SIG};
use super::reads::HeaderReads;
use super::zip64::U32_SENTINEL;
use super::ENCRYPTION_FLAGS;
use crate::error::{Error, Result};

/// Parses the archive: end records, central directory, local headers. Never reads record data.
#[cfg(any(test, feature = "fuzzing"))]
pub fn parse(bytes: &[u8], limits: &ZipLimits) -> Result<ZipArchive> {
    parse_with(bytes, limits, None)
}

/// [`parse`], reading local headers with `reads` when the records are far apart: `bytes` is
/// then a mapping of the file, where touching the header of a record far from the last one
/// would fault in (and map) the 64 KiB of tensor data around it, and a read of ~100 bytes
/// is cheaper. Checkpoints of large tensors (a few records per gigabyte) are such files.
/// The result, errors included, is the same as [`parse`]'s.
pub fn parse_with(
    bytes: &[u8],
    limits: &ZipLimits,
    reads: Option<HeaderReads<'_>>,
) -> Result<ZipArchive> {
    let file_len = bytes.len() as u64;
    let end = read_end(bytes)?;
    if end.entries > limits.max_records as u64 {
        return Err(Error::limit(format!(
            "zip archive has {} entries, more than the limit of {}",
            end.entries, limits.max_records
        )));
    }
    let cd_offset = end.cd_offset;
    let cd_end = cd_offset.checked_add(end.cd_size);
    if !cd_end.is_some_and(|cd_end| cd_end <= end.end_start) {
        return Err(Error::format(format!(
            "central directory of {} bytes at offset {cd_offset} does not end before the end \
             records at offset {}",
            end.cd_size, end.end_start
        )));
    }
    if end.entries > end.cd_size / CENTRAL_LEN as u64 {
        return Err(Error::format(format!(
            "central directory of {} bytes at offset {cd_offset} cannot hold {} entries",
            end.cd_size, end.entries
        )));
    }
    let cd = range(bytes, cd_offset, end.cd_size).ok_or_else(|| {
        Error::format(format!(
            "central directory at offset {cd_offset} is out of range"
        ))
    })?;
    // Bounded by cd_size / 46 above, so this allocation is no bigger than the file allows.
    let count = usize::try_from(end.entries)
        .map_err(|_| Error::limit(format!("{} entries", end.entries)))?;
    if u32::try_from(count).is_err() {
        return Err(Error::limit(format!("{count} zip entries")));
    }

    let mut prefix: Option<String> = None;
    let mut records: Vec<Stored> = Vec::with_capacity(count);
    // The names fit in what the directory holds besides the fixed part of each entry.
    let mut names = String::with_capacity(cd.len() - count * CENTRAL_LEN);
    let mut index = NameIndex::with_capacity(count);
    // True while each record starts after the previous one ends (torch writes them so): then
    // no two overlap, and no sort is needed to know it.
    let mut in_order = true;
    let mut previous_end = 0u64;
    let mut pos = 0usize;
    let read_at = reads
        .filter(|r| count > 0 && cd_offset / count as u64 >= r.min_spacing)
        .map(|r| r.read_at);
    let mut local_buf = Vec::new();

    for i in 0..count {
        let at = cd_offset + pos as u64;
        let entry = read_entry(cd, pos, i, at)?;
        pos = entry.next;

        let name = std::str::from_utf8(entry.name).map_err(|_| {
            Error::format(format!(
                "record '{}' (central directory entry at offset {at}): name is not valid UTF-8",
                String::from_utf8_lossy(entry.name).escape_debug()
            ))
        })?;
        check_name(name, at)?;

        if prefix.is_none() {
            match name.split_once('/') {
                Some((first, _)) if !first.is_empty() => prefix = Some(first.to_owned()),
                _ => {
                    return Err(Error::format(format!(
                        "first record '{name}' (offset {at}) is not inside a top-level folder"
                    )))
                }
            }
        }
        let prefix = prefix.as_deref().unwrap_or_default();
        let relative = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| {
                Error::format(format!(
                    "record '{name}' (central directory entry at offset {at}) is outside the \
                     archive's top-level folder '{prefix}/'"
                ))
            })?;

        let CentralHeader {
            flags, method, crc, ..
        } = entry.header;
        if flags & ENCRYPTION_FLAGS != 0 {
            return Err(Error::unsupported(format!(
                "record '{name}' is encrypted (flags 0x{flags:04x}); encrypted zip entries are \
                 not supported"
            )));
        }
        let resolved = entry.resolve(name, at)?;
        let (uncompressed, compressed, local_offset) = (
            resolved.uncompressed,
            resolved.compressed,
            resolved.local_offset,
        );
        if resolved.disk != 0 {
            return Err(Error::unsupported(format!(
                "record '{name}' starts on disk {}: multi-disk zip archives are not supported",
                resolved.disk
            )));
        }
        if method == 0 && compressed != uncompressed {
            return Err(Error::format(format!(
                "record '{name}' is stored but its compressed size ({compressed}) differs from \
                 its size ({uncompressed})"
            )));
        }
        if (relative.is_empty() || relative.ends_with('/')) && uncompressed != 0 {
            return Err(Error::format(format!(
                "record '{name}' is a directory but holds {uncompressed} bytes"
            )));
        }

        let expected = Expected {
            name,
            method,
            crc,
            sizes: [uncompressed, compressed],
            local_offset,
        };
        let data_offset = check_local(bytes, cd_offset, &expected, read_at, &mut local_buf)?;
        let data_end = data_offset.checked_add(compressed);
        if !data_end.is_some_and(|data_end| data_end <= cd_offset) {
            return Err(Error::format(format!(
                "record '{name}': {compressed} bytes of data at offset {data_offset} run past \
                 the start of the central directory at offset {cd_offset} (file is {file_len} \
                 bytes)"
            )));
        }
        let data_end = data_offset + compressed;

        let relative_of = |j: usize| {
            let other: &Stored = &records[j];
            &names.as_bytes()[other.name_start + prefix.len() + 1..other.name_end]
        };
        if let Err(j) = index.insert(relative, i, relative_of) {
            let other = &names[records[j].name_start..records[j].name_end];
            return Err(Error::format(if other == name {
                format!("duplicate record '{name}' (central directory entry at offset {at})")
            } else {
                format!(
                    "zip records '{other}' and '{name}' (central directory entry at offset \
                     {at}) differ only in case; torch's reader (miniz) finds records \
                     case-insensitively and would pick one of them by its sort order"
                )
            }));
        }
        in_order &= previous_end <= local_offset;
        previous_end = data_end;
        let name_start = names.len();
        names.push_str(name);
        records.push(Stored {
            name_start,
            name_end: names.len(),
            header_offset: local_offset,
            data_offset,
            size: compressed,
            uncompressed,
            method,
            crc,
        });
    }
    if pos != cd.len() {
        return Err(Error::format(format!(
            "central directory at offset {cd_offset} has {} unexplained bytes after its {count} \
             entries",
            cd.len() - pos
        )));
    }
    if !in_order {
        check_no_overlap(&names, &records)?;
    }

    let prefix = prefix.ok_or_else(|| Error::format("zip archive has no records"))?;
    Ok(ZipArchive {
        prefix,
        names,
        records,
        index,
        file_len,
    })
}

/// No record's header + data may overlap another's.
fn check_no_overlap(names: &str, records: &[Stored]) -> Result<()> {
    let mut spans: Vec<(u64, u64, usize)> = (records.iter().enumerate())
        .map(|(i, r)| (r.header_offset, r.data_offset + r.size, i))
        .collect();
    spans.sort_unstable();
    for pair in spans.windows(2) {
        let (a_start, a_end, a) = pair[0];
        let (b_start, b_end, b) = pair[1];
        if b_start < a_end {
            return Err(Error::format(format!(
                "records '{}' (bytes {a_start}..{a_end}) and '{}' (bytes {b_start}..{b_end}) \
                 overlap",
                &names[records[a].name_start..records[a].name_end],
                &names[records[b].name_start..records[b].name_end]
            )));
        }
    }
    Ok(())
}

/// Where the first record's bytes would be if it is `<prefix>/<relative>` (torch writes
/// `data.pkl` first): its data offset and size, read from the end record, the first central
/// directory entry and its local header, or `None` for anything unusual (zip64 fields,
/// compression, another name, anything out of range). Only a guess, to start work on the
/// record while [`parse`] checks the archive: use it only if the parsed archive's record
/// has the same offset and size. Also returns the number of entries.
pub fn guess_first_record(bytes: &[u8], relative: &str) -> Option<(u64, u64, u64)> {
    let end = read_end(bytes).ok()?;
    let entry = CentralHeader::decode(fixed::<CENTRAL_LEN>(bytes, end.cd_offset)?);
    let (size, local) = (entry.compressed, entry.local_offset);
    if entry.signature != CENTRAL_SIG
        || entry.method != 0
        || size == U32_SENTINEL
        || local == U32_SENTINEL
    {
        return None;
    }
    let name = range(
        bytes,
        end.cd_offset + CENTRAL_LEN as u64,
        u64::from(entry.name_len),
    )?;
    let suffix = name.strip_suffix(relative.as_bytes())?;
    if !suffix.ends_with(b"/") || suffix[..suffix.len() - 1].contains(&b'/') {
        return None;
    }
    let header = LocalHeader::decode(fixed::<LOCAL_LEN>(bytes, u64::from(local))?);
    if header.signature != LOCAL_SIG {
        return None;
    }
    let data = u64::from(local) + header.total_len();
    range(bytes, data, u64::from(size))?;
    Some((data, u64::from(size), end.entries))
}
