//! veil-distill: veil's trainer on candle (core and nn, CPU): the CNN zoo of Thrust 2
//! (plain and residual, ReLU and `quad`), BERT sequence classifiers (all-MiniLM-L6-v2
//! fine-tuned on movie-review sentiment), teachers on hard labels, and MPC-friendly
//! students initialised from their teacher and trained with or without knowledge
//! distillation (Thrust 1), exported for `veil compile`.
//!
//! # Overview
//! - [`config::DistillConfig`] and [`config::SentimentConfig`]: the runs' settings, from
//!   TOML files kept under version control (`configs/distill-fashion.toml`,
//!   `configs/distill-sentiment.toml`).
//! - [`cnn::Cnn`]: a zoo member ([`cnn::Shape`]) with its variables; [`cnn::Cnn::architecture`]
//!   describes it for `veil compile`, and [`export`] writes both files.
//! - [`train::train`] runs AdamW over seeded minibatches under a progress bar, on hard
//!   labels or by logits distillation ([`train::Supervision`]); [`train::accuracy`]
//!   measures the f32 model.
//! - [`compare::Paired`]: McNemar's exact test of two classifiers on the same
//!   examples, for whether distillation's lead is more than chance.
//! - [`loss::logits_distillation`]: the soft (and optionally hard) logits loss both
//!   kinds of student share.
//! - [`bert::BertClassifier`]: a BERT classifier in exact or MPC-friendly forms
//!   ([`bert::Forms`]: the quadratic GELU, 2Quad), loaded from and exported to a
//!   Hugging Face directory that `veil compile --hf` reads unedited.
//! - [`sentiment::train`]: its training on [`sentiment::Examples`], toward labels or
//!   MPCFormer's two distillation stages ([`sentiment::Objective`]), optionally on
//!   TinyBERT-style sentence variants ([`augment::Augmenter`]).
//!
//! # What this crate does not do
//! No inference under MPC (that is veil-exec, on the compiled plan), no GPU (candle's
//! CUDA backend needs nvcc at build time; CPU training takes minutes for the CNNs and
//! tens of minutes for MiniLM). Batch normalisation is used in its training form while
//! training and folded into the convolutions at compile time. The serving crates never
//! depend on this one: candle stays out of `veil serve`'s build (`veil` builds it behind
//! its default `distill` feature).

pub mod augment;
pub mod bert;
pub mod cnn;
pub mod compare;
pub mod config;
mod error;
pub mod loss;
pub mod sentiment;
pub mod train;

pub use error::{Error, Result};

use std::path::{Path, PathBuf};

/// Writes `model` as DIRECTORY/NAME.safetensors and DIRECTORY/NAME.json (the
/// architecture, whose plan will be named NAME); returns both paths.
pub fn export(model: &cnn::Cnn, directory: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(directory).map_err(|source| Error::Io {
        what: format!("creating {}", directory.display()),
        source,
    })?;
    let weights = directory.join(format!("{name}.safetensors"));
    model.variables.save(&weights)?;
    let architecture = directory.join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(&model.architecture(name)?)?;
    std::fs::write(&architecture, text).map_err(|source| Error::Io {
        what: format!("writing {}", architecture.display()),
        source,
    })?;
    Ok((weights, architecture))
}
