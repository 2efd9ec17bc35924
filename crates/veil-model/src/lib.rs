//! veil-model: the IR, the plan format, the importer, and the plain f32 executor.
//!
//! A model enters as an architecture description plus a safetensors file
//! ([`import::compile`]) and becomes a [`Plan`]: its public part ([`PublicPlan`]: graph,
//! shapes, fixed-point parameters, approximation and output policy) and its weights.
//! `NAME.plan` holds both and stays with the server; `NAME.public.plan` holds the public
//! part for the client and the dealer. [`plain::run_plain`] is the f32 reference.
//!
//! # What this crate does not do
//! No secure execution (veil-exec) and no networking.
//!
//! # Secrets
//! A [`Plan`]'s weights are the server's secret: `Plan`'s `Debug` does not print them
//! and errors name parameters and shapes only. Everything in [`PublicPlan`] is public.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

mod error;
pub mod import;
pub mod ir;
pub mod plain;
pub mod plan;
pub mod zoo;

pub use error::{Error, Result};
pub use plan::{Plan, PublicPlan};
