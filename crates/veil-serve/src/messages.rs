//! Every wire message of the service, each with one encoder and one decoder
//! (DESIGN.md §6).
//!
//! | message | from → to | form |
//! |---|---|---|
//! | [`Hello`] | everyone, first frame of every connection | `VEIL`, version u32, setting u8, role u8, epoch u64, weight commitment (32 bytes), hash length u16, hash, extension |
//! | [`ServerExtension`] | server → dealer, in its hello | `1` + weight seed (registers) or `2` + session id + claim token (claims a half) |
//! | [`RegistrationAnswer`] | dealer → server, after a registering hello | `0` (accepted) or `1` + reason (refused) |
//! | [`ClientExtension`] | client → dealer, in its hello | batch u64, prefetch depth u64 (at most 64) |
//! | [`SessionRequest`] | client → dealer | empty: "the next query" |
//! | [`SessionAnswer`] | dealer → client | `0` + claimable seconds u64 + claim token (a session follows) or `1` + reason (refused) |
//! | [`MaskedWeights`] | server → client, once per client session | D = W + B, u64 words in plan order |
//! | [`ClientMessage`] | client → server, between queries | `0` + session id + claim token + batch u64 (query start) or `1` + session id + claim token (claim ahead) |
//! | [`Ready`] | server → client | empty: "my half is in place" |
//! | material stream | dealer → each party | the half's header, then per item a header and its words in chunks ([`send_item`]), then an empty frame ([`MaterialStream`]) |
//!
//! Integers are little-endian; session ids and claim tokens are 16 bytes. Decoders check every length
//! before reading, allocate only what the bytes in hand (or one bounded chunk) can fill,
//! return [`crate::PeerMisbehaved`] naming the message and what was wrong, and never
//! panic (each has a fuzz target, `fuzz/fuzz_targets/serve_*.rs`).

use std::time::Duration;

use sha2::{Digest, Sha256};
use veil_core::RingTensor;
use veil_core::prg::{SEED_BYTES, Seed};
use veil_model::PublicPlan;
use veil_model::plan::ParameterKind;
use veil_mpc::material::{MaterialItem, Tag};
use veil_mpc::{MaterialFeeder, PartyMaterial};
use veil_net::{Channel, Role};
use zeroize::Zeroize;

use crate::{Error, PeerMisbehaved, Result};

/// The wire protocol version (2: weight commitments, claim tokens, registration answers).
pub const PROTOCOL_VERSION: u32 = 2;
const MAGIC: &[u8; 4] = b"VEIL";
/// The `dealer` setting's code.
pub const SETTING_DEALER: u8 = 1;
/// Bytes of a session id on the wire.
const SESSION_ID_BYTES: usize = 16;
/// Bytes of a claim token on the wire.
const TOKEN_BYTES: usize = 16;
/// Bytes of a weight commitment on the wire.
const COMMITMENT_BYTES: usize = 32;
/// The deepest prefetch a client may declare.
pub const MAX_PREFETCH: u64 = crate::roles::MAX_HELD_HALVES as u64;
/// The largest batch a query may ask for.
pub const MAX_BATCH: usize = 1 << 16;
/// The largest material a party accepts for one query (16 GiB).
pub const MAX_MATERIAL_BYTES: u64 = 16 << 30;
/// Material travels in frames of at most this many bytes, under the channel's frame cap.
pub const MATERIAL_CHUNK_BYTES: usize = 64 << 20;

fn session_id(bytes: &[u8]) -> Option<u128> {
    let bytes: [u8; SESSION_ID_BYTES] = bytes.try_into().ok()?;
    Some(u128::from_le_bytes(bytes))
}

fn token_at(bytes: &[u8]) -> Option<ClaimToken> {
    Some(ClaimToken(bytes.try_into().ok()?))
}

fn u64_at(bytes: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = bytes.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// A batch size in range, from its wire form.
fn batch(message: &'static str, value: u64) -> Result<usize> {
    usize::try_from(value)
        .ok()
        .filter(|batch| (1..=MAX_BATCH).contains(batch))
        .ok_or_else(|| {
            PeerMisbehaved::OutOfRange {
                message,
                field: "batch size",
                found: value,
                range: "1..=65536",
            }
            .into()
        })
}

fn expect_empty(message: &'static str, bytes: &[u8]) -> Result<()> {
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(PeerMisbehaved::WrongLength {
            message,
            expected: "0 bytes",
            found: bytes.len(),
        }
        .into())
    }
}

