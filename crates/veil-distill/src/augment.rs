//! Sentence variants for distillation: TinyBERT's data augmentation (Jiao et al.,
//! arXiv 1909.10351, §3.1), adapted to what veil has. TinyBERT replaces each word with
//! probability p_t by one of its K nearest words (by GloVe for whole words, by BERT's
//! masked-language head for single pieces), and the teacher labels the variants; the
//! student then learns the teacher's function on sentences the labels do not cover.
//!
//! Here the neighbours come from the model's own frozen word-embedding table (cosine
//! similarity), and only whole words of one word piece are replaced, by whole words of
//! one piece, so a variant has its sentence's length (and its length-sorted batch). A
//! neighbour in that table is often a word of the opposite sentiment ("good", "bad"):
//! the teacher's logits and layers follow it, a copied label does not, which is the
//! point of distilling on variants.
//!
//! At a fixed step budget a variant replaces its sentence rather than adding to the
//! epoch: each step sees `sentences` × batch variants, drawn afresh every epoch from
//! their own seeded stream, so the batch order is the one a run without variants has.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use candle_core::{D, Device, Tensor};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;
use veil_core::sampling::SplitMix64;

use crate::bert::TokenBatch;
use crate::sentiment::Examples;
use crate::{Error, Result};

/// How many variants, and how far each strays from its sentence.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Augmentation {
    /// The probability that a sentence is replaced by a variant when it is drawn.
    pub sentences: f64,
    /// The probability that a replaceable word of a variant is replaced (TinyBERT's p_t).
    pub words: f64,
    /// How many nearest words a word may be replaced by (TinyBERT's K).
    pub neighbours: usize,
}

impl Augmentation {
    /// Checks the probabilities lie in [0, 1] and at least one neighbour is asked for.
    pub fn check(&self) -> std::result::Result<(), String> {
        if !(0.0..=1.0).contains(&self.sentences) || !(0.0..=1.0).contains(&self.words) {
            return Err("augmentation.sentences and augmentation.words must lie in [0, 1]".into());
        }
        if self.neighbours == 0 {
            return Err("augmentation.neighbours must be positive".into());
        }
        Ok(())
    }
}

/// Whether a vocabulary entry is a whole word a sentence may have replaced: lower-case
/// letters only, two or more (no piece continuation `##…`, no `[CLS]`, no punctuation).
fn is_word(token: &str) -> bool {
    token.len() >= 2 && token.bytes().all(|byte| byte.is_ascii_lowercase())
}

/// Each replaceable word's nearest words, and how variants are drawn.
#[derive(Clone, Debug)]
pub struct Augmenter {
    settings: Augmentation,
    /// By token id, its neighbours' ids, nearest first.
    neighbours: BTreeMap<u32, Vec<u32>>,
    /// The ids of `##…` continuation pieces (a word followed by one is not whole).
    continuations: BTreeSet<u32>,
    /// The whole words, by id and by spelling.
    names: BTreeMap<u32, String>,
}

impl Augmenter {
    /// Finds, for every whole word the `examples` use, its `settings.neighbours`
    /// nearest whole words by the cosine of the rows of `table` (`[vocabulary,
    /// hidden]`, the model's word embeddings), with the tokenizer file's vocabulary.
    pub fn new(
        settings: Augmentation,
        tokenizer: &Path,
        table: &Tensor,
        examples: &Examples,
    ) -> Result<Self> {
        settings.check().map_err(Error::Invalid)?;
        let loaded = Tokenizer::from_file(tokenizer).map_err(|error| {
            Error::Invalid(format!("tokenizer {}: {error}", tokenizer.display()))
        })?;
        let vocabulary = loaded.get_vocab(false);
        let rows = table.dim(0)?;
        let mut continuations = BTreeSet::new();
        let mut names = BTreeMap::new();
        for (token, &id) in &vocabulary {
            if (id as usize) >= rows {
                continue;
            }
            if is_word(token) {
                names.insert(id, token.clone());
            } else if token.starts_with("##") {
                continuations.insert(id);
            }
        }
        let words: Vec<u32> = names.keys().copied().collect();
        let used: Vec<u32> = examples
            .ids
            .iter()
            .flatten()
            .copied()
            .filter(|id| names.contains_key(id))
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect();
        let normalised = |ids: &[u32]| -> Result<Tensor> {
            let index = Tensor::new(ids, &Device::Cpu)?;
            let rows = table.index_select(&index, 0)?;
            let norms = rows.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
            Ok(rows.broadcast_div(&(norms + 1e-12)?)?)
        };
        let candidates = normalised(&words)?;
        let count = settings.neighbours.min(words.len().saturating_sub(1));
        let mut neighbours = BTreeMap::new();
        for chunk in used.chunks(256) {
            let similarity = normalised(chunk)?.matmul(&candidates.t()?)?;
            for (&id, row) in chunk.iter().zip(similarity.to_vec2::<f32>()?) {
                let mut order: Vec<usize> = (0..row.len()).filter(|&k| words[k] != id).collect();
                let nearest = count.min(order.len());
                if nearest == 0 {
                    continue;
                }
                order.select_nth_unstable_by(nearest - 1, |&x, &y| row[y].total_cmp(&row[x]));
                order.truncate(nearest);
                order.sort_by(|&x, &y| row[y].total_cmp(&row[x]));
                neighbours.insert(id, order.into_iter().map(|k| words[k]).collect());
            }
        }
        Ok(Self {
            settings,
            neighbours,
            continuations,
            names,
        })
    }

