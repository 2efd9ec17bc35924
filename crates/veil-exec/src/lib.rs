//! veil-exec: runs a plan's graph over any [`Protocol`].
//!
//! [`run`] is the one executor: with [`veil_mpc::Cleartext`] it is the fixed-point
//! simulation, with [`veil_mpc::Party`] it is one side of the secure computation, and
//! with [`veil_mpc::MaterialGenerator`] it is the dealer's preprocessing schedule (the
//! dry run over the public plan that makes each party's tagged material). Every
//! operation is therefore written once.
//!
//! The module also builds each role's form of the parameters from a plan
//! ([`server_parameters`], [`dealer_parameters`], [`cleartext`]) and encodes inputs.
//!
//! # What this crate does not do
//! No processes, sessions or sockets (veil-serve).
//!
//! # Secrets
//! Inputs, weights and shares pass through here; nothing is logged and errors carry
//! shapes and names only.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

use veil_core::prg::Seed;
use veil_core::{FixedPoint, RingTensor};
use veil_model::ir::{Op, pooling_indices};
use veil_model::plan::{OutputPolicy, ParameterKind};
use veil_model::{Plan, PublicPlan};
use veil_mpc::{Cleartext, DealerParameters, Protocol, ServerParameters};

/// What can go wrong running a plan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A model-level error (shapes, plan).
    #[error(transparent)]
    Model(#[from] veil_model::Error),
    /// A protocol error.
    #[error(transparent)]
    Mpc(#[from] veil_mpc::Error),
    /// A tensor-level error (e.g. an input out of the fixed-point range).
    #[error(transparent)]
    Core(#[from] veil_core::Error),
}

/// veil-exec's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Runs the plan's graph on a batch of `batch` samples. `input` is the encoded input
/// where this role knows it (the client, the simulation), `None` elsewhere. Returns the
/// output at the client (and in simulation), `None` at other roles.
pub fn run<P: Protocol>(
    protocol: &mut P,
    plan: &PublicPlan,
    batch: usize,
    input: Option<&RingTensor>,
) -> Result<Option<RingTensor>> {
    let graph = &plan.graph;
    let shapes = graph.infer_shapes(batch)?;
    let fractional_bits = plan.fractional_bits;
    let mut values: Vec<Option<P::Shared>> = Vec::with_capacity(graph.nodes.len());
    // The last node that reads each value, so values are dropped once dead.
    let mut last_use = vec![0usize; graph.nodes.len()];
    for (index, node) in graph.nodes.iter().enumerate() {
        for &input in &node.inputs {
            last_use[input] = index;
        }
    }
    last_use[graph.output] = usize::MAX;
    for (index, node) in graph.nodes.iter().enumerate() {
        let value = match &node.op {
            Op::Input { .. } => protocol.input(&shapes[index], input)?,
            Op::Linear { weight, bias, .. } => {
                let x = operand(&values, node.inputs[0], index)?;
                affine(
                    protocol,
                    x,
                    weight,
                    bias.as_deref(),
                    fractional_bits,
                    |p, x, w| p.matmul_weight(x, w),
                )?
            }
            Op::Conv2d {
                weight,
                bias,
                stride,
                padding,
                ..
            } => {
                let x = operand(&values, node.inputs[0], index)?;
                let (stride, padding) = (*stride, *padding);
                affine(
                    protocol,
                    x,
                    weight,
                    bias.as_deref(),
                    fractional_bits,
                    |p, x, w| p.conv2d_weight(x, w, stride, padding),
                )?
            }
            Op::MaxPool2d {
                kernel,
                stride,
                bits,
            } => {
                let x = operand(&values, node.inputs[0], index)?;
                max_pool(
                    protocol,
                    x,
                    &shapes[node.inputs[0]],
                    &shapes[index],
                    *kernel,
                    *stride,
                    *bits,
                )?
            }
            Op::AvgPool2d { kernel, stride } => {
                let x = operand(&values, node.inputs[0], index)?;
                let offsets = pooling_indices(&shapes[node.inputs[0]], *kernel, *stride);
                let mut sum: Option<P::Shared> = None;
                for indices in &offsets {
                    let window = protocol.gather(x, indices, &shapes[index])?;
                    sum = Some(match sum {
                        Some(total) => protocol.add(&total, &window)?,
                        None => window,
                    });
                }
                let sum = sum.ok_or_else(|| -> Error {
                    veil_model::Error::InvalidGraph {
                        node: index,
                        reason: "an empty pooling window".into(),
                    }
                    .into()
                })?;
                // The area is a power of two ≤ 2^f, so 2^f / area is exact: the mean is
                // one public product and one truncation.
                let area = (kernel * kernel) as u64;
                let scaled = protocol.scale(&sum, (1u64 << fractional_bits) / area)?;
                protocol.truncate(&scaled, fractional_bits)?
            }
            Op::Relu { bits } => {
                let x = operand(&values, node.inputs[0], index)?;
                protocol.relu(x, *bits)?
            }
            Op::Flatten => {
                let x = node.inputs[0];
                if last_use[x] > index {
                    // Reshaping moves the value; the IR keeps flatten's input single-use.
                    return Err(veil_model::Error::InvalidGraph {
                        node: index,
                        reason: "a flattened value is read again".into(),
                    }
                    .into());
                }
                let x = values[x].take().ok_or_else(|| released(index, x))?;
                protocol.reshape(x, &shapes[index])?
            }
            Op::Add => protocol.add(
                operand(&values, node.inputs[0], index)?,
                operand(&values, node.inputs[1], index)?,
            )?,
        };
        values.push(Some(value));
        for &source in &node.inputs {
            if last_use[source] == index {
                values[source] = None;
            }
        }
    }
    let output = operand(&values, graph.output, graph.output)?;
    match plan.output_policy {
        OutputPolicy::Logits => Ok(protocol.reveal_to_client(output)?),
        // Only the label is reconstructed, only at the client.
        OutputPolicy::Label { bits } => {
            let label = argmax_rows(protocol, output, &shapes[graph.output], bits)?;
            Ok(protocol.reveal_to_client(&label)?)
        }
    }
}

/// A server-held linear map (matmul or convolution) plus bias: the weight product, the
/// bias at twice the scale, then one truncation per output element, after accumulating
/// (cookbook §1.1).
fn affine<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    weight: &str,
    bias: Option<&str>,
    fractional_bits: u32,
    product: impl Fn(&mut P, &P::Shared, &P::Weight) -> veil_mpc::Result<P::Shared>,
) -> Result<P::Shared> {
    let weight = protocol.weight(weight)?;
    let mut output = product(protocol, value, &weight)?;
    if let Some(bias) = bias {
        let bias = protocol.bias(bias)?;
        output = protocol.add_bias(&output, &bias)?;
    }
    Ok(protocol.truncate(&output, fractional_bits)?)
}

/// The index of each row's largest element, as a secret ring integer per row (ties go
/// to the lower index): a tournament over the columns; each level compares the left
/// half with the right half (DReLU, one round) and moves the winners' values and indices
/// with one product (one round).
fn argmax_rows<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    shape: &[usize],
    bits: u32,
) -> Result<P::Shared> {
    let (rows, columns) = match shape {
        &[rows, columns] if columns > 0 => (rows, columns),
        _ => {
            return Err(veil_model::Error::InvalidGraph {
                node: 0,
                reason: format!("the label policy needs a [batch, classes] output, has {shape:?}"),
            }
            .into());
        }
    };
    // Column-major blocks: block c holds column c of every row.
    let column_major: Vec<usize> = (0..columns)
        .flat_map(|c| (0..rows).map(move |r| r * columns + c))
        .collect();
    let mut values = protocol.gather(value, &column_major, &[columns * rows])?;
    let index_data: Vec<u64> = (0..columns)
        .flat_map(|c| std::iter::repeat_n(c as u64, rows))
        .collect();
    let mut indices = protocol.public(&RingTensor::new(vec![columns * rows], index_data)?)?;
    let mut count = columns;
    while count > 1 {
        let half = count / 2;
        let block = |range: std::ops::Range<usize>| -> Vec<usize> {
            (range.start * rows..range.end * rows).collect()
        };
        let (left, right) = (block(0..half), block(half..2 * half));
        let paired = [half * rows];
        let value_left = protocol.gather(&values, &left, &paired)?;
        let value_right = protocol.gather(&values, &right, &paired)?;
        let index_left = protocol.gather(&indices, &left, &paired)?;
        let index_right = protocol.gather(&indices, &right, &paired)?;
        let value_difference = protocol.sub(&value_left, &value_right)?;
        let left_wins = protocol.drelu(&value_difference, bits)?;
        let index_difference = protocol.sub(&index_left, &index_right)?;
        // One product moves both: winner = right + d·(left − right).
        let both_bits = protocol.concat(&[&left_wins, &left_wins])?;
        let both_differences = protocol.concat(&[&value_difference, &index_difference])?;
        let moves = protocol.mul(&both_bits, &both_differences)?;
        let first = |n: usize| -> Vec<usize> { (0..n).collect() };
        let value_moves = protocol.gather(&moves, &first(half * rows), &paired)?;
        let index_moves: Vec<usize> = (half * rows..2 * half * rows).collect();
        let index_moves = protocol.gather(&moves, &index_moves, &paired)?;
        let value_winners = protocol.add(&value_right, &value_moves)?;
        let index_winners = protocol.add(&index_right, &index_moves)?;
        if count % 2 == 1 {
            let rest = block(2 * half..count);
            let value_rest = protocol.gather(&values, &rest, &[rows])?;
            let index_rest = protocol.gather(&indices, &rest, &[rows])?;
            values = protocol.concat(&[&value_winners, &value_rest])?;
            indices = protocol.concat(&[&index_winners, &index_rest])?;
        } else {
            values = value_winners;
            indices = index_winners;
        }
        count = count.div_ceil(2);
    }
    Ok(protocol.reshape(indices, &[rows])?)
}

