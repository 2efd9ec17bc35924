//! The leakage experiment: an attacker who sees everything the worker sees tries to
//! reconstruct the input image.
//!
//! What the worker sees first is the residual of the second convolution's input (the
//! first convolution has one input channel, so the trusted side keeps it whole): the
//! `16 × 28 × 28` ReLU output of `conv1` minus its principal channels. The attacker knows
//! the model, the split algorithm and public images of the same kind (the Fashion-MNIST
//! training set), so it simulates the split on those and fits a least-squares inversion:
//! a translation-invariant ridge regression from the residual's 16 channels in the 3×3
//! neighbourhood of a pixel (144 features and a constant) to that pixel. It then inverts
//! the victim's residuals (test images) and is scored by PSNR and SSIM against the
//! originals. The same attack on the whole activation (the untrusted-only baseline, 0%
//! kept) shows what the split hides. The blinded mode's view, `X + R` with R a one-time
//! pad, is independent of X, so no attack does better than the prior there; the mean
//! public image is scored as that prior.

use crate::kernels::{self, ConvGeometry};
use crate::network::{Model, SIDE};
use crate::subspace::{Subspace, subspace_svd};
use crate::svd::{Basis, SvdOptions, batch_svd, light_svd};
use crate::{Error, Result};

/// The neighbourhood side of the inversion's features.
const WINDOW: usize = 3;
/// Ridge penalty (relative to the mean diagonal of FᵀF).
const RIDGE: f64 = 1e-3;

/// One setting's reconstruction quality.
#[derive(Clone, Debug)]
pub struct LeakageRow {
    /// What the attacker saw.
    pub label: String,
    /// The energy fraction the trusted side kept (0: the whole activation).
    pub energy: f64,
    /// The mean ‖X_res‖²/‖X‖² of what it saw (`None`: it saw nothing that depends on X).
    pub residual_energy: Option<f64>,
    /// Mean PSNR (dB) of the reconstructions, pixels in [0, 1].
    pub psnr: f64,
    /// Mean SSIM (7×7 uniform windows).
    pub ssim: f64,
    /// The first reconstructions (for the grid).
    pub reconstructions: Vec<Vec<f32>>,
}

/// What the worker sees of one image at the second convolution: the residual of
/// `ReLU(conv1(x) + b)` after the split at `energy` (all of it when `energy` is 0), and
/// the residual's energy fraction.
pub fn worker_view(model: &Model, image: &[f32], energy: f64) -> (Vec<f32>, f64) {
    let (activation, channels, positions) = first_activation(model, image);
    if energy <= 0.0 {
        return (activation, 1.0);
    }
    // The split executor's own call: warm-started from conv1's map (the image itself).
    let split = light_svd(
        &activation,
        channels,
        positions,
        &split_options(energy, Basis::Sample),
        &[image.to_vec()],
    );
    (split.residual, split.residual_energy)
}

/// [`worker_view`] for each of `images`, split with `basis`: per image, or in batches
/// of [`crate::bench::BATCH`] over one basis per batch, each warm-started from the
/// previous batch's, as the split executor does; [`Basis::Subspace`] per image with its
/// components confined to `subspace` (conv2's) where that pays, or per image without one.
pub fn worker_views(
    model: &Model,
    images: &[Vec<f32>],
    energy: f64,
    basis: Basis,
    subspace: Option<&Subspace>,
) -> Vec<(Vec<f32>, f64)> {
    if let (Basis::Subspace, Some(subspace), true) = (basis, subspace, energy > 0.0) {
        let geometry = model.layers[1].geometry;
        return images
            .iter()
            .map(|image| {
                let (activation, _, _) = first_activation(model, image);
                let split = subspace_svd(
                    &activation,
                    &geometry,
                    &split_options(energy, basis),
                    &[image.to_vec()],
                    subspace,
                );
                (split.residual, split.residual_energy)
            })
            .collect();
    }
    if basis != Basis::Batch || energy <= 0.0 {
        return images
            .iter()
            .map(|image| worker_view(model, image, energy))
            .collect();
    }
    let mut views = Vec::with_capacity(images.len());
    let mut warm: Vec<Vec<f32>> = Vec::new();
    for chunk in images.chunks(crate::bench::BATCH) {
        let mut batch = Vec::new();
        let (mut channels, mut positions) = (0, 0);
        for image in chunk {
            let (activation, c, hw) = first_activation(model, image);
            (channels, positions) = (c, hw);
            batch.extend(activation);
        }
        let split = batch_svd(
            &batch,
            chunk.len(),
            channels,
            positions,
            &split_options(energy, basis),
            &warm,
        );
        warm = split.columns();
        views.extend(
            split
                .samples
                .into_iter()
                .map(|sample| (sample.residual, sample.residual_energy)),
        );
    }
    views
}

