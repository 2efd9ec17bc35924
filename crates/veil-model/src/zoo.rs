//! Benchmark models with random weights by DESIGN.md §7's recipe: W ~ N(0, 1/fan_in),
//! biases ~ N(0, 0.02²), inputs ~ N(0, 1), from a fixed seed. The sampler is not
//! cryptographic: it makes public test data only.

use std::collections::BTreeMap;

use crate::Result;
use crate::import::{Architecture, Layer, compile};
use crate::ir::{Graph, Node, Op};
use crate::plan::{OutputPolicy, ParameterInfo, ParameterKind, Plan, PublicPlan};

/// A deterministic Gaussian sampler (SplitMix64 + Box–Muller) for public test data.
#[derive(Clone, Debug)]
pub struct GaussianSampler {
    state: u64,
}

impl GaussianSampler {
    /// A sampler from a seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// One N(0, 1) sample.
    pub fn standard_normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    /// `count` N(0, σ²) samples.
    pub fn normal_vec(&mut self, count: usize, sigma: f32) -> Vec<f32> {
        (0..count).map(|_| self.standard_normal() * sigma).collect()
    }
}

/// An MLP with ReLU between layers, e.g. sizes `[784, 128, 128, 10]` for `mlp`.
pub fn random_mlp(name: &str, sizes: &[usize], seed: u64) -> Result<Plan> {
    let mut sampler = GaussianSampler::new(seed);
    let mut nodes = vec![Node {
        name: "input".into(),
        op: Op::Input {
            shape: vec![sizes[0]],
        },
        inputs: vec![],
    }];
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
    };
    Plan::new(public, weights)
}

/// `cnn6`: conv3→32, conv32→32, maxpool2, conv32→64, conv64→64, maxpool2, linear
/// 4096→128, linear 128→10; 3×3 convolutions with padding 1; ReLU after each convolution
/// and the first linear layer; input 3×32×32. Compiled with the pool-before-ReLU rewrite.
pub fn random_cnn6(seed: u64) -> Result<Plan> {
    let mut sampler = GaussianSampler::new(seed);
    let mut tensors = Vec::new();
    let mut layers = Vec::new();
    let convolution = |name: &str,
                       input: usize,
                       output: usize,
                       sampler: &mut GaussianSampler,
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
