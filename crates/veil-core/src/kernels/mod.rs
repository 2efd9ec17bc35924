//! u64 matrix multiplication and convolution over the ring Z_2^64.
//!
//! Every product here is computed **modulo 2^64** (wrapping `u64` arithmetic), which is
//! exactly the ring the MPC protocols work in: there is no overflow, no saturation and
//! no rounding, so every kernel gives bit-identical results.
//!
//! # Layout and aliasing
//! Matrices are dense, **row-major** and contiguous: element `(i, j)` of an `r × s`
//! matrix sits at index `i * s + j`, so the row stride of `A` (`m × k`) is `k`, of `B`
//! (`k × n`) is `n` and of `C` (`m × n`) is `n`. The output is always overwritten, never
//! accumulated into. The output may not alias an input; the borrow checker already
//! guarantees that, because it is taken as `&mut [u64]` and the inputs as `&[u64]`.
//!
//! # Kernels and dispatch
//! [`gemm_u64`] is a Goto/BLIS-style blocked GEMM: it packs `B` into `k × NR` column
//! panels and `A` into `MR × k` row panels (zero-padding ragged edges) and runs an
//! `MR × NR` register micro-kernel over them. Three micro-kernels exist, named by
//! [`Kernel`]:
//!
//! - [`Kernel::Scalar`]: portable Rust (`wrapping_mul`/`wrapping_add`), on every target;
//!   6×4 tiles.
//! - [`Kernel::Avx2`]: x86_64 AVX2 intrinsics, 6×4 tiles. AVX2 has no 64-bit multiply, so
//!   it splits `a·b mod 2^64 = lo(a)·lo(b) + 2^32·(lo(a)·hi(b) + hi(a)·lo(b))`: the first
//!   term comes from `vpmuludq` into 64-bit accumulators, both cross terms from one
//!   `vpmulld` into 32-bit accumulators, folded together once per tile.
//! - [`Kernel::Avx512`]: x86_64 AVX-512F + AVX-512DQ intrinsics, 8×16 tiles (two zmm
//!   registers per row). AVX-512DQ multiplies 64-bit lanes directly (`vpmullq`), so each
//!   8 multiply-accumulates are one `vpmullq` and one `vpaddq`.
//!
//! [`Kernel::detect`] picks the fastest kernel the CPU supports (AVX-512, then AVX2, then
//! scalar) once per process, at run time, so one binary runs everywhere; the repository
//! never sets `target-cpu=native`. The environment variable `VEIL_KERNEL` overrides the
//! choice: `VEIL_KERNEL=scalar` forces the portable kernel (how CI exercises the fallback
//! on SIMD machines), `VEIL_KERNEL=avx2` forces the AVX2 kernel on an AVX-512 machine,
//! and `VEIL_KERNEL=avx512` names the default there. A kernel the CPU lacks, or an unknown
//! name, is ignored.
//!
//! Convolution ([`conv2d_u64`]) lowers to the same GEMM through im2col.
//!
//! # Unsafe code
//! This module tree holds all of veil-core's `unsafe`. It is used for two things only:
//! calling the `#[target_feature(enable = "avx2")]` and
//! `#[target_feature(enable = "avx512f,avx512dq")]` kernels after the same run-time check
//! that [`Kernel::detect`] and [`Kernel::available`] use has seen those features on this
//! CPU, and the vector loads and stores inside the kernels, each from or to an array of
//! exactly the vector's size.
//!
//! # Secrets
//! The kernels run in time independent of the values (no branch or address depends on
//! data, only on the public shapes), so they may be applied to shares and secret weights.

mod conv;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

use std::sync::OnceLock;

use crate::{Error, Result};

pub use conv::{Conv2dShape, conv2d_u64, conv2d_u64_with};

/// A GEMM micro-kernel implementation.
///
/// Every kernel computes bit-identical results; they differ only in speed and in the
/// CPUs they run on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    /// Portable Rust, available on every target.
    Scalar,
    /// x86_64 AVX2 intrinsics (Intel Haswell, AMD Excavator/Zen and later).
    Avx2,
    /// x86_64 AVX-512F + AVX-512DQ intrinsics (Intel Skylake-SP, Ice Lake, Sapphire
    /// Rapids, AMD Zen 4 and later).
    Avx512,
}

