//! all-MiniLM-L6-v2 through veil's Hugging Face importer, text front end and plain
//! executor, against an independent reference: candle-transformers' BERT on the same
//! files (`tools/minilm-reference/`, whose README gives the command that made the
//! committed vectors). Needs the model: `scripts/fetch minilm`; skips with that message
//! when it is absent.

use std::path::PathBuf;

use veil_model::import::{HuggingFaceOptions, compile_hugging_face};
use veil_model::plain::run_plain;
use veil_text::TextEncoder;

struct Reference {
    text: String,
    token_ids: Vec<u32>,
    embedding: Vec<f32>,
}

fn reference() -> Vec<Reference> {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tools/minilm-reference/minilm-reference.json");
    let text = std::fs::read_to_string(&file).expect("the committed reference vectors");
    let value: serde_json::Value = serde_json::from_str(&text).expect("reference JSON");
    value["sentences"]
        .as_array()
        .expect("a list of sentences")
        .iter()
        .map(|entry| Reference {
            text: entry["text"].as_str().expect("text").to_string(),
            token_ids: entry["token_ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|id| id.as_u64().expect("an id") as u32)
                .collect(),
            embedding: entry["embedding"]
                .as_array()
                .expect("embedding")
                .iter()
                .map(|v| v.as_f64().expect("a number") as f32)
                .collect(),
        })
        .collect()
}

#[test]
fn the_plain_executor_reproduces_the_reference_embeddings() {
    let Some(directory) = veil_data::fetched::minilm_directory() else {
        eprintln!(
            "SKIPPED: all-MiniLM-L6-v2 is not fetched; {}",
            veil_data::fetched::FETCH_HINT
        );
        return;
    };
    let plan = compile_hugging_face(&directory, &HuggingFaceOptions::default()).expect("compiles");
    let encoder = TextEncoder::new(
        &directory.join("tokenizer.json"),
        &plan.public,
        plan.text_tables.clone(),
    )
    .expect("the tokenizer");
    let references = reference();
    assert!(references.len() >= 8);
    let sentences: Vec<&str> = references.iter().map(|r| r.text.as_str()).collect();
    let batch = encoder.encode(&sentences).expect("encodes");
    let output = run_plain(&plan, &batch.inputs, batch.len()).expect("runs");
    let embeddings = encoder.finish(&output, &batch);
    let mut worst = 0f32;
    for ((reference, ids), embedding) in references.iter().zip(&batch.token_ids).zip(&embeddings) {
        assert_eq!(
            ids, &reference.token_ids,
            "token ids of {:?}",
            reference.text
        );
        for (a, b) in embedding.iter().zip(&reference.embedding) {
            worst = worst.max((a - b).abs());
        }
    }
    eprintln!("all-MiniLM-L6-v2 plain vs candle: worst |difference| {worst:.2e}");
    assert!(worst <= 1e-4, "worst difference {worst}");
}
