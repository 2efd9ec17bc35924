//! Training BERT classifiers on tokenized sentences: the teacher on hard labels, and the
//! student by MPCFormer's two stages (cookbook §5.2): first the hidden states and the
//! attention scores of every layer matched to the teacher's by mean squared error (or,
//! as the config may say, the attention distributions by KL divergence, as MiniLM was
//! distilled), then the logits by soft cross-entropy at a temperature (with the
//! labels' cross-entropy mixed in, if the config weighs it). The baseline student,
//! "without distillation", is the same network from the same initialisation trained on
//! the labels for as many steps.
//!
//! Batches are drawn in a seeded order and padded to their longest sentence, with
//! sentences of like length grouped (the padding keys are masked, so a sentence's
//! result does not depend on how far it is padded); the learning rate warms up over the
//! first tenth of the steps and then falls linearly to 0. Sentences may be replaced by
//! TinyBERT-style variants ([`crate::augment`]) at the same step count.

use std::path::Path;

use candle_core::{D, DType, Tensor};
use candle_nn::{Optimizer, ParamsAdamW};
use indicatif::{ProgressBar, ProgressStyle};
use tokenizers::{Tokenizer, TruncationParams};
use veil_core::sampling::SplitMix64;

use crate::augment::Augmenter;
use crate::bert::{BertClassifier, Forward, TokenBatch};
use crate::config::{AttentionTarget, Distillation, Phase};
use crate::loss::logits_distillation;
use crate::{Error, Result};

/// Tokenized sentences and their labels.
#[derive(Clone, Debug, Default)]
pub struct Examples {
    /// Token ids, [CLS] first, truncated to the sequence length.
    pub ids: Vec<Vec<u32>>,
    /// The labels.
    pub labels: Vec<usize>,
    /// The padding token.
    pub padding: u32,
}

impl Examples {
    /// Tokenizes `sentences` with the tokenizer file, truncating each to `sequence`
    /// tokens (special tokens included) as the client's front end does.
    pub fn tokenize(
        tokenizer: &Path,
        sentences: &[(String, usize)],
        sequence: usize,
    ) -> Result<Self> {
        let invalid =
            |reason: String| Error::Invalid(format!("tokenizer {}: {reason}", tokenizer.display()));
        let mut loaded =
            Tokenizer::from_file(tokenizer).map_err(|error| invalid(error.to_string()))?;
        loaded
            .with_truncation(Some(TruncationParams {
                max_length: sequence,
                ..TruncationParams::default()
            }))
            .map_err(|error| invalid(error.to_string()))?;
        loaded.with_padding(None);
        let padding = loaded.token_to_id("[PAD]").unwrap_or(0);
        let mut examples = Self {
            padding,
            ..Self::default()
        };
        for (index, (sentence, label)) in sentences.iter().enumerate() {
            let encoding = loaded
                .encode(sentence.as_str(), true)
                .map_err(|_| Error::Invalid(format!("sentence {index} could not be tokenized")))?;
            examples.ids.push(encoding.get_ids().to_vec());
            examples.labels.push(*label);
        }
        Ok(examples)
    }

    /// How many sentences.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The first `count`.
    pub fn first(&self, count: usize) -> Self {
        let count = count.min(self.len());
        Self {
            ids: self.ids[..count].to_vec(),
            labels: self.labels[..count].to_vec(),
            padding: self.padding,
        }
    }

    /// The batch of the sentences at `indices`.
    pub fn batch(&self, indices: &[usize]) -> Result<TokenBatch> {
        let ids: Vec<&[u32]> = indices
            .iter()
            .map(|&index| self.ids[index].as_slice())
            .collect();
        let labels: Vec<usize> = indices.iter().map(|&index| self.labels[index]).collect();
        TokenBatch::new(&ids, &labels, self.padding)
    }

    /// One epoch's batches: a seeded shuffle, sentences of like length grouped into
    /// batches of `size`, the batches in a seeded order. Every sentence appears once
    /// (the last batch may be short).
    fn epoch_batches(&self, size: usize, sampler: &mut SplitMix64) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        sampler.shuffle(&mut order);
        let mut batches = Vec::new();
        for group in order.chunks(size * 16) {
            let mut group = group.to_vec();
            group.sort_by_key(|&index| self.ids[index].len());
            batches.extend(group.chunks(size).map(<[usize]>::to_vec));
        }
        sampler.shuffle(&mut batches);
        batches
    }
}

