//! Logits distillation (cookbook §5.2), shared by the CNN students and the second stage
//! of the transformer students: weight·T²·KL(softmax(z_T/T) ‖ softmax(z_S/T)) + (1 −
//! weight)·CE(labels, z_S). KL is the soft cross-entropy less the teacher's entropy,
//! which has no gradient: the same training, with a loss that reaches 0.

use candle_core::{D, Tensor};

use crate::Result;
use crate::config::Distillation;

/// The distillation loss of the student's `logits` `[batch, classes]` toward the
/// teacher's `targets` (detached here) and the `labels` `[batch]`.
pub fn logits_distillation(
    logits: &Tensor,
    targets: &Tensor,
    labels: &Tensor,
    distillation: Distillation,
) -> Result<Tensor> {
    let temperature = distillation.temperature;
    let log_targets = candle_nn::ops::log_softmax(&(targets.detach() / temperature)?, D::Minus1)?;
    let log_student = candle_nn::ops::log_softmax(&(logits / temperature)?, D::Minus1)?;
    let gap = (&log_targets - log_student)?;
    let soft = (log_targets.exp()? * gap)?.sum(D::Minus1)?.mean_all()?;
    let soft = (soft * (distillation.soft_weight * temperature * temperature))?;
    if distillation.soft_weight >= 1.0 {
        return Ok(soft);
    }
    let hard = candle_nn::loss::cross_entropy(logits, labels)?;
    Ok((soft + (hard * (1.0 - distillation.soft_weight))?)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::*;

    fn scalar(tensor: Tensor) -> f32 {
        tensor.to_scalar::<f32>().unwrap()
    }

    #[test]
    fn its_two_ends_are_kl_and_cross_entropy() {
        let device = Device::Cpu;
        let logits = Tensor::new(&[[2.0f32, -1.0], [-3.0, 0.5], [0.0, 0.0]], &device).unwrap();
        let targets = Tensor::new(&[[1.0f32, 0.0], [-2.0, 4.0], [5.0, -5.0]], &device).unwrap();
        let labels = Tensor::new(&[0u32, 1, 1], &device).unwrap();
        let at = |temperature, soft_weight| {
            let distillation = Distillation {
                temperature,
                soft_weight,
            };
            scalar(logits_distillation(&logits, &targets, &labels, distillation).unwrap())
        };
        let cross_entropy = scalar(candle_nn::loss::cross_entropy(&logits, &labels).unwrap());
        assert!((at(3.0, 0.0) - cross_entropy).abs() < 1e-6);
        // KL by hand at T = 2, scaled by T².
        let rows = [
            ([2.0f32, -1.0], [1.0f32, 0.0]),
            ([-3.0, 0.5], [-2.0, 4.0]),
            ([0.0, 0.0], [5.0, -5.0]),
        ];
        let softmax = |row: [f32; 2], temperature: f32| {
            let (a, b) = ((row[0] / temperature).exp(), (row[1] / temperature).exp());
            [a / (a + b), b / (a + b)]
        };
        let kl: f32 = rows
            .iter()
            .map(|&(student, teacher)| {
                let (p, q) = (softmax(teacher, 2.0), softmax(student, 2.0));
                (0..2)
                    .map(|class| p[class] * (p[class] / q[class]).ln())
                    .sum::<f32>()
            })
            .sum::<f32>()
            / 3.0;
        assert!((at(2.0, 1.0) - 4.0 * kl).abs() < 1e-5);
        assert!((at(2.0, 0.25) - (kl + 0.75 * cross_entropy)).abs() < 1e-5);
        // A student that already agrees with its teacher has no soft loss.
        let agreed = logits_distillation(
            &targets,
            &targets,
            &labels,
            Distillation {
                temperature: 1.0,
                soft_weight: 1.0,
            },
        )
        .unwrap();
        assert!(scalar(agreed).abs() < 1e-6);
    }
}
