//! The plan files: round trips, damage, truncation, versions and the old single-input
//! header form.

use std::collections::BTreeMap;

use veil_core::sampling::test_seed;
use veil_model::ir::{InputKind, Op};
use veil_model::{Error, Plan, PublicPlan};

#[test]
fn plans_round_trip_and_damage_is_detected() {
    let seed = test_seed();
    let plan = veil_model::zoo::every_op_cnn(seed.value()).expect("the test CNN compiles");
    let bytes = plan.to_bytes().expect("encoding");
    assert_eq!(Plan::from_bytes(&bytes).expect("decoding"), plan);
    let public = plan
        .public
        .to_bytes(None)
        .expect("encoding the public part");
    assert_eq!(
        PublicPlan::from_bytes(&public).expect("decoding"),
        plan.public
    );
    assert!(
        matches!(Plan::from_bytes(&public), Err(Error::WrongPlanKind { .. })),
        "a public plan has no weights"
    );
    for cut in [0, 5, 20, bytes.len() / 2, bytes.len() - 1] {
        let error = Plan::from_bytes(&bytes[..cut]).expect_err("a truncated plan");
        assert!(
            matches!(
                error,
                Error::Truncated { .. } | Error::ChecksumMismatch | Error::BadMagic
            ),
            "cut {cut}: {error}"
        );
    }
    for position in [
        8,
        13,
        40,
        bytes.len() / 2,
        bytes.len() - 40,
        bytes.len() - 1,
    ] {
        let mut damaged = bytes.clone();
        damaged[position] ^= 0x10;
        assert!(Plan::from_bytes(&damaged).is_err(), "flip at {position}");
    }
    let mut appended = bytes.clone();
    appended.push(0);
    assert!(matches!(
        Plan::from_bytes(&appended),
        Err(Error::ChecksumMismatch)
    ));
    assert!(Plan::new(plan.public.clone(), BTreeMap::new()).is_err());
}

#[test]
fn another_format_version_is_refused_with_the_versions() {
    let plan = veil_model::zoo::random_mlp("m", &[3, 2], 0).expect("a tiny plan");
    let mut bytes = plan.to_bytes().expect("encoding");
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    let error = Plan::from_bytes(&bytes).expect_err("version 99");
    assert!(
        matches!(error, Error::UnsupportedVersion { found: 99, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("recompile"), "{error}");
}

/// Plans written before inputs had names and kinds (the bundled models') still load:
/// their one input is named `input`, holds real values and is client-private.
#[test]
fn a_header_without_input_names_reads_as_one_real_input() {
    let plan = veil_model::zoo::random_mlp("m", &[3, 2], 0).expect("a tiny plan");
    let mut header = serde_json::to_value(&plan.public).expect("the header as JSON");
    let input = &mut header["graph"]["nodes"][0];
    let object = input.as_object_mut().expect("the input node is an object");
    for field in ["kind", "visibility"] {
        assert!(object.remove(field).is_some(), "{field} is written");
    }
    let old: PublicPlan = serde_json::from_value(header).expect("the old header parses");
    let slots = old.graph.inputs();
    assert_eq!(slots.len(), 1);
    assert_eq!(slots[0].name, "input");
    assert_eq!(slots[0].kind, InputKind::Real);
    assert!(matches!(old.graph.nodes[0].op, Op::Input { .. }));
    assert_eq!(old, plan.public);
}
