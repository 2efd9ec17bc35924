//! BCG+21 distributed comparison function (DCF) keys (cookbook §3.4; Boyle, Chandran,
//! Gilboa, Gupta, Ishai, Kumar, Rathee, "Function Secret Sharing for Mixed-Mode and
//! Fixed-Point Secure Computation", EUROCRYPT 2021, eprint 2020/1392, Fig. 3).
//!
//! A DCF key pair for (α, β) on n-bit inputs shares the function
//! f(x) = β if x < α, else 0 (unsigned, most significant bit first), with β a vector of
//! up to [`MAX_PAYLOAD`] elements of Z_2^64. Each party evaluates its key on a public x
//! and gets an additive share of f(x).
//!
//! The PRG G expands a 128-bit seed into (s^L, t^L, v^L, s^R, t^R, v^R) with fixed-key
//! AES in Matyas–Meyer–Oseas form, G_j(s) = π(s ⊕ j) ⊕ s ⊕ j for j = 0..3 (π = AES-128
//! under a public key), as LLAMA/Orca do. Blocks 0 and 1 give the child seeds, their
//! lowest bit the control bits t; blocks 2 and 3 give v^L and v^R (lane 0 in the low
//! half, lane 1 in the high half).
//!
//! Evaluation follows one side per level, so it needs only the blocks of that side:
//! G_side (seed and control bit) and G_{2+side} (value), two AES blocks per level for
//! either payload. Generation needs all four for both seeds.
//!
//! Two forms of each algorithm:
//! - [`generate`] / [`evaluate`] with [`encode`] / [`decode`]: one key at a time, the
//!   readable reference;
//! - [`generate_batch`] / [`evaluate_batch`] with [`encode_batch`] / [`decode_batch`]:
//!   many keys of one shape level-synchronously. Every key of a batch advances one level
//!   per pass, so one `encrypt_blocks` call gets hundreds of independent blocks (the
//!   `aes` crate picks AES-NI, VAES-256 or VAES-512 at run time and pipelines them);
//!   secret bits (control bits, α's bits) select by masks rather than branches; and the
//!   keys travel in the *batch wire form* (see [`generate_batch`]), the same words as the
//!   per-key form but grouped level by level, so each level's corrections are read as
//!   one sequential run. The two forms are not interchangeable: words from [`encode`]
//!   must go to [`evaluate`] (through [`decode`]), words from [`generate_batch`] or
//!   [`encode_batch`] to [`evaluate_batch`] (or [`decode_batch`]).
//!
//! Key size per party for n levels and payload p: 16 + n·(16 + 8p) + ⌈2n/64⌉·8 + 8p
//! bytes, of which only the correction words travel (the root seed is derived from the
//! seed the party shares with the dealer).
//!
//! This file holds the PRG and the single-key reference; `batch.rs` the batch forms;
//! `tests.rs` the tests of both (exhaustive, against each other, against fss-rs).

// Lanes index several parallel arrays at once, as in the paper's notation.
#![allow(clippy::needless_range_loop)]

use std::sync::OnceLock;

use aes::Aes128;
use aes::cipher::{Array, BlockCipherEncrypt, KeyInit};

mod batch;
#[cfg(test)]
mod tests;

pub use batch::{BATCH_GROUP, decode_batch, encode_batch, evaluate_batch, generate_batch};

/// The largest payload a key carries, in ring elements.
pub const MAX_PAYLOAD: usize = 2;

/// The public fixed AES key of the PRG (any constant works; it is not a secret).
const FIXED_KEY: [u8; 16] = *b"veil/dcf/prg/v1.";

/// The bits of a 128-bit word that are seed bits. The expansion tweaks a seed by XOR
/// with 0..=3 (its two low bits), so both are cleared in every seed: distinct seeds never
/// share a tweaked block. Bit 0 of an expanded word is the control bit.
pub(crate) const SEED_BITS: u128 = !3;

pub(crate) fn fixed_cipher() -> &'static Aes128 {
    static CIPHER: OnceLock<Aes128> = OnceLock::new();
    CIPHER.get_or_init(|| Aes128::new(&Array::from(FIXED_KEY)))
}

/// One level's expansion of a seed.
struct Expansion {
    seed: [u128; 2],
    control: [bool; 2],
    value: [[u64; MAX_PAYLOAD]; 2],
}

