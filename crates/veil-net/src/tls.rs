//! Mutual TLS between parties, with the party's role bound into its certificate.
//!
//! Every certificate of a deployment is issued by the deployment's CA and carries its
//! role as a URI subject-alternative name (`urn:veil:role:server`, `…:client`,
//! `…:dealer`, `…:helper`). Both sides present certificates (mutual TLS 1.3, rustls
//! with the ring provider), both check the peer's chain against the CA, and then each
//! checks the peer's *role*, not only its CA: a client certificate cannot act as a
//! server or dealer.
//!
//! [`TlsChannel`] is a [`Channel`]: one I/O thread per connection owns the TLS
//! session and the non-blocking socket (mio), so `send` never waits for the peer and
//! `exchange` is full duplex. Byte accounting counts frames (payload and headers), not
//! TLS records.
//!
//! Receiving is flow-controlled: the I/O thread stops reading the socket while
//! [`INCOMING_QUEUE_BYTES`] of complete frames wait for `recv`, so a peer that sends
//! faster than this side consumes (the dealer streaming material) is held back by TCP,
//! and this side holds a bounded amount of what it has not yet read.
//!
//! Sending can be bounded too ([`TcpOptions::send_queue_bytes`], which the dealer
//! uses): `send` then waits while that many bytes wait for the I/O thread, and the I/O
//! thread hands TLS a new frame only once the last one has reached the socket, so a
//! peer that never reads holds a bounded amount of this side's memory, and a sender
//! (the dealer's generation) is paced by delivery. A dropped channel gives its I/O
//! thread [`CLOSE_FLUSH`] to flush what is queued, and then closes regardless.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::frame::{FRAME_HEADER_BYTES, header};
use crate::{Channel, ChannelStats, Error, Result, Role, TcpOptions};

/// The DNS name every party certificate carries; identity is the role, below.
pub const PARTY_DNS_NAME: &str = "veil-party";
const ROLE_URI_PREFIX: &str = "urn:veil:role:";

/// The I/O thread reads no more from the socket while this many bytes of complete frames
/// wait for `recv` (one frame is always let through, whatever its size).
pub const INCOMING_QUEUE_BYTES: usize = 8 << 20;

/// What one queued frame costs beyond its payload, as the flow control counts it (so a
/// flood of empty frames is held back too, not queued without bound).
const QUEUED_FRAME_OVERHEAD: usize = 64;

/// The URI subject-alternative name that states `role` in a certificate.
fn role_uri(role: Role) -> String {
    format!("{ROLE_URI_PREFIX}{}", role.name())
}

fn tls_error(context: &'static str) -> impl Fn(String) -> Error {
    move |reason| Error::Tls { context, reason }
}

/// A deployment's CA and one certificate per role, in PEM.
pub struct DeploymentCertificates {
    /// The CA certificate (public; every party trusts it).
    pub ca_certificate: String,
    /// Per role: (role, certificate, private key). The keys are secret.
    pub parties: Vec<(Role, String, String)>,
}

impl std::fmt::Debug for DeploymentCertificates {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("DeploymentCertificates(<keys not shown>)")
    }
}

/// Makes a fresh CA and a certificate for each of `roles`, signed by it.
pub fn generate_certificates(roles: &[Role]) -> Result<DeploymentCertificates> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, SanType};
    let error = tls_error("generating certificates");
    let ca_key = KeyPair::generate().map_err(|e| error(e.to_string()))?;
    let mut ca_params =
        CertificateParams::new(Vec::<String>::new()).map_err(|e| error(e.to_string()))?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "veil deployment CA");
    let ca_certificate = ca_params
        .self_signed(&ca_key)
        .map_err(|e| error(e.to_string()))?;
    let issuer = Issuer::new(ca_params, ca_key);
    let mut parties = Vec::new();
    for &role in roles {
        let key = KeyPair::generate().map_err(|e| error(e.to_string()))?;
        let mut params = CertificateParams::new(vec![PARTY_DNS_NAME.to_string()])
            .map_err(|e| error(e.to_string()))?;
        let uri = role_uri(role)
            .try_into()
            .map_err(|e: rcgen::Error| error(e.to_string()))?;
        params.subject_alt_names.push(SanType::URI(uri));
        params
            .distinguished_name
            .push(DnType::CommonName, format!("veil {}", role.name()));
        let certificate = params
            .signed_by(&key, &issuer)
            .map_err(|e| error(e.to_string()))?;
        parties.push((role, certificate.pem(), key.serialize_pem()));
    }
    Ok(DeploymentCertificates {
        ca_certificate: ca_certificate.pem(),
        parties,
    })
}

