//! Length-prefixed framing: a 4-byte little-endian length, then the payload.

use std::io::{ErrorKind, Read};

use crate::{Error, Result};

/// The bytes of a frame header.
pub const FRAME_HEADER_BYTES: usize = 4;

/// The default cap on one frame's payload (256 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 256 << 20;

/// The header for a payload of `len` bytes.
pub(crate) fn header(len: usize) -> [u8; FRAME_HEADER_BYTES] {
    (len as u32).to_le_bytes()
}

/// Reads exactly `buffer.len()` bytes; distinguishes a clean close before the first
/// byte (`Ok(false)`) from a close in the middle (`Truncated`).
fn read_full(reader: &mut impl Read, buffer: &mut [u8], timeout_seconds: u64) -> Result<bool> {
    let mut filled = 0;
    while filled < buffer.len() {
        match reader.read(&mut buffer[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => {
                return Err(Error::Truncated {
                    expected: buffer.len(),
                    received: filled,
                });
            }
            Ok(read) => filled += read,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Error::Timeout {
                    seconds: timeout_seconds,
                });
            }
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {
                return Err(Error::PeerClosed);
            }
            Err(source) => {
                return Err(Error::Io {
                    context: "reading a frame",
                    source,
                });
            }
        }
    }
    Ok(true)
}

/// Reads one frame. Validates the announced length against `max_frame_bytes` before
/// allocating.
pub(crate) fn read_frame(
    reader: &mut impl Read,
    max_frame_bytes: usize,
    timeout_seconds: u64,
) -> Result<Vec<u8>> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    if !read_full(reader, &mut header, timeout_seconds)? {
        return Err(Error::PeerClosed);
    }
    let length = u32::from_le_bytes(header) as usize;
    if length > max_frame_bytes {
        return Err(Error::FrameTooLarge {
            length: length as u64,
            cap: max_frame_bytes,
        });
    }
    let mut payload = vec![0u8; length];
    if length > 0 && !read_full(reader, &mut payload, timeout_seconds)? {
        return Err(Error::Truncated {
            expected: length,
            received: 0,
        });
    }
    Ok(payload)
}

/// Reads every frame in `bytes` (e.g. a captured stream); stops at the first error. The
/// decoder the channels use, exposed for fuzzing.
pub fn read_frames(mut bytes: &[u8], max_frame_bytes: usize) -> (Vec<Vec<u8>>, Option<Error>) {
    let mut frames = Vec::new();
    loop {
        match read_frame(&mut bytes, max_frame_bytes, 0) {
            Ok(frame) => frames.push(frame),
            Err(Error::PeerClosed) => return (frames, None),
            Err(error) => return (frames, Some(error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut bytes = header(payload.len()).to_vec();
        bytes.extend_from_slice(payload);
        bytes
    }

    #[test]
    fn reads_back_frames() {
        let mut bytes = framed(b"hello");
        bytes.extend(framed(b""));
        let mut reader = bytes.as_slice();
        assert_eq!(read_frame(&mut reader, 100, 1).unwrap(), b"hello");
        assert_eq!(read_frame(&mut reader, 100, 1).unwrap(), b"");
        assert!(matches!(
            read_frame(&mut reader, 100, 1),
            Err(Error::PeerClosed)
        ));
    }

    #[test]
    fn truncated_frames_are_errors() {
        let bytes = framed(b"hello");
        for cut in 1..bytes.len() {
            let mut reader = &bytes[..cut];
            assert!(
                matches!(
                    read_frame(&mut reader, 100, 1),
                    Err(Error::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn oversized_frames_are_refused_before_allocating() {
        let bytes = header(u32::MAX as usize);
        let mut reader = bytes.as_slice();
        assert!(matches!(
            read_frame(&mut reader, 1 << 20, 1),
            Err(Error::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (state >> 58) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (state >> (i % 56)) as u8).collect();
            let mut reader = bytes.as_slice();
            while read_frame(&mut reader, 64, 1).is_ok() {}
        }
    }
}
