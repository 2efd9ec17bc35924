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
