//! How parties reach each other: mutual TLS with role-bound certificates and trust roots
//! per peer role (the real thing), or plain TCP on loopback addresses (tests and local
//! experiments only; roles are then claimed, not proven).
//!
//! A TLS peer's proven identity (its role, and the name its certificate states: every
//! client has one) is logged when a connection is accepted, and
//! [`Transport::from_stream_identified`] hands it to the caller.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use veil_net::tls::{DeploymentCertificates, PeerIdentity, TlsChannel, TlsIdentity};
use veil_net::{Channel, NetworkProfile, Role, TcpChannel, TcpOptions, dangerous_listen_insecure};

use crate::{Error, Result};

/// One connection to a peer.
pub type Link = Box<dyn Channel>;

/// How this party connects.
#[derive(Clone, Debug)]
pub enum Transport {
    /// Mutual TLS: the peer proves its role with a certificate from the deployment CA.
    Tls {
        /// This party's identity.
        identity: TlsIdentity,
        /// Timeouts and frame cap.
        options: TcpOptions,
    },
    /// Plain TCP, loopback addresses only.
    DangerousPlainTcp {
        /// Timeouts, frame cap and simulated network.
        options: TcpOptions,
    },
}

impl Transport {
    /// Mutual TLS for `role` from its party folder (see [`crate::certificates`]): this
    /// role's certificate and key, and the roots it trusts per peer role
    /// (`trust-PEER.pem`, with `trust-PEER.crl` revocation lists) or one CA for every
    /// role (`ca.pem`, tests). The certificate must state `role`.
    pub fn from_certificate_folder(
        folder: &Path,
        role: Role,
        options: TcpOptions,
    ) -> Result<Transport> {
        Self::from_certificate_folder_with_revocations(folder, role, &[], options)
    }

    /// [`Self::from_certificate_folder`], also refusing the certificates the revocation
    /// lists in `revocations` name (PEM files `veil certs revoke` wrote; each applies to
    /// the certificates of the CA that signed it).
    pub fn from_certificate_folder_with_revocations(
        folder: &Path,
        role: Role,
        revocations: &[PathBuf],
        options: TcpOptions,
    ) -> Result<Transport> {
        let identity = crate::certificates::load_identity(folder, role, revocations)?;
        Ok(Transport::Tls { identity, options })
    }

    /// Mutual TLS for `role` from a deployment's certificates held in memory.
    pub fn from_certificates(
        certificates: &DeploymentCertificates,
        role: Role,
        options: TcpOptions,
    ) -> Result<Transport> {
        let (_, certificate, key) = certificates
            .parties
            .iter()
            .find(|(party, _, _)| *party == role)
            .ok_or(Error::Unreachable("no certificate was made for this role"))?;
        let identity = TlsIdentity::from_pem(
            certificates.ca_certificate.as_bytes(),
            certificate.as_bytes(),
            key.as_bytes(),
        )?;
        Ok(Transport::Tls { identity, options })
    }

    /// Whether connections are TLS.
    pub fn is_tls(&self) -> bool {
        matches!(self, Transport::Tls { .. })
    }

    fn options(&self) -> TcpOptions {
        match self {
            Transport::Tls { options, .. } | Transport::DangerousPlainTcp { options } => *options,
        }
    }

    /// The same transport with other channel options (timeouts, frame cap, network).
    pub fn with_options(&self, options: TcpOptions) -> Transport {
        let mut transport = self.clone();
        match &mut transport {
            Transport::Tls { options: ours, .. }
            | Transport::DangerousPlainTcp { options: ours } => *ours = options,
        }
        transport
    }

    /// The same transport with `send` bounded to `bytes` queued per connection (see
    /// [`TcpOptions::send_queue_bytes`]).
    pub fn with_send_queue(&self, bytes: usize) -> Transport {
        let mut options = self.options();
        options.send_queue_bytes = Some(bytes);
        self.with_options(options)
    }

    /// The same transport with the simulated network removed (for links whose traffic
    /// is not online traffic, such as the dealer's).
    pub fn unshaped(&self) -> Transport {
        let mut transport = self.clone();
        match &mut transport {
            Transport::Tls { options, .. } | Transport::DangerousPlainTcp { options } => {
                options.profile = NetworkProfile::Local
            }
        }
        transport
    }

    /// Binds a listener (plain TCP refuses non-loopback addresses).
    pub fn listen(&self, address: &str) -> Result<TcpListener> {
        match self {
            Transport::Tls { .. } => {
                TcpListener::bind(address).map_err(Error::io(format!("listening on {address}")))
            }
            Transport::DangerousPlainTcp { .. } => Ok(dangerous_listen_insecure(address)?),
        }
    }

