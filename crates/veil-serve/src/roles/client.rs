//! The client: one client session with the server (set-up: D) and one with the dealer
//! (dialled directly, never through the server); each query takes a half from the
//! dealer (or from those prefetched), names its session to the server, and runs.
//!
//! A query without a prefetched half streams its half: the dealer's link goes to a feed
//! thread that hands items to the party through a bounded queue as they arrive, the
//! online run starts as soon as the server is ready, and the link comes back when the
//! stream has ended. So the client holds about one op's material at a time; only
//! prefetched halves (held for later queries, within `prefetch_bytes`) are whole.

use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tracing::warn;
use veil_core::RingTensor;
use veil_model::PublicPlan;
use veil_mpc::material::STREAM_QUEUED_ITEMS;
use veil_mpc::{ClientParameters, PartyMaterial, SessionLedger};
use veil_net::{Channel, ChannelStats, Role, SessionChannel};

use super::{MAX_HELD_HALVES, mpc_party};
use crate::handshake::handshake;
use crate::messages::{
    ClaimToken, ClientExtension, ClientMessage, Hello, MaskedWeights, Ready, SessionAnswer,
    SessionRequest, WeightCommitment, feed_items, receive_items,
};
use crate::transport::{Link, Transport};
use crate::{Error, PeerMisbehaved, Result};

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
    /// Bytes of this query's material at the client (all of it, though a streamed half
    /// is never held whole).
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
    /// The session's claim token, for the server's claim.
    token: ClaimToken,
    /// After this the server half may have been burnt at the dealer: drop it unused.
    usable_until: Instant,
}

/// The thread feeding a streamed half from the dealer's link: it gives the link back
/// with the bytes of the items it received.
type HalfFeed = JoinHandle<(Link, Result<u64>)>;

/// Starts streaming a half whose header came over `dealer`: a feed thread takes the
/// link and hands the items to the returned half, which the party consumes as they
/// arrive. If the party stops early the thread stops at its next item, dropping the
/// link (then mid-stream, of no further use).
fn stream_half(dealer: Link, material: PartyMaterial) -> Result<(PartyMaterial, HalfFeed)> {
    let (material, feeder) = material.into_streaming(STREAM_QUEUED_ITEMS);
    let feed = std::thread::Builder::new()
        .name("veil-client-material".into())
        .spawn(move || {
            let mut dealer = dealer;
            let received = feed_items(&mut dealer, feeder)
                .map_err(|error| error.during("waiting for the dealer's material"));
            (dealer, received)
        })
        .map_err(Error::io("starting the material feed"))?;
    Ok((material, feed))
}

