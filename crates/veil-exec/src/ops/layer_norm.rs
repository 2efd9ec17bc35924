//! Layer normalisation under MPC, written once over [`Protocol`] (cookbook §4.3, §4.7):
//! y = γ·(x − μ)·rsqrt(σ² + ε) + β over each row of d features, with γ and β held by
//! the server.
//!
//! **Steps.** The mean is a local sum times the public 1/d and one truncation. The
//! centred values c are squared (truncated to [`VARIANCE_BITS`] fractional bits, 8
//! finer than the values, so small variances keep their precision) and summed, and the
//! variance is their sum times 1/d (encoded at that finer scale) plus ε. Its inverse
//! square root uses no polynomial guess: one batched comparison of σ² + ε against 2^j
//! for j in [`EXPONENTS`] gives bits whose count fixes J with 2^J ≤ σ² + ε < 2^(J+1),
//! and two public step functions of those bits (local) give 2^−J and 2^−J/2. The
//! variance times 2^−J lies in [1, 2), where [`NEWTON_ITERATIONS`] Newton steps
//! y ← y(3 − v·y²)/2 from the line y₀ = c − s·v ([`RSQRT_LINE`], one truncation; a
//! constant start needed a fourth step, six rounds more) reach a relative error below
//! 10⁻⁹ at [`NEWTON_BITS`] fractional bits; times 2^−J/2 that is rsqrt(σ² + ε). Then c·rsqrt,
//! γ by the one-sided fixed-mask product ([`Protocol::mul_weight`]), β, one truncation.
//!
//! **Range.** σ² + ε must lie in [2^−16, 2^14) (σ from 1/256 to 128), |μ| below 2^14
//! and |x − μ| below 2^15; ε below the variance's resolution (2^−24, as BERT's 10⁻¹² is)
//! counts as one unit of it. Inside the range, for rows whose smallest σ (with ε) is s,
//! an input error e and e′ = e + 2 ulp, every output is within
//! max|γ|·(2e′(1 + √d)/s + √d·(2^−24/s² + 2^−15) + 2 ulp) + (√d/2 + 2) ulp of the exact
//! layer normalisation: the centred values move by at most 2e′ and σ by as much, so the
//! normalised values by 2e′(1 + √d)/s; the variance's truncations move σ² by at most
//! 2·2^−24, rsqrt by 2^−24/s² relative, and its other truncations by less than 2^−15
//! relative; the rest are the products' truncations and γ's encoding.
//! [`crate::error_bound`] takes s from the plain run of the same input, and refuses
//! inputs outside the range.

use veil_core::RingTensor;
use veil_mpc::Protocol;

use super::blocks::{broadcast_rows, public_constant, row_sums};
use super::layout;
use crate::{Error, Result};

/// Fractional bits of the variance and of the comparisons' operands.
pub const VARIANCE_BITS: u32 = 24;
/// The exponents j the variance is compared against (2^j for each): the documented
/// range of σ² + ε is [2^−16, 2^14).
pub const EXPONENTS: std::ops::RangeInclusive<i32> = -16..=13;
/// Fractional bits of 1/d for the mean (so d up to 2^16 keeps 16 significant bits).
const MEAN_BITS: u32 = 32;
/// Fractional bits of 2^−J/2 and of rsqrt(σ² + ε) (at most 2^8.5 · 2^24 before the
/// products).
const ROOT_BITS: u32 = 24;
/// Fractional bits of the normalised variance and of the Newton iteration.
pub const NEWTON_BITS: u32 = 28;
/// Fractional bits of 2^−J (so its smallest value, 2^−20, keeps 16 bits).
const POWER_BITS: u32 = 36;
/// Newton steps for rsqrt on [1, 2).
pub const NEWTON_ITERATIONS: usize = 3;
/// The starting line y₀ = c − s·v for v^−½ on [1, 2]: (c, s), relative error below
/// 2.3 %, which three Newton steps take below 1.1·10⁻¹² (a unit test checks it).
pub const RSQRT_LINE: (f64, f64) = (1.26397, 0.28626);
/// The comparisons' bit-width: σ² + ε − 2^j at [`VARIANCE_BITS`] is below 2^38.
const COMPARISON_BITS: u32 = 40;

