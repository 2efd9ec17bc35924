//! The three roles of the `dealer` setting as long-running services (DESIGN.md §6).
//!
//! - The **dealer** first waits for the server to register (its handshake carries the
//!   weight seed), then serves client sessions concurrently, one thread each. For every
//!   empty frame a client sends ("next query") it opens a query session with a fresh
//!   random 128-bit id, sends the client its half's header, waits for the server to
//!   claim the other half by that id on a connection of its own, and then runs the
//!   executor over the public plan with the generating protocol, streaming each item to
//!   its own role as it is made. An unclaimed session is burnt after a timeout.
//! - The **server** registers with the dealer, then serves client sessions concurrently:
//!   set-up sends D = W + B once; each query names its session id, the server claims
//!   that half from the dealer, answers "ready" and runs the query. A failed session
//!   ends that client's connection only.
//! - The **client** connects to the server (learning the epoch and receiving D) and to
//!   the dealer directly, never through the server.
//!
//! After their handshakes the server and the client send the dealer nothing but empty
//! flow-control frames; a claim is a handshake of its own.

use std::collections::{HashMap, VecDeque};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ScopedJoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tracing::{info, warn};
use veil_core::RingTensor;
use veil_core::prg::{SEED_BYTES, Seed};
use veil_exec::{dealer_parameters, run, server_parameters};
use veil_model::plan::ParameterKind;
use veil_model::{Plan, PublicPlan};
use veil_mpc::material::MaterialItem;
use veil_mpc::{
    ClientParameters, MaterialGenerator, Party, PartyMaterial, PartyParameters, PartyRole,
    SessionLedger,
};
use veil_net::{Channel, ChannelStats, Role, SessionChannel};

use crate::metrics::Metrics;
use crate::pool::{Pool, PoolConfig, item_bytes, send_item};
use crate::transport::{Link, Transport};

use crate::handshake::{Hello, handshake, handshake_any};

/// The largest material a party accepts for one query (16 GiB).
const MAX_MATERIAL_BYTES: u64 = 16 << 30;

/// Receives one party's streamed material: its header, then items until an empty frame.
/// Every announced size is checked against a cap before allocating.
pub fn receive_material(channel: &mut impl Channel) -> Result<PartyMaterial> {
    let mut material = PartyMaterial::decode(&channel.recv()?)?;
    receive_items(channel, &mut material)?;
    Ok(material)
}

/// Receives streamed items into `material` until the empty end frame.
pub fn receive_items(channel: &mut impl Channel, material: &mut PartyMaterial) -> Result<()> {
    let mut total_words: u64 = 0;
    loop {
        let header = channel.recv()?;
        if header.is_empty() {
            return Ok(());
        }
        let tag = MaterialItem::decode_header(&header)?;
        total_words = total_words.saturating_add(tag.words);
        if total_words.saturating_mul(8) > MAX_MATERIAL_BYTES {
            bail!("the dealer's material exceeds the cap of {MAX_MATERIAL_BYTES} bytes per query");
        }
        let expected = usize::try_from(tag.words)?;
        let mut words = Vec::with_capacity(expected);
        while words.len() < expected {
            let chunk = channel.recv()?;
            if chunk.is_empty() || chunk.len() % 8 != 0 || words.len() + chunk.len() / 8 > expected
            {
                bail!("the dealer's item chunks do not match the item's announced size");
            }
            words.extend(chunk.chunks_exact(8).map(|bytes| {
                let mut word = [0u8; 8];
                word.copy_from_slice(bytes);
                u64::from_le_bytes(word)
            }));
        }
        material.push_streamed(tag, words)?;
    }
}

/// How long the server retries connecting to the dealer for a claim.
const CLAIM_CONNECT_PATIENCE: Duration = Duration::from_secs(2);

/// How often the accept loops look for new connections.
const ACCEPT_POLL: Duration = Duration::from_millis(1);

/// The first byte of a server-to-dealer handshake extension: what the connection is for.
const SERVER_REGISTERS: u8 = 1;
const SERVER_CLAIMS: u8 = 2;

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

/// The first byte of the dealer's answer to a client's request for a session.
const SESSION_FOLLOWS: u8 = 0;
const SESSION_REFUSED: u8 = 1;

/// The dealer's state, shared by its session threads.
struct Dealer {
    plan: PublicPlan,
    hello: Hello,
    epoch: u64,
    parameters: Arc<veil_mpc::DealerParameters>,
    pool: Arc<Pool>,
    /// Streamed sessions waiting for the server's claim: session id → the waiting
    /// client thread.
    pending: Mutex<HashMap<u128, Sender<Link>>>,
    /// Numbers the client sessions, to burn their unclaimed halves when they end.
    next_client: AtomicU64,
    summary: Mutex<DealerSummary>,
}

