//! The text front end of a plan over token sequences: what the client computes in the
//! clear from public data before it shares its inputs, and after it reconstructs the
//! output.
//!
//! **Before.** A [`TextFrontEnd`] plan's graph starts from token embeddings
//! `[sequence, hidden]` and an attention mask `[sequence]`. In the `client` embedding
//! mode the embedding tables are public (a public pretrained model's are), so the
//! client looks its token ids up itself: embedding_t = word[id_t] + position[t] (the
//! token-type row 0 folded into the position table at compile time). The tables travel
//! in the public plan file ([`TextTables`]), and their SHA-256 sits in the header, so
//! the handshake's public-plan hash binds them.
//!
//! **After.** The graph ends in a masked sum over the tokens; the client divides by its
//! own token count and, for sentence embeddings, L2-normalises ([`finish_output`]).
//! The server learns the padded length only, never the true one.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// How token embeddings are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbeddingMode {
    /// The tables are public, in the public plan; the client looks its tokens up.
    #[default]
    Client,
    /// The word table E is a server-held weight: the client shares its tokens one-hot
    /// and the lookup is the product one-hot × E under the fixed weight mask (the
    /// client receives D_E = E + B once per client session, and sends its masked
    /// one-hot rows each query). Only the position rows are public.
    Secure,
}

/// What the client makes of the revealed output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum TextOutput {
    /// The output is a masked sum over the tokens: divided by the token count it is the
    /// mean-pooled embedding, then L2-normalised when `normalize` (sentence-transformers'
    /// pipeline).
    MeanPooled {
        /// Whether to L2-normalise.
        normalize: bool,
    },
    /// A sequence-classification head: the output is one logit per label (or, under
    /// the `label` policy, the label's index alone).
    Classification {
        /// The labels' names, by index (`id2label`).
        labels: Vec<String>,
    },
}

/// The public description of a text plan's front end (in the plan header).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextFrontEnd {
    /// The padded sequence length (public; every query has exactly this many tokens).
    pub sequence: usize,
    /// The vocabulary size.
    pub vocabulary: usize,
    /// The embedding width.
    pub hidden: usize,
    /// The id of the padding token.
    pub padding_id: u32,
    /// How token embeddings are computed.
    pub embedding: EmbeddingMode,
    /// What the client does with the output.
    pub output: TextOutput,
    /// The SHA-256 (hex) of the `tokenizer.json` the plan was compiled with.
    pub tokenizer_sha256: String,
    /// The SHA-256 (hex) of the public tables' bytes ([`TextTables::to_bytes`]).
    pub tables_sha256: String,
}

/// The public embedding tables, row-major f32.
#[derive(Clone, PartialEq)]
pub struct TextTables {
    /// `[vocabulary, hidden]`: one row per token id (empty in the `secure` mode, where
    /// the word table is the server's weight).
    pub word: Vec<f32>,
    /// `[sequence, hidden]`: the position rows with the token-type row 0 added.
    pub position: Vec<f32>,
}

impl std::fmt::Debug for TextTables {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            formatter,
            "TextTables {{ word: {} values, position: {} values }}",
            self.word.len(),
            self.position.len()
        )
    }
}

