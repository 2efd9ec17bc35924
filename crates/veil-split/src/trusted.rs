//! The trusted runtime's executors: the AsymML split ([`SplitExecutor`]), Slalom-style
//! blinding ([`BlindedExecutor`]), and the calls of the untrusted-only baseline.
//!
//! The trusted runtime is one thread. It holds the inputs, the weights, the merged
//! activations and the optimiser; it runs the light-weight SVD, its low-rank share of
//! every convolution, the non-linear steps and the SGD update. Each executor counts the
//! trusted side's multiply-accumulates and the time it spent blocked on the worker, so
//! the trusted side's own compute time is the wall time less that.

use std::time::{Duration, Instant};

use veil_core::FixedPoint;
use veil_core::kernels::conv2d_u64;
use veil_core::prg::{Prg, Seed};
use veil_net::Channel;

use crate::kernels::{self, ConvGeometry, matmul_accumulate, matmul_transposed_a_accumulate};
use crate::msgs::{Reply, Request};
use crate::network::{Executor, Model};
use crate::subspace::{Subspace, subspace_svd};
use crate::svd::{
    Basis, LowRank, SplitSample, SvdOptions, batch_svd, keep_whole, light_svd, resize_map,
    split_pays,
};
use crate::worker::{FRACTIONAL_BITS, ring_shape};
use crate::{Error, Result};

/// SGD momentum (trusted side and the untrusted-only baseline alike).
pub const MOMENTUM: f32 = 0.9;

/// Sends `request` and waits for the reply, adding the wait to `waiting`.
pub fn call(channel: &mut dyn Channel, request: &Request, waiting: &mut Duration) -> Result<Reply> {
    channel.send(&request.encode())?;
    receive(channel, waiting)
}

fn receive(channel: &mut dyn Channel, waiting: &mut Duration) -> Result<Reply> {
    let start = Instant::now();
    let frame = channel.recv()?;
    *waiting += start.elapsed();
    Reply::decode(&frame)
}

/// Sends the model's parameters to the worker.
pub fn load_model(channel: &mut dyn Channel, model: &Model, waiting: &mut Duration) -> Result<()> {
    let width = u16::try_from(model.width)
        .ok()
        .filter(|&width| usize::from(width) <= crate::network::MAX_WIDTH)
        .ok_or(Error::ApiMisuse("a model wider than MAX_WIDTH"))?;
    let request = Request::LoadModel {
        architecture: model.architecture,
        width,
        parameters: model
            .layers
            .iter()
            .map(|layer| (layer.weight.clone(), layer.bias.clone()))
            .collect(),
    };
    match call(channel, &request, waiting)? {
        Reply::Done => Ok(()),
        Reply::Failure(reason) => Err(Error::WorkerFailed { reason }),
        _ => Err(Error::PeerMisbehaved {
            what: "a reply of the wrong kind",
        }),
    }
}

/// What the split cost and left, per layer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LayerStats {
    /// Samples split.
    pub samples: u64,
    /// The layer's input channels (c).
    pub channels: usize,
    /// Σ r over the samples.
    pub rank_sum: u64,
    /// The largest r.
    pub rank_max: usize,
    /// Σ ‖X_res‖²/‖X‖² over the samples.
    pub residual_energy_sum: f64,
    /// The largest ‖X_res‖²/‖X‖².
    pub residual_energy_max: f64,
    /// Whether the trusted side kept the layer whole ([`split_pays`] said no).
    pub kept_whole: bool,
    /// Σ over the samples of the components confined to the layer's calibrated subspace
    /// ([`Basis::Subspace`]).
    pub confined_sum: u64,
}

impl LayerStats {
    /// The mean r.
    pub fn mean_rank(&self) -> f64 {
        self.rank_sum as f64 / self.samples.max(1) as f64
    }
    /// The mean residual energy fraction (the leakage figure).
    pub fn mean_residual_energy(&self) -> f64 {
        self.residual_energy_sum / self.samples.max(1) as f64
    }
}