/// Set by [`request_shutdown`]: the dealer and server stop accepting new sessions,
/// let the sessions in progress finish, and return.
static SHUTDOWN: AtomicBool = AtomicBool::new(false);

/// Asks every role loop in this process to shut down gracefully (e.g. on SIGTERM).
pub fn request_shutdown() {
    SHUTDOWN.store(true, Ordering::SeqCst);
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
        .context("configuring the listener")?;
    let mut threads = Vec::new();
    while !done() && !SHUTDOWN.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                stream
                    .set_nonblocking(false)
                    .context("configuring a connection")?;
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
        if SHUTDOWN.load(Ordering::SeqCst) {
            bail!("shut down before the server registered");
        }
        let (mut candidate, _) = match transport.accept_any(&listener, &[Role::Server]) {
            Ok(accepted) => accepted,
            Err(error) => {
                warn!("dealer: refused a connection while waiting for the server: {error:#}");
                continue;
            }
        };
        match handshake(&mut candidate, &hello, Role::Server) {
            Ok(theirs)
                if theirs.extension.len() == 1 + SEED_BYTES
                    && theirs.extension[0] == SERVER_REGISTERS =>
            {
                let mut seed = [0u8; SEED_BYTES];
                seed.copy_from_slice(&theirs.extension[1..]);
                break (candidate, Seed::from_bytes(seed), theirs.epoch);
            }
            Ok(_) => {
                warn!("dealer: a server connection did not register; waiting for the registration")
            }
            Err(error) => {
                warn!("dealer: refused a connection while waiting for the server: {error:#}")
            }
        }
    };
    let server_after_handshake = server.stats();
    info!(epoch, "dealer: server registered");
    let parameters = Arc::new(dealer_parameters(&plan, &seed, epoch));
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
            .context("starting the pool's filler")?
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
                        warn!("dealer: session failed: {error:#}");
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
    let mut summary = *dealer
        .summary
        .lock()
        .map_err(|_| anyhow::anyhow!("a dealer session thread panicked"))?;
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
) -> std::result::Result<ConnectionKind, (anyhow::Error, bool)> {
    let (mut link, proven) = transport
        .from_stream(stream, &[Role::Client, Role::Server])
        .map_err(|error| (error, false))?;
    let theirs = handshake_any(&mut link, &dealer.hello, &[Role::Client, Role::Server])
        .map_err(|error| (error, false))?;
    if proven.is_some_and(|proven| proven != theirs.role) {
        return Err((
            anyhow::anyhow!(
                "the peer claims to be a {:?} but its certificate says otherwise",
                theirs.role
            ),
            false,
        ));
    }
    if theirs.epoch != dealer.epoch {
        return Err((
            anyhow::anyhow!(
                "the peer holds mask epoch {}, the dealer serves epoch {}; reconnect to the server",
                theirs.epoch,
                dealer.epoch
            ),
            theirs.role == Role::Client,
        ));
    }
    match theirs.role {
        Role::Server => {
            // A claim: the server half of a session, pooled or streaming.
            let session = match theirs.extension.as_slice() {
                [SERVER_CLAIMS, id @ ..] if id.len() == 16 => {
                    u128::from_le_bytes(id.try_into().unwrap_or_default())
                }
                _ => {
                    return Err((
                        anyhow::anyhow!(
                            "a second server registration is refused; restart the dealer to change epochs"
                        ),
                        false,
                    ));
                }
            };
            if let Some(half) = dealer.pool.claim(session) {
                half.deliver(&mut link)
                    .context("delivering the server's half")
                    .map_err(|error| (error, false))?;
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
                None => Err((
                    anyhow::anyhow!(
                        "the server claimed an unknown, expired or already claimed session; each half is delivered once"
                    ),
                    false,
                )),
            }
        }
        _ => {
            if !admit_client() {
                return Err((anyhow::anyhow!("the dealer is at its client limit"), false));
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

/// What a client declares in its handshake with the dealer.
struct ClientRequest {
    batch: usize,
    /// Queries' halves it holds ahead of time (0: none).
    prefetch: u64,
}

fn parse_client_extension(extension: &[u8]) -> Result<ClientRequest> {
    if extension.len() != 16 {
        bail!("the client's handshake must carry its batch size and prefetch depth (16 bytes)");
    }
    let batch = u64::from_le_bytes(extension[..8].try_into().context("short extension")?);
    let prefetch = u64::from_le_bytes(extension[8..].try_into().context("short extension")?);
    let batch = usize::try_from(batch)
        .ok()
        .filter(|&b| (1..=1 << 16).contains(&b))
        .context("batch size out of range 1..=65536")?;
    Ok(ClientRequest { batch, prefetch })
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
    let ClientRequest { batch, prefetch } = parse_client_extension(&hello.extension)?;
    dealer.pool.note_demand(batch);
    let claim_seconds = dealer.pool.config().claim_timeout.as_secs();
    let after_handshake = client.stats();
    let mut received_from_server = 0;
    let result = (|| -> Result<()> {
        loop {
            match client.recv() {
                Ok(request) if request.is_empty() => {}
                Ok(_) => bail!(
                    "the client sent a payload after the handshake; only empty flow-control frames are allowed"
                ),
                Err(veil_net::Error::PeerClosed) => return Ok(()),
                Err(error) => return Err(error.into()),
            }
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
                    let mut status = vec![SESSION_FOLLOWS];
                    status.extend_from_slice(&claim_seconds.to_le_bytes());
                    client.send(&status)?;
                    client_half.deliver(&mut client)?;
                }
                None if prefetch > 0 => {
                    let mut refusal = vec![SESSION_REFUSED];
                    refusal.extend_from_slice(
                        format!(
                            "one query's material at batch {batch} is larger than the dealer's pool ({} bytes), so it cannot wait for a later query; run the client without prefetching or raise the dealer's pool_bytes",
                            dealer.pool.config().capacity_bytes
                        )
                        .as_bytes(),
                    );
                    client.send(&refusal)?;
                    continue;
                }
                None => {
                    received_from_server += stream_session(dealer, &mut client, batch)?;
                }
            }
            if let Ok(mut summary) = dealer.summary.lock() {
                summary.queries += 1;
            }
        }
    })();
    let received = client
        .stats()
        .since(&after_handshake)
        .payload_bytes_received
        + received_from_server;
    if let Ok(mut summary) = dealer.summary.lock() {
        summary.payload_bytes_received_after_handshake += received;
    }
    result
}

/// One streamed query session: the client gets its header, the server claims the other
/// half by its id, then the generator's items go to each role as they are made. Records
/// the entry's size with the pool. Returns the payload bytes the server sent (0).
fn stream_session(dealer: &Dealer, client: &mut Link, batch: usize) -> Result<u64> {
    let fixed_point = dealer.plan.fixed_point()?;
    // Declared before the generator, whose sink borrows them while streaming.
    let mut server_slot: Option<Link> = None;
    let mut entry_bytes = 0;
    let mut generator = MaterialGenerator::new(fixed_point, Arc::clone(&dealer.parameters))?;
    let session = generator.session_id();
    let (handoff, claim) = std::sync::mpsc::channel();
    dealer
        .pending
        .lock()
        .map_err(|_| anyhow::anyhow!("the dealer's session table is poisoned"))?
        .insert(session, handoff);
    let claim_timeout = dealer.pool.config().claim_timeout;
    let mut status = vec![SESSION_FOLLOWS];
    status.extend_from_slice(&claim_timeout.as_secs().to_le_bytes());
    client.send(&status)?;
    let client_header = generator.encoded_header(PartyRole::Client);
    let server_header = generator.encoded_header(PartyRole::Server);
    client.send(&client_header)?;
    let server = match claim.recv_timeout(claim_timeout) {
        Ok(server) => server_slot.insert(server),
        Err(_) => {
            if let Ok(mut pending) = dealer.pending.lock() {
                pending.remove(&session);
            }
            if let Ok(mut summary) = dealer.summary.lock() {
                summary.burnt_sessions += 1;
            }
            bail!(
                "the server did not claim its half within {} s; the session is burnt",
                claim_timeout.as_secs()
            );
        }
    };
    let server_after_handshake = server.stats();
    server.send(&server_header)?;
    entry_bytes += (client_header.len() + server_header.len()) as u64;
    // Material is generated and delivered op by op: each item goes only to its own role
    // as soon as it is made, and is dropped (zeroised) once sent.
    {
        let (server_link, client_link, bytes) = (&mut *server, &mut *client, &mut entry_bytes);
        generator.stream_to(Box::new(move |role, item| {
            *bytes += item_bytes(&item);
            let link: &mut Link = match role {
                PartyRole::Server => server_link,
                PartyRole::Client => client_link,
            };
            send_item(link, &item).map_err(veil_mpc::Error::from)
        }));
        run(&mut generator, &dealer.plan, batch, None)?;
    }
    drop(generator);
    server.send(&[])?;
    client.send(&[])?;
    dealer.pool.record_size(batch, entry_bytes);
    Ok(server
        .stats()
        .since(&server_after_handshake)
        .payload_bytes_received)
}

/// The server's state for one plan and epoch.
pub struct ServerState {
    metrics: Arc<crate::metrics::Metrics>,
    plan: Plan,
    parameters: PartyParameters,
    masked_weights: Vec<u8>,
    epoch: u64,
    weight_seed: Seed,
}

impl ServerState {
    /// The server's metrics (to serve with [`crate::metrics::serve_metrics`]).
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Loads a plan with a fresh weight seed and a new epoch.
    pub fn new(plan: Plan, epoch: u64) -> Result<Self> {
        let weight_seed = Seed::random()?;
        let parameters = server_parameters(&plan, &weight_seed, epoch)?;
        // D in plan order, so the client can read it without names.
        let masked: std::collections::HashMap<String, RingTensor> =
            parameters.masked_weights().into_iter().collect();
        let mut masked_weights = Vec::new();
        for info in plan
            .public
            .parameters
            .iter()
            .filter(|info| info.kind == ParameterKind::Weight)
        {
            for word in masked[&info.name].data() {
                masked_weights.extend_from_slice(&word.to_le_bytes());
            }
        }
        Ok(Self {
            metrics: Arc::default(),
            plan,
            parameters: PartyParameters::Server(Arc::new(parameters)),
            masked_weights,
            epoch,
            weight_seed,
        })
    }
}

/// What the server saw over its life.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerSummary {
    /// Queries answered.
    pub queries: u64,
    /// Client sessions that ended in an error.
    pub failed_sessions: u64,
    /// Bytes of the last query's material at the server.
    pub material_bytes: usize,
    /// Payload bytes sent to the dealer after the handshake (must be 0).
    pub payload_bytes_sent_to_dealer: u64,
    /// Halves claimed ahead for prefetched queries that their client never ran (burnt
    /// when its session ended).
    pub unused_halves: u64,
}

/// The server's state shared by its session threads.
struct Server {
    state: ServerState,
    plan_hash: String,
    dealer_address: String,
    transport: Transport,
    ledger: SessionLedger,
    summary: Mutex<ServerSummary>,
}

/// Runs the server: registers with the dealer (handing it the weight seed), then serves
/// client sessions concurrently, each on its own thread, until `max_clients` sessions
/// have ended (forever when `None`). Each query claims its half from the dealer over a
/// connection of its own, by the session id the client names.
pub fn run_server(
    listener: TcpListener,
    dealer_address: &str,
    state: ServerState,
    max_clients: Option<usize>,
    transport: &Transport,
) -> Result<ServerSummary> {
    let plan_hash = state.plan.public.hash_hex()?;
    // A simulated network shapes the client links only: dealer traffic is not online.
    let mut registration = transport.unshaped().connect(dealer_address, Role::Dealer)?;
    let mut extension = vec![SERVER_REGISTERS];
    extension.extend_from_slice(&state.weight_seed.to_bytes());
    let hello = Hello {
        role: Role::Server,
        plan_hash: plan_hash.clone(),
        epoch: state.epoch,
        extension,
    };
    handshake(&mut registration, &hello, Role::Dealer)?;
    let after_handshake = registration.stats();
    let server = Arc::new(Server {
        state,
        plan_hash,
        dealer_address: dealer_address.to_string(),
        transport: transport.clone(),
        ledger: SessionLedger::default(),
        summary: Mutex::new(ServerSummary::default()),
    });
    let sessions_started = AtomicUsize::new(0);
    let sessions_ended = Arc::new(AtomicUsize::new(0));
    let done = || max_clients.is_some_and(|max| sessions_ended.load(Ordering::SeqCst) >= max);
    let threads = accept_loop(&listener, done, |stream| {
        if max_clients.is_some_and(|max| sessions_started.fetch_add(1, Ordering::SeqCst) >= max) {
            return None;
        }
        let server = Arc::clone(&server);
        let ended = Arc::clone(&sessions_ended);
        std::thread::Builder::new()
            .name("veil-server-session".into())
            .spawn(move || {
                server.state.metrics.session_delta(1);
                if let Err(error) = server_client_session(&server, stream) {
                    if let Ok(mut summary) = server.summary.lock() {
                        summary.failed_sessions += 1;
                    }
                    server.state.metrics.record_error(&error);
                    warn!("server: client session failed: {error:#}");
                }
                server.state.metrics.session_delta(-1);
                ended.fetch_add(1, Ordering::SeqCst);
            })
            .ok()
    })?;
    for thread in threads {
        let _ = thread.join();
    }
    let mut summary = *server
        .summary
        .lock()
        .map_err(|_| anyhow::anyhow!("a server session thread panicked"))?;
    summary.payload_bytes_sent_to_dealer += registration
        .stats()
        .since(&after_handshake)
        .payload_bytes_sent;
    info!(queries = summary.queries, "server: done");
    Ok(summary)
}

/// One client session at the server: set-up (D), then queries until the client leaves.
fn server_client_session(server: &Server, stream: std::net::TcpStream) -> Result<()> {
    let state = &server.state;
    let public = &state.plan.public;
    let fixed_point = public.fixed_point()?;
    let (mut client, _) = server.transport.from_stream(stream, &[Role::Client])?;
    let ours = Hello {
        role: Role::Server,
        plan_hash: server.plan_hash.clone(),
        epoch: state.epoch,
        extension: vec![],
    };
    handshake(&mut client, &ours, Role::Client)?;
    // Client session set-up: D = W + B, once.
    client.send(&state.masked_weights)?;
    // Halves claimed ahead for this client's prefetched sessions, oldest first. Each
    // claim runs on a thread of its own so a query is never held up by the claim for a
    // later one; unused halves are dropped (zeroised) when the session ends.
    std::thread::scope(|scope| -> Result<()> {
        let mut held = HeldHalves {
            claims: VecDeque::new(),
            unused: 0,
            server,
        };
        loop {
            let request = match client.recv() {
                Ok(request) => request,
                Err(veil_net::Error::PeerClosed) => return Ok(()),
                Err(error) => return Err(error.into()),
            };
            let (session_id, batch) = match parse_client_message(&request)? {
                ClientMessage::ClaimAhead { session_id } => {
                    if held.claims.len() >= MAX_HELD_HALVES {
                        held.claims.pop_front();
                        held.unused += 1;
                    }
                    let claim = std::thread::Builder::new()
                        .name("veil-server-claim".into())
                        .spawn_scoped(scope, move || claim_server_half(server, session_id))
                        .context("starting a claim")?;
                    held.claims.push_back((session_id, claim));
                    continue;
                }
                ClientMessage::QueryStart { session_id, batch } => (session_id, batch),
            };
            let material = match held.claims.iter().position(|(id, _)| *id == session_id) {
                Some(index) => held
                    .claims
                    .remove(index)
                    .context("a held half vanished from its list")?
                    .1
                    .join()
                    .map_err(|_| anyhow::anyhow!("a claim thread panicked"))??,
                None => claim_server_half(server, session_id)?,
            };
            client.send(&[])?;
            let started = Instant::now();
            let before = client.stats();
            let mut tagged = SessionChannel::new(&mut client, session_id);
            let mut party = Party::new(
                &mut tagged,
                fixed_point,
                material,
                state.parameters.clone(),
                &server.ledger,
            )?;
            run(&mut party, public, batch, None)?;
            party.finish()?;
            let used = client.stats().since(&before);
            if let Ok(mut summary) = server.summary.lock() {
                summary.queries += 1;
            }
            server
                .state
                .metrics
                .record_query(started.elapsed().as_secs_f64());
            info!(
                batch,
                seconds = started.elapsed().as_secs_f64(),
                bytes_sent = used.bytes_sent,
                "server: query done"
            );
        }
    })
}

/// The halves a server session claimed ahead; those never used are counted when the
/// session ends (and dropped, zeroised, with their claim threads' results).
struct HeldHalves<'scope, 'server> {
    claims: VecDeque<(u128, ScopedJoinHandle<'scope, Result<PartyMaterial>>)>,
    /// Halves dropped unused before the session's end (beyond [`MAX_HELD_HALVES`]).
    unused: u64,
    server: &'server Server,
}

impl Drop for HeldHalves<'_, '_> {
    fn drop(&mut self) {
        // Claims still running are waited for (the session's scope would wait anyway);
        // a claim that failed held nothing.
        let claimed = std::mem::take(&mut self.claims)
            .into_iter()
            .filter_map(|(_, claim)| claim.join().ok())
            .filter(Result::is_ok)
            .count() as u64;
        let unused = self.unused + claimed;
        if unused > 0
            && let Ok(mut summary) = self.server.summary.lock()
        {
            summary.unused_halves += unused;
        }
    }
}

/// Claims the server's half of `session_id` from the dealer over a new connection; the
/// claim is the handshake itself, after which the server sends the dealer nothing.
fn claim_server_half(server: &Server, session_id: u128) -> Result<PartyMaterial> {
    let started = Instant::now();
    // The dealer is up already (the server registered with it): a claim that cannot
    // connect soon fails this session rather than stalling it.
    let mut dealer = server
        .transport
        .unshaped()
        .connect_within(&server.dealer_address, Role::Dealer, CLAIM_CONNECT_PATIENCE)
        .context("claiming this query's material from the dealer; is the dealer running?")?;
    let mut extension = vec![SERVER_CLAIMS];
    extension.extend_from_slice(&session_id.to_le_bytes());
    let hello = Hello {
        role: Role::Server,
        plan_hash: server.plan_hash.clone(),
        epoch: server.state.epoch,
        extension,
    };
    handshake(&mut dealer, &hello, Role::Dealer)?;
    let connected = started.elapsed().as_secs_f64();
    let after_handshake = dealer.stats();
    let material = receive_material(&mut dealer).context("waiting for the dealer's material")?;
    info!(
        connect_seconds = connected,
        seconds = started.elapsed().as_secs_f64(),
        bytes = material.encoded_len(),
        "server: claimed a half"
    );
    if material.session_id() != session_id || material.role() != PartyRole::Server {
        bail!("the dealer delivered material for another session or role");
    }
    if let Ok(mut summary) = server.summary.lock() {
        summary.material_bytes = material.encoded_len();
        summary.payload_bytes_sent_to_dealer +=
            dealer.stats().since(&after_handshake).payload_bytes_sent;
    }
    Ok(material)
}

/// This process's peak resident set size (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

/// The most halves the server holds ahead for one client session (the oldest is burnt
/// beyond it); a client prefetches at most this many queries.
pub const MAX_HELD_HALVES: usize = 64;

/// The first byte of a client-to-server message between queries.
const QUERY_START: u8 = 0;
const CLAIM_AHEAD: u8 = 1;

/// What a client tells the server between queries.
enum ClientMessage {
    /// Run a query with this session's material at this batch size.
    QueryStart { session_id: u128, batch: usize },
    /// Claim this session's half now, for a later query.
    ClaimAhead { session_id: u128 },
}

fn parse_client_message(request: &[u8]) -> Result<ClientMessage> {
    let session = |bytes: &[u8]| -> Result<u128> {
        Ok(u128::from_le_bytes(
            bytes.get(..16).context("short message")?.try_into()?,
        ))
    };
    match request.split_first() {
        Some((&QUERY_START, rest)) if rest.len() == 24 => {
            let batch = u64::from_le_bytes(rest[16..].try_into()?);
            let batch = usize::try_from(batch)
                .ok()
                .filter(|&b| (1..=1 << 16).contains(&b))
                .context("batch size out of range 1..=65536")?;
            Ok(ClientMessage::QueryStart {
                session_id: session(rest)?,
                batch,
            })
        }
        Some((&CLAIM_AHEAD, rest)) if rest.len() == 16 => Ok(ClientMessage::ClaimAhead {
            session_id: session(rest)?,
        }),
        _ => bail!(
            "expected a query start (25 bytes) or a claim-ahead notice (17 bytes) from the client, got {} bytes; is the client the same veil version?",
            request.len()
        ),
    }
}

/// What the client measured for one query (DESIGN.md §7 definitions).
#[derive(Clone, Debug)]
pub struct QueryReport {
    /// Decoded output values.
    pub output: Vec<f32>,
    /// Wall time from input encoded to output reconstructed.
    pub online_seconds: f64,
    /// Client → server bytes in that window (payload + frame headers).
    pub client_sent_bytes: u64,
    /// Server → client bytes in that window.
    pub server_sent_bytes: u64,
    /// Times the client blocked on a receive in that window.
    pub rounds: u64,
    /// Bytes of this query's material at the client.
    pub client_material_bytes: usize,
    /// Time this query waited for its half from the dealer (none when prefetched).
    pub offline_seconds: f64,
    /// Wall time of the whole query: getting the client's half (unless prefetched), the
    /// server's claim of its half, and the online phase.
    pub latency_seconds: f64,
    /// Whether the client held this query's half before the query (prefetched).
    pub warm: bool,
    /// Time spent after the query fetching halves for later queries (not in latency).
    pub prefetch_seconds: f64,
}

/// The client's options.
#[derive(Clone, Copy, Debug)]
pub struct ClientOptions {
    /// Samples per query.
    pub batch: usize,
    /// Hold the halves of up to this many future queries (0: fetch each half when its
    /// query starts; at most [`MAX_HELD_HALVES`]). Halves are fetched at connection and
    /// after each query, and the server claims its half of each at once, so a query
    /// finds both halves in place.
    pub prefetch_queries: usize,
    /// The most bytes of prefetched material the client holds.
    pub prefetch_bytes: u64,
    /// How many queries this client will run, when known: it never prefetches beyond
    /// them (halves left over at the end are burnt, wasted).
    pub expected_queries: Option<usize>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            batch: 1,
            prefetch_queries: 0,
            prefetch_bytes: 256 << 20,
            expected_queries: None,
        }
    }
}

