//! Several named client inputs under MPC: each is secret-shared by its kind, and the
//! secure run agrees with the plain one; malformed values of each kind are refused
//! before any material is consumed.

use std::collections::BTreeMap;

use veil_core::sampling::{SplitMix64, test_seed};
use veil_model::Plan;
use veil_model::ir::{Graph, InputKind, Node, Op};
use veil_model::plan::{OutputPolicy, ParameterInfo, ParameterKind, PublicPlan};

use crate::assert_agrees;

/// embeddings [6] + attention_mask [6] → linear 6 → 3 → ReLU: a two-input plan.
fn two_input_plan(sampler: &mut SplitMix64) -> Plan {
    let public = PublicPlan {
        name: "two-inputs".into(),
        fractional_bits: 16,
        approximation: "exact".into(),
        output_policy: OutputPolicy::Logits,
        graph: Graph {
            nodes: vec![
                Node::input("embeddings", vec![6], InputKind::Real),
                Node::input("attention_mask", vec![6], InputKind::AttentionMask),
                Node {
                    name: "sum".into(),
                    op: Op::Add,
                    inputs: vec![0, 1],
                },
                Node {
                    name: "fc".into(),
                    op: Op::Linear {
                        weight: "fc.weight".into(),
                        bias: None,
                        in_features: 6,
                        out_features: 3,
                    },
                    inputs: vec![2],
                },
                Node {
                    name: "relu".into(),
                    op: Op::Relu { bits: 64 },
                    inputs: vec![3],
                },
            ],
            output: 4,
        },
        parameters: vec![ParameterInfo {
            name: "fc.weight".into(),
            shape: vec![6, 3],
            kind: ParameterKind::Weight,
        }],
        input_bound: None,
        text: None,
    };
    let weights = BTreeMap::from([("fc.weight".to_string(), sampler.normal_vec(18, 0.4))]);
    Plan::new(public, weights).expect("a valid plan")
}

#[test]
fn two_client_inputs_agree_with_the_plain_run() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let plan = two_input_plan(&mut sampler);
    let batch = 3;
    let mut input = sampler.normal_vec(6 * batch, 2.0);
    input.extend((0..6 * batch).map(|i| if i % 4 == 3 { 0.0 } else { 1.0 }));
    assert_agrees(&plan, &input, batch);
}

#[test]
fn each_kind_refuses_values_it_cannot_encode() {
    let seed = test_seed();
    let plan = two_input_plan(&mut SplitMix64::new(seed.value()));
    let mut input = vec![0.5f32; 6];
    input.extend([1.0, 0.0, 0.5, 1.0, 1.0, 0.0]);
    let error = veil_exec::encode_inputs(&plan.public, &input, 1).expect_err("a mask of 0.5");
    let message = error.to_string();
    assert!(
        message.contains("attention_mask")
            && message.contains("value 2")
            && message.contains("0 and 1"),
        "{message}"
    );

    let ids = PublicPlan {
        graph: Graph {
            nodes: vec![
                Node::input("ids", vec![4], InputKind::TokenIds { vocabulary: 100 }),
                Node {
                    name: "relu".into(),
                    op: Op::Relu { bits: 64 },
                    inputs: vec![0],
                },
            ],
            output: 1,
        },
        parameters: vec![],
        ..plan.public.clone()
    };
    let encoded = veil_exec::encode_inputs(&ids, &[0.0, 7.0, 99.0, 42.0], 1).expect("valid ids");
    assert_eq!(
        encoded[0].data(),
        &[0, 7, 99, 42],
        "ids are unscaled integers"
    );
    for bad in [100.0, -1.0, 2.5, f32::NAN] {
        let error = veil_exec::encode_inputs(&ids, &[0.0, bad, 1.0, 2.0], 1).expect_err("a bad id");
        assert!(error.to_string().contains("below 100"), "{bad}: {error}");
    }
}

/// A calibrated plan states the input range its comparison widths hold for, and the
/// client refuses a value beyond it before any material is consumed, naming the input
/// and the position but not the value.
#[test]
fn a_calibrated_plan_refuses_inputs_beyond_its_range() {
    let mut plan = veil_model::zoo::random_mlp("bounded", &[4, 3, 2], 5).unwrap();
    let calibration = [0.5f32, -1.0, 0.25, 2.0, -0.5, 1.5, 0.0, -2.0];
    veil_model::passes::calibration::calibrate_comparison_bits(&mut plan, &calibration, 2, 2.0)
        .unwrap();
    let bound = plan.public.input_bound.expect("calibration sets the bound");
    assert!((bound - 4.0).abs() < 1e-6, "{bound}");
    veil_exec::encode_inputs(&plan.public, &[4.0, -4.0, 0.0, 1.0], 1).expect("within range");
    let error = veil_exec::encode_inputs(&plan.public, &[0.0, 1.0, -123.5, 0.0], 1)
        .expect_err("beyond the range")
        .to_string();
    assert!(error.contains("calibrated input range"), "{error}");
    assert!(
        error.contains("position 2") || error.contains('2'),
        "{error}"
    );
    assert!(!error.contains("123"), "the value must not appear: {error}");
}