impl TextTables {
    /// The tables as the plan files store them: `word` then `position`, f32
    /// little-endian.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.word
            .iter()
            .chain(&self.position)
            .flat_map(|value| value.to_le_bytes())
            .collect()
    }

    /// The SHA-256 (hex) of [`Self::to_bytes`].
    pub fn sha256_hex(&self) -> String {
        let digest = Sha256::digest(self.to_bytes());
        digest.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    /// Reads the tables a front end describes from their bytes, checking the length
    /// and the hash.
    pub fn from_bytes(front: &TextFrontEnd, bytes: &[u8]) -> Result<Self> {
        let word_rows = match front.embedding {
            EmbeddingMode::Client => front.vocabulary,
            EmbeddingMode::Secure => 0,
        };
        let word_len = word_rows
            .checked_mul(front.hidden)
            .ok_or_else(|| table_error("the vocabulary × hidden size overflows"))?;
        let position_len = front
            .sequence
            .checked_mul(front.hidden)
            .ok_or_else(|| table_error("the sequence × hidden size overflows"))?;
        let expected = word_len
            .checked_add(position_len)
            .and_then(|len| len.checked_mul(4));
        if expected != Some(bytes.len()) {
            return Err(table_error(&format!(
                "the header describes {word_len} + {position_len} table values but the file holds {} bytes of them",
                bytes.len()
            )));
        }
        let mut values = bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
        let tables = Self {
            word: values.by_ref().take(word_len).collect(),
            position: values.collect(),
        };
        if tables.sha256_hex() != front.tables_sha256 {
            return Err(table_error(
                "the embedding tables do not match the hash in the header",
            ));
        }
        Ok(tables)
    }

    /// The client's inputs for one sequence of `ids` (exactly `sequence` of them, each
    /// below the vocabulary), by input name: in the `client` mode the token embeddings
    /// `embeddings` `[sequence, hidden]`; in the `secure` mode the one-hot rows
    /// `token_one_hot` `[sequence, vocabulary]` and the public `positions`
    /// `[sequence, hidden]`.
    pub fn inputs(
        &self,
        front: &TextFrontEnd,
        ids: &[u32],
    ) -> Result<Vec<(&'static str, Vec<f32>)>> {
        if ids.len() != front.sequence {
            return Err(Error::InputShape {
                expected: front.sequence,
                found: ids.len(),
                shapes: vec![("token ids".into(), vec![front.sequence])],
            });
        }
        if let Some(position) = ids.iter().position(|&id| id as usize >= front.vocabulary) {
            return Err(Error::InputValue {
                input: "token ids".into(),
                position,
                reason: format!(
                    "a token id is outside the vocabulary of {}",
                    front.vocabulary
                ),
            });
        }
        let hidden = front.hidden;
        let positions = &self.position[..front.sequence * hidden];
        Ok(match front.embedding {
            EmbeddingMode::Client => {
                let mut out = Vec::with_capacity(front.sequence * hidden);
                for (&id, place) in ids.iter().zip(positions.chunks(hidden)) {
                    let id = id as usize;
                    let word = &self.word[id * hidden..(id + 1) * hidden];
                    out.extend(word.iter().zip(place).map(|(w, p)| w + p));
                }
                vec![(EMBEDDINGS_INPUT, out)]
            }
            EmbeddingMode::Secure => {
                let mut one_hot = vec![0f32; front.sequence * front.vocabulary];
                for (row, &id) in ids.iter().enumerate() {
                    one_hot[row * front.vocabulary + id as usize] = 1.0;
                }
                vec![
                    (ONE_HOT_INPUT, one_hot),
                    (POSITIONS_INPUT, positions.to_vec()),
                ]
            }
        })
    }
}

/// The name of a `client`-mode plan's token-embedding input.
pub const EMBEDDINGS_INPUT: &str = "embeddings";
/// The name of a `secure`-mode plan's one-hot token input.
pub const ONE_HOT_INPUT: &str = "token_one_hot";
/// The name of a `secure`-mode plan's public position input.
pub const POSITIONS_INPUT: &str = "positions";
/// The name of every text plan's attention-mask input.
pub const MASK_INPUT: &str = "attention_mask";

fn table_error(reason: &str) -> Error {
    Error::InvalidHeader {
        reason: format!("text tables: {reason}"),
    }
}

/// One sequence's result from its revealed output and its attention mask: for mean
/// pooling the masked sum `[hidden]` divided by the token count (at least 1),
/// L2-normalised when the front end says so; for a classification head the output as
/// revealed (logits, or the label's index).
pub fn finish_output(front: &TextFrontEnd, masked_sum: &[f32], mask: &[f32]) -> Vec<f32> {
    let normalize = match &front.output {
        TextOutput::MeanPooled { normalize } => *normalize,
        TextOutput::Classification { .. } => return masked_sum.to_vec(),
    };
    let tokens = mask.iter().filter(|&&m| m != 0.0).count().max(1) as f64;
    let mean: Vec<f64> = masked_sum
        .iter()
        .map(|&value| f64::from(value) / tokens)
        .collect();
    let norm = if normalize {
        mean.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12)
    } else {
        1.0
    };
    mean.iter().map(|v| (v / norm) as f32).collect()
}

/// The cosine similarity of two vectors (0 when either is zero).
pub fn cosine(left: &[f32], right: &[f32]) -> f64 {
    let dot: f64 = left
        .iter()
        .zip(right)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|a| f64::from(*a).powi(2)).sum::<f64>().sqrt();
    let denominator = norm(left) * norm(right);
    if denominator == 0.0 {
        0.0
    } else {
        dot / denominator
    }
}
