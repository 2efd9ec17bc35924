//! veil-data: the public data sets veil trains and measures on, loaded from files with
//! every malformed line named.
//!
//! - [`digits`]: scikit-learn's 8×8 handwritten digits (bundled in the repository as
//!   `data/digits/digits.csv.gz`), [`digits::load`] and the seeded train/test split
//!   [`digits::split`] that training and the demo share;
//! - [`reviews`]: the Rotten Tomatoes movie-review sentences with human sentiment
//!   ratings ([`reviews::load`]), fetched by `scripts/fetch`;
//! - [`fashion`]: Fashion-MNIST (28×28 clothing images, [`fashion::load`]), fetched by
//!   `scripts/fetch fashion`;
//! - [`fetched`]: where `scripts/fetch` puts models and data (`$VEIL_CACHE`, else
//!   `~/.cache/veil`).
//!
//! ```
//! use veil_data::digits::{Dataset, FEATURES};
//!
//! let data = Dataset { features: vec![0.5; 2 * FEATURES], labels: vec![3, 7] };
//! let (train, test) = veil_data::digits::split(&data, 0.5, 0);
//! assert_eq!(train.len() + test.len(), 2);
//! ```
//!
//! # What this crate does not do
//! No training (veil-train), no models (veil-model), no secure inference, and nothing is
//! downloaded: data sets are read from local files (`scripts/fetch` is the one thing
//! that downloads).
//!
//! # Secrets
//! None: the data sets are public. Errors name files, lines and columns and quote at most
//! a short prefix of an offending field.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod digits;
mod error;
pub mod fashion;
pub mod fetched;
mod gzip;
pub mod reviews;

pub use error::{Error, Result};
