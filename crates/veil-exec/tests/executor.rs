//! The executor over every protocol: plain f32, fixed-point simulation and the secure
//! `dealer` setting (two parties on in-memory channels) agree within the documented
//! bound, on random weights and adversarial inputs; bad input is a clear error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread;

use veil_core::prg::{Prg, Seed};
use veil_model::Plan;
use veil_model::import::{Architecture, compile, write_safetensors};
use veil_model::plain::run_plain;
use veil_mpc::{ClientParameters, MaterialGenerator, Party, PartyParameters, SessionLedger};
use veil_net::memory_pair;

fn gaussian(prg: &mut Prg) -> f32 {
    let u1 = ((prg.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let u2 = (prg.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// A residual MLP: 12 → 16 → relu → 16 (+ skip) → relu → 5, random weights.
fn residual_plan(prg: &mut Prg) -> Plan {
    let mut tensors = Vec::new();
    for (name, out, inp) in [("fc1", 16, 12), ("fc2", 16, 16), ("fc3", 5, 16)] {
        let scale = 1.0 / (inp as f32).sqrt();
        tensors.push((
            format!("{name}.weight"),
            vec![out, inp],
            (0..out * inp).map(|_| gaussian(prg) * scale).collect(),
        ));
        tensors.push((
            format!("{name}.bias"),
            vec![out],
            (0..out).map(|_| gaussian(prg) * 0.02).collect(),
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
    )
    .unwrap();
    compile(
        &architecture,
        &write_safetensors(&tensors).unwrap(),
        "exact",
    )
    .unwrap()
}

fn secure(plan: &Plan, input: &[f32], batch: usize) -> Vec<f32> {
    let weight_seed = Seed::random().unwrap();
    let public = plan.public.clone();
    let fixed_point = public.fixed_point().unwrap();
    let dealer = Arc::new(veil_exec::dealer_parameters(&public, &weight_seed, 3));
    let mut generator = MaterialGenerator::new(fixed_point, dealer).unwrap();
    assert!(
        veil_exec::run(&mut generator, &public, batch, None)
            .unwrap()
            .is_none()
    );
    let (server_material, client_material) = generator.finish();
    let server_parameters = veil_exec::server_parameters(plan, &weight_seed, 3).unwrap();
    let client_parameters = ClientParameters::new(server_parameters.masked_weights());
    let (server_channel, client_channel) = memory_pair();
    let server_public = public.clone();
    let server = thread::spawn(move || {
        let ledger = SessionLedger::default();
        let mut party = Party::new(
            server_channel,
            fixed_point,
            server_material,
            PartyParameters::Server(Arc::new(server_parameters)),
            &ledger,
        )
        .unwrap();
        assert!(
            veil_exec::run(&mut party, &server_public, batch, None)
                .unwrap()
                .is_none()
        );
        party.finish().unwrap();
    });
    let encoded = veil_exec::encode_input(&public, input, batch).unwrap();
    let ledger = SessionLedger::default();
    let mut party = Party::new(
        client_channel,
        fixed_point,
        client_material,
        PartyParameters::Client(Arc::new(client_parameters)),
        &ledger,
    )
    .unwrap();
    let output = veil_exec::run(&mut party, &public, batch, Some(&encoded))
        .unwrap()
        .unwrap();
    party.finish().unwrap();
    server.join().unwrap();
    veil_exec::decode_output(&public, &output).unwrap()
}

#[test]
fn secure_simulated_and_plain_agree_within_the_bound() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let plan = residual_plan(&mut prg);
    let batch = 4;
    let mut inputs: Vec<Vec<f32>> = vec![
        (0..12 * batch).map(|_| gaussian(&mut prg)).collect(),
        vec![0.0; 12 * batch],
        (0..12 * batch)
            .map(|i| if i % 2 == 0 { -1000.0 } else { 1000.0 })
            .collect(),
    ];
    inputs.push(
        (0..12 * batch)
            .map(|_| -gaussian(&mut prg).abs() * 50.0)
            .collect(),
    );
    for input in inputs {
        let plain = run_plain(&plan, &input, batch).unwrap();
        let bound = veil_exec::error_bound(&plan, &input).unwrap();
        let encoded = veil_exec::encode_input(&plan.public, &input, batch).unwrap();
        let mut simulation = veil_exec::cleartext(&plan).unwrap();
        let simulated = veil_exec::run(&mut simulation, &plan.public, batch, Some(&encoded))
            .unwrap()
            .unwrap();
        let simulated = veil_exec::decode_output(&plan.public, &simulated).unwrap();
        let secure = secure(&plan, &input, batch);
        for ((p, s), c) in plain.iter().zip(&secure).zip(&simulated) {
            assert!(
                (f64::from(*p) - f64::from(*s)).abs() <= bound,
                "secure {s} plain {p} bound {bound}"
            );
            assert!(
                (f64::from(*p) - f64::from(*c)).abs() <= bound,
                "simulated {c} plain {p} bound {bound}"
            );
        }
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let plan = residual_plan(&mut prg);
    let wrong_shape = veil_exec::encode_input(&plan.public, &[0.0; 11], 1).unwrap_err();
    assert!(
        wrong_shape.to_string().contains("expects 12"),
        "{wrong_shape}"
    );
    let mut huge = vec![0.0f32; 12];
    huge[3] = 1e30;
    let out_of_range = veil_exec::encode_input(&plan.public, &huge, 1).unwrap_err();
    assert!(
        out_of_range
            .to_string()
            .contains("outside the representable range"),
        "{out_of_range}"
    );
    let mut not_a_number = vec![0.0f32; 12];
    not_a_number[0] = f32::NAN;
    assert!(veil_exec::encode_input(&plan.public, &not_a_number, 1).is_err());
}

#[test]
fn plans_round_trip_and_damage_is_detected() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let plan = residual_plan(&mut prg);
    let bytes = plan.to_bytes().unwrap();
    assert_eq!(Plan::from_bytes(&bytes).unwrap(), plan);
    let public = plan.public.to_bytes().unwrap();
    assert_eq!(
        veil_model::PublicPlan::from_bytes(&public).unwrap(),
        plan.public
    );
    assert!(
        Plan::from_bytes(&public).is_err(),
        "a public plan has no weights"
    );
    for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
        let error = Plan::from_bytes(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(
                error,
                veil_model::Error::Truncated { .. }
                    | veil_model::Error::ChecksumMismatch
                    | veil_model::Error::BadMagic
            ),
            "cut {cut}: {error}"
        );
    }
    for position in [
        8,
        13,
        40,
        bytes.len() / 2,
        bytes.len() - 40,
        bytes.len() - 1,
    ] {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x10;
        assert!(Plan::from_bytes(&damaged).is_err(), "flip at {position}");
    }
    let weights: BTreeMap<String, Vec<f32>> = BTreeMap::new();
    assert!(Plan::new(plan.public.clone(), weights).is_err());
}

/// A small CNN with every CNN op: conv (padding), ReLU before a max pool (rewritten to
/// pool first), a folded batch norm, a strided conv, an average pool, flatten, linear.
fn cnn_plan(prg: &mut Prg) -> Plan {
    let mut tensors = Vec::new();
    let mut normal = |count: usize, scale: f32| -> Vec<f32> {
        (0..count).map(|_| gaussian(prg) * scale).collect()
    };
    tensors.push((
        "c1.weight".to_string(),
        vec![4, 2, 3, 3],
        normal(72, 1.0 / 18f32.sqrt()),
    ));
    tensors.push(("c1.bias".to_string(), vec![4], normal(4, 0.02)));
    tensors.push((
        "bn.weight".to_string(),
        vec![4],
        normal(4, 0.1).iter().map(|g| 1.0 + g).collect(),
    ));
    tensors.push(("bn.bias".to_string(), vec![4], normal(4, 0.02)));
    tensors.push(("bn.mean".to_string(), vec![4], normal(4, 0.1)));
    tensors.push((
        "bn.var".to_string(),
        vec![4],
        normal(4, 0.1).iter().map(|v| 1.0 + v.abs()).collect(),
    ));
    tensors.push((
        "c2.weight".to_string(),
        vec![6, 4, 3, 3],
        normal(216, 1.0 / 36f32.sqrt()),
    ));
    tensors.push((
        "fc.weight".to_string(),
        vec![3, 6],
        normal(18, 1.0 / 6f32.sqrt()),
    ));
    tensors.push(("fc.bias".to_string(), vec![3], normal(3, 0.02)));
    let architecture = Architecture::from_json(
        r#"{"name": "cnn", "input": [2, 8, 8], "layers": [
            {"op": "conv2d", "weight": "c1.weight", "bias": "c1.bias", "padding": 1},
            {"op": "batch_norm", "weight": "bn.weight", "bias": "bn.bias", "running_mean": "bn.mean", "running_var": "bn.var"},
            {"op": "relu"},
            {"op": "max_pool2d", "kernel": 2},
            {"op": "conv2d", "weight": "c2.weight", "stride": 2, "padding": 1},
            {"op": "relu"},
            {"op": "avg_pool2d", "kernel": 2},
            {"op": "flatten"},
            {"op": "linear", "weight": "fc.weight", "bias": "fc.bias"}]}"#,
    )
    .unwrap();
    compile(
        &architecture,
        &write_safetensors(&tensors).unwrap(),
        "exact",
    )
    .unwrap()
}

#[test]
fn cnn_ops_agree_within_the_bound_and_pool_precedes_relu() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let plan = cnn_plan(&mut prg);
    let ops: Vec<String> = plan
        .public
        .graph
        .nodes
        .iter()
        .map(|n| {
            format!("{:?}", n.op)
                .split([' ', '{'])
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    let pool = ops.iter().position(|op| op == "MaxPool2d").unwrap();
    assert_eq!(ops[pool + 1], "Relu", "{ops:?}");
    assert!(!ops.iter().any(|op| op.contains("Batch")));
    let batch = 2;
    for scale in [1.0f32, 30.0] {
        let input: Vec<f32> = (0..2 * 64 * batch)
            .map(|_| gaussian(&mut prg) * scale)
            .collect();
        let plain = run_plain(&plan, &input, batch).unwrap();
        let bound = veil_exec::error_bound(&plan, &input).unwrap();
        let secure = secure(&plan, &input, batch);
        for (p, s) in plain.iter().zip(&secure) {
            assert!(
                (f64::from(*p) - f64::from(*s)).abs() <= bound,
                "secure {s} plain {p} bound {bound}"
            );
        }
    }
}

/// Max pooling on an 8-bit comparison domain, exhaustively: every pair (a, b) of
/// values in [−64, 63] sits in one 2×2 window with two copies of −64.
#[test]
fn max_pool_exhaustive_on_an_8_bit_domain() {
    let values: Vec<i64> = (-64..64).collect();
    let pairs: Vec<(i64, i64)> = values
        .iter()
        .flat_map(|&a| values.iter().map(move |&b| (a, b)))
        .collect();
    let width = 2 * pairs.len();
    let tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let architecture = Architecture::from_json(&format!(
        r#"{{"name": "max", "input": [1, 2, {width}], "layers": [{{"op": "max_pool2d", "kernel": 2, "bits": 8}}]}}"#
    ))
    .unwrap();
    let plan = compile(
        &architecture,
        &write_safetensors(&tensors).unwrap(),
        "exact",
    )
    .unwrap();
    let ulp = 1.0 / 65536.0;
    let mut input = vec![0f32; 2 * width];
    for (index, (a, b)) in pairs.iter().enumerate() {
        input[2 * index] = *a as f32 * ulp;
        input[2 * index + 1] = *b as f32 * ulp;
        input[width + 2 * index] = -64.0 * ulp;
        input[width + 2 * index + 1] = -64.0 * ulp;
    }
    let secure = secure(&plan, &input, 1);
    for (index, (a, b)) in pairs.iter().enumerate() {
        assert_eq!(secure[index], (*a.max(b)) as f32 * ulp, "max({a}, {b})");
    }
}

/// Runs the client of `plan` against a fake server that receives `frames_before` frames
/// then either vanishes or answers with garbage; returns the client's error.
fn client_against_faulty_server(
    plan: &Plan,
    frames_before: usize,
    garbage: Option<Vec<u8>>,
) -> String {
    use veil_net::Channel;
    let weight_seed = Seed::random().unwrap();
    let public = plan.public.clone();
    let fixed_point = public.fixed_point().unwrap();
    let dealer = Arc::new(veil_exec::dealer_parameters(&public, &weight_seed, 3));
    let mut generator = MaterialGenerator::new(fixed_point, dealer).unwrap();
    veil_exec::run(&mut generator, &public, 1, None).unwrap();
    let (_, client_material) = generator.finish();
    let server_parameters = veil_exec::server_parameters(plan, &weight_seed, 3).unwrap();
    let client_parameters = ClientParameters::new(server_parameters.masked_weights());
    let (mut server_channel, client_channel) = memory_pair();
    let server = thread::spawn(move || {
        for _ in 0..frames_before {
            server_channel.recv().unwrap();
        }
        if let Some(garbage) = garbage {
            server_channel.send(&garbage).unwrap();
            // Stay until the client has read the garbage.
            let _ = server_channel.recv();
        }
    });
    let input = vec![0.25f32; public.input_len()];
    let encoded = veil_exec::encode_input(&public, &input, 1).unwrap();
    let mut party = Party::new(
        client_channel,
        fixed_point,
        client_material,
        PartyParameters::Client(Arc::new(client_parameters)),
        &SessionLedger::default(),
    )
    .unwrap();
    let error = veil_exec::run(&mut party, &public, 1, Some(&encoded))
        .unwrap_err()
        .to_string();
    drop(party);
    server.join().unwrap();
    error
}

#[test]
fn a_server_that_vanishes_mid_convolution_is_a_clear_error() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let plan = cnn_plan(&mut prg);
    // The server takes the first convolution's masked input, then disappears.
    let error = client_against_faulty_server(&plan, 1, None);
    assert!(error.contains("peer closed"), "{error}");
}

#[test]
fn garbage_from_the_server_is_a_clear_error() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let plan = cnn_plan(&mut prg);
    for garbage in [vec![], vec![0xff; 3], vec![0x42; 1 << 16]] {
        let error = client_against_faulty_server(&plan, 2, Some(garbage));
        assert!(
            error.contains("peer misbehaved") && error.contains("bytes"),
            "{error}"
        );
    }
}

/// The label policy reveals each row's argmax, equal to the plain argmax whenever the
/// top two logits are further apart than the error bound; ties go to the lower index.
#[test]
fn secure_argmax_matches_the_plain_argmax() {
    let mut prg = Prg::new(&Seed::random().unwrap());
    let mut plan = residual_plan(&mut prg);
    plan.public.output_policy = veil_model::plan::OutputPolicy::Label { bits: 40 };
    let batch = 16;
    let input: Vec<f32> = (0..12 * batch).map(|_| gaussian(&mut prg) * 3.0).collect();
    let mut logits_plan = plan.clone();
    logits_plan.public.output_policy = veil_model::plan::OutputPolicy::Logits;
    let plain = run_plain(&logits_plan, &input, batch).unwrap();
    let bound = veil_exec::error_bound(&plan, &input).unwrap();
    let labels = secure(&plan, &input, batch);
    assert_eq!(labels.len(), batch);
    for (row, label) in plain.chunks(5).zip(&labels) {
        let mut sorted = row.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if f64::from(sorted[0] - sorted[1]) > 2.0 * bound {
            assert_eq!(
                veil_model::plain::argmax_rows(row, 5)[0],
                *label as usize,
                "{row:?}"
            );
        }
    }
    // Exact ties: the lower index wins, as in the plain argmax.
    let mut tied = plan.clone();
    for name in ["fc3.weight", "fc3.bias"] {
        for value in tied.weights.get_mut(name).unwrap() {
            *value = 0.0;
        }
    }
    let labels = secure(&tied, &input[..12], 1);
    assert_eq!(labels, vec![0.0]);
}
