//! The dealer: registers the server, then serves client sessions, one query session per
//! request, each half to its own role once (from the pool, generated on request, or
//! streamed layer by layer).

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing::{info, warn};
use veil_core::prg::Seed;
use veil_exec::dealer_parameters;
use veil_model::PublicPlan;
use veil_mpc::material::MaterialItem;
use veil_mpc::{ComparisonKeys, DealerParameters, PartyRole, SessionId};
use veil_net::{Channel, ChannelStats, Role};
use zeroize::Zeroize;

use super::{Activity, DEFAULT_MAX_CONNECTIONS, accept_loop, shutting_down};
use crate::handshake::handshake_any;
use crate::messages::{
    ClaimToken, ClientExtension, Hello, RegistrationAnswer, ServerExtension, SessionAnswer,
    SessionRequest, WeightCommitment, item_bytes, send_end, send_item,
};
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolConfig};
use crate::transport::{Link, Transport};
use crate::{Error, PeerMisbehaved, Result};

/// The most bytes the dealer queues for one connection by default before `send` waits
/// for the peer to read.
pub const DEALER_SEND_QUEUE_BYTES: usize = 16 << 20;

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
    /// Server registrations accepted (more than one after server restarts).
    pub registrations: u64,
    /// What the preprocessing pool did.
    pub pool: crate::pool::PoolCounters,
}

/// The dealer's options.
#[derive(Clone, Debug)]
pub struct DealerOptions {
    /// Serve this many client sessions, then return (forever when `None`).
    pub max_clients: Option<usize>,
    /// The preprocessing pool.
    pub pool: PoolConfig,
    /// Where the dealer records its metrics (serve them with
    /// [`crate::metrics::serve_metrics`]).
    pub metrics: Arc<Metrics>,
    /// The most connections served at once (handshakes, client sessions, claims and the
    /// registration together); more are closed at once.
    pub max_connections: usize,
    /// The most bytes queued for one connection before `send` waits for the peer to
    /// read ([`DEALER_SEND_QUEUE_BYTES`] by default). Larger lets generation run further
    /// ahead of a slow link, at that much memory per connection.
    pub send_queue_bytes: usize,
}

impl Default for DealerOptions {
    fn default() -> Self {
        Self {
            max_clients: None,
            pool: PoolConfig::default(),
            metrics: Arc::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            send_queue_bytes: DEALER_SEND_QUEUE_BYTES,
        }
    }
}

/// How long a prefetching client's request waits for a pooled entry or room to make
/// one before it is refused with "retry shortly".
const PREFETCH_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

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
    keys: ComparisonKeys,
    start: impl FnOnce(&SessionHeaders) -> Result<MaterialSink<'a>>,
) -> Result<()> {
    let generation =
        veil_exec::session::Generation::new(plan, parameters, batch)?.with_comparison_keys(keys);
    let headers = SessionHeaders {
        session_id: generation.session_id(),
        server: generation.encoded_header(PartyRole::Server),
        client: generation.encoded_header(PartyRole::Client),
    };
    generation.stream(start(&headers)?)?;
    Ok(())
}

/// One registered server: its epoch, the commitment to its seed, the dealer's
/// parameters and pool for that epoch, and the streamed sessions waiting for its claims.
struct Registration {
    epoch: u64,
    commitment: WeightCommitment,
    parameters: Arc<DealerParameters>,
    pool: Arc<Pool>,
    filler: Mutex<Option<JoinHandle<()>>>,
    /// Streamed sessions waiting for the server's claim: session id → the session's
    /// claim token and the waiting client thread.
    pending: Mutex<HashMap<u128, (ClaimToken, Sender<Link>)>>,
    /// Set once the registration has ended (its counters are then in the summary).
    ended: AtomicBool,
}

impl Registration {
    /// The registration ends: its pool stops (burning what it holds) and its filler ends.
    fn end(&self) {
        self.pool.stop();
        if let Some(filler) = self.filler.lock().ok().and_then(|mut filler| filler.take()) {
            let _ = filler.join();
        }
        if let Ok(mut pending) = self.pending.lock() {
            pending.clear();
        }
    }
}

/// The dealer's state, shared by its connection threads.
struct Dealer {
    plan: PublicPlan,
    plan_hash: String,
    options: DealerOptions,
    /// The server registered now, if any.
    current: Mutex<Option<Arc<Registration>>>,
    /// Numbers the client sessions, to burn their unclaimed halves when they end.
    next_client: AtomicU64,
    activity: Activity,
    summary: Mutex<DealerSummary>,
}