impl Kernel {
    /// The kernel [`gemm_u64`] uses: the fastest one this CPU can run, i.e. the last of
    /// [`Kernel::available`] ([`Kernel::Avx512`], else [`Kernel::Avx2`], else
    /// [`Kernel::Scalar`]).
    ///
    /// It is detected once per process (the result is cached in a `OnceLock`) with
    /// `is_x86_feature_detected!`. If the environment variable `VEIL_KERNEL` names an
    /// available kernel (`scalar`, `avx2` or `avx512`, any case) when it is first called,
    /// that kernel is chosen instead; any other value (including `avx512` on a CPU without
    /// AVX-512) is ignored.
    #[must_use]
    pub fn detect() -> Kernel {
        static DETECTED: OnceLock<Kernel> = OnceLock::new();
        *DETECTED.get_or_init(|| {
            let requested = std::env::var("VEIL_KERNEL").ok();
            select_kernel(requested.as_deref(), &Kernel::available())
        })
    }

    /// Every kernel this CPU can run, slowest first: [`Kernel::Scalar`], then
    /// [`Kernel::Avx2`] and [`Kernel::Avx512`] where supported. Unlike [`Kernel::detect`]
    /// it ignores `VEIL_KERNEL`; benches and cross-check tests iterate over it.
    #[must_use]
    pub fn available() -> Vec<Kernel> {
        let mut kernels = vec![Kernel::Scalar];
        if avx2_available() {
            kernels.push(Kernel::Avx2);
        }
        if avx512_available() {
            kernels.push(Kernel::Avx512);
        }
        kernels
    }

    /// The kernel's lowercase name (`"scalar"`, `"avx2"`, `"avx512"`), as used by
    /// `VEIL_KERNEL` and in benchmark IDs.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Scalar => "scalar",
            Kernel::Avx2 => "avx2",
            Kernel::Avx512 => "avx512",
        }
    }
}

/// The selection rule behind [`Kernel::detect`], kept pure so that it can be tested
/// without touching the process environment or the CPU: the `available` kernel that
/// `requested` names (ignoring ASCII case), else the last (fastest) `available` one.
fn select_kernel(requested: Option<&str>, available: &[Kernel]) -> Kernel {
    let forced = requested.and_then(|name| {
        available
            .iter()
            .copied()
            .find(|kernel| kernel.name().eq_ignore_ascii_case(name))
    });
    forced
        .or_else(|| available.last().copied())
        .unwrap_or(Kernel::Scalar)
}

/// Whether this CPU supports AVX2. The standard library caches the answer, so this is a
/// single atomic load after the first call.
fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU (and OS) supports AVX-512F and AVX-512DQ, which the AVX-512 kernel
/// needs (`vpmullq` is AVX-512DQ). Cached like [`avx2_available`].
fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `C = A·B mod 2^64` with the kernel from [`Kernel::detect`].
///
/// `A` is `m × k`, `B` is `k × n` and `C` is `m × n`, all row-major and contiguous (see
/// the [module documentation](self)). All products and sums wrap modulo 2^64. `C` is
/// overwritten; when `k == 0` it is filled with zeros.
///
/// # Errors
/// [`Error::ShapeMismatch`] (op `"gemm_u64"`) if `a.len() != m * k`, `b.len() != k * n`
/// or `c.len() != m * n`. The error's `expected` is the matrix shape and its `found` the
/// buffer length.
pub fn gemm_u64(m: usize, k: usize, n: usize, a: &[u64], b: &[u64], c: &mut [u64]) -> Result<()> {
    gemm_u64_with(Kernel::detect(), m, k, n, a, b, c)
}

/// `C = A·B mod 2^64` with an explicitly chosen kernel; otherwise exactly [`gemm_u64`].
///
/// If `kernel` is not in [`Kernel::available`] (e.g. [`Kernel::Avx512`] on a CPU without
/// AVX-512, or [`Kernel::Avx2`] on another architecture) the portable [`Kernel::Scalar`]
/// runs instead, so the result is always the same.
///
/// # Errors
/// As [`gemm_u64`].
pub fn gemm_u64_with(
    kernel: Kernel,
    m: usize,
    k: usize,
    n: usize,
    a: &[u64],
    b: &[u64],
    c: &mut [u64],
) -> Result<()> {
    check_len("gemm_u64", &[m, k], a.len())?;
    check_len("gemm_u64", &[k, n], b.len())?;
    check_len("gemm_u64", &[m, n], c.len())?;
    gemm_u64_unchecked(kernel, m, k, n, a, b, c);
    Ok(())
}

