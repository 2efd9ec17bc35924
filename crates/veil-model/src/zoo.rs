//! Benchmark models with random weights by DESIGN.md §7's recipe: W ~ N(0, 1/fan_in),
//! biases ~ N(0, 0.02²), inputs ~ N(0, 1), from a fixed seed. The sampler is not
//! cryptographic: it makes public test data only.

use std::collections::BTreeMap;

use crate::Result;
pub use crate::encoder::EncoderDimensions;
use crate::encoder::{EncoderBuilder, ParameterSource};
use crate::import::{Architecture, Layer, compile};
use crate::ir::{DEFAULT_INPUT_NAME, Graph, InputKind, Node, Op};
use crate::plan::{OutputPolicy, ParameterInfo, ParameterKind, Plan, PublicPlan};

use veil_core::sampling::SplitMix64;

/// An MLP with ReLU between layers, e.g. sizes `[784, 128, 128, 10]` for `mlp`.
pub fn random_mlp(name: &str, sizes: &[usize], seed: u64) -> Result<Plan> {
    let mut sampler = SplitMix64::new(seed);
    let mut nodes = vec![Node::input(
        DEFAULT_INPUT_NAME,
        vec![sizes[0]],
        InputKind::Real,
    )];
    let mut parameters = Vec::new();
    let mut weights = BTreeMap::new();
    for (layer, pair) in sizes.windows(2).enumerate() {
        let (fan_in, fan_out) = (pair[0], pair[1]);
        let weight = format!("fc{}.weight", layer + 1);
        let bias = format!("fc{}.bias", layer + 1);
        weights.insert(
            weight.clone(),
            sampler.normal_vec(fan_in * fan_out, 1.0 / (fan_in as f32).sqrt()),
        );
        weights.insert(bias.clone(), sampler.normal_vec(fan_out, 0.02));
        parameters.push(ParameterInfo {
            name: weight.clone(),
            shape: vec![fan_in, fan_out],
            kind: ParameterKind::Weight,
        });
        parameters.push(ParameterInfo {
            name: bias.clone(),
            shape: vec![fan_out],
            kind: ParameterKind::Bias,
        });
        let previous = nodes.len() - 1;
        nodes.push(Node {
            name: format!("fc{}", layer + 1),
            op: Op::Linear {
                weight,
                bias: Some(bias),
                in_features: fan_in,
                out_features: fan_out,
            },
            inputs: vec![previous],
        });
        if layer + 2 < sizes.len() {
            let previous = nodes.len() - 1;
            nodes.push(Node {
                name: format!("relu{}", layer + 1),
                op: Op::Relu { bits: 64 },
                inputs: vec![previous],
            });
        }
    }
    let output = nodes.len() - 1;
    let public = PublicPlan {
        name: name.into(),
        fractional_bits: veil_core::fixed::DEFAULT_FRACTIONAL_BITS,
        approximation: "exact".into(),
        output_policy: OutputPolicy::Logits,
        graph: Graph { nodes, output },
        parameters,
        input_bound: None,
        text: None,
    };
    Plan::new(public, weights)
}

/// `cnn6`: conv3→32, conv32→32, maxpool2, conv32→64, conv64→64, maxpool2, linear
/// 4096→128, linear 128→10; 3×3 convolutions with padding 1; ReLU after each convolution
/// and the first linear layer; input 3×32×32. Compiled with the pool-before-ReLU rewrite.
pub fn random_cnn6(seed: u64) -> Result<Plan> {
    let mut sampler = SplitMix64::new(seed);
    let mut tensors = Vec::new();
    let mut layers = Vec::new();
    let convolution = |name: &str,
                       input: usize,
                       output: usize,
                       sampler: &mut SplitMix64,
                       tensors: &mut Vec<(String, Vec<usize>, Vec<f32>)>| {
        let fan_in = input * 9;
        tensors.push((
            format!("{name}.weight"),
            vec![output, input, 3, 3],
            sampler.normal_vec(output * fan_in, 1.0 / (fan_in as f32).sqrt()),
        ));
        tensors.push((
            format!("{name}.bias"),
            vec![output],
            sampler.normal_vec(output, 0.02),
        ));
        Layer::Conv2d {
            name: None,
            weight: format!("{name}.weight"),
            bias: Some(format!("{name}.bias")),
            stride: Some(1),
            padding: Some(1),
        }
    };
    let relu = || Layer::Relu {
        name: None,
        bits: None,
        approx: None,
        coefficients: None,
    };
    let pool = || Layer::MaxPool2d {
        name: None,
        kernel: 2,
        stride: Some(2),
        bits: None,
    };
    layers.push(convolution("conv1", 3, 32, &mut sampler, &mut tensors));
    layers.push(relu());
    layers.push(convolution("conv2", 32, 32, &mut sampler, &mut tensors));
    layers.push(relu());
    layers.push(pool());
    layers.push(convolution("conv3", 32, 64, &mut sampler, &mut tensors));
    layers.push(relu());
    layers.push(convolution("conv4", 64, 64, &mut sampler, &mut tensors));
    layers.push(relu());
    layers.push(pool());
    layers.push(Layer::Flatten { name: None });
    for (name, input, output) in [("fc1", 4096, 128), ("fc2", 128, 10)] {
        tensors.push((
            format!("{name}.weight"),
            vec![output, input],
            sampler.normal_vec(output * input, 1.0 / (input as f32).sqrt()),
        ));
        tensors.push((
            format!("{name}.bias"),
            vec![output],
            sampler.normal_vec(output, 0.02),
        ));
        layers.push(Layer::Linear {
            name: None,
            weight: format!("{name}.weight"),
            bias: Some(format!("{name}.bias")),
        });
        if name == "fc1" {
            layers.push(relu());
        }
    }
    let architecture = Architecture {
        name: "cnn6".into(),
        input: vec![3, 32, 32],
        fractional_bits: None,
        output: None,
        layers,
    };
    compile(
        &architecture,
        &crate::import::write_safetensors(&tensors)?,
        "exact",
    )
}

