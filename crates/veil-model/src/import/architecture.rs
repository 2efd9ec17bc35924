//! The architecture-description importer: a JSON list of layers plus a safetensors file
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

use super::safetensors::{ShapedValues, read_safetensors};
use crate::approximation;
use crate::ir::{DEFAULT_INPUT_NAME, Graph, InputKind, Node, Op};
use crate::passes::{self, batch_norm::Folded};
use crate::plan::{OutputPolicy, ParameterInfo, ParameterKind, Plan, PublicPlan};
use crate::{Error, Result};

/// One layer of an architecture description.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Layer {
    /// A fully connected layer (weight `[out, in]`).
    Linear {
        /// Optional name for residual references.
        name: Option<String>,
        /// The weight tensor's name in the safetensors file.
        weight: String,
        /// The bias tensor's name, if any.
        bias: Option<String>,
    },
    /// A 2-D convolution (weight `[out, in, k, k]`).
    Conv2d {
        /// Optional name.
        name: Option<String>,
        /// The weight tensor's name.
        weight: String,
        /// The bias tensor's name, if any.
        bias: Option<String>,
        /// Stride (1 when absent).
        stride: Option<usize>,
        /// Zero padding (0 when absent).
        padding: Option<usize>,
    },
    /// Batch normalisation (inference form), folded into the preceding convolution or
    /// linear layer at compile time.
    BatchNorm {
        /// γ.
        weight: String,
        /// β.
        bias: String,
        /// The running mean.
        running_mean: String,
        /// The running variance.
        running_var: String,
        /// ε (1e-5 when absent).
        eps: Option<f32>,
    },
    /// Max pooling over square windows.
    MaxPool2d {
        /// Optional name.
        name: Option<String>,
        /// Window size.
        kernel: usize,
        /// Stride (the window size when absent).
        stride: Option<usize>,
        /// Comparison bit-width (64 when absent).
        bits: Option<u32>,
    },
    /// Average pooling over square windows.
    AvgPool2d {
        /// Optional name.
        name: Option<String>,
        /// Window size.
        kernel: usize,
        /// Stride (the window size when absent).
        stride: Option<usize>,
    },
    /// ReLU.
    Relu {
        /// Optional name.
        name: Option<String>,
        /// Comparison bit-width (64 when absent).
        bits: Option<u32>,
        /// Its form (`exact` or `quad`) unless the compile policy sets ReLUs' form
        /// (`exact` when both are silent).
        approx: Option<String>,
        /// The `quad` form's learned (a, b, c) in a·x² + b·x + c (Faster CryptoNets'
        /// 0.125, 0.5, 0.25 when absent).
        coefficients: Option<[f64; 3]>,
    },
    /// a·x² + b·x + c, elementwise (an explicit polynomial activation).
    Quadratic {
        /// Optional name.
        name: Option<String>,
        /// (a, b, c).
        coefficients: [f64; 3],
    },
    /// GELU.
    Gelu {
        /// Optional name.
        name: Option<String>,
        /// Comparison bit-width (64 when absent).
        bits: Option<u32>,
        /// Its form (`exact`, `quad` or `relu`) unless the compile policy sets GELUs'.
        approx: Option<String>,
    },
    /// tanh.
    Tanh {
        /// Optional name.
        name: Option<String>,
        /// Comparison bit-width (64 when absent).
        bits: Option<u32>,
    },
    /// Layer normalisation over the last dimension (γ and β of shape `[features]`).
    LayerNorm {
        /// Optional name.
        name: Option<String>,
        /// γ.
        weight: String,
        /// β.
        bias: String,
        /// ε (1e-5 when absent).
        eps: Option<f64>,
    },
    /// Softmax over the last dimension.
    Softmax {
        /// Optional name.
        name: Option<String>,
        /// Comparison bit-width (64 when absent).
        bits: Option<u32>,
        /// Its form (`exact`, `2quad` or `2relu`) unless the compile policy sets
        /// softmaxes'.
        approx: Option<String>,
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
    /// What the client learns: `"logits"` (when absent) or `{"label": {"bits": 64}}`.
    #[serde(default)]
    pub output: Option<OutputPolicy>,
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

/// Compiles an architecture and its weights into a plan, each activation in the form
/// `approximation` (an [`approximation::Policy`], `exact` for none) or its layer gives.
///
/// Passes: the policy is resolved layer by layer (a `quad` ReLU or GELU becomes a
/// quadratic layer, a `relu` GELU a ReLU); batch normalisation is folded into the preceding convolution or linear
/// layer; a ReLU directly followed by a max pool is moved after the pool
/// (ReLU(maxpool(x)) = maxpool(ReLU(x)), with k² times fewer comparisons).
pub fn compile(
    architecture: &Architecture,
    safetensors_bytes: &[u8],
    approximation: &str,
) -> Result<Plan> {
    let policy = approximation::Policy::parse(approximation)?;
    let layers = resolve_policy(&architecture.layers, &policy)?;
    let tensors = read_safetensors(safetensors_bytes)?;
    let layers = passes::batch_norm::fold_batch_norms(&layers, &tensors)?;
    let layers = passes::pool_before_relu::pool_before_relu(layers);
    let mut builder = GraphBuilder::new(architecture.input.clone());
    for (position, (layer, folded)) in layers.iter().enumerate() {
        builder.push(position, layer, folded.as_ref(), &tensors)?;
    }
    let output = builder.nodes.len() - 1;
    let public = PublicPlan {
        name: architecture.name.clone(),
        fractional_bits: architecture
            .fractional_bits
            .unwrap_or(veil_core::fixed::DEFAULT_FRACTIONAL_BITS),
        approximation: describe_forms(&builder.nodes),
        output_policy: OutputPolicy::Logits,
        graph: Graph {
            nodes: builder.nodes,
            output,
        },
        parameters: builder.parameters,
        input_bound: None,
        text: None,
    };
    Plan::new(public, builder.weights)
}

/// The layers with every activation in its resolved form: a `quad` ReLU or GELU as a
/// [`Layer::Quadratic`], a `relu` GELU as a ReLU, each softmax's form stated.
fn resolve_policy(layers: &[Layer], policy: &approximation::Policy) -> Result<Vec<Layer>> {
    use approximation::{GeluForm, ReluForm};
    let stated = |approx: &Option<String>| approx.as_deref().unwrap_or("exact").to_string();
    layers
        .iter()
        .map(|layer| {
            Ok(match layer {
                Layer::Relu {
                    name,
                    bits,
                    approx,
                    coefficients,
                } => {
                    let form = match policy.relu {
                        Some(form) => form,
                        None => approximation::parse_relu(&stated(approx))?,
                    };
                    match form {
                        ReluForm::Exact => Layer::Relu {
                            name: name.clone(),
                            bits: *bits,
                            approx: Some("exact".into()),
                            coefficients: None,
                        },
                        // The layer's learned coefficients, else the form's defaults.
                        ReluForm::Quad(defaults) => Layer::Quadratic {
                            name: name.clone(),
                            coefficients: coefficients.unwrap_or(defaults),
                        },
                    }
                }
                Layer::Gelu { name, bits, approx } => {
                    let form = match policy.gelu {
                        Some(form) => form,
                        None => approximation::parse_gelu(&stated(approx))?,
                    };
                    match form {
                        GeluForm::Exact | GeluForm::Polynomial => Layer::Gelu {
                            name: name.clone(),
                            bits: *bits,
                            approx: Some(approximation::gelu_name(form).into()),
                        },
                        GeluForm::Quad => Layer::Quadratic {
                            name: name.clone(),
                            coefficients: approximation::GELU_QUAD,
                        },
                        GeluForm::Relu => Layer::Relu {
                            name: name.clone(),
                            bits: *bits,
                            approx: Some("exact".into()),
                            coefficients: None,
                        },
                    }
                }
                Layer::Softmax { name, bits, approx } => {
                    let form = match policy.softmax {
                        Some(form) => form,
                        None => approximation::parse_softmax(&stated(approx))?,
                    };
                    Layer::Softmax {
                        name: name.clone(),
                        bits: *bits,
                        approx: Some(approximation::softmax_name(form).into()),
                    }
                }
                other => other.clone(),
            })
        })
        .collect()
}

/// The forms a graph's activations take, as a policy string (`exact` when none is
/// approximated): what the plan records as its approximation.
pub(crate) fn describe_forms(nodes: &[Node]) -> String {
    let mut forms: Vec<&str> = nodes
        .iter()
        .filter_map(|node| match node.op {
            Op::Quadratic { .. } => Some("quadratic"),
            Op::QuadSoftmax { .. } => Some("softmax=2quad"),
            Op::ReluSoftmax { .. } => Some("softmax=2relu"),
            Op::Gelu { .. } => Some("gelu=polynomial"),
            _ => None,
        })
        .collect();
    forms.sort_unstable();
    forms.dedup();
    if forms.is_empty() {
        "exact".into()
    } else {
        forms.join(",")
    }
}

pub(crate) fn tensor<'a>(
    tensors: &'a BTreeMap<String, ShapedValues>,
    name: &str,
) -> Result<&'a ShapedValues> {
    tensors
        .get(name)
        .ok_or_else(|| Error::MissingParameter { name: name.into() })
}