/// A commitment to the server's weight seed for one plan and mask epoch: SHA-256 over a
/// domain tag, the public-plan hash, the epoch and the seed. The server announces it to
/// every client and the dealer derives it from the seed it was given; clients and claims
/// carry it to the dealer, and each side checks the other's, so a server and a dealer
/// that hold different weight masks B under one epoch never run a session. Public: it
/// reveals nothing of a 256-bit random seed.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct WeightCommitment([u8; COMMITMENT_BYTES]);

impl WeightCommitment {
    /// No commitment: a side that holds no registered seed (a client before it met the
    /// server, a dealer waiting for its server).
    pub const NONE: Self = Self([0; COMMITMENT_BYTES]);

    /// The commitment to `seed` for `plan_hash` at `epoch`.
    pub fn of(seed: &Seed, epoch: u64, plan_hash: &str) -> Self {
        let mut hash = Sha256::new();
        hash.update(b"veil/weight-seed-commitment/v1\0");
        hash.update((plan_hash.len() as u64).to_le_bytes());
        hash.update(plan_hash.as_bytes());
        hash.update(epoch.to_le_bytes());
        let mut seed_bytes = seed.to_bytes();
        hash.update(seed_bytes);
        seed_bytes.zeroize();
        Self(hash.finalize().into())
    }

    /// Whether this is [`WeightCommitment::NONE`].
    pub fn is_none(&self) -> bool {
        *self == Self::NONE
    }

    /// The wire bytes.
    pub fn to_bytes(&self) -> [u8; COMMITMENT_BYTES] {
        self.0
    }

    /// From wire bytes.
    pub fn from_bytes(bytes: [u8; COMMITMENT_BYTES]) -> Self {
        Self(bytes)
    }
}

impl std::fmt::Debug for WeightCommitment {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let prefix: String = self.0[..4]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        write!(formatter, "WeightCommitment({prefix}…)")
    }
}

/// The dealer's proof of who asked for a session: a random 128-bit token it gives the
/// client with the session, which the client passes to the server and the server shows
/// with its claim. Knowing a session id (they appear in logs) is not enough to claim or
/// burn another client's session. Secret: its `Debug` prints nothing of it, and it is
/// compared in constant time.
#[derive(Clone, Copy)]
pub struct ClaimToken([u8; TOKEN_BYTES]);

impl ClaimToken {
    /// A fresh token from the OS RNG.
    pub fn random() -> Result<Self> {
        let mut seed = Seed::random()?.to_bytes();
        let mut token = [0u8; TOKEN_BYTES];
        token.copy_from_slice(&seed[..TOKEN_BYTES]);
        seed.zeroize();
        Ok(Self(token))
    }

    /// Whether `other` is this token (in constant time).
    pub fn matches(&self, other: &ClaimToken) -> bool {
        self.0
            .iter()
            .zip(&other.0)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
    }

    /// A token from its bytes (tests and fuzzing).
    pub fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> Self {
        Self(bytes)
    }
}

impl PartialEq for ClaimToken {
    fn eq(&self, other: &Self) -> bool {
        self.matches(other)
    }
}

impl Eq for ClaimToken {}

impl std::fmt::Debug for ClaimToken {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("ClaimToken(<secret>)")
    }
}

/// What one side announces first on every connection. Its `Debug` leaves out the
/// extension, which can hold the server's weight seed.
#[derive(Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's role.
    pub role: Role,
    /// The public-plan hash (hex).
    pub plan_hash: String,
    /// The mask epoch (0 when the sender does not know it yet).
    pub epoch: u64,
    /// The commitment to the weight seed of that epoch ([`WeightCommitment::NONE`] when
    /// the sender holds none yet).
    pub commitment: WeightCommitment,
    /// Extra bytes for this pair of roles (a [`ServerExtension`] to the dealer, a
    /// [`ClientExtension`] to the dealer); empty otherwise.
    pub extension: Vec<u8>,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Hello")
            .field("role", &self.role)
            .field("plan_hash", &self.plan_hash)
            .field("epoch", &self.epoch)
            .field("commitment", &self.commitment)
            .field(
                "extension",
                &format_args!("<{} bytes>", self.extension.len()),
            )
            .finish()
    }
}

