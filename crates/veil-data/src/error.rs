//! The one error type of veil-data.

use std::path::PathBuf;

/// What can go wrong loading a data set. Messages name the file, line and column; they
/// quote at most a short prefix of an offending field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A data set has fewer items than a split or a subset needs.
    #[error("{found} {what}, but {needed} are needed")]
    TooFew {
        /// What was counted.
        what: String,
        /// How many are needed.
        needed: usize,
        /// How many there are.
        found: usize,
    },
    /// The file could not be opened or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid gzip (bad header, corrupt or truncated stream).
    #[error("{}: not a valid gzip file ({source})", path.display())]
    Decompress {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// The decompressed file holds no rows.
    #[error("{}: the data set has no rows", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// A line is not UTF-8 text.
    #[error("{}: line {line} is not text (invalid UTF-8)", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
    },
    /// A row has the wrong number of fields.
    #[error("{}: line {line} has {found} columns, expected {expected}", path.display())]
    ColumnCount {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The number of fields a row must have.
        expected: usize,
        /// The number of fields found.
        found: usize,
    },
    /// A field is not a number.
    #[error("{}: line {line}, column {column}: {text:?} is not a number", path.display())]
    InvalidNumber {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The 1-based column number.
        column: usize,
        /// The field (at most its first 32 characters).
        text: String,
    },
    /// A pixel value is outside `0..=16`.
    #[error("{}: line {line}, column {column}: pixel value {value} is outside 0..=16", path.display())]
    PixelOutOfRange {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The 1-based column number.
        column: usize,
        /// The value found.
        value: f32,
    },
    /// An IDX file (Fashion-MNIST) is malformed.
    #[error("{}: {reason}", path.display())]
    MalformedIdx {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
    /// A label is not an integer in `0..=9`.
    #[error("{}: line {line}: label {text:?} is not an integer in 0..=9", path.display())]
    LabelOutOfRange {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The label field (at most its first 32 characters).
        text: String,
    },
}

/// `Result` with veil-data's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
