//! The server: registers with the dealer (and waits for its answer), then serves client
//! sessions; each query claims its half from the dealer by the session id and claim
//! token the client names. A watcher keeps the registration's connection: when it
//! drops (the dealer restarted), the server registers again with the same seed and
//! epoch, so clients keep their D and only reconnect to the dealer.
//!
//! A query's half streams: once its header has arrived a feed thread hands the items to
//! the party through a bounded queue as they come, so the server holds about one op's
//! material at a time. Halves claimed ahead for a prefetching client's later queries
//! (the warm mode) are received whole.

use std::collections::VecDeque;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{JoinHandle, ScopedJoinHandle};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use veil_core::prg::Seed;
use veil_exec::server_parameters;
use veil_model::{Plan, PublicPlan};
use veil_mpc::material::STREAM_QUEUED_ITEMS;
use veil_mpc::{PartyMaterial, ServerParameters, SessionLedger};
use veil_net::{Channel, ChannelStats, Role, SessionChannel};
use zeroize::Zeroize;

use super::{
    Activity, DEFAULT_MAX_CONNECTIONS, MAX_HELD_HALVES, SHUTDOWN_GRACE, accept_loop, mpc_party,
    shutting_down,
};
use crate::handshake::handshake;
use crate::messages::{
    ClaimToken, ClientMessage, Hello, MaskedWeights, Ready, RegistrationAnswer, ServerExtension,
    WeightCommitment, feed_items, receive_items,
};
use crate::metrics::Metrics;
use crate::transport::{Link, Transport};
use crate::{Error, PeerMisbehaved, Result};

/// How long the server retries connecting to the dealer for a claim.
const CLAIM_CONNECT_PATIENCE: Duration = Duration::from_secs(2);

/// How long the server waits for the dealer at start-up and when registering again.
const REGISTRATION_PATIENCE: Duration = Duration::from_secs(20);

/// The longest pause between two tries to register again with a dealer that went away.
const REREGISTRATION_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The default largest batch a query may ask for at this server.
pub const DEFAULT_MAX_BATCH: usize = 1024;

/// A new mask epoch: 64 bits from the OS RNG (never 0, which means "none"), so two
/// servers started in the same second, or a restart, never share one by accident.
pub fn new_epoch() -> Result<u64> {
    loop {
        let bytes = Seed::random()?.to_bytes();
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[..8]);
        let epoch = u64::from_le_bytes(word);
        if epoch != 0 {
            return Ok(epoch);
        }
    }
}

/// The server's state for one plan and epoch.
pub struct ServerState {
    metrics: Arc<Metrics>,
    plan: Plan,
    parameters: Arc<ServerParameters>,
    masked_weights: Vec<u8>,
    epoch: u64,
    weight_seed: Seed,
    commitment: WeightCommitment,
    max_batch: usize,
    max_connections: usize,
}

impl ServerState {
    /// The server's metrics (to serve with [`crate::metrics::serve_metrics`]).
    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// The mask epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The commitment to this epoch's weight seed (public).
    pub fn commitment(&self) -> WeightCommitment {
        self.commitment
    }

    /// Loads a plan with a fresh weight seed and the epoch `epoch` (from [`new_epoch`];
    /// 0 is refused).
    pub fn new(plan: Plan, epoch: u64) -> Result<Self> {
        if epoch == 0 {
            return Err(Error::Unsupported(
                "mask epoch 0 means \"none\"; draw one with new_epoch()",
            ));
        }
        let weight_seed = Seed::random()?;
        let parameters = server_parameters(&plan, &weight_seed, epoch)?;
        let masked = parameters.masked_weights()?.into_iter().collect();
        let masked_weights = MaskedWeights::encode(&plan.public, &masked)?;
        let commitment = WeightCommitment::of(&weight_seed, epoch, &plan.public.hash_hex()?);
        Ok(Self {
            metrics: Arc::default(),
            plan,
            parameters: Arc::new(parameters),
            masked_weights,
            epoch,
            weight_seed,
            commitment,
            max_batch: DEFAULT_MAX_BATCH,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        })
    }