/// The AsymML split: per sample and layer, the trusted side keeps `U·V` (r principal
/// channels) and convolves them with pre-combined weights `W' = Uᵀ·W` (equation 4a);
/// the worker convolves the residual (4b); the trusted side merges. In training the
/// worker computes the input gradient (5) and the residual's weight gradient, the
/// trusted side the low-rank weight gradient (6).
pub struct SplitExecutor<'a> {
    channel: &'a mut dyn Channel,
    /// How to split.
    pub options: SvdOptions,
    /// The trusted side's multiply-accumulates (SVD, weight combination, low-rank convs).
    pub trusted_macs: u64,
    /// Time blocked on the worker.
    pub waiting: Duration,
    /// Per layer.
    pub layers: Vec<LayerStats>,
    kept: Vec<Option<Kept>>,
    /// The previous split layer's principal maps per sample, and their height and width.
    warm: Option<WarmStart>,
    /// [`Basis::Batch`]: per layer, the previous batch's basis (its columns), where each
    /// component's power iteration starts.
    batch_bases: Vec<Vec<Vec<f32>>>,
    /// [`Basis::Subspace`]: per layer, its calibrated subspace P, with the weights
    /// combined with it and the weights themselves, both channel-major as
    /// [`combine_channel_major`] reads and gives them.
    subspaces: Vec<Option<ConfinedWeights>>,
    /// The multiply-accumulates of combining the weights with the subspaces: once per
    /// model, offline.
    pub offline_macs: u64,
}

/// What a training forward keeps for its backward: each sample's low-rank part and,
/// with [`Basis::Batch`], the batch's basis (`c × rank`) and its rank.
struct Kept {
    low_ranks: Vec<LowRank>,
    basis: Option<(Vec<f32>, usize)>,
}

/// A layer's calibrated subspace P (`c × m`) and its weights, channel-major: `W_P = Pᵀ·W`
/// (`m × out·k²`, offline) for the confined components and W (`c × out·k²`) for the
/// free ones, so that no sample lays W out again.
struct ConfinedWeights {
    subspace: Subspace,
    combined: Vec<f32>,
    weight: Vec<f32>,
}

/// Per sample, the previous split layer's principal maps; and their height and width.
type WarmStart = (Vec<Vec<Vec<f32>>>, usize, usize);

impl std::fmt::Debug for SplitExecutor<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SplitExecutor")
            .field("options", &self.options)
            .field("trusted_macs", &self.trusted_macs)
            .finish()
    }
}

impl<'a> SplitExecutor<'a> {
    /// A split over `channel` to a worker that has the model.
    pub fn new(channel: &'a mut dyn Channel, model: &Model, options: SvdOptions) -> Self {
        SplitExecutor {
            channel,
            options,
            trusted_macs: 0,
            waiting: Duration::ZERO,
            layers: model
                .layers
                .iter()
                .map(|layer| LayerStats {
                    channels: layer.geometry.channels,
                    ..LayerStats::default()
                })
                .collect(),
            kept: (0..model.layers.len()).map(|_| None).collect(),
            warm: None,
            batch_bases: vec![Vec::new(); model.layers.len()],
            subspaces: (0..model.layers.len()).map(|_| None).collect(),
            offline_macs: 0,
        }
    }

    /// Gives [`Basis::Subspace`] its calibrated subspaces (one per layer, `None` where a
    /// layer splits over all its channels) and combines the weights with them, offline.
    pub fn use_subspaces(&mut self, model: &Model, subspaces: &[Option<Subspace>]) -> Result<()> {
        if subspaces.len() != model.layers.len() {
            return Err(Error::ShapeMismatch {
                op: "calibrated subspaces",
                expected: model.layers.len(),
                found: subspaces.len(),
            });
        }
        let mut combined = Vec::with_capacity(subspaces.len());
        for (layer, subspace) in model.layers.iter().zip(subspaces) {
            let Some(subspace) = subspace else {
                combined.push(None);
                continue;
            };
            let geometry = layer.geometry;
            if subspace.channels != geometry.channels
                || subspace.basis.len() != geometry.channels * subspace.dimension
            {
                return Err(Error::ShapeMismatch {
                    op: "a calibrated subspace's basis",
                    expected: geometry.channels * subspace.dimension,
                    found: subspace.basis.len(),
                });
            }
            let weight = channel_major(&geometry, &layer.weight);
            let (product, macs) =
                combine_channel_major(&geometry, &subspace.basis, subspace.dimension, &weight);
            self.offline_macs += macs;
            combined.push(Some(ConfinedWeights {
                subspace: subspace.clone(),
                combined: product,
                weight,
            }));
        }
        self.subspaces = combined;
        Ok(())
    }

