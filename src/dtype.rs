//! Element types, spelled as torch spells them. The numeric codes are the C ABI's
//! `mmckpt_dtype` values and are never renumbered.

/// Every dtype torch.save can write whose elements have a fixed byte size.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum DType {
    /// `torch.float32` (4 bytes per element)
    Float32 = 1,
    /// `torch.float64` (8 bytes per element)
    Float64 = 2,
    /// `torch.float16` (2 bytes per element)
    Float16 = 3,
    /// `torch.bfloat16` (2 bytes per element)
    BFloat16 = 4,
    /// `torch.int8` (1 byte per element)
    Int8 = 5,
    /// `torch.uint8` (1 byte per element)
    UInt8 = 6,
    /// `torch.int16` (2 bytes per element)
    Int16 = 7,
    /// `torch.int32` (4 bytes per element)
    Int32 = 8,
    /// `torch.int64` (8 bytes per element)
    Int64 = 9,
    /// `torch.bool` (1 byte per element)
    Bool = 10,
    /// `torch.complex64` (8 bytes per element)
    Complex64 = 11,
    /// `torch.complex128` (16 bytes per element)
    Complex128 = 12,
    /// `torch.uint16` (2 bytes per element)
    UInt16 = 13,
    /// `torch.uint32` (4 bytes per element)
    UInt32 = 14,
    /// `torch.uint64` (8 bytes per element)
    UInt64 = 15,
    /// `torch.complex32` (4 bytes per element)
    Complex32 = 16,
    /// `torch.float8_e4m3fn` (1 byte per element)
    Float8E4M3Fn = 17,
    /// `torch.float8_e5m2` (1 byte per element)
    Float8E5M2 = 18,
    /// `torch.float8_e4m3fnuz` (1 byte per element)
    Float8E4M3FnUz = 19,
    /// `torch.float8_e5m2fnuz` (1 byte per element)
    Float8E5M2FnUz = 20,
    /// `torch.float8_e8m0fnu` (1 byte per element)
    Float8E8M0Fnu = 21,
    /// `torch.float4_e2m1fn_x2` (1 byte per element)
    Float4E2M1FnX2 = 22,
    /// `torch.bits8` (1 byte per element)
    Bits8 = 23,
    /// `torch.bits16` (2 bytes per element)
    Bits16 = 24,
    /// `torch.bits1x8` (1 byte per element)
    Bits1x8 = 25,
    /// `torch.bits2x4` (1 byte per element)
    Bits2x4 = 26,
    /// `torch.bits4x2` (1 byte per element)
    Bits4x2 = 27,
}

/// (dtype, torch name, itemsize, typed storage class name or "" when only untyped storages carry it)
const TABLE: &[(DType, &str, usize, &str)] = &[
    (DType::Float32, "float32", 4, "FloatStorage"),
    (DType::Float64, "float64", 8, "DoubleStorage"),
    (DType::Float16, "float16", 2, "HalfStorage"),
    (DType::BFloat16, "bfloat16", 2, "BFloat16Storage"),
    (DType::Int8, "int8", 1, "CharStorage"),
    (DType::UInt8, "uint8", 1, "ByteStorage"),
    (DType::Int16, "int16", 2, "ShortStorage"),
    (DType::Int32, "int32", 4, "IntStorage"),
    (DType::Int64, "int64", 8, "LongStorage"),
    (DType::Bool, "bool", 1, "BoolStorage"),
    (DType::Complex64, "complex64", 8, "ComplexFloatStorage"),
    (DType::Complex128, "complex128", 16, "ComplexDoubleStorage"),
    (DType::UInt16, "uint16", 2, ""),
    (DType::UInt32, "uint32", 4, ""),
    (DType::UInt64, "uint64", 8, ""),
    (DType::Complex32, "complex32", 4, ""),
    (DType::Float8E4M3Fn, "float8_e4m3fn", 1, ""),
    (DType::Float8E5M2, "float8_e5m2", 1, ""),
    (DType::Float8E4M3FnUz, "float8_e4m3fnuz", 1, ""),
    (DType::Float8E5M2FnUz, "float8_e5m2fnuz", 1, ""),
    (DType::Float8E8M0Fnu, "float8_e8m0fnu", 1, ""),
    (DType::Float4E2M1FnX2, "float4_e2m1fn_x2", 1, ""),
    (DType::Bits8, "bits8", 1, ""),
    (DType::Bits16, "bits16", 2, ""),
    (DType::Bits1x8, "bits1x8", 1, ""),
    (DType::Bits2x4, "bits2x4", 1, ""),
    (DType::Bits4x2, "bits4x2", 1, ""),
];

