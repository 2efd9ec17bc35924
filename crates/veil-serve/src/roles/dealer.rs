//! The dealer: registers the server, then serves client sessions, one query session per
//! request, each half to its own role once (from the pool, generated on request, or
//! streamed layer by layer).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};

use tracing::{info, warn};
use veil_exec::dealer_parameters;
use veil_model::PublicPlan;
use veil_mpc::material::MaterialItem;
use veil_mpc::{DealerParameters, PartyRole, SessionId};
use veil_net::{Channel, ChannelStats, Role};
use zeroize::Zeroize;

use super::{accept_loop, shutting_down};
use crate::handshake::{handshake, handshake_any};
use crate::messages::{
    ClientExtension, Hello, ServerExtension, SessionAnswer, SessionRequest, item_bytes, send_end,
    send_item,
};
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolConfig};
use crate::transport::{Link, Transport};
use crate::{Error, PeerMisbehaved, Result};

/// What the dealer saw over its life.
#[derive(Clone, Copy, Debug, Default)]
pub struct DealerSummary {
    /// Query sessions whose material it issued (prefetched ones included).
    pub queries: u64,
    /// Payload bytes received from clients and the server after their handshakes (the
    /// dealer receives nothing but empty flow-control frames: this must be 0).
    pub payload_bytes_received_after_handshake: u64,
    /// Sessions burnt because the server never claimed them.
    pub burnt_sessions: u64,
    /// What the preprocessing pool did.
    pub pool: crate::pool::PoolCounters,
}

/// The dealer's options.
#[derive(Clone, Debug, Default)]
pub struct DealerOptions {
    /// Serve this many client sessions, then return (forever when `None`).
    pub max_clients: Option<usize>,
    /// The preprocessing pool.
    pub pool: PoolConfig,
    /// Where the dealer records its metrics (serve them with
    /// [`crate::metrics::serve_metrics`]).
    pub metrics: Arc<Metrics>,
}

/// Where generated items go as they are made: to each party's link, or into memory.
pub(crate) type MaterialSink<'a> =
    Box<dyn FnMut(PartyRole, MaterialItem) -> veil_mpc::Result<()> + 'a>;

/// The start of a generated query session: its id and the wire headers (session, role,
/// seed) of both halves. Secret: it holds the parties' seeds, and is zeroised on drop.
pub(crate) struct SessionHeaders {
    pub(crate) session_id: SessionId,
    pub(crate) server: Vec<u8>,
    pub(crate) client: Vec<u8>,
}

impl Drop for SessionHeaders {
    fn drop(&mut self) {
        self.server.zeroize();
        self.client.zeroize();
    }
}

/// Generates one query session's material: a generator with fresh OS-random seeds and
/// session id; `start` with the session's headers, which says where the items go; then
/// the executor's dry run over the public plan, each item handed over as it is made.
/// The one place the dealer runs the generating protocol.
pub(crate) fn generate_material<'a>(
    plan: &'a PublicPlan,
    parameters: &Arc<DealerParameters>,
    batch: usize,
    start: impl FnOnce(&SessionHeaders) -> Result<MaterialSink<'a>>,
) -> Result<()> {
    let generation = veil_exec::session::Generation::new(plan, parameters, batch)?;
    let headers = SessionHeaders {
        session_id: generation.session_id(),
        server: generation.encoded_header(PartyRole::Server),
        client: generation.encoded_header(PartyRole::Client),
    };
    generation.stream(start(&headers)?)?;
    Ok(())
}

/// The dealer's state, shared by its session threads.
struct Dealer {
    plan: PublicPlan,
    hello: Hello,
    epoch: u64,
    parameters: Arc<DealerParameters>,
    pool: Arc<Pool>,
    /// Streamed sessions waiting for the server's claim: session id → the waiting
    /// client thread.
    pending: Mutex<HashMap<u128, Sender<Link>>>,
    /// Numbers the client sessions, to burn their unclaimed halves when they end.
    next_client: AtomicU64,
    summary: Mutex<DealerSummary>,
}

