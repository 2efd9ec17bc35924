//! `veil load`: the dealer and the server as processes of their own over mutual TLS,
//! N concurrent clients in this process, every answer checked against the plain
//! executor.

use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;
use veil_model::Plan;
use veil_model::plain::{argmax_rows, run_plain};
use veil_model::plan::OutputPolicy;
use veil_net::{Role, TcpOptions};

use crate::processes::{
    DealerReport, RoleProcess, ServerReport, WorkFolder, free_loopback_addresses,
};
use crate::roles::{Client, ClientOptions, peak_rss_bytes};
use crate::{Error, Result};

/// What to run.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The model's name (for the report).
    pub model: String,
    /// The full plan's file (the server's process loads it).
    pub plan_file: PathBuf,
    /// The public plan's file (the dealer's process loads it).
    pub public_plan_file: PathBuf,
    /// Concurrent clients.
    pub clients: usize,
    /// Queries per client.
    pub queries: usize,
    /// Queries' halves each client holds ahead.
    pub prefetch: usize,
    /// The dealer's pool in bytes (its default when `None`).
    pub pool_bytes: Option<u64>,
}

/// Peak resident set sizes of the processes.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PeakMemory {
    /// The server's process.
    pub server: Option<u64>,
    /// The dealer's process.
    pub dealer: Option<u64>,
    /// This process, which runs the clients.
    pub clients_process: Option<u64>,
}

/// What the load test measured; the field names (but `client_errors`) are the JSON keys.
#[derive(Clone, Debug, Serialize)]
#[allow(missing_docs)]
pub struct LoadReport {
    pub model: String,
    pub tls: bool,
    pub clients: usize,
    pub queries: usize,
    pub answers_differing_from_plain: usize,
    pub failed_clients: usize,
    pub failed_sessions_at_server: u64,
    pub seconds: f64,
    pub queries_per_second: f64,
    pub latency_p50_s: f64,
    pub latency_p99_s: f64,
    pub prefetch: usize,
    pub warm_queries: usize,
    pub pool_hits: u64,
    pub burnt_sessions: u64,
    pub peak_rss_bytes: PeakMemory,
    pub dealer_payload_bytes_received: u64,
    /// Why each failed client failed (not in the JSON: print them).
    #[serde(skip)]
    pub client_errors: Vec<String>,
}

/// Whether a secure answer (a label, or logits) names the plain executor's class for
/// `sample`.
pub(crate) fn answer_matches(
    plan: &Plan,
    sample: &[f32],
    output: &[f32],
    classes: usize,
    labels_only: bool,
) -> Result<bool> {
    let plain = argmax_rows(&run_plain(plan, sample, 1)?, classes)[0];
    let secure = if labels_only {
        output.first().map_or(usize::MAX, |&label| label as usize)
    } else {
        argmax_rows(output, classes)[0]
    };
    Ok(plain == secure)
}

/// One client's queries: latencies, wrong answers, warm queries.
type ClientOutcome = (Vec<f64>, usize, usize);

/// Runs the load test of `plan` (the plan in `options`' files) with `executable` (the
/// `veil` binary) as the dealer's and the server's process; client `c`'s query `q` is
/// `samples[(c × queries + q) mod samples]`.
pub fn run_load(
    executable: &std::path::Path,
    plan: &Plan,
    options: &LoadOptions,
    samples: &[&[f32]],
) -> Result<LoadReport> {
    let LoadOptions {
        clients,
        queries,
        prefetch,
        pool_bytes,
        ..
    } = *options;
    if samples.is_empty() {
        return Err(Error::Unsupported(
            "the load test needs at least one sample",
        ));
    }
    let work = WorkFolder::new("load")?;
    let certificates = work.certificates()?;
    let (dealer_address, server_address) = free_loopback_addresses()?;
    let link = |role: Role| certificates.tls_arguments(role);
    let max = clients.to_string();
    let mut dealer_arguments = vec![
        "--listen".into(),
        dealer_address.clone(),
        "--public-plan".into(),
        options.public_plan_file.display().to_string(),
        "--max-clients".into(),
        max.clone(),
        "--json".into(),
    ];
    dealer_arguments.extend(link(Role::Dealer)?);
    dealer_arguments.extend(pool_bytes.map(|bytes| format!("--pool-bytes={bytes}")));
    let dealer = RoleProcess::spawn(executable, Role::Dealer, &dealer_arguments)?;
    let mut server_arguments = vec![
        "--listen".into(),
        server_address.clone(),
        "--dealer".into(),
        dealer_address.clone(),
        "--plan".into(),
        options.plan_file.display().to_string(),
        "--max-clients".into(),
        max,
        "--json".into(),
    ];
    server_arguments.extend(link(Role::Server)?);
    let server = RoleProcess::spawn(executable, Role::Server, &server_arguments)?;
    let transport = certificates.transport(Role::Client, TcpOptions::default())?;
    let classes = plan.public.graph.infer_shapes(1)?[plan.public.graph.output][1];
    let labels_only = matches!(plan.public.output_policy, OutputPolicy::Label { .. });
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|worker| {
            let (plan, transport) = (plan.clone(), transport.clone());
            let (server_address, dealer_address) = (server_address.clone(), dealer_address.clone());
            let samples: Vec<Vec<f32>> = (0..queries)
                .map(|q| samples[(worker * queries + q) % samples.len()].to_vec())
                .collect();
            std::thread::spawn(move || -> Result<ClientOutcome> {
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
                    let right =
                        answer_matches(&plan, sample, &report.output, classes, labels_only)?;
                    wrong += usize::from(!right);
                }
                Ok((latencies, wrong, warm))
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let (mut wrong, mut warm) = (0, 0);
    let mut client_errors = Vec::new();
    for worker in workers {
        match worker
            .join()
            .map_err(|_| Error::ThreadPanicked { what: "client" })?
        {
            Ok((worker_latencies, worker_wrong, worker_warm)) => {
                latencies.extend(worker_latencies);
                wrong += worker_wrong;
                warm += worker_warm;
            }
            Err(error) => client_errors.push(error.to_string()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let server: ServerReport = server.report()?;
    let dealer: DealerReport = dealer.report()?;
    drop(work);
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    Ok(LoadReport {
        model: options.model.clone(),
        tls: true,
        clients,
        queries: latencies.len(),
        answers_differing_from_plain: wrong,
        failed_clients: client_errors.len(),
        failed_sessions_at_server: server.failed_sessions,
        seconds: elapsed,
        queries_per_second: latencies.len() as f64 / elapsed,
        latency_p50_s: quantile(0.5),
        latency_p99_s: quantile(0.99),
        prefetch,
        warm_queries: warm,
        pool_hits: dealer.pool_hits,
        burnt_sessions: dealer.burnt_sessions,
        peak_rss_bytes: PeakMemory {
            server: server.peak_rss_bytes,
            dealer: dealer.peak_rss_bytes,
            clients_process: peak_rss_bytes(),
        },
        dealer_payload_bytes_received: dealer.payload_bytes_received_after_handshake,
        client_errors,
    })
}
