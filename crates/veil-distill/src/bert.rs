//! BERT sequence classifiers on candle: the sentiment teacher M (all-MiniLM-L6-v2 with
//! tanh(pooler([CLS])) and a linear classifier, fine-tuned) and its MPC-friendly student
//! M̂, the same network with GELU and softmax replaced by the forms of the policy
//! (DESIGN.md §5): the quadratic GELU 0.125x² + 0.25x + 0.5 and MPCFormer's 2Quad
//! (x + c)² · mask / Σ.
//!
//! The forward pass is written out with candle's composed operations (LayerNorm from
//! its mean and variance, softmax from exp and sum), because candle's fused LayerNorm and
//! softmax have no backward. It computes what veil's executors compute on the plan
//! `veil compile --hf` makes of [`BertClassifier::export`]'s directory: the same
//! post-LayerNorm layers, padding keys masked, every token of type 0. It returns, besides
//! the logits, what MPCFormer's first distillation stage matches: every layer's hidden
//! states and every head's scaled attention scores.
//!
//! The word, position and token-type tables are frozen: the client looks its tokens up
//! in them (they are the plan's public tables), and their dense gradients would be half
//! of every step's cost.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use serde_json::{Value, json};
use veil_core::sampling::SplitMix64;
use veil_model::approximation::{GELU_QUAD, GeluForm, Policy, SoftmaxForm, TWO_QUAD_SHIFT};

use crate::{Error, Result};

/// The config.json key under which an exported student states its forms (the
/// `--approx` syntax); `veil compile --hf` reads it as the policy's default.
pub const APPROXIMATION_KEY: &str = "veil_approximation";

/// The additive penalty on padding keys' scores in the exact softmax (e^−10⁴ = 0 in f32,
/// as veil's masked scores give 0 after the softmax's clip).
const MASK_PENALTY: f64 = 10_000.0;

/// The dimensions read from a BERT config.json.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BertShape {
    /// Hidden size.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder layers.
    pub layers: usize,
    /// The feed-forward inner size.
    pub intermediate: usize,
    /// Word-table rows.
    pub vocabulary: usize,
    /// Position-table rows.
    pub positions: usize,
    /// LayerNorm ε.
    pub epsilon: f64,
}

impl BertShape {
    fn from_config(config: &Value) -> Result<Self> {
        let number = |key: &str| {
            config[key]
                .as_u64()
                .map(|value| value as usize)
                .ok_or_else(|| Error::Invalid(format!("config.json has no whole number {key:?}")))
        };
        let shape = Self {
            hidden: number("hidden_size")?,
            heads: number("num_attention_heads")?,
            layers: number("num_hidden_layers")?,
            intermediate: number("intermediate_size")?,
            vocabulary: number("vocab_size")?,
            positions: number("max_position_embeddings")?,
            epsilon: config["layer_norm_eps"].as_f64().unwrap_or(1e-12),
        };
        if shape.heads == 0 || !shape.hidden.is_multiple_of(shape.heads) {
            return Err(Error::Invalid(format!(
                "config.json: hidden size {} does not split into {} heads",
                shape.hidden, shape.heads
            )));
        }
        Ok(shape)
    }
}

/// The forms a classifier computes its GELUs and softmaxes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Forms {
    /// Exact (erf) or the quadratic.
    pub gelu: GeluForm,
    /// Exact or 2Quad.
    pub softmax: SoftmaxForm,
}

impl Forms {
    /// The teacher's: exact GELU and softmax.
    pub const EXACT: Self = Self {
        gelu: GeluForm::Exact,
        softmax: SoftmaxForm::Exact,
    };

    /// The forms of a policy (`gelu=quad,softmax=2quad`); kinds it leaves out are exact.
    /// The trainer has the exact, quadratic GELU and the exact and 2Quad softmax.
    pub fn from_policy(policy: &Policy) -> Result<Self> {
        let forms = Self {
            gelu: policy.gelu.unwrap_or(GeluForm::Exact),
            softmax: policy.softmax.unwrap_or(SoftmaxForm::Exact),
        };
        let gelu_ok = matches!(forms.gelu, GeluForm::Exact | GeluForm::Quad);
        let softmax_ok = matches!(forms.softmax, SoftmaxForm::Exact | SoftmaxForm::TwoQuad);
        if policy.relu.is_some() || !gelu_ok || !softmax_ok {
            return Err(Error::Invalid(format!(
                "the trainer's BERT students take gelu=exact|quad and softmax=exact|2quad, not {}",
                policy.describe()
            )));
        }
        Ok(forms)
    }

