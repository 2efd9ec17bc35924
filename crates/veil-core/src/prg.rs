//! Cryptographic pseudo-random generation: 128-bit [`Seed`]s and the AES-128-CTR
//! stream [`Prg`] (cookbook §7.4: "a real stream cipher keyed per pair, with a counter
//! per operation").
//!
//! Seeds come from the operating system's RNG ([`Seed::random`]) or are derived from
//! another seed with a domain label ([`Seed::derive`]), so that no two uses of one seed
//! share a stream. Deterministic seeds exist only in tests or behind the `testing`
//! feature.

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::{Error, Result};

/// Whether this build has the `testing` feature (deterministic seeds). Release
/// binaries check this and refuse to run.
pub const DANGEROUS_TESTING_SEEDS: bool = cfg!(feature = "testing");

/// The length of a seed in bytes (128 bits).
pub const SEED_BYTES: usize = 16;

/// A 128-bit secret seed. Zeroised on drop; `Debug` prints nothing of it.
#[derive(Clone)]
pub struct Seed([u8; SEED_BYTES]);

impl Drop for Seed {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for Seed {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Seed(<secret>)")
    }
}

impl Seed {
    /// A fresh seed from the operating system's RNG.
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; SEED_BYTES];
        getrandom::fill(&mut bytes).map_err(|error| Error::OsRandom(error.to_string()))?;
        Ok(Self(bytes))
    }

    /// A seed received from a peer (e.g. the dealer) over an authenticated channel.
    pub fn from_bytes(bytes: [u8; SEED_BYTES]) -> Self {
        Self(bytes)
    }

    /// The seed's bytes, to send to the one peer that shares it.
    pub fn to_bytes(&self) -> [u8; SEED_BYTES] {
        self.0
    }

    /// A deterministic seed for tests. Never available in production builds.
    #[cfg(any(test, feature = "testing"))]
    pub fn dangerous_from_test_value(value: u64) -> Self {
        let mut bytes = [0u8; SEED_BYTES];
        bytes[..8].copy_from_slice(&value.to_le_bytes());
        Self(bytes)
    }

    /// A child seed for one purpose: SHA-256 over a version tag, the domain label, the
    /// indices and this seed. Distinct (domain, indices) give independent seeds.
    pub fn derive(&self, domain: &str, indices: &[u64]) -> Seed {
        let mut hasher = Sha256::new();
        hasher.update(b"veil/seed-derive/v1");
        hasher.update((domain.len() as u64).to_le_bytes());
        hasher.update(domain.as_bytes());
        hasher.update((indices.len() as u64).to_le_bytes());
        for index in indices {
            hasher.update(index.to_le_bytes());
        }
        hasher.update(self.0);
        let digest = hasher.finalize();
        let mut bytes = [0u8; SEED_BYTES];
        bytes.copy_from_slice(&digest[..SEED_BYTES]);
        Seed(bytes)
    }
}

/// Blocks encrypted per refill: enough AES blocks in flight to use the pipelined units.
const BUFFER_BLOCKS: usize = 64;

/// AES-128 in counter mode, keyed by a [`Seed`]. Each `Prg` is one stream; derive a
/// fresh seed for every independent purpose.
pub struct Prg {
    cipher: Aes128,
    counter: u128,
    buffer: [Array<u8, aes::cipher::consts::U16>; BUFFER_BLOCKS],
    position: usize,
}

impl std::fmt::Debug for Prg {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("Prg(<secret>)")
    }
}

impl Drop for Prg {
    fn drop(&mut self) {
        for block in self.buffer.iter_mut() {
            block.as_mut_slice().zeroize();
        }
    }
}

impl Prg {
    /// The stream keyed by `seed`, from counter 0.
    pub fn new(seed: &Seed) -> Self {
        let cipher = Aes128::new(&Array::from(seed.0));
        Self {
            cipher,
            counter: 0,
            buffer: [Array::default(); BUFFER_BLOCKS],
            position: BUFFER_BLOCKS * 16,
        }
    }

