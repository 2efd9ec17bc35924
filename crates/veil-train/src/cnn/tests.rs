//! The CNN trainer's unit tests: every layer's backward pass against finite
//! differences, and training end to end.

use super::*;

/// `count` normal values with standard deviation `scale`.
fn normals(rng: &mut SplitMix64, count: usize, scale: f64) -> Vec<f32> {
    (0..count)
        .map(|_| (rng.next_normal() * scale) as f32)
        .collect()
}

/// A trained-looking model: random weights and non-zero biases.
fn random_model(seed: u64) -> Cnn {
    let mut rng = SplitMix64::new(seed);
    let mut model = Cnn::initialise(&mut rng);
    for bias in [
        &mut model.conv1_bias,
        &mut model.conv2_bias,
        &mut model.fc_bias,
    ] {
        *bias = normals(&mut rng, bias.len(), 0.1);
    }
    model
}

/// The numeric derivative of `function` at `values[index]` by central differences.
fn numeric_derivative(
    values: &[f32],
    index: usize,
    epsilon: f32,
    function: &dyn Fn(&[f32]) -> f32,
) -> f32 {
    let mut nudged = values.to_vec();
    nudged[index] = values[index] + epsilon;
    let above = function(&nudged);
    nudged[index] = values[index] - epsilon;
    let below = function(&nudged);
    (above - below) / (2.0 * epsilon)
}

/// Asserts that `analytic[i]` is the derivative of `function` at `values[i]` for
/// every `i`, within an absolute and relative tolerance that f32 rounding allows.
fn assert_gradient(
    what: &str,
    values: &[f32],
    analytic: &[f32],
    epsilon: f32,
    function: &dyn Fn(&[f32]) -> f32,
) {
    assert_eq!(values.len(), analytic.len(), "{what}: gradient length");
    for (index, &expected) in analytic.iter().enumerate() {
        let numeric = numeric_derivative(values, index, epsilon, function);
        assert!(
            (numeric - expected).abs() <= 2e-3 + 1e-2 * expected.abs(),
            "{what}[{index}]: numeric {numeric} vs analytic {expected}"
        );
    }
}

/// `Σ weights_i · values_i`: a scalar "loss" whose gradient with respect to `values`
/// is `weights`, used to test one layer's backward pass on its own.
fn dot(weights: &[f32], values: &[f32]) -> f32 {
    weights.iter().zip(values).map(|(a, b)| a * b).sum()
}

#[test]
fn convolution_gradients_match_finite_differences() {
    // Non-square and multi-channel so that swapped axes or channels would show.
    let shape = Shape {
        channels: 2,
        height: 4,
        width: 5,
    };
    let out_channels = 3;
    let mut rng = SplitMix64::new(1);
    let input = normals(&mut rng, shape.len(), 1.0);
    let weight = normals(
        &mut rng,
        out_channels * shape.channels * KERNEL * KERNEL,
        0.5,
    );
    let bias = normals(&mut rng, out_channels, 0.5);
    let upstream = normals(&mut rng, out_channels * shape.plane(), 1.0);
    let output_len = out_channels * shape.plane();
    let loss = |input: &[f32], weight: &[f32], bias: &[f32]| {
        let mut output = vec![0.0; output_len];
        conv2d_forward(input, shape, weight, bias, &mut output);
        dot(&upstream, &output)
    };

    let mut weight_gradient = vec![0.0; weight.len()];
    let mut bias_gradient = vec![0.0; bias.len()];
    let mut input_gradient = vec![0.0; input.len()];
    conv2d_backward(
        &input,
        shape,
        &weight,
        &upstream,
        &mut weight_gradient,
        &mut bias_gradient,
        Some(&mut input_gradient),
    );
    assert_gradient("conv input", &input, &input_gradient, 1e-2, &|x| {
        loss(x, &weight, &bias)
    });
    assert_gradient("conv weight", &weight, &weight_gradient, 1e-2, &|w| {
        loss(&input, w, &bias)
    });
    assert_gradient("conv bias", &bias, &bias_gradient, 1e-2, &|b| {
        loss(&input, &weight, b)
    });
}

