//! MPCFormer's softmax replacements under MPC (cookbook §4.5; DESIGN.md §5), written
//! once over [`Protocol`]: no row max and no exponential.
//!
//! - **2Quad**: q = (x + c)² (a local shift and one square), times the attention mask
//!   where the graph gives one (one product; the mask's 0 and 1 are exact), the row sum
//!   s (local), then the normalised ratio: s's octave K by one batched comparison,
//!   q·2^−K and s·2^−K ∈ [1, 2) in one product, [`reciprocal`] over that one octave,
//!   and one product. Octaves from 2^−4 to 2^J₁, J₁ from the node's bit-width.
//! - **2ReLU**: r = ReLU(x) (one comparison), s = Σr + ε (local), 1/s over [ε, 2^J₁),
//!   and (r + ε/n)·(1/s).
//!
//! **Error.** Both are computed exactly by the plain executor (they are the model's
//! function, not an approximation of it); [`quad_softmax_bound`] and
//! [`relu_softmax_bound`] bound the fixed-point result against them, from the row sums
//! the plain values reach. Normalising by a power of two first keeps the quotient's
//! significant bits for sums of any size (a reciprocal of a large sum at the plan's
//! scale alone would keep few). A 2Quad row whose sum
//! falls below 2^−4 (every score within ¼/√n of −c) is outside the reciprocal's range
//! and not covered.

use veil_mpc::Protocol;

use super::blocks::{broadcast_rows, public_constant, reciprocal, row_sums};
use super::layout;
use crate::Result;

/// The smallest 2Quad row sum the normalisation covers, as a power of two.
pub const QUAD_LOWEST_OCTAVE: i32 = -4;

/// How many bits finer than the plan's scale the normalisation's powers of two and the
/// reciprocal are held.
const EXTRA_BITS: u32 = 12;

/// Fixed-point error of one output beyond what the input error explains, in ulps: the
/// normalised numerator's and sum's truncations (1 ulp each, relative to a sum in [1,
/// 2)), the reciprocal's 2.6·10⁻⁶ relative and its truncations, the last product's
/// truncation, with a margin.
pub const FIXED_POINT_ULPS: f64 = 16.0;

/// The octaves J₀..J₁ of a row sum held on `bits` bits at `f` fractional bits, from
/// 2^`lowest`: sums up to 2^(bits − 2 − f), so s − t fits the comparison, and powers
/// 2^−J exact at f + [`EXTRA_BITS`] bits.
fn octaves(lowest: i32, bits: u32, f: u32) -> std::ops::Range<i32> {
    let finest = i64::from(f + EXTRA_BITS);
    let highest = (i64::from(bits) - 2 - i64::from(f)).clamp(i64::from(lowest) + 1, finest) as i32;
    lowest..highest
}

/// q_i / Σ_row q for `[len]` numerators q and `[rows]` sums s at the plan's scale, with
/// s ∈ [2^J₀, 2^J₁): one batched comparison finds each sum's octave K, c = 2^−K (a
/// power of two, exact at f + [`EXTRA_BITS`] bits, local in the bits), q·c and s·c ∈
/// [1, 2) in one product, then the reciprocal of s·c over one octave and one product.
/// Normalising first keeps the quotient's significant bits for sums of any size.
fn normalised_ratio<P: Protocol>(
    protocol: &mut P,
    numerators: &P::Shared,
    sums: &P::Shared,
    (rows, columns): (usize, usize),
    octaves: std::ops::Range<i32>,
    bits: u32,
) -> Result<P::Shared> {
    let codec = protocol.fixed_point();
    let f = codec.fractional_bits();
    let fine = f + EXTRA_BITS;
    let lowest = octaves.start;
    // b_J = 1{s ≥ 2^J} for J above the lowest octave, stacked.
    let mut differences = Vec::new();
    for octave in lowest + 1..octaves.end {
        let threshold = public_constant(protocol, 2f64.powi(octave), f, rows)?;
        differences.push(protocol.sub(sums, &threshold)?);
    }
    let mut power = public_constant(protocol, 2f64.powi(-lowest), fine, rows)?;
    if !differences.is_empty() {
        let stacked: Vec<&P::Shared> = differences.iter().collect();
        let stacked = protocol.concat(&stacked)?;
        let at_least = protocol.drelu(&stacked, bits)?;
        // c = 2^−J₀ − Σ_J b_J·2^−J = 2^−K.
        for (index, octave) in (lowest + 1..octaves.end).enumerate() {
            let block: Vec<usize> = (index * rows..(index + 1) * rows).collect();
            let bit = protocol.gather(&at_least, &block, &[rows])?;
            let step = protocol.scale(&bit, codec.encode_scaled(2f64.powi(-octave), fine)?)?;
            power = protocol.sub(&power, &step)?;
        }
    }
    // (q, s)·(c per element, c) in one product, back to scale f.
    let len = rows * columns;
    let spread = broadcast_rows(protocol, &power, rows, columns)?;
    let left = protocol.concat(&[numerators, sums])?;
    let right = protocol.concat(&[&spread, &power])?;
    let product = protocol.mul(&left, &right)?;
    let product = protocol.truncate(&product, fine)?;
    let numerators = protocol.gather(&product, &(0..len).collect::<Vec<_>>(), &[len])?;
    let sums = protocol.gather(&product, &(len..len + rows).collect::<Vec<_>>(), &[rows])?;
    // s·c ∈ [1, 2) (below 1 only for sums under 2^J₀): its comparisons need f + 4 bits.
    let inverse = reciprocal(protocol, &sums, rows, 0..1, (f + 4).min(64), EXTRA_BITS)?;
    let inverse = broadcast_rows(protocol, &inverse, rows, columns)?;
    let output = protocol.mul(&numerators, &inverse)?;
    Ok(protocol.truncate(&output, fine)?)
}

