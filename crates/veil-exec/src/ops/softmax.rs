//! Softmax over the last dimension under MPC, written once over [`Protocol`] (cookbook
//! §4.1, §4.2, §4.5): subtract the row max, clip at −14, exponentiate by two table
//! lookups (SIGMA's nExp), sum, and multiply by a Newton reciprocal of the sum.
//!
//! **Steps**, for rows of n values:
//! 1. the row max by a tournament, max(a, b) = b + ReLU(a − b), ⌈log₂ n⌉ comparison steps;
//! 2. d = x − max ≤ 0 (local) and the clip bit 1{d ≥ −14} (one comparison);
//! 3. e^d by [`table_exponential`]: the index idx = −d in steps of 2^−12 and hi = idx >> 8
//!    (two truncations), the remainder l = idx − 256·hi ∈ [−256, 256) (exact, local),
//!    the entries e^(−hi/16) and e^(−l/4096) (two lookups at secret indices), their
//!    product (one Beaver product, one truncation), times the clip bit (one select).
//!    It replaced PUMA's limit form (1 + d/2^8)^(2^8), whose eight squarings cost about
//!    twice the bytes ([`limit_exponential`], which tanh keeps);
//! 4. the row sum s ∈ [1, n] (local; the max's own term is 1, up to the table's 2^−12);
//! 5. 1/s by Newton, y ← y(2 − s·y), from y₀ = 2^−J/1.25 or 2^−J/1.75 by the half of
//!    the octave 2^J ≤ s < 2^(J+1) that s lies in: one batched comparison of s against
//!    1.5, 2, 3, 4, 6, …, so y₀ is local in the bits, s·y₀ ∈ [0.8, 1.2], and
//!    [`super::blocks::NEWTON_ITERATIONS`] iterations take the relative error from 0.2 to 2.6·10⁻⁶;
//! 6. e^d · y as one [1 × 1]·[1 × n] product per row (a matrix triple: the row's y is
//!    opened once, each e^d once), truncated once.
//!
//! **Precision.** Up to 18 fractional bits (the entries' product holds 1 at 2(f + 12)
//! bits); plans with more are refused.
//!
//! **Error.** The exponential is within [`EXP_ERROR`] of e^d on [−14, 0] on either index
//! the truncation gives (2^−12 relative), and the clip drops at most e^−14 < [`EXP_ERROR`];
//! so each numerator is within [`EXP_ERROR`] and the sum (at least 1 − [`EXP_ERROR`])
//! within n·[`EXP_ERROR`], and every output within (n + 1)·[`EXP_ERROR`] of the exact
//! softmax. Beyond the approximation on the floor index, the fixed-point evaluation adds
//! at most [`FIXED_POINT_ULPS`] ulps against [`approximate_row`], and an index one above
//! the floor at most [`INDEX_RELATIVE_ERROR`] of the output, which a test asserts.
//!
//! Rounds: ⌈log₂ n⌉·2 + 2 for the max and clip (point-function comparisons), 2 + 4 + 2
//! for the exponential, the reciprocal's, and 2 for the last product.

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
/// The largest shortfall e^d − (1 + d/2^8)^(2^8) of the limit form on d ∈ [−14, 0] (at
/// d ≈ −2; a unit test scans it): tanh's exponential.
pub const LIMIT_EXP_ERROR: f64 = 1.1e-3;
/// The softmax's table exponential's largest error against e^d on d ∈ [−14, 0], on
/// either index the truncation gives (⌊4096·(−d)⌋ or one above: at most 2^−12 of e^d),
/// with the clip's e^−14 (a unit test scans it).
pub const EXP_ERROR: f64 = 2.5e-4;
/// The fixed-point error of one output against [`approximate_row`], in ulps, with a
/// margin: the exponential's rounded entries and its product's truncation (a few units at
/// f + 12 bits, 1/16 ulp each), the sum's n/16, the reciprocal's residual 2.6·10⁻⁶
/// relative and a few ulps of its truncations, the last product's truncation.
pub const FIXED_POINT_ULPS: f64 = 32.0;
/// Beyond [`FIXED_POINT_ULPS`]: the truncation may give the exponential's index one above
/// the floor [`approximate_row`] uses, which scales a numerator by e^(−2^−12) and the sum
/// by at most as much, so an output moves by at most this fraction of itself.
pub const INDEX_RELATIVE_ERROR: f64 = 2.0 / 4096.0;

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
    let exponential = table_exponential(protocol, &d, &keep)?;

    // 4. Row sums (at scale f + EXTRA_BITS), then at scale f for the reciprocal.
    let sum = row_sums(protocol, &exponential, rows, columns)?;
    let sum = protocol.truncate(&sum, EXTRA_BITS)?;

    // 5. Newton's reciprocal of s ∈ [1, n]: octaves 2^0 … 2^⌈log₂ n⌉; s − t lies in
    // [−2^exponents, n], and 2^exponents ≤ 4n.
    let exponents = (usize::BITS - columns.leading_zeros()) as i32 + 1;
    let sum_bits = ((((4 * columns + 4) as f64) * codec.scale()).log2().ceil() as u32 + 2).min(64);
    let reciprocal = reciprocal(protocol, &sum, rows, 0..exponents, sum_bits, 0)?;

    // 6. e^d · (1/s), back to scale f: per row a [1 × 1]·[1 × n] product, so the
    // matrix triple opens each row's reciprocal once and each e^d once (a Beaver product
    // with the reciprocal broadcast would open both for every element).
    let reciprocal = protocol.reshape(reciprocal, &[rows, 1, 1])?;
    let exponential = protocol.reshape(exponential, &[rows, 1, columns])?;
    let output = protocol.matmul(&reciprocal, &exponential)?;
    let output = protocol.reshape(output, &[len])?;
    let output = protocol.truncate(&output, fine)?;
    Ok(protocol.reshape(output, &shape)?)
}