/// Bytes of a hello before its plan hash.
const HELLO_FIXED_BYTES: usize = 20 + COMMITMENT_BYTES;

impl Hello {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes =
            Vec::with_capacity(HELLO_FIXED_BYTES + self.plan_hash.len() + self.extension.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&PROTOCOL_VERSION.to_le_bytes());
        bytes.push(SETTING_DEALER);
        bytes.push(self.role.code());
        bytes.extend_from_slice(&self.epoch.to_le_bytes());
        bytes.extend_from_slice(&self.commitment.to_bytes());
        bytes.extend_from_slice(&(self.plan_hash.len() as u16).to_le_bytes());
        bytes.extend_from_slice(self.plan_hash.as_bytes());
        bytes.extend_from_slice(&self.extension);
        bytes
    }

    /// Decodes a peer's hello, checking magic, version and setting.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const MESSAGE: &str = "the handshake";
        if bytes.len() < HELLO_FIXED_BYTES || &bytes[..4] != MAGIC {
            return Err(PeerMisbehaved::NotVeil.into());
        }
        let version = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if version != PROTOCOL_VERSION {
            return Err(PeerMisbehaved::ProtocolVersion { found: version }.into());
        }
        if bytes[8] != SETTING_DEALER {
            return Err(PeerMisbehaved::Setting { found: bytes[8] }.into());
        }
        let role =
            Role::from_code(bytes[9]).ok_or(PeerMisbehaved::UnknownRole { code: bytes[9] })?;
        let epoch = u64_at(&bytes[10..18]).ok_or(PeerMisbehaved::Truncated { message: MESSAGE })?;
        let commitment: [u8; COMMITMENT_BYTES] = bytes[18..18 + COMMITMENT_BYTES]
            .try_into()
            .map_err(|_| PeerMisbehaved::Truncated { message: MESSAGE })?;
        let at = 18 + COMMITMENT_BYTES;
        let hash_len = usize::from(u16::from_le_bytes([bytes[at], bytes[at + 1]]));
        let hash_end = HELLO_FIXED_BYTES + hash_len;
        let hash = bytes
            .get(HELLO_FIXED_BYTES..hash_end)
            .ok_or(PeerMisbehaved::Truncated { message: MESSAGE })?;
        let plan_hash = std::str::from_utf8(hash)
            .map_err(|_| PeerMisbehaved::NotText {
                message: MESSAGE,
                field: "plan hash",
            })?
            .to_string();
        Ok(Self {
            role,
            plan_hash,
            epoch,
            commitment: WeightCommitment::from_bytes(commitment),
            extension: bytes[hash_end..].to_vec(),
        })
    }
}

/// What a server's connection to the dealer is for: the extension of its [`Hello`].
/// Its `Debug` leaves out the weight seed.
#[derive(Clone)]
pub enum ServerExtension {
    /// The server registers, handing the dealer the weight seed (B's seed) of its epoch.
    Register {
        /// The seed the server and the dealer derive the weight mask B from (secret).
        weight_seed: Seed,
    },
    /// The server claims its half of a query session.
    Claim {
        /// The session the client named.
        session_id: u128,
        /// The token the dealer gave the client with that session (secret).
        token: ClaimToken,
    },
}

impl std::fmt::Debug for ServerExtension {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerExtension::Register { .. } => formatter.write_str("Register { <seed> }"),
            ServerExtension::Claim { session_id, .. } => formatter
                .debug_struct("Claim")
                .field("session_id", session_id)
                .finish(),
        }
    }
}

const SERVER_REGISTERS: u8 = 1;
const SERVER_CLAIMS: u8 = 2;

