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

/// The binarised sentiment task's fixed split: every sentence with a nonzero rating,
/// labelled by [`Review::polarity`], shuffled once by `seed` and cut into
/// `test` sentences, then `dev`, then the rest for training. The same seed gives the
/// same split on every machine, so a model trained on `train` is measured on sentences
/// it has never seen.
#[derive(Clone, Debug, PartialEq)]
pub struct Split {
    /// Training sentences and their labels (0 negative, 1 positive).
    pub train: Vec<(String, usize)>,
    /// Held out for choosing settings.
    pub dev: Vec<(String, usize)>,
    /// Held out for the reported accuracies.
    pub test: Vec<(String, usize)>,
}

/// The seed of veil's split (`docs/results.md` reports on it).
pub const SPLIT_SEED: u64 = 20_261_201;
/// Test sentences in veil's split.
pub const TEST_SENTENCES: usize = 1000;
/// Development sentences in veil's split.
pub const DEV_SENTENCES: usize = 500;

/// veil's split ([`SPLIT_SEED`], [`TEST_SENTENCES`], [`DEV_SENTENCES`]) of the fetched
/// file: what `veil distill --task sentiment` trains on and `veil evaluate --data
/// reviews` measures on.
pub fn load_split(path: &Path) -> Result<Split> {
    split(&load(path)?, SPLIT_SEED, TEST_SENTENCES, DEV_SENTENCES)
}

/// Splits `reviews` as [`Split`] describes; neutral sentences are dropped.
pub fn split(reviews: &[Review], seed: u64, test: usize, dev: usize) -> Result<Split> {
    let mut labelled: Vec<(String, usize)> = reviews
        .iter()
        .filter_map(|review| Some((review.text.clone(), review.polarity()?)))
        .collect();
    if labelled.len() <= test + dev {
        return Err(Error::TooFew {
            what: "rated sentences".into(),
            needed: test + dev + 1,
            found: labelled.len(),
        });
    }
    veil_core::sampling::SplitMix64::new(seed).shuffle(&mut labelled);
    let train = labelled.split_off(test + dev);
    let dev_part = labelled.split_off(test);
    Ok(Split {
        train,
        dev: dev_part,
        test: labelled,
    })
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

    #[test]
    fn the_split_is_seeded_disjoint_and_drops_neutral_sentences() {
        let reviews: Vec<Review> = (0..40)
            .map(|index| Review {
                rating: (index % 3) as f32 - 1.0,
                text: format!("sentence {index}"),
            })
            .collect();
        let split_once = split(&reviews, 5, 4, 3).expect("enough sentences");
        assert_eq!(split_once, split(&reviews, 5, 4, 3).expect("the same"));
        assert_ne!(split_once, split(&reviews, 6, 4, 3).expect("another order"));
        let (test, dev) = (split_once.test.len(), split_once.dev.len());
        assert_eq!((test, dev, split_once.train.len()), (4, 3, 27 - 7));
        let mut all: Vec<&String> = split_once
            .train
            .iter()
            .chain(&split_once.dev)
            .chain(&split_once.test)
            .map(|(text, _)| text)
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 27, "disjoint, and the 13 neutral ones dropped");
        assert!(
            split(&reviews, 5, 20, 7).is_err(),
            "27 cannot give 27 held out and a training set"
        );
    }
}
