//! The CNN's layers, forward and backward, on one sample: 3×3 convolution (stride 1,
//! padding 1), ReLU, 2×2 max and average pools, linear, and softmax cross-entropy.

use super::{KERNEL, PADDING, POOL, Shape};

/// For kernel offset `offset`, the output positions (along one axis of length `size`)
/// whose input position `position + offset − PADDING` lies inside the image; the others
/// read the zero padding and contribute nothing.
pub(super) fn valid_outputs(offset: usize, size: usize) -> std::ops::Range<usize> {
    let start = PADDING.saturating_sub(offset);
    let end = (size + PADDING).saturating_sub(offset).min(size);
    start..end.max(start)
}

/// `KERNEL`×`KERNEL` convolution, stride 1, `PADDING` zeros, of `input` (`shape`) with
/// `weight` `[out, in, KERNEL, KERNEL]` and `bias` `[out]` into `output`
/// `[out, height, width]` (same spatial size, as stride 1 with padding 1 keeps it).
pub(super) fn conv2d_forward(
    input: &[f32],
    shape: Shape,
    weight: &[f32],
    bias: &[f32],
    output: &mut [f32],
) {
    let plane = shape.plane();
    let width = shape.width;
    for (out_channel, out_plane) in output.chunks_exact_mut(plane).enumerate() {
        out_plane.fill(bias[out_channel]);
        for (in_channel, in_plane) in input.chunks_exact(plane).enumerate() {
            let kernel_start = (out_channel * shape.channels + in_channel) * KERNEL * KERNEL;
            let kernel = &weight[kernel_start..kernel_start + KERNEL * KERNEL];
            for row_offset in 0..KERNEL {
                let rows = valid_outputs(row_offset, shape.height);
                for column_offset in 0..KERNEL {
                    let columns = valid_outputs(column_offset, width);
                    let tap = kernel[row_offset * KERNEL + column_offset];
                    // Whole output rows at once: the inner loop runs over contiguous
                    // memory on both sides.
                    for row in rows.clone() {
                        let in_start =
                            (row + row_offset - PADDING) * width + columns.start + column_offset
                                - PADDING;
                        let out_row =
                            &mut out_plane[row * width + columns.start..row * width + columns.end];
                        let in_row = &in_plane[in_start..in_start + columns.len()];
                        out_row
                            .iter_mut()
                            .zip(in_row)
                            .for_each(|(out, &value)| *out += tap * value);
                    }
                }
            }
        }
    }
}

/// The backward pass of [`conv2d_forward`]: adds the weight and bias gradients into
/// `weight_gradient` and `bias_gradient`, and overwrites `input_gradient` (when wanted)
/// with the gradient with respect to the input.
pub(super) fn conv2d_backward(
    input: &[f32],
    shape: Shape,
    weight: &[f32],
    output_gradient: &[f32],
    weight_gradient: &mut [f32],
    bias_gradient: &mut [f32],
    mut input_gradient: Option<&mut [f32]>,
) {
    let plane = shape.plane();
    let width = shape.width;
    if let Some(gradient) = input_gradient.as_deref_mut() {
        gradient.fill(0.0);
    }
    for (out_channel, out_plane) in output_gradient.chunks_exact(plane).enumerate() {
        bias_gradient[out_channel] += out_plane.iter().sum::<f32>();
        for in_channel in 0..shape.channels {
            let in_plane = &input[in_channel * plane..(in_channel + 1) * plane];
            let kernel_start = (out_channel * shape.channels + in_channel) * KERNEL * KERNEL;
            for row_offset in 0..KERNEL {
                let rows = valid_outputs(row_offset, shape.height);
                for column_offset in 0..KERNEL {
                    let columns = valid_outputs(column_offset, width);
                    let tap_index = kernel_start + row_offset * KERNEL + column_offset;
                    let tap = weight[tap_index];
                    let mut tap_gradient = 0f32;
                    for row in rows.clone() {
                        let in_start =
                            (row + row_offset - PADDING) * width + columns.start + column_offset
                                - PADDING;
                        let out_row =
                            &out_plane[row * width + columns.start..row * width + columns.end];
                        let in_row = &in_plane[in_start..in_start + columns.len()];
                        tap_gradient += out_row
                            .iter()
                            .zip(in_row)
                            .map(|(gradient, value)| gradient * value)
                            .sum::<f32>();
                        if let Some(gradient) = input_gradient.as_deref_mut() {
                            let start = in_channel * plane + in_start;
                            gradient[start..start + columns.len()]
                                .iter_mut()
                                .zip(out_row)
                                .for_each(|(input, &output)| *input += tap * output);
                        }
                    }
                    weight_gradient[tap_index] += tap_gradient;
                }
            }
        }
    }
}

/// ReLU in place.
pub(super) fn relu_forward(values: &mut [f32]) {
    values.iter_mut().for_each(|value| *value = value.max(0.0));
}

/// Zeroes the gradient where the ReLU's output was zero (its input was not positive).
pub(super) fn relu_backward(output: &[f32], gradient: &mut [f32]) {
    gradient
        .iter_mut()
        .zip(output)
        .for_each(|(gradient, &value)| {
            if value <= 0.0 {
                *gradient = 0.0;
            }
        });
}

