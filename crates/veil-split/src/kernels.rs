//! f32 kernels for the split mode: GEMM variants and a stride-1 convolution lowered to
//! GEMM with im2col, forward and both backward products.
//!
//! Every function adds to its output (`+=`) and returns the multiply-accumulates it did,
//! so callers can charge them to the side that ran them. Layouts are row-major: an
//! activation is `channels × height × width`, a weight `out × in × k × k`.

/// The geometry of a stride-1, zero-padded 2-D convolution (a linear layer is the
/// convolution whose kernel covers the whole input, with no padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels (c).
    pub channels: usize,
    /// Input height.
    pub height: usize,
    /// Input width.
    pub width: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Square kernel side.
    pub kernel: usize,
    /// Zeros on each side.
    pub padding: usize,
}

impl ConvGeometry {
    /// Output height.
    pub fn output_height(&self) -> usize {
        self.height + 2 * self.padding + 1 - self.kernel
    }
    /// Output width.
    pub fn output_width(&self) -> usize {
        self.width + 2 * self.padding + 1 - self.kernel
    }
    /// Input spatial positions (hw).
    pub fn positions(&self) -> usize {
        self.height * self.width
    }
    /// Output spatial positions.
    pub fn output_positions(&self) -> usize {
        self.output_height() * self.output_width()
    }
    /// Values in one sample's input.
    pub fn input_len(&self) -> usize {
        self.channels * self.positions()
    }
    /// Values in one sample's output.
    pub fn output_len(&self) -> usize {
        self.out_channels * self.output_positions()
    }
    /// Values in the weight tensor.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.channels * self.taps()
    }
    /// Kernel taps (k²).
    pub fn taps(&self) -> usize {
        self.kernel * self.kernel
    }
    /// The same geometry over `channels` input channels (the trusted side's r maps).
    pub fn with_channels(&self, channels: usize) -> ConvGeometry {
        ConvGeometry { channels, ..*self }
    }
    /// Multiply-accumulates of one sample's forward convolution.
    pub fn macs(&self) -> u64 {
        (self.out_channels * self.channels * self.taps() * self.output_positions()) as u64
    }
}

/// `c += a · b` with `a` `m × k` and `b` `k × n`. Returns m·k·n.
pub fn matmul_accumulate(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) -> u64 {
    for i in 0..m {
        let row = &mut c[i * n..(i + 1) * n];
        for p in 0..k {
            let scale = a[i * k + p];
            if scale == 0.0 {
                continue;
            }
            let other = &b[p * n..(p + 1) * n];
            for (out, &value) in row.iter_mut().zip(other) {
                *out += scale * value;
            }
        }
    }
    (m * k * n) as u64
}

