//! The two small CNNs of the split benchmarks, and the forward and backward passes that
//! run them with a pluggable [`Executor`] for the linear layers.
//!
//! The non-linear steps (bias, ReLU, 2×2 max-pooling, residual additions, the loss)
//! always run where the pass runs: on the trusted side in the trusted-only, split and
//! blinded modes. The executor decides who computes each convolution.
//!
//! | model            | layers (28×28×1 input, stride 1, 3×3 kernels, padding 1)                                 | MACs / sample |
//! |------------------|-------------------------------------------------------------------------------------------|---------------|
//! | `vgg-small`      | conv 1→16, conv 16→16, pool, conv 16→32, conv 32→32, pool, linear 1568→10                | 4.65 M        |
//! | `resnet18-small` | conv 1→16, block(16), pool, conv 16→32, block(32), pool, linear 1568→10 (block: 2 convs + skip) | 8.27 M  |
//!
//! That is the documented width, [`WIDTH`] = 16 channels in the first stage;
//! [`Model::with_width`] (`veil split-bench --width`) builds the same layers `w` and `2w`
//! channels wide, the multiply-accumulates growing as w². There is no batch
//! normalisation; weights start He-normal from a public seed. The linear layer is a 7×7
//! convolution without padding over the `2w × 7 × 7` map (the same algebra).

use crate::kernels::{self, ConvGeometry};
use crate::{Error, Result};
use veil_core::sampling::SplitMix64;

/// Image side.
pub const SIDE: usize = 28;
/// Classes.
pub const CLASSES: usize = 10;
/// Channels of the first stage by default (the second has twice as many).
pub const WIDTH: usize = 16;
/// The widest model a worker builds (`LoadModel` names the width).
pub const MAX_WIDTH: usize = 256;

/// Which model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// Four 3×3 convolutions and a linear layer.
    VggSmall,
    /// A stem, two residual blocks and a linear layer.
    Resnet18Small,
}

impl Architecture {
    /// Both models.
    pub const ALL: [Architecture; 2] = [Architecture::VggSmall, Architecture::Resnet18Small];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::VggSmall => "vgg-small",
            Architecture::Resnet18Small => "resnet18-small",
        }
    }

    /// The model of a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|model| model.name() == name)
    }

    /// The one-byte wire code.
    pub fn code(self) -> u8 {
        match self {
            Architecture::VggSmall => 1,
            Architecture::Resnet18Small => 2,
        }
    }

    /// The model of a wire code.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|model| model.code() == code)
    }
}

/// One step of a forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// A convolution (or the final linear layer) with bias, then a ReLU when `relu`.
    Conv {
        /// Index into [`Model::layers`].
        layer: usize,
        /// Whether a ReLU follows.
        relu: bool,
    },
    /// 2×2 max-pooling, stride 2.
    MaxPool,
    /// Remember the activation (a residual block's skip).
    Save,
    /// Add the remembered activation, then a ReLU.
    AddSavedRelu,
}

/// A convolution layer's public geometry and its parameters (secret: its `Debug` prints
/// their sizes only).
#[derive(Clone)]
pub struct Layer {
    /// Its name in reports (`conv1`, …, `linear`).
    pub name: String,
    /// Its geometry.
    pub geometry: ConvGeometry,
    /// `out × in × k × k`.
    pub weight: Vec<f32>,
    /// One per output channel.
    pub bias: Vec<f32>,
}

/// A model: layers and the steps that use them.
#[derive(Clone, Debug)]
pub struct Model {
    /// Which one.
    pub architecture: Architecture,
    /// Channels of the first stage (the second has twice as many).
    pub width: usize,
    /// The layers, in the order the ops first use them.
    pub layers: Vec<Layer>,
    /// The forward pass.
    pub ops: Vec<Op>,
}

impl Model {
    /// The model at its documented width ([`WIDTH`] channels in the first stage) with
    /// He-normal weights from `seed` and zero biases.
    pub fn new(architecture: Architecture, seed: u64) -> Model {
        Model::with_width(architecture, WIDTH, seed)
    }

