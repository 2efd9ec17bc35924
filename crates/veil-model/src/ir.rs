//! The IR: a graph of nodes in topological order, each naming its inputs by index.
//!
//! A graph starts with one or more named client inputs ([`Op::Input`]: features, token
//! ids, an attention mask), each with its shape and [`InputKind`]. Every op is matched
//! by name everywhere (no wildcard arms), so adding a variant makes the compiler list
//! each place that must handle it.
//!
//! Every shape carries a leading batch dimension at run time; the plan records the
//! per-sample input shape. Parameters are named; linear weights are stored `[in, out]`
//! (transposed from PyTorch's `[out, in]` at import).

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// What an input's values are, which fixes their encoding into the ring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum InputKind {
    /// Real values (features, pixels, token embeddings) at the plan's fixed-point scale.
    #[default]
    Real,
    /// Token ids: whole numbers in `0..vocabulary`, encoded as ring integers (unscaled).
    TokenIds {
        /// The vocabulary size; every id must be below it.
        vocabulary: usize,
    },
    /// An attention mask: 1 for a real token, 0 for padding, at the fixed-point scale.
    AttentionMask,
}

/// Who knows an input's values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Visibility {
    /// Only the client: the value is secret-shared and never leaves the client
    /// unmasked (DESIGN.md §1). A sequence's true length and its attention mask are
    /// client-private too; only the padded length (the shape) is public.
    #[default]
    ClientPrivate,
}

/// The most elements any node's value may have for one query (2^36, 512 GiB of ring
/// elements): larger shapes in a plan file are refused as malformed.
pub const MAX_ELEMENTS: usize = 1 << 36;

/// The name of a plan's input when the architecture gives none.
pub const DEFAULT_INPUT_NAME: &str = "input";

