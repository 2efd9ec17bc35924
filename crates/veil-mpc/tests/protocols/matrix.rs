//! The tests every setting runs: each program on random and adversarial inputs, held to
//! the setting's bound for that program against the cleartext reference (or an
//! independent formula, where there is one). The list of settings is at the end.

use veil_core::RingTensor;
use veil_core::sampling::test_seed;

use crate::fixture::{
    Fixture, adversarial_values, convolution_fixture, linear_fixture, row_scale_fixture,
};
use crate::programs::{
    BatchedProducts, Comparisons, Convolution, Layer, Linear, LocalOperations, Lookups, Products,
    Program, RowScale, Squares, Truncate,
};
use crate::settings::{Cleartext, Dealer, DealerDcf, Setting};

/// Runs `program` in setting `S` and holds its output to `S`'s bound against
/// `reference`, which is `what` (for messages).
fn check_against<S: Setting>(
    program: &impl Program,
    fixture: &Fixture,
    input: &RingTensor,
    reference: &RingTensor,
    what: &str,
) {
    let output = S::run(program, fixture, input);
    let context = format!("{} {program:?} against {what}", S::NAME);
    S::bound(program.bound()).assert(&context, &output, reference);
}

/// [`check_against`] the cleartext simulation of the same program.
fn check<S: Setting>(program: &impl Program, fixture: &Fixture, input: &RingTensor) {
    let reference = Cleartext::simulate(program, fixture, input);
    check_against::<S>(program, fixture, input, &reference, "the simulation");
}

fn weight_product_is_exact_and_truncation_within_one_ulp<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = linear_fixture(&seed, &mut prg);
    for round in 0..5 {
        let bits = if round == 0 { 40 } else { 24 };
        let input = RingTensor::new(vec![3, 5], adversarial_values(15, bits, &mut prg)).unwrap();
        check::<S>(&Linear { truncate: false }, &fixture, &input);
        check::<S>(&Linear { truncate: true }, &fixture, &input);
    }
}

/// Against the floor computed here, not by the reference: x >> bits for every |x| up to
/// 2^62.
fn truncation_error_is_zero_or_one_ulp_up_to_two_to_the_62<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = Fixture::empty(&seed);
    let edge = (1u64 << 62) - 1;
    let mut values = vec![
        0,
        1,
        u64::MAX,
        edge,
        edge.wrapping_neg(),
        (1u64 << 62).wrapping_neg(),
    ];
    values.extend(adversarial_values(400, 62, &mut prg));
    for &bits in &[1u32, 16, 32, 61] {
        let program = Truncate {
            len: values.len(),
            bits,
        };
        let input = RingTensor::new(vec![values.len()], values.clone()).unwrap();
        let floor = input.map(|x| ((x as i64) >> bits) as u64);
        check_against::<S>(&program, &fixture, &input, &floor, "the floor");
    }
}

fn beaver_and_matrix_triples_are_exact<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = Fixture::empty(&seed);
    for _ in 0..3 {
        let input = RingTensor::new(vec![4, 4], prg.vec_u64(16)).unwrap();
        check::<S>(&Products, &fixture, &input);
    }
}

fn drelu_relu_and_select_match_the_simulation<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = Fixture::empty(&seed);
    let boundaries = vec![
        0u64,
        1,
        u64::MAX,
        i64::MAX as u64,
        i64::MIN as u64,
        (i64::MIN + 1) as u64,
    ];
    for &bits in &[64u32, 40, 8] {
        let mut values = boundaries.clone();
        values.extend(adversarial_values(200, bits.min(63), &mut prg));
        if bits == 8 {
            values = (-128i64..128).map(|x| x as u64).collect();
        }
        let program = Comparisons {
            len: values.len(),
            bits,
        };
        let input = RingTensor::new(vec![values.len()], values).unwrap();
        check::<S>(&program, &fixture, &input);
    }
}

fn convolution_is_exact_and_truncation_within_one_ulp<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = convolution_fixture(&seed, &mut prg);
    for bits in [40, 24, 24] {
        let input =
            RingTensor::new(vec![2, 2, 5, 5], adversarial_values(100, bits, &mut prg)).unwrap();
        check::<S>(&Convolution { truncate: false }, &fixture, &input);
        check::<S>(&Convolution { truncate: true }, &fixture, &input);
    }
}

fn local_operations_are_exact<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = Fixture::empty(&seed);
    for _ in 0..3 {
        let input = RingTensor::new(vec![2, 3], prg.vec_u64(6)).unwrap();
        check::<S>(&LocalOperations, &fixture, &input);
    }
}

/// The server-held elementwise scale is exact, and within one ulp above once truncated.
fn row_scale_is_exact_and_truncation_within_one_ulp<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = row_scale_fixture(&seed, &mut prg);
    for bits in [40, 32, 24] {
        let input = RingTensor::new(vec![3, 5], adversarial_values(15, bits, &mut prg)).unwrap();
        check::<S>(&RowScale { truncate: false }, &fixture, &input);
        check::<S>(&RowScale { truncate: true }, &fixture, &input);
        // And against the formula computed here: x[i][j]·g[j] + b[j], wrapping.
        let (g, b) = (fixture.weights[0].1.data(), fixture.biases[0].1.data());
        let expected: Vec<u64> = input
            .data()
            .iter()
            .enumerate()
            .map(|(index, x)| x.wrapping_mul(g[index % 5]).wrapping_add(b[index % 5]))
            .collect();
        let expected = RingTensor::new(vec![3, 5], expected).unwrap();
        check_against::<S>(
            &RowScale { truncate: false },
            &fixture,
            &input,
            &expected,
            "x·g + b",
        );
    }
}

