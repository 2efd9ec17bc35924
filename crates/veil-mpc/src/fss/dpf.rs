//! Comparison keys from a distributed point function (cookbook §3.4, the DPF route;
//! Boyle, Gilboa, Ishai, "Function Secret Sharing: Improvements and Extensions", CCS
//! 2016, Fig. 1, with early termination; the comparison read off the tree as SIGMA's
//! DReLU does: Gupta, Kumaraswamy, Chandran, Gupta, "SIGMA", PETS 2024).
//!
//! A key pair for a point α on n-bit inputs is a binary tree of seeds: in both keys the
//! nodes off α's path have equal seeds and control bits, the nodes on it have control
//! bits that differ. So the two parties' control bits at a node are XOR shares of "α lies
//! below this node". Walking a public y from the root, the right child of every node
//! where y goes left holds α exactly when α shares y's prefix there and turns right,
//! that is when α > y at that bit; XOR-ing those right children's control bits over the
//! levels gives XOR shares of 1{y < α}, as long as α and y part before the leaves.
//!
//! Early termination: the last [`LEAF_BITS`] = 7 levels are not a tree but one 128-bit
//! leaf, whose XOR shares are the unit vector e_(α mod 128) at α's leaf and 0 at every
//! other leaf; the parity of the leaf's bits above y mod 128 finishes the comparison.
//!
//! The PRG is the DCF's fixed-key AES in Matyas–Meyer–Oseas form (`super::dcf`):
//! G_0(s) and G_1(s) give the left and right child seeds with their control bits in bit
//! 0, G_2(s) the leaf's 128 bits. Seeds keep their two low bits clear, so each level's
//! correction word is one 128-bit word: s_CW with t_CW^L in bit 0 and t_CW^R in bit 1.
//!
//! **Size.** A key on n bits is (max(n − 7, 0) + 1) × 16 bytes, all of it correction
//! words (the root seed comes from the seed a party shares with the dealer): 480 bytes
//! at n = 36 (a 37-bit comparison), against the DCF's 24·n + 16 (payload 1) and 32·n +
//! 24 (payload 2). The price is that the output is XOR-shared; the gates turn it into an
//! additive share with one more round of one bit per element (`dealer/comparison.rs`).
//!
//! **Cost.** Evaluation takes two AES blocks per tree level (both children: the walk
//! needs the right child's control bit wherever y goes left) and one for the leaf;
//! generation four per level and two for the leaf, for both keys at once.
//!
//! **Wire form** of `count` keys on n bits ([`key_words`] words each): level-major, for
//! each tree level (most significant first) the correction word of every key (two
//! words, low half first), then every key's leaf correction (two words). A level's
//! corrections for a run of keys are then one sequential read.

use aes::cipher::BlockCipherEncrypt;
use zeroize::Zeroize;

use super::dcf::{SEED_BITS, fixed_cipher};

/// Input bits that the 128-bit leaf covers instead of tree levels.
pub const LEAF_BITS: u32 = 7;

/// Keys advanced together through one level (as the DCF's batch group).
const GROUP: usize = 256;

/// The tree levels of a key on `bits`-bit inputs (the rest is the leaf).
pub fn tree_levels(bits: u32) -> u32 {
    bits.saturating_sub(LEAF_BITS)
}

/// The u64 words of one key on `bits`-bit inputs.
pub fn key_words(bits: u32) -> usize {
    2 * (tree_levels(bits) as usize + 1)
}

fn to_block(word: u128) -> aes::Block {
    aes::Block::from(word.to_le_bytes())
}

fn from_block(block: &aes::Block) -> u128 {
    u128::from_le_bytes(block.0)
}

fn mask_128(bit: u64) -> u128 {
    0u128.wrapping_sub(u128::from(bit))
}

fn word_at(words: &[u64], index: usize) -> u128 {
    u128::from(words[2 * index]) | (u128::from(words[2 * index + 1]) << 64)
}

