//! Mutual TLS between parties, with the party's role and name bound into its
//! certificate, and trust roots chosen per peer role.
//!
//! Every party certificate carries its role as a URI subject-alternative name
//! (`urn:veil:role:server`, `…:client`, `…:dealer`, `…:helper`) and may carry a name
//! (`urn:veil:name:NAME`; every client has one, so each client is told apart from the
//! others). Both sides present certificates (mutual TLS 1.3, rustls with the ring
//! provider). A party holds [`TrustRoots`]: for each role of peer it talks to, the CA
//! certificates it trusts *for that role* (and their revocation lists). A peer's
//! certificate is verified against the roots of the role it states and no others, and
//! then the role must be one the connection expects: a certificate from the model
//! owner's CA cannot pass as the dealer's, and a client certificate cannot act as a
//! server or dealer.
//!
//! [`TlsChannel`] is a [`Channel`]: one I/O thread per connection owns the TLS
//! session and the non-blocking socket (mio), so `send` never waits for the peer and
//! `exchange` is full duplex. Byte accounting counts frames (payload and headers), not
//! TLS records.
//!
//! The handshake has a deadline ([`TcpOptions::handshake_timeout`]): a peer that has not
//! finished it in time (one that connects and sends nothing, or stalls half-way) is
//! disconnected, its socket closed and the I/O thread ended. TCP keepalive is on for
//! every connection ([`TcpOptions::keepalive`]).
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

use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::thread::JoinHandle;
use std::time::Instant;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime,
};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use zeroize::Zeroize;

use crate::frame::{FRAME_HEADER_BYTES, header};
use crate::tcp::{configure_keepalive, connect_within};
use crate::{Channel, ChannelStats, Error, Result, Role, TcpOptions};

/// The DNS name every party certificate carries; identity is the role and name, below.
pub const PARTY_DNS_NAME: &str = "veil-party";
/// The prefix of the URI subject-alternative name that states a certificate's role.
pub const ROLE_URI_PREFIX: &str = "urn:veil:role:";
/// The prefix of the URI subject-alternative name that states a party's name.
pub const NAME_URI_PREFIX: &str = "urn:veil:name:";
/// The longest party name.
pub const MAX_NAME_BYTES: usize = 64;

/// The I/O thread reads no more from the socket while this many bytes of complete frames
/// wait for `recv` (one frame is always let through, whatever its size).
pub const INCOMING_QUEUE_BYTES: usize = 8 << 20;

/// What one queued frame costs beyond its payload, as the flow control counts it (so a
/// flood of empty frames is held back too, not queued without bound).
const QUEUED_FRAME_OVERHEAD: usize = 64;

/// The URI subject-alternative name that states `role` in a certificate.
pub(crate) fn role_uri(role: Role) -> String {
    format!("{ROLE_URI_PREFIX}{}", role.name())
}

/// Whether `name` may be a party's name: 1 to 64 of `A–Z a–z 0–9 . _ -` (it goes into
/// logs and file names, so nothing else).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn tls_error(context: &'static str) -> impl Fn(String) -> Error {
    move |reason| Error::Tls { context, reason }
}

/// Who a certificate says its holder is: the role, and the name if it states one.
/// Public: it may be logged.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PeerIdentity {
    /// The role (the `urn:veil:role:` URI).
    pub role: Role,
    /// The name (the `urn:veil:name:` URI), if any; every client certificate `veil
    /// certs` signs has one.
    pub name: Option<String>,
}

impl std::fmt::Display for PeerIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(formatter, "{} {name:?}", self.role),
            None => write!(formatter, "{} (unnamed)", self.role),
        }
    }
}

/// A deployment's CA and one certificate per role, in PEM, made in memory (the demo and
/// tests: one process holds every key; never a deployment).
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

