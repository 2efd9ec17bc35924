//! The [`Protocol`] trait: every secure operation the executors need, written once per
//! setting. Executors are generic over it, so the fixed-point simulation
//! ([`crate::Cleartext`]), the secure parties ([`crate::Party`]) and the dealer's
//! material generation ([`crate::MaterialGenerator`]) run the very same code path.
//!
//! Values are in the ring Z_2^64 with the plan's fixed-point scale. Products
//! (`matmul_weight`, `mul`, `matmul`) return untruncated results at twice the scale; the
//! caller adds any bias at that scale and then calls `truncate` once per output element
//! (cookbook §1.1: accumulate, then truncate).

use veil_core::{FixedPoint, RingTensor};

use crate::Result;

/// One setting's implementation of the secure operations. A protocol instance is one
/// role's view of one query.
pub trait Protocol {
    /// A secret tensor in this setting's form (a share, the clear value in simulation,
    /// or a shape at the dealer).
    type Shared;
    /// A server-held weight in this role's form: W (and B) at the server, D = W + B at
    /// the client, the mask B at the dealer.
    type Weight;
    /// A server-held bias in this role's form (the value at the server, nothing
    /// elsewhere).
    type Bias;

    /// The fixed-point codec of the plan.
    fn fixed_point(&self) -> FixedPoint;

    /// The client's private input. `value` is `Some` where the input is known (the
    /// client, the simulation) and `None` elsewhere.
    fn input(&mut self, shape: &[usize], value: Option<&RingTensor>) -> Result<Self::Shared>;

    /// A public tensor as a secret (P0 holds it, P1 holds zero; local).
    fn public(&mut self, value: &RingTensor) -> Result<Self::Shared>;

    /// Loads a server-held weight in this role's form (role-specific: DESIGN.md §3).
    fn weight(&mut self, name: &str) -> Result<Self::Weight>;

    /// Loads a server-held bias in this role's form.
    fn bias(&mut self, name: &str) -> Result<Self::Bias>;

    /// The (public) shape of a secret tensor.
    fn shape_of(&self, value: &Self::Shared) -> Vec<usize>;

    /// The same secret under another shape with as many elements (local).
    fn reshape(&mut self, value: Self::Shared, shape: &[usize]) -> Result<Self::Shared>;

    /// Sum of two secrets (local).
    fn add(&mut self, left: &Self::Shared, right: &Self::Shared) -> Result<Self::Shared>;

    /// Difference of two secrets (local).
    fn sub(&mut self, left: &Self::Shared, right: &Self::Shared) -> Result<Self::Shared>;

    /// Multiplies a secret by a public ring integer (local).
    fn scale(&mut self, value: &Self::Shared, factor: u64) -> Result<Self::Shared>;

    /// A secret of `shape` whose element i is element `indices[i]` of `value` (local: a
    /// public rearrangement such as a pooling window).
    fn gather(
        &mut self,
        value: &Self::Shared,
        indices: &[usize],
        shape: &[usize],
    ) -> Result<Self::Shared>;

    /// The elements of `parts` one after another, as a 1-D secret (local).
    fn concat(&mut self, parts: &[&Self::Shared]) -> Result<Self::Shared>;

    /// Adds a server-held bias along dimension 1 (every row of a matrix, or every
    /// position of a channel); local, the server adds it to its share.
    fn add_bias(&mut self, value: &Self::Shared, bias: &Self::Bias) -> Result<Self::Shared>;

    /// X·W for a secret `[m, k]` X and a server-held `[k, n]` W: the one-sided product
    /// with a fixed weight mask (DESIGN.md §4). Untruncated.
    fn matmul_weight(
        &mut self,
        value: &Self::Shared,
        weight: &Self::Weight,
    ) -> Result<Self::Shared>;

    /// conv2d(X, W) for a secret `[n, c, h, w]` X and a server-held `[o, c, kh, kw]` W:
    /// the one-sided product with a fixed weight mask, E shaped like the input (never
    /// im2col on the wire). Untruncated.
    fn conv2d_weight(
        &mut self,
        value: &Self::Shared,
        weight: &Self::Weight,
        stride: usize,
        padding: usize,
    ) -> Result<Self::Shared>;

    /// X ⊙ w for a secret `[m, n]` X and a server-held `[n]` vector w broadcast over the
    /// rows (LayerNorm's scale γ): the one-sided product with a fixed weight mask, as
    /// `matmul_weight`, for an elementwise map. Untruncated.
    fn mul_weight(&mut self, value: &Self::Shared, weight: &Self::Weight) -> Result<Self::Shared>;

    /// x ⊙ x for a secret x. Untruncated. Settings with a cheaper square than a product
    /// (the dealer's square pairs open one value, not two) override it.
    fn square(&mut self, value: &Self::Shared) -> Result<Self::Shared> {
        self.mul(value, value)
    }