impl Dealer {
    fn count(&self, update: impl FnOnce(&mut DealerSummary)) {
        if let Ok(mut summary) = self.summary.lock() {
            update(&mut summary);
        }
    }

    fn current(&self) -> Option<Arc<Registration>> {
        self.current.lock().ok().and_then(|current| current.clone())
    }

    /// Our hello: the registration's epoch and commitment, or none while waiting.
    fn hello(&self, registration: Option<&Registration>) -> Hello {
        Hello {
            role: Role::Dealer,
            plan_hash: self.plan_hash.clone(),
            epoch: registration.map_or(0, |registration| registration.epoch),
            commitment: registration.map_or(WeightCommitment::NONE, |registration| {
                registration.commitment
            }),
            extension: vec![],
        }
    }
}

/// Runs the dealer: serves whichever server registers (one at a time), and client
/// sessions concurrently, each connection on its own thread, until
/// `options.max_clients` client sessions have ended or a shutdown is requested (then
/// queries in progress get [`super::SHUTDOWN_GRACE`] to finish). For each query the
/// client's half goes to the client and the server's half to the server's claim for
/// that session id and token; each half goes only to its own role, once. While no
/// server is registered a client's handshake says so (epoch 0) and the session ends.
pub fn run_dealer(
    listener: TcpListener,
    plan: PublicPlan,
    options: &DealerOptions,
    transport: &Transport,
) -> Result<DealerSummary> {
    let max_clients = options.max_clients;
    // The dealer only sends (material, answers): bounded sends pace generation by
    // delivery and cap what a client that does not read can make it hold.
    let transport = &transport.with_send_queue(options.send_queue_bytes.max(1));
    let dealer = Arc::new(Dealer {
        plan_hash: plan.hash_hex()?,
        plan,
        options: options.clone(),
        current: Mutex::new(None),
        next_client: AtomicU64::new(0),
        activity: Activity::default(),
        summary: Mutex::new(DealerSummary::default()),
    });
    info!("dealer: waiting for the server to register");
    let clients_started = Arc::new(AtomicUsize::new(0));
    let clients_ended = Arc::new(AtomicUsize::new(0));
    let done = || max_clients.is_some_and(|max| clients_ended.load(Ordering::SeqCst) >= max);
    accept_loop(&listener, options.max_connections, done, |stream| {
        let dealer = Arc::clone(&dealer);
        let transport = transport.clone();
        let metrics = Arc::clone(&options.metrics);
        let (started, ended) = (Arc::clone(&clients_started), Arc::clone(&clients_ended));
        std::thread::Builder::new()
            .name("veil-dealer-connection".into())
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
                    Ok(ConnectionKind::Claim | ConnectionKind::Registration) => {}
                    Err((error, was_client)) => {
                        if was_client {
                            ended.fetch_add(1, Ordering::SeqCst);
                        }
                        metrics.record_error(&error);
                        warn!("dealer: connection failed: {error}");
                    }
                }
            })
            .ok()
    })?;
    if !dealer.activity.wait_quiet(super::SHUTDOWN_GRACE) {
        warn!("dealer: queries still in progress after the shutdown grace; stopping anyway");
    }
    if let Some(registration) = dealer.current() {
        deregister(&dealer, &registration);
    }
    let mut summary = *dealer.summary.lock().map_err(|_| Error::ThreadPanicked {
        what: "dealer session",
    })?;
    summary.burnt_sessions += summary.pool.burnt;
    Ok(summary)
}

enum ConnectionKind {
    Client,
    Claim,
    Registration,
}

