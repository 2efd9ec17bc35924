//! The light-weight SVD of AsymmetricML (Algorithm 1): alternating power iteration with
//! deflation, stopped at the smallest rank that keeps a given fraction of the energy.
//!
//! A sample's activation, flattened to `X ∈ R^{c×hw}`, is split into `X_low = Σ_j u_j v_jᵀ`
//! (u_j ∈ R^c: how the channels combine; v_j ∈ R^hw: the j-th "principal channel" as a
//! spatial map) and the residual `X_res = X − X_low`. Component j starts from `v_0` and
//! runs T iterations of step 4, `u = X v/‖v‖²`, `v = Xᵀ u/‖u‖²`, then deflates
//! (step 5, `X ← X − u vᵀ`): `(2T + 1)·c·hw` multiply-accumulates per component, the
//! paper's cost, plus one `c·hw` pass for the exact residual energy at the end. Components are added while `‖X_res‖²/‖X‖² > 1 − energy`.
//!
//! Starting vectors: component j starts from the previous split layer's j-th map `v_j`
//! (the warm start; the caller resizes it to this layer's spatial size), else the
//! channel sum of X for the first component (the Python reference's mean) and the
//! residual's largest row afterwards (the SGX code's row start).
//!
//! When the threshold needs all `c` components the split is exact instead: `U = I`,
//! `V = X`, residual zero (a one-channel input is always kept whole by the trusted side).

use crate::kernels::dot;

/// Added to squared norms before dividing (the reference code's `eps`).
const EPSILON: f32 = 1e-6;

/// How to split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SvdOptions {
    /// The fraction of ‖X‖² the trusted part must keep (0.97: Asym1; 0.80: Asym2).
    pub energy: f64,
    /// Power iterations per component (T; the SGX code uses 1).
    pub iterations: usize,
}

/// One sample's low-rank part: `X_low = U · V`. Secret (the trusted side's): its `Debug`
/// prints the shape only.
#[derive(Clone, PartialEq)]
pub struct LowRank {
    /// c.
    pub channels: usize,
    /// hw.
    pub positions: usize,
    /// r.
    pub rank: usize,
    /// The exact split (`U = I`, `V = X`): the trusted side keeps everything.
    pub identity: bool,
    /// U, `c × r` row-major (empty when `identity`).
    pub u: Vec<f32>,
    /// V, `r × hw` row-major: the principal channels as spatial maps.
    pub v: Vec<f32>,
}

impl std::fmt::Debug for LowRank {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LowRank")
            .field("channels", &self.channels)
            .field("positions", &self.positions)
            .field("rank", &self.rank)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

/// A sample split into its trusted low-rank part and its untrusted residual. Its `Debug`
/// prints shapes and the energy figure only.
#[derive(Clone)]
pub struct SplitSample {
    /// The trusted part.
    pub low_rank: LowRank,
    /// `X − U·V`, `c × hw`: what the worker sees.
    pub residual: Vec<f32>,
    /// `‖X_res‖² / ‖X‖²` (0 for an all-zero X): the energy left to the worker.
    pub residual_energy: f64,
    /// The multiply-accumulates the split cost.
    pub macs: u64,
}

impl std::fmt::Debug for SplitSample {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SplitSample")
            .field("low_rank", &self.low_rank)
            .field("residual_values", &self.residual.len())
            .field("residual_energy", &self.residual_energy)
            .field("macs", &self.macs)
            .finish()
    }
}

/// ‖x‖²: f32 sums per row of `positions` (vectorised), added in f64.
fn energy(x: &[f32], positions: usize) -> f64 {
    x.chunks(positions.max(1))
        .map(|row| f64::from(dot(row, row)))
        .sum()
}

