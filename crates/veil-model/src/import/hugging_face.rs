//! The Hugging Face importer: a BERT-family model directory (`config.json`,
//! `model.safetensors`, `tokenizer.json`, and for sentence-transformers models
//! `modules.json` with `1_Pooling/config.json`) becomes a text [`Plan`].
//!
//! The plan's graph takes the token embeddings `[sequence, hidden]` and the attention
//! mask `[sequence]` (both client-private) in the `client` embedding mode, or in the
//! `secure` mode the one-hot tokens `[sequence, vocabulary]`, which it multiplies with
//! the server's word table E, and the public position rows; it runs the embedding
//! LayerNorm and every
//! post-LayerNorm encoder layer (attention with padding keys masked, GELU feed-forward)
//! and ends in the masked sum over the tokens. In the `client` mode the embedding
//! tables are public ([`crate::text`]) and the client looks its tokens up; in both it
//! divides the revealed sum by its token count and L2-normalises when the pipeline says
//! so.
//!
//! A `veil_approximation` entry in config.json (a distilled student's forms, in the
//! `--approx` syntax) sets the forms the compile options leave out, and
//! `veil_gelu_quadratics` (one [a, b, c] per layer) the student's own GELU quadratics
//! where the GELUs' form is `quad`.
//!
//! Accepted: `model_type` `bert`, absolute positions, `hidden_act` `gelu` (the exact
//! erf form), tensor names with or without the `bert.` prefix, LayerNorm parameters
//! named `weight`/`bias` or `gamma`/`beta`. Pooling: mean (the sentence-transformers
//! default); a directory without `modules.json` is mean-pooled without normalisation.
//! Linear weights are read `[out, in]` and stored `[in, out]`.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::safetensors::{ShapedValues, read_safetensors_except};
use crate::encoder::{EncoderBuilder, EncoderDimensions, ParameterSource};
use crate::ir::{Graph, InputKind, Node, Op};
use crate::plan::{OutputPolicy, Plan, PublicPlan};
use crate::text::{
    EMBEDDINGS_INPUT, EmbeddingMode, MASK_INPUT, ONE_HOT_INPUT, POSITIONS_INPUT, TextFrontEnd,
    TextOutput, TextTables,
};
use crate::{Error, Result};

/// How far below its row a padding key's attention score is pushed. Under MPC the
/// softmax's comparisons must span every row's spread, penalty included, and their
/// keys grow with the bits that takes, so it is no larger than it must be: with the
/// softmax's clip at −14, a padding key contributes exactly 0 unless its score is more
/// than 50 above the row's real maximum (all-MiniLM-L6-v2's scaled scores span about
/// ±10), and the plain executor applies the same penalty.
pub const DEFAULT_MASK_PENALTY: u32 = 64;

/// Compile options for a Hugging Face directory.
#[derive(Clone, Debug, PartialEq)]
pub struct HuggingFaceOptions {
    /// The plan's name (the directory's name when absent).
    pub name: Option<String>,
    /// The padded sequence length (public).
    pub sequence: usize,
    /// Fixed-point fractional bits.
    pub fractional_bits: u32,
    /// The attention mask's penalty.
    pub mask_penalty: u32,
    /// Whether the word table is public (looked up by the client) or the server's
    /// weight (one-hot × E under MPC).
    pub embedding: EmbeddingMode,
    /// The forms of the GELUs and softmaxes (ReLUs' form does not apply).
    pub policy: crate::approximation::Policy,
}

impl Default for HuggingFaceOptions {
    fn default() -> Self {
        Self {
            name: None,
            sequence: 128,
            fractional_bits: veil_core::fixed::DEFAULT_FRACTIONAL_BITS,
            mask_penalty: DEFAULT_MASK_PENALTY,
            embedding: EmbeddingMode::Client,
            policy: Default::default(),
        }
    }
}

/// The fields of a BERT `config.json` the importer reads.
#[derive(Clone, Debug, Deserialize)]
struct BertConfig {
    model_type: Option<String>,
    hidden_size: usize,
    num_attention_heads: usize,
    num_hidden_layers: usize,
    intermediate_size: usize,
    hidden_act: String,
    layer_norm_eps: f64,
    vocab_size: usize,
    max_position_embeddings: usize,
    type_vocab_size: usize,
    pad_token_id: Option<u32>,
    position_embedding_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    /// A classification head's label names by index.
    #[serde(default)]
    id2label: BTreeMap<String, String>,
    /// The forms a distilled student was trained in (`veil distill --task sentiment`
    /// writes them, in the `--approx` syntax): the policy for the kinds the compile
    /// options leave out.
    #[serde(default)]
    veil_approximation: Option<String>,
    /// A distilled student's own GELU quadratics, [a, b, c] per layer: used where the
    /// GELUs' form is `quad`.
    #[serde(default)]
    veil_gelu_quadratics: Vec<[f64; 3]>,
}

