//! Per-sample splits inside a calibrated channel subspace ([`crate::svd::Basis::Subspace`]), for
//! inference.
//!
//! The per-sample split ([`light_svd`]) pays the weight combination `Uᵀ·W`
//! (`r·c·out·k²` MACs) once per sample, which in a layer with few positions next to its
//! channels (hw = 196, c = 256) costs more than the low-rank convolution itself. But a
//! layer's inputs do not use every direction of its channel space: after training, the
//! leading `m` eigenvectors `P` (`c × m`) of `Σ X Xᵀ` over the model owner's images hold
//! nearly all of their energy. So the weights are combined with `P` once per model
//! (`W_P = Pᵀ·W`, offline), and each sample runs the same light-weight SVD with each
//! component's channel combination `u` confined to P's span (`u ← P·Pᵀ·u`, at most
//! `2·c·m` MACs an iteration, next to the iteration's `2·c·hw`) whenever that pays: a confined
//! component's combination is `Ũᵀ·W_P` (`m·out·k²` MACs, not `c·out·k²`), and since it
//! keeps at least `‖P·Pᵀ·u‖²/‖u‖²` of the energy the free component would take (exactly
//! so for a singular vector), it is taken when that fraction is at least the ratio of the
//! two components' costs ([`confinement_threshold`]); otherwise the component stays free,
//! as in [`light_svd`]. So a sample's U is `[P·Ũ | U_free]`, and the trusted side convolves
//! V with `[Ũᵀ·W_P | U_freeᵀ·W]`. The deflation, the residual `X − U·V` that the worker
//! convolves and its energy are exactly those of the per-sample split, and so is the
//! bound: each sample's residual holds at most `1 − energy` of its own energy, checked
//! exactly. [`calibrate`] picks, per layer, the `m` (or none) that costs the trusted side
//! least on the calibration images. Training is not offered: its weights change every
//! step, and `W_P` with them.
//!
//! P is computed from the model owner's images and held by the trusted side with the
//! weights; it carries nothing about a client's input.

use crate::kernels::{ConvGeometry, dot};
use crate::network::{self, Executor, LocalExecutor, Model};
use crate::svd::{LowRank, SplitSample, SvdOptions, light_svd, power_split, split_pays};
use crate::{Error, Result};

/// [`calibrate`] tries every multiple of `c / CANDIDATE_STEPS` below c as the subspace's
/// dimension.
pub const CANDIDATE_STEPS: usize = 16;

/// A layer's calibrated channel subspace: `dimension` orthonormal directions of its `c`
/// channels, `basis` `c × m` row-major, strongest first. Model data (its `Debug` prints
/// the shape only).
#[derive(Clone, PartialEq)]
pub struct Subspace {
    /// c.
    pub channels: usize,
    /// m.
    pub dimension: usize,
    /// P, `c × m` row-major, orthonormal columns.
    pub basis: Vec<f32>,
}