/// One connection at the dealer: a server registering, the server claiming a session's
/// half, or a client session. Errors carry whether the connection was a client session.
fn dealer_connection(
    dealer: &Dealer,
    transport: &Transport,
    stream: std::net::TcpStream,
    admit_client: impl FnOnce() -> bool,
) -> std::result::Result<ConnectionKind, (Error, bool)> {
    let (mut link, proven) = transport
        .from_stream(stream, &[Role::Client, Role::Server])
        .map_err(|error| (error, false))?;
    // The hello states the registration of this moment (a client that arrives while no
    // server is registered learns so from epoch 0).
    let registration = dealer.current();
    let ours = dealer.hello(registration.as_deref());
    let theirs = handshake_any(&mut link, &ours, &[Role::Client, Role::Server])
        .map_err(|error| (error, false))?;
    if proven.is_some_and(|proven| proven != theirs.role) {
        let claimed = theirs.role;
        return Err((PeerMisbehaved::RoleNotCertified { claimed }.into(), false));
    }
    let is_client = theirs.role == Role::Client;
    let extension = if is_client {
        None
    } else {
        Some(ServerExtension::decode(&theirs.extension).map_err(|error| (error, false))?)
    };
    if let Some(ServerExtension::Register { weight_seed }) = extension {
        return register(dealer, link, &theirs, weight_seed)
            .map(|()| ConnectionKind::Registration)
            .map_err(|error| (error, false));
    }
    // Claims and client sessions belong to the registration their hello names.
    let registration = match registration {
        Some(registration) => registration,
        None => return Err((Error::DealerNotReady, is_client)),
    };
    if theirs.epoch != registration.epoch {
        return Err((
            Error::EpochMismatch {
                peer: theirs.epoch,
                ours: registration.epoch,
            },
            is_client,
        ));
    }
    if theirs.commitment != registration.commitment {
        return Err((
            Error::CommitmentMismatch {
                epoch: registration.epoch,
            },
            is_client,
        ));
    }
    match extension {
        Some(ServerExtension::Claim { session_id, token }) => {
            claim(&registration, link, session_id, &token).map_err(|error| (error, false))?;
            Ok(ConnectionKind::Claim)
        }
        Some(ServerExtension::Register { .. }) => Err((
            Error::Unreachable("a registration reached the claim path"),
            false,
        )),
        None => {
            if !admit_client() {
                return Err((Error::ClientLimit, false));
            }
            let owner = dealer.next_client.fetch_add(1, Ordering::SeqCst);
            let result = dealer_client_session(dealer, &registration, link, &theirs, owner);
            // Halves issued to this client that the server has not claimed can no
            // longer be named by it: burn them.
            registration.pool.burn_owner(owner);
            result
                .map(|()| ConnectionKind::Client)
                .map_err(|error| (error, true))
        }
    }
}

/// A server's registration: refused while another server is registered (a replica, or
/// a server whose connection has not dropped yet), or when its epoch or commitment does
/// not fit its seed; otherwise accepted, answered, and watched until the server's
/// connection drops. Then the registration ends and the dealer waits for the next.
fn register(dealer: &Dealer, mut link: Link, theirs: &Hello, weight_seed: Seed) -> Result<()> {
    let busy = dealer.activity.begin();
    let refuse = |link: &mut Link, reason: String| {
        let _ = link.send(&RegistrationAnswer::Refused { reason }.encode());
    };
    if theirs.epoch == 0
        || WeightCommitment::of(&weight_seed, theirs.epoch, &dealer.plan_hash) != theirs.commitment
    {
        refuse(&mut link, PeerMisbehaved::BadRegistration.to_string());
        return Err(PeerMisbehaved::BadRegistration.into());
    }
    let already = |epoch: u64| {
        format!(
            "this dealer already serves a registered server (epoch {epoch}); a dealer serves one server at a time: give each server replica a dealer of its own, or stop the other server first"
        )
    };
    if let Some(existing) = dealer.current() {
        let reason = already(existing.epoch);
        refuse(&mut link, reason.clone());
        return Err(Error::RegistrationRefused { reason });
    }
    let epoch = theirs.epoch;
    let parameters = Arc::new(dealer_parameters(&dealer.plan, &weight_seed, epoch));
    drop(weight_seed);
    let pool = Arc::new(Pool::new(
        dealer.plan.clone(),
        Arc::clone(&parameters),
        dealer.options.pool,
        Arc::clone(&dealer.options.metrics),
    )?);
    let registration = Arc::new(Registration {
        epoch,
        commitment: theirs.commitment,
        parameters,
        pool: Arc::clone(&pool),
        filler: Mutex::new(None),
        pending: Mutex::new(HashMap::new()),
        ended: AtomicBool::new(false),
    });
    {
        let mut current = dealer.current.lock().map_err(|_| Error::ThreadPanicked {
            what: "dealer registration",
        })?;
        if let Some(existing) = current.as_ref() {
            // Another registration won the race since we looked.
            let reason = already(existing.epoch);
            drop(current);
            refuse(&mut link, reason.clone());
            return Err(Error::RegistrationRefused { reason });
        }
        *current = Some(Arc::clone(&registration));
    }
    if let Err(error) = link.send(&RegistrationAnswer::Accepted.encode()) {
        deregister(dealer, &registration);
        return Err(Error::link("answering the server's registration")(error));
    }
    // Batch 1 is the common case: fill it before anyone asks.
    pool.note_demand(1);
    let filler = {
        let pool = Arc::clone(&pool);
        std::thread::Builder::new()
            .name("veil-dealer-pool".into())
            .spawn(move || pool.fill())
            .map_err(Error::io("starting the pool's filler"))
    };
    match filler {
        Ok(filler) => {
            if let Ok(mut slot) = registration.filler.lock() {
                *slot = Some(filler);
            }
        }
        Err(error) => {
            deregister(dealer, &registration);
            return Err(error);
        }
    }
    dealer.count(|summary| summary.registrations += 1);
    info!(epoch, "dealer: server registered");
    drop(busy);
    // Watch the registration: the server sends nothing more, so its connection ending
    // (a closed socket, a restart) is the only thing to wait for.
    let after_handshake = link.stats();
    let outcome = loop {
        match link.recv() {
            Ok(frame) if frame.is_empty() => continue,
            Ok(_) => {
                break Err(PeerMisbehaved::PayloadAfterHandshake { role: Role::Server }.into());
            }
            Err(veil_net::Error::Timeout { .. }) if !shutting_down() => continue,
            Err(veil_net::Error::Timeout { .. }) => break Ok(()),
            Err(veil_net::Error::PeerClosed) => break Ok(()),
            Err(error) => break Err(Error::link("watching the server's registration")(error)),
        }
    };
    let received = link.stats().since(&after_handshake).payload_bytes_received;
    dealer.count(|summary| summary.payload_bytes_received_after_handshake += received);
    deregister(dealer, &registration);
    if !shutting_down() {
        warn!(
            epoch,
            "dealer: the server's registration ended; its sessions end and the dealer waits for a server to register"
        );
    }
    outcome
}

