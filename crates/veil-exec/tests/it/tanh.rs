//! tanh under MPC against the exact tanh of the plain executor, within the documented
//! bound, on random and adversarial inputs (zeros, ±1000, all negatives, the clip's
//! edge), and against its f64 approximation within the documented fixed-point error.

use veil_core::sampling::{SplitMix64, test_seed};
use veil_model::Plan;
use veil_model::passes::calibration::calibrate_comparison_bits;

use crate::{adversarial_inputs, assert_agrees, one_layer_plan};

fn tanh_plan(len: usize) -> Plan {
    one_layer_plan(r#"{"op": "tanh"}"#, &[len], 16)
}

#[test]
fn tanh_agrees_with_the_exact_function_within_the_bound() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let len = 64;
    let plan = tanh_plan(len);
    let mut edges: Vec<f32> = [0.0f32, 7.0, -7.0, 6.99, -7.01, 1e-4, -1e-4, 0.5]
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect();
    edges[0] = 0.0;
    let mut inputs = adversarial_inputs(len, 2.0, &mut sampler);
    inputs.push(edges);
    for input in inputs {
        assert_agrees(&plan, &input, 1);
    }
}

#[test]
fn calibrated_tanh_agrees_within_the_bound() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let len = 128;
    let mut plan = tanh_plan(len);
    let input = sampler.normal_vec(len, 2.0);
    let changes = calibrate_comparison_bits(&mut plan, &input, 1, 8.0).expect("calibrates");
    assert!(changes[0].1 < 30, "calibrated to {} bits", changes[0].1);
    assert_agrees(&plan, &input, 1);
}

#[test]
fn the_secure_tanh_is_within_its_fixed_point_error_of_the_approximation() {
    use veil_exec::ops::tanh::{FIXED_POINT_ULPS, approximate_tanh};
    let seed = test_seed();
    let plan = tanh_plan(256);
    let input = SplitMix64::new(seed.value()).normal_vec(256, 3.0);
    let codec = plan.public.fixed_point().expect("the codec");
    let secure = crate::secure(&plan, &input, 1);
    let ulp = 1.0 / codec.scale();
    for (x, s) in input.iter().zip(&secure) {
        let encoded = codec.decode(codec.encode(f64::from(*x)).expect("in range"));
        let error = (approximate_tanh(encoded) - f64::from(*s)).abs();
        assert!(
            error <= FIXED_POINT_ULPS * ulp,
            "x = {x}: secure {s}, approximation {}",
            approximate_tanh(encoded)
        );
    }
}
