//! The AVX2 6×4 micro-kernel (x86_64).
//!
//! AVX2 has no 64×64-bit multiply, so each product is split into 32-bit halves:
//!
//! ```text
//! a·b mod 2^64 = lo(a)·lo(b) + 2^32·(lo(a)·hi(b) + hi(a)·lo(b))   (mod 2^64)
//! ```
//!
//! Per depth step the kernel loads one row of the `B` panel, `b = [b0 b1 b2 b3]`, and a
//! copy `b'` with the 32-bit halves of each lane swapped (`vpshufd`, once for all six
//! rows). For each of the six rows it broadcasts `a` and issues
//!
//! - `vpmuludq(a, b)`: the full 64-bit `lo(a)·lo(b)`, added to a 64-bit accumulator;
//! - `vpmulld(a, b')`: the eight 32-bit products `lo(a)·hi(b)` (low half of each lane)
//!   and `hi(a)·lo(b)` (high half), added to 32-bit accumulators. Only their sum
//!   mod 2^32 matters, because it is multiplied by 2^32, so 32-bit wrapping is exact.
//!
//! That is 2 multiplies and 2 adds per 4 multiply-accumulates, with no shifts in the loop.
//! Once per tile the cross accumulator `x = (hi << 32) | lo` is folded:
//! `((x + (x >> 32)) << 32)` is `((lo + hi) mod 2^32) << 32`, which is added to the
//! 64-bit accumulator.
//!
//! # Performance
//! Per depth step (24 multiply-accumulates) the loop issues 6 `vpmuludq`, 6 `vpmulld`
//! (2 uops each on Intel), 12 adds and 1 shuffle: 31 vector uops on 3 ports, a ceiling of
//! about 2.3 MAC/cycle. On the Xeon (Sapphire Rapids class, ≈2.95 GHz) development VM the
//! micro-kernel alone ran at ≈6.2 GMAC/s with its panels in L1 (≈11.3 cycles per step)
//! and the whole GEMM at 5.6–5.9 GMAC/s for 512³. Going faster needs fewer uops per
//! MAC, i.e. AVX-512 (`vpmullq`), not a different AVX2 schedule: each 64-bit product
//! needs three 32×32-bit products, and AVX2 does four of those per uop.

use std::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_add_epi64, _mm256_loadu_si256, _mm256_mul_epu32,
    _mm256_mullo_epi32, _mm256_set1_epi64x, _mm256_setzero_si256, _mm256_shuffle_epi32,
    _mm256_slli_epi64, _mm256_srli_epi64, _mm256_storeu_si256,
};

use super::scalar::{self, MR, NR, TileDestination};

/// Packed `C = A·B mod 2^64` with the AVX2 micro-kernel; contract as in
/// [`super::gemm_u64`] (row-major, `C` overwritten, panics if a buffer is too short).
///
/// A safe function that may only be called where AVX2 is known to be present: the
/// dispatcher calls it after run-time detection.
#[target_feature(enable = "avx2")]
pub(super) fn gemm_u64(m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) {
    // The closure inherits this function's target features, and `blocked_gemm` is
    // `#[inline(always)]`, so the whole loop nest is compiled for AVX2.
    scalar::blocked_gemm::<MR, NR, _>(m, k, n, a, b, c, |a_panel, b_panel, destination| {
        micro_kernel(a_panel, b_panel, destination);
    });
}

/// One 6×4 tile: `destination (+)= a_panel · b_panel` (panel layout as in
/// [`scalar::blocked_gemm`]: `a_panel[p * MR + r]`, `b_panel[p * NR + j]`).
///
/// The code shape matters (measured with Rust 1.95, LLVM 22): inlined into the loop
/// nest, or with `depth_step` taking arrays, LLVM splits one of the six broadcasts into
/// a load plus a register broadcast (an extra shuffle-port uop per step), about 3 %
/// slower. Check the assembly when changing it.
#[target_feature(enable = "avx2")]
#[inline(never)]
fn micro_kernel(a_panel: &[u64], b_panel: &[u64], destination: TileDestination<'_>) {
    let zero = _mm256_setzero_si256();
    let mut low = [zero; MR];
    let mut cross = [zero; MR];
    // Two depth steps per iteration halve the loop overhead (about 3 % faster); an odd
    // depth leaves one step in `a_rest`/`b_rest`.
    let (a_pairs, a_rest) = a_panel.as_chunks::<{ 2 * MR }>();
    let (b_pairs, b_rest) = b_panel.as_chunks::<{ 2 * NR }>();
    for (a_pair, b_pair) in a_pairs.iter().zip(b_pairs) {
        let (a_first, a_second) = a_pair.split_at(MR);
        let (b_first, b_second) = b_pair.split_at(NR);
        depth_step(a_first, b_first, &mut low, &mut cross);
        depth_step(a_second, b_second, &mut low, &mut cross);
    }
    depth_step(a_rest, b_rest, &mut low, &mut cross);
    let mut tile = [zero; MR];
    for r in 0..MR {
        let folded = _mm256_add_epi64(cross[r], _mm256_srli_epi64::<32>(cross[r]));
        tile[r] = _mm256_add_epi64(low[r], _mm256_slli_epi64::<32>(folded));
    }
    store(&tile, destination);
}