/// Ends `registration` if it is still the current one.
fn deregister(dealer: &Dealer, registration: &Arc<Registration>) {
    if let Ok(mut current) = dealer.current.lock()
        && current
            .as_ref()
            .is_some_and(|now| Arc::ptr_eq(now, registration))
    {
        *current = None;
    }
    if registration.ended.swap(true, Ordering::SeqCst) {
        return;
    }
    let counters = registration.pool.counters();
    dealer.count(|summary| {
        summary.pool.pregenerated += counters.pregenerated;
        summary.pool.hits += counters.hits;
        summary.pool.misses += counters.misses;
        summary.pool.burnt += counters.burnt;
    });
    registration.end();
}

/// The server's claim of a session's half, pooled or streaming: it must show the token
/// the dealer gave the session's client. A wrong token finds nothing (and takes nothing).
fn claim(
    registration: &Registration,
    mut link: Link,
    session: u128,
    token: &ClaimToken,
) -> Result<()> {
    if let Some(half) = registration.pool.claim(session, token) {
        half.deliver(&mut link)
            .map_err(Error::link("delivering the server's half"))?;
        return Ok(());
    }
    let waiting =
        registration
            .pending
            .lock()
            .ok()
            .and_then(|mut pending| match pending.get(&session) {
                Some((expected, _)) if expected.matches(token) => pending.remove(&session),
                _ => None,
            });
    match waiting {
        Some((_, waiting)) => {
            let _ = waiting.send(link);
            Ok(())
        }
        None => Err(PeerMisbehaved::UnknownSession.into()),
    }
}

