//! GELU under MPC against the exact GELU of the plain executor, within the documented
//! bound, on random inputs and adversarial ones: zeros, the breakpoints and their
//! neighbours, large magnitudes whose powers overflow the ring, and all negatives; in
//! both secure forms, PUMA's polynomial and the ReLU-minus-table form.

use veil_core::sampling::{SplitMix64, test_seed};
use veil_model::Plan;
use veil_model::passes::calibration::calibrate_comparison_bits;

use crate::{adversarial_inputs, assert_agrees, one_layer_plan};

fn gelu_plan(len: usize) -> Plan {
    veil_model::zoo::gelu_layer(len).expect("the GELU plan")
}

/// PUMA's polynomial form.
fn gelu_plan_at(len: usize, fractional_bits: u32) -> Plan {
    one_layer_plan(
        r#"{"op": "gelu", "approx": "polynomial"}"#,
        &[len],
        fractional_bits,
    )
}

#[test]
fn gelu_agrees_with_the_exact_function_within_the_bound() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let len = 64;
    let plan = gelu_plan(len);
    let batch = 2;
    let breakpoints = [-4.0f32, -1.95, 3.0];
    let mut edges = Vec::new();
    for point in breakpoints {
        for offset in [-1e-3f32, -2.0 / 65536.0, 0.0, 1.0 / 65536.0, 1e-3] {
            edges.push(point + offset);
        }
    }
    edges.resize(len * batch, 0.0);
    let mut inputs = adversarial_inputs(len * batch, 2.0, &mut sampler);
    inputs.push(edges);
    // The default (table) form and PUMA's polynomial.
    for plan in [plan, gelu_plan_at(len, 16)] {
        for input in &inputs {
            assert_agrees(&plan, input, batch);
        }
    }
}

/// After calibration the comparisons run on fewer bits and still agree.
#[test]
fn calibrated_gelu_agrees_within_the_bound() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let len = 256;
    let mut plan = gelu_plan(len);
    let input = sampler.normal_vec(len, 3.0);
    let changes = calibrate_comparison_bits(&mut plan, &input, 1, 8.0).expect("calibrates");
    let bits = changes[0].1;
    assert!(bits < 30, "calibrated to {bits} bits");
    assert_agrees(&plan, &input, 1);
}

/// Beyond the approximation: the secure output is PUMA's polynomial of the encoded
/// input to within the documented fixed-point error, piece by piece, including at and
/// beside the breakpoints (the comparisons see the same encoded value). At 14 and 18
/// fractional bits −1.95 lies between grid points that round away from it.
#[test]
fn the_secure_polynomial_is_within_its_fixed_point_error() {
    for fractional_bits in [16, 14, 18] {
        check_polynomial(fractional_bits);
    }
}

fn check_polynomial(fractional_bits: u32) {
    use veil_exec::ops::gelu::{FIXED_POINT_ULPS, approximate};
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let len = 512;
    let plan = gelu_plan_at(len, fractional_bits);
    let grid = 1.0 / f64::from(1u32 << fractional_bits);
    let mut input = sampler.normal_vec(len - 8, 2.5);
    for x in [
        -4.0,
        -1.95,
        3.0,
        -1.95 - grid,
        -1.95 + grid,
        -4.0 - grid,
        3.0 + grid,
        0.0,
    ] {
        input.push(x as f32);
    }
    let codec = plan.public.fixed_point().expect("the codec");
    let secure = crate::secure(&plan, &input, 1);
    let ulp = 1.0 / codec.scale();
    let mut worst: f64 = 0.0;
    for (x, s) in input.iter().zip(&secure) {
        let encoded = codec.decode(codec.encode(f64::from(*x)).expect("in range"));
        let error = (approximate(encoded) - f64::from(*s)).abs();
        worst = worst.max(error);
        assert!(
            error <= FIXED_POINT_ULPS * ulp,
            "f = {fractional_bits}, x = {x}: secure {s}, polynomial {}",
            approximate(encoded)
        );
    }
    assert!(worst > 0.0, "the secure run is not bit-exact f64");
}

