//! veil-mpc: the [`Protocol`] trait and its settings, and the dealer's material
//! generation.
//!
//! Settings:
//! - [`Cleartext`]: the fixed-point simulation, the same ring semantics in the clear;
//! - `dealer`: two computing parties ([`Party`], server P0 and client P1) with additive
//!   shares over Z_2^64, helped by a non-colluding dealer whose [`MaterialGenerator`]
//!   makes each query's correlated randomness ([`PartyMaterial`]) ahead of time.
//!
//! The executor in veil-exec is generic over [`Protocol`]; the dealer runs it with
//! [`MaterialGenerator`] over the public plan, so the dealer and both parties agree op by
//! op on what is consumed (each item is tagged and checked).
//!
//! # Layout: one room per setting, one file per protocol
//! - `protocol.rs` (the trait and its shape checks), `cleartext.rs` (the reference
//!   setting) and `error.rs` sit at the root;
//! - `dealer/` is the dealer setting's room: the party, the generator, and one file per
//!   interactive step (one-sided weight product, truncation, Beaver triples,
//!   comparisons) holding both the dealer's generation and the parties' evaluation of
//!   that step, beside the material, its word codec and the role parameters (see the
//!   room's module doc);
//! - `fss/` holds the function secret sharing the dealer setting uses: the DCF
//!   ([`dcf`]) and the comparison gates on it ([`gates`]).
//!
//! A new primitive (a lookup table, nExp, reciprocal, rsqrt) gets a file of its own under
//! the setting's room, and a new setting (rep3) gets a room of its own beside `dealer/`.
//! The public paths do not follow the rooms: [`material`], [`parameters`], [`dcf`] and
//! [`gates`] are re-exported at the root.
//!
//! ```
//! use veil_core::{FixedPoint, RingTensor};
//! use veil_mpc::{Cleartext, Protocol};
//!
//! let mut simulation = Cleartext::new(FixedPoint::default(), vec![], vec![]);
//! let x = RingTensor::new(vec![3], vec![5, (-7i64) as u64, 0]).unwrap();
//! let x = simulation.input(&[3], Some(&x)).unwrap();
//! let y = simulation.relu(&x, 64).unwrap();
//! assert_eq!(simulation.reveal_to_client(&y).unwrap().unwrap().data(), &[5, 0, 0]);
//! ```
//!
//! # What this crate does not do
//! No networking of its own (it talks through veil-net's `Channel`), no plan files, no
//! sessions or pools (veil-serve).
//!
//! # Secrets
//! Shares ([`Share`]), material, seeds and weights are secret: none of them implements a
//! `Debug` that prints values, and errors name ops, tags and sizes only. Material and
//! seeds are zeroised on drop.
//!
//! # Features
//! - `testing`: deterministic seeds, a seeded material generator
//!   (`MaterialGenerator::dangerous_from_test_seed`, to replay a test's
//!   `veil_core::sampling::test_seed`) and raw share access, for tests only.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod accounting;
mod cleartext;
mod dealer;
mod error;
mod fss;
mod protocol;

pub use cleartext::Cleartext;
pub use dealer::{
    ComparisonKeys, MaterialGenerator, MaterialSink, Party, PartyParameters, PartyWeight,
    ShapeOnly, Share,
};
pub use dealer::{material, parameters};
pub use error::{Error, PeerMisbehaved, Result};
pub use fss::{dcf, dpf, gates};
pub use material::{MaterialFeeder, PartyMaterial, PartyRole, SessionId, SessionLedger};
pub use parameters::{ClientParameters, DealerParameters, ServerParameters};
pub use protocol::{MAX_LOOKUP_BITS, MIN_LOOKUP_BITS, Protocol};
