//! Calibration: each comparison's bit-width from the magnitudes its operands reach on
//! calibration inputs (comparisons on k-bit reductions cost keys linear in k; DESIGN.md
//! §4), with a headroom factor because calibration inputs are a sample.

use crate::Result;
use crate::ir::Op;
use crate::plain::run_plain_all;
use crate::plan::{OutputPolicy, Plan};

/// Sets every comparison's bit-width from the values the plan sees on calibration
/// inputs: enough bits for `headroom` times the largest magnitude a comparison operand
/// reached (a ReLU's input; a max pool's pairwise differences, at most twice its input),
/// at the plan's fixed-point scale, plus the sign bit. Returns (node, bits) per change.
pub fn calibrate_comparison_bits(
    plan: &mut Plan,
    input: &[f32],
    batch: usize,
    headroom: f64,
) -> Result<Vec<(usize, u32)>> {
    let values = run_plain_all(plan, input, batch)?;
    let shapes = plan.public.graph.infer_shapes(batch)?;
    let scale = f64::from(1u32 << plan.public.fractional_bits.min(31));
    let mut changes = Vec::new();
    let graph = &mut plan.public.graph;
    for index in 0..graph.nodes.len() {
        let Some(&source) = graph.nodes[index].inputs.first() else {
            continue;
        };
        let x = &values[source];
        let largest = || x.iter().fold(0f64, |m, v| m.max(f64::from(*v).abs()));
        // The largest magnitude a comparison operand reaches.
        let reach = match graph.nodes[index].op {
            Op::Relu { .. } => largest(),
            // Pairwise differences of the window.
            Op::MaxPool2d { .. } => 2.0 * largest(),
            // x against its pieces' breakpoints (at most 4 away).
            Op::Gelu { .. } => largest() + 4.0,
            // The sign of x (the lookup's range check runs on its own width).
            Op::GeluTable { .. } => largest(),
            // The sign of x, and −2|x| against the clip at −14.
            Op::Tanh { .. } => 2.0 * largest() + 14.0,
            // Pairwise differences within a row for the row max, and x − max against
            // the clip at −14: both within the row's spread (plus 14). A masked score
            // sits a penalty below its row, so the spread, not 2·|x|, is the bound (the
            // sum's comparisons pick their own width).
            Op::Softmax { .. } => {
                let columns = shapes[source].last().copied().unwrap_or(1).max(1);
                let spread = x
                    .chunks(columns)
                    .map(|row| {
                        let (low, high) = row.iter().fold((f64::MAX, f64::MIN), |(l, h), &v| {
                            (l.min(f64::from(v)), h.max(f64::from(v)))
                        });
                        high - low
                    })
                    .fold(0f64, f64::max);
                spread + 14.0
            }
            // ReLU(x), and the row sum (at most n·max ReLU, plus ε) against the
            // reciprocal's thresholds.
            Op::ReluSoftmax { epsilon, .. } => {
                let columns = shapes[source].last().copied().unwrap_or(1).max(1) as f64;
                largest() * columns + epsilon
            }
            // The row sum of (x + shift)² against the reciprocal's thresholds.
            Op::QuadSoftmax { shift, .. } => {
                let columns = shapes[source].last().copied().unwrap_or(1).max(1) as f64;
                columns * (largest() + shift.abs()).powi(2)
            }
            // No comparison inside: nothing to calibrate.
            Op::Input { .. }
            | Op::Linear { .. }
            | Op::Conv2d { .. }
            | Op::AvgPool2d { .. }
            // Its comparisons (the variance's exponent) choose their own width.
            | Op::LayerNorm { .. }
            | Op::MatMul { .. }
            | Op::Scale { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Flatten
            | Op::Add
            | Op::MaskScores { .. }
            | Op::FirstToken
            | Op::MaskedSum
            | Op::Quadratic { .. } => continue,
        };
        let magnitude = (reach * headroom * scale).max(1.0);
        let bits = ((magnitude.log2().ceil() as u32) + 1).clamp(2, 64);
        if let Op::Relu { bits: current }
        | Op::Gelu { bits: current }
        | Op::GeluTable { bits: current }
        | Op::Tanh { bits: current }
        | Op::Softmax { bits: current }
        | Op::QuadSoftmax { bits: current, .. }
        | Op::ReluSoftmax { bits: current, .. }
        | Op::MaxPool2d { bits: current, .. } = &mut graph.nodes[index].op
        {
            *current = bits;
        }
        changes.push((index, bits));
    }
    // The inputs the widths hold for: headroom times the largest real input seen.
    let largest_input = graph
        .inputs()
        .iter()
        .filter(|slot| matches!(slot.kind, crate::ir::InputKind::Real))
        .map(|slot| {
            values[slot.node]
                .iter()
                .fold(0f64, |m, v| m.max(f64::from(*v).abs()))
        })
        .fold(0f64, f64::max);
    plan.public.input_bound =
        Some((largest_input * headroom).max(f64::from(f32::MIN_POSITIVE)) as f32);
    // The label policy compares differences of outputs.
    if let OutputPolicy::Label { bits } = &mut plan.public.output_policy {
        let largest = values[graph.output]
            .iter()
            .fold(0f64, |m, v| m.max(f64::from(*v).abs()));
        let magnitude = (largest * 2.0 * headroom * scale).max(1.0);
        *bits = ((magnitude.log2().ceil() as u32) + 1).clamp(2, 64);
        changes.push((graph.output, *bits));
    }
    Ok(changes)
}