/// Fractional bits of the table exponential's index: e = −d read in steps of 2^−12.
pub const TABLE_INDEX_FRACTION_BITS: u32 = 12;

/// The high table: entry h is e^(−h/16) (the index's bits 8 to 15), at `scale_bits`.
pub fn high_table(scale_bits: u32) -> Vec<u64> {
    let scale = f64::from(scale_bits).exp2();
    (0..256u32)
        .map(|h| ((-f64::from(h) / 16.0).exp() * scale).round() as u64)
        .collect()
}

/// The low table: entry j is e^(−l/4096) for the signed low part l = j (j < 256) or
/// j − 512: the remainder idx − 256·hi lies in [−256, 256) because hi may be one above
/// ⌊idx/256⌋.
pub fn low_table(scale_bits: u32) -> Vec<u64> {
    let scale = f64::from(scale_bits).exp2();
    (0..512i32)
        .map(|j| {
            let low = if j < 256 { j } else { j - 512 };
            ((-f64::from(low) / 4096.0).exp() * scale).round() as u64
        })
        .collect()
}

/// e^d for values d ≤ 0 at the plan's scale f, times the clip bits `keep`, at
/// f + [`EXTRA_BITS`] fractional bits, by two table lookups (SIGMA's nExp): the index
/// idx = −d in steps of 2^−12 (a truncation: ⌊4096·(−d)⌋ or one above), hi = idx >> 8
/// (another: ⌊idx/256⌋ or one above), the remainder l = idx − 256·hi ∈ [−256, 256)
/// exactly, then e^d ≈ e^(−hi/16)·e^(−l/4096) = e^(−idx/4096): one product of the two
/// entries, truncated once. Where the clip bit is 0 (d < −14) hi wraps the table, but the
/// entries stay below 1.07, so the product stays in range and the select zeroes it.
pub fn table_exponential<P: Protocol>(
    protocol: &mut P,
    d: &P::Shared,
    keep: &P::Shared,
) -> Result<P::Shared> {
    let f = protocol.fixed_point().fractional_bits();
    let fine = f + EXTRA_BITS;
    // e = −d ≥ 0 (times −1 in the ring: local).
    let e = protocol.scale(d, u64::MAX)?;
    let index = if f >= TABLE_INDEX_FRACTION_BITS {
        protocol.truncate(&e, f - TABLE_INDEX_FRACTION_BITS)?
    } else {
        protocol.scale(&e, 1u64 << (TABLE_INDEX_FRACTION_BITS - f))?
    };
    let high = protocol.truncate(&index, 8)?;
    let high_times_256 = protocol.scale(&high, 256)?;
    let low = protocol.sub(&index, &high_times_256)?;
    let high_entry = protocol.lookup(&high, &high_table(fine), 8)?;
    let low_entry = protocol.lookup(&low, &low_table(fine), 9)?;
    let product = protocol.mul(&high_entry, &low_entry)?;
    let exponential = protocol.truncate(&product, fine)?;
    Ok(protocol.select(keep, &exponential)?)
}

