//! The programs every setting runs: computations written once over the [`Protocol`]
//! trait, each stating how far a setting's result may be from the exact one.

use veil_core::RingTensor;
use veil_mpc::{Protocol, Result};

use crate::settings::Bound;

/// A computation written once over the Protocol trait. It runs at every role: the
/// client gets `Some` output, every other role `None`.
pub trait Program: std::fmt::Debug + Clone + Send + Sync + 'static {
    fn run<P: Protocol>(
        &self,
        protocol: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>>;

    /// How far a secure setting's output may be from the exact result: exact unless the
    /// program truncates.
    fn bound(&self) -> Bound;
}

/// One dense layer: X·W + b, optionally truncated once (cookbook §1.1: accumulate, then
/// truncate).
#[derive(Clone, Debug)]
pub struct Linear {
    pub truncate: bool,
}

impl Program for Linear {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[3, 5], input)?;
        let w = p.weight("w")?;
        let b = p.bias("b")?;
        let y = p.matmul_weight(&x, &w)?;
        let y = p.add_bias(&y, &b)?;
        let y = if self.truncate {
            p.truncate(&y, 16)?
        } else {
            y
        };
        p.reveal_to_client(&y)
    }

    fn bound(&self) -> Bound {
        if self.truncate {
            Bound::WithinOneUlpAbove
        } else {
            Bound::Exact
        }
    }
}

/// One truncation by `bits` of `len` values.
#[derive(Clone, Debug)]
pub struct Truncate {
    pub len: usize,
    pub bits: u32,
}

impl Program for Truncate {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[self.len], input)?;
        let y = p.truncate(&x, self.bits)?;
        p.reveal_to_client(&y)
    }

    fn bound(&self) -> Bound {
        Bound::WithinOneUlpAbove
    }
}

/// X ⊙ X, then X·(X ⊙ X) + X ⊙ X: an elementwise and a matrix triple.
#[derive(Clone, Debug)]
pub struct Products;

impl Program for Products {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[4, 4], input)?;
        let square = p.mul(&x, &x)?;
        let product = p.matmul(&x, &square)?;
        let both = p.add(&product, &square)?;
        p.reveal_to_client(&both)
    }

    fn bound(&self) -> Bound {
        Bound::Exact
    }
}

/// DReLU, ReLU and select on `bits`-bit reductions of `len` values, revealed as one
/// `[3, len]` tensor.
#[derive(Clone, Debug)]
pub struct Comparisons {
    pub len: usize,
    pub bits: u32,
}

impl Program for Comparisons {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[self.len], input)?;
        let bit = p.drelu(&x, self.bits)?;
        let relu = p.relu(&x, self.bits)?;
        let selected = p.select(&bit, &x)?;
        let out = p.reshape(bit, &[self.len, 1])?;
        let relu = p.reshape(relu, &[self.len, 1])?;
        let selected = p.reshape(selected, &[self.len, 1])?;
        // Reveal all three as one [len, 3]-shaped tensor, column by column.
        let mut columns = Vec::new();
        for value in [out, relu, selected] {
            columns.push(p.reveal_to_client(&value)?);
        }
        Ok(columns
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .map(|parts| {
                let data = parts.iter().flat_map(|t| t.data().to_vec()).collect();
                RingTensor::new(vec![3, self.len], data).unwrap()
            }))
    }

    fn bound(&self) -> Bound {
        Bound::Exact
    }
}

/// T[x mod 2^bits] for `len` secret integers and a public table of random ring
/// elements (seeded by `table_seed`), revealed.
#[derive(Clone, Debug)]
pub struct Lookups {
    pub len: usize,
    pub bits: u32,
    pub table_seed: u64,
}

impl Lookups {
    pub fn table(&self) -> Vec<u64> {
        let mut state = self.table_seed;
        (0..1usize << self.bits)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                state ^ (state >> 29)
            })
            .collect()
    }
}

impl Program for Lookups {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[self.len], input)?;
        let looked_up = p.lookup(&x, &self.table(), self.bits)?;
        p.reveal_to_client(&looked_up)
    }

    fn bound(&self) -> Bound {
        Bound::Exact
    }
}

/// A layer as the executor runs it: X·W + b, truncated, then ReLU.
#[derive(Clone, Debug)]
pub struct Layer;