/// [`gemm_u64_with`] without the shape checks, for callers that have already validated
/// the buffers (convolution, tensor ops).
///
/// It is still memory-safe: the kernels index with bounds checks (outside the hot loop)
/// and **panic** if a buffer is too short.
pub(crate) fn gemm_u64_unchecked(
    kernel: Kernel,
    m: usize,
    k: usize,
    n: usize,
    a: &[u64],
    b: &[u64],
    c: &mut [u64],
) {
    match kernel {
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512 if avx512_available() => {
            // SAFETY: `avx512::gemm_u64` is a safe function apart from its
            // `#[target_feature(enable = "avx512f,avx512dq")]`, and this arm runs only when
            // `avx512_available()` (the same check `Kernel::detect` and
            // `Kernel::available` use) has just seen AVX-512F and AVX-512DQ on this CPU.
            unsafe { avx512::gemm_u64(m, k, n, a, b, c) }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2 if avx2_available() => {
            // SAFETY: `avx2::gemm_u64` is a safe function apart from its
            // `#[target_feature(enable = "avx2")]`, and this arm runs only when
            // `avx2_available()` (the same check `Kernel::detect` and `Kernel::available`
            // use) has just seen AVX2 on this CPU.
            unsafe { avx2::gemm_u64(m, k, n, a, b, c) }
        }
        Kernel::Scalar | Kernel::Avx2 | Kernel::Avx512 => scalar::gemm_u64(m, k, n, a, b, c),
    }
}

/// Checks that a buffer of `found` elements holds a row-major tensor of shape `shape`.
/// A product that overflows `usize` never matches (no buffer can be that long).
fn check_len(op: &'static str, shape: &[usize], found: usize) -> Result<()> {
    let expected = shape
        .iter()
        .try_fold(1usize, |product, &extent| product.checked_mul(extent));
    if expected == Some(found) {
        Ok(())
    } else {
        Err(Error::ShapeMismatch {
            op,
            expected: shape.to_vec(),
            found: vec![found],
        })
    }
}

/// Says on the test output (not captured, so it shows even when the test passes) that a
/// kernel test did not run because this CPU lacks `feature`; CI machines have it.
#[cfg(test)]
pub(crate) fn report_skipped(kernel: &'static str, feature: &str) {
    use std::io::Write;
    // Once per kernel and process: a property test would otherwise say it per case.
    static REPORTED: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
    let mut reported = REPORTED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if reported.contains(&kernel) {
        return;
    }
    reported.push(kernel);
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: the {kernel} kernel is not tested on this CPU (no {feature}); its result was not checked"
    );
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::kernels::scalar::gemm_u64_naive;

    fn random_matrix(rng: &mut TestRng, len: usize) -> Vec<u64> {
        (0..len).map(|_| rng.random()).collect()
    }

    /// A tiny deterministic generator (splitmix64), enough for test data.
    struct TestRng(u64);

    impl TestRng {
        fn random(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
    }

    fn check_against_naive(kernel: Kernel, m: usize, k: usize, n: usize, seed: u64) {
        let mut rng = TestRng(seed);
        let a = random_matrix(&mut rng, m * k);
        let b = random_matrix(&mut rng, k * n);
        let mut expected = vec![0; m * n];
        gemm_u64_naive(m, k, n, &a, &b, &mut expected);
        // Garbage in C must be overwritten, not accumulated into.
        let mut found = random_matrix(&mut rng, m * n);
        gemm_u64_with(kernel, m, k, n, &a, &b, &mut found).expect("shapes are valid");
        assert!(
            expected == found,
            "{} kernel differs from naive at {m}x{k}x{n}",
            kernel.name()
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn every_kernel_matches_naive_on_ragged_shapes(
            m in 0usize..70, k in 0usize..70, n in 0usize..70, seed in any::<u64>()
        ) {
            for kernel in Kernel::available() {
                check_against_naive(kernel, m, k, n, seed);
            }
        }

        #[test]
        fn every_kernel_matches_naive_on_full_range_values(
            (m, k, n, a, b) in (1usize..14, 1usize..14, 1usize..14).prop_flat_map(|(m, k, n)| (
                Just(m), Just(k), Just(n),
                proptest::collection::vec(
                    prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(1 << 63),
                                Just(u32::MAX as u64), Just(1 << 32), any::<u64>()],
                    m * k),
                proptest::collection::vec(any::<u64>(), k * n),
            ))
        ) {
            let mut expected = vec![0; m * n];
            gemm_u64_naive(m, k, n, &a, &b, &mut expected);
            for kernel in Kernel::available() {
                let mut found = vec![0; m * n];
                gemm_u64_with(kernel, m, k, n, &a, &b, &mut found).expect("shapes are valid");
                prop_assert_eq!(&expected, &found, "{} kernel", kernel.name());
            }
        }
    }

    #[test]
    fn every_kernel_matches_naive_on_larger_shapes() {
        // Cross several blocking boundaries: KC = 256, MC = 72, NC = 2048, ragged tiles of
        // MR = 6 / NR = 4 (scalar, AVX2) and MR = 8 / NR = 16 (AVX-512).
        for (m, k, n) in [
            (130, 300, 75),
            (73, 513, 9),
            (1, 700, 1),
            (7, 1, 257),
            (200, 3, 2),
            (8, 256, 16),
            (16, 512, 32),
            (9, 257, 17),
            (81, 40, 2065),
        ] {
            for kernel in Kernel::available() {
                check_against_naive(kernel, m, k, n, (m * k * n) as u64);
            }
        }
    }

    #[test]
    fn zero_depth_fills_output_with_zeros() {
        for kernel in Kernel::available() {
            let mut c = vec![7; 6];
            gemm_u64_with(kernel, 2, 0, 3, &[], &[], &mut c).expect("shapes are valid");
            assert_eq!(c, vec![0; 6]);
        }
    }

    #[test]
    fn wrong_buffer_lengths_are_rejected() {
        let mut c = vec![0; 6];
        let error = gemm_u64(2, 3, 3, &[0; 5], &[0; 9], &mut c).expect_err("a is too short");
        assert!(matches!(
            error,
            Error::ShapeMismatch { op: "gemm_u64", ref expected, ref found }
                if expected == &[2, 3] && found == &[5]
        ));
        assert!(gemm_u64(2, 3, 3, &[0; 6], &[0; 8], &mut c).is_err());
        assert!(gemm_u64(2, 3, 3, &[0; 6], &[0; 9], &mut c[..5]).is_err());
        // A shape whose product overflows usize never matches.
        assert!(gemm_u64(usize::MAX, 2, 0, &[], &[], &mut []).is_err());
    }

    #[test]
    fn selection_honours_environment_override() {
        use Kernel::{Avx2, Avx512, Scalar};
        let all = [Scalar, Avx2, Avx512];
        let avx2_only = [Scalar, Avx2];
        let portable = [Scalar];
        assert_eq!(select_kernel(None, &all), Avx512);
        assert_eq!(select_kernel(None, &avx2_only), Avx2);
        assert_eq!(select_kernel(None, &portable), Scalar);
        assert_eq!(select_kernel(Some("scalar"), &all), Scalar);
        assert_eq!(select_kernel(Some("SCALAR"), &avx2_only), Scalar);
        assert_eq!(select_kernel(Some("avx2"), &all), Avx2);
        assert_eq!(select_kernel(Some("avx2"), &portable), Scalar);
        assert_eq!(select_kernel(Some("avx512"), &all), Avx512);
        assert_eq!(select_kernel(Some("avx512"), &avx2_only), Avx2);
        assert_eq!(select_kernel(Some("nonsense"), &all), Avx512);
        assert_eq!(select_kernel(Some(""), &avx2_only), Avx2);
        assert_eq!(select_kernel(None, &[]), Scalar);
    }

    #[test]
    fn detected_kernel_is_available() {
        let available = Kernel::available();
        assert!(available.contains(&Kernel::detect()));
        assert_eq!(available[0], Kernel::Scalar);
        // `VEIL_KERNEL=avx2` (say) forces that kernel where it is available; otherwise
        // (unset, unknown or unavailable) the fastest one is chosen.
        let requested = std::env::var("VEIL_KERNEL").ok();
        let forced = available.iter().find(|kernel| {
            requested
                .as_deref()
                .is_some_and(|name| kernel.name().eq_ignore_ascii_case(name))
        });
        match forced {
            Some(&kernel) => assert_eq!(Kernel::detect(), kernel),
            None => assert_eq!(Some(&Kernel::detect()), available.last()),
        }
        assert_eq!(Kernel::Scalar.name(), "scalar");
        assert_eq!(Kernel::Avx2.name(), "avx2");
        assert_eq!(Kernel::Avx512.name(), "avx512");
    }
}