impl ServerExtension {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + SEED_BYTES.max(SESSION_ID_BYTES + TOKEN_BYTES));
        match self {
            ServerExtension::Register { weight_seed } => {
                bytes.push(SERVER_REGISTERS);
                bytes.extend_from_slice(&weight_seed.to_bytes());
            }
            ServerExtension::Claim { session_id, token } => {
                bytes.push(SERVER_CLAIMS);
                bytes.extend_from_slice(&session_id.to_le_bytes());
                bytes.extend_from_slice(&token.0);
            }
        }
        bytes
    }

    /// Decodes the extension of a server's hello.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const MESSAGE: &str = "the server's handshake extension";
        let wrong_length = |found| PeerMisbehaved::WrongLength {
            message: MESSAGE,
            expected: "33 bytes",
            found,
        };
        match bytes.split_first() {
            Some((&SERVER_REGISTERS, seed)) => {
                let seed: [u8; SEED_BYTES] =
                    seed.try_into().map_err(|_| wrong_length(bytes.len()))?;
                Ok(ServerExtension::Register {
                    weight_seed: Seed::from_bytes(seed),
                })
            }
            Some((&SERVER_CLAIMS, rest)) if rest.len() == SESSION_ID_BYTES + TOKEN_BYTES => {
                let (id, token) = rest.split_at(SESSION_ID_BYTES);
                Ok(ServerExtension::Claim {
                    session_id: session_id(id).ok_or(wrong_length(bytes.len()))?,
                    token: token_at(token).ok_or(wrong_length(bytes.len()))?,
                })
            }
            Some((&SERVER_CLAIMS, _)) => Err(wrong_length(bytes.len()).into()),
            Some((&kind, _)) => Err(PeerMisbehaved::UnknownKind {
                message: MESSAGE,
                kind,
            }
            .into()),
            None => Err(wrong_length(0).into()),
        }
    }
}

/// The dealer's answer to a server's registration: the server serves only once the
/// dealer has accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegistrationAnswer {
    /// The dealer holds the server's weight seed for its epoch and serves its sessions.
    Accepted,
    /// The dealer refused the registration and says why (public text).
    Refused {
        /// The dealer's reason.
        reason: String,
    },
}

const REGISTRATION_ACCEPTED: u8 = 0;
const REGISTRATION_REFUSED: u8 = 1;
/// The longest reason a peer's refusal may carry.
const MAX_REASON_BYTES: usize = 1024;

impl RegistrationAnswer {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            RegistrationAnswer::Accepted => vec![REGISTRATION_ACCEPTED],
            RegistrationAnswer::Refused { reason } => {
                let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON_BYTES)];
                let mut bytes = Vec::with_capacity(1 + reason.len());
                bytes.push(REGISTRATION_REFUSED);
                bytes.extend_from_slice(reason);
                bytes
            }
        }
    }

    /// Decodes the dealer's answer.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const MESSAGE: &str = "the dealer's answer to a registration";
        match bytes.split_first() {
            Some((&REGISTRATION_ACCEPTED, [])) => Ok(RegistrationAnswer::Accepted),
            Some((&REGISTRATION_REFUSED, reason)) => Ok(RegistrationAnswer::Refused {
                reason: refusal_reason(MESSAGE, reason)?,
            }),
            Some((&REGISTRATION_ACCEPTED, _)) | None => Err(PeerMisbehaved::WrongLength {
                message: MESSAGE,
                expected: "1 byte (accepted) or 1 + a reason (refused)",
                found: bytes.len(),
            }
            .into()),
            Some((&kind, _)) => Err(PeerMisbehaved::UnknownKind {
                message: MESSAGE,
                kind,
            }
            .into()),
        }
    }
}

/// A refusal's reason: UTF-8 text of at most [`MAX_REASON_BYTES`].
fn refusal_reason(message: &'static str, bytes: &[u8]) -> Result<String> {
    if bytes.len() > MAX_REASON_BYTES {
        return Err(PeerMisbehaved::OutOfRange {
            message,
            field: "reason length",
            found: bytes.len() as u64,
            range: "0..=1024",
        }
        .into());
    }
    Ok(std::str::from_utf8(bytes)
        .map_err(|_| PeerMisbehaved::NotText {
            message,
            field: "reason",
        })?
        .to_string())
}

/// What a client declares to the dealer: the extension of its [`Hello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientExtension {
    /// Samples per query (1..=65536).
    pub batch: usize,
    /// Queries' halves it holds ahead of time (0: none; at most [`MAX_PREFETCH`]).
    pub prefetch: u64,
}

