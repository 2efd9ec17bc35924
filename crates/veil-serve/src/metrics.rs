//! Prometheus metrics for the server and the dealer: queries, failed sessions by kind, a
//! latency histogram, sessions in progress, and the dealer's preprocessing pool (fill in
//! bytes, entries, hits and misses, burnt halves). Served as text on `GET /metrics` by a small HTTP
//! listener of its own. Metrics carry counts and times only, never data.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crate::{Error, Result};

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    queries: AtomicU64,
    sessions_active: AtomicI64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_microseconds: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    pool_capacity_bytes: AtomicU64,
    pool_bytes: AtomicU64,
    pool_ready_entries: AtomicU64,
    pool_awaiting_claims: AtomicU64,
    pool_hits: AtomicU64,
    pool_misses: AtomicU64,
    burnt_halves: AtomicU64,
}

impl Metrics {
    /// Records one answered query and its online time.
    pub fn record_query(&self, seconds: f64) {
        self.queries.fetch_add(1, Ordering::Relaxed);
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_microseconds
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// Records a failed session, by the kind of its error.
    pub fn record_error(&self, error: &Error) {
        let kind = error_kind(error);
        if let Ok(mut errors) = self.errors.lock() {
            *errors.entry(kind).or_default() += 1;
        }
    }

    /// The pool's configured capacity.
    pub fn set_pool_capacity(&self, bytes: u64) {
        self.pool_capacity_bytes.store(bytes, Ordering::Relaxed);
    }

    /// The pool's fill: bytes held, ready entries, server halves awaiting their claim.
    pub fn set_pool_fill(&self, bytes: u64, ready_entries: u64, awaiting_claims: u64) {
        self.pool_bytes.store(bytes, Ordering::Relaxed);
        self.pool_ready_entries
            .store(ready_entries, Ordering::Relaxed);
        self.pool_awaiting_claims
            .store(awaiting_claims, Ordering::Relaxed);
    }

    /// A request for material that found a ready entry (`hit`) or not.
    pub fn record_pool_request(&self, hit: bool) {
        let counter = if hit {
            &self.pool_hits
        } else {
            &self.pool_misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Halves burnt without being delivered.
    pub fn record_burnt(&self, halves: u64) {
        self.burnt_halves.fetch_add(halves, Ordering::Relaxed);
    }

    /// Marks a session started (+1) or ended (−1).
    pub fn session_delta(&self, delta: i64) {
        self.sessions_active.fetch_add(delta, Ordering::Relaxed);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut text = String::new();
        text.push_str(
            "# HELP veil_queries_total Queries answered.\n# TYPE veil_queries_total counter\n",
        );
        text.push_str(&format!(
            "veil_queries_total {}\n",
            self.queries.load(Ordering::Relaxed)
        ));
        text.push_str("# HELP veil_sessions_active Client sessions in progress.\n# TYPE veil_sessions_active gauge\n");
        text.push_str(&format!(
            "veil_sessions_active {}\n",
            self.sessions_active.load(Ordering::Relaxed)
        ));
        text.push_str("# HELP veil_session_errors_total Client sessions that failed, by kind.\n# TYPE veil_session_errors_total counter\n");
        if let Ok(errors) = self.errors.lock() {
            for (kind, count) in errors.iter() {
                text.push_str(&format!(
                    "veil_session_errors_total{{kind=\"{kind}\"}} {count}\n"
                ));
            }
        }
        text.push_str("# HELP veil_query_seconds Server-side query time.\n# TYPE veil_query_seconds histogram\n");
        for (bucket, bound) in self.latency_buckets.iter().zip(BUCKETS) {
            text.push_str(&format!(
                "veil_query_seconds_bucket{{le=\"{bound}\"}} {}\n",
                bucket.load(Ordering::Relaxed)
            ));
        }
        let count = self.latency_count.load(Ordering::Relaxed);
        text.push_str(&format!(
            "veil_query_seconds_bucket{{le=\"+Inf\"}} {count}\n"
        ));
        text.push_str(&format!(
            "veil_query_seconds_sum {}\n",
            self.latency_sum_microseconds.load(Ordering::Relaxed) as f64 / 1e6
        ));
        text.push_str(&format!("veil_query_seconds_count {count}\n"));
        let gauges = [
            (
                "veil_pool_capacity_bytes",
                "gauge",
                "The dealer pool's capacity.",
                &self.pool_capacity_bytes,
            ),
            (
                "veil_pool_bytes",
                "gauge",
                "Material the dealer pool holds (ready entries and halves awaiting their claim).",
                &self.pool_bytes,
            ),
            (
                "veil_pool_ready_entries",
                "gauge",
                "Pre-generated entries ready for a query.",
                &self.pool_ready_entries,
            ),
            (
                "veil_pool_awaiting_claims",
                "gauge",
                "Server halves waiting for the server's claim.",
                &self.pool_awaiting_claims,
            ),
            (
                "veil_pool_hits_total",
                "counter",
                "Requests served from a ready entry.",
                &self.pool_hits,
            ),
            (
                "veil_pool_misses_total",
                "counter",
                "Requests that found no ready entry.",
                &self.pool_misses,
            ),
            (
                "veil_burnt_halves_total",
                "counter",
                "Material halves burnt undelivered (timed out or cancelled).",
                &self.burnt_halves,
            ),
        ];
        for (name, kind, help, value) in gauges {
            text.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        text
    }
}

/// A metric label for an error: what failed, never any data.
fn error_kind(error: &Error) -> &'static str {
    match error {
        Error::Net(net) | Error::Link { cause: net, .. } | Error::Connect { cause: net, .. } => {
            net_kind(net)
        }
        Error::Mpc(mpc) => mpc_kind(mpc),
        Error::Exec(veil_exec::Error::Mpc(mpc)) => mpc_kind(mpc),
        Error::Exec(_) => "protocol",
        Error::PeerMisbehaved(_) => "peer_misbehaved",
        _ => "session",
    }
}

fn net_kind(error: &veil_net::Error) -> &'static str {
    match error {
        veil_net::Error::PeerClosed => "peer_closed",
        veil_net::Error::Timeout { .. } => "timeout",
        veil_net::Error::Truncated { .. } | veil_net::Error::FrameTooLarge { .. } => "framing",
        veil_net::Error::Tls { .. } | veil_net::Error::WrongPeerRole { .. } => "tls",
        veil_net::Error::WrongSession => "protocol",
        _ => "network",
    }
}

fn mpc_kind(error: &veil_mpc::Error) -> &'static str {
    match error {
        veil_mpc::Error::PeerMisbehaved(_) => "peer_misbehaved",
        veil_mpc::Error::Net(net) => net_kind(net),
        _ => "protocol",
    }
}

/// Serves `GET /metrics` on `address` from a thread of its own.
pub fn serve_metrics(address: &str, metrics: Arc<Metrics>) -> Result<JoinHandle<()>> {
    let listener = TcpListener::bind(address).map_err(Error::io(format!(
        "binding the metrics endpoint on {address}"
    )))?;
    std::thread::Builder::new()
        .name("veil-metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut reader = BufReader::new(&stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).is_err() {
                    continue;
                }
                let (status, body) = if request_line.starts_with("GET /metrics") {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "try GET /metrics\n".to_string())
                };
                let mut stream = &stream;
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        })
        .map_err(Error::io("starting the metrics thread"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_histogram() {
        let metrics = Metrics::default();
        metrics.record_query(0.003);
        metrics.record_query(0.2);
        metrics.record_error(&Error::Net(veil_net::Error::PeerClosed));
        metrics.record_error(&Error::Link {
            what: "waiting",
            cause: veil_net::Error::Timeout { seconds: 1 },
        });
        metrics.record_error(&Error::Exec(veil_exec::Error::Mpc(veil_mpc::Error::Net(
            veil_net::Error::PeerClosed,
        ))));
        metrics.record_error(&crate::PeerMisbehaved::ChunkMismatch.into());
        metrics.record_error(&Error::ClientLimit);
        let text = metrics.render();
        assert!(text.contains("veil_queries_total 2"));
        assert!(text.contains("veil_query_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("veil_query_seconds_bucket{le=\"+Inf\"} 2"));
        assert!(text.contains("veil_session_errors_total{kind=\"peer_closed\"} 2"));
        assert!(text.contains("veil_session_errors_total{kind=\"timeout\"} 1"));
        assert!(text.contains("veil_session_errors_total{kind=\"peer_misbehaved\"} 1"));
        assert!(text.contains("veil_session_errors_total{kind=\"session\"} 1"));
    }

    #[test]
    fn the_endpoint_answers_over_http() {
        let metrics = Arc::new(Metrics::default());
        metrics.record_query(0.01);
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap().to_string();
        drop(probe);
        serve_metrics(&address, Arc::clone(&metrics)).unwrap();
        let mut stream = std::net::TcpStream::connect(&address).unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).unwrap();
        assert!(response.starts_with("HTTP/1.1 200 OK"));
        assert!(response.contains("veil_queries_total 1"));
    }
}
