//! The command line's arguments: every command and flag, and `veil party`'s options
//! merged from flags and a TOML config file.

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand, ValueEnum};
use veil_net::Role;

/// The bundled digits models and data, relative to the repository root; the demo serves
/// the CNN.
pub(crate) const BUNDLED_MODELS: &str = "models";
pub(crate) const DEMO_MODEL: &str = "digits-cnn";
pub(crate) const DIGITS_DATA: &str = "data/digits/digits.csv.gz";
/// The train/test split of the digits set (seed and test fraction) used by training and the demo.
pub(crate) const DIGITS_SPLIT_SEED: u64 = 0;
pub(crate) const DIGITS_TEST_FRACTION: f64 = 0.2;

#[derive(Parser)]
#[command(
    name = "veil",
    version,
    about = "Secure model serving: the server keeps its weights, the client keeps its input"
)]
pub(crate) struct Arguments {
    #[command(subcommand)]
    pub(crate) command: Commands,
}

/// `veil party`'s options, from flags and a TOML config file.
#[derive(clap::Args, serde::Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
pub(crate) struct PartyArguments {
    /// A TOML file with any of these options; flags override it.
    #[arg(long)]
    #[serde(skip)]
    pub(crate) config: Option<PathBuf>,
    /// Which party: client, server or dealer.
    #[arg(long, value_parser = served_role())]
    #[serde(default, deserialize_with = "deserialize_served_role")]
    pub(crate) role: Option<Role>,
    /// Address to listen on (server, dealer).
    #[arg(long)]
    pub(crate) listen: Option<String>,
    /// The dealer's address (server, client): the client's comes from its own config.
    #[arg(long)]
    pub(crate) dealer: Option<String>,
    /// The server's address (client).
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// The full plan (server).
    #[arg(long)]
    pub(crate) plan: Option<PathBuf>,
    /// The public plan (client, dealer).
    #[arg(long)]
    pub(crate) public_plan: Option<PathBuf>,
    /// Input file: whitespace- or comma-separated numbers, batch × input length (client).
    #[arg(long)]
    pub(crate) input: Option<PathBuf>,
    /// Samples per query (client; 1 when absent).
    #[arg(long)]
    pub(crate) batch: Option<usize>,
    /// Queries to run (client; 1 when absent), the first a warm-up when reporting medians.
    #[arg(long)]
    pub(crate) repeat: Option<usize>,
    /// Serve this many client sessions, then exit (server, dealer).
    #[arg(long)]
    pub(crate) max_clients: Option<usize>,
    /// Print a JSON report.
    #[arg(long)]
    #[serde(default)]
    pub(crate) json: bool,
    /// Mutual TLS: this party's folder (see `veil certs`): ROLE.pem and ROLE.key, and the
    /// CAs it trusts per peer role, trust-PEER.pem (optionally trust-PEER.crl).
    #[arg(long)]
    pub(crate) tls_dir: Option<PathBuf>,
    /// A revocation list (`veil certs revoke`) whose certificates are refused; repeat for
    /// several. Each applies to the certificates of the CA that signed it.
    #[arg(long = "crl", value_name = "FILE")]
    #[serde(default)]
    pub(crate) crl: Vec<PathBuf>,
    /// Instead of TLS: plain TCP, loopback addresses only (testing).
    #[arg(long)]
    #[serde(default)]
    pub(crate) insecure_plain_tcp: bool,
    /// Simulated network on the client–server link: local (default), lan or wan (plain TCP only).
    #[arg(long)]
    pub(crate) profile: Option<String>,
    /// Serve Prometheus metrics on this address (server, dealer): GET /metrics.
    #[arg(long)]
    pub(crate) metrics: Option<String>,
    /// The dealer's preprocessing pool in bytes (dealer; 256 MiB when absent, 0 turns
    /// pre-generation off).
    #[arg(long)]
    pub(crate) pool_bytes: Option<u64>,
    /// Seconds a server half waits for the server's claim before it is burnt (dealer;
    /// 120 when absent).
    #[arg(long)]
    pub(crate) claim_timeout_seconds: Option<u64>,
    /// Hold the halves of this many future queries (client; 0 when absent).
    #[arg(long)]
    pub(crate) prefetch: Option<usize>,
    /// The most bytes of prefetched material to hold (client; 256 MiB when absent).
    #[arg(long)]
    pub(crate) prefetch_bytes: Option<u64>,
    /// Milliseconds to wait between repeated queries (client; 0 when absent), as a
    /// stream of queries with gaps would.
    #[arg(long)]
    pub(crate) pause_ms: Option<u64>,
    /// The most connections a listener serves at once, handshakes included (server,
    /// dealer; 4096 when absent); more are closed at once.
    #[arg(long)]
    pub(crate) max_connections: Option<usize>,
    /// The largest batch a query may ask for (server; 1024 when absent).
    #[arg(long)]
    pub(crate) max_batch: Option<usize>,
    /// Bytes the dealer queues per connection before it waits for the peer to read
    /// (dealer; 16 MiB when absent): more lets generation run ahead of a slow link.
    #[arg(long)]
    pub(crate) send_queue_bytes: Option<usize>,
    /// The keys the dealer's comparisons get (dealer; dpf when absent): `dpf`
    /// (point-function keys, about half the preprocessing bytes, two rounds per
    /// comparison) or `dcf` (one round, for links where round trips cost most).
    #[arg(long, value_parser = ["dpf", "dcf"])]
    pub(crate) comparison_keys: Option<String>,
}

