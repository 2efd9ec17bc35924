//! Several named client inputs: shapes and kinds, the flat buffer's order, and clear
//! errors for graphs whose inputs are malformed.

use std::collections::BTreeMap;

use veil_model::ir::{Graph, InputKind, Node, Op, Visibility};
use veil_model::plan::{OutputPolicy, PublicPlan};
use veil_model::{Error, Plan};

fn node(name: &str, op: Op, inputs: Vec<usize>) -> Node {
    Node {
        name: name.into(),
        op,
        inputs,
    }
}

fn public_plan(nodes: Vec<Node>, output: usize) -> PublicPlan {
    PublicPlan {
        name: "inputs".into(),
        fractional_bits: 16,
        approximation: "exact".into(),
        output_policy: OutputPolicy::Logits,
        graph: Graph { nodes, output },
        parameters: vec![],
        input_bound: None,
        text: None,
    }
}

/// Token embeddings and an attention mask, summed: two inputs of one shape.
fn two_inputs() -> PublicPlan {
    public_plan(
        vec![
            Node::input("embeddings", vec![2, 3], InputKind::Real),
            Node::input("attention_mask", vec![2, 3], InputKind::AttentionMask),
            node("sum", Op::Add, vec![0, 1]),
        ],
        2,
    )
}

#[test]
fn inputs_are_listed_in_graph_order_and_the_flat_buffer_follows_it() {
    let public = two_inputs();
    public.validate().expect("a valid graph");
    let slots = public.graph.inputs();
    let names: Vec<&str> = slots.iter().map(|slot| slot.name).collect();
    assert_eq!(names, ["embeddings", "attention_mask"]);
    assert_eq!(slots[1].kind, InputKind::AttentionMask);
    assert!(
        slots
            .iter()
            .all(|slot| slot.visibility == Visibility::ClientPrivate)
    );
    assert_eq!(public.input_len(), 12);
    let batch = 2;
    let values: Vec<f32> = (0..24).map(|v| v as f32).collect();
    let parts = public
        .split_inputs(&values, batch)
        .expect("24 values for a batch of 2");
    assert_eq!(parts[0], &values[..12]);
    assert_eq!(parts[1], &values[12..]);
    let plan = Plan::new(public, BTreeMap::new()).expect("no parameters");
    let sum = veil_model::plain::run_plain(&plan, &values, batch).expect("runs");
    let expected: Vec<f32> = (0..12).map(|v| (v + v + 12) as f32).collect();
    assert_eq!(sum, expected);
}

#[test]
fn a_wrong_buffer_length_names_every_input() {
    let error = two_inputs()
        .split_inputs(&[0f32; 13], 1)
        .expect_err("13 values");
    let message = error.to_string();
    assert!(
        message.contains("embeddings [2, 3]") && message.contains("attention_mask [2, 3]"),
        "{message}"
    );
    assert!(two_inputs().split_inputs::<f32>(&[], 0).is_err(), "batch 0");
}

#[test]
fn malformed_inputs_are_refused_with_the_node() {
    let input = |name: &str| Node::input(name, vec![3], InputKind::Real);
    let cases: Vec<(Vec<Node>, &str)> = vec![
        (
            vec![input("x"), input("x"), node("sum", Op::Add, vec![0, 1])],
            "a second input named \"x\"",
        ),
        (
            vec![
                input("x"),
                node("relu", Op::Relu { bits: 64 }, vec![0]),
                input("y"),
                node("sum", Op::Add, vec![1, 2]),
            ],
            "inputs come first",
        ),
        (
            vec![
                Node::input("ids", vec![3], InputKind::TokenIds { vocabulary: 0 }),
                node("relu", Op::Relu { bits: 64 }, vec![0]),
            ],
            "empty vocabulary",
        ),
        (
            vec![input("x"), node("sum", Op::Add, vec![0])],
            "expects 2 inputs, has 1",
        ),
        (vec![node("flat", Op::Flatten, vec![])], "expects 1 inputs"),
        (
            vec![
                Node::input("huge", vec![1 << 30, 1 << 30], InputKind::Real),
                node("relu", Op::Relu { bits: 64 }, vec![0]),
            ],
            "more than",
        ),
        (
            vec![
                Node::input("x", vec![usize::MAX, 2], InputKind::Real),
                node("relu", Op::Relu { bits: 64 }, vec![0]),
            ],
            "more than",
        ),
        (
            vec![
                Node::input("scalar", vec![], InputKind::Real),
                node("softmax", Op::Softmax { bits: 64 }, vec![0]),
            ],
            "softmax needs rows within each sample",
        ),
    ];
    for (nodes, expected) in cases {
        let output = nodes.len() - 1;
        let error = public_plan(nodes, output).validate().expect_err(expected);
        assert!(matches!(error, Error::InvalidGraph { .. }), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
}

#[test]
fn input_kinds_round_trip_through_the_header() {
    let public = public_plan(
        vec![
            Node::input("ids", vec![4], InputKind::TokenIds { vocabulary: 30522 }),
            Node::input("attention_mask", vec![4], InputKind::AttentionMask),
            node("sum", Op::Add, vec![0, 1]),
        ],
        2,
    );
    let bytes = public.to_bytes(None).expect("encodes");
    let decoded = PublicPlan::from_bytes(&bytes).expect("decodes");
    assert_eq!(decoded, public);
    assert_eq!(
        decoded.graph.inputs()[0].kind,
        InputKind::TokenIds { vocabulary: 30522 }
    );
}