/// One party's TLS identity: the deployment CA, its certificate chain and key.
#[derive(Clone)]
pub struct TlsIdentity {
    server_config: Arc<rustls::ServerConfig>,
    client_config: Arc<rustls::ClientConfig>,
    role: Role,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(formatter, "TlsIdentity {{ role: {:?} }}", self.role)
    }
}

impl TlsIdentity {
    /// Builds an identity from PEM: the CA certificate, this party's certificate and its
    /// key. The certificate must state a role.
    pub fn from_pem(ca_certificate: &[u8], certificate: &[u8], key: &[u8]) -> Result<Self> {
        let error = tls_error("loading the TLS identity");
        let ca = CertificateDer::from_pem_slice(ca_certificate)
            .map_err(|e| error(format!("the CA certificate: {e}")))?;
        let chain = vec![
            CertificateDer::from_pem_slice(certificate)
                .map_err(|e| error(format!("the certificate: {e}")))?,
        ];
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| error(format!("the key: {e}")))?;
        let role = certificate_role(&chain[0])?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca)
            .map_err(|e| error(format!("the CA certificate: {e}")))?;
        let roots = Arc::new(roots);
        let client_verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::clone(&roots),
            Arc::clone(&provider),
        )
        .build()
        .map_err(|e| error(e.to_string()))?;
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| error(e.to_string()))?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| error(e.to_string()))?;
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| error(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| error(e.to_string()))?;
        Ok(Self {
            server_config: Arc::new(server_config),
            client_config: Arc::new(client_config),
            role,
        })
    }

    /// The role this identity's certificate states.
    pub fn role(&self) -> Role {
        self.role
    }
}

/// The role in a certificate's URI subject-alternative name.
fn certificate_role(certificate: &CertificateDer<'_>) -> Result<Role> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let error = tls_error("reading a certificate's role");
    let (_, parsed) =
        X509Certificate::from_der(certificate.as_ref()).map_err(|e| error(e.to_string()))?;
    let names = parsed
        .subject_alternative_name()
        .map_err(|e| error(e.to_string()))?
        .ok_or_else(|| error("the certificate has no subject-alternative names".into()))?;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            GeneralName::URI(uri) => uri.strip_prefix(ROLE_URI_PREFIX).and_then(Role::from_name),
            _ => None,
        })
        .ok_or_else(|| error("the certificate states no veil role (a urn:veil:role: URI)".into()))
}

/// How long a closing channel's I/O thread tries to flush what is queued to a peer that
/// does not read, before it closes the socket anyway.
pub const CLOSE_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

const SOCKET: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);

/// A framed, mutually authenticated TLS connection to a peer of a known role.
pub struct TlsChannel {
    outgoing: Option<Sender<Vec<u8>>>,
    incoming: Receiver<Result<Vec<u8>>>,
    /// Bytes of the frames in `incoming`, shared with the I/O thread.
    queued: Arc<AtomicUsize>,
    /// Bytes of the frames sent and not yet taken by the I/O thread.
    sending: Arc<AtomicUsize>,
    waker: Arc<mio::Waker>,
    io_thread: Option<JoinHandle<()>>,
    peer_role: Role,
    peer: Option<SocketAddr>,
    stats: ChannelStats,
    options: TcpOptions,
}

