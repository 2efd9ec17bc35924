//! Server-held linear maps: the weight product (the one-sided product with a fixed weight
//! mask, DESIGN.md §4), the bias at twice the scale, then one truncation per output
//! element after accumulating (cookbook §1.1).

use veil_mpc::Protocol;

use super::layout;
use crate::Result;

/// y = x·W + b over the last dimension of a secret `[batch, …, in]` x, for a
/// server-held `[in, out]` W: one product of the `[rows, in]` matrix of every position.
pub fn linear<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    weight: &str,
    bias: Option<&str>,
    fractional_bits: u32,
) -> Result<P::Shared> {
    let shape = protocol.shape_of(value);
    let inputs = shape.last().copied().unwrap_or(1).max(1);
    let rows = shape.iter().product::<usize>() / inputs;
    // A sequence's positions become the rows of one matrix (a copy; a matrix is used as is).
    let matrix;
    let x = if shape.len() == 2 {
        value
    } else {
        matrix = layout::reshape(protocol, value, &[rows, inputs])?;
        &matrix
    };
    let output = affine(protocol, x, weight, bias, fractional_bits, |p, x, w| {
        p.matmul_weight(x, w)
    })?;
    let mut output_shape = shape;
    if let Some(last) = output_shape.last_mut() {
        *last = protocol.shape_of(&output).last().copied().unwrap_or(0);
    }
    Ok(protocol.reshape(output, &output_shape)?)
}

/// y = conv2d(x, W) + b for a secret NCHW x, with (stride, padding).
pub fn conv2d<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    weight: &str,
    bias: Option<&str>,
    (stride, padding): (usize, usize),
    fractional_bits: u32,
) -> Result<P::Shared> {
    affine(protocol, value, weight, bias, fractional_bits, |p, x, w| {
        p.conv2d_weight(x, w, stride, padding)
    })
}

fn affine<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    weight: &str,
    bias: Option<&str>,
    fractional_bits: u32,
    product: impl Fn(&mut P, &P::Shared, &P::Weight) -> veil_mpc::Result<P::Shared>,
) -> Result<P::Shared> {
    let weight = protocol.weight(weight)?;
    let mut output = product(protocol, value, &weight)?;
    if let Some(bias) = bias {
        let bias = protocol.bias(bias)?;
        output = protocol.add_bias(&output, &bias)?;
    }
    Ok(protocol.truncate(&output, fractional_bits)?)
}
