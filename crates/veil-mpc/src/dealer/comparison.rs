//! DReLU and ReLU in the gate model (cookbook §3.4, BCG+21 §4; the gate algebra is in
//! [`crate::gates`]), with either of two kinds of keys, which the dealer chooses
//! ([`ComparisonKeys`]) and the parties follow, item by item:
//!
//! - **DCF keys** ([`crate::dcf`]), one round. Per element both parties derive a DCF
//!   root seed and a share of the mask r from their seeds, the client also its shares of
//!   the constants (m, m·r); the dealer sends both parties the keys' correction words
//!   (the batch wire form, identical for both) and the server its constant shares after
//!   them. Online the parties open x̂ = x + r (only the low k bits for DReLU, all 64 for
//!   ReLU), one round, then evaluate all keys of the op in one level-synchronous pass.
//! - **Point-function keys** ([`crate::dpf`]), about half the bytes (16·(k − 8) + 16
//!   per element against the DCF's 24·(k − 1) or 32·(k − 1)), two rounds. The keys give
//!   XOR shares of 1{y < α}; per element the client derives from its seed its share σ₁
//!   of σ = m ⊕ ρ and its additive shares of ρ and ρ·r, where ρ = a₀ ⊕ a₁ takes one bit
//!   from each party's stream (so neither knows it), and the server gets its σ₀, ρ₀ and
//!   (ρ·r)₀ after the keys. Online the parties open x̂ as above, evaluate, and open
//!   w = u ⊕ σ = t ⊕ ρ, one bit each way (`gates::point_t_shares`).

use veil_core::RingTensor;
use veil_core::prg::Prg;
use veil_net::Channel;

use super::codec::{pack_bits, pack_low_bytes, unpack_bits, unpack_low_bytes};
use super::material::{MaterialItem, MaterialKind, PartyRole};
use super::{MaterialGenerator, Party, ShapeOnly, Share};
use crate::fss::low_mask;
use crate::{PeerMisbehaved, Result, dcf, dpf, gates};

/// The keys a dealer makes for comparisons. Both serve every comparison exactly; they
/// trade preprocessing bytes against rounds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ComparisonKeys {
    /// BCG+21 DCF keys: one round per comparison step.
    Dcf,
    /// Point-function (DPF) keys: about half the preprocessing, one more round of one
    /// bit per element.
    #[default]
    Point,
}

impl ComparisonKeys {
    /// Both, in the order the command line lists them.
    pub const ALL: [ComparisonKeys; 2] = [ComparisonKeys::Point, ComparisonKeys::Dcf];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            ComparisonKeys::Dcf => "dcf",
            ComparisonKeys::Point => "dpf",
        }
    }

    /// The keys of a command-line name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|keys| keys.name() == name)
    }
}

/// Seed-derived comparison-gate shares: DCF root seeds and mask shares for both; shares
/// of the constants (m, m·r) for the client only.
struct GateDraw {
    roots: Vec<u128>,
    mask: Vec<u64>,
    constants: Vec<[u64; 2]>,
}

fn draw_gate(prg: &mut Prg, role: PartyRole, len: usize) -> GateDraw {
    let roots = (0..len).map(|_| prg.next_u128()).collect();
    let mask = prg.vec_u64(len);
    let constants = match role {
        PartyRole::Client => (0..len).map(|_| [prg.next_u64(), prg.next_u64()]).collect(),
        PartyRole::Server => Vec::new(),
    };
    GateDraw {
        roots,
        mask,
        constants,
    }
}

/// The material kind of a comparison: ReLU carries the product lane, DReLU does not.
fn kind(keys: ComparisonKeys, with_product: bool) -> MaterialKind {
    match (keys, with_product) {
        (ComparisonKeys::Dcf, true) => MaterialKind::Relu,
        (ComparisonKeys::Dcf, false) => MaterialKind::Drelu,
        (ComparisonKeys::Point, true) => MaterialKind::ReluPoint,
        (ComparisonKeys::Point, false) => MaterialKind::DreluPoint,
    }
}

/// Seed-derived shares of a point-function gate, after [`GateDraw`]'s: for the client
/// its σ₁ (packed bits) and its additive shares of ρ and (ReLU) ρ·r; for both the bits
/// a_b of ρ = a₀ ⊕ a₁, which only the dealer combines.
struct PointDraw {
    sigma: Vec<u64>,
    rho: Vec<u64>,
    rho_mask: Vec<u64>,
    rho_half: Vec<u64>,
}

