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
//! [`batch_svd`] is the same algorithm over one orthonormal basis for a whole batch
//! ([`Basis::Batch`]), each sample keeping the prefix of it that holds its own energy
//! fraction.
//!
//! When the threshold needs all `c` components the split is exact instead: `U = I`,
//! `V = X`, residual zero (a one-channel input is always kept whole by the trusted side).

use crate::kernels::{dot, matmul_accumulate, matmul_transposed_b_accumulate};

/// Added to squared norms before dividing (the reference code's `eps`).
const EPSILON: f32 = 1e-6;

/// Whose principal channels a layer keeps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Basis {
    /// Each sample its own (AsymmetricML's Algorithm 1, [`light_svd`]).
    #[default]
    Sample,
    /// One orthonormal channel basis for the whole batch, each sample keeping the
    /// shortest prefix of it that holds its energy fraction ([`batch_svd`]): the weight
    /// combination `Uᵀ·W` is paid once per batch instead of once per sample.
    Batch,
    /// Each sample its own, inside a per-layer channel subspace calibrated on the model
    /// owner's images (inference; [`crate::subspace`]): the weights are combined with the
    /// subspace once per model, and each sample's combination costs `m/c` of
    /// [`Basis::Sample`]'s.
    Subspace,
}

impl Basis {
    /// `sample` or `batch`.
    pub fn name(self) -> &'static str {
        match self {
            Basis::Sample => "sample",
            Basis::Batch => "batch",
            Basis::Subspace => "subspace",
        }
    }

    /// The basis called `name`.
    pub fn from_name(name: &str) -> Option<Basis> {
        [Basis::Sample, Basis::Batch, Basis::Subspace]
            .into_iter()
            .find(|basis| basis.name() == name)
    }
}

/// How to split.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SvdOptions {
    /// The fraction of ‖X‖² the trusted part must keep (0.97: Asym1; 0.80: Asym2), in
    /// every sample.
    pub energy: f64,
    /// Power iterations per component (T; the SGX code uses 1).
    pub iterations: usize,
    /// Per sample or per batch.
    pub basis: Basis,
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
    /// U, `c × r` row-major (empty when `identity`; the `r − confined` unconfined columns
    /// when some are confined).
    pub u: Vec<f32>,
    /// V, `r × hw` row-major: the principal channels as spatial maps.
    pub v: Vec<f32>,
    /// The components confined to the layer's calibrated subspace
    /// ([`crate::subspace::subspace_svd`]): the first `confined` rows of V. U holds the
    /// other `rank − confined` columns (`c × (rank − confined)`).
    pub confined: usize,
    /// The confined components' combinations in the subspace's coordinates, `m × confined`
    /// row-major (their U columns are `P·coordinates`).
    pub coordinates: Vec<f32>,
}

impl std::fmt::Debug for LowRank {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("LowRank")
            .field("channels", &self.channels)
            .field("positions", &self.positions)
            .field("rank", &self.rank)
            .field("identity", &self.identity)
            .field("confined", &self.confined)
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
    power_split(x, channels, positions, options, warm, None)
}