impl std::fmt::Debug for TlsChannel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TlsChannel")
            .field("peer_role", &self.peer_role)
            .field("peer", &self.peer)
            .field("stats", &self.stats)
            .finish()
    }
}

impl TlsChannel {
    /// Connects to `address` and runs the TLS handshake; the peer must prove one of
    /// `expected` roles.
    pub fn connect(
        address: &str,
        identity: &TlsIdentity,
        expected: &[Role],
        options: TcpOptions,
    ) -> Result<Self> {
        let stream = std::net::TcpStream::connect(address).map_err(|source| Error::Io {
            context: "connecting to the peer",
            source,
        })?;
        let name = ServerName::try_from(PARTY_DNS_NAME).map_err(|e| Error::Tls {
            context: "connecting",
            reason: e.to_string(),
        })?;
        let connection = rustls::ClientConnection::new(Arc::clone(&identity.client_config), name)
            .map_err(|e| Error::Tls {
            context: "connecting",
            reason: e.to_string(),
        })?;
        Self::start(
            stream,
            rustls::Connection::Client(connection),
            expected,
            options,
        )
    }

    /// Accepts one connection on `listener` and runs the TLS handshake; the peer must
    /// prove one of `expected` roles.
    pub fn accept(
        listener: &std::net::TcpListener,
        identity: &TlsIdentity,
        expected: &[Role],
        options: TcpOptions,
    ) -> Result<Self> {
        let (stream, _) = listener.accept().map_err(|source| Error::Io {
            context: "accepting a connection",
            source,
        })?;
        Self::accept_stream(stream, identity, expected, options)
    }

    /// Runs the server side of the TLS handshake on a connection accepted elsewhere; the
    /// peer must prove one of `expected` roles.
    pub fn accept_stream(
        stream: std::net::TcpStream,
        identity: &TlsIdentity,
        expected: &[Role],
        options: TcpOptions,
    ) -> Result<Self> {
        let connection = rustls::ServerConnection::new(Arc::clone(&identity.server_config))
            .map_err(|e| Error::Tls {
                context: "accepting",
                reason: e.to_string(),
            })?;
        Self::start(
            stream,
            rustls::Connection::Server(connection),
            expected,
            options,
        )
    }

    /// The role the peer proved with its certificate.
    pub fn peer_role(&self) -> Role {
        self.peer_role
    }

    fn start(
        stream: std::net::TcpStream,
        mut connection: rustls::Connection,
        expected: &[Role],
        options: TcpOptions,
    ) -> Result<Self> {
        // The frame queue is the flow control; let TLS buffer whatever is queued.
        connection.set_buffer_limit(None);
        let io_error = |context| move |source| Error::Io { context, source };
        let peer = stream.peer_addr().ok();
        stream
            .set_nodelay(true)
            .map_err(io_error("configuring the socket"))?;
        stream
            .set_nonblocking(true)
            .map_err(io_error("configuring the socket"))?;
        let mut socket = mio::net::TcpStream::from_std(stream);
        let poll = mio::Poll::new().map_err(io_error("creating the poller"))?;
        poll.registry()
            .register(
                &mut socket,
                SOCKET,
                mio::Interest::READABLE | mio::Interest::WRITABLE,
            )
            .map_err(io_error("registering the socket"))?;
        let waker = Arc::new(
            mio::Waker::new(poll.registry(), WAKE).map_err(io_error("creating the waker"))?,
        );
        let (outgoing, queue) = channel::<Vec<u8>>();
        let (sink, incoming) = channel::<Result<Vec<u8>>>();
        let (handshake_done, handshake) = channel::<Result<Role>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let pump_queued = Arc::clone(&queued);
        let sending = Arc::new(AtomicUsize::new(0));
        let pump_sending = Arc::clone(&sending);
        let bounded = options.send_queue_bytes.is_some();
        let max_frame_bytes = options.max_frame_bytes;
        let io_thread = std::thread::Builder::new()
            .name("veil-net-tls".into())
            .spawn(move || {
                let mut pump = Pump {
                    connection,
                    socket,
                    poll,
                    queue,
                    sink,
                    queued: pump_queued,
                    sending: pump_sending,
                    bounded,
                    handshake_done: Some(handshake_done),
                    inbox: Vec::new(),
                    max_frame_bytes,
                };
                if let Err(error) = pump.run() {
                    if let Some(done) = pump.handshake_done.take() {
                        let _ = done.send(Err(error));
                    } else {
                        let _ = pump.sink.send(Err(error));
                    }
                }
            })
            .map_err(io_error("starting the TLS thread"))?;
        let peer_role = match handshake.recv_timeout(options.read_timeout) {
            Ok(result) => result?,
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::Timeout {
                    seconds: options.read_timeout.as_secs(),
                });
            }
            Err(RecvTimeoutError::Disconnected) => return Err(Error::PeerClosed),
        };
        let channel = Self {
            outgoing: Some(outgoing),
            incoming,
            queued,
            sending,
            waker,
            io_thread: Some(io_thread),
            peer_role,
            peer,
            stats: ChannelStats::default(),
            options,
        };
        if !expected.contains(&peer_role) {
            return Err(Error::WrongPeerRole {
                expected: expected
                    .iter()
                    .map(|r| r.name())
                    .collect::<Vec<_>>()
                    .join(" or "),
                found: peer_role.name(),
            });
        }
        Ok(channel)
    }
}

