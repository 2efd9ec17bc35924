//! The level-synchronous batch forms of BCG+21 Fig. 3 (cookbook §3.4): [`generate_batch`]
//! and [`evaluate_batch`] advance many keys of one shape through one level per pass, so
//! one `encrypt_blocks` call gets hundreds of independent AES blocks, and the keys travel
//! in the batch wire form ([`encode_batch`] / [`decode_batch`]; layout under
//! [`generate_batch`]). Secret bits (control bits, α's bits) select by masks rather than
//! branches. Each function equals the single-key reference in the parent module on the
//! same keys.

use aes::cipher::BlockCipherEncrypt;
use zeroize::Zeroize;

use super::{
    DcfCorrections, MAX_PAYLOAD, SEED_BITS, convert, decode, encode, encoded_words, fixed_cipher,
};

/// Keys per group of the batch wire form (see [`generate_batch`]), which is also how many
/// keys the batched kernels advance through one level together: for evaluation, 512 AES
/// blocks per `encrypt_blocks` call, far more than the 64 that a VAES-512 pass keeps in
/// flight, while the group's running state stays in L1.
pub const BATCH_GROUP: usize = 256;

fn to_block(word: u128) -> aes::Block {
    aes::Block::from(word.to_le_bytes())
}

fn from_block(block: &aes::Block) -> u128 {
    u128::from_le_bytes(block.0)
}

/// All ones if `bit` (0 or 1) is set, else zero: selects without branching on secrets.
fn mask_64(bit: u64) -> u64 {
    0u64.wrapping_sub(bit)
}

fn mask_128(bit: u64) -> u128 {
    0u128.wrapping_sub(u128::from(bit))
}

/// (−1)^negative · value, with `negative_mask` from [`mask_64`]: two's complement negation
/// is "flip the bits, add one", i.e. (value ⊕ m) − m.
fn signed_by_mask(negative_mask: u64, value: u64) -> u64 {
    (value ^ negative_mask).wrapping_sub(negative_mask)
}

/// The words per key of a batch with `bits` levels and payload `payload`, if the batched
/// kernels support that shape.
fn batch_key_words(bits: u32, payload: usize) -> Option<usize> {
    // Inputs are u64, so more than 64 levels have no input bit to follow.
    if bits > 64 || payload == 0 || payload > MAX_PAYLOAD {
        return None;
    }
    Some(encoded_words(bits, payload))
}

/// Packed control-bit words per key: two bits per level, at most 64 levels.
fn control_words_per_key(bits: u32) -> usize {
    (2 * bits as usize).div_ceil(64)
}

/// The three parts of one group of `keys` keys in the batch wire form: the level-major
/// (s_CW, V_CW) words, the control-bit words, CW^(n+1).
fn split_group(words: &[u64], keys: usize, bits: u32, payload: usize) -> [&[u64]; 3] {
    let (levels, rest) = words.split_at(bits as usize * keys * (2 + payload));
    let (controls, lasts) = rest.split_at(keys * control_words_per_key(bits));
    [levels, controls, lasts]
}

/// Rearranges `keys` keys in [`encode`]'s form (concatenated) into one group of the batch
/// wire form, appended to `output`.
fn interleave_group(
    per_key: &[u64],
    keys: usize,
    bits: u32,
    payload: usize,
    output: &mut Vec<u64>,
) {
    let key_words = encoded_words(bits, payload);
    let level_words = 2 + payload;
    let control_offset = bits as usize * level_words;
    let control_words = control_words_per_key(bits);
    for level in 0..bits as usize {
        for key in per_key.chunks_exact(key_words).take(keys) {
            output.extend_from_slice(&key[level * level_words..][..level_words]);
        }
    }
    for key in per_key.chunks_exact(key_words).take(keys) {
        output.extend_from_slice(&key[control_offset..][..control_words]);
    }
    for key in per_key.chunks_exact(key_words).take(keys) {
        output.extend_from_slice(&key[key_words - payload..]);
    }
}

