//! The `dealer` setting's computing parties: the server (P0) and the client (P1), each
//! holding additive shares over Z_2^64 and the material the dealer made for this query.
//!
//! Protocols, with the cookbook section each follows:
//! - one-sided product with a fixed weight mask (DESIGN.md §4, cookbook §2.2 item 2):
//!   the client sends E = X₁ + A_q, the layer's only message; the server's share X₀ is
//!   never sent;
//! - precise truncation TruncPr (cookbook §1.4): open c = x + 2^62 + r, one round;
//! - Beaver products, elementwise and matrix (cookbook §2.1): open ε = X − A, δ = Y − B;
//! - DReLU and ReLU from DCF keys in the gate model (cookbook §3.4, [`crate::gates`]):
//!   open x + r, one round;
//! - output to the client only: the server sends its share, the client adds.

use std::sync::Arc;

use veil_core::prg::Prg;
use veil_core::{FixedPoint, RingTensor};
use veil_net::Channel;

use super::material::{
    MaterialKind, PartyMaterial, PartyRole, SessionLedger, Tag, draw_gate, draw_triple,
    draw_truncation, draw_weight_product, op_stream,
};
use super::parameters::{ClientParameters, ServerParameters, ServerWeight};
use crate::protocol::{
    check_bits, check_shift, conv2d_output_shape, matmul_dimensions, same_shape,
};
use crate::{Error, PeerMisbehaved, Protocol, Result, dcf, gates};

/// One party's additive share of a secret tensor. It cannot be printed: `Debug` shows
/// the party and shape only, and the value leaves only through the protocol.
pub struct Share {
    party: PartyRole,
    value: RingTensor,
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
    role: PartyRole,
    channel: C,
    fixed_point: FixedPoint,
    material: PartyMaterial,
    parameters: PartyParameters,
    next_op: u32,
}

fn words_to_bytes(words: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(words.len() * 8);
    for word in words {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
    bytes
}

fn bytes_to_words(op: &'static str, bytes: &[u8], expected_words: usize) -> Result<Vec<u64>> {
    if bytes.len() != expected_words * 8 {
        return Err(PeerMisbehaved::WrongMessageLength {
            op,
            expected: expected_words * 8,
            found: bytes.len(),
        }
        .into());
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect())
}

/// Packs the low `bytes_per` bytes of each word.
fn pack_low_bytes(words: &[u64], bytes_per: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(words.len() * bytes_per);
    for word in words {
        bytes.extend_from_slice(&word.to_le_bytes()[..bytes_per]);
    }
    bytes
}

fn unpack_low_bytes(
    op: &'static str,
    bytes: &[u8],
    count: usize,
    bytes_per: usize,
) -> Result<Vec<u64>> {
    if bytes.len() != count * bytes_per {
        return Err(PeerMisbehaved::WrongMessageLength {
            op,
            expected: count * bytes_per,
            found: bytes.len(),
        }
        .into());
    }
    Ok(bytes
        .chunks_exact(bytes_per)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..bytes_per].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect())
}

fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
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
        })
    }

    /// This party's role.
    pub fn role(&self) -> PartyRole {
        self.role
    }

    /// The channel to the peer (for accounting).
    pub fn channel(&self) -> &C {
        &self.channel
    }

    /// Ends the query: every material item must have been used.
    pub fn finish(self) -> Result<C> {
        let left = self.material.remaining_items();
        if left > 0 {
            return Err(Error::MaterialLeftOver { left });
        }
        Ok(self.channel)
    }

    fn is_server(&self) -> bool {
        self.role == PartyRole::Server
    }

    fn begin_op(&mut self) -> (u32, Prg) {
        let op = self.next_op;
        self.next_op += 1;
        (op, op_stream(self.material.seed(), op))
    }

    fn take(&mut self, op_index: u32, kind: MaterialKind, words: usize) -> Result<Vec<u64>> {
        self.material.take(Tag {
            op_index,
            kind,
            words: words as u64,
        })
    }

    fn share(&self, value: RingTensor) -> Share {
        Share {
            party: self.role,
            value,
        }
    }

    /// Sends `mine` and returns `mine + theirs` elementwise (one round).
    fn open_words(&mut self, op: &'static str, mine: &[u64]) -> Result<Vec<u64>> {
        let theirs = self.channel.exchange(&words_to_bytes(mine))?;
        let theirs = bytes_to_words(op, &theirs, mine.len())?;
        Ok(mine
            .iter()
            .zip(&theirs)
            .map(|(a, b)| a.wrapping_add(*b))
            .collect())
    }

    fn comparison(&mut self, value: &Share, bits: u32, with_product: bool) -> Result<Share> {
        let (op, mut stream) = self.begin_op();
        let len = value.value.len();
        let payload = if with_product { 2 } else { 1 };
        let draw = draw_gate(&mut stream, self.role, len);
        let key_words = dcf::encoded_words(bits - 1, payload);
        let kind = if with_product {
            MaterialKind::Relu
        } else {
            MaterialKind::Drelu
        };
        let constant_words = if self.is_server() { len * payload } else { 0 };
        let item = self.take(op, kind, len * key_words + constant_words)?;
        let role = self.role;
        let constant_at = |index: usize| -> [u64; 2] {
            match role {
                PartyRole::Server => {
                    let start = len * key_words + index * payload;
                    let mut constants = [0u64; 2];
                    constants[..payload].copy_from_slice(&item[start..start + payload]);
                    constants
                }
                PartyRole::Client => draw.constants[index],
            }
        };
        let masked: Vec<u64> = value
            .value
            .data()
            .iter()
            .zip(&draw.mask)
            .map(|(x, r)| x.wrapping_add(*r))
            .collect();
        let opened = if with_product {
            self.open_words("relu", &masked)?
        } else {
            // DReLU needs only the low k bits of x + r.
            let bytes_per = (bits as usize).div_ceil(8);
            let theirs = self.channel.exchange(&pack_low_bytes(&masked, bytes_per))?;
            let theirs = unpack_low_bytes("drelu", &theirs, len, bytes_per)?;
            masked
                .iter()
                .zip(&theirs)
                .map(|(a, b)| a.wrapping_add(*b) & low_mask(bits))
                .collect()
        };
        let party = self.role.index();
        // One level-synchronous pass over every key of the op.
        let dcf_inputs: Vec<u64> = opened.iter().map(|&x| gates::dcf_input(x, bits)).collect();
        let shares = dcf::evaluate_batch(
            party,
            bits - 1,
            payload,
            &draw.roots,
            &item[..len * key_words],
            &dcf_inputs,
        )
        .ok_or(PeerMisbehaved::MalformedMaterial(
            "the comparison keys do not decode",
        ))?;
        let mut output = Vec::with_capacity(len);
        for (index, share) in shares.iter().enumerate() {
            let constants = constant_at(index);
            let t = [
                constants[0].wrapping_add(share[0]),
                constants[1].wrapping_add(share[1]),
            ];
            output.push(if with_product {
                gates::relu_share(party, opened[index], bits, t[0], t[1], draw.mask[index])
            } else {
                gates::drelu_share(party, opened[index], bits, t[0])
            });
        }
        Ok(self.share(RingTensor::new(value.value.shape().to_vec(), output)?))
    }

    /// The one-sided product with a fixed weight mask (DESIGN.md §4) for any bilinear
    /// map: the client sends E = X₁ + A_q, the only message, and keeps
    /// bilinear(X₁, D) + C₀; the server keeps bilinear(X₀, W) − bilinear(E, B) + C₁.
    fn weight_product(
        &mut self,
        value: &Share,
        weight: &PartyWeight,
        output_shape: Vec<usize>,
        bilinear: impl Fn(&RingTensor, &RingTensor) -> Result<RingTensor>,
    ) -> Result<Share> {
        let (op, mut stream) = self.begin_op();
        let output_len: usize = output_shape.iter().product();
        let input_shape = value.value.shape().to_vec();
        let product = match weight {
            PartyWeight::Client(masked) => {
                let draw = draw_weight_product(&mut stream, value.value.len(), output_len);
                let a = RingTensor::new(input_shape, draw.a)?;
                let e = value.value.add(&a)?;
                self.channel.send(&words_to_bytes(e.data()))?;
                let mut z = bilinear(&value.value, masked)?;
                z.add_assign(&RingTensor::new(output_shape, draw.c0)?)?;
                z
            }
            PartyWeight::Server(weight) => {
                let c1 = self.take(op, MaterialKind::WeightProduct, output_len)?;
                let e = self.channel.recv()?;
                let e = RingTensor::new(
                    input_shape,
                    bytes_to_words("weight product", &e, value.value.len())?,
                )?;
                let mut z = bilinear(&value.value, &weight.plain)?;
                z.sub_assign(&bilinear(&e, &weight.mask)?)?;
                z.add_assign(&RingTensor::new(output_shape, c1)?)?;
                z
            }
        };
        Ok(self.share(product))
    }

    /// Beaver's protocol: shares of A, B (from the seed), C (seed or correction); open
    /// ε = X − A and δ = Y − B together; Z = C + ε·B + A·δ (+ ε·δ at P0).
    fn beaver(
        &mut self,
        kind: MaterialKind,
        left: &Share,
        right: &Share,
        output_shape: Vec<usize>,
        product: impl Fn(&RingTensor, &RingTensor) -> Result<RingTensor>,
    ) -> Result<Share> {
        let (op, mut stream) = self.begin_op();
        let (a_len, b_len) = (left.value.len(), right.value.len());
        let c_len: usize = output_shape.iter().product();
        let draw = draw_triple(&mut stream, self.role, a_len, b_len, c_len);
        let c = if self.is_server() {
            self.take(op, kind, c_len)?
        } else {
            draw.c
        };
        let a = RingTensor::new(left.value.shape().to_vec(), draw.a)?;
        let b = RingTensor::new(right.value.shape().to_vec(), draw.b)?;
        let mut masked = left.value.sub(&a)?.into_data();
        masked.extend_from_slice(right.value.sub(&b)?.data());
        let opened = self.open_words("beaver", &masked)?;
        let epsilon = RingTensor::new(left.value.shape().to_vec(), opened[..a_len].to_vec())?;
        let delta = RingTensor::new(right.value.shape().to_vec(), opened[a_len..].to_vec())?;
        let mut z = RingTensor::new(output_shape, c)?;
        z.add_assign(&product(&epsilon, &b)?)?;
        z.add_assign(&product(&a, &delta)?)?;
        if self.is_server() {
            z.add_assign(&product(&epsilon, &delta)?)?;
        }
        Ok(self.share(z))
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
        self.weight_product(value, weight, vec![m, n], |x, w| Ok(x.matmul(w)?))
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
        self.weight_product(value, weight, output_shape, |x, w| {
            Ok(x.conv2d(w, stride, padding)?)
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

    fn mul(&mut self, left: &Share, right: &Share) -> Result<Share> {
        same_shape("mul", left.value.shape(), right.value.shape())?;
        let shape = left.value.shape().to_vec();
        self.beaver(
            MaterialKind::ElementwiseTriple,
            left,
            right,
            shape,
            |x, y| Ok(x.mul(y)?),
        )
    }

    fn matmul(&mut self, left: &Share, right: &Share) -> Result<Share> {
        let (m, _, n) = matmul_dimensions("matmul", left.value.shape(), right.value.shape())?;
        self.beaver(
            MaterialKind::MatrixTriple,
            left,
            right,
            vec![m, n],
            |x, y| Ok(x.matmul(y)?),
        )
    }

    fn truncate(&mut self, value: &Share, bits: u32) -> Result<Share> {
        check_shift(bits)?;
        let (op, mut stream) = self.begin_op();
        let len = value.value.len();
        let draw = draw_truncation(&mut stream, self.role, len);
        let (r_c, r_b) = if self.is_server() {
            let mut corrections = self.take(op, MaterialKind::Truncation, 2 * len)?;
            let r_b = corrections.split_off(len);
            (corrections, r_b)
        } else {
            (draw.r_c, draw.r_b)
        };
        let server = self.is_server();
        // Step 1–2: P0 adds 2^62 so x' = x + 2^62 has MSB 0; open c = x' + r.
        let masked: Vec<u64> = value
            .value
            .data()
            .iter()
            .zip(&draw.r)
            .map(|(x, r)| {
                let shifted = if server { x.wrapping_add(1 << 62) } else { *x };
                shifted.wrapping_add(*r)
            })
            .collect();
        let opened = self.open_words("truncate", &masked)?;
        let output = (0..len)
            .map(|index| {
                let c = opened[index];
                let c_msb = c >> 63;
                // Step 3: b = r_b ⊕ c_{ℓ−1} = r_b + c − 2·c·r_b.
                let mut b = r_b[index].wrapping_mul(1u64.wrapping_sub(2 * c_msb));
                // Step 4: y = ĉ − r_c + b·2^(ℓ−1−m); step 5: P0 subtracts 2^(ℓ−2−m).
                let mut y = r_c[index].wrapping_neg();
                if server {
                    b = b.wrapping_add(c_msb);
                    let c_hat = (c << 1) >> (bits + 1);
                    y = y.wrapping_add(c_hat).wrapping_sub(1u64 << (62 - bits));
                }
                y.wrapping_add(b << (63 - bits))
            })
            .collect();
        Ok(self.share(RingTensor::new(value.value.shape().to_vec(), output)?))
    }

    fn drelu(&mut self, value: &Share, bits: u32) -> Result<Share> {
        check_bits("drelu", bits)?;
        self.comparison(value, bits, false)
    }

    fn relu(&mut self, value: &Share, bits: u32) -> Result<Share> {
        check_bits("relu", bits)?;
        self.comparison(value, bits, true)
    }

    fn reveal_to_client(&mut self, value: &Share) -> Result<Option<RingTensor>> {
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
}