/// Max pooling as a comparison tree: the window's k² candidates are stacked, and each
/// level halves them with max(a, b) = b + ReLU(a − b), one round per level.
fn max_pool<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    input_shape: &[usize],
    output_shape: &[usize],
    kernel: usize,
    stride: usize,
    bits: u32,
) -> Result<P::Shared> {
    let offsets = pooling_indices(input_shape, kernel, stride);
    let output_len: usize = output_shape.iter().product();
    let stacked: Vec<usize> = offsets.concat();
    let mut current = protocol.gather(value, &stacked, &[stacked.len()])?;
    let mut count = offsets.len();
    while count > 1 {
        let half = count / 2;
        let block = |range: std::ops::Range<usize>| -> Vec<usize> {
            (range.start * output_len..range.end * output_len).collect()
        };
        let left = protocol.gather(&current, &block(0..half), &[half * output_len])?;
        let right = protocol.gather(&current, &block(half..2 * half), &[half * output_len])?;
        let difference = protocol.sub(&left, &right)?;
        let positive = protocol.relu(&difference, bits)?;
        let larger = protocol.add(&right, &positive)?;
        current = if count % 2 == 1 {
            let rest = protocol.gather(&current, &block(2 * half..count), &[output_len])?;
            protocol.concat(&[&larger, &rest])?
        } else {
            larger
        };
        count = count.div_ceil(2);
    }
    Ok(protocol.reshape(current, output_shape)?)
}

