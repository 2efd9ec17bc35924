//! Comparison gates from DCF keys in the gate model (cookbook §3.4, BCG+21 §4):
//! DReLU and ReLU on a k-bit reduction of a shared 64-bit value.
//!
//! The wire is masked: the parties open x̂ = x + r for a dealer mask r, then evaluate
//! keys. For the k-bit signed reduction x_k of x (x mod 2^k read in two's complement),
//!
//! - MSB(x_k) = c ⊕ m ⊕ 1{y < α}, with c = bit k−1 of x̂, m = bit k−1 of r,
//!   y = x̂ mod 2^(k−1), α = r mod 2^(k−1) (the carry out of the low k−1 bits);
//! - t := m ⊕ 1{y < α} = m + (1 − 2m)·1{y < α}, so a DCF on k−1 bits with payload
//!   β = 1 − 2m, plus a sharing of m, gives shares of t; MSB(x_k) = c ⊕ t is linear in
//!   t because c is public;
//! - DReLU(x_k) = 1 − MSB(x_k) = (1 − c) + (2c − 1)·t;
//! - ReLU(x) = DReLU·x = DReLU·(x̂ − r): a second payload lane β₂ = (1 − 2m)·r and a
//!   sharing of m·r give shares of t·r, and the product is again linear:
//!   ReLU = (1 − c)(x̂ − r) + (2c − 1)(t·x̂ − t·r).
//!
//! So DReLU and ReLU both cost one round: open x̂ (k bits for DReLU, 64 for ReLU), then
//! local evaluation. The result is exact whenever x ∈ [−2^(k−1), 2^(k−1)).

use super::dcf::{self, DcfCorrections, MAX_PAYLOAD};
use super::low_mask;

/// The dealer's per-element output for one comparison gate.
pub struct GateKey {
    /// The DCF corrections (identical for both parties).
    pub corrections: DcfCorrections,
    /// The dealer's m = bit k−1 of r, and m·r (to be shared).
    pub constants: [u64; MAX_PAYLOAD],
}

/// What the dealer derives from a gate's mask: the DCF's threshold α and payload β on
/// k−1 bits, and the constants (m, m·r) to share.
#[derive(Clone, Copy)]
pub struct GateParameters {
    /// α = r mod 2^(k−1).
    pub alpha: u64,
    /// β = (1 − 2m) (DReLU) or (1 − 2m, (1 − 2m)·r) (ReLU).
    pub beta: [u64; MAX_PAYLOAD],
    /// (m, m·r) with m = bit k−1 of r.
    pub constants: [u64; MAX_PAYLOAD],
}

/// The gate parameters for mask r (the sum of the parties' mask shares) and width k;
/// `with_product` selects ReLU (payload 2) over DReLU (payload 1).
pub fn parameters(mask: u64, bits: u32, with_product: bool) -> GateParameters {
    let low_bits = bits - 1;
    let msb = (mask >> low_bits) & 1;
    let beta_one = 1u64.wrapping_sub(2 * msb);
    GateParameters {
        alpha: mask & low_mask(low_bits),
        beta: if with_product {
            [beta_one, beta_one.wrapping_mul(mask)]
        } else {
            [beta_one, 0]
        },
        constants: [msb, msb.wrapping_mul(mask)],
    }
}

/// Generates one gate (see [`parameters`]) with the parties' DCF root seeds.
pub fn generate(mask: u64, bits: u32, with_product: bool, root_seeds: [u128; 2]) -> GateKey {
    let parameters = parameters(mask, bits, with_product);
    GateKey {
        corrections: dcf::generate(bits - 1, parameters.alpha, parameters.beta, root_seeds),
        constants: parameters.constants,
    }
}

/// The DCF input of an opened value: its low k−1 bits.
pub fn dcf_input(opened: u64, bits: u32) -> u64 {
    split_opened(opened, bits).1
}

/// Splits an opened value into (c, y): bit k−1 and the low k−1 bits.
fn split_opened(opened: u64, bits: u32) -> (u64, u64) {
    let low_bits = bits - 1;
    ((opened >> low_bits) & 1, opened & low_mask(low_bits))
}

/// One party's share of t (and of t·r when the key has the product lane).
pub fn evaluate_t(
    party: usize,
    root_seed: u128,
    corrections: &DcfCorrections,
    constant_shares: [u64; MAX_PAYLOAD],
    opened: u64,
    bits: u32,
) -> [u64; MAX_PAYLOAD] {
    let (_, low) = split_opened(opened, bits);
    let dcf_share = dcf::evaluate(party, root_seed, corrections, low);
    [
        constant_shares[0].wrapping_add(dcf_share[0]),
        constant_shares[1].wrapping_add(dcf_share[1]),
    ]
}

