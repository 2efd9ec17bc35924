//! The AVX-512 8×16 micro-kernel (x86_64, AVX-512F + AVX-512DQ).
//!
//! AVX-512DQ has a direct 64-bit wrapping multiply, `vpmullq` (`_mm512_mullo_epi64`), so
//! unlike the AVX2 kernel no 32-bit split is needed: per depth step the kernel loads one
//! row of the `B` panel as two zmm registers of 8 lanes, and for each of the 8 rows
//! broadcasts `a` (`vpbroadcastq` from memory) and issues one `vpmullq` and one `vpaddq`
//! per register. The 16 accumulators, 2 `B` registers and a broadcast fit easily in the
//! 32 zmm registers. Blocking and packing are [`scalar::blocked_gemm`]'s, with 8-row `A`
//! panels and 16-column `B` panels.
//!
//! # Performance
//! Per depth step (128 multiply-accumulates) the loop issues 16 `vpmullq`, 16 `vpaddq`,
//! 2 loads and 8 broadcasts, with no shuffles. On the Xeon (Sapphire/Emerald Rapids
//! class, ≈2.95 GHz) development VM a bare `vpmullq` + `vpaddq` stream runs at about
//! 1.37 G pairs/s, i.e. ≈ 11 GMAC/s, and the whole GEMM reaches ≈ 10 GMAC/s for 512³
//! (AVX2: ≈ 5.8). Shapes with few rows of `A` (`m` ≤ 128, as in convolutions and BERT
//! layers) lose 5–15 % to packing `B`, whose cost is amortised over only `m / 8` tiles.
//! Measured alternatives (Rust 1.95, LLVM 22): 6×16, 12×16, 4×32 and 6×32 tiles were
//! equal or slower (12×16 much slower for `m` = 16 or 64); `KC` from 128 to 512 made no
//! difference beyond noise; reading `B` in place instead of packing it was slower except
//! for `m` ≈ 16.

use std::arch::x86_64::{
    __m512i, _mm512_add_epi64, _mm512_loadu_epi64, _mm512_mullo_epi64, _mm512_set1_epi64,
    _mm512_setzero_si512, _mm512_storeu_epi64,
};

use super::scalar::{self, TileDestination};

/// u64 lanes in one zmm register.
const LANES: usize = 8;
/// zmm registers per tile row.
const VECTORS: usize = 2;
/// Rows of the AVX-512 tile (and of its packed `A` panels).
pub(super) const MR: usize = 8;
/// Columns of the AVX-512 tile (and of its packed `B` panels).
pub(super) const NR: usize = LANES * VECTORS;

/// Packed `C = A·B mod 2^64` with the AVX-512 micro-kernel; contract as in
/// [`super::gemm_u64`] (row-major, `C` overwritten, panics if a buffer is too short).
///
/// A safe function that may only be called where AVX-512F and AVX-512DQ are known to be
/// present: the dispatcher calls it after run-time detection.
#[target_feature(enable = "avx512f,avx512dq")]
pub(super) fn gemm_u64(m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
    scalar::blocked_gemm::<MR, NR, _>(m, k, n, a, b, c, |a_panel, b_panel, destination| {
        micro_kernel(a_panel, b_panel, destination);
    });
}

/// One `MR × NR` tile: `destination (+)= a_panel · b_panel` (panel layout as in
/// [`scalar::blocked_gemm`]: `a_panel[p * MR + r]`, `b_panel[p * NR + j]`).
#[target_feature(enable = "avx512f,avx512dq")]
#[inline(never)]
fn micro_kernel(a_panel: &[u64], b_panel: &[u64], destination: TileDestination<'_>) {
    let mut tile = [[_mm512_setzero_si512(); VECTORS]; MR];
    let (a_steps, _) = a_panel.as_chunks::<MR>();
    let (b_steps, _) = b_panel.as_chunks::<NR>();
    for (a_step, b_step) in a_steps.iter().zip(b_steps) {
        let (b_vectors, _) = b_step.as_chunks::<LANES>();
        let b: [__m512i; VECTORS] = std::array::from_fn(|v| load(&b_vectors[v]));
        for (tile_row, &a_value) in tile.iter_mut().zip(a_step) {
            let a = _mm512_set1_epi64(a_value as i64);
            for (accumulator, &b) in tile_row.iter_mut().zip(&b) {
                *accumulator = _mm512_add_epi64(*accumulator, _mm512_mullo_epi64(a, b));
            }
        }
    }
    store(&tile, destination);
}

