//! Precise truncation TruncPr (cookbook §1.4): an arithmetic shift right by m bits of a
//! shared x with |x| < 2^62, in one round; the result is the floor or one ulp above it.
//!
//! The dealer draws r (shared), and gives the parties shares of r_c = (r mod 2^63) >> m
//! and of r_b = bit 63 of r: the client derives r and its shares of r_c and r_b from its
//! seed, the server derives its share of r and gets its shares of r_c and r_b as
//! corrections. Online the parties open c = x + 2^62 + r (P0 adds the offset, so the
//! shifted value's MSB is 0) and each computes its share of the shift locally.

use veil_core::RingTensor;
use veil_core::prg::Prg;
use veil_net::Channel;

use super::material::{MaterialItem, MaterialKind, PartyRole};
use super::{MaterialGenerator, Party, ShapeOnly, Share};
use crate::Result;

/// Seed-derived truncation shares: r for both; (r_c, r_b) for the client only (the
/// server's come as corrections).
struct TruncationDraw {
    r: Vec<u64>,
    r_c: Vec<u64>,
    r_b: Vec<u64>,
}

fn draw_truncation(prg: &mut Prg, role: PartyRole, len: usize) -> TruncationDraw {
    let r = prg.vec_u64(len);
    let (r_c, r_b) = match role {
        PartyRole::Client => (prg.vec_u64(len), prg.vec_u64(len)),
        PartyRole::Server => (Vec::new(), Vec::new()),
    };
    TruncationDraw { r, r_c, r_b }
}

impl MaterialGenerator<'_> {
    /// The dealer's half: the server's shares of r_c and r_b (all r_c corrections, then
    /// all r_b corrections), from r = r₀ + r₁ and the client's seed-derived shares.
    pub(super) fn truncation(&mut self, value: &ShapeOnly, bits: u32) -> Result<ShapeOnly> {
        let (op, [mut server_stream, mut client_stream]) = self.begin_op();
        let len = value.0.iter().product();
        let server = draw_truncation(&mut server_stream, PartyRole::Server, len);
        let client = draw_truncation(&mut client_stream, PartyRole::Client, len);
        let mut corrections = Vec::with_capacity(2 * len);
        let mut msb_corrections = Vec::with_capacity(len);
        for index in 0..len {
            let r = server.r[index].wrapping_add(client.r[index]);
            // Cookbook §1.4: r_c = (r mod 2^63) >> m, r_b = bit 63 of r.
            let r_c = (r << 1) >> (bits + 1);
            let r_b = r >> 63;
            corrections.push(r_c.wrapping_sub(client.r_c[index]));
            msb_corrections.push(r_b.wrapping_sub(client.r_b[index]));
        }
        corrections.extend_from_slice(&msb_corrections);
        self.emit(
            PartyRole::Server,
            MaterialItem::new(op, MaterialKind::Truncation, corrections),
        )?;
        Ok(value.clone())
    }
}

impl<C: Channel> Party<C> {
    /// The parties' half: open c = x + 2^62 + r, then steps 3–5 of cookbook §1.4 locally.
    pub(super) fn truncation(&mut self, value: &Share, bits: u32) -> Result<Share> {
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
}
