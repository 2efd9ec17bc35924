//! veil-model: the IR, the plan format, the importers, the compile passes and the plain
//! f32 executor.
//!
//! A model enters through an importer ([`import`]: an architecture description plus a
//! safetensors file today, Hugging Face and ONNX beside it later), is rewritten by the
//! compile passes ([`passes`]: batch-norm folding, pool before ReLU, calibration) and
//! becomes a [`Plan`]: its public part ([`PublicPlan`]: the [`ir::Graph`] with its named
//! client inputs, shapes, fixed-point parameters, approximation and output policy) and
//! its weights. `NAME.plan` holds both and stays with the server; `NAME.public.plan`
//! holds the public part for the client and the dealer. [`plain::run_plain`] is the f32
//! reference every secure result is measured against; [`zoo`] makes the benchmark
//! models.
//!
//! ```
//! let plan = veil_model::zoo::random_mlp("tiny", &[4, 3, 2], 0)?;
//! let logits = veil_model::plain::run_plain(&plan, &[0.5, -1.0, 0.25, 2.0], 1)?;
//! assert_eq!(logits.len(), 2);
//! # Ok::<(), veil_model::Error>(())
//! ```
//!
//! Every op of [`ir::Op`] is matched by name in the IR, the plan and the plain executor
//! (no wildcard arms): a new op is a compile error at each place that must handle it.
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

pub mod approximation;
mod encoder;
mod error;
pub mod import;
pub mod ir;
pub mod passes;
pub mod plain;
pub mod plan;
pub mod text;
pub mod zoo;

pub use error::{Error, Result};
pub use plan::{Plan, PublicPlan};
