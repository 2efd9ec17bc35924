//! Tests of the DCF: the reference keys exhaustively on small domains and at 63-bit
//! boundaries, the batch forms against the reference, and the function values against
//! fss-rs, an independent BCG+21 implementation.

use veil_core::prg::Prg;

use super::*;
use crate::fss::low_mask;
use veil_core::sampling::test_seed_or;

fn check_all_inputs(bits: u32, alpha: u64, beta: [u64; 2], prg: &mut Prg) {
    let roots = [prg.next_u128(), prg.next_u128()];
    let corrections = generate(bits, alpha, beta, roots);
    for x in 0..(1u64 << bits) {
        let share0 = evaluate(0, roots[0], &corrections, x);
        let share1 = evaluate(1, roots[1], &corrections, x);
        for lane in 0..2 {
            let expected = if x < alpha { beta[lane] } else { 0 };
            assert_eq!(
                share0[lane].wrapping_add(share1[lane]),
                expected,
                "bits {bits} alpha {alpha} x {x} lane {lane}"
            );
        }
    }
}

#[test]
fn exhaustive_on_small_domains() {
    let seed = test_seed_or(11);
    let mut prg = seed.prg();
    for bits in 1..=7u32 {
        for alpha in 0..(1u64 << bits) {
            let beta = [prg.next_u64(), prg.next_u64()];
            check_all_inputs(bits, alpha, beta, &mut prg);
        }
    }
}

#[test]
fn wide_inputs_at_boundaries() {
    let seed = test_seed_or(12);
    let mut prg = seed.prg();
    let bits = 63;
    let top = (1u64 << bits) - 1;
    for &alpha in &[0, 1, top, top - 1, 1 << 62, 12345] {
        let roots = [prg.next_u128(), prg.next_u128()];
        let beta = [1, prg.next_u64()];
        let corrections = generate(bits, alpha, beta, roots);
        for &x in &[
            0,
            1,
            top,
            top - 1,
            1 << 62,
            alpha,
            alpha.wrapping_sub(1) & top,
            (alpha + 1) & top,
        ] {
            let sum = evaluate(0, roots[0], &corrections, x)[1]
                .wrapping_add(evaluate(1, roots[1], &corrections, x)[1]);
            assert_eq!(
                sum,
                if x < alpha { beta[1] } else { 0 },
                "alpha {alpha} x {x}"
            );
        }
    }
}

#[test]
fn encoding_round_trips() {
    let seed = test_seed_or(13);
    let mut prg = seed.prg();
    for payload in 1..=2 {
        let mut beta = [prg.next_u64(), 0];
        if payload == 2 {
            beta[1] = prg.next_u64();
        }
        let corrections = generate(40, 777, beta, [prg.next_u128(), prg.next_u128()]);
        let mut words = Vec::new();
        encode(&corrections, payload, &mut words);
        assert_eq!(words.len(), encoded_words(40, payload));
        // Lanes beyond the payload are not carried; the carried lanes round-trip.
        let mut again = Vec::new();
        encode(&decode(&words, 40, payload).unwrap(), payload, &mut again);
        assert_eq!(again, words);
        assert!(decode(&words[1..], 40, payload).is_none());
    }
}

/// Random keys for the batch tests: α, β (every lane random, so lanes beyond the
/// payload must be ignored), both parties' roots, and inputs that hit α's neighbourhood
/// as well as random points (with junk above `bits`, which must be ignored).
struct RandomKeys {
    alphas: Vec<u64>,
    betas: Vec<[u64; MAX_PAYLOAD]>,
    roots: [Vec<u128>; 2],
    inputs: Vec<u64>,
}

fn random_keys(bits: u32, count: usize, prg: &mut Prg) -> RandomKeys {
    let mask = low_mask(bits);
    let alphas: Vec<u64> = (0..count).map(|_| prg.next_u64() & mask).collect();
    let inputs = alphas
        .iter()
        .enumerate()
        .map(|(index, &alpha)| match index % 4 {
            0 => alpha,
            1 => alpha.wrapping_sub(1) & mask,
            2 => alpha.wrapping_add(1) & mask,
            _ => prg.next_u64(),
        })
        .collect();
    RandomKeys {
        alphas,
        betas: (0..count)
            .map(|_| [prg.next_u64(), prg.next_u64()])
            .collect(),
        roots: [
            (0..count).map(|_| prg.next_u128()).collect(),
            (0..count).map(|_| prg.next_u128()).collect(),
        ],
        inputs,
    }
}