/// A half held for a later query.
struct Prefetched {
    material: PartyMaterial,
    /// After this the server half may have been burnt at the dealer: drop it unused.
    usable_until: Instant,
}

/// A connected client: one client session with the server and one with the dealer.
pub struct Client {
    plan: PublicPlan,
    server: Link,
    dealer: Link,
    parameters: PartyParameters,
    ledger: SessionLedger,
    options: ClientOptions,
    prefetched: VecDeque<Prefetched>,
    /// Bytes of one half at this batch size, once one has arrived.
    half_bytes: Option<usize>,
    /// Bytes received from the server during set-up (D).
    pub setup_bytes: u64,
}

impl Client {
    /// Connects to the server (set-up: receives D) and to the dealer, with default
    /// options at `batch` samples per query.
    pub fn connect(
        plan: PublicPlan,
        server_address: &str,
        dealer_address: &str,
        batch: usize,
        transport: &Transport,
    ) -> Result<Self> {
        let options = ClientOptions {
            batch,
            ..ClientOptions::default()
        };
        Self::connect_with(plan, server_address, dealer_address, options, transport)
    }

    /// Connects to the server (set-up: receives D) and to the dealer, and prefetches
    /// halves when the options ask for it.
    pub fn connect_with(
        plan: PublicPlan,
        server_address: &str,
        dealer_address: &str,
        options: ClientOptions,
        transport: &Transport,
    ) -> Result<Self> {
        if options.prefetch_queries > MAX_HELD_HALVES {
            bail!(
                "a client prefetches at most {MAX_HELD_HALVES} queries, {} were asked for",
                options.prefetch_queries
            );
        }
        let plan_hash = plan.hash_hex()?;
        let mut server = transport.connect(server_address, Role::Server)?;
        let hello = Hello {
            role: Role::Client,
            plan_hash: plan_hash.clone(),
            epoch: 0,
            extension: vec![],
        };
        let server_hello = handshake(&mut server, &hello, Role::Server)?;
        let before = server.stats();
        let masked = server.recv().context("receiving the masked weights")?;
        let setup_bytes = server.stats().since(&before).bytes_received;
        let mut offset = 0;
        let mut weights = Vec::new();
        for info in plan
            .parameters
            .iter()
            .filter(|info| info.kind == ParameterKind::Weight)
        {
            let count: usize = info.shape.iter().product();
            let bytes = masked
                .get(offset..offset + 8 * count)
                .context("the server's masked weights are shorter than the plan says")?;
            let data = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            weights.push((
                info.name.clone(),
                RingTensor::new(info.shape.clone(), data)?,
            ));
            offset += 8 * count;
        }
        if offset != masked.len() {
            bail!("the server's masked weights are longer than the plan says");
        }
        // The client dials the dealer itself, never through the server; a simulated
        // network shapes the server link only.
        let mut dealer = transport.unshaped().connect(dealer_address, Role::Dealer)?;
        let mut extension = (options.batch as u64).to_le_bytes().to_vec();
        extension.extend_from_slice(&(options.prefetch_queries as u64).to_le_bytes());
        let hello = Hello {
            role: Role::Client,
            plan_hash,
            epoch: server_hello.epoch,
            extension,
        };
        handshake(&mut dealer, &hello, Role::Dealer)?;
        let mut client = Self {
            plan,
            server,
            dealer,
            parameters: PartyParameters::Client(Arc::new(ClientParameters::new(weights))),
            ledger: SessionLedger::default(),
            options,
            prefetched: VecDeque::new(),
            half_bytes: None,
            setup_bytes,
        };
        client.top_up()?;
        Ok(client)
    }

