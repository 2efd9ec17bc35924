//! Split training computes plain training's gradients (equations 5–6) up to float
//! rounding (bound: relative L2 error 1e-4 per gradient; observed below 1e-6), and on
//! Fashion-MNIST reaches plain training's accuracy within one point.

use veil_core::sampling::test_seed;
use veil_split::bench::{self, Data};
use veil_split::network::{self, Architecture, LocalExecutor, Model};
use veil_split::svd::{Basis, SvdOptions};
use veil_split::trusted::{SplitExecutor, load_model};

use crate::{spawn_worker, synthetic_images};

/// Asym1 (97 % kept, T = 1) with `basis`.
fn asym1(basis: Basis) -> SvdOptions {
    SvdOptions {
        energy: 0.97,
        iterations: 1,
        basis,
    }
}

#[test]
fn split_gradients_equal_plain_gradients() {
    let seed = test_seed().value();
    let batch = 4;
    let images = synthetic_images(batch, seed ^ 2);
    let labels: Vec<u8> = (0..batch as u8).collect();
    for (architecture, basis) in Architecture::ALL
        .into_iter()
        .flat_map(|architecture| [(architecture, Basis::Sample), (architecture, Basis::Batch)])
    {
        let model = Model::new(architecture, seed);
        let mut local = LocalExecutor::new(1);
        let (logits, trace) =
            network::forward(&model, &mut local, &images, batch, true).expect("plain");
        let (_, grad) = network::cross_entropy(&logits, &labels);
        let plain =
            network::backward(&model, &mut local, &trace, grad, batch).expect("plain backward");
        let (mut channel, worker) = spawn_worker(2);
        load_model(&mut channel, &model, &mut Default::default()).expect("loads");
        let mut split = SplitExecutor::new(&mut channel, &model, asym1(basis));
        let (logits, trace) =
            network::forward(&model, &mut split, &images, batch, true).expect("split");
        let (_, grad) = network::cross_entropy(&logits, &labels);
        let gradients =
            network::backward(&model, &mut split, &trace, grad, batch).expect("split backward");
        for ((layer, (weight, bias)), (plain_weight, plain_bias)) in
            model.layers.iter().zip(&gradients).zip(&plain)
        {
            for (found, expected) in [(weight, plain_weight), (bias, plain_bias)] {
                let norm = expected.iter().map(|v| v * v).sum::<f32>().sqrt();
                let error = found
                    .iter()
                    .zip(expected)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f32>()
                    .sqrt();
                assert!(
                    error <= 1e-4 * norm + 1e-7,
                    "{} ({} basis): gradient off by {error} (norm {norm})",
                    layer.name,
                    basis.name()
                );
            }
        }
        drop(split);
        drop(channel);
        worker
            .join()
            .expect("joins")
            .expect("the worker ends cleanly");
    }
}

#[test]
fn split_training_matches_plain_accuracy_on_fashion_mnist() {
    let Some(directory) = veil_data::fashion::directory() else {
        eprintln!(
            "SKIPPED: Fashion-MNIST is not fetched; {}",
            veil_data::fetched::FETCH_HINT
        );
        return;
    };
    let load = |part| {
        let images = veil_data::fashion::load(&directory, part).expect("loads");
        Data {
            images: images.images,
            labels: images.labels,
        }
    };
    let train = load(veil_data::fashion::Part::Train).select(&(0..960).collect::<Vec<_>>());
    let test = load(veil_data::fashion::Part::Test).select(&(0..500).collect::<Vec<_>>());
    let mut plain = Model::new(Architecture::VggSmall, bench::MODEL_SEED);
    bench::train(&mut plain, &mut LocalExecutor::new(2), &train, 1).expect("plain training");
    let plain_accuracy = bench::accuracy(&plain, &test, 2).expect("evaluates");
    assert!(
        plain_accuracy > 0.6,
        "plain training did not learn: {plain_accuracy}"
    );
    let (mut channel, worker) = spawn_worker(2);
    for basis in [Basis::Sample, Basis::Batch] {
        let mut model = Model::new(Architecture::VggSmall, bench::MODEL_SEED);
        let mut split = SplitExecutor::new(&mut channel, &model, asym1(basis));
        split.load_model(&model).expect("loads");
        bench::train_split(&mut model, &mut split, &train, 1).expect("split training");
        drop(split);
        let split_accuracy = bench::accuracy(&model, &test, 2).expect("evaluates");
        eprintln!(
            "plain {plain_accuracy:.4}, split ({} basis) {split_accuracy:.4}",
            basis.name()
        );
        assert!(
            (plain_accuracy - split_accuracy).abs() <= 0.01,
            "plain {plain_accuracy} vs split ({} basis) {split_accuracy}",
            basis.name()
        );
    }
    drop(channel);
    worker
        .join()
        .expect("joins")
        .expect("the worker ends cleanly");
}