fn split_options(energy: f64, basis: Basis) -> SvdOptions {
    SvdOptions {
        energy,
        iterations: crate::bench::ITERATIONS,
        basis,
    }
}

/// `ReLU(conv1(x) + b)`, with its channels and positions.
fn first_activation(model: &Model, image: &[f32]) -> (Vec<f32>, usize, usize) {
    let first = &model.layers[0];
    let geometry = first.geometry;
    let mut activation = vec![0f32; geometry.output_len()];
    kernels::conv_forward(&geometry, image, &first.weight, &mut activation);
    let positions = geometry.output_positions();
    for (index, value) in activation.iter_mut().enumerate() {
        *value = (*value + first.bias[index / positions]).max(0.0);
    }
    (activation, geometry.out_channels, positions)
}

fn features(view: &[f32], channels: usize, y: usize, x: usize, out: &mut Vec<f64>) {
    out.clear();
    let half = (WINDOW / 2) as isize;
    for channel in 0..channels {
        for dy in -half..=half {
            for dx in -half..=half {
                let (yy, xx) = (y as isize + dy, x as isize + dx);
                let inside = yy >= 0 && xx >= 0 && yy < SIDE as isize && xx < SIDE as isize;
                out.push(if inside {
                    f64::from(view[(channel * SIDE + yy as usize) * SIDE + xx as usize])
                } else {
                    0.0
                });
            }
        }
    }
    out.push(1.0);
}