/// A party's additive shares of t and t·r in the point-function form of a gate.
///
/// With keys from [`super::dpf`] the parties hold XOR shares u_b of 1{y < α}. The dealer
/// adds XOR shares σ_b of σ = m ⊕ ρ and additive shares of ρ and ρ·r, for a bit ρ that
/// neither party knows. The parties open w = u ⊕ σ = t ⊕ ρ (one bit each way, uniform
/// because ρ is), and then t = w + (1 − 2w)·ρ and t·r = w·r + (1 − 2w)·ρ·r are linear in
/// the shares. Party 0 adds the public term w.
pub fn point_t_shares(
    party: usize,
    opened_bit: u64,
    rho_share: u64,
    rho_mask_share: u64,
    mask_share: u64,
) -> [u64; MAX_PAYLOAD] {
    let sign = 1u64.wrapping_sub(2 * opened_bit);
    let public = if party == 0 { opened_bit } else { 0 };
    [
        public.wrapping_add(sign.wrapping_mul(rho_share)),
        opened_bit
            .wrapping_mul(mask_share)
            .wrapping_add(sign.wrapping_mul(rho_mask_share)),
    ]
}

/// A party's share of DReLU from its share of t. Party 0 adds the public term.
pub fn drelu_share(party: usize, opened: u64, bits: u32, t_share: u64) -> u64 {
    let (c, _) = split_opened(opened, bits);
    let public = if party == 0 { 1 - c } else { 0 };
    public.wrapping_add((2 * c).wrapping_sub(1).wrapping_mul(t_share))
}

/// A party's share of ReLU(x) from its shares of t, t·r and r, with x̂ = x + r the full
/// 64-bit opened value. Party 0 adds the public term.
pub fn relu_share(
    party: usize,
    opened: u64,
    bits: u32,
    t_share: u64,
    t_mask_share: u64,
    mask_share: u64,
) -> u64 {
    let (c, _) = split_opened(opened, bits);
    let sign = (2 * c).wrapping_sub(1);
    let keep_public = 1 - c;
    let public = if party == 0 {
        keep_public.wrapping_mul(opened)
    } else {
        0
    };
    public
        .wrapping_sub(keep_public.wrapping_mul(mask_share))
        .wrapping_add(sign.wrapping_mul(t_share.wrapping_mul(opened).wrapping_sub(t_mask_share)))
}