/// What a phase trains on.
#[derive(Clone, Copy, Debug)]
pub enum Objective<'a> {
    /// Cross-entropy on the labels.
    Labels,
    /// MPCFormer's first stage: the mean squared error of every layer's hidden states
    /// against the teacher's over real tokens, plus every layer's attention matched as
    /// the target says (scores by mean squared error over pairs of real tokens, or
    /// distributions by KL divergence over real queries, [`attention_divergence`]).
    Layers(&'a BertClassifier, AttentionTarget),
    /// MPCFormer's second stage: T²·KL(teacher's softened distribution ‖ the student's),
    /// with the labels' cross-entropy mixed in where the soft weight is below 1
    /// ([`logits_distillation`]).
    Logits(&'a BertClassifier, Distillation),
}

/// The mean of (a − b)² where `weights` (broadcast) is 1.
fn masked_mean_square(a: &Tensor, b: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let difference = (a - b)?.broadcast_mul(weights)?;
    let count = weights.broadcast_as(a.shape())?.sum_all()?;
    Ok(difference.sqr()?.sum_all()?.broadcast_div(&count)?)
}

/// Below this an attention weight counts as this in a logarithm (a 2Quad weight is 0
/// only where a score sits exactly at −c; the softmax's are 0 on padding keys, where
/// the teacher's weight, and so the term, is 0).
const SMALLEST_WEIGHT: f64 = 1e-9;

/// The mean over real queries (`queries` `[batch, length]` is 1 on them) and heads of
/// KL(teacher ‖ student) = Σ_keys p·(ln p − ln q) between attention distributions
/// `[batch, heads, length, length]`.
pub fn attention_divergence(
    student: &Tensor,
    teacher: &Tensor,
    queries: &Tensor,
) -> Result<Tensor> {
    let (size, heads, length, _) = student.dims4()?;
    let logarithm = |t: &Tensor| -> Result<Tensor> { Ok(t.clamp(SMALLEST_WEIGHT, 1.0)?.log()?) };
    let rows = (teacher * (logarithm(teacher)? - logarithm(student)?)?)?.sum(D::Minus1)?;
    let weights = queries.reshape((size, 1, length))?;
    let count = (weights.sum_all()? * heads as f64)?;
    Ok(rows
        .broadcast_mul(&weights)?
        .sum_all()?
        .broadcast_div(&count)?)
}

fn step_loss(student: &Forward, batch: &TokenBatch, objective: Objective<'_>) -> Result<Tensor> {
    Ok(match objective {
        Objective::Labels => candle_nn::loss::cross_entropy(&student.logits, &batch.labels)?,
        Objective::Layers(teacher, attention) => {
            let teacher = teacher.forward(batch)?;
            let (size, length) = batch.mask.dims2()?;
            let tokens = batch.mask.reshape((size, length, 1))?;
            let mut total = Tensor::zeros((), DType::F32, batch.mask.device())?;
            for (ours, theirs) in student.hidden.iter().zip(&teacher.hidden) {
                total = (total + masked_mean_square(ours, &theirs.detach(), &tokens)?)?;
            }
            match attention {
                AttentionTarget::Scores => {
                    let pairs = batch
                        .mask
                        .reshape((size, 1, length, 1))?
                        .broadcast_mul(&batch.mask.reshape((size, 1, 1, length))?)?;
                    for (ours, theirs) in student.scores.iter().zip(&teacher.scores) {
                        total = (total + masked_mean_square(ours, &theirs.detach(), &pairs)?)?;
                    }
                }
                AttentionTarget::Distributions => {
                    for (ours, theirs) in student.distributions.iter().zip(&teacher.distributions) {
                        total =
                            (total + attention_divergence(ours, &theirs.detach(), &batch.mask)?)?;
                    }
                }
            }
            total
        }
        Objective::Logits(teacher, distillation) => {
            let targets = teacher.forward(batch)?.logits;
            logits_distillation(&student.logits, &targets, &batch.labels, distillation)?
        }
    })
}

/// Mixed into a phase's seed for its variants' stream.
const VARIANT_STREAM: u64 = 0x7661_7269_616e_7473;

/// The loss after each epoch (the mean over its steps).
pub type EpochLosses = Vec<f64>;

/// Trains `model` for `phase` on `examples` in batches of `batch`, toward `objective`,
/// the order drawn from `seed`; `label` names the run on its progress bar (hidden when
/// `quiet`). With an `augmenter`, sentences are replaced by variants as drawn from a
/// stream of their own (the batch order stays the one `seed` gives).
pub fn train(
    model: &BertClassifier,
    examples: &Examples,
    augmenter: Option<&Augmenter>,
    (phase, batch): (Phase, usize),
    objective: Objective<'_>,
    (seed, label, quiet): (u64, &str, bool),
) -> Result<EpochLosses> {
    if examples.is_empty() || batch == 0 {
        return Err(Error::Invalid(format!(
            "{label}: {} sentences in batches of {batch} is no training",
            examples.len()
        )));
    }
    let mut optimiser = candle_nn::AdamW::new(
        model.trainable(),
        ParamsAdamW {
            lr: phase.learning_rate,
            weight_decay: 0.01,
            ..Default::default()
        },
    )?;
    let steps_per_epoch = examples.len().div_ceil(batch);
    let steps = steps_per_epoch * phase.epochs;
    let warmup = (steps / 10).max(1);
    let progress = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(steps as u64)
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{prefix:>28} {bar:30} {pos}/{len} steps, {msg} [{elapsed_precise} < {eta}]",
        )
        .map_err(|error| Error::Invalid(format!("the progress bar's template: {error}")))?,
    );
    progress.set_prefix(label.to_string());
    let mut sampler = SplitMix64::new(seed);
    let mut variants = SplitMix64::new(seed ^ VARIANT_STREAM);
    let mut losses = Vec::with_capacity(phase.epochs);
    let started = std::time::Instant::now();
    let (mut step, mut seen) = (0usize, 0usize);
    for epoch in 0..phase.epochs {
        let mut total = 0.0;
        let batches = examples.epoch_batches(batch, &mut sampler);
        for indices in &batches {
            let rate = if step < warmup {
                (step + 1) as f64 / warmup as f64
            } else {
                (steps - step) as f64 / (steps - warmup).max(1) as f64
            };
            optimiser.set_learning_rate(phase.learning_rate * rate);
            let inputs = match augmenter {
                Some(augmenter) => augmenter.batch(examples, indices, &mut variants)?,
                None => examples.batch(indices)?,
            };
            let forward = model.forward(&inputs)?;
            let loss = step_loss(&forward, &inputs, objective)?;
            optimiser.backward_step(&loss)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(Error::Invalid(format!(
                    "{label}: the loss diverged at epoch {}, step {step}; lower the learning rate",
                    epoch + 1
                )));
            }
            total += value;
            step += 1;
            seen += indices.len();
            progress.inc(1);
            let throughput = seen as f64 / started.elapsed().as_secs_f64().max(1e-9);
            progress.set_message(format!(
                "epoch {}, loss {value:.4}, {throughput:.1} sentences/s",
                epoch + 1
            ));
        }
        losses.push(total / batches.len().max(1) as f64);
    }
    progress.finish_and_clear();
    Ok(losses)
}

/// Each sentence's logits, in order.
pub fn logits(model: &BertClassifier, examples: &Examples) -> Result<Vec<Vec<f32>>> {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.sort_by_key(|&index| examples.ids[index].len());
    let mut all = vec![Vec::new(); examples.len()];
    for chunk in order.chunks(64) {
        let forward = model.forward(&examples.batch(chunk)?)?;
        for (&index, row) in chunk.iter().zip(forward.logits.to_vec2::<f32>()?) {
            all[index] = row;
        }
    }
    Ok(all)
}

/// Whether `model` labels each of `examples` correctly, in order.
pub fn correct(model: &BertClassifier, examples: &Examples) -> Result<Vec<bool>> {
    Ok(logits(model, examples)?
        .iter()
        .zip(&examples.labels)
        .map(|(row, label)| veil_model::plain::argmax_rows(row, row.len())[0] == *label)
        .collect())
}

/// The fraction of `examples` `model` labels correctly.
pub fn accuracy(model: &BertClassifier, examples: &Examples) -> Result<f64> {
    Ok(crate::compare::fraction_right(&correct(model, examples)?))
}