    /// The model with `width` channels in the first stage and `2 × width` in the second.
    pub fn with_width(architecture: Architecture, width: usize, seed: u64) -> Model {
        let wide = 2 * width;
        let mut random = SplitMix64::new(seed);
        let mut layers = Vec::new();
        let mut ops = Vec::new();
        let mut conv = |layers: &mut Vec<Layer>,
                        ops: &mut Vec<Op>,
                        (channels, side, out_channels): (usize, usize, usize),
                        relu: bool| {
            let geometry = ConvGeometry {
                channels,
                height: side,
                width: side,
                out_channels,
                kernel: 3,
                padding: 1,
            };
            let sigma = (2.0 / (channels * 9) as f32).sqrt();
            layers.push(Layer {
                name: format!("conv{}", layers.len() + 1),
                geometry,
                weight: random.normal_vec(geometry.weight_len(), sigma),
                bias: vec![0.0; out_channels],
            });
            ops.push(Op::Conv {
                layer: layers.len() - 1,
                relu,
            });
        };
        match architecture {
            Architecture::VggSmall => {
                conv(&mut layers, &mut ops, (1, 28, width), true);
                conv(&mut layers, &mut ops, (width, 28, width), true);
                ops.push(Op::MaxPool);
                conv(&mut layers, &mut ops, (width, 14, wide), true);
                conv(&mut layers, &mut ops, (wide, 14, wide), true);
                ops.push(Op::MaxPool);
            }
            Architecture::Resnet18Small => {
                conv(&mut layers, &mut ops, (1, 28, width), true);
                ops.push(Op::Save);
                conv(&mut layers, &mut ops, (width, 28, width), true);
                conv(&mut layers, &mut ops, (width, 28, width), false);
                ops.push(Op::AddSavedRelu);
                ops.push(Op::MaxPool);
                conv(&mut layers, &mut ops, (width, 14, wide), true);
                ops.push(Op::Save);
                conv(&mut layers, &mut ops, (wide, 14, wide), true);
                conv(&mut layers, &mut ops, (wide, 14, wide), false);
                ops.push(Op::AddSavedRelu);
                ops.push(Op::MaxPool);
            }
        }
        let geometry = ConvGeometry {
            channels: wide,
            height: 7,
            width: 7,
            out_channels: CLASSES,
            kernel: 7,
            padding: 0,
        };
        let sigma = (1.0 / geometry.channels as f32 / 49.0).sqrt();
        layers.push(Layer {
            name: "linear".into(),
            geometry,
            weight: random.normal_vec(geometry.weight_len(), sigma),
            bias: vec![0.0; CLASSES],
        });
        ops.push(Op::Conv {
            layer: layers.len() - 1,
            relu: false,
        });
        Model {
            architecture,
            width,
            layers,
            ops,
        }
    }

    /// Multiply-accumulates of one sample's forward pass through the linear layers.
    pub fn macs_per_sample(&self) -> u64 {
        self.layers.iter().map(|layer| layer.geometry.macs()).sum()
    }
}

/// Who computes the convolutions of a pass. Inputs and outputs are batches, sample-major.
pub trait Executor {
    /// `W ⊛ input` for each sample (no bias). `training`: keep what the backward needs.
    fn conv_forward(
        &mut self,
        model: &Model,
        layer: usize,
        input: &[f32],
        batch: usize,
        training: bool,
    ) -> Result<Vec<f32>>;

    /// The weight gradient summed over the batch and, when `need_input`, the input
    /// gradient, from the output gradient (equations 5–6).
    fn conv_backward(
        &mut self,
        model: &Model,
        layer: usize,
        grad_output: &[f32],
        batch: usize,
        need_input: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)>;

    /// Called before each forward pass.
    fn begin_pass(&mut self) {}
}

/// What the backward pass needs from the forward one (activations: its `Debug` prints
/// shapes only).
#[derive(Default)]
pub struct Trace {
    /// Per op: the activation after it (ReLU masks) or the pooling's chosen positions.
    outputs: Vec<Vec<f32>>,
    argmax: Vec<Vec<u32>>,
    /// Per op: the (c, h, w) of its input.
    shapes: Vec<(usize, usize, usize)>,
}

fn check(op: &'static str, expected: usize, found: usize) -> Result<()> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            expected,
            found,
        })
    }
}

