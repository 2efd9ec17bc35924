//! `veil embed`: sentence embeddings computed securely. The client tokenizes and embeds
//! its sentences locally ([`veil_text::TextEncoder`], the public tokenizer and tables),
//! runs one query per sentence, and finishes each revealed masked sum into the
//! sentence's embedding (divided by its own token count, L2-normalised).
//! [`embed_sentences`] is the client's side against any deployment;
//! [`embed_locally`] runs every role in this process over mutual TLS, as the demo does,
//! and can check each embedding against the plain forward (only where the client holds
//! the whole model: the input never leaves this process for that check).

use veil_model::Plan;
use veil_model::plain::run_plain;
use veil_model::text::cosine;
use veil_text::TextEncoder;

use crate::deployment::{Deployment, DeploymentOptions};
use crate::roles::{Client, ClientOptions, DealerSummary, QueryReport, ServerSummary};
use crate::{Error, Result};

/// One sentence's secure embedding.
#[derive(Clone, Debug)]
pub struct SentenceEmbedding {
    /// The embedding.
    pub embedding: Vec<f32>,
    /// Real tokens (special tokens included), at most the padded length.
    pub tokens: usize,
    /// Whether the sentence was longer than the padded length and cut.
    pub truncated: bool,
    /// The query's figures.
    pub report: QueryReport,
}

/// Embeds each sentence with one secure query through `client` (a client of a text
/// plan, batch 1).
pub fn embed_sentences(
    client: &mut Client,
    encoder: &TextEncoder,
    sentences: &[&str],
) -> Result<Vec<SentenceEmbedding>> {
    sentences
        .iter()
        .map(|sentence| {
            let encoded = encoder.encode(&[sentence])?;
            let report = client.query(&encoded.inputs)?;
            let embedding = encoder
                .finish(&report.output, &encoded)
                .pop()
                .ok_or(Error::Unreachable("a query of one sentence gave no output"))?;
            Ok(SentenceEmbedding {
                embedding,
                tokens: encoded.masks[0].iter().filter(|&&m| m != 0.0).count(),
                truncated: encoded.truncated[0],
                report,
            })
        })
        .collect()
}

/// What [`embed_locally`] measured.
#[derive(Clone, Debug)]
pub struct LocalEmbedReport {
    /// Each sentence's secure embedding.
    pub sentences: Vec<SentenceEmbedding>,
    /// With the check: each secure embedding's cosine to the plain forward's.
    pub cosines: Option<Vec<f64>>,
    /// Bytes of the client's set-up (the masked weights).
    pub setup_bytes: u64,
    /// What the dealer saw.
    pub dealer: DealerSummary,
    /// What the server saw.
    pub server: ServerSummary,
}

/// Serves `plan` (a text plan) from a dealer and a server on threads of this process
/// over mutual TLS on loopback, and embeds `sentences` as their client; with `check`,
/// compares each embedding with the plain forward's.
pub fn embed_locally(
    plan: &Plan,
    encoder: &TextEncoder,
    sentences: &[&str],
    check: bool,
) -> Result<LocalEmbedReport> {
    let deployment = Deployment::start(plan, DeploymentOptions::single_client())?;
    let mut client = deployment.connect_client(plan.public.clone(), ClientOptions::default())?;
    let embedded = embed_sentences(&mut client, encoder, sentences)?;
    let setup_bytes = client.setup_bytes;
    drop(client);
    let (dealer, server) = deployment.finish()?;
    let cosines = if check {
        let mut cosines = Vec::with_capacity(sentences.len());
        for (sentence, secure) in sentences.iter().zip(&embedded) {
            let encoded = encoder.encode(&[sentence])?;
            let plain = encoder.finish(&run_plain(plan, &encoded.inputs, 1)?, &encoded);
            cosines.push(cosine(&plain[0], &secure.embedding));
        }
        Some(cosines)
    } else {
        None
    };
    Ok(LocalEmbedReport {
        sentences: embedded,
        cosines,
        setup_bytes,
        dealer,
        server,
    })
}
