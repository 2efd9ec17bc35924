//! The plain f32 executor: the reference every secure result is measured against.

use crate::ir::Op;
use crate::plan::Plan;
use crate::{Error, Result};

/// Runs the plan on a batch of inputs (row-major, `batch × input_len` values) in f32
/// (f64 accumulation); returns the output node's values.
pub fn run_plain(plan: &Plan, input: &[f32], batch: usize) -> Result<Vec<f32>> {
    let graph = &plan.public.graph;
    let per_sample = plan.public.input_len();
    if input.len() != per_sample * batch {
        return Err(Error::InputShape {
            expected: per_sample,
            found: input.len(),
            shape: graph.input_shape().to_vec(),
        });
    }
    let shapes = graph.infer_shapes(batch)?;
    let mut values: Vec<Vec<f32>> = Vec::with_capacity(graph.nodes.len());
    for (index, node) in graph.nodes.iter().enumerate() {
        let value = match &node.op {
            Op::Input { .. } => input.to_vec(),
            Op::Linear {
                weight,
                bias,
                in_features,
                out_features,
            } => {
                let x = &values[node.inputs[0]];
                let w = &plan.weights[weight];
                let mut out = vec![0f32; batch * out_features];
                for row in 0..batch {
                    for column in 0..*out_features {
                        let mut sum = 0f64;
                        for k in 0..*in_features {
                            sum += f64::from(x[row * in_features + k])
                                * f64::from(w[k * out_features + column]);
                        }
                        if let Some(bias) = bias {
                            sum += f64::from(plan.weights[bias][column]);
                        }
                        out[row * out_features + column] = sum as f32;
                    }
                }
                out
            }
            Op::Relu { .. } => values[node.inputs[0]].iter().map(|&v| v.max(0.0)).collect(),
            Op::Flatten => values[node.inputs[0]].clone(),
            Op::Add => values[node.inputs[0]]
                .iter()
                .zip(&values[node.inputs[1]])
                .map(|(a, b)| a + b)
                .collect(),
        };
        debug_assert_eq!(value.len(), shapes[index].iter().product::<usize>());
        values.push(value);
    }
    Ok(values.swap_remove(graph.output))
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