const BATCH_BITS: [u32; 8] = [0, 1, 2, 7, 8, 31, 63, 64];

#[test]
fn batch_generation_matches_single_keys() {
    let seed = test_seed_or(14);
    let mut prg = seed.prg();
    for bits in BATCH_BITS {
        for payload in 1..=MAX_PAYLOAD {
            // More than one group, and a ragged last one.
            let count = 2 * BATCH_GROUP + 3;
            let keys = random_keys(bits, count, &mut prg);
            let single: Vec<DcfCorrections> = (0..count)
                .map(|index| {
                    let roots = [keys.roots[0][index], keys.roots[1][index]];
                    generate(bits, keys.alphas[index], keys.betas[index], roots)
                })
                .collect();
            let mut expected = vec![7, 8];
            encode_batch(&single, payload, &mut expected).unwrap();
            // Appends after what the buffer already holds.
            let mut words = vec![7, 8];
            let roots = [&keys.roots[0][..], &keys.roots[1][..]];
            generate_batch(bits, payload, &keys.alphas, &keys.betas, roots, &mut words).unwrap();
            assert_eq!(words, expected, "bits {bits} payload {payload}");
            // The batch form holds the same keys as the per-key form, rearranged.
            let decoded = decode_batch(&words[2..], bits, payload, count).unwrap();
            for (batch, single) in decoded.iter().zip(&single) {
                let (mut batch_words, mut single_words) = (Vec::new(), Vec::new());
                encode(batch, payload, &mut batch_words);
                encode(single, payload, &mut single_words);
                assert_eq!(batch_words, single_words, "bits {bits} payload {payload}");
            }
            let mut again = Vec::new();
            encode_batch(&decoded, payload, &mut again).unwrap();
            assert_eq!(again, words[2..], "bits {bits} payload {payload}");
        }
    }
}

#[test]
fn batch_form_of_one_key_is_the_per_key_form() {
    let seed = test_seed_or(17);
    let mut prg = seed.prg();
    for payload in 1..=MAX_PAYLOAD {
        let corrections = generate(40, 777, [prg.next_u64(), prg.next_u64()], [1, 2]);
        let (mut batch, mut single) = (Vec::new(), Vec::new());
        encode_batch(std::slice::from_ref(&corrections), payload, &mut batch).unwrap();
        encode(&corrections, payload, &mut single);
        assert_eq!(batch, single);
    }
}

#[test]
fn batch_evaluation_matches_single_keys() {
    let seed = test_seed_or(15);
    let mut prg = seed.prg();
    for bits in BATCH_BITS {
        for payload in 1..=MAX_PAYLOAD {
            let count = BATCH_GROUP + 45;
            let keys = random_keys(bits, count, &mut prg);
            let mut words = Vec::new();
            let roots = [&keys.roots[0][..], &keys.roots[1][..]];
            generate_batch(bits, payload, &keys.alphas, &keys.betas, roots, &mut words).unwrap();
            let shares = [0, 1].map(|party| {
                evaluate_batch(
                    party,
                    bits,
                    payload,
                    &keys.roots[party],
                    &words,
                    &keys.inputs,
                )
                .unwrap()
            });
            let decoded = decode_batch(&words, bits, payload, count).unwrap();
            for (index, corrections) in decoded.iter().enumerate() {
                let x = keys.inputs[index];
                for party in 0..2 {
                    let single = evaluate(party, keys.roots[party][index], corrections, x);
                    assert_eq!(
                        shares[party][index][..payload],
                        single[..payload],
                        "bits {bits} payload {payload} key {index} party {party}"
                    );
                    assert!(
                        shares[party][index][payload..]
                            .iter()
                            .all(|&lane| lane == 0)
                    );
                }
                let below = (x & low_mask(bits)) < keys.alphas[index];
                for lane in 0..payload {
                    let expected = if below { keys.betas[index][lane] } else { 0 };
                    assert_eq!(
                        shares[0][index][lane].wrapping_add(shares[1][index][lane]),
                        expected,
                        "bits {bits} payload {payload} key {index} lane {lane}"
                    );
                }
            }
        }
    }
}

