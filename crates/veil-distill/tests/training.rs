//! The trainer on a tiny synthetic fixture (no download): every trainable variable gets
//! a gradient, training reduces the loss for teachers and for distilled students, and a
//! distilled `quad` student exported by the trainer compiles, agrees with candle in
//! veil's plain executor and runs securely within the documented bound.

use candle_core::{D, Device, Tensor};
use veil_core::sampling::SplitMix64;
use veil_data::fashion::Images;
use veil_distill::cnn::{Activation, Cnn, SIDE, Shape};
use veil_distill::config::{Distillation, Phase};
use veil_distill::train::{Supervision, accuracy, correct, logits, train};

/// `count` noisy images of four classes: a bright quadrant (top-left, top-right,
/// bottom-left, bottom-right) on a dark background.
fn fixture(count: usize, seed: u64) -> Images {
    let mut sampler = SplitMix64::new(seed);
    let mut images = Images::default();
    for index in 0..count {
        let class = index % 4;
        for row in 0..SIDE {
            for column in 0..SIDE {
                let quadrant = usize::from(row >= SIDE / 2) * 2 + usize::from(column >= SIDE / 2);
                let base = if quadrant == class { 0.8 } else { 0.1 };
                let noise = sampler.next_normal() as f32 * 0.1;
                images.images.push((base + noise).clamp(0.0, 1.0));
            }
        }
        images.labels.push(class as u8);
    }
    images
}

fn shape(residual: bool, activation: Activation) -> Shape {
    Shape {
        residual,
        width: 2,
        activation,
    }
}

#[test]
fn every_trainable_variable_gets_a_gradient() {
    let device = Device::Cpu;
    let images = fixture(8, 1);
    for residual in [false, true] {
        for activation in [Activation::Relu, Activation::Quad] {
            let model = Cnn::new(shape(residual, activation), &device, 1).unwrap();
            let input =
                Tensor::from_vec(images.images.clone(), (8, 1, SIDE, SIDE), &device).unwrap();
            let labels: Vec<u32> = images.labels.iter().map(|&l| u32::from(l)).collect();
            let labels = Tensor::from_vec(labels, 8, &device).unwrap();
            let logits = model.forward(&input, true).unwrap();
            let loss = candle_nn::loss::cross_entropy(&logits, &labels).unwrap();
            let gradients = loss.backward().unwrap();
            let trainable = model.trainable().unwrap();
            assert!(trainable.len() >= 20, "{} variables", trainable.len());
            for variable in trainable {
                let gradient = gradients
                    .get(variable.as_tensor())
                    .unwrap_or_else(|| panic!("{:?}: a variable without a gradient", model.shape));
                let size = gradient
                    .abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap();
                assert!(size > 0.0, "{:?}: a zero gradient", model.shape);
            }
        }
    }
}

#[test]
fn training_reduces_the_loss_and_distillation_trains_a_student() {
    let device = Device::Cpu;
    let images = fixture(64, 2);
    let phase = Phase {
        epochs: 6,
        learning_rate: 1e-2,
    };
    let teacher = Cnn::new(shape(true, Activation::Relu), &device, 2).unwrap();
    let losses = train(
        &teacher,
        &images,
        (phase, 16),
        Supervision::Labels,
        (3, "teacher", true),
    )
    .unwrap();
    assert!(
        losses[losses.len() - 1] < 0.5 * losses[0],
        "teacher losses {losses:?}"
    );
    assert!(accuracy(&teacher, &images).unwrap() >= 0.9);

    let student = Cnn::initialised_from(shape(true, Activation::Quad), &teacher, &device).unwrap();
    let distillation = Distillation {
        temperature: 4.0,
        soft_weight: 0.9,
    };
    let supervision = Supervision::Distilled(&teacher, distillation);
    let losses = train(
        &student,
        &images,
        (phase, 16),
        supervision,
        (4, "student", true),
    )
    .unwrap();
    assert!(
        losses[losses.len() - 1] < losses[0],
        "student losses {losses:?}"
    );
    assert!(accuracy(&student, &images).unwrap() >= 0.9);
    // Image by image, as the paired test reads it: the same count, each against its
    // label by the student's own logits.
    let right = correct(&student, &images).unwrap();
    assert_eq!(right.len(), images.len());
    let count = right.iter().filter(|&&is| is).count();
    assert_eq!(
        count as f64 / right.len() as f64,
        accuracy(&student, &images).unwrap()
    );
    for (index, &is) in right.iter().enumerate().take(8) {
        let pixels = &images.images[index * SIDE * SIDE..(index + 1) * SIDE * SIDE];
        let scores = logits(&student, pixels).unwrap();
        let predicted = veil_model::plain::argmax_rows(&scores, scores.len())[0];
        assert_eq!(
            is,
            predicted == images.labels[index] as usize,
            "image {index}"
        );
    }
    // The student's soft targets are the teacher's: they now agree on most images.
    let input = Tensor::from_vec(images.images.clone(), (64, 1, SIDE, SIDE), &device).unwrap();
    let agree = teacher
        .forward(&input, false)
        .unwrap()
        .argmax(D::Minus1)
        .unwrap()
        .eq(&student
            .forward(&input, false)
            .unwrap()
            .argmax(D::Minus1)
            .unwrap())
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .mean_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(agree >= 0.9, "agreement {agree}");
}