/// Other spellings torch uses for the same dtype objects (`torch.half` is `torch.float16`).
const ALIASES: &[(&str, DType)] = &[
    ("float", DType::Float32),
    ("double", DType::Float64),
    ("half", DType::Float16),
    ("short", DType::Int16),
    ("int", DType::Int32),
    ("long", DType::Int64),
    ("cfloat", DType::Complex64),
    ("cdouble", DType::Complex128),
    ("chalf", DType::Complex32),
    ("complex16", DType::Complex32),
];

impl std::fmt::Display for DType {
    /// torch's spelling ([`DType::name`]).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl DType {
    /// Every dtype, in code order.
    pub const ALL: [DType; 27] = {
        let mut all = [DType::Float32; 27];
        let mut i = 0;
        while i < 27 {
            all[i] = TABLE[i].0;
            i += 1;
        }
        all
    };

    fn row(self) -> &'static (DType, &'static str, usize, &'static str) {
        &TABLE[self as usize - 1]
    }
    /// The C ABI's `mmckpt_dtype` value (stable).
    pub fn code(self) -> u32 {
        self as u32
    }
    /// The dtype of a C ABI `mmckpt_dtype` value.
    pub fn from_code(code: u32) -> Option<DType> {
        let index = (code as usize).checked_sub(1)?;
        TABLE.get(index).map(|row| row.0)
    }
    /// torch's spelling: "float32", "bfloat16", …
    pub fn name(self) -> &'static str {
        self.row().1
    }
    /// Bytes per element as torch counts elements (`float4_e2m1fn_x2` is one byte holding two
    /// values, `bits1x8` one byte of eight bits).
    pub fn itemsize(self) -> usize {
        self.row().2
    }
    /// Parses a torch dtype name as written in `torch.<name>` (aliases included).
    pub fn from_name(name: &str) -> Option<DType> {
        TABLE
            .iter()
            .find(|row| row.1 == name)
            .map(|row| row.0)
            .or_else(|| ALIASES.iter().find(|a| a.0 == name).map(|a| a.1))
    }
    /// The dtype of a legacy typed storage class (`FloatStorage` → float32).
    pub fn from_storage_class(class_name: &str) -> Option<DType> {
        TABLE
            .iter()
            .find(|row| !row.3.is_empty() && row.3 == class_name)
            .map(|row| row.0)
    }
    /// The legacy typed storage class torch names for this dtype (`float32` → `FloatStorage`);
    /// `None` for dtypes only untyped storages carry.
    pub fn storage_class(self) -> Option<&'static str> {
        TABLE
            .iter()
            .find(|row| row.0 == self && !row.3.is_empty())
            .map(|row| row.3)
    }
    /// One of the four floating dtypes loads convert between: float64, float32, float16,
    /// bfloat16 (`Module::set_floating_dtype` changes only these).
    pub fn is_floating(self) -> bool {
        matches!(
            self,
            DType::Float32 | DType::Float64 | DType::Float16 | DType::BFloat16
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_table_is_in_code_order() {
        for (i, row) in TABLE.iter().enumerate() {
            assert_eq!(row.0 as usize, i + 1, "{}", row.1);
            assert_eq!(DType::from_code(row.0.code()), Some(row.0));
            assert_eq!(DType::from_name(row.1), Some(row.0));
        }
        assert_eq!(DType::from_code(0), None);
        assert_eq!(DType::from_code(28), None);
        assert_eq!(DType::ALL.len(), TABLE.len());
    }

    #[test]
    fn storage_classes_and_aliases() {
        assert_eq!(
            DType::from_storage_class("BFloat16Storage"),
            Some(DType::BFloat16)
        );
        assert_eq!(DType::from_storage_class("UntypedStorage"), None);
        assert_eq!(DType::from_name("half"), Some(DType::Float16));
        assert_eq!(DType::BFloat16.itemsize(), 2);
    }
}
