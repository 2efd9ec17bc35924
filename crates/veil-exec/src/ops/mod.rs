//! The ops, one module per family, each written once over [`veil_mpc::Protocol`] so the
//! simulation, both secure parties and the dealer's generator run the same code.
//!
//! - [`affine`]: server-held linear maps (linear, conv2d) with bias and truncation;
//! - [`pooling`]: max pooling (a comparison tree) and average pooling;
//! - [`elementwise`]: ReLU and residual sums;
//! - [`gelu`]: GELU by PUMA's piecewise polynomial;
//! - [`layer_norm`]: layer normalisation (mean, variance, a comparison-normalised Newton
//!   rsqrt, the server's γ and β);
//! - [`softmax`]: softmax over the last dimension (max, limit-form exp, Newton reciprocal);
//! - [`argmax`]: the `label` output policy's secure argmax.
//!
//! A new op family (attention) gets a module of its own here,
//! and one arm in [`crate::run`]'s match and in [`crate::error_bound`]'s.

pub mod affine;
pub mod argmax;
pub mod elementwise;
pub mod gelu;
pub mod layer_norm;
pub mod pooling;
pub mod softmax;
