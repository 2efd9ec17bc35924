//! `veil compile --hf` and `veil embed`: text plans from Hugging Face directories, and
//! sentence embeddings computed securely.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use veil_model::import::HuggingFaceOptions;
use veil_model::text::{EmbeddingMode, TextFrontEnd, TextOutput};
use veil_model::{Plan, PublicPlan};
use veil_net::Role;
use veil_serve::bench::CALIBRATION_HEADROOM;
use veil_serve::embed::{SentenceEmbedding, embed_locally, embed_sentences};
use veil_serve::roles::{Client, ClientOptions};
use veil_text::{CALIBRATION_SENTENCES, TextEncoder, compile_calibrated};

use crate::arguments::EmbedArguments;
use crate::party::transport;
use crate::read_text;

/// Compiles a Hugging Face directory at `sequence` tokens, its comparison widths
/// calibrated on `calibration` (a file of sentences) or on veil's public sentences.
/// Returns the plan and the client's encoder for it.
pub(crate) fn compile_text_plan(
    directory: &Path,
    (sequence, embedding, approx): (usize, &str, &str),
    calibration: Option<&Path>,
) -> Result<(Plan, TextEncoder)> {
    let policy = veil_model::approximation::Policy::parse(approx)?;
    if policy.relu.is_some() {
        bail!(
            "a BERT model has no ReLU for relu=… to set; its activations are gelu=… and softmax=…"
        );
    }
    let embedding = match embedding {
        "client" => EmbeddingMode::Client,
        "secure" => EmbeddingMode::Secure,
        other => bail!("unknown embedding mode {other:?} (have: client, secure)"),
    };
    let options = HuggingFaceOptions {
        sequence,
        embedding,
        policy,
        ..HuggingFaceOptions::default()
    };
    let sentences = match calibration {
        Some(path) => read_sentences(path)?,
        None => CALIBRATION_SENTENCES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let sentences: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let (plan, encoder, calibrated) =
        compile_calibrated(directory, &options, &sentences, CALIBRATION_HEADROOM).with_context(
            || {
                format!(
                    "compiling the Hugging Face model in {}",
                    directory.display()
                )
            },
        )?;
    eprintln!(
        "calibrated {calibrated} comparisons on {} sentences",
        sentences.len()
    );
    Ok((plan, encoder))
}

/// `veil compile --hf`: NAME.plan, NAME.public.plan and NAME.tokenizer.json in `out`.
pub(crate) fn compile_text(
    directory: &Path,
    shape: (usize, &str, &str),
    calibration: Option<&Path>,
    out: &Path,
) -> Result<()> {
    let (plan, _) = compile_text_plan(directory, shape, calibration)?;
    let (full, public) = plan.save(out)?;
    let tokenizer = tokenizer_beside(&public, &plan.public);
    std::fs::copy(directory.join("tokenizer.json"), &tokenizer)
        .with_context(|| format!("copying the tokenizer to {}", tokenizer.display()))?;
    println!(
        "wrote {} (server), {} and {} (client; the public plan also goes to the dealer); public-plan hash {}",
        full.display(),
        public.display(),
        tokenizer.display(),
        plan.public.hash_hex()?
    );
    Ok(())
}

/// NAME.tokenizer.json beside a public plan file.
fn tokenizer_beside(public_plan_file: &Path, plan: &PublicPlan) -> PathBuf {
    public_plan_file.with_file_name(format!("{}.tokenizer.json", plan.name))
}

/// Sentences from a file, one a line (blank lines skipped).
fn read_sentences(path: &Path) -> Result<Vec<String>> {
    let sentences: Vec<String> = read_text(path)?
        .lines()
        .map(|line| line.trim_end_matches('\r').to_string())
        .filter(|line| !line.trim().is_empty())
        .collect();
    if sentences.is_empty() {
        bail!("{} holds no sentences (one a line)", path.display());
    }
    Ok(sentences)
}

/// One sentence's line of `veil embed --json`.
#[derive(Serialize)]
struct EmbeddingLine<'a> {
    index: usize,
    tokens: usize,
    truncated: bool,
    embedding: &'a [f32],
    online_s: f64,
    latency_s: f64,
    client_sent_bytes: u64,
    server_sent_bytes: u64,
    rounds: u64,
    client_material_bytes: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    cosine_to_plain: Option<f64>,
}

