//! Deterministic, non-cryptographic sampling for *public* data: random benchmark
//! weights (DESIGN.md §7's recipe), training initialisation and shuffles, and test
//! inputs. Never use it for anything a party keeps secret or sends masked: masks, shares
//! and seeds come from [`crate::prg`] with OS-random seeds.
//!
//! [`SplitMix64`] is the one sampler of the workspace: uniform words, uniform floats,
//! bounded integers, Fisher–Yates shuffles and standard normals (Box–Muller).
//! [`test_seed`] gives tests a seed they print on failure and accept from
//! `VEIL_TEST_SEED`, so any random test can be replayed.

/// SplitMix64 (Steele, Lea and Flood, "Fast splittable pseudorandom number generators",
/// OOPSLA 2014): 64 bits of state, its whole stream fixed by the seed.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..bound` (`bound > 0`), by Lemire's multiply-shift; the bias is at
    /// most `bound / 2^64`, irrelevant for shuffling data sets.
    pub fn below(&mut self, bound: usize) -> usize {
        ((u128::from(self.next_u64()) * bound as u128) >> 64) as usize
    }

    /// A standard normal sample (Box–Muller; the second value is discarded).
    pub fn next_normal(&mut self) -> f64 {
        // 1 - u lies in (0, 1], so the logarithm is finite.
        let radius = (-2.0 * (1.0 - self.next_f64()).ln()).sqrt();
        let angle = std::f64::consts::TAU * self.next_f64();
        radius * angle.cos()
    }

    /// `count` samples of N(0, σ²) as f32.
    pub fn normal_vec(&mut self, count: usize, sigma: f32) -> Vec<f32> {
        (0..count)
            .map(|_| self.next_normal() as f32 * sigma)
            .collect()
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for last in (1..items.len()).rev() {
            let other = self.below(last + 1);
            items.swap(last, other);
        }
    }
}

/// The environment variable that replays a random test with a given seed.
pub const TEST_SEED_VARIABLE: &str = "VEIL_TEST_SEED";

/// A test's seed: taken from `VEIL_TEST_SEED` when set, otherwise drawn from the OS (or
/// a test's historical constant, [`test_seed_or`]). When the test panics (fails) while
/// the seed is alive, its `Drop` prints the seed and how to replay it, so every random
/// test can be reproduced:
///
/// ```
/// let seed = veil_core::sampling::test_seed();
/// let mut sampler = veil_core::sampling::SplitMix64::new(seed.value());
/// assert!(sampler.next_f64() < 1.0);
/// ```
#[derive(Debug)]
pub struct TestSeed {
    value: u64,
}

impl TestSeed {
    /// The seed's value, to print or to feed a test's own generator.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// The 128-bit PRG seed of this value ([`crate::prg::Seed::dangerous_from_test_value`]).
    #[cfg(any(test, feature = "testing"))]
    pub fn seed(&self) -> crate::prg::Seed {
        self.seed_at(0)
    }

    /// The PRG seed of this value plus `index`, for a test that needs several streams (a
    /// test whose streams were the constants N, N + 1, … keeps them by default).
    #[cfg(any(test, feature = "testing"))]
    pub fn seed_at(&self, index: u64) -> crate::prg::Seed {
        crate::prg::Seed::dangerous_from_test_value(self.value.wrapping_add(index))
    }

    /// The cryptographic PRG stream of [`Self::seed`].
    #[cfg(any(test, feature = "testing"))]
    pub fn prg(&self) -> crate::prg::Prg {
        crate::prg::Prg::new(&self.seed())
    }

    /// The cryptographic PRG stream of [`Self::seed_at`].
    #[cfg(any(test, feature = "testing"))]
    pub fn prg_at(&self, index: u64) -> crate::prg::Prg {
        crate::prg::Prg::new(&self.seed_at(index))
    }
}

impl Drop for TestSeed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test seed: {value} (replay with {TEST_SEED_VARIABLE}={value})",
                value = self.value
            );
        }
    }
}

/// See [`TestSeed`]: the seed of `VEIL_TEST_SEED`, or a fresh one from the OS. A
/// malformed `VEIL_TEST_SEED` panics with a message saying so, rather than silently
/// drawing another seed.
pub fn test_seed() -> TestSeed {
    let value = seed_from_environment().unwrap_or_else(|| {
        let mut bytes = [0u8; 8];
        // The OS RNG only picks which public test data to draw; a fixed fallback keeps a
        // test running on a machine whose RNG is unavailable.
        if getrandom::fill(&mut bytes).is_err() {
            bytes = 0x5EED_u64.to_le_bytes();
        }
        u64::from_le_bytes(bytes)
    });
    TestSeed { value }
}

/// The seed of `VEIL_TEST_SEED`, or `default` (a test's historical constant, so that its
/// default run stays the same, as exhaustive and regression tests want).
pub fn test_seed_or(default: u64) -> TestSeed {
    TestSeed {
        value: seed_from_environment().unwrap_or(default),
    }
}

fn seed_from_environment() -> Option<u64> {
    match std::env::var(TEST_SEED_VARIABLE) {
        Ok(text) if text.trim().is_empty() => None,
        Ok(text) => {
            Some(text.trim().parse().unwrap_or_else(|_| {
                panic!("{TEST_SEED_VARIABLE}={text:?} is not a decimal u64 seed")
            }))
        }
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            panic!("{TEST_SEED_VARIABLE} is not a decimal u64 seed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SplitMix64;

    #[test]
    fn matches_reference_stream() {
        // First outputs of the reference splitmix64.c for seed 1234567.
        let mut rng = SplitMix64::new(1_234_567);
        assert_eq!(rng.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(rng.next_u64(), 3_203_168_211_198_807_973);
    }

    #[test]
    fn normal_has_roughly_unit_variance() {
        let mut rng = SplitMix64::new(7);
        let samples: Vec<f64> = (0..20_000).map(|_| rng.next_normal()).collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let variance =
            samples.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / samples.len() as f64;
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((variance - 1.0).abs() < 0.05, "variance {variance}");
    }

    #[test]
    fn below_stays_in_range_and_shuffle_permutes() {
        let mut rng = SplitMix64::new(3);
        assert!((0..1000).all(|_| rng.below(7) < 7));
        let mut items: Vec<usize> = (0..100).collect();
        rng.shuffle(&mut items);
        let mut sorted = items.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_ne!(items, sorted);
    }
}