/// The I/O thread's state: the TLS session and socket, the frames to send, and the
/// plaintext received but not yet split into frames.
struct Pump {
    connection: rustls::Connection,
    socket: mio::net::TcpStream,
    poll: mio::Poll,
    queue: Receiver<Vec<u8>>,
    sink: Sender<Result<Vec<u8>>>,
    /// Bytes of the frames in `sink` not yet taken by `recv`.
    queued: Arc<AtomicUsize>,
    /// Bytes of the frames in `queue` not yet taken.
    sending: Arc<AtomicUsize>,
    /// Whether sending is bounded: then a frame is taken only once TLS has written the
    /// last one to the socket.
    bounded: bool,
    handshake_done: Option<Sender<Result<Role>>>,
    inbox: Vec<u8>,
    max_frame_bytes: usize,
}

impl Pump {
    fn run(&mut self) -> Result<()> {
        let tls = |reason: String| Error::Tls {
            context: "the TLS session",
            reason,
        };
        let mut events = mio::Events::with_capacity(8);
        let mut closing: Option<std::time::Instant> = None;
        loop {
            // Frames the compute thread queued (bounded: one at a time, once TLS has
            // written the last to the socket).
            let mut deferred = false;
            loop {
                if self.bounded && closing.is_none() && self.connection.wants_write() {
                    // Looked at again once TLS has flushed (the queue may hold frames, or
                    // have been closed).
                    deferred = true;
                    break;
                }
                match self.queue.try_recv() {
                    Ok(frame) => {
                        self.sending.fetch_sub(frame.len(), Ordering::AcqRel);
                        self.connection
                            .writer()
                            .write_all(&frame)
                            .map_err(|e| tls(e.to_string()))?
                    }
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                        if closing.is_none() {
                            self.connection.send_close_notify();
                            closing = Some(std::time::Instant::now() + CLOSE_FLUSH);
                        }
                        break;
                    }
                }
            }
            // Write what TLS has ready, until the socket would block.
            let mut blocked = false;
            while self.connection.wants_write() {
                match self.connection.write_tls(&mut self.socket) {
                    Ok(_) => {}
                    Err(error) if error.kind() == ErrorKind::WouldBlock => {
                        blocked = true;
                        break;
                    }
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return Err(Error::PeerClosed),
                }
            }
            if let Some(deadline) = closing
                && (!self.connection.wants_write() || std::time::Instant::now() >= deadline)
            {
                let _ = self.socket.shutdown(std::net::Shutdown::Write);
                return Ok(());
            }
            // Read until the socket would block, or until enough frames wait for `recv`
            // (which wakes this thread when it has taken them).
            while self.queued.load(Ordering::Acquire) < INCOMING_QUEUE_BYTES {
                match self.connection.read_tls(&mut self.socket) {
                    Ok(0) => {
                        self.deliver()?;
                        return Err(if self.inbox.is_empty() {
                            Error::PeerClosed
                        } else {
                            Error::Truncated {
                                expected: FRAME_HEADER_BYTES.max(self.inbox.len() + 1),
                                received: self.inbox.len(),
                            }
                        });
                    }
                    Ok(_) => {
                        self.connection
                            .process_new_packets()
                            .map_err(|e| tls(e.to_string()))?;
                        self.deliver()?;
                    }
                    Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                    Err(error) if error.kind() == ErrorKind::Interrupted => {}
                    Err(_) => return Err(Error::PeerClosed),
                }
            }
            if let Some(done) = self
                .handshake_done
                .take_if(|_| !self.connection.is_handshaking())
            {
                let role = self
                    .connection
                    .peer_certificates()
                    .and_then(|certificates| certificates.first())
                    .ok_or_else(|| tls("the peer presented no certificate".into()))
                    .and_then(certificate_role);
                let failed = role.is_err();
                let _ = done.send(role);
                if failed {
                    return Ok(());
                }
            }
            // More to write and the socket took the last: go on. A blocked socket wakes
            // the poll when it is writable again (spinning on it would burn a core for
            // a peer that does not read).
            // Bounded sending takes one frame per pass: go on while more are queued and
            // the socket takes them (their wake-ups may have been spent already).
            let more_queued = self.bounded && self.sending.load(Ordering::Acquire) > 0;
            if closing.is_none()
                && !blocked
                && (self.connection.wants_write() || more_queued || deferred)
            {
                continue;
            }
            let timeout = closing
                .map(|deadline| deadline.saturating_duration_since(std::time::Instant::now()));
            self.poll
                .poll(&mut events, timeout)
                .map_err(|source| Error::Io {
                    context: "waiting for the socket",
                    source,
                })?;
        }
    }

    /// Moves decrypted bytes into the inbox and complete frames to the compute thread.
    fn deliver(&mut self) -> Result<()> {
        let mut buffer = [0u8; 1 << 16];
        loop {
            match self.connection.reader().read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => self.inbox.extend_from_slice(&buffer[..read]),
                Err(error) if error.kind() == ErrorKind::WouldBlock => break,
                Err(error) => {
                    return Err(Error::Tls {
                        context: "reading decrypted data",
                        reason: error.to_string(),
                    });
                }
            }
        }
        let mut start = 0;
        while self.inbox.len() - start >= FRAME_HEADER_BYTES {
            let mut length = [0u8; FRAME_HEADER_BYTES];
            length.copy_from_slice(&self.inbox[start..start + FRAME_HEADER_BYTES]);
            let length = u32::from_le_bytes(length) as usize;
            if length > self.max_frame_bytes {
                return Err(Error::FrameTooLarge {
                    length: length as u64,
                    cap: self.max_frame_bytes,
                });
            }
            if self.inbox.len() - start - FRAME_HEADER_BYTES < length {
                break;
            }
            let body = start + FRAME_HEADER_BYTES;
            self.queued
                .fetch_add(length + QUEUED_FRAME_OVERHEAD, Ordering::AcqRel);
            let _ = self.sink.send(Ok(self.inbox[body..body + length].to_vec()));
            start = body + length;
        }
        self.inbox.drain(..start);
        Ok(())
    }
}