impl Program for Layer {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[3, 5], input)?;
        let w = p.weight("w")?;
        let b = p.bias("b")?;
        let y = p.matmul_weight(&x, &w)?;
        let y = p.add_bias(&y, &b)?;
        let y = p.truncate(&y, 16)?;
        let y = p.relu(&y, 64)?;
        p.reveal_to_client(&y)
    }

    /// ReLU is monotone and moves by at most what its input moves, so it keeps the
    /// truncation's bound.
    fn bound(&self) -> Bound {
        Bound::WithinOneUlpAbove
    }
}

/// conv2d(X, K) + b with stride 2 and padding 1, optionally truncated: the one-sided
/// product with a fixed weight mask, E shaped like the input.
#[derive(Clone, Debug)]
pub struct Convolution {
    pub truncate: bool,
}

impl Program for Convolution {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[2, 2, 5, 5], input)?;
        let k = p.weight("k")?;
        let b = p.bias("b")?;
        let y = p.conv2d_weight(&x, &k, 2, 1)?;
        let y = p.add_bias(&y, &b)?;
        let y = if self.truncate {
            p.truncate(&y, 16)?
        } else {
            y
        };
        p.reveal_to_client(&y)
    }

    fn bound(&self) -> Bound {
        if self.truncate {
            Bound::WithinOneUlpAbove
        } else {
            Bound::Exact
        }
    }
}

/// The local operations, which need no message and no material: a public constant,
/// subtraction, scaling, a gather (a pooling window's rearrangement), concatenation and
/// reshaping.
#[derive(Clone, Debug)]
pub struct LocalOperations;

impl Program for LocalOperations {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[2, 3], input)?;
        let constant = RingTensor::new(vec![2, 3], vec![1, 2, 3, u64::MAX, 1 << 40, 0]).unwrap();
        let constant = p.public(&constant)?;
        let difference = p.sub(&x, &constant)?;
        let scaled = p.scale(&difference, 3u64.wrapping_neg())?;
        let gathered = p.gather(&scaled, &[5, 4, 3, 2, 1, 0, 0, 5], &[2, 4])?;
        let sum = p.add(&x, &constant)?;
        let joined = p.concat(&[&gathered, &sum])?;
        let flat = p.reshape(x, &[6])?;
        let joined = p.concat(&[&joined, &flat])?;
        let joined = p.reshape(joined, &[4, 5])?;
        p.reveal_to_client(&joined)
    }

    fn bound(&self) -> Bound {
        Bound::Exact
    }
}

/// X ⊙ g + b along the rows, optionally truncated: the server-held elementwise scale
/// (LayerNorm's γ) and shift (β).
#[derive(Clone, Debug)]
pub struct RowScale {
    pub truncate: bool,
}

impl Program for RowScale {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[3, 5], input)?;
        let g = p.weight("g")?;
        let b = p.bias("b")?;
        let y = p.mul_weight(&x, &g)?;
        let y = p.add_bias(&y, &b)?;
        let y = if self.truncate {
            p.truncate(&y, 16)?
        } else {
            y
        };
        p.reveal_to_client(&y)
    }

    fn bound(&self) -> Bound {
        if self.truncate {
            Bound::WithinOneUlpAbove
        } else {
            Bound::Exact
        }
    }
}

/// Two `[3, 4]·[4, 5]` products as one batched matrix product; the input holds both left
/// operands, then both right ones.
#[derive(Clone, Debug)]
pub struct BatchedProducts;

impl Program for BatchedProducts {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[2 * 3 * 4 + 2 * 4 * 5], input)?;
        let left = p.gather(&x, &(0..24).collect::<Vec<_>>(), &[2, 3, 4])?;
        let right = p.gather(&x, &(24..64).collect::<Vec<_>>(), &[2, 4, 5])?;
        let product = p.matmul(&left, &right)?;
        p.reveal_to_client(&product)
    }

    fn bound(&self) -> Bound {
        Bound::Exact
    }
}

/// x ⊙ x by the setting's square, next to x ⊙ x by a product, as one `[2, len]` tensor.
#[derive(Clone, Debug)]
pub struct Squares {
    pub len: usize,
}

impl Program for Squares {
    fn run<P: Protocol>(
        &self,
        p: &mut P,
        input: Option<&RingTensor>,
    ) -> Result<Option<RingTensor>> {
        let x = p.input(&[self.len], input)?;
        let square = p.square(&x)?;
        let product = p.mul(&x, &x)?;
        let both = p.concat(&[&square, &product])?;
        p.reveal_to_client(&both)
    }

    fn bound(&self) -> Bound {
        Bound::Exact
    }
}