impl Dealer {
    fn count(&self, update: impl FnOnce(&mut DealerSummary)) {
        if let Ok(mut summary) = self.summary.lock() {
            update(&mut summary);
        }
    }
}

/// Runs the dealer: waits for the server to register (its handshake carries the weight
/// seed), starts the pool's filler, then serves client sessions concurrently, each on
/// its own thread, until `options.max_clients` client sessions have ended. For each
/// query the client's half goes to the client and the server's half to the server's
/// claim for that session id; each half goes only to its own role, once.
pub fn run_dealer(
    listener: TcpListener,
    plan: PublicPlan,
    options: &DealerOptions,
    transport: &Transport,
) -> Result<DealerSummary> {
    let max_clients = options.max_clients;
    let plan_hash = plan.hash_hex()?;
    let hello = Hello {
        role: Role::Dealer,
        plan_hash,
        epoch: 0,
        extension: vec![],
    };
    // The first connection that registers as the server is the server; anything else
    // that arrives before it is turned away.
    let (server, seed, epoch) = loop {
        if shutting_down() {
            return Err(Error::ShutDown);
        }
        let (mut candidate, _) = match transport.accept_any(&listener, &[Role::Server]) {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!("dealer: refused a connection while waiting for the server: {error}");
                continue;
            }
        };
        match handshake(&mut candidate, &hello, Role::Server) {
            Ok(theirs) => match ServerExtension::decode(&theirs.extension) {
                Ok(ServerExtension::Register { weight_seed }) => {
                    break (candidate, weight_seed, theirs.epoch);
                }
                _ => warn!("dealer: {}", PeerMisbehaved::NotRegistration),
            },
            Err(error) => {
                warn!("dealer: refused a connection while waiting for the server: {error}")
            }
        }
    };
    let server_after_handshake = server.stats();
    info!(epoch, "dealer: server registered");
    let parameters = Arc::new(dealer_parameters(&plan, &seed, epoch));
    drop(seed);
    let pool = Arc::new(Pool::new(
        plan.clone(),
        Arc::clone(&parameters),
        options.pool,
        Arc::clone(&options.metrics),
    )?);
    // Batch 1 is the common case: fill it before anyone asks.
    pool.note_demand(1);
    let filler = {
        let pool = Arc::clone(&pool);
        std::thread::Builder::new()
            .name("veil-dealer-pool".into())
            .spawn(move || pool.fill())
            .map_err(Error::io("starting the pool's filler"))?
    };
    let dealer = Arc::new(Dealer {
        parameters,
        hello: Hello { epoch, ..hello },
        plan,
        epoch,
        pool: Arc::clone(&pool),
        pending: Mutex::new(HashMap::new()),
        next_client: AtomicU64::new(0),
        summary: Mutex::new(DealerSummary::default()),
    });
    let clients_started = Arc::new(AtomicUsize::new(0));
    let clients_ended = Arc::new(AtomicUsize::new(0));
    let done = || max_clients.is_some_and(|max| clients_ended.load(Ordering::SeqCst) >= max);
    let served = accept_loop(&listener, done, |stream| {
        let dealer = Arc::clone(&dealer);
        let transport = transport.clone();
        let metrics = Arc::clone(&options.metrics);
        let (started, ended) = (Arc::clone(&clients_started), Arc::clone(&clients_ended));
        std::thread::Builder::new()
            .name("veil-dealer-session".into())
            .spawn(move || {
                let outcome = dealer_connection(&dealer, &transport, stream, || {
                    // Admit a client session only while under the limit.
                    let number = started.fetch_add(1, Ordering::SeqCst);
                    max_clients.is_none_or(|max| number < max)
                });
                match outcome {
                    Ok(ConnectionKind::Client) => {
                        ended.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(ConnectionKind::Claim) => {}
                    Err((error, was_client)) => {
                        if was_client {
                            ended.fetch_add(1, Ordering::SeqCst);
                        }
                        metrics.record_error(&error);
                        warn!("dealer: session failed: {error}");
                    }
                }
            })
            .ok()
    });
    let threads = served.unwrap_or_default();
    for thread in threads {
        let _ = thread.join();
    }
    pool.stop();
    let _ = filler.join();
    let mut summary = *dealer.summary.lock().map_err(|_| Error::ThreadPanicked {
        what: "dealer session",
    })?;
    summary.payload_bytes_received_after_handshake += server
        .stats()
        .since(&server_after_handshake)
        .payload_bytes_received;
    summary.pool = pool.counters();
    summary.burnt_sessions += summary.pool.burnt;
    Ok(summary)
}

