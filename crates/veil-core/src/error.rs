//! The one error type of veil-core.

/// What can go wrong in veil-core. Messages never contain secret values: only shapes,
/// sizes and public parameters.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Two operands (or an operand and its buffer) disagree in shape.
    #[error("{op}: shape mismatch, expected {expected:?}, found {found:?}")]
    ShapeMismatch {
        /// The operation that was called.
        op: &'static str,
        /// The shape the operation needed.
        expected: Vec<usize>,
        /// The shape it was given.
        found: Vec<usize>,
    },
    /// A real number lies outside the range the fixed-point codec can represent.
    #[error(
        "fixed-point encode: a value lies outside the representable range ±{limit} \
         (fractional bits {fractional_bits}); scale the input down or use fewer fractional bits"
    )]
    OutOfRange {
        /// The largest representable magnitude.
        limit: f64,
        /// The codec's fractional bits.
        fractional_bits: u32,
    },
    /// A value is not a finite number (NaN or infinite).
    #[error("fixed-point encode: a value is not finite (NaN or infinity)")]
    NotFinite,
    /// A fixed-point parameter is unusable.
    #[error("fixed-point codec: {fractional_bits} fractional bits is outside the supported 0..=30")]
    BadFractionalBits {
        /// The rejected number of fractional bits.
        fractional_bits: u32,
    },
    /// The operating system's random number generator failed.
    #[error("the operating system's random number generator failed: {0}")]
    OsRandom(String),
}

/// veil-core's result type.
pub type Result<T> = std::result::Result<T, Error>;
