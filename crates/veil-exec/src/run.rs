//! The graph walk: every node of the plan in order, each op handed to its family's
//! module in [`crate::ops`], values released as soon as their last reader has run.

use std::time::{Duration, Instant};

use veil_core::RingTensor;
use veil_model::PublicPlan;
use veil_model::ir::Op;
use veil_model::plan::OutputPolicy;
use veil_mpc::Protocol;
use veil_mpc::accounting::Spent;

use crate::ops::{
    affine, approximate_softmax, argmax, attention, elementwise, gelu, gelu_table, layer_norm,
    layout, pooling, sequence, softmax, tanh,
};
use crate::{Error, Result};

/// Runs the plan's graph on a batch of `batch` samples. `inputs` holds the encoded
/// client inputs in graph order ([`crate::encode_inputs`]) where this role knows them
/// (the client, the simulation), `None` elsewhere. Returns the output at the client
/// (and in simulation), `None` at other roles.
pub fn run<P: Protocol>(
    protocol: &mut P,
    plan: &PublicPlan,
    batch: usize,
    inputs: Option<&[RingTensor]>,
) -> Result<Option<RingTensor>> {
    run_observed(protocol, plan, batch, inputs, &mut |_, _, _| {})
}

/// What [`run_observed`] reports after each node: the node's index (`None` for the
/// output step: the reveal, and the argmax under the `label` policy), its wall time,
/// and what the protocol spent in it ([`Protocol::spent`]).
pub type Observer<'a> = dyn FnMut(Option<usize>, Duration, Spent) + 'a;