/// Appends `keys`' corrections (all of one bit-width, at most 64 levels) in the batch wire
/// form for payload `payload` (1 or 2; lanes beyond it are dropped, as in [`encode`]).
/// Returns `None`, appending nothing, if the keys' widths differ or a shape is unsupported.
/// [`generate_batch`] writes the same words without building the keys.
pub fn encode_batch(keys: &[DcfCorrections], payload: usize, output: &mut Vec<u64>) -> Option<()> {
    let bits = u32::try_from(keys.first().map_or(0, |key| key.levels.len())).ok()?;
    let key_words = batch_key_words(bits, payload)?;
    if keys.iter().any(|key| key.levels.len() != bits as usize) {
        return None;
    }
    output.reserve(keys.len() * key_words);
    let mut per_key = Vec::with_capacity(BATCH_GROUP * key_words);
    for group in keys.chunks(BATCH_GROUP) {
        per_key.clear();
        for key in group {
            encode(key, payload, &mut per_key);
        }
        interleave_group(&per_key, group.len(), bits, payload, output);
    }
    Some(())
}

/// Reads `count` keys of `bits` levels and payload `payload` from exactly
/// `count` × [`encoded_words`] words in the batch wire form (the inverse of
/// [`encode_batch`]); `None` if the length or shape is wrong.
pub fn decode_batch(
    words: &[u64],
    bits: u32,
    payload: usize,
    count: usize,
) -> Option<Vec<DcfCorrections>> {
    let key_words = batch_key_words(bits, payload)?;
    if count.checked_mul(key_words)? != words.len() {
        return None;
    }
    let level_words = 2 + payload;
    let control_words = control_words_per_key(bits);
    let mut keys = Vec::with_capacity(count);
    let mut per_key = Vec::with_capacity(key_words);
    for group in words.chunks(BATCH_GROUP * key_words) {
        let group_keys = group.len() / key_words;
        let [levels, controls, lasts] = split_group(group, group_keys, bits, payload);
        for index in 0..group_keys {
            per_key.clear();
            for level in levels.chunks_exact(group_keys * level_words) {
                per_key.extend_from_slice(&level[index * level_words..][..level_words]);
            }
            per_key.extend_from_slice(&controls[index * control_words..][..control_words]);
            per_key.extend_from_slice(&lasts[index * payload..][..payload]);
            keys.push(decode(&per_key, bits, payload)?);
        }
    }
    Some(keys)
}

/// One key's running state in [`evaluate_batch`]: everything the level loop touches per
/// key except the AES blocks and the level's corrections, in one cache line, so the loop
/// walks three arrays rather than seven.
#[derive(Clone, Copy, Default)]
#[repr(align(64))]
struct KeyState {
    /// The current seed s (two low bits clear unless a malformed s_CW set them).
    seed: u128,
    /// The key's packed control-bit corrections (at most 64 levels, so two words).
    control_words: [u64; 2],
    /// The public input x.
    input: u64,
    /// The control bit t (0 or 1).
    control: u64,
    /// The running sum of the party's (unsigned) terms, per lane.
    accumulator: [u64; MAX_PAYLOAD],
}

// Lets `[KeyState]` be zeroised: its default is all zeroes.
impl zeroize::DefaultIsZeroes for KeyState {}

/// Per-group scratch of [`evaluate_batch`], reused across groups. It holds the party's
/// seeds, so it is zeroised on drop.
struct EvaluationState {
    /// The AES blocks of the current level: s ⊕ side and s ⊕ 2 ⊕ side for each key,
    /// encrypted in place.
    blocks: Vec<aes::Block>,
    keys: Vec<KeyState>,
}

impl Drop for EvaluationState {
    fn drop(&mut self) {
        zeroize_blocks(&mut self.blocks);
        self.keys.zeroize();
    }
}

fn zeroize_blocks(blocks: &mut [aes::Block]) {
    for block in blocks {
        block.0.zeroize();
    }
}

