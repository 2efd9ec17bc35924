//! Softmax over the last dimension under MPC, written once over [`Protocol`], in PUMA's
//! shape (cookbook §4.1, §4.2, §4.5): subtract the row max, clip at −14, exponentiate by
//! the limit form, sum, and multiply by a Newton reciprocal of the sum.
//!
//! **Steps**, for rows of n values:
//! 1. the row max by a tournament, max(a, b) = b + ReLU(a − b), ⌈log₂ n⌉ rounds;
//! 2. d = x − max ≤ 0 (local) and the clip bit 1{d ≥ −14} (one comparison);
//! 3. e^d ≈ (1 + d/2^8)^(2^8): d read at a scale 8 bits finer *is* d/2^8, so the base
//!    needs no truncation; eight squarings (square pairs, one opening each) at [`EXTRA_BITS`] more fractional bits, so
//!    their truncation errors, amplified up to 2^8-fold, stay below 1/16 ulp; the clip
//!    bit times the power (below −2^8 the base is negative and its powers wrap the ring,
//!    but only where the clip bit is 0, and 0 times anything is exactly 0);
//! 4. the row sum s ∈ [1, n] (local; the max's own term is 1);
//! 5. 1/s by Newton, y ← y(2 − s·y), from y₀ = 2^−J/1.25 or 2^−J/1.75 by the half of
//!    the octave 2^J ≤ s < 2^(J+1) that s lies in: one batched comparison of s against
//!    1.5, 2, 3, 4, 6, …, so y₀ is local in the bits, s·y₀ ∈ [0.8, 1.2], and
//!    [`super::blocks::NEWTON_ITERATIONS`] iterations take the relative error from 0.2 to 2.6·10⁻⁶
//!    (a start of ¾·2^−J alone needed a fourth, four rounds more);
//! 6. e^d · y, truncated once.
//!
//! **Precision.** Up to 18 fractional bits (the squarings hold 1 at 2(f + 12) bits);
//! plans with more are refused.
//!
//! **Error.** Against the exact softmax, every output is within
//! n·[`EXP_ERROR`] (the limit form only underestimates e^d, by at most [`EXP_ERROR`] on
//! [−14, 0], and the clip drops at most e^−14 < [`EXP_ERROR`]): an output's numerator
//! falls short by at most that and its denominator by at most n times that, over a sum
//! of at least 1. Beyond the approximation, the fixed-point evaluation adds at most
//! [`FIXED_POINT_ULPS`] ulps against the same approximation in f64 ([`approximate_row`]),
//! which a test asserts.
//!
//! Rounds: ⌈log₂ n⌉ + 2 + 16 + 1 + 1 + 3·4 + 2. SIGMA's nExp tables and inverse table
//! (cookbook §4.1, §4.2) are the cheaper route this module leaves room for.

use veil_mpc::Protocol;

use super::blocks::{broadcast_rows, public_constant, reciprocal, row_sums, tournament_max};
use super::layout;
use crate::{Error, Result};

/// Values below the row max by more than this contribute 0.
pub const CLIP: f64 = 14.0;
/// The limit form squares 2^`SQUARINGS` times' worth: (1 + d/2^8)^(2^8).
pub const SQUARINGS: u32 = 8;
/// Extra fractional bits of the exponential's intermediate values.
pub const EXTRA_BITS: u32 = 12;
/// The largest shortfall e^d − (1 + d/2^8)^(2^8) on d ∈ [−14, 0] (at d ≈ −2; a unit test
/// scans it).
pub const EXP_ERROR: f64 = 1.1e-3;
/// The fixed-point error of one output against [`approximate_row`], in ulps, with a
/// margin: the exponential's 1/16 ulp, the sum's n/16, the reciprocal's residual 2.6·10⁻⁶
/// relative and a few ulps of its truncations, the last product's truncation.
pub const FIXED_POINT_ULPS: f64 = 32.0;

