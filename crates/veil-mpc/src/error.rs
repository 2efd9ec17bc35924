//! The one error type of veil-mpc.

use crate::dealer::material::Tag;

/// A peer (or the dealer) sent something the protocol does not allow. The session must
/// abort; retrying with the same material is never right.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PeerMisbehaved {
    /// A protocol message had the wrong length.
    #[error("{op}: the peer's message has {found} bytes, expected {expected}")]
    WrongMessageLength {
        /// The protocol step.
        op: &'static str,
        /// The expected byte length.
        expected: usize,
        /// The received byte length.
        found: usize,
    },
    /// Preprocessing material could not be decoded.
    #[error("malformed preprocessing material: {0}")]
    MalformedMaterial(&'static str),
}

/// What can go wrong in a protocol run. Messages never contain shares, weights, inputs
/// or seeds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The peer broke the protocol; abort the session.
    #[error("peer misbehaved: {0}")]
    PeerMisbehaved(#[from] PeerMisbehaved),
    /// The preprocessing material does not match the step being run: the dealer and the
    /// parties ran different plans, or material was lost or reordered.
    #[error(
        "preprocessing out of step: expected {expected}, found {found}; the dealer and this \
         party disagree on the plan or the material was damaged; start a new session"
    )]
    MaterialMismatch {
        /// What this step needed.
        expected: Tag,
        /// What the material held next ("nothing" when exhausted).
        found: String,
    },
    /// Preprocessing material was left over when the query ended.
    #[error(
        "{left} preprocessing items were left unused at the end of the query; the plans differ"
    )]
    MaterialLeftOver {
        /// Unused items.
        left: usize,
    },
    /// A streaming half's feeder failed, or its stream was cut before its end (the
    /// dealer's link failed or it sent something malformed); start a new session.
    #[error("the preprocessing stream failed: {reason}; start a new session")]
    MaterialStreamFailed {
        /// Why (public text: roles, sizes and link errors, never material).
        reason: String,
    },
    /// A feeder pushed an item to a half its party had dropped (the query ended early).
    #[error("the party stopped taking preprocessing material (its query ended early)")]
    MaterialConsumerGone,
    /// A session's material was presented a second time.
    #[error("the preprocessing of this session was already consumed; material is used once only")]
    MaterialReused,

    /// A batch size the material header cannot state.
    #[error("a batch of {batch} samples is out of range (1..=4294967295)")]
    InvalidBatch {
        /// The batch asked for.
        batch: usize,
    },

    /// The query runs at another batch size than its material was made for.
    #[error(
        "the query asks for a batch of {asked} samples but its material was made for {made}; start the query with the batch its session was requested with"
    )]
    BatchMismatch {
        /// The query's batch.
        asked: usize,
        /// The material's batch.
        made: usize,
    },
    /// The plan names a parameter this party does not hold.
    #[error("the plan names parameter {name:?}, which this party does not hold")]
    MissingParameter {
        /// The parameter name (public: it is part of the plan).
        name: String,
    },
    /// An operation was called with operands it cannot take (a bug in the caller, never
    /// caused by untrusted data).
    #[error("{op}: {detail}")]
    ApiMisuse {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// The range-checking simulation met an operand outside its op's documented range
    /// (never raised by the secure settings, which cannot see values).
    #[error("{op}: {detail}")]
    OutOfRange {
        /// The operation.
        op: &'static str,
        /// The documented range that was left (never a value).
        detail: String,
    },
    /// Whoever receives the generated material stopped the generation (for instance a
    /// pool whose capacity the material would exceed).
    #[error("material generation stopped: {0}")]
    Stopped(&'static str),
    /// A tensor-level error (shape mismatch, value out of range).
    #[error(transparent)]
    Core(#[from] veil_core::Error),
    /// A channel error (peer gone, timeout, oversized frame).
    #[error(transparent)]
    Net(#[from] veil_net::Error),
}

/// veil-mpc's result type.
pub type Result<T> = std::result::Result<T, Error>;
