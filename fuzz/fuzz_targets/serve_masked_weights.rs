//! The masked weights D on arbitrary bytes, against a small fixed plan; decoded weights
//! re-encode to the input.
#![no_main]
use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use veil_model::PublicPlan;
use veil_serve::messages::MaskedWeights;

fn plan() -> &'static PublicPlan {
    static PLAN: OnceLock<PublicPlan> = OnceLock::new();
    PLAN.get_or_init(|| {
        veil_model::zoo::random_mlp("fuzz", &[3, 2, 2], 0)
            .expect("a small plan")
            .public
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(weights) = MaskedWeights::decode(plan(), data) {
        let weights: HashMap<_, _> = weights.into_iter().collect();
        assert_eq!(MaskedWeights::encode(plan(), &weights).expect("encodes"), data);
    }
});