/// Softmax over the last dimension of a secret tensor; comparisons on `bits` bits.
pub fn softmax<P: Protocol>(protocol: &mut P, value: &P::Shared, bits: u32) -> Result<P::Shared> {
    let shape = protocol.shape_of(value);
    let columns = shape.last().copied().unwrap_or(1).max(1);
    let len: usize = shape.iter().product();
    let rows = len / columns;
    let f = protocol.fixed_point().fractional_bits();
    // The squarings hold values up to 1 at scale 2(f + EXTRA_BITS), which must stay
    // below 2^62.
    if 2 * (f + EXTRA_BITS) >= 62 {
        return Err(Error::UnsupportedPrecision {
            op: "softmax",
            supported: "up to 18",
            found: f,
        });
    }
    let codec = protocol.fixed_point();

    // 1. The row max: block c holds column c of every row.
    let column_major: Vec<usize> = (0..columns)
        .flat_map(|c| (0..rows).map(move |r| r * columns + c))
        .collect();
    let candidates = protocol.gather(value, &column_major, &[len])?;
    let maximum = tournament_max(protocol, candidates, columns, rows, bits)?;

    // 2. d = x − max ≤ 0 and the clip bit.
    let x = layout::reshape(protocol, value, &[len])?;
    let broadcast_max = broadcast_rows(protocol, &maximum, rows, columns)?;
    let d = protocol.sub(&x, &broadcast_max)?;
    let clip = public_constant(protocol, CLIP, f, len)?;
    let shifted = protocol.add(&d, &clip)?;
    let keep = protocol.drelu(&shifted, bits)?;

    // 3. e^d ≈ (1 + d/2^8)^(2^8), at f + EXTRA_BITS fractional bits.
    let fine = f + EXTRA_BITS;
    let exponential = limit_exponential(protocol, &d, &keep, len)?;

    // 4. Row sums (at scale f + EXTRA_BITS), then at scale f for the reciprocal.
    let sum = row_sums(protocol, &exponential, rows, columns)?;
    let sum = protocol.truncate(&sum, EXTRA_BITS)?;

    // 5. Newton's reciprocal of s ∈ [1, n]: octaves 2^0 … 2^⌈log₂ n⌉; s − t lies in
    // [−2^exponents, n], and 2^exponents ≤ 4n.
    let exponents = (usize::BITS - columns.leading_zeros()) as i32 + 1;
    let sum_bits = ((((4 * columns + 4) as f64) * codec.scale()).log2().ceil() as u32 + 2).min(64);
    let reciprocal = reciprocal(protocol, &sum, rows, 0..exponents, sum_bits, 0)?;

    // 6. e^d · (1/s), back to scale f.
    let broadcast_reciprocal = broadcast_rows(protocol, &reciprocal, rows, columns)?;
    let output = protocol.mul(&exponential, &broadcast_reciprocal)?;
    let output = protocol.truncate(&output, fine)?;
    Ok(protocol.reshape(output, &shape)?)
}

/// e^d ≈ (1 + d/2^8)^(2^8) for `len` values d ≤ 0 at the plan's scale f, times the
/// clip bits `keep` (1{d ≥ −14}), at f + [`EXTRA_BITS`] fractional bits: d at scale f
/// *is* d/2^8 at scale f + 8, lifted to f + [`EXTRA_BITS`], then [`SQUARINGS`]
/// squarings (square pairs, one truncation each). Below −2^8 the base is negative and
/// its powers wrap, but only where the clip bit is 0. Shared by softmax and sigmoid.
pub fn limit_exponential<P: Protocol>(
    protocol: &mut P,
    d: &P::Shared,
    keep: &P::Shared,
    len: usize,
) -> Result<P::Shared> {
    let fine = protocol.fixed_point().fractional_bits() + EXTRA_BITS;
    let lifted = protocol.scale(d, 1u64 << (EXTRA_BITS - SQUARINGS))?;
    let one = public_constant(protocol, 1.0, fine, len)?;
    let mut power = protocol.add(&one, &lifted)?;
    for _ in 0..SQUARINGS {
        let square = protocol.square(&power)?;
        power = protocol.truncate(&square, fine)?;
    }
    Ok(protocol.select(keep, &power)?)
}

/// The approximation in f64 for one row: exact max and reciprocal, the clip and the
/// limit-form exponential.
pub fn approximate_row(row: &[f64]) -> Vec<f64> {
    let largest = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let exps: Vec<f64> = row.iter().map(|&v| approximate_exp(v - largest)).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// (1 + d/2^8)^(2^8) for d ≥ −14, else 0.
pub fn approximate_exp(d: f64) -> f64 {
    if d < -CLIP {
        0.0
    } else {
        (1.0 + d / f64::from(1u32 << SQUARINGS)).powi(1 << SQUARINGS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exponential_falls_short_by_at_most_its_documented_error() {
        let mut worst: f64 = 0.0;
        for step in 0..=140_000 {
            let d = -f64::from(step) * 1e-4;
            let shortfall = d.exp() - approximate_exp(d);
            assert!(shortfall >= 0.0, "d = {d}: the limit form overshoots");
            worst = worst.max(shortfall);
        }
        assert!(worst <= EXP_ERROR, "worst {worst}");
        assert!((-CLIP).exp() < EXP_ERROR);
    }
}
