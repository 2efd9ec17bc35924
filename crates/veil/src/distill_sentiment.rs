//! `veil distill --task sentiment`: all-MiniLM-L6-v2 fine-tuned into the movie-review
//! sentiment teacher M (tanh(pooler([CLS])) and a linear classifier on top), then the
//! MPC-friendly student M̂ (the config's forms, e.g. the quadratic GELU and 2Quad)
//! initialised from M and trained twice on the same sentences and steps: by MPCFormer's
//! two stages (hidden states and attention scores, then logits), and on labels alone
//! (both, if the config says so, on TinyBERT-style sentence variants).
//! Each model is written as a Hugging Face directory for `veil compile --hf`, with its
//! plain (f32) dev and test accuracies in sentiment-report.json.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use veil_data::reviews::{self, SPLIT_SEED};
use veil_distill::augment::Augmenter;
use veil_distill::bert::{BertClassifier, Forms};
use veil_distill::compare::{Paired, fraction_right};
use veil_distill::config::SentimentConfig;
use veil_distill::sentiment::{Examples, Objective, correct, train};
use veil_model::approximation::Policy;

use crate::earlier::EarlierReport;

/// The label names, by index (a review's polarity).
const LABELS: [&str; 2] = ["negative", "positive"];

/// One trained model's line of the report.
#[derive(serde::Serialize)]
struct Trained {
    name: String,
    forms: String,
    supervision: &'static str,
    directory: String,
    dev_accuracy: f64,
    test_accuracy: f64,
    /// Per phase the model has been through, per epoch: a reused model's earlier
    /// phases as the folder's earlier report recorded them (empty where none did).
    epoch_losses: Vec<Vec<f64>>,
    /// Its training time, the earlier report's included.
    train_seconds: f64,
    /// Whether it labels each dev and each test sentence correctly (for the paired test).
    #[serde(skip)]
    outcomes: (Vec<bool>, Vec<bool>),
}

/// The fetched MiniLM directory and reviews file, or what to run.
fn sources() -> Result<(PathBuf, PathBuf)> {
    let (Some(model), Some(reviews)) = (
        veil_data::fetched::minilm_directory(),
        veil_data::fetched::movie_reviews_file(),
    ) else {
        bail!(
            "all-MiniLM-L6-v2 or the movie reviews are not fetched: run scripts/fetch minilm reviews"
        );
    };
    Ok((model, reviews))
}

