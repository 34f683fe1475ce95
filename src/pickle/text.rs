//! Decoding helpers for the pickle machine: integers in pickle's LONG byte form, protocol 0 text
//! arguments (decimal integers, Python string escapes, raw-unicode-escape). Pure functions on byte
//! slices; errors are plain strings that the machine wraps with the opcode name and offset.

/// An integer decoded from a pickle: small ones as `i64`, others in normalised LONG form.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Integer {
    Small(i64),
    /// Little-endian two's complement, minimal length (always more than 8 bytes).
    Big(Vec<u8>),
}

/// Decimal digits accepted in one text integer, whatever `max_str_len` says: the conversion is
/// quadratic. CPython 3.11 refuses more than 4300 digits by default (`sys.int_info`).
pub(crate) const MAX_DECIMAL_DIGITS: usize = 4300;

/// Strips redundant sign bytes from a little-endian two's-complement number.
pub(crate) fn normalize_le(bytes: &mut Vec<u8>) {
    while bytes.len() > 1 {
        let last = bytes[bytes.len() - 1];
        let prev_high = bytes[bytes.len() - 2] & 0x80;
        if (last == 0x00 && prev_high == 0) || (last == 0xff && prev_high != 0) {
            bytes.pop();
        } else {
            break;
        }
    }
}

/// LONG1 / LONG4 payload: little-endian two's complement of any length (empty = 0).
pub(crate) fn integer_from_le(bytes: &[u8]) -> Integer {
    if bytes.is_empty() {
        return Integer::Small(0);
    }
    let mut v = bytes.to_vec();
    normalize_le(&mut v);
    if v.len() <= 8 {
        let fill = if v[v.len() - 1] & 0x80 != 0 { 0xff } else { 0 };
        let mut buf = [fill; 8];
        buf[..v.len()].copy_from_slice(&v);
        Integer::Small(i64::from_le_bytes(buf))
    } else {
        Integer::Big(v)
    }
}