    /// Halves held for later queries.
    pub fn prefetched(&self) -> usize {
        self.prefetched.len()
    }

    /// Asks the dealer for a query session: its answer, then our half's header.
    fn request_session(&mut self) -> Result<(PartyMaterial, Duration)> {
        self.dealer.send(&[])?;
        let answer = self
            .dealer
            .recv()
            .context("waiting for the dealer's session")?;
        let claimable = match answer.split_first() {
            Some((&SESSION_FOLLOWS, seconds)) if seconds.len() == 8 => {
                Duration::from_secs(u64::from_le_bytes(seconds.try_into()?))
            }
            Some((&SESSION_REFUSED, reason)) => {
                bail!(
                    "the dealer refused the session: {}",
                    String::from_utf8_lossy(reason)
                )
            }
            _ => bail!("the dealer's answer to a session request is malformed"),
        };
        let material = PartyMaterial::decode(
            &self
                .dealer
                .recv()
                .context("waiting for the dealer's session")?,
        )?;
        if material.role() != PartyRole::Client {
            bail!("the dealer sent material for another role");
        }
        Ok((material, claimable))
    }

    /// Drops prefetched halves whose server half may no longer wait at the dealer.
    fn drop_expired(&mut self) {
        let now = Instant::now();
        self.prefetched.retain(|held| held.usable_until > now);
    }

