//! `veil pooled-test`: the paired tests of independent `veil distill` runs (the same
//! recipe under different seeds) as one. Each report's `distilled_against_labels`
//! holds, per split (or per CNN student), how many examples only the distilled student
//! gets right and how many only the labels-only one does; the pooled test sums those
//! counts over the runs and applies McNemar's exact test to the sums
//! (`veil_distill::compare::Paired::pooled`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;
use veil_distill::compare::{Paired, mcnemar_exact};

/// One report's comparisons, by split.
fn comparisons(path: &Path) -> Result<BTreeMap<String, Paired>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the report {}", path.display()))?;
    let report: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON: give the sentiment-report.json or distill-report.json that veil distill wrote",
            path.display()
        )
    })?;
    let Some(comparisons) = report
        .get("distilled_against_labels")
        .and_then(Value::as_object)
    else {
        bail!(
            "{} has no distilled_against_labels: it is not a veil distill report, or it predates the paired test (rerun veil distill with --reuse to write one)",
            path.display()
        );
    };
    comparisons
        .iter()
        .map(|(part, paired)| {
            let paired: Paired = serde_json::from_value(paired.clone()).with_context(|| {
                format!(
                    "{}: distilled_against_labels.{part} is not a paired test (only_first, only_second, examples, p_value)",
                    path.display()
                )
            })?;
            if paired.only_first + paired.only_second > paired.examples {
                bail!(
                    "{}: distilled_against_labels.{part} has more disagreements ({} + {}) than examples ({}): the report is damaged; rerun veil distill",
                    path.display(),
                    paired.only_first,
                    paired.only_second,
                    paired.examples
                );
            }
            // The p-value follows from the counts; recompute it rather than trust the file.
            let p_value = mcnemar_exact(paired.only_first, paired.only_second);
            Ok((part.clone(), Paired { p_value, ..paired }))
        })
        .collect()
}

/// Each split's tests, one per run in the reports' order, and their pooled test.
type Pooled = BTreeMap<String, (Vec<Paired>, Paired)>;

/// Pools the reports' tests split by split.
fn pool(reports: &[PathBuf]) -> Result<Pooled> {
    if reports.len() < 2 {
        bail!("pooling needs two or more reports of independent runs");
    }
    let runs = reports
        .iter()
        .map(|path| comparisons(path))
        .collect::<Result<Vec<_>>>()?;
    for (first, earlier) in runs.iter().enumerate() {
        for (second, later) in runs.iter().enumerate().skip(first + 1) {
            if earlier == later {
                bail!(
                    "{} and {} record the same comparisons: the same run twice would count its disagreements twice; pool independent runs (different seeds)",
                    reports[first].display(),
                    reports[second].display()
                );
            }
        }
    }
    for (run, path) in runs.iter().zip(reports).skip(1) {
        if !run.keys().eq(runs[0].keys()) {
            bail!(
                "{} compares {:?} and {} compares {:?}: pool reports of the same task",
                reports[0].display(),
                runs[0].keys().collect::<Vec<_>>(),
                path.display(),
                run.keys().collect::<Vec<_>>()
            );
        }
    }
    let mut pooled = BTreeMap::new();
    for part in runs[0].keys() {
        let of_part: Vec<Paired> = runs.iter().map(|run| run[part]).collect();
        let total = Paired::pooled(&of_part).context("no runs to pool")?;
        pooled.insert(part.clone(), (of_part, total));
    }
    Ok(pooled)
}