/// The value of node `source`, read by node `reader`; an error if it was released.
fn operand<S>(values: &[Option<S>], source: usize, reader: usize) -> Result<&S> {
    values
        .get(source)
        .and_then(Option::as_ref)
        .ok_or_else(|| released(reader, source))
}

fn released(reader: usize, source: usize) -> Error {
    veil_model::Error::InvalidGraph {
        node: reader,
        reason: format!("input {source} was already released"),
    }
    .into()
}

/// Encodes a batch of inputs (row-major, `batch × input_len` values), checking its
/// length and range.
pub fn encode_input(plan: &PublicPlan, values: &[f32], batch: usize) -> Result<RingTensor> {
    let per_sample = plan.input_len();
    if values.len() != per_sample * batch || batch == 0 {
        return Err(veil_model::Error::InputShape {
            expected: per_sample,
            found: values.len(),
            shape: plan.graph.input_shape().to_vec(),
        }
        .into());
    }
    let codec = plan.fixed_point()?;
    let mut shape = vec![batch];
    shape.extend_from_slice(plan.graph.input_shape());
    Ok(RingTensor::new(shape, codec.encode_slice(values)?)?)
}

/// Decodes an output tensor to reals (logits), or to class indices (labels).
pub fn decode_output(plan: &PublicPlan, output: &RingTensor) -> Result<Vec<f32>> {
    Ok(match plan.output_policy {
        OutputPolicy::Logits => plan.fixed_point()?.decode_slice(output.data()),
        OutputPolicy::Label { .. } => output.data().iter().map(|&label| label as f32).collect(),
    })
}

/// Named encoded tensors.
type NamedTensors = Vec<(String, RingTensor)>;

/// (weights at scale f, biases at scale 2f) of a plan, encoded.
fn encoded_parameters(plan: &Plan) -> Result<(NamedTensors, NamedTensors)> {
    let codec: FixedPoint = plan.public.fixed_point()?;
    let bits = codec.fractional_bits();
    let mut weights = Vec::new();
    let mut biases = Vec::new();
    for info in &plan.public.parameters {
        let values = &plan.weights[&info.name];
        match info.kind {
            ParameterKind::Weight => {
                weights.push((
                    info.name.clone(),
                    RingTensor::new(info.shape.clone(), codec.encode_slice(values)?)?,
                ));
            }
            ParameterKind::Bias => {
                // Added to a product before its truncation, so at scale 2f.
                let encoded = values
                    .iter()
                    .map(|&v| codec.encode_scaled(f64::from(v), 2 * bits))
                    .collect::<veil_core::Result<Vec<u64>>>()?;
                biases.push((
                    info.name.clone(),
                    RingTensor::new(info.shape.clone(), encoded)?,
                ));
            }
        }
    }
    Ok((weights, biases))
}

