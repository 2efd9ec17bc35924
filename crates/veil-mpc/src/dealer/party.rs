//! The `dealer` setting's computing parties (DESIGN.md §1): the server (P0) and the
//! client (P1), each holding additive shares over Z_2^64 and the material the dealer
//! made for this query.
//!
//! This file holds the party itself and its [`Protocol`] implementation, which does the
//! local operations (addition, scaling, rearrangement: no message, no material) and the
//! output to the client (the server sends its share, the client adds), and hands every
//! interactive step to the file of that step: `weight_product.rs`, `truncation.rs`,
//! `beaver.rs`, `comparison.rs`.

use std::sync::Arc;
use std::time::Instant;

use veil_core::prg::Prg;
use veil_core::{FixedPoint, RingTensor};
use veil_net::Channel;

use super::codec::{bytes_to_words, words_to_bytes};
use super::material::{MaterialKind, PartyMaterial, PartyRole, SessionLedger, Tag, op_stream};
use super::parameters::{ClientParameters, ServerParameters, ServerWeight};
use crate::accounting::{Cost, Primitive, Spent};
use crate::protocol::{
    batched_matmul, batched_matmul_dimensions, check_bits, check_shift, check_table,
    conv2d_output_shape, matmul_dimensions, row_scaled, same_shape,
};
use crate::{Error, PeerMisbehaved, Protocol, Result};

/// One party's additive share of a secret tensor. It cannot be printed: `Debug` shows
/// the party and shape only, and the value leaves only through the protocol.
pub struct Share {
    pub(super) party: PartyRole,
    pub(super) value: RingTensor,
}

impl std::fmt::Debug for Share {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "Share {{ party: {:?}, shape: {:?} }}",
            self.party,
            self.value.shape()
        )
    }
}

impl Share {
    /// The (public) shape.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// The raw share, for tests that reconstruct both halves by hand.
    #[cfg(any(test, feature = "testing"))]
    pub fn dangerous_share_value(&self) -> &RingTensor {
        &self.value
    }
}

/// A party's parameters: the server's W and B, or the client's D.
#[derive(Clone)]
pub enum PartyParameters {
    /// At the server.
    Server(Arc<ServerParameters>),
    /// At the client.
    Client(Arc<ClientParameters>),
}

/// A weight in a party's form.
pub enum PartyWeight {
    /// W and B, at the server.
    Server(Arc<ServerWeight>),
    /// D = W + B, at the client.
    Client(Arc<RingTensor>),
}

impl PartyWeight {
    /// The weight's (public) shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            PartyWeight::Server(weight) => weight.plain.shape(),
            PartyWeight::Client(masked) => masked.shape(),
        }
    }
}

/// One computing party of the `dealer` setting, for one query session.
pub struct Party<C: Channel> {
    pub(super) role: PartyRole,
    pub(super) channel: C,
    fixed_point: FixedPoint,
    material: PartyMaterial,
    parameters: PartyParameters,
    next_op: u32,
    /// Online costs so far, per primitive.
    spent: Spent,
}

impl<C: Channel> Party<C> {
    /// A party for one query session. Refuses material whose session the `ledger` has
    /// seen, and material made for the other role.
    pub fn new(
        channel: C,
        fixed_point: FixedPoint,
        material: PartyMaterial,
        parameters: PartyParameters,
        ledger: &SessionLedger,
    ) -> Result<Self> {
        let role = match parameters {
            PartyParameters::Server(_) => PartyRole::Server,
            PartyParameters::Client(_) => PartyRole::Client,
        };
        if material.role() != role {
            return Err(PeerMisbehaved::MalformedMaterial(
                "the material was made for the other role",
            )
            .into());
        }
        ledger.consume(material.session_id())?;
        Ok(Self {
            role,
            channel,
            fixed_point,
            material,
            parameters,
            next_op: 0,
            spent: Spent::default(),
        })
    }

    /// Runs one primitive, adding its time, bytes and rounds to the accounting.
    fn measured<T>(
        &mut self,
        primitive: Primitive,
        step: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        let (before, started) = (self.channel.stats(), Instant::now());
        let result = step(self);
        let used = self.channel.stats().since(&before);
        let cost = Cost {
            time: started.elapsed(),
            sent_bytes: used.bytes_sent,
            received_bytes: used.bytes_received,
            rounds: used.rounds,
            material_bytes: 0,
        };
        self.spent.add(primitive, &cost);
        result
    }