    /// `word → neighbour, neighbour, …` for each of `words` that has neighbours (for
    /// the run's log: vocabulary, never a sentence).
    pub fn describe(&self, words: &[&str]) -> Vec<String> {
        let by_name: BTreeMap<&str, u32> = self
            .names
            .iter()
            .map(|(&id, name)| (name.as_str(), id))
            .collect();
        words
            .iter()
            .filter_map(|word| {
                let neighbours = self.neighbours.get(by_name.get(word)?)?;
                let spelled: Vec<&str> = neighbours
                    .iter()
                    .filter_map(|id| self.names.get(id).map(String::as_str))
                    .collect();
                Some(format!("{word} → {}", spelled.join(", ")))
            })
            .collect()
    }

    /// How many distinct words have neighbours.
    pub fn words(&self) -> usize {
        self.neighbours.len()
    }

    /// The neighbours of `token`, nearest first (empty for one that is not replaced).
    pub fn neighbours_of(&self, token: u32) -> &[u32] {
        self.neighbours.get(&token).map_or(&[], Vec::as_slice)
    }

    /// A variant of `ids`: each whole word with neighbours replaced, with probability
    /// `words`, by one of them drawn uniformly. The length is kept.
    pub fn variant(&self, ids: &[u32], sampler: &mut SplitMix64) -> Vec<u32> {
        let mut variant = ids.to_vec();
        for position in 0..ids.len() {
            let whole = ids
                .get(position + 1)
                .is_none_or(|next| !self.continuations.contains(next));
            let choices = self.neighbours_of(ids[position]);
            if whole && !choices.is_empty() && sampler.next_f64() < self.settings.words {
                variant[position] = choices[sampler.below(choices.len())];
            }
        }
        variant
    }

    /// The batch of the sentences at `indices`, each replaced by a variant with
    /// probability `sentences` (the label is the sentence's: a labels-only student can
    /// do no better).
    pub fn batch(
        &self,
        examples: &Examples,
        indices: &[usize],
        sampler: &mut SplitMix64,
    ) -> Result<TokenBatch> {
        let ids: Vec<Vec<u32>> = indices
            .iter()
            .map(|&index| {
                let sentence = &examples.ids[index];
                if sampler.next_f64() < self.settings.sentences {
                    self.variant(sentence, sampler)
                } else {
                    sentence.clone()
                }
            })
            .collect();
        let views: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
        let labels: Vec<usize> = indices
            .iter()
            .map(|&index| examples.labels[index])
            .collect();
        TokenBatch::new(&views, &labels, examples.padding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_words_are_lower_case_letters() {
        assert!(is_word("good"));
        assert!(!is_word("a"));
        assert!(!is_word("##ing"));
        assert!(!is_word("[CLS]"));
        assert!(!is_word("don't"));
        assert!(!is_word("Good"));
    }

    #[test]
    fn settings_outside_their_ranges_are_refused() {
        let valid = Augmentation {
            sentences: 0.5,
            words: 0.3,
            neighbours: 10,
        };
        assert!(valid.check().is_ok());
        for invalid in [
            Augmentation {
                sentences: 1.5,
                ..valid
            },
            Augmentation {
                words: -0.1,
                ..valid
            },
            Augmentation {
                neighbours: 0,
                ..valid
            },
        ] {
            assert!(invalid.check().is_err(), "{invalid:?}");
        }
    }
}