impl Channel for TlsChannel {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        let mut frame = Vec::with_capacity(payload.len() + FRAME_HEADER_BYTES);
        frame.extend_from_slice(&header(payload.len()));
        frame.extend_from_slice(payload);
        if let Some(limit) = self.options.send_queue_bytes {
            // Wait for room: a peer that does not read holds back this side's sends.
            let deadline = std::time::Instant::now() + self.options.read_timeout;
            let mut pause = std::time::Duration::from_micros(100);
            loop {
                let waiting = self.sending.load(Ordering::Acquire);
                if waiting == 0 || waiting + frame.len() <= limit {
                    break;
                }
                if std::time::Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        seconds: self.options.read_timeout.as_secs(),
                    });
                }
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(5));
            }
        }
        self.sending.fetch_add(frame.len(), Ordering::AcqRel);
        self.outgoing
            .as_ref()
            .ok_or(Error::PeerClosed)?
            .send(frame)
            .map_err(|_| Error::PeerClosed)?;
        self.waker.wake().map_err(|source| Error::Io {
            context: "waking the TLS thread",
            source,
        })?;
        self.stats.record_send(payload.len());
        Ok(())
    }

    fn recv(&mut self) -> Result<Vec<u8>> {
        let timeout = self.options.read_timeout;
        let payload = match self.incoming.recv_timeout(timeout) {
            Ok(Ok(frame)) => {
                let cost = frame.len() + QUEUED_FRAME_OVERHEAD;
                let before = self.queued.fetch_sub(cost, Ordering::AcqRel);
                if before >= INCOMING_QUEUE_BYTES && before - cost < INCOMING_QUEUE_BYTES {
                    // The I/O thread paused reading: let it read on.
                    self.waker.wake().map_err(|source| Error::Io {
                        context: "waking the TLS thread",
                        source,
                    })?;
                }
                frame
            }
            Ok(Err(error)) => return Err(error),
            Err(RecvTimeoutError::Timeout) => {
                return Err(Error::Timeout {
                    seconds: timeout.as_secs(),
                });
            }
            Err(RecvTimeoutError::Disconnected) => return Err(Error::PeerClosed),
        };
        self.stats.record_receive(payload.len());
        Ok(payload)
    }

    fn stats(&self) -> ChannelStats {
        self.stats
    }
}

