//! The `veil` command line: parses arguments and calls library code.
#![forbid(unsafe_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use veil_model::plain::{argmax_rows, run_plain};
use veil_model::plan::OutputPolicy;
use veil_model::{Plan, PublicPlan};
use veil_net::tls::{DeploymentCertificates, TlsIdentity, generate_certificates};
use veil_net::{NetworkProfile, Role, TcpOptions};
use veil_serve::roles::{
    Client, ClientOptions, DealerOptions, QueryReport, ServerState, peak_rss_bytes, run_dealer,
    run_server,
};
use veil_serve::transport::Transport;

/// The bundled digits models and data, relative to the repository root; the demo serves
/// the CNN.
const BUNDLED_MODELS: &str = "models";
const DEMO_MODEL: &str = "digits-cnn";
const DIGITS_DATA: &str = "data/digits/digits.csv.gz";
/// The train/test split of the digits set (seed and test fraction) used by training and the demo.
const DIGITS_SPLIT_SEED: u64 = 0;
const DIGITS_TEST_FRACTION: f64 = 0.2;

#[derive(Parser)]
#[command(
    name = "veil",
    version,
    about = "Secure model serving: the server keeps its weights, the client keeps its input"
)]
struct Arguments {
    #[command(subcommand)]
    command: Commands,
}

/// `veil party`'s options, from flags and a TOML config file.
#[derive(clap::Args, serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct PartyArguments {
    /// A TOML file with any of these options; flags override it.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Which party: client, server or dealer.
    #[arg(long, value_parser = served_role())]
    #[serde(default, deserialize_with = "deserialize_served_role")]
    role: Option<Role>,
    /// Address to listen on (server, dealer).
    #[arg(long)]
    listen: Option<String>,
    /// The dealer's address (server, client): the client's comes from its own config.
    #[arg(long)]
    dealer: Option<String>,
    /// The server's address (client).
    #[arg(long)]
    server: Option<String>,
    /// The full plan (server).
    #[arg(long)]
    plan: Option<PathBuf>,
    /// The public plan (client, dealer).
    #[arg(long)]
    public_plan: Option<PathBuf>,
    /// Input file: whitespace- or comma-separated numbers, batch × input length (client).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Samples per query (client; 1 when absent).
    #[arg(long)]
    batch: Option<usize>,
    /// Queries to run (client; 1 when absent), the first a warm-up when reporting medians.
    #[arg(long)]
    repeat: Option<usize>,
    /// Serve this many client sessions, then exit (server, dealer).
    #[arg(long)]
    max_clients: Option<usize>,
    /// Print a JSON report.
    #[arg(long)]
    #[serde(default)]
    json: bool,
    /// Mutual TLS: a folder made by `veil certs` holding ca.pem and ROLE.pem/ROLE.key.
    #[arg(long)]
    tls_dir: Option<PathBuf>,
    /// Instead of TLS: plain TCP, loopback addresses only (testing).
    #[arg(long)]
    #[serde(default)]
    insecure_plain_tcp: bool,
    /// Simulated network on the client–server link: local (default), lan or wan (plain TCP only).
    #[arg(long)]
    profile: Option<String>,
    /// Serve Prometheus metrics on this address (server, dealer): GET /metrics.
    #[arg(long)]
    metrics: Option<String>,
    /// The dealer's preprocessing pool in bytes (dealer; 256 MiB when absent, 0 turns
    /// pre-generation off).
    #[arg(long)]
    pool_bytes: Option<u64>,
    /// Seconds a server half waits for the server's claim before it is burnt (dealer;
    /// 120 when absent).
    #[arg(long)]
    claim_timeout_seconds: Option<u64>,
    /// Hold the halves of this many future queries (client; 0 when absent).
    #[arg(long)]
    prefetch: Option<usize>,
    /// The most bytes of prefetched material to hold (client; 256 MiB when absent).
    #[arg(long)]
    prefetch_bytes: Option<u64>,
    /// Milliseconds to wait between repeated queries (client; 0 when absent), as a
    /// stream of queries with gaps would.
    #[arg(long)]
    pause_ms: Option<u64>,
}

impl PartyArguments {
    /// Flags first, then the config file.
    fn or(self, config: PartyArguments) -> PartyArguments {
        PartyArguments {
            config: self.config,
            role: self.role.or(config.role),
            listen: self.listen.or(config.listen),
            dealer: self.dealer.or(config.dealer),
            server: self.server.or(config.server),
            plan: self.plan.or(config.plan),
            public_plan: self.public_plan.or(config.public_plan),
            input: self.input.or(config.input),
            batch: self.batch.or(config.batch),
            repeat: self.repeat.or(config.repeat),
            max_clients: self.max_clients.or(config.max_clients),
            json: self.json || config.json,
            tls_dir: self.tls_dir.or(config.tls_dir),
            insecure_plain_tcp: self.insecure_plain_tcp || config.insecure_plain_tcp,
            profile: self.profile.or(config.profile),
            metrics: self.metrics.or(config.metrics),
            pool_bytes: self.pool_bytes.or(config.pool_bytes),
            claim_timeout_seconds: self.claim_timeout_seconds.or(config.claim_timeout_seconds),
            prefetch: self.prefetch.or(config.prefetch),
            prefetch_bytes: self.prefetch_bytes.or(config.prefetch_bytes),
            pause_ms: self.pause_ms.or(config.pause_ms),
        }
    }
}

