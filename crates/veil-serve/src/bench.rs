//! `veil bench`: a model measured end to end with each role in its own process on
//! loopback (DESIGN.md §7): random weights, a random input, one warm-up and the medians
//! of the measured queries, checked against the plain executor.

use std::path::Path;

use serde::Serialize;
use veil_core::sampling::SplitMix64;
use veil_model::Plan;
use veil_model::approximation::Policy;
use veil_model::plain::run_plain;
use veil_net::{NetworkProfile, Role};

use crate::processes::{
    ClientReport, DealerReport, RoleProcess, ServerReport, WorkFolder, free_loopback_addresses,
};
use crate::{Error, Result};

/// Headroom over the largest calibrated magnitude when choosing comparison bit-widths.
pub const CALIBRATION_HEADROOM: f64 = 8.0;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// `mlp` (784-128-128-10), `cnn6`, `gelu`, `softmax`, `layer_norm`, `bert-layer` or
    /// `minilm6` (the real all-MiniLM-L6-v2, always calibrated).
    pub model: String,
    /// Samples per query.
    pub batch: usize,
    /// The setting (only `dealer`).
    pub setting: String,
    /// The network profile: `local`, `lan` or `wan`.
    pub profile: String,
    /// Set comparison bit-widths by calibration on 16 other random inputs.
    pub calibrated: bool,
    /// Mutual TLS between the parties (local profile only).
    pub tls: bool,
    /// Measured queries after one warm-up.
    pub repetitions: usize,
    /// The dealer's pool in bytes (its default when `None`).
    pub pool_bytes: Option<u64>,
    /// Queries' halves the client holds ahead.
    pub prefetch: usize,
    /// Milliseconds between queries.
    pub pause_ms: u64,
    /// Tokens of the sequence models (`bert-layer`).
    pub sequence: usize,
    /// The approximation policy of the built-in models (`exact` for none).
    pub approx: String,
    /// A compiled plan to measure instead of a built-in model.
    pub plan: Option<std::path::PathBuf>,
    /// The query's input: numbers from this file (whitespace or commas), its first
    /// sample repeated over the batch; N(0, 1) values when absent.
    pub input: Option<std::path::PathBuf>,
    /// The keys the dealer's comparisons get.
    pub comparison_keys: veil_mpc::ComparisonKeys,
}

/// Preprocessing bytes per party per query.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PerParty {
    /// The client's.
    pub client: usize,
    /// The server's.
    pub server: usize,
}

/// The figures of DESIGN.md §7 and a few more; the field names are the JSON keys.
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
pub struct BenchReport {
    pub model: String,
    pub approximation: String,
    pub setting: String,
    pub profile: String,
    pub batch: usize,
    pub calibrated: bool,
    pub runs: usize,
    pub online_s: f64,
    pub online_bytes_per_party: u64,
    pub online_bytes_total: u64,
    pub online_bytes_client: u64,
    pub online_bytes_server: u64,
    pub rounds: u64,
    pub setup_bytes: u64,
    pub preprocessing_bytes_per_party: PerParty,
    pub offline_s: f64,
    pub latency_s: f64,
    pub warm_queries: usize,
    pub prefetch: usize,
    pub pause_ms: u64,
    pub pool_bytes: Option<u64>,
    pub pool_hits: u64,
    pub dealer_payload_bytes_received: u64,
    pub peak_rss_bytes: Option<u64>,
    pub peak_rss_bytes_per_process: PeakRss,
    pub tls: bool,
    pub threads_compute: usize,
    pub threads_io: usize,
    pub rounds_times_rtt_s: f64,
    pub kernel: &'static str,
    pub comparison_keys: &'static str,
    pub max_abs_err: f64,
}

/// Each role process's peak resident set size (Linux `VmHWM`), in bytes.
#[derive(Clone, Copy, Debug, Serialize)]
#[allow(missing_docs)]
pub struct PeakRss {
    pub client: Option<u64>,
    pub server: Option<u64>,
    pub dealer: Option<u64>,
}

/// How many values the `gelu` benchmark applies GELU to.
const GELU_BENCH_ELEMENTS: usize = 128 * 128;