/// The architecture of [`every_op_cnn`].
const EVERY_OP_CNN_ARCHITECTURE: &str = r#"{"name": "every-op-cnn", "input": [2, 8, 8], "layers": [
    {"op": "conv2d", "name": "c1", "weight": "c1.weight", "bias": "c1.bias", "padding": 1},
    {"op": "batch_norm", "weight": "bn.weight", "bias": "bn.bias", "running_mean": "bn.mean", "running_var": "bn.var"},
    {"op": "relu"},
    {"op": "max_pool2d", "kernel": 2},
    {"op": "conv2d", "weight": "c2.weight", "stride": 2, "padding": 1},
    {"op": "relu"},
    {"op": "avg_pool2d", "kernel": 2},
    {"op": "flatten"},
    {"op": "linear", "weight": "fc.weight", "bias": "fc.bias"}]}"#;

/// A small test CNN with every CNN op of the IR and both CNN passes: a padded
/// convolution with a batch norm to fold, a ReLU before a max pool (to be moved after
/// it), a strided convolution without bias, an average pool, flatten and linear; input
/// 2×8×8, 3 outputs. Random weights from `seed`.
pub fn every_op_cnn(seed: u64) -> Result<Plan> {
    let mut sampler = SplitMix64::new(seed);
    let mut normal = |count: usize, sigma: f32| sampler.normal_vec(count, sigma);
    let tensors = vec![
        (
            "c1.weight".to_string(),
            vec![4, 2, 3, 3],
            normal(72, 1.0 / 18f32.sqrt()),
        ),
        ("c1.bias".to_string(), vec![4], normal(4, 0.02)),
        (
            "bn.weight".to_string(),
            vec![4],
            normal(4, 0.1).iter().map(|g| 1.0 + g).collect(),
        ),
        ("bn.bias".to_string(), vec![4], normal(4, 0.02)),
        ("bn.mean".to_string(), vec![4], normal(4, 0.1)),
        (
            "bn.var".to_string(),
            vec![4],
            normal(4, 0.1).iter().map(|v| 1.0 + v.abs()).collect(),
        ),
        (
            "c2.weight".to_string(),
            vec![6, 4, 3, 3],
            normal(216, 1.0 / 6.0),
        ),
        (
            "fc.weight".to_string(),
            vec![3, 6],
            normal(18, 1.0 / 6f32.sqrt()),
        ),
        ("fc.bias".to_string(), vec![3], normal(3, 0.02)),
    ];
    compile(
        &Architecture::from_json(EVERY_OP_CNN_ARCHITECTURE)?,
        &crate::import::write_safetensors(&tensors)?,
        "exact",
    )
}

/// A small residual MLP for tests: input 3×4, flatten, 12 → 16 → ReLU → 16 (+ the
/// first ReLU's output) → ReLU → 5. Random weights from `seed`.
pub fn residual_mlp(seed: u64) -> Result<Plan> {
    let mut sampler = SplitMix64::new(seed);
    let mut tensors = Vec::new();
    for (name, outputs, inputs) in [("fc1", 16, 12), ("fc2", 16, 16), ("fc3", 5, 16)] {
        let weight = sampler.normal_vec(outputs * inputs, 1.0 / (inputs as f32).sqrt());
        tensors.push((format!("{name}.weight"), vec![outputs, inputs], weight));
        tensors.push((
            format!("{name}.bias"),
            vec![outputs],
            sampler.normal_vec(outputs, 0.02),
        ));
    }
    let architecture = Architecture::from_json(
        r#"{"name": "residual", "input": [3, 4], "layers": [
            {"op": "flatten"},
            {"op": "linear", "name": "fc1", "weight": "fc1.weight", "bias": "fc1.bias"},
            {"op": "relu", "name": "h1"},
            {"op": "linear", "weight": "fc2.weight", "bias": "fc2.bias"},
            {"op": "add", "with": "h1"},
            {"op": "relu"},
            {"op": "linear", "weight": "fc3.weight", "bias": "fc3.bias"}]}"#,
    )?;
    compile(
        &architecture,
        &crate::import::write_safetensors(&tensors)?,
        "exact",
    )
}

