//! (being written: temporary interface stub)
use crate::error::{Error, Result};
pub struct ZipRecord {
    pub name: String,
    pub data_offset: u64,
    pub size: u64,
}
#[derive(Clone, Debug, Default)]
pub struct ZipLimits {
    pub max_records: usize,
}
pub struct ZipArchive {
    records: Vec<ZipRecord>,
}
pub fn looks_like_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04")
}
pub fn parse(_bytes: &[u8], _limits: &ZipLimits) -> Result<ZipArchive> {
    Err(Error::unsupported("stub"))
}
impl ZipArchive {
    pub fn prefix(&self) -> &str {
        ""
    }
    pub fn records(&self) -> &[ZipRecord] {
        &self.records
    }
    pub fn get(&self, _relative: &str) -> Option<&ZipRecord> {
        None
    }
    pub fn data<'a>(&self, bytes: &'a [u8], _record: &ZipRecord) -> &'a [u8] {
        bytes
    }
    pub fn text(&self, _bytes: &[u8], _relative: &str) -> Option<String> {
        None
    }
}
