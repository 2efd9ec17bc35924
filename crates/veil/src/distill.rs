//! `veil distill`: the CNN zoo trained on Fashion-MNIST: per architecture (plain,
//! residual) a ReLU teacher M, then the `quad` student M̂ four ways (initialised from
//! scratch or from M, trained on labels or by knowledge distillation from M); each
//! exported for `veil compile`, with the plain (f32) test accuracies in
//! distill-report.json, and McNemar's exact test of each distilled student against
//! the labels-only one from the same start, image by image.

use std::path::Path;

use anyhow::{Context, Result};
use veil_data::fashion::Images;
use veil_distill::cnn::{Activation, Cnn, Shape};
use veil_distill::compare::{Paired, fraction_right};
use veil_distill::config::{DistillConfig, Phase};
use veil_distill::train::{Supervision, correct, train};

use crate::earlier::EarlierReport;

/// One trained model's line of the report.
#[derive(serde::Serialize)]
struct Trained {
    name: String,
    initialised_from: &'static str,
    supervision: &'static str,
    architecture: String,
    weights: String,
    plain_accuracy: f64,
    /// A reused model's as the folder's earlier report recorded them (empty if it did
    /// not).
    epoch_losses: Vec<f64>,
    /// A reused model's from the earlier report (0 if it did not record it).
    train_seconds: f64,
    /// Whether it labels each test image correctly (for the paired test).
    #[serde(skip)]
    outcomes: Vec<bool>,
}

fn images(part: veil_data::fashion::Part, count: usize) -> Result<Images> {
    let directory = veil_data::fashion::directory()
        .context("Fashion-MNIST is not fetched: run scripts/fetch fashion")?;
    Ok(veil_data::fashion::load(&directory, part)?.first(count))
}

pub(crate) fn distill(
    config_path: &Path,
    out: &Path,
    (plain_only, reuse, quiet): (bool, bool, bool),
) -> Result<()> {
    let config = DistillConfig::load(config_path)?;
    let teacher_training = images(veil_data::fashion::Part::Train, config.teacher_images)?;
    let training = images(veil_data::fashion::Part::Train, config.student_images)?;
    let test = images(veil_data::fashion::Part::Test, config.test_images)?;
    eprintln!(
        "veil distill: Fashion-MNIST, {} training images for the teachers and {} for the students, {} test images, width {}, {} teacher and {} student epochs",
        teacher_training.len(),
        training.len(),
        test.len(),
        config.width,
        config.teacher.epochs,
        config.student.epochs
    );
    // Calibration inputs for `veil compile --calibrate`: the first 32 training images.
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let calibration = out.join("calibration.txt");
    let pixels = veil_distill::cnn::SIDE * veil_distill::cnn::SIDE;
    let samples = training.len().min(32) * pixels;
    let numbers: Vec<String> = training.images[..samples]
        .iter()
        .map(f32::to_string)
        .collect();
    std::fs::write(&calibration, numbers.join(" "))
        .with_context(|| format!("writing {}", calibration.display()))?;
    let device = candle_core::Device::Cpu;
    let earlier = EarlierReport::read(&out.join("distill-report.json"), reuse);
    let mut report = Vec::new();
    let residuals: &[bool] = if plain_only { &[false] } else { &[false, true] };
    for &residual in residuals {
        let shape = |activation| Shape {
            residual,
            width: config.width,
            activation,
        };
        // Trains (or, with `reuse`, loads) one model and reports it.
        let mut run = |name: String,
                       model: &Cnn,
                       (initialised_from, supervision): (&'static str, Supervision<'_>),
                       (phase, data): (Phase, &Images),
                       seed|
         -> Result<()> {
            let weights = out.join(format!("{name}.safetensors"));
            let started = std::time::Instant::now();
            let (epoch_losses, train_seconds) = if reuse && weights.is_file() {
                model
                    .load(&weights)
                    .with_context(|| format!("reusing {}", weights.display()))?;
                earlier.training(&name).unwrap_or_default()
            } else {
                let losses = train(
                    model,
                    data,
                    (phase, config.batch),
                    supervision,
                    (seed, &name, quiet),
                )?;
                (losses, started.elapsed().as_secs_f64())
            };
            let outcomes = correct(model, &test)?;
            let plain_accuracy = fraction_right(&outcomes);
            let (weights, architecture) = veil_distill::export(model, out, &name)?;
            eprintln!(
                "{name:>36}: plain accuracy {plain_accuracy:.4} after {train_seconds:.0} s (losses {epoch_losses:.3?})"
            );
            let supervision = match supervision {
                Supervision::Labels => "labels",
                Supervision::Distilled(..) => "distillation",
            };
            report.push(Trained {
                name,
                initialised_from,
                supervision,
                architecture: architecture.display().to_string(),
                weights: weights.display().to_string(),
                plain_accuracy,
                epoch_losses,
                train_seconds,
                outcomes,
            });
            Ok(())
        };
        let teacher = Cnn::new(shape(Activation::Relu), &device, config.seed)?;
        let teacher_name = shape(Activation::Relu).name();
        let from_scratch = ("scratch", Supervision::Labels);
        run(
            teacher_name,
            &teacher,
            from_scratch,
            (config.teacher, &teacher_training),
            config.seed,
        )?;
        let quad = shape(Activation::Quad);
        let distilled = Supervision::Distilled(&teacher, config.distillation);
        // The 2×2 grid: initialised from scratch or from M, trained on labels or by
        // distillation (the recipe is M's weights and distillation).
        for (initialised_from, supervision, suffix) in [
            ("scratch", Supervision::Labels, "scratch-labels"),
            ("scratch", distilled, "scratch-distilled"),
            ("teacher", Supervision::Labels, "labels"),
            ("teacher", distilled, "distilled"),
        ] {
            let student = if initialised_from == "teacher" {
                Cnn::initialised_from(quad, &teacher, &device)?
            } else {
                Cnn::new(quad, &device, config.seed + 1)?
            };
            let name = format!("{}-{suffix}", quad.name());
            run(
                name,
                &student,
                (initialised_from, supervision),
                (config.student, &training),
                config.seed + 1,
            )?;
        }
    }
    // Each distilled student against the labels-only one from the same start.
    let mut comparisons = serde_json::Map::new();
    for distilled in report
        .iter()
        .filter(|trained| trained.name.ends_with("distilled"))
    {
        let labels_name = distilled.name.replace("distilled", "labels");
        let Some(labels) = report.iter().find(|trained| trained.name == labels_name) else {
            continue;
        };
        let paired = Paired::new(&distilled.outcomes, &labels.outcomes);
        eprintln!(
            "{:>36}: {:+.2} points ({} images only {} gets right, {} only {}; McNemar p = {:.3})",
            "distilled against labels",
            paired.difference_points(),
            paired.only_first,
            distilled.name,
            paired.only_second,
            labels.name,
            paired.p_value
        );
        comparisons.insert(distilled.name.clone(), serde_json::json!(paired));
    }
    let path = out.join("distill-report.json");
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "config": config_path.display().to_string(),
        "teacher_images": teacher_training.len(),
        "student_images": training.len(),
        "test_images": test.len(),
        "models": report,
        "distilled_against_labels": comparisons,
    }))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {} and each model's NAME.json and NAME.safetensors; compile one with `veil compile --arch DIR/NAME.json --weights DIR/NAME.safetensors --out DIR`",
        path.display()
    );
    Ok(())
}
