//! `run_bench` end to end on synthetic images and tiny settings (the figures themselves
//! come from `veil split-bench` in release builds, not from here).

use veil_split::bench::{BenchOptions, Data, Mode, reference, run_bench};
use veil_split::network::Architecture;

use crate::{spawn_worker, synthetic_images};

fn tiny(mode: Mode) -> BenchOptions {
    let mut options = BenchOptions::new(Architecture::VggSmall, 0.8, mode);
    options.train_samples = 64;
    options.epochs = 1;
    options.test_samples = 40;
    options.infer_samples = 40;
    options.timed_steps = 2;
    options.repetitions = 2;
    options
}

fn data(count: usize, seed: u64) -> Data {
    Data {
        images: synthetic_images(count, seed),
        labels: (0..count).map(|index| (index % 10) as u8).collect(),
    }
}

#[test]
fn the_benchmark_measures_every_mode_and_the_split_agrees_with_plain() {
    let (train, test) = (data(64, 1), data(40, 2));
    let (mut channel, worker) = spawn_worker(2);
    let options = tiny(Mode::Infer);
    let plain = reference(&options, &train, &test, 2).expect("trains the reference");
    assert!(plain.other_order_accuracy.is_none());
    let inference = run_bench(&options, &mut channel, 2, &plain, &train, &test).expect("infers");
    let names: Vec<&str> = inference.runs.iter().map(|run| run.name).collect();
    assert_eq!(
        names,
        ["trusted-only", "untrusted-only", "blinded", "split"]
    );
    assert!(inference.agreement.iter().all(|(_, agree)| *agree == 40));
    let ratio = inference.macs_ratio("split").expect("a ratio");
    assert!(ratio > 0.0 && ratio < 1.0, "split MACs ratio {ratio}");
    assert_eq!(inference.macs_ratio("blinded"), Some(0.0));
    assert!(inference.blinded_offline.is_some_and(|(macs, _)| macs > 0));
    let options = tiny(Mode::Train);
    let plain = reference(&options, &train, &test, 2).expect("trains the references");
    let training = run_bench(&options, &mut channel, 2, &plain, &train, &test).expect("trains");
    let accuracies: Vec<&str> = training.accuracy.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        accuracies,
        [
            "plain training",
            "split training",
            "plain training, another order"
        ]
    );
    assert!(
        training
            .macs_ratio("split")
            .is_some_and(|ratio| ratio < 1.0)
    );
    drop(channel);
    worker
        .join()
        .expect("joins")
        .expect("the worker ends cleanly");
}