    /// The policy text `veil compile --approx` reads.
    pub fn describe(&self) -> String {
        format!(
            "gelu={},softmax={}",
            veil_model::approximation::gelu_name(self.gelu),
            veil_model::approximation::softmax_name(self.softmax)
        )
    }
}

/// A batch of tokenized sentences, padded to its longest.
#[derive(Clone, Debug)]
pub struct TokenBatch {
    /// Token ids `[batch, length]` (u32).
    pub ids: Tensor,
    /// 1 for real tokens, 0 for padding, `[batch, length]` (f32).
    pub mask: Tensor,
    /// The labels `[batch]` (u32).
    pub labels: Tensor,
}

impl TokenBatch {
    /// Pads `sentences` (token ids, each starting with [CLS]) with `padding` to the
    /// longest.
    pub fn new(sentences: &[&[u32]], labels: &[usize], padding: u32) -> Result<Self> {
        let length = sentences.iter().map(|ids| ids.len()).max().unwrap_or(0);
        if length == 0 || sentences.len() != labels.len() {
            return Err(Error::Invalid(
                "a batch needs at least one token and a label per sentence".into(),
            ));
        }
        let mut ids = Vec::with_capacity(sentences.len() * length);
        let mut mask = Vec::with_capacity(sentences.len() * length);
        for sentence in sentences {
            ids.extend_from_slice(sentence);
            ids.extend(std::iter::repeat_n(padding, length - sentence.len()));
            mask.extend(std::iter::repeat_n(1f32, sentence.len()));
            mask.extend(std::iter::repeat_n(0f32, length - sentence.len()));
        }
        let device = Device::Cpu;
        let shape = (sentences.len(), length);
        let labels: Vec<u32> = labels.iter().map(|&label| label as u32).collect();
        Ok(Self {
            ids: Tensor::from_vec(ids, shape, &device)?,
            mask: Tensor::from_vec(mask, shape, &device)?,
            labels: Tensor::from_vec(labels, sentences.len(), &device)?,
        })
    }
}

/// What one forward pass gives.
pub struct Forward {
    /// `[batch, labels]`.
    pub logits: Tensor,
    /// The embedding LayerNorm's output and every layer's, `[batch, length, hidden]`.
    pub hidden: Vec<Tensor>,
    /// Every layer's scaled scores q·kᵀ/√d before the mask, `[batch, heads, length,
    /// length]`.
    pub scores: Vec<Tensor>,
    /// Every layer's attention distributions (the softmax's or 2Quad's normalised
    /// weights, 0 on padding keys), `[batch, heads, length, length]`.
    pub distributions: Vec<Tensor>,
    /// Every layer's GELU input, `[batch, length, intermediate]`.
    pub pre_gelu: Vec<Tensor>,
}

/// A BERT sequence classifier and its variables, by their Hugging Face names (without
/// the `bert.` prefix; `classifier.weight` and `classifier.bias` for the head).
pub struct BertClassifier {
    /// The source's config.json, which [`BertClassifier::export`] amends.
    config: Value,
    /// Its dimensions.
    pub shape: BertShape,
    /// The forms of its GELUs and softmaxes.
    pub forms: Forms,
    /// The label names by index.
    pub labels: Vec<String>,
    variables: BTreeMap<String, Var>,
    /// Under the quadratic GELU, each layer's a·x² + b·x + c: a a fixed power of two
    /// (two rounds under MPC), b and c learned.
    quadratics: Vec<Quadratic>,
    /// How many of its training phases the model has been through (kept in
    /// config.json under [`PHASES_KEY`], so that a run can resume where it stopped).
    pub trained_phases: usize,
}

/// The config.json key of the training phases a model has completed.
pub const PHASES_KEY: &str = "veil_trained_phases";

/// One layer's GELU quadratic.
struct Quadratic {
    a: f64,
    b: Var,
    c: Var,
}

