//! `convert_elements` against torch 2.15's `.to()`: tests/data/conversions/conversions.tsv
//! (scripts/make_conversions.py) holds, per dtype pair, source bytes and torch's result; every
//! converted byte must be equal (NaN payloads, subnormals, ties, infinities, out-of-range values
//! and, for the float8 kinds, all 256 bytes).

use mmckpt::{can_convert, convert_elements, DType, ErrorKind};

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn dtype(name: &str) -> DType {
    DType::ALL
        .into_iter()
        .find(|d| d.name() == name)
        .unwrap_or_else(|| panic!("unknown dtype {name}"))
}

#[test]
fn conversions_equal_torch_bit_for_bit() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/conversions/conversions.tsv"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut pairs = 0;
    for line in text.lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        let (from, to) = (dtype(cols[0]), dtype(cols[1]));
        let count: usize = cols[2].parse().unwrap();
        let (src, want) = (hex(cols[3]), hex(cols[4]));
        assert_eq!(src.len(), count * from.itemsize());
        // Both at an odd address too: no alignment is needed.
        for shift in [0, 1] {
            let mut shifted = vec![0u8; src.len() + shift];
            shifted[shift..].copy_from_slice(&src);
            let mut got = vec![0u8; want.len() + shift];
            convert_elements(&shifted[shift..], from, &mut got[shift..], to).unwrap();
            let size = to.itemsize();
            for (i, (g, w)) in got[shift..].chunks(size).zip(want.chunks(size)).enumerate() {
                assert_eq!(
                    g,
                    w,
                    "{from} -> {to}: element {i} (source bytes {:02x?})",
                    &src[i * from.itemsize()..(i + 1) * from.itemsize()]
                );
            }
        }
        pairs += 1;
    }
    assert_eq!(pairs, 21);
}

#[test]
fn unsupported_pairs_and_bad_lengths_are_refused() {
    let mut dst = [0u8; 4];
    let err =
        convert_elements(&[0; 4], DType::Float32, &mut dst[..1], DType::Float8E4M3Fn).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unsupported);
    assert!(
        err.message.contains("float32 to float8_e4m3fn"),
        "{}",
        err.message
    );
    assert!(!can_convert(DType::Int32, DType::Float32));
    assert!(can_convert(DType::Int32, DType::Int32));
    let err = convert_elements(&[0; 3], DType::Float32, &mut dst, DType::Float32).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    let err = convert_elements(&[0; 4], DType::Float32, &mut dst[..2], DType::Float32).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
}
