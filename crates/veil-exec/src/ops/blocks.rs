//! Building blocks the ops share, each written once over [`Protocol`]: public constants,
//! row sums, per-row values broadcast to their row's elements, and the max tournament
//! over stacked blocks (max pooling's windows, softmax's row max).

use veil_core::RingTensor;
use veil_mpc::Protocol;

use crate::Result;

/// `count` copies of the public `value` at `bits` fractional bits, as a secret (local).
pub fn public_constant<P: Protocol>(
    protocol: &mut P,
    value: f64,
    bits: u32,
    count: usize,
) -> Result<P::Shared> {
    let word = protocol.fixed_point().encode_scaled(value, bits)?;
    Ok(protocol.public(&RingTensor::new(vec![count], vec![word; count])?)?)
}

/// The sum of each row of a row-major `rows × columns` secret, as `[rows]` (local).
pub fn row_sums<P: Protocol>(
    protocol: &mut P,
    values: &P::Shared,
    rows: usize,
    columns: usize,
) -> Result<P::Shared> {
    let column = |c: usize| -> Vec<usize> { (0..rows).map(|r| r * columns + c).collect() };
    let mut sum = protocol.gather(values, &column(0), &[rows])?;
    for c in 1..columns {
        let next = protocol.gather(values, &column(c), &[rows])?;
        sum = protocol.add(&sum, &next)?;
    }
    Ok(sum)
}

/// A `[rows]` secret repeated over each row's `columns` elements, as a flat row-major
/// `[rows × columns]` (local).
pub fn broadcast_rows<P: Protocol>(
    protocol: &mut P,
    row_values: &P::Shared,
    rows: usize,
    columns: usize,
) -> Result<P::Shared> {
    let indices: Vec<usize> = (0..rows * columns).map(|index| index / columns).collect();
    Ok(protocol.gather(row_values, &indices, &[rows * columns])?)
}

/// The elementwise max of `count` stacked blocks of `block_len` values each (block i at
/// `i·block_len`), as a tournament: each level compares the first half of the blocks
/// with the second, max(a, b) = b + ReLU(a − b) on `bits` bits, one round per level.
/// Returns a flat `[block_len]`.
pub fn tournament_max<P: Protocol>(
    protocol: &mut P,
    stacked: P::Shared,
    count: usize,
    block_len: usize,
    bits: u32,
) -> Result<P::Shared> {
    let mut current = stacked;
    let mut count = count;
    while count > 1 {
        let half = count / 2;
        let block = |range: std::ops::Range<usize>| -> Vec<usize> {
            (range.start * block_len..range.end * block_len).collect()
        };
        let paired = [half * block_len];
        let left = protocol.gather(&current, &block(0..half), &paired)?;
        let right = protocol.gather(&current, &block(half..2 * half), &paired)?;
        let difference = protocol.sub(&left, &right)?;
        let positive = protocol.relu(&difference, bits)?;
        let larger = protocol.add(&right, &positive)?;
        current = if count % 2 == 1 {
            let rest = protocol.gather(&current, &block(2 * half..count), &[block_len])?;
            protocol.concat(&[&larger, &rest])?
        } else {
            larger
        };
        count = count.div_ceil(2);
    }
    Ok(current)
}

/// Newton iterations of [`reciprocal`].
pub const NEWTON_ITERATIONS: usize = 3;

/// The thresholds t a row sum is compared against (1.5·2^J and 2^(J+1) for each octave
/// J in `octaves`) and, for each, how much y₀ drops once s ≥ t: y₀ is 2^−J/1.25 on
/// [2^J, 1.5·2^J) and 2^−J/1.75 on [1.5·2^J, 2^(J+1)), so s·y₀ ∈ [0.8, 1.2] and the
/// relative error starts at most 0.2 (0.2^(2^3) ≈ 2.6·10⁻⁶ after three steps). Returns
/// the first start, 2^−J₀/1.25, and the steps.
pub fn reciprocal_starts(octaves: std::ops::Range<i32>) -> (f64, Vec<(f64, f64)>) {
    let start = |low: f64, high_half: bool| {
        if high_half {
            1.0 / (1.75 * low)
        } else {
            1.0 / (1.25 * low)
        }
    };
    let first = start(2f64.powi(octaves.start), false);
    let mut previous = first;
    let mut starts = Vec::new();
    for j in octaves {
        let low = 2f64.powi(j);
        for (threshold, value) in [
            (1.5 * low, start(low, true)),
            (2.0 * low, start(2.0 * low, false)),
        ] {
            starts.push((threshold, previous - value));
            previous = value;
        }
    }
    (first, starts)
}

