//! Elementwise ops: ReLU (one DCF comparison gate, cookbook §3.4, on the node's
//! calibrated bit-width) and the residual sum (local).

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