impl ClientExtension {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(16);
        bytes.extend_from_slice(&(self.batch as u64).to_le_bytes());
        bytes.extend_from_slice(&self.prefetch.to_le_bytes());
        bytes
    }

    /// Decodes the extension of a client's hello to the dealer.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const MESSAGE: &str =
            "the client's handshake extension (its batch size and prefetch depth)";
        let (Some(batch_value), Some(prefetch)) = (
            bytes.get(..8).and_then(u64_at),
            bytes.get(8..).and_then(u64_at),
        ) else {
            return Err(PeerMisbehaved::WrongLength {
                message: MESSAGE,
                expected: "16 bytes",
                found: bytes.len(),
            }
            .into());
        };
        if prefetch > MAX_PREFETCH {
            return Err(PeerMisbehaved::OutOfRange {
                message: MESSAGE,
                field: "prefetch depth",
                found: prefetch,
                range: "0..=64",
            }
            .into());
        }
        Ok(Self {
            batch: batch(MESSAGE, batch_value)?,
            prefetch,
        })
    }
}

/// The client asks the dealer for its next query session: an empty frame (the only
/// kind of frame the dealer receives after a handshake).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionRequest;

impl SessionRequest {
    /// The wire form: empty.
    pub fn encode(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Checks a frame the dealer received from `role` after its handshake.
    pub fn decode(bytes: &[u8], role: Role) -> Result<Self> {
        if bytes.is_empty() {
            Ok(SessionRequest)
        } else {
            Err(PeerMisbehaved::PayloadAfterHandshake { role }.into())
        }
    }
}

/// The dealer's answer to a [`SessionRequest`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionAnswer {
    /// A session follows (its half's header, then its items); the server's half waits
    /// this long for the server's claim.
    Follows {
        /// How long the server's half stays claimable.
        claimable: Duration,
        /// The token the server must show to claim its half (secret).
        token: ClaimToken,
    },
    /// No session: the dealer says why (public text).
    Refused {
        /// The dealer's reason.
        reason: String,
    },
}

const SESSION_FOLLOWS: u8 = 0;
const SESSION_REFUSED: u8 = 1;

impl SessionAnswer {
    /// The wire form (the claimable time in whole seconds).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            SessionAnswer::Follows { claimable, token } => {
                let mut bytes = Vec::with_capacity(1 + 8 + TOKEN_BYTES);
                bytes.push(SESSION_FOLLOWS);
                bytes.extend_from_slice(&claimable.as_secs().to_le_bytes());
                bytes.extend_from_slice(&token.0);
                bytes
            }
            SessionAnswer::Refused { reason } => {
                let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON_BYTES)];
                let mut bytes = Vec::with_capacity(1 + reason.len());
                bytes.push(SESSION_REFUSED);
                bytes.extend_from_slice(reason);
                bytes
            }
        }
    }

    /// Decodes the dealer's answer.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const MESSAGE: &str = "the dealer's answer to a session request";
        match bytes.split_first() {
            Some((&SESSION_FOLLOWS, rest)) => {
                let wrong_length = || PeerMisbehaved::WrongLength {
                    message: MESSAGE,
                    expected: "25 bytes",
                    found: bytes.len(),
                };
                if rest.len() != 8 + TOKEN_BYTES {
                    return Err(wrong_length().into());
                }
                let (seconds, token) = rest.split_at(8);
                Ok(SessionAnswer::Follows {
                    claimable: Duration::from_secs(u64_at(seconds).ok_or_else(wrong_length)?),
                    token: token_at(token).ok_or_else(wrong_length)?,
                })
            }
            Some((&SESSION_REFUSED, reason)) => Ok(SessionAnswer::Refused {
                reason: refusal_reason(MESSAGE, reason)?,
            }),
            Some((&kind, _)) => Err(PeerMisbehaved::UnknownKind {
                message: MESSAGE,
                kind,
            }
            .into()),
            None => Err(PeerMisbehaved::WrongLength {
                message: MESSAGE,
                expected: "at least 1 byte",
                found: 0,
            }
            .into()),
        }
    }
}

/// D = W + B, the masked weights the server sends a client once per client session:
/// every weight tensor's words in plan order, without names (the plan gives names and
/// shapes).
pub struct MaskedWeights;

