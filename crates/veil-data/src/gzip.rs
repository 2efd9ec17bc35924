//! Reading the data sets' gzip files, for every loader.

use std::io::Read;
use std::path::Path;

use flate2::read::GzDecoder;

use crate::{Error, Result};

/// Reads and decompresses the gzip file at `path`.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut bytes = Vec::new();
    GzDecoder::new(std::io::BufReader::new(file))
        .read_to_end(&mut bytes)
        .map_err(|source| Error::Decompress {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes)
}