/// Serves one client session: one query session per empty request frame. A request is
/// answered from the pool when an entry is ready, by generating one in memory when it
/// fits what the pool has free, and otherwise by streaming (generation paced by
/// delivery, which needs the server's claim first). A client that prefetches never
/// gets a streamed session: its halves must wait for a later query. A client holds at
/// most its prefetch depth plus one sessions the server has not claimed yet.
fn dealer_client_session(
    dealer: &Dealer,
    registration: &Registration,
    mut client: Link,
    hello: &Hello,
    owner: u64,
) -> Result<()> {
    let ClientExtension { batch, prefetch } = ClientExtension::decode(&hello.extension)?;
    let pool = &registration.pool;
    pool.note_demand(batch);
    let claimable = pool.config().claim_timeout;
    let outstanding_limit = prefetch as usize + 1;
    let after_handshake = client.stats();
    let mut received_from_server = 0;
    let result = (|| -> Result<()> {
        loop {
            match client.recv() {
                Ok(request) => SessionRequest::decode(&request, Role::Client)?,
                Err(veil_net::Error::PeerClosed) => return Ok(()),
                Err(error) => return Err(error.into()),
            };
            let _busy = dealer.activity.begin();
            if shutting_down() || registration.ended.load(Ordering::SeqCst) {
                let reason = if shutting_down() {
                    "the dealer is shutting down; reconnect to another dealer or retry later"
                } else {
                    "the server's registration ended (a restart); reconnect to the server"
                };
                client.send(
                    &SessionAnswer::Refused {
                        reason: reason.into(),
                    }
                    .encode(),
                )?;
                return Ok(());
            }
            let outstanding = pool.awaiting_for(owner);
            if outstanding >= outstanding_limit {
                let reason = format!(
                    "this client holds {outstanding} sessions the server has not claimed (its prefetch depth is {prefetch}); have the server claim them before asking for more"
                );
                client.send(&SessionAnswer::Refused { reason }.encode())?;
                continue;
            }
            let mut entry = match pool.take_ready(batch) {
                Some(entry) => Some(entry),
                None if prefetch > 0 || pool.fits(batch) == Some(true) => {
                    pool.generate_now(batch)?
                }
                None => None,
            };
            // A prefetching client cannot take a streamed session: give the filler (whose
            // first entry holds all the free room) and the server's claims a while.
            if entry.is_none() && prefetch > 0 && pool.wait_for_entry_or_room(batch, PREFETCH_WAIT)
            {
                entry = match pool.take_ready(batch) {
                    Some(entry) => Some(entry),
                    None => pool.generate_now(batch)?,
                };
            }
            match entry {
                Some(entry) => {
                    let session = entry.session_id();
                    let token = ClaimToken::random()?;
                    let (server_half, client_half) = entry.split();
                    // Parked before the client learns the id, so the claim finds it.
                    pool.await_claim(session, server_half, owner, token);
                    client.send(&SessionAnswer::Follows { claimable, token }.encode())?;
                    client_half.deliver(&mut client)?;
                }
                None if prefetch > 0 => {
                    let reason = match pool.fits(batch) {
                        Some(false) => format!(
                            "one query's material at batch {batch} is larger than the dealer's pool ({} bytes), so it cannot wait for a later query; run the client without prefetching or raise the dealer's pool_bytes",
                            pool.config().capacity_bytes
                        ),
                        _ => "the dealer's pool is full with halves waiting for their claims; retry shortly".to_string(),
                    };
                    client.send(&SessionAnswer::Refused { reason }.encode())?;
                    continue;
                }
                None => {
                    received_from_server +=
                        stream_session(dealer, registration, &mut client, batch)?;
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
/// half by its id and token, then the generator's items go to each role as they are
/// made. Records the entry's size with the pool. Returns the payload bytes the server
/// sent (0).
fn stream_session(
    dealer: &Dealer,
    registration: &Registration,
    client: &mut Link,
    batch: usize,
) -> Result<u64> {
    let claim_timeout = registration.pool.config().claim_timeout;
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
    generate_material(
        &dealer.plan,
        &registration.parameters,
        batch,
        registration.pool.config().comparison_keys,
        move |headers| {
            let session = headers.session_id;
            let token = ClaimToken::random()?;
            let (handoff, claim) = std::sync::mpsc::channel();
            registration
                .pending
                .lock()
                .map_err(|_| Error::ThreadPanicked {
                    what: "dealer session",
                })?
                .insert(session, (token, handoff));
            let answer = SessionAnswer::Follows {
                claimable: claim_timeout,
                token,
            };
            client_link.send(&answer.encode())?;
            client_link.send(&headers.client)?;
            let server = match claim.recv_timeout(claim_timeout) {
                Ok(server) => slot.insert(server),
                Err(_) => {
                    if let Ok(mut pending) = registration.pending.lock() {
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
        },
    )?;
    let server = server_slot
        .as_mut()
        .ok_or(Error::Unreachable("a streamed session ended unclaimed"))?;
    send_end(server)?;
    send_end(client)?;
    registration.pool.record_size(batch, entry_bytes);
    Ok(server
        .stats()
        .since(&server_after_handshake)
        .payload_bytes_received)
}