/// A protocol 0 decimal integer (INT, LONG, keys of GET/PUT): optional sign, ASCII digits,
/// surrounding ASCII whitespace allowed, `_` between digits allowed (as Python's `int()`).
/// `max_digits` bounds the work for values outside i64.
pub(crate) fn parse_decimal(text: &[u8], max_digits: usize) -> Result<Integer, String> {
    let t = text.trim_ascii();
    let (negative, digits) = match t.first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty()
        || !digits.iter().all(|c| c.is_ascii_digit() || *c == b'_')
        || digits[0] == b'_'
        || digits[digits.len() - 1] == b'_'
        || digits.windows(2).any(|w| w == b"__")
    {
        return Err(format!(
            "invalid integer literal {:?}",
            String::from_utf8_lossy(&text[..text.len().min(40)])
        ));
    }
    // Fast path: accumulate in i128 while it cannot overflow.
    let mut small: i128 = 0;
    let mut count = 0usize;
    let mut fits = true;
    for &c in digits {
        if c == b'_' {
            continue;
        }
        count += 1;
        if fits {
            small = small * 10 + i128::from(c - b'0');
            if small > i128::from(u64::MAX) {
                fits = false;
            }
        }
    }
    if fits {
        let value = if negative { -small } else { small };
        if let Ok(v) = i64::try_from(value) {
            return Ok(Integer::Small(v));
        }
    }
    if count > max_digits {
        return Err(format!(
            "integer literal has {count} digits, over the limit of {max_digits}"
        ));
    }
    // Magnitude in base 2^32 limbs, little-endian; multiply-add nine digits at a time.
    let mut limbs: Vec<u32> = Vec::with_capacity(count / 9 + 2);
    let mut chunk: u64 = 0;
    let mut chunk_len = 0u32;
    let flush = |limbs: &mut Vec<u32>, chunk: u64, chunk_len: u32| {
        let mul = 10u64.pow(chunk_len);
        let mut carry = chunk;
        for limb in limbs.iter_mut() {
            let v = u64::from(*limb) * mul + carry;
            *limb = v as u32;
            carry = v >> 32;
        }
        while carry != 0 {
            limbs.push(carry as u32);
            carry >>= 32;
        }
    };
    for &c in digits {
        if c == b'_' {
            continue;
        }
        chunk = chunk * 10 + u64::from(c - b'0');
        chunk_len += 1;
        if chunk_len == 9 {
            flush(&mut limbs, chunk, chunk_len);
            chunk = 0;
            chunk_len = 0;
        }
    }
    if chunk_len > 0 {
        flush(&mut limbs, chunk, chunk_len);
    }
    let mut bytes: Vec<u8> = limbs.iter().flat_map(|l| l.to_le_bytes()).collect();
    bytes.push(0); // room for the sign bit
    if negative {
        let mut carry = true;
        for b in bytes.iter_mut() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    Ok(integer_from_le(&bytes))
}

fn hex_value(c: u8) -> Option<u32> {
    (c as char).to_digit(16)
}

/// Python 2 `str` literal escapes (`codecs.escape_decode`), for the protocol 0 STRING opcode.
/// `body` is the text between the quotes.
pub(crate) fn escape_decode(body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(body.len());
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = body.get(i) else {
            return Err("trailing \\ in string".into());
        };
        i += 1;
        match e {
            b'\n' => {}
            b'\\' => out.push(b'\\'),
            b'\'' => out.push(b'\''),
            b'"' => out.push(b'"'),
            b'a' => out.push(0x07),
            b'b' => out.push(0x08),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match body.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8); // Python keeps the low 8 bits
            }
            b'x' => {
                let hi = body.get(i).copied().and_then(hex_value);
                let lo = body.get(i + 1).copied().and_then(hex_value);
                match (hi, lo) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => return Err(format!("invalid \\x escape at position {}", i - 2)),
                }
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// `raw-unicode-escape` decoding (protocol 0 UNICODE): bytes are Latin-1 characters, except that
/// `\uXXXX` and `\UXXXXXXXX` after an odd number of backslashes are code points. A surrogate
/// pair written as two `\u` escapes (Python 2 narrow builds) is joined; a lone surrogate cannot be
/// held in a Rust string and is an error.
pub(crate) fn raw_unicode_escape_decode(data: &[u8]) -> Result<String, String> {
    let mut out = String::with_capacity(data.len());
    let mut i = 0;
    let mut pending_high: Option<u32> = None;
    while i < data.len() {
        let c = data[i];
        if c != b'\\' {
            if pending_high.is_some() {
                return Err("lone surrogate in UNICODE string".into());
            }
            out.push(char::from(c));
            i += 1;
            continue;
        }
        let start = i;
        while i < data.len() && data[i] == b'\\' {
            i += 1;
        }
        let run = i - start;
        let escape = run % 2 == 1 && i < data.len() && (data[i] == b'u' || data[i] == b'U');
        if !escape {
            if pending_high.is_some() {
                return Err("lone surrogate in UNICODE string".into());
            }
            out.extend(std::iter::repeat('\\').take(run));
            continue;
        }
        if pending_high.is_some() && run > 1 {
            return Err("lone surrogate in UNICODE string".into());
        }
        out.extend(std::iter::repeat('\\').take(run - 1));
        let count = if data[i] == b'u' { 4 } else { 8 };
        i += 1;
        let mut code: u32 = 0;
        for _ in 0..count {
            match data.get(i).copied().and_then(hex_value) {
                Some(d) => {
                    code = (code << 4) | d;
                    i += 1;
                }
                None => {
                    return Err(if count == 4 {
                        "truncated \\uXXXX escape".into()
                    } else {
                        "truncated \\UXXXXXXXX escape".into()
                    })
                }
            }
        }
        if code > 0x10ffff {
            return Err("\\Uxxxxxxxx out of range".into());
        }
        match (pending_high.take(), code) {
            (None, 0xd800..=0xdbff) => pending_high = Some(code),
            (Some(high), 0xdc00..=0xdfff) => {
                let joined = 0x10000 + ((high - 0xd800) << 10) + (code - 0xdc00);
                out.push(char::from_u32(joined).ok_or("bad surrogate pair")?);
            }
            (Some(_), _) | (None, 0xdc00..=0xdfff) => {
                return Err("lone surrogate in UNICODE string".into())
            }
            (None, _) => out.push(char::from_u32(code).ok_or("invalid code point")?),
        }
    }
    if pending_high.is_some() {
        return Err("lone surrogate in UNICODE string".into());
    }
    Ok(out)
}