impl MaskedWeights {
    /// The weight parameters of a plan, in wire order: (name, shape, words).
    fn layout(plan: &PublicPlan) -> impl Iterator<Item = (&String, &Vec<usize>, usize)> {
        plan.parameters
            .iter()
            .filter(|info| info.kind == ParameterKind::Weight)
            .map(|info| (&info.name, &info.shape, info.shape.iter().product()))
    }

    /// The wire form of `masked` (every weight of `plan`, by name).
    pub fn encode(
        plan: &PublicPlan,
        masked: &std::collections::HashMap<String, RingTensor>,
    ) -> Result<Vec<u8>> {
        let words: usize = Self::layout(plan).map(|(_, _, words)| words).sum();
        let mut bytes = Vec::with_capacity(8 * words);
        for (name, _, _) in Self::layout(plan) {
            let tensor = masked.get(name).ok_or(Error::Unreachable(
                "a weight of the plan has no masked form",
            ))?;
            for word in tensor.data() {
                bytes.extend_from_slice(&word.to_le_bytes());
            }
        }
        Ok(bytes)
    }

    /// Decodes D against `plan`: (name, tensor) per weight, in plan order. The length is
    /// checked against the plan before anything is allocated.
    pub fn decode(plan: &PublicPlan, bytes: &[u8]) -> Result<Vec<(String, RingTensor)>> {
        const MESSAGE: &str = "the server's masked weights";
        let expected = Self::layout(plan)
            .try_fold(0usize, |total, (_, _, words)| {
                words.checked_mul(8).and_then(|b| total.checked_add(b))
            })
            .ok_or(Error::Unreachable(
                "the plan's weights overflow a byte count",
            ))?;
        if bytes.len() != expected {
            return Err(PeerMisbehaved::WrongLength {
                message: MESSAGE,
                expected: "8 bytes per weight of the plan",
                found: bytes.len(),
            }
            .into());
        }
        let mut weights = Vec::new();
        let mut offset = 0;
        for (name, shape, words) in Self::layout(plan) {
            let data = bytes[offset..offset + 8 * words]
                .chunks_exact(8)
                .map(|word| u64_at(word).unwrap_or_default())
                .collect();
            weights.push((name.clone(), RingTensor::new(shape.clone(), data)?));
            offset += 8 * words;
        }
        Ok(weights)
    }
}

/// What a client tells the server between queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientMessage {
    /// Run a query with this session's material at this batch size.
    QueryStart {
        /// The session the dealer gave the client.
        session_id: u128,
        /// The session's claim token, for the server's claim (secret).
        token: ClaimToken,
        /// Samples in this query (1..=65536).
        batch: usize,
    },
    /// Claim this session's half now, for a later query.
    ClaimAhead {
        /// The session the dealer gave the client.
        session_id: u128,
        /// The session's claim token, for the server's claim (secret).
        token: ClaimToken,
    },
}

const QUERY_START: u8 = 0;
const CLAIM_AHEAD: u8 = 1;

impl ClientMessage {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(1 + SESSION_ID_BYTES + TOKEN_BYTES + 8);
        match self {
            ClientMessage::QueryStart {
                session_id,
                token,
                batch,
            } => {
                bytes.push(QUERY_START);
                bytes.extend_from_slice(&session_id.to_le_bytes());
                bytes.extend_from_slice(&token.0);
                bytes.extend_from_slice(&(*batch as u64).to_le_bytes());
            }
            ClientMessage::ClaimAhead { session_id, token } => {
                bytes.push(CLAIM_AHEAD);
                bytes.extend_from_slice(&session_id.to_le_bytes());
                bytes.extend_from_slice(&token.0);
            }
        }
        bytes
    }

    /// Decodes a client's message between queries.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const MESSAGE: &str = "the client's message between queries";
        let wrong_length = || PeerMisbehaved::WrongLength {
            message: MESSAGE,
            expected: "41 bytes (a query start) or 33 (a claim-ahead notice)",
            found: bytes.len(),
        };
        match bytes.split_first() {
            Some((&QUERY_START, rest)) if rest.len() == SESSION_ID_BYTES + TOKEN_BYTES + 8 => {
                let (id, rest) = rest.split_at(SESSION_ID_BYTES);
                let (token, batch_value) = rest.split_at(TOKEN_BYTES);
                Ok(ClientMessage::QueryStart {
                    session_id: session_id(id).ok_or_else(wrong_length)?,
                    token: token_at(token).ok_or_else(wrong_length)?,
                    batch: batch(MESSAGE, u64_at(batch_value).ok_or_else(wrong_length)?)?,
                })
            }
            Some((&CLAIM_AHEAD, rest)) if rest.len() == SESSION_ID_BYTES + TOKEN_BYTES => {
                let (id, token) = rest.split_at(SESSION_ID_BYTES);
                Ok(ClientMessage::ClaimAhead {
                    session_id: session_id(id).ok_or_else(wrong_length)?,
                    token: token_at(token).ok_or_else(wrong_length)?,
                })
            }
            Some((&QUERY_START | &CLAIM_AHEAD, _)) | None => Err(wrong_length().into()),
            Some((&kind, _)) => Err(PeerMisbehaved::UnknownKind {
                message: MESSAGE,
                kind,
            }
            .into()),
        }
    }
}

