//! The clear data a test runs on, and the seeds every setting derives its randomness
//! from, all from one test seed.

use std::sync::atomic::{AtomicU64, Ordering};

use veil_core::prg::{Prg, Seed};
use veil_core::sampling::TestSeed;
use veil_core::{FixedPoint, RingTensor};

/// What one test runs on: the plan's fixed-point codec, the server's weights and biases
/// in the clear, and the seeds of the settings' randomness.
pub struct Fixture {
    pub fixed_point: FixedPoint,
    pub weights: Vec<(String, RingTensor)>,
    pub biases: Vec<(String, RingTensor)>,
    /// The root of every seed a setting draws (weight seed, session seeds), derived from
    /// the test seed so that a failing run replays.
    seed: Seed,
    sessions: AtomicU64,
}

impl Fixture {
    pub fn new(
        seed: &TestSeed,
        weights: Vec<(String, RingTensor)>,
        biases: Vec<(String, RingTensor)>,
    ) -> Self {
        Self {
            fixed_point: FixedPoint::default(),
            weights,
            biases,
            seed: seed.seed().derive("veil-mpc/tests/fixture", &[]),
            sessions: AtomicU64::new(0),
        }
    }

    pub fn empty(seed: &TestSeed) -> Self {
        Self::new(seed, vec![], vec![])
    }

    /// The long-term weight seed the server and the dealer share.
    pub fn weight_seed(&self) -> Seed {
        self.seed.derive("weight-seed", &[])
    }

    /// A fresh seed for the next query session (each call gives another).
    pub fn next_session_seed(&self) -> Seed {
        let session = self.sessions.fetch_add(1, Ordering::Relaxed);
        self.seed.derive("session", &[session])
    }

    /// The weights' names and (public) shapes.
    pub fn weight_shapes(&self) -> Vec<(String, Vec<usize>)> {
        self.weights
            .iter()
            .map(|(name, weight)| (name.clone(), weight.shape().to_vec()))
            .collect()
    }
}

/// `count` ring values of magnitude below 2^`limit_bits`, both signs, with the edges
/// (0, ±1, ±the limit, ±2^20) first and magnitudes spread over every bit length.
pub fn adversarial_values(count: usize, limit_bits: u32, prg: &mut Prg) -> Vec<u64> {
    let limit = (1u64 << limit_bits) - 1;
    let mut values = vec![
        0,
        1,
        u64::MAX,
        limit,
        limit.wrapping_neg(),
        1 << 20,
        (-(1i64 << 20)) as u64,
    ];
    while values.len() < count {
        let magnitude =
            prg.next_u64() >> (64 - limit_bits) >> (prg.next_u64() % u64::from(limit_bits));
        values.push(if prg.next_u64() & 1 == 1 {
            magnitude.wrapping_neg()
        } else {
            magnitude
        });
    }
    values.truncate(count);
    values
}

/// A `[5, 4]` weight "w" in [−1, 1) and a `[4]` bias "b" at twice the scale.
pub fn linear_fixture(seed: &TestSeed, prg: &mut Prg) -> Fixture {
    let codec = FixedPoint::default();
    let weights: Vec<u64> = (0..5 * 4)
        .map(|_| {
            codec
                .encode((prg.next_u64() % 2000) as f64 / 1000.0 - 1.0)
                .unwrap()
        })
        .collect();
    let bias: Vec<u64> = (0..4)
        .map(|i| codec.encode_scaled(i as f64 - 1.5, 32).unwrap())
        .collect();
    Fixture::new(
        seed,
        vec![("w".into(), RingTensor::new(vec![5, 4], weights).unwrap())],
        vec![("b".into(), RingTensor::new(vec![4], bias).unwrap())],
    )
}

/// A `[3, 2, 3, 3]` kernel "k" in [−1, 1) and a `[3]` bias "b" at twice the scale.
pub fn convolution_fixture(seed: &TestSeed, prg: &mut Prg) -> Fixture {
    let codec = FixedPoint::default();
    let kernel: Vec<u64> = (0..3 * 2 * 3 * 3)
        .map(|_| {
            codec
                .encode((prg.next_u64() % 2000) as f64 / 1000.0 - 1.0)
                .unwrap()
        })
        .collect();
    let bias: Vec<u64> = (0..3)
        .map(|i| codec.encode_scaled(i as f64 - 0.75, 32).unwrap())
        .collect();
    Fixture::new(
        seed,
        vec![(
            "k".into(),
            RingTensor::new(vec![3, 2, 3, 3], kernel).unwrap(),
        )],
        vec![("b".into(), RingTensor::new(vec![3], bias).unwrap())],
    )
}

/// A `[5]` scale "g" in [−2, 2) and a `[5]` bias "b" at twice the scale.
pub fn row_scale_fixture(seed: &TestSeed, prg: &mut Prg) -> Fixture {
    let codec = FixedPoint::default();
    let scale: Vec<u64> = (0..5)
        .map(|_| {
            codec
                .encode((prg.next_u64() % 4000) as f64 / 1000.0 - 2.0)
                .unwrap()
        })
        .collect();
    let bias: Vec<u64> = (0..5)
        .map(|i| codec.encode_scaled(i as f64 * 0.5 - 1.0, 32).unwrap())
        .collect();
    Fixture::new(
        seed,
        vec![("g".into(), RingTensor::new(vec![5], scale).unwrap())],
        vec![("b".into(), RingTensor::new(vec![5], bias).unwrap())],
    )
}
