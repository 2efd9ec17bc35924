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
    let scale = f64::from(1u32 << plan.public.fractional_bits.min(31));
    let mut changes = Vec::new();
    let graph = &mut plan.public.graph;
    for index in 0..graph.nodes.len() {
        let source = graph.nodes[index].inputs.first().copied();
        // Each comparison's operand is at most `factor`·|x| + `offset`.
        let (Some(source), (factor, offset)) = (
            source,
            match graph.nodes[index].op {
                Op::Relu { .. } => (1.0, 0.0),
                // Pairwise differences of the window.
                Op::MaxPool2d { .. } => (2.0, 0.0),
                // x against its pieces' breakpoints (at most 4 away).
                Op::Gelu { .. } => (1.0, 4.0),
                // Pairwise differences for the row max, and x − max against the clip at
                // −14 (the sum's comparisons pick their own width).
                Op::Softmax { .. } => (2.0, 14.0),
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
                | Op::Add => continue,
            },
        ) else {
            continue;
        };
        let largest = values[source]
            .iter()
            .fold(0f64, |m, v| m.max(f64::from(*v).abs()));
        let magnitude = ((largest * factor + offset) * headroom * scale).max(1.0);
        let bits = ((magnitude.log2().ceil() as u32) + 1).clamp(2, 64);
        if let Op::Relu { bits: current }
        | Op::Gelu { bits: current }
        | Op::Softmax { bits: current }
        | Op::MaxPool2d { bits: current, .. } = &mut graph.nodes[index].op
        {
            *current = bits;
        }
        changes.push((index, bits));
    }
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