/// One operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// One of the client's inputs, with its per-sample shape and kind; the node's name
    /// is the input's name, unique among the inputs. Input nodes come first in the
    /// graph, one per named input.
    Input {
        /// Shape without the batch dimension.
        shape: Vec<usize>,
        /// What the values are and how they are encoded (`real` when absent).
        #[serde(default)]
        kind: InputKind,
        /// Who knows the values: only the client (the default, and the only visibility
        /// the executors accept so far).
        #[serde(default)]
        visibility: Visibility,
    },
    /// y = x·W + b over the last dimension, with W `[in_features, out_features]`.
    Linear {
        /// The weight's parameter name.
        weight: String,
        /// The bias's parameter name, if any.
        bias: Option<String>,
        /// Input features.
        in_features: usize,
        /// Output features.
        out_features: usize,
    },
    /// 2-D convolution, NCHW, weight `[out_channels, in_channels, kernel, kernel]`, zero
    /// padding.
    Conv2d {
        /// The weight's parameter name.
        weight: String,
        /// The bias's parameter name, if any.
        bias: Option<String>,
        /// Input channels.
        in_channels: usize,
        /// Output channels.
        out_channels: usize,
        /// Kernel height and width.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Zero padding on each side.
        padding: usize,
    },
    /// Max over `kernel × kernel` windows of each channel; comparisons on `bits` bits.
    MaxPool2d {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
        /// Comparison bit-width (64 when absent).
        bits: u32,
    },
    /// Mean over `kernel × kernel` windows of each channel.
    AvgPool2d {
        /// Window size.
        kernel: usize,
        /// Stride.
        stride: usize,
    },
    /// max(x, 0); the sign is decided on a `bits`-bit reduction (64 = none).
    Relu {
        /// Comparison bit-width from range analysis (64 when absent).
        bits: u32,
    },
    /// GELU(x) = x·Φ(x), elementwise, in PUMA's secure form (`gelu=polynomial`; plans
    /// compiled before the table form have it for every GELU). The plain executor
    /// computes it exactly; under MPC its pieces are chosen by comparisons decided on a
    /// `bits`-bit reduction.
    Gelu {
        /// Comparison bit-width from range analysis (64 when absent).
        bits: u32,
    },
    /// GELU(x) = x·Φ(x), elementwise, in the default secure form: ReLU(x) minus a
    /// 256-entry table of ReLU − GELU over |x| < 4 (SIGMA's), read by a table lookup.
    /// The plain executor computes GELU exactly; the ReLU decides on a `bits`-bit
    /// reduction.
    GeluTable {
        /// Comparison bit-width from range analysis (64 when absent).
        bits: u32,
    },
    /// Softmax over the last dimension. The plain executor computes it exactly; under
    /// MPC the row max and the comparisons inside decide on a `bits`-bit reduction.
    Softmax {
        /// Comparison bit-width for the row max and the clipping (64 when absent).
        bits: u32,
    },
    /// tanh(x), elementwise (a classification head's pooler). The plain executor
    /// computes it exactly; under MPC the sign and the clip are comparisons on a
    /// `bits`-bit reduction.
    Tanh {
        /// Comparison bit-width from range analysis (64 when absent).
        bits: u32,
    },
    /// The first token's values of each sample, `[b, tokens, features]` → `[b,
    /// features]` (BERT's `[CLS]` for a classification head; local).
    FirstToken,
    /// Layer normalisation over the last dimension: γ·(x − μ)/√(σ² + ε) + β with μ and
    /// σ² the mean and variance of each row of `features` values.
    LayerNorm {
        /// γ's parameter name (a `[features]` weight).
        weight: String,
        /// β's parameter name (a `[features]` bias).
        bias: String,
        /// The normalised dimension's size.
        features: usize,
        /// ε.
        epsilon: f64,
    },
    /// The product of two secret tensors over their last two dimensions, every leading
    /// dimension a batch of products (attention's Q·Kᵀ with `transpose_right`, and P·V):
    /// `[b, …, m, k]·[b, …, k, n]` (or `[b, …, n, k]` transposed) → `[b, …, m, n]`.
    MatMul {
        /// Whether the right operand is read transposed in its last two dimensions.
        transpose_right: bool,
    },
    /// x times a public constant (attention's 1/√d).
    Scale {
        /// The constant.
        factor: f64,
    },
    /// The same values under another per-sample shape with as many elements.
    Reshape {
        /// The new shape without the batch dimension.
        shape: Vec<usize>,
    },
    /// The per-sample dimensions permuted (splitting and merging attention heads).
    Transpose {
        /// Output dimension i is input dimension `permutation[i]` (batch excluded).
        permutation: Vec<usize>,
    },
    /// Flattens every dimension after the batch.
    Flatten,
    /// Elementwise sum of two inputs of one shape.
    Add,
    /// Attention scores with padding keys pushed out of the softmax: inputs
    /// (scores `[b, …, keys]`, attention mask `[b, keys]`), output
    /// scores + (mask − 1)·`penalty`, the mask broadcast over every head and query
    /// (local under MPC: the mask is shared, the penalty public).
    MaskScores {
        /// How far below its row a padding key's score is pushed (a whole number).
        penalty: u32,
    },
    /// Masked sum pooling over a sequence: inputs (values `[b, tokens, features]`,
    /// attention mask `[b, tokens]`), output `[b, features]` = Σ_t mask_t·values_t (a
    /// product of two secrets under MPC). The client divides by its own token count.
    MaskedSum,
    /// a·x² + b·x + c, elementwise: the `quad` approximation of a ReLU or a GELU
    /// (DESIGN.md §5; cookbook §5.1). Under MPC one square and two truncations, no
    /// comparison.
    Quadratic {
        /// The coefficient of x².
        a: f64,
        /// The coefficient of x.
        b: f64,
        /// The constant term.
        c: f64,
    },
    /// MPCFormer's 2Quad softmax over the last dimension (cookbook §4.5): q = (x +
    /// `shift`)², times the attention mask when `masked` (inputs scores `[b, …, keys]`
    /// and mask `[b, keys]`), divided by its row sum. No max and no exponential.
    QuadSoftmax {
        /// The constant c added before squaring (5 in MPCFormer).
        shift: f64,
        /// Whether a second input, the attention mask, zeroes padding keys.
        masked: bool,
        /// Bit-width of the row sum's comparisons (the reciprocal's start), 64 when absent.
        #[serde(default = "full_width")]
        bits: u32,
    },
    /// MPCFormer's 2ReLU softmax over the last dimension: (ReLU(x) + ε/n) / (Σ ReLU(x) +
    /// ε) for rows of n values. Masked scores (pushed a penalty down) get ε/(n·(Σ + ε)).
    ReluSoftmax {
        /// ε.
        epsilon: f64,
        /// Bit-width of the ReLU's and the row sum's comparisons, 64 when absent.
        #[serde(default = "full_width")]
        bits: u32,
    },
}

