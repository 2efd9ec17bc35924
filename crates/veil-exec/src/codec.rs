//! The client's input and output codec: values to ring elements by each input's kind,
//! and the revealed output back to reals or labels.

use veil_core::RingTensor;
use veil_model::PublicPlan;
use veil_model::ir::InputKind;
use veil_model::plan::OutputPolicy;

use crate::Result;

/// Encodes a batch of inputs: `values` is the flat buffer of
/// [`PublicPlan::split_inputs`] (for one input, row-major `batch × input_len` values).
/// Returns one tensor per input in graph order, each `[batch, shape…]`:
/// - real values at the plan's fixed-point scale, refused outside its range or when not
///   finite;
/// - token ids as ring integers, each a whole number below the vocabulary;
/// - an attention mask at the fixed-point scale, each value 0 or 1.
///
/// Call it before a query starts: a bad input is then an error that costs nothing.
pub fn encode_inputs(plan: &PublicPlan, values: &[f32], batch: usize) -> Result<Vec<RingTensor>> {
    let codec = plan.fixed_point()?;
    let parts = plan.split_inputs(values, batch)?;
    let mut encoded = Vec::with_capacity(parts.len());
    for (slot, part) in plan.graph.inputs().iter().zip(parts) {
        let refuse = |position: usize, reason: String| veil_model::Error::InputValue {
            input: slot.name.to_string(),
            position,
            reason,
        };
        let words = match slot.kind {
            InputKind::Real => {
                // Beyond the calibrated range a comparison could wrap: refused here,
                // before any material is consumed.
                if let Some(bound) = plan.input_bound
                    && let Some(position) = part.iter().position(|value| value.abs() > bound)
                {
                    return Err(refuse(
                        position,
                        format!(
                            "the value is beyond the plan's calibrated input range ±{bound}: the answer could be wrong and, under the logits policy, reveal information about pre-activations; scale the input into range or recompile the plan calibrated on such inputs"
                        ),
                    )
                    .into());
                }
                codec.encode_slice(part)?
            }
            InputKind::TokenIds { vocabulary } => part
                .iter()
                .enumerate()
                .map(|(position, &id)| {
                    if id.fract() == 0.0 && id >= 0.0 && (id as f64) < vocabulary as f64 {
                        Ok(id as u64)
                    } else {
                        Err(refuse(
                            position,
                            format!("a token id must be a whole number below {vocabulary}"),
                        ))
                    }
                })
                .collect::<std::result::Result<Vec<u64>, _>>()?,
            InputKind::AttentionMask => {
                if let Some(position) = part.iter().position(|&m| m != 0.0 && m != 1.0) {
                    return Err(
                        refuse(position, "an attention mask holds only 0 and 1".into()).into(),
                    );
                }
                codec.encode_slice(part)?
            }
        };
        let mut shape = vec![batch];
        shape.extend_from_slice(slot.shape);
        encoded.push(RingTensor::new(shape, words)?);
    }
    Ok(encoded)
}

/// Decodes an output tensor to reals (logits), or to class indices (labels).
pub fn decode_output(plan: &PublicPlan, output: &RingTensor) -> Result<Vec<f32>> {
    Ok(match plan.output_policy {
        OutputPolicy::Logits => plan.fixed_point()?.decode_slice(output.data()),
        OutputPolicy::Label { .. } => output.data().iter().map(|&label| label as f32).collect(),
    })
}
