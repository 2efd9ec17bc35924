//! The dealer's generating protocol: it runs the executor over the public plan and, at
//! every step, makes the material both parties will consume at that step (DESIGN.md §3).
//!
//! For each session it draws fresh seeds from the OS RNG, one per party. Each party
//! re-derives from its seed everything that can be random (masks A, shares of r, DCF
//! root seeds); the dealer sends the server only corrections (C₁, truncation and gate
//! constants) and both parties the DCF correction words. The weight mask B comes from
//! the long-term weight seed; it is the only replayed stream.

use std::sync::Arc;

use veil_core::prg::Seed;
use veil_core::{FixedPoint, RingTensor};

use super::material::{
    MaterialItem, MaterialKind, PartyMaterial, PartyRole, SessionId, draw_gate, draw_triple,
    draw_truncation, draw_weight_product, op_stream,
};
use super::parameters::DealerParameters;
use crate::protocol::{
    check_bits, check_shift, conv2d_output_shape, matmul_dimensions, same_shape,
};
use crate::{Protocol, Result, dcf, gates};

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

    fn emit(&mut self, role: PartyRole, item: MaterialItem) -> Result<()> {
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
        let outputs = [
            PartyMaterial::new(session_id, PartyRole::Server, seeds[0].clone()),
            PartyMaterial::new(session_id, PartyRole::Client, seeds[1].clone()),
        ];
        Ok(Self {
            fixed_point,
            parameters,
            seeds,
            next_op: 0,
            outputs,
            sink: None,
        })
    }

    /// The session id (public).
    pub fn session_id(&self) -> SessionId {
        self.outputs[0].session_id()
    }

    /// Ends generation: (the server's material, the client's material).
    pub fn finish(self) -> (PartyMaterial, PartyMaterial) {
        let [server, client] = self.outputs;
        (server, client)
    }

    fn begin_op(&mut self) -> (u32, [veil_core::prg::Prg; 2]) {
        let op = self.next_op;
        self.next_op += 1;
        (
            op,
            [op_stream(&self.seeds[0], op), op_stream(&self.seeds[1], op)],
        )
    }

    /// The one-sided product with a fixed weight mask for any bilinear map (matmul,
    /// convolution): the client re-derives A and C₀ from its seed; the server gets
    /// C₁ = bilinear(A, B) − C₀.
    fn weight_product(
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

    /// A Beaver triple (elementwise or matrix): A and B from both parties' seeds, the
    /// client's C share from its seed, the server's C share as a correction.
    fn triple(
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

    fn gate(&mut self, shape: &ShapeOnly, bits: u32, with_product: bool) -> Result<ShapeOnly> {
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
        let kind = if with_product {
            MaterialKind::Relu
        } else {
            MaterialKind::Drelu
        };
        let mut server_words = corrections.clone();
        server_words.extend_from_slice(&constants);
        self.emit(PartyRole::Server, MaterialItem::new(op, kind, server_words))?;
        self.emit(PartyRole::Client, MaterialItem::new(op, kind, corrections))?;
        Ok(shape.clone())
    }
}

fn add_words(left: &[u64], right: &[u64]) -> Vec<u64> {
    left.iter()
        .zip(right)
        .map(|(x, y)| x.wrapping_add(*y))
        .collect()
}

fn elementwise_product(a: &[u64], b: &[u64]) -> Result<Vec<u64>> {
    Ok(a.iter().zip(b).map(|(x, y)| x.wrapping_mul(*y)).collect())
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
        let (m, k, n) = matmul_dimensions("matmul", &left.0, &right.0)?;
        self.triple(MaterialKind::MatrixTriple, [m * k, k * n, m * n], |a, b| {
            Ok(RingTensor::new(vec![m, k], a.to_vec())?
                .matmul(&RingTensor::new(vec![k, n], b.to_vec())?)?
                .into_data())
        })?;
        Ok(ShapeOnly(vec![m, n]))
    }

    fn truncate(&mut self, value: &ShapeOnly, bits: u32) -> Result<ShapeOnly> {
        check_shift(bits)?;
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

    fn drelu(&mut self, value: &ShapeOnly, bits: u32) -> Result<ShapeOnly> {
        check_bits("drelu", bits)?;
        self.gate(value, bits, false)
    }

    fn relu(&mut self, value: &ShapeOnly, bits: u32) -> Result<ShapeOnly> {
        check_bits("relu", bits)?;
        self.gate(value, bits, true)
    }

    fn reveal_to_client(&mut self, _value: &ShapeOnly) -> Result<Option<RingTensor>> {
        Ok(None)
    }
}
