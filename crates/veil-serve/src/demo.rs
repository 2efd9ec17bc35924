//! `veil demo`: every role in this process (an in-process [`Deployment`] over mutual
//! TLS), one client serving labelled samples securely, each prediction compared with the
//! plain executor's and with the label.

use veil_model::Plan;
use veil_model::plain::{argmax_rows, run_plain};
use veil_model::plan::OutputPolicy;

use crate::deployment::{Deployment, DeploymentOptions};
use crate::processes::median;
use crate::roles::{ClientOptions, DealerSummary, QueryReport, ServerSummary};
use crate::{Error, Result};

/// What the demo measured.
#[derive(Clone, Debug)]
pub struct DemoReport {
    /// Samples served.
    pub samples: usize,
    /// Samples the plain executor labelled correctly.
    pub plain_correct: usize,
    /// Samples the secure computation labelled correctly.
    pub secure_correct: usize,
    /// Samples on which both agreed.
    pub agree: usize,
    /// Whether the plan reveals labels only (the client never sees logits).
    pub labels_only: bool,
    /// The largest |secure − plain| on the logits (0 when only labels are revealed).
    pub max_error: f32,
    /// The median online time per query, in milliseconds.
    pub online_median_ms: f64,
    /// The last query's report (its bytes and rounds are every query's).
    pub last: QueryReport,
    /// Bytes of the client's set-up (D).
    pub setup_bytes: u64,
    /// What the dealer saw.
    pub dealer: DealerSummary,
    /// What the server saw.
    pub server: ServerSummary,
}

/// Serves `samples` (input, label) one query each through an in-process deployment of
/// `plan`.
pub fn run_demo<'a>(
    plan: &Plan,
    samples: impl IntoIterator<Item = (&'a [f32], usize)>,
) -> Result<DemoReport> {
    let public = &plan.public;
    let deployment = Deployment::start(plan, DeploymentOptions::single_client())?;
    let mut client = deployment.connect_client(public.clone(), ClientOptions::default())?;
    let classes = public.graph.infer_shapes(1)?[public.graph.output][1];
    let labels_only = matches!(public.output_policy, OutputPolicy::Label { .. });
    let (mut plain_correct, mut secure_correct, mut agree) = (0usize, 0usize, 0usize);
    let mut reports = Vec::new();
    let mut max_error = 0f32;
    for (sample, truth) in samples {
        let plain = run_plain(plan, sample, 1)?;
        let report = client.query(sample)?;
        let plain_label = argmax_rows(&plain, classes)[0];
        let secure_label = if labels_only {
            report.output[0] as usize
        } else {
            max_error = plain
                .iter()
                .zip(&report.output)
                .fold(max_error, |m, (p, s)| m.max((p - s).abs()));
            argmax_rows(&report.output, classes)[0]
        };
        plain_correct += usize::from(plain_label == truth);
        secure_correct += usize::from(secure_label == truth);
        agree += usize::from(plain_label == secure_label);
        reports.push(report);
    }
    let setup_bytes = client.setup_bytes;
    drop(client);
    let (dealer, server) = deployment.finish()?;
    let mut online: Vec<f64> = reports.iter().map(|r| r.online_seconds * 1e3).collect();
    let samples = reports.len();
    let last = reports
        .pop()
        .ok_or(Error::Unsupported("the demo needs at least one sample"))?;
    Ok(DemoReport {
        samples,
        plain_correct,
        secure_correct,
        agree,
        labels_only,
        max_error,
        online_median_ms: median(&mut online),
        last,
        setup_bytes,
        dealer,
        server,
    })
}
