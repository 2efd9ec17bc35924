//! Softmax under MPC: against the same approximation in f64 to within its fixed-point
//! error, and against the exact softmax within the documented bound, on random rows and
//! adversarial ones (ties, zeros, one dominant value, values far below the max, large
//! magnitudes, all negative), for short rows and for rows of 128.

use veil_core::sampling::{SplitMix64, test_seed};
use veil_exec::ops::softmax::{FIXED_POINT_ULPS, INDEX_RELATIVE_ERROR, approximate_row};
use veil_model::Plan;

use crate::{assert_agrees, one_layer_plan, secure};

fn softmax_plan(rows: usize, columns: usize) -> Plan {
    veil_model::zoo::softmax_layer(rows, columns).expect("the softmax plan")
}

/// Rows of `columns` values: random, then the adversarial ones.
fn rows(columns: usize, sampler: &mut SplitMix64) -> Vec<f32> {
    let mut values = sampler.normal_vec(columns, 2.0);
    values.extend(vec![0.0; columns]);
    values.extend(vec![1.5; columns]);
    let mut dominant = vec![-3.0; columns];
    dominant[columns / 2] = 9.0;
    values.extend(dominant);
    values.extend((0..columns).map(|i| if i % 3 == 0 { -1000.0 } else { 0.25 }));
    values.extend((0..columns).map(|i| 100.0 - 7.0 * i as f32));
    values.extend(
        sampler
            .normal_vec(columns, 4.0)
            .iter()
            .map(|v| -v.abs() - 20.0),
    );
    values.extend(sampler.normal_vec(columns, 8.0));
    values
}

fn check_against_the_approximation(columns: usize) {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let input = rows(columns, &mut sampler);
    let count = input.len() / columns;
    let plan = softmax_plan(count, columns);
    let codec = plan.public.fixed_point().expect("the codec");
    let ulp = 1.0 / codec.scale();
    let secure = secure(&plan, &input, 1);
    for (row, (values, outputs)) in input
        .chunks(columns)
        .zip(secure.chunks(columns))
        .enumerate()
    {
        let encoded: Vec<f64> = values
            .iter()
            .map(|&v| codec.decode(codec.encode(f64::from(v)).expect("in range")))
            .collect();
        let expected = approximate_row(&encoded);
        for (column, (e, s)) in expected.iter().zip(outputs).enumerate() {
            assert!(
                (e - f64::from(*s)).abs() <= FIXED_POINT_ULPS * ulp + INDEX_RELATIVE_ERROR * e,
                "row {row}, column {column}: secure {s}, approximation {e}"
            );
        }
    }
}

#[test]
fn secure_softmax_is_the_approximation_within_its_fixed_point_error() {
    check_against_the_approximation(5);
    check_against_the_approximation(16);
}

#[test]
fn rows_of_128_are_within_the_fixed_point_error_and_the_bound() {
    check_against_the_approximation(128);
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let input = rows(128, &mut sampler);
    assert_agrees(&softmax_plan(input.len() / 128, 128), &input, 1);
}

#[test]
fn softmax_agrees_with_the_exact_function_within_the_bound() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let input = rows(8, &mut sampler);
    let plan = softmax_plan(input.len() / 16, 8);
    // Two samples of 4 rows each.
    assert_agrees(&plan, &input, 2);
}

/// After calibration the comparisons run on fewer bits and still agree.
#[test]
fn calibrated_softmax_is_within_the_fixed_point_error() {
    use veil_model::passes::calibration::calibrate_comparison_bits;
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let columns = 32;
    let input = sampler.normal_vec(8 * columns, 3.0);
    let mut plan = softmax_plan(8, columns);
    let changes = calibrate_comparison_bits(&mut plan, &input, 1, 8.0).expect("calibrates");
    assert!(changes[0].1 < 32, "calibrated to {} bits", changes[0].1);
    let codec = plan.public.fixed_point().expect("the codec");
    let secure = secure(&plan, &input, 1);
    for (values, outputs) in input.chunks(columns).zip(secure.chunks(columns)) {
        let encoded: Vec<f64> = values
            .iter()
            .map(|&v| codec.decode(codec.encode(f64::from(v)).expect("in range")))
            .collect();
        for (e, s) in approximate_row(&encoded).iter().zip(outputs) {
            assert!(
                (e - f64::from(*s)).abs()
                    <= FIXED_POINT_ULPS / codec.scale() + INDEX_RELATIVE_ERROR * e,
                "secure {s}, approximation {e}"
            );
        }
    }
}

#[test]
fn too_many_fractional_bits_are_refused() {
    let plan = one_layer_plan(r#"{"op": "softmax"}"#, &[2, 4], 20);
    let inputs = veil_exec::encode_inputs(&plan.public, &[0.5; 8], 1).expect("encodes");
    let mut simulation = veil_exec::cleartext(&plan).expect("the simulation");
    let error = veil_exec::run(&mut simulation, &plan.public, 1, Some(&inputs))
        .expect_err("20 fractional bits");
    assert!(
        error.to_string().contains("softmax supports up to 18"),
        "{error}"
    );
}