enum ConnectionKind {
    Client,
    Claim,
}

/// One connection at the dealer: a client session, or the server claiming a session's
/// half. Errors carry whether the connection was a client session.
fn dealer_connection(
    dealer: &Dealer,
    transport: &Transport,
    stream: std::net::TcpStream,
    admit_client: impl FnOnce() -> bool,
) -> std::result::Result<ConnectionKind, (Error, bool)> {
    let (mut link, proven) = transport
        .from_stream(stream, &[Role::Client, Role::Server])
        .map_err(|error| (error, false))?;
    let theirs = handshake_any(&mut link, &dealer.hello, &[Role::Client, Role::Server])
        .map_err(|error| (error, false))?;
    if proven.is_some_and(|proven| proven != theirs.role) {
        let claimed = theirs.role;
        return Err((PeerMisbehaved::RoleNotCertified { claimed }.into(), false));
    }
    if theirs.epoch != dealer.epoch {
        return Err((
            Error::EpochMismatch {
                peer: theirs.epoch,
                ours: dealer.epoch,
            },
            theirs.role == Role::Client,
        ));
    }
    match theirs.role {
        Role::Server => {
            // A claim: the server half of a session, pooled or streaming.
            let session = match ServerExtension::decode(&theirs.extension) {
                Ok(ServerExtension::Claim { session_id }) => session_id,
                Ok(ServerExtension::Register { .. }) => {
                    return Err((PeerMisbehaved::SecondRegistration.into(), false));
                }
                Err(error) => return Err((error, false)),
            };
            if let Some(half) = dealer.pool.claim(session) {
                half.deliver(&mut link)
                    .map_err(|error| (Error::link("delivering the server's half")(error), false))?;
                return Ok(ConnectionKind::Claim);
            }
            let waiting = dealer
                .pending
                .lock()
                .ok()
                .and_then(|mut pending| pending.remove(&session));
            match waiting {
                Some(waiting) => {
                    let _ = waiting.send(link);
                    Ok(ConnectionKind::Claim)
                }
                None => Err((PeerMisbehaved::UnknownSession.into(), false)),
            }
        }
        _ => {
            if !admit_client() {
                return Err((Error::ClientLimit, false));
            }
            let owner = dealer.next_client.fetch_add(1, Ordering::SeqCst);
            let result = dealer_client_session(dealer, link, &theirs, owner);
            // Halves issued to this client that the server has not claimed can no
            // longer be named by it: burn them.
            dealer.pool.burn_owner(owner);
            result
                .map(|()| ConnectionKind::Client)
                .map_err(|error| (error, true))
        }
    }
}

