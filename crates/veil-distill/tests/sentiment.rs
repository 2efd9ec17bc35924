//! The BERT trainer on a tiny random BERT (hidden 16, 2 layers) with all-MiniLM-L6-v2's
//! tokenizer (fetched by `scripts/fetch minilm`; skipped with that message when absent)
//! and a synthetic two-label task: every trainable variable gets a gradient in both
//! forms, the teacher's loss and both distillation stages' losses fall, and a distilled
//! student exported as a Hugging Face directory compiles with its stated forms, agrees
//! with candle in veil's plain executor, and runs securely within the documented bound.
//! Sentence variants replace whole words by their nearest words only, keep lengths and
//! special tokens, and the first stage still learns on them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use veil_core::sampling::SplitMix64;
use veil_distill::augment::{Augmentation, Augmenter};
use veil_distill::bert::{BertClassifier, Forms};
use veil_distill::config::{AttentionTarget, Distillation, Phase};
use veil_distill::sentiment::{Examples, Objective, attention_divergence, logits, train};
use veil_model::approximation::{GeluForm, SoftmaxForm};

const HIDDEN: usize = 16;
const INNER: usize = 32;
const LAYERS: usize = 2;
const VOCABULARY: usize = 30522;
const POSITIONS: usize = 64;

const STUDENT: Forms = Forms {
    gelu: GeluForm::Quad,
    softmax: SoftmaxForm::TwoQuad,
};

/// Every training phase on the fixture: six epochs at 3·10⁻³ in batches of 8, enough
/// for each loss to fall on 32 sentences of a tiny BERT.
const FIXTURE_PHASE: (Phase, usize) = (
    Phase {
        epochs: 6,
        learning_rate: 3e-3,
    },
    8,
);

