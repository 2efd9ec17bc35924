//! `veil split-bench`: the four ways to run a model, measured side by side on the same
//! Fashion-MNIST images.
//!
//! - **trusted-only**: everything in the trusted runtime (one thread): the enclave-only
//!   baseline;
//! - **untrusted-only**: everything on the worker (all cores): the accelerator-only
//!   baseline, private to nobody;
//! - **blinded** (inference): Slalom-style, every linear layer on the worker over
//!   one-time-padded fixed point, the pads' products precomputed offline;
//! - **split**: AsymML, the trusted side keeping each activation's principal channels.
//!
//! The primary figure is the trusted side's multiply-accumulates, split ÷ trusted-only.
//! Wall-clock times are measured natively and also *emulated* against an enclave: every
//! second the trusted runtime computes is multiplied by
//! `F = SGX_OVER_ACCELERATOR × t(untrusted-only) / t(trusted-only)`, so that the
//! emulated trusted-only run is [`SGX_OVER_ACCELERATOR`] times slower than the worker,
//! as the paper measured SGX against its GPU; time blocked on the worker is added
//! unscaled (no overlap is credited: a conservative emulation).
//!
//! The settings (a table, also in `docs/results.md`):
//!
//! | setting | value |
//! |---|---|
//! | width | [`network::WIDTH`] = 16 channels in the first stage, 32 in the second (`--width` changes it) |
//! | batch | [`BATCH`] = 32 |
//! | SGD | learning rate [`LEARNING_RATE`] = 0.02 decayed linearly to 0.002, momentum 0.9, He-normal start from seed [`MODEL_SEED`] |
//! | training set | the first [`TRAIN_SAMPLES`] = 6000 Fashion-MNIST training images, [`EPOCHS`] = 2 epochs, in a seeded order |
//! | test set | all [`TEST_SAMPLES`] = 10,000 test images |
//! | inference | weights after the plain training above; [`INFER_SAMPLES`] = 256 test images timed per mode |
//! | training timing | [`TIMED_STEPS`] = 8 SGD steps per mode |
//! | repetitions | every mode timed [`REPETITIONS`] = 3 times, interleaved; medians reported |
//! | light-weight SVD | T = [`ITERATIONS`] = 1 power iteration per component |
//! | basis | per sample, the paper's (`--basis batch`: one per batch, [`Basis::Batch`]; `--basis subspace`: per sample inside per-layer subspaces calibrated on the first [`CALIBRATION_SAMPLES`] = 256 training images, [`Basis::Subspace`], inference only) |

use std::time::Duration;

use crate::cpu::Stopwatch;

use veil_net::Channel;

use crate::msgs::{Reply, Request};
use crate::network::{self, Architecture, Executor, LocalExecutor, Model, Sgd};
use crate::subspace::{self, Calibration};
use crate::svd::{Basis, SvdOptions};
use crate::trusted::{BlindedExecutor, MOMENTUM, SplitExecutor, call, load_model};
use crate::{Error, Result};

/// The paper's SGX-only time over its GPU-only time: Asym1 trains VGG 5.2× faster than
/// SGX-only and about 20× slower than GPU-only (AsymmetricML §3), so SGX-only ≈ 104×
/// GPU-only.
pub const SGX_OVER_ACCELERATOR: f64 = 5.2 * 20.0;
/// Samples per batch.
pub const BATCH: usize = 32;
/// SGD step size.
pub const LEARNING_RATE: f32 = 0.02;
/// The public seed of the initial weights.
pub const MODEL_SEED: u64 = 11;
/// The seed of the training order.
pub const ORDER_SEED: u64 = 12;
/// Training images.
pub const TRAIN_SAMPLES: usize = 6000;
/// Passes over them.
pub const EPOCHS: usize = 2;
/// Test images for accuracy.
pub const TEST_SAMPLES: usize = 10_000;
/// Test images timed per inference mode.
pub const INFER_SAMPLES: usize = 256;
/// SGD steps timed per training mode.
pub const TIMED_STEPS: usize = 8;
/// Timed repetitions of each mode; the report gives the medians.
pub const REPETITIONS: usize = 3;
/// Power iterations per component.
pub const ITERATIONS: usize = 1;
/// [`Basis::Subspace`]: the training images (the first ones: the model owner's) the
/// subspaces are calibrated on.
pub const CALIBRATION_SAMPLES: usize = 256;

