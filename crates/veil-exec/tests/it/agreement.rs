//! Plain, simulated and secure runs agree within the documented bound, on random
//! weights and on adversarial inputs (zeros, large magnitudes, negatives).

use veil_core::sampling::{SplitMix64, test_seed};
use veil_model::plain::run_plain;
use veil_model::plan::OutputPolicy;

use crate::{adversarial_inputs, assert_agrees, assert_within, one_layer_plan, secure};

#[test]
fn secure_simulated_and_plain_agree_within_the_bound() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let plan = veil_model::zoo::residual_mlp(seed.value()).expect("the test MLP");
    let batch = 4;
    let inputs = adversarial_inputs(12 * batch, 5.0, &mut sampler);
    for input in inputs {
        assert_agrees(&plan, &input, batch);
    }
}

#[test]
fn cnn_ops_agree_within_the_bound() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let plan = veil_model::zoo::every_op_cnn(seed.value()).expect("the test CNN");
    let batch = 2;
    for scale in [1.0f32, 30.0] {
        let input = sampler.normal_vec(2 * 64 * batch, scale);
        let plain = run_plain(&plan, &input, batch).expect("plain");
        let bound = veil_exec::error_bound(&plan, &input).expect("the bound");
        let secure = secure(&plan, &input, batch);
        assert_within(&plain, &[("secure", &secure)], bound);
    }
}

/// Max pooling on an 8-bit comparison domain, exhaustively: every pair (a, b) of
/// values in [−64, 63] sits in one 2×2 window with two copies of −64.
#[test]
fn max_pool_exhaustive_on_an_8_bit_domain() {
    let values: Vec<i64> = (-64..64).collect();
    let pairs: Vec<(i64, i64)> = values
        .iter()
        .flat_map(|&a| values.iter().map(move |&b| (a, b)))
        .collect();
    let width = 2 * pairs.len();
    let plan = one_layer_plan(
        r#"{"op": "max_pool2d", "kernel": 2, "bits": 8}"#,
        &[1, 2, width],
        16,
    );
    let ulp = 1.0 / 65536.0;
    let mut input = vec![0f32; 2 * width];
    for (index, (a, b)) in pairs.iter().enumerate() {
        input[2 * index] = *a as f32 * ulp;
        input[2 * index + 1] = *b as f32 * ulp;
        input[width + 2 * index] = -64.0 * ulp;
        input[width + 2 * index + 1] = -64.0 * ulp;
    }
    let secure = secure(&plan, &input, 1);
    assert_eq!(secure.len(), pairs.len());
    for (index, (a, b)) in pairs.iter().enumerate() {
        assert_eq!(secure[index], (*a.max(b)) as f32 * ulp, "max({a}, {b})");
    }
}

/// The label policy reveals each row's argmax, equal to the plain argmax whenever the
/// top two logits are further apart than twice the error bound; ties go to the lower
/// index.
#[test]
fn secure_argmax_matches_the_plain_argmax() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let mut plan = veil_model::zoo::residual_mlp(seed.value()).expect("the test MLP");
    plan.public.output_policy = OutputPolicy::Label { bits: 40 };
    let batch = 16;
    let input = sampler.normal_vec(12 * batch, 3.0);
    let mut logits_plan = plan.clone();
    logits_plan.public.output_policy = OutputPolicy::Logits;
    let plain = run_plain(&logits_plan, &input, batch).expect("plain");
    let bound = veil_exec::error_bound(&plan, &input).expect("the bound");
    let labels = secure(&plan, &input, batch);
    assert_eq!(labels.len(), batch);
    let mut checked = 0;
    for (row, label) in plain.chunks(5).zip(&labels) {
        let mut sorted = row.to_vec();
        sorted.sort_by(|a, b| b.total_cmp(a));
        if f64::from(sorted[0] - sorted[1]) > 2.0 * bound {
            assert_eq!(
                veil_model::plain::argmax_rows(row, 5)[0],
                *label as usize,
                "{row:?}"
            );
            checked += 1;
        }
    }
    // The bound is ~1e-3 and logits spread over units: nearly every row is decided.
    assert!(
        checked >= batch * 3 / 4,
        "only {checked} of {batch} rows had a gap above twice the bound {bound}"
    );
    // Exact ties: the lower index wins, as in the plain argmax.
    let mut tied = plan.clone();
    for name in ["fc3.weight", "fc3.bias"] {
        for value in tied.weights.get_mut(name).expect("the last layer") {
            *value = 0.0;
        }
    }
    let labels = secure(&tied, &input[..12], 1);
    assert_eq!(labels, vec![0.0]);
}