/// Splits one sample `x` (`channels × positions`). `warm` holds starting maps (each of
/// `positions` values) for the first components.
pub fn light_svd(
    x: &[f32],
    channels: usize,
    positions: usize,
    options: &SvdOptions,
    warm: &[Vec<f32>],
) -> SplitSample {
    let mut macs = (channels * positions) as u64;
    let total = energy(x, positions);
    let exact = |macs| SplitSample {
        low_rank: LowRank {
            channels,
            positions,
            rank: channels,
            identity: true,
            u: Vec::new(),
            v: x.to_vec(),
        },
        residual: vec![0.0; x.len()],
        residual_energy: 0.0,
        macs,
    };
    if total == 0.0 {
        return SplitSample {
            low_rank: LowRank {
                channels,
                positions,
                rank: 0,
                identity: false,
                u: Vec::new(),
                v: Vec::new(),
            },
            residual: x.to_vec(),
            residual_energy: 0.0,
            macs,
        };
    }
    let allowed = (1.0 - options.energy).max(0.0) * total;
    let mut residual = x.to_vec();
    let mut remaining = total;
    let mut components: Vec<(Vec<f32>, Vec<f32>)> = Vec::new();
    loop {
        while remaining > allowed {
            if components.len() + 1 >= channels {
                // c components (or c − 1 and then the last): the exact split is cheaper.
                return exact(macs);
            }
            let index = components.len();
            let mut v = match warm.get(index) {
                Some(map) if map.len() == positions => map.clone(),
                _ if index == 0 => {
                    let mut sum = vec![0f32; positions];
                    for c in 0..channels {
                        for (total, &value) in sum
                            .iter_mut()
                            .zip(&residual[c * positions..(c + 1) * positions])
                        {
                            *total += value;
                        }
                    }
                    macs += (channels * positions) as u64;
                    sum
                }
                _ => {
                    let norms: Vec<f32> = (0..channels)
                        .map(|c| {
                            let row = &residual[c * positions..(c + 1) * positions];
                            dot(row, row)
                        })
                        .collect();
                    macs += (channels * positions) as u64;
                    let largest = (0..channels)
                        .max_by(|&a, &b| norms[a].total_cmp(&norms[b]))
                        .unwrap_or(0);
                    residual[largest * positions..(largest + 1) * positions].to_vec()
                }
            };
            let mut u = vec![0f32; channels];
            let mut u_norm = 0f32;
            // Algorithm 1, step 4, T times.
            for _ in 0..options.iterations.max(1) {
                let v_norm = dot(&v, &v) + EPSILON;
                for c in 0..channels {
                    u[c] = dot(&residual[c * positions..(c + 1) * positions], &v) / v_norm;
                }
                u_norm = dot(&u, &u) + EPSILON;
                v.iter_mut().for_each(|value| *value = 0.0);
                for c in 0..channels {
                    let scale = u[c] / u_norm;
                    for (out, &value) in v
                        .iter_mut()
                        .zip(&residual[c * positions..(c + 1) * positions])
                    {
                        *out += scale * value;
                    }
                }
                macs += 2 * (channels * positions) as u64;
            }
            // Step 5: deflation. With v = Xᵀu/‖u‖², ‖X − u vᵀ‖² = ‖X‖² − ‖u‖²‖v‖²: the
            // residual's energy needs no pass of its own.
            for c in 0..channels {
                let row = &mut residual[c * positions..(c + 1) * positions];
                for (value, &map) in row.iter_mut().zip(&v) {
                    *value -= u[c] * map;
                }
            }
            macs += (channels * positions) as u64;
            let taken = f64::from(dot(&v, &v)) * f64::from(u_norm + EPSILON);
            remaining = (remaining - taken).max(0.0);
            components.push((u, v));
        }
        // The exact residual energy, once: what is reported, and a guard against the
        // running figure's rounding.
        remaining = energy(&residual, positions);
        macs += (channels * positions) as u64;
        if remaining <= allowed {
            break;
        }
    }
    let rank = components.len();
    let mut u_matrix = vec![0f32; channels * rank];
    let mut v_matrix = Vec::with_capacity(rank * positions);
    for (j, (u, v)) in components.into_iter().enumerate() {
        for c in 0..channels {
            u_matrix[c * rank + j] = u[c];
        }
        v_matrix.extend_from_slice(&v);
    }
    SplitSample {
        low_rank: LowRank {
            channels,
            positions,
            rank,
            identity: false,
            u: u_matrix,
            v: v_matrix,
        },
        residual,
        residual_energy: remaining / total,
        macs,
    }
}

