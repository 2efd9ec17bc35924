//! What a role has spent so far, per protocol primitive: the figures `veil bench
//! --breakdown` splits by operator and by primitive. Parties count their online time,
//! bytes and rounds; the dealer's generator counts the material it makes, per kind.
//! Counts are sizes and times only, never values.

use std::time::Duration;

/// The protocol primitives costs are split by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Primitive {
    /// Sharing the client's input.
    Input,
    /// Products with a server-held weight (one-sided fixed-mask products).
    WeightProduct,
    /// Products of two secrets (Beaver and matrix triples, square pairs, selects).
    SecretProduct,
    /// Truncations back to the plan's scale.
    Truncation,
    /// Comparisons (DReLU and ReLU gates on DCF or point-function keys).
    Comparison,
    /// Public-table lookups at a secret index (point-function keys).
    Lookup,
    /// Opening the output to the client.
    Reveal,
}

/// Every primitive, in report order.
pub const PRIMITIVES: [Primitive; 7] = [
    Primitive::Input,
    Primitive::WeightProduct,
    Primitive::SecretProduct,
    Primitive::Truncation,
    Primitive::Comparison,
    Primitive::Lookup,
    Primitive::Reveal,
];

impl Primitive {
    /// The primitive's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Primitive::Input => "input sharing",
            Primitive::WeightProduct => "weight products",
            Primitive::SecretProduct => "secret products",
            Primitive::Truncation => "truncation",
            Primitive::Comparison => "comparison (DReLU/ReLU)",
            Primitive::Lookup => "table lookup",
            Primitive::Reveal => "output reveal",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One primitive's costs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    /// Wall time inside the primitive.
    pub time: Duration,
    /// Bytes this role sent (frame headers included).
    pub sent_bytes: u64,
    /// Bytes this role received.
    pub received_bytes: u64,
    /// Blocking receives.
    pub rounds: u64,
    /// Material bytes made (at the dealer: both halves together).
    pub material_bytes: u64,
}

impl Cost {
    /// The costs accumulated since `earlier`.
    pub fn since(&self, earlier: &Cost) -> Cost {
        Cost {
            time: self.time.saturating_sub(earlier.time),
            sent_bytes: self.sent_bytes - earlier.sent_bytes,
            received_bytes: self.received_bytes - earlier.received_bytes,
            rounds: self.rounds - earlier.rounds,
            material_bytes: self.material_bytes - earlier.material_bytes,
        }
    }

    /// The sum of two costs.
    pub fn plus(&self, other: &Cost) -> Cost {
        Cost {
            time: self.time + other.time,
            sent_bytes: self.sent_bytes + other.sent_bytes,
            received_bytes: self.received_bytes + other.received_bytes,
            rounds: self.rounds + other.rounds,
            material_bytes: self.material_bytes + other.material_bytes,
        }
    }
}

/// A role's costs so far, per primitive.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Spent {
    by_primitive: [Cost; PRIMITIVES.len()],
}

impl Spent {
    /// One primitive's costs.
    pub fn of(&self, primitive: Primitive) -> Cost {
        self.by_primitive[primitive.index()]
    }

    /// Every primitive's costs together.
    pub fn total(&self) -> Cost {
        self.by_primitive
            .iter()
            .fold(Cost::default(), |sum, cost| sum.plus(cost))
    }

    /// The costs accumulated since `earlier`, per primitive.
    pub fn since(&self, earlier: &Spent) -> Spent {
        let mut by_primitive = [Cost::default(); PRIMITIVES.len()];
        for (slot, (now, before)) in by_primitive
            .iter_mut()
            .zip(self.by_primitive.iter().zip(&earlier.by_primitive))
        {
            *slot = now.since(before);
        }
        Spent { by_primitive }
    }

    /// Adds `cost` to a primitive.
    pub fn add(&mut self, primitive: Primitive, cost: &Cost) {
        let slot = &mut self.by_primitive[primitive.index()];
        *slot = slot.plus(cost);
    }
}
