//! Bad inputs and faulty peers are clear errors, never panics.

use std::thread;

use veil_core::sampling::test_seed;
use veil_model::Plan;
use veil_mpc::SessionLedger;
use veil_net::{Channel, memory_pair};

use crate::prepare;

#[test]
fn bad_inputs_are_clear_errors() {
    let plan = veil_model::zoo::residual_mlp(1).expect("the test MLP");
    let wrong_shape = veil_exec::encode_inputs(&plan.public, &[0.0; 11], 1).expect_err("11");
    assert!(
        wrong_shape.to_string().contains("expects 12"),
        "{wrong_shape}"
    );
    let mut huge = vec![0.0f32; 12];
    huge[3] = 1e30;
    let out_of_range = veil_exec::encode_inputs(&plan.public, &huge, 1).expect_err("1e30");
    assert!(
        out_of_range
            .to_string()
            .contains("outside the representable range"),
        "{out_of_range}"
    );
    let mut not_a_number = vec![0.0f32; 12];
    not_a_number[0] = f32::NAN;
    assert!(veil_exec::encode_inputs(&plan.public, &not_a_number, 1).is_err());
    assert!(
        veil_exec::encode_inputs(&plan.public, &[], 0).is_err(),
        "batch 0"
    );
}

/// Runs the client of `plan` against a fake server that receives `frames_before` frames
/// then either vanishes or answers with garbage; returns the client's error.
fn client_against_faulty_server(
    plan: &Plan,
    frames_before: usize,
    garbage: Option<Vec<u8>>,
) -> String {
    let query = prepare(plan, 1);
    let (mut server_channel, client_channel) = memory_pair();
    let server = thread::spawn(move || {
        for _ in 0..frames_before {
            server_channel.recv().expect("the client's frame");
        }
        if let Some(garbage) = garbage {
            server_channel.send(&garbage).expect("sending garbage");
            // Stay until the client has read the garbage.
            let _ = server_channel.recv();
        }
    });
    let input = vec![0.25f32; plan.public.input_len()];
    let inputs = veil_exec::encode_inputs(&plan.public, &input, 1).expect("a valid input");
    let error = veil_exec::session::run_client(
        client_channel,
        &plan.public,
        &query.client_parameters,
        query.client_material,
        &SessionLedger::default(),
        &inputs,
        1,
    )
    .expect_err("the server is faulty")
    .to_string();
    server.join().expect("the fake server");
    error
}

#[test]
fn a_server_that_vanishes_mid_convolution_is_a_clear_error() {
    let seed = test_seed();
    let plan = veil_model::zoo::every_op_cnn(seed.value()).expect("the test CNN");
    // The server takes the first convolution's masked input, then disappears.
    let error = client_against_faulty_server(&plan, 1, None);
    assert!(error.contains("peer closed"), "{error}");
}

#[test]
fn garbage_from_the_server_is_a_clear_error() {
    let seed = test_seed();
    let plan = veil_model::zoo::every_op_cnn(seed.value()).expect("the test CNN");
    for garbage in [vec![], vec![0xff; 3], vec![0x42; 1 << 16]] {
        let error = client_against_faulty_server(&plan, 2, Some(garbage));
        assert!(
            error.contains("peer misbehaved") && error.contains("bytes"),
            "{error}"
        );
    }
}

/// A session's material is consumed once: the same half is refused by a ledger that
/// has seen it, and the server's half cannot serve the client.
#[test]
fn material_is_refused_twice_and_for_the_other_role() {
    let plan = veil_model::zoo::residual_mlp(2).expect("the test MLP");
    let query = prepare(&plan, 1);
    let ledger = SessionLedger::default();
    ledger
        .consume(query.client_material.session_id())
        .expect("the first time");
    let inputs = veil_exec::encode_inputs(&plan.public, &[0.0; 12], 1).expect("a valid input");
    let (_, client_channel) = memory_pair();
    let replay = veil_exec::session::run_client(
        client_channel,
        &plan.public,
        &query.client_parameters,
        query.client_material,
        &ledger,
        &inputs,
        1,
    )
    .expect_err("a replayed session");
    assert!(replay.to_string().contains("session"), "{replay}");
    let (_, client_channel) = memory_pair();
    let wrong_role = veil_exec::session::run_client(
        client_channel,
        &plan.public,
        &query.client_parameters,
        query.server_material,
        &SessionLedger::default(),
        &inputs,
        1,
    )
    .expect_err("the server's half");
    assert!(
        wrong_role.to_string().contains("other role"),
        "{wrong_role}"
    );
}

/// The range-checking simulation refuses an input that drives a calibrated comparison
/// outside its bit-width, naming the node, and runs in-range inputs as the plain
/// simulation does.
#[test]
fn the_checked_simulation_names_the_node_an_input_drives_out_of_range() {
    let mut plan = veil_model::zoo::random_mlp("range", &[8, 6, 3], 4).expect("an MLP");
    let mut sampler = veil_core::sampling::SplitMix64::new(9);
    let calibration = sampler.normal_vec(8 * 16, 1.0);
    veil_model::passes::calibration::calibrate_comparison_bits(&mut plan, &calibration, 16, 2.0)
        .expect("calibrates");
    // The client refuses inputs beyond the calibrated input range before any query
    // (tested in inputs.rs); without that bound the simulation must catch them itself.
    plan.public.input_bound = None;
    let run = |input: &[f32]| {
        let encoded = veil_exec::encode_inputs(&plan.public, input, 1).expect("encodes");
        let mut simulation = veil_exec::cleartext_checked(&plan).expect("the simulation");
        veil_exec::run(&mut simulation, &plan.public, 1, Some(&encoded))
    };
    let typical = sampler.normal_vec(8, 1.0);
    let output = run(&typical).expect("an in-range input runs");
    assert!(output.is_some());
    let large: Vec<f32> = typical.iter().map(|v| v * 1000.0).collect();
    let error = run(&large)
        .expect_err("out of the calibrated range")
        .to_string();
    assert!(
        error.contains("relu") && error.contains("range of its"),
        "{error}"
    );
    assert!(
        !error.contains(&format!("{}", large[0])),
        "a value leaked: {error}"
    );
}

/// A LayerNorm row whose variance leaves the documented range (a constant row: σ² + ε
/// far below 2^−16) is named by the range-checking simulation.
#[test]
fn the_checked_simulation_names_a_layer_norm_outside_its_range() {
    let plan = veil_model::zoo::layer_norm_layer(2, 8, 3).expect("a LayerNorm");
    let run = |input: &[f32]| {
        let encoded = veil_exec::encode_inputs(&plan.public, input, 1).expect("encodes");
        let mut simulation = veil_exec::cleartext_checked(&plan).expect("the simulation");
        veil_exec::run(&mut simulation, &plan.public, 1, Some(&encoded))
    };
    let typical = veil_core::sampling::SplitMix64::new(5).normal_vec(16, 1.0);
    assert!(run(&typical).is_ok());
    let constant = vec![0.75f32; 16];
    let error = run(&constant).expect_err("a zero variance").to_string();
    assert!(
        error.contains("layer_norm") && error.contains("documented range"),
        "{error}"
    );
}
