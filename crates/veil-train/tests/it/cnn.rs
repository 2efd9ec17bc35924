//! Training the digits CNN, its forward pass against a direct computation, and its export.

use std::time::Instant;

use veil_train::cnn::{CONV1_CHANNELS, CONV2_CHANNELS, Cnn, CnnConfig, FLATTENED, KERNEL, train};
use veil_train::digits::{CLASSES, FEATURES, load, split};

use crate::digits_path;

/// A deterministic pseudo-random value in `[-1, 1)` for position `index` of stream
/// `stream` (a hash, so that the test does not depend on the crate's private RNG).
fn pseudo_random(stream: u64, index: usize) -> f32 {
    let mut z = stream
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(index as u64)
        .wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z ^= z >> 31;
    z = z.wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 29;
    (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

/// A model with pseudo-random weights of roughly trained magnitudes.
fn random_model() -> Cnn {
    let values = |stream: u64, count: usize, scale: f32| -> Vec<f32> {
        (0..count)
            .map(|index| pseudo_random(stream, index) * scale)
            .collect()
    };
    Cnn {
        conv1_weight: values(1, CONV1_CHANNELS * KERNEL * KERNEL, 0.6),
        conv1_bias: values(2, CONV1_CHANNELS, 0.2),
        conv2_weight: values(3, CONV2_CHANNELS * CONV1_CHANNELS * KERNEL * KERNEL, 0.3),
        conv2_bias: values(4, CONV2_CHANNELS, 0.2),
        fc_weight: values(5, CLASSES * FLATTENED, 0.4),
        fc_bias: values(6, CLASSES, 0.2),
    }
}

/// PyTorch's `conv2d` (stride 1, padding 1) written from its definition, in f64, on a
/// `[channels, side, side]` map: `out[o, y, x] = b[o] + Σ w[o, c, i, j] · in[c, y+i−1, x+j−1]`,
/// with zero outside the image.
fn reference_conv(
    input: &[f64],
    channels: usize,
    side: usize,
    weight: &[f32],
    bias: &[f32],
) -> Vec<f64> {
    let out_channels = bias.len();
    let mut output = vec![0.0; out_channels * side * side];
    for o in 0..out_channels {
        for y in 0..side {
            for x in 0..side {
                let mut sum = f64::from(bias[o]);
                for c in 0..channels {
                    for i in 0..KERNEL {
                        for j in 0..KERNEL {
                            let (row, column) = (y + i, x + j);
                            if row < 1 || column < 1 || row > side || column > side {
                                continue;
                            }
                            let w = weight[((o * channels + c) * KERNEL + i) * KERNEL + j];
                            sum += f64::from(w) * input[(c * side + row - 1) * side + column - 1];
                        }
                    }
                }
                output[(o * side + y) * side + x] = sum;
            }
        }
    }
    output
}

/// A 2×2 stride-2 pool of a `[channels, side, side]` map, combining each window with `combine`.
fn reference_pool(
    input: &[f64],
    channels: usize,
    side: usize,
    combine: fn([f64; 4]) -> f64,
) -> Vec<f64> {
    let half = side / 2;
    let mut output = Vec::with_capacity(channels * half * half);
    for c in 0..channels {
        for y in 0..half {
            for x in 0..half {
                let at = |dy: usize, dx: usize| input[(c * side + 2 * y + dy) * side + 2 * x + dx];
                output.push(combine([at(0, 0), at(0, 1), at(1, 0), at(1, 1)]));
            }
        }
    }
    output
}

/// The whole network from its definition.
fn reference_forward(model: &Cnn, input: &[f32]) -> Vec<f64> {
    let relu = |values: Vec<f64>| -> Vec<f64> { values.into_iter().map(|v| v.max(0.0)).collect() };
    let input: Vec<f64> = input.iter().copied().map(f64::from).collect();
    let conv1 = relu(reference_conv(
        &input,
        1,
        8,
        &model.conv1_weight,
        &model.conv1_bias,
    ));
    let pool1 = reference_pool(&conv1, CONV1_CHANNELS, 8, |w| {
        w.into_iter().fold(f64::NEG_INFINITY, f64::max)
    });
    let conv2 = relu(reference_conv(
        &pool1,
        CONV1_CHANNELS,
        4,
        &model.conv2_weight,
        &model.conv2_bias,
    ));
    let flat = reference_pool(&conv2, CONV2_CHANNELS, 4, |w| w.iter().sum::<f64>() / 4.0);
    assert_eq!(flat.len(), FLATTENED);
    (0..CLASSES)
        .map(|class| {
            f64::from(model.fc_bias[class])
                + (0..FLATTENED)
                    .map(|i| f64::from(model.fc_weight[class * FLATTENED + i]) * flat[i])
                    .sum::<f64>()
        })
        .collect()
}

#[test]
fn forward_matches_the_definition() {
    let model = random_model();
    let data = load(&digits_path()).expect("the repository's digits file loads");
    let hand_made: Vec<f32> = (0..FEATURES).map(|i| (i % 7) as f32 / 6.0).collect();
    let samples = [
        hand_made.as_slice(),
        data.sample(0),
        data.sample(1),
        data.sample(2),
    ];
    for sample in samples {
        let found = model.forward(sample);
        let expected = reference_forward(&model, sample);
        assert_eq!(found.len(), CLASSES);
        for (a, b) in found.iter().zip(&expected) {
            assert!(
                (f64::from(*a) - b).abs() <= 1e-4,
                "logits differ: {found:?} vs {expected:?}"
            );
        }
    }
}

#[test]
fn forward_of_a_hand_computed_network() {
    // conv1: channel 0 copies the image (centre tap 1), the other channels are 0.
    // pool1 then holds each 2×2 block's maximum; conv2 channel 0 sums each pixel's
    // in-image 3×3 neighbourhood of pool1 channel 0, minus 1 (its bias), and the average
    // pool averages it over 2×2 blocks. The linear layer reads that map's first value as
    // logit 0 and its last as logit 1, and passes a bias of 5 as logit 2.
    let mut model = Cnn {
        conv1_weight: vec![0.0; CONV1_CHANNELS * KERNEL * KERNEL],
        conv1_bias: vec![0.0; CONV1_CHANNELS],
        conv2_weight: vec![0.0; CONV2_CHANNELS * CONV1_CHANNELS * KERNEL * KERNEL],
        conv2_bias: vec![0.0; CONV2_CHANNELS],
        fc_weight: vec![0.0; CLASSES * FLATTENED],
        fc_bias: vec![0.0; CLASSES],
    };
    model.conv1_weight[4] = 1.0;
    model.conv2_weight[..KERNEL * KERNEL].fill(1.0);
    model.conv2_bias[0] = -1.0;
    model.fc_weight[0] = 1.0; // logit 0 ← pooled (0, 0, 0)
    model.fc_weight[FLATTENED + 3] = 1.0; // logit 1 ← pooled (0, 1, 1)
    model.fc_bias[2] = 5.0;

    // The image is 1 in its top-left 2×2 block and 0.5 in its bottom-right 4×4 quarter.
    let mut image = [0.0f32; FEATURES];
    for (row, column) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
        image[row * 8 + column] = 1.0;
    }
    for row in 4..8 {
        for column in 4..8 {
            image[row * 8 + column] = 0.5;
        }
    }
    // pool1 channel 0 (4×4): 1 at (0, 0), 0.5 on the bottom-right 2×2, 0 elsewhere.
    // conv2 channel 0 = ReLU(3×3 neighbourhood sum − 1):
    //   top-left 2×2 block: (0, 0), (0, 1) and (1, 0) see only the 1 → 0; (1, 1) also
    //   sees the 0.5 at (2, 2) → 0.5; average 0.125.
    //   bottom-right 2×2 block: each sees all four 0.5s and not the 1 → 1; average 1.
    let logits = model.forward(&image);
    let mut expected = [0.0f32; CLASSES];
    expected[0] = 0.125;
    expected[1] = 1.0;
    expected[2] = 5.0;
    assert_eq!(logits, expected);
    assert_eq!(model.predict(&image), 2);
}

#[test]
fn default_config_reaches_97_percent() {
    let data = load(&digits_path()).expect("the repository's digits file loads");
    let (train_set, test_set) = split(&data, 0.2, 0);
    let config = CnnConfig::default();
    let start = Instant::now();
    let (model, losses) = train(&train_set, &config);
    let elapsed = start.elapsed();
    let accuracy = model.accuracy(&test_set);
    println!(
        "trained the CNN for {} epochs in {elapsed:.2?}: loss {:.4} → {:.4}, train accuracy {:.4}, test accuracy {accuracy:.4}",
        config.epochs,
        losses.first().copied().unwrap_or(f32::NAN),
        losses.last().copied().unwrap_or(f32::NAN),
        model.accuracy(&train_set),
    );
    assert_eq!(losses.len(), config.epochs);
    assert!(losses.iter().all(|loss| loss.is_finite()));
    assert!(
        losses.last() < losses.first(),
        "the loss must fall: {losses:?}"
    );
    assert!(accuracy >= 0.97, "test accuracy {accuracy}");
}

#[test]
fn training_is_deterministic() {
    let data = load(&digits_path()).expect("the repository's digits file loads");
    let (train_set, _) = split(&data, 0.2, 5);
    let train_set = veil_train::digits::Dataset {
        features: train_set.features[..200 * FEATURES].to_vec(),
        labels: train_set.labels[..200].to_vec(),
    };
    let config = CnnConfig {
        epochs: 2,
        seed: 9,
        ..CnnConfig::default()
    };
    let first = train(&train_set, &config);
    assert_eq!(first, train(&train_set, &config));
    let other_seed = train(&train_set, &CnnConfig { seed: 10, ..config });
    assert_ne!(first.0, other_seed.0);
}

#[test]
fn safetensors_round_trip() {
    let model = random_model();
    let bytes = model.to_safetensors().expect("exporting");
    let tensors = veil_model::import::read_safetensors(&bytes).expect("reading back");
    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "conv1.bias",
            "conv1.weight",
            "conv2.bias",
            "conv2.weight",
            "fc.bias",
            "fc.weight"
        ]
    );
    let expected = [
        (
            "conv1.weight",
            vec![CONV1_CHANNELS, 1, KERNEL, KERNEL],
            &model.conv1_weight,
        ),
        ("conv1.bias", vec![CONV1_CHANNELS], &model.conv1_bias),
        (
            "conv2.weight",
            vec![CONV2_CHANNELS, CONV1_CHANNELS, KERNEL, KERNEL],
            &model.conv2_weight,
        ),
        ("conv2.bias", vec![CONV2_CHANNELS], &model.conv2_bias),
        ("fc.weight", vec![CLASSES, FLATTENED], &model.fc_weight),
        ("fc.bias", vec![CLASSES], &model.fc_bias),
    ];
    for (name, shape, values) in expected {
        assert_eq!(tensors[name], (shape, values.clone()), "{name}");
    }
}

#[test]
fn malformed_model_cannot_be_exported() {
    let mut model = random_model();
    model.conv2_weight.pop();
    assert!(model.to_safetensors().is_err());
}

#[test]
fn architecture_json_is_the_compilers_format() {
    let text = random_model().architecture_json("digits-cnn");
    let json: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    let expected = serde_json::json!({
        "name": "digits-cnn", "input": [1, 8, 8], "fractional_bits": 16, "layers": [
            {"op": "conv2d", "weight": "conv1.weight", "bias": "conv1.bias", "stride": 1, "padding": 1},
            {"op": "relu"},
            {"op": "max_pool2d", "kernel": 2, "stride": 2},
            {"op": "conv2d", "weight": "conv2.weight", "bias": "conv2.bias", "stride": 1, "padding": 1},
            {"op": "relu"},
            {"op": "avg_pool2d", "kernel": 2, "stride": 2},
            {"op": "flatten"},
            {"op": "linear", "weight": "fc.weight", "bias": "fc.bias"}]});
    assert_eq!(json, expected);
}