/// A plan whose precision the secure form cannot hold is refused with what to do.
#[test]
fn too_many_fractional_bits_are_refused() {
    let plan = gelu_plan_at(4, 28);
    let inputs = veil_exec::encode_inputs(&plan.public, &[0.5; 4], 1).expect("encodes");
    let mut simulation = veil_exec::cleartext(&plan).expect("the simulation");
    let error = veil_exec::run(&mut simulation, &plan.public, 1, Some(&inputs))
        .expect_err("28 fractional bits");
    assert!(
        error.to_string().contains("gelu supports up to 25"),
        "{error}"
    );
}

fn gelu_table_plan_at(len: usize, fractional_bits: u32) -> Plan {
    one_layer_plan(r#"{"op": "gelu"}"#, &[len], fractional_bits)
}

/// The table form: the bins' edges, the table's end at |x| = 4 and its neighbours, and
/// every adversarial kind, within the table's bound of the exact GELU.
#[test]
fn the_table_form_agrees_with_the_exact_function_within_the_bound() {
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let len = 64;
    let plan = gelu_table_plan_at(len, 16);
    assert!(matches!(
        plan.public.graph.nodes[1].op,
        veil_model::ir::Op::GeluTable { .. }
    ));
    let batch = 2;
    let mut edges = Vec::new();
    for point in [0.0f32, 1.0 / 64.0, 0.75, 255.0 / 64.0, 4.0] {
        for offset in [-1e-3f32, -1.0 / 65536.0, 0.0, 1.0 / 65536.0, 1e-3] {
            edges.push(point + offset);
            edges.push(-point - offset);
        }
    }
    edges.resize(len * batch, 0.0);
    let mut inputs = adversarial_inputs(len * batch, 2.0, &mut sampler);
    inputs.push(edges);
    for input in inputs {
        assert_agrees(&plan, &input, batch);
    }
    // Calibrated: the ReLU on fewer bits, the index's comparison on its own width.
    let mut plan = gelu_table_plan_at(256, 16);
    let input = sampler.normal_vec(256, 3.0);
    let changes = calibrate_comparison_bits(&mut plan, &input, 1, 8.0).expect("calibrates");
    assert!(changes[0].1 < 30, "calibrated to {} bits", changes[0].1);
    assert_agrees(&plan, &input, 1);
}

/// Beyond the bound: each secure output is ReLU(x) − T[i] for the encoded x and an index
/// i of floor(64·|x|) or one above (the truncation's two outcomes), or ReLU(x) alone past
/// the table, to within the fixed-point error, at several precisions.
#[test]
fn the_secure_table_form_reads_the_entry_of_its_bin() {
    use veil_exec::ops::gelu_table::{FIXED_POINT_ULPS, INDEX_FRACTION_BITS, table};
    for fractional_bits in [12u32, 16, 20] {
        let seed = test_seed();
        let mut sampler = SplitMix64::new(seed.value());
        let len = 512;
        let plan = gelu_table_plan_at(len, fractional_bits);
        let mut input = sampler.normal_vec(len - 4, 2.5);
        input.extend([0.0, 4.0, -4.0, 255.5 / 64.0]);
        let codec = plan.public.fixed_point().expect("the codec");
        let scale = codec.scale();
        let entries = table(fractional_bits);
        let secure = crate::secure(&plan, &input, 1);
        for (x, s) in input.iter().zip(&secure) {
            let encoded = codec.decode(codec.encode(f64::from(*x)).expect("in range"));
            let floor = (encoded.abs() * f64::from(1u32 << INDEX_FRACTION_BITS)).floor() as usize;
            let candidates: Vec<f64> = [floor, floor + 1]
                .iter()
                .map(|&index| {
                    let entry = entries.get(index).map_or(0.0, |&e| e as i64 as f64 / scale);
                    encoded.max(0.0) - entry
                })
                .collect();
            let error = candidates
                .iter()
                .map(|c| (c - f64::from(*s)).abs())
                .fold(f64::INFINITY, f64::min);
            assert!(
                error <= FIXED_POINT_ULPS / scale,
                "f = {fractional_bits}, x = {x}: secure {s}, candidates {candidates:?}"
            );
        }
    }
}
