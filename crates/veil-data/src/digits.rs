//! scikit-learn's 8x8 handwritten digits: loading and a seeded train/test split.
//!
//! The file is gzip-compressed CSV without a header: each of its 1797 rows holds 64
//! pixel values in `0..=16` (row-major 8x8) and then the label `0..=9`.

use std::path::Path;

use crate::{Error, Result};
use veil_core::sampling::SplitMix64;

/// Pixels per sample (8x8).
pub const FEATURES: usize = 64;
/// Number of classes (the digits 0 to 9).
pub const CLASSES: usize = 10;
/// The largest pixel value in the file; pixels are divided by it.
const PIXEL_MAX: f32 = 16.0;
/// How much of a malformed field an error quotes.
const QUOTE_LIMIT: usize = 32;

/// A labelled data set.
///
/// Invariant (kept by [`load`] and [`split`]; callers building one by hand must keep it
/// too): `features.len() == FEATURES * labels.len()` and every label is below
/// [`CLASSES`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Dataset {
    /// Pixels scaled to `[0, 1]` (value / 16), row-major `len() × FEATURES`.
    pub features: Vec<f32>,
    /// Labels in `0..=9`, one per sample.
    pub labels: Vec<u8>,
}

impl Dataset {
    /// The number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `FEATURES` pixels of sample `index`.
    ///
    /// # Panics
    /// If `index >= self.len()` (like slice indexing).
    pub fn sample(&self, index: usize) -> &[f32] {
        &self.features[index * FEATURES..(index + 1) * FEATURES]
    }

    /// The samples at `indices`, in that order.
    fn select(&self, indices: &[usize]) -> Dataset {
        Dataset {
            features: indices
                .iter()
                .flat_map(|&index| self.sample(index).iter().copied())
                .collect(),
            labels: indices.iter().map(|&index| self.labels[index]).collect(),
        }
    }
}

/// Reads `digits.csv.gz`.
///
/// Blank lines are skipped. Errors (never panics) for a missing or unreadable file, bad
/// or truncated gzip, non-text content, a row without exactly 65 fields, a field that is
/// not a number, a pixel outside `0..=16`, a label outside `0..=9`, and a file without
/// rows.
pub fn load(path: &Path) -> Result<Dataset> {
    parse(path, &crate::gzip::read(path)?)
}

/// Parses the decompressed CSV; `path` is for error messages only.
fn parse(path: &Path, bytes: &[u8]) -> Result<Dataset> {
    let mut data = Dataset::default();
    for (index, raw_line) in bytes.split(|&byte| byte == b'\n').enumerate() {
        let line = index + 1;
        let text = std::str::from_utf8(raw_line).map_err(|_| Error::NotText {
            path: path.to_path_buf(),
            line,
        })?;
        let text = text.trim();
        if text.is_empty() {
            continue;
        }
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        if fields.len() != FEATURES + 1 {
            return Err(Error::ColumnCount {
                path: path.to_path_buf(),
                line,
                expected: FEATURES + 1,
                found: fields.len(),
            });
        }
        for (column_index, field) in fields[..FEATURES].iter().enumerate() {
            let column = column_index + 1;
            let value: f32 = field.parse().map_err(|_| Error::InvalidNumber {
                path: path.to_path_buf(),
                line,
                column,
                text: quote(field),
            })?;
            if !(0.0..=PIXEL_MAX).contains(&value) {
                return Err(Error::PixelOutOfRange {
                    path: path.to_path_buf(),
                    line,
                    column,
                    value,
                });
            }
            data.features.push(value / PIXEL_MAX);
        }
        let label_text = fields[FEATURES];
        let label = label_text
            .parse::<u8>()
            .ok()
            .filter(|&label| usize::from(label) < CLASSES)
            .ok_or_else(|| Error::LabelOutOfRange {
                path: path.to_path_buf(),
                line,
                text: quote(label_text),
            })?;
        data.labels.push(label);
    }
    if data.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(data)
}

/// At most the first `QUOTE_LIMIT` characters of a field.
fn quote(field: &str) -> String {
    field.chars().take(QUOTE_LIMIT).collect()
}

/// Deterministic split: shuffles the sample indices with `seed` and puts the last
/// `round(len × test_fraction)` of them in the test set. Returns `(train, test)`.
///
/// `test_fraction` is clamped to `[0, 1]` (NaN counts as 0). The two sets are disjoint
/// and together hold every sample once.
pub fn split(data: &Dataset, test_fraction: f64, seed: u64) -> (Dataset, Dataset) {
    let fraction = if test_fraction.is_nan() {
        0.0
    } else {
        test_fraction.clamp(0.0, 1.0)
    };
    let mut indices: Vec<usize> = (0..data.len()).collect();
    SplitMix64::new(seed).shuffle(&mut indices);
    let test_len = ((data.len() as f64 * fraction).round() as usize).min(data.len());
    let (train, test) = indices.split_at(data.len() - test_len);
    (data.select(train), data.select(test))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pixel: &str, label: &str) -> String {
        let mut fields = vec![pixel; FEATURES];
        fields.push(label);
        fields.join(",")
    }

    #[test]
    fn parses_and_scales() {
        let text = format!("{}\n\n{}\r\n", row("16", "3"), row("4", "9"));
        let data = parse(Path::new("x"), text.as_bytes()).expect("valid rows");
        assert_eq!(data.len(), 2);
        assert_eq!(data.labels, vec![3, 9]);
        assert!(data.sample(0).iter().all(|&v| v == 1.0));
        assert!(data.sample(1).iter().all(|&v| v == 0.25));
    }

    #[test]
    fn rejects_bad_values() {
        let path = Path::new("x");
        assert!(matches!(
            parse(path, row("17", "1").as_bytes()),
            Err(Error::PixelOutOfRange { column: 1, .. })
        ));
        assert!(matches!(
            parse(path, row("-1", "1").as_bytes()),
            Err(Error::PixelOutOfRange { .. })
        ));
        assert!(matches!(
            parse(path, row("NaN", "1").as_bytes()),
            Err(Error::PixelOutOfRange { .. })
        ));
        assert!(matches!(
            parse(path, row("abc", "1").as_bytes()),
            Err(Error::InvalidNumber { line: 1, .. })
        ));
        assert!(matches!(
            parse(path, row("1", "10").as_bytes()),
            Err(Error::LabelOutOfRange { .. })
        ));
        assert!(matches!(
            parse(path, row("1", "2.5").as_bytes()),
            Err(Error::LabelOutOfRange { .. })
        ));
        assert!(matches!(
            parse(path, b"1,2,3\n"),
            Err(Error::ColumnCount { found: 3, .. })
        ));
        assert!(matches!(parse(path, b"\n\n"), Err(Error::Empty { .. })));
        assert!(matches!(
            parse(path, b"\xff\xfe"),
            Err(Error::NotText { line: 1, .. })
        ));
    }

    #[test]
    fn quotes_are_short() {
        let long = "z".repeat(1000);
        let Err(error) = parse(Path::new("x"), row(&long, "1").as_bytes()) else {
            panic!("a non-numeric pixel must be rejected");
        };
        assert!(error.to_string().len() < 120, "{error}");
    }
}