/// Makes a fresh CA in memory and a certificate for each of `roles`, signed by it (named
/// after the role). For the demo and tests only: one CA for every role, every key in
/// one place. Deployments use [`crate::pki`] (`veil certs`): each party makes its own
/// key, and the dealer's CA is not the model owner's.
pub fn generate_certificates(roles: &[Role]) -> Result<DeploymentCertificates> {
    let authority = crate::pki::CertificateAuthority::generate("veil deployment CA")?;
    let mut parties = Vec::new();
    for &role in roles {
        let request = crate::pki::SigningRequest::generate(role, Some(role.name()))?;
        let signed = authority.sign(request.request_pem(), role)?;
        parties.push((role, signed.certificate_pem, request.key_pem().to_string()));
    }
    Ok(DeploymentCertificates {
        ca_certificate: authority.certificate_pem().to_string(),
        parties,
    })
}

/// The CA certificates (and revocation lists) a party trusts, per role of peer: a peer
/// stating role R is verified against R's roots only.
#[derive(Clone, Default)]
pub struct TrustRoots {
    roles: BTreeMap<RoleKey, RoleRoots>,
}

/// [`Role`] ordered by its wire code (for a deterministic map).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RoleKey(u8);

impl RoleKey {
    fn of(role: Role) -> Self {
        Self(role.code())
    }
}

#[derive(Clone, Default)]
struct RoleRoots {
    certificates: Vec<CertificateDer<'static>>,
    revocations: Vec<CertificateRevocationListDer<'static>>,
}

impl std::fmt::Debug for TrustRoots {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = formatter.debug_map();
        for (key, roots) in &self.roles {
            let role = Role::from_code(key.0).map(Role::name).unwrap_or("?");
            map.entry(
                &role,
                &format_args!(
                    "{} roots, {} revocation lists",
                    roots.certificates.len(),
                    roots.revocations.len()
                ),
            );
        }
        map.finish()
    }
}

impl TrustRoots {
    /// No roots: every peer is refused until roots are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// One CA trusted for every role (the demo, tests, and the single-CA folder layout):
    /// that CA's operator can then pose as any party.
    pub fn single(ca_certificate_pem: &[u8]) -> Result<Self> {
        let mut roots = Self::new();
        for role in Role::ALL {
            roots.add_pem(role, ca_certificate_pem)?;
        }
        Ok(roots)
    }

    /// Trusts the CA certificates in `pem` (one or more) for peers of `role`.
    pub fn add_pem(&mut self, role: Role, pem: &[u8]) -> Result<()> {
        let error = tls_error("loading trust roots");
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| error(format!("the CA certificates for {role} peers: {e}")))?;
        if certificates.is_empty() {
            return Err(error(format!(
                "no CA certificate (PEM \"CERTIFICATE\") for {role} peers"
            )));
        }
        // Check now that each one is usable as a root.
        for certificate in &certificates {
            rustls::RootCertStore::empty()
                .add(certificate.clone())
                .map_err(|e| error(format!("a CA certificate for {role} peers: {e}")))?;
        }
        self.roles
            .entry(RoleKey::of(role))
            .or_default()
            .certificates
            .extend(certificates);
        Ok(())
    }

    /// Loads the revocation lists in `pem` (one or more, PEM "X509 CRL") for peers of
    /// `role`: a certificate a list names is refused. A list applies to the
    /// certificates of the CA that signed it.
    pub fn add_revocations_pem(&mut self, role: Role, pem: &[u8]) -> Result<()> {
        let lists = parse_revocation_lists(pem)?;
        self.roles
            .entry(RoleKey::of(role))
            .or_default()
            .revocations
            .extend(lists);
        Ok(())
    }

    /// Loads the revocation lists in `pem` for peers of every role that has roots (each
    /// list only affects certificates of the CA that signed it).
    pub fn add_revocations_pem_for_all(&mut self, pem: &[u8]) -> Result<()> {
        let lists = parse_revocation_lists(pem)?;
        for roots in self.roles.values_mut() {
            roots.revocations.extend(lists.iter().cloned());
        }
        Ok(())
    }

    /// The roles of peer some root is trusted for.
    pub fn roles(&self) -> Vec<Role> {
        self.roles
            .iter()
            .filter(|(_, roots)| !roots.certificates.is_empty())
            .filter_map(|(key, _)| Role::from_code(key.0))
            .collect()
    }
}

