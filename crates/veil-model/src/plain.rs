//! The plain f32 executor: the reference every secure result is measured against.

use crate::ir::{Op, pooling_indices, transpose_indices};
use crate::plan::Plan;
use crate::{Error, Result};

/// Runs the plan on a batch of inputs in f32 (f64 accumulation); returns the output
/// node's values. `input` is the flat buffer of [`crate::PublicPlan::split_inputs`]: for
/// one input, row-major `batch × input_len` values.
pub fn run_plain(plan: &Plan, input: &[f32], batch: usize) -> Result<Vec<f32>> {
    let mut values = run_plain_all(plan, input, batch)?;
    Ok(values.swap_remove(plan.public.graph.output))
}

/// Like [`run_plain`], but returns every node's values (for calibration).
pub fn run_plain_all(plan: &Plan, input: &[f32], batch: usize) -> Result<Vec<Vec<f32>>> {
    let graph = &plan.public.graph;
    let mut inputs = plan.public.split_inputs(input, batch)?.into_iter();
    let shapes = graph.infer_shapes(batch)?;
    let mut values: Vec<Vec<f32>> = Vec::with_capacity(graph.nodes.len());
    for (index, node) in graph.nodes.iter().enumerate() {
        let value = match &node.op {
            // Inputs come first, in the order `split_inputs` returns them.
            Op::Input { .. } => inputs
                .next()
                .ok_or_else(|| Error::InvalidGraph {
                    node: index,
                    reason: format!("no values for input {:?}", node.name),
                })?
                .to_vec(),
            Op::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => {
                let x = &values[node.inputs[0]];
                let w = &plan.weights[weight];
                let rows = x.len() / in_features;
                let mut out = vec![0f32; rows * out_features];
                // Row by row, accumulating x[k]·W[k, ·] over k: W is read in its
                // stored order, which keeps transformer-sized layers fast.
                let mut sums = vec![0f64; *out_features];
                for (row, output) in x.chunks(*in_features).zip(out.chunks_mut(*out_features)) {
                    match bias {
                        Some(bias) => {
                            for (sum, &b) in sums.iter_mut().zip(&plan.weights[bias]) {
                                *sum = f64::from(b);
                            }
                        }
                        None => sums.fill(0.0),
                    }
                    for (&value, weights) in row.iter().zip(w.chunks(*out_features)) {
                        let value = f64::from(value);
                        for (sum, &weight) in sums.iter_mut().zip(weights) {
                            *sum += value * f64::from(weight);
                        }
                    }
                    for (slot, &sum) in output.iter_mut().zip(&sums) {
                        *slot = sum as f32;
                    }
                }
                out
            }
            Op::Conv2d {
                weight,
                bias,
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            } => {
                let input_shape = &shapes[node.inputs[0]];
                let output_shape = &shapes[index];
                let (height, width) = (input_shape[2], input_shape[3]);
                let (output_height, output_width) = (output_shape[2], output_shape[3]);
                let x = &values[node.inputs[0]];
                let w = &plan.weights[weight];
                let mut out = vec![0f32; output_shape.iter().product()];
                for n in 0..batch {
                    for o in 0..*out_channels {
                        let bias_value =
                            bias.as_ref().map_or(0.0, |b| f64::from(plan.weights[b][o]));
                        for y in 0..output_height {
                            for x_out in 0..output_width {
                                let mut sum = bias_value;
                                for c in 0..*in_channels {
                                    for ky in 0..*kernel {
                                        for kx in 0..*kernel {
                                            let row =
                                                (y * stride + ky) as isize - *padding as isize;
                                            let column =
                                                (x_out * stride + kx) as isize - *padding as isize;
                                            if row < 0
                                                || column < 0
                                                || row >= height as isize
                                                || column >= width as isize
                                            {
                                                continue;
                                            }
                                            let input_index = ((n * in_channels + c) * height
                                                + row as usize)
                                                * width
                                                + column as usize;
                                            let weight_index =
                                                ((o * in_channels + c) * kernel + ky) * kernel + kx;
                                            sum += f64::from(x[input_index])
                                                * f64::from(w[weight_index]);
                                        }
                                    }
                                }
                                out[((n * out_channels + o) * output_height + y) * output_width
                                    + x_out] = sum as f32;
                            }
                        }
                    }
                }
                out
            }
            Op::MaxPool2d { kernel, stride, .. } => {
                let x = &values[node.inputs[0]];
                let offsets = pooling_indices(&shapes[node.inputs[0]], *kernel, *stride);
                let mut out = vec![f32::NEG_INFINITY; shapes[index].iter().product()];
                for indices in &offsets {
                    for (slot, &source) in out.iter_mut().zip(indices) {
                        *slot = slot.max(x[source]);
                    }
                }
                out
            }
            Op::AvgPool2d { kernel, stride } => {
                let x = &values[node.inputs[0]];
                let offsets = pooling_indices(&shapes[node.inputs[0]], *kernel, *stride);
                let mut out = vec![0f64; shapes[index].iter().product()];
                for indices in &offsets {
                    for (slot, &source) in out.iter_mut().zip(indices) {
                        *slot += f64::from(x[source]);
                    }
                }
                let area = (kernel * kernel) as f64;
                out.iter().map(|&sum| (sum / area) as f32).collect()
            }
            Op::Relu { .. } => values[node.inputs[0]].iter().map(|&v| v.max(0.0)).collect(),
            Op::LayerNorm {
                weight,
                bias,
                features,
                epsilon,
            } => {
                let (gamma, beta) = (&plan.weights[weight], &plan.weights[bias]);
                values[node.inputs[0]]
                    .chunks(*features)
                    .flat_map(|row| {
                        let (mean, variance) = mean_and_variance(row);
                        let scale = 1.0 / (variance + epsilon).sqrt();
                        row.iter().enumerate().map(move |(i, &v)| {
                            ((f64::from(v) - mean) * scale * f64::from(gamma[i])
                                + f64::from(beta[i])) as f32
                        })
                    })
                    .collect()
            }
            Op::Softmax { .. } => {
                let columns = shapes[index].last().copied().unwrap_or(1).max(1);
                values[node.inputs[0]]
                    .chunks(columns)
                    .flat_map(|row| {
                        let largest = row
                            .iter()
                            .fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
                        let exps: Vec<f64> = row
                            .iter()
                            .map(|&v| (f64::from(v) - largest).exp())
                            .collect();
                        let sum: f64 = exps.iter().sum();
                        exps.into_iter().map(move |e| (e / sum) as f32)
                    })
                    .collect()
            }
            Op::Tanh { .. } => values[node.inputs[0]]
                .iter()
                .map(|&v| f64::from(v).tanh() as f32)
                .collect(),
            Op::FirstToken => {
                let [_, tokens, features] = shapes[node.inputs[0]][..] else {
                    return Err(Error::InvalidGraph {
                        node: index,
                        reason: "first_token of a value that is not [batch, tokens, features]"
                            .into(),
                    });
                };
                values[node.inputs[0]]
                    .chunks(tokens * features)
                    .flat_map(|sample| sample[..features].iter().copied())
                    .collect()
            }
            Op::Gelu { .. } | Op::GeluTable { .. } => values[node.inputs[0]]
                .iter()
                .map(|&v| gelu(f64::from(v)) as f32)
                .collect(),
            Op::MatMul { transpose_right } => {
                let (left, right) = (&values[node.inputs[0]], &values[node.inputs[1]]);
                let left_shape = &shapes[node.inputs[0]];
                let rank = left_shape.len();
                let (m, k) = (left_shape[rank - 2], left_shape[rank - 1]);
                let n = shapes[index][rank - 1];
                let products = left.len() / (m * k).max(1);
                let mut out = vec![0f32; products * m * n];
                for product in 0..products {
                    let (a, b) = (&left[product * m * k..], &right[product * k * n..]);
                    for row in 0..m {
                        for column in 0..n {
                            let sum: f64 = (0..k)
                                .map(|inner| {
                                    let right_value = if *transpose_right {
                                        b[column * k + inner]
                                    } else {
                                        b[inner * n + column]
                                    };
                                    f64::from(a[row * k + inner]) * f64::from(right_value)
                                })
                                .sum();
                            out[product * m * n + row * n + column] = sum as f32;
                        }
                    }
                }
                out
            }
            Op::Scale { factor } => values[node.inputs[0]]
                .iter()
                .map(|&v| (f64::from(v) * factor) as f32)
                .collect(),
            Op::Reshape { .. } => values[node.inputs[0]].clone(),
            Op::Transpose { permutation } => {
                let x = &values[node.inputs[0]];
                transpose_indices(&shapes[node.inputs[0]], permutation)
                    .into_iter()
                    .map(|source| x[source])
                    .collect()
            }
            Op::Flatten => values[node.inputs[0]].clone(),
            Op::Add => values[node.inputs[0]]
                .iter()
                .zip(&values[node.inputs[1]])
                .map(|(a, b)| a + b)
                .collect(),
            Op::MaskScores { penalty } => {
                let (scores, mask) = (&values[node.inputs[0]], &values[node.inputs[1]]);
                let keys = shapes[node.inputs[1]][1].max(1);
                // Each sample's scores are rows of `keys` values, all under its mask.
                let per_sample = scores.len() / batch.max(1);
                scores
                    .iter()
                    .enumerate()
                    .map(|(position, &score)| {
                        let sample = position / per_sample.max(1);
                        let present = f64::from(mask[sample * keys + position % keys]);
                        (f64::from(score) + (present - 1.0) * f64::from(*penalty)) as f32
                    })
                    .collect()
            }
            Op::MaskedSum => {
                let (x, mask) = (&values[node.inputs[0]], &values[node.inputs[1]]);
                let [_, tokens, features] = shapes[node.inputs[0]][..] else {
                    return Err(Error::InvalidGraph {
                        node: index,
                        reason: "masked_sum of a value that is not [batch, tokens, features]"
                            .into(),
                    });
                };
                let mut out = vec![0f32; batch * features];
                for sample in 0..batch {
                    for feature in 0..features {
                        let sum: f64 = (0..tokens)
                            .map(|token| {
                                f64::from(mask[sample * tokens + token])
                                    * f64::from(x[(sample * tokens + token) * features + feature])
                            })
                            .sum();
                        out[sample * features + feature] = sum as f32;
                    }
                }
                out
            }
            Op::Quadratic { a, b, c } => values[node.inputs[0]]
                .iter()
                .map(|&v| {
                    let x = f64::from(v);
                    (a * x * x + b * x + c) as f32
                })
                .collect(),
            Op::QuadSoftmax { shift, masked, .. } => {
                let scores = &values[node.inputs[0]];
                let columns = shapes[index].last().copied().unwrap_or(1).max(1);
                let per_sample = scores.len() / batch.max(1);
                let mask = masked.then(|| &values[node.inputs[1]]);
                scores
                    .chunks(columns)
                    .enumerate()
                    .flat_map(|(row, values)| {
                        let sample = row * columns / per_sample.max(1);
                        let mask = mask.map(|mask| &mask[sample * columns..(sample + 1) * columns]);
                        quad_softmax_row(values, *shift, mask)
                    })
                    .collect()
            }
            Op::ReluSoftmax { epsilon, .. } => {
                let columns = shapes[index].last().copied().unwrap_or(1).max(1);
                values[node.inputs[0]]
                    .chunks(columns)
                    .flat_map(|row| relu_softmax_row(row, *epsilon))
                    .collect()
            }
        };
        debug_assert_eq!(value.len(), shapes[index].iter().product::<usize>());
        values.push(value);
    }
    Ok(values)
}

