//! Ops over padded token sequences, driven by the client's shared attention mask
//! (cookbook §4.5's masking, DESIGN.md §1: the padded length is public, the true length
//! is not):
//! - [`mask_scores`]: padding keys pushed out of attention's softmax, (m − 1)·C added
//!   to every score, local;
//! - [`masked_sum`]: sum pooling over the real tokens, Σ_t m_t·x_t, one batched product
//!   of two secrets (matrix triples, one round) and one truncation.

use veil_mpc::Protocol;

use super::{attention, blocks::public_constant, layout};
use crate::Result;

/// scores `[b, …, keys]` + (mask − 1)·`penalty` with the mask `[b, keys]` broadcast over
/// every head and query. The mask holds 0 and 1 at the plan's scale, so m·C is a local
/// product by the whole number C, and −C one party's public constant: no message.
pub fn mask_scores<P: Protocol>(
    protocol: &mut P,
    scores: &P::Shared,
    mask: &P::Shared,
    penalty: u32,
) -> Result<P::Shared> {
    let shape = protocol.shape_of(scores);
    let mask_shape = protocol.shape_of(mask);
    let (batch, keys) = (mask_shape[0], mask_shape[1].max(1));
    let len: usize = shape.iter().product();
    let per_sample = len / batch.max(1);
    let scaled = protocol.scale(mask, u64::from(penalty))?;
    let fractional_bits = protocol.fixed_point().fractional_bits();
    let shift = public_constant(protocol, f64::from(penalty), fractional_bits, batch * keys)?;
    let shift = protocol.reshape(shift, &mask_shape)?;
    let bias = protocol.sub(&scaled, &shift)?;
    let indices: Vec<usize> = (0..len)
        .map(|position| (position / per_sample.max(1)) * keys + position % keys)
        .collect();
    let bias = protocol.gather(&bias, &indices, &shape)?;
    Ok(protocol.add(scores, &bias)?)
}

/// Σ_t mask_t·values_t for values `[b, tokens, features]` and a mask `[b, tokens]`, as
/// `[b, features]`: the mask as a `[b, 1, tokens]` row times the values.
pub fn masked_sum<P: Protocol>(
    protocol: &mut P,
    values: &P::Shared,
    mask: &P::Shared,
) -> Result<P::Shared> {
    let shape = protocol.shape_of(values);
    let (batch, tokens, features) = (shape[0], shape[1], shape[2]);
    let row = layout::reshape(protocol, mask, &[batch, 1, tokens])?;
    let sum = attention::matmul(protocol, &row, values, false)?;
    Ok(protocol.reshape(sum, &[batch, features])?)
}