    /// Accepts one connection from a peer that must be `expected`.
    pub fn accept(&self, listener: &TcpListener, expected: Role) -> Result<Link> {
        Ok(self.accept_any(listener, &[expected])?.0)
    }

    /// Accepts one connection from a peer of any of the `expected` roles; returns the
    /// link and, over TLS, the role its certificate proves (plain TCP proves none).
    pub fn accept_any(
        &self,
        listener: &TcpListener,
        expected: &[Role],
    ) -> Result<(Link, Option<Role>)> {
        let (stream, _) = listener
            .accept()
            .map_err(Error::io("accepting a connection"))?;
        self.from_stream(stream, expected)
    }

    /// Takes a connection accepted elsewhere (e.g. by a polling accept loop): TLS runs
    /// its handshake; returns the link and, over TLS, the role the certificate proves.
    pub fn from_stream(
        &self,
        stream: std::net::TcpStream,
        expected: &[Role],
    ) -> Result<(Link, Option<Role>)> {
        let (link, identity) = self.from_stream_identified(stream, expected)?;
        Ok((link, identity.map(|identity| identity.role)))
    }

    /// [`Self::from_stream`], returning the whole identity the peer's certificate proves:
    /// its role and its name (every client certificate `veil certs` signs has one). Plain
    /// TCP proves nothing (`None`). The identity is public; it is logged here.
    pub fn from_stream_identified(
        &self,
        stream: std::net::TcpStream,
        expected: &[Role],
    ) -> Result<(Link, Option<PeerIdentity>)> {
        Ok(match self {
            Transport::Tls { identity, options } => {
                let address = stream.peer_addr().ok();
                let channel = TlsChannel::accept_stream(stream, identity, expected, *options)
                    .inspect_err(|error| {
                        tracing::info!(
                            peer = ?address,
                            %error,
                            "refused a TLS connection"
                        );
                    })?;
                let proven = channel.peer_identity().clone();
                tracing::info!(
                    peer = ?address,
                    role = %proven.role,
                    name = proven.name.as_deref().unwrap_or("-"),
                    "accepted a TLS connection"
                );
                (Box::new(channel), Some(proven))
            }
            Transport::DangerousPlainTcp { options } => (
                Box::new(TcpChannel::dangerous_from_accepted_insecure(
                    stream, *options,
                )?),
                None,
            ),
        })
    }

    /// [`Self::accept_any`], returning the whole identity the peer's certificate proves
    /// (see [`Self::from_stream_identified`]).
    pub fn accept_any_identified(
        &self,
        listener: &TcpListener,
        expected: &[Role],
    ) -> Result<(Link, Option<PeerIdentity>)> {
        let (stream, _) = listener
            .accept()
            .map_err(Error::io("accepting a connection"))?;
        self.from_stream_identified(stream, expected)
    }

    /// This party's own TLS identity (`None` on plain TCP).
    pub fn identity(&self) -> Option<&TlsIdentity> {
        match self {
            Transport::Tls { identity, .. } => Some(identity),
            Transport::DangerousPlainTcp { .. } => None,
        }
    }

    /// Connects to a peer that must be `expected`, retrying for up to 20 s while it starts.
    pub fn connect(&self, address: &str, expected: Role) -> Result<Link> {
        self.connect_within(address, expected, Duration::from_secs(20))
    }

    /// Connects to a peer that must be `expected`, retrying for up to `patience` while
    /// it is unreachable.
    pub fn connect_within(
        &self,
        address: &str,
        expected: Role,
        patience: Duration,
    ) -> Result<Link> {
        let deadline = Instant::now() + patience;
        loop {
            let attempt: std::result::Result<Link, veil_net::Error> = match self {
                Transport::Tls { identity, options } => {
                    TlsChannel::connect(address, identity, &[expected], *options)
                        .map(|c| Box::new(c) as Link)
                }
                Transport::DangerousPlainTcp { options } => {
                    TcpChannel::dangerous_connect_insecure(address, *options)
                        .map(|c| Box::new(c) as Link)
                }
            };
            match attempt {
                Ok(link) => return Ok(link),
                Err(error @ veil_net::Error::Io { .. }) if Instant::now() < deadline => {
                    let _ = error;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(cause) => {
                    return Err(Error::Connect {
                        role: expected,
                        address: address.to_string(),
                        cause,
                    });
                }
            }
        }
    }

    /// The read timeout in force.
    pub fn read_timeout(&self) -> Duration {
        self.options().read_timeout
    }
}