    fn refill(&mut self) {
        for block in self.buffer.iter_mut() {
            *block = Array::from(self.counter.to_le_bytes());
            self.counter = self.counter.wrapping_add(1);
        }
        self.cipher.encrypt_blocks(&mut self.buffer);
        self.position = 0;
    }

    /// Fills `output` with pseudo-random bytes.
    pub fn fill_bytes(&mut self, output: &mut [u8]) {
        let mut written = 0;
        while written < output.len() {
            if self.position == BUFFER_BLOCKS * 16 {
                self.refill();
            }
            let block = self.position / 16;
            let offset = self.position % 16;
            let take = (16 - offset).min(output.len() - written);
            output[written..written + take]
                .copy_from_slice(&self.buffer[block][offset..offset + take]);
            written += take;
            self.position += take;
        }
    }

    /// The next pseudo-random 64-bit word (uniform in Z_2^64).
    pub fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    /// The next 128 pseudo-random bits.
    pub fn next_u128(&mut self) -> u128 {
        let mut bytes = [0u8; 16];
        self.fill_bytes(&mut bytes);
        u128::from_le_bytes(bytes)
    }

    /// Fills `output` with uniform ring elements.
    pub fn fill_u64(&mut self, output: &mut [u64]) {
        for word in output.iter_mut() {
            *word = self.next_u64();
        }
    }

    /// `count` uniform ring elements.
    pub fn vec_u64(&mut self, count: usize) -> Vec<u64> {
        let mut output = vec![0u64; count];
        self.fill_u64(&mut output);
        output
    }

    /// A uniform tensor of the given shape.
    pub fn tensor(&mut self, shape: &[usize]) -> crate::RingTensor {
        // Filled in place: the tensor always has its shape's element count (a mask
        // that came out short would leave words of what it masks in the clear).
        let mut tensor = crate::RingTensor::zeros(shape);
        self.fill_u64(tensor.data_mut());
        tensor
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_deterministic_per_seed_and_differ_across_seeds() {
        let seed = Seed::dangerous_from_test_value(7);
        let mut first = Prg::new(&seed);
        let mut second = Prg::new(&seed);
        let a = first.vec_u64(300);
        assert_eq!(a, second.vec_u64(300));
        let mut other = Prg::new(&Seed::dangerous_from_test_value(8));
        assert_ne!(a, other.vec_u64(300));
    }

    #[test]
    fn byte_and_word_reads_share_one_stream() {
        let seed = Seed::dangerous_from_test_value(1);
        let mut words = Prg::new(&seed);
        let mut bytes = Prg::new(&seed);
        let expected: Vec<u64> = words.vec_u64(5);
        let mut raw = [0u8; 40];
        bytes.fill_bytes(&mut raw[..3]);
        bytes.fill_bytes(&mut raw[3..]);
        let got: Vec<u64> = raw
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(expected, got);
    }

    #[test]
    fn derived_seeds_are_domain_separated() {
        let seed = Seed::dangerous_from_test_value(3);
        let bytes = |domain: &str, indices: &[u64]| seed.derive(domain, indices).to_bytes();
        assert_ne!(bytes("a", &[0]), bytes("b", &[0]));
        assert_ne!(bytes("a", &[0]), bytes("a", &[1]));
        assert_ne!(bytes("a", &[0, 1]), bytes("a", &[1, 0]));
        assert_eq!(bytes("a", &[5]), bytes("a", &[5]));
        assert!(format!("{seed:?}").contains("secret"));
    }

    #[test]
    fn os_random_seeds_differ() {
        assert_ne!(
            Seed::random().unwrap().to_bytes(),
            Seed::random().unwrap().to_bytes()
        );
    }

    #[test]
    fn stream_bits_are_balanced() {
        let mut prg = Prg::new(&Seed::random().unwrap());
        let ones: u32 = prg.vec_u64(4096).iter().map(|w| w.count_ones()).sum();
        let total = 4096.0 * 64.0;
        // Binomial standard deviation is 128 bits; allow 6 sigma.
        assert!(
            (f64::from(ones) - total / 2.0).abs() < 6.0 * 128.0,
            "{ones}"
        );
    }
}
