//! Batch-normalisation folding: an inference-form batch norm after a convolution or a
//! linear layer becomes a per-output-channel scale of that layer's weight and a shift of
//! its bias, so no normalisation runs under MPC.

use std::collections::BTreeMap;

use crate::import::architecture::{Layer, tensor};
use crate::import::safetensors::ShapedValues;
use crate::{Error, Result};

/// Per-output-channel scale and shift from a folded batch normalisation.
#[derive(Clone, Debug)]
pub(crate) struct Folded {
    /// γ / √(σ² + ε) per output channel.
    pub(crate) scale: Vec<f32>,
    /// β − μ·scale per output channel.
    pub(crate) shift: Vec<f32>,
}

/// Attaches each batch normalisation to the layer before it, as y = scale·x + shift.
pub(crate) fn fold_batch_norms(
    layers: &[Layer],
    tensors: &BTreeMap<String, ShapedValues>,
) -> Result<Vec<(Layer, Option<Folded>)>> {
    let mut out: Vec<(Layer, Option<Folded>)> = Vec::new();
    for (position, layer) in layers.iter().enumerate() {
        let Layer::BatchNorm {
            weight,
            bias,
            running_mean,
            running_var,
            eps,
        } = layer
        else {
            out.push((layer.clone(), None));
            continue;
        };
        let previous = out.last_mut().filter(|(layer, folded)| {
            folded.is_none() && matches!(layer, Layer::Conv2d { .. } | Layer::Linear { .. })
        });
        let Some((_, folded)) = previous else {
            return Err(Error::InvalidArchitecture {
                reason: format!(
                    "layer {position}: batch_norm must follow a conv2d or linear layer"
                ),
            });
        };
        let (gamma, beta) = (&tensor(tensors, weight)?.1, &tensor(tensors, bias)?.1);
        let (mean, variance) = (
            &tensor(tensors, running_mean)?.1,
            &tensor(tensors, running_var)?.1,
        );
        let channels = gamma.len();
        if [beta.len(), mean.len(), variance.len()]
            .iter()
            .any(|&len| len != channels)
        {
            return Err(Error::ParameterShape {
                name: weight.clone(),
                expected: vec![channels],
                found: vec![beta.len(), mean.len(), variance.len()],
            });
        }
        let eps = eps.unwrap_or(1e-5);
        let scale: Vec<f32> = (0..channels)
            .map(|c| gamma[c] / (variance[c] + eps).sqrt())
            .collect();
        let shift = (0..channels)
            .map(|c| beta[c] - mean[c] * scale[c])
            .collect();
        *folded = Some(Folded { scale, shift });
    }
    Ok(out)
}
