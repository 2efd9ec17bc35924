//! The configs under version control load, and bad ones are refused with the reason.

use std::path::{Path, PathBuf};

use veil_distill::config::{DistillConfig, SentimentConfig};

fn configs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs")
}

#[test]
fn the_committed_configs_load() {
    for name in ["distill-fashion.toml", "distill-fashion-long.toml"] {
        DistillConfig::load(&configs().join(name)).unwrap();
    }
    let sentiment = SentimentConfig::load(&configs().join("distill-sentiment.toml")).unwrap();
    assert!((0.0..=1.0).contains(&sentiment.soft_weight));
    assert_eq!(
        sentiment.augmentation, None,
        "the recipe trains on the sentences"
    );
    let variants =
        SentimentConfig::load(&configs().join("distill-sentiment-variants.toml")).unwrap();
    assert!(variants.augmentation.is_some());
    assert_eq!(
        (variants.seed, variants.student_sentences),
        (sentiment.seed, sentiment.student_sentences),
        "the variants' run differs from the recipe in its rounds and variants only"
    );
    let distributions =
        SentimentConfig::load(&configs().join("distill-sentiment-distributions.toml")).unwrap();
    assert_eq!(
        distributions.attention,
        veil_distill::config::AttentionTarget::Distributions
    );
    assert_eq!(
        SentimentConfig {
            attention: sentiment.attention,
            rounds: sentiment.rounds,
            ..distributions
        },
        sentiment,
        "the distributions' run differs from the recipe in its rounds and attention only"
    );
}

#[test]
fn sentence_variants_out_of_range_are_refused() {
    let committed =
        std::fs::read_to_string(configs().join("distill-sentiment-variants.toml")).unwrap();
    let path =
        std::env::temp_dir().join(format!("veil-variants-config-{}.toml", std::process::id()));
    for (line, bad) in [
        ("sentences = 0.5", "sentences = 2.0"),
        ("words = 0.3", "words = -0.3"),
        ("neighbours = 8", "neighbours = 0"),
    ] {
        assert!(committed.contains(line), "{line}");
        std::fs::write(&path, committed.replace(line, bad)).unwrap();
        let error = SentimentConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("augmentation."), "{bad}: {error}");
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_sentiment_soft_weight_defaults_to_mpcformer_and_is_checked() {
    let committed = std::fs::read_to_string(configs().join("distill-sentiment.toml")).unwrap();
    let without: String = committed
        .lines()
        .filter(|line| !line.starts_with("soft_weight"))
        .map(|line| format!("{line}\n"))
        .collect();
    let path =
        std::env::temp_dir().join(format!("veil-sentiment-config-{}.toml", std::process::id()));
    std::fs::write(&path, &without).unwrap();
    let config = SentimentConfig::load(&path).unwrap();
    assert_eq!(config.soft_weight, 1.0);
    assert_eq!(config.distillation().temperature, config.temperature);
    for bad in ["-0.5", "1.5"] {
        std::fs::write(&path, format!("soft_weight = {bad}\n{without}")).unwrap();
        let error = SentimentConfig::load(&path).unwrap_err().to_string();
        assert!(error.contains("soft_weight must lie in [0, 1]"), "{error}");
    }
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn the_first_stage_matches_scores_unless_the_config_says_distributions() {
    use veil_distill::config::AttentionTarget;
    let committed = std::fs::read_to_string(configs().join("distill-sentiment.toml")).unwrap();
    let path =
        std::env::temp_dir().join(format!("veil-attention-config-{}.toml", std::process::id()));
    std::fs::write(&path, &committed).unwrap();
    assert_eq!(
        SentimentConfig::load(&path).unwrap().attention,
        AttentionTarget::Scores,
        "MPCFormer's target when the config names none"
    );
    std::fs::write(&path, format!("attention = \"distributions\"\n{committed}")).unwrap();
    assert_eq!(
        SentimentConfig::load(&path).unwrap().attention,
        AttentionTarget::Distributions
    );
    std::fs::write(&path, format!("attention = \"probabilities\"\n{committed}")).unwrap();
    let error = SentimentConfig::load(&path).unwrap_err().to_string();
    assert!(
        error.contains("probabilities") && error.contains("scores"),
        "the error names the value and the choices: {error}"
    );
    std::fs::remove_file(&path).unwrap();
}
