//! Training the default MLP on the digits and exporting it.

use std::time::Instant;

use veil_train::digits::{CLASSES, FEATURES, load, split};
use veil_train::mlp::{TrainingConfig, train};

use crate::digits_path;

#[test]
fn default_config_reaches_95_percent() {
    let data = load(&digits_path()).expect("the repository's digits file loads");
    let (train_set, test_set) = split(&data, 0.2, 0);
    let config = TrainingConfig::default();
    let start = Instant::now();
    let (model, losses) = train(&train_set, &config);
    let elapsed = start.elapsed();
    let accuracy = model.accuracy(&test_set);
    println!(
        "trained {:?} for {} epochs in {elapsed:.2?}: loss {:.4} → {:.4}, train accuracy {:.4}, test accuracy {accuracy:.4}",
        model.sizes,
        config.epochs,
        losses.first().copied().unwrap_or(f32::NAN),
        losses.last().copied().unwrap_or(f32::NAN),
        model.accuracy(&train_set),
    );
    assert_eq!(model.sizes, vec![FEATURES, 32, CLASSES]);
    assert_eq!(losses.len(), config.epochs);
    assert!(losses.iter().all(|loss| loss.is_finite()));
    assert!(
        losses.last() < losses.first(),
        "the loss must fall: {losses:?}"
    );
    assert!(accuracy >= 0.95, "test accuracy {accuracy}");
}

#[test]
fn training_is_deterministic() {
    let data = load(&digits_path()).expect("the repository's digits file loads");
    let (train_set, _) = split(&data, 0.2, 5);
    let config = TrainingConfig {
        hidden: vec![8],
        epochs: 2,
        seed: 9,
        ..TrainingConfig::default()
    };
    let first = train(&train_set, &config);
    assert_eq!(first, train(&train_set, &config));
    let other_seed = train(&train_set, &TrainingConfig { seed: 10, ..config });
    assert_ne!(first.0, other_seed.0);
}

#[test]
fn safetensors_round_trip() {
    let data = load(&digits_path()).expect("the repository's digits file loads");
    let config = TrainingConfig {
        hidden: vec![16, 12],
        epochs: 1,
        ..TrainingConfig::default()
    };
    let (model, _) = train(&data, &config);
    let bytes = model.to_safetensors().expect("exporting");
    let tensors = veil_model::import::read_safetensors(&bytes).expect("reading back");
    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "fc1.bias",
            "fc1.weight",
            "fc2.bias",
            "fc2.weight",
            "fc3.bias",
            "fc3.weight"
        ]
    );
    for (index, (weight, bias)) in model.layers.iter().enumerate() {
        let (inputs, outputs) = (model.sizes[index], model.sizes[index + 1]);
        let (shape, values) = &tensors[&format!("fc{}.weight", index + 1)];
        assert_eq!((shape, values), (&vec![outputs, inputs], weight));
        let (shape, values) = &tensors[&format!("fc{}.bias", index + 1)];
        assert_eq!((shape, values), (&vec![outputs], bias));
    }
}
