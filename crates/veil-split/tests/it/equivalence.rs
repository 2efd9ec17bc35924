//! Split and blinded inference give plain inference's logits, within documented bounds.
//!
//! Split: `conv(W, U·V) + conv(W, X − U·V) = conv(W, X)` exactly in real arithmetic; in
//! f32 the two sums round differently, so logits may differ by float rounding only. The
//! bound used is 1e-3 · (1 + max |logit|) (observed errors are around 1e-5 relative).
//! Blinded: inputs and weights are rounded to 16 fractional bits before an exact ring
//! product, so each layer's output moves by about 2^-17 · Σ|w|·|x|; the bound used is
//! 2e-2 · (1 + max |logit|).

use veil_core::sampling::test_seed;
use veil_split::network::{self, Architecture, LocalExecutor, Model};
use veil_split::subspace::{self, Subspace};
use veil_split::svd::{Basis, SvdOptions, split_pays};
use veil_split::trusted::{BlindedExecutor, SplitExecutor, load_model};

use crate::{spawn_worker, synthetic_images};

fn assert_close(found: &[f32], expected: &[f32], relative: f32, what: &str) {
    let scale = 1.0
        + expected
            .iter()
            .fold(0f32, |max, value| max.max(value.abs()));
    let bound = relative * scale;
    let worst = found
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= bound, "{what}: logits differ by {worst} > {bound}");
    // Equal predictions wherever the plain margin exceeds twice the bound.
    for (row_found, row_expected) in found.chunks(10).zip(expected.chunks(10)) {
        let mut sorted = row_expected.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if sorted[0] - sorted[1] > 2.0 * bound {
            assert_eq!(
                network::predictions(row_found),
                network::predictions(row_expected),
                "{what}: a prediction changed"
            );
        }
    }
}

#[test]
fn split_inference_gives_plain_logits_for_both_models_widths_energies_and_bases() {
    let seed = test_seed().value();
    let batch = 6;
    let images = synthetic_images(batch, seed);
    // One worker for every model: it rebuilds its copy when the architecture or the
    // width changes.
    let (mut channel, worker) = spawn_worker(2);
    let models = [
        (Architecture::VggSmall, network::WIDTH),
        (Architecture::Resnet18Small, network::WIDTH),
        (Architecture::VggSmall, 24),
    ];
    for (architecture, width) in models {
        let model = Model::with_width(architecture, width, seed);
        let (plain, _) =
            network::forward(&model, &mut LocalExecutor::new(1), &images, batch, false)
                .expect("plain");
        load_model(&mut channel, &model, &mut Default::default()).expect("loads");
        // Subspaces of three quarters of the channels, fitted to these images, wherever a
        // layer splits.
        let inputs = subspace::layer_inputs(&model, &images, batch, 1).expect("records");
        let subspaces: Vec<Option<Subspace>> = model
            .layers
            .iter()
            .zip(&inputs)
            .map(|(layer, inputs)| {
                let geometry = &layer.geometry;
                (split_pays(geometry, 1) && geometry.channels > 1).then(|| {
                    subspace::principal_subspace(
                        inputs,
                        geometry.channels,
                        geometry.positions(),
                        3 * geometry.channels / 4,
                    )
                })
            })
            .collect();
        for (energy, basis) in [
            (0.97, Basis::Sample),
            (0.8, Basis::Sample),
            (0.97, Basis::Batch),
            (0.8, Basis::Batch),
            (0.97, Basis::Subspace),
            (0.8, Basis::Subspace),
        ] {
            let mut split = SplitExecutor::new(
                &mut channel,
                &model,
                SvdOptions {
                    energy,
                    iterations: 1,
                    basis,
                },
            );
            if basis == Basis::Subspace {
                split.use_subspaces(&model, &subspaces).expect("shapes");
                assert!(split.offline_macs > 0);
            }
            let (logits, _) =
                network::forward(&model, &mut split, &images, batch, false).expect("split");
            assert_close(
                &logits,
                &plain,
                1e-3,
                &format!(
                    "{} width {width}, {} basis",
                    architecture.name(),
                    basis.name()
                ),
            );
            // The split really happened where it pays: fewer channels than c kept, at
            // most 1 − energy left in any sample; elsewhere (one input channel, the linear layer) the
            // trusted side kept everything.
            for (layer, stats) in model.layers.iter().zip(&split.layers) {
                let channels = layer.geometry.channels as f64;
                assert!(stats.residual_energy_max <= 1.0 - energy + 1e-6);
                if split_pays(&layer.geometry, 1) && layer.geometry.channels > 1 {
                    assert!(stats.mean_rank() < channels, "{}: r = c", layer.name);
                } else {
                    assert!(stats.mean_rank() == channels, "{}: split", layer.name);
                }
            }
            assert!(split.layers.last().is_some_and(|stats| stats.kept_whole));
            if basis == Basis::Subspace {
                // The subspaces were used, and only where a layer has one.
                let mut confined = 0;
                for (stats, subspace) in split.layers.iter().zip(&subspaces) {
                    if subspace.is_none() {
                        assert_eq!(stats.confined_sum, 0);
                    }
                    confined += stats.confined_sum;
                }
                assert!(confined > 0, "no component was confined");
            }
            assert!(split.trusted_macs < batch as u64 * model.macs_per_sample());
        }
    }
    drop(channel);
    worker
        .join()
        .expect("joins")
        .expect("the worker ends cleanly");
}

#[test]
fn blinded_inference_gives_plain_logits_and_never_reuses_a_pad() {
    let seed = test_seed().value();
    let batch = 3;
    let images = synthetic_images(batch, seed ^ 1);
    let model = Model::new(Architecture::VggSmall, seed);
    let (plain, _) =
        network::forward(&model, &mut LocalExecutor::new(1), &images, batch, false).expect("plain");
    let (mut channel, worker) = spawn_worker(2);
    load_model(&mut channel, &model, &mut Default::default()).expect("loads");
    let mut blinded = BlindedExecutor::new(&mut channel, &model).expect("encodes");
    blinded.precompute(&model, batch, 1).expect("precomputes");
    let (logits, _) =
        network::forward(&model, &mut blinded, &images, batch, false).expect("blinded");
    assert_close(&logits, &plain, 2e-2, "blinded");
    // The one precomputed pass is spent: a second pass has no pad and is refused.
    assert!(network::forward(&model, &mut blinded, &images, batch, false).is_err());
    drop(blinded);
    drop(channel);
    worker
        .join()
        .expect("joins")
        .expect("the worker ends cleanly");
}