/// The input indices of the window of pooled position `(channel, row, column)`.
pub(super) fn pool_window(
    shape: Shape,
    channel: usize,
    row: usize,
    column: usize,
) -> impl Iterator<Item = usize> {
    let base = channel * shape.plane() + row * POOL * shape.width + column * POOL;
    (0..POOL).flat_map(move |window_row| {
        (0..POOL).map(move |window_column| base + window_row * shape.width + window_column)
    })
}

/// Calls `visit(output_index, window)` for every output of a `POOL`×`POOL` stride-`POOL`
/// pool of a `shape` map, in output order.
pub(super) fn for_each_window(
    shape: Shape,
    mut visit: impl FnMut(usize, &mut dyn Iterator<Item = usize>),
) {
    let pooled = shape.pooled();
    let mut output_index = 0;
    for channel in 0..pooled.channels {
        for row in 0..pooled.height {
            for column in 0..pooled.width {
                visit(output_index, &mut pool_window(shape, channel, row, column));
                output_index += 1;
            }
        }
    }
}

/// Max pool of `input` (`shape`) into `output`, recording in `source` which input index
/// each output took (the first one on ties), for the backward pass.
pub(super) fn max_pool_forward(
    input: &[f32],
    shape: Shape,
    output: &mut [f32],
    source: &mut [usize],
) {
    for_each_window(shape, |output_index, window| {
        let (best, value) = window.fold((usize::MAX, f32::NEG_INFINITY), |best, index| {
            if input[index] > best.1 {
                (index, input[index])
            } else {
                best
            }
        });
        output[output_index] = value;
        source[output_index] = best;
    });
}

/// The backward pass of [`max_pool_forward`]: each output's gradient goes to the input
/// it took; `input_gradient` is overwritten.
pub(super) fn max_pool_backward(
    output_gradient: &[f32],
    source: &[usize],
    input_gradient: &mut [f32],
) {
    input_gradient.fill(0.0);
    for (&gradient, &index) in output_gradient.iter().zip(source) {
        // A window of NaNs has no maximum; its gradient is dropped rather than panicking.
        if let Some(slot) = input_gradient.get_mut(index) {
            *slot += gradient;
        }
    }
}

/// Average pool of `input` (`shape`) into `output`.
pub(super) fn average_pool_forward(input: &[f32], shape: Shape, output: &mut [f32]) {
    let scale = 1.0 / (POOL * POOL) as f32;
    for_each_window(shape, |output_index, window| {
        output[output_index] = window.map(|index| input[index]).sum::<f32>() * scale;
    });
}

/// The backward pass of [`average_pool_forward`]: each output's gradient is spread
/// evenly over its window; `input_gradient` is overwritten (inputs outside every window
/// get zero).
pub(super) fn average_pool_backward(
    output_gradient: &[f32],
    shape: Shape,
    input_gradient: &mut [f32],
) {
    input_gradient.fill(0.0);
    let scale = 1.0 / (POOL * POOL) as f32;
    for_each_window(shape, |output_index, window| {
        for index in window {
            input_gradient[index] += output_gradient[output_index] * scale;
        }
    });
}

/// `output = weight · input + bias` with `weight` `[out, in]`.
pub(super) fn linear_forward(input: &[f32], weight: &[f32], bias: &[f32], output: &mut [f32]) {
    for ((out, row), &b) in output
        .iter_mut()
        .zip(weight.chunks_exact(input.len()))
        .zip(bias)
    {
        *out = b + row.iter().zip(input).map(|(w, x)| w * x).sum::<f32>();
    }
}

/// The backward pass of [`linear_forward`]: adds into the weight and bias gradients and
/// overwrites `input_gradient` (when wanted) with `weightᵀ · output_gradient`.
pub(super) fn linear_backward(
    input: &[f32],
    weight: &[f32],
    output_gradient: &[f32],
    weight_gradient: &mut [f32],
    bias_gradient: &mut [f32],
    mut input_gradient: Option<&mut [f32]>,
) {
    if let Some(gradient) = input_gradient.as_deref_mut() {
        gradient.fill(0.0);
    }
    for (((&delta, gradient_row), row), bias) in output_gradient
        .iter()
        .zip(weight_gradient.chunks_exact_mut(input.len()))
        .zip(weight.chunks_exact(input.len()))
        .zip(bias_gradient.iter_mut())
    {
        *bias += delta;
        gradient_row
            .iter_mut()
            .zip(input)
            .for_each(|(gradient, &x)| *gradient += delta * x);
        if let Some(gradient) = input_gradient.as_deref_mut() {
            gradient
                .iter_mut()
                .zip(row)
                .for_each(|(gradient, &w)| *gradient += w * delta);
        }
    }
}

/// Softmax cross-entropy of `logits` against `label`: writes the gradient with respect
/// to the logits (`softmax − one_hot`) into `gradient` and returns the loss.
pub(super) fn softmax_cross_entropy(logits: &[f32], label: usize, gradient: &mut [f32]) -> f32 {
    let maximum = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0f32;
    for (g, &logit) in gradient.iter_mut().zip(logits) {
        *g = (logit - maximum).exp();
        sum += *g;
    }
    gradient.iter_mut().for_each(|g| *g /= sum);
    gradient[label] -= 1.0;
    // −log softmax(label) = log Σ exp(z − max) − (z_label − max).
    sum.ln() - (logits[label] - maximum)
}
