//! Benchmark models with random weights by DESIGN.md §7's recipe: W ~ N(0, 1/fan_in),
//! biases ~ N(0, 0.02²), inputs ~ N(0, 1), from a fixed seed. The sampler is not
//! cryptographic: it makes public test data only.

use std::collections::BTreeMap;

use crate::Result;
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
