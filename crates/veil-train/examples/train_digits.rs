//! Trains the default digits MLP and reports accuracy and time; with a directory argument
//! it also writes `digits-mlp.safetensors` and `digits-mlp.json` there for `veil compile`.
//!
//! `cargo run --release -p veil-train --example train_digits -- [OUTPUT_DIR]`

use std::path::{Path, PathBuf};
use std::time::Instant;

use veil_train::digits::{load, split};
use veil_train::mlp::{TrainingConfig, train};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let data_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/digits/digits.csv.gz");
    let data = load(&data_path)?;
    let (train_set, test_set) = split(&data, 0.2, 0);
    let config = TrainingConfig::default();
    let start = Instant::now();
    let (model, losses) = train(&train_set, &config);
    let elapsed = start.elapsed();
    println!("config: {config:?}");
    println!(
        "samples: {} train, {} test",
        train_set.len(),
        test_set.len()
    );
    println!("loss per epoch: {losses:.4?}");
    println!("training time: {elapsed:.3?}");
    println!("train accuracy: {:.4}", model.accuracy(&train_set));
    println!("test accuracy: {:.4}", model.accuracy(&test_set));
    if let Some(directory) = std::env::args_os().nth(1).map(PathBuf::from) {
        std::fs::create_dir_all(&directory)?;
        std::fs::write(
            directory.join("digits-mlp.safetensors"),
            model.to_safetensors()?,
        )?;
        std::fs::write(
            directory.join("digits-mlp.json"),
            model.architecture_json("digits-mlp"),
        )?;
        println!("wrote {}", directory.display());
    }
    Ok(())
}
