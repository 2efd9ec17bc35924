//! A fully connected ReLU network, its training loop (minibatch SGD with momentum on
//! softmax cross-entropy, hand-written backpropagation) and its export for veil.

use crate::Result;
use crate::digits::{CLASSES, Dataset, FEATURES};
use veil_core::sampling::SplitMix64;

/// Momentum of the SGD update (`velocity = MOMENTUM · velocity − rate · gradient`).
const MOMENTUM: f32 = 0.9;
/// The fixed-point precision written into the architecture JSON.
const FRACTIONAL_BITS: u32 = 16;
/// Mixed into the training seed so that training and [`crate::digits::split`] draw
/// different streams from the same seed.
const TRAINING_STREAM: u64 = 0x7472_6169_6e69_6e67; // "training"

/// Hyperparameters of [`train`].
#[derive(Clone, Debug, PartialEq)]
pub struct TrainingConfig {
    /// Widths of the hidden layers (each followed by ReLU); empty means a linear model.
    pub hidden: Vec<usize>,
    /// Passes over the training set.
    pub epochs: usize,
    /// SGD step size (with momentum 0.9).
    pub learning_rate: f32,
    /// Samples per gradient step (0 counts as 1); the last batch of an epoch may be smaller.
    pub batch_size: usize,
    /// Seeds the initialisation and the per-epoch shuffles.
    pub seed: u64,
}

impl Default for TrainingConfig {
    /// `64 → 32 → 10`, 60 epochs, rate 0.05 with momentum 0.9, batches of 32, seed 0.
    /// On 80/20 splits of the digits this reaches 96–98% test accuracy (97.3% mean, 96.1%
    /// worst over split and training seeds 0..20), training in well under a second.
    fn default() -> Self {
        Self {
            hidden: vec![32],
            epochs: 60,
            learning_rate: 0.05,
            batch_size: 32,
            seed: 0,
        }
    }
}

/// A multi-layer perceptron: linear layers with ReLU between them and none after the
/// last, whose outputs are the logits.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// `(weight, bias)` per layer in PyTorch's layout: weight `[out, in]` row-major, bias
    /// `[out]`, where `in = sizes[l]` and `out = sizes[l + 1]`.
    pub layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// Layer widths from input to output, e.g. `[64, 32, 10]`.
    pub sizes: Vec<usize>,
}

impl Mlp {
    /// A network with the given widths, He-initialised (Xavier for the last layer) from
    /// `rng`; biases start at zero.
    fn initialise(sizes: &[usize], rng: &mut SplitMix64) -> Self {
        let layer_count = sizes.len().saturating_sub(1);
        let layers = sizes
            .windows(2)
            .enumerate()
            .map(|(index, pair)| {
                let (inputs, outputs) = (pair[0], pair[1]);
                // He (Kaiming) normal for layers feeding a ReLU; Glorot (Xavier) normal for
                // the logits layer.
                let variance = if index + 1 < layer_count {
                    2.0 / inputs.max(1) as f64
                } else {
                    2.0 / (inputs + outputs).max(1) as f64
                };
                let deviation = variance.sqrt();
                let weight = (0..inputs * outputs)
                    .map(|_| (rng.next_normal() * deviation) as f32)
                    .collect();
                (weight, vec![0.0; outputs])
            })
            .collect();
        Self {
            layers,
            sizes: sizes.to_vec(),
        }
    }

    /// The logits for one sample.
    ///
    /// # Panics
    /// If `input.len()` is not the input width `sizes[0]`, or if `layers` and `sizes`
    /// disagree (a hand-built `Mlp` that breaks the documented layout).
    pub fn forward(&self, input: &[f32]) -> Vec<f32> {
        let mut activations = Vec::with_capacity(self.layers.len() + 1);
        self.forward_keep(input, &mut activations);
        activations.pop().unwrap_or_default()
    }

    /// The predicted class (index of the largest logit; the first one on ties).
    ///
    /// # Panics
    /// As [`Mlp::forward`].
    pub fn predict(&self, input: &[f32]) -> usize {
        argmax(&self.forward(input))
    }

    /// The fraction of `data` classified correctly (0 for an empty data set).
    pub fn accuracy(&self, data: &Dataset) -> f64 {
        if data.is_empty() {
            return 0.0;
        }
        let correct = (0..data.len())
            .filter(|&index| self.predict(data.sample(index)) == usize::from(data.labels[index]))
            .count();
        correct as f64 / data.len() as f64
    }