/// Inference or training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward passes.
    Infer,
    /// SGD steps.
    Train,
}

/// Labelled images, `len × 28 × 28`.
#[derive(Clone, Debug, Default)]
pub struct Data {
    /// Pixels in `[0, 1]`.
    pub images: Vec<f32>,
    /// Labels.
    pub labels: Vec<u8>,
}

impl Data {
    /// Images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }
    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Samples `start..start + count`.
    pub fn batch(&self, start: usize, count: usize) -> (&[f32], &[u8]) {
        let pixels = network::SIDE * network::SIDE;
        (
            &self.images[start * pixels..(start + count) * pixels],
            &self.labels[start..start + count],
        )
    }
    /// The samples at `indices`.
    pub fn select(&self, indices: &[usize]) -> Data {
        let pixels = network::SIDE * network::SIDE;
        Data {
            images: indices
                .iter()
                .flat_map(|&index| {
                    self.images[index * pixels..(index + 1) * pixels]
                        .iter()
                        .copied()
                })
                .collect(),
            labels: indices.iter().map(|&index| self.labels[index]).collect(),
        }
    }
}

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// The model.
    pub architecture: Architecture,
    /// Its first stage's channels ([`network::WIDTH`] by default).
    pub width: usize,
    /// The energy fraction the trusted side keeps.
    pub energy: f64,
    /// Per-sample principal channels (the paper's) or one basis per batch.
    pub basis: Basis,
    /// Inference or training.
    pub mode: Mode,
    /// Training images (accuracy).
    pub train_samples: usize,
    /// Epochs.
    pub epochs: usize,
    /// Test images (accuracy).
    pub test_samples: usize,
    /// Images timed per inference mode.
    pub infer_samples: usize,
    /// Steps timed per training mode.
    pub timed_steps: usize,
    /// Timed repetitions of every mode (interleaved); the report holds their medians.
    pub repetitions: usize,
}

impl BenchOptions {
    /// The model these options measure, with its public starting weights.
    pub fn model(&self) -> Model {
        Model::with_width(self.architecture, self.width, MODEL_SEED)
    }

    /// The documented settings for `architecture`, `energy` and `mode`.
    pub fn new(architecture: Architecture, energy: f64, mode: Mode) -> BenchOptions {
        BenchOptions {
            architecture,
            width: network::WIDTH,
            energy,
            basis: Basis::Sample,
            mode,
            train_samples: TRAIN_SAMPLES,
            epochs: EPOCHS,
            test_samples: TEST_SAMPLES,
            infer_samples: INFER_SAMPLES,
            timed_steps: TIMED_STEPS,
            repetitions: REPETITIONS,
        }
    }
}

/// One mode's measurements.
#[derive(Clone, Debug, Default)]
pub struct TimedRun {
    /// trusted-only, untrusted-only, blinded or split.
    pub name: &'static str,
    /// Wall time.
    pub native: Duration,
    /// Time the trusted side spent blocked on the worker.
    pub waiting: Duration,
    /// The trusted thread's CPU time (wall time less waiting where it cannot be read).
    pub trusted_cpu: Duration,
    /// The trusted side's multiply-accumulates.
    pub trusted_macs: u64,
    /// Whether the trusted runtime computed in this mode (untrusted-only: no).
    pub trusted: bool,
}

impl TimedRun {
    /// The emulated time with the trusted runtime slowed `factor` times: its CPU time
    /// scaled, plus the time it was blocked on the worker.
    pub fn emulated(&self, factor: f64) -> f64 {
        if self.trusted {
            self.trusted_cpu.as_secs_f64() * factor + self.waiting.as_secs_f64()
        } else {
            self.native.as_secs_f64()
        }
    }
}

