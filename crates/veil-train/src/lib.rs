//! veil-train: trains veil's own small classifiers (an MLP and a CNN) on scikit-learn's
//! 8x8 digits, in pure Rust f32 with hand-written backpropagation, and exports them for
//! `veil compile`.
//!
//! # What this crate does not do
//! No secure (MPC) training or inference, no GPU, no general-purpose autograd and no
//! layers beyond the two fixed architectures: fully connected + ReLU, and the CNN of
//! [`cnn`] (3×3 convolutions, ReLU, 2×2 max and average pools, one linear layer). It uses
//! no ML framework. It does not compile models: it writes the safetensors weights and the
//! architecture JSON that [`veil_model::import`] reads.
//!
//! # Overview
//! - [`digits::load`] reads `data/digits/digits.csv.gz` into a [`digits::Dataset`]
//!   (pixels scaled to `[0, 1]`), and [`digits::split`] makes a seeded train/test split.
//! - [`mlp::train`] trains an [`mlp::Mlp`] from a [`mlp::TrainingConfig`] with minibatch
//!   SGD (momentum 0.9) on softmax cross-entropy; everything is deterministic given the
//!   seed.
//! - [`mlp::Mlp::to_safetensors`] and [`mlp::Mlp::architecture_json`] produce the two
//!   inputs of [`veil_model::import::compile`]; tensors are named `fc1.weight`,
//!   `fc1.bias`, `fc2.weight`, … in PyTorch's `[out, in]` layout.
//! - [`cnn::train`] trains a [`cnn::Cnn`] (`conv2d 1→8 → ReLU → max_pool2d → conv2d 8→16 →
//!   ReLU → avg_pool2d → linear 64→10`) from a [`cnn::CnnConfig`] the same way (97.8% test
//!   accuracy on the seed-0 split in about 3 s); [`cnn::Cnn::to_safetensors`] and
//!   [`cnn::Cnn::architecture_json`] export it with `conv2d`, `max_pool2d` and
//!   `avg_pool2d` layers, which veil's compiler must support to compile it.
//!
//! ```
//! use veil_train::digits::{Dataset, FEATURES};
//! use veil_train::mlp::{train, TrainingConfig};
//!
//! // Two tiny made-up "images": all dark is a 0, all bright is a 1.
//! let data = Dataset { features: [vec![0.0; FEATURES], vec![1.0; FEATURES]].concat(), labels: vec![0, 1] };
//! let config = TrainingConfig { hidden: vec![4], epochs: 50, batch_size: 2, ..TrainingConfig::default() };
//! let (model, losses) = train(&data, &config);
//! assert_eq!(losses.len(), 50);
//! assert_eq!(model.accuracy(&data), 1.0);
//! let weights = model.to_safetensors()?;
//! let architecture = veil_model::import::Architecture::from_json(&model.architecture_json("tiny"))?;
//! let plan = veil_model::import::compile(&architecture, &weights, "exact")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//! None.
//!
//! # Secrets
//! Nothing here is secret at training time: the data set is public and the trained
//! weights only become the server's secret once compiled into a plan. Errors name files,
//! lines and columns, and may quote a short piece of a malformed input line.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod cnn;
mod error;
pub mod mlp;

pub use error::{Error, Result};
/// The digits data set, re-exported from veil-data for the trainers' callers.
pub use veil_data::digits;