/// Layer normalisation of a secret tensor over its last dimension of `features`.
pub fn layer_norm<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    (weight, bias): (&str, &str),
    features: usize,
    epsilon: f64,
) -> Result<P::Shared> {
    let shape = protocol.shape_of(value);
    let len: usize = shape.iter().product();
    let rows = len / features.max(1);
    let f = protocol.fixed_point().fractional_bits();
    // The squares are truncated from 2f to VARIANCE_BITS (so 2f ≥ 24), and a centred
    // value's square must stay below 2^62 at scale 2f.
    if !(12..=20).contains(&f) {
        return Err(Error::UnsupportedPrecision {
            op: "layer_norm",
            supported: "12 to 20",
            found: f,
        });
    }
    let codec = protocol.fixed_point();
    let x = layout::reshape(protocol, value, &[len])?;

    // μ, c = x − μ.
    let sum = row_sums(protocol, &x, rows, features)?;
    let mean = protocol.scale(&sum, codec.encode_scaled(1.0 / features as f64, MEAN_BITS)?)?;
    let mean = protocol.truncate(&mean, MEAN_BITS)?;
    let mean = broadcast_rows(protocol, &mean, rows, features)?;
    let centred = protocol.sub(&x, &mean)?;

    // σ² + ε at VARIANCE_BITS.
    let squares = protocol.square(&centred)?;
    let squares = protocol.truncate(&squares, 2 * f - VARIANCE_BITS)?;
    let sum = row_sums(protocol, &squares, rows, features)?;
    let variance = protocol.scale(
        &sum,
        codec.encode_scaled(1.0 / features as f64, VARIANCE_BITS)?,
    )?;
    let variance = protocol.truncate(&variance, VARIANCE_BITS)?;
    let epsilon_word = codec.encode_scaled(epsilon, VARIANCE_BITS)?.max(1);
    let epsilon = protocol.public(&RingTensor::new(vec![rows], vec![epsilon_word; rows])?)?;
    let variance = protocol.add(&variance, &epsilon)?;
    let documented = 2f64.powi(*EXPONENTS.start())..2f64.powi(*EXPONENTS.end() + 1);
    protocol.check_range(&variance, VARIANCE_BITS, documented, "layer_norm's σ² + ε")?;

    // J from one batched comparison against 2^j.
    let exponents: Vec<i32> = EXPONENTS.collect();
    let mut differences = Vec::with_capacity(exponents.len());
    for &j in &exponents {
        let threshold = public_constant(protocol, 2f64.powi(j), VARIANCE_BITS, rows)?;
        differences.push(protocol.sub(&variance, &threshold)?);
    }
    let stacked: Vec<&P::Shared> = differences.iter().collect();
    let stacked = protocol.concat(&stacked)?;
    let at_least = protocol.drelu(&stacked, COMPARISON_BITS)?;
    // 2^−J and 2^−J/2 as step functions of the bits: start at J = min − 1 and step at
    // each 2^j the variance reaches.
    let below = exponents[0] - 1;
    let mut power = public_constant(protocol, 2f64.powi(-below), POWER_BITS, rows)?;
    let mut root = public_constant(
        protocol,
        2f64.powf(-f64::from(below) / 2.0),
        ROOT_BITS,
        rows,
    )?;
    for (position, &j) in exponents.iter().enumerate() {
        let block: Vec<usize> = (position * rows..(position + 1) * rows).collect();
        let bit = protocol.gather(&at_least, &block, &[rows])?;
        let power_step = 2f64.powi(-j) - 2f64.powi(-(j - 1));
        let root_step = 2f64.powf(-f64::from(j) / 2.0) - 2f64.powf(-f64::from(j - 1) / 2.0);
        let power_term = protocol.scale(&bit, codec.encode_scaled(power_step, POWER_BITS)?)?;
        let root_term = protocol.scale(&bit, codec.encode_scaled(root_step, ROOT_BITS)?)?;
        power = protocol.add(&power, &power_term)?;
        root = protocol.add(&root, &root_term)?;
    }

    // rsqrt of the normalised variance v ∈ [1, 2) by Newton, at NEWTON_BITS.
    let normalised = protocol.mul(&variance, &power)?;
    let normalised = protocol.truncate(&normalised, VARIANCE_BITS + POWER_BITS - NEWTON_BITS)?;
    let three = public_constant(protocol, 3.0, NEWTON_BITS, rows)?;
    // y₀ = c − s·v, the line closest to v^−½ on [1, 2] in relative error (2.3 %): a
    // public product and one truncation, after which three Newton steps suffice.
    let slope = protocol.scale(&normalised, codec.encode_scaled(RSQRT_LINE.1, NEWTON_BITS)?)?;
    let slope = protocol.truncate(&slope, NEWTON_BITS)?;
    let intercept = public_constant(protocol, RSQRT_LINE.0, NEWTON_BITS, rows)?;
    let mut estimate = protocol.sub(&intercept, &slope)?;
    for _ in 0..NEWTON_ITERATIONS {
        let square = protocol.square(&estimate)?;
        let square = protocol.truncate(&square, NEWTON_BITS)?;
        let product = protocol.mul(&normalised, &square)?;
        let product = protocol.truncate(&product, NEWTON_BITS)?;
        let correction = protocol.sub(&three, &product)?;
        let next = protocol.mul(&estimate, &correction)?;
        // The halving rides on the truncation.
        estimate = protocol.truncate(&next, NEWTON_BITS + 1)?;
    }
    // At ROOT_BITS.
    let inverse_root = protocol.mul(&estimate, &root)?;
    let inverse_root = protocol.truncate(&inverse_root, NEWTON_BITS)?;

    // c·rsqrt, then γ and β on the server's side of the one-sided product.
    let inverse_root = broadcast_rows(protocol, &inverse_root, rows, features)?;
    let normalised = protocol.mul(&centred, &inverse_root)?;
    let normalised = protocol.truncate(&normalised, ROOT_BITS)?;
    let normalised = protocol.reshape(normalised, &[rows, features])?;
    let gamma = protocol.weight(weight)?;
    let scaled = protocol.mul_weight(&normalised, &gamma)?;
    let beta = protocol.bias(bias)?;
    let shifted = protocol.add_bias(&scaled, &beta)?;
    let output = protocol.truncate(&shifted, f)?;
    Ok(protocol.reshape(output, &shape)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The line and three Newton steps reach the documented accuracy on [1, 2].
    #[test]
    fn the_starting_line_and_three_steps_reach_the_documented_error() {
        let (intercept, slope) = RSQRT_LINE;
        let mut worst_start: f64 = 0.0;
        let mut worst: f64 = 0.0;
        for step in 0..=100_000 {
            let v = 1.0 + f64::from(step) / 100_000.0;
            let mut y = intercept - slope * v;
            worst_start = worst_start.max((y * v.sqrt() - 1.0).abs());
            for _ in 0..NEWTON_ITERATIONS {
                y = y * (3.0 - v * y * y) / 2.0;
            }
            worst = worst.max((y * v.sqrt() - 1.0).abs());
        }
        assert!(
            worst_start < 0.023,
            "the line's relative error {worst_start}"
        );
        assert!(worst < 1.1e-12, "after the steps {worst}");
    }
}
