//! The three roles of the `dealer` setting as long-running services (DESIGN.md §6), one
//! file each, and what they share (the accept loop, the shutdown flag, peak memory).
//!
//! - The **dealer** ([`dealer`]) first waits for the server to register (its handshake
//!   carries the weight seed), then serves client sessions concurrently, one thread
//!   each. For every empty frame a client sends ("next query") it opens a query session
//!   with a fresh random 128-bit id, sends the client its half's header, waits for the
//!   server to claim the other half by that id on a connection of its own, and then runs
//!   the executor over the public plan with the generating protocol, streaming each item
//!   to its own role as it is made. An unclaimed session is burnt after a timeout.
//! - The **server** ([`server`]) registers with the dealer, then serves client sessions
//!   concurrently: set-up sends D = W + B once; each query names its session id, the
//!   server claims that half from the dealer, answers "ready" and runs the query. A
//!   failed session ends that client's connection only.
//! - The **client** ([`client`]) connects to the server (learning the epoch and
//!   receiving D) and to the dealer directly, never through the server.
//!
//! After their handshakes the server and the client send the dealer nothing but empty
//! flow-control frames; a claim is a handshake of its own. The messages themselves are
//! in [`crate::messages`].

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

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

/// The most halves the server holds ahead for one client session (the oldest is burnt
/// beyond it); a client prefetches at most this many queries.
pub const MAX_HELD_HALVES: usize = 64;

/// How often the accept loops look for new connections.
const ACCEPT_POLL: Duration = Duration::from_millis(1);

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

/// Accepts connections with a non-blocking poll, handing each to `handle` on its own
/// thread, until `done` says so or a shutdown is requested. Returns the session threads
/// to join.
fn accept_loop(
    listener: &TcpListener,
    done: impl Fn() -> bool,
    mut handle: impl FnMut(std::net::TcpStream) -> Option<JoinHandle<()>>,
) -> Result<Vec<JoinHandle<()>>> {
    listener
        .set_nonblocking(true)
        .map_err(Error::io("configuring the listener"))?;
    let mut threads = Vec::new();
    while !done() && !shutting_down() {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .map_err(Error::io("configuring a connection"))?;
                threads.extend(handle(stream));
                // Join finished session threads now: a joinable thread keeps its stack
                // until joined, which grew the dealer by one stack per claim.
                let (finished, running): (Vec<_>, Vec<_>) = threads
                    .into_iter()
                    .partition(|thread: &JoinHandle<()>| thread.is_finished());
                for thread in finished {
                    let _ = thread.join();
                }
                threads = running;
            }
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(ACCEPT_POLL)
            }
            Err(error) => warn!("accepting a connection failed: {error}"),
        }
    }
    Ok(threads)
}

/// This process's peak resident set size (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}