/// Eval (BCG+21 Fig. 3) for a batch: party `party` (0 or 1) evaluates `inputs.len()` keys
/// of `bits` levels and payload `payload` (1 or 2) at once. Key i is its root seed
/// `roots[i]` plus its corrections, which `words` holds in the batch wire form (see
/// [`generate_batch`]); it is evaluated at `inputs[i]` (bits above `bits` are ignored).
///
/// Returns the party's additive shares, `output[i][lane]` for lane < `payload`; lanes from
/// `payload` on are 0. Returns `None` if the lengths disagree (`words` must hold exactly
/// `inputs.len()` × [`encoded_words`]`(bits, payload)` words), `payload` is not 1 or 2,
/// `bits` exceeds 64 or `party` is not 0 or 1. Equal to [`evaluate`](super::evaluate) on
/// the keys that [`decode_batch`] reads, lane by lane below `payload`.
pub fn evaluate_batch(
    party: usize,
    bits: u32,
    payload: usize,
    roots: &[u128],
    words: &[u64],
    inputs: &[u64],
) -> Option<Vec<[u64; MAX_PAYLOAD]>> {
    let count = inputs.len();
    let key_words = batch_key_words(bits, payload)?;
    if party > 1 || roots.len() != count || count.checked_mul(key_words)? != words.len() {
        return None;
    }
    let mut output = vec![[0u64; MAX_PAYLOAD]; count];
    let group = count.clamp(1, BATCH_GROUP);
    let mut state = EvaluationState {
        blocks: vec![aes::Block::default(); 2 * group],
        keys: vec![KeyState::default(); group],
    };
    for (((roots, inputs), output), words) in roots
        .chunks(BATCH_GROUP)
        .zip(inputs.chunks(BATCH_GROUP))
        .zip(output.chunks_mut(BATCH_GROUP))
        .zip(words.chunks(BATCH_GROUP * key_words))
    {
        let keys = (roots, inputs, output);
        if payload == 1 {
            evaluate_group::<1>(party, bits, words, keys, &mut state);
        } else {
            evaluate_group::<2>(party, bits, words, keys, &mut state);
        }
    }
    Some(output)
}

