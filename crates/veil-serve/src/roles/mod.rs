//! The three roles of the `dealer` setting as long-running services (DESIGN.md §6), one
//! file each, and what they share (the accept loop and its limits, the shutdown flag,
//! peak memory).
//!
//! - The **dealer** ([`dealer`]) serves one registered server at a time. A server
//!   registers with a hello that carries its weight seed, its random epoch and a
//!   commitment to the seed; the dealer answers accepted or refused, and keeps the
//!   registration's connection open to notice the server going away (then it burns that
//!   epoch's material and waits for a registration again). It serves client sessions
//!   concurrently, one thread each: for every empty frame a client sends ("next query")
//!   it opens a query session with a fresh random 128-bit id and claim token, sends the
//!   client both and its half's header, waits for the server to claim the other half
//!   with that id and token on a connection of its own, and runs the executor over the
//!   public plan with the generating protocol, streaming each item to its own role as it
//!   is made. An unclaimed session is burnt after a timeout.
//! - The **server** ([`server`]) registers with the dealer and waits for its answer,
//!   then serves client sessions concurrently: set-up sends D = W + B once; each query
//!   names its session id and token, the server claims that half from the dealer,
//!   answers "ready" and runs the query. A failed session ends that client's connection
//!   only. When the dealer's connection drops (a dealer restart) the server registers
//!   again with the same seed and epoch, so clients keep their D.
//! - The **client** ([`client`]) connects to the server (learning the epoch, the
//!   commitment and receiving D) and to the dealer directly, never through the server,
//!   and checks that the dealer serves the same epoch and commitment.
//!
//! After their handshakes the server and the client send the dealer nothing but empty
//! flow-control frames; a claim is a handshake of its own. The messages themselves are
//! in [`crate::messages`].

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;
use veil_mpc::PartyRole;
use veil_net::Role;

use crate::{Error, Result};

pub mod client;
pub mod dealer;
pub mod server;

pub use crate::messages::{receive_items, receive_material};
pub use client::{Client, ClientOptions, QueryReport};
pub use dealer::{DealerOptions, DealerSummary, run_dealer};
pub use server::{ServerState, ServerSummary, new_epoch, run_server};

/// Whether a shutdown was requested in this process.
pub fn shutdown_requested() -> bool {
    shutting_down()
}

/// The most halves the server holds ahead for one client session (the oldest is burnt
/// beyond it); a client prefetches at most this many queries.
pub const MAX_HELD_HALVES: usize = 64;

/// How often the accept loops look for new connections.
const ACCEPT_POLL: Duration = Duration::from_millis(1);

/// The longest an accept loop backs off after the operating system refused an accept
/// (out of file descriptors, say): it waits 10 ms, doubling up to this.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How long a shutdown waits for the queries in progress before the role returns
/// anyway (idle sessions are not waited for).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// The default cap on the connections one listener serves at once.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// Set by [`request_shutdown`]: the dealer and server stop accepting new sessions,
/// let the sessions in progress finish, and return.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// Asks every role loop in this process to shut down gracefully (e.g. on SIGTERM).
pub fn request_shutdown() {
    SHUTDOWN.store(true, Ordering::SeqCst);
}

/// Whether a shutdown was requested.
fn shutting_down() -> bool {
    SHUTDOWN.load(Ordering::SeqCst)
}

/// The party of the two-party protocol a service role plays: the server is P0, the
/// client P1; the dealer and the helper are no party of it. The one place the service's
/// roles meet the protocol's.
pub fn mpc_party(role: Role) -> Option<PartyRole> {
    match role {
        Role::Server => Some(PartyRole::Server),
        Role::Client => Some(PartyRole::Client),
        Role::Dealer | Role::Helper => None,
    }
}

/// Work in progress that a graceful shutdown waits for (queries, registrations), as
/// opposed to connections that merely idle.
#[derive(Clone, Default)]
pub(crate) struct Activity {
    busy: Arc<AtomicUsize>,
}

/// Marks one piece of work in progress until dropped.
pub(crate) struct Busy {
    busy: Arc<AtomicUsize>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Activity {
    /// Work begins; it ends when the guard drops.
    pub(crate) fn begin(&self) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy {
            busy: Arc::clone(&self.busy),
        }
    }

    /// Waits until no work is in progress, or `grace` has passed; whether it is quiet.
    pub(crate) fn wait_quiet(&self, grace: Duration) -> bool {
        let deadline = Instant::now() + grace;
        while self.busy.load(Ordering::SeqCst) > 0 {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

/// Accepts connections with a non-blocking poll, handing each to `handle` on its own
/// thread, until `done` says so or a shutdown is requested. At most `max_connections`
/// are served at once: one beyond them is closed at once (and logged). An accept the
/// operating system refuses backs off, 10 ms doubling up to 1 s. Finished threads are
/// joined as it goes; those still running when it returns are left to end on their own
/// (their queries are waited for through [`Activity`]).
fn accept_loop(
    listener: &TcpListener,
    max_connections: usize,
    done: impl Fn() -> bool,
    mut handle: impl FnMut(std::net::TcpStream) -> Option<JoinHandle<()>>,
) -> Result<()> {
    listener
        .set_nonblocking(true)
        .map_err(Error::io("configuring the listener"))?;
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let mut backoff = Duration::ZERO;
    let mut refused_since_warning = 0u64;
    while !done() && !shutting_down() {
        match listener.accept() {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                // Join finished session threads now: a joinable thread keeps its stack
                // until joined, which grew the dealer by one stack per claim.
                threads.retain(|thread| !thread.is_finished());
                if threads.len() >= max_connections {
                    refused_since_warning += 1;
                    if refused_since_warning == 1 || refused_since_warning.is_multiple_of(1000) {
                        warn!(
                            %peer,
                            max_connections,
                            refused = refused_since_warning,
                            "at the connection limit: closing new connections"
                        );
                    }
                    drop(stream);
                    continue;
                }
                refused_since_warning = 0;
                if let Err(error) = stream.set_nonblocking(false) {
                    warn!("configuring a connection failed: {error}");
                    continue;
                }
                threads.extend(handle(stream));
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL)
            }
            Err(error) => {
                backoff = (backoff * 2).clamp(Duration::from_millis(10), ACCEPT_BACKOFF_MAX);
                warn!(
                    "accepting a connection failed: {error}; retrying in {} ms",
                    backoff.as_millis()
                );
                std::thread::sleep(backoff);
            }
        }
    }
    Ok(())
}

/// This process's peak resident set size (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}