impl Quadratic {
    fn new([a, b, c]: [f64; 3]) -> Result<Self> {
        let scalar = |value: f64| Var::from_tensor(&Tensor::new(&[value as f32], &Device::Cpu)?);
        Ok(Self {
            a,
            b: scalar(b)?,
            c: scalar(c)?,
        })
    }

    fn coefficients(&self) -> Result<[f64; 3]> {
        let value =
            |var: &Var| -> Result<f64> { Ok(f64::from(var.as_tensor().to_vec1::<f32>()?[0])) };
        Ok([self.a, value(&self.b)?, value(&self.c)?])
    }
}

/// The config.json key of a student's GELU quadratics, [a, b, c] per layer.
pub const QUADRATICS_KEY: &str = "veil_gelu_quadratics";

/// The least-squares a·x² + b·x + c to GELU over `values` (x, GELU(x)), a a power of two
/// 2⁰ … 2⁻⁸ (the vertex form under MPC), b and c then exact.
fn fit_quadratic(values: &[(f64, f64)]) -> [f64; 3] {
    let count = values.len().max(1) as f64;
    let mut best = (f64::INFINITY, GELU_QUAD);
    for exponent in 0..=8 {
        let a = 2f64.powi(-exponent);
        let residual = |&(x, y): &(f64, f64)| y - a * x * x;
        let mean_x = values.iter().map(|&(x, _)| x).sum::<f64>() / count;
        let mean_r = values.iter().map(residual).sum::<f64>() / count;
        let (mut covariance, mut variance) = (0.0, 0.0);
        for value in values {
            covariance += (value.0 - mean_x) * (residual(value) - mean_r);
            variance += (value.0 - mean_x).powi(2);
        }
        let b = if variance > 0.0 {
            covariance / variance
        } else {
            0.0
        };
        let c = mean_r - b * mean_x;
        let error: f64 = values
            .iter()
            .map(|value| (residual(value) - b * value.0 - c).powi(2))
            .sum();
        if error < best.0 {
            best = (error, [a, b, c]);
        }
    }
    best.1
}

impl std::fmt::Debug for BertClassifier {
    // The shape and the variable count, never a weight.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("BertClassifier")
            .field("shape", &self.shape)
            .field("forms", &self.forms)
            .field("variables", &self.variables.len())
            .finish()
    }
}

/// Whether a variable is one of the frozen embedding tables.
fn frozen(name: &str) -> bool {
    name.starts_with("embeddings.") && name.ends_with("_embeddings.weight")
}