    /// Sends the model's (updated) parameters to the worker.
    pub fn load_model(&mut self, model: &Model) -> Result<()> {
        load_model(self.channel, model, &mut self.waiting)
    }
}

/// Equation 4a for one sample: `output += Σ_j V_j ⊛ W'_j` with `W'_j = Σ_c U[c,j]·W_c`.
pub fn trusted_low_rank_conv(
    geometry: &ConvGeometry,
    low: &LowRank,
    weight: &[f32],
    output: &mut [f32],
) -> u64 {
    if low.identity {
        return kernels::conv_forward(geometry, &low.v, weight, output);
    }
    if low.rank == 0 {
        return 0;
    }
    let combined = combine_weights(geometry, &low.u, low.rank, weight);
    combined.1
        + kernels::conv_forward(
            &geometry.with_channels(low.rank),
            &low.v,
            &combined.0,
            output,
        )
}

/// Equation 4a for one sample with confined components ([`Basis::Subspace`]): V convolved
/// with `[Ũᵀ·W_P | U_freeᵀ·W]`. `subspace` is the subspace's dimension m and `W_P`;
/// `W_P` (`m × (out·k²)`, `Pᵀ·W` as one GEMM gives it) and `weight` (`c × (out·k²)`,
/// [`channel_major`]) are channel-major.
pub fn trusted_confined_low_rank_conv(
    geometry: &ConvGeometry,
    low: &LowRank,
    weight: &[f32],
    subspace: (usize, &[f32]),
    output: &mut [f32],
) -> u64 {
    let (dimension, subspace_weight) = subspace;
    let free = low.rank - low.confined;
    let span = geometry.out_channels * geometry.taps();
    // Ũᵀ·W_P: the confined rows, already in channel-major order.
    let mut product = vec![0f32; low.rank * span];
    let mut macs = matmul_transposed_a_accumulate(
        low.confined,
        dimension,
        span,
        &low.coordinates,
        subspace_weight,
        &mut product[..low.confined * span],
    );
    if free > 0 {
        macs += matmul_transposed_a_accumulate(
            free,
            geometry.channels,
            span,
            &low.u,
            weight,
            &mut product[low.confined * span..],
        );
    }
    let reduced = geometry.with_channels(low.rank);
    macs + kernels::conv_forward(&reduced, &low.v, &out_major(&reduced, &product), output)
}

/// Equation 4a for a batch split over one basis `basis` (`c × rank`, [`Basis::Batch`]):
/// `W' = Uᵀ·W` once for the batch, each sample convolving its maps with the first `r_s`
/// components of it (a sample kept whole with W itself). `output` holds the batch's
/// outputs.
pub fn trusted_batch_low_rank_conv(
    geometry: &ConvGeometry,
    basis: &[f32],
    rank: usize,
    low_ranks: &[LowRank],
    weight: &[f32],
    output: &mut [f32],
) -> u64 {
    let (taps, outs) = (geometry.taps(), geometry.out_channels);
    let (combined, mut macs) = if rank > 0 {
        combine_weights(geometry, basis, rank, weight)
    } else {
        (Vec::new(), 0)
    };
    let output_len = geometry.output_len();
    for (sample, low) in low_ranks.iter().enumerate() {
        let output = &mut output[sample * output_len..(sample + 1) * output_len];
        if low.identity {
            macs += kernels::conv_forward(geometry, &low.v, weight, output);
        } else if low.rank > 0 {
            let own = low.rank;
            let mut prefix = Vec::with_capacity(outs * own * taps);
            for out in 0..outs {
                prefix.extend_from_slice(&combined[out * rank * taps..(out * rank + own) * taps]);
            }
            macs += kernels::conv_forward(&geometry.with_channels(own), &low.v, &prefix, output);
        }
    }
    macs
}

