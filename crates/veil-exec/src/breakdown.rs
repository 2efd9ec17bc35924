//! Where the time and the bytes go, per operator kind and per protocol primitive (the
//! seed's Figure 1, measured): one query of a plan in the `dealer` setting, the dealer's
//! generation and both parties in this process (the parties on two threads over an
//! in-memory channel, one compute thread each), every node's costs recorded through
//! [`crate::run_observed`], beside each kind's share of the plaintext FLOPs.
//!
//! Online figures are the client's: its wall time per node, the bytes it sent and
//! received, its rounds. Preprocessing is the dealer's material per node, both halves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use veil_core::prg::Seed;
use veil_model::Plan;
use veil_model::ir::Op;
use veil_mpc::accounting::{Cost, PRIMITIVES, Primitive, Spent};
use veil_mpc::{
    ClientParameters, MaterialGenerator, Party, PartyParameters, Protocol, SessionLedger,
};
use veil_net::memory_pair;

use crate::{Error, Result, run_observed};

/// The operator kinds a breakdown reports.
pub fn operator_kind(op: &Op) -> &'static str {
    match op {
        Op::Linear { .. } | Op::Conv2d { .. } => "linear",
        Op::MatMul { .. } => "attention products",
        Op::MaskedSum => "pooling",
        Op::Relu { .. } => "relu",
        Op::MaxPool2d { .. } => "max",
        Op::Gelu { .. } | Op::GeluTable { .. } => "gelu",
        Op::Softmax { .. } => "softmax",
        Op::QuadSoftmax { .. } => "softmax (2quad)",
        Op::ReluSoftmax { .. } => "softmax (2relu)",
        Op::Quadratic { .. } => "quadratic",
        Op::Tanh { .. } => "tanh",
        Op::LayerNorm { .. } => "layer_norm",
        Op::Scale { .. } | Op::AvgPool2d { .. } => "scale",
        Op::Input { .. } => "input",
        Op::Add
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Flatten
        | Op::FirstToken
        | Op::MaskScores { .. } => "local (add, reshape, mask)",
    }
}

/// The output step's kind (the reveal, and the secure argmax under `label`).
pub const OUTPUT_KIND: &str = "output";

/// Plaintext floating-point operations of one node on a batch, from its shapes: two a
/// multiply-add; the non-linearities at the few operations a plain evaluation needs.
fn plaintext_flops(op: &Op, input: &[usize], output: &[usize]) -> f64 {
    let elements = |shape: &[usize]| shape.iter().product::<usize>() as f64;
    match op {
        Op::Linear { in_features, .. } => 2.0 * elements(output) * *in_features as f64,
        Op::Conv2d {
            in_channels,
            kernel,
            ..
        } => 2.0 * elements(output) * (*in_channels * kernel * kernel) as f64,
        Op::MatMul { .. } => {
            let k = input.last().copied().unwrap_or(0) as f64;
            2.0 * elements(output) * k
        }
        Op::MaskedSum => 2.0 * elements(input),
        Op::Softmax { .. } => 5.0 * elements(input),
        Op::QuadSoftmax { .. } | Op::ReluSoftmax { .. } => 4.0 * elements(input),
        Op::Quadratic { .. } => 4.0 * elements(input),
        Op::Gelu { .. } | Op::GeluTable { .. } | Op::Tanh { .. } => 10.0 * elements(input),
        Op::LayerNorm { .. } => 8.0 * elements(input),
        Op::Relu { .. }
        | Op::MaxPool2d { .. }
        | Op::AvgPool2d { .. }
        | Op::Scale { .. }
        | Op::Add
        | Op::MaskScores { .. } => elements(input),
        Op::Input { .. }
        | Op::Reshape { .. }
        | Op::Transpose { .. }
        | Op::Flatten
        | Op::FirstToken => 0.0,
    }
}

/// One operator kind's costs in one query.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct KindCost {
    /// The kind ([`operator_kind`], or [`OUTPUT_KIND`]).
    pub kind: &'static str,
    /// Nodes of this kind.
    pub nodes: usize,
    /// The client's online wall time in them.
    pub online: Duration,
    /// Bytes the client sent and received in them.
    pub online_bytes: u64,
    /// The client's rounds in them.
    pub rounds: u64,
    /// The dealer's material for them, both halves.
    pub material_bytes: u64,
    /// Their plaintext FLOPs.
    pub plaintext_flops: f64,
}