fn full_width() -> u32 {
    64
}

/// A node: an op and the indices of the nodes it reads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// A name for messages and residual references.
    pub name: String,
    /// The operation.
    #[serde(flatten)]
    pub op: Op,
    /// Indices of earlier nodes.
    pub inputs: Vec<usize>,
}

impl Node {
    /// A client-private input node named `name` (also the node's name).
    pub fn input(name: &str, shape: Vec<usize>, kind: InputKind) -> Self {
        Node {
            name: name.into(),
            op: Op::Input {
                shape,
                kind,
                visibility: Visibility::ClientPrivate,
            },
            inputs: vec![],
        }
    }
}

/// The graph: nodes in topological order; node 0 is the input; `output` is the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The output node's index.
    pub output: usize,
}

/// One named client input of a graph: what [`Graph::inputs`] lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InputSlot<'a> {
    /// The input node's index.
    pub node: usize,
    /// Its name.
    pub name: &'a str,
    /// Its per-sample shape.
    pub shape: &'a [usize],
    /// Its kind.
    pub kind: InputKind,
    /// Who knows it.
    pub visibility: Visibility,
}

impl InputSlot<'_> {
    /// Values per sample.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether a sample has no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Op {
    /// The op's name as the plan's JSON spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input { .. } => "input",
            Op::Linear { .. } => "linear",
            Op::Conv2d { .. } => "conv2d",
            Op::MaxPool2d { .. } => "max_pool2d",
            Op::AvgPool2d { .. } => "avg_pool2d",
            Op::Relu { .. } => "relu",
            Op::Gelu { .. } => "gelu",
            Op::GeluTable { .. } => "gelu_table",
            Op::Softmax { .. } => "softmax",
            Op::Tanh { .. } => "tanh",
            Op::FirstToken => "first_token",
            Op::LayerNorm { .. } => "layer_norm",
            Op::MatMul { .. } => "matmul",
            Op::Scale { .. } => "scale",
            Op::Reshape { .. } => "reshape",
            Op::Transpose { .. } => "transpose",
            Op::Flatten => "flatten",
            Op::Add => "add",
            Op::MaskScores { .. } => "mask_scores",
            Op::MaskedSum => "masked_sum",
            Op::Quadratic { .. } => "quadratic",
            Op::QuadSoftmax { .. } => "quad_softmax",
            Op::ReluSoftmax { .. } => "relu_softmax",
        }
    }

    /// How many inputs the op reads.
    pub fn arity(&self) -> usize {
        match self {
            Op::Input { .. } => 0,
            Op::Linear { .. }
            | Op::Conv2d { .. }
            | Op::MaxPool2d { .. }
            | Op::AvgPool2d { .. }
            | Op::Relu { .. }
            | Op::Gelu { .. }
            | Op::GeluTable { .. }
            | Op::Softmax { .. }
            | Op::Tanh { .. }
            | Op::FirstToken
            | Op::LayerNorm { .. }
            | Op::Scale { .. }
            | Op::Reshape { .. }
            | Op::Transpose { .. }
            | Op::Flatten
            | Op::Quadratic { .. }
            | Op::ReluSoftmax { .. }
            | Op::QuadSoftmax { masked: false, .. } => 1,
            Op::Add
            | Op::MatMul { .. }
            | Op::MaskScores { .. }
            | Op::MaskedSum
            | Op::QuadSoftmax { masked: true, .. } => 2,
        }
    }
}