/// The logits (`batch × 10`) for `input` (`batch × 28 × 28`).
pub fn forward(
    model: &Model,
    executor: &mut dyn Executor,
    input: &[f32],
    batch: usize,
    training: bool,
) -> Result<(Vec<f32>, Trace)> {
    check("forward", batch * SIDE * SIDE, input.len())?;
    executor.begin_pass();
    let mut trace = Trace::default();
    let mut x = input.to_vec();
    let mut shape = (1, SIDE, SIDE);
    let mut saved = Vec::new();
    for op in &model.ops {
        trace.shapes.push(shape);
        let mut argmax = Vec::new();
        match *op {
            Op::Conv { layer, relu } => {
                let geometry = &model.layers[layer].geometry;
                let mut y = executor.conv_forward(model, layer, &x, batch, training)?;
                check("conv output", batch * geometry.output_len(), y.len())?;
                let positions = geometry.output_positions();
                for (index, value) in y.iter_mut().enumerate() {
                    *value += model.layers[layer].bias[(index / positions) % geometry.out_channels];
                    if relu && *value < 0.0 {
                        *value = 0.0;
                    }
                }
                shape = (
                    geometry.out_channels,
                    geometry.output_height(),
                    geometry.output_width(),
                );
                x = y;
            }
            Op::MaxPool => {
                let (c, h, w) = shape;
                let (oh, ow) = (h / 2, w / 2);
                let mut y = vec![0f32; batch * c * oh * ow];
                argmax = vec![0u32; y.len()];
                for plane in 0..batch * c {
                    let source = &x[plane * h * w..(plane + 1) * h * w];
                    for oy in 0..oh {
                        for ox in 0..ow {
                            let mut best = (2 * oy) * w + 2 * ox;
                            for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
                                let at = (2 * oy + dy) * w + 2 * ox + dx;
                                if source[at] > source[best] {
                                    best = at;
                                }
                            }
                            let out = plane * oh * ow + oy * ow + ox;
                            y[out] = source[best];
                            argmax[out] = best as u32;
                        }
                    }
                }
                shape = (c, oh, ow);
                x = y;
            }
            Op::Save => saved.push(x.clone()),
            Op::AddSavedRelu => {
                let skip = saved
                    .pop()
                    .ok_or(Error::ApiMisuse("a skip without a save"))?;
                check("residual add", x.len(), skip.len())?;
                for (value, &other) in x.iter_mut().zip(&skip) {
                    *value = (*value + other).max(0.0);
                }
            }
        }
        trace.argmax.push(argmax);
        trace
            .outputs
            .push(if training { x.clone() } else { Vec::new() });
    }
    Ok((x, trace))
}

/// Per layer: (weight gradient, bias gradient), summed over the batch.
pub type Gradients = Vec<(Vec<f32>, Vec<f32>)>;

/// Backpropagates `grad_logits` through a training [`forward`] pass.
pub fn backward(
    model: &Model,
    executor: &mut dyn Executor,
    trace: &Trace,
    grad_logits: Vec<f32>,
    batch: usize,
) -> Result<Gradients> {
    let mut gradients: Gradients = model
        .layers
        .iter()
        .map(|layer| (vec![0f32; layer.weight.len()], vec![0f32; layer.bias.len()]))
        .collect();
    let mut g = grad_logits;
    let mut skips: Vec<Vec<f32>> = Vec::new();
    for (index, op) in model.ops.iter().enumerate().rev() {
        let output = &trace.outputs[index];
        match *op {
            Op::Conv { layer, relu } => {
                let geometry = &model.layers[layer].geometry;
                if relu {
                    for (grad, &value) in g.iter_mut().zip(output) {
                        if value <= 0.0 {
                            *grad = 0.0;
                        }
                    }
                }
                let positions = geometry.output_positions();
                for (position, &grad) in g.iter().enumerate() {
                    gradients[layer].1[(position / positions) % geometry.out_channels] += grad;
                }
                let (weight, input) = executor.conv_backward(model, layer, &g, batch, index > 0)?;
                check("weight gradient", geometry.weight_len(), weight.len())?;
                for (total, value) in gradients[layer].0.iter_mut().zip(weight) {
                    *total += value;
                }
                match input {
                    Some(input) => {
                        check("input gradient", batch * geometry.input_len(), input.len())?;
                        g = input;
                    }
                    None => break,
                }
            }
            Op::MaxPool => {
                let (c, h, w) = trace.shapes[index];
                let (oh, ow) = (h / 2, w / 2);
                let mut input = vec![0f32; batch * c * h * w];
                for plane in 0..batch * c {
                    for out in 0..oh * ow {
                        let at = plane * oh * ow + out;
                        input[plane * h * w + trace.argmax[index][at] as usize] += g[at];
                    }
                }
                g = input;
            }
            Op::AddSavedRelu => {
                for (grad, &value) in g.iter_mut().zip(output) {
                    if value <= 0.0 {
                        *grad = 0.0;
                    }
                }
                skips.push(g.clone());
            }
            Op::Save => {
                let skip = skips
                    .pop()
                    .ok_or(Error::ApiMisuse("a save without a skip"))?;
                for (grad, value) in g.iter_mut().zip(skip) {
                    *grad += value;
                }
            }
        }
    }
    Ok(gradients)
}

