//! The dealer setting's word codec: protocol messages and material items carry 64-bit
//! ring words little-endian, and DReLU's opening carries only the low bytes of each word
//! (the gate needs the low k bits of x + r, cookbook §3.4). It lives in one place so the
//! parties and the material format cannot disagree on a byte.

use crate::{PeerMisbehaved, Result};

/// The words, little-endian, one after another.
pub(crate) fn words_to_bytes(words: &[u64]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(words.len() * 8);
    append_words(&mut bytes, words);
    bytes
}

/// Appends the words, little-endian.
pub(crate) fn append_words(bytes: &mut Vec<u8>, words: &[u64]) {
    for word in words {
        bytes.extend_from_slice(&word.to_le_bytes());
    }
}

/// The little-endian words of `bytes`, whose length the caller has checked is a
/// multiple of 8.
pub(crate) fn words_from_bytes(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect()
}

/// A peer's message of `expected_words` words; any other length is the peer breaking
/// the protocol.
pub(crate) fn bytes_to_words(
    op: &'static str,
    bytes: &[u8],
    expected_words: usize,
) -> Result<Vec<u64>> {
    check_message_length(op, bytes, expected_words * 8)?;
    Ok(words_from_bytes(bytes))
}

/// Packs the low `bytes_per` bytes of each word.
pub(crate) fn pack_low_bytes(words: &[u64], bytes_per: usize) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(words.len() * bytes_per);
    for word in words {
        bytes.extend_from_slice(&word.to_le_bytes()[..bytes_per]);
    }
    bytes
}

/// A peer's message of `count` words packed by [`pack_low_bytes`]; the high bytes come
/// back as zero.
pub(crate) fn unpack_low_bytes(
    op: &'static str,
    bytes: &[u8],
    count: usize,
    bytes_per: usize,
) -> Result<Vec<u64>> {
    check_message_length(op, bytes, count * bytes_per)?;
    Ok(bytes
        .chunks_exact(bytes_per)
        .map(|chunk| {
            let mut word = [0u8; 8];
            word[..bytes_per].copy_from_slice(chunk);
            u64::from_le_bytes(word)
        })
        .collect())
}

/// The first `count` bits of packed bit words (bit i % 64 of word i / 64), as
/// ⌈count / 8⌉ bytes.
pub(crate) fn pack_bits(words: &[u64], count: usize) -> Vec<u8> {
    let mut bytes = words_to_bytes(words);
    bytes.truncate(count.div_ceil(8));
    bytes
}

/// A peer's `count` bits packed by [`pack_bits`], as bit words; bits past `count` come
/// back as zero whatever the peer put there.
pub(crate) fn unpack_bits(op: &'static str, bytes: &[u8], count: usize) -> Result<Vec<u64>> {
    check_message_length(op, bytes, count.div_ceil(8))?;
    let mut padded = bytes.to_vec();
    padded.resize(8 * count.div_ceil(64), 0);
    let mut words = words_from_bytes(&padded);
    if let Some(last) = words.last_mut()
        && !count.is_multiple_of(64)
    {
        *last &= (1u64 << (count % 64)) - 1;
    }
    Ok(words)
}

fn check_message_length(op: &'static str, bytes: &[u8], expected: usize) -> Result<()> {
    if bytes.len() == expected {
        Ok(())
    } else {
        Err(PeerMisbehaved::WrongMessageLength {
            op,
            expected,
            found: bytes.len(),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn words_round_trip_little_endian() {
        let words = [0, 1, u64::MAX, 0x0102_0304_0506_0708];
        let bytes = words_to_bytes(&words);
        assert_eq!(bytes[24..], [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(bytes_to_words("test", &bytes, 4).unwrap(), words);
        assert!(matches!(
            bytes_to_words("test", &bytes[1..], 4),
            Err(Error::PeerMisbehaved(PeerMisbehaved::WrongMessageLength {
                expected: 32,
                found: 31,
                ..
            }))
        ));
    }

    #[test]
    fn low_bytes_round_trip() {
        let words = [0x1234, 0xff, 0xabcd];
        let packed = pack_low_bytes(&words, 2);
        assert_eq!(packed, [0x34, 0x12, 0xff, 0, 0xcd, 0xab]);
        assert_eq!(unpack_low_bytes("test", &packed, 3, 2).unwrap(), words);
        assert!(unpack_low_bytes("test", &packed, 2, 2).is_err());
        let bits = [u64::MAX, 0b1011];
        let packed = pack_bits(&bits, 68);
        assert_eq!(packed.len(), 9);
        assert_eq!(unpack_bits("test", &packed, 68).unwrap(), bits);
        // Bits past the count are dropped, and a short message is refused.
        assert_eq!(unpack_bits("test", &packed, 66).unwrap(), [u64::MAX, 0b11]);
        assert!(unpack_bits("test", &packed[..8], 68).is_err());
    }
}