    /// The largest batch a query may ask for (default [`DEFAULT_MAX_BATCH`]).
    pub fn with_max_batch(mut self, max_batch: usize) -> Self {
        self.max_batch = max_batch.max(1);
        self
    }

    /// The most connections served at once (default
    /// [`super::DEFAULT_MAX_CONNECTIONS`]); more are closed at once.
    pub fn with_max_connections(mut self, max_connections: usize) -> Self {
        self.max_connections = max_connections.max(1);
        self
    }
}

/// What the server saw over its life.
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerSummary {
    /// Queries answered.
    pub queries: u64,
    /// Client sessions that ended in an error.
    pub failed_sessions: u64,
    /// Bytes of the last query's material at the server (all of it, though a streamed
    /// half is never held whole).
    pub material_bytes: usize,
    /// Payload bytes sent to the dealer after the handshake (must be 0).
    pub payload_bytes_sent_to_dealer: u64,
    /// Halves claimed ahead for prefetched queries that their client never ran (burnt
    /// when its session ended).
    pub unused_halves: u64,
    /// Registrations the dealer accepted: 1, plus one per dealer restart survived.
    pub registrations: u64,
}

/// The server's state shared by its session threads.
struct Server {
    state: ServerState,
    plan_hash: String,
    dealer_address: String,
    transport: Transport,
    ledger: SessionLedger,
    activity: Activity,
    /// Set when `run_server` returns: the registration watcher stops.
    stopped: AtomicBool,
    summary: Mutex<ServerSummary>,
}

impl Server {
    fn count(&self, update: impl FnOnce(&mut ServerSummary)) {
        if let Ok(mut summary) = self.summary.lock() {
            update(&mut summary);
        }
    }
}

/// Registers with the dealer: a hello that hands it the weight seed, the epoch and the
/// commitment, then the dealer's answer. Returns the registration's connection, which
/// stays open for as long as the registration holds.
fn register(
    transport: &Transport,
    dealer_address: &str,
    state: &ServerState,
    plan_hash: &str,
    patience: Duration,
) -> Result<Link> {
    // A simulated network shapes the client links only: dealer traffic is not online.
    let mut registration =
        transport
            .unshaped()
            .connect_within(dealer_address, Role::Dealer, patience)?;
    let extension = ServerExtension::Register {
        weight_seed: state.weight_seed.clone(),
    };
    let hello = Hello {
        role: Role::Server,
        plan_hash: plan_hash.to_string(),
        epoch: state.epoch,
        commitment: state.commitment,
        extension: extension.encode(),
    };
    drop(extension);
    let result = handshake(&mut registration, &hello, Role::Dealer);
    // The hello's encoding held the seed: zeroise it.
    let mut encoded = hello.extension;
    encoded.zeroize();
    result?;
    let answer = registration.recv().map_err(Error::link(
        "waiting for the dealer's answer to the registration",
    ))?;
    match RegistrationAnswer::decode(&answer)? {
        RegistrationAnswer::Accepted => Ok(registration),
        RegistrationAnswer::Refused { reason } => Err(Error::RegistrationRefused { reason }),
    }
}

