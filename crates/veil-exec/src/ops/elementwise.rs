//! Elementwise ops: ReLU (one DCF comparison gate, cookbook §3.4, on the node's
//! calibrated bit-width), the residual sum (local) and a public scale (a local product
//! and one truncation).

use veil_mpc::Protocol;

use crate::Result;

/// max(x, 0), the sign decided on the `bits`-bit reduction of x.
pub fn relu<P: Protocol>(protocol: &mut P, value: &P::Shared, bits: u32) -> Result<P::Shared> {
    Ok(protocol.relu(value, bits)?)
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
