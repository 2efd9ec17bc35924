//! The training configuration, read from a TOML file kept under version control
//! (`configs/distill-fashion.toml`): data subsets, epochs, learning rates, the
//! distillation temperature and weights.

use std::path::Path;

use serde::Deserialize;

use crate::{Error, Result};

/// Everything `veil distill` needs to train the CNN zoo.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    /// The seed of the weight initialisation and the batch order.
    pub seed: u64,
    /// Images the teacher M trains on (the first N of the 60,000): the model owner's
    /// model, trained on everything it has.
    pub teacher_images: usize,
    /// Images every student trains on (the first N): the distillation budget, the same
    /// for students with and without distillation.
    pub student_images: usize,
    /// Test images the plain accuracies are measured on (the first N of the 10,000).
    pub test_images: usize,
    /// Images per step.
    pub batch: usize,
    /// Channels of the first stage (the second has twice as many).
    pub width: usize,
    /// The teacher's epochs and learning rate (AdamW).
    pub teacher: Phase,
    /// The students' epochs and learning rate, both with and without distillation.
    pub student: Phase,
    /// The distillation loss.
    pub distillation: Distillation,
}

/// One training phase.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    /// Passes over the training images.
    pub epochs: usize,
    /// AdamW's learning rate.
    pub learning_rate: f64,
}

/// Logits distillation: weight·T²·CE(softmax(z_T/T), softmax(z_S/T)) + (1 −
/// weight)·CE(labels, z_S).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Distillation {
    /// The temperature T.
    pub temperature: f64,
    /// The soft loss's weight in [0, 1].
    pub soft_weight: f64,
}

impl DistillConfig {
    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        let invalid = |reason: String| Error::Config {
            path: path.display().to_string(),
            reason,
        };
        let config: Self = toml::from_str(&text).map_err(|error| invalid(error.to_string()))?;
        if config.batch < 2
            || config.width == 0
            || config.teacher_images.min(config.student_images) < config.batch
        {
            return Err(invalid(
                "batch must be at least 2 (batch normalisation), width positive, and teacher_images and student_images at least one batch each".into(),
            ));
        }
        if !(0.0..=1.0).contains(&config.distillation.soft_weight)
            || config.distillation.temperature <= 0.0
        {
            return Err(invalid(
                "distillation.soft_weight must lie in [0, 1] and temperature be positive".into(),
            ));
        }
        Ok(config)
    }
}

/// Everything `veil distill --task sentiment` needs: all-MiniLM-L6-v2 fine-tuned into
/// the teacher M on the binarised movie reviews, and the MPC-friendly students.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SentimentConfig {
    /// The seed of the classifier's initialisation and of the batch order.
    pub seed: u64,
    /// The padded sequence length the plans are compiled at; training truncates to it.
    pub sequence: usize,
    /// Training sentences the teacher trains on (the first N of veil's training split).
    pub teacher_sentences: usize,
    /// Training sentences every student trains on (the first N).
    pub student_sentences: usize,
    /// Sentences per step.
    pub batch: usize,
    /// The students' forms (the `--approx` syntax, e.g. `gelu=quad,softmax=2quad`).
    pub approximation: String,
    /// The teacher's fine-tuning.
    pub teacher: Phase,
    /// MPCFormer's first stage: hidden states and attention scores.
    pub layers: Phase,
    /// What the first stage matches of each layer's attention (MPCFormer's scores when
    /// absent).
    #[serde(default)]
    pub attention: AttentionTarget,
    /// MPCFormer's second stage: the logits.
    pub logits: Phase,
    /// The second stage's temperature.
    pub temperature: f64,
    /// The second stage's weight on the soft loss in [0, 1]; the rest goes to the
    /// labels' cross-entropy. 1 (the default) is MPCFormer's stage 2, logits alone.
    #[serde(default = "all_soft")]
    pub soft_weight: f64,
    /// How many times the students go through their two phases (the labels-only
    /// student through as many phases of labels).
    #[serde(default = "one_round")]
    pub rounds: usize,
    /// TinyBERT-style sentence variants in both students' steps (none when absent).
    #[serde(default)]
    pub augmentation: Option<crate::augment::Augmentation>,
}

/// What the first stage matches of each layer's attention.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttentionTarget {
    /// MPCFormer's (TinyBERT's): the mean squared error of the scaled scores q·kᵀ/√d
    /// before normalisation.
    #[default]
    Scores,
    /// MiniLM's: the KL divergence of the student's attention distributions from the
    /// teacher's, which leaves the student free to scale its scores to whatever makes
    /// its own normalisation (2Quad's (x + c)²) weigh the keys as the softmax did.
    Distributions,
}

fn one_round() -> usize {
    1
}

fn all_soft() -> f64 {
    1.0
}

impl SentimentConfig {
    /// The second stage's loss.
    pub fn distillation(&self) -> Distillation {
        Distillation {
            temperature: self.temperature,
            soft_weight: self.soft_weight,
        }
    }

    /// Reads and checks a TOML file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("reading {}", path.display()),
            source,
        })?;
        let invalid = |reason: String| Error::Config {
            path: path.display().to_string(),
            reason,
        };
        let config: Self = toml::from_str(&text).map_err(|error| invalid(error.to_string()))?;
        if config.batch == 0
            || config.sequence < 2
            || config.temperature <= 0.0
            || config.rounds == 0
        {
            return Err(invalid(
                "batch and rounds must be positive, sequence at least 2 and temperature positive"
                    .into(),
            ));
        }
        if !(0.0..=1.0).contains(&config.soft_weight) {
            return Err(invalid("soft_weight must lie in [0, 1]".into()));
        }
        if config.teacher_sentences.min(config.student_sentences) == 0 {
            return Err(invalid(
                "teacher_sentences and student_sentences must be positive".into(),
            ));
        }
        if let Some(augmentation) = &config.augmentation {
            augmentation.check().map_err(invalid)?;
        }
        veil_model::approximation::Policy::parse(&config.approximation)
            .map_err(|error| invalid(format!("approximation: {error}")))?;
        Ok(config)
    }
}
