//! 2-D convolution over Z_2^64, lowered to [`gemm_u64`](super::gemm_u64) with im2col.
//!
//! For each image of the batch, im2col builds the `K × N` matrix `columns` with
//! `K = in_channels · kernel_height · kernel_width` (row `(c, ky, kx)`) and
//! `N = output_height · output_width` (column `(oy, ox)`), holding the input value each
//! kernel tap sees at each output position (zero in the padding). The weights, read as
//! the `out_channels × K` matrix they already are in `[out, in, kh, kw]` order, times
//! `columns` is then exactly that image's `out_channels × N` NCHW output. A 1×1, stride 1,
//! unpadded convolution skips im2col: the image itself is `columns`.

use super::{Kernel, check_len, gemm_u64_unchecked};
use crate::{Error, Result};

/// The geometry of a 2-D convolution (cross-correlation, as in PyTorch's `Conv2d` without
/// dilation or groups).
///
/// The input is NCHW (`[batch, in_channels, height, width]`), the weights are
/// `[out_channels, in_channels, kernel_height, kernel_width]` and the output is NCHW
/// (`[batch, out_channels, output_height, output_width]`), all row-major and contiguous.
/// `padding` zeros are added on every side of each spatial dimension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    /// Images in the batch (N).
    pub batch: usize,
    /// Input channels (C).
    pub in_channels: usize,
    /// Input height (H), without padding.
    pub height: usize,
    /// Input width (W), without padding.
    pub width: usize,
    /// Output channels: the number of filters.
    pub out_channels: usize,
    /// Filter height.
    pub kernel_height: usize,
    /// Filter width.
    pub kernel_width: usize,
    /// Step between neighbouring output positions, in both dimensions; at least 1.
    pub stride: usize,
    /// Zeros added on each side (top, bottom, left, right) of every input plane.
    pub padding: usize,
}

impl Conv2dShape {
    /// `(height + 2·padding − kernel_height) / stride + 1`, or 0 for a geometry that
    /// [`validate`](Self::validate) rejects.
    #[must_use]
    pub fn output_height(&self) -> usize {
        output_extent(self.height, self.kernel_height, self.stride, self.padding)
    }

    /// `(width + 2·padding − kernel_width) / stride + 1`, or 0 for a geometry that
    /// [`validate`](Self::validate) rejects.
    #[must_use]
    pub fn output_width(&self) -> usize {
        output_extent(self.width, self.kernel_width, self.stride, self.padding)
    }

    /// Elements of the input: `batch · in_channels · height · width` (saturating at
    /// `usize::MAX`, which no buffer can match).
    #[must_use]
    pub fn input_len(&self) -> usize {
        product(&self.input_shape())
    }

    /// Elements of the weights: `out_channels · in_channels · kernel_height · kernel_width`
    /// (saturating at `usize::MAX`).
    #[must_use]
    pub fn weight_len(&self) -> usize {
        product(&self.weight_shape())
    }

    /// Elements of the output: `batch · out_channels · output_height · output_width`
    /// (saturating at `usize::MAX`).
    #[must_use]
    pub fn output_len(&self) -> usize {
        product(&self.output_shape())
    }

    /// Checks the geometry: `stride >= 1`, and both kernel dimensions at least 1 and at
    /// most the padded input's.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`], whose `op` says which rule failed.
    pub fn validate(&self) -> Result<()> {
        if self.stride == 0 {
            return Err(Error::ShapeMismatch {
                op: "conv2d_u64: stride must be at least 1",
                expected: vec![1],
                found: vec![0],
            });
        }
        let padded = |extent: usize| self.padding.checked_mul(2)?.checked_add(extent);
        let (Some(padded_height), Some(padded_width)) = (padded(self.height), padded(self.width))
        else {
            return Err(Error::ShapeMismatch {
                op: "conv2d_u64: padded input size overflows usize",
                expected: vec![self.height, self.width],
                found: vec![self.padding],
            });
        };
        let fits = |kernel: usize, padded: usize| (1..=padded).contains(&kernel);
        if !fits(self.kernel_height, padded_height) || !fits(self.kernel_width, padded_width) {
            return Err(Error::ShapeMismatch {
                op: "conv2d_u64: kernel must be non-empty and fit the padded input",
                expected: vec![padded_height, padded_width],
                found: vec![self.kernel_height, self.kernel_width],
            });
        }
        Ok(())
    }

