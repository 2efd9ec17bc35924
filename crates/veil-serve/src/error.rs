//! The one error type of veil-serve.
//!
//! [`Error`] keeps three kinds of failure apart: a peer that broke the service's protocol
//! ([`PeerMisbehaved`]: end that session, never retry it as is), what went wrong here or
//! in the deployment's configuration (a file, a port, a limit, plans or epochs that
//! differ), and errors of the crates below, passed through unchanged. Messages are
//! lowercase, say what was wrong and what to do, and never contain a share, weight,
//! input, seed or key: only roles, addresses, sizes, counts and public-plan hashes.

use veil_net::Role;

use crate::messages::PROTOCOL_VERSION;

/// A peer sent something the service's protocol does not allow: a malformed message, a
/// message out of turn, a role or session it may not claim. The session ends; retrying
/// it unchanged is never right.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// The peer's handshake is not a veil handshake.
    #[error("the peer does not speak the veil protocol (bad handshake); check the address")]
    NotVeil,
    /// The peer speaks another protocol version.
    #[error(
        "the peer speaks protocol version {found}, this build speaks {PROTOCOL_VERSION}; upgrade the older side"
    )]
    ProtocolVersion {
        /// The peer's version.
        found: u32,
    },
    /// The peer runs another setting.
    #[error("the peer runs setting {found}, this build runs the dealer setting")]
    Setting {
        /// The peer's setting code.
        found: u8,
    },
    /// The peer announced a role code this build does not know.
    #[error("the peer announced an unknown role (code {code}); is it the same veil version?")]
    UnknownRole {
        /// The code received.
        code: u8,
    },
    /// The peer announced a role this connection does not take.
    #[error("expected a {expected} on this connection, the peer says it is a {found}")]
    UnexpectedRole {
        /// The roles this connection takes ("client or server").
        expected: String,
        /// The role the peer announced.
        found: Role,
    },
    /// The peer announced another role than its certificate proves.
    #[error("the peer claims to be a {claimed} but its certificate says otherwise")]
    RoleNotCertified {
        /// The role the handshake claimed.
        claimed: Role,
    },
    /// A message has the wrong length for its kind.
    #[error("{message}: {found} bytes, expected {expected}; is the peer the same veil version?")]
    WrongLength {
        /// The message.
        message: &'static str,
        /// The lengths it may have.
        expected: &'static str,
        /// The length received.
        found: usize,
    },
    /// A message's kind byte is not one this build knows.
    #[error("{message}: unknown kind {kind}; is the peer the same veil version?")]
    UnknownKind {
        /// The message.
        message: &'static str,
        /// The kind byte received.
        kind: u8,
    },
    /// A field of a message lies outside its range.
    #[error("{message}: {field} {found} is out of range {range}")]
    OutOfRange {
        /// The message.
        message: &'static str,
        /// The field.
        field: &'static str,
        /// The value received (public: a size or a count).
        found: u64,
        /// The allowed range.
        range: &'static str,
    },
    /// A message ends before a field it announced.
    #[error("{message} is truncated")]
    Truncated {
        /// The message.
        message: &'static str,
    },
    /// A text field is not UTF-8.
    #[error("{message}: the {field} is not text")]
    NotText {
        /// The message.
        message: &'static str,
        /// The field.
        field: &'static str,
    },
    /// The peer sent the dealer a payload where only empty flow-control frames are allowed.
    #[error(
        "the {role} sent a payload after the handshake; only empty flow-control frames are allowed"
    )]
    PayloadAfterHandshake {
        /// Who sent it.
        role: Role,
    },
    /// A registration whose epoch or commitment does not fit its seed.
    #[error(
        "the server's registration is inconsistent (epoch 0, or a commitment that is not its seed's)"
    )]
    BadRegistration,
    /// The server claimed a session the dealer does not hold.
    #[error(
        "the server claimed an unknown, expired or already claimed session; each half is delivered once"
    )]
    UnknownSession,
    /// The dealer delivered material for another session or role.
    #[error("the dealer delivered material for another session or role")]
    WrongMaterial,
    /// The dealer's material for one query exceeds the cap.
    #[error("the dealer's material exceeds the cap of {cap} bytes per query")]
    MaterialTooLarge {
        /// The cap in bytes.
        cap: u64,
    },
    /// The dealer's item chunks do not add up to the item it announced.
    #[error("the dealer's item chunks do not match the item's announced size")]
    ChunkMismatch,
}