/// Solves `A w = b` for symmetric positive definite `A` (`n × n`) by Cholesky.
fn solve_spd(mut a: Vec<f64>, mut b: Vec<f64>, n: usize) -> Result<Vec<f64>> {
    for j in 0..n {
        let mut diagonal = a[j * n + j];
        for k in 0..j {
            diagonal -= a[j * n + k] * a[j * n + k];
        }
        if diagonal <= 0.0 {
            return Err(Error::ApiMisuse(
                "the inversion's normal equations are singular",
            ));
        }
        let diagonal = diagonal.sqrt();
        a[j * n + j] = diagonal;
        for i in j + 1..n {
            let mut value = a[i * n + j];
            for k in 0..j {
                value -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = value / diagonal;
        }
    }
    for i in 0..n {
        for k in 0..i {
            b[i] -= a[i * n + k] * b[k];
        }
        b[i] /= a[i * n + i];
    }
    for i in (0..n).rev() {
        for k in i + 1..n {
            b[i] -= a[k * n + i] * b[k];
        }
        b[i] /= a[i * n + i];
    }
    Ok(b)
}

/// Fits the inversion on the attacker's images and scores it on the victim's, at each
/// energy and basis (energy 0: the whole activation). The attacker simulates the split
/// with the same basis on its own images. Keeps the first `keep` reconstructions per
/// setting.
pub fn attack(
    model: &Model,
    attacker_images: &[Vec<f32>],
    victim_images: &[Vec<f32>],
    settings: &[(f64, Basis, Option<&Subspace>)],
    keep: usize,
) -> Result<Vec<LeakageRow>> {
    let channels = model.layers[0].geometry.out_channels;
    let dimension = channels * WINDOW * WINDOW + 1;
    let mut rows = Vec::new();
    for &(energy, basis, subspace) in settings {
        let mut normal = vec![0f64; dimension * dimension];
        let mut target = vec![0f64; dimension];
        let mut row = Vec::with_capacity(dimension);
        let attacker_views = worker_views(model, attacker_images, energy, basis, subspace);
        for (image, (view, _)) in attacker_images.iter().zip(&attacker_views) {
            for y in 0..SIDE {
                for x in 0..SIDE {
                    features(view, channels, y, x, &mut row);
                    let pixel = f64::from(image[y * SIDE + x]);
                    for i in 0..dimension {
                        let scale = row[i];
                        if scale == 0.0 {
                            continue;
                        }
                        target[i] += scale * pixel;
                        for (entry, &other) in normal[i * dimension..i * dimension + i + 1]
                            .iter_mut()
                            .zip(&row[..=i])
                        {
                            *entry += scale * other;
                        }
                    }
                }
            }
        }
        for i in 0..dimension {
            for j in 0..i {
                normal[j * dimension + i] = normal[i * dimension + j];
            }
        }
        let mean_diagonal = (0..dimension)
            .map(|i| normal[i * dimension + i])
            .sum::<f64>()
            / dimension as f64;
        for i in 0..dimension {
            normal[i * dimension + i] += RIDGE * mean_diagonal.max(1e-12);
        }
        let weights = solve_spd(normal, target, dimension)?;
        let (mut psnr_sum, mut ssim_sum, mut energy_sum) = (0.0, 0.0, 0.0);
        let mut reconstructions = Vec::new();
        let victim_views = worker_views(model, victim_images, energy, basis, subspace);
        for (image, (view, residual_energy)) in victim_images.iter().zip(victim_views) {
            energy_sum += residual_energy;
            let mut reconstruction = vec![0f32; SIDE * SIDE];
            for y in 0..SIDE {
                for x in 0..SIDE {
                    features(view.as_slice(), channels, y, x, &mut row);
                    let value: f64 = row.iter().zip(&weights).map(|(a, b)| a * b).sum();
                    reconstruction[y * SIDE + x] = value.clamp(0.0, 1.0) as f32;
                }
            }
            psnr_sum += psnr(image, &reconstruction);
            ssim_sum += ssim(image, &reconstruction, SIDE, SIDE);
            if reconstructions.len() < keep {
                reconstructions.push(reconstruction);
            }
        }
        let count = victim_images.len().max(1) as f64;
        rows.push(LeakageRow {
            label: if energy <= 0.0 {
                "untrusted-only (whole activation)".into()
            } else {
                format!(
                    "split, {:.0}% energy kept, {} basis{}",
                    100.0 * energy,
                    basis.name(),
                    subspace.map_or(String::new(), |subspace| format!(
                        " (m = {})",
                        subspace.dimension
                    ))
                )
            },
            energy,
            residual_energy: Some(energy_sum / count),
            psnr: psnr_sum / count,
            ssim: ssim_sum / count,
            reconstructions,
        });
    }
    // The blinded mode's view, X + R with R a one-time pad, is independent of X: the
    // attacker can do no better than its prior. The mean public image stands for it.
    let pixels = SIDE * SIDE;
    let mut mean = vec![0f32; pixels];
    for image in attacker_images {
        for (total, &value) in mean.iter_mut().zip(image) {
            *total += value / attacker_images.len().max(1) as f32;
        }
    }
    let count = victim_images.len().max(1) as f64;
    rows.push(LeakageRow {
        label: "blinded (the prior: the mean image)".into(),
        energy: 1.0,
        residual_energy: None,
        psnr: victim_images
            .iter()
            .map(|image| psnr(image, &mean))
            .sum::<f64>()
            / count,
        ssim: victim_images
            .iter()
            .map(|image| ssim(image, &mean, SIDE, SIDE))
            .sum::<f64>()
            / count,
        reconstructions: vec![mean; keep.min(victim_images.len())],
    });
    Ok(rows)
}

/// Peak signal-to-noise ratio in dB for pixels in [0, 1] (capped at 99 for a perfect match).
pub fn psnr(original: &[f32], reconstruction: &[f32]) -> f64 {
    let mse = original
        .iter()
        .zip(reconstruction)
        .map(|(a, b)| f64::from(a - b).powi(2))
        .sum::<f64>()
        / original.len().max(1) as f64;
    if mse <= 1e-10 {
        99.0
    } else {
        -10.0 * mse.log10()
    }
}

/// Mean structural similarity over 7×7 uniform windows (data range 1; C1 = 0.01²,
/// C2 = 0.03², as scikit-image's default window).
pub fn ssim(original: &[f32], reconstruction: &[f32], height: usize, width: usize) -> f64 {
    const SIDE_OF_WINDOW: usize = 7;
    let (c1, c2) = (0.01f64.powi(2), 0.03f64.powi(2));
    let count = (SIDE_OF_WINDOW * SIDE_OF_WINDOW) as f64;
    let mut total = 0.0;
    let mut windows = 0usize;
    for top in 0..=height.saturating_sub(SIDE_OF_WINDOW) {
        for left in 0..=width.saturating_sub(SIDE_OF_WINDOW) {
            let (mut sa, mut sb, mut saa, mut sbb, mut sab) = (0.0, 0.0, 0.0, 0.0, 0.0);
            for y in top..top + SIDE_OF_WINDOW {
                for x in left..left + SIDE_OF_WINDOW {
                    let a = f64::from(original[y * width + x]);
                    let b = f64::from(reconstruction[y * width + x]);
                    sa += a;
                    sb += b;
                    saa += a * a;
                    sbb += b * b;
                    sab += a * b;
                }
            }
            let (ma, mb) = (sa / count, sb / count);
            // Sample (co)variances, as scikit-image computes them.
            let correction = count / (count - 1.0);
            let va = (saa / count - ma * ma) * correction;
            let vb = (sbb / count - mb * mb) * correction;
            let cov = (sab / count - ma * mb) * correction;
            total += ((2.0 * ma * mb + c1) * (2.0 * cov + c2))
                / ((ma * ma + mb * mb + c1) * (va + vb + c2));
            windows += 1;
        }
    }
    total / windows.max(1) as f64
}

/// A PNG grid: the originals in the first row, then one row per setting; 1-pixel gaps.
pub fn grid_png(originals: &[Vec<f32>], rows: &[LeakageRow]) -> Vec<u8> {
    let columns = originals.len();
    let lines: Vec<&[Vec<f32>]> = std::iter::once(originals)
        .chain(rows.iter().map(|row| &row.reconstructions[..]))
        .collect();
    let (cell, gap) = (SIDE, 1);
    let width = columns * (cell + gap) + gap;
    let height = lines.len() * (cell + gap) + gap;
    let mut pixels = vec![1.0f32; width * height];
    for (line_index, line) in lines.iter().enumerate() {
        for (column, image) in line.iter().enumerate().take(columns) {
            for y in 0..cell {
                for x in 0..cell {
                    let top = gap + line_index * (cell + gap) + y;
                    let left = gap + column * (cell + gap) + x;
                    pixels[top * width + left] = image[y * cell + x];
                }
            }
        }
    }
    crate::png::encode_greyscale(width, height, &pixels)
}

/// The geometry of what the attacker inverts (conv1's output).
pub fn inverted_geometry(model: &Model) -> ConvGeometry {
    model.layers[0].geometry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn psnr_and_ssim_rank_a_copy_above_noise() {
        let mut random =
            veil_core::sampling::SplitMix64::new(veil_core::sampling::test_seed().value());
        let image: Vec<f32> = (0..SIDE * SIDE).map(|_| random.next_f64() as f32).collect();
        assert_eq!(psnr(&image, &image), 99.0);
        assert!((ssim(&image, &image, SIDE, SIDE) - 1.0).abs() < 1e-9);
        let noisy: Vec<f32> = image
            .iter()
            .map(|&p| (p + 0.2 * (random.next_f64() as f32 - 0.5)).clamp(0.0, 1.0))
            .collect();
        let flat = vec![0.5f32; SIDE * SIDE];
        assert!(psnr(&image, &noisy) > psnr(&image, &flat));
        assert!(ssim(&image, &noisy, SIDE, SIDE) > ssim(&image, &flat, SIDE, SIDE) + 0.1);
    }

    #[test]
    fn every_view_keeps_its_image_residual_bound_with_every_basis() {
        let mut random =
            veil_core::sampling::SplitMix64::new(veil_core::sampling::test_seed().value() ^ 5);
        let model = Model::new(crate::network::Architecture::VggSmall, 3);
        // More than one batch, the last one short.
        let images: Vec<Vec<f32>> = (0..crate::bench::BATCH + 5)
            .map(|_| {
                random
                    .normal_vec(SIDE * SIDE, 0.5)
                    .into_iter()
                    .map(|value| value.abs().min(1.0))
                    .collect()
            })
            .collect();
        let inputs =
            crate::subspace::layer_inputs(&model, &images.concat(), images.len(), 1).expect("runs");
        let geometry = model.layers[1].geometry;
        let subspace = crate::subspace::principal_subspace(
            &inputs[1],
            geometry.channels,
            geometry.positions(),
            12,
        );
        for (basis, subspace) in [
            (Basis::Sample, None),
            (Basis::Batch, None),
            (Basis::Subspace, Some(&subspace)),
        ] {
            let views = worker_views(&model, &images, 0.97, basis, subspace);
            assert_eq!(views.len(), images.len());
            for (view, residual_energy) in &views {
                assert_eq!(view.len(), 16 * SIDE * SIDE);
                assert!(*residual_energy <= 0.03 + 1e-9, "{residual_energy}");
            }
        }
        let whole = worker_views(&model, &images[..1], 0.0, Basis::Batch, None);
        assert_eq!(whole[0].1, 1.0, "energy 0 shows the whole activation");
    }

    #[test]
    fn cholesky_solves_a_small_system() {
        let a = vec![4.0, 2.0, 2.0, 3.0];
        let solution = solve_spd(a, vec![2.0, 1.0], 2).expect("positive definite");
        assert!((solution[0] - 0.5).abs() < 1e-12 && solution[1].abs() < 1e-12);
    }
}
