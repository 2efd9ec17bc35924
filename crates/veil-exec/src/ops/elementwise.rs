//! Elementwise ops: ReLU (one DCF comparison gate, cookbook §3.4, on the node's
//! calibrated bit-width), the `quad` activations a·x² + b·x + c (cookbook §5.1: one
//! square, no comparison), the residual sum (local) and a public scale (a local product
//! and one truncation).
//!
//! **Quadratics.** When a = ±2^−k (the default forms' 1/8, and what `veil distill`
//! trains), a·x² + b·x + c = a·(x + s)² + c′ with s = b/(2a) and c′ = c − b²/(4a): the
//! shift and c′ are local, the square one opening, and a's power of two is folded into
//! the one truncation (by f + k bits): 2 rounds. Otherwise, or when |s| >
//! [`MAXIMUM_SHIFT`] (whose square could leave the ring's headroom), the standard form:
//! x² truncated, then a·x² + b·x truncated: 3 rounds. [`quadratic_bound`] is the
//! documented error of both.

use veil_mpc::Protocol;

use super::blocks::public_constant;
use crate::Result;

/// The largest vertex shift |b/(2a)| the two-round form takes.
pub const MAXIMUM_SHIFT: f64 = 64.0;

/// max(x, 0), the sign decided on the `bits`-bit reduction of x.
pub fn relu<P: Protocol>(protocol: &mut P, value: &P::Shared, bits: u32) -> Result<P::Shared> {
    Ok(protocol.relu(value, bits)?)
}

/// If a = ±2^−k for a whole k in 0..=16 and the vertex is within [`MAXIMUM_SHIFT`]:
/// (k, whether a is negative, the shift s = b/(2a), the constant c − b²/(4a)).
fn vertex_form([a, b, c]: [f64; 3]) -> Option<(u32, bool, f64, f64)> {
    let k = -a.abs().log2();
    let whole = k.round();
    if a == 0.0 || (k - whole).abs() > 1e-12 || !(0.0..=16.0).contains(&whole) {
        return None;
    }
    let shift = b / (2.0 * a);
    (shift.abs() <= MAXIMUM_SHIFT).then(|| (whole as u32, a < 0.0, shift, c - b * b / (4.0 * a)))
}

/// a·x² + b·x + c elementwise (see the module's two forms).
pub fn quadratic<P: Protocol>(
    protocol: &mut P,
    value: &P::Shared,
    coefficients: [f64; 3],
) -> Result<P::Shared> {
    let codec = protocol.fixed_point();
    let f = codec.fractional_bits();
    let shape = protocol.shape_of(value);
    let len: usize = shape.iter().product();
    let value = &super::layout::reshape(protocol, value, &[len])?;
    let [a, b, c] = coefficients;
    let (sum, constant) = match vertex_form(coefficients) {
        Some((k, negative, shift, constant)) => {
            let shift = public_constant(protocol, shift, f, len)?;
            let shifted = protocol.add(value, &shift)?;
            let square = protocol.square(&shifted)?;
            let square = if negative {
                let zero = public_constant(protocol, 0.0, 2 * f, len)?;
                protocol.sub(&zero, &square)?
            } else {
                square
            };
            (protocol.truncate(&square, f + k)?, constant)
        }
        None => {
            let square = protocol.square(value)?;
            let square = protocol.truncate(&square, f)?;
            let quadratic = protocol.scale(&square, codec.encode(a)?)?;
            let linear = protocol.scale(value, codec.encode(b)?)?;
            let sum = protocol.add(&quadratic, &linear)?;
            (protocol.truncate(&sum, f)?, c)
        }
    };
    let constant = public_constant(protocol, constant, f, len)?;
    let output = protocol.add(&sum, &constant)?;
    Ok(protocol.reshape(output, &shape)?)
}

/// (error bound, magnitude bound) of [`quadratic`] on an input with `(error,
/// magnitude)`, against a·x² + b·x + c in exact arithmetic. Two-round form: the shift's
/// encoding (½ ulp) joins the input error e′, the square of x + s is off by at most
/// |a|·(2(m + |s|)e′ + e′²), the truncation adds 2 ulp and c′'s encoding ½. Standard
/// form: x² is off by 2me + e² + 2 ulp, a's and b's encodings (½ ulp each) times x²
/// and x, the coefficients times the errors, 2 ulp for the last truncation and ½ for c.
pub fn quadratic_bound(
    coefficients: [f64; 3],
    (error, magnitude): (f64, f64),
    ulp: f64,
) -> (f64, f64) {
    let [a, b, c] = coefficients;
    let output_magnitude = a.abs() * magnitude * magnitude + b.abs() * magnitude + c.abs();
    let bound = match vertex_form(coefficients) {
        Some((_, _, shift, _)) => {
            let shifted = error + 0.5 * ulp;
            a.abs() * (2.0 * (magnitude + shift.abs()) * shifted + shifted * shifted) + 2.5 * ulp
        }
        None => {
            let reach = magnitude + error;
            let square = 2.0 * magnitude * error + error * error + 2.0 * ulp;
            a.abs() * square
                + 0.5 * ulp * (reach * reach + 2.0 * ulp)
                + b.abs() * error
                + 0.5 * ulp * reach
                + 2.5 * ulp
        }
    };
    (bound, output_magnitude + bound)
}

/// x + y (local).
pub fn add<P: Protocol>(
    protocol: &mut P,
    left: &P::Shared,
    right: &P::Shared,
) -> Result<P::Shared> {
    Ok(protocol.add(left, right)?)
}

/// x·c for a public constant c: the local product with c at the plan's scale, then one
/// truncation.
pub fn scale<P: Protocol>(protocol: &mut P, value: &P::Shared, factor: f64) -> Result<P::Shared> {
    let codec = protocol.fixed_point();
    let product = protocol.scale(value, codec.encode(factor)?)?;
    Ok(protocol.truncate(&product, codec.fractional_bits())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_forms_take_the_two_round_vertex_form() {
        let relu = vertex_form(veil_model::approximation::RELU_QUAD).unwrap();
        assert_eq!((relu.0, relu.1), (3, false));
        assert!((relu.2 - 2.0).abs() < 1e-12 && (relu.3 + 0.25).abs() < 1e-12);
        let gelu = vertex_form(veil_model::approximation::GELU_QUAD).unwrap();
        assert!((gelu.2 - 1.0).abs() < 1e-12 && (gelu.3 - 0.375).abs() < 1e-12);
        assert!(vertex_form([-0.25, 1.0, 0.0]).is_some_and(|form| form.1));
        for general in [[0.3, 0.5, 0.1], [0.0, 1.0, 0.0], [2f64.powi(-10), 1.0, 0.0]] {
            assert!(vertex_form(general).is_none(), "{general:?}");
        }
    }
}