    /// The weights as safetensors bytes: `fc1.weight` `[out, in]`, `fc1.bias` `[out]`,
    /// `fc2.weight`, … (F32).
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        let mut tensors = Vec::with_capacity(2 * self.layers.len());
        for (index, ((weight, bias), pair)) in
            self.layers.iter().zip(self.sizes.windows(2)).enumerate()
        {
            let (inputs, outputs) = (pair[0], pair[1]);
            tensors.push((
                format!("fc{}.weight", index + 1),
                vec![outputs, inputs],
                weight.clone(),
            ));
            tensors.push((format!("fc{}.bias", index + 1), vec![outputs], bias.clone()));
        }
        Ok(veil_model::import::write_safetensors(&tensors)?)
    }

    /// The architecture JSON that [`veil_model::import::Architecture::from_json`] reads,
    /// matching the tensor names of [`Mlp::to_safetensors`]: input `[sizes[0]]`, 16
    /// fractional bits, and `linear` layers with `relu` between them.
    pub fn architecture_json(&self, name: &str) -> String {
        let mut layers = Vec::with_capacity(2 * self.layers.len());
        for index in 1..=self.layers.len() {
            if index > 1 {
                layers.push(r#"    { "op": "relu" }"#.to_string());
            }
            layers.push(format!(r#"    {{ "op": "linear", "weight": "fc{index}.weight", "bias": "fc{index}.bias" }}"#));
        }
        let name = serde_json::Value::String(name.to_string());
        let input = self.sizes.first().copied().unwrap_or(0);
        format!(
            "{{\n  \"name\": {name},\n  \"input\": [{input}],\n  \"fractional_bits\": {FRACTIONAL_BITS},\n  \"layers\": [\n{}\n  ]\n}}\n",
            layers.join(",\n")
        )
    }

    /// Runs the network on one sample, leaving every layer's output in `activations`:
    /// `activations[0]` is the input, `activations[l + 1]` the output of layer `l` (after
    /// ReLU, except for the last layer, which gives the logits).
    fn forward_keep(&self, input: &[f32], activations: &mut Vec<Vec<f32>>) {
        assert_eq!(
            input.len(),
            self.sizes.first().copied().unwrap_or(0),
            "Mlp::forward: input width"
        );
        activations.clear();
        activations.push(input.to_vec());
        for (index, (weight, bias)) in self.layers.iter().enumerate() {
            let previous = &activations[index];
            let mut output: Vec<f32> = if previous.is_empty() {
                bias.clone()
            } else {
                weight
                    .chunks_exact(previous.len())
                    .zip(bias)
                    .map(|(row, &b)| b + row.iter().zip(previous).map(|(w, x)| w * x).sum::<f32>())
                    .collect()
            };
            if index + 1 < self.layers.len() {
                output.iter_mut().for_each(|value| *value = value.max(0.0));
            }
            activations.push(output);
        }
    }
}

/// The index of the largest value (the first one on ties; 0 for an empty slice).
pub(crate) fn argmax(values: &[f32]) -> usize {
    values
        .iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (index, &value)| {
            if value > best.1 { (index, value) } else { best }
        })
        .0
}

/// Trains an MLP `FEATURES → hidden… → CLASSES` on `train` with softmax cross-entropy and
/// minibatch SGD with momentum 0.9. He initialisation (Xavier for the logits layer) and
/// the per-epoch shuffles come from `config.seed`, so the result is deterministic.
///
/// Returns the model and each epoch's mean training loss (measured on the minibatches
/// before their updates). For an empty data set the model stays at its initialisation
/// and every loss is NaN.
///
/// # Panics
/// If `train` breaks [`Dataset`]'s invariant (a label ≥ `CLASSES` or a features vector of
/// the wrong length); [`crate::digits::load`] and [`crate::digits::split`] never produce
/// such a data set.
pub fn train(train: &Dataset, config: &TrainingConfig) -> (Mlp, Vec<f32>) {
    let sizes: Vec<usize> = std::iter::once(FEATURES)
        .chain(config.hidden.iter().copied())
        .chain(std::iter::once(CLASSES))
        .collect();
    let mut rng = SplitMix64::new(config.seed ^ TRAINING_STREAM);
    let mut model = Mlp::initialise(&sizes, &mut rng);
    let zeros = |model: &Mlp| -> Vec<(Vec<f32>, Vec<f32>)> {
        model
            .layers
            .iter()
            .map(|(weight, bias)| (vec![0.0; weight.len()], vec![0.0; bias.len()]))
            .collect()
    };
    let mut velocity = zeros(&model);
    let mut gradient = zeros(&model);
    let mut activations = Vec::with_capacity(sizes.len());
    let mut deltas: Vec<Vec<f32>> = sizes.iter().map(|&width| vec![0.0; width]).collect();
    let batch_size = config.batch_size.max(1);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut losses = Vec::with_capacity(config.epochs);

    for _ in 0..config.epochs {
        rng.shuffle(&mut order);
        let mut total_loss = 0f64;
        for batch in order.chunks(batch_size) {
            gradient.iter_mut().for_each(|(weight, bias)| {
                weight.fill(0.0);
                bias.fill(0.0);
            });
            for &index in batch {
                model.forward_keep(train.sample(index), &mut activations);
                total_loss += f64::from(softmax_cross_entropy(
                    &mut deltas,
                    &activations,
                    usize::from(train.labels[index]),
                ));
                backward(&model, &activations, &mut deltas, &mut gradient);
            }
            let step = config.learning_rate / batch.len() as f32;
            for (
                ((weight, bias), (weight_velocity, bias_velocity)),
                (weight_gradient, bias_gradient),
            ) in model.layers.iter_mut().zip(&mut velocity).zip(&gradient)
            {
                for ((parameter, speed), grad) in weight
                    .iter_mut()
                    .zip(weight_velocity.iter_mut())
                    .zip(weight_gradient)
                {
                    *speed = MOMENTUM * *speed - step * grad;
                    *parameter += *speed;
                }
                for ((parameter, speed), grad) in bias
                    .iter_mut()
                    .zip(bias_velocity.iter_mut())
                    .zip(bias_gradient)
                {
                    *speed = MOMENTUM * *speed - step * grad;
                    *parameter += *speed;
                }
            }
        }
        losses.push((total_loss / train.len() as f64) as f32);
    }
    (model, losses)
}

/// Softmax cross-entropy of the logits (the last activation) against `label`: writes the
/// gradient with respect to the logits (`softmax − one_hot`) into the last delta and
/// returns the loss.
fn softmax_cross_entropy(deltas: &mut [Vec<f32>], activations: &[Vec<f32>], label: usize) -> f32 {
    let (Some(logits), Some(delta)) = (activations.last(), deltas.last_mut()) else {
        return 0.0;
    };
    let maximum = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (d, &logit) in delta.iter_mut().zip(logits) {
        *d = (logit - maximum).exp();
        sum += *d;
    }
    delta.iter_mut().for_each(|d| *d /= sum);
    delta[label] -= 1.0;
    // −log softmax(label) = log Σ exp(z − max) − (z_label − max).
    sum.ln() - (logits[label] - maximum)
}

/// Backpropagates the last delta through the network, adding each layer's weight and bias
/// gradients into `gradient`.
fn backward(
    model: &Mlp,
    activations: &[Vec<f32>],
    deltas: &mut [Vec<f32>],
    gradient: &mut [(Vec<f32>, Vec<f32>)],
) {
    for layer in (0..model.layers.len()).rev() {
        let input = &activations[layer];
        let (lower, upper) = deltas.split_at_mut(layer + 1);
        let delta = &upper[0];
        let (weight_gradient, bias_gradient) = &mut gradient[layer];
        if !input.is_empty() {
            for (row, &d) in weight_gradient.chunks_exact_mut(input.len()).zip(delta) {
                row.iter_mut().zip(input).for_each(|(g, &x)| *g += d * x);
            }
        }
        bias_gradient
            .iter_mut()
            .zip(delta)
            .for_each(|(g, &d)| *g += d);
        if layer == 0 {
            break;
        }
        // δ_in = Wᵀ δ_out, masked by the ReLU that produced this layer's input.
        let previous = &mut lower[layer];
        previous.fill(0.0);
        let weight = &model.layers[layer].0;
        if !input.is_empty() {
            for (row, &d) in weight.chunks_exact(input.len()).zip(delta) {
                previous.iter_mut().zip(row).for_each(|(p, &w)| *p += w * d);
            }
        }
        previous.iter_mut().zip(input).for_each(|(p, &x)| {
            if x <= 0.0 {
                *p = 0.0;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small network with non-trivial weights.
    fn small_model() -> Mlp {
        let mut rng = SplitMix64::new(11);
        let mut model = Mlp::initialise(&[3, 4, 2], &mut rng);
        for (_, bias) in &mut model.layers {
            bias.iter_mut()
                .for_each(|b| *b = (rng.next_normal() * 0.1) as f32);
        }
        model
    }

    fn loss(model: &Mlp, input: &[f32], label: usize) -> f32 {
        let mut activations = Vec::new();
        model.forward_keep(input, &mut activations);
        let mut deltas: Vec<Vec<f32>> = model.sizes.iter().map(|&width| vec![0.0; width]).collect();
        softmax_cross_entropy(&mut deltas, &activations, label)
    }

    #[test]
    fn gradients_match_finite_differences() {
        let model = small_model();
        let input = [0.3, -0.7, 0.9];
        let label = 1;
        let mut activations = Vec::new();
        model.forward_keep(&input, &mut activations);
        let mut deltas: Vec<Vec<f32>> = model.sizes.iter().map(|&width| vec![0.0; width]).collect();
        let mut gradient: Vec<(Vec<f32>, Vec<f32>)> = model
            .layers
            .iter()
            .map(|(w, b)| (vec![0.0; w.len()], vec![0.0; b.len()]))
            .collect();
        softmax_cross_entropy(&mut deltas, &activations, label);
        backward(&model, &activations, &mut deltas, &mut gradient);

        let epsilon = 1e-3;
        for (layer, (weight_gradient, bias_gradient)) in gradient.iter().enumerate() {
            // `is_bias` picks the tensor of the layer: false for the weight, true for the bias.
            for (is_bias, analytic_values) in [(false, weight_gradient), (true, bias_gradient)] {
                for (index, &analytic) in analytic_values.iter().enumerate() {
                    let nudged = |delta: f32| {
                        let mut copy = model.clone();
                        let (weight, bias) = &mut copy.layers[layer];
                        if is_bias {
                            bias[index] += delta
                        } else {
                            weight[index] += delta
                        }
                        loss(&copy, &input, label)
                    };
                    let numeric = (nudged(epsilon) - nudged(-epsilon)) / (2.0 * epsilon);
                    assert!(
                        (numeric - analytic).abs() < 2e-3,
                        "layer {layer} (bias: {is_bias}) index {index}: {numeric} vs {analytic}"
                    );
                }
            }
        }
    }

    #[test]
    fn forward_is_linear_relu_linear() {
        let model = Mlp {
            layers: vec![
                (vec![1.0, -1.0], vec![0.5]),
                (vec![2.0, -3.0], vec![0.0, 1.0]),
            ],
            sizes: vec![2, 1, 2],
        };
        assert_eq!(model.forward(&[1.0, 3.0]), vec![0.0, 1.0]); // hidden = max(0, -1.5) = 0
        assert_eq!(model.forward(&[3.0, 1.0]), vec![5.0, -6.5]); // hidden = 2.5
        assert_eq!(model.predict(&[3.0, 1.0]), 0);
    }

    #[test]
    fn architecture_json_escapes_the_name() {
        let model = small_model();
        let json: serde_json::Value =
            serde_json::from_str(&model.architecture_json("a \"quoted\" name"))
                .expect("valid JSON");
        assert_eq!(json["name"], "a \"quoted\" name");
        assert_eq!(json["input"], serde_json::json!([3]));
        assert_eq!(json["layers"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn degenerate_configurations_do_not_panic() {
        let empty = Dataset::default();
        let (model, losses) = train(
            &empty,
            &TrainingConfig {
                epochs: 2,
                ..TrainingConfig::default()
            },
        );
        assert_eq!(losses.len(), 2);
        assert!(losses.iter().all(|loss| loss.is_nan()));
        assert_eq!(model.accuracy(&empty), 0.0);

        let data = Dataset {
            features: vec![0.5; 2 * FEATURES],
            labels: vec![1, 2],
        };
        let config = TrainingConfig {
            hidden: vec![0],
            epochs: 2,
            batch_size: 0,
            ..TrainingConfig::default()
        };
        let (model, losses) = train(&data, &config);
        assert!(losses.iter().all(|loss| loss.is_finite()));
        assert_eq!(model.forward(data.sample(0)).len(), CLASSES);
        let (linear, _) = train(
            &data,
            &TrainingConfig {
                hidden: vec![],
                epochs: 1,
                ..TrainingConfig::default()
            },
        );
        assert_eq!(linear.sizes, vec![FEATURES, CLASSES]);
    }
}