/// `W' = Uᵀ·W` for `u` (`c × rank`): `out × rank × k²`, and its MACs.
fn combine_weights(
    geometry: &ConvGeometry,
    u: &[f32],
    rank: usize,
    weight: &[f32],
) -> (Vec<f32>, u64) {
    let (product, macs) =
        combine_channel_major(geometry, u, rank, &channel_major(geometry, weight));
    (out_major(&geometry.with_channels(rank), &product), macs)
}

/// `Uᵀ·W` for `u` (`c × rank`) and W already channel-major ([`channel_major`]), in
/// channel-major order, `rank × (out·k²)`, and its MACs: one GEMM with long rows.
pub(crate) fn combine_channel_major(
    geometry: &ConvGeometry,
    u: &[f32],
    rank: usize,
    by_channel: &[f32],
) -> (Vec<f32>, u64) {
    let span = geometry.out_channels * geometry.taps();
    let mut product = vec![0f32; rank * span];
    let macs =
        matmul_transposed_a_accumulate(rank, geometry.channels, span, u, by_channel, &mut product);
    (product, macs)
}

/// W (`out × c × k²`) read as the `c × (out·k²)` matrix `W[o, c, t] → (c, o·k² + t)`, so
/// that combining it with U is one GEMM with long rows.
pub(crate) fn channel_major(geometry: &ConvGeometry, weight: &[f32]) -> Vec<f32> {
    let taps = geometry.taps();
    let (channels, outs) = (geometry.channels, geometry.out_channels);
    let mut by_channel = vec![0f32; channels * outs * taps];
    for out in 0..outs {
        for channel in 0..channels {
            by_channel
                [channel * outs * taps + out * taps..channel * outs * taps + (out + 1) * taps]
                .copy_from_slice(
                    &weight
                        [(out * channels + channel) * taps..(out * channels + channel + 1) * taps],
                );
        }
    }
    by_channel
}

/// A channel-major weight (`c × (out·k²)`, [`combine_channel_major`]) in the
/// convolution's order, `out × c × k²`, for `geometry`'s channels.
fn out_major(geometry: &ConvGeometry, by_channel: &[f32]) -> Vec<f32> {
    let (taps, channels, outs) = (geometry.taps(), geometry.channels, geometry.out_channels);
    let mut weight = vec![0f32; outs * channels * taps];
    for channel in 0..channels {
        for out in 0..outs {
            weight[(out * channels + channel) * taps..(out * channels + channel + 1) * taps]
                .copy_from_slice(
                    &by_channel[(channel * outs + out) * taps..(channel * outs + out + 1) * taps],
                );
        }
    }
    weight
}

/// Equation 6's trusted part for one sample: `grad_weight += Σ_j U[:,j] ⊗ (V_j ⊛ ∂L/∂Y)`.
pub fn trusted_low_rank_weight_gradient(
    geometry: &ConvGeometry,
    low: &LowRank,
    grad_output: &[f32],
    grad_weight: &mut [f32],
) -> u64 {
    if low.identity {
        return kernels::conv_backward_weight(geometry, &low.v, grad_output, grad_weight);
    }
    if low.rank == 0 {
        return 0;
    }
    let mut partial = vec![0f32; geometry.out_channels * low.rank * geometry.taps()];
    let reduced = geometry.with_channels(low.rank);
    let macs = kernels::conv_backward_weight(&reduced, &low.v, grad_output, &mut partial);
    macs + expand_weight_gradient(geometry, &low.u, low.rank, &partial, grad_weight)
}

