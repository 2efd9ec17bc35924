//! Reading and writing safetensors files of f32 tensors.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// A tensor's shape and row-major values.
pub type ShapedValues = (Vec<usize>, Vec<f32>);

/// Reads the named f32 tensors of a safetensors file.
pub fn read_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, ShapedValues>> {
    read_safetensors_except(bytes, |_| false)
}

/// Reads the named f32 tensors of a safetensors file but those `ignored` names (which
/// may have any type, e.g. Hugging Face's integer `position_ids` buffers).
pub fn read_safetensors_except(
    bytes: &[u8],
    ignored: impl Fn(&str) -> bool,
) -> Result<BTreeMap<String, ShapedValues>> {
    let tensors =
        safetensors::SafeTensors::deserialize(bytes).map_err(|error| Error::Safetensors {
            reason: error.to_string(),
        })?;
    let mut out = BTreeMap::new();
    for (name, view) in tensors.tensors() {
        if ignored(&name) {
            continue;
        }
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(Error::Safetensors {
                reason: format!(
                    "tensor {name:?} is {:?}; only F32 is supported",
                    view.dtype()
                ),
            });
        }
        let values = view
            .data()
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
            .collect();
        out.insert(name, (view.shape().to_vec(), values));
    }
    Ok(out)
}

/// Writes f32 tensors as a safetensors file (used by the trainer and tests).
pub fn write_safetensors(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Result<Vec<u8>> {
    let byte_buffers: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, values)| values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .zip(&byte_buffers)
        .map(|((name, shape, _), bytes)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|error| Error::Safetensors {
                    reason: error.to_string(),
                })
        })
        .collect::<Result<_>>()?;
    safetensors::serialize(views, None).map_err(|error| Error::Safetensors {
        reason: error.to_string(),
    })
}