    /// Elementwise product of two secrets (Beaver triple). Untruncated.
    fn mul(&mut self, left: &Self::Shared, right: &Self::Shared) -> Result<Self::Shared>;

    /// Matrix product of two secrets, `[m, k]·[k, n]`, or a batch of them,
    /// `[b, m, k]·[b, k, n]` → `[b, m, n]` (attention's Q·Kᵀ and P·V per head), in one
    /// round (matrix triples). Untruncated.
    fn matmul(&mut self, left: &Self::Shared, right: &Self::Shared) -> Result<Self::Shared>;

    /// Arithmetic shift right by `bits` (precise truncation: floor, or floor + 1 ulp).
    /// Requires |x| < 2^62.
    fn truncate(&mut self, value: &Self::Shared, bits: u32) -> Result<Self::Shared>;

    /// 1{x ≥ 0} as a ring integer (0 or 1, not fixed point), for the signed `bits`-bit
    /// reduction of x (exact when x ∈ [−2^(bits−1), 2^(bits−1))).
    fn drelu(&mut self, value: &Self::Shared, bits: u32) -> Result<Self::Shared>;

    /// max(x, 0), deciding the sign on the `bits`-bit reduction as `drelu` does.
    fn relu(&mut self, value: &Self::Shared, bits: u32) -> Result<Self::Shared>;

    /// T[x mod 2^bits] for a secret ring integer x and a public table T of 2^bits ring
    /// elements (`bits` from [`MIN_LOOKUP_BITS`] to [`MAX_LOOKUP_BITS`]).
    fn lookup(&mut self, value: &Self::Shared, table: &[u64], bits: u32) -> Result<Self::Shared>;

    /// bit·x for a secret ring-integer bit (0 or 1) and a secret x.
    fn select(&mut self, bit: &Self::Shared, value: &Self::Shared) -> Result<Self::Shared> {
        self.mul(bit, value)
    }

    /// Opens a secret to the client only: `Some(value)` at the client (and in
    /// simulation), `None` at every other role.
    fn reveal_to_client(&mut self, value: &Self::Shared) -> Result<Option<RingTensor>>;

    /// Where values can be seen (the range-checking simulation), refuses a secret whose
    /// values, read at `fractional_bits`, leave the op's documented `range` (`what`
    /// names it). Everywhere else it does nothing: a secure party cannot see values.
    fn check_range(
        &mut self,
        _value: &Self::Shared,
        _fractional_bits: u32,
        _range: std::ops::Range<f64>,
        _what: &'static str,
    ) -> Result<()> {
        Ok(())
    }

    /// What this role has spent so far, per primitive (`veil bench --breakdown`);
    /// nothing in settings that do not count.
    fn spent(&self) -> crate::accounting::Spent {
        crate::accounting::Spent::default()
    }
}

/// Checks that a `[m, k]` operand meets a `[k, n]` one; returns (m, k, n).
pub(crate) fn matmul_dimensions(
    op: &'static str,
    left: &[usize],
    right: &[usize],
) -> Result<(usize, usize, usize)> {
    match (left, right) {
        (&[m, k], &[k2, n]) if k == k2 => Ok((m, k, n)),
        _ => Err(veil_core::Error::ShapeMismatch {
            op,
            expected: left.to_vec(),
            found: right.to_vec(),
        }
        .into()),
    }
}

/// The output shape of conv2d(`[n, c, h, w]`, `[o, c, kh, kw]`, stride, padding).
pub(crate) fn conv2d_output_shape(
    input: &[usize],
    weight: &[usize],
    stride: usize,
    padding: usize,
) -> Result<Vec<usize>> {
    let mismatch = || -> crate::Error {
        veil_core::Error::ShapeMismatch {
            op: "conv2d_weight",
            expected: input.to_vec(),
            found: weight.to_vec(),
        }
        .into()
    };
    match (input, weight) {
        (
            &[batch, channels, height, width],
            &[out_channels, weight_channels, kernel_height, kernel_width],
        ) if channels == weight_channels && stride > 0 => {
            let extent = |size: usize, kernel: usize| {
                (size + 2 * padding)
                    .checked_sub(kernel)
                    .map(|span| span / stride + 1)
            };
            match (extent(height, kernel_height), extent(width, kernel_width)) {
                (Some(output_height), Some(output_width)) => {
                    Ok(vec![batch, out_channels, output_height, output_width])
                }
                _ => Err(mismatch()),
            }
        }
        _ => Err(mismatch()),
    }
}