/// One group of [`evaluate_batch`]; `PAYLOAD` is a constant so the lane loops unroll. The
/// caller has checked the lengths.
fn evaluate_group<const PAYLOAD: usize>(
    party: usize,
    bits: u32,
    words: &[u64],
    (roots, inputs, output): (&[u128], &[u64], &mut [[u64; MAX_PAYLOAD]]),
    state: &mut EvaluationState,
) {
    let count = inputs.len();
    let level_words = 2 + PAYLOAD;
    let [levels, control_words, lasts] = split_group(words, count, bits, PAYLOAD);
    let blocks = &mut state.blocks[..2 * count];
    let keys = &mut state.keys[..count];
    // With no levels there is no first side; the blocks are then never encrypted.
    let first_shift = (bits as usize).saturating_sub(1);
    let control_words_per_key = control_words_per_key(bits).max(1);
    for (((pair, key), (root, input)), packed) in blocks
        .chunks_exact_mut(2)
        .zip(keys.iter_mut())
        .zip(roots.iter().zip(inputs))
        .zip(
            control_words
                .chunks(control_words_per_key)
                .chain(std::iter::repeat(&[][..])),
        )
    {
        let seed = root & SEED_BITS;
        let side = u128::from((input >> first_shift) & 1);
        pair[0] = to_block(seed ^ side);
        pair[1] = to_block(seed ^ 2 ^ side);
        *key = KeyState {
            seed,
            control_words: [
                packed.first().copied().unwrap_or(0),
                packed.get(1).copied().unwrap_or(0),
            ],
            input: *input,
            control: party as u64,
            accumulator: [0; MAX_PAYLOAD],
        };
    }
    let cipher = fixed_cipher();
    for (level, corrections) in levels.chunks_exact(count * level_words).enumerate() {
        // The party follows x's side only, so it needs G_side and G_{2+side} alone.
        cipher.encrypt_blocks(blocks);
        let shift = bits as usize - 1 - level;
        // After the last level the blocks are not used again; any side will do.
        let next_shift = shift.saturating_sub(1);
        // Level ℓ's two control bits sit at 2ℓ and 2ℓ + 1 of a key's bits, in one word.
        let control_word = level / 32;
        let control_shift = 2 * (level % 32);
        for ((pair, key), correction) in blocks
            .chunks_exact_mut(2)
            .zip(keys.iter_mut())
            .zip(corrections.chunks_exact(level_words))
        {
            let side = (key.input >> shift) & 1;
            // Matyas–Meyer–Oseas: G_j(s) = π(s ⊕ j) ⊕ s ⊕ j.
            let seed_block = from_block(&pair[0]) ^ key.seed ^ u128::from(side);
            let value_block = from_block(&pair[1]) ^ key.seed ^ 2 ^ u128::from(side);
            let correction_seed = u128::from(correction[0]) | (u128::from(correction[1]) << 64);
            let correction_control =
                (key.control_words[control_word] >> (control_shift + side as usize)) & 1;
            let values = [value_block as u64, (value_block >> 64) as u64];
            let control_mask = mask_64(key.control);
            for lane in 0..PAYLOAD {
                key.accumulator[lane] = key.accumulator[lane]
                    .wrapping_add(values[lane])
                    .wrapping_add(correction[2 + lane] & control_mask);
            }
            let seed = (seed_block & SEED_BITS) ^ (correction_seed & mask_128(key.control));
            key.control = (seed_block as u64 & 1) ^ (key.control & correction_control);
            key.seed = seed;
            // The next level's blocks, straight away: no separate pass over the seeds.
            let side = u128::from((key.input >> next_shift) & 1);
            pair[0] = to_block(seed ^ side);
            pair[1] = to_block(seed ^ 2 ^ side);
        }
    }
    // Party 1's terms all carry a minus sign; negating the sum once is the same.
    let negative_mask = mask_64(party as u64);
    for ((key, last), shares) in keys
        .iter()
        .zip(lasts.chunks_exact(PAYLOAD))
        .zip(output.iter_mut())
    {
        let converted = convert(key.seed);
        for lane in 0..PAYLOAD {
            let sum = key.accumulator[lane]
                .wrapping_add(converted[lane])
                .wrapping_add(last[lane] & mask_64(key.control));
            shares[lane] = signed_by_mask(negative_mask, sum);
        }
    }
}

/// Per-key running state of [`generate_batch`], reused across groups: both parties'
/// control bits along α's path and V_α; the seeds live in the AES input blocks. All of
/// it is the dealer's secret, so it is zeroised on drop.
struct GenerationState {
    /// G_j's inputs s_b ⊕ j for party b and j = 0..3 (block 8k + 4b + j); after the last
    /// level, block 8k + 4b holds party b's final seed.
    inputs: Vec<aes::Block>,
    outputs: Vec<aes::Block>,
    controls: Vec<[u64; 2]>,
    value_alpha: Vec<[u64; MAX_PAYLOAD]>,
}

impl Drop for GenerationState {
    fn drop(&mut self) {
        zeroize_blocks(&mut self.inputs);
        zeroize_blocks(&mut self.outputs);
        self.controls.zeroize();
        self.value_alpha.zeroize();
    }
}

