//! Role-specific forms of the server's parameters (DESIGN.md §3, §4).
//!
//! The server and the dealer share a long-term weight seed. For each weight tensor and
//! mask epoch both derive the mask B from it, domain-separated by the weight's name and
//! the epoch; B is the one stream veil ever replays. The server sends D = W + B to each
//! client once per client session; the client holds D only; the dealer holds B only.
//! A new set of weights needs a new epoch (a new B).

use std::collections::HashMap;
use std::sync::Arc;

use veil_core::RingTensor;
use veil_core::prg::{Prg, Seed};

use crate::{Error, Result};

/// The weight mask B of one weight tensor in one epoch.
pub fn weight_mask(weight_seed: &Seed, epoch: u64, name: &str, shape: &[usize]) -> RingTensor {
    let seed = weight_seed.derive(&format!("veil/weight-mask/{name}"), &[epoch]);
    Prg::new(&seed).tensor(shape)
}

/// A weight at the server: W and its mask B.
pub struct ServerWeight {
    /// The weight W (fixed point).
    pub plain: RingTensor,
    /// The mask B.
    pub mask: RingTensor,
}

/// The server's parameters: weights with their masks, and biases (encoded at twice the
/// fixed-point scale, since they are added before truncation).
pub struct ServerParameters {
    weights: HashMap<String, Arc<ServerWeight>>,
    biases: HashMap<String, Arc<RingTensor>>,
}

impl ServerParameters {
    /// Builds the server's form, deriving every mask from `weight_seed` and `epoch`.
    pub fn new(
        weight_seed: &Seed,
        epoch: u64,
        weights: Vec<(String, RingTensor)>,
        biases: Vec<(String, RingTensor)>,
    ) -> Self {
        let weights = weights
            .into_iter()
            .map(|(name, plain)| {
                let mask = weight_mask(weight_seed, epoch, &name, plain.shape());
                (name, Arc::new(ServerWeight { plain, mask }))
            })
            .collect();
        let biases = biases
            .into_iter()
            .map(|(name, bias)| (name, Arc::new(bias)))
            .collect();
        Self { weights, biases }
    }

    /// D = W + B for every weight: what the server sends a client once per client session.
    /// A mask whose shape differs from its weight's is an error, never a partly unmasked
    /// W.
    pub fn masked_weights(&self) -> Result<Vec<(String, RingTensor)>> {
        let mut masked = Vec::with_capacity(self.weights.len());
        for (name, weight) in &self.weights {
            if weight.mask.shape() != weight.plain.shape()
                || weight.mask.len() != weight.plain.len()
            {
                return Err(Error::ApiMisuse {
                    op: "masked weights",
                    detail: format!("the mask of weight {name:?} does not have its weight's shape"),
                });
            }
            let mut d = weight.plain.clone();
            for (value, mask) in d.data_mut().iter_mut().zip(weight.mask.data()) {
                *value = value.wrapping_add(*mask);
            }
            masked.push((name.clone(), d));
        }
        masked.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(masked)
    }

    pub(crate) fn weight(&self, name: &str) -> Result<Arc<ServerWeight>> {
        self.weights
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingParameter { name: name.into() })
    }

    pub(crate) fn bias(&self, name: &str) -> Result<Arc<RingTensor>> {
        self.biases
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingParameter { name: name.into() })
    }
}

/// The client's parameters: D = W + B per weight, received from the server.
pub struct ClientParameters {
    masked: HashMap<String, Arc<RingTensor>>,
}

impl ClientParameters {
    /// Wraps the masked weights received from the server.
    pub fn new(masked: Vec<(String, RingTensor)>) -> Self {
        Self {
            masked: masked
                .into_iter()
                .map(|(name, d)| (name, Arc::new(d)))
                .collect(),
        }
    }

    pub(crate) fn weight(&self, name: &str) -> Result<Arc<RingTensor>> {
        self.masked
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingParameter { name: name.into() })
    }
}

/// The dealer's parameters: the mask B per weight, derived from the weight seed.
pub struct DealerParameters {
    masks: HashMap<String, Arc<RingTensor>>,
}

impl DealerParameters {
    /// Derives every mask from `weight_seed` and `epoch`, given the public weight shapes.
    pub fn new(weight_seed: &Seed, epoch: u64, weight_shapes: &[(String, Vec<usize>)]) -> Self {
        let masks = weight_shapes
            .iter()
            .map(|(name, shape)| {
                (
                    name.clone(),
                    Arc::new(weight_mask(weight_seed, epoch, name, shape)),
                )
            })
            .collect();
        Self { masks }
    }

    pub(crate) fn mask(&self, name: &str) -> Result<Arc<RingTensor>> {
        self.masks
            .get(name)
            .cloned()
            .ok_or_else(|| Error::MissingParameter { name: name.into() })
    }
}
