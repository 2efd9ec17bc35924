//! veil-mpc's settings against each other: one set of programs, written once over the
//! [`Protocol`](veil_mpc::Protocol) trait, runs in every setting and must stay within
//! that setting's documented error bound of the cleartext reference (`matrix.rs`); the
//! dealer setting's own guarantees (consume-once, roles, χ² uniformity of what the
//! parties open, malformed peers, no values in `Debug`) are tested in `dealer.rs`.
//!
//! Every test draws its randomness from `veil_core::sampling::test_seed`, so a failing
//! test prints its seed and `VEIL_TEST_SEED=N` replays it, the dealer's material
//! included.
//!
//! - `fixture.rs`: the clear test data (weights, biases, inputs) and its seeds;
//! - `programs.rs`: the programs, each with its bound;
//! - `settings.rs`: the [`settings::Setting`] trait, the bounds, and the settings;
//! - `matrix.rs`: the tests every setting runs, and the list of settings;
//! - `dealer.rs`: the tests of the dealer setting alone.

mod dealer;
mod fixture;
mod matrix;
mod programs;
mod settings;