/// [`run`], reporting each node's costs to `observe` (`veil bench --breakdown`).
pub fn run_observed<P: Protocol>(
    protocol: &mut P,
    plan: &PublicPlan,
    batch: usize,
    inputs: Option<&[RingTensor]>,
    observe: &mut Observer<'_>,
) -> Result<Option<RingTensor>> {
    let graph = &plan.graph;
    let shapes = graph.infer_shapes(batch)?;
    let fractional_bits = plan.fractional_bits;
    if let Some(inputs) = inputs {
        let expected = graph.inputs().len();
        if inputs.len() != expected {
            return Err(Error::InputCount {
                expected,
                found: inputs.len(),
            });
        }
    }
    let mut next_input = 0;
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
        let (before, started) = (protocol.spent(), Instant::now());
        // Evaluated in a closure so that a range error can be given its node.
        let evaluated = (|| -> Result<P::Shared> {
            Ok(match &node.op {
                Op::Input { .. } => {
                    let value = inputs.map(|inputs| &inputs[next_input]);
                    next_input += 1;
                    protocol.input(&shapes[index], value)?
                }
                Op::Linear { weight, bias, .. } => affine::linear(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    weight,
                    bias.as_deref(),
                    fractional_bits,
                )?,
                Op::Conv2d {
                    weight,
                    bias,
                    stride,
                    padding,
                    ..
                } => affine::conv2d(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    weight,
                    bias.as_deref(),
                    (*stride, *padding),
                    fractional_bits,
                )?,
                Op::MaxPool2d {
                    kernel,
                    stride,
                    bits,
                } => pooling::max_pool(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    &shapes[node.inputs[0]],
                    &shapes[index],
                    (*kernel, *stride),
                    *bits,
                )?,
                Op::AvgPool2d { kernel, stride } => pooling::average_pool(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    &shapes[node.inputs[0]],
                    &shapes[index],
                    (*kernel, *stride),
                    fractional_bits,
                    index,
                )?,
                Op::Relu { bits } => {
                    elementwise::relu(protocol, operand(&values, node.inputs[0], index)?, *bits)?
                }
                Op::Gelu { bits } => {
                    gelu::gelu(protocol, operand(&values, node.inputs[0], index)?, *bits)?
                }
                Op::GeluTable { bits } => {
                    gelu_table::gelu(protocol, operand(&values, node.inputs[0], index)?, *bits)?
                }
                Op::LayerNorm {
                    weight,
                    bias,
                    features,
                    epsilon,
                } => layer_norm::layer_norm(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    (weight, bias),
                    *features,
                    *epsilon,
                )?,
                Op::Tanh { bits } => {
                    tanh::tanh(protocol, operand(&values, node.inputs[0], index)?, *bits)?
                }
                Op::FirstToken => {
                    let shape = &shapes[node.inputs[0]];
                    let (tokens, features) = (shape[1], shape[2]);
                    let indices: Vec<usize> = (0..shape[0])
                        .flat_map(|sample| {
                            (0..features).map(move |feature| sample * tokens * features + feature)
                        })
                        .collect();
                    protocol.gather(
                        operand(&values, node.inputs[0], index)?,
                        &indices,
                        &shapes[index],
                    )?
                }
                Op::Softmax { bits } => {
                    softmax::softmax(protocol, operand(&values, node.inputs[0], index)?, *bits)?
                }
                Op::MatMul { transpose_right } => attention::matmul(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    operand(&values, node.inputs[1], index)?,
                    *transpose_right,
                )?,
                Op::Scale { factor } => {
                    elementwise::scale(protocol, operand(&values, node.inputs[0], index)?, *factor)?
                }
                Op::Reshape { .. } => layout::reshape(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    &shapes[index],
                )?,
                Op::Transpose { permutation } => layout::transpose(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    permutation,
                    &shapes[index],
                )?,
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
                Op::Add => elementwise::add(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    operand(&values, node.inputs[1], index)?,
                )?,
                Op::MaskScores { penalty } => sequence::mask_scores(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    operand(&values, node.inputs[1], index)?,
                    *penalty,
                )?,
                Op::Quadratic { a, b, c } => elementwise::quadratic(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    [*a, *b, *c],
                )?,
                Op::QuadSoftmax {
                    shift,
                    masked,
                    bits,
                } => {
                    let mask = if *masked {
                        Some(operand(&values, node.inputs[1], index)?)
                    } else {
                        None
                    };
                    approximate_softmax::quad_softmax(
                        protocol,
                        operand(&values, node.inputs[0], index)?,
                        mask,
                        *shift,
                        *bits,
                    )?
                }
                Op::ReluSoftmax { epsilon, bits } => approximate_softmax::relu_softmax(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    *epsilon,
                    *bits,
                )?,
                Op::MaskedSum => sequence::masked_sum(
                    protocol,
                    operand(&values, node.inputs[0], index)?,
                    operand(&values, node.inputs[1], index)?,
                )?,
            })
        })();
        let value = evaluated.map_err(|error| locate(error, index, node))?;
        observe(
            Some(index),
            started.elapsed(),
            protocol.spent().since(&before),
        );
        values.push(Some(value));
        for &source in &node.inputs {
            if last_use[source] == index {
                values[source] = None;
            }
        }
    }
    let output = operand(&values, graph.output, graph.output)?;
    let (before, started) = (protocol.spent(), Instant::now());
    let revealed = match plan.output_policy {
        OutputPolicy::Logits => protocol.reveal_to_client(output)?,
        // Only the label is reconstructed, only at the client.
        OutputPolicy::Label { bits } => {
            let label = argmax::argmax_rows(protocol, output, &shapes[graph.output], bits)?;
            protocol.reveal_to_client(&label)?
        }
    };
    observe(None, started.elapsed(), protocol.spent().since(&before));
    Ok(revealed)
}

/// A range error of the range-checking simulation, with the node it happened at.
fn locate(error: Error, index: usize, node: &veil_model::ir::Node) -> Error {
    match error {
        Error::Mpc(veil_mpc::Error::OutOfRange { op, detail }) => Error::OutOfRange {
            node: index,
            reason: format!("{:?} ({}, {op}): {detail}", node.name, node.op.name()),
        },
        other => other,
    }
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
