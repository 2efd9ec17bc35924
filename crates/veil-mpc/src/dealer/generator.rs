//! The dealer's generating protocol: it runs the executor over the public plan and, at
//! every step, makes the material both parties will consume at that step (DESIGN.md §3).
//!
//! For each session it draws fresh seeds from the OS RNG, one per party. Each party
//! re-derives from its seed everything that can be random (masks A, shares of r, DCF
//! root seeds); the dealer sends the server only corrections (C₁, truncation and gate
//! constants) and both parties the DCF correction words. The weight mask B comes from
//! the long-term weight seed; it is the only replayed stream.
//!
//! This file holds the generator, its streaming delivery and its [`Protocol`]
//! implementation, which follows shapes through the local operations and hands every
//! interactive step to the file of that step, where the dealer's half sits beside the
//! parties' half: `weight_product.rs`, `truncation.rs`, `beaver.rs`, `comparison.rs`.

use std::sync::Arc;

use veil_core::prg::{Prg, Seed};
use veil_core::{FixedPoint, RingTensor};

use super::beaver::elementwise_product;
use super::comparison::ComparisonKeys;
use super::material::{MaterialItem, MaterialKind, PartyMaterial, PartyRole, SessionId, op_stream};
use super::parameters::DealerParameters;
use crate::accounting::{Cost, Spent};
use crate::protocol::{
    batched_matmul, batched_matmul_dimensions, check_bits, check_shift, check_table,
    conv2d_output_shape, matmul_dimensions, row_scaled, same_shape,
};
use crate::{Error, Protocol, Result};

/// The dealer's view of a secret: its shape only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShapeOnly(pub Vec<usize>);

/// Where generated items go as they are made (streaming delivery).
pub type MaterialSink<'a> = Box<dyn FnMut(PartyRole, MaterialItem) -> Result<()> + 'a>;

/// Generates one query session's material for both parties.
pub struct MaterialGenerator<'a> {
    fixed_point: FixedPoint,
    parameters: Arc<DealerParameters>,
    /// Seeds shared with the server (index 0) and the client (index 1).
    seeds: [Seed; 2],
    next_op: u32,
    outputs: [PartyMaterial; 2],
    /// When set, items are handed over as they are made instead of being kept.
    sink: Option<MaterialSink<'a>>,
    /// Material bytes made so far, per primitive.
    spent: Spent,
    /// The keys comparisons get.
    comparison_keys: ComparisonKeys,
}

impl<'a> MaterialGenerator<'a> {
    /// From now on every item goes to `sink` as soon as it is made, so no process holds
    /// a whole query's material; [`Self::finish`] then returns the halves' headers
    /// (session, role, seed) without the streamed items.
    pub fn stream_to(&mut self, sink: MaterialSink<'a>) {
        self.sink = Some(sink);
    }

    /// The wire header of one half (its session, role and seed, no items), to send
    /// before streamed items.
    pub fn encoded_header(&self, role: PartyRole) -> Vec<u8> {
        self.outputs[role.index()].encode()
    }

    /// Hands one party's item of the current step to the sink, or keeps it.
    pub(super) fn emit(&mut self, role: PartyRole, item: MaterialItem) -> Result<()> {
        let cost = Cost {
            material_bytes: (item.encoded_header().len() + 8 * item.words().len()) as u64,
            ..Cost::default()
        };
        self.spent.add(item.tag().kind.primitive(), &cost);
        match &mut self.sink {
            Some(sink) => sink(role, item),
            None => {
                self.outputs[role.index()].push(item);
                Ok(())
            }
        }
    }

    /// A new session with fresh OS-random seeds and session id.
    pub fn new(fixed_point: FixedPoint, parameters: Arc<DealerParameters>) -> Result<Self> {
        let session_id = u128::from_le_bytes(Seed::random()?.to_bytes());
        let seeds = [Seed::random()?, Seed::random()?];
        Ok(Self::with_seeds(fixed_point, parameters, session_id, seeds))
    }

    /// A session whose id and seeds derive from `seed` instead of the OS RNG, so that a
    /// test can replay a run. Never available in production builds.
    #[cfg(any(test, feature = "testing"))]
    pub fn dangerous_from_test_seed(
        fixed_point: FixedPoint,
        parameters: Arc<DealerParameters>,
        seed: &Seed,
    ) -> Self {
        let session_id = u128::from_le_bytes(seed.derive("veil/test/session-id", &[]).to_bytes());
        let seeds = [0, 1].map(|party| seed.derive("veil/test/party-seed", &[party]));
        Self::with_seeds(fixed_point, parameters, session_id, seeds)
    }

