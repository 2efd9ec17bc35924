//! The documented error bound of the fixed-point and secure executors against the f32
//! reference: what every secure test asserts.

use veil_model::Plan;
use veil_model::ir::{InputKind, Op};

use crate::ops::layer_norm;
use crate::{Error, Result};

/// A bound on |fixed-point result − f32 result| at the output for this input, from the
/// error sources: input and weight encoding (½ ulp each), bias encoding (½ ulp at 2f),
/// and truncation (floor, plus at most 1 ulp from the secure truncation), propagated
/// through each linear layer by its largest absolute column sum. ReLU and flatten do not
/// grow errors; add sums them. `input` is the flat buffer of
/// [`veil_model::PublicPlan::split_inputs`] for any batch.
pub fn error_bound(plan: &Plan, input: &[f32]) -> Result<f64> {
    let graph = &plan.public.graph;
    let ulp = 1.0 / plan.public.fixed_point()?.scale();
    // The bound does not depend on the batch; the buffer's length gives it.
    let per_sample = plan.public.input_len();
    let batch = input.len().checked_div(per_sample).unwrap_or(0);
    let mut inputs = plan.public.split_inputs(input, batch)?.into_iter();
    let shapes = graph.infer_shapes(batch)?;
    // Every node's plain values, computed once if an op's bound depends on them.
    let mut plain_values: Option<Vec<Vec<f32>>> = None;
    let mut bounds: Vec<f64> = Vec::with_capacity(graph.nodes.len());
    let mut magnitudes: Vec<f64> = Vec::with_capacity(graph.nodes.len());
    for (index, node) in graph.nodes.iter().enumerate() {
        let (bound, magnitude) = match &node.op {
            Op::Input { kind, .. } => {
                let values = inputs.next().unwrap_or_default();
                let encoding = match kind {
                    // Whole numbers (token ids, a mask's 0 and 1) encode exactly.
                    InputKind::TokenIds { .. } | InputKind::AttentionMask => 0.0,
                    InputKind::Real => 0.5 * ulp,
                };
                (
                    encoding,
                    values.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs())),
                )
            }
            Op::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => {
                let w = &plan.weights[weight];
                let column_sum = (0..*out_features)
                    .map(|c| {
                        (0..*in_features)
                            .map(|k| f64::from(w[k * out_features + c]).abs())
                            .sum::<f64>()
                    })
                    .fold(0f64, f64::max);
                let input = (bounds[node.inputs[0]], magnitudes[node.inputs[0]]);
                affine_bound(plan, input, column_sum, *in_features, bias.as_deref(), ulp)
            }
            Op::Conv2d {
                weight,
                bias,
                in_channels,
                out_channels,
                kernel,
                ..
            } => {
                let w = &plan.weights[weight];
                let per_output = in_channels * kernel * kernel;
                let channel_sum = (0..*out_channels)
                    .map(|o| {
                        w[o * per_output..(o + 1) * per_output]
                            .iter()
                            .map(|v| f64::from(*v).abs())
                            .sum::<f64>()
                    })
                    .fold(0f64, f64::max);
                let input = (bounds[node.inputs[0]], magnitudes[node.inputs[0]]);
                affine_bound(plan, input, channel_sum, per_output, bias.as_deref(), ulp)
            }
            // A mean does not grow errors; its truncation adds up to 2 ulp.
            Op::AvgPool2d { .. } => (
                bounds[node.inputs[0]] + 2.0 * ulp,
                magnitudes[node.inputs[0]],
            ),
            Op::GeluTable { .. } => {
                use crate::ops::gelu_table::{APPROXIMATION_ERROR, FIXED_POINT_ULPS, LIPSCHITZ};
                (
                    LIPSCHITZ * bounds[node.inputs[0]]
                        + APPROXIMATION_ERROR
                        + FIXED_POINT_ULPS * ulp,
                    magnitudes[node.inputs[0]] + APPROXIMATION_ERROR,
                )
            }
            Op::Gelu { .. } => {
                use crate::ops::gelu::{APPROXIMATION_ERROR, FIXED_POINT_ULPS, LIPSCHITZ};
                (
                    LIPSCHITZ * bounds[node.inputs[0]]
                        + APPROXIMATION_ERROR
                        + FIXED_POINT_ULPS * ulp,
                    magnitudes[node.inputs[0]] + APPROXIMATION_ERROR,
                )
            }
            // An input error e moves each output by at most e/2 (Σ_j |∂p_i/∂x_j| =
            // 2p_i(1 − p_i) ≤ ½); outputs lie in [0, 1], so no bound exceeds 1.
            Op::LayerNorm {
                weight,
                bias,
                features,
                epsilon,
            } => {
                let plain = match &plain_values {
                    Some(values) => values,
                    None => {
                        plain_values.insert(veil_model::plain::run_plain_all(plan, input, batch)?)
                    }
                };
                let smallest = smallest_deviation(&plain[node.inputs[0]], *features, *epsilon);
                let variance = smallest * smallest;
                let range = 2f64.powi(*layer_norm::EXPONENTS.start())
                    ..2f64.powi(*layer_norm::EXPONENTS.end() + 1);
                if !range.contains(&variance) {
                    return Err(Error::OutOfRange {
                        node: index,
                        reason: format!(
                            "a row's variance plus epsilon is outside the documented [{:.3e}, {:.3e})",
                            range.start, range.end
                        ),
                    });
                }
                let largest = |name: &str| {
                    plan.weights[name]
                        .iter()
                        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
                };
                let (gamma, beta) = (largest(weight), largest(bias));
                let root = (*features as f64).sqrt();
                let shifted = bounds[node.inputs[0]] + 2.0 * ulp;
                let bound = gamma
                    * (2.0 * shifted * (1.0 + root) / smallest
                        + root * (2f64.powi(-24) / variance + 2f64.powi(-15))
                        + 2.0 * ulp)
                    + (root / 2.0 + 2.0) * ulp;
                (bound, gamma * root + beta)
            }
            Op::Softmax { .. } => {
                use crate::ops::softmax::{EXP_ERROR, FIXED_POINT_ULPS};
                let columns = shapes[index].last().copied().unwrap_or(1) as f64;
                let bound = 0.5 * bounds[node.inputs[0]]
                    + (columns + 1.0) * EXP_ERROR
                    + FIXED_POINT_ULPS * ulp;
                (bound.min(1.0), 1.0)
            }
            // (A + ΔA)(B + ΔB) − AB over k terms, plus the truncation's floor and ulp.
            Op::MatMul { .. } => {
                let left_shape = &shapes[node.inputs[0]];
                let k = left_shape[left_shape.len() - 1] as f64;
                let (e_a, m_a) = (bounds[node.inputs[0]], magnitudes[node.inputs[0]]);
                let (e_b, m_b) = (bounds[node.inputs[1]], magnitudes[node.inputs[1]]);
                (
                    k * (e_a * m_b + m_a * e_b + e_a * e_b) + 2.0 * ulp,
                    k * m_a * m_b,
                )
            }
            // The constant's encoding (½ ulp) times the value, and the truncation.
            Op::Scale { factor } => {
                let (e, m) = (bounds[node.inputs[0]], magnitudes[node.inputs[0]]);
                (
                    factor.abs() * e + 0.5 * ulp * (m + e) + 2.0 * ulp,
                    factor.abs() * m,
                )
            }
            Op::Tanh { .. } => {
                use crate::ops::tanh::{APPROXIMATION_ERROR, FIXED_POINT_ULPS};
                (
                    bounds[node.inputs[0]] + APPROXIMATION_ERROR + FIXED_POINT_ULPS * ulp,
                    1.0,
                )
            }
            Op::Reshape { .. } | Op::Transpose { .. } | Op::FirstToken => {
                (bounds[node.inputs[0]], magnitudes[node.inputs[0]])
            }
            Op::Relu { .. } | Op::Flatten | Op::MaxPool2d { .. } => {
                (bounds[node.inputs[0]], magnitudes[node.inputs[0]])
            }
            Op::Add => (
                bounds[node.inputs[0]] + bounds[node.inputs[1]],
                magnitudes[node.inputs[0]] + magnitudes[node.inputs[1]],
            ),
            // The mask's 0 and 1 encode exactly and the penalty is a whole number: the
            // shift is exact.
            Op::MaskScores { penalty } => (
                bounds[node.inputs[0]],
                magnitudes[node.inputs[0]] + f64::from(*penalty),
            ),
            // A product of two secrets summed over the tokens, as MatMul's bound.
            Op::MaskedSum => {
                let tokens = shapes[node.inputs[0]][1] as f64;
                let (e_x, m_x) = (bounds[node.inputs[0]], magnitudes[node.inputs[0]]);
                let (e_m, m_m) = (bounds[node.inputs[1]], magnitudes[node.inputs[1]]);
                (
                    tokens * (e_x * m_m + m_x * e_m + e_x * e_m) + 2.0 * ulp,
                    tokens * m_x * m_m,
                )
            }
            // The worst-case magnitudes square at every quadratic (doubly exponential
            // over a network's depth), so this input's own magnitudes are used: the
            // plain value's, plus the error where the fixed-point value is meant.
            Op::Quadratic { a, b, c } => {
                let plain = match &plain_values {
                    Some(values) => values,
                    None => {
                        plain_values.insert(veil_model::plain::run_plain_all(plan, input, batch)?)
                    }
                };
                let largest =
                    |values: &[f32]| values.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
                let magnitude = magnitudes[node.inputs[0]].min(largest(&plain[node.inputs[0]]));
                let (bound, worst) = crate::ops::elementwise::quadratic_bound(
                    [*a, *b, *c],
                    (bounds[node.inputs[0]], magnitude),
                    ulp,
                );
                (bound, worst.min(largest(&plain[index])))
            }
            Op::QuadSoftmax { shift, masked, .. } => {
                let plain = match &plain_values {
                    Some(values) => values,
                    None => {
                        plain_values.insert(veil_model::plain::run_plain_all(plan, input, batch)?)
                    }
                };
                let columns = shapes[index].last().copied().unwrap_or(1).max(1);
                let mask = masked.then(|| plain[node.inputs[1]].as_slice());
                let smallest = smallest_quad_sum(&plain[node.inputs[0]], columns, *shift, mask);
                let bound = crate::ops::approximate_softmax::quad_softmax_bound(
                    *shift,
                    (bounds[node.inputs[0]], magnitudes[node.inputs[0]]),
                    columns,
                    smallest,
                    ulp,
                );
                (bound, 1.0)
            }
            Op::ReluSoftmax { epsilon, .. } => {
                let plain = match &plain_values {
                    Some(values) => values,
                    None => {
                        plain_values.insert(veil_model::plain::run_plain_all(plan, input, batch)?)
                    }
                };
                let columns = shapes[index].last().copied().unwrap_or(1).max(1);
                let smallest = plain[node.inputs[0]]
                    .chunks(columns)
                    .map(|row| row.iter().map(|&v| f64::from(v).max(0.0)).sum::<f64>() + epsilon)
                    .fold(f64::INFINITY, f64::min);
                let bound = crate::ops::approximate_softmax::relu_softmax_bound(
                    bounds[node.inputs[0]],
                    columns,
                    smallest,
                    ulp,
                );
                (bound, 1.0)
            }
        };
        bounds.push(bound);
        magnitudes.push(magnitude);
    }
    Ok(bounds[graph.output])
}

