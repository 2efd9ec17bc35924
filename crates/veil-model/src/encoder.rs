//! The one builder of BERT-style encoder graphs, shared by the zoo's random
//! `bert-layer` and the Hugging Face importer: post-LayerNorm layers of multi-head
//! self-attention and a GELU feed-forward, over `[sequence, hidden]` token embeddings,
//! optionally under a client-private attention mask.

use std::collections::BTreeMap;

use crate::Result;
use crate::approximation::{self, GeluForm, Policy, SoftmaxForm};
use crate::ir::{Node, Op};
use crate::plan::{ParameterInfo, ParameterKind};

/// The dimensions of a BERT-style encoder layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderDimensions {
    /// Tokens (the padded sequence length).
    pub sequence: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads (dividing `hidden`).
    pub heads: usize,
    /// The feed-forward layer's inner size.
    pub feed_forward: usize,
}

impl EncoderDimensions {
    /// BERT-base: hidden 768, 12 heads, FFN 3072, at `sequence` tokens.
    pub fn bert_base(sequence: usize) -> Self {
        Self {
            sequence,
            hidden: 768,
            heads: 12,
            feed_forward: 3072,
        }
    }
}

/// Where an encoder's parameters come from (random draws, a model file), asked for by
/// veil's parameter name.
pub(crate) trait ParameterSource {
    /// A linear layer's weight `[inputs, outputs]` and bias `[outputs]`.
    fn linear(&mut self, name: &str, inputs: usize, outputs: usize)
    -> Result<(Vec<f32>, Vec<f32>)>;
    /// A LayerNorm's γ and β, `[features]` each.
    fn layer_norm(&mut self, name: &str, features: usize) -> Result<(Vec<f32>, Vec<f32>)>;
}

/// Builds a graph node by node, collecting its parameters.
pub(crate) struct EncoderBuilder<'a> {
    pub(crate) nodes: Vec<Node>,
    pub(crate) parameters: Vec<ParameterInfo>,
    pub(crate) weights: BTreeMap<String, Vec<f32>>,
    pub(crate) source: &'a mut dyn ParameterSource,
    /// The LayerNorms' ε.
    pub(crate) epsilon: f64,
    /// The forms of the GELUs and softmaxes (DESIGN.md §5).
    pub(crate) policy: Policy,
}

impl<'a> EncoderBuilder<'a> {
    /// A builder whose graph starts with `inputs`.
    pub(crate) fn new(
        inputs: Vec<Node>,
        source: &'a mut dyn ParameterSource,
        epsilon: f64,
        policy: Policy,
    ) -> Self {
        Self {
            nodes: inputs,
            parameters: Vec::new(),
            weights: BTreeMap::new(),
            source,
            epsilon,
            policy,
        }
    }

    /// Appends a node; returns its index.
    pub(crate) fn push(&mut self, name: &str, op: Op, inputs: Vec<usize>) -> usize {
        self.nodes.push(Node {
            name: name.into(),
            op,
            inputs,
        });
        self.nodes.len() - 1
    }

    fn parameter(
        &mut self,
        name: String,
        shape: Vec<usize>,
        kind: ParameterKind,
        values: Vec<f32>,
    ) {
        self.weights.insert(name.clone(), values);
        self.parameters.push(ParameterInfo { name, shape, kind });
    }