/// [`light_svd`], and with `within = (P, threshold)` each component's `u` confined to P's
/// span (`u ← P·Pᵀ·u`: `c·m` MACs an iteration to test u, `c·m` more to confine it)
/// whenever the confined direction keeps at least `threshold` of `‖u‖²` ([`crate::subspace::subspace_svd`]); the
/// confined components come first in V, their combinations in P's coordinates.
pub(crate) fn power_split(
    x: &[f32],
    channels: usize,
    positions: usize,
    options: &SvdOptions,
    warm: &[Vec<f32>],
    within: Option<(&crate::subspace::Subspace, f32)>,
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
            confined: 0,
            coordinates: Vec::new(),
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
                confined: 0,
                coordinates: Vec::new(),
            },
            residual: x.to_vec(),
            residual_energy: 0.0,
            macs,
        };
    }
    let allowed = (1.0 - options.energy).max(0.0) * total;
    let mut residual = x.to_vec();
    let mut remaining = total;
    // Per component: u (c values), its coordinates in `within` (m values, or none) and v.
    let mut components: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = Vec::new();
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
            let mut coordinates = Vec::new();
            let mut u_norm = 0f32;
            // Algorithm 1, step 4, T times.
            for _ in 0..options.iterations.max(1) {
                let v_norm = dot(&v, &v) + EPSILON;
                for c in 0..channels {
                    u[c] = dot(&residual[c * positions..(c + 1) * positions], &v) / v_norm;
                }
                coordinates.clear();
                if let Some((subspace, threshold)) = within {
                    // P·(Pᵀ·u): the nearest combination inside the subspace, taken when it
                    // keeps enough of u (what it keeps of u bounds what it keeps of the
                    // energy the component would take). Both products are row operations
                    // on P (`c × m`), along m contiguous values.
                    let m = subspace.dimension;
                    let mut inside = vec![0f32; m];
                    macs += matmul_accumulate(1, channels, m, &u, &subspace.basis, &mut inside);
                    if dot(&inside, &inside) >= threshold * dot(&u, &u) {
                        u.iter_mut().for_each(|value| *value = 0.0);
                        macs += matmul_transposed_b_accumulate(
                            1,
                            m,
                            channels,
                            &inside,
                            &subspace.basis,
                            &mut u,
                        );
                        coordinates = inside;
                    }
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
            components.push((u, coordinates, v));
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
    // The confined components first: their coordinates, then the others' U.
    let (confined, free): (Vec<_>, Vec<_>) = components
        .into_iter()
        .partition(|(_, coordinates, _)| !coordinates.is_empty());
    let dimension = within.map_or(0, |(subspace, _)| subspace.dimension);
    let mut coordinate_matrix = vec![0f32; dimension * confined.len()];
    for (j, (_, coordinates, _)) in confined.iter().enumerate() {
        for (row, &value) in coordinates.iter().enumerate() {
            coordinate_matrix[row * confined.len() + j] = value;
        }
    }
    let mut u_matrix = vec![0f32; channels * free.len()];
    for (j, (u, _, _)) in free.iter().enumerate() {
        for (row, &value) in u.iter().enumerate() {
            u_matrix[row * free.len() + j] = value;
        }
    }
    let mut v_matrix = Vec::with_capacity(rank * positions);
    for (_, _, v) in confined.iter().chain(&free) {
        v_matrix.extend_from_slice(v);
    }
    SplitSample {
        low_rank: LowRank {
            channels,
            positions,
            rank,
            identity: false,
            u: u_matrix,
            v: v_matrix,
            confined: confined.len(),
            coordinates: coordinate_matrix,
        },
        residual,
        residual_energy: remaining / total,
        macs,
    }
}

/// A batch split over one shared channel basis ([`Basis::Batch`]).
#[derive(Clone)]
pub struct BatchSplit {
    /// U, `c × rank` row-major with orthonormal columns: the batch's principal channel
    /// combinations, strongest first. Sample s keeps the first `r_s` of them.
    pub basis: Vec<f32>,
    /// The basis's columns: the largest `r_s` of the samples split against it.
    pub rank: usize,
    /// Per sample: its prefix of U with its maps `V_s = U_{:r_s}ᵀ·X_s`, the residual,
    /// the energy left to the worker, and the MACs its own passes cost. A sample that
    /// needs c − 1 or more components is kept whole (`identity`) instead.
    pub samples: Vec<SplitSample>,
    /// MACs the batch shares (orthogonalising and normalising the basis).
    pub shared_macs: u64,
}

impl BatchSplit {
    /// The basis's columns, each a unit vector of `c` values: the next batch's warm start
    /// at the same layer.
    pub fn columns(&self) -> Vec<Vec<f32>> {
        let channels = self.basis.len() / self.rank.max(1);
        (0..self.rank)
            .map(|j| {
                (0..channels)
                    .map(|channel| self.basis[channel * self.rank + j])
                    .collect()
            })
            .collect()
    }
}

impl std::fmt::Debug for BatchSplit {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BatchSplit")
            .field("rank", &self.rank)
            .field("samples", &self.samples)
            .finish_non_exhaustive()
    }
}

