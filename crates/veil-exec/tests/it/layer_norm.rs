//! Layer normalisation under MPC against the exact one of the plain executor, within
//! the documented bound, for small and MiniLM-sized rows, on random rows and
//! adversarial ones (a large mean, a small and a large deviation, negatives); rows
//! outside the documented range are refused by name.

use veil_core::sampling::{SplitMix64, test_seed};
use veil_model::Plan;

use crate::assert_agrees;

fn layer_norm_plan(rows: usize, features: usize, sampler: &mut SplitMix64) -> Plan {
    veil_model::zoo::layer_norm_layer(rows, features, sampler.next_u64())
        .expect("the LayerNorm plan")
}

/// Rows: N(0, 1); N(0, 1) + 100; 0.01·N(0, 1) − 3; 50·N(0, 1); −|N(0, 4)|.
fn rows(features: usize, sampler: &mut SplitMix64) -> Vec<f32> {
    let mut values = sampler.normal_vec(features, 1.0);
    values.extend(sampler.normal_vec(features, 1.0).iter().map(|v| v + 100.0));
    values.extend(sampler.normal_vec(features, 0.01).iter().map(|v| v - 3.0));
    values.extend(sampler.normal_vec(features, 50.0));
    values.extend(sampler.normal_vec(features, 4.0).iter().map(|v| -v.abs()));
    values
}

fn check(features: usize) {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let input = rows(features, &mut sampler);
    let plan = layer_norm_plan(input.len() / features, features, &mut sampler);
    assert_agrees(&plan, &input, 1);
    // The bound is not vacuous on ordinary rows: a few thousandths.
    let ordinary = layer_norm_plan(2, features, &mut sampler);
    let input = sampler.normal_vec(2 * features, 1.0);
    let bound = veil_exec::error_bound(&ordinary, &input).expect("in range");
    assert!(bound < 5e-3, "bound {bound}");
    assert_agrees(&ordinary, &input, 1);
}

#[test]
fn layer_norm_agrees_within_the_bound_on_short_rows() {
    check(16);
}

#[test]
fn layer_norm_agrees_within_the_bound_on_minilm_rows() {
    check(384);
}

#[test]
fn rows_outside_the_documented_range_are_refused_by_node() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let plan = layer_norm_plan(1, 8, &mut sampler);
    let error = veil_exec::error_bound(&plan, &[2.5; 8]).expect_err("a constant row");
    assert!(
        matches!(error, veil_exec::Error::OutOfRange { node: 1, .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("outside the documented"),
        "{error}"
    );
}
