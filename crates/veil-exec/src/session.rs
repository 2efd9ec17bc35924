//! One query session's steps at each role of the `dealer` setting (DESIGN.md §3, §6):
//! the dealer generates both halves of the material over the public plan, then each
//! computing party sets up its [`Party`] over its channel and its half, runs the plan,
//! and checks that every item was consumed. veil-serve's processes, the demo, the
//! benchmarks and the test harnesses all call these, so the steps exist once.
//!
//! - [`Generation`]: the dealer's run of the executor with the generating protocol;
//!   items either kept in memory ([`Generation::generate`]) or handed to a sink as they
//!   are made ([`Generation::stream`]), so no process need hold a whole query's material.
//! - [`run_server`]: the server's side; it has no input and learns nothing.
//! - [`run_client`]: the client's side; it alone receives (and decodes) the output.
//!
//! Encode the client's inputs with [`crate::encode_inputs`] before the session starts:
//! a bad input is then refused before any material is consumed.

use std::sync::Arc;

use veil_core::RingTensor;
use veil_model::PublicPlan;
use veil_mpc::{
    ClientParameters, ComparisonKeys, DealerParameters, MaterialGenerator, Party, PartyMaterial,
    PartyParameters, PartyRole, ServerParameters, SessionId, SessionLedger,
};
use veil_net::Channel;

use crate::{Error, Result, decode_output, run};

/// Where streamed items go as the dealer makes them: each item to its role's party.
pub use veil_mpc::MaterialSink;

/// The dealer's generation of one query session's material for both parties, from
/// fresh OS-random seeds and a fresh session id.
pub struct Generation<'a> {
    generator: MaterialGenerator<'a>,
    plan: &'a PublicPlan,
    batch: usize,
}

impl<'a> Generation<'a> {
    /// A new session for a batch of `batch` samples of `plan`.
    pub fn new(
        plan: &'a PublicPlan,
        parameters: &Arc<DealerParameters>,
        batch: usize,
    ) -> Result<Self> {
        let mut generator = MaterialGenerator::new(plan.fixed_point()?, Arc::clone(parameters))?;
        generator.set_batch(batch)?;
        Ok(Self {
            generator,
            plan,
            batch,
        })
    }

    /// Makes the session's comparisons with `keys` (point-function keys unless set).
    pub fn with_comparison_keys(mut self, keys: ComparisonKeys) -> Self {
        self.generator.set_comparison_keys(keys);
        self
    }

    /// The session id (public).
    pub fn session_id(&self) -> SessionId {
        self.generator.session_id()
    }

    /// The wire header of `role`'s half (session, role and seed; no items), sent before
    /// its streamed items.
    pub fn encoded_header(&self, role: PartyRole) -> Vec<u8> {
        self.generator.encoded_header(role)
    }

    /// Generates every item, handing each to `sink` as soon as it is made. A sink error
    /// stops generation and is returned.
    pub fn stream(mut self, sink: MaterialSink<'a>) -> Result<()> {
        self.generator.stream_to(sink);
        run(&mut self.generator, self.plan, self.batch, None)?;
        Ok(())
    }

    /// Generates both halves in memory: (the server's, the client's).
    pub fn generate(mut self) -> Result<(PartyMaterial, PartyMaterial)> {
        run(&mut self.generator, self.plan, self.batch, None)?;
        Ok(self.generator.finish())
    }
}

/// The server's side of one query: sets up the party over `channel` with its half of
/// the material (refused if the `ledger` has seen the session, or if it was made for
/// the client), runs the plan, and checks that every item was used. Returns the
/// channel.
pub fn run_server<C: Channel>(
    channel: C,
    plan: &PublicPlan,
    parameters: &Arc<ServerParameters>,
    material: PartyMaterial,
    ledger: &SessionLedger,
    batch: usize,
) -> Result<C> {
    check_batch(&material, batch)?;
    let mut party = Party::new(
        channel,
        plan.fixed_point()?,
        material,
        PartyParameters::Server(Arc::clone(parameters)),
        ledger,
    )?;
    run(&mut party, plan, batch, None)?;
    Ok(party.finish()?)
}

/// The client's side of one query on its encoded `inputs` ([`crate::encode_inputs`]):
/// as [`run_server`], and then the output decoded by the plan's output policy (reals
/// for logits, class indices for labels), with the channel.
pub fn run_client<C: Channel>(
    channel: C,
    plan: &PublicPlan,
    parameters: &Arc<ClientParameters>,
    material: PartyMaterial,
    ledger: &SessionLedger,
    inputs: &[RingTensor],
    batch: usize,
) -> Result<(Vec<f32>, C)> {
    check_batch(&material, batch)?;
    let mut party = Party::new(
        channel,
        plan.fixed_point()?,
        material,
        PartyParameters::Client(Arc::clone(parameters)),
        ledger,
    )?;
    let output = run(&mut party, plan, batch, Some(inputs))?.ok_or(Error::NoOutput)?;
    let channel = party.finish()?;
    Ok((decode_output(plan, &output)?, channel))
}

/// A query runs at the batch size its material was made for: the header states it, so
/// a batch a peer declares never sizes anything the material did not.
fn check_batch(material: &PartyMaterial, batch: usize) -> Result<()> {
    if material.batch() == batch {
        Ok(())
    } else {
        Err(veil_mpc::Error::BatchMismatch {
            asked: batch,
            made: material.batch(),
        }
        .into())
    }
}
