//! The one error type of veil-split.

/// What can go wrong in the split mode. Messages name layers, shapes and sizes, never
/// activation or weight values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The channel to the other process failed.
    #[error("the channel to the peer failed: {0}")]
    Net(#[from] veil_net::Error),
    /// A message from the peer is malformed (abort; never retried).
    #[error("malformed message from the peer: {what}")]
    PeerMisbehaved {
        /// What is wrong with it.
        what: &'static str,
    },
    /// The worker reported that it could not do what was asked.
    #[error("the worker refused the request: {reason}")]
    WorkerFailed {
        /// The worker's reason (names shapes and layers only).
        reason: String,
    },
    /// A tensor's length differs from its layer's geometry.
    #[error("{op}: expected {expected} values, found {found}")]
    ShapeMismatch {
        /// The operation.
        op: &'static str,
        /// The length the geometry needs.
        expected: usize,
        /// The length given.
        found: usize,
    },
    /// A caller asked for something this mode does not do.
    #[error("{0}")]
    ApiMisuse(&'static str),
    /// A value could not be encoded in fixed point (blinded mode).
    #[error("fixed-point encoding failed: {0}")]
    Fixed(#[from] veil_core::Error),
    /// A data set could not be loaded.
    #[error(transparent)]
    Data(#[from] veil_data::Error),
    /// Writing a file (the PNG grid) failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being written.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// `Result` with veil-split's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