/// Equation 6's trusted part for a batch split over one basis `u` (`c × rank`,
/// [`Basis::Batch`]): each sample's `V_j ⊛ ∂L/∂Y` (`out × r_s × k²`) summed into one
/// `out × rank × k²` gradient, expanded by U once for the batch.
fn trusted_batch_low_rank_weight_gradient(
    geometry: &ConvGeometry,
    u: &[f32],
    rank: usize,
    low_ranks: &[LowRank],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) -> u64 {
    let (taps, outs, output_len) = (
        geometry.taps(),
        geometry.out_channels,
        geometry.output_len(),
    );
    let mut summed = vec![0f32; outs * rank * taps];
    let mut macs = 0;
    for (sample, low) in low_ranks.iter().enumerate() {
        let grad = &grad_output[sample * output_len..(sample + 1) * output_len];
        if low.identity {
            macs += kernels::conv_backward_weight(geometry, &low.v, grad, grad_weight);
        } else if low.rank > 0 {
            let own = low.rank;
            let mut partial = vec![0f32; outs * own * taps];
            macs += kernels::conv_backward_weight(
                &geometry.with_channels(own),
                &low.v,
                grad,
                &mut partial,
            );
            for out in 0..outs {
                for (total, &value) in summed[out * rank * taps..(out * rank + own) * taps]
                    .iter_mut()
                    .zip(&partial[out * own * taps..(out + 1) * own * taps])
                {
                    *total += value;
                }
            }
        }
    }
    if rank > 0 {
        macs += expand_weight_gradient(geometry, u, rank, &summed, grad_weight);
    }
    macs
}

/// `grad_weight += U ⊗ partial`: a low-rank weight gradient `partial` (`out × rank × k²`)
/// taken back to the layer's channels through `u` (`c × rank`), and its MACs.
fn expand_weight_gradient(
    geometry: &ConvGeometry,
    u: &[f32],
    rank: usize,
    partial: &[f32],
    grad_weight: &mut [f32],
) -> u64 {
    let (taps, channels, outs) = (geometry.taps(), geometry.channels, geometry.out_channels);
    // (out, r, k²) → (r, out·k²), one GEMM with long rows, then back to (out, c, k²).
    let mut by_component = vec![0f32; rank * outs * taps];
    for out in 0..outs {
        for j in 0..rank {
            by_component[(j * outs + out) * taps..(j * outs + out + 1) * taps]
                .copy_from_slice(&partial[(out * rank + j) * taps..(out * rank + j + 1) * taps]);
        }
    }
    let mut product = vec![0f32; channels * outs * taps];
    let macs = matmul_accumulate(channels, rank, outs * taps, u, &by_component, &mut product);
    for channel in 0..channels {
        for out in 0..outs {
            let source = &product[(channel * outs + out) * taps..(channel * outs + out + 1) * taps];
            let target = &mut grad_weight
                [(out * channels + channel) * taps..(out * channels + channel + 1) * taps];
            for (total, &value) in target.iter_mut().zip(source) {
                *total += value;
            }
        }
    }
    macs
}

