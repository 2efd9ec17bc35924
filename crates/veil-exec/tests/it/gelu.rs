//! GELU under MPC against the exact GELU of the plain executor, within the documented
//! bound, on random inputs and adversarial ones: zeros, the breakpoints and their
//! neighbours, large magnitudes whose powers overflow the ring, and all negatives.

use veil_core::sampling::{SplitMix64, test_seed};
use veil_model::Plan;
use veil_model::import::{Architecture, compile, write_safetensors};
use veil_model::passes::calibration::calibrate_comparison_bits;

use crate::assert_agrees;

fn gelu_plan(len: usize) -> Plan {
    let architecture = Architecture::from_json(&format!(
        r#"{{"name": "gelu", "input": [{len}], "layers": [{{"op": "gelu"}}]}}"#
    ))
    .expect("parses");
    compile(
        &architecture,
        &write_safetensors(&[]).expect("no tensors"),
        "exact",
    )
    .expect("compiles")
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
    let inputs: Vec<Vec<f32>> = vec![
        sampler.normal_vec(len * batch, 2.0),
        vec![0.0; len * batch],
        edges,
        (0..len * batch)
            .map(|i| if i % 2 == 0 { -1000.0 } else { 1000.0 })
            .collect(),
        sampler
            .normal_vec(len * batch, 5.0)
            .iter()
            .map(|v| -v.abs())
            .collect(),
    ];
    for input in inputs {
        assert_agrees(&plan, &input, batch);
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
/// input to within the documented fixed-point error, piece by piece, including at the
/// breakpoints (the comparisons see the same encoded value).
#[test]
fn the_secure_polynomial_is_within_its_fixed_point_error() {
    use veil_exec::ops::gelu::{FIXED_POINT_ULPS, approximate};
    let seed = test_seed();
    let mut sampler = SplitMix64::new(seed.value());
    let len = 512;
    let plan = gelu_plan(len);
    let mut input = sampler.normal_vec(len - 6, 2.5);
    input.extend([
        -4.0,
        -1.95,
        3.0,
        -4.0 - 1.0 / 65536.0,
        3.0 + 1.0 / 65536.0,
        0.0,
    ]);
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
            "x = {x}: secure {s}, polynomial {}",
            approximate(encoded)
        );
    }
    assert!(worst > 0.0, "the secure run is not bit-exact f64");
}
