//! The one-sided product with a fixed weight mask (DESIGN.md §4, cookbook §2.2 item 2),
//! for any bilinear map of a secret X and a server-held weight W (matmul, convolution).
//!
//! The mask B of W is long-term (the server holds W and B, the client D = W + B, the
//! dealer B). Per query the client derives A_q and C₀ from its seed, and the dealer
//! sends the server C₁ = bilinear(A_q, B) − C₀. Online the client sends E = X₁ + A_q,
//! the layer's only message (the server's share X₀ is never sent), and keeps
//! bilinear(X₁, D) + C₀; the server keeps bilinear(X₀, W) − bilinear(E, B) + C₁. The two
//! add up to bilinear(X, W) exactly.

use veil_core::RingTensor;
use veil_core::prg::Prg;
use veil_net::Channel;

use super::codec::{bytes_to_words, words_to_bytes};
use super::material::{MaterialItem, MaterialKind, PartyRole};
use super::{MaterialGenerator, Party, PartyWeight, ShapeOnly, Share};
use crate::Result;
use crate::protocol::same_shape;

/// Seed-derived shares of the one-sided weight product: the client's (A, C₀).
struct WeightProductDraw {
    a: Vec<u64>,
    c0: Vec<u64>,
}

fn draw_weight_product(prg: &mut Prg, input_len: usize, output_len: usize) -> WeightProductDraw {
    let a = prg.vec_u64(input_len);
    let c0 = prg.vec_u64(output_len);
    WeightProductDraw { a, c0 }
}

impl MaterialGenerator<'_> {
    /// The dealer's half: the client re-derives A_q and C₀ from its seed; the server gets
    /// C₁ = bilinear(A_q, B) − C₀.
    pub(super) fn weight_product(
        &mut self,
        value: &ShapeOnly,
        mask: &RingTensor,
        output_shape: Vec<usize>,
        bilinear: impl Fn(&RingTensor, &RingTensor) -> Result<RingTensor>,
    ) -> Result<ShapeOnly> {
        let (op, [_, mut client_stream]) = self.begin_op();
        let input_len = value.0.iter().product();
        let draw =
            draw_weight_product(&mut client_stream, input_len, output_shape.iter().product());
        let a = RingTensor::new(value.0.clone(), draw.a)?;
        let mut c1 = bilinear(&a, mask)?;
        same_shape("weight product", &output_shape, c1.shape())?;
        for (value, c0) in c1.data_mut().iter_mut().zip(&draw.c0) {
            *value = value.wrapping_sub(*c0);
        }
        self.emit(
            PartyRole::Server,
            MaterialItem::new(op, MaterialKind::WeightProduct, c1.into_data()),
        )?;
        Ok(ShapeOnly(output_shape))
    }
}

impl<C: Channel> Party<C> {
    /// The parties' half: the client sends E = X₁ + A_q, the only message, and keeps
    /// bilinear(X₁, D) + C₀; the server keeps bilinear(X₀, W) − bilinear(E, B) + C₁.
    pub(super) fn weight_product(
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
}