/// Prints each run's test and the pooled one, split by split.
pub(crate) fn pooled_test(reports: &[PathBuf], json: bool) -> Result<()> {
    let pooled = pool(reports)?;
    if json {
        let value = serde_json::json!({
            "reports": reports.iter().map(|path| path.display().to_string()).collect::<Vec<_>>(),
            "runs": pooled.iter().map(|(part, (runs, _))| (part.clone(), serde_json::json!(runs))).collect::<serde_json::Map<_, _>>(),
            "pooled": pooled.iter().map(|(part, (_, total))| (part.clone(), serde_json::json!(total))).collect::<serde_json::Map<_, _>>(),
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    println!(
        "distilled against labels-only, per run and pooled over {} runs (McNemar's exact test)",
        reports.len()
    );
    let line = |part: &str, paired: &Paired, source: &str| {
        println!(
            "{part:>32}  {:>6} examples  only distilled {:>5}  only labels {:>5}  {:+6.2} points  p = {:.3}  ({source})",
            paired.examples,
            paired.only_first,
            paired.only_second,
            paired.difference_points(),
            paired.p_value
        );
    };
    for (part, (runs, total)) in &pooled {
        for (run, path) in runs.iter().zip(reports) {
            line(part, run, &path.display().to_string());
        }
        line(part, total, "pooled");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(directory: &Path, name: &str, text: &str) -> PathBuf {
        let path = directory.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn paired(only_first: usize, only_second: usize, examples: usize) -> String {
        let p_value = mcnemar_exact(only_first, only_second);
        format!(
            r#"{{"only_first": {only_first}, "only_second": {only_second}, "examples": {examples}, "p_value": {p_value}}}"#
        )
    }

    #[test]
    fn two_runs_pool_split_by_split_and_bad_reports_are_refused() {
        let directory = std::env::temp_dir().join(format!("veil-pooled-{}", std::process::id()));
        std::fs::create_dir_all(&directory).unwrap();
        let seven = report(
            &directory,
            "seven.json",
            &format!(
                r#"{{"models": [], "distilled_against_labels": {{"dev": {}, "test": {}}}}}"#,
                paired(34, 28, 500),
                paired(70, 52, 1000)
            ),
        );
        let eight = report(
            &directory,
            "eight.json",
            &format!(
                r#"{{"distilled_against_labels": {{"dev": {}, "test": {}}}}}"#,
                paired(30, 20, 500),
                paired(60, 40, 1000)
            ),
        );
        let pooled = pool(&[seven.clone(), eight.clone()]).unwrap();
        assert_eq!(pooled.keys().collect::<Vec<_>>(), ["dev", "test"]);
        let (runs, total) = &pooled["test"];
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[1].only_first, 60);
        assert_eq!(
            (total.only_first, total.only_second, total.examples),
            (130, 92, 2000)
        );
        assert_eq!(total.p_value, mcnemar_exact(130, 92));

        let refused = |reports: &[PathBuf], expected: &str| {
            let error = format!("{:#}", pool(reports).unwrap_err());
            assert!(error.contains(expected), "{error:?} lacks {expected:?}");
        };
        refused(std::slice::from_ref(&seven), "two or more");
        refused(&[seven.clone(), seven.clone()], "the same run twice");
        let other_task = report(
            &directory,
            "cnn.json",
            &format!(
                r#"{{"distilled_against_labels": {{"cnn-plain-quad-distilled": {}}}}}"#,
                paired(257, 293, 10000)
            ),
        );
        refused(&[seven.clone(), other_task], "the same task");
        let old = report(&directory, "old.json", r#"{"models": []}"#);
        refused(&[seven.clone(), old], "predates the paired test");
        let broken = report(
            &directory,
            "broken.json",
            r#"{"distilled_against_labels": {"dev": {"only_first": -1}}}"#,
        );
        refused(&[seven.clone(), broken], "is not a paired test");
        let damaged = report(
            &directory,
            "damaged.json",
            &format!(
                r#"{{"distilled_against_labels": {{"dev": {}, "test": {}}}}}"#,
                paired(300, 250, 500),
                paired(60, 40, 1000)
            ),
        );
        refused(&[seven.clone(), damaged], "more disagreements");
        let wrong_p_value = report(
            &directory,
            "wrong-p.json",
            r#"{"distilled_against_labels": {"dev": {"only_first": 10, "only_second": 0, "examples": 500, "p_value": 0.5}, "test": {"only_first": 1, "only_second": 1, "examples": 1000, "p_value": 1.0}}}"#,
        );
        let recomputed = pool(&[seven.clone(), wrong_p_value]).unwrap();
        assert_eq!(recomputed["dev"].0[1].p_value, mcnemar_exact(10, 0));
        let truncated = report(&directory, "truncated.json", r#"{"distilled_against"#);
        refused(&[seven.clone(), truncated], "is not JSON");
        refused(
            &[seven, directory.join("absent.json")],
            "reading the report",
        );
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
