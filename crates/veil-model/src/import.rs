//! `veil compile`'s importer: an architecture description (JSON) plus a safetensors file
//! become a [`Plan`].
//!
//! The architecture is a sequential list of layers; a layer may be named and an `add`
//! layer sums the running value with a named earlier layer's output (residuals):
//!
//! ```json
//! { "name": "digits-mlp", "input": [64], "fractional_bits": 16,
//!   "layers": [
//!     { "op": "linear", "name": "fc1", "weight": "fc1.weight", "bias": "fc1.bias" },
//!     { "op": "relu" },
//!     { "op": "linear", "weight": "fc2.weight", "bias": "fc2.bias" } ] }
//! ```
//!
//! Linear weights are read in PyTorch's `[out, in]` layout and stored `[in, out]`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::ir::{Graph, Node, Op};
use crate::plan::{OutputPolicy, ParameterInfo, ParameterKind, Plan, PublicPlan};
use crate::{Error, Result};

/// One layer of an architecture description.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    /// A fully connected layer.
    Linear {
        /// Optional name for residual references.
        name: Option<String>,
        /// The weight tensor's name in the safetensors file.
        weight: String,
        /// The bias tensor's name, if any.
        bias: Option<String>,
    },
    /// ReLU.
    Relu {
        /// Optional name.
        name: Option<String>,
        /// Comparison bit-width (64 when absent).
        bits: Option<u32>,
    },
    /// Flatten all but the batch dimension.
    Flatten {
        /// Optional name.
        name: Option<String>,
    },
    /// Sum with a named earlier layer.
    Add {
        /// Optional name.
        name: Option<String>,
        /// The earlier layer (or "input").
        with: String,
    },
}

/// An architecture description.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Architecture {
    /// The model's name (also the plan file's stem).
    pub name: String,
    /// The per-sample input shape.
    pub input: Vec<usize>,
    /// Fixed-point fractional bits (16 when absent).
    pub fractional_bits: Option<u32>,
    /// The layers, in order.
    pub layers: Vec<Layer>,
}

impl Architecture {
    /// Parses the JSON description.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|error| Error::InvalidArchitecture {
            reason: error.to_string(),
        })
    }
}

/// The approximation policies `compile` accepts.
pub const APPROXIMATIONS: &[&str] = &["exact"];

/// A tensor's shape and row-major values.
pub type ShapedValues = (Vec<usize>, Vec<f32>);

/// Reads the named f32 tensors of a safetensors file.
pub fn read_safetensors(bytes: &[u8]) -> Result<BTreeMap<String, ShapedValues>> {
    let tensors =
        safetensors::SafeTensors::deserialize(bytes).map_err(|error| Error::Safetensors {
            reason: error.to_string(),
        })?;
    let mut out = BTreeMap::new();
    for (name, view) in tensors.tensors() {
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

/// Compiles an architecture and its weights into a plan.
pub fn compile(
    architecture: &Architecture,
    safetensors_bytes: &[u8],
    approximation: &str,
) -> Result<Plan> {
    if !APPROXIMATIONS.contains(&approximation) {
        return Err(Error::InvalidArchitecture {
            reason: format!(
                "approximation policy {approximation:?} is not available (have: {APPROXIMATIONS:?})"
            ),
        });
    }
    let tensors = read_safetensors(safetensors_bytes)?;
    let mut nodes = vec![Node {
        name: "input".into(),
        op: Op::Input {
            shape: architecture.input.clone(),
        },
        inputs: vec![],
    }];
    let mut names: BTreeMap<String, usize> = BTreeMap::from([("input".to_string(), 0)]);
    let mut parameters = Vec::new();
    let mut weights = BTreeMap::new();
    let mut features: Option<usize> = match architecture.input.as_slice() {
        [features] => Some(*features),
        _ => None,
    };
    for (position, layer) in architecture.layers.iter().enumerate() {
        let current = nodes.len() - 1;
        let (name, op, inputs) = match layer {
            Layer::Linear { name, weight, bias } => {
                let (shape, values) =
                    tensors.get(weight).ok_or_else(|| Error::MissingParameter {
                        name: weight.clone(),
                    })?;
                let [out_features, in_features] = shape.as_slice() else {
                    return Err(Error::ParameterShape {
                        name: weight.clone(),
                        expected: vec![0, 0],
                        found: shape.clone(),
                    });
                };
                let (out_features, in_features) = (*out_features, *in_features);
                if features.is_some_and(|f| f != in_features) {
                    return Err(Error::ParameterShape {
                        name: weight.clone(),
                        expected: vec![out_features, features.unwrap_or(0)],
                        found: shape.clone(),
                    });
                }
                // Transpose [out, in] → [in, out].
                let mut transposed = vec![0f32; values.len()];
                for o in 0..out_features {
                    for i in 0..in_features {
                        transposed[i * out_features + o] = values[o * in_features + i];
                    }
                }
                parameters.push(ParameterInfo {
                    name: weight.clone(),
                    shape: vec![in_features, out_features],
                    kind: ParameterKind::Weight,
                });
                weights.insert(weight.clone(), transposed);
                if let Some(bias) = bias {
                    let (bias_shape, bias_values) = tensors
                        .get(bias)
                        .ok_or_else(|| Error::MissingParameter { name: bias.clone() })?;
                    if bias_shape != &vec![out_features] {
                        return Err(Error::ParameterShape {
                            name: bias.clone(),
                            expected: vec![out_features],
                            found: bias_shape.clone(),
                        });
                    }
                    parameters.push(ParameterInfo {
                        name: bias.clone(),
                        shape: vec![out_features],
                        kind: ParameterKind::Bias,
                    });
                    weights.insert(bias.clone(), bias_values.clone());
                }
                features = Some(out_features);
                (
                    name.clone(),
                    Op::Linear {
                        weight: weight.clone(),
                        bias: bias.clone(),
                        in_features,
                        out_features,
                    },
                    vec![current],
                )
            }
            Layer::Relu { name, bits } => (
                name.clone(),
                Op::Relu {
                    bits: bits.unwrap_or(64),
                },
                vec![current],
            ),
            Layer::Flatten { name } => {
                let per_sample = if position == 0 {
                    architecture.input.iter().product()
                } else {
                    features.unwrap_or(0)
                };
                features = Some(per_sample);
                (name.clone(), Op::Flatten, vec![current])
            }
            Layer::Add { name, with } => {
                let other = *names.get(with).ok_or_else(|| Error::InvalidArchitecture {
                    reason: format!("layer {position} adds unknown layer {with:?}"),
                })?;
                (name.clone(), Op::Add, vec![current, other])
            }
        };
        let name = name.unwrap_or_else(|| format!("layer{position}"));
        if names.insert(name.clone(), nodes.len()).is_some() {
            return Err(Error::InvalidArchitecture {
                reason: format!("two layers are named {name:?}"),
            });
        }
        nodes.push(Node { name, op, inputs });
    }
    let output = nodes.len() - 1;
    let public = PublicPlan {
        name: architecture.name.clone(),
        fractional_bits: architecture
            .fractional_bits
            .unwrap_or(veil_core::fixed::DEFAULT_FRACTIONAL_BITS),
        approximation: approximation.into(),
        output_policy: OutputPolicy::Logits,
        graph: Graph { nodes, output },
        parameters,
    };
    Plan::new(public, weights)
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
