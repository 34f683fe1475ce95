//! Python's spelling of numbers (`repr(float)`, `str(int)`), for naming dict keys as Python
//! prints them.

/// Most bytes of a big int spelled in decimal (2^1279, 386 digits): converting costs
/// O(bytes²), and a memoized key may be named once per walk step. Larger ints are spelled `?`.
pub const MAX_DECIMAL_INT_BYTES: usize = 160;

/// `repr(f)` as CPython writes it: the shortest digits that read back as `f`, positional when
/// the decimal exponent is in -4..16 (with `.0` when integral), else `d.ddde±XX` with at least
/// two exponent digits; `nan`, `inf`, `-inf`, `-0.0`.
pub fn python_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "nan".to_string();
    }
    if f.is_infinite() {
        return if f > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    let sign = if f.is_sign_negative() { "-" } else { "" };
    if f == 0.0 {
        return format!("{sign}0.0");
    }
    // Rust's `{:e}` is the shortest round-trip digits too: "d.ddde-x".
    let scientific = format!("{:e}", f.abs());
    let (mantissa, exponent) = scientific
        .split_once('e')
        .expect("`{:e}` always writes an exponent");
    let exponent: i32 = exponent.parse().expect("`{:e}` writes a decimal exponent");
    let digits: String = mantissa.chars().filter(|&c| c != '.').collect();
    if (-4..16).contains(&exponent) {
        if exponent < 0 {
            let zeros = "0".repeat((-exponent - 1) as usize);
            return format!("{sign}0.{zeros}{digits}");
        }
        let integer_len = exponent as usize + 1;
        if digits.len() <= integer_len {
            let zeros = "0".repeat(integer_len - digits.len());
            return format!("{sign}{digits}{zeros}.0");
        }
        let (int, frac) = digits.split_at(integer_len);
        return format!("{sign}{int}.{frac}");
    }
    let (first, rest) = digits.split_at(1);
    let point = if rest.is_empty() { "" } else { "." };
    let exp_sign = if exponent < 0 { '-' } else { '+' };
    format!("{sign}{first}{point}{rest}e{exp_sign}{:02}", exponent.abs())
}

/// `str(n)` of an int given as little-endian two's complement (pickle's LONG form); `None`
/// when it has more than [`MAX_DECIMAL_INT_BYTES`] bytes.
pub fn int_decimal(bytes: &[u8]) -> Option<String> {
    (bytes.len() <= MAX_DECIMAL_INT_BYTES).then(|| le_twos_complement_to_decimal(bytes))
}

/// Decimal text of a little-endian two's-complement integer of any length (O(bytes²): callers
/// bound the length).
pub fn le_twos_complement_to_decimal(bytes: &[u8]) -> String {
    let negative = bytes.last().is_some_and(|b| b & 0x80 != 0);
    // Magnitude as little-endian u32 limbs.
    let mut magnitude: Vec<u8> = bytes.to_vec();
    if negative {
        let mut carry = true;
        for b in magnitude.iter_mut() {
            let (v, c) = (!*b).overflowing_add(u8::from(carry));
            *b = v;
            carry = c;
        }
    }
    let mut limbs: Vec<u32> = magnitude
        .chunks(4)
        .map(|c| {
            let mut word = [0u8; 4];
            word[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(word)
        })
        .collect();
    // Repeated division by 10^9, least significant chunk first.
    let mut chunks = Vec::new();
    while limbs.iter().any(|&l| l != 0) {
        let mut remainder = 0u64;
        for limb in limbs.iter_mut().rev() {
            let value = (remainder << 32) | u64::from(*limb);
            *limb = (value / 1_000_000_000) as u32;
            remainder = value % 1_000_000_000;
        }
        chunks.push(remainder as u32);
        while limbs.last() == Some(&0) {
            limbs.pop();
        }
    }
    let mut out = String::from(if negative { "-" } else { "" });
    match chunks.split_last() {
        None => out.push('0'),
        Some((top, rest)) => {
            out.push_str(&top.to_string());
            for chunk in rest.iter().rev() {
                out.push_str(&format!("{chunk:09}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_spelled_as_python_repr() {
        let cases = [
            (1e16, "1e+16"),
            (1e-5, "1e-05"),
            (1e300, "1e+300"),
            (1e-300, "1e-300"),
            (1.5, "1.5"),
            (-0.0, "-0.0"),
            (0.0, "0.0"),
            (1.0, "1.0"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e15, "1000000000000000.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (9999999999999998.0, "9999999999999998.0"),
            (0.1, "0.1"),
            (1.0 / 3.0, "0.3333333333333333"),
            (2.5e-7, "2.5e-07"),
            (-1.5e100, "-1.5e+100"),
            (f64::MAX, "1.7976931348623157e+308"),
            (5e-324, "5e-324"),
            (f64::NAN, "nan"),
            (-f64::NAN, "nan"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
            (18446744073709551616.0, "1.8446744073709552e+19"),
        ];
        for (f, expected) in cases {
            assert_eq!(python_float_repr(f), expected, "{f:?}");
        }
    }

    #[test]
    fn ints_are_spelled_in_decimal() {
        assert_eq!(int_decimal(&[]).as_deref(), Some("0"));
        assert_eq!(int_decimal(&[0xff]).as_deref(), Some("-1"));
        assert_eq!(int_decimal(&[0x80]).as_deref(), Some("-128"));
        let mut p70 = vec![0u8; 8];
        p70.push(0x40);
        assert_eq!(int_decimal(&p70).as_deref(), Some("1180591620717411303424"));
        let mut m70 = vec![0u8; 8];
        m70.push(0xc0);
        assert_eq!(
            int_decimal(&m70).as_deref(),
            Some("-1180591620717411303424")
        );
        // 10**40 = 0x1d6329f1c35ca4bfabb9f5610000000000
        let hex = "1d6329f1c35ca4bfabb9f5610000000000";
        let mut ten40: Vec<u8> = (0..hex.len())
            .step_by(2)
            .rev()
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        ten40.push(0);
        assert_eq!(
            int_decimal(&ten40).as_deref(),
            Some("10000000000000000000000000000000000000000")
        );
        assert_eq!(int_decimal(&[1; MAX_DECIMAL_INT_BYTES + 1]), None);
    }
}
