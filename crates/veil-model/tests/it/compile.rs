//! The architecture importer and the compile passes: batch-norm folding, pool before
//! ReLU, calibration, and clear errors for malformed architectures.

use veil_core::sampling::{SplitMix64, test_seed};
use veil_model::Error;
use veil_model::import::{Architecture, compile, write_safetensors};
use veil_model::ir::Op;
use veil_model::passes::calibration::calibrate_comparison_bits;
use veil_model::plain::run_plain;

/// The op names of a plan, in order.
fn op_names(plan: &veil_model::Plan) -> Vec<&'static str> {
    plan.public
        .graph
        .nodes
        .iter()
        .map(|node| node.op.name())
        .collect()
}

#[test]
fn batch_norm_is_folded_and_relu_moves_after_the_max_pool() {
    let seed = test_seed();
    let plan = veil_model::zoo::every_op_cnn(seed.value()).expect("the test CNN compiles");
    assert_eq!(
        op_names(&plan),
        [
            "input",
            "conv2d",
            "max_pool2d",
            "relu",
            "conv2d",
            "relu",
            "avg_pool2d",
            "flatten",
            "linear"
        ]
    );
    // The folded layer keeps its bias name; the bias-free conv gets none.
    let names: Vec<&str> = plan
        .public
        .parameters
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(
        names,
        ["c1.weight", "c1.bias", "c2.weight", "fc.weight", "fc.bias"]
    );
}

/// A linear layer followed by a batch norm computes γ·(xWᵀ + b − μ)/√(σ² + ε) + β.
#[test]
fn a_folded_batch_norm_computes_the_normalisation() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let (inputs, outputs) = (5, 3);
    let weight = sampler.normal_vec(outputs * inputs, 0.5);
    let bias = sampler.normal_vec(outputs, 0.5);
    let gamma: Vec<f32> = sampler
        .normal_vec(outputs, 0.2)
        .iter()
        .map(|g| 1.0 + g)
        .collect();
    let beta = sampler.normal_vec(outputs, 0.3);
    let mean = sampler.normal_vec(outputs, 0.3);
    let variance: Vec<f32> = sampler
        .normal_vec(outputs, 0.3)
        .iter()
        .map(|v| 0.5 + v.abs())
        .collect();
    let tensors = vec![
        (
            "fc.weight".to_string(),
            vec![outputs, inputs],
            weight.clone(),
        ),
        ("fc.bias".to_string(), vec![outputs], bias.clone()),
        ("bn.weight".to_string(), vec![outputs], gamma.clone()),
        ("bn.bias".to_string(), vec![outputs], beta.clone()),
        ("bn.mean".to_string(), vec![outputs], mean.clone()),
        ("bn.var".to_string(), vec![outputs], variance.clone()),
    ];
    let architecture = Architecture::from_json(
        r#"{"name": "bn", "input": [5], "layers": [
            {"op": "linear", "weight": "fc.weight", "bias": "fc.bias"},
            {"op": "batch_norm", "weight": "bn.weight", "bias": "bn.bias", "running_mean": "bn.mean", "running_var": "bn.var", "eps": 0.001}]}"#,
    )
    .expect("parses");
    let plan = compile(
        &architecture,
        &write_safetensors(&tensors).expect("tensors"),
        "exact",
    )
    .expect("compiles");
    assert_eq!(op_names(&plan), ["input", "linear"]);
    let x = sampler.normal_vec(inputs, 1.0);
    let found = run_plain(&plan, &x, 1).expect("runs");
    for o in 0..outputs {
        let linear: f64 = (0..inputs)
            .map(|i| f64::from(weight[o * inputs + i]) * f64::from(x[i]))
            .sum::<f64>()
            + f64::from(bias[o]);
        let expected = f64::from(gamma[o]) * (linear - f64::from(mean[o]))
            / (f64::from(variance[o]) + 0.001).sqrt()
            + f64::from(beta[o]);
        assert!(
            (expected - f64::from(found[o])).abs() < 1e-5,
            "output {o}: {expected} vs {}",
            found[o]
        );
    }
}

