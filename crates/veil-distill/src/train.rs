//! The training loops: a teacher on hard labels, and a student either on hard labels
//! alone or by logits distillation from the teacher (cookbook §5.2's second stage: the
//! CNN has no attention to match), each with AdamW over minibatches in a seeded order,
//! under a progress bar showing the loss and the throughput.

use candle_core::{D, Device, Tensor};
use candle_nn::{Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};
use veil_core::sampling::SplitMix64;
use veil_data::fashion::Images;

use crate::cnn::{CLASSES, Cnn, SIDE};
use crate::config::{Distillation, Phase};
use crate::loss::logits_distillation;
use crate::{Error, Result};

/// The images at `indices` as a `[n, 1, 28, 28]` tensor and their labels `[n]`.
fn tensors(images: &Images, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
    let mut values = Vec::with_capacity(indices.len() * SIDE * SIDE);
    for &index in indices {
        values.extend_from_slice(images.image(index));
    }
    let pixels = Tensor::from_vec(values, (indices.len(), 1, SIDE, SIDE), device)?;
    let labels: Vec<u32> = indices
        .iter()
        .map(|&index| u32::from(images.labels[index]))
        .collect();
    let labels = Tensor::from_vec(labels, indices.len(), device)?;
    Ok((pixels, labels))
}

/// How a model is trained.
#[derive(Clone, Copy, Debug)]
pub enum Supervision<'a> {
    /// Cross-entropy on the labels.
    Labels,
    /// Logits distillation from this teacher, plus the labels.
    Distilled(&'a Cnn, Distillation),
}

/// The loss after each epoch (the mean over its steps).
pub type EpochLosses = Vec<f64>;

/// Trains `model` for `phase` on `images`, the batch order drawn from `seed`; `label`
/// names the run on its progress bar (hidden when `quiet`).
pub fn train(
    model: &Cnn,
    images: &Images,
    (phase, batch): (Phase, usize),
    supervision: Supervision<'_>,
    (seed, label, quiet): (u64, &str, bool),
) -> Result<EpochLosses> {
    if images.len() < batch || batch < 2 {
        return Err(Error::Invalid(format!(
            "{} training images cannot fill a batch of {batch} (batch normalisation needs at least 2)",
            images.len()
        )));
    }
    let device = Device::Cpu;
    let params = ParamsAdamW {
        lr: phase.learning_rate,
        weight_decay: 1e-4,
        ..Default::default()
    };
    let mut optimiser = candle_nn::AdamW::new(model.trainable()?, params)?;
    let steps_per_epoch = images.len() / batch;
    let progress = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new((steps_per_epoch * phase.epochs) as u64)
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{prefix:>24} {bar:30} {pos}/{len} steps, {msg} [{elapsed_precise} < {eta}]",
        )
        .map_err(|error| Error::Invalid(format!("the progress bar's template: {error}")))?,
    );
    progress.set_prefix(label.to_string());
    let mut sampler = SplitMix64::new(seed);
    let mut losses = Vec::with_capacity(phase.epochs);
    let started = std::time::Instant::now();
    let mut seen = 0usize;
    for epoch in 0..phase.epochs {
        let mut order: Vec<usize> = (0..images.len()).collect();
        sampler.shuffle(&mut order);
        let mut total = 0.0;
        for step in 0..steps_per_epoch {
            let (inputs, labels) =
                tensors(images, &order[step * batch..(step + 1) * batch], &device)?;
            let logits = model.forward(&inputs, true)?;
            let loss = loss(&logits, &labels, &inputs, supervision)?;
            optimiser.backward_step(&loss)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(Error::Invalid(format!(
                    "{label}: the loss diverged at epoch {epoch}, step {step}; lower the learning rate"
                )));
            }
            total += value;
            seen += batch;
            progress.inc(1);
            if step % 10 == 0 {
                let rate = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
                progress.set_message(format!(
                    "epoch {}, loss {value:.4}, {rate:.0} images/s",
                    epoch + 1
                ));
            }
        }
        losses.push(total / steps_per_epoch as f64);
    }
    progress.finish_and_clear();
    Ok(losses)
}

/// The step's loss: cross-entropy on the labels, or logits distillation
/// ([`crate::loss::logits_distillation`]).
fn loss(
    logits: &Tensor,
    labels: &Tensor,
    inputs: &Tensor,
    supervision: Supervision<'_>,
) -> Result<Tensor> {
    match supervision {
        Supervision::Labels => Ok(candle_nn::loss::cross_entropy(logits, labels)?),
        Supervision::Distilled(teacher, distillation) => {
            let targets = teacher.forward(inputs, false)?;
            logits_distillation(logits, &targets, labels, distillation)
        }
    }
}

/// The fraction of `images` `model` labels correctly (batch statistics frozen).
pub fn accuracy(model: &Cnn, images: &Images) -> Result<f64> {
    Ok(crate::compare::fraction_right(&correct(model, images)?))
}

/// Whether `model` labels each of `images` correctly, in order.
pub fn correct(model: &Cnn, images: &Images) -> Result<Vec<bool>> {
    let device = Device::Cpu;
    let mut right = Vec::with_capacity(images.len());
    let indices: Vec<usize> = (0..images.len()).collect();
    for chunk in indices.chunks(500) {
        let (inputs, labels) = tensors(images, chunk, &device)?;
        let predicted = model.forward(&inputs, false)?.argmax(D::Minus1)?;
        let hits = predicted.eq(&labels)?.to_vec1::<u8>()?;
        right.extend(hits.into_iter().map(|hit| hit != 0));
    }
    Ok(right)
}

/// The logits of one image, for checks against veil's executors.
pub fn logits(model: &Cnn, pixels: &[f32]) -> Result<Vec<f32>> {
    let input = Tensor::from_vec(pixels.to_vec(), (1, 1, SIDE, SIDE), &Device::Cpu)?;
    let output = model.forward(&input, false)?;
    let values = output.flatten_all()?.to_vec1::<f32>()?;
    debug_assert_eq!(values.len(), CLASSES);
    Ok(values)
}