    /// Opens a secret to the client (the server sends its share).
    fn reveal(&mut self, value: &Share) -> Result<Option<RingTensor>> {
        match self.role {
            PartyRole::Server => {
                self.channel.send(&words_to_bytes(value.value.data()))?;
                Ok(None)
            }
            PartyRole::Client => {
                let theirs = self.channel.recv()?;
                let theirs = bytes_to_words("reveal", &theirs, value.value.len())?;
                let data = value
                    .value
                    .data()
                    .iter()
                    .zip(&theirs)
                    .map(|(a, b)| a.wrapping_add(*b))
                    .collect();
                Ok(Some(RingTensor::new(value.value.shape().to_vec(), data)?))
            }
        }
    }

    /// This party's role.
    pub fn role(&self) -> PartyRole {
        self.role
    }

    /// The channel to the peer (for accounting).
    pub fn channel(&self) -> &C {
        &self.channel
    }

    /// Ends the query: every material item must have been used (a streaming half must
    /// also have reached its end).
    pub fn finish(mut self) -> Result<C> {
        self.material.finish()?;
        Ok(self.channel)
    }

    pub(super) fn is_server(&self) -> bool {
        self.role == PartyRole::Server
    }

    /// Starts an interactive step: its op index and the stream this party and the dealer
    /// both derive for it.
    pub(super) fn begin_op(&mut self) -> (u32, Prg) {
        let op = self.next_op;
        self.next_op += 1;
        (op, op_stream(self.material.seed(), op))
    }

    /// The kind of the step's material item, if the next item is this step's.
    pub(super) fn next_kind(&mut self, op_index: u32) -> Result<Option<MaterialKind>> {
        self.material.next_kind(op_index)
    }

    /// The step's material item, which must carry this tag.
    pub(super) fn take(
        &mut self,
        op_index: u32,
        kind: MaterialKind,
        words: usize,
    ) -> Result<Vec<u64>> {
        self.material.take(Tag {
            op_index,
            kind,
            words: words as u64,
        })
    }

    pub(super) fn share(&self, value: RingTensor) -> Share {
        Share {
            party: self.role,
            value,
        }
    }

    /// Sends `mine` and returns `mine + theirs` elementwise (one round).
    pub(super) fn open_words(&mut self, op: &'static str, mine: &[u64]) -> Result<Vec<u64>> {
        let theirs = self.channel.exchange(&words_to_bytes(mine))?;
        let theirs = bytes_to_words(op, &theirs, mine.len())?;
        Ok(mine
            .iter()
            .zip(&theirs)
            .map(|(a, b)| a.wrapping_add(*b))
            .collect())
    }
}

impl<C: Channel> Protocol for Party<C> {
    type Shared = Share;
    type Weight = PartyWeight;
    type Bias = Option<Arc<RingTensor>>;

    fn fixed_point(&self) -> FixedPoint {
        self.fixed_point
    }

    fn input(&mut self, shape: &[usize], value: Option<&RingTensor>) -> Result<Share> {
        match (self.role, value) {
            // The client's share is its input; the server's is zero.
            (PartyRole::Client, Some(value)) => {
                same_shape("input", shape, value.shape())?;
                Ok(self.share(value.clone()))
            }
            (PartyRole::Server, None) => Ok(self.share(RingTensor::zeros(shape))),
            _ => Err(Error::ApiMisuse {
                op: "input",
                detail: "only the client provides the input".into(),
            }),
        }
    }

    fn public(&mut self, value: &RingTensor) -> Result<Share> {
        Ok(match self.role {
            PartyRole::Server => self.share(value.clone()),
            PartyRole::Client => self.share(RingTensor::zeros(value.shape())),
        })
    }

    fn weight(&mut self, name: &str) -> Result<PartyWeight> {
        Ok(match &self.parameters {
            PartyParameters::Server(parameters) => PartyWeight::Server(parameters.weight(name)?),
            PartyParameters::Client(parameters) => PartyWeight::Client(parameters.weight(name)?),
        })
    }

    fn bias(&mut self, name: &str) -> Result<Option<Arc<RingTensor>>> {
        Ok(match &self.parameters {
            PartyParameters::Server(parameters) => Some(parameters.bias(name)?),
            PartyParameters::Client(_) => None,
        })
    }

    fn shape_of(&self, value: &Share) -> Vec<usize> {
        value.value.shape().to_vec()
    }

    fn reshape(&mut self, value: Share, shape: &[usize]) -> Result<Share> {
        Ok(self.share(value.value.reshape(shape)?))
    }

    fn add(&mut self, left: &Share, right: &Share) -> Result<Share> {
        Ok(self.share(left.value.add(&right.value)?))
    }

