//! veil-core: the arithmetic under every veil protocol.
//!
//! It holds the ring Z_2^64 (wrapping `u64` arithmetic), the fixed-point codec that maps
//! reals into it, [`RingTensor`] (a shaped, row-major buffer of ring elements), the u64
//! GEMM and convolution kernels, and the cryptographic PRG ([`prg::Prg`], AES-128-CTR)
//! with OS-random seeds; [`sampling`] is the deterministic, non-cryptographic sampler for
//! public data (benchmark weights, training initialisation, test inputs).
//!
//! # What this crate does not do
//! No networking, no protocol logic, no model formats: those live in veil-net, veil-mpc
//! and veil-model. Nothing here knows who holds a value.
//!
//! # Secrets
//! A [`prg::Seed`] is secret: it is zeroised on drop and its `Debug` prints nothing of
//! it. Ring tensors may hold secrets (shares, weights); their `Debug` prints shape only.
//! Errors name shapes and public parameters, never values.
//!
//! # Features
//! - `testing`: deterministic seeds (`prg::Seed::dangerous_from_test_value`) for tests
//!   and reproducible experiments. Release binaries refuse to run with it.
#![deny(missing_docs)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(clippy::unwrap_used)]

mod error;
pub mod fixed;
pub mod kernels;
pub mod prg;
pub mod sampling;
pub mod tensor;

pub use error::{Error, Result};
pub use fixed::FixedPoint;
pub use tensor::RingTensor;