impl BertClassifier {
    /// Loads a BERT directory (config.json, model.safetensors). A model without a
    /// pooler or classifier gets them drawn from N(0, 0.02²) by `seed`, sized for
    /// `labels`; one with a classifier must have that many labels.
    pub fn from_directory(directory: &Path, labels: &[&str], seed: u64) -> Result<Self> {
        let read = |name: &str| {
            let path = directory.join(name);
            std::fs::read(&path).map_err(|source| Error::Io {
                what: format!("reading {}", path.display()),
                source,
            })
        };
        let config: Value = serde_json::from_slice(&read("config.json")?)?;
        let shape = BertShape::from_config(&config)?;
        let tensors =
            candle_core::safetensors::load(directory.join("model.safetensors"), &Device::Cpu)?;
        let mut variables = BTreeMap::new();
        for (name, tensor) in tensors {
            if name.ends_with("position_ids") {
                continue;
            }
            let name = name.strip_prefix("bert.").unwrap_or(&name).to_string();
            variables.insert(name, Var::from_tensor(&tensor.to_dtype(DType::F32)?)?);
        }
        let mut sampler = SplitMix64::new(seed);
        let hidden = shape.hidden;
        let mut draw = |name: &str, dims: (usize, usize)| -> Result<()> {
            if variables.contains_key(name) {
                return Ok(());
            }
            let values = sampler.normal_vec(dims.0 * dims.1, 0.02);
            let weight = Tensor::from_vec(values, dims, &Device::Cpu)?;
            variables.insert(name.into(), Var::from_tensor(&weight)?);
            let bias_name = name.replace(".weight", ".bias");
            variables.insert(bias_name, Var::zeros(dims.0, DType::F32, &Device::Cpu)?);
            Ok(())
        };
        draw("pooler.dense.weight", (hidden, hidden))?;
        draw("classifier.weight", (labels.len(), hidden))?;
        let found = variables["classifier.weight"].dims()[0];
        if found != labels.len() {
            return Err(Error::Invalid(format!(
                "{} has a classifier for {found} labels, not {}",
                directory.display(),
                labels.len()
            )));
        }
        let forms = match config.get(APPROXIMATION_KEY).and_then(Value::as_str) {
            Some(text) => Forms::from_policy(&Policy::parse(text).map_err(|error| {
                Error::Invalid(format!("config.json's {APPROXIMATION_KEY}: {error}"))
            })?)?,
            None => Forms::EXACT,
        };
        let quadratics = if forms.gelu == GeluForm::Quad {
            let stated: Vec<[f64; 3]> = match config.get(QUADRATICS_KEY) {
                Some(value) => serde_json::from_value(value.clone())?,
                None => vec![GELU_QUAD; shape.layers],
            };
            if stated.len() != shape.layers {
                return Err(Error::Invalid(format!(
                    "config.json's {QUADRATICS_KEY} has {} quadratics for {} layers",
                    stated.len(),
                    shape.layers
                )));
            }
            stated
                .into_iter()
                .map(Quadratic::new)
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let trained_phases = config.get(PHASES_KEY).and_then(Value::as_u64).unwrap_or(0) as usize;
        let model = Self {
            config,
            shape,
            forms,
            labels: labels.iter().map(|label| label.to_string()).collect(),
            variables,
            quadratics,
            trained_phases,
        };
        for layer in 0..shape.layers {
            model.variable(&format!("encoder.layer.{layer}.output.dense.weight"))?;
        }
        Ok(model)
    }

    /// A copy with its own variables (the same values) and `forms`: a student
    /// initialised from this teacher.
    pub fn student(&self, forms: Forms) -> Result<Self> {
        let mut variables = BTreeMap::new();
        for (name, variable) in &self.variables {
            variables.insert(
                name.clone(),
                Var::from_tensor(&variable.as_tensor().copy()?)?,
            );
        }
        let quadratics = if forms.gelu != GeluForm::Quad {
            Vec::new()
        } else if self.quadratics.is_empty() {
            (0..self.shape.layers)
                .map(|_| Quadratic::new(GELU_QUAD))
                .collect::<Result<_>>()?
        } else {
            self.quadratics
                .iter()
                .map(|quadratic| Quadratic::new(quadratic.coefficients()?))
                .collect::<Result<_>>()?
        };
        Ok(Self {
            config: self.config.clone(),
            shape: self.shape,
            forms,
            labels: self.labels.clone(),
            variables,
            quadratics,
            trained_phases: 0,
        })
    }

    /// Each layer's GELU quadratic (empty unless the GELUs are quadratic).
    pub fn quadratics(&self) -> Result<Vec<[f64; 3]>> {
        self.quadratics
            .iter()
            .map(Quadratic::coefficients)
            .collect()
    }

    /// Sets each layer's GELU quadratic, first to last, to the least-squares fit to GELU
    /// over the inputs this model's own GELU of that layer sees on `batch`'s real tokens
    /// (the layers before already fitted): a student that starts near its teacher
    /// rather than at MPCFormer's fixed 0.125x² + 0.25x + 0.5. Returns the fits.
    pub fn fit_gelu_quadratics(&mut self, batch: &TokenBatch) -> Result<Vec<[f64; 3]>> {
        if self.forms.gelu != GeluForm::Quad {
            return Err(Error::Invalid("only a quadratic GELU is fitted".into()));
        }
        let mask = batch.mask.to_vec2::<f32>()?;
        for layer in 0..self.shape.layers {
            let inputs = self.forward(batch)?.pre_gelu[layer].to_vec3::<f32>()?;
            let mut values = Vec::new();
            for (sentence, rows) in inputs.iter().enumerate() {
                for (token, row) in rows.iter().enumerate() {
                    if mask[sentence][token] > 0.5 {
                        values.extend(row.iter().map(|&x| f64::from(x)));
                    }
                }
            }
            let targets = Tensor::new(
                values.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                &Device::Cpu,
            )?
            .gelu_erf()?
            .to_vec1::<f32>()?;
            let pairs: Vec<(f64, f64)> = values
                .into_iter()
                .zip(targets)
                .map(|(x, y)| (x, f64::from(y)))
                .collect();
            self.quadratics[layer] = Quadratic::new(fit_quadratic(&pairs))?;
        }
        self.quadratics()
    }

    /// The variables training updates (all but the embedding tables).
    pub fn trainable(&self) -> Vec<Var> {
        let quadratics = self
            .quadratics
            .iter()
            .flat_map(|quadratic| [quadratic.b.clone(), quadratic.c.clone()]);
        self.variables
            .iter()
            .filter(|(name, _)| !frozen(name))
            .map(|(_, variable)| variable.clone())
            .chain(quadratics)
            .collect()
    }

    /// The word-embedding table `[vocabulary, hidden]` (frozen in training).
    pub fn word_embeddings(&self) -> Result<&Tensor> {
        self.variable("embeddings.word_embeddings.weight")
    }

    fn variable(&self, name: &str) -> Result<&Tensor> {
        self.variables
            .get(name)
            .map(Var::as_tensor)
            .ok_or_else(|| Error::Invalid(format!("the model has no tensor {name:?}")))
    }

    /// x·Wᵀ + b over the last dimension, W `[out, in]` as PyTorch stores it.
    fn linear(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let weight = self.variable(&format!("{name}.weight"))?;
        let bias = self.variable(&format!("{name}.bias"))?;
        let dims = x.dims().to_vec();
        let inputs = *dims.last().unwrap_or(&1);
        let rows = x.elem_count() / inputs.max(1);
        let flat = x.reshape((rows, inputs))?.matmul(&weight.t()?)?;
        let mut shape = dims;
        if let Some(last) = shape.last_mut() {
            *last = weight.dims()[0];
        }
        Ok(flat.broadcast_add(bias)?.reshape(shape)?)
    }

    /// LayerNorm over the last dimension, composed (its backward exists).
    fn layer_norm(&self, x: &Tensor, name: &str) -> Result<Tensor> {
        let (weight, bias) = (
            self.variable(&format!("{name}.weight"))?,
            self.variable(&format!("{name}.bias"))?,
        );
        Ok(candle_nn::ops::layer_norm_slow(
            x,
            weight,
            bias,
            self.shape.epsilon as f32,
        )?)
    }

    fn gelu(&self, x: &Tensor, layer: usize) -> Result<Tensor> {
        Ok(match self.quadratics.get(layer) {
            Some(Quadratic { a, b, c }) => (x.sqr()? * *a)?
                .broadcast_add(&x.broadcast_mul(b.as_tensor())?)?
                .broadcast_add(c.as_tensor())?,
            None => x.gelu_erf()?,
        })
    }

    /// The attention probabilities from scaled scores `[b, h, l, l]` and the mask `[b, l]`.
    fn probabilities(&self, scores: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, length) = mask.dims2()?;
        let keys = mask.reshape((batch, 1, 1, length))?;
        Ok(match self.forms.softmax {
            SoftmaxForm::TwoQuad => {
                let squares = (scores + TWO_QUAD_SHIFT)?.sqr()?.broadcast_mul(&keys)?;
                let sums = squares.sum_keepdim(D::Minus1)?;
                squares.broadcast_div(&sums)?
            }
            _ => {
                let penalty = ((keys - 1.0)? * MASK_PENALTY)?;
                candle_nn::ops::softmax(&scores.broadcast_add(&penalty)?, D::Minus1)?
            }
        })
    }

