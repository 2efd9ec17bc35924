//! all-MiniLM-L6-v2 (fetched by `scripts/fetch minilm`; skipped with that message when
//! absent) served securely in the `dealer` setting against the plain executor: sentence
//! embeddings of 8 sentences at a 32-token padded length (the length is public and
//! the plan's choice; 32 keeps the test short), mean cosine ≥ 0.999 and worst ≥ 0.995.

use veil_model::import::{HuggingFaceOptions, compile_hugging_face};
use veil_model::plain::run_plain;
use veil_model::text::{EmbeddingMode, cosine};
use veil_text::TextEncoder;

use crate::secure;

const SENTENCES: [&str; 8] = [
    "A man is playing a guitar.",
    "Someone plays an instrument.",
    "The Rock is destined to be the 21st Century's new Conan.",
    "Effective but too tepid biopic",
    "Secure inference keeps the weights and the input private.",
    "I didn't like it at all!!",
    "naïve café résumé — unicode, numbers 12345 and punctuation?",
    "",
];

/// Other sentences, for the comparisons' bit-widths.
const CALIBRATION: [&str; 4] = [
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times.",
    "Please send the quarterly report by Friday; thanks!",
    "what?",
];

#[test]
fn minilm_sentence_embeddings_agree_with_the_plain_run() {
    let Some(directory) = veil_data::fetched::minilm_directory() else {
        eprintln!(
            "SKIPPED: all-MiniLM-L6-v2 is not fetched; {}",
            veil_data::fetched::FETCH_HINT
        );
        return;
    };
    let options = HuggingFaceOptions {
        sequence: 32,
        ..HuggingFaceOptions::default()
    };
    let mut plan = compile_hugging_face(&directory, &options).expect("compiles");
    let encoder = TextEncoder::new(
        &directory.join("tokenizer.json"),
        &plan.public,
        plan.text_tables.clone(),
    )
    .expect("the tokenizer");
    // Comparison widths from other sentences, as `veil compile --hf --calibrate` sets them.
    let calibration = encoder.encode(&CALIBRATION).expect("encodes");
    veil_model::passes::calibration::calibrate_comparison_bits(
        &mut plan,
        &calibration.inputs,
        calibration.len(),
        8.0,
    )
    .expect("calibrates");
    let batch = encoder.encode(&SENTENCES).expect("encodes");
    let plain = encoder.finish(
        &run_plain(&plan, &batch.inputs, batch.len()).expect("plain"),
        &batch,
    );
    let started = std::time::Instant::now();
    // The range-checking simulation: every comparison within its calibrated width and
    // every LayerNorm variance within its documented range, or the test names the node.
    let encoded =
        veil_exec::encode_inputs(&plan.public, &batch.inputs, batch.len()).expect("a valid input");
    let mut simulation = veil_exec::cleartext_checked(&plan).expect("the simulation");
    let output = veil_exec::run(&mut simulation, &plan.public, batch.len(), Some(&encoded))
        .expect("in range")
        .expect("the simulation sees the output");
    let output = veil_exec::decode_output(&plan.public, &output).expect("decodes");
    let simulated = encoder.finish(&output, &batch);
    eprintln!("simulated in {:.1} s", started.elapsed().as_secs_f64());
    report("simulated", &plain, &simulated);
    // Two sentences a query: a query's material is held whole, so this bounds memory.
    let started = std::time::Instant::now();
    let mut secure_output = Vec::new();
    for pair in SENTENCES.chunks(2) {
        let pair = encoder.encode(pair).expect("encodes");
        secure_output.extend(secure(&plan, &pair.inputs, pair.len()));
    }
    let secure = encoder.finish(&secure_output, &batch);
    eprintln!("secure in {:.1} s", started.elapsed().as_secs_f64());
    report("secure", &plain, &secure);
}

/// Asserts the goal on the cosines to the plain embeddings: mean ≥ 0.999, worst
/// ≥ 0.995.
fn report(name: &str, plain: &[Vec<f32>], embeddings: &[Vec<f32>]) {
    let cosines: Vec<f64> = plain
        .iter()
        .zip(embeddings)
        .map(|(p, s)| cosine(p, s))
        .collect();
    let mean = cosines.iter().sum::<f64>() / cosines.len() as f64;
    let worst = cosines.iter().copied().fold(1.0, f64::min);
    eprintln!("{name}: cosine to plain mean {mean:.6}, worst {worst:.6}");
    assert!(mean >= 0.999 && worst >= 0.995, "{name}: {cosines:?}");
}

/// The `secure` embedding mode (the word table a server weight, looked up as one-hot ×
/// E under MPC) computes what the `client` mode computes, in the clear and securely.
#[test]
fn the_secure_embedding_lookup_agrees_with_the_client_lookup() {
    let Some(directory) = veil_data::fetched::minilm_directory() else {
        eprintln!(
            "SKIPPED: all-MiniLM-L6-v2 is not fetched; {}",
            veil_data::fetched::FETCH_HINT
        );
        return;
    };
    let compile = |embedding| {
        let options = HuggingFaceOptions {
            sequence: 8,
            embedding,
            ..HuggingFaceOptions::default()
        };
        let mut plan = compile_hugging_face(&directory, &options).expect("compiles");
        let encoder = TextEncoder::new(
            &directory.join("tokenizer.json"),
            &plan.public,
            plan.text_tables.clone(),
        )
        .expect("the tokenizer");
        let calibration = encoder.encode(&CALIBRATION).expect("encodes");
        veil_model::passes::calibration::calibrate_comparison_bits(
            &mut plan,
            &calibration.inputs,
            calibration.len(),
            8.0,
        )
        .expect("calibrates");
        (plan, encoder)
    };
    let (client_plan, client_encoder) = compile(EmbeddingMode::Client);
    let (secure_plan, secure_encoder) = compile(EmbeddingMode::Secure);
    assert!(
        secure_plan
            .text_tables
            .as_ref()
            .expect("tables")
            .word
            .is_empty(),
        "the secure mode's public tables must not hold the word table"
    );
    let sentences = &SENTENCES[..2];
    let by_client = client_encoder.encode(sentences).expect("encodes");
    let by_secure = secure_encoder.encode(sentences).expect("encodes");
    let plain_client = client_encoder.finish(
        &run_plain(&client_plan, &by_client.inputs, 2).expect("plain"),
        &by_client,
    );
    let plain_secure = secure_encoder.finish(
        &run_plain(&secure_plan, &by_secure.inputs, 2).expect("plain"),
        &by_secure,
    );
    for (a, b) in plain_client.iter().zip(&plain_secure) {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-6, "the lookups differ by {worst}");
    }
    let secure = secure_encoder.finish(&secure(&secure_plan, &by_secure.inputs, 2), &by_secure);
    report("secure lookup", &plain_secure, &secure);
}