/// `c += aᵀ · b` with `a` `k × m` and `b` `k × n`. Returns m·k·n.
pub fn matmul_transposed_a_accumulate(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> u64 {
    for p in 0..k {
        let other = &b[p * n..(p + 1) * n];
        for i in 0..m {
            let scale = a[p * m + i];
            if scale == 0.0 {
                continue;
            }
            let row = &mut c[i * n..(i + 1) * n];
            for (out, &value) in row.iter_mut().zip(other) {
                *out += scale * value;
            }
        }
    }
    (m * k * n) as u64
}

/// `c += a · bᵀ` with `a` `m × k` and `b` `n × k`. Returns m·k·n.
pub fn matmul_transposed_b_accumulate(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> u64 {
    for i in 0..m {
        let left = &a[i * k..(i + 1) * k];
        for j in 0..n {
            c[i * n + j] += dot(left, &b[j * k..(j + 1) * k]);
        }
    }
    (m * k * n) as u64
}

/// A dot product with eight partial sums (so it vectorises).
pub fn dot(left: &[f32], right: &[f32]) -> f32 {
    let mut partial = [0f32; 8];
    let chunks = left.len() / 8;
    for chunk in 0..chunks {
        for lane in 0..8 {
            partial[lane] += left[chunk * 8 + lane] * right[chunk * 8 + lane];
        }
    }
    let mut sum: f32 = partial.iter().sum();
    for index in chunks * 8..left.len() {
        sum += left[index] * right[index];
    }
    sum
}

/// im2col: the `(c·k²) × (output positions)` matrix of input values each tap sees.
pub fn im2col(geometry: &ConvGeometry, input: &[f32]) -> Vec<f32> {
    let (height, width) = (geometry.height, geometry.width);
    let (output_height, output_width) = (geometry.output_height(), geometry.output_width());
    let kernel = geometry.kernel;
    let padding = geometry.padding as isize;
    let positions = output_height * output_width;
    let mut columns = vec![0f32; geometry.channels * geometry.taps() * positions];
    for channel in 0..geometry.channels {
        let plane = &input[channel * height * width..(channel + 1) * height * width];
        for ky in 0..kernel {
            for kx in 0..kernel {
                let row = (channel * kernel + ky) * kernel + kx;
                let target = &mut columns[row * positions..(row + 1) * positions];
                for oy in 0..output_height {
                    let y = oy as isize + ky as isize - padding;
                    if y < 0 || y >= height as isize {
                        continue;
                    }
                    let source = &plane[y as usize * width..(y as usize + 1) * width];
                    for ox in 0..output_width {
                        let x = ox as isize + kx as isize - padding;
                        if x >= 0 && x < width as isize {
                            target[oy * output_width + ox] = source[x as usize];
                        }
                    }
                }
            }
        }
    }
    columns
}

/// col2im: adds each column entry back to the input position it came from.
pub fn col2im_accumulate(geometry: &ConvGeometry, columns: &[f32], input: &mut [f32]) {
    let (height, width) = (geometry.height, geometry.width);
    let (output_height, output_width) = (geometry.output_height(), geometry.output_width());
    let kernel = geometry.kernel;
    let padding = geometry.padding as isize;
    let positions = output_height * output_width;
    for channel in 0..geometry.channels {
        let plane = &mut input[channel * height * width..(channel + 1) * height * width];
        for ky in 0..kernel {
            for kx in 0..kernel {
                let row = (channel * kernel + ky) * kernel + kx;
                let source = &columns[row * positions..(row + 1) * positions];
                for oy in 0..output_height {
                    let y = oy as isize + ky as isize - padding;
                    if y < 0 || y >= height as isize {
                        continue;
                    }
                    for ox in 0..output_width {
                        let x = ox as isize + kx as isize - padding;
                        if x >= 0 && x < width as isize {
                            plane[y as usize * width + x as usize] +=
                                source[oy * output_width + ox];
                        }
                    }
                }
            }
        }
    }
}

/// One sample's convolution: `output += W ⊛ input` (no bias). Returns its MACs.
pub fn conv_forward(
    geometry: &ConvGeometry,
    input: &[f32],
    weight: &[f32],
    output: &mut [f32],
) -> u64 {
    let columns = im2col(geometry, input);
    matmul_accumulate(
        geometry.out_channels,
        geometry.channels * geometry.taps(),
        geometry.output_positions(),
        weight,
        &columns,
        output,
    )
}

/// One sample's input gradient (equation 5): `grad_input += Wᵀ ⊛ grad_output`.
pub fn conv_backward_input(
    geometry: &ConvGeometry,
    grad_output: &[f32],
    weight: &[f32],
    grad_input: &mut [f32],
) -> u64 {
    let depth = geometry.channels * geometry.taps();
    let positions = geometry.output_positions();
    let mut columns = vec![0f32; depth * positions];
    let macs = matmul_transposed_a_accumulate(
        depth,
        geometry.out_channels,
        positions,
        weight,
        grad_output,
        &mut columns,
    );
    col2im_accumulate(geometry, &columns, grad_input);
    macs
}

/// One sample's weight gradient: `grad_weight += grad_output · im2col(input)ᵀ`.
pub fn conv_backward_weight(
    geometry: &ConvGeometry,
    input: &[f32],
    grad_output: &[f32],
    grad_weight: &mut [f32],
) -> u64 {
    let columns = im2col(geometry, input);
    matmul_transposed_b_accumulate(
        geometry.out_channels,
        geometry.output_positions(),
        geometry.channels * geometry.taps(),
        grad_output,
        &columns,
        grad_weight,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use veil_core::sampling::SplitMix64;

    fn direct_conv(geometry: &ConvGeometry, input: &[f32], weight: &[f32]) -> Vec<f32> {
        let (oh, ow) = (geometry.output_height(), geometry.output_width());
        let mut output = vec![0f32; geometry.output_len()];
        for o in 0..geometry.out_channels {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut sum = 0f32;
                    for c in 0..geometry.channels {
                        for ky in 0..geometry.kernel {
                            for kx in 0..geometry.kernel {
                                let y = (oy + ky) as isize - geometry.padding as isize;
                                let x = (ox + kx) as isize - geometry.padding as isize;
                                if y < 0
                                    || x < 0
                                    || y >= geometry.height as isize
                                    || x >= geometry.width as isize
                                {
                                    continue;
                                }
                                let value = input[(c * geometry.height + y as usize)
                                    * geometry.width
                                    + x as usize];
                                sum += value
                                    * weight[((o * geometry.channels + c) * geometry.kernel + ky)
                                        * geometry.kernel
                                        + kx];
                            }
                        }
                    }
                    output[(o * oh + oy) * ow + ox] = sum;
                }
            }
        }
        output
    }

    #[test]
    fn convolution_matches_the_direct_sum_and_its_adjoints() {
        let mut random = SplitMix64::new(veil_core::sampling::test_seed().value());
        let geometry = ConvGeometry {
            channels: 3,
            height: 6,
            width: 5,
            out_channels: 4,
            kernel: 3,
            padding: 1,
        };
        let input = random.normal_vec(geometry.input_len(), 1.0);
        let weight = random.normal_vec(geometry.weight_len(), 1.0);
        let mut output = vec![0f32; geometry.output_len()];
        let macs = conv_forward(&geometry, &input, &weight, &mut output);
        assert_eq!(macs, geometry.macs());
        for (found, expected) in output.iter().zip(direct_conv(&geometry, &input, &weight)) {
            assert!((found - expected).abs() < 1e-4, "{found} vs {expected}");
        }
        // ⟨conv(x), g⟩ = ⟨x, convᵀ(g)⟩ = ⟨W, ∂W(x, g)⟩: both backward products are adjoints.
        let grad_output = random.normal_vec(geometry.output_len(), 1.0);
        let forward_product = dot(&output, &grad_output);
        let mut grad_input = vec![0f32; geometry.input_len()];
        conv_backward_input(&geometry, &grad_output, &weight, &mut grad_input);
        let mut grad_weight = vec![0f32; geometry.weight_len()];
        conv_backward_weight(&geometry, &input, &grad_output, &mut grad_weight);
        let tolerance = 1e-3 * forward_product.abs().max(1.0);
        assert!((dot(&input, &grad_input) - forward_product).abs() < tolerance);
        assert!((dot(&weight, &grad_weight) - forward_product).abs() < tolerance);
    }
}