impl Drop for TlsChannel {
    fn drop(&mut self) {
        // Closing the queue makes the I/O thread flush, send close_notify and stop.
        drop(self.outgoing.take());
        let _ = self.waker.wake();
        if let Some(thread) = self.io_thread.take() {
            let _ = thread.join();
        }
    }
}

/// How long tests wait.
#[cfg(test)]
const TEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

#[cfg(test)]
mod tests {
    use super::*;

    fn identities() -> (TlsIdentity, TlsIdentity, TlsIdentity) {
        let certificates =
            generate_certificates(&[Role::Server, Role::Client, Role::Dealer]).unwrap();
        let load = |index: usize| {
            let (_, certificate, key) = &certificates.parties[index];
            TlsIdentity::from_pem(
                certificates.ca_certificate.as_bytes(),
                certificate.as_bytes(),
                key.as_bytes(),
            )
            .unwrap()
        };
        (load(0), load(1), load(2))
    }

    fn options() -> TcpOptions {
        TcpOptions {
            read_timeout: TEST_TIMEOUT,
            ..TcpOptions::default()
        }
    }

    fn pair(
        acceptor: TlsIdentity,
        accept_roles: Vec<Role>,
        connector: TlsIdentity,
        connect_roles: Vec<Role>,
    ) -> (Result<TlsChannel>, Result<TlsChannel>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accept = std::thread::spawn(move || {
            TlsChannel::accept(&listener, &acceptor, &accept_roles, options())
        });
        let connected = TlsChannel::connect(&address, &connector, &connect_roles, options());
        (accept.join().unwrap(), connected)
    }

    #[test]
    fn mutual_tls_carries_frames_both_ways_and_proves_roles() {
        let (server, client, _) = identities();
        let (accepted, connected) = pair(server, vec![Role::Client], client, vec![Role::Server]);
        let (mut accepted, mut connected) = (accepted.unwrap(), connected.unwrap());
        assert_eq!(accepted.peer_role(), Role::Client);
        assert_eq!(connected.peer_role(), Role::Server);
        let size = 8 << 20;
        let peer = std::thread::spawn(move || {
            let got = accepted.exchange(&vec![2u8; size]).unwrap();
            (got.len(), accepted.stats())
        });
        let got = connected.exchange(&vec![1u8; size]).unwrap();
        let (peer_got, peer_stats) = peer.join().unwrap();
        assert_eq!((got.len(), peer_got), (size, size));
        assert!(got.iter().all(|&b| b == 2));
        assert_eq!(peer_stats.bytes_received, size as u64 + 4);
    }