#[test]
fn convolution_pads_with_zeros() {
    // One input channel, one output channel, all taps 1: each output is the sum of
    // its in-image 3×3 neighbourhood, so corners see 4 ones and edges 6.
    let shape = Shape {
        channels: 1,
        height: 3,
        width: 4,
    };
    let mut output = vec![0.0; shape.len()];
    conv2d_forward(&[1.0; 12], shape, &[1.0; 9], &[0.5], &mut output);
    let expected = [4.0, 6.0, 6.0, 4.0, 6.0, 9.0, 9.0, 6.0, 4.0, 6.0, 6.0, 4.0];
    let expected: Vec<f32> = expected.iter().map(|value| value + 0.5).collect();
    assert_eq!(output, expected);
}

#[test]
fn pool_gradients_match_finite_differences() {
    // Odd sides check PyTorch's floor rounding: the last row and column belong to no
    // window and get zero gradient.
    let shape = Shape {
        channels: 3,
        height: 5,
        width: 7,
    };
    let pooled = shape.pooled();
    let mut rng = SplitMix64::new(2);
    // Distinct values at least 0.05 apart, so that a nudge of 1e-2 never changes which
    // value of a window is the maximum (the max pool is only piecewise linear).
    let mut input: Vec<f32> = (0..shape.len()).map(|index| index as f32 * 0.05).collect();
    rng.shuffle(&mut input);
    let upstream = normals(&mut rng, pooled.len(), 1.0);

    let max_loss = |input: &[f32]| {
        let mut output = vec![0.0; pooled.len()];
        let mut source = vec![0; pooled.len()];
        max_pool_forward(input, shape, &mut output, &mut source);
        dot(&upstream, &output)
    };
    let mut output = vec![0.0; pooled.len()];
    let mut source = vec![0; pooled.len()];
    max_pool_forward(&input, shape, &mut output, &mut source);
    let mut input_gradient = vec![f32::NAN; input.len()];
    max_pool_backward(&upstream, &source, &mut input_gradient);
    assert_gradient("max pool input", &input, &input_gradient, 1e-2, &max_loss);
    assert_eq!(
        input_gradient.iter().filter(|&&g| g != 0.0).count(),
        pooled.len(),
        "one input per window receives the gradient"
    );

    let average_loss = |input: &[f32]| {
        let mut output = vec![0.0; pooled.len()];
        average_pool_forward(input, shape, &mut output);
        dot(&upstream, &output)
    };
    let mut input_gradient = vec![f32::NAN; input.len()];
    average_pool_backward(&upstream, shape, &mut input_gradient);
    assert_gradient(
        "average pool input",
        &input,
        &input_gradient,
        1e-2,
        &average_loss,
    );
}

#[test]
fn linear_gradients_match_finite_differences() {
    let (inputs, outputs) = (6, 4);
    let mut rng = SplitMix64::new(3);
    let input = normals(&mut rng, inputs, 1.0);
    let weight = normals(&mut rng, inputs * outputs, 0.5);
    let bias = normals(&mut rng, outputs, 0.5);
    let upstream = normals(&mut rng, outputs, 1.0);
    let loss = |input: &[f32], weight: &[f32], bias: &[f32]| {
        let mut output = vec![0.0; outputs];
        linear_forward(input, weight, bias, &mut output);
        dot(&upstream, &output)
    };
    let mut weight_gradient = vec![0.0; weight.len()];
    let mut bias_gradient = vec![0.0; bias.len()];
    let mut input_gradient = vec![0.0; input.len()];
    linear_backward(
        &input,
        &weight,
        &upstream,
        &mut weight_gradient,
        &mut bias_gradient,
        Some(&mut input_gradient),
    );
    assert_gradient("linear input", &input, &input_gradient, 1e-2, &|x| {
        loss(x, &weight, &bias)
    });
    assert_gradient("linear weight", &weight, &weight_gradient, 1e-2, &|w| {
        loss(&input, w, &bias)
    });
    assert_gradient("linear bias", &bias, &bias_gradient, 1e-2, &|b| {
        loss(&input, &weight, b)
    });
}