    fn with_seeds(
        fixed_point: FixedPoint,
        parameters: Arc<DealerParameters>,
        session_id: SessionId,
        seeds: [Seed; 2],
    ) -> Self {
        let outputs = [
            PartyMaterial::new(session_id, PartyRole::Server, seeds[0].clone()),
            PartyMaterial::new(session_id, PartyRole::Client, seeds[1].clone()),
        ];
        Self {
            fixed_point,
            parameters,
            seeds,
            next_op: 0,
            outputs,
            sink: None,
            spent: Spent::default(),
            comparison_keys: ComparisonKeys::default(),
        }
    }

    /// Makes comparisons from now on with `keys` (point-function keys unless set). The
    /// parties follow whichever keys each item carries.
    pub fn set_comparison_keys(&mut self, keys: ComparisonKeys) {
        self.comparison_keys = keys;
    }

    /// The keys comparisons get.
    pub fn comparison_keys(&self) -> ComparisonKeys {
        self.comparison_keys
    }

    /// The session id (public).
    pub fn session_id(&self) -> SessionId {
        self.outputs[0].session_id()
    }

    /// States the samples per query in both halves' headers (1 unless stated). The
    /// parties refuse to run the material at any other batch size.
    pub fn set_batch(&mut self, batch: usize) -> Result<()> {
        let batch = u32::try_from(batch)
            .ok()
            .filter(|&batch| batch > 0)
            .ok_or(Error::InvalidBatch { batch })?;
        for output in &mut self.outputs {
            output.set_batch(batch);
        }
        Ok(())
    }

    /// Ends generation: (the server's material, the client's material).
    pub fn finish(self) -> (PartyMaterial, PartyMaterial) {
        let [server, client] = self.outputs;
        (server, client)
    }

    /// Starts an interactive step: its op index and the streams the dealer shares with
    /// the server (index 0) and the client (index 1) for it.
    pub(super) fn begin_op(&mut self) -> (u32, [Prg; 2]) {
        let op = self.next_op;
        self.next_op += 1;
        (
            op,
            [op_stream(&self.seeds[0], op), op_stream(&self.seeds[1], op)],
        )
    }
}