/// What can go wrong serving, deploying or measuring. Messages never contain secret values.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A peer broke the protocol; its session ends.
    #[error(transparent)]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// The two sides loaded different plans.
    #[error(
        "public-plan hash mismatch (ours {ours}, theirs {theirs}): both sides must load the same compiled plan"
    )]
    PlanMismatch {
        /// Our public-plan hash (public).
        ours: String,
        /// The peer's public-plan hash (public).
        theirs: String,
    },
    /// The peer holds another mask epoch than the dealer serves.
    #[error(
        "the peer holds mask epoch {peer}, the dealer serves epoch {ours}; reconnect to the server"
    )]
    EpochMismatch {
        /// The peer's epoch.
        peer: u64,
        /// The dealer's epoch.
        ours: u64,
    },
    /// The client's link to the dealer was lost with a query that failed while its half
    /// was streaming.
    #[error("the link to the dealer was lost when an earlier query failed; reconnect the client")]
    DealerLinkLost,
    /// The dealer refused a session and said why.
    #[error("the dealer refused the session: {reason}")]
    SessionRefused {
        /// The dealer's reason (public text).
        reason: String,
    },
    /// The server did not claim its half of a session in time.
    #[error("the server did not claim its half within {seconds} s; the session is burnt")]
    ClaimTimedOut {
        /// The claim timeout.
        seconds: u64,
    },
    /// The dealer serves no more client sessions.
    #[error("the dealer is at its client limit")]
    ClientLimit,
    /// The dealer refused the server's registration and said why.
    #[error("the dealer refused this server's registration: {reason}")]
    RegistrationRefused {
        /// The dealer's reason (public text).
        reason: String,
    },
    /// The dealer has no registered server, so it serves no sessions yet.
    #[error(
        "the dealer has no server registered (it is starting, or its server restarted and has not registered again); retry in a few seconds"
    )]
    DealerNotReady,
    /// The dealer holds another weight seed for this epoch than the server announced.
    #[error(
        "the dealer's commitment to the weight seed of epoch {epoch} is not the server's: they would use different weight masks; restart the server so that it registers again"
    )]
    CommitmentMismatch {
        /// The epoch both sides named.
        epoch: u64,
    },
    /// A query asked for more samples than this server takes.
    #[error("the query asks for a batch of {asked} samples; this server takes at most {max}")]
    BatchLimit {
        /// The batch asked for.
        asked: usize,
        /// The server's limit.
        max: usize,
    },
    /// A shutdown was requested before the service could start.
    #[error("shut down before the service started")]
    ShutDown,
    /// The peer closed the connection before answering our hello. Over mutual TLS 1.3
    /// a peer that refuses our certificate does so after our side has finished its
    /// handshake, with an alert that a closing connection may lose: this is how a
    /// refused certificate usually shows.
    #[error(
        "the {peer} closed the connection before answering our hello: it most likely refused this party's certificate (revoked, expired, or signed by a CA it does not trust for this role; its log says which), or its process stopped"
    )]
    ClosedAtHandshake {
        /// The peer's role, as expected.
        peer: String,
    },
    /// A connection to a peer failed while doing something.
    #[error("{what}: {cause}")]
    Link {
        /// What was being done.
        what: &'static str,
        /// The channel's error.
        cause: veil_net::Error,
    },
    /// Connecting to a peer failed.
    #[error("connecting to the {role} at {address}: {cause}")]
    Connect {
        /// The peer's role.
        role: Role,
        /// The peer's address.
        address: String,
        /// The channel's error.
        cause: veil_net::Error,
    },
    /// An operating-system operation failed (a file, a socket, a thread, a process).
    #[error("{what}: {cause}")]
    Io {
        /// What was being done (names the file or address).
        what: String,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A certificate folder holds another role's certificate under this role's name.
    #[error("{path} is a {found} certificate")]
    WrongCertificate {
        /// The certificate file.
        path: String,
        /// The role it states.
        found: Role,
    },
    /// A client asked to prefetch more queries than a server holds for it.
    #[error("a client prefetches at most {max} queries, {asked} were asked for")]
    PrefetchTooDeep {
        /// Queries asked for.
        asked: usize,
        /// The most allowed.
        max: usize,
    },
    /// A name that is not one of the known ones (a model, a network profile).
    #[error("unknown {what} {name:?} (have: {have})")]
    Unknown {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
        /// The names known.
        have: &'static str,
    },
    /// A name this build knows but cannot run yet (a setting).
    #[error("{what} {name:?} is not available yet (have: {have})")]
    NotAvailable {
        /// What kind of name.
        what: &'static str,
        /// The name given.
        name: String,
        /// The names available.
        have: &'static str,
    },
    /// A run was asked for in a form it cannot take.
    #[error("{0}")]
    Unsupported(&'static str),
    /// A role process ended in failure.
    #[error("the {role} process failed ({status}); see its log above")]
    ProcessFailed {
        /// The process's role.
        role: Role,
        /// How it ended.
        status: String,
    },
    /// A role process's report could not be read.
    #[error("reading the {role}'s report: {cause}")]
    Report {
        /// The process's role.
        role: Role,
        /// What was wrong with it.
        cause: serde_json::Error,
    },
    /// A thread of this process panicked.
    #[error("a {what} thread panicked; see the log above")]
    ThreadPanicked {
        /// Which thread.
        what: &'static str,
    },
    /// A state this code never reaches (a bug: please report it).
    #[error("internal error: {0}; please report it")]
    Unreachable(&'static str),
    /// A channel error.
    #[error(transparent)]
    Net(#[from] veil_net::Error),
    /// A protocol error.
    #[error(transparent)]
    Mpc(#[from] veil_mpc::Error),
    /// An executor error.
    #[error(transparent)]
    Exec(#[from] veil_exec::Error),
    /// A model or plan error.
    #[error(transparent)]
    Model(#[from] veil_model::Error),
    /// A tensor, codec or randomness error.
    #[error(transparent)]
    Core(#[from] veil_core::Error),
    /// A text front-end error (tokenizer, tables).
    #[error(transparent)]
    Text(#[from] veil_text::Error),
}

impl Error {
    /// An I/O error while doing `what`.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |cause| Error::Io { what, cause }
    }

    /// A channel error while doing `what`.
    pub(crate) fn link(what: &'static str) -> impl FnOnce(veil_net::Error) -> Error {
        move |cause| Error::Link { what, cause }
    }

    /// This error, saying what was being done when its channel failed.
    pub(crate) fn during(self, what: &'static str) -> Error {
        match self {
            Error::Net(cause) => Error::Link { what, cause },
            other => other,
        }
    }
}

/// veil-serve's result type.
pub type Result<T> = std::result::Result<T, Error>;
