//! Public-table lookup at a secret index (cookbook §4.1–4.4, SIGMA's LUT from a point
//! function): T[x mod 2^m] for a secret ring integer x and a public table T of 2^m ring
//! elements, in two rounds.
//!
//! Per element the dealer draws a mask ρ = ρ₀ + ρ₁ mod 2^m from both parties' streams
//! (so neither knows it) and gives both parties a point-function key at ρ on m bits
//! ([`crate::dpf`]). Online the parties open x̂ = x + ρ mod 2^m (m bits each way) and
//! evaluate their keys over the whole domain: XOR shares u_b(j) of e_ρ(j). Because the
//! shares agree everywhere but at ρ,
//!
//! A₀ = Σ_j u₀(j)·T[x̂ − j] and A₁ = −Σ_j u₁(j)·T[x̂ − j]
//!
//! sum to (u₀(ρ) − u₁(ρ))·T[x̂ − ρ] = s·T[x], with s = 1 − 2·u₁(ρ) = ±1, a sign the dealer
//! knows (it evaluates the client's key at ρ) and the parties do not. The second round
//! removes it: the dealer adds shares of s and of s·μ for a mask μ = μ₀ + μ₁ (again one
//! part from each stream); the parties open c = s·T[x] + μ (one ring element each way,
//! uniform because μ is) and each takes s_b·c − (s·μ)_b, whose sum is s²·T[x] = T[x].
//!
//! Material per element: the key, 16·(max(m − 7, 0) + 1) bytes, for both; s₀ and (s·μ)₀
//! for the server; the client derives its s₁ and (s·μ)₁ from its seed. Online: ⌈m/8⌉ + 8
//! bytes each way. Evaluation: 2·(2^(m−7) − 1) + 2^(m−7) AES blocks per element (4 for
//! an 8-bit table), the shares' bits reversed and rotated by x̂ so that bit k meets T[k],
//! and 2^m/8 loads from per-byte partial sums of T made once per op.

use veil_core::RingTensor;
use veil_core::prg::Prg;
use veil_net::Channel;

use super::codec::{pack_low_bytes, unpack_low_bytes};
use super::material::{MaterialItem, MaterialKind, PartyRole};
use super::{MaterialGenerator, Party, ShapeOnly, Share};
use crate::fss::low_mask;
use crate::{PeerMisbehaved, Result, dpf};

/// Seed-derived lookup shares: root seeds, the index mask's and μ's parts for both; the
/// client's shares of s and s·μ.
struct LookupDraw {
    roots: Vec<u128>,
    mask: Vec<u64>,
    sign_mask: Vec<u64>,
    sign: Vec<u64>,
    sign_times_mask: Vec<u64>,
}

fn draw_lookup(prg: &mut Prg, role: PartyRole, len: usize) -> LookupDraw {
    let roots = (0..len).map(|_| prg.next_u128()).collect();
    let mask = prg.vec_u64(len);
    let sign_mask = prg.vec_u64(len);
    let (sign, sign_times_mask) = match role {
        PartyRole::Client => (prg.vec_u64(len), prg.vec_u64(len)),
        PartyRole::Server => (Vec::new(), Vec::new()),
    };
    LookupDraw {
        roots,
        mask,
        sign_mask,
        sign,
        sign_times_mask,
    }
}

/// Bit `index` of a key's leaves (see [`dpf::evaluate_all`]).
fn leaf_bit(leaves: &[u128], index: usize) -> u64 {
    ((leaves[index / 128] >> (index % 128)) & 1) as u64
}

/// The shares' bits u(j) over a domain of 64·n points (`words`, bit j of word j / 64)
/// rearranged into `aligned` so that its bit k is u((x̂ − k) mod 64n): the bit that
/// multiplies table entry k in Σ_j u(j)·T[x̂ − j]. Reversing gives w(i) = u(64n − 1 − i);
/// then bit k of the result is w((k + c) mod 64n) with c = 64n − 1 − x̂, a rotation.
fn align_to_table(words: &[u64], opened: usize, aligned: &mut Vec<u64>) {
    let count = words.len();
    let domain = 64 * count;
    let reversed = |index: usize| words[count - 1 - index].reverse_bits();
    let shift = (domain - 1 - opened % domain) % domain;
    let (whole, bits) = (shift / 64, shift % 64);
    aligned.clear();
    for index in 0..count {
        let low = reversed((index + whole) % count);
        aligned.push(if bits == 0 {
            low
        } else {
            (low >> bits) | (reversed((index + whole + 1) % count) << (64 - bits))
        });
    }
}

/// For each byte position p of the aligned bits and each byte value b, the sum of the
/// table entries 8p + i over the set bits i of b: 256 sums per 8 entries, made once per
/// op, so that each element's Σ_k bit_k · T[k] is one load per byte.
fn byte_sums(table: &[u64]) -> Vec<u64> {
    let mut sums = vec![0u64; table.len() / 8 * 256];
    for (position, entries) in table.chunks_exact(8).enumerate() {
        let sums = &mut sums[position * 256..(position + 1) * 256];
        for byte in 1..256usize {
            let lowest = byte.trailing_zeros() as usize;
            sums[byte] = sums[byte & (byte - 1)].wrapping_add(entries[lowest]);
        }
    }
    sums
}

/// Σ_k bit_k · T[k] for the bits of `aligned`, from [`byte_sums`].
fn masked_sum(aligned: &[u64], sums: &[u64]) -> u64 {
    let mut sum = 0u64;
    for (word_index, word) in aligned.iter().enumerate() {
        for (byte_index, byte) in word.to_le_bytes().iter().enumerate() {
            let position = 8 * word_index + byte_index;
            sum = sum.wrapping_add(sums[position * 256 + usize::from(*byte)]);
        }
    }
    sum
}

