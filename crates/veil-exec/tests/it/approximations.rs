//! The approximation policies (DESIGN.md §5) under every executor: each form's plain
//! result, its fixed-point simulation and the secure run agree within the documented
//! bound, on random inputs and adversarial ones (zeros, ±1000, all negatives); the
//! policy resolves per layer and the forms compile to the ops they name.

use std::collections::BTreeMap;

use veil_core::sampling::{SplitMix64, test_seed};
use veil_model::Plan;
use veil_model::ir::{Graph, InputKind, Node, Op};
use veil_model::plan::{OutputPolicy, PublicPlan};

use crate::{adversarial_inputs, assert_agrees};

/// A plan of `layers` (architecture JSON) on a per-sample `input` shape under `policy`,
/// with `tensors` as its weights.
fn policy_plan(
    layers: &str,
    input: &[usize],
    policy: &str,
    tensors: &[(&str, Vec<usize>, Vec<f32>)],
) -> Plan {
    let architecture = veil_model::import::Architecture::from_json(&format!(
        r#"{{"name": "policy", "input": {input:?}, "layers": [{layers}]}}"#
    ))
    .expect("the architecture parses");
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = tensors
        .iter()
        .map(|(name, shape, values)| (name.to_string(), shape.clone(), values.clone()))
        .collect();
    let weights = veil_model::import::write_safetensors(&tensors).expect("the tensors");
    veil_model::import::compile(&architecture, &weights, policy).expect("the plan compiles")
}

fn ops(plan: &Plan) -> Vec<&'static str> {
    plan.public
        .graph
        .nodes
        .iter()
        .map(|node| node.op.name())
        .collect()
}

/// The bound must be small where the inputs are moderate, so that agreeing within it
/// says something.
fn assert_tight(plan: &Plan, input: &[f32], limit: f64) {
    let bound = veil_exec::error_bound(plan, input).expect("the bound");
    assert!(bound <= limit, "bound {bound} above {limit}");
}