fn draw_point(prg: &mut Prg, role: PartyRole, len: usize, with_product: bool) -> PointDraw {
    let bit_words = len.div_ceil(64);
    let (sigma, rho, rho_mask) = match role {
        PartyRole::Client => (
            prg.vec_u64(bit_words),
            prg.vec_u64(len),
            if with_product {
                prg.vec_u64(len)
            } else {
                Vec::new()
            },
        ),
        PartyRole::Server => (Vec::new(), Vec::new(), Vec::new()),
    };
    PointDraw {
        sigma,
        rho,
        rho_mask,
        rho_half: prg.vec_u64(bit_words),
    }
}

fn bit(words: &[u64], index: usize) -> u64 {
    (words[index / 64] >> (index % 64)) & 1
}

impl MaterialGenerator<'_> {
    /// The dealer's half of a comparison, with the keys this generator makes.
    pub(super) fn gate(
        &mut self,
        shape: &ShapeOnly,
        bits: u32,
        with_product: bool,
    ) -> Result<ShapeOnly> {
        let (op, [mut server_stream, mut client_stream]) = self.begin_op();
        let len = shape.0.iter().product();
        let server = draw_gate(&mut server_stream, PartyRole::Server, len);
        let client = draw_gate(&mut client_stream, PartyRole::Client, len);
        let keys = self.comparison_keys();
        let parameters: Vec<gates::GateParameters> = (0..len)
            .map(|index| {
                let mask = server.mask[index].wrapping_add(client.mask[index]);
                gates::parameters(mask, bits, with_product)
            })
            .collect();
        let alphas: Vec<u64> = parameters.iter().map(|p| p.alpha).collect();
        let unsupported = || crate::Error::ApiMisuse {
            op: "comparison",
            detail: format!("no {} keys for {bits}-bit comparisons", keys.name()),
        };
        let (server_words, client_words) = match keys {
            ComparisonKeys::Dcf => {
                // The DCF on k−1 bits pays β; the server gets its shares of (m, m·r).
                let payload = if with_product { 2 } else { 1 };
                let betas: Vec<_> = parameters.iter().map(|p| p.beta).collect();
                let mut corrections =
                    Vec::with_capacity(len * dcf::encoded_words(bits - 1, payload));
                dcf::generate_batch(
                    bits - 1,
                    payload,
                    &alphas,
                    &betas,
                    [&server.roots, &client.roots],
                    &mut corrections,
                )
                .ok_or_else(unsupported)?;
                let mut server_words = corrections.clone();
                for (index, parameters) in parameters.iter().enumerate() {
                    for lane in 0..payload {
                        server_words.push(
                            parameters.constants[lane].wrapping_sub(client.constants[index][lane]),
                        );
                    }
                }
                (server_words, corrections)
            }
            ComparisonKeys::Point => {
                let server_point =
                    draw_point(&mut server_stream, PartyRole::Server, len, with_product);
                let client_point =
                    draw_point(&mut client_stream, PartyRole::Client, len, with_product);
                let mut corrections = Vec::with_capacity(len * dpf::key_words(bits - 1));
                dpf::generate_batch(
                    bits - 1,
                    &alphas,
                    [&server.roots, &client.roots],
                    &mut corrections,
                )
                .ok_or_else(unsupported)?;
                let mut sigma = vec![0u64; len.div_ceil(64)];
                let mut rho_shares = Vec::with_capacity(len);
                let mut rho_mask_shares = Vec::with_capacity(if with_product { len } else { 0 });
                for (index, parameters) in parameters.iter().enumerate() {
                    let rho =
                        bit(&server_point.rho_half, index) ^ bit(&client_point.rho_half, index);
                    // σ₀ = m ⊕ ρ ⊕ σ₁.
                    let sigma_bit = parameters.constants[0] ^ rho ^ bit(&client_point.sigma, index);
                    sigma[index / 64] |= sigma_bit << (index % 64);
                    rho_shares.push(rho.wrapping_sub(client_point.rho[index]));
                    if with_product {
                        let mask = server.mask[index].wrapping_add(client.mask[index]);
                        rho_mask_shares.push(
                            rho.wrapping_mul(mask)
                                .wrapping_sub(client_point.rho_mask[index]),
                        );
                    }
                }
                let mut server_words = corrections.clone();
                server_words.extend_from_slice(&sigma);
                server_words.extend_from_slice(&rho_shares);
                server_words.extend_from_slice(&rho_mask_shares);
                (server_words, corrections)
            }
        };
        let kind = kind(keys, with_product);
        self.emit(PartyRole::Server, MaterialItem::new(op, kind, server_words))?;
        self.emit(PartyRole::Client, MaterialItem::new(op, kind, client_words))?;
        Ok(shape.clone())
    }
}