/// The roles a `veil party` can take (the helper belongs to `rep3`, not served yet).
const SERVED_ROLES: [&str; 3] = ["client", "server", "dealer"];

/// Parses `--role` into a [`Role`], offering the served roles.
fn served_role() -> impl TypedValueParser<Value = Role> {
    PossibleValuesParser::new(SERVED_ROLES).try_map(|name| name.parse::<Role>())
}

/// Reads `role` from a config file: one of the served roles.
fn deserialize_served_role<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Option<Role>, D::Error> {
    let name = <String as serde::Deserialize>::deserialize(deserializer)?;
    match name.parse::<Role>() {
        Ok(role) if SERVED_ROLES.contains(&role.name()) => Ok(Some(role)),
        _ => Err(serde::de::Error::unknown_variant(&name, &SERVED_ROLES)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DigitsModel {
    Cnn,
    Mlp,
}

/// `veil bench`'s options.
#[derive(clap::Args)]
struct BenchArguments {
    /// Benchmark model: `mlp` (784-128-128-10) or `cnn6` (DESIGN.md), random weights.
    #[arg(long, default_value = "mlp")]
    model: String,
    /// Samples per query.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Setting (only `dealer` so far).
    #[arg(long, default_value = "dealer")]
    setting: String,
    /// Network profile (only `local` so far).
    #[arg(long, default_value = "local")]
    profile: String,
    /// Set comparison bit-widths by calibration on 16 other random inputs.
    #[arg(long)]
    calibrated: bool,
    /// Mutual TLS between the parties (with the local profile only).
    #[arg(long)]
    tls: bool,
    /// Measured repetitions after one warm-up.
    #[arg(long, default_value_t = 5)]
    repetitions: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// The dealer's pool in bytes (0: every session is generated on request, streamed:
    /// "cold"); the dealer's default when absent.
    #[arg(long)]
    pool_bytes: Option<u64>,
    /// The client holds the halves of this many future queries ("warm": both parties
    /// hold their material before the query).
    #[arg(long, default_value_t = 0)]
    prefetch: usize,
    /// Milliseconds between queries (the client's think time; not in any figure).
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
}

#[derive(Subcommand)]
enum Commands {
    /// Runs every role on this machine over loopback and serves the bundled digits test set securely.
    Demo {
        /// The bundled model to serve: digits-cnn or digits-mlp.
        #[arg(long, default_value = DEMO_MODEL)]
        model: String,
        /// The directory holding the bundled models.
        #[arg(long, default_value = BUNDLED_MODELS)]
        models: PathBuf,
        /// The digits data file.
        #[arg(long, default_value = DIGITS_DATA)]
        data: PathBuf,
        /// Serve only the first N test samples.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Compiles an architecture description and safetensors weights into NAME.plan and NAME.public.plan.
    Compile {
        /// Architecture description (JSON).
        #[arg(long)]
        arch: PathBuf,
        /// Weights (safetensors, F32).
        #[arg(long)]
        weights: PathBuf,
        /// Approximation policy.
        #[arg(long, default_value = "exact")]
        approx: String,
        /// Output directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Calibration inputs (numbers, a whole number of samples): comparison bit-widths
        /// are set from the ranges they reach, with 8× headroom. 64 bits when absent.
        #[arg(long)]
        calibrate: Option<PathBuf>,
    },
    /// Trains the digits MLP on the bundled data and compiles it.
    TrainDigits {
        /// Which model: cnn or mlp.
        #[arg(long, value_enum, default_value = "cnn")]
        model: DigitsModel,
        /// What the client learns: label or logits.
        #[arg(long, default_value = "label")]
        output: String,
        /// Output directory (a folder digits-MODEL is made in it).
        #[arg(long, default_value = BUNDLED_MODELS)]
        out: PathBuf,
        /// The digits data file.
        #[arg(long, default_value = DIGITS_DATA)]
        data: PathBuf,
    },
    /// The model owner: serves a plan to clients (`--plan NAME.plan --listen ADDR
    /// --dealer ADDR`). Options can come from a TOML file (`--config`); flags override it.
    Serve(PartyArguments),
    /// The third party: issues preprocessing (`--public-plan NAME.public.plan --listen
    /// ADDR`). Options can come from a TOML file (`--config`); flags override it.
    Dealer(PartyArguments),
    /// The client: prints the prediction for an input (`--server ADDR --dealer ADDR
    /// --public-plan NAME.public.plan --input FILE`). The dealer's address and the CA
    /// come from the client's own config, never from the server.
    Infer(PartyArguments),
    /// Any one party, chosen by `--role` (or `role` in the config): the three commands
    /// above in one.
    Party(PartyArguments),
    /// Load test: dealer and server as processes over mutual TLS, N concurrent clients,
    /// every answer checked against the plain executor.
    Load {
        /// The bundled model: digits-cnn or digits-mlp.
        #[arg(long, default_value = DEMO_MODEL)]
        model: String,
        /// Concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Queries per client.
        #[arg(long, default_value_t = 25)]
        queries: usize,
        /// Each client holds the halves of this many future queries.
        #[arg(long, default_value_t = 0)]
        prefetch: usize,
        /// The dealer's pool in bytes (the dealer's default when absent).
        #[arg(long)]
        pool_bytes: Option<u64>,
    },
    /// Makes a deployment CA and one certificate per role (the role in a URI SAN).
    Certs {
        /// Output folder: ca.pem, and ROLE.pem + ROLE.key per role.
        #[arg(long)]
        out: PathBuf,
    },
    /// Measures a model end to end with each role in its own process on loopback.
    Bench(BenchArguments),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
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
            arch,
            weights,
            approx,
            out,
            calibrate,
        } => {
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
            write_certificates(&out, &certificates)?;
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
        Commands::Bench(arguments) => bench(&arguments),
    }
}

/// Runs one party; `forced` is the role the command names (the config may not name
/// another).
fn run_party(arguments: PartyArguments, forced: Option<Role>) -> Result<()> {
    let arguments = match &arguments.config {
        Some(path) => {
            let config: PartyArguments = toml::from_str(&read_text(path)?)
                .with_context(|| format!("reading the config {}", path.display()))?;
            arguments.or(config)
        }
        None => arguments,
    };
    let PartyArguments {
        role,
        listen,
        dealer,
        server,
        plan,
        public_plan,
        input,
        batch,
        repeat,
        max_clients,
        json,
        tls_dir,
        insecure_plain_tcp,
        profile,
        metrics,
        pool_bytes,
        claim_timeout_seconds,
        prefetch,
        prefetch_bytes,
        pause_ms,
        config: _,
    } = arguments;
    let role = match (forced, role) {
        (Some(forced), Some(named)) if forced != named => bail!(
            "this command runs the {forced:?} role but the config names role {named:?}; use the config written for this role"
        ),
        (Some(forced), _) => forced,
        (None, Some(named)) => named,
        (None, None) => {
            bail!("--role (or role in the config) is required: client, server or dealer")
        }
    };
    let (batch, repeat) = (batch.unwrap_or(1), repeat.unwrap_or(1));
    let profile = profile.unwrap_or_else(|| "local".into());
    let profile = NetworkProfile::from_name(&profile)
        .with_context(|| format!("unknown network profile {profile:?} (have: local, lan, wan)"))?;
    let options = TcpOptions {
        profile,
        ..TcpOptions::default()
    };
    let transport = match (tls_dir, insecure_plain_tcp) {
        (Some(directory), false) => {
            if profile != NetworkProfile::Local {
                bail!(
                    "network profiles are simulated on plain TCP only; drop --profile or use --insecure-plain-tcp"
                );
            }
            load_tls_transport(&directory, role, options)?
        }
        (None, true) => Transport::DangerousPlainTcp { options },
        _ => bail!(
            "pass exactly one of --tls-dir DIR (mutual TLS, see `veil certs`) and --insecure-plain-tcp"
        ),
    };
    let need = |value: Option<String>, flag: &str| {
        value.with_context(|| format!("--{flag} is required for this role"))
    };
    match role {
        Role::Dealer => {
            let plan = PublicPlan::load(&public_plan.context("--public-plan is required")?)?;
            let listener = transport.listen(&need(listen, "listen")?)?;
            let mut dealer_options = DealerOptions {
                max_clients,
                ..DealerOptions::default()
            };
            if let Some(bytes) = pool_bytes {
                dealer_options.pool.capacity_bytes = bytes;
            }
            if let Some(seconds) = claim_timeout_seconds {
                dealer_options.pool.claim_timeout = std::time::Duration::from_secs(seconds.max(1));
            }
            if let Some(address) = metrics {
                veil_serve::metrics::serve_metrics(&address, Arc::clone(&dealer_options.metrics))?;
            }
            let summary = run_dealer(listener, plan, &dealer_options, &transport)?;
            if json {
                println!(
                    "{}",
                    json!({"role": "dealer", "queries": summary.queries, "payload_bytes_received_after_handshake": summary.payload_bytes_received_after_handshake, "burnt_sessions": summary.burnt_sessions, "pool_pregenerated": summary.pool.pregenerated, "pool_hits": summary.pool.hits, "pool_misses": summary.pool.misses, "peak_rss_bytes": peak_rss_bytes()})
                );
            }
        }
        Role::Server => {
            let plan = Plan::load(&plan.context("--plan is required")?)?;
            let listener = transport.listen(&need(listen, "listen")?)?;
            let state = ServerState::new(plan, new_epoch())?;
            if let Some(address) = metrics {
                veil_serve::metrics::serve_metrics(&address, state.metrics())?;
            }
            let summary = run_server(
                listener,
                &need(dealer, "dealer")?,
                state,
                max_clients,
                &transport,
            )?;
            if json {
                println!(
                    "{}",
                    json!({"role": "server", "queries": summary.queries, "failed_sessions": summary.failed_sessions, "material_bytes": summary.material_bytes, "payload_bytes_sent_to_dealer": summary.payload_bytes_sent_to_dealer, "peak_rss_bytes": peak_rss_bytes()})
                );
            }
        }
        Role::Client => {
            let plan = PublicPlan::load(&public_plan.context("--public-plan is required")?)?;
            let input = read_numbers(&input.context("--input is required")?)?;
            let mut client_options = ClientOptions {
                batch,
                prefetch_queries: prefetch.unwrap_or(0),
                expected_queries: Some(repeat.max(1)),
                ..ClientOptions::default()
            };
            if let Some(bytes) = prefetch_bytes {
                client_options.prefetch_bytes = bytes;
            }
            let mut client = Client::connect_with(
                plan.clone(),
                &need(server, "server")?,
                &need(dealer, "dealer")?,
                client_options,
                &transport,
            )?;
            let mut reports = Vec::new();
            for query in 0..repeat.max(1) {
                if query > 0
                    && let Some(pause) = pause_ms
                {
                    std::thread::sleep(std::time::Duration::from_millis(pause));
                }
                reports.push(client.query(&input)?);
            }
            if json {
                println!("{}", client_report_json(&reports, client.setup_bytes));
            } else {
                let output = &reports[reports.len() - 1].output;
                if let OutputPolicy::Label { .. } = plan.output_policy {
                    // The label policy reveals the class index and nothing else.
                    let labels: Vec<usize> = output.iter().map(|&label| label as usize).collect();
                    println!("prediction: {labels:?}");
                } else {
                    let columns = output.len() / batch.max(1);
                    println!("prediction: {:?}", argmax_rows(output, columns));
                    println!("logits: {output:?}");
                }
            }
        }
        Role::Helper => {
            bail!("the helper role belongs to the rep3 setting, which this build does not serve")
        }
    }
    Ok(())
}

/// Headroom over the largest calibrated magnitude when choosing comparison bit-widths.
const CALIBRATION_HEADROOM: f64 = 8.0;

/// Sets comparison bit-widths from calibration samples (a whole number of inputs).
fn calibrate_plan(plan: &mut Plan, samples: &[f32]) -> Result<()> {
    let per_sample = plan.public.input_len();
    if samples.is_empty() || !samples.len().is_multiple_of(per_sample) {
        bail!(
            "calibration data holds {} numbers, not a whole number of {per_sample}-value samples",
            samples.len()
        );
    }
    let changes = veil_model::plain::calibrate_comparison_bits(
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

/// Writes a deployment's certificates: ca.pem, and ROLE.pem + ROLE.key per role.
fn write_certificates(directory: &Path, certificates: &DeploymentCertificates) -> Result<()> {
    std::fs::create_dir_all(directory)
        .with_context(|| format!("creating {}", directory.display()))?;
    std::fs::write(directory.join("ca.pem"), &certificates.ca_certificate)?;
    for (role, certificate, key) in &certificates.parties {
        std::fs::write(directory.join(format!("{}.pem", role.name())), certificate)?;
        let key_path = directory.join(format!("{}.key", role.name()));
        std::fs::write(&key_path, key)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// A mutual-TLS transport from a `veil certs` folder, for `role`.
fn load_tls_transport(directory: &Path, role: Role, options: TcpOptions) -> Result<Transport> {
    let read = |name: String| {
        std::fs::read(directory.join(&name))
            .with_context(|| format!("reading {}/{name}", directory.display()))
    };
    let identity = TlsIdentity::from_pem(
        &read("ca.pem".into())?,
        &read(format!("{}.pem", role.name()))?,
        &read(format!("{}.key", role.name()))?,
    )?;
    if identity.role() != role {
        bail!(
            "{}/{}.pem is a {} certificate",
            directory.display(),
            role.name(),
            identity.role().name()
        );
    }
    Ok(Transport::Tls { identity, options })
}

/// A new mask epoch: seconds since the Unix epoch, so a restarted server never reuses one.
fn new_epoch() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(1)
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

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        0.0
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Medians over all reports after the first (the warm-up), or the only one.
fn client_report_json(reports: &[QueryReport], setup_bytes: u64) -> serde_json::Value {
    let measured = if reports.len() > 1 {
        &reports[1..]
    } else {
        reports
    };
    let pick =
        |f: &dyn Fn(&QueryReport) -> f64| median(&mut measured.iter().map(f).collect::<Vec<_>>());
    let last = &measured[measured.len() - 1];
    json!({
        "role": "client",
        "runs": measured.len(),
        "online_s": pick(&|r| r.online_seconds),
        "offline_s": pick(&|r| r.offline_seconds),
        "latency_s": pick(&|r| r.latency_seconds),
        "warm_queries": measured.iter().filter(|r| r.warm).count(),
        "prefetch_s": pick(&|r| r.prefetch_seconds),
        "client_sent_bytes": last.client_sent_bytes,
        "server_sent_bytes": last.server_sent_bytes,
        "rounds": last.rounds,
        "setup_bytes": setup_bytes,
        "client_material_bytes": last.client_material_bytes,
        "output": last.output,
        "peak_rss_bytes": peak_rss_bytes(),
    })
}

fn train_digits(kind: DigitsModel, output: &str, out: &Path, data: &Path) -> Result<()> {
    let output_policy = match output {
        "label" => OutputPolicy::Label { bits: 64 },
        "logits" => OutputPolicy::Logits,
        other => bail!("unknown output policy {other:?} (have: label, logits)"),
    };
    let dataset = veil_train::digits::load(data)?;
    let (train, test) =
        veil_train::digits::split(&dataset, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED);
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

fn load_test(
    model: &str,
    clients: usize,
    queries: usize,
    prefetch: usize,
    pool_bytes: Option<u64>,
) -> Result<()> {
    let directory = Path::new(BUNDLED_MODELS).join(model);
    let plan = Plan::load(&directory.join(format!("{model}.plan")))
        .context("loading the bundled model (run from the repository root)")?;
    let dataset = veil_train::digits::load(Path::new(DIGITS_DATA))?;
    let (_, test) = veil_train::digits::split(&dataset, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED);
    let work = std::env::temp_dir().join(format!("veil-load-{}", std::process::id()));
    let certificates = work.join("certificates");
    write_certificates(
        &certificates,
        &generate_certificates(&[Role::Server, Role::Client, Role::Dealer])?,
    )?;
    let (dealer_address, server_address) = {
        let (a, address_a) = loopback_listener()?;
        let (b, address_b) = loopback_listener()?;
        drop((a, b));
        (address_a, address_b)
    };
    let executable = std::env::current_exe()?;
    let tls = certificates.display().to_string();
    let spawn = |arguments: &[&str]| {
        Command::new(&executable)
            .args(arguments)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
    };
    let max = clients.to_string();
    let public_path = directory
        .join(format!("{model}.public.plan"))
        .display()
        .to_string();
    let plan_path = directory
        .join(format!("{model}.plan"))
        .display()
        .to_string();
    let pool = pool_bytes.map(|bytes| format!("--pool-bytes={bytes}"));
    let mut dealer_arguments = vec![
        "dealer",
        "--listen",
        &dealer_address,
        "--public-plan",
        &public_path,
        "--tls-dir",
        &tls,
        "--max-clients",
        &max,
        "--json",
    ];
    dealer_arguments.extend(pool.as_deref());
    let dealer = spawn(&dealer_arguments)?;
    let server = spawn(&[
        "serve",
        "--listen",
        &server_address,
        "--dealer",
        &dealer_address,
        "--plan",
        &plan_path,
        "--tls-dir",
        &tls,
        "--max-clients",
        &max,
        "--json",
    ])?;
    let transport = load_tls_transport(&certificates, Role::Client, TcpOptions::default())?;
    let classes = plan.public.graph.infer_shapes(1)?[plan.public.graph.output][1];
    let labels_only = matches!(plan.public.output_policy, OutputPolicy::Label { .. });
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|worker| {
            let (plan, transport) = (plan.clone(), transport.clone());
            let (server_address, dealer_address) = (server_address.clone(), dealer_address.clone());
            let samples: Vec<Vec<f32>> = (0..queries)
                .map(|q| test.sample((worker * queries + q) % test.len()).to_vec())
                .collect();
            std::thread::spawn(move || -> Result<(Vec<f64>, usize, usize)> {
                let options = ClientOptions {
                    batch: 1,
                    prefetch_queries: prefetch,
                    expected_queries: Some(samples.len()),
                    ..ClientOptions::default()
                };
                let mut client = Client::connect_with(
                    plan.public.clone(),
                    &server_address,
                    &dealer_address,
                    options,
                    &transport,
                )?;
                let (mut latencies, mut wrong, mut warm) = (Vec::new(), 0, 0);
                for sample in &samples {
                    let report = client.query(sample)?;
                    latencies.push(report.latency_seconds);
                    warm += usize::from(report.warm);
                    let output = report.output;
                    let plain = argmax_rows(&run_plain(&plan, sample, 1)?, classes)[0];
                    let secure = if labels_only {
                        output[0] as usize
                    } else {
                        argmax_rows(&output, classes)[0]
                    };
                    wrong += usize::from(plain != secure);
                }
                Ok((latencies, wrong, warm))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut wrong, mut failed, mut warm) = (0, 0, 0);
    for worker in workers {
        match worker
            .join()
            .map_err(|_| anyhow::anyhow!("a client thread panicked"))?
        {
            Ok((worker_latencies, worker_wrong, worker_warm)) => {
                latencies.extend(worker_latencies);
                wrong += worker_wrong;
                warm += worker_warm;
            }
            Err(error) => {
                failed += 1;
                eprintln!("client failed: {error:#}");
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let read = |child: std::process::Child| -> Result<serde_json::Value> {
        Ok(serde_json::from_slice(&child.wait_with_output()?.stdout)?)
    };
    let (server_report, dealer_report) = (read(server)?, read(dealer)?);
    let _ = std::fs::remove_dir_all(&work);
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&json!({
            "model": model,
            "tls": true,
            "clients": clients,
            "queries": latencies.len(),
            "answers_differing_from_plain": wrong,
            "failed_clients": failed,
            "failed_sessions_at_server": server_report["failed_sessions"],
            "seconds": elapsed,
            "queries_per_second": latencies.len() as f64 / elapsed,
            "latency_p50_s": quantile(0.5),
            "latency_p99_s": quantile(0.99),
            "prefetch": prefetch,
            "warm_queries": warm,
            "pool_hits": dealer_report["pool_hits"],
            "burnt_sessions": dealer_report["burnt_sessions"],
            "peak_rss_bytes": {"server": server_report["peak_rss_bytes"], "dealer": dealer_report["peak_rss_bytes"], "clients_process": peak_rss_bytes()},
            "dealer_payload_bytes_received": dealer_report["payload_bytes_received_after_handshake"],
        }))?
    );
    if wrong > 0 || failed > 0 {
        bail!("{wrong} answers differed from the plain executor and {failed} clients failed");
    }
    Ok(())
}

/// Binds a loopback listener on a free port.
fn loopback_listener() -> Result<(TcpListener, String)> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let address = listener.local_addr()?.to_string();
    Ok((listener, address))
}

fn demo(model: &str, models: &Path, data: &Path, limit: Option<usize>) -> Result<()> {
    let model_dir = models.join(model);
    let plan = Plan::load(&model_dir.join(format!("{model}.plan")))
        .with_context(|| format!("loading the bundled model from {} (run from the repository root, or `veil train-digits`)", model_dir.display()))?;
    let public = PublicPlan::load(&model_dir.join(format!("{model}.public.plan")))?;
    if public.hash_hex()? != plan.public.hash_hex()? {
        bail!("the bundled plan and public plan differ; recompile them with `veil train-digits`");
    }
    let dataset = veil_train::digits::load(data)?;
    let (_, test) = veil_train::digits::split(&dataset, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED);
    let count = limit.unwrap_or(test.len()).min(test.len());
    println!(
        "veil demo: {} ({} parameters) on {count} digits test images; server, dealer and client on loopback over mutual TLS (a demonstration, not a deployment)",
        plan.public.name,
        plan.weights.values().map(Vec::len).sum::<usize>()
    );

    // Mutual TLS with a throwaway deployment CA made in memory for this run.
    let certificates = generate_certificates(&[Role::Dealer, Role::Server, Role::Client])?;
    let mut transports = Vec::new();
    for (_, certificate, key) in &certificates.parties {
        let identity = TlsIdentity::from_pem(
            certificates.ca_certificate.as_bytes(),
            certificate.as_bytes(),
            key.as_bytes(),
        )?;
        transports.push(Transport::Tls {
            identity,
            options: TcpOptions::default(),
        });
    }
    let (client_transport, server_transport, dealer_transport) = (
        transports.pop().context("client")?,
        transports.pop().context("server")?,
        transports.pop().context("dealer")?,
    );
    let (dealer_listener, dealer_address) = loopback_listener()?;
    let (server_listener, server_address) = loopback_listener()?;
    let dealer_plan = public.clone();
    let dealer = std::thread::spawn(move || {
        let options = DealerOptions {
            max_clients: Some(1),
            ..DealerOptions::default()
        };
        run_dealer(dealer_listener, dealer_plan, &options, &dealer_transport)
    });
    let state = ServerState::new(plan.clone(), new_epoch())?;
    let server_dealer_address = dealer_address.clone();
    let server = std::thread::spawn(move || {
        run_server(
            server_listener,
            &server_dealer_address,
            state,
            Some(1),
            &server_transport,
        )
    });

    let mut client = Client::connect(
        public.clone(),
        &server_address,
        &dealer_address,
        1,
        &client_transport,
    )?;
    let classes = public.graph.infer_shapes(1)?[public.graph.output][1];
    let (mut plain_correct, mut secure_correct, mut agree) = (0usize, 0usize, 0usize);
    let mut reports = Vec::with_capacity(count);
    let mut max_error = 0f32;
    let labels_only = matches!(public.output_policy, OutputPolicy::Label { .. });
    for index in 0..count {
        let sample = test.sample(index);
        let plain = run_plain(&plan, sample, 1)?;
        let report = client.query(sample)?;
        let plain_label = argmax_rows(&plain, classes)[0];
        let secure_label = if labels_only {
            report.output[0] as usize
        } else {
            max_error = plain
                .iter()
                .zip(&report.output)
                .fold(max_error, |m, (p, s)| m.max((p - s).abs()));
            argmax_rows(&report.output, classes)[0]
        };
        let truth = usize::from(test.labels[index]);
        plain_correct += usize::from(plain_label == truth);
        secure_correct += usize::from(secure_label == truth);
        agree += usize::from(plain_label == secure_label);
        reports.push(report);
    }
    let setup_bytes = client.setup_bytes;
    drop(client);
    let dealer_summary = dealer
        .join()
        .map_err(|_| anyhow::anyhow!("the dealer thread panicked"))??;
    let server_summary = server
        .join()
        .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
    let total = count.max(1) as f64;
    let mut online: Vec<f64> = reports.iter().map(|r| r.online_seconds * 1e3).collect();
    let last = reports.last().context("no test images")?;
    println!("plaintext accuracy  {:.4}", plain_correct as f64 / total);
    println!("secure accuracy     {:.4}", secure_correct as f64 / total);
    println!(
        "agreement           {:.4} ({agree}/{count} predictions equal)",
        agree as f64 / total
    );
    if labels_only {
        println!(
            "output policy       label: the client learns only the predicted class (secure argmax)"
        );
    } else {
        println!("max |secure − plain| {max_error:.2e} on the logits");
    }
    println!(
        "per query (batch 1): online median {:.3} ms, client sent {} B, server sent {} B, {} rounds; set-up {} B of masked weights once per client",
        median(&mut online),
        last.client_sent_bytes,
        last.server_sent_bytes,
        last.rounds,
        setup_bytes
    );
    println!(
        "preprocessing per query: client {} B, server {} B; the dealer received {} payload bytes after the handshakes",
        last.client_material_bytes,
        server_summary.material_bytes,
        dealer_summary.payload_bytes_received_after_handshake
    );
    Ok(())
}

fn bench(arguments: &BenchArguments) -> Result<()> {
    let BenchArguments {
        model,
        batch,
        setting,
        profile,
        calibrated,
        tls,
        repetitions,
        json: print_json,
        pool_bytes,
        prefetch,
        pause_ms,
    } = arguments;
    let (model, setting, profile) = (model.as_str(), setting.as_str(), profile.as_str());
    let (batch, repetitions, calibrated, tls, print_json, prefetch) = (
        *batch,
        *repetitions,
        *calibrated,
        *tls,
        *print_json,
        *prefetch,
    );
    if setting != "dealer" {
        bail!("setting {setting:?} is not available yet (have: dealer)");
    }
    let network = NetworkProfile::from_name(profile)
        .with_context(|| format!("unknown network profile {profile:?} (have: local, lan, wan)"))?;
    let plan = match model {
        "mlp" => veil_model::zoo::random_mlp("mlp", &[784, 128, 128, 10], 0)?,
        "cnn6" => veil_model::zoo::random_cnn6(0)?,
        other => bail!("unknown bench model {other:?} (have: mlp, cnn6)"),
    };
    let mut plan = plan;
    if calibrated {
        // Calibration inputs from the bench's input distribution, another seed.
        let mut calibration = veil_model::zoo::GaussianSampler::new(1);
        let samples = calibration.normal_vec(plan.public.input_len() * 16, 1.0);
        let per_sample = plan.public.input_len();
        veil_model::plain::calibrate_comparison_bits(
            &mut plan,
            &samples,
            samples.len() / per_sample,
            CALIBRATION_HEADROOM,
        )?;
    }
    let directory = std::env::temp_dir().join(format!("veil-bench-{}", std::process::id()));
    std::fs::create_dir_all(&directory)?;
    let (full, public) = plan.save(&directory)?;
    let mut sampler = veil_model::zoo::GaussianSampler::new(0);
    let input = sampler.normal_vec(plan.public.input_len() * batch, 1.0);
    let input_path = directory.join("input.txt");
    std::fs::write(
        &input_path,
        input
            .iter()
            .map(f32::to_string)
            .collect::<Vec<_>>()
            .join(" "),
    )?;
    let executable = std::env::current_exe()?;
    let (dealer_address, server_address) = {
        let (a, address_a) = loopback_listener()?;
        let (b, address_b) = loopback_listener()?;
        drop((a, b));
        (address_a, address_b)
    };
    let certificates_directory = directory.join("certificates");
    if tls {
        if network != NetworkProfile::Local {
            bail!(
                "network profiles are simulated on plain TCP only; run --tls with --profile local"
            );
        }
        write_certificates(
            &certificates_directory,
            &generate_certificates(&[Role::Server, Role::Client, Role::Dealer])?,
        )?;
    }
    let spawn = |mut arguments: Vec<String>| {
        if tls {
            arguments.retain(|argument| argument != "--insecure-plain-tcp");
            arguments.push("--tls-dir".into());
            arguments.push(certificates_directory.display().to_string());
        }
        Command::new(&executable)
            .args(arguments)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
    };
    let text = |path: &Path| path.display().to_string();
    let dealer = spawn(
        vec![
            "party".into(),
            "--role".into(),
            "dealer".into(),
            "--listen".into(),
            dealer_address.clone(),
            "--public-plan".into(),
            text(&public),
            "--max-clients".into(),
            "1".into(),
            "--json".into(),
            "--insecure-plain-tcp".into(),
        ]
        .into_iter()
        .chain(pool_bytes.map(|bytes| format!("--pool-bytes={bytes}")))
        .collect(),
    )?;
    let server = spawn(vec![
        "party".into(),
        "--role".into(),
        "server".into(),
        "--listen".into(),
        server_address.clone(),
        "--dealer".into(),
        dealer_address.clone(),
        "--plan".into(),
        text(&full),
        "--max-clients".into(),
        "1".into(),
        "--json".into(),
        "--insecure-plain-tcp".into(),
        "--profile".into(),
        profile.into(),
    ])?;
    let client = spawn(vec![
        "party".into(),
        "--role".into(),
        "client".into(),
        "--server".into(),
        server_address,
        "--dealer".into(),
        dealer_address,
        "--public-plan".into(),
        text(&public),
        "--input".into(),
        text(&input_path),
        "--batch".into(),
        batch.to_string(),
        "--repeat".into(),
        (repetitions + 1).to_string(),
        "--prefetch".into(),
        prefetch.to_string(),
        "--pause-ms".into(),
        pause_ms.to_string(),
        "--json".into(),
        "--insecure-plain-tcp".into(),
        "--profile".into(),
        profile.into(),
    ])?;
    let read = |child: std::process::Child, who: &str| -> Result<serde_json::Value> {
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!("the {who} process failed ({})", output.status);
        }
        serde_json::from_slice(&output.stdout)
            .with_context(|| format!("reading the {who}'s report"))
    };
    let client_report = read(client, "client")?;
    let server_report = read(server, "server")?;
    let dealer_report = read(dealer, "dealer")?;
    let _ = std::fs::remove_dir_all(&directory);
    let plain = run_plain(&plan, &input, batch)?;
    let secure: Vec<f64> = client_report["output"]
        .as_array()
        .context("client output")?
        .iter()
        .filter_map(|v| v.as_f64())
        .collect();
    let max_abs_err = plain
        .iter()
        .zip(&secure)
        .fold(0f64, |m, (p, s)| m.max((f64::from(*p) - s).abs()));
    let client_sent = client_report["client_sent_bytes"].as_u64().unwrap_or(0);
    let server_sent = client_report["server_sent_bytes"].as_u64().unwrap_or(0);
    let peak = [&client_report, &server_report, &dealer_report]
        .iter()
        .filter_map(|r| r["peak_rss_bytes"].as_u64())
        .max();
    let report = json!({
        "model": model,
        "setting": setting,
        "profile": profile,
        "batch": batch,
        "calibrated": calibrated,
        "runs": client_report["runs"],
        "online_s": client_report["online_s"],
        "online_bytes_per_party": client_sent.max(server_sent),
        "online_bytes_total": client_sent + server_sent,
        "online_bytes_client": client_sent,
        "online_bytes_server": server_sent,
        "rounds": client_report["rounds"],
        "setup_bytes": client_report["setup_bytes"],
        "preprocessing_bytes_per_party": {"client": client_report["client_material_bytes"], "server": server_report["material_bytes"]},
        "offline_s": client_report["offline_s"],
        "latency_s": client_report["latency_s"],
        "warm_queries": client_report["warm_queries"],
        "prefetch": prefetch,
        "pause_ms": pause_ms,
        "pool_bytes": pool_bytes,
        "pool_hits": dealer_report["pool_hits"],
        "dealer_payload_bytes_received": dealer_report["payload_bytes_received_after_handshake"],
        "peak_rss_bytes": peak,
        "tls": tls,
        "threads_compute": 1,
        "threads_io": if network == NetworkProfile::Local { 1 } else { 2 },
        "rounds_times_rtt_s": client_report["rounds"].as_u64().unwrap_or(0) as f64 * network.round_trip().as_secs_f64(),
        "kernel": veil_core::kernels::Kernel::detect().name(),
        "max_abs_err": max_abs_err,
    });
    if print_json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
