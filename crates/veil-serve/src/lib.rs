//! veil-serve: the server, dealer and client processes of the `dealer` setting.
//!
//! [`roles::run_dealer`], [`roles::run_server`] and [`roles::Client`] are the three roles;
//! each connection starts with [`handshake::handshake`], which checks protocol version,
//! setting, role and public-plan hash before any share moves.
//!
//! Sessions run concurrently, a thread each. The dealer pre-generates material into a
//! pool bounded in bytes ([`pool::Pool`]) and clients may prefetch their halves for the
//! next queries; both roles serve Prometheus metrics ([`metrics`]). Connections are
//! mutual TLS with role-bound certificates ([`transport::Transport`]), or plain TCP on
//! loopback for tests.
//!
//! # Secrets
//! Logs carry counts, sizes and times only: never a share, weight, input, seed or key.
#![forbid(unsafe_code)]

pub mod bench;
pub mod demo;
pub mod deployment;
mod error;
pub mod handshake;
pub mod load;
pub mod messages;
pub mod metrics;
pub mod pool;
pub mod processes;
pub mod roles;
pub mod transport;

pub use error::{Error, PeerMisbehaved, Result};
