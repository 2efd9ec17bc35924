//! Pooling over square windows of each channel: max pooling as a comparison tree
//! (max(a, b) = b + ReLU(a − b), one round per level; the compiler moves ReLU after it),
//! and average pooling as a sum, one public product and one truncation.

use veil_model::ir::pooling_indices;
use veil_mpc::Protocol;

use super::blocks::tournament_max;

use crate::{Error, Result};

/// Max pooling as a comparison tree: the window's k² candidates are stacked, and each
/// level halves them with max(a, b) = b + ReLU(a − b), one round per level.
pub fn max_pool<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    input_shape: &[usize],
    output_shape: &[usize],
    (kernel, stride): (usize, usize),
    bits: u32,
) -> Result<P::Shared> {
    let offsets = pooling_indices(input_shape, kernel, stride);
    let output_len: usize = output_shape.iter().product();
    let stacked: Vec<usize> = offsets.concat();
    let stacked = protocol.gather(value, &stacked, &[stacked.len()])?;
    let current = tournament_max(protocol, stacked, offsets.len(), output_len, bits)?;
    Ok(protocol.reshape(current, output_shape)?)
}

/// The mean of each `kernel × kernel` window. The area is a power of two ≤ 2^f, so
/// 2^f / area is exact: the mean is one public product and one truncation.
pub fn average_pool<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    input_shape: &[usize],
    output_shape: &[usize],
    (kernel, stride): (usize, usize),
    fractional_bits: u32,
    node: usize,
) -> Result<P::Shared> {
    let offsets = pooling_indices(input_shape, kernel, stride);
    let mut sum: Option<P::Shared> = None;
    for indices in &offsets {
        let window = protocol.gather(value, indices, output_shape)?;
        sum = Some(match sum {
            Some(total) => protocol.add(&total, &window)?,
            None => window,
        });
    }
    let sum = sum.ok_or_else(|| -> Error {
        veil_model::Error::InvalidGraph {
            node,
            reason: "an empty pooling window".into(),
        }
        .into()
    })?;
    let area = (kernel * kernel) as u64;
    let scaled = protocol.scale(&sum, (1u64 << fractional_bits) / area)?;
    Ok(protocol.truncate(&scaled, fractional_bits)?)
}