/// Whether splitting a layer can save the trusted side work: one component's SVD
/// (`(2T + 1)·c·hw` MACs: T iterations and the deflation) must cost
/// less than convolving that component (`out·k²·hw'`). A layer where it cannot (the final
/// linear layer: `hw' = 1`) is kept whole by the trusted side, which costs it less and
/// shows the worker nothing.
pub fn split_pays(geometry: &crate::kernels::ConvGeometry, iterations: usize) -> bool {
    let svd = (2 * iterations.max(1) + 1) * geometry.channels * geometry.positions();
    let conv = geometry.out_channels * geometry.taps() * geometry.output_positions();
    svd < conv
}

/// The exact split of `x` (`U = I`, `V = X`, no residual), at no cost.
pub fn keep_whole(x: &[f32], channels: usize, positions: usize) -> SplitSample {
    SplitSample {
        low_rank: LowRank {
            channels,
            positions,
            rank: channels,
            identity: true,
            u: Vec::new(),
            v: x.to_vec(),
        },
        residual: vec![0.0; x.len()],
        residual_energy: 0.0,
        macs: 0,
    }
}

/// A map of `height × width` resized for the next layer: unchanged at the same size,
/// 2×2-average-pooled when the next layer is half the size, else `None`.
pub fn resize_map(
    map: &[f32],
    height: usize,
    width: usize,
    next: (usize, usize),
) -> Option<Vec<f32>> {
    if (height, width) == next {
        return Some(map.to_vec());
    }
    if (height / 2, width / 2) == next {
        let (next_height, next_width) = next;
        let mut pooled = vec![0f32; next_height * next_width];
        for y in 0..next_height {
            for x in 0..next_width {
                let at = |dy: usize, dx: usize| map[(2 * y + dy) * width + 2 * x + dx];
                pooled[y * next_width + x] = 0.25 * (at(0, 0) + at(0, 1) + at(1, 0) + at(1, 1));
            }
        }
        return Some(pooled);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_core::sampling::SplitMix64;

    #[test]
    fn the_split_reconstructs_the_input_and_keeps_the_asked_energy() {
        let mut random = SplitMix64::new(veil_core::sampling::test_seed().value());
        let (channels, positions) = (12, 49);
        // A nearly rank-2 activation, non-negative like a ReLU output, plus small noise.
        let a = random.normal_vec(channels, 1.0);
        let b = random.normal_vec(channels, 1.0);
        let p = random.normal_vec(positions, 1.0);
        let q = random.normal_vec(positions, 1.0);
        let noise = random.normal_vec(channels * positions, 0.05);
        let x: Vec<f32> = (0..channels * positions)
            .map(|i| {
                let (c, s) = (i / positions, i % positions);
                (3.0 * a[c] * p[s] + b[c] * q[s] + noise[i]).max(0.0)
            })
            .collect();
        for energy in [0.8, 0.97] {
            let options = SvdOptions {
                energy,
                iterations: 1,
            };
            let split = light_svd(&x, channels, positions, &options, &[]);
            assert!(split.residual_energy <= 1.0 - energy + 1e-9);
            assert!(
                split.low_rank.rank < channels,
                "rank {}",
                split.low_rank.rank
            );
            let low = &split.low_rank;
            for (i, &value) in x.iter().enumerate() {
                let (c, s) = (i / positions, i % positions);
                let product: f32 = (0..low.rank)
                    .map(|j| low.u[c * low.rank + j] * low.v[j * positions + s])
                    .sum();
                assert!((product + split.residual[i] - value).abs() < 1e-4);
            }
        }
        let full = light_svd(
            &x,
            channels,
            positions,
            &SvdOptions {
                energy: 1.0,
                iterations: 1,
            },
            &[],
        );
        assert!(full.low_rank.identity && full.residual.iter().all(|&value| value == 0.0));
    }
}