fn expand(seed: u128) -> Expansion {
    let mut blocks: [Array<u8, aes::cipher::consts::U16>; 4] = Default::default();
    for (index, block) in blocks.iter_mut().enumerate() {
        *block = Array::from((seed ^ index as u128).to_le_bytes());
    }
    fixed_cipher().encrypt_blocks(&mut blocks);
    let mut words = [0u128; 4];
    for (index, block) in blocks.iter().enumerate() {
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(block.as_slice());
        words[index] = u128::from_le_bytes(bytes) ^ seed ^ index as u128;
    }
    let split = |word: u128| [word as u64, (word >> 64) as u64];
    Expansion {
        seed: [words[0] & SEED_BITS, words[1] & SEED_BITS],
        control: [words[0] & 1 == 1, words[1] & 1 == 1],
        value: [split(words[2]), split(words[3])],
    }
}

/// Convert: a seed's group element (its two 64-bit halves).
fn convert(seed: u128) -> [u64; MAX_PAYLOAD] {
    [seed as u64, (seed >> 64) as u64]
}

/// The correction words of one level, common to both parties' keys.
#[derive(Clone, PartialEq, Eq)]
pub struct CorrectionWord {
    /// s_CW.
    pub seed: u128,
    /// V_CW.
    pub value: [u64; MAX_PAYLOAD],
    /// (t_CW^L, t_CW^R).
    pub control: [bool; 2],
}

/// The public part of a DCF key pair: identical in both parties' keys.
#[derive(Clone, PartialEq, Eq)]
pub struct DcfCorrections {
    /// One correction word per input bit, most significant first.
    pub levels: Vec<CorrectionWord>,
    /// CW^(n+1).
    pub last: [u64; MAX_PAYLOAD],
}

impl std::fmt::Debug for DcfCorrections {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "DcfCorrections {{ levels: {} }}",
            self.levels.len()
        )
    }
}

fn signed(negative: bool, value: u64) -> u64 {
    if negative {
        value.wrapping_neg()
    } else {
        value
    }
}

/// Gen (BCG+21 Fig. 3): correction words for f(x) = β·1{x < α} on `bits`-bit inputs,
/// given the two parties' root seeds (independent, uniform).
pub fn generate(
    bits: u32,
    alpha: u64,
    beta: [u64; MAX_PAYLOAD],
    root_seeds: [u128; 2],
) -> DcfCorrections {
    let mut seed = [root_seeds[0] & SEED_BITS, root_seeds[1] & SEED_BITS];
    let mut control = [false, true];
    let mut value_alpha = [0u64; MAX_PAYLOAD];
    let mut levels = Vec::with_capacity(bits as usize);
    for level in 0..bits {
        let alpha_bit = (alpha >> (bits - 1 - level)) & 1 == 1;
        let expansions = [expand(seed[0]), expand(seed[1])];
        // Keep the side α goes down; lose the other.
        let (keep, lose) = if alpha_bit { (1, 0) } else { (0, 1) };
        let seed_correction = expansions[0].seed[lose] ^ expansions[1].seed[lose];
        let negative = control[1];
        let mut value_correction = [0u64; MAX_PAYLOAD];
        for lane in 0..MAX_PAYLOAD {
            let difference = expansions[1].value[lose][lane]
                .wrapping_sub(expansions[0].value[lose][lane])
                .wrapping_sub(value_alpha[lane]);
            value_correction[lane] = signed(negative, difference);
            if lose == 0 {
                // Inputs that leave α's path to the left are smaller than α: pay β.
                value_correction[lane] =
                    value_correction[lane].wrapping_add(signed(negative, beta[lane]));
            }
            value_alpha[lane] = value_alpha[lane]
                .wrapping_sub(expansions[1].value[keep][lane])
                .wrapping_add(expansions[0].value[keep][lane])
                .wrapping_add(signed(negative, value_correction[lane]));
        }
        let control_correction = [
            expansions[0].control[0] ^ expansions[1].control[0] ^ alpha_bit ^ true,
            expansions[0].control[1] ^ expansions[1].control[1] ^ alpha_bit,
        ];
        for party in 0..2 {
            let previous = control[party];
            seed[party] = expansions[party].seed[keep] ^ if previous { seed_correction } else { 0 };
            control[party] =
                expansions[party].control[keep] ^ (previous && control_correction[keep]);
        }
        levels.push(CorrectionWord {
            seed: seed_correction,
            value: value_correction,
            control: control_correction,
        });
    }
    let converted = [convert(seed[0]), convert(seed[1])];
    let mut last = [0u64; MAX_PAYLOAD];
    for lane in 0..MAX_PAYLOAD {
        let difference = converted[1][lane]
            .wrapping_sub(converted[0][lane])
            .wrapping_sub(value_alpha[lane]);
        last[lane] = signed(control[1], difference);
    }
    DcfCorrections { levels, last }
}