/// train → export → compile → plain executor and secure run, with no hand-editing.
#[test]
fn a_distilled_student_compiles_and_runs_securely() {
    let device = Device::Cpu;
    let images = fixture(32, 5);
    let phase = Phase {
        epochs: 3,
        learning_rate: 1e-2,
    };
    let teacher = Cnn::new(shape(true, Activation::Relu), &device, 2).unwrap();
    train(
        &teacher,
        &images,
        (phase, 16),
        Supervision::Labels,
        (6, "teacher", true),
    )
    .unwrap();
    let student = Cnn::initialised_from(shape(true, Activation::Quad), &teacher, &device).unwrap();
    let supervision = Supervision::Distilled(
        &teacher,
        Distillation {
            temperature: 2.0,
            soft_weight: 0.5,
        },
    );
    train(
        &student,
        &images,
        (phase, 16),
        supervision,
        (7, "student", true),
    )
    .unwrap();

    let directory = std::env::temp_dir().join(format!("veil-distill-test-{}", std::process::id()));
    let (weights, architecture) =
        veil_distill::export(&student, &directory, "tiny-student").unwrap();
    let architecture = veil_model::import::Architecture::from_json(
        &std::fs::read_to_string(&architecture).unwrap(),
    )
    .unwrap();
    let plan =
        veil_model::import::compile(&architecture, &std::fs::read(&weights).unwrap(), "exact")
            .unwrap();
    std::fs::remove_dir_all(&directory).ok();
    let quadratics = plan
        .public
        .graph
        .nodes
        .iter()
        .filter(|node| node.op.name() == "quadratic")
        .count();
    assert_eq!(quadratics, 6, "every activation is the learned quadratic");
    assert!(
        plan.public
            .graph
            .nodes
            .iter()
            .all(|node| node.op.name() != "relu")
    );

    let pixels = SIDE * SIDE;
    let mut samples = Vec::new();
    let mut worst_bound: f64 = 0.0;
    for index in 0..4 {
        let image = &images.images[index * pixels..(index + 1) * pixels];
        let expected = logits(&student, image).unwrap();
        let plain = veil_model::plain::run_plain(&plan, image, 1).unwrap();
        for (p, e) in plain.iter().zip(&expected) {
            // f32 candle against veil's f64-accumulating plain executor, batch norm folded.
            assert!(
                (p - e).abs() <= 1e-3 * (1.0 + e.abs()),
                "plain {p}, candle {e}"
            );
        }
        let bound = veil_exec::error_bound(&plan, image).unwrap();
        assert!(bound.is_finite(), "bound {bound}");
        worst_bound = worst_bound.max(bound);
        samples.push((image, usize::from(images.labels[index])));
    }
    let report = veil_serve::demo::run_demo(&plan, samples.iter().copied()).unwrap();
    assert_eq!(report.samples, 4);
    assert_eq!(report.agree, 4, "secure and plain labels agree");
    assert!(
        f64::from(report.max_error) <= worst_bound,
        "secure against plain: {} above the bound {worst_bound}",
        report.max_error
    );
    // The worst-case bound compounds every layer's Lipschitz constant; the errors seen
    // are a few hundred ulps. A regression far beyond that fails here first.
    assert!(
        report.max_error <= 1e-2,
        "secure against plain: {}",
        report.max_error
    );
}

#[test]
fn the_initialisation_is_the_seed_s() {
    let device = Device::Cpu;
    let images = fixture(4, 8);
    let image = &images.images[..SIDE * SIDE];
    let draw = |seed| {
        let model = Cnn::new(shape(false, Activation::Relu), &device, seed).unwrap();
        logits(&model, image).unwrap()
    };
    assert_eq!(draw(5), draw(5), "one seed, one model");
    assert_ne!(draw(5), draw(6), "another seed, another model");
}
