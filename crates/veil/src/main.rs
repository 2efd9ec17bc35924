//! The `veil` command line: parses arguments, calls library code and prints what it
//! returns.
#![forbid(unsafe_code)]

mod arguments;
mod breakdown;
#[cfg(feature = "distill")]
mod distill;
#[cfg(feature = "distill")]
mod distill_sentiment;
#[cfg(feature = "distill")]
mod earlier;
mod party;
#[cfg(feature = "distill")]
mod pooled;
mod split;
mod text;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Parser;
use veil_data::digits::Dataset;
use veil_model::plan::OutputPolicy;
use veil_model::{Plan, PublicPlan};
use veil_net::Role;
use veil_serve::bench::{CALIBRATION_HEADROOM, run_bench};
use veil_serve::chaos::{ChaosOptions, run_chaos};
use veil_serve::demo::run_demo;
use veil_serve::load::{LoadOptions, run_load};

use crate::arguments::{
    Arguments, BUNDLED_MODELS, CertsCommand, Commands, DIGITS_DATA, DIGITS_SPLIT_SEED,
    DIGITS_TEST_FRACTION, DigitsModel,
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
    // SIGINT/SIGTERM: stop taking new sessions, give the queries in progress the grace
    // period, exit. Whatever state the process is in (waiting for a peer, a handshake,
    // a query), it exits within the grace period plus a margin; a second signal exits at
    // once.
    let _ = ctrlc::set_handler(|| {
        static SIGNALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
        if SIGNALLED.swap(true, std::sync::atomic::Ordering::SeqCst) {
            eprintln!("veil: second signal: exiting now");
            std::process::exit(130);
        }
        let grace = veil_serve::roles::SHUTDOWN_GRACE;
        eprintln!(
            "veil: shutting down; queries in progress get up to {} s",
            grace.as_secs()
        );
        veil_serve::roles::request_shutdown();
        std::thread::spawn(move || {
            let margin = std::time::Duration::from_secs(3);
            std::thread::sleep(grace + margin);
            eprintln!(
                "veil: still running {} s after the signal; exiting",
                (grace + margin).as_secs()
            );
            std::process::exit(1);
        });
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
            approx,
            calibrate,
            out,
            ..
        } => text::compile_text(
            &directory,
            (seq, &embedding, &approx),
            calibrate.as_deref(),
            &out,
        ),
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
        Commands::Chaos {
            model,
            clients,
            queries,
            quiet_queries,
            idle_connections,
            dealer_restarts,
            server_restarts,
            killed_clients,
            flooding_clients,
            deadline_seconds,
            quick,
            json,
        } => {
            let (queries, quiet_queries) = if quick {
                (40, 10)
            } else {
                (queries, quiet_queries)
            };
            chaos_test(
                &model,
                ChaosOptions {
                    model: model.clone(),
                    plan_file: PathBuf::new(),
                    public_plan_file: PathBuf::new(),
                    clients,
                    queries,
                    quiet_queries,
                    idle_connections,
                    dealer_restarts,
                    server_restarts,
                    killed_clients,
                    flooding_clients,
                    deadline: std::time::Duration::from_secs(deadline_seconds),
                },
                json,
            )
        }
        Commands::Certs { command } => certs(command),
        #[cfg(feature = "distill")]
        Commands::Distill {
            task,
            config,
            out,
            plain_only,
            reuse,
            quiet,
        } => {
            let config =
                config.unwrap_or_else(|| PathBuf::from(format!("configs/distill-{task}.toml")));
            match task.as_str() {
                "fashion" => distill::distill(&config, &out, (plain_only, reuse, quiet)),
                "sentiment" => distill_sentiment::distill(&config, &out, (reuse, quiet)),
                other => bail!("unknown task {other:?} (have: fashion, sentiment)"),
            }
        }
        #[cfg(feature = "distill")]
        Commands::PooledTest { reports, json } => pooled::pooled_test(&reports, json),
        Commands::Evaluate {
            plan,
            data,
            limit,
            json,
        } => evaluate(&plan, &data, limit, json),
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
                let name = match &options.plan {
                    Some(plan) => plan.file_stem().map_or("plan".into(), |stem| {
                        stem.to_string_lossy()
                            .trim_end_matches(".public")
                            .to_string()
                    }),
                    None => options.model.clone(),
                };
                std::path::PathBuf::from(format!("breakdown-{name}.svg"))
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

/// `veil certs`: one step of making, signing or revoking certificates.
fn certs(command: CertsCommand) -> Result<()> {
    use veil_serve::certificates as files;
    match command {
        CertsCommand::Ca { out, name } => {
            files::create_ca(&out, &name)?;
            println!(
                "wrote {0}/ca.pem (the CA certificate: give it to the parties that trust this CA, as trust-ROLE.pem) and {0}/ca.key (mode 0600: it never leaves this folder)",
                out.display()
            );
        }
        CertsCommand::Request { role, name, out } => {
            let request = files::create_request(&out, role, name.as_deref())?;
            println!(
                "wrote {}/{role}.key (mode 0600: it never leaves this machine) and {}: give the request to the CA's operator (`veil certs sign`), and put the certificate you get back at {}/{role}.pem",
                out.display(),
                request.display(),
                out.display()
            );
        }
        CertsCommand::Sign {
            ca,
            request,
            role,
            days,
            out,
        } => {
            let signed = files::sign_request(&ca, &request, role, days, &out)?;
            println!(
                "signed {} for {}: wrote {} (serial {}, valid {days} days); give it back to the party as {role}.pem",
                request.display(),
                signed.identity,
                out.display(),
                signed.serial_hex
            );
        }
        CertsCommand::Revoke {
            ca,
            certificate,
            out,
        } => {
            let (identity, _) = files::describe(&certificate)?;
            let (list, serial) = files::revoke_certificate(&ca, &certificate, out.as_deref())?;
            println!(
                "revoked {identity} (serial {serial}): wrote {}; give it to every party that trusts this CA (as trust-ROLE.crl beside trust-ROLE.pem, or --crl FILE) and restart them",
                list.display()
            );
        }
        CertsCommand::Show { certificate } => {
            let (identity, serial) = files::describe(&certificate)?;
            println!("{identity}, serial {serial}");
        }
        CertsCommand::Local { out } => {
            let deployment = files::create_local_deployment(&out)?;
            println!(
                "FOR LOCAL TESTS ONLY (every key is on this machine): wrote CAs {} and {}, and party folders {}",
                deployment.dealer_ca.display(),
                deployment.owner_ca.display(),
                deployment
                    .parties
                    .iter()
                    .map(|(role, folder)| format!("{} ({role})", folder.display()))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    Ok(())
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

/// `veil evaluate`: secure accuracy of a plan on a labelled test set.
fn evaluate(plan_path: &Path, data: &str, limit: Option<usize>, json: bool) -> Result<()> {
    match data {
        "fashion" => {}
        "reviews" => return text::evaluate_reviews(plan_path, limit, json),
        other => bail!("unknown data set {other:?} (have: fashion, reviews)"),
    }
    let plan = Plan::load(plan_path)
        .with_context(|| format!("loading the plan {}", plan_path.display()))?;
    let directory = veil_data::fashion::directory()
        .context("Fashion-MNIST is not fetched: run scripts/fetch fashion")?;
    let test = veil_data::fashion::load(&directory, veil_data::fashion::Part::Test)?;
    let count = limit.unwrap_or(test.len()).min(test.len());
    if !json {
        eprintln!(
            "veil evaluate: {} ({}) on {count} Fashion-MNIST test images, one secure query each",
            plan.public.name, plan.public.approximation
        );
    }
    let started = std::time::Instant::now();
    let samples = (0..count).map(|index| (test.image(index), usize::from(test.labels[index])));
    let report = run_demo(&plan, samples)?;
    let total = report.samples.max(1) as f64;
    let summary = serde_json::json!({
        "plan": plan.public.name,
        "approximation": plan.public.approximation,
        "images": report.samples,
        "plain_accuracy": report.plain_correct as f64 / total,
        "secure_accuracy": report.secure_correct as f64 / total,
        "agreement": report.agree as f64 / total,
        "max_abs_logit_error": report.max_error,
        "online_median_ms": report.online_median_ms,
        "wall_s": started.elapsed().as_secs_f64(),
    });
    print_report(&summary, !json)
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

/// `veil chaos`: the bundled model under attack; fails unless every completed answer
/// matched the plain executor, every honest client finished, and the deployment
/// recovered from every restart.
fn chaos_test(model: &str, mut options: ChaosOptions, json: bool) -> Result<()> {
    let directory = Path::new(BUNDLED_MODELS).join(model);
    options.plan_file = directory.join(format!("{model}.plan"));
    options.public_plan_file = directory.join(format!("{model}.public.plan"));
    let plan = Plan::load(&options.plan_file)
        .context("loading the bundled model (run from the repository root)")?;
    let (_, test) = digits(Path::new(DIGITS_DATA))?;
    let samples: Vec<&[f32]> = (0..test.len()).map(|index| test.sample(index)).collect();
    let report = run_chaos(&std::env::current_exe()?, &plan, &options, &samples)?;
    print_report(&report, !json)?;
    let unrecovered = report
        .recoveries
        .iter()
        .filter(|recovery| !recovery.seconds.is_finite())
        .count();
    if report.answers_differing_from_plain > 0 || report.unfinished_clients > 0 || unrecovered > 0 {
        bail!(
            "{} answers differed from the plain executor, {} honest clients did not finish, {unrecovered} restarts were not recovered from",
            report.answers_differing_from_plain,
            report.unfinished_clients
        );
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