/// e^d ≈ (1 + d/2^8)^(2^8) for `len` values d ≤ 0 at the plan's scale f, times the
/// clip bits `keep` (1{d ≥ −14}), at f + [`EXTRA_BITS`] fractional bits: d at scale f
/// *is* d/2^8 at scale f + 8, lifted to f + [`EXTRA_BITS`], then [`SQUARINGS`]
/// squarings (square pairs, one truncation each). Below −2^8 the base is negative and
/// its powers wrap, but only where the clip bit is 0. tanh's exponential (the softmax's
/// until [`table_exponential`] replaced it).
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
/// table exponential on the floor index ([`approximate_exp`]).
pub fn approximate_row(row: &[f64]) -> Vec<f64> {
    let largest = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
    let exps: Vec<f64> = row.iter().map(|&v| approximate_exp(v - largest)).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The table exponential on an exact index: e^(−⌊4096·(−d)⌋/4096) for d ≥ −14, else 0.
pub fn approximate_exp(d: f64) -> f64 {
    if d < -CLIP {
        0.0
    } else {
        let scale = f64::from(1u32 << TABLE_INDEX_FRACTION_BITS);
        (-(-d * scale).floor() / scale).exp()
    }
}

/// (1 + d/2^8)^(2^8) for d ≥ −14, else 0: the limit form (tanh's).
pub fn approximate_limit_exp(d: f64) -> f64 {
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
    fn the_limit_exponential_falls_short_by_at_most_its_documented_error() {
        let mut worst: f64 = 0.0;
        for step in 0..=140_000 {
            let d = -f64::from(step) * 1e-4;
            let shortfall = d.exp() - approximate_limit_exp(d);
            assert!(shortfall >= 0.0, "d = {d}: the limit form overshoots");
            worst = worst.max(shortfall);
        }
        assert!(worst <= LIMIT_EXP_ERROR, "worst {worst}");
        assert!((-CLIP).exp() < LIMIT_EXP_ERROR);
    }

    #[test]
    fn the_table_exponential_is_within_its_documented_error_on_both_indices() {
        let step_size = 1.0 / f64::from(1u32 << TABLE_INDEX_FRACTION_BITS);
        let mut worst: f64 = 0.0;
        for step in 0..=140_000 {
            let d = -f64::from(step) * 1e-4;
            // The floor index, and the one above (the truncation may give either).
            for table_value in [approximate_exp(d), approximate_exp(d) * (-step_size).exp()] {
                worst = worst.max((d.exp() - table_value).abs());
            }
        }
        assert!(worst <= EXP_ERROR, "worst {worst}");
        assert!(worst > 2.0e-4, "the scan reaches d near 0: {worst}");
        assert!((-CLIP).exp() < EXP_ERROR);
        // The two tables multiply back to e^(−idx/4096) for every split of an index.
        let scale = 2f64.powi(28);
        let (high, low) = (high_table(28), low_table(28));
        for index in [0i64, 1, 255, 256, 4095, 57_343] {
            for high_index in [index / 256, index / 256 + 1] {
                let low_index = (index - 256 * high_index).rem_euclid(512) as usize;
                let value =
                    high[high_index as usize] as f64 * low[low_index] as f64 / scale / scale;
                let expected = (-(index as f64) / 4096.0).exp();
                assert!((value - expected).abs() < 1e-7, "index {index}");
            }
        }
    }
}