struct GraphBuilder {
    nodes: Vec<Node>,
    names: BTreeMap<String, usize>,
    parameters: Vec<ParameterInfo>,
    weights: BTreeMap<String, Vec<f32>>,
    /// The running per-sample shape.
    shape: Vec<usize>,
}

impl GraphBuilder {
    fn new(input: Vec<usize>) -> Self {
        Self {
            nodes: vec![Node::input(
                DEFAULT_INPUT_NAME,
                input.clone(),
                InputKind::Real,
            )],
            names: BTreeMap::from([(DEFAULT_INPUT_NAME.to_string(), 0)]),
            parameters: Vec::new(),
            weights: BTreeMap::new(),
            shape: input,
        }
    }

    fn add_parameter(
        &mut self,
        name: &str,
        shape: Vec<usize>,
        kind: ParameterKind,
        values: Vec<f32>,
    ) -> Result<()> {
        if self.weights.contains_key(name) {
            return Err(Error::InvalidArchitecture {
                reason: format!("parameter {name:?} is used twice"),
            });
        }
        self.parameters.push(ParameterInfo {
            name: name.into(),
            shape,
            kind,
        });
        self.weights.insert(name.into(), values);
        Ok(())
    }

    /// Adds the bias (with the folded shift) of a layer with `outputs` channels.
    fn add_bias(
        &mut self,
        layer: &str,
        bias: &Option<String>,
        outputs: usize,
        folded: Option<&Folded>,
        tensors: &BTreeMap<String, ShapedValues>,
    ) -> Result<Option<String>> {
        let mut values = match bias {
            Some(bias) => {
                let (shape, values) = tensor(tensors, bias)?;
                if shape != &vec![outputs] {
                    return Err(Error::ParameterShape {
                        name: bias.clone(),
                        expected: vec![outputs],
                        found: shape.clone(),
                    });
                }
                values.clone()
            }
            None if folded.is_some() => vec![0.0; outputs],
            None => return Ok(None),
        };
        if let Some(folded) = folded {
            if folded.scale.len() != outputs {
                return Err(Error::InvalidArchitecture {
                    reason: format!(
                        "batch_norm after {layer} has {} channels, the layer has {outputs}",
                        folded.scale.len()
                    ),
                });
            }
            for (c, value) in values.iter_mut().enumerate() {
                *value = *value * folded.scale[c] + folded.shift[c];
            }
        }
        let name = bias
            .clone()
            .unwrap_or_else(|| format!("{layer}.folded_bias"));
        self.add_parameter(&name, vec![outputs], ParameterKind::Bias, values)?;
        Ok(Some(name))
    }