#[test]
fn malformed_architectures_are_clear_errors() {
    let tensors = write_safetensors(&[
        ("w".to_string(), vec![2, 4], vec![0.5; 8]),
        ("g".to_string(), vec![2], vec![1.0; 2]),
    ])
    .expect("tensors");
    let cases = [
        (
            r#"{"name": "a", "input": [4], "layers": [{"op": "batch_norm", "weight": "g", "bias": "g", "running_mean": "g", "running_var": "g"}]}"#,
            "batch_norm must follow a conv2d or linear layer",
        ),
        (
            r#"{"name": "a", "input": [2, 2], "layers": [{"op": "linear", "weight": "w"}]}"#,
            "flatten first?",
        ),
        (
            r#"{"name": "a", "input": [4], "layers": [{"op": "linear", "weight": "missing"}]}"#,
            "\"missing\" is missing",
        ),
        (
            r#"{"name": "a", "input": [4], "layers": [{"op": "linear", "weight": "w"}, {"op": "add", "with": "nowhere"}]}"#,
            "nowhere",
        ),
    ];
    for (json, expected) in cases {
        let architecture = Architecture::from_json(json).expect("parses");
        let error = compile(&architecture, &tensors, "exact").expect_err(json);
        assert!(error.to_string().contains(expected), "{json}: {error}");
    }
    let unknown = Architecture::from_json(
        r#"{"name": "a", "input": [4], "layers": [{"op": "linear", "weight": "w", "colour": 1}]}"#,
    )
    .expect_err("an unknown field");
    assert!(
        matches!(unknown, Error::InvalidArchitecture { .. }),
        "{unknown}"
    );
    let architecture = Architecture::from_json(
        r#"{"name": "a", "input": [4], "layers": [{"op": "linear", "weight": "w"}]}"#,
    )
    .expect("parses");
    let policy = compile(&architecture, &tensors, "quad").expect_err("no such policy");
    assert!(policy.to_string().contains("quad"), "{policy}");
    assert!(compile(&architecture, b"not safetensors", "exact").is_err());
}

/// Calibration gives each ReLU enough bits for 8× the largest magnitude its input
/// reached (at the fixed-point scale) plus the sign, and a max pool twice that.
#[test]
fn calibration_sets_each_comparison_from_the_ranges_reached() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let mut plan = veil_model::zoo::every_op_cnn(seed.value()).expect("the test CNN compiles");
    let batch = 4;
    let input = sampler.normal_vec(plan.public.input_len() * batch, 1.0);
    let values = veil_model::plain::run_plain_all(&plan, &input, batch).expect("runs");
    let changes = calibrate_comparison_bits(&mut plan, &input, batch, 8.0).expect("calibrates");
    let scale = f64::from(1u32 << plan.public.fractional_bits);
    let mut checked = 0;
    for (index, bits) in &changes {
        let node = &plan.public.graph.nodes[*index];
        let factor = match node.op {
            Op::Relu { bits: set } | Op::MaxPool2d { bits: set, .. } => {
                assert_eq!(set, *bits);
                if matches!(node.op, Op::Relu { .. }) {
                    1.0
                } else {
                    2.0
                }
            }
            _ => panic!("node {index} has no comparison"),
        };
        let largest = values[node.inputs[0]]
            .iter()
            .fold(0f64, |m, v| m.max(f64::from(*v).abs()));
        let magnitude = (largest * factor * 8.0 * scale).max(1.0);
        assert!(
            2f64.powi(*bits as i32 - 1) >= magnitude,
            "node {index}: {bits} bits"
        );
        assert!(
            2f64.powi(*bits as i32 - 2) < magnitude,
            "node {index}: {bits} bits is not the fewest"
        );
        checked += 1;
    }
    assert_eq!(checked, 3, "two ReLUs and a max pool are calibrated");
}