/// Checks a (batched) matrix product's operands: `[m, k]·[k, n]` or
/// `[b, m, k]·[b, k, n]`; returns (b, m, k, n) and the output shape.
pub(crate) fn batched_matmul_dimensions(
    left: &[usize],
    right: &[usize],
) -> Result<(usize, usize, usize, usize, Vec<usize>)> {
    match (left, right) {
        (&[m, k], &[k2, n]) if k == k2 => Ok((1, m, k, n, vec![m, n])),
        (&[b, m, k], &[b2, k2, n]) if k == k2 && b == b2 => Ok((b, m, k, n, vec![b, m, n])),
        _ => Err(veil_core::Error::ShapeMismatch {
            op: "matmul",
            expected: left.to_vec(),
            found: right.to_vec(),
        }
        .into()),
    }
}

/// The (batched) matrix product of two ring tensors of the shapes
/// [`batched_matmul_dimensions`] accepts (wrapping).
pub(crate) fn batched_matmul(left: &RingTensor, right: &RingTensor) -> Result<RingTensor> {
    let (batch, m, k, n, shape) = batched_matmul_dimensions(left.shape(), right.shape())?;
    let mut data = Vec::with_capacity(batch * m * n);
    for index in 0..batch {
        let a = RingTensor::new(
            vec![m, k],
            left.data()[index * m * k..(index + 1) * m * k].to_vec(),
        )?;
        let b = RingTensor::new(
            vec![k, n],
            right.data()[index * k * n..(index + 1) * k * n].to_vec(),
        )?;
        data.extend_from_slice(a.matmul(&b)?.data());
    }
    Ok(RingTensor::new(shape, data)?)
}

/// X ⊙ w with the `[n]` vector w broadcast over the rows of the `[m, n]` X (wrapping).
pub(crate) fn row_scaled(value: &RingTensor, weight: &RingTensor) -> Result<RingTensor> {
    match (value.shape(), weight.shape()) {
        (&[_, columns], &[length]) if columns == length => {
            let data = value
                .data()
                .chunks(columns.max(1))
                .flat_map(|row| {
                    row.iter()
                        .zip(weight.data())
                        .map(|(x, w)| x.wrapping_mul(*w))
                })
                .collect();
            Ok(RingTensor::new(value.shape().to_vec(), data)?)
        }
        _ => Err(veil_core::Error::ShapeMismatch {
            op: "mul_weight",
            expected: value.shape().get(1).map(|&c| vec![c]).unwrap_or_default(),
            found: weight.shape().to_vec(),
        }
        .into()),
    }
}

/// Checks that two operands have one shape.
pub(crate) fn same_shape(op: &'static str, left: &[usize], right: &[usize]) -> Result<()> {
    if left == right {
        Ok(())
    } else {
        Err(veil_core::Error::ShapeMismatch {
            op,
            expected: left.to_vec(),
            found: right.to_vec(),
        }
        .into())
    }
}

/// Checks a comparison bit-width.
/// The narrowest index a table lookup takes (64 entries: a whole word of the shares'
/// bits; a smaller table can be repeated to 64 entries).
pub const MIN_LOOKUP_BITS: u32 = 6;

/// The widest index a table lookup takes (a table of 4,096 entries).
pub const MAX_LOOKUP_BITS: u32 = 12;

/// A lookup's table must have 2^bits entries, [`MIN_LOOKUP_BITS`] ≤ bits ≤
/// [`MAX_LOOKUP_BITS`].
pub(crate) fn check_table(table: &[u64], bits: u32) -> Result<()> {
    if !(MIN_LOOKUP_BITS..=MAX_LOOKUP_BITS).contains(&bits) || table.len() != 1usize << bits {
        return Err(crate::Error::ApiMisuse {
            op: "lookup",
            detail: format!(
                "a table of {} entries for a {bits}-bit index (it needs 2^bits entries, {MIN_LOOKUP_BITS} ≤ bits ≤ {MAX_LOOKUP_BITS})",
                table.len()
            ),
        });
    }
    Ok(())
}

pub(crate) fn check_bits(op: &'static str, bits: u32) -> Result<()> {
    if (2..=64).contains(&bits) {
        Ok(())
    } else {
        Err(crate::Error::ApiMisuse {
            op,
            detail: format!("comparison bit-width {bits} is outside 2..=64"),
        })
    }
}

/// Checks a truncation shift.
pub(crate) fn check_shift(bits: u32) -> Result<()> {
    if bits < 62 {
        Ok(())
    } else {
        Err(crate::Error::ApiMisuse {
            op: "truncate",
            detail: format!("shift {bits} is outside 0..62"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_outside_the_supported_widths_or_of_the_wrong_length_are_refused() {
        for bits in [0, 1, 5, 13] {
            let table = vec![0u64; 1 << bits];
            assert!(check_table(&table, bits).is_err(), "{bits} bits");
        }
        assert!(check_table(&[0u64; 255], 8).is_err());
        assert!(check_table(&[0u64; 256], 8).is_ok());
        assert!(check_table(&[0u64; 64], MIN_LOOKUP_BITS).is_ok());
    }
}
