//! Trains a digits classifier (the default MLP, or the CNN with `--model cnn`) and
//! reports accuracy and time; with a directory argument it also writes
//! `digits-mlp.safetensors` and `digits-mlp.json` (or `digits-cnn.*`) there for
//! `veil compile`.
//!
//! `cargo run --release -p veil-train --example train_digits -- [--model mlp|cnn] [OUTPUT_DIR]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use veil_train::cnn::{self, CnnConfig};
use veil_train::digits::{Dataset, load, split};
use veil_train::mlp::{self, TrainingConfig};

/// Which classifier to train.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Model {
    Mlp,
    Cnn,
}

/// The parsed command line.
struct Arguments {
    model: Model,
    output: Option<PathBuf>,
}

const USAGE: &str = "usage: train_digits [--model mlp|cnn] [OUTPUT_DIR]";

fn parse_arguments() -> Result<Arguments, String> {
    let mut arguments = Arguments {
        model: Model::Mlp,
        output: None,
    };
    let mut raw = std::env::args_os().skip(1);
    while let Some(argument) = raw.next() {
        if argument == "--model" {
            arguments.model = match raw.next().as_deref().and_then(|value| value.to_str()) {
                Some("mlp") => Model::Mlp,
                Some("cnn") => Model::Cnn,
                other => {
                    return Err(format!(
                        "--model must be mlp or cnn, not {other:?}\n{USAGE}"
                    ));
                }
            };
        } else if argument.to_string_lossy().starts_with("--") {
            return Err(format!("unknown option {argument:?}\n{USAGE}"));
        } else if arguments.output.is_none() {
            arguments.output = Some(PathBuf::from(argument));
        } else {
            return Err(format!("more than one output directory\n{USAGE}"));
        }
    }
    Ok(arguments)
}

/// What the rest of `main` needs from either trained model.
struct Trained {
    name: &'static str,
    weights: Vec<u8>,
    architecture: String,
}

fn train_model(
    model: Model,
    train_set: &Dataset,
    test_set: &Dataset,
) -> veil_train::Result<Trained> {
    // Both arms report the same lines so that runs of the two models compare directly.
    let (name, elapsed, losses, train_accuracy, test_accuracy, weights, architecture) = match model
    {
        Model::Mlp => {
            let config = TrainingConfig::default();
            println!("config: {config:?}");
            let start = Instant::now();
            let (model, losses) = mlp::train(train_set, &config);
            let elapsed = start.elapsed();
            let name = "digits-mlp";
            (
                name,
                elapsed,
                losses,
                model.accuracy(train_set),
                model.accuracy(test_set),
                model.to_safetensors()?,
                model.architecture_json(name),
            )
        }
        Model::Cnn => {
            let config = CnnConfig::default();
            println!("config: {config:?}");
            let start = Instant::now();
            let (model, losses) = cnn::train(train_set, &config);
            let elapsed = start.elapsed();
            let name = "digits-cnn";
            (
                name,
                elapsed,
                losses,
                model.accuracy(train_set),
                model.accuracy(test_set),
                model.to_safetensors()?,
                model.architecture_json(name),
            )
        }
    };
    println!(
        "samples: {} train, {} test",
        train_set.len(),
        test_set.len()
    );
    println!("loss per epoch: {losses:.4?}");
    println!("training time: {elapsed:.3?}");
    println!("train accuracy: {train_accuracy:.4}");
    println!("test accuracy: {test_accuracy:.4}");
    Ok(Trained {
        name,
        weights,
        architecture,
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments = parse_arguments().unwrap_or_else(|message| {
        eprintln!("{message}");
        std::process::exit(2)
    });
    let data_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/digits/digits.csv.gz");
    let data = load(&data_path)?;
    let (train_set, test_set) = split(&data, 0.2, 0);
    let trained = train_model(arguments.model, &train_set, &test_set)?;
    if let Some(directory) = arguments.output {
        std::fs::create_dir_all(&directory)?;
        std::fs::write(
            directory.join(format!("{}.safetensors", trained.name)),
            &trained.weights,
        )?;
        std::fs::write(
            directory.join(format!("{}.json", trained.name)),
            &trained.architecture,
        )?;
        println!("wrote {}", directory.display());
    }
    Ok(())
}
