//! veil-serve: the server, dealer and client services of the `dealer` setting, and the
//! harnesses that run them (in one process for the demo and the tests, as processes of
//! their own for measurements).
//!
//! # What this crate does not do
//! No protocol arithmetic and no executor (veil-mpc, veil-exec: the roles only call
//! them), no plan files or compiling (veil-model), no sockets, framing or TLS of its own
//! (veil-net), no async runtime, and no cluster management (more throughput is more
//! server replicas behind an ordinary load balancer). The `rep3` helper is not served
//! yet. [`deployment::Deployment`] and [`demo`] put every role in one process: a
//! demonstration and a test harness, never a deployment.
//!
//! # Main types
//! - The roles ([`roles`]): [`roles::run_dealer`], [`roles::run_server`] (with its
//!   [`roles::ServerState`]) and [`roles::Client`], one file each. The dealer keeps a
//!   preprocessing pool bounded in bytes ([`pool::Pool`]); the dealer and the server
//!   serve Prometheus metrics ([`metrics`]).
//! - Every connection is a [`transport::Transport`] link (mutual TLS with role-bound
//!   certificates and trust roots per peer role, loaded from a party folder laid out by
//!   [`certificates`], or plain TCP on loopback for tests) that starts with
//!   [`handshake::handshake`]: version, setting, [`veil_net::Role`], public-plan hash
//!   and mask epoch are checked before any share moves. Every message after it is in
//!   [`messages`], one encoder and one decoder each.
//! - [`deployment::Deployment`] runs the dealer and the server on threads over loopback
//!   and connects clients to them; [`processes`] runs each role as a process of its own
//!   and reads its report, for [`bench`](mod@bench) and [`load`].
//! - [`embed`]: sentence embeddings of a text plan (`veil embed`), the client's side
//!   against any deployment and every role in one process with a plain check.
//! - [`Error`] keeps a peer that broke the protocol ([`PeerMisbehaved`]) apart from
//!   local and configuration errors and from the errors of the crates below.
//!
//! ```
//! use veil_serve::deployment::{Deployment, DeploymentOptions};
//! use veil_serve::pool::PoolConfig;
//! use veil_serve::roles::{ClientOptions, DealerOptions};
//!
//! let plan = veil_model::zoo::random_mlp("example", &[4, 3, 2], 0)?;
//! let dealer = DealerOptions {
//!     max_clients: Some(1),
//!     pool: PoolConfig { capacity_bytes: 1 << 20, ..PoolConfig::default() },
//!     ..DealerOptions::default()
//! };
//! let options = DeploymentOptions {
//!     dealer,
//!     server_clients: Some(1),
//!     ..DeploymentOptions::default()
//! };
//! let deployment = Deployment::start(&plan, options)?;
//! let mut client = deployment.connect_client(plan.public.clone(), ClientOptions::default())?;
//! let input = [0.5, -0.25, 1.0, 0.0];
//! let report = client.query(&input)?;
//! let plain = veil_model::plain::run_plain(&plan, &input, 1)?;
//! assert!(plain.iter().zip(&report.output).all(|(p, s)| (p - s).abs() < 0.01));
//! drop(client);
//! let (dealer, server) = deployment.finish()?;
//! assert_eq!(dealer.payload_bytes_received_after_handshake, 0);
//! assert_eq!(server.queries, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Secrets
//! Secret here: the server's weights and its weight seed (which it hands the dealer in
//! its registration), the masked weights D (sent to clients only), every material half
//! (its header holds the party's seed), inputs and outputs. None of them is logged or
//! appears in an error, and the types that carry them ([`messages::Hello`],
//! [`messages::ServerExtension`], [`pool::Half`]) print sizes only. Logs, metrics and
//! errors carry roles, addresses, sizes, counts, times, session ids, mask epochs and
//! public-plan hashes: they are safe to archive.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod bench;
pub mod certificates;
pub mod chaos;
pub mod demo;
pub mod deployment;
pub mod embed;
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
