//! veil-text: the client's text front end for plans over token sequences (sentence
//! embeddings from `veil compile --hf`).
//!
//! The client tokenizes its sentences locally with the public `tokenizer.json` the plan
//! was compiled with (checked by SHA-256), padded and truncated to the plan's public
//! sequence length, looks its tokens up in the plan's public embedding tables, and
//! hands the executor two client-private inputs: the token embeddings and the attention
//! mask ([`TextEncoder::encode`]). After the secure run it turns the revealed masked sum
//! into each sentence's embedding ([`TextEncoder::finish`]: divided by its own token
//! count, L2-normalised for sentence-transformers models).
//!
//! Tokenization is the `tokenizers` crate with its pure-Rust regex engine.
//!
//! # Secrets
//! Sentences, token ids and embeddings are the client's secrets: no error of this crate
//! carries them (errors name files, hashes, sizes and sentence positions).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::unwrap_used)]

use std::path::Path;

use sha2::{Digest, Sha256};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};
use veil_model::PublicPlan;
use veil_model::text::{MASK_INPUT, TextFrontEnd, TextTables, finish_output};

/// What can go wrong preparing text inputs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The plan is not over token sequences.
    #[error(
        "the plan {name:?} takes no text (it has no text front end); compile a text model with `veil compile --hf DIR`"
    )]
    NotTextPlan {
        /// The plan's name.
        name: String,
    },
    /// The plan's text plan has no embedding tables.
    #[error(
        "the plan {name:?} has no embedding tables; pass the NAME.public.plan (or NAME.plan) that `veil compile --hf` wrote"
    )]
    MissingTables {
        /// The plan's name.
        name: String,
    },
    /// The tokenizer file is not the one the plan was compiled with.
    #[error(
        "{path} has SHA-256 {found}, but the plan was compiled with a tokenizer of SHA-256 {expected}; pass the model's own tokenizer.json"
    )]
    TokenizerMismatch {
        /// The file.
        path: String,
        /// The plan's hash.
        expected: String,
        /// The file's hash.
        found: String,
    },
    /// The tokenizer file does not load, or cannot be configured.
    #[error("tokenizer {path}: {reason}")]
    Tokenizer {
        /// The file.
        path: String,
        /// What went wrong (about the file, never about a sentence).
        reason: String,
    },
    /// A sentence could not be tokenized.
    #[error("the tokenizer could not encode sentence {index}")]
    Encode {
        /// The sentence's position in the batch.
        index: usize,
    },
    /// The plan's inputs are not a text plan's.
    #[error(
        "the plan has no input named {name:?}, which its text front end feeds; recompile it with `veil compile --hf`"
    )]
    InputMismatch {
        /// The input the front end makes.
        name: String,
    },
    /// A model-side error (a token outside the vocabulary, a bad table).
    #[error(transparent)]
    Model(#[from] veil_model::Error),
}

/// veil-text's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Public sentences that set a text plan's comparison bit-widths when no calibration
/// file is given (`veil compile --hf`): short and long, plain and noisy, one longer than
/// any padded length so every position is reached. They are public text: calibrating on
/// them reveals nothing about any client.
pub const CALIBRATION_SENTENCES: [&str; 12] = [
    "The quick brown fox jumps over the lazy dog.",
    "It was the best of times, it was the worst of times.",
    "Please send the quarterly report by Friday; thanks!",
    "what?",
    "A man is riding a horse on the beach at sunset.",
    "The film's pacing drags, but the performances are wonderful and the score is lovely.",
    "ERROR 404: page not found (try again later) -- #support @helpdesk",
    "Two plus two is four, and 3.14159 is roughly pi.",
    "I absolutely loved it!!! Best. Movie. Ever.",
    "The committee postponed its decision until the budget figures are final.",
    "Rain is expected tomorrow morning in the northern regions, with snow on higher ground.",
    "Once upon a time, in a kingdom by the sea, there lived a princess who loved to read books about distant lands, strange animals, ancient wars, clever inventions and the stars; every evening she climbed the tallest tower of the castle with a lantern and a pile of volumes, and read until the candle burnt down, the owls fell silent and the first light of dawn crept over the water, while far below the fishermen prepared their boats, the bakers lit their ovens, the guards changed their watch at the gate and the whole town slowly woke to another ordinary day that nobody would ever remember, except her.",
];

/// Compiles a Hugging Face directory (`veil_model::import::compile_hugging_face`) and
/// sets its comparison bit-widths from `sentences` (public text: veil's
/// [`CALIBRATION_SENTENCES`] unless the operator chooses others) with `headroom` over
/// the largest magnitudes they reach. Returns the plan, the client's encoder for it (the
/// directory's `tokenizer.json`), and how many comparisons were calibrated.
pub fn compile_calibrated(
    directory: &Path,
    options: &veil_model::import::HuggingFaceOptions,
    sentences: &[&str],
    headroom: f64,
) -> Result<(veil_model::Plan, TextEncoder, usize)> {
    let mut plan = veil_model::import::compile_hugging_face(directory, options)?;
    let encoder = TextEncoder::new(
        &directory.join("tokenizer.json"),
        &plan.public,
        plan.text_tables.clone(),
    )?;
    let calibration = encoder.encode(sentences)?;
    let changes = veil_model::passes::calibration::calibrate_comparison_bits(
        &mut plan,
        &calibration.inputs,
        calibration.len(),
        headroom,
    )?;
    Ok((plan, encoder, changes.len()))
}