/// (error bound, magnitude bound) after a server-held linear map whose largest absolute
/// column sum is `weight_sum` over `terms` products, on an input with `(error,
/// magnitude)`: the input error grows by the column sum; each product adds half an ulp
/// of weight encoding times the input; bias encoding and the truncation add 2.5 ulp.
fn affine_bound(
    plan: &Plan,
    (input_error, input_magnitude): (f64, f64),
    weight_sum: f64,
    terms: usize,
    bias: Option<&str>,
    ulp: f64,
) -> (f64, f64) {
    let bias_max = bias.map_or(0.0, |b| {
        plan.weights[b]
            .iter()
            .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
    });
    let bound = weight_sum * input_error
        + (input_magnitude + input_error) * (terms as f64) * 0.5 * ulp
        + 2.5 * ulp;
    (bound, weight_sum * input_magnitude + bias_max)
}

/// The smallest row sum of (x + shift)² (times the mask of the row's sample, `[batch,
/// columns]`, where there is one) over rows of `columns` values.
fn smallest_quad_sum(values: &[f32], columns: usize, shift: f64, mask: Option<&[f32]>) -> f64 {
    let rows_per_sample = mask.map_or(1, |mask| {
        (values.len() / columns) / (mask.len() / columns).max(1)
    });
    values
        .chunks(columns)
        .enumerate()
        .map(|(row, values)| {
            let sample = row / rows_per_sample.max(1);
            values
                .iter()
                .enumerate()
                .map(|(key, &v)| {
                    let present = mask.map_or(1.0, |mask| f64::from(mask[sample * columns + key]));
                    (f64::from(v) + shift).powi(2) * present
                })
                .sum::<f64>()
        })
        .fold(f64::INFINITY, f64::min)
}

/// The smallest √(σ² + ε) over the rows of `features` values.
fn smallest_deviation(values: &[f32], features: usize, epsilon: f64) -> f64 {
    values
        .chunks(features.max(1))
        .map(|row| (veil_model::plain::mean_and_variance(row).1 + epsilon).sqrt())
        .fold(f64::INFINITY, f64::min)
}
