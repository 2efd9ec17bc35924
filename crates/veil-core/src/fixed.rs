//! The fixed-point codec: reals ↔ ring elements of Z_2^64 (cookbook §1.1, §7.3).
//!
//! A real x is encoded as `round(x · 2^f)` in two's complement, so negatives live in
//! [2^63, 2^64). Decoding reads the element as a signed integer and divides by 2^f.
//!
//! **Representable range.** Encoding accepts |x · 2^f| < 2^62, i.e. |x| < 2^(62−f)
//! (2^46 ≈ 7·10^13 at the default f = 16). The one bit of headroom below 2^63 is the
//! precondition of the precise truncation (cookbook §1.4, x ∈ [−2^62, 2^62)), so every
//! encoded value can be truncated without a wrap failure.

use crate::{Error, Result};

/// The default number of fractional bits.
pub const DEFAULT_FRACTIONAL_BITS: u32 = 16;

/// A fixed-point codec with `fractional_bits` fractional bits in Z_2^64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FixedPoint {
    fractional_bits: u32,
}

impl Default for FixedPoint {
    fn default() -> Self {
        Self {
            fractional_bits: DEFAULT_FRACTIONAL_BITS,
        }
    }
}

impl FixedPoint {
    /// A codec with `fractional_bits` fractional bits (0..=30).
    pub fn new(fractional_bits: u32) -> Result<Self> {
        if fractional_bits > 30 {
            return Err(Error::BadFractionalBits { fractional_bits });
        }
        Ok(Self { fractional_bits })
    }

    /// The number of fractional bits f.
    pub fn fractional_bits(&self) -> u32 {
        self.fractional_bits
    }

    /// 2^f as a float.
    pub fn scale(&self) -> f64 {
        (1u64 << self.fractional_bits) as f64
    }

    /// The largest magnitude `encode` accepts (exclusive): 2^(62 − f).
    pub fn limit(&self) -> f64 {
        (1u64 << 62) as f64 / self.scale()
    }

    /// Encodes one real, rounding to nearest (ties away from zero).
    pub fn encode(&self, value: f64) -> Result<u64> {
        self.encode_scaled(value, self.fractional_bits)
    }

    /// Encodes one real with `bits` fractional bits (e.g. 2f for a bias added before the
    /// truncation of a product). Same range rule: |value · 2^bits| < 2^62.
    pub fn encode_scaled(&self, value: f64, bits: u32) -> Result<u64> {
        if !value.is_finite() {
            return Err(Error::NotFinite);
        }
        if bits >= 62 {
            // 2^bits itself is beyond the ring's signed range (and 1 << 64 overflows).
            return Err(Error::OutOfRange {
                limit: 0.0,
                fractional_bits: bits,
            });
        }
        let scaled = (value * (1u64 << bits) as f64).round();
        // Compare before casting: Rust's float→int casts saturate silently (cookbook §7.3).
        if scaled.abs() >= (1u64 << 62) as f64 {
            return Err(Error::OutOfRange {
                limit: (1u64 << 62) as f64 / (1u64 << bits) as f64,
                fractional_bits: bits,
            });
        }
        Ok((scaled as i64) as u64)
    }

    /// Encodes a slice of reals.
    pub fn encode_slice(&self, values: &[f32]) -> Result<Vec<u64>> {
        values.iter().map(|&v| self.encode(f64::from(v))).collect()
    }

    /// Decodes one ring element.
    pub fn decode(&self, element: u64) -> f64 {
        (element as i64) as f64 / self.scale()
    }

    /// Decodes a slice of ring elements.
    pub fn decode_slice(&self, elements: &[u64]) -> Vec<f32> {
        elements.iter().map(|&e| self.decode(e) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_within_half_an_ulp() {
        let codec = FixedPoint::default();
        for &x in &[0.0, 1.0, -1.0, 0.5, -0.5, 3.25, -2.75, 1e6, -1e6, 1e-5] {
            let back = codec.decode(codec.encode(x).unwrap());
            assert!((back - x).abs() <= 0.5 / codec.scale(), "{x} -> {back}");
        }
    }

    #[test]
    fn negatives_are_twos_complement() {
        let codec = FixedPoint::default();
        assert_eq!(codec.encode(-1.0).unwrap(), (-(1i64 << 16)) as u64);
        assert_eq!(codec.encode(0.0).unwrap(), 0);
    }

    #[test]
    fn out_of_range_and_non_finite_are_errors() {
        let codec = FixedPoint::default();
        assert!(matches!(
            codec.encode(codec.limit()),
            Err(Error::OutOfRange { .. })
        ));
        assert!(matches!(
            codec.encode(-codec.limit()),
            Err(Error::OutOfRange { .. })
        ));
        assert!(codec.encode(codec.limit() * 0.99).is_ok());
        assert!(matches!(codec.encode(f64::NAN), Err(Error::NotFinite)));
        assert!(matches!(codec.encode(f64::INFINITY), Err(Error::NotFinite)));
        assert!(matches!(
            FixedPoint::new(31),
            Err(Error::BadFractionalBits { .. })
        ));
    }
}