/// Mean softmax cross-entropy over the batch, and its gradient in the logits.
pub fn cross_entropy(logits: &[f32], labels: &[u8]) -> (f32, Vec<f32>) {
    let batch = labels.len();
    let mut grad = vec![0f32; logits.len()];
    let mut loss = 0f32;
    for (sample, &label) in labels.iter().enumerate() {
        let row = &logits[sample * CLASSES..(sample + 1) * CLASSES];
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f32> = row.iter().map(|&value| (value - max).exp()).collect();
        let sum: f32 = exps.iter().sum();
        loss -= (exps[usize::from(label)] / sum).ln();
        for class in 0..CLASSES {
            let target = if class == usize::from(label) {
                1.0
            } else {
                0.0
            };
            grad[sample * CLASSES + class] = (exps[class] / sum - target) / batch as f32;
        }
    }
    (loss / batch as f32, grad)
}

/// The index of the largest logit per sample.
pub fn predictions(logits: &[f32]) -> Vec<u8> {
    logits
        .chunks(CLASSES)
        .map(|row| {
            (0..CLASSES)
                .max_by(|&a, &b| row[a].total_cmp(&row[b]))
                .unwrap_or(0) as u8
        })
        .collect()
}

/// SGD with momentum; its state lives with the weights (the trusted side). Its `Debug`
/// leaves the velocities out.
pub struct Sgd {
    /// Step size.
    pub learning_rate: f32,
    /// Momentum.
    pub momentum: f32,
    velocity: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Sgd {
    /// An optimiser for `model`.
    pub fn new(model: &Model, learning_rate: f32, momentum: f32) -> Sgd {
        Sgd {
            learning_rate,
            momentum,
            velocity: model
                .layers
                .iter()
                .map(|layer| (vec![0f32; layer.weight.len()], vec![0f32; layer.bias.len()]))
                .collect(),
        }
    }

    /// One update.
    pub fn step(&mut self, model: &mut Model, gradients: &Gradients) {
        for ((layer, (weight_grad, bias_grad)), (weight_velocity, bias_velocity)) in model
            .layers
            .iter_mut()
            .zip(gradients)
            .zip(&mut self.velocity)
        {
            for (parameters, grads, velocity) in [
                (&mut layer.weight, weight_grad, weight_velocity),
                (&mut layer.bias, bias_grad, bias_velocity),
            ] {
                for ((parameter, &grad), speed) in
                    parameters.iter_mut().zip(grads).zip(velocity.iter_mut())
                {
                    *speed = self.momentum * *speed + grad;
                    *parameter -= self.learning_rate * *speed;
                }
            }
        }
    }
}

/// Convolutions computed here, on `threads` threads (1: the trusted runtime's one thread),
/// counting their multiply-accumulates. The worker runs one on the residuals it receives.
pub struct LocalExecutor {
    /// Threads (samples are divided among them).
    pub threads: usize,
    /// Multiply-accumulates done so far.
    pub macs: u64,
    inputs: Vec<Option<Vec<f32>>>,
}

impl LocalExecutor {
    /// An executor on `threads` threads.
    pub fn new(threads: usize) -> LocalExecutor {
        LocalExecutor {
            threads: threads.max(1),
            macs: 0,
            inputs: Vec::new(),
        }
    }