    fn input_shape(&self) -> [usize; 4] {
        [self.batch, self.in_channels, self.height, self.width]
    }

    fn weight_shape(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels,
            self.kernel_height,
            self.kernel_width,
        ]
    }

    fn output_shape(&self) -> [usize; 4] {
        [
            self.batch,
            self.out_channels,
            self.output_height(),
            self.output_width(),
        ]
    }
}

fn output_extent(input: usize, kernel: usize, stride: usize, padding: usize) -> usize {
    let Some(padded) = padding
        .checked_mul(2)
        .and_then(|padding| padding.checked_add(input))
    else {
        return 0;
    };
    if stride == 0 || kernel == 0 || kernel > padded {
        return 0;
    }
    (padded - kernel) / stride + 1
}

fn product(shape: &[usize]) -> usize {
    shape
        .iter()
        .fold(1, |product, &extent| product.saturating_mul(extent))
}

/// `output = conv2d(input, weight) mod 2^64` with the kernel from [`Kernel::detect`].
///
/// Layouts are described on [`Conv2dShape`]; padding is zeros; all products and sums wrap
/// modulo 2^64. The output is overwritten. It lowers to one GEMM per image (im2col), so
/// it needs a scratch buffer of `in_channels · kernel_height · kernel_width ·
/// output_height · output_width` elements (none for an unpadded 1×1, stride 1 kernel).
///
/// # Errors
/// [`Error::ShapeMismatch`] if the geometry is invalid ([`Conv2dShape::validate`]) or a
/// buffer's length differs from [`Conv2dShape::input_len`], [`weight_len`] or
/// [`output_len`] (op `"conv2d_u64"`, `expected` the tensor shape, `found` the length).
///
/// [`weight_len`]: Conv2dShape::weight_len
/// [`output_len`]: Conv2dShape::output_len
pub fn conv2d_u64(
    shape: &Conv2dShape,
    input: &[u64],
    weight: &[u64],
    output: &mut [u64],
) -> Result<()> {
    conv2d_u64_with(Kernel::detect(), shape, input, weight, output)
}

/// [`conv2d_u64`] with an explicitly chosen GEMM kernel (falling back to
/// [`Kernel::Scalar`] where the requested one is unavailable, as
/// [`gemm_u64_with`](super::gemm_u64_with) does).
///
/// # Errors
/// As [`conv2d_u64`].
pub fn conv2d_u64_with(
    kernel: Kernel,
    shape: &Conv2dShape,
    input: &[u64],
    weight: &[u64],
    output: &mut [u64],
) -> Result<()> {
    shape.validate()?;
    check_len("conv2d_u64", &shape.input_shape(), input.len())?;
    check_len("conv2d_u64", &shape.weight_shape(), weight.len())?;
    check_len("conv2d_u64", &shape.output_shape(), output.len())?;

    let depth = shape.in_channels * shape.kernel_height * shape.kernel_width;
    let positions = shape.output_height() * shape.output_width();
    let image_len = shape.in_channels * shape.height * shape.width;
    let output_image_len = shape.out_channels * positions;
    if output_image_len == 0 {
        return Ok(());
    }
    let pointwise = shape.kernel_height == 1
        && shape.kernel_width == 1
        && shape.stride == 1
        && shape.padding == 0;
    let mut columns = if pointwise {
        Vec::new()
    } else {
        vec![0; depth * positions]
    };
    for (image_index, output_image) in output.chunks_exact_mut(output_image_len).enumerate() {
        let image = &input[image_index * image_len..][..image_len];
        let columns: &[u64] = if pointwise {
            image
        } else {
            im2col(shape, image, &mut columns);
            &columns
        };
        gemm_u64_unchecked(
            kernel,
            shape.out_channels,
            depth,
            positions,
            weight,
            columns,
            output_image,
        );
    }
    Ok(())
}