/// The server's parameters for one mask epoch.
pub fn server_parameters(plan: &Plan, weight_seed: &Seed, epoch: u64) -> Result<ServerParameters> {
    let (weights, biases) = encoded_parameters(plan)?;
    Ok(ServerParameters::new(weight_seed, epoch, weights, biases))
}

/// The dealer's parameters (masks only) for one mask epoch, from the public plan.
pub fn dealer_parameters(plan: &PublicPlan, weight_seed: &Seed, epoch: u64) -> DealerParameters {
    let shapes: Vec<(String, Vec<usize>)> = plan
        .parameters
        .iter()
        .filter(|info| info.kind == ParameterKind::Weight)
        .map(|info| (info.name.clone(), info.shape.clone()))
        .collect();
    DealerParameters::new(weight_seed, epoch, &shapes)
}

/// The fixed-point simulation of a plan.
pub fn cleartext(plan: &Plan) -> Result<Cleartext> {
    let (weights, biases) = encoded_parameters(plan)?;
    Ok(Cleartext::new(plan.public.fixed_point()?, weights, biases))
}

/// A bound on |fixed-point result − f32 result| at the output for this input, from the
/// error sources: input and weight encoding (½ ulp each), bias encoding (½ ulp at 2f),
/// and truncation (floor, plus at most 1 ulp from the secure truncation), propagated
/// through each linear layer by its largest absolute column sum. ReLU and flatten do not
/// grow errors; add sums them.
pub fn error_bound(plan: &Plan, input: &[f32]) -> Result<f64> {
    let graph = &plan.public.graph;
    let ulp = 1.0 / plan.public.fixed_point()?.scale();
    let mut bounds: Vec<f64> = Vec::with_capacity(graph.nodes.len());
    let mut magnitudes: Vec<f64> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let (bound, magnitude) = match &node.op {
            Op::Input { .. } => (
                0.5 * ulp,
                input.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs())),
            ),
            Op::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => {
                let w = &plan.weights[weight];
                let (e_in, x_max) = (bounds[node.inputs[0]], magnitudes[node.inputs[0]]);
                let column_sum = (0..*out_features)
                    .map(|c| {
                        (0..*in_features)
                            .map(|k| f64::from(w[k * out_features + c]).abs())
                            .sum::<f64>()
                    })
                    .fold(0f64, f64::max);
                let bias_max = bias.as_ref().map_or(0.0, |b| {
                    plan.weights[b]
                        .iter()
                        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
                });
                let bound = column_sum * e_in
                    + (x_max + e_in) * (*in_features as f64) * 0.5 * ulp
                    + 2.5 * ulp;
                (bound, column_sum * x_max + bias_max)
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
                let (e_in, x_max) = (bounds[node.inputs[0]], magnitudes[node.inputs[0]]);
                let per_output = in_channels * kernel * kernel;
                let channel_sum = (0..*out_channels)
                    .map(|o| {
                        w[o * per_output..(o + 1) * per_output]
                            .iter()
                            .map(|v| f64::from(*v).abs())
                            .sum::<f64>()
                    })
                    .fold(0f64, f64::max);
                let bias_max = bias.as_ref().map_or(0.0, |b| {
                    plan.weights[b]
                        .iter()
                        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
                });
                let bound = channel_sum * e_in
                    + (x_max + e_in) * (per_output as f64) * 0.5 * ulp
                    + 2.5 * ulp;
                (bound, channel_sum * x_max + bias_max)
            }
            // A mean does not grow errors; its truncation adds up to 2 ulp.
            Op::AvgPool2d { .. } => (
                bounds[node.inputs[0]] + 2.0 * ulp,
                magnitudes[node.inputs[0]],
            ),
            Op::Relu { .. } | Op::Flatten | Op::MaxPool2d { .. } => {
                (bounds[node.inputs[0]], magnitudes[node.inputs[0]])
            }
            Op::Add => (
                bounds[node.inputs[0]] + bounds[node.inputs[1]],
                magnitudes[node.inputs[0]] + magnitudes[node.inputs[1]],
            ),
        };
        bounds.push(bound);
        magnitudes.push(magnitude);
    }
    Ok(bounds[graph.output])
}