/// Loads eight u64 into a zmm register.
#[target_feature(enable = "avx512f")]
#[inline]
fn load(values: &[u64; LANES]) -> __m512i {
    // SAFETY: `values` is a `[u64; 8]`, exactly the 64 readable bytes this unaligned load
    // reads.
    unsafe { _mm512_loadu_epi64(values.as_ptr().cast::<i64>()) }
}

/// Stores a zmm register into eight u64.
#[target_feature(enable = "avx512f")]
#[inline]
fn store_vector(values: &mut [u64; LANES], vector: __m512i) {
    // SAFETY: `values` is a `[u64; 8]`, exactly the 64 writable bytes this unaligned
    // store writes.
    unsafe { _mm512_storeu_epi64(values.as_mut_ptr().cast::<i64>(), vector) }
}

/// Stores (or adds) a finished tile into `C`: full tiles straight from registers, edge
/// tiles through [`scalar::store_tile`].
#[target_feature(enable = "avx512f")]
#[inline]
fn store(tile: &[[__m512i; VECTORS]; MR], destination: TileDestination<'_>) {
    if destination.rows < MR || destination.columns < NR {
        let mut values = [[0u64; NR]; MR];
        for (row, vectors) in values.iter_mut().zip(tile) {
            let (row_vectors, _) = row.as_chunks_mut::<LANES>();
            for (row_vector, &vector) in row_vectors.iter_mut().zip(vectors) {
                store_vector(row_vector, vector);
            }
        }
        scalar::store_tile(&values, destination);
        return;
    }
    let TileDestination {
        c,
        row_stride,
        accumulate,
        ..
    } = destination;
    for (r, vectors) in tile.iter().enumerate() {
        let (c_vectors, _) = c[r * row_stride..][..NR].as_chunks_mut::<LANES>();
        for (c_vector, &vector) in c_vectors.iter_mut().zip(vectors) {
            let value = if accumulate {
                _mm512_add_epi64(load(c_vector), vector)
            } else {
                vector
            };
            store_vector(c_vector, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run_avx512(m: usize, k: usize, n: usize, a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq"))
        {
            super::super::report_skipped("AVX-512", "avx512f and avx512dq");
            return None;
        }
        let mut c = vec![u64::MAX; m * n];
        // SAFETY: AVX-512F and AVX-512DQ were detected just above.
        unsafe { gemm_u64(m, k, n, a, b, &mut c) };
        Some(c)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn avx512_matches_scalar_on_ragged_shapes(
            (m, k, n, a, b) in (0usize..70, 0usize..70, 0usize..70).prop_flat_map(|(m, k, n)| (
                Just(m), Just(k), Just(n),
                proptest::collection::vec(any::<u64>(), m * k),
                proptest::collection::vec(any::<u64>(), k * n),
            ))
        ) {
            if let Some(found) = run_avx512(m, k, n, &a, &b) {
                let mut expected = vec![0; m * n];
                scalar::gemm_u64(m, k, n, &a, &b, &mut expected);
                prop_assert_eq!(expected, found);
            }
        }
    }

    #[test]
    fn avx512_handles_extreme_values_across_depth_blocks() {
        // All-ones inputs maximise every partial sum; k = 600 spans three depth slices, and
        // 19 × 35 leaves ragged tiles in both directions.
        let (m, k, n) = (19, 600, 35);
        let a = vec![u64::MAX; m * k];
        let b = vec![u64::MAX; k * n];
        if let Some(found) = run_avx512(m, k, n, &a, &b) {
            // (-1)·(-1) summed k times is k mod 2^64.
            assert!(found.iter().all(|&value| value == k as u64));
        }
    }

    #[test]
    fn avx512_full_tiles_accumulate_across_depth_blocks() {
        // Exact 8 × 16 tiles (the register store path) over two depth slices, with
        // products that need all 64 bits: A[i, p] = 2^32 + i, B[p, j] = 2^32 + j.
        let (m, k, n) = (16, 300, 32);
        let a: Vec<u64> = (0..m * k)
            .map(|index| (1 << 32) + (index / k) as u64)
            .collect();
        let b: Vec<u64> = (0..k * n)
            .map(|index| (1 << 32) + (index % n) as u64)
            .collect();
        if let Some(found) = run_avx512(m, k, n, &a, &b) {
            for i in 0..m {
                for j in 0..n {
                    // (2^32 + i)(2^32 + j) = 2^32 (i + j) + i j  (mod 2^64).
                    let product = ((i + j) as u64 * k as u64) << 32;
                    let expected = product.wrapping_add((i * j * k) as u64);
                    assert_eq!(found[i * n + j], expected, "C[{i}, {j}]");
                }
            }
        }
    }
}