/// `veil embed`.
pub(crate) fn embed(arguments: EmbedArguments) -> Result<()> {
    let mut sentences = arguments.sentences.clone();
    if let Some(path) = &arguments.input {
        sentences.extend(read_sentences(path)?);
    }
    if sentences.is_empty() {
        bail!("no sentences: give them as arguments or with --input FILE (one a line)");
    }
    let sentences: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let (embedded, cosines, front) = match &arguments.model {
        Some(directory) => {
            let (plan, encoder) = compile_text_plan(
                directory,
                (arguments.seq, &arguments.embedding, "exact"),
                None,
            )?;
            eprintln!(
                "veil embed: {} at {} tokens, {} embedding; dealer, server and client on loopback over mutual TLS (a demonstration, not a deployment)",
                plan.public.name, arguments.seq, arguments.embedding
            );
            let report = embed_locally(&plan, &encoder, &sentences, arguments.check)?;
            eprintln!(
                "set-up: {} B of masked weights to the client, once per client session",
                report.setup_bytes
            );
            let front = encoder.front().clone();
            (report.sentences, report.cosines, front)
        }
        None => {
            let (embedded, front) = remote(&arguments, &sentences)?;
            (embedded, None, front)
        }
    };
    let labels = match &front.output {
        TextOutput::Classification { labels } => Some(labels.as_slice()),
        TextOutput::MeanPooled { .. } => None,
    };
    for (index, sentence) in embedded.iter().enumerate() {
        let cosine = cosines.as_ref().map(|cosines| cosines[index]);
        if arguments.json {
            let line = EmbeddingLine {
                index,
                tokens: sentence.tokens,
                truncated: sentence.truncated,
                embedding: &sentence.embedding,
                online_s: sentence.report.online_seconds,
                latency_s: sentence.report.latency_seconds,
                client_sent_bytes: sentence.report.client_sent_bytes,
                server_sent_bytes: sentence.report.server_sent_bytes,
                rounds: sentence.report.rounds,
                client_material_bytes: sentence.report.client_material_bytes,
                cosine_to_plain: cosine,
            };
            println!("{}", serde_json::to_string(&line)?);
        } else {
            print_embedding(index, sentence, cosine, labels);
        }
    }
    if let Some(cosines) = &cosines {
        let mean = cosines.iter().sum::<f64>() / cosines.len().max(1) as f64;
        let worst = cosines.iter().copied().fold(1.0, f64::min);
        eprintln!(
            "check: cosine to the plain forward, mean {mean:.6}, worst {worst:.6} over {} sentences",
            cosines.len()
        );
    }
    Ok(())
}

/// Prints one sentence's result: a classifier's label (from its logits, or the index
/// the `label` policy revealed), or an embedding's first values.
fn print_embedding(
    index: usize,
    sentence: &SentenceEmbedding,
    cosine: Option<f64>,
    labels: Option<&[String]>,
) {
    if let Some(labels) = labels {
        let output = &sentence.embedding;
        let best = if output.len() == 1 {
            output[0] as usize
        } else {
            veil_model::plain::argmax_rows(output, output.len())[0]
        };
        let name = labels.get(best).map_or("?", String::as_str);
        println!(
            "sentence {index}: {name} (label {best}), output {output:?}, online {:.2} s, {} rounds",
            sentence.report.online_seconds, sentence.report.rounds
        );
        return;
    }
    let shown: Vec<String> = sentence
        .embedding
        .iter()
        .take(8)
        .map(|value| format!("{value:.5}"))
        .collect();
    let check = cosine.map_or(String::new(), |c| format!(", cosine to plain {c:.6}"));
    println!(
        "sentence {index}: {} tokens{}, online {:.2} s, {} B sent / {} B received, {} rounds{check}",
        sentence.tokens,
        if sentence.truncated {
            " (truncated)"
        } else {
            ""
        },
        sentence.report.online_seconds,
        sentence.report.client_sent_bytes,
        sentence.report.server_sent_bytes,
        sentence.report.rounds,
    );
    println!(
        "  embedding [{}]: [{}, …]",
        sentence.embedding.len(),
        shown.join(", ")
    );
}

