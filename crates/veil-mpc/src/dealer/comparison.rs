//! DReLU and ReLU from DCF keys in the gate model (cookbook §3.4, BCG+21 §4; the gate
//! algebra is in [`crate::gates`], the keys in [`crate::dcf`]).
//!
//! Per element both parties derive a DCF root seed and a share of the mask r from their
//! seeds, the client also its shares of the constants (m, m·r); the dealer sends both
//! parties the keys' correction words (the batch wire form, identical for both) and the
//! server its constant shares after them. Online the parties open x̂ = x + r (only the
//! low k bits for DReLU, all 64 for ReLU), one round, then evaluate all keys of the op
//! in one level-synchronous pass.

use veil_core::RingTensor;
use veil_core::prg::Prg;
use veil_net::Channel;

use super::codec::{pack_low_bytes, unpack_low_bytes};
use super::material::{MaterialItem, MaterialKind, PartyRole};
use super::{MaterialGenerator, Party, ShapeOnly, Share};
use crate::fss::low_mask;
use crate::{PeerMisbehaved, Result, dcf, gates};

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
fn kind(with_product: bool) -> MaterialKind {
    if with_product {
        MaterialKind::Relu
    } else {
        MaterialKind::Drelu
    }
}

impl MaterialGenerator<'_> {
    /// The dealer's half: the gate parameters from r = r₀ + r₁, the DCF keys on k−1 bits
    /// for both parties' roots, and the server's shares of the constants.
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
        let payload = if with_product { 2 } else { 1 };
        let mut alphas = Vec::with_capacity(len);
        let mut betas = Vec::with_capacity(len);
        let mut constants = Vec::with_capacity(len * payload);
        for index in 0..len {
            let mask = server.mask[index].wrapping_add(client.mask[index]);
            let parameters = gates::parameters(mask, bits, with_product);
            alphas.push(parameters.alpha);
            betas.push(parameters.beta);
            for lane in 0..payload {
                constants
                    .push(parameters.constants[lane].wrapping_sub(client.constants[index][lane]));
            }
        }
        let mut corrections = Vec::with_capacity(len * dcf::encoded_words(bits - 1, payload));
        dcf::generate_batch(
            bits - 1,
            payload,
            &alphas,
            &betas,
            [&server.roots, &client.roots],
            &mut corrections,
        )
        .ok_or_else(|| crate::Error::ApiMisuse {
            op: "comparison",
            detail: format!("no DCF keys for {bits}-bit comparisons"),
        })?;
        let kind = kind(with_product);
        let mut server_words = corrections.clone();
        server_words.extend_from_slice(&constants);
        self.emit(PartyRole::Server, MaterialItem::new(op, kind, server_words))?;
        self.emit(PartyRole::Client, MaterialItem::new(op, kind, corrections))?;
        Ok(shape.clone())
    }
}

impl<C: Channel> Party<C> {
    /// The parties' half: open x̂ = x + r, evaluate the keys at x̂'s low k−1 bits, and
    /// turn the shares of t (and t·r) into shares of DReLU (or ReLU).
    pub(super) fn comparison(
        &mut self,
        value: &Share,
        bits: u32,
        with_product: bool,
    ) -> Result<Share> {
        let (op, mut stream) = self.begin_op();
        let len = value.value.len();
        let payload = if with_product { 2 } else { 1 };
        let draw = draw_gate(&mut stream, self.role, len);
        let key_words = dcf::encoded_words(bits - 1, payload);
        let constant_words = if self.is_server() { len * payload } else { 0 };
        let item = self.take(op, kind(with_product), len * key_words + constant_words)?;
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
}
