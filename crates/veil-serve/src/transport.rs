//! How parties reach each other: mutual TLS with role-bound certificates (the real
//! thing), or plain TCP on loopback addresses (tests and local experiments only; roles
//! are then claimed, not proven).

use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use veil_net::tls::{DeploymentCertificates, TlsChannel, TlsIdentity};
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
    /// Mutual TLS for `role` from a certificate folder (see [`write_certificate_folder`]):
    /// the CA's certificate and this role's certificate and key. The certificate must
    /// state `role`.
    pub fn from_certificate_folder(
        folder: &Path,
        role: Role,
        options: TcpOptions,
    ) -> Result<Transport> {
        let read = |name: String| {
            let path = folder.join(&name);
            std::fs::read(&path).map_err(Error::io(format!("reading {}", path.display())))
        };
        let identity = TlsIdentity::from_pem(
            &read("ca.pem".into())?,
            &read(format!("{role}.pem"))?,
            &read(format!("{role}.key"))?,
        )?;
        if identity.role() != role {
            return Err(Error::WrongCertificate {
                path: folder.join(format!("{role}.pem")).display().to_string(),
                found: identity.role(),
            });
        }
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

    /// The same transport with `send` bounded to `bytes` queued per connection (TLS
    /// only; see [`TcpOptions::send_queue_bytes`]).
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
        Ok(match self {
            Transport::Tls { identity, options } => {
                let channel = TlsChannel::accept_stream(stream, identity, expected, *options)?;
                let proven = Some(channel.peer_role());
                (Box::new(channel), proven)
            }
            Transport::DangerousPlainTcp { options } => (
                Box::new(TcpChannel::dangerous_from_accepted_insecure(
                    stream, *options,
                )?),
                None,
            ),
        })
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

/// Writes a deployment's certificates into `folder`: `ca.pem`, and `ROLE.pem` and
/// `ROLE.key` per role (keys readable by their owner only). Give each party only its
/// own key.
pub fn write_certificate_folder(
    folder: &Path,
    certificates: &DeploymentCertificates,
) -> Result<()> {
    let write = |name: String, contents: &str| {
        let path = folder.join(name);
        std::fs::write(&path, contents)
            .map_err(Error::io(format!("writing {}", path.display())))?;
        Ok::<_, Error>(path)
    };
    std::fs::create_dir_all(folder).map_err(Error::io(format!("creating {}", folder.display())))?;
    write("ca.pem".into(), &certificates.ca_certificate)?;
    for (role, certificate, key) in &certificates.parties {
        write(format!("{role}.pem"), certificate)?;
        let key_path = write(format!("{role}.key"), key)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
                .map_err(Error::io(format!("protecting {}", key_path.display())))?;
        }
    }
    Ok(())
}
