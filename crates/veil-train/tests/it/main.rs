//! veil-train's integration tests: one binary, one module per topic.

mod cnn;
mod compile;
mod training;

use std::path::PathBuf;

/// The digits file carried in the repository.
pub(crate) fn digits_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/digits/digits.csv.gz"
    ))
}
