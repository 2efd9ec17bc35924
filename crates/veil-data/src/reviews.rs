//! The Rotten Tomatoes movie-review sentences (Pang & Lee's sentence-polarity corpus,
//! the source of SST) with the mean of 20 human sentiment ratings in −4…+4, as
//! vaderSentiment's sdist ships them and `scripts/fetch reviews` unpacks them:
//! `id<TAB>rating<TAB>sentence`, one a line.

use std::path::Path;

use crate::{Error, Result};

/// One rated sentence.
#[derive(Clone, Debug, PartialEq)]
pub struct Review {
    /// The mean human rating, −4 (negative) to +4 (positive).
    pub rating: f32,
    /// The sentence.
    pub text: String,
}

impl Review {
    /// Positive (1) or negative (0) by the rating's sign; `None` for a neutral 0.
    pub fn polarity(&self) -> Option<usize> {
        if self.rating > 0.0 {
            Some(1)
        } else if self.rating < 0.0 {
            Some(0)
        } else {
            None
        }
    }
}

/// Reads the reviews file.
pub fn load(path: &Path) -> Result<Vec<Review>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = String::from_utf8(bytes).map_err(|error| Error::NotText {
        path: path.to_path_buf(),
        line: 1 + error.as_bytes()[..error.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count(),
    })?;
    let mut reviews = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.splitn(3, '\t').collect();
        let [_, rating, sentence] = fields[..] else {
            return Err(Error::ColumnCount {
                path: path.to_path_buf(),
                line: line_number,
                expected: 3,
                found: fields.len(),
            });
        };
        let rating = rating
            .trim()
            .parse::<f32>()
            .ok()
            .filter(|value| value.is_finite())
            .ok_or_else(|| Error::InvalidNumber {
                path: path.to_path_buf(),
                line: line_number,
                column: 2,
                text: rating.chars().take(32).collect(),
            })?;
        reviews.push(Review {
            rating,
            text: sentence.to_string(),
        });
    }
    if reviews.is_empty() {
        return Err(Error::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(reviews)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rated_sentences_and_names_a_bad_line() {
        let directory = std::env::temp_dir().join(format!("veil-reviews-{}", std::process::id()));
        std::fs::create_dir_all(&directory).expect("a temporary directory");
        let file = directory.join("reviews.tsv");
        std::fs::write(&file, "1\t2.5\tA fine film.\r\n2\t-1.25\tDull.\n").expect("written");
        let reviews = load(&file).expect("two reviews");
        assert_eq!(reviews.len(), 2);
        assert_eq!(reviews[0].text, "A fine film.");
        assert_eq!(reviews[1].polarity(), Some(0));
        std::fs::write(&file, "1\t2.5\tFine.\n2\tgreat\tBad rating.\n").expect("written");
        let error = load(&file).expect_err("a bad rating").to_string();
        assert!(error.contains("line 2, column 2"), "{error}");
        std::fs::write(&file, "1\t2.5\n").expect("written");
        let error = load(&file).expect_err("missing text").to_string();
        assert!(error.contains("line 1 has 2 columns"), "{error}");
        std::fs::remove_dir_all(&directory).ok();
    }
}