/// The sentence `minilm6` embeds (a movie review's; its real length is private and
/// does not change the cost: every query has the padded length).
const BENCH_SENTENCE: &str = "The gorgeously elaborate continuation of The Lord of the Rings trilogy is so huge that a column of words cannot adequately describe co-writer/director Peter Jackson's expanded vision of J.R.R. Tolkien's Middle-earth.";

/// `minilm6`: the real all-MiniLM-L6-v2 (fetched by `scripts/fetch minilm`) at
/// `sequence` tokens, calibrated on veil's public sentences, and one sentence's inputs
/// for each of `batch` samples.
fn minilm_plan(sequence: usize, batch: usize, policy: Policy) -> Result<(Plan, Vec<f32>)> {
    let directory = veil_data::fetched::minilm_directory().ok_or(Error::Unsupported(
        "minilm6 needs all-MiniLM-L6-v2: run scripts/fetch minilm",
    ))?;
    let options = veil_model::import::HuggingFaceOptions {
        sequence,
        policy,
        ..Default::default()
    };
    let (plan, encoder, _) = veil_text::compile_calibrated(
        &directory,
        &options,
        &veil_text::CALIBRATION_SENTENCES,
        CALIBRATION_HEADROOM,
    )?;
    let input = encoder.encode(&vec![BENCH_SENTENCE; batch])?.inputs;
    Ok((plan, input))
}

/// The benchmark's plan and input: random weights, seed 0, calibrated on request, a
/// random input; `minilm6` is the real model on a real sentence.
pub fn bench_plan(options: &BenchOptions) -> Result<(Plan, Vec<f32>)> {
    let policy = Policy::parse(&options.approx)?;
    if options.model == "minilm6" {
        return minilm_plan(options.sequence, options.batch, policy);
    }
    let plan = match &options.plan {
        Some(path) => {
            let plan = Plan::load(path)?;
            if plan.public.text.is_some() {
                return text_plan_input(path, plan, options);
            }
            plan
        }
        None => built_in_plan(options, policy)?,
    };
    calibrate_and_sample(options, plan)
}

/// A compiled text plan (`veil compile --hf`, calibrated there) and one sentence's
/// inputs for each sample: the first line of `--input`, or [`BENCH_SENTENCE`],
/// tokenized with the NAME.tokenizer.json beside the plan.
fn text_plan_input(path: &Path, plan: Plan, options: &BenchOptions) -> Result<(Plan, Vec<f32>)> {
    let sentence = match &options.input {
        Some(file) => std::fs::read_to_string(file)
            .map_err(Error::io(format!("reading {}", file.display())))?
            .lines()
            .find(|line| !line.trim().is_empty())
            .map(str::to_string)
            .ok_or(Error::Unsupported(
                "the bench input file of a text plan holds no sentence (one a line)",
            ))?,
        None => BENCH_SENTENCE.to_string(),
    };
    let tokenizer = path.with_file_name(format!("{}.tokenizer.json", plan.public.name));
    let encoder = veil_text::TextEncoder::new(&tokenizer, &plan.public, plan.text_tables.clone())?;
    let input = encoder
        .encode(&vec![sentence.as_str(); options.batch])?
        .inputs;
    Ok((plan, input))
}

/// The built-in benchmark model `options.model`, random weights, seed 0, under
/// `policy` (which only bert-layer takes; minilm6 is built above).
fn built_in_plan(options: &BenchOptions, policy: Policy) -> Result<Plan> {
    if options.model == "bert-layer" {
        // One BERT-base encoder layer on `sequence` token embeddings.
        return Ok(veil_model::zoo::random_encoder_layer_with(
            veil_model::zoo::EncoderDimensions::bert_base(options.sequence),
            0,
            policy,
        )?);
    }
    if policy != Policy::default() {
        return Err(Error::Unsupported(
            "--approx applies to minilm6 and bert-layer; compile other models with `veil compile --approx` and bench them with --plan",
        ));
    }
    Ok(match options.model.as_str() {
        "mlp" => veil_model::zoo::random_mlp("mlp", &[784, 128, 128, 10], 0)?,
        "cnn6" => veil_model::zoo::random_cnn6(0)?,
        // 128 × 128 values: one attention-sized activation.
        "gelu" => veil_model::zoo::gelu_layer(GELU_BENCH_ELEMENTS)?,
        // One attention head's scores at 128 tokens.
        "softmax" => veil_model::zoo::softmax_layer(128, 128)?,
        // all-MiniLM-L6-v2's hidden states at 128 tokens.
        "layer_norm" => veil_model::zoo::layer_norm_layer(128, 384, 0)?,
        other => {
            return Err(Error::Unknown {
                what: "bench model",
                name: other.into(),
                have: "mlp, cnn6, gelu, softmax, layer_norm, bert-layer, minilm6",
            });
        }
    })
}