    fn add_bias(&mut self, value: &Share, bias: &Option<Arc<RingTensor>>) -> Result<Share> {
        Ok(match bias {
            Some(bias) => self.share(value.value.broadcast_add_bias(bias)?),
            None => self.share(value.value.clone()),
        })
    }

    fn matmul_weight(&mut self, value: &Share, weight: &PartyWeight) -> Result<Share> {
        let (m, _, n) = matmul_dimensions("matmul_weight", value.value.shape(), weight.shape())?;
        self.measured(Primitive::WeightProduct, |party| {
            party.weight_product(value, weight, vec![m, n], |x, w| Ok(x.matmul(w)?))
        })
    }

    fn mul_weight(&mut self, value: &Share, weight: &PartyWeight) -> Result<Share> {
        let shape = value.value.shape().to_vec();
        self.measured(Primitive::WeightProduct, |party| {
            party.weight_product(value, weight, shape, row_scaled)
        })
    }

    fn conv2d_weight(
        &mut self,
        value: &Share,
        weight: &PartyWeight,
        stride: usize,
        padding: usize,
    ) -> Result<Share> {
        let output_shape =
            conv2d_output_shape(value.value.shape(), weight.shape(), stride, padding)?;
        self.measured(Primitive::WeightProduct, |party| {
            party.weight_product(value, weight, output_shape, |x, w| {
                Ok(x.conv2d(w, stride, padding)?)
            })
        })
    }

    fn sub(&mut self, left: &Share, right: &Share) -> Result<Share> {
        Ok(self.share(left.value.sub(&right.value)?))
    }

    fn scale(&mut self, value: &Share, factor: u64) -> Result<Share> {
        Ok(self.share(value.value.map(|x| x.wrapping_mul(factor))))
    }

    fn concat(&mut self, parts: &[&Share]) -> Result<Share> {
        let values: Vec<&RingTensor> = parts.iter().map(|part| &part.value).collect();
        Ok(self.share(RingTensor::concat(&values)))
    }

    fn gather(&mut self, value: &Share, indices: &[usize], shape: &[usize]) -> Result<Share> {
        Ok(self.share(value.value.gather(indices, shape)?))
    }

    fn square(&mut self, value: &Share) -> Result<Share> {
        self.measured(Primitive::SecretProduct, |party| party.square_share(value))
    }

    fn mul(&mut self, left: &Share, right: &Share) -> Result<Share> {
        same_shape("mul", left.value.shape(), right.value.shape())?;
        let shape = left.value.shape().to_vec();
        self.measured(Primitive::SecretProduct, |party| {
            party.beaver(
                MaterialKind::ElementwiseTriple,
                left,
                right,
                shape,
                |x, y| Ok(x.mul(y)?),
            )
        })
    }

    fn matmul(&mut self, left: &Share, right: &Share) -> Result<Share> {
        let (_, _, _, _, shape) =
            batched_matmul_dimensions(left.value.shape(), right.value.shape())?;
        self.measured(Primitive::SecretProduct, |party| {
            party.beaver(
                MaterialKind::MatrixTriple,
                left,
                right,
                shape,
                batched_matmul,
            )
        })
    }

    fn truncate(&mut self, value: &Share, bits: u32) -> Result<Share> {
        check_shift(bits)?;
        self.measured(Primitive::Truncation, |party| party.truncation(value, bits))
    }

    fn drelu(&mut self, value: &Share, bits: u32) -> Result<Share> {
        check_bits("drelu", bits)?;
        self.measured(Primitive::Comparison, |party| {
            party.comparison(value, bits, false)
        })
    }

    fn relu(&mut self, value: &Share, bits: u32) -> Result<Share> {
        check_bits("relu", bits)?;
        self.measured(Primitive::Comparison, |party| {
            party.comparison(value, bits, true)
        })
    }

    fn select(&mut self, bit: &Share, value: &Share) -> Result<Share> {
        same_shape("select", bit.value.shape(), value.value.shape())?;
        self.measured(Primitive::SecretProduct, |party| {
            party.bit_select(bit, value)
        })
    }

    fn lookup(&mut self, value: &Share, table: &[u64], bits: u32) -> Result<Share> {
        check_table(table, bits)?;
        self.measured(Primitive::Lookup, |party| {
            party.table_lookup(value, table, bits)
        })
    }

    fn reveal_to_client(&mut self, value: &Share) -> Result<Option<RingTensor>> {
        self.measured(Primitive::Reveal, |party| party.reveal(value))
    }

    fn spent(&self) -> Spent {
        self.spent
    }
}