    /// Keeps `input` as layer `layer`'s input for the next backward (the worker keeps the
    /// residual it convolved).
    fn keep(&mut self, layer: usize, input: Vec<f32>) {
        if self.inputs.len() <= layer {
            self.inputs.resize(layer + 1, None);
        }
        self.inputs[layer] = Some(input);
    }
}

/// Runs `work(sample, output chunk)` for every sample, on up to `threads` threads, and
/// returns the sum of what it returns.
pub fn parallel_samples<T, F>(threads: usize, output: &mut [T], per_sample: usize, work: F) -> u64
where
    T: Send,
    F: Fn(usize, &mut [T]) -> u64 + Sync,
{
    if per_sample == 0 {
        return 0;
    }
    let samples = output.len() / per_sample;
    let threads = threads.clamp(1, samples.max(1));
    if threads == 1 {
        return output
            .chunks_mut(per_sample)
            .enumerate()
            .map(|(sample, chunk)| work(sample, chunk))
            .sum();
    }
    let per_thread = samples.div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = output
            .chunks_mut(per_thread * per_sample)
            .enumerate()
            .map(|(block, chunk)| {
                let work = &work;
                scope.spawn(move || {
                    chunk
                        .chunks_mut(per_sample)
                        .enumerate()
                        .map(|(offset, sample)| work(block * per_thread + offset, sample))
                        .sum::<u64>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or(0))
            .sum()
    })
}

impl Executor for LocalExecutor {
    fn conv_forward(
        &mut self,
        model: &Model,
        layer: usize,
        input: &[f32],
        batch: usize,
        training: bool,
    ) -> Result<Vec<f32>> {
        let geometry = model.layers[layer].geometry;
        check("conv input", batch * geometry.input_len(), input.len())?;
        let weight = &model.layers[layer].weight;
        let mut output = vec![0f32; batch * geometry.output_len()];
        self.macs += parallel_samples(
            self.threads,
            &mut output,
            geometry.output_len(),
            |sample, out| {
                let x = &input[sample * geometry.input_len()..(sample + 1) * geometry.input_len()];
                kernels::conv_forward(&geometry, x, weight, out)
            },
        );
        if training {
            self.keep(layer, input.to_vec());
        }
        Ok(output)
    }

    fn conv_backward(
        &mut self,
        model: &Model,
        layer: usize,
        grad_output: &[f32],
        batch: usize,
        need_input: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let geometry = model.layers[layer].geometry;
        check(
            "conv gradient",
            batch * geometry.output_len(),
            grad_output.len(),
        )?;
        let input = self
            .inputs
            .get_mut(layer)
            .and_then(Option::take)
            .ok_or(Error::ApiMisuse("a backward without its training forward"))?;
        check("kept input", batch * geometry.input_len(), input.len())?;
        let weight = &model.layers[layer].weight;
        let output_len = geometry.output_len();
        let input_len = geometry.input_len();
        // Per-thread partial weight gradients, then their sum.
        let threads = self.threads.clamp(1, batch.max(1));
        let per_thread = batch.div_ceil(threads);
        let mut partials = vec![0f32; threads * geometry.weight_len()];
        self.macs += parallel_samples(
            threads,
            &mut partials,
            geometry.weight_len(),
            |block, out| {
                let mut macs = 0;
                for sample in block * per_thread..((block + 1) * per_thread).min(batch) {
                    macs += kernels::conv_backward_weight(
                        &geometry,
                        &input[sample * input_len..(sample + 1) * input_len],
                        &grad_output[sample * output_len..(sample + 1) * output_len],
                        out,
                    );
                }
                macs
            },
        );
        let mut weight_grad = vec![0f32; geometry.weight_len()];
        for partial in partials.chunks(geometry.weight_len()) {
            for (total, value) in weight_grad.iter_mut().zip(partial) {
                *total += value;
            }
        }
        let input_grad = if need_input {
            let mut grad = vec![0f32; batch * input_len];
            self.macs += parallel_samples(self.threads, &mut grad, input_len, |sample, out| {
                kernels::conv_backward_input(
                    &geometry,
                    &grad_output[sample * output_len..(sample + 1) * output_len],
                    weight,
                    out,
                )
            });
            Some(grad)
        } else {
            None
        };
        Ok((weight_grad, input_grad))
    }
}

impl std::fmt::Debug for Layer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Layer")
            .field("name", &self.name)
            .field("geometry", &self.geometry)
            .field("weights", &self.weight.len())
            .field("biases", &self.bias.len())
            .finish()
    }
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Trace")
            .field("shapes", &self.shapes)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Sgd {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Sgd")
            .field("learning_rate", &self.learning_rate)
            .field("momentum", &self.momentum)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for LocalExecutor {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LocalExecutor")
            .field("threads", &self.threads)
            .field("macs", &self.macs)
            .finish_non_exhaustive()
    }
}
