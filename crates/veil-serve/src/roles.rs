//! The three roles of the `dealer` setting as long-running loops over TCP.
//!
//! - The **dealer** first accepts the server (which hands it the weight seed in its
//!   handshake), then serves clients one at a time: for every empty frame a client sends
//!   ("next query") it runs the executor over the public plan with the generating
//!   protocol and delivers each half to its own role: the server's half over the
//!   server connection, the client's over the client connection.
//! - The **server** connects to the dealer, then serves clients one at a time: a client
//!   session starts by sending D = W + B once (set-up); each query names its session id,
//!   the server takes the matching half from the dealer (burning stale halves), answers
//!   "ready" and runs the query. A failed session ends that client's connection only.
//! - The **client** connects to the server (learning the epoch and receiving D) and to
//!   the dealer directly, never through the server.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

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
use veil_net::{Channel, ChannelStats};

use crate::transport::{Link, Transport};

use crate::handshake::{Hello, Role, handshake};

/// Material travels in frames of at most this many bytes, under the channel's frame cap.
const MATERIAL_CHUNK_BYTES: usize = 64 << 20;

/// The largest material a party accepts for one query (16 GiB).
const MAX_MATERIAL_BYTES: u64 = 16 << 30;

/// Sends one streamed item: a header frame, then its words in chunks under the frame cap.
fn send_item(channel: &mut impl Channel, item: &MaterialItem) -> veil_net::Result<()> {
    channel.send(&item.encoded_header())?;
    for chunk in item.words().chunks(MATERIAL_CHUNK_BYTES / 8) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|word| word.to_le_bytes()).collect();
        channel.send(&bytes)?;
    }
    Ok(())
}

