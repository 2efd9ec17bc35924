//! GELU(x) = x·Φ(x) under MPC, by PUMA's four-piece polynomial (PUMA, arXiv 2307.12533
//! §4; cookbook §4.4), written once over [`Protocol`]:
//!
//! ```text
//! GELU(x) ≈ 0          x < −4
//!           F0(x)      −4 ≤ x < −1.95
//!           F1(x)      −1.95 ≤ x ≤ 3
//!           x          x > 3
//! F0(x) = −0.5054031199708174 − 0.42226581151983866·x − 0.11807612951181953·x²
//!         − 0.011034134030615728·x³
//! F1(x) = 0.008526321541038084 + 0.5·x + 0.3603292692789629·x² − 0.037688200365904236·x⁴
//!         + 0.0018067462606141187·x⁶
//! ```
//!
//! **Precision.** Up to 25 fractional bits (the polynomials' sums must stay below 2^62);
//! plans with more are refused.
//!
//! **Error.** Against the exact GELU in f64 the approximation's largest error over the
//! reals is 0.0200, at the x = 3 breakpoint (the unit test scans [−16, 16] and asserts
//! it); beyond [−4, 3] it is at most 4.1·10⁻³. Under fixed point each output adds at most
//! [`FIXED_POINT_ULPS`] ulps on top, and an input error e grows to at most
//! [`LIPSCHITZ`]·e (a comparison flipped by it picks the neighbouring piece, which is
//! within the same 0.0200 of GELU there).
//!
//! **Steps** (9 rounds): the three comparisons x + 4 ≥ 0, x + 1.95 ≥ 0, 3 − x ≥ 0 as one
//! batched DReLU on the node's `bits` (1.95 rounded down to the grid, so each encoded x
//! gets the piece the exact breakpoint gives it); the powers x² (a square pair), (x³, x⁴)
//! (one product) and x⁶ (a square pair), each truncated once; both polynomials as public
//! products summed at twice the scale (plus [`COEFFICIENT_EXTRA_BITS`]) and truncated
//! together; then one bit×value product selects, per element,
//! x, F0, F1 or nothing. Powers of a large |x| overflow the ring, but only inside a piece
//! whose selector bit is 0, and 0 times any ring element is exactly 0.
//!
//! It costs 3 comparisons and 5 multiplications per element. SIGMA's ReLU-minus-table
//! form ([`super::gelu_table`]) is cheaper and closer, and is what `gelu=exact` compiles
//! to; this form is `gelu=polynomial`, kept as the measured alternative.

use veil_core::RingTensor;
use veil_mpc::Protocol;

use super::blocks::public_constant;
use super::layout;
use crate::{Error, Result};

/// The approximation's largest absolute error against GELU over the reals.
pub const APPROXIMATION_ERROR: f64 = 0.0200;

/// A bound on GELU's slope (its derivative lies in [−0.13, 1.13]) and on the
/// approximation's over the range where its pieces are selected.
pub const LIPSCHITZ: f64 = 1.25;

/// The fixed-point error of one output beyond the approximation's, in ulps, with a
/// threefold margin. On F1's range (|x| ≤ 3) the powers' truncations leave x² within 1
/// ulp, x⁴ within 19 and x⁶ within 217, which the coefficients weigh down to 1.5 ulps;
/// the coefficients, encoded [`COEFFICIENT_EXTRA_BITS`] finer, add at most
/// ½·2⁻⁸·(1 + 3 + 9 + 81 + 729) ≈ 1.6 ulps; the final truncation 1. F0's range gives less.
pub const FIXED_POINT_ULPS: f64 = 16.0;

/// How many bits finer than the values the polynomials' coefficients are encoded.
pub const COEFFICIENT_EXTRA_BITS: u32 = 8;

const F0: [f64; 4] = [
    -0.505_403_119_970_817_4,
    -0.422_265_811_519_838_66,
    -0.118_076_129_511_819_53,
    -0.011_034_134_030_615_728,
];
/// F1's coefficients of x⁰, x¹, x², x⁴, x⁶.
const F1: [f64; 5] = [
    0.008_526_321_541_038_084,
    0.5,
    0.360_329_269_278_962_9,
    -0.037_688_200_365_904_236,
    0.001_806_746_260_614_118_7,
];
/// The breakpoints: below the first the output is 0, above the last it is x.
const BREAKPOINTS: [f64; 3] = [-4.0, -1.95, 3.0];