impl BertConfig {
    /// Whether the model is a sequence classifier (pooler, tanh, classifier).
    fn classifies(&self) -> bool {
        self.architectures
            .iter()
            .any(|name| name == "BertForSequenceClassification")
    }

    /// The labels by index (`LABEL_i` where `id2label` names none).
    fn labels(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|index| {
                self.id2label
                    .get(&index.to_string())
                    .cloned()
                    .unwrap_or_else(|| format!("LABEL_{index}"))
            })
            .collect()
    }
}

#[derive(Clone, Debug, Deserialize)]
struct Module {
    #[serde(rename = "type")]
    kind: String,
    path: String,
}

#[derive(Clone, Debug, Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn invalid(reason: String) -> Error {
    Error::InvalidArchitecture { reason }
}

fn read(directory: &Path, name: &str) -> Result<Vec<u8>> {
    let path = directory.join(name);
    std::fs::read(&path).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

fn parse_json<T: for<'de> Deserialize<'de>>(directory: &Path, name: &str) -> Result<T> {
    serde_json::from_slice(&read(directory, name)?)
        .map_err(|error| invalid(format!("{}: {error}", directory.join(name).display())))
}

/// The sentence-transformers pipeline after the encoder: whether to L2-normalise.
fn pipeline(directory: &Path) -> Result<bool> {
    if !directory.join("modules.json").exists() {
        return Ok(false);
    }
    let modules: Vec<Module> = parse_json(directory, "modules.json")?;
    let mut normalize = false;
    for module in &modules {
        match module.kind.as_str() {
            "sentence_transformers.models.Transformer" => {}
            "sentence_transformers.models.Pooling" => {
                let pooling: PoolingConfig =
                    parse_json(directory, &format!("{}/config.json", module.path))?;
                let mean_only = pooling.pooling_mode_mean_tokens
                    && !pooling.pooling_mode_cls_token
                    && !pooling.pooling_mode_max_tokens
                    && !pooling.pooling_mode_mean_sqrt_len_tokens;
                if !mean_only {
                    return Err(invalid(
                        "only mean pooling is supported (1_Pooling/config.json asks for another)"
                            .into(),
                    ));
                }
            }
            "sentence_transformers.models.Normalize" => normalize = true,
            other => {
                return Err(invalid(format!(
                    "modules.json names a module veil does not run: {other}"
                )));
            }
        }
    }
    Ok(normalize)
}

/// Reads a Hugging Face BERT directory into a text plan.
pub fn compile_hugging_face(directory: &Path, options: &HuggingFaceOptions) -> Result<Plan> {
    let config: BertConfig = parse_json(directory, "config.json")?;
    if config.model_type.as_deref() != Some("bert") {
        return Err(invalid(format!(
            "config.json's model_type is {:?}; veil imports BERT-family models (\"bert\")",
            config.model_type
        )));
    }
    if config.hidden_act != "gelu" {
        return Err(invalid(format!(
            "hidden_act {:?} is not supported; veil runs the exact \"gelu\"",
            config.hidden_act
        )));
    }
    if let Some(kind) = &config.position_embedding_type
        && kind != "absolute"
    {
        return Err(invalid(format!(
            "position_embedding_type {kind:?} is not supported; veil runs \"absolute\""
        )));
    }
    let (hidden, heads) = (config.hidden_size, config.num_attention_heads);
    if heads == 0 || hidden % heads != 0 || config.type_vocab_size == 0 {
        return Err(invalid(format!(
            "hidden size {hidden} does not split into {heads} heads, or no token types"
        )));
    }
    let sequence = options.sequence;
    if sequence == 0 || sequence > config.max_position_embeddings {
        return Err(invalid(format!(
            "sequence length {sequence} must be between 1 and the model's {} positions",
            config.max_position_embeddings
        )));
    }
    let stated = match &config.veil_approximation {
        Some(text) => crate::approximation::Policy::parse(text)
            .map_err(|error| invalid(format!("config.json's veil_approximation: {error}")))?,
        None => crate::approximation::Policy::default(),
    };
    let policy = options.policy.or(stated);
    let normalize = pipeline(directory)?;
    let tokenizer = read(directory, "tokenizer.json")?;
    let tokenizer_sha256 = hex(&Sha256::digest(&tokenizer));
    let tensors = read_safetensors_except(&read(directory, "model.safetensors")?, |name| {
        name.ends_with("position_ids")
    })?;
    let mut source = HuggingFaceTensors::new(tensors);

    let word = source.take(
        "embeddings.word_embeddings.weight",
        &[config.vocab_size, hidden],
    )?;
    let positions = source.take(
        "embeddings.position_embeddings.weight",
        &[config.max_position_embeddings, hidden],
    )?;
    let types = source.take(
        "embeddings.token_type_embeddings.weight",
        &[config.type_vocab_size, hidden],
    )?;
    // Every token has type 0: its row is folded into the positions.
    let position = positions[..sequence * hidden]
        .chunks(hidden)
        .flat_map(|row| row.iter().zip(&types[..hidden]).map(|(p, t)| p + t))
        .collect();
    // A classifier's label count, from its weight `[labels, hidden]`.
    let labels = match source.tensors.get("classifier.weight") {
        Some((shape, _)) if shape.len() == 2 && shape[0] > 0 => shape[0],
        _ if config.classifies() => {
            return Err(Error::MissingParameter {
                name: "classifier.weight".into(),
            });
        }
        _ => 0,
    };
    let mut builder;
    let mut current;
    let mask;
    let tables = match options.embedding {
        EmbeddingMode::Client => {
            let inputs = vec![
                Node::input(EMBEDDINGS_INPUT, vec![sequence, hidden], InputKind::Real),
                Node::input(MASK_INPUT, vec![sequence], InputKind::AttentionMask),
            ];
            mask = 1;
            builder = EncoderBuilder::new(inputs, &mut source, config.layer_norm_eps, policy);
            current = 0;
            TextTables { word, position }
        }
        EmbeddingMode::Secure => {
            let vocabulary = config.vocab_size;
            let inputs = vec![
                Node::input(ONE_HOT_INPUT, vec![sequence, vocabulary], InputKind::Real),
                Node::input(POSITIONS_INPUT, vec![sequence, hidden], InputKind::Real),
                Node::input(MASK_INPUT, vec![sequence], InputKind::AttentionMask),
            ];
            mask = 2;
            builder = EncoderBuilder::new(inputs, &mut source, config.layer_norm_eps, policy);
            // The lookup: one-hot rows times E ([vocabulary, hidden] is already the
            // [in, out] layout), E the server's weight.
            let looked_up =
                builder.linear_without_bias("embeddings.word", 0, (vocabulary, hidden), word);
            current = builder.push("embeddings.sum", Op::Add, vec![looked_up, 1]);
            TextTables {
                word: Vec::new(),
                position,
            }
        }
    };
    current = builder.layer_norm("embeddings.layer_norm", current, hidden)?;
    let dimensions = EncoderDimensions {
        sequence,
        hidden,
        heads,
        feed_forward: config.intermediate_size,
    };
    let quadratics = stated_quadratics(&config, policy)?;
    for layer in 0..config.num_hidden_layers {
        let gelu = quadratics
            .get(layer)
            .map(|&[a, b, c]| Op::Quadratic { a, b, c });
        current = builder.layer(
            &format!("layer.{layer}."),
            current,
            dimensions,
            (Some((mask, options.mask_penalty)), gelu),
        )?;
    }
    let (output, text_output) = if config.classifies() {
        // BertForSequenceClassification: tanh(pooler(h[CLS])), then the classifier.
        let first = builder.push("pooler.first_token", Op::FirstToken, vec![current]);
        let pooled = builder.linear("pooler.dense", first, hidden, hidden)?;
        let pooled = builder.push("pooler.tanh", Op::Tanh { bits: 64 }, vec![pooled]);
        let logits = builder.linear("classifier", pooled, hidden, labels)?;
        (
            logits,
            TextOutput::Classification {
                labels: config.labels(labels),
            },
        )
    } else {
        let output = builder.push("pooling", Op::MaskedSum, vec![current, mask]);
        (output, TextOutput::MeanPooled { normalize })
    };
    let (nodes, parameters, weights) = (builder.nodes, builder.parameters, builder.weights);
    source.check_all_used(config.classifies())?;

    let name = options.name.clone().unwrap_or_else(|| {
        directory
            .file_name()
            .map_or("model".into(), |name| name.to_string_lossy().into_owned())
    });
    let public = PublicPlan {
        name,
        fractional_bits: options.fractional_bits,
        approximation: super::architecture::describe_forms(&nodes),
        output_policy: OutputPolicy::Logits,
        graph: Graph { nodes, output },
        parameters,
        input_bound: None,
        text: Some(TextFrontEnd {
            sequence,
            vocabulary: config.vocab_size,
            hidden,
            padding_id: config.pad_token_id.unwrap_or(0),
            embedding: options.embedding,
            output: text_output,
            tokenizer_sha256,
            tables_sha256: tables.sha256_hex(),
        }),
    };
    Plan::new(public, weights)?.with_text_tables(tables)
}

/// The per-layer GELU quadratics config.json states, when the GELUs' form is `quad`
/// (otherwise none: `--approx gelu=exact` turns a student back into GELUs).
fn stated_quadratics(
    config: &BertConfig,
    policy: crate::approximation::Policy,
) -> Result<Vec<[f64; 3]>> {
    let quadratics = &config.veil_gelu_quadratics;
    if quadratics.is_empty() || policy.gelu != Some(crate::approximation::GeluForm::Quad) {
        return Ok(Vec::new());
    }
    if quadratics.len() != config.num_hidden_layers
        || quadratics.iter().flatten().any(|value| !value.is_finite())
    {
        return Err(invalid(format!(
            "config.json's veil_gelu_quadratics must hold one finite [a, b, c] per layer ({} layers), not {}",
            config.num_hidden_layers,
            quadratics.len()
        )));
    }
    Ok(quadratics.clone())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// The model file's tensors, handed out by veil's parameter names.
struct HuggingFaceTensors {
    tensors: BTreeMap<String, ShapedValues>,
    /// `"bert."` when the file's names carry it (task models), else empty.
    prefix: &'static str,
}

impl HuggingFaceTensors {
    fn new(tensors: BTreeMap<String, ShapedValues>) -> Self {
        let prefix = if tensors.contains_key("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        Self { tensors, prefix }
    }

    /// Removes a tensor, checking its shape (the classifier's names carry no prefix).
    fn take(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let prefix = if name.starts_with("classifier.") {
            ""
        } else {
            self.prefix
        };
        let full = format!("{prefix}{name}");
        let (found, values) = self
            .tensors
            .remove(&full)
            .ok_or_else(|| Error::MissingParameter { name: full.clone() })?;
        if found != shape {
            return Err(Error::ParameterShape {
                name: full,
                expected: shape.to_vec(),
                found,
            });
        }
        Ok(values)
    }

    /// The first of the candidate names present.
    fn take_any(&mut self, names: [String; 2], shape: &[usize]) -> Result<Vec<f32>> {
        let [first, second] = names;
        if self
            .tensors
            .contains_key(&format!("{}{second}", self.prefix))
        {
            self.take(&second, shape)
        } else {
            self.take(&first, shape)
        }
    }

    /// Every tensor was used: only an embedding model's pooler may be left over.
    fn check_all_used(&self, classifies: bool) -> Result<()> {
        let pooler = format!("{}pooler.", self.prefix);
        match self
            .tensors
            .keys()
            .find(|name| classifies || !name.starts_with(&pooler))
        {
            None => Ok(()),
            Some(name) => Err(invalid(format!(
                "model.safetensors holds {name:?}, which no part of a BERT encoder reads"
            ))),
        }
    }

    /// The Hugging Face name of veil's parameter `name` (`layer.3.attention.query` →
    /// `encoder.layer.3.attention.self.query`).
    fn file_name(name: &str) -> Result<String> {
        match name {
            "embeddings.layer_norm" => return Ok("embeddings.LayerNorm".into()),
            "pooler.dense" | "classifier" => return Ok(name.into()),
            _ => {}
        }
        let unknown = || invalid(format!("no Hugging Face tensor for {name:?}"));
        let rest = name.strip_prefix("layer.").ok_or_else(unknown)?;
        let (layer, part) = rest.split_once('.').ok_or_else(unknown)?;
        let part = match part {
            "attention.query" => "attention.self.query",
            "attention.key" => "attention.self.key",
            "attention.value" => "attention.self.value",
            "attention.output" => "attention.output.dense",
            "attention.layer_norm" => "attention.output.LayerNorm",
            "feed_forward.inner" => "intermediate.dense",
            "feed_forward.output" => "output.dense",
            "output.layer_norm" => "output.LayerNorm",
            _ => return Err(unknown()),
        };
        Ok(format!("encoder.layer.{layer}.{part}"))
    }
}

impl ParameterSource for HuggingFaceTensors {
    fn linear(
        &mut self,
        name: &str,
        inputs: usize,
        outputs: usize,
    ) -> Result<(Vec<f32>, Vec<f32>)> {
        let file = Self::file_name(name)?;
        // PyTorch's [out, in], stored [in, out].
        let weight = self.take(&format!("{file}.weight"), &[outputs, inputs])?;
        let mut transposed = vec![0f32; weight.len()];
        for (row, values) in weight.chunks(inputs).enumerate() {
            for (column, &value) in values.iter().enumerate() {
                transposed[column * outputs + row] = value;
            }
        }
        let bias = self.take(&format!("{file}.bias"), &[outputs])?;
        Ok((transposed, bias))
    }

    fn layer_norm(&mut self, name: &str, features: usize) -> Result<(Vec<f32>, Vec<f32>)> {
        let file = Self::file_name(name)?;
        let gamma = self.take_any(
            [format!("{file}.weight"), format!("{file}.gamma")],
            &[features],
        )?;
        let beta = self.take_any(
            [format!("{file}.bias"), format!("{file}.beta")],
            &[features],
        )?;
        Ok((gamma, beta))
    }
}
