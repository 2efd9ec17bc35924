//! Attention's products of two secrets (Q·Kᵀ and P·V, every head of every sample at
//! once): one batched matrix product from matrix triples (cookbook §2.1), one round,
//! then one truncation per output element.

use veil_mpc::Protocol;

use super::layout;
use crate::Result;

/// `[b, …, m, k]·[b, …, k, n]` (or the right operand `[b, …, n, k]`, read transposed),
/// truncated back to the plan's scale.
pub fn matmul<P: Protocol>(
    protocol: &mut P,
    left: &P::Shared,
    right: &P::Shared,
    transpose_right: bool,
) -> Result<P::Shared> {
    let (left_shape, right_shape) = (protocol.shape_of(left), protocol.shape_of(right));
    let rank = left_shape.len();
    let (m, k) = (left_shape[rank - 2], left_shape[rank - 1]);
    let products: usize = left_shape[..rank - 2].iter().product();
    let n = if transpose_right {
        right_shape[rank - 2]
    } else {
        right_shape[rank - 1]
    };
    let left = layout::reshape(protocol, left, &[products, m, k])?;
    // The right operands as `[k, n]` blocks: a public rearrangement, local.
    let right_indices: Vec<usize> = (0..products)
        .flat_map(|product| {
            (0..k).flat_map(move |inner| {
                (0..n).map(move |column| {
                    product * k * n
                        + if transpose_right {
                            column * k + inner
                        } else {
                            inner * n + column
                        }
                })
            })
        })
        .collect();
    let right = protocol.gather(right, &right_indices, &[products, k, n])?;
    let product = protocol.matmul(&left, &right)?;
    let fractional_bits = protocol.fixed_point().fractional_bits();
    let product = protocol.truncate(&product, fractional_bits)?;
    let mut shape = left_shape[..rank - 2].to_vec();
    shape.extend([m, n]);
    Ok(protocol.reshape(product, &shape)?)
}