/// A random BERT directory with MiniLM's tokenizer, or `None` when it is not fetched.
fn tiny_bert(name: &str) -> Option<PathBuf> {
    let Some(minilm) = veil_data::fetched::minilm_directory() else {
        eprintln!(
            "SKIPPED: all-MiniLM-L6-v2's tokenizer is not fetched; {}",
            veil_data::fetched::FETCH_HINT
        );
        return None;
    };
    let directory = std::env::temp_dir().join(format!("veil-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::copy(
        minilm.join("tokenizer.json"),
        directory.join("tokenizer.json"),
    )
    .unwrap();
    let config = serde_json::json!({
        "model_type": "bert", "architectures": ["BertModel"], "hidden_act": "gelu",
        "hidden_size": HIDDEN, "num_attention_heads": 2, "num_hidden_layers": LAYERS,
        "intermediate_size": INNER, "vocab_size": VOCABULARY,
        "max_position_embeddings": POSITIONS, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "pad_token_id": 0, "position_embedding_type": "absolute"
    });
    std::fs::write(directory.join("config.json"), config.to_string()).unwrap();
    let mut tensors = RandomTensors {
        sampler: SplitMix64::new(3),
        tensors: HashMap::new(),
    };
    tensors.add(
        "embeddings.word_embeddings.weight",
        &[VOCABULARY, HIDDEN],
        0.5,
        0.0,
    );
    tensors.add(
        "embeddings.position_embeddings.weight",
        &[POSITIONS, HIDDEN],
        0.1,
        0.0,
    );
    tensors.add(
        "embeddings.token_type_embeddings.weight",
        &[2, HIDDEN],
        0.1,
        0.0,
    );
    tensors.layer_norm("embeddings.LayerNorm");
    for layer in 0..LAYERS {
        let prefix = format!("encoder.layer.{layer}");
        for (part, outputs, inputs) in [
            ("attention.self.query", HIDDEN, HIDDEN),
            ("attention.self.key", HIDDEN, HIDDEN),
            ("attention.self.value", HIDDEN, HIDDEN),
            ("attention.output.dense", HIDDEN, HIDDEN),
            ("intermediate.dense", INNER, HIDDEN),
            ("output.dense", HIDDEN, INNER),
        ] {
            let sigma = 1.0 / (inputs as f32).sqrt();
            tensors.add(
                &format!("{prefix}.{part}.weight"),
                &[outputs, inputs],
                sigma,
                0.0,
            );
            tensors.add(&format!("{prefix}.{part}.bias"), &[outputs], 0.05, 0.0);
        }
        tensors.layer_norm(&format!("{prefix}.attention.output.LayerNorm"));
        tensors.layer_norm(&format!("{prefix}.output.LayerNorm"));
    }
    let tensors = tensors.tensors;
    candle_core::safetensors::save(&tensors, directory.join("model.safetensors")).unwrap();
    Some(directory)
}

/// Tensors drawn from N(mean, σ²), by name.
struct RandomTensors {
    sampler: SplitMix64,
    tensors: HashMap<String, Tensor>,
}

impl RandomTensors {
    fn add(&mut self, name: &str, shape: &[usize], sigma: f32, mean: f32) {
        let count = shape.iter().product();
        let values: Vec<f32> = self
            .sampler
            .normal_vec(count, sigma)
            .into_iter()
            .map(|value| value + mean)
            .collect();
        let tensor = Tensor::from_vec(values, shape, &Device::Cpu).unwrap();
        self.tensors.insert(name.into(), tensor);
    }

    /// γ near 1, β near 0.
    fn layer_norm(&mut self, name: &str) {
        self.add(&format!("{name}.weight"), &[HIDDEN], 0.05, 1.0);
        self.add(&format!("{name}.bias"), &[HIDDEN], 0.05, 0.0);
    }
}

/// Sentences whose label is whether a positive word occurs.
fn sentences(count: usize) -> Vec<(String, usize)> {
    let positive = ["great", "wonderful", "moving", "funny"];
    let negative = ["dull", "awful", "tedious", "boring"];
    let fillers = [
        "the film is",
        "a story that feels",
        "its ending was",
        "honestly",
    ];
    (0..count)
        .map(|index| {
            let label = index % 2;
            let words = if label == 1 { &positive } else { &negative };
            let text = format!("{} {}", fillers[(index / 2) % 4], words[(index / 8) % 4]);
            (text, label)
        })
        .collect()
}

fn examples(directory: &Path, count: usize) -> Examples {
    Examples::tokenize(&directory.join("tokenizer.json"), &sentences(count), 16).unwrap()
}

fn falls(losses: &[Vec<f64>]) -> bool {
    let (first, last) = (losses[0][0], *losses[0].last().unwrap());
    last < first
}

#[test]
fn every_trainable_variable_gets_a_gradient_in_both_forms() {
    let Some(directory) = tiny_bert("bert-gradients") else {
        return;
    };
    let teacher = BertClassifier::from_directory(&directory, &["no", "yes"], 1).unwrap();
    let data = examples(&directory, 8);
    let batch = data.batch(&(0..8).collect::<Vec<_>>()).unwrap();
    for forms in [Forms::EXACT, STUDENT] {
        let model = teacher.student(forms).unwrap();
        let forward = model.forward(&batch).unwrap();
        assert_eq!(forward.hidden.len(), LAYERS + 1);
        assert_eq!(forward.scores.len(), LAYERS);
        let loss = candle_nn::loss::cross_entropy(&forward.logits, &batch.labels).unwrap();
        let gradients = loss.backward().unwrap();
        let trainable = model.trainable();
        // Per layer 6 linears and 2 LayerNorms (2 tensors each), the embedding
        // LayerNorm, the pooler and the classifier; the three tables are frozen. A
        // quadratic GELU adds its b and c per layer.
        let quadratics = if forms == STUDENT { 2 * LAYERS } else { 0 };
        assert_eq!(trainable.len(), LAYERS * 16 + 2 + 4 + quadratics);
        for variable in trainable {
            let gradient = gradients
                .get(variable.as_tensor())
                .unwrap_or_else(|| panic!("{forms:?}: a variable without a gradient"));
            let size = gradient.abs().unwrap().sum_all().unwrap();
            assert!(
                size.to_scalar::<f32>().unwrap() > 0.0,
                "{forms:?}: a zero gradient"
            );
        }
    }
    std::fs::remove_dir_all(&directory).ok();
}

#[test]
fn training_and_both_distillation_stages_reduce_their_losses_and_the_student_runs_securely() {
    let Some(directory) = tiny_bert("bert-distill") else {
        return;
    };
    let data = examples(&directory, 32);
    let teacher = BertClassifier::from_directory(&directory, &["no", "yes"], 1).unwrap();
    let losses = train(
        &teacher,
        &data,
        None,
        FIXTURE_PHASE,
        Objective::Labels,
        (1, "teacher", true),
    );
    assert!(falls(&[losses.unwrap()]), "the teacher's loss falls");
    let mut student = teacher.student(STUDENT).unwrap();
    let fitted = student
        .fit_gelu_quadratics(&data.batch(&(0..16).collect::<Vec<_>>()).unwrap())
        .unwrap();
    for [a, _, _] in &fitted {
        assert!(
            a.log2().fract() == 0.0 && *a > 0.0,
            "a = {a} is a power of two"
        );
    }
    let layers = train(
        &student,
        &data,
        None,
        FIXTURE_PHASE,
        Objective::Layers(&teacher, AttentionTarget::Scores),
        (2, "layers", true),
    );
    assert!(falls(&[layers.unwrap()]), "the first stage's loss falls");
    let logits_stage = train(
        &student,
        &data,
        None,
        FIXTURE_PHASE,
        Objective::Logits(
            &teacher,
            Distillation {
                temperature: 2.0,
                soft_weight: 0.5,
            },
        ),
        (3, "logits", true),
    );
    assert!(
        falls(&[logits_stage.unwrap()]),
        "the second stage's loss falls"
    );

    let exported = directory.join("student");
    student.trained_phases = 2;
    student
        .export(&exported, &directory.join("tokenizer.json"))
        .unwrap();
    let reloaded = BertClassifier::from_directory(&exported, &["no", "yes"], 9).unwrap();
    assert_eq!(
        reloaded.forms, STUDENT,
        "the exported config states the forms"
    );
    assert_eq!(
        reloaded.trained_phases, 2,
        "and the phases completed, to resume from"
    );
    assert_eq!(
        logits(&reloaded, &examples(&directory, 4)).unwrap(),
        logits(&student, &examples(&directory, 4)).unwrap(),
        "the reloaded student is the same function"
    );
    let options = veil_model::import::HuggingFaceOptions {
        sequence: 16,
        ..Default::default()
    };
    let labelled = sentences(4);
    let sample: Vec<&str> = labelled.iter().map(|(text, _)| text.as_str()).collect();
    let (plan, encoder, _) =
        veil_text::compile_calibrated(&exported, &options, &sample, 8.0).unwrap();
    let ops: Vec<&str> = plan
        .public
        .graph
        .nodes
        .iter()
        .map(|node| node.op.name())
        .collect();
    assert!(
        ops.contains(&"quadratic") && ops.contains(&"quad_softmax"),
        "{ops:?}"
    );
    assert!(
        !ops.contains(&"gelu_table") && !ops.contains(&"softmax"),
        "{ops:?}"
    );
    assert_eq!(plan.public.approximation, "quadratic,softmax=2quad");
    // The plan's GELUs are the student's own trained quadratics, layer by layer.
    let planned: Vec<[f64; 3]> = plan
        .public
        .graph
        .nodes
        .iter()
        .filter_map(|node| match node.op {
            veil_model::ir::Op::Quadratic { a, b, c } => Some([a, b, c]),
            _ => None,
        })
        .collect();
    let trained = student.quadratics().unwrap();
    assert_eq!(planned.len(), LAYERS);
    for (plan_row, trained_row) in planned.iter().zip(&trained) {
        for (p, t) in plan_row.iter().zip(trained_row) {
            assert!(
                (p - t).abs() <= 1e-6 * (1.0 + t.abs()),
                "plan {p}, trained {t}"
            );
        }
    }
    assert_ne!(planned, fitted, "training moved b and c");

    let expected = logits(&student, &examples(&directory, 4)).unwrap();
    let mut worst_bound: f64 = 0.0;
    for (index, sentence) in sample.iter().enumerate() {
        let encoded = encoder.encode(&[sentence]).unwrap();
        let plain = veil_model::plain::run_plain(&plan, &encoded.inputs, 1).unwrap();
        for (p, e) in plain.iter().zip(&expected[index]) {
            assert!(
                (p - e).abs() <= 1e-3 * (1.0 + e.abs()),
                "plain {p}, candle {e}"
            );
        }
        worst_bound = worst_bound.max(veil_exec::error_bound(&plan, &encoded.inputs).unwrap());
    }
    assert!(worst_bound.is_finite(), "bound {worst_bound}");
    let report = veil_serve::embed::embed_locally(&plan, &encoder, &sample, false).unwrap();
    for (index, secure) in report.sentences.iter().enumerate() {
        for (s, e) in secure.embedding.iter().zip(&expected[index]) {
            let error = f64::from((s - e).abs());
            assert!(
                error <= worst_bound + 1e-3,
                "secure {s}, candle {e}: above the bound {worst_bound}"
            );
        }
    }
    std::fs::remove_dir_all(&directory).ok();
}

#[test]
fn variants_replace_whole_words_by_their_nearest_and_the_first_stage_learns_on_them() {
    let Some(directory) = tiny_bert("bert-variants") else {
        return;
    };
    let tokenizer_path = directory.join("tokenizer.json");
    let tokenizer = tokenizers::Tokenizer::from_file(&tokenizer_path).unwrap();
    let id = |word: &str| tokenizer.token_to_id(word).unwrap();
    let data = examples(&directory, 32);
    // A table where "terrific" points as "great" does (twice as long): its nearest.
    let mut sampler = SplitMix64::new(11);
    let mut rows = sampler.normal_vec(VOCABULARY * 8, 1.0);
    let (great, terrific) = (id("great") as usize, id("terrific") as usize);
    for k in 0..8 {
        rows[terrific * 8 + k] = 2.0 * rows[great * 8 + k];
    }
    let table = Tensor::from_vec(rows, (VOCABULARY, 8), &Device::Cpu).unwrap();
    let every = Augmentation {
        sentences: 1.0,
        words: 1.0,
        neighbours: 3,
    };
    let augmenter = Augmenter::new(every, &tokenizer_path, &table, &data).unwrap();
    assert_eq!(augmenter.neighbours_of(id("great"))[0], id("terrific"));
    assert_eq!(augmenter.neighbours_of(id("great")).len(), 3);
    assert!(augmenter.describe(&["great"])[0].starts_with("great → terrific, "));
    assert!(augmenter.neighbours_of(id("[CLS]")).is_empty());
    assert!(augmenter.words() > 0);
    let none = Augmenter::new(
        Augmentation {
            words: 0.0,
            ..every
        },
        &tokenizer_path,
        &table,
        &data,
    )
    .unwrap();
    let mut variants = SplitMix64::new(5);
    let mut changed = 0;
    for sentence in &data.ids {
        let variant = augmenter.variant(sentence, &mut variants);
        assert_eq!(variant.len(), sentence.len(), "a variant keeps its length");
        for (position, (&ours, &theirs)) in sentence.iter().zip(&variant).enumerate() {
            let neighbours = augmenter.neighbours_of(ours);
            let piece_follows = sentence.get(position + 1).is_some_and(|&next| {
                tokenizer
                    .id_to_token(next)
                    .is_some_and(|token| token.starts_with("##"))
            });
            if neighbours.is_empty() || piece_follows {
                assert_eq!(ours, theirs, "a token that is not a whole word stays");
            } else {
                assert!(
                    neighbours.contains(&theirs),
                    "word {position} became a neighbour"
                );
                changed += 1;
            }
        }
        assert_eq!(&none.variant(sentence, &mut variants), sentence);
    }
    assert!(changed > 0, "some words were replaced");

    let teacher = BertClassifier::from_directory(&directory, &["no", "yes"], 1).unwrap();
    let student = teacher.student(STUDENT).unwrap();
    let own = Augmenter::new(
        Augmentation {
            sentences: 0.5,
            words: 0.3,
            neighbours: 5,
        },
        &tokenizer_path,
        teacher.word_embeddings().unwrap(),
        &data,
    )
    .unwrap();
    let layers = train(
        &student,
        &data,
        Some(&own),
        FIXTURE_PHASE,
        Objective::Layers(&teacher, AttentionTarget::Scores),
        (2, "layers on variants", true),
    );
    assert!(
        falls(&[layers.unwrap()]),
        "the first stage's loss falls on variants"
    );
    std::fs::remove_dir_all(&directory).ok();
}

#[test]
fn the_attention_divergence_is_kl_over_real_queries_and_the_first_stage_learns_by_it() {
    // One sentence, two heads, three tokens of which the last is padding. Real query
    // rows: teacher (½, ½, 0) against student (¼, ¾, 0) in head 0, KL = ½·ln(4/3);
    // equal rows in head 1, KL 0; the student's weight on the padding key (teacher 0)
    // and the padded query's rows, however far apart, add nothing.
    let teacher = [
        [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]],
        [[0.2, 0.8, 0.0], [0.9, 0.1, 0.0], [1.0, 0.0, 0.0]],
    ];
    let student = [
        [[0.25, 0.75, 0.0], [0.25, 0.75, 0.0], [0.0, 0.0, 1.0]],
        [[0.2, 0.8, 0.0], [0.6, 0.1, 0.3], [0.0, 1.0, 0.0]],
    ];
    let tensor = |rows: [[[f32; 3]; 3]; 2]| {
        let values: Vec<f32> = rows.iter().flatten().flatten().copied().collect();
        Tensor::from_vec(values, (1, 2, 3, 3), &Device::Cpu).unwrap()
    };
    let queries = Tensor::from_vec(vec![1f32, 1.0, 0.0], (1, 3), &Device::Cpu).unwrap();
    let divergence = |a, b| {
        attention_divergence(&tensor(a), &tensor(b), &queries)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap() as f64
    };
    // Head 1's second row: 0.9·ln(0.9/0.6) + 0.1·ln(0.1/0.1).
    let expected = (2.0 * 0.5 * (4.0f64 / 3.0).ln() + 0.9 * 1.5f64.ln()) / 4.0;
    let found = divergence(student, teacher);
    assert!(
        (found - expected).abs() < 1e-6,
        "{found} against {expected}"
    );
    assert!(
        divergence(teacher, teacher).abs() < 1e-7,
        "none from itself"
    );

    let Some(directory) = tiny_bert("bert-distributions") else {
        return;
    };
    let data = examples(&directory, 32);
    let teacher = BertClassifier::from_directory(&directory, &["no", "yes"], 1).unwrap();
    let student = teacher.student(STUDENT).unwrap();
    let layers = train(
        &student,
        &data,
        None,
        FIXTURE_PHASE,
        Objective::Layers(&teacher, AttentionTarget::Distributions),
        (2, "layers by distributions", true),
    );
    assert!(
        falls(&[layers.unwrap()]),
        "the first stage's loss falls when it matches distributions"
    );
    std::fs::remove_dir_all(&directory).ok();
}