impl Executor for SplitExecutor<'_> {
    fn begin_pass(&mut self) {
        self.warm = None;
    }

    fn conv_forward(
        &mut self,
        model: &Model,
        layer: usize,
        input: &[f32],
        batch: usize,
        training: bool,
    ) -> Result<Vec<f32>> {
        let geometry = model.layers[layer].geometry;
        let (input_len, positions) = (geometry.input_len(), geometry.positions());
        if training && self.options.basis == Basis::Subspace {
            return Err(Error::ApiMisuse(
                "the subspace basis is for inference: training changes the weights combined with it",
            ));
        }
        if input.len() != batch * input_len {
            return Err(Error::ShapeMismatch {
                op: "split conv input",
                expected: batch * input_len,
                found: input.len(),
            });
        }
        // Split every sample (Algorithm 1, warm-started from the previous layer's maps),
        // or the batch over one basis (warm-started from the previous batch's), where
        // splitting can pay; else the trusted side keeps the layer whole.
        let pays = split_pays(&geometry, self.options.iterations);
        let samples =
            || (0..batch).map(|sample| &input[sample * input_len..(sample + 1) * input_len]);
        let mut shared_basis: Option<(Vec<f32>, usize)> = None;
        let splits: Vec<SplitSample> = if !pays {
            samples()
                .map(|x| keep_whole(x, geometry.channels, positions))
                .collect()
        } else if self.options.basis == Basis::Batch {
            let split = batch_svd(
                input,
                batch,
                geometry.channels,
                positions,
                &self.options,
                &self.batch_bases[layer],
            );
            self.trusted_macs += split.shared_macs;
            self.batch_bases[layer] = split.columns();
            shared_basis = Some((split.basis, split.rank));
            split.samples
        } else {
            samples()
                .enumerate()
                .map(|(sample, x)| {
                    let warm: Vec<Vec<f32>> = match &self.warm {
                        Some((maps, height, width)) => maps[sample]
                            .iter()
                            .filter_map(|map| {
                                resize_map(map, *height, *width, (geometry.height, geometry.width))
                            })
                            .collect(),
                        None => Vec::new(),
                    };
                    match &self.subspaces[layer] {
                        Some(confined) if self.options.basis == Basis::Subspace => {
                            subspace_svd(x, &geometry, &self.options, &warm, &confined.subspace)
                        }
                        _ => light_svd(x, geometry.channels, positions, &self.options, &warm),
                    }
                })
                .collect()
        };
        let stats = &mut self.layers[layer];
        stats.kept_whole = !pays;
        for split in &splits {
            self.trusted_macs += split.macs;
            stats.samples += 1;
            stats.rank_sum += split.low_rank.rank as u64;
            stats.confined_sum += split.low_rank.confined as u64;
            stats.rank_max = stats.rank_max.max(split.low_rank.rank);
            stats.residual_energy_sum += split.residual_energy;
            stats.residual_energy_max = stats.residual_energy_max.max(split.residual_energy);
        }
        // The worker convolves the residuals (4b) while this side does its part (4a).
        let all_zero = splits.iter().all(|split| split.low_rank.identity);
        // Nothing to send when the trusted side keeps the layer whole, except in training,
        // where the worker still computes the layer's input gradient.
        let ask_worker = !all_zero || training;
        if ask_worker {
            let mut residual = Vec::new();
            if !all_zero {
                residual.reserve(batch * input_len);
                for split in &splits {
                    residual.extend_from_slice(&split.residual);
                }
            }
            self.channel.send(
                &Request::ConvForward {
                    layer: layer as u16,
                    batch: batch as u32,
                    keep: training,
                    residual,
                }
                .encode(),
            )?;
        }
        let low_ranks: Vec<LowRank> = splits.into_iter().map(|split| split.low_rank).collect();
        let weight = &model.layers[layer].weight;
        let output_len = geometry.output_len();
        let mut output = vec![0f32; batch * output_len];
        match &shared_basis {
            Some((basis, rank)) => {
                self.trusted_macs += trusted_batch_low_rank_conv(
                    &geometry,
                    basis,
                    *rank,
                    &low_ranks,
                    weight,
                    &mut output,
                );
            }
            None => {
                for (sample, low) in low_ranks.iter().enumerate() {
                    let output = &mut output[sample * output_len..(sample + 1) * output_len];
                    self.trusted_macs += match &self.subspaces[layer] {
                        Some(confined) if low.confined > 0 => trusted_confined_low_rank_conv(
                            &geometry,
                            low,
                            &confined.weight,
                            (confined.subspace.dimension, &confined.combined),
                            output,
                        ),
                        _ => trusted_low_rank_conv(&geometry, low, weight, output),
                    };
                }
            }
        }
        if ask_worker {
            let [untrusted] = receive(self.channel, &mut self.waiting)?
                .into_reals(1)?
                .try_into()
                .map_err(|_| Error::PeerMisbehaved {
                    what: "a reply of the wrong kind",
                })?;
            // An empty output: the residual was zero.
            if !untrusted.is_empty() {
                if untrusted.len() != output.len() {
                    return Err(Error::PeerMisbehaved {
                        what: "the worker's output has the wrong length",
                    });
                }
                // Merge: Y = Y_T + Y_U.
                for (value, other) in output.iter_mut().zip(untrusted) {
                    *value += other;
                }
            }
        }
        // The next layer's per-sample warm start (a batch basis warm-starts from the
        // previous batch's instead).
        self.warm = (self.options.basis != Basis::Batch).then(|| {
            (
                low_ranks
                    .iter()
                    .map(|low| low.v.chunks(positions).map(<[f32]>::to_vec).collect())
                    .collect(),
                geometry.height,
                geometry.width,
            )
        });
        if training {
            self.kept[layer] = Some(Kept {
                low_ranks,
                basis: shared_basis,
            });
        }
        Ok(output)
    }

    fn conv_backward(
        &mut self,
        model: &Model,
        layer: usize,
        grad_output: &[f32],
        batch: usize,
        need_input: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        let geometry = model.layers[layer].geometry;
        let Kept { low_ranks, basis } = self.kept[layer]
            .take()
            .ok_or(Error::ApiMisuse("a backward without its training forward"))?;
        let output_len = geometry.output_len();
        if grad_output.len() != batch * output_len || low_ranks.len() != batch {
            return Err(Error::ShapeMismatch {
                op: "split conv gradient",
                expected: batch * output_len,
                found: grad_output.len(),
            });
        }
        self.channel.send(
            &Request::ConvBackward {
                layer: layer as u16,
                batch: batch as u32,
                need_input,
                grad_output: grad_output.to_vec(),
            }
            .encode(),
        )?;
        let mut weight_grad = vec![0f32; geometry.weight_len()];
        match &basis {
            Some((u, rank)) => {
                self.trusted_macs += trusted_batch_low_rank_weight_gradient(
                    &geometry,
                    u,
                    *rank,
                    &low_ranks,
                    grad_output,
                    &mut weight_grad,
                );
            }
            None => {
                for (sample, low) in low_ranks.iter().enumerate() {
                    self.trusted_macs += trusted_low_rank_weight_gradient(
                        &geometry,
                        low,
                        &grad_output[sample * output_len..(sample + 1) * output_len],
                        &mut weight_grad,
                    );
                }
            }
        }
        let [residual_grad, input_grad] = receive(self.channel, &mut self.waiting)?
            .into_reals(2)?
            .try_into()
            .map_err(|_| Error::PeerMisbehaved {
                what: "a reply of the wrong kind",
            })?;
        if residual_grad.len() != weight_grad.len()
            || (need_input && input_grad.len() != batch * geometry.input_len())
        {
            return Err(Error::PeerMisbehaved {
                what: "the worker's gradients have the wrong length",
            });
        }
        for (total, value) in weight_grad.iter_mut().zip(residual_grad) {
            *total += value;
        }
        Ok((weight_grad, need_input.then_some(input_grad)))
    }
}

