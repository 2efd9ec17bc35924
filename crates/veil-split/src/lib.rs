//! veil-split: the asymmetric split mode. A trusted runtime (the enclave stand-in) keeps
//! the low-rank part of every activation; an untrusted worker does the rest of the
//! arithmetic, for inference and training; a Slalom-style blinded mode is measured
//! beside it.
//!
//! This is AsymmetricML (Niu & Avestimehr; the protocol cookbook,
//! `shared/reference/protocols.md` §6.1) against Slalom's blinding (Tramèr & Boneh,
//! §6.2):
//!
//! - [`svd`]: the light-weight SVD (Algorithm 1) that splits each sample's `c × hw`
//!   activation into `r` principal channels and a residual, with `r` the smallest rank
//!   keeping a given energy fraction (97%: Asym1; 80%: Asym2);
//! - [`subspace`]: the same split inside a channel subspace calibrated offline per
//!   layer, which makes the per-sample weight combination cheaper in inference;
//! - [`network`]: the two benchmark CNNs (`vgg-small`, `resnet18-small`) and their
//!   forward and backward passes over an [`network::Executor`] that decides who
//!   computes each convolution;
//! - [`trusted`]: the trusted side's executors, [`trusted::SplitExecutor`] (equations
//!   4a/4b forward, 5–6 backward) and [`trusted::BlindedExecutor`] (one-time pads over
//!   Z_2^64);
//! - [`worker`]: the untrusted worker, serving [`msgs`] requests over a
//!   [`veil_net::Channel`] on every core;
//! - [`bench`](mod@bench): `veil split-bench`: trusted-only, untrusted-only, blinded and split,
//!   their trusted MACs and times, and split against plain training;
//! - [`leakage`]: an attacker who sees what the worker sees and inverts it (ridge
//!   regression), scored by PSNR/SSIM, with a PNG grid ([`png`]).
//!
//! ```
//! use veil_split::network::{self, Architecture, LocalExecutor, Model};
//! use veil_split::svd::{Basis, SvdOptions};
//! use veil_split::trusted::{SplitExecutor, load_model};
//! use veil_split::worker::Worker;
//!
//! let model = Model::new(Architecture::VggSmall, 7);
//! let images = vec![0.5f32; 2 * 28 * 28];
//! let (plain, _) = network::forward(&model, &mut LocalExecutor::new(1), &images, 2, false)?;
//!
//! let (mut trusted, mut untrusted) = veil_net::memory_pair();
//! let worker = std::thread::spawn(move || Worker::new(2).serve(&mut untrusted));
//! load_model(&mut trusted, &model, &mut Default::default())?;
//! let options = SvdOptions { energy: 0.97, iterations: 1, basis: Basis::Batch };
//! let mut split = SplitExecutor::new(&mut trusted, &model, options);
//! let (logits, _) = network::forward(&model, &mut split, &images, 2, false)?;
//! assert!(logits.iter().zip(&plain).all(|(a, b)| (a - b).abs() < 1e-3));
//! drop(split);
//! drop(trusted);
//! worker.join().expect("the worker thread")?;
//! # Ok::<(), veil_split::Error>(())
//! ```
//!
//! # What this crate does not do
//! No enclave: the trusted runtime is an ordinary single-threaded process, and nothing
//! attests it (`docs/security.md`, "The asymmetric split mode"). No GPU: the worker is a
//! multi-threaded CPU, and wall-clock figures against an enclave are emulated with a
//! documented slowdown ([`bench::SGX_OVER_ACCELERATOR`]). No integrity checks on the
//! worker's answers (Slalom's Freivalds check is not implemented). Processes and TLS are
//! set up by the `veil` binary.
//!
//! # Secrets
//! The inputs, the merged activations, the low-rank parts `U·V` and the blinding pads
//! are the trusted side's secrets and never leave it; the weights are known to the
//! worker (as in AsymML and Slalom). What the worker sees is, per layer, the residual
//! (split mode: statistically, not cryptographically, private), `X + R mod 2^64`
//! (blinded mode: uniformly random), or everything (the untrusted-only baseline).
//! Errors and logs name layers, shapes and sizes, never values.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

pub mod bench;
pub mod cpu;
mod error;
pub mod kernels;
pub mod leakage;
pub mod msgs;
pub mod network;
pub mod png;
pub mod subspace;
pub mod svd;
pub mod trusted;
pub mod worker;

pub use error::{Error, Result};
