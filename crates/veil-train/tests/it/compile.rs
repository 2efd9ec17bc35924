//! End to end with veil's compiler: the exported weights and architecture compile into a
//! plan whose plain f32 execution matches `Mlp::forward`.

use veil_model::import::{Architecture, compile};
use veil_model::plain::run_plain;
use veil_train::digits::{CLASSES, FEATURES, load, split};
use veil_train::mlp::{Mlp, TrainingConfig, train};

use crate::digits_path;

fn assert_plan_matches(model: &Mlp, inputs: &[f32], batch: usize) {
    let architecture = Architecture::from_json(&model.architecture_json("digits-mlp"))
        .expect("architecture parses");
    assert_eq!(architecture.name, "digits-mlp");
    assert_eq!(architecture.input, vec![FEATURES]);
    assert_eq!(architecture.fractional_bits, Some(16));
    let weights = model.to_safetensors().expect("exporting");
    let plan = compile(&architecture, &weights, "exact").expect("the compiler accepts the model");

    // One sample at a time, as the brief's `run_plain(&plan, input, 1)`.
    for sample in inputs.chunks_exact(FEATURES) {
        let expected = model.forward(sample);
        let found = run_plain(&plan, sample, 1).expect("plain execution");
        assert_eq!(found.len(), CLASSES);
        for (a, b) in expected.iter().zip(&found) {
            assert!(
                (a - b).abs() <= 1e-4,
                "logits differ: {expected:?} vs {found:?}"
            );
        }
    }
    // And as one batch.
    let found = run_plain(&plan, inputs, batch).expect("plain batch execution");
    let expected: Vec<f32> = inputs
        .chunks_exact(FEATURES)
        .flat_map(|sample| model.forward(sample))
        .collect();
    assert_eq!(found.len(), expected.len());
    assert!(
        expected
            .iter()
            .zip(&found)
            .all(|(a, b)| (a - b).abs() <= 1e-4)
    );
}

#[test]
fn compiled_plan_matches_forward() {
    let data = load(&digits_path()).expect("the repository's digits file loads");
    let (train_set, test_set) = split(&data, 0.2, 0);
    let (model, _) = train(
        &train_set,
        &TrainingConfig {
            epochs: 3,
            ..TrainingConfig::default()
        },
    );
    let batch = 25;
    assert_plan_matches(&model, &test_set.features[..batch * FEATURES], batch);
}

#[test]
fn deeper_and_linear_models_compile() {
    let data = load(&digits_path()).expect("the repository's digits file loads");
    let batch = 8;
    let inputs = &data.features[..batch * FEATURES];
    for hidden in [vec![], vec![24, 16]] {
        let (model, _) = train(
            &data,
            &TrainingConfig {
                hidden,
                epochs: 1,
                ..TrainingConfig::default()
            },
        );
        assert_plan_matches(&model, inputs, batch);
    }
}