    /// Fetches halves for later queries until `prefetch_queries` are held or the next
    /// would exceed `prefetch_bytes`.
    fn top_up(&mut self) -> Result<()> {
        self.drop_expired();
        let wanted = self
            .options
            .expected_queries
            .map_or(self.options.prefetch_queries, |remaining| {
                remaining.min(self.options.prefetch_queries)
            });
        while self.prefetched.len() < wanted {
            let held: usize = self
                .prefetched
                .iter()
                .map(|held| held.material.encoded_len())
                .sum();
            if self
                .half_bytes
                .is_some_and(|half| (held + half) as u64 > self.options.prefetch_bytes)
            {
                break;
            }
            let (mut material, claimable) = self.request_session()?;
            receive_items(&mut self.dealer, &mut material)
                .context("waiting for the dealer's material")?;
            let bytes = material.encoded_len();
            self.half_bytes = Some(bytes);
            if (held + bytes) as u64 > self.options.prefetch_bytes {
                // Over budget: dropped unused (its server half is burnt at the dealer).
                break;
            }
            // The server claims its half now, so the query finds both halves in place.
            let mut notice = vec![CLAIM_AHEAD];
            notice.extend_from_slice(&material.session_id().to_le_bytes());
            self.server.send(&notice)?;
            let margin = (claimable / 4).min(Duration::from_secs(5));
            self.prefetched.push_back(Prefetched {
                material,
                usable_until: Instant::now() + claimable.saturating_sub(margin),
            });
        }
        Ok(())
    }