/// Calibrated on request (16 N(0, 1) inputs of another seed), and a random input.
fn calibrate_and_sample(options: &BenchOptions, mut plan: Plan) -> Result<(Plan, Vec<f32>)> {
    if options.calibrated {
        // Calibration inputs from the bench's input distribution, another seed.
        let mut calibration = SplitMix64::new(1);
        let samples = calibration.normal_vec(plan.public.input_len() * 16, 1.0);
        let per_sample = plan.public.input_len();
        veil_model::passes::calibration::calibrate_comparison_bits(
            &mut plan,
            &samples,
            samples.len() / per_sample,
            CALIBRATION_HEADROOM,
        )?;
    }
    let per_sample = plan.public.input_len();
    let input = match &options.input {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(Error::io(format!("reading {}", path.display())))?;
            let numbers = text
                .split(|c: char| c.is_whitespace() || c == ',')
                .filter(|word| !word.is_empty())
                .map(|word| word.parse::<f32>())
                .collect::<std::result::Result<Vec<f32>, _>>()
                .map_err(|_| {
                    Error::Unsupported("the bench input file holds something that is not a number")
                })?;
            if numbers.len() < per_sample {
                return Err(Error::Unsupported(
                    "the bench input file holds fewer numbers than one sample of the plan",
                ));
            }
            numbers[..per_sample].repeat(options.batch)
        }
        None => SplitMix64::new(0).normal_vec(per_sample * options.batch, 1.0),
    };
    Ok((plan, input))
}