#[test]
fn network_gradients_match_finite_differences() {
    // The whole chain (ReLUs, both pools and the loss) for every parameter. The loss
    // is only piecewise smooth: a nudge that switches a ReLU or changes a max pool's
    // winner spans a kink, where a central difference means nothing. Such checks are
    // skipped, and there must be few of them.
    let model = random_model(4);
    let mut rng = SplitMix64::new(5);
    let input: Vec<f32> = (0..FEATURES).map(|_| rng.next_f64() as f32).collect();
    let label = 7;
    // The loss and the activation pattern (which ReLUs pass, which value each max
    // pool takes) that fixes the smooth piece the model lies on.
    let evaluate = |model: &Cnn| {
        let mut activations = Activations::new();
        model.forward_keep(&input, &mut activations);
        let mut gradient = vec![0.0; CLASSES];
        let loss = softmax_cross_entropy(&activations.logits, label, &mut gradient);
        let passing: Vec<bool> = activations
            .conv1
            .iter()
            .chain(&activations.conv2)
            .map(|&value| value > 0.0)
            .collect();
        (loss, passing, activations.pool1_source)
    };

    let mut activations = Activations::new();
    let mut scratch = ActivationGradients::new();
    let mut gradient = Cnn::zeros();
    model.forward_keep(&input, &mut activations);
    softmax_cross_entropy(&activations.logits, label, &mut scratch.logits);
    model.backward(&activations, &mut scratch, &mut gradient);

    let (_, base_passing, base_sources) = evaluate(&model);
    let epsilon = 1e-3;
    let (mut checked, mut skipped) = (0, 0);
    for tensor in 0..model.named_tensors().len() {
        let name = model.named_tensors()[tensor].0;
        let analytic = gradient.named_tensors()[tensor].2.to_vec();
        assert!(
            analytic.iter().any(|&g| g != 0.0),
            "{name}: the gradient must reach every tensor"
        );
        for (index, &expected) in analytic.iter().enumerate() {
            let nudged = |delta: f32| {
                let mut copy = model.clone();
                copy.tensors_mut()[tensor][index] += delta;
                evaluate(&copy)
            };
            let (above, above_passing, above_sources) = nudged(epsilon);
            let (below, below_passing, below_sources) = nudged(-epsilon);
            let smooth = [
                (&above_passing, &above_sources),
                (&below_passing, &below_sources),
            ]
            .iter()
            .all(|&(passing, sources)| *passing == base_passing && *sources == base_sources);
            if !smooth {
                skipped += 1;
                continue;
            }
            checked += 1;
            let numeric = (above - below) / (2.0 * epsilon);
            assert!(
                (numeric - expected).abs() <= 2e-3 + 1e-2 * expected.abs(),
                "{name}[{index}]: numeric {numeric} vs analytic {expected}"
            );
        }
    }
    assert!(
        skipped * 100 <= checked,
        "{skipped} of {} checks span a kink",
        checked + skipped
    );
}

#[test]
fn softmax_cross_entropy_of_equal_logits_is_log_classes() {
    let mut gradient = vec![0.0; CLASSES];
    let loss = softmax_cross_entropy(&[2.0; CLASSES], 3, &mut gradient);
    assert!((loss - (CLASSES as f32).ln()).abs() < 1e-6);
    assert!((gradient[3] - (0.1 - 1.0)).abs() < 1e-6);
    assert!((gradient[0] - 0.1).abs() < 1e-6);
}

#[test]
fn architecture_json_escapes_the_name() {
    let json: serde_json::Value =
        serde_json::from_str(&Cnn::zeros().architecture_json("a \"quoted\" name"))
            .expect("valid JSON");
    assert_eq!(json["name"], "a \"quoted\" name");
}

#[test]
fn degenerate_configurations_do_not_panic() {
    let empty = Dataset::default();
    let (model, losses) = train(
        &empty,
        &CnnConfig {
            epochs: 2,
            ..CnnConfig::default()
        },
    );
    assert_eq!(losses.len(), 2);
    assert!(losses.iter().all(|loss| loss.is_nan()));
    assert_eq!(model.accuracy(&empty), 0.0);

    let data = Dataset {
        features: vec![0.5; 2 * FEATURES],
        labels: vec![1, 2],
    };
    let config = CnnConfig {
        epochs: 2,
        batch_size: 0,
        ..CnnConfig::default()
    };
    let (model, losses) = train(&data, &config);
    assert!(losses.iter().all(|loss| loss.is_finite()));
    assert_eq!(model.forward(data.sample(0)).len(), CLASSES);
}

#[test]
#[should_panic(expected = "fc.bias must have shape")]
fn malformed_model_panics_with_the_tensor_name() {
    let mut model = Cnn::zeros();
    model.fc_bias.pop();
    model.forward(&[0.0; FEATURES]);
}
