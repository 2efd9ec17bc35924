//! Zalando's Fashion-MNIST: 28×28 greyscale images of clothing in ten classes (60,000
//! for training, 10,000 for testing), read from the four gzip-compressed IDX files that
//! `scripts/fetch fashion` puts in the cache ([`directory`]).
//!
//! IDX is big-endian: a magic number (`0x0000_0803` for images, `0x0000_0801` for
//! labels), the dimensions as `u32`s, then one byte per pixel or label.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Image height and width.
pub const SIDE: usize = 28;
/// Pixels per image.
pub const PIXELS: usize = SIDE * SIDE;
/// Number of classes.
pub const CLASSES: usize = 10;
/// The class names, by label.
pub const CLASS_NAMES: [&str; CLASSES] = [
    "t-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Which half of the data set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The 60,000 training images.
    Train,
    /// The 10,000 test images.
    Test,
}

impl Part {
    fn prefix(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Test => "t10k",
        }
    }
}

/// Labelled 28×28 images.
///
/// Invariant (kept by [`load`]): `images.len() == PIXELS * labels.len()` and every label
/// is below [`CLASSES`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Images {
    /// Pixels scaled to `[0, 1]` (byte / 255), row-major `len() × 28 × 28`.
    pub images: Vec<f32>,
    /// Labels in `0..=9`.
    pub labels: Vec<u8>,
}

impl Images {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `index`.
    ///
    /// # Panics
    /// If `index >= self.len()` (like slice indexing).
    pub fn image(&self, index: usize) -> &[f32] {
        &self.images[index * PIXELS..(index + 1) * PIXELS]
    }

    /// The first `count` images (all of them when there are fewer).
    pub fn first(&self, count: usize) -> Images {
        let count = count.min(self.len());
        Images {
            images: self.images[..count * PIXELS].to_vec(),
            labels: self.labels[..count].to_vec(),
        }
    }
}

/// The Fashion-MNIST directory, if `scripts/fetch fashion` has filled it.
pub fn directory() -> Option<PathBuf> {
    let directory = crate::fetched::cache_directory()
        .join("data")
        .join("fashion-mnist");
    let complete = [Part::Train, Part::Test].iter().all(|part| {
        directory.join(images_file(*part)).is_file() && directory.join(labels_file(*part)).is_file()
    });
    complete.then_some(directory)
}

fn images_file(part: Part) -> String {
    format!("{}-images-idx3-ubyte.gz", part.prefix())
}

fn labels_file(part: Part) -> String {
    format!("{}-labels-idx1-ubyte.gz", part.prefix())
}

/// Reads one part from `directory` (as [`directory`] returns it).
///
/// Errors (never panics) for a missing or unreadable file, bad gzip, a wrong magic
/// number or image size, a file shorter than its header says, image and label counts
/// that differ, and a label outside `0..=9`.
pub fn load(directory: &Path, part: Part) -> Result<Images> {
    let images_path = directory.join(images_file(part));
    let labels_path = directory.join(labels_file(part));
    let image_bytes = crate::gzip::read(&images_path)?;
    let label_bytes = crate::gzip::read(&labels_path)?;
    let (image_dimensions, pixels) = parse_idx(&images_path, &image_bytes, IMAGES_MAGIC, 3)?;
    let (label_dimensions, labels) = parse_idx(&labels_path, &label_bytes, LABELS_MAGIC, 1)?;
    if image_dimensions[1] != SIDE || image_dimensions[2] != SIDE {
        return Err(malformed(&images_path, "images are not 28×28"));
    }
    if image_dimensions[0] != label_dimensions[0] {
        return Err(malformed(
            &labels_path,
            "the label count differs from the image count",
        ));
    }
    if let Some(position) = labels
        .iter()
        .position(|&label| usize::from(label) >= CLASSES)
    {
        return Err(Error::LabelOutOfRange {
            path: labels_path,
            line: position + 1,
            text: labels[position].to_string(),
        });
    }
    Ok(Images {
        images: pixels.iter().map(|&byte| f32::from(byte) / 255.0).collect(),
        labels: labels.to_vec(),
    })
}

fn malformed(path: &Path, reason: &'static str) -> Error {
    Error::MalformedIdx {
        path: path.to_path_buf(),
        reason,
    }
}

/// The dimensions and the body of an IDX file of unsigned bytes.
fn parse_idx<'a>(
    path: &Path,
    bytes: &'a [u8],
    magic: u32,
    rank: usize,
) -> Result<(Vec<usize>, &'a [u8])> {
    let word = |index: usize| -> Option<u32> {
        let start = index * 4;
        let chunk = bytes.get(start..start + 4)?;
        Some(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]))
    };
    if word(0) != Some(magic) {
        return Err(malformed(path, "wrong IDX magic number"));
    }
    let mut dimensions = Vec::with_capacity(rank);
    for index in 0..rank {
        let dimension = word(1 + index).ok_or_else(|| malformed(path, "truncated IDX header"))?;
        dimensions.push(dimension as usize);
    }
    let body = &bytes[4 * (1 + rank)..];
    let expected = dimensions
        .iter()
        .try_fold(1usize, |product, &dimension| product.checked_mul(dimension));
    if expected != Some(body.len()) {
        return Err(malformed(
            path,
            "the body's length differs from the header's",
        ));
    }
    Ok((dimensions, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(magic: u32, dimensions: &[u32], body: &[u8]) -> Vec<u8> {
        let mut bytes = magic.to_be_bytes().to_vec();
        for dimension in dimensions {
            bytes.extend_from_slice(&dimension.to_be_bytes());
        }
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn parses_a_well_formed_header_and_rejects_bad_ones() {
        let path = Path::new("x");
        let good = idx(LABELS_MAGIC, &[3], &[1, 2, 3]);
        let (dimensions, body) = parse_idx(path, &good, LABELS_MAGIC, 1).expect("parses");
        assert_eq!((dimensions, body), (vec![3], &[1u8, 2, 3][..]));
        let short = idx(LABELS_MAGIC, &[4], &[1, 2, 3]);
        assert!(parse_idx(path, &short, LABELS_MAGIC, 1).is_err());
        assert!(parse_idx(path, &good, IMAGES_MAGIC, 1).is_err());
        assert!(parse_idx(path, &good[..6], LABELS_MAGIC, 1).is_err());
        let huge = idx(IMAGES_MAGIC, &[u32::MAX, u32::MAX, u32::MAX], &[]);
        assert!(parse_idx(path, &huge, IMAGES_MAGIC, 3).is_err());
    }

    #[test]
    fn loads_the_fetched_test_set() {
        let Some(directory) = directory() else {
            eprintln!(
                "SKIPPED: Fashion-MNIST is not fetched; {}",
                crate::fetched::FETCH_HINT
            );
            return;
        };
        let test = load(&directory, Part::Test).expect("loads");
        assert_eq!(test.len(), 10_000);
        assert_eq!(test.images.len(), 10_000 * PIXELS);
        let mut counts = [0usize; CLASSES];
        for &label in &test.labels {
            counts[usize::from(label)] += 1;
        }
        assert_eq!(counts, [1000; CLASSES]);
    }
}