    /// Bounded sending: to a peer that never reads, `send` stops queueing at the bound
    /// (TCP and the peer's own flow control hold the rest back) and then fails with a
    /// timeout instead of holding ever more; a reader then gets every frame in order; and
    /// a frame larger than the bound still goes through on its own.
    #[test]
    fn bounded_sends_stop_at_the_bound_for_a_peer_that_does_not_read() {
        let (server, client, _) = identities();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let bounded = TcpOptions {
            read_timeout: std::time::Duration::from_secs(1),
            send_queue_bytes: Some(1 << 20),
            ..options()
        };
        let accept = std::thread::spawn(move || {
            TlsChannel::accept(&listener, &server, &[Role::Client], bounded)
        });
        let mut reader =
            TlsChannel::connect(&address, &client, &[Role::Server], options()).unwrap();
        let mut sender = accept.join().unwrap().unwrap();
        let frame = vec![7u8; 64 << 10];
        let mut sent = 0usize;
        let error = loop {
            match sender.send(&frame) {
                Ok(()) => sent += 1,
                Err(error) => break error,
            }
            assert!(sent < 100_000, "sending never stopped");
        };
        assert!(matches!(error, Error::Timeout { .. }), "{error}");
        assert!(sender.sending.load(Ordering::Acquire) <= 1 << 20);
        // Whatever was sent arrives, in order, once the peer reads.
        for _ in 0..sent {
            assert_eq!(reader.recv().unwrap(), frame);
        }
        let large = vec![9u8; 3 << 20];
        sender.send(&large).unwrap();
        assert_eq!(reader.recv().unwrap(), large);
    }

    #[test]
    fn a_receiver_that_does_not_read_holds_back_the_sender() {
        let (server, client, _) = identities();
        let (accepted, connected) = pair(server, vec![Role::Client], client, vec![Role::Server]);
        let (mut accepted, mut connected) = (accepted.unwrap(), connected.unwrap());
        let (frames, size) = (64, 1 << 20);
        for index in 0..frames {
            connected.send(&vec![index as u8; size]).unwrap();
        }
        // Give the I/O threads time to move whatever they may.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let waiting = accepted.queued.load(Ordering::Acquire);
        assert!(
            waiting < INCOMING_QUEUE_BYTES + size,
            "{waiting} bytes queued unread"
        );
        for index in 0..frames {
            let frame = accepted.recv().unwrap();
            assert_eq!(frame.len(), size);
            assert!(frame.iter().all(|&byte| byte == index as u8));
        }
        assert_eq!(accepted.queued.load(Ordering::Acquire), 0);
    }

    #[test]
    fn a_client_certificate_cannot_act_as_a_server() {
        let (_, client, dealer) = identities();
        // The dealer expects a server; a client certificate connects.
        let (accepted, _connected) = pair(dealer, vec![Role::Server], client, vec![Role::Dealer]);
        assert!(
            matches!(accepted, Err(Error::WrongPeerRole { .. })),
            "{accepted:?}"
        );
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let (server, _, _) = identities();
        let (_, stranger, _) = identities();
        let (accepted, connected) = pair(server, vec![Role::Client], stranger, vec![Role::Server]);
        assert!(accepted.is_err() || connected.is_err());
        assert!(accepted.is_err(), "the server must refuse the stranger");
    }

    #[test]
    fn keys_do_not_print() {
        let certificates = generate_certificates(&[Role::Client]).unwrap();
        assert!(!format!("{certificates:?}").contains("PRIVATE"));
    }
}
