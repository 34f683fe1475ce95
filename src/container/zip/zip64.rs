//! The zip64 extended-information extra field (id 0x0001), shared by local and central headers:
//! a 32-bit size or offset (16-bit disk number) that holds its sentinel defers to this field,
//! which stores only the deferred values, in a fixed order.

use crate::error::{Error, Result};

const ZIP64_EXTRA_ID: u16 = 0x0001;
pub(super) const U16_SENTINEL: u16 = 0xFFFF;
pub(super) const U32_SENTINEL: u32 = 0xFFFF_FFFF;

/// Which of a header's fields hold their sentinel, in the zip64 field's order.
#[derive(Clone, Copy, Default)]
pub(super) struct Deferred {
    pub uncompressed: bool,
    pub compressed: bool,
    pub local_offset: bool,
    pub disk: bool,
}

impl Deferred {
    pub fn any(&self) -> bool {
        self.uncompressed || self.compressed || self.local_offset || self.disk
    }
}

/// The values read from a zip64 field: `Some` exactly for the deferred fields.
#[derive(Default)]
pub(super) struct Zip64Values {
    pub uncompressed: Option<u64>,
    pub compressed: Option<u64>,
    pub local_offset: Option<u64>,
    pub disk: Option<u32>,
}

/// Reads the `deferred` values from the zip64 field of a header's `extra` area: `None` when the
/// area has no zip64 field (what that means is the caller's to say). `what` names the header
/// for error messages.
pub(super) fn resolve(
    extra: &[u8],
    deferred: Deferred,
    what: &dyn Fn() -> String,
) -> Result<Option<Zip64Values>> {
    let Some(body) = find_field(extra, what)? else {
        return Ok(None);
    };
    let short = || Error::format(format!("{}: zip64 extra field too short", what()));
    let mut pos = 0usize;
    let mut take = |n: usize| -> Result<&[u8]> {
        let end = pos.checked_add(n).ok_or_else(short)?;
        let field = body.get(pos..end).ok_or_else(short)?;
        pos = end;
        Ok(field)
    };
    let mut u64_if = |wanted: bool| -> Result<Option<u64>> {
        if !wanted {
            return Ok(None);
        }
        let field: [u8; 8] = take(8)?.try_into().map_err(|_| short())?;
        Ok(Some(u64::from_le_bytes(field)))
    };
    let uncompressed = u64_if(deferred.uncompressed)?;
    let compressed = u64_if(deferred.compressed)?;
    let local_offset = u64_if(deferred.local_offset)?;
    let disk = if deferred.disk {
        let field: [u8; 4] = take(4)?.try_into().map_err(|_| short())?;
        Some(u32::from_le_bytes(field))
    } else {
        None
    };
    Ok(Some(Zip64Values {
        uncompressed,
        compressed,
        local_offset,
        disk,
    }))
}

/// The payload of the zip64 field in an extra area, if any; a second one is an error.
fn find_field<'a>(extra: &'a [u8], what: &dyn Fn() -> String) -> Result<Option<&'a [u8]>> {
    let mut pos = 0usize;
    let mut found = None;
    // Fewer than 4 trailing bytes cannot hold a field header; like other readers, ignore them.
    while extra.len() - pos >= 4 {
        let id = u16::from_le_bytes([extra[pos], extra[pos + 1]]);
        let len = usize::from(u16::from_le_bytes([extra[pos + 2], extra[pos + 3]]));
        let body = extra.get(pos + 4..pos + 4 + len).ok_or_else(|| {
            Error::format(format!(
                "{}: extra field 0x{id:04x} at byte {pos} of the extra area claims {len} bytes, \
                 past the end of the {}-byte extra area",
                what(),
                extra.len()
            ))
        })?;
        if id == ZIP64_EXTRA_ID {
            if found.is_some() {
                return Err(Error::format(format!(
                    "{}: more than one zip64 extra field",
                    what()
                )));
            }
            found = Some(body);
        }
        pos += 4 + len;
    }
    Ok(found)
}
