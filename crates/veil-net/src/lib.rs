//! veil-net: the blocking, full-duplex channels veil's parties talk over.
//!
//! A [`Channel`] carries length-prefixed frames between two parties and counts exactly
//! what crosses it ([`ChannelStats`]: bytes with and without frame headers, frames, and
//! rounds, a round being one blocking receive). [`MemoryChannel`] joins two parties in
//! one process (unit tests); [`TcpChannel`] joins two processes, and
//! [`tls::TlsChannel`] joins them over mutual TLS with each party's [`Role`] (and name)
//! bound into its certificate, verified against the CAs the party trusts for that role
//! ([`tls::TrustRoots`]). [`pki`] makes CAs, per-party keys and signing requests,
//! certificates and revocation lists.
//!
//! [`NetworkProfile`] simulates `lan` and `wan` links on the receive side.
//! [`SessionChannel`] tags every frame of a query with its session id.
//!
//! `send` never waits for the peer (TCP writes happen on one I/O thread per
//! connection), so [`Channel::exchange`] writes and reads concurrently and two parties
//! that both send large messages before receiving cannot deadlock.
//!
//! # What this crate does not do
//! No protocol logic and no serialisation beyond framing (and the one-byte wire code of
//! a [`Role`]). Connections between processes are mutual TLS ([`tls`]); plain TCP is
//! available only through `dangerous_*` constructors that refuse non-loopback
//! addresses.
//!
//! # Secrets
//! Frames carry masked values and key material; this crate never logs or prints frame
//! contents, and its errors name sizes and addresses only. Private keys (a party's, a
//! CA's) never appear in a `Debug` print or an error; roles, names and serial numbers
//! are public.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

mod error;
mod frame;
mod memory;
pub mod pki;
mod role;
mod session;
mod shaping;
mod tcp;
pub mod tls;

pub use error::{Error, Result};
pub use frame::{DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_BYTES, read_frames};
pub use memory::{MemoryChannel, memory_pair};
pub use role::{Role, UnknownRole};
pub use session::{SESSION_TAG_BYTES, SessionChannel};
pub use shaping::NetworkProfile;
pub use tcp::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_KEEPALIVE_IDLE, TcpChannel, TcpOptions,
    dangerous_listen_insecure,
};

/// What crossed a channel, counted exactly.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Bytes sent, frame headers included.
    pub bytes_sent: u64,
    /// Bytes received, frame headers included.
    pub bytes_received: u64,
    /// Payload bytes sent (headers excluded).
    pub payload_bytes_sent: u64,
    /// Payload bytes received (headers excluded).
    pub payload_bytes_received: u64,
    /// Frames sent.
    pub frames_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Rounds: the number of times this side blocked on a receive.
    pub rounds: u64,
}

impl ChannelStats {
    /// The counts accumulated since `earlier` (a snapshot taken before).
    pub fn since(&self, earlier: &ChannelStats) -> ChannelStats {
        ChannelStats {
            bytes_sent: self.bytes_sent - earlier.bytes_sent,
            bytes_received: self.bytes_received - earlier.bytes_received,
            payload_bytes_sent: self.payload_bytes_sent - earlier.payload_bytes_sent,
            payload_bytes_received: self.payload_bytes_received - earlier.payload_bytes_received,
            frames_sent: self.frames_sent - earlier.frames_sent,
            frames_received: self.frames_received - earlier.frames_received,
            rounds: self.rounds - earlier.rounds,
        }
    }

    pub(crate) fn record_send(&mut self, payload_len: usize) {
        self.bytes_sent += (payload_len + FRAME_HEADER_BYTES) as u64;
        self.payload_bytes_sent += payload_len as u64;
        self.frames_sent += 1;
    }

    pub(crate) fn record_receive(&mut self, payload_len: usize) {
        self.bytes_received += (payload_len + FRAME_HEADER_BYTES) as u64;
        self.payload_bytes_received += payload_len as u64;
        self.frames_received += 1;
        self.rounds += 1;
    }
}

/// A blocking, full-duplex, framed connection to one peer.
pub trait Channel: Send {
    /// Queues one frame for the peer. Never waits for the peer to read.
    fn send(&mut self, payload: &[u8]) -> Result<()>;

    /// Blocks until the peer's next frame arrives (one round).
    fn recv(&mut self) -> Result<Vec<u8>>;

    /// Sends `payload` and receives the peer's frame, concurrently: one round.
    fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        self.send(payload)?;
        self.recv()
    }

    /// What has crossed this channel so far.
    fn stats(&self) -> ChannelStats;
}

impl<T: Channel + ?Sized> Channel for &mut T {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        (**self).send(payload)
    }
    fn recv(&mut self) -> Result<Vec<u8>> {
        (**self).recv()
    }
    fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        (**self).exchange(payload)
    }
    fn stats(&self) -> ChannelStats {
        (**self).stats()
    }
}

impl<T: Channel + ?Sized> Channel for Box<T> {
    fn send(&mut self, payload: &[u8]) -> Result<()> {
        (**self).send(payload)
    }
    fn recv(&mut self) -> Result<Vec<u8>> {
        (**self).recv()
    }
    fn exchange(&mut self, payload: &[u8]) -> Result<Vec<u8>> {
        (**self).exchange(payload)
    }
    fn stats(&self) -> ChannelStats {
        (**self).stats()
    }
}
