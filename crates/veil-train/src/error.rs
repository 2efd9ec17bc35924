//! The one error type of veil-train.

/// What can go wrong loading the data set or exporting a model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Loading the data set failed.
    #[error(transparent)]
    Data(#[from] veil_data::Error),
    /// Writing the safetensors file failed.
    #[error("exporting the model: {0}")]
    Export(#[from] veil_model::Error),
}

/// `Result` with veil-train's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