impl<C: Channel> Party<C> {
    /// The parties' half: open x̂ = x + r, evaluate the keys at x̂'s low k−1 bits (with
    /// the point-function keys, then open w), and turn the shares of t (and t·r) into
    /// shares of DReLU (or ReLU).
    pub(super) fn comparison(
        &mut self,
        value: &Share,
        bits: u32,
        with_product: bool,
    ) -> Result<Share> {
        let (op, mut stream) = self.begin_op();
        let len = value.value.len();
        let draw = draw_gate(&mut stream, self.role, len);
        // The dealer chose the keys; the item says which.
        let keys = match self.next_kind(op)? {
            Some(MaterialKind::DreluPoint | MaterialKind::ReluPoint) => ComparisonKeys::Point,
            _ => ComparisonKeys::Dcf,
        };
        let payload = if with_product { 2 } else { 1 };
        let key_words = match keys {
            ComparisonKeys::Dcf => dcf::encoded_words(bits - 1, payload),
            ComparisonKeys::Point => dpf::key_words(bits - 1),
        };
        let server_words = match keys {
            ComparisonKeys::Dcf => len * payload,
            ComparisonKeys::Point => len.div_ceil(64) + len * payload,
        };
        let extra_words = if self.is_server() { server_words } else { 0 };
        let item = self.take(op, kind(keys, with_product), len * key_words + extra_words)?;
        let (key_material, extra) = item.split_at(len * key_words);
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
        let inputs: Vec<u64> = opened.iter().map(|&x| gates::dcf_input(x, bits)).collect();
        let malformed = PeerMisbehaved::MalformedMaterial("the comparison keys do not decode");
        // Shares of (t, t·r) per element.
        let t_shares: Vec<[u64; 2]> = match keys {
            ComparisonKeys::Dcf => {
                // One level-synchronous pass over every key of the op.
                let shares = dcf::evaluate_batch(
                    party,
                    bits - 1,
                    payload,
                    &draw.roots,
                    key_material,
                    &inputs,
                )
                .ok_or(malformed)?;
                shares
                    .iter()
                    .enumerate()
                    .map(|(index, share)| {
                        let constants = match self.role {
                            PartyRole::Server => {
                                let mut constants = [0u64; 2];
                                constants[..payload]
                                    .copy_from_slice(&extra[index * payload..][..payload]);
                                constants
                            }
                            PartyRole::Client => draw.constants[index],
                        };
                        [
                            constants[0].wrapping_add(share[0]),
                            constants[1].wrapping_add(share[1]),
                        ]
                    })
                    .collect()
            }
            ComparisonKeys::Point => {
                let point = draw_point(&mut stream, self.role, len, with_product);
                let (sigma, rho, rho_mask) = match self.role {
                    PartyRole::Server => {
                        let (sigma, rest) = extra.split_at(len.div_ceil(64));
                        let (rho, rho_mask) = rest.split_at(len);
                        (sigma, rho, rho_mask)
                    }
                    PartyRole::Client => (&point.sigma[..], &point.rho[..], &point.rho_mask[..]),
                };
                let mut mine =
                    dpf::evaluate_batch(party, bits - 1, &draw.roots, key_material, &inputs)
                        .ok_or(malformed)?;
                for (word, sigma) in mine.iter_mut().zip(sigma) {
                    *word ^= sigma;
                }
                let theirs = self.channel.exchange(&pack_bits(&mine, len))?;
                let theirs = unpack_bits("comparison bit", &theirs, len)?;
                (0..len)
                    .map(|index| {
                        let opened_bit = bit(&mine, index) ^ bit(&theirs, index);
                        let rho_mask = if with_product { rho_mask[index] } else { 0 };
                        gates::point_t_shares(
                            party,
                            opened_bit,
                            rho[index],
                            rho_mask,
                            draw.mask[index],
                        )
                    })
                    .collect()
            }
        };
        let output = t_shares
            .iter()
            .enumerate()
            .map(|(index, t)| {
                if with_product {
                    gates::relu_share(party, opened[index], bits, t[0], t[1], draw.mask[index])
                } else {
                    gates::drelu_share(party, opened[index], bits, t[0])
                }
            })
            .collect();
        Ok(self.share(RingTensor::new(value.value.shape().to_vec(), output)?))
    }
}
