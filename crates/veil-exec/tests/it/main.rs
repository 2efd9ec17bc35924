//! veil-exec's integration tests: one binary, one module per topic. The plain f32
//! executor, the fixed-point simulation and the secure `dealer` setting (two parties on
//! in-memory channels, through [`veil_exec::session`]) agree within the documented
//! bound; bad input and faulty peers are clear errors.

mod agreement;
mod approximations;
mod breakdown;
mod encoder;
mod faults;
mod gelu;
mod inputs;
mod layer_norm;
mod minilm;
mod softmax;
mod tanh;

use std::sync::Arc;
use std::thread;

use veil_core::prg::Seed;
use veil_model::Plan;
use veil_mpc::{ClientParameters, PartyMaterial, SessionLedger};
use veil_net::memory_pair;

/// The client's set-up for one query of `plan`: its half of fresh material and its D,
/// plus the server's half and parameters.
pub(crate) struct Query {
    pub(crate) server_material: PartyMaterial,
    pub(crate) client_material: PartyMaterial,
    pub(crate) server_parameters: Arc<veil_mpc::ServerParameters>,
    pub(crate) client_parameters: Arc<ClientParameters>,
}

/// The dealer's generation and both parties' parameters for one query, as the serving
/// processes make them (fresh weight seed, epoch 3).
pub(crate) fn prepare(plan: &Plan, batch: usize) -> Query {
    let weight_seed = Seed::random().expect("the OS RNG");
    let dealer = Arc::new(veil_exec::dealer_parameters(&plan.public, &weight_seed, 3));
    let (server_material, client_material) =
        veil_exec::session::Generation::new(&plan.public, &dealer, batch)
            .expect("a generation session")
            .generate()
            .expect("the dealer generates both halves");
    let server_parameters =
        veil_exec::server_parameters(plan, &weight_seed, 3).expect("the server's parameters");
    let client_parameters = ClientParameters::new(server_parameters.masked_weights().unwrap());
    Query {
        server_material,
        client_material,
        server_parameters: Arc::new(server_parameters),
        client_parameters: Arc::new(client_parameters),
    }
}

/// Secure inference of a batch: the server on a thread, the client here, the material
/// from the dealer's generation; returns the client's decoded output.
pub(crate) fn secure(plan: &Plan, input: &[f32], batch: usize) -> Vec<f32> {
    let query = prepare(plan, batch);
    let inputs = veil_exec::encode_inputs(&plan.public, input, batch).expect("a valid input");
    let (server_channel, client_channel) = memory_pair();
    let server_plan = plan.public.clone();
    let server = thread::spawn(move || {
        veil_exec::session::run_server(
            server_channel,
            &server_plan,
            &query.server_parameters,
            query.server_material,
            &SessionLedger::default(),
            batch,
        )
        .expect("the server's side");
    });
    let (output, _) = veil_exec::session::run_client(
        client_channel,
        &plan.public,
        &query.client_parameters,
        query.client_material,
        &SessionLedger::default(),
        &inputs,
        batch,
    )
    .expect("the client's side");
    server.join().expect("the server thread");
    output
}

/// A plan of one layer (its architecture JSON) on a per-sample `input` shape at
/// `fractional_bits`, with no weights.
pub(crate) fn one_layer_plan(layer: &str, input: &[usize], fractional_bits: u32) -> Plan {
    let architecture = veil_model::import::Architecture::from_json(&format!(
        r#"{{"name": "one-layer", "input": {input:?}, "fractional_bits": {fractional_bits}, "layers": [{layer}]}}"#
    ))
    .expect("the architecture parses");
    let no_tensors = veil_model::import::write_safetensors(&[]).expect("no tensors");
    veil_model::import::compile(&architecture, &no_tensors, "exact").expect("the layer compiles")
}

/// `count` values each of the adversarial kinds every secure op is tested on: N(0, σ²),
/// zeros, ±1000 alternating, and all negative (−|N(0, (10σ)²)|).
pub(crate) fn adversarial_inputs(
    count: usize,
    sigma: f32,
    sampler: &mut veil_core::sampling::SplitMix64,
) -> Vec<Vec<f32>> {
    vec![
        sampler.normal_vec(count, sigma),
        vec![0.0; count],
        (0..count)
            .map(|i| if i % 2 == 0 { -1000.0 } else { 1000.0 })
            .collect(),
        sampler
            .normal_vec(count, 10.0 * sigma)
            .iter()
            .map(|v| -v.abs())
            .collect(),
    ]
}

/// The fixed-point simulation of a batch, decoded.
pub(crate) fn simulated(plan: &Plan, input: &[f32], batch: usize) -> Vec<f32> {
    let inputs = veil_exec::encode_inputs(&plan.public, input, batch).expect("a valid input");
    let mut simulation = veil_exec::cleartext(plan).expect("the simulation");
    let output = veil_exec::run(&mut simulation, &plan.public, batch, Some(&inputs))
        .expect("the simulation runs")
        .expect("the simulation sees the output");
    veil_exec::decode_output(&plan.public, &output).expect("decodes")
}

/// Runs `plan` plainly, simulated and securely on a batch, and asserts that both
/// fixed-point results are within the documented bound of the plain one.
pub(crate) fn assert_agrees(plan: &Plan, input: &[f32], batch: usize) {
    let plain = veil_model::plain::run_plain(plan, input, batch).expect("plain");
    let bound = veil_exec::error_bound(plan, input).expect("the bound");
    let secure = secure(plan, input, batch);
    let simulated = simulated(plan, input, batch);
    assert_within(
        &plain,
        &[("secure", &secure), ("simulated", &simulated)],
        bound,
    );
}

/// Asserts that every secure and simulated output is within `bound` of the plain one.
pub(crate) fn assert_within(plain: &[f32], others: &[(&str, &[f32])], bound: f64) {
    for (name, values) in others {
        assert_eq!(values.len(), plain.len(), "{name}");
        for (p, o) in plain.iter().zip(values.iter()) {
            assert!(
                (f64::from(*p) - f64::from(*o)).abs() <= bound,
                "{name} {o} plain {p} bound {bound}"
            );
        }
    }
}