/// One pass's one-time pads: per layer, R and its product with the weights.
struct Pads {
    per_layer: Vec<Option<(Vec<u64>, Vec<u64>)>>,
}

/// Slalom-style blinding for inference over Z_2^64 fixed point (veil-core's codec, 16
/// fractional bits; products carry 32): the trusted side sends `X + R` with R a fresh
/// one-time pad from veil-core's AES-CTR PRG under an OS-random seed, the worker returns
/// `W·(X + R)`, and the trusted side subtracts `W·R`, computed offline by
/// [`BlindedExecutor::precompute`]. Each pad is used for one layer of one pass, then
/// dropped.
pub struct BlindedExecutor<'a> {
    channel: &'a mut dyn Channel,
    codec: FixedPoint,
    fixed_weights: Vec<Vec<u64>>,
    pads: Vec<Pads>,
    /// Time blocked on the worker.
    pub waiting: Duration,
    /// The offline precomputation's trusted multiply-accumulates (W·R).
    pub offline_macs: u64,
    /// The offline precomputation's time.
    pub offline_time: Duration,
}

impl std::fmt::Debug for BlindedExecutor<'_> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BlindedExecutor")
            .field("pads", &self.pads.len())
            .finish()
    }
}

impl<'a> BlindedExecutor<'a> {
    /// A blinded executor for `model` over `channel` (the worker must have the model).
    pub fn new(channel: &'a mut dyn Channel, model: &Model) -> Result<Self> {
        let codec = FixedPoint::new(FRACTIONAL_BITS)?;
        let fixed_weights = model
            .layers
            .iter()
            .map(|layer| codec.encode_slice(&layer.weight))
            .collect::<veil_core::Result<_>>()?;
        Ok(BlindedExecutor {
            channel,
            codec,
            fixed_weights,
            pads: Vec::new(),
            waiting: Duration::ZERO,
            offline_macs: 0,
            offline_time: Duration::ZERO,
        })
    }