/// 1/s for a `[rows]` secret s at the plan's scale with s ∈ [2^J₀, 2^J₁) for `octaves`
/// J₀..J₁ (softmax's row sums, the 2Quad and 2ReLU denominators), within 2.6·10⁻⁶
/// relative plus a few ulps: one batched comparison of s against every threshold of
/// [`reciprocal_starts`] on `bits` bits (s − t must fit them), so y₀ is local in the
/// bits, then [`NEWTON_ITERATIONS`] steps y ← y(2 − s·y), y held `extra_bits` finer
/// than the plan's scale (and returned so): a reciprocal of a large sum is small, and
/// at the plan's scale alone it would keep few significant bits. The products reach
/// 2^(2(f + extra) + 1 − J₀), which must stay below 2^62. Sums below 2^J₀ start too
/// high and converge more slowly, wrongly as s → 0; the callers' ranges exclude them.
pub fn reciprocal<P: Protocol>(
    protocol: &mut P,
    sum: &P::Shared,
    rows: usize,
    octaves: std::ops::Range<i32>,
    bits: u32,
    extra_bits: u32,
) -> Result<P::Shared> {
    let codec = protocol.fixed_point();
    let f = codec.fractional_bits();
    let fine = f + extra_bits;
    let (first, starts) = reciprocal_starts(octaves);
    let mut thresholds = Vec::with_capacity(starts.len());
    for &(threshold, _) in &starts {
        let threshold = public_constant(protocol, threshold, f, rows)?;
        thresholds.push(protocol.sub(sum, &threshold)?);
    }
    let stacked: Vec<&P::Shared> = thresholds.iter().collect();
    let stacked = protocol.concat(&stacked)?;
    let at_least = protocol.drelu(&stacked, bits)?;
    // The bits are ring integers 0 and 1: a step encoded at `fine` bits times a bit is
    // the step or nothing, at that scale.
    let mut reciprocal = public_constant(protocol, first, fine, rows)?;
    for (index, &(_, step)) in starts.iter().enumerate() {
        let block: Vec<usize> = (index * rows..(index + 1) * rows).collect();
        let bit = protocol.gather(&at_least, &block, &[rows])?;
        let step = protocol.scale(&bit, codec.encode_scaled(step, fine)?)?;
        reciprocal = protocol.sub(&reciprocal, &step)?;
    }
    let two = public_constant(protocol, 2.0, fine, rows)?;
    for _ in 0..NEWTON_ITERATIONS {
        let product = protocol.mul(sum, &reciprocal)?;
        let product = protocol.truncate(&product, f)?;
        let correction = protocol.sub(&two, &product)?;
        let next = protocol.mul(&reciprocal, &correction)?;
        reciprocal = protocol.truncate(&next, fine)?;
    }
    Ok(reciprocal)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The piecewise start and three Newton steps reach 2.6·10⁻⁶ relative error on
    /// every sum of the range, for softmax's [1, 8192) and the 2Quad and 2ReLU ranges.
    #[test]
    fn the_reciprocal_start_and_three_steps_reach_the_documented_error() {
        for octaves in [0..13, -4..20, -7..30] {
            let (first, starts) = reciprocal_starts(octaves.clone());
            let (low, high) = (2f64.powi(octaves.start), 2f64.powi(octaves.end));
            let mut worst: f64 = 0.0;
            for step in 0..=400_000 {
                // Log-spaced over the range.
                let s = low * (high / low).powf(f64::from(step) / 400_001.0);
                let mut y = first
                    - starts
                        .iter()
                        .filter(|(threshold, _)| s >= *threshold)
                        .map(|(_, drop)| drop)
                        .sum::<f64>();
                assert!((s * y - 1.0).abs() <= 0.2 + 1e-9, "s = {s}: start {y}");
                for _ in 0..NEWTON_ITERATIONS {
                    y *= 2.0 - s * y;
                }
                worst = worst.max((s * y - 1.0).abs());
            }
            assert!(worst <= 2.6e-6, "{octaves:?}: worst {worst}");
        }
    }
}