pub(crate) fn distill(config_path: &Path, out: &Path, (reuse, quiet): (bool, bool)) -> Result<()> {
    let config = SentimentConfig::load(config_path)?;
    let forms = Forms::from_policy(&Policy::parse(&config.approximation)?)?;
    let (minilm, reviews_file) = sources()?;
    let split = reviews::load_split(&reviews_file)?;
    let tokenizer = minilm.join("tokenizer.json");
    let tokenize = |part: &[(String, usize)]| Examples::tokenize(&tokenizer, part, config.sequence);
    let teacher_training = tokenize(&split.train)?.first(config.teacher_sentences);
    let student_training = teacher_training.first(config.student_sentences);
    let (dev, test) = (tokenize(&split.dev)?, tokenize(&split.test)?);
    eprintln!(
        "veil distill: all-MiniLM-L6-v2 on the movie reviews at {} tokens; {} training sentences for the teacher and {} for the students, {} dev, {} test; students {}",
        config.sequence,
        teacher_training.len(),
        student_training.len(),
        dev.len(),
        test.len(),
        forms.describe()
    );
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // Calibration sentences for `veil compile --hf --calibrate`: the first 64 training
    // sentences (the model owner's data; no test sentence).
    let calibration = out.join("calibration.txt");
    let lines: Vec<&str> = split
        .train
        .iter()
        .take(64)
        .map(|(text, _)| text.as_str())
        .collect();
    std::fs::write(&calibration, lines.join("\n") + "\n")
        .with_context(|| format!("writing {}", calibration.display()))?;
    let earlier = EarlierReport::read(&out.join("sentiment-report.json"), reuse);
    let mut report = Vec::new();
    // Trains one model through its phases, exports and reports it. With `reuse`, a
    // model already in `out` is loaded and goes on from the phases it has completed
    // (every phase has its own optimiser and seed, so a resumed run trains exactly as
    // one that never stopped).
    let mut run = |name: &str,
                   model: BertClassifier,
                   supervision: &'static str,
                   phases: &[(veil_distill::config::Phase, Objective<'_>)],
                   (data, augmenter): (&Examples, Option<&Augmenter>)|
     -> Result<BertClassifier> {
        let directory = out.join(name);
        let started = std::time::Instant::now();
        let mut model = if reuse && directory.join("model.safetensors").is_file() {
            BertClassifier::from_directory(&directory, &LABELS, config.seed)
                .with_context(|| format!("reusing {}", directory.display()))?
        } else {
            model
        };
        let done = model.trained_phases;
        let (mut epoch_losses, earlier_seconds) = match earlier.training::<Vec<Vec<f64>>>(name) {
            Some((losses, seconds)) if losses.len() == done => (losses, seconds),
            _ => (vec![Vec::new(); done], 0.0),
        };
        if done > phases.len() {
            bail!(
                "{} has completed {done} training phases, more than the {} this config asks for; raise `rounds` or remove the folder to train it afresh",
                directory.display(),
                phases.len()
            );
        }
        for (index, &(phase, objective)) in phases.iter().enumerate().skip(done) {
            let label = format!("{name} ({}/{})", index + 1, phases.len());
            epoch_losses.push(train(
                &model,
                data,
                augmenter,
                (phase, config.batch),
                objective,
                (config.seed + index as u64, &label, quiet),
            )?);
            model.trained_phases = index + 1;
            model.export(&directory, &tokenizer)?;
        }
        if !directory.join("model.safetensors").is_file() {
            model.export(&directory, &tokenizer)?;
        }
        let train_seconds = earlier_seconds + started.elapsed().as_secs_f64();
        let outcomes = (correct(&model, &dev)?, correct(&model, &test)?);
        let (dev_accuracy, test_accuracy) =
            (fraction_right(&outcomes.0), fraction_right(&outcomes.1));
        eprintln!(
            "{name:>36}: plain accuracy dev {dev_accuracy:.4}, test {test_accuracy:.4} after {train_seconds:.0} s (losses {epoch_losses:.4?})"
        );
        report.push(Trained {
            name: name.into(),
            forms: model.forms.describe(),
            supervision,
            directory: directory.display().to_string(),
            dev_accuracy,
            test_accuracy,
            epoch_losses,
            train_seconds,
            outcomes,
        });
        Ok(model)
    };
    // Every student starts from M's weights; a quadratic GELU starts at each layer's
    // least-squares fit to GELU on the first 64 training sentences (the same for both
    // students).
    let fitting =
        student_training.batch(&(0..student_training.len().min(64)).collect::<Vec<_>>())?;
    let student_of = |teacher: &BertClassifier| -> Result<BertClassifier> {
        let mut student = teacher.student(forms)?;
        if forms.gelu == veil_model::approximation::GeluForm::Quad {
            let fits = student.fit_gelu_quadratics(&fitting)?;
            eprintln!("{:>36}: {fits:.4?}", "GELU quadratics fitted");
        }
        Ok(student)
    };
    let base = BertClassifier::from_directory(&minilm, &LABELS, config.seed)?;
    // TinyBERT-style variants for both students, from the frozen word table (the
    // same in MiniLM, M and the students).
    let augmenter = match config.augmentation {
        Some(settings) => {
            let augmenter = Augmenter::new(
                settings,
                &tokenizer,
                base.word_embeddings()?,
                &student_training,
            )?;
            eprintln!(
                "{:>36}: {} words with {} neighbours each; a sentence drawn is a variant with probability {}, each of its words replaced with probability {}",
                "sentence variants",
                augmenter.words(),
                settings.neighbours,
                settings.sentences,
                settings.words
            );
            for line in augmenter.describe(&["good", "bad", "funny", "boring", "masterpiece"]) {
                eprintln!("{:>36}  {line}", "");
            }
            Some(augmenter)
        }
        None => None,
    };
    let teacher = run(
        "sentiment-teacher",
        base,
        "labels",
        &[(config.teacher, Objective::Labels)],
        (&teacher_training, None),
    )?;
    // The untrained student: M's weights under the student's forms (the GELUs fitted),
    // for scale.
    run(
        "sentiment-student-untrained",
        student_of(&teacher)?,
        "none",
        &[],
        (&student_training, None),
    )?;
    run(
        "sentiment-student-distilled",
        student_of(&teacher)?,
        "distillation",
        &[
            (config.layers, Objective::Layers(&teacher, config.attention)),
            (
                config.logits,
                Objective::Logits(&teacher, config.distillation()),
            ),
        ]
        .repeat(config.rounds),
        (&student_training, augmenter.as_ref()),
    )?;
    run(
        "sentiment-student-labels",
        student_of(&teacher)?,
        "labels",
        &[
            (config.layers, Objective::Labels),
            (config.logits, Objective::Labels),
        ]
        .repeat(config.rounds),
        (&student_training, augmenter.as_ref()),
    )?;
    // Distillation against labels alone, sentence by sentence (McNemar's exact test).
    let outcomes = |name: &str| {
        report
            .iter()
            .find(|trained| trained.name == name)
            .map(|trained| &trained.outcomes)
    };
    let (Some(distilled), Some(labels)) = (
        outcomes("sentiment-student-distilled"),
        outcomes("sentiment-student-labels"),
    ) else {
        bail!("the report lacks a student");
    };
    let both = |(dev, test): &(Vec<bool>, Vec<bool>)| [dev.as_slice(), test].concat();
    let comparisons = [
        ("dev", Paired::new(&distilled.0, &labels.0)),
        ("test", Paired::new(&distilled.1, &labels.1)),
        ("dev_and_test", Paired::new(&both(distilled), &both(labels))),
    ];
    for (part, comparison) in &comparisons {
        eprintln!(
            "{:>36}: {:+.2} points on {part} ({} sentences only the distilled student gets right, {} only the labels-only one; McNemar p = {:.3})",
            "distilled against labels",
            comparison.difference_points(),
            comparison.only_first,
            comparison.only_second,
            comparison.p_value
        );
    }
    let path = out.join("sentiment-report.json");
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "config": config_path.display().to_string(),
        "sequence": config.sequence,
        "split_seed": SPLIT_SEED,
        "teacher_sentences": teacher_training.len(),
        "student_sentences": student_training.len(),
        "rounds": config.rounds,
        "temperature": config.temperature,
        "soft_weight": config.soft_weight,
        "augmentation": config.augmentation,
        "attention": config.attention,
        "dev_sentences": dev.len(),
        "test_sentences": test.len(),
        "models": report,
        "distilled_against_labels": comparisons
            .iter()
            .map(|(part, comparison)| (part.to_string(), serde_json::json!(comparison)))
            .collect::<serde_json::Map<_, _>>(),
    }))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "wrote {} and a Hugging Face directory per model; compile one with `veil compile --hf {}/NAME --seq {} --calibrate {} --out DIR`",
        path.display(),
        out.display(),
        config.sequence,
        calibration.display()
    );
    Ok(())
}