    /// The forward pass of a batch.
    pub fn forward(&self, batch: &TokenBatch) -> Result<Forward> {
        let (size, length) = batch.ids.dims2()?;
        let BertShape { hidden, heads, .. } = self.shape;
        if length > self.shape.positions {
            return Err(Error::Invalid(format!(
                "{length} tokens exceed the model's {} positions",
                self.shape.positions
            )));
        }
        let head = hidden / heads;
        let words = self
            .variable("embeddings.word_embeddings.weight")?
            .index_select(&batch.ids.flatten_all()?, 0)?
            .reshape((size, length, hidden))?;
        let positions = self
            .variable("embeddings.position_embeddings.weight")?
            .narrow(0, 0, length)?;
        let types = self
            .variable("embeddings.token_type_embeddings.weight")?
            .narrow(0, 0, 1)?;
        let embedded = words.broadcast_add(&positions.broadcast_add(&types)?)?;
        let mut x = self.layer_norm(&embedded, "embeddings.LayerNorm")?;
        let mut hidden_states = vec![x.clone()];
        let mut all_scores = Vec::with_capacity(self.shape.layers);
        let mut distributions = Vec::with_capacity(self.shape.layers);
        let mut pre_gelu = Vec::with_capacity(self.shape.layers);
        let by_head = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((size, length, heads, head))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        for layer in 0..self.shape.layers {
            let name = |part: &str| format!("encoder.layer.{layer}.{part}");
            let query = by_head(self.linear(&x, &name("attention.self.query"))?)?;
            let key = by_head(self.linear(&x, &name("attention.self.key"))?)?;
            let value = by_head(self.linear(&x, &name("attention.self.value"))?)?;
            let scores = (query.matmul(&key.t()?)? * (1.0 / (head as f64).sqrt()))?;
            let probabilities = self.probabilities(&scores, &batch.mask)?;
            all_scores.push(scores);
            let context = probabilities
                .matmul(&value)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((size, length, hidden))?;
            distributions.push(probabilities);
            let attended = (self.linear(&context, &name("attention.output.dense"))? + &x)?;
            let attended = self.layer_norm(&attended, &name("attention.output.LayerNorm"))?;
            let inner = self.linear(&attended, &name("intermediate.dense"))?;
            pre_gelu.push(inner.clone());
            let inner = self.gelu(&inner, layer)?;
            let output = (self.linear(&inner, &name("output.dense"))? + attended)?;
            x = self.layer_norm(&output, &name("output.LayerNorm"))?;
            hidden_states.push(x.clone());
        }
        let first = x.narrow(1, 0, 1)?.squeeze(1)?;
        let pooled = self.linear(&first, "pooler.dense")?.tanh()?;
        let logits = self.linear(&pooled, "classifier")?;
        Ok(Forward {
            logits,
            hidden: hidden_states,
            scores: all_scores,
            distributions,
            pre_gelu,
        })
    }

