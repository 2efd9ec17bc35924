//! tanh under MPC (a classification head's pooler), written once over [`Protocol`]
//! from the softmax's parts (cookbook §4.1, §4.2), in the stable form
//! tanh(x) = sign(x)·(1 − e^(−2|x|))/(1 + e^(−2|x|)).
//!
//! **Steps**, elementwise:
//! 1. s = 1{x ≥ 0} (one comparison) and |x| = 2·s·x − x (one select);
//! 2. d = −2|x| ≤ 0, the clip bit 1{d ≥ −14} (one comparison) and e = e^d by the
//!    softmax's limit form ([`limit_exponential`]), so e ∈ (0, 1];
//! 3. q = 1 + e ∈ [1, 2] and its reciprocal by [`NEWTON_ITERATIONS`] Newton steps
//!    y ← y(2 − q·y) from y₀ = ¾ (q·y₀ ∈ [¾, 3/2], relative error ½^16 after four);
//! 4. t = (1 − e)·y = 2y − 1 (local), and tanh(x) = (2s − 1)·t (one select).
//!
//! **Error.** The limit form falls short of e^d by at most [`LIMIT_EXP_ERROR`] on [−14, 0]
//! and the clip drops at most e^−14; t = 2/(1 + e) − 1 moves by at most twice the change
//! of e (|dt/de| = 2/(1 + e)² ≤ 2), so the approximation is within
//! [`APPROXIMATION_ERROR`] of tanh (a unit test scans it), and the
//! fixed-point evaluation adds at most [`FIXED_POINT_ULPS`] ulps. tanh is 1-Lipschitz,
//! so an input error passes through at most unchanged. Up to 18 fractional bits, as the
//! softmax.

use veil_mpc::Protocol;

use super::blocks::public_constant;
use super::layout;
use super::softmax::{CLIP, EXTRA_BITS, LIMIT_EXP_ERROR, limit_exponential};
use crate::{Error, Result};

/// Newton steps of the reciprocal of 1 + e^−2|x| ∈ [1, 2].
pub const NEWTON_ITERATIONS: usize = 4;
/// The approximation's largest error against tanh: twice the exponential's shortfall
/// (plus the clip's e^−14, far below it).
pub const APPROXIMATION_ERROR: f64 = 2.0 * LIMIT_EXP_ERROR;
/// The fixed-point error against the approximation, in ulps: the exponential's
/// truncations, the reciprocal's residual and truncations, the last select.
pub const FIXED_POINT_ULPS: f64 = 16.0;

/// tanh of a secret tensor, elementwise; comparisons on `bits` bits.
pub fn tanh<P: Protocol>(protocol: &mut P, value: &P::Shared, bits: u32) -> Result<P::Shared> {
    let shape = protocol.shape_of(value);
    let len: usize = shape.iter().product();
    let f = protocol.fixed_point().fractional_bits();
    if 2 * (f + EXTRA_BITS) >= 62 {
        return Err(Error::UnsupportedPrecision {
            op: "tanh",
            supported: "up to 18",
            found: f,
        });
    }
    let x = layout::reshape(protocol, value, &[len])?;

    // 1. The sign bit and |x|.
    let sign = protocol.drelu(&x, bits)?;
    let positive = protocol.select(&sign, &x)?;
    let twice = protocol.scale(&positive, 2)?;
    let magnitude = protocol.sub(&twice, &x)?;

    // 2. e = e^(−2|x|), clipped below −14.
    let zero = public_constant(protocol, 0.0, f, len)?;
    let doubled_magnitude = protocol.scale(&magnitude, 2)?;
    let d = protocol.sub(&zero, &doubled_magnitude)?;
    let clip = public_constant(protocol, CLIP, f, len)?;
    let shifted = protocol.add(&d, &clip)?;
    let keep = protocol.drelu(&shifted, bits)?;
    let exponential = limit_exponential(protocol, &d, &keep, len)?;
    let exponential = protocol.truncate(&exponential, EXTRA_BITS)?;

    // 3. y = 1/(1 + e) by Newton from ¾.
    let one = public_constant(protocol, 1.0, f, len)?;
    let denominator = protocol.add(&one, &exponential)?;
    let mut reciprocal = public_constant(protocol, 0.75, f, len)?;
    let two = public_constant(protocol, 2.0, f, len)?;
    for _ in 0..NEWTON_ITERATIONS {
        let product = protocol.mul(&denominator, &reciprocal)?;
        let product = protocol.truncate(&product, f)?;
        let correction = protocol.sub(&two, &product)?;
        let next = protocol.mul(&reciprocal, &correction)?;
        reciprocal = protocol.truncate(&next, f)?;
    }

    // 4. t = 2y − 1 ≥ 0, and the sign back: (2s − 1)·t = 2·s·t − t.
    let doubled = protocol.scale(&reciprocal, 2)?;
    let magnitude_tanh = protocol.sub(&doubled, &one)?;
    let signed = protocol.select(&sign, &magnitude_tanh)?;
    let signed = protocol.scale(&signed, 2)?;
    let output = protocol.sub(&signed, &magnitude_tanh)?;
    Ok(protocol.reshape(output, &shape)?)
}

/// The approximation in f64: sign(x)·(1 − e)/(1 + e) with e the limit-form e^(−2|x|).
pub fn approximate_tanh(x: f64) -> f64 {
    let e = super::softmax::approximate_limit_exp(-2.0 * x.abs());
    x.signum() * (1.0 - e) / (1.0 + e)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_approximation_is_within_its_documented_error() {
        let mut worst: f64 = 0.0;
        for step in -200_000..=200_000 {
            let x = f64::from(step) * 1e-4;
            worst = worst.max((x.tanh() - approximate_tanh(x)).abs());
        }
        assert!(worst <= APPROXIMATION_ERROR, "worst {worst}");
        assert!(
            worst > APPROXIMATION_ERROR / 4.0,
            "the documented error is loose: {worst}"
        );
    }
}