/// One primitive's costs in one query.
#[derive(Clone, Debug, PartialEq)]
pub struct PrimitiveCost {
    /// The primitive.
    pub primitive: Primitive,
    /// The client's online costs in it.
    pub online: Cost,
    /// The dealer's material for it, both halves.
    pub material_bytes: u64,
}

/// One query's breakdown.
#[derive(Clone, Debug, PartialEq)]
pub struct Breakdown {
    /// Per operator kind, in the order the kinds first appear in the plan.
    pub kinds: Vec<KindCost>,
    /// Per protocol primitive (across every operator).
    pub primitives: Vec<PrimitiveCost>,
}

/// Measures one query of `plan` on `input` (a batch of `batch`), its comparisons on
/// `keys`: the dealer's generation, then the server on a thread and the client here.
pub fn measure(
    plan: &Plan,
    input: &[f32],
    batch: usize,
    keys: veil_mpc::ComparisonKeys,
) -> Result<Breakdown> {
    let public = &plan.public;
    let shapes = public.graph.infer_shapes(batch)?;
    let mut kinds: Vec<KindCost> = Vec::new();
    let mut slot_of: BTreeMap<&'static str, usize> = BTreeMap::new();
    let kind_of = |node: Option<usize>| {
        node.map_or(OUTPUT_KIND, |index| {
            operator_kind(&public.graph.nodes[index].op)
        })
    };
    let mut slot = |kind: &'static str, kinds: &mut Vec<KindCost>| -> usize {
        *slot_of.entry(kind).or_insert_with(|| {
            kinds.push(KindCost {
                kind,
                ..KindCost::default()
            });
            kinds.len() - 1
        })
    };
    for (index, node) in public.graph.nodes.iter().enumerate() {
        let at = slot(operator_kind(&node.op), &mut kinds);
        let input_shape = node.inputs.first().map_or(&shapes[index], |&i| &shapes[i]);
        kinds[at].nodes += 1;
        kinds[at].plaintext_flops += plaintext_flops(&node.op, input_shape, &shapes[index]);
    }
    slot(OUTPUT_KIND, &mut kinds);

    // The dealer's generation, each node's material recorded.
    let weight_seed = Seed::random()?;
    let dealer = Arc::new(crate::dealer_parameters(public, &weight_seed, 1));
    let mut generator = MaterialGenerator::new(public.fixed_point()?, dealer)?;
    generator.set_batch(batch)?;
    generator.set_comparison_keys(keys);
    let mut material_by_primitive = Spent::default();
    run_observed(
        &mut generator,
        public,
        batch,
        None,
        &mut |node, _, spent| {
            let at = slot_of[kind_of(node)];
            kinds[at].material_bytes += spent.total().material_bytes;
            for primitive in PRIMITIVES {
                material_by_primitive.add(primitive, &spent.of(primitive));
            }
        },
    )?;
    let (server_material, client_material) = generator.finish();

    let server_parameters = Arc::new(crate::server_parameters(plan, &weight_seed, 1)?);
    let client_parameters = Arc::new(ClientParameters::new(server_parameters.masked_weights()?));
    let encoded = crate::encode_inputs(public, input, batch)?;
    let (server_channel, client_channel) = memory_pair();
    let fixed_point = public.fixed_point()?;
    let server_plan = public.clone();
    let server = std::thread::spawn(move || -> Result<()> {
        crate::session::run_server(
            server_channel,
            &server_plan,
            &server_parameters,
            server_material,
            &SessionLedger::default(),
            batch,
        )?;
        Ok(())
    });
    let mut client = Party::new(
        client_channel,
        fixed_point,
        client_material,
        PartyParameters::Client(client_parameters),
        &SessionLedger::default(),
    )?;
    run_observed(
        &mut client,
        public,
        batch,
        Some(&encoded),
        &mut |node, wall, spent| {
            let at = slot_of[kind_of(node)];
            let total = spent.total();
            kinds[at].online += wall;
            kinds[at].online_bytes += total.sent_bytes + total.received_bytes;
            kinds[at].rounds += total.rounds;
        },
    )?;
    let online_by_primitive = client.spent();
    client.finish()?;
    server
        .join()
        .map_err(|_| Error::Panicked("server"))
        .and_then(|result| result)?;

    let primitives = PRIMITIVES
        .iter()
        .map(|&primitive| PrimitiveCost {
            primitive,
            online: online_by_primitive.of(primitive),
            material_bytes: material_by_primitive.of(primitive).material_bytes,
        })
        .collect();
    Ok(Breakdown { kinds, primitives })
}
