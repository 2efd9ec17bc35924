//! Loading and splitting the digits data set.

use std::io::Write;

use flate2::Compression;
use flate2::write::GzEncoder;
use std::path::PathBuf;

use veil_data::Error;
use veil_data::digits::{CLASSES, FEATURES, load, split};

/// The digits file carried in the repository.
fn digits_path() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../data/digits/digits.csv.gz"
    ))
}

/// A scratch file path unique to this test process and `name`.
fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("veil-data-{}-{name}", std::process::id()))
}

fn gzip(text: &str) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(text.as_bytes())
        .expect("writing to a Vec");
    encoder.finish().expect("finishing a Vec")
}

/// Writes `bytes` to a scratch file, loads it, and removes the file.
fn load_bytes(name: &str, bytes: &[u8]) -> veil_data::Result<veil_data::digits::Dataset> {
    let path = temp_path(name);
    std::fs::write(&path, bytes).expect("writing a scratch file");
    let result = load(&path);
    std::fs::remove_file(&path).expect("removing a scratch file");
    result
}

#[test]
fn loads_the_real_file() {
    let data = load(&digits_path()).expect("the repository's digits file loads");
    assert_eq!(data.len(), 1797);
    assert_eq!(data.features.len(), 1797 * FEATURES);
    for class in 0..CLASSES as u8 {
        assert!(data.labels.contains(&class), "label {class} missing");
    }
    assert!(data.features.iter().all(|v| (0.0..=1.0).contains(v)));
    assert!(data.features.contains(&1.0), "some pixel is 16");
    // The first row of scikit-learn's digits is a 0 whose third pixel is 5.
    assert_eq!(data.labels[0], 0);
    assert_eq!(data.sample(0)[2], 5.0 / 16.0);
}

#[test]
fn missing_file_is_an_error() {
    let result = load(&temp_path("does-not-exist.csv.gz"));
    assert!(matches!(result, Err(Error::Io { .. })), "{result:?}");
}

#[test]
fn garbage_and_truncated_gzip_are_errors() {
    let result = load_bytes("garbage.csv.gz", b"this is not gzip at all\n");
    assert!(
        matches!(result, Err(Error::Decompress { .. })),
        "{result:?}"
    );

    let real = std::fs::read(digits_path()).expect("reading the digits file");
    for cut in [5, 30, real.len() / 2, real.len() - 4] {
        let result = load_bytes("truncated.csv.gz", &real[..cut]);
        assert!(
            matches!(result, Err(Error::Decompress { .. })),
            "cut at {cut}: {result:?}"
        );
    }

    let result = load_bytes("empty.csv.gz", b"");
    assert!(result.is_err(), "an empty file must not load");
}

#[test]
fn wrong_column_count_is_an_error() {
    let short = "0,".repeat(FEATURES - 1) + "3\n";
    let result = load_bytes("short-row.csv.gz", &gzip(&short));
    match result {
        Err(
            error @ Error::ColumnCount {
                line: 1,
                expected: 65,
                found: 64,
                ..
            },
        ) => {
            assert!(
                error
                    .to_string()
                    .contains("line 1 has 64 columns, expected 65"),
                "{error}"
            );
        }
        other => panic!("expected a column-count error, got {other:?}"),
    }

    let good = "1,".repeat(FEATURES) + "3\n";
    let long = format!("{good}{good}{}", "1,".repeat(FEATURES + 1) + "3\n");
    let result = load_bytes("long-row.csv.gz", &gzip(&long));
    assert!(
        matches!(
            result,
            Err(Error::ColumnCount {
                line: 3,
                found: 66,
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn out_of_range_values_are_errors() {
    let bad_pixel = "1,".repeat(10) + "17," + &"1,".repeat(FEATURES - 11) + "3\n";
    let result = load_bytes("bad-pixel.csv.gz", &gzip(&bad_pixel));
    assert!(
        matches!(
            result,
            Err(Error::PixelOutOfRange {
                line: 1,
                column: 11,
                ..
            })
        ),
        "{result:?}"
    );

    let bad_label = "1,".repeat(FEATURES) + "12\n";
    let result = load_bytes("bad-label.csv.gz", &gzip(&bad_label));
    assert!(
        matches!(result, Err(Error::LabelOutOfRange { line: 1, .. })),
        "{result:?}"
    );
}

#[test]
fn split_is_deterministic_and_disjoint() {
    let data = load(&digits_path()).expect("the repository's digits file loads");
    let (train, test) = split(&data, 0.2, 42);
    assert_eq!(test.len(), 359); // round(1797 × 0.2)
    assert_eq!(train.len() + test.len(), data.len());
    assert_eq!(train.features.len(), train.len() * FEATURES);
    assert_eq!(split(&data, 0.2, 42), (train.clone(), test.clone()));
    assert_ne!(
        split(&data, 0.2, 43).1,
        test,
        "another seed gives another split"
    );

    // Every sample of the original ends up in exactly one of the two sets. Rows are not
    // unique in the digits, so compare multisets of (pixels, label).
    let key = |pixels: &[f32], label: u8| {
        (
            pixels.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            label,
        )
    };
    let mut original: Vec<_> = (0..data.len())
        .map(|i| key(data.sample(i), data.labels[i]))
        .collect();
    let mut parts: Vec<_> = (0..train.len())
        .map(|i| key(train.sample(i), train.labels[i]))
        .chain((0..test.len()).map(|i| key(test.sample(i), test.labels[i])))
        .collect();
    original.sort();
    parts.sort();
    assert_eq!(original, parts);

    let (all, none) = split(&data, 0.0, 1);
    assert_eq!((all.len(), none.len()), (data.len(), 0));
    let (none, all) = split(&data, 1.0, 1);
    assert_eq!((none.len(), all.len()), (0, data.len()));
}
