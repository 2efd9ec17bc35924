//! GELU(x) = x·Φ(x) under MPC as ReLU(x) minus a table (SIGMA, PETS 2024, §5; cookbook
//! §4.4), written once over [`Protocol`]:
//!
//! ```text
//! GELU(x) = ReLU(x) − δ(|x|),   δ(a) = a·Φ(−a)   (even in x, at most 0.17, δ(4) ≈ 1.3·10⁻⁴)
//! ```
//!
//! **Steps** (8 rounds; the `gelu_table` IR op, what `gelu=exact` compiles to; PUMA's
//! polynomial is `gelu=polynomial`):
//! 1. ReLU(x) on the node's `bits`, and |x| = 2·ReLU(x) − x (local);
//! 2. the index i = |x| >> (f − 6), a precise truncation: floor(64·|x|) or one above;
//! 3. in = 1{i ≤ 255}, one DReLU of 255 − i on the index's own width;
//! 4. T[i mod 256] by a table lookup ([`Protocol::lookup`]), T[j] = δ(j/64) at scale f;
//! 5. GELU = ReLU(x) − in·T[i mod 256] (one bit × value product).
//!
//! **Error.** The index is floor(64·|x|) or one more, so the table's argument is within
//! 1/64 of |x|, and |δ′| ≤ ½ (δ′(a) = Φ(−a) − a·φ(a) ∈ [−0.13, 0.5]): at most
//! 0.0078, plus δ ≤ 1.4·10⁻⁴ dropped where |x| ≥ 255/64 (the unit test scans it:
//! [`APPROXIMATION_ERROR`]). PUMA's polynomial ([`super::gelu`]) is within 0.0200. Under
//! fixed point each entry is rounded to the grid (½ ulp) and ReLU is exact. An input
//! error e moves ReLU by e and the table by at most e/2 plus one bin's step: [`LIPSCHITZ`].
//!
//! **Cost** per element and party: a ReLU gate, a truncation, a narrow DReLU, a lookup
//! (⌈8/8⌉ + 8 bytes each way) and a select: about 45 bytes online against PUMA's 150,
//! and one comparison instead of three with no powers.
//!
//! **Precision.** 7 to 40 fractional bits (the index needs f > 6).

use veil_core::RingTensor;
use veil_mpc::Protocol;

use super::layout;
use crate::{Error, Result};

/// The table's largest absolute error against GELU over the reals (the scan's 0.0078
/// and the dropped tail, rounded up).
pub const APPROXIMATION_ERROR: f64 = 0.0080;

/// A bound on how far an input error e moves the output, per unit of e: ReLU's slope 1
/// plus the table's ½ (its one-bin step is in [`APPROXIMATION_ERROR`]).
pub const LIPSCHITZ: f64 = 1.5;

/// The fixed-point error of one output beyond the approximation's, in ulps: ½ from the
/// rounded entry, with a fourfold margin.
pub const FIXED_POINT_ULPS: f64 = 2.0;

/// Fractional bits of the table's index: steps of 1/64 in |x|.
pub const INDEX_FRACTION_BITS: u32 = 6;

/// Index bits: 256 entries, |x| < 4.
pub const INDEX_BITS: u32 = 8;

/// δ(a) = ReLU(a) − GELU(a) for a ≥ 0.
fn delta(a: f64) -> f64 {
    a - veil_model::plain::gelu(a)
}

/// The table at `fractional_bits`: entry j is δ(j/64), rounded to the grid.
pub fn table(fractional_bits: u32) -> Vec<u64> {
    let scale = (fractional_bits as f64).exp2();
    (0..1u32 << INDEX_BITS)
        .map(|j| {
            let a = f64::from(j) / f64::from(1u32 << INDEX_FRACTION_BITS);
            (delta(a) * scale).round() as i64 as u64
        })
        .collect()
}

/// GELU of a secret x (at the plan's scale) as ReLU(x) − δ(|x|) read from the table,
/// the ReLU deciding on `bits` bits.
pub fn gelu<P: Protocol>(protocol: &mut P, value: &P::Shared, bits: u32) -> Result<P::Shared> {
    let shape = protocol.shape_of(value);
    let len: usize = shape.iter().product();
    let fractional_bits = protocol.fixed_point().fractional_bits();
    if !(INDEX_FRACTION_BITS + 1..=40).contains(&fractional_bits) {
        return Err(Error::UnsupportedPrecision {
            op: "gelu_table",
            supported: "7 to 40",
            found: fractional_bits,
        });
    }
    let x = layout::reshape(protocol, value, &[len])?;
    let relu = protocol.relu(&x, bits)?;
    let twice = protocol.scale(&relu, 2)?;
    let magnitude = protocol.sub(&twice, &x)?;
    let index = protocol.truncate(&magnitude, fractional_bits - INDEX_FRACTION_BITS)?;
    // The index reaches 2^(bits − 1 − f + 6) (+1 from the truncation); 255 − i needs one
    // bit more than that, and at least 10 for the constant itself.
    let index_width = (bits + 2)
        .saturating_sub(fractional_bits - INDEX_FRACTION_BITS)
        .clamp(10, 64);
    let last = (1u64 << INDEX_BITS) - 1;
    let last = protocol.public(&RingTensor::new(vec![len], vec![last; len])?)?;
    let headroom = protocol.sub(&last, &index)?;
    let inside = protocol.drelu(&headroom, index_width)?;
    let entries = protocol.lookup(&index, &table(fractional_bits), INDEX_BITS)?;
    let dropped = protocol.select(&inside, &entries)?;
    let output = protocol.sub(&relu, &dropped)?;
    Ok(protocol.reshape(output, &shape)?)
}

/// The table form in f64 on an exact index floor(64·|x|) (for the error scan).
pub fn approximate(x: f64) -> f64 {
    let index = (x.abs() * f64::from(1u32 << INDEX_FRACTION_BITS)).floor();
    let relu = x.max(0.0);
    if index > f64::from((1u32 << INDEX_BITS) - 1) {
        relu
    } else {
        relu - delta(index / f64::from(1u32 << INDEX_FRACTION_BITS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented error holds over the reals, on the floor index and on the one
    /// above it (the truncation may give either).
    #[test]
    fn the_table_is_within_its_documented_error() {
        let mut worst: f64 = 0.0;
        for step in -80_000..=80_000 {
            let x = f64::from(step) * 1e-4;
            let exact = veil_model::plain::gelu(x);
            worst = worst.max((approximate(x) - exact).abs());
            // The index one above: the table's argument (i + 1)/64 for |x| in [i/64, (i+1)/64).
            let step_up = x.signum() / f64::from(1u32 << INDEX_FRACTION_BITS);
            let shifted = approximate(x + step_up) - (x + step_up).max(0.0) + x.max(0.0);
            worst = worst.max((shifted - exact).abs());
        }
        assert!(worst <= APPROXIMATION_ERROR, "worst {worst}");
        assert!(
            worst > 0.0075,
            "the scan reaches the steepest bins: {worst}"
        );
    }

    #[test]
    fn entries_are_delta_on_the_grid() {
        let entries = table(16);
        assert_eq!(entries[0], 0);
        // δ(1) = Φ(−1) ≈ 0.158655.
        assert_eq!(
            entries[64],
            (0.158_655_253_931_457_05f64 * 65536.0).round() as u64
        );
        assert!(
            entries
                .iter()
                .all(|&entry| (entry as i64) >= 0 && entry < 12_000)
        );
    }
}