impl Graph {
    /// The client's inputs, in graph order (the order of a flat input buffer).
    pub fn inputs(&self) -> Vec<InputSlot<'_>> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(node, entry)| match &entry.op {
                Op::Input {
                    shape,
                    kind,
                    visibility,
                } => Some(InputSlot {
                    node,
                    name: &entry.name,
                    shape,
                    kind: *kind,
                    visibility: *visibility,
                }),
                Op::Linear { .. }
                | Op::Conv2d { .. }
                | Op::MaxPool2d { .. }
                | Op::AvgPool2d { .. }
                | Op::Relu { .. }
                | Op::Gelu { .. }
                | Op::GeluTable { .. }
                | Op::Softmax { .. }
                | Op::Tanh { .. }
                | Op::FirstToken
                | Op::LayerNorm { .. }
                | Op::MatMul { .. }
                | Op::Scale { .. }
                | Op::Reshape { .. }
                | Op::Transpose { .. }
                | Op::Flatten
                | Op::Add
                | Op::MaskScores { .. }
                | Op::MaskedSum
                | Op::Quadratic { .. }
                | Op::QuadSoftmax { .. }
                | Op::ReluSoftmax { .. } => None,
            })
            .collect()
    }

    /// Checks the structure and returns every node's shape for a batch of `batch`.
    pub fn infer_shapes(&self, batch: usize) -> Result<Vec<Vec<usize>>> {
        let invalid = |node: usize, reason: String| Error::InvalidGraph { node, reason };
        let mut shapes: Vec<Vec<usize>> = Vec::with_capacity(self.nodes.len());
        for (index, node) in self.nodes.iter().enumerate() {
            for &input in &node.inputs {
                if input >= index {
                    return Err(invalid(
                        index,
                        format!("input {input} is not an earlier node"),
                    ));
                }
            }
            let arity = node.op.arity();
            if node.inputs.len() != arity {
                return Err(invalid(
                    index,
                    format!("expects {arity} inputs, has {}", node.inputs.len()),
                ));
            }
            let input_shape = |which: usize| shapes[node.inputs[which]].clone();
            let shape = match &node.op {
                Op::Input { shape, kind, .. } => {
                    let name = &node.name;
                    if index > 0 && !matches!(self.nodes[index - 1].op, Op::Input { .. }) {
                        return Err(invalid(
                            index,
                            format!("input {name:?} follows a computing node; inputs come first"),
                        ));
                    }
                    if self.nodes[..index]
                        .iter()
                        .any(|earlier| &earlier.name == name)
                    {
                        return Err(invalid(index, format!("a second input named {name:?}")));
                    }
                    if let InputKind::TokenIds { vocabulary: 0 } = kind {
                        return Err(invalid(
                            index,
                            format!("token ids {name:?} with an empty vocabulary"),
                        ));
                    }
                    let mut full = vec![batch];
                    full.extend_from_slice(shape);
                    full
                }
                Op::Linear {
                    in_features,
                    out_features,
                    ..
                } => {
                    // Over the last dimension: [batch, …, in] → [batch, …, out] (a
                    // sequence's tokens share the weight).
                    let mut shape = input_shape(0);
                    if shape.len() < 2 || shape.last() != Some(in_features) {
                        return Err(invalid(
                            index,
                            format!("linear expects [batch, …, {in_features}], gets {shape:?}"),
                        ));
                    }
                    if let Some(last) = shape.last_mut() {
                        *last = *out_features;
                    }
                    shape
                }
                Op::Conv2d {
                    in_channels,
                    out_channels,
                    kernel,
                    stride,
                    padding,
                    ..
                } => {
                    let shape = input_shape(0);
                    let [_, channels, height, width] = shape[..] else {
                        return Err(invalid(
                            index,
                            format!(
                                "conv2d expects [batch, channels, height, width], gets {shape:?}"
                            ),
                        ));
                    };
                    if channels != *in_channels || *stride == 0 || *kernel == 0 {
                        return Err(invalid(
                            index,
                            format!(
                                "conv2d expects {in_channels} channels and a positive stride and kernel, gets {shape:?}"
                            ),
                        ));
                    }
                    let (output_height, output_width) = window_output(
                        height, width, *kernel, *stride, *padding,
                    )
                    .ok_or_else(|| {
                        invalid(
                            index,
                            format!("a {kernel}×{kernel} kernel does not fit {shape:?}"),
                        )
                    })?;
                    vec![batch, *out_channels, output_height, output_width]
                }
                Op::MaxPool2d {
                    kernel,
                    stride,
                    bits,
                } => {
                    if !(2..=64).contains(bits) {
                        return Err(invalid(
                            index,
                            format!("max_pool2d bit-width {bits} outside 2..=64"),
                        ));
                    }
                    pool_shape(&input_shape(0), *kernel, *stride)
                        .ok_or_else(|| invalid(index, "max_pool2d window does not fit".into()))?
                }
                Op::AvgPool2d { kernel, stride } => {
                    if !kernel.is_power_of_two() {
                        return Err(invalid(
                            index,
                            format!("avg_pool2d needs a power-of-two window area, kernel {kernel}"),
                        ));
                    }
                    pool_shape(&input_shape(0), *kernel, *stride)
                        .ok_or_else(|| invalid(index, "avg_pool2d window does not fit".into()))?
                }
                Op::Relu { bits }
                | Op::Gelu { bits }
                | Op::GeluTable { bits }
                | Op::Softmax { bits }
                | Op::Tanh { bits } => {
                    if !(2..=64).contains(bits) {
                        return Err(invalid(
                            index,
                            format!("{} bit-width {bits} outside 2..=64", node.op.name()),
                        ));
                    }
                    let shape = input_shape(0);
                    // Softmax normalises each sample's rows, never across the batch.
                    if matches!(node.op, Op::Softmax { .. }) && shape.len() < 2 {
                        return Err(invalid(
                            index,
                            format!("softmax needs rows within each sample, gets {shape:?}"),
                        ));
                    }
                    shape
                }
                Op::LayerNorm {
                    features, epsilon, ..
                } => {
                    let shape = input_shape(0);
                    if shape.len() < 2 || shape.last() != Some(features) || *features == 0 {
                        return Err(invalid(
                            index,
                            format!("layer_norm over {features} features gets {shape:?}"),
                        ));
                    }
                    if !(epsilon.is_finite() && *epsilon >= 0.0) {
                        return Err(invalid(
                            index,
                            "layer_norm's epsilon must be finite and non-negative".into(),
                        ));
                    }
                    shape
                }
                Op::MatMul { transpose_right } => {
                    let (left, right) = (input_shape(0), input_shape(1));
                    let refuse = || {
                        invalid(
                            index,
                            format!(
                                "matmul of {left:?} and {right:?} (transpose_right {transpose_right})"
                            ),
                        )
                    };
                    let rank = left.len();
                    if rank < 3 || right.len() != rank || left[..rank - 2] != right[..rank - 2] {
                        return Err(refuse());
                    }
                    let (m, k) = (left[rank - 2], left[rank - 1]);
                    let (right_k, n) = if *transpose_right {
                        (right[rank - 1], right[rank - 2])
                    } else {
                        (right[rank - 2], right[rank - 1])
                    };
                    if k != right_k {
                        return Err(refuse());
                    }
                    let mut shape = left[..rank - 2].to_vec();
                    shape.extend([m, n]);
                    shape
                }
                Op::Scale { factor } => {
                    if !factor.is_finite() {
                        return Err(invalid(
                            index,
                            "scale by a factor that is not finite".into(),
                        ));
                    }
                    input_shape(0)
                }
                Op::Reshape { shape } => {
                    let from = input_shape(0);
                    let have: Option<usize> =
                        from[1..].iter().try_fold(1usize, |c, &d| c.checked_mul(d));
                    let want: Option<usize> =
                        shape.iter().try_fold(1usize, |c, &d| c.checked_mul(d));
                    if have != want || want.is_none() {
                        return Err(invalid(index, format!("reshape of {from:?} to {shape:?}")));
                    }
                    let mut full = vec![batch];
                    full.extend_from_slice(shape);
                    full
                }
                Op::Transpose { permutation } => {
                    let from = input_shape(0);
                    let mut seen = vec![false; permutation.len()];
                    let valid = permutation.len() + 1 == from.len()
                        && permutation.iter().all(|&axis| {
                            axis < seen.len() && !std::mem::replace(&mut seen[axis], true)
                        });
                    if !valid {
                        return Err(invalid(
                            index,
                            format!(
                                "transpose of {from:?} by {permutation:?}, which is not a permutation of its dimensions"
                            ),
                        ));
                    }
                    let mut full = vec![batch];
                    full.extend(permutation.iter().map(|&axis| from[axis + 1]));
                    full
                }
                Op::Quadratic { a, b, c } => {
                    if !(a.is_finite() && b.is_finite() && c.is_finite()) {
                        return Err(invalid(
                            index,
                            "quadratic coefficients must be finite".into(),
                        ));
                    }
                    input_shape(0)
                }
                Op::QuadSoftmax {
                    shift,
                    masked,
                    bits,
                } => {
                    let scores = input_shape(0);
                    if !(2..=64).contains(bits) || !shift.is_finite() || scores.len() < 2 {
                        return Err(invalid(
                            index,
                            format!(
                                "quad_softmax needs rows within each sample, a finite shift and a bit-width in 2..=64, gets {scores:?}, {shift}, {bits}"
                            ),
                        ));
                    }
                    if *masked {
                        let mask = input_shape(1);
                        if mask.len() != 2 || mask[0] != scores[0] || scores.last() != mask.last() {
                            return Err(invalid(
                                index,
                                format!(
                                    "quad_softmax expects scores [batch, …, keys] and a mask [batch, keys], gets {scores:?} and {mask:?}"
                                ),
                            ));
                        }
                    }
                    scores
                }
                Op::ReluSoftmax { epsilon, bits } => {
                    let scores = input_shape(0);
                    let valid = (2..=64).contains(bits) && epsilon.is_finite() && *epsilon > 0.0;
                    if !valid || scores.len() < 2 {
                        return Err(invalid(
                            index,
                            format!(
                                "relu_softmax needs rows within each sample, ε > 0 and a bit-width in 2..=64, gets {scores:?}, {epsilon}, {bits}"
                            ),
                        ));
                    }
                    scores
                }
                Op::Flatten => {
                    let shape = input_shape(0);
                    vec![
                        batch,
                        shape.get(1..).map_or(1, |rest| rest.iter().product()),
                    ]
                }
                Op::Add => {
                    let (left, right) = (input_shape(0), input_shape(1));
                    if left != right {
                        return Err(invalid(index, format!("add of {left:?} and {right:?}")));
                    }
                    left
                }
                Op::MaskScores { .. } => {
                    let (scores, mask) = (input_shape(0), input_shape(1));
                    if mask.len() != 2 || scores.len() < 2 || scores.last() != mask.last() {
                        return Err(invalid(
                            index,
                            format!(
                                "mask_scores expects scores [batch, …, keys] and a mask [batch, keys], gets {scores:?} and {mask:?}"
                            ),
                        ));
                    }
                    scores
                }
                Op::FirstToken => {
                    let values = input_shape(0);
                    let [batch, tokens, features] = values[..] else {
                        return Err(invalid(
                            index,
                            format!(
                                "first_token expects [batch, tokens, features], gets {values:?}"
                            ),
                        ));
                    };
                    if tokens == 0 {
                        return Err(invalid(index, "first_token of an empty sequence".into()));
                    }
                    vec![batch, features]
                }
                Op::MaskedSum => {
                    let (values, mask) = (input_shape(0), input_shape(1));
                    let [batch, tokens, features] = values[..] else {
                        return Err(invalid(
                            index,
                            format!(
                                "masked_sum expects values [batch, tokens, features], gets {values:?}"
                            ),
                        ));
                    };
                    if mask != [batch, tokens] {
                        return Err(invalid(
                            index,
                            format!(
                                "masked_sum of {values:?} needs a mask [{batch}, {tokens}], gets {mask:?}"
                            ),
                        ));
                    }
                    vec![batch, features]
                }
            };
            // Sizes come from files: refuse any whose element count overflows or exceeds
            // what a query could ever hold, before anything is allocated from it.
            let elements = shape
                .iter()
                .try_fold(1usize, |count, &dimension| count.checked_mul(dimension))
                .filter(|&count| count <= MAX_ELEMENTS);
            if elements.is_none() {
                return Err(invalid(
                    index,
                    format!("shape {shape:?} has more than {MAX_ELEMENTS} elements"),
                ));
            }
            shapes.push(shape);
        }
        if index_out_of(self.output, self.nodes.len()) {
            return Err(invalid(self.output, "the output is not a node".into()));
        }
        if index_out_of(0, self.nodes.len()) {
            return Err(invalid(0, "the graph has no nodes".into()));
        }
        if !matches!(self.nodes[0].op, Op::Input { .. }) {
            return Err(invalid(
                0,
                "the graph has no input; node 0 must be one".into(),
            ));
        }
        Ok(shapes)
    }
}