/// 2Quad softmax over the last dimension, `mask` (`[b, keys]`) zeroing padding keys.
pub fn quad_softmax<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    mask: Option<&P::Shared>,
    shift: f64,
    bits: u32,
) -> Result<P::Shared> {
    let shape = protocol.shape_of(value);
    let columns = shape.last().copied().unwrap_or(1).max(1);
    let len: usize = shape.iter().product();
    let rows = len / columns;
    let f = protocol.fixed_point().fractional_bits();
    let x = layout::reshape(protocol, value, &[len])?;
    let shift = public_constant(protocol, shift, f, len)?;
    let shifted = protocol.add(&x, &shift)?;
    let square = protocol.square(&shifted)?;
    let mut q = protocol.truncate(&square, f)?;
    if let Some(mask) = mask {
        // The mask [b, keys] repeated over every row of its sample.
        let per_sample = len / shape[0].max(1);
        let indices: Vec<usize> = (0..len)
            .map(|position| (position / per_sample) * columns + position % columns)
            .collect();
        let spread = protocol.gather(mask, &indices, &[len])?;
        let masked = protocol.mul(&q, &spread)?;
        q = protocol.truncate(&masked, f)?;
    }
    let sum = row_sums(protocol, &q, rows, columns)?;
    let octaves = octaves(QUAD_LOWEST_OCTAVE, bits, f);
    let output = normalised_ratio(protocol, &q, &sum, (rows, columns), octaves, bits)?;
    Ok(protocol.reshape(output, &shape)?)
}

/// 2ReLU softmax over the last dimension: (ReLU(x) + ε/n) / (Σ ReLU(x) + ε).
pub fn relu_softmax<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    epsilon: f64,
    bits: u32,
) -> Result<P::Shared> {
    let shape = protocol.shape_of(value);
    let columns = shape.last().copied().unwrap_or(1).max(1);
    let len: usize = shape.iter().product();
    let rows = len / columns;
    let f = protocol.fixed_point().fractional_bits();
    let x = layout::reshape(protocol, value, &[len])?;
    let positive = protocol.relu(&x, bits)?;
    let sum = row_sums(protocol, &positive, rows, columns)?;
    let floor = public_constant(protocol, epsilon, f, rows)?;
    let sum = protocol.add(&sum, &floor)?;
    let share = public_constant(protocol, epsilon / columns as f64, f, len)?;
    let numerators = protocol.add(&positive, &share)?;
    let octaves = octaves(epsilon.log2().floor() as i32, bits, f);
    let output = normalised_ratio(protocol, &numerators, &sum, (rows, columns), octaves, bits)?;
    Ok(protocol.reshape(output, &shape)?)
}

/// The error bound of a ratio p_i = q_i / Σq whose terms are each off by at most `term`
/// over rows of `columns` terms whose sums are at least `smallest_sum`: |Δp_i| ≤ (Δq_i +
/// p_i·ΣΔq)/(S − ΣΔq) ≤ (1 + n)·term/(S − n·term), plus the fixed-point ulps; never
/// above 1 (every output lies in [0, 1]).
fn ratio_bound(term: f64, columns: usize, smallest_sum: f64, ulp: f64) -> f64 {
    let n = columns as f64;
    let room = smallest_sum - n * term;
    if room <= 0.0 {
        return 1.0;
    }
    ((1.0 + n) * term / room + FIXED_POINT_ULPS * ulp).min(1.0)
}

/// [`quad_softmax`]'s error bound on scores off by at most `error` whose magnitudes
/// are at most `magnitude`, for rows of `columns` whose plain sums Σq are at least
/// `smallest_sum`: each q = (x + c)² is off by 2(m + |c|)e + e² plus 2 ulp (its
/// truncation and the mask product's).
pub fn quad_softmax_bound(
    shift: f64,
    (error, magnitude): (f64, f64),
    columns: usize,
    smallest_sum: f64,
    ulp: f64,
) -> f64 {
    let reach = magnitude + shift.abs();
    let term = 2.0 * reach * (error + 0.5 * ulp) + (error + 0.5 * ulp).powi(2) + 4.0 * ulp;
    ratio_bound(term, columns, smallest_sum, ulp)
}

/// [`relu_softmax`]'s error bound: each ReLU is off by at most the input's error, the
/// sums (at least ε) by n times that.
pub fn relu_softmax_bound(error: f64, columns: usize, smallest_sum: f64, ulp: f64) -> f64 {
    ratio_bound(error + ulp, columns, smallest_sum, ulp)
}
