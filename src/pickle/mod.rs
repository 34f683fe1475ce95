//! A restricted pickle machine: it builds a value tree and never calls anything.

mod keys;
mod machine;
pub(crate) mod opcodes;
pub mod repr;
mod text;
pub mod value;

#[cfg(test)]
mod tests;

pub use machine::{load, PickleLimits};
pub use value::{Arena, DictClass, NodeId, ReadAt, Value};