fn parse_revocation_lists(pem: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>> {
    let lists = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Tls {
            context: "loading a revocation list",
            reason: e.to_string(),
        })?;
    if lists.is_empty() {
        return Err(Error::Tls {
            context: "loading a revocation list",
            reason: "the file holds no PEM \"X509 CRL\"; make one with `veil certs revoke`".into(),
        });
    }
    Ok(lists)
}

/// Verifies a peer's certificate against the roots of the role the certificate states.
#[derive(Debug)]
struct RoleBoundVerifier {
    clients: Vec<(Role, Arc<dyn ClientCertVerifier>)>,
    servers: Vec<(Role, Arc<rustls::client::WebPkiServerVerifier>)>,
    hints: Vec<DistinguishedName>,
    algorithms: rustls::crypto::WebPkiSupportedAlgorithms,
}

impl RoleBoundVerifier {
    fn new(trust: &TrustRoots, provider: &Arc<rustls::crypto::CryptoProvider>) -> Result<Self> {
        let error = tls_error("building the certificate verifier");
        let mut verifier = Self {
            clients: Vec::new(),
            servers: Vec::new(),
            hints: Vec::new(),
            algorithms: provider.signature_verification_algorithms,
        };
        for (key, roots) in &trust.roles {
            let Some(role) = Role::from_code(key.0) else {
                continue;
            };
            if roots.certificates.is_empty() {
                continue;
            }
            let mut store = rustls::RootCertStore::empty();
            for certificate in &roots.certificates {
                store
                    .add(certificate.clone())
                    .map_err(|e| error(e.to_string()))?;
            }
            verifier.hints.extend(store.subjects());
            let store = Arc::new(store);
            let client = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::clone(&store),
                Arc::clone(provider),
            )
            .with_crls(roots.revocations.iter().cloned())
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .build()
            .map_err(|e| error(e.to_string()))?;
            let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
                store,
                Arc::clone(provider),
            )
            .with_crls(roots.revocations.iter().cloned())
            .only_check_end_entity_revocation()
            .allow_unknown_revocation_status()
            .build()
            .map_err(|e| error(e.to_string()))?;
            verifier.clients.push((role, client));
            verifier.servers.push((role, server));
        }
        Ok(verifier)
    }

    /// The role `end_entity` states, if this party trusts any root for it.
    fn stated_role(
        &self,
        end_entity: &CertificateDer<'_>,
    ) -> std::result::Result<Role, rustls::Error> {
        let identity = certificate_identity(end_entity)
            .map_err(|error| rustls::Error::General(error.to_string()))?;
        let role = identity.role;
        if self.clients.iter().any(|(trusted, _)| *trusted == role) {
            Ok(role)
        } else {
            Err(rustls::Error::General(format!(
                "the peer's certificate is for role {role}, and this party trusts no CA for {role} peers"
            )))
        }
    }
}

impl ClientCertVerifier for RoleBoundVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> std::result::Result<ClientCertVerified, rustls::Error> {
        let role = self.stated_role(end_entity)?;
        let (_, verifier) = self
            .clients
            .iter()
            .find(|(trusted, _)| *trusted == role)
            .ok_or(rustls::Error::General("no verifier for the role".into()))?;
        verifier.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ServerCertVerifier for RoleBoundVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let role = self.stated_role(end_entity)?;
        let (_, verifier) = self
            .servers
            .iter()
            .find(|(trusted, _)| *trusted == role)
            .ok_or(rustls::Error::General("no verifier for the role".into()))?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, certificate, signature, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, certificate, signature, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// One party's TLS identity: its certificate chain and key, and the roots it trusts per
/// peer role.
#[derive(Clone)]
pub struct TlsIdentity {
    server_config: Arc<rustls::ServerConfig>,
    client_config: Arc<rustls::ClientConfig>,
    own: PeerIdentity,
    trusted_roles: Vec<Role>,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "TlsIdentity {{ role: {:?}, name: {:?}, trusts roots for: {:?} }}",
            self.own.role, self.own.name, self.trusted_roles
        )
    }
}