/// One depth step: a rank-1 update of the tile's accumulators with column `A[.., p]`
/// (the first `MR` elements of `a_step`) and row `B[p, ..]` (the first `NR` of `b_step`).
/// Does nothing if either slice is shorter (the empty rest of an even depth).
///
/// (It takes slices rather than arrays only because that shape of code leads LLVM to emit
/// all six broadcasts as single loads; see [`micro_kernel`].)
#[target_feature(enable = "avx2")]
#[inline]
fn depth_step(a_step: &[u64], b_step: &[u64], low: &mut [__m256i; MR], cross: &mut [__m256i; MR]) {
    let (Some(a_step), Some(b_step)) = (a_step.first_chunk::<MR>(), b_step.first_chunk::<NR>())
    else {
        return;
    };
    // SAFETY: `b_step` is a `[u64; 4]`, i.e. exactly the 32 readable bytes this
    // unaligned load reads.
    let b = unsafe { _mm256_loadu_si256(b_step.as_ptr().cast::<__m256i>()) };
    // Swap the 32-bit halves of every 64-bit lane: [hi(b), lo(b)].
    let b_swapped = _mm256_shuffle_epi32::<0b10_11_00_01>(b);
    for r in 0..MR {
        let a = _mm256_set1_epi64x(a_step[r] as i64);
        low[r] = _mm256_add_epi64(low[r], _mm256_mul_epu32(a, b));
        cross[r] = _mm256_add_epi32(cross[r], _mm256_mullo_epi32(a, b_swapped));
    }
}

/// Stores (or adds) a finished tile into `C`: full tiles straight from registers, edge
/// tiles through [`scalar::store_tile`].
#[target_feature(enable = "avx2")]
#[inline]
fn store(tile: &[__m256i; MR], destination: TileDestination<'_>) {
    if destination.rows < MR || destination.columns < NR {
        let mut values = [[0u64; NR]; MR];
        for (row, &vector) in values.iter_mut().zip(tile) {
            // SAFETY: `row` is a `[u64; 4]`, exactly the 32 writable bytes this unaligned
            // store writes.
            unsafe { _mm256_storeu_si256(row.as_mut_ptr().cast::<__m256i>(), vector) };
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
    for (r, &vector) in tile.iter().enumerate() {
        let c_row: &mut [u64; NR] = (&mut c[r * row_stride..][..NR])
            .try_into()
            .expect("slice of length NR");
        let value = if accumulate {
            // SAFETY: `c_row` is a `[u64; 4]`, exactly the 32 readable bytes this
            // unaligned load reads.
            let old = unsafe { _mm256_loadu_si256(c_row.as_ptr().cast::<__m256i>()) };
            _mm256_add_epi64(old, vector)
        } else {
            vector
        };
        // SAFETY: `c_row` is a `[u64; 4]`, exactly the 32 writable bytes this unaligned
        // store writes.
        unsafe { _mm256_storeu_si256(c_row.as_mut_ptr().cast::<__m256i>(), value) };
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn run_avx2(m: usize, k: usize, n: usize, a: &[u64], b: &[u64]) -> Option<Vec<u64>> {
        if !std::arch::is_x86_feature_detected!("avx2") {
            super::super::report_skipped("AVX2", "avx2");
            return None;
        }
        let mut c = vec![u64::MAX; m * n];
        // SAFETY: AVX2 was detected just above.
        unsafe { gemm_u64(m, k, n, a, b, &mut c) };
        Some(c)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn avx2_matches_scalar_on_ragged_shapes(
            (m, k, n, a, b) in (0usize..70, 0usize..70, 0usize..70).prop_flat_map(|(m, k, n)| (
                Just(m), Just(k), Just(n),
                proptest::collection::vec(any::<u64>(), m * k),
                proptest::collection::vec(any::<u64>(), k * n),
            ))
        ) {
            if let Some(found) = run_avx2(m, k, n, &a, &b) {
                let mut expected = vec![0; m * n];
                scalar::gemm_u64(m, k, n, &a, &b, &mut expected);
                prop_assert_eq!(expected, found);
            }
        }
    }

    #[test]
    fn avx2_handles_extreme_values_across_depth_blocks() {
        // All-ones inputs maximise every partial sum; k = 600 spans three depth slices.
        let (m, k, n) = (13, 600, 9);
        let a = vec![u64::MAX; m * k];
        let b = vec![u64::MAX; k * n];
        if let Some(found) = run_avx2(m, k, n, &a, &b) {
            // (-1)·(-1) summed k times is k mod 2^64.
            assert!(found.iter().all(|&value| value == k as u64));
        }
    }
}
