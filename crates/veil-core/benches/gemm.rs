//! Throughput of the u64 GEMM and convolution kernels, every available kernel side by side
//! (`scalar`, and `avx2` and `avx512` where the CPU has them; see `Kernel::available`).
//!
//! IDs read `gemm_u64/<kernel>/<m>x<k>x<n>` and `conv2d_u64/<kernel>/<geometry>`. The
//! throughput is counted in multiply-accumulates, so criterion's `Melem/s` is MMAC/s.
//! `VEIL_KERNEL` has no effect here: every kernel is benchmarked explicitly.
//!
//! Run with `cargo bench -p veil-core --bench gemm`; add `-- avx512` (or any ID substring)
//! to filter.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use veil_core::kernels::{Conv2dShape, Kernel, conv2d_u64_with, gemm_u64_with};

/// Deterministic full-range test data (splitmix64).
fn pseudo_random(len: usize, seed: u64) -> Vec<u64> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        })
        .collect()
}

fn gemm(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("gemm_u64");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let shapes = [
        (256, 256, 256),
        (512, 512, 512),
        // BERT-base feed-forward: 128 tokens × 768 → 3072.
        (128, 768, 3072),
        // ResNet 3×3 conv, 64 → 64 channels at 56×56, as im2col computes it.
        (64, 576, 3136),
    ];
    for (m, k, n) in shapes {
        let a = pseudo_random(m * k, 1);
        let b = pseudo_random(k * n, 2);
        let mut c = vec![0; m * n];
        group.throughput(Throughput::Elements((m * k * n) as u64));
        for kernel in Kernel::available() {
            let id = BenchmarkId::new(kernel.name(), format!("{m}x{k}x{n}"));
            group.bench_function(id, |bencher| {
                bencher.iter(|| {
                    gemm_u64_with(kernel, m, k, n, black_box(&a), black_box(&b), &mut c)
                        .expect("shapes are valid");
                    black_box(&c);
                })
            });
        }
    }
    group.finish();
}

fn conv2d(criterion: &mut Criterion) {
    let mut group = criterion.benchmark_group("conv2d_u64");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let geometries = [
        // ResNet-18 stage 1: 3×3, 64 → 64 channels at 56×56.
        (
            "1x64x56x56_k3x3_o64",
            Conv2dShape {
                batch: 1,
                in_channels: 64,
                height: 56,
                width: 56,
                out_channels: 64,
                kernel_height: 3,
                kernel_width: 3,
                stride: 1,
                padding: 1,
            },
        ),
        // CIFAR ResNet stage 1: 3×3, 16 → 16 channels at 32×32, batch 8.
        (
            "8x16x32x32_k3x3_o16",
            Conv2dShape {
                batch: 8,
                in_channels: 16,
                height: 32,
                width: 32,
                out_channels: 16,
                kernel_height: 3,
                kernel_width: 3,
                stride: 1,
                padding: 1,
            },
        ),
    ];
    for (name, shape) in geometries {
        let input = pseudo_random(shape.input_len(), 3);
        let weight = pseudo_random(shape.weight_len(), 4);
        let mut output = vec![0; shape.output_len()];
        let macs =
            shape.output_len() * shape.in_channels * shape.kernel_height * shape.kernel_width;
        group.throughput(Throughput::Elements(macs as u64));
        for kernel in Kernel::available() {
            group.bench_function(BenchmarkId::new(kernel.name(), name), |bencher| {
                bencher.iter(|| {
                    conv2d_u64_with(
                        kernel,
                        &shape,
                        black_box(&input),
                        black_box(&weight),
                        &mut output,
                    )
                    .expect("geometry is valid");
                    black_box(&output);
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, gemm, conv2d);
criterion_main!(benches);
