//! What an earlier run's report (distill-report.json, sentiment-report.json) records of
//! each model's training, so that `veil distill --reuse` reports a reused model's
//! losses and time instead of blanks.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

/// The `models` of an earlier report; empty when there is none or it is unreadable
/// (then a reused model's earlier training is reported as unrecorded).
pub(crate) struct EarlierReport {
    models: Vec<Value>,
}

impl EarlierReport {
    /// The report at `path`, if `reuse` (a fresh run reports only what it trains).
    pub(crate) fn read(path: &Path, reuse: bool) -> Self {
        let models = reuse
            .then(|| std::fs::read_to_string(path).ok())
            .flatten()
            .and_then(|text| serde_json::from_str::<Value>(&text).ok())
            .and_then(|report| report.get("models")?.as_array().cloned())
            .unwrap_or_default();
        Self { models }
    }

    /// The epoch losses and training seconds it records for the model `name`.
    pub(crate) fn training<Losses: DeserializeOwned>(&self, name: &str) -> Option<(Losses, f64)> {
        let model = self
            .models
            .iter()
            .find(|model| model.get("name").and_then(Value::as_str) == Some(name))?;
        let losses = serde_json::from_value(model.get("epoch_losses")?.clone()).ok()?;
        Some((losses, model.get("train_seconds")?.as_f64()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_model_gets_the_losses_and_seconds_its_report_recorded() {
        let path = std::env::temp_dir().join(format!("veil-earlier-{}.json", std::process::id()));
        std::fs::write(
            &path,
            r#"{"models": [{"name": "a", "epoch_losses": [[0.5, 0.25]], "train_seconds": 12.5},
                           {"name": "b", "epoch_losses": [0.5], "train_seconds": 3.0}]}"#,
        )
        .unwrap();
        let report = EarlierReport::read(&path, true);
        assert_eq!(
            report.training::<Vec<Vec<f64>>>("a"),
            Some((vec![vec![0.5, 0.25]], 12.5))
        );
        assert_eq!(report.training::<Vec<f64>>("b"), Some((vec![0.5], 3.0)));
        assert_eq!(report.training::<Vec<f64>>("c"), None, "not in the report");
        assert_eq!(
            report.training::<Vec<f64>>("a"),
            None,
            "losses of another shape"
        );
        assert_eq!(
            EarlierReport::read(&path, false).training::<Vec<f64>>("b"),
            None,
            "a fresh run reads nothing"
        );
        std::fs::write(&path, "not json").unwrap();
        assert_eq!(
            EarlierReport::read(&path, true).training::<Vec<f64>>("b"),
            None
        );
        std::fs::remove_file(&path).unwrap();
    }
}
