//! `veil chaos`: the TLS load test while the deployment is attacked and broken, on
//! loopback, bounded in time.
//!
//! The dealer and the server run as processes of their own over mutual TLS; N honest
//! clients in this process run their queries, each answer checked against the plain
//! executor, retrying (with a fresh connection) whatever fails. After a quiet phase, all
//! of these happen at once:
//! - idle TCP connections held open to both listeners (reopened when closed);
//! - one authenticated client that floods the dealer with session requests at the
//!   deepest prefetch and never reads;
//! - client processes killed (SIGKILL) in the middle of their queries;
//! - the dealer killed and restarted, and the server killed and restarted, one after
//!   the other, each time measuring how long until a new client's query succeeds.
//!
//! Each process's resident memory and open file descriptors are sampled throughout. At
//! the end both processes get SIGTERM, and the time they take to exit is measured.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::info;
use veil_model::Plan;
use veil_model::plan::OutputPolicy;
use veil_net::{Channel, Role, TcpOptions};

use crate::handshake::handshake;
use crate::load::answer_matches;
use crate::messages::{ClientExtension, Hello, MAX_PREFETCH, SessionRequest, WeightCommitment};
use crate::processes::{
    DealerReport, RoleProcess, ServerReport, WorkFolder, free_loopback_addresses,
};
use crate::roles::{Client, ClientOptions, peak_rss_bytes};
use crate::transport::Transport;
use crate::{Error, Result};

/// The processes' log filter: the attack makes thousands of expected warnings (refused
/// handshakes, closed sessions); errors still show.
const CHAOS_LOG: &str = "error";

/// What to run.
#[derive(Clone, Debug)]
pub struct ChaosOptions {
    /// The model's name (for the report).
    pub model: String,
    /// The full plan's file (the server's process loads it).
    pub plan_file: PathBuf,
    /// The public plan's file (the dealer's and the killed clients' processes load it).
    pub public_plan_file: PathBuf,
    /// Honest concurrent clients.
    pub clients: usize,
    /// Queries per honest client, the quiet phase's included.
    pub queries: usize,
    /// Of those, queries per client in the quiet phase before the attack.
    pub quiet_queries: usize,
    /// Idle TCP connections held open to each listener during the attack.
    pub idle_connections: usize,
    /// Times the dealer is killed and restarted.
    pub dealer_restarts: usize,
    /// Times the server is killed and restarted.
    pub server_restarts: usize,
    /// Client processes killed mid-query.
    pub killed_clients: usize,
    /// Authenticated clients that flood the dealer with session requests and never read.
    pub flooding_clients: usize,
    /// The longest the whole run may take before it gives up.
    pub deadline: Duration,
}

/// One restart and how long the deployment took to serve again.
#[derive(Clone, Debug, Serialize)]
pub struct Recovery {
    /// "dealer" or "server".
    pub role: String,
    /// From the new process's start until a new client's query succeeded.
    pub seconds: f64,
}

/// What the chaos run measured; the JSON keys are the field names.
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
pub struct ChaosReport {
    pub model: String,
    pub clients: usize,
    pub queries_per_client: usize,
    pub answers_completed: usize,
    pub answers_differing_from_plain: usize,
    /// Honest clients that could not finish their queries by the deadline.
    pub unfinished_clients: usize,
    /// Queries retried after an error (restarts, refusals).
    pub retries: u64,
    /// Errors the honest clients saw, by kind (the first words of the message).
    pub client_errors: BTreeMap<String, u64>,
    /// Errors that said the dealer's and the server's weight commitments differ.
    pub commitment_refusals: u64,
    pub quiet_queries_per_second: f64,
    pub attack_queries_per_second: f64,
    /// The attack phase's throughput as a fraction of the quiet phase's.
    pub attack_throughput_fraction: f64,
    pub idle_connections_per_listener: usize,
    pub idle_connections_reopened: u64,
    pub flood_requests_sent: u64,
    pub clients_killed: usize,
    pub recoveries: Vec<Recovery>,
    /// Peak resident memory per role, over every process of that role.
    pub peak_rss_bytes: BTreeMap<String, u64>,
    /// Peak open file descriptors per role, over every process of that role.
    pub peak_file_descriptors: BTreeMap<String, u64>,
    /// Seconds from SIGTERM to exit, per role.
    pub shutdown_seconds: BTreeMap<String, f64>,
    /// Queries the last server process answered and sessions it saw fail (none when
    /// its report could not be read).
    pub last_server_queries: Option<u64>,
    pub last_server_failed_sessions: Option<u64>,
    /// Payload bytes the last dealer process received after handshakes (must be 0).
    pub last_dealer_payload_bytes_received: Option<u64>,
    pub this_process_peak_rss_bytes: Option<u64>,
    pub seconds: f64,
}