    /// Tells the server which session this query uses and at what batch size.
    fn start_query(&mut self, session_id: u128) -> Result<()> {
        let mut start = vec![QUERY_START];
        start.extend_from_slice(&session_id.to_le_bytes());
        start.extend_from_slice(&(self.options.batch as u64).to_le_bytes());
        self.server.send(&start)?;
        Ok(())
    }

    /// Runs one query on a batch of inputs (row-major).
    pub fn query(&mut self, input: &[f32]) -> Result<QueryReport> {
        let call_start = Instant::now();
        if let Some(remaining) = &mut self.options.expected_queries {
            *remaining = remaining.saturating_sub(1);
        }
        // Preprocessing first: both parties hold their halves before the online window.
        self.drop_expired();
        let (material, warm) = match self.prefetched.pop_front() {
            Some(held) => {
                self.start_query(held.material.session_id())?;
                (held.material, true)
            }
            None => {
                // The session header first: the server claims its half by this id
                // while our half arrives.
                let (mut material, _) = self.request_session()?;
                self.start_query(material.session_id())?;
                receive_items(&mut self.dealer, &mut material)
                    .context("waiting for the dealer's material")?;
                (material, false)
            }
        };
        let offline_seconds = call_start.elapsed().as_secs_f64();
        let client_material_bytes = material.encoded_len();
        let ready = self
            .server
            .recv()
            .context("waiting for the server to take its half")?;
        if !ready.is_empty() {
            bail!("the server's ready message is malformed");
        }
        let fixed_point = self.plan.fixed_point()?;
        let before: ChannelStats = self.server.stats();
        let started = Instant::now();
        let encoded = veil_exec::encode_input(&self.plan, input, self.options.batch)?;
        let session_id = material.session_id();
        let mut tagged = SessionChannel::new(&mut self.server, session_id);
        let mut party = Party::new(
            &mut tagged,
            fixed_point,
            material,
            self.parameters.clone(),
            &self.ledger,
        )?;
        let output = run(&mut party, &self.plan, self.options.batch, Some(&encoded))?
            .context("the client receives the output")?;
        party.finish()?;
        let output = veil_exec::decode_output(&self.plan, &output)?;
        let online_seconds = started.elapsed().as_secs_f64();
        let latency_seconds = call_start.elapsed().as_secs_f64();
        let used = self.server.stats().since(&before);
        // Halves for the next queries, outside the latency. A failure here does not
        // lose this answer: prefetching stops and later queries fetch on demand.
        let prefetch_start = Instant::now();
        if let Err(error) = self.top_up() {
            warn!("client: prefetching stopped: {error:#}");
            self.options.prefetch_queries = 0;
        }
        Ok(QueryReport {
            output,
            online_seconds,
            client_sent_bytes: used.bytes_sent,
            server_sent_bytes: used.bytes_received,
            rounds: used.rounds,
            client_material_bytes,
            offline_seconds,
            latency_seconds,
            warm,
            prefetch_seconds: prefetch_start.elapsed().as_secs_f64(),
        })
    }
}