/// MPCFormer's 2Quad softmax of one row: q = (x + shift)², times the mask where there is
/// one, over Σq.
pub fn quad_softmax_row(row: &[f32], shift: f64, mask: Option<&[f32]>) -> Vec<f32> {
    let q: Vec<f64> = row
        .iter()
        .enumerate()
        .map(|(key, &v)| {
            let present = mask.map_or(1.0, |mask| f64::from(mask[key]));
            (f64::from(v) + shift).powi(2) * present
        })
        .collect();
    let sum: f64 = q.iter().sum();
    q.into_iter().map(|q| (q / sum) as f32).collect()
}

/// MPCFormer's 2ReLU softmax of one row of n values: (ReLU(x) + ε/n) / (Σ ReLU(x) + ε).
pub fn relu_softmax_row(row: &[f32], epsilon: f64) -> Vec<f32> {
    let n = row.len().max(1) as f64;
    let positive: Vec<f64> = row.iter().map(|&v| f64::from(v).max(0.0)).collect();
    let sum: f64 = positive.iter().sum::<f64>() + epsilon;
    positive
        .into_iter()
        .map(|p| ((p + epsilon / n) / sum) as f32)
        .collect()
}

/// The index of the largest value of each row.
pub fn argmax_rows(values: &[f32], columns: usize) -> Vec<usize> {
    values
        .chunks(columns.max(1))
        .map(|row| {
            row.iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (index, &value)| {
                    if value > best.1 { (index, value) } else { best }
                })
                .0
        })
        .collect()
}

/// A row's mean and (population) variance, in f64.
pub fn mean_and_variance(row: &[f32]) -> (f64, f64) {
    let count = row.len().max(1) as f64;
    let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / count;
    let variance = row
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / count;
    (mean, variance)
}

/// GELU(x) = x·Φ(x) = ½x(1 + erf(x/√2)), in f64.
pub fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

/// The error function, to within 1.2·10⁻⁷ everywhere (Numerical Recipes' `erfc` by a
/// Chebyshev fit, W. H. Press et al., 3rd ed., §6.2.2), far below the f32 the plain
/// executor returns.
pub fn erf(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let polynomial = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let complement = t * polynomial.exp();
    if x >= 0.0 {
        1.0 - complement
    } else {
        complement - 1.0
    }
}