/// The processes' peak memory and descriptors, sampled every 100 ms.
#[derive(Default)]
struct Sampled {
    pids: BTreeMap<String, u32>,
    peak_rss: BTreeMap<String, u64>,
    peak_fds: BTreeMap<String, u64>,
}

fn sample_process(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?
        * 1024;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    Some((rss, fds))
}

/// The dealer's and the server's processes, restartable with their arguments.
struct Processes {
    executable: PathBuf,
    dealer_arguments: Vec<String>,
    server_arguments: Vec<String>,
    dealer: Option<RoleProcess>,
    server: Option<RoleProcess>,
    sampled: Arc<Mutex<Sampled>>,
}

impl Processes {
    fn start(&mut self, role: Role) -> Result<()> {
        let arguments = match role {
            Role::Dealer => &self.dealer_arguments,
            _ => &self.server_arguments,
        };
        let process =
            RoleProcess::spawn_logging(&self.executable, role, arguments, Some(CHAOS_LOG))?;
        if let Ok(mut sampled) = self.sampled.lock() {
            sampled.pids.insert(role.to_string(), process.pid());
        }
        match role {
            Role::Dealer => self.dealer = Some(process),
            _ => self.server = Some(process),
        }
        Ok(())
    }

    fn kill(&mut self, role: Role) {
        let process = match role {
            Role::Dealer => self.dealer.take(),
            _ => self.server.take(),
        };
        if let Some(process) = process {
            process.kill();
        }
    }
}

/// An honest client's loop: connects (again after any failure) and runs its queries,
/// each checked against the plain executor, until all are done or `stop` is set.
struct Honest {
    plan: Plan,
    transport: Transport,
    server_address: String,
    dealer_address: String,
    classes: usize,
    labels_only: bool,
}

/// What one honest client saw.
#[derive(Default)]
struct HonestOutcome {
    completed: Vec<Instant>,
    wrong: usize,
    retries: u64,
    errors: BTreeMap<String, u64>,
    commitment_refusals: u64,
    finished: bool,
}

/// The first words of an error: its kind, without addresses or numbers.
fn error_kind(message: &str) -> String {
    message
        .split(|c: char| c == ':' || c == '(' || c.is_ascii_digit())
        .next()
        .unwrap_or(message)
        .trim()
        .chars()
        .take(60)
        .collect()
}

impl Honest {
    fn connect(&self) -> Result<Client> {
        let options = ClientOptions {
            batch: 1,
            ..ClientOptions::default()
        };
        Client::connect_with(
            self.plan.public.clone(),
            &self.server_address,
            &self.dealer_address,
            options,
            &self.transport,
        )
    }