impl std::fmt::Debug for Subspace {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Subspace")
            .field("channels", &self.channels)
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

/// The eigenvalues (largest first) and unit eigenvectors (`vectors[j]`, n values each) of
/// the symmetric `n × n` matrix `matrix`, by cyclic Jacobi rotations in f64.
pub fn symmetric_eigen(mut matrix: Vec<f64>, n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    debug_assert_eq!(matrix.len(), n * n);
    let mut vectors = vec![0f64; n * n];
    for i in 0..n {
        vectors[i * n + i] = 1.0;
    }
    let scale: f64 = matrix.iter().map(|value| value * value).sum();
    for _sweep in 0..64 {
        let off: f64 = (0..n)
            .flat_map(|p| ((p + 1)..n).map(move |q| (p, q)))
            .map(|(p, q)| matrix[p * n + q] * matrix[p * n + q])
            .sum();
        if off <= 1e-24 * scale || scale == 0.0 {
            break;
        }
        for p in 0..n {
            for q in (p + 1)..n {
                let apq = matrix[p * n + q];
                if apq.abs() <= 1e-300 {
                    continue;
                }
                let theta = (matrix[q * n + q] - matrix[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                // A ← Jᵀ·A·J, V ← V·J, J the rotation in the (p, q) plane.
                for k in 0..n {
                    let (akp, akq) = (matrix[k * n + p], matrix[k * n + q]);
                    matrix[k * n + p] = c * akp - s * akq;
                    matrix[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (matrix[p * n + k], matrix[q * n + k]);
                    matrix[p * n + k] = c * apk - s * aqk;
                    matrix[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (vectors[k * n + p], vectors[k * n + q]);
                    vectors[k * n + p] = c * vkp - s * vkq;
                    vectors[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| matrix[b * n + b].total_cmp(&matrix[a * n + a]));
    let values = order.iter().map(|&j| matrix[j * n + j]).collect();
    let columns = order
        .iter()
        .map(|&j| (0..n).map(|k| vectors[k * n + j]).collect())
        .collect();
    (values, columns)
}

/// `Σ_s X_s X_sᵀ` (`c × c`, f64) over `samples` (each `c × positions`).
fn channel_covariance<'a>(
    samples: impl Iterator<Item = &'a [f32]>,
    channels: usize,
    positions: usize,
) -> Vec<f64> {
    let mut covariance = vec![0f64; channels * channels];
    for x in samples {
        for a in 0..channels {
            let row = &x[a * positions..(a + 1) * positions];
            for b in a..channels {
                let value = f64::from(dot(row, &x[b * positions..(b + 1) * positions]));
                covariance[a * channels + b] += value;
                if a != b {
                    covariance[b * channels + a] += value;
                }
            }
        }
    }
    covariance
}

/// The first `dimension` eigenvectors as a [`Subspace`].
fn leading(vectors: &[Vec<f64>], channels: usize, dimension: usize) -> Subspace {
    let mut basis = vec![0f32; channels * dimension];
    for (j, vector) in vectors.iter().take(dimension).enumerate() {
        for channel in 0..channels {
            basis[channel * dimension + j] = vector[channel] as f32;
        }
    }
    Subspace {
        channels,
        dimension,
        basis,
    }
}

/// The fraction of `‖u‖²` a confined component must keep to be taken in `geometry`'s layer
/// with a subspace of `dimension`: its cost over a free component's, each its share of
/// the convolution (`out·k²·hw'`), its SVD (`(2T + 1)·c·hw`, the projection's `2·c·m` an
/// iteration included for both) and its combination (`m·out·k²` against `c·out·k²`).
pub fn confinement_threshold(geometry: &ConvGeometry, dimension: usize, iterations: usize) -> f32 {
    let iterations = iterations.max(1);
    let (channels, outs, taps) = (geometry.channels, geometry.out_channels, geometry.taps());
    let shared = (outs * taps * geometry.output_positions()
        + (2 * iterations + 1) * channels * geometry.positions()
        + 2 * iterations * channels * dimension) as f64;
    let confined = shared + (dimension * outs * taps) as f64;
    let free = shared + (channels * outs * taps) as f64;
    (confined / free) as f32
}

/// Splits one sample `x` (`geometry.channels × geometry.positions()`) with its components
/// confined to `subspace` where that pays (module docs). Its MACs include the
/// projections.
pub fn subspace_svd(
    x: &[f32],
    geometry: &ConvGeometry,
    options: &SvdOptions,
    warm: &[Vec<f32>],
    subspace: &Subspace,
) -> SplitSample {
    let (channels, positions) = (geometry.channels, geometry.positions());
    if subspace.channels != channels || subspace.dimension == 0 || subspace.dimension >= channels {
        return light_svd(x, channels, positions, options, warm);
    }
    let threshold = confinement_threshold(geometry, subspace.dimension, options.iterations);
    power_split(
        x,
        channels,
        positions,
        options,
        warm,
        Some((subspace, threshold)),
    )
}

/// MACs of the trusted side's low-rank convolution of `low` in `geometry`'s layer with a
/// subspace of `dimension` (0: none): the combinations (`m·out·k²` a confined component,
/// `c·out·k²` a free one) and the convolution of r maps, or, kept whole (`identity`), the
/// convolution of all c.
pub fn low_rank_conv_macs(geometry: &ConvGeometry, low: &LowRank, dimension: usize) -> u64 {
    let reduced = geometry.with_channels(low.rank);
    if low.identity {
        return reduced.macs();
    }
    let per_row = (geometry.out_channels * geometry.taps()) as u64;
    let combination = low.confined * dimension + (low.rank - low.confined) * geometry.channels;
    combination as u64 * per_row + reduced.macs()
}

/// What [`calibrate`] chose.
#[derive(Clone, Debug, Default)]
pub struct Calibration {
    /// Per layer.
    pub layers: Vec<LayerCalibration>,
    /// Calibration images used.
    pub samples: usize,
}

/// One layer's calibration: the calibration images' mean trusted MACs a sample (split,
/// combination and low-rank convolution) over all channels and in each candidate
/// subspace, and the cheapest choice. A layer kept whole has no candidates.
#[derive(Clone, Debug, Default)]
pub struct LayerCalibration {
    /// The subspace to split in, or `None` (split over all channels, or kept whole).
    pub subspace: Option<Subspace>,
    /// Split over all channels.
    pub over_all_macs: f64,
    /// Each candidate subspace's dimension and its cost.
    pub candidates: Vec<(usize, f64)>,
}

impl Calibration {
    /// The per-layer choice, as [`crate::trusted::SplitExecutor::use_subspaces`] takes it.
    pub fn subspaces(&self) -> Vec<Option<Subspace>> {
        self.layers
            .iter()
            .map(|layer| layer.subspace.clone())
            .collect()
    }
}

impl LayerCalibration {
    /// The chosen split's cost: the chosen subspace's, or over all channels.
    pub fn chosen_macs(&self) -> f64 {
        self.subspace
            .as_ref()
            .and_then(|chosen| {
                self.candidates
                    .iter()
                    .find(|(dimension, _)| *dimension == chosen.dimension)
            })
            .map_or(self.over_all_macs, |(_, macs)| *macs)
    }
}

/// Records every convolution's input while computing it here.
struct Recorder {
    local: LocalExecutor,
    inputs: Vec<Vec<f32>>,
}

impl Executor for Recorder {
    fn conv_forward(
        &mut self,
        model: &Model,
        layer: usize,
        input: &[f32],
        batch: usize,
        training: bool,
    ) -> Result<Vec<f32>> {
        self.inputs[layer].extend_from_slice(input);
        self.local
            .conv_forward(model, layer, input, batch, training)
    }

    fn conv_backward(
        &mut self,
        _model: &Model,
        _layer: usize,
        _grad_output: &[f32],
        _batch: usize,
        _need_input: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        Err(Error::ApiMisuse("calibration runs forward passes only"))
    }
}

/// Every convolution's inputs for `count` images (`count × 28 × 28`), per layer,
/// sample-major, from plain forward passes on `threads` threads.
pub fn layer_inputs(
    model: &Model,
    images: &[f32],
    count: usize,
    threads: usize,
) -> Result<Vec<Vec<f32>>> {
    let pixels = network::SIDE * network::SIDE;
    if images.len() != count * pixels {
        return Err(Error::ShapeMismatch {
            op: "calibration images",
            expected: count * pixels,
            found: images.len(),
        });
    }
    let mut recorder = Recorder {
        local: LocalExecutor::new(threads),
        inputs: vec![Vec::new(); model.layers.len()],
    };
    let batch = 32;
    for first in (0..count).step_by(batch) {
        let size = batch.min(count - first);
        network::forward(
            model,
            &mut recorder,
            &images[first * pixels..(first + size) * pixels],
            size,
            false,
        )?;
    }
    Ok(recorder.inputs)
}

/// The eigenvectors of `Σ X Xᵀ` over `inputs` (samples of `channels × positions`),
/// strongest first.
fn principal_directions(inputs: &[f32], channels: usize, positions: usize) -> Vec<Vec<f64>> {
    let size = (channels * positions).max(1);
    symmetric_eigen(
        channel_covariance(inputs.chunks(size), channels, positions),
        channels,
    )
    .1
}

/// The `dimension` leading eigenvectors of `Σ X Xᵀ` over `inputs` (samples of
/// `channels × positions`).
pub fn principal_subspace(
    inputs: &[f32],
    channels: usize,
    positions: usize,
    dimension: usize,
) -> Subspace {
    let vectors = principal_directions(inputs, channels, positions);
    leading(&vectors, channels, dimension.min(channels))
}

/// Picks each layer's subspace for [`crate::svd::Basis::Subspace`] from `count` calibration images
/// (`count × 28 × 28`, the model owner's, not a client's): the leading eigenvectors of
/// `Σ X Xᵀ` over the layer's inputs, every multiple of `c /` [`CANDIDATE_STEPS`] of them,
/// and of those (and of splitting over all channels) the one with the fewest
/// trusted MACs a sample on the same images (split, combination and low-rank
/// convolution, no warm start). Layers [`split_pays`] keeps whole get none.
pub fn calibrate(
    model: &Model,
    images: &[f32],
    count: usize,
    options: &SvdOptions,
    threads: usize,
) -> Result<Calibration> {
    let inputs = layer_inputs(model, images, count, threads)?;
    let mut calibration = Calibration {
        samples: count,
        ..Calibration::default()
    };
    for (layer, inputs) in inputs.iter().enumerate() {
        let geometry = model.layers[layer].geometry;
        let (channels, positions) = (geometry.channels, geometry.positions());
        if !split_pays(&geometry, options.iterations) || channels < 2 || count == 0 {
            calibration.layers.push(LayerCalibration::default());
            continue;
        }
        let samples = || inputs.chunks(geometry.input_len());
        let cost = |split: SplitSample, dimension: usize| {
            split.macs + low_rank_conv_macs(&geometry, &split.low_rank, dimension)
        };
        let over_all: u64 = samples()
            .map(|x| cost(light_svd(x, channels, positions, options, &[]), 0))
            .sum();
        let vectors = principal_directions(inputs, channels, positions);
        let mut dimensions: Vec<usize> = (1..CANDIDATE_STEPS)
            .map(|step| channels * step / CANDIDATE_STEPS)
            .filter(|&dimension| dimension > 0)
            .collect();
        dimensions.dedup();
        let mut best: (u64, Option<Subspace>) = (over_all, None);
        let mut tried = Vec::new();
        for dimension in dimensions {
            let subspace = leading(&vectors, channels, dimension);
            let macs: u64 = samples()
                .map(|x| {
                    cost(
                        subspace_svd(x, &geometry, options, &[], &subspace),
                        dimension,
                    )
                })
                .sum();
            tried.push((dimension, macs as f64 / count as f64));
            if macs < best.0 {
                best = (macs, Some(subspace));
            }
        }
        calibration.layers.push(LayerCalibration {
            subspace: best.1,
            over_all_macs: over_all as f64 / count as f64,
            candidates: tried,
        });
    }
    Ok(calibration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::svd::Basis;
    use veil_core::sampling::SplitMix64;

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let n = 7;
        let mut random = SplitMix64::new(veil_core::sampling::test_seed().value());
        let half = random.normal_vec(n * n, 1.0);
        let mut matrix = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                matrix[i * n + j] = f64::from(half[i * n + j] + half[j * n + i]);
            }
        }
        let (values, vectors) = symmetric_eigen(matrix.clone(), n);
        assert!(values.windows(2).all(|pair| pair[0] >= pair[1]));
        for (j, vector) in vectors.iter().enumerate() {
            for (k, other) in vectors.iter().enumerate() {
                let product: f64 = vector.iter().zip(other).map(|(a, b)| a * b).sum();
                let expected = if j == k { 1.0 } else { 0.0 };
                assert!((product - expected).abs() < 1e-10, "{j} {k} {product}");
            }
            // A·v = λ·v.
            for i in 0..n {
                let row: f64 = (0..n).map(|k| matrix[i * n + k] * vector[k]).sum();
                assert!((row - values[j] * vector[i]).abs() < 1e-9);
            }
        }
    }

    /// Samples whose channels mostly use `directions` of 12, with their own maps, a
    /// little noise everywhere, an all-zero one, and one far outside the directions.
    fn samples(random: &mut SplitMix64, channels: usize, positions: usize) -> Vec<Vec<f32>> {
        let directions: Vec<Vec<f32>> = (0..4).map(|_| random.normal_vec(channels, 1.0)).collect();
        let mut samples: Vec<Vec<f32>> = (0..8)
            .map(|_| {
                let maps: Vec<Vec<f32>> =
                    (0..4).map(|_| random.normal_vec(positions, 1.0)).collect();
                let weights = random.normal_vec(4, 1.0);
                let noise = random.normal_vec(channels * positions, 0.01);
                (0..channels * positions)
                    .map(|i| {
                        let (c, s) = (i / positions, i % positions);
                        (0..4)
                            .map(|j| weights[j] * directions[j][c] * maps[j][s])
                            .sum::<f32>()
                            + noise[i]
                    })
                    .collect()
            })
            .collect();
        samples.push(vec![0.0; channels * positions]);
        samples.push(random.normal_vec(channels * positions, 3.0));
        samples
    }

    #[test]
    fn a_subspace_split_reconstructs_the_input_and_keeps_every_samples_bound() {
        let mut random = SplitMix64::new(veil_core::sampling::test_seed().value() ^ 5);
        let (channels, positions) = (12, 30);
        // A 3×3 convolution to 24 channels on a 5×6 map: a confined component's
        // combination saves 7·24·9 of its cost.
        let geometry = ConvGeometry {
            channels,
            out_channels: 24,
            height: 5,
            width: 6,
            kernel: 3,
            padding: 1,
        };
        assert_eq!(geometry.positions(), positions);
        let xs = samples(&mut random, channels, positions);
        let vectors = principal_directions(&xs[..8].concat(), channels, positions);
        let subspace = leading(&vectors, channels, 5);
        assert!(confinement_threshold(&geometry, 5, 1) < 1.0);
        let mut confined = 0;
        for energy in [0.8, 0.97] {
            let options = SvdOptions {
                energy,
                iterations: 1,
                basis: Basis::Subspace,
            };
            for (index, x) in xs.iter().enumerate() {
                let split = subspace_svd(x, &geometry, &options, &[], &subspace);
                assert!(
                    split.residual_energy <= 1.0 - energy + 1e-9,
                    "sample {index}: {}",
                    split.residual_energy
                );
                let low = &split.low_rank;
                if index == 8 {
                    assert_eq!(low.rank, 0, "the zero sample keeps nothing");
                    continue;
                }
                if low.identity {
                    // Only the noise needs every channel.
                    assert_eq!(index, 9);
                    assert!(split.residual.iter().all(|&value| value == 0.0));
                    continue;
                }
                if index < 8 {
                    // The samples the subspace was fitted to lie in it.
                    assert!(low.confined > 0, "sample {index}");
                }
                confined += low.confined;
                // [P·Ũ | U_free]·V + residual = X.
                let m = subspace.dimension;
                let free = low.rank - low.confined;
                let column = |c: usize, j: usize| -> f32 {
                    if j < low.confined {
                        (0..m)
                            .map(|i| {
                                subspace.basis[c * m + i] * low.coordinates[i * low.confined + j]
                            })
                            .sum()
                    } else {
                        low.u[c * free + j - low.confined]
                    }
                };
                for (i, &value) in x.iter().enumerate() {
                    let (c, s) = (i / positions, i % positions);
                    let kept: f32 = (0..low.rank)
                        .map(|j| column(c, j) * low.v[j * positions + s])
                        .sum();
                    assert!(
                        (kept + split.residual[i] - value).abs() < 1e-3,
                        "sample {index}, value {i}"
                    );
                }
                // Its trusted convolution is the convolution of U·V.
                let weight = random.normal_vec(geometry.weight_len(), 0.3);
                let by_channel = crate::trusted::channel_major(&geometry, &weight);
                let (subspace_weight, _) = crate::trusted::combine_channel_major(
                    &geometry,
                    &subspace.basis,
                    m,
                    &by_channel,
                );
                let mut found = vec![0f32; geometry.output_len()];
                let macs = crate::trusted::trusted_confined_low_rank_conv(
                    &geometry,
                    low,
                    &by_channel,
                    (m, &subspace_weight),
                    &mut found,
                );
                assert_eq!(macs, low_rank_conv_macs(&geometry, low, m));
                let mut kept = vec![0f32; x.len()];
                for (i, value) in kept.iter_mut().enumerate() {
                    let (c, s) = (i / positions, i % positions);
                    *value = (0..low.rank)
                        .map(|j| column(c, j) * low.v[j * positions + s])
                        .sum();
                }
                let mut expected = vec![0f32; geometry.output_len()];
                crate::kernels::conv_forward(&geometry, &kept, &weight, &mut expected);
                for (a, b) in found.iter().zip(&expected) {
                    assert!((a - b).abs() < 1e-3 * (1.0 + b.abs()), "{a} against {b}");
                }
            }
        }
        assert!(confined > 0);
    }

    #[test]
    fn calibration_chooses_no_costlier_split_and_the_subspace_basis_refuses_training() {
        use crate::network::{Architecture, Model};
        use crate::trusted::SplitExecutor;
        let seed = veil_core::sampling::test_seed().value();
        let model = Model::new(Architecture::VggSmall, seed);
        let mut random = SplitMix64::new(seed ^ 9);
        let count = 8;
        let images: Vec<f32> = random
            .normal_vec(count * network::SIDE * network::SIDE, 0.3)
            .into_iter()
            .map(|value| value.abs().min(1.0))
            .collect();
        let options = SvdOptions {
            energy: 0.97,
            iterations: 1,
            basis: Basis::Subspace,
        };
        let calibration = calibrate(&model, &images, count, &options, 1).expect("calibrates");
        assert_eq!(calibration.layers.len(), model.layers.len());
        for (layer, chosen) in model.layers.iter().zip(&calibration.layers) {
            let geometry = &layer.geometry;
            if !split_pays(geometry, 1) || geometry.channels < 2 {
                assert!(chosen.subspace.is_none() && chosen.candidates.is_empty());
                continue;
            }
            // Every multiple of c/16 below c was tried, at a positive cost.
            let dimensions: Vec<usize> = chosen.candidates.iter().map(|(m, _)| *m).collect();
            let mut expected: Vec<usize> = (1..CANDIDATE_STEPS)
                .map(|step| geometry.channels * step / CANDIDATE_STEPS)
                .filter(|&m| m > 0)
                .collect();
            expected.dedup();
            assert_eq!(dimensions, expected, "{}", layer.name);
            assert!(chosen.over_all_macs > 0.0);
            if let Some(subspace) = &chosen.subspace {
                assert_eq!(subspace.channels, geometry.channels);
                assert_eq!(subspace.basis.len(), subspace.channels * subspace.dimension);
            }
        }
        assert!(calibrate(&model, &images[1..], count, &options, 1).is_err());
        let (mut trusted, _untrusted) = veil_net::memory_pair();
        let mut split = SplitExecutor::new(&mut trusted, &model, options);
        let forward = network::forward(&model, &mut split, &images[..28 * 28], 1, true);
        assert!(matches!(forward, Err(Error::ApiMisuse(_))));
    }
}