/// The server tells the client its half is in place and the query may start: an empty
/// frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ready;

impl Ready {
    /// The wire form: empty.
    pub fn encode(&self) -> Vec<u8> {
        Vec::new()
    }

    /// Decodes the server's ready message.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        expect_empty("the server's ready message", bytes).map(|()| Ready)
    }
}

/// Sends one streamed material item: a header frame, then its words in chunks under
/// the frame cap. [`MaterialStream`] decodes it.
pub fn send_item(channel: &mut impl Channel, item: &MaterialItem) -> veil_net::Result<()> {
    channel.send(&item.encoded_header())?;
    for chunk in item.words().chunks(MATERIAL_CHUNK_BYTES / 8) {
        let mut bytes: Vec<u8> = chunk.iter().flat_map(|word| word.to_le_bytes()).collect();
        let sent = channel.send(&bytes);
        // The copy held material words: zeroise it (the channel zeroises its own).
        bytes.zeroize();
        sent?;
    }
    Ok(())
}

/// Ends a material stream: an empty frame.
pub fn send_end(channel: &mut impl Channel) -> veil_net::Result<()> {
    channel.send(&[])
}

/// The bytes an item occupies on the wire and in memory (header and words).
pub fn item_bytes(item: &MaterialItem) -> u64 {
    (item.encoded_header().len() + 8 * item.words().len()) as u64
}

/// Where a [`MaterialStream`] puts each item once its words are complete.
enum Destination<'a> {
    /// A whole half, in memory.
    Whole(&'a mut PartyMaterial),
    /// A streaming half's bounded queue, which the party drains as it runs.
    Feed(&'a MaterialFeeder),
}

/// Decodes a material stream frame by frame into a half whose header has arrived:
/// items (a header frame, then chunk frames of whole words) until an empty frame.
/// Every announced size is checked against [`MAX_MATERIAL_BYTES`], and an item's words
/// are allocated at most one chunk ahead of the bytes that arrived.
pub struct MaterialStream<'a> {
    destination: Destination<'a>,
    total_words: u64,
    items: u64,
    /// The item whose words are arriving, and its words so far.
    current: Option<(Tag, Vec<u64>)>,
    done: bool,
}

impl<'a> MaterialStream<'a> {
    /// A stream into `material` (its header decoded already), kept whole.
    pub fn new(material: &'a mut PartyMaterial) -> Self {
        Self::into_destination(Destination::Whole(material))
    }

    /// A stream into a streaming half's `feeder`: each item goes to the party's bounded
    /// queue as soon as its words are complete, waiting while the queue is full.
    pub fn feeding(feeder: &'a MaterialFeeder) -> Self {
        Self::into_destination(Destination::Feed(feeder))
    }

    fn into_destination(destination: Destination<'a>) -> Self {
        Self {
            destination,
            total_words: 0,
            items: 0,
            current: None,
            done: false,
        }
    }

    /// Whether the end frame has arrived.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes of the items announced so far (headers and words, as [`item_bytes`]).
    pub fn item_bytes(&self) -> u64 {
        self.items
            .saturating_mul(ITEM_HEADER_BYTES)
            .saturating_add(self.total_words.saturating_mul(8))
    }