#[test]
fn batch_functions_reject_malformed_batches() {
    let seed = test_seed_or(16);
    let mut prg = seed.prg();
    let (bits, payload, count) = (20, 1, 5);
    let keys = random_keys(bits, count, &mut prg);
    let both = [&keys.roots[0][..], &keys.roots[1][..]];
    let mut words = Vec::new();
    generate_batch(bits, payload, &keys.alphas, &keys.betas, both, &mut words).unwrap();

    let (roots, inputs) = (&keys.roots[0][..], &keys.inputs[..]);
    let evaluates = |party, bits, payload, roots: &[u128], words: &[u64], inputs: &[u64]| {
        evaluate_batch(party, bits, payload, roots, words, inputs).is_some()
    };
    assert!(evaluates(0, bits, payload, roots, &words, inputs));
    assert!(!evaluates(0, bits, payload, roots, &words[1..], inputs));
    assert!(!evaluates(0, bits, payload, &roots[1..], &words, inputs));
    assert!(!evaluates(0, bits, payload, roots, &words, &inputs[1..]));
    // The same words read as another shape no longer divide into keys.
    assert!(!evaluates(0, bits, 2, roots, &words, inputs));
    assert!(!evaluates(0, bits + 1, payload, roots, &words, inputs));
    assert!(!evaluates(0, bits, 0, roots, &words, inputs));
    assert!(!evaluates(0, bits, 3, roots, &words, inputs));
    assert!(!evaluates(2, bits, payload, roots, &words, inputs));
    assert!(!evaluates(0, 65, payload, &[], &[], &[]));
    assert_eq!(
        evaluate_batch(1, bits, payload, &[], &[], &[]),
        Some(vec![])
    );

    let mut untouched = vec![1, 2, 3];
    let short = [&keys.roots[0][..], &keys.roots[1][1..]];
    let (alphas, betas) = (&keys.alphas[..], &keys.betas[..]);
    assert!(generate_batch(bits, payload, alphas, betas, short, &mut untouched).is_none());
    assert!(generate_batch(bits, payload, &alphas[1..], betas, both, &mut untouched).is_none());
    assert!(generate_batch(bits, payload, alphas, &betas[1..], both, &mut untouched).is_none());
    assert!(generate_batch(bits, 3, alphas, betas, both, &mut untouched).is_none());
    assert!(generate_batch(65, payload, alphas, betas, both, &mut untouched).is_none());

    assert!(decode_batch(&words, bits, payload, count).is_some());
    assert!(decode_batch(&words, bits, payload, count - 1).is_none());
    assert!(decode_batch(&words[1..], bits, payload, count).is_none());
    assert!(decode_batch(&words, bits, 0, count).is_none());
    let mixed = [
        generate(bits, 1, [1, 0], [1, 2]),
        generate(bits + 1, 1, [1, 0], [1, 2]),
    ];
    assert!(encode_batch(&mixed, payload, &mut untouched).is_none());
    assert!(encode_batch(&mixed[..1], 3, &mut untouched).is_none());
    assert_eq!(untouched, vec![1, 2, 3]);
}