impl Protocol for MaterialGenerator<'_> {
    type Shared = ShapeOnly;
    type Weight = Arc<RingTensor>;
    type Bias = ();

    fn fixed_point(&self) -> FixedPoint {
        self.fixed_point
    }

    fn input(&mut self, shape: &[usize], _value: Option<&RingTensor>) -> Result<ShapeOnly> {
        Ok(ShapeOnly(shape.to_vec()))
    }

    fn public(&mut self, value: &RingTensor) -> Result<ShapeOnly> {
        Ok(ShapeOnly(value.shape().to_vec()))
    }

    fn weight(&mut self, name: &str) -> Result<Arc<RingTensor>> {
        self.parameters.mask(name)
    }

    fn bias(&mut self, _name: &str) -> Result<()> {
        Ok(())
    }

    fn shape_of(&self, value: &ShapeOnly) -> Vec<usize> {
        value.0.clone()
    }

    fn reshape(&mut self, value: ShapeOnly, shape: &[usize]) -> Result<ShapeOnly> {
        let have: usize = value.0.iter().product();
        let want: usize = shape.iter().product();
        if have != want {
            return Err(veil_core::Error::ShapeMismatch {
                op: "reshape",
                expected: shape.to_vec(),
                found: value.0,
            }
            .into());
        }
        Ok(ShapeOnly(shape.to_vec()))
    }

    fn add(&mut self, left: &ShapeOnly, right: &ShapeOnly) -> Result<ShapeOnly> {
        same_shape("add", &left.0, &right.0)?;
        Ok(left.clone())
    }

    fn add_bias(&mut self, value: &ShapeOnly, _bias: &()) -> Result<ShapeOnly> {
        Ok(value.clone())
    }

    fn matmul_weight(&mut self, value: &ShapeOnly, mask: &Arc<RingTensor>) -> Result<ShapeOnly> {
        let (m, _, n) = matmul_dimensions("matmul_weight", &value.0, mask.shape())?;
        self.weight_product(value, mask, vec![m, n], |a, b| Ok(a.matmul(b)?))
    }

    fn mul_weight(&mut self, value: &ShapeOnly, mask: &Arc<RingTensor>) -> Result<ShapeOnly> {
        let shape = value.0.clone();
        self.weight_product(value, mask, shape, row_scaled)
    }

    fn conv2d_weight(
        &mut self,
        value: &ShapeOnly,
        mask: &Arc<RingTensor>,
        stride: usize,
        padding: usize,
    ) -> Result<ShapeOnly> {
        let output_shape = conv2d_output_shape(&value.0, mask.shape(), stride, padding)?;
        self.weight_product(value, mask, output_shape, |a, b| {
            Ok(a.conv2d(b, stride, padding)?)
        })
    }

    fn sub(&mut self, left: &ShapeOnly, right: &ShapeOnly) -> Result<ShapeOnly> {
        same_shape("sub", &left.0, &right.0)?;
        Ok(left.clone())
    }

    fn scale(&mut self, value: &ShapeOnly, _factor: u64) -> Result<ShapeOnly> {
        Ok(value.clone())
    }

    fn concat(&mut self, parts: &[&ShapeOnly]) -> Result<ShapeOnly> {
        Ok(ShapeOnly(vec![
            parts
                .iter()
                .map(|part| part.0.iter().product::<usize>())
                .sum(),
        ]))
    }

    fn gather(
        &mut self,
        value: &ShapeOnly,
        indices: &[usize],
        shape: &[usize],
    ) -> Result<ShapeOnly> {
        let len: usize = value.0.iter().product();
        if shape.iter().product::<usize>() != indices.len() || indices.iter().any(|&i| i >= len) {
            return Err(veil_core::Error::ShapeMismatch {
                op: "gather",
                expected: shape.to_vec(),
                found: vec![indices.len()],
            }
            .into());
        }
        Ok(ShapeOnly(shape.to_vec()))
    }

    fn square(&mut self, value: &ShapeOnly) -> Result<ShapeOnly> {
        self.square_pair(value.0.iter().product())?;
        Ok(value.clone())
    }

    fn mul(&mut self, left: &ShapeOnly, right: &ShapeOnly) -> Result<ShapeOnly> {
        same_shape("mul", &left.0, &right.0)?;
        let len = left.0.iter().product();
        self.triple(
            MaterialKind::ElementwiseTriple,
            [len, len, len],
            elementwise_product,
        )?;
        Ok(left.clone())
    }

    fn matmul(&mut self, left: &ShapeOnly, right: &ShapeOnly) -> Result<ShapeOnly> {
        let (batch, m, k, n, shape) = batched_matmul_dimensions(&left.0, &right.0)?;
        let (left_shape, right_shape) = (left.0.clone(), right.0.clone());
        self.triple(
            MaterialKind::MatrixTriple,
            [batch * m * k, batch * k * n, batch * m * n],
            |a, b| {
                Ok(batched_matmul(
                    &RingTensor::new(left_shape.clone(), a.to_vec())?,
                    &RingTensor::new(right_shape.clone(), b.to_vec())?,
                )?
                .into_data())
            },
        )?;
        Ok(ShapeOnly(shape))
    }

    fn truncate(&mut self, value: &ShapeOnly, bits: u32) -> Result<ShapeOnly> {
        check_shift(bits)?;
        self.truncation(value, bits)
    }

    fn drelu(&mut self, value: &ShapeOnly, bits: u32) -> Result<ShapeOnly> {
        check_bits("drelu", bits)?;
        self.gate(value, bits, false)
    }

    fn relu(&mut self, value: &ShapeOnly, bits: u32) -> Result<ShapeOnly> {
        check_bits("relu", bits)?;
        self.gate(value, bits, true)
    }

    fn select(&mut self, bit: &ShapeOnly, value: &ShapeOnly) -> Result<ShapeOnly> {
        same_shape("select", &bit.0, &value.0)?;
        self.bit_select(value)
    }

    fn lookup(&mut self, value: &ShapeOnly, table: &[u64], bits: u32) -> Result<ShapeOnly> {
        check_table(table, bits)?;
        self.lookup_keys(value, bits)
    }

    fn reveal_to_client(&mut self, _value: &ShapeOnly) -> Result<Option<RingTensor>> {
        Ok(None)
    }

    fn spent(&self) -> Spent {
        self.spent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truncation_material(seed: &Seed) -> (Vec<u8>, Vec<u8>) {
        let parameters = Arc::new(DealerParameters::new(seed, 1, &[]));
        let mut generator =
            MaterialGenerator::dangerous_from_test_seed(FixedPoint::default(), parameters, seed);
        let x = generator.input(&[3], None).unwrap();
        generator.truncate(&x, 16).unwrap();
        let (server, client) = generator.finish();
        (server.encode(), client.encode())
    }

    #[test]
    fn a_test_seed_replays_the_session_and_another_does_not() {
        let seed = veil_core::sampling::test_seed();
        let (server, client) = truncation_material(&seed.seed());
        assert_eq!(truncation_material(&seed.seed()), (server.clone(), client));
        assert_ne!(truncation_material(&seed.seed_at(1)).0, server);
    }
}