impl TlsIdentity {
    /// Builds an identity from PEM with one CA trusted for every peer role (the demo,
    /// tests, the single-CA folder layout): the CA certificate, this party's
    /// certificate and its key. The certificate must state a role.
    pub fn from_pem(ca_certificate: &[u8], certificate: &[u8], key: &[u8]) -> Result<Self> {
        Self::new(&TrustRoots::single(ca_certificate)?, certificate, key)
    }

    /// Builds an identity: the roots trusted per peer role, this party's certificate
    /// (PEM; the first certificate is its own, any others the chain to its CA) and its
    /// key (PEM). The certificate must state a role.
    pub fn new(trust: &TrustRoots, certificate: &[u8], key: &[u8]) -> Result<Self> {
        let error = tls_error("loading the TLS identity");
        let chain = CertificateDer::pem_slice_iter(certificate)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| error(format!("the certificate: {e}")))?;
        let first = chain
            .first()
            .ok_or_else(|| error("the certificate file holds no PEM \"CERTIFICATE\"".into()))?;
        let own = certificate_identity(first)?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| error(format!("the key: {e} (a PEM private key)")))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let trusted_roles = trust.roles();
        if trusted_roles.is_empty() {
            return Err(error(
                "no trust roots: this party would refuse every peer".into(),
            ));
        }
        let verifier = Arc::new(RoleBoundVerifier::new(trust, &provider)?);
        let server_config = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| error(e.to_string()))?
            .with_client_cert_verifier(Arc::clone(&verifier) as Arc<dyn ClientCertVerifier>)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| error(format!("the certificate and key do not match: {e}")))?;
        let client_config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| error(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(chain, key)
            .map_err(|e| error(format!("the certificate and key do not match: {e}")))?;
        Ok(Self {
            server_config: Arc::new(server_config),
            client_config: Arc::new(client_config),
            own,
            trusted_roles,
        })
    }

    /// The role this identity's certificate states.
    pub fn role(&self) -> Role {
        self.own.role
    }

    /// The name this identity's certificate states, if any.
    pub fn name(&self) -> Option<&str> {
        self.own.name.as_deref()
    }

    /// The peer roles this identity trusts some root for.
    pub fn trusted_roles(&self) -> &[Role] {
        &self.trusted_roles
    }
}

/// The role and name in a certificate's URI subject-alternative names. Exactly one role
/// URI, at most one name URI, and the name must be [valid](is_valid_name).
pub fn certificate_identity(certificate: &CertificateDer<'_>) -> Result<PeerIdentity> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let error = tls_error("reading a certificate's role");
    let (_, parsed) =
        X509Certificate::from_der(certificate.as_ref()).map_err(|e| error(e.to_string()))?;
    let names = parsed
        .subject_alternative_name()
        .map_err(|e| error(e.to_string()))?
        .ok_or_else(|| error("the certificate has no subject-alternative names".into()))?;
    let uris: Vec<&str> = names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    identity_from_uris(&uris).map_err(error)
}

/// The identity the URIs of a certificate or request state.
pub(crate) fn identity_from_uris(uris: &[&str]) -> std::result::Result<PeerIdentity, String> {
    let mut roles = uris
        .iter()
        .filter_map(|uri| uri.strip_prefix(ROLE_URI_PREFIX));
    let role = match (roles.next(), roles.next()) {
        (Some(name), None) => {
            Role::from_name(name).ok_or_else(|| format!("unknown role {name:?} in the role URI"))?
        }
        (None, _) => {
            return Err("the certificate states no veil role (a urn:veil:role: URI)".into());
        }
        (Some(_), Some(_)) => return Err("the certificate states more than one role".into()),
    };
    let mut names = uris
        .iter()
        .filter_map(|uri| uri.strip_prefix(NAME_URI_PREFIX));
    let name = match (names.next(), names.next()) {
        (Some(name), None) if is_valid_name(name) => Some(name.to_string()),
        (Some(_), None) => {
            return Err(format!(
                "the name URI is not a valid party name (1 to {MAX_NAME_BYTES} of A-Z a-z 0-9 . _ -)"
            ));
        }
        (None, _) => None,
        (Some(_), Some(_)) => return Err("the certificate states more than one name".into()),
    };
    Ok(PeerIdentity { role, name })
}