/// The client's side against a running dealer and server.
fn remote(
    arguments: &EmbedArguments,
    sentences: &[&str],
) -> Result<(Vec<SentenceEmbedding>, TextFrontEnd)> {
    let (Some(server), Some(dealer), Some(public_plan)) =
        (&arguments.server, &arguments.dealer, &arguments.public_plan)
    else {
        bail!("give --server, --dealer and --public-plan (or --model DIR to run every role here)");
    };
    let (plan, tables) = PublicPlan::load_with_tables(public_plan)
        .with_context(|| format!("loading {}", public_plan.display()))?;
    let tokenizer = arguments
        .tokenizer
        .clone()
        .unwrap_or_else(|| tokenizer_beside(public_plan, &plan));
    let encoder = TextEncoder::new(&tokenizer, &plan, tables)?;
    let transport = transport(
        Role::Client,
        arguments.tls_dir.clone(),
        &arguments.crl,
        arguments.insecure_plain_tcp,
        arguments.profile.clone(),
    )?;
    let options = ClientOptions {
        expected_queries: Some(sentences.len()),
        ..ClientOptions::default()
    };
    let mut client = Client::connect_with(plan, server, dealer, options, &transport)?;
    let embedded = embed_sentences(&mut client, &encoder, sentences)?;
    Ok((embedded, encoder.front().clone()))
}

/// `veil evaluate --data reviews`: a sentiment classifier's accuracy on the first
/// `limit` sentences of veil's test split, one secure query each (every role on this
/// machine over mutual TLS), next to the plain executor's accuracy on the same plan.
pub(crate) fn evaluate_reviews(plan_path: &Path, limit: Option<usize>, json: bool) -> Result<()> {
    let plan = Plan::load(plan_path)
        .with_context(|| format!("loading the plan {}", plan_path.display()))?;
    let labels = match &plan.public.text {
        Some(TextFrontEnd {
            output: TextOutput::Classification { labels },
            ..
        }) if labels.len() == 2 => labels.clone(),
        _ => bail!(
            "{} is not a two-label text classifier; compile one with `veil compile --hf DIR` from `veil distill --task sentiment`'s output",
            plan_path.display()
        ),
    };
    let reviews_file = veil_data::fetched::movie_reviews_file()
        .context("the movie reviews are not fetched: run scripts/fetch reviews")?;
    let split = veil_data::reviews::load_split(&reviews_file)?;
    let count = limit.unwrap_or(split.test.len()).min(split.test.len());
    let test = &split.test[..count];
    let tokenizer = tokenizer_beside(plan_path, &plan.public);
    let encoder = TextEncoder::new(&tokenizer, &plan.public, plan.text_tables.clone())?;
    if !json {
        eprintln!(
            "veil evaluate: {} ({}) on the first {count} test sentences of the movie reviews at {} tokens, one secure query each",
            plan.public.name,
            plan.public.approximation,
            encoder.front().sequence
        );
    }
    let started = std::time::Instant::now();
    let sentences: Vec<&str> = test.iter().map(|(text, _)| text.as_str()).collect();
    let report = embed_locally(&plan, &encoder, &sentences, false)?;
    let mut plain_correct = 0usize;
    let mut secure_correct = 0usize;
    let mut agree = 0usize;
    let mut max_error = 0f32;
    let mut online = Vec::with_capacity(count);
    for ((sentence, label), secure) in sentences
        .iter()
        .zip(test.iter().map(|(_, l)| l))
        .zip(&report.sentences)
    {
        let encoded = encoder.encode(&[sentence])?;
        let plain = encoder.finish(
            &veil_model::plain::run_plain(&plan, &encoded.inputs, 1)?,
            &encoded,
        );
        let plain = &plain[0];
        let predicted = |logits: &[f32]| veil_model::plain::argmax_rows(logits, logits.len())[0];
        let (plain_label, secure_label) = (predicted(plain), predicted(&secure.embedding));
        plain_correct += usize::from(plain_label == *label);
        secure_correct += usize::from(secure_label == *label);
        agree += usize::from(plain_label == secure_label);
        for (a, b) in plain.iter().zip(&secure.embedding) {
            max_error = max_error.max((a - b).abs());
        }
        online.push(secure.report.online_seconds);
    }
    online.sort_by(f64::total_cmp);
    let total = count.max(1) as f64;
    let summary = serde_json::json!({
        "plan": plan.public.name,
        "approximation": plan.public.approximation,
        "labels": labels,
        "sequence": encoder.front().sequence,
        "sentences": count,
        "plain_accuracy": plain_correct as f64 / total,
        "secure_accuracy": secure_correct as f64 / total,
        "agreement": agree as f64 / total,
        "max_abs_logit_error": max_error,
        "online_median_s": online.get(count / 2).copied().unwrap_or(0.0),
        "rounds": report.sentences.first().map_or(0, |s| s.report.rounds),
        "client_sent_bytes": report.sentences.first().map_or(0, |s| s.report.client_sent_bytes),
        "wall_s": started.elapsed().as_secs_f64(),
    });
    crate::print_report(&summary, !json)
}