/// Runs the benchmark with `executable` (the `veil` binary) as each role's process.
pub fn run_bench(executable: &Path, options: &BenchOptions) -> Result<BenchReport> {
    let BenchOptions {
        batch,
        tls,
        repetitions,
        pool_bytes,
        prefetch,
        pause_ms,
        ..
    } = *options;
    if options.setting != "dealer" {
        return Err(Error::NotAvailable {
            what: "setting",
            name: options.setting.clone(),
            have: "dealer",
        });
    }
    let profile = options.profile.as_str();
    let network = NetworkProfile::from_name(profile).ok_or_else(|| Error::Unknown {
        what: "network profile",
        name: profile.into(),
        have: "local, lan, wan",
    })?;
    let (plan, input) = bench_plan(options)?;
    let calibrated = options.calibrated || options.model == "minilm6";
    let work = WorkFolder::new("bench")?;
    let (full, public) = plan.save(work.path())?;
    let input_path = work.path().join("input.txt");
    let text: Vec<String> = input.iter().map(f32::to_string).collect();
    std::fs::write(&input_path, text.join(" "))
        .map_err(Error::io(format!("writing {}", input_path.display())))?;
    let (dealer_address, server_address) = free_loopback_addresses()?;
    let certificates = if tls {
        if network != NetworkProfile::Local {
            return Err(Error::Unsupported(
                "network profiles are simulated on plain TCP only; run --tls with --profile local",
            ));
        }
        Some(work.certificates()?)
    } else {
        None
    };
    // Each role gets its own party folder (its key, and its roots per peer role).
    let link = |role: Role| -> Result<Vec<String>> {
        Ok(match &certificates {
            Some(certificates) => vec![
                "--tls-dir".into(),
                certificates
                    .party(role)
                    .ok_or(Error::Unreachable(
                        "no certificate folder was made for this role",
                    ))?
                    .display()
                    .to_string(),
            ],
            None => vec!["--insecure-plain-tcp".to_string()],
        })
    };
    let path = |path: &Path| path.display().to_string();
    let arguments = |role: Role, role_arguments: Vec<String>| -> Result<Vec<String>> {
        let mut arguments = role_arguments;
        arguments.push("--json".into());
        arguments.extend(link(role)?);
        Ok(arguments)
    };
    let spawn = |role, role_arguments| {
        RoleProcess::spawn(executable, role, &arguments(role, role_arguments)?)
    };
    let mut dealer_arguments = vec![
        "--listen".into(),
        dealer_address.clone(),
        "--public-plan".into(),
        path(&public),
        "--max-clients".into(),
        "1".into(),
    ];
    dealer_arguments.extend(pool_bytes.map(|bytes| format!("--pool-bytes={bytes}")));
    dealer_arguments.push(format!(
        "--comparison-keys={}",
        options.comparison_keys.name()
    ));
    let dealer = spawn(Role::Dealer, dealer_arguments)?;
    let server = spawn(
        Role::Server,
        vec![
            "--listen".into(),
            server_address.clone(),
            "--dealer".into(),
            dealer_address.clone(),
            "--plan".into(),
            path(&full),
            "--max-clients".into(),
            "1".into(),
            "--profile".into(),
            profile.into(),
        ],
    )?;
    let client = spawn(
        Role::Client,
        vec![
            "--server".into(),
            server_address,
            "--dealer".into(),
            dealer_address,
            "--public-plan".into(),
            path(&public),
            "--input".into(),
            path(&input_path),
            "--batch".into(),
            batch.to_string(),
            "--repeat".into(),
            (repetitions + 1).to_string(),
            "--prefetch".into(),
            prefetch.to_string(),
            "--pause-ms".into(),
            pause_ms.to_string(),
            "--profile".into(),
            profile.into(),
        ]
        .into_iter()
        // Prefetched halves may take as much room at the client as the dealer's pool.
        .chain(
            pool_bytes
                .filter(|_| prefetch > 0)
                .map(|bytes| format!("--prefetch-bytes={bytes}")),
        )
        .collect(),
    )?;
    let client: ClientReport = client.report()?;
    let server: ServerReport = server.report()?;
    let dealer: DealerReport = dealer.report()?;
    drop(work);
    let plain = run_plain(&plan, &input, batch)?;
    let max_abs_err = plain.iter().zip(&client.output).fold(0f64, |m, (p, s)| {
        m.max((f64::from(*p) - f64::from(*s)).abs())
    });
    let (client_sent, server_sent) = (client.client_sent_bytes, client.server_sent_bytes);
    let peak_rss_bytes = [
        client.peak_rss_bytes,
        server.peak_rss_bytes,
        dealer.peak_rss_bytes,
    ]
    .into_iter()
    .flatten()
    .max();
    Ok(BenchReport {
        model: match options.plan {
            Some(_) => plan.public.name.clone(),
            None => options.model.clone(),
        },
        approximation: plan.public.approximation.clone(),
        setting: options.setting.clone(),
        profile: options.profile.clone(),
        batch,
        calibrated,
        runs: client.runs,
        online_s: client.online_s,
        online_bytes_per_party: client_sent.max(server_sent),
        online_bytes_total: client_sent + server_sent,
        online_bytes_client: client_sent,
        online_bytes_server: server_sent,
        rounds: client.rounds,
        setup_bytes: client.setup_bytes,
        preprocessing_bytes_per_party: PerParty {
            client: client.client_material_bytes,
            server: server.material_bytes,
        },
        offline_s: client.offline_s,
        latency_s: client.latency_s,
        warm_queries: client.warm_queries,
        prefetch,
        pause_ms,
        pool_bytes,
        pool_hits: dealer.pool_hits,
        dealer_payload_bytes_received: dealer.payload_bytes_received_after_handshake,
        peak_rss_bytes,
        peak_rss_bytes_per_process: PeakRss {
            client: client.peak_rss_bytes,
            server: server.peak_rss_bytes,
            dealer: dealer.peak_rss_bytes,
        },
        tls,
        threads_compute: 1,
        threads_io: if network == NetworkProfile::Local {
            1
        } else {
            2
        },
        rounds_times_rtt_s: client.rounds as f64 * network.round_trip().as_secs_f64(),
        kernel: veil_core::kernels::Kernel::detect().name(),
        comparison_keys: options.comparison_keys.name(),
        max_abs_err,
    })
}