/// Fills `columns` (`K × N`, see the module docs) from one `[in_channels, height, width]`
/// image. The geometry must be valid.
fn im2col(shape: &Conv2dShape, image: &[u64], columns: &mut [u64]) {
    let Conv2dShape {
        height,
        width,
        kernel_height,
        kernel_width,
        stride,
        padding,
        ..
    } = *shape;
    let (output_height, output_width) = (shape.output_height(), shape.output_width());
    // Output columns `ox` whose input column `ox·stride + kx − padding` lies inside the
    // image, for each `kx`: a contiguous range (padding only at the ends).
    let valid_columns = |kx: usize| {
        let first = padding.saturating_sub(kx).div_ceil(stride);
        let end = (width + padding).saturating_sub(kx).div_ceil(stride);
        first.min(output_width)..end.min(output_width)
    };
    let plane_len = height * width;
    let mut rows = columns.chunks_exact_mut(output_height * output_width);
    for channel in 0..shape.in_channels {
        // (Indexed rather than `chunks_exact`, which rejects empty planes.)
        let plane = &image[channel * plane_len..][..plane_len];
        for ky in 0..kernel_height {
            for kx in 0..kernel_width {
                let row = rows.next().expect("columns has in_channels·kh·kw rows");
                let valid = valid_columns(kx);
                for (oy, out_row) in row.chunks_exact_mut(output_width).enumerate() {
                    // Input row oy·stride + ky − padding, if inside the image.
                    let input_row = (oy * stride + ky)
                        .checked_sub(padding)
                        .filter(|&y| y < height);
                    let Some(y) = input_row else {
                        out_row.fill(0);
                        continue;
                    };
                    let source = &plane[y * width..][..width];
                    out_row[..valid.start].fill(0);
                    out_row[valid.end..].fill(0);
                    if valid.is_empty() {
                        continue;
                    }
                    // Input column of the first valid output column.
                    let x0 = valid.start * stride + kx - padding;
                    let destination = &mut out_row[valid.clone()];
                    if stride == 1 {
                        destination.copy_from_slice(&source[x0..x0 + destination.len()]);
                    } else {
                        let taps = source[x0..].iter().step_by(stride);
                        for (out, &value) in destination.iter_mut().zip(taps) {
                            *out = value;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct seven-loop convolution, the reference.
    fn conv2d_naive(shape: &Conv2dShape, input: &[u64], weight: &[u64]) -> Vec<u64> {
        let s = shape;
        let (oh, ow) = (s.output_height(), s.output_width());
        let mut output = vec![0u64; s.output_len()];
        for b in 0..s.batch {
            for o in 0..s.out_channels {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut sum = 0u64;
                        for c in 0..s.in_channels {
                            for ky in 0..s.kernel_height {
                                for kx in 0..s.kernel_width {
                                    let y = (oy * s.stride + ky) as isize - s.padding as isize;
                                    let x = (ox * s.stride + kx) as isize - s.padding as isize;
                                    if y < 0
                                        || x < 0
                                        || y >= s.height as isize
                                        || x >= s.width as isize
                                    {
                                        continue;
                                    }
                                    let (y, x) = (y as usize, x as usize);
                                    let input_value = input
                                        [((b * s.in_channels + c) * s.height + y) * s.width + x];
                                    let weight_value =
                                        weight[((o * s.in_channels + c) * s.kernel_height + ky)
                                            * s.kernel_width
                                            + kx];
                                    sum = sum.wrapping_add(input_value.wrapping_mul(weight_value));
                                }
                            }
                        }
                        output[((b * s.out_channels + o) * oh + oy) * ow + ox] = sum;
                    }
                }
            }
        }
        output
    }

    fn pseudo_random(len: usize, seed: u64) -> Vec<u64> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                state ^ (state >> 29)
            })
            .collect()
    }

    fn shape(
        batch: usize,
        in_channels: usize,
        (height, width): (usize, usize),
        out_channels: usize,
        (kernel_height, kernel_width): (usize, usize),
        stride: usize,
        padding: usize,
    ) -> Conv2dShape {
        Conv2dShape {
            batch,
            in_channels,
            height,
            width,
            out_channels,
            kernel_height,
            kernel_width,
            stride,
            padding,
        }
    }

    #[test]
    fn matches_direct_convolution() {
        let geometries = [
            shape(2, 3, (8, 7), 5, (3, 3), 1, 1),
            shape(2, 3, (8, 7), 5, (3, 3), 1, 0),
            shape(2, 3, (9, 8), 4, (3, 3), 2, 1),
            shape(2, 3, (9, 8), 4, (3, 3), 2, 0),
            shape(2, 4, (5, 6), 7, (1, 1), 1, 0),
            shape(2, 4, (5, 6), 7, (1, 1), 2, 0),
            shape(2, 4, (5, 6), 7, (1, 1), 1, 1),
            shape(2, 2, (6, 5), 3, (2, 3), 2, 1),
            shape(1, 1, (1, 1), 1, (3, 3), 1, 1),
            shape(2, 16, (12, 12), 16, (3, 3), 1, 1),
            shape(1, 2, (4, 4), 3, (3, 3), 3, 2),
        ];
        for (index, geometry) in geometries.iter().enumerate() {
            let input = pseudo_random(geometry.input_len(), 2 * index as u64);
            let weight = pseudo_random(geometry.weight_len(), 2 * index as u64 + 1);
            let expected = conv2d_naive(geometry, &input, &weight);
            for kernel in Kernel::available() {
                let mut output = vec![u64::MAX; geometry.output_len()];
                conv2d_u64_with(kernel, geometry, &input, &weight, &mut output)
                    .expect("valid geometry");
                assert!(
                    expected == output,
                    "{} kernel differs on {geometry:?}",
                    kernel.name()
                );
            }
            let mut output = vec![0; geometry.output_len()];
            conv2d_u64(geometry, &input, &weight, &mut output).expect("valid geometry");
            assert!(expected == output);
        }
    }

    #[test]
    fn output_size_follows_the_usual_formula() {
        let s = shape(1, 1, (32, 31), 1, (3, 3), 2, 1);
        assert_eq!((s.output_height(), s.output_width()), (16, 16));
        assert_eq!(shape(1, 1, (56, 56), 1, (3, 3), 1, 1).output_height(), 56);
        assert_eq!(shape(1, 1, (5, 5), 1, (7, 7), 1, 0).output_height(), 0);
        assert_eq!(shape(1, 1, (5, 5), 1, (3, 3), 0, 0).output_height(), 0);
    }

    #[test]
    fn invalid_geometry_and_lengths_are_rejected() {
        let good = shape(1, 2, (4, 4), 3, (3, 3), 1, 0);
        let input = vec![0; good.input_len()];
        let weight = vec![0; good.weight_len()];
        let mut output = vec![0; good.output_len()];
        assert!(conv2d_u64(&good, &input, &weight, &mut output).is_ok());
        let bad = [
            Conv2dShape { stride: 0, ..good },
            Conv2dShape {
                kernel_height: 5,
                ..good
            },
            Conv2dShape {
                kernel_width: 0,
                ..good
            },
            Conv2dShape {
                padding: usize::MAX,
                ..good
            },
        ];
        for geometry in bad {
            assert!(geometry.validate().is_err(), "{geometry:?}");
            assert!(conv2d_u64(&geometry, &input, &weight, &mut output).is_err());
        }
        assert!(conv2d_u64(&good, &input[1..], &weight, &mut output).is_err());
        assert!(conv2d_u64(&good, &input, &weight[1..], &mut output).is_err());
        let error = conv2d_u64(&good, &input, &weight, &mut output[1..]).expect_err("short output");
        assert!(matches!(
            error,
            Error::ShapeMismatch { op: "conv2d_u64", ref expected, ref found }
                if expected == &[1, 3, 2, 2] && found == &[11]
        ));
    }

    #[test]
    fn empty_batch_and_channels_are_fine() {
        let empty_batch = shape(0, 2, (4, 4), 3, (3, 3), 1, 1);
        conv2d_u64(
            &empty_batch,
            &[],
            &vec![0; empty_batch.weight_len()],
            &mut [],
        )
        .expect("nothing to do");
        // No input channels: every output is the empty sum, 0.
        let no_channels = shape(2, 0, (4, 4), 3, (3, 3), 1, 1);
        let mut output = vec![9; no_channels.output_len()];
        conv2d_u64(&no_channels, &[], &[], &mut output).expect("valid geometry");
        assert!(output.iter().all(|&value| value == 0));
        // An empty image plane seen only through padding: all zeros too.
        let empty_plane = shape(1, 2, (0, 3), 2, (1, 1), 1, 1);
        let mut output = vec![9; empty_plane.output_len()];
        assert_eq!(output.len(), 2 * 2 * 5);
        conv2d_u64(&empty_plane, &[], &[1; 4], &mut output).expect("valid geometry");
        assert!(output.iter().all(|&value| value == 0));
    }
}
