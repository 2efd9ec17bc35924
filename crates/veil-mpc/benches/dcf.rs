//! Throughput of the DCF kernels: batched (level-synchronous) evaluation and generation
//! beside the one-key-at-a-time reference, on comparison-shaped keys.
//!
//! IDs read `dcf_evaluate/<form>/<bits>bit_payload<p>` and
//! `dcf_generate/<form>/<bits>bit_payload<p>`, where `<form>` is `batch` or `single`. A
//! DReLU on 64-bit values is a 63-level key with payload 1, a ReLU the same with payload
//! 2. Throughput counts keys, so criterion's `Melem/s` is millions of keys per second on
//! one core (one party's evaluation, or one key pair's generation). `single` is the
//! one-key-at-a-time reference (`evaluate` on decoded keys; `generate` then
//! `encode_batch`), for comparison.
//!
//! The batched cases run on 100,000 keys (76 MB of corrections at 31 levels and payload
//! 1, up to 205 MB at 63 levels and payload 2), so they include streaming the keys from
//! memory, as the online phase does.
//!
//! Run with `cargo bench -p veil-mpc --bench dcf`; add `-- batch` (or any ID substring) to
//! filter.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use veil_core::prg::{Prg, Seed};
use veil_mpc::dcf::{self, MAX_PAYLOAD};

/// Keys per batched call: a layer's worth of comparisons.
const BATCH: usize = 100_000;

/// Keys per call of the one-at-a-time reference (smaller: it is slow, and its cost per
/// key does not depend on the count).
const SINGLE: usize = 10_000;

/// (bits, payload): 64-bit DReLU, 64-bit ReLU, and the same on 32-bit reductions.
const SHAPES: [(u32, usize); 4] = [(63, 1), (63, 2), (31, 1), (31, 2)];

/// Random keys of one shape: α, β, both parties' roots and public inputs.
struct Keys {
    alphas: Vec<u64>,
    betas: Vec<[u64; MAX_PAYLOAD]>,
    roots: [Vec<u128>; 2],
    inputs: Vec<u64>,
}

fn random_keys(bits: u32, payload: usize, count: usize, prg: &mut Prg) -> Keys {
    let mask = (1u64 << bits) - 1;
    let mut beta = || {
        let mut lanes = [0u64; MAX_PAYLOAD];
        for lane in lanes.iter_mut().take(payload) {
            *lane = prg.next_u64();
        }
        lanes
    };
    let betas = (0..count).map(|_| beta()).collect();
    Keys {
        alphas: (0..count).map(|_| prg.next_u64() & mask).collect(),
        betas,
        roots: [
            (0..count).map(|_| prg.next_u128()).collect(),
            (0..count).map(|_| prg.next_u128()).collect(),
        ],
        inputs: (0..count).map(|_| prg.next_u64() & mask).collect(),
    }
}

fn id(form: &str, bits: u32, payload: usize) -> BenchmarkId {
    BenchmarkId::new(form, format!("{bits}bit_payload{payload}"))
}

fn evaluate(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("dcf_evaluate");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut prg = Prg::new(&Seed::dangerous_from_test_value(1));
    for (bits, payload) in SHAPES {
        let keys = random_keys(bits, payload, BATCH, &mut prg);
        let mut words = Vec::new();
        let roots = [&keys.roots[0][..], &keys.roots[1][..]];
        dcf::generate_batch(bits, payload, &keys.alphas, &keys.betas, roots, &mut words)
            .expect("shapes are valid");

        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(id("batch", bits, payload), |bencher| {
            bencher.iter(|| {
                dcf::evaluate_batch(
                    0,
                    bits,
                    payload,
                    black_box(&keys.roots[0]),
                    black_box(&words),
                    black_box(&keys.inputs),
                )
                .expect("shapes are valid")
            })
        });

        let mut decoded = dcf::decode_batch(&words, bits, payload, BATCH).expect("keys decode");
        decoded.truncate(SINGLE);
        group.throughput(Throughput::Elements(SINGLE as u64));
        group.bench_function(id("single", bits, payload), |bencher| {
            bencher.iter(|| {
                decoded
                    .iter()
                    .zip(&keys.roots[0])
                    .zip(&keys.inputs)
                    .map(|((corrections, root), input)| {
                        dcf::evaluate(0, *root, corrections, black_box(*input))
                    })
                    .collect::<Vec<_>>()
            })
        });
    }
    group.finish();
}

fn generate(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("dcf_generate");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let mut prg = Prg::new(&Seed::dangerous_from_test_value(2));
    for (bits, payload) in SHAPES {
        let keys = random_keys(bits, payload, BATCH, &mut prg);
        let roots = [&keys.roots[0][..], &keys.roots[1][..]];
        let mut words = Vec::with_capacity(BATCH * dcf::encoded_words(bits, payload));

        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(id("batch", bits, payload), |bencher| {
            bencher.iter(|| {
                words.clear();
                dcf::generate_batch(
                    bits,
                    payload,
                    black_box(&keys.alphas),
                    black_box(&keys.betas),
                    roots,
                    &mut words,
                )
                .expect("shapes are valid");
                black_box(&words);
            })
        });

        group.throughput(Throughput::Elements(SINGLE as u64));
        group.bench_function(id("single", bits, payload), |bencher| {
            bencher.iter(|| {
                words.clear();
                let mut keys_generated = Vec::with_capacity(SINGLE);
                for index in 0..SINGLE {
                    keys_generated.push(dcf::generate(
                        bits,
                        black_box(keys.alphas[index]),
                        keys.betas[index],
                        [keys.roots[0][index], keys.roots[1][index]],
                    ));
                }
                dcf::encode_batch(&keys_generated, payload, &mut words).expect("shapes are valid");
                black_box(&words);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, evaluate, generate);
criterion_main!(benches);