/// How long a closing channel's I/O thread tries to flush what is queued to a peer that
/// does not read, before it closes the socket anyway.
pub const CLOSE_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// How long a refused handshake waits for the peer to close after its alert.
const ALERT_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// Reads and discards from a non-blocking socket until the peer closes it, it fails, or
/// `linger` passes.
fn drain_until_closed(socket: &mut impl std::io::Read, linger: std::time::Duration) {
    let deadline = std::time::Instant::now() + linger;
    let mut buffer = [0u8; 4096];
    while std::time::Instant::now() < deadline {
        match socket.read(&mut buffer) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

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
    peer_identity: PeerIdentity,
    peer: Option<SocketAddr>,
    stats: ChannelStats,
    options: TcpOptions,
}

impl std::fmt::Debug for TlsChannel {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TlsChannel")
            .field("peer_identity", &self.peer_identity)
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
        let stream = connect_within(address, options.handshake_timeout)?;
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
        self.peer_identity.role
    }

    /// The name the peer proved with its certificate (every client certificate `veil
    /// certs` signs has one), if any. Public: it may be logged.
    pub fn peer_name(&self) -> Option<&str> {
        self.peer_identity.name.as_deref()
    }

    /// The role and name the peer proved with its certificate.
    pub fn peer_identity(&self) -> &PeerIdentity {
        &self.peer_identity
    }

    /// The peer's address, if the socket knew it.
    pub fn peer_address(&self) -> Option<SocketAddr> {
        self.peer
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
        configure_keepalive(&stream, &options)?;
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
        let (handshake_done, handshake) = channel::<Result<PeerIdentity>>();
        let queued = Arc::new(AtomicUsize::new(0));
        let pump_queued = Arc::clone(&queued);
        let sending = Arc::new(AtomicUsize::new(0));
        let pump_sending = Arc::clone(&sending);
        let bounded = options.send_queue_bytes.is_some();
        let max_frame_bytes = options.max_frame_bytes;
        let handshake_deadline = Instant::now() + options.handshake_timeout;
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
                    handshake_deadline,
                    handshake_seconds: options.handshake_timeout.as_secs(),
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
        // The I/O thread ends the handshake itself at the deadline (and closes the
        // socket); the margin only covers a thread that was not scheduled in time.
        let margin = std::time::Duration::from_secs(5);
        let peer_identity = match handshake.recv_timeout(options.handshake_timeout + margin) {
            Ok(Ok(identity)) => identity,
            Ok(Err(error)) => {
                let _ = io_thread.join();
                return Err(error);
            }
            Err(RecvTimeoutError::Timeout) => {
                // Closing the queue and waking the thread makes it stop.
                drop(outgoing);
                let _ = waker.wake();
                return Err(Error::HandshakeTimeout {
                    seconds: options.handshake_timeout.as_secs(),
                });
            }
            Err(RecvTimeoutError::Disconnected) => {
                let _ = io_thread.join();
                return Err(Error::PeerClosed);
            }
        };
        let peer_role = peer_identity.role;
        let channel = Self {
            outgoing: Some(outgoing),
            incoming,
            queued,
            sending,
            waker,
            io_thread: Some(io_thread),
            peer_identity,
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
    handshake_done: Option<Sender<Result<PeerIdentity>>>,
    inbox: Vec<u8>,
    max_frame_bytes: usize,
    /// When the handshake must be over: the thread gives up (and the socket closes).
    handshake_deadline: Instant,
    handshake_seconds: u64,
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
                    Ok(mut frame) => {
                        self.sending.fetch_sub(frame.len(), Ordering::AcqRel);
                        let written = self.connection.writer().write_all(&frame);
                        // Frames carry shares and material: TLS holds the record now.
                        frame.zeroize();
                        written.map_err(|e| tls(e.to_string()))?
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
                        if let Err(error) = self.connection.process_new_packets() {
                            // Send the alert rustls queued (a revoked or untrusted
                            // certificate, say), so the peer learns why it was refused,
                            // then half-close and drain: closing with the peer's data
                            // unread would reset the connection, and a reset can
                            // discard the alert before the peer reads it.
                            let _ = self.connection.write_tls(&mut self.socket);
                            let _ = self.socket.shutdown(std::net::Shutdown::Write);
                            drain_until_closed(&mut self.socket, ALERT_LINGER);
                            return Err(tls(error.to_string()));
                        }
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
                let identity = self
                    .connection
                    .peer_certificates()
                    .and_then(|certificates| certificates.first())
                    .ok_or_else(|| tls("the peer presented no certificate".into()))
                    .and_then(certificate_identity);
                let failed = identity.is_err();
                let _ = done.send(identity);
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
            // Until the handshake is over, wait no longer than its deadline; a closing
            // channel no longer than its flush.
            let wait = match self.handshake_done {
                Some(_) => {
                    let left = self
                        .handshake_deadline
                        .saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(Error::HandshakeTimeout {
                            seconds: self.handshake_seconds,
                        });
                    }
                    Some(left)
                }
                None => closing.map(|deadline| deadline.saturating_duration_since(Instant::now())),
            };
            self.poll
                .poll(&mut events, wait)
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
        // A peer that does not read holds back this side's sends when they are bounded.
        crate::tcp::wait_for_send_room(&self.sending, frame.len(), &self.options)?;
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
        assert_eq!(stranger.name(), Some("client"));
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

/// The handshake deadline, per-role trust roots, names and revocation.
#[cfg(test)]
mod trust_tests {
    use std::io::Read;
    use std::time::Duration;

    use super::*;
    use crate::pki::{CertificateAuthority, SigningRequest};

    fn options() -> TcpOptions {
        TcpOptions {
            read_timeout: TEST_TIMEOUT,
            ..TcpOptions::default()
        }
    }

    /// A certificate and key for `role` and `name`, signed by `authority`.
    fn issue(authority: &CertificateAuthority, role: Role, name: Option<&str>) -> (String, String) {
        let request = SigningRequest::generate(role, name).unwrap();
        let signed = authority.sign(request.request_pem(), role).unwrap();
        (signed.certificate_pem, request.key_pem().to_string())
    }

    fn identity(trust: &TrustRoots, issued: &(String, String)) -> TlsIdentity {
        TlsIdentity::new(trust, issued.0.as_bytes(), issued.1.as_bytes()).unwrap()
    }

    fn pair(
        acceptor: TlsIdentity,
        accept_roles: Vec<Role>,
        connector: &TlsIdentity,
        connect_roles: &[Role],
    ) -> (Result<TlsChannel>, Result<TlsChannel>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let accept = std::thread::spawn(move || {
            TlsChannel::accept(&listener, &acceptor, &accept_roles, options())
        });
        let connected = TlsChannel::connect(&address, connector, connect_roles, options());
        (accept.join().unwrap(), connected)
    }

    /// Runs an acceptor with a 1 s handshake deadline against a raw TCP peer that sends
    /// `prefix` and then nothing: the acceptor must give up with a handshake timeout and
    /// close the socket (the peer reads end-of-file, not a timeout of its own).
    fn a_stalled_peer_is_disconnected(prefix: &[u8]) {
        let authority = CertificateAuthority::generate("CA").unwrap();
        let server = identity(
            &TrustRoots::single(authority.certificate_pem().as_bytes()).unwrap(),
            &issue(&authority, Role::Server, None),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let short = TcpOptions {
            handshake_timeout: Duration::from_secs(1),
            ..options()
        };
        let accept = std::thread::spawn(move || {
            TlsChannel::accept(&listener, &server, &[Role::Client], short)
        });
        let mut peer = std::net::TcpStream::connect(address).unwrap();
        peer.write_all(prefix).unwrap();
        // Longer than the deadline, so that a socket left open fails the test here.
        peer.set_read_timeout(Some(TEST_TIMEOUT)).unwrap();
        let accepted = accept.join().unwrap();
        assert!(
            matches!(accepted, Err(Error::HandshakeTimeout { seconds: 1 })),
            "{accepted:?}"
        );
        let mut rest = Vec::new();
        match peer.read_to_end(&mut rest) {
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::ConnectionReset => {}
            Err(error) => panic!("the acceptor left the socket open: {error}"),
        }
    }

    #[test]
    fn a_peer_that_sends_nothing_is_disconnected_at_the_handshake_deadline() {
        a_stalled_peer_is_disconnected(&[]);
    }

    #[test]
    fn a_peer_that_stalls_mid_handshake_is_disconnected_at_the_deadline() {
        // A TLS handshake record header announcing 512 bytes, and 3 of them.
        a_stalled_peer_is_disconnected(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]);
    }

    /// The documented deployment: the dealer's operator has a CA of its own, the model
    /// owner another (for the server and its clients).
    struct TwoOperators {
        dealer_ca: CertificateAuthority,
        owner_ca: CertificateAuthority,
    }

    impl TwoOperators {
        fn new() -> Self {
            Self {
                dealer_ca: CertificateAuthority::generate("dealer operator CA").unwrap(),
                owner_ca: CertificateAuthority::generate("model owner CA").unwrap(),
            }
        }

        /// What a client trusts: the dealer's CA for the dealer, the owner's for the
        /// server.
        fn client_trust(&self) -> TrustRoots {
            let mut trust = TrustRoots::new();
            trust
                .add_pem(Role::Dealer, self.dealer_ca.certificate_pem().as_bytes())
                .unwrap();
            trust
                .add_pem(Role::Server, self.owner_ca.certificate_pem().as_bytes())
                .unwrap();
            trust
        }

        /// What the dealer trusts: the owner's CA for the server and the clients.
        fn dealer_trust(&self) -> TrustRoots {
            let mut trust = TrustRoots::new();
            for role in [Role::Server, Role::Client] {
                trust
                    .add_pem(role, self.owner_ca.certificate_pem().as_bytes())
                    .unwrap();
            }
            trust
        }
    }

    #[test]
    fn the_model_owners_ca_cannot_pose_as_the_dealer() {
        let operators = TwoOperators::new();
        let client = identity(
            &operators.client_trust(),
            &issue(&operators.owner_ca, Role::Client, Some("alice")),
        );
        // The real dealer is accepted by the client.
        let dealer = identity(
            &operators.dealer_trust(),
            &issue(&operators.dealer_ca, Role::Dealer, Some("dealer")),
        );
        let (accepted, connected) = pair(dealer, vec![Role::Client], &client, &[Role::Dealer]);
        let (accepted, connected) = (accepted.unwrap(), connected.unwrap());
        assert_eq!(connected.peer_role(), Role::Dealer);
        assert_eq!(accepted.peer_name(), Some("alice"));
        assert_eq!(
            accepted.peer_identity(),
            &PeerIdentity {
                role: Role::Client,
                name: Some("alice".into())
            }
        );
        // A dealer certificate the model owner's CA made is refused by the client.
        let impostor = identity(
            &operators.dealer_trust(),
            &issue(&operators.owner_ca, Role::Dealer, Some("dealer")),
        );
        let (_, connected) = pair(impostor, vec![Role::Client], &client, &[Role::Dealer]);
        assert!(
            matches!(&connected, Err(Error::Tls { reason, .. }) if reason.contains("certificate")),
            "{connected:?}"
        );
        // And a server certificate from the dealer's CA is refused as a server.
        let impostor = identity(
            &operators.dealer_trust(),
            &issue(&operators.dealer_ca, Role::Server, None),
        );
        let (_, connected) = pair(impostor, vec![Role::Client], &client, &[Role::Server]);
        assert!(connected.is_err(), "{connected:?}");
    }

    #[test]
    fn a_role_with_no_trusted_ca_is_refused_at_the_handshake() {
        let operators = TwoOperators::new();
        // The dealer trusts no CA for dealers: another dealer cannot connect to it.
        let dealer = identity(
            &operators.dealer_trust(),
            &issue(&operators.dealer_ca, Role::Dealer, None),
        );
        let mut trust = operators.client_trust();
        trust
            .add_pem(
                Role::Client,
                operators.owner_ca.certificate_pem().as_bytes(),
            )
            .unwrap();
        let other_dealer = identity(&trust, &issue(&operators.dealer_ca, Role::Dealer, None));
        let (accepted, _) = pair(dealer, vec![Role::Dealer], &other_dealer, &[Role::Dealer]);
        assert!(
            matches!(&accepted, Err(Error::Tls { reason, .. }) if reason.contains("trusts no CA for dealer")),
            "{accepted:?}"
        );
    }

    #[test]
    fn a_revoked_client_certificate_is_refused_at_the_handshake() {
        let operators = TwoOperators::new();
        let revoked_client = issue(&operators.owner_ca, Role::Client, Some("mallory"));
        let good_client = issue(&operators.owner_ca, Role::Client, Some("alice"));
        let (list, _) = operators.owner_ca.revoke(None, &revoked_client.0).unwrap();
        let mut dealer_trust = operators.dealer_trust();
        dealer_trust
            .add_revocations_pem_for_all(list.as_bytes())
            .unwrap();
        let dealer_cert = issue(&operators.dealer_ca, Role::Dealer, None);
        for (client, refused) in [(&revoked_client, true), (&good_client, false)] {
            let dealer = identity(&dealer_trust, &dealer_cert);
            let client = identity(&operators.client_trust(), client);
            let (accepted, _) = pair(dealer, vec![Role::Client], &client, &[Role::Dealer]);
            if refused {
                assert!(
                    matches!(&accepted, Err(Error::Tls { reason, .. }) if reason.to_lowercase().contains("revoked")),
                    "{accepted:?}"
                );
            } else {
                assert!(accepted.is_ok(), "{accepted:?}");
            }
        }
    }

    #[test]
    fn reading_a_mutated_or_truncated_certificate_is_an_error_never_a_panic() {
        let authority = CertificateAuthority::generate("CA").unwrap();
        let (pem, _) = issue(&authority, Role::Client, Some("alice"));
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        let bytes = der.as_ref().to_vec();
        for length in 0..bytes.len() {
            assert!(certificate_identity(&CertificateDer::from(&bytes[..length])).is_err());
        }
        for index in 0..bytes.len() {
            let mut mutated = bytes.clone();
            mutated[index] ^= 0x5a;
            if let Ok(identity) = certificate_identity(&CertificateDer::from(mutated.as_slice()))
                && let Some(name) = &identity.name
            {
                assert!(is_valid_name(name), "{name:?}");
            }
        }
        // Names that could forge log lines or paths are refused.
        for uris in [
            &["urn:veil:role:client", "urn:veil:name:a\nb"][..],
            &["urn:veil:role:client", "urn:veil:name:../x"][..],
            &["urn:veil:role:client", "urn:veil:name:"][..],
            &["urn:veil:role:root"][..],
        ] {
            assert!(identity_from_uris(uris).is_err(), "{uris:?}");
        }
    }

    #[test]
    fn an_identity_needs_roots_and_a_matching_key() {
        let operators = TwoOperators::new();
        let (certificate, _) = issue(&operators.owner_ca, Role::Server, None);
        let (_, other_key) = issue(&operators.owner_ca, Role::Server, None);
        let trust = operators.dealer_trust();
        assert!(
            TlsIdentity::new(
                &TrustRoots::new(),
                certificate.as_bytes(),
                other_key.as_bytes()
            )
            .is_err()
        );
        let mismatched = TlsIdentity::new(&trust, certificate.as_bytes(), other_key.as_bytes());
        assert!(mismatched.is_err(), "{mismatched:?}");
        assert!(!format!("{trust:?}").contains("BEGIN"));
    }
}