impl PartyArguments {
    /// Flags first, then the config file.
    pub(crate) fn or(self, config: PartyArguments) -> PartyArguments {
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
            crl: if self.crl.is_empty() {
                config.crl
            } else {
                self.crl
            },
            insecure_plain_tcp: self.insecure_plain_tcp || config.insecure_plain_tcp,
            profile: self.profile.or(config.profile),
            metrics: self.metrics.or(config.metrics),
            pool_bytes: self.pool_bytes.or(config.pool_bytes),
            claim_timeout_seconds: self.claim_timeout_seconds.or(config.claim_timeout_seconds),
            prefetch: self.prefetch.or(config.prefetch),
            prefetch_bytes: self.prefetch_bytes.or(config.prefetch_bytes),
            pause_ms: self.pause_ms.or(config.pause_ms),
            max_connections: self.max_connections.or(config.max_connections),
            max_batch: self.max_batch.or(config.max_batch),
            send_queue_bytes: self.send_queue_bytes.or(config.send_queue_bytes),
            comparison_keys: self.comparison_keys.or(config.comparison_keys),
        }
    }
}

/// The roles a `veil party` can take (the helper belongs to `rep3`, not served yet).
pub(crate) const SERVED_ROLES: [&str; 3] = ["client", "server", "dealer"];

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

/// The digits models `veil train-digits` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum DigitsModel {
    Cnn,
    Mlp,
}