    /// Offline: draws fresh pads for `passes` future passes of `batch` samples and
    /// multiplies them by the weights.
    pub fn precompute(&mut self, model: &Model, batch: usize, passes: usize) -> Result<()> {
        let start = Instant::now();
        for _ in 0..passes {
            let mut prg = Prg::new(&Seed::random()?);
            let mut per_layer = Vec::with_capacity(model.layers.len());
            for (layer, weight) in model.layers.iter().zip(&self.fixed_weights) {
                let geometry = layer.geometry;
                let pad = prg.vec_u64(batch * geometry.input_len());
                let mut product = vec![0u64; batch * geometry.output_len()];
                let shape = ring_shape(&geometry);
                for sample in 0..batch {
                    conv2d_u64(
                        &shape,
                        &pad[sample * geometry.input_len()..(sample + 1) * geometry.input_len()],
                        weight,
                        &mut product
                            [sample * geometry.output_len()..(sample + 1) * geometry.output_len()],
                    )?;
                    self.offline_macs += geometry.macs();
                }
                per_layer.push(Some((pad, product)));
            }
            self.pads.push(Pads { per_layer });
        }
        self.offline_time += start.elapsed();
        Ok(())
    }
}

impl Executor for BlindedExecutor<'_> {
    fn begin_pass(&mut self) {
        // The previous pass's pads are spent; never reuse one.
        if self
            .pads
            .first()
            .is_some_and(|pads| pads.per_layer.iter().all(Option::is_none))
        {
            self.pads.remove(0);
        }
    }

    fn conv_forward(
        &mut self,
        model: &Model,
        layer: usize,
        input: &[f32],
        batch: usize,
        training: bool,
    ) -> Result<Vec<f32>> {
        if training {
            return Err(Error::ApiMisuse("the blinded mode is for inference only"));
        }
        let geometry = model.layers[layer].geometry;
        let (pad, product) = self
            .pads
            .first_mut()
            .and_then(|pads| pads.per_layer.get_mut(layer))
            .and_then(Option::take)
            .ok_or(Error::ApiMisuse("no precomputed pad left; call precompute"))?;
        if pad.len() != input.len() || product.len() != batch * geometry.output_len() {
            return Err(Error::ShapeMismatch {
                op: "blinded conv input",
                expected: pad.len(),
                found: input.len(),
            });
        }
        let blinded: Vec<u64> = self
            .codec
            .encode_slice(input)?
            .into_iter()
            .zip(&pad)
            .map(|(x, r)| x.wrapping_add(*r))
            .collect();
        drop(pad);
        let reply = call(
            self.channel,
            &Request::BlindedForward {
                layer: layer as u16,
                batch: batch as u32,
                blinded,
            },
            &mut self.waiting,
        )?;
        let values = match reply {
            Reply::Ring(values) if values.len() == product.len() => values,
            Reply::Failure(reason) => return Err(Error::WorkerFailed { reason }),
            _ => {
                return Err(Error::PeerMisbehaved {
                    what: "a blinded reply of the wrong kind or length",
                });
            }
        };
        let scale = (1u64 << (2 * FRACTIONAL_BITS)) as f64;
        Ok(values
            .into_iter()
            .zip(product)
            .map(|(y, u)| (y.wrapping_sub(u) as i64) as f64 / scale)
            .map(|value| value as f32)
            .collect())
    }

    fn conv_backward(
        &mut self,
        _model: &Model,
        _layer: usize,
        _grad_output: &[f32],
        _batch: usize,
        _need_input: bool,
    ) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
        Err(Error::ApiMisuse("the blinded mode is for inference only"))
    }
}