    fn push(
        &mut self,
        position: usize,
        layer: &Layer,
        folded: Option<&Folded>,
        tensors: &BTreeMap<String, ShapedValues>,
    ) -> Result<()> {
        let current = self.nodes.len() - 1;
        let shape_error =
            |name: &str, expected: Vec<usize>, found: &Vec<usize>| Error::ParameterShape {
                name: name.into(),
                expected,
                found: found.clone(),
            };
        let (name, op, inputs) = match layer {
            Layer::Linear { name, weight, bias } => {
                let (shape, values) = tensor(tensors, weight)?;
                let &[out_features, in_features] = shape.as_slice() else {
                    return Err(shape_error(weight, vec![0, 0], shape));
                };
                if self.shape != [in_features] {
                    return Err(Error::InvalidArchitecture {
                        reason: format!(
                            "layer {position}: linear {weight:?} takes {in_features} features, its input has shape {:?} (flatten first?)",
                            self.shape
                        ),
                    });
                }
                // Transpose [out, in] → [in, out], scaling each output column by a folded batch norm.
                let mut transposed = vec![0f32; values.len()];
                for o in 0..out_features {
                    let scale = folded.map_or(1.0, |f| f.scale.get(o).copied().unwrap_or(1.0));
                    for i in 0..in_features {
                        transposed[i * out_features + o] = values[o * in_features + i] * scale;
                    }
                }
                self.add_parameter(
                    weight,
                    vec![in_features, out_features],
                    ParameterKind::Weight,
                    transposed,
                )?;
                let bias = self.add_bias(weight, bias, out_features, folded, tensors)?;
                self.shape = vec![out_features];
                (
                    name.clone(),
                    Op::Linear {
                        weight: weight.clone(),
                        bias,
                        in_features,
                        out_features,
                    },
                    vec![current],
                )
            }
            Layer::Conv2d {
                name,
                weight,
                bias,
                stride,
                padding,
            } => {
                let (shape, values) = tensor(tensors, weight)?;
                let &[out_channels, in_channels, kernel_height, kernel_width] = shape.as_slice()
                else {
                    return Err(shape_error(weight, vec![0, 0, 0, 0], shape));
                };
                if kernel_height != kernel_width {
                    return Err(Error::InvalidArchitecture {
                        reason: format!(
                            "layer {position}: only square kernels are supported, {weight:?} is {kernel_height}×{kernel_width}"
                        ),
                    });
                }
                let [channels, height, width] = self.shape[..] else {
                    return Err(Error::InvalidArchitecture {
                        reason: format!(
                            "layer {position}: conv2d needs a [channels, height, width] input, has {:?}",
                            self.shape
                        ),
                    });
                };
                if channels != in_channels {
                    return Err(shape_error(
                        weight,
                        vec![out_channels, channels, kernel_height, kernel_width],
                        shape,
                    ));
                }
                let (stride, padding) = (stride.unwrap_or(1), padding.unwrap_or(0));
                let (output_height, output_width) =
                    crate::ir::window_output(height, width, kernel_height, stride, padding)
                        .ok_or_else(|| Error::InvalidArchitecture {
                            reason: format!(
                                "layer {position}: the kernel does not fit the input {:?}",
                                self.shape
                            ),
                        })?;
                let per_output = in_channels * kernel_height * kernel_width;
                let scaled: Vec<f32> = values
                    .iter()
                    .enumerate()
                    .map(|(index, &value)| {
                        value
                            * folded.map_or(1.0, |f| {
                                f.scale.get(index / per_output).copied().unwrap_or(1.0)
                            })
                    })
                    .collect();
                self.add_parameter(weight, shape.clone(), ParameterKind::Weight, scaled)?;
                let bias = self.add_bias(weight, bias, out_channels, folded, tensors)?;
                self.shape = vec![out_channels, output_height, output_width];
                (
                    name.clone(),
                    Op::Conv2d {
                        weight: weight.clone(),
                        bias,
                        in_channels,
                        out_channels,
                        kernel: kernel_height,
                        stride,
                        padding,
                    },
                    vec![current],
                )
            }
            Layer::MaxPool2d {
                name,
                kernel,
                stride,
                bits,
            } => {
                let stride = stride.unwrap_or(*kernel);
                self.shape = self.pooled(position, *kernel, stride)?;
                (
                    name.clone(),
                    Op::MaxPool2d {
                        kernel: *kernel,
                        stride,
                        bits: bits.unwrap_or(64),
                    },
                    vec![current],
                )
            }
            Layer::AvgPool2d {
                name,
                kernel,
                stride,
            } => {
                let stride = stride.unwrap_or(*kernel);
                self.shape = self.pooled(position, *kernel, stride)?;
                (
                    name.clone(),
                    Op::AvgPool2d {
                        kernel: *kernel,
                        stride,
                    },
                    vec![current],
                )
            }
            Layer::Relu { name, bits, .. } => (
                name.clone(),
                Op::Relu {
                    bits: bits.unwrap_or(64),
                },
                vec![current],
            ),
            Layer::Quadratic {
                name,
                coefficients: [a, b, c],
            } => (
                name.clone(),
                Op::Quadratic {
                    a: *a,
                    b: *b,
                    c: *c,
                },
                vec![current],
            ),
            Layer::Gelu { name, bits, approx } => (
                name.clone(),
                approximation::gelu_op(
                    approximation::parse_gelu(approx.as_deref().unwrap_or("exact"))?,
                    bits.unwrap_or(64),
                ),
                vec![current],
            ),
            Layer::Tanh { name, bits } => (
                name.clone(),
                Op::Tanh {
                    bits: bits.unwrap_or(64),
                },
                vec![current],
            ),
            Layer::LayerNorm {
                name,
                weight,
                bias,
                eps,
            } => {
                let features = self.shape.last().copied().unwrap_or(0);
                for (parameter, kind) in
                    [(weight, ParameterKind::Weight), (bias, ParameterKind::Bias)]
                {
                    let (shape, values) = tensor(tensors, parameter)?;
                    if shape != &vec![features] {
                        return Err(shape_error(parameter, vec![features], shape));
                    }
                    self.add_parameter(parameter, vec![features], kind, values.clone())?;
                }
                (
                    name.clone(),
                    Op::LayerNorm {
                        weight: weight.clone(),
                        bias: bias.clone(),
                        features,
                        epsilon: eps.unwrap_or(1e-5),
                    },
                    vec![current],
                )
            }
            Layer::Softmax { name, bits, approx } => {
                let form = approximation::parse_softmax(approx.as_deref().unwrap_or("exact"))?;
                // A sequential architecture has no attention mask.
                let op = approximation::softmax_op(form, bits.unwrap_or(64), false);
                (name.clone(), op, vec![current])
            }
            Layer::Flatten { name } => {
                self.shape = vec![self.shape.iter().product()];
                (name.clone(), Op::Flatten, vec![current])
            }
            Layer::Add { name, with } => {
                let other = *self
                    .names
                    .get(with)
                    .ok_or_else(|| Error::InvalidArchitecture {
                        reason: format!("layer {position} adds unknown layer {with:?}"),
                    })?;
                (name.clone(), Op::Add, vec![current, other])
            }
            Layer::BatchNorm { .. } => {
                return Err(Error::InvalidArchitecture {
                    reason: format!("layer {position}: batch_norm was not folded"),
                });
            }
        };
        let name = name.unwrap_or_else(|| format!("layer{position}"));
        if self.names.insert(name.clone(), self.nodes.len()).is_some() {
            return Err(Error::InvalidArchitecture {
                reason: format!("two layers are named {name:?}"),
            });
        }
        self.nodes.push(Node { name, op, inputs });
        Ok(())
    }

    fn pooled(&self, position: usize, kernel: usize, stride: usize) -> Result<Vec<usize>> {
        let [channels, height, width] = self.shape[..] else {
            return Err(Error::InvalidArchitecture {
                reason: format!(
                    "layer {position}: pooling needs a [channels, height, width] input, has {:?}",
                    self.shape
                ),
            });
        };
        let (output_height, output_width) =
            crate::ir::window_output(height, width, kernel, stride, 0).ok_or_else(|| {
                Error::InvalidArchitecture {
                    reason: format!(
                        "layer {position}: the pooling window does not fit {:?}",
                        self.shape
                    ),
                }
            })?;
        Ok(vec![channels, output_height, output_width])
    }
}