#[test]
fn quad_relus_and_gelus_agree_in_every_form() {
    let mut sampler = SplitMix64::new(test_seed().value());
    let len = 64;
    let cases = [
        // Faster CryptoNets' default (the two-round vertex form).
        (r#"{"op": "relu"}"#, "relu=quad"),
        // Learned coefficients with a = −1/4 (vertex form, negated square).
        (
            r#"{"op": "relu", "approx": "quad", "coefficients": [-0.25, 0.75, 0.1]}"#,
            "exact",
        ),
        // Coefficients with no power-of-two a (the three-round standard form).
        (
            r#"{"op": "relu", "approx": "quad", "coefficients": [0.3, 0.5, -0.2]}"#,
            "exact",
        ),
        // MPCFormer's GELU replacement, and GELU as a ReLU.
        (r#"{"op": "gelu"}"#, "gelu=quad"),
        (r#"{"op": "gelu"}"#, "gelu=relu"),
    ];
    for (layer, policy) in cases {
        let plan = policy_plan(layer, &[len], policy, &[]);
        let expected = if policy == "gelu=relu" {
            "relu"
        } else {
            "quadratic"
        };
        assert_eq!(ops(&plan), ["input", expected], "{layer} under {policy}");
        for input in adversarial_inputs(len * 2, 2.0, &mut sampler) {
            assert_agrees(&plan, &input, 2);
        }
        assert_tight(&plan, &sampler.normal_vec(len, 2.0), 1e-3);
    }
}

#[test]
fn the_2quad_and_2relu_softmaxes_agree() {
    let mut sampler = SplitMix64::new(test_seed().value());
    let (rows, columns) = (4, 32);
    for policy in ["softmax=2quad", "softmax=2relu"] {
        let plan = policy_plan(r#"{"op": "softmax"}"#, &[rows, columns], policy, &[]);
        let expected = if policy == "softmax=2quad" {
            "quad_softmax"
        } else {
            "relu_softmax"
        };
        assert_eq!(ops(&plan), ["input", expected]);
        let mut inputs = adversarial_inputs(rows * columns * 2, 2.0, &mut sampler);
        // A row of equal scores, and one where a single score dominates.
        let mut peaked = vec![-3.0f32; rows * columns * 2];
        peaked[5] = 9.0;
        inputs.push(peaked);
        for input in &inputs {
            assert_agrees(&plan, input, 2);
        }
        assert_tight(&plan, &sampler.normal_vec(rows * columns, 2.0), 2e-3);
    }
}

/// 2Quad under an attention mask: padding keys get exactly 0, and the rest agree.
#[test]
fn the_masked_2quad_softmax_zeroes_padding_keys() {
    let (heads, keys) = (2, 8);
    let public = PublicPlan {
        name: "masked-2quad".into(),
        fractional_bits: 16,
        approximation: "softmax=2quad".into(),
        output_policy: OutputPolicy::Logits,
        graph: Graph {
            nodes: vec![
                Node::input("scores", vec![heads, keys, keys], InputKind::Real),
                Node::input("attention_mask", vec![keys], InputKind::AttentionMask),
                Node {
                    name: "probabilities".into(),
                    op: Op::QuadSoftmax {
                        shift: 5.0,
                        masked: true,
                        bits: 64,
                    },
                    inputs: vec![0, 1],
                },
            ],
            output: 2,
        },
        parameters: vec![],
        input_bound: None,
        text: None,
    };
    let plan = Plan::new(public, BTreeMap::new()).expect("a valid plan");
    let mut sampler = SplitMix64::new(test_seed().value());
    let batch = 2;
    let mut input = sampler.normal_vec(batch * heads * keys * keys, 2.0);
    // The first sample has 5 real tokens, the second 8.
    for sample in 0..batch {
        let real = if sample == 0 { 5 } else { keys };
        input.extend((0..keys).map(|key| if key < real { 1.0 } else { 0.0 }));
    }
    assert_agrees(&plan, &input, batch);
    let secure = crate::secure(&plan, &input, batch);
    for (position, value) in secure[..heads * keys * keys].iter().enumerate() {
        if position % keys >= 5 {
            assert!(
                value.abs() <= 2.0 / 65536.0,
                "a padding key's weight {value}"
            );
        }
    }
}

/// A ReLU before a max pool is moved after it (they commute); a quadratic is not.
#[test]
fn only_exact_relus_move_past_a_max_pool() {
    let layers = r#"{"op": "relu"}, {"op": "max_pool2d", "kernel": 2}"#;
    let exact = policy_plan(layers, &[1, 4, 4], "exact", &[]);
    assert_eq!(ops(&exact), ["input", "max_pool2d", "relu"]);
    let quad = policy_plan(layers, &[1, 4, 4], "relu=quad", &[]);
    assert_eq!(ops(&quad), ["input", "quadratic", "max_pool2d"]);
    assert_eq!(quad.public.approximation, "quadratic");
}

/// A small CNN with batch normalisation in front of each quadratic, as `veil distill`
/// trains its students: secure, simulated and plain agree.
#[test]
fn a_quad_cnn_agrees_within_the_bound() {
    let mut sampler = SplitMix64::new(test_seed().value());
    let layers = r#"
        {"op": "conv2d", "weight": "c1.weight", "bias": "c1.bias", "padding": 1},
        {"op": "batch_norm", "weight": "n1.weight", "bias": "n1.bias", "running_mean": "n1.mean", "running_var": "n1.var"},
        {"op": "relu", "approx": "quad", "coefficients": [0.125, 0.4, 0.1]},
        {"op": "avg_pool2d", "kernel": 2},
        {"op": "flatten"},
        {"op": "linear", "weight": "fc.weight", "bias": "fc.bias"}"#;
    let tensors = [
        ("c1.weight", vec![4, 1, 3, 3], sampler.normal_vec(36, 0.3)),
        ("c1.bias", vec![4], sampler.normal_vec(4, 0.1)),
        ("n1.weight", vec![4], vec![1.0, 0.8, 1.2, 0.9]),
        ("n1.bias", vec![4], vec![0.1, -0.2, 0.0, 0.3]),
        ("n1.mean", vec![4], vec![0.05, -0.1, 0.0, 0.2]),
        ("n1.var", vec![4], vec![0.5, 1.0, 2.0, 0.7]),
        ("fc.weight", vec![3, 64], sampler.normal_vec(192, 0.2)),
        ("fc.bias", vec![3], vec![0.0, 0.1, -0.1]),
    ];
    let plan = policy_plan(layers, &[1, 8, 8], "exact", &tensors);
    assert!(ops(&plan).contains(&"quadratic"));
    for input in adversarial_inputs(64 * 2, 1.0, &mut sampler)
        .into_iter()
        .take(2)
    {
        assert_agrees(&plan, &input, 2);
    }
    // Under `relu=exact` the same student is a ReLU network again.
    let exact = policy_plan(layers, &[1, 8, 8], "relu=exact", &tensors);
    assert!(ops(&exact).contains(&"relu") && !ops(&exact).contains(&"quadratic"));
}