/// Watches the registration's connection (the dealer sends nothing on it): when it
/// drops, registers again with the same seed and epoch, backing off between tries,
/// until it succeeds or the server stops.
fn watch_registration(server: Arc<Server>, mut registration: Link) {
    let mut after_handshake = registration.stats();
    loop {
        let ended = match registration.recv() {
            Ok(_) => continue,
            Err(veil_net::Error::Timeout { .. }) => false,
            Err(_) => true,
        };
        if server.stopped.load(Ordering::SeqCst) || shutting_down() {
            return;
        }
        if !ended {
            continue;
        }
        let sent = registration
            .stats()
            .since(&after_handshake)
            .payload_bytes_sent;
        server.count(|summary| summary.payload_bytes_sent_to_dealer += sent);
        warn!(
            epoch = server.state.epoch,
            "server: the dealer's connection dropped; registering again"
        );
        let mut backoff = Duration::from_millis(100);
        registration = loop {
            if server.stopped.load(Ordering::SeqCst) || shutting_down() {
                return;
            }
            match register(
                &server.transport,
                &server.dealer_address,
                &server.state,
                &server.plan_hash,
                backoff,
            ) {
                Ok(link) => break link,
                Err(error) => {
                    warn!("server: registering again failed: {error}");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(REREGISTRATION_BACKOFF_MAX);
                }
            }
        };
        after_handshake = registration.stats();
        server.count(|summary| summary.registrations += 1);
        info!(
            epoch = server.state.epoch,
            "server: registered again with the dealer (same epoch)"
        );
    }
}

/// Runs the server: registers with the dealer (handing it the weight seed) and waits for
/// its answer, then serves client sessions concurrently, each on its own thread, until
/// `max_clients` sessions have ended (forever when `None`) or a shutdown is requested
/// (then queries in progress get [`SHUTDOWN_GRACE`] to finish). Each query claims its
/// half from the dealer over a connection of its own, by the session id and claim token
/// the client names. A dealer that restarts is registered with again.
pub fn run_server(
    listener: TcpListener,
    dealer_address: &str,
    state: ServerState,
    max_clients: Option<usize>,
    transport: &Transport,
) -> Result<ServerSummary> {
    let plan_hash = state.plan.public.hash_hex()?;
    // Tries for REGISTRATION_PATIENCE while the dealer starts, a shutdown request
    // ending the wait at once.
    let patience = Instant::now() + REGISTRATION_PATIENCE;
    let registration = loop {
        if shutting_down() {
            return Err(Error::ShutDown);
        }
        match register(
            transport,
            dealer_address,
            &state,
            &plan_hash,
            Duration::from_millis(250),
        ) {
            Ok(link) => break link,
            Err(Error::Connect { .. }) if Instant::now() < patience => continue,
            Err(error) => return Err(error),
        }
    };
    info!(epoch = state.epoch, "server: registered with the dealer");
    let max_connections = state.max_connections;
    let server = Arc::new(Server {
        state,
        plan_hash,
        dealer_address: dealer_address.to_string(),
        transport: transport.clone(),
        ledger: SessionLedger::default(),
        activity: Activity::default(),
        stopped: AtomicBool::new(false),
        summary: Mutex::new(ServerSummary {
            registrations: 1,
            ..ServerSummary::default()
        }),
    });
    {
        let server = Arc::clone(&server);
        std::thread::Builder::new()
            .name("veil-server-registration".into())
            .spawn(move || watch_registration(server, registration))
            .map_err(Error::io("starting the registration watcher"))?;
    }
    let sessions_started = AtomicUsize::new(0);
    let sessions_ended = Arc::new(AtomicUsize::new(0));
    let done = || max_clients.is_some_and(|max| sessions_ended.load(Ordering::SeqCst) >= max);
    let served = accept_loop(&listener, max_connections, done, |stream| {
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
                    server.count(|summary| summary.failed_sessions += 1);
                    server.state.metrics.record_error(&error);
                    warn!("server: client session failed: {error}");
                }
                server.state.metrics.session_delta(-1);
                ended.fetch_add(1, Ordering::SeqCst);
            })
            .ok()
    });
    if !server.activity.wait_quiet(SHUTDOWN_GRACE) {
        warn!("server: queries still in progress after the shutdown grace; stopping anyway");
    }
    server.stopped.store(true, Ordering::SeqCst);
    served?;
    let summary = *server.summary.lock().map_err(|_| Error::ThreadPanicked {
        what: "server session",
    })?;
    info!(queries = summary.queries, "server: done");
    Ok(summary)
}