/// Removes from `u` its components along the (orthonormal) `basis`, then scales it to
/// unit length; `false` when nothing is left of it.
fn orthonormalise(u: &mut [f32], basis: &[Vec<f32>]) -> bool {
    // Twice: one classical Gram-Schmidt pass loses orthogonality to rounding.
    for _ in 0..2 {
        for column in basis {
            let along = dot(u, column);
            for (value, &direction) in u.iter_mut().zip(column) {
                *value -= along * direction;
            }
        }
    }
    let norm = dot(u, u).sqrt();
    if norm.is_nan() || norm <= 1e-12 {
        return false;
    }
    u.iter_mut().for_each(|value| *value /= norm);
    true
}

/// `Σ_c u[c]·x[c]`: the map a channel combination `u` makes of `x` (`c × positions`).
fn combine_channels(x: &[f32], u: &[f32], positions: usize) -> Vec<f32> {
    let mut map = vec![0f32; positions];
    for (row, &weight) in x.chunks(positions).zip(u) {
        for (out, &value) in map.iter_mut().zip(row) {
            *out += weight * value;
        }
    }
    map
}

/// Splits a batch (`batch × channels × positions`) over one orthonormal channel basis,
/// built component by component from the samples that still need one: each component
/// starts from `warm[j]` (a unit vector of `channels` values: the same layer's j-th
/// basis vector in the previous batch) or, without one, from the all-ones combination
/// (the first) or the channel with the most residual energy (the others), and runs T
/// power iterations on `Σ_s R_s R_sᵀ` over those samples, where `R_s` is sample s's
/// residual so far. Each sample then takes its projection `p = R_sᵀ u` (u is unit and
/// orthogonal to the earlier components, so `‖R_s‖²` falls by exactly `‖p‖²`) and
/// deflates; a sample stops taking components, and leaves the iteration, once its
/// residual holds at most `1 − energy` of its energy, checked exactly. Per component
/// and sample this is `(2T + 2)·c·hw` MACs, as [`light_svd`]'s `(2T + 1)·c·hw` plus its
/// start; every sample gets the same energy guarantee as there.
pub fn batch_svd(
    xs: &[f32],
    batch: usize,
    channels: usize,
    positions: usize,
    options: &SvdOptions,
    warm: &[Vec<f32>],
) -> BatchSplit {
    let size = channels * positions;
    debug_assert_eq!(xs.len(), batch * size);
    let pass = size as u64;
    let mut sample_macs = vec![pass; batch];
    let totals: Vec<f64> = xs
        .chunks(size.max(1))
        .map(|x| energy(x, positions))
        .collect();
    let allowed: Vec<f64> = totals
        .iter()
        .map(|total| (1.0 - options.energy).max(0.0) * total)
        .collect();
    let mut residual = xs.to_vec();
    let mut remaining = totals.clone();
    let mut maps: Vec<Vec<f32>> = vec![Vec::new(); batch];
    let mut ranks = vec![0usize; batch];
    let mut whole = vec![false; batch];
    let mut active: Vec<usize> = (0..batch)
        .filter(|&sample| totals[sample] > 0.0 && totals[sample] > allowed[sample])
        .collect();
    let mut components: Vec<Vec<f32>> = Vec::new();
    let mut shared_macs = 0u64;
    while !active.is_empty() {
        if components.len() + 1 >= channels {
            // c − 1 components would be needed: keeping the sample whole is cheaper.
            for &sample in &active {
                whole[sample] = true;
            }
            break;
        }
        let index = components.len();
        let mut u = match warm.get(index) {
            Some(start) if start.len() == channels => start.clone(),
            _ if index == 0 => vec![1.0; channels],
            _ => {
                let mut norms = vec![0f64; channels];
                for &sample in &active {
                    for (channel, norm) in norms.iter_mut().enumerate() {
                        let start = sample * size + channel * positions;
                        let values = &residual[start..start + positions];
                        *norm += f64::from(dot(values, values));
                    }
                    sample_macs[sample] += pass;
                }
                let largest = (0..channels)
                    .max_by(|&a, &b| norms[a].total_cmp(&norms[b]))
                    .unwrap_or(0);
                let mut unit = vec![0f32; channels];
                unit[largest] = 1.0;
                unit
            }
        };
        shared_macs += (2 * (components.len() + 1) * channels) as u64;
        if !orthonormalise(&mut u, &components) {
            // The start lies in the span already taken: any direction outside it will do
            // (one exists: fewer than c − 1 components are taken).
            if let Some(free) = (0..channels).find_map(|channel| {
                let mut unit = vec![0f32; channels];
                unit[channel] = 1.0;
                orthonormalise(&mut unit, &components).then_some(unit)
            }) {
                u = free;
            }
        }
        // T power iterations: u ← Σ_s R_s (R_sᵀ u), re-orthonormalised.
        for _ in 0..options.iterations.max(1) {
            let mut next = vec![0f32; channels];
            for &sample in &active {
                let own = &residual[sample * size..(sample + 1) * size];
                let map = combine_channels(own, &u, positions);
                for (total, row) in next.iter_mut().zip(own.chunks(positions)) {
                    *total += dot(row, &map);
                }
                sample_macs[sample] += 2 * pass;
            }
            shared_macs += (2 * (components.len() + 1) * channels) as u64;
            if orthonormalise(&mut next, &components) {
                u = next;
            }
        }
        // Projection and deflation, sample by sample.
        let mut still = Vec::with_capacity(active.len());
        for &sample in &active {
            let own = &mut residual[sample * size..(sample + 1) * size];
            let map = combine_channels(own, &u, positions);
            for (row, &weight) in own.chunks_mut(positions).zip(&u) {
                for (value, &along) in row.iter_mut().zip(&map) {
                    *value -= weight * along;
                }
            }
            sample_macs[sample] += 2 * pass;
            remaining[sample] = (remaining[sample] - f64::from(dot(&map, &map))).max(0.0);
            maps[sample].extend_from_slice(&map);
            ranks[sample] += 1;
            if remaining[sample] <= allowed[sample] {
                // The exact residual energy: what is reported, and a guard against the
                // running figure's rounding.
                remaining[sample] =
                    energy(&residual[sample * size..(sample + 1) * size], positions);
                sample_macs[sample] += pass;
            }
            if remaining[sample] > allowed[sample] {
                still.push(sample);
            }
        }
        components.push(u);
        active = still;
    }
    let rank = (0..batch)
        .filter(|&sample| !whole[sample])
        .map(|sample| ranks[sample])
        .max()
        .unwrap_or(0);
    let mut basis = vec![0f32; channels * rank];
    for (j, column) in components.iter().take(rank).enumerate() {
        for channel in 0..channels {
            basis[channel * rank + j] = column[channel];
        }
    }
    let samples = (0..batch)
        .map(|sample| {
            let x = &xs[sample * size..(sample + 1) * size];
            if whole[sample] {
                return SplitSample {
                    macs: sample_macs[sample],
                    ..keep_whole(x, channels, positions)
                };
            }
            let own = ranks[sample];
            let mut u = vec![0f32; channels * own];
            for channel in 0..channels {
                u[channel * own..(channel + 1) * own]
                    .copy_from_slice(&basis[channel * rank..channel * rank + own]);
            }
            SplitSample {
                low_rank: LowRank {
                    channels,
                    positions,
                    rank: own,
                    identity: false,
                    u,
                    v: std::mem::take(&mut maps[sample]),
                    confined: 0,
                    coordinates: Vec::new(),
                },
                residual: residual[sample * size..(sample + 1) * size].to_vec(),
                residual_energy: if totals[sample] > 0.0 {
                    remaining[sample] / totals[sample]
                } else {
                    0.0
                },
                macs: sample_macs[sample],
            }
        })
        .collect();
    BatchSplit {
        basis,
        rank,
        samples,
        shared_macs,
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
            confined: 0,
            coordinates: Vec::new(),
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
                basis: Basis::Sample,
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
                basis: Basis::Sample,
            },
            &[],
        );
        assert!(full.low_rank.identity && full.residual.iter().all(|&value| value == 0.0));
    }

    #[test]
    fn a_batch_basis_is_orthonormal_and_every_sample_keeps_the_asked_energy() {
        let mut random = SplitMix64::new(veil_core::sampling::test_seed().value() ^ 3);
        let (channels, positions, batch) = (10, 36, 6);
        // Samples sharing two channel directions with their own weights, one with a
        // direction of its own, an all-zero one, and pure noise (which needs every
        // channel and is kept whole).
        let shared = [
            random.normal_vec(channels, 1.0),
            random.normal_vec(channels, 1.0),
        ];
        let own = random.normal_vec(channels, 1.0);
        let mut xs = Vec::new();
        for sample in 0..batch {
            let maps: Vec<Vec<f32>> = (0..3).map(|_| random.normal_vec(positions, 1.0)).collect();
            let noise = random.normal_vec(channels * positions, 0.02);
            for c in 0..channels {
                for s in 0..positions {
                    let value = match sample {
                        3 => 0.0,
                        4 => noise[c * positions + s] * 50.0,
                        _ => {
                            2.0 * shared[0][c] * maps[0][s]
                                + shared[1][c] * maps[1][s]
                                + if sample == 2 {
                                    3.0 * own[c] * maps[2][s]
                                } else {
                                    0.0
                                }
                                + noise[c * positions + s]
                        }
                    };
                    xs.push(value);
                }
            }
        }
        let mut warm: Vec<Vec<f32>> = Vec::new();
        for energy in [0.8, 0.8, 0.97, 0.97] {
            let options = SvdOptions {
                energy,
                iterations: 1,
                basis: Basis::Batch,
            };
            let split = batch_svd(&xs, batch, channels, positions, &options, &warm);
            assert_eq!(split.samples.len(), batch);
            let rank = split.rank;
            assert!(rank < channels, "rank {rank}");
            for i in 0..rank {
                for j in 0..rank {
                    let product: f32 = (0..channels)
                        .map(|c| split.basis[c * rank + i] * split.basis[c * rank + j])
                        .sum();
                    let expected = if i == j { 1.0 } else { 0.0 };
                    assert!(
                        (product - expected).abs() < 1e-4,
                        "UᵀU[{i},{j}] = {product}"
                    );
                }
            }
            for (sample, part) in split.samples.iter().enumerate() {
                let x = &xs[sample * channels * positions..(sample + 1) * channels * positions];
                let low = &part.low_rank;
                assert!(
                    part.residual_energy <= 1.0 - energy + 1e-9,
                    "sample {sample}"
                );
                if low.identity {
                    assert_eq!(sample, 4, "only the noise needs every channel");
                    assert!(part.residual.iter().all(|&value| value == 0.0));
                    continue;
                }
                // The sample's U is a prefix of the batch's, and U·V + residual = X.
                for c in 0..channels {
                    for j in 0..low.rank {
                        assert_eq!(low.u[c * low.rank + j], split.basis[c * rank + j]);
                    }
                }
                for (i, &value) in x.iter().enumerate() {
                    let (c, s) = (i / positions, i % positions);
                    let product: f32 = (0..low.rank)
                        .map(|j| low.u[c * low.rank + j] * low.v[j * positions + s])
                        .sum();
                    assert!((product + part.residual[i] - value).abs() < 1e-3);
                }
            }
            assert_eq!(
                split.samples[3].low_rank.rank, 0,
                "the zero sample keeps nothing"
            );
            // No sample takes more of the basis than it has.
            assert!(
                split
                    .samples
                    .iter()
                    .all(|part| part.low_rank.identity || part.low_rank.rank <= rank)
            );
            // The next batch warm-starts from this basis, as the split executor does.
            warm = split.columns();
        }
    }
}