    /// Writes a Hugging Face `BertForSequenceClassification` directory `veil compile
    /// --hf` reads unedited: config.json (stating the forms under
    /// [`APPROXIMATION_KEY`] unless they are exact, and the GELU quadratics under
    /// [`QUADRATICS_KEY`]), model.safetensors (`bert.`-prefixed
    /// names, plus the classifier) and the tokenizer copied from `tokenizer`.
    pub fn export(&self, directory: &Path, tokenizer: &Path) -> Result<()> {
        let io = |what: String| move |source| Error::Io { what, source };
        std::fs::create_dir_all(directory)
            .map_err(io(format!("creating {}", directory.display())))?;
        let mut config = self.config.clone();
        config["architectures"] = json!(["BertForSequenceClassification"]);
        let id2label: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(index, label)| (index.to_string(), json!(label)))
            .collect();
        let label2id: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .enumerate()
            .map(|(index, label)| (label.clone(), json!(index)))
            .collect();
        config["id2label"] = Value::Object(id2label);
        config["label2id"] = Value::Object(label2id);
        if let Some(object) = config.as_object_mut() {
            object.remove(APPROXIMATION_KEY);
            object.remove(QUADRATICS_KEY);
            object.insert(PHASES_KEY.into(), json!(self.trained_phases));
            if self.forms != Forms::EXACT {
                object.insert(APPROXIMATION_KEY.into(), json!(self.forms.describe()));
            }
            if !self.quadratics.is_empty() {
                object.insert(QUADRATICS_KEY.into(), json!(self.quadratics()?));
            }
        }
        let path = directory.join("config.json");
        std::fs::write(&path, serde_json::to_string_pretty(&config)?)
            .map_err(io(format!("writing {}", path.display())))?;
        let tensors: BTreeMap<String, Tensor> = self
            .variables
            .iter()
            .map(|(name, variable)| {
                let name = if name.starts_with("classifier.") {
                    name.clone()
                } else {
                    format!("bert.{name}")
                };
                (name, variable.as_tensor().clone())
            })
            .collect();
        candle_core::safetensors::save(
            &tensors.into_iter().collect(),
            directory.join("model.safetensors"),
        )?;
        let target = directory.join("tokenizer.json");
        std::fs::copy(tokenizer, &target).map_err(io(format!(
            "copying {} to {}",
            tokenizer.display(),
            target.display()
        )))?;
        Ok(())
    }
}