/// Per layer: the split's rank and leakage.
#[derive(Clone, Debug)]
pub struct LayerRow {
    /// Layer name.
    pub name: String,
    /// Input channels c.
    pub channels: usize,
    /// Mean r over the samples.
    pub mean_rank: f64,
    /// Largest r.
    pub max_rank: usize,
    /// Mean ‖X_res‖²/‖X‖².
    pub mean_residual_energy: f64,
    /// Largest ‖X_res‖²/‖X‖².
    pub max_residual_energy: f64,
    /// Whether the trusted side kept the layer whole (splitting it cannot pay).
    pub kept_whole: bool,
    /// [`Basis::Subspace`]: the calibrated subspace's dimension m, where one was chosen.
    pub subspace_dimension: Option<usize>,
    /// The fraction of the kept components confined to the subspace.
    pub confined_share: f64,
}

/// What calibrating [`Basis::Subspace`] cost and chose (offline, once per model).
#[derive(Clone, Debug)]
pub struct SubspaceReport {
    /// The per-layer choice.
    pub calibration: Calibration,
    /// The calibration's wall time (offline, on all cores).
    pub time: Duration,
    /// The trusted MACs of combining the weights with the subspaces, `W_P = Pᵀ·W`.
    pub combination_macs: u64,
}

/// `veil split-bench`'s report.
#[derive(Clone, Debug)]
pub struct Report {
    /// The settings.
    pub options: BenchOptions,
    /// Worker threads.
    pub worker_threads: usize,
    /// Samples timed (inference) or steps × batch (training).
    pub samples: usize,
    /// The four runs (training: no blinded run).
    pub runs: Vec<TimedRun>,
    /// Blinded mode's offline precomputation: trusted MACs and time.
    pub blinded_offline: Option<(u64, Duration)>,
    /// Per layer (the split run).
    pub layers: Vec<LayerRow>,
    /// Inference: predictions equal to plain, out of `samples`, for split and blinded.
    pub agreement: Vec<(&'static str, usize)>,
    /// Inference: the largest |logit − plain logit| for split and blinded.
    pub max_logit_error: Vec<(&'static str, f32)>,
    /// Accuracy on the test images: plain (and, in training, split) training.
    pub accuracy: Vec<(&'static str, f64)>,
    /// [`Basis::Subspace`]: the offline calibration.
    pub subspace: Option<SubspaceReport>,
}

impl Report {
    /// The run called `name`.
    pub fn run(&self, name: &str) -> Option<&TimedRun> {
        self.runs.iter().find(|run| run.name == name)
    }
    /// `F`: the emulated slowdown of the trusted runtime, chosen so that the emulated
    /// trusted-only run takes [`SGX_OVER_ACCELERATOR`] times the untrusted-only run.
    pub fn factor(&self) -> f64 {
        match (self.run("trusted-only"), self.run("untrusted-only")) {
            (Some(trusted), Some(untrusted)) if trusted.trusted_cpu > Duration::ZERO => {
                SGX_OVER_ACCELERATOR * untrusted.native.as_secs_f64()
                    / trusted.trusted_cpu.as_secs_f64()
            }
            _ => SGX_OVER_ACCELERATOR,
        }
    }
    /// The trusted MACs of `name` over trusted-only's.
    pub fn macs_ratio(&self, name: &str) -> Option<f64> {
        let baseline = self.run("trusted-only")?.trusted_macs as f64;
        Some(self.run(name)?.trusted_macs as f64 / baseline)
    }
}

/// The step size at `step` of `steps`: [`LEARNING_RATE`], decayed linearly to a tenth
/// of it by the last step (so the final weights do not hinge on the last few batches).
pub fn learning_rate(step: usize, steps: usize) -> f32 {
    let progress = step as f32 / steps.max(1) as f32;
    LEARNING_RATE * (1.0 - 0.9 * progress)
}

/// Plain training: SGD over `data` for `epochs` in the order [`ORDER_SEED`] draws.
pub fn train<E: Executor>(
    model: &mut Model,
    executor: &mut E,
    data: &Data,
    epochs: usize,
) -> Result<()> {
    train_in_order(model, executor, data, epochs, ORDER_SEED, |_, _| Ok(()))
}

/// SGD over `data` for `epochs` in the order `order_seed` draws; `after_step` runs after
/// every update (the split mode sends the worker the new weights there).
pub fn train_in_order<E: Executor>(
    model: &mut Model,
    executor: &mut E,
    data: &Data,
    epochs: usize,
    order_seed: u64,
    mut after_step: impl FnMut(&mut E, &Model) -> Result<()>,
) -> Result<()> {
    let mut optimiser = Sgd::new(model, LEARNING_RATE, MOMENTUM);
    let mut order: Vec<usize> = (0..data.len()).collect();
    let mut random = veil_core::sampling::SplitMix64::new(order_seed);
    let steps = epochs * data.len().div_ceil(BATCH);
    let mut index = 0;
    for _ in 0..epochs {
        random.shuffle(&mut order);
        for chunk in order.chunks(BATCH) {
            let batch = data.select(chunk);
            optimiser.learning_rate = learning_rate(index, steps);
            step(model, executor, &mut optimiser, &batch)?;
            after_step(executor, model)?;
            index += 1;
        }
    }
    Ok(())
}

/// One SGD step; returns the loss.
pub fn step(
    model: &mut Model,
    executor: &mut dyn Executor,
    optimiser: &mut Sgd,
    batch: &Data,
) -> Result<f32> {
    let (logits, trace) =
        network::forward(model, &mut *executor, &batch.images, batch.len(), true)?;
    let (loss, grad) = network::cross_entropy(&logits, &batch.labels);
    let gradients = network::backward(model, &mut *executor, &trace, grad, batch.len())?;
    optimiser.step(model, &gradients);
    Ok(loss)
}

/// The logits for every image, in batches.
pub fn logits(model: &Model, executor: &mut dyn Executor, data: &Data) -> Result<Vec<f32>> {
    let mut all = Vec::with_capacity(data.len() * network::CLASSES);
    for start in (0..data.len()).step_by(BATCH) {
        let count = BATCH.min(data.len() - start);
        let (images, _) = data.batch(start, count);
        all.extend(network::forward(model, executor, images, count, false)?.0);
    }
    Ok(all)
}

/// The fraction of `data` `model` classifies correctly (plain, here, `threads` threads).
pub fn accuracy(model: &Model, data: &Data, threads: usize) -> Result<f64> {
    let predictions = network::predictions(&logits(model, &mut LocalExecutor::new(threads), data)?);
    let correct = predictions
        .iter()
        .zip(&data.labels)
        .filter(|(found, expected)| found == expected)
        .count();
    Ok(correct as f64 / data.len().max(1) as f64)
}

fn split_options(options: &BenchOptions) -> SvdOptions {
    SvdOptions {
        energy: options.energy,
        iterations: ITERATIONS,
        basis: options.basis,
    }
}

fn layer_rows(
    model: &Model,
    split: &SplitExecutor<'_>,
    subspace: Option<&SubspaceReport>,
) -> Vec<LayerRow> {
    model
        .layers
        .iter()
        .zip(&split.layers)
        .enumerate()
        .map(|(index, (layer, stats))| LayerRow {
            name: layer.name.clone(),
            channels: stats.channels,
            mean_rank: stats.mean_rank(),
            max_rank: stats.rank_max,
            mean_residual_energy: stats.mean_residual_energy(),
            max_residual_energy: stats.residual_energy_max,
            kept_whole: stats.kept_whole,
            subspace_dimension: subspace.and_then(|report| {
                report.calibration.layers[index]
                    .subspace
                    .as_ref()
                    .map(|chosen| chosen.dimension)
            }),
            confined_share: stats.confined_sum as f64 / stats.rank_sum.max(1) as f64,
        })
        .collect()
}

fn max_difference(left: &[f32], right: &[f32]) -> f32 {
    left.iter()
        .zip(right)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max)
}

fn agreement(left: &[f32], right: &[f32]) -> usize {
    network::predictions(left)
        .iter()
        .zip(network::predictions(right))
        .filter(|(a, b)| **a == *b)
        .count()
}

/// The plain trainings the benchmark compares against: run here, with no worker, before
/// one is started, so that no worker sits idle through them (a wide model trains for
/// longer than a worker waits for its next request).
#[derive(Clone, Debug)]
pub struct Reference {
    /// The model after plain training in the [`ORDER_SEED`] order: the weights that
    /// inference is timed with.
    pub plain: Model,
    /// Its test accuracy.
    pub plain_accuracy: f64,
    /// Training mode: the test accuracy of plain training in another order (the spread
    /// to compare split training against).
    pub other_order_accuracy: Option<f64>,
}

/// The first `options.train_samples` and `options.test_samples` images.
fn subsets(options: &BenchOptions, train_data: &Data, test_data: &Data) -> (Data, Data) {
    let first =
        |data: &Data, count: usize| data.select(&(0..count.min(data.len())).collect::<Vec<_>>());
    (
        first(train_data, options.train_samples),
        first(test_data, options.test_samples),
    )
}

/// Trains [`Reference`] on `threads` threads (the worker's count; not timed).
pub fn reference(
    options: &BenchOptions,
    train_data: &Data,
    test_data: &Data,
    threads: usize,
) -> Result<Reference> {
    let (train_data, test_data) = subsets(options, train_data, test_data);
    let mut plain = options.model();
    let mut local = LocalExecutor::new(threads);
    train(&mut plain, &mut local, &train_data, options.epochs)?;
    let plain_accuracy = accuracy(&plain, &test_data, threads)?;
    let other_order_accuracy = match options.mode {
        Mode::Infer => None,
        Mode::Train => {
            let mut other = options.model();
            train_in_order(
                &mut other,
                &mut local,
                &train_data,
                options.epochs,
                ORDER_SEED + 1,
                |_, _| Ok(()),
            )?;
            Some(accuracy(&other, &test_data, threads)?)
        }
    };
    Ok(Reference {
        plain,
        plain_accuracy,
        other_order_accuracy,
    })
}

/// Runs the benchmark against a worker over `channel` that has `worker_threads` threads,
/// next to `reference` (from [`reference`] with the same options and images).
/// `train_data` and `test_data` are Fashion-MNIST (or any 28×28 images).
pub fn run_bench(
    options: &BenchOptions,
    channel: &mut dyn Channel,
    worker_threads: usize,
    reference: &Reference,
    train_data: &Data,
    test_data: &Data,
) -> Result<Report> {
    let (train_data, test_data) = subsets(options, train_data, test_data);
    let mut report = Report {
        options: options.clone(),
        worker_threads,
        samples: 0,
        runs: Vec::new(),
        blinded_offline: None,
        layers: Vec::new(),
        agreement: Vec::new(),
        max_logit_error: Vec::new(),
        accuracy: vec![("plain training", reference.plain_accuracy)],
        subspace: None,
    };
    match options.mode {
        Mode::Infer => bench_inference(
            options,
            channel,
            &reference.plain,
            &train_data,
            &test_data,
            &mut report,
        )?,
        Mode::Train => {
            bench_training(options, channel, &train_data, &test_data, &mut report)?;
            if let Some(other) = reference.other_order_accuracy {
                report
                    .accuracy
                    .push(("plain training, another order", other));
            }
        }
    }
    Ok(report)
}

/// The median, per mode and per figure, of each repetition's runs.
fn median_runs(all: &[Vec<TimedRun>]) -> Vec<TimedRun> {
    let Some(first) = all.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|index| {
            let median = |key: fn(&TimedRun) -> Duration| {
                let mut values: Vec<Duration> = all.iter().map(|runs| key(&runs[index])).collect();
                values.sort();
                values[values.len() / 2]
            };
            TimedRun {
                native: median(|run| run.native),
                waiting: median(|run| run.waiting),
                trusted_cpu: median(|run| run.trusted_cpu),
                ..first[index].clone()
            }
        })
        .collect()
}

fn bench_inference(
    options: &BenchOptions,
    channel: &mut dyn Channel,
    model: &Model,
    train_data: &Data,
    test_data: &Data,
    report: &mut Report,
) -> Result<()> {
    if options.basis == Basis::Subspace {
        let count = CALIBRATION_SAMPLES.min(train_data.len());
        let (images, _) = train_data.batch(0, count);
        let start = Stopwatch::start();
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let calibration =
            subspace::calibrate(model, images, count, &split_options(options), threads)?;
        report.subspace = Some(SubspaceReport {
            calibration,
            time: start.wall(),
            combination_macs: 0,
        });
    }
    let mut all = Vec::new();
    for repetition in 0..options.repetitions.max(1) {
        let mut one = Report {
            runs: Vec::new(),
            ..report.clone()
        };
        bench_inference_once(options, channel, model, test_data, &mut one)?;
        all.push(std::mem::take(&mut one.runs));
        if repetition == 0 {
            *report = one;
        }
    }
    report.runs = median_runs(&all);
    Ok(())
}

fn bench_inference_once(
    options: &BenchOptions,
    channel: &mut dyn Channel,
    model: &Model,
    test_data: &Data,
    report: &mut Report,
) -> Result<()> {
    let data =
        test_data.select(&(0..options.infer_samples.min(test_data.len())).collect::<Vec<_>>());
    report.samples = data.len();
    // Trusted-only.
    let mut trusted = LocalExecutor::new(1);
    let start = Stopwatch::start();
    let reference = logits(model, &mut trusted, &data)?;
    report.runs.push(TimedRun {
        name: "trusted-only",
        native: start.wall(),
        waiting: Duration::ZERO,
        trusted_cpu: start.cpu_or(start.wall()),
        trusted_macs: trusted.macs,
        trusted: true,
    });
    // Untrusted-only.
    let mut waiting = Duration::ZERO;
    load_model(channel, model, &mut waiting)?;
    let start = Stopwatch::start();
    let mut untrusted = Vec::new();
    for first in (0..data.len()).step_by(BATCH) {
        let count = BATCH.min(data.len() - first);
        let (images, _) = data.batch(first, count);
        let request = Request::WholeForward {
            batch: count as u32,
            images: images.to_vec(),
        };
        let [batch_logits] = call(channel, &request, &mut waiting)?
            .into_reals(1)?
            .try_into()
            .map_err(|_| Error::PeerMisbehaved {
                what: "a reply of the wrong kind",
            })?;
        untrusted.extend(batch_logits);
    }
    report.runs.push(TimedRun {
        name: "untrusted-only",
        native: start.wall(),
        waiting: Duration::ZERO,
        trusted_cpu: start.cpu_or(start.wall()),
        trusted_macs: 0,
        trusted: false,
    });
    report
        .agreement
        .push(("untrusted-only", agreement(&untrusted, &reference)));
    // Blinded.
    let mut blinded = BlindedExecutor::new(channel, model)?;
    for first in (0..data.len()).step_by(BATCH) {
        // One pass's pads per batch; the last batch may be smaller.
        let count = BATCH.min(data.len() - first);
        blinded.precompute(model, count, 1)?;
    }
    let start = Stopwatch::start();
    let blinded_logits = logits(model, &mut blinded, &data)?;
    report.runs.push(TimedRun {
        name: "blinded",
        native: start.wall(),
        waiting: blinded.waiting,
        trusted_cpu: start.cpu_or(start.wall().saturating_sub(blinded.waiting)),
        trusted_macs: 0,
        trusted: true,
    });
    report.blinded_offline = Some((blinded.offline_macs, blinded.offline_time));
    report
        .agreement
        .push(("blinded", agreement(&blinded_logits, &reference)));
    report
        .max_logit_error
        .push(("blinded", max_difference(&blinded_logits, &reference)));
    // Split.
    let mut split = SplitExecutor::new(channel, model, split_options(options));
    if let Some(subspace) = &mut report.subspace {
        split.use_subspaces(model, &subspace.calibration.subspaces())?;
        subspace.combination_macs = split.offline_macs;
    }
    let start = Stopwatch::start();
    let split_logits = logits(model, &mut split, &data)?;
    report.runs.push(TimedRun {
        name: "split",
        native: start.wall(),
        waiting: split.waiting,
        trusted_cpu: start.cpu_or(start.wall().saturating_sub(split.waiting)),
        trusted_macs: split.trusted_macs,
        trusted: true,
    });
    report.layers = layer_rows(model, &split, report.subspace.as_ref());
    report
        .agreement
        .push(("split", agreement(&split_logits, &reference)));
    report
        .max_logit_error
        .push(("split", max_difference(&split_logits, &reference)));
    Ok(())
}

fn bench_training_once(
    options: &BenchOptions,
    channel: &mut dyn Channel,
    train_data: &Data,
    report: &mut Report,
) -> Result<()> {
    let steps = options.timed_steps.min(train_data.len() / BATCH).max(1);
    report.samples = steps * BATCH;
    let batches: Vec<Data> = (0..steps)
        .map(|index| {
            let indices: Vec<usize> = (index * BATCH..(index + 1) * BATCH)
                .map(|sample| sample % train_data.len())
                .collect();
            train_data.select(&indices)
        })
        .collect();
    // Trusted-only.
    let mut model = options.model();
    let mut optimiser = Sgd::new(&model, LEARNING_RATE, MOMENTUM);
    let mut trusted = LocalExecutor::new(1);
    let start = Stopwatch::start();
    for batch in &batches {
        step(&mut model, &mut trusted, &mut optimiser, batch)?;
    }
    report.runs.push(TimedRun {
        name: "trusted-only",
        native: start.wall(),
        waiting: Duration::ZERO,
        trusted_cpu: start.cpu_or(start.wall()),
        trusted_macs: trusted.macs,
        trusted: true,
    });
    // Untrusted-only.
    let model = options.model();
    let mut waiting = Duration::ZERO;
    load_model(channel, &model, &mut waiting)?;
    let start = Stopwatch::start();
    for batch in &batches {
        let request = Request::WholeTrainStep {
            batch: batch.len() as u32,
            images: batch.images.clone(),
            labels: batch.labels.clone(),
            learning_rate: LEARNING_RATE,
        };
        match call(channel, &request, &mut waiting)? {
            Reply::Reals(_) => {}
            Reply::Failure(reason) => return Err(Error::WorkerFailed { reason }),
            _ => {
                return Err(Error::PeerMisbehaved {
                    what: "a reply of the wrong kind",
                });
            }
        }
    }
    report.runs.push(TimedRun {
        name: "untrusted-only",
        native: start.wall(),
        waiting: Duration::ZERO,
        trusted_cpu: start.cpu_or(start.wall()),
        trusted_macs: 0,
        trusted: false,
    });
    // Split, timed.
    let mut model = options.model();
    let mut optimiser = Sgd::new(&model, LEARNING_RATE, MOMENTUM);
    let mut split = SplitExecutor::new(channel, &model, split_options(options));
    split.load_model(&model)?;
    split.waiting = Duration::ZERO;
    let start = Stopwatch::start();
    for batch in &batches {
        step(&mut model, &mut split, &mut optimiser, batch)?;
        split.load_model(&model)?;
    }
    report.runs.push(TimedRun {
        name: "split",
        native: start.wall(),
        waiting: split.waiting,
        trusted_cpu: start.cpu_or(start.wall().saturating_sub(split.waiting)),
        trusted_macs: split.trusted_macs,
        trusted: true,
    });
    Ok(())
}

fn bench_training(
    options: &BenchOptions,
    channel: &mut dyn Channel,
    train_data: &Data,
    test_data: &Data,
    report: &mut Report,
) -> Result<()> {
    let mut all = Vec::new();
    for _ in 0..options.repetitions.max(1) {
        let mut one = Report {
            runs: Vec::new(),
            ..report.clone()
        };
        bench_training_once(options, channel, train_data, &mut one)?;
        report.samples = one.samples;
        all.push(one.runs);
    }
    report.runs = median_runs(&all);
    // Split training to the end, for accuracy against plain training.
    let mut model = options.model();
    let mut split = SplitExecutor::new(channel, &model, split_options(options));
    split.load_model(&model)?;
    train_split(&mut model, &mut split, train_data, options.epochs)?;
    report.layers = layer_rows(&model, &split, None);
    report.accuracy.push((
        "split training",
        accuracy(&model, test_data, report.worker_threads)?,
    ));
    Ok(())
}

/// Split training: [`train`] with the worker's weights refreshed after every step.
pub fn train_split(
    model: &mut Model,
    split: &mut SplitExecutor<'_>,
    data: &Data,
    epochs: usize,
) -> Result<()> {
    train_in_order(model, split, data, epochs, ORDER_SEED, |split, model| {
        split.load_model(model)
    })
}
