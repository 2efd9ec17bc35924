//! veil-exec: runs a plan's graph over any [`veil_mpc::Protocol`], and owns each role's steps of
//! one query.
//!
//! [`run`] is the one executor: with [`veil_mpc::Cleartext`] it is the fixed-point
//! simulation, with [`veil_mpc::Party`] it is one side of the secure computation, and
//! with [`veil_mpc::MaterialGenerator`] it is the dealer's preprocessing schedule (the
//! dry run over the public plan that makes each party's tagged material). Every
//! operation is therefore written once.
//!
//! The jobs, a module each:
//! - [`run`](mod@run): the graph walk; [`ops`]: one module per op family;
//! - [`parameters`]: each role's form of the plan's parameters;
//! - [`codec`]: the client's inputs in ([`encode_inputs`]) and its output out;
//! - [`bound`]: the documented error bound against the f32 reference;
//! - [`breakdown`]: one query's costs per operator kind and per primitive;
//! - [`session`]: each role's steps of one query (generate, set up, run, finish), which
//!   veil-serve, the demo and the test harnesses call.
//!
//! ```
//! let plan = veil_model::zoo::random_mlp("tiny", &[4, 3, 2], 0)?;
//! let input = [0.5, -1.0, 0.25, 2.0];
//! let mut simulation = veil_exec::cleartext(&plan)?;
//! let encoded = veil_exec::encode_inputs(&plan.public, &input, 1)?;
//! let output = veil_exec::run(&mut simulation, &plan.public, 1, Some(&encoded))?
//!     .expect("the simulation sees the output");
//! let logits = veil_exec::decode_output(&plan.public, &output)?;
//! let plain = veil_model::plain::run_plain(&plan, &input, 1)?;
//! let bound = veil_exec::error_bound(&plan, &input)?;
//! assert!(logits.iter().zip(&plain).all(|(s, p)| f64::from((s - p).abs()) <= bound));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # What this crate does not do
//! No processes, sockets, handshakes or pools (veil-serve): a session here is handed
//! its channel and its material.
//!
//! # Secrets
//! Inputs, weights and shares pass through here; nothing is logged and errors carry
//! shapes, node indices and names only.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod bound;
pub mod breakdown;
pub mod codec;
pub mod ops;
pub mod parameters;
mod run;
pub mod session;

pub use bound::error_bound;
pub use codec::{decode_output, encode_inputs};
pub use parameters::{cleartext, cleartext_checked, dealer_parameters, server_parameters};
pub use run::{Observer, run, run_observed};

/// What can go wrong running a plan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model-level error (shapes, plan, an input that cannot be encoded).
    #[error(transparent)]
    Model(#[from] veil_model::Error),
    /// A protocol error.
    #[error(transparent)]
    Mpc(#[from] veil_mpc::Error),
    /// A tensor-level error (e.g. an input out of the fixed-point range).
    #[error(transparent)]
    Core(#[from] veil_core::Error),
    /// The executor was given another number of encoded inputs than the plan has.
    #[error("the plan has {expected} inputs but {found} were given")]
    InputCount {
        /// The plan's inputs.
        expected: usize,
        /// The tensors given.
        found: usize,
    },
    /// An input reaches an op outside the range its error bound documents.
    #[error("node {node}: {reason}")]
    OutOfRange {
        /// The node.
        node: usize,
        /// What is out of range (the documented range, never a value).
        reason: String,
    },
    /// An op's secure form does not support the plan's fixed-point precision.
    #[error(
        "{op} supports {supported} fractional bits, the plan has {found}; recompile the plan with fewer"
    )]
    UnsupportedPrecision {
        /// The op.
        op: &'static str,
        /// The range it supports.
        supported: &'static str,
        /// The plan's fractional bits.
        found: u32,
    },
    /// The client's run ended without an output (a protocol that reveals nothing to
    /// the client).
    #[error("the client's run revealed no output")]
    NoOutput,
    /// A thread of an in-process measurement ended without a result (a bug).
    #[error("the {0} thread of the measurement panicked")]
    Panicked(&'static str),
}

/// veil-exec's result type.
pub type Result<T> = std::result::Result<T, Error>;