    /// Takes the stream's next frame.
    pub fn accept(&mut self, frame: &[u8]) -> Result<()> {
        if self.done {
            return Err(Error::Unreachable(
                "a material stream was fed after its end",
            ));
        }
        let Some((tag, mut words)) = self.current.take() else {
            if frame.is_empty() {
                self.done = true;
                return Ok(());
            }
            let tag = MaterialItem::decode_header(frame)?;
            self.items += 1;
            self.total_words = self.total_words.saturating_add(tag.words);
            if self.total_words.saturating_mul(8) > MAX_MATERIAL_BYTES {
                return Err(PeerMisbehaved::MaterialTooLarge {
                    cap: MAX_MATERIAL_BYTES,
                }
                .into());
            }
            // Bounded by the cap above, and allocated one chunk at a time.
            let expected =
                usize::try_from(tag.words).map_err(|_| PeerMisbehaved::MaterialTooLarge {
                    cap: MAX_MATERIAL_BYTES,
                })?;
            let words = Vec::with_capacity(expected.min(MATERIAL_CHUNK_BYTES / 8));
            return self.item_words(tag, words);
        };
        let expected = usize::try_from(tag.words).unwrap_or(usize::MAX);
        if frame.is_empty()
            || !frame.len().is_multiple_of(8)
            || frame.len() / 8 > expected - words.len()
        {
            return Err(PeerMisbehaved::ChunkMismatch.into());
        }
        words.extend(
            frame
                .chunks_exact(8)
                .map(|word| u64_at(word).unwrap_or_default()),
        );
        self.item_words(tag, words)
    }

    /// Keeps an item until its words are complete, then hands it on.
    fn item_words(&mut self, tag: Tag, words: Vec<u64>) -> Result<()> {
        if words.len() as u64 == tag.words {
            match &mut self.destination {
                Destination::Whole(material) => material.push_streamed(tag, words)?,
                Destination::Feed(feeder) => feeder.push(tag, words)?,
            }
        } else {
            self.current = Some((tag, words));
        }
        Ok(())
    }

    /// Receives frames from `channel` until the end frame.
    pub fn receive(mut self, channel: &mut impl Channel) -> Result<()> {
        self.receive_all(channel)
    }

    fn receive_all(&mut self, channel: &mut impl Channel) -> Result<()> {
        while !self.done {
            let mut frame = channel.recv()?;
            let accepted = self.accept(&frame);
            // The frame held material words (now copied into the item): zeroise it.
            frame.zeroize();
            accepted?;
        }
        Ok(())
    }
}

/// Bytes of a streamed item's header on the wire (as [`MaterialItem::encoded_header`]).
const ITEM_HEADER_BYTES: u64 = 4 + 1 + 8;

/// Receives streamed items into `material` (whose header has arrived) until the end
/// frame.
pub fn receive_items(channel: &mut impl Channel, material: &mut PartyMaterial) -> Result<()> {
    MaterialStream::new(material).receive(channel)
}

/// Receives one party's streamed material: its header, then items until the end frame.
pub fn receive_material(channel: &mut impl Channel) -> Result<PartyMaterial> {
    let mut material = PartyMaterial::decode(&channel.recv()?)?;
    receive_items(channel, &mut material)?;
    Ok(material)
}

/// Feeds a streaming half from `channel` (its header received): each item goes to
/// `feeder` as it completes, then the end mark after the end frame. Run on a thread of
/// its own while the party consumes. On an error the stream is failed with its
/// (public) message, so the party's next take reports it, and the error is returned;
/// a party that stops taking material stops this at its next item. Returns the bytes
/// of the items received.
pub fn feed_items(channel: &mut impl Channel, feeder: MaterialFeeder) -> Result<u64> {
    let mut stream = MaterialStream::feeding(&feeder);
    let received = stream.receive_all(channel);
    let bytes = stream.item_bytes();
    match received {
        Ok(()) => {
            feeder.finish()?;
            Ok(bytes)
        }
        Err(error) => {
            feeder.fail(error.to_string());
            Err(error)
        }
    }
}

#[cfg(test)]
mod tests;