/// The k-bit signed reduction of x: x mod 2^k read in two's complement, sign-extended.
pub fn signed_reduction(x: u64, bits: u32) -> i64 {
    if bits >= 64 {
        x as i64
    } else {
        let shift = 64 - bits;
        ((x << shift) as i64) >> shift
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_core::prg::Prg;

    use veil_core::sampling::test_seed_or;

    /// Splits a value into two uniform additive shares.
    fn share(value: u64, prg: &mut Prg) -> [u64; 2] {
        let first = prg.next_u64();
        [first, value.wrapping_sub(first)]
    }

    /// Runs both parties of one gate in the clear and returns (DReLU, ReLU).
    fn run_gate(x: u64, mask: u64, bits: u32, prg: &mut Prg) -> (u64, u64) {
        let roots = [prg.next_u128(), prg.next_u128()];
        let key = generate(mask, bits, true, roots);
        let mask_shares = share(mask, prg);
        let m_shares = share(key.constants[0], prg);
        let mr_shares = share(key.constants[1], prg);
        let opened = x.wrapping_add(mask);
        let t = [0, 1].map(|party| {
            evaluate_t(
                party,
                roots[party],
                &key.corrections,
                [m_shares[party], mr_shares[party]],
                opened,
                bits,
            )
        });
        reconstruct(opened, bits, t, mask_shares)
    }

    /// (DReLU, ReLU) from both parties' shares of (t, t·r) and of the mask r.
    fn reconstruct(opened: u64, bits: u32, t: [[u64; 2]; 2], mask_shares: [u64; 2]) -> (u64, u64) {
        let mut drelu = 0u64;
        let mut relu = 0u64;
        for party in 0..2 {
            let [t, t_mask] = t[party];
            drelu = drelu.wrapping_add(drelu_share(party, opened, bits, t));
            relu = relu.wrapping_add(relu_share(
                party,
                opened,
                bits,
                t,
                t_mask,
                mask_shares[party],
            ));
        }
        (drelu, relu)
    }

    /// The same gate with point-function keys: XOR shares from the DPF, the opened bit
    /// w = u ⊕ σ, then [`point_t_shares`].
    fn run_point_gate(x: u64, mask: u64, bits: u32, prg: &mut Prg) -> (u64, u64) {
        let roots = [prg.next_u128(), prg.next_u128()];
        let parameters = parameters(mask, bits, true);
        let mut words = Vec::new();
        super::super::dpf::generate_batch(
            bits - 1,
            &[parameters.alpha],
            [&roots[..1], &roots[1..]],
            &mut words,
        )
        .unwrap();
        let rho = prg.next_u64() & 1;
        let sigma_0 = prg.next_u64() & 1;
        let sigma = [sigma_0, parameters.constants[0] ^ rho ^ sigma_0];
        let rho_shares = share(rho, prg);
        let rho_mask_shares = share(rho.wrapping_mul(mask), prg);
        let mask_shares = share(mask, prg);
        let opened = x.wrapping_add(mask);
        let y = dcf_input(opened, bits);
        let u: Vec<u64> = (0..2)
            .map(|party| {
                super::super::dpf::evaluate_batch(
                    party,
                    bits - 1,
                    &roots[party..=party],
                    &words,
                    &[y],
                )
                .unwrap()[0]
            })
            .collect();
        let w = u[0] ^ u[1] ^ sigma[0] ^ sigma[1];
        let t = [0, 1].map(|party| {
            point_t_shares(
                party,
                w,
                rho_shares[party],
                rho_mask_shares[party],
                mask_shares[party],
            )
        });
        reconstruct(opened, bits, t, mask_shares)
    }

    fn expected(x: u64, bits: u32) -> (u64, u64) {
        if signed_reduction(x, bits) >= 0 {
            (1, x)
        } else {
            (0, 0)
        }
    }

    #[test]
    fn exhaustive_8_bit_domain_for_every_x_and_mask() {
        let bits = 8;
        let seed = test_seed_or(21);
        let mut prg = seed.prg();
        for x in -128i64..128 {
            for mask_low in 0..256u64 {
                // The mask's high bits are random: only its low k bits matter to DReLU,
                // and ReLU must remove all 64 bits of it.
                let mask = (prg.next_u64() & !0xff) | mask_low;
                let x_ring = x as u64;
                assert_eq!(
                    run_gate(x_ring, mask, bits, &mut prg),
                    expected(x_ring, bits),
                    "x {x} r {mask_low}"
                );
                assert_eq!(
                    run_point_gate(x_ring, mask, bits, &mut prg),
                    expected(x_ring, bits),
                    "point keys: x {x} r {mask_low}"
                );
            }
        }
    }

    #[test]
    fn sixty_four_bit_boundaries() {
        let seed = test_seed_or(22);
        let mut prg = seed.prg();
        let values = [
            0u64,
            1,
            u64::MAX,
            i64::MAX as u64,
            (i64::MIN + 1) as u64,
            i64::MIN as u64,
            1 << 62,
            (-(1i64 << 62)) as u64,
        ];
        for &x in &values {
            for &mask in &[0u64, 1, u64::MAX, 1 << 63, (1 << 63) - 1] {
                assert_eq!(
                    run_gate(x, mask, 64, &mut prg),
                    expected(x, 64),
                    "x {x} r {mask}"
                );
                assert_eq!(
                    run_point_gate(x, mask, 64, &mut prg),
                    expected(x, 64),
                    "point keys: x {x} r {mask}"
                );
            }
            for _ in 0..20 {
                let mask = prg.next_u64();
                assert_eq!(run_gate(x, mask, 64, &mut prg), expected(x, 64), "x {x}");
                let point = run_point_gate(x, mask, 64, &mut prg);
                assert_eq!(point, expected(x, 64), "point keys: x {x}");
            }
        }
    }

    #[test]
    fn random_values_at_several_widths() {
        let seed = test_seed_or(23);
        let mut prg = seed.prg();
        for &bits in &[2u32, 16, 31, 32, 40, 63, 64] {
            for _ in 0..200 {
                let x = (signed_reduction(prg.next_u64(), bits)) as u64;
                let mask = prg.next_u64();
                assert_eq!(
                    run_gate(x, mask, bits, &mut prg),
                    expected(x, bits),
                    "bits {bits}"
                );
            }
        }
    }
}