    /// A linear layer over the last dimension, with bias.
    pub(crate) fn linear(
        &mut self,
        name: &str,
        from: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<usize> {
        let (weight_values, bias_values) = self.source.linear(name, inputs, outputs)?;
        let (weight, bias) = (format!("{name}.weight"), format!("{name}.bias"));
        self.parameter(
            weight.clone(),
            vec![inputs, outputs],
            ParameterKind::Weight,
            weight_values,
        );
        self.parameter(
            bias.clone(),
            vec![outputs],
            ParameterKind::Bias,
            bias_values,
        );
        let op = Op::Linear {
            weight,
            bias: Some(bias),
            in_features: inputs,
            out_features: outputs,
        };
        Ok(self.push(name, op, vec![from]))
    }

    /// A linear layer over the last dimension with the given weight `[inputs, outputs]`
    /// and no bias.
    pub(crate) fn linear_without_bias(
        &mut self,
        name: &str,
        from: usize,
        (inputs, outputs): (usize, usize),
        weight_values: Vec<f32>,
    ) -> usize {
        let weight = format!("{name}.weight");
        self.parameter(
            weight.clone(),
            vec![inputs, outputs],
            ParameterKind::Weight,
            weight_values,
        );
        let op = Op::Linear {
            weight,
            bias: None,
            in_features: inputs,
            out_features: outputs,
        };
        self.push(name, op, vec![from])
    }

    /// A LayerNorm over the last dimension.
    pub(crate) fn layer_norm(&mut self, name: &str, from: usize, features: usize) -> Result<usize> {
        let (gamma, beta) = self.source.layer_norm(name, features)?;
        let (weight, bias) = (format!("{name}.weight"), format!("{name}.bias"));
        self.parameter(weight.clone(), vec![features], ParameterKind::Weight, gamma);
        self.parameter(bias.clone(), vec![features], ParameterKind::Bias, beta);
        let op = Op::LayerNorm {
            weight,
            bias,
            features,
            epsilon: self.epsilon,
        };
        Ok(self.push(name, op, vec![from]))
    }

    /// One post-LayerNorm encoder layer on node `input` (`[sequence, hidden]`), its
    /// parameters named `{prefix}attention.query` … `{prefix}output.layer_norm`. With a
    /// `mask` node (`[sequence]`, 1 for real tokens), padding keys get `penalty` taken
    /// off their scores. The GELU is `gelu` where given (a distilled student's own
    /// quadratic), else the policy's form. Returns the layer's output node.
    pub(crate) fn layer(
        &mut self,
        prefix: &str,
        input: usize,
        dimensions: EncoderDimensions,
        (mask, gelu): (Option<(usize, u32)>, Option<Op>),
    ) -> Result<usize> {
        let EncoderDimensions {
            sequence,
            hidden,
            heads,
            feed_forward,
        } = dimensions;
        let head = hidden / heads.max(1);
        let name = |part: &str| format!("{prefix}{part}");
        let query = self.linear(&name("attention.query"), input, hidden, hidden)?;
        let key = self.linear(&name("attention.key"), input, hidden, hidden)?;
        let value = self.linear(&name("attention.value"), input, hidden, hidden)?;
        let by_head = |builder: &mut Self, part: &str, from: usize| {
            let split = Op::Reshape {
                shape: vec![sequence, heads, head],
            };
            let split = builder.push(&name(&format!("{part}.heads")), split, vec![from]);
            let permutation = vec![1, 0, 2];
            builder.push(
                &name(&format!("{part}.by_head")),
                Op::Transpose { permutation },
                vec![split],
            )
        };
        let query = by_head(self, "attention.query", query);
        let key = by_head(self, "attention.key", key);
        let value = by_head(self, "attention.value", value);
        let scores = self.push(
            &name("attention.scores"),
            Op::MatMul {
                transpose_right: true,
            },
            vec![query, key],
        );
        let factor = 1.0 / (head as f64).sqrt();
        let mut scaled = self.push(
            &name("attention.scaled"),
            Op::Scale { factor },
            vec![scores],
        );
        let form = self.policy.softmax.unwrap_or(SoftmaxForm::Exact);
        let probabilities = match (form, mask) {
            // 2Quad multiplies by the mask itself: a penalty would be squared.
            (SoftmaxForm::TwoQuad, Some((mask, _))) => self.push(
                &name("attention.probabilities"),
                approximation::softmax_op(form, 64, true),
                vec![scaled, mask],
            ),
            (_, mask) => {
                if let Some((mask, penalty)) = mask {
                    scaled = self.push(
                        &name("attention.masked"),
                        Op::MaskScores { penalty },
                        vec![scaled, mask],
                    );
                }
                self.push(
                    &name("attention.probabilities"),
                    approximation::softmax_op(form, 64, false),
                    vec![scaled],
                )
            }
        };
        let context = self.push(
            &name("attention.context"),
            Op::MatMul {
                transpose_right: false,
            },
            vec![probabilities, value],
        );
        let permutation = vec![1, 0, 2];
        let merged = self.push(
            &name("attention.merged"),
            Op::Transpose { permutation },
            vec![context],
        );
        let flat = Op::Reshape {
            shape: vec![sequence, hidden],
        };
        let merged = self.push(&name("attention.flat"), flat, vec![merged]);
        let output = self.linear(&name("attention.output"), merged, hidden, hidden)?;
        let residual = self.push(&name("attention.residual"), Op::Add, vec![output, input]);
        let attention = self.layer_norm(&name("attention.layer_norm"), residual, hidden)?;
        let inner = self.linear(&name("feed_forward.inner"), attention, hidden, feed_forward)?;
        let gelu = gelu.unwrap_or_else(|| {
            approximation::gelu_op(self.policy.gelu.unwrap_or(GeluForm::Exact), 64)
        });
        let activated = self.push(&name("feed_forward.gelu"), gelu, vec![inner]);
        let outer = self.linear(
            &name("feed_forward.output"),
            activated,
            feed_forward,
            hidden,
        )?;
        let residual = self.push(
            &name("feed_forward.residual"),
            Op::Add,
            vec![outer, attention],
        );
        self.layer_norm(&name("output.layer_norm"), residual, hidden)
    }
}
