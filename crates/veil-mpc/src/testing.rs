//! Test support: seeds that a failing test reports and a rerun can replay.
//!
//! Every test that draws randomness takes its seed from [`test_seed`] (or
//! [`test_seed_or`], for tests whose default stream is a fixed constant). The seed comes
//! from the environment variable `VEIL_TEST_SEED` (a decimal u64) when it is set;
//! otherwise it is drawn from the OS (or the test's constant). The returned [`TestSeed`]
//! prints `test seed: N (replay with VEIL_TEST_SEED=N)` when it is dropped during a
//! panic, so the seed of a failing test is in its captured output, which the test
//! harness shows for failing tests only.
//!
//! Available in this crate's unit tests and behind the `testing` feature (which the
//! crate's integration tests enable); never in production builds.

use veil_core::prg::{Prg, Seed};

/// The environment variable that fixes every test's seed.
pub const SEED_VARIABLE: &str = "VEIL_TEST_SEED";

/// A test's seed; reports itself if the test panics while it is alive.
#[derive(Debug)]
pub struct TestSeed {
    value: u64,
}

/// The seed of `VEIL_TEST_SEED`, or a fresh one from the OS RNG. Panics if the variable
/// is set but is not a decimal u64.
pub fn test_seed() -> TestSeed {
    let value = from_environment().unwrap_or_else(|| {
        let seed = Seed::random().expect("the OS RNG gives a test seed");
        let mut low = [0u8; 8];
        low.copy_from_slice(&seed.to_bytes()[..8]);
        u64::from_le_bytes(low)
    });
    TestSeed { value }
}

/// The seed of `VEIL_TEST_SEED`, or `default` (a test's historical constant, so that its
/// default run stays the same). Panics if the variable is set but is not a decimal u64.
pub fn test_seed_or(default: u64) -> TestSeed {
    TestSeed {
        value: from_environment().unwrap_or(default),
    }
}

fn from_environment() -> Option<u64> {
    match std::env::var(SEED_VARIABLE) {
        Ok(text) if text.trim().is_empty() => None,
        Ok(text) => Some(
            text.trim()
                .parse()
                .unwrap_or_else(|_| panic!("{SEED_VARIABLE}={text:?} is not a decimal u64")),
        ),
        Err(std::env::VarError::NotPresent) => None,
        Err(std::env::VarError::NotUnicode(_)) => {
            panic!("{SEED_VARIABLE} is not a decimal u64")
        }
    }
}

impl TestSeed {
    /// The seed's value, to print or to feed a test's own generator.
    pub fn value(&self) -> u64 {
        self.value
    }

    /// The 128-bit seed of this value (`Seed::dangerous_from_test_value`).
    pub fn seed(&self) -> Seed {
        self.seed_at(0)
    }

    /// The seed of this value plus `index`, for a test that needs several streams (a
    /// test whose streams were the constants N, N + 1, … keeps them by default).
    pub fn seed_at(&self, index: u64) -> Seed {
        Seed::dangerous_from_test_value(self.value.wrapping_add(index))
    }

    /// The stream of [`Self::seed`].
    pub fn prg(&self) -> Prg {
        Prg::new(&self.seed())
    }

    /// The stream of [`Self::seed_at`].
    pub fn prg_at(&self, index: u64) -> Prg {
        Prg::new(&self.seed_at(index))
    }
}

impl Drop for TestSeed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "test seed: {value} (replay with {SEED_VARIABLE}={value})",
                value = self.value
            );
        }
    }
}