/// Cross-check against fss-rs, an independent BCG+21 implementation (its own PRG,
/// key layout and code), on 16-bit domains. Keys are not interchangeable, so the test
/// compares what both must agree on: the function value (the reconstructed output)
/// at each input, β if x < α and 0 otherwise, x read most significant bit first.
///
/// fss-rs is used with its XOR group (`ByteGroup<16>`), so its β is a 16-byte string
/// that reconstructs by XOR; ours is an element of Z_2^64 that reconstructs by
/// addition. The mapping: β's little-endian bytes, then 8 further random bytes, which
/// must come back whole or as zeros.
///
/// Its integer groups (`U64Group`) are not usable as an oracle: in fss-rs 0.6's `gen`
/// the level correction is (−1)^t₁·(Convert(v₀) − Convert(v₁) − V_α) where Fig. 3 has
/// Convert(v₁) − Convert(v₀), V_α moves with the same flipped sign, and β is added
/// without the factor (−1)^t₁. Signs vanish in an XOR group, but with `U64Group` the
/// shares do not reconstruct (tried: 0 of 1,000 random (α, x) correct).
#[test]
fn agrees_with_fss_rs_on_16_bit_domains() {
    use fss_rs::Share;
    use fss_rs::dcf::{BoundState, CmpFn, Dcf, DcfImpl};
    use fss_rs::group::byte::ByteGroup;
    use fss_rs::prg::Aes128MatyasMeyerOseasPrg;

    let seed = test_seed_or(18);
    let mut prg = seed.prg();
    let mut block = || prg.next_u128().to_le_bytes();
    let prg_keys = [block(), block(), block(), block()];
    let oracle = DcfImpl::<2, 16, _>::new(Aes128MatyasMeyerOseasPrg::<16, 2, 4>::new(&[
        &prg_keys[0],
        &prg_keys[1],
        &prg_keys[2],
        &prg_keys[3],
    ]));
    // The oracle's reconstructed output at x.
    let oracle_value = |key: &Share<16, ByteGroup<16>>, x: u16| {
        let mut value = [0u8; 16];
        for party in 0..2 {
            let own = Share {
                s0s: vec![key.s0s[party]],
                cws: key.cws.clone(),
                cw_np1: key.cw_np1.clone(),
            };
            let mut share = ByteGroup([0; 16]);
            oracle.eval(party == 1, &own, &[&x.to_be_bytes()], &mut [&mut share]);
            for (byte, share_byte) in value.iter_mut().zip(share.0) {
                *byte ^= share_byte;
            }
        }
        value
    };

    let mut prg = seed.prg_at(1);
    let bits = 16;
    let mut alphas: Vec<u64> = vec![0, 1, 0x8000, 0xfffe, 0xffff];
    alphas.extend((0..40).map(|_| prg.next_u64() & 0xffff));
    for alpha in alphas {
        let beta = prg.next_u64();
        let beta_bytes = (u128::from(beta) | (u128::from(prg.next_u64()) << 64)).to_le_bytes();
        let oracle_seeds = [prg.next_u128().to_le_bytes(), prg.next_u128().to_le_bytes()];
        let oracle_key = oracle.r#gen(
            &CmpFn {
                alpha: (alpha as u16).to_be_bytes(),
                beta: ByteGroup(beta_bytes),
                bound: BoundState::LtAlpha,
            },
            [&oracle_seeds[0], &oracle_seeds[1]],
        );
        let mut inputs: Vec<u64> = vec![0, 0xffff, alpha, alpha.saturating_sub(1)];
        inputs.push((alpha + 1).min(0xffff));
        inputs.extend((0..60).map(|_| prg.next_u64() & 0xffff));
        // One key per input for the batch: the same α and β, fresh roots.
        let count = inputs.len();
        let roots: [Vec<u128>; 2] = [0, 1].map(|_| (0..count).map(|_| prg.next_u128()).collect());
        let mut words = Vec::new();
        generate_batch(
            bits,
            1,
            &vec![alpha; count],
            &vec![[beta, 0]; count],
            [&roots[0], &roots[1]],
            &mut words,
        )
        .unwrap();
        let shares = [0, 1]
            .map(|party| evaluate_batch(party, bits, 1, &roots[party], &words, &inputs).unwrap());
        for (index, &x) in inputs.iter().enumerate() {
            let ours = shares[0][index][0].wrapping_add(shares[1][index][0]);
            let theirs = match oracle_value(&oracle_key, x as u16) {
                value if value == beta_bytes => Some(beta),
                value if value == [0; 16] => Some(0),
                _ => None,
            };
            assert_eq!(Some(ours), theirs, "alpha {alpha} x {x}");
            assert_eq!(
                ours,
                if x < alpha { beta } else { 0 },
                "alpha {alpha} x {x}"
            );
        }
    }
}