/// The output size of a `kernel`-sized window sliding with `stride` over a padded plane.
pub fn window_output(
    height: usize,
    width: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Option<(usize, usize)> {
    if stride == 0 || kernel == 0 {
        return None;
    }
    let extent = |size: usize| {
        (size + 2 * padding)
            .checked_sub(kernel)
            .map(|span| span / stride + 1)
    };
    Some((extent(height)?, extent(width)?))
}

fn pool_shape(shape: &[usize], kernel: usize, stride: usize) -> Option<Vec<usize>> {
    let [batch, channels, height, width] = shape[..] else {
        return None;
    };
    let (output_height, output_width) = window_output(height, width, kernel, stride, 0)?;
    Some(vec![batch, channels, output_height, output_width])
}

/// For each window offset (row, column) of a pooling window, the flat indices into the
/// `[batch, channels, height, width]` input of that offset's element of every window, in
/// output order.
pub fn pooling_indices(input: &[usize], kernel: usize, stride: usize) -> Vec<Vec<usize>> {
    let [batch, channels, height, width] = input[..] else {
        return Vec::new();
    };
    let Some((output_height, output_width)) = window_output(height, width, kernel, stride, 0)
    else {
        return Vec::new();
    };
    let mut offsets = Vec::with_capacity(kernel * kernel);
    for row in 0..kernel {
        for column in 0..kernel {
            let mut indices = Vec::with_capacity(batch * channels * output_height * output_width);
            for plane in 0..batch * channels {
                for y in 0..output_height {
                    for x in 0..output_width {
                        indices.push(
                            plane * height * width
                                + (y * stride + row) * width
                                + x * stride
                                + column,
                        );
                    }
                }
            }
            offsets.push(indices);
        }
    }
    offsets
}

fn index_out_of(index: usize, len: usize) -> bool {
    index >= len
}

/// For a `[batch, d₀, …]` value and a permutation of its per-sample dimensions, the flat
/// index into the input of every output element, in output order.
pub fn transpose_indices(input: &[usize], permutation: &[usize]) -> Vec<usize> {
    let Some((&batch, dimensions)) = input.split_first() else {
        return Vec::new();
    };
    let per_sample: usize = dimensions.iter().product();
    // The input's strides, per dimension.
    let mut strides = vec![1usize; dimensions.len()];
    for axis in (0..dimensions.len().saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * dimensions[axis + 1];
    }
    let output: Vec<usize> = permutation.iter().map(|&axis| dimensions[axis]).collect();
    let mut indices = Vec::with_capacity(batch * per_sample);
    let mut position = vec![0usize; output.len()];
    for sample in 0..batch {
        for _ in 0..per_sample {
            let offset: usize = position
                .iter()
                .zip(permutation)
                .map(|(&coordinate, &axis)| coordinate * strides[axis])
                .sum();
            indices.push(sample * per_sample + offset);
            // Advance the output position, last dimension fastest.
            for axis in (0..output.len()).rev() {
                position[axis] += 1;
                if position[axis] < output[axis] {
                    break;
                }
                position[axis] = 0;
            }
        }
    }
    indices
}
