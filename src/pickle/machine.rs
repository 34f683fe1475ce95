//! (being written)
use super::value::{Arena, NodeId};
use crate::error::{Error, Result};

#[derive(Clone, Debug, Default)]
pub struct Limits {}

pub fn load(_arena: &mut Arena, _data: &[u8], _limits: &Limits) -> Result<(NodeId, usize)> {
    Err(Error::unsupported("pickle machine not written yet"))
}