/// A batch of sentences, encoded for a text plan.
#[derive(Clone, PartialEq)]
pub struct EncodedBatch {
    /// The executor's flat input buffer: every sentence's token embeddings, then every
    /// sentence's attention mask ([`PublicPlan::split_inputs`]'s order).
    pub inputs: Vec<f32>,
    /// Each sentence's attention mask (1 for a real token, 0 for padding).
    pub masks: Vec<Vec<f32>>,
    /// Each sentence's token ids.
    pub token_ids: Vec<Vec<u32>>,
    /// Which sentences were longer than the sequence and cut.
    pub truncated: Vec<bool>,
}

impl std::fmt::Debug for EncodedBatch {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "EncodedBatch {{ {} sentences (values hidden) }}",
            self.masks.len()
        )
    }
}

impl EncodedBatch {
    /// Sentences in the batch.
    pub fn len(&self) -> usize {
        self.masks.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.masks.is_empty()
    }
}

/// The client's text front end for one plan.
pub struct TextEncoder {
    tokenizer: Tokenizer,
    front: TextFrontEnd,
    tables: TextTables,
    /// The plan's input names, in the order of a flat input buffer.
    input_names: Vec<String>,
}

impl TextEncoder {
    /// Loads `tokenizer_file` (which must be the one `plan` was compiled with) and sets
    /// its padding and truncation to the plan's sequence length.
    pub fn new(
        tokenizer_file: &Path,
        plan: &PublicPlan,
        tables: Option<TextTables>,
    ) -> Result<Self> {
        let front = plan.text.clone().ok_or_else(|| Error::NotTextPlan {
            name: plan.name.clone(),
        })?;
        let tables = tables.ok_or_else(|| Error::MissingTables {
            name: plan.name.clone(),
        })?;
        let path = tokenizer_file.display().to_string();
        let bytes = std::fs::read(tokenizer_file).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        let found: String = Sha256::digest(&bytes)
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        if found != front.tokenizer_sha256 {
            return Err(Error::TokenizerMismatch {
                path,
                expected: front.tokenizer_sha256.clone(),
                found,
            });
        }
        let mut tokenizer = Tokenizer::from_bytes(&bytes).map_err(|error| Error::Tokenizer {
            path: path.clone(),
            reason: error.to_string(),
        })?;
        // Every query has exactly the plan's public length: pad and cut to it.
        let mut padding = tokenizer.get_padding().cloned().unwrap_or(PaddingParams {
            pad_id: front.padding_id,
            ..PaddingParams::default()
        });
        padding.strategy = PaddingStrategy::Fixed(front.sequence);
        tokenizer.with_padding(Some(padding));
        let mut truncation = tokenizer.get_truncation().cloned().unwrap_or_default();
        truncation.max_length = front.sequence;
        tokenizer
            .with_truncation(Some(TruncationParams { ..truncation }))
            .map_err(|error| Error::Tokenizer {
                path,
                reason: error.to_string(),
            })?;
        let input_names = plan
            .graph
            .inputs()
            .iter()
            .map(|slot| slot.name.to_string())
            .collect();
        Ok(Self {
            tokenizer,
            front,
            tables,
            input_names,
        })
    }

    /// The plan's text front end.
    pub fn front(&self) -> &TextFrontEnd {
        &self.front
    }

    /// Tokenizes and embeds a batch of sentences.
    pub fn encode(&self, sentences: &[&str]) -> Result<EncodedBatch> {
        let sequence = self.front.sequence;
        // Each plan input's values over the batch, by name.
        let mut by_input: Vec<(String, Vec<f32>)> = self
            .input_names
            .iter()
            .map(|name| (name.clone(), Vec::new()))
            .collect();
        let mut batch = EncodedBatch {
            inputs: Vec::new(),
            masks: Vec::with_capacity(sentences.len()),
            token_ids: Vec::with_capacity(sentences.len()),
            truncated: Vec::with_capacity(sentences.len()),
        };
        for (index, sentence) in sentences.iter().enumerate() {
            let encoding = self
                .tokenizer
                .encode(*sentence, true)
                .map_err(|_| Error::Encode { index })?;
            let ids = encoding.get_ids().to_vec();
            if ids.len() != sequence {
                return Err(Error::Encode { index });
            }
            let mask: Vec<f32> = encoding
                .get_attention_mask()
                .iter()
                .map(|&m| if m != 0 { 1.0 } else { 0.0 })
                .collect();
            let mut values = self.tables.inputs(&self.front, &ids)?;
            values.push((MASK_INPUT, mask.clone()));
            for (name, part) in values {
                let slot = by_input
                    .iter_mut()
                    .find(|(input, _)| input == name)
                    .ok_or_else(|| Error::InputMismatch { name: name.into() })?;
                slot.1.extend(part);
            }
            batch.truncated.push(!encoding.get_overflowing().is_empty());
            batch.masks.push(mask);
            batch.token_ids.push(ids);
        }
        batch.inputs = by_input
            .into_iter()
            .flat_map(|(_, values)| values)
            .collect();
        Ok(batch)
    }

    /// Each sentence's result from the revealed output: its embedding (`[batch,
    /// hidden]` masked sums), or a classification head's logits or label index.
    pub fn finish(&self, output: &[f32], batch: &EncodedBatch) -> Vec<Vec<f32>> {
        let per_sentence = output.len() / batch.len().max(1);
        output
            .chunks(per_sentence.max(1))
            .zip(&batch.masks)
            .map(|(sum, mask)| finish_output(&self.front, sum, mask))
            .collect()
    }
}
