//! The one error type of veil-distill.

/// What can go wrong reading a configuration, training or exporting a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The tensor framework failed (a shape mismatch, an allocation).
    #[error("training: {0}")]
    Candle(#[from] candle_core::Error),
    /// Loading the data set failed.
    #[error(transparent)]
    Data(#[from] veil_data::Error),
    /// The configuration file is not valid.
    #[error("the configuration {path}: {reason}")]
    Config {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the architecture failed.
    #[error("writing the architecture: {0}")]
    Json(#[from] serde_json::Error),
    /// The data set is too small for the configuration.
    #[error("{0}")]
    Invalid(String),
}

/// `Result` with veil-distill's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