fn put_word(words: &mut [u64], index: usize, word: u128) {
    words[2 * index] = word as u64;
    words[2 * index + 1] = (word >> 64) as u64;
}

/// The leaf position of an input's low bits, and the mask of the leaf bits above it.
fn leaf_bits_above(low: u64) -> u128 {
    // low < 128, so the shift is at most 128 - 1 + 1; 127 leaves nothing above.
    if low >= 127 { 0 } else { !0u128 << (low + 1) }
}

/// Zeroises the AES scratch blocks (they hold seeds).
fn zeroize_blocks(blocks: &mut [aes::Block]) {
    for block in blocks {
        block.0.zeroize();
    }
}

/// Scratch that holds seeds: zeroised on drop.
struct Scratch {
    /// The AES blocks of the current level, encrypted in place.
    blocks: Vec<aes::Block>,
    seeds: Vec<u128>,
    controls: Vec<u64>,
}

impl Scratch {
    fn new(blocks: usize, seeds: usize) -> Self {
        Self {
            blocks: vec![aes::Block::default(); blocks],
            seeds: vec![0; seeds],
            controls: vec![0; seeds],
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        zeroize_blocks(&mut self.blocks);
        self.seeds.zeroize();
        self.controls.zeroize();
    }
}

/// Gen for a batch: key i is the point `alphas[i]` (its bits above `bits` ignored) on
/// `bits`-bit inputs (at most 64) with root seeds `roots[0][i]` (party 0) and
/// `roots[1][i]` (party 1). Appends every key's correction words to `words` in the wire
/// form. `None`, appending nothing, if the lengths disagree or `bits` exceeds 64.
pub fn generate_batch(
    bits: u32,
    alphas: &[u64],
    roots: [&[u128]; 2],
    words: &mut Vec<u64>,
) -> Option<()> {
    let count = alphas.len();
    if bits > 64 || roots[0].len() != count || roots[1].len() != count {
        return None;
    }
    let levels = tree_levels(bits) as usize;
    let start = words.len();
    words.resize(start + count * key_words(bits), 0);
    let output = &mut words[start..];
    let cipher = fixed_cipher();
    let group = count.clamp(1, GROUP);
    // Seed and control 2k + b are party b's for key k; block 4k + 2b + j is
    // π(s ⊕ j) for party b's seed s (j = 0, 1: the children).
    let mut scratch = Scratch::new(4 * group, 2 * group);
    let leaf_mask = (1u64 << (bits - tree_levels(bits))) - 1;
    for first in (0..count).step_by(GROUP) {
        let keys = (count - first).min(GROUP);
        let Scratch {
            blocks,
            seeds,
            controls,
        } = &mut scratch;
        for key in 0..keys {
            for party in 0..2 {
                let seed = roots[party][first + key] & SEED_BITS;
                seeds[2 * key + party] = seed;
                controls[2 * key + party] = party as u64;
                blocks[4 * key + 2 * party] = to_block(seed);
                blocks[4 * key + 2 * party + 1] = to_block(seed ^ 1);
            }
        }
        for level in 0..levels {
            cipher.encrypt_blocks(&mut blocks[..4 * keys]);
            let shift = bits as usize - 1 - level;
            let corrections = &mut output[2 * (level * count + first)..][..2 * keys];
            for key in 0..keys {
                let alpha_bit = (alphas[first + key] >> shift) & 1;
                let keep = alpha_bit as usize;
                let lose = keep ^ 1;
                // G_j(s) = π(s ⊕ j) ⊕ s ⊕ j (Matyas–Meyer–Oseas).
                let child = |party: usize, side: usize| {
                    from_block(&blocks[4 * key + 2 * party + side])
                        ^ seeds[2 * key + party]
                        ^ side as u128
                };
                let children = [[child(0, 0), child(0, 1)], [child(1, 0), child(1, 1)]];
                let seed_correction = (children[0][lose] ^ children[1][lose]) & SEED_BITS;
                let control_correction = [
                    ((children[0][0] ^ children[1][0]) as u64 & 1) ^ alpha_bit ^ 1,
                    ((children[0][1] ^ children[1][1]) as u64 & 1) ^ alpha_bit,
                ];
                for party in 0..2 {
                    let previous = controls[2 * key + party];
                    let kept = children[party][keep];
                    let seed = (kept & SEED_BITS) ^ (seed_correction & mask_128(previous));
                    seeds[2 * key + party] = seed;
                    controls[2 * key + party] =
                        (kept as u64 & 1) ^ (previous & control_correction[keep]);
                    blocks[4 * key + 2 * party] = to_block(seed);
                    blocks[4 * key + 2 * party + 1] = to_block(seed ^ 1);
                }
                let correction = seed_correction
                    | u128::from(control_correction[0])
                    | (u128::from(control_correction[1]) << 1);
                put_word(corrections, key, correction);
            }
        }
        // The leaf: CW = G_2(s_0) ⊕ G_2(s_1) ⊕ e_(α's low bits).
        for index in 0..2 * keys {
            blocks[index] = to_block(seeds[index] ^ 2);
        }
        cipher.encrypt_blocks(&mut blocks[..2 * keys]);
        let leaves = &mut output[2 * (levels * count + first)..][..2 * keys];
        for key in 0..keys {
            let leaf =
                |party: usize| from_block(&blocks[2 * key + party]) ^ seeds[2 * key + party] ^ 2;
            let point = 1u128 << (alphas[first + key] & leaf_mask);
            put_word(leaves, key, leaf(0) ^ leaf(1) ^ point);
        }
    }
    Some(())
}

/// Eval for a batch: party `party` (0 or 1) evaluates `inputs.len()` keys on `bits`-bit
/// inputs, key i being its root seed `roots[i]` and its corrections in `words` (the wire
/// form), at the public `inputs[i]` (bits above `bits` ignored). Returns the party's XOR
/// shares of 1{inputs[i] < α_i}, packed: bit i % 64 of word i / 64 (bits past the last
/// key are 0). `None` if the lengths disagree, `bits` exceeds 64 or `party` is not 0 or 1.
pub fn evaluate_batch(
    party: usize,
    bits: u32,
    roots: &[u128],
    words: &[u64],
    inputs: &[u64],
) -> Option<Vec<u64>> {
    let count = inputs.len();
    if party > 1
        || bits > 64
        || roots.len() != count
        || count.checked_mul(key_words(bits))? != words.len()
    {
        return None;
    }
    let levels = tree_levels(bits) as usize;
    let mut shares = vec![0u64; count.div_ceil(64)];
    let cipher = fixed_cipher();
    let group = count.clamp(1, GROUP);
    // Block 2k + j is π(s ⊕ j) for key k's current seed s (j = 0, 1: the children).
    let mut scratch = Scratch::new(2 * group, group);
    let mut bits_of = vec![0u64; group];
    let leaf_mask = (1u64 << (bits - tree_levels(bits))) - 1;
    for first in (0..count).step_by(GROUP) {
        let keys = (count - first).min(GROUP);
        let inputs = &inputs[first..first + keys];
        let Scratch {
            blocks,
            seeds,
            controls,
        } = &mut scratch;
        for key in 0..keys {
            let seed = roots[first + key] & SEED_BITS;
            seeds[key] = seed;
            controls[key] = party as u64;
            bits_of[key] = 0;
            blocks[2 * key] = to_block(seed);
            blocks[2 * key + 1] = to_block(seed ^ 1);
        }
        for level in 0..levels {
            cipher.encrypt_blocks(&mut blocks[..2 * keys]);
            let shift = bits as usize - 1 - level;
            let corrections = &words[2 * (level * count + first)..][..2 * keys];
            for key in 0..keys {
                let correction = word_at(corrections, key);
                let apply = mask_128(controls[key]);
                let seed = seeds[key];
                // The left child's seed gets s_CW and its control bit t_CW^L (bit 0 of
                // the word; bit 1 lands in the seed's cleared bits); the right child's
                // gets s_CW and t_CW^R (bit 1).
                let left = from_block(&blocks[2 * key]) ^ seed ^ (correction & apply);
                let right = from_block(&blocks[2 * key + 1])
                    ^ seed
                    ^ 1
                    ^ ((correction & SEED_BITS) & apply)
                    ^ (((correction >> 1) & 1) & apply);
                let side = (inputs[key] >> shift) & 1;
                // Where y goes left, the right child holds α iff α > y at this bit.
                bits_of[key] ^= (right as u64 & 1) & (side ^ 1);
                let next = if side == 1 { right } else { left };
                let next_seed = next & SEED_BITS;
                seeds[key] = next_seed;
                controls[key] = next as u64 & 1;
                blocks[2 * key] = to_block(next_seed);
                blocks[2 * key + 1] = to_block(next_seed ^ 1);
            }
        }
        for key in 0..keys {
            blocks[key] = to_block(seeds[key] ^ 2);
        }
        cipher.encrypt_blocks(&mut blocks[..keys]);
        let leaves = &words[2 * (levels * count + first)..][..2 * keys];
        for key in 0..keys {
            let correction = word_at(leaves, key);
            let leaf =
                from_block(&blocks[key]) ^ seeds[key] ^ 2 ^ (correction & mask_128(controls[key]));
            let above = leaf & leaf_bits_above(inputs[key] & leaf_mask);
            let bit = bits_of[key] ^ u64::from(above.count_ones() & 1);
            let index = first + key;
            shares[index / 64] |= bit << (index % 64);
        }
    }
    bits_of.zeroize();
    Some(shares)
}

/// The 128-bit leaf words of one key over its whole domain, per key: 2^(tree levels)
/// words, leaf k covering the inputs 128·k to 128·k + 127 (bit j of word k is input
/// 128·k + j; a domain under 128 inputs uses the low 2^bits bits of one word).
pub fn leaves_per_key(bits: u32) -> usize {
    1 << tree_levels(bits)
}

/// Full-domain Eval for a batch: party `party` evaluates each key of `roots` (on
/// `bits`-bit inputs, at most 12) at every input at once, the XOR shares of e_α over
/// the domain: [`leaves_per_key`] words per key, key after key. `None` if the lengths
/// disagree, `bits` exceeds 12 or `party` is not 0 or 1.
///
/// It expands the whole tree, 2·(2^(levels) − 1) AES blocks for the inner nodes and
/// 2^(levels) for the leaves: 4 blocks a key for an 8-bit table.
pub fn evaluate_all(party: usize, bits: u32, roots: &[u128], words: &[u64]) -> Option<Vec<u128>> {
    let count = roots.len();
    if party > 1 || bits > 12 || count.checked_mul(key_words(bits))? != words.len() {
        return None;
    }
    let levels = tree_levels(bits) as usize;
    let leaves = leaves_per_key(bits);
    let cipher = fixed_cipher();
    let mut output = vec![0u128; count * leaves];
    // Keys advance level by level together, so each AES call gets many blocks.
    let group = (2 * GROUP / leaves).max(1);
    // The nodes of the group's keys on the current level, key-major, each its seed with
    // its control bit in bit 0.
    let mut nodes: Vec<u128> = Vec::with_capacity(group * leaves);
    let mut next: Vec<u128> = Vec::with_capacity(group * leaves);
    let mut blocks = vec![aes::Block::default(); 2 * group * leaves];
    for first in (0..count).step_by(group) {
        let keys = (count - first).min(group);
        nodes.clear();
        nodes.extend(
            roots[first..first + keys]
                .iter()
                .map(|root| (root & SEED_BITS) | party as u128),
        );
        for level in 0..levels {
            let width = 1usize << level;
            for (index, node) in nodes.iter().enumerate() {
                let seed = node & SEED_BITS;
                blocks[2 * index] = to_block(seed);
                blocks[2 * index + 1] = to_block(seed ^ 1);
            }
            cipher.encrypt_blocks(&mut blocks[..2 * nodes.len()]);
            next.clear();
            for (index, node) in nodes.iter().enumerate() {
                let correction = word_at(words, level * count + first + index / width);
                let seed = node & SEED_BITS;
                let apply = mask_128((node & 1) as u64);
                let left = from_block(&blocks[2 * index]) ^ seed ^ (correction & apply);
                let right = from_block(&blocks[2 * index + 1])
                    ^ seed
                    ^ 1
                    ^ ((correction & SEED_BITS) & apply)
                    ^ (((correction >> 1) & 1) & apply);
                // Keep the seed bits and the control bit; bit 1 is cleared.
                next.push(left & (SEED_BITS | 1));
                next.push(right & (SEED_BITS | 1));
            }
            std::mem::swap(&mut nodes, &mut next);
        }
        for (index, node) in nodes.iter().enumerate() {
            blocks[index] = to_block((node & SEED_BITS) ^ 2);
        }
        cipher.encrypt_blocks(&mut blocks[..nodes.len()]);
        for (index, node) in nodes.iter().enumerate() {
            let correction = word_at(words, levels * count + first + index / leaves);
            output[first * leaves + index] = from_block(&blocks[index])
                ^ (node & SEED_BITS)
                ^ 2
                ^ (correction & mask_128((node & 1) as u64));
        }
    }
    zeroize_blocks(&mut blocks);
    nodes.zeroize();
    next.zeroize();
    Some(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_core::prg::Prg;
    use veil_core::sampling::test_seed_or;

    fn bit(words: &[u64], index: usize) -> u64 {
        (words[index / 64] >> (index % 64)) & 1
    }

    /// Keys at `alphas` from fresh root seeds: (both parties' roots, the corrections).
    fn keys(bits: u32, alphas: &[u64], prg: &mut Prg) -> ([Vec<u128>; 2], Vec<u64>) {
        let roots: [Vec<u128>; 2] =
            [0, 1].map(|_| (0..alphas.len()).map(|_| prg.next_u128()).collect());
        let mut words = Vec::new();
        generate_batch(bits, alphas, [&roots[0], &roots[1]], &mut words).unwrap();
        assert_eq!(words.len(), alphas.len() * key_words(bits));
        (roots, words)
    }

    /// Asserts that both parties' shares XOR to 1{y < α} for every (α, y) pair.
    fn assert_less_than(bits: u32, alphas: &[u64], inputs: &[u64], prg: &mut Prg) {
        let (roots, words) = keys(bits, alphas, prg);
        let shares: Vec<Vec<u64>> = (0..2)
            .map(|party| evaluate_batch(party, bits, &roots[party], &words, inputs).unwrap())
            .collect();
        for (index, (alpha, y)) in alphas.iter().zip(inputs).enumerate() {
            let got = bit(&shares[0], index) ^ bit(&shares[1], index);
            assert_eq!(got, u64::from(y < alpha), "bits {bits}, α {alpha}, y {y}");
        }
    }

    #[test]
    fn every_point_and_input_on_small_widths() {
        let mut prg = test_seed_or(31).prg();
        for bits in 1..=10u32 {
            let domain = 1u64 << bits;
            let (mut alphas, mut inputs) = (Vec::new(), Vec::new());
            for alpha in 0..domain {
                for y in 0..domain {
                    alphas.push(alpha);
                    inputs.push(y);
                }
            }
            assert_less_than(bits, &alphas, &inputs, &mut prg);
        }
    }

    #[test]
    fn random_and_adjacent_points_on_wide_inputs() {
        let mut prg = test_seed_or(32).prg();
        for bits in [11u32, 17, 36, 37, 63, 64] {
            let mask = super::super::low_mask(bits);
            let (mut alphas, mut inputs) = (Vec::new(), Vec::new());
            for _ in 0..600 {
                let alpha = prg.next_u64() & mask;
                // Random, equal, and one either side: the walk's edge cases.
                for y in [
                    prg.next_u64() & mask,
                    alpha,
                    alpha.wrapping_sub(1) & mask,
                    alpha.wrapping_add(1) & mask,
                    alpha ^ 64,
                    0,
                    mask,
                ] {
                    alphas.push(alpha);
                    inputs.push(y);
                }
            }
            assert_less_than(bits, &alphas, &inputs, &mut prg);
        }
    }

    #[test]
    fn a_party_alone_sees_balanced_bits_and_the_size_is_as_documented() {
        // One party's shares of a constant comparison are uniform bits: the key alone
        // says nothing about 1{y < α}.
        let mut prg = test_seed_or(33).prg();
        let count = 4096;
        let alphas = vec![1u64 << 35; count];
        let inputs = vec![0u64; count];
        let (roots, words) = keys(36, &alphas, &mut prg);
        assert_eq!(key_words(36) * 8, 480);
        for (party, roots) in roots.iter().enumerate() {
            let shares = evaluate_batch(party, 36, roots, &words, &inputs).unwrap();
            let ones: u32 = shares.iter().map(|word| word.count_ones()).sum();
            assert!(
                (1800..2300).contains(&ones),
                "party {party}: {ones} ones of {count}"
            );
        }
    }

    #[test]
    fn the_whole_domain_shares_the_unit_vector() {
        let mut prg = test_seed_or(34).prg();
        for bits in [1u32, 5, 7, 8, 9, 10] {
            let domain = 1u64 << bits;
            let alphas: Vec<u64> = (0..domain).collect();
            let (roots, words) = keys(bits, &alphas, &mut prg);
            let shares: Vec<Vec<u128>> = (0..2)
                .map(|party| evaluate_all(party, bits, &roots[party], &words).unwrap())
                .collect();
            let leaves = leaves_per_key(bits);
            for (key, alpha) in alphas.iter().enumerate() {
                for input in 0..domain {
                    let (leaf, position) = ((input / 128) as usize, input % 128);
                    let bit = |party: usize| (shares[party][key * leaves + leaf] >> position) & 1;
                    assert_eq!(
                        bit(0) ^ bit(1),
                        u128::from(input == *alpha),
                        "bits {bits}, α {alpha}, input {input}"
                    );
                }
            }
            // The comparison walk and the full domain read the same tree.
            let inputs: Vec<u64> = alphas
                .iter()
                .map(|alpha| (alpha * 7 + 3) % domain)
                .collect();
            let less: Vec<Vec<u64>> = (0..2)
                .map(|party| evaluate_batch(party, bits, &roots[party], &words, &inputs).unwrap())
                .collect();
            for (key, input) in inputs.iter().enumerate() {
                let from_walk = bit(&less[0], key) ^ bit(&less[1], key);
                assert_eq!(from_walk, u64::from(*input < alphas[key]));
            }
        }
    }

    #[test]
    fn wrong_lengths_are_refused() {
        let roots = [vec![1u128; 3], vec![2u128; 3]];
        let mut words = Vec::new();
        assert!(generate_batch(65, &[0; 3], [&roots[0], &roots[1]], &mut words).is_none());
        assert!(generate_batch(20, &[0; 2], [&roots[0], &roots[1]], &mut words).is_none());
        assert!(words.is_empty());
        generate_batch(20, &[5; 3], [&roots[0], &roots[1]], &mut words).unwrap();
        assert!(evaluate_batch(0, 20, &roots[0], &words[1..], &[0; 3]).is_none());
        assert!(evaluate_batch(2, 20, &roots[0], &words, &[0; 3]).is_none());
        assert!(evaluate_batch(0, 20, &roots[0][..2], &words, &[0; 3]).is_none());
    }
}