/// `veil bench`'s options.
#[derive(clap::Args)]
pub(crate) struct BenchArguments {
    /// Benchmark model: `mlp` (784-128-128-10), `cnn6` (docs/results.md), random weights;
    /// `gelu` (one GELU over 128 × 128 values), `softmax` (128 rows of 128) or
    /// `layer_norm` (128 rows of 384), `bert-layer` (one BERT-base encoder layer, `--seq`) or
    /// `minilm6` (the real all-MiniLM-L6-v2, `scripts/fetch minilm`, `--seq`).
    #[arg(long, default_value = "mlp")]
    pub(crate) model: String,
    /// Samples per query.
    #[arg(long, default_value_t = 1)]
    pub(crate) batch: usize,
    /// Setting (only `dealer` so far).
    #[arg(long, default_value = "dealer")]
    pub(crate) setting: String,
    /// Network profile (only `local` so far).
    #[arg(long, default_value = "local")]
    pub(crate) profile: String,
    /// Set comparison bit-widths by calibration on 16 other random inputs.
    #[arg(long)]
    pub(crate) calibrated: bool,
    /// Mutual TLS between the parties (with the local profile only).
    #[arg(long)]
    pub(crate) tls: bool,
    /// Measured repetitions after one warm-up.
    #[arg(long, default_value_t = 5)]
    pub(crate) repetitions: usize,
    /// Approximation policy for `minilm6` and `bert-layer` (as `veil compile --approx`;
    /// `gelu=polynomial` is PUMA's GELU instead of the table form).
    #[arg(long, default_value = "exact")]
    pub(crate) approx: String,
    /// Instead of a built-in model: a compiled plan (NAME.plan) with its weights, on a
    /// random N(0, 1) input; a text plan (`veil compile --hf`) on a sentence, tokenized
    /// with the NAME.tokenizer.json beside it.
    #[arg(long)]
    pub(crate) plan: Option<PathBuf>,
    /// The input: a file of numbers (its first sample, repeated over the batch); N(0, 1)
    /// values when absent. A trained quadratic network needs inputs like its data's.
    /// For a text plan: a file whose first line is the sentence.
    #[arg(long)]
    pub(crate) input: Option<PathBuf>,
    /// Tokens for `bert-layer` and `minilm6` (the padded sequence length).
    #[arg(long, default_value_t = 128)]
    pub(crate) seq: usize,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// The dealer's pool in bytes (0: every session is generated on request, streamed:
    /// "cold"); the dealer's default when absent.
    #[arg(long)]
    pub(crate) pool_bytes: Option<u64>,
    /// The client holds the halves of this many future queries ("warm": both parties
    /// hold their material before the query).
    #[arg(long, default_value_t = 0)]
    pub(crate) prefetch: usize,
    /// Milliseconds between queries (the client's think time; not in any figure).
    #[arg(long, default_value_t = 0)]
    pub(crate) pause_ms: u64,
    /// Instead: where one query's time and bytes go, per operator kind and per protocol
    /// primitive (dealer and parties in this process, one thread each), printed as
    /// tables and drawn as an SVG bar chart against the plaintext FLOPs.
    #[arg(long)]
    pub(crate) breakdown: bool,
    /// With --breakdown: the chart's file (breakdown-MODEL.svg when absent).
    #[arg(long, requires = "breakdown")]
    pub(crate) chart: Option<PathBuf>,
    /// The keys the dealer's comparisons get: `dpf` (point-function keys, about half
    /// the preprocessing, two rounds per comparison) or `dcf` (one round).
    #[arg(long, default_value = "dpf", value_parser = comparison_keys)]
    pub(crate) comparison_keys: veil_mpc::ComparisonKeys,
}

