//! Public rearrangements of a secret (reshape, transpose): local, no message.

use veil_model::ir::transpose_indices;
use veil_mpc::Protocol;

use crate::Result;

/// A copy of the same values under `shape` (as many elements; the value itself may be
/// read again, which a moving reshape would not allow).
pub fn reshape<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    shape: &[usize],
) -> Result<P::Shared> {
    let len: usize = shape.iter().product();
    Ok(protocol.gather(value, &(0..len).collect::<Vec<_>>(), shape)?)
}

/// The per-sample dimensions permuted; `output_shape` is the node's shape.
pub fn transpose<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    permutation: &[usize],
    output_shape: &[usize],
) -> Result<P::Shared> {
    let indices = transpose_indices(&protocol.shape_of(value), permutation);
    Ok(protocol.gather(value, &indices, output_shape)?)
}