/// `gelu`: one GELU over `len` values (input N(0, 1) in the benchmarks), to measure the
/// op's cost per element under MPC.
pub fn gelu_layer(len: usize) -> Result<Plan> {
    let gelu = Layer::Gelu {
        name: None,
        bits: None,
        approx: None,
    };
    single_layer("gelu", vec![len], gelu, &[])
}

/// `softmax`: one softmax over rows of `columns` values, `rows` of them (input N(0, 1)
/// in the benchmarks), to measure the op's cost per element under MPC.
pub fn softmax_layer(rows: usize, columns: usize) -> Result<Plan> {
    let softmax = Layer::Softmax {
        name: None,
        bits: None,
        approx: None,
    };
    single_layer("softmax", vec![rows, columns], softmax, &[])
}

/// A plan of one layer on an input of `input`'s shape, with `tensors` as its weights.
fn single_layer(
    name: &str,
    input: Vec<usize>,
    layer: Layer,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
) -> Result<Plan> {
    let architecture = Architecture {
        name: name.into(),
        input,
        fractional_bits: None,
        output: None,
        layers: vec![layer],
    };
    compile(
        &architecture,
        &crate::import::write_safetensors(tensors)?,
        "exact",
    )
}

/// `layer_norm`: one layer normalisation over rows of `features` values, `rows` of them,
/// with γ = 1 + 0.1·N(0, 1) and β ~ N(0, 0.02²) from `seed` (DESIGN's recipe), to
/// measure the op's cost under MPC.
pub fn layer_norm_layer(rows: usize, features: usize, seed: u64) -> Result<Plan> {
    let mut sampler = SplitMix64::new(seed);
    let gamma: Vec<f32> = sampler
        .normal_vec(features, 0.1)
        .iter()
        .map(|g| 1.0 + g)
        .collect();
    let tensors = vec![
        ("ln.weight".to_string(), vec![features], gamma),
        (
            "ln.bias".to_string(),
            vec![features],
            sampler.normal_vec(features, 0.02),
        ),
    ];
    let layer_norm = Layer::LayerNorm {
        name: None,
        weight: "ln.weight".into(),
        bias: "ln.bias".into(),
        eps: Some(1e-12),
    };
    single_layer("layer-norm", vec![rows, features], layer_norm, &tensors)
}

/// `bert-layer`: one post-LayerNorm BERT encoder layer on token embeddings
/// `[sequence, hidden]` (multi-head self-attention, residual, LayerNorm, GELU
/// feed-forward, residual, LayerNorm), with DESIGN's random weights from `seed`:
/// W ~ N(0, 1/fan_in), biases ~ N(0, 0.02²), γ = 1 + 0.1·N(0, 1), β ~ N(0, 0.02²).
pub fn random_encoder_layer(dimensions: EncoderDimensions, seed: u64) -> Result<Plan> {
    random_encoder_layer_with(dimensions, seed, Default::default())
}

/// [`random_encoder_layer`] under an approximation policy (`veil bench --approx`).
pub fn random_encoder_layer_with(
    dimensions: EncoderDimensions,
    seed: u64,
    policy: crate::approximation::Policy,
) -> Result<Plan> {
    let EncoderDimensions {
        sequence, hidden, ..
    } = dimensions;
    let mut source = RandomParameters(SplitMix64::new(seed));
    let input = Node::input("embeddings", vec![sequence, hidden], InputKind::Real);
    let mut layer = EncoderBuilder::new(vec![input], &mut source, 1e-12, policy);
    let output = layer.layer("", 0, dimensions, (None, None))?;
    let public = PublicPlan {
        name: "bert-layer".into(),
        fractional_bits: veil_core::fixed::DEFAULT_FRACTIONAL_BITS,
        approximation: crate::import::architecture::describe_forms(&layer.nodes),
        output_policy: OutputPolicy::Logits,
        graph: Graph {
            nodes: layer.nodes,
            output,
        },
        parameters: layer.parameters,
        input_bound: None,
        text: None,
    };
    Plan::new(public, layer.weights)
}

/// DESIGN's random encoder parameters: W ~ N(0, 1/fan_in), biases ~ N(0, 0.02²),
/// γ = 1 + 0.1·N(0, 1), β ~ N(0, 0.02²), drawn in the order the builder asks.
struct RandomParameters(SplitMix64);

impl ParameterSource for RandomParameters {
    fn linear(&mut self, _: &str, inputs: usize, outputs: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let weight = self
            .0
            .normal_vec(inputs * outputs, 1.0 / (inputs as f32).sqrt());
        Ok((weight, self.0.normal_vec(outputs, 0.02)))
    }

    fn layer_norm(&mut self, _: &str, features: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let gamma = self
            .0
            .normal_vec(features, 0.1)
            .iter()
            .map(|g| 1.0 + g)
            .collect();
        Ok((gamma, self.0.normal_vec(features, 0.02)))
    }
}