#[derive(Subcommand)]
pub(crate) enum Commands {
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
    /// Compiles a model into NAME.plan and NAME.public.plan: an architecture description
    /// and safetensors weights (`--arch --weights`), or a Hugging Face BERT directory
    /// (`--hf DIR`, which also writes NAME.tokenizer.json for the client).
    Compile {
        /// Architecture description (JSON).
        #[arg(long, required_unless_present = "hf", requires = "weights")]
        arch: Option<PathBuf>,
        /// Weights (safetensors, F32).
        #[arg(long)]
        weights: Option<PathBuf>,
        /// A Hugging Face BERT-family directory (config.json, model.safetensors,
        /// tokenizer.json; sentence-transformers pipelines too).
        #[arg(long, conflicts_with_all = ["arch", "weights"])]
        hf: Option<PathBuf>,
        /// With --hf: the padded sequence length (public).
        #[arg(long, default_value_t = 128)]
        seq: usize,
        /// With --hf: `client` (the embedding tables are public, the client looks its
        /// tokens up) or `secure` (the word table is the server's weight: one-hot × E).
        #[arg(long, default_value = "client", value_parser = ["client", "secure"])]
        embedding: String,
        /// Approximation policy: `exact`, or kind=form pairs such as
        /// `relu=quad,gelu=quad,softmax=2quad` (ReLU exact|quad, GELU exact|quad|relu,
        /// softmax exact|2quad|2relu). Kinds it leaves out keep the form the
        /// architecture gives each layer (`veil distill`'s students state theirs).
        #[arg(long, default_value = "exact")]
        approx: String,
        /// Output directory.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Calibration inputs: comparison bit-widths are set from the ranges they reach,
        /// with 8× headroom. Numbers (a whole number of samples), or with --hf sentences
        /// (one a line). Absent: 64 bits, or with --hf veil's public calibration sentences.
        #[arg(long)]
        calibrate: Option<PathBuf>,
    },
    /// Sentence embeddings computed securely: the client tokenizes and embeds locally and
    /// learns only its embeddings. Against a deployment (`--server --dealer
    /// --public-plan`), or every role on this machine from a model directory (`--model`).
    Embed(EmbedArguments),
    /// A text classifier's label for each sentence, computed securely (a Hugging Face
    /// BertForSequenceClassification plan; the same options as `veil embed`).
    Classify(EmbedArguments),
    /// Trains the CNN zoo on Fashion-MNIST (`scripts/fetch fashion`): for the plain and
    /// the residual CNN, a ReLU teacher M, and the `quad` student M̂ four ways:
    /// initialised from scratch or from M, trained on labels or by knowledge
    /// distillation. Writes NAME.json and
    /// NAME.safetensors for `veil compile --arch --weights`, and distill-report.json.
    ///
    /// `--task sentiment` instead fine-tunes all-MiniLM-L6-v2 (`scripts/fetch minilm
    /// reviews`) into a movie-review sentiment teacher M and trains its MPC-friendly
    /// student M̂ twice: by MPCFormer's two distillation stages, and on labels alone.
    /// Each is written as a Hugging Face directory for `veil compile --hf`.
    #[cfg(feature = "distill")]
    Distill {
        /// What to train: `fashion` (the CNN zoo) or `sentiment` (the MiniLM classifier).
        #[arg(long, default_value = "fashion")]
        task: String,
        /// The training configuration (TOML); by default configs/distill-TASK.toml.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Output directory.
        #[arg(long, default_value = "runs/distill")]
        out: PathBuf,
        /// Only the plain CNN (not the residual one).
        #[arg(long)]
        plain_only: bool,
        /// Load each model already in --out (NAME.safetensors) instead of training it
        /// again; its accuracy is measured afresh. With `--task sentiment`, a model
        /// goes on from the training phases it has completed (`rounds` in the config
        /// can grow between runs). The report keeps the losses and training time the
        /// folder's earlier report recorded for a reused model.
        #[arg(long)]
        reuse: bool,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
    /// Pools the paired tests of independent `veil distill` runs (the same recipe under
    /// different seeds): per split, the examples only the distilled student gets right
    /// and those only the labels-only one does, summed over the runs and tested
    /// together by McNemar's exact test.
    #[cfg(feature = "distill")]
    PooledTest {
        /// The runs' reports (sentiment-report.json or distill-report.json), two or more.
        #[arg(required = true, num_args = 2..)]
        reports: Vec<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Secure accuracy: serves labelled test images through every role on this machine
    /// (mutual TLS on loopback, one query per image) and compares each answer with the
    /// plain executor's and with the label.
    Evaluate {
        /// The compiled plan (NAME.plan).
        #[arg(long)]
        plan: PathBuf,
        /// The data set: `fashion` (Fashion-MNIST's test set, `scripts/fetch fashion`)
        /// or `reviews` (the test split of the movie reviews, `scripts/fetch reviews`,
        /// for a sentiment classifier compiled with `veil compile --hf`).
        #[arg(long, default_value = "fashion")]
        data: String,
        /// Only the first N test images or sentences.
        #[arg(long)]
        limit: Option<usize>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
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
    /// Chaos test: the TLS load test while idle connections, a flooding client, killed
    /// clients and dealer and server restarts hit the deployment (loopback only).
    Chaos {
        /// The bundled model: digits-cnn or digits-mlp.
        #[arg(long, default_value = DEMO_MODEL)]
        model: String,
        /// Honest concurrent clients.
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Queries per honest client, the quiet phase's included.
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Queries per client before the attack starts.
        #[arg(long, default_value_t = 25)]
        quiet_queries: usize,
        /// Idle TCP connections held open to each listener during the attack.
        #[arg(long, default_value_t = 1000)]
        idle_connections: usize,
        /// Times the dealer is killed and restarted.
        #[arg(long, default_value_t = 2)]
        dealer_restarts: usize,
        /// Times the server is killed and restarted.
        #[arg(long, default_value_t = 1)]
        server_restarts: usize,
        /// Client processes killed mid-query.
        #[arg(long, default_value_t = 2)]
        killed_clients: usize,
        /// Authenticated clients flooding the dealer with session requests, never reading.
        #[arg(long, default_value_t = 1)]
        flooding_clients: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        deadline_seconds: u64,
        /// The short version CI runs: 40 queries per client, 10 of them quiet.
        #[arg(long)]
        quick: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Certificates: each party makes its own key and signing request, a CA signs it
    /// (the dealer's operator and the model owner each run a CA of their own).
    Certs {
        #[command(subcommand)]
        command: CertsCommand,
    },
    /// Measures a model end to end with each role in its own process on loopback.
    Bench(BenchArguments),
    /// The asymmetric split mode (AsymML) against trusted-only, untrusted-only and
    /// Slalom-style blinding: trusted MACs, times (enclave emulated), r per layer.
    SplitBench(crate::split::SplitBenchArguments),
    /// The split mode's leakage: an attacker inverts what the worker sees (PSNR/SSIM, PNG).
    SplitLeakage(crate::split::SplitLeakageArguments),
    /// The split mode's untrusted worker (started by `veil split-bench`).
    #[command(hide = true)]
    SplitWorker(crate::split::SplitWorkerArguments),
}

/// `veil certs`'s steps.
#[derive(Subcommand)]
pub(crate) enum CertsCommand {
    /// Makes a CA: ca.pem (its certificate, to give the parties that trust it) and ca.key
    /// (its key, mode 0600, never to leave this folder). The dealer's operator runs one
    /// (it signs the dealer), the model owner another (it signs the server and clients).
    Ca {
        /// The CA's folder (made; an existing ca.key is never overwritten).
        #[arg(long)]
        out: PathBuf,
        /// The CA's name, in its certificate (e.g. "veil dealer CA, Example Org").
        #[arg(long, default_value = "veil CA")]
        name: String,
    },
    /// Makes this party's key (ROLE.key, mode 0600; it never leaves this machine) and a
    /// signing request (ROLE.csr) to give the CA's operator.
    Request {
        /// The party's role.
        #[arg(long, value_parser = served_role())]
        role: Role,
        /// The party's name, in its certificate (required for a client: how the server
        /// and the dealer tell clients apart). 1 to 64 of A-Z a-z 0-9 . _ -
        #[arg(long)]
        name: Option<String>,
        /// The party's folder (its --tls-dir).
        #[arg(long)]
        out: PathBuf,
    },
    /// The CA signs a request: checks that it asks for --role (and a valid name, and
    /// nothing else) and writes the certificate, to give back to the party as ROLE.pem.
    Sign {
        /// The CA's folder (ca.pem, ca.key).
        #[arg(long)]
        ca: PathBuf,
        /// The party's request (ROLE.csr).
        #[arg(long)]
        request: PathBuf,
        /// The role this CA means to sign; a request for another is refused.
        #[arg(long, value_parser = served_role())]
        role: Role,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = veil_net::pki::DEFAULT_CERTIFICATE_DAYS)]
        days: u32,
        /// Where to write the certificate (never overwritten).
        #[arg(long)]
        out: PathBuf,
    },
    /// Revokes a certificate this CA issued: adds it to the CA's revocation list
    /// (CA_DIR/ca.crl, or --out), to hand to the parties (trust-ROLE.crl or --crl).
    Revoke {
        /// The CA's folder (ca.pem, ca.key).
        #[arg(long)]
        ca: PathBuf,
        /// The certificate to revoke.
        #[arg(long)]
        certificate: PathBuf,
        /// The revocation list to extend (CA_DIR/ca.crl when absent; made if missing).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Prints the role, name and serial number a certificate states.
    Show {
        /// The certificate.
        #[arg(long)]
        certificate: PathBuf,
    },
    /// FOR TESTS ON ONE MACHINE ONLY: two CAs (dealer-ca/, owner-ca/) and a complete
    /// party folder each (dealer/, server/, client/). Every key then sits on this
    /// machine; a deployment runs `request` on each party's machine instead.
    Local {
        /// The folder to fill.
        #[arg(long)]
        out: PathBuf,
    },
}

/// `veil embed`'s options.
#[derive(clap::Args)]
pub(crate) struct EmbedArguments {
    /// Sentences to embed (or --input).
    pub(crate) sentences: Vec<String>,
    /// A file of sentences, one a line.
    #[arg(long)]
    pub(crate) input: Option<PathBuf>,
    /// A Hugging Face model directory: compile it and run the dealer, the server and this
    /// client on loopback over mutual TLS (a demonstration, not a deployment).
    #[arg(long, conflicts_with_all = ["server", "dealer", "public_plan"])]
    pub(crate) model: Option<PathBuf>,
    /// With --model: the padded sequence length.
    #[arg(long, default_value_t = 128)]
    pub(crate) seq: usize,
    /// With --model: `client` (public embedding tables) or `secure` (one-hot × E, the
    /// word table the server's weight).
    #[arg(long, default_value = "client", value_parser = ["client", "secure"])]
    pub(crate) embedding: String,
    /// With --model: compare each embedding with the plain forward (the input stays in
    /// this process).
    #[arg(long, requires = "model")]
    pub(crate) check: bool,
    /// The server's address.
    #[arg(long, requires_all = ["dealer", "public_plan"])]
    pub(crate) server: Option<String>,
    /// The dealer's address (from the client's own configuration, never the server's).
    #[arg(long)]
    pub(crate) dealer: Option<String>,
    /// The public plan `veil compile --hf` wrote.
    #[arg(long)]
    pub(crate) public_plan: Option<PathBuf>,
    /// The tokenizer (NAME.tokenizer.json beside the public plan when absent).
    #[arg(long)]
    pub(crate) tokenizer: Option<PathBuf>,
    /// Mutual TLS: the client's folder (see `veil certs`): client.pem, client.key,
    /// trust-server.pem and trust-dealer.pem.
    #[arg(long)]
    pub(crate) tls_dir: Option<PathBuf>,
    /// A revocation list (`veil certs revoke`) whose certificates are refused; repeat for
    /// several.
    #[arg(long = "crl", value_name = "FILE")]
    pub(crate) crl: Vec<PathBuf>,
    /// Instead of TLS: plain TCP, loopback addresses only (testing).
    #[arg(long)]
    pub(crate) insecure_plain_tcp: bool,
    /// Simulated network on the client–server link: local (default), lan or wan (plain TCP only).
    #[arg(long)]
    pub(crate) profile: Option<String>,
    /// One JSON object a sentence: its index, embedding, tokens and query figures.
    #[arg(long)]
    pub(crate) json: bool,
}

impl BenchArguments {
    /// The benchmark these arguments ask for.
    pub(crate) fn options(&self) -> veil_serve::bench::BenchOptions {
        veil_serve::bench::BenchOptions {
            model: self.model.clone(),
            batch: self.batch,
            setting: self.setting.clone(),
            profile: self.profile.clone(),
            calibrated: self.calibrated,
            tls: self.tls,
            repetitions: self.repetitions,
            pool_bytes: self.pool_bytes,
            prefetch: self.prefetch,
            pause_ms: self.pause_ms,
            sequence: self.seq,
            approx: self.approx.clone(),
            plan: self.plan.clone(),
            input: self.input.clone(),
            comparison_keys: self.comparison_keys,
        }
    }
}

/// The comparison keys `--comparison-keys` (or `comparison_keys` in a config file)
/// names; any other name is an error that lists the two.
pub(crate) fn comparison_keys(name: &str) -> Result<veil_mpc::ComparisonKeys, String> {
    veil_mpc::ComparisonKeys::from_name(name)
        .ok_or_else(|| format!("unknown comparison keys {name:?} (have: dpf, dcf)"))
}
