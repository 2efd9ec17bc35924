//! The per-operator and per-primitive breakdown of one query accounts for every byte
//! and material item exactly once, and puts them where the protocol spends them.

use veil_core::sampling::{SplitMix64, test_seed};
use veil_model::zoo::{EncoderDimensions, random_encoder_layer};

#[test]
fn the_breakdown_accounts_for_every_byte_once() {
    let seed = test_seed();
    let dimensions = EncoderDimensions {
        sequence: 4,
        hidden: 8,
        heads: 2,
        feed_forward: 16,
    };
    let plan = random_encoder_layer(dimensions, seed.value()).expect("the layer");
    let input = SplitMix64::new(seed.value()).normal_vec(4 * 8, 1.0);
    let breakdown =
        veil_exec::breakdown::measure(&plan, &input, 1, Default::default()).expect("measures");
    let kind = |name: &str| {
        breakdown
            .kinds
            .iter()
            .find(|kind| kind.kind == name)
            .unwrap_or_else(|| panic!("no {name} row in {breakdown:?}"))
    };
    for name in [
        "linear",
        "attention products",
        "softmax",
        "gelu",
        "layer_norm",
    ] {
        let row = kind(name);
        assert!(
            row.online_bytes > 0 && row.material_bytes > 0 && row.rounds > 0,
            "{name}: {row:?}"
        );
        assert!(row.plaintext_flops > 0.0, "{name}: {row:?}");
    }
    // Local ops send nothing and need no material.
    let local = kind("local (add, reshape, mask)");
    assert_eq!((local.online_bytes, local.material_bytes), (0, 0));
    // The output step is the reveal: the client receives, and needs no material.
    let output = kind(veil_exec::breakdown::OUTPUT_KIND);
    assert!(output.online_bytes > 0 && output.material_bytes == 0);
    // Per kind and per primitive are two splits of the same totals.
    let kind_bytes: u64 = breakdown.kinds.iter().map(|k| k.online_bytes).sum();
    let kind_material: u64 = breakdown.kinds.iter().map(|k| k.material_bytes).sum();
    let primitive_bytes: u64 = breakdown
        .primitives
        .iter()
        .map(|p| p.online.sent_bytes + p.online.received_bytes)
        .sum();
    let primitive_material: u64 = breakdown.primitives.iter().map(|p| p.material_bytes).sum();
    assert_eq!(kind_bytes, primitive_bytes);
    assert_eq!(kind_material, primitive_material);
    let truncation = breakdown
        .primitives
        .iter()
        .find(|p| p.primitive == veil_mpc::accounting::Primitive::Truncation)
        .expect("a truncation row");
    assert!(truncation.online.sent_bytes > 0 && truncation.material_bytes > 0);
}
