//! Beaver products of two secrets, elementwise and matrix (cookbook §2.1), from a triple
//! (A, B, C = A·B) of the product's shape.
//!
//! Both parties derive their shares of A and B from their seeds, the client its share
//! of C too; the dealer sends the server its share of C as a correction. Online the
//! parties open ε = X − A and δ = Y − B together (one round) and each keeps
//! Z = C + ε·B + A·δ, P0 adding ε·δ.
//!
//! A square needs only a pair (A, C = A²): the parties open ε = X − A alone and keep
//! Z = C + 2ε·A, P0 adding ε² — half the opening of a product.

use veil_core::RingTensor;
use veil_core::prg::Prg;
use veil_net::Channel;

use super::material::{MaterialItem, MaterialKind, PartyRole};
use super::{MaterialGenerator, Party, Share};
use crate::Result;

/// Seed-derived triple shares: A and B for both; C for the client only.
struct TripleDraw {
    a: Vec<u64>,
    b: Vec<u64>,
    c: Vec<u64>,
}

fn draw_triple(
    prg: &mut Prg,
    role: PartyRole,
    a_len: usize,
    b_len: usize,
    c_len: usize,
) -> TripleDraw {
    let a = prg.vec_u64(a_len);
    let b = prg.vec_u64(b_len);
    let c = match role {
        PartyRole::Client => prg.vec_u64(c_len),
        PartyRole::Server => Vec::new(),
    };
    TripleDraw { a, b, c }
}

fn add_words(left: &[u64], right: &[u64]) -> Vec<u64> {
    left.iter()
        .zip(right)
        .map(|(x, y)| x.wrapping_add(*y))
        .collect()
}

/// The elementwise product of two word vectors, as the triple's `product`.
pub(super) fn elementwise_product(a: &[u64], b: &[u64]) -> Result<Vec<u64>> {
    Ok(a.iter().zip(b).map(|(x, y)| x.wrapping_mul(*y)).collect())
}

/// Seed-derived square-pair shares: A for both, C for the client only.
fn draw_square(prg: &mut Prg, role: PartyRole, len: usize) -> (Vec<u64>, Vec<u64>) {
    let a = prg.vec_u64(len);
    let c = match role {
        PartyRole::Client => prg.vec_u64(len),
        PartyRole::Server => Vec::new(),
    };
    (a, c)
}

impl MaterialGenerator<'_> {
    /// The dealer's half of a square pair: A from both seeds, the client's C share from
    /// its seed, the server's C share as a correction.
    pub(super) fn square_pair(&mut self, len: usize) -> Result<()> {
        let (op, [mut server_stream, mut client_stream]) = self.begin_op();
        let (server_a, _) = draw_square(&mut server_stream, PartyRole::Server, len);
        let (client_a, client_c) = draw_square(&mut client_stream, PartyRole::Client, len);
        let correction = add_words(&server_a, &client_a)
            .iter()
            .zip(&client_c)
            .map(|(a, c1)| a.wrapping_mul(*a).wrapping_sub(*c1))
            .collect();
        self.emit(
            PartyRole::Server,
            MaterialItem::new(op, MaterialKind::SquareTriple, correction),
        )?;
        Ok(())
    }

    /// The dealer's half: A and B from both parties' seeds, the client's C share from
    /// its seed, the server's C share as a correction.
    pub(super) fn triple(
        &mut self,
        kind: MaterialKind,
        lengths: [usize; 3],
        product: impl Fn(&[u64], &[u64]) -> Result<Vec<u64>>,
    ) -> Result<()> {
        let [a_len, b_len, c_len] = lengths;
        let (op, [mut server_stream, mut client_stream]) = self.begin_op();
        let server = draw_triple(&mut server_stream, PartyRole::Server, a_len, b_len, c_len);
        let client = draw_triple(&mut client_stream, PartyRole::Client, a_len, b_len, c_len);
        let a = add_words(&server.a, &client.a);
        let b = add_words(&server.b, &client.b);
        let c = product(&a, &b)?;
        let correction = c
            .iter()
            .zip(&client.c)
            .map(|(c, c1)| c.wrapping_sub(*c1))
            .collect();
        self.emit(PartyRole::Server, MaterialItem::new(op, kind, correction))?;
        Ok(())
    }
}

impl<C: Channel> Party<C> {
    /// The parties' half of a square: open ε = X − A (one round); Z = C + 2ε·A, P0
    /// adding ε².
    pub(super) fn square_share(&mut self, value: &Share) -> Result<Share> {
        let (op, mut stream) = self.begin_op();
        let len = value.value.len();
        let (a, client_c) = draw_square(&mut stream, self.role, len);
        let c = if self.is_server() {
            self.take(op, MaterialKind::SquareTriple, len)?
        } else {
            client_c
        };
        let masked: Vec<u64> = value
            .value
            .data()
            .iter()
            .zip(&a)
            .map(|(x, a)| x.wrapping_sub(*a))
            .collect();
        let epsilon = self.open_words("square", &masked)?;
        let server = self.is_server();
        let z = (0..len)
            .map(|index| {
                let e = epsilon[index];
                let mut z = c[index].wrapping_add(e.wrapping_mul(a[index]).wrapping_mul(2));
                if server {
                    z = z.wrapping_add(e.wrapping_mul(e));
                }
                z
            })
            .collect();
        Ok(self.share(RingTensor::new(value.value.shape().to_vec(), z)?))
    }

    /// The parties' half: shares of A, B (from the seed), C (seed or correction); open
    /// ε = X − A and δ = Y − B together; Z = C + ε·B + A·δ (+ ε·δ at P0).
    pub(super) fn beaver(
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
