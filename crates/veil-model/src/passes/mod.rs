//! Compile passes: rewrites that make a model cheaper under MPC without changing what it
//! computes (beyond the fixed-point error the plan states).
//!
//! - [`batch_norm`]: folds inference-form batch normalisation into the layer before it;
//! - [`pool_before_relu`]: moves a ReLU after the max pool that follows it;
//! - [`calibration`]: sets each comparison's bit-width from the ranges calibration
//!   inputs reach.
//!
//! A new pass gets a module of its own here.

pub mod batch_norm;
pub mod calibration;
pub mod pool_before_relu;
