//! Whether one classifier is better than another on the same examples, beyond what
//! chance moves: McNemar's exact test on the paired outcomes. Of the examples the two
//! disagree on, `first` are those only the first gets right and `second` those only the
//! second does; if neither is better, each disagreement goes either way with
//! probability ½, so the two-sided p-value is 2·P(X ≤ min) for X ~ Binomial(first +
//! second, ½), at most 1. Agreements carry no evidence either way, which is why the
//! paired test sees a difference that two separate accuracies' error bars hide.
//!
//! Independent runs of the same comparison (the same recipe under different seeds)
//! pool into one test ([`Paired::pooled`]): if neither method is better, every
//! disagreement of every run is still a fair coin, so the summed counts are tested the
//! same way, with the power of all the runs' disagreements together.

use serde::{Deserialize, Serialize};

/// Two classifiers' paired outcomes on the same examples.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Serialize)]
pub struct Paired {
    /// Examples only the first classifier gets right.
    pub only_first: usize,
    /// Examples only the second gets right.
    pub only_second: usize,
    /// All examples compared.
    pub examples: usize,
    /// McNemar's exact two-sided p-value.
    pub p_value: f64,
}

impl Paired {
    /// Compares per-example correctness (the same examples, in the same order).
    pub fn new(first: &[bool], second: &[bool]) -> Self {
        debug_assert_eq!(
            first.len(),
            second.len(),
            "paired outcomes of unequal length"
        );
        let examples = first.len().min(second.len());
        let (mut only_first, mut only_second) = (0, 0);
        for (&a, &b) in first.iter().zip(second) {
            match (a, b) {
                (true, false) => only_first += 1,
                (false, true) => only_second += 1,
                _ => {}
            }
        }
        Self {
            only_first,
            only_second,
            examples,
            p_value: mcnemar_exact(only_first, only_second),
        }
    }

    /// Independent comparisons (each on its own run's pair of classifiers) as one:
    /// their counts summed and tested together. `None` for no comparisons.
    pub fn pooled(runs: &[Paired]) -> Option<Self> {
        if runs.is_empty() {
            return None;
        }
        let sum = |count: fn(&Paired) -> usize| runs.iter().map(count).sum::<usize>();
        let (only_first, only_second) = (sum(|run| run.only_first), sum(|run| run.only_second));
        Some(Self {
            only_first,
            only_second,
            examples: sum(|run| run.examples),
            p_value: mcnemar_exact(only_first, only_second),
        })
    }

    /// The first's accuracy minus the second's, in points.
    pub fn difference_points(&self) -> f64 {
        100.0 * (self.only_first as f64 - self.only_second as f64) / self.examples.max(1) as f64
    }
}

/// The fraction of examples gotten right (0 for none).
pub fn fraction_right(outcomes: &[bool]) -> f64 {
    outcomes.iter().filter(|&&right| right).count() as f64 / outcomes.len().max(1) as f64
}

/// McNemar's exact two-sided p-value for `b` and `c` discordant pairs.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let total = b + c;
    if total == 0 {
        return 1.0;
    }
    // ln k! for k ≤ total.
    let mut log_factorial = vec![0.0f64; total + 1];
    for k in 1..=total {
        log_factorial[k] = log_factorial[k - 1] + (k as f64).ln();
    }
    let half_power = total as f64 * std::f64::consts::LN_2;
    let tail: f64 = (0..=b.min(c))
        .map(|k| {
            (log_factorial[total] - log_factorial[k] - log_factorial[total - k] - half_power).exp()
        })
        .sum();
    (2.0 * tail).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_values() {
        // All ten disagreements one way: 2 · 2⁻¹⁰.
        assert!((mcnemar_exact(10, 0) - 2.0 / 1024.0).abs() < 1e-12);
        assert!((mcnemar_exact(0, 10) - 2.0 / 1024.0).abs() < 1e-12);
        // 8 against 2: 2 · (1 + 10 + 45) / 1024.
        assert!((mcnemar_exact(8, 2) - 112.0 / 1024.0).abs() < 1e-12);
        assert_eq!(mcnemar_exact(5, 5), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0);
        // Large counts stay finite and ordered.
        let (near, far) = (mcnemar_exact(520, 480), mcnemar_exact(600, 400));
        assert!(near > 0.1 && near < 1.0, "{near}");
        assert!(far < 1e-9 && far > 0.0, "{far}");
    }

    #[test]
    fn paired_outcomes_count_the_disagreements() {
        let first = [true, true, false, true, false];
        let second = [true, false, true, false, false];
        let paired = Paired::new(&first, &second);
        assert_eq!((paired.only_first, paired.only_second), (2, 1));
        assert_eq!(paired.examples, 5);
        assert!((paired.difference_points() - 20.0).abs() < 1e-12);
        assert_eq!(paired.p_value, 1.0);
        assert!((fraction_right(&first) - 0.6).abs() < 1e-12);
        assert_eq!(fraction_right(&[]), 0.0);
    }

    #[test]
    fn pooled_runs_sum_their_disagreements_and_test_them_together() {
        let run = |only_first, only_second, examples| Paired {
            only_first,
            only_second,
            examples,
            p_value: mcnemar_exact(only_first, only_second),
        };
        // Two runs each short of significance (20 against 10: p ≈ 0.099) are significant
        // together: 40 against 20 has p ≈ 0.013.
        let (one, two) = (run(20, 10, 1000), run(20, 10, 1000));
        assert!(one.p_value > 0.05);
        let pooled = Paired::pooled(&[one, two]).unwrap();
        assert_eq!((pooled.only_first, pooled.only_second), (40, 20));
        assert_eq!(pooled.examples, 2000);
        assert_eq!(pooled.p_value, mcnemar_exact(40, 20));
        assert!(pooled.p_value < 0.05, "{}", pooled.p_value);
        assert!((pooled.difference_points() - 1.0).abs() < 1e-12);
        // Leads in opposite directions cancel.
        let cancelled = Paired::pooled(&[run(30, 10, 500), run(10, 30, 500)]).unwrap();
        assert_eq!(cancelled.p_value, 1.0);
        assert_eq!(Paired::pooled(&[one]), Some(one));
        assert_eq!(Paired::pooled(&[]), None);
    }
}