/// Receives one party's streamed material: its header, then items until an empty frame.
/// Every announced size is checked against a cap before allocating.
pub fn receive_material(channel: &mut impl Channel) -> Result<PartyMaterial> {
    let mut material = PartyMaterial::decode(&channel.recv()?)?;
    let mut total_words: u64 = 0;
    loop {
        let header = channel.recv()?;
        if header.is_empty() {
            return Ok(material);
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

/// How many stale server halves the server burns while looking for a session's half.
const MAX_STALE_HALVES: usize = 64;

/// What the dealer saw over its life.
#[derive(Clone, Copy, Debug, Default)]
pub struct DealerSummary {
    /// Queries whose material it made.
    pub queries: u64,
    /// Payload bytes received from clients and the server after their handshakes (the
    /// dealer receives nothing but empty flow-control frames: this must be 0).
    pub payload_bytes_received_after_handshake: u64,
}

/// Runs the dealer: one server, then up to `max_clients` client connections (forever
/// when `None`).
pub fn run_dealer(
    listener: TcpListener,
    plan: PublicPlan,
    max_clients: Option<usize>,
    transport: &Transport,
) -> Result<DealerSummary> {
    let plan_hash = plan.hash_hex()?;
    let fixed_point = plan.fixed_point()?;
    let ours = |epoch| Hello {
        role: Role::Dealer,
        plan_hash: plan_hash.clone(),
        epoch,
        extension: vec![],
    };
    // The first connection that completes a server handshake is the server; anything
    // else that arrives before it is turned away.
    let (mut server, server_hello) = loop {
        let mut candidate = match transport.accept(&listener, Role::Server) {
            Ok(candidate) => candidate,
            Err(error) => {
                warn!("dealer: refused a connection while waiting for the server: {error:#}");
                continue;
            }
        };
        match handshake(&mut candidate, &ours(0), Role::Server) {
            Ok(hello) => break (candidate, hello),
            Err(error) => {
                warn!("dealer: refused a connection while waiting for the server: {error:#}")
            }
        }
    };
    let seed_bytes: [u8; SEED_BYTES] = server_hello
        .extension
        .as_slice()
        .try_into()
        .context("the server's handshake must carry the 16-byte weight seed")?;
    let epoch = server_hello.epoch;
    let parameters = Arc::new(dealer_parameters(
        &plan,
        &Seed::from_bytes(seed_bytes),
        epoch,
    ));
    info!(epoch, "dealer: server connected");
    let server_after_handshake = server.stats();
    let mut summary = DealerSummary::default();
    let mut served = 0;
    while max_clients.is_none_or(|max| served < max) {
        served += 1;
        let mut client = match transport.accept(&listener, Role::Client) {
            Ok(client) => client,
            Err(error) => {
                warn!("dealer: refused a client connection: {error:#}");
                continue;
            }
        };
        let mut queries = 0;
        let result = (|| -> Result<u64> {
            let hello = handshake(&mut client, &ours(epoch), Role::Client)?;
            if hello.epoch != epoch {
                bail!(
                    "the client holds mask epoch {}, the dealer serves epoch {epoch}; reconnect to the server",
                    hello.epoch
                );
            }
            let batch = hello
                .extension
                .as_slice()
                .try_into()
                .map(u64::from_le_bytes)
                .context("the client's handshake must carry its batch size")?;
            let batch = usize::try_from(batch)
                .ok()
                .filter(|&b| (1..=1 << 16).contains(&b))
                .context("batch size out of range 1..=65536")?;
            let after_handshake = client.stats();
            loop {
                match client.recv() {
                    Ok(request) if request.is_empty() => {}
                    Ok(_) => bail!(
                        "the client sent a payload after the handshake; only empty flow-control frames are allowed"
                    ),
                    Err(veil_net::Error::PeerClosed) => break,
                    Err(error) => return Err(error.into()),
                }
                // Material is generated and delivered op by op: each item goes only to
                // its own role as soon as it is made, and is dropped (zeroised) once sent.
                let mut generator = MaterialGenerator::new(fixed_point, Arc::clone(&parameters))?;
                server.send(&generator.encoded_header(PartyRole::Server))?;
                client.send(&generator.encoded_header(PartyRole::Client))?;
                let (server_link, client_link) = (&mut server, &mut client);
                generator.stream_to(Box::new(move |role, item| {
                    let link: &mut Link = match role {
                        PartyRole::Server => server_link,
                        PartyRole::Client => client_link,
                    };
                    send_item(link, &item).map_err(veil_mpc::Error::from)
                }));
                run(&mut generator, &plan, batch, None)?;
                drop(generator);
                server.send(&[])?;
                client.send(&[])?;
                queries += 1;
            }
            let received = client.stats().since(&after_handshake);
            info!(
                queries,
                payload_bytes_received = received.payload_bytes_received,
                "dealer: client session ended"
            );
            Ok(received.payload_bytes_received)
        })();
        summary.queries += queries;
        match result {
            Ok(received) => summary.payload_bytes_received_after_handshake += received,
            Err(error) => warn!("dealer: client session failed: {error:#}"),
        }
    }
    summary.payload_bytes_received_after_handshake += server
        .stats()
        .since(&server_after_handshake)
        .payload_bytes_received;
    Ok(summary)
}

/// The server's state for one plan and epoch.
pub struct ServerState {
    plan: Plan,
    parameters: PartyParameters,
    masked_weights: Vec<u8>,
    epoch: u64,
    weight_seed: Seed,
}

impl ServerState {
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
}

/// Runs the server: connects to the dealer, then serves up to `max_clients` clients.
pub fn run_server(
    listener: TcpListener,
    dealer_address: &str,
    state: ServerState,
    max_clients: Option<usize>,
    transport: &Transport,
) -> Result<ServerSummary> {
    let public = &state.plan.public;
    let plan_hash = public.hash_hex()?;
    let fixed_point = public.fixed_point()?;
    // A simulated network shapes the client links only: dealer traffic is not online.
    let mut dealer = transport.unshaped().connect(dealer_address, Role::Dealer)?;
    let hello = Hello {
        role: Role::Server,
        plan_hash: plan_hash.clone(),
        epoch: state.epoch,
        extension: state.weight_seed.to_bytes().to_vec(),
    };
    handshake(&mut dealer, &hello, Role::Dealer)?;
    let after_handshake = dealer.stats();
    let ledger = SessionLedger::default();
    let mut summary = ServerSummary::default();
    let mut served = 0;
    while max_clients.is_none_or(|max| served < max) {
        served += 1;
        let mut client = match transport.accept(&listener, Role::Client) {
            Ok(client) => client,
            Err(error) => {
                summary.failed_sessions += 1;
                warn!("server: refused a client connection: {error:#}");
                continue;
            }
        };
        let result = (|| -> Result<()> {
            let ours = Hello {
                role: Role::Server,
                plan_hash: plan_hash.clone(),
                epoch: state.epoch,
                extension: vec![],
            };
            handshake(&mut client, &ours, Role::Client)?;
            // Client session set-up: D = W + B, once.
            client.send(&state.masked_weights)?;
            loop {
                let request = match client.recv() {
                    Ok(request) => request,
                    Err(veil_net::Error::PeerClosed) => return Ok(()),
                    Err(error) => return Err(error.into()),
                };
                let (session_id, batch) = parse_query_start(&request)?;
                let material = take_server_half(&mut dealer, session_id)?;
                summary.material_bytes = material.encoded_len();
                client.send(&[])?;
                let started = Instant::now();
                let before = client.stats();
                let mut party = Party::new(
                    &mut client,
                    fixed_point,
                    material,
                    state.parameters.clone(),
                    &ledger,
                )?;
                run(&mut party, public, batch, None)?;
                party.finish()?;
                let used = client.stats().since(&before);
                summary.queries += 1;
                info!(
                    batch,
                    seconds = started.elapsed().as_secs_f64(),
                    bytes_sent = used.bytes_sent,
                    "server: query done"
                );
            }
        })();
        if let Err(error) = result {
            summary.failed_sessions += 1;
            warn!("server: client session failed: {error:#}");
        }
    }
    summary.payload_bytes_sent_to_dealer =
        dealer.stats().since(&after_handshake).payload_bytes_sent;
    info!(queries = summary.queries, "server: done");
    Ok(summary)
}

/// This process's peak resident set size (Linux `VmHWM`), in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    let kilobytes: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kilobytes * 1024)
}

fn parse_query_start(request: &[u8]) -> Result<(u128, usize)> {
    if request.len() != 24 {
        bail!(
            "a query must start with a 24-byte header (session id, batch), got {} bytes",
            request.len()
        );
    }
    let session_id = u128::from_le_bytes(request[..16].try_into().context("short header")?);
    let batch = u64::from_le_bytes(request[16..].try_into().context("short header")?);
    let batch = usize::try_from(batch)
        .ok()
        .filter(|&b| (1..=1 << 16).contains(&b))
        .context("batch size out of range 1..=65536")?;
    Ok((session_id, batch))
}

/// Reads server halves from the dealer until the one for `session_id`; stale halves
/// (sessions whose client vanished) are burnt.
fn take_server_half(dealer: &mut Link, session_id: u128) -> Result<PartyMaterial> {
    for _ in 0..MAX_STALE_HALVES {
        let material = receive_material(dealer).context("waiting for the dealer's material")?;
        if material.session_id() == session_id {
            return Ok(material);
        }
        warn!("server: burning a stale preprocessing half");
    }
    bail!(
        "the dealer did not deliver this session's material; the client may be talking to another dealer"
    )
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
    /// Time to get this query's material from the dealer.
    pub offline_seconds: f64,
}

/// A connected client: one client session with the server and one with the dealer.
pub struct Client {
    plan: PublicPlan,
    server: Link,
    dealer: Link,
    parameters: PartyParameters,
    ledger: SessionLedger,
    batch: usize,
    /// Bytes received from the server during set-up (D).
    pub setup_bytes: u64,
}

impl Client {
    /// Connects to the server (set-up: receives D) and to the dealer.
    pub fn connect(
        plan: PublicPlan,
        server_address: &str,
        dealer_address: &str,
        batch: usize,
        transport: &Transport,
    ) -> Result<Self> {
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
        let hello = Hello {
            role: Role::Client,
            plan_hash,
            epoch: server_hello.epoch,
            extension: (batch as u64).to_le_bytes().to_vec(),
        };
        handshake(&mut dealer, &hello, Role::Dealer)?;
        Ok(Self {
            plan,
            server,
            dealer,
            parameters: PartyParameters::Client(Arc::new(ClientParameters::new(weights))),
            ledger: SessionLedger::default(),
            batch,
            setup_bytes,
        })
    }

    /// Runs one query on a batch of inputs (row-major).
    pub fn query(&mut self, input: &[f32]) -> Result<QueryReport> {
        // Preprocessing first: both parties hold their halves before the timed window.
        let offline_start = Instant::now();
        self.dealer.send(&[])?;
        let material =
            receive_material(&mut self.dealer).context("waiting for the dealer's material")?;
        let offline_seconds = offline_start.elapsed().as_secs_f64();
        let client_material_bytes = material.encoded_len();
        let mut start = material.session_id().to_le_bytes().to_vec();
        start.extend_from_slice(&(self.batch as u64).to_le_bytes());
        self.server.send(&start)?;
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
        let encoded = veil_exec::encode_input(&self.plan, input, self.batch)?;
        let mut party = Party::new(
            &mut self.server,
            fixed_point,
            material,
            self.parameters.clone(),
            &self.ledger,
        )?;
        let output = run(&mut party, &self.plan, self.batch, Some(&encoded))?
            .context("the client receives the output")?;
        party.finish()?;
        let output = veil_exec::decode_output(&self.plan, &output)?;
        let online_seconds = started.elapsed().as_secs_f64();
        let used = self.server.stats().since(&before);
        Ok(QueryReport {
            output,
            online_seconds,
            client_sent_bytes: used.bytes_sent,
            server_sent_bytes: used.bytes_received,
            rounds: used.rounds,
            client_material_bytes,
            offline_seconds,
        })
    }
}
