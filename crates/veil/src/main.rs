//! The `veil` command line: parses arguments, calls library code and prints what it
//! returns.
#![forbid(unsafe_code)]

mod arguments;
mod breakdown;
mod party;
mod split;
mod text;

use std::io::IsTerminal;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use veil_data::digits::Dataset;
use veil_model::plan::OutputPolicy;
use veil_model::{Plan, PublicPlan};
use veil_net::Role;
use veil_net::tls::generate_certificates;
use veil_serve::bench::{CALIBRATION_HEADROOM, run_bench};
use veil_serve::demo::run_demo;
use veil_serve::load::{LoadOptions, run_load};
use veil_serve::transport::write_certificate_folder;

use crate::arguments::{
    Arguments, BUNDLED_MODELS, Commands, DIGITS_DATA, DIGITS_SPLIT_SEED, DIGITS_TEST_FRACTION,
    DigitsModel,
};
use crate::party::run_party;

fn main() {
    // Colour only for a terminal: logs written to a file or a pipe stay plain text.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    // SIGINT/SIGTERM: stop taking new sessions, finish the ones in progress, exit.
    let _ = ctrlc::set_handler(|| {
        eprintln!("veil: shutting down after the sessions in progress");
        veil_serve::roles::request_shutdown();
    });
    if let Err(error) = run_command(Arguments::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run_command(arguments: Arguments) -> Result<()> {
    if veil_core::prg::DANGEROUS_TESTING_SEEDS && !cfg!(debug_assertions) {
        bail!(
            "this release binary was built with the `testing` feature (deterministic seeds); rebuild without it"
        );
    }
    match arguments.command {
        Commands::Demo {
            model,
            models,
            data,
            limit,
        } => demo(&model, &models, &data, limit),
        Commands::Compile {
            hf: Some(directory),
            seq,
            embedding,
            calibrate,
            out,
            ..
        } => text::compile_text(&directory, (seq, &embedding), calibrate.as_deref(), &out),
        Commands::Compile {
            arch,
            weights,
            approx,
            out,
            calibrate,
            ..
        } => {
            let (Some(arch), Some(weights)) = (arch, weights) else {
                bail!("give --arch and --weights, or --hf DIR");
            };
            let architecture = veil_model::import::Architecture::from_json(&read_text(&arch)?)?;
            let weights = std::fs::read(&weights)
                .with_context(|| format!("reading {}", weights.display()))?;
            let mut plan = veil_model::import::compile(&architecture, &weights, &approx)?;
            if let Some(path) = calibrate {
                let samples = read_numbers(&path)?;
                calibrate_plan(&mut plan, &samples)?;
            }
            let (full, public) = plan.save(&out)?;
            println!(
                "wrote {} (server) and {} (client, dealer); public-plan hash {}",
                full.display(),
                public.display(),
                plan.public.hash_hex()?
            );
            Ok(())
        }
        Commands::Load {
            model,
            clients,
            queries,
            prefetch,
            pool_bytes,
        } => load_test(&model, clients, queries, prefetch, pool_bytes),
        Commands::Certs { out } => {
            let certificates =
                generate_certificates(&[Role::Server, Role::Client, Role::Dealer, Role::Helper])?;
            write_certificate_folder(&out, &certificates)?;
            println!(
                "wrote {}/ca.pem and a certificate and key per role (server, client, dealer, helper); give each party only its own key",
                out.display()
            );
            Ok(())
        }
        Commands::TrainDigits {
            model,
            output,
            out,
            data,
        } => train_digits(model, &output, &out, &data),
        Commands::Serve(arguments) => run_party(arguments, Some(Role::Server)),
        Commands::Dealer(arguments) => run_party(arguments, Some(Role::Dealer)),
        Commands::Infer(arguments) => run_party(arguments, Some(Role::Client)),
        Commands::Party(arguments) => run_party(arguments, None),
        Commands::Embed(arguments) | Commands::Classify(arguments) => text::embed(arguments),
        Commands::Bench(arguments) if arguments.breakdown => {
            let options = arguments.options();
            let chart = arguments.chart.clone().unwrap_or_else(|| {
                std::path::PathBuf::from(format!("breakdown-{}.svg", options.model))
            });
            breakdown::breakdown(&options, &chart)
        }
        Commands::Bench(arguments) => {
            let report = run_bench(&std::env::current_exe()?, &arguments.options())?;
            print_report(&report, arguments.json)
        }
        Commands::SplitBench(arguments) => split::split_bench(arguments),
        Commands::SplitLeakage(arguments) => split::leakage(arguments),
        Commands::SplitWorker(arguments) => split::worker(arguments),
    }
}

/// The digits data set's (train, test) split used by training, the demo and the load
/// test.
fn digits(data: &Path) -> Result<(Dataset, Dataset)> {
    let dataset = veil_data::digits::load(data)?;
    Ok(veil_data::digits::split(
        &dataset,
        DIGITS_TEST_FRACTION,
        DIGITS_SPLIT_SEED,
    ))
}

/// Prints a report as JSON (keys sorted), pretty when asked. A reader that went away
/// (a closed pipe) is an error, not a panic.
fn print_report(report: &impl serde::Serialize, pretty: bool) -> Result<()> {
    use std::io::Write;
    let value = serde_json::to_value(report)?;
    let text = if pretty {
        serde_json::to_string_pretty(&value)?
    } else {
        value.to_string()
    };
    writeln!(std::io::stdout(), "{text}").context("writing the report to standard output")?;
    Ok(())
}

fn demo(model: &str, models: &Path, data: &Path, limit: Option<usize>) -> Result<()> {
    let model_dir = models.join(model);
    let plan = Plan::load(&model_dir.join(format!("{model}.plan")))
        .with_context(|| format!("loading the bundled model from {} (run from the repository root, or `veil train-digits`)", model_dir.display()))?;
    let public = PublicPlan::load(&model_dir.join(format!("{model}.public.plan")))?;
    if public.hash_hex()? != plan.public.hash_hex()? {
        bail!("the bundled plan and public plan differ; recompile them with `veil train-digits`");
    }
    let (_, test) = digits(data)?;
    let count = limit.unwrap_or(test.len()).min(test.len());
    println!(
        "veil demo: {} ({} parameters) on {count} digits test images; server, dealer and client on loopback over mutual TLS (a demonstration, not a deployment)",
        plan.public.name,
        plan.weights.values().map(Vec::len).sum::<usize>()
    );
    let samples = (0..count).map(|index| (test.sample(index), usize::from(test.labels[index])));
    let report = run_demo(&plan, samples)?;
    let total = report.samples.max(1) as f64;
    println!(
        "plaintext accuracy  {:.4}",
        report.plain_correct as f64 / total
    );
    println!(
        "secure accuracy     {:.4}",
        report.secure_correct as f64 / total
    );
    println!(
        "agreement           {:.4} ({}/{count} predictions equal)",
        report.agree as f64 / total,
        report.agree
    );
    if report.labels_only {
        println!(
            "output policy       label: the client learns only the predicted class (secure argmax)"
        );
    } else {
        println!(
            "max |secure − plain| {:.2e} on the logits",
            report.max_error
        );
    }
    let last = &report.last;
    println!(
        "per query (batch 1): online median {:.3} ms, client sent {} B, server sent {} B, {} rounds; set-up {} B of masked weights once per client",
        report.online_median_ms,
        last.client_sent_bytes,
        last.server_sent_bytes,
        last.rounds,
        report.setup_bytes
    );
    println!(
        "preprocessing per query: client {} B, server {} B; the dealer received {} payload bytes after the handshakes",
        last.client_material_bytes,
        report.server.material_bytes,
        report.dealer.payload_bytes_received_after_handshake
    );
    Ok(())
}

fn load_test(
    model: &str,
    clients: usize,
    queries: usize,
    prefetch: usize,
    pool_bytes: Option<u64>,
) -> Result<()> {
    let directory = Path::new(BUNDLED_MODELS).join(model);
    let plan_file = directory.join(format!("{model}.plan"));
    let plan = Plan::load(&plan_file)
        .context("loading the bundled model (run from the repository root)")?;
    let (_, test) = digits(Path::new(DIGITS_DATA))?;
    let samples: Vec<&[f32]> = (0..test.len()).map(|index| test.sample(index)).collect();
    let options = LoadOptions {
        model: model.into(),
        public_plan_file: directory.join(format!("{model}.public.plan")),
        plan_file,
        clients,
        queries,
        prefetch,
        pool_bytes,
    };
    let report = run_load(&std::env::current_exe()?, &plan, &options, &samples)?;
    for error in &report.client_errors {
        eprintln!("client failed: {error}");
    }
    print_report(&report, true)?;
    let (wrong, failed) = (report.answers_differing_from_plain, report.failed_clients);
    if wrong > 0 || failed > 0 {
        bail!("{wrong} answers differed from the plain executor and {failed} clients failed");
    }
    Ok(())
}

/// Sets comparison bit-widths from calibration samples (a whole number of inputs).
fn calibrate_plan(plan: &mut Plan, samples: &[f32]) -> Result<()> {
    let per_sample = plan.public.input_len();
    if samples.is_empty() || !samples.len().is_multiple_of(per_sample) {
        bail!(
            "calibration data holds {} numbers, not a whole number of {per_sample}-value samples",
            samples.len()
        );
    }
    let changes = veil_model::passes::calibration::calibrate_comparison_bits(
        plan,
        samples,
        samples.len() / per_sample,
        CALIBRATION_HEADROOM,
    )?;
    let widths: Vec<u32> = changes.iter().map(|(_, bits)| *bits).collect();
    println!(
        "calibrated {} comparisons on {} samples: bit-widths {widths:?}",
        changes.len(),
        samples.len() / per_sample
    );
    Ok(())
}

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn read_numbers(path: &Path) -> Result<Vec<f32>> {
    read_text(path)?
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|token| !token.is_empty())
        .map(|token| {
            token
                .parse::<f32>()
                .with_context(|| format!("{}: {token:?} is not a number", path.display()))
        })
        .collect()
}

fn train_digits(kind: DigitsModel, output: &str, out: &Path, data: &Path) -> Result<()> {
    let output_policy = match output {
        "label" => OutputPolicy::Label { bits: 64 },
        "logits" => OutputPolicy::Logits,
        other => bail!("unknown output policy {other:?} (have: label, logits)"),
    };
    let (train, test) = digits(data)?;
    let started = Instant::now();
    let (name, weights, architecture_text, train_accuracy, test_accuracy) = match kind {
        DigitsModel::Mlp => {
            let (model, _) =
                veil_train::mlp::train(&train, &veil_train::mlp::TrainingConfig::default());
            let name = "digits-mlp";
            (
                name,
                model.to_safetensors()?,
                model.architecture_json(name),
                model.accuracy(&train),
                model.accuracy(&test),
            )
        }
        DigitsModel::Cnn => {
            let (model, _) = veil_train::cnn::train(&train, &veil_train::cnn::CnnConfig::default());
            let name = "digits-cnn";
            (
                name,
                model.to_safetensors()?,
                model.architecture_json(name),
                model.accuracy(&train),
                model.accuracy(&test),
            )
        }
    };
    println!(
        "trained {name} in {:.1} s: train accuracy {train_accuracy:.4}, test accuracy {test_accuracy:.4}",
        started.elapsed().as_secs_f64()
    );
    let directory = out.join(name);
    std::fs::create_dir_all(&directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    std::fs::write(directory.join(format!("{name}.safetensors")), &weights)?;
    std::fs::write(
        directory.join(format!("{name}.arch.json")),
        &architecture_text,
    )?;
    let architecture = veil_model::import::Architecture::from_json(&architecture_text)?;
    let mut plan = veil_model::import::compile(&architecture, &weights, "exact")?;
    plan.public.output_policy = output_policy;
    calibrate_plan(&mut plan, &train.features)?;
    let (full, public) = plan.save(&directory)?;
    println!("wrote {} and {}", full.display(), public.display());
    Ok(())
}
