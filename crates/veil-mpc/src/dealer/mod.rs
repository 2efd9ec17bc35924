//! The `dealer` setting: two computing parties, server P0 and client P1, with additive
//! shares over Z_2^64, helped by a non-colluding dealer that makes each query's
//! correlated randomness ahead of time.

pub mod material;
pub mod parameters;

mod generator;
mod party;

pub use generator::{MaterialGenerator, ShapeOnly};
pub use party::{Party, PartyParameters, PartyWeight, Share};
