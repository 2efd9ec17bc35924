//! bit·x for a secret 0/1 ring integer and a secret x, in one round of one bit and one
//! ring element each way (a Beaver product opens two ring elements).
//!
//! Per element both parties draw a value mask share r_b and a bit mask share q_b; the
//! bit mask is ρ = (q₀ + q₁) mod 2, which neither party knows. The client derives its
//! shares of ρ and ρ·r (r = r₀ + r₁) from its seed; the dealer sends the server its
//! shares. Online each party opens the low bit of b_b + q_b (their sum mod 2 is
//! w = bit ⊕ ρ, because addition mod 2 is XOR) and x_b + r_b (x̂ = x + r). Then
//! bit = w + (1 − 2w)·ρ and
//!
//! bit·x = w·x̂ − w·r + (1 − 2w)·(ρ·x̂ − ρ·r),
//!
//! linear in the shares of r, ρ and ρ·r. Both openings are uniform: w because ρ is, x̂
//! because r is. The bit must be 0 or 1 (a DReLU's output); anything else gives a wrong
//! product, as the [`crate::Protocol::select`] contract says.

use veil_core::RingTensor;
use veil_core::prg::Prg;
use veil_net::Channel;

use super::codec::{bytes_to_words, pack_bits, unpack_bits, words_to_bytes};
use super::material::{MaterialItem, MaterialKind, PartyRole};
use super::{MaterialGenerator, Party, ShapeOnly, Share};
use crate::{PeerMisbehaved, Result};

/// Seed-derived select shares: the masks' shares for both; the client's shares of ρ and
/// ρ·r.
struct SelectDraw {
    value_mask: Vec<u64>,
    bit_mask: Vec<u64>,
    bit: Vec<u64>,
    bit_times_mask: Vec<u64>,
}

fn draw_select(prg: &mut Prg, role: PartyRole, len: usize) -> SelectDraw {
    let value_mask = prg.vec_u64(len);
    let bit_mask = prg.vec_u64(len);
    let (bit, bit_times_mask) = match role {
        PartyRole::Client => (prg.vec_u64(len), prg.vec_u64(len)),
        PartyRole::Server => (Vec::new(), Vec::new()),
    };
    SelectDraw {
        value_mask,
        bit_mask,
        bit,
        bit_times_mask,
    }
}

impl MaterialGenerator<'_> {
    /// The dealer's half: the server's shares of ρ (all of them), then of ρ·r.
    pub(super) fn bit_select(&mut self, shape: &ShapeOnly) -> Result<ShapeOnly> {
        let (op, [mut server_stream, mut client_stream]) = self.begin_op();
        let len = shape.0.iter().product();
        let server = draw_select(&mut server_stream, PartyRole::Server, len);
        let client = draw_select(&mut client_stream, PartyRole::Client, len);
        let mut words = Vec::with_capacity(2 * len);
        let mut products = Vec::with_capacity(len);
        for index in 0..len {
            let rho = server.bit_mask[index].wrapping_add(client.bit_mask[index]) & 1;
            let mask = server.value_mask[index].wrapping_add(client.value_mask[index]);
            words.push(rho.wrapping_sub(client.bit[index]));
            products.push(
                rho.wrapping_mul(mask)
                    .wrapping_sub(client.bit_times_mask[index]),
            );
        }
        words.extend_from_slice(&products);
        self.emit(
            PartyRole::Server,
            MaterialItem::new(op, MaterialKind::BitSelect, words),
        )?;
        Ok(shape.clone())
    }
}

impl<C: Channel> Party<C> {
    /// The parties' half: open w = bit ⊕ ρ (one bit) and x̂ = x + r (one word) in one
    /// message, then combine locally.
    pub(super) fn bit_select(&mut self, bit: &Share, value: &Share) -> Result<Share> {
        let (op, mut stream) = self.begin_op();
        let len = value.value.len();
        let draw = draw_select(&mut stream, self.role, len);
        let (rho, rho_mask) = if self.is_server() {
            let mut words = self.take(op, MaterialKind::BitSelect, 2 * len)?;
            let products = words.split_off(len);
            (words, products)
        } else {
            (draw.bit, draw.bit_times_mask)
        };
        let mut bits = vec![0u64; len.div_ceil(64)];
        for (index, (share, mask)) in bit.value.data().iter().zip(&draw.bit_mask).enumerate() {
            bits[index / 64] |= (share.wrapping_add(*mask) & 1) << (index % 64);
        }
        let masked: Vec<u64> = value
            .value
            .data()
            .iter()
            .zip(&draw.value_mask)
            .map(|(x, r)| x.wrapping_add(*r))
            .collect();
        let bit_bytes = len.div_ceil(8);
        let mut message = pack_bits(&bits, len);
        message.extend_from_slice(&words_to_bytes(&masked));
        let theirs = self.channel.exchange(&message)?;
        if theirs.len() != bit_bytes + 8 * len {
            return Err(PeerMisbehaved::WrongMessageLength {
                op: "select",
                expected: bit_bytes + 8 * len,
                found: theirs.len(),
            }
            .into());
        }
        let their_bits = unpack_bits("select", &theirs[..bit_bytes], len)?;
        let their_values = bytes_to_words("select", &theirs[bit_bytes..], len)?;
        let server = self.is_server();
        let output = (0..len)
            .map(|index| {
                let w = ((bits[index / 64] ^ their_bits[index / 64]) >> (index % 64)) & 1;
                let opened = masked[index].wrapping_add(their_values[index]);
                let sign = 1u64.wrapping_sub(2 * w);
                let public = if server { w.wrapping_mul(opened) } else { 0 };
                public
                    .wrapping_sub(w.wrapping_mul(draw.value_mask[index]))
                    .wrapping_add(
                        sign.wrapping_mul(
                            rho[index]
                                .wrapping_mul(opened)
                                .wrapping_sub(rho_mask[index]),
                        ),
                    )
            })
            .collect();
        Ok(self.share(RingTensor::new(value.value.shape().to_vec(), output)?))
    }
}
