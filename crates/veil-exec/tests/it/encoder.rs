//! A whole post-LayerNorm BERT encoder layer (multi-head attention with its softmax,
//! residuals, LayerNorms, the GELU feed-forward) under MPC against the plain executor.

use veil_core::sampling::{SplitMix64, test_seed};
use veil_model::zoo::{EncoderDimensions, random_encoder_layer};

use crate::{secure, simulated};

#[test]
fn an_encoder_layer_agrees_with_the_plain_run_within_the_bound() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let dimensions = EncoderDimensions {
        sequence: 8,
        hidden: 16,
        heads: 2,
        feed_forward: 32,
    };
    let plan = random_encoder_layer(dimensions, seed.value()).expect("the layer");
    let input = sampler.normal_vec(8 * 16, 1.0);
    let plain = veil_model::plain::run_plain(&plan, &input, 1).expect("plain");
    let bound = veil_exec::error_bound(&plan, &input).expect("the bound");
    let secure = secure(&plan, &input, 1);
    let simulated = simulated(&plan, &input, 1);
    let mut worst: f64 = 0.0;
    for ((p, s), c) in plain.iter().zip(&secure).zip(&simulated) {
        let error = (f64::from(*p) - f64::from(*s)).abs();
        worst = worst.max(error);
        assert!(error <= bound, "secure {s} plain {p} bound {bound}");
        assert!(
            (f64::from(*p) - f64::from(*c)).abs() <= bound,
            "simulated {c} plain {p}"
        );
    }
    eprintln!("encoder layer: worst error {worst:.2e}, bound {bound:.2e}");
    // The approximations' errors (GELU 0.02, softmax) dominate; observed ~1e-2.
    assert!(worst < 0.1, "worst {worst}");
}
