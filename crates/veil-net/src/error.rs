//! The one error type of veil-net.

/// What can go wrong on a channel. Messages name sizes and addresses, never contents.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer closed the connection between frames.
    #[error(
        "the peer closed the connection; its process may have stopped or failed, check its log"
    )]
    PeerClosed,
    /// The connection ended inside a frame.
    #[error(
        "the connection ended inside a frame ({received} of {expected} bytes arrived); \
         the peer stopped mid-message"
    )]
    Truncated {
        /// Bytes the frame (or its header) should have had.
        expected: usize,
        /// Bytes that arrived.
        received: usize,
    },
    /// A frame header announced more bytes than the cap allows.
    #[error(
        "a frame of {length} bytes exceeds the cap of {cap} bytes; the peer is misbehaving or \
         speaks another protocol"
    )]
    FrameTooLarge {
        /// The announced length.
        length: u64,
        /// The configured cap.
        cap: usize,
    },
    /// A frame named another query session than the one in progress.
    #[error(
        "a message for another query session arrived; the parties are out of step, start a new session"
    )]
    WrongSession,
    /// No frame arrived within the configured timeout.
    #[error("no message from the peer within {seconds} s; the peer is stuck or gone")]
    Timeout {
        /// The timeout in seconds.
        seconds: u64,
    },
    /// The TLS handshake did not finish within the handshake timeout; the connection was
    /// closed.
    #[error(
        "the TLS handshake did not finish within {seconds} s and the connection was closed; \
         the peer is not a veil party, is stalled, or the network drops its packets"
    )]
    HandshakeTimeout {
        /// The handshake timeout in seconds.
        seconds: u64,
    },
    /// Plain TCP was asked for on an address that is not loopback.
    #[error(
        "refusing insecure plain TCP on non-loopback address {address}; plain TCP is for \
         loopback testing only"
    )]
    InsecureNonLoopback {
        /// The refused address.
        address: String,
    },
    /// A TLS failure: bad certificates, a failed handshake, a broken session.
    #[error(
        "TLS ({context}): {reason}; check that each party trusts, for the other's role, the CA \
         that signed the other's certificate, and that the certificate is not revoked"
    )]
    Tls {
        /// What was being done.
        context: &'static str,
        /// The TLS library's message (no key material).
        reason: String,
    },
    /// Making, signing, loading or revoking a certificate failed.
    #[error("certificates ({context}): {reason}")]
    Certificate {
        /// What was being done.
        context: &'static str,
        /// What was wrong (no key material).
        reason: String,
    },
    /// The peer's certificate states another role than this connection needs.
    #[error(
        "the peer's certificate is for role {found}, but this connection needs {expected}; refused"
    )]
    WrongPeerRole {
        /// The roles that were acceptable.
        expected: String,
        /// The role the certificate states.
        found: &'static str,
    },
    /// An operating-system I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// veil-net's result type.
pub type Result<T> = std::result::Result<T, Error>;