/// A connected client: one client session with the server and one with the dealer.
pub struct Client {
    plan: PublicPlan,
    server: Link,
    /// The dealer's link; away while a feed thread streams a half over it, and gone
    /// for good after a query that failed mid-stream.
    dealer: Option<Link>,
    parameters: Arc<ClientParameters>,
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
            return Err(Error::PrefetchTooDeep {
                asked: options.prefetch_queries,
                max: MAX_HELD_HALVES,
            });
        }
        let plan_hash = plan.hash_hex()?;
        let mut server = transport.connect(server_address, Role::Server)?;
        let hello = Hello {
            role: Role::Client,
            plan_hash: plan_hash.clone(),
            epoch: 0,
            commitment: WeightCommitment::NONE,
            extension: vec![],
        };
        let server_hello = handshake(&mut server, &hello, Role::Server)?;
        let before = server.stats();
        let masked = server
            .recv()
            .map_err(Error::link("receiving the masked weights"))?;
        let setup_bytes = server.stats().since(&before).bytes_received;
        let weights = MaskedWeights::decode(&plan, &masked)?;
        // The client dials the dealer itself, never through the server; a simulated
        // network shapes the server link only.
        let mut dealer = transport.unshaped().connect(dealer_address, Role::Dealer)?;
        let extension = ClientExtension {
            batch: options.batch,
            prefetch: options.prefetch_queries as u64,
        };
        let hello = Hello {
            role: Role::Client,
            plan_hash,
            epoch: server_hello.epoch,
            commitment: server_hello.commitment,
            extension: extension.encode(),
        };
        let dealer_hello = handshake(&mut dealer, &hello, Role::Dealer)?;
        // The dealer must serve the server's epoch with the same weight seed.
        crate::handshake::check_dealer(&dealer_hello, server_hello.epoch, server_hello.commitment)?;
        let mut client = Self {
            plan,
            server,
            dealer: Some(dealer),
            parameters: Arc::new(ClientParameters::new(weights)),
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

    /// The dealer's link, unless an earlier query lost it.
    fn dealer(&mut self) -> Result<&mut Link> {
        self.dealer.as_mut().ok_or(Error::DealerLinkLost)
    }

    /// Asks the dealer for a query session: its answer (how long it stays claimable and
    /// its claim token), then our half's header.
    fn request_session(&mut self) -> Result<(PartyMaterial, Duration, ClaimToken)> {
        const WAITING: &str = "waiting for the dealer's session";
        let dealer = self.dealer()?;
        dealer.send(&SessionRequest.encode())?;
        let answer = dealer.recv().map_err(Error::link(WAITING))?;
        let (claimable, token) = match SessionAnswer::decode(&answer)? {
            SessionAnswer::Follows { claimable, token } => (claimable, token),
            SessionAnswer::Refused { reason } => return Err(Error::SessionRefused { reason }),
        };
        let material = PartyMaterial::decode(&dealer.recv().map_err(Error::link(WAITING))?)?;
        if Some(material.role()) != mpc_party(Role::Client) {
            return Err(PeerMisbehaved::WrongMaterial.into());
        }
        if material.batch() != self.options.batch {
            return Err(PeerMisbehaved::WrongMaterial.into());
        }
        Ok((material, claimable, token))
    }

    /// Receives the items of a half whose header has arrived.
    fn receive_half(&mut self, material: &mut PartyMaterial) -> Result<()> {
        receive_items(self.dealer()?, material)
            .map_err(|error| error.during("waiting for the dealer's material"))
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
            let (mut material, claimable, token) = self.request_session()?;
            self.receive_half(&mut material)?;
            let bytes = material.encoded_len();
            self.half_bytes = Some(bytes);
            if (held + bytes) as u64 > self.options.prefetch_bytes {
                // Over budget: dropped unused (its server half is burnt at the dealer).
                break;
            }
            // The server claims its half now, so the query finds both halves in place.
            let notice = ClientMessage::ClaimAhead {
                session_id: material.session_id(),
                token,
            };
            self.server.send(&notice.encode())?;
            let margin = (claimable / 4).min(Duration::from_secs(5));
            self.prefetched.push_back(Prefetched {
                material,
                token,
                usable_until: Instant::now() + claimable.saturating_sub(margin),
            });
        }
        Ok(())
    }

    /// Tells the server which session this query uses (with its claim token) and at
    /// what batch size.
    fn start_query(&mut self, session_id: u128, token: ClaimToken) -> Result<()> {
        let start = ClientMessage::QueryStart {
            session_id,
            token,
            batch: self.options.batch,
        };
        self.server.send(&start.encode())?;
        Ok(())
    }

    /// The client's side of one query: P1 of the two-party protocol over the server's
    /// link, every frame tagged with the session id, on the encoded inputs; every item
    /// of the half used. Returns the decoded output. The one place the client runs the
    /// protocol.
    fn run_client_query(
        &mut self,
        material: PartyMaterial,
        inputs: &[RingTensor],
    ) -> Result<Vec<f32>> {
        let tagged = SessionChannel::new(&mut self.server, material.session_id());
        let (output, _) = veil_exec::session::run_client(
            tagged,
            &self.plan,
            &self.parameters,
            material,
            &self.ledger,
            inputs,
            self.options.batch,
        )?;
        Ok(output)
    }

    /// Runs one query on a batch of inputs (row-major).
    pub fn query(&mut self, input: &[f32]) -> Result<QueryReport> {
        // A bad input is refused here, before any material is consumed.
        let inputs = veil_exec::encode_inputs(&self.plan, input, self.options.batch)?;
        let call_start = Instant::now();
        if let Some(remaining) = &mut self.options.expected_queries {
            *remaining = remaining.saturating_sub(1);
        }
        // A prefetched half is whole; otherwise the half streams: the server claims its
        // half by the session id while ours arrives, and both run as items come.
        self.drop_expired();
        let (material, feed) = match self.prefetched.pop_front() {
            Some(held) => {
                self.start_query(held.material.session_id(), held.token)?;
                (held.material, None)
            }
            None => {
                let (material, _, token) = self.request_session()?;
                self.start_query(material.session_id(), token)?;
                let header_bytes = material.encoded_len();
                let dealer = self.dealer.take().ok_or(Error::DealerLinkLost)?;
                let (material, feed) = stream_half(dealer, material)?;
                (material, Some((feed, header_bytes)))
            }
        };
        let warm = feed.is_none();
        let whole_bytes = material.encoded_len();
        let offline_seconds = call_start.elapsed().as_secs_f64();
        let ready = self
            .server
            .recv()
            .map_err(Error::link("waiting for the server to take its half"))?;
        Ready::decode(&ready)?;
        let before: ChannelStats = self.server.stats();
        let started = Instant::now();
        // On an error a feed thread still running stops at its next item (the half is
        // dropped); the dealer's link goes with it.
        let output = self.run_client_query(material, &inputs)?;
        let online_seconds = started.elapsed().as_secs_f64();
        let latency_seconds = call_start.elapsed().as_secs_f64();
        let used = self.server.stats().since(&before);
        let client_material_bytes = match feed {
            None => whole_bytes,
            Some((feed, header_bytes)) => {
                // The query used every item, so the stream has ended: the link is back.
                let (dealer, received) = feed.join().map_err(|_| Error::ThreadPanicked {
                    what: "material feed",
                })?;
                self.dealer = Some(dealer);
                header_bytes + received? as usize
            }
        };
        // Halves for the next queries, outside the latency. A failure here does not
        // lose this answer: prefetching stops and later queries fetch on demand.
        let prefetch_start = Instant::now();
        if let Err(error) = self.top_up() {
            warn!("client: prefetching stopped: {error}");
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