/// Eval (BCG+21 Fig. 3): party `party` (0 or 1) evaluates its key (root seed plus the
/// shared corrections) at the public input `x`; returns its additive share of f(x).
pub fn evaluate(
    party: usize,
    root_seed: u128,
    corrections: &DcfCorrections,
    x: u64,
) -> [u64; MAX_PAYLOAD] {
    let bits = corrections.levels.len();
    let negative = party == 1;
    let mut seed = root_seed & SEED_BITS;
    let mut control = party == 1;
    let mut output = [0u64; MAX_PAYLOAD];
    for (level, correction) in corrections.levels.iter().enumerate() {
        let mut expansion = expand(seed);
        if control {
            expansion.seed[0] ^= correction.seed;
            expansion.seed[1] ^= correction.seed;
            expansion.control[0] ^= correction.control[0];
            expansion.control[1] ^= correction.control[1];
        }
        let side = ((x >> (bits - 1 - level)) & 1) as usize;
        for lane in 0..MAX_PAYLOAD {
            let mut term = expansion.value[side][lane];
            if control {
                term = term.wrapping_add(correction.value[lane]);
            }
            output[lane] = output[lane].wrapping_add(signed(negative, term));
        }
        seed = expansion.seed[side];
        control = expansion.control[side];
    }
    let converted = convert(seed);
    for lane in 0..MAX_PAYLOAD {
        let mut term = converted[lane];
        if control {
            term = term.wrapping_add(corrections.last[lane]);
        }
        output[lane] = output[lane].wrapping_add(signed(negative, term));
    }
    output
}

/// Words (u64) that `corrections` of `bits` levels and payload `payload` occupy.
pub fn encoded_words(bits: u32, payload: usize) -> usize {
    let bits = bits as usize;
    bits * (2 + payload) + (2 * bits).div_ceil(64) + payload
}

/// Appends the corrections' wire form (payload lanes beyond `payload` are dropped; they
/// must be zero, i.e. β had only `payload` lanes).
pub fn encode(corrections: &DcfCorrections, payload: usize, output: &mut Vec<u64>) {
    let mut control_words = vec![0u64; (2 * corrections.levels.len()).div_ceil(64)];
    for (level, correction) in corrections.levels.iter().enumerate() {
        output.push(correction.seed as u64);
        output.push((correction.seed >> 64) as u64);
        output.extend_from_slice(&correction.value[..payload]);
        for side in 0..2 {
            if correction.control[side] {
                let bit = 2 * level + side;
                control_words[bit / 64] |= 1 << (bit % 64);
            }
        }
    }
    output.extend_from_slice(&control_words);
    output.extend_from_slice(&corrections.last[..payload]);
}

/// Reads corrections of `bits` levels and payload `payload` from exactly
/// [`encoded_words`] words.
pub fn decode(words: &[u64], bits: u32, payload: usize) -> Option<DcfCorrections> {
    if words.len() != encoded_words(bits, payload) || payload > MAX_PAYLOAD {
        return None;
    }
    let bits = bits as usize;
    let control_offset = bits * (2 + payload);
    let control_words = &words[control_offset..control_offset + (2 * bits).div_ceil(64)];
    let mut levels = Vec::with_capacity(bits);
    for level in 0..bits {
        let start = level * (2 + payload);
        let mut value = [0u64; MAX_PAYLOAD];
        value[..payload].copy_from_slice(&words[start + 2..start + 2 + payload]);
        let control_bit = |side: usize| {
            let bit = 2 * level + side;
            (control_words[bit / 64] >> (bit % 64)) & 1 == 1
        };
        levels.push(CorrectionWord {
            seed: u128::from(words[start]) | (u128::from(words[start + 1]) << 64),
            value,
            control: [control_bit(0), control_bit(1)],
        });
    }
    let mut last = [0u64; MAX_PAYLOAD];
    last[..payload].copy_from_slice(&words[words.len() - payload..]);
    Some(DcfCorrections { levels, last })
}