/// The server's side of one query: P0 of the two-party protocol over the client's link,
/// every frame tagged with the session id, the executor over the public plan, and every
/// item of the half used. The one place the server runs the protocol.
fn run_server_query(
    client: &mut Link,
    plan: &PublicPlan,
    parameters: &Arc<ServerParameters>,
    ledger: &SessionLedger,
    material: PartyMaterial,
    batch: usize,
) -> Result<()> {
    let tagged = SessionChannel::new(client, material.session_id());
    veil_exec::session::run_server(tagged, plan, parameters, material, ledger, batch)?;
    Ok(())
}

/// One client session at the server: set-up (D), then queries until the client leaves.
fn server_client_session(server: &Server, stream: std::net::TcpStream) -> Result<()> {
    let state = &server.state;
    let (mut client, _) = server.transport.from_stream(stream, &[Role::Client])?;
    let ours = Hello {
        role: Role::Server,
        plan_hash: server.plan_hash.clone(),
        epoch: state.epoch,
        commitment: state.commitment,
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
            let (session_id, token, batch) = match ClientMessage::decode(&request)? {
                ClientMessage::ClaimAhead { session_id, token } => {
                    if held.claims.len() >= MAX_HELD_HALVES {
                        // The oldest is dropped, and its claim waited for: at most
                        // MAX_HELD_HALVES claim threads run for one client.
                        if let Some((_, oldest)) = held.claims.pop_front() {
                            let _ = oldest.join();
                        }
                        held.unused += 1;
                    }
                    let claim = std::thread::Builder::new()
                        .name("veil-server-claim".into())
                        .spawn_scoped(scope, move || claim_server_half(server, session_id, token))
                        .map_err(Error::io("starting a claim"))?;
                    held.claims.push_back((session_id, claim));
                    continue;
                }
                ClientMessage::QueryStart {
                    session_id,
                    token,
                    batch,
                } => (session_id, token, batch),
            };
            if batch > state.max_batch {
                return Err(Error::BatchLimit {
                    asked: batch,
                    max: state.max_batch,
                });
            }
            let _busy = server.activity.begin();
            let (material, feed) = match held.claims.iter().position(|(id, _)| *id == session_id) {
                Some(index) => {
                    let material = held
                        .claims
                        .remove(index)
                        .ok_or(Error::Unreachable("a held half vanished from its list"))?
                        .1
                        .join()
                        .map_err(|_| Error::ThreadPanicked { what: "claim" })??;
                    (material, None)
                }
                None => {
                    let (material, feed) = claim_streaming(server, session_id, token)?;
                    (material, Some(feed))
                }
            };
            client.send(&Ready.encode())?;
            let started = Instant::now();
            let before = client.stats();
            run_server_query(
                &mut client,
                &state.plan.public,
                &state.parameters,
                &server.ledger,
                material,
                batch,
            )?;
            let used = client.stats().since(&before);
            if let Some(feed) = feed {
                // The query used every item, so the stream has ended.
                feed.finish(server)?;
            }
            server.count(|summary| summary.queries += 1);
            state.metrics.record_query(started.elapsed().as_secs_f64());
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
        if unused > 0 {
            self.server.count(|summary| summary.unused_halves += unused);
        }
    }
}

/// A claim's link to the dealer after its handshake, with the header of the half it
/// delivers (checked to be this session's server half) and the link's counters then.
fn claim_header(
    server: &Server,
    session_id: u128,
    token: ClaimToken,
) -> Result<(Link, PartyMaterial, ChannelStats)> {
    // The dealer is up already (the server registered with it): a claim that cannot
    // connect soon fails this session rather than stalling it.
    let mut dealer = server.transport.unshaped().connect_within(
        &server.dealer_address,
        Role::Dealer,
        CLAIM_CONNECT_PATIENCE,
    )?;
    let hello = Hello {
        role: Role::Server,
        plan_hash: server.plan_hash.clone(),
        epoch: server.state.epoch,
        commitment: server.state.commitment,
        extension: ServerExtension::Claim { session_id, token }.encode(),
    };
    let theirs = handshake(&mut dealer, &hello, Role::Dealer)?;
    crate::handshake::check_dealer(&theirs, server.state.epoch, server.state.commitment)?;
    let after_handshake = dealer.stats();
    let header = dealer
        .recv()
        .map_err(Error::link("waiting for the dealer's material"))?;
    let material = PartyMaterial::decode(&header)?;
    if material.session_id() != session_id || Some(material.role()) != mpc_party(Role::Server) {
        return Err(PeerMisbehaved::WrongMaterial.into());
    }
    Ok((dealer, material, after_handshake))
}