/// Serves one client session: one query session per empty request frame. A request is
/// answered from the pool when an entry is ready, by generating one in memory when it
/// fits the pool, and otherwise by streaming (generation paced by delivery, which
/// needs the server's claim first). A client that prefetches never gets a streamed
/// session: its halves must wait for a later query.
fn dealer_client_session(
    dealer: &Dealer,
    mut client: Link,
    hello: &Hello,
    owner: u64,
) -> Result<()> {
    let ClientExtension { batch, prefetch } = ClientExtension::decode(&hello.extension)?;
    dealer.pool.note_demand(batch);
    let claimable = dealer.pool.config().claim_timeout;
    let after_handshake = client.stats();
    let mut received_from_server = 0;
    let result = (|| -> Result<()> {
        loop {
            match client.recv() {
                Ok(request) => SessionRequest::decode(&request, Role::Client)?,
                Err(veil_net::Error::PeerClosed) => return Ok(()),
                Err(error) => return Err(error.into()),
            };
            let entry = match dealer.pool.take_ready(batch) {
                Some(entry) => Some(entry),
                None if prefetch > 0 || dealer.pool.fits(batch) == Some(true) => {
                    dealer.pool.generate_now(batch)?
                }
                None => None,
            };
            match entry {
                Some(entry) => {
                    let session = entry.session_id();
                    let (server_half, client_half) = entry.split();
                    // Parked before the client learns the id, so the claim finds it.
                    dealer.pool.await_claim(session, server_half, owner);
                    client.send(&SessionAnswer::Follows { claimable }.encode())?;
                    client_half.deliver(&mut client)?;
                }
                None if prefetch > 0 => {
                    let reason = format!(
                        "one query's material at batch {batch} is larger than the dealer's pool ({} bytes), so it cannot wait for a later query; run the client without prefetching or raise the dealer's pool_bytes",
                        dealer.pool.config().capacity_bytes
                    );
                    client.send(&SessionAnswer::Refused { reason }.encode())?;
                    continue;
                }
                None => {
                    received_from_server += stream_session(dealer, &mut client, batch)?;
                }
            }
            dealer.count(|summary| summary.queries += 1);
        }
    })();
    let received = client
        .stats()
        .since(&after_handshake)
        .payload_bytes_received
        + received_from_server;
    dealer.count(|summary| summary.payload_bytes_received_after_handshake += received);
    result
}

/// One streamed query session: the client gets its header, the server claims the other
/// half by its id, then the generator's items go to each role as they are made. Records
/// the entry's size with the pool. Returns the payload bytes the server sent (0).
fn stream_session(dealer: &Dealer, client: &mut Link, batch: usize) -> Result<u64> {
    let claim_timeout = dealer.pool.config().claim_timeout;
    // Declared before the generation, whose sink borrows them while streaming.
    let mut server_slot: Option<Link> = None;
    let mut server_after_handshake = ChannelStats::default();
    let mut entry_bytes = 0;
    let (client_link, slot, after, bytes) = (
        &mut *client,
        &mut server_slot,
        &mut server_after_handshake,
        &mut entry_bytes,
    );
    generate_material(&dealer.plan, &dealer.parameters, batch, move |headers| {
        let session = headers.session_id;
        let (handoff, claim) = std::sync::mpsc::channel();
        dealer
            .pending
            .lock()
            .map_err(|_| Error::ThreadPanicked {
                what: "dealer session",
            })?
            .insert(session, handoff);
        let answer = SessionAnswer::Follows {
            claimable: claim_timeout,
        };
        client_link.send(&answer.encode())?;
        client_link.send(&headers.client)?;
        let server = match claim.recv_timeout(claim_timeout) {
            Ok(server) => slot.insert(server),
            Err(_) => {
                if let Ok(mut pending) = dealer.pending.lock() {
                    pending.remove(&session);
                }
                dealer.count(|summary| summary.burnt_sessions += 1);
                return Err(Error::ClaimTimedOut {
                    seconds: claim_timeout.as_secs(),
                });
            }
        };
        *after = server.stats();
        server.send(&headers.server)?;
        *bytes += (headers.client.len() + headers.server.len()) as u64;
        // Material is generated and delivered op by op: each item goes only to its
        // own role as soon as it is made, and is dropped (zeroised) once sent.
        Ok(Box::new(move |role, item| {
            *bytes += item_bytes(&item);
            let link: &mut Link = match role {
                PartyRole::Server => server,
                PartyRole::Client => client_link,
            };
            send_item(link, &item).map_err(veil_mpc::Error::from)
        }))
    })?;
    let server = server_slot
        .as_mut()
        .ok_or(Error::Unreachable("a streamed session ended unclaimed"))?;
    send_end(server)?;
    send_end(client)?;
    dealer.pool.record_size(batch, entry_bytes);
    Ok(server
        .stats()
        .since(&server_after_handshake)
        .payload_bytes_received)
}