/// Gen (BCG+21 Fig. 3) for a batch: key i shares f(x) = `betas[i]`·1{x < `alphas[i]`} on
/// `bits`-bit inputs (at most 64) with root seeds `root_seeds[0][i]` (party 0) and
/// `root_seeds[1][i]` (party 1), payload `payload` (1 or 2; lanes of β from `payload` on
/// are ignored). Appends the corrections of all keys to `words` in the batch wire form,
/// the same words as [`encode_batch`] of [`generate`](super::generate)'s keys.
///
/// Returns `None`, appending nothing, if the lengths disagree, `payload` is not 1 or 2 or
/// `bits` exceeds 64.
///
/// # Batch wire form
///
/// `count` keys of one shape take `count` × [`encoded_words`]`(bits, payload)` words, as
/// many as `count` keys in [`encode`]'s form, arranged for level-synchronous reading: the
/// keys are cut into groups of [`BATCH_GROUP`] (the last one may be shorter), and a group
/// of m keys holds, in order,
/// 1. for each level, most significant first, for each of its m keys: s_CW (2 words, low
///    half first) and V_CW (`payload` words);
/// 2. for each key: its ⌈2·bits/64⌉ words of packed control-bit corrections (bit 2ℓ is
///    t_CW^L of level ℓ, bit 2ℓ + 1 is t_CW^R);
/// 3. for each key: CW^(n+1) (`payload` words).
///
/// A group of one key is exactly [`encode`]'s form. The evaluator reads each level's
/// corrections for the whole group as one sequential run, which the per-key form would
/// scatter a key apart.
pub fn generate_batch(
    bits: u32,
    payload: usize,
    alphas: &[u64],
    betas: &[[u64; MAX_PAYLOAD]],
    root_seeds: [&[u128]; 2],
    words: &mut Vec<u64>,
) -> Option<()> {
    let count = alphas.len();
    let key_words = batch_key_words(bits, payload)?;
    let total_words = count.checked_mul(key_words)?;
    if betas.len() != count || root_seeds[0].len() != count || root_seeds[1].len() != count {
        return None;
    }
    let start = words.len();
    words.resize(start + total_words, 0);
    let group = count.clamp(1, BATCH_GROUP);
    let mut state = GenerationState {
        inputs: vec![aes::Block::default(); 8 * group],
        outputs: vec![aes::Block::default(); 8 * group],
        controls: vec![[0; 2]; group],
        value_alpha: vec![[0; MAX_PAYLOAD]; group],
    };
    for ((((alphas, betas), roots_0), roots_1), output) in alphas
        .chunks(BATCH_GROUP)
        .zip(betas.chunks(BATCH_GROUP))
        .zip(root_seeds[0].chunks(BATCH_GROUP))
        .zip(root_seeds[1].chunks(BATCH_GROUP))
        .zip(words[start..].chunks_mut(BATCH_GROUP * key_words))
    {
        let keys = (alphas, betas, [roots_0, roots_1]);
        let generated = if payload == 1 {
            generate_group::<1>(bits, keys, output, &mut state)
        } else {
            generate_group::<2>(bits, keys, output, &mut state)
        };
        if generated.is_none() {
            words.truncate(start);
            return None;
        }
    }
    Some(())
}