/// The square is exact and equals x·x computed here, for adversarial values.
fn squares_are_exact<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = Fixture::empty(&seed);
    for bits in [62, 40, 24] {
        let values = adversarial_values(40, bits, &mut prg);
        let input = RingTensor::new(vec![40], values.clone()).unwrap();
        let square: Vec<u64> = values.iter().map(|x| x.wrapping_mul(*x)).collect();
        let expected = RingTensor::new(vec![80], [square.clone(), square].concat()).unwrap();
        check_against::<S>(&Squares { len: 40 }, &fixture, &input, &expected, "x·x");
    }
}

/// A batch of matrix products in one round, exact, and equal to the products of the
/// slices computed here.
fn batched_matrix_products_are_exact<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = Fixture::empty(&seed);
    for bits in [40, 24] {
        let input = RingTensor::new(
            vec![2 * 3 * 4 + 2 * 4 * 5],
            adversarial_values(64, bits, &mut prg),
        )
        .unwrap();
        check::<S>(&BatchedProducts, &fixture, &input);
        let data = input.data();
        let mut expected = Vec::new();
        for slice in 0..2 {
            let a =
                RingTensor::new(vec![3, 4], data[slice * 12..(slice + 1) * 12].to_vec()).unwrap();
            let b = RingTensor::new(
                vec![4, 5],
                data[24 + slice * 20..24 + (slice + 1) * 20].to_vec(),
            )
            .unwrap();
            expected.extend_from_slice(a.matmul(&b).unwrap().data());
        }
        let expected = RingTensor::new(vec![2, 3, 5], expected).unwrap();
        check_against::<S>(
            &BatchedProducts,
            &fixture,
            &input,
            &expected,
            "the slices' products",
        );
    }
}

/// Table lookups are exact for every index (all of them at 8 bits, negative and huge
/// ring values, whose index is their low bits), at widths with and without tree levels.
fn lookups_are_exact_for_every_index<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = Fixture::empty(&seed);
    for bits in [6u32, 7, 8, 9, 12] {
        let mut values: Vec<u64> = (0..1u64 << bits.min(9)).collect();
        values.extend([u64::MAX, i64::MIN as u64, (-5i64) as u64, 1 << 40]);
        values.extend(adversarial_values(40, 63, &mut prg));
        let program = Lookups {
            len: values.len(),
            bits,
            table_seed: prg.next_u64(),
        };
        let table = program.table();
        let mask = (1u64 << bits) - 1;
        let expected: Vec<u64> = values.iter().map(|x| table[(x & mask) as usize]).collect();
        let input = RingTensor::new(vec![values.len()], values).unwrap();
        let expected = RingTensor::new(vec![expected.len()], expected).unwrap();
        check_against::<S>(&program, &fixture, &input, &expected, "T[x mod 2^bits]");
    }
}

/// A layer as the executor runs it (product, bias, truncation, ReLU) keeps the
/// truncation's bound.
fn a_layer_stays_within_one_ulp_above<S: Setting>() {
    let seed = test_seed();
    let mut prg = seed.prg();
    let fixture = linear_fixture(&seed, &mut prg);
    for bits in [40, 24, 24, 24] {
        let input = RingTensor::new(vec![3, 5], adversarial_values(15, bits, &mut prg)).unwrap();
        check::<S>(&Layer, &fixture, &input);
    }
}

/// One module of `#[test]`s per setting, each calling the generic test of the same name
/// with that setting (as rustls instantiates its tests per crypto provider).
macro_rules! matrix {
    (settings: [$($module:ident: $setting:ty),* $(,)?], tests: $tests:tt $(,)?) => {
        $(matrix!(@setting $module, $setting, $tests);)*
    };
    (@setting $module:ident, $setting:ty, [$($test:ident),* $(,)?]) => {
        mod $module {
            $(
                #[test]
                fn $test() {
                    super::$test::<$setting>();
                }
            )*
        }
    };
}

matrix! {
    // One line per setting.
    settings: [
        cleartext: super::Cleartext,
        dealer: super::Dealer,
        dealer_dcf: super::DealerDcf,
    ],
    tests: [
        weight_product_is_exact_and_truncation_within_one_ulp,
        truncation_error_is_zero_or_one_ulp_up_to_two_to_the_62,
        beaver_and_matrix_triples_are_exact,
        drelu_relu_and_select_match_the_simulation,
        convolution_is_exact_and_truncation_within_one_ulp,
        local_operations_are_exact,
        row_scale_is_exact_and_truncation_within_one_ulp,
        batched_matrix_products_are_exact,
        squares_are_exact,
        a_layer_stays_within_one_ulp_above,
        lookups_are_exact_for_every_index,
    ],
}
