//! Function secret sharing: BCG+21 distributed comparison function keys ([`dcf`]),
//! comparison keys from a distributed point function ([`dpf`], about half the size, one
//! more round), and the comparison gates built on them ([`gates`], cookbook §3.4).
//! Nothing here knows a setting: the dealer's room draws the keys' roots and masks and
//! moves the words.

pub mod dcf;
pub mod dpf;
pub mod gates;

/// The mask of the low `bits` bits of a word (all of it from 64 on).
pub(crate) fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}