    fn run(&self, samples: &[Vec<f32>], deadline: Instant, outcome: &Mutex<HonestOutcome>) {
        let mut client: Option<Client> = None;
        let mut next = 0;
        while next < samples.len() && Instant::now() < deadline {
            let attempt = match client.as_mut() {
                Some(client) => client.query(&samples[next]),
                None => match self.connect() {
                    Ok(connected) => {
                        client = Some(connected);
                        continue;
                    }
                    Err(error) => Err(error),
                },
            };
            let mut outcome = match outcome.lock() {
                Ok(outcome) => outcome,
                Err(_) => return,
            };
            match attempt {
                Ok(report) => {
                    outcome.completed.push(Instant::now());
                    let right = answer_matches(
                        &self.plan,
                        &samples[next],
                        &report.output,
                        self.classes,
                        self.labels_only,
                    )
                    .unwrap_or(false);
                    outcome.wrong += usize::from(!right);
                    next += 1;
                }
                Err(error) => {
                    let message = error.to_string();
                    outcome.commitment_refusals += u64::from(message.contains("commitment"));
                    *outcome.errors.entry(error_kind(&message)).or_default() += 1;
                    outcome.retries += 1;
                    client = None;
                    drop(outcome);
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
        if let Ok(mut outcome) = outcome.lock() {
            outcome.finished = next == samples.len();
        }
    }

    /// A new client's first query until it succeeds: the time to recover.
    fn probe(&self, sample: &[f32], deadline: Instant) -> Option<f64> {
        let started = Instant::now();
        while Instant::now() < deadline {
            if let Ok(mut client) = self.connect()
                && client.query(sample).is_ok()
            {
                return Some(started.elapsed().as_secs_f64());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

/// Holds `count` idle TCP connections to `address` until `stop`, reopening those the
/// listener closed. Returns how many it reopened.
fn hold_idle_connections(address: &str, count: usize, stop: &AtomicBool) -> u64 {
    let open = || {
        TcpStream::connect(address).ok().inspect(|stream| {
            let _ = stream.set_nonblocking(true);
        })
    };
    let mut streams: Vec<Option<TcpStream>> = (0..count).map(|_| open()).collect();
    let mut reopened = 0;
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(500));
        for slot in &mut streams {
            let closed = match slot {
                Some(stream) => {
                    let mut byte = [0u8; 1];
                    match stream.read(&mut byte) {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
                    }
                }
                None => true,
            };
            if closed {
                *slot = open();
                reopened += 1;
            }
        }
    }
    reopened
}

/// An authenticated client that asks the dealer for sessions at the deepest prefetch as
/// fast as it can and never reads an answer. Returns the requests it sent.
fn flood_dealer(honest: &Honest, stop: &AtomicBool) -> Result<u64> {
    let plan_hash = honest.plan.public.hash_hex()?;
    let mut server = honest
        .transport
        .connect(&honest.server_address, Role::Server)?;
    let hello = Hello {
        role: Role::Client,
        plan_hash: plan_hash.clone(),
        epoch: 0,
        commitment: WeightCommitment::NONE,
        extension: vec![],
    };
    let server_hello = handshake(&mut server, &hello, Role::Server)?;
    let _masked_weights = server.recv()?;
    let mut dealer = honest
        .transport
        .unshaped()
        .connect(&honest.dealer_address, Role::Dealer)?;
    let hello = Hello {
        role: Role::Client,
        plan_hash,
        epoch: server_hello.epoch,
        commitment: server_hello.commitment,
        extension: ClientExtension {
            batch: 1,
            prefetch: MAX_PREFETCH,
        }
        .encode(),
    };
    handshake(&mut dealer, &hello, Role::Dealer)?;
    let mut sent: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        if dealer.send(&SessionRequest.encode()).is_err() {
            break;
        }
        sent += 1;
        if sent.is_multiple_of(1000) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(sent)
}

/// Runs the chaos test of `plan` (the plan in `options`' files) with `executable` (the
/// `veil` binary) as the dealer's, the server's and the killed clients' processes;
/// honest client `c`'s query `q` is `samples[(c × queries + q) mod samples]`.
pub fn run_chaos(
    executable: &Path,
    plan: &Plan,
    options: &ChaosOptions,
    samples: &[&[f32]],
) -> Result<ChaosReport> {
    if samples.is_empty() || options.clients == 0 || options.queries <= options.quiet_queries {
        return Err(Error::Unsupported(
            "the chaos test needs samples, clients, and more queries than quiet ones",
        ));
    }
    let started = Instant::now();
    let deadline = started + options.deadline;
    let work = WorkFolder::new("chaos")?;
    let certificates = work.certificates()?;
    let (dealer_address, server_address) = free_loopback_addresses()?;
    let mut dealer_arguments = vec![
        "--listen".into(),
        dealer_address.clone(),
        "--public-plan".into(),
        options.public_plan_file.display().to_string(),
        "--json".into(),
    ];
    dealer_arguments.extend(certificates.tls_arguments(Role::Dealer)?);
    let mut server_arguments = vec![
        "--listen".into(),
        server_address.clone(),
        "--dealer".into(),
        dealer_address.clone(),
        "--plan".into(),
        options.plan_file.display().to_string(),
        "--json".into(),
    ];
    server_arguments.extend(certificates.tls_arguments(Role::Server)?);
    let sampled = Arc::new(Mutex::new(Sampled::default()));
    let mut processes = Processes {
        executable: executable.to_path_buf(),
        dealer_arguments,
        server_arguments,
        dealer: None,
        server: None,
        sampled: Arc::clone(&sampled),
    };
    processes.start(Role::Dealer)?;
    processes.start(Role::Server)?;
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (sampled, sampling) = (Arc::clone(&sampled), Arc::clone(&sampling));
        std::thread::spawn(move || {
            while sampling.load(Ordering::SeqCst) {
                if let Ok(mut sampled) = sampled.lock() {
                    let pids: Vec<(String, u32)> =
                        sampled.pids.iter().map(|(r, p)| (r.clone(), *p)).collect();
                    for (role, pid) in pids {
                        if let Some((rss, fds)) = sample_process(pid) {
                            let peak = sampled.peak_rss.entry(role.clone()).or_default();
                            *peak = (*peak).max(rss);
                            let peak = sampled.peak_fds.entry(role).or_default();
                            *peak = (*peak).max(fds);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let transport = certificates.transport(Role::Client, TcpOptions::default())?;
    let classes = plan.public.graph.infer_shapes(1)?[plan.public.graph.output][1];
    let honest = Arc::new(Honest {
        plan: plan.clone(),
        transport,
        server_address: server_address.clone(),
        dealer_address: dealer_address.clone(),
        classes,
        labels_only: matches!(plan.public.output_policy, OutputPolicy::Label { .. }),
    });
    // Ready when a first client is served.
    honest
        .probe(samples[0], deadline)
        .ok_or(Error::Unsupported(
            "the deployment never served a first query",
        ))?;
    let run_clients = |queries: std::ops::Range<usize>| {
        let outcomes: Vec<Arc<Mutex<HonestOutcome>>> = (0..options.clients)
            .map(|_| Arc::new(Mutex::new(HonestOutcome::default())))
            .collect();
        let threads: Vec<_> = outcomes
            .iter()
            .enumerate()
            .map(|(worker, outcome)| {
                let (honest, outcome) = (Arc::clone(&honest), Arc::clone(outcome));
                let samples: Vec<Vec<f32>> = queries
                    .clone()
                    .map(|q| samples[(worker * options.queries + q) % samples.len()].to_vec())
                    .collect();
                std::thread::spawn(move || honest.run(&samples, deadline, &outcome))
            })
            .collect();
        (outcomes, threads)
    };
    // The quiet phase.
    let quiet_started = Instant::now();
    let (quiet, threads) = run_clients(0..options.quiet_queries);
    for thread in threads {
        let _ = thread.join();
    }
    let quiet_seconds = quiet_started.elapsed().as_secs_f64();
    info!(quiet_seconds, "chaos: quiet phase done");
    // The attack.
    let stop = Arc::new(AtomicBool::new(false));
    let attack_started = Instant::now();
    let (attack, threads) = run_clients(options.quiet_queries..options.queries);
    let idle: Vec<_> = [dealer_address.clone(), server_address.clone()]
        .into_iter()
        .map(|address| {
            let (stop, count) = (Arc::clone(&stop), options.idle_connections);
            std::thread::spawn(move || hold_idle_connections(&address, count, &stop))
        })
        .collect();
    let flood_sent = Arc::new(AtomicU64::new(0));
    let floods: Vec<_> = (0..options.flooding_clients)
        .map(|_| {
            let (honest, stop, sent) = (
                Arc::clone(&honest),
                Arc::clone(&stop),
                Arc::clone(&flood_sent),
            );
            std::thread::spawn(move || {
                if let Ok(count) = flood_dealer(&honest, &stop) {
                    sent.fetch_add(count, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Clients killed mid-query, then the restarts, one after the other.
    let input_file = work.path().join("input.txt");
    let input: Vec<String> = samples[0].iter().map(f32::to_string).collect();
    std::fs::write(&input_file, input.join(" "))
        .map_err(Error::io(format!("writing {}", input_file.display())))?;
    let mut killed = 0;
    for _ in 0..options.killed_clients {
        let mut arguments = vec![
            "--server".into(),
            server_address.clone(),
            "--dealer".into(),
            dealer_address.clone(),
            "--public-plan".into(),
            options.public_plan_file.display().to_string(),
            "--input".into(),
            input_file.display().to_string(),
            "--repeat".into(),
            "1000000".into(),
        ];
        arguments.extend(certificates.tls_arguments(Role::Client)?);
        let process =
            RoleProcess::spawn_logging(executable, Role::Client, &arguments, Some(CHAOS_LOG))?;
        std::thread::sleep(Duration::from_millis(1500));
        process.kill();
        killed += 1;
    }
    let mut recoveries = Vec::new();
    let schedule = std::iter::repeat_n(Role::Dealer, options.dealer_restarts)
        .chain(std::iter::repeat_n(Role::Server, options.server_restarts));
    for role in schedule {
        processes.kill(role);
        std::thread::sleep(Duration::from_millis(300));
        processes.start(role)?;
        let restarted = Instant::now();
        let recovered = honest.probe(samples[0], deadline);
        let seconds = recovered.map_or(f64::INFINITY, |_| restarted.elapsed().as_secs_f64());
        info!(%role, seconds, "chaos: recovered");
        recoveries.push(Recovery {
            role: role.to_string(),
            seconds,
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    for thread in threads {
        let _ = thread.join();
    }
    let attack_seconds = attack_started.elapsed().as_secs_f64();
    stop.store(true, Ordering::SeqCst);
    let reopened: u64 = idle
        .into_iter()
        .filter_map(|thread| thread.join().ok())
        .sum();
    for flood in floods {
        let _ = flood.join();
    }
    // SIGTERM both, timing their exits.
    let mut shutdown_seconds = BTreeMap::new();
    let mut server_report: Option<ServerReport> = None;
    let mut dealer_report: Option<DealerReport> = None;
    for role in [Role::Server, Role::Dealer] {
        let process = match role {
            Role::Dealer => processes.dealer.take(),
            _ => processes.server.take(),
        };
        if let Some(process) = process {
            let signalled = Instant::now();
            process.terminate();
            match role {
                Role::Dealer => dealer_report = process.report().ok(),
                _ => server_report = process.report().ok(),
            }
            shutdown_seconds.insert(role.to_string(), signalled.elapsed().as_secs_f64());
        }
    }
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.join();
    drop(work);
    let gather = |outcomes: &[Arc<Mutex<HonestOutcome>>]| -> Vec<HonestOutcome> {
        outcomes
            .iter()
            .filter_map(|outcome| outcome.lock().ok().map(|mut o| std::mem::take(&mut *o)))
            .collect()
    };
    let (quiet, attack) = (gather(&quiet), gather(&attack));
    let completed =
        |outcomes: &[HonestOutcome]| outcomes.iter().map(|o| o.completed.len()).sum::<usize>();
    let quiet_rate = completed(&quiet) as f64 / quiet_seconds;
    let attack_rate = completed(&attack) as f64 / attack_seconds;
    let mut client_errors = BTreeMap::new();
    for outcome in quiet.iter().chain(&attack) {
        for (kind, count) in &outcome.errors {
            *client_errors.entry(kind.clone()).or_default() += count;
        }
    }
    let sampled = sampled
        .lock()
        .map_err(|_| Error::ThreadPanicked { what: "sampler" })?;
    Ok(ChaosReport {
        model: options.model.clone(),
        clients: options.clients,
        queries_per_client: options.queries,
        answers_completed: completed(&quiet) + completed(&attack),
        answers_differing_from_plain: quiet.iter().chain(&attack).map(|o| o.wrong).sum(),
        unfinished_clients: quiet
            .iter()
            .chain(&attack)
            .filter(|outcome| !outcome.finished)
            .count(),
        retries: quiet.iter().chain(&attack).map(|o| o.retries).sum(),
        client_errors,
        commitment_refusals: quiet
            .iter()
            .chain(&attack)
            .map(|o| o.commitment_refusals)
            .sum(),
        quiet_queries_per_second: quiet_rate,
        attack_queries_per_second: attack_rate,
        attack_throughput_fraction: attack_rate / quiet_rate,
        idle_connections_per_listener: options.idle_connections,
        idle_connections_reopened: reopened,
        flood_requests_sent: flood_sent.load(Ordering::SeqCst),
        clients_killed: killed,
        recoveries,
        peak_rss_bytes: sampled.peak_rss.clone(),
        peak_file_descriptors: sampled.peak_fds.clone(),
        shutdown_seconds,
        last_server_queries: server_report.as_ref().map(|r| r.queries),
        last_server_failed_sessions: server_report.as_ref().map(|r| r.failed_sessions),
        last_dealer_payload_bytes_received: dealer_report
            .as_ref()
            .map(|r| r.payload_bytes_received_after_handshake),
        this_process_peak_rss_bytes: peak_rss_bytes(),
        seconds: started.elapsed().as_secs_f64(),
    })
}
