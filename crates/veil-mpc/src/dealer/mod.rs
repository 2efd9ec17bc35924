//! The `dealer` setting: two computing parties, the server P0 (the model owner) and the
//! client P1 (the input owner, the only party that learns the output), with additive
//! shares over Z_2^64, helped by a non-colluding dealer that makes each query's
//! correlated randomness ahead of time (DESIGN.md §1, §3).
//!
//! # What each role holds
//! - The server: the weights W and their masks B, the biases, and per query its
//!   [`PartyMaterial`](material::PartyMaterial): a seed it shares with the dealer plus
//!   corrections (C₁, truncation corrections, gate constants, comparison keys' correction
//!   words).
//! - The client: the masked weights D = W + B (sent once per client session) and per
//!   query its material: a seed it shares with the dealer plus the comparison keys'
//!   correction words.
//! - The dealer: the masks B only (from the weight seed it shares with the server, see
//!   [`parameters`]), and per query both parties' seeds. It never sees an input, a share
//!   or an output.
//!
//! # What is sent
//! Before the query the dealer sends each party its material, and only that party's
//! ([`material`]). During the query the parties exchange, per interactive step:
//! - one-sided product with a fixed weight mask (DESIGN.md §4, cookbook §2.2 item 2):
//!   the client sends E = X₁ + A_q, the layer's only message;
//! - precise truncation TruncPr (cookbook §1.4): both open c = x + 2^62 + r, one round;
//! - Beaver products, elementwise and matrix (cookbook §2.1): both open ε = X − A and
//!   δ = Y − B, one round;
//! - DReLU and ReLU in the gate model (cookbook §3.4, [`crate::gates`]): both open
//!   x + r (k bits for DReLU, 64 for ReLU), one round, and with point-function keys
//!   (the default, [`ComparisonKeys`]) then one bit per element, a second round;
//! - public-table lookups at a secret index (`lookup.rs`): both open x + ρ on the
//!   table's index bits, then a sign-masked sum, two rounds;
//! - bit × value selects (`select.rs`): both open one masked bit and one masked value,
//!   one round;
//! - output to the client only: the server sends its share, the client adds.
//!
//! Every other operation is local.
//!
//! # Files
//! - `party.rs`: [`Party`] and [`Share`], and the parties' [`Protocol`](crate::Protocol)
//!   implementation, which does the local operations and the output and dispatches each
//!   interactive step;
//! - `generator.rs`: [`MaterialGenerator`], the dealer's [`Protocol`](crate::Protocol)
//!   implementation over the public plan, which dispatches the same steps;
//! - one file per interactive step, `weight_product.rs`, `truncation.rs`, `beaver.rs`,
//!   `comparison.rs`, each holding that step's whole protocol: what both sides draw from
//!   the seed they share, the dealer's generation and the parties' evaluation, side by
//!   side, so that the two halves cannot drift apart;
//! - `material.rs`: the material, its tags and its wire format; `codec.rs`: the
//!   little-endian word codec every message and item uses; `parameters.rs`: each role's
//!   form of the weights.

pub mod material;
pub mod parameters;

mod beaver;
mod codec;
mod comparison;
mod generator;
mod lookup;
mod party;
mod select;
mod truncation;
mod weight_product;

pub use comparison::ComparisonKeys;
pub use generator::{MaterialGenerator, MaterialSink, ShapeOnly};
pub use party::{Party, PartyParameters, PartyWeight, Share};