/// PUMA's GELU of a secret x (at the plan's scale), comparisons on `bits` bits.
pub fn gelu<P: Protocol>(protocol: &mut P, value: &P::Shared, bits: u32) -> Result<P::Shared> {
    let shape = protocol.shape_of(value);
    let len: usize = shape.iter().product();
    let fractional_bits = protocol.fixed_point().fractional_bits();
    // F1 reaches 3·2^(2f + 8) at scale 2f + COEFFICIENT_EXTRA_BITS, below 2^62 for f ≤ 26.
    if 2 * fractional_bits + COEFFICIENT_EXTRA_BITS + 2 >= 62 {
        return Err(Error::UnsupportedPrecision {
            op: "gelu",
            supported: "up to 25",
            found: fractional_bits,
        });
    }
    let x = layout::reshape(protocol, value, &[len])?;
    let codec = protocol.fixed_point();
    let block = |index: usize| -> Vec<usize> { (index * len..(index + 1) * len).collect() };

    // 1{x ≥ −4}, 1{x ≥ −1.95}, 1{x ≤ 3}: one batched comparison.
    let low = public_constant(protocol, -BREAKPOINTS[0], fractional_bits, len)?;
    // −1.95 is not on the fixed-point grid: rounding its magnitude down puts the
    // comparison's threshold on the first grid point at or above −1.95, so every encoded
    // x is assigned the piece the exact breakpoint gives it.
    let middle_word = (-BREAKPOINTS[1] * codec.scale()).floor() as u64;
    let middle = protocol.public(&RingTensor::new(vec![len], vec![middle_word; len])?)?;
    let high = public_constant(protocol, BREAKPOINTS[2], fractional_bits, len)?;
    let above_low = protocol.add(&x, &low)?;
    let above_middle = protocol.add(&x, &middle)?;
    let below_high = protocol.sub(&high, &x)?;
    let signs = protocol.concat(&[&above_low, &above_middle, &below_high])?;
    let signs = protocol.drelu(&signs, bits)?;
    let [d0, d1, d2] = [0, 1, 2].map(|index| protocol.gather(&signs, &block(index), &[len]));
    let (d0, d1, d2) = (d0?, d1?, d2?);
    // Selectors as ring integers: x above 3; F0 on [−4, −1.95); F1 on [−1.95, 3].
    let one = protocol.public(&RingTensor::new(vec![len], vec![1; len])?)?;
    let select_identity = protocol.sub(&one, &d2)?;
    let select_f0 = protocol.sub(&d0, &d1)?;
    let d1_and_d2 = protocol.add(&d1, &d2)?;
    let select_f1 = protocol.sub(&d1_and_d2, &one)?;

    // Powers, each product truncated once.
    let x2 = protocol.square(&x)?;
    let x2 = protocol.truncate(&x2, fractional_bits)?;
    let left = protocol.concat(&[&x, &x2])?;
    let right = protocol.concat(&[&x2, &x2])?;
    let x3_x4 = protocol.mul(&left, &right)?;
    let x3_x4 = protocol.truncate(&x3_x4, fractional_bits)?;
    let x3 = protocol.gather(&x3_x4, &block(0), &[len])?;
    let x4 = protocol.gather(&x3_x4, &block(1), &[len])?;
    let x6 = protocol.square(&x3)?;
    let x6 = protocol.truncate(&x6, fractional_bits)?;

    // Both polynomials at scale 2f + 8 (coefficients 8 bits finer than the values, so
    // x⁶'s small coefficient keeps its precision), then one truncation for the two.
    let polynomial = |protocol: &mut P,
                      constant_term: P::Shared,
                      terms: &[(&P::Shared, f64)]|
     -> Result<P::Shared> {
        let mut sum = constant_term;
        for (power, coefficient) in terms {
            let term = protocol.scale(
                power,
                codec.encode_scaled(*coefficient, fractional_bits + COEFFICIENT_EXTRA_BITS)?,
            )?;
            sum = protocol.add(&sum, &term)?;
        }
        Ok(sum)
    };
    let sum_bits = 2 * fractional_bits + COEFFICIENT_EXTRA_BITS;
    let f0_constant = public_constant(protocol, F0[0], sum_bits, len)?;
    let f0 = polynomial(
        protocol,
        f0_constant,
        &[(&x, F0[1]), (&x2, F0[2]), (&x3, F0[3])],
    )?;
    let f1_constant = public_constant(protocol, F1[0], sum_bits, len)?;
    let f1 = polynomial(
        protocol,
        f1_constant,
        &[(&x, F1[1]), (&x2, F1[2]), (&x4, F1[3]), (&x6, F1[4])],
    )?;
    let pieces = protocol.concat(&[&f0, &f1])?;
    let pieces = protocol.truncate(&pieces, fractional_bits + COEFFICIENT_EXTRA_BITS)?;

    // One bit × value product selects the piece of every element.
    let selectors = protocol.concat(&[&select_identity, &select_f0, &select_f1])?;
    let candidates = protocol.concat(&[&x, &pieces])?;
    let chosen = protocol.mul(&selectors, &candidates)?;
    let mut output = protocol.gather(&chosen, &block(0), &[len])?;
    for index in 1..3 {
        let part = protocol.gather(&chosen, &block(index), &[len])?;
        output = protocol.add(&output, &part)?;
    }
    Ok(protocol.reshape(output, &shape)?)
}

/// The approximation in f64, piece by piece (for the error scan and for tests).
pub fn approximate(x: f64) -> f64 {
    if x < BREAKPOINTS[0] {
        0.0
    } else if x < BREAKPOINTS[1] {
        F0[0] + x * (F0[1] + x * (F0[2] + x * F0[3]))
    } else if x <= BREAKPOINTS[2] {
        let x2 = x * x;
        F1[0] + F1[1] * x + F1[2] * x2 + F1[3] * x2 * x2 + F1[4] * x2 * x2 * x2
    } else {
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented error holds over the reals: a fine scan of [−16, 16] (beyond it
    /// the pieces are 0 and x, whose errors only shrink).
    #[test]
    fn the_approximation_is_within_its_documented_error() {
        let mut worst: f64 = 0.0;
        for step in -160_000..=160_000 {
            let x = f64::from(step) * 1e-4;
            worst = worst.max((approximate(x) - veil_model::plain::gelu(x)).abs());
        }
        assert!(worst <= APPROXIMATION_ERROR, "worst {worst}");
        assert!(
            worst > 0.019,
            "the scan reaches the x = 3 breakpoint: {worst}"
        );
    }
}
