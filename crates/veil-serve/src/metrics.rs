//! Prometheus metrics for the server and the dealer: queries, failed sessions by kind, a
//! latency histogram, sessions in progress, and the dealer's preprocessing pool (fill in
//! bytes, entries, hits and misses, burnt halves), kept and encoded by the
//! `prometheus-client` crate (the OpenMetrics text format, which Prometheus reads).
//! Metrics carry counts and times only, never data.
//!
//! [`serve_metrics`] answers `GET /metrics` over plain HTTP, and bounds what a caller
//! can make it do: [`METRICS_WORKERS`] connections are served at once and
//! [`METRICS_QUEUE`] wait (any more are closed at once), a request's head may hold
//! [`MAX_REQUEST_BYTES`] bytes and [`MAX_REQUEST_HEADERS`] headers (else 431), it must
//! arrive within [`REQUEST_TIMEOUT`], and every connection is closed after one answer.
//! Anything but `GET /metrics` gets 404 or 405. The endpoint has no authentication:
//! bind it to loopback or a monitoring network, never to the internet.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::{Error, Result};

/// Latency histogram bucket bounds, seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// The largest request head (request line and headers) the endpoint reads.
pub const MAX_REQUEST_BYTES: usize = 8 << 10;
/// The most headers a request may have.
pub const MAX_REQUEST_HEADERS: usize = 32;
/// Connections served at once.
pub const METRICS_WORKERS: usize = 2;
/// Accepted connections that may wait for a worker; more are closed unanswered.
pub const METRICS_QUEUE: usize = 8;
/// How long a request may take to arrive, and an answer to be written.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The label of `veil_session_errors_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
}

/// The server's or the dealer's metrics.
pub struct Metrics {
    registry: Registry,
    queries: Counter,
    sessions_active: Gauge,
    query_seconds: Histogram,
    errors: Family<ErrorLabels, Counter>,
    pool_capacity_bytes: Gauge,
    pool_bytes: Gauge,
    pool_ready_entries: Gauge,
    pool_awaiting_claims: Gauge,
    pool_hits: Counter,
    pool_misses: Counter,
    burnt_halves: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Metrics")
            .field("queries", &self.queries.get())
            .field("sessions_active", &self.sessions_active.get())
            .field("pool_bytes", &self.pool_bytes.get())
            .finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let queries = Counter::default();
        let sessions_active = Gauge::default();
        let query_seconds = Histogram::new(BUCKETS);
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("veil_queries", "Queries answered", queries.clone());
        registry.register(
            "veil_sessions_active",
            "Client sessions in progress",
            sessions_active.clone(),
        );
        registry.register(
            "veil_session_errors",
            "Client sessions that failed, by kind",
            errors.clone(),
        );
        registry.register(
            "veil_query_seconds",
            "Server-side query time",
            query_seconds.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let pool_capacity_bytes = gauge(
            &mut registry,
            "veil_pool_capacity_bytes",
            "The dealer pool's capacity",
        );
        let pool_bytes = gauge(
            &mut registry,
            "veil_pool_bytes",
            "Material the dealer pool holds (ready entries and halves awaiting their claim)",
        );
        let pool_ready_entries = gauge(
            &mut registry,
            "veil_pool_ready_entries",
            "Pre-generated entries ready for a query",
        );
        let pool_awaiting_claims = gauge(
            &mut registry,
            "veil_pool_awaiting_claims",
            "Server halves waiting for the server's claim",
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let pool_hits = counter(
            &mut registry,
            "veil_pool_hits",
            "Requests served from a ready entry",
        );
        let pool_misses = counter(
            &mut registry,
            "veil_pool_misses",
            "Requests that found no ready entry",
        );
        let burnt_halves = counter(
            &mut registry,
            "veil_burnt_halves",
            "Material halves burnt undelivered (timed out or cancelled)",
        );
        Self {
            registry,
            queries,
            sessions_active,
            query_seconds,
            errors,
            pool_capacity_bytes,
            pool_bytes,
            pool_ready_entries,
            pool_awaiting_claims,
            pool_hits,
            pool_misses,
            burnt_halves,
        }
    }
}

/// A byte count as a gauge value.
fn gauge_value(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Records one answered query and its online time.
    pub fn record_query(&self, seconds: f64) {
        self.queries.inc();
        self.query_seconds.observe(seconds);
    }

    /// Records a failed session, by the kind of its error.
    pub fn record_error(&self, error: &Error) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: error_kind(error),
            })
            .inc();
    }

    /// The pool's configured capacity.
    pub fn set_pool_capacity(&self, bytes: u64) {
        self.pool_capacity_bytes.set(gauge_value(bytes));
    }

    /// The pool's fill: bytes held, ready entries, server halves awaiting their claim.
    pub fn set_pool_fill(&self, bytes: u64, ready_entries: u64, awaiting_claims: u64) {
        self.pool_bytes.set(gauge_value(bytes));
        self.pool_ready_entries.set(gauge_value(ready_entries));
        self.pool_awaiting_claims.set(gauge_value(awaiting_claims));
    }

    /// A request for material that found a ready entry (`hit`) or not.
    pub fn record_pool_request(&self, hit: bool) {
        if hit {
            self.pool_hits.inc();
        } else {
            self.pool_misses.inc();
        }
    }

    /// Halves burnt without being delivered.
    pub fn record_burnt(&self, halves: u64) {
        self.burnt_halves.inc_by(halves);
    }

    /// Marks a session started (+1) or ended (−1).
    pub fn session_delta(&self, delta: i64) {
        self.sessions_active.inc_by(delta);
    }

    /// The exposition, in the OpenMetrics text format (ends with `# EOF`).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
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
        Error::ClosedAtHandshake { .. } => "peer_closed",
        _ => "session",
    }
}