/// Claims the server's half of `session_id` from the dealer over a new connection and
/// receives it whole (a half held for a later query); the claim is the handshake
/// itself, after which the server sends the dealer nothing.
fn claim_server_half(
    server: &Server,
    session_id: u128,
    token: ClaimToken,
) -> Result<PartyMaterial> {
    let started = Instant::now();
    let (mut dealer, mut material, after_handshake) = claim_header(server, session_id, token)?;
    receive_items(&mut dealer, &mut material)
        .map_err(|error| error.during("waiting for the dealer's material"))?;
    info!(
        seconds = started.elapsed().as_secs_f64(),
        bytes = material.encoded_len(),
        "server: claimed a half"
    );
    server.count(|summary| {
        summary.material_bytes = material.encoded_len();
        summary.payload_bytes_sent_to_dealer +=
            dealer.stats().since(&after_handshake).payload_bytes_sent;
    });
    Ok(material)
}

/// What a claim's feed thread gives back: the payload bytes the server sent the dealer
/// after the handshake (must be 0), and the bytes of the items received.
type FeedOutcome = (u64, Result<u64>);

/// A half streaming from the dealer: the feed thread, and the header's size.
struct StreamingClaim {
    feed: JoinHandle<FeedOutcome>,
    header_bytes: usize,
    started: Instant,
}

impl StreamingClaim {
    /// After the query used every item: waits for the feed thread (its stream has
    /// ended) and records the half's size.
    fn finish(self, server: &Server) -> Result<()> {
        let (payload_sent, received) = self
            .feed
            .join()
            .map_err(|_| Error::ThreadPanicked { what: "claim" })?;
        let bytes = self.header_bytes + received? as usize;
        info!(
            seconds = self.started.elapsed().as_secs_f64(),
            bytes, "server: streamed a half"
        );
        server.count(|summary| {
            summary.material_bytes = bytes;
            summary.payload_bytes_sent_to_dealer += payload_sent;
        });
        Ok(())
    }
}

/// Claims the server's half of `session_id` from the dealer over a new connection and
/// streams it: returns once the header has arrived, with a half whose items a feed
/// thread hands over as they come, at most [`STREAM_QUEUED_ITEMS`] queued beyond the
/// one it holds.
/// If the query stops early the thread stops at its next item and drops the link.
fn claim_streaming(
    server: &Server,
    session_id: u128,
    token: ClaimToken,
) -> Result<(PartyMaterial, StreamingClaim)> {
    let started = Instant::now();
    let (mut dealer, material, after_handshake) = claim_header(server, session_id, token)?;
    let header_bytes = material.encoded_len();
    let (material, feeder) = material.into_streaming(STREAM_QUEUED_ITEMS);
    let feed = std::thread::Builder::new()
        .name("veil-server-material".into())
        .spawn(move || {
            let received = feed_items(&mut dealer, feeder)
                .map_err(|error| error.during("waiting for the dealer's material"));
            let payload_sent = dealer.stats().since(&after_handshake).payload_bytes_sent;
            (payload_sent, received)
        })
        .map_err(Error::io("starting the material feed"))?;
    Ok((
        material,
        StreamingClaim {
            feed,
            header_bytes,
            started,
        },
    ))
}
