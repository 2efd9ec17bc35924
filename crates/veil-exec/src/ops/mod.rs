//! The ops, one module per family, each written once over [`veil_mpc::Protocol`] so the
//! simulation, both secure parties and the dealer's generator run the same code.
//!
//! - [`affine`]: server-held linear maps (linear, conv2d) with bias and truncation;
//! - [`pooling`]: max pooling (a comparison tree) and average pooling;
//! - [`elementwise`]: ReLU, the `quad` activations a·x² + b·x + c, residual sums and
//!   public scales;
//! - [`attention`]: products of two secrets (Q·Kᵀ, P·V), batched over heads;
//! - [`layout`]: reshape and transpose (local);
//! - [`sequence`]: padded sequences under the attention mask (masked scores, masked sum
//!   pooling);
//! - [`gelu`]: GELU by PUMA's piecewise polynomial;
//! - [`layer_norm`]: layer normalisation (mean, variance, a comparison-normalised Newton
//!   rsqrt, the server's γ and β);
//! - [`softmax`]: softmax over the last dimension (max, limit-form exp, Newton reciprocal);
//! - [`approximate_softmax`]: MPCFormer's 2Quad and 2ReLU softmax replacements;
//! - [`tanh`]: tanh from the softmax's exponential and a Newton reciprocal;
//! - [`blocks`]: what the others share (public constants, row sums and broadcasts, the
//!   max tournament);
//! - [`argmax`]: the `label` output policy's secure argmax.
//!
//! A new op family gets a module of its own here,
//! and one arm in [`crate::run`]'s match and in [`crate::error_bound`]'s.

pub mod affine;
pub mod approximate_softmax;
pub mod argmax;
pub mod attention;
pub mod blocks;
pub mod elementwise;
pub mod gelu;
pub mod gelu_table;
pub mod layer_norm;
pub mod layout;
pub mod pooling;
pub mod sequence;
pub mod softmax;
pub mod tanh;