fn net_kind(error: &veil_net::Error) -> &'static str {
    match error {
        veil_net::Error::PeerClosed => "peer_closed",
        veil_net::Error::Timeout { .. } | veil_net::Error::HandshakeTimeout { .. } => "timeout",
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

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` on `address` (see the module docs for its bounds): one thread
/// accepts, [`METRICS_WORKERS`] threads answer.
pub fn serve_metrics(address: &str, metrics: Arc<Metrics>) -> Result<JoinHandle<()>> {
    let listener = TcpListener::bind(address).map_err(Error::io(format!(
        "binding the metrics endpoint on {address}"
    )))?;
    let (queue, waiting) = sync_channel::<(TcpStream, Instant)>(METRICS_QUEUE);
    let waiting = Arc::new(Mutex::new(waiting));
    for _ in 0..METRICS_WORKERS {
        let (waiting, metrics) = (Arc::clone(&waiting), Arc::clone(&metrics));
        std::thread::Builder::new()
            .name("veil-metrics-worker".into())
            .spawn(move || answer_connections(&waiting, &metrics))
            .map_err(Error::io("starting a metrics thread"))?;
    }
    std::thread::Builder::new()
        .name("veil-metrics".into())
        .spawn(move || accept_connections(&listener, &queue))
        .map_err(Error::io("starting the metrics thread"))
}

/// A connection's deadline (for its request to arrive) runs from when it was accepted,
/// so time spent waiting for a worker counts.
fn accept_connections(listener: &TcpListener, queue: &SyncSender<(TcpStream, Instant)>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => match queue.try_send((stream, Instant::now() + REQUEST_TIMEOUT)) {
                // Every worker busy and the queue full: close it unanswered.
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => return,
            },
            // Out of file descriptors, or the like: wait instead of spinning.
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

fn answer_connections(waiting: &Mutex<Receiver<(TcpStream, Instant)>>, metrics: &Metrics) {
    loop {
        let next = waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok((stream, deadline)) = next else {
            return;
        };
        let _ = answer(stream, deadline, metrics);
    }
}

/// What a request asks for, once its head is read.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics,
    NotFound,
    MethodNotAllowed,
    TooLarge,
    Malformed,
}

/// Reads one request head (bounded in size and time) and says what it asks for.
fn read_request(stream: &mut TcpStream, deadline: Instant) -> std::io::Result<Request> {
    let mut head = vec![0u8; MAX_REQUEST_BYTES];
    let mut filled = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let read = stream.read(&mut head[filled..])?;
        if read == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        filled += read;
        match parse_request(&head[..filled]) {
            Some(request) => return Ok(request),
            None if filled == head.len() => return Ok(Request::TooLarge),
            None => {}
        }
    }
}

/// What a request head asks for, or `None` while it is incomplete.
fn parse_request(head: &[u8]) -> Option<Request> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(head) {
        Ok(httparse::Status::Partial) => None,
        Ok(httparse::Status::Complete(_)) => Some(match (request.method, request.path) {
            (Some("GET"), Some("/metrics")) => Request::Metrics,
            (Some("GET"), _) => Request::NotFound,
            _ => Request::MethodNotAllowed,
        }),
        Err(httparse::Error::TooManyHeaders) => Some(Request::TooLarge),
        Err(_) => Some(Request::Malformed),
    }
}

fn answer(mut stream: TcpStream, deadline: Instant, metrics: &Metrics) -> std::io::Result<()> {
    stream.set_write_timeout(Some(REQUEST_TIMEOUT))?;
    let request = read_request(&mut stream, deadline)?;
    let (status, content_type, body) = match request {
        Request::Metrics => ("200 OK", CONTENT_TYPE, metrics.render()),
        Request::NotFound => (
            "404 Not Found",
            "text/plain",
            "only GET /metrics is served here\n".to_string(),
        ),
        Request::MethodNotAllowed => (
            "405 Method Not Allowed\r\nAllow: GET",
            "text/plain",
            "only GET /metrics is served here\n".to_string(),
        ),
        Request::TooLarge => (
            "431 Request Header Fields Too Large",
            "text/plain",
            format!(
                "a request head may hold {MAX_REQUEST_BYTES} bytes and {MAX_REQUEST_HEADERS} headers\n"
            ),
        ),
        Request::Malformed => (
            "400 Bad Request",
            "text/plain",
            "not an HTTP/1.x request\n".to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()?;
    let _ = stream.shutdown(std::net::Shutdown::Write);
    Ok(())
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

    fn endpoint() -> (Arc<Metrics>, String) {
        let metrics = Arc::new(Metrics::default());
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap().to_string();
        drop(probe);
        serve_metrics(&address, Arc::clone(&metrics)).unwrap();
        (metrics, address)
    }

    fn request(address: &str, bytes: &[u8]) -> String {
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        // A refused request may be answered before it is all written.
        let _ = stream.write_all(bytes);
        let mut response = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stream, &mut response);
        String::from_utf8_lossy(&response).into_owned()
    }

    #[test]
    fn a_scrape_returns_every_family() {
        let (metrics, address) = endpoint();
        metrics.record_query(0.01);
        metrics.set_pool_capacity(1 << 20);
        metrics.record_burnt(3);
        metrics.record_error(&Error::Net(veil_net::Error::HandshakeTimeout {
            seconds: 10,
        }));
        let response = request(&address, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        assert!(response.contains("application/openmetrics-text"));
        for family in [
            "# TYPE veil_queries counter",
            "veil_queries_total 1",
            "# TYPE veil_sessions_active gauge",
            "# TYPE veil_session_errors counter",
            "veil_session_errors_total{kind=\"timeout\"} 1",
            "# HELP veil_queries Queries answered.\n",
            "# TYPE veil_query_seconds histogram",
            "veil_query_seconds_count 1",
            "veil_pool_capacity_bytes 1048576",
            "# TYPE veil_pool_bytes gauge",
            "# TYPE veil_pool_ready_entries gauge",
            "# TYPE veil_pool_awaiting_claims gauge",
            "veil_pool_hits_total 0",
            "veil_pool_misses_total 0",
            "veil_burnt_halves_total 3",
            "# EOF",
        ] {
            assert!(response.contains(family), "{family} missing: {response}");
        }
    }

    #[test]
    fn oversized_and_other_requests_are_refused() {
        let (_, address) = endpoint();
        let mut oversized = b"GET /metrics HTTP/1.1\r\nX-Padding: ".to_vec();
        oversized.extend(std::iter::repeat_n(b'a', 2 * MAX_REQUEST_BYTES));
        oversized.extend(b"\r\n\r\n");
        let response = request(&address, &oversized);
        assert!(response.starts_with("HTTP/1.1 431"), "{response}");
        let mut many = b"GET /metrics HTTP/1.1\r\n".to_vec();
        for index in 0..=MAX_REQUEST_HEADERS {
            many.extend(format!("X-{index}: y\r\n").bytes());
        }
        many.extend(b"\r\n");
        assert!(request(&address, &many).starts_with("HTTP/1.1 431"));
        let response = request(&address, b"POST /metrics HTTP/1.1\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 405"), "{response}");
        assert!(request(&address, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(
            request(&address, b"\x16\x03\x01\x00\x05hello\r\n\r\n").starts_with("HTTP/1.1 400")
        );
        // After all that the endpoint still answers.
        let response = request(&address, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    }

    #[test]
    fn idle_connections_do_not_stop_the_endpoint_for_good() {
        let (_, address) = endpoint();
        // More silent connections than workers and queue together.
        let idle: Vec<_> = (0..METRICS_WORKERS + METRICS_QUEUE + 4)
            .map(|_| std::net::TcpStream::connect(&address).unwrap())
            .collect();
        // Once their requests time out the workers are free again.
        std::thread::sleep(REQUEST_TIMEOUT + Duration::from_secs(1));
        let response = request(&address, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        drop(idle);
    }
}