/// One group of [`generate_batch`], written into `output` (zeroed, the group's words).
/// The caller has checked the lengths.
fn generate_group<const PAYLOAD: usize>(
    bits: u32,
    (alphas, betas, roots): (&[u64], &[[u64; MAX_PAYLOAD]], [&[u128]; 2]),
    output: &mut [u64],
    state: &mut GenerationState,
) -> Option<()> {
    let count = alphas.len();
    let level_words = 2 + PAYLOAD;
    let control_words = control_words_per_key(bits);
    let (levels, rest) = output.split_at_mut(bits as usize * count * level_words);
    let (controls_words, lasts) = rest.split_at_mut(count * control_words);
    let blocks_in = &mut state.inputs[..8 * count];
    let blocks_out = &mut state.outputs[..8 * count];
    let controls = &mut state.controls[..count];
    let value_alpha = &mut state.value_alpha[..count];
    for (index, ((group, control), value)) in blocks_in
        .chunks_exact_mut(8)
        .zip(controls.iter_mut())
        .zip(value_alpha.iter_mut())
        .enumerate()
    {
        let seeds = [roots[0][index] & SEED_BITS, roots[1][index] & SEED_BITS];
        for (j, block) in group.iter_mut().enumerate() {
            *block = to_block(seeds[j / 4] ^ (j % 4) as u128);
        }
        *control = [0, 1];
        *value = [0; MAX_PAYLOAD];
    }
    let cipher = fixed_cipher();
    for (level, corrections) in levels.chunks_exact_mut(count * level_words).enumerate() {
        cipher.encrypt_blocks_b2b(blocks_in, blocks_out).ok()?;
        let shift = bits as usize - 1 - level;
        let control_shift = 2 * (level % 32);
        let level_controls = controls_words[level / 32..]
            .iter_mut()
            .step_by(control_words);
        for (
            (((group_in, group_out), control), value_alpha),
            ((alpha, beta), (correction, control_word)),
        ) in blocks_in
            .chunks_exact_mut(8)
            .zip(blocks_out.chunks_exact(8))
            .zip(controls.iter_mut())
            .zip(value_alpha.iter_mut())
            .zip(
                alphas.iter().zip(betas).zip(
                    corrections
                        .chunks_exact_mut(level_words)
                        .zip(level_controls),
                ),
            )
        {
            // expanded[b][j] = G_j(s_b), Matyas–Meyer–Oseas: π(s_b ⊕ j) ⊕ s_b ⊕ j.
            let mut expanded = [[0u128; 4]; 2];
            for (j, (block_in, block_out)) in group_in.iter().zip(group_out).enumerate() {
                expanded[j / 4][j % 4] = from_block(block_out) ^ from_block(block_in);
            }
            let alpha_bit = (alpha >> shift) & 1;
            // Keep the side α goes down; lose the other.
            let keep = alpha_bit as usize;
            let lose = keep ^ 1;
            let child_seed = |party: usize, side: usize| expanded[party][side] & SEED_BITS;
            let child_control = |party: usize, side: usize| expanded[party][side] as u64 & 1;
            let child_value = |party: usize, side: usize, lane: usize| {
                (expanded[party][2 + side] >> (64 * lane)) as u64
            };
            let seed_correction = child_seed(0, lose) ^ child_seed(1, lose);
            let negative_mask = mask_64(control[1]);
            // Inputs that leave α's path to the left (α's bit is 1) are smaller than α:
            // pay β there.
            let alpha_mask = mask_64(alpha_bit);
            for lane in 0..PAYLOAD {
                let difference = child_value(1, lose, lane)
                    .wrapping_sub(child_value(0, lose, lane))
                    .wrapping_sub(value_alpha[lane])
                    .wrapping_add(beta[lane] & alpha_mask);
                correction[2 + lane] = signed_by_mask(negative_mask, difference);
                // V_α moves by the kept values and the (unsigned) correction.
                value_alpha[lane] = value_alpha[lane]
                    .wrapping_sub(child_value(1, keep, lane))
                    .wrapping_add(child_value(0, keep, lane))
                    .wrapping_add(difference);
            }
            let control_correction = [
                child_control(0, 0) ^ child_control(1, 0) ^ alpha_bit ^ 1,
                child_control(0, 1) ^ child_control(1, 1) ^ alpha_bit,
            ];
            for party in 0..2 {
                let previous = control[party];
                let seed = child_seed(party, keep) ^ (seed_correction & mask_128(previous));
                control[party] = child_control(party, keep) ^ (previous & control_correction[keep]);
                for (j, block) in group_in[4 * party..4 * party + 4].iter_mut().enumerate() {
                    *block = to_block(seed ^ j as u128);
                }
            }
            correction[0] = seed_correction as u64;
            correction[1] = (seed_correction >> 64) as u64;
            *control_word |=
                (control_correction[0] | (control_correction[1] << 1)) << control_shift;
        }
    }
    for (((group, control), value_alpha), last) in blocks_in
        .chunks_exact(8)
        .zip(controls.iter())
        .zip(value_alpha.iter())
        .zip(lasts.chunks_exact_mut(PAYLOAD))
    {
        let converted = [
            convert(from_block(&group[0])),
            convert(from_block(&group[4])),
        ];
        let negative_mask = mask_64(control[1]);
        for lane in 0..PAYLOAD {
            let difference = converted[1][lane]
                .wrapping_sub(converted[0][lane])
                .wrapping_sub(value_alpha[lane]);
            last[lane] = signed_by_mask(negative_mask, difference);
        }
    }
    Some(())
}