impl MaterialGenerator<'_> {
    /// The dealer's half: the keys at ρ = ρ₀ + ρ₁ mod 2^m for both, then the server's
    /// shares of s (all of them) and of s·μ.
    pub(super) fn lookup_keys(&mut self, shape: &ShapeOnly, bits: u32) -> Result<ShapeOnly> {
        let (op, [mut server_stream, mut client_stream]) = self.begin_op();
        let len = shape.0.iter().product();
        let server = draw_lookup(&mut server_stream, PartyRole::Server, len);
        let client = draw_lookup(&mut client_stream, PartyRole::Client, len);
        let points: Vec<u64> = (0..len)
            .map(|index| server.mask[index].wrapping_add(client.mask[index]) & low_mask(bits))
            .collect();
        let mut keys = Vec::with_capacity(len * dpf::key_words(bits));
        let unsupported = || crate::Error::ApiMisuse {
            op: "lookup",
            detail: format!("no point-function keys for a {bits}-bit table"),
        };
        dpf::generate_batch(bits, &points, [&server.roots, &client.roots], &mut keys)
            .ok_or_else(unsupported)?;
        // The client's shares at ρ fix the sign s = 1 − 2·u₁(ρ).
        let client_leaves =
            dpf::evaluate_all(1, bits, &client.roots, &keys).ok_or_else(unsupported)?;
        let leaves = dpf::leaves_per_key(bits);
        let mut server_words = keys.clone();
        server_words.reserve(2 * len);
        let mut products = Vec::with_capacity(len);
        for index in 0..len {
            let key_leaves = &client_leaves[index * leaves..(index + 1) * leaves];
            let sign = 1u64.wrapping_sub(2 * leaf_bit(key_leaves, points[index] as usize));
            let sign_mask = server.sign_mask[index].wrapping_add(client.sign_mask[index]);
            server_words.push(sign.wrapping_sub(client.sign[index]));
            products.push(
                sign.wrapping_mul(sign_mask)
                    .wrapping_sub(client.sign_times_mask[index]),
            );
        }
        server_words.extend_from_slice(&products);
        self.emit(
            PartyRole::Server,
            MaterialItem::new(op, MaterialKind::Lookup, server_words),
        )?;
        self.emit(
            PartyRole::Client,
            MaterialItem::new(op, MaterialKind::Lookup, keys),
        )?;
        Ok(shape.clone())
    }
}

impl<C: Channel> Party<C> {
    /// The parties' half: open x̂ = x + ρ mod 2^m, evaluate the keys over the domain,
    /// sum the table rotated by x̂ under the shares, and remove the sign in a second
    /// opening.
    pub(super) fn table_lookup(
        &mut self,
        value: &Share,
        table: &[u64],
        bits: u32,
    ) -> Result<Share> {
        let (op, mut stream) = self.begin_op();
        let len = value.value.len();
        let draw = draw_lookup(&mut stream, self.role, len);
        let key_words = dpf::key_words(bits);
        let server_words = if self.is_server() { 2 * len } else { 0 };
        let item = self.take(op, MaterialKind::Lookup, len * key_words + server_words)?;
        let (keys, signs) = item.split_at(len * key_words);
        let (sign, sign_times_mask) = match self.role {
            PartyRole::Server => signs.split_at(len),
            PartyRole::Client => (&draw.sign[..], &draw.sign_times_mask[..]),
        };
        let index_mask = low_mask(bits);
        let bytes_per = (bits as usize).div_ceil(8);
        let masked: Vec<u64> = value
            .value
            .data()
            .iter()
            .zip(&draw.mask)
            .map(|(x, r)| x.wrapping_add(*r) & index_mask)
            .collect();
        let theirs = self.channel.exchange(&pack_low_bytes(&masked, bytes_per))?;
        let theirs = unpack_low_bytes("lookup", &theirs, len, bytes_per)?;
        let party = self.role.index();
        let leaves = dpf::evaluate_all(party, bits, &draw.roots, keys).ok_or(
            PeerMisbehaved::MalformedMaterial("the lookup keys do not decode"),
        )?;
        let per_key = dpf::leaves_per_key(bits);
        let domain = 1usize << bits;
        let mut signed_values = Vec::with_capacity(len);
        let sums = byte_sums(table);
        let mut words = Vec::with_capacity(2 * per_key);
        let mut aligned = Vec::with_capacity(2 * per_key);
        for index in 0..len {
            let opened = (masked[index].wrapping_add(theirs[index]) & index_mask) as usize;
            let key_leaves = &leaves[index * per_key..(index + 1) * per_key];
            words.clear();
            for leaf in key_leaves {
                words.extend([*leaf as u64, (*leaf >> 64) as u64]);
            }
            align_to_table(&words[..domain / 64], opened, &mut aligned);
            let sum = masked_sum(&aligned, &sums);
            let sum = if party == 1 { sum.wrapping_neg() } else { sum };
            signed_values.push(sum.wrapping_add(draw.sign_mask[index]));
        }
        let opened_signed = self.open_words("lookup sign", &signed_values)?;
        let output = (0..len)
            .map(|index| {
                sign[index]
                    .wrapping_mul(opened_signed[index])
                    .wrapping_sub(sign_times_mask[index])
            })
            .collect();
        Ok(self.share(RingTensor::new(value.value.shape().to_vec(), output)?))
    }
}
